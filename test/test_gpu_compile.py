"""The GPU targets (cuda, rocm) without a GPU: every kernel class compiles to PTX/cubin and hsaco for the
requested chips; the kernels and their launch plans are run numerically through the real GPU runtime
on a CPU emulation of the driver (test/gpu_emulation.py) against float64 references; GPU-executing
tests run only where a CUDA/HIP device exists and skip with the reason otherwise.
"""

from __future__ import annotations

import ctypes.util
import functools
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from mlir import ir

import kiln
from kiln import artifact, reference as ref
from kiln.bench import workloads
from kiln.bench.kernel_classes import CASES, random_f32 as _f32, tensor_type as _t
from kiln.errors import KilnError
from kiln.pipelines.common import run_passes
from kiln.pipelines import cuda as cuda_pipeline, gpu as gpu_pipeline, gpu_mma, rocm as rocm_pipeline

sys.path.insert(0, os.path.dirname(__file__))
from gpu_emulation import emulated_device  # noqa: E402
from mma_emulation import TensorCoreKernel  # noqa: E402


CHIPS = [("cuda", "sm_80"), ("cuda", "sm_90"), ("rocm", "gfx942"), ("rocm", "gfx1100")]
# ELF e_flags machine codes (EF_AMDGPU_MACH_AMDGCN_*) of the AMD chips tested
AMDGPU_MACH = {"gfx942": 0x4C, "gfx1100": 0x41, "gfx1201": 0x4E, "gfx1030": 0x36}
EM_CUDA, EM_AMDGPU = 190, 224

HAS_LLC22 = shutil.which("llc-22") is not None or os.path.exists("/usr/lib/llvm-22/bin/llc")
needs_llc22 = pytest.mark.skipif(not HAS_LLC22, reason="the rocm target needs Debian's llc-22/ld.lld-22 "
                                 "(apt-get install llvm-22 lld-22)")


def _target_marks(target):
    return [needs_llc22] if target == "rocm" else []


def _elf_header(blob: bytes) -> tuple:
    """(e_machine, e_flags) of a 64-bit little-endian ELF file."""
    assert blob[:4] == b"\x7fELF" and blob[4] == 2 and blob[5] == 1, "not a 64-bit little-endian ELF"
    e_machine = struct.unpack_from("<H", blob, 18)[0]
    e_flags = struct.unpack_from("<I", blob, 48)[0]
    return e_machine, e_flags


@functools.lru_cache(maxsize=None)
def _compiled(case: str, target: str, chip: str):
    return kiln.compile(CASES[case][1], target=target, chip=chip)


@functools.lru_cache(maxsize=None)
def _loops(case: str, target: str = "cuda") -> str:
    return kiln.compile(CASES[case][1], target=target, compile_to="loops")


def _check_artifact(art, target, chip):
    m = art.manifest
    assert m["target"]["chip"] == chip
    assert m["target"]["driver"] == ("cuda" if target == "cuda" else "hip")
    assert m["kernels"], "no kernels"
    launched = {c["kernel"] for plan in m["programs"].values() for c in plan["commands"] if c["op"] == "launch"}
    assert launched == {k["name"] for k in m["kernels"]}, "kernels and launches disagree"
    for k in m["kernels"]:
        if target == "cuda":
            ptx = art.blobs[k["blobs"]["ptx"]].decode()
            assert f".target {chip}" in ptx
            assert f".entry {k['symbol']}(" in ptx
            assert ".extern .func" not in ptx, "unresolved device function (libdevice not linked)"
            if "cubin" in k["blobs"]:
                assert _elf_header(art.blobs[k["blobs"]["cubin"]])[0] == EM_CUDA
            else:
                assert cuda_pipeline.ptxas_path() is None, "ptxas exists but no cubin was built"
        else:
            hsaco = art.blobs[k["blobs"]["hsaco"]]
            machine, flags = _elf_header(hsaco)
            assert machine == EM_AMDGPU
            assert flags & 0xFF == AMDGPU_MACH[chip], f"e_flags {flags:#x} is not {chip}"
            assert k["symbol"].encode() + b".kd" in hsaco, "no kernel descriptor for the kernel"


@pytest.mark.parametrize("target,chip", [pytest.param(t, c, marks=_target_marks(t), id=f"{t}-{c}")
                                         for t, c in CHIPS])
@pytest.mark.parametrize("case", sorted(CASES))
def test_kernel_class_compiles(case, target, chip):
    art = _compiled(case, target, chip)
    _check_artifact(art, target, chip)
    assert CASES[case][0] in {k["class"] for k in art.manifest["kernels"]}


@pytest.mark.parametrize("case", sorted(CASES))
def test_emulated_numerics(case, rng):
    """The cuda `loops` stage's kernels + the artifact's launch plan, run by the GPU runtime on the CPU
    emulation, match the float64 reference."""
    kernel_class, _, make_inputs, reference = CASES[case]
    device = emulated_device(_loops(case))
    program = kiln.runtime.load_artifact(_compiled(case, "cuda", "sm_80"), device)
    inputs = make_inputs(rng)
    (y,) = program.f(*inputs)
    expected = reference(*inputs)
    if y.dtype == np.int64:
        np.testing.assert_array_equal(y, expected)
    else:
        np.testing.assert_allclose(y, expected, rtol=2e-5, atol=2e-5 * max(1.0, np.abs(expected).max()))
    assert len(device.gpu.launches) >= 1


def test_rocm_math_expansion_numerics(rng):
    """gelu's erf as the rocm target lowers it (a polynomial: no device library), emulated. The launch
    plan is the cuda artifact's: both targets share every stage up to `loops`."""
    text = _loops("gelu", "rocm")
    with ir.Context():
        module = ir.Module.parse(text)
        gpu_pipeline.expand_erf(module)
        expanded = str(module)
    assert "math.erf" in text and "math.erf" not in expanded
    program = kiln.runtime.load_artifact(_compiled("gelu", "cuda", "sm_80"), emulated_device(expanded))
    x = _f32(rng, 4, 7, 96, scale=3.0)
    (y,) = program.f(x)
    np.testing.assert_allclose(y, ref.gelu(x), rtol=1e-5, atol=5e-7)


def test_rocm_math_expansion_in_a_fused_matvec(rng):
    """gelu fused into a decode matvec (kiln-fuse-into-matvecs) runs on the lanes' vectors: the rocm
    target's erf polynomial on vector<4xf32>, emulated against float64."""
    text = ("func.func @f(%x: tensor<1x1x256xf32>, %w: tensor<64x256xf32>) -> tensor<1x1x64xf32> {\n"
            "  %g = transformer.gelu %x : tensor<1x1x256xf32>\n"
            "  %y = transformer.linear %g, %w : (tensor<1x1x256xf32>, tensor<64x256xf32>) -> tensor<1x1x64xf32>\n"
            "  return %y : tensor<1x1x64xf32>\n}")
    loops = kiln.compile(text, target="rocm", compile_to="loops")
    assert "math.erf %" in loops and ": vector<4xf32>" in loops.split("math.erf", 1)[1].split("\n")[0]
    with ir.Context():
        module = ir.Module.parse(loops)
        gpu_pipeline.expand_erf(module)
        expanded = str(module)
    assert "math.erf" not in expanded
    program = kiln.runtime.load_artifact(kiln.compile(text, target="cuda"), emulated_device(expanded))
    x, w = _f32(rng, 1, 1, 256, scale=3.0), _f32(rng, 64, 256, scale=0.1)
    (y,) = program.f(x, w)
    np.testing.assert_allclose(y, ref.linear(ref.gelu(x), w), rtol=1e-5, atol=1e-5)


def test_cuda_math_comes_from_libdevice():
    """On cuda, math ops become libdevice calls that are linked into the PTX (none left external)."""
    llvm = kiln.compile(CASES["gelu"][1], target="cuda", compile_to="llvm")
    assert "llvm.call @__nv_erff" in llvm
    art = _compiled("gelu", "cuda", "sm_80")
    for k in art.manifest["kernels"]:
        assert ".extern .func" not in art.blobs[k["blobs"]["ptx"]].decode()


def test_command_buffer_replays_as_a_graph(rng):
    """Recorded calls on device Buffers are captured once and replayed (a CUDA/HIP graph on a GPU)."""
    device = emulated_device(_loops("linear"))
    program = kiln.runtime.load_artifact(_compiled("linear", "cuda", "sm_80"), device)
    x, w = CASES["linear"][2](rng)
    bx, bw, by = device.upload(x), device.upload(w), device.allocate((32, 48), np.float32)
    cb = program.command_buffer().call("f", bx, bw, out=[by])
    cb.submit()
    np.testing.assert_allclose(by.to_numpy(), ref.linear(x, w), rtol=2e-5, atol=2e-5)
    x2 = _f32(rng, 32, 64)
    bx.write(x2)
    before = len(device.gpu.launches)
    cb.submit()
    assert len(device.gpu.launches) > before
    np.testing.assert_allclose(by.to_numpy(), ref.linear(x2, w), rtol=2e-5, atol=2e-5)


