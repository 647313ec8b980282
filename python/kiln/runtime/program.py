"""Executables, programs and command buffers.

An `Executable` is a loaded native binary; a `Program` is an executable plus the signatures of its named
entry points (from the artifact manifest). Calling an entry point is one call into native code: the
compiled host code sequences the kernels and runs their workgroups on the device's thread pool.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import tempfile

import numpy as np

from .. import artifact as artifact_format
from ..errors import KilnError
from ..signature import Signature
from . import cpu
from .device import Buffer, Device, aligned_empty
from .memref import DescriptorCache, byte_range

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

    @property
    def blob(self) -> bytes:
        """The executable's bytes (to write it into an artifact again)."""
        with open(self.path, "rb") as f:
            return f.read()

    def function(self, name: str, signature: Signature):
        symbol = f"_mlir_ciface_{name}"
        try:
            fn = getattr(self._lib, symbol)
        except AttributeError:
            raise KilnError(f"executable {self.path} has no entry point '{name}' ({symbol})") from None
        argtypes = []
        for i, spec in enumerate(signature.args):
            if spec.is_scalar and np.dtype(spec.dtype) not in _SCALAR_CTYPES:
                raise KilnError(f"argument {i} of '{name}' is a {spec.describe()} scalar, which the runtime "
                                "cannot pass")
            argtypes.append(_SCALAR_CTYPES[np.dtype(spec.dtype)] if spec.is_scalar else ctypes.c_void_p)
        argtypes += [ctypes.c_void_p] * len(signature.returned_results)
        fn.argtypes = argtypes
        fn.restype = None
        return fn


