"""Per-kernel schedules for the `tiled` stage, written in the transform dialect and built from Python.

A schedule is a small dataclass of explicit parameters; `transform_script()` turns the schedules of a
module's kernels into one transform-dialect module that the interpreter applies. Kernels are found by
symbol name and their root op by the `kiln.root` attribute that dispatch formation sets.

Today every kernel class gets the same structure: its parallel loops are tiled into a workgroup grid
(`scf.forall`, run on the device's thread pool) and the fills that initialize it are fused into each
workgroup. Class-specific schedules (packed GEMM, matvec, flash attention) plug in here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlir import ir


@dataclass(frozen=True)
class Kernel:
    """What the tiled stage knows about one dispatch function."""

    name: str
    kernel_class: str
    loop_ranges: tuple  # static trip counts, -1 where dynamic
    iterator_types: str  # one letter per loop: p(arallel) or r(eduction)
    has_init_fill: bool


@dataclass(frozen=True)
class Schedule:
    """Explicit parameters of a kernel's schedule."""

    workgroup_tiles: tuple  # per loop; 0 = not tiled


def kernels_of(module: ir.Module) -> list:
    kernels = []
    for op in module.body.operations:
        if op.operation.name != "func.func" or "kiln.dispatch" not in op.attributes:
            continue
        attrs = op.attributes
        body_ops = [o.operation.name for o in op.regions[0].blocks[0].operations]
        kernels.append(
            Kernel(
                name=ir.StringAttr(attrs["sym_name"]).value,
                kernel_class=ir.StringAttr(attrs["kiln.kernel_class"]).value,
                loop_ranges=tuple(ir.DenseI64ArrayAttr(attrs["kiln.loop_ranges"])),
                iterator_types=ir.StringAttr(attrs["kiln.iterator_types"]).value,
                has_init_fill="linalg.fill" in body_ops[:-2],
            )
        )
    return kernels


def default_schedule(kernel: Kernel, target_workgroups: int = 64) -> Schedule:
    """Tiles the outermost parallel loops so there are about `target_workgroups` workgroups."""
    tiles = [0] * len(kernel.loop_ranges)
    remaining = target_workgroups
    for i, (extent, kind) in enumerate(zip(kernel.loop_ranges, kernel.iterator_types)):
        if kind != "p" or extent < 0 or remaining <= 1:
            break
        if extent <= remaining:
            tiles[i] = 1
            remaining = math.ceil(remaining / extent)
        else:
            tiles[i] = math.ceil(extent / remaining)
            remaining = 1
    return Schedule(tuple(tiles))


def transform_script(plan: list) -> str:
    """The transform module applying `plan`, a list of (Kernel, Schedule)."""
    any_op = "!transform.any_op"
    lines = [
        "module attributes {transform.with_named_sequence} {",
        f"  transform.named_sequence @__transform_main(%root: {any_op} {{transform.readonly}}) {{",
    ]
    for i, (kernel, schedule) in enumerate(plan):
        if not any(schedule.workgroup_tiles):
            continue
        tiles = ", ".join(map(str, schedule.workgroup_tiles))
        lines += [
            f'    %f{i} = transform.structured.match ops{{["func.func"]}} '
            f'attributes{{sym_name = "{kernel.name}"}} in %root : ({any_op}) -> {any_op}',
            f"    %r{i} = transform.structured.match attributes{{kiln.root}} in %f{i} : ({any_op}) -> {any_op}",
            f"    %t{i}, %wg{i} = transform.structured.tile_using_forall %r{i} tile_sizes [{tiles}] "
            f": ({any_op}) -> ({any_op}, {any_op})",
        ]
        if kernel.has_init_fill:
            lines += [
                f'    %fill{i} = transform.structured.match ops{{["linalg.fill"]}} in %f{i} '
                f": ({any_op}) -> {any_op}",
                f"    %fused{i}, %wg{i}b = transform.structured.fuse_into_containing_op %fill{i} into %wg{i} "
                f": ({any_op}, {any_op}) -> ({any_op}, {any_op})",
            ]
    lines += ["    transform.yield", "  }", "}"]
    return "\n".join(lines)
