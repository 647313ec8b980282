// One of each transformer op, lowered: the result must be upstream dialects only. Upstream mlir-opt,
// which has no transformer dialect, parses and verifies it.
// RUN: kiln-opt %s --transformer-to-linalg | FileCheck %s
// RUN: kiln-opt %s --transformer-to-linalg | mlir-opt --verify-each | FileCheck %s --check-prefix=UPSTREAM

// CHECK-LABEL: func.func @all
// CHECK-NOT: transformer.
// CHECK: return
// UPSTREAM-LABEL: func.func @all
// UPSTREAM: linalg.generic
func.func @all(%table: tensor<100x64xf32>, %ids: tensor<2x8xi64>, %w: tensor<96x64xf32>, %b: tensor<96xf32>,
               %g: tensor<64xf32>, %pos: tensor<2x8xi64>, %kc: tensor<2x2x16x16xf32>, %p: index,
               %wg: tensor<128x64xf32>, %wu: tensor<128x64xf32>, %wd: tensor<64x128xf32>, %mask: tensor<2x1x1x16xf32>) -> (tensor<2x8x64xf32>, tensor<2x8xi64>, tensor<2x2x16x16xf32>) {
  %h = transformer.embedding %table[%ids] : tensor<100x64xf32>, tensor<2x8xi64> -> tensor<2x8x64xf32>
  %n = transformer.rms_norm %h, %g {eps = 1.0e-5 : f64} : (tensor<2x8x64xf32>, tensor<64xf32>) -> tensor<2x8x64xf32>
  %ln = transformer.layer_norm %n weight(%g) bias(%g) : (tensor<2x8x64xf32>, tensor<64xf32>, tensor<64xf32>) -> tensor<2x8x64xf32>
  %qkv = transformer.linear %ln, %w, %b : (tensor<2x8x64xf32>, tensor<96x64xf32>, tensor<96xf32>) -> tensor<2x8x96xf32>
  %q = transformer.linear %ln, %w : (tensor<2x8x64xf32>, tensor<96x64xf32>) -> tensor<2x8x96xf32>
  %qh = transformer.split_heads %q {num_heads = 6 : i64} : tensor<2x8x96xf32> -> tensor<2x6x8x16xf32>
  %kh = transformer.split_heads %qkv {num_heads = 6 : i64} : tensor<2x8x96xf32> -> tensor<2x6x8x16xf32>
  %kh2 = transformer.matmul %kh, %kh {transpose_rhs} : (tensor<2x6x8x16xf32>, tensor<2x6x8x16xf32>) -> tensor<2x6x8x8xf32>
  %sm = transformer.softmax %kh2 : tensor<2x6x8x8xf32>
  %qr = transformer.rope %qh, %pos {theta = 10000.0 : f64, rotary_dim = 8 : i64} : (tensor<2x6x8x16xf32>, tensor<2x8xi64>) -> tensor<2x6x8x16xf32>
  %kv = tensor.extract_slice %qr[0, 0, 0, 0] [2, 2, 8, 16] [1, 1, 1, 1] : tensor<2x6x8x16xf32> to tensor<2x2x8x16xf32>
  %kc2 = transformer.kv_cache_update %kc, %kv at %p : tensor<2x2x16x16xf32>, tensor<2x2x8x16xf32> -> tensor<2x2x16x16xf32>
  %o = transformer.attention %qr, %kc2, %kc2 mask(%mask) offset(%p) {causal} : (tensor<2x6x8x16xf32>, tensor<2x2x16x16xf32>, tensor<2x2x16x16xf32>, tensor<2x1x1x16xf32>, index) -> tensor<2x6x8x16xf32>
  %m = transformer.merge_heads %o : tensor<2x6x8x16xf32> -> tensor<2x8x96xf32>
  %s = transformer.silu %m : tensor<2x8x96xf32>
  %ge = transformer.gelu %s {approximate = "tanh"} : tensor<2x8x96xf32>
  %mlp = transformer.gated_mlp %h, %wg, %wu, %wd : (tensor<2x8x64xf32>, tensor<128x64xf32>, tensor<128x64xf32>, tensor<64x128xf32>) -> tensor<2x8x64xf32>
  %am = transformer.argmax %ge : tensor<2x8x96xf32> -> tensor<2x8xi64>
  return %mlp, %am, %kc2 : tensor<2x8x64xf32>, tensor<2x8xi64>, tensor<2x2x16x16xf32>
}
