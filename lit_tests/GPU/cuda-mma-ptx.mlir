// The PTX of tensor-core GEMMs (--precision bf16|f16, sm_80 and sm_90): two 64x40 16-bit tiles in
// dynamic shared memory (an `.extern .shared` array, no static one); 16-byte global loads (ld.global.v4) one K step ahead; per K step, the held vectors
// rounded in pairs (cvt.rn.bf16x2 / f16x2) and stored to shared memory, the next step's loads, a barrier, ldmatrix fragments (x4 for A, x2 for B) and 16
// mma.sync m16n8k16 with f32 accumulators, a barrier; C written 8 bytes per lane. The ragged GEMM
// keeps the SIMT kernel, its operands rounded one by one (cvt.rn.bf16.f32), no mma.sync.
//
// RUN: kiln compile %s --target cuda --precision bf16 -o %t.bf16.sm80.kiln
// RUN: %PYTHON %S/Inputs/kiln_blobs.py %t.bf16.sm80.kiln ptx | FileCheck %s --check-prefixes=CHECK,SM80 -DT=bf16
// RUN: kiln compile %s --target cuda --chip sm_90 --precision bf16 -o %t.bf16.sm90.kiln
// RUN: %PYTHON %S/Inputs/kiln_blobs.py %t.bf16.sm90.kiln ptx | FileCheck %s --check-prefixes=CHECK,SM90 -DT=bf16
// RUN: kiln compile %s --target cuda --precision f16 -o %t.f16.sm80.kiln
// RUN: %PYTHON %S/Inputs/kiln_blobs.py %t.f16.sm80.kiln ptx | FileCheck %s --check-prefixes=CHECK,SM80 -DT=f16
// RUN: kiln compile %s --target cuda --chip sm_90 --precision f16 -o %t.f16.sm90.kiln
// RUN: %PYTHON %S/Inputs/kiln_blobs.py %t.f16.sm90.kiln ptx | FileCheck %s --check-prefixes=CHECK,SM90 -DT=f16

// SM80:        .target sm_80
// SM90:        .target sm_90
// CHECK:       .extern .shared .align 1024 .b8 __dynamic_shmem__0[];
// CHECK-LABEL: .visible .entry proj_dispatch_0_contraction_kernel(
// CHECK:       .maxntid 128, 1, 1
// CHECK-NOT:   .shared .align
// CHECK-COUNT-8: ld.global.v4.b32
// CHECK:       $L__BB0_1:
// CHECK:       cvt.rn.[[T]]x2.f32
// CHECK-NEXT:  cvt.rn.[[T]]x2.f32
// CHECK-NEXT:  st.shared.v2.b32
// CHECK-COUNT-8: ld.global.v4.b32
// CHECK:       bar.sync 0;
// CHECK-COUNT-2: ldmatrix.sync.aligned.m8n8.x4.shared.b16
// CHECK-COUNT-4: ldmatrix.sync.aligned.m8n8.x2.shared.b16
// CHECK-COUNT-8: mma.sync.aligned.m16n8k16.row.col.f32.[[T]].[[T]].f32
// CHECK-COUNT-2: ldmatrix.sync.aligned.m8n8.x4.shared.b16
// CHECK-COUNT-4: ldmatrix.sync.aligned.m8n8.x2.shared.b16
// CHECK-COUNT-8: mma.sync.aligned.m16n8k16.row.col.f32.[[T]].[[T]].f32
// CHECK:       bar.sync 0;
// CHECK:       st.global.v2.b32
// CHECK:       ret;

// SM80:        .target sm_80
// SM90:        .target sm_90
// CHECK-LABEL: .visible .entry ragged_dispatch_0_contraction_kernel(
// CHECK-NOT:   mma.sync
// CHECK:       cvt.rn.[[T]].f32
// CHECK-NOT:   mma.sync
// CHECK:       ret;

func.func @proj(%x: tensor<128x576xf32>, %w: tensor<1536x576xf32>) -> tensor<128x1536xf32> {
  %y = transformer.linear %x, %w : (tensor<128x576xf32>, tensor<1536x576xf32>) -> tensor<128x1536xf32>
  return %y : tensor<128x1536xf32>
}

func.func @ragged(%x: tensor<13x70xf32>, %w: tensor<100x70xf32>) -> tensor<13x100xf32> {
  %y = transformer.linear %x, %w : (tensor<13x70xf32>, tensor<100x70xf32>) -> tensor<13x100xf32>
  return %y : tensor<13x100xf32>
}