def test_launch_plan_of_the_block():
    """The host code of a decoder block: launches with grids within the kernels' known sizes, buffers
    within their allocations, and the arena made once."""
    text = workloads.llama_block(num_layers=1, hidden=64, heads=4, kv_heads=2, ffn=96, seq=16).kiln_ir()
    art = kiln.compile(text, target="cuda")
    plan = art.manifest["programs"]["f"]
    launches = [c for c in plan["commands"] if c["op"] == "launch"]
    assert len(launches) >= 10
    for c in launches:
        assert all(g >= 1 for g in c["grid"]) and 1 <= math.prod(c["block"]) <= gpu_pipeline.MAX_THREADS
    for c in plan["commands"]:
        for r in c.get("args", []) + [c[k] for k in ("src", "dst") if k in c]:
            if r.get("buffer") == "alloc":
                assert 0 <= r["offset"] < plan["allocations"][r["index"]]


def test_block_emulated_matches_cpu(rng):
    """A whole decoder block (every kernel class together) through the GPU runtime on the emulation."""
    w = workloads.llama_block(num_layers=1, hidden=64, heads=4, kv_heads=2, ffn=96, seq=16)
    text = w.kiln_ir()
    device = emulated_device(kiln.compile(text, target="cuda", compile_to="loops"))
    program = kiln.runtime.load_artifact(kiln.compile(text, target="cuda"), device)
    inputs = w.make_inputs(rng)
    (y,) = program.f(*inputs)
    (expected,) = kiln.compile(text, target="cpu").f(*inputs)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("target,chip", [pytest.param(t, c, marks=_target_marks(t), id=f"{t}-{c}")
                                         for t, c in CHIPS])
def test_four_layer_block_compiles(target, chip, tmp_path):
    """The benchmark's 4-layer block (kiln.bench.workloads.llama_block) to every GPU target, written and
    read back as a .kiln file."""
    text = workloads.llama_block().kiln_ir()
    path = str(tmp_path / "block.kiln")
    art = kiln.compile(text, target=target, chip=chip, output=path)
    back = artifact.read(path, expected={"kiln_version": kiln.__version__})
    _check_artifact(back, target, chip)
    sizes = {fmt: sum(len(back.blobs[k["blobs"][fmt]]) for k in back.manifest["kernels"])
             for fmt in back.manifest["target"]["formats"]}
    print(f"4-layer block {target} {chip}: {len(art.manifest['kernels'])} kernels, "
          f"{len(back.manifest['programs']['f']['commands'])} commands, bytes {sizes}, file {os.path.getsize(path)}")
    assert all(s > 0 for s in sizes.values())


def test_cli_compiles_gpu_targets(tmp_path, capsys):
    from kiln.cli import main

    src = tmp_path / "in.mlir"
    src.write_text(CASES["rms_norm"][1])
    out = tmp_path / "out.kiln"
    assert main(["compile", str(src), "--target", "cuda", "--chip", "sm_90", "-o", str(out)]) == 0
    assert artifact.read(str(out)).manifest["target"]["chip"] == "sm_90"
    assert main(["compile", str(src), "--target", "cuda", "--compile-to", "llvm"]) == 0
    assert "nvvm.target<O = 3, chip = \"sm_90\"" not in capsys.readouterr().out  # default chip: sm_80
    assert main(["compile", str(src), "--target", "rocm", "--chip", "sm_90", "-o", str(out)]) == 1
    assert "unknown ROCm chip 'sm_90'" in capsys.readouterr().err
    assert main(["compile", str(src), "--target", "cpu", "--chip", "sm_90", "-o", str(out)]) == 1
    assert "chip= applies to the GPU targets" in capsys.readouterr().err


def test_chip_survives_resume_from_a_stage():
    tiled = kiln.compile(CASES["silu"][1], target="rocm", chip="gfx1100", compile_to="tiled")
    assert 'kiln.target_chip = "gfx1100"' in tiled
    llvm = kiln.compile(tiled, target="rocm", compile_from="tiled", compile_to="llvm")
    assert 'chip = "gfx1100"' in llvm


def test_dynamic_shapes_are_refused_with_a_message():
    t = "tensor<?x64xf32>"
    text = f"func.func @f(%x: {t}) -> {t} {{\n  %y = transformer.silu %x : {t}\n  return %y : {t}\n}}"
    with pytest.raises(KilnError, match="GPU targets need static shapes"):
        kiln.compile(text, target="cuda")


def test_missing_rocm_tools_are_named(monkeypatch):
    rocm_pipeline.llvm22_tool.cache_clear()
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    try:
        with pytest.raises(KilnError, match=r"llc-22 not found.*apt-get install llvm-22"):
            rocm_pipeline.llvm22_tool("llc")
        with pytest.raises(KilnError, match=r"apt-get install lld-22"):
            rocm_pipeline.llvm22_tool("ld.lld")
    finally:
        rocm_pipeline.llvm22_tool.cache_clear()


HAS_CUDA = ctypes.util.find_library("cuda") is not None
HAS_HIP = ctypes.util.find_library("amdhip64") is not None or os.path.exists("/opt/rocm/lib/libamdhip64.so")


@pytest.mark.skipif(HAS_CUDA, reason="a CUDA driver is installed: the missing-driver error cannot happen")
def test_cuda_device_without_driver_names_libcuda():
    with pytest.raises(KilnError, match=r"no CUDA driver: libcuda\.so\.1 not found"):
        kiln.runtime.Device("cuda")


@pytest.mark.skipif(HAS_HIP, reason="a HIP runtime is installed: the missing-runtime error cannot happen")
def test_hip_device_without_runtime_names_libamdhip64():
    with pytest.raises(KilnError, match=r"no HIP runtime: libamdhip64\.so not found"):
        kiln.runtime.Device("hip")


class _FakeLibcuda:
    """libcuda's entry points as recorders that succeed; an output argument (ctypes.byref) that is
    still zero gets a fresh handle. Copies move nothing."""

    def __init__(self):
        self.calls, self._handles = [], 0x1000

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)

        def call(*args):
            self.calls.append((name, args))
            for a in args:
                out = getattr(a, "_obj", None)  # ctypes.byref(x)._obj is x
                if isinstance(out, (ctypes.c_void_p, ctypes.c_uint64)) and not out.value:
                    self._handles += 0x1000
                    out.value = self._handles
            return 0

        return call


def _fake_cuda_device(chip: str):
    """A Device whose CudaDriver calls _FakeLibcuda (its set-up, which needs a GPU, skipped)."""
    from kiln.runtime.cuda import CudaDriver
    from kiln.runtime.device import Device

    driver = CudaDriver.__new__(CudaDriver)
    driver.lib, driver._keep, driver._graphs, driver._node_params = _FakeLibcuda(), [], {}, {}
    driver.chip, driver.device_name = chip, "a GPU that is not there"
    driver.context, driver.stream = ctypes.c_void_p(1), ctypes.c_void_p(2)
    device = Device.__new__(Device)
    device.driver, device.gpu, device._num_threads = "cuda", driver, None
    return device


def test_cuda_launch_gives_the_kernel_its_dynamic_shared_memory(rng):
    """A tensor-core kernel with 74 KiB of shared memory on sm_90: loading the program opts it into
    more than 48 KiB (cuFuncSetAttribute MAX_DYNAMIC_SHARED_SIZE_BYTES), and cuLaunchKernel gives it
    the bytes; a kernel within 48 KiB is launched with its bytes and no attribute."""
    for shape, shared, opts_in in (((256, 256, 128), 75776, True), ((64, 128, 96), 29184, False)):
        device = _fake_cuda_device("sm_90")
        art = kiln.compile(_low_matmul("bf16", *shape), target="cuda", chip="sm_90")
        program = kiln.runtime.load_artifact(art, device)
        calls = device.gpu.lib.calls
        attributes = [args for name, args in calls if name == "cuFuncSetAttribute"]
        assert [(a[1].value, a[2].value) for a in attributes] == ([(8, shared)] if opts_in else [])
        m, n, k = shape
        program.f(_low(rng, "bf16", m, k), _low(rng, "bf16", k, n))
        (launch,) = [args for name, args in calls if name == "cuLaunchKernel"]
        assert [v.value for v in launch[1:8]] == [*art.manifest["programs"]["f"]["commands"][0]["grid"], 128, 1, 1,
                                                  shared]


