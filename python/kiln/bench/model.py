"""`kiln bench --suite model`: prefill and decode speed of a real LLM against Hugging Face transformers.

Both run the same fp32 weight values on the same prompt ids, in interleaved rounds: Kiln in this
process, HF (torch eager, CPU) in a worker process per thread count. For a GGUF file whose weights
are Q4_0/Q4_1/Q8_0 blocks, Kiln runs twice: "kiln" reads the blocks as stored in decode steps
(dequantized in the kernels to the same fp32 values HF gets from its loader) and "kiln_fp32" reads
fp32 copies, like HF. Prefill: a forward pass over the prompt that fills the KV cache, timed
PREFILL_REPS times per round, each pass a sample (on a shared machine, one cold pass per round leaves
a handful of samples whose median swings by a third). Decode: greedy steps of one token each with the
cache (HF: `model(token, past_key_values=...)` in a loop, i.e. `generate` without its Python
overhead). The report also gives Kiln's decode bandwidth as a share of the measured memory bandwidth.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time

import numpy as np

from ..errors import KilnError
from ..progress import Progress
from . import report as report_io

_HF_WORKER = r"""
import json, os, sys, time
import torch, transformers
threads, path, gguf, ids, new_tokens, prefill_reps = json.loads(sys.argv[1])
torch.set_num_threads(threads)
kw = {"gguf_file": gguf} if gguf else {}
model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **kw).eval()
prompt = torch.tensor([ids])
for line in sys.stdin:
    with torch.no_grad():
        prefill = []
        for _ in range(prefill_reps):
            t = time.perf_counter()
            out = model(prompt, use_cache=True)
            prefill.append(time.perf_counter() - t)
        past, token, tokens, steps = out.past_key_values, out.logits[0, -1].argmax(), [], []
        for _ in range(new_tokens):
            tokens.append(int(token))
            t = time.perf_counter()
            out = model(token.view(1, 1), past_key_values=past, use_cache=True)
            steps.append(time.perf_counter() - t)
            past, token = out.past_key_values, out.logits[0, -1].argmax()
    print(json.dumps({"prefill_s": prefill, "step_s": steps, "tokens": tokens}), flush=True)
"""


def run(model_path: str | None = None, threads=(1, 2), rounds: int = 3, prompt_len: int = 128,
        new_tokens: int = 128, output: str | None = "bench-model.json", plot: str | None = "bench-model.png",
        seed: int = 0) -> dict:
    import kiln
    from .. import bandwidth, default_model

    path = model_path or default_model.path()
    device = kiln.runtime.Device.default()
    systems = {"kiln": kiln.compile_model(path, max_seq_len=prompt_len + new_tokens + 1, device=device)}
    if any(p.part for p in systems["kiln"].graph.params):
        systems["kiln_fp32"] = kiln.compile_model(path, max_seq_len=prompt_len + new_tokens + 1, device=device,
                                                  quantized_weights=False)
    vocab = systems["kiln"].graph.vocab_size
    ids = [int(i) for i in np.random.default_rng(seed).integers(100, vocab - 100, size=prompt_len)]
    folder, gguf = hf_source(path)
    workers = {t: _HFWorker(t, folder, gguf.get("gguf_file"), ids, new_tokens) for t in threads}
    samples = {t: {who: {"prefill_s": [], "decode_s": []} for who in (*systems, "hf")} for t in threads}
    agree = {t: {} for t in threads}
    try:
        with Progress(rounds * len(threads), "benchmarking", always=True) as bar:
            for _ in range(rounds):
                for t in threads:
                    device.num_threads = t
                    time.sleep(0.3)
                    runs = {who: _kiln_run(model, ids, new_tokens) for who, model in systems.items()}
                    runs["hf"] = workers[t].run()
                    for who, r in runs.items():
                        samples[t][who]["prefill_s"] += r["prefill_s"]
                        samples[t][who]["decode_s"] += r["step_s"]
                    for who in systems:
                        agree[t][who] = matching_prefix(runs[who]["tokens"], runs["hf"]["tokens"])
                    bar.advance(f"{t} threads")
        # Measured now, beside the runs (not a cached figure from another moment of a shared machine).
        limit = {t: bandwidth.measured_bandwidth(_with_threads(device, t), refresh=True) for t in threads}
    finally:
        for w in workers.values():
            w.close()
    weight_bytes = {who: model.weight_bytes_per_token for who, model in systems.items()}
    results = []
    for t in threads:
        row = {"threads": t, "new_tokens": new_tokens, "measured_bandwidth_gb_s": limit[t] / 1e9}
        for who in (*systems, "hf"):
            s = samples[t][who]
            row[who] = {
                "prefill_tok_s": prompt_len / float(np.median(s["prefill_s"])),
                "decode_tok_s": 1.0 / float(np.median(s["decode_s"])),
                "samples": s,
            }
        for who in systems:
            row[who].update({
                "tokens_identical": agree[t][who],
                "prefill_ratio": row[who]["prefill_tok_s"] / row["hf"]["prefill_tok_s"],
                "decode_ratio": row[who]["decode_tok_s"] / row["hf"]["decode_tok_s"],
                "weight_bytes_per_token": weight_bytes[who],
                "decode_bandwidth_share": weight_bytes[who] * row[who]["decode_tok_s"] / limit[t],
            })
        results.append(row)
    import torch
    import transformers

    rep = {
        "kiln_version": kiln.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": report_io.machine(),
        "model": path,
        "settings": {"prompt_tokens": prompt_len, "new_tokens": new_tokens, "rounds": rounds,
                     "prefill_reps": PREFILL_REPS,
                     "dtype": "float32", "peer": f"transformers {transformers.__version__}, torch "
                     f"{torch.__version__} eager", "systems": {who: _LABELS[who] for who in systems}},
        "results": results,
    }
    if output:
        report_io.write_json(output, rep)
    if plot:
        _plot(plot, rep)
    return rep


_LABELS = {"kiln": "Kiln", "kiln_fp32": "Kiln, fp32 weights"}
PREFILL_REPS = 3


def _kiln_run(model, ids, new_tokens) -> dict:
    prefill = []
    for _ in range(PREFILL_REPS):
        t = time.perf_counter()
        logits = model._prefill(ids)
        prefill.append(time.perf_counter() - t)
    tokens, steps = [], []
    for i in range(new_tokens):
        token = int(np.argmax(logits))
        tokens.append(token)
        t = time.perf_counter()
        logits = model._decode(token, len(ids) + i)
        steps.append(time.perf_counter() - t)
    return {"prefill_s": prefill, "step_s": steps, "tokens": tokens}


def hf_source(path: str) -> tuple:
    """(folder, extra from_pretrained arguments) from which HF transformers loads the model at `path`:
    a Hugging Face directory as it is, a .gguf file as its folder plus `gguf_file`."""
    if path.endswith(".gguf"):
        return os.path.dirname(path), {"gguf_file": os.path.basename(path)}
    return path, {}


def matching_prefix(a, b) -> int:
    """How many leading tokens two sequences share."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _with_threads(device, threads):
    device.num_threads = threads
    return device


