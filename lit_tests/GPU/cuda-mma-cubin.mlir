// Tensor-core kernels assemble with ptxas (bf16 on sm_90, f16 on sm_80): a cubin per kernel, and the
// manifest records the precision next to the chip.
//
// REQUIRES: ptxas
// RUN: kiln compile %s --target cuda --chip sm_90 --precision bf16 -o %t.bf16.kiln
// RUN: %PYTHON %S/Inputs/kiln_blobs.py %t.bf16.kiln cubin | FileCheck %s
// RUN: %PYTHON %S/Inputs/kiln_blobs.py %t.bf16.kiln plan | FileCheck %s --check-prefix=BF16
// RUN: kiln compile %s --target cuda --chip sm_80 --precision f16 -o %t.f16.kiln
// RUN: %PYTHON %S/Inputs/kiln_blobs.py %t.f16.kiln cubin | FileCheck %s
// RUN: %PYTHON %S/Inputs/kiln_blobs.py %t.f16.kiln plan | FileCheck %s --check-prefix=F16

// CHECK: proj_dispatch_0_contraction_kernel class=contraction elf=True e_machine=190
// BF16: target {"chip": "sm_90", "driver": "cuda", "formats": ["ptx", "cubin"], "precision": "bf16", "ptxas": true}
// BF16: launch proj_dispatch_0_contraction_kernel grid [9, 2, 1] block [128, 1, 1]
// F16: target {"chip": "sm_80", "driver": "cuda", "formats": ["ptx", "cubin"], "precision": "f16", "ptxas": true}

func.func @proj(%x: tensor<128x1536xf32>, %w: tensor<576x1536xf32>) -> tensor<128x576xf32> {
  %y = transformer.linear %x, %w : (tensor<128x1536xf32>, tensor<576x1536xf32>) -> tensor<128x576xf32>
  return %y : tensor<128x576xf32>
}
