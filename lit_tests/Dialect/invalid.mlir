// RUN: kiln-opt %s --split-input-file --verify-diagnostics

// One split per diagnostic of the `transformer` dialect: the errors of
// inferReturnTypes (each followed by the generic "failed to infer returned
// types"), of the verifiers, of a declared result type that differs from the
// inferred one, and of the ODS type constraints.

//===----------------------------------------------------------------------===//
// embedding
//===----------------------------------------------------------------------===//

func.func @embedding_table_rank(%t: tensor<100xf32>, %i: tensor<2xi64>) -> tensor<2x16xf32> {
  // expected-error @+2 {{table must have rank 2 ([vocab, dim]), got rank 1}}
  // expected-error @+1 {{'transformer.embedding' op failed to infer returned types}}
  %h = transformer.embedding %t[%i] : tensor<100xf32>, tensor<2xi64> -> tensor<2x16xf32>
  return %h : tensor<2x16xf32>
}

// -----

func.func @embedding_float_indices(%t: tensor<100x16xf32>, %i: tensor<2xf32>) -> tensor<2x16xf32> {
  // expected-error @+1 {{'transformer.embedding' op operand #1 must be ranked tensor of signless integer values, but got 'tensor<2xf32>'}}
  %h = transformer.embedding %t[%i] : tensor<100x16xf32>, tensor<2xf32> -> tensor<2x16xf32>
  return %h : tensor<2x16xf32>
}

// -----

func.func @embedding_integer_table(%t: tensor<100x16xi32>, %i: tensor<2xi64>) -> tensor<2x16xi32> {
  // expected-error @+1 {{'transformer.embedding' op operand #0 must be ranked tensor of floating-point values, but got 'tensor<100x16xi32>'}}
  %h = transformer.embedding %t[%i] : tensor<100x16xi32>, tensor<2xi64> -> tensor<2x16xi32>
  return %h : tensor<2x16xi32>
}

// -----

func.func @embedding_wrong_result(%t: tensor<100x16xf32>, %i: tensor<2x7xi64>) -> tensor<2x16xf32> {
  // expected-error @+2 {{'transformer.embedding' op inferred type(s) 'tensor<2x7x16xf32>' are incompatible with return type(s) of operation 'tensor<2x16xf32>'}}
  // expected-error @+1 {{'transformer.embedding' op failed to infer returned types}}
  %h = transformer.embedding %t[%i] : tensor<100x16xf32>, tensor<2x7xi64> -> tensor<2x16xf32>
  return %h : tensor<2x16xf32>
}

//===----------------------------------------------------------------------===//
// linear
//===----------------------------------------------------------------------===//

// The verifiers index shapes by the ranks that inferReturnTypes checks: these
// splits (rank-0 input, rank-1 weight) used to read out of bounds or crash
// before the inferred-type check ran.
func.func @linear_input_rank(%x: tensor<f32>, %w: tensor<96x64xf32>) -> tensor<96xf32> {
  // expected-error @+2 {{input must have rank >= 1, got rank 0}}
  // expected-error @+1 {{'transformer.linear' op failed to infer returned types}}
  %y = transformer.linear %x, %w : (tensor<f32>, tensor<96x64xf32>) -> tensor<96xf32>
  return %y : tensor<96xf32>
}

// -----

func.func @linear_weight_rank(%x: tensor<2x64xf32>, %w: tensor<64xf32>) -> tensor<2x64xf32> {
  // expected-error @+2 {{weight must have rank 2 ([out_features, in_features]), got rank 1}}
  // expected-error @+1 {{'transformer.linear' op failed to infer returned types}}
  %y = transformer.linear %x, %w : (tensor<2x64xf32>, tensor<64xf32>) -> tensor<2x64xf32>
  return %y : tensor<2x64xf32>
}

// -----

func.func @linear_in_features(%x: tensor<2x64xf32>, %w: tensor<96x63xf32>) -> tensor<2x96xf32> {
  // expected-error @+1 {{'transformer.linear' op input feature dimension (64) does not match weight dimension 1 (in_features = 63)}}
  %y = transformer.linear %x, %w : (tensor<2x64xf32>, tensor<96x63xf32>) -> tensor<2x96xf32>
  return %y : tensor<2x96xf32>
}

// -----

func.func @linear_weight_element_type(%x: tensor<2x64xf32>, %w: tensor<96x64xf16>) -> tensor<2x96xf32> {
  // expected-error @+1 {{'transformer.linear' op weight element type 'f16' does not match input element type 'f32'}}
  %y = transformer.linear %x, %w : (tensor<2x64xf32>, tensor<96x64xf16>) -> tensor<2x96xf32>
  return %y : tensor<2x96xf32>
}

// -----

func.func @linear_bias_element_type(%x: tensor<2x64xf32>, %w: tensor<96x64xf32>, %b: tensor<96xbf16>) -> tensor<2x96xf32> {
  // expected-error @+1 {{'transformer.linear' op bias element type 'bf16' does not match input element type 'f32'}}
  %y = transformer.linear %x, %w, %b : (tensor<2x64xf32>, tensor<96x64xf32>, tensor<96xbf16>) -> tensor<2x96xf32>
  return %y : tensor<2x96xf32>
}

// -----

func.func @linear_bias_rank(%x: tensor<2x64xf32>, %w: tensor<96x64xf32>, %b: tensor<1x96xf32>) -> tensor<2x96xf32> {
  // expected-error @+1 {{'transformer.linear' op bias must have rank 1, got rank 2}}
  %y = transformer.linear %x, %w, %b : (tensor<2x64xf32>, tensor<96x64xf32>, tensor<1x96xf32>) -> tensor<2x96xf32>
  return %y : tensor<2x96xf32>
}

// -----

func.func @linear_bias_size(%x: tensor<2x64xf32>, %w: tensor<96x64xf32>, %b: tensor<95xf32>) -> tensor<2x96xf32> {
  // expected-error @+1 {{'transformer.linear' op bias size (95) does not match out_features (96)}}
  %y = transformer.linear %x, %w, %b : (tensor<2x64xf32>, tensor<96x64xf32>, tensor<95xf32>) -> tensor<2x96xf32>
  return %y : tensor<2x96xf32>
}

// -----

func.func @linear_integer_input(%x: tensor<2x64xi32>, %w: tensor<96x64xf32>) -> tensor<2x96xf32> {
  // expected-error @+1 {{'transformer.linear' op operand #0 must be ranked tensor of floating-point values, but got 'tensor<2x64xi32>'}}
  %y = transformer.linear %x, %w : (tensor<2x64xi32>, tensor<96x64xf32>) -> tensor<2x96xf32>
  return %y : tensor<2x96xf32>
}

// -----

func.func @linear_unranked_input(%x: tensor<*xf32>, %w: tensor<96x64xf32>) -> tensor<2x96xf32> {
  // expected-error @+1 {{'transformer.linear' op operand #0 must be ranked tensor of floating-point values, but got 'tensor<*xf32>'}}
  %y = transformer.linear %x, %w : (tensor<*xf32>, tensor<96x64xf32>) -> tensor<2x96xf32>
  return %y : tensor<2x96xf32>
}

// -----

func.func @linear_wrong_result(%x: tensor<2x64xf32>, %w: tensor<96x64xf32>) -> tensor<2x64xf32> {
  // expected-error @+2 {{'transformer.linear' op inferred type(s) 'tensor<2x96xf32>' are incompatible with return type(s) of operation 'tensor<2x64xf32>'}}
  // expected-error @+1 {{'transformer.linear' op failed to infer returned types}}
  %y = transformer.linear %x, %w : (tensor<2x64xf32>, tensor<96x64xf32>) -> tensor<2x64xf32>
  return %y : tensor<2x64xf32>
}

// -----

// A dynamic result dim where the inferred one is static is not compatible either.
func.func @linear_dynamic_result(%x: tensor<2x64xf32>, %w: tensor<96x64xf32>) -> tensor<2x?xf32> {
  // expected-error @+2 {{'transformer.linear' op inferred type(s) 'tensor<2x96xf32>' are incompatible with return type(s) of operation 'tensor<2x?xf32>'}}
  // expected-error @+1 {{'transformer.linear' op failed to infer returned types}}
  %y = transformer.linear %x, %w : (tensor<2x64xf32>, tensor<96x64xf32>) -> tensor<2x?xf32>
  return %y : tensor<2x?xf32>
}

//===----------------------------------------------------------------------===//
// dequantize
//===----------------------------------------------------------------------===//

func.func @dequantize_unknown_format(%q: tensor<96x2x16xi8>, %d: tensor<96x2xf16>) -> tensor<96x64xf32> {
  // expected-error @+1 {{'transformer.dequantize' op unknown format 'q5_0'; expected q4_0, q4_1 or q8_0}}
  %w = transformer.dequantize %q, %d {format = "q5_0"} : (tensor<96x2x16xi8>, tensor<96x2xf16>) -> tensor<96x64xf32>
  return %w : tensor<96x64xf32>
}

// -----

