// The GPU `bufferized` and `loops` stages: memrefs, then the block/thread foralls become one gpu.launch
// per kernel, outlined into a gpu.module whose kernel reads its block and thread ids; the dispatch
// function on the host only launches it. No forall and no linalg op is left.
//
// RUN: kiln compile %s --target cuda --compile-to=bufferized | FileCheck %s --check-prefix=BUF
// RUN: kiln compile %s --target cuda --compile-to=loops | FileCheck %s
// RUN: kiln compile %s --target cuda --compile-to=loops | FileCheck %s --check-prefix=NONE

// BUF-LABEL: func.func private @mlp_dispatch_2_contraction
// BUF-SAME:    memref<8x96xf32>
// BUF:         scf.forall
// BUF:           scf.forall
// BUF:         } {mapping = [#gpu.thread<y>, #gpu.thread<x>]}
// BUF-LABEL: func.func @mlp
// BUF-SAME:    %{{.*}}: memref<8x96xf32>)

// CHECK: module attributes {gpu.container_module
// CHECK-LABEL: func.func private @mlp_dispatch_2_contraction
// CHECK:         gpu.launch_func @mlp_dispatch_2_contraction_kernel::@mlp_dispatch_2_contraction_kernel blocks in (%{{.*}}, %{{.*}}, %{{.*}}) threads in (%{{.*}}, %{{.*}}, %{{.*}}) args(
// CHECK-NEXT:    return
// CHECK-LABEL: gpu.module @mlp_dispatch_2_contraction_kernel
// CHECK:         gpu.func @mlp_dispatch_2_contraction_kernel(%{{.*}}: memref<96x64xf32>, %{{.*}}: memref<8x96xf32>, %{{.*}}: memref<8x64xf32>) kernel attributes {known_block_size = array<i32: 32, 2, 1>, known_grid_size = array<i32: 3, 1, 1>}
// CHECK:           gpu.block_id  x
// CHECK:           gpu.thread_id  x
// CHECK:           gpu.thread_id  y
// CHECK:           scf.for {{.*}} -> (vector<4x1xf32>)
// CHECK:             vector.transfer_read {{.*}}, vector<8xf32>
// CHECK:             vector.fma
// CHECK:           vector.transfer_write
// CHECK:           gpu.return
// CHECK-LABEL: func.func @mlp
// CHECK-COUNT-4: call @mlp_dispatch_

// NONE-NOT: scf.forall
// NONE-NOT: linalg.
// NONE-NOT: tensor<

func.func @mlp(%x: tensor<8x64xf32>, %g: tensor<64xf32>, %w: tensor<96x64xf32>) -> tensor<8x96xf32> {
  %n = transformer.rms_norm %x, %g {eps = 1.0e-05 : f64} : (tensor<8x64xf32>, tensor<64xf32>) -> tensor<8x64xf32>
  %y = transformer.linear %n, %w : (tensor<8x64xf32>, tensor<96x64xf32>) -> tensor<8x96xf32>
  %s = transformer.gelu %y : tensor<8x96xf32>
  return %s : tensor<8x96xf32>
}
