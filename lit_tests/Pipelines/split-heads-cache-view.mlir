// A prefill's V: split_heads is a transpose ([b, s, h*d] -> [b, h, s, d]) that only the KV-cache
// update reads. After bufferization that update is a host copy of the transpose kernel's result:
// the copy reads the projection through a transposed view instead (copy_views.py), so the split
// costs no kernel. On the CPU the copy stays a host copy (strided: loops at the `loops` stage); on
// GPU targets it is the cache-update kernel, which reads the untransposed buffer at permuted indices.
//
// RUN: kiln compile %s --compile-to=bufferized | FileCheck %s --check-prefix=CPU
// RUN: kiln compile %s --target cuda --compile-to=loops | FileCheck %s --check-prefix=CUDA

// CPU-NOT: func.func private @{{.+}}_transpose
// CPU-LABEL: func.func @v_cache
// CPU-SAME: (%[[V:.+]]: memref<1x6x32xf32>, %[[CACHE:.+]]: memref<1x2x16x16xf32>, %[[POS:.+]]: index)
// CPU-NOT: call
// CPU-NOT: memref.alloc
// CPU-DAG: %[[E:.+]] = memref.expand_shape %[[V]] {{\[}}[0], [1], [2, 3]] output_shape [1, 6, 2, 16]
// CPU-DAG: %[[S:.+]] = memref.subview %[[CACHE]][0, 0, %[[POS]], 0] [1, 2, 6, 16]
// CPU: %[[T:.+]] = memref.transpose %[[E]] (d0, d1, d2, d3) -> (d0, d2, d1, d3) : memref<1x6x2x16xf32> to memref<1x2x6x16xf32, strided<[192, 16, 32, 1]>>
// CPU-NEXT: memref.copy %[[T]], %[[S]]
// CPU-NEXT: return

// CUDA-NOT: _transpose
// CUDA-LABEL: func.func private @v_cache_cache_update_0
// CUDA-SAME: (%{{.+}}: memref<1x6x2x16xf32>, %{{.+}}: memref<1x2x16x16xf32>, %{{.+}}: memref<1xi64>)
// CUDA: gpu.func @v_cache_cache_update_0_kernel(%{{.+}}: memref<1xi64>, %[[DST:.+]]: memref<1x2x16x16xf32>, %[[SRC:.+]]: memref<1x6x2x16xf32>)
// CUDA: %[[VIEW:.+]] = memref.subview %[[DST]]
// CUDA: %[[X:.+]] = memref.load %[[SRC]][%{{[a-z0-9_]+}}, %[[P:[a-z0-9_]+]], %[[H:[a-z0-9_]+]], %[[D:[a-z0-9_]+]]] : memref<1x6x2x16xf32>
// CUDA: memref.store %[[X]], %[[VIEW]][%{{[a-z0-9_]+}}, %[[H]], %[[P]], %[[D]]]
// CUDA-LABEL: func.func @v_cache
// CUDA-NOT: _transpose
// CUDA: call @v_cache_cache_update_0(
// CUDA-NOT: call
// CUDA: return
func.func @v_cache(%v: tensor<1x6x32xf32>, %cache: tensor<1x2x16x16xf32>, %pos: index)
    -> (tensor<1x2x16x16xf32> {kiln.updates_arg = 1 : i64}) {
  %vh = transformer.split_heads %v {num_heads = 2 : i64} : tensor<1x6x32xf32> -> tensor<1x2x6x16xf32>
  %c = transformer.kv_cache_update %cache, %vh at %pos : tensor<1x2x16x16xf32>, tensor<1x2x6x16xf32> -> tensor<1x2x16x16xf32>
  return %c : tensor<1x2x16x16xf32>
}