func.func @dequantize_data_not_i8(%q: tensor<96x2x16xi32>, %d: tensor<96x2xf16>) -> tensor<96x64xf32> {
  // expected-error @+1 {{'transformer.dequantize' op data must hold i8 bytes, got 'i32'}}
  %w = transformer.dequantize %q, %d {format = "q4_0"} : (tensor<96x2x16xi32>, tensor<96x2xf16>) -> tensor<96x64xf32>
  return %w : tensor<96x64xf32>
}

// -----

// A q8_0 block is 32 signed bytes, a 4-bit block 16 bytes of two nibbles each.
func.func @dequantize_q8_0_block_bytes(%q: tensor<96x2x16xi8>, %d: tensor<96x2xf16>) -> tensor<96x64xf32> {
  // expected-error @+1 {{'transformer.dequantize' op data dimension 2 (16) must be 32, the bytes of one q8_0 block}}
  %w = transformer.dequantize %q, %d {format = "q8_0"} : (tensor<96x2x16xi8>, tensor<96x2xf16>) -> tensor<96x64xf32>
  return %w : tensor<96x64xf32>
}

// -----

func.func @dequantize_q4_0_block_bytes(%q: tensor<96x2x32xi8>, %d: tensor<96x2xf16>) -> tensor<96x64xf32> {
  // expected-error @+1 {{'transformer.dequantize' op data dimension 2 (32) must be 16, the bytes of one q4_0 block}}
  %w = transformer.dequantize %q, %d {format = "q4_0"} : (tensor<96x2x32xi8>, tensor<96x2xf16>) -> tensor<96x64xf32>
  return %w : tensor<96x64xf32>
}

// -----

func.func @dequantize_q4_1_block_bytes(%q: tensor<96x2x32xi8>, %d: tensor<96x2xf16>, %m: tensor<96x2xf16>) -> tensor<96x64xf32> {
  // expected-error @+1 {{'transformer.dequantize' op data dimension 2 (32) must be 16, the bytes of one q4_1 block}}
  %w = transformer.dequantize %q, %d, %m {format = "q4_1"} : (tensor<96x2x32xi8>, tensor<96x2xf16>, tensor<96x2xf16>) -> tensor<96x64xf32>
  return %w : tensor<96x64xf32>
}

// -----

func.func @dequantize_q4_1_without_mins(%q: tensor<96x2x16xi8>, %d: tensor<96x2xf16>) -> tensor<96x64xf32> {
  // expected-error @+1 {{'transformer.dequantize' op format q4_1 needs mins}}
  %w = transformer.dequantize %q, %d {format = "q4_1"} : (tensor<96x2x16xi8>, tensor<96x2xf16>) -> tensor<96x64xf32>
  return %w : tensor<96x64xf32>
}

// -----

func.func @dequantize_q8_0_with_mins(%q: tensor<96x2x32xi8>, %d: tensor<96x2xf16>, %m: tensor<96x2xf16>) -> tensor<96x64xf32> {
  // expected-error @+1 {{'transformer.dequantize' op format q8_0 takes no mins}}
  %w = transformer.dequantize %q, %d, %m {format = "q8_0"} : (tensor<96x2x32xi8>, tensor<96x2xf16>, tensor<96x2xf16>) -> tensor<96x64xf32>
  return %w : tensor<96x64xf32>
}

// -----

func.func @dequantize_q4_0_with_mins(%q: tensor<96x2x16xi8>, %d: tensor<96x2xf16>, %m: tensor<96x2xf16>) -> tensor<96x64xf32> {
  // expected-error @+1 {{'transformer.dequantize' op format q4_0 takes no mins}}
  %w = transformer.dequantize %q, %d, %m {format = "q4_0"} : (tensor<96x2x16xi8>, tensor<96x2xf16>, tensor<96x2xf16>) -> tensor<96x64xf32>
  return %w : tensor<96x64xf32>
}

// -----

func.func @dequantize_scales_rank(%q: tensor<96x2x32xi8>, %d: tensor<192xf16>) -> tensor<96x64xf32> {
  // expected-error @+1 {{'transformer.dequantize' op scales must have rank 2 ([rows, blocks]), got rank 1}}
  %w = transformer.dequantize %q, %d {format = "q8_0"} : (tensor<96x2x32xi8>, tensor<192xf16>) -> tensor<96x64xf32>
  return %w : tensor<96x64xf32>
}

// -----

func.func @dequantize_mins_rank(%q: tensor<96x2x16xi8>, %d: tensor<96x2xf16>, %m: tensor<96x2x1xf16>) -> tensor<96x64xf32> {
  // expected-error @+1 {{'transformer.dequantize' op mins must have rank 2 ([rows, blocks]), got rank 3}}
  %w = transformer.dequantize %q, %d, %m {format = "q4_1"} : (tensor<96x2x16xi8>, tensor<96x2xf16>, tensor<96x2x1xf16>) -> tensor<96x64xf32>
  return %w : tensor<96x64xf32>
}

// -----

func.func @dequantize_scales_blocks(%q: tensor<96x2x32xi8>, %d: tensor<96x3xf16>) -> tensor<96x64xf32> {
  // expected-error @+1 {{'transformer.dequantize' op scales dimension 1 (3) does not match data dimension 1 (2)}}
  %w = transformer.dequantize %q, %d {format = "q8_0"} : (tensor<96x2x32xi8>, tensor<96x3xf16>) -> tensor<96x64xf32>
  return %w : tensor<96x64xf32>
}

// -----

func.func @dequantize_mins_rows(%q: tensor<96x2x16xi8>, %d: tensor<96x2xf16>, %m: tensor<95x2xf16>) -> tensor<96x64xf32> {
  // expected-error @+1 {{'transformer.dequantize' op mins dimension 0 (95) does not match data dimension 0 (96)}}
  %w = transformer.dequantize %q, %d, %m {format = "q4_1"} : (tensor<96x2x16xi8>, tensor<96x2xf16>, tensor<95x2xf16>) -> tensor<96x64xf32>
  return %w : tensor<96x64xf32>
}

// -----

func.func @dequantize_mins_element_type(%q: tensor<96x2x16xi8>, %d: tensor<96x2xf16>, %m: tensor<96x2xf32>) -> tensor<96x64xf32> {
  // expected-error @+1 {{'transformer.dequantize' op mins element type 'f32' does not match scales element type 'f16'}}
  %w = transformer.dequantize %q, %d, %m {format = "q4_1"} : (tensor<96x2x16xi8>, tensor<96x2xf16>, tensor<96x2xf32>) -> tensor<96x64xf32>
  return %w : tensor<96x64xf32>
}

// -----

func.func @dequantize_data_rank(%q: tensor<96x64xi8>, %d: tensor<96x2xf16>) -> tensor<96x64xf32> {
  // expected-error @+2 {{data must have rank 3 ([rows, blocks, bytes per block]), got rank 2}}
  // expected-error @+1 {{'transformer.dequantize' op failed to infer returned types}}
  %w = transformer.dequantize %q, %d {format = "q8_0"} : (tensor<96x64xi8>, tensor<96x2xf16>) -> tensor<96x64xf32>
  return %w : tensor<96x64xf32>
}

// -----

func.func @dequantize_float_data(%q: tensor<96x2x32xf32>, %d: tensor<96x2xf16>) -> tensor<96x64xf32> {
  // expected-error @+1 {{'transformer.dequantize' op operand #0 must be ranked tensor of signless integer values, but got 'tensor<96x2x32xf32>'}}
  %w = transformer.dequantize %q, %d {format = "q8_0"} : (tensor<96x2x32xf32>, tensor<96x2xf16>) -> tensor<96x64xf32>
  return %w : tensor<96x64xf32>
}

// -----

func.func @dequantize_integer_scales(%q: tensor<96x2x32xi8>, %d: tensor<96x2xi16>) -> tensor<96x64xf32> {
  // expected-error @+1 {{'transformer.dequantize' op operand #1 must be ranked tensor of floating-point values, but got 'tensor<96x2xi16>'}}
  %w = transformer.dequantize %q, %d {format = "q8_0"} : (tensor<96x2x32xi8>, tensor<96x2xi16>) -> tensor<96x64xf32>
  return %w : tensor<96x64xf32>
}

// -----

func.func @dequantize_wrong_result(%q: tensor<96x2x32xi8>, %d: tensor<96x2xf16>) -> tensor<64x96xf32> {
  // expected-error @+2 {{'transformer.dequantize' op inferred type(s) 'tensor<96x64xf32>' are incompatible with return type(s) of operation 'tensor<64x96xf32>'}}
  // expected-error @+1 {{'transformer.dequantize' op failed to infer returned types}}
  %w = transformer.dequantize %q, %d {format = "q8_0"} : (tensor<96x2x32xi8>, tensor<96x2xf16>) -> tensor<64x96xf32>
  return %w : tensor<64x96xf32>
}

// -----

