//===- TransformerOps.td - the `transformer` dialect ---------*- tablegen -*-===//
//
// Ops at the level a model author thinks in. All ops work on ranked tensors
// (static or dynamic dims); weights use the Hugging Face layout ([out, in] for
// linear layers). Activations are laid out [batch, heads, seq, head_dim] for
// attention and rope.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_TRANSFORMER_OPS
#define KILN_TRANSFORMER_OPS

include "mlir/IR/OpBase.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/Dialect/SCF/IR/DeviceMappingInterface.td"
include "mlir/IR/BuiltinAttributes.td"
include "mlir/IR/CommonTypeConstraints.td"
include "mlir/IR/CommonAttrConstraints.td"
include "mlir/Interfaces/InferTypeOpInterface.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

//===----------------------------------------------------------------------===//
// Dialect
//===----------------------------------------------------------------------===//

def Transformer_Dialect : Dialect {
  let name = "transformer";
  let cppNamespace = "::kiln::transformer";
  let summary = "Tensor-level ops of transformer models";
  let description = [{
    The `transformer` dialect holds the building blocks of LLMs and encoders
    (embedding, linear, norms, rotary embeddings, attention, gated MLPs,
    KV-cache updates, greedy sampling) as single ops on tensors, so graph-level
    rewrites can see them whole. `transformer-to-linalg` lowers every op to
    linalg/tensor/arith/math on tensors.
  }];
  let useDefaultAttributePrinterParser = 1;
}

//===----------------------------------------------------------------------===//
// Attributes
//===----------------------------------------------------------------------===//

def Transformer_WorkgroupMappingAttr : AttrDef<Transformer_Dialect, "WorkgroupMapping",
    [DeclareAttrInterfaceMethods<DeviceMappingAttrInterface>]> {
  let mnemonic = "workgroup";
  let summary = "Maps a dimension of a kernel's scf.forall to the target's workgroups";
  let description = [{
    A lowering that forms a kernel itself (flash attention's `scf.forall`
    over batch, kv heads and query tiles) maps the forall's dimensions to
    workgroups with this attribute: the dimension's number counted from the
    innermost (0). Canonicalization folds an unmapped forall whose
    dimensions all have one iteration into its body, which would scatter the
    kernel's ops into kernels of their own (MQA attention of one sequence);
    a mapped forall keeps its dimensions. The CPU lowers the forall to an
    OpenMP loop nest; GPU targets write such kernels themselves.

    ```mlir
    %r = scf.forall (%b, %h, %t) in (1, 1, 1) shared_outs(%o = %init) -> (tensor<1x1x3x1x64xf32>) {
      ...
    } {kiln.kernel_class = "attention",
       mapping = [#transformer.workgroup<2>, #transformer.workgroup<1>, #transformer.workgroup<0>]}
    ```
  }];
  let parameters = (ins "int64_t":$dim);
  let assemblyFormat = "`<` $dim `>`";
  let genVerifyDecl = 1;
}

//===----------------------------------------------------------------------===//
// Type constraints
//===----------------------------------------------------------------------===//

def Transformer_FloatTensor : RankedTensorOf<[AnyFloat]>;
def Transformer_IntTensor : RankedTensorOf<[AnySignlessInteger]>;

class Transformer_Op<string mnemonic, list<Trait> traits = []>
    : Op<Transformer_Dialect, mnemonic, !listconcat(traits, [Pure])>;

//===----------------------------------------------------------------------===//
// Embedding, linear algebra
//===----------------------------------------------------------------------===//

def Transformer_EmbeddingOp : Transformer_Op<"embedding", [InferTypeOpAdaptor]> {
  let summary = "Gather rows of an embedding table";
  let description = [{
    `result[i..., d] = table[indices[i...], d]`: looks up one row of the
    `[vocab, dim]` table per index. The result has the shape of `indices` with
    `dim` appended. Indices outside `[0, vocab)` are undefined behaviour.

    Example:

    ```mlir
    %h = transformer.embedding %table[%ids]
        : tensor<49152x576xf32>, tensor<1x7xi64> -> tensor<1x7x576xf32>
    ```
  }];
  let arguments = (ins Transformer_FloatTensor:$table, Transformer_IntTensor:$indices);
  let results = (outs Transformer_FloatTensor:$result);
  let assemblyFormat = [{
    $table `[` $indices `]` attr-dict `:` type($table) `,` type($indices) `->` type($result)
  }];
}

