// --precision bf16 at the GPU `tiled` stage: a GEMM that fits tensor-core tiles is left whole and
// marked with its tile (kiln.mma_tile = [TM, TN, KT, WM, WN, LANES, STAGES]: 64x64 of C per block of 4 warps,
// K in steps of 32, 32x32 per warp of 32 lanes; on CDNA, wavefronts of 64); gpu_mma.py writes the
// kernel at the `loops` stage. A ragged GEMM keeps the SIMT schedule with its operands rounded to bf16
// in the body (products of bf16 values, f32 sums). Without matrix instructions (RDNA2) every GEMM is
// rounded on SIMT; precision f32 changes nothing.
//
// RUN: kiln compile %s --target cuda --precision bf16 --compile-to tiled | FileCheck %s
// RUN: kiln compile %s --target rocm --precision bf16 --compile-to tiled | FileCheck %s --check-prefix=CDNA
// RUN: kiln compile %s --target rocm --chip gfx1030 --precision bf16 --compile-to tiled | FileCheck %s --check-prefix=RDNA2
// RUN: kiln compile %s --target cuda --compile-to tiled | FileCheck %s --check-prefix=F32

// CHECK:       kiln.precision = "bf16"
// CHECK-LABEL: func.func private @proj_dispatch_0_contraction
// CHECK-SAME:    kiln.gpu_block_dims = array<i64: 128, 1, 1>
// CHECK-SAME:    kiln.mma_tile = array<i64: 64, 64, 32, 32, 32, 32, 1>
// CHECK-NOT:     scf.forall
// CHECK:         linalg.fill
// CHECK:         linalg.generic
// CHECK-NEXT:    ^bb0(%[[A:.*]]: f32, %[[B:.*]]: f32, %[[C:.*]]: f32):
// CHECK-NEXT:      arith.mulf %[[A]], %[[B]] : f32
// CHECK-LABEL: func.func @proj

// CHECK-LABEL: func.func private @ragged_dispatch_0_contraction
// CHECK-NOT:     kiln.mma_tile
// CHECK:         scf.forall
// CHECK:           scf.forall
// CHECK:             linalg.generic
// CHECK:               %[[AH:.*]] = arith.truncf %{{.*}} : f32 to bf16
// CHECK-NEXT:          %[[AW:.*]] = arith.extf %[[AH]] : bf16 to f32
// CHECK-NEXT:          %[[BH:.*]] = arith.truncf %{{.*}} : f32 to bf16
// CHECK-NEXT:          %[[BW:.*]] = arith.extf %[[BH]] : bf16 to f32
// CHECK-NEXT:          arith.mulf %[[AW]], %[[BW]] : f32

// CDNA:       kiln.precision = "bf16"
// CDNA-LABEL: func.func private @proj_dispatch_0_contraction
// CDNA-SAME:    kiln.gpu_block_dims = array<i64: 256, 1, 1>
// CDNA-SAME:    kiln.mma_tile = array<i64: 64, 64, 32, 32, 32, 64, 1>
// CDNA-LABEL: func.func private @ragged_dispatch_0_contraction
// CDNA-NOT:     kiln.mma_tile
// CDNA:         arith.truncf %{{.*}} to {{.*}}bf16

// RDNA2:       kiln.precision = "bf16"
// RDNA2-LABEL: func.func private @proj_dispatch_0_contraction
// RDNA2-NOT:     kiln.mma_tile
// RDNA2:         arith.truncf %{{.*}} to {{.*}}bf16
// RDNA2-LABEL: func.func private @ragged_dispatch_0_contraction
// RDNA2:         arith.truncf %{{.*}} to {{.*}}bf16

// F32:       kiln.precision = "f32"
// F32-NOT:   kiln.mma_tile
// F32-NOT:   bf16

func.func @proj(%x: tensor<128x576xf32>, %w: tensor<1536x576xf32>) -> tensor<128x1536xf32> {
  %y = transformer.linear %x, %w : (tensor<128x576xf32>, tensor<1536x576xf32>) -> tensor<128x1536xf32>
  return %y : tensor<128x1536xf32>
}

func.func @ragged(%x: tensor<13x70xf32>, %w: tensor<100x70xf32>) -> tensor<13x100xf32> {
  %y = transformer.linear %x, %w : (tensor<13x70xf32>, tensor<100x70xf32>) -> tensor<13x100xf32>
  return %y : tensor<13x100xf32>
}
