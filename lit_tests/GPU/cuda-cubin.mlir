// With ptxas (a CUDA toolkit or the nvidia-cuda-nvcc wheel), the cuda artifact carries a cubin per
// kernel too: an ELF for NVIDIA GPUs (e_machine EM_CUDA = 190).
//
// REQUIRES: ptxas
// RUN: kiln compile %s --target cuda --chip sm_90 -o %t.kiln
// RUN: %PYTHON %S/Inputs/kiln_blobs.py %t.kiln cubin | FileCheck %s
// RUN: %PYTHON %S/Inputs/kiln_blobs.py %t.kiln plan | FileCheck %s --check-prefix=TARGET

// CHECK: mlp_dispatch_0_reduction_kernel class=reduction elf=True e_machine=190
// CHECK: mlp_dispatch_1_elementwise_kernel class=elementwise elf=True e_machine=190
// CHECK: mlp_dispatch_2_contraction_kernel class=contraction elf=True e_machine=190
// CHECK: mlp_dispatch_3_elementwise_kernel class=elementwise elf=True e_machine=190
// TARGET: target {"chip": "sm_90", "driver": "cuda", "formats": ["ptx", "cubin"], "ptxas": true}

func.func @mlp(%x: tensor<8x64xf32>, %g: tensor<64xf32>, %w: tensor<96x64xf32>) -> tensor<8x96xf32> {
  %n = transformer.rms_norm %x, %g {eps = 1.0e-05 : f64} : (tensor<8x64xf32>, tensor<64xf32>) -> tensor<8x64xf32>
  %y = transformer.linear %n, %w : (tensor<8x64xf32>, tensor<96x64xf32>) -> tensor<8x96xf32>
  %s = transformer.gelu %y : tensor<8x96xf32>
  return %s : tensor<8x96xf32>
}