class _HFWorker:
    def __init__(self, threads, path, gguf, ids, new_tokens):
        env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
        env["OMP_NUM_THREADS"] = str(threads)
        args = json.dumps([threads, path, gguf, ids, new_tokens, PREFILL_REPS])
        self.proc = subprocess.Popen([sys.executable, "-c", _HF_WORKER, args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)

    def run(self) -> dict:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise KilnError("the Hugging Face benchmark worker died (are torch and transformers installed?)")
        return json.loads(line)

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


def _plot(path, rep) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, metric, title in ((axes[0], "prefill_tok_s", f"prefill ({rep['settings']['prompt_tokens']} tokens)"),
                              (axes[1], "decode_tok_s", "decode")):
        names = {**rep["settings"]["systems"], "hf": "HF transformers (eager)"}
        labels = [f"{r['threads']} thr" for r in rep["results"]]
        x, width = np.arange(len(labels)), 0.8 / len(names)
        for i, (who, label) in enumerate(names.items()):
            ax.bar(x + (i - (len(names) - 1) / 2) * width, [r[who][metric] for r in rep["results"]], width,
                   label=label)
        ax.set_xticks(x, labels)
        ax.set_ylabel("tokens / s")
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.suptitle(os.path.basename(rep["model"]) + ", fp32")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(args) -> int:
    threads = tuple(int(t) for t in str(args.threads).split(","))
    output = args.output if args.output != "bench.json" else "bench-model.json"
    plot = args.plot if args.plot != "bench.png" else "bench-model.png"
    rep = run(args.model, threads, rounds=args.rounds, output=output, plot=plot or None, seed=args.seed)
    print(f"{'threads':>7} {'system':>9} {'prefill':>8} {'hf':>7} {'ratio':>6} {'decode':>7} {'hf':>6} "
          f"{'ratio':>6} {'bandwidth':>9} {'same tokens':>11}")
    for r in rep["results"]:
        for who in rep["settings"]["systems"]:
            k, h = r[who], r["hf"]
            print(f"{r['threads']:>7} {who:>9} {k['prefill_tok_s']:>8.1f} {h['prefill_tok_s']:>7.1f} "
                  f"{k['prefill_ratio']:>6.2f} {k['decode_tok_s']:>7.1f} {h['decode_tok_s']:>6.1f} "
                  f"{k['decode_ratio']:>6.2f} {100 * k['decode_bandwidth_share']:>8.0f}% "
                  f"{k['tokens_identical']:>6}/{r['new_tokens']}")
    print(f"report: {output}" + (f", plot: {plot}" if plot else ""))
    return 0
