// RUN: kiln-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(transformer-to-linalg{flash-kv-tile=32}))' | FileCheck %s
// Its output is upstream IR except the forall's workgroup mapping (#transformer.workgroup): it parses
// back and verifies.
// RUN: kiln-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(transformer-to-linalg{flash-kv-tile=32}))' | kiln-opt --split-input-file --verify-each > /dev/null

// transformer-to-linalg's flash form of f32 attention without a mask (the CPU pipeline's): one
// scf.forall over (batch, kv head, query tile) tagged as an `attention` kernel with its tile shape,
// holding the queries of the heads that share a kv head; inside, a loop over whole key tiles and a
// loop over at most one zero-padded tail tile carry the row max, row sum and output (online softmax).
// Tiles are [keys, rows]: Sᵀ = Kᵀᵀ Qᵀ, Pᵀ, and the row max and sum reduce over dimension 0.

// SmolLM2's heads (9 query heads on 3 kv heads), causal, a prompt of any length: 16 positions x 3
// heads = 48 rows per tile (whole 16-lane vectors), the last query tile padded; the keys stop at
// the last valid query's.
// CHECK-LABEL: func.func @causal_gqa_prefill
// CHECK: %[[Q5:.+]] = tensor.expand_shape %arg0 {{\[}}[0], [1, 2], [3], [4]] {{.+}} into tensor<1x3x3x?x64xf32>
// CHECK: %[[OUT:.+]] = tensor.empty(%{{.+}}) : tensor<1x3x3x?x64xf32>
// CHECK: %[[TILES:.+]] = arith.ceildivui %{{.+}}, %{{.+}} : index
// CHECK: %[[R:.+]] = scf.forall (%[[B:.+]], %[[H:.+]], %[[T:.+]]) in (1, 3, %[[TILES]]) shared_outs(%[[O:.+]] = %[[OUT]])
// CHECK: %[[Q0:.+]] = arith.muli %[[T]], %{{.+}} : index
// CHECK: %[[QN:.+]] = arith.minui
// CHECK: %[[QS:.+]] = tensor.extract_slice %[[Q5]][%[[B]], %[[H]], 0, %[[Q0]], 0] [1, 1, 3, %[[QN]], 64]
// CHECK: %[[QP:.+]] = tensor.insert_slice %[[QS]] into %{{.+}}[0, 0, 0] [3, %[[QN]], 64] {{.+}} into tensor<3x16x64xf32>
// CHECK: %[[QR:.+]] = tensor.collapse_shape %[[QP]] {{.+}} into tensor<48x64xf32>
// CHECK: linalg.transpose ins(%[[QR]] : tensor<48x64xf32>) outs(%{{.+}} : tensor<64x48xf32>) permutation = [1, 0] {kiln.flash = "queries"}
// CHECK: %[[LAST:.+]] = arith.addi %[[Q0]], %[[QN]] : index
// CHECK: %[[END:.+]] = arith.minui %[[LAST]], %{{.+}} : index
// CHECK: %[[FULL:.+]]:3 = scf.for %[[J:.+]] = %{{.+}} to %{{.+}} step %{{.+}} iter_args({{.+}}) -> (tensor<48xf32>, tensor<48xf32>, tensor<48x64xf32>)
// CHECK: tensor.extract_slice %arg2[%[[B]], %[[H]], %[[J]], 0] [1, 1, 32, 64]
// CHECK: tensor.extract_slice %arg1[%[[B]], %[[H]], %[[J]], 0] [1, 1, 32, 64]
// CHECK: linalg.transpose {{.+}} outs(%{{.+}} : tensor<64x32xf32>) {{.+}} {kiln.flash = "keys"}
// CHECK: linalg.generic {{.+}} iterator_types = ["parallel", "parallel", "reduction"]} ins({{.+}} : tensor<64x32xf32>, tensor<64x48xf32>) outs({{.+}} : tensor<32x48xf32>) attrs = {kiln.flash = "scores"}
// CHECK: linalg.generic {{.+}} outs(%{{.+}} : tensor<32x48xf32>) attrs = {kiln.flash = "mask"}
// CHECK: arith.cmpi ugt
// CHECK: linalg.generic {{.+}} iterator_types = ["reduction", "parallel"]} {{.+}} attrs = {kiln.flash = "row_max"}
// CHECK: arith.maximumf
// CHECK: linalg.generic {{.+}} attrs = {kiln.flash = "rescale"}
// CHECK: math.exp
// CHECK: linalg.generic {{.+}} attrs = {kiln.flash = "probs"}
// CHECK: linalg.generic {{.+}} iterator_types = ["reduction", "parallel"]} {{.+}} attrs = {kiln.flash = "row_sum"}
// CHECK: linalg.generic {{.+}} attrs = {kiln.flash = "sum_update"}
// CHECK: linalg.generic {{.+}} attrs = {kiln.flash = "acc_scale"}
// CHECK: linalg.generic {{.+}} ins(%{{.+}}, %{{.+}} : tensor<32x48xf32>, tensor<32x64xf32>) outs(%{{.+}} : tensor<48x64xf32>) attrs = {kiln.flash = "pv"}
// CHECK: scf.yield
// The tail: at most one tile, from the last whole tile to the end, zero-padded and masked past it.
// CHECK: %[[TAIL:.+]]:3 = scf.for %[[TJ:.+]] = %{{.+}} to %[[END]] step %{{.+}} iter_args(%{{.+}} = %[[FULL]]#0, %{{.+}} = %[[FULL]]#1, %{{.+}} = %[[FULL]]#2)
// CHECK: %[[TN:.+]] = arith.subi %[[END]], %[[TJ]] : index
// CHECK: tensor.insert_slice %{{.+}} into %{{.+}}[0, 0] [%[[TN]], 64] [1, 1] : tensor<?x64xf32> into tensor<32x64xf32>
// CHECK: arith.cmpi uge, %{{.+}}, %[[END]] : index
// CHECK: linalg.generic {{.+}} ins(%[[TAIL]]#1 : tensor<48xf32>) outs(%[[TAIL]]#2 : tensor<48x64xf32>) attrs = {kiln.flash = "normalize"}
// CHECK: arith.divf
// CHECK: tensor.expand_shape {{.+}} into tensor<3x16x64xf32>
// CHECK: %[[VALID:.+]] = tensor.extract_slice %{{.+}}[0, 0, 0] [3, %[[QN]], 64]
// CHECK: scf.forall.in_parallel
// CHECK-NEXT: tensor.parallel_insert_slice %[[VALID]] into %[[O]][%[[B]], %[[H]], 0, %[[Q0]], 0] [1, 1, 3, %[[QN]], 64]
// CHECK: } {kiln.flash_causal, kiln.flash_offset = 0 : i64, kiln.flash_scale = 1.250000e-01 : f64, kiln.flash_tile = array<i64: 48, 32, 64>, kiln.kernel_class = "attention", mapping = [#transformer.workgroup<2>, #transformer.workgroup<1>, #transformer.workgroup<0>]}
// CHECK: tensor.collapse_shape %[[R]] {{\[}}[0], [1, 2], [3], [4]] : tensor<1x3x3x?x64xf32> into tensor<1x9x?x64xf32>
func.func @causal_gqa_prefill(%q: tensor<1x9x?x64xf32>, %k: tensor<1x3x?x64xf32>, %v: tensor<1x3x?x64xf32>) -> tensor<1x9x?x64xf32> {
  %o = transformer.attention %q, %k, %v {causal} : (tensor<1x9x?x64xf32>, tensor<1x3x?x64xf32>, tensor<1x3x?x64xf32>) -> tensor<1x9x?x64xf32>
  return %o : tensor<1x9x?x64xf32>
}