def Transformer_LinearOp : Transformer_Op<"linear", [InferTypeOpAdaptor]> {
  let summary = "Fully connected layer: x · Wᵀ (+ b)";
  let description = [{
    Applies `result[..., n] = sum_k input[..., k] * weight[n, k] + bias[n]` to
    the last axis of `input`. The weight is in the Hugging Face / PyTorch
    `[out_features, in_features]` layout; `bias` is optional.

    Example:

    ```mlir
    %q = transformer.linear %x, %wq, %bq
        : (tensor<1x7x576xf32>, tensor<576x576xf32>, tensor<576xf32>) -> tensor<1x7x576xf32>
    ```
  }];
  let arguments = (ins Transformer_FloatTensor:$input, Transformer_FloatTensor:$weight,
                       Optional<Transformer_FloatTensor>:$bias);
  let results = (outs Transformer_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $weight (`,` $bias^)? attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
  let hasCanonicalizer = 1;
}

def Transformer_DequantizeOp : Transformer_Op<"dequantize", [InferTypeOpAdaptor]> {
  let summary = "Expand a block-quantized weight (GGUF Q4_0, Q4_1, Q8_0) to f32";
  let description = [{
    Rebuilds an f32 `[N, K]` weight from llama.cpp's block formats, which keep
    each row as K/32 blocks of 32 values with an f16 scale `d` (and for Q4_1 an
    f16 offset `m`), exactly as the `gguf` package dequantizes them:

    - `q8_0`: `data : [N, K/32, 32] x i8`, `w = d * q` (q signed);
    - `q4_0`: `data : [N, K/32, 16] x i8`, `w = d * (q - 8)`;
    - `q4_1`: `data : [N, K/32, 16] x i8`, `w = d * q + m`, with `mins` given.

    In the 4-bit formats byte `j` of a block holds value `j` in its low nibble
    and value `j + 16` in its high nibble (q unsigned). `scales` and `mins` are
    `[N, K/32]`. Every product `d * q` is exact in f32, so the result is
    bit-identical to dequantizing in numpy. A `transformer.linear` whose weight
    is a dequantize and whose input has few rows (a decode step) lowers to one
    kernel that reads the blocks, not an f32 copy.

    Example:

    ```mlir
    %w = transformer.dequantize %qs, %d, %m {format = "q4_1"}
        : (tensor<1536x18x16xi8>, tensor<1536x18xf16>, tensor<1536x18xf16>) -> tensor<1536x576xf32>
    ```
  }];
  let arguments = (ins Transformer_IntTensor:$data, Transformer_FloatTensor:$scales,
                       Optional<Transformer_FloatTensor>:$mins, StrAttr:$format);
  let results = (outs Transformer_FloatTensor:$result);
  let assemblyFormat = [{
    $data `,` $scales (`,` $mins^)? attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def Transformer_MatmulOp : Transformer_Op<"matmul", [InferTypeOpAdaptor]> {
  let summary = "Batched matrix product";
  let description = [{
    `result[b..., m, n] = sum_k lhs[b..., m, k] * rhs[b..., k, n]`, with
    `rhs[b..., n, k]` instead when `transpose_rhs` is set. Both operands have the
    same rank (at least 2) and the same leading batch dimensions.

    Example:

    ```mlir
    %s = transformer.matmul %q, %k {transpose_rhs}
        : (tensor<2x8x16x64xf32>, tensor<2x8x16x64xf32>) -> tensor<2x8x16x16xf32>
    ```
  }];
  let arguments = (ins Transformer_FloatTensor:$lhs, Transformer_FloatTensor:$rhs,
                       UnitAttr:$transpose_rhs);
  let results = (outs Transformer_FloatTensor:$result);
  let assemblyFormat = [{
    $lhs `,` $rhs attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Normalization
//===----------------------------------------------------------------------===//

def Transformer_RMSNormOp : Transformer_Op<"rms_norm", [InferTypeOpAdaptor]> {
  let summary = "Root-mean-square normalization over the last axis";
  let description = [{
    `result = input * rsqrt(mean(input², axis=-1) + eps) * weight`. The
    optional `weight` has the size of the last axis. Inputs narrower than f32
    are reduced in f32, as Hugging Face does.

    Example:

    ```mlir
    %y = transformer.rms_norm %x, %w {eps = 1.0e-05 : f64}
        : (tensor<1x7x576xf32>, tensor<576xf32>) -> tensor<1x7x576xf32>
    ```
  }];
  let arguments = (ins Transformer_FloatTensor:$input, Optional<Transformer_FloatTensor>:$weight,
                       DefaultValuedAttr<F64Attr, "1.0e-6">:$eps);
  let results = (outs Transformer_FloatTensor:$result);
  let assemblyFormat = [{
    $input (`,` $weight^)? attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
  let hasCanonicalizer = 1;
}

def Transformer_LayerNormOp : Transformer_Op<"layer_norm",
    [InferTypeOpAdaptor, AttrSizedOperandSegments]> {
  let summary = "Layer normalization over the last axis";
  let description = [{
    `result = (input - mean) * rsqrt(var + eps) * weight + bias`, with the
    biased variance over the last axis. `weight` and `bias` are optional and
    have the size of the last axis.

    Example:

    ```mlir
    %y = transformer.layer_norm %x weight(%g) bias(%b) {eps = 1.0e-12 : f64}
        : (tensor<2x9x384xf32>, tensor<384xf32>, tensor<384xf32>) -> tensor<2x9x384xf32>
    ```
  }];
  let arguments = (ins Transformer_FloatTensor:$input, Optional<Transformer_FloatTensor>:$weight,
                       Optional<Transformer_FloatTensor>:$bias,
                       DefaultValuedAttr<F64Attr, "1.0e-5">:$eps);
  let results = (outs Transformer_FloatTensor:$result);
  let assemblyFormat = [{
    $input (`weight` `(` $weight^ `)`)? (`bias` `(` $bias^ `)`)? attr-dict
    `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
  let hasCanonicalizer = 1;
}

//===----------------------------------------------------------------------===//
// Positions and attention
//===----------------------------------------------------------------------===//

def Transformer_RoPEOp : Transformer_Op<"rope", [InferTypeOpAdaptor]> {
  let summary = "Rotary position embedding (rotate-half layout)";
  let description = [{
    Rotates the first `rotary_dim` features of each head of `input`
    (`[batch, heads, seq, head_dim]`) by the angle `position * inv_freq[i]`,
    in the Hugging Face "rotate half" layout: feature `i` pairs with feature
    `i + rotary_dim/2`. The remaining `head_dim - rotary_dim` features pass
    through unchanged (partial rotary). `rotary_dim` defaults to `head_dim`.

    `positions` is `[seq]` or `[batch, seq]`. `inv_freq` (`[rotary_dim/2]`) is
    optional: without it, `inv_freq[i] = theta^(-2i/rotary_dim)` computed in f32
    as Hugging Face does; with it, any rope-scaling variant (linear, llama3,
    yarn, ...) is expressed by the frequencies the frontend computes.
    `attention_scaling` (default 1) multiplies the rotated features' cos and
    sin: YaRN's attention factor, which Hugging Face applies to both tables.

    Example:

    ```mlir
    %qr = transformer.rope %q, %pos {theta = 1.0e+05 : f64}
        : (tensor<1x9x7x64xf32>, tensor<1x7xi64>) -> tensor<1x9x7x64xf32>
    %kr = transformer.rope %k, %pos inv_freq(%freq) {attention_scaling = 1.2 : f64}
        : (tensor<1x3x7x64xf32>, tensor<1x7xi64>, tensor<32xf32>) -> tensor<1x3x7x64xf32>
    ```
  }];
  let arguments = (ins Transformer_FloatTensor:$input, Transformer_IntTensor:$positions,
                       Optional<Transformer_FloatTensor>:$inv_freq,
                       DefaultValuedAttr<F64Attr, "10000.0">:$theta,
                       OptionalAttr<I64Attr>:$rotary_dim,
                       DefaultValuedAttr<F64Attr, "1.0">:$attention_scaling);
  let results = (outs Transformer_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $positions (`inv_freq` `(` $inv_freq^ `)`)? attr-dict
    `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// The number of rotated features: `rotary_dim`, or head_dim when absent.
    int64_t getRotaryDimOrHeadDim();
  }];
}

def Transformer_AttentionOp : Transformer_Op<"attention",
    [InferTypeOpAdaptor, AttrSizedOperandSegments]> {
  let summary = "Scaled dot-product attention with grouped KV heads";
  let description = [{
    `softmax(query · keyᵀ * scale + mask) · value`, per batch and head, with a
    numerically stable softmax over the key axis.

    - `query` is `[batch, num_heads, q_len, head_dim]`; `key` is
      `[batch, num_kv_heads, kv_len, head_dim]` and `value`
      `[batch, num_kv_heads, kv_len, v_head_dim]`. `num_heads` must be a
      multiple of `num_kv_heads`: query head `h` reads KV head
      `h / (num_heads / num_kv_heads)` (grouped-query attention).
    - `causal`: query row `i` sits at position `offset + i` of the key
      sequence and sees keys `j <= offset + i`. `offset` (an `index`, default
      0) places a short query block (decoding) inside a longer key/value
      sequence such as a KV cache; keys past the last query position are never
      read into the result.
    - `mask` is an optional additive mask of rank 4 whose dims are each 1 or
      equal to `[batch, num_heads, q_len, kv_len]` (e.g. a BERT padding mask
      `[batch, 1, 1, kv_len]`). Only a static 1 broadcasts: a dynamic mask
      dim is taken to be full size, and the head dim must be static.
    - `scale` defaults to `1/sqrt(head_dim)`; it is required when head_dim is
      dynamic.

    Example:

    ```mlir
    %o = transformer.attention %q, %k, %v offset(%pos) {causal}
        : (tensor<1x9x1x64xf32>, tensor<1x3x128x64xf32>, tensor<1x3x128x64xf32>, index)
        -> tensor<1x9x1x64xf32>
    ```
  }];
  let arguments = (ins Transformer_FloatTensor:$query, Transformer_FloatTensor:$key,
                       Transformer_FloatTensor:$value,
                       Optional<Transformer_FloatTensor>:$mask, Optional<Index>:$offset,
                       UnitAttr:$causal, OptionalAttr<F64Attr>:$scale);
  let results = (outs Transformer_FloatTensor:$result);
  let assemblyFormat = [{
    $query `,` $key `,` $value (`mask` `(` $mask^ `)`)? (`offset` `(` $offset^ `)`)? attr-dict
    `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
  let hasCanonicalizer = 1;
}

def Transformer_KVCacheUpdateOp : Transformer_Op<"kv_cache_update", [InferTypeOpAdaptor]> {
  let summary = "Write new key/value rows into a cache at a position";
  let description = [{
    Returns `cache` with rows `[position, position + new_len)` of the sequence
    axis (axis 2 of `[batch, kv_heads, max_seq, head_dim]`) replaced by
    `update` (`[batch, kv_heads, new_len, head_dim]`). After bufferization the
    write happens in place. `position + new_len` must not exceed `max_seq`.

    Example:

    ```mlir
    %k2 = transformer.kv_cache_update %kcache, %knew at %pos
        : tensor<1x3x128x64xf32>, tensor<1x3x1x64xf32> -> tensor<1x3x128x64xf32>
    ```
  }];
  let arguments = (ins Transformer_FloatTensor:$cache, Transformer_FloatTensor:$update,
                       Index:$position);
  let results = (outs Transformer_FloatTensor:$result);
  let assemblyFormat = [{
    $cache `,` $update `at` $position attr-dict `:` type($cache) `,` type($update) `->` type($result)
  }];
  let hasVerifier = 1;
  let hasFolder = 1;
}

def Transformer_SplitHeadsOp : Transformer_Op<"split_heads", [InferTypeOpAdaptor]> {
  let summary = "[batch, seq, heads*head_dim] -> [batch, heads, seq, head_dim]";
  let description = [{
    Splits the feature axis of a projection output into `num_heads` heads and
    moves the head axis in front of the sequence axis, the layout `attention`
    and `rope` expect.

    Example:

    ```mlir
    %qh = transformer.split_heads %q {num_heads = 9 : i64}
        : tensor<1x7x576xf32> -> tensor<1x9x7x64xf32>
    ```
  }];
  let arguments = (ins Transformer_FloatTensor:$input, I64Attr:$num_heads);
  let results = (outs Transformer_FloatTensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input) `->` type($result)";
  let hasFolder = 1;
}

def Transformer_MergeHeadsOp : Transformer_Op<"merge_heads", [InferTypeOpAdaptor]> {
  let summary = "[batch, heads, seq, head_dim] -> [batch, seq, heads*head_dim]";
  let description = [{
    The inverse of `split_heads`: moves the head axis behind the sequence axis
    and merges it with the feature axis, ready for the output projection.

    Example:

    ```mlir
    %o = transformer.merge_heads %oh : tensor<1x9x7x64xf32> -> tensor<1x7x576xf32>
    ```
  }];
  let arguments = (ins Transformer_FloatTensor:$input);
  let results = (outs Transformer_FloatTensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input) `->` type($result)";
  let hasFolder = 1;
}

//===----------------------------------------------------------------------===//
// Activations and MLP
//===----------------------------------------------------------------------===//

def Transformer_SoftmaxOp : Transformer_Op<"softmax", [SameOperandsAndResultType]> {
  let summary = "Numerically stable softmax along one axis";
  let description = [{
    `exp(x - max(x)) / sum(exp(x - max(x)))` along `axis` (default: the last;
    negative values count from the end).

    Example:

    ```mlir
    %p = transformer.softmax %s {axis = -1 : i64} : tensor<2x8x16x16xf32>
    ```
  }];
  let arguments = (ins Transformer_FloatTensor:$input, DefaultValuedAttr<I64Attr, "-1">:$axis);
  let results = (outs Transformer_FloatTensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input)";
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// `axis` normalized to [0, rank).
    int64_t getNormalizedAxis();
  }];
}

def Transformer_SiLUOp : Transformer_Op<"silu", [SameOperandsAndResultType]> {
  let summary = "SiLU (swish) activation: x * sigmoid(x)";
  let description = [{
    Elementwise `x / (1 + exp(-x))`.

    Example:

    ```mlir
    %y = transformer.silu %x : tensor<1x7x1536xf32>
    ```
  }];
  let arguments = (ins Transformer_FloatTensor:$input);
  let results = (outs Transformer_FloatTensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input)";
}

def Transformer_GeluOp : Transformer_Op<"gelu", [SameOperandsAndResultType]> {
  let summary = "GELU activation, exact (erf) or tanh-approximated";
  let description = [{
    `approximate = "none"` (default): `0.5 * x * (1 + erf(x / sqrt(2)))`.
    `approximate = "tanh"`: `0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x³)))`,
    the names PyTorch's `F.gelu(approximate=...)` uses.

    Example:

    ```mlir
    %y = transformer.gelu %x {approximate = "tanh"} : tensor<1x7x3072xf32>
    ```
  }];
  let arguments = (ins Transformer_FloatTensor:$input,
                       DefaultValuedStrAttr<StrAttr, "none">:$approximate);
  let results = (outs Transformer_FloatTensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input)";
  let hasVerifier = 1;
}

def Transformer_GatedMLPOp : Transformer_Op<"gated_mlp", [InferTypeOpAdaptor]> {
  let summary = "Gated feed-forward block: (act(x·Wgᵀ) ⊙ x·Wuᵀ)·Wdᵀ";
  let description = [{
    The SwiGLU/GeGLU MLP of Llama-family models:
    `down(act(gate(x)) * up(x))` with `gate_weight`, `up_weight`
    `[ffn, hidden]` and `down_weight` `[hidden, ffn]`, all without bias.
    `activation` is `"silu"` (default), `"gelu"` or `"gelu_tanh"`.

    Example:

    ```mlir
    %y = transformer.gated_mlp %x, %wg, %wu, %wd
        : (tensor<1x7x576xf32>, tensor<1536x576xf32>, tensor<1536x576xf32>, tensor<576x1536xf32>)
        -> tensor<1x7x576xf32>
    ```
  }];
  let arguments = (ins Transformer_FloatTensor:$input, Transformer_FloatTensor:$gate_weight,
                       Transformer_FloatTensor:$up_weight, Transformer_FloatTensor:$down_weight,
                       DefaultValuedStrAttr<StrAttr, "silu">:$activation);
  let results = (outs Transformer_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $gate_weight `,` $up_weight `,` $down_weight attr-dict
    `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Sampling
//===----------------------------------------------------------------------===//

def Transformer_ArgMaxOp : Transformer_Op<"argmax", [InferTypeOpAdaptor]> {
  let summary = "Index of the largest element along the last axis";
  let description = [{
    Greedy sampling: for each row of the last axis, the index (i64) of its
    largest element; the first one on ties, as `torch.argmax` returns. The
    result drops the last axis.

    Example:

    ```mlir
    %tok = transformer.argmax %logits : tensor<1x49152xf32> -> tensor<1xi64>
    ```
  }];
  let arguments = (ins Transformer_FloatTensor:$input);
  let results = (outs RankedTensorOf<[I64]>:$result);
  let assemblyFormat = "$input attr-dict `:` type($input) `->` type($result)";
  let hasVerifier = 1;
}

#endif // KILN_TRANSFORMER_OPS
