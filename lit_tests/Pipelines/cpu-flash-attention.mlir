// Causal GQA prefill attention on the CPU, through the stages: the linalg stage makes it flash
// attention (one scf.forall over batch, kv heads and query tiles tagged as an `attention` kernel and
// mapped to workgroups, so its unit batch dimension stays), dispatch
// formation outlines that forall as it is, and the tiled stage's `flash_attention` schedule
// register-tiles and vectorizes the tile body: both products become vector.fma on whole rows of
// the [keys, rows] tiles, the transposes 16x16 shuffles, and no linalg op is left in the kernel. At
// the loops stage the query tiles are an OpenMP worksharing loop; the row max and sum are carried in
// registers across the key tiles.
//
// RUN: kiln compile %s --compile-to=linalg | FileCheck %s --check-prefix=LINALG
// RUN: kiln compile %s --compile-to=dispatch | FileCheck %s --check-prefix=DISPATCH
// RUN: kiln compile %s --compile-to=tiled | FileCheck %s --check-prefix=TILED
// RUN: kiln compile %s --compile-to=loops | FileCheck %s --check-prefix=LOOPS

func.func @prefill(%q: tensor<1x4x?x32xf32>, %k: tensor<1x2x?x32xf32>, %v: tensor<1x2x?x32xf32>) -> tensor<1x4x?x32xf32> {
  %o = transformer.attention %q, %k, %v {causal} : (tensor<1x4x?x32xf32>, tensor<1x2x?x32xf32>, tensor<1x2x?x32xf32>) -> tensor<1x4x?x32xf32>
  return %o : tensor<1x4x?x32xf32>
}

// LINALG-LABEL: func.func @prefill(
// LINALG: scf.forall (%{{.+}}, %{{.+}}, %{{.+}}) in (1, 2, %{{.+}})
// LINALG: kiln.flash = "scores"
// LINALG: kiln.flash = "pv"
// LINALG: kiln.flash_tile = array<i64: 32, 32, 32>, kiln.kernel_class = "attention", mapping = [#transformer.workgroup<2>, #transformer.workgroup<1>, #transformer.workgroup<0>]}

// DISPATCH-LABEL: func.func private @prefill_dispatch_0_attention(
// DISPATCH-SAME: kiln.iterator_types = "ppp", kiln.kernel_class = "attention", kiln.loop_ranges = array<i64: 1, 2, -1>
// DISPATCH: scf.forall
// DISPATCH: kiln.kernel_class = "attention", kiln.root
// DISPATCH-LABEL: func.func @prefill(
// DISPATCH-NOT: linalg.
// DISPATCH: call @prefill_dispatch_0_attention(
// DISPATCH-NOT: linalg.

// TILED-LABEL: func.func private @prefill_dispatch_0_attention(
// TILED-SAME: kiln.schedule_source = "default"
// TILED-NOT: linalg.
// TILED: vector.shuffle %{{.+}}, %{{.+}} [0, 16, 1, 17, 4, 20, 5, 21, 8, 24, 9, 25, 12, 28, 13, 29] : vector<16xf32>, vector<16xf32>
// TILED-NOT: linalg.
// TILED: scf.for %{{.+}} = %{{.+}} to %{{.+}} step %c32 iter_args(
// TILED-NOT: linalg.
// TILED: vector.fma %{{.+}}, %{{.+}}, %{{.+}} : vector<32xf32>
// TILED-NOT: linalg.
// TILED-LABEL: func.func @prefill(

// LOOPS-LABEL: func.func private @prefill_dispatch_0_attention(
// LOOPS: omp.wsloop
// LOOPS: omp.loop_nest (%{{.+}}, %{{.+}}, %{{.+}}) : index = (%c0, %c0, %c0) to (%c1, %c2, %{{.+}}) step (%c1, %c1, %c1) collapse(3)
// LOOPS: scf.for %{{.+}} = %{{.+}} to %{{.+}} step %c32 iter_args(%{{.+}} = %{{.+}}, %{{.+}} = %{{.+}}) -> (vector<32xf32>, vector<32xf32>)
// LOOPS: vector.fma
// LOOPS: arith.maximumf %{{.+}}, %{{.+}} : vector<32xf32>
