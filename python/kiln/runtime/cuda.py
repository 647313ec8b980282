"""The `cuda` driver: the CUDA driver API (libcuda.so.1) through ctypes, opened only when a cuda Device
is created, so importing Kiln never needs a GPU library.

Modules load from the artifact's cubin when it was built for this GPU's architecture, else from PTX
(JIT-compiled by the driver for any GPU of the same or a newer architecture).
"""

from __future__ import annotations

import ctypes

from ..errors import KilnError
from .gpu import GpuDriver

LIBRARY = "libcuda.so.1"
_CC_MAJOR, _CC_MINOR = 75, 76  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR / _MINOR
_CAPTURE_MODE_THREAD_LOCAL = 1
_STREAM_NON_BLOCKING = 1  # CU_STREAM_NON_BLOCKING
_NODE_TYPES = {"launch": 0, "copy": 1}  # CU_GRAPH_NODE_TYPE_KERNEL, _MEMCPY
_MEMORYTYPE_DEVICE = 2
_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8  # CU_FUNC_ATTRIBUTE_...
_DEFAULT_SHARED_BYTES = 48 * 1024  # what a kernel may use without opting in


class _KernelNodeParams(ctypes.Structure):  # CUDA_KERNEL_NODE_PARAMS_v2
    _fields_ = [("func", ctypes.c_void_p), ("grid", ctypes.c_uint * 3), ("block", ctypes.c_uint * 3),
                ("sharedMemBytes", ctypes.c_uint), ("kernelParams", ctypes.c_void_p), ("extra", ctypes.c_void_p),
                ("kern", ctypes.c_void_p), ("ctx", ctypes.c_void_p)]


def _memcpy3d_side(prefix: str) -> list:
    size_t, ptr = ctypes.c_size_t, ctypes.c_void_p
    return [(f"{prefix}XInBytes", size_t), (f"{prefix}Y", size_t), (f"{prefix}Z", size_t), (f"{prefix}LOD", size_t),
            (f"{prefix}MemoryType", ctypes.c_int), (f"{prefix}Host", ptr), (f"{prefix}Device", ctypes.c_uint64),
            (f"{prefix}Array", ptr), (f"{prefix}Reserved", ptr), (f"{prefix}Pitch", size_t), (f"{prefix}Height", size_t)]


class _Memcpy3D(ctypes.Structure):  # CUDA_MEMCPY3D
    _fields_ = _memcpy3d_side("src") + _memcpy3d_side("dst") + [
        ("WidthInBytes", ctypes.c_size_t), ("Height", ctypes.c_size_t), ("Depth", ctypes.c_size_t)]


