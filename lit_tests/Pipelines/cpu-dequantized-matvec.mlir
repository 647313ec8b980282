// A decode step's linear over GGUF block-quantized weights on the CPU: transformer-to-linalg makes
// it one reduction over the i8 blocks (the dequantize is not materialized), and the tiled stage gives
// that kernel the `dequantized_matvec` schedule: an scf.forall of workgroups over the rows of W, one
// row at a time, the blocks reduced one per step into 16 f32 partial sums (a vector<16xf32> carried
// by an scf.for; each step expands 16 bytes to the two halves of a block), summed by one
// vector.reduction per row. At the loops stage the workgroups are an OpenMP worksharing loop and
// the bytes are read as vector<16xi8>. Tile sizes are not pinned, only that structure.
//
// RUN: kiln compile %s --compile-to=tiled | FileCheck %s --check-prefix=TILED
// RUN: kiln compile %s --compile-to=tiled | FileCheck %s --check-prefix=TILED-NONE
// RUN: kiln compile %s --compile-to=loops | FileCheck %s --check-prefix=LOOPS

// q4_1, SmolLM2-135M's gate projection (576 -> 1536) at one token.
func.func @decode_q4_1(%x: tensor<1x1x576xf32>, %qs: tensor<1536x18x16xi8>, %d: tensor<1536x18xf16>, %m: tensor<1536x18xf16>) -> tensor<1x1x1536xf32> {
  %w = transformer.dequantize %qs, %d, %m {format = "q4_1"} : (tensor<1536x18x16xi8>, tensor<1536x18xf16>, tensor<1536x18xf16>) -> tensor<1536x576xf32>
  %y = transformer.linear %x, %w : (tensor<1x1x576xf32>, tensor<1536x576xf32>) -> tensor<1x1x1536xf32>
  return %y : tensor<1x1x1536xf32>
}

// q8_0, the down projection (1536 -> 576) at one token: the 32 bytes of a block are read in place,
// 16 at a time (block and half are reduction loops).
func.func @decode_q8_0(%x: tensor<1x1536xf32>, %qs: tensor<576x48x32xi8>, %d: tensor<576x48xf16>) -> tensor<1x576xf32> {
  %w = transformer.dequantize %qs, %d {format = "q8_0"} : (tensor<576x48x32xi8>, tensor<576x48xf16>) -> tensor<576x1536xf32>
  %y = transformer.linear %x, %w : (tensor<1x1536xf32>, tensor<576x1536xf32>) -> tensor<1x576xf32>
  return %y : tensor<1x576xf32>
}

// No f32 copy of either weight anywhere in the module, in whole or in blocks.
// TILED-NONE-NOT: tensor<1536x576xf32>
// TILED-NONE-NOT: tensor<576x1536xf32>
// TILED-NONE-NOT: tensor<1536x18x2x16xf32>
// TILED-NONE-NOT: tensor<576x48x2x16xf32>

