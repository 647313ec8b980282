"""Bad input: malformed IR, shapes and types the verifiers reject, builders with impossible shapes,
and wrong arguments to JitModule.invoke. Every case raises a Python exception with a useful message
(mlir.ir.MLIRError from parsing/building, kiln.KilnError from jit_compile/invoke); none crashes."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from mlir import ir

import kiln
from kiln import KilnError
from kiln.dialects import transformer
from kiln.jit import jit_compile
from reference import INDEX, T, build_module, jit

# ----------------------------------------------------------------------------------------------
# Malformed IR text
# ----------------------------------------------------------------------------------------------

MALFORMED = {
    "undeclared_value": ("func.func @f(%x: tensor<2xf32>) -> tensor<2xf32> { return %y : tensor<2xf32> }",
                         "use of undeclared SSA value"),
    "missing_comma": ("func.func @f(%x: tensor<2x4xf32>, %w: tensor<3x4xf32>) {\n"
                      "  %r = transformer.linear %x %w : (tensor<2x4xf32>, tensor<3x4xf32>) -> tensor<2x3xf32>\n"
                      "  return\n}", "expected ','"),
    "unknown_op": ("func.func @f(%x: tensor<2x4xf32>) {\n  %r = transformer.frobnicate %x : tensor<2x4xf32>\n"
                   "  return\n}", "custom op 'transformer.frobnicate' is unknown"),
    "truncated": ("func.func @f(%x: tensor<2x4xf32>) {\n  %r = transformer.silu %x : tensor<2x4xf32>",
                  "expected operation name"),
    "bad_element_type": ("func.func @f(%x: tensor<2x4xfloat>) { return }", "expected non-function type"),
    "not_mlir": ("this is not MLIR", "custom op 'this' is unknown"),
    "wrong_result_type": ("func.func @f(%x: tensor<2x4xf32>, %w: tensor<3x4xf32>) {\n"
                          "  %r = transformer.linear %x, %w : (tensor<2x4xf32>, tensor<3x4xf32>) -> tensor<2x5xf32>\n"
                          "  return\n}", "inferred type(s) 'tensor<2x3xf32>' are incompatible"),
    "bad_attribute_type": ("func.func @f(%x: tensor<2x4xf32>) {\n"
                           "  %r = transformer.softmax %x {axis = 1.5 : f32} : tensor<2x4xf32>\n  return\n}",
                           "axis"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_ir(case):
    text, message = MALFORMED[case]
    with ir.Context():
        with pytest.raises(ir.MLIRError) as parse_error:
            ir.Module.parse(text)
    assert message in str(parse_error.value)
    with pytest.raises(KilnError, match="invalid IR") as jit_error:
        jit_compile(text)
    assert message in str(jit_error.value)


# ----------------------------------------------------------------------------------------------
# IR the verifiers reject: each case is one op on function arguments of the given types, and the
# text (or all the texts of a tuple) the error must contain
# ----------------------------------------------------------------------------------------------


def op_text(arg_types, op):
    args = ", ".join(f"%a{i}: {t}" for i, t in enumerate(arg_types))
    return f"func.func @f({args}) {{\n  %r = {op}\n  return\n}}"


F = "tensor<2x7x13xf32>"
VERIFIER = {
    # linear / matmul
    "linear_in_features": ([F, "tensor<5x12xf32>"],
                           "transformer.linear %a0, %a1 : (tensor<2x7x13xf32>, tensor<5x12xf32>) -> tensor<2x7x5xf32>",
                           "input feature dimension (13) does not match weight dimension 1 (in_features = 12)"),
    "linear_bias_size": ([F, "tensor<5x13xf32>", "tensor<6xf32>"],
                         "transformer.linear %a0, %a1, %a2 : (tensor<2x7x13xf32>, tensor<5x13xf32>, tensor<6xf32>) -> tensor<2x7x5xf32>",
                         "bias size (6) does not match out_features (5)"),
    "linear_mixed_types": ([F, "tensor<5x13xf16>"],
                           "transformer.linear %a0, %a1 : (tensor<2x7x13xf32>, tensor<5x13xf16>) -> tensor<2x7x5xf32>",
                           "weight element type 'f16' does not match input element type 'f32'"),
    "linear_integer_input": (["tensor<2x13xi32>", "tensor<5x13xi32>"],
                             "transformer.linear %a0, %a1 : (tensor<2x13xi32>, tensor<5x13xi32>) -> tensor<2x5xi32>",
                             "must be ranked tensor of floating-point values"),
    "matmul_contraction": (["tensor<2x7x13xf32>", "tensor<2x12x5xf32>"],
                           "transformer.matmul %a0, %a1 : (tensor<2x7x13xf32>, tensor<2x12x5xf32>) -> tensor<2x7x5xf32>",
                           "contraction dimension of lhs (13) does not match rhs (12)"),
    "matmul_batch": (["tensor<2x7x13xf32>", "tensor<3x13x5xf32>"],
                     "transformer.matmul %a0, %a1 : (tensor<2x7x13xf32>, tensor<3x13x5xf32>) -> tensor<2x7x5xf32>",
                     "batch dimension 0 of lhs (2) does not match rhs (3)"),
    # attention
    "attention_heads_not_multiple": (["tensor<1x8x7x16xf32>", "tensor<1x3x7x16xf32>"],
                                     "transformer.attention %a0, %a1, %a1 : (tensor<1x8x7x16xf32>, tensor<1x3x7x16xf32>, tensor<1x3x7x16xf32>) -> tensor<1x8x7x16xf32>",
                                     "num_heads (8) is not a multiple of num_kv_heads (3)"),
    "attention_head_dim": (["tensor<1x4x7x16xf32>", "tensor<1x4x7x8xf32>"],
                           "transformer.attention %a0, %a1, %a1 : (tensor<1x4x7x16xf32>, tensor<1x4x7x8xf32>, tensor<1x4x7x8xf32>) -> tensor<1x4x7x8xf32>",
                           "head_dim of query (16) and key (8) differ"),
    "attention_mask_dim": (["tensor<2x4x7x16xf32>", "tensor<2x1x3x7xf32>"],
                           "transformer.attention %a0, %a0, %a0 mask(%a1) : (tensor<2x4x7x16xf32>, tensor<2x4x7x16xf32>, tensor<2x4x7x16xf32>, tensor<2x1x3x7xf32>) -> tensor<2x4x7x16xf32>",
                           "mask dimension 2 (3) is neither 1 nor q_len (7)"),
    "attention_mask_rank": (["tensor<2x4x7x16xf32>", "tensor<2x7xf32>"],
                            "transformer.attention %a0, %a0, %a0 mask(%a1) : (tensor<2x4x7x16xf32>, tensor<2x4x7x16xf32>, tensor<2x4x7x16xf32>, tensor<2x7xf32>) -> tensor<2x4x7x16xf32>",
                            "mask must have rank 4"),
    "attention_scale": (["tensor<1x4x7x16xf32>"],
                        "transformer.attention %a0, %a0, %a0 {scale = -1.0 : f64} : (tensor<1x4x7x16xf32>, tensor<1x4x7x16xf32>, tensor<1x4x7x16xf32>) -> tensor<1x4x7x16xf32>",
                        ("scale (-1", ") must be positive")),
    "attention_integer_query": (["tensor<1x4x7x16xi32>", "tensor<1x4x7x16xf32>"],
                                "transformer.attention %a0, %a1, %a1 : (tensor<1x4x7x16xi32>, tensor<1x4x7x16xf32>, tensor<1x4x7x16xf32>) -> tensor<1x4x7x16xi32>",
                                "must be ranked tensor of floating-point values"),
    "attention_float_offset": (["tensor<1x4x7x16xf32>", "f32"],
                               "transformer.attention %a0, %a0, %a0 offset(%a1) {causal} : (tensor<1x4x7x16xf32>, tensor<1x4x7x16xf32>, tensor<1x4x7x16xf32>, f32) -> tensor<1x4x7x16xf32>",
                               "must be index"),
    # rope
    "rope_odd_head_dim": (["tensor<1x2x7x13xf32>", "tensor<7xi64>"],
                          "transformer.rope %a0, %a1 : (tensor<1x2x7x13xf32>, tensor<7xi64>) -> tensor<1x2x7x13xf32>",
                          "head_dim (13) is odd"),
    "rope_rotary_dim_too_large": (["tensor<1x2x7x16xf32>", "tensor<7xi64>"],
                                  "transformer.rope %a0, %a1 {rotary_dim = 32 : i64} : (tensor<1x2x7x16xf32>, tensor<7xi64>) -> tensor<1x2x7x16xf32>",
                                  "rotary_dim (32) exceeds head_dim (16)"),
    "rope_rotary_dim_odd": (["tensor<1x2x7x16xf32>", "tensor<7xi64>"],
                            "transformer.rope %a0, %a1 {rotary_dim = 5 : i64} : (tensor<1x2x7x16xf32>, tensor<7xi64>) -> tensor<1x2x7x16xf32>",
                            "rotary_dim (5) must be positive and even"),
    "rope_attention_scaling_zero": (["tensor<1x2x7x16xf32>", "tensor<7xi64>"],
                                    "transformer.rope %a0, %a1 {attention_scaling = 0.0 : f64} : (tensor<1x2x7x16xf32>, tensor<7xi64>) -> tensor<1x2x7x16xf32>",
                                    "attention_scaling (0.000000e+00) must be positive and finite"),
    "rope_positions_seq": (["tensor<1x2x7x16xf32>", "tensor<6xi64>"],
                           "transformer.rope %a0, %a1 : (tensor<1x2x7x16xf32>, tensor<6xi64>) -> tensor<1x2x7x16xf32>",
                           "positions sequence dimension (6) does not match input dimension 2 (seq = 7)"),
    "rope_positions_rank": (["tensor<1x2x7x16xf32>", "tensor<1x1x7xi64>"],
                            "transformer.rope %a0, %a1 : (tensor<1x2x7x16xf32>, tensor<1x1x7xi64>) -> tensor<1x2x7x16xf32>",
                            "positions must have rank 1 ([seq]) or 2 ([batch, seq]), got rank 3"),
    "rope_float_positions": (["tensor<1x2x7x16xf32>", "tensor<7xf32>"],
                             "transformer.rope %a0, %a1 : (tensor<1x2x7x16xf32>, tensor<7xf32>) -> tensor<1x2x7x16xf32>",
                             "must be ranked tensor of signless integer values"),
    "rope_theta": (["tensor<1x2x7x16xf32>", "tensor<7xi64>"],
                   "transformer.rope %a0, %a1 {theta = 0.0 : f64} : (tensor<1x2x7x16xf32>, tensor<7xi64>) -> tensor<1x2x7x16xf32>",
                   ("theta (0", ") must be positive")),
    "rope_inv_freq_size": (["tensor<1x2x7x16xf32>", "tensor<7xi64>", "tensor<16xf32>"],
                           "transformer.rope %a0, %a1 inv_freq(%a2) : (tensor<1x2x7x16xf32>, tensor<7xi64>, tensor<16xf32>) -> tensor<1x2x7x16xf32>",
                           "inv_freq size (16) does not match rotary_dim / 2 (8)"),
    "rope_dynamic_head_dim": (["tensor<1x2x7x?xf32>", "tensor<7xi64>"],
                              "transformer.rope %a0, %a1 : (tensor<1x2x7x?xf32>, tensor<7xi64>) -> tensor<1x2x7x?xf32>",
                              "rotary_dim is required when head_dim is dynamic"),
    # norms
    "rms_norm_weight": ([F, "tensor<12xf32>"],
                        "transformer.rms_norm %a0, %a1 : (tensor<2x7x13xf32>, tensor<12xf32>) -> tensor<2x7x13xf32>",
                        "weight size (12) does not match the normalized dimension (13)"),
    "rms_norm_eps": ([F],
                     "transformer.rms_norm %a0 {eps = -1.0e-6 : f64} : (tensor<2x7x13xf32>) -> tensor<2x7x13xf32>",
                     "must be non-negative"),
    "rms_norm_integer": (["tensor<2x13xi64>"],
                         "transformer.rms_norm %a0 : (tensor<2x13xi64>) -> tensor<2x13xi64>",
                         "must be ranked tensor of floating-point values"),
    "layer_norm_bias": ([F, "tensor<13xf32>", "tensor<7xf32>"],
                        "transformer.layer_norm %a0 weight(%a1) bias(%a2) : (tensor<2x7x13xf32>, tensor<13xf32>, tensor<7xf32>) -> tensor<2x7x13xf32>",
                        "bias size (7) does not match the normalized dimension (13)"),
    # activations, mlp, sampling
    "softmax_axis": ([F], "transformer.softmax %a0 {axis = 3 : i64} : tensor<2x7x13xf32>",
                     "axis (3) is out of range for rank 3"),
    "softmax_negative_axis": ([F], "transformer.softmax %a0 {axis = -4 : i64} : tensor<2x7x13xf32>",
                              "axis (-4) is out of range for rank 3"),
    "gelu_approximate": ([F], 'transformer.gelu %a0 {approximate = "fast"} : tensor<2x7x13xf32>',
                         'approximate must be "none" or "tanh", got "fast"'),
    "silu_integer": (["tensor<4xi32>"], "transformer.silu %a0 : tensor<4xi32>",
                     "must be ranked tensor of floating-point values"),
    "gated_mlp_activation": ([F, "tensor<8x13xf32>", "tensor<13x8xf32>"],
                             'transformer.gated_mlp %a0, %a1, %a1, %a2 {activation = "relu"} : (tensor<2x7x13xf32>, tensor<8x13xf32>, tensor<8x13xf32>, tensor<13x8xf32>) -> tensor<2x7x13xf32>',
                             'activation must be "silu", "gelu" or "gelu_tanh", got "relu"'),
    "gated_mlp_down": ([F, "tensor<8x13xf32>", "tensor<13x9xf32>"],
                       "transformer.gated_mlp %a0, %a1, %a1, %a2 : (tensor<2x7x13xf32>, tensor<8x13xf32>, tensor<8x13xf32>, tensor<13x9xf32>) -> tensor<2x7x13xf32>",
                       "down_weight dimension 1 (9) does not match ffn (8)"),
    "argmax_empty": (["tensor<3x0xf32>"], "transformer.argmax %a0 : tensor<3x0xf32> -> tensor<3xi64>",
                     "the reduced (last) dimension is empty"),
    # embedding, kv cache, heads
    "embedding_float_indices": (["tensor<10x4xf32>", "tensor<3xf32>"],
                                "transformer.embedding %a0[%a1] : tensor<10x4xf32>, tensor<3xf32> -> tensor<3x4xf32>",
                                "must be ranked tensor of signless integer values"),
    "embedding_integer_table": (["tensor<10x4xi32>", "tensor<3xi64>"],
                                "transformer.embedding %a0[%a1] : tensor<10x4xi32>, tensor<3xi64> -> tensor<3x4xi32>",
                                "must be ranked tensor of floating-point values"),
    "kv_cache_update_too_long": (["tensor<1x2x8x16xf32>", "tensor<1x2x9x16xf32>", "index"],
                                 "transformer.kv_cache_update %a0, %a1 at %a2 : tensor<1x2x8x16xf32>, tensor<1x2x9x16xf32> -> tensor<1x2x8x16xf32>",
                                 "update length (9) exceeds cache length (max_seq = 8)"),
    "kv_cache_update_head_dim": (["tensor<1x2x8x16xf32>", "tensor<1x2x1x8xf32>", "index"],
                                 "transformer.kv_cache_update %a0, %a1 at %a2 : tensor<1x2x8x16xf32>, tensor<1x2x1x8xf32> -> tensor<1x2x8x16xf32>",
                                 "update dimension 3 (head_dim = 8) does not match cache (16)"),
    "split_heads_not_multiple": ([F], "transformer.split_heads %a0 {num_heads = 4 : i64} : tensor<2x7x13xf32> -> tensor<2x4x7x3xf32>",
                                 "feature dimension (13) is not a multiple of num_heads (4)"),
    "merge_heads_rank": ([F], "transformer.merge_heads %a0 : tensor<2x7x13xf32> -> tensor<2x7x13xf32>",
                         "input must have rank 4"),
}


@pytest.mark.parametrize("case", list(VERIFIER))
def test_verifier_rejects(case):
    arg_types, op, messages = VERIFIER[case]
    messages = (messages,) if isinstance(messages, str) else messages
    text = op_text(arg_types, op)
    with ir.Context():
        with pytest.raises(ir.MLIRError) as parse_error:
            ir.Module.parse(text)
    with pytest.raises(KilnError, match="invalid IR") as jit_error:
        jit_compile(text)
    for message in messages:
        assert message in str(parse_error.value)
        assert message in str(jit_error.value)


def test_verifier_accepts_the_valid_variants():
    """Guards the table above: the same ops with consistent shapes parse and verify."""
    ok = [
        (["tensor<2x7x13xf32>", "tensor<5x13xf32>"],
         "transformer.linear %a0, %a1 : (tensor<2x7x13xf32>, tensor<5x13xf32>) -> tensor<2x7x5xf32>"),
        (["tensor<1x9x7x16xf32>", "tensor<1x3x7x16xf32>"],
         "transformer.attention %a0, %a1, %a1 : (tensor<1x9x7x16xf32>, tensor<1x3x7x16xf32>, tensor<1x3x7x16xf32>) -> tensor<1x9x7x16xf32>"),
        (["tensor<1x2x7x13xf32>", "tensor<7xi64>"],
         "transformer.rope %a0, %a1 {rotary_dim = 8 : i64} : (tensor<1x2x7x13xf32>, tensor<7xi64>) -> tensor<1x2x7x13xf32>"),
        (["tensor<2x7x13xf32>"], "transformer.softmax %a0 {axis = -3 : i64} : tensor<2x7x13xf32>"),
    ]
    with ir.Context():
        for arg_types, op in ok:
            ir.Module.parse(op_text(arg_types, op)).operation.verify()


# ----------------------------------------------------------------------------------------------
# Builders
# ----------------------------------------------------------------------------------------------

# name: (argument specs, builder, message). Shapes the result type cannot be inferred from fail when
# the op is created ("Operation creation failed").
IMPOSSIBLE = {
    "linear_weight_rank": ([T((2, 13)), T((5, 13, 1))], lambda x, w: transformer.linear(x, w),
                           "weight must have rank 2 ([out_features, in_features]), got rank 3"),
    "linear_index_input": ([INDEX, T((5, 13))], lambda i, w: transformer.linear(i, w),
                           "input must be a ranked tensor, got 'index'"),
    "split_heads_not_multiple": ([T((2, 7, 13))], lambda x: transformer.split_heads(x, 4),
                                 "feature dimension (13) is not a multiple of num_heads (4)"),
    "split_heads_zero_heads": ([T((2, 7, 12))], lambda x: transformer.split_heads(x, 0),
                               "num_heads (0) must be positive"),
    "split_heads_rank": ([T((7, 12))], lambda x: transformer.split_heads(x, 3),
                         "input must have rank 3 ([batch, seq, heads * head_dim]), got rank 2"),
    "matmul_rank_mismatch": ([T((2, 7, 13)), T((13, 5))], lambda a, b: transformer.matmul(a, b),
                             "lhs rank (3) does not match rhs rank (2)"),
    "matmul_rank1": ([T((13,)), T((13,))], lambda a, b: transformer.matmul(a, b),
                     "lhs must have rank >= 2, got rank 1"),
    "attention_query_rank": ([T((4, 7, 16))], lambda q: transformer.attention(q, q, q),
                             "query must have rank 4 ([batch, num_heads, q_len, head_dim]), got rank 3"),
    "rope_input_rank": ([T((2, 7, 16)), T((7,), "i64")], lambda x, p: transformer.rope(x, p),
                        "input must have rank 4 ([batch, heads, seq, head_dim]), got rank 3"),
    "kv_cache_rank": ([T((2, 8, 16)), T((2, 1, 16)), INDEX], lambda c, u, p: transformer.kv_cache_update(c, u, p),
                      "cache must have rank 4"),
    "embedding_table_rank": ([T((10,)), T((3,), "i64")], lambda t, i: transformer.embedding(t, i),
                             "table must have rank 2 ([vocab, dim]), got rank 1"),
    "argmax_scalar_tensor": ([T(())], lambda x: transformer.argmax(x), "input must have rank >= 1, got rank 0"),
    "gated_mlp_down_rank": ([T((2, 13)), T((8, 13)), T((13,))],
                            lambda x, g, d: transformer.gated_mlp(x, g, g, d),
                            "down_weight must have rank 2 ([hidden, ffn]), got rank 1"),
}


@pytest.mark.parametrize("case", list(IMPOSSIBLE))
def test_builder_impossible_shapes(case):
    specs, builder, message = IMPOSSIBLE[case]
    with pytest.raises(ir.MLIRError, match="Operation creation failed") as error:
        build_module(specs, builder)
    assert message in str(error.value)


# Shapes the result type can be inferred from but the verifier rejects: the builder succeeds, the
# module does not verify and jit_compile reports the verifier's message.
BUILT_INVALID = {
    "linear_in_features": ([T((2, 7, 13)), T((5, 12))], lambda x, w: transformer.linear(x, w),
                           "input feature dimension (13) does not match weight dimension 1 (in_features = 12)"),
    "attention_heads_not_multiple": ([T((1, 8, 7, 16)), T((1, 3, 7, 16))],
                                     lambda q, k: transformer.attention(q, k, k, causal=True),
                                     "num_heads (8) is not a multiple of num_kv_heads (3)"),
    "silu_integer": ([T((4, 5), "i32")], lambda x: transformer.silu(x),
                     "operand #0 must be ranked tensor of floating-point values, but got 'tensor<4x5xi32>'"),
    "rms_norm_integer_weight": ([T((4, 5)), T((5,), "i64")], lambda x, w: transformer.rms_norm(x, weight=w),
                                "must be ranked tensor of floating-point values"),
    "rope_bad_rotary_dim": ([T((1, 2, 7, 16)), T((7,), "i64")], lambda x, p: transformer.rope(x, p, rotary_dim=7),
                            "rotary_dim (7) must be positive and even"),
    "gated_mlp_hidden": ([T((2, 13)), T((8, 12)), T((13, 8))], lambda x, g, d: transformer.gated_mlp(x, g, g, d),
                         "gate_weight dimension 1 (12) does not match the input feature dimension (13)"),
    "softmax_axis": ([T((2, 3))], lambda x: transformer.softmax(x, axis=2), "axis (2) is out of range for rank 2"),
}


@pytest.mark.parametrize("case", list(BUILT_INVALID))
def test_builder_verifier_errors(case):
    specs, builder, message = BUILT_INVALID[case]
    module = build_module(specs, builder)
    with module.context:
        with pytest.raises(ir.MLIRError, match="Verification failed") as verify_error:
            module.operation.verify()
    assert message in str(verify_error.value)
    with pytest.raises(KilnError, match="invalid IR") as jit_error:
        jit_compile(module)
    assert message in str(jit_error.value)


def test_attention_without_scale_needs_static_head_dim():
    """The default scale 1/sqrt(head_dim) needs head_dim: the verifier asks for an explicit scale."""
    specs = [T((1, 2, 3, None))]
    module = build_module(specs, lambda q: transformer.attention(q, q, q), static=[(1, 2, 3, 4)])
    with pytest.raises(KilnError, match="scale is required when head_dim is dynamic") as error:
        jit_compile(module)
    assert "transformer.attention" in str(error.value)


def test_builders_do_not_crash_the_interpreter():
    """Non-tensor and unranked operands to every builder, in a child interpreter so that a crash
    (a failed cast in C++) fails this test instead of killing the test run."""
    script = textwrap.dedent(
        """
        import kiln
        from mlir import ir
        from mlir.dialects import func
        from kiln.dialects import transformer as t

        calls = {
            "embedding": lambda a, b: t.embedding(a, b), "linear": lambda a, b: t.linear(a, b),
            "matmul": lambda a, b: t.matmul(a, b), "rms_norm": lambda a, b: t.rms_norm(a, weight=b),
            "layer_norm": lambda a, b: t.layer_norm(a, weight=b), "rope": lambda a, b: t.rope(a, b),
            "attention": lambda a, b: t.attention(a, b, b), "kv_cache_update": lambda a, b: t.kv_cache_update(a, b, b),
            "split_heads": lambda a, b: t.split_heads(a, 2), "merge_heads": lambda a, b: t.merge_heads(a),
            "softmax": lambda a, b: t.softmax(a), "silu": lambda a, b: t.silu(a), "gelu": lambda a, b: t.gelu(a),
            "gated_mlp": lambda a, b: t.gated_mlp(a, b, b, b), "argmax": lambda a, b: t.argmax(a),
        }
        raised = 0
        with ir.Context(), ir.Location.unknown():
            f32, idx = ir.F32Type.get(), ir.IndexType.get()
            kinds = [idx, f32, ir.UnrankedTensorType.get(f32), ir.RankedTensorType.get([2, 4], f32)]
            for name, call in calls.items():
                for a in kinds:
                    for b in kinds:
                        module = ir.Module.create()
                        with ir.InsertionPoint(module.body):
                            fn = func.FuncOp("f", ir.FunctionType.get([a, b], []))
                            block = fn.add_entry_block()
                            with ir.InsertionPoint(block):
                                try:
                                    call(*block.arguments)
                                    func.ReturnOp([])
                                    module.operation.verify()
                                except ir.MLIRError as e:
                                    raised += 1
                                    assert str(e), name
        print("raised", raised)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"child exited with {proc.returncode}:\n{proc.stderr[-3000:]}"
    # Of the 15 x 16 calls only linear(2x4, 2x4) and the unary ops on a 2x4 tensor are valid.
    assert int(proc.stdout.split()[-1]) == 15 * 16 - 17, proc.stdout


