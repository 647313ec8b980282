// RUN: kiln-opt %s | kiln-opt | FileCheck %s
// RUN: kiln-opt %s --mlir-print-op-generic | kiln-opt | FileCheck %s
// RUN: kiln-opt %s --mlir-print-op-generic | FileCheck %s --check-prefix=GENERIC

// Round trip of every `transformer` op and its variants (optional operands,
// attributes, dynamic dims), through the custom and the generic form. The
// custom printer elides attributes equal to their default, so a default spelled
// out in the input does not come back; the generic form (GENERIC) shows the
// properties the parser stored, defaults and operand segment sizes included.

//===----------------------------------------------------------------------===//
// embedding
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @embedding
// CHECK-SAME: (%[[T:[a-z0-9]+]]: tensor<100x16xf32>, %[[I:[a-z0-9]+]]: tensor<2x7xi64>)
func.func @embedding(%table: tensor<100x16xf32>, %ids: tensor<2x7xi64>) -> tensor<2x7x16xf32> {
  // CHECK: transformer.embedding %[[T]][%[[I]]] : tensor<100x16xf32>, tensor<2x7xi64> -> tensor<2x7x16xf32>
  %h = transformer.embedding %table[%ids] : tensor<100x16xf32>, tensor<2x7xi64> -> tensor<2x7x16xf32>
  return %h : tensor<2x7x16xf32>
}

// CHECK-LABEL: func.func @embedding_dynamic
func.func @embedding_dynamic(%table: tensor<?x?xbf16>, %ids: tensor<?xi32>) -> tensor<?x?xbf16> {
  // CHECK: transformer.embedding %{{.*}}[%{{.*}}] : tensor<?x?xbf16>, tensor<?xi32> -> tensor<?x?xbf16>
  %h = transformer.embedding %table[%ids] : tensor<?x?xbf16>, tensor<?xi32> -> tensor<?x?xbf16>
  return %h : tensor<?x?xbf16>
}

//===----------------------------------------------------------------------===//
// linear
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @linear_bias
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<2x7x64xf32>, %[[W:[a-z0-9]+]]: tensor<96x64xf32>, %[[B:[a-z0-9]+]]: tensor<96xf32>)
func.func @linear_bias(%x: tensor<2x7x64xf32>, %w: tensor<96x64xf32>, %b: tensor<96xf32>) -> tensor<2x7x96xf32> {
  // CHECK: transformer.linear %[[X]], %[[W]], %[[B]] : (tensor<2x7x64xf32>, tensor<96x64xf32>, tensor<96xf32>) -> tensor<2x7x96xf32>
  // GENERIC: "transformer.linear"(%{{.*}}, %{{.*}}, %{{.*}}) : (tensor<2x7x64xf32>, tensor<96x64xf32>, tensor<96xf32>) -> tensor<2x7x96xf32>
  %y = transformer.linear %x, %w, %b : (tensor<2x7x64xf32>, tensor<96x64xf32>, tensor<96xf32>) -> tensor<2x7x96xf32>
  return %y : tensor<2x7x96xf32>
}

// CHECK-LABEL: func.func @linear_no_bias
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<64xf16>, %[[W:[a-z0-9]+]]: tensor<32x64xf16>)
func.func @linear_no_bias(%x: tensor<64xf16>, %w: tensor<32x64xf16>) -> tensor<32xf16> {
  // CHECK: transformer.linear %[[X]], %[[W]] : (tensor<64xf16>, tensor<32x64xf16>) -> tensor<32xf16>
  %y = transformer.linear %x, %w : (tensor<64xf16>, tensor<32x64xf16>) -> tensor<32xf16>
  return %y : tensor<32xf16>
}

// CHECK-LABEL: func.func @linear_dynamic
func.func @linear_dynamic(%x: tensor<?x?x?xf32>, %w: tensor<?x?xf32>, %b: tensor<?xf32>) -> tensor<?x?x?xf32> {
  // CHECK: transformer.linear %{{.*}}, %{{.*}}, %{{.*}} : (tensor<?x?x?xf32>, tensor<?x?xf32>, tensor<?xf32>) -> tensor<?x?x?xf32>
  %y = transformer.linear %x, %w, %b : (tensor<?x?x?xf32>, tensor<?x?xf32>, tensor<?xf32>) -> tensor<?x?x?xf32>
  return %y : tensor<?x?x?xf32>
}

//===----------------------------------------------------------------------===//
// dequantize
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @dequantize_q8_0
// CHECK-SAME: (%[[Q:[a-z0-9]+]]: tensor<96x2x32xi8>, %[[D:[a-z0-9]+]]: tensor<96x2xf16>)
func.func @dequantize_q8_0(%qs: tensor<96x2x32xi8>, %d: tensor<96x2xf16>) -> tensor<96x64xf32> {
  // CHECK: transformer.dequantize %[[Q]], %[[D]] {format = "q8_0"} : (tensor<96x2x32xi8>, tensor<96x2xf16>) -> tensor<96x64xf32>
  // GENERIC: "transformer.dequantize"(%{{.*}}, %{{.*}}) <{format = "q8_0"}> : (tensor<96x2x32xi8>, tensor<96x2xf16>) -> tensor<96x64xf32>
  %w = transformer.dequantize %qs, %d {format = "q8_0"} : (tensor<96x2x32xi8>, tensor<96x2xf16>) -> tensor<96x64xf32>
  return %w : tensor<96x64xf32>
}

