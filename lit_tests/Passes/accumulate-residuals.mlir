// RUN: kiln-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(kiln-accumulate-residuals))' | FileCheck %s
// RUN: kiln-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(kiln-accumulate-residuals))' | mlir-opt --split-input-file --verify-each > /dev/null

// The residual connection after a decode step's o_proj: the linear accumulates into the residual.
// CHECK-LABEL: func.func @residual_after_linear
// CHECK-SAME: (%[[R:[a-z0-9]+]]: tensor<1x1x8xf32>, %[[X:[a-z0-9]+]]: tensor<1x1x4xf32>, %[[W:[a-z0-9]+]]: tensor<8x4xf32>)
// CHECK:      %[[Y:.+]] = linalg.generic
// CHECK-SAME:   ins(%[[X]], %[[W]] : tensor<1x1x4xf32>, tensor<8x4xf32>) outs(%[[R]] : tensor<1x1x8xf32>)
// CHECK:        arith.mulf
// CHECK-NEXT:   arith.addf
// CHECK-NOT:  linalg.generic
// CHECK:      return %[[Y]]
#x = affine_map<(b, m, n, k) -> (b, m, k)>
#w = affine_map<(b, m, n, k) -> (n, k)>
#y = affine_map<(b, m, n, k) -> (b, m, n)>
#id = affine_map<(b, m, n) -> (b, m, n)>
func.func @residual_after_linear(%r: tensor<1x1x8xf32>, %x: tensor<1x1x4xf32>, %w: tensor<8x4xf32>) -> tensor<1x1x8xf32> {
  %zero = arith.constant 0.0 : f32
  %empty = tensor.empty() : tensor<1x1x8xf32>
  %fill = linalg.fill ins(%zero : f32) outs(%empty : tensor<1x1x8xf32>) -> tensor<1x1x8xf32>
  %y = linalg.generic {indexing_maps = [#x, #w, #y], iterator_types = ["parallel", "parallel", "parallel", "reduction"]}
      ins(%x, %w : tensor<1x1x4xf32>, tensor<8x4xf32>) outs(%fill : tensor<1x1x8xf32>) {
  ^bb0(%a: f32, %b: f32, %c: f32):
    %p = arith.mulf %a, %b : f32
    %s = arith.addf %c, %p : f32
    linalg.yield %s : f32
  } -> tensor<1x1x8xf32>
  %h = linalg.generic {indexing_maps = [#id, #id, #id], iterator_types = ["parallel", "parallel", "parallel"]}
      ins(%r, %y : tensor<1x1x8xf32>, tensor<1x1x8xf32>) outs(%empty : tensor<1x1x8xf32>) {
  ^bb0(%a: f32, %b: f32, %c: f32):
    %s = arith.addf %a, %b : f32
    linalg.yield %s : f32
  } -> tensor<1x1x8xf32>
  return %h : tensor<1x1x8xf32>
}

// -----

// The contraction on the left of the addition, a named matmul.
// CHECK-LABEL: func.func @matmul_plus_residual
// CHECK-SAME: (%[[R:[a-z0-9]+]]: tensor<4x8xf32>, %[[A:[a-z0-9]+]]: tensor<4x3xf32>, %[[B:[a-z0-9]+]]: tensor<3x8xf32>)
// CHECK:      %[[Y:.+]] = linalg.matmul ins(%[[A]], %[[B]] : tensor<4x3xf32>, tensor<3x8xf32>) outs(%[[R]] : tensor<4x8xf32>)
// CHECK-NEXT: return %[[Y]]
#id2 = affine_map<(i, j) -> (i, j)>
func.func @matmul_plus_residual(%r: tensor<4x8xf32>, %a: tensor<4x3xf32>, %b: tensor<3x8xf32>) -> tensor<4x8xf32> {
  %zero = arith.constant 0.0 : f32
  %empty = tensor.empty() : tensor<4x8xf32>
  %fill = linalg.fill ins(%zero : f32) outs(%empty : tensor<4x8xf32>) -> tensor<4x8xf32>
  %y = linalg.matmul ins(%a, %b : tensor<4x3xf32>, tensor<3x8xf32>) outs(%fill : tensor<4x8xf32>) -> tensor<4x8xf32>
  %h = linalg.generic {indexing_maps = [#id2, #id2, #id2], iterator_types = ["parallel", "parallel"]}
      ins(%y, %r : tensor<4x8xf32>, tensor<4x8xf32>) outs(%empty : tensor<4x8xf32>) {
  ^bb0(%p: f32, %q: f32, %c: f32):
    %s = arith.addf %q, %p : f32
    linalg.yield %s : f32
  } -> tensor<4x8xf32>
  return %h : tensor<4x8xf32>
}

// -----

// Left alone: the product has another use (it would then hold r + product).
// CHECK-LABEL: func.func @product_used_twice
// CHECK:      %[[F:.+]] = linalg.fill
// CHECK:      %[[Y:.+]] = linalg.matmul {{.*}} outs(%[[F]] : tensor<4x8xf32>)
// CHECK:      %[[H:.+]] = linalg.generic {{.*}} ins(%[[Y]], %{{.*}} : tensor<4x8xf32>, tensor<4x8xf32>)
// CHECK:      return %[[H]], %[[Y]]
#id3 = affine_map<(i, j) -> (i, j)>
func.func @product_used_twice(%r: tensor<4x8xf32>, %a: tensor<4x3xf32>, %b: tensor<3x8xf32>) -> (tensor<4x8xf32>, tensor<4x8xf32>) {
  %zero = arith.constant 0.0 : f32
  %empty = tensor.empty() : tensor<4x8xf32>
  %fill = linalg.fill ins(%zero : f32) outs(%empty : tensor<4x8xf32>) -> tensor<4x8xf32>
  %y = linalg.matmul ins(%a, %b : tensor<4x3xf32>, tensor<3x8xf32>) outs(%fill : tensor<4x8xf32>) -> tensor<4x8xf32>
  %h = linalg.generic {indexing_maps = [#id3, #id3, #id3], iterator_types = ["parallel", "parallel"]}
      ins(%y, %r : tensor<4x8xf32>, tensor<4x8xf32>) outs(%empty : tensor<4x8xf32>) {
  ^bb0(%p: f32, %q: f32, %c: f32):
    %s = arith.addf %p, %q : f32
    linalg.yield %s : f32
  } -> tensor<4x8xf32>
  return %h, %y : tensor<4x8xf32>, tensor<4x8xf32>
}

// -----

// Left alone: the accumulator starts at a bias, not zero.
// CHECK-LABEL: func.func @bias_started
// CHECK:      linalg.matmul
// CHECK:      linalg.generic
#id4 = affine_map<(i, j) -> (i, j)>
func.func @bias_started(%r: tensor<4x8xf32>, %a: tensor<4x3xf32>, %b: tensor<3x8xf32>) -> tensor<4x8xf32> {
  %one = arith.constant 1.0 : f32
  %empty = tensor.empty() : tensor<4x8xf32>
  %fill = linalg.fill ins(%one : f32) outs(%empty : tensor<4x8xf32>) -> tensor<4x8xf32>
  %y = linalg.matmul ins(%a, %b : tensor<4x3xf32>, tensor<3x8xf32>) outs(%fill : tensor<4x8xf32>) -> tensor<4x8xf32>
  %h = linalg.generic {indexing_maps = [#id4, #id4, #id4], iterator_types = ["parallel", "parallel"]}
      ins(%y, %r : tensor<4x8xf32>, tensor<4x8xf32>) outs(%empty : tensor<4x8xf32>) {
  ^bb0(%p: f32, %q: f32, %c: f32):
    %s = arith.addf %p, %q : f32
    linalg.yield %s : f32
  } -> tensor<4x8xf32>
  return %h : tensor<4x8xf32>
}

// -----

// Left alone: the residual is computed after the contraction (it would not dominate its use).
// CHECK-LABEL: func.func @residual_defined_later
// CHECK:      %[[Y:.+]] = linalg.matmul
// CHECK:      %[[R:.+]] = linalg.generic {{.*}} ins(%{{.*}} : tensor<4x8xf32>)
// CHECK:      linalg.generic {{.*}} ins(%[[Y]], %[[R]] : tensor<4x8xf32>, tensor<4x8xf32>)
#id5 = affine_map<(i, j) -> (i, j)>
func.func @residual_defined_later(%t: tensor<4x8xf32>, %a: tensor<4x3xf32>, %b: tensor<3x8xf32>) -> tensor<4x8xf32> {
  %zero = arith.constant 0.0 : f32
  %empty = tensor.empty() : tensor<4x8xf32>
  %fill = linalg.fill ins(%zero : f32) outs(%empty : tensor<4x8xf32>) -> tensor<4x8xf32>
  %y = linalg.matmul ins(%a, %b : tensor<4x3xf32>, tensor<3x8xf32>) outs(%fill : tensor<4x8xf32>) -> tensor<4x8xf32>
  %r = linalg.generic {indexing_maps = [#id5, #id5], iterator_types = ["parallel", "parallel"]}
      ins(%t : tensor<4x8xf32>) outs(%empty : tensor<4x8xf32>) {
  ^bb0(%p: f32, %c: f32):
    %s = math.exp %p : f32
    linalg.yield %s : f32
  } -> tensor<4x8xf32>
  %h = linalg.generic {indexing_maps = [#id5, #id5, #id5], iterator_types = ["parallel", "parallel"]}
      ins(%y, %r : tensor<4x8xf32>, tensor<4x8xf32>) outs(%empty : tensor<4x8xf32>) {
  ^bb0(%p: f32, %q: f32, %c: f32):
    %s = arith.addf %p, %q : f32
    linalg.yield %s : f32
  } -> tensor<4x8xf32>
  return %h : tensor<4x8xf32>
}

// -----

// Left alone: a subtraction, and an addition that broadcasts (a bias row).
// CHECK-LABEL: func.func @not_a_plain_addition
// CHECK:      linalg.matmul
// CHECK:      arith.subf
// CHECK:      linalg.matmul
// CHECK:      linalg.generic
// CHECK:      arith.addf
#id6 = affine_map<(i, j) -> (i, j)>
#row = affine_map<(i, j) -> (j)>
func.func @not_a_plain_addition(%r: tensor<4x8xf32>, %bias: tensor<8xf32>, %a: tensor<4x3xf32>, %b: tensor<3x8xf32>) -> (tensor<4x8xf32>, tensor<4x8xf32>) {
  %zero = arith.constant 0.0 : f32
  %empty = tensor.empty() : tensor<4x8xf32>
  %fill = linalg.fill ins(%zero : f32) outs(%empty : tensor<4x8xf32>) -> tensor<4x8xf32>
  %y = linalg.matmul ins(%a, %b : tensor<4x3xf32>, tensor<3x8xf32>) outs(%fill : tensor<4x8xf32>) -> tensor<4x8xf32>
  %d = linalg.generic {indexing_maps = [#id6, #id6, #id6], iterator_types = ["parallel", "parallel"]}
      ins(%r, %y : tensor<4x8xf32>, tensor<4x8xf32>) outs(%empty : tensor<4x8xf32>) {
  ^bb0(%p: f32, %q: f32, %c: f32):
    %s = arith.subf %p, %q : f32
    linalg.yield %s : f32
  } -> tensor<4x8xf32>
  %fill2 = linalg.fill ins(%zero : f32) outs(%empty : tensor<4x8xf32>) -> tensor<4x8xf32>
  %y2 = linalg.matmul ins(%a, %b : tensor<4x3xf32>, tensor<3x8xf32>) outs(%fill2 : tensor<4x8xf32>) -> tensor<4x8xf32>
  %e = linalg.generic {indexing_maps = [#row, #id6, #id6], iterator_types = ["parallel", "parallel"]}
      ins(%bias, %y2 : tensor<8xf32>, tensor<4x8xf32>) outs(%empty : tensor<4x8xf32>) {
  ^bb0(%p: f32, %q: f32, %c: f32):
    %s = arith.addf %p, %q : f32
    linalg.yield %s : f32
  } -> tensor<4x8xf32>
  return %d, %e : tensor<4x8xf32>, tensor<4x8xf32>
}

// -----

// A decode linear over quantized blocks is not a contraction, but it only adds terms to its
// zero-filled accumulator: the residual becomes its accumulator's start.
// CHECK-LABEL: func.func @residual_after_quantized_linear
// CHECK-SAME: (%[[R:[a-z0-9]+]]: tensor<1x3xf32>,
// CHECK-NOT:  linalg.fill
// CHECK:      %[[Y:.+]] = linalg.generic {{.*}} outs(%[[R]] : tensor<1x3xf32>)
// CHECK-NOT:  linalg.generic
// CHECK:      return %[[Y]]
#x = affine_map<(m, n, b, j) -> (m, b, j)>
#q = affine_map<(m, n, b, j) -> (n, b, j)>
#d = affine_map<(m, n, b, j) -> (n, b)>
#y = affine_map<(m, n, b, j) -> (m, n)>
#e = affine_map<(m, n) -> (m, n)>
func.func @residual_after_quantized_linear(%r: tensor<1x3xf32>, %x: tensor<1x2x16xf32>, %qs: tensor<3x2x16xi8>, %d: tensor<3x2xf16>) -> tensor<1x3xf32> {
  %zero = arith.constant 0.0 : f32
  %ey = tensor.empty() : tensor<1x3xf32>
  %fy = linalg.fill ins(%zero : f32) outs(%ey : tensor<1x3xf32>) -> tensor<1x3xf32>
  %y = linalg.generic {indexing_maps = [#x, #q, #d, #y], iterator_types = ["parallel", "parallel", "reduction", "reduction"]}
      ins(%x, %qs, %d : tensor<1x2x16xf32>, tensor<3x2x16xi8>, tensor<3x2xf16>) outs(%fy : tensor<1x3xf32>) {
  ^bb0(%a: f32, %byte: i8, %scale: f16, %acc: f32):
    %q = arith.sitofp %byte : i8 to f32
    %s = arith.extf %scale : f16 to f32
    %w = arith.mulf %s, %q : f32
    %p = arith.mulf %a, %w : f32
    %sum = arith.addf %acc, %p : f32
    linalg.yield %sum : f32
  } -> tensor<1x3xf32>
  %h = linalg.generic {indexing_maps = [#e, #e, #e], iterator_types = ["parallel", "parallel"]}
      ins(%r, %y : tensor<1x3xf32>, tensor<1x3xf32>) outs(%ey : tensor<1x3xf32>) {
  ^bb0(%a: f32, %b: f32, %o: f32):
    %s = arith.addf %a, %b : f32
    linalg.yield %s : f32
  } -> tensor<1x3xf32>
  return %h : tensor<1x3xf32>
}

// -----

// A reduction whose body uses its accumulator for more than the sum (here a running maximum) is
// not a sum: the residual stays a separate addition.
// CHECK-LABEL: func.func @reduction_not_a_sum
// CHECK:      linalg.fill
// CHECK:      linalg.generic {{.*}} iterator_types = ["parallel", "reduction"]
// CHECK:      linalg.generic {{.*}} iterator_types = ["parallel"]
#in = affine_map<(m, k) -> (m, k)>
#out = affine_map<(m, k) -> (m)>
#id = affine_map<(m) -> (m)>
func.func @reduction_not_a_sum(%r: tensor<4xf32>, %x: tensor<4x8xf32>) -> tensor<4xf32> {
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<4xf32>
  %f = linalg.fill ins(%zero : f32) outs(%e : tensor<4xf32>) -> tensor<4xf32>
  %m = linalg.generic {indexing_maps = [#in, #out], iterator_types = ["parallel", "reduction"]}
      ins(%x : tensor<4x8xf32>) outs(%f : tensor<4xf32>) {
  ^bb0(%a: f32, %acc: f32):
    %s = arith.maximumf %acc, %a : f32
    linalg.yield %s : f32
  } -> tensor<4xf32>
  %h = linalg.generic {indexing_maps = [#id, #id, #id], iterator_types = ["parallel"]}
      ins(%r, %m : tensor<4xf32>, tensor<4xf32>) outs(%e : tensor<4xf32>) {
  ^bb0(%a: f32, %b: f32, %o: f32):
    %s = arith.addf %a, %b : f32
    linalg.yield %s : f32
  } -> tensor<4xf32>
  return %h : tensor<4xf32>
}