// The result is f32 whatever the type of the scales.
func.func @dequantize_result_not_f32(%q: tensor<96x2x32xi8>, %d: tensor<96x2xf16>) -> tensor<96x64xf16> {
  // expected-error @+2 {{'transformer.dequantize' op inferred type(s) 'tensor<96x64xf32>' are incompatible with return type(s) of operation 'tensor<96x64xf16>'}}
  // expected-error @+1 {{'transformer.dequantize' op failed to infer returned types}}
  %w = transformer.dequantize %q, %d {format = "q8_0"} : (tensor<96x2x32xi8>, tensor<96x2xf16>) -> tensor<96x64xf16>
  return %w : tensor<96x64xf16>
}

//===----------------------------------------------------------------------===//
// matmul
//===----------------------------------------------------------------------===//

func.func @matmul_lhs_rank(%a: tensor<4xf32>, %b: tensor<4x5xf32>) -> tensor<5xf32> {
  // expected-error @+2 {{lhs must have rank >= 2, got rank 1}}
  // expected-error @+1 {{'transformer.matmul' op failed to infer returned types}}
  %c = transformer.matmul %a, %b : (tensor<4xf32>, tensor<4x5xf32>) -> tensor<5xf32>
  return %c : tensor<5xf32>
}

// -----

func.func @matmul_rhs_rank(%a: tensor<3x4xf32>, %b: tensor<4xf32>) -> tensor<3xf32> {
  // expected-error @+2 {{rhs must have rank >= 2, got rank 1}}
  // expected-error @+1 {{'transformer.matmul' op failed to infer returned types}}
  %c = transformer.matmul %a, %b : (tensor<3x4xf32>, tensor<4xf32>) -> tensor<3xf32>
  return %c : tensor<3xf32>
}

// -----

func.func @matmul_rank_mismatch(%a: tensor<2x3x4xf32>, %b: tensor<4x5xf32>) -> tensor<2x3x5xf32> {
  // expected-error @+2 {{lhs rank (3) does not match rhs rank (2)}}
  // expected-error @+1 {{'transformer.matmul' op failed to infer returned types}}
  %c = transformer.matmul %a, %b : (tensor<2x3x4xf32>, tensor<4x5xf32>) -> tensor<2x3x5xf32>
  return %c : tensor<2x3x5xf32>
}

// -----

func.func @matmul_batch(%a: tensor<2x8x3x4xf32>, %b: tensor<2x7x4x5xf32>) -> tensor<2x8x3x5xf32> {
  // expected-error @+1 {{'transformer.matmul' op batch dimension 1 of lhs (8) does not match rhs (7)}}
  %c = transformer.matmul %a, %b : (tensor<2x8x3x4xf32>, tensor<2x7x4x5xf32>) -> tensor<2x8x3x5xf32>
  return %c : tensor<2x8x3x5xf32>
}

// -----

func.func @matmul_contraction(%a: tensor<3x4xf32>, %b: tensor<5x4xf32>) -> tensor<3x4xf32> {
  // expected-error @+1 {{'transformer.matmul' op contraction dimension of lhs (4) does not match rhs (5)}}
  %c = transformer.matmul %a, %b : (tensor<3x4xf32>, tensor<5x4xf32>) -> tensor<3x4xf32>
  return %c : tensor<3x4xf32>
}

// -----

func.func @matmul_contraction_transposed(%a: tensor<3x4xf32>, %b: tensor<4x5xf32>) -> tensor<3x4xf32> {
  // expected-error @+1 {{'transformer.matmul' op contraction dimension of lhs (4) does not match rhs (5)}}
  %c = transformer.matmul %a, %b {transpose_rhs} : (tensor<3x4xf32>, tensor<4x5xf32>) -> tensor<3x4xf32>
  return %c : tensor<3x4xf32>
}

// -----

func.func @matmul_element_type(%a: tensor<3x4xf32>, %b: tensor<4x5xf16>) -> tensor<3x5xf32> {
  // expected-error @+1 {{'transformer.matmul' op rhs element type 'f16' does not match lhs element type 'f32'}}
  %c = transformer.matmul %a, %b : (tensor<3x4xf32>, tensor<4x5xf16>) -> tensor<3x5xf32>
  return %c : tensor<3x5xf32>
}

// -----

// Forgetting {transpose_rhs}: the inferred result reads n from rhs dim 1.
func.func @matmul_wrong_result(%q: tensor<16x64xf32>, %k: tensor<24x64xf32>) -> tensor<16x24xf32> {
  // expected-error @+2 {{'transformer.matmul' op inferred type(s) 'tensor<16x64xf32>' are incompatible with return type(s) of operation 'tensor<16x24xf32>'}}
  // expected-error @+1 {{'transformer.matmul' op failed to infer returned types}}
  %s = transformer.matmul %q, %k : (tensor<16x64xf32>, tensor<24x64xf32>) -> tensor<16x24xf32>
  return %s : tensor<16x24xf32>
}

//===----------------------------------------------------------------------===//
// rms_norm
//===----------------------------------------------------------------------===//

func.func @rms_norm_input_rank(%x: tensor<f32>) -> tensor<f32> {
  // expected-error @+2 {{input must have rank >= 1, got rank 0}}
  // expected-error @+1 {{'transformer.rms_norm' op failed to infer returned types}}
  %y = transformer.rms_norm %x : (tensor<f32>) -> tensor<f32>
  return %y : tensor<f32>
}

// -----

func.func @rms_norm_eps(%x: tensor<2x16xf32>) -> tensor<2x16xf32> {
  // expected-error @+1 {{'transformer.rms_norm' op eps (-1.000000e+00) must be non-negative}}
  %y = transformer.rms_norm %x {eps = -1.0 : f64} : (tensor<2x16xf32>) -> tensor<2x16xf32>
  return %y : tensor<2x16xf32>
}

// -----

func.func @rms_norm_weight_rank(%x: tensor<2x16xf32>, %w: tensor<2x16xf32>) -> tensor<2x16xf32> {
  // expected-error @+1 {{'transformer.rms_norm' op weight must have rank 1, got rank 2}}
  %y = transformer.rms_norm %x, %w : (tensor<2x16xf32>, tensor<2x16xf32>) -> tensor<2x16xf32>
  return %y : tensor<2x16xf32>
}

// -----

func.func @rms_norm_weight_size(%x: tensor<2x16xf32>, %w: tensor<8xf32>) -> tensor<2x16xf32> {
  // expected-error @+1 {{'transformer.rms_norm' op weight size (8) does not match the normalized dimension (16)}}
  %y = transformer.rms_norm %x, %w : (tensor<2x16xf32>, tensor<8xf32>) -> tensor<2x16xf32>
  return %y : tensor<2x16xf32>
}

// -----

func.func @rms_norm_weight_element_type(%x: tensor<2x16xbf16>, %w: tensor<16xf32>) -> tensor<2x16xbf16> {
  // expected-error @+1 {{'transformer.rms_norm' op weight element type 'f32' does not match input element type 'bf16'}}
  %y = transformer.rms_norm %x, %w : (tensor<2x16xbf16>, tensor<16xf32>) -> tensor<2x16xbf16>
  return %y : tensor<2x16xbf16>
}

// -----

func.func @rms_norm_wrong_result(%x: tensor<2x16xf32>) -> tensor<2x16xf16> {
  // expected-error @+2 {{'transformer.rms_norm' op inferred type(s) 'tensor<2x16xf32>' are incompatible with return type(s) of operation 'tensor<2x16xf16>'}}
  // expected-error @+1 {{'transformer.rms_norm' op failed to infer returned types}}
  %y = transformer.rms_norm %x : (tensor<2x16xf32>) -> tensor<2x16xf16>
  return %y : tensor<2x16xf16>
}

//===----------------------------------------------------------------------===//
// layer_norm
//===----------------------------------------------------------------------===//

func.func @layer_norm_input_rank(%x: tensor<f32>) -> tensor<f32> {
  // expected-error @+2 {{input must have rank >= 1, got rank 0}}
  // expected-error @+1 {{'transformer.layer_norm' op failed to infer returned types}}
  %y = transformer.layer_norm %x : (tensor<f32>) -> tensor<f32>
  return %y : tensor<f32>
}

// -----

func.func @layer_norm_eps(%x: tensor<2x16xf32>) -> tensor<2x16xf32> {
  // expected-error @+1 {{'transformer.layer_norm' op eps (-5.000000e-01) must be non-negative}}
  %y = transformer.layer_norm %x {eps = -0.5 : f64} : (tensor<2x16xf32>) -> tensor<2x16xf32>
  return %y : tensor<2x16xf32>
}

// -----

// A NaN eps is rejected too.
func.func @layer_norm_eps_nan(%x: tensor<2x16xf32>) -> tensor<2x16xf32> {
  // expected-error @+1 {{'transformer.layer_norm' op eps (nan) must be non-negative}}
  %y = transformer.layer_norm %x {eps = 0x7FF8000000000000 : f64} : (tensor<2x16xf32>) -> tensor<2x16xf32>
  return %y : tensor<2x16xf32>
}

// -----

func.func @layer_norm_weight_size(%x: tensor<2x16xf32>, %g: tensor<15xf32>) -> tensor<2x16xf32> {
  // expected-error @+1 {{'transformer.layer_norm' op weight size (15) does not match the normalized dimension (16)}}
  %y = transformer.layer_norm %x weight(%g) : (tensor<2x16xf32>, tensor<15xf32>) -> tensor<2x16xf32>
  return %y : tensor<2x16xf32>
}

