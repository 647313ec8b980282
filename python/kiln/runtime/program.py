"""Executables, programs and command buffers.

An `Executable` is a loaded native binary; a `Program` is an executable plus the signatures of its named
entry points (from the artifact manifest). Calling an entry point is one call into native code: the
compiled host code sequences the kernels and runs their workgroups on the device's thread pool.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import tempfile

import numpy as np

from .. import artifact as artifact_format
from ..errors import KilnError
from ..signature import Signature
from . import cpu
from .device import Buffer, Device, _aligned_empty
from .memref import descriptor

_SCALAR_CTYPES = {
    np.dtype(np.int64): ctypes.c_int64,
    np.dtype(np.int32): ctypes.c_int32,
    np.dtype(np.float32): ctypes.c_float,
    np.dtype(np.float64): ctypes.c_double,
}


class Executable:
    """A native shared object on a device (cpu: an ELF .so whose entry points use MLIR's C interface)."""

    def __init__(self, device: Device, path: str):
        self.device = device
        self.path = path
        try:
            self._lib = ctypes.CDLL(path)
        except OSError as e:
            raise KilnError(f"cannot load executable {path}: {e}") from e

    def function(self, name: str, signature: Signature):
        symbol = f"_mlir_ciface_{name}"
        try:
            fn = getattr(self._lib, symbol)
        except AttributeError:
            raise KilnError(f"executable {self.path} has no entry point '{name}' ({symbol})") from None
        argtypes = []
        for spec in signature.args:
            argtypes.append(_SCALAR_CTYPES[np.dtype(spec.dtype)] if spec.is_scalar else ctypes.c_void_p)
        argtypes += [ctypes.c_void_p] * len(signature.results)
        fn.argtypes = argtypes
        fn.restype = None
        return fn


class EntryPoint:
    """A named function of a Program: `entry(*args, out=None)`; args are numpy arrays, Buffers or
    scalars. Results come back as new numpy arrays, or are written into the `out` Buffers."""

    def __init__(self, program: "Program", signature: Signature):
        self.program = program
        self.signature = signature
        self._fn = program.executable.function(signature.name, signature)

    def _marshal(self, args, out):
        sig = self.signature
        if len(args) != len(sig.args):
            raise KilnError(f"entry point '{sig.name}' takes {len(sig.args)} arguments, got {len(args)}")
        keep, call_args = [], []
        for i, (value, spec) in enumerate(zip(args, sig.args)):
            where = f"argument {i} of '{sig.name}'"
            if spec.is_scalar:
                if isinstance(value, (Buffer, np.ndarray)) and np.ndim(value) != 0:
                    raise KilnError(f"{where} is a scalar ({spec.describe()}), got an array")
                call_args.append(_SCALAR_CTYPES[np.dtype(spec.dtype)](spec.dtype(value).item()))
                continue
            array = self._buffer_array(value, spec, where)
            d = descriptor(array)
            keep += [array, d]
            call_args.append(ctypes.addressof(d))
        if out is None:
            results = []
            for j, spec in enumerate(sig.results):
                if spec.is_scalar or any(dim is None for dim in spec.shape):
                    raise KilnError(f"result {j} of '{sig.name}' ({spec.describe()}) has no static shape")
                results.append(_aligned_empty(spec.shape, np.dtype(spec.dtype)))
        else:
            if len(out) != len(sig.results):
                raise KilnError(f"entry point '{sig.name}' has {len(sig.results)} results, got {len(out)} out buffers")
            results = [self._buffer_array(b, spec, f"out buffer {j} of '{sig.name}'")
                       for j, (b, spec) in enumerate(zip(out, sig.results))]
        for r in results:
            d = descriptor(r)
            keep += [r, d]
            call_args.append(ctypes.addressof(d))
        return keep, call_args, results

    def _buffer_array(self, value, spec, where):
        if isinstance(value, Buffer):
            if value.device is not self.program.device:
                raise KilnError(f"{where} lives on another device")
            return spec.check(value.host_view(), where)
        return spec.check(value, where)

    def __call__(self, *args, out=None):
        keep, call_args, results = self._marshal(args, out)
        self._fn(*call_args)
        del keep
        return tuple(out) if out is not None else tuple(results)


class CommandBuffer:
    """Records entry-point calls on device Buffers once; `submit()` replays them with no re-marshalling."""

    def __init__(self, program: "Program"):
        self.program = program
        self._commands = []

    def call(self, entry: str, *args, out) -> "CommandBuffer":
        ep = self.program.entry_point(entry)
        for i, a in enumerate(list(args) + list(out)):
            if not isinstance(a, (Buffer, int, float, np.integer, np.floating)):
                raise KilnError(f"command buffers record device Buffers; operand {i} of '{entry}' is {type(a).__name__}")
        keep, call_args, _ = ep._marshal(args, out)
        self._commands.append((ep._fn, call_args, keep))
        return self

    def submit(self) -> None:
        for fn, call_args, _ in self._commands:
            fn(*call_args)


class Program:
    """A loaded executable with named entry points, e.g. `program.forward(x, w)`."""

    def __init__(self, device: Device, executable: Executable, manifest: dict):
        self.device = device
        self.executable = executable
        self.manifest = manifest
        self._entries = {
            name: EntryPoint(self, Signature.from_json(name, sig))
            for name, sig in manifest["entry_points"].items()
        }

    @property
    def entry_points(self) -> list:
        return list(self._entries)

    def entry_point(self, name: str) -> EntryPoint:
        if name not in self._entries:
            raise KilnError(f"no entry point '{name}'; the program has: {', '.join(self._entries)}")
        return self._entries[name]

    def command_buffer(self) -> CommandBuffer:
        return CommandBuffer(self)

    def __getattr__(self, name: str):
        entries = self.__dict__.get("_entries", {})
        if name in entries:
            return entries[name]
        raise AttributeError(name)


def load(path: str, device: Device | None = None) -> Program:
    """Loads a `.kiln` artifact after checking its format, hashes, Kiln version and target."""
    from .. import __version__

    return load_artifact(artifact_format.read(path, expected={"kiln_version": __version__}), device, path)


def load_artifact(art: artifact_format.Artifact, device: Device | None = None, source: str = "artifact"):
    """A Program from an in-memory artifact (what `kiln.compile` returns without writing a file)."""
    manifest = art.manifest
    target = manifest.get("target", {})
    if target.get("driver") != "cpu":
        raise KilnError(f"{source} targets '{target.get('driver')}', which this runtime cannot run")
    missing = sorted(set(target.get("cpu_features", [])) - cpu.host_cpu_features())
    if missing:
        raise KilnError(
            f"{source} was compiled for CPU {target.get('cpu')!r} and needs features this host lacks: "
            f"{', '.join(missing)}; recompile it here"
        )
    if "executable" not in art.blobs:
        raise KilnError(f"{source} is corrupt: it holds no executable")
    device = device or Device("cpu")
    return Program(device, Executable(device, _materialize(art.blobs["executable"])), manifest)


def _materialize(blob: bytes) -> str:
    """Writes an executable blob to the cache (content-addressed) so it can be dlopen'ed."""
    cache = os.environ.get("KILN_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "kiln")
    directory = os.path.join(cache, "executables")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, hashlib.sha256(blob).hexdigest() + ".so")
    if not os.path.exists(path):
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        os.replace(tmp, path)
    return path
