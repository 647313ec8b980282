// The packed GEMM's operand packs run as vector code in parallel workgroups when no panel needs
// padding: A[M, K] -> [M/8, K, 8] by transposes of [8, 16] blocks (one 128-lane shuffle each),
// B[K, N] -> [N/32, K, 32] by copies of 32-wide rows, W[N, K] -> [N/32, K, 32] by 16x16 register
// transposes (16-lane shuffles). A pack that pads (M not a multiple of 8) stays an element-wise
// transpose.
//
// RUN: kiln compile %s --compile-to=loops | FileCheck %s
// RUN: kiln compile %s --compile-to=tiled | FileCheck %s --check-prefix=TILED

// CHECK-LABEL: func.func private @matmul_kn_dispatch_0_contraction(
// CHECK: omp.parallel
// CHECK: vector.shuffle {{.*}} : vector<128xf32>, vector<128xf32>
// CHECK-COUNT-16: vector.transfer_write {{.*}} : vector<8xf32>, memref<1x16x8xf32
// CHECK: omp.parallel
// CHECK-NOT: memref.load
// CHECK-COUNT-8: vector.transfer_write {{.*}} : vector<32xf32>, memref<1x8x32xf32
// CHECK: omp.parallel
// CHECK: vector.fma
// CHECK-LABEL: func.func @matmul_kn(
func.func @matmul_kn(%a: tensor<64x64xf32>, %b: tensor<64x96xf32>) -> tensor<64x96xf32> {
  %c = transformer.matmul %a, %b : (tensor<64x64xf32>, tensor<64x96xf32>) -> tensor<64x96xf32>
  return %c : tensor<64x96xf32>
}

// CHECK-LABEL: func.func private @linear_nk_dispatch_0_contraction(
// CHECK: omp.parallel
// CHECK: vector.shuffle {{.*}} : vector<128xf32>, vector<128xf32>
// CHECK: omp.parallel
// CHECK: vector.shuffle {{.*}} : vector<16xf32>, vector<16xf32>
// CHECK: omp.parallel
// CHECK: vector.fma
// CHECK-LABEL: func.func @linear_nk(
func.func @linear_nk(%x: tensor<32x64xf32>, %w: tensor<96x64xf32>) -> tensor<32x96xf32> {
  %y = transformer.linear %x, %w : (tensor<32x64xf32>, tensor<96x64xf32>) -> tensor<32x96xf32>
  return %y : tensor<32x96xf32>
}

// TILED-LABEL: func.func private @padded_rows_dispatch_0_contraction(
// TILED: tensor.pad
// TILED: linalg.transpose {{.*}} outs({{.*}} : tensor<?x64x8xf32>) permutation = [0, 2, 1]
// TILED-LABEL: func.func @padded_rows(
func.func @padded_rows(%a: tensor<20x64xf32>, %b: tensor<64x96xf32>) -> tensor<20x96xf32> {
  %c = transformer.matmul %a, %b : (tensor<20x64xf32>, tensor<64x96xf32>) -> tensor<20x96xf32>
  return %c : tensor<20x96xf32>
}
