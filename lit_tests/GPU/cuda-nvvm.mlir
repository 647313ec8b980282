// The cuda `llvm` stage: every gpu.module gets an NVVM target for the requested chip (libdevice linked
// for math) and its kernels become LLVM-dialect functions with bare-pointer arguments that read the
// PTX special registers; math ops are libdevice calls. The host code is unchanged.
//
// RUN: kiln compile %s --target cuda --compile-to=llvm | FileCheck %s --check-prefixes=CHECK,SM80
// RUN: kiln compile %s --target cuda --chip sm_90 --compile-to=llvm | FileCheck %s --check-prefixes=CHECK,SM90
// RUN: kiln compile %s --target cuda --compile-to=llvm | FileCheck %s --check-prefix=NONE
// RUN: not kiln compile %s --target cuda --chip gfx942 --compile-to=llvm 2>&1 | FileCheck %s --check-prefix=BADCHIP

// BADCHIP: kiln: error: unknown CUDA chip 'gfx942': give an SM architecture such as sm_80 or sm_90

// CHECK-LABEL: gpu.module @mlp_dispatch_0_reduction_kernel
// SM80-SAME:     [#nvvm.target<O = 3, chip = "sm_80", link = ["{{.*}}libdevice.10.bc"]>]
// SM90-SAME:     [#nvvm.target<O = 3, chip = "sm_90", link = ["{{.*}}libdevice.10.bc"]>]
// CHECK:         llvm.func @mlp_dispatch_0_reduction_kernel(%{{.*}}: !llvm.ptr, %{{.*}}: !llvm.ptr)
// CHECK-SAME:      nvvm.kernel, nvvm.maxntid = array<i32: 128, 1, 1>
// CHECK:           nvvm.read.ptx.sreg.tid.x
// CHECK:           llvm.load {{.*}} -> f32
// CHECK:           nvvm.shfl.sync  bfly
// CHECK:           llvm.store {{.*}} : f32, !llvm.ptr

// CHECK-LABEL: gpu.module @mlp_dispatch_1_elementwise_kernel
// CHECK:         llvm.func @__nv_rsqrtf(f32) -> f32
// CHECK:         llvm.func @mlp_dispatch_1_elementwise_kernel(
// CHECK:           nvvm.read.ptx.sreg.ctaid.y
// CHECK:           llvm.call @__nv_rsqrtf

// CHECK-LABEL: gpu.module @mlp_dispatch_3_elementwise_kernel
// CHECK:         llvm.func @__nv_erff(f32) -> f32
// CHECK:           llvm.call @__nv_erff

// CHECK-LABEL: func.func @mlp
// CHECK-COUNT-4: call @mlp_dispatch_

// NONE-NOT: math.
// NONE-NOT: gpu.func
// NONE-NOT: scf.for

func.func @mlp(%x: tensor<8x64xf32>, %g: tensor<64xf32>, %w: tensor<96x64xf32>) -> tensor<8x96xf32> {
  %n = transformer.rms_norm %x, %g {eps = 1.0e-05 : f64} : (tensor<8x64xf32>, tensor<64xf32>) -> tensor<8x64xf32>
  %y = transformer.linear %n, %w : (tensor<8x64xf32>, tensor<96x64xf32>) -> tensor<8x96xf32>
  %s = transformer.gelu %y : tensor<8x96xf32>
  return %s : tensor<8x96xf32>
}
