// A GEMM on bf16 tensors (transformer.matmul, 256x128 @ 128x256) for sm_90: it takes the tensor cores
// whatever --precision says, in 128x128 blocks of 2 x 2 warps of 64x64, and copies its operands into
// shared memory as they are with cp.async, in a ring of 4 buffers. The buffers are views of the
// kernel's dynamic shared memory (A's 4 x 10 KiB, then B's 4 x 8.5 KiB: 75,776 bytes, past the 48 KiB
// a kernel may use without opting in), whose size the launch carries (gpu.launch_func's
// dynamic_shared_memory_size, the launch plan's `shared`). In the PTX it is an `.extern .shared`
// array. B[k, n] is held as [k, n] and read transposed (ldmatrix.trans). Per K step: wait until at
// most 2 groups of copies are in flight (this step's landed), one barrier, issue the copies of the
// step 3 ahead into the buffer the last step read, then 4 x 8 mma.sync per 16 of K. C is summed in
// f32 and rounded to bf16 as it is stored: the rounding kernel the op's bf16 result adds (marked at
// `tiled`) and its f32 buffer are gone at `loops`.
//
// RUN: kiln compile %s --target cuda --chip sm_90 --compile-to tiled | FileCheck %s --check-prefix=TILED
// RUN: kiln compile %s --target cuda --chip sm_90 --compile-to loops | FileCheck %s
// RUN: kiln compile %s --target cuda --chip sm_90 -o %t.kiln
// RUN: %PYTHON %S/Inputs/kiln_blobs.py %t.kiln ptx | FileCheck %s --check-prefix=PTX
// RUN: %PYTHON %S/Inputs/kiln_blobs.py %t.kiln plan | FileCheck %s --check-prefix=PLAN

// TILED-LABEL: func.func private @mm_dispatch_0_contraction(
// TILED-SAME:    %{{.*}}: tensor<256x256xf32>, %{{.*}}: tensor<256x128xbf16>, %{{.*}}: tensor<128x256xbf16>
// TILED-SAME:    kiln.gpu_block_dims = array<i64: 128, 1, 1>
// TILED-SAME:    kiln.mma_rounds_c = "bf16"
// TILED-SAME:    kiln.mma_tile = array<i64: 128, 128, 32, 64, 64, 32, 4>
// TILED:         arith.extf %{{.*}} : bf16 to f32
// TILED-LABEL: func.func private @mm_dispatch_1_elementwise(
// TILED-SAME:    kiln.rounds_mma_result
// TILED:         arith.truncf %{{.*}} : f32 to bf16