// -----

// The heads merged next (the o projection's input): the kernel writes its output position-major,
// [b, s, kv heads, group, d], normalizing each tile into [positions, group, d] (the same divisions;
// the padded tile's valid positions inserted at [b, q0, kv head]). The attention's [b, h, s, d]
// is a transpose of that which the merge cancels: merge_heads becomes a reshape of the kernel's
// output, and the transpose is left unused (canonicalization erases it).
// CHECK-LABEL: func.func @merged_heads_prefill
// CHECK: %[[OUT:.+]] = tensor.empty(%{{.+}}) : tensor<1x?x3x3x64xf32>
// CHECK: %[[R:.+]] = scf.forall (%[[B:.+]], %[[H:.+]], %[[T:.+]]) in (1, 3, %{{.+}}) shared_outs(%[[O:.+]] = %[[OUT]])
// CHECK: %[[Q0:.+]] = arith.muli %[[T]], %{{.+}} : index
// CHECK: %[[QN:.+]] = arith.minui
// CHECK: %[[FULL:.+]]:3 = scf.for
// CHECK: %[[TAIL:.+]]:3 = scf.for {{.+}} iter_args(%{{.+}} = %[[FULL]]#0,
// CHECK: %[[ACC:.+]] = tensor.expand_shape %[[TAIL]]#2 {{\[}}[0, 1], [2]] output_shape [3, 16, 64] : tensor<48x64xf32> into tensor<3x16x64xf32>
// CHECK: %[[SUM:.+]] = tensor.expand_shape %[[TAIL]]#1 {{\[}}[0, 1]] output_shape [3, 16] : tensor<48xf32> into tensor<3x16xf32>
// CHECK: linalg.generic {indexing_maps = [#{{.+}}, #{{.+}}, #{{.+}}], iterator_types = ["parallel", "parallel", "parallel"]} ins(%[[SUM]], %[[ACC]] : tensor<3x16xf32>, tensor<3x16x64xf32>) outs(%{{.+}} : tensor<16x3x64xf32>) attrs = {kiln.flash = "normalize"}
// CHECK: arith.divf
// CHECK: %[[VALID:.+]] = tensor.extract_slice %{{.+}}[0, 0, 0] [%[[QN]], 3, 64]
// CHECK: scf.forall.in_parallel
// CHECK-NEXT: tensor.parallel_insert_slice %[[VALID]] into %[[O]][%[[B]], %[[Q0]], %[[H]], 0, 0] [1, %[[QN]], 1, 3, 64]
// CHECK: } {kiln.flash_causal, kiln.flash_offset = 0 : i64, kiln.flash_position_major, kiln.flash_scale = 1.250000e-01 : f64
// CHECK: %[[M:.+]] = tensor.collapse_shape %[[R]] {{\[}}[0], [1], [2, 3], [4]] : tensor<1x?x3x3x64xf32> into tensor<1x?x9x64xf32>
// CHECK: linalg.transpose ins(%[[M]] : tensor<1x?x9x64xf32>) outs(%{{.+}} : tensor<1x9x?x64xf32>) permutation = [0, 2, 1, 3]
// CHECK-NEXT: %[[Y:.+]] = tensor.collapse_shape %[[M]] {{\[}}[0], [1], [2, 3]] : tensor<1x?x9x64xf32> into tensor<1x?x576xf32>
// CHECK-NEXT: return %[[Y]]
func.func @merged_heads_prefill(%q: tensor<1x9x?x64xf32>, %k: tensor<1x3x?x64xf32>, %v: tensor<1x3x?x64xf32>) -> tensor<1x?x576xf32> {
  %o = transformer.attention %q, %k, %v {causal} : (tensor<1x9x?x64xf32>, tensor<1x3x?x64xf32>, tensor<1x3x?x64xf32>) -> tensor<1x9x?x64xf32>
  %m = transformer.merge_heads %o : tensor<1x9x?x64xf32> -> tensor<1x?x576xf32>
  return %m : tensor<1x?x576xf32>
}