def test_importing_and_compiling_loads_no_gpu_library(tmp_path):
    src = tmp_path / "in.mlir"
    src.write_text(CASES["rms_norm"][1])
    code = ("import sys, kiln; kiln.compile(open(sys.argv[1]).read(), target='cuda'); "
            "maps = open('/proc/self/maps').read(); print('libcuda' in maps, 'libamdhip64' in maps)")
    out = subprocess.run([sys.executable, "-c", code, str(src)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# ---- on a GPU (skipped where none is present) ----------------------------------------------------


def _gpu_device(driver):
    try:
        return kiln.runtime.Device(driver)
    except KilnError as e:
        pytest.skip(f"no usable {driver} device: {e}")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA driver (libcuda) on this machine")
@pytest.mark.parametrize("case", sorted(CASES))
def test_cuda_numerics_on_gpu(case, rng):
    device = _gpu_device("cuda")
    program = kiln.compile(CASES[case][1], target="cuda", chip=device.gpu.chip, device=device)
    inputs = CASES[case][2](rng)
    (y,) = program.f(*inputs)
    expected = CASES[case][3](*inputs)
    if y.dtype == np.int64:
        np.testing.assert_array_equal(y, expected)
    else:
        np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(expected).max()))


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_HIP, reason="no HIP runtime (libamdhip64) on this machine")
@needs_llc22
@pytest.mark.parametrize("case", sorted(CASES))
def test_hip_numerics_on_gpu(case, rng):
    device = _gpu_device("hip")
    chip = os.environ.get("KILN_ROCM_CHIP", "gfx942")
    program = kiln.compile(CASES[case][1], target="rocm", chip=chip, device=device)
    inputs = CASES[case][2](rng)
    (y,) = program.f(*inputs)
    expected = CASES[case][3](*inputs)
    if y.dtype == np.int64:
        np.testing.assert_array_equal(y, expected)
    else:
        np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(expected).max()))


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA driver (libcuda) on this machine")
def test_cuda_graph_replay_on_gpu(rng):
    device = _gpu_device("cuda")
    program = kiln.compile(CASES["linear"][1], target="cuda", chip=device.gpu.chip, device=device)
    x, w = CASES["linear"][2](rng)
    bx, bw, by = device.upload(x), device.upload(w), device.allocate((32, 48), np.float32)
    cb = program.command_buffer().call("f", bx, bw, out=[by])
    for _ in range(2):
        cb.submit()
    np.testing.assert_allclose(by.to_numpy(), ref.linear(x, w), rtol=1e-4, atol=1e-4)


DECODE = """
func.func @decode(%q: tensor<1x4x1x16xf32>, %k: tensor<1x2x1x16xf32>, %v: tensor<1x2x1x16xf32>,
                  %kc: tensor<1x2x8x16xf32>, %vc: tensor<1x2x8x16xf32>, %pos: index)
    -> (tensor<1x4x1x16xf32>, tensor<1x2x8x16xf32> {kiln.updates_arg = 3 : i64},
        tensor<1x2x8x16xf32> {kiln.updates_arg = 4 : i64}) {
  %kc2 = transformer.kv_cache_update %kc, %k at %pos : tensor<1x2x8x16xf32>, tensor<1x2x1x16xf32> -> tensor<1x2x8x16xf32>
  %vc2 = transformer.kv_cache_update %vc, %v at %pos : tensor<1x2x8x16xf32>, tensor<1x2x1x16xf32> -> tensor<1x2x8x16xf32>
  %o = transformer.attention %q, %kc2, %vc2 offset(%pos) {causal} : (tensor<1x4x1x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, index) -> tensor<1x4x1x16xf32>
  return %o, %kc2, %vc2 : tensor<1x4x1x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>
}
"""


def test_emulated_decode_steps_update_the_kv_cache_in_place(rng):
    """Decode steps: the new K/V row is written into the caches (device Buffers, updated in place) at the
    runtime position by cache-update kernels (K's and V's in one launch), and attention sees exactly
    the rows up to it; a position past the cache is refused before any kernel runs."""
    device = emulated_device(kiln.compile(DECODE, target="cuda", compile_to="loops"))
    program = kiln.runtime.load_artifact(kiln.compile(DECODE, target="cuda"), device)
    plan = program.manifest["programs"]["decode"]
    assert [c["bounds"] for c in plan["commands"] if c.get("bounds")] == [[[5, 7]]]
    kc, vc = np.zeros((1, 2, 8, 16), np.float32), np.zeros((1, 2, 8, 16), np.float32)
    bk, bv = device.upload(kc), device.upload(vc)
    for pos in range(5):
        q, k, v = _f32(rng, 1, 4, 1, 16), _f32(rng, 1, 2, 1, 16), _f32(rng, 1, 2, 1, 16)
        kc[:, :, pos], vc[:, :, pos] = k[:, :, 0], v[:, :, 0]
        o, rk, rv = program.decode(q, k, v, bk, bv, pos)
        assert rk is bk and rv is bv
        np.testing.assert_array_equal(bk.to_numpy(), kc)
        expected = ref.attention(q, np.repeat(kc, 2, axis=1), np.repeat(vc, 2, axis=1), causal=True, offset=pos)
        np.testing.assert_allclose(o, expected, rtol=2e-5, atol=2e-6)
    launches = len(device.gpu.launches)
    with pytest.raises(KilnError, match="argument 5 is 8, but kernel decode_merged_0_kernel writes "
                                        "outside its buffer past 7"):
        program.decode(q, k, v, bk, bv, 8)
    assert len(device.gpu.launches) == launches


def test_recorded_decode_steps_keep_their_own_positions(rng):
    """Two decode steps at different positions recorded in one command buffer and replayed as one
    graph: each call's kernels read the position from that call's own scalar buffer."""
    device = emulated_device(kiln.compile(DECODE, target="cuda", compile_to="loops"))
    program = kiln.runtime.load_artifact(kiln.compile(DECODE, target="cuda"), device)
    kc, vc = _f32(rng, 1, 2, 8, 16), _f32(rng, 1, 2, 8, 16)
    bk, bv = device.upload(kc), device.upload(vc)
    steps = [(pos, [_f32(rng, *s) for s in ((1, 4, 1, 16), (1, 2, 1, 16), (1, 2, 1, 16))]) for pos in (3, 4)]
    cb, outs = program.command_buffer(), []
    for pos, (q, k, v) in steps:
        outs.append(device.allocate((1, 4, 1, 16), np.float32))
        cb.call("decode", device.upload(q), device.upload(k), device.upload(v), bk, bv, pos, out=[outs[-1]])
    for _ in range(2):  # the graph, captured once, replays with the same positions
        bk.write(kc), bv.write(vc)
        cb.submit()
        want_k, want_v = kc.copy(), vc.copy()
        for (pos, (q, k, v)), out in zip(steps, outs):
            want_k[:, :, pos], want_v[:, :, pos] = k[:, :, 0], v[:, :, 0]
            expected = ref.attention(q, np.repeat(want_k, 2, axis=1), np.repeat(want_v, 2, axis=1), causal=True,
                                     offset=pos)
            np.testing.assert_allclose(out.to_numpy(), expected, rtol=2e-5, atol=2e-6)
        np.testing.assert_array_equal(bk.to_numpy(), want_k)


def _tiny_llama(layers: int):
    """(config, kiln.model.model_ir text) of a tiny Llama-family model (GQA, tied embeddings)."""
    import json

    from kiln import model

    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64,
              "intermediate_size": 96, "num_attention_heads": 4, "num_key_value_heads": 2,
              "num_hidden_layers": layers, "vocab_size": 128, "max_position_embeddings": 32,
              "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": True}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "config.json")
        with open(path, "w") as f:
            json.dump(config, f)
        try:
            return config, model.model_ir(path, max_seq_len=16, prefill_chunk=8)
        except KilnError as e:
            pytest.skip(f"the model builder does not take this config: {e}")


@functools.lru_cache(maxsize=None)
def _tiny_llama_launches(layers: int) -> dict:
    """{program: Counter of launched kernel classes} of the tiny Llama-family model on cuda."""
    from collections import Counter

    art = kiln.compile(_tiny_llama(layers)[1], target="cuda")
    classes = {k["name"]: k["class"] for k in art.manifest["kernels"]}
    return {name: Counter(classes[c["kernel"]] for c in plan["commands"] if c["op"] == "launch")
            for name, plan in art.manifest["programs"].items()}