// CHECK-LABEL: func.func @dequantize_q4_0
// CHECK-SAME: (%[[Q:[a-z0-9]+]]: tensor<96x2x16xi8>, %[[D:[a-z0-9]+]]: tensor<96x2xf16>)
func.func @dequantize_q4_0(%qs: tensor<96x2x16xi8>, %d: tensor<96x2xf16>) -> tensor<96x64xf32> {
  // CHECK: transformer.dequantize %[[Q]], %[[D]] {format = "q4_0"} : (tensor<96x2x16xi8>, tensor<96x2xf16>) -> tensor<96x64xf32>
  // GENERIC: "transformer.dequantize"(%{{.*}}, %{{.*}}) <{format = "q4_0"}> : (tensor<96x2x16xi8>, tensor<96x2xf16>) -> tensor<96x64xf32>
  %w = transformer.dequantize %qs, %d {format = "q4_0"} : (tensor<96x2x16xi8>, tensor<96x2xf16>) -> tensor<96x64xf32>
  return %w : tensor<96x64xf32>
}

// CHECK-LABEL: func.func @dequantize_q4_1
// CHECK-SAME: (%[[Q:[a-z0-9]+]]: tensor<1536x18x16xi8>, %[[D:[a-z0-9]+]]: tensor<1536x18xf16>, %[[M:[a-z0-9]+]]: tensor<1536x18xf16>)
func.func @dequantize_q4_1(%qs: tensor<1536x18x16xi8>, %d: tensor<1536x18xf16>, %m: tensor<1536x18xf16>) -> tensor<1536x576xf32> {
  // CHECK: transformer.dequantize %[[Q]], %[[D]], %[[M]] {format = "q4_1"} : (tensor<1536x18x16xi8>, tensor<1536x18xf16>, tensor<1536x18xf16>) -> tensor<1536x576xf32>
  // GENERIC: "transformer.dequantize"(%{{.*}}, %{{.*}}, %{{.*}}) <{format = "q4_1"}> : (tensor<1536x18x16xi8>, tensor<1536x18xf16>, tensor<1536x18xf16>) -> tensor<1536x576xf32>
  %w = transformer.dequantize %qs, %d, %m {format = "q4_1"} : (tensor<1536x18x16xi8>, tensor<1536x18xf16>, tensor<1536x18xf16>) -> tensor<1536x576xf32>
  return %w : tensor<1536x576xf32>
}

// CHECK-LABEL: func.func @dequantize_dynamic
func.func @dequantize_dynamic(%qs: tensor<?x18x16xi8>, %d: tensor<?x18xf32>, %m: tensor<?x18xf32>, %q8: tensor<?x?x32xi8>, %d8: tensor<?x?xf16>) -> (tensor<?x576xf32>, tensor<?x?xf32>) {
  // A dynamic N stays dynamic; K is 32 per block when the block count is static, else dynamic.
  // CHECK: transformer.dequantize %{{.*}}, %{{.*}}, %{{.*}} {format = "q4_1"} : (tensor<?x18x16xi8>, tensor<?x18xf32>, tensor<?x18xf32>) -> tensor<?x576xf32>
  %w = transformer.dequantize %qs, %d, %m {format = "q4_1"} : (tensor<?x18x16xi8>, tensor<?x18xf32>, tensor<?x18xf32>) -> tensor<?x576xf32>
  // CHECK: transformer.dequantize %{{.*}}, %{{.*}} {format = "q8_0"} : (tensor<?x?x32xi8>, tensor<?x?xf16>) -> tensor<?x?xf32>
  %v = transformer.dequantize %q8, %d8 {format = "q8_0"} : (tensor<?x?x32xi8>, tensor<?x?xf16>) -> tensor<?x?xf32>
  return %w, %v : tensor<?x576xf32>, tensor<?x?xf32>
}

//===----------------------------------------------------------------------===//
// matmul
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @matmul
// CHECK-SAME: (%[[A:[a-z0-9]+]]: tensor<2x8x16x64xf32>, %[[B:[a-z0-9]+]]: tensor<2x8x64x32xf32>)
func.func @matmul(%a: tensor<2x8x16x64xf32>, %b: tensor<2x8x64x32xf32>) -> tensor<2x8x16x32xf32> {
  // CHECK: transformer.matmul %[[A]], %[[B]] : (tensor<2x8x16x64xf32>, tensor<2x8x64x32xf32>) -> tensor<2x8x16x32xf32>
  // GENERIC: "transformer.matmul"(%{{.*}}, %{{.*}}) : (tensor<2x8x16x64xf32>, tensor<2x8x64x32xf32>) -> tensor<2x8x16x32xf32>
  %c = transformer.matmul %a, %b : (tensor<2x8x16x64xf32>, tensor<2x8x64x32xf32>) -> tensor<2x8x16x32xf32>
  return %c : tensor<2x8x16x32xf32>
}

// CHECK-LABEL: func.func @matmul_transpose_rhs
func.func @matmul_transpose_rhs(%q: tensor<2x8x16x64xf32>, %k: tensor<2x8x24x64xf32>) -> tensor<2x8x16x24xf32> {
  // CHECK: transformer.matmul %{{.*}}, %{{.*}} {transpose_rhs} : (tensor<2x8x16x64xf32>, tensor<2x8x24x64xf32>) -> tensor<2x8x16x24xf32>
  // GENERIC: "transformer.matmul"(%{{.*}}, %{{.*}}) <{transpose_rhs}> : (tensor<2x8x16x64xf32>, tensor<2x8x24x64xf32>) -> tensor<2x8x16x24xf32>
  %s = transformer.matmul %q, %k {transpose_rhs} : (tensor<2x8x16x64xf32>, tensor<2x8x24x64xf32>) -> tensor<2x8x16x24xf32>
  return %s : tensor<2x8x16x24xf32>
}

