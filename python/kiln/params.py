"""A compiled model's parameters: which checkpoint tensor each argument reads, and in what layout.

This is the part of a model graph that running needs and compiling does not: it has no MLIR in it, so a
saved model (`CompiledModel.save`) records it and `kiln.load` binds the weights from it alone, on a
machine that has the Kiln runtime but not the compiler.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .errors import KilnError
from .runtime.device import aligned_empty

# What a Param's `part` binds: the whole float32 tensor, or one array of its quantized blocks
# (see transformer.dequantize and loaders.gguf.QuantizedBlocks).
PART_DTYPES = {"": np.float32, "data": np.int8, "scales": np.float16, "mins": np.float16}


# Linears over fewer rows than this read quantized weights (transformer.dequantize fuses into them).
QUANTIZED_MAX_ROWS = 16


# The panel width of weights stored pre-packed: the N register tile of the CPU GEMM schedule
# (pipelines/schedules.py, packed_gemm), whose packing of such a weight folds away.
PANEL = 32


def panel_shape(shape) -> Optional[tuple]:
    """[N/PANEL, K, PANEL] for a weight W[N, K] with a whole number of PANEL-row panels, else None."""
    if len(shape) != 2 or shape[0] % PANEL:
        return None
    return (shape[0] // PANEL, shape[1], PANEL)


@dataclass(frozen=True)
class Param:
    """One parameter argument: the checkpoint tensor `source` (HF name), its shape in the IR, and an
    optional `prepare(array) -> array` for layouts that differ from the checkpoint's (e.g. GPT-2's
    fused, transposed Conv1D weights). With a `part` ("data", "scales" or "mins") it is that array
    of the tensor's stored quantized blocks instead of the float32 tensor. With a `panel` width w,
    the float32 weight W[N, K] is stored as [N/w, K, w] panels (see `panel_params`)."""

    name: str
    source: str
    shape: tuple
    prepare: Optional[Callable[[np.ndarray], np.ndarray]] = None
    part: str = ""
    panel: int = 0

    @property
    def dtype(self):
        return PART_DTYPES[self.part]

    def bind(self, tensor: Callable[[str], np.ndarray], blocks: Optional[Callable] = None) -> np.ndarray:
        if self.part:
            stored = blocks(self.source) if blocks is not None else None
            if stored is None:
                raise KilnError(f"tensor '{self.source}' is not stored in quantized blocks; the model was "
                                "built to read them (compile it again from this checkpoint)")
            array = getattr(stored, self.part)
        else:
            array = tensor(self.source)
        if self.prepare is not None:
            array = self.prepare(array)
        array = np.asarray(array)
        if array.dtype != self.dtype:
            array = aligned_copy(array, self.dtype)
        if self.panel:
            array = to_panels(array, self.panel, self.source)
        if tuple(array.shape) != tuple(self.shape):
            got = "x".join(map(str, array.shape))
            want = "x".join(map(str, self.shape))
            what = f"tensor '{self.source}'" + (f" ({self.part} of its quantized blocks)" if self.part else "")
            raise KilnError(f"{what} has shape {got}, the model's config needs {want}")
        return array if array.flags.c_contiguous else aligned_copy(array)


@dataclass
class ModelGraph:
    """The IR of a model and the parameters its entry points take.

    kind "decoder": entry points `prefill_<C>` (one per chunk size C), `decode` and `logits_<C>`, each
    `(ids[1,C] i64, positions[C] i64, start: index, rows[R] i64, *params, *caches) -> (logits[R,V], *caches)`,
    where `rows` picks the chunk rows whose logits are computed and each cache is updated in place.
    kind "encoder": `encode_<S>(ids[1,S] i64, token_types[1,S] i64, mask[1,S] f32, *params) -> hidden[1,S,H]`.
    """

    kind: str
    module: object  # mlir.ir.Module; None in a saved model's graph (graph_from_json)
    params: list
    cache_shapes: list = field(default_factory=list)
    entry_points: dict = field(default_factory=dict)  # name -> chunk (or sequence) length
    max_seq_len: int = 0
    vocab_size: int = 0
    hidden_size: int = 0

    def bind(self, tensor: Callable[[str], np.ndarray], blocks: Optional[Callable] = None) -> list:
        """The parameter arrays in argument order, read through `tensor(name)` (float32) and
        `blocks(name)` (quantized blocks, for parameters with a `part`)."""
        return [p.bind(tensor, blocks) for p in self.params]



def to_panels(weight: np.ndarray, width: int, source: str) -> np.ndarray:
    """W[N, K] -> [N/width, K, width] (see `panel_params`)."""
    if weight.ndim != 2 or weight.shape[0] % width:
        raise KilnError(f"tensor '{source}' has shape {'x'.join(map(str, weight.shape))}; "
                        f"the model stores it as panels of {width} rows")
    n, k = weight.shape
    return aligned_copy(weight.reshape(n // width, width, k).transpose(0, 2, 1))


def aligned_copy(array: np.ndarray, dtype=None) -> np.ndarray:
    """A C-contiguous, cache-line-aligned copy of `array` (as `dtype`), in huge pages when large: the
    layout kernels read fastest. Parameters that bind has to copy anyway get it; mmapped checkpoint
    tensors stay where they are."""
    out = aligned_empty(array.shape, dtype or array.dtype, huge_pages=True)
    out[...] = array
    return out




@dataclass(frozen=True)
class Conv1DColumns:
    """A `Param.prepare`: columns [start, stop) of the Conv1D tensor `source` (`[rows, cols]`, or
    `[cols]` for a bias), transposed to a linear `[out, in]` weight (GPT-2's fused `c_attn`). The
    full shape is checked before slicing, so a config that disagrees with the checkpoint is named
    rather than silently sliced."""

    source: str
    rows: int
    cols: int
    start: int
    stop: int
    transpose: bool

    def __call__(self, array) -> np.ndarray:
        array = np.asarray(array)
        want = (self.rows, self.cols) if self.transpose else (self.cols,)
        if tuple(array.shape) != want:
            got, need = "x".join(map(str, array.shape)), "x".join(map(str, want))
            raise KilnError(f"tensor '{self.source}' has shape {got}, the model's config needs {need}")
        if self.transpose:
            return np.ascontiguousarray(array[:, self.start:self.stop].T)
        return array[self.start:self.stop]


def param_to_json(p: Param) -> dict:
    d = {"name": p.name, "source": p.source, "shape": list(p.shape), "part": p.part, "panel": p.panel}
    if p.prepare is not None:
        if not isinstance(p.prepare, Conv1DColumns):
            raise KilnError(f"parameter '{p.name}' is prepared by {p.prepare!r}, which a saved model cannot record")
        d["conv1d_columns"] = [p.prepare.rows, p.prepare.cols, p.prepare.start, p.prepare.stop, p.prepare.transpose]
    return d


def param_from_json(d: dict) -> Param:
    columns = d.get("conv1d_columns")
    prepare = Conv1DColumns(d["source"], *columns) if columns else None
    return Param(d["name"], d["source"], tuple(d["shape"]), prepare, d["part"], d["panel"])


def graph_to_json(graph: ModelGraph) -> dict:
    """What `CompiledModel` needs of a graph besides its IR (see the module docstring)."""
    return {"kind": graph.kind, "params": [param_to_json(p) for p in graph.params],
            "cache_shapes": [list(s) for s in graph.cache_shapes], "entry_points": dict(graph.entry_points),
            "max_seq_len": graph.max_seq_len, "vocab_size": graph.vocab_size, "hidden_size": graph.hidden_size}


def graph_from_json(d: dict) -> ModelGraph:
    """The ModelGraph of a saved model, without its IR (`module` is None)."""
    return ModelGraph(d["kind"], None, [param_from_json(p) for p in d["params"]],
                      [tuple(s) for s in d["cache_shapes"]], dict(d["entry_points"]), d["max_seq_len"],
                      d["vocab_size"], d["hidden_size"])
