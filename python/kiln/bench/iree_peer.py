"""The IREE peer: the onnxruntime peer's ONNX model, imported to MLIR and compiled by IREE for this CPU.

Reusing onnx_peer's export keeps every peer computing the same thing. The weights are ONNX initializers,
so IREE compiles them in as constants, packed for data tiling once by the module's initializer at load
(as Kiln's compile_model packs weights at load); only the activations are fed, and packed, per call.

The importer and compiler run as child processes: IREE's MLIR Python bindings fail to load in a process
that has loaded Kiln's (the peer worker has), while iree.runtime loads next to them fine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from ..errors import KilnError
from .onnx_peer import REQUIRED as _ONNX_PEER_NEEDS
from .onnx_peer import _export

REQUIRED = ("iree.compiler", "iree.runtime", *(m for m in _ONNX_PEER_NEEDS if m != "onnxruntime"))

# llvm-cpu for this machine's CPU; data tiling (off by default in IREE 3.13) is IREE's fast CPU setting
# for matmuls. Diagnostics without the failing op: with constant weights it would print all of them.
COMPILE_FLAGS = ("--iree-hal-target-backends=llvm-cpu", "--iree-llvmcpu-target-cpu=host", "--iree-opt-data-tiling",
                 "--mlir-print-op-on-diagnostic=false")

_devices = {}  # thread count -> the local-task device (see _device)


def iree_peer(make, feeds):
    """A peer builder (inputs -> callable) for IREE; make and feeds as for onnx_peer.onnxruntime_peer."""

    def build(inputs):
        import numpy as np
        import onnx
        import torch

        tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in inputs]
        activations = [np.ascontiguousarray(inputs[i]) for i in feeds]
        model = _export(make(torch, tensors), [tensors[i] for i in feeds])
        graph = onnx.load_model_from_string(model).graph
        if len(graph.input) != len(activations):
            raise KilnError(f"the exported ONNX model takes inputs {[i.name for i in graph.input]}, "
                            f"not the {len(feeds)} fed")
        function = _load(_compile(model), graph.name)

        def run():
            results = function(*activations)
            return (results[0] if isinstance(results, tuple) else results).to_host()

        return run

    return build


def _compile(model: bytes) -> bytes:
    """The IREE module (vmfb) of a serialized ONNX model."""
    with tempfile.TemporaryDirectory(prefix="kiln-iree-") as d:
        onnx_path, mlir_path, vmfb_path = (os.path.join(d, f"model.{ext}") for ext in ("onnx", "mlir", "vmfb"))
        with open(onnx_path, "wb") as f:
            f.write(model)
        _tool("importing the ONNX model to MLIR (iree-import-onnx)", "iree.compiler.tools.import_onnx",
              onnx_path, "-o", mlir_path)
        _tool("compiling the model (iree-compile)", "iree.compiler.tools.scripts.iree_compile",
              mlir_path, *COMPILE_FLAGS, "-o", vmfb_path)
        with open(vmfb_path, "rb") as f:
            return f.read()


def _tool(stage: str, module: str, *args: str) -> None:
    """Runs one of IREE's command-line tools; on failure, a KilnError naming the stage."""
    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise KilnError(f"IREE peer: {stage} failed: {_trimmed(proc.stderr + proc.stdout)}")


def _trimmed(text: str, limit: int = 1000) -> str:
    """IREE's error lines (or a traceback's last lines), cut to `limit` characters."""
    lines = text.strip().splitlines()
    message = "\n".join([line for line in lines if "error" in line.lower()] or lines[-5:])
    return message if len(message) <= limit else message[:limit] + " ..."


def _load(vmfb: bytes, name: str):
    """The module's function `name` on a local-task device of the worker's thread count."""
    import iree.runtime as rt

    config = rt.Config(device=_device(int(os.environ.get("OMP_NUM_THREADS", "1"))))
    return rt.load_vm_module(rt.VmModule.copy_buffer(config.vm_instance, vmfb), config)[name]


def _device(threads: int):
    """The local-task device with at most `threads` workers (one per physical core).

    The driver sizes its worker pool from the flags once, when first created in a process, so a process
    gets one thread count (PeerWorker uses one per process); another would silently run with the first.
    """
    import iree.runtime as rt

    if threads not in _devices:
        if _devices:
            raise KilnError(f"IREE's local-task workers are sized once per process: {next(iter(_devices))} here, "
                            f"not {threads}")
        rt.flags.parse_flags(f"--task_topology_max_group_count={threads}")
        _devices[threads] = rt.get_driver("local-task").create_default_device()
    return _devices[threads]