def test_decode_step_launches_per_layer():
    """What one more decoder layer adds to a cuda decode step: 14 kernels in 9 launches. None is a
    transpose (a position's heads are split and merged as views), a residual addition (done in the
    o_proj and down_proj accumulators), an RMSNorm scaling or SiLU(gate)·up (fused into the matvecs
    that read them, which become "reduction" kernels). Left: 2 RMSNorm sums, o_proj, 6 fused linears
    (q, k, v, gate, up, down), 2 RoPE (class "generic": they read the two halves of the features at
    constant indices), 2 cache updates and attention. Independent neighbours share a launch
    (launch_merging.py): q, k and v; q's and k's RoPE (k's runs in q's larger blocks); the cache
    updates; gate and up."""
    from collections import Counter

    per_layer = _tiny_llama_launches(3)["decode"] - _tiny_llama_launches(2)["decode"]
    assert per_layer == Counter({"contraction": 1, "reduction": 3, "generic+generic": 1, "attention": 1,
                                 "reduction+reduction+reduction": 1, "copy+copy": 1, "reduction+reduction": 1}), per_layer
    assert "transpose" not in _tiny_llama_launches(2)["decode"]


def test_prefill_launches_per_layer():
    """What one more decoder layer adds to a cuda prefill of 8 positions: 17 kernels in 12 launches, no
    transpose.
    The split_heads transposes of q and k fold into their RoPE kernels (kiln-fuse-elementwise), which
    read the projections' output [b, s, h*d] directly; v's into its cache update, which reads the
    projection at permuted indices (copy_views.py); and attention writes its output as [b, s, h, d],
    so merge_heads is a reshape. Left: 2 RMSNorm sums and 2 scalings, 7 linears (q, k, v, o, gate,
    up, down; k and v share a kernel), SiLU(gate)·up, 2 RoPE, 2 cache updates and attention. One
    launch each (launch_merging.py) for q, k and v; the RoPEs; the cache updates; gate and up."""
    from collections import Counter

    per_layer = _tiny_llama_launches(3)["prefill_8"] - _tiny_llama_launches(2)["prefill_8"]
    assert per_layer == Counter({"contraction": 2, "reduction": 2, "elementwise": 3, "attention": 1,
                                 "contraction+contraction+contraction": 1, "generic+generic": 1, "copy+copy": 1,
                                 "contraction+contraction": 1}), per_layer
    assert "transpose" not in _tiny_llama_launches(2)["prefill_8"]


def test_smollm2_decode_graph_plans_without_dynamic_kernels():
    """A Llama-family decode graph (kiln.model.model_ir on a tiny config) compiles to cuda with every
    kernel static and the new KV rows written by cache-update kernels, K's and V's of a layer in
    one launch (launch_merging.py); the kernels read the position from the entry point's scalar
    buffer, and no launch parameter or copy address depends on it."""
    config, text = _tiny_llama(layers=2)
    art = kiln.compile(text, target="cuda")
    plans = art.manifest["programs"]
    assert "decode" in plans
    commands = plans["decode"]["commands"]
    assert not [c for c in commands if c["op"] == "copy" and ("scalars" in c["dst"] or "scalars" in c["src"])]
    updates = {k["name"] for k in art.manifest["kernels"] if k["class"] == "copy+copy"}
    launches = [c for c in commands if c["op"] == "launch" and c["kernel"] in updates]
    assert len({c["kernel"] for c in launches}) == 1  # every layer's K and V update shares one kernel
    assert len(launches) == config["num_hidden_layers"]
    position = 8 * [i for i, a in enumerate(art.manifest["entry_points"]["decode"]["args"])
                    if a["shape"] is None][0]
    assert all({"buffer": "scalars", "index": 0, "offset": position} in c["args"] for c in launches)
    assert plans["decode"]["scalar_buffer"]
    assert not [a for c in commands if c["op"] == "launch" for a in c["args"] if a.get("scalar") == "arg"]


@pytest.mark.parametrize("entry,pos", [("decode", 5), ("prefill_8", 3)])
def test_emulated_tiny_llama_decode_matches_cpu(rng, entry, pos):
    """A whole decode step, and a prefill chunk at a cache offset, of a tiny Llama-family model
    (kiln.model.model_ir, random weights): the GPU program on the emulation gives the CPU program's
    logits and KV caches. (The prefill's V is copied into its cache from the projection read at
    permuted indices, and attention writes the merged heads' layout: no transpose kernels.)"""
    from kiln.signature import Signature

    config, text = _tiny_llama(layers=2)
    art = kiln.compile(text, target="cuda")
    gpu_program = kiln.runtime.load_artifact(art, emulated_device(kiln.compile(text, target="cuda",
                                                                                compile_to="loops")))
    cpu_program = kiln.compile(text, target="cpu")
    sig = Signature.from_json(entry, art.manifest["entry_points"][entry])
    args = []
    for i, spec in enumerate(sig.args):
        if spec.is_scalar:
            args.append(pos)
        elif np.dtype(spec.dtype) == np.int64:
            args.append(rng.integers(0, config["vocab_size"], spec.shape) if i == 0 else
                        (pos + np.arange(spec.shape[0])) if i == 1 else np.zeros(spec.shape, np.int64))
        else:
            args.append((rng.standard_normal(spec.shape) * 0.2).astype(np.float32))
    cpu_args = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    got = getattr(gpu_program, entry)(*args)
    expected = getattr(cpu_program, entry)(*cpu_args)
    assert len(got) == len(expected) >= 1 + 2 * config["num_hidden_layers"]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)


# ---- compute precision: bf16/f16 GEMM operands, f32 sums; tensor cores on cuda sm_80+ ------------

def _bmm(b, m, n, k):
    a, bt, c = _t((b, m, k)), _t((b, k, n)), _t((b, m, n))
    return (f"func.func @f(%a: {a}, %b: {bt}) -> {c} {{\n"
            f"  %c = transformer.matmul %a, %b : ({a}, {bt}) -> {c}\n  return %c : {c}\n}}")


def _rounded(x, precision):
    """x rounded to bf16/f16 (round to nearest even), as float64 ("f64": not rounded)."""
    import torch

    if precision == "f64":
        return np.asarray(x, np.float64)

    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.from_numpy(np.ascontiguousarray(x)).to(dtype).to(torch.float64).numpy()


def _linear_residual(m, n, k):
    """r + x·Wᵀ as one linalg.generic accumulating into r (as a decoder's fused residual linears do)."""
    x, w, y = _t((1, m, k)), _t((n, k)), _t((1, m, n))
    maps = ["(d0, d1, d2, d3) -> (d0, d1, d3)", "(d0, d1, d2, d3) -> (d2, d3)", "(d0, d1, d2, d3) -> (d0, d1, d2)"]
    return (f"func.func @f(%x: {x}, %w: {w}, %r: {y}) -> {y} {{\n"
            f"  %z = linalg.generic {{indexing_maps = [{', '.join(f'affine_map<{a}>' for a in maps)}], "
            'iterator_types = ["parallel", "parallel", "parallel", "reduction"]} '
            f"ins(%x, %w : {x}, {w}) outs(%r : {y}) {{\n"
            "  ^bb0(%a: f32, %b: f32, %c: f32):\n    %p = arith.mulf %a, %b : f32\n"
            "    %s = arith.addf %c, %p : f32\n    linalg.yield %s : f32\n"
            f"  }} -> {y}\n  return %z : {y}\n}}")


def _gqa_scores(kv, g, m, n, k):
    """S[h, g, m, n] = Q[h, g, m, k] · K[h, n, k]ᵀ: grouped-query attention's scores (two batch loops,
    the second not indexing K)."""
    q, kt, st = _t((kv, g, m, k)), _t((kv, n, k)), _t((kv, g, m, n))
    maps = ["(h, g, m, n, k) -> (h, g, m, k)", "(h, g, m, n, k) -> (h, n, k)", "(h, g, m, n, k) -> (h, g, m, n)"]
    return (f"func.func @f(%q: {q}, %k: {kt}) -> {st} {{\n"
            f"  %z = arith.constant 0.0 : f32\n  %e = tensor.empty() : {st}\n"
            f"  %s0 = linalg.fill ins(%z : f32) outs(%e : {st}) -> {st}\n"
            f"  %s = linalg.generic {{indexing_maps = [{', '.join(f'affine_map<{a}>' for a in maps)}], "
            'iterator_types = ["parallel", "parallel", "parallel", "parallel", "reduction"]} '
            f"ins(%q, %k : {q}, {kt}) outs(%s0 : {st}) {{\n"
            "  ^bb0(%a: f32, %b: f32, %c: f32):\n    %p = arith.mulf %a, %b : f32\n"
            "    %r = arith.addf %c, %p : f32\n    linalg.yield %r : f32\n"
            f"  }} -> {st}\n  return %s : {st}\n}}")