// -----

// Not causal, 64 queries of 4 heads (one per kv head) in whole tiles of 32: no query padding, no
// mask but the scale; the keys run to the end (96 = 3 whole tiles).
// CHECK-LABEL: func.func @noncausal_whole_query_tiles
// CHECK: scf.forall (%{{.+}}, %{{.+}}, %{{.+}}) in (2, 4, %{{.+}})
// CHECK-NOT: tensor.insert_slice %{{.+}} into %{{.+}} : tensor<1x?x16xf32>
// CHECK: linalg.transpose ins(%{{.+}} : tensor<32x16xf32>) {{.+}} {kiln.flash = "queries"}
// CHECK: linalg.generic {{.+}} attrs = {kiln.flash = "mask"}
// CHECK-NOT: arith.cmpi ugt
// CHECK: kiln.flash = "row_max"
// CHECK: tensor.parallel_insert_slice %{{.+}} into %{{.+}} [1, 1, 1, 32, 16]
// CHECK: } {kiln.flash_offset = 0 : i64, kiln.flash_scale = 2.500000e-01 : f64, kiln.flash_tile = array<i64: 32, 32, 16>, kiln.kernel_class = "attention", mapping = [#transformer.workgroup<2>, #transformer.workgroup<1>, #transformer.workgroup<0>]}
func.func @noncausal_whole_query_tiles(%q: tensor<2x4x64x16xf32>, %k: tensor<2x4x96x16xf32>, %v: tensor<2x4x96x16xf32>) -> tensor<2x4x64x16xf32> {
  %o = transformer.attention %q, %k, %v : (tensor<2x4x64x16xf32>, tensor<2x4x96x16xf32>, tensor<2x4x96x16xf32>) -> tensor<2x4x64x16xf32>
  return %o : tensor<2x4x64x16xf32>
}

