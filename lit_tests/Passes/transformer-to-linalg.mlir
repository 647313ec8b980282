// RUN: kiln-opt %s --split-input-file --transformer-to-linalg | FileCheck %s
// RUN: kiln-opt %s --split-input-file --transformer-to-linalg | FileCheck %s --check-prefix=NOT-LEFT
// Upstream mlir-opt knows no `transformer` op: it parses and verifies every lowered split.
// RUN: kiln-opt %s --split-input-file --transformer-to-linalg | mlir-opt --split-input-file --verify-each > /dev/null
// A linear that reads quantized blocks leaves its dequantize without users; after the next
// canonicalization no f32 copy of the weight remains (FUSED).
// RUN: kiln-opt %s --split-input-file --transformer-to-linalg --canonicalize | FileCheck %s --check-prefix=FUSED

// Nothing of the dialect survives the lowering, in any split.
// NOT-LEFT-NOT: transformer.

// The lowering of each `transformer` op (and its variants) to linalg on
// tensors: the loops (indexing maps and iterator types) of each linalg.generic,
// the reshapes/transposes/slices, and the scalar ops that carry the semantics.

//===----------------------------------------------------------------------===//
// embedding: a gather, one tensor.extract per output element
//===----------------------------------------------------------------------===//

// CHECK-DAG: #[[$IDS3:map[0-9]*]] = affine_map<(d0, d1, d2) -> (d0, d1)>
// CHECK-DAG: #[[$ID3:map[0-9]*]] = affine_map<(d0, d1, d2) -> (d0, d1, d2)>
// CHECK-LABEL: func.func @embedding
// CHECK-SAME: (%[[TABLE:[a-z0-9]+]]: tensor<100x16xf32>, %[[IDS:[a-z0-9]+]]: tensor<2x7xi64>)
// CHECK: %[[INIT:.+]] = tensor.empty() : tensor<2x7x16xf32>
// CHECK: %[[R:.+]] = linalg.generic {indexing_maps = [#[[$IDS3]], #[[$ID3]]], iterator_types = ["parallel", "parallel", "parallel"]}
// CHECK-SAME: ins(%[[IDS]] : tensor<2x7xi64>) outs(%[[INIT]] : tensor<2x7x16xf32>)
// CHECK: ^bb0(%[[ID:.+]]: i64, %{{.+}}: f32):
// CHECK: %[[ROW:.+]] = arith.index_cast %[[ID]] : i64 to index
// CHECK: %[[COL:.+]] = linalg.index 2 : index
// CHECK: %[[V:.+]] = tensor.extract %[[TABLE]][%[[ROW]], %[[COL]]] : tensor<100x16xf32>
// CHECK: linalg.yield %[[V]] : f32
// CHECK: return %[[R]]
func.func @embedding(%table: tensor<100x16xf32>, %ids: tensor<2x7xi64>) -> tensor<2x7x16xf32> {
  %h = transformer.embedding %table[%ids] : tensor<100x16xf32>, tensor<2x7xi64> -> tensor<2x7x16xf32>
  return %h : tensor<2x7x16xf32>
}

// -----

// CHECK-LABEL: func.func @embedding_dynamic
// CHECK-SAME: (%[[TABLE:[a-z0-9]+]]: tensor<?x?xbf16>, %[[IDS:[a-z0-9]+]]: tensor<?xi32>)
// CHECK-DAG: %[[N:.+]] = tensor.dim %[[IDS]], %{{.+}} : tensor<?xi32>
// CHECK-DAG: %[[D:.+]] = tensor.dim %[[TABLE]], %{{.+}} : tensor<?x?xbf16>
// CHECK: %[[INIT:.+]] = tensor.empty(%[[N]], %[[D]]) : tensor<?x?xbf16>
// CHECK: linalg.generic
// CHECK-SAME: ins(%[[IDS]] : tensor<?xi32>) outs(%[[INIT]] : tensor<?x?xbf16>)
// CHECK: arith.index_cast %{{.+}} : i32 to index
// CHECK: tensor.extract %[[TABLE]]
func.func @embedding_dynamic(%table: tensor<?x?xbf16>, %ids: tensor<?xi32>) -> tensor<?x?xbf16> {
  %h = transformer.embedding %table[%ids] : tensor<?x?xbf16>, tensor<?xi32> -> tensor<?x?xbf16>
  return %h : tensor<?x?xbf16>
}

//===----------------------------------------------------------------------===//
// linear: x[..., k] * w[n, k], the bias initializes the accumulator
//===----------------------------------------------------------------------===//

// -----

// CHECK-DAG: #[[$BIAS:map[0-9]*]] = affine_map<(d0, d1, d2) -> (d2)>
// CHECK-DAG: #[[$ID3:map[0-9]*]] = affine_map<(d0, d1, d2) -> (d0, d1, d2)>
// CHECK-DAG: #[[$X:map[0-9]*]] = affine_map<(d0, d1, d2, d3) -> (d0, d1, d3)>
// CHECK-DAG: #[[$W:map[0-9]*]] = affine_map<(d0, d1, d2, d3) -> (d2, d3)>
// CHECK-DAG: #[[$OUT:map[0-9]*]] = affine_map<(d0, d1, d2, d3) -> (d0, d1, d2)>
// CHECK-LABEL: func.func @linear_bias
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<2x7x64xf32>, %[[W:[a-z0-9]+]]: tensor<96x64xf32>, %[[B:[a-z0-9]+]]: tensor<96xf32>)
// CHECK-NOT: linalg.fill
// CHECK: %[[EMPTY:.+]] = tensor.empty() : tensor<2x7x96xf32>
// CHECK: %[[ACC:.+]] = linalg.generic {indexing_maps = [#[[$BIAS]], #[[$ID3]]], iterator_types = ["parallel", "parallel", "parallel"]}
// CHECK-SAME: ins(%[[B]] : tensor<96xf32>) outs(%[[EMPTY]] : tensor<2x7x96xf32>)
// CHECK: %[[R:.+]] = linalg.generic {indexing_maps = [#[[$X]], #[[$W]], #[[$OUT]]], iterator_types = ["parallel", "parallel", "parallel", "reduction"]}
// CHECK-SAME: ins(%[[X]], %[[W]] : tensor<2x7x64xf32>, tensor<96x64xf32>) outs(%[[ACC]] : tensor<2x7x96xf32>)
// CHECK: ^bb0(%[[A:.+]]: f32, %[[BW:.+]]: f32, %[[O:.+]]: f32):
// CHECK: %[[P:.+]] = arith.mulf %[[A]], %[[BW]] : f32
// CHECK: %[[S:.+]] = arith.addf %[[O]], %[[P]] : f32
// CHECK: linalg.yield %[[S]]
// CHECK: return %[[R]]
func.func @linear_bias(%x: tensor<2x7x64xf32>, %w: tensor<96x64xf32>, %b: tensor<96xf32>) -> tensor<2x7x96xf32> {
  %y = transformer.linear %x, %w, %b : (tensor<2x7x64xf32>, tensor<96x64xf32>, tensor<96xf32>) -> tensor<2x7x96xf32>
  return %y : tensor<2x7x96xf32>
}

// -----

// Without bias the accumulator is a zero fill; bf16 operands accumulate in f32
// and the result is rounded back once.
// CHECK-DAG: #[[$X:map[0-9]*]] = affine_map<(d0, d1, d2) -> (d0, d2)>
// CHECK-DAG: #[[$W:map[0-9]*]] = affine_map<(d0, d1, d2) -> (d1, d2)>
// CHECK-DAG: #[[$OUT:map[0-9]*]] = affine_map<(d0, d1, d2) -> (d0, d1)>
// CHECK-LABEL: func.func @linear_no_bias_bf16_dynamic
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<?x64xbf16>, %[[W:[a-z0-9]+]]: tensor<96x64xbf16>)
// CHECK: %[[M:.+]] = tensor.dim %[[X]], %{{.+}} : tensor<?x64xbf16>
// CHECK: %[[ZERO:.+]] = arith.constant 0.000000e+00 : f32
// CHECK: %[[EMPTY:.+]] = tensor.empty(%[[M]]) : tensor<?x96xf32>
// CHECK: %[[FILL:.+]] = linalg.fill ins(%[[ZERO]] : f32) outs(%[[EMPTY]] : tensor<?x96xf32>)
// CHECK: %[[ACC:.+]] = linalg.generic {indexing_maps = [#[[$X]], #[[$W]], #[[$OUT]]], iterator_types = ["parallel", "parallel", "reduction"]}
// CHECK-SAME: ins(%[[X]], %[[W]] : tensor<?x64xbf16>, tensor<96x64xbf16>) outs(%[[FILL]] : tensor<?x96xf32>)
// CHECK: arith.extf %{{.+}} : bf16 to f32
// CHECK: arith.extf %{{.+}} : bf16 to f32
// CHECK: arith.mulf
// CHECK: arith.addf
// CHECK: %[[R:.+]] = linalg.generic
// CHECK-SAME: ins(%[[ACC]] : tensor<?x96xf32>) outs(%{{.+}} : tensor<?x96xbf16>)
// CHECK: arith.truncf %{{.+}} : f32 to bf16
// CHECK: return %[[R]] : tensor<?x96xbf16>
func.func @linear_no_bias_bf16_dynamic(%x: tensor<?x64xbf16>, %w: tensor<96x64xbf16>) -> tensor<?x96xbf16> {
  %y = transformer.linear %x, %w : (tensor<?x64xbf16>, tensor<96x64xbf16>) -> tensor<?x96xbf16>
  return %y : tensor<?x96xbf16>
}

//===----------------------------------------------------------------------===//
// dequantize: GGUF blocks to f32 over loops [n, block, half, j]; a decode-shaped
// linear over a dequantize reads the blocks in its own reduction
//===----------------------------------------------------------------------===//

// -----

// q8_0: the 32 signed bytes of a block are viewed as two halves of 16, w = d * q.
// CHECK-DAG: #[[$ID4:map[0-9]*]] = affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>
// CHECK-DAG: #[[$BLK:map[0-9]*]] = affine_map<(d0, d1, d2, d3) -> (d0, d1)>
// CHECK-LABEL: func.func @dequantize_q8_0
// CHECK-SAME: (%[[Q:[a-z0-9]+]]: tensor<64x2x32xi8>, %[[D:[a-z0-9]+]]: tensor<64x2xf16>)
// CHECK: %[[INIT:.+]] = tensor.empty() : tensor<64x2x2x16xf32>
// CHECK: %[[QB:.+]] = tensor.expand_shape %[[Q]] {{\[}}[0], [1], [2, 3]] output_shape [64, 2, 2, 16] : tensor<64x2x32xi8> into tensor<64x2x2x16xi8>
// CHECK: %[[W:.+]] = linalg.generic {indexing_maps = [#[[$ID4]], #[[$BLK]], #[[$ID4]]], iterator_types = ["parallel", "parallel", "parallel", "parallel"]}
// CHECK-SAME: ins(%[[QB]], %[[D]] : tensor<64x2x2x16xi8>, tensor<64x2xf16>) outs(%[[INIT]] : tensor<64x2x2x16xf32>)
// CHECK: ^bb0(%[[QV:.+]]: i8, %[[DV:.+]]: f16, %{{.+}}: f32):
// CHECK-NOT: arith.extui
// CHECK: %[[QF:.+]] = arith.sitofp %[[QV]] : i8 to f32
// CHECK: %[[DF:.+]] = arith.extf %[[DV]] : f16 to f32
// CHECK: %[[Y:.+]] = arith.mulf %[[DF]], %[[QF]] : f32
// CHECK-NEXT: linalg.yield %[[Y]] : f32
// CHECK: %[[R:.+]] = tensor.collapse_shape %[[W]] {{\[}}[0], [1, 2, 3]] : tensor<64x2x2x16xf32> into tensor<64x64xf32>
// CHECK: return %[[R]]
func.func @dequantize_q8_0(%qs: tensor<64x2x32xi8>, %d: tensor<64x2xf16>) -> tensor<64x64xf32> {
  %w = transformer.dequantize %qs, %d {format = "q8_0"} : (tensor<64x2x32xi8>, tensor<64x2xf16>) -> tensor<64x64xf32>
  return %w : tensor<64x64xf32>
}

// -----

// q4_0: byte j of a block holds value j (low nibble) and j + 16 (high nibble);
// the nibble shift is an operand [0, 4] read at the half, w = d * (q - 8).
// CHECK-DAG: #[[$DATA:map[0-9]*]] = affine_map<(d0, d1, d2, d3) -> (d0, d1, d3)>
// CHECK-DAG: #[[$HALF:map[0-9]*]] = affine_map<(d0, d1, d2, d3) -> (d2)>
// CHECK-DAG: #[[$BLK:map[0-9]*]] = affine_map<(d0, d1, d2, d3) -> (d0, d1)>
// CHECK-DAG: #[[$ID4:map[0-9]*]] = affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>
// CHECK-LABEL: func.func @dequantize_q4_0
// CHECK-SAME: (%[[Q:[a-z0-9]+]]: tensor<64x2x16xi8>, %[[D:[a-z0-9]+]]: tensor<64x2xf16>)
// CHECK-NOT: tensor.expand_shape
// CHECK: %[[SHIFTS:.+]] = arith.constant dense<[0, 4]> : tensor<2xi32>
// CHECK: %[[W:.+]] = linalg.generic {indexing_maps = [#[[$DATA]], #[[$HALF]], #[[$BLK]], #[[$ID4]]], iterator_types = ["parallel", "parallel", "parallel", "parallel"]}
// CHECK-SAME: ins(%[[Q]], %[[SHIFTS]], %[[D]] : tensor<64x2x16xi8>, tensor<2xi32>, tensor<64x2xf16>) outs(%{{.+}} : tensor<64x2x2x16xf32>)
// CHECK: ^bb0(%[[QV:.+]]: i8, %[[SH:.+]]: i32, %[[DV:.+]]: f16, %{{.+}}: f32):
// CHECK-DAG: %[[C15:.+]] = arith.constant 15 : i32
// CHECK-DAG: %[[QI:.+]] = arith.extui %[[QV]] : i8 to i32
// CHECK: %[[S:.+]] = arith.shrui %[[QI]], %[[SH]] : i32
// CHECK: %[[N:.+]] = arith.andi %[[S]], %[[C15]] : i32
// CHECK: %[[C8:.+]] = arith.constant 8 : i32
// CHECK: %[[C:.+]] = arith.subi %[[N]], %[[C8]] : i32
// CHECK: %[[QF:.+]] = arith.sitofp %[[C]] : i32 to f32
// CHECK: %[[DF:.+]] = arith.extf %[[DV]] : f16 to f32
// CHECK: %[[Y:.+]] = arith.mulf %[[DF]], %[[QF]] : f32
// CHECK-NEXT: linalg.yield %[[Y]] : f32
// CHECK: %[[R:.+]] = tensor.collapse_shape %[[W]] {{\[}}[0], [1, 2, 3]] : tensor<64x2x2x16xf32> into tensor<64x64xf32>
// CHECK: return %[[R]]
func.func @dequantize_q4_0(%qs: tensor<64x2x16xi8>, %d: tensor<64x2xf16>) -> tensor<64x64xf32> {
  %w = transformer.dequantize %qs, %d {format = "q4_0"} : (tensor<64x2x16xi8>, tensor<64x2xf16>) -> tensor<64x64xf32>
  return %w : tensor<64x64xf32>
}

