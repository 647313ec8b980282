"""Hopper wgmma GEMMs (sm_90a, `gpu_wgmma`): which GEMMs take them and with which tiles, the kernel run
on the emulator (its matrix descriptors decoded there from the PTX ISA's layouts,
`mma_emulation.wgmma_product`) against float64 products on fresh random inputs, the PTX and cubin,
and the CUDA runtime's handling of sm_90a code."""

from __future__ import annotations

import ctypes.util
import dataclasses
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from mlir import ir

import kiln
from kiln.bench import workloads
from kiln.errors import KilnError
from kiln.pipelines import cuda as cuda_pipeline, gpu_mma, schedules
from kiln.signature import numpy_dtype

sys.path.insert(0, os.path.dirname(__file__))
from mma_emulation import TensorCoreKernel, wgmma_product  # noqa: E402
from test_gpu_compile import (_BMKN, _MKN, _MNK, _f32, _fake_cuda_device, _low, _low_gemm,  # noqa: E402
                              _low_matmul, _ptx_of, _run_gemm_kernel)

CHIP = "sm_90a"


def _kernel_and_func(text: str, chip: str = CHIP):
    """(module, the contraction Kernel, its func.func) of `text` compiled to the dispatch stage."""
    module = ir.Module.parse(kiln.compile(text, target="cuda", chip=chip, compile_to="dispatch"))
    (kernel,) = (k for k in schedules.kernels_of(module) if k.kernel_class == "contraction")
    func = next(op for op in module.body.operations
                if op.operation.name == "func.func" and ir.StringAttr(op.attributes["sym_name"]).value == kernel.name)
    return module, kernel, func


def _loops(text: str, tile=None) -> str:
    """`text`'s loops stage for sm_90a, with the tensor-core tile `tile` forced (as `kiln tune`
    does) or the default one."""
    if tile is None:
        return kiln.compile(text, target="cuda", chip=CHIP, compile_to="loops")
    with ir.Context():
        module, kernel, func = _kernel_and_func(text)
        assert gpu_mma.MmaTile(*tile) in gpu_mma.tile_candidates(kernel, CHIP)
        func.attributes[gpu_mma.MMA_ATTR] = ir.DenseI64ArrayAttr.get(list(tile))
        dispatch = str(module)
    return kiln.compile(dispatch, target="cuda", chip=CHIP, compile_from="dispatch", compile_to="loops")


def test_16bit_gemms_take_wgmma_on_sm_90a_only():
    """A bf16 matmul gets 2 warpgroups of 64 x 256 with the deepest ring that fits on sm_90a, and
    mma.sync warps on sm_90; f32 operands rounded to bf16 (precision) keep mma.sync on sm_90a (the
    copies cannot round); a K of one step cannot fill a ring, and keeps mma.sync."""
    with ir.Context():
        _, kernel, _ = _kernel_and_func(_low_matmul("bf16", 256, 512, 256))
        tile = gpu_mma.default_tile(kernel, CHIP)
        assert tile == gpu_mma.MmaTile(128, 256, 64, 64, 256, 128, 4) and tile.warpgroups
        assert tile.shared_bytes(kn=True) == 4 * (128 + 256) * 64 * 2
        assert not gpu_mma.default_tile(kernel, "sm_90").warpgroups
        candidates = gpu_mma.tile_candidates(kernel, CHIP)
        wgmma = [t for t in candidates if t.warpgroups]
        assert len(wgmma) >= 10 and all(t.shared_bytes(True) <= gpu_mma.shared_memory_limit(CHIP) for t in wgmma)
        assert not any(t.warpgroups for t in gpu_mma.tile_candidates(kernel, "sm_90"))
        assert len(candidates) - len(wgmma) == len(gpu_mma.tile_candidates(kernel, "sm_90"))

        _, f32_kernel, _ = _kernel_and_func(workloads.linear(128, 256, 256).kiln_ir())
        assert not gpu_mma.default_tile(f32_kernel, CHIP).warpgroups
        _, short_kernel, _ = _kernel_and_func(_low_matmul("bf16", 128, 256, 64))
        assert not gpu_mma.default_tile(short_kernel, CHIP).warpgroups
    forced = gpu_mma.MmaTile(128, 256, 64, 64, 256, 128, 3)
    with ir.Context():
        _, kernel, _ = _kernel_and_func(_low_matmul("bf16", 128, 256, 128))
        assert not gpu_mma.fits(forced, kernel, CHIP)  # 2 K steps: no ring of 3
        assert not gpu_mma.fits(dataclasses.replace(forced, stages=2), kernel, CHIP)  # 2 buffers: too few
        _, kernel, _ = _kernel_and_func(_low_matmul("bf16", 128, 256, 192))
        assert gpu_mma.fits(forced, kernel, CHIP) and not gpu_mma.fits(forced, kernel, "sm_90")


