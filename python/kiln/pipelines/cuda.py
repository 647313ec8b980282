"""The CUDA target after `loops`: gpu.module -> nvvm (llvm stage) -> PTX, and cubin when ptxas exists.

Everything runs in-process through MLIR's NVPTX backend (`gpu-module-to-binary{format=isa}`), so PTX
is produced on any machine; the CUDA driver JIT-compiles it at load time. When `ptxas` is found
(CUDA toolkit or the `nvidia-cuda-nvcc` wheel) the artifact also carries a cubin per kernel, which
the driver loads without JIT. Math functions (exp, sin, erf, rsqrt, ...) become libdevice calls,
linked from the toolkit's libdevice.10.bc.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import subprocess
import sys
import tempfile

from mlir import ir

from ..errors import KilnError
from . import gpu
from .common import run_passes

DEFAULT_CHIP = "sm_80"
_CHIP = re.compile(r"^sm_(\d+)a?$")


def check_chip(chip: str) -> str:
    m = _CHIP.match(chip or "")
    if not m or int(m.group(1)) < 50:
        raise KilnError(f"unknown CUDA chip '{chip}': give an SM architecture such as sm_80 or sm_90")
    return chip


def _cuda_roots() -> list:
    roots = [os.environ.get(v) for v in ("CUDA_PATH", "CUDA_HOME", "CUDA_ROOT")]
    roots += ["/usr/local/cuda", *sorted(glob.glob("/usr/local/cuda-*"), reverse=True)]
    # the nvidia-cuda-nvcc wheel: site-packages/nvidia/cuda_nvcc/{bin,nvvm}
    for p in sys.path:
        roots.append(os.path.join(p, "nvidia", "cuda_nvcc"))
    return [r for r in roots if r and os.path.isdir(r)]


@functools.lru_cache(maxsize=None)
def libdevice_path():
    """libdevice.10.bc of a CUDA toolkit, or None."""
    for root in _cuda_roots():
        path = os.path.join(root, "nvvm", "libdevice", "libdevice.10.bc")
        if os.path.exists(path):
            return path
    return None


@functools.lru_cache(maxsize=None)
def ptxas_path():
    """ptxas of a CUDA toolkit (or the PATH), or None."""
    for root in _cuda_roots():
        path = os.path.join(root, "bin", "ptxas")
        if os.access(path, os.X_OK):
            return path
    from shutil import which

    return which("ptxas")


def make_llvm(module: ir.Module) -> None:
    """Attach the NVVM target (chip from the module's `kiln.target_chip`) and lower every gpu.module
    to the LLVM + NVVM dialects (bare-pointer kernel arguments). Host code is left as it is.
    nvgpu ops (tensor-core kernels: ldmatrix, mma.sync) go first; vector ops after the gpu ones, whose
    conversion maps shared memory (#gpu.address_space<workgroup>) to NVVM address space 3; last, the
    NVVM ops that are PTX inline assembly (wgmma, `gpu_wgmma`)."""
    chip = check_chip(gpu.target_chip(module, DEFAULT_CHIP))
    link = ""
    if gpu.uses_math(module):
        lib = libdevice_path()
        if lib is None:
            raise KilnError("stage 'llvm' (cuda): the kernels call math functions (exp, sin, erf, ...), "
                            "which come from libdevice.10.bc; none found under CUDA_PATH, /usr/local/cuda "
                            "or the nvidia-cuda-nvcc wheel (pip install nvidia-cuda-nvcc)")
        link = f" l={lib}"
    run_passes(
        module,
        f"nvvm-attach-target{{chip={chip} O=3{link}}},"
        "gpu.module(convert-nvgpu-to-nvvm,expand-strided-metadata,lower-affine,convert-scf-to-cf,"
        "convert-gpu-to-nvvm{use-bare-ptr-memref-call-conv index-bitwidth=64},convert-vector-to-llvm,convert-ub-to-llvm,"
        "convert-nvvm-to-llvm,canonicalize,cse,reconcile-unrealized-casts)",
        "llvm",
    )
    gpu.extern_dynamic_shared_memory(module)


def build_binaries(module: ir.Module) -> dict:
    """{kernel name: {"ptx": bytes, "cubin": bytes (when ptxas exists)}} for every gpu.module."""
    chip = check_chip(gpu.target_chip(module, DEFAULT_CHIP))
    binaries = {}
    for name, obj in gpu.serialize(module, "isa", "artifact").items():
        binaries[name] = {"ptx": obj}
    ptxas = ptxas_path()
    if ptxas is not None:
        with tempfile.TemporaryDirectory(prefix="kiln-ptxas-") as tmp:
            for name, blobs in binaries.items():
                src, out = os.path.join(tmp, "k.ptx"), os.path.join(tmp, "k.cubin")
                with open(src, "wb") as f:
                    f.write(blobs["ptx"])
                proc = subprocess.run([ptxas, f"-arch={chip}", "-O3", src, "-o", out],
                                      capture_output=True, text=True)
                if proc.returncode != 0:
                    raise KilnError(f"stage 'artifact': ptxas failed on kernel {name}:\n{proc.stderr.strip()}")
                with open(out, "rb") as f:
                    blobs["cubin"] = f.read()
    return binaries


def build_artifact(module: ir.Module, signatures: dict):
    """The `.kiln` artifact of a module after the cuda `llvm` stage."""
    chip = check_chip(gpu.target_chip(module, DEFAULT_CHIP))
    binaries = build_binaries(module)
    formats = ["ptx"] + (["cubin"] if all("cubin" in b for b in binaries.values()) else [])
    target = {"driver": "cuda", "chip": chip, "formats": formats,
              "ptxas": ptxas_path() is not None}
    return gpu.build_artifact(module, signatures, target, binaries)