// -----

// q4_1 with a dynamic N: unsigned nibbles, w = d * q + m.
// CHECK-DAG: #[[$DATA:map[0-9]*]] = affine_map<(d0, d1, d2, d3) -> (d0, d1, d3)>
// CHECK-DAG: #[[$HALF:map[0-9]*]] = affine_map<(d0, d1, d2, d3) -> (d2)>
// CHECK-DAG: #[[$BLK:map[0-9]*]] = affine_map<(d0, d1, d2, d3) -> (d0, d1)>
// CHECK-DAG: #[[$ID4:map[0-9]*]] = affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>
// CHECK-LABEL: func.func @dequantize_q4_1_dynamic
// CHECK-SAME: (%[[Q:[a-z0-9]+]]: tensor<?x2x16xi8>, %[[D:[a-z0-9]+]]: tensor<?x2xf16>, %[[M:[a-z0-9]+]]: tensor<?x2xf16>)
// CHECK: %[[N:.+]] = tensor.dim %[[Q]], %{{.+}} : tensor<?x2x16xi8>
// CHECK: %[[INIT:.+]] = tensor.empty(%[[N]]) : tensor<?x2x2x16xf32>
// CHECK: %[[SHIFTS:.+]] = arith.constant dense<[0, 4]> : tensor<2xi32>
// CHECK: %[[W:.+]] = linalg.generic {indexing_maps = [#[[$DATA]], #[[$HALF]], #[[$BLK]], #[[$BLK]], #[[$ID4]]], iterator_types = ["parallel", "parallel", "parallel", "parallel"]}
// CHECK-SAME: ins(%[[Q]], %[[SHIFTS]], %[[D]], %[[M]] : tensor<?x2x16xi8>, tensor<2xi32>, tensor<?x2xf16>, tensor<?x2xf16>) outs(%[[INIT]] : tensor<?x2x2x16xf32>)
// CHECK: ^bb0(%[[QV:.+]]: i8, %[[SH:.+]]: i32, %[[DV:.+]]: f16, %[[MV:.+]]: f16, %{{.+}}: f32):
// CHECK: %[[QI:.+]] = arith.extui %[[QV]] : i8 to i32
// CHECK: %[[S:.+]] = arith.shrui %[[QI]], %[[SH]] : i32
// CHECK: %[[NB:.+]] = arith.andi %[[S]], %{{.+}} : i32
// CHECK-NOT: arith.subi
// CHECK: %[[QF:.+]] = arith.uitofp %[[NB]] : i32 to f32
// CHECK: %[[DF:.+]] = arith.extf %[[DV]] : f16 to f32
// CHECK: %[[DQ:.+]] = arith.mulf %[[DF]], %[[QF]] : f32
// CHECK: %[[MF:.+]] = arith.extf %[[MV]] : f16 to f32
// CHECK: %[[Y:.+]] = arith.addf %[[DQ]], %[[MF]] : f32
// CHECK-NEXT: linalg.yield %[[Y]] : f32
// CHECK: %[[R:.+]] = tensor.collapse_shape %[[W]] {{\[}}[0], [1, 2, 3]] : tensor<?x2x2x16xf32> into tensor<?x64xf32>
// CHECK: return %[[R]]
func.func @dequantize_q4_1_dynamic(%qs: tensor<?x2x16xi8>, %d: tensor<?x2xf16>, %m: tensor<?x2xf16>) -> tensor<?x64xf32> {
  %w = transformer.dequantize %qs, %d, %m {format = "q4_1"} : (tensor<?x2x16xi8>, tensor<?x2xf16>, tensor<?x2xf16>) -> tensor<?x64xf32>
  return %w : tensor<?x64xf32>
}

// -----

// A decode step (one row) over a q4_1 weight: ONE generic over loops [b, s, n, block, j] that
// reduces over the blocks and reads the i8 bytes, scales and mins directly. x is viewed as
// [1, 1, K/32, 2, 16] and sliced into the halves that meet the low and high nibbles of the same
// 16 bytes; each step adds x_lo * w_lo + x_hi * w_hi to the sum. (The dequantize itself, left
// without users, is erased by the next canonicalization: see FUSED.)
// CHECK-DAG: #[[$X:map[0-9]*]] = affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d3, d4)>
// CHECK-DAG: #[[$DATA:map[0-9]*]] = affine_map<(d0, d1, d2, d3, d4) -> (d2, d3, d4)>
// CHECK-DAG: #[[$BLK:map[0-9]*]] = affine_map<(d0, d1, d2, d3, d4) -> (d2, d3)>
// CHECK-DAG: #[[$OUT:map[0-9]*]] = affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d2)>
// CHECK-LABEL: func.func @linear_dequantized_decode
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<1x1x64xf32>, %[[Q:[a-z0-9]+]]: tensor<96x2x16xi8>, %[[D:[a-z0-9]+]]: tensor<96x2xf16>, %[[M:[a-z0-9]+]]: tensor<96x2xf16>)
// CHECK: %[[XB:.+]] = tensor.expand_shape %[[X]] {{\[}}[0], [1], [2, 3, 4]] output_shape [1, 1, 2, 2, 16] : tensor<1x1x64xf32> into tensor<1x1x2x2x16xf32>
// CHECK: %[[FILL:.+]] = linalg.fill ins(%{{.+}} : f32) outs(%{{.+}} : tensor<1x1x96xf32>)
// CHECK: %[[XLO:.+]] = tensor.extract_slice %[[XB]][0, 0, 0, 0, 0] [1, 1, 2, 1, 16] [1, 1, 1, 1, 1] : tensor<1x1x2x2x16xf32> to tensor<1x1x2x16xf32>
// CHECK: %[[XHI:.+]] = tensor.extract_slice %[[XB]][0, 0, 0, 1, 0] [1, 1, 2, 1, 16] [1, 1, 1, 1, 1] : tensor<1x1x2x2x16xf32> to tensor<1x1x2x16xf32>
// CHECK: %[[R:.+]] = linalg.generic {indexing_maps = [#[[$X]], #[[$X]], #[[$DATA]], #[[$BLK]], #[[$BLK]], #[[$OUT]]], iterator_types = ["parallel", "parallel", "parallel", "reduction", "reduction"]}
// CHECK-SAME: ins(%[[XLO]], %[[XHI]], %[[Q]], %[[D]], %[[M]] : tensor<1x1x2x16xf32>, tensor<1x1x2x16xf32>, tensor<96x2x16xi8>, tensor<96x2xf16>, tensor<96x2xf16>) outs(%[[FILL]] : tensor<1x1x96xf32>)
// CHECK: ^bb0(%[[A:.+]]: f32, %[[B:.+]]: f32, %[[QV:.+]]: i8, %[[DV:.+]]: f16, %[[MV:.+]]: f16, %[[ACC:.+]]: f32):
// CHECK: %[[C0:.+]] = arith.constant 0 : i32
// CHECK: %[[LOI:.+]] = arith.extui %[[QV]] : i8 to i32
// CHECK: arith.shrui %[[LOI]], %[[C0]] : i32
// CHECK: arith.uitofp
// CHECK: %[[WLO:.+]] = arith.addf
// CHECK: %[[C4:.+]] = arith.constant 4 : i32
// CHECK: %[[HII:.+]] = arith.extui %[[QV]] : i8 to i32
// CHECK: arith.shrui %[[HII]], %[[C4]] : i32
// CHECK: arith.uitofp
// CHECK: %[[WHI:.+]] = arith.addf
// CHECK: %[[PLO:.+]] = arith.mulf %[[A]], %[[WLO]] : f32
// CHECK: %[[PHI:.+]] = arith.mulf %[[B]], %[[WHI]] : f32
// CHECK: %[[P:.+]] = arith.addf %[[PLO]], %[[PHI]] : f32
// CHECK: %[[S:.+]] = arith.addf %[[ACC]], %[[P]] : f32
// CHECK: linalg.yield %[[S]] : f32
// CHECK-NOT: linalg.generic
// CHECK: return %[[R]] : tensor<1x1x96xf32>
// FUSED-LABEL: func.func @linear_dequantized_decode
// FUSED-NOT: tensor<96x64xf32>
// FUSED-NOT: tensor<96x2x2x16xf32>
// FUSED: linalg.generic
// FUSED-SAME: iterator_types = ["parallel", "parallel", "parallel", "reduction", "reduction"]
// FUSED-SAME: tensor<96x2x16xi8>
// FUSED-NOT: tensor<96x64xf32>
// FUSED: return
func.func @linear_dequantized_decode(%x: tensor<1x1x64xf32>, %qs: tensor<96x2x16xi8>, %d: tensor<96x2xf16>, %m: tensor<96x2xf16>) -> tensor<1x1x96xf32> {
  %w = transformer.dequantize %qs, %d, %m {format = "q4_1"} : (tensor<96x2x16xi8>, tensor<96x2xf16>, tensor<96x2xf16>) -> tensor<96x64xf32>
  %y = transformer.linear %x, %w : (tensor<1x1x64xf32>, tensor<96x64xf32>) -> tensor<1x1x96xf32>
  return %y : tensor<1x1x96xf32>
}

// -----

// With a bias (which initializes the sum) over q8_0: the 32 bytes of a block are read in place as
// [block, half, j] (no copies of halves of the weight), the half a third reduction loop.
// CHECK-DAG: #[[$X:map[0-9]*]] = affine_map<(d0, d1, d2, d3, d4) -> (d0, d2, d3, d4)>
// CHECK-DAG: #[[$DATA:map[0-9]*]] = affine_map<(d0, d1, d2, d3, d4) -> (d1, d2, d3, d4)>
// CHECK-DAG: #[[$BLK:map[0-9]*]] = affine_map<(d0, d1, d2, d3, d4) -> (d1, d2)>
// CHECK-DAG: #[[$OUT:map[0-9]*]] = affine_map<(d0, d1, d2, d3, d4) -> (d0, d1)>
// CHECK-LABEL: func.func @linear_dequantized_decode_bias
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<1x64xf32>, %[[Q:[a-z0-9]+]]: tensor<96x2x32xi8>, %[[D:[a-z0-9]+]]: tensor<96x2xf16>, %[[B:[a-z0-9]+]]: tensor<96xf32>)
// CHECK: %[[XB:.+]] = tensor.expand_shape %[[X]] {{\[}}[0], [1, 2, 3]] output_shape [1, 2, 2, 16] : tensor<1x64xf32> into tensor<1x2x2x16xf32>
// CHECK-NOT: linalg.fill
// CHECK: %[[ACC:.+]] = linalg.generic
// CHECK-SAME: ins(%[[B]] : tensor<96xf32>) outs(%{{.+}} : tensor<1x96xf32>)
// CHECK: %[[QB:.+]] = tensor.expand_shape %[[Q]] {{\[}}[0], [1], [2, 3]] output_shape [96, 2, 2, 16] : tensor<96x2x32xi8> into tensor<96x2x2x16xi8>
// CHECK-NOT: tensor.extract_slice
// CHECK: %[[R:.+]] = linalg.generic {indexing_maps = [#[[$X]], #[[$DATA]], #[[$BLK]], #[[$OUT]]], iterator_types = ["parallel", "parallel", "reduction", "reduction", "reduction"]}
// CHECK-SAME: ins(%[[XB]], %[[QB]], %[[D]] : tensor<1x2x2x16xf32>, tensor<96x2x2x16xi8>, tensor<96x2xf16>) outs(%[[ACC]] : tensor<1x96xf32>)
// CHECK: ^bb0(%[[A:.+]]: f32, %[[QV:.+]]: i8, %[[DV:.+]]: f16, %[[O:.+]]: f32):
// CHECK-NOT: arith.extui
// CHECK: %[[QF:.+]] = arith.sitofp %[[QV]] : i8 to f32
// CHECK: %[[W:.+]] = arith.mulf %{{.+}}, %[[QF]] : f32
// CHECK: %[[P:.+]] = arith.mulf %[[A]], %[[W]] : f32
// CHECK: %[[S:.+]] = arith.addf %[[O]], %[[P]] : f32
// CHECK: linalg.yield %[[S]] : f32
// CHECK: return %[[R]] : tensor<1x96xf32>
// FUSED-LABEL: func.func @linear_dequantized_decode_bias
// FUSED-NOT: tensor<96x64xf32>
// FUSED: return
func.func @linear_dequantized_decode_bias(%x: tensor<1x64xf32>, %qs: tensor<96x2x32xi8>, %d: tensor<96x2xf16>, %b: tensor<96xf32>) -> tensor<1x96xf32> {
  %w = transformer.dequantize %qs, %d {format = "q8_0"} : (tensor<96x2x32xi8>, tensor<96x2xf16>) -> tensor<96x64xf32>
  %y = transformer.linear %x, %w, %b : (tensor<1x64xf32>, tensor<96x64xf32>, tensor<96xf32>) -> tensor<1x96xf32>
  return %y : tensor<1x96xf32>
}

// -----

