// RUN: kiln-opt %s --canonicalize --split-input-file | FileCheck %s

// Canonicalization patterns and folders of the `transformer` dialect: neutral
// optional operands (zero bias/mask, unit norm weight) are dropped, an offset a
// non-causal attention ignores is dropped, a whole-cache overwrite folds to the
// update and split_heads/merge_heads round trips fold away. Anything else is
// kept.

// CHECK-LABEL: func.func @linear_zero_bias
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<2x64xf32>, %[[W:[a-z0-9]+]]: tensor<96x64xf32>)
// CHECK-NOT: arith.constant
// CHECK: %[[Y:.+]] = transformer.linear %[[X]], %[[W]] : (tensor<2x64xf32>, tensor<96x64xf32>) -> tensor<2x96xf32>
// CHECK-NEXT: return %[[Y]]
func.func @linear_zero_bias(%x: tensor<2x64xf32>, %w: tensor<96x64xf32>) -> tensor<2x96xf32> {
  %b = arith.constant dense<0.0> : tensor<96xf32>
  %y = transformer.linear %x, %w, %b : (tensor<2x64xf32>, tensor<96x64xf32>, tensor<96xf32>) -> tensor<2x96xf32>
  return %y : tensor<2x96xf32>
}

// -----

// -0.0 is a neutral bias too (x + -0.0 == x).
// CHECK-LABEL: func.func @linear_negative_zero_bias_bf16
// CHECK-NOT: arith.constant
// CHECK: transformer.linear %{{[a-z0-9]+}}, %{{[a-z0-9]+}} : (tensor<2x64xbf16>, tensor<96x64xbf16>) -> tensor<2x96xbf16>
func.func @linear_negative_zero_bias_bf16(%x: tensor<2x64xbf16>, %w: tensor<96x64xbf16>) -> tensor<2x96xbf16> {
  %b = arith.constant dense<-0.0> : tensor<96xbf16>
  %y = transformer.linear %x, %w, %b : (tensor<2x64xbf16>, tensor<96x64xbf16>, tensor<96xbf16>) -> tensor<2x96xbf16>
  return %y : tensor<2x96xbf16>
}

// -----

// CHECK-LABEL: func.func @linear_nonzero_bias_kept
// CHECK: %[[B:.+]] = arith.constant dense<5.000000e-01> : tensor<96xf32>
// CHECK: transformer.linear %{{[a-z0-9]+}}, %{{[a-z0-9]+}}, %[[B]] :
func.func @linear_nonzero_bias_kept(%x: tensor<2x64xf32>, %w: tensor<96x64xf32>) -> tensor<2x96xf32> {
  %b = arith.constant dense<0.5> : tensor<96xf32>
  %y = transformer.linear %x, %w, %b : (tensor<2x64xf32>, tensor<96x64xf32>, tensor<96xf32>) -> tensor<2x96xf32>
  return %y : tensor<2x96xf32>
}

// -----

// A constant that is not a splat is kept even when it holds mostly zeros.
// CHECK-LABEL: func.func @linear_non_splat_bias_kept
// CHECK: %[[B:.+]] = arith.constant dense<[0.000000e+00, 1.000000e+00]> : tensor<2xf32>
// CHECK: transformer.linear %{{[a-z0-9]+}}, %{{[a-z0-9]+}}, %[[B]] :
func.func @linear_non_splat_bias_kept(%x: tensor<4xf32>, %w: tensor<2x4xf32>) -> tensor<2xf32> {
  %b = arith.constant dense<[0.0, 1.0]> : tensor<2xf32>
  %y = transformer.linear %x, %w, %b : (tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>) -> tensor<2xf32>
  return %y : tensor<2xf32>
}

// -----

// CHECK-LABEL: func.func @linear_argument_bias_kept
// CHECK-SAME: %[[B:[a-z0-9]+]]: tensor<96xf32>)
// CHECK: transformer.linear %{{[a-z0-9]+}}, %{{[a-z0-9]+}}, %[[B]] :
func.func @linear_argument_bias_kept(%x: tensor<2x64xf32>, %w: tensor<96x64xf32>, %b: tensor<96xf32>) -> tensor<2x96xf32> {
  %y = transformer.linear %x, %w, %b : (tensor<2x64xf32>, tensor<96x64xf32>, tensor<96xf32>) -> tensor<2x96xf32>
  return %y : tensor<2x96xf32>
}

// -----

