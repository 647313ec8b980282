// A decode step's RMSNorm -> linears and gated MLP -> residual on GPUs: 3 kernels, 3 launches. The
// norm's scaling is fused into the q and gate/up matvecs and SiLU(gate)·up into the down matvec
// (kiln-fuse-into-matvecs), which then are "reduction" kernels with the matvec schedule; the
// residual is added in the down matvec's accumulator (kiln-accumulate-residuals: the output starts
// as h, and lane 0 adds the row's sum to it). In the fused kernels the row's rsqrt is computed once,
// before the K loop, and the scaling or SiLU on each lane's 16-byte vectors inside it. The q, gate
// and up matvecs are independent: one launch (launch_merging.py), q's blocks first.
//
// RUN: kiln compile %s --target cuda --compile-to=dispatch | FileCheck %s --check-prefix=DISPATCH
// RUN: kiln compile %s --target cuda --compile-to=tiled | FileCheck %s --check-prefix=TILED
// RUN: kiln compile %s --target cuda --compile-to=loops | FileCheck %s --check-prefix=LOOPS
// RUN: kiln compile %s --target cuda -o %t.kiln
// RUN: %PYTHON %S/Inputs/kiln_blobs.py %t.kiln plan | FileCheck %s --check-prefix=PLAN

// DISPATCH-LABEL: func.func @decode(
// DISPATCH-SAME:    %[[H:[a-z0-9]+]]: tensor<1x1x256xf32>
// DISPATCH:         %[[MS:.*]] = call @decode_dispatch_0_reduction(%{{.*}}, %[[H]])
// DISPATCH:         %[[Q:.*]] = call @decode_dispatch_1_reduction(%{{.*}}, %[[H]], %[[MS]], %{{.*}}, %{{.*}})
// DISPATCH:         %[[G:.*]] = call @decode_dispatch_2_reduction(%{{.*}}, %[[H]], %[[MS]], %{{.*}}, %{{.*}})
// DISPATCH:         %[[U:.*]] = call @decode_dispatch_2_reduction(%{{.*}}, %[[H]], %[[MS]], %{{.*}}, %{{.*}})
// DISPATCH:         %[[R:.*]] = call @decode_dispatch_4_reduction(%[[G]], %[[U]], %{{.*}}, %[[H]])
// DISPATCH-NOT:     call
// DISPATCH:         return %[[Q]], %[[R]]

// TILED-LABEL: func.func private @decode_dispatch_1_reduction
// TILED-SAME:    kiln.matvec_warps = 4
// TILED-LABEL: func.func private @decode_dispatch_4_reduction
// TILED-SAME:    kiln.matvec_warps = 4

// LOOPS-LABEL: gpu.func @decode_merged_0_kernel(%arg0: memref<1x1xf32>, %arg1: memref<1x1x256xf32>, %arg2: memref<256xf32>, %arg3: memref<64x256xf32>, %arg4: memref<1x1x64xf32>, %arg5
// LOOPS:         %[[MS:.*]] = memref.load %arg0[%c0{{[_0-9]*}}, %c0{{[_0-9]*}}] : memref<1x1xf32>
// LOOPS:         %[[MEAN:.*]] = arith.divf %[[MS]], %{{.*}} : f32
// LOOPS:         %[[R:.*]] = math.rsqrt %{{.*}} : f32
// LOOPS:         %[[RV:.*]] = vector.broadcast %[[R]] : f32 to vector<4xf32>
// LOOPS:         scf.for %[[K:.*]] = %{{.*}} to %c256 step %c128 iter_args(%[[ACC:.*]] = %{{.*}}) -> (vector<4xf32>) {
// LOOPS-DAG:       %[[X:.*]] = vector.load %arg1[%c0{{[_0-9]*}}, %c0{{[_0-9]*}}, %[[K]]] {alignment = 16 : i64} : memref<1x1x256xf32>, vector<4xf32>
// LOOPS-DAG:       %[[G:.*]] = vector.load %arg2[%[[K]]] {alignment = 16 : i64} : memref<256xf32>, vector<4xf32>
// LOOPS-DAG:       %[[W:.*]] = vector.load %arg3[%{{.*}}, %[[K]]] {alignment = 16 : i64} : memref<64x256xf32>, vector<4xf32>
// LOOPS:           %[[XR:.*]] = arith.mulf %[[X]], %[[RV]] : vector<4xf32>
// LOOPS:           %[[N:.*]] = arith.mulf %[[G]], %[[XR]] : vector<4xf32>
// LOOPS:           vector.fma %[[N]], %[[W]], %[[ACC]] : vector<4xf32>
// LOOPS-NOT:       math.rsqrt
// LOOPS:         gpu.shuffle xor

// LOOPS-LABEL: gpu.func @decode_dispatch_4_reduction_kernel(%arg0: memref<1x1x96xf32>, %arg1: memref<1x1x96xf32>, %arg2: memref<256x96xf32>, %arg3: memref<1x1x256xf32>)
// LOOPS:         scf.for
// LOOPS:           math.exp %{{.*}} : vector<4xf32>
// LOOPS:           arith.divf %{{.*}} : vector<4xf32>
// LOOPS:           vector.fma
// LOOPS:         scf.if
// LOOPS-NEXT:      %[[OLD:.*]] = memref.load %arg3[%c0, %c0, %{{.*}}] : memref<1x1x256xf32>
// LOOPS-NEXT:      %[[NEW:.*]] = arith.addf %[[OLD]], %{{.*}} : f32
// LOOPS-NEXT:      memref.store %[[NEW]], %arg3[%c0, %c0, %{{.*}}] : memref<1x1x256xf32>

// h is an argument of the entry point here, which the program may not write: it is copied into the
// result, where the down matvec accumulates (in a model h is an intermediate: no copy).
// PLAN:      entry decode
// PLAN-NEXT: launch decode_dispatch_0_reduction_kernel grid [1, 1, 1] block [32, 1, 1]
// PLAN-NEXT: launch decode_merged_0_kernel grid [64, 1, 1] block [128, 1, 1] args alloc0+768 arg0+0 arg1+0 arg2+0 result0+0 alloc0+768 arg0+0 arg1+0 arg3+0 alloc0+384 alloc0+768 arg0+0 arg1+0 arg4+0 alloc0+0
// PLAN-NEXT: copy 1024 bytes arg0+0 -> result1+0
// PLAN-NEXT: launch decode_dispatch_4_reduction_kernel {{.*}} args alloc0+384 alloc0+0 arg5+0 result1+0
// PLAN-NOT:  launch
// PLAN-NOT:  copy

func.func @decode(%h: tensor<1x1x256xf32>, %g: tensor<256xf32>, %wq: tensor<64x256xf32>, %wg: tensor<96x256xf32>, %wu: tensor<96x256xf32>, %wd: tensor<256x96xf32>) -> (tensor<1x1x64xf32>, tensor<1x1x256xf32>) {
  %n = transformer.rms_norm %h, %g {eps = 1.0e-5 : f64} : (tensor<1x1x256xf32>, tensor<256xf32>) -> tensor<1x1x256xf32>
  %q = transformer.linear %n, %wq : (tensor<1x1x256xf32>, tensor<64x256xf32>) -> tensor<1x1x64xf32>
  %m = transformer.gated_mlp %n, %wg, %wu, %wd : (tensor<1x1x256xf32>, tensor<96x256xf32>, tensor<96x256xf32>, tensor<256x96xf32>) -> tensor<1x1x256xf32>
  %r = arith.addf %h, %m : tensor<1x1x256xf32>
  return %q, %r : tensor<1x1x64xf32>, tensor<1x1x256xf32>
}