// -----

func.func @layer_norm_bias_rank(%x: tensor<2x16xf32>, %b: tensor<f32>) -> tensor<2x16xf32> {
  // expected-error @+1 {{'transformer.layer_norm' op bias must have rank 1, got rank 0}}
  %y = transformer.layer_norm %x bias(%b) : (tensor<2x16xf32>, tensor<f32>) -> tensor<2x16xf32>
  return %y : tensor<2x16xf32>
}

// -----

func.func @layer_norm_bias_size(%x: tensor<2x16xf32>, %g: tensor<16xf32>, %b: tensor<17xf32>) -> tensor<2x16xf32> {
  // expected-error @+1 {{'transformer.layer_norm' op bias size (17) does not match the normalized dimension (16)}}
  %y = transformer.layer_norm %x weight(%g) bias(%b) : (tensor<2x16xf32>, tensor<16xf32>, tensor<17xf32>) -> tensor<2x16xf32>
  return %y : tensor<2x16xf32>
}

// -----

func.func @layer_norm_weight_element_type(%x: tensor<2x16xf32>, %g: tensor<16xf16>) -> tensor<2x16xf32> {
  // expected-error @+1 {{'transformer.layer_norm' op weight element type 'f16' does not match input element type 'f32'}}
  %y = transformer.layer_norm %x weight(%g) : (tensor<2x16xf32>, tensor<16xf16>) -> tensor<2x16xf32>
  return %y : tensor<2x16xf32>
}

// -----

func.func @layer_norm_bias_element_type(%x: tensor<2x16xf32>, %g: tensor<16xf32>, %b: tensor<16xf64>) -> tensor<2x16xf32> {
  // expected-error @+1 {{'transformer.layer_norm' op bias element type 'f64' does not match input element type 'f32'}}
  %y = transformer.layer_norm %x weight(%g) bias(%b) : (tensor<2x16xf32>, tensor<16xf32>, tensor<16xf64>) -> tensor<2x16xf32>
  return %y : tensor<2x16xf32>
}

//===----------------------------------------------------------------------===//
// rope
//===----------------------------------------------------------------------===//

func.func @rope_input_rank(%x: tensor<1x7x64xf32>, %p: tensor<7xi64>) -> tensor<1x7x64xf32> {
  // expected-error @+2 {{input must have rank 4 ([batch, heads, seq, head_dim]), got rank 3}}
  // expected-error @+1 {{'transformer.rope' op failed to infer returned types}}
  %y = transformer.rope %x, %p : (tensor<1x7x64xf32>, tensor<7xi64>) -> tensor<1x7x64xf32>
  return %y : tensor<1x7x64xf32>
}

// -----

func.func @rope_positions_rank(%x: tensor<1x2x7x64xf32>, %p: tensor<1x1x7xi64>) -> tensor<1x2x7x64xf32> {
  // expected-error @+1 {{'transformer.rope' op positions must have rank 1 ([seq]) or 2 ([batch, seq]), got rank 3}}
  %y = transformer.rope %x, %p : (tensor<1x2x7x64xf32>, tensor<1x1x7xi64>) -> tensor<1x2x7x64xf32>
  return %y : tensor<1x2x7x64xf32>
}

// -----

func.func @rope_positions_seq(%x: tensor<1x2x7x64xf32>, %p: tensor<8xi64>) -> tensor<1x2x7x64xf32> {
  // expected-error @+1 {{'transformer.rope' op positions sequence dimension (8) does not match input dimension 2 (seq = 7)}}
  %y = transformer.rope %x, %p : (tensor<1x2x7x64xf32>, tensor<8xi64>) -> tensor<1x2x7x64xf32>
  return %y : tensor<1x2x7x64xf32>
}

// -----

func.func @rope_positions_batch(%x: tensor<1x2x7x64xf32>, %p: tensor<3x7xi64>) -> tensor<1x2x7x64xf32> {
  // expected-error @+1 {{'transformer.rope' op positions batch dimension (3) does not match input dimension 0 (batch = 1)}}
  %y = transformer.rope %x, %p : (tensor<1x2x7x64xf32>, tensor<3x7xi64>) -> tensor<1x2x7x64xf32>
  return %y : tensor<1x2x7x64xf32>
}

// -----

func.func @rope_float_positions(%x: tensor<1x2x7x64xf32>, %p: tensor<7xf32>) -> tensor<1x2x7x64xf32> {
  // expected-error @+1 {{'transformer.rope' op operand #1 must be ranked tensor of signless integer values, but got 'tensor<7xf32>'}}
  %y = transformer.rope %x, %p : (tensor<1x2x7x64xf32>, tensor<7xf32>) -> tensor<1x2x7x64xf32>
  return %y : tensor<1x2x7x64xf32>
}

// -----

func.func @rope_theta(%x: tensor<1x2x7x64xf32>, %p: tensor<7xi64>) -> tensor<1x2x7x64xf32> {
  // expected-error @+1 {{'transformer.rope' op theta (0.000000e+00) must be positive}}
  %y = transformer.rope %x, %p {theta = 0.0 : f64} : (tensor<1x2x7x64xf32>, tensor<7xi64>) -> tensor<1x2x7x64xf32>
  return %y : tensor<1x2x7x64xf32>
}

// -----

func.func @rope_theta_nan(%x: tensor<1x2x7x64xf32>, %p: tensor<7xi64>) -> tensor<1x2x7x64xf32> {
  // expected-error @+1 {{'transformer.rope' op theta (nan) must be positive}}
  %y = transformer.rope %x, %p {theta = 0x7FF8000000000000 : f64} : (tensor<1x2x7x64xf32>, tensor<7xi64>) -> tensor<1x2x7x64xf32>
  return %y : tensor<1x2x7x64xf32>
}

// -----

func.func @rope_attention_scaling_negative(%x: tensor<1x2x7x64xf32>, %p: tensor<7xi64>) -> tensor<1x2x7x64xf32> {
  // expected-error @+1 {{'transformer.rope' op attention_scaling (-1.200000e+00) must be positive and finite}}
  %y = transformer.rope %x, %p {attention_scaling = -1.2 : f64} : (tensor<1x2x7x64xf32>, tensor<7xi64>) -> tensor<1x2x7x64xf32>
  return %y : tensor<1x2x7x64xf32>
}

// -----

func.func @rope_attention_scaling_inf(%x: tensor<1x2x7x64xf32>, %p: tensor<7xi64>) -> tensor<1x2x7x64xf32> {
  // expected-error @+1 {{'transformer.rope' op attention_scaling (INF) must be positive and finite}}
  %y = transformer.rope %x, %p {attention_scaling = 0x7FF0000000000000 : f64} : (tensor<1x2x7x64xf32>, tensor<7xi64>) -> tensor<1x2x7x64xf32>
  return %y : tensor<1x2x7x64xf32>
}

// -----

func.func @rope_rotary_dim_odd(%x: tensor<1x2x7x64xf32>, %p: tensor<7xi64>) -> tensor<1x2x7x64xf32> {
  // expected-error @+1 {{'transformer.rope' op rotary_dim (33) must be positive and even}}
  %y = transformer.rope %x, %p {rotary_dim = 33 : i64} : (tensor<1x2x7x64xf32>, tensor<7xi64>) -> tensor<1x2x7x64xf32>
  return %y : tensor<1x2x7x64xf32>
}

// -----

func.func @rope_rotary_dim_negative(%x: tensor<1x2x7x64xf32>, %p: tensor<7xi64>) -> tensor<1x2x7x64xf32> {
  // expected-error @+1 {{'transformer.rope' op rotary_dim (-2) must be positive and even}}
  %y = transformer.rope %x, %p {rotary_dim = -2 : i64} : (tensor<1x2x7x64xf32>, tensor<7xi64>) -> tensor<1x2x7x64xf32>
  return %y : tensor<1x2x7x64xf32>
}

// -----

func.func @rope_rotary_dim_too_large(%x: tensor<1x2x7x64xf32>, %p: tensor<7xi64>) -> tensor<1x2x7x64xf32> {
  // expected-error @+1 {{'transformer.rope' op rotary_dim (66) exceeds head_dim (64)}}
  %y = transformer.rope %x, %p {rotary_dim = 66 : i64} : (tensor<1x2x7x64xf32>, tensor<7xi64>) -> tensor<1x2x7x64xf32>
  return %y : tensor<1x2x7x64xf32>
}

// -----

func.func @rope_dynamic_head_dim(%x: tensor<1x2x7x?xf32>, %p: tensor<7xi64>) -> tensor<1x2x7x?xf32> {
  // expected-error @+1 {{'transformer.rope' op rotary_dim is required when head_dim is dynamic}}
  %y = transformer.rope %x, %p : (tensor<1x2x7x?xf32>, tensor<7xi64>) -> tensor<1x2x7x?xf32>
  return %y : tensor<1x2x7x?xf32>
}

// -----

