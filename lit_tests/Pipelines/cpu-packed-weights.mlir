// A linear over a weight stored as [N/32, K, 32] panels (models.graph.panel_params): the packed
// GEMM schedule packs x as usual, but its pack of the weight folds into the weight's unpack, so the
// kernel reads the panels in place: no copy of the weight per call. Each workgroup copies its whole
// 8x32 tiles of the packed C straight into the result, as vector rows, while they are in cache.
//
// RUN: kiln compile %s --compile-to=tiled | FileCheck %s --check-prefix=TILED
// RUN: kiln compile %s --compile-to=loops | FileCheck %s --check-prefix=LOOPS

// TILED-LABEL: func.func private @panels_dispatch_0_contraction(
// TILED-SAME: %[[P:[a-z0-9]+]]: tensor<4x64x32xf32>
// TILED-NOT: linalg.unpack
// TILED-NOT: linalg.pack
// The activation's panels: [M/8, K, 8] by [8, 16]-block transposes in 16 workgroups over M/8 (not
// over the batch dim of one).
// TILED: scf.forall (%[[T:.*]]) in (16) {{.*}} -> (tensor<1x16x64x8xf32>)
// TILED: tensor.extract_slice {{.*}}[0, %[[T]], 0, 0] [1, 1, 8, 64]
// TILED: vector.shuffle {{.*}} : vector<128xf32>, vector<128xf32>
// TILED-NOT: linalg.transpose
// The micro-kernel's weight slices come straight from the argument.
// TILED: tensor.extract_slice %[[P]][
// TILED: vector.fma
// TILED-LABEL: func.func @panels(

// LOOPS-LABEL: func.func private @panels_dispatch_0_contraction(
// LOOPS-SAME: %[[P:[a-z0-9]+]]: memref<4x64x32xf32>
// LOOPS-NOT: memref.alloc() {{.*}}x64x32xf32>
// LOOPS: memref.subview %[[P]]
// LOOPS: vector.fma
// LOOPS: } {kiln.gemm_panel_loop}
// LOOPS-NOT: omp.loop_nest
// LOOPS: vector.transfer_write {{.*}} : vector<32xf32>, memref<1x8x32xf32, strided<[16384, 128, 1]
// LOOPS-NOT: memref.copy
// LOOPS-NOT: linalg.copy
// The host computes the result in the caller's out-param: no buffer of its own, no copy.
// LOOPS-LABEL: func.func @panels(
// LOOPS-SAME: %[[OUT:[a-z0-9]+]]: memref<1x128x128xf32>)
// LOOPS-NOT: memref.alloc
// LOOPS: call @panels_dispatch_0_contraction({{.*}}%[[OUT]]
// LOOPS-NOT: memref.copy
// LOOPS: return

func.func @panels(%x: tensor<1x128x64xf32>, %p: tensor<4x64x32xf32>) -> tensor<1x128x128xf32> {
  %e = tensor.empty() : tensor<128x64xf32>
  %w = linalg.unpack %p inner_dims_pos = [0] inner_tiles = [32] into %e : tensor<4x64x32xf32> -> tensor<128x64xf32>
  %y = transformer.linear %x, %w : (tensor<1x128x64xf32>, tensor<128x64xf32>) -> tensor<1x128x128xf32>
  return %y : tensor<1x128x128xf32>
}
