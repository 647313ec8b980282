"""`kiln bench --target cuda --suite check`: what only a real GPU can show about correctness.

Every kernel class (`kernel_classes.CASES`) runs on fresh random inputs and is compared with PyTorch
on the same GPU in float64 (and with Kiln's numpy float64 reference); the tiny random models of every
decoder family (`tiny_models.MODELS`) generate greedily, token for token against HF transformers on
the GPU, and their logits are compared with HF's. With a model (`--model`, e.g. SmolLM2's GGUF), its
greedy tokens on the chat prompts of `default_model.PARITY_PROMPTS` are compared with HF's on the GPU
too. The seed of the inputs is in the report, so a failure can be replayed.

With an artifacts folder the programs and models come from `prepare(folder, chip)` (`kiln bench
--target cuda --suite check --artifacts DIR --compile-only --chip sm_90`, on any machine): the GPU
machine then needs Kiln's runtime only, not the compiler.
"""

from __future__ import annotations

import os
import secrets
import tempfile

import numpy as np

from ..errors import KilnError
from ..progress import Progress
from . import kernel_classes, tiny_models
from .gpu import causal_sdpa
from .model import hf_source, matching_prefix

TOLERANCE = 1e-4  # max |Kiln - reference| over max |reference|, as the emulated-GPU tests allow
LOGITS_TOLERANCE = 2e-5  # the model tests' bound on logits against HF's fp32 forward
NEW_TOKENS = 32
MAX_SEQ_LEN, CHUNK = 64, 16
SEEDS = {name: 3 + i for i, name in enumerate(tiny_models.MODELS)}


def prepare(folder: str, chip: str, progress: bool = True) -> None:
    """Compiles every kernel class and tiny model for cuda `chip` into `folder` (no GPU needed; the
    caller compiles the model, as for the timed suites)."""
    import kiln
    from ..model import compile_model_to_file

    os.makedirs(folder, exist_ok=True)
    with Progress(len(kernel_classes.CASES) + len(tiny_models.MODELS), "compiling the GPU check",
                  always=True) as bar:
        bar.enabled = bar.enabled and progress
        for name, (_, text, _, _) in sorted(kernel_classes.CASES.items()):
            kiln.compile(text, target="cuda", chip=chip, output=os.path.join(folder, f"{name}.kiln"))
            bar.advance(name)
        for name in tiny_models.MODELS:
            directory = os.path.join(folder, name)
            tiny_models.save_tiny_model(name, directory, SEEDS[name])
            compile_model_to_file(directory, os.path.join(folder, f"{name}.kiln"), target="cuda", chip=chip,
                                  max_seq_len=MAX_SEQ_LEN, prefill_chunk=CHUNK, progress=False)
            bar.advance(name)


def run(device, torch, folder: str | None = None, model_path: str | None = None, seed: int | None = None) -> dict:
    """{"seed", "kernels": [...], "models": [...]}: one row per kernel class and per tiny model (and per
    chat prompt of `model_path`)."""
    seed = secrets.randbits(32) if seed is None else seed
    rng = np.random.default_rng(seed)
    torch.backends.cuda.matmul.allow_tf32 = False
    rows = {"seed": seed, "kernels": [], "models": []}
    with Progress(len(kernel_classes.CASES) + len(tiny_models.MODELS), "GPU check", always=True) as bar:
        for name in sorted(kernel_classes.CASES):
            rows["kernels"].append(_check_kernel(device, torch, name, folder, rng))
            bar.advance(name)
        with tempfile.TemporaryDirectory() as scratch:
            for name in tiny_models.MODELS:
                rows["models"].append(_check_model(device, torch, name, folder or scratch, folder is None, rng))
                bar.advance(name)
    if model_path:
        rows["models"] += _check_chat_model(device, torch, model_path, folder)
    return rows


def _check_kernel(device, torch, name: str, folder, rng) -> dict:
    import kiln

    kernel_class, text, make_inputs, reference = kernel_classes.CASES[name]
    if folder:
        program = kiln.load(os.path.join(folder, f"{name}.kiln"), device)
    else:
        program = kiln.compile(text, target="cuda", chip=device.gpu.chip, device=device)
    inputs = make_inputs(rng)
    (got,) = program.f(*inputs)
    row = {"case": name, "class": kernel_class, "shapes": [list(a.shape) for a in inputs]}
    for who, want in (("torch", torch_reference(torch, name, inputs)), ("numpy", reference(*inputs))):
        want = np.asarray(want)
        if got.dtype == np.int64:
            row[f"mismatches_vs_{who}"] = int((got != want).sum())
        else:
            row[f"rel_err_vs_{who}"] = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))
    row["ok"] = all(v == 0 for k, v in row.items() if k.startswith("mismatches")) and \
        all(v <= TOLERANCE for k, v in row.items() if k.startswith("rel_err"))
    return row


