// The cuda artifact: one PTX module per kernel for the requested chip (with the PTX ISA version that
// chip needs), libdevice functions linked in (no .extern function left).
//
// RUN: kiln compile %s --target cuda -o %t.sm80.kiln
// RUN: %PYTHON %S/Inputs/kiln_blobs.py %t.sm80.kiln ptx | FileCheck %s --check-prefixes=CHECK,SM80
// RUN: %PYTHON %S/Inputs/kiln_blobs.py %t.sm80.kiln ptx | FileCheck %s --check-prefix=NONE
// RUN: kiln compile %s --target cuda --chip sm_90 -o %t.sm90.kiln
// RUN: %PYTHON %S/Inputs/kiln_blobs.py %t.sm90.kiln ptx | FileCheck %s --check-prefixes=CHECK,SM90

// CHECK-LABEL: .visible .entry mlp_dispatch_0_reduction_kernel(
// CHECK:       .maxntid 128, 1, 1
// CHECK:       mov.u32 {{.*}}%tid.x
// CHECK:       ld.global.b32
// CHECK:       add.rn.f32
// CHECK:       shfl.sync.bfly.b32
// CHECK:       st.global.b32
// CHECK:       ret;

// SM80:        .target sm_80
// SM90:        .target sm_90
// CHECK-LABEL: .visible .entry mlp_dispatch_1_elementwise_kernel(
// CHECK:       .maxntid 64, 4, 1
// CHECK:       %ctaid.y

// SM80:        .target sm_80
// SM90:        .target sm_90
// CHECK-LABEL: .visible .entry mlp_dispatch_2_contraction_kernel(
// CHECK:       $L__BB0_1:
// CHECK-COUNT-32: fma.rn.f32
// CHECK:       bra
// CHECK-COUNT-4: st.global.b32

// SM80:        .target sm_80
// SM90:        .target sm_90
// CHECK-LABEL: .visible .entry mlp_dispatch_3_elementwise_kernel(

// NONE-NOT: .extern
// NONE-NOT: __nv_erff(

func.func @mlp(%x: tensor<8x64xf32>, %g: tensor<64xf32>, %w: tensor<96x64xf32>) -> tensor<8x96xf32> {
  %n = transformer.rms_norm %x, %g {eps = 1.0e-05 : f64} : (tensor<8x64xf32>, tensor<64xf32>) -> tensor<8x64xf32>
  %y = transformer.linear %n, %w : (tensor<8x64xf32>, tensor<96x64xf32>) -> tensor<8x96xf32>
  %s = transformer.gelu %y : tensor<8x96xf32>
  return %s : tensor<8x96xf32>
}