# name -> (IR, inputs(rng), float64 reference on the inputs rounded to `precision`)
GEMMS = {
    "linear": (workloads.linear(64, 128, 96).kiln_ir(),
               lambda r: [_f32(r, 64, 96), _f32(r, 128, 96, scale=0.1)],
               lambda x, w, p: _rounded(x, p) @ _rounded(w, p).T),
    "matmul": (workloads.gemm(32, 80, 48).kiln_ir(),  # B[k, n]: transposed into shared memory
               lambda r: [_f32(r, 32, 48), _f32(r, 48, 80)],
               lambda a, b, p: _rounded(a, p) @ _rounded(b, p)),
    "linear_residual": (_linear_residual(32, 64, 48),  # C starts as the residual, not a fill
                        lambda r: [_f32(r, 1, 32, 48), _f32(r, 64, 48, scale=0.1), _f32(r, 1, 32, 64)],
                        lambda x, w, res, p: res + _rounded(x, p) @ _rounded(w, p).T),
    "batched_linear": (workloads.linear(16, 24, 32).kiln_ir().replace("tensor<16x", "tensor<3x16x"),  # W shared
                       lambda r: [_f32(r, 3, 16, 32), _f32(r, 24, 32, scale=0.1)],
                       lambda x, w, p: _rounded(x, p) @ _rounded(w, p).T),
    "gqa_scores": (_gqa_scores(2, 3, 16, 24, 32),  # 6 (head, group) pairs share one grid dimension
                   lambda r: [_f32(r, 2, 3, 16, 32), _f32(r, 2, 24, 32)],
                   lambda q, k, p: _rounded(q, p) @ np.swapaxes(_rounded(k, p), -1, -2)[:, None]),
    "batched_matmul": (_bmm(3, 16, 32, 32),
                       lambda r: [_f32(r, 3, 16, 32), _f32(r, 3, 32, 32)],
                       lambda a, b, p: _rounded(a, p) @ _rounded(b, p)),
}


def _gemm_tolerance(expected, k):
    """Only the f32 sums differ from the float64 reference of the rounded inputs: a few ulps of the
    magnitudes summed."""
    return dict(rtol=1e-5, atol=1e-6 * k * max(1.0, np.abs(expected).max()))


def _ptx_of(art):
    return "\n".join(art.blobs[k["blobs"]["ptx"]].decode() for k in art.manifest["kernels"])


@functools.lru_cache(maxsize=None)
def _compiled_precision(text, chip, precision, target="cuda"):
    return kiln.compile(text, target=target, chip=chip, precision=precision)


def test_precision_is_checked():
    text = GEMMS["linear"][0]
    with pytest.raises(KilnError, match=r"unknown precision 'fp8': give one of f32, bf16, f16"):
        kiln.compile(text, target="cuda", precision="fp8")
    with pytest.raises(KilnError, match=r"precision 'bf16' applies to the GPU targets \(cuda, rocm\); "
                                        r"the 'cpu' target computes in f32"):
        kiln.compile(text, target="cpu", precision="bf16")
    assert "kiln.precision" not in kiln.compile(text, target="cpu", precision="f32", compile_to="linalg")


def test_precision_is_recorded_and_survives_resume():
    text = GEMMS["linear"][0]
    assert _compiled_precision(text, "sm_80", "f32").manifest["target"].get("precision") is None
    tiled = kiln.compile(text, target="cuda", precision="f16", compile_to="tiled")
    assert 'kiln.precision = "f16"' in tiled and "kiln.mma_tile" in tiled
    art = kiln.compile(tiled, target="cuda", compile_from="tiled")
    assert art.manifest["target"]["precision"] == "f16"
    assert "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32" in _ptx_of(art)
    loops = kiln.compile(text, target="cuda", precision="bf16", compile_to="loops")
    art = kiln.compile(loops, target="cuda", compile_from="loops")
    assert art.manifest["target"]["precision"] == "bf16"
    assert "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32" in _ptx_of(art)


def test_cli_precision(tmp_path, capsys):
    from kiln.cli import main

    src = tmp_path / "in.mlir"
    src.write_text(GEMMS["linear"][0])
    out = tmp_path / "out.kiln"
    assert main(["compile", str(src), "--target", "cuda", "--chip", "sm_90", "--precision", "bf16", "-o", str(out)]) == 0
    back = artifact.read(str(out))
    assert back.manifest["target"]["precision"] == "bf16"
    assert "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32" in _ptx_of(back)
    assert main(["compile", str(src), "--target", "cuda", "--precision", "tf32", "-o", str(out)]) == 1
    assert "unknown precision 'tf32'" in capsys.readouterr().err
    assert main(["compile", str(src), "--target", "cpu", "--precision", "f16", "-o", str(out)]) == 1
    assert "applies to the GPU targets" in capsys.readouterr().err


@pytest.mark.parametrize("chip", ["sm_80", "sm_90"])
@pytest.mark.parametrize("precision", ["bf16", "f16"])
@pytest.mark.parametrize("case", sorted(GEMMS))
def test_tensor_core_kernels_compile(case, precision, chip):
    """PTX with mma.sync m16n8k16 (f32 accumulators) fed by ldmatrix from shared memory, 16-byte global
    loads rounded to bf16/f16 on the way in; a cubin when ptxas exists."""
    art = _compiled_precision(GEMMS[case][0], chip, precision)
    _check_artifact(art, "cuda", chip)
    ptx = _ptx_of(art)
    assert f"mma.sync.aligned.m16n8k16.row.col.f32.{precision}.{precision}.f32" in ptx
    assert "ldmatrix.sync.aligned.m8n8.x4.shared.b16" in ptx
    assert "ld.global.v4" in ptx and f"cvt.rn.{precision}x2.f32" in ptx
    assert ".extern .shared .align 1024 .b8" in ptx and "bar.sync" in ptx
    assert ".local" not in ptx, "the prefetch buffer was not promoted to registers"


@pytest.mark.parametrize("precision", ["bf16", "f16"])
@pytest.mark.parametrize("case", sorted(GEMMS))
def test_tensor_core_kernels_emulated_at_warp_level(case, precision, rng, monkeypatch):
    """The tensor-core kernel before its vector.contract become mma.sync (mma_emulation.py: one OS
    thread per GPU thread, real barriers, shared memory), against the float64 product of the rounded
    inputs. This covers Kiln's part: staging, tiles per warp, accumulators, write-back."""
    monkeypatch.setattr(gpu_mma, "_to_mma_sync", lambda *a: None)
    loops = kiln.compile(GEMMS[case][0], target="cuda", precision=precision, compile_to="loops")
    _check_tensor_core_gemm(case, loops, TensorCoreKernel(loops, precision), precision, rng)


def _run_gemm_kernel(loops: str, kernel, inputs: list, shape, dtype=np.float32) -> np.ndarray:
    """C (of `shape` and `dtype`) of a one-GEMM program (`loops`: its stage text) on `inputs`, its
    kernel run as `kernel`: the host copies (C's initial value into the out-param), then calls the
    dispatch function, which launches the kernel; both argument lists are mapped."""
    out = np.full(shape, np.nan, dtype)
    host = list(inputs) + [out]
    for src, dst in re.findall(r"memref\.copy %arg(\d+), %arg(\d+)", loops):
        host[int(dst)][...] = host[int(src)]
    call = re.search(r"call @\w+_dispatch_0_contraction\(([^)]*)\)", loops).group(1)
    launch = re.search(r"gpu\.launch_func .* args\((.*)\)", loops).group(1)
    dispatch_args = [host[int(a)] for a in re.findall(r"%arg(\d+)", call)]
    kernel(*[dispatch_args[int(a)] for a in re.findall(r"%arg(\d+) :", launch)])
    return out


def _check_tensor_core_gemm(case, loops: str, kernel, precision: str, rng) -> None:
    """Runs the GEMMS[case] program's one kernel (`loops`: its stage text) on fresh inputs against the
    float64 product of the rounded inputs."""
    _, make_inputs, reference = GEMMS[case]
    inputs = make_inputs(rng)
    expected = reference(*inputs, precision)
    out = _run_gemm_kernel(loops, kernel, inputs, expected.shape)
    np.testing.assert_allclose(out, expected, **_gemm_tolerance(expected, inputs[0].shape[-1]))
    exact = reference(*[x.astype(np.float64) for x in inputs], "f64")
    assert np.abs(expected - exact).max() > 1e-4, "the operands were not rounded"


# One chip per AMD matrix instruction layout: CDNA3's mfma (wavefronts of 64), RDNA3's and RDNA4's wmma
# (32); the GEMMS whose N is a multiple of 16 (AMD's instruction tiles are 16 x 16)
AMD_MATRIX_CHIPS = {"gfx942": "v_mfma_f32_16x16x16_{}", "gfx1100": "v_wmma_f32_16x16x16_{}",
                    "gfx1201": "v_wmma_f32_16x16x16_{}"}
AMD_GEMMS = ["linear", "matmul", "linear_residual", "batched_matmul"]


