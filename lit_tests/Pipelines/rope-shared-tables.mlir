// Every RoPE of an entry point rotates by the same angles (they depend on the positions only): the
// linalg stage computes the cos and sin tables once, and each rotation reads them, so sin/cos run
// once per (position, feature) rather than per head and per layer.
//
// RUN: kiln compile %s --compile-to=linalg | FileCheck %s
// RUN: kiln compile %s --compile-to=dispatch | FileCheck %s --check-prefix=DISPATCH

// CHECK-LABEL: func.func @q_and_k
// CHECK-COUNT-1: math.cos
// CHECK-NOT: math.cos
// CHECK-LABEL: func.func @other_positions
// CHECK-COUNT-1: math.cos
// CHECK-NOT: math.cos

// Two table kernels, then one rotation kernel per RoPE reading both tables (the features of the
// input and the tables viewed as two halves of 8).
// DISPATCH-LABEL: func.func private @q_and_k_dispatch_0_elementwise(
// DISPATCH-SAME: tensor<6xi64>
// DISPATCH-SAME: -> tensor<6x16xf32>
// DISPATCH-LABEL: func.func private @q_and_k_dispatch_1_elementwise(
// DISPATCH-SAME: -> tensor<6x16xf32>
// DISPATCH-LABEL: func.func private @q_and_k_dispatch_2_generic(
// DISPATCH-SAME: tensor<1x4x6x2x8xf32>, %{{.+}}: tensor<6x2x8xf32>, %{{.+}}: tensor<6x2x8xf32>
// DISPATCH-LABEL: func.func private @q_and_k_dispatch_3_generic(
// DISPATCH-SAME: tensor<1x2x6x2x8xf32>, %{{.+}}: tensor<6x2x8xf32>, %{{.+}}: tensor<6x2x8xf32>
// DISPATCH-NOT: func.func private @q_and_k_dispatch_4

func.func @q_and_k(%q: tensor<1x4x6x16xf32>, %k: tensor<1x2x6x16xf32>, %pos: tensor<6xi64>) -> (tensor<1x4x6x16xf32>, tensor<1x2x6x16xf32>) {
  %a = transformer.rope %q, %pos {theta = 10000.0 : f64} : (tensor<1x4x6x16xf32>, tensor<6xi64>) -> tensor<1x4x6x16xf32>
  %b = transformer.rope %k, %pos {theta = 10000.0 : f64} : (tensor<1x2x6x16xf32>, tensor<6xi64>) -> tensor<1x2x6x16xf32>
  return %a, %b : tensor<1x4x6x16xf32>, tensor<1x2x6x16xf32>
}

func.func @other_positions(%q: tensor<1x4x6x16xf32>, %pos: tensor<6xi64>) -> tensor<1x4x6x16xf32> {
  %a = transformer.rope %q, %pos {theta = 10000.0 : f64} : (tensor<1x4x6x16xf32>, tensor<6xi64>) -> tensor<1x4x6x16xf32>
  return %a : tensor<1x4x6x16xf32>
}
