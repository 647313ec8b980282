// --precision bf16|f16 on AMD chips with matrix instructions: a GEMM that fits 16x16 tiles gets the
// tensor-core kernel of gpu_mma.py, written per lane at `loops` (MLIR has no vector.contract ->
// amdgpu lowering): A and B are staged in LDS as for NVIDIA (dynamic LDS, sized at the launch), then each lane loads its own fragment
// of A's rows and B's columns and issues amdgpu.mfma / amdgpu.wmma. CDNA (gfx942): wavefronts of 64,
// 4 K elements per lane from K offset 4 * (lane / 16), accumulators in rows 4 * (lane / 16) + i. RDNA3 (gfx1100): wavefronts of 32, all 16 K elements per lane (both
// half-waves load the same), accumulators 2 rows apart. RDNA4 (gfx1201): 8 K elements per lane.
// convert-gpu-to-rocdl lowers them to the rocdl intrinsics; LLVM 22 to v_mfma / v_wmma, with the
// fragments read from LDS as vectors and no scratch memory (the prefetch buffer is private memory
// that opt -O3 promotes to registers).
//
// REQUIRES: llc-22
// RUN: kiln compile %s --target rocm --chip gfx942 --precision bf16 --compile-to loops | FileCheck %s --check-prefix=MFMA
// RUN: kiln compile %s --target rocm --chip gfx1100 --precision f16 --compile-to loops | FileCheck %s --check-prefix=RDNA3
// RUN: kiln compile %s --target rocm --chip gfx1201 --precision bf16 --compile-to loops | FileCheck %s --check-prefix=RDNA4
// RUN: kiln compile %s --target rocm --chip gfx942 --precision bf16 --compile-to llvm | FileCheck %s --check-prefix=ROCDL
// RUN: kiln compile %s --target rocm --chip gfx942 --precision bf16 -o %t.gfx942.kiln
// RUN: %PYTHON %S/Inputs/kiln_blobs.py %t.gfx942.kiln isa | FileCheck %s --check-prefix=ISA-MFMA
// RUN: kiln compile %s --target rocm --chip gfx1100 --precision f16 -o %t.gfx1100.kiln
// RUN: %PYTHON %S/Inputs/kiln_blobs.py %t.gfx1100.kiln isa | FileCheck %s --check-prefix=ISA-WMMA

// MFMA-DAG:   #[[KLANE:map[0-9]*]] = affine_map<()[s0] -> (((s0 mod 64) floordiv 16) * 4)>
// MFMA-DAG:   #[[CROW:map[0-9]*]] = affine_map<()[s0, s1] -> (s0 * 64 + ((s1 mod 64) floordiv 16) * 4 + ((s1 floordiv 64) floordiv 2) * 32)>
// MFMA-DAG:   #[[CROW1:map[0-9]*]] = affine_map<()[s0, s1] -> (s0 * 64 + ((s1 mod 64) floordiv 16) * 4 + ((s1 floordiv 64) floordiv 2) * 32 + 1)>
// MFMA-LABEL: gpu.func @proj_dispatch_0_contraction_kernel(
// MFMA-SAME:    known_block_size = array<i32: 256, 1, 1>, known_grid_size = array<i32: 2, 1, 1>
// MFMA:         %[[SMEM:.*]] = gpu.dynamic_shared_memory : memref<?xi8, #gpu.address_space<workgroup>>
// MFMA-NEXT:    %[[SA:.*]] = memref.view %[[SMEM]][%c0][]
// MFMA-NEXT:    %[[SB:.*]] = memref.view %[[SMEM]][%c5120][]
// MFMA:         %[[K:.*]] = affine.apply #[[KLANE]]()[%thread_id_x]
// MFMA:         memref.alloca() : memref<4x4xf32, #gpu.address_space<private>>
// MFMA:         gpu.barrier
// MFMA:         %[[AW:.*]] = vector.load %[[SA]][%c0, %{{.*}}, %[[K]]] {alignment = 8 : i64} : memref<1x64x40xf16, #gpu.address_space<workgroup>>, vector<4xf16>
// MFMA-NEXT:    %[[A:.*]] = arith.bitcast %[[AW]] : vector<4xf16> to vector<4xbf16>
// MFMA:         %[[BW:.*]] = vector.load %[[SB]][%c0, %{{.*}}, %[[K]]] {alignment = 8 : i64} : memref<1x64x40xf16, #gpu.address_space<workgroup>>, vector<4xf16>
// MFMA-NEXT:    %[[B:.*]] = arith.bitcast %[[BW]] : vector<4xf16> to vector<4xbf16>
// MFMA:         %[[D:.*]] = amdgpu.mfma 16x16x16 %[[A]] * %[[B]] + %{{.*}} blgp = none : vector<4xbf16>, vector<4xbf16>, vector<4xf32>
// MFMA-COUNT-7: amdgpu.mfma 16x16x16
// MFMA:         gpu.barrier
// MFMA:         %[[R0:.*]] = affine.apply #[[CROW]]()[%block_id_y, %thread_id_x]
// MFMA:         %[[D0:.*]] = vector.extract %{{.*}}[0] : f32 from vector<4xf32>
// MFMA-NEXT:    memref.store %[[D0]], %arg2[%[[R0]], %{{.*}}] : memref<64x128xf32>
// MFMA-NEXT:    %[[R1:.*]] = affine.apply #[[CROW1]]()[%block_id_y, %thread_id_x]
// MFMA-NEXT:    %[[D1:.*]] = vector.extract %{{.*}}[1] : f32 from vector<4xf32>
// MFMA-NEXT:    memref.store %[[D1]], %arg2[%[[R1]], %{{.*}}] : memref<64x128xf32>
// MFMA-NOT:     vector.contract