// CHECK-LABEL: func.func @matmul_2d_dynamic
func.func @matmul_2d_dynamic(%a: tensor<?x?xf32>, %b: tensor<?x5xf32>) -> tensor<?x5xf32> {
  // CHECK: transformer.matmul %{{.*}}, %{{.*}} : (tensor<?x?xf32>, tensor<?x5xf32>) -> tensor<?x5xf32>
  %c = transformer.matmul %a, %b : (tensor<?x?xf32>, tensor<?x5xf32>) -> tensor<?x5xf32>
  return %c : tensor<?x5xf32>
}

// CHECK-LABEL: func.func @matmul_dynamic_batch
func.func @matmul_dynamic_batch(%a: tensor<?x3x4xf32>, %b: tensor<6x5x4xf32>) -> tensor<6x3x5xf32> {
  // A dynamic lhs batch dim takes the rhs size.
  // CHECK: transformer.matmul %{{.*}}, %{{.*}} {transpose_rhs} : (tensor<?x3x4xf32>, tensor<6x5x4xf32>) -> tensor<6x3x5xf32>
  %c = transformer.matmul %a, %b {transpose_rhs} : (tensor<?x3x4xf32>, tensor<6x5x4xf32>) -> tensor<6x3x5xf32>
  return %c : tensor<6x3x5xf32>
}

//===----------------------------------------------------------------------===//
// rms_norm
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @rms_norm_weight
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<1x7x576xf32>, %[[W:[a-z0-9]+]]: tensor<576xf32>)
func.func @rms_norm_weight(%x: tensor<1x7x576xf32>, %w: tensor<576xf32>) -> tensor<1x7x576xf32> {
  // CHECK: transformer.rms_norm %[[X]], %[[W]] {eps = 1.000000e-05 : f64} : (tensor<1x7x576xf32>, tensor<576xf32>) -> tensor<1x7x576xf32>
  // GENERIC: "transformer.rms_norm"(%{{.*}}, %{{.*}}) <{eps = 1.000000e-05 : f64}>
  %y = transformer.rms_norm %x, %w {eps = 1.0e-05 : f64} : (tensor<1x7x576xf32>, tensor<576xf32>) -> tensor<1x7x576xf32>
  return %y : tensor<1x7x576xf32>
}

// CHECK-LABEL: func.func @rms_norm_no_weight
func.func @rms_norm_no_weight(%x: tensor<?x?xbf16>) -> tensor<?x?xbf16> {
  // The default eps (1e-6) is elided.
  // CHECK: transformer.rms_norm %{{[a-z0-9]+}} : (tensor<?x?xbf16>) -> tensor<?x?xbf16>
  // GENERIC: "transformer.rms_norm"(%{{.*}}) <{eps = 9.9999999999999995E-7 : f64}>
  %y = transformer.rms_norm %x {eps = 1.0e-06 : f64} : (tensor<?x?xbf16>) -> tensor<?x?xbf16>
  return %y : tensor<?x?xbf16>
}

//===----------------------------------------------------------------------===//
// layer_norm
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @layer_norm_weight_bias
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<2x9x384xf32>, %[[G:[a-z0-9]+]]: tensor<384xf32>, %[[B:[a-z0-9]+]]: tensor<384xf32>)
func.func @layer_norm_weight_bias(%x: tensor<2x9x384xf32>, %g: tensor<384xf32>, %b: tensor<384xf32>) -> tensor<2x9x384xf32> {
  // CHECK: transformer.layer_norm %[[X]] weight(%[[G]]) bias(%[[B]]) {eps = 9.9999999999999998E-13 : f64} : (tensor<2x9x384xf32>, tensor<384xf32>, tensor<384xf32>) -> tensor<2x9x384xf32>
  // GENERIC: "transformer.layer_norm"(%{{.*}}, %{{.*}}, %{{.*}}) <{eps = 9.9999999999999998E-13 : f64, operandSegmentSizes = array<i32: 1, 1, 1>}>
  %y = transformer.layer_norm %x weight(%g) bias(%b) {eps = 1.0e-12 : f64} : (tensor<2x9x384xf32>, tensor<384xf32>, tensor<384xf32>) -> tensor<2x9x384xf32>
  return %y : tensor<2x9x384xf32>
}

// CHECK-LABEL: func.func @layer_norm_weight_only
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<2x9x384xf32>, %[[G:[a-z0-9]+]]: tensor<384xf32>)
func.func @layer_norm_weight_only(%x: tensor<2x9x384xf32>, %g: tensor<384xf32>) -> tensor<2x9x384xf32> {
  // CHECK: transformer.layer_norm %[[X]] weight(%[[G]]) : (tensor<2x9x384xf32>, tensor<384xf32>) -> tensor<2x9x384xf32>
  // GENERIC: "transformer.layer_norm"(%{{.*}}, %{{.*}}) <{eps = 1.000000e-05 : f64, operandSegmentSizes = array<i32: 1, 1, 0>}>
  %y = transformer.layer_norm %x weight(%g) : (tensor<2x9x384xf32>, tensor<384xf32>) -> tensor<2x9x384xf32>
  return %y : tensor<2x9x384xf32>
}