// CHECK-LABEL: func.func private @mm_dispatch_0_contraction(
// CHECK-SAME:    kiln.shared_bytes = 75776 : i64
// CHECK:         %[[SIZE:.*]] = arith.constant 75776 : i32
// CHECK:         gpu.launch_func @mm_dispatch_0_contraction_kernel::@mm_dispatch_0_contraction_kernel blocks in (%c2, %c2, %c1) threads in (%c128, %c1, %c1) dynamic_shared_memory_size %[[SIZE]] args(
// CHECK-LABEL: gpu.func @mm_dispatch_0_contraction_kernel(
// CHECK-SAME:    %[[A:.*]]: memref<256x128xbf16>, %[[B:.*]]: memref<128x256xbf16>, %[[C:.*]]: memref<256x256xbf16>) kernel
// CHECK-SAME:    known_block_size = array<i32: 128, 1, 1>, known_grid_size = array<i32: 2, 2, 1>
// CHECK:         %[[SMEM:.*]] = gpu.dynamic_shared_memory : memref<?xi8, #gpu.address_space<workgroup>>
// CHECK-NEXT:    %[[SA:.*]] = memref.view %[[SMEM]][%c0][] : {{.*}} to memref<4x128x40xf16, #gpu.address_space<workgroup>>
// CHECK-NEXT:    %[[SA_IN:.*]] = memref.view %[[SMEM]][%c0][] : {{.*}} to memref<4x128x40xbf16, #gpu.address_space<workgroup>>
// CHECK-NEXT:    %[[SB:.*]] = memref.view %[[SMEM]][%c40960][] : {{.*}} to memref<4x32x136xf16, #gpu.address_space<workgroup>>
// CHECK-NEXT:    %[[SB_IN:.*]] = memref.view %[[SMEM]][%c40960][] : {{.*}} to memref<4x32x136xbf16, #gpu.address_space<workgroup>>
// CHECK-COUNT-4: nvgpu.device_async_copy %[[A]][{{.*}}], %[[SA_IN]][%c0, {{.*}}], 8 {bypassL1} : memref<256x128xbf16> to memref<4x128x40xbf16, #gpu.address_space<workgroup>>
// CHECK-COUNT-4: nvgpu.device_async_copy %[[B]][{{.*}}], %[[SB_IN]][%c0, {{.*}}], 8 {bypassL1} : memref<128x256xbf16> to memref<4x32x136xbf16, #gpu.address_space<workgroup>>
// CHECK:         nvgpu.device_async_create_group
// CHECK-COUNT-4: nvgpu.device_async_copy %[[A]][{{.*}}], %[[SA_IN]][%c1, {{.*}}]
// CHECK:         nvgpu.device_async_create_group
// CHECK-COUNT-4: nvgpu.device_async_copy %[[A]][{{.*}}], %[[SA_IN]][%c2, {{.*}}]
// CHECK:         %[[G0:.*]] = nvgpu.device_async_create_group
// CHECK:         %[[LOOP:.*]]:33 = scf.for %[[I:.*]] = %c0 to %c4 step %c1 iter_args(%[[PENDING:.*]] = %[[G0]],
// CHECK-NEXT:      nvgpu.device_async_wait %[[PENDING]] {numGroups = 2 : i32}
// CHECK-NEXT:      gpu.barrier
// CHECK-COUNT-8:   nvgpu.device_async_copy
// CHECK:           %[[G:.*]] = nvgpu.device_async_create_group
// CHECK-COUNT-4:   nvgpu.ldmatrix %[[SA]][{{.*}}] {numTiles = 4 : i32, transpose = false}
// CHECK-COUNT-4:   nvgpu.ldmatrix %[[SB]][{{.*}}] {numTiles = 4 : i32, transpose = true}
// CHECK-COUNT-32:  nvvm.mma.sync {{.*}}multiplicandAPtxType = #nvvm.mma_type<bf16>
// CHECK:           scf.yield %[[G]],
// CHECK:         nvgpu.device_async_wait %[[LOOP]]#0 {numGroups = 0 : i32}
// CHECK:         %[[H:.*]] = arith.truncf %{{.*}} : vector<2xf32> to vector<2xbf16>
// CHECK-NEXT:    vector.store %[[H]], %[[C]][{{.*}}] {alignment = 4 : i64} : memref<256x256xbf16>, vector<2xbf16>
// CHECK-COUNT-63: vector.store %{{.*}}, %[[C]][{{.*}}] {alignment = 4 : i64} : memref<256x256xbf16>, vector<2xbf16>
// CHECK-NOT:   memref.global
// CHECK-NOT:   gpu.func
// CHECK-LABEL: func.func @mm(
// CHECK-NEXT:    call @mm_dispatch_0_contraction(%arg2, %arg0, %arg1) : (memref<256x256xbf16>, memref<256x128xbf16>, memref<128x256xbf16>) -> ()
// CHECK-NEXT:    return

// PLAN: launch mm_dispatch_0_contraction_kernel grid [2, 2, 1] block [128, 1, 1] args arg0+0 arg1+0 result0+0 shared 75776

// PTX:       .extern .shared .align 1024 .b8 __dynamic_shmem__0[];
// PTX-LABEL: .visible .entry mm_dispatch_0_contraction_kernel(
// PTX-NOT:   .shared .align
// PTX:       cp.async.cg.shared.global [%rd{{[0-9]+}}], [%rd{{[0-9]+}}], 16;
// PTX:       cp.async.commit_group;
// PTX:       cp.async.wait_group 2;
// PTX:       ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16
// PTX:       mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
// PTX:       cvt.rn.bf16x2.f32
// PTX:       st.global.b32
// PTX-NOT:   .entry

func.func @mm(%a: tensor<256x128xbf16>, %b: tensor<128x256xbf16>) -> tensor<256x256xbf16> {
  %c = transformer.matmul %a, %b : (tensor<256x128xbf16>, tensor<128x256xbf16>) -> tensor<256x256xbf16>
  return %c : tensor<256x256xbf16>
}