// RDNA3-DAG:   #[[CROW:map[0-9]*]] = affine_map<()[s0, s1] -> (s1 * 64 + (s0 mod 32) floordiv 16 + ((s0 floordiv 32) floordiv 2) * 32)>
// RDNA3-DAG:   #[[CROW2:map[0-9]*]] = affine_map<()[s0, s1] -> (s0 * 64 + (s1 mod 32) floordiv 16 + ((s1 floordiv 32) floordiv 2) * 32 + 2)>
// RDNA3-LABEL: gpu.func @proj_dispatch_0_contraction_kernel(
// RDNA3-SAME:    known_block_size = array<i32: 128, 1, 1>
// RDNA3:         %[[SMEM:.*]] = gpu.dynamic_shared_memory : memref<?xi8, #gpu.address_space<workgroup>>
// RDNA3-NEXT:    %[[SA:.*]] = memref.view %[[SMEM]][%c0][]
// RDNA3-NEXT:    %[[SB:.*]] = memref.view %[[SMEM]][%c5120][]
// RDNA3:         gpu.barrier
// RDNA3:         %[[A:.*]] = vector.load %[[SA]][%c0, %{{.*}}, %c0] {alignment = 16 : i64} : memref<1x64x40xf16, #gpu.address_space<workgroup>>, vector<16xf16>
// RDNA3-NOT:     arith.bitcast
// RDNA3:         %[[B:.*]] = vector.load %[[SB]][%c0, %{{.*}}, %c0] {alignment = 16 : i64} : memref<1x64x40xf16, #gpu.address_space<workgroup>>, vector<16xf16>
// RDNA3:         amdgpu.wmma 16x16x16 %[[A]] * %[[B]] + %{{.*}} : vector<16xf16>, vector<16xf16>, vector<8xf32>
// RDNA3-COUNT-7: amdgpu.wmma 16x16x16
// RDNA3:         affine.apply #[[CROW]]()[%thread_id_x, %block_id_y]
// RDNA3:         vector.extract %{{.*}}[0] : f32 from vector<8xf32>
// RDNA3:         affine.apply #[[CROW2]]()[%block_id_y, %thread_id_x]
// RDNA3-NEXT:    vector.extract %{{.*}}[1] : f32 from vector<8xf32>

// RDNA4-DAG:   #[[KLANE:map[0-9]*]] = affine_map<()[s0] -> (((s0 mod 32) floordiv 16) * 8)>
// RDNA4-LABEL: gpu.func @proj_dispatch_0_contraction_kernel(
// RDNA4-SAME:    known_block_size = array<i32: 128, 1, 1>
// RDNA4:         %[[K:.*]] = affine.apply #[[KLANE]]()[%thread_id_x]
// RDNA4:         vector.load %{{.*}}[%{{.*}}, %[[K]]] {alignment = 16 : i64} : memref<1x64x40xf16, #gpu.address_space<workgroup>>, vector<8xf16>
// RDNA4:         amdgpu.wmma 16x16x16 %{{.*}} * %{{.*}} + %{{.*}} : vector<8xbf16>, vector<8xbf16>, vector<8xf32>

// ROCDL:       llvm.mlir.global external @__dynamic_shmem__0() {addr_space = 3 : i32, alignment = 1024 : i64} : !llvm.array<0 x i8>
// ROCDL-LABEL: llvm.func @proj_dispatch_0_contraction_kernel(
// ROCDL:         llvm.load %{{.*}} {alignment = 8 : i64} : !llvm.ptr<3> -> vector<4xf16>
// ROCDL:         rocdl.mfma.f32.16x16x16bf16.1k %{{.*}} : (vector<4xi16>, vector<4xi16>, vector<4xf32>, i32, i32, i32) -> vector<4xf32>
// ROCDL-NOT:     amdgpu.

// ISA-MFMA:      kernel proj_dispatch_0_contraction_kernel
// ISA-MFMA-NEXT: wavefront_size 64
// ISA-MFMA-NEXT: private_segment_fixed_size 0
// ISA-MFMA-NOT:  scratch_
// ISA-MFMA:      ds_read{{2?}}_b64
// ISA-MFMA:      v_mfma_f32_16x16x16_bf16
// ISA-MFMA-NOT:  scratch_

// ISA-WMMA:      kernel proj_dispatch_0_contraction_kernel
// ISA-WMMA-NEXT: wavefront_size 32
// ISA-WMMA-NEXT: private_segment_fixed_size 0
// ISA-WMMA-NOT:  scratch_
// ISA-WMMA:      ds_load_b128
// ISA-WMMA:      v_wmma_f32_16x16x16_f16
// ISA-WMMA-NOT:  scratch_

func.func @proj(%x: tensor<64x32xf32>, %w: tensor<128x32xf32>) -> tensor<64x128xf32> {
  %y = transformer.linear %x, %w : (tensor<64x32xf32>, tensor<128x32xf32>) -> tensor<64x128xf32>
  return %y : tensor<64x128xf32>
}
