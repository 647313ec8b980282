// A decode step on the GPU targets: f32 causal attention with a runtime offset is one flash-attention
// kernel over the whole (static) cache that stops at the position; no tensor of a runtime length
// appears. The new K/V rows are written into the caches (updated in place: no out-param) by a
// cache-update kernel (gpu_cache_update.py), which rebuilds the cache's view at the position: no
// copy's address depends on it. K's and V's are independent, so they are one launch
// (launch_merging.py): K's blocks, then V's. Every kernel reads the position from the
// entry point's scalar buffer (gpu_scalars.py: `scalars0+40` is word 5, argument 5), so no launch
// parameter depends on it either. The plan bounds the position (8 rows - 1) so the cache update
// cannot write outside the cache.
//
// RUN: kiln compile %s --target cuda --compile-to=linalg | FileCheck %s --check-prefix=LINALG
// RUN: kiln compile %s --target cuda --compile-to=loops | FileCheck %s --check-prefix=LOOPS
// RUN: kiln compile %s --target rocm -o %t.kiln
// RUN: %PYTHON %S/Inputs/kiln_blobs.py %t.kiln plan | FileCheck %s

// LINALG-LABEL: func.func @decode
// LINALG-NOT:     tensor<1x2x?x16xf32>
// LINALG:         return

// LOOPS-LABEL: gpu.func @decode_merged_0_kernel(
// LOOPS-SAME:    known_block_size = array<i32: 32, 1, 1>, known_grid_size = array<i32: 2, 1, 1>
// LOOPS-COUNT-2: memref.load %{{.*}}[%c0{{.*}}] : memref<1xi64>
// LOOPS:         %[[VIEW:.*]] = memref.subview %{{.*}}[0, 0, %{{.*}}, 0] [1, 2, 1, 16] [1, 1, 1, 1]
// LOOPS:         %[[V:.*]] = memref.load %{{.*}} : memref<1x2x1x16xf32>
// LOOPS:         memref.store %[[V]], %[[VIEW]]
// LOOPS-LABEL: func.func @decode(
// LOOPS-NOT:     memref.copy %arg1
// LOOPS:         %[[SLOT:.*]] = memref.alloca() {kiln.scalar_slot} : memref<1xi64>
// LOOPS:         %[[WORD:.*]] = arith.index_cast %arg5 : index to i64
// LOOPS:         memref.store %[[WORD]], %[[SLOT]][%c0] : memref<1xi64>
// LOOPS:         call @decode_merged_0(%[[SLOT]], %arg3, %arg1, %{{.*}}, %arg4, %arg2)

// CHECK:      entry decode allocations
// CHECK-NEXT: launch decode_merged_0_kernel grid [2, 1, 1] block [32, 1, 1] args scalars0+40 arg3+0 arg1+0 scalars0+40 arg4+0 arg2+0 bound arg5<=7
// The causal bound reads the position too; then q and both caches.
// CHECK-NEXT: launch decode_dispatch_0_attention_kernel grid [2, 1, 1] block [32, 1, 1] args scalars0+40 arg0+0 arg3+0 arg4+0 alloc0+0
// CHECK-NEXT: copy 256 bytes alloc0+0 -> result0+0
// CHECK-NOT:  copy

func.func @decode(%q: tensor<1x4x1x16xf32>, %k: tensor<1x2x1x16xf32>, %v: tensor<1x2x1x16xf32>,
                  %kc: tensor<1x2x8x16xf32>, %vc: tensor<1x2x8x16xf32>, %pos: index)
    -> (tensor<1x4x1x16xf32>, tensor<1x2x8x16xf32> {kiln.updates_arg = 3 : i64},
        tensor<1x2x8x16xf32> {kiln.updates_arg = 4 : i64}) {
  %kc2 = transformer.kv_cache_update %kc, %k at %pos : tensor<1x2x8x16xf32>, tensor<1x2x1x16xf32> -> tensor<1x2x8x16xf32>
  %vc2 = transformer.kv_cache_update %vc, %v at %pos : tensor<1x2x8x16xf32>, tensor<1x2x1x16xf32> -> tensor<1x2x8x16xf32>
  %o = transformer.attention %q, %kc2, %vc2 offset(%pos) {causal} : (tensor<1x4x1x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, index) -> tensor<1x4x1x16xf32>
  return %o, %kc2, %vc2 : tensor<1x4x1x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>
}
