"""`kiln bench`: Kiln's kernels and a decoder stack against numpy, PyTorch eager and (when installed)
onnxruntime and IREE, side by side.

For each workload Kiln's compiled program (in this process) and the peers (in a worker process per
thread count, see peers.py) are timed in interleaved rounds; the report keeps every sample and the
medians, the speed ratios (peer time / Kiln time) and a cross-check of the outputs.

    kiln bench [--suite full|smoke] [--threads 1,2] [--rounds 4] [-o bench.json] [--plot bench.png]
"""

from __future__ import annotations

import datetime
import importlib.metadata
import sys

import numpy as np

from ..errors import KilnError
from ..progress import Progress
from . import report as report_io
from .peers import PeerWorker, available_peers, fingerprint
from .timing import SETTLE_S, median, time_calls
from .workloads import suite as make_suite


def run(suite: str = "full", threads=(1, 2), rounds: int = 4, reps: int = 5, seed: int = 0,
        output: str | None = "bench.json", plot: str | None = "bench.png") -> dict:
    import kiln

    workloads = make_suite(suite)
    peers = available_peers()
    # One device for every program: its thread count is what each round sets.
    device = kiln.runtime.Device.default()
    programs = {}
    with Progress(len(workloads), "compiling", always=True) as bar:
        for w in workloads:
            programs[w.name] = kiln.compile(w.kiln_ir(), device=device)
            bar.advance(w.name)
    inputs = {w.name: w.make_inputs(np.random.default_rng(seed)) for w in workloads}
    kiln_inputs = {w.name: w.kiln_inputs(inputs[w.name]) if w.kiln_inputs else inputs[w.name] for w in workloads}
    samples = {}  # (workload, threads) -> {"kiln": [...], peer: [...]}
    checks = {}
    failed = {}  # workload -> {peer: why it could not run it}
    workers = {t: PeerWorker(t) for t in threads}
    try:
        with Progress(rounds * len(threads) * len(workloads), "benchmarking", always=True) as bar:
            for _ in range(rounds):
                for t in threads:
                    device.num_threads = t
                    for w in workloads:
                        fn = programs[w.name].f
                        args = kiln_inputs[w.name]
                        s = samples.setdefault((w.name, t), {"kiln": []})
                        s["kiln"] += time_calls(lambda: fn(*args), reps, settle=SETTLE_S)
                        reply = workers[t].time(suite, w.name, seed, reps, peers)
                        for p in peers:
                            if p in reply:
                                s.setdefault(p, []).extend(reply[p])
                        checks[w.name] = (fingerprint(fn(*args)[0]), reply.get("outputs", {}))
                        for p, why in reply.get("failed", {}).items():
                            if p not in failed.setdefault(w.name, {}):
                                print(f"warning: {p} cannot run {w.name}: {why}", file=sys.stderr)
                            failed[w.name][p] = why
                        bar.advance(f"{w.name} @{t}t")
    finally:
        for worker in workers.values():
            worker.close()
    report = _report(workloads, samples, checks, failed, suite, threads, rounds, reps, peers)
    if output:
        report_io.write_json(output, report)
    if plot:
        report_io.plot(plot, report)
    return report


def _report(workloads, samples, checks, failed, suite, threads, rounds, reps, peers) -> dict:
    import kiln

    results = []
    by_name = {w.name: w for w in workloads}
    for (name, t), s in samples.items():
        med = {k: median(v) for k, v in s.items()}
        kiln_out, peer_outs = checks[name]
        results.append({
            "workload": name, "group": by_name[name].group, "threads": t,
            "median_ms": med, "samples_ms": s,
            "speedup": {p: med[p] / med["kiln"] for p in med if p != "kiln"},
            "kiln_gflops": by_name[name].flops / (med["kiln"] * 1e6),
            "output_check": {p: _agreement(kiln_out, o) for p, o in peer_outs.items()},
            "peer_errors": failed.get(name, {}),
        })
    return {
        "kiln_version": kiln.__version__,
        "mlir_version": importlib.metadata.version("xtc-mlir-python-bindings"),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": report_io.machine(),
        "settings": {"suite": suite, "threads": list(threads), "rounds": rounds, "reps_per_round": reps,
                     "peers": peers, "numpy_env": "OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset"},
        "results": results,
    }


def _agreement(a: list, b: list) -> float:
    """Largest relative difference between two output fingerprints."""
    return max(abs(x - y) / max(abs(y), 1e-30) for x, y in zip(a, b))


def main(args) -> int:
    threads = tuple(int(t) for t in str(args.threads).split(","))
    if any(t < 1 for t in threads):
        raise KilnError(f"--threads must be positive integers, got {args.threads}")
    rep = run(args.suite, threads, args.rounds, args.reps, args.seed, args.output, args.plot)
    peers = rep["settings"]["peers"]
    widths = {p: max(10, len(p) + 3) for p in peers}
    print(f"{'workload':<44} {'thr':>3} {'kiln ms':>9} " + " ".join(f"{p + ' ms':>{widths[p]}} {'ratio':>6}"
                                                               for p in peers))
    for r in rep["results"]:
        cols = " ".join(
            f"{r['median_ms'].get(p, float('nan')):>{widths[p]}.3f} {r['speedup'].get(p, float('nan')):>6.2f}"
            for p in peers)
        print(f"{r['workload']:<44} {r['threads']:>3} {r['median_ms']['kiln']:>9.3f} {cols}")
    if args.output:
        print(f"report: {args.output}" + (f", plot: {args.plot}" if args.plot else ""))
    return 0
