"""The PyTorch frontend: plain nn.Modules (Llama block, GPT-2 block, BERT layer, a GeGLU LM head)
compiled through torch.export + torch-mlir (child process) + raising to transformer ops, checked
against PyTorch in float64 on fresh random inputs; the FX-level raising on its own; and the errors
(unsupported op, dynamic shape, child crash, child timeout)."""

import importlib.util
import os
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if importlib.util.find_spec("torch_mlir") is None:  # never imported here: it embeds a second MLIR
    pytest.skip("torch-mlir is not installed", allow_module_level=True)

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from kiln.errors import KilnError  # noqa: E402
from kiln.frontends.torch import compile_module, examples, importer, raising  # noqa: E402

RTOL = 2e-5  # max |kiln - torch64| / max |torch64|, f32 compute


def _reference(module, *inputs):
    """The module's output in float64 (a copy: the compiled module keeps its f32 weights)."""
    import copy

    ref = copy.deepcopy(module).double()
    with torch.no_grad():
        out = ref(*[t.double() if t.is_floating_point() else t for t in inputs])
    return out.numpy()


def _rel_err(got, want) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def _fresh(rng, *shape):
    return torch.from_numpy(rng.standard_normal(shape).astype(np.float32))


def _ops(compiled):
    return sorted(r.op for r in compiled.raised)


@pytest.fixture(scope="module")
def llama():
    module = examples.seeded(examples.LlamaBlock, seed=1)
    return module, compile_module(module, (torch.zeros(2, 13, 120),))


@pytest.fixture(scope="module")
def gpt2():
    module = examples.seeded(examples.GPT2Block, seed=2)
    return module, compile_module(module, (torch.zeros(2, 11, 84),))


@pytest.fixture(scope="module")
def bert():
    module = examples.seeded(examples.BertLayer, seed=3)
    return module, compile_module(module, (torch.zeros(3, 9, 72), torch.ones(3, 9, dtype=torch.int64)))


# -- the three blocks -------------------------------------------------------------------------------


def test_llama_block_raised_and_matches_torch(llama, rng):
    module, compiled = llama
    assert _ops(compiled) == ["attention", "gated_mlp", "linear", "linear", "linear", "linear",
                              "merge_heads", "rms_norm", "rms_norm", "split_heads", "split_heads",
                              "split_heads"]
    attention = next(r for r in compiled.raised if r.op == "attention")
    assert attention.attrs == {"causal": True}
    for _ in range(2):  # fresh inputs each time: nothing is specialised to the example values
        x = _fresh(rng, 2, 13, 120)
        got = compiled(x)
        assert got.shape == (2, 13, 120) and got.dtype == np.float32
        assert _rel_err(got, _reference(module, x)) < RTOL


def test_gpt2_block_raised_and_matches_torch(gpt2, rng):
    module, compiled = gpt2
    assert _ops(compiled) == ["attention", "gelu", "layer_norm", "layer_norm", "linear", "linear",
                              "linear", "linear", "merge_heads", "split_heads", "split_heads", "split_heads"]
    assert next(r for r in compiled.raised if r.op == "gelu").attrs == {"approximate": "tanh"}
    x = _fresh(rng, 2, 11, 84)
    assert _rel_err(compiled(x), _reference(module, x)) < RTOL


def test_bert_layer_padding_mask_matches_torch(bert, rng):
    module, compiled = bert
    attention = next(r for r in compiled.raised if r.op == "attention")
    assert attention.operands == ["query", "key", "value", "mask"] and attention.attrs == {"causal": False}
    x = _fresh(rng, 3, 9, 72)
    mask = torch.ones(3, 9, dtype=torch.int64)
    mask[1, 6:] = 0
    mask[2, 2:] = 0
    want = _reference(module, x, mask)
    got = compiled(x.numpy(), mask.numpy())  # numpy in works as well as tensors
    assert _rel_err(got, want) < RTOL
    # The mask is an input, not baked in: a different mask changes the unpadded rows' outputs.
    other = compiled(x, torch.ones(3, 9, dtype=torch.int64))
    assert np.abs(other[2, :2] - got[2, :2]).max() > 1e-3


def test_embedding_gelu_gated_mlp_softmax(rng):
    module = examples.seeded(examples.TinyGeGLULM, seed=4)
    compiled = compile_module(module, (torch.zeros(2, 7, dtype=torch.int64),))
    assert _ops(compiled) == ["embedding", "gated_mlp", "linear", "rms_norm", "softmax"]
    assert next(r for r in compiled.raised if r.op == "gated_mlp").attrs == {"activation": "gelu"}
    ids = torch.from_numpy(rng.integers(0, 97, (2, 7)))
    assert _rel_err(compiled(ids), _reference(module, ids)) < RTOL


