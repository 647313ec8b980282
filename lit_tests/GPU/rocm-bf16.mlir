// rocm with --precision bf16: MLIR 22 has no vector.contract -> amdgpu.mfma/wmma lowering (only the
// amdgpu ops and their rocdl lowering), so GEMMs keep the SIMT schedule with their operands rounded
// to bf16 as they are read (fptrunc/fpext of each vector load) and f32 sums (FMAs); the hsaco builds
// for gfx942 and gfx1100 and
// the manifest records the precision.
//
// REQUIRES: llc-22
// RUN: kiln compile %s --target rocm --precision bf16 --compile-to llvm | FileCheck %s --check-prefix=LLVM
// RUN: kiln compile %s --target rocm --precision bf16 -o %t.gfx942.kiln
// RUN: %PYTHON %S/Inputs/kiln_blobs.py %t.gfx942.kiln hsaco | FileCheck %s -DCHIP=gfx942
// RUN: %PYTHON %S/Inputs/kiln_blobs.py %t.gfx942.kiln plan | FileCheck %s --check-prefix=TARGET -DCHIP=gfx942
// RUN: kiln compile %s --target rocm --chip gfx1100 --precision bf16 -o %t.gfx1100.kiln
// RUN: %PYTHON %S/Inputs/kiln_blobs.py %t.gfx1100.kiln hsaco | FileCheck %s -DCHIP=gfx1100

// LLVM:       kiln.precision = "bf16"
// LLVM-LABEL: llvm.func @proj_dispatch_0_contraction_kernel(
// LLVM:         llvm.fptrunc %{{.*}} : vector<{{[0-9]+}}xf32> to vector<{{[0-9]+}}xbf16>
// LLVM:         llvm.fpext %{{.*}} : vector<{{[0-9]+}}xbf16> to vector<{{[0-9]+}}xf32>
// LLVM:         llvm.intr.fmuladd
// LLVM-NOT:     amdgpu.
// LLVM-NOT:     rocdl.mfma

// CHECK: proj_dispatch_0_contraction_kernel class=contraction elf=True e_machine=224 chip=[[CHIP]]
// TARGET: target {"chip": "[[CHIP]]", "driver": "hip", "formats": ["hsaco"], "precision": "bf16", "triple": "amdgcn-amd-amdhsa"}

func.func @proj(%x: tensor<128x576xf32>, %w: tensor<1536x576xf32>) -> tensor<128x1536xf32> {
  %y = transformer.linear %x, %w : (tensor<128x576xf32>, tensor<1536x576xf32>) -> tensor<128x1536xf32>
  return %y : tensor<128x1536xf32>
}