// CHECK-LABEL: func.func @rms_norm_unit_weight
// CHECK-NOT: arith.constant
// CHECK: transformer.rms_norm %{{[a-z0-9]+}} {eps = 1.000000e-05 : f64} : (tensor<2x16xf32>) -> tensor<2x16xf32>
func.func @rms_norm_unit_weight(%x: tensor<2x16xf32>) -> tensor<2x16xf32> {
  %w = arith.constant dense<1.0> : tensor<16xf32>
  %y = transformer.rms_norm %x, %w {eps = 1.0e-05 : f64} : (tensor<2x16xf32>, tensor<16xf32>) -> tensor<2x16xf32>
  return %y : tensor<2x16xf32>
}

// -----

// CHECK-LABEL: func.func @rms_norm_weight_kept
// CHECK: %[[W:.+]] = arith.constant dense<2.000000e+00> : tensor<16xf32>
// CHECK: transformer.rms_norm %{{[a-z0-9]+}}, %[[W]] :
func.func @rms_norm_weight_kept(%x: tensor<2x16xf32>) -> tensor<2x16xf32> {
  %w = arith.constant dense<2.0> : tensor<16xf32>
  %y = transformer.rms_norm %x, %w : (tensor<2x16xf32>, tensor<16xf32>) -> tensor<2x16xf32>
  return %y : tensor<2x16xf32>
}

// -----

// A zero weight is not neutral for a norm (it is for a bias).
// CHECK-LABEL: func.func @rms_norm_zero_weight_kept
// CHECK: %[[W:.+]] = arith.constant dense<0.000000e+00> : tensor<16xf32>
// CHECK: transformer.rms_norm %{{[a-z0-9]+}}, %[[W]] :
func.func @rms_norm_zero_weight_kept(%x: tensor<2x16xf32>) -> tensor<2x16xf32> {
  %w = arith.constant dense<0.0> : tensor<16xf32>
  %y = transformer.rms_norm %x, %w : (tensor<2x16xf32>, tensor<16xf32>) -> tensor<2x16xf32>
  return %y : tensor<2x16xf32>
}

// -----

// CHECK-LABEL: func.func @layer_norm_unit_weight_zero_bias
// CHECK-NOT: arith.constant
// CHECK: transformer.layer_norm %{{[a-z0-9]+}} {eps = 9.9999999999999998E-13 : f64} : (tensor<2x16xf32>) -> tensor<2x16xf32>
func.func @layer_norm_unit_weight_zero_bias(%x: tensor<2x16xf32>) -> tensor<2x16xf32> {
  %g = arith.constant dense<1.0> : tensor<16xf32>
  %b = arith.constant dense<0.0> : tensor<16xf32>
  %y = transformer.layer_norm %x weight(%g) bias(%b) {eps = 1.0e-12 : f64} : (tensor<2x16xf32>, tensor<16xf32>, tensor<16xf32>) -> tensor<2x16xf32>
  return %y : tensor<2x16xf32>
}

// -----

// Only the neutral one of weight and bias goes.
// CHECK-LABEL: func.func @layer_norm_unit_weight_only
// CHECK-SAME: %[[B:[a-z0-9]+]]: tensor<16xf32>)
// CHECK-NOT: arith.constant
// CHECK: transformer.layer_norm %{{[a-z0-9]+}} bias(%[[B]]) : (tensor<2x16xf32>, tensor<16xf32>) -> tensor<2x16xf32>
func.func @layer_norm_unit_weight_only(%x: tensor<2x16xf32>, %b: tensor<16xf32>) -> tensor<2x16xf32> {
  %g = arith.constant dense<1.0> : tensor<16xf32>
  %y = transformer.layer_norm %x weight(%g) bias(%b) : (tensor<2x16xf32>, tensor<16xf32>, tensor<16xf32>) -> tensor<2x16xf32>
  return %y : tensor<2x16xf32>
}

// -----

// CHECK-LABEL: func.func @layer_norm_zero_bias_only
// CHECK-SAME: %[[G:[a-z0-9]+]]: tensor<16xf32>)
// CHECK-NOT: arith.constant
// CHECK: transformer.layer_norm %{{[a-z0-9]+}} weight(%[[G]]) : (tensor<2x16xf32>, tensor<16xf32>) -> tensor<2x16xf32>
func.func @layer_norm_zero_bias_only(%x: tensor<2x16xf32>, %g: tensor<16xf32>) -> tensor<2x16xf32> {
  %b = arith.constant dense<0.0> : tensor<16xf32>
  %y = transformer.layer_norm %x weight(%g) bias(%b) : (tensor<2x16xf32>, tensor<16xf32>, tensor<16xf32>) -> tensor<2x16xf32>
  return %y : tensor<2x16xf32>
}

// -----

