"""What the cuda and hip drivers share: device buffers, and programs that replay the artifact's launch plan.

A GPU artifact's manifest holds, per entry point, the host code as a list of commands (see
`kiln.pipelines.gpu.launch_plan`): kernel launches with grid/block sizes and buffer operands, and
device-to-device copies. A `GpuProgram` loads every kernel once, allocates each entry point's
intermediate buffers once, and replays the commands on the driver's stream. `CommandBuffer`s record
calls on device Buffers once and replay them as one CUDA/HIP graph launch.

The driver classes (`cuda.CudaDriver`, `hip.HipDriver`) implement `GpuDriver`'s methods with ctypes.
"""

from __future__ import annotations

import ctypes

import numpy as np

from ..errors import KilnError
from ..signature import Signature, numpy_dtype
from .program import NamedEntryPoints

_SCALARS = {"i64": ctypes.c_int64, "index": ctypes.c_int64, "i32": ctypes.c_int32, "f32": ctypes.c_float,
            "f64": ctypes.c_double}


class GpuDriver:
    """A GPU API opened with ctypes. Subclasses set `name`, `device_name`, `chip` and implement the
    memory, module, launch and graph methods; `_call` turns an error code into a KilnError."""

    name = "gpu"
    device_name = "?"
    chip = None

    def __init__(self, lib):
        self.lib = lib
        self._keep = []  # module images the driver may still read

    def error_name(self, code: int) -> str:
        return f"error {code}"

    def _call(self, fn: str, *args) -> None:
        code = getattr(self.lib, fn)(*args)
        if code != 0:
            raise KilnError(f"{self.name} driver: {fn} failed with {self.error_name(code)}")

    # Updating single nodes of an instantiated graph (optional; without it a bound call whose scalars
    # change captures its whole plan again).
    def graph_nodes(self, graph_exec, kinds: list):
        """The nodes of `graph_exec`'s graph in capture order, one per command ("launch" or "copy" in
        `kinds`), or None where this driver cannot update nodes."""
        return None

    def set_kernel_node(self, graph_exec, node, function, grid, block, shared_bytes, params) -> None:
        raise NotImplementedError

    def allow_shared_memory(self, function, nbytes: int) -> None:
        """Lets `function` be launched with `nbytes` of dynamic shared memory (NVIDIA: beyond 48 KiB
        a kernel must opt in)."""

    def set_copy_node(self, graph_exec, node, dst: int, src: int, nbytes: int) -> None:
        raise NotImplementedError


def open_driver(name: str, ordinal: int = 0) -> GpuDriver:
    """The driver named `name` ("cuda" or "hip") for GPU number `ordinal`; a KilnError names what is
    missing (driver library, GPU)."""
    if name == "cuda":
        from .cuda import CudaDriver

        return CudaDriver(ordinal)
    if name == "hip":
        from .hip import HipDriver

        return HipDriver(ordinal)
    raise KilnError(f"unknown GPU driver '{name}'")


class GpuBuffer:
    """A typed, shaped allocation in GPU memory (same interface as the cpu driver's Buffer, without
    host_view: GPU memory is not host-addressable)."""

    def __init__(self, device, shape, dtype):
        self.device = device
        self._shape = tuple(int(d) for d in shape)
        self._dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(self._shape, dtype=np.int64)) * self._dtype.itemsize
        self.ptr = device.gpu.mem_alloc(self.nbytes)

    @property
    def shape(self) -> tuple:
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    def write(self, array) -> None:
        array = np.ascontiguousarray(array)
        if array.shape != self.shape or array.dtype != self.dtype:
            raise KilnError(f"cannot write a {array.dtype} array of shape {array.shape} into a buffer of "
                            f"{self.dtype} {self.shape}")
        self.device.gpu.copy_htod(self.ptr, array.ctypes.data, self.nbytes)

    def to_numpy(self) -> np.ndarray:
        out = np.empty(self.shape, self.dtype)
        self.device.gpu.copy_dtoh(out.ctypes.data, self.ptr, self.nbytes)
        return out

    def host_view(self):
        raise KilnError(f"a {self.device.driver} buffer lives in GPU memory: use to_numpy() / write()")

    def __del__(self):
        try:
            self.device.gpu.mem_free(self.ptr)
        except Exception:  # interpreter shutdown or a lost context: nothing left to free
            pass

    def __repr__(self) -> str:
        return f"Buffer({self.device.driver}, {self.dtype}, {self.shape})"


