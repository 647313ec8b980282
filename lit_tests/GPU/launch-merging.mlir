// Independent launches side by side (launch_merging.py): the k and v projections of one position read
// the same x and write different buffers, with the same block shape (matvec kernels of 128 threads,
// 8 blocks each), so they become one launch of 16 blocks: blocks 0-7 run k's kernel, 8-15 v's, each
// with its own block id recomputed from the merged one. SiLU(k) reads what k's kernel writes: it
// stays a launch of its own, after. The kernels merged no longer exist on their own.
//
// RUN: kiln compile %s --target cuda --compile-to loops | FileCheck %s
// RUN: kiln compile %s --target cuda -o %t.kiln
// RUN: %PYTHON %S/Inputs/kiln_blobs.py %t.kiln plan | FileCheck %s --check-prefix=PLAN

// CHECK-LABEL: gpu.module @kv_merged_0_kernel {
// CHECK:         gpu.func @kv_merged_0_kernel(%[[X:.*]]: memref<1x64xf32>, %[[WK:.*]]: memref<32x64xf32>, %[[K:.*]]: memref<1x32xf32>, %[[X2:.*]]: memref<1x64xf32>, %[[WV:.*]]: memref<32x64xf32>, %[[V:.*]]: memref<1x32xf32>) kernel
// CHECK-SAME:      known_block_size = array<i32: 128, 1, 1>, known_grid_size = array<i32: 16, 1, 1>
// CHECK:           %[[BID:.*]] = gpu.block_id  x
// CHECK:           %[[FIRST_V:.*]] = arith.constant 8 : index
// CHECK:           %[[IN_K:.*]] = arith.cmpi ult, %[[BID]], %[[FIRST_V]] : index
// CHECK:           scf.if %[[IN_K]] {
// CHECK:             affine.apply #{{.*}}(%[[BID]])
// CHECK:             vector.load %[[WK]]
// CHECK:             memref.store %{{.*}}, %[[K]]
// CHECK:           } else {
// CHECK:             affine.apply #{{.*}}(%[[BID]])
// CHECK:             vector.load %[[WV]]
// CHECK:             memref.store %{{.*}}, %[[V]]
// CHECK:           gpu.return
// CHECK-LABEL: func.func private @kv_merged_0(
// CHECK-SAME:    kiln.kernel_class = "contraction+contraction"
// CHECK:         gpu.launch_func  @kv_merged_0_kernel::@kv_merged_0_kernel blocks in (%c16, %c1, %c1) threads in (%c128,
// CHECK-NOT:   gpu.module @kv_dispatch_0
// CHECK-NOT:   gpu.module @kv_dispatch_1
// CHECK-LABEL: func.func @kv(
// CHECK-NEXT:    %[[KBUF:.*]] = memref.alloc()
// CHECK-NEXT:    call @kv_merged_0(%arg0, %arg1, %[[KBUF]], %arg0, %arg2, %arg4)
// CHECK-NEXT:    call @kv_dispatch_2_elementwise(%[[KBUF]], %arg3)

// PLAN:      entry kv
// PLAN-NEXT: launch kv_merged_0_kernel grid [16, 1, 1] block [128, 1, 1]
// PLAN-NEXT: launch kv_dispatch_2_elementwise_kernel grid [1, 1, 1] block [32, 1, 1]
// PLAN-NOT:  launch

func.func @kv(%x: tensor<1x64xf32>, %wk: tensor<32x64xf32>, %wv: tensor<32x64xf32>) -> (tensor<1x32xf32>, tensor<1x32xf32>) {
  %k = transformer.linear %x, %wk : (tensor<1x64xf32>, tensor<32x64xf32>) -> tensor<1x32xf32>
  %v = transformer.linear %x, %wv : (tensor<1x64xf32>, tensor<32x64xf32>) -> tensor<1x32xf32>
  %s = transformer.silu %k : tensor<1x32xf32>
  return %s, %v : tensor<1x32xf32>, tensor<1x32xf32>
}
