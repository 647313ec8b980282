// Independent launches of different block shapes (launch_merging.py): SiLU on 9, 3 and 5 rows of 32
// gets blocks of 32 x 8 (two of them, the second masked), 32 x 3 and 32 x 5 threads. These small
// kernels' threads never meet (no barrier but the trailing one, no shuffle, no shared memory), so they
// become one launch of 4 blocks of 32 x 8: the 3- and 5-row members' code runs only in threads with
// y below 3 and 5 (their trailing barriers, no-ops, dropped). The guards test only y, the one axis
// padded.
//
// RUN: kiln compile %s --target cuda --compile-to loops | FileCheck %s
// RUN: kiln compile %s --target cuda -o %t.kiln
// RUN: %PYTHON %S/Inputs/kiln_blobs.py %t.kiln plan | FileCheck %s --check-prefix=PLAN

// CHECK-LABEL: gpu.module @f_merged_0_kernel {
// CHECK:         gpu.func @f_merged_0_kernel(%{{.*}}: memref<9x32xf32>, %{{.*}}: memref<9x32xf32>, %[[B:.*]]: memref<3x32xf32>, %[[Y:.*]]: memref<3x32xf32>, %[[C:.*]]: memref<5x32xf32>, %[[Z:.*]]: memref<5x32xf32>) kernel
// CHECK-SAME:      known_block_size = array<i32: 32, 8, 1>, known_grid_size = array<i32: 4, 1, 1>
// CHECK:           scf.if
// CHECK:             math.exp
// CHECK:             gpu.barrier
// CHECK:           } else {
// CHECK:             scf.if
// CHECK:               %[[TY:.*]] = gpu.thread_id  y
// CHECK:               %[[THREE:.*]] = arith.constant 3 : index
// CHECK:               %[[IN3:.*]] = arith.cmpi ult, %[[TY]], %[[THREE]] : index
// CHECK-NEXT:          scf.if %[[IN3]] {
// CHECK:                 memref.subview %[[B]]
// CHECK:                 math.exp
// CHECK-NOT:             gpu.barrier
// CHECK:               } else {
// CHECK:               %[[TY5:.*]] = gpu.thread_id  y
// CHECK:               %[[FIVE:.*]] = arith.constant 5 : index
// CHECK:               %[[IN5:.*]] = arith.cmpi ult, %[[TY5]], %[[FIVE]] : index
// CHECK-NEXT:          scf.if %[[IN5]] {
// CHECK:                 memref.subview %[[C]]
// CHECK:                 math.exp
// CHECK-NOT:             gpu.barrier
// CHECK:           gpu.return
// CHECK-LABEL: func.func private @f_merged_0(
// CHECK-SAME:    kiln.kernel_class = "elementwise+elementwise+elementwise"
// CHECK:         gpu.launch_func  @f_merged_0_kernel::@f_merged_0_kernel blocks in (%c4, %c1, %c1) threads in (%c32, %c8,

// PLAN:      entry f
// PLAN-NEXT: launch f_merged_0_kernel grid [4, 1, 1] block [32, 8, 1]
// PLAN-NOT:  launch

func.func @f(%a: tensor<9x32xf32>, %b: tensor<3x32xf32>, %c: tensor<5x32xf32>) -> (tensor<9x32xf32>, tensor<3x32xf32>, tensor<5x32xf32>) {
  %x = transformer.silu %a : tensor<9x32xf32>
  %y = transformer.silu %b : tensor<3x32xf32>
  %z = transformer.silu %c : tensor<5x32xf32>
  return %x, %y, %z : tensor<9x32xf32>, tensor<3x32xf32>, tensor<5x32xf32>
}
