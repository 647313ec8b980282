//===- Passes.td - Kiln's passes ------------------------------*- tablegen -*-===//
//
// Every Kiln pass, declared once: kiln-opt and the Python PassManager both
// register them from here (registerKilnPasses).
//
//===----------------------------------------------------------------------===//

#ifndef KILN_PASSES
#define KILN_PASSES

include "mlir/Pass/PassBase.td"

def TransformerToLinalg : Pass<"transformer-to-linalg"> {
  let summary = "Lower every `transformer` op to linalg/tensor/arith/math on tensors";
  let description = [{
    Rewrites each `transformer` op into destination-style linalg ops on
    tensors (plus `tensor` reshapes/slices, `arith` and `math` scalar code):

    - `linear`, `matmul` and the projections of `gated_mlp` become
      `linalg.generic` contractions; a bias initializes the accumulator.
    - `rms_norm`, `layer_norm` and `softmax` become reductions followed by an
      elementwise normalization; `softmax` subtracts the row maximum first.
    - `attention` reshapes the query heads into `[kv_heads, group]` so grouped
      KV heads need no copy, computes scaled scores, applies the additive mask
      and the causal bound `j <= offset + i`, a stable softmax, and the product
      with the values.
    - `rope` computes `x * cos + rotate_half(x) * sin` in one elementwise op;
      without an `inv_freq` operand the frequencies are a constant computed
      in f32 as Hugging Face does.
    - `kv_cache_update` becomes `tensor.insert_slice` (in place after
      bufferization); `split_heads`/`merge_heads` become reshapes and
      `linalg.transpose`; `embedding` a gather with `tensor.extract`.

    Operands narrower than f32 are accumulated in f32. The pass fails, naming
    the op, if anything of the dialect is left.

    With `flash-kv-tile=N` (the CPU and GPU pipelines), f32 `attention`
    without a mask becomes flash attention instead: one `scf.forall` over
    (batch, kv head, query tile) marked `kiln.kernel_class = "attention"` and
    mapped to `#transformer.workgroup`s (so a grid of one workgroup is not
    folded away), which dispatch formation outlines as one kernel. Each
    workgroup holds the queries of the heads that share a kv head (about
    `flash-query-rows` rows), walks the keys N at a time with an online
    softmax (running max, sum and output, rescaled per tile), never
    materializes the scores, and with `causal` stops at the last key its
    queries see. The tile body's linalg ops carry `kiln.flash` roles for the
    CPU's attention schedule; the forall records the scale, the causality and
    a constant offset (`kiln.flash_scale`, `kiln.flash_causal`,
    `kiln.flash_offset`) for GPU targets, which write the kernel themselves.
    When the attention's only user is `merge_heads` (and it has more than one
    position), the kernel writes its output position-major, [b, s, kv heads,
    group, d] (`kiln.flash_position_major`): the merge is then a reshape of
    it instead of a transpose kernel.

    Example: `kiln-opt --transformer-to-linalg input.mlir`,
    `kiln-opt --pass-pipeline='builtin.module(func.func(transformer-to-linalg{flash-kv-tile=32}))'`.
  }];
  let options = [
    Option<"flashKvTile", "flash-kv-tile", "int64_t", /*default=*/"0",
           "Keys per tile of flash attention (0: attention stays decomposed)">,
    Option<"flashQueryRows", "flash-query-rows", "int64_t", /*default=*/"32",
           "Query rows per flash-attention workgroup (heads sharing a kv head x positions)">,
  ];
  let dependentDialects = [
    "::mlir::arith::ArithDialect",
    "::mlir::linalg::LinalgDialect",
    "::mlir::math::MathDialect",
    "::mlir::scf::SCFDialect",
    "::mlir::tensor::TensorDialect",
  ];
}