// CHECK-LABEL: func.func @layer_norm_bias_only
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<2x9x384xf32>, %[[B:[a-z0-9]+]]: tensor<384xf32>)
func.func @layer_norm_bias_only(%x: tensor<2x9x384xf32>, %b: tensor<384xf32>) -> tensor<2x9x384xf32> {
  // CHECK: transformer.layer_norm %[[X]] bias(%[[B]]) : (tensor<2x9x384xf32>, tensor<384xf32>) -> tensor<2x9x384xf32>
  // GENERIC: "transformer.layer_norm"(%{{.*}}, %{{.*}}) <{eps = 1.000000e-05 : f64, operandSegmentSizes = array<i32: 1, 0, 1>}>
  %y = transformer.layer_norm %x bias(%b) : (tensor<2x9x384xf32>, tensor<384xf32>) -> tensor<2x9x384xf32>
  return %y : tensor<2x9x384xf32>
}

// CHECK-LABEL: func.func @layer_norm_plain_dynamic
func.func @layer_norm_plain_dynamic(%x: tensor<?x?xf32>) -> tensor<?x?xf32> {
  // CHECK: transformer.layer_norm %{{[a-z0-9]+}} : (tensor<?x?xf32>) -> tensor<?x?xf32>
  %y = transformer.layer_norm %x : (tensor<?x?xf32>) -> tensor<?x?xf32>
  return %y : tensor<?x?xf32>
}

//===----------------------------------------------------------------------===//
// rope
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @rope
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<1x9x7x64xf32>, %[[P:[a-z0-9]+]]: tensor<1x7xi64>)
func.func @rope(%q: tensor<1x9x7x64xf32>, %pos: tensor<1x7xi64>) -> tensor<1x9x7x64xf32> {
  // CHECK: transformer.rope %[[X]], %[[P]] {theta = 1.000000e+05 : f64} : (tensor<1x9x7x64xf32>, tensor<1x7xi64>) -> tensor<1x9x7x64xf32>
  // GENERIC: "transformer.rope"(%{{.*}}, %{{.*}}) <{attention_scaling = 1.000000e+00 : f64, theta = 1.000000e+05 : f64}>
  %r = transformer.rope %q, %pos {theta = 1.0e+05 : f64} : (tensor<1x9x7x64xf32>, tensor<1x7xi64>) -> tensor<1x9x7x64xf32>
  return %r : tensor<1x9x7x64xf32>
}

// CHECK-LABEL: func.func @rope_default_theta
func.func @rope_default_theta(%q: tensor<1x9x7x64xf32>, %pos: tensor<7xi32>) -> tensor<1x9x7x64xf32> {
  // CHECK: transformer.rope %{{[a-z0-9]+}}, %{{[a-z0-9]+}} : (tensor<1x9x7x64xf32>, tensor<7xi32>) -> tensor<1x9x7x64xf32>
  // GENERIC: "transformer.rope"(%{{.*}}, %{{.*}}) <{attention_scaling = 1.000000e+00 : f64, theta = 1.000000e+04 : f64}>
  %r = transformer.rope %q, %pos {theta = 10000.0 : f64} : (tensor<1x9x7x64xf32>, tensor<7xi32>) -> tensor<1x9x7x64xf32>
  return %r : tensor<1x9x7x64xf32>
}

// CHECK-LABEL: func.func @rope_inv_freq
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<1x9x7x64xf32>, %[[P:[a-z0-9]+]]: tensor<7xi64>, %[[F:[a-z0-9]+]]: tensor<32xf32>)
func.func @rope_inv_freq(%q: tensor<1x9x7x64xf32>, %pos: tensor<7xi64>, %f: tensor<32xf32>) -> tensor<1x9x7x64xf32> {
  // CHECK: transformer.rope %[[X]], %[[P]] inv_freq(%[[F]]) : (tensor<1x9x7x64xf32>, tensor<7xi64>, tensor<32xf32>) -> tensor<1x9x7x64xf32>
  %r = transformer.rope %q, %pos inv_freq(%f) : (tensor<1x9x7x64xf32>, tensor<7xi64>, tensor<32xf32>) -> tensor<1x9x7x64xf32>
  return %r : tensor<1x9x7x64xf32>
}

// CHECK-LABEL: func.func @rope_attention_scaling
func.func @rope_attention_scaling(%q: tensor<1x9x7x64xf32>, %pos: tensor<7xi64>, %f: tensor<32xf32>) -> tensor<1x9x7x64xf32> {
  // CHECK: transformer.rope %{{[a-z0-9]+}}, %{{[a-z0-9]+}} inv_freq(%{{[a-z0-9]+}}) {attention_scaling = 1.250000e+00 : f64} : (tensor<1x9x7x64xf32>, tensor<7xi64>, tensor<32xf32>) -> tensor<1x9x7x64xf32>
  // GENERIC: "transformer.rope"(%{{.*}}, %{{.*}}, %{{.*}}) <{attention_scaling = 1.250000e+00 : f64, theta = 1.000000e+04 : f64}>
  %r = transformer.rope %q, %pos inv_freq(%f) {attention_scaling = 1.25 : f64} : (tensor<1x9x7x64xf32>, tensor<7xi64>, tensor<32xf32>) -> tensor<1x9x7x64xf32>
  return %r : tensor<1x9x7x64xf32>
}

