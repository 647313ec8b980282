"""`kiln.compile`: IR in, a runnable Program (or any stage's IR) out, with stage control.

    program = kiln.compile(text, target="cpu")                    # -> kiln.runtime.Program
    ir_text = kiln.compile(text, compile_to="tiled")               # stop and print a stage
    program = kiln.compile(edited, compile_from="tiled")           # resume from (edited) IR
    kiln.compile(text, dump_phases_to="phases/", output="m.kiln")  # numbered file per stage

Entry-point signatures are recorded on the module (`kiln.entry_points`) at the start, so IR dumped
after bufferization can still be resumed into an artifact with checked calling conventions.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from typing import Callable, Optional, Union

from mlir import ir

from . import __version__, artifact, pipelines
from .errors import KilnError
from .pipelines import STAGES, cpu
from .pipelines.common import public_funcs
from .runtime import cpu as cpu_driver
from .signature import Signature

_SIGNATURES_ATTR = "kiln.entry_points"
# x86 feature flags (as /proc/cpuinfo names them) that code compiled for the host may use.
_FEATURE_PREFIXES = ("sse", "ssse", "avx", "fma", "f16c", "bmi", "amx", "vaes", "vpclmul", "gfni")


def compile(
    module: Union[str, ir.Module],
    target: str = "cpu",
    compile_to: Optional[str] = None,
    compile_from: Optional[str] = None,
    dump_phases_to: Optional[str] = None,
    output: Optional[str] = None,
    device=None,
    on_stage: Optional[Callable[[str, ir.Module], None]] = None,
    chip: Optional[str] = None,
    precision: Optional[str] = None,
):
    """Compiles `module` (IR text or an ir.Module, lowered in place) for `target`.

    Returns the IR text of stage `compile_to` when given (and not "artifact"), else a loaded
    `kiln.runtime.Program` on `device`. `output` also writes the `.kiln` artifact there.
    `on_stage(name, module)` is called after each IR stage.

    GPU targets ("cuda", "rocm") take a `chip` (default sm_80 / gfx942) and compile on any machine:
    without a `device` (a cuda/hip `kiln.runtime.Device`) they return the `kiln.artifact.Artifact`.
    Their `precision` ("f32" default, "bf16", "f16") is what GEMM-shaped contractions multiply in
    (operands rounded to it, sums in f32; tensor cores on cuda sm_80+ and on rocm gfx90a/gfx94x/
    gfx950/gfx11xx/gfx12xx); outputs stay f32.
    """
    for name, stage in (("compile_to", compile_to), ("compile_from", compile_from)):
        if stage is not None and stage not in STAGES:
            raise KilnError(f"unknown stage '{stage}' for {name}; stages are: {', '.join(STAGES)}")
    if compile_from == "artifact":
        raise KilnError("cannot resume from 'artifact': it is the last stage")
    pipelines.stage_functions(target)  # validates the target
    if compile_to and compile_from and STAGES.index(compile_to) <= STAGES.index(compile_from):
        raise KilnError(f"compile_to '{compile_to}' does not come after compile_from '{compile_from}'")
    if output and compile_to not in (None, "artifact"):
        raise KilnError(f"output= writes an artifact, but compile_to '{compile_to}' stops before one is made")

    module = parse_and_verify(module, "invalid input IR")
    with module.context, ir.Location.unknown():
        _check_declarations(module)
        signatures = _entry_signatures(module, compile_from)
        _record_chip(module, target, chip)
        _record_precision(module, target, precision)
        dump = _Dumper(dump_phases_to)
        dump("input" if compile_from is None else compile_from, module)

        def after_stage(name, m):
            dump(name, m)
            if on_stage is not None:
                on_stage(name, m)

        last_ir_stage = compile_to if compile_to not in (None, "artifact") else "llvm"
        if compile_from != "llvm":
            pipelines.lower(module, target, after=compile_from, to=last_ir_stage, on_stage=after_stage)
        if compile_to is not None and compile_to != "artifact":
            return str(module)
        art = _make_artifact(module, signatures, target)
    if dump_phases_to:
        dump.write_text("artifact.json", json.dumps(art.manifest, indent=1, sort_keys=True))
    if output:
        artifact.write(output, art)
    if target in pipelines.GPU_TARGETS and device is None:
        return art
    from .runtime import load_artifact

    return load_artifact(art, device, output or "compiled module")


def parse_and_verify(module: Union[str, ir.Module], error: str) -> ir.Module:
    """`module` as a verified ir.Module: text is parsed in a fresh Context; a Module (built in Python,
    not verified yet) is checked, since passes must not see invalid IR. Failures raise a KilnError
    starting with `error`, followed by the diagnostics."""
    if not isinstance(module, ir.Module):
        with ir.Context():
            try:
                module = ir.Module.parse(module)
            except ir.MLIRError as e:
                raise KilnError(f"{error}: {e}") from e
    with module.context:
        try:  # these bindings raise MLIRError with the verifier's diagnostics rather than return False
            verified = module.operation.verify()
        except ir.MLIRError as e:
            raise KilnError(f"{error}: {e}") from e
    if not verified:
        raise KilnError(f"{error}: the module does not verify")
    return module


def _check_declarations(module: ir.Module) -> None:
    """Only scalar functions (libm's) can be linked in: a declared function on tensors or buffers has no
    definition anywhere (and the deallocation of the buffers it returns crashes the llvm stage)."""
    for op in module.body.operations:
        if op.operation.name != "func.func" or len(op.regions[0].blocks) != 0:
            continue
        ftype = ir.FunctionType(ir.TypeAttr(op.attributes["function_type"]).value)
        if any(isinstance(t, ir.ShapedType) for t in list(ftype.inputs) + list(ftype.results)):
            name = ir.StringAttr(op.attributes["sym_name"]).value
            raise KilnError(f"function @{name} is declared but not defined: Kiln cannot link external "
                            "functions on tensors or buffers; define it in the module")


def _entry_signatures(module: ir.Module, compile_from: Optional[str] = None) -> dict:
    attrs = module.operation.attributes
    if _SIGNATURES_ATTR in attrs:
        return json.loads(ir.StringAttr(attrs[_SIGNATURES_ATTR]).value)
    if compile_from is not None and STAGES.index(compile_from) >= STAGES.index("bufferized"):
        raise KilnError(
            f"IR after stage '{compile_from}' no longer shows the entry points' tensor signatures: it must "
            f"carry the module attribute {_SIGNATURES_ATTR} that kiln.compile records (resume from IR it dumped)"
        )
    signatures = {}
    for func in public_funcs(module):
        sig = Signature.of_func(func)
        signatures[sig.name] = sig.to_json()
    if not signatures:
        raise KilnError("the module has no public function to use as an entry point")
    recorded = json.dumps(signatures, sort_keys=True)
    attrs[_SIGNATURES_ATTR] = ir.StringAttr.get(recorded)
    return json.loads(recorded)  # as resuming and kiln.load see them (entry points in sorted order)


def _record_chip(module: ir.Module, target: str, chip: Optional[str]) -> None:
    """GPU targets: the chip goes on the module (`kiln.target_chip`), so IR resumed later keeps it."""
    if target not in pipelines.GPU_TARGETS:
        if chip is not None:
            raise KilnError(f"chip= applies to the GPU targets (cuda, rocm), not to '{target}'")
        return
    from .pipelines import cuda, gpu, rocm

    backend = cuda if target == "cuda" else rocm
    attrs = module.operation.attributes
    if chip is None:
        if gpu.CHIP_ATTR in attrs:
            return
        chip = backend.DEFAULT_CHIP
    attrs[gpu.CHIP_ATTR] = ir.StringAttr.get(backend.check_chip(chip))


def _record_precision(module: ir.Module, target: str, precision: Optional[str]) -> None:
    """GPU targets: the GEMM precision goes on the module (`kiln.precision`), so IR resumed later keeps it."""
    from .pipelines import gpu_mma

    if precision is not None:
        gpu_mma.check_precision(precision)
    if target not in pipelines.GPU_TARGETS:
        if precision not in (None, "f32"):
            raise KilnError(f"precision '{precision}' applies to the GPU targets (cuda, rocm); "
                            f"the '{target}' target computes in f32")
        return
    attrs = module.operation.attributes
    if precision is None:
        if gpu_mma.PRECISION_ATTR in attrs:
            return
        precision = "f32"
    attrs[gpu_mma.PRECISION_ATTR] = ir.StringAttr.get(precision)


def _make_artifact(module: ir.Module, signatures: dict, target: str = "cpu") -> artifact.Artifact:
    """The target's executables and manifest (GPU targets: pipelines.cuda / pipelines.rocm)."""
    if target in pipelines.GPU_TARGETS:
        from .pipelines import cuda, rocm

        return (cuda if target == "cuda" else rocm).build_artifact(module, signatures)
    cpu_name = cpu.host_cpu()
    features = sorted(f for f in cpu_driver.host_cpu_features() if f.startswith(_FEATURE_PREFIXES))
    kernels = [
        {"name": op.attributes["sym_name"].value, "class": op.attributes["kiln.kernel_class"].value}
        for op in module.body.operations
        if "kiln.kernel_class" in op.attributes
    ]
    manifest = {
        "format": artifact.FORMAT_VERSION,
        "kiln_version": __version__,
        "mlir_version": importlib.metadata.version("xtc-mlir-python-bindings"),
        "target": {"driver": "cpu", "triple": cpu.TRIPLE, "cpu": cpu_name,
                   "cpu_features": features},
        "entry_points": signatures,
        "kernels": kernels,
    }
    so = cpu.build_shared_object(module, cpu_name)
    return artifact.Artifact(manifest, {"executable": so})


class _Dumper:
    """Writes NN-stage.mlir files into a directory (numbered by stage position)."""

    def __init__(self, directory: Optional[str]):
        self.directory = directory
        if directory:
            try:
                os.makedirs(directory, exist_ok=True)
            except OSError as e:
                raise KilnError(f"cannot create the phase dump directory {directory}: {e.strerror or e}") from e

    def __call__(self, stage: str, module: ir.Module) -> None:
        if not self.directory:
            return
        number = 0 if stage == "input" else STAGES.index(stage) + 1
        self.write_text(f"{number:02d}-{stage}.mlir", str(module))

    def write_text(self, name: str, text: str) -> None:
        path = os.path.join(self.directory, name)
        try:
            with open(path, "w") as f:
                f.write(text)
        except OSError as e:
            raise KilnError(f"cannot write {path}: {e.strerror or e}") from e
