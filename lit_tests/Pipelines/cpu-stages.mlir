// Every stage of the CPU pipeline, printed with `kiln compile --compile-to=STAGE`, on one input with
// several kernel kinds: rms_norm, linear with bias, split/merge heads, causal attention with a runtime
// KV offset, silu, argmax, and a linear whose zero bias the graph stage folds away. Each prefix
// checks what its stage must have produced; the *-NONE runs check what must be gone from the whole
// module. Schedules are not pinned (tile sizes, and contractions' packing or vectorization, change
// as kernels get faster): only the structure each stage promises.
//
// RUN: kiln compile %s --compile-to=transformer | FileCheck %s --check-prefix=TRANSFORMER
// RUN: kiln compile %s --compile-to=linalg | FileCheck %s --check-prefix=LINALG
// RUN: kiln compile %s --compile-to=linalg | FileCheck %s --check-prefix=LINALG-NONE
// RUN: kiln compile %s --compile-to=dispatch | FileCheck %s --check-prefix=DISPATCH
// RUN: kiln compile %s --compile-to=tiled | FileCheck %s --check-prefix=TILED
// RUN: kiln compile %s --compile-to=bufferized | FileCheck %s --check-prefix=BUFFERIZED
// RUN: kiln compile %s --compile-to=bufferized | FileCheck %s --check-prefix=BUFFERIZED-NONE
// RUN: kiln compile %s --compile-to=loops | FileCheck %s --check-prefix=LOOPS
// RUN: kiln compile %s --compile-to=loops | FileCheck %s --check-prefix=LOOPS-NONE
// RUN: kiln compile %s --compile-to=llvm | FileCheck %s --check-prefix=LLVM
// RUN: kiln compile %s --compile-to=llvm | FileCheck %s --check-prefix=LLVM-NONE
// The llvm stage is what upstream mlir-translate turns into LLVM IR (OpenMP regions included).
// RUN: kiln compile %s --compile-to=llvm | mlir-translate --mlir-to-llvmir | FileCheck %s --check-prefix=LLVMIR

func.func @block(%x: tensor<1x4x32xf32>, %g: tensor<32xf32>, %w: tensor<96x32xf32>, %b: tensor<96xf32>,
                 %k: tensor<1x2x8x16xf32>, %v: tensor<1x2x8x16xf32>, %pos: index) -> (tensor<1x4x32xf32>, tensor<1x4xi64>) {
  %n = transformer.rms_norm %x, %g {eps = 1.0e-05 : f64} : (tensor<1x4x32xf32>, tensor<32xf32>) -> tensor<1x4x32xf32>
  %qkv = transformer.linear %n, %w, %b : (tensor<1x4x32xf32>, tensor<96x32xf32>, tensor<96xf32>) -> tensor<1x4x96xf32>
  %q = tensor.extract_slice %qkv[0, 0, 0] [1, 4, 32] [1, 1, 1] : tensor<1x4x96xf32> to tensor<1x4x32xf32>
  %qh = transformer.split_heads %q {num_heads = 2 : i64} : tensor<1x4x32xf32> -> tensor<1x2x4x16xf32>
  %o = transformer.attention %qh, %k, %v offset(%pos) {causal} : (tensor<1x2x4x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, index) -> tensor<1x2x4x16xf32>
  %m = transformer.merge_heads %o : tensor<1x2x4x16xf32> -> tensor<1x4x32xf32>
  %s = transformer.silu %m : tensor<1x4x32xf32>
  %t = transformer.argmax %s : tensor<1x4x32xf32> -> tensor<1x4xi64>
  return %s, %t : tensor<1x4x32xf32>, tensor<1x4xi64>
}

func.func @zero_bias(%x: tensor<4x32xf32>, %w: tensor<16x32xf32>) -> tensor<4x16xf32> {
  %zero = arith.constant dense<0.0> : tensor<16xf32>
  %y = transformer.linear %x, %w, %zero : (tensor<4x32xf32>, tensor<16x32xf32>, tensor<16xf32>) -> tensor<4x16xf32>
  return %y : tensor<4x16xf32>
}

//===----------------------------------------------------------------------===//
// transformer: graph-level cleanup; the entry-point signatures are recorded
//===----------------------------------------------------------------------===//

