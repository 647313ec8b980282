"""`kiln bench --target cuda`: Kiln's GPU kernels and an LLM's decode against PyTorch on the same GPU.

    kiln bench --target cuda [--suite full|smoke|model|check] [--model DIR] [--rounds 4] [--reps 5]
    kiln bench --target cuda --artifacts DIR --compile-only [--chip sm_90a] # on any machine, then
    kiln bench --target cuda --artifacts DIR                                 # on the GPU: no compiler needed

Kernels: GEMM 4096³ in f32 against torch.matmul with TF32 off (cuBLAS SIMT f32), and on bf16 tensors
against torch.matmul on the same bf16 tensors (tensor cores on both sides, f32 sums), decode-shaped linears (the matvec schedule) against
F.linear, causal GQA attention against scaled_dot_product_attention. Model: greedy decode tok/s of
SmolLM2 (or `--model`), Kiln's `compile_model(target="cuda")` (a GGUF's blocks read as stored, and
float32 weights) against HF transformers eager in fp32.
Check (`gpu_check.py`): every kernel class and tiny models of every decoder family against PyTorch
and HF transformers on the GPU, on fresh random inputs.

`--artifacts DIR` cross-compiles: with `--compile-only` it compiles every program (and the model) of
the suite for `--chip` into DIR on a machine without a GPU; without it, programs found there are
loaded instead of compiled, so the GPU machine needs Kiln's runtime only.

Everything runs in this process on one GPU (Kiln's driver and torch share the device's primary
context), in interleaved rounds; every timed call runs to completion (Kiln: a bound entry point, one
graph launch, then a stream sync; torch: the call, then torch.cuda.synchronize()). The report (JSON
and PNG) names the GPU and the driver, CUDA, torch, transformers, Kiln and MLIR versions. Without a
CUDA GPU and driver, or with a CPU-only torch, it stops at once with a KilnError saying so.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import time

import numpy as np

from ..errors import KilnError
from ..progress import Progress
from . import report as report_io
from . import workloads as wl
from .timing import median, time_calls


def kernel_suite(name: str) -> list:
    """[(workload, precision)] of a suite: `full` (the issue's shapes) or `smoke` (small)."""
    if name == "smoke":
        return [(wl.gemm(256, 256, 256), "f32"), (wl.gemm(256, 256, 256, "bf16"), "bf16"), (wl.linear(1, 512, 256), "f32"),
                (wl.attention(4, 2, 64, 64, 64), "f32")]
    if name == "full":
        return [(wl.gemm(4096, 4096, 4096), "f32"), (wl.gemm(4096, 4096, 4096, "bf16"), "bf16"),
                (wl.linear(1, 4096, 4096), "f32"), (wl.linear(1, 1536, 576), "f32"), (wl.linear(1, 49152, 576), "f32"),
                (wl.attention(9, 3, 512, 512, 64), "f32"), (wl.attention(9, 3, 1, 1024, 64), "f32")]
    raise KilnError(f"unknown GPU benchmark suite '{name}'; suites: full, smoke, model, check")


def require_cuda():
    """(Kiln's cuda Device, torch) or a KilnError naming what is missing."""
    from ..runtime import Device

    try:
        device = Device("cuda")
    except KilnError as e:
        raise KilnError(f"kiln bench --target cuda needs an NVIDIA GPU and its driver: {e}") from None
    try:
        import torch
    except ImportError:
        raise KilnError("kiln bench --target cuda compares with PyTorch: install torch (a CUDA build)") from None
    if not torch.cuda.is_available():
        raise KilnError(f"kiln bench --target cuda compares with PyTorch on the GPU, but torch {torch.__version__} "
                        "sees no CUDA device (a CPU-only build?)")
    return device, torch


def _artifact(folder: str, workload, precision: str) -> str:
    return os.path.join(folder, f"{workload.name}-{precision}.kiln")


def kiln_call(workload, precision: str, device, artifacts: str | None = None):
    """(call, output buffer, inputs): the workload compiled for `device`'s chip (or loaded from the
    `artifacts` folder), bound to device buffers holding its seeded inputs."""
    import kiln

    if artifacts and os.path.exists(_artifact(artifacts, workload, precision)):
        program = kiln.load(_artifact(artifacts, workload, precision), device)
    else:
        program = kiln.compile(workload.kiln_ir(), target="cuda", chip=device.gpu.chip, device=device,
                               precision=precision)
    inputs = workload.make_inputs(np.random.default_rng(0))
    entry = program.entry_point("f")
    (result,) = [entry.signature.results[j] for j in entry.signature.returned_results]
    out = device.allocate(result.shape, result.dtype)
    return entry.bind(*[device.upload(a) for a in inputs], out=[out]), out, inputs


def torch_call(torch, workload, precision: str, inputs):
    """(call, result tensor getter) of the peer for a workload, on cuda tensors."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    t = [torch_tensor(torch, a).cuda().to(dtype) for a in inputs]
    torch.backends.cuda.matmul.allow_tf32 = False  # f32 rows compare f32 arithmetic
    if workload.name.startswith("gemm"):
        fn = lambda: torch.matmul(t[0], t[1])  # noqa: E731
    elif workload.name.startswith("linear"):
        fn = lambda: torch.nn.functional.linear(t[0], t[1])  # noqa: E731
    elif workload.group == "attention":
        fn = lambda: causal_sdpa(torch, *t)  # noqa: E731
    else:
        raise KilnError(f"no GPU peer for workload {workload.name}")
    result = {}

    def call():
        result["y"] = fn()
        torch.cuda.synchronize()

    return call, lambda: result["y"].float().cpu().numpy()


def torch_tensor(torch, array: np.ndarray):
    """A CPU tensor of `array`, bf16 ones (ml_dtypes, which torch does not read) included."""
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def causal_sdpa(torch, q, k, v):
    """Causal GQA attention by PyTorch, the query rows being the last of the keys' (Kiln's
    `transformer.attention {causal}` with offset kv_len - q_len)."""
    q_len, kv_len = q.shape[2], k.shape[2]
    rows, cols = torch.arange(q_len, device=q.device), torch.arange(kv_len, device=q.device)
    mask = cols[None, :] <= rows[:, None] + kv_len - q_len
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)


def run_kernels(device, torch, suite: str, rounds: int, reps: int, artifacts: str | None = None) -> list:
    rows = []
    cases = kernel_suite(suite)
    with Progress(len(cases) * (1 + rounds), "GPU kernels", always=True) as bar:
        prepared = []
        for w, precision in cases:
            call, out, inputs = kiln_call(w, precision, device, artifacts)
            peer, peer_out = torch_call(torch, w, precision, inputs)
            prepared.append((w, precision, call, out, peer, peer_out))
            bar.advance(f"compiled {w.name} {precision}")
        samples = {(w.name, p): {"kiln": [], "torch": []} for w, p, *_ in prepared}
        for _ in range(rounds):
            for w, precision, call, out, peer, _ in prepared:
                s = samples[(w.name, precision)]
                s["kiln"] += time_calls(call, reps)
                s["torch"] += time_calls(peer, reps)
                bar.advance(f"{w.name} {precision}")
    for w, precision, call, out, peer, peer_out in prepared:
        s = samples[(w.name, precision)]
        med = {k: median(v) for k, v in s.items()}
        got, want = out.to_numpy().astype(np.float64), peer_out().astype(np.float64)
        rows.append({"workload": w.name, "group": w.group, "precision": precision, "median_ms": med,
                     "samples_ms": s, "speedup": med["torch"] / med["kiln"],
                     "kiln_tflops": w.flops / (med["kiln"] * 1e9), "torch_tflops": w.flops / (med["torch"] * 1e9),
                     "max_rel_diff": float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))})
    return rows


PROMPT_TOKENS, NEW_TOKENS = 128, 128
MODEL_MAX_SEQ_LEN = PROMPT_TOKENS + NEW_TOKENS + 1


SAVED_MODELS = {"kiln": "model.kiln", "kiln_fp32": "model-fp32.kiln"}  # system -> its file in --artifacts


def model_systems(path: str) -> dict:
    """Kiln's configurations of the model at `path` the bench runs: "kiln" (compile_model's default:
    a GGUF's blocks read as stored by decode steps) and, where the checkpoint stores blocks,
    "kiln_fp32" (every weight float32, as HF reads it) -> the saved model's file name."""
    from ..loaders import load_checkpoint
    from ..model import stored_block_formats

    blocks = bool(stored_block_formats(load_checkpoint(path)))
    return {who: name for who, name in SAVED_MODELS.items() if who == "kiln" or blocks}


