// The host side of a GPU artifact: the launch plan the runtime replays, in the host's order -- each
// kernel's grid and block sizes and its buffers (entry arguments, results, the intermediate arena at
// byte offsets, constants). The same for both targets.
//
// RUN: kiln compile %s --target cuda -o %t.kiln
// RUN: %PYTHON %S/Inputs/kiln_blobs.py %t.kiln plan | FileCheck %s

// CHECK:      entry mlp allocations [5120]
// CHECK-NEXT: launch mlp_dispatch_0_reduction_kernel grid [2, 1, 1] block [128, 1, 1] args arg0+0 alloc0+0
// CHECK-NEXT: launch mlp_dispatch_1_elementwise_kernel grid [1, 2, 1] block [64, 4, 1] args arg0+0 alloc0+0 alloc0+3072 arg1+0
// CHECK-NEXT: launch mlp_dispatch_2_contraction_kernel grid [3, 1, 1] block [32, 2, 1] args arg2+0 alloc0+0 alloc0+3072
// CHECK-NEXT: launch mlp_dispatch_3_elementwise_kernel grid [3, 1, 1] block [32, 8, 1] args alloc0+0 result0+0
// CHECK-NOT:  launch

func.func @mlp(%x: tensor<8x64xf32>, %g: tensor<64xf32>, %w: tensor<96x64xf32>) -> tensor<8x96xf32> {
  %n = transformer.rms_norm %x, %g {eps = 1.0e-05 : f64} : (tensor<8x64xf32>, tensor<64xf32>) -> tensor<8x64xf32>
  %y = transformer.linear %n, %w : (tensor<8x64xf32>, tensor<96x64xf32>) -> tensor<8x96xf32>
  %s = transformer.gelu %y : tensor<8x96xf32>
  return %s : tensor<8x96xf32>
}
