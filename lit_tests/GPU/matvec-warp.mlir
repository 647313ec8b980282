// Decode-shaped linears (x[.., m, K]·W[N, K]ᵀ, m <= 4) on GPUs: a warp per row of W (pipelines/gpu_matvec.py).
// At `tiled` the kernel is only marked (warps per block; the block is that many warps); at `loops` the
// 32 lanes of a warp walk one row of W with 16-byte vector loads (lane l reads K elements 4l..4l+3, then
// 128 further on: coalesced), sum their vector, reduce across the warp with a `gpu.shuffle xor` butterfly,
// and lane 0 stores: in PTX ld.global.v4 and shfl.sync.bfly, in ROCDL ds_bpermute. N = 30 gets 2 warps per
// block (N % 4 != 0). A GEMM with 8 rows keeps the register-tiled schedule.
//
// RUN: kiln compile %s --target cuda --compile-to=tiled | FileCheck %s --check-prefix=TILED
// RUN: kiln compile %s --target cuda --compile-to=loops | FileCheck %s --check-prefix=LOOPS
// RUN: kiln compile %s --target cuda -o %t.kiln
// RUN: %PYTHON %S/Inputs/kiln_blobs.py %t.kiln ptx | FileCheck %s --check-prefix=PTX
// RUN: kiln compile %s --target rocm --compile-to=llvm | FileCheck %s --check-prefix=ROCDL

// TILED-LABEL: func.func private @decode_dispatch_0_contraction
// TILED-SAME:    kiln.gpu_block_dims = array<i64: 128, 1, 1>
// TILED-SAME:    kiln.matvec_warps = 4
// TILED-NOT:     scf.forall
// TILED:         linalg.generic
// TILED-LABEL: func.func private @decode_dispatch_1_contraction
// TILED-SAME:    kiln.gpu_block_dims = array<i64: 64, 1, 1>
// TILED-SAME:    kiln.matvec_warps = 2
// TILED-LABEL: func.func private @decode_dispatch_2_contraction
// TILED-NOT:     kiln.matvec_warps
// TILED:         scf.forall

// LOOPS-LABEL: gpu.func @decode_dispatch_0_contraction_kernel(%arg0: memref<1x1x256xf32>, %arg1: memref<64x256xf32>, %arg2: memref<1x1x64xf32>)
// LOOPS-SAME:    known_block_size = array<i32: 128, 1, 1>, known_grid_size = array<i32: 16, 1, 1>
// LOOPS:         %[[TID:.*]] = gpu.thread_id x
// LOOPS:         %[[LANE:.*]] = affine.apply #{{.*}}()[%[[TID]]]
// LOOPS:         %[[K0:.*]] = affine.apply #{{.*}}()[%[[TID]]]
// LOOPS:         %[[ACC:.*]] = scf.for %[[K:.*]] = %[[K0]] to %c256 step %c128 iter_args
// LOOPS:           vector.load %arg0[%c0, %c0, %[[K]]] {alignment = 16 : i64} : memref<1x1x256xf32>, vector<4xf32>
// LOOPS:           vector.load %arg1[%{{.*}}, %[[K]]] {alignment = 16 : i64} : memref<64x256xf32>, vector<4xf32>
// LOOPS:           vector.fma
// LOOPS:         %[[SUM:.*]] = vector.reduction <add>, %[[ACC]] : vector<4xf32> into f32
// LOOPS:         gpu.shuffle xor %[[SUM]], %c16_i32, %c32_i32 : f32
// LOOPS:         gpu.shuffle xor %{{.*}}, %c8_i32, %c32_i32 : f32
// LOOPS:         gpu.shuffle xor %{{.*}}, %c4_i32, %c32_i32 : f32
// LOOPS:         gpu.shuffle xor %{{.*}}, %c2_i32, %c32_i32 : f32
// LOOPS:         gpu.shuffle xor %{{.*}}, %c1_i32, %c32_i32 : f32
// LOOPS:         %[[FIRST:.*]] = arith.cmpi eq, %[[LANE]], %c0 : index
// LOOPS:         scf.if %[[FIRST]] {
// LOOPS-NEXT:      %[[Y:.*]] = arith.addf %{{.*}}, %cst : f32
// LOOPS-NEXT:      memref.store %[[Y]], %arg2[%c0, %c0, %{{.*}}] : memref<1x1x64xf32>
// LOOPS-LABEL: gpu.func @decode_dispatch_1_contraction_kernel(
// LOOPS-SAME:    known_block_size = array<i32: 64, 1, 1>, known_grid_size = array<i32: 15, 1, 1>
// LOOPS-COUNT-5: gpu.shuffle xor

// PTX-LABEL: .visible .entry decode_dispatch_0_contraction_kernel(
// PTX:       .maxntid 128, 1, 1
// PTX:       ld.global.v4.b32
// PTX:       ld.global.v4.b32
// PTX:       fma.rn.f32
// PTX:       shfl.sync.bfly.b32 {{.*}}, 16, 31, -1;
// PTX:       shfl.sync.bfly.b32 {{.*}}, 8, 31, -1;
// PTX:       shfl.sync.bfly.b32 {{.*}}, 4, 31, -1;
// PTX:       shfl.sync.bfly.b32 {{.*}}, 2, 31, -1;
// PTX:       shfl.sync.bfly.b32 {{.*}}, 1, 31, -1;
// PTX:       st.global.b32
// PTX-LABEL: .visible .entry decode_dispatch_1_contraction_kernel(
// PTX:       .maxntid 64, 1, 1
// PTX:       shfl.sync.bfly.b32

// ROCDL-LABEL: llvm.func @decode_dispatch_0_contraction_kernel(
// ROCDL:         llvm.load {{.*}} {alignment = 16 : i64} : !llvm.ptr -> vector<4xf32>
// ROCDL-COUNT-5: rocdl.ds_bpermute

func.func @decode(%x: tensor<1x1x256xf32>, %w: tensor<64x256xf32>, %w2: tensor<30x64xf32>, %x8: tensor<8x64xf32>)
    -> (tensor<1x1x30xf32>, tensor<8x30xf32>) {
  %y = transformer.linear %x, %w : (tensor<1x1x256xf32>, tensor<64x256xf32>) -> tensor<1x1x64xf32>
  %z = transformer.linear %y, %w2 : (tensor<1x1x64xf32>, tensor<30x64xf32>) -> tensor<1x1x30xf32>
  %g = transformer.linear %x8, %w2 : (tensor<8x64xf32>, tensor<30x64xf32>) -> tensor<8x30xf32>
  return %z, %g : tensor<1x1x30xf32>, tensor<8x30xf32>
}
