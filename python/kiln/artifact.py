"""The `.kiln` artifact: one file holding a manifest and the compiled executables.

Layout (all integers little-endian):

    b"KILN\\x00ART"                      8-byte magic
    u32 format version
    u64 manifest length, 32-byte SHA-256 of the manifest, then the manifest (UTF-8 JSON)
    the blobs, back to back, at the offsets the manifest gives (relative to the end of the manifest)

The manifest names the entry points and their signatures, the kernels, the target (triple, CPU, features),
the Kiln and MLIR versions and, per blob, its size and SHA-256. The header holds the manifest's own SHA-256
(a flipped byte in a signature would otherwise make the runtime pass buffers of the wrong size). `read()`
checks all of it and refuses a corrupt, truncated, stale or foreign file with a KilnError that says which
check failed.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import struct
from dataclasses import dataclass, field

from .errors import KilnError

MAGIC = b"KILN\x00ART"
FORMAT_VERSION = 2
_PREFIX = struct.Struct("<8sI")  # magic, format version: the part every format version shares
_HEADER = struct.Struct("<8sIQ32s")


@dataclass
class Artifact:
    manifest: dict
    blobs: dict = field(default_factory=dict)  # name -> bytes


def write(path: str, artifact: Artifact) -> None:
    """Writes `artifact` to `path` atomically (a reader never sees a half-written file)."""
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
    # Like mkstemp, but with the mode a plain open() gives (mkstemp's is 0600, whatever the umask).
    tmp = os.path.join(directory, f".kiln-{secrets.token_hex(8)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            digest = hashlib.sha256(manifest_bytes).digest()
            f.write(_HEADER.pack(MAGIC, FORMAT_VERSION, len(manifest_bytes), digest))
            f.write(manifest_bytes)
            for data in artifact.blobs.values():
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise KilnError(f"cannot write artifact {path}: {e.strerror or e}") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read(path: str, expected: dict | None = None) -> Artifact:
    """Reads and checks `path`. `expected` maps manifest keys (e.g. kiln_version) to required values."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise KilnError(f"cannot read artifact {path}: {e.strerror}") from e
    if not data:
        raise KilnError(f"{path} is empty, not a Kiln artifact")
    if data[:8] != MAGIC[: len(data)]:
        raise KilnError(f"{path} is not a Kiln artifact (bad magic number)")
    if len(data) < _PREFIX.size:
        raise KilnError(f"{path} is truncated: {len(data)} bytes, shorter than the header")
    _, version = _PREFIX.unpack_from(data)
    if version != FORMAT_VERSION:
        raise KilnError(
            f"{path} uses artifact format {version}; this Kiln reads format {FORMAT_VERSION}: recompile it"
        )
    if len(data) < _HEADER.size:
        raise KilnError(f"{path} is truncated: {len(data)} bytes, shorter than the header")
    _, _, manifest_len, manifest_sha256 = _HEADER.unpack_from(data)
    body = _HEADER.size + manifest_len
    if len(data) < body:
        raise KilnError(f"{path} is truncated: the manifest needs {manifest_len} bytes")
    if hashlib.sha256(data[_HEADER.size : body]).digest() != manifest_sha256:
        raise KilnError(f"{path} is corrupt: its manifest fails its SHA-256 check")
    try:
        manifest = json.loads(data[_HEADER.size : body])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise KilnError(f"{path} is corrupt: its manifest is not valid JSON ({e})") from e
    if not isinstance(manifest, dict) or not isinstance(manifest.get("blobs", []), list):
        raise KilnError(f"{path} is corrupt: its manifest is not a Kiln manifest")
    for key, want in (expected or {}).items():
        got = manifest.get(key)
        if got != want:
            raise KilnError(
                f"{path} was built with {key} = {got!r}, this Kiln needs {want!r}: recompile it"
            )
    blobs = {}
    for entry in manifest.get("blobs", []):
        if not isinstance(entry, dict) or not {"name", "offset", "size", "sha256"} <= entry.keys():
            raise KilnError(f"{path} is corrupt: a blob entry of its manifest is malformed: {entry!r}")
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