// A weight of 0 and a bias of 1 are not neutral: both stay.
// CHECK-LABEL: func.func @layer_norm_params_kept
// CHECK-DAG: %[[G:.+]] = arith.constant dense<0.000000e+00> : tensor<16xf32>
// CHECK-DAG: %[[B:.+]] = arith.constant dense<1.000000e+00> : tensor<16xf32>
// CHECK: transformer.layer_norm %{{[a-z0-9]+}} weight(%[[G]]) bias(%[[B]]) :
func.func @layer_norm_params_kept(%x: tensor<2x16xf32>) -> tensor<2x16xf32> {
  %g = arith.constant dense<0.0> : tensor<16xf32>
  %b = arith.constant dense<1.0> : tensor<16xf32>
  %y = transformer.layer_norm %x weight(%g) bias(%b) : (tensor<2x16xf32>, tensor<16xf32>, tensor<16xf32>) -> tensor<2x16xf32>
  return %y : tensor<2x16xf32>
}

// -----

// CHECK-LABEL: func.func @attention_zero_mask
// CHECK-NOT: arith.constant
// CHECK: transformer.attention %{{[a-z0-9]+}}, %{{[a-z0-9]+}}, %{{[a-z0-9]+}} {causal} : (tensor<1x4x8x16xf32>, tensor<1x4x8x16xf32>, tensor<1x4x8x16xf32>) -> tensor<1x4x8x16xf32>
func.func @attention_zero_mask(%q: tensor<1x4x8x16xf32>) -> tensor<1x4x8x16xf32> {
  %m = arith.constant dense<0.0> : tensor<1x1x1x8xf32>
  %o = transformer.attention %q, %q, %q mask(%m) {causal} : (tensor<1x4x8x16xf32>, tensor<1x4x8x16xf32>, tensor<1x4x8x16xf32>, tensor<1x1x1x8xf32>) -> tensor<1x4x8x16xf32>
  return %o : tensor<1x4x8x16xf32>
}

// -----

// CHECK-LABEL: func.func @attention_mask_kept
// CHECK: %[[M:.+]] = arith.constant dense<-1.000000e+00> : tensor<1x1x1x8xf32>
// CHECK: transformer.attention %{{[a-z0-9]+}}, %{{[a-z0-9]+}}, %{{[a-z0-9]+}} mask(%[[M]]) :
func.func @attention_mask_kept(%q: tensor<1x4x8x16xf32>) -> tensor<1x4x8x16xf32> {
  %m = arith.constant dense<-1.0> : tensor<1x1x1x8xf32>
  %o = transformer.attention %q, %q, %q mask(%m) : (tensor<1x4x8x16xf32>, tensor<1x4x8x16xf32>, tensor<1x4x8x16xf32>, tensor<1x1x1x8xf32>) -> tensor<1x4x8x16xf32>
  return %o : tensor<1x4x8x16xf32>
}

// -----

// A non-causal attention never reads its offset.
// CHECK-LABEL: func.func @attention_unused_offset
// CHECK: transformer.attention %{{[a-z0-9]+}}, %{{[a-z0-9]+}}, %{{[a-z0-9]+}} {scale = 2.500000e-01 : f64} : (tensor<1x4x1x16xf32>, tensor<1x4x8x16xf32>, tensor<1x4x8x16xf32>) -> tensor<1x4x1x16xf32>
func.func @attention_unused_offset(%q: tensor<1x4x1x16xf32>, %k: tensor<1x4x8x16xf32>, %pos: index) -> tensor<1x4x1x16xf32> {
  %o = transformer.attention %q, %k, %k offset(%pos) {scale = 0.25 : f64} : (tensor<1x4x1x16xf32>, tensor<1x4x8x16xf32>, tensor<1x4x8x16xf32>, index) -> tensor<1x4x1x16xf32>
  return %o : tensor<1x4x1x16xf32>
}

// -----

// CHECK-LABEL: func.func @attention_causal_offset_kept
// CHECK-SAME: %[[P:[a-z0-9]+]]: index)
// CHECK: transformer.attention %{{[a-z0-9]+}}, %{{[a-z0-9]+}}, %{{[a-z0-9]+}} offset(%[[P]]) {causal} :
func.func @attention_causal_offset_kept(%q: tensor<1x4x1x16xf32>, %k: tensor<1x4x8x16xf32>, %pos: index) -> tensor<1x4x1x16xf32> {
  %o = transformer.attention %q, %k, %k offset(%pos) {causal} : (tensor<1x4x1x16xf32>, tensor<1x4x8x16xf32>, tensor<1x4x8x16xf32>, index) -> tensor<1x4x1x16xf32>
  return %o : tensor<1x4x1x16xf32>
}

// -----

