// f32 attention on the GPU targets is one flash-attention kernel (pipelines/gpu_flash.py). At `tiled` the
// transformer-to-linalg flash form is only marked: lanes per slot, keys per step, warps per block, slots
// per row, and which kernel arguments are q, k, v, the runtime offset and the output (traced through the
// tile's slices: here the dispatch passes v before k). At `loops`, in the prefill chunk, each slot of 8
// lanes owns one query row and 8 of its 64 head dims; a warp walks the keys 8 at a time up to
// min(offset + position + 1, cache rows), with 16-byte loads of K and V rows clamped to its last key, an
// FMA chain per key, a `gpu.shuffle xor` butterfly (4, 2, 1) for the dot products, and the online
// softmax (running max, exp, rescaled sum and accumulator). No score is stored. The decode step's 3
// rows per kv head would leave a warp's slots idle: each row gets 4 slots of 2 lanes (32 dims each)
// that take every 4th step of 8 keys (the loop runs to the end rounded up to 32 keys in every slot),
// and the 4 phases' max, sum and accumulator are merged by shuffles across slots (2, 4) before phase 0
// stores. The position is read from device memory (gpu_scalars.py). The PTX has shfl.sync.bfly,
// ld.global.v4 and ex2, the ROCDL ds_bpermute.
//
// RUN: kiln compile %s --target cuda --compile-to=tiled | FileCheck %s --check-prefix=TILED
// RUN: kiln compile %s --target cuda --compile-to=loops | FileCheck %s --check-prefix=LOOPS
// RUN: kiln compile %s --target cuda --compile-to=loops | FileCheck %s --check-prefix=NOALLOC
// RUN: kiln compile %s --target cuda --chip sm_90 -o %t.kiln
// RUN: %PYTHON %S/Inputs/kiln_blobs.py %t.kiln ptx | FileCheck %s --check-prefix=PTX
// RUN: kiln compile %s --target rocm --chip gfx942 --compile-to=llvm | FileCheck %s --check-prefix=ROCDL

// TILED-LABEL: func.func private @decode_dispatch_0_attention(%arg0: tensor<1x3x3x1x64xf32>, %arg1: index, %arg2: tensor<1x3x264x64xf32>, %arg3: tensor<1x3x264x64xf32>, %arg4: tensor<1x3x3x1x64xf32>)
// TILED-SAME:    kiln.flash_causal, kiln.flash_scale = 1.250000e-01 : f64
// TILED-SAME:    kiln.gpu_block_dims = array<i64: 32, 1, 1>, kiln.gpu_flash = array<i64: 2, 8, 1, 4>
// TILED-SAME:    kiln.gpu_flash_operands = array<i64: 0, 3, 2, 1, 4>
// TILED-LABEL: func.func private @prefill_dispatch_0_attention(
// TILED-SAME:    kiln.gpu_block_dims = array<i64: 128, 1, 1>, kiln.gpu_flash = array<i64: 8, 8, 4, 1>

// LOOPS-LABEL: gpu.func @decode_dispatch_0_attention_kernel(
// LOOPS-SAME:    known_block_size = array<i32: 32, 1, 1>, known_grid_size = array<i32: 3, 1, 1>
// LOOPS:         %[[END:.*]] = arith.minui %{{.*}}, %c264 : index
// LOOPS:         %[[LOOP_END:.*]] = affine.apply #{{.*}}()[%[[END]]]
// LOOPS:         scf.for %[[KB:.*]] = %c0 to %[[LOOP_END]] step %c32 iter_args({{.*}}) -> (f32, f32, vector<32xf32>) {
// LOOPS:           affine.apply #{{.*}}(%[[KB]])[%{{.*}}]
// LOOPS-COUNT-8:   gpu.shuffle  xor %{{.*}}, %c1_i32, %c32_i32 : f32
// LOOPS:           scf.yield
// LOOPS-COUNT-34:  gpu.shuffle  xor %{{.*}}, %c2_i32, %c32_i32 : f32
// LOOPS:         math.exp
// LOOPS:         math.exp
// LOOPS-COUNT-34:  gpu.shuffle  xor %{{.*}}, %c4_i32, %c32_i32 : f32
// LOOPS:         %[[PHASE0:.*]] = arith.cmpi eq, %{{.*}}, %c0 : index
// LOOPS:         %[[STORE:.*]] = arith.andi %{{.*}}, %[[PHASE0]] : i1
// LOOPS:         scf.if %[[STORE]] {
// LOOPS-NEXT:      vector.store %{{.*}} : memref<1x3x3x1x64xf32>, vector<32xf32>