// 32 rows (a prefill) is past the decode threshold of 16: the weight is dequantized once to f32
// and the ordinary contraction reads it.
// CHECK-DAG: #[[$X:map[0-9]*]] = affine_map<(d0, d1, d2, d3) -> (d0, d1, d3)>
// CHECK-DAG: #[[$W:map[0-9]*]] = affine_map<(d0, d1, d2, d3) -> (d2, d3)>
// CHECK-DAG: #[[$OUT:map[0-9]*]] = affine_map<(d0, d1, d2, d3) -> (d0, d1, d2)>
// CHECK-LABEL: func.func @linear_dequantized_prefill
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<1x32x64xf32>, %[[Q:[a-z0-9]+]]: tensor<96x2x16xi8>, %[[D:[a-z0-9]+]]: tensor<96x2xf16>)
// CHECK: %[[WB:.+]] = linalg.generic {{.+}} iterator_types = ["parallel", "parallel", "parallel", "parallel"]
// CHECK-SAME: ins(%[[Q]], %{{.+}}, %[[D]] : tensor<96x2x16xi8>, tensor<2xi32>, tensor<96x2xf16>) outs(%{{.+}} : tensor<96x2x2x16xf32>)
// CHECK: arith.subi
// CHECK: %[[W:.+]] = tensor.collapse_shape %[[WB]] {{\[}}[0], [1, 2, 3]] : tensor<96x2x2x16xf32> into tensor<96x64xf32>
// CHECK: %[[FILL:.+]] = linalg.fill ins(%{{.+}} : f32) outs(%{{.+}} : tensor<1x32x96xf32>)
// CHECK: %[[R:.+]] = linalg.generic {indexing_maps = [#[[$X]], #[[$W]], #[[$OUT]]], iterator_types = ["parallel", "parallel", "parallel", "reduction"]}
// CHECK-SAME: ins(%[[X]], %[[W]] : tensor<1x32x64xf32>, tensor<96x64xf32>) outs(%[[FILL]] : tensor<1x32x96xf32>)
// CHECK: ^bb0(%[[A:.+]]: f32, %[[BW:.+]]: f32, %[[O:.+]]: f32):
// CHECK-NEXT: %[[P:.+]] = arith.mulf %[[A]], %[[BW]] : f32
// CHECK-NEXT: %[[S:.+]] = arith.addf %[[O]], %[[P]] : f32
// CHECK-NEXT: linalg.yield %[[S]]
// CHECK: return %[[R]]
func.func @linear_dequantized_prefill(%x: tensor<1x32x64xf32>, %qs: tensor<96x2x16xi8>, %d: tensor<96x2xf16>) -> tensor<1x32x96xf32> {
  %w = transformer.dequantize %qs, %d {format = "q4_0"} : (tensor<96x2x16xi8>, tensor<96x2xf16>) -> tensor<96x64xf32>
  %y = transformer.linear %x, %w : (tensor<1x32x64xf32>, tensor<96x64xf32>) -> tensor<1x32x96xf32>
  return %y : tensor<1x32x96xf32>
}

// -----

// The threshold counts the rows of all leading dims: 3 x 5 = 15 rows read the blocks, 2 x 8 = 16
// rows read the f32 weight, materialized once for that user.
// CHECK-LABEL: func.func @linear_dequantized_rows_threshold
// CHECK-SAME: (%[[X15:[a-z0-9]+]]: tensor<3x5x64xf32>, %[[X16:[a-z0-9]+]]: tensor<2x8x64xf32>,
// CHECK: %[[W:.+]] = tensor.collapse_shape %{{.+}} {{\[}}[0], [1, 2, 3]] : tensor<96x2x2x16xf32> into tensor<96x64xf32>
// CHECK: %[[A:.+]] = linalg.generic {{.+}} iterator_types = ["parallel", "parallel", "parallel", "reduction", "reduction", "reduction"]
// CHECK-SAME: ins(%{{.+}}, %{{.+}}, %{{.+}} : tensor<3x5x2x2x16xf32>, tensor<96x2x2x16xi8>, tensor<96x2xf16>) outs(%{{.+}} : tensor<3x5x96xf32>)
// CHECK: %[[B:.+]] = linalg.generic {{.+}} iterator_types = ["parallel", "parallel", "parallel", "reduction"]
// CHECK-SAME: ins(%[[X16]], %[[W]] : tensor<2x8x64xf32>, tensor<96x64xf32>) outs(%{{.+}} : tensor<2x8x96xf32>)
// CHECK: return %[[A]], %[[B]]
func.func @linear_dequantized_rows_threshold(%x15: tensor<3x5x64xf32>, %x16: tensor<2x8x64xf32>, %qs: tensor<96x2x32xi8>, %d: tensor<96x2xf16>) -> (tensor<3x5x96xf32>, tensor<2x8x96xf32>) {
  %w = transformer.dequantize %qs, %d {format = "q8_0"} : (tensor<96x2x32xi8>, tensor<96x2xf16>) -> tensor<96x64xf32>
  %a = transformer.linear %x15, %w : (tensor<3x5x64xf32>, tensor<96x64xf32>) -> tensor<3x5x96xf32>
  %b = transformer.linear %x16, %w : (tensor<2x8x64xf32>, tensor<96x64xf32>) -> tensor<2x8x96xf32>
  return %a, %b : tensor<3x5x96xf32>, tensor<2x8x96xf32>
}

// -----

// A gated MLP at one row over three dequantized weights (gate and up q4_0, down q8_0): each
// projection is a reduction over the blocks of its weight; act(gate) * up stays elementwise.
// CHECK-LABEL: func.func @gated_mlp_dequantized_decode
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<1x1x64xf32>, %[[GQ:[a-z0-9]+]]: tensor<128x2x16xi8>, %[[GD:[a-z0-9]+]]: tensor<128x2xf16>, %[[UQ:[a-z0-9]+]]: tensor<128x2x16xi8>, %[[UD:[a-z0-9]+]]: tensor<128x2xf16>, %[[DQ:[a-z0-9]+]]: tensor<64x4x32xi8>, %[[DD:[a-z0-9]+]]: tensor<64x4xf16>)
// CHECK: %[[GATE:.+]] = linalg.generic {{.+}} iterator_types = ["parallel", "parallel", "parallel", "reduction", "reduction"]
// CHECK-SAME: ins(%{{.+}}, %{{.+}}, %[[GQ]], %[[GD]] : tensor<1x1x2x16xf32>, tensor<1x1x2x16xf32>, tensor<128x2x16xi8>, tensor<128x2xf16>) outs(%{{.+}} : tensor<1x1x128xf32>)
// CHECK: arith.subi
// CHECK: %[[UP:.+]] = linalg.generic {{.+}} iterator_types = ["parallel", "parallel", "parallel", "reduction", "reduction"]
// CHECK-SAME: ins(%{{.+}}, %{{.+}}, %[[UQ]], %[[UD]] : tensor<1x1x2x16xf32>, tensor<1x1x2x16xf32>, tensor<128x2x16xi8>, tensor<128x2xf16>) outs(%{{.+}} : tensor<1x1x128xf32>)
// CHECK: %[[H:.+]] = linalg.generic {{.+}} iterator_types = ["parallel", "parallel", "parallel"]
// CHECK-SAME: ins(%[[GATE]], %[[UP]] : tensor<1x1x128xf32>, tensor<1x1x128xf32>)
// CHECK: math.exp
// CHECK: %[[HB:.+]] = tensor.expand_shape %[[H]] {{\[}}[0], [1], [2, 3, 4]] output_shape [1, 1, 4, 2, 16] : tensor<1x1x128xf32> into tensor<1x1x4x2x16xf32>
// CHECK: %[[DB:.+]] = tensor.expand_shape %[[DQ]] {{\[}}[0], [1], [2, 3]] output_shape [64, 4, 2, 16] : tensor<64x4x32xi8> into tensor<64x4x2x16xi8>
// CHECK: %[[R:.+]] = linalg.generic {{.+}} iterator_types = ["parallel", "parallel", "parallel", "reduction", "reduction", "reduction"]
// CHECK-SAME: ins(%[[HB]], %[[DB]], %[[DD]] : tensor<1x1x4x2x16xf32>, tensor<64x4x2x16xi8>, tensor<64x4xf16>) outs(%{{.+}} : tensor<1x1x64xf32>)
// CHECK: arith.sitofp %{{.+}} : i8 to f32
// CHECK: return %[[R]] : tensor<1x1x64xf32>
// FUSED-LABEL: func.func @gated_mlp_dequantized_decode
// FUSED-NOT: tensor<128x64xf32>
// FUSED-NOT: tensor<64x128xf32>
// FUSED-COUNT-2: iterator_types = ["parallel", "parallel", "parallel", "reduction", "reduction"]
// FUSED: iterator_types = ["parallel", "parallel", "parallel", "reduction", "reduction", "reduction"]
// FUSED-NOT: tensor<128x64xf32>
// FUSED-NOT: tensor<64x128xf32>
// FUSED: return
func.func @gated_mlp_dequantized_decode(%x: tensor<1x1x64xf32>, %gq: tensor<128x2x16xi8>, %gd: tensor<128x2xf16>, %uq: tensor<128x2x16xi8>, %ud: tensor<128x2xf16>, %dq: tensor<64x4x32xi8>, %dd: tensor<64x4xf16>) -> tensor<1x1x64xf32> {
  %wg = transformer.dequantize %gq, %gd {format = "q4_0"} : (tensor<128x2x16xi8>, tensor<128x2xf16>) -> tensor<128x64xf32>
  %wu = transformer.dequantize %uq, %ud {format = "q4_0"} : (tensor<128x2x16xi8>, tensor<128x2xf16>) -> tensor<128x64xf32>
  %wd = transformer.dequantize %dq, %dd {format = "q8_0"} : (tensor<64x4x32xi8>, tensor<64x4xf16>) -> tensor<64x128xf32>
  %y = transformer.gated_mlp %x, %wg, %wu, %wd : (tensor<1x1x64xf32>, tensor<128x64xf32>, tensor<128x64xf32>, tensor<64x128xf32>) -> tensor<1x1x64xf32>
  return %y : tensor<1x1x64xf32>
}

//===----------------------------------------------------------------------===//
// matmul
//===----------------------------------------------------------------------===//

// -----

// CHECK-DAG: #[[$LHS:map[0-9]*]] = affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d2, d4)>
// CHECK-DAG: #[[$RHS:map[0-9]*]] = affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d4, d3)>
// CHECK-DAG: #[[$OUT:map[0-9]*]] = affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d2, d3)>
// CHECK-LABEL: func.func @matmul
// CHECK-SAME: (%[[A:[a-z0-9]+]]: tensor<2x8x16x64xf32>, %[[B:[a-z0-9]+]]: tensor<2x8x64x32xf32>)
// CHECK: %[[FILL:.+]] = linalg.fill ins(%{{.+}} : f32) outs(%{{.+}} : tensor<2x8x16x32xf32>)
// CHECK: %[[R:.+]] = linalg.generic {indexing_maps = [#[[$LHS]], #[[$RHS]], #[[$OUT]]], iterator_types = ["parallel", "parallel", "parallel", "parallel", "reduction"]}
// CHECK-SAME: ins(%[[A]], %[[B]] : tensor<2x8x16x64xf32>, tensor<2x8x64x32xf32>) outs(%[[FILL]] : tensor<2x8x16x32xf32>)
// CHECK: arith.mulf
// CHECK: arith.addf
// CHECK: return %[[R]]
func.func @matmul(%a: tensor<2x8x16x64xf32>, %b: tensor<2x8x64x32xf32>) -> tensor<2x8x16x32xf32> {
  %c = transformer.matmul %a, %b : (tensor<2x8x16x64xf32>, tensor<2x8x64x32xf32>) -> tensor<2x8x16x32xf32>
  return %c : tensor<2x8x16x32xf32>
}

// -----

// transpose_rhs reads rhs[b..., n, k]: no linalg.transpose, just another map.
// CHECK-DAG: #[[$LHS:map[0-9]*]] = affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d2, d4)>
// CHECK-DAG: #[[$RHS:map[0-9]*]] = affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d3, d4)>
// CHECK-DAG: #[[$OUT:map[0-9]*]] = affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d2, d3)>
// CHECK-LABEL: func.func @matmul_transpose_rhs
// CHECK-NOT: linalg.transpose
// CHECK: linalg.generic {indexing_maps = [#[[$LHS]], #[[$RHS]], #[[$OUT]]], iterator_types = ["parallel", "parallel", "parallel", "parallel", "reduction"]}
// CHECK-SAME: outs(%{{.+}} : tensor<2x8x16x24xf32>)
func.func @matmul_transpose_rhs(%q: tensor<2x8x16x64xf32>, %k: tensor<2x8x24x64xf32>) -> tensor<2x8x16x24xf32> {
  %s = transformer.matmul %q, %k {transpose_rhs} : (tensor<2x8x16x64xf32>, tensor<2x8x24x64xf32>) -> tensor<2x8x16x24xf32>
  return %s : tensor<2x8x16x24xf32>
}

// -----

// A batch dim dynamic in lhs but static in rhs: the result (and its accumulator) takes the static size.
// CHECK-LABEL: func.func @matmul_batch_static_in_rhs
// CHECK: linalg.fill ins(%{{.+}} : f32) outs(%{{.+}} : tensor<6x3x5xf32>)
// CHECK: linalg.generic
// CHECK-SAME: ins(%{{.+}}, %{{.+}} : tensor<?x3x4xf32>, tensor<6x5x4xf32>) outs(%{{.+}} : tensor<6x3x5xf32>)
func.func @matmul_batch_static_in_rhs(%a: tensor<?x3x4xf32>, %b: tensor<6x5x4xf32>) -> tensor<6x3x5xf32> {
  %c = transformer.matmul %a, %b {transpose_rhs} : (tensor<?x3x4xf32>, tensor<6x5x4xf32>) -> tensor<6x3x5xf32>
  return %c : tensor<6x3x5xf32>
}

//===----------------------------------------------------------------------===//
// rms_norm / layer_norm: row reductions, then one elementwise normalization
//===----------------------------------------------------------------------===//

// -----

