"""The onnxruntime peer: a workload's PyTorch computation exported to ONNX, run by an InferenceSession.

Exporting the PyTorch peer's own function (rather than writing a second ONNX version by hand) keeps the
three peers computing the same thing. The inputs a real model would hold as weights are captured as
constants, so they become graph initializers that onnxruntime prepares (pre-packs) once at session
creation, as Kiln's compile_model does at load; only the activations are fed per call.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings

from ..errors import KilnError

REQUIRED = ("onnxruntime", "onnx", "onnxscript", "torch")  # torch.onnx.export needs onnx and onnxscript


def onnxruntime_peer(make, feeds):
    """A peer builder (inputs -> callable) for onnxruntime.

    make(torch, tensors) -> forward(*activations) is the workload's PyTorch computation, with the other
    inputs (weights) closed over; feeds: the indices of the inputs that are activations.
    """

    def build(inputs):
        import numpy as np
        import torch

        tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in inputs]
        activations = [inputs[i] for i in feeds]
        session = _session(_export(make(torch, tensors), [tensors[i] for i in feeds]))
        names = [arg.name for arg in session.get_inputs()]
        if len(names) != len(activations):
            raise KilnError(f"the exported ONNX model takes inputs {names}, not the {len(feeds)} fed")
        feed = dict(zip(names, activations))
        return lambda: session.run(None, feed)[0]

    return build


def _export(forward, example_args) -> bytes:
    """The serialized ONNX model of forward(*example_args); closed-over tensors become initializers."""
    import torch

    class Forward(torch.nn.Module):
        def forward(self, *args):
            return forward(*args)

    # The peer worker's stdout carries its replies: the exporter's progress lines must not land there,
    # nor its warnings and log lines (about torchvision, deprecations) in the benchmark's output.
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(Forward().eval(), tuple(example_args), dynamo=True, verbose=False,
                                        external_data=False)
    finally:
        exporter_log.setLevel(level)
    return program.model_proto.SerializeToString()


def _session(model: bytes):
    """A CPU session on the worker's thread count (PeerWorker sets OMP_NUM_THREADS for every peer)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