class EntryPoint:
    """A named function of a Program: `entry(*args, out=None)`; args are numpy arrays, Buffers or
    scalars. Results come back as new numpy arrays, or are written into the `out` Buffers (one per
    result that does not update an argument). A result that updates an argument in place (a KV cache)
    is written into that argument, which must be a Buffer or a writeable C-contiguous array, and
    comes back as that same object."""

    def __init__(self, program: "Program", signature: Signature):
        self.program = program
        self.signature = signature
        self._fn = program.executable.function(signature.name, signature)
        self._descriptors = DescriptorCache()

    def _marshal(self, args, out):
        sig = self.signature
        if len(args) != len(sig.args):
            raise KilnError(f"entry point '{sig.name}' takes {len(sig.args)} arguments, got {len(args)}")
        keep, call_args, inputs = [], [], []
        updated = set(sig.updates.values())
        for i, (value, spec) in enumerate(zip(args, sig.args)):
            where = f"argument {i} of '{sig.name}'"
            if spec.is_scalar:
                if isinstance(value, Buffer) or np.ndim(value) != 0:
                    raise KilnError(f"{where} is a scalar ({spec.describe()}), got an array")
                try:  # ctypes refuses what does not convert exactly (a float for an index, None, a str)
                    call_args.append(_SCALAR_CTYPES[np.dtype(spec.dtype)](value))
                except (TypeError, ValueError) as e:
                    raise KilnError(f"{where} (expects {spec.describe()}): got {type(value).__name__} ({e})") from e
                continue
            if i in updated:
                array = self._out_array(value, spec, f"{where} (updated in place)")
            else:
                array = self._buffer_array(value, spec, where)
            inputs.append((i, array))
            d = value.descriptor() if isinstance(value, Buffer) else self._descriptors.get(array)
            keep += [array, d]
            call_args.append(ctypes.addressof(d))
        for j, spec in enumerate(sig.results):
            if spec.is_scalar:
                raise KilnError(f"result {j} of '{sig.name}' is a scalar ({spec.describe()}); entry points "
                                "return tensors")
        returned = [(j, sig.results[j]) for j in sig.returned_results]
        if out is None:
            results = []
            for j, spec in returned:
                if any(dim is None for dim in spec.shape):
                    raise KilnError(f"result {j} of '{sig.name}' ({spec.describe()}) has no static shape")
                results.append(aligned_empty(spec.shape, spec.dtype))
        else:
            if not isinstance(out, (list, tuple)):
                raise KilnError(f"out= of '{sig.name}' takes a list of {len(sig.results)} buffers, "
                                f"got {type(out).__name__}")
            if len(out) != len(returned):
                raise KilnError(f"entry point '{sig.name}' has {len(returned)} results that need out buffers, "
                                f"got {len(out)}")
            results = [self._out_array(b, spec, f"out buffer {k} of '{sig.name}'")
                       for k, (b, (_, spec)) in enumerate(zip(out, returned))]
            # Kernels read their inputs while they write their outputs: an overlap gives wrong results.
            ranges = [(f"argument {i}", byte_range(a)) for i, a in inputs]
            for j, r in enumerate(results):
                lo, hi = byte_range(r)
                for what, (a, b) in ranges:
                    if lo < b and a < hi:
                        raise KilnError(f"out buffer {j} of '{sig.name}' overlaps {what}; entry points do not "
                                        "update buffers in place: pass a separate out buffer")
                ranges.append((f"out buffer {j}", (lo, hi)))
        for j, r in enumerate(results):
            value = out[j] if out is not None else None
            d = value.descriptor() if isinstance(value, Buffer) else self._descriptors.get(r)
            keep += [r, d]
            call_args.append(ctypes.addressof(d))
        return keep, call_args, results

    def _buffer_array(self, value, spec, where):
        if isinstance(value, Buffer):
            if value.device is not self.program.device:
                raise KilnError(f"{where} lives on another device")
            return spec.check(value.host_view(), where)
        return spec.check(value, where)

    def _out_array(self, value, spec, where):
        array = self._buffer_array(value, spec, where)
        if not isinstance(value, Buffer) and (array is not value or not array.flags.writeable):
            # spec.check copied it (not C-contiguous, not an ndarray) or it is read-only: the results
            # would go to a temporary or into memory that must not change.
            raise KilnError(f"{where} must be a Buffer or a writeable C-contiguous numpy array")
        return array

    def bind(self, *args, out=None) -> "BoundCall":
        """This call with these Buffers and scalars, marshalled once, to be run many times."""
        return BoundCall(self, args, out)

    def __call__(self, *args, out=None):
        keep, call_args, results = self._marshal(args, out)
        self.program.device.activate()
        self._fn(*call_args)
        del keep
        returned = iter(out if out is not None else results)
        updates = self.signature.updates
        return tuple(args[updates[j]] if j in updates else next(returned)
                     for j in range(len(self.signature.results)))


class BoundCall:
    """An entry-point call marshalled once (`EntryPoint.bind`): calling it costs one native call, with
    no per-argument work. The Buffers it was bound to are read and written in place on every call, and
    scalar arguments can be changed between calls with `set_scalar` (a decode step's position)."""

    def __init__(self, entry: "EntryPoint", args, out):
        self.entry = entry
        for i, a in enumerate(list(args) + list(out or [])):
            if not isinstance(a, (Buffer, int, float, np.integer, np.floating)):
                raise KilnError(f"bound calls take device Buffers and scalars; operand {i} of "
                                f"'{entry.signature.name}' is {type(a).__name__}")
        self._keep, self._call_args, _ = entry._marshal(args, out)

    def set_scalar(self, index: int, value) -> None:
        spec = self.entry.signature.args[index]
        if not spec.is_scalar:
            raise KilnError(f"argument {index} of '{self.entry.signature.name}' is not a scalar")
        self._call_args[index].value = value

    def __call__(self) -> None:
        self.entry.program.device.activate()
        self.entry._fn(*self._call_args)


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
        self.program.device.activate()
        for fn, call_args, _ in self._commands:
            fn(*call_args)


