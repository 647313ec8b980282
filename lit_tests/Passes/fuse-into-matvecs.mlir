// RUN: kiln-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(kiln-fuse-into-matvecs))' | FileCheck %s
// RUN: kiln-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(kiln-fuse-into-matvecs{max-rows=1}))' | FileCheck %s --check-prefix=ONE-ROW
// RUN: kiln-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(kiln-fuse-into-matvecs))' | mlir-opt --split-input-file --verify-each > /dev/null

// A decode step's RMSNorm scaling read by two linears (q and k): each matvec gets its own copy of the
// scaling, fused into its body, and reads x, the row's mean square and the norm weight directly.
// CHECK-LABEL: func.func @norm_into_two_linears
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<1x2x8xf32>, %[[MS:[a-z0-9]+]]: tensor<1x2xf32>, %[[G:[a-z0-9]+]]: tensor<8xf32>, %[[WQ:[a-z0-9]+]]: tensor<6x8xf32>, %[[WK:[a-z0-9]+]]: tensor<4x8xf32>)
// CHECK-NOT:  iterator_types = ["parallel", "parallel", "parallel"]}
// CHECK:      %[[Q:.+]] = linalg.generic {{.*}} iterator_types = ["parallel", "parallel", "parallel", "reduction"]} ins(%[[X]], %[[MS]], %[[G]], %[[WQ]] : tensor<1x2x8xf32>, tensor<1x2xf32>, tensor<8xf32>, tensor<6x8xf32>)
// CHECK:        math.rsqrt
// CHECK:        arith.mulf
// CHECK:        arith.mulf
// CHECK:        arith.mulf
// CHECK:        arith.addf
// CHECK:      %[[K:.+]] = linalg.generic {{.*}} ins(%[[X]], %[[MS]], %[[G]], %[[WK]] : tensor<1x2x8xf32>, tensor<1x2xf32>, tensor<8xf32>, tensor<4x8xf32>)
// CHECK:      return %[[Q]], %[[K]]
// With at most one row, a two-row vector is not a matvec's: nothing is fused.
// ONE-ROW-LABEL: func.func @norm_into_two_linears
// ONE-ROW:       iterator_types = ["parallel", "parallel", "parallel"]}
// ONE-ROW-COUNT-2: ins(%{{.*}}, %{{.*}} : tensor<1x2x8xf32>, tensor<{{[0-9]}}x8xf32>)
#x = affine_map<(b, m, n, k) -> (b, m, k)>
#w = affine_map<(b, m, n, k) -> (n, k)>
#y = affine_map<(b, m, n, k) -> (b, m, n)>
#v = affine_map<(b, m, k) -> (b, m, k)>
#r = affine_map<(b, m, k) -> (b, m)>
#g = affine_map<(b, m, k) -> (k)>
func.func @norm_into_two_linears(%x: tensor<1x2x8xf32>, %ms: tensor<1x2xf32>, %g: tensor<8xf32>, %wq: tensor<6x8xf32>, %wk: tensor<4x8xf32>) -> (tensor<1x2x6xf32>, tensor<1x2x4xf32>) {
  %zero = arith.constant 0.0 : f32
  %eps = arith.constant 1.0e-5 : f32
  %e = tensor.empty() : tensor<1x2x8xf32>
  %n = linalg.generic {indexing_maps = [#v, #r, #g, #v], iterator_types = ["parallel", "parallel", "parallel"]}
      ins(%x, %ms, %g : tensor<1x2x8xf32>, tensor<1x2xf32>, tensor<8xf32>) outs(%e : tensor<1x2x8xf32>) {
  ^bb0(%a: f32, %s: f32, %c: f32, %o: f32):
    %t = arith.addf %s, %eps : f32
    %r = math.rsqrt %t : f32
    %u = arith.mulf %a, %r : f32
    %v = arith.mulf %c, %u : f32
    linalg.yield %v : f32
  } -> tensor<1x2x8xf32>
  %eq = tensor.empty() : tensor<1x2x6xf32>
  %fq = linalg.fill ins(%zero : f32) outs(%eq : tensor<1x2x6xf32>) -> tensor<1x2x6xf32>
  %q = linalg.generic {indexing_maps = [#x, #w, #y], iterator_types = ["parallel", "parallel", "parallel", "reduction"]}
      ins(%n, %wq : tensor<1x2x8xf32>, tensor<6x8xf32>) outs(%fq : tensor<1x2x6xf32>) {
  ^bb0(%a: f32, %b: f32, %c: f32):
    %p = arith.mulf %a, %b : f32
    %s = arith.addf %c, %p : f32
    linalg.yield %s : f32
  } -> tensor<1x2x6xf32>
  %ek = tensor.empty() : tensor<1x2x4xf32>
  %fk = linalg.fill ins(%zero : f32) outs(%ek : tensor<1x2x4xf32>) -> tensor<1x2x4xf32>
  %k = linalg.generic {indexing_maps = [#x, #w, #y], iterator_types = ["parallel", "parallel", "parallel", "reduction"]}
      ins(%n, %wk : tensor<1x2x8xf32>, tensor<4x8xf32>) outs(%fk : tensor<1x2x4xf32>) {
  ^bb0(%a: f32, %b: f32, %c: f32):
    %p = arith.mulf %a, %b : f32
    %s = arith.addf %c, %p : f32
    linalg.yield %s : f32
  } -> tensor<1x2x4xf32>
  return %q, %k : tensor<1x2x6xf32>, tensor<1x2x4xf32>
}

// -----

// The producer is also read by an elementwise op: it stays for that reader; the matvec gets a copy.
// CHECK-LABEL: func.func @producer_with_another_reader
// CHECK:      %[[S:.+]] = linalg.generic {{.*}} iterator_types = ["parallel", "parallel"]} ins(%{{.*}} : tensor<1x8xf32>)
// CHECK:        math.exp
// CHECK:      %[[Y:.+]] = linalg.generic {{.*}} iterator_types = ["parallel", "parallel", "reduction"]} ins(%{{.*}}, %{{.*}} : tensor<1x8xf32>, tensor<3x8xf32>)
// CHECK:        math.exp
// CHECK:        arith.mulf
// CHECK:      return %[[Y]], %[[S]]
#x2 = affine_map<(m, n, k) -> (m, k)>
#w2 = affine_map<(m, n, k) -> (n, k)>
#y2 = affine_map<(m, n, k) -> (m, n)>
#id2 = affine_map<(m, k) -> (m, k)>
func.func @producer_with_another_reader(%x: tensor<1x8xf32>, %w: tensor<3x8xf32>) -> (tensor<1x3xf32>, tensor<1x8xf32>) {
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<1x8xf32>
  %s = linalg.generic {indexing_maps = [#id2, #id2], iterator_types = ["parallel", "parallel"]}
      ins(%x : tensor<1x8xf32>) outs(%e : tensor<1x8xf32>) {
  ^bb0(%a: f32, %o: f32):
    %v = math.exp %a : f32
    linalg.yield %v : f32
  } -> tensor<1x8xf32>
  %ey = tensor.empty() : tensor<1x3xf32>
  %f = linalg.fill ins(%zero : f32) outs(%ey : tensor<1x3xf32>) -> tensor<1x3xf32>
  %y = linalg.generic {indexing_maps = [#x2, #w2, #y2], iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%s, %w : tensor<1x8xf32>, tensor<3x8xf32>) outs(%f : tensor<1x3xf32>) {
  ^bb0(%a: f32, %b: f32, %c: f32):
    %p = arith.mulf %a, %b : f32
    %q = arith.addf %c, %p : f32
    linalg.yield %q : f32
  } -> tensor<1x3xf32>
  return %y, %s : tensor<1x3xf32>, tensor<1x8xf32>
}

// -----

// Left alone: the weight side (read with every output column: not broadcast), a producer that
// indexes (linalg.index), and a GEMM's many rows.
// CHECK-LABEL: func.func @not_a_matvec_vector
// CHECK-COUNT-3: iterator_types = ["parallel", "parallel"]}
#x3 = affine_map<(m, n, k) -> (m, k)>
#w3 = affine_map<(m, n, k) -> (n, k)>
#y3 = affine_map<(m, n, k) -> (m, n)>
#id3 = affine_map<(i, j) -> (i, j)>
func.func @not_a_matvec_vector(%x: tensor<1x8xf32>, %w: tensor<3x8xf32>, %big: tensor<64x8xf32>) -> (tensor<1x3xf32>, tensor<1x3xf32>, tensor<64x3xf32>) {
  %zero = arith.constant 0.0 : f32
  %ew = tensor.empty() : tensor<3x8xf32>
  %ws = linalg.generic {indexing_maps = [#id3, #id3], iterator_types = ["parallel", "parallel"]}
      ins(%w : tensor<3x8xf32>) outs(%ew : tensor<3x8xf32>) {
  ^bb0(%a: f32, %o: f32):
    %v = arith.negf %a : f32
    linalg.yield %v : f32
  } -> tensor<3x8xf32>
  %ex = tensor.empty() : tensor<1x8xf32>
  %xi = linalg.generic {indexing_maps = [#id3, #id3], iterator_types = ["parallel", "parallel"]}
      ins(%x : tensor<1x8xf32>) outs(%ex : tensor<1x8xf32>) {
  ^bb0(%a: f32, %o: f32):
    %i = linalg.index 1 : index
    %c = arith.index_cast %i : index to i32
    %f = arith.sitofp %c : i32 to f32
    %v = arith.mulf %a, %f : f32
    linalg.yield %v : f32
  } -> tensor<1x8xf32>
  %eb = tensor.empty() : tensor<64x8xf32>
  %bs = linalg.generic {indexing_maps = [#id3, #id3], iterator_types = ["parallel", "parallel"]}
      ins(%big : tensor<64x8xf32>) outs(%eb : tensor<64x8xf32>) {
  ^bb0(%a: f32, %o: f32):
    %v = math.exp %a : f32
    linalg.yield %v : f32
  } -> tensor<64x8xf32>
  %ey = tensor.empty() : tensor<1x3xf32>
  %f1 = linalg.fill ins(%zero : f32) outs(%ey : tensor<1x3xf32>) -> tensor<1x3xf32>
  %y1 = linalg.generic {indexing_maps = [#x3, #w3, #y3], iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%x, %ws : tensor<1x8xf32>, tensor<3x8xf32>) outs(%f1 : tensor<1x3xf32>) {
  ^bb0(%a: f32, %b: f32, %c: f32):
    %p = arith.mulf %a, %b : f32
    %q = arith.addf %c, %p : f32
    linalg.yield %q : f32
  } -> tensor<1x3xf32>
  %y2 = linalg.generic {indexing_maps = [#x3, #w3, #y3], iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%xi, %w : tensor<1x8xf32>, tensor<3x8xf32>) outs(%f1 : tensor<1x3xf32>) {
  ^bb0(%a: f32, %b: f32, %c: f32):
    %p = arith.mulf %a, %b : f32
    %q = arith.addf %c, %p : f32
    linalg.yield %q : f32
  } -> tensor<1x3xf32>
  %eg = tensor.empty() : tensor<64x3xf32>
  %f3 = linalg.fill ins(%zero : f32) outs(%eg : tensor<64x3xf32>) -> tensor<64x3xf32>
  %y3 = linalg.generic {indexing_maps = [#x3, #w3, #y3], iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%bs, %w : tensor<64x8xf32>, tensor<3x8xf32>) outs(%f3 : tensor<64x3xf32>) {
  ^bb0(%a: f32, %b: f32, %c: f32):
    %p = arith.mulf %a, %b : f32
    %q = arith.addf %c, %p : f32
    linalg.yield %q : f32
  } -> tensor<64x3xf32>
  return %y1, %y2, %y3 : tensor<1x3xf32>, tensor<1x3xf32>, tensor<64x3xf32>
}

// -----

// A decode linear over Q4 blocks reads its vector viewed as [.., K/32, 2, 16] (tensor.expand_shape),
// both halves through maps with a constant half: the RMSNorm scaling is expanded to that shape
// (x and the norm weight are reshaped instead, as views) and fused, so the linear reads x, the mean
// square and the norm weight directly.
// CHECK-LABEL: func.func @norm_into_quantized_linear
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<1x64xf32>, %[[MS:[a-z0-9]+]]: tensor<1xf32>, %[[G:[a-z0-9]+]]: tensor<64xf32>, %[[QS:[a-z0-9]+]]: tensor<3x2x16xi8>, %[[D:[a-z0-9]+]]: tensor<3x2xf16>)
// CHECK-DAG:  %[[XE:.+]] = tensor.expand_shape %[[X]] {{\[}}[0], [1, 2, 3]] output_shape [1, 2, 2, 16]
// CHECK-DAG:  %[[GE:.+]] = tensor.expand_shape %[[G]] {{\[}}[0, 1, 2]] output_shape [2, 2, 16]
// CHECK-NOT:  iterator_types = ["parallel", "parallel", "parallel", "parallel"]}
// CHECK:      linalg.generic {{.*}} iterator_types = ["parallel", "parallel", "reduction", "reduction"]} ins(%[[XE]], %[[MS]], %[[GE]], %[[XE]], %[[MS]], %[[GE]], %[[QS]], %[[D]] :
// CHECK-COUNT-2: math.rsqrt
// CHECK:      arith.extui
#v = affine_map<(m, k) -> (m, k)>
#r = affine_map<(m, k) -> (m)>
#g = affine_map<(m, k) -> (k)>
#lo = affine_map<(m, n, b, j) -> (m, b, 0, j)>
#hi = affine_map<(m, n, b, j) -> (m, b, 1, j)>
#q = affine_map<(m, n, b, j) -> (n, b, j)>
#d = affine_map<(m, n, b, j) -> (n, b)>
#y = affine_map<(m, n, b, j) -> (m, n)>
func.func @norm_into_quantized_linear(%x: tensor<1x64xf32>, %ms: tensor<1xf32>, %g: tensor<64xf32>, %qs: tensor<3x2x16xi8>, %d: tensor<3x2xf16>) -> tensor<1x3xf32> {
  %zero = arith.constant 0.0 : f32
  %c15 = arith.constant 15 : i32
  %c4 = arith.constant 4 : i32
  %e = tensor.empty() : tensor<1x64xf32>
  %n = linalg.generic {indexing_maps = [#v, #r, #g, #v], iterator_types = ["parallel", "parallel"]}
      ins(%x, %ms, %g : tensor<1x64xf32>, tensor<1xf32>, tensor<64xf32>) outs(%e : tensor<1x64xf32>) {
  ^bb0(%a: f32, %s: f32, %c: f32, %o: f32):
    %r = math.rsqrt %s : f32
    %u = arith.mulf %a, %r : f32
    %v = arith.mulf %c, %u : f32
    linalg.yield %v : f32
  } -> tensor<1x64xf32>
  %xb = tensor.expand_shape %n [[0], [1, 2, 3]] output_shape [1, 2, 2, 16] : tensor<1x64xf32> into tensor<1x2x2x16xf32>
  %ey = tensor.empty() : tensor<1x3xf32>
  %fy = linalg.fill ins(%zero : f32) outs(%ey : tensor<1x3xf32>) -> tensor<1x3xf32>
  %y = linalg.generic {indexing_maps = [#lo, #hi, #q, #d, #y], iterator_types = ["parallel", "parallel", "reduction", "reduction"]}
      ins(%xb, %xb, %qs, %d : tensor<1x2x2x16xf32>, tensor<1x2x2x16xf32>, tensor<3x2x16xi8>, tensor<3x2xf16>) outs(%fy : tensor<1x3xf32>) {
  ^bb0(%xl: f32, %xh: f32, %byte: i8, %scale: f16, %acc: f32):
    %b = arith.extui %byte : i8 to i32
    %lo = arith.andi %b, %c15 : i32
    %sh = arith.shrui %b, %c4 : i32
    %hi = arith.andi %sh, %c15 : i32
    %sf = arith.extf %scale : f16 to f32
    %lf = arith.uitofp %lo : i32 to f32
    %hf = arith.uitofp %hi : i32 to f32
    %wl = arith.mulf %sf, %lf : f32
    %wh = arith.mulf %sf, %hf : f32
    %pl = arith.mulf %xl, %wl : f32
    %ph = arith.mulf %xh, %wh : f32
    %p = arith.addf %pl, %ph : f32
    %s = arith.addf %acc, %p : f32
    linalg.yield %s : f32
  } -> tensor<1x3xf32>
  return %y : tensor<1x3xf32>
}
