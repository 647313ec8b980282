"""The child side of the PyTorch frontend: exported program in, linalg-on-tensors IR out.

Run as `python _child.py JOB.json` (never imported by Kiln: torch-mlir embeds its own MLIR, and
two MLIR copies in one process abort). It

1. loads the ExportedProgram the parent saved (raised patterns are `kiln::raised<N>` nodes),
2. decomposes it with torch-mlir's table and imports it with the FX importer as a *stateless*
   function: every placeholder -- parameters, buffers (persistent or not), lifted constants, user
   inputs -- becomes a function argument, so weights stay named inputs rather than inlined
   constants, and non-persistent buffers need no state mapping,
3. turns each `torch.operator "torch.kiln.raised<N>"` into a call of a private function
   `@__kiln_raised_<id>` (the parent rewrites those calls into `transformer` ops),
4. lowers to linalg on tensors (torch-mlir's pipeline minus its backend-contract check, which
   rejects the calls; leftovers are checked here instead, naming the FX node),
5. writes the IR in MLIR's generic form (stable across the two MLIR versions) and a result JSON.

Every value's location is `loc("<fx node name>"("<user file>":<line>:0))`, so a failure anywhere
names the FX node and the user's source line. Exit status 0: IR written; 3: a diagnosed error (in
the result JSON); anything else is a crash that the parent reports with a reproducer.
"""

from __future__ import annotations

import json
import os
import re
import sys
import traceback

DIAGNOSED = 3
_LEFTOVER_DIALECTS = ("torch", "torch_c", "tm_tensor", "ml_program", "quant", "sparse_tensor")


def frames(stack_trace: str):
    """[(file, line, code)] of a node's stack trace, outermost first."""
    out = []
    lines = (stack_trace or "").splitlines()
    for i, line in enumerate(lines):
        m = re.match(r'\s*File "([^"]+)", line ([0-9]+)', line)
        if m:
            code = lines[i + 1].strip() if i + 1 < len(lines) and not lines[i + 1].lstrip().startswith("File ") else ""
            out.append((m.group(1), int(m.group(2)), code))
    return out


def user_frame(stack_trace: str):
    """(file, line, code) of the innermost frame outside torch itself (the user's line that called
    e.g. nn.LayerNorm), else the innermost frame, else None."""
    trace = frames(stack_trace)
    torch_mod = sys.modules.get("torch")
    torch_dir = os.path.dirname(os.path.abspath(torch_mod.__file__)) + os.sep if torch_mod else None
    outside = [f for f in trace if not (torch_dir and os.path.abspath(f[0]).startswith(torch_dir))]
    return (outside or trace or [None])[-1]


def _node_info(gm, name: str) -> dict:
    """What the parent needs to name an FX node in an error message."""
    node = next((n for n in gm.graph.nodes if n.name == name), None)
    if node is None:
        return {"node": name}
    frame = user_frame(node.meta.get("stack_trace"))
    origin = None
    sources = node.meta.get("from_node") or []
    if sources:
        src = sources[0]
        while getattr(src, "from_node", None):
            src = src.from_node[0]
        origin = getattr(src, "name", None)
    target = node.target
    target = getattr(target, "__name__", None) and str(target) or str(target)
    return {
        "node": name,
        "target": target,
        "origin": origin if origin and origin != name else None,
        "file": frame[0] if frame else None,
        "line": frame[1] if frame else None,
        "code": frame[2] if frame else None,
    }


def _node_of_location(text: str):
    """The FX node name of the first name location (`"name"("file":line:col)`) in `text`."""
    m = re.search(r'"([^"]+)"\("', text)
    return m.group(1) if m else None


def _failed_op(text: str):
    """The torch-dialect op a failed pass names (the real name of a `torch.operator`)."""
    m = re.search(r'name = "(torch\.[^"]+)"', text) or \
        re.search(r"'((?:torch|torch_c|tm_tensor)\.[A-Za-z0-9_.]+)'", text)
    return m.group(1) if m else None


def _first_error(text: str) -> str:
    for line in text.splitlines():
        if "error:" in line:
            line = re.sub(r'^.*?error: (?:"[^"]+"\([^)]*\): )?', "", line)
            return re.sub(r": %[\w#]+ = .*$", "", line).strip()
    return text.strip().splitlines()[0] if text.strip() else "unknown failure"


class Diagnosed(Exception):
    def __init__(self, info: dict):
        super().__init__(info.get("message", ""))
        self.info = info


