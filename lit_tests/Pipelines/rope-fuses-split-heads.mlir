// In a prefill, split_heads is a transpose ([b, s, h*d] -> [b, h, s, d]). RoPE reads the two halves
// of the features through indexing maps, so kiln-fuse-elementwise folds the transpose of q and of k
// into their rotations: one kernel each, reading the projections [b, s, h*d] through views. v, which
// no RoPE reads, keeps its transpose kernel here (returned as it is; a KV-cache update that only
// copies it reads the projection through a transposed view instead: split-heads-cache-view.mlir).
//
// RUN: kiln compile %s --compile-to=dispatch | FileCheck %s

// CHECK-DAG: #[[$X0:map[0-9]*]] = affine_map<(d0, d1, d2, d3, d4) -> (d1, d3, d2, 0, d4)>
// CHECK-DAG: #[[$X1:map[0-9]*]] = affine_map<(d0, d1, d2, d3, d4) -> (d1, d3, d2, 1, d4)>
// CHECK: func.func private @q_k_v_dispatch_0_transpose(%{{.+}}: tensor<1x6x2x16xf32>
// CHECK: func.func private @q_k_v_dispatch_1_elementwise(
// CHECK: func.func private @q_k_v_dispatch_2_elementwise(
// CHECK: func.func private @q_k_v_dispatch_3_generic(%[[Q:.+]]: tensor<1x6x4x2x8xf32>, %{{.+}}: tensor<6x2x8xf32>, %{{.+}}: tensor<6x2x8xf32>, %{{.+}}: tensor<1x4x6x2x8xf32>)
// CHECK: linalg.generic {indexing_maps = [#[[$X0]], #[[$X1]], {{.+}} ins(%[[Q]], %[[Q]],
// CHECK: func.func private @q_k_v_dispatch_4_generic(%[[K:.+]]: tensor<1x6x2x2x8xf32>, %{{.+}}: tensor<6x2x8xf32>, %{{.+}}: tensor<6x2x8xf32>, %{{.+}}: tensor<1x2x6x2x8xf32>)
// CHECK: linalg.generic {indexing_maps = [#[[$X0]], #[[$X1]], {{.+}} ins(%[[K]], %[[K]],
// CHECK-NOT: func.func private
// CHECK-LABEL: func.func @q_k_v
// CHECK-SAME: (%[[HQ:.+]]: tensor<1x6x64xf32>, %[[HK:.+]]: tensor<1x6x32xf32>, %[[HV:.+]]: tensor<1x6x32xf32>,
// CHECK-DAG: %[[QV:.+]] = tensor.expand_shape %[[HQ]] {{\[}}[0], [1], [2, 3, 4]] output_shape [1, 6, 4, 2, 8]
// CHECK-DAG: %[[KV:.+]] = tensor.expand_shape %[[HK]] {{\[}}[0], [1], [2, 3, 4]] output_shape [1, 6, 2, 2, 8]
// CHECK-DAG: call @q_k_v_dispatch_3_generic(%[[QV]],
// CHECK-DAG: call @q_k_v_dispatch_4_generic(%[[KV]],
func.func @q_k_v(%q: tensor<1x6x64xf32>, %k: tensor<1x6x32xf32>, %v: tensor<1x6x32xf32>, %pos: tensor<6xi64>)
    -> (tensor<1x4x6x16xf32>, tensor<1x2x6x16xf32>, tensor<1x2x6x16xf32>) {
  %qh = transformer.split_heads %q {num_heads = 4 : i64} : tensor<1x6x64xf32> -> tensor<1x4x6x16xf32>
  %kh = transformer.split_heads %k {num_heads = 2 : i64} : tensor<1x6x32xf32> -> tensor<1x2x6x16xf32>
  %vh = transformer.split_heads %v {num_heads = 2 : i64} : tensor<1x6x32xf32> -> tensor<1x2x6x16xf32>
  %qr = transformer.rope %qh, %pos : (tensor<1x4x6x16xf32>, tensor<6xi64>) -> tensor<1x4x6x16xf32>
  %kr = transformer.rope %kh, %pos : (tensor<1x2x6x16xf32>, tensor<6xi64>) -> tensor<1x2x6x16xf32>
  return %qr, %kr, %vh : tensor<1x4x6x16xf32>, tensor<1x2x6x16xf32>, tensor<1x2x6x16xf32>
}