@pytest.mark.parametrize("chip", sorted(AMD_MATRIX_CHIPS))
@pytest.mark.parametrize("precision", ["bf16", "f16"])
@pytest.mark.parametrize("case", AMD_GEMMS)
def test_amd_matrix_core_kernels_emulated_per_lane(case, precision, chip, rng):
    """The mfma/wmma kernel as compiled (mma_emulation.py: each instruction an exchange between the
    lanes of a wavefront, with AMD's documented lane layout), against the float64 product of the
    rounded inputs: staging, the lanes' fragments and accumulators, write-back."""
    loops = kiln.compile(GEMMS[case][0], target="rocm", chip=chip, precision=precision, compile_to="loops")
    assert ("amdgpu.mfma" if chip == "gfx942" else "amdgpu.wmma") in loops
    kernel = TensorCoreKernel(loops, precision, chip)
    _check_tensor_core_gemm(case, loops, kernel, precision, rng)
    assert kernel.exchanges > 0


@needs_llc22
@pytest.mark.parametrize("precision", ["bf16", "f16"])
@pytest.mark.parametrize("chip", sorted(AMD_MATRIX_CHIPS))
def test_amd_matrix_core_kernels_compile(chip, precision):
    """hsaco whose code issues the chip's matrix instruction, reads its fragments from LDS and keeps the
    prefetch buffer in registers (no scratch), for a wavefront of 64 (CDNA) or 32 (RDNA) lanes."""
    art = _compiled_precision(GEMMS["linear"][0], chip, precision, "rocm")
    _check_artifact(art, "rocm", chip)
    (kernel,) = art.manifest["kernels"]
    (launch,) = [c for c in art.manifest["programs"]["f"]["commands"] if c["op"] == "launch"]
    lanes = 64 if chip == "gfx942" else 32
    assert launch["block"] == [4 * lanes, 1, 1]
    hsaco = art.blobs[kernel["blobs"]["hsaco"]]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.hsaco")
        with open(path, "wb") as f:
            f.write(hsaco)
        disassembly = subprocess.run([rocm_pipeline.llvm22_tool("llvm-objdump"), "-d", f"--mcpu={chip}", path],
                                     capture_output=True, text=True, check=True).stdout
        notes = subprocess.run([rocm_pipeline.llvm22_tool("llvm-readobj"), "--notes", path],
                               capture_output=True, text=True, check=True).stdout
    instruction = AMD_MATRIX_CHIPS[chip].format(precision)
    # per K step of 32, each warp's 32 x 32 of C: (32/16)^2 tiles x 2 (LLVM may unroll the K loop)
    count = disassembly.count(instruction)
    assert count and count % 8 == 0, f"{count} x {instruction}"
    assert re.search(r"\bds_(read|load)_b(64|128)\b", disassembly), "fragments not read from LDS as vectors"
    assert "scratch_" not in disassembly and ".private_segment_fixed_size: 0" in notes
    assert f".wavefront_size: {lanes}" in notes


@pytest.mark.parametrize("chip,precision,why", [
    ("gfx942", "f32", "f32 precision"),
    ("gfx1030", "bf16", "RDNA2: no matrix instructions"),
    ("gfx906", "f16", "GCN5: no bf16/f16 16x16x16 matrix instructions"),
])
def test_amd_without_matrix_cores_keeps_simt(chip, precision, why):
    loops = kiln.compile(GEMMS["linear"][0], target="rocm", chip=chip, precision=precision, compile_to="loops")
    assert "amdgpu." not in loops and "kiln.mma_tile" not in loops, why
    assert ("arith.truncf" in loops) == (precision != "f32")


def test_amd_ragged_n_keeps_simt():
    """N = 24 fits mma.sync's 8-column tiles but not AMD's 16-column ones."""
    text = GEMMS["batched_linear"][0]
    assert "amdgpu." not in kiln.compile(text, target="rocm", chip="gfx942", precision="bf16", compile_to="loops")
    assert "kiln.mma_tile" in kiln.compile(text, target="cuda", chip="sm_80", precision="bf16", compile_to="tiled")


def test_sequential_emulation_refuses_tensor_core_kernels():
    """gpu_emulation.py runs threads one after another: it must refuse shared-memory kernels rather
    than run them wrongly."""
    loops = kiln.compile(GEMMS["linear"][0], target="cuda", precision="bf16", compile_to="loops")
    assert "nvvm.mma.sync" in loops and "#gpu.address_space<workgroup>" in loops
    with pytest.raises(KilnError, match="kernel f_dispatch_0_contraction_kernel"):
        emulated_device(loops)


def _low_gemm(low: str, lhs, rhs, out, maps, residual=False):
    """C (f32) = A·B on bf16/f16 tensors A and B, extended to f32 in the body: the kernel a bf16/f16
    transformer.matmul or linear becomes (its f32 result is then rounded by a second kernel).
    `residual`: C starts as an argument instead of zeros."""
    a, b, c = _t(lhs, low), _t(rhs, low), _t(out)
    its = ", ".join(['"parallel"'] * (len(out)) + ['"reduction"'])
    init = "%r" if residual else "%c0"
    return (f"func.func @f(%a: {a}, %b: {b}{f', %r: {c}' if residual else ''}) -> {c} {{\n"
            + ("" if residual else f"  %z = arith.constant 0.0 : f32\n  %e = tensor.empty() : {c}\n"
                                   f"  %c0 = linalg.fill ins(%z : f32) outs(%e : {c}) -> {c}\n")
            + f"  %y = linalg.generic {{indexing_maps = [{', '.join(f'affine_map<{m}>' for m in maps)}], "
            f"iterator_types = [{its}]}} ins(%a, %b : {a}, {b}) outs({init} : {c}) {{\n"
            f"  ^bb0(%x: {low}, %w: {low}, %acc: f32):\n"
            f"    %xf = arith.extf %x : {low} to f32\n    %wf = arith.extf %w : {low} to f32\n"
            "    %p = arith.mulf %xf, %wf : f32\n    %s = arith.addf %acc, %p : f32\n    linalg.yield %s : f32\n"
            f"  }} -> {c}\n  return %y : {c}\n}}")


def _low(rng, low, *shape, scale=1.0):
    """Random bf16/f16 values (ml_dtypes / numpy arrays)."""
    from kiln.signature import numpy_dtype

    return (rng.standard_normal(shape) * scale).astype(numpy_dtype(low))


_MNK = "(d0, d1, d2) -> (d0, d2)", "(d0, d1, d2) -> (d1, d2)", "(d0, d1, d2) -> (d0, d1)"
_MKN = "(d0, d1, d2) -> (d0, d2)", "(d0, d1, d2) -> (d2, d1)", "(d0, d1, d2) -> (d0, d1)"
_BMKN = "(b, m, n, k) -> (b, m, k)", "(b, m, n, k) -> (b, k, n)", "(b, m, n, k) -> (b, m, n)"
# name -> (IR(low), inputs(rng, low), float64 reference): GEMMs whose A and B are bf16/f16 tensors
LOW_GEMMS = {
    "linear": (lambda p: _low_gemm(p, (64, 96), (128, 96), (64, 128), _MNK),
               lambda r, p: [_low(r, p, 64, 96), _low(r, p, 128, 96, scale=0.1)], lambda x, w: x @ w.T),
    "matmul": (lambda p: _low_gemm(p, (32, 48), (48, 80), (32, 80), _MKN),
               lambda r, p: [_low(r, p, 32, 48), _low(r, p, 48, 80)], lambda a, b: a @ b),
    "matmul_residual": (lambda p: _low_gemm(p, (32, 64), (64, 48), (32, 48), _MKN, residual=True),
                        lambda r, p: [_low(r, p, 32, 64), _low(r, p, 64, 48), _f32(r, 32, 48)],
                        lambda a, b, res: res + a @ b),
    "batched_matmul": (lambda p: _low_gemm(p, (3, 16, 32), (3, 32, 32), (3, 16, 32), _BMKN),
                       lambda r, p: [_low(r, p, 3, 16, 32), _low(r, p, 3, 32, 32)], lambda a, b: a @ b),
    "large_matmul": (lambda p: _low_gemm(p, (128, 128), (128, 256), (128, 256), _MKN),  # 128 x 128 blocks
                     lambda r, p: [_low(r, p, 128, 128), _low(r, p, 128, 256)], lambda a, b: a @ b),
}
# how each LOW_GEMMS case is staged on NVIDIA: (block tile, warp tile, shared-memory buffers): a
# cp.async ring of as many buffers as there are K steps (up to 4), or 1 (registers) for one step;
# large_matmul's 4 buffers take 74 KiB, past the 48 KiB a kernel may use without opting in
LOW_GEMM_TILES = {"linear": ((64, 64), (32, 32), 3), "matmul": ((32, 16), (32, 16), 3),
                  "matmul_residual": ((32, 16), (32, 16), 2), "batched_matmul": ((16, 32), (16, 32), 1),
                  "large_matmul": ((128, 128), (64, 64), 4)}