// Both patterns apply to the same op: zero mask and unused offset go.
// CHECK-LABEL: func.func @attention_zero_mask_unused_offset
// CHECK-NOT: arith.constant
// CHECK: transformer.attention %{{[a-z0-9]+}}, %{{[a-z0-9]+}}, %{{[a-z0-9]+}} : (tensor<1x4x1x16xf32>, tensor<1x4x8x16xf32>, tensor<1x4x8x16xf32>) -> tensor<1x4x1x16xf32>
func.func @attention_zero_mask_unused_offset(%q: tensor<1x4x1x16xf32>, %k: tensor<1x4x8x16xf32>) -> tensor<1x4x1x16xf32> {
  %m = arith.constant dense<0.0> : tensor<1x4x1x8xf32>
  %pos = arith.constant 7 : index
  %o = transformer.attention %q, %k, %k mask(%m) offset(%pos) : (tensor<1x4x1x16xf32>, tensor<1x4x8x16xf32>, tensor<1x4x8x16xf32>, tensor<1x4x1x8xf32>, index) -> tensor<1x4x1x16xf32>
  return %o : tensor<1x4x1x16xf32>
}

// -----

// A cache-sized update at position 0 overwrites the whole cache.
// CHECK-LABEL: func.func @kv_cache_update_whole
// CHECK-SAME: %[[U:[a-z0-9]+]]: tensor<1x2x8x16xf32>)
// CHECK-NOT: transformer.kv_cache_update
// CHECK: return %[[U]]
func.func @kv_cache_update_whole(%cache: tensor<1x2x8x16xf32>, %u: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  %c0 = arith.constant 0 : index
  %r = transformer.kv_cache_update %cache, %u at %c0 : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  return %r : tensor<1x2x8x16xf32>
}

// -----

// Only position 0 folds (this update would not even fit at position 1; the
// folder must still leave it alone).
// CHECK-LABEL: func.func @kv_cache_update_nonzero_position
// CHECK: %[[C1:.+]] = arith.constant 1 : index
// CHECK: transformer.kv_cache_update %{{[a-z0-9]+}}, %{{[a-z0-9]+}} at %[[C1]]
func.func @kv_cache_update_nonzero_position(%cache: tensor<1x2x8x16xf32>, %u: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  %c1 = arith.constant 1 : index
  %r = transformer.kv_cache_update %cache, %u at %c1 : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  return %r : tensor<1x2x8x16xf32>
}

// -----

// CHECK-LABEL: func.func @kv_cache_update_unknown_position
// CHECK-SAME: %[[P:[a-z0-9]+]]: index)
// CHECK: transformer.kv_cache_update %{{[a-z0-9]+}}, %{{[a-z0-9]+}} at %[[P]]
func.func @kv_cache_update_unknown_position(%cache: tensor<1x2x8x16xf32>, %u: tensor<1x2x8x16xf32>, %pos: index) -> tensor<1x2x8x16xf32> {
  %r = transformer.kv_cache_update %cache, %u at %pos : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>
  return %r : tensor<1x2x8x16xf32>
}

// -----

// CHECK-LABEL: func.func @kv_cache_update_partial
// CHECK: transformer.kv_cache_update %{{[a-z0-9]+}}, %{{[a-z0-9]+}} at %{{.+}} : tensor<1x2x8x16xf32>, tensor<1x2x1x16xf32> -> tensor<1x2x8x16xf32>
func.func @kv_cache_update_partial(%cache: tensor<1x2x8x16xf32>, %u: tensor<1x2x1x16xf32>) -> tensor<1x2x8x16xf32> {
  %c0 = arith.constant 0 : index
  %r = transformer.kv_cache_update %cache, %u at %c0 : tensor<1x2x8x16xf32>, tensor<1x2x1x16xf32> -> tensor<1x2x8x16xf32>
  return %r : tensor<1x2x8x16xf32>
}

// -----

// With a dynamic cache length the update may be shorter at run time: no fold.
// CHECK-LABEL: func.func @kv_cache_update_dynamic
// CHECK: transformer.kv_cache_update %{{[a-z0-9]+}}, %{{[a-z0-9]+}} at %{{.+}} : tensor<1x2x?x16xf32>, tensor<1x2x?x16xf32> -> tensor<1x2x?x16xf32>
func.func @kv_cache_update_dynamic(%cache: tensor<1x2x?x16xf32>, %u: tensor<1x2x?x16xf32>) -> tensor<1x2x?x16xf32> {
  %c0 = arith.constant 0 : index
  %r = transformer.kv_cache_update %cache, %u at %c0 : tensor<1x2x?x16xf32>, tensor<1x2x?x16xf32> -> tensor<1x2x?x16xf32>
  return %r : tensor<1x2x?x16xf32>
}