def FuseElementwise : Pass<"kiln-fuse-elementwise"> {
  let summary = "Fuse elementwise producers into consumers when it adds no work";
  let description = [{
    Fuses an elementwise linalg producer into its linalg consumer only when
    the producer has one use and the consumer reads each produced element
    exactly once (its indexing map for that operand is a permutation of the
    consumer's loops). Unlike upstream `linalg-fuse-elementwise-ops` it never
    fuses an activation into the contraction that consumes it (which would
    recompute it once per output column) and never folds reshapes into
    contractions (which hides GEMMs from their schedule).

    A copy (a `linalg.transpose`, or any op that only moves elements) folds
    into an all-parallel consumer that is its only user, however often that
    reads it: the consumer reads the copy's source through the composed
    indexing maps. An `expand_shape` between them is first moved above the
    copy. This is how split_heads' transpose of q and k ends up in RoPE.

    Example: `kiln-opt --pass-pipeline='builtin.module(func.func(kiln-fuse-elementwise))'`.
  }];
  let dependentDialects = ["::mlir::linalg::LinalgDialect"];
}

def AccumulateResiduals : Pass<"kiln-accumulate-residuals"> {
  let summary = "Add a residual in a contraction's accumulator, not in a separate op";
  let description = [{
    Rewrites `r + C` (an elementwise `linalg.generic` adding two tensors of
    the same type), where `C` is a contraction whose accumulator starts as a
    `linalg.fill` of zero and which has no other use, into the contraction
    accumulating into `r`: one kernel instead of two. `r` must be defined
    before the contraction. A transformer's residual connections are of this
    form; GPU targets run the pass, where a decode step's cost is largely its
    launches.

    The sums are rounded differently where a kernel adds its accumulator's
    initial value first (`r + p0 + p1 + ...` instead of `r + (p0 + p1 + ...)`);
    Kiln's GPU matvec kernels add it last, as the separate op did.

    Example:

    ```mlir
    %zero = linalg.fill ins(%cst : f32) outs(%empty : tensor<1x576xf32>) -> tensor<1x576xf32>
    %y = linalg.matmul ins(%x, %w : tensor<1x576xf32>, tensor<576x576xf32>) outs(%zero : tensor<1x576xf32>) -> tensor<1x576xf32>
    %h = linalg.generic {... addf ...} ins(%r, %y : ...) outs(%empty : ...) -> tensor<1x576xf32>
    // becomes
    %h = linalg.matmul ins(%x, %w : tensor<1x576xf32>, tensor<576x576xf32>) outs(%r : tensor<1x576xf32>) -> tensor<1x576xf32>
    ```
  }];
  let dependentDialects = ["::mlir::linalg::LinalgDialect"];
}

def FuseIntoMatvecs : Pass<"kiln-fuse-into-matvecs"> {
  let summary = "Fuse elementwise producers of a matvec's vector into the matvec";
  let description = [{
    A matvec here is a static `linalg.generic` with one reduction loop that
    reads an input once per output column (its indexing map keeps the
    reduction loop and drops a parallel one) and whose input has at most
    `max-rows` rows: a decode step's linear `x[b, m, K] · W[N, K]ᵀ`. When that
    input is computed by an elementwise `linalg.generic` of arith/math ops
    (RMSNorm's scaling, SiLU(gate)·up), the producer is fused into the matvec,
    cloned for each matvec that reads it, so the matvec recomputes the vector
    as it reads it. GPU targets run the pass: a decode step loses a kernel
    launch per fused producer, for a few operations per element and output
    row. (kiln-fuse-elementwise never fuses into a contraction: on a CPU the
    recompute is the cost.)

    Example:

    ```mlir
    %n = linalg.generic {...parallel...} ins(%x, %g : ...) { mulf } -> tensor<1x1x576xf32>
    %q = linalg.generic {...reduction...} ins(%n, %wq : ...) outs(%zq : ...) -> tensor<1x1x576xf32>
    %k = linalg.generic {...reduction...} ins(%n, %wk : ...) outs(%zk : ...) -> tensor<1x1x192xf32>
    // becomes two matvecs reading %x and %g, each computing x * g as it reads them
    ```
  }];
  let options = [
    Option<"maxRows", "max-rows", "int64_t", /*default=*/"4",
           "Fuse only into matvecs whose vector operand has at most this many rows">,
  ];
  let dependentDialects = ["::mlir::linalg::LinalgDialect"];
}

def FormDispatches : Pass<"kiln-form-dispatches", "::mlir::ModuleOp"> {
  let summary = "Partition host functions into kernels (IREE-style dispatch regions)";
  let description = [{
    Outlines every top-level linalg op of each host function, together with
    the `linalg.fill` ops that only initialize it (a fill that initializes
    several ops is cloned for each, so no kernel's output starts as a host
    copy of a shared fill), into a private
    `func.func` marked `kiln.dispatch`, and calls it from the host. Kernels
    are destination-passing: the `tensor.empty` a kernel writes stays in the
    host and is passed in, so after bufferization the host owns (and can
    plan) every buffer and kernels write their outputs in place. Small
    constants are cloned into kernels rather than passed.

    An op that a lowering already formed into a kernel (a top-level op tagged
    `kiln.kernel_class`, e.g. the `scf.forall` of flash attention) is
    outlined as it is, with everything nested in it; its loop ranges are its
    forall's grid.

    Each kernel is tagged for the `tiled` stage: `kiln.kernel_class`
    (contraction, reduction, elementwise, transpose, generic, attention),
    `kiln.loop_ranges` (static trip counts, -1 if dynamic),
    `kiln.iterator_types` (p/r per loop), and `kiln.root` on its root op.
    A transpose kernel also records its `kiln.permutation`: after
    bufferization, a host copy of its result can read its input through a
    transposed view instead (a prefill's V split into heads and copied into
    the KV cache).

    Example: `kiln-opt --kiln-form-dispatches linalg.mlir`.
  }];
  let dependentDialects = ["::mlir::func::FuncDialect"];
}

def PlanBuffers : Pass<"kiln-plan-buffers", "::mlir::func::FuncOp"> {
  let summary = "Place a host function's intermediate buffers in one arena, reusing memory";
  let description = [{
    Runs after bufferization and the deallocation pipeline. Every static,
    identity-layout `memref.alloc` of a host function that is freed by one
    `memref.dealloc` in the same block becomes a `memref.view` at a fixed
    offset into a single 64-byte aligned arena; buffers whose lifetimes
    (from the alloc to the last op using it or a view of it) do not overlap
    share memory (greedy first-fit, largest first). The function is tagged with `kiln.buffer_plan`
    (`arena_bytes`, `buffers`, `unplanned_bytes`). Kernels (`kiln.dispatch`)
    are left alone.

    Example: `kiln-opt --pass-pipeline='builtin.module(func.func(kiln-plan-buffers))'`.
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect", "::mlir::memref::MemRefDialect"];
}

#endif // KILN_PASSES
