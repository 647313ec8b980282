"""Linear weights packed once at load into the CPU GEMM's panel layout (models.graph.panel_params).

A weight W[N, K] bound as [N/32, K, 32] panels and unpacked in the IR (linalg.unpack) must give the
same linear as W itself -- bit for bit, since the GEMM's micro-kernel is the same, only its per-call
packing of W is gone -- and a float64 product; a model built with panels must match Hugging Face.
"""

import numpy as np
import pytest

import os
import sys

import kiln
import kiln.cli
from kiln.errors import KilnError
from kiln.models.graph import panel_params, without_unused
from kiln.params import PANEL, Param, to_panels


def test_panels_are_the_gemm_packing_layout(rng):
    w = rng.standard_normal((96, 40)).astype(np.float32)
    p = to_panels(w, 32, "w")
    assert p.shape == (3, 40, 32) and p.flags.c_contiguous
    j, k, i = 2, 17, 5
    assert p[j, k, i] == w[j * 32 + i, k]
    np.testing.assert_array_equal(p.transpose(0, 2, 1).reshape(96, 40), w)
    with pytest.raises(KilnError, match="panels of 32 rows"):
        to_panels(w[:90], 32, "model.layers.0.mlp.up_proj.weight")


def test_bound_copies_start_on_a_cache_line(rng):
    """GEMM micro-kernels load whole 64-byte panel rows: a panel, and any parameter bind converts,
    starts on a cache line (numpy's own large arrays start 16 bytes into one)."""
    w = rng.standard_normal((1024, 96)).astype(np.float64)
    panels = Param("w.panels", "w", (32, 96, 32), panel=32).bind(lambda name: w)
    converted = Param("w", "w", (1024, 96)).bind(lambda name: w)
    for array in (panels, converted):
        assert array.ctypes.data % 64 == 0 and array.flags.c_contiguous and array.dtype == np.float32
    np.testing.assert_array_equal(converted, w.astype(np.float32))
    np.testing.assert_array_equal(panels, to_panels(w.astype(np.float32), 32, "w"))
    # Weights of 2 MiB or more start on a (transparent) huge page.
    big = rng.standard_normal((1024, 576)).astype(np.float32)
    assert to_panels(big, 32, "w").ctypes.data % (2 << 20) == 0


def test_panel_params_and_unused_float32_weights():
    params = [Param("embed", "e", (100, 64)), Param("wq", "q", (64, 64)), Param("wk", "k", (24, 64)),
              Param("norm", "n", (64,))]
    panels = panel_params(params[1:])
    assert [(p.name, p.shape, p.panel) for p in panels] == [("wq.panels", (2, 64, PANEL), PANEL)]
    blocks = [Param("wq.data", "q", (64, 2, 16), part="data"), Param("wq.scales", "q", (64, 2), part="scales")]
    # wq has blocks (decode) and panels (prefill): its float32 copy is read by no linear.
    kept = [p.name for p in without_unused(params + blocks + panels)]
    assert "wq" not in kept and {"wq.data", "wq.panels", "wk", "embed", "norm"} <= set(kept)
    # Without blocks, decode steps still read the float32 weight.
    assert "wq" in [p.name for p in without_unused(params + panels)]


def _linear_ir(m, n, k, panels: bool, bias: bool):
    w_type = f"tensor<{n // 32}x{k}x32xf32>" if panels else f"tensor<{n}x{k}xf32>"
    args = [f"%x: tensor<1x{m}x{k}xf32>", f"%w_in: {w_type}"] + ([f"%b: tensor<{n}xf32>"] if bias else [])
    lines = [f"func.func @f({', '.join(args)}) -> tensor<1x{m}x{n}xf32> {{"]
    if panels:
        lines += [f"  %e = tensor.empty() : tensor<{n}x{k}xf32>",
                  f"  %w = linalg.unpack %w_in inner_dims_pos = [0] inner_tiles = [32] into %e "
                  f": {w_type} -> tensor<{n}x{k}xf32>"]
    w = "%w" if panels else "%w_in"
    operands = f"%x, {w}" + (", %b" if bias else "")
    types = f"tensor<1x{m}x{k}xf32>, tensor<{n}x{k}xf32>" + (f", tensor<{n}xf32>" if bias else "")
    lines += [f"  %y = transformer.linear {operands} : ({types}) -> tensor<1x{m}x{n}xf32>",
              f"  return %y : tensor<1x{m}x{n}xf32>", "}"]
    return "\n".join(lines)