def load_or_compile_model(device, path: str, artifacts: str | None, system: str = "kiln"):
    """Kiln's `system` (see `model_systems`) of the model at `path` for `device`: loaded from
    `artifacts` when it was compiled ahead."""
    import kiln

    saved = os.path.join(artifacts, SAVED_MODELS[system]) if artifacts else None
    if saved and os.path.exists(saved):
        return kiln.load(saved, device, checkpoint=path)
    return kiln.compile_model(path, target="cuda", device=device, max_seq_len=MODEL_MAX_SEQ_LEN,
                              quantized_weights=system == "kiln")


def run_model(device, torch, path: str, rounds: int, artifacts: str | None = None) -> dict:
    """Greedy decode tok/s of Kiln (cuda; with a GGUF's blocks and with float32 weights) and HF
    transformers eager (fp32, cuda) on the same prompt ids."""
    import transformers

    from .model import _kiln_run, hf_source, matching_prefix

    prompt_len, new_tokens = PROMPT_TOKENS, NEW_TOKENS
    models = {who: load_or_compile_model(device, path, artifacts, who) for who in model_systems(path)}
    vocab = models["kiln"].graph.vocab_size
    ids = [int(i) for i in np.random.default_rng(0).integers(100, vocab - 100, size=prompt_len)]
    folder, gguf = hf_source(path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **gguf).cuda().eval()
    samples = {who: {"prefill_s": [], "decode_s": []} for who in (*models, "hf")}
    same = {}
    with Progress(rounds, f"decoding {path}", always=True) as bar:
        for _ in range(rounds):
            runs = {who: _kiln_run(model, ids, new_tokens) for who, model in models.items()}
            runs["hf"] = _hf_run(torch, hf, ids, new_tokens)
            for who, r in runs.items():
                samples[who]["prefill_s"] += r["prefill_s"]
                samples[who]["decode_s"] += r["step_s"]
            same = {who: matching_prefix(runs[who]["tokens"], runs["hf"]["tokens"]) for who in models}
            bar.advance("round")
    row = {"model": path, "prompt_tokens": prompt_len, "new_tokens": new_tokens, "tokens_identical": same["kiln"]}
    for who in samples:
        row[who] = {"prefill_tok_s": prompt_len / median(samples[who]["prefill_s"]),
                    "decode_tok_s": 1.0 / median(samples[who]["decode_s"]), "samples": samples[who]}
    for who, model in models.items():
        suffix = who[len("kiln"):]  # "" or "_fp32"
        row[who].update(tokens_identical=same[who], weight_bytes_per_token=model.weight_bytes_per_token,
                        decode_gb_s=model.weight_bytes_per_token * row[who]["decode_tok_s"] / 1e9)
        row[f"decode_ratio{suffix}"] = row[who]["decode_tok_s"] / row["hf"]["decode_tok_s"]
    return row


