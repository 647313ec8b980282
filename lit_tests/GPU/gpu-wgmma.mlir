// A GEMM on bf16 tensors (transformer.matmul, 256x256 @ 256x512) for sm_90a takes Hopper's wgmma
// (gpu_wgmma.py): 128x256 blocks of 2 warpgroups (256 threads) of 64x256, K steps of 64, a ring of
// 4 cp.async buffers in 192 KiB of dynamic shared memory (A's 4 x 16 KiB, then B's 4 x 32 KiB),
// every 16-byte chunk at its 128-byte-swizzled place (chunk xor row). The instructions read A and B
// through matrix descriptors: the shared window address >> 4 (14 bits), A's fields (SBO 1024, LBO
// 16, 128-byte swizzle: 0x4000004000010000) and B[k, n]'s (N-major: SBO 1024, LBO 8 KiB between
// blocks of 64 columns: 0x4000004002000000), B's 64 KiB into the buffer (4096 x 16 bytes). Per K
// step: wait until this step's copies landed (one group, the next step's, still in flight), make
// them visible to the async proxy, a barrier, the copies 2 steps ahead, 4 wgmma of m64n256k16 (A's
// start 32 bytes further each, B's 2 KiB), commit, wait until only these are in flight; after the
// loop, wait for all. On sm_90 the same program keeps mma.sync.
//
// RUN: kiln compile %s --target cuda --chip sm_90a --compile-to tiled | FileCheck %s --check-prefix=TILED
// RUN: kiln compile %s --target cuda --chip sm_90 --compile-to tiled | FileCheck %s --check-prefix=SM90
// RUN: kiln compile %s --target cuda --chip sm_90a --compile-to loops | FileCheck %s
// RUN: kiln compile %s --target cuda --chip sm_90a -o %t.kiln
// RUN: %PYTHON %S/Inputs/kiln_blobs.py %t.kiln ptx | FileCheck %s --check-prefix=PTX
// RUN: %PYTHON %S/Inputs/kiln_blobs.py %t.kiln plan | FileCheck %s --check-prefix=PLAN

// TILED-LABEL: func.func private @mm_dispatch_0_contraction(
// TILED-SAME:    kiln.gpu_block_dims = array<i64: 256, 1, 1>
// TILED-SAME:    kiln.mma_tile = array<i64: 128, 256, 64, 64, 256, 128, 4>

// SM90:        kiln.mma_tile = array<i64: 128, 128, 32, 64, 64, 32, 4>