def run(job: dict) -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    import torch

    import _ops

    for ident, out in job["raised"].items():
        _ops.set_output(int(ident), out["shape"], getattr(torch, out["dtype"]))
    ep = torch.export.load(job["program"])

    from torch_mlir import ir
    from torch_mlir.dialects import func as func_d
    from torch_mlir.dialects import torch as torch_d
    from torch_mlir.extras import fx_importer
    from torch_mlir.extras.fx_decomp_util import get_decomposition_table
    from torch_mlir.passmanager import PassManager

    ep = ep.run_decompositions(get_decomposition_table())
    gm = ep.graph_module
    mutated = {**ep.graph_signature.buffers_to_mutate, **ep.graph_signature.user_inputs_to_mutate}
    if mutated:
        name, target = next(iter(mutated.items()))
        info = _node_info(gm, name)
        info.update(kind="mutation", message=f"forward mutates '{target}' in place; Kiln compiles pure "
                                             "functions: return the new value instead")
        raise Diagnosed(info)

    def node_location(self, node):
        frame = user_frame(node.meta.get("stack_trace"))
        inner = ir.Location.file(frame[0], frame[1], 0, context=self._c) if frame \
            else ir.Location.unknown(context=self._c)
        return ir.Location.name(node.name, childLoc=inner, context=self._c)

    fx_importer.ContextCache.get_node_location = node_location

    args = []
    specs = {s.arg.name: s for s in ep.graph_signature.input_specs if hasattr(s.arg, "name")}
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            spec = specs[node.name]
            args.append({"name": node.name, "kind": spec.kind.name, "target": spec.target})

    ctx = ir.Context()
    torch_d.register_dialect(ctx)
    importer = fx_importer.FxImporter(context=ctx)
    current = {}
    original_import_node = fx_importer.GraphNodeImporter.import_nodes

    def import_nodes(self, nodes, **kw):  # remember the node being imported, for error messages
        def tracked():
            for n in nodes:
                current["node"] = n.name
                yield n
        return original_import_node(self, tracked(), **kw)

    fx_importer.GraphNodeImporter.import_nodes = import_nodes
    try:
        importer.import_stateless_graph(gm.graph, func_name=job["func_name"])
    except Exception as e:  # the importer's own errors (unsupported dtype, value kind, ...)
        info = _node_info(gm, current.get("node", ""))
        info.update(kind="import", message=f"torch-mlir's FX importer failed: {type(e).__name__}: {e}")
        raise Diagnosed(info) from e
    module = importer.module

    with ctx, ir.Location.unknown():
        _calls_for_raised(module, ir, func_d)

    def run_pipeline(pipeline: str, what: str):
        pm = PassManager.parse(pipeline, context=ctx)
        try:
            pm.run(module.operation)
        except Exception as e:
            text = str(e)
            name = _node_of_location(text)
            info = _node_info(gm, name) if name else {}
            mop = _failed_op(text)
            head = f"torch-mlir cannot lower '{mop}'" if mop else "torch-mlir failed"
            info.update(kind="lowering", mlir_op=mop, diagnostics=text,
                        message=f"{head} ({what}: {_first_error(text)})")
            raise Diagnosed(info) from e

    run_pipeline("builtin.module(func.func(torch-match-quantized-custom-ops),"
                 "torchdynamo-export-to-torch-backend-pipeline)", "torch-mlir's torch-backend pipeline")
    linalg = str(PassManager.parse("builtin.module(torch-backend-to-linalg-on-tensors-backend-pipeline)",
                                   context=ctx))
    linalg = linalg.replace(",torch-verify-linalg-on-tensors-backend-contract", "")
    run_pipeline(linalg, "torch-mlir's linalg lowering")

    leftover = _first_leftover(module.operation)
    if leftover is not None:
        name = _node_of_location(str(leftover.location))
        info = _node_info(gm, name) if name else {}
        info.update(kind="unsupported", mlir_op=leftover.name,
                    message=f"torch-mlir lowers it to '{leftover.name}', which is not linalg on tensors "
                            "(no lowering to upstream MLIR that Kiln could compile)")
        raise Diagnosed(info)

    text = module.operation.get_asm(print_generic_op_form=True, enable_debug_info=True)
    with open(job["output"], "w") as f:
        f.write(text)
    outputs = [s.kind.name for s in ep.graph_signature.output_specs]
    with open(job["result"], "w") as f:
        json.dump({"ok": True, "args": args, "outputs": outputs}, f)


def _calls_for_raised(module, ir, func_d) -> None:
    """torch.operator "torch.kiln.raised<N>"(tensors..., %id) -> func.call @__kiln_raised_<id>(tensors...)."""
    def walk(op):
        for region in op.regions:
            for block in region.blocks:
                for child in list(block.operations):
                    yield child.operation
                    yield from walk(child.operation)

    declared = set()
    for op in list(walk(module.operation)):
        if op.name != "torch.operator":
            continue
        name = ir.StringAttr(op.attributes["name"]).value
        if not name.startswith("torch.kiln.raised"):
            continue
        *tensors, ident_value = list(op.operands)
        ident_op = ident_value.owner
        ident = ir.IntegerAttr(ident_op.attributes["value"]).value
        callee = f"__kiln_raised_{ident}"
        result_types = [r.type for r in op.results]
        if callee not in declared:
            ftype = ir.FunctionType.get([t.type for t in tensors], result_types)
            with ir.InsertionPoint(module.body), op.location:
                func_d.FuncOp(callee, ftype, visibility="private")
            declared.add(callee)
        with ir.InsertionPoint(op), op.location:
            call = func_d.CallOp(result_types, ir.FlatSymbolRefAttr.get(callee), tensors)
        for old, new in zip(op.results, call.results):
            old.replace_all_uses_with(new)
        op.erase()


def _first_leftover(root):
    for region in root.regions:
        for block in region.blocks:
            for op in block.operations:
                op = op.operation
                if op.name.split(".", 1)[0] in _LEFTOVER_DIALECTS:
                    return op
                found = _first_leftover(op)
                if found is not None:
                    return found
    return None


def main(argv) -> int:
    with open(argv[1]) as f:
        job = json.load(f)
    try:
        run(job)
    except Diagnosed as d:
        with open(job["result"], "w") as f:
            json.dump({"ok": False, "error": d.info}, f)
        return DIAGNOSED
    except Exception as e:  # noqa: BLE001 - anything else is reported as a crash with a reproducer
        traceback.print_exc()
        with open(job["result"], "w") as f:
            json.dump({"ok": False, "error": {"kind": "crash", "message": f"{type(e).__name__}: {e}"}}, f)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