# name -> (IR, inputs(rng), float64 reference, C's type, forced tile or None (the default)). The
# forced tiles cover warpgroups side by side along N (each its own 64 columns of B[k, n]) and 4 of
# them along M.
CASES = {
    "matmul_bf16": (_low_matmul("bf16", 128, 256, 192), lambda r: [_low(r, "bf16", 128, 192), _low(r, "bf16", 192, 256)],
                    lambda a, b: a @ b, "bf16", None),
    "matmul_f16_2x64_columns": (_low_matmul("f16", 256, 256, 256),
                                lambda r: [_low(r, "f16", 256, 256), _low(r, "f16", 256, 256)],
                                lambda a, b: a @ b, "f16", (128, 128, 64, 64, 64, 128, 3)),
    "linear_bf16": (_low_gemm("bf16", (128, 256), (128, 256), (128, 128), _MNK),
                    lambda r: [_low(r, "bf16", 128, 256), _low(r, "bf16", 128, 256, scale=0.1)],
                    lambda x, w: x @ w.T, "f32", None),
    "linear_f16_4_warpgroups": (_low_gemm("f16", (256, 320), (128, 320), (256, 128), _MNK),
                                lambda r: [_low(r, "f16", 256, 320), _low(r, "f16", 128, 320, scale=0.1)],
                                lambda x, w: x @ w.T, "f32", (256, 128, 64, 64, 128, 128, 4)),
    "batched_matmul_bf16": (_low_gemm("bf16", (2, 128, 192), (2, 192, 128), (2, 128, 128), _BMKN),
                            lambda r: [_low(r, "bf16", 2, 128, 192), _low(r, "bf16", 2, 192, 128)],
                            lambda a, b: a @ b, "f32", None),
    "matmul_residual_bf16": (_low_gemm("bf16", (128, 192), (192, 128), (128, 128), _MKN, residual=True),
                             lambda r: [_low(r, "bf16", 128, 192), _low(r, "bf16", 192, 128), _f32(r, 128, 128)],
                             lambda a, b, res: res + a @ b, "f32", None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_wgmma_kernel_emulated(case, rng):
    """The wgmma kernel as compiled (the loops stage: nvvm.wgmma.mma_async on descriptors of the
    swizzled ring), every warpgroup's instructions computed from shared memory through the
    descriptors, against the float64 product of the inputs: f32 C within the f32 sums' error, a
    16-bit C rounded once."""
    text, make_inputs, reference, c_type, tile = CASES[case]
    loops = _loops(text, tile)
    assert "nvvm.wgmma.mma_async" in loops and "vector.contract" not in loops
    inputs = make_inputs(rng)
    exact = reference(*[x.astype(np.float64) for x in inputs])
    kernel = TensorCoreKernel(loops, str(inputs[0].dtype).replace("bfloat16", "bf16").replace("float16", "f16"))
    c = _run_gemm_kernel(loops, kernel, inputs, exact.shape, numpy_dtype(c_type)).astype(np.float64)
    k = inputs[0].shape[-1]
    assert kernel.exchanges == np.prod(kernel.grid) * k // 16, "one exchange per wgmma: K / 16 per block"
    if c_type == "f32":
        np.testing.assert_allclose(c, exact, rtol=1e-5, atol=1e-6 * k * max(1.0, np.abs(exact).max()))
    else:
        half_ulp = 2.0 ** (-8 if c_type == "bf16" else -11)
        assert (np.abs(c - exact) <= half_ulp * np.abs(exact) + 1e-5 * np.abs(exact).max()).all()


HAS_CUDA = ctypes.util.find_library("cuda") is not None


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA driver (libcuda) on this machine")
@pytest.mark.parametrize("case", sorted(CASES) + ["matmul_1024_bf16"])
def test_16bit_gemms_on_gpu(case, rng):
    """The cases above (and a 1024³ bf16 matmul) compiled for the GPU present (an H100/H200 is
    sm_90a: wgmma; others run them on mma.sync), fresh random inputs, against the float64 product,
    with the tolerances of the emulated runs."""
    try:
        device = kiln.runtime.Device("cuda")
    except KilnError as e:
        pytest.skip(f"no usable cuda device: {e}")
    if case == "matmul_1024_bf16":
        text, c_type = _low_matmul("bf16", 1024, 1024, 1024), "bf16"
        inputs, reference = [_low(rng, "bf16", 1024, 1024), _low(rng, "bf16", 1024, 1024)], (lambda a, b: a @ b)
    else:
        text, make_inputs, reference, c_type, _ = CASES[case]
        inputs = make_inputs(rng)
    program = kiln.compile(text, target="cuda", chip=device.gpu.chip, device=device)
    (c,) = program.f(*inputs)
    c = np.asarray(c).astype(np.float64)
    exact = reference(*[x.astype(np.float64) for x in inputs])
    k = inputs[0].shape[-1]
    if c_type == "f32":
        np.testing.assert_allclose(c, exact, rtol=1e-5, atol=1e-6 * k * max(1.0, np.abs(exact).max()))
    else:
        half_ulp = 2.0 ** (-8 if c_type == "bf16" else -11)
        assert (np.abs(c - exact) <= half_ulp * np.abs(exact) + 1e-5 * np.abs(exact).max()).all()


def test_emulator_decodes_swizzled_descriptors(rng):
    """`wgmma_product` on a hand-placed 128-byte-swizzled A (K-major) and B (N-major) in shared
    memory: the emulator's decoding, which the kernel tests rely on, against a plain product. Each
    16-byte chunk c of row r of an 8-row group is stored at chunk c xor (r mod 8)."""
    a, b = _low(rng, "bf16", 64, 16), _low(rng, "bf16", 16, 128)
    shared = np.zeros(8 * 1024 + 2 * 8192, np.uint8)

    def place(base, row, chunk, values):  # 8 elements (16 bytes) at a swizzled chunk of a row
        at = base + row * 128 + (chunk ^ (row % 8)) * 16
        shared[at:at + 16] = np.frombuffer(values.tobytes(), np.uint8)

    for r in range(64):  # A: 64 rows of 64 K elements (128 bytes); its K 0..15 are chunks 0, 1
        for c in range(2):
            place(0, r, c, a[r, 8 * c:8 * c + 8])
    b_base = 8 * 1024  # B[k, n]: per 64 columns a block of 64 rows of K (8 KiB)
    for kk in range(16):
        for cc in range(16):
            place(b_base + (cc // 8) * 8192, kk, cc % 8, b[kk, 8 * cc:8 * cc + 8])
    swizzle, sbo = 1 << 62, (1024 >> 4) << 32
    descriptors = np.array([[swizzle | sbo | (1 << 16), swizzle | sbo | (8192 >> 4) << 16 | (b_base >> 4)]] * 128)
    c = rng.standard_normal((128, 64)).astype(np.float32)
    d = wgmma_product(shared, descriptors, c, 128, "bf16", b_k_major=False)
    lane, i = np.meshgrid(np.arange(128), np.arange(64), indexing="ij")
    row = 16 * (lane // 32) + (lane % 32) // 4 + 8 * ((i // 2) % 2)
    col = 8 * (i // 4) + 2 * (lane % 4) + i % 2
    expected = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_allclose(d, expected[row, col] + c, rtol=1e-12, atol=1e-12)
    assert len({(r, c) for r, c in zip(row.ravel(), col.ravel())}) == 64 * 128  # every element once


def test_wgmma_ptx():
    """The bf16 4096³ GEMM of `kiln bench` for sm_90a: one kernel of 2 warpgroups (256 threads),
    192 KiB of dynamic shared memory (1024-byte aligned, for the swizzle), m64n256k16 wgmma on
    descriptors, the copies made visible to the async proxy before the barrier, a cubin when ptxas
    exists."""
    art = kiln.compile(workloads.gemm(4096, 4096, 4096, "bf16").kiln_ir(), target="cuda", chip=CHIP)
    ptx = _ptx_of(art)
    assert ".target sm_90a" in ptx and ".extern .shared .align 1024 .b8 __dynamic_shmem__0[];" in ptx
    assert len(re.findall(r"wgmma\.mma_async\.sync\.aligned\.m64n256k16\.f32\.bf16\.bf16", ptx)) >= 4
    assert "mma.sync" not in ptx and "ldmatrix" not in ptx
    for op in ("cp.async.cg.shared.global", "fence.proxy.async.shared::cta", "wgmma.fence.sync.aligned",
               "wgmma.commit_group.sync.aligned", "wgmma.wait_group.sync.aligned"):
        assert op in ptx, op
    assert ptx.index("fence.proxy.async.shared::cta") < ptx.index("bar.sync") < ptx.index("wgmma.mma_async")
    (command,) = art.manifest["programs"]["f"]["commands"]
    assert command["block"] == [256, 1, 1] and command["grid"] == [4096 // 256, 4096 // 128, 1]
    assert command["shared_bytes"] == 4 * (128 + 256) * 64 * 2
    assert ("cubin" in art.manifest["target"]["formats"]) == (cuda_pipeline.ptxas_path() is not None)


@pytest.mark.skipif(cuda_pipeline.ptxas_path() is None, reason="no ptxas (CUDA toolkit) on this machine")
def test_wgmma_kernels_fit_in_registers(tmp_path):
    """ptxas -v on every wgmma tile `kiln tune` may time for the 4096³ bf16 GEMM: no spills, no
    stack frame, and no wgmma serialized (ptxas says so when the accumulators are touched between
    the instructions)."""
    with ir.Context():
        module, kernel, func = _kernel_and_func(workloads.gemm(4096, 4096, 4096, "bf16").kiln_ir())
        tiles = [t for t in gpu_mma.tile_candidates(kernel, CHIP) if t.warpgroups and t.stages == 4]
        texts = []
        for tile in tiles:
            func.attributes[gpu_mma.MMA_ATTR] = ir.DenseI64ArrayAttr.get(tile.attribute())
            texts.append(str(module))
    for tile, dispatch in zip(tiles, texts):
        art = kiln.compile(dispatch, target="cuda", chip=CHIP, compile_from="dispatch")
        src = tmp_path / "k.ptx"
        src.write_text(_ptx_of(art))
        out = subprocess.run([cuda_pipeline.ptxas_path(), f"-arch={CHIP}", "-v", str(src), "-o", str(tmp_path / "k.cubin")],
                             capture_output=True, text=True, check=True)
        info = out.stdout + out.stderr
        print(tile.attribute(), re.search(r"Used \d+ registers", info).group(0))
        assert "0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads" in info, (tile, info)
        assert "serialized" not in info, (tile, info)


def test_cuda_runtime_runs_sm_90a_code_on_hopper_only(rng):
    """The CUDA driver calls a compute capability 9.0 GPU sm_90a (it runs the arch-specific code,
    wgmma): an sm_90a artifact loads there, opting its kernel into 144 KiB of shared memory and
    launching 256 threads with them; an sm_90 artifact runs there too; on sm_100 the sm_90a one is
    refused, naming the chip to compile for."""
    art = kiln.compile(_low_matmul("bf16", 128, 256, 192), target="cuda", chip=CHIP)
    shared = 3 * (128 + 256) * 64 * 2
    device = _fake_cuda_device(CHIP)
    program = kiln.runtime.load_artifact(art, device)
    calls = device.gpu.lib.calls
    assert [(a[1].value, a[2].value) for n, a in calls if n == "cuFuncSetAttribute"] == [(8, shared)]
    program.f(_low(rng, "bf16", 128, 192), _low(rng, "bf16", 192, 256))
    (launch,) = [args for name, args in calls if name == "cuLaunchKernel"]
    assert [v.value for v in launch[1:8]] == [1, 1, 1, 256, 1, 1, shared]
    kiln.runtime.load_artifact(kiln.compile(_low_matmul("bf16", 128, 256, 128), target="cuda", chip="sm_90"), device)
    with pytest.raises(KilnError, match=r"compiled for sm_90a.*recompile with --chip sm_100"):
        kiln.runtime.load_artifact(art, _fake_cuda_device("sm_100"))
