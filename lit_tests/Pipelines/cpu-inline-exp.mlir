// f32 exp on the CPU: the loops stage still shows math.exp (scalar, in softmax's and SiLU's loops);
// the llvm stage has it inlined (kiln.pipelines.cpu.inline_exp) as a clamp, a range reduction and a
// polynomial in FMAs, so no exp intrinsic is left for LLVM to turn into an expf / libmvec call.
// sin and cos (RoPE) are not inlined.
//
// RUN: kiln compile %s --compile-to=loops | FileCheck %s --check-prefix=LOOPS
// RUN: kiln compile %s --compile-to=llvm | FileCheck %s --check-prefix=LLVM
// RUN: kiln compile %s --compile-to=llvm | FileCheck %s --check-prefix=LLVM-NONE

// LOOPS-LABEL: func.func private @softmax_dispatch
// LOOPS: math.exp %{{.*}} : f32
// LLVM-LABEL: llvm.func @softmax_dispatch
// LLVM: llvm.intr.fma
// LLVM-NONE-NOT: llvm.intr.exp
// LLVM-NONE-NOT: @expf
func.func @softmax(%x: tensor<4x33xf32>) -> tensor<4x33xf32> {
  %y = transformer.softmax %x : tensor<4x33xf32>
  return %y : tensor<4x33xf32>
}

// LOOPS-LABEL: func.func private @silu_dispatch
// LOOPS: math.exp %{{.*}} : f32
// LLVM-LABEL: llvm.func @silu_dispatch
// LLVM: llvm.intr.fma
func.func @silu(%x: tensor<4x33xf32>) -> tensor<4x33xf32> {
  %y = transformer.silu %x : tensor<4x33xf32>
  return %y : tensor<4x33xf32>
}

// LOOPS-LABEL: func.func private @sin_dispatch
// LOOPS: math.sin
// LLVM-LABEL: llvm.func @sin_dispatch
// LLVM: llvm.intr.sin
func.func @sin(%x: tensor<4x33xf32>) -> tensor<4x33xf32> {
  %y = math.sin %x : tensor<4x33xf32>
  return %y : tensor<4x33xf32>
}