// CHECK-DAG: #[[$ID3:map[0-9]*]] = affine_map<(d0, d1, d2) -> (d0, d1, d2)>
// CHECK-DAG: #[[$ROW:map[0-9]*]] = affine_map<(d0, d1, d2) -> (d0, d1)>
// CHECK-DAG: #[[$FEAT:map[0-9]*]] = affine_map<(d0, d1, d2) -> (d2)>
// CHECK-LABEL: func.func @rms_norm_weight
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<2x7x64xf32>, %[[W:[a-z0-9]+]]: tensor<64xf32>)
// CHECK: %[[FILL:.+]] = linalg.fill ins(%{{.+}} : f32) outs(%{{.+}} : tensor<2x7xf32>)
// CHECK: %[[SUMSQ:.+]] = linalg.generic {indexing_maps = [#[[$ID3]], #[[$ROW]]], iterator_types = ["parallel", "parallel", "reduction"]}
// CHECK-SAME: ins(%[[X]] : tensor<2x7x64xf32>) outs(%[[FILL]] : tensor<2x7xf32>)
// CHECK: ^bb0(%[[V:.+]]: f32, %[[ACC:.+]]: f32):
// CHECK: %[[SQ:.+]] = arith.mulf %[[V]], %[[V]] : f32
// CHECK: arith.addf %[[ACC]], %[[SQ]] : f32
// CHECK-DAG: %[[N:.+]] = arith.constant 6.400000e+01 : f32
// CHECK-DAG: %[[EPS:.+]] = arith.constant 9.99999974E-6 : f32
// CHECK: %[[R:.+]] = linalg.generic {indexing_maps = [#[[$ID3]], #[[$ROW]], #[[$FEAT]], #[[$ID3]]], iterator_types = ["parallel", "parallel", "parallel"]}
// CHECK-SAME: ins(%[[X]], %[[SUMSQ]], %[[W]] : tensor<2x7x64xf32>, tensor<2x7xf32>, tensor<64xf32>)
// CHECK: ^bb0(%[[XV:.+]]: f32, %[[SS:.+]]: f32, %[[WV:.+]]: f32, %{{.+}}: f32):
// CHECK: %[[MEAN:.+]] = arith.divf %[[SS]], %[[N]] : f32
// CHECK: %[[VAR:.+]] = arith.addf %[[MEAN]], %[[EPS]] : f32
// CHECK: %[[RS:.+]] = math.rsqrt %[[VAR]] : f32
// CHECK: %[[Y:.+]] = arith.mulf %[[XV]], %[[RS]] : f32
// CHECK: %[[YW:.+]] = arith.mulf %[[WV]], %[[Y]] : f32
// CHECK: linalg.yield %[[YW]] : f32
// CHECK: return %[[R]]
func.func @rms_norm_weight(%x: tensor<2x7x64xf32>, %w: tensor<64xf32>) -> tensor<2x7x64xf32> {
  %y = transformer.rms_norm %x, %w {eps = 1.0e-05 : f64} : (tensor<2x7x64xf32>, tensor<64xf32>) -> tensor<2x7x64xf32>
  return %y : tensor<2x7x64xf32>
}

// -----

// A dynamic row length is converted at run time; bf16 is reduced in f32 and
// rounded back before the (absent) weight would scale it.
// CHECK-DAG: #[[$ID2:map[0-9]*]] = affine_map<(d0, d1) -> (d0, d1)>
// CHECK-DAG: #[[$ROW:map[0-9]*]] = affine_map<(d0, d1) -> (d0)>
// CHECK-LABEL: func.func @rms_norm_no_weight_dynamic
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<?x?xbf16>)
// CHECK: %[[SUMSQ:.+]] = linalg.generic {indexing_maps = [#[[$ID2]], #[[$ROW]]], iterator_types = ["parallel", "reduction"]}
// CHECK-SAME: outs(%{{.+}} : tensor<?xf32>)
// CHECK: arith.extf %{{.+}} : bf16 to f32
// CHECK: %[[D:.+]] = tensor.dim %[[X]], %{{.+}} : tensor<?x?xbf16>
// CHECK: %[[DI:.+]] = arith.index_cast %[[D]] : index to i64
// CHECK: %[[N:.+]] = arith.sitofp %[[DI]] : i64 to f32
// CHECK: linalg.generic {indexing_maps = [#[[$ID2]], #[[$ROW]], #[[$ID2]]], iterator_types = ["parallel", "parallel"]}
// CHECK-SAME: ins(%[[X]], %[[SUMSQ]] : tensor<?x?xbf16>, tensor<?xf32>)
// CHECK: arith.divf %{{.+}}, %[[N]] : f32
// CHECK: math.rsqrt
// CHECK: arith.extf %{{.+}} : bf16 to f32
// CHECK: arith.mulf
// CHECK: %[[Y:.+]] = arith.truncf %{{.+}} : f32 to bf16
// CHECK-NEXT: linalg.yield %[[Y]] : bf16
func.func @rms_norm_no_weight_dynamic(%x: tensor<?x?xbf16>) -> tensor<?x?xbf16> {
  %y = transformer.rms_norm %x : (tensor<?x?xbf16>) -> tensor<?x?xbf16>
  return %y : tensor<?x?xbf16>
}

// -----

// Two-pass layer norm: mean, then the sum of squared deviations.
// CHECK-DAG: #[[$ID3:map[0-9]*]] = affine_map<(d0, d1, d2) -> (d0, d1, d2)>
// CHECK-DAG: #[[$ROW:map[0-9]*]] = affine_map<(d0, d1, d2) -> (d0, d1)>
// CHECK-DAG: #[[$FEAT:map[0-9]*]] = affine_map<(d0, d1, d2) -> (d2)>
// CHECK-LABEL: func.func @layer_norm_weight_bias
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<2x9x384xf32>, %[[G:[a-z0-9]+]]: tensor<384xf32>, %[[B:[a-z0-9]+]]: tensor<384xf32>)
// CHECK: %[[N:.+]] = arith.constant 3.840000e+02 : f32
// CHECK: %[[SUM:.+]] = linalg.generic {indexing_maps = [#[[$ID3]], #[[$ROW]]], iterator_types = ["parallel", "parallel", "reduction"]}
// CHECK-SAME: ins(%[[X]] : tensor<2x9x384xf32>)
// CHECK: %[[MEAN:.+]] = linalg.generic
// CHECK-SAME: ins(%[[SUM]] : tensor<2x9xf32>)
// CHECK: arith.divf %{{.+}}, %[[N]] : f32
// CHECK: %[[SQDEV:.+]] = linalg.generic {indexing_maps = [#[[$ID3]], #[[$ROW]], #[[$ROW]]], iterator_types = ["parallel", "parallel", "reduction"]}
// CHECK-SAME: ins(%[[X]], %[[MEAN]] : tensor<2x9x384xf32>, tensor<2x9xf32>)
// CHECK: %[[DEV:.+]] = arith.subf
// CHECK: arith.mulf %[[DEV]], %[[DEV]] : f32
// CHECK: %[[EPS:.+]] = arith.constant 9.99999996E-13 : f32
// CHECK: %[[R:.+]] = linalg.generic {indexing_maps = [#[[$ID3]], #[[$ROW]], #[[$ROW]], #[[$FEAT]], #[[$FEAT]], #[[$ID3]]], iterator_types = ["parallel", "parallel", "parallel"]}
// CHECK-SAME: ins(%[[X]], %[[MEAN]], %[[SQDEV]], %[[G]], %[[B]] :
// CHECK: ^bb0(%[[XV:.+]]: f32, %[[MV:.+]]: f32, %[[SV:.+]]: f32, %[[GV:.+]]: f32, %[[BV:.+]]: f32, %{{.+}}: f32):
// CHECK: %[[VAR:.+]] = arith.divf %[[SV]], %[[N]] : f32
// CHECK: %[[VE:.+]] = arith.addf %[[VAR]], %[[EPS]] : f32
// CHECK: %[[RS:.+]] = math.rsqrt %[[VE]] : f32
// CHECK: %[[C:.+]] = arith.subf %[[XV]], %[[MV]] : f32
// CHECK: %[[Y:.+]] = arith.mulf %[[C]], %[[RS]] : f32
// CHECK: %[[YG:.+]] = arith.mulf %[[Y]], %[[GV]] : f32
// CHECK: %[[YB:.+]] = arith.addf %[[YG]], %[[BV]] : f32
// CHECK: linalg.yield %[[YB]] : f32
// CHECK: return %[[R]]
func.func @layer_norm_weight_bias(%x: tensor<2x9x384xf32>, %g: tensor<384xf32>, %b: tensor<384xf32>) -> tensor<2x9x384xf32> {
  %y = transformer.layer_norm %x weight(%g) bias(%b) {eps = 1.0e-12 : f64} : (tensor<2x9x384xf32>, tensor<384xf32>, tensor<384xf32>) -> tensor<2x9x384xf32>
  return %y : tensor<2x9x384xf32>
}

// -----

// Only the operands that are present are read.
// CHECK-DAG: #[[$ID3:map[0-9]*]] = affine_map<(d0, d1, d2) -> (d0, d1, d2)>
// CHECK-DAG: #[[$ROW:map[0-9]*]] = affine_map<(d0, d1, d2) -> (d0, d1)>
// CHECK-DAG: #[[$FEAT:map[0-9]*]] = affine_map<(d0, d1, d2) -> (d2)>
// CHECK-LABEL: func.func @layer_norm_bias_only
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<2x9x384xf32>, %[[B:[a-z0-9]+]]: tensor<384xf32>)
// CHECK: linalg.generic {indexing_maps = [#[[$ID3]], #[[$ROW]], #[[$ROW]], #[[$FEAT]], #[[$ID3]]], iterator_types = ["parallel", "parallel", "parallel"]}
// CHECK-SAME: ins(%[[X]], %{{.+}}, %{{.+}}, %[[B]] :
// CHECK: math.rsqrt
// CHECK: %[[Y:.+]] = arith.mulf
// CHECK-NEXT: %[[YB:.+]] = arith.addf %[[Y]], %{{.+}} : f32
// CHECK-NEXT: linalg.yield %[[YB]] : f32
func.func @layer_norm_bias_only(%x: tensor<2x9x384xf32>, %b: tensor<384xf32>) -> tensor<2x9x384xf32> {
  %y = transformer.layer_norm %x bias(%b) : (tensor<2x9x384xf32>, tensor<384xf32>) -> tensor<2x9x384xf32>
  return %y : tensor<2x9x384xf32>
}

//===----------------------------------------------------------------------===//
// rope: cos and sin tables over (positions, features), then x * cos + rotate_half(x) * sin
//===----------------------------------------------------------------------===//

// -----

// Without inv_freq, the frequencies theta^(-2i/64) are a constant. The cos and sin of every
// (position, feature) angle are tables of the positions' shape plus the features ([batch, seq, d]
// here), which every RoPE over the same positions shares after CSE. With rotary_dim = head_dim the
// rotation views the features of x and of the tables as two halves ([.., 2, 32]) and reads x's
// halves through indexing maps with a constant half index (no tensor.extract, so the producer of x
// can fuse): loops (t, b, h, s, f), t the half; element t of the first half is
// x0 * cos - x1 * sin, of the second x1 * cos + x0 * sin.
// CHECK-DAG: #[[$POS:map[0-9]*]] = affine_map<(d0, d1, d2) -> (d0, d1)>
// CHECK-DAG: #[[$ID3:map[0-9]*]] = affine_map<(d0, d1, d2) -> (d0, d1, d2)>
// CHECK-DAG: #[[$X0:map[0-9]*]] = affine_map<(d0, d1, d2, d3, d4) -> (d1, d2, d3, 0, d4)>
// CHECK-DAG: #[[$X1:map[0-9]*]] = affine_map<(d0, d1, d2, d3, d4) -> (d1, d2, d3, 1, d4)>
// CHECK-DAG: #[[$TAB:map[0-9]*]] = affine_map<(d0, d1, d2, d3, d4) -> (d1, d3, d0, d4)>
// CHECK-DAG: #[[$OUT:map[0-9]*]] = affine_map<(d0, d1, d2, d3, d4) -> (d1, d2, d3, d0, d4)>
// CHECK-LABEL: func.func @rope
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<1x4x7x64xf32>, %[[P:[a-z0-9]+]]: tensor<1x7xi64>)
// CHECK: %[[FREQ:.+]] = arith.constant dense<[1.000000e+00, 0.749894201, {{.+}}]> : tensor<32xf32>
// CHECK: %[[COST:.+]] = linalg.generic {indexing_maps = [#[[$POS]], #[[$ID3]]], iterator_types = ["parallel", "parallel", "parallel"]}
// CHECK-SAME: ins(%[[P]] : tensor<1x7xi64>) outs(%{{.+}} : tensor<1x7x64xf32>)
// CHECK: ^bb0(%[[PV:.+]]: i64, %{{.+}}: f32):
// CHECK-DAG: %[[D:.+]] = linalg.index 2 : index
// CHECK-DAG: %[[HALF:.+]] = arith.constant 32 : index
// CHECK-DAG: %[[FI:.+]] = arith.remui %[[D]], %[[HALF]] : index
// CHECK: %[[F:.+]] = tensor.extract %[[FREQ]][%[[FI]]] : tensor<32xf32>
// CHECK: %[[POSF:.+]] = arith.sitofp %[[PV]] : i64 to f32
// CHECK: %[[ANGLE:.+]] = arith.mulf %[[POSF]], %[[F]] : f32
// CHECK: math.cos %[[ANGLE]] : f32
// CHECK: %[[SINT:.+]] = linalg.generic
// CHECK: math.sin
// CHECK-DAG: %[[XH:.+]] = tensor.expand_shape %[[X]] {{\[}}[0], [1], [2], [3, 4]] output_shape [1, 4, 7, 2, 32] : tensor<1x4x7x64xf32> into tensor<1x4x7x2x32xf32>
// CHECK-DAG: %[[COSH:.+]] = tensor.expand_shape %[[COST]] {{\[}}[0], [1], [2, 3]] output_shape [1, 7, 2, 32] : tensor<1x7x64xf32> into tensor<1x7x2x32xf32>
// CHECK-DAG: %[[SINH:.+]] = tensor.expand_shape %[[SINT]] {{\[}}[0], [1], [2, 3]] output_shape [1, 7, 2, 32] : tensor<1x7x64xf32> into tensor<1x7x2x32xf32>
// CHECK: %[[R:.+]] = linalg.generic {indexing_maps = [#[[$X0]], #[[$X1]], #[[$TAB]], #[[$TAB]], #[[$OUT]]], iterator_types = ["parallel", "parallel", "parallel", "parallel", "parallel"]}
// CHECK-SAME: ins(%[[XH]], %[[XH]], %[[COSH]], %[[SINH]] : tensor<1x4x7x2x32xf32>, tensor<1x4x7x2x32xf32>, tensor<1x7x2x32xf32>, tensor<1x7x2x32xf32>)
// CHECK-SAME: outs(%{{.+}} : tensor<1x4x7x2x32xf32>)
// CHECK: ^bb0(%[[X0:.+]]: f32, %[[X1:.+]]: f32, %[[COS:.+]]: f32, %[[SIN:.+]]: f32, %{{.+}}: f32):
// CHECK-NOT: tensor.extract
// CHECK-DAG: %[[T:.+]] = linalg.index 0 : index
// CHECK-DAG: %[[FIRST:.+]] = arith.cmpi eq, %[[T]], %{{.+}} : index
// CHECK-DAG: %[[SELF:.+]] = arith.select %[[FIRST]], %[[X0]], %[[X1]] : f32
// CHECK-DAG: %[[NEG:.+]] = arith.negf %[[X1]] : f32
// CHECK-DAG: %[[ROT:.+]] = arith.select %[[FIRST]], %[[NEG]], %[[X0]] : f32
// CHECK-DAG: %[[RS:.+]] = arith.mulf %[[ROT]], %[[SIN]] : f32
// CHECK-DAG: %[[XC:.+]] = arith.mulf %[[SELF]], %[[COS]] : f32
// CHECK: %[[Y:.+]] = arith.addf %[[XC]], %[[RS]] : f32
// CHECK-NEXT: linalg.yield %[[Y]] : f32
// CHECK: %[[OUT:.+]] = tensor.collapse_shape %[[R]] {{\[}}[0], [1], [2], [3, 4]] : tensor<1x4x7x2x32xf32> into tensor<1x4x7x64xf32>
// CHECK: return %[[OUT]]
func.func @rope(%q: tensor<1x4x7x64xf32>, %pos: tensor<1x7xi64>) -> tensor<1x4x7x64xf32> {
  %r = transformer.rope %q, %pos : (tensor<1x4x7x64xf32>, tensor<1x7xi64>) -> tensor<1x4x7x64xf32>
  return %r : tensor<1x4x7x64xf32>
}

