// A packed GEMM's C tiles start from the fill value in registers (pipelines/packed_c_init.py): no
// linalg.fill of the packed C is left. With several K blocks, the micro-kernel's accumulators start
// as the splat in the first K block and as the C tile after it; with one K block, always as the splat.
//
// RUN: kiln compile %s --compile-to=tiled | FileCheck %s

// CHECK-LABEL: func.func private @k_blocks_dispatch_0_contraction(
// CHECK-NOT: linalg.fill
// CHECK: scf.for %[[KB:.*]] = %[[LB:.*]] to %c512 step %c256
// CHECK: %[[C:.*]] = vector.transfer_read {{.*}} : tensor<8x32xf32>, vector<8x32xf32>
// CHECK-DAG: %[[ZERO:.*]] = vector.broadcast %cst : f32 to vector<8x32xf32>
// CHECK-DAG: %[[FIRST:.*]] = arith.cmpi eq, %[[KB]], %[[LB]]
// CHECK: %[[START:.*]] = arith.select %[[FIRST]], %[[ZERO]], %[[C]] : vector<8x32xf32>
// CHECK: scf.for {{.*}} iter_args(%{{.*}} = %[[START]]) -> (vector<8x32xf32>)
// CHECK: } {kiln.gemm_k_loop}
// CHECK: } {kiln.gemm_k_block_loop}
// CHECK-LABEL: func.func @k_blocks(
func.func @k_blocks(%a: tensor<64x512xf32>, %b: tensor<512x64xf32>) -> tensor<64x64xf32> {
  %c = transformer.matmul %a, %b : (tensor<64x512xf32>, tensor<512x64xf32>) -> tensor<64x64xf32>
  return %c : tensor<64x64xf32>
}

// CHECK-LABEL: func.func private @one_k_block_dispatch_0_contraction(
// CHECK-NOT: linalg.fill
// CHECK: %[[ZERO:.*]] = vector.broadcast %cst : f32 to vector<8x32xf32>
// CHECK-NOT: arith.select
// CHECK: scf.for {{.*}} iter_args(%{{.*}} = %[[ZERO]]) -> (vector<8x32xf32>)
// CHECK: } {kiln.gemm_k_loop}
// CHECK-NOT: kiln.gemm_k_block_loop
// CHECK-LABEL: func.func @one_k_block(
func.func @one_k_block(%a: tensor<64x64xf32>, %b: tensor<64x64xf32>) -> tensor<64x64xf32> {
  %c = transformer.matmul %a, %b : (tensor<64x64xf32>, tensor<64x64xf32>) -> tensor<64x64xf32>
  return %c : tensor<64x64xf32>
}