// CHECK-LABEL: func.func @rope_partial
func.func @rope_partial(%q: tensor<1x4x7x80xf32>, %pos: tensor<7xi64>, %f: tensor<16xf32>) -> (tensor<1x4x7x80xf32>, tensor<1x4x7x80xf32>) {
  // CHECK: transformer.rope %{{.*}}, %{{.*}} {rotary_dim = 32 : i64} : (tensor<1x4x7x80xf32>, tensor<7xi64>) -> tensor<1x4x7x80xf32>
  // GENERIC: "transformer.rope"(%{{.*}}, %{{.*}}) <{attention_scaling = 1.000000e+00 : f64, rotary_dim = 32 : i64, theta = 1.000000e+04 : f64}>
  %r = transformer.rope %q, %pos {rotary_dim = 32 : i64} : (tensor<1x4x7x80xf32>, tensor<7xi64>) -> tensor<1x4x7x80xf32>
  // CHECK: transformer.rope %{{.*}}, %{{.*}} inv_freq(%{{.*}}) {rotary_dim = 32 : i64, theta = 5.000000e+05 : f64} : (tensor<1x4x7x80xf32>, tensor<7xi64>, tensor<16xf32>) -> tensor<1x4x7x80xf32>
  %s = transformer.rope %q, %pos inv_freq(%f) {rotary_dim = 32 : i64, theta = 5.0e+05 : f64} : (tensor<1x4x7x80xf32>, tensor<7xi64>, tensor<16xf32>) -> tensor<1x4x7x80xf32>
  return %r, %s : tensor<1x4x7x80xf32>, tensor<1x4x7x80xf32>
}

// CHECK-LABEL: func.func @rope_dynamic
func.func @rope_dynamic(%q: tensor<?x?x?x?xf16>, %pos: tensor<?x?xi64>) -> tensor<?x?x?x?xf16> {
  // CHECK: transformer.rope %{{.*}}, %{{.*}} {rotary_dim = 64 : i64} : (tensor<?x?x?x?xf16>, tensor<?x?xi64>) -> tensor<?x?x?x?xf16>
  %r = transformer.rope %q, %pos {rotary_dim = 64 : i64} : (tensor<?x?x?x?xf16>, tensor<?x?xi64>) -> tensor<?x?x?x?xf16>
  return %r : tensor<?x?x?x?xf16>
}

//===----------------------------------------------------------------------===//
// attention
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @attention
// CHECK-SAME: (%[[Q:[a-z0-9]+]]: tensor<2x8x16x64xf32>, %[[K:[a-z0-9]+]]: tensor<2x8x16x64xf32>, %[[V:[a-z0-9]+]]: tensor<2x8x16x64xf32>)
func.func @attention(%q: tensor<2x8x16x64xf32>, %k: tensor<2x8x16x64xf32>, %v: tensor<2x8x16x64xf32>) -> tensor<2x8x16x64xf32> {
  // CHECK: transformer.attention %[[Q]], %[[K]], %[[V]] : (tensor<2x8x16x64xf32>, tensor<2x8x16x64xf32>, tensor<2x8x16x64xf32>) -> tensor<2x8x16x64xf32>
  // GENERIC: "transformer.attention"(%{{.*}}, %{{.*}}, %{{.*}}) <{operandSegmentSizes = array<i32: 1, 1, 1, 0, 0>}>
  %o = transformer.attention %q, %k, %v : (tensor<2x8x16x64xf32>, tensor<2x8x16x64xf32>, tensor<2x8x16x64xf32>) -> tensor<2x8x16x64xf32>
  return %o : tensor<2x8x16x64xf32>
}

// CHECK-LABEL: func.func @attention_mask_scale
// CHECK-SAME: (%[[Q:[a-z0-9]+]]: tensor<2x12x9x32xf32>, %[[K:[a-z0-9]+]]: tensor<2x12x9x32xf32>, %[[V:[a-z0-9]+]]: tensor<2x12x9x32xf32>, %[[M:[a-z0-9]+]]: tensor<2x1x1x9xf32>)
func.func @attention_mask_scale(%q: tensor<2x12x9x32xf32>, %k: tensor<2x12x9x32xf32>, %v: tensor<2x12x9x32xf32>, %m: tensor<2x1x1x9xf32>) -> tensor<2x12x9x32xf32> {
  // CHECK: transformer.attention %[[Q]], %[[K]], %[[V]] mask(%[[M]]) {scale = 1.250000e-01 : f64} : (tensor<2x12x9x32xf32>, tensor<2x12x9x32xf32>, tensor<2x12x9x32xf32>, tensor<2x1x1x9xf32>) -> tensor<2x12x9x32xf32>
  // GENERIC: "transformer.attention"(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}) <{operandSegmentSizes = array<i32: 1, 1, 1, 1, 0>, scale = 1.250000e-01 : f64}>
  %o = transformer.attention %q, %k, %v mask(%m) {scale = 0.125 : f64} : (tensor<2x12x9x32xf32>, tensor<2x12x9x32xf32>, tensor<2x12x9x32xf32>, tensor<2x1x1x9xf32>) -> tensor<2x12x9x32xf32>
  return %o : tensor<2x12x9x32xf32>
}

// CHECK-LABEL: func.func @attention_causal
func.func @attention_causal(%q: tensor<1x4x7x16xf32>, %k: tensor<1x4x7x16xf32>, %v: tensor<1x4x7x16xf32>) -> tensor<1x4x7x16xf32> {
  // CHECK: transformer.attention %{{.*}}, %{{.*}}, %{{.*}} {causal} : (tensor<1x4x7x16xf32>, tensor<1x4x7x16xf32>, tensor<1x4x7x16xf32>) -> tensor<1x4x7x16xf32>
  // GENERIC: "transformer.attention"(%{{.*}}, %{{.*}}, %{{.*}}) <{causal, operandSegmentSizes = array<i32: 1, 1, 1, 0, 0>}>
  %o = transformer.attention %q, %k, %v {causal} : (tensor<1x4x7x16xf32>, tensor<1x4x7x16xf32>, tensor<1x4x7x16xf32>) -> tensor<1x4x7x16xf32>
  return %o : tensor<1x4x7x16xf32>
}

