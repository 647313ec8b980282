"""The `hip` driver: the HIP runtime (libamdhip64.so) through ctypes, opened only when a hip Device is
created, so importing Kiln never needs a GPU library. Modules load from the artifact's hsaco (an AMDGPU
code object for one chip: HIP refuses it on another, and the error names the chip it was built for).
"""

from __future__ import annotations

import ctypes

from ..errors import KilnError
from .gpu import GpuDriver

LIBRARIES = ("libamdhip64.so", "libamdhip64.so.6", "libamdhip64.so.7", "/opt/rocm/lib/libamdhip64.so")
_CAPTURE_MODE_THREAD_LOCAL = 1


class HipDriver(GpuDriver):
    """One HIP device and a stream that kernels and copies are queued on."""

    name = "hip"

    def __init__(self, ordinal: int = 0):
        lib, errors = None, []
        for candidate in LIBRARIES:
            try:
                lib = ctypes.CDLL(candidate)
                break
            except OSError as e:
                errors.append(str(e))
        if lib is None:
            raise KilnError("no HIP runtime: libamdhip64.so not found (tried "
                            f"{', '.join(LIBRARIES)}); the hip device needs ROCm and an AMD GPU") from None
        super().__init__(lib)
        lib.hipGetErrorName.restype = ctypes.c_char_p
        self._call("hipInit", ctypes.c_uint(0))
        count = ctypes.c_int()
        self._call("hipGetDeviceCount", ctypes.byref(count))
        if count.value <= ordinal:
            raise KilnError(f"no AMD GPU {ordinal}: the HIP runtime reports {count.value} device(s)")
        self.ordinal = ordinal
        self.activate()
        name = ctypes.create_string_buffer(256)
        self._call("hipDeviceGetName", name, ctypes.c_int(256), ctypes.c_int(ordinal))
        self.device_name = name.value.decode(errors="replace")
        self.chip = None  # the code object's chip is checked by hipModuleLoadData
        self.stream = ctypes.c_void_p()
        self._call("hipStreamCreate", ctypes.byref(self.stream))

    def error_name(self, code: int) -> str:
        name = self.lib.hipGetErrorName(ctypes.c_int(code))
        return name.decode() if name else f"hipError {code}"

    def activate(self) -> None:
        self._call("hipSetDevice", ctypes.c_int(self.ordinal))

    def select_image(self, kernel: dict, blobs: dict, target: dict) -> tuple:
        return blobs[kernel["blobs"]["hsaco"]], "hsaco"

    def load_module(self, image: bytes):
        module = ctypes.c_void_p()
        self._keep.append(image)
        self._call("hipModuleLoadData", ctypes.byref(module), ctypes.c_char_p(image))
        return module

    def get_function(self, module, name: str):
        fn = ctypes.c_void_p()
        self._call("hipModuleGetFunction", ctypes.byref(fn), module, name.encode())
        return fn

    def mem_alloc(self, nbytes: int) -> int:
        ptr = ctypes.c_void_p()
        self._call("hipMalloc", ctypes.byref(ptr), ctypes.c_size_t(max(1, nbytes)))
        return ptr.value

    def mem_free(self, ptr: int) -> None:
        self._call("hipFree", ctypes.c_void_p(ptr))

    def copy_htod(self, dst: int, src: int, nbytes: int) -> None:
        self.synchronize()
        self._call("hipMemcpyHtoD", ctypes.c_void_p(dst), ctypes.c_void_p(src), ctypes.c_size_t(nbytes))

    def copy_dtoh(self, dst: int, src: int, nbytes: int) -> None:
        self.synchronize()
        self._call("hipMemcpyDtoH", ctypes.c_void_p(dst), ctypes.c_void_p(src), ctypes.c_size_t(nbytes))

    def copy_dtod(self, dst: int, src: int, nbytes: int) -> None:
        self._call("hipMemcpyDtoDAsync", ctypes.c_void_p(dst), ctypes.c_void_p(src),
                   ctypes.c_size_t(nbytes), self.stream)

    def launch(self, function, grid, block, shared_bytes, params) -> None:
        self._call("hipModuleLaunchKernel", function, *(ctypes.c_uint(v) for v in grid),
                   *(ctypes.c_uint(v) for v in block), ctypes.c_uint(shared_bytes), self.stream, params, None)

    def synchronize(self) -> None:
        self._call("hipStreamSynchronize", self.stream)

    def begin_capture(self) -> None:
        self._call("hipStreamBeginCapture", self.stream, ctypes.c_int(_CAPTURE_MODE_THREAD_LOCAL))

    def end_capture(self, previous=None):
        """The captured work as an executable graph: `previous` updated in place when given and the
        topology is unchanged, else a new one."""
        graph, exec_ = ctypes.c_void_p(), ctypes.c_void_p()
        self._call("hipStreamEndCapture", self.stream, ctypes.byref(graph))
        try:
            if previous is not None:
                node, result = ctypes.c_void_p(), ctypes.c_int()
                update = getattr(self.lib, "hipGraphExecUpdate", None)  # absent: instantiate anew
                if update is not None and update(previous, graph, ctypes.byref(node), ctypes.byref(result)) == 0:
                    return previous
                self.graph_destroy(previous)
            self._call("hipGraphInstantiate", ctypes.byref(exec_), graph, None, None, ctypes.c_size_t(0))
            return exec_
        finally:
            self._call("hipGraphDestroy", graph)

    def graph_launch(self, graph_exec) -> None:
        self._call("hipGraphLaunch", graph_exec, self.stream)

    def graph_destroy(self, graph_exec) -> None:
        self._call("hipGraphExecDestroy", graph_exec)