def test_transformer_stage_ir(llama):
    _, compiled = llama
    text = compiled.ir("transformer")
    assert text.count("transformer.rms_norm") == 2
    assert re.search(r"transformer\.attention .*\{causal\}.*tensor<2x6x13x20xf32>, tensor<2x2x13x20xf32>", text)
    assert "transformer.gated_mlp" in text
    # Parameters and the non-persistent RoPE tables are named arguments, not inlined constants.
    for name in ("q_proj.weight", "input_norm.weight", "cos_cached", "sin_cached", "x"):
        assert f'kiln.name = "{name}"' in text
    assert "dense_resource" not in text and "__kiln_raised" not in text


def test_repeat_kv_llama_reads_shared_kv_heads(rng):
    """Hugging Face's repeat_kv before a plain SDPA is undone: attention gets the 1 KV head."""
    module = examples.seeded(examples.LlamaBlock, seed=6, hidden=60, heads=3, kv_heads=1, ffn=90, repeat_kv=True)
    compiled = compile_module(module, (torch.zeros(2, 5, 60),))
    assert re.search(r"transformer\.attention .*\{causal\} : \(tensor<2x3x5x20xf32>, tensor<2x1x5x20xf32>, "
                     r"tensor<2x1x5x20xf32>\)", compiled.source)
    x = _fresh(rng, 2, 5, 60)
    assert _rel_err(compiled(x), _reference(module, x)) < RTOL


def test_unrecognised_code_compiles_through_linalg(rng):
    """Without raising everything goes through torch-mlir's linalg and still matches."""
    module = examples.seeded(examples.LlamaBlock, seed=5, hidden=60, heads=3, kv_heads=1, ffn=90)
    compiled = compile_module(module, (torch.zeros(1, 6, 60),), raise_patterns=False)
    assert compiled.raised == [] and "transformer." not in compiled.source
    x = _fresh(rng, 1, 6, 60)
    assert _rel_err(compiled(x), _reference(module, x)) < RTOL