// -----

// CHECK-LABEL: func.func @merge_then_split
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<1x4x7x16xf32>)
// CHECK-NOT: transformer.
// CHECK: return %[[X]]
func.func @merge_then_split(%x: tensor<1x4x7x16xf32>) -> tensor<1x4x7x16xf32> {
  %m = transformer.merge_heads %x : tensor<1x4x7x16xf32> -> tensor<1x7x64xf32>
  %s = transformer.split_heads %m {num_heads = 4 : i64} : tensor<1x7x64xf32> -> tensor<1x4x7x16xf32>
  return %s : tensor<1x4x7x16xf32>
}

// -----

// CHECK-LABEL: func.func @split_then_merge
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<1x7x64xf32>)
// CHECK-NOT: transformer.
// CHECK: return %[[X]]
func.func @split_then_merge(%x: tensor<1x7x64xf32>) -> tensor<1x7x64xf32> {
  %s = transformer.split_heads %x {num_heads = 4 : i64} : tensor<1x7x64xf32> -> tensor<1x4x7x16xf32>
  %m = transformer.merge_heads %s : tensor<1x4x7x16xf32> -> tensor<1x7x64xf32>
  return %m : tensor<1x7x64xf32>
}

// -----

// CHECK-LABEL: func.func @split_then_merge_dynamic
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<?x?x?xf32>)
// CHECK-NOT: transformer.
// CHECK: return %[[X]]
func.func @split_then_merge_dynamic(%x: tensor<?x?x?xf32>) -> tensor<?x?x?xf32> {
  %s = transformer.split_heads %x {num_heads = 4 : i64} : tensor<?x?x?xf32> -> tensor<?x4x?x?xf32>
  %m = transformer.merge_heads %s : tensor<?x4x?x?xf32> -> tensor<?x?x?xf32>
  return %m : tensor<?x?x?xf32>
}

// -----

// Re-splitting into a different number of heads is a real reshape.
// CHECK-LABEL: func.func @merge_then_split_other_heads
// CHECK: %[[M:.+]] = transformer.merge_heads %{{[a-z0-9]+}} : tensor<1x4x7x16xf32> -> tensor<1x7x64xf32>
// CHECK: %[[S:.+]] = transformer.split_heads %[[M]] {num_heads = 8 : i64} : tensor<1x7x64xf32> -> tensor<1x8x7x8xf32>
// CHECK: return %[[S]]
func.func @merge_then_split_other_heads(%x: tensor<1x4x7x16xf32>) -> tensor<1x8x7x8xf32> {
  %m = transformer.merge_heads %x : tensor<1x4x7x16xf32> -> tensor<1x7x64xf32>
  %s = transformer.split_heads %m {num_heads = 8 : i64} : tensor<1x7x64xf32> -> tensor<1x8x7x8xf32>
  return %s : tensor<1x8x7x8xf32>
}

// -----

// The round trip through a dynamic feature dim does not restore the static type.
// CHECK-LABEL: func.func @merge_then_split_dynamic_heads
// CHECK: transformer.merge_heads
// CHECK: transformer.split_heads
func.func @merge_then_split_dynamic_heads(%x: tensor<1x?x7x16xf32>) -> tensor<1x4x7x?xf32> {
  %m = transformer.merge_heads %x : tensor<1x?x7x16xf32> -> tensor<1x7x?xf32>
  %s = transformer.split_heads %m {num_heads = 4 : i64} : tensor<1x7x?xf32> -> tensor<1x4x7x?xf32>
  return %s : tensor<1x4x7x?xf32>
}

// -----

// A forall mapped to workgroups keeps its single-iteration dimensions (an unmapped one would be
// folded into its body): flash attention of one sequence and one kv head stays one kernel.
// CHECK-LABEL: func.func @workgroup_forall_of_one_iteration
// CHECK: scf.forall (%{{.+}}) in (1)
// CHECK: mapping = [#transformer.workgroup<0>]
func.func @workgroup_forall_of_one_iteration(%t: tensor<4xf32>, %x: f32) -> tensor<4xf32> {
  %r = scf.forall (%i) in (1) shared_outs(%o = %t) -> (tensor<4xf32>) {
    %f = linalg.fill ins(%x : f32) outs(%o : tensor<4xf32>) -> tensor<4xf32>
    scf.forall.in_parallel {
      tensor.parallel_insert_slice %f into %o[0] [4] [1] : tensor<4xf32> into tensor<4xf32>
    }
  } {mapping = [#transformer.workgroup<0>]}
  return %r : tensor<4xf32>
}
