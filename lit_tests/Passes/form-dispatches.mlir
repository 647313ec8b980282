// RUN: kiln-opt %s --split-input-file --kiln-form-dispatches | FileCheck %s
// The pass is idempotent: kernels are no hosts, and a host it has run on has no linalg op left.
// RUN: kiln-opt %s --split-input-file --kiln-form-dispatches --kiln-form-dispatches | FileCheck %s
// Its output is upstream IR (the kiln.* attributes are discardable): upstream mlir-opt verifies it.
// RUN: kiln-opt %s --split-input-file --kiln-form-dispatches | mlir-opt --split-input-file --verify-each > /dev/null

// Dispatch formation on linalg-on-tensors IR: every top-level linalg op of a host function is
// outlined, with the linalg.fill ops that only initialize it, into a private `kiln.dispatch`
// function that the host calls. The tensor.empty a kernel writes stays in the host and is passed
// in; small constants are cloned into the kernel. Kernels are tagged with their class, loop trip
// counts (-1 where dynamic) and loop kinds, and the root op with `kiln.root`.

// A matmul and the fill that zeroes its accumulator form one contraction kernel.
// CHECK-LABEL: func.func private @matmul_dispatch_0_contraction
// CHECK-SAME: (%[[INIT:.+]]: tensor<8x32xf32>, %[[A:.+]]: tensor<8x16xf32>, %[[B:.+]]: tensor<16x32xf32>) -> tensor<8x32xf32>
// CHECK-SAME: attributes {kiln.dispatch, kiln.iterator_types = "ppr", kiln.kernel_class = "contraction", kiln.loop_ranges = array<i64: 8, 32, 16>}
// CHECK-NEXT: %[[ZERO:.+]] = arith.constant 0.000000e+00 : f32
// CHECK-NEXT: %[[FILL:.+]] = linalg.fill ins(%[[ZERO]] : f32) outs(%[[INIT]] : tensor<8x32xf32>)
// CHECK-NEXT: %[[MM:.+]] = linalg.matmul {kiln.root} ins(%[[A]], %[[B]] : {{.+}}) outs(%[[FILL]] : tensor<8x32xf32>)
// CHECK-NEXT: return %[[MM]]
// CHECK-LABEL: func.func @matmul
// CHECK-SAME: (%[[HA:.+]]: tensor<8x16xf32>, %[[HB:.+]]: tensor<16x32xf32>)
// CHECK-NOT: linalg.
// CHECK: %[[E:.+]] = tensor.empty() : tensor<8x32xf32>
// CHECK-NEXT: %[[R:.+]] = call @matmul_dispatch_0_contraction(%[[E]], %[[HA]], %[[HB]])
// CHECK-NEXT: return %[[R]]
func.func @matmul(%a: tensor<8x16xf32>, %b: tensor<16x32xf32>) -> tensor<8x32xf32> {
  %cst = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<8x32xf32>
  %f = linalg.fill ins(%cst : f32) outs(%e : tensor<8x32xf32>) -> tensor<8x32xf32>
  %r = linalg.matmul ins(%a, %b : tensor<8x16xf32>, tensor<16x32xf32>) outs(%f : tensor<8x32xf32>) -> tensor<8x32xf32>
  return %r : tensor<8x32xf32>
}

// -----

