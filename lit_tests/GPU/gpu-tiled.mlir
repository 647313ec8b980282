// The GPU `tiled` stage (shared by cuda and rocm): each kernel's parallel loops become a forall of
// blocks (#gpu.block) around a forall of threads (#gpu.thread), one output element per thread, the
// innermost parallel loop on x; reduction loops stay inside each thread, with the fill that
// initializes them fused into the thread forall. Where the tiles divide the loops, an innermost
// reduction is walked 8 elements at a time (vector loads, the accumulator in registers) and GEMM-shaped
// contractions are register-tiled (see below). Rows of 64 or more are reduced by a warp each instead:
// such kernels are only marked here (row-reduction-warp.mlir). The block size is recorded on the kernel.
//
// RUN: kiln compile %s --target cuda --compile-to=tiled | FileCheck %s
// RUN: kiln compile %s --target rocm --compile-to=tiled | FileCheck %s
// RUN: kiln compile %s --target rocm --chip gfx1100 --compile-to=tiled | FileCheck %s --check-prefix=CHIP

// CHIP: kiln.target_chip = "gfx1100"

// CHECK-LABEL: func.func private @mlp_dispatch_0_reduction
// CHECK-SAME:    kiln.gpu_block_dims = array<i64: 128, 1, 1>, kiln.gpu_row_reduction = 4
// CHECK-NOT:     scf.forall
// CHECK:         linalg.generic

// CHECK-LABEL: func.func private @mlp_dispatch_1_elementwise
// CHECK-SAME:    kiln.gpu_block_dims = array<i64: 64, 4, 1>
// CHECK:         scf.forall (%{{.*}}, %{{.*}}) in (2, 1)
// CHECK:           scf.forall (%{{.*}}, %{{.*}}) in (4, 64)
// CHECK:             math.rsqrt
// CHECK:           } {mapping = [#gpu.thread<y>, #gpu.thread<x>]}
// CHECK:         } {mapping = [#gpu.block<y>, #gpu.block<x>]}

// A GEMM-shaped contraction is register-tiled: each thread owns 4 rows x 1 column of the output,
// walks K 8 at a time as vector FMAs (each element of W used 4 times) with its 4 accumulators carried
// in registers through the K loop, and writes them once after it.
// CHECK-LABEL: func.func private @mlp_dispatch_2_contraction
// CHECK-SAME:    kiln.gpu_block_dims = array<i64: 32, 2, 1>
// CHECK:         scf.forall (%{{.*}}, %{{.*}}) in (1, 3)
// CHECK:           scf.forall (%{{.*}}, %{{.*}}) in (2, 32)
// CHECK:             scf.for {{.*}} iter_args(%{{.*}} = %{{.*}}) -> (vector<4x1xf32>)
// CHECK:               vector.transfer_read {{.*}} : tensor<4x8xf32>, vector<4x8xf32>
// CHECK:               vector.transfer_read {{.*}} : tensor<1x8xf32>, vector<1x8xf32>
// CHECK-COUNT-32:      vector.fma
// CHECK:               scf.yield {{.*}} : vector<4x1xf32>
// CHECK:             vector.transfer_write {{.*}} : vector<4x1xf32>, tensor<4x1xf32>
// CHECK:           } {mapping = [#gpu.thread<y>, #gpu.thread<x>]}
// CHECK:         } {mapping = [#gpu.block<y>, #gpu.block<x>]}

// CHECK-LABEL: func.func @mlp
// CHECK-COUNT-4: call @mlp_dispatch_

// Rows of 32: a thread per row, 8 elements at a time.
// CHECK-LABEL: func.func private @short_norm_dispatch_0_reduction
// CHECK-SAME:    kiln.gpu_block_dims = array<i64: 8, 1, 1>
// CHECK:         scf.forall (%{{.*}}) in (1)
// CHECK:           scf.forall (%[[ROW:.*]]) in (8)
// CHECK:             scf.for {{.*}} step %c8 iter_args(%{{.*}} = %cst) -> (vector<1xf32>)
// CHECK:               vector.transfer_read {{.*}} : tensor<1x8xf32>, vector<1x8xf32>
// CHECK:               vector.reduction <add>
// CHECK:             vector.transfer_write {{.*}} : vector<1xf32>, tensor<1xf32>
// CHECK:           } {mapping = [#gpu.thread<x>]}
// CHECK:         } {mapping = [#gpu.block<x>]}

func.func @mlp(%x: tensor<8x64xf32>, %g: tensor<64xf32>, %w: tensor<96x64xf32>) -> tensor<8x96xf32> {
  %n = transformer.rms_norm %x, %g {eps = 1.0e-05 : f64} : (tensor<8x64xf32>, tensor<64xf32>) -> tensor<8x64xf32>
  %y = transformer.linear %n, %w : (tensor<8x64xf32>, tensor<96x64xf32>) -> tensor<8x96xf32>
  %s = transformer.gelu %y : tensor<8x96xf32>
  return %s : tensor<8x96xf32>
}

func.func @short_norm(%x: tensor<8x32xf32>, %g: tensor<32xf32>) -> tensor<8x32xf32> {
  %n = transformer.rms_norm %x, %g {eps = 1.0e-05 : f64} : (tensor<8x32xf32>, tensor<32xf32>) -> tensor<8x32xf32>
  return %n : tensor<8x32xf32>
}