class GpuEntryPoint:
    """`entry(*args, out=None)`: numpy arrays or device Buffers in; results as numpy arrays, or written
    into the `out` device Buffers. Runs the entry point's launch plan on the device's stream."""

    def __init__(self, program: "GpuProgram", signature: Signature, plan: dict):
        self.program = program
        self.signature = signature
        self.plan = plan
        dev = program.device
        self._allocations = [dev.gpu.mem_alloc(n) for n in plan["allocations"]]

    def _buffers(self, args, out) -> tuple:
        """Device Buffers for the arguments (numpy arrays are uploaded) and results (allocated)."""
        sig, dev = self.signature, self.program.device
        if len(args) != len(sig.args):
            raise KilnError(f"entry point '{sig.name}' takes {len(sig.args)} arguments, got {len(args)}")
        bufs, updated = [], set(sig.updates.values())
        for i, (value, spec) in enumerate(zip(args, sig.args)):
            where = f"argument {i} of '{sig.name}'"
            if spec.is_scalar:
                if isinstance(value, GpuBuffer) or np.ndim(value) != 0:
                    raise KilnError(f"{where} is a scalar ({spec.describe()}), got an array")
                bufs.append(value)
            elif isinstance(value, GpuBuffer):
                if value.device is not dev:
                    raise KilnError(f"{where} lives on another device")
                _check(value, spec, where)
                bufs.append(value)
            else:
                if i in updated and not (isinstance(value, np.ndarray) and value.flags.c_contiguous
                                         and value.flags.writeable):
                    raise KilnError(f"{where} (updated in place) must be a Buffer or a writeable "
                                    "C-contiguous numpy array")
                bufs.append(dev.upload(spec.check(value, where)))
        returned = [sig.results[j] for j in sig.returned_results]
        if out is None:
            results = []
            for j, spec in zip(sig.returned_results, returned):
                if any(d is None for d in spec.shape):
                    raise KilnError(f"result {j} of '{sig.name}' ({spec.describe()}) has no static shape")
                results.append(dev.allocate(spec.shape, spec.dtype))
        else:
            if not isinstance(out, (list, tuple)) or len(out) != len(returned):
                raise KilnError(f"out= of '{sig.name}' takes a list of {len(returned)} device buffers")
            for j, (b, spec) in enumerate(zip(out, returned)):
                if not isinstance(b, GpuBuffer) or b.device is not dev:
                    raise KilnError(f"out buffer {j} of '{sig.name}' must be a Buffer of this device")
                _check(b, spec, f"out buffer {j} of '{sig.name}'")
            results = list(out)
        return bufs, results

    def _address(self, ref: dict, args, results, scalars: int = 0) -> int:
        kind = ref["buffer"]
        if kind == "scalars":  # the entry's integer scalars in device memory (see PreparedPlan)
            base = scalars
        elif kind == "arg":
            base = args[ref["index"]].ptr
        elif kind == "result":
            base = results[ref["index"]].ptr
        elif kind == "alloc":
            base = self._allocations[ref["index"]]
        elif kind == "constant":
            base = self.program.constants[ref["name"]].ptr
        else:
            raise KilnError(f"the launch plan of '{self.signature.name}' has an unknown buffer kind {kind!r}")
        return base + ref["offset"] + sum(int(args[i]) * m for i, m in ref.get("scalars", ()))

    def _size(self, ref: dict, args, results) -> int:
        kind = ref["buffer"]
        if kind == "arg":
            return args[ref["index"]].nbytes
        if kind == "result":
            return results[ref["index"]].nbytes
        if kind == "alloc":
            return self.plan["allocations"][ref["index"]]
        return self.program.constants[ref["name"]].nbytes

    def _copy_address(self, ref: dict, nbytes: int, args, results) -> int:
        """The address of a copy's source or destination, checked against its buffer (a runtime offset,
        e.g. a decode position past the KV cache, must not write outside it)."""
        delta = ref["offset"] + sum(int(args[i]) * m for i, m in ref.get("scalars", ()))
        if delta < 0 or delta + nbytes > self._size(ref, args, results):
            raise KilnError(f"entry point '{self.signature.name}': a copy of {nbytes} bytes at offset {delta} "
                            f"falls outside its {ref['buffer']} buffer (a position argument out of range?)")
        return self._address(dict(ref, offset=0, scalars=()), args, results) + delta

    def _check_bounds(self, cmd: dict, args) -> None:
        """A launch's scalar arguments against the range its kernel may be given (`bounds`: a KV-cache
        write at a position must stay inside the cache)."""
        for i, hi in cmd.get("bounds", ()):
            if not 0 <= int(args[i]) <= hi:
                raise KilnError(f"entry point '{self.signature.name}': argument {i} is {int(args[i])}, but "
                                f"kernel {cmd['kernel']} writes outside its buffer past {hi} (a position "
                                "argument out of range?)")

    def _argument(self, ref: dict, args, results, scalars: int = 0):
        """A kernel parameter as a ctypes value (its address goes into the launch's parameter array)."""
        if "scalar" in ref:
            ctype = _SCALARS[ref["type"]]
            value = args[ref["index"]] if ref["scalar"] == "arg" else ref["value"]
            try:
                return ctype(value)
            except TypeError as e:
                raise KilnError(f"argument {ref.get('index')} of '{self.signature.name}' (expects "
                                f"{ref['type']}): got {type(value).__name__}") from e
        return ctypes.c_uint64(self._address(ref, args, results, scalars))

    def enqueue(self, args, results) -> "PreparedPlan":
        """Queues the plan's commands on the stream; returns the prepared plan (the launches read its
        ctypes parameters: keep it until they have run)."""
        plan = PreparedPlan(self, args, results)
        plan.enqueue()
        return plan

    def bind(self, *args, out=None) -> "GpuBoundCall":
        """This call with these device Buffers and scalars, to be run many times (see BoundCall)."""
        return GpuBoundCall(self, args, out)

    def __call__(self, *args, out=None):
        bufs, results = self._buffers(args, out)
        self.program.device.gpu.activate()
        keep = self.enqueue(bufs, results)
        self.program.device.gpu.synchronize()
        del keep
        updates = self.signature.updates
        for j, i in updates.items():  # numpy arguments updated in place get the new contents
            if not isinstance(args[i], GpuBuffer):
                args[i][...] = bufs[i].to_numpy()
        returned = iter(out if out is not None else [r.to_numpy() for r in results])
        return tuple(args[updates[j]] if j in updates else next(returned)
                     for j in range(len(self.signature.results)))