// Grouped-query attention (9 query heads over 3 KV heads), decoding one token
// at `offset` of a 128-entry cache, with a full mask and a v_head_dim that
// differs from head_dim.
// CHECK-LABEL: func.func @attention_gqa_offset_mask
// CHECK-SAME: (%[[Q:[a-z0-9]+]]: tensor<1x9x1x64xf32>, %[[K:[a-z0-9]+]]: tensor<1x3x128x64xf32>, %[[V:[a-z0-9]+]]: tensor<1x3x128x32xf32>, %[[M:[a-z0-9]+]]: tensor<1x9x1x128xf32>, %[[P:[a-z0-9]+]]: index)
func.func @attention_gqa_offset_mask(%q: tensor<1x9x1x64xf32>, %k: tensor<1x3x128x64xf32>, %v: tensor<1x3x128x32xf32>, %m: tensor<1x9x1x128xf32>, %pos: index) -> tensor<1x9x1x32xf32> {
  // CHECK: transformer.attention %[[Q]], %[[K]], %[[V]] mask(%[[M]]) offset(%[[P]]) {causal} : (tensor<1x9x1x64xf32>, tensor<1x3x128x64xf32>, tensor<1x3x128x32xf32>, tensor<1x9x1x128xf32>, index) -> tensor<1x9x1x32xf32>
  // GENERIC: "transformer.attention"(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}) <{causal, operandSegmentSizes = array<i32: 1, 1, 1, 1, 1>}>
  %o = transformer.attention %q, %k, %v mask(%m) offset(%pos) {causal} : (tensor<1x9x1x64xf32>, tensor<1x3x128x64xf32>, tensor<1x3x128x32xf32>, tensor<1x9x1x128xf32>, index) -> tensor<1x9x1x32xf32>
  return %o : tensor<1x9x1x32xf32>
}

// CHECK-LABEL: func.func @attention_offset_only
// CHECK-SAME: (%[[Q:[a-z0-9]+]]: tensor<1x9x1x64xf32>, %[[K:[a-z0-9]+]]: tensor<1x3x128x64xf32>, %[[V:[a-z0-9]+]]: tensor<1x3x128x64xf32>, %[[P:[a-z0-9]+]]: index)
func.func @attention_offset_only(%q: tensor<1x9x1x64xf32>, %k: tensor<1x3x128x64xf32>, %v: tensor<1x3x128x64xf32>, %pos: index) -> tensor<1x9x1x64xf32> {
  // CHECK: transformer.attention %[[Q]], %[[K]], %[[V]] offset(%[[P]]) {causal, scale = 2.000000e-01 : f64} : (tensor<1x9x1x64xf32>, tensor<1x3x128x64xf32>, tensor<1x3x128x64xf32>, index) -> tensor<1x9x1x64xf32>
  // GENERIC: "transformer.attention"(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}) <{causal, operandSegmentSizes = array<i32: 1, 1, 1, 0, 1>, scale = 2.000000e-01 : f64}>
  %o = transformer.attention %q, %k, %v offset(%pos) {causal, scale = 0.2 : f64} : (tensor<1x9x1x64xf32>, tensor<1x3x128x64xf32>, tensor<1x3x128x64xf32>, index) -> tensor<1x9x1x64xf32>
  return %o : tensor<1x9x1x64xf32>
}

// CHECK-LABEL: func.func @attention_dynamic
func.func @attention_dynamic(%q: tensor<?x8x?x64xf32>, %k: tensor<?x2x?x64xf32>, %v: tensor<?x2x?x?xf32>) -> tensor<?x8x?x?xf32> {
  // CHECK: transformer.attention %{{.*}}, %{{.*}}, %{{.*}} {causal} : (tensor<?x8x?x64xf32>, tensor<?x2x?x64xf32>, tensor<?x2x?x?xf32>) -> tensor<?x8x?x?xf32>
  %o = transformer.attention %q, %k, %v {causal} : (tensor<?x8x?x64xf32>, tensor<?x2x?x64xf32>, tensor<?x2x?x?xf32>) -> tensor<?x8x?x?xf32>
  return %o : tensor<?x8x?x?xf32>
}

//===----------------------------------------------------------------------===//
// kv_cache_update
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @kv_cache_update
// CHECK-SAME: (%[[C:[a-z0-9]+]]: tensor<1x3x128x64xf32>, %[[U:[a-z0-9]+]]: tensor<1x3x1x64xf32>, %[[P:[a-z0-9]+]]: index)
func.func @kv_cache_update(%cache: tensor<1x3x128x64xf32>, %new: tensor<1x3x1x64xf32>, %pos: index) -> tensor<1x3x128x64xf32> {
  // CHECK: transformer.kv_cache_update %[[C]], %[[U]] at %[[P]] : tensor<1x3x128x64xf32>, tensor<1x3x1x64xf32> -> tensor<1x3x128x64xf32>
  // GENERIC: "transformer.kv_cache_update"(%{{.*}}, %{{.*}}, %{{.*}}) : (tensor<1x3x128x64xf32>, tensor<1x3x1x64xf32>, index) -> tensor<1x3x128x64xf32>
  %c = transformer.kv_cache_update %cache, %new at %pos : tensor<1x3x128x64xf32>, tensor<1x3x1x64xf32> -> tensor<1x3x128x64xf32>
  return %c : tensor<1x3x128x64xf32>
}

// CHECK-LABEL: func.func @kv_cache_update_dynamic
func.func @kv_cache_update_dynamic(%cache: tensor<?x3x?x64xf16>, %new: tensor<?x3x?x64xf16>, %pos: index) -> tensor<?x3x?x64xf16> {
  // CHECK: transformer.kv_cache_update %{{.*}}, %{{.*}} at %{{.*}} : tensor<?x3x?x64xf16>, tensor<?x3x?x64xf16> -> tensor<?x3x?x64xf16>
  %c = transformer.kv_cache_update %cache, %new at %pos : tensor<?x3x?x64xf16>, tensor<?x3x?x64xf16> -> tensor<?x3x?x64xf16>
  return %c : tensor<?x3x?x64xf16>
}