// TILED-LABEL: func.func private @decode_q4_1_dispatch_0_reduction(
// TILED-SAME: tensor<1536x18x16xi8>, %{{.+}}: tensor<1536x18xf16>, %{{.+}}: tensor<1536x18xf16>) -> tensor<1x1x1536xf32>
// TILED-SAME: kiln.iterator_types = "ppprr", kiln.kernel_class = "reduction", kiln.loop_ranges = array<i64: 1, 1, 1536, 18, 16>
// TILED: linalg.fill
// TILED: scf.forall
// TILED-SAME: -> (tensor<1x1x1536xf32>)
// TILED: scf.for
// TILED: %[[SUM:.+]] = scf.for {{.+}} iter_args(%[[ACC:[a-z0-9_]+]] = %{{.+}}) -> (vector<16xf32>) {
// TILED: vector.transfer_read {{.+}} vector<16xf32>
// TILED: vector.transfer_read {{.+}} vector<16xf32>
// TILED: %[[BYTES:.+]] = vector.transfer_read {{.+}} : tensor<1x1x16xi8>, vector<16xi8>
// TILED-NOT: vector.transfer_read
// TILED: %[[WIDE:.+]] = arith.extui %[[BYTES]] : vector<16xi8> to vector<16xi32>
// TILED: arith.andi %[[WIDE]], %{{.+}} : vector<16xi32>
// TILED: arith.uitofp %{{.+}} : vector<16xi32> to vector<16xf32>
// TILED: arith.shrui %[[WIDE]], %{{.+}} : vector<16xi32>
// TILED: arith.uitofp %{{.+}} : vector<16xi32> to vector<16xf32>
// TILED: %[[NEXT:.+]] = arith.addf %[[ACC]], %{{.+}} : vector<16xf32>
// TILED-NEXT: scf.yield %[[NEXT]] : vector<16xf32>
// TILED: vector.reduction <add>, %[[SUM]], %{{.+}} : vector<16xf32> into f32
// TILED: scf.forall.in_parallel
// TILED-NEXT: tensor.parallel_insert_slice
// TILED-LABEL: func.func @decode_q4_1(
// TILED-NOT: linalg.generic
// TILED: call @decode_q4_1_dispatch_0_reduction
// TILED-LABEL: func.func private @decode_q8_0_dispatch_0_reduction(
// TILED-SAME: tensor<576x48x2x16xi8>, %{{.+}}: tensor<576x48xf16>) -> tensor<1x576xf32>
// TILED-SAME: kiln.iterator_types = "pprrr", kiln.kernel_class = "reduction", kiln.loop_ranges = array<i64: 1, 576, 48, 2, 16>
// TILED: scf.forall
// TILED-SAME: -> (tensor<1x576xf32>)
// TILED: scf.for {{.+}} -> (vector<16xf32>) {
// TILED: scf.for {{.+}} iter_args(%[[ACC:[a-z0-9_]+]] = %{{.+}}) -> (vector<16xf32>) {
// TILED: %[[BYTES:.+]] = vector.transfer_read {{.+}} vector<16xi8>
// TILED-NOT: arith.extui
// TILED: arith.sitofp %[[BYTES]] : vector<16xi8> to vector<16xf32>
// TILED: %[[NEXT:.+]] = arith.addf %[[ACC]], %{{.+}} : vector<16xf32>
// TILED-NEXT: scf.yield %[[NEXT]] : vector<16xf32>
// TILED: vector.reduction <add>, %{{.+}}, %{{.+}} : vector<16xf32> into f32
// TILED: scf.forall.in_parallel
// TILED-LABEL: func.func @decode_q8_0(
// TILED-NOT: linalg.generic
// TILED: call @decode_q8_0_dispatch_0_reduction

// LOOPS-LABEL: func.func private @decode_q4_1_dispatch_0_reduction(
// LOOPS-SAME: memref<1536x18x16xi8>
// LOOPS: omp.parallel {
// LOOPS-NEXT: omp.wsloop schedule(dynamic) {
// LOOPS-NEXT: omp.loop_nest
// LOOPS: scf.for
// LOOPS: scf.for {{.+}} -> (vector<16xf32>) {
// LOOPS: vector.transfer_read {{.+}} vector<16xi8>
// LOOPS: arith.extui %{{.+}} : vector<16xi8> to vector<16xi32>
// LOOPS: scf.yield %{{.+}} : vector<16xf32>
// LOOPS: vector.reduction <add>, %{{.+}}, %{{.+}} : vector<16xf32> into f32
// LOOPS: omp.yield
// LOOPS: omp.terminator
// LOOPS-LABEL: func.func @decode_q4_1(
// LOOPS-NOT: omp.
// LOOPS: call @decode_q4_1_dispatch_0_reduction
// LOOPS-LABEL: func.func private @decode_q8_0_dispatch_0_reduction(
// LOOPS: omp.parallel {
// LOOPS-NEXT: omp.wsloop schedule(dynamic) {
// LOOPS-NEXT: omp.loop_nest
// LOOPS: scf.for {{.+}} -> (vector<16xf32>) {
// LOOPS: vector.transfer_read {{.+}} vector<16xi8>
// LOOPS: arith.sitofp %{{.+}} : vector<16xi8> to vector<16xf32>
// LOOPS: vector.reduction <add>, %{{.+}}, %{{.+}} : vector<16xf32> into f32
// LOOPS: omp.yield
// LOOPS: omp.terminator
// LOOPS-LABEL: func.func @decode_q8_0(
// LOOPS-NOT: omp.
// LOOPS: call @decode_q8_0_dispatch_0_reduction