def _depends_on_scalars(ref: dict) -> bool:
    return ref.get("scalar") == "arg" or bool(ref.get("scalars"))


class PreparedPlan:
    """An entry point's commands with every kernel parameter and copy address computed once for one
    binding of its arguments, so queueing the plan again is a tight loop of driver calls (a decode
    step of a 30-layer model is ~700 launches). Kernels read the entry point's integer scalars (a
    decode position) from a device buffer of the plan's own (`{"buffer": "scalars"}`: word i holds
    argument i), written here whenever they change: a captured graph stays valid. Parameters that
    still depend on scalars (by-value scalars, copies at a runtime offset) are patched instead
    (`dependent`: the commands they touch)."""

    def __init__(self, entry: GpuEntryPoint, args, results):
        self.entry = entry
        gpu = entry.program.device.gpu
        self._words = np.zeros(len(entry.signature.args), np.int64)
        self.scalars = gpu.mem_alloc(self._words.nbytes) if entry.plan.get("scalar_buffer") else 0
        self.write_scalars(args)
        self.commands = []  # [launch, function, grid, block, shared bytes, params, values] | [copy, dst, src, bytes]
        self._launch_deps = []  # (ctypes value, its ref)
        self._bounded = [cmd for cmd in entry.plan["commands"] if cmd.get("bounds")]
        self._copy_deps = []  # (command, its plan entry)
        self.dependent = []  # indices of the commands that read a scalar argument
        functions = entry.program.functions
        for cmd in entry.plan["commands"]:
            if cmd["op"] == "launch":
                entry._check_bounds(cmd, args)
                values = [entry._argument(r, args, results, self.scalars) for r in cmd["args"]]
                params = (ctypes.c_void_p * len(values))(*(ctypes.addressof(v) for v in values))
                self._launch_deps += [(v, r) for v, r in zip(values, cmd["args"]) if _depends_on_scalars(r)]
                self.commands.append(["launch", functions[cmd["kernel"]], tuple(cmd["grid"]), tuple(cmd["block"]),
                                      cmd.get("shared_bytes", 0),
                                      params, values])
            elif cmd["op"] == "copy":
                self.commands.append(["copy", 0, 0, cmd["bytes"]])
                self._copy_deps.append((self.commands[-1], cmd))
            else:
                raise KilnError(f"the launch plan of '{entry.signature.name}' has an unknown command {cmd['op']!r}")
            if any(map(_depends_on_scalars, cmd["args"] if cmd["op"] == "launch" else (cmd["dst"], cmd["src"]))):
                self.dependent.append(len(self.commands) - 1)
        self._copy_addresses(self._copy_deps, args, results)
        self._copy_deps = [(c, cmd) for c, cmd in self._copy_deps
                           if _depends_on_scalars(cmd["dst"]) or _depends_on_scalars(cmd["src"])]

    def _copy_addresses(self, copies, args, results) -> None:
        for command, cmd in copies:
            command[1] = self.entry._copy_address(cmd["dst"], cmd["bytes"], args, results)
            command[2] = self.entry._copy_address(cmd["src"], cmd["bytes"], args, results)

    def write_scalars(self, args) -> None:
        """The integer scalar arguments into the plan's scalar buffer (in stream order: launches queued
        after this read the new values)."""
        if not self.scalars:
            return
        for i, spec in enumerate(self.entry.signature.args):
            if spec.is_scalar and np.issubdtype(np.dtype(spec.dtype), np.integer):
                self._words[i] = int(args[i])
        self.entry.program.device.gpu.copy_htod(self.scalars, self._words.ctypes.data, self._words.nbytes)

    def __del__(self):
        if getattr(self, "scalars", 0):
            try:
                self.entry.program.device.gpu.mem_free(self.scalars)
            except Exception:  # interpreter shutdown or a lost context: nothing left to free
                pass

    def update(self, args, results) -> None:
        """Recomputes what depends on the scalar arguments in `args`."""
        for cmd in self._bounded:
            self.entry._check_bounds(cmd, args)
        self.write_scalars(args)
        for value, ref in self._launch_deps:
            value.value = self.entry._argument(ref, args, results, self.scalars).value
        self._copy_addresses(self._copy_deps, args, results)

    def set_graph_nodes(self, graph_exec, nodes: list) -> None:
        """Sets the parameters of the dependent commands' nodes of `graph_exec` (captured from this plan)."""
        gpu = self.entry.program.device.gpu
        for i in self.dependent:
            command = self.commands[i]
            if command[0] == "launch":
                gpu.set_kernel_node(graph_exec, nodes[i], *command[1:6])
            else:
                gpu.set_copy_node(graph_exec, nodes[i], command[1], command[2], command[3])

    def enqueue(self) -> None:
        gpu = self.entry.program.device.gpu
        launch, copy = gpu.launch, gpu.copy_dtod
        for command in self.commands:
            if command[0] == "launch":
                launch(*command[1:6])
            else:
                copy(command[1], command[2], command[3])


