"""The `.kiln` artifact: one file holding a manifest and the compiled executables.

Layout (all integers little-endian):

    b"KILN\\x00ART"                      8-byte magic
    u32 format version
    u64 manifest length, then the manifest (UTF-8 JSON)
    the blobs, back to back, at the offsets the manifest gives (relative to the end of the manifest)

The manifest names the entry points and their signatures, the kernels, the target (triple, CPU, features),
the Kiln and MLIR versions and, per blob, its size and SHA-256. `read()` checks all of it and refuses a
corrupt, truncated, stale or foreign file with a KilnError that says which check failed.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field

from .errors import KilnError

MAGIC = b"KILN\x00ART"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sIQ")


@dataclass
class Artifact:
    manifest: dict
    blobs: dict = field(default_factory=dict)  # name -> bytes


def write(path: str, artifact: Artifact) -> None:
    """Writes `artifact` to `path` atomically (a reader never sees a half-written file)."""
    import os
    import tempfile

    manifest = dict(artifact.manifest)
    entries, offset = [], 0
    for name, data in artifact.blobs.items():
        entries.append(
            {"name": name, "offset": offset, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        )
        offset += len(data)
    manifest["blobs"] = entries
    manifest_bytes = json.dumps(manifest, indent=1, sort_keys=True).encode()
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".kiln-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_HEADER.pack(MAGIC, FORMAT_VERSION, len(manifest_bytes)))
            f.write(manifest_bytes)
            for data in artifact.blobs.values():
                f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read(path: str, expected: dict | None = None) -> Artifact:
    """Reads and checks `path`. `expected` maps manifest keys (e.g. kiln_version) to required values."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise KilnError(f"cannot read artifact {path}: {e.strerror}") from e
    if len(data) < _HEADER.size or data[:8] != MAGIC:
        raise KilnError(f"{path} is not a Kiln artifact (bad magic number)")
    _, version, manifest_len = _HEADER.unpack_from(data)
    if version != FORMAT_VERSION:
        raise KilnError(
            f"{path} uses artifact format {version}; this Kiln reads format {FORMAT_VERSION}: recompile it"
        )
    body = _HEADER.size + manifest_len
    if len(data) < body:
        raise KilnError(f"{path} is truncated: the manifest needs {manifest_len} bytes")
    try:
        manifest = json.loads(data[_HEADER.size : body])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise KilnError(f"{path} is corrupt: its manifest is not valid JSON ({e})") from e
    for key, want in (expected or {}).items():
        got = manifest.get(key)
        if got != want:
            raise KilnError(
                f"{path} was built with {key} = {got!r}, this Kiln needs {want!r}: recompile it"
            )
    blobs = {}
    for entry in manifest.get("blobs", []):
        start, size = body + entry["offset"], entry["size"]
        blob = data[start : start + size]
        if len(blob) != size:
            raise KilnError(f"{path} is truncated: blob '{entry['name']}' needs {size} bytes, has {len(blob)}")
        if hashlib.sha256(blob).hexdigest() != entry["sha256"]:
            raise KilnError(f"{path} is corrupt: blob '{entry['name']}' fails its SHA-256 check")
        blobs[entry["name"]] = blob
    if len(data) != body + sum(e["size"] for e in manifest.get("blobs", [])):
        raise KilnError(f"{path} is corrupt: {len(data)} bytes, the manifest accounts for a different size")
    return Artifact(manifest, blobs)