def _hf_run(torch, model, ids, new_tokens) -> dict:
    prompt = torch.tensor([ids], device="cuda")
    with torch.no_grad():
        t = time.perf_counter()
        out = model(prompt, use_cache=True)
        token = int(out.logits[0, -1].argmax())  # (a device-to-host copy: the step has finished)
        prefill = time.perf_counter() - t
        past, tokens, steps = out.past_key_values, [], []
        for _ in range(new_tokens):
            tokens.append(token)
            t = time.perf_counter()
            out = model(torch.tensor([[token]], device="cuda"), past_key_values=past, use_cache=True)
            token = int(out.logits[0, -1].argmax())
            steps.append(time.perf_counter() - t)
            past = out.past_key_values
    return {"prefill_s": [prefill], "step_s": steps, "tokens": tokens}


def versions(device, torch, artifacts: str | None = None) -> dict:
    """Versions of everything in the comparison; MLIR's is the one that compiled the programs (read
    from an artifact where they were compiled ahead on another machine)."""
    import ctypes

    import kiln

    driver = ctypes.c_int()
    device.gpu.lib.cuDriverGetVersion(ctypes.byref(driver))
    info = {"kiln": kiln.__version__, "torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "cuda_driver": f"{driver.value // 1000}.{driver.value % 1000 // 10}"}
    compiled = sorted(f for f in os.listdir(artifacts) if f.endswith(".kiln")) if artifacts else []
    if compiled:
        from .. import artifact

        info["mlir"] = artifact.read(os.path.join(artifacts, compiled[0])).manifest["mlir_version"]
    for key, package in (("mlir", "xtc-mlir-python-bindings"), ("transformers", "transformers")):
        try:
            info.setdefault(key, importlib.metadata.version(package))
        except importlib.metadata.PackageNotFoundError:
            pass
    return info


def compile_ahead(suite: str, folder: str, chip: str, model_path: str | None = None) -> None:
    """`--compile-only`: every program of `suite` compiled for `chip` into `folder` (see the module
    docstring); the GPU run then loads them."""
    import kiln

    from ..model import compile_model_to_file

    os.makedirs(folder, exist_ok=True)
    if suite == "check":
        from . import gpu_check

        gpu_check.prepare(folder, chip)
    elif suite != "model":
        cases = kernel_suite(suite)
        with Progress(len(cases), f"compiling for {chip}", always=True) as bar:
            for w, precision in cases:
                kiln.compile(w.kiln_ir(), target="cuda", chip=chip, precision=precision,
                             output=_artifact(folder, w, precision))
                bar.advance(f"{w.name} {precision}")
    if suite in ("full", "model") or model_path:
        from .. import default_model

        path = model_path or default_model.path()
        for who, name in model_systems(path).items():
            compile_model_to_file(path, os.path.join(folder, name), "cuda", chip, max_seq_len=MODEL_MAX_SEQ_LEN,
                                  quantized_weights=who == "kiln")


def run(suite: str = "full", model_path: str | None = None, rounds: int = 4, reps: int = 5,
        output: str | None = "bench-gpu.json", plot: str | None = "bench-gpu.png",
        artifacts: str | None = None) -> dict:
    device, torch = require_cuda()
    rep = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "device": {"name": device.gpu.device_name, "chip": device.gpu.chip,
                      "torch_name": torch.cuda.get_device_name()},
           "versions": versions(device, torch, artifacts), "machine": report_io.machine(),
           "settings": {"suite": suite, "rounds": rounds, "reps_per_round": reps, "tf32": False},
           "kernels": [], "model": None}
    if suite == "check":
        from . import gpu_check

        rep["check"] = gpu_check.run(device, torch, artifacts, model_path)
        plot = None  # a table of errors, not a picture
    elif suite != "model":
        rep["kernels"] = run_kernels(device, torch, suite, rounds, reps, artifacts)
    if suite in ("full", "model"):
        from .. import default_model

        rep["model"] = run_model(device, torch, model_path or default_model.path(), max(1, rounds // 2), artifacts)
    if output:
        report_io.write_json(output, rep)
    if plot:
        plot_report(plot, rep)
    return rep


def plot_report(path: str, rep: dict) -> None:
    """Left: Kiln's speed relative to torch per kernel (torch ms / Kiln ms, > 1: Kiln is faster);
    right: decode tokens per second of Kiln and HF transformers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [3, 1]})
    rows = rep["kernels"]
    names = [f"{r['workload']} {r['precision']}" for r in rows]
    ratios = [r["speedup"] for r in rows]
    left.bar(range(len(rows)), ratios, color="tab:orange")
    for i, y in enumerate(ratios):
        left.text(i, y, f"{y:.2f}", ha="center", va="bottom", fontsize=7)
    left.axhline(1.0, color="black", linewidth=0.8)
    left.set_xticks(range(len(rows)), names, rotation=20, ha="right", fontsize=7)
    left.set_ylabel("speed ratio (torch ms / Kiln ms)")
    left.set_title("kernels vs PyTorch (cuBLAS, SDPA)")
    model = rep.get("model")
    if model:
        labels = {"kiln": "Kiln", "kiln_fp32": "Kiln, fp32\nweights", "hf": "HF eager\n(fp32)"}
        colors = {"kiln": "tab:orange", "kiln_fp32": "tab:red", "hf": "tab:blue"}
        shown = [who for who in labels if who in model]
        right.bar(range(len(shown)), [model[who]["decode_tok_s"] for who in shown], color=[colors[w] for w in shown])
        right.set_xticks(range(len(shown)), [labels[who] for who in shown], fontsize=8)
        right.set_ylabel("decode tokens / s")
        right.set_title(model["model"].rstrip("/").split("/")[-1])
    else:
        right.axis("off")
    v = rep["versions"]
    fig.suptitle(f"{rep['device']['name']} ({rep['device']['chip']}), driver {v['cuda_driver']}: Kiln {v['kiln']} "
                 f"(MLIR {v.get('mlir', '?')}) vs torch {v['torch']} (CUDA {v['torch_cuda']})"
                 + (f", transformers {v['transformers']}" if "transformers" in v else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(args) -> int:
    if args.compile_only:
        if not args.artifacts:
            raise KilnError("--compile-only writes the compiled programs to --artifacts DIR: name one")
        compile_ahead(args.suite, args.artifacts, args.chip or "sm_90a", args.model)
        print(f"compiled the '{args.suite}' suite for {args.chip or 'sm_90a'} into {args.artifacts}")
        return 0
    output = args.output if args.output != "bench.json" else "bench-gpu.json"
    plot = args.plot if args.plot != "bench.png" else "bench-gpu.png"
    rep = run(args.suite, args.model, args.rounds, args.reps, output, plot or None, args.artifacts)
    print(f"{rep['device']['name']} ({rep['device']['chip']})")
    check = rep.get("check")
    if check:
        _print_check(check)
    print(f"{'workload':<44} {'prec':>5} {'kiln ms':>9} {'torch ms':>9} {'ratio':>6} {'kiln TF/s':>9} {'rel diff':>9}")
    for r in rep["kernels"]:
        print(f"{r['workload']:<44} {r['precision']:>5} {r['median_ms']['kiln']:>9.3f} {r['median_ms']['torch']:>9.3f} "
              f"{r['speedup']:>6.2f} {r['kiln_tflops']:>9.2f} {r['max_rel_diff']:>9.1e}")
    m = rep["model"]
    if m:
        print(f"decode: kiln {m['kiln']['decode_tok_s']:.1f} tok/s, HF eager {m['hf']['decode_tok_s']:.1f} tok/s "
              f"(ratio {m['decode_ratio']:.2f}; {m['tokens_identical']}/{m['new_tokens']} tokens identical)")
    if output:
        print(f"report: {output}" + (f", plot: {plot}" if plot else ""))
    return 0


def _print_check(check: dict) -> None:
    print(f"inputs seed {check['seed']}")
    print(f"{'kernel class case':<20} {'class':<12} {'vs torch f64':>13} {'vs numpy f64':>13} ok")
    for r in check["kernels"]:
        err = [r.get(f"rel_err_vs_{w}", r.get(f"mismatches_vs_{w}")) for w in ("torch", "numpy")]
        print(f"{r['case']:<20} {r['class']:<12} {err[0]:>13.2e} {err[1]:>13.2e} {'yes' if r['ok'] else 'NO'}")
    for r in check["models"]:
        what = f"logits rel err {r['logits_rel_err']:.1e}" if "logits_rel_err" in r else repr(r["prompt"])
        print(f"{r['model']:<24} greedy {r['tokens_identical']}/{r['new_tokens']} tokens identical, "
              f"{what} {'yes' if r['ok'] else 'NO'}")