// Dynamic dims: trip count -1; the host computes the size and allocates the init.
// CHECK-LABEL: func.func private @dynamic_dispatch_0_contraction
// CHECK-SAME: (%{{.+}}: tensor<?x32xf32>, %{{.+}}: tensor<?x16xf32>, %{{.+}}: tensor<16x32xf32>) -> tensor<?x32xf32>
// CHECK-SAME: kiln.loop_ranges = array<i64: -1, 32, 16>
// CHECK: linalg.fill
// CHECK: linalg.matmul {kiln.root}
// CHECK-LABEL: func.func @dynamic
// CHECK-SAME: (%[[A:.+]]: tensor<?x16xf32>, %[[B:.+]]: tensor<16x32xf32>)
// CHECK: %[[D:.+]] = tensor.dim %[[A]], %{{.+}} : tensor<?x16xf32>
// CHECK: %[[E:.+]] = tensor.empty(%[[D]]) : tensor<?x32xf32>
// CHECK: call @dynamic_dispatch_0_contraction(%[[E]], %[[A]], %[[B]])
func.func @dynamic(%a: tensor<?x16xf32>, %b: tensor<16x32xf32>) -> tensor<?x32xf32> {
  %c0 = arith.constant 0 : index
  %cst = arith.constant 0.0 : f32
  %d = tensor.dim %a, %c0 : tensor<?x16xf32>
  %e = tensor.empty(%d) : tensor<?x32xf32>
  %f = linalg.fill ins(%cst : f32) outs(%e : tensor<?x32xf32>) -> tensor<?x32xf32>
  %r = linalg.matmul ins(%a, %b : tensor<?x16xf32>, tensor<16x32xf32>) outs(%f : tensor<?x32xf32>) -> tensor<?x32xf32>
  return %r : tensor<?x32xf32>
}

// -----

// A fill that initializes several ops (as CSE leaves identical fills) is cloned for each, with its
// tensor.empty: each kernel zeroes its own output, with no fill kernel and no shared host buffer.
// CHECK-LABEL: func.func private @shared_fill_dispatch_0_contraction
// CHECK-SAME: (%[[INIT1:.+]]: tensor<8x32xf32>, %{{.+}}: tensor<8x16xf32>, %{{.+}}: tensor<16x32xf32>)
// CHECK: %[[F1:.+]] = linalg.fill ins(%{{.+}} : f32) outs(%[[INIT1]] : tensor<8x32xf32>)
// CHECK: linalg.matmul {kiln.root} ins({{.+}}) outs(%[[F1]] : tensor<8x32xf32>)
// CHECK-LABEL: func.func private @shared_fill_dispatch_1_contraction
// CHECK: linalg.fill
// CHECK: linalg.matmul {kiln.root}
// CHECK-LABEL: func.func @shared_fill
// CHECK-SAME: (%[[A:.+]]: tensor<8x16xf32>, %[[B:.+]]: tensor<16x32xf32>, %[[C:.+]]: tensor<16x32xf32>)
// CHECK: %[[E1:.+]] = tensor.empty()
// CHECK: %[[R1:.+]] = call @shared_fill_dispatch_0_contraction(%[[E1]], %[[A]], %[[B]])
// CHECK: %[[E2:.+]] = tensor.empty()
// CHECK: %[[R2:.+]] = call @shared_fill_dispatch_1_contraction(%[[E2]], %[[A]], %[[C]])
// CHECK: return %[[R1]], %[[R2]]
func.func @shared_fill(%a: tensor<8x16xf32>, %b: tensor<16x32xf32>, %c: tensor<16x32xf32>) -> (tensor<8x32xf32>, tensor<8x32xf32>) {
  %cst = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<8x32xf32>
  %f = linalg.fill ins(%cst : f32) outs(%e : tensor<8x32xf32>) -> tensor<8x32xf32>
  %r1 = linalg.matmul ins(%a, %b : tensor<8x16xf32>, tensor<16x32xf32>) outs(%f : tensor<8x32xf32>) -> tensor<8x32xf32>
  %r2 = linalg.matmul ins(%a, %c : tensor<8x16xf32>, tensor<16x32xf32>) outs(%f : tensor<8x32xf32>) -> tensor<8x32xf32>
  return %r1, %r2 : tensor<8x32xf32>, tensor<8x32xf32>
}

// -----