// CHECK-LABEL: func.func private @mm_dispatch_0_contraction(
// CHECK-SAME:    kiln.shared_bytes = 196608 : i64
// CHECK:         gpu.launch_func @mm_dispatch_0_contraction_kernel::@mm_dispatch_0_contraction_kernel blocks in (%c2, %c2, %c1) threads in (%c256, %c1, %c1) dynamic_shared_memory_size %c196608_i32 args(
// CHECK-LABEL: gpu.func @mm_dispatch_0_contraction_kernel(
// CHECK-SAME:    %[[A:.*]]: memref<256x256xbf16>, %[[B:.*]]: memref<256x512xbf16>, %[[C:.*]]: memref<256x512xbf16>) kernel
// CHECK:         %[[ZERO:.*]] = llvm.mlir.zero : !llvm.struct<(f32{{(, f32){127}[)]}}>
// CHECK:         %[[SMEM:.*]] = gpu.dynamic_shared_memory : memref<?xi8, #gpu.address_space<workgroup>>
// CHECK-NEXT:    %[[SA:.*]] = memref.view %[[SMEM]][%c0][] : {{.*}} to memref<32768xbf16, #gpu.address_space<workgroup>>
// CHECK-NEXT:    %[[SB:.*]] = memref.view %[[SMEM]][%c65536][] : {{.*}} to memref<65536xbf16, #gpu.address_space<workgroup>>
// CHECK:         arith.xori %{{.*}}, %{{.*}} : index
// CHECK:         %[[PTR:.*]] = memref.extract_aligned_pointer_as_index %[[SMEM]]
// CHECK-NEXT:    %[[P64:.*]] = arith.index_cast %[[PTR]] : index to i64
// CHECK-NEXT:    %[[SHIFTED:.*]] = arith.shrui %[[P64]], %c4_i64 : i64
// CHECK-NEXT:    %[[START:.*]] = arith.andi %[[SHIFTED]], %c16383_i64 : i64
// CHECK-NEXT:    %[[DESC_A:.*]] = arith.ori %[[START]], %c4611686293305360384_i64 : i64
// CHECK-NEXT:    %[[START_B:.*]] = arith.addi %[[START]], %c4096_i64 : i64
// CHECK-NEXT:    %[[DESC_B:.*]] = arith.ori %[[START_B]], %c4611686293338849280_i64 : i64
// CHECK-COUNT-4: nvgpu.device_async_copy %[[A]][{{.*}}], %[[SA]][{{.*}}], 8 {bypassL1} : memref<256x256xbf16> to memref<32768xbf16, #gpu.address_space<workgroup>>
// CHECK-COUNT-8: nvgpu.device_async_copy %[[B]][{{.*}}], %[[SB]][{{.*}}], 8 {bypassL1} : memref<256x512xbf16> to memref<65536xbf16, #gpu.address_space<workgroup>>
// CHECK:         nvgpu.device_async_create_group
// CHECK:         %[[G0:.*]] = nvgpu.device_async_create_group
// CHECK-NOT:     nvgpu.device_async_create_group
// CHECK:         %[[LOOP:.*]]:2 = scf.for %{{.*}} = %c0 to %c4 step %c1 iter_args(%[[ACC:.*]] = %[[ZERO]], %[[PENDING:.*]] = %[[G0]])
// CHECK-NEXT:      nvgpu.device_async_wait %[[PENDING]] {numGroups = 1 : i32}
// CHECK-NEXT:      nvvm.fence.proxy {kind = #nvvm.proxy_kind<async.shared>, space = #nvvm.shared_space<cta>}
// CHECK-NEXT:      gpu.barrier
// CHECK-COUNT-12:  nvgpu.device_async_copy
// CHECK:           %[[G:.*]] = nvgpu.device_async_create_group
// CHECK:           %[[DA:.*]] = arith.addi %[[DESC_A]], %{{.*}} : i64
// CHECK:           %[[DB:.*]] = arith.addi %[[DESC_B]], %{{.*}} : i64
// CHECK-NEXT:      nvvm.wgmma.fence.aligned
// CHECK-NEXT:      %[[D0:.*]] = nvvm.wgmma.mma_async %[[DA]], %[[DB]], %[[ACC]], <m = 64, n = 256, k = 16>, D[<f32>, <one>], A[<bf16>, <one>, <row>], B[<bf16>, <one>, <row>]
// CHECK-NEXT:      %[[DA1:.*]] = arith.addi %[[DA]], %c2_i64 : i64
// CHECK-NEXT:      %[[DB1:.*]] = arith.addi %[[DB]], %c128_i64 : i64
// CHECK-NEXT:      %[[D1:.*]] = nvvm.wgmma.mma_async %[[DA1]], %[[DB1]], %[[D0]]
// CHECK:           %[[D2:.*]] = nvvm.wgmma.mma_async %{{.*}}, %{{.*}}, %[[D1]], <m = 64, n = 256, k = 16>
// CHECK:           %[[D3:.*]] = nvvm.wgmma.mma_async %{{.*}}, %{{.*}}, %[[D2]], <m = 64, n = 256, k = 16>
// CHECK-NEXT:      nvvm.wgmma.commit.group.sync.aligned
// CHECK-NEXT:      nvvm.wgmma.wait.group.sync.aligned 1
// CHECK-NEXT:      scf.yield %[[D3]], %[[G]]
// CHECK:         nvvm.wgmma.wait.group.sync.aligned 0
// CHECK-NEXT:    nvgpu.device_async_wait %[[LOOP]]#1 {numGroups = 0 : i32}
// CHECK:         %[[H:.*]] = arith.truncf %{{.*}} : vector<2xf32> to vector<2xbf16>
// CHECK-NEXT:    vector.store %[[H]], %[[C]][{{.*}}] {alignment = 4 : i64} : memref<256x512xbf16>, vector<2xbf16>
// CHECK-COUNT-63: vector.store %{{.*}}, %[[C]][{{.*}}] {alignment = 4 : i64} : memref<256x512xbf16>, vector<2xbf16>
// CHECK-NOT:     vector.store
// CHECK-NOT:     gpu.func

// PLAN: launch mm_dispatch_0_contraction_kernel grid [2, 2, 1] block [256, 1, 1] args arg0+0 arg1+0 result0+0 shared 196608

// PTX:       .target sm_90a
// PTX:       .extern .shared .align 1024 .b8 __dynamic_shmem__0[];
// PTX-LABEL: .visible .entry mm_dispatch_0_contraction_kernel(
// PTX:       cp.async.cg.shared.global [%rd{{[0-9]+}}], [%rd{{[0-9]+}}], 16;
// PTX:       cp.async.wait_group 1;
// PTX-NEXT:  fence.proxy.async.shared::cta;
// PTX-NEXT:  bar.sync 0;
// PTX:       wgmma.fence.sync.aligned;
// PTX:       wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16
// PTX:       wgmma.commit_group.sync.aligned;
// PTX-NEXT:  wgmma.wait_group.sync.aligned 1;
// PTX:       wgmma.wait_group.sync.aligned 0;
// PTX:       cvt.rn.bf16x2.f32
// PTX-NOT:   mma.sync
// PTX-NOT:   .entry

func.func @mm(%a: tensor<256x256xbf16>, %b: tensor<256x512xbf16>) -> tensor<256x512xbf16> {
  %c = transformer.matmul %a, %b : (tensor<256x256xbf16>, tensor<256x512xbf16>) -> tensor<256x512xbf16>
  return %c : tensor<256x512xbf16>
}