class GpuBoundCall:
    """An entry-point call on device Buffers bound once; scalar arguments can change between calls.

    Each call is one CUDA/HIP graph launch. Integer scalars (a decode position) are read by the
    kernels from the plan's scalar buffer, rewritten before the launch, so the graph is captured once.
    Scalars baked into kernel parameters or copy addresses (by-value operands) make a call with new
    scalars set the parameters of just the graph nodes that read them (where the driver can; else it
    captures the plan again and updates the graph in place, as llama.cpp does per token). Either way a
    call is one launch, with no per-kernel gaps."""

    def __init__(self, entry: GpuEntryPoint, args, out):
        for i, a in enumerate(list(args) + list(out or [])):
            if not isinstance(a, (GpuBuffer, int, float, np.integer, np.floating)):
                raise KilnError(f"bound calls take device Buffers and scalars; operand {i} of "
                                f"'{entry.signature.name}' is {type(a).__name__}")
        self.entry = entry
        self._args, self._results = entry._buffers(args, out)
        self._plan = PreparedPlan(entry, self._args, self._results)
        self._planned = self._scalars()  # the scalars the plan's parameters hold
        self._graph, self._captured, self._nodes = None, None, None
        self.captures = 0  # how many times the plan was captured (a graph made or updated)

    def _scalars(self) -> list:
        return [a for a in self._args if not isinstance(a, GpuBuffer)]

    def set_scalar(self, index: int, value) -> None:
        if not self.entry.signature.args[index].is_scalar:
            raise KilnError(f"argument {index} of '{self.entry.signature.name}' is not a scalar")
        self._args[index] = value

    def __call__(self) -> None:
        gpu = self.entry.program.device.gpu
        gpu.activate()
        scalars = self._scalars()
        if scalars != self._planned:
            self._plan.update(self._args, self._results)
            self._planned = scalars
        if self._graph is not None and scalars != self._captured and (self._nodes is not None
                                                                     or not self._plan.dependent):
            self._plan.set_graph_nodes(self._graph, self._nodes)  # none: scalars live in device memory
            self._captured = scalars
        if self._graph is None or scalars != self._captured:
            gpu.begin_capture()
            try:
                self._plan.enqueue()  # parameters are copied into the graph
            finally:
                self._graph = gpu.end_capture(self._graph)
            self._nodes = gpu.graph_nodes(self._graph, [c[0] for c in self._plan.commands])
            self._captured = scalars
            self.captures += 1
        gpu.graph_launch(self._graph)
        gpu.synchronize()

    def __del__(self):
        if getattr(self, "_graph", None) is not None:
            try:
                self.entry.program.device.gpu.graph_destroy(self._graph)
            except Exception:  # interpreter shutdown or a lost context: nothing left to free
                pass


