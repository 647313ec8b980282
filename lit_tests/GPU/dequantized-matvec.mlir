// Decode linears over GGUF blocks on GPUs (pipelines/gpu_matvec.py, the dequantized matvec): a warp per
// row of blocks, lane l expanding blocks l, l + 32, ... At `loops`: x read in place at both of its
// halves (a constant index, no copies: gpu.read_slices_in_place), one 16-byte load of a block's bytes,
// the f16 scale (and min) loaded once per block and broadcast, the root's body on 16-wide vectors, then
// the shuffle butterfly. q8_0 (the output head) unrolls its two halves with FMAs. In PTX the bytes
// are one ld.global.v4.b32 per block and half.
//
// RUN: kiln compile %s --target cuda --compile-to=linalg | FileCheck %s --check-prefix=LINALG
// RUN: kiln compile %s --target cuda --compile-to=tiled | FileCheck %s --check-prefix=TILED
// RUN: kiln compile %s --target cuda --compile-to=loops | FileCheck %s --check-prefix=LOOPS
// RUN: kiln compile %s --target cuda -o %t.kiln
// RUN: %PYTHON %S/Inputs/kiln_blobs.py %t.kiln ptx | FileCheck %s --check-prefix=PTX
// RUN: kiln compile %s --target rocm --compile-to=llvm | FileCheck %s --check-prefix=ROCDL

// The halves of x, as the shared lowering slices them (tensor.extract_slice), are read from x's
// [1, 1, K/32, 2, 16] view at half 0 and half 1 instead.
// LINALG-DAG:   #[[LO:.*]] = affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d3, 0, d4)>
// LINALG-DAG:   #[[HI:.*]] = affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d3, 1, d4)>
// LINALG-LABEL: func.func @decode
// LINALG-NOT:     tensor.extract_slice
// LINALG:         %[[X:.*]] = tensor.expand_shape %arg0
// LINALG:         linalg.generic {indexing_maps = [#[[LO]], #[[HI]], {{.*}} ins(%[[X]], %[[X]], %arg1, %arg2, %arg3 :

// TILED-LABEL: func.func private @decode_dispatch_0_reduction
// TILED-SAME:    kiln.gpu_block_dims = array<i64: 128, 1, 1>
// TILED-SAME:    kiln.matvec_warps = 4
// TILED-NOT:     scf.forall
// TILED-LABEL: func.func private @head_dispatch_0_reduction
// TILED-SAME:    kiln.matvec_warps = 4

// LOOPS-LABEL: gpu.func @decode_dispatch_0_reduction_kernel(%arg0: memref<1x1x2x2x16xf32>, %arg1: memref<48x2x16xi8>, %arg2: memref<48x2xf16>, %arg3: memref<48x2xf16>, %arg4: memref<1x1x48xf32>)
// LOOPS-SAME:    known_block_size = array<i32: 128, 1, 1>, known_grid_size = array<i32: 12, 1, 1>
// LOOPS:         %[[ACC:.*]] = scf.for %[[B:.*]] = %{{.*}} to %c2 step %c32 iter_args
// LOOPS-DAG:       %[[LO:.*]] = vector.load %arg0[%c0, %c0, %[[B]], %c0, %c0] {alignment = 16 : i64} : memref<1x1x2x2x16xf32>, vector<16xf32>
// LOOPS-DAG:       %[[HI:.*]] = vector.load %arg0[%c0, %c0, %[[B]], %c1, %c0] {alignment = 16 : i64} : memref<1x1x2x2x16xf32>, vector<16xf32>
// LOOPS-DAG:       %[[BYTES:.*]] = vector.load %arg1[%[[ROW:.*]], %[[B]], %c0] {alignment = 16 : i64} : memref<48x2x16xi8>, vector<16xi8>
// LOOPS-DAG:       memref.load %arg2[%[[ROW]], %[[B]]] : memref<48x2xf16>
// LOOPS-DAG:       memref.load %arg3[%[[ROW]], %[[B]]] : memref<48x2xf16>
// LOOPS:           arith.extui %[[BYTES]] : vector<16xi8> to vector<16xi32>
// LOOPS:           vector.broadcast %{{.*}} : f32 to vector<16xf32>
// LOOPS:           arith.shrui
// LOOPS:           arith.mulf %[[LO]]
// LOOPS:           arith.mulf %[[HI]]
// LOOPS:         vector.reduction <add>, %[[ACC]] : vector<16xf32> into f32
// LOOPS-COUNT-5: gpu.shuffle xor
// LOOPS-NOT:     gpu.func
// LOOPS-NOT:     memref.copy
// LOOPS-LABEL: gpu.func @head_dispatch_0_reduction_kernel(%arg0: memref<1x2x2x16xf32>, %arg1: memref<40x2x2x16xi8>, %arg2: memref<40x2xf16>, %arg3: memref<1x40xf32>)
// LOOPS:         scf.for
// LOOPS:           vector.load %arg1[%{{.*}}, %{{.*}}, %c0, %c0] {alignment = 16 : i64} : memref<40x2x2x16xi8>, vector<16xi8>
// LOOPS:           arith.sitofp
// LOOPS:           vector.fma
// LOOPS:           vector.load %arg1[%{{.*}}, %{{.*}}, %c1, %c0] {alignment = 16 : i64} : memref<40x2x2x16xi8>, vector<16xi8>
// LOOPS:           vector.fma
// LOOPS:           scf.yield

// PTX-LABEL: .visible .entry decode_dispatch_0_reduction_kernel(
// PTX:         ld.global.v4.b32
// PTX:         ld.global.b16
// PTX:         shfl.sync.bfly.b32 {{.*}}, 16, 31, -1;
// PTX-LABEL: .visible .entry head_dispatch_0_reduction_kernel(
// PTX:         ld.global.v4.b32
// PTX:         shfl.sync.bfly.b32

// ROCDL-LABEL: llvm.func @decode_dispatch_0_reduction_kernel
// ROCDL:         rocdl.ds_bpermute
// ROCDL-LABEL: llvm.func @head_dispatch_0_reduction_kernel
// ROCDL:         rocdl.ds_bpermute

func.func @decode(%x: tensor<1x1x64xf32>, %qs: tensor<48x2x16xi8>, %d: tensor<48x2xf16>, %m: tensor<48x2xf16>) -> tensor<1x1x48xf32> {
  %w = transformer.dequantize %qs, %d, %m {format = "q4_1"} : (tensor<48x2x16xi8>, tensor<48x2xf16>, tensor<48x2xf16>) -> tensor<48x64xf32>
  %y = transformer.linear %x, %w : (tensor<1x1x64xf32>, tensor<48x64xf32>) -> tensor<1x1x48xf32>
  return %y : tensor<1x1x48xf32>
}
func.func @head(%x: tensor<1x64xf32>, %qs: tensor<40x2x32xi8>, %d: tensor<40x2xf16>) -> tensor<1x40xf32> {
  %w = transformer.dequantize %qs, %d {format = "q8_0"} : (tensor<40x2x32xi8>, tensor<40x2xf16>) -> tensor<40x64xf32>
  %y = transformer.linear %x, %w : (tensor<1x64xf32>, tensor<40x64xf32>) -> tensor<1x40xf32>
  return %y : tensor<1x40xf32>
}