class _NoEntryPoint(KilnError, AttributeError):
    """`program.name` where `name` is no entry point: a KilnError, and an AttributeError for getattr/hasattr."""


class NamedEntryPoints:
    """Lookup of a program's entry points (in `self._entries`) by name: `program.entry_point("f")`
    or `program.f`. Shared by the CPU and GPU programs."""

    @property
    def entry_points(self) -> list:
        return list(self._entries)

    def entry_point(self, name: str):
        if name not in self._entries:
            raise KilnError(f"no entry point '{name}'; the program has: {', '.join(self._entries)}")
        return self._entries[name]

    def __getattr__(self, name: str):
        entries = self.__dict__.get("_entries", {})
        if name in entries:
            return entries[name]
        if name.startswith("__"):
            raise AttributeError(name)
        raise _NoEntryPoint(f"no entry point '{name}'; the program has: {', '.join(entries)}")


class Program(NamedEntryPoints):
    """A loaded executable with named entry points, e.g. `program.forward(x, w)`."""

    def __init__(self, device: Device, executable: Executable, manifest: dict):
        self.device = device
        self.executable = executable
        self.manifest = manifest
        self._entries = {}
        for name, sig in manifest["entry_points"].items():
            try:
                signature = Signature.from_json(name, sig)
            except (KeyError, TypeError, ValueError) as e:
                raise KilnError(f"the manifest's signature of entry point '{name}' is malformed: {sig!r}") \
                    from e
            self._entries[name] = EntryPoint(self, signature)

    def command_buffer(self) -> CommandBuffer:
        return CommandBuffer(self)


def load(path: str, device: Device | None = None) -> Program:
    """Loads a `.kiln` artifact after checking its format, hashes, Kiln version and target."""
    from .. import __version__

    return load_artifact(artifact_format.read(path, expected={"kiln_version": __version__}), device, path)


def load_artifact(art: artifact_format.Artifact, device: Device | None = None, source: str = "artifact"):
    """A Program from an in-memory artifact (what `kiln.compile` returns without writing a file)."""
    manifest = art.manifest
    target = manifest.get("target", {})
    if target.get("driver") in ("cuda", "hip"):  # GPU artifacts replay a launch plan (runtime/gpu.py)
        from .gpu import load_program

        return load_program(art, device, source)
    if target.get("driver") != "cpu":
        raise KilnError(f"{source} targets '{target.get('driver')}', which this runtime cannot run")
    triple = target.get("triple", "")
    if triple.split("-")[0] != platform.machine():
        raise KilnError(
            f"{source} was compiled for {triple!r}; this host is {platform.machine()}: recompile it here"
        )
    missing = sorted(set(target.get("cpu_features", [])) - cpu.host_cpu_features())
    if missing:
        raise KilnError(
            f"{source} was compiled for CPU {target.get('cpu')!r} and needs features this host lacks: "
            f"{', '.join(missing)}; recompile it here"
        )
    if not isinstance(manifest.get("entry_points"), dict):
        raise KilnError(f"{source} is corrupt: its manifest lists no entry points")
    if "executable" not in art.blobs:
        raise KilnError(f"{source} is corrupt: it holds no executable")
    device = device or Device.default()
    return Program(device, Executable(device, _materialize(art.blobs["executable"])), manifest)


def _materialize(blob: bytes) -> str:
    """Writes an executable blob to the cache (content-addressed) so it can be dlopen'ed."""
    cache = os.environ.get("KILN_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "kiln")
    directory = os.path.join(cache, "executables")
    path = os.path.join(directory, hashlib.sha256(blob).hexdigest() + ".so")
    try:
        os.makedirs(directory, exist_ok=True)
        if not os.path.exists(path) or os.path.getsize(path) != len(blob):  # (a crash can leave it empty)
            fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            os.replace(tmp, path)
    except OSError as e:
        raise KilnError(f"cannot write the executable to the cache {directory}: {e} (set KILN_CACHE_DIR)") from e
    return path
