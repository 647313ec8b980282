// The packed GEMM's loop order and its prefetch of the next weight panel (pipelines/panel_prefetch.py):
// per K block, each B panel of the workgroup meets every A row tile, and each micro-kernel step
// prefetches a cache line of the panel read next -- the next one of the block, and after the
// block's last panel the first one of the next K block.
//
// RUN: kiln compile %s --compile-to=loops | FileCheck %s

// CHECK-LABEL: func.func private @gate_dispatch_0_contraction(
// CHECK-SAME: %[[P:[a-z0-9]+]]: memref<8x512x32xf32>
// The workgroup's panels, whole K: [2 panels, 512, 32].
// CHECK: %[[WG:[a-z0-9_]+]] = memref.subview %[[P]][{{.*}}] [2, 512, 32]
// CHECK: scf.for %[[K0:[a-z0-9]+]] = %c0 to %c512 step %c256 {
// CHECK: scf.for %[[J:[a-z0-9]+]] = %c0 to %c2 step %c1 {
// CHECK: scf.for %[[I:[a-z0-9]+]] = %c0 to %c8 step %c1 {
// CHECK: scf.for %[[KK:[a-z0-9]+]] = %c0 to %c256 step %c4
// After the last panel of the block, the first one of the next block (the last block: itself).
// CHECK: %[[LAST:.*]] = arith.cmpi eq, %[[J]], %c1
// CHECK: %[[J1:.*]] = arith.addi %[[J]], %c1
// CHECK: %[[JN:.*]] = arith.select %[[LAST]], %c0, %[[J1]]
// CHECK: %[[K1:.*]] = arith.addi %[[K0]], %c256
// CHECK: %[[K1C:.*]] = arith.minsi %[[K1]], %c256
// CHECK: %[[KN:.*]] = arith.select %[[LAST]], %[[K1C]], %[[K0]]
// Row tile i prefetches lines [64 i, 64 i + 64) of the 512 in a panel's K block, one per step.
// CHECK: %[[STEP:.*]] = arith.divui %[[KK]], %c4
// CHECK: %[[FIRST:.*]] = arith.muli %[[I]], %c64
// CHECK: %[[LINE:.*]] = arith.addi %[[FIRST]], %[[STEP]]
// CHECK: %[[LINEC:.*]] = arith.minsi %[[LINE]], %c511
// CHECK: memref.prefetch %[[WG]][%[[JN]], %{{.*}}, %{{.*}}], read, locality<3>, data
// CHECK-NOT: memref.prefetch
// CHECK: vector.fma
// CHECK: } {kiln.gemm_k_loop}
// CHECK: } {kiln.gemm_row_loop}
// CHECK: } {kiln.gemm_panel_loop}
// CHECK-LABEL: func.func @gate(

func.func @gate(%x: tensor<1x128x512xf32>, %p: tensor<8x512x32xf32>) -> tensor<1x128x256xf32> {
  %e = tensor.empty() : tensor<256x512xf32>
  %w = linalg.unpack %p inner_dims_pos = [0] inner_tiles = [32] into %e : tensor<8x512x32xf32> -> tensor<256x512xf32>
  %y = transformer.linear %x, %w : (tensor<1x128x512xf32>, tensor<256x512xf32>) -> tensor<1x128x256xf32>
  return %y : tensor<1x128x256xf32>
}
