"""Prints parts of a GPU .kiln artifact for FileCheck: `kiln_blobs.py FILE (ptx|cubin|hsaco|plan)`.

ptx: every kernel's PTX text. cubin/hsaco: one line per kernel with the ELF header fields that say
what the binary is for (e_machine, e_flags, and for AMDGPU the chip those flags encode). plan: the
manifest's target and each entry point's launch plan, one command per line.
"""

import json
import struct
import sys

from kiln import artifact

# EF_AMDGPU_MACH_AMDGCN_* (llvm/BinaryFormat/ELF.h) of the chips Kiln's tests use
AMDGPU_MACH = {0x3F: "gfx90a", 0x4C: "gfx942", 0x41: "gfx1100"}
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
                print("launch", c["kernel"], "grid", c["grid"], "block", c["block"], "args", args + bounds)
            else:
                def where(r):
                    dyn = "".join(f"+arg{i}*{m}" for i, m in r.get("scalars", []))
                    return f"{r['buffer']}{r.get('index', r.get('name', ''))}+{r['offset']}{dyn}"
                print("copy", c["bytes"], "bytes", where(c["src"]), "->", where(c["dst"]))
    sys.exit(0)
for k in sorted(kernels, key=lambda k: k["name"]):
    if what not in k["blobs"]:
        print("missing", what, "for", k["name"])
        continue
    blob = art.blobs[k["blobs"][what]]
    if what == "ptx":
        print(blob.decode())
        continue
    machine, flags = struct.unpack_from("<H", blob, 18)[0], struct.unpack_from("<I", blob, 48)[0]
    chip = AMDGPU_MACH.get(flags & 0xFF, "?") if machine == 224 else "-"
    is_elf = blob[:4] == ELF_MAGIC
    print(f"{k['name']} class={k['class']} elf={is_elf} e_machine={machine} chip={chip}")