class CudaDriver(GpuDriver):
    """One CUDA device (its primary context) and a stream that kernels and copies are queued on."""

    name = "cuda"

    def __init__(self, ordinal: int = 0):
        try:
            lib = ctypes.CDLL(LIBRARY)
        except OSError as e:
            raise KilnError(f"no CUDA driver: {LIBRARY} not found ({e}); the cuda device needs an NVIDIA "
                            "driver and GPU") from None
        super().__init__(lib)
        self._call("cuInit", ctypes.c_uint(0))
        count = ctypes.c_int()
        self._call("cuDeviceGetCount", ctypes.byref(count))
        if count.value <= ordinal:
            raise KilnError(f"no CUDA GPU {ordinal}: the driver reports {count.value} device(s)")
        self.device = ctypes.c_int()
        self._call("cuDeviceGet", ctypes.byref(self.device), ctypes.c_int(ordinal))
        name = ctypes.create_string_buffer(256)
        self._call("cuDeviceGetName", name, ctypes.c_int(256), self.device)
        self.device_name = name.value.decode(errors="replace")
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._call("cuDeviceGetAttribute", ctypes.byref(major), ctypes.c_int(_CC_MAJOR), self.device)
        self._call("cuDeviceGetAttribute", ctypes.byref(minor), ctypes.c_int(_CC_MINOR), self.device)
        # Hopper (9.0) runs sm_90a code, and only it: Kiln compiles for it there (wgmma, `gpu_wgmma`)
        self.chip = f"sm_{major.value}{minor.value}" + ("a" if (major.value, minor.value) == (9, 0) else "")
        self.context = ctypes.c_void_p()
        self._call("cuDevicePrimaryCtxRetain", ctypes.byref(self.context), self.device)
        self.activate()
        self._graphs = {}  # graph exec -> the captured graph it was made from (its nodes name the exec's)
        self._node_params = {}  # graph exec -> node -> its parameter struct (set_kernel_node, set_copy_node)
        self.stream = ctypes.c_void_p()
        # Non-blocking: work others queue on the legacy default stream (PyTorch's, in the same process)
        # neither waits for Kiln's nor invalidates a graph capture under way on it.
        self._call("cuStreamCreate", ctypes.byref(self.stream), ctypes.c_uint(_STREAM_NON_BLOCKING))

    def error_name(self, code: int) -> str:
        s = ctypes.c_char_p()
        if self.lib.cuGetErrorName(ctypes.c_int(code), ctypes.byref(s)) == 0 and s.value:
            return s.value.decode()
        return f"CUresult {code}"

    def activate(self) -> None:
        self._call("cuCtxSetCurrent", self.context)

    def select_image(self, kernel: dict, blobs: dict, target: dict) -> tuple:
        """(image bytes, format): the cubin when built for this GPU's architecture, else the PTX.
        Code for an arch-specific chip (sm_90a) runs on that architecture only."""
        chip = target.get("chip", "sm_0")
        built = int(chip[3:].rstrip("a") or 0)
        have = int(self.chip[3:].rstrip("a"))
        if built > have or (chip.endswith("a") and built != have):
            raise KilnError(f"the artifact was compiled for {target.get('chip')}, this GPU ({self.device_name}) is "
                            f"{self.chip}: recompile with --chip {self.chip}")
        if "cubin" in kernel["blobs"] and built // 10 == have // 10 and built <= have:
            return blobs[kernel["blobs"]["cubin"]], "cubin"
        return blobs[kernel["blobs"]["ptx"]] + b"\0", "ptx"

    def load_module(self, image: bytes):
        module = ctypes.c_void_p()
        self._keep.append(image)
        self._call("cuModuleLoadData", ctypes.byref(module), ctypes.c_char_p(image))
        return module

    def get_function(self, module, name: str):
        fn = ctypes.c_void_p()
        self._call("cuModuleGetFunction", ctypes.byref(fn), module, name.encode())
        return fn

    def mem_alloc(self, nbytes: int) -> int:
        ptr = ctypes.c_uint64()
        self._call("cuMemAlloc_v2", ctypes.byref(ptr), ctypes.c_size_t(max(1, nbytes)))
        return ptr.value

    def mem_free(self, ptr: int) -> None:
        self._call("cuMemFree_v2", ctypes.c_uint64(ptr))

    # Host copies go on Kiln's stream (ordered after its kernels: a non-blocking stream does not wait
    # for the legacy one the synchronous copies use) and finish before returning.
    def copy_htod(self, dst: int, src: int, nbytes: int) -> None:
        self._call("cuMemcpyHtoDAsync_v2", ctypes.c_uint64(dst), ctypes.c_void_p(src), ctypes.c_size_t(nbytes),
                   self.stream)
        self.synchronize()

    def copy_dtoh(self, dst: int, src: int, nbytes: int) -> None:
        self._call("cuMemcpyDtoHAsync_v2", ctypes.c_void_p(dst), ctypes.c_uint64(src), ctypes.c_size_t(nbytes),
                   self.stream)
        self.synchronize()

    def copy_dtod(self, dst: int, src: int, nbytes: int) -> None:
        self._call("cuMemcpyDtoDAsync_v2", ctypes.c_uint64(dst), ctypes.c_uint64(src),
                   ctypes.c_size_t(nbytes), self.stream)

    def launch(self, function, grid, block, shared_bytes, params) -> None:
        self._call("cuLaunchKernel", function, *(ctypes.c_uint(v) for v in grid),
                   *(ctypes.c_uint(v) for v in block), ctypes.c_uint(shared_bytes), self.stream, params, None)

    def allow_shared_memory(self, function, nbytes: int) -> None:
        if nbytes > _DEFAULT_SHARED_BYTES:
            self._call("cuFuncSetAttribute", function, ctypes.c_int(_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES),
                       ctypes.c_int(nbytes))

    def synchronize(self) -> None:
        self._call("cuStreamSynchronize", self.stream)

    def begin_capture(self) -> None:
        self._call("cuStreamBeginCapture_v2", self.stream, ctypes.c_int(_CAPTURE_MODE_THREAD_LOCAL))

    def end_capture(self, previous=None):
        """The captured work as an executable graph: `previous` updated in place when given and the
        topology is unchanged (only parameters differ), else a new one."""
        graph, exec_ = ctypes.c_void_p(), ctypes.c_void_p()
        self._call("cuStreamEndCapture", self.stream, ctypes.byref(graph))
        try:
            if previous is not None:
                info = (ctypes.c_byte * 64)()  # CUgraphExecUpdateResultInfo (24 bytes)
                update = getattr(self.lib, "cuGraphExecUpdate_v2", None)  # CUDA 12+; else instantiate anew
                if update is not None and update(previous, graph, info) == 0:
                    return previous
                self.graph_destroy(previous)
            self._call("cuGraphInstantiateWithFlags", ctypes.byref(exec_), graph, ctypes.c_ulonglong(0))
            self._graphs[exec_.value], graph = graph, None  # kept: graph_nodes names the exec's nodes by it
            return exec_
        finally:
            if graph is not None:
                self._call("cuGraphDestroy", graph)

    def graph_nodes(self, graph_exec, kinds: list):
        """The captured graph's nodes in capture order (a one-stream capture is a chain: follow its
        edges from the root), or None if they do not match `kinds` one to one."""
        graph = self._graphs[graph_exec.value]
        count = ctypes.c_size_t(0)
        self._call("cuGraphGetNodes", graph, None, ctypes.byref(count))
        if count.value != len(kinds):
            return None
        nodes = (ctypes.c_void_p * max(1, count.value))()
        self._call("cuGraphGetNodes", graph, nodes, ctypes.byref(count))
        edges = ctypes.c_size_t(0)
        self._call("cuGraphGetEdges", graph, None, None, ctypes.byref(edges))
        if edges.value != count.value - 1:
            return None  # not a chain
        sources, targets = (ctypes.c_void_p * max(1, edges.value))(), (ctypes.c_void_p * max(1, edges.value))()
        if edges.value:
            self._call("cuGraphGetEdges", graph, sources, targets, ctypes.byref(edges))
        following = dict(zip(sources[:edges.value], targets[:edges.value]))
        if len(following) != edges.value:
            return None  # a node with two successors: not a chain
        node = (set(nodes[:count.value]) - set(targets[:edges.value])).pop()
        chain = [node]
        while node in following:
            node = following[node]
            chain.append(node)
        node_type = ctypes.c_int()
        for node, kind in zip(chain, kinds):
            self._call("cuGraphNodeGetType", ctypes.c_void_p(node), ctypes.byref(node_type))
            if node_type.value != _NODE_TYPES[kind]:
                return None
        return [ctypes.c_void_p(n) for n in chain]

    # The parameter structs are made once per node and reused: a decode step sets ~240 nodes.
    def set_kernel_node(self, graph_exec, node, function, grid, block, shared_bytes, params) -> None:
        cached = self._node_params.setdefault(graph_exec.value, {})
        p = cached.get(node.value)
        if p is None or p.kernelParams != ctypes.addressof(params):
            p = cached[node.value] = _KernelNodeParams(
                func=function, grid=(ctypes.c_uint * 3)(*grid), block=(ctypes.c_uint * 3)(*block), sharedMemBytes=shared_bytes,
                kernelParams=ctypes.addressof(params))
        self._call("cuGraphExecKernelNodeSetParams_v2", graph_exec, node, ctypes.byref(p))

    def set_copy_node(self, graph_exec, node, dst: int, src: int, nbytes: int) -> None:
        cached = self._node_params.setdefault(graph_exec.value, {})
        p = cached.get(node.value)
        if p is None:
            p = cached[node.value] = _Memcpy3D(srcMemoryType=_MEMORYTYPE_DEVICE, dstMemoryType=_MEMORYTYPE_DEVICE,
                                               Height=1, Depth=1, srcHeight=1, dstHeight=1)
        p.srcDevice, p.dstDevice = src, dst
        p.srcPitch = p.dstPitch = p.WidthInBytes = nbytes
        self._call("cuGraphExecMemcpyNodeSetParams", graph_exec, node, ctypes.byref(p), self.context)

    def graph_launch(self, graph_exec) -> None:
        self._call("cuGraphLaunch", graph_exec, self.stream)

    def graph_destroy(self, graph_exec) -> None:
        self._call("cuGraphExecDestroy", graph_exec)
        self._node_params.pop(graph_exec.value, None)
        graph = self._graphs.pop(graph_exec.value, None)
        if graph is not None:
            self._call("cuGraphDestroy", graph)