class _MaskedVariants(nn.Module):
    """Boolean mask with an explicit scale, RMSNorm written as x*x with the weight on the right,
    a tuple output."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(24) * 0.2 + 1)

    def forward(self, q, k, v, keep, x):
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, scale=0.3)
        n = x * torch.rsqrt((x * x).mean(dim=-1, keepdim=True) + 1e-6) * self.w
        return a, n


def test_bool_mask_scale_explicit_rmsnorm_tuple_output(rng):
    module = _MaskedVariants().eval()
    keep = torch.from_numpy(rng.random((2, 1, 5, 7)) > 0.3)
    keep[..., 0] = True  # every row attends somewhere
    args = (_fresh(rng, 2, 4, 5, 24), _fresh(rng, 2, 4, 7, 24), _fresh(rng, 2, 4, 7, 24), keep, _fresh(rng, 3, 24))
    compiled = compile_module(module, args)
    assert _ops(compiled) == ["attention", "rms_norm"]
    assert next(r for r in compiled.raised if r.op == "attention").attrs == {"causal": False, "scale": 0.3}
    fresh = (_fresh(rng, 2, 4, 5, 24), _fresh(rng, 2, 4, 7, 24), _fresh(rng, 2, 4, 7, 24), keep, _fresh(rng, 3, 24))
    got = compiled(*fresh)
    want = _reference_tuple(module, fresh)
    assert isinstance(got, tuple) and len(got) == 2
    for g, w in zip(got, want):
        assert _rel_err(g, w) < RTOL


def _reference_tuple(module, inputs):
    import copy

    ref = copy.deepcopy(module).double()
    with torch.no_grad():
        outs = ref(*[t.double() if t.is_floating_point() else t for t in inputs])
    return [o.numpy() for o in outs]


# -- raising alone (no child process) ---------------------------------------------------------------


def _raise(module, *args):
    exported = torch.export.export(module.eval(), args, strict=False)
    return raising.raise_graph(exported.graph_module), exported


def test_rmsnorm_without_single_use_is_not_raised():
    class Shared(nn.Module):
        def forward(self, x):
            r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)
            return x * r, r  # the rsqrt is an output too: the pattern must stay

    raised, _ = _raise(Shared(), torch.randn(2, 8))
    assert [r.op for r in raised.values()] == []


def test_raised_node_keeps_user_source():
    raised, exported = _raise(examples.seeded(examples.GPT2Block), torch.randn(1, 5, 84))
    ln = next(r for r in raised.values() if r.op == "layer_norm")
    assert ln.source.endswith(".py:" + ln.source.rsplit(":", 1)[1]) and "examples.py" in ln.source
    names = [n.name for n in exported.graph.nodes]
    assert any(n.startswith("kiln_attention_") for n in names)
    assert not any("scaled_dot_product" in str(n.target) for n in exported.graph.nodes)


def test_sdpa_with_dropout_is_left_to_linalg():
    class Dropout(nn.Module):
        def forward(self, q):
            return F.scaled_dot_product_attention(q, q, q, dropout_p=0.5, is_causal=True)

    raised, _ = _raise(Dropout(), torch.randn(1, 2, 4, 8))
    assert [r.op for r in raised.values()] == []


# -- errors ---------------------------------------------------------------------------------------


class _Histogram(nn.Module):
    def forward(self, x):
        y = torch.tanh(x)
        return torch.histc(y, bins=5)  # LINE-HISTC


def _line_of(marker: str) -> int:
    with open(__file__) as f:
        return next(i for i, line in enumerate(f, 1) if marker in line and "_line_of" not in line)


def test_unsupported_op_names_node_op_and_source_line():
    with pytest.raises(KilnError) as e:
        compile_module(_Histogram(), (torch.randn(4, 6),))
    message = str(e.value)
    assert "FX node 'histc'" in message and "aten.histc" in message
    assert f"{__file__}:{_line_of('LINE-HISTC')}" in message
    assert "torch.histc(y, bins=5)" in message


class _DataDependent(nn.Module):
    def forward(self, x):
        return x[x > 0].sum(0, keepdim=True)  # LINE-DYNAMIC


def test_dynamic_shape_construct_names_node_and_line():
    with pytest.raises(KilnError, match="dynamic-shape construct") as e:
        compile_module(_DataDependent(), (torch.randn(4, 6),))
    assert "FX node 'index'" in str(e.value) and f"{__file__}:{_line_of('LINE-DYNAMIC')}" in str(e.value)


def test_buffer_mutation_is_refused():
    class Counter(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("count", torch.zeros(1))

        def forward(self, x):
            self.count.add_(1)
            return x + self.count

    with pytest.raises(KilnError, match="mutates buffer count in place"):
        compile_module(Counter(), (torch.randn(3),))


def _fake_child(tmp_path, monkeypatch, body: str):
    script = tmp_path / "child.py"
    script.write_text(body)
    monkeypatch.setattr(importer, "CHILD", str(script))


def test_child_crash_gives_reproducer(tmp_path, monkeypatch):
    _fake_child(tmp_path, monkeypatch, "import os, sys\nprint('boom', file=sys.stderr)\nos.abort()\n")
    with pytest.raises(KilnError, match="crashed") as e:
        compile_module(nn.Linear(4, 3), (torch.randn(2, 4),))
    m = re.search(r"reproducer kept in (\S+) ", str(e.value))
    assert m and os.path.exists(os.path.join(m.group(1), "program.pt2"))
    assert os.path.exists(os.path.join(m.group(1), "job.json")) and "boom" in str(e.value)


def test_child_timeout_is_an_error_not_a_hang(tmp_path, monkeypatch):
    import time

    _fake_child(tmp_path, monkeypatch, "import time\ntime.sleep(120)\n")
    start = time.monotonic()
    with pytest.raises(KilnError, match="did not finish within 2 s"):
        compile_module(nn.Linear(4, 3), (torch.randn(2, 4),), timeout=2)
    assert time.monotonic() - start < 60


def test_wrong_number_of_inputs(gpt2):
    _, compiled = gpt2
    with pytest.raises(KilnError, match=r"takes 1 input\(s\) \(x\), got 2"):
        compiled(np.zeros((2, 11, 84), np.float32), np.zeros(3))


def test_version_skew_error_names_the_op():
    """IR from torch-mlir that Kiln's MLIR cannot parse (an op it does not know) is a KilnError
    naming the op, not a crash."""
    text = 'func.func @forward(%arg0: tensor<4xf32>) -> tensor<4xf32> {\n' \
           '  %0 = "tm_tensor.future_op"(%arg0) : (tensor<4xf32>) -> tensor<4xf32>\n' \
           '  return %0 : tensor<4xf32>\n}\n'
    result = {"args": [{"name": "x", "kind": "USER_INPUT", "target": None}]}
    with pytest.raises(KilnError, match=r"could not parse.*tm_tensor\.future_op"):
        importer.ImportedModule(text, result, {}, {}, None, "M")


def test_not_a_module():
    with pytest.raises(KilnError, match="expects a torch.nn.Module"):
        compile_module(lambda x: x, (torch.randn(2),))


def test_compile_model_takes_an_nn_module(rng):
    """kiln.compile_model(module, example_args=...) is the same frontend as compile_module."""
    import kiln

    module = examples.seeded(examples.GPT2Block, seed=4)
    compiled = kiln.compile_model(module, example_args=(torch.zeros(1, 6, 84),))
    x = _fresh(rng, 1, 6, 84)
    assert _rel_err(compiled(x), _reference(module, x)) < RTOL
