// Decomposed GPU decode attention (f16 here; f32 attention is one flash kernel, gpu-flash-attention.mlir)
// keeps the KV cache's static capacity (8 rows here), but its softmax·V kernel stops
// at the decode position: the loop over cache rows, whose iterations past the position store back what
// they loaded (`select(row > pos, old, new)`), is bounded at min(pos + 1, 8), so only the filled rows of
// V are read (gpu.skip_masked_iterations, at the end of the `loops` stage).
//
// RUN: kiln compile %s --target cuda --compile-to=loops | FileCheck %s

// The position comes from device memory (gpu_scalars.py).
// CHECK:       gpu.func @decode_dispatch_{{[0-9]+}}_reduction_kernel(%[[SLOT:arg[0-9]+]]: memref<1xi64>, {{.*}})
// CHECK:         %[[WORD:.*]] = memref.load %[[SLOT]][%c0] : memref<1xi64>
// CHECK:         %[[POS:.*]] = arith.index_cast %[[WORD]] : i64 to index
// CHECK:         %[[NEXT:.*]] = arith.addi %[[POS]], %{{.*}} : index
// CHECK:         %[[END:.*]] = arith.minui %[[NEXT]], %c8 : index
// CHECK-NEXT:    scf.for %[[ROW:.*]] = %c0 to %[[END]] step %c1 {
// CHECK:           %[[OLD:.*]] = memref.load %[[OUT:[a-z_0-9]+]][%c0, %c0, %c0, %c0, %c0]
// CHECK:           %[[PAST:.*]] = arith.cmpi ugt, %[[ROW]], %[[POS]] : index
// CHECK:           %[[KEEP:.*]] = arith.select %[[PAST]], %[[OLD]], %{{.*}} : f32
// CHECK:           memref.store %[[KEEP]], %[[OUT]][%c0, %c0, %c0, %c0, %c0]

func.func @decode(%q: tensor<1x4x1x16xf16>, %k: tensor<1x2x1x16xf16>, %v: tensor<1x2x1x16xf16>,
                  %kc: tensor<1x2x8x16xf16>, %vc: tensor<1x2x8x16xf16>, %pos: index)
    -> (tensor<1x4x1x16xf16>, tensor<1x2x8x16xf16> {kiln.updates_arg = 3 : i64},
        tensor<1x2x8x16xf16> {kiln.updates_arg = 4 : i64}) {
  %kc2 = transformer.kv_cache_update %kc, %k at %pos : tensor<1x2x8x16xf16>, tensor<1x2x1x16xf16> -> tensor<1x2x8x16xf16>
  %vc2 = transformer.kv_cache_update %vc, %v at %pos : tensor<1x2x8x16xf16>, tensor<1x2x1x16xf16> -> tensor<1x2x8x16xf16>
  %o = transformer.attention %q, %kc2, %vc2 offset(%pos) {causal} : (tensor<1x4x1x16xf16>, tensor<1x2x8x16xf16>, tensor<1x2x8x16xf16>, index) -> tensor<1x4x1x16xf16>
  return %o, %kc2, %vc2 : tensor<1x4x1x16xf16>, tensor<1x2x8x16xf16>, tensor<1x2x8x16xf16>
}
