// RUN: kiln-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(kiln-fuse-elementwise))' | FileCheck %s

#id = affine_map<(d0, d1) -> (d0, d1)>
// Elementwise into elementwise: fused into one generic.
// CHECK-LABEL: func.func @chain
// CHECK: linalg.generic
// CHECK: math.exp
// CHECK: arith.addf
// CHECK-NOT: linalg.generic
func.func @chain(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %e = tensor.empty() : tensor<4x8xf32>
  %a = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel"]}
      ins(%x : tensor<4x8xf32>) outs(%e : tensor<4x8xf32>) {
  ^bb0(%in: f32, %out: f32):
    %v = math.exp %in : f32
    linalg.yield %v : f32
  } -> tensor<4x8xf32>
  %b = linalg.generic {indexing_maps = [#id, #id, #id], iterator_types = ["parallel", "parallel"]}
      ins(%a, %x : tensor<4x8xf32>, tensor<4x8xf32>) outs(%e : tensor<4x8xf32>) {
  ^bb0(%in: f32, %in2: f32, %out: f32):
    %v = arith.addf %in, %in2 : f32
    linalg.yield %v : f32
  } -> tensor<4x8xf32>
  return %b : tensor<4x8xf32>
}

// -----

#id = affine_map<(d0, d1) -> (d0, d1)>
#lhs = affine_map<(d0, d1, d2) -> (d0, d2)>
#rhs = affine_map<(d0, d1, d2) -> (d1, d2)>
#out = affine_map<(d0, d1, d2) -> (d0, d1)>
// An activation feeding a contraction is read once per output column: fusing would recompute it
// N times, so the contraction stays a pure mul-add.
// CHECK-LABEL: func.func @no_recompute_into_contraction
// CHECK: linalg.generic
// CHECK: math.exp
// CHECK: linalg.generic
// CHECK-NEXT: ^bb0
// CHECK-NEXT: arith.mulf
// CHECK-NEXT: arith.addf
func.func @no_recompute_into_contraction(%x: tensor<4x8xf32>, %w: tensor<16x8xf32>, %acc: tensor<4x16xf32>) -> tensor<4x16xf32> {
  %e = tensor.empty() : tensor<4x8xf32>
  %a = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel"]}
      ins(%x : tensor<4x8xf32>) outs(%e : tensor<4x8xf32>) {
  ^bb0(%in: f32, %out: f32):
    %v = math.exp %in : f32
    linalg.yield %v : f32
  } -> tensor<4x8xf32>
  %y = linalg.generic {indexing_maps = [#lhs, #rhs, #out], iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%a, %w : tensor<4x8xf32>, tensor<16x8xf32>) outs(%acc : tensor<4x16xf32>) {
  ^bb0(%in: f32, %in2: f32, %out: f32):
    %m = arith.mulf %in, %in2 : f32
    %s = arith.addf %out, %m : f32
    linalg.yield %s : f32
  } -> tensor<4x16xf32>
  return %y : tensor<4x16xf32>
}

// -----

#id = affine_map<(d0, d1) -> (d0, d1)>
#row = affine_map<(d0, d1) -> (d0)>
// A reduction that reads each element once (a row sum of squares) absorbs its producer.
// CHECK-LABEL: func.func @into_row_reduction
// CHECK: linalg.generic
// CHECK-SAME: iterator_types = ["parallel", "reduction"]
// CHECK: math.exp
// CHECK-NOT: linalg.generic
func.func @into_row_reduction(%x: tensor<4x8xf32>, %acc: tensor<4xf32>) -> tensor<4xf32> {
  %e = tensor.empty() : tensor<4x8xf32>
  %a = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel"]}
      ins(%x : tensor<4x8xf32>) outs(%e : tensor<4x8xf32>) {
  ^bb0(%in: f32, %out: f32):
    %v = math.exp %in : f32
    linalg.yield %v : f32
  } -> tensor<4x8xf32>
  %r = linalg.generic {indexing_maps = [#id, #row], iterator_types = ["parallel", "reduction"]}
      ins(%a : tensor<4x8xf32>) outs(%acc : tensor<4xf32>) {
  ^bb0(%in: f32, %out: f32):
    %s = arith.addf %out, %in : f32
    linalg.yield %s : f32
  } -> tensor<4xf32>
  return %r : tensor<4xf32>
}

// -----

#id = affine_map<(d0, d1) -> (d0, d1)>
// A producer with two uses is not duplicated into both consumers.
// CHECK-LABEL: func.func @two_uses
// CHECK-COUNT-3: linalg.generic
func.func @two_uses(%x: tensor<4x8xf32>) -> (tensor<4x8xf32>, tensor<4x8xf32>) {
  %e = tensor.empty() : tensor<4x8xf32>
  %a = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel"]}
      ins(%x : tensor<4x8xf32>) outs(%e : tensor<4x8xf32>) {
  ^bb0(%in: f32, %out: f32):
    %v = math.exp %in : f32
    linalg.yield %v : f32
  } -> tensor<4x8xf32>
  %b = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel"]}
      ins(%a : tensor<4x8xf32>) outs(%e : tensor<4x8xf32>) {
  ^bb0(%in: f32, %out: f32):
    %v = arith.negf %in : f32
    linalg.yield %v : f32
  } -> tensor<4x8xf32>
  %c = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel"]}
      ins(%a : tensor<4x8xf32>) outs(%e : tensor<4x8xf32>) {
  ^bb0(%in: f32, %out: f32):
    %v = math.sqrt %in : f32
    linalg.yield %v : f32
  } -> tensor<4x8xf32>
  return %b, %c : tensor<4x8xf32>, tensor<4x8xf32>
}

// -----

// A transpose only moves elements: it folds into an all-parallel consumer however often that reads
// it (here twice, at constant indices, as RoPE reads the two halves of the features). The consumer
// reads the transpose's source through the composed maps.
// CHECK-DAG: #[[$A:map[0-9]*]] = affine_map<(d0, d1, d2) -> (d1, 0, d2)>
// CHECK-DAG: #[[$B:map[0-9]*]] = affine_map<(d0, d1, d2) -> (d1, 1, d2)>
// CHECK-LABEL: func.func @transpose_into_halves
// CHECK-SAME: (%[[X:.+]]: tensor<3x2x8xf32>)
// CHECK-NOT: linalg.transpose
// CHECK: linalg.generic {indexing_maps = [#[[$A]], #[[$B]], #{{.+}}]
// CHECK-SAME: ins(%[[X]], %[[X]] : tensor<3x2x8xf32>, tensor<3x2x8xf32>)
// CHECK-NOT: linalg.transpose
#h0 = affine_map<(d0, d1, d2) -> (0, d1, d2)>
#h1 = affine_map<(d0, d1, d2) -> (1, d1, d2)>
#id3 = affine_map<(d0, d1, d2) -> (d0, d1, d2)>
func.func @transpose_into_halves(%x: tensor<3x2x8xf32>) -> tensor<2x3x8xf32> {
  %e = tensor.empty() : tensor<2x3x8xf32>
  %t = linalg.transpose ins(%x : tensor<3x2x8xf32>) outs(%e : tensor<2x3x8xf32>) permutation = [1, 0, 2]
  %y = linalg.generic {indexing_maps = [#h0, #h1, #id3], iterator_types = ["parallel", "parallel", "parallel"]}
      ins(%t, %t : tensor<2x3x8xf32>, tensor<2x3x8xf32>) outs(%e : tensor<2x3x8xf32>) {
  ^bb0(%a: f32, %b: f32, %out: f32):
    %v = arith.subf %a, %b : f32
    linalg.yield %v : f32
  } -> tensor<2x3x8xf32>
  return %y : tensor<2x3x8xf32>
}

// -----

// split_heads then RoPE's view of the features as halves: the expand_shape moves above the
// transpose (which then permutes [b, s, h, 2, f] -> [b, h, s, 2, f]), and the transpose folds into
// the rotation, which reads the projection [b, s, h*d] through views (canonicalize composes the two).
// CHECK-DAG: #[[$X0:map[0-9]*]] = affine_map<(d0, d1, d2, d3, d4) -> (d1, d3, d2, 0, d4)>
// CHECK-DAG: #[[$X1:map[0-9]*]] = affine_map<(d0, d1, d2, d3, d4) -> (d1, d3, d2, 1, d4)>
// CHECK-LABEL: func.func @split_heads_into_rope_halves
// CHECK-SAME: (%[[X:.+]]: tensor<1x5x64xf32>
// CHECK-NOT: linalg.transpose
// CHECK: %[[H:.+]] = tensor.expand_shape %[[X]] {{\[}}[0], [1], [2, 3]] output_shape [1, 5, 4, 16] : tensor<1x5x64xf32> into tensor<1x5x4x16xf32>
// CHECK: %[[V:.+]] = tensor.expand_shape %[[H]] {{\[}}[0], [1], [2], [3, 4]] output_shape [1, 5, 4, 2, 8] : tensor<1x5x4x16xf32> into tensor<1x5x4x2x8xf32>
// CHECK: linalg.generic {indexing_maps = [#[[$X0]], #[[$X1]], #{{.+}}, #{{.+}}]
// CHECK-SAME: ins(%[[V]], %[[V]], %{{.+}} : tensor<1x5x4x2x8xf32>, tensor<1x5x4x2x8xf32>, tensor<5x2x8xf32>)
// CHECK-NOT: linalg.transpose
#x0 = affine_map<(t, b, h, s, f) -> (b, h, s, 0, f)>
#x1 = affine_map<(t, b, h, s, f) -> (b, h, s, 1, f)>
#tab = affine_map<(t, b, h, s, f) -> (s, t, f)>
#out = affine_map<(t, b, h, s, f) -> (b, h, s, t, f)>
func.func @split_heads_into_rope_halves(%x: tensor<1x5x64xf32>, %sin: tensor<5x2x8xf32>) -> tensor<1x4x5x16xf32> {
  %heads = tensor.expand_shape %x [[0], [1], [2, 3]] output_shape [1, 5, 4, 16] : tensor<1x5x64xf32> into tensor<1x5x4x16xf32>
  %e = tensor.empty() : tensor<1x4x5x16xf32>
  %t = linalg.transpose ins(%heads : tensor<1x5x4x16xf32>) outs(%e : tensor<1x4x5x16xf32>) permutation = [0, 2, 1, 3]
  %halves = tensor.expand_shape %t [[0], [1], [2], [3, 4]] output_shape [1, 4, 5, 2, 8] : tensor<1x4x5x16xf32> into tensor<1x4x5x2x8xf32>
  %e5 = tensor.empty() : tensor<1x4x5x2x8xf32>
  %r = linalg.generic {indexing_maps = [#x0, #x1, #tab, #out], iterator_types = ["parallel", "parallel", "parallel", "parallel", "parallel"]}
      ins(%halves, %halves, %sin : tensor<1x4x5x2x8xf32>, tensor<1x4x5x2x8xf32>, tensor<5x2x8xf32>) outs(%e5 : tensor<1x4x5x2x8xf32>) {
  ^bb0(%a: f32, %b: f32, %s: f32, %out: f32):
    %m = arith.mulf %b, %s : f32
    %v = arith.subf %a, %m : f32
    linalg.yield %v : f32
  } -> tensor<1x4x5x2x8xf32>
  %y = tensor.collapse_shape %r [[0], [1], [2], [3, 4]] : tensor<1x4x5x2x8xf32> into tensor<1x4x5x16xf32>
  return %y : tensor<1x4x5x16xf32>
}

// -----

// A transpose is not folded into a contraction (which would no longer be GEMM-shaped), nor moved
// below a reshape whose consumer does not absorb it, nor into one of two consumers (it would be
// left to run for the other anyway).
// CHECK-LABEL: func.func @transposes_kept
// CHECK-COUNT-3: linalg.transpose
#lhs = affine_map<(d0, d1, d2) -> (d0, d2)>
#rhs = affine_map<(d0, d1, d2) -> (d1, d2)>
#mm = affine_map<(d0, d1, d2) -> (d0, d1)>
#id = affine_map<(d0, d1) -> (d0, d1)>
func.func @transposes_kept(%x: tensor<8x4xf32>, %w: tensor<16x8xf32>, %acc: tensor<4x16xf32>)
    -> (tensor<4x16xf32>, tensor<2x2x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>) {
  %e = tensor.empty() : tensor<4x8xf32>
  %t0 = linalg.transpose ins(%x : tensor<8x4xf32>) outs(%e : tensor<4x8xf32>) permutation = [1, 0]
  %mm = linalg.generic {indexing_maps = [#lhs, #rhs, #mm], iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%t0, %w : tensor<4x8xf32>, tensor<16x8xf32>) outs(%acc : tensor<4x16xf32>) {
  ^bb0(%a: f32, %b: f32, %out: f32):
    %m = arith.mulf %a, %b : f32
    %s = arith.addf %out, %m : f32
    linalg.yield %s : f32
  } -> tensor<4x16xf32>
  %t1 = linalg.transpose ins(%x : tensor<8x4xf32>) outs(%e : tensor<4x8xf32>) permutation = [1, 0]
  %v = tensor.expand_shape %t1 [[0, 1], [2]] output_shape [2, 2, 8] : tensor<4x8xf32> into tensor<2x2x8xf32>
  %t2 = linalg.transpose ins(%x : tensor<8x4xf32>) outs(%e : tensor<4x8xf32>) permutation = [1, 0]
  %n = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel"]}
      ins(%t2 : tensor<4x8xf32>) outs(%e : tensor<4x8xf32>) {
  ^bb0(%a: f32, %out: f32):
    %r = arith.negf %a : f32
    linalg.yield %r : f32
  } -> tensor<4x8xf32>
  %q = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel"]}
      ins(%t2 : tensor<4x8xf32>) outs(%e : tensor<4x8xf32>) {
  ^bb0(%a: f32, %out: f32):
    %r = math.sqrt %a : f32
    linalg.yield %r : f32
  } -> tensor<4x8xf32>
  return %mm, %v, %n, %q : tensor<4x16xf32>, tensor<2x2x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>
}
