// The rocm `llvm` stage: a ROCDL target for the requested chip on every gpu.module; kernels become
// LLVM-dialect functions (rocdl.kernel, fixed workgroup size) reading workitem/workgroup ids. Math is
// lowered without ROCm's device libraries: erf is expanded to a polynomial (fabs, exp, copysign)
// before the lowering; exp and sqrt are LLVM intrinsics the AMDGPU backend implements (ocml calls
// that other ops may produce are defined at the artifact stage from such intrinsics).
//
// RUN: kiln compile %s --target rocm --compile-to=llvm | FileCheck %s --check-prefixes=CHECK,GFX942
// RUN: kiln compile %s --target rocm --chip gfx1100 --compile-to=llvm | FileCheck %s --check-prefixes=CHECK,GFX1100
// RUN: kiln compile %s --target rocm --compile-to=llvm | FileCheck %s --check-prefix=NONE
// RUN: not kiln compile %s --target rocm --chip sm_80 --compile-to=llvm 2>&1 | FileCheck %s --check-prefix=BADCHIP

// BADCHIP: kiln: error: unknown ROCm chip 'sm_80': give an AMDGPU architecture such as gfx942 or gfx1100

// CHECK-LABEL: gpu.module @mlp_dispatch_0_reduction_kernel
// GFX942-SAME:   [#rocdl.target<O = 3, chip = "gfx942">]
// GFX1100-SAME:  [#rocdl.target<O = 3, chip = "gfx1100">]
// CHECK:         llvm.func @mlp_dispatch_0_reduction_kernel(%{{.*}}: !llvm.ptr, %{{.*}}: !llvm.ptr)
// CHECK-SAME:      rocdl.kernel, rocdl.reqd_work_group_size = array<i32: 128, 1, 1>
// CHECK:           rocdl.workitem.id.x

// CHECK-LABEL: gpu.module @mlp_dispatch_1_elementwise_kernel
// CHECK:         llvm.func @mlp_dispatch_1_elementwise_kernel(
// CHECK:           rocdl.workgroup.id.y
// CHECK:           llvm.intr.sqrt

// CHECK-LABEL: gpu.module @mlp_dispatch_3_elementwise_kernel
// CHECK:         llvm.func @mlp_dispatch_3_elementwise_kernel(
// CHECK:           llvm.intr.fabs
// CHECK:           llvm.intr.exp
// CHECK:           llvm.intr.copysign

// NONE-NOT: math.
// NONE-NOT: __ocml
// NONE-NOT: gpu.func

func.func @mlp(%x: tensor<8x64xf32>, %g: tensor<64xf32>, %w: tensor<96x64xf32>) -> tensor<8x96xf32> {
  %n = transformer.rms_norm %x, %g {eps = 1.0e-05 : f64} : (tensor<8x64xf32>, tensor<64xf32>) -> tensor<8x64xf32>
  %y = transformer.linear %n, %w : (tensor<8x64xf32>, tensor<96x64xf32>) -> tensor<8x96xf32>
  %s = transformer.gelu %y : tensor<8x96xf32>
  return %s : tensor<8x96xf32>
}