def torch_reference(torch, name: str, inputs) -> np.ndarray:
    """Case `name` computed by PyTorch on the GPU in float64."""
    F = torch.nn.functional
    t = [torch.from_numpy(a).cuda() for a in inputs]
    t = [x.double() if x.is_floating_point() else x for x in t]
    if name == "matmul":
        y = t[0] @ t[1]
    elif name in ("linear", "matvec", "ragged_linear"):
        y = F.linear(t[0], t[1])
    elif name == "q4_1_matvec":  # the blocks expanded by PyTorch: low nibbles, then high ones
        data, scales, mins = t[1:]
        u = data.to(torch.int32) & 0xFF
        q = torch.cat([u & 15, u >> 4], dim=2).double()
        w = (scales.double()[:, :, None] * q + mins.double()[:, :, None]).reshape(data.shape[0], -1)
        y = F.linear(t[0], w)
    elif name == "rms_norm":
        y = F.rms_norm(t[0], (t[0].shape[-1],), t[1], eps=1e-5)
    elif name in ("softmax", "ragged_softmax"):
        y = torch.softmax(t[0], dim=-1)
    elif name == "argmax":
        y = torch.argmax(t[0], dim=-1)
    elif name.startswith("attention"):
        y = causal_sdpa(torch, *t)
    elif name == "silu":
        y = F.silu(t[0])
    elif name == "gelu":
        y = F.gelu(t[0])
    elif name == "rope":  # Hugging Face's rotate_half form, theta 10000 (the op's default)
        x, positions = t
        dim = x.shape[-1]
        inv_freq = 1.0 / (10000.0 ** (torch.arange(0, dim, 2, device="cuda", dtype=torch.int64).float() / dim))
        angle = positions.double()[:, None] * inv_freq.double()[None, :]
        angle = torch.cat([angle, angle], dim=-1)
        rotated = torch.cat([-x[..., dim // 2:], x[..., :dim // 2]], dim=-1)
        y = x * angle.cos() + rotated * angle.sin()
    elif name == "split_heads":
        b, s, f = t[0].shape
        y = t[0].reshape(b, s, 3, f // 3).permute(0, 2, 1, 3)
    else:
        raise KilnError(f"no PyTorch reference for kernel class case '{name}'")
    return y.cpu().numpy()


def _check_model(device, torch, name: str, folder: str, compile_here: bool, rng) -> dict:
    import transformers

    import kiln

    directory, path = os.path.join(folder, name), os.path.join(folder, f"{name}.kiln")
    if compile_here:
        tiny_models.save_tiny_model(name, directory, SEEDS[name])
        compiled = kiln.compile_model(directory, target="cuda", device=device, max_seq_len=MAX_SEQ_LEN,
                                      prefill_chunk=CHUNK, cache=False, progress=False)
    else:
        compiled = kiln.load(path, device, checkpoint=directory)
    hf = getattr(transformers, tiny_models.MODELS[name][1]).from_pretrained(directory, dtype=torch.float32)
    hf = hf.cuda().eval()
    prompt = rng.integers(3, tiny_models.VOCAB, size=11)
    ids = rng.integers(3, tiny_models.VOCAB, size=37)  # more than two prefill chunks
    with torch.no_grad():
        want = hf.generate(torch.tensor(prompt[None], device="cuda"), max_new_tokens=NEW_TOKENS, do_sample=False,
                           pad_token_id=0)[0, len(prompt):].tolist()
        logits_want = hf(torch.tensor(ids[None], device="cuda")).logits[0].double().cpu().numpy()
    got = compiled.generate(prompt, max_new_tokens=NEW_TOKENS).ids
    same = matching_prefix(got, want)
    err = float(np.abs(compiled.forward(ids) - logits_want).max() / np.abs(logits_want).max())
    return {"model": name, "new_tokens": len(want), "tokens_identical": same, "kiln_tokens": len(got),
            "logits_rel_err": err, "ok": got == want and err <= LOGITS_TOLERANCE}


def _check_chat_model(device, torch, path: str, folder) -> list:
    """Greedy tokens of a real chat model on the parity prompts against HF transformers on the GPU (HF
    dequantizes a GGUF to the same fp32 values as Kiln's loader)."""
    import transformers

    from ..default_model import PARITY_NEW_TOKENS, PARITY_PROMPTS
    from .gpu import load_or_compile_model

    compiled = load_or_compile_model(device, path, folder)
    where, gguf = hf_source(path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, **gguf).cuda().eval()
    tok = transformers.AutoTokenizer.from_pretrained(where, **gguf)
    rows = []
    for prompt in PARITY_PROMPTS:
        text = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                       tokenize=False)
        ids = tok(text, add_special_tokens=False, return_tensors="pt").input_ids.cuda()
        with torch.no_grad():
            want = hf.generate(ids, max_new_tokens=PARITY_NEW_TOKENS, do_sample=False)[0, ids.shape[1]:].tolist()
        got = compiled.generate(prompt, max_new_tokens=PARITY_NEW_TOKENS)
        same = matching_prefix(got.ids, want)
        rows.append({"model": os.path.basename(path), "prompt": prompt, "new_tokens": len(want),
                     "tokens_identical": same, "same_prompt_ids": got.prompt_ids == ids[0].tolist(),
                     "text": got.text, "ok": got.ids == want and got.prompt_ids == ids[0].tolist()})
    return rows
