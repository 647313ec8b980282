"""Prints parts of a GPU .kiln artifact for FileCheck: `kiln_blobs.py FILE (ptx|cubin|hsaco|isa|plan)`.

ptx: every kernel's PTX text. cubin/hsaco: one line per kernel with the ELF header fields that say
what the binary is for (e_machine, e_flags, and for AMDGPU the chip those flags encode). isa: every
hsaco's instructions (llvm-objdump-22) and its wavefront size and scratch bytes (llvm-readobj-22).
plan: the manifest's target and each entry point's launch plan, one command per line.
"""

import json
import os
import re
import struct
import subprocess
import sys
import tempfile

from kiln import artifact
from kiln.pipelines.rocm import llvm22_tool

# EF_AMDGPU_MACH_AMDGCN_* (llvm/BinaryFormat/ELF.h) of the chips Kiln's tests use
AMDGPU_MACH = {0x3F: "gfx90a", 0x4C: "gfx942", 0x41: "gfx1100", 0x4E: "gfx1201", 0x36: "gfx1030"}
ELF_MAGIC = b"\x7fELF"

art = artifact.read(sys.argv[1])
what = sys.argv[2]
kernels = art.manifest["kernels"]
if what == "plan":
    print("target", json.dumps(art.manifest["target"], sort_keys=True))
    for entry, plan in sorted(art.manifest["programs"].items()):
        print("entry", entry, "allocations", plan["allocations"])
        for c in plan["commands"]:
            if c["op"] == "launch":
                args = " ".join(f"{a['buffer']}{a.get('index', a.get('name', ''))}+{a['offset']}" if "buffer" in a
                                else f"{a['scalar']}:{a.get('index', a.get('value'))}" for a in c["args"])
                bounds = "".join(f" bound arg{i}<={hi}" for i, hi in c.get("bounds", ()))
                shared = f" shared {c['shared_bytes']}" if "shared_bytes" in c else ""
                print("launch", c["kernel"], "grid", c["grid"], "block", c["block"], "args", args + bounds + shared)
            else:
                def where(r):
                    dyn = "".join(f"+arg{i}*{m}" for i, m in r.get("scalars", []))
                    return f"{r['buffer']}{r.get('index', r.get('name', ''))}+{r['offset']}{dyn}"
                print("copy", c["bytes"], "bytes", where(c["src"]), "->", where(c["dst"]))
    sys.exit(0)


def isa(kernel: str, hsaco: bytes) -> None:
    chip = art.manifest["target"]["chip"]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.hsaco")
        with open(path, "wb") as f:
            f.write(hsaco)
        code = subprocess.run([llvm22_tool("llvm-objdump"), "-d", f"--mcpu={chip}", path],
                              capture_output=True, text=True, check=True).stdout
        notes = subprocess.run([llvm22_tool("llvm-readobj"), "--notes", path],
                               capture_output=True, text=True, check=True).stdout
    print("kernel", kernel)
    for key in ("wavefront_size", "private_segment_fixed_size"):
        print(key, re.search(rf"\.{key}:\s*(\d+)", notes).group(1))
    for line in code.splitlines():
        if line.startswith("\t"):
            print(line.split("//")[0].strip())


for k in sorted(kernels, key=lambda k: k["name"]):
    blob_kind = "hsaco" if what == "isa" else what
    if blob_kind not in k["blobs"]:
        print("missing", blob_kind, "for", k["name"])
        continue
    blob = art.blobs[k["blobs"][blob_kind]]
    if what == "isa":
        isa(k["name"], blob)
        continue
    if what == "ptx":
        print(blob.decode())
        continue
    machine, flags = struct.unpack_from("<H", blob, 18)[0], struct.unpack_from("<I", blob, 48)[0]
    chip = AMDGPU_MACH.get(flags & 0xFF, "?") if machine == 224 else "-"
    is_elf = blob[:4] == ELF_MAGIC
    print(f"{k['name']} class={k['class']} elf={is_elf} e_machine={machine} chip={chip}")