// LOOPS-LABEL: gpu.func @prefill_dispatch_0_attention_kernel(
// LOOPS-SAME:    %[[SLOT:arg0]]: memref<1xi64>, %[[Q:arg1]]: memref<1x3x3x40x64xf32>, %[[K:arg2]]: memref<1x3x264x64xf32>, %[[V:arg3]]: memref<1x3x264x64xf32>, %[[OUT:arg4]]: memref<1x3x3x40x64xf32>)
// LOOPS-SAME:    known_block_size = array<i32: 128, 1, 1>, known_grid_size = array<i32: 24, 1, 1>
// LOOPS-DAG:     %[[NINF:.*]] = arith.constant 0xFF800000 : f32
// LOOPS-DAG:     %[[SCALE:.*]] = arith.constant 1.250000e-01 : f32
// LOOPS:         %[[WORD:.*]] = memref.load %[[SLOT]][%c0] : memref<1xi64>
// LOOPS:         %[[POS:.*]] = arith.index_cast %[[WORD]] : i64 to index
// LOOPS:         %[[SEE_LAST:.*]] = affine.apply #{{.*}}()[%[[POS]], %{{.*}}]
// LOOPS:         %[[END:.*]] = arith.minui %[[SEE_LAST]], %c264 : index
// LOOPS:         %[[LAST_KEY:.*]] = arith.subi %[[END]], %c1 : index
// LOOPS:         vector.load %[[Q]][{{.*}}] {alignment = 16 : i64} : memref<1x3x3x40x64xf32>, vector<8xf32>
// LOOPS:         scf.for %[[KEY0:.*]] = %c0 to %[[END]] step %c8 iter_args(%{{.*}} = %[[NINF]], %{{.*}} = %{{.*}}, %{{.*}} = %{{.*}}) -> (f32, f32, vector<8xf32>) {
// LOOPS:           %[[ROW:.*]] = arith.minui %[[KEY0]], %[[LAST_KEY]] : index
// LOOPS:           vector.load %[[K]][%{{.*}}, %{{.*}}, %[[ROW]], %{{.*}}] {alignment = 16 : i64} : memref<1x3x264x64xf32>, vector<8xf32>
// LOOPS-COUNT-8:   math.fma
// LOOPS-COUNT-8:   gpu.shuffle  xor %{{.*}}, %c4_i32, %c32_i32 : f32
// LOOPS-COUNT-8:   gpu.shuffle  xor %{{.*}}, %c2_i32, %c32_i32 : f32
// LOOPS-COUNT-8:   gpu.shuffle  xor %{{.*}}, %c1_i32, %c32_i32 : f32
// LOOPS:           arith.mulf %{{.*}}, %[[SCALE]] : f32
// LOOPS:           arith.cmpi uge, %[[KEY0]], %{{.*}} : index
// LOOPS:           arith.maximumf
// LOOPS:           math.exp
// LOOPS:           vector.load %[[V]][%{{.*}}, %{{.*}}, %[[ROW]], %{{.*}}] {alignment = 16 : i64} : memref<1x3x264x64xf32>, vector<8xf32>
// LOOPS:           vector.fma
// LOOPS:           scf.yield
// LOOPS:         arith.divf %{{.*}}, %{{.*}} : vector<8xf32>
// LOOPS:         scf.if
// LOOPS-NEXT:      vector.store %{{.*}}, %[[OUT]][{{.*}}] {alignment = 16 : i64} : memref<1x3x3x40x64xf32>, vector<8xf32>

// No buffer in either kernel: the scores live in registers.
// NOALLOC-LABEL: gpu.func @decode_dispatch_0_attention_kernel(
// NOALLOC-NOT:   memref.alloc
// NOALLOC:       gpu.return
// NOALLOC-LABEL: gpu.func @prefill_dispatch_0_attention_kernel(
// NOALLOC-NOT:   memref.alloc
// NOALLOC:       gpu.return

// PTX-LABEL: .visible .entry decode_dispatch_0_attention_kernel(
// PTX:       .maxntid 32, 1, 1
// PTX:       ld.global.v4.b32
// PTX:       fma.rn.f32
// PTX:       shfl.sync.bfly.b32 {{.*}}, 1, 31, -1;
// PTX:       ex2.approx
// PTX:       shfl.sync.bfly.b32 {{.*}}, 2, 31, -1;
// PTX:       shfl.sync.bfly.b32 {{.*}}, 4, 31, -1;
// PTX:       st.global.v4.b32
// PTX-LABEL: .visible .entry prefill_dispatch_0_attention_kernel(
// PTX:       .maxntid 128, 1, 1
// PTX:       ld.global.v4.b32
// PTX:       shfl.sync.bfly.b32 {{.*}}, 4, 31, -1;
// PTX:       shfl.sync.bfly.b32 {{.*}}, 2, 31, -1;
// PTX:       shfl.sync.bfly.b32 {{.*}}, 1, 31, -1;
// PTX:       st.global.v4.b32

// ROCDL-LABEL: llvm.func @decode_dispatch_0_attention_kernel(
// ROCDL-COUNT-76: rocdl.ds_bpermute
// ROCDL-LABEL: llvm.func @prefill_dispatch_0_attention_kernel(
// ROCDL-COUNT-24: rocdl.ds_bpermute

// SmolLM2's heads (9 query heads on 3 kv heads, head_dim 64) over a 264-row cache: a decode step and a
// 40-token chunk (120 rows per kv head: 8 blocks of 4 warps each, 24 blocks) at a runtime offset.
func.func @decode(%q: tensor<1x9x1x64xf32>, %k: tensor<1x3x264x64xf32>, %v: tensor<1x3x264x64xf32>, %pos: index) -> tensor<1x9x1x64xf32> {
  %o = transformer.attention %q, %k, %v offset(%pos) {causal} : (tensor<1x9x1x64xf32>, tensor<1x3x264x64xf32>, tensor<1x3x264x64xf32>, index) -> tensor<1x9x1x64xf32>
  return %o : tensor<1x9x1x64xf32>
}

func.func @prefill(%q: tensor<1x9x40x64xf32>, %k: tensor<1x3x264x64xf32>, %v: tensor<1x3x264x64xf32>, %pos: index) -> tensor<1x9x40x64xf32> {
  %o = transformer.attention %q, %k, %v offset(%pos) {causal} : (tensor<1x9x40x64xf32>, tensor<1x3x264x64xf32>, tensor<1x3x264x64xf32>, index) -> tensor<1x9x40x64xf32>
  return %o : tensor<1x9x40x64xf32>
}