//===----------------------------------------------------------------------===//
// split_heads / merge_heads
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @split_merge_heads
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<1x7x576xf32>)
func.func @split_merge_heads(%x: tensor<1x7x576xf32>) -> tensor<1x7x576xf32> {
  // CHECK: %[[H:.+]] = transformer.split_heads %[[X]] {num_heads = 9 : i64} : tensor<1x7x576xf32> -> tensor<1x9x7x64xf32>
  // GENERIC: "transformer.split_heads"(%{{.*}}) <{num_heads = 9 : i64}> : (tensor<1x7x576xf32>) -> tensor<1x9x7x64xf32>
  %h = transformer.split_heads %x {num_heads = 9 : i64} : tensor<1x7x576xf32> -> tensor<1x9x7x64xf32>
  // CHECK: transformer.merge_heads %[[H]] : tensor<1x9x7x64xf32> -> tensor<1x7x576xf32>
  // GENERIC: "transformer.merge_heads"(%{{.*}}) : (tensor<1x9x7x64xf32>) -> tensor<1x7x576xf32>
  %m = transformer.merge_heads %h : tensor<1x9x7x64xf32> -> tensor<1x7x576xf32>
  return %m : tensor<1x7x576xf32>
}

// CHECK-LABEL: func.func @split_merge_heads_dynamic
func.func @split_merge_heads_dynamic(%x: tensor<?x?x?xf32>, %y: tensor<?x4x?x16xf32>) -> (tensor<?x4x?x?xf32>, tensor<?x?x64xf32>) {
  // CHECK: transformer.split_heads %{{.*}} {num_heads = 4 : i64} : tensor<?x?x?xf32> -> tensor<?x4x?x?xf32>
  %h = transformer.split_heads %x {num_heads = 4 : i64} : tensor<?x?x?xf32> -> tensor<?x4x?x?xf32>
  // CHECK: transformer.merge_heads %{{.*}} : tensor<?x4x?x16xf32> -> tensor<?x?x64xf32>
  %m = transformer.merge_heads %y : tensor<?x4x?x16xf32> -> tensor<?x?x64xf32>
  return %h, %m : tensor<?x4x?x?xf32>, tensor<?x?x64xf32>
}

// CHECK-LABEL: func.func @merge_heads_dynamic_heads
func.func @merge_heads_dynamic_heads(%y: tensor<2x?x5x16xf32>) -> tensor<2x5x?xf32> {
  // CHECK: transformer.merge_heads %{{.*}} : tensor<2x?x5x16xf32> -> tensor<2x5x?xf32>
  %m = transformer.merge_heads %y : tensor<2x?x5x16xf32> -> tensor<2x5x?xf32>
  return %m : tensor<2x5x?xf32>
}

//===----------------------------------------------------------------------===//
// softmax, silu, gelu
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @softmax
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<2x8x16x16xf32>)
func.func @softmax(%s: tensor<2x8x16x16xf32>) -> (tensor<2x8x16x16xf32>, tensor<2x8x16x16xf32>, tensor<2x8x16x16xf32>) {
  // The default axis (-1) is elided.
  // CHECK: transformer.softmax %[[X]] : tensor<2x8x16x16xf32>
  // GENERIC: "transformer.softmax"(%{{.*}}) <{axis = -1 : i64}> : (tensor<2x8x16x16xf32>) -> tensor<2x8x16x16xf32>
  %a = transformer.softmax %s {axis = -1 : i64} : tensor<2x8x16x16xf32>
  // CHECK: transformer.softmax %[[X]] {axis = 1 : i64} : tensor<2x8x16x16xf32>
  // GENERIC: "transformer.softmax"(%{{.*}}) <{axis = 1 : i64}>
  %b = transformer.softmax %s {axis = 1 : i64} : tensor<2x8x16x16xf32>
  // CHECK: transformer.softmax %[[X]] {axis = -4 : i64} : tensor<2x8x16x16xf32>
  %c = transformer.softmax %s {axis = -4 : i64} : tensor<2x8x16x16xf32>
  return %a, %b, %c : tensor<2x8x16x16xf32>, tensor<2x8x16x16xf32>, tensor<2x8x16x16xf32>
}

// CHECK-LABEL: func.func @silu
func.func @silu(%x: tensor<?x7x1536xbf16>) -> tensor<?x7x1536xbf16> {
  // CHECK: transformer.silu %{{[a-z0-9]+}} : tensor<?x7x1536xbf16>
  // GENERIC: "transformer.silu"(%{{.*}}) : (tensor<?x7x1536xbf16>) -> tensor<?x7x1536xbf16>
  %y = transformer.silu %x : tensor<?x7x1536xbf16>
  return %y : tensor<?x7x1536xbf16>
}