func.func @rope_odd_head_dim(%x: tensor<1x2x7x65xf32>, %p: tensor<7xi64>) -> tensor<1x2x7x65xf32> {
  // expected-error @+1 {{'transformer.rope' op head_dim (65) is odd: set an even rotary_dim for partial rotary}}
  %y = transformer.rope %x, %p : (tensor<1x2x7x65xf32>, tensor<7xi64>) -> tensor<1x2x7x65xf32>
  return %y : tensor<1x2x7x65xf32>
}

// -----

func.func @rope_inv_freq_rank(%x: tensor<1x2x7x64xf32>, %p: tensor<7xi64>, %f: tensor<1x32xf32>) -> tensor<1x2x7x64xf32> {
  // expected-error @+1 {{'transformer.rope' op inv_freq must have rank 1, got rank 2}}
  %y = transformer.rope %x, %p inv_freq(%f) : (tensor<1x2x7x64xf32>, tensor<7xi64>, tensor<1x32xf32>) -> tensor<1x2x7x64xf32>
  return %y : tensor<1x2x7x64xf32>
}

// -----

// With rotary_dim = 32, inv_freq has rotary_dim / 2 = 16 entries, not head_dim / 2.
func.func @rope_inv_freq_size(%x: tensor<1x2x7x64xf32>, %p: tensor<7xi64>, %f: tensor<32xf32>) -> tensor<1x2x7x64xf32> {
  // expected-error @+1 {{'transformer.rope' op inv_freq size (32) does not match rotary_dim / 2 (16)}}
  %y = transformer.rope %x, %p inv_freq(%f) {rotary_dim = 32 : i64} : (tensor<1x2x7x64xf32>, tensor<7xi64>, tensor<32xf32>) -> tensor<1x2x7x64xf32>
  return %y : tensor<1x2x7x64xf32>
}

//===----------------------------------------------------------------------===//
// attention
//===----------------------------------------------------------------------===//

func.func @attention_query_rank(%q: tensor<8x16x64xf32>, %k: tensor<1x8x16x64xf32>) -> tensor<8x16x64xf32> {
  // expected-error @+2 {{query must have rank 4 ([batch, num_heads, q_len, head_dim]), got rank 3}}
  // expected-error @+1 {{'transformer.attention' op failed to infer returned types}}
  %o = transformer.attention %q, %k, %k : (tensor<8x16x64xf32>, tensor<1x8x16x64xf32>, tensor<1x8x16x64xf32>) -> tensor<8x16x64xf32>
  return %o : tensor<8x16x64xf32>
}

// -----

func.func @attention_value_rank(%q: tensor<1x8x16x64xf32>, %v: tensor<8x16x64xf32>) -> tensor<1x8x16x64xf32> {
  // expected-error @+2 {{value must have rank 4 ([batch, num_kv_heads, kv_len, v_head_dim]), got rank 3}}
  // expected-error @+1 {{'transformer.attention' op failed to infer returned types}}
  %o = transformer.attention %q, %q, %v : (tensor<1x8x16x64xf32>, tensor<1x8x16x64xf32>, tensor<8x16x64xf32>) -> tensor<1x8x16x64xf32>
  return %o : tensor<1x8x16x64xf32>
}

// -----

func.func @attention_key_rank(%q: tensor<1x8x16x64xf32>, %k: tensor<8x16x64xf32>) -> tensor<1x8x16x64xf32> {
  // expected-error @+1 {{'transformer.attention' op key must have rank 4 ([batch, num_kv_heads, kv_len, head_dim]), got rank 3}}
  %o = transformer.attention %q, %k, %q : (tensor<1x8x16x64xf32>, tensor<8x16x64xf32>, tensor<1x8x16x64xf32>) -> tensor<1x8x16x64xf32>
  return %o : tensor<1x8x16x64xf32>
}

// -----

func.func @attention_batch(%q: tensor<2x8x16x64xf32>, %k: tensor<2x8x16x64xf32>, %v: tensor<3x8x16x64xf32>) -> tensor<2x8x16x64xf32> {
  // expected-error @+1 {{'transformer.attention' op batch dimensions of query (2), key (2) and value (3) differ}}
  %o = transformer.attention %q, %k, %v : (tensor<2x8x16x64xf32>, tensor<2x8x16x64xf32>, tensor<3x8x16x64xf32>) -> tensor<2x8x16x64xf32>
  return %o : tensor<2x8x16x64xf32>
}

// -----

// Dynamic batch dims print as `?`.
func.func @attention_batch_dynamic(%q: tensor<2x8x16x64xf32>, %k: tensor<?x8x16x64xf32>, %v: tensor<3x8x16x64xf32>) -> tensor<2x8x16x64xf32> {
  // expected-error @+1 {{'transformer.attention' op batch dimensions of query (2), key (?) and value (3) differ}}
  %o = transformer.attention %q, %k, %v : (tensor<2x8x16x64xf32>, tensor<?x8x16x64xf32>, tensor<3x8x16x64xf32>) -> tensor<2x8x16x64xf32>
  return %o : tensor<2x8x16x64xf32>
}

// -----

func.func @attention_kv_heads(%q: tensor<1x8x16x64xf32>, %k: tensor<1x4x16x64xf32>, %v: tensor<1x2x16x64xf32>) -> tensor<1x8x16x64xf32> {
  // expected-error @+1 {{'transformer.attention' op num_kv_heads of key (4) and value (2) differ}}
  %o = transformer.attention %q, %k, %v : (tensor<1x8x16x64xf32>, tensor<1x4x16x64xf32>, tensor<1x2x16x64xf32>) -> tensor<1x8x16x64xf32>
  return %o : tensor<1x8x16x64xf32>
}

// -----

func.func @attention_gqa_not_multiple(%q: tensor<1x8x16x64xf32>, %k: tensor<1x3x16x64xf32>) -> tensor<1x8x16x64xf32> {
  // expected-error @+1 {{'transformer.attention' op num_heads (8) is not a multiple of num_kv_heads (3)}}
  %o = transformer.attention %q, %k, %k : (tensor<1x8x16x64xf32>, tensor<1x3x16x64xf32>, tensor<1x3x16x64xf32>) -> tensor<1x8x16x64xf32>
  return %o : tensor<1x8x16x64xf32>
}

// -----

// Zero KV heads is rejected before anything divides by it.
func.func @attention_zero_kv_heads(%q: tensor<1x8x16x64xf32>, %k: tensor<1x0x16x64xf32>) -> tensor<1x8x16x64xf32> {
  // expected-error @+1 {{'transformer.attention' op num_heads (8) is not a multiple of num_kv_heads (0)}}
  %o = transformer.attention %q, %k, %k : (tensor<1x8x16x64xf32>, tensor<1x0x16x64xf32>, tensor<1x0x16x64xf32>) -> tensor<1x8x16x64xf32>
  return %o : tensor<1x8x16x64xf32>
}

// -----

func.func @attention_gqa_dynamic_heads(%q: tensor<1x?x16x64xf32>, %k: tensor<1x2x16x64xf32>) -> tensor<1x?x16x64xf32> {
  // expected-error @+1 {{'transformer.attention' op num_heads and num_kv_heads must be static for grouped-query attention}}
  %o = transformer.attention %q, %k, %k : (tensor<1x?x16x64xf32>, tensor<1x2x16x64xf32>, tensor<1x2x16x64xf32>) -> tensor<1x?x16x64xf32>
  return %o : tensor<1x?x16x64xf32>
}

// -----

func.func @attention_head_dim(%q: tensor<1x8x16x64xf32>, %k: tensor<1x8x16x32xf32>) -> tensor<1x8x16x32xf32> {
  // expected-error @+1 {{'transformer.attention' op head_dim of query (64) and key (32) differ}}
  %o = transformer.attention %q, %k, %k : (tensor<1x8x16x64xf32>, tensor<1x8x16x32xf32>, tensor<1x8x16x32xf32>) -> tensor<1x8x16x32xf32>
  return %o : tensor<1x8x16x32xf32>
}

// -----

func.func @attention_kv_len(%q: tensor<1x8x16x64xf32>, %k: tensor<1x8x16x64xf32>, %v: tensor<1x8x12x64xf32>) -> tensor<1x8x16x64xf32> {
  // expected-error @+1 {{'transformer.attention' op kv_len of key (16) and value (12) differ}}
  %o = transformer.attention %q, %k, %v : (tensor<1x8x16x64xf32>, tensor<1x8x16x64xf32>, tensor<1x8x12x64xf32>) -> tensor<1x8x16x64xf32>
  return %o : tensor<1x8x16x64xf32>
}

// -----

func.func @attention_key_element_type(%q: tensor<1x8x16x64xf32>, %k: tensor<1x8x16x64xf16>, %v: tensor<1x8x16x64xf32>) -> tensor<1x8x16x64xf32> {
  // expected-error @+1 {{'transformer.attention' op key element type 'f16' does not match query element type 'f32'}}
  %o = transformer.attention %q, %k, %v : (tensor<1x8x16x64xf32>, tensor<1x8x16x64xf16>, tensor<1x8x16x64xf32>) -> tensor<1x8x16x64xf32>
  return %o : tensor<1x8x16x64xf32>
}

// -----

