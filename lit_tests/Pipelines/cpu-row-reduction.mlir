// Row reductions (RMSNorm's sum of squares here) are vectorized (schedules.py, `row_reduction`):
// each row accumulates into 16 partial sums carried in a vector register, combined once per row. A
// row too short for that (not a multiple of 16, or under 64) keeps the plain loop nest.
//
// RUN: kiln compile %s --compile-to=tiled | FileCheck %s

// CHECK-LABEL: func.func private @rms_rows_dispatch_0_reduction(
// CHECK: scf.forall (%[[ROW:.*]]) in (64)
// CHECK: linalg.fill
// CHECK: %[[SUMS:.*]] = scf.for %{{.*}} = %c0 to %c576 step %c16 iter_args(%[[ACC:.*]] = %cst) -> (vector<16xf32>)
// CHECK: %[[X:.*]] = vector.transfer_read {{.*}} : tensor<1x16xf32>, vector<16xf32>
// CHECK: %[[SQ:.*]] = arith.mulf %[[X]], %[[X]] : vector<16xf32>
// CHECK: %[[NEXT:.*]] = arith.addf %[[ACC]], %[[SQ]] : vector<16xf32>
// CHECK: scf.yield %[[NEXT]] : vector<16xf32>
// CHECK: vector.reduction <add>, %[[SUMS]], %{{.*}} : vector<16xf32> into f32
// CHECK-NOT: linalg.generic
// CHECK: scf.forall.in_parallel
// CHECK-LABEL: func.func @rms_rows(
func.func @rms_rows(%x: tensor<64x576xf32>, %g: tensor<576xf32>) -> tensor<64x576xf32> {
  %y = transformer.rms_norm %x, %g {eps = 1.0e-05 : f64} : (tensor<64x576xf32>, tensor<576xf32>) -> tensor<64x576xf32>
  return %y : tensor<64x576xf32>
}

// A decode-sized row: too little work for workgroups, still vectorized.
// CHECK-LABEL: func.func private @one_row_dispatch_0_reduction(
// CHECK-NOT: scf.forall
// CHECK: scf.for %{{.*}} = %c0 to %c576 step %c16 iter_args(%{{.*}} = %cst) -> (vector<16xf32>)
// CHECK: vector.reduction <add>
// CHECK-LABEL: func.func @one_row(
func.func @one_row(%x: tensor<1x576xf32>, %g: tensor<576xf32>) -> tensor<1x576xf32> {
  %y = transformer.rms_norm %x, %g {eps = 1.0e-05 : f64} : (tensor<1x576xf32>, tensor<576xf32>) -> tensor<1x576xf32>
  return %y : tensor<1x576xf32>
}

// CHECK-LABEL: func.func private @short_rows_dispatch_0_reduction(
// CHECK-NOT: vector<16xf32>
// CHECK: linalg.generic {{.*}} iterator_types = ["parallel", "reduction"]
// CHECK-LABEL: func.func @short_rows(
func.func @short_rows(%x: tensor<64x40xf32>, %g: tensor<40xf32>) -> tensor<64x40xf32> {
  %y = transformer.rms_norm %x, %g {eps = 1.0e-05 : f64} : (tensor<64x40xf32>, tensor<40xf32>) -> tensor<64x40xf32>
  return %y : tensor<64x40xf32>
}