// -----

// Partial rotary with given frequencies: past rotary_dim the tables hold cos 1 and sin 0 and the
// features pass through; positions [seq] give [seq, d] tables, read at (d2, d3). The features do
// not split into two halves of rotary_dim/2, so the partner feature d +- 16 is read with a
// tensor.extract.
// CHECK-DAG: #[[$ID4:map[0-9]*]] = affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>
// CHECK-DAG: #[[$TAB:map[0-9]*]] = affine_map<(d0, d1, d2, d3) -> (d2, d3)>
// CHECK-LABEL: func.func @rope_partial_inv_freq
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<1x4x7x80xf32>, %[[P:[a-z0-9]+]]: tensor<7xi32>, %[[FREQ:[a-z0-9]+]]: tensor<16xf32>)
// CHECK-NOT: arith.constant dense
// CHECK: %[[COST:.+]] = linalg.generic
// CHECK-SAME: ins(%[[P]] : tensor<7xi32>) outs(%{{.+}} : tensor<7x80xf32>)
// CHECK-DAG: %[[ROTARY:.+]] = arith.constant 32 : index
// CHECK-DAG: %[[IN:.+]] = arith.cmpi ult, %{{.+}}, %[[ROTARY]] : index
// CHECK: tensor.extract %[[FREQ]][%{{.+}}] : tensor<16xf32>
// CHECK: arith.sitofp %{{.+}} : i32 to f32
// CHECK: %[[C:.+]] = math.cos
// CHECK: %[[ONE:.+]] = arith.constant 1.000000e+00 : f32
// CHECK: arith.select %[[IN]], %[[C]], %[[ONE]] : f32
// CHECK: %[[SINT:.+]] = linalg.generic
// CHECK: %[[S:.+]] = math.sin
// CHECK: %[[ZERO:.+]] = arith.constant 0.000000e+00 : f32
// CHECK: arith.select %{{.+}}, %[[S]], %[[ZERO]] : f32
// CHECK: linalg.generic {indexing_maps = [#[[$ID4]], #[[$TAB]], #[[$TAB]], #[[$ID4]]], iterator_types = ["parallel", "parallel", "parallel", "parallel"]}
// CHECK-SAME: ins(%[[X]], %[[COST]], %[[SINT]] : tensor<1x4x7x80xf32>, tensor<7x80xf32>, tensor<7x80xf32>)
// CHECK: ^bb0(%[[XV:.+]]: f32, %{{.+}}: f32, %{{.+}}: f32, %{{.+}}: f32):
// CHECK-DAG: %[[D:.+]] = linalg.index 3 : index
// CHECK-DAG: %[[ROT32:.+]] = arith.constant 32 : index
// CHECK-DAG: %[[INR:.+]] = arith.cmpi ult, %[[D]], %[[ROT32]] : index
// CHECK: tensor.extract %[[X]][%{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}] : tensor<1x4x7x80xf32>
// CHECK: %[[Y:.+]] = arith.addf
// CHECK: %[[OUT:.+]] = arith.select %[[INR]], %[[Y]], %[[XV]] : f32
// CHECK: linalg.yield %[[OUT]] : f32
func.func @rope_partial_inv_freq(%q: tensor<1x4x7x80xf32>, %pos: tensor<7xi32>, %f: tensor<16xf32>) -> tensor<1x4x7x80xf32> {
  %r = transformer.rope %q, %pos inv_freq(%f) {rotary_dim = 32 : i64} : (tensor<1x4x7x80xf32>, tensor<7xi32>, tensor<16xf32>) -> tensor<1x4x7x80xf32>
  return %r : tensor<1x4x7x80xf32>
}

// -----

// YaRN's attention factor: each table value (f32) times the factor, before the cast to f16; the
// default of 1 multiplies nothing (@rope above has no mulf past the angle's).
// CHECK-LABEL: func.func @rope_attention_scaling_f16
// CHECK: %[[COS:.+]] = math.cos %{{.+}} : f32
// CHECK: %[[COSS:.+]] = arith.mulf %[[COS]], %{{.+}} : f32
// CHECK: arith.truncf %[[COSS]] : f32 to f16
// CHECK: %[[SIN:.+]] = math.sin %{{.+}} : f32
// CHECK: %[[SINS:.+]] = arith.mulf %[[SIN]], %{{.+}} : f32
// CHECK: arith.truncf %[[SINS]] : f32 to f16
func.func @rope_attention_scaling_f16(%q: tensor<1x2x7x32xf16>, %pos: tensor<7xi64>) -> tensor<1x2x7x32xf16> {
  %r = transformer.rope %q, %pos {attention_scaling = 1.125 : f64} : (tensor<1x2x7x32xf16>, tensor<7xi64>) -> tensor<1x2x7x32xf16>
  return %r : tensor<1x2x7x32xf16>
}

// -----

// A dynamic head_dim may exceed rotary_dim: the general rotation (partner read by tensor.extract).
// CHECK-LABEL: func.func @rope_dynamic_f16
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<?x?x?x?xf16>, %[[P:[a-z0-9]+]]: tensor<?x?xi64>)
// CHECK: arith.constant dense<{{.+}}> : tensor<8xf32>
// The tables: [batch, seq, head_dim], in f16, from angles computed in f32.
// CHECK: tensor.empty(%{{.+}}, %{{.+}}, %{{.+}}) : tensor<?x?x?xf16>
// CHECK: linalg.generic
// CHECK: %[[F:.+]] = tensor.extract %{{.+}}[%{{.+}}] : tensor<8xf32>
// CHECK: %[[ANGLE:.+]] = arith.mulf %{{.+}}, %[[F]] : f32
// CHECK: %[[COS:.+]] = math.cos %[[ANGLE]] : f32
// CHECK: arith.truncf %[[COS]] : f32 to f16
// CHECK: %[[SIN:.+]] = math.sin %{{.+}} : f32
// CHECK: arith.truncf %[[SIN]] : f32 to f16
// CHECK: tensor.empty(%{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}) : tensor<?x?x?x?xf16>
// CHECK: linalg.generic
// CHECK: tensor.extract %[[X]]
// CHECK: -> tensor<?x?x?x?xf16>
func.func @rope_dynamic_f16(%q: tensor<?x?x?x?xf16>, %pos: tensor<?x?xi64>) -> tensor<?x?x?x?xf16> {
  %r = transformer.rope %q, %pos {rotary_dim = 16 : i64} : (tensor<?x?x?x?xf16>, tensor<?x?xi64>) -> tensor<?x?x?x?xf16>
  return %r : tensor<?x?x?x?xf16>
}

// -----

// A static head_dim equal to rotary_dim is rotated by halves whatever the other dimensions: the
// halves' views keep the dynamic batch and sequence sizes; [seq] positions give tables read at
// (s, t, f).
// CHECK-DAG: #[[$TAB:map[0-9]*]] = affine_map<(d0, d1, d2, d3, d4) -> (d3, d0, d4)>
// CHECK-LABEL: func.func @rope_halves_dynamic_seq_f16
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<?x4x?x32xf16>, %[[P:[a-z0-9]+]]: tensor<?xi64>)
// CHECK-DAG: %[[B:.+]] = tensor.dim %[[X]], %c0
// CHECK-DAG: %[[S:.+]] = tensor.dim %[[X]], %c2
// CHECK: %[[XH:.+]] = tensor.expand_shape %[[X]] {{\[}}[0], [1], [2], [3, 4]] output_shape [%[[B]], 4, %[[S]], 2, 16] : tensor<?x4x?x32xf16> into tensor<?x4x?x2x16xf16>
// CHECK: tensor.expand_shape %{{.+}} {{\[}}[0], [1, 2]] output_shape [%{{.+}}, 2, 16] : tensor<?x32xf16> into tensor<?x2x16xf16>
// CHECK: linalg.generic {indexing_maps = [#{{.+}}, #{{.+}}, #[[$TAB]], #[[$TAB]], #{{.+}}]
// CHECK-SAME: ins(%[[XH]], %[[XH]], %{{.+}}, %{{.+}} : tensor<?x4x?x2x16xf16>, tensor<?x4x?x2x16xf16>, tensor<?x2x16xf16>, tensor<?x2x16xf16>)
// CHECK-NOT: tensor.extract
// CHECK: tensor.collapse_shape %{{.+}} {{\[}}[0], [1], [2], [3, 4]] : tensor<?x4x?x2x16xf16> into tensor<?x4x?x32xf16>
func.func @rope_halves_dynamic_seq_f16(%q: tensor<?x4x?x32xf16>, %pos: tensor<?xi64>) -> tensor<?x4x?x32xf16> {
  %r = transformer.rope %q, %pos : (tensor<?x4x?x32xf16>, tensor<?xi64>) -> tensor<?x4x?x32xf16>
  return %r : tensor<?x4x?x32xf16>
}

//===----------------------------------------------------------------------===//
// attention: loops (b, kv_head, group, i, j) [+ reduction]
//===----------------------------------------------------------------------===//

// -----

// Multi-head attention: one group per KV head, the default scale 1/sqrt(64),
// no mask, no causal bound.
// CHECK-DAG: #[[$Q:map[0-9]*]] = affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1, d2, d3, d5)>
// CHECK-DAG: #[[$K:map[0-9]*]] = affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1, d4, d5)>
// CHECK-DAG: #[[$S:map[0-9]*]] = affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1, d2, d3, d4)>
// CHECK-DAG: #[[$V:map[0-9]*]] = affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1, d5, d4)>
// CHECK-DAG: #[[$ID5:map[0-9]*]] = affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d2, d3, d4)>
// CHECK-DAG: #[[$ROW5:map[0-9]*]] = affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d2, d3)>
// CHECK-LABEL: func.func @attention
// CHECK-SAME: (%[[Q:[a-z0-9]+]]: tensor<2x8x16x64xf32>, %[[K:[a-z0-9]+]]: tensor<2x8x24x64xf32>, %[[V:[a-z0-9]+]]: tensor<2x8x24x32xf32>)
// CHECK: %[[Q5:.+]] = tensor.expand_shape %[[Q]] {{\[}}[0], [1, 2], [3], [4]] output_shape [2, 8, 1, 16, 64] : tensor<2x8x16x64xf32> into tensor<2x8x1x16x64xf32>
// CHECK: %[[SFILL:.+]] = linalg.fill ins(%{{.+}} : f32) outs(%{{.+}} : tensor<2x8x1x16x24xf32>)
// CHECK: %[[QK:.+]] = linalg.generic {indexing_maps = [#[[$Q]], #[[$K]], #[[$S]]], iterator_types = ["parallel", "parallel", "parallel", "parallel", "parallel", "reduction"]}
// CHECK-SAME: ins(%[[Q5]], %[[K]] : tensor<2x8x1x16x64xf32>, tensor<2x8x24x64xf32>) outs(%[[SFILL]] : tensor<2x8x1x16x24xf32>)
// CHECK: %[[SCALE:.+]] = arith.constant 1.250000e-01 : f32
// CHECK: %[[SCALED:.+]] = linalg.generic {indexing_maps = [#[[$ID5]], #[[$ID5]]], iterator_types = ["parallel", "parallel", "parallel", "parallel", "parallel"]}
// CHECK-SAME: ins(%[[QK]] : tensor<2x8x1x16x24xf32>)
// CHECK-NOT: arith.cmpi
// CHECK: arith.mulf %{{.+}}, %[[SCALE]] : f32
// Stable softmax over j: row max, sum of exp(s - max), normalization.
// CHECK: %[[NEGINF:.+]] = arith.constant 0xFF800000 : f32
// CHECK: %[[MFILL:.+]] = linalg.fill ins(%[[NEGINF]] : f32) outs(%{{.+}} : tensor<2x8x1x16xf32>)
// CHECK: %[[MAX:.+]] = linalg.generic {indexing_maps = [#[[$ID5]], #[[$ROW5]]], iterator_types = ["parallel", "parallel", "parallel", "parallel", "reduction"]}
// CHECK-SAME: ins(%[[SCALED]] : tensor<2x8x1x16x24xf32>) outs(%[[MFILL]] : tensor<2x8x1x16xf32>)
// CHECK: arith.maximumf
// CHECK: %[[SUM:.+]] = linalg.generic {indexing_maps = [#[[$ID5]], #[[$ROW5]], #[[$ROW5]]], iterator_types = ["parallel", "parallel", "parallel", "parallel", "reduction"]}
// CHECK-SAME: ins(%[[SCALED]], %[[MAX]] :
// CHECK: arith.subf
// CHECK: math.exp
// CHECK: arith.addf
// CHECK: %[[PROBS:.+]] = linalg.generic {indexing_maps = [#[[$ID5]], #[[$ROW5]], #[[$ROW5]], #[[$ID5]]], iterator_types = ["parallel", "parallel", "parallel", "parallel", "parallel"]}
// CHECK-SAME: ins(%[[SCALED]], %[[MAX]], %[[SUM]] :
// CHECK: math.exp
// CHECK: arith.divf
// CHECK: %[[PV:.+]] = linalg.generic {indexing_maps = [#[[$Q]], #[[$V]], #[[$S]]], iterator_types = ["parallel", "parallel", "parallel", "parallel", "parallel", "reduction"]}
// CHECK-SAME: ins(%[[PROBS]], %[[V]] : tensor<2x8x1x16x24xf32>, tensor<2x8x24x32xf32>) outs(%{{.+}} : tensor<2x8x1x16x32xf32>)
// CHECK: %[[R:.+]] = tensor.collapse_shape %[[PV]] {{\[}}[0], [1, 2], [3], [4]] : tensor<2x8x1x16x32xf32> into tensor<2x8x16x32xf32>
// CHECK: return %[[R]]
func.func @attention(%q: tensor<2x8x16x64xf32>, %k: tensor<2x8x24x64xf32>, %v: tensor<2x8x24x32xf32>) -> tensor<2x8x16x32xf32> {
  %o = transformer.attention %q, %k, %v : (tensor<2x8x16x64xf32>, tensor<2x8x24x64xf32>, tensor<2x8x24x32xf32>) -> tensor<2x8x16x32xf32>
  return %o : tensor<2x8x16x32xf32>
}