def _check_low_gemm(case, low, loops, kernel, rng):
    """Runs LOW_GEMMS[case]'s kernel on fresh bf16/f16 inputs against their float64 product."""
    _, make_inputs, reference = LOW_GEMMS[case]
    inputs = make_inputs(rng, low)
    expected = reference(*[x.astype(np.float64) for x in inputs])
    out = _run_gemm_kernel(loops, kernel, inputs, expected.shape)
    np.testing.assert_allclose(out, expected, **_gemm_tolerance(expected, inputs[0].shape[-1]))


@pytest.mark.parametrize("low", ["bf16", "f16"])
@pytest.mark.parametrize("case", sorted(LOW_GEMMS))
def test_16bit_tensor_gemms_emulated_at_warp_level(case, low, rng, monkeypatch):
    """A GEMM on bf16/f16 tensors takes the tensor cores whatever the module's precision: its 16-byte
    loads carry 8 elements each and go to shared memory as they are (nothing to round)."""
    monkeypatch.setattr(gpu_mma, "_to_mma_sync", lambda *a: None)
    tiled = kiln.compile(LOW_GEMMS[case][0](low), target="cuda", compile_to="tiled")
    (tm, tn), (wm, wn), stages = LOW_GEMM_TILES[case]
    assert f"kiln.mma_tile = array<i64: {tm}, {tn}, " in tiled and f", {wm}, {wn}, 32, {stages}>" in tiled
    loops = kiln.compile(tiled, target="cuda", compile_from="tiled", compile_to="loops")
    assert ("nvgpu.device_async_copy" in loops) == (stages > 1) and "arith.truncf" not in loops
    assert f"vector<8x{low}>" in loops or stages > 1
    _check_low_gemm(case, low, loops, TensorCoreKernel(loops, low), rng)


@pytest.mark.parametrize("chip", sorted(AMD_MATRIX_CHIPS))
@pytest.mark.parametrize("low", ["bf16", "f16"])
@pytest.mark.parametrize("case", sorted(LOW_GEMMS))
def test_16bit_tensor_gemms_emulated_per_lane(case, low, chip, rng):
    loops = kiln.compile(LOW_GEMMS[case][0](low), target="rocm", chip=chip, compile_to="loops")
    kernel = TensorCoreKernel(loops, low, chip)
    _check_low_gemm(case, low, loops, kernel, rng)
    assert kernel.exchanges > 0


def _low_matmul(low, m, n, k):
    a, b, c = _t((m, k), low), _t((k, n), low), _t((m, n), low)
    return f"func.func @f(%a: {a}, %b: {b}) -> {c} {{\n  %c = transformer.matmul %a, %b : ({a}, {b}) -> {c}\n" \
           f"  return %c : {c}\n}}"


@pytest.mark.parametrize("chip", ["sm_80", "gfx942", "gfx1100"])
@pytest.mark.parametrize("low", ["bf16", "f16"])
def test_16bit_tensor_matmul_stores_c_rounded(low, chip, rng, monkeypatch):
    """transformer.matmul on bf16/f16 tensors is one kernel: the f32 sums are rounded as the GEMM
    stores C (the rounding kernel the op's bf16/f16 result adds is absorbed, with its f32 buffer),
    emulated against the float64 product rounded once."""
    from kiln.signature import numpy_dtype

    monkeypatch.setattr(gpu_mma, "_to_mma_sync", lambda *a: None)
    target = "cuda" if chip.startswith("sm_") else "rocm"
    loops = kiln.compile(_low_matmul(low, 64, 128, 96), target=target, chip=chip, compile_to="loops")
    assert len(re.findall(r"gpu\.launch_func", loops)) == 1 and "memref<64x128xf32>" not in loops
    dtype = numpy_dtype(low)
    a, b = _low(rng, low, 64, 96), _low(rng, low, 96, 128)
    kernel = TensorCoreKernel(loops, low, None if target == "cuda" else chip)
    c = _run_gemm_kernel(loops, kernel, [a, b], (64, 128), dtype)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    half_ulp = 2.0 ** (-8 if low == "bf16" else -11)
    assert (np.abs(c.astype(np.float64) - exact) <= half_ulp * np.abs(exact) + 1e-5 * np.abs(exact).max()).all()
    assert (c == exact.astype(dtype)).mean() > 0.97


@pytest.mark.parametrize("shape", [(64, 128, 96), (256, 256, 128)], ids=["64x64-blocks", "128x128-blocks"])
@pytest.mark.parametrize("low", ["bf16", "f16"])
def test_16bit_tensor_matmul_ptx(low, shape):
    """transformer.matmul on bf16/f16 tensors for sm_90: the GEMM kernel copies A and B into shared
    memory with cp.async (16 bytes, bypassing L1; a ring of buffers: one group per buffer but one in
    flight), reads B[k, n] transposed (ldmatrix.trans) and issues mma.sync on the operands as they are
    into f32 sums, which it rounds (two at a time) as it stores C; a ptxas-checked cubin whose launch
    gives it its dynamic shared memory (74 KiB for 128 x 128 blocks)."""
    art = _compiled_precision(_low_matmul(low, *shape), "sm_90", "f32")
    _check_artifact(art, "cuda", "sm_90")
    (gemm,) = (art.blobs[k["blobs"]["ptx"]].decode() for k in art.manifest["kernels"])
    assert f"mma.sync.aligned.m16n8k16.row.col.f32.{low}.{low}.f32" in gemm
    wait, shared = ("\t1;", 2 * 3 * (64 * 40 + 32 * 72)) if shape[0] == 64 else ("\t2;", 2 * 4 * (128 * 40 + 32 * 136))
    assert "cp.async.cg.shared.global" in gemm and "cp.async.wait_group " + wait in gemm
    assert ".extern .shared .align 1024 .b8 __dynamic_shmem__0[];" in gemm
    (launch,) = art.manifest["programs"]["f"]["commands"]
    assert launch["shared_bytes"] == shared
    assert "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16" in gemm and "ld.global" not in gemm
    assert f"cvt.rn.{low}x2.f32" in gemm and "st.global.b32" in gemm


# tiles `kiln tune` times that no default takes: 8 warps (2 x 4 and 4 x 2), a ring of 5 buffers, K
# steps of 64 (in 54 KiB of shared memory), 8 warps staged through registers; small warp tiles keep the
# emulator's CPU code small (64 x 64 warps: LOW_GEMMS' large_matmul)
TUNER_TILES = [(128, 128, 16, 64, 32, 32, 5), (128, 128, 16, 32, 64, 32, 1), (64, 64, 64, 32, 32, 32, 3)]


@pytest.mark.parametrize("tile", TUNER_TILES, ids=lambda t: "x".join(map(str, t)))
def test_tuner_tiles_emulated(tile, rng, monkeypatch):
    """Tiles of `gpu_mma.tile_candidates` that only the tuner picks, forced on a 256 x 256 x 320 bf16
    matmul for sm_90 (as `kiln tune` does, `kiln.mma_tile` at the dispatch stage): the launch gives
    the kernel the shared memory the tile needs, and the emulated kernel computes the float64 product
    rounded once."""
    from kiln.pipelines import schedules
    from kiln.signature import numpy_dtype

    monkeypatch.setattr(gpu_mma, "_to_mma_sync", lambda *a: None)
    dispatch = kiln.compile(_low_matmul("bf16", 256, 256, 320), target="cuda", chip="sm_90", compile_to="dispatch")
    with ir.Context():
        module = ir.Module.parse(dispatch)
        (kernel,) = (k for k in schedules.kernels_of(module) if k.kernel_class == "contraction")
        assert gpu_mma.MmaTile(*tile) in gpu_mma.tile_candidates(kernel, "sm_90")
        func = next(op for op in module.body.operations
                    if op.operation.name == "func.func" and ir.StringAttr(op.attributes["sym_name"]).value == kernel.name)
        func.attributes[gpu_mma.MMA_ATTR] = ir.DenseI64ArrayAttr.get(list(tile))
        dispatch = str(module)
    loops = kiln.compile(dispatch, target="cuda", chip="sm_90", compile_from="dispatch", compile_to="loops")
    shared = gpu_mma.MmaTile(*tile).shared_bytes(kn=True)
    assert f"dynamic_shared_memory_size %c{shared}_i32" in loops
    a, b = _low(rng, "bf16", 256, 320), _low(rng, "bf16", 320, 256)
    c = _run_gemm_kernel(loops, TensorCoreKernel(loops, "bf16"), [a, b], (256, 256), numpy_dtype("bf16"))
    exact = a.astype(np.float64) @ b.astype(np.float64)
    assert (np.abs(c.astype(np.float64) - exact) <= 2.0 ** -8 * np.abs(exact) + 1e-5 * np.abs(exact).max()).all()