func.func @attention_value_element_type(%q: tensor<1x8x16x64xf32>, %v: tensor<1x8x16x64xbf16>) -> tensor<1x8x16x64xf32> {
  // expected-error @+1 {{'transformer.attention' op value element type 'bf16' does not match query element type 'f32'}}
  %o = transformer.attention %q, %q, %v : (tensor<1x8x16x64xf32>, tensor<1x8x16x64xf32>, tensor<1x8x16x64xbf16>) -> tensor<1x8x16x64xf32>
  return %o : tensor<1x8x16x64xf32>
}

// -----

func.func @attention_mask_element_type(%q: tensor<1x8x16x64xf32>, %m: tensor<1x1x16x16xf16>) -> tensor<1x8x16x64xf32> {
  // expected-error @+1 {{'transformer.attention' op mask element type 'f16' does not match query element type 'f32'}}
  %o = transformer.attention %q, %q, %q mask(%m) : (tensor<1x8x16x64xf32>, tensor<1x8x16x64xf32>, tensor<1x8x16x64xf32>, tensor<1x1x16x16xf16>) -> tensor<1x8x16x64xf32>
  return %o : tensor<1x8x16x64xf32>
}

// -----

func.func @attention_mask_rank(%q: tensor<1x8x16x64xf32>, %m: tensor<16x16xf32>) -> tensor<1x8x16x64xf32> {
  // expected-error @+1 {{'transformer.attention' op mask must have rank 4 ([batch, num_heads, q_len, kv_len] or 1 where broadcast), got rank 2}}
  %o = transformer.attention %q, %q, %q mask(%m) : (tensor<1x8x16x64xf32>, tensor<1x8x16x64xf32>, tensor<1x8x16x64xf32>, tensor<16x16xf32>) -> tensor<1x8x16x64xf32>
  return %o : tensor<1x8x16x64xf32>
}

// -----

func.func @attention_mask_dim(%q: tensor<2x8x16x64xf32>, %k: tensor<2x8x24x64xf32>, %m: tensor<2x1x1x16xf32>) -> tensor<2x8x16x64xf32> {
  // expected-error @+1 {{'transformer.attention' op mask dimension 3 (16) is neither 1 nor kv_len (24)}}
  %o = transformer.attention %q, %k, %k mask(%m) : (tensor<2x8x16x64xf32>, tensor<2x8x24x64xf32>, tensor<2x8x24x64xf32>, tensor<2x1x1x16xf32>) -> tensor<2x8x16x64xf32>
  return %o : tensor<2x8x16x64xf32>
}

// -----

// The mask is per query head (num_heads), not per KV head.
func.func @attention_mask_heads(%q: tensor<1x8x16x64xf32>, %k: tensor<1x2x16x64xf32>, %m: tensor<1x2x16x16xf32>) -> tensor<1x8x16x64xf32> {
  // expected-error @+1 {{'transformer.attention' op mask dimension 1 (2) is neither 1 nor num_heads (8)}}
  %o = transformer.attention %q, %k, %k mask(%m) : (tensor<1x8x16x64xf32>, tensor<1x2x16x64xf32>, tensor<1x2x16x64xf32>, tensor<1x2x16x16xf32>) -> tensor<1x8x16x64xf32>
  return %o : tensor<1x8x16x64xf32>
}

// -----

func.func @attention_dynamic_head_dim_needs_scale(%q: tensor<1x8x16x?xf32>) -> tensor<1x8x16x?xf32> {
  // expected-error @+1 {{'transformer.attention' op scale is required when head_dim is dynamic}}
  %o = transformer.attention %q, %q, %q : (tensor<1x8x16x?xf32>, tensor<1x8x16x?xf32>, tensor<1x8x16x?xf32>) -> tensor<1x8x16x?xf32>
  return %o : tensor<1x8x16x?xf32>
}

// -----

func.func @attention_mask_dynamic_heads(%q: tensor<1x9x1x64xf32>, %k: tensor<1x3x128x64xf32>, %m: tensor<1x?x1x128xf32>) -> tensor<1x9x1x64xf32> {
  // expected-error @+1 {{'transformer.attention' op mask dimension 1 (num_heads) must be static: 1 or num_heads}}
  %o = transformer.attention %q, %k, %k mask(%m) : (tensor<1x9x1x64xf32>, tensor<1x3x128x64xf32>, tensor<1x3x128x64xf32>, tensor<1x?x1x128xf32>) -> tensor<1x9x1x64xf32>
  return %o : tensor<1x9x1x64xf32>
}

// -----

func.func @attention_scale(%q: tensor<1x8x16x64xf32>) -> tensor<1x8x16x64xf32> {
  // expected-error @+1 {{'transformer.attention' op scale (-1.250000e-01) must be positive}}
  %o = transformer.attention %q, %q, %q {scale = -0.125 : f64} : (tensor<1x8x16x64xf32>, tensor<1x8x16x64xf32>, tensor<1x8x16x64xf32>) -> tensor<1x8x16x64xf32>
  return %o : tensor<1x8x16x64xf32>
}

// -----

func.func @attention_scale_zero(%q: tensor<1x8x16x64xf32>) -> tensor<1x8x16x64xf32> {
  // expected-error @+1 {{'transformer.attention' op scale (0.000000e+00) must be positive}}
  %o = transformer.attention %q, %q, %q {scale = 0.0 : f64} : (tensor<1x8x16x64xf32>, tensor<1x8x16x64xf32>, tensor<1x8x16x64xf32>) -> tensor<1x8x16x64xf32>
  return %o : tensor<1x8x16x64xf32>
}

// -----

func.func @attention_offset_type(%q: tensor<1x8x1x64xf32>, %k: tensor<1x8x16x64xf32>, %p: i64) -> tensor<1x8x1x64xf32> {
  // expected-error @+1 {{'transformer.attention' op operand #3 must be index, but got 'i64'}}
  %o = "transformer.attention"(%q, %k, %k, %p) <{causal, operandSegmentSizes = array<i32: 1, 1, 1, 0, 1>}> : (tensor<1x8x1x64xf32>, tensor<1x8x16x64xf32>, tensor<1x8x16x64xf32>, i64) -> tensor<1x8x1x64xf32>
  return %o : tensor<1x8x1x64xf32>
}

// -----

// The result takes v_head_dim from value, not head_dim from query.
func.func @attention_wrong_result(%q: tensor<1x8x16x64xf32>, %v: tensor<1x8x16x32xf32>) -> tensor<1x8x16x64xf32> {
  // expected-error @+2 {{'transformer.attention' op inferred type(s) 'tensor<1x8x16x32xf32>' are incompatible with return type(s) of operation 'tensor<1x8x16x64xf32>'}}
  // expected-error @+1 {{'transformer.attention' op failed to infer returned types}}
  %o = transformer.attention %q, %q, %v : (tensor<1x8x16x64xf32>, tensor<1x8x16x64xf32>, tensor<1x8x16x32xf32>) -> tensor<1x8x16x64xf32>
  return %o : tensor<1x8x16x64xf32>
}

//===----------------------------------------------------------------------===//
// kv_cache_update
//===----------------------------------------------------------------------===//

func.func @kv_cache_update_cache_rank(%c: tensor<3x128x64xf32>, %u: tensor<1x3x1x64xf32>, %p: index) -> tensor<3x128x64xf32> {
  // expected-error @+2 {{cache must have rank 4 ([batch, kv_heads, max_seq, head_dim]), got rank 3}}
  // expected-error @+1 {{'transformer.kv_cache_update' op failed to infer returned types}}
  %r = transformer.kv_cache_update %c, %u at %p : tensor<3x128x64xf32>, tensor<1x3x1x64xf32> -> tensor<3x128x64xf32>
  return %r : tensor<3x128x64xf32>
}

// -----

func.func @kv_cache_update_update_rank(%c: tensor<1x3x128x64xf32>, %u: tensor<3x1x64xf32>, %p: index) -> tensor<1x3x128x64xf32> {
  // expected-error @+1 {{'transformer.kv_cache_update' op update must have rank 4 ([batch, kv_heads, new_len, head_dim]), got rank 3}}
  %r = transformer.kv_cache_update %c, %u at %p : tensor<1x3x128x64xf32>, tensor<3x1x64xf32> -> tensor<1x3x128x64xf32>
  return %r : tensor<1x3x128x64xf32>
}

// -----

func.func @kv_cache_update_batch(%c: tensor<1x3x128x64xf32>, %u: tensor<2x3x1x64xf32>, %p: index) -> tensor<1x3x128x64xf32> {
  // expected-error @+1 {{'transformer.kv_cache_update' op update dimension 0 (batch = 2) does not match cache (1)}}
  %r = transformer.kv_cache_update %c, %u at %p : tensor<1x3x128x64xf32>, tensor<2x3x1x64xf32> -> tensor<1x3x128x64xf32>
  return %r : tensor<1x3x128x64xf32>
}

// -----