// -----

// Grouped-query attention (9 query heads on 3 KV heads) decoding at an offset
// with a full mask: the query and the mask are viewed as [b, 3, 3, ...], the
// keys and values are read in place (no copy per group), and keys j > offset + i
// get -inf.
// CHECK-DAG: #[[$Q:map[0-9]*]] = affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1, d2, d3, d5)>
// CHECK-DAG: #[[$K:map[0-9]*]] = affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1, d4, d5)>
// CHECK-DAG: #[[$S:map[0-9]*]] = affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1, d2, d3, d4)>
// CHECK-DAG: #[[$ID5:map[0-9]*]] = affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d2, d3, d4)>
// CHECK-LABEL: func.func @attention_gqa_mask_causal_offset
// CHECK-SAME: (%[[Q:[a-z0-9]+]]: tensor<1x9x1x64xf32>, %[[K:[a-z0-9]+]]: tensor<1x3x128x64xf32>, %[[V:[a-z0-9]+]]: tensor<1x3x128x64xf32>, %[[M:[a-z0-9]+]]: tensor<1x9x1x128xf32>, %[[OFF:[a-z0-9]+]]: index)
// CHECK-NOT: tensor.expand_shape %[[K]]
// CHECK: %[[Q5:.+]] = tensor.expand_shape %[[Q]] {{\[}}[0], [1, 2], [3], [4]] output_shape [1, 3, 3, 1, 64] : tensor<1x9x1x64xf32> into tensor<1x3x3x1x64xf32>
// CHECK: %[[QK:.+]] = linalg.generic {indexing_maps = [#[[$Q]], #[[$K]], #[[$S]]]
// CHECK-SAME: ins(%[[Q5]], %[[K]] : tensor<1x3x3x1x64xf32>, tensor<1x3x128x64xf32>)
// CHECK: %[[M5:.+]] = tensor.expand_shape %[[M]] {{\[}}[0], [1, 2], [3], [4]] output_shape [1, 3, 3, 1, 128] : tensor<1x9x1x128xf32> into tensor<1x3x3x1x128xf32>
// CHECK: %[[SCALE:.+]] = arith.constant 1.250000e-01 : f32
// CHECK: %[[NEGINF:.+]] = arith.constant 0xFF800000 : f32
// CHECK: linalg.generic {indexing_maps = [#[[$ID5]], #[[$ID5]], #[[$ID5]]], iterator_types = ["parallel", "parallel", "parallel", "parallel", "parallel"]}
// CHECK-SAME: ins(%[[QK]], %[[M5]] : tensor<1x3x3x1x128xf32>, tensor<1x3x3x1x128xf32>)
// CHECK: ^bb0(%[[S:.+]]: f32, %[[MV:.+]]: f32, %{{.+}}: f32):
// CHECK: %[[SC:.+]] = arith.mulf %[[S]], %[[SCALE]] : f32
// CHECK: %[[SM:.+]] = arith.addf %[[SC]], %[[MV]] : f32
// CHECK: %[[I:.+]] = linalg.index 3 : index
// CHECK: %[[J:.+]] = linalg.index 4 : index
// CHECK: %[[LIMIT:.+]] = arith.addi %[[I]], %[[OFF]] : index
// CHECK: %[[FUTURE:.+]] = arith.cmpi ugt, %[[J]], %[[LIMIT]] : index
// CHECK: %[[SEL:.+]] = arith.select %[[FUTURE]], %[[NEGINF]], %[[SM]] : f32
// CHECK: linalg.yield %[[SEL]] : f32
// CHECK: arith.maximumf
// CHECK: %[[PV:.+]] = linalg.generic {{.+}} ins(%{{.+}}, %[[V]] : tensor<1x3x3x1x128xf32>, tensor<1x3x128x64xf32>)
// CHECK: tensor.collapse_shape %[[PV]] {{\[}}[0], [1, 2], [3], [4]] : tensor<1x3x3x1x64xf32> into tensor<1x9x1x64xf32>
func.func @attention_gqa_mask_causal_offset(%q: tensor<1x9x1x64xf32>, %k: tensor<1x3x128x64xf32>, %v: tensor<1x3x128x64xf32>, %m: tensor<1x9x1x128xf32>, %pos: index) -> tensor<1x9x1x64xf32> {
  %o = transformer.attention %q, %k, %v mask(%m) offset(%pos) {causal} : (tensor<1x9x1x64xf32>, tensor<1x3x128x64xf32>, tensor<1x3x128x64xf32>, tensor<1x9x1x128xf32>, index) -> tensor<1x9x1x64xf32>
  return %o : tensor<1x9x1x64xf32>
}

// -----

// A padding mask [batch, 1, 1, kv_len] broadcasts: its size-1 dims are read at 0.
// CHECK-DAG: #[[$ID5:map[0-9]*]] = affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d2, d3, d4)>
// CHECK-DAG: #[[$MASK:map[0-9]*]] = affine_map<(d0, d1, d2, d3, d4) -> (d0, 0, d2, 0, d4)>
// CHECK-LABEL: func.func @attention_padding_mask_scale
// CHECK-SAME: (%[[Q:[a-z0-9]+]]: tensor<2x12x9x32xf32>, %[[M:[a-z0-9]+]]: tensor<2x1x1x9xf32>)
// CHECK: %[[M5:.+]] = tensor.expand_shape %[[M]] {{\[}}[0], [1, 2], [3], [4]] output_shape [2, 1, 1, 1, 9] : tensor<2x1x1x9xf32> into tensor<2x1x1x1x9xf32>
// CHECK: %[[SCALE:.+]] = arith.constant 5.000000e-01 : f32
// CHECK: linalg.generic {indexing_maps = [#[[$ID5]], #[[$MASK]], #[[$ID5]]], iterator_types = ["parallel", "parallel", "parallel", "parallel", "parallel"]}
// CHECK-SAME: ins(%{{.+}}, %[[M5]] : tensor<2x12x1x9x9xf32>, tensor<2x1x1x1x9xf32>)
// CHECK-NOT: arith.cmpi
// CHECK: %[[SC:.+]] = arith.mulf %{{.+}}, %[[SCALE]] : f32
// CHECK-NEXT: %[[SM:.+]] = arith.addf %[[SC]], %{{.+}} : f32
// CHECK-NEXT: linalg.yield %[[SM]] : f32
func.func @attention_padding_mask_scale(%q: tensor<2x12x9x32xf32>, %m: tensor<2x1x1x9xf32>) -> tensor<2x12x9x32xf32> {
  %o = transformer.attention %q, %q, %q mask(%m) {scale = 0.5 : f64} : (tensor<2x12x9x32xf32>, tensor<2x12x9x32xf32>, tensor<2x12x9x32xf32>, tensor<2x1x1x9xf32>) -> tensor<2x12x9x32xf32>
  return %o : tensor<2x12x9x32xf32>
}

// -----

// Causal without offset: query row i sees keys j <= i. Dynamic batch and
// sequence lengths come from tensor.dim; the head split stays static. Keys past
// the last query are never read: K and V are sliced to min(q_len, kv_len) rows.
// CHECK-LABEL: func.func @attention_causal_dynamic
// CHECK-SAME: (%[[Q:[a-z0-9]+]]: tensor<?x8x?x64xf32>, %[[K:[a-z0-9]+]]: tensor<?x2x?x64xf32>, %[[V:[a-z0-9]+]]: tensor<?x2x?x?xf32>)
// CHECK: %[[QL:.+]] = tensor.dim %[[Q]], %{{.+}} : tensor<?x8x?x64xf32>
// CHECK: %[[KL:.+]] = tensor.dim %[[K]], %{{.+}} : tensor<?x2x?x64xf32>
// CHECK: %[[ROWS:.+]] = arith.minui %[[QL]], %[[KL]] : index
// CHECK: %[[KS:.+]] = tensor.extract_slice %[[K]][0, 0, 0, 0] [%{{.+}}, 2, %[[ROWS]], 64] [1, 1, 1, 1]
// CHECK: tensor.extract_slice %[[V]][0, 0, 0, 0] [%{{.+}}, 2, %[[ROWS]], %{{.+}}] [1, 1, 1, 1]
// CHECK-DAG: %[[B:.+]] = tensor.dim %[[Q]], %{{.+}} : tensor<?x8x?x64xf32>
// CHECK-DAG: %[[L:.+]] = tensor.dim %[[Q]], %{{.+}} : tensor<?x8x?x64xf32>
// CHECK: %[[Q5:.+]] = tensor.expand_shape %[[Q]] {{\[}}[0], [1, 2], [3], [4]] output_shape [%[[B]], 2, 4, %[[L]], 64] : tensor<?x8x?x64xf32> into tensor<?x2x4x?x64xf32>
// CHECK: linalg.generic {{.*}} ins(%[[Q5]], %[[KS]] :
// CHECK: %[[NEGINF:.+]] = arith.constant 0xFF800000 : f32
// CHECK: linalg.generic
// CHECK-SAME: outs(%{{.+}} : tensor<?x2x4x?x?xf32>)
// CHECK: %[[I:.+]] = linalg.index 3 : index
// CHECK: %[[J:.+]] = linalg.index 4 : index
// CHECK-NOT: arith.addi
// CHECK: %[[FUTURE:.+]] = arith.cmpi ugt, %[[J]], %[[I]] : index
// CHECK: arith.select %[[FUTURE]], %[[NEGINF]], %{{.+}} : f32
// CHECK: tensor.collapse_shape %{{.+}} {{\[}}[0], [1, 2], [3], [4]] : tensor<?x2x4x?x?xf32> into tensor<?x8x?x?xf32>
func.func @attention_causal_dynamic(%q: tensor<?x8x?x64xf32>, %k: tensor<?x2x?x64xf32>, %v: tensor<?x2x?x?xf32>) -> tensor<?x8x?x?xf32> {
  %o = transformer.attention %q, %k, %v {causal} : (tensor<?x8x?x64xf32>, tensor<?x2x?x64xf32>, tensor<?x2x?x?xf32>) -> tensor<?x8x?x?xf32>
  return %o : tensor<?x8x?x?xf32>
}

//===----------------------------------------------------------------------===//
// kv_cache_update, split_heads, merge_heads
//===----------------------------------------------------------------------===//

// -----

// CHECK-LABEL: func.func @kv_cache_update
// CHECK-SAME: (%[[C:[a-z0-9]+]]: tensor<1x3x128x64xf32>, %[[U:[a-z0-9]+]]: tensor<1x3x1x64xf32>, %[[P:[a-z0-9]+]]: index)
// CHECK: %[[R:.+]] = tensor.insert_slice %[[U]] into %[[C]][0, 0, %[[P]], 0] [1, 3, 1, 64] [1, 1, 1, 1] : tensor<1x3x1x64xf32> into tensor<1x3x128x64xf32>
// CHECK-NEXT: return %[[R]]
func.func @kv_cache_update(%cache: tensor<1x3x128x64xf32>, %new: tensor<1x3x1x64xf32>, %pos: index) -> tensor<1x3x128x64xf32> {
  %c = transformer.kv_cache_update %cache, %new at %pos : tensor<1x3x128x64xf32>, tensor<1x3x1x64xf32> -> tensor<1x3x128x64xf32>
  return %c : tensor<1x3x128x64xf32>
}

// -----

// CHECK-LABEL: func.func @kv_cache_update_dynamic
// CHECK-SAME: (%[[C:[a-z0-9]+]]: tensor<?x3x?x64xf16>, %[[U:[a-z0-9]+]]: tensor<?x3x?x64xf16>, %[[P:[a-z0-9]+]]: index)
// CHECK-DAG: %[[B:.+]] = tensor.dim %[[U]], %{{.+}} : tensor<?x3x?x64xf16>
// CHECK-DAG: %[[N:.+]] = tensor.dim %[[U]], %{{.+}} : tensor<?x3x?x64xf16>
// CHECK: tensor.insert_slice %[[U]] into %[[C]][0, 0, %[[P]], 0] [%[[B]], 3, %[[N]], 64] [1, 1, 1, 1] : tensor<?x3x?x64xf16> into tensor<?x3x?x64xf16>
func.func @kv_cache_update_dynamic(%cache: tensor<?x3x?x64xf16>, %new: tensor<?x3x?x64xf16>, %pos: index) -> tensor<?x3x?x64xf16> {
  %c = transformer.kv_cache_update %cache, %new at %pos : tensor<?x3x?x64xf16>, tensor<?x3x?x64xf16> -> tensor<?x3x?x64xf16>
  return %c : tensor<?x3x?x64xf16>
}