// TRANSFORMER: module attributes {kiln.entry_points =
// TRANSFORMER-SAME: \22block\22: {\22args\22: [{\22dtype\22: \22float32\22, \22shape\22: [1, 4, 32]}
// TRANSFORMER-SAME: {\22dtype\22: \22int64\22, \22shape\22: null}]
// TRANSFORMER-SAME: \22results\22: [{\22dtype\22: \22float32\22, \22shape\22: [1, 4, 32]}, {\22dtype\22: \22int64\22, \22shape\22: [1, 4]}]
// TRANSFORMER-SAME: \22zero_bias\22:
// TRANSFORMER-LABEL: func.func @block(
// TRANSFORMER: transformer.rms_norm %arg0, %arg1 {eps = 1.000000e-05 : f64}
// TRANSFORMER: transformer.linear %{{.+}}, %arg2, %arg3 :
// TRANSFORMER: transformer.split_heads
// TRANSFORMER: transformer.attention %{{.+}}, %arg4, %arg5 offset(%arg6) {causal}
// TRANSFORMER: transformer.merge_heads
// TRANSFORMER: %[[S:.+]] = transformer.silu
// TRANSFORMER: %[[T:.+]] = transformer.argmax %[[S]]
// TRANSFORMER: return %[[S]], %[[T]]
// The zero bias is folded away.
// TRANSFORMER-LABEL: func.func @zero_bias(
// TRANSFORMER-NOT: arith.constant
// TRANSFORMER: transformer.linear %arg0, %arg1 : (tensor<4x32xf32>, tensor<16x32xf32>) -> tensor<4x16xf32>

//===----------------------------------------------------------------------===//
// linalg: linalg on tensors, elementwise producers fused into their consumers
//===----------------------------------------------------------------------===//

// LINALG-NONE-NOT: = transformer.
// LINALG-NONE-NOT: kiln.dispatch
// LINALG-NONE-NOT: func.call

// LINALG-LABEL: func.func @block(
// rms_norm's sum of squares: a fill-initialized reduction.
// LINALG: %[[SUMS0:.+]] = linalg.fill ins(%{{.+}} : f32) outs(%{{.+}} : tensor<1x4xf32>)
// LINALG: linalg.generic {{.+}} iterator_types = ["parallel", "parallel", "reduction"]} ins(%arg0 : tensor<1x4x32xf32>) outs(%[[SUMS0]] : tensor<1x4xf32>)
// The normalization, and the bias broadcast that initializes the linear's accumulator.
// LINALG-DAG: math.rsqrt
// LINALG-DAG: ins(%arg3 : tensor<96xf32>) outs(%{{.+}} : tensor<1x4x96xf32>)
// LINALG: linalg.transpose
// The causal mask compares key positions with query positions shifted by the runtime offset.
// LINALG: linalg.index
// LINALG: arith.addi %{{.+}}, %arg6 : index
// LINALG: arith.cmpi ugt
// LINALG: math.exp
// LINALG: linalg.transpose
// argmax: a two-result reduction with two fill inits.
// LINALG: linalg.fill ins(%{{.+}} : i64)
// LINALG: %{{.+}}:2 = linalg.generic
// LINALG: } -> (tensor<1x4xf32>, tensor<1x4xi64>)
// LINALG-LABEL: func.func @zero_bias(
// LINALG: linalg.fill
// LINALG: linalg.generic {{.+}} iterator_types = ["parallel", "parallel", "reduction"]} ins(%arg0, %arg1 : tensor<4x32xf32>, tensor<16x32xf32>)

//===----------------------------------------------------------------------===//
// dispatch: each linalg op (with its init fills) outlined into a private kiln.dispatch function
//===----------------------------------------------------------------------===//

