"""What an architecture module produces: IR in the transformer dialect plus how to bind its parameters.

A `ModelGraph` is independent of any weight file: its `params` name the checkpoint tensors (Hugging Face
names) that become the entry points' parameter arguments, so the same graph compiles once and runs with
the weights mmapped from the checkpoint.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from mlir import ir
from mlir.dialects import linalg, tensor

from kiln.dialects import transformer
from kiln.errors import KilnError
from kiln.params import PANEL, QUANTIZED_MAX_ROWS, ModelGraph, Param, panel_shape


def quantized_params(params: list, formats: dict) -> list:
    """For each 2-D parameter whose source `formats` maps to a block format ("q4_0", "q4_1",
    "q8_0"): the arrays of its stored blocks, as parameters "<name>.data", ".scales" (and ".mins"
    for q4_1), which `linear_weight` turns back into the weight."""
    quantized = []
    for p in params:
        fmt = formats.get(p.source)
        if fmt is None or len(p.shape) != 2:
            continue
        n, k = p.shape
        if k % 32:
            raise KilnError(f"tensor '{p.source}': {fmt} blocks need in_features divisible by 32, got {k}")
        quantized.append(Param(f"{p.name}.data", p.source, (n, k // 32, 32 if fmt == "q8_0" else 16), part="data"))
        quantized.append(Param(f"{p.name}.scales", p.source, (n, k // 32), part="scales"))
        if fmt == "q4_1":
            quantized.append(Param(f"{p.name}.mins", p.source, (n, k // 32), part="mins"))
    return quantized


def panel_params(params: list) -> list:
    """For each 2-D parameter with a whole number of PANEL-row panels: the same weight stored as
    panels, parameter "<name>.panels" of shape [N/PANEL, K, PANEL] (panel[j, k, i] = W[j*PANEL + i, k]),
    which GEMM-shaped linears (`linear_weight` over QUANTIZED_MAX_ROWS or more rows) read. The
    packing happens once, when the weights are bound, instead of in every call."""
    return [Param(f"{p.name}.panels", p.source, panel_shape(p.shape), prepare=p.prepare, panel=PANEL)
            for p in params if not p.part and not p.panel and panel_shape(p.shape)]


def without_unused(params: list) -> list:
    """`params` without the float32 weights no linear reads: those with both quantized blocks (for
    the few-row linears) and panels (for the others)."""
    names = {p.name for p in params}
    return [p for p in params
            if p.part or p.panel or not ({f"{p.name}.data", f"{p.name}.panels"} <= names)]


def linear_weight(weights: dict, name: str, rows: int):
    """The weight value a linear over `rows` rows uses: the dequantized blocks of `name` when it has
    them (see `quantized_params`) and the linear is decode-shaped; its panels, unpacked (a no-op in
    the packed GEMM), when it has them and the linear is GEMM-shaped; else the float32 parameter."""
    if rows >= QUANTIZED_MAX_ROWS:
        panels = weights.get(f"{name}.panels")
        return weights[name] if panels is None else unpanel(panels)
    data = weights.get(f"{name}.data")
    if data is None:
        return weights[name]
    mins = weights.get(f"{name}.mins")
    shape = ir.RankedTensorType(data.type).shape
    fmt = "q8_0" if shape[2] == 32 else ("q4_1" if mins is not None else "q4_0")
    return transformer.dequantize(data, weights[f"{name}.scales"], fmt, mins=mins)


def unpanel(panels):
    """W[N, K] from its [N/w, K, w] panels (linalg.unpack): what a linear over a weight stored as panels
    reads; the packed GEMM schedule folds it into its own packing of W."""
    blocks, k, width = ir.RankedTensorType(panels.type).shape
    empty = tensor.empty([blocks * width, k], ir.F32Type.get())
    return linalg.unpack(panels, empty, inner_dims_pos=[0], inner_tiles=[width])


def config_int(config: dict, *names: str) -> int:
    """The integer under the first of `names` that `config` has (HF configs spell some keys two ways),
    or a KilnError naming the key the model type needs."""
    for name in names:
        if config.get(name) is not None:
            return int(config[name])
    raise KilnError(f"{config.get('model_type')} config lacks '{names[0]}'")


# KV caches hold max_seq_len rows rounded up to a multiple of this, so attention's reductions over the
# cache split into vectors of 8 (a prime length such as 257 runs one element at a time on GPUs). Rows
# past max_seq_len are never written; attention masks them like any unwritten row.
CACHE_ROWS_MULTIPLE = 8


def cache_rows(max_seq_len: int) -> int:
    return -(-max_seq_len // CACHE_ROWS_MULTIPLE) * CACHE_ROWS_MULTIPLE


def decoder_graph(params: list, cache_shape: tuple, layers: int, max_seq_len: int, vocab: int, hidden: int,
                  chunks, logits_chunk: int, entry_point: Callable) -> ModelGraph:
    """The ModelGraph every decoder family shares: entry points `decode`, `prefill_<C>` per chunk size
    C > 1 and `logits_<C>`, each built by `entry_point(name, chunk, rows)` in a new module, with one
    K and one V cache of `cache_shape` per layer."""
    entries = {"decode": (1, 1)}
    entries.update({f"prefill_{c}": (c, 1) for c in chunks if c > 1})
    entries[f"logits_{logits_chunk}"] = (logits_chunk, logits_chunk)
    module = ir.Module.create()
    with ir.InsertionPoint(module.body):
        for name, (chunk, rows) in entries.items():
            entry_point(name, chunk, rows)
    return ModelGraph(
        kind="decoder",
        module=module,
        params=params,
        cache_shapes=[cache_shape] * (2 * layers),
        entry_points={name: chunk for name, (chunk, _) in entries.items()},
        max_seq_len=max_seq_len,
        vocab_size=vocab,
        hidden_size=hidden,
    )


# Decoder entry points take (ids, positions, start, rows) before the parameters, then the caches.
DECODER_INPUTS = 4


def decoder_arg_types(params: list, cache_shape: tuple, layers: int, chunk: int, rows: int) -> list:
    """Argument types of a decoder entry point (see ModelGraph)."""
    types = [i64_tensor((1, chunk)), i64_tensor((chunk,)), ir.IndexType.get(), i64_tensor((rows,))]
    types += [tensor_type(p.shape, p.dtype) for p in params]
    return types + [f32_tensor(cache_shape)] * (2 * layers)


def split_decoder_args(params: list, rest) -> tuple:
    """(name -> parameter value, [K0, V0, K1, V1, ...]) from the arguments after the first four."""
    return dict(zip((p.name for p in params), rest[: len(params)])), list(rest[len(params):])


def tensor_type(shape, dtype) -> ir.RankedTensorType:
    element = {np.float32: ir.F32Type, np.float16: ir.F16Type}.get(dtype)
    element = element.get() if element else ir.IntegerType.get_signless(np.dtype(dtype).itemsize * 8)
    return ir.RankedTensorType.get(tuple(shape), element)


def f32_tensor(shape) -> ir.RankedTensorType:
    return ir.RankedTensorType.get(tuple(shape), ir.F32Type.get())


def i64_tensor(shape) -> ir.RankedTensorType:
    return ir.RankedTensorType.get(tuple(shape), ir.IntegerType.get_signless(64))


def set_cache_aliases(func, first_cache_arg: int, first_cache_result: int, count: int) -> None:
    """Marks results `first_cache_result + i` as in-place updates of arguments `first_cache_arg + i`
    (`kiln.updates_arg`): the compiler writes them into the argument's buffer, and the runtime returns
    that buffer."""
    ftype = ir.FunctionType(ir.TypeAttr(func.attributes["function_type"]).value)
    attrs = []
    for j in range(len(ftype.results)):
        if first_cache_result <= j < first_cache_result + count:
            arg = first_cache_arg + (j - first_cache_result)
            attrs.append(ir.DictAttr.get({"kiln.updates_arg": ir.IntegerAttr.get(ir.IntegerType.get_signless(64), arg)}))
        else:
            attrs.append(ir.DictAttr.get({}))
    func.attributes["res_attrs"] = ir.ArrayAttr.get(attrs)
