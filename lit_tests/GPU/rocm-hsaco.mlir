// The rocm artifact: one hsaco per kernel, built by Debian's llc-22 and ld.lld-22 from the rocdl
// stage's LLVM IR -- an AMDGPU ELF shared object for the requested chip with the kernel's descriptor.
//
// REQUIRES: llc-22
// RUN: kiln compile %s --target rocm -o %t.gfx942.kiln
// RUN: %PYTHON %S/Inputs/kiln_blobs.py %t.gfx942.kiln hsaco | FileCheck %s --check-prefix=GFX942
// RUN: kiln compile %s --target rocm --chip gfx1100 -o %t.gfx1100.kiln
// RUN: %PYTHON %S/Inputs/kiln_blobs.py %t.gfx1100.kiln hsaco | FileCheck %s --check-prefix=GFX1100
// RUN: %PYTHON %S/Inputs/kiln_blobs.py %t.gfx1100.kiln plan | FileCheck %s --check-prefix=TARGET
// RUN: %PYTHON -c "import sys; from kiln import artifact; a = artifact.read(sys.argv[1]); open(sys.argv[2], 'wb').write(a.blobs['hsaco/mlp_dispatch_3_elementwise_kernel'])" %t.gfx1100.kiln %t.hsaco
// RUN: llvm-readobj-22 --file-headers --symbols %t.hsaco | FileCheck %s --check-prefix=ELF

// GFX942: mlp_dispatch_0_reduction_kernel class=reduction elf=True e_machine=224 chip=gfx942
// GFX942: mlp_dispatch_1_elementwise_kernel class=elementwise elf=True e_machine=224 chip=gfx942
// GFX942: mlp_dispatch_2_contraction_kernel class=contraction elf=True e_machine=224 chip=gfx942
// GFX942: mlp_dispatch_3_elementwise_kernel class=elementwise elf=True e_machine=224 chip=gfx942
// GFX1100-COUNT-4: elf=True e_machine=224 chip=gfx1100
// TARGET: target {"chip": "gfx1100", "driver": "hip", "formats": ["hsaco"], "triple": "amdgcn-amd-amdhsa"}

// ELF:      Type: SharedObject
// ELF:      Machine: EM_AMDGPU
// ELF:      EF_AMDGPU_MACH_AMDGCN_GFX1100
// ELF:      Name: mlp_dispatch_3_elementwise_kernel.kd
// ELF-NOT:  __ocml

func.func @mlp(%x: tensor<8x64xf32>, %g: tensor<64xf32>, %w: tensor<96x64xf32>) -> tensor<8x96xf32> {
  %n = transformer.rms_norm %x, %g {eps = 1.0e-05 : f64} : (tensor<8x64xf32>, tensor<64xf32>) -> tensor<8x64xf32>
  %y = transformer.linear %n, %w : (tensor<8x64xf32>, tensor<96x64xf32>) -> tensor<8x96xf32>
  %s = transformer.gelu %y : tensor<8x96xf32>
  return %s : tensor<8x96xf32>
}
