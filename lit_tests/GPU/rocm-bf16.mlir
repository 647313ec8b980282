// rocm with --precision bf16 on a chip without matrix instructions (RDNA2, gfx1030): GEMMs keep the
// SIMT schedule with their operands rounded to bf16 as they are read (fptrunc/fpext of each vector
// load) and f32 sums (FMAs); the hsaco builds and the manifest records the precision. (Chips with
// matrix instructions: rocm-matrix-cores.mlir.)
//
// REQUIRES: llc-22
// RUN: kiln compile %s --target rocm --chip gfx1030 --precision bf16 --compile-to llvm | FileCheck %s --check-prefix=LLVM
// RUN: kiln compile %s --target rocm --chip gfx1030 --precision bf16 -o %t.gfx1030.kiln
// RUN: %PYTHON %S/Inputs/kiln_blobs.py %t.gfx1030.kiln hsaco | FileCheck %s -DCHIP=gfx1030
// RUN: %PYTHON %S/Inputs/kiln_blobs.py %t.gfx1030.kiln plan | FileCheck %s --check-prefix=TARGET -DCHIP=gfx1030

// LLVM:       kiln.precision = "bf16"
// LLVM-LABEL: llvm.func @proj_dispatch_0_contraction_kernel(
// LLVM:         llvm.fptrunc %{{.*}} : vector<{{[0-9]+}}xf32> to vector<{{[0-9]+}}xbf16>
// LLVM:         llvm.fpext %{{.*}} : vector<{{[0-9]+}}xbf16> to vector<{{[0-9]+}}xf32>
// LLVM:         llvm.intr.fmuladd
// LLVM-NOT:     amdgpu.
// LLVM-NOT:     rocdl.mfma
// LLVM-NOT:     rocdl.wmma

// CHECK: proj_dispatch_0_contraction_kernel class=contraction elf=True e_machine=224 chip=[[CHIP]]
// TARGET: target {"chip": "[[CHIP]]", "driver": "hip", "formats": ["hsaco"], "precision": "bf16", "triple": "amdgcn-amd-amdhsa"}

func.func @proj(%x: tensor<128x576xf32>, %w: tensor<1536x576xf32>) -> tensor<128x1536xf32> {
  %y = transformer.linear %x, %w : (tensor<128x576xf32>, tensor<1536x576xf32>) -> tensor<128x1536xf32>
  return %y : tensor<128x1536xf32>
}
