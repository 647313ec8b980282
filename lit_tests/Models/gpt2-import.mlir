// The IR a tiny GPT-2 config imports to (kiln import needs no weights: parameters are arguments).
// RUN: kiln import %S/Inputs/tiny-gpt2-config.json --max-seq-len 32 --prefill-chunk 8 | FileCheck %s
// The imported IR verifies and round-trips through kiln-opt.
// RUN: kiln import %S/Inputs/tiny-gpt2-config.json --max-seq-len 32 --prefill-chunk 8 | kiln-opt | kiln-opt | FileCheck %s

// Token ids, positions, the start position, the rows whose logits are wanted; then 2 + 16 * 2 + 3
// parameters (token and position tables; per layer: ln_1, q/k/v split from c_attn with biases, c_proj,
// ln_2, c_fc, c_proj; ln_f; the head tied to wte); then one K and one V cache per layer, updated in place.
// CHECK-LABEL: func.func @decode(
// CHECK-SAME: %arg0: tensor<1x1xi64>, %arg1: tensor<1xi64>, %arg2: index, %arg3: tensor<1xi64>, %arg4: tensor<97x48xf32>, %arg5: tensor<40x48xf32>
// CHECK-SAME: %arg40: tensor<97x48xf32>, %arg41: tensor<1x3x32x16xf32>, %arg42: tensor<1x3x32x16xf32>, %arg43: tensor<1x3x32x16xf32>, %arg44: tensor<1x3x32x16xf32>)
// CHECK-SAME: -> (tensor<1x97xf32>, tensor<1x3x32x16xf32> {kiln.updates_arg = 41 : i64}, tensor<1x3x32x16xf32> {kiln.updates_arg = 42 : i64}, tensor<1x3x32x16xf32> {kiln.updates_arg = 43 : i64}, tensor<1x3x32x16xf32> {kiln.updates_arg = 44 : i64})
// Learned positions: the position ids (clamped to the table's 40 rows) gather rows of wpe.
// CHECK: %[[LAST:.*]] = arith.constant dense<39> : tensor<1xi64>
// CHECK: %[[POS:.*]] = arith.minsi %arg1, %[[LAST]]
// CHECK: %[[POS2:.*]] = tensor.expand_shape %[[POS]] {{\[\[}}0, 1]] output_shape [1, 1]
// CHECK: %[[TOK:.*]] = transformer.embedding %arg4[%arg0]
// CHECK: %[[WPE:.*]] = transformer.embedding %arg5[%[[POS2]]]
// CHECK: %[[X:.*]] = arith.addf %[[TOK]], %[[WPE]]
// Pre-LayerNorm (eps 1e-5, the default, so no attribute), q/k/v with biases.
// CHECK: %[[H:.*]] = transformer.layer_norm %[[X]] weight(%arg6) bias(%arg7) :
// CHECK: transformer.linear %[[H]], %arg8, %arg11
// CHECK: transformer.linear %[[H]], %arg9, %arg12
// CHECK: transformer.linear %[[H]], %arg10, %arg13
// CHECK: %[[K:.*]] = transformer.kv_cache_update %arg41, {{.*}} at %arg2
// CHECK: %[[V:.*]] = transformer.kv_cache_update %arg42, {{.*}} at %arg2
// Layer 0 keeps the default 1/sqrt(head_dim) scale.
// CHECK: transformer.attention {{.*}}, %[[K]], %[[V]] offset(%arg2) {causal} :
// CHECK: %[[R:.*]] = arith.addf %[[X]],
// CHECK: transformer.layer_norm %[[R]] weight(%arg16) bias(%arg17)
// CHECK: transformer.gelu %{{.*}} {approximate = "tanh"} : tensor<1x1x80xf32>
// scale_attn_by_inverse_layer_idx: layer 1 scales by 1/(sqrt(16) * 2).
// CHECK: transformer.attention {{.*}} offset(%arg2) {causal, scale = 1.250000e-01 : f64}
// CHECK-NOT: transformer.attention
// Final LayerNorm, then the head tied to the token table's shape.
// CHECK: transformer.layer_norm %{{.*}} weight(%arg38) bias(%arg39)
// CHECK: %[[LOGITS:.*]] = transformer.linear %{{.*}}, %arg40 : (tensor<1x48xf32>, tensor<97x48xf32>) -> tensor<1x97xf32>
// CHECK: return %[[LOGITS]], %[[K]], %[[V]],

// Prefill picks the rows whose logits it computes (the last prompt token) before the output head.
// CHECK-LABEL: func.func @prefill_8(
// CHECK: arith.constant dense<39> : tensor<8xi64>
// CHECK: tensor.collapse_shape {{.*}} : tensor<1x8x48xf32> into tensor<8x48xf32>
// CHECK: %[[ROW:.*]] = transformer.embedding %{{.*}}[%arg3] : tensor<8x48xf32>, tensor<1xi64> -> tensor<1x48xf32>
// CHECK: transformer.linear %[[ROW]], %arg40

// forward() computes the logits of every row.
// CHECK-LABEL: func.func @logits_8(
// CHECK-NOT: transformer.embedding %{{.*}}[%arg3]
// CHECK: transformer.linear %{{.*}}, %arg40 : (tensor<8x48xf32>, tensor<97x48xf32>) -> tensor<8x97xf32>
