"""Autotuning: search each kernel's schedule parameters on this machine and remember the winners.

`tune(module)` lowers a module to the `dispatch` stage, and for every kernel with static shapes compiles
and times each candidate schedule (`schedules.candidates`) on its own, with random inputs. Winners go
to a persistent cache keyed by the kernel's signature, the host CPU and the Kiln version; the `tiled`
stage looks kernels up there before falling back to `schedules.default_schedule`.

`tune(module, target="cuda"|"rocm")` does the same on this machine's GPU for its tensor-core GEMMs:
the candidates are `gpu_mma.tile_candidates` (block, warp and K tiles, shared-memory staging), each
kernel timed as one graph launch; a tile whose result differs from the default tile's (the one the
emulator tests) is refused and recorded as "wrong". Winners are keyed by the GPU's chip instead of
the CPU, and the GPU `tiled` stage looks them up (`gpu_mma.mma_schedule`). Other GPU kernels have no
candidates yet.

The cache is one JSON file (`$KILN_CACHE_DIR/tuning.json`, default `~/.cache/kiln/tuning.json`).
Updates are read-modify-write under an exclusive `flock` and land with an atomic rename, so two
processes tuning at once lose nothing and a reader never sees a half-written file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import tempfile
from typing import Optional

import numpy as np
from mlir import ir

from .errors import KilnError


def cache_dir() -> str:
    return os.environ.get("KILN_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "kiln")


class TuningCache:
    """Schedules that won on this machine, keyed by `kernel_key`."""

    def __init__(self, path: Optional[str] = None):
        self.path = path or os.path.join(cache_dir(), "tuning.json")

    def get(self, key: str) -> Optional[dict]:
        return self._read().get(key)

    def put(self, key: str, entry: dict) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with self._locked():
            data = self._read()
            data[key] = entry
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(self.path), suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)

    def entries(self) -> dict:
        return self._read()

    def _read(self) -> dict:
        try:
            with open(self.path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError) as e:
            raise KilnError(f"the tuning cache {self.path} is unreadable ({e}); delete it to start over") from e
        return data if isinstance(data, dict) else {}

    @contextlib.contextmanager
    def _locked(self):
        with open(self.path + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def kernel_key(kernel, arg_types: list, cpu: str) -> str:
    """What makes two kernels interchangeable for tuning: class, loops, operand types, CPU (or GPU
    chip), version."""
    from . import __version__

    return json.dumps(
        {
            "class": kernel.kernel_class,
            "loops": list(kernel.loop_ranges),
            "iterators": kernel.iterator_types,
            "args": [str(t) for t in arg_types],
            "cpu": cpu,
            "kiln": __version__,
        },
        sort_keys=True,
    )


def tune(module_text: str, reps: int = 5, cache: Optional[TuningCache] = None, progress=True,
         target: str = "cpu", precision: str = "f32", device=None, chip: Optional[str] = None) -> list:
    """Tunes every kernel of `module_text` (GPU targets: its tensor-core GEMMs, on `device` or this
    machine's GPU, whose chip is `chip` or the one the driver reports); returns one result dict per
    kernel."""
    from . import compiler, pipelines
    from .pipelines import cpu, schedules
    from .progress import Progress

    cache = cache or TuningCache()
    if target != "cpu":
        return _tune_tensor_cores(module_text, target, precision, reps, cache, progress, device, chip)
    host = cpu.host_cpu()
    module = compiler.parse_and_verify(module_text, "invalid input IR")
    with module.context, ir.Location.unknown():
        pipelines.lower(module, to="dispatch")
        jobs = []
        for kernel in schedules.kernels_of(module):
            if -1 in kernel.loop_ranges:
                continue  # dynamic shapes: nothing fixed to tune for
            func = _find_func(module, kernel.name)
            arg_types = list(ir.FunctionType(ir.TypeAttr(func.attributes["function_type"]).value).inputs)
            jobs.append((kernel, arg_types, _standalone_kernel(module, kernel.name)))
    results = []
    total = sum(len(schedules.candidates(k)) for k, _, _ in jobs)
    with Progress(total, "tuning", always=progress) as bar:
        for kernel, arg_types, text in jobs:
            timings = []
            for schedule in schedules.candidates(kernel):
                ms = _time_schedule(text, schedule, reps)
                timings.append((ms, schedule))
                bar.advance(f"{kernel.name} {ms:.3f} ms")
            best_ms, best = min(timings, key=lambda t: t[0])
            default_ms = next((ms for ms, s in timings if s == schedules.default_schedule(kernel)), None)
            entry = {"schedule": dataclasses.asdict(best), "ms": best_ms, "default_ms": default_ms,
                     "candidates": len(timings)}
            cache.put(kernel_key(kernel, arg_types, host), entry)
            results.append({"kernel": kernel.name, **entry})
    return results


def _tune_tensor_cores(module_text: str, target: str, precision: str, reps: int, cache: TuningCache, progress,
                       device, chip) -> list:
    """`tune` on a GPU: every tile of `gpu_mma.tile_candidates` for each tensor-core GEMM."""
    from . import compiler
    from .pipelines import gpu_mma, schedules
    from .progress import Progress
    from .runtime import Device

    device = device or Device("cuda" if target == "cuda" else "hip")
    chip = chip or device.gpu.chip
    if not chip:
        raise KilnError(f"tuning for {target} needs the GPU's chip, which its driver does not report: give it "
                        "(--chip gfx942, ...)")
    dispatch = compiler.compile(module_text, target=target, chip=chip, precision=precision, compile_to="dispatch")
    jobs = []
    with ir.Context():
        module = ir.Module.parse(dispatch)
        precision = gpu_mma.module_precision(module)
        for kernel in schedules.kernels_of(module):
            func = _find_func(module, kernel.name)
            default, _ = gpu_mma.mma_schedule(kernel, func, precision, chip)  # untuned: no cache
            if default is None:
                continue
            arg_types = list(ir.FunctionType(ir.TypeAttr(func.attributes["function_type"]).value).inputs)
            jobs.append((kernel, kernel_key(kernel, arg_types, chip), _standalone_kernel(module, kernel.name),
                         gpu_mma.tile_candidates(kernel, chip), default))
    results = []
    with Progress(sum(len(j[3]) + 1 for j in jobs), f"tuning tensor-core tiles on {chip}", always=progress) as bar:
        for kernel, key, text, candidates, default in jobs:
            default_ms, expected = _time_tile(text, default, target, chip, device, reps)
            bar.advance(f"{kernel.name} {default.attribute()} (default) {default_ms:.3f} ms")
            timings, wrong = [(default_ms, default)], []
            for tile in candidates:
                if tile == default:
                    continue
                ms, got = _time_tile(text, tile, target, chip, device, reps)
                right = _agrees(got, expected)
                if right:
                    timings.append((ms, tile))
                else:
                    wrong.append(tile.attribute())
                bar.advance(f"{kernel.name} {tile.attribute()} {ms:.3f} ms{'' if right else ' WRONG'}")
            best_ms, best = min(timings, key=lambda t: t[0])
            entry = {"mma_tile": best.attribute(), "ms": best_ms, "default_ms": default_ms,
                     "candidates": len(timings) + len(wrong), "device": device.gpu.device_name}
            if wrong:
                entry["wrong"] = wrong
            cache.put(key, entry)
            results.append({"kernel": kernel.name, "schedule": {"mma_tile": best.attribute()}, **entry})
    return results


def _agrees(got: np.ndarray, expected: np.ndarray) -> bool:
    """Does a tile's result match the default tile's (tested on the emulator) on the same inputs? Both
    sum bf16/f16 products in f32, in different orders, and may round C to bf16/f16: a difference of
    a rounding step of C is expected, a wrong fragment layout or staging is not."""
    got, expected = got.astype(np.float64), expected.astype(np.float64)
    scale = np.abs(expected).max() if expected.size else 0.0
    return bool(np.all(np.abs(got - expected) <= 2.0 ** -7 * np.abs(expected) + 1e-3 * scale))


def _time_tile(kernel_text: str, tile, target: str, chip: str, device, reps: int) -> tuple:
    """Compiles a standalone GEMM kernel with tensor-core `tile` forced and returns its median time
    in ms on `device` (one graph launch and a synchronization per call) and its result, on random
    inputs (the same for every tile)."""
    from . import compiler
    from .bench.timing import median, time_calls
    from .pipelines import gpu_mma

    with ir.Context():
        module = ir.Module.parse(kernel_text)
        func = next(op for op in module.body.operations if op.operation.name == "func.func")
        func.attributes[gpu_mma.MMA_ATTR] = ir.DenseI64ArrayAttr.get(tile.attribute())
        program = compiler.compile(str(module), target=target, chip=chip, compile_from="dispatch", device=device)
    entry = program.entry_point(program.entry_points[0])
    rng = np.random.default_rng(0)
    args = [device.upload(rng.standard_normal(spec.shape).astype(spec.dtype)) for spec in entry.signature.args]
    outs = [device.allocate(entry.signature.results[j].shape, entry.signature.results[j].dtype)
            for j in entry.signature.returned_results]
    ms = median(time_calls(entry.bind(*args, out=outs), reps))
    return ms, outs[0].to_numpy()


def _find_func(module: ir.Module, name: str):
    for op in module.body.operations:
        if op.operation.name == "func.func" and ir.StringAttr(op.attributes["sym_name"]).value == name:
            return op
    raise KilnError(f"no kernel @{name}")


def _standalone_kernel(module: ir.Module, name: str) -> str:
    """A module holding only kernel `name`, made a public entry point (IR after the dispatch stage)."""
    copy = ir.Module.parse(str(module))
    for op in list(copy.body.operations):
        if op.operation.name != "func.func":
            continue
        if ir.StringAttr(op.attributes["sym_name"]).value != name:
            op.operation.erase()
        else:
            del op.attributes["sym_visibility"]
    if "kiln.entry_points" in copy.operation.attributes:
        del copy.operation.attributes["kiln.entry_points"]
    return str(copy)


def _time_schedule(kernel_text: str, schedule, reps: int) -> float:
    """Compiles a standalone kernel with `schedule` forced and returns its median time in ms."""
    from . import compiler
    from .bench.timing import median, time_calls

    with ir.Context():
        module = ir.Module.parse(kernel_text)
        with module.context:
            func = next(op for op in module.body.operations if op.operation.name == "func.func")
            func.attributes["kiln.schedule"] = ir.StringAttr.get(json.dumps(dataclasses.asdict(schedule)))
        program = compiler.compile(module, compile_from="dispatch")
    entry = program.entry_point(program.entry_points[0])
    rng = np.random.default_rng(0)
    args = []
    for spec in entry.signature.args:
        if spec.is_scalar:
            args.append(0)
        elif np.issubdtype(spec.dtype, np.integer):
            args.append(np.zeros(spec.shape, dtype=spec.dtype))  # valid indices for gathers
        else:
            args.append(rng.standard_normal(spec.shape).astype(spec.dtype))
    return median(time_calls(lambda: entry(*args), reps))
