// Row reductions on GPUs: a warp per output (pipelines/gpu_reduction.py). At `tiled` the kernel is only
// marked (outputs per block); at `loops` lane l walks elements l, l + 32, ... of its row through the
// linalg body (here x·x added to the lane's partial sum, started at the combiner's identity), a
// `gpu.shuffle xor` butterfly combines the 32 partials with the body's combiner, and lane 0 combines
// the total with the fill value and stores. Softmax's max starts from -inf and combines with
// maximumf. The PTX has shfl.sync.bfly, the ROCDL ds_bpermute.
//
// RUN: kiln compile %s --target cuda --compile-to=tiled | FileCheck %s --check-prefix=TILED
// RUN: kiln compile %s --target cuda --compile-to=loops | FileCheck %s --check-prefix=LOOPS
// RUN: kiln compile %s --target cuda --chip sm_90 -o %t.kiln
// RUN: %PYTHON %S/Inputs/kiln_blobs.py %t.kiln ptx | FileCheck %s --check-prefix=PTX
// RUN: kiln compile %s --target rocm --chip gfx942 --compile-to=llvm | FileCheck %s --check-prefix=ROCDL

// TILED-LABEL: func.func private @decode_norm_dispatch_0_reduction(
// TILED-SAME:    kiln.gpu_block_dims = array<i64: 32, 1, 1>, kiln.gpu_row_reduction = 1
// TILED-NOT:     scf.forall
// TILED:         linalg.generic
// TILED-LABEL: func.func private @probs_dispatch_0_reduction(
// TILED-SAME:    kiln.gpu_block_dims = array<i64: 128, 1, 1>, kiln.gpu_row_reduction = 4

// LOOPS-LABEL: gpu.func @decode_norm_dispatch_0_reduction_kernel(
// LOOPS-SAME:    %[[X:arg[0-9]+]]: memref<1x1x576xf32>, %[[OUT:arg[0-9]+]]: memref<1x1xf32>)
// LOOPS-SAME:    known_block_size = array<i32: 32, 1, 1>, known_grid_size = array<i32: 1, 1, 1>
// LOOPS-DAG:     %[[ZERO:.*]] = arith.constant 0.000000e+00 : f32
// LOOPS-DAG:     %[[TID:.*]] = gpu.thread_id x
// LOOPS:         %[[LANE:.*]] = affine.apply #{{.*}}()[%[[TID]]]
// LOOPS:         %[[PART:.*]] = scf.for %[[K:.*]] = %[[LANE]] to %c576 step %c32 iter_args(%[[ACC:.*]] = %[[ZERO]]) -> (f32) {
// LOOPS-NEXT:      %[[E:.*]] = memref.load %[[X]][%c0, %c0, %[[K]]] : memref<1x1x576xf32>
// LOOPS-NEXT:      %[[SQ:.*]] = arith.mulf %[[E]], %[[E]] : f32
// LOOPS-NEXT:      %[[SUM:.*]] = arith.addf %[[ACC]], %[[SQ]] : f32
// LOOPS-NEXT:      scf.yield %[[SUM]] : f32
// LOOPS:         gpu.shuffle  xor %[[PART]], %c16_i32, %c32_i32 : f32
// LOOPS:         gpu.shuffle  xor %{{.*}}, %c8_i32, %c32_i32 : f32
// LOOPS:         gpu.shuffle  xor %{{.*}}, %c4_i32, %c32_i32 : f32
// LOOPS:         gpu.shuffle  xor %{{.*}}, %c2_i32, %c32_i32 : f32
// LOOPS:         gpu.shuffle  xor %{{.*}}, %c1_i32, %c32_i32 : f32
// LOOPS:         %[[TOTAL:.*]] = arith.addf
// LOOPS:         %[[FIRST:.*]] = arith.cmpi eq, %[[LANE]], %c0 : index
// LOOPS:         scf.if %[[FIRST]] {
// LOOPS-NEXT:      %[[Y:.*]] = arith.addf %[[TOTAL]], %[[ZERO]] : f32
// LOOPS-NEXT:      memref.store %[[Y]], %[[OUT]][%c0, %c0] : memref<1x1xf32>
// LOOPS-LABEL: gpu.func @probs_dispatch_0_reduction_kernel(
// LOOPS-SAME:    known_block_size = array<i32: 128, 1, 1>, known_grid_size = array<i32: 4, 1, 1>
// LOOPS:         %[[NINF:.*]] = arith.constant 0xFF800000 : f32
// LOOPS:         scf.for %{{.*}} = %{{.*}} to %c200 step %c32 iter_args(%{{.*}} = %[[NINF]]) -> (f32) {
// LOOPS:           arith.maximumf
// LOOPS-COUNT-5: gpu.shuffle  xor
// LOOPS:         arith.maximumf

// PTX-LABEL: .visible .entry decode_norm_dispatch_0_reduction_kernel(
// PTX:       .maxntid 32, 1, 1
// PTX:       shfl.sync.bfly.b32 {{.*}}, 16, 31, -1;
// PTX:       shfl.sync.bfly.b32 {{.*}}, 8, 31, -1;
// PTX:       shfl.sync.bfly.b32 {{.*}}, 4, 31, -1;
// PTX:       shfl.sync.bfly.b32 {{.*}}, 2, 31, -1;
// PTX:       shfl.sync.bfly.b32 {{.*}}, 1, 31, -1;
// PTX:       st.global.b32

// ROCDL-LABEL: llvm.func @decode_norm_dispatch_0_reduction_kernel(
// ROCDL-COUNT-5: rocdl.ds_bpermute

// RMSNorm of one token (SmolLM2's width): one row, one warp.
func.func @decode_norm(%x: tensor<1x1x576xf32>, %w: tensor<576xf32>) -> tensor<1x1x576xf32> {
  %y = transformer.rms_norm %x, %w {eps = 1.0e-05 : f64} : (tensor<1x1x576xf32>, tensor<576xf32>) -> tensor<1x1x576xf32>
  return %y : tensor<1x1x576xf32>
}

// Softmax over rows of 200: 16 rows, 4 per block.
func.func @probs(%x: tensor<2x8x200xf32>) -> tensor<2x8x200xf32> {
  %y = transformer.softmax %x {axis = -1 : i64} : tensor<2x8x200xf32>
  return %y : tensor<2x8x200xf32>
}
