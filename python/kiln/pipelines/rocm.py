"""The ROCm target after `loops`: gpu.module -> rocdl (llvm stage) -> hsaco (artifact stage).

The pinned MLIR/LLVM wheels have no AMDGPU backend, so only the lowering to the rocdl dialect runs in
process. Each gpu.module's body is translated to LLVM IR text (the wheels' mlir-translate), then
Debian's LLVM 22 optimizes, compiles and links it as subprocesses (`apt-get install llvm-22 lld-22`):

    opt-22 -O3  ->  llc-22 -mtriple=amdgcn-amd-amdhsa -mcpu=<chip> -filetype=obj  ->  ld.lld-22 -shared  ->  hsaco

(llc alone runs no middle-end: without opt, private arrays such as a GEMM's prefetch buffer stay in
scratch memory.)

Both LLVMs are 22.1.x, so the IR text is compatible. ROCm's device libraries (ocml) are not available
from apt, so math is lowered without them: tanh is expanded to exp, erf to a polynomial
(`gpu.expand_erf`), and exp/sin/cos/sqrt/... become LLVM intrinsics the AMDGPU backend implements.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile

from mlir import ir

from ..errors import KilnError
from . import cpu, gpu
from .common import run_passes

DEFAULT_CHIP = "gfx942"
TRIPLE = "amdgcn-amd-amdhsa"
_CHIP = re.compile(r"^gfx[0-9a-f]{3,4}$")


def check_chip(chip: str) -> str:
    if not _CHIP.match(chip or ""):
        raise KilnError(f"unknown ROCm chip '{chip}': give an AMDGPU architecture such as gfx942 or gfx1100")
    return chip


@functools.lru_cache(maxsize=None)
def llvm22_tool(name: str) -> str:
    """Debian's LLVM 22 `name` (llc, ld.lld, llvm-readobj): name-22 on the PATH or /usr/lib/llvm-22/bin."""
    for candidate in (shutil.which(f"{name}-22"), f"/usr/lib/llvm-22/bin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    package = "lld-22" if name == "ld.lld" else "llvm-22"
    raise KilnError(f"the rocm target needs LLVM 22's {name} with the AMDGPU backend ({name}-22 not found on "
                    f"the PATH or in /usr/lib/llvm-22/bin): apt-get install {package}")


def make_llvm(module: ir.Module) -> None:
    """Attach the ROCDL target (chip from `kiln.target_chip`) and lower every gpu.module to the LLVM +
    ROCDL dialects (bare-pointer kernel arguments, math without device libraries). amdgpu ops
    (tensor-core kernels: mfma, wmma) are lowered with the gpu ones; vector ops after them, whose
    conversion maps shared memory (#gpu.address_space<workgroup>) to AMDGPU address space 3."""
    chip = check_chip(gpu.target_chip(module, DEFAULT_CHIP))
    run_passes(module, "gpu.module(math-expand-ops{ops=tanh})", "llvm")
    gpu.expand_erf(module)
    run_passes(
        module,
        f"rocdl-attach-target{{chip={chip} O=3}},"
        "gpu.module(expand-strided-metadata,lower-affine,convert-scf-to-cf,"
        f"convert-gpu-to-rocdl{{chipset={chip} use-bare-ptr-memref-call-conv index-bitwidth=64 runtime=HIP}},"
        "convert-vector-to-llvm,convert-ub-to-llvm,canonicalize,cse,reconcile-unrealized-casts)",
        "llvm",
    )
    gpu.extern_dynamic_shared_memory(module)


# The ocml functions convert-gpu-to-rocdl calls for math ops, defined by LLVM intrinsics that the AMDGPU
# backend implements (ROCm's ocml bitcode is not installable from apt).
_OCML = {
    "__ocml_exp_f32": "call float @llvm.exp.f32(float %x)",
    "__ocml_exp2_f32": "call float @llvm.exp2.f32(float %x)",
    "__ocml_log_f32": "call float @llvm.log.f32(float %x)",
    "__ocml_log2_f32": "call float @llvm.log2.f32(float %x)",
    "__ocml_sin_f32": "call float @llvm.sin.f32(float %x)",
    "__ocml_cos_f32": "call float @llvm.cos.f32(float %x)",
    "__ocml_sqrt_f32": "call float @llvm.sqrt.f32(float %x)",
    "__ocml_floor_f32": "call float @llvm.floor.f32(float %x)",
    "__ocml_ceil_f32": "call float @llvm.ceil.f32(float %x)",
    "__ocml_fabs_f32": "call float @llvm.fabs.f32(float %x)",
}
_DECLARE = re.compile(r"^declare [^@]*@([A-Za-z0-9_.$]+)\(.*$", re.M)


def _define_math(text: str, kernel: str) -> str:
    """Replaces the ocml declarations of `text` (LLVM IR) with definitions from `_OCML` (rsqrt: 1/sqrt)."""
    defs = []

    def replace(m):
        name = m.group(1)
        if name.startswith("llvm."):
            return m.group(0)
        if name == "__ocml_rsqrt_f32":
            body = "%s = call float @llvm.sqrt.f32(float %x)\n  %r = fdiv float 1.0, %s"
        elif name in _OCML:
            body = f"%r = {_OCML[name]}"
        else:
            raise KilnError(f"stage 'artifact' (rocm): kernel {kernel} calls {name} from ROCm's device "
                            "libraries, which Kiln does not provide (only " + ", ".join(sorted(_OCML)) + ")")
        defs.append(f"define internal float @{name}(float %x) alwaysinline {{\n  {body}\n  ret float %r\n}}")
        return ""

    text = _DECLARE.sub(replace, text)
    return text + "\n" + "\n".join(defs) + "\n"


def llvm_ir(module: ir.Module) -> dict:
    """{kernel module name: LLVM IR text} for each gpu.module after the rocm `llvm` stage."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="kiln-rocdl-") as tmp:
        for name, body in gpu.kernel_modules(module):
            text = "module {\n" + "\n".join(str(op) for op in body.operations) + "\n}\n"
            src, ll = os.path.join(tmp, "k.mlir"), os.path.join(tmp, "k.ll")
            with open(src, "w") as f:
                f.write(text)
            _run([cpu.tool("mlir-translate"), "--mlir-to-llvmir", src, "-o", ll], name)
            with open(ll) as f:
                out[name] = _define_math(f.read(), name)
    return out


def hsaco(ir_text: str, chip: str, name: str = "kernel") -> bytes:
    """An AMDGPU code object (ELF shared object) for `chip` from LLVM IR text."""
    with tempfile.TemporaryDirectory(prefix="kiln-hsaco-") as tmp:
        ll, bc, obj, so = (os.path.join(tmp, n) for n in ("k.ll", "k.bc", "k.o", "k.hsaco"))
        with open(ll, "w") as f:
            f.write(ir_text)
        target = [f"-mtriple={TRIPLE}", f"-mcpu={chip}"]
        _run([llvm22_tool("opt"), "-O3", *target, ll, "-o", bc], name)
        _run([llvm22_tool("llc"), "-O3", *target, "-filetype=obj", bc, "-o", obj], name)
        _run([llvm22_tool("ld.lld"), "-shared", obj, "-o", so], name)
        with open(so, "rb") as f:
            return f.read()


def build_artifact(module: ir.Module, signatures: dict):
    """The `.kiln` artifact of a module after the rocm `llvm` stage: one hsaco per kernel."""
    chip = check_chip(gpu.target_chip(module, DEFAULT_CHIP))
    binaries = {name: {"hsaco": hsaco(text, chip, name)} for name, text in llvm_ir(module).items()}
    target = {"driver": "hip", "chip": chip, "triple": TRIPLE, "formats": ["hsaco"]}
    return gpu.build_artifact(module, signatures, target, binaries)


def _run(cmd: list, kernel: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise KilnError(f"stage 'artifact' (rocm): {os.path.basename(cmd[0])} failed on kernel {kernel}:\n"
                        f"{proc.stderr.strip()}")