def _check(buf: GpuBuffer, spec, where: str) -> None:
    want = tuple(spec.shape)
    if buf.dtype != np.dtype(spec.dtype) or len(buf.shape) != len(want) or any(
            w is not None and w != d for w, d in zip(want, buf.shape)):
        raise KilnError(f"{where} expects {spec.describe()}, got a buffer of {buf.dtype} {buf.shape}")


class GpuCommandBuffer:
    """Records entry-point calls on device Buffers; the first `submit()` captures them into a CUDA/HIP
    graph, every later one is a single graph launch."""

    def __init__(self, program: "GpuProgram"):
        self.program = program
        self._calls = []
        self._graph = None
        self._keep = []

    def call(self, entry: str, *args, out) -> "GpuCommandBuffer":
        ep = self.program.entry_point(entry)
        for i, a in enumerate(list(args) + list(out)):
            if not isinstance(a, (GpuBuffer, int, float, np.integer, np.floating)):
                raise KilnError(f"command buffers record device Buffers and scalars; operand {i} of '{entry}' "
                                f"is {type(a).__name__}")
        bufs, results = ep._buffers(args, out)
        self._calls.append((ep, bufs, results))
        self._graph = None
        return self

    def submit(self) -> None:
        gpu = self.program.device.gpu
        gpu.activate()
        if self._graph is None:
            # prepared first: a plan writes its scalar buffer, which a stream being captured refuses
            keep = [PreparedPlan(ep, bufs, results) for ep, bufs, results in self._calls]
            gpu.begin_capture()
            try:
                for plan in keep:
                    plan.enqueue()
            finally:
                graph = gpu.end_capture()
            self._graph, self._keep = graph, keep
        gpu.graph_launch(self._graph)
        gpu.synchronize()


