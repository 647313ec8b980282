// Which kernels get a workgroup grid: a kernel with at least 16384 loop iterations is tiled into an
// scf.forall (its init fill fused into each workgroup), which becomes an OpenMP worksharing loop on
// the thread pool; a smaller one runs serially on the calling thread (a parallel region would cost
// more than it saves: a decode step runs hundreds of such kernels). Row sums are vectorized either
// way (cpu-row-reduction.mlir).
//
// RUN: kiln compile %s --compile-to=tiled | FileCheck %s --check-prefix=TILED
// RUN: kiln compile %s --compile-to=loops | FileCheck %s --check-prefix=LOOPS

func.func @wide_norm(%x: tensor<64x512xf32>) -> tensor<64x512xf32> {
  %n = transformer.rms_norm %x {eps = 1.0e-05 : f64} : (tensor<64x512xf32>) -> tensor<64x512xf32>
  return %n : tensor<64x512xf32>
}

func.func @small_norm(%x: tensor<4x512xf32>) -> tensor<4x512xf32> {
  %n = transformer.rms_norm %x {eps = 1.0e-05 : f64} : (tensor<4x512xf32>) -> tensor<4x512xf32>
  return %n : tensor<4x512xf32>
}

// TILED-LABEL: func.func private @wide_norm_dispatch_0_reduction(
// TILED: scf.forall
// TILED-SAME: shared_outs(%{{.+}} = %arg0) -> (tensor<64xf32>)
// TILED: linalg.fill
// TILED: vector.reduction <add>
// TILED: scf.forall.in_parallel
// TILED-NEXT: tensor.parallel_insert_slice
// TILED-LABEL: func.func private @wide_norm_dispatch_1_elementwise(
// TILED: scf.forall
// TILED: {kiln.root}
// TILED-LABEL: func.func @wide_norm(
// TILED-NOT: scf.forall
// TILED: return
// TILED-LABEL: func.func private @small_norm_dispatch_0_reduction(
// TILED-NOT: scf.forall
// TILED: linalg.fill
// TILED: vector.reduction <add>
// TILED-LABEL: func.func private @small_norm_dispatch_1_elementwise(
// TILED-NOT: scf.forall
// TILED: {kiln.root}
// TILED: return

// LOOPS-LABEL: func.func private @wide_norm_dispatch_0_reduction(
// LOOPS: omp.parallel {
// LOOPS-NEXT: omp.wsloop schedule(dynamic) {
// LOOPS-NEXT: omp.loop_nest
// LOOPS: scf.for
// LOOPS: omp.yield
// LOOPS: omp.terminator
// LOOPS-LABEL: func.func @wide_norm(
// LOOPS-NOT: omp.
// LOOPS: call @wide_norm_dispatch_0_reduction
// LOOPS-LABEL: func.func private @small_norm_dispatch_0_reduction(
// LOOPS-NOT: omp.
// LOOPS: scf.for
// LOOPS-LABEL: func.func @small_norm(
