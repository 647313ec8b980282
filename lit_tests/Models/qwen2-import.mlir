// The IR a tiny Qwen2 config imports to (kiln import needs no weights: parameters are arguments).
// RUN: kiln import %S/Inputs/tiny-qwen2-config.json --max-seq-len 32 --prefill-chunk 8 | FileCheck %s
// The imported IR verifies and round-trips through kiln-opt.
// RUN: kiln import %S/Inputs/tiny-qwen2-config.json --max-seq-len 32 --prefill-chunk 8 | kiln-opt | kiln-opt | FileCheck %s

// Token ids, positions, the start position, the rows whose logits are wanted; then 2 + 13 * 2 + 2
// parameters (embedding, per layer: norms, q/k/v weights and biases, o, MLP; final norm, tied head);
// then one K and one V cache per layer, updated in place.
// CHECK-LABEL: func.func @decode(
// CHECK-SAME: %arg0: tensor<1x1xi64>, %arg1: tensor<1xi64>, %arg2: index, %arg3: tensor<1xi64>, %arg4: tensor<97x48xf32>
// CHECK-SAME: %arg30: tensor<97x48xf32>, %arg31: tensor<1x2x32x8xf32>, %arg32: tensor<1x2x32x8xf32>, %arg33: tensor<1x2x32x8xf32>, %arg34: tensor<1x2x32x8xf32>)
// CHECK-SAME: -> (tensor<1x97xf32>, tensor<1x2x32x8xf32> {kiln.updates_arg = 31 : i64}, tensor<1x2x32x8xf32> {kiln.updates_arg = 32 : i64}, tensor<1x2x32x8xf32> {kiln.updates_arg = 33 : i64}, tensor<1x2x32x8xf32> {kiln.updates_arg = 34 : i64})
// RoPE frequencies as transformers computes them for theta 1e6 and head_dim 8.
// CHECK: %[[FREQ:.*]] = arith.constant dense<[1.000000e+00, 0.0316227786, 1.000000e-03, 3.16227743E-5]> : tensor<4xf32>
// CHECK: %[[X:.*]] = transformer.embedding %arg4[%arg0]
// CHECK: %[[H:.*]] = transformer.rms_norm %[[X]], %arg5
// Qwen2: q, k and v projections have biases.
// CHECK: %[[Q:.*]] = transformer.linear %[[H]], %arg6, %arg9
// CHECK: transformer.split_heads %[[Q]] {num_heads = 6 : i64}
// CHECK: transformer.linear %[[H]], %arg7, %arg10
// CHECK: transformer.linear %[[H]], %arg8, %arg11
// CHECK: transformer.rope {{.*}} inv_freq(%[[FREQ]])
// CHECK: %[[K:.*]] = transformer.kv_cache_update %arg31, {{.*}} at %arg2
// CHECK: %[[V:.*]] = transformer.kv_cache_update %arg32, {{.*}} at %arg2
// CHECK: transformer.attention {{.*}}, %[[K]], %[[V]] offset(%arg2) {causal}
// CHECK: transformer.gated_mlp
// CHECK-COUNT-1: transformer.attention
// CHECK: %[[LOGITS:.*]] = transformer.linear %{{.*}}, %arg30 : (tensor<1x48xf32>, tensor<97x48xf32>) -> tensor<1x97xf32>
// CHECK: return %[[LOGITS]], %[[K]], %[[V]],

// Prefill picks the rows whose logits it computes (the last prompt token) before the output head.
// CHECK-LABEL: func.func @prefill_8(
// CHECK: tensor.collapse_shape {{.*}} : tensor<1x8x48xf32> into tensor<8x48xf32>
// CHECK: %[[ROW:.*]] = transformer.embedding %{{.*}}[%arg3] : tensor<8x48xf32>, tensor<1xi64> -> tensor<1x48xf32>
// CHECK: transformer.linear %[[ROW]], %arg30

// forward() computes the logits of every row.
// CHECK-LABEL: func.func @logits_8(
// CHECK-NOT: transformer.embedding %{{.*}}[%arg3]
// CHECK: transformer.linear %{{.*}}, %arg30 : (tensor<8x48xf32>, tensor<97x48xf32>) -> tensor<8x97xf32>