// -----

// CHECK-LABEL: func.func @split_heads
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<1x7x576xf32>)
// CHECK: %[[E:.+]] = tensor.expand_shape %[[X]] {{\[}}[0], [1], [2, 3]] output_shape [1, 7, 9, 64] : tensor<1x7x576xf32> into tensor<1x7x9x64xf32>
// CHECK: %[[INIT:.+]] = tensor.empty() : tensor<1x9x7x64xf32>
// CHECK: %[[T:.+]] = linalg.transpose ins(%[[E]] : tensor<1x7x9x64xf32>) outs(%[[INIT]] : tensor<1x9x7x64xf32>) permutation = [0, 2, 1, 3]
// CHECK: return %[[T]]
func.func @split_heads(%x: tensor<1x7x576xf32>) -> tensor<1x9x7x64xf32> {
  %h = transformer.split_heads %x {num_heads = 9 : i64} : tensor<1x7x576xf32> -> tensor<1x9x7x64xf32>
  return %h : tensor<1x9x7x64xf32>
}

// -----

// A dynamic feature dim is divided by num_heads at run time.
// CHECK-LABEL: func.func @split_heads_dynamic
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<?x?x?xf32>)
// CHECK-DAG: %[[B:.+]] = tensor.dim %[[X]], %{{.+}} : tensor<?x?x?xf32>
// CHECK-DAG: %[[S:.+]] = tensor.dim %[[X]], %{{.+}} : tensor<?x?x?xf32>
// CHECK-DAG: %[[F:.+]] = tensor.dim %[[X]], %{{.+}} : tensor<?x?x?xf32>
// CHECK-DAG: %[[H:.+]] = arith.constant 4 : index
// CHECK: %[[HD:.+]] = arith.divui %[[F]], %[[H]] : index
// CHECK: %[[E:.+]] = tensor.expand_shape %[[X]] {{\[}}[0], [1], [2, 3]] output_shape [%[[B]], %[[S]], 4, %[[HD]]] : tensor<?x?x?xf32> into tensor<?x?x4x?xf32>
// CHECK: %[[INIT:.+]] = tensor.empty(%[[B]], %[[S]], %[[HD]]) : tensor<?x4x?x?xf32>
// CHECK: linalg.transpose ins(%[[E]] : tensor<?x?x4x?xf32>) outs(%[[INIT]] : tensor<?x4x?x?xf32>) permutation = [0, 2, 1, 3]
func.func @split_heads_dynamic(%x: tensor<?x?x?xf32>) -> tensor<?x4x?x?xf32> {
  %h = transformer.split_heads %x {num_heads = 4 : i64} : tensor<?x?x?xf32> -> tensor<?x4x?x?xf32>
  return %h : tensor<?x4x?x?xf32>
}

// -----

// One position (a decode step): [b, 1, h*d] and [b, h, 1, d] hold the same elements in the same order,
// so the split is a reshape (a view once bufferized), not a transpose.
// CHECK-LABEL: func.func @split_heads_one_position
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<2x1x576xf32>)
// CHECK: %[[F:.+]] = tensor.collapse_shape %[[X]] {{\[}}[0], [1, 2]] : tensor<2x1x576xf32> into tensor<2x576xf32>
// CHECK: %[[E:.+]] = tensor.expand_shape %[[F]] {{\[}}[0], [1, 2, 3]] output_shape [2, 9, 1, 64] : tensor<2x576xf32> into tensor<2x9x1x64xf32>
// CHECK-NOT: linalg.transpose
// CHECK: return %[[E]]
func.func @split_heads_one_position(%x: tensor<2x1x576xf32>) -> tensor<2x9x1x64xf32> {
  %h = transformer.split_heads %x {num_heads = 9 : i64} : tensor<2x1x576xf32> -> tensor<2x9x1x64xf32>
  return %h : tensor<2x9x1x64xf32>
}

// -----

// CHECK-LABEL: func.func @merge_heads_one_position
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<2x9x1x64xf32>)
// CHECK: %[[F:.+]] = tensor.collapse_shape %[[X]] {{\[}}[0], [1, 2, 3]] : tensor<2x9x1x64xf32> into tensor<2x576xf32>
// CHECK: %[[E:.+]] = tensor.expand_shape %[[F]] {{\[}}[0], [1, 2]] output_shape [2, 1, 576] : tensor<2x576xf32> into tensor<2x1x576xf32>
// CHECK-NOT: linalg.transpose
// CHECK: return %[[E]]
func.func @merge_heads_one_position(%x: tensor<2x9x1x64xf32>) -> tensor<2x1x576xf32> {
  %m = transformer.merge_heads %x : tensor<2x9x1x64xf32> -> tensor<2x1x576xf32>
  return %m : tensor<2x1x576xf32>
}

// -----

// CHECK-LABEL: func.func @merge_heads
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<1x9x7x64xf32>)
// CHECK: %[[INIT:.+]] = tensor.empty() : tensor<1x7x9x64xf32>
// CHECK: %[[T:.+]] = linalg.transpose ins(%[[X]] : tensor<1x9x7x64xf32>) outs(%[[INIT]] : tensor<1x7x9x64xf32>) permutation = [0, 2, 1, 3]
// CHECK: %[[R:.+]] = tensor.collapse_shape %[[T]] {{\[}}[0], [1], [2, 3]] : tensor<1x7x9x64xf32> into tensor<1x7x576xf32>
// CHECK: return %[[R]]
func.func @merge_heads(%x: tensor<1x9x7x64xf32>) -> tensor<1x7x576xf32> {
  %m = transformer.merge_heads %x : tensor<1x9x7x64xf32> -> tensor<1x7x576xf32>
  return %m : tensor<1x7x576xf32>
}

// -----

// CHECK-LABEL: func.func @merge_heads_dynamic
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<2x?x5x16xf32>)
// CHECK: %[[H:.+]] = tensor.dim %[[X]], %{{.+}} : tensor<2x?x5x16xf32>
// CHECK: %[[INIT:.+]] = tensor.empty(%[[H]]) : tensor<2x5x?x16xf32>
// CHECK: %[[T:.+]] = linalg.transpose ins(%[[X]] : tensor<2x?x5x16xf32>) outs(%[[INIT]] : tensor<2x5x?x16xf32>) permutation = [0, 2, 1, 3]
// CHECK: tensor.collapse_shape %[[T]] {{\[}}[0], [1], [2, 3]] : tensor<2x5x?x16xf32> into tensor<2x5x?xf32>
func.func @merge_heads_dynamic(%x: tensor<2x?x5x16xf32>) -> tensor<2x5x?xf32> {
  %m = transformer.merge_heads %x : tensor<2x?x5x16xf32> -> tensor<2x5x?xf32>
  return %m : tensor<2x5x?xf32>
}

//===----------------------------------------------------------------------===//
// softmax, silu, gelu
//===----------------------------------------------------------------------===//

// -----

// softmax along axis 1 of 3: the reduced loop is the middle one.
// CHECK-DAG: #[[$ID3:map[0-9]*]] = affine_map<(d0, d1, d2) -> (d0, d1, d2)>
// CHECK-DAG: #[[$ROW:map[0-9]*]] = affine_map<(d0, d1, d2) -> (d0, d2)>
// CHECK-LABEL: func.func @softmax_axis
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<2x8x16xf32>)
// CHECK: %[[NEGINF:.+]] = arith.constant 0xFF800000 : f32
// CHECK: %[[MFILL:.+]] = linalg.fill ins(%[[NEGINF]] : f32) outs(%{{.+}} : tensor<2x16xf32>)
// CHECK: %[[MAX:.+]] = linalg.generic {indexing_maps = [#[[$ID3]], #[[$ROW]]], iterator_types = ["parallel", "reduction", "parallel"]}
// CHECK-SAME: ins(%[[X]] : tensor<2x8x16xf32>) outs(%[[MFILL]] : tensor<2x16xf32>)
// CHECK: arith.maximumf
// CHECK: %[[SFILL:.+]] = linalg.fill ins(%{{.+}} : f32) outs(%{{.+}} : tensor<2x16xf32>)
// CHECK: %[[SUM:.+]] = linalg.generic {indexing_maps = [#[[$ID3]], #[[$ROW]], #[[$ROW]]], iterator_types = ["parallel", "reduction", "parallel"]}
// CHECK-SAME: ins(%[[X]], %[[MAX]] : tensor<2x8x16xf32>, tensor<2x16xf32>) outs(%[[SFILL]] : tensor<2x16xf32>)
// CHECK: ^bb0(%[[V:.+]]: f32, %[[M:.+]]: f32, %[[ACC:.+]]: f32):
// CHECK: %[[D:.+]] = arith.subf %[[V]], %[[M]] : f32
// CHECK: %[[E:.+]] = math.exp %[[D]] : f32
// CHECK: arith.addf %[[ACC]], %[[E]] : f32
// CHECK: %[[R:.+]] = linalg.generic {indexing_maps = [#[[$ID3]], #[[$ROW]], #[[$ROW]], #[[$ID3]]], iterator_types = ["parallel", "parallel", "parallel"]}
// CHECK-SAME: ins(%[[X]], %[[MAX]], %[[SUM]] :
// CHECK: ^bb0(%[[V2:.+]]: f32, %[[M2:.+]]: f32, %[[S2:.+]]: f32, %{{.+}}: f32):
// CHECK: %[[D2:.+]] = arith.subf %[[V2]], %[[M2]] : f32
// CHECK: %[[E2:.+]] = math.exp %[[D2]] : f32
// CHECK: %[[P:.+]] = arith.divf %[[E2]], %[[S2]] : f32
// CHECK: linalg.yield %[[P]] : f32
// CHECK: return %[[R]]
func.func @softmax_axis(%x: tensor<2x8x16xf32>) -> tensor<2x8x16xf32> {
  %y = transformer.softmax %x {axis = 1 : i64} : tensor<2x8x16xf32>
  return %y : tensor<2x8x16xf32>
}

// -----

// The default (last) axis, dynamic; f16 is computed in f32.
// CHECK-DAG: #[[$ID2:map[0-9]*]] = affine_map<(d0, d1) -> (d0, d1)>
// CHECK-DAG: #[[$ROW:map[0-9]*]] = affine_map<(d0, d1) -> (d0)>
// CHECK-LABEL: func.func @softmax_f16_dynamic
// CHECK: linalg.generic {indexing_maps = [#[[$ID2]], #[[$ROW]]], iterator_types = ["parallel", "reduction"]}
// CHECK-SAME: outs(%{{.+}} : tensor<4xf32>)
// CHECK: arith.extf %{{.+}} : f16 to f32
// CHECK: arith.maximumf
// CHECK: linalg.generic {indexing_maps = [#[[$ID2]], #[[$ROW]], #[[$ROW]]], iterator_types = ["parallel", "reduction"]}
// CHECK: %[[D:.+]] = tensor.dim
// CHECK: %[[INIT:.+]] = tensor.empty(%[[D]]) : tensor<4x?xf16>
// CHECK: linalg.generic {indexing_maps = [#[[$ID2]], #[[$ROW]], #[[$ROW]], #[[$ID2]]], iterator_types = ["parallel", "parallel"]}
// CHECK-SAME: outs(%[[INIT]] : tensor<4x?xf16>)
// CHECK: arith.divf
// CHECK: arith.truncf %{{.+}} : f32 to f16
func.func @softmax_f16_dynamic(%x: tensor<4x?xf16>) -> tensor<4x?xf16> {
  %y = transformer.softmax %x : tensor<4x?xf16>
  return %y : tensor<4x?xf16>
}

// -----

// silu(x) = x / (1 + exp(-x))
// CHECK-DAG: #[[$ID2:map[0-9]*]] = affine_map<(d0, d1) -> (d0, d1)>
// CHECK-LABEL: func.func @silu
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<2x8xf32>)
// CHECK: linalg.generic {indexing_maps = [#[[$ID2]], #[[$ID2]]], iterator_types = ["parallel", "parallel"]}
// CHECK-SAME: ins(%[[X]] : tensor<2x8xf32>)
// CHECK: ^bb0(%[[V:.+]]: f32, %{{.+}}: f32):
// CHECK: %[[ONE:.+]] = arith.constant 1.000000e+00 : f32
// CHECK: %[[NEG:.+]] = arith.negf %[[V]] : f32
// CHECK: %[[E:.+]] = math.exp %[[NEG]] : f32
// CHECK: %[[DEN:.+]] = arith.addf %[[ONE]], %[[E]] : f32
// CHECK: %[[Y:.+]] = arith.divf %[[V]], %[[DEN]] : f32
// CHECK: linalg.yield %[[Y]] : f32
func.func @silu(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
  %y = transformer.silu %x : tensor<2x8xf32>
  return %y : tensor<2x8xf32>
}

// -----

// gelu(x) = 0.5 x (1 + erf(x / sqrt(2)))
// CHECK-LABEL: func.func @gelu
// CHECK: linalg.generic
// CHECK: ^bb0(%[[V:.+]]: f32, %{{.+}}: f32):
// CHECK-DAG: %[[ONE:.+]] = arith.constant 1.000000e+00 : f32
// CHECK-DAG: %[[HALF:.+]] = arith.constant 5.000000e-01 : f32
// CHECK-DAG: %[[RSQRT2:.+]] = arith.constant 0.707106769 : f32
// CHECK: %[[S:.+]] = arith.mulf %[[V]], %[[RSQRT2]] : f32
// CHECK: %[[ERF:.+]] = math.erf %[[S]] : f32
// CHECK: %[[HX:.+]] = arith.mulf %[[HALF]], %[[V]] : f32
// CHECK: %[[ONEP:.+]] = arith.addf %[[ONE]], %[[ERF]] : f32
// CHECK: %[[Y:.+]] = arith.mulf %[[HX]], %[[ONEP]] : f32
// CHECK: linalg.yield %[[Y]] : f32
// CHECK-NOT: math.tanh
func.func @gelu(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
  %y = transformer.gelu %x : tensor<2x8xf32>
  return %y : tensor<2x8xf32>
}