@pytest.mark.parametrize("m,n,k,bias", [(40, 96, 48, False), (128, 64, 200, True), (17, 32, 8, False)])
def test_linear_over_panels_matches_float64_and_the_unpacked_weight(m, n, k, bias, rng):
    x = rng.standard_normal((1, m, k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    b = [rng.standard_normal(n).astype(np.float32)] if bias else []
    over_panels = kiln.compile(_linear_ir(m, n, k, True, bias), target="cpu")
    plain = kiln.compile(_linear_ir(m, n, k, False, bias), target="cpu")
    got = over_panels.f(x, to_panels(w, 32, "w"), *b)
    want = x.astype(np.float64) @ w.astype(np.float64).T + (b[0] if bias else 0)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    np.testing.assert_array_equal(got, plain.f(x, w, *b))


def test_few_rows_over_panels_unpack_them_in_the_kernel(rng):
    """A decode-shaped linear (matvec schedule, which packs nothing) over panels still works: the
    kernel unpacks them itself. GPU targets refuse panels, naming the layout."""
    x = rng.standard_normal((1, 8, 64)).astype(np.float32)
    w = rng.standard_normal((64, 64)).astype(np.float32)
    program = kiln.compile(_linear_ir(8, 64, 64, True, False), target="cpu")
    want = x.astype(np.float64) @ w.astype(np.float64).T
    assert np.abs(program.f(x, to_panels(w, 32, "w")) - want).max() <= 1e-5 * np.abs(want).max()
    with pytest.raises(KilnError, match=r"\[N/32, K, 32\] panels .* GPU targets take the weight as W\[N, K\]"):
        kiln.compile(_linear_ir(8, 64, 64, True, False), target="cuda", compile_to="tiled")


torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
sys.path.insert(0, os.path.dirname(__file__))
from tiny_llama import save_tiny_llama  # noqa: E402


def test_llama_with_panels_matches_hf(tmp_path, rng):
    """A tiny Llama whose linears all split into 32-row panels: prefill reads panels, decode the
    float32 weights; logits and 32 greedy tokens as HF's."""
    hf = save_tiny_llama(tmp_path, seed=3, tie_word_embeddings=False, max_position_embeddings=128)
    model = kiln.compile_model(str(tmp_path), max_seq_len=80, prefill_chunk=16, cache=False, progress=False)
    names = {p.name for p in model.graph.params}
    assert {"layers.0.wq.panels", "layers.1.w_down.panels", "lm_head.panels"} <= names
    assert "layers.0.wq" in names  # decode steps read the float32 weight (no blocks here)
    ids = rng.integers(3, 160, size=37)
    with torch.no_grad():
        want = hf(torch.tensor(ids[None])).logits[0].double().numpy()
    got = model.forward(ids)
    assert np.abs(got - want).max() / np.abs(want).max() < 2e-5
    prompt = rng.integers(3, 160, size=19)
    with torch.no_grad():
        ref = hf.generate(torch.tensor(prompt[None]), max_new_tokens=32, do_sample=False, min_new_tokens=32)
    assert model.generate(prompt, max_new_tokens=32, stop=[]).ids == ref[0, len(prompt):].tolist()


def test_imported_ir_has_each_targets_weight_layout(tmp_path, capsys):
    """`kiln import --target`: panels (linalg.unpack) for the CPU's GEMMs, plain weights for GPUs (whose
    schedules refuse panels), so the imported IR compiles for the target it names."""
    save_tiny_llama(tmp_path, seed=4)
    for target, panels in (("cpu", True), ("cuda", False)):
        out = tmp_path / f"{target}.mlir"
        assert kiln.cli.main(["import", str(tmp_path), "--prefill-chunk", "16", "--target", target,
                              "-o", str(out)]) == 0
        assert ("linalg.unpack" in out.read_text()) == panels
    program = kiln.compile(out.read_text(), target="cuda", chip="sm_90")
    assert program.manifest["kernels"]


@pytest.mark.parametrize("m,n,k", [(128, 576, 576), (128, 1536, 576), (128, 192, 576), (128, 576, 1536),
                                   (1024, 1024, 1024), (40, 96, 48)])
def test_gemm_workgroups_of_whole_tiles_in_an_even_number(m, n, k):
    """Prefill-sized GEMMs get at least 8 workgroups of whole register tiles (of at least 32 x 64
    elements), an even number of them: an odd count leaves one of two threads idle at the end."""
    from kiln.pipelines.schedules import Kernel, gemm_workgroups

    kernel = Kernel("f", "contraction", (1, m, n, k), "pppr", True, gemm_rhs="nk", f32=True)
    mc, nc = gemm_workgroups(kernel)
    count = -(-m // mc) * -(-n // nc)
    assert mc % 8 == 0 and nc % 32 == 0 and count >= min(8, -(-m // 32) * -(-n // 64)) and count % 2 == 0
