// The tensor-core kernel at the GPU `loops` stage (gpu_mma.py), for 128x1536x576 (SmolLM2's MLP up
// projection, one 128-token prefill): a 24 x 2 grid of 64x64 tiles, 4 warps of 32x32. The shared
// memory tiles of A and B are views of the kernel's dynamic shared memory (10 KiB, given at the
// launch), each one [64, 40] buffer of 16-bit elements (rows padded to 40). Per K step of 32: 4 + 4 16-byte loads per thread rounded to f16/bf16 into
// shared memory (loaded one step ahead: the next step's 8 vectors are loaded before this step's
// mma.sync and wait in a per-thread buffer that LLVM keeps in registers), a barrier, then per 16 of K
// each warp loads 2 A and 4 B fragments with ldmatrix and issues 8 mma.sync (16x8x16) into 8 f32
// accumulators carried by the K loop; after it, the accumulators are stored to C. f16 keeps upstream's nvgpu.mma.sync; bf16 tiles are f16-typed
// 16-bit words, their mma.sync is nvvm.mma.sync with bf16 multiplicands.
//
// RUN: kiln compile %s --target cuda --precision f16 --compile-to loops | FileCheck %s --check-prefixes=CHECK,F16
// RUN: kiln compile %s --target cuda --chip sm_90 --precision bf16 --compile-to loops | FileCheck %s --check-prefixes=CHECK,BF16

// CHECK-LABEL: func.func private @proj_dispatch_0_contraction(
// CHECK:         gpu.launch_func @proj_dispatch_0_contraction_kernel::@proj_dispatch_0_contraction_kernel {{.*}} dynamic_shared_memory_size %c10240_i32
// CHECK-LABEL: gpu.module @proj_dispatch_0_contraction_kernel
// CHECK:         gpu.func @proj_dispatch_0_contraction_kernel(%[[A:.*]]: memref<128x576xf32>, %[[W:.*]]: memref<1536x576xf32>, %[[C:.*]]: memref<128x1536xf32>) kernel
// CHECK-SAME:      known_block_size = array<i32: 128, 1, 1>, known_grid_size = array<i32: 24, 2, 1>
// CHECK:         %[[SMEM:.*]] = gpu.dynamic_shared_memory : memref<?xi8, #gpu.address_space<workgroup>>
// CHECK-NEXT:    %[[SA:.*]] = memref.view %[[SMEM]][%c0][] : memref<?xi8, #gpu.address_space<workgroup>> to memref<1x64x40xf16, #gpu.address_space<workgroup>>
// CHECK-NEXT:    %[[SB:.*]] = memref.view %[[SMEM]][%c5120][] : memref<?xi8, #gpu.address_space<workgroup>> to memref<1x64x40xf16, #gpu.address_space<workgroup>>
// CHECK:         %[[REGS:.*]] = memref.alloca() : memref<8x4xf32>
// CHECK-COUNT-4: vector.load %[[A]][{{.*}}] {alignment = 16 : i64} : memref<128x576xf32>, vector<4xf32>
// CHECK-COUNT-4: vector.load %[[W]][{{.*}}] {alignment = 16 : i64} : memref<1536x576xf32>, vector<4xf32>
// CHECK-COUNT-8: vector.store %{{.*}}, %[[REGS]][%{{.*}}, %c0] : memref<8x4xf32>, vector<4xf32>
// CHECK:         scf.for %{{.*}} = %c0 to %c576 step %c32 iter_args({{.*}}) -> (vector<2x2xf32>, vector<2x2xf32>, vector<2x2xf32>, vector<2x2xf32>, vector<2x2xf32>, vector<2x2xf32>, vector<2x2xf32>, vector<2x2xf32>)
// CHECK-COUNT-8:   vector.load %[[REGS]][%{{.*}}, %c0] : memref<8x4xf32>, vector<4xf32>
// F16:             arith.truncf %{{.*}} : vector<4xf32> to vector<4xf16>
// BF16:            arith.truncf %{{.*}} : vector<4xf32> to vector<4xbf16>
// BF16-NEXT:       arith.bitcast %{{.*}} : vector<4xbf16> to vector<4xf16>
// CHECK:           vector.store %{{.*}}, %[[SB]][%c0, {{.*}}] {alignment = 8 : i64} : memref<1x64x40xf16, #gpu.address_space<workgroup>>, vector<4xf16>
// CHECK:           affine.min
// CHECK-COUNT-4:   vector.load %[[A]][{{.*}}] {alignment = 16 : i64} : memref<128x576xf32>, vector<4xf32>
// CHECK-COUNT-4:   vector.load %[[W]][{{.*}}] {alignment = 16 : i64} : memref<1536x576xf32>, vector<4xf32>
// CHECK-COUNT-8:   vector.store %{{.*}}, %[[REGS]][%{{.*}}, %c0] : memref<8x4xf32>, vector<4xf32>
// CHECK:           gpu.barrier
// CHECK:           gpu.lane_id
// CHECK-COUNT-2:   nvgpu.ldmatrix %[[SA]][{{.*}}] {numTiles = 4 : i32, transpose = false} {{.*}} -> vector<4x2xf16>
// CHECK-COUNT-4:   nvgpu.ldmatrix %[[SB]][{{.*}}] {numTiles = 2 : i32, transpose = false} {{.*}} -> vector<2x2xf16>
// F16-COUNT-8:     nvgpu.mma.sync({{.*}}) {mmaShape = [16, 8, 16]} : (vector<4x2xf16>, vector<2x2xf16>, vector<2x2xf32>) -> vector<2x2xf32>
// BF16-COUNT-8:    nvvm.mma.sync A[{{.*}}] B[{{.*}}] C[{{.*}}] {layoutA = #nvvm.mma_layout<row>, layoutB = #nvvm.mma_layout<col>, multiplicandAPtxType = #nvvm.mma_type<bf16>, multiplicandBPtxType = #nvvm.mma_type<bf16>, shape = #nvvm.shape<m = 16, n = 8, k = 16>} : (i32, i32, f32) -> !llvm.struct<(f32, f32, f32, f32)>
// CHECK:           gpu.barrier
// CHECK:           scf.yield
// CHECK-COUNT-16:  vector.store %{{.*}}, %[[C]][{{.*}}] {alignment = 8 : i64} : memref<128x1536xf32>, vector<2xf32>
// CHECK:         gpu.return
// CHECK-NOT:   memref.global
// F16-NOT:       nvvm.mma.sync
// BF16-NOT:      nvgpu.mma.sync

func.func @proj(%x: tensor<128x576xf32>, %w: tensor<1536x576xf32>) -> tensor<128x1536xf32> {
  %y = transformer.linear %x, %w : (tensor<128x576xf32>, tensor<1536x576xf32>) -> tensor<128x1536xf32>
  return %y : tensor<128x1536xf32>
}