// -----

// A decode step: one query per head, so a tile is the G = 3 heads of a kv head at one position,
// at a runtime offset into the cache; the keys stop at offset + 1.
// CHECK-LABEL: func.func @decode
// CHECK: scf.forall (%{{.+}}, %{{.+}}, %{{.+}}) in (1, 3, %{{.+}})
// CHECK: %[[LAST:.+]] = arith.addi %{{.+}}, %{{.+}} : index
// CHECK: %[[OFF:.+]] = arith.addi %[[LAST]], %arg3 : index
// CHECK: arith.minui %[[OFF]], %{{.+}} : index
// CHECK: } {kiln.flash_causal, kiln.flash_scale = 1.250000e-01 : f64, kiln.flash_tile = array<i64: 3, 32, 64>, kiln.kernel_class = "attention", mapping = [#transformer.workgroup<2>, #transformer.workgroup<1>, #transformer.workgroup<0>]}
func.func @decode(%q: tensor<1x9x1x64xf32>, %k: tensor<1x3x?x64xf32>, %v: tensor<1x3x?x64xf32>, %pos: index) -> tensor<1x9x1x64xf32> {
  %o = transformer.attention %q, %k, %v offset(%pos) {causal} : (tensor<1x9x1x64xf32>, tensor<1x3x?x64xf32>, tensor<1x3x?x64xf32>, index) -> tensor<1x9x1x64xf32>
  return %o : tensor<1x9x1x64xf32>
}

// An additive mask and f16 operands keep the decomposed form.
// CHECK-LABEL: func.func @masked_stays_decomposed
// CHECK-NOT: scf.forall
// CHECK-NOT: kiln.flash
func.func @masked_stays_decomposed(%q: tensor<2x4x64x16xf32>, %k: tensor<2x4x64x16xf32>, %v: tensor<2x4x64x16xf32>, %m: tensor<2x1x1x64xf32>) -> tensor<2x4x64x16xf32> {
  %o = transformer.attention %q, %k, %v mask(%m) : (tensor<2x4x64x16xf32>, tensor<2x4x64x16xf32>, tensor<2x4x64x16xf32>, tensor<2x1x1x64xf32>) -> tensor<2x4x64x16xf32>
  return %o : tensor<2x4x64x16xf32>
}

// CHECK-LABEL: func.func @f16_stays_decomposed
// CHECK-NOT: scf.forall
// CHECK-NOT: kiln.flash
func.func @f16_stays_decomposed(%q: tensor<2x4x64x16xf16>, %k: tensor<2x4x64x16xf16>, %v: tensor<2x4x64x16xf16>) -> tensor<2x4x64x16xf16> {
  %o = transformer.attention %q, %k, %v {causal} : (tensor<2x4x64x16xf16>, tensor<2x4x64x16xf16>, tensor<2x4x64x16xf16>) -> tensor<2x4x64x16xf16>
  return %o : tensor<2x4x64x16xf16>
}
