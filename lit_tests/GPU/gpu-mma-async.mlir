// A GEMM on bf16 tensors (transformer.matmul, 256x128 @ 128x256) for sm_90: it takes the tensor cores
// whatever --precision says, in 128x128 blocks of 2 x 2 warps of 64x64, and copies its operands into
// shared memory as they are with cp.async, in a ring of buffers (2 here: 3 would pass the 48 KiB of
// static shared memory). B[k, n] is held as [k, n] and read transposed (ldmatrix.trans). Per K step:
// wait for the step's copies, one barrier, issue the copies of the step after next into the buffer
// the last step read, then 4 x 8 mma.sync per 16 of K. C is summed in f32 and rounded to bf16 as it
// is stored: the rounding kernel the op's bf16 result adds (marked at `tiled`) and its f32 buffer
// are gone at `loops`.
//
// RUN: kiln compile %s --target cuda --chip sm_90 --compile-to tiled | FileCheck %s --check-prefix=TILED
// RUN: kiln compile %s --target cuda --chip sm_90 --compile-to loops | FileCheck %s
// RUN: kiln compile %s --target cuda --chip sm_90 -o %t.kiln
// RUN: %PYTHON %S/Inputs/kiln_blobs.py %t.kiln ptx | FileCheck %s --check-prefix=PTX

// TILED-LABEL: func.func private @mm_dispatch_0_contraction(
// TILED-SAME:    %{{.*}}: tensor<256x256xf32>, %{{.*}}: tensor<256x128xbf16>, %{{.*}}: tensor<128x256xbf16>
// TILED-SAME:    kiln.gpu_block_dims = array<i64: 128, 1, 1>
// TILED-SAME:    kiln.mma_rounds_c = "bf16"
// TILED-SAME:    kiln.mma_tile = array<i64: 128, 128, 32, 64, 64, 32, 2>
// TILED:         arith.extf %{{.*}} : bf16 to f32
// TILED-LABEL: func.func private @mm_dispatch_1_elementwise(
// TILED-SAME:    kiln.rounds_mma_result
// TILED:         arith.truncf %{{.*}} : f32 to bf16

// CHECK-LABEL: gpu.func @mm_dispatch_0_contraction_kernel(
// CHECK-SAME:    %[[A:.*]]: memref<256x128xbf16>, %[[B:.*]]: memref<128x256xbf16>, %[[C:.*]]: memref<256x256xbf16>) kernel
// CHECK-SAME:    known_block_size = array<i32: 128, 1, 1>, known_grid_size = array<i32: 2, 2, 1>
// CHECK:         %[[RA:.*]] = memref.get_global @mm_dispatch_0_contraction_smem_a : memref<20480xi8, #gpu.address_space<workgroup>>
// CHECK-NEXT:    %[[SA:.*]] = memref.view %[[RA]][%c0][] : {{.*}} to memref<2x128x40xf16, #gpu.address_space<workgroup>>
// CHECK-NEXT:    %[[SA_IN:.*]] = memref.view %[[RA]][%c0][] : {{.*}} to memref<2x128x40xbf16, #gpu.address_space<workgroup>>
// CHECK-NEXT:    %[[RB:.*]] = memref.get_global @mm_dispatch_0_contraction_smem_b : memref<17408xi8, #gpu.address_space<workgroup>>
// CHECK-NEXT:    %[[SB:.*]] = memref.view %[[RB]][%c0][] : {{.*}} to memref<2x32x136xf16, #gpu.address_space<workgroup>>
// CHECK-NEXT:    %[[SB_IN:.*]] = memref.view %[[RB]][%c0][] : {{.*}} to memref<2x32x136xbf16, #gpu.address_space<workgroup>>
// CHECK-COUNT-4: nvgpu.device_async_copy %[[A]][{{.*}}], %[[SA_IN]][%c0, {{.*}}], 8 {bypassL1} : memref<256x128xbf16> to memref<2x128x40xbf16, #gpu.address_space<workgroup>>
// CHECK-COUNT-4: nvgpu.device_async_copy %[[B]][{{.*}}], %[[SB_IN]][%c0, {{.*}}], 8 {bypassL1} : memref<128x256xbf16> to memref<2x32x136xbf16, #gpu.address_space<workgroup>>
// CHECK:         %[[G0:.*]] = nvgpu.device_async_create_group
// CHECK:         %[[LOOP:.*]]:33 = scf.for %[[I:.*]] = %c0 to %c4 step %c1 iter_args(%[[PENDING:.*]] = %[[G0]],
// CHECK-NEXT:      nvgpu.device_async_wait %[[PENDING]] {numGroups = 0 : i32}
// CHECK-NEXT:      gpu.barrier
// CHECK-COUNT-8:   nvgpu.device_async_copy
// CHECK:           %[[G:.*]] = nvgpu.device_async_create_group
// CHECK-COUNT-4:   nvgpu.ldmatrix %[[SA]][{{.*}}] {numTiles = 4 : i32, transpose = false}
// CHECK-COUNT-8:   nvgpu.ldmatrix %[[SB]][{{.*}}] {numTiles = 2 : i32, transpose = true}
// CHECK-COUNT-32:  nvvm.mma.sync {{.*}}multiplicandAPtxType = #nvvm.mma_type<bf16>
// CHECK:           scf.yield %[[G]],
// CHECK:         nvgpu.device_async_wait %[[LOOP]]#0 {numGroups = 0 : i32}
// CHECK:         %[[H:.*]] = arith.truncf %{{.*}} : vector<2xf32> to vector<2xbf16>
// CHECK-NEXT:    vector.store %[[H]], %[[C]][{{.*}}] {alignment = 4 : i64} : memref<256x256xbf16>, vector<2xbf16>
// CHECK-COUNT-63: vector.store %{{.*}}, %[[C]][{{.*}}] {alignment = 4 : i64} : memref<256x256xbf16>, vector<2xbf16>
// CHECK:       memref.global "private" @mm_dispatch_0_contraction_smem_a : memref<20480xi8, #gpu.address_space<workgroup>>
// CHECK-NOT:   gpu.func
// CHECK-LABEL: func.func @mm(
// CHECK-NEXT:    call @mm_dispatch_0_contraction(%arg2, %arg0, %arg1) : (memref<256x256xbf16>, memref<256x128xbf16>, memref<128x256xbf16>) -> ()
// CHECK-NEXT:    return

// PTX-LABEL: .visible .entry mm_dispatch_0_contraction_kernel(
// PTX:       cp.async.cg.shared.global [%rd{{[0-9]+}}], [%rd{{[0-9]+}}], 16;
// PTX:       cp.async.commit_group;
// PTX:       cp.async.wait_group 0;
// PTX:       ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16
// PTX:       mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
// PTX:       cvt.rn.bf16x2.f32
// PTX:       st.global.b32
// PTX-NOT:   .entry

func.func @mm(%a: tensor<256x128xbf16>, %b: tensor<128x256xbf16>) -> tensor<256x256xbf16> {
  %c = transformer.matmul %a, %b : (tensor<256x128xbf16>, tensor<128x256xbf16>) -> tensor<256x256xbf16>
  return %c : tensor<256x256xbf16>
}