// Kernel numbers after the first depend on what the linalg stage fuses: they are matched, not pinned.
// DISPATCH-LABEL: func.func private @block_dispatch_0_reduction(%arg0: tensor<1x4xf32>, %arg1: tensor<1x4x32xf32>) -> tensor<1x4xf32>
// DISPATCH-SAME: attributes {kiln.dispatch, kiln.iterator_types = "ppr", kiln.kernel_class = "reduction", kiln.loop_ranges = array<i64: 1, 4, 32>}
// DISPATCH: %[[F:.+]] = linalg.fill ins(%{{.+}} : f32) outs(%arg0 : tensor<1x4xf32>)
// DISPATCH: linalg.generic {{.+}} ins(%arg1 : tensor<1x4x32xf32>) outs(%[[F]] : tensor<1x4xf32>) attrs = {kiln.root}
// DISPATCH: return
// Constants a kernel uses are cloned into it, not passed: rms_norm's 1/32 and eps.
// DISPATCH: func.func private @block_dispatch_{{[0-9]+}}_{{[a-z]+}}(
// DISPATCH-SAME: attributes {kiln.dispatch,
// DISPATCH: arith.constant 3.200000e+01 : f32
// DISPATCH: math.rsqrt
// The linear: a 1x4x96 output, reducing over 32.
// DISPATCH: func.func private @block_dispatch_{{[0-9]+}}_{{contraction|reduction}}(
// DISPATCH-SAME: kiln.iterator_types = "pppr", kiln.kernel_class = "{{contraction|reduction}}", kiln.loop_ranges = array<i64: 1, 4, 96, 32>}
// DISPATCH: func.func private @block_dispatch_{{[0-9]+}}_transpose(
// DISPATCH-SAME: kiln.kernel_class = "transpose"
// DISPATCH: linalg.transpose {{.+}} {kiln.root}
// Attention: one flash-attention kernel, a workgroup per kv head; the runtime offset is a kernel
// argument that bounds the keys read (offset + 4 of the cache's 8 rows) and masks the future ones.
// The heads are merged next, so it writes its output position-major ([b, s, kv heads, group, d]):
// merge_heads is a reshape, not a transpose kernel.
// DISPATCH: func.func private @block_dispatch_{{[0-9]+}}_attention(%arg0: tensor<1x2x1x4x16xf32>, %arg1: index, %arg2: tensor<1x2x8x16xf32>, %arg3: tensor<1x2x8x16xf32>, %arg4: tensor<1x4x2x1x16xf32>) -> tensor<1x4x2x1x16xf32>
// DISPATCH-SAME: kiln.iterator_types = "ppp", kiln.kernel_class = "attention", kiln.loop_ranges = array<i64: 1, 2, 1>
// DISPATCH: scf.forall
// DISPATCH: %[[END:.+]] = arith.addi %arg1, %c4 : index
// DISPATCH: arith.minui %[[END]], %c8 : index
// DISPATCH: math.exp
// DISPATCH: kiln.flash_tile = array<i64: 4, 32, 16>, kiln.kernel_class = "attention", kiln.root, mapping = [#transformer.workgroup<2>, #transformer.workgroup<1>, #transformer.workgroup<0>]}
// Both fills of argmax are in its kernel.
// DISPATCH-LABEL: func.func private @block_dispatch_{{[0-9]+}}_reduction(%arg0: tensor<1x4xf32>, %arg1: tensor<1x4xi64>, %arg2: tensor<1x4x32xf32>) -> (tensor<1x4xf32>, tensor<1x4xi64>)
// DISPATCH-SAME: kiln.iterator_types = "ppr", kiln.kernel_class = "reduction", kiln.loop_ranges = array<i64: 1, 4, 32>
// DISPATCH: linalg.fill ins(%{{.+}} : f32) outs(%arg0 : tensor<1x4xf32>)
// DISPATCH: linalg.fill ins(%{{.+}} : i64) outs(%arg1 : tensor<1x4xi64>)
// DISPATCH: {kiln.root}
// The host: no linalg op left, only the tensor.empty inits it passes to the kernels it calls.
// DISPATCH-LABEL: func.func @block(
// DISPATCH-NOT: linalg.
// DISPATCH: %[[E0:.+]] = tensor.empty() : tensor<1x4xf32>
// DISPATCH-NOT: linalg.
// DISPATCH: %[[SUMS:.+]] = call @block_dispatch_0_reduction(%[[E0]], %arg0)
// DISPATCH-NOT: linalg.
// DISPATCH: %[[E1:.+]] = tensor.empty() : tensor<1x4x96xf32>
// DISPATCH-NOT: linalg.
// DISPATCH: call @block_dispatch_{{[0-9]+}}_elementwise(%arg3, %[[E1]])
// DISPATCH-NOT: linalg.
// DISPATCH: call @block_dispatch_{{[0-9]+}}_transpose(
// DISPATCH-NOT: linalg.
// DISPATCH: call @block_dispatch_{{[0-9]+}}_attention(%{{.+}}, %arg6, %arg5, %arg4, %{{.+}})
// DISPATCH-NOT: _transpose(
// DISPATCH-NOT: linalg.
// DISPATCH: %[[ARGMAX:.+]]:2 = call @block_dispatch_{{[0-9]+}}_reduction(
// DISPATCH-NOT: linalg.
// DISPATCH: return %{{.+}}, %[[ARGMAX]]#1
// DISPATCH-LABEL: func.func private @zero_bias_dispatch_0_contraction(%arg0: tensor<4x16xf32>, %arg1: tensor<4x32xf32>, %arg2: tensor<16x32xf32>) -> tensor<4x16xf32>
// DISPATCH-SAME: attributes {kiln.dispatch, kiln.iterator_types = "ppr", kiln.kernel_class = "contraction", kiln.loop_ranges = array<i64: 4, 16, 32>}
// DISPATCH: linalg.fill
// DISPATCH: {kiln.root}
// DISPATCH-LABEL: func.func @zero_bias(
// DISPATCH: %[[E:.+]] = tensor.empty() : tensor<4x16xf32>
// DISPATCH: %[[R:.+]] = call @zero_bias_dispatch_0_contraction(%[[E]], %arg0, %arg1)
// DISPATCH: return %[[R]]