func.func @kv_cache_update_heads(%c: tensor<1x3x128x64xf32>, %u: tensor<1x9x1x64xf32>, %p: index) -> tensor<1x3x128x64xf32> {
  // expected-error @+1 {{'transformer.kv_cache_update' op update dimension 1 (kv_heads = 9) does not match cache (3)}}
  %r = transformer.kv_cache_update %c, %u at %p : tensor<1x3x128x64xf32>, tensor<1x9x1x64xf32> -> tensor<1x3x128x64xf32>
  return %r : tensor<1x3x128x64xf32>
}

// -----

func.func @kv_cache_update_head_dim(%c: tensor<1x3x128x64xf32>, %u: tensor<1x3x1x32xf32>, %p: index) -> tensor<1x3x128x64xf32> {
  // expected-error @+1 {{'transformer.kv_cache_update' op update dimension 3 (head_dim = 32) does not match cache (64)}}
  %r = transformer.kv_cache_update %c, %u at %p : tensor<1x3x128x64xf32>, tensor<1x3x1x32xf32> -> tensor<1x3x128x64xf32>
  return %r : tensor<1x3x128x64xf32>
}

// -----

func.func @kv_cache_update_too_long(%c: tensor<1x3x128x64xf32>, %u: tensor<1x3x129x64xf32>, %p: index) -> tensor<1x3x128x64xf32> {
  // expected-error @+1 {{'transformer.kv_cache_update' op update length (129) exceeds cache length (max_seq = 128)}}
  %r = transformer.kv_cache_update %c, %u at %p : tensor<1x3x128x64xf32>, tensor<1x3x129x64xf32> -> tensor<1x3x128x64xf32>
  return %r : tensor<1x3x128x64xf32>
}

// -----

func.func @kv_cache_update_element_type(%c: tensor<1x3x128x64xf16>, %u: tensor<1x3x1x64xf32>, %p: index) -> tensor<1x3x128x64xf16> {
  // expected-error @+1 {{'transformer.kv_cache_update' op update element type 'f32' does not match cache element type 'f16'}}
  %r = transformer.kv_cache_update %c, %u at %p : tensor<1x3x128x64xf16>, tensor<1x3x1x64xf32> -> tensor<1x3x128x64xf16>
  return %r : tensor<1x3x128x64xf16>
}

// -----

func.func @kv_cache_update_position_type(%c: tensor<1x3x128x64xf32>, %u: tensor<1x3x1x64xf32>, %p: i64) -> tensor<1x3x128x64xf32> {
  // expected-error @+1 {{'transformer.kv_cache_update' op operand #2 must be index, but got 'i64'}}
  %r = "transformer.kv_cache_update"(%c, %u, %p) : (tensor<1x3x128x64xf32>, tensor<1x3x1x64xf32>, i64) -> tensor<1x3x128x64xf32>
  return %r : tensor<1x3x128x64xf32>
}

// -----

func.func @kv_cache_update_wrong_result(%c: tensor<1x3x128x64xf32>, %u: tensor<1x3x1x64xf32>, %p: index) -> tensor<1x3x1x64xf32> {
  // expected-error @+2 {{'transformer.kv_cache_update' op inferred type(s) 'tensor<1x3x128x64xf32>' are incompatible with return type(s) of operation 'tensor<1x3x1x64xf32>'}}
  // expected-error @+1 {{'transformer.kv_cache_update' op failed to infer returned types}}
  %r = transformer.kv_cache_update %c, %u at %p : tensor<1x3x128x64xf32>, tensor<1x3x1x64xf32> -> tensor<1x3x1x64xf32>
  return %r : tensor<1x3x1x64xf32>
}

//===----------------------------------------------------------------------===//
// split_heads / merge_heads
//===----------------------------------------------------------------------===//

func.func @split_heads_rank(%x: tensor<7x576xf32>) -> tensor<9x7x64xf32> {
  // expected-error @+2 {{input must have rank 3 ([batch, seq, heads * head_dim]), got rank 2}}
  // expected-error @+1 {{'transformer.split_heads' op failed to infer returned types}}
  %h = transformer.split_heads %x {num_heads = 9 : i64} : tensor<7x576xf32> -> tensor<9x7x64xf32>
  return %h : tensor<9x7x64xf32>
}

// -----

func.func @split_heads_zero_heads(%x: tensor<1x7x576xf32>) -> tensor<1x0x7x0xf32> {
  // expected-error @+2 {{num_heads (0) must be positive}}
  // expected-error @+1 {{'transformer.split_heads' op failed to infer returned types}}
  %h = transformer.split_heads %x {num_heads = 0 : i64} : tensor<1x7x576xf32> -> tensor<1x0x7x0xf32>
  return %h : tensor<1x0x7x0xf32>
}

// -----

func.func @split_heads_not_multiple(%x: tensor<1x7x576xf32>) -> tensor<1x7x7x82xf32> {
  // expected-error @+2 {{feature dimension (576) is not a multiple of num_heads (7)}}
  // expected-error @+1 {{'transformer.split_heads' op failed to infer returned types}}
  %h = transformer.split_heads %x {num_heads = 7 : i64} : tensor<1x7x576xf32> -> tensor<1x7x7x82xf32>
  return %h : tensor<1x7x7x82xf32>
}

// -----

func.func @split_heads_missing_num_heads(%x: tensor<1x7x576xf32>) -> tensor<1x9x7x64xf32> {
  // expected-error @+1 {{'transformer.split_heads' op requires attribute 'num_heads'}}
  %h = "transformer.split_heads"(%x) : (tensor<1x7x576xf32>) -> tensor<1x9x7x64xf32>
  return %h : tensor<1x9x7x64xf32>
}

// -----

func.func @split_heads_wrong_result(%x: tensor<1x7x576xf32>) -> tensor<1x7x9x64xf32> {
  // expected-error @+2 {{'transformer.split_heads' op inferred type(s) 'tensor<1x9x7x64xf32>' are incompatible with return type(s) of operation 'tensor<1x7x9x64xf32>'}}
  // expected-error @+1 {{'transformer.split_heads' op failed to infer returned types}}
  %h = transformer.split_heads %x {num_heads = 9 : i64} : tensor<1x7x576xf32> -> tensor<1x7x9x64xf32>
  return %h : tensor<1x7x9x64xf32>
}

// -----

func.func @merge_heads_rank(%x: tensor<9x7x64xf32>) -> tensor<7x576xf32> {
  // expected-error @+2 {{input must have rank 4 ([batch, heads, seq, head_dim]), got rank 3}}
  // expected-error @+1 {{'transformer.merge_heads' op failed to infer returned types}}
  %m = transformer.merge_heads %x : tensor<9x7x64xf32> -> tensor<7x576xf32>
  return %m : tensor<7x576xf32>
}

// -----

func.func @merge_heads_wrong_result(%x: tensor<1x9x7x64xf32>) -> tensor<1x9x448xf32> {
  // expected-error @+2 {{'transformer.merge_heads' op inferred type(s) 'tensor<1x7x576xf32>' are incompatible with return type(s) of operation 'tensor<1x9x448xf32>'}}
  // expected-error @+1 {{'transformer.merge_heads' op failed to infer returned types}}
  %m = transformer.merge_heads %x : tensor<1x9x7x64xf32> -> tensor<1x9x448xf32>
  return %m : tensor<1x9x448xf32>
}

//===----------------------------------------------------------------------===//
// softmax, silu, gelu
//===----------------------------------------------------------------------===//

func.func @softmax_axis(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
  // expected-error @+1 {{'transformer.softmax' op axis (2) is out of range for rank 2}}
  %y = transformer.softmax %x {axis = 2 : i64} : tensor<2x8xf32>
  return %y : tensor<2x8xf32>
}

// -----

func.func @softmax_negative_axis(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
  // expected-error @+1 {{'transformer.softmax' op axis (-3) is out of range for rank 2}}
  %y = transformer.softmax %x {axis = -3 : i64} : tensor<2x8xf32>
  return %y : tensor<2x8xf32>
}

// -----

func.func @softmax_rank0(%x: tensor<f32>) -> tensor<f32> {
  // expected-error @+1 {{'transformer.softmax' op axis (-1) is out of range for rank 0}}
  %y = transformer.softmax %x : tensor<f32>
  return %y : tensor<f32>
}

// -----

func.func @softmax_result_type(%x: tensor<2x8xf32>) -> tensor<2x8xf16> {
  // expected-error @+1 {{'transformer.softmax' op requires the same type for all operands and results}}
  %y = "transformer.softmax"(%x) : (tensor<2x8xf32>) -> tensor<2x8xf16>
  return %y : tensor<2x8xf16>
}

// -----

func.func @silu_integer(%x: tensor<2x8xi32>) -> tensor<2x8xi32> {
  // expected-error @+1 {{'transformer.silu' op operand #0 must be ranked tensor of floating-point values, but got 'tensor<2x8xi32>'}}
  %y = transformer.silu %x : tensor<2x8xi32>
  return %y : tensor<2x8xi32>
}

// -----

func.func @silu_result_type(%x: tensor<2x8xf32>) -> tensor<8x2xf32> {
  // expected-error @+1 {{'transformer.silu' op requires the same type for all operands and results}}
  %y = "transformer.silu"(%x) : (tensor<2x8xf32>) -> tensor<8x2xf32>
  return %y : tensor<8x2xf32>
}