// A fill used as an input (not as the init) is a kernel of its own; an op it also initializes gets
// a clone of it.
// CHECK-LABEL: func.func private @fill_as_input_dispatch_0_elementwise
// CHECK: linalg.fill {kiln.root}
// CHECK-LABEL: func.func private @fill_as_input_dispatch_1_elementwise
// CHECK-SAME: (%{{.+}}: tensor<8x16xf32>, %[[ONES:.+]]: tensor<8x16xf32>, %[[OUT:.+]]: tensor<8x16xf32>)
// CHECK-NOT: linalg.fill
// CHECK: linalg.generic {{.+}} ins(%{{.+}}, %[[ONES]] : {{.+}}) outs(%[[OUT]] : tensor<8x16xf32>) attrs = {kiln.root}
// CHECK-LABEL: func.func private @fill_as_input_dispatch_2_reduction
// CHECK: %[[F:.+]] = linalg.fill
// CHECK: linalg.generic {{.+}} outs(%[[F]] : tensor<8xf32>) attrs = {kiln.root}
// CHECK-LABEL: func.func @fill_as_input
// CHECK: %[[E:.+]] = tensor.empty()
// CHECK: %[[ONES:.+]] = call @fill_as_input_dispatch_0_elementwise(%[[E]])
// CHECK: call @fill_as_input_dispatch_1_elementwise(%{{.+}}, %[[ONES]], %[[E]])
#id2 = affine_map<(d0, d1) -> (d0, d1)>
func.func @fill_as_input(%x: tensor<8x16xf32>) -> (tensor<8x16xf32>, tensor<8xf32>) {
  %one = arith.constant 1.0 : f32
  %e = tensor.empty() : tensor<8x16xf32>
  %ones = linalg.fill ins(%one : f32) outs(%e : tensor<8x16xf32>) -> tensor<8x16xf32>
  %r = linalg.generic {indexing_maps = [#id2, #id2, #id2], iterator_types = ["parallel", "parallel"]}
      ins(%x, %ones : tensor<8x16xf32>, tensor<8x16xf32>) outs(%e : tensor<8x16xf32>) {
  ^bb0(%a: f32, %b: f32, %o: f32):
    %s = arith.addf %a, %b : f32
    linalg.yield %s : f32
  } -> tensor<8x16xf32>
  %e1 = tensor.empty() : tensor<8xf32>
  %ones1 = linalg.fill ins(%one : f32) outs(%e1 : tensor<8xf32>) -> tensor<8xf32>
  %s = linalg.generic {indexing_maps = [#id2, affine_map<(d0, d1) -> (d0)>], iterator_types = ["parallel", "reduction"]}
      ins(%r : tensor<8x16xf32>) outs(%ones1 : tensor<8xf32>) {
  ^bb0(%a: f32, %o: f32):
    %t = arith.addf %a, %o : f32
    linalg.yield %t : f32
  } -> tensor<8xf32>
  return %r, %s : tensor<8x16xf32>, tensor<8xf32>
}

// -----

// Small constants (scalars, tensors up to 4096 elements) are cloned into the kernel; larger ones
// are passed to it.
// CHECK-LABEL: func.func private @constants_dispatch_0_elementwise
// CHECK-SAME: (%[[X:.+]]: tensor<8x16xf32>, %[[OUT:.+]]: tensor<8x16xf32>)
// CHECK-DAG: %[[SMALL:.+]] = arith.constant dense<2.000000e+00> : tensor<8x16xf32>
// CHECK-DAG: %[[HALF:.+]] = arith.constant 5.000000e-01 : f32
// CHECK: linalg.generic {{.+}} ins(%[[X]], %[[SMALL]] : {{.+}}) outs(%[[OUT]] : tensor<8x16xf32>)
// CHECK: arith.mulf %{{.+}}, %[[HALF]]
// CHECK-LABEL: func.func private @constants_dispatch_1_elementwise
// CHECK-SAME: (%[[BIG:.+]]: tensor<80x64xf32>, %[[OUT2:.+]]: tensor<80x64xf32>)
// CHECK-NOT: arith.constant
// CHECK: linalg.copy {kiln.root} ins(%[[BIG]] : tensor<80x64xf32>) outs(%[[OUT2]] : tensor<80x64xf32>)
// CHECK-LABEL: func.func @constants
// CHECK: %[[HBIG:.+]] = arith.constant dense<3.000000e+00> : tensor<80x64xf32>
// CHECK: call @constants_dispatch_0_elementwise(%{{.+}}, %{{.+}})
// CHECK: call @constants_dispatch_1_elementwise(%[[HBIG]], %{{.+}})
#id2 = affine_map<(d0, d1) -> (d0, d1)>
func.func @constants(%x: tensor<8x16xf32>) -> (tensor<8x16xf32>, tensor<80x64xf32>) {
  %small = arith.constant dense<2.0> : tensor<8x16xf32>
  %half = arith.constant 0.5 : f32
  %big = arith.constant dense<3.0> : tensor<80x64xf32>
  %e = tensor.empty() : tensor<8x16xf32>
  %r = linalg.generic {indexing_maps = [#id2, #id2, #id2], iterator_types = ["parallel", "parallel"]}
      ins(%x, %small : tensor<8x16xf32>, tensor<8x16xf32>) outs(%e : tensor<8x16xf32>) {
  ^bb0(%a: f32, %b: f32, %o: f32):
    %m = arith.mulf %a, %b : f32
    %h = arith.mulf %m, %half : f32
    linalg.yield %h : f32
  } -> tensor<8x16xf32>
  %e2 = tensor.empty() : tensor<80x64xf32>
  %r2 = linalg.copy ins(%big : tensor<80x64xf32>) outs(%e2 : tensor<80x64xf32>) -> tensor<80x64xf32>
  return %r, %r2 : tensor<8x16xf32>, tensor<80x64xf32>
}

// -----

// argmax: a two-result reduction; both of its init fills are in its kernel.
// CHECK-LABEL: func.func private @argmax_dispatch_0_reduction
// CHECK-SAME: (%[[M:.+]]: tensor<8xf32>, %[[I:.+]]: tensor<8xi64>, %[[X:.+]]: tensor<8x16xf32>) -> (tensor<8xf32>, tensor<8xi64>)
// CHECK-SAME: kiln.iterator_types = "pr", kiln.kernel_class = "reduction", kiln.loop_ranges = array<i64: 8, 16>
// CHECK-DAG: %[[FM:.+]] = linalg.fill ins(%{{.+}} : f32) outs(%[[M]] : tensor<8xf32>)
// CHECK-DAG: %[[FI:.+]] = linalg.fill ins(%{{.+}} : i64) outs(%[[I]] : tensor<8xi64>)
// CHECK: %[[R:.+]]:2 = linalg.generic {{.+}} ins(%[[X]] : tensor<8x16xf32>) outs(%[[FM]], %[[FI]] : tensor<8xf32>, tensor<8xi64>) attrs = {kiln.root}
// CHECK: return %[[R]]#0, %[[R]]#1
// CHECK-LABEL: func.func @argmax
// CHECK-NOT: linalg.
// CHECK: %[[R:.+]]:2 = call @argmax_dispatch_0_reduction(
// CHECK: return %[[R]]#1
#id2 = affine_map<(d0, d1) -> (d0, d1)>
#row = affine_map<(d0, d1) -> (d0)>
func.func @argmax(%x: tensor<8x16xf32>) -> tensor<8xi64> {
  %ninf = arith.constant 0xFF800000 : f32
  %zero = arith.constant 0 : i64
  %e = tensor.empty() : tensor<8xf32>
  %ei = tensor.empty() : tensor<8xi64>
  %fm = linalg.fill ins(%ninf : f32) outs(%e : tensor<8xf32>) -> tensor<8xf32>
  %fi = linalg.fill ins(%zero : i64) outs(%ei : tensor<8xi64>) -> tensor<8xi64>
  %r:2 = linalg.generic {indexing_maps = [#id2, #row, #row], iterator_types = ["parallel", "reduction"]}
      ins(%x : tensor<8x16xf32>) outs(%fm, %fi : tensor<8xf32>, tensor<8xi64>) {
  ^bb0(%in: f32, %m: f32, %i: i64):
    %j = linalg.index 1 : index
    %ji = arith.index_cast %j : index to i64
    %gt = arith.cmpf ogt, %in, %m : f32
    %nm = arith.select %gt, %in, %m : f32
    %ni = arith.select %gt, %ji, %i : i64
    linalg.yield %nm, %ni : f32, i64
  } -> (tensor<8xf32>, tensor<8xi64>)
  return %r#1 : tensor<8xi64>
}

// -----

// Kernels in sequence: one kernel's result is the next one's input; numbering follows the host.
// A transpose kernel records its permutation (`kiln.permutation`: a host copy of its result can read
// its input through a transposed view instead, see copy_views.py).
// A gather (tensor.extract in the body) counts as elementwise, as upstream's isElementwise has it;
// the table it reads is passed in. A body with control flow makes a "generic" kernel.
// CHECK-LABEL: func.func private @chain_dispatch_0_elementwise
// CHECK-SAME: (%[[TABLE:.+]]: tensor<100x16xf32>, %[[IDS:.+]]: tensor<8xi64>, %[[OUT:.+]]: tensor<8x16xf32>)
// CHECK: linalg.generic {{.+}} ins(%[[IDS]] : tensor<8xi64>) outs(%[[OUT]] : tensor<8x16xf32>) attrs = {kiln.root}
// CHECK: tensor.extract %[[TABLE]]
// CHECK-LABEL: func.func private @chain_dispatch_1_transpose
// CHECK-SAME: kiln.iterator_types = "pp", kiln.kernel_class = "transpose", kiln.loop_ranges = array<i64: 16, 8>
// CHECK-SAME: kiln.permutation = array<i64: 1, 0>
// CHECK: linalg.transpose
// CHECK-LABEL: func.func private @chain_dispatch_2_generic
// CHECK-SAME: (%[[FLAG:.+]]: i1, %{{.+}}: tensor<16x8xf32>, %{{.+}}: tensor<16x8xf32>)
// CHECK-SAME: kiln.kernel_class = "generic"
// CHECK: scf.if %[[FLAG]]
// CHECK-LABEL: func.func @chain
// CHECK-SAME: (%[[HT:.+]]: tensor<100x16xf32>, %[[HI:.+]]: tensor<8xi64>, %[[HF:.+]]: i1)
// CHECK: %[[G:.+]] = call @chain_dispatch_0_elementwise(%[[HT]], %[[HI]], %{{.+}})
// CHECK: %[[T:.+]] = call @chain_dispatch_1_transpose(%[[G]], %{{.+}})
// CHECK: %[[R:.+]] = call @chain_dispatch_2_generic(%[[HF]], %[[T]], %{{.+}})
// CHECK: return %[[R]]
#id2 = affine_map<(d0, d1) -> (d0, d1)>
#row = affine_map<(d0, d1) -> (d0)>
func.func @chain(%table: tensor<100x16xf32>, %ids: tensor<8xi64>, %flag: i1) -> tensor<16x8xf32> {
  %e = tensor.empty() : tensor<8x16xf32>
  %g = linalg.generic {indexing_maps = [#row, #id2], iterator_types = ["parallel", "parallel"]}
      ins(%ids : tensor<8xi64>) outs(%e : tensor<8x16xf32>) {
  ^bb0(%id: i64, %out: f32):
    %i = arith.index_cast %id : i64 to index
    %j = linalg.index 1 : index
    %v = tensor.extract %table[%i, %j] : tensor<100x16xf32>
    linalg.yield %v : f32
  } -> tensor<8x16xf32>
  %et = tensor.empty() : tensor<16x8xf32>
  %t = linalg.transpose ins(%g : tensor<8x16xf32>) outs(%et : tensor<16x8xf32>) permutation = [1, 0]
  %en = tensor.empty() : tensor<16x8xf32>
  %r = linalg.generic {indexing_maps = [#id2, #id2], iterator_types = ["parallel", "parallel"]}
      ins(%t : tensor<16x8xf32>) outs(%en : tensor<16x8xf32>) {
  ^bb0(%a: f32, %o: f32):
    %v = scf.if %flag -> f32 {
      %n = arith.negf %a : f32
      scf.yield %n : f32
    } else {
      scf.yield %a : f32
    }
    linalg.yield %v : f32
  } -> tensor<16x8xf32>
  return %r : tensor<16x8xf32>
}

// -----

// Every defined function is a host, private ones included; declarations are left alone. A kernel
// name that is taken gets a unique suffix.
// CHECK-LABEL: func.func private @extern(tensor<4xf32>) -> tensor<4xf32>
// CHECK-LABEL: func.func @f_dispatch_0_transpose(
// CHECK-NEXT: return
// CHECK-LABEL: func.func private @helper_dispatch_0_transpose(
// CHECK-SAME: kiln.dispatch
// CHECK-LABEL: func.func private @helper(
// CHECK: call @helper_dispatch_0_transpose(
// CHECK-LABEL: func.func private @f_dispatch_0_transpose_0(
// CHECK-SAME: kiln.dispatch
// CHECK-LABEL: func.func @f(
// CHECK: %[[T:.+]] = call @helper(
// CHECK: call @f_dispatch_0_transpose_0(%[[T]], %{{.+}})
func.func private @extern(tensor<4xf32>) -> tensor<4xf32>
func.func @f_dispatch_0_transpose(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
  return %x : tensor<4x8xf32>
}
func.func private @helper(%x: tensor<4x8xf32>) -> tensor<8x4xf32> {
  %e = tensor.empty() : tensor<8x4xf32>
  %t = linalg.transpose ins(%x : tensor<4x8xf32>) outs(%e : tensor<8x4xf32>) permutation = [1, 0]
  return %t : tensor<8x4xf32>
}
func.func @f(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %t = call @helper(%x) : (tensor<4x8xf32>) -> tensor<8x4xf32>
  %e = tensor.empty() : tensor<4x8xf32>
  %b = linalg.transpose ins(%t : tensor<8x4xf32>) outs(%e : tensor<4x8xf32>) permutation = [1, 0]
  return %b : tensor<4x8xf32>
}

// -----

// Only top-level ops of a host become kernels: a linalg op inside a loop stays where it is.
// CHECK-NOT: kiln.dispatch
// CHECK-LABEL: func.func @nested
// CHECK: scf.for
// CHECK: linalg.add
// CHECK: scf.yield
func.func @nested(%x: tensor<4xf32>, %n: index) -> tensor<4xf32> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %r = scf.for %i = %c0 to %n step %c1 iter_args(%acc = %x) -> (tensor<4xf32>) {
    %e = tensor.empty() : tensor<4xf32>
    %s = linalg.add ins(%acc, %x : tensor<4xf32>, tensor<4xf32>) outs(%e : tensor<4xf32>) -> tensor<4xf32>
    scf.yield %s : tensor<4xf32>
  }
  return %r : tensor<4xf32>
}

// -----

// A weight stored as panels is unpacked inside every kernel that reads it (the unpack is cloned
// into each, with its tensor.empty), so the packed GEMM schedule's pack of it folds away and the
// host never materializes the unpacked weight.
// CHECK-LABEL: func.func private @panels_dispatch_0_contraction(
// CHECK-SAME: %[[P:.+]]: tensor<2x16x32xf32>
// CHECK: %[[E:.+]] = tensor.empty() : tensor<64x16xf32>
// CHECK: %[[W:.+]] = linalg.unpack %[[P]] inner_dims_pos = [0] inner_tiles = [32] into %[[E]]
// CHECK: linalg.matmul {{.*}}{kiln.root} ins(%{{.+}}, %[[W]] :
// CHECK-LABEL: func.func private @panels_dispatch_1_contraction(
// CHECK: linalg.unpack
// CHECK: linalg.matmul {{.*}}{kiln.root}
// CHECK-LABEL: func.func @panels(
// CHECK-NOT: linalg.unpack
// CHECK: call @panels_dispatch_0_contraction(%arg1,
// CHECK: call @panels_dispatch_1_contraction(%arg1,
// CHECK-NOT: linalg.unpack
func.func @panels(%x: tensor<8x16xf32>, %p: tensor<2x16x32xf32>) -> (tensor<8x64xf32>, tensor<8x64xf32>) {
  %e = tensor.empty() : tensor<64x16xf32>
  %w = linalg.unpack %p inner_dims_pos = [0] inner_tiles = [32] into %e : tensor<2x16x32xf32> -> tensor<64x16xf32>
  %zero = arith.constant 0.0 : f32
  %o = tensor.empty() : tensor<8x64xf32>
  %f = linalg.fill ins(%zero : f32) outs(%o : tensor<8x64xf32>) -> tensor<8x64xf32>
  %a = linalg.matmul indexing_maps = [affine_map<(m, n, k) -> (m, k)>, affine_map<(m, n, k) -> (n, k)>, affine_map<(m, n, k) -> (m, n)>]
      ins(%x, %w : tensor<8x16xf32>, tensor<64x16xf32>) outs(%f : tensor<8x64xf32>) -> tensor<8x64xf32>
  %f2 = linalg.fill ins(%zero : f32) outs(%o : tensor<8x64xf32>) -> tensor<8x64xf32>
  %b = linalg.matmul indexing_maps = [affine_map<(m, n, k) -> (m, k)>, affine_map<(m, n, k) -> (n, k)>, affine_map<(m, n, k) -> (m, n)>]
      ins(%x, %w : tensor<8x16xf32>, tensor<64x16xf32>) outs(%f2 : tensor<8x64xf32>) -> tensor<8x64xf32>
  return %a, %b : tensor<8x64xf32>, tensor<8x64xf32>
}

// -----

// An op a lowering already formed into a kernel (an scf.forall tagged `kiln.kernel_class`, here
// the shape of flash attention's) is outlined as it is, with everything nested in it: its class
// from the tag, its grid as the loop ranges (-1 where dynamic), all parallel. The tensor.empty it
// writes stays in the host; the small constant it uses is cloned into the kernel.
// CHECK-LABEL: func.func private @formed_dispatch_0_attention(
// CHECK-SAME: %[[X:.+]]: tensor<2x?x16xf32>, %[[N:.+]]: index, %[[OUT:.+]]: tensor<2x?x16xf32>) -> tensor<2x?x16xf32>
// CHECK-SAME: attributes {kiln.dispatch, kiln.iterator_types = "pp", kiln.kernel_class = "attention", kiln.loop_ranges = array<i64: 2, -1>}
// CHECK: %[[TWO:.+]] = arith.constant 2.000000e+00 : f32
// CHECK: %[[R:.+]] = scf.forall (%{{.+}}, %{{.+}}) in (2, %[[N]]) shared_outs(%{{.+}} = %[[OUT]])
// CHECK: arith.mulf %{{.+}}, %[[TWO]]
// CHECK: } {kiln.kernel_class = "attention", kiln.root}
// CHECK: return %[[R]]
// CHECK-LABEL: func.func @formed(
// CHECK: %[[E:.+]] = tensor.empty(%{{.+}}) : tensor<2x?x16xf32>
// CHECK-NEXT: %[[C:.+]] = call @formed_dispatch_0_attention(%arg0, %{{.+}}, %[[E]])
// CHECK-NEXT: return %[[C]]
func.func @formed(%x: tensor<2x?x16xf32>) -> tensor<2x?x16xf32> {
  %c1 = arith.constant 1 : index
  %two = arith.constant 2.0 : f32
  %n = tensor.dim %x, %c1 : tensor<2x?x16xf32>
  %e = tensor.empty(%n) : tensor<2x?x16xf32>
  %r = scf.forall (%b, %i) in (2, %n) shared_outs(%o = %e) -> (tensor<2x?x16xf32>) {
    %row = tensor.extract_slice %x[%b, %i, 0] [1, 1, 16] [1, 1, 1] : tensor<2x?x16xf32> to tensor<16xf32>
    %d = tensor.empty() : tensor<16xf32>
    %y = linalg.generic {indexing_maps = [affine_map<(j) -> (j)>, affine_map<(j) -> (j)>], iterator_types = ["parallel"]}
        ins(%row : tensor<16xf32>) outs(%d : tensor<16xf32>) {
    ^bb0(%a: f32, %unused: f32):
      %m = arith.mulf %a, %two : f32
      linalg.yield %m : f32
    } -> tensor<16xf32>
    scf.forall.in_parallel {
      tensor.parallel_insert_slice %y into %o[%b, %i, 0] [1, 1, 16] [1, 1, 1] : tensor<16xf32> into tensor<2x?x16xf32>
    }
  } {kiln.kernel_class = "attention"}
  return %r : tensor<2x?x16xf32>
}