//===----------------------------------------------------------------------===//
// tiled: each kernel's workgroup grid is an scf.forall, with the init fills fused into it; kernels
// this small run serially on the calling thread instead (cpu-workgroups.mlir has larger ones)
//===----------------------------------------------------------------------===//

// TILED-LABEL: func.func private @block_dispatch_0_reduction(
// TILED-NOT: scf.forall
// TILED: linalg.fill
// TILED: {kiln.root}
// TILED-LABEL: func.func private @block_dispatch_{{[0-9]+}}_reduction(%arg0: tensor<1x4xf32>, %arg1: tensor<1x4xi64>
// TILED-NOT: scf.forall
// TILED: linalg.fill
// TILED: linalg.fill
// TILED: {kiln.root}
// TILED-LABEL: func.func @block(
// TILED-NOT: scf.forall
// TILED: return
// TILED-LABEL: func.func private @zero_bias_dispatch_0_contraction(
// TILED: scf.forall
// TILED-LABEL: func.func @zero_bias(
// TILED-NOT: scf.forall
// TILED: call @zero_bias_dispatch_0_contraction

//===----------------------------------------------------------------------===//
// bufferized: memrefs only; results are caller-provided out-params that kernels write in place
//===----------------------------------------------------------------------===//

// BUFFERIZED-NONE-NOT: tensor<
// BUFFERIZED-NONE-NOT: tensor.
// BUFFERIZED-NONE-NOT: bufferization.

// BUFFERIZED-LABEL: func.func private @block_dispatch_0_reduction(%arg0: memref<1x4xf32>, %arg1: memref<1x4x32xf32>) attributes {kiln.dispatch
// BUFFERIZED: linalg.fill {{.+}} outs(%arg0 : memref<1x4xf32>)
// BUFFERIZED-LABEL: func.func private @block_dispatch_{{[0-9]+}}_reduction(%arg0: memref<1x4xf32>, %arg1: memref<1x4xi64>, %arg2: memref<1x4x32xf32>) attributes
// The entry point returns nothing: its two results are out-params after its arguments.
// BUFFERIZED-LABEL: func.func @block(%arg0: memref<1x4x32xf32>, %arg1: memref<32xf32>, %arg2: memref<96x32xf32>, %arg3: memref<96xf32>, %arg4: memref<1x2x8x16xf32>, %arg5: memref<1x2x8x16xf32>, %arg6: index, %arg7: memref<1x4x32xf32>, %arg8: memref<1x4xi64>)
// BUFFERIZED: call @block_dispatch_0_reduction(%[[SUMS:.+]], %arg0) : (memref<1x4xf32>, memref<1x4x32xf32>) -> ()
// argmax writes the second out-param itself.
// BUFFERIZED: call @block_dispatch_{{[0-9]+}}_reduction(%{{.+}}, %arg8, %{{.+}}) : (memref<1x4xf32>, memref<1x4xi64>, memref<1x4x32xf32>) -> ()
// BUFFERIZED: memref.dealloc
// BUFFERIZED: return
// BUFFERIZED-LABEL: func.func @zero_bias(%arg0: memref<4x32xf32>, %arg1: memref<16x32xf32>, %arg2: memref<4x16xf32>)
// BUFFERIZED-NOT: memref.alloc
// BUFFERIZED-NOT: memref.copy
// BUFFERIZED: call @zero_bias_dispatch_0_contraction(%arg2, %arg0, %arg1)
// BUFFERIZED-NEXT: return