# ----------------------------------------------------------------------------------------------
# JitModule.invoke
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jm():
    """@f(x: tensor<2x3xf32>, ids: tensor<?xi64>, table: tensor<5x3xf32>, pos: index)."""

    def body(x, ids, table, pos):
        transformer.embedding(table, ids)  # unused: only gives @f a dynamically shaped argument
        return transformer.silu(x)

    return jit([T((2, 3)), T((None,), "i64"), T((5, 3)), INDEX], body)


def good_args():
    return [np.ones((2, 3), np.float32), np.arange(4, dtype=np.int64), np.ones((5, 3), np.float32), 1]


@pytest.mark.parametrize(
    "position,value,message",
    [
        (0, np.ones((2, 3), np.float64), "argument 0 of @f (expects 2x3 float32): got dtype float64"),
        (0, np.ones((2, 3), np.float16), "argument 0 of @f (expects 2x3 float32): got dtype float16"),
        (0, np.ones((3, 2), np.float32), "argument 0 of @f (expects 2x3 float32): got shape 3x2"),
        (0, np.ones((2, 3, 1), np.float32), "argument 0 of @f (expects 2x3 float32): got shape 2x3x1"),
        (0, np.float32(1.0), "argument 0 of @f (expects 2x3 float32): got shape scalar"),
        (0, [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], "argument 0 of @f (expects 2x3 float32): got dtype float64"),
        (1, np.arange(4, dtype=np.int32), "argument 1 of @f (expects ? int64): got dtype int32"),
        (1, np.zeros((2, 2), np.int64), "argument 1 of @f (expects ? int64): got shape 2x2"),
        (2, np.ones((5, 4), np.float32), "argument 2 of @f (expects 5x3 float32): got shape 5x4"),
        (3, np.array([1, 2]), "argument 3 of @f (expects int64)"),
        (3, 1.5, "argument 3 of @f (expects int64)"),
        (3, None, "argument 3 of @f (expects int64)"),
        (3, "1", "argument 3 of @f (expects int64)"),
    ],
)
def test_invoke_wrong_argument(jm, position, value, message):
    args = good_args()
    args[position] = value
    with pytest.raises(KilnError) as error:
        jm.invoke("f", *args)
    assert message in str(error.value)


