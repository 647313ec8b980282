"""The .kiln artifact: a saved program loads and computes exactly what the compiled one does; every
damaged, stale or foreign file is refused with a KilnError that says what is wrong; writes are atomic.

One AOT compile serves the module: damaged variants are made from its bytes (or by rewriting its
manifest through artifact.write, which recomputes the hashes, for the checks after the hashes).
"""

import copy
import hashlib
import json
import os
import struct

import numpy as np
import pytest

import kiln
from kiln import KilnError, artifact
from kiln import reference as ref
from kiln.runtime import Device, cpu, load_artifact
from reference import MLP_AND_ARGMAX as SOURCE
from reference import check, randn


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(path, the Program kiln.compile returned, the file's bytes)."""
    path = str(tmp_path_factory.mktemp("artifact") / "mlp.kiln")
    program = kiln.compile(SOURCE, output=path)
    with open(path, "rb") as f:
        return path, program, f.read()


def inputs(rng):
    return randn(rng, (4, 32)), randn(rng, (48, 32), scale=0.3), randn(rng, (48,))


def header(data: bytes):
    """(format version, manifest length, manifest sha256, manifest bytes, offset of the blobs)."""
    magic, version, length, digest = struct.unpack_from("<8sIQ32s", data)
    assert magic == artifact.MAGIC
    start = struct.calcsize("<8sIQ32s")
    return version, length, digest, data[start : start + length], start + length


def write_bytes(tmp_path, data: bytes, name="damaged.kiln") -> str:
    path = str(tmp_path / name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def refused(path) -> str:
    with pytest.raises(KilnError) as error:
        kiln.load(path)
    return str(error.value)


def rewritten(saved, tmp_path, edit) -> str:
    """The saved artifact with its manifest edited by `edit(manifest)`, rewritten with valid hashes."""
    path, _, data = saved
    art = artifact.read(path)
    manifest = copy.deepcopy(art.manifest)
    edit(manifest)
    out = str(tmp_path / "edited.kiln")
    artifact.write(out, artifact.Artifact(manifest, art.blobs))
    return out


# ----------------------------------------------------------------------------------------------
# Round trip
# ----------------------------------------------------------------------------------------------


def test_round_trip_gives_identical_outputs(saved, rng):
    path, compiled, _ = saved
    loaded = kiln.load(path)
    assert loaded.entry_points == compiled.entry_points == ["argmax", "mlp"]
    assert loaded.manifest["entry_points"] == compiled.manifest["entry_points"]
    x, w, b = inputs(rng)
    (y_compiled,), (y_loaded,) = compiled.mlp(x, w, b), loaded.mlp(x, w, b)
    np.testing.assert_array_equal(y_loaded, y_compiled)
    check(y_loaded, ref.silu(ref.linear(x, w, b)), scale=2)
    np.testing.assert_array_equal(loaded.argmax(y_loaded)[0], compiled.argmax(y_compiled)[0])


def test_load_on_a_given_device(saved, rng):
    device = Device(num_threads=1)
    loaded = kiln.load(saved[0], device=device)
    assert loaded.device is device
    x, w, b = inputs(rng)
    np.testing.assert_array_equal(loaded.mlp(x, w, b)[0], saved[1].mlp(x, w, b)[0])


def test_manifest(saved):
    path, _, data = saved
    version, length, digest, manifest_bytes, blobs_start = header(data)
    assert version == artifact.FORMAT_VERSION
    assert hashlib.sha256(manifest_bytes).digest() == digest
    manifest = json.loads(manifest_bytes)
    assert manifest["format"] == artifact.FORMAT_VERSION
    assert manifest["kiln_version"] == kiln.__version__
    assert manifest["entry_points"]["mlp"] == {
        "args": [{"dtype": "float32", "shape": [4, 32]}, {"dtype": "float32", "shape": [48, 32]},
                 {"dtype": "float32", "shape": [48]}],
        "results": [{"dtype": "float32", "shape": [4, 48]}],
    }
    assert manifest["entry_points"]["argmax"]["results"] == [{"dtype": "int64", "shape": [4]}]
    classes = {k["name"]: k["class"] for k in manifest["kernels"]}
    assert classes["argmax_dispatch_0_reduction"] == "reduction"
    assert "contraction" in classes.values()
    target = manifest["target"]
    assert target["driver"] == "cpu" and target["triple"].startswith("x86_64")
    assert set(target["cpu_features"]) <= cpu.host_cpu_features()
    (blob,) = manifest["blobs"]
    assert blob["name"] == "executable" and blob["offset"] == 0
    assert blobs_start + blob["size"] == len(data)
    executable = data[blobs_start:]
    assert executable[:4] == b"\x7fELF"
    assert hashlib.sha256(executable).hexdigest() == blob["sha256"]


# ----------------------------------------------------------------------------------------------
# Damaged files
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", [0, 1000, -1])
def test_flipped_byte_in_executable(saved, tmp_path, where):
    data = bytearray(saved[2])
    blobs_start = header(saved[2])[4]
    i = blobs_start + where if where >= 0 else len(data) + where
    data[i] ^= 0x40
    message = refused(write_bytes(tmp_path, bytes(data)))
    assert "is corrupt: blob 'executable' fails its SHA-256 check" in message


@pytest.mark.parametrize("needle", [b'"shape": [\n', b'"sha256"', b'"entry_points"', b"float32"])
def test_flipped_byte_in_manifest(saved, tmp_path, needle):
    """A damaged manifest could describe wrong shapes (the runtime would pass too-small buffers)."""
    data = bytearray(saved[2])
    start = header(saved[2])[4] - header(saved[2])[1]
    i = data.index(needle.split(b"\n")[0], start) + 3
    data[i] ^= 0x01
    message = refused(write_bytes(tmp_path, bytes(data)))
    assert "is corrupt: its manifest fails its SHA-256 check" in message


@pytest.mark.parametrize("keep", ["empty", "magic", "header", "manifest", "blob", "last_byte"])
def test_truncated(saved, tmp_path, keep):
    data = saved[2]
    _, length, _, _, blobs_start = header(data)
    size = {"empty": 0, "magic": 5, "header": 30, "manifest": blobs_start - length // 2,
            "blob": blobs_start + 100, "last_byte": len(data) - 1}[keep]
    message = refused(write_bytes(tmp_path, data[:size]))
    if keep == "empty":
        assert message.endswith("is empty, not a Kiln artifact")
    elif keep in ("magic", "header"):
        assert f"is truncated: {size} bytes, shorter than the header" in message
    elif keep == "manifest":
        assert f"is truncated: the manifest needs {length} bytes" in message
    else:
        assert "is truncated: blob 'executable' needs" in message


def test_trailing_bytes(saved, tmp_path):
    message = refused(write_bytes(tmp_path, saved[2] + b"\0"))
    assert "is corrupt" in message and "the manifest accounts for a different size" in message


@pytest.mark.parametrize("magic", [b"\x7fELF\x02\x01\x01\x00", b"KILN\x00ARX", b"PK\x03\x04"])
def test_bad_magic(saved, tmp_path, magic):
    data = magic + saved[2][len(magic):]
    assert "is not a Kiln artifact (bad magic number)" in refused(write_bytes(tmp_path, data))


def test_not_an_artifact_at_all(tmp_path):
    assert "(bad magic number)" in refused(write_bytes(tmp_path, b"func.func @f() { return }\n"))


@pytest.mark.parametrize("version", [0, 1, 3, 2**32 - 1])
def test_wrong_format_version(saved, tmp_path, version):
    data = saved[2][:8] + struct.pack("<I", version) + saved[2][12:]
    message = refused(write_bytes(tmp_path, data))
    assert f"uses artifact format {version}; this Kiln reads format {artifact.FORMAT_VERSION}: recompile it" in message


def test_stale_kiln_version(saved, tmp_path):
    path = rewritten(saved, tmp_path, lambda m: m.update(kiln_version="0.0.1"))
    message = refused(path)
    assert f"was built with kiln_version = '0.0.1', this Kiln needs '{kiln.__version__}': recompile it" in message


def test_foreign_cpu_features(saved, tmp_path):
    """An artifact built on a host with a CPU feature this one lacks would die of SIGILL: refused."""
    path = rewritten(saved, tmp_path, lambda m: m["target"]["cpu_features"].extend(["avx10_99", "amx_fp64"]))
    message = refused(path)
    assert "needs features this host lacks: amx_fp64, avx10_99; recompile it here" in message
    assert f"was compiled for CPU {artifact.read(saved[0]).manifest['target']['cpu']!r}" in message


def test_foreign_triple(saved, tmp_path):
    path = rewritten(saved, tmp_path, lambda m: m["target"].update(triple="aarch64-unknown-linux-gnu"))
    assert "was compiled for 'aarch64-unknown-linux-gnu'; this host is x86_64" in refused(path)


def test_foreign_driver(saved, tmp_path):
    path = rewritten(saved, tmp_path, lambda m: m["target"].update(driver="vulkan"))
    assert "targets 'vulkan', which this runtime cannot run" in refused(path)


def test_manifest_without_entry_points(saved, tmp_path):
    path = rewritten(saved, tmp_path, lambda m: m.pop("entry_points"))
    assert "is corrupt: its manifest lists no entry points" in refused(path)


def test_malformed_blob_entry(saved, tmp_path):
    path, _, data = saved
    _, _, _, manifest_bytes, blobs_start = header(data)
    manifest = json.loads(manifest_bytes)
    del manifest["blobs"][0]["sha256"]
    body = json.dumps(manifest).encode()
    damaged = struct.pack("<8sIQ32s", artifact.MAGIC, artifact.FORMAT_VERSION, len(body),
                          hashlib.sha256(body).digest()) + body + data[blobs_start:]
    assert "is corrupt: a blob entry of its manifest is malformed" in refused(write_bytes(tmp_path, damaged))


def test_missing_file_and_directory(tmp_path):
    assert "cannot read artifact" in refused(str(tmp_path / "absent.kiln"))
    assert "No such file or directory" in refused(str(tmp_path / "absent.kiln"))
    assert "Is a directory" in refused(str(tmp_path))


def test_in_memory_artifact_checks(saved):
    """load_artifact (what kiln.compile uses) makes the same target checks as kiln.load."""
    art = artifact.read(saved[0])
    foreign = artifact.Artifact(copy.deepcopy(art.manifest), art.blobs)
    foreign.manifest["target"]["cpu_features"].append("avx10_99")
    with pytest.raises(KilnError, match="in memory was compiled for CPU .* lacks: avx10_99"):
        load_artifact(foreign, source="in memory")
    empty = artifact.Artifact(copy.deepcopy(art.manifest), {})
    with pytest.raises(KilnError, match="in memory is corrupt: it holds no executable"):
        load_artifact(empty, source="in memory")


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


def test_write_read_round_trip(tmp_path):
    art = artifact.Artifact({"format": artifact.FORMAT_VERSION, "note": "x"}, {"a": b"abc", "b": b"", "c": bytes(range(256))})
    path = str(tmp_path / "t.kiln")
    artifact.write(path, art)
    back = artifact.read(path, expected={"note": "x"})
    assert back.blobs == art.blobs
    assert back.manifest["note"] == "x"
    with pytest.raises(KilnError, match="was built with note = 'x', this Kiln needs 'y'"):
        artifact.read(path, expected={"note": "y"})


def test_write_is_atomic(saved, tmp_path, monkeypatch):
    """A write that fails half-way leaves the previous file intact and no temporary file behind."""
    path = str(tmp_path / "model.kiln")
    with open(path, "wb") as f:
        f.write(saved[2])
    art = artifact.read(path)

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(KilnError, match=r"cannot write artifact .*model.kiln: No space left on device"):
        artifact.write(path, artifact.Artifact(art.manifest, {"executable": b"x" * 10_000}))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["model.kiln"]
    with open(path, "rb") as f:
        assert f.read() == saved[2]
    kiln.load(path)


def test_write_replaces_and_leaves_no_temporary(saved, tmp_path):
    path = str(tmp_path / "model.kiln")
    art = artifact.read(saved[0])
    artifact.write(path, art)
    artifact.write(path, art)  # over an existing file
    assert os.listdir(tmp_path) == ["model.kiln"]
    with open(path, "rb") as f:
        assert f.read() == saved[2]


def test_written_file_mode_follows_umask(saved, tmp_path):
    umask = os.umask(0o027)
    try:
        path = str(tmp_path / "model.kiln")
        artifact.write(path, artifact.read(saved[0]))
    finally:
        os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert os.stat(saved[0]).st_mode & 0o777 == 0o666 & ~umask


def test_write_into_missing_directory(saved, tmp_path):
    with pytest.raises(KilnError, match=r"cannot write artifact .*/no/such/dir/m.kiln: No such file or directory"):
        artifact.write(str(tmp_path / "no" / "such" / "dir" / "m.kiln"), artifact.read(saved[0]))