// CHECK-LABEL: func.func @gelu
func.func @gelu(%x: tensor<1x7x3072xf32>) -> (tensor<1x7x3072xf32>, tensor<1x7x3072xf32>, tensor<1x7x3072xf32>) {
  // CHECK: transformer.gelu %{{[a-z0-9]+}} : tensor<1x7x3072xf32>
  // GENERIC: "transformer.gelu"(%{{.*}}) <{approximate = "none"}>
  %a = transformer.gelu %x : tensor<1x7x3072xf32>
  // CHECK: transformer.gelu %{{[a-z0-9]+}} : tensor<1x7x3072xf32>
  // GENERIC: "transformer.gelu"(%{{.*}}) <{approximate = "none"}>
  %b = transformer.gelu %x {approximate = "none"} : tensor<1x7x3072xf32>
  // CHECK: transformer.gelu %{{[a-z0-9]+}} {approximate = "tanh"} : tensor<1x7x3072xf32>
  // GENERIC: "transformer.gelu"(%{{.*}}) <{approximate = "tanh"}>
  %c = transformer.gelu %x {approximate = "tanh"} : tensor<1x7x3072xf32>
  return %a, %b, %c : tensor<1x7x3072xf32>, tensor<1x7x3072xf32>, tensor<1x7x3072xf32>
}

//===----------------------------------------------------------------------===//
// gated_mlp
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @gated_mlp
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<1x7x576xf32>, %[[G:[a-z0-9]+]]: tensor<1536x576xf32>, %[[U:[a-z0-9]+]]: tensor<1536x576xf32>, %[[D:[a-z0-9]+]]: tensor<576x1536xf32>)
func.func @gated_mlp(%x: tensor<1x7x576xf32>, %wg: tensor<1536x576xf32>, %wu: tensor<1536x576xf32>, %wd: tensor<576x1536xf32>) -> (tensor<1x7x576xf32>, tensor<1x7x576xf32>, tensor<1x7x576xf32>) {
  // CHECK: transformer.gated_mlp %[[X]], %[[G]], %[[U]], %[[D]] : (tensor<1x7x576xf32>, tensor<1536x576xf32>, tensor<1536x576xf32>, tensor<576x1536xf32>) -> tensor<1x7x576xf32>
  // GENERIC: "transformer.gated_mlp"(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}) <{activation = "silu"}>
  %a = transformer.gated_mlp %x, %wg, %wu, %wd {activation = "silu"} : (tensor<1x7x576xf32>, tensor<1536x576xf32>, tensor<1536x576xf32>, tensor<576x1536xf32>) -> tensor<1x7x576xf32>
  // CHECK: transformer.gated_mlp %[[X]], %[[G]], %[[U]], %[[D]] {activation = "gelu"} :
  // GENERIC: "transformer.gated_mlp"(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}) <{activation = "gelu"}>
  %b = transformer.gated_mlp %x, %wg, %wu, %wd {activation = "gelu"} : (tensor<1x7x576xf32>, tensor<1536x576xf32>, tensor<1536x576xf32>, tensor<576x1536xf32>) -> tensor<1x7x576xf32>
  // CHECK: transformer.gated_mlp %[[X]], %[[G]], %[[U]], %[[D]] {activation = "gelu_tanh"} :
  // GENERIC: "transformer.gated_mlp"(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}) <{activation = "gelu_tanh"}>
  %c = transformer.gated_mlp %x, %wg, %wu, %wd {activation = "gelu_tanh"} : (tensor<1x7x576xf32>, tensor<1536x576xf32>, tensor<1536x576xf32>, tensor<576x1536xf32>) -> tensor<1x7x576xf32>
  return %a, %b, %c : tensor<1x7x576xf32>, tensor<1x7x576xf32>, tensor<1x7x576xf32>
}

// CHECK-LABEL: func.func @gated_mlp_dynamic
func.func @gated_mlp_dynamic(%x: tensor<?x64xf32>, %wg: tensor<?x64xf32>, %wu: tensor<?x64xf32>, %wd: tensor<64x?xf32>) -> tensor<?x64xf32> {
  // CHECK: transformer.gated_mlp %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : (tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<64x?xf32>) -> tensor<?x64xf32>
  %y = transformer.gated_mlp %x, %wg, %wu, %wd : (tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<64x?xf32>) -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

//===----------------------------------------------------------------------===//
// argmax
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @argmax
func.func @argmax(%logits: tensor<1x49152xf32>, %v: tensor<?xf16>) -> (tensor<1xi64>, tensor<i64>) {
  // CHECK: transformer.argmax %{{[a-z0-9]+}} : tensor<1x49152xf32> -> tensor<1xi64>
  // GENERIC: "transformer.argmax"(%{{.*}}) : (tensor<1x49152xf32>) -> tensor<1xi64>
  %a = transformer.argmax %logits : tensor<1x49152xf32> -> tensor<1xi64>
  // CHECK: transformer.argmax %{{[a-z0-9]+}} : tensor<?xf16> -> tensor<i64>
  %b = transformer.argmax %v : tensor<?xf16> -> tensor<i64>
  return %a, %b : tensor<1xi64>, tensor<i64>
}

//===----------------------------------------------------------------------===//
// #transformer.workgroup
//===----------------------------------------------------------------------===//

// A kernel's forall mapped to workgroups (innermost dimension 0); with every dimension of one
// iteration, canonicalization keeps it.
// CHECK-LABEL: func.func @workgroup_mapping
// CHECK: scf.forall (%{{.+}}, %{{.+}}) in (1, 1)
// CHECK: } {mapping = [#transformer.workgroup<1>, #transformer.workgroup<0>]}
// GENERIC: mapping = [#transformer.workgroup<1>, #transformer.workgroup<0>]
func.func @workgroup_mapping(%t: tensor<4xf32>) -> tensor<4xf32> {
  %r = scf.forall (%i, %j) in (1, 1) shared_outs(%o = %t) -> (tensor<4xf32>) {
    scf.forall.in_parallel {
    }
  } {mapping = [#transformer.workgroup<1>, #transformer.workgroup<0>]}
  return %r : tensor<4xf32>
}