def test_shared_memory_limits_the_tiles():
    """A tile's buffers must fit the chip's shared memory per block: 227 KiB on sm_90, 99 KiB on
    sm_86, 64 KiB of LDS on gfx942 (whose tiles stage through registers: one buffer)."""
    from kiln.pipelines import schedules

    text = _low_matmul("bf16", 256, 256, 512)
    for chip, limit in (("sm_90", 227 * 1024), ("sm_86", 99 * 1024), ("gfx942", 64 * 1024)):
        assert gpu_mma.shared_memory_limit(chip) == limit
        target = "cuda" if chip.startswith("sm_") else "rocm"
        with ir.Context():
            module = ir.Module.parse(kiln.compile(text, target=target, chip=chip, compile_to="dispatch"))
            (kernel,) = (k for k in schedules.kernels_of(module) if k.kernel_class == "contraction")
        tiles = gpu_mma.tile_candidates(kernel, chip)
        sizes = [t.shared_bytes(kn=True) for t in tiles]
        assert tiles and max(sizes) <= limit
        assert any(gpu_mma.MmaTile(128, 256, 64, 64, 64, t.lanes, 4) == t for t in tiles) == (chip == "sm_90")
        assert all(t.stages == 1 for t in tiles) == (target == "rocm")


def _bf16_expanded(loops: str) -> str:
    """The emulator's CPU code has no f32 -> bf16 routine: the kernels round with integer ops (RNE)."""
    with ir.Context():
        module = ir.Module.parse(loops)
        run_passes(module, "gpu.module(arith-expand{include-bf16=true})", "test")
        return str(module)


# (M, N, K) that do not fit tensor-core tiles nor the matvec schedule: ragged extents (scalar SIMT), a
# decode step with K % 4 != 0 and M = 8 (vectorized SIMT: A and B rounded as they are read)
EDGE_SHAPES = [(13, 100, 70), (1, 256, 126), (48, 36, 40), (8, 96, 64)]


@pytest.mark.parametrize("shape", EDGE_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_edge_shapes_fall_back_to_rounded_simt(shape, rng):
    """GEMMs that do not fit the tensor-core tiling keep the SIMT schedule with their operands rounded
    to bf16 (no mma.sync), emulated against the float64 product of the rounded inputs."""
    m, n, k = shape
    text = workloads.linear(m, n, k).kiln_ir()
    art = _compiled_precision(text, "sm_80", "bf16")
    ptx = _ptx_of(art)
    assert "mma.sync" not in ptx and "cvt.rn.bf16.f32" in ptx
    loops = kiln.compile(text, target="cuda", precision="bf16", compile_to="loops")
    program = kiln.runtime.load_artifact(art, emulated_device(_bf16_expanded(loops)))
    x, w = _f32(rng, m, k), _f32(rng, n, k, scale=0.1)
    (y,) = program.f(x, w)
    expected = _rounded(x, "bf16") @ _rounded(w, "bf16").T
    np.testing.assert_allclose(y, expected, **_gemm_tolerance(expected, k))
    assert np.abs(expected - x.astype(np.float64) @ w.T.astype(np.float64)).max() > 1e-4


@needs_llc22
def test_rocm_bf16_without_matrix_cores_compiles_and_emulates(rng):
    """The rocm bf16 artifact for a chip without matrix instructions (RDNA2); its kernels emulated
    (register-tiled SIMT, A and B rounded as read) with the launch plan of a cuda chip without tensor
    cores (the emulator is a cuda device; both targets share every stage up to `loops`, where only
    matrix instructions would differ)."""
    text, make_inputs, reference = GEMMS["linear"]
    art = _compiled_precision(text, "gfx1030", "bf16", "rocm")
    _check_artifact(art, "rocm", "gfx1030")
    assert art.manifest["target"]["precision"] == "bf16"
    plan = _compiled_precision(text, "sm_75", "bf16")
    assert "mma.sync" not in _ptx_of(plan)
    program = kiln.runtime.load_artifact(plan, emulated_device(_bf16_expanded(
        kiln.compile(text, target="rocm", chip="gfx1030", precision="bf16", compile_to="loops"))))
    inputs = make_inputs(rng)
    (y,) = program.f(*inputs)
    expected = reference(*inputs, "bf16")
    np.testing.assert_allclose(y, expected, **_gemm_tolerance(expected, inputs[0].shape[-1]))


# SmolLM2-135M's linear layers for a 128-token prefill: q/o (576x576), MLP up/gate (1536x576), down
# (576x1536) and the tied LM head (49152x576)
SMOLLM2_LINEARS = [(128, 576, 576), (128, 1536, 576), (128, 576, 1536), (128, 49152, 576)]


@pytest.mark.parametrize("shape", SMOLLM2_LINEARS, ids=lambda s: "x".join(map(str, s)))
def test_smollm2_linears_use_tensor_cores(shape):
    art = _compiled_precision(workloads.linear(*shape).kiln_ir(), "sm_90", "bf16")
    _check_artifact(art, "cuda", "sm_90")
    assert "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32" in _ptx_of(art)
    (launch,) = [c for c in art.manifest["programs"]["f"]["commands"] if c["op"] == "launch"]
    m, n, _ = shape
    assert launch["grid"] == [n // 64, m // 64, 1] and launch["block"] == [128, 1, 1]


@pytest.mark.skipif(cuda_pipeline.ptxas_path() is None, reason="no ptxas (CUDA toolkit) on this machine")
def test_tensor_core_kernel_fits_in_registers(tmp_path):
    """ptxas -v: the tensor-core kernel spills nothing and has no stack frame (accumulators and the
    prefetched tiles stay in registers)."""
    art = _compiled_precision(workloads.linear(128, 1536, 576).kiln_ir(), "sm_90", "bf16")
    (kernel,) = art.manifest["kernels"]
    src = tmp_path / "k.ptx"
    src.write_bytes(art.blobs[kernel["blobs"]["ptx"]])
    out = subprocess.run([cuda_pipeline.ptxas_path(), "-arch=sm_90", "-v", str(src), "-o", str(tmp_path / "k.cubin")],
                         capture_output=True, text=True, check=True)
    info = out.stdout + out.stderr
    print(info)
    assert "0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads" in info
    assert int(re.search(r"Used (\d+) registers", info).group(1)) <= 128


def test_four_layer_block_bf16_on_sm90(tmp_path):
    """The benchmark's 4-layer block with bf16 GEMMs: its projections and MLP run on tensor cores."""
    text = workloads.llama_block().kiln_ir()
    art = kiln.compile(text, target="cuda", chip="sm_90", precision="bf16", output=str(tmp_path / "b.kiln"))
    _check_artifact(art, "cuda", "sm_90")
    mma = [k["name"] for k in art.manifest["kernels"]
           if "mma.sync.aligned.m16n8k16" in art.blobs[k["blobs"]["ptx"]].decode()]
    sizes = {fmt: sum(len(art.blobs[k["blobs"][fmt]]) for k in art.manifest["kernels"])
             for fmt in art.manifest["target"]["formats"]}
    print(f"4-layer block cuda sm_90 bf16: {len(art.manifest['kernels'])} kernels ({len(mma)} on tensor cores), "
          f"bytes {sizes}, file {os.path.getsize(tmp_path / 'b.kiln')}")
    assert len(mma) >= 3


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA driver (libcuda) on this machine")
@pytest.mark.parametrize("precision", ["bf16", "f16"])
@pytest.mark.parametrize("case", sorted(GEMMS) + ["smollm2_mlp"])
def test_cuda_low_precision_gemm_on_gpu(case, precision, rng):
    """bf16/f16 GEMMs on the GPU (tensor cores from sm_80), fresh random inputs, against the float64
    product of the inputs rounded by torch."""
    device = _gpu_device("cuda")
    if case == "smollm2_mlp":
        text = workloads.linear(128, 1536, 576).kiln_ir()
        inputs = [_f32(rng, 128, 576), _f32(rng, 1536, 576, scale=0.05)]
        reference = GEMMS["linear"][2]
    else:
        text, make_inputs, reference = GEMMS[case]
        inputs = make_inputs(rng)
    program = kiln.compile(text, target="cuda", chip=device.gpu.chip, precision=precision, device=device)
    (y,) = program.f(*inputs)
    expected = reference(*inputs, precision)
    np.testing.assert_allclose(y, expected, **_gemm_tolerance(expected, inputs[0].shape[-1]))