// -----

func.func @gelu_approximate(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
  // expected-error @+1 {{'transformer.gelu' op approximate must be "none" or "tanh", got "erf"}}
  %y = transformer.gelu %x {approximate = "erf"} : tensor<2x8xf32>
  return %y : tensor<2x8xf32>
}

//===----------------------------------------------------------------------===//
// gated_mlp
//===----------------------------------------------------------------------===//

func.func @gated_mlp_input_rank(%x: tensor<f32>, %wg: tensor<32x16xf32>, %wd: tensor<16x32xf32>) -> tensor<16xf32> {
  // expected-error @+2 {{input must have rank >= 1, got rank 0}}
  // expected-error @+1 {{'transformer.gated_mlp' op failed to infer returned types}}
  %y = transformer.gated_mlp %x, %wg, %wg, %wd : (tensor<f32>, tensor<32x16xf32>, tensor<32x16xf32>, tensor<16x32xf32>) -> tensor<16xf32>
  return %y : tensor<16xf32>
}

// -----

func.func @gated_mlp_down_rank(%x: tensor<2x16xf32>, %wg: tensor<32x16xf32>, %wd: tensor<32xf32>) -> tensor<2x16xf32> {
  // expected-error @+2 {{down_weight must have rank 2 ([hidden, ffn]), got rank 1}}
  // expected-error @+1 {{'transformer.gated_mlp' op failed to infer returned types}}
  %y = transformer.gated_mlp %x, %wg, %wg, %wd : (tensor<2x16xf32>, tensor<32x16xf32>, tensor<32x16xf32>, tensor<32xf32>) -> tensor<2x16xf32>
  return %y : tensor<2x16xf32>
}

// -----

func.func @gated_mlp_activation(%x: tensor<2x16xf32>, %wg: tensor<32x16xf32>, %wd: tensor<16x32xf32>) -> tensor<2x16xf32> {
  // expected-error @+1 {{'transformer.gated_mlp' op activation must be "silu", "gelu" or "gelu_tanh", got "relu"}}
  %y = transformer.gated_mlp %x, %wg, %wg, %wd {activation = "relu"} : (tensor<2x16xf32>, tensor<32x16xf32>, tensor<32x16xf32>, tensor<16x32xf32>) -> tensor<2x16xf32>
  return %y : tensor<2x16xf32>
}

// -----

func.func @gated_mlp_gate_rank(%x: tensor<2x16xf32>, %wg: tensor<1x32x16xf32>, %wu: tensor<32x16xf32>, %wd: tensor<16x32xf32>) -> tensor<2x16xf32> {
  // expected-error @+1 {{'transformer.gated_mlp' op gate_weight and up_weight must have rank 2 ([ffn, hidden])}}
  %y = transformer.gated_mlp %x, %wg, %wu, %wd : (tensor<2x16xf32>, tensor<1x32x16xf32>, tensor<32x16xf32>, tensor<16x32xf32>) -> tensor<2x16xf32>
  return %y : tensor<2x16xf32>
}

// -----

func.func @gated_mlp_up_rank(%x: tensor<2x16xf32>, %wg: tensor<32x16xf32>, %wu: tensor<512xf32>, %wd: tensor<16x32xf32>) -> tensor<2x16xf32> {
  // expected-error @+1 {{'transformer.gated_mlp' op gate_weight and up_weight must have rank 2 ([ffn, hidden])}}
  %y = transformer.gated_mlp %x, %wg, %wu, %wd : (tensor<2x16xf32>, tensor<32x16xf32>, tensor<512xf32>, tensor<16x32xf32>) -> tensor<2x16xf32>
  return %y : tensor<2x16xf32>
}

// -----

func.func @gated_mlp_hidden(%x: tensor<2x16xf32>, %wg: tensor<32x8xf32>, %wd: tensor<16x32xf32>) -> tensor<2x16xf32> {
  // expected-error @+1 {{'transformer.gated_mlp' op gate_weight dimension 1 (8) does not match the input feature dimension (16)}}
  %y = transformer.gated_mlp %x, %wg, %wg, %wd : (tensor<2x16xf32>, tensor<32x8xf32>, tensor<32x8xf32>, tensor<16x32xf32>) -> tensor<2x16xf32>
  return %y : tensor<2x16xf32>
}

// -----

func.func @gated_mlp_up_shape(%x: tensor<2x16xf32>, %wg: tensor<32x16xf32>, %wu: tensor<?x8xf32>, %wd: tensor<16x32xf32>) -> tensor<2x16xf32> {
  // expected-error @+1 {{'transformer.gated_mlp' op up_weight shape [?, 8] does not match gate_weight [32, 16]}}
  %y = transformer.gated_mlp %x, %wg, %wu, %wd : (tensor<2x16xf32>, tensor<32x16xf32>, tensor<?x8xf32>, tensor<16x32xf32>) -> tensor<2x16xf32>
  return %y : tensor<2x16xf32>
}

// -----

func.func @gated_mlp_down_ffn(%x: tensor<2x16xf32>, %wg: tensor<32x16xf32>, %wd: tensor<16x64xf32>) -> tensor<2x16xf32> {
  // expected-error @+1 {{'transformer.gated_mlp' op down_weight dimension 1 (64) does not match ffn (32)}}
  %y = transformer.gated_mlp %x, %wg, %wg, %wd : (tensor<2x16xf32>, tensor<32x16xf32>, tensor<32x16xf32>, tensor<16x64xf32>) -> tensor<2x16xf32>
  return %y : tensor<2x16xf32>
}

// -----

func.func @gated_mlp_element_type(%x: tensor<2x16xf32>, %wg: tensor<32x16xf32>, %wd: tensor<16x32xf16>) -> tensor<2x16xf32> {
  // expected-error @+1 {{'transformer.gated_mlp' op down_weight element type 'f16' does not match input element type 'f32'}}
  %y = transformer.gated_mlp %x, %wg, %wg, %wd : (tensor<2x16xf32>, tensor<32x16xf32>, tensor<32x16xf32>, tensor<16x32xf16>) -> tensor<2x16xf32>
  return %y : tensor<2x16xf32>
}

// -----

func.func @gated_mlp_wrong_result(%x: tensor<2x16xf32>, %wg: tensor<32x16xf32>, %wd: tensor<16x32xf32>) -> tensor<2x32xf32> {
  // expected-error @+2 {{'transformer.gated_mlp' op inferred type(s) 'tensor<2x16xf32>' are incompatible with return type(s) of operation 'tensor<2x32xf32>'}}
  // expected-error @+1 {{'transformer.gated_mlp' op failed to infer returned types}}
  %y = transformer.gated_mlp %x, %wg, %wg, %wd : (tensor<2x16xf32>, tensor<32x16xf32>, tensor<32x16xf32>, tensor<16x32xf32>) -> tensor<2x32xf32>
  return %y : tensor<2x32xf32>
}

//===----------------------------------------------------------------------===//
// argmax
//===----------------------------------------------------------------------===//

func.func @argmax_rank0(%x: tensor<f32>) -> tensor<i64> {
  // expected-error @+2 {{input must have rank >= 1, got rank 0}}
  // expected-error @+1 {{'transformer.argmax' op failed to infer returned types}}
  %i = transformer.argmax %x : tensor<f32> -> tensor<i64>
  return %i : tensor<i64>
}

// -----

func.func @argmax_empty(%x: tensor<4x0xf32>) -> tensor<4xi64> {
  // expected-error @+1 {{'transformer.argmax' op the reduced (last) dimension is empty}}
  %i = transformer.argmax %x : tensor<4x0xf32> -> tensor<4xi64>
  return %i : tensor<4xi64>
}

// -----

func.func @argmax_result_element_type(%x: tensor<4x10xf32>) -> tensor<4xi32> {
  // expected-error @+1 {{'transformer.argmax' op result #0 must be ranked tensor of 64-bit signless integer values, but got 'tensor<4xi32>'}}
  %i = transformer.argmax %x : tensor<4x10xf32> -> tensor<4xi32>
  return %i : tensor<4xi32>
}

// -----

func.func @argmax_wrong_result(%x: tensor<4x10xf32>) -> tensor<10xi64> {
  // expected-error @+2 {{'transformer.argmax' op inferred type(s) 'tensor<4xi64>' are incompatible with return type(s) of operation 'tensor<10xi64>'}}
  // expected-error @+1 {{'transformer.argmax' op failed to infer returned types}}
  %i = transformer.argmax %x : tensor<4x10xf32> -> tensor<10xi64>
  return %i : tensor<10xi64>
}

//===----------------------------------------------------------------------===//
// #transformer.workgroup
//===----------------------------------------------------------------------===//

// -----

func.func @workgroup_negative_dimension(%t: tensor<4xf32>) -> tensor<4xf32> {
  %r = scf.forall (%i) in (4) shared_outs(%o = %t) -> (tensor<4xf32>) {
    scf.forall.in_parallel {
    }
  // expected-error @+1 {{workgroup dimension must be non-negative, got -1}}
  } {mapping = [#transformer.workgroup<-1>]}
  return %r : tensor<4xf32>
}