class GpuProgram(NamedEntryPoints):
    """A GPU artifact loaded on a cuda/hip Device: kernels, constants and entry points."""

    def __init__(self, device, manifest: dict, blobs: dict, source: str):
        self.device = device
        self.manifest = manifest
        self.blobs = blobs  # kept to save the program again (CompiledModel.save)
        target = manifest.get("target", {})
        gpu = device.gpu
        gpu.activate()
        self.functions = {}
        for kernel in manifest.get("kernels", []):
            image, _ = gpu.select_image(kernel, blobs, target)
            module = gpu.load_module(image)
            self.functions[kernel["name"]] = gpu.get_function(module, kernel["symbol"])
        shared = {}  # kernel -> the most dynamic shared memory a launch gives it
        for plan in manifest.get("programs", {}).values():
            for cmd in plan.get("commands", []):
                if cmd.get("shared_bytes"):
                    shared[cmd["kernel"]] = max(shared.get(cmd["kernel"], 0), cmd["shared_bytes"])
        for name, nbytes in shared.items():
            if name not in self.functions:
                raise KilnError(f"{source} is corrupt: a launch plan names kernel {name}, which it does not hold")
            gpu.allow_shared_memory(self.functions[name], nbytes)
        self.constants = {}
        for name, info in manifest.get("constants", {}).items():
            array = np.frombuffer(blobs[info["blob"]], dtype=numpy_dtype(info["dtype"])).reshape(info["shape"])
            self.constants[name] = device.upload(array)
        self._entries = {}
        for name, sig in manifest["entry_points"].items():
            if name not in manifest.get("programs", {}):
                raise KilnError(f"{source} is corrupt: entry point '{name}' has no launch plan")
            self._entries[name] = GpuEntryPoint(self, Signature.from_json(name, sig), manifest["programs"][name])

    def command_buffer(self) -> GpuCommandBuffer:
        return GpuCommandBuffer(self)


def load_program(art, device, source: str) -> GpuProgram:
    """A GpuProgram from a GPU artifact on `device` (a cuda or hip Device; None: a new one)."""
    driver = art.manifest.get("target", {}).get("driver")
    if device is None:
        from .device import Device

        device = Device(driver)
    if device.driver != driver:
        raise KilnError(f"{source} targets the '{driver}' driver; the device is '{device.driver}'")
    for key in ("entry_points", "kernels", "programs"):
        if not isinstance(art.manifest.get(key), (dict, list)):
            raise KilnError(f"{source} is corrupt: its manifest has no {key}")
    for kernel in art.manifest["kernels"]:
        for blob in kernel.get("blobs", {}).values():
            if blob not in art.blobs:
                raise KilnError(f"{source} is corrupt: kernel {kernel.get('name')} has no blob {blob}")
    return GpuProgram(device, art.manifest, art.blobs, source)
