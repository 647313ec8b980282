"""Example programs written in the `transformer` dialect from Python: a Llama-style decoder stack.

Used by `make run` (kiln.demo) and `kiln bench`, with its float64 reference. The weights are function
arguments (as in a compiled model): `@forward(x, positions, *layer_weights) -> y`, where the layer
weights come layer by layer in `LlamaStackConfig.weight_shapes()` order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from mlir import ir
from mlir.dialects import arith, func

from . import reference as ref
from .dialects import transformer
from .models.graph import unpanel
from .params import PANEL, panel_shape, to_panels


@dataclass(frozen=True)
class LlamaStackConfig:
    """Shapes of a stack of decoder blocks (defaults: a small GQA block like SmolLM's, scaled down)."""

    hidden: int = 256
    num_heads: int = 8
    num_kv_heads: int = 2
    ffn: int = 704
    seq: int = 32
    batch: int = 1
    num_layers: int = 1
    rope_theta: float = 10000.0
    eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.hidden // self.num_heads

    def weight_shapes(self) -> dict:
        """Shapes of one layer's weights, in argument order."""
        kv = self.num_kv_heads * self.head_dim
        return {
            "attn_norm": (self.hidden,),
            "wq": (self.hidden, self.hidden),
            "wk": (kv, self.hidden),
            "wv": (kv, self.hidden),
            "wo": (self.hidden, self.hidden),
            "mlp_norm": (self.hidden,),
            "w_gate": (self.ffn, self.hidden),
            "w_up": (self.ffn, self.hidden),
            "w_down": (self.hidden, self.ffn),
        }


def build_llama_stack(cfg: LlamaStackConfig, panels: bool = False) -> ir.Module:
    """`@forward(x, positions, *weights) -> y` in the transformer dialect (in the current Context). With
    `panels`, linear weights with a whole number of 32-row panels are arguments in the layout the CPU
    GEMM reads, [N/32, K, 32] (see `flat_weights`), packed once by the caller instead of per call."""
    f32 = ir.F32Type.get()
    x_type = ir.RankedTensorType.get((cfg.batch, cfg.seq, cfg.hidden), f32)
    pos_type = ir.RankedTensorType.get((cfg.seq,), ir.IntegerType.get_signless(64))
    shapes = [_stored_shape(s, panels) for s in cfg.weight_shapes().values()]
    layer_types = [ir.RankedTensorType.get(s, f32) for s in shapes]
    per_layer = len(layer_types)
    module = ir.Module.create()
    with ir.InsertionPoint(module.body):

        @func.FuncOp.from_py_func(x_type, pos_type, *(layer_types * cfg.num_layers), name="forward")
        def forward(x, positions, *weights):
            weights = [unpanel(w) if len(s) == 3 else w for w, s in zip(weights, shapes * cfg.num_layers)]
            for layer in range(cfg.num_layers):
                x = _decoder_block(cfg, x, positions, *weights[layer * per_layer : (layer + 1) * per_layer])
            return x

    return module


def _stored_shape(shape: tuple, panels: bool) -> tuple:
    return (panels and panel_shape(shape)) or shape


def _decoder_block(cfg, x, positions, attn_norm, wq, wk, wv, wo, mlp_norm, w_gate, w_up, w_down):
    h = transformer.rms_norm(x, weight=attn_norm, eps=cfg.eps)
    q = transformer.split_heads(transformer.linear(h, wq), cfg.num_heads)
    k = transformer.split_heads(transformer.linear(h, wk), cfg.num_kv_heads)
    v = transformer.split_heads(transformer.linear(h, wv), cfg.num_kv_heads)
    q = transformer.rope(q, positions, theta=cfg.rope_theta)
    k = transformer.rope(k, positions, theta=cfg.rope_theta)
    o = transformer.attention(q, k, v, causal=True)
    x = arith.addf(x, transformer.linear(transformer.merge_heads(o), wo))
    h = transformer.rms_norm(x, weight=mlp_norm, eps=cfg.eps)
    return arith.addf(x, transformer.gated_mlp(h, w_gate, w_up, w_down))


def reference_llama_stack(cfg: LlamaStackConfig, x, positions, layers: list) -> np.ndarray:
    """float64 reference; `layers` is a list of per-layer weight dicts."""
    for w in layers:
        h = ref.rms_norm(x, w["attn_norm"], cfg.eps)
        q = ref.rope(ref.split_heads(ref.linear(h, w["wq"]), cfg.num_heads), positions, theta=cfg.rope_theta)
        k = ref.rope(ref.split_heads(ref.linear(h, w["wk"]), cfg.num_kv_heads), positions, theta=cfg.rope_theta)
        v = ref.split_heads(ref.linear(h, w["wv"]), cfg.num_kv_heads)
        x = x + ref.linear(ref.merge_heads(ref.attention(q, k, v, causal=True)), w["wo"])
        h = ref.rms_norm(x, w["mlp_norm"], cfg.eps)
        x = x + ref.gated_mlp(h, w["w_gate"], w["w_up"], w["w_down"])
    return x


def random_stack_inputs(cfg: LlamaStackConfig, rng: np.random.Generator):
    """(x, positions, layers): activations, positions 0..seq-1 and per-layer weight dicts."""
    x = rng.standard_normal((cfg.batch, cfg.seq, cfg.hidden)).astype(np.float32)
    positions = np.arange(cfg.seq, dtype=np.int64)
    layers = []
    for _ in range(cfg.num_layers):
        weights = {}
        for name, shape in cfg.weight_shapes().items():
            if name.endswith("norm"):
                weights[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
            else:  # scaled like a trained layer so activations stay O(1)
                weights[name] = (rng.standard_normal(shape) / np.sqrt(shape[1])).astype(np.float32)
        layers.append(weights)
    return x, positions, layers


def flat_weights(layers: list, panels: bool = False) -> list:
    """The weight arguments of @forward, layer by layer (see `stored_weights`)."""
    return stored_weights([w for layer in layers for w in layer.values()], panels)


def stored_weights(weights: list, panels: bool) -> list:
    """@forward's weight arguments as `build_llama_stack(cfg, panels)` takes them: with `panels`, the
    linear weights it reads as panels packed once here."""
    return [to_panels(w, PANEL, "weight") if panels and panel_shape(w.shape) else w for w in weights]