//===----------------------------------------------------------------------===//
// loops: scf loops; each workgroup grid is an OpenMP worksharing loop
//===----------------------------------------------------------------------===//

// LOOPS-NONE-NOT: linalg.
// LOOPS-NONE-NOT: scf.forall
// LOOPS-NONE-NOT: scf.parallel
// Copies out of strided views (the heads of a KV-cache prefix) are loops, not memrefCopy calls.
// LOOPS-NONE-NOT: memref.copy {{.*}}strided

// LOOPS-LABEL: func.func private @block_dispatch_0_reduction(
// LOOPS-NOT: omp.
// LOOPS: scf.for
// LOOPS-LABEL: func.func private @block_dispatch_{{[0-9]+}}_reduction(%arg0: memref<1x4xf32>, %arg1: memref<1x4xi64>
// LOOPS-NOT: omp.
// LOOPS: scf.for
// LOOPS-LABEL: func.func @block(
// LOOPS-NOT: omp.
// LOOPS: call @block_dispatch_0_reduction
// LOOPS-LABEL: func.func private @zero_bias_dispatch_0_contraction(
// LOOPS: omp.parallel {
// LOOPS-NEXT: omp.wsloop schedule(dynamic) {
// LOOPS-NEXT: omp.loop_nest
// LOOPS-LABEL: func.func @zero_bias(
// LOOPS-NOT: omp.
// LOOPS: call @zero_bias_dispatch_0_contraction(%arg2, %arg0, %arg1)

//===----------------------------------------------------------------------===//
// llvm: the LLVM dialect (and OpenMP regions), with C-interface wrappers for the entry points only
//===----------------------------------------------------------------------===//

// LLVM-NONE-NOT: func.func
// LLVM-NONE-NOT: memref.
// LLVM-NONE-NOT: arith.
// LLVM-NONE-NOT: scf.
// LLVM-NONE-NOT: math.
// LLVM-NONE-NOT: cf.
// LLVM-NONE-NOT: _mlir_ciface_block_dispatch

// LLVM-LABEL: llvm.func @block_dispatch_0_reduction(
// LLVM-LABEL: llvm.func @block(
// LLVM: llvm.call @block_dispatch_0_reduction(
// Seven arguments (six memref descriptor pointers and the index) and two out-params.
// LLVM-LABEL: llvm.func @_mlir_ciface_block(%arg0: !llvm.ptr, %arg1: !llvm.ptr, %arg2: !llvm.ptr, %arg3: !llvm.ptr, %arg4: !llvm.ptr, %arg5: !llvm.ptr, %arg6: i64, %arg7: !llvm.ptr, %arg8: !llvm.ptr)
// LLVM: llvm.call @block(
// LLVM-LABEL: llvm.func @zero_bias_dispatch_0_contraction(
// LLVM: omp.parallel
// LLVM: omp.wsloop
// LLVM-LABEL: llvm.func @_mlir_ciface_zero_bias(%arg0: !llvm.ptr, %arg1: !llvm.ptr, %arg2: !llvm.ptr)
// LLVM: llvm.call @zero_bias(

// LLVMIR-DAG: define void @_mlir_ciface_block(ptr
// LLVMIR-DAG: define void @_mlir_ciface_zero_bias(ptr
// LLVMIR-DAG: call void {{.*}}@__kmpc_fork_call(
