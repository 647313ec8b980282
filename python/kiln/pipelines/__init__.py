"""Kiln's compilation pipelines: one short function per stage, composed per target.

    transformer -> linalg -> dispatch -> tiled -> bufferized -> loops -> llvm -> artifact

The stages up to `dispatch` are shared by all targets (`common.py`); the rest are the target's
(`cpu.py`). Every stage rewrites the module in place and can be stopped at, printed and resumed from.
"""

from __future__ import annotations

from ..targets import GPU_TARGETS, STAGES, TARGETS  # noqa: F401 (re-exported: the pipelines' names)
from . import common, cpu


def stage_functions(target: str) -> dict:
    """name -> function(module) for every IR-to-IR stage of `target` (all but `artifact`)."""
    if target not in TARGETS:
        from ..errors import KilnError

        raise KilnError(f"unknown target '{target}'; targets: {', '.join(TARGETS)}")
    if target in GPU_TARGETS:  # gpu.py: block/thread mapping and kernel outlining; then nvvm or rocdl
        from . import cuda, gpu, rocm

        return {
            "transformer": common.make_transformer,
            "linalg": gpu.make_linalg,
            "dispatch": common.make_dispatch,
            "tiled": gpu.make_tiled,
            "bufferized": gpu.make_bufferized,
            "loops": gpu.make_loops,
            "llvm": (cuda if target == "cuda" else rocm).make_llvm,
        }
    return {
        "transformer": common.make_transformer,
        "linalg": cpu.make_linalg,
        "dispatch": common.make_dispatch,
        "tiled": cpu.make_tiled,
        "bufferized": cpu.make_bufferized,
        "loops": cpu.make_loops,
        "llvm": cpu.make_llvm,
    }


def lower(module, target: str = "cpu", after=None, to: str = "llvm", on_stage=None):
    """Runs the IR stages of `target` that follow stage `after` (None: from the start) up to `to`.

    Calls `on_stage(name, module)` after each stage; returns the module (rewritten in place).
    """
    from ..errors import KilnError

    functions = stage_functions(target)
    if to not in functions:
        raise KilnError(f"'{to}' is not an IR stage; IR stages are: {', '.join(functions)}")
    first = 0 if after is None else STAGES.index(after) + 1
    for name in STAGES[first : STAGES.index(to) + 1]:
        functions[name](module)
        if on_stage is not None:
            on_stage(name, module)
    return module