// -----

// gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
// CHECK-LABEL: func.func @gelu_tanh
// CHECK: linalg.generic
// CHECK: ^bb0(%[[V:.+]]: f32, %{{.+}}: f32):
// CHECK-NOT: math.erf
// CHECK: %[[X2:.+]] = arith.mulf %[[V]], %[[V]] : f32
// CHECK: %[[X3:.+]] = arith.mulf %[[X2]], %[[V]] : f32
// CHECK: %[[C:.+]] = arith.constant 4.471500e-02 : f32
// CHECK: %[[T:.+]] = arith.mulf %[[X3]], %[[C]] : f32
// CHECK: %[[POLY:.+]] = arith.addf %[[V]], %[[T]] : f32
// CHECK: %[[K:.+]] = arith.constant 0.797884583 : f32
// CHECK: %[[ARG:.+]] = arith.mulf %[[POLY]], %[[K]] : f32
// CHECK: math.tanh %[[ARG]] : f32
func.func @gelu_tanh(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
  %y = transformer.gelu %x {approximate = "tanh"} : tensor<2x8xf32>
  return %y : tensor<2x8xf32>
}

//===----------------------------------------------------------------------===//
// gated_mlp: gate and up projections, act(gate) * up fused, down projection
//===----------------------------------------------------------------------===//

// -----

// CHECK-DAG: #[[$X:map[0-9]*]] = affine_map<(d0, d1, d2, d3) -> (d0, d1, d3)>
// CHECK-DAG: #[[$W:map[0-9]*]] = affine_map<(d0, d1, d2, d3) -> (d2, d3)>
// CHECK-DAG: #[[$OUT:map[0-9]*]] = affine_map<(d0, d1, d2, d3) -> (d0, d1, d2)>
// CHECK-DAG: #[[$ID3:map[0-9]*]] = affine_map<(d0, d1, d2) -> (d0, d1, d2)>
// CHECK-LABEL: func.func @gated_mlp_silu
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<1x7x64xf32>, %[[WG:[a-z0-9]+]]: tensor<128x64xf32>, %[[WU:[a-z0-9]+]]: tensor<128x64xf32>, %[[WD:[a-z0-9]+]]: tensor<64x128xf32>)
// CHECK: %[[GATE:.+]] = linalg.generic {indexing_maps = [#[[$X]], #[[$W]], #[[$OUT]]], iterator_types = ["parallel", "parallel", "parallel", "reduction"]}
// CHECK-SAME: ins(%[[X]], %[[WG]] : tensor<1x7x64xf32>, tensor<128x64xf32>)
// CHECK: %[[UP:.+]] = linalg.generic {indexing_maps = [#[[$X]], #[[$W]], #[[$OUT]]], iterator_types = ["parallel", "parallel", "parallel", "reduction"]}
// CHECK-SAME: ins(%[[X]], %[[WU]] : tensor<1x7x64xf32>, tensor<128x64xf32>)
// CHECK: %[[H:.+]] = linalg.generic {indexing_maps = [#[[$ID3]], #[[$ID3]], #[[$ID3]]], iterator_types = ["parallel", "parallel", "parallel"]}
// CHECK-SAME: ins(%[[GATE]], %[[UP]] : tensor<1x7x128xf32>, tensor<1x7x128xf32>)
// CHECK: ^bb0(%[[G:.+]]: f32, %[[U:.+]]: f32, %{{.+}}: f32):
// CHECK: arith.negf %[[G]] : f32
// CHECK: math.exp
// CHECK: %[[ACT:.+]] = arith.divf %[[G]], %{{.+}} : f32
// CHECK: %[[PROD:.+]] = arith.mulf %[[ACT]], %[[U]] : f32
// CHECK: linalg.yield %[[PROD]] : f32
// CHECK: %[[R:.+]] = linalg.generic {indexing_maps = [#[[$X]], #[[$W]], #[[$OUT]]], iterator_types = ["parallel", "parallel", "parallel", "reduction"]}
// CHECK-SAME: ins(%[[H]], %[[WD]] : tensor<1x7x128xf32>, tensor<64x128xf32>)
// CHECK: return %[[R]]
func.func @gated_mlp_silu(%x: tensor<1x7x64xf32>, %wg: tensor<128x64xf32>, %wu: tensor<128x64xf32>, %wd: tensor<64x128xf32>) -> tensor<1x7x64xf32> {
  %y = transformer.gated_mlp %x, %wg, %wu, %wd : (tensor<1x7x64xf32>, tensor<128x64xf32>, tensor<128x64xf32>, tensor<64x128xf32>) -> tensor<1x7x64xf32>
  return %y : tensor<1x7x64xf32>
}

// -----

// CHECK-LABEL: func.func @gated_mlp_gelu
// CHECK-COUNT-2: linalg.generic {{.+}} iterator_types = ["parallel", "parallel", "reduction"]
// CHECK: linalg.generic {{.+}} iterator_types = ["parallel", "parallel"]
// CHECK: ^bb0(%[[G:.+]]: f32, %[[U:.+]]: f32, %{{.+}}: f32):
// CHECK-NOT: math.tanh
// CHECK: math.erf
// CHECK: arith.addf
// CHECK-NEXT: %[[ACT:.+]] = arith.mulf %{{.+}}, %{{.+}} : f32
// CHECK-NEXT: %[[PROD:.+]] = arith.mulf %[[ACT]], %[[U]] : f32
// CHECK-NEXT: linalg.yield %[[PROD]] : f32
// CHECK: linalg.generic {{.+}} iterator_types = ["parallel", "parallel", "reduction"]
func.func @gated_mlp_gelu(%x: tensor<7x64xf32>, %wg: tensor<128x64xf32>, %wu: tensor<128x64xf32>, %wd: tensor<64x128xf32>) -> tensor<7x64xf32> {
  %y = transformer.gated_mlp %x, %wg, %wu, %wd {activation = "gelu"} : (tensor<7x64xf32>, tensor<128x64xf32>, tensor<128x64xf32>, tensor<64x128xf32>) -> tensor<7x64xf32>
  return %y : tensor<7x64xf32>
}

// -----

// bf16: the projections accumulate in f32; their results and act(gate) * up
// are rounded to bf16 before the down projection, as in eager PyTorch.
// CHECK-LABEL: func.func @gated_mlp_gelu_tanh_bf16_dynamic
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<?x64xbf16>
// CHECK: tensor.dim %[[X]]
// CHECK: linalg.generic
// CHECK-SAME: outs(%{{.+}} : tensor<?x?xf32>)
// CHECK: linalg.generic
// CHECK-SAME: outs(%{{.+}} : tensor<?x?xf32>)
// CHECK: linalg.generic
// CHECK-SAME: outs(%{{.+}} : tensor<?x?xbf16>)
// CHECK: ^bb0(%[[G:.+]]: f32, %[[U:.+]]: f32, %{{.+}}: bf16):
// CHECK-NEXT: %[[GB:.+]] = arith.truncf %[[G]] : f32 to bf16
// CHECK-NEXT: arith.extf %[[GB]] : bf16 to f32
// CHECK-NEXT: %[[UB:.+]] = arith.truncf %[[U]] : f32 to bf16
// CHECK-NEXT: %[[UF:.+]] = arith.extf %[[UB]] : bf16 to f32
// CHECK-NOT: math.erf
// CHECK: math.tanh
// CHECK: %[[PROD:.+]] = arith.mulf %{{.+}}, %[[UF]] : f32
// CHECK-NEXT: %[[H:.+]] = arith.truncf %[[PROD]] : f32 to bf16
// CHECK: linalg.yield %[[H]] : bf16
// CHECK: linalg.generic
// CHECK-SAME: ins(%{{.+}}, %{{.+}} : tensor<?x?xbf16>, tensor<64x?xbf16>) outs(%{{.+}} : tensor<?x64xf32>)
// CHECK: arith.truncf %{{.+}} : f32 to bf16
// CHECK: -> tensor<?x64xbf16>
func.func @gated_mlp_gelu_tanh_bf16_dynamic(%x: tensor<?x64xbf16>, %wg: tensor<?x64xbf16>, %wu: tensor<?x64xbf16>, %wd: tensor<64x?xbf16>) -> tensor<?x64xbf16> {
  %y = transformer.gated_mlp %x, %wg, %wu, %wd {activation = "gelu_tanh"} : (tensor<?x64xbf16>, tensor<?x64xbf16>, tensor<?x64xbf16>, tensor<64x?xbf16>) -> tensor<?x64xbf16>
  return %y : tensor<?x64xbf16>
}

//===----------------------------------------------------------------------===//
// argmax: one reduction carrying (max, index)
//===----------------------------------------------------------------------===//

// -----

// CHECK-DAG: #[[$ID2:map[0-9]*]] = affine_map<(d0, d1) -> (d0, d1)>
// CHECK-DAG: #[[$ROW:map[0-9]*]] = affine_map<(d0, d1) -> (d0)>
// CHECK-LABEL: func.func @argmax
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<2x100xf32>)
// CHECK-DAG: %[[NEGINF:.+]] = arith.constant 0xFF800000 : f32
// CHECK-DAG: %[[ZERO:.+]] = arith.constant 0 : i64
// CHECK-DAG: %[[MAXINIT:.+]] = linalg.fill ins(%[[NEGINF]] : f32) outs(%{{.+}} : tensor<2xf32>)
// CHECK-DAG: %[[IDXINIT:.+]] = linalg.fill ins(%[[ZERO]] : i64) outs(%{{.+}} : tensor<2xi64>)
// CHECK: %[[R:[a-z0-9_]+]]:2 = linalg.generic {indexing_maps = [#[[$ID2]], #[[$ROW]], #[[$ROW]]], iterator_types = ["parallel", "reduction"]}
// CHECK-SAME: ins(%[[X]] : tensor<2x100xf32>) outs(%[[MAXINIT]], %[[IDXINIT]] : tensor<2xf32>, tensor<2xi64>)
// CHECK: ^bb0(%[[V:.+]]: f32, %[[M:.+]]: f32, %[[I:.+]]: i64):
// CHECK: %[[J:.+]] = linalg.index 1 : index
// CHECK: %[[JI:.+]] = arith.index_cast %[[J]] : index to i64
// Strictly greater: the first maximum wins ties.
// CHECK: %[[GT:.+]] = arith.cmpf ogt, %[[V]], %[[M]] : f32
// CHECK: %[[NM:.+]] = arith.select %[[GT]], %[[V]], %[[M]] : f32
// CHECK: %[[NI:.+]] = arith.select %[[GT]], %[[JI]], %[[I]] : i64
// CHECK: linalg.yield %[[NM]], %[[NI]] : f32, i64
// CHECK: return %[[R]]#1 : tensor<2xi64>
func.func @argmax(%x: tensor<2x100xf32>) -> tensor<2xi64> {
  %i = transformer.argmax %x : tensor<2x100xf32> -> tensor<2xi64>
  return %i : tensor<2xi64>
}

// -----

// Causal prefill with no key past the last query (kv_len == q_len, no offset): the product with
// the values stays a plain contraction (mulf + addf, no select), which GEMM schedules recognize.
// CHECK-LABEL: func.func @attention_causal_prefill_pv_is_a_contraction
// CHECK: math.exp
// CHECK: linalg.generic {{.*}} iterator_types = ["parallel", "parallel", "parallel", "parallel", "parallel", "reduction"]
// CHECK-NEXT: ^bb0
// CHECK-NEXT: arith.mulf
// CHECK-NEXT: arith.addf
// CHECK-NEXT: linalg.yield
// CHECK: tensor.collapse_shape
func.func @attention_causal_prefill_pv_is_a_contraction(%q: tensor<1x4x8x16xf32>, %k: tensor<1x2x8x16xf32>) -> tensor<1x4x8x16xf32> {
  %o = transformer.attention %q, %k, %k {causal} : (tensor<1x4x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>) -> tensor<1x4x8x16xf32>
  return %o : tensor<1x4x8x16xf32>
}

// -----

// With a runtime offset (decoding into a cache), keys past the last query are never read: K and
// V are sliced to min(offset + q_len, kv_len) rows, so unwritten (NaN) cache rows cannot reach the
// result and the product with the values stays a plain contraction over the filled rows.
// CHECK-LABEL: func.func @attention_causal_decode_pv_skips_future_keys
// CHECK-SAME: (%[[Q:[a-z0-9]+]]: tensor<1x4x1x16xf32>, %[[K:[a-z0-9]+]]: tensor<1x2x32x16xf32>, %[[POS:[a-z0-9]+]]: index)
// CHECK: %[[END:.+]] = arith.addi %{{.+}}, %[[POS]] : index
// CHECK: %[[ROWS:.+]] = arith.minui %[[END]], %{{.+}} : index
// CHECK: tensor.extract_slice %[[K]][0, 0, 0, 0] [1, 2, %[[ROWS]], 16] [1, 1, 1, 1] : tensor<1x2x32x16xf32> to tensor<1x2x?x16xf32>
// CHECK: math.exp
// CHECK: linalg.generic {{.*}} iterator_types = ["parallel", "parallel", "parallel", "parallel", "parallel", "reduction"]
// CHECK-SAME: outs(%{{.+}} : tensor<1x2x2x1x16xf32>)
// CHECK-NEXT: ^bb0
// CHECK-NEXT: arith.mulf
// CHECK-NEXT: arith.addf
// CHECK-NEXT: linalg.yield
// CHECK: tensor.collapse_shape
func.func @attention_causal_decode_pv_skips_future_keys(%q: tensor<1x4x1x16xf32>, %k: tensor<1x2x32x16xf32>, %pos: index) -> tensor<1x4x1x16xf32> {
  %o = transformer.attention %q, %k, %k offset(%pos) {causal} : (tensor<1x4x1x16xf32>, tensor<1x2x32x16xf32>, tensor<1x2x32x16xf32>, index) -> tensor<1x4x1x16xf32>
  return %o : tensor<1x4x1x16xf32>
}
