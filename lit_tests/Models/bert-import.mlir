// The IR a tiny BERT config imports to: one encoder entry point per padded length (16 and max 20).
// RUN: kiln import %S/Inputs/tiny-bert-config.json --max-seq-len 20 | FileCheck %s
// RUN: kiln import %S/Inputs/tiny-bert-config.json --max-seq-len 20 | kiln-opt | kiln-opt | FileCheck %s

// Token ids, token types, the 0/1 mask of real tokens; then 5 + 16 * 2 parameters (word, position and
// type tables, embedding LayerNorm; per layer: q/k/v/o with biases, two LayerNorms, the MLP).
// CHECK-LABEL: func.func @encode_16(
// CHECK-SAME: %arg0: tensor<1x16xi64>, %arg1: tensor<1x16xi64>, %arg2: tensor<1x16xf32>, %arg3: tensor<97x48xf32>, %arg4: tensor<64x48xf32>, %arg5: tensor<2x48xf32>
// CHECK-SAME: %arg39: tensor<48xf32>) -> tensor<1x16x48xf32>
// CHECK: %[[POS:.*]] = arith.constant dense<{{\[\[}}0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]]> : tensor<1x16xi64>
// CHECK: %[[WORD:.*]] = transformer.embedding %arg3[%arg0]
// CHECK: %[[TYPE:.*]] = transformer.embedding %arg5[%arg1]
// CHECK: %[[SUM:.*]] = arith.addf %[[WORD]], %[[TYPE]]
// CHECK: %[[WPE:.*]] = transformer.embedding %arg4[%[[POS]]]
// CHECK: %[[EMB:.*]] = arith.addf %[[SUM]], %[[WPE]]
// CHECK: %[[X:.*]] = transformer.layer_norm %[[EMB]] weight(%arg6) bias(%arg7) {eps = 9.9999999999999998E-13 : f64}
// The additive padding mask (1 - mask) * -1e30, shaped [1, 1, 1, S] to broadcast over heads and rows.
// CHECK: %[[ONE:.*]] = arith.constant dense<1.000000e+00> : tensor<1x16xf32>
// CHECK: %[[PAD:.*]] = arith.subf %[[ONE]], %arg2
// CHECK: %[[BIG:.*]] = arith.constant dense<-1.000000e+30> : tensor<1x16xf32>
// CHECK: %[[ADD:.*]] = arith.mulf %[[PAD]], %[[BIG]]
// CHECK: %[[MASK:.*]] = tensor.expand_shape %[[ADD]] {{\[\[}}0, 1, 2], [3]] output_shape [1, 1, 1, 16]
// CHECK: transformer.linear %[[X]], %arg8, %arg9
// Bidirectional: masked, not causal.
// CHECK: %[[O:.*]] = transformer.attention %{{.*}}, %{{.*}}, %{{.*}} mask(%[[MASK]]) : (tensor<1x3x16x16xf32>, tensor<1x3x16x16xf32>, tensor<1x3x16x16xf32>, tensor<1x1x1x16xf32>) -> tensor<1x3x16x16xf32>
// Post-LayerNorm: residual, then the norm; exact GELU (no approximate attribute).
// CHECK: %[[R:.*]] = arith.addf %[[X]],
// CHECK: %[[Y:.*]] = transformer.layer_norm %[[R]] weight(%arg16) bias(%arg17)
// CHECK: transformer.gelu %{{.*}} : tensor<1x16x80xf32>
// CHECK: %[[R2:.*]] = arith.addf %[[Y]],
// CHECK: transformer.layer_norm %[[R2]] weight(%arg22) bias(%arg23)
// CHECK: transformer.attention {{.*}} mask(%[[MASK]])
// CHECK-NOT: transformer.attention
// CHECK: %[[OUT:.*]] = transformer.layer_norm %{{.*}} weight(%arg38) bias(%arg39)
// CHECK: return %[[OUT]] : tensor<1x16x48xf32>

// CHECK-LABEL: func.func @encode_20(
// CHECK: arith.constant dense<-1.000000e+30> : tensor<1x20xf32>
// CHECK: return %{{.*}} : tensor<1x20x48xf32>