@pytest.mark.parametrize("count", [0, 3, 5])
def test_invoke_wrong_argument_count(jm, count):
    args = (good_args() + [1])[:count]
    with pytest.raises(KilnError, match=f"@f takes 4 arguments, got {count}"):
        jm.invoke("f", *args)


def test_invoke_unknown_function(jm):
    with pytest.raises(KilnError, match="no public function @g; the module has: f"):
        jm.invoke("g", *good_args())


def test_invoke_still_works_after_errors(jm):
    args = good_args()
    for position, bad in [(0, args[0].astype(np.float64)), (3, None)]:
        with pytest.raises(KilnError):
            jm.invoke("f", *args[:position], bad, *args[position + 1 :])
    x = np.linspace(-2, 2, 6, dtype=np.float32).reshape(2, 3)
    (y,) = jm.invoke("f", x, *args[1:])
    np.testing.assert_allclose(y, x / (1 + np.exp(-x.astype(np.float64))), rtol=1e-6, atol=1e-6)


def test_invoke_dynamic_result_is_rejected():
    """The JIT allocates results itself, so a result of dynamic shape must be cast to static."""
    jm = jit([T((None,))], lambda x: transformer.silu(x))
    with pytest.raises(KilnError, match=r"result 0 of @f \(\? float32\) must have a static shape"):
        jm.invoke("f", np.ones(3, np.float32))


def test_boolean_tensors_between_kernels_are_refused_not_a_crash():
    """MLIR 22 asserts (aborting the process) when lowering stores of i1 buffers: Kiln refuses them
    at the dispatch stage. A comparison fused into its select stays a scalar and compiles."""
    import numpy as np

    with pytest.raises(KilnError, match=r"boolean tensor \(tensor<4xi1>\) between kernels.*use i8"):
        kiln.compile("""func.func @f(%a: tensor<4xf32>, %b: tensor<4xf32>) -> tensor<4xi1> {
          %c = arith.cmpf olt, %a, %b : tensor<4xf32>
          return %c : tensor<4xi1>
        }""")
    program = kiln.compile("""func.func @g(%a: tensor<4xf32>, %b: tensor<4xf32>) -> tensor<4xf32> {
      %c = arith.cmpf olt, %a, %b : tensor<4xf32>
      %s = arith.select %c, %a, %b : tensor<4xi1>, tensor<4xf32>
      return %s : tensor<4xf32>
    }""")
    a = np.array([1.5, 5.0, -2.0, 8.0], np.float32)
    b = np.array([3.0, 4.0, -2.5, 1.0], np.float32)
    np.testing.assert_array_equal(program.g(a, b)[0], np.minimum(a, b))
