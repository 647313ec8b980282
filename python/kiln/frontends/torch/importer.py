"""`compile_module`: a `torch.nn.Module` and example inputs in, a callable compiled module out.

The parent side of the frontend. In this process: `torch.export` (so export errors carry the
user's traceback), FX-level raising (`raising.py`), and a check for what Kiln cannot compile
(buffer mutation, non-tensor inputs or outputs). The exported program then goes to a child
process (`_child.py`: torch-mlir, which embeds its own MLIR, never runs in a process that loaded
Kiln's) that returns linalg-on-tensors IR in generic form. Back here the raised patterns become
`transformer` ops (`materialize.py`) and `kiln.compile` does the rest.

    compiled = compile_module(module, (x,), target="cpu")
    y = compiled(x)                      # numpy (or torch tensors) in, numpy out
    print(compiled.ir("transformer"))    # any stage's IR
    imported = import_module(module, (x,))   # the frontend alone: Kiln input IR, not compiled
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
from typing import Optional, Sequence

import numpy as np

from ...errors import KilnError

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_child.py")
DEFAULT_TIMEOUT_S = 300.0


def compile_module(module, example_args: Sequence, target: str = "cpu", *, raise_patterns: bool = True,
                   timeout: float = DEFAULT_TIMEOUT_S, keep_temps: Optional[str] = None, device=None,
                   dump_phases_to: Optional[str] = None) -> "CompiledModule":
    """Compiles `module.forward` for inputs shaped like `example_args` (static shapes).

    raise_patterns=False compiles everything through torch-mlir's linalg (no transformer ops).
    `timeout` bounds the child process (seconds). `keep_temps` keeps the exported program and the
    child's IR in that directory. Errors are KilnErrors naming the FX node and the user's line.
    """
    imported = import_module(module, example_args, raise_patterns=raise_patterns, timeout=timeout,
                             keep_temps=keep_temps)
    return CompiledModule(imported, target, device, dump_phases_to)


def import_module(module, example_args: Sequence, *, raise_patterns: bool = True,
                  timeout: float = DEFAULT_TIMEOUT_S, keep_temps: Optional[str] = None) -> "ImportedModule":
    """The frontend alone: `module` as Kiln input IR (transformer ops + linalg), not compiled."""
    import importlib.util

    import torch

    if not isinstance(module, torch.nn.Module):
        raise KilnError(f"compile_module expects a torch.nn.Module, got {type(module).__name__}")
    if importlib.util.find_spec("torch_mlir") is None:  # looked up, never imported in this process
        raise KilnError("the PyTorch frontend needs torch-mlir in this Python environment: "
                        "pip install --no-deps torch-mlir==20261001")
    if not isinstance(example_args, (tuple, list)):
        example_args = (example_args,)
    example = tuple(_as_tensor(a, f"example argument {i}") for i, a in enumerate(example_args))
    was_training = module.training
    module.eval()
    try:
        exported = _export(module, example)
    finally:
        module.train(was_training)
    _check_signature(exported, module)
    _check_static(exported, module)

    from . import raising

    raised = raising.raise_graph(exported.graph_module) if raise_patterns else {}
    _rename_outputs(exported)
    state = {**dict(exported.state_dict), **dict(exported.constants)}
    text, result = _run_child(exported, raised, timeout, keep_temps, module)
    return ImportedModule(text, result, raised, state, exported.call_spec.out_spec, type(module).__name__)


class ImportedModule:
    """The frontend's output: `source` (IR text: one entry point whose arguments are the module's
    parameters, buffers and constants, tagged `kiln.name`, then the user inputs), what was raised,
    and the tensors to bind to the arguments."""

    def __init__(self, linalg_text, result, raised, state, out_spec, name):
        from mlir import ir

        from . import booleans, materialize

        self.name = name
        self.raised = list(raised.values())
        self.arguments = result["args"]  # [{name, kind, target}] in entry-point order
        self.state = state
        self.out_spec = out_spec
        with ir.Context():
            try:
                module = ir.Module.parse(linalg_text)
            except ir.MLIRError as e:
                raise KilnError(f"Kiln's MLIR could not parse the IR torch-mlir produced for {name} "
                                f"(version skew between the two MLIRs?){_unparsed_op(linalg_text, str(e))}: "
                                f"{e}") from e
            materialize.raise_calls(module, raised)
            func = next(op for op in module.body.operations if op.operation.name == "func.func")
            widened, self.bool_args, self.bool_results = booleans.widen(func)
            if widened:
                _verify(module, name)
            materialize.name_arguments(func, [a["target"] or a["name"] for a in self.arguments])
            self.entry = ir.StringAttr(func.attributes["sym_name"]).value
            self.source = str(module)

    def ir(self, stage: str = "transformer", target: str = "cpu") -> str:
        """The IR of `stage` ('transformer': raised ops + linalg after graph cleanup, 'linalg', ...)."""
        import kiln

        return kiln.compile(self.source, target=target, compile_to=stage)


class CompiledModule:
    """A compiled `nn.Module`: `__call__(*inputs)` runs the Kiln Program with the module's
    parameters and buffers bound by name (uploaded once); `ir(stage)` prints a stage's IR."""

    def __init__(self, imported: ImportedModule, target: str = "cpu", device=None, dump_phases_to=None):
        import kiln

        self.imported = imported
        self.name, self.raised, self.source = imported.name, imported.raised, imported.source
        self.target = target
        self.program = kiln.compile(imported.source, target=target, device=device, dump_phases_to=dump_phases_to)
        self._entry = self.program.entry_point(imported.entry)
        self.inputs = []
        self._bound = []  # (argument position, Buffer) of parameters, buffers and constants
        for i, arg in enumerate(imported.arguments):
            if arg["kind"] == "USER_INPUT":
                self.inputs.append((i, arg["name"]))
                continue
            tensor = imported.state.get(arg["target"])
            if tensor is None:
                raise KilnError(f"{self.name}: no value for {arg['kind'].lower()} '{arg['target']}'")
            array = tensor.detach().cpu().contiguous().numpy()
            self._bound.append((i, self.program.device.upload(array)))

    def ir(self, stage: str = "transformer") -> str:
        """The IR of `stage` ('transformer': raised ops + linalg after graph cleanup, 'linalg', ...)."""
        return self.imported.ir(stage, self.target)

    def __call__(self, *inputs):
        if len(inputs) != len(self.inputs):
            raise KilnError(f"{self.name} takes {len(self.inputs)} input(s) "
                            f"({', '.join(n for _, n in self.inputs)}), got {len(inputs)}")
        args = [None] * len(self.imported.arguments)
        for position, buffer in self._bound:
            args[position] = buffer
        for (position, name), value in zip(self.inputs, inputs):
            array = _as_array(value)
            if position in self.imported.bool_args and array.dtype == np.bool_:
                array = np.ascontiguousarray(array).view(np.int8)
            args[position] = array
        results = list(self._entry(*args))
        for j in self.imported.bool_results:
            results[j] = results[j].view(np.bool_)
        from torch.utils import _pytree

        return _pytree.tree_unflatten(results, self.imported.out_spec)


def _unparsed_op(text: str, error: str) -> str:
    """' at line N, op NAME' for the line a parse error points at (MLIR names only the position)."""
    import re

    m = re.search(r'"-":(\d+):(\d+)', error)
    if not m:
        return ""
    lines = text.splitlines()
    line = lines[int(m.group(1)) - 1] if int(m.group(1)) <= len(lines) else ""
    op = re.search(r'"([A-Za-z_][\w$]*\.[\w.$]+)"\(', line)
    return f" at line {m.group(1)}, op '{op.group(1)}'" if op else f" at line {m.group(1)}: {line.strip()[:200]}"


def _verify(module, name: str) -> None:
    from mlir import ir

    try:
        ok = module.operation.verify()
    except ir.MLIRError as e:
        raise KilnError(f"internal error: the IR of {name} does not verify after widening booleans: {e}") from e
    if not ok:
        raise KilnError(f"internal error: the IR of {name} does not verify after widening booleans")


def _as_tensor(value, where: str):
    import torch

    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    raise KilnError(f"{where} must be a torch.Tensor or numpy array, got {type(value).__name__}: "
                    "Kiln compiles for fixed tensor inputs")


def _as_array(value) -> np.ndarray:
    try:
        import torch

        if isinstance(value, torch.Tensor):
            return value.detach().cpu().contiguous().numpy()
    except ImportError:  # pragma: no cover - torch is there whenever a module was compiled
        pass
    return np.asarray(value)


def _user_frame(tb, module) -> Optional[str]:
    """'file:line: code' of the innermost traceback frame in the module's own source file (or,
    failing that, outside torch), for export errors."""
    try:
        own = os.path.realpath(inspect.getsourcefile(type(module)) or "")
    except TypeError:
        own = ""
    frames = traceback.extract_tb(tb)
    torch_dir = os.path.dirname(os.path.dirname(os.path.abspath(__import__("torch").__file__)))
    pick = [f for f in frames if os.path.realpath(f.filename) == own] or \
        [f for f in frames if not os.path.abspath(f.filename).startswith(torch_dir)
         and "/kiln/" not in f.filename]
    if not pick:
        return None
    f = pick[-1]
    return f"{f.filename}:{f.lineno}: {f.line}"


def _export(module, example):
    import torch

    try:
        return torch.export.export(module, example, strict=False)
    except Exception as e:  # torch raises many types here (UserError, Unsupported, GuardOn...)
        where = _user_frame(e.__traceback__, module)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        dynamic = "data-dependent" in str(e).lower() or "GuardOnDataDependent" in type(e).__name__
        kind = "a data-dependent (dynamic-shape) construct" if dynamic else "a construct torch.export rejects"
        raise KilnError(f"cannot export {type(module).__name__}: {kind}"
                        f"{' at ' + where if where else ''}: {type(e).__name__}: {first}") from e


def _check_signature(exported, module) -> None:
    sig = exported.graph_signature
    if sig.buffers_to_mutate:
        names = ", ".join(sorted(set(sig.buffers_to_mutate.values())))
        raise KilnError(f"{type(module).__name__}.forward mutates buffer(s) {names}: Kiln compiles pure "
                        "functions; return the new values instead")
    if sig.user_inputs_to_mutate:
        names = ", ".join(sorted(set(sig.user_inputs_to_mutate.values())))
        raise KilnError(f"{type(module).__name__}.forward mutates its input(s) {names} in place")
    from ._child import user_frame

    kinds = {spec.arg.name: (spec.kind.name, spec.target) for spec in sig.input_specs if hasattr(spec.arg, "name")}
    for node in exported.graph.nodes:
        schema = getattr(node.target, "_schema", None)
        if node.op == "call_function" and schema is not None and schema.is_mutable:
            for arg, value in zip(schema.arguments, node.args):
                written = arg.alias_info is not None and arg.alias_info.is_write
                if written and getattr(value, "op", None) == "placeholder":
                    kind, target = kinds.get(value.name, ("USER_INPUT", value.name))
                    what = f"buffer {target}" if kind == "BUFFER" else f"input {value.name}"
                    f = user_frame(node.meta.get("stack_trace"))
                    where = f" at {f[0]}:{f[1]}: {f[2]}" if f else ""
                    raise KilnError(f"{type(module).__name__}.forward mutates {what} in place (FX node "
                                    f"'{node.name}', {node.target}){where}: Kiln compiles pure functions; "
                                    "return the new value instead")
    for node in exported.graph.nodes:
        if node.op == "output":
            for i, out in enumerate(node.args[0]):
                val = out.meta.get("val") if hasattr(out, "meta") else out
                if not _is_tensor(val):
                    raise KilnError(f"{type(module).__name__}.forward returns a non-tensor value "
                                    f"(output {i}: {type(val).__name__}); Kiln returns tensors only")


def _check_static(exported, module) -> None:
    """Kiln compiles static shapes: a node whose value has a symbolic (data-dependent) size, such as
    boolean indexing, `nonzero` or `.item()`, is refused here, naming the node and the user's line
    (torch-mlir would otherwise hang or fail far from the cause)."""
    import torch

    from ._child import user_frame

    def symbolic(val):
        if isinstance(val, torch.Tensor):
            return any(not isinstance(d, int) for d in val.shape)
        if isinstance(val, (list, tuple)):
            return any(symbolic(v) for v in val)
        return isinstance(val, (torch.SymInt, torch.SymFloat, torch.SymBool))

    for node in exported.graph.nodes:
        if node.op == "call_function" and symbolic(node.meta.get("val")):
            val = node.meta["val"]
            what = f"shape {tuple(val.shape)}" if isinstance(val, torch.Tensor) else f"value {val}"
            f = user_frame(node.meta.get("stack_trace"))
            where = f" at {f[0]}:{f[1]}: {f[2]}" if f else ""
            raise KilnError(f"cannot compile {type(module).__name__}: FX node '{node.name}' ({node.target}){where}: "
                            f"a dynamic-shape construct (its result has data-dependent {what}); "
                            "Kiln compiles static shapes")


def _rename_outputs(exported) -> None:
    """Points the output specs at the graph's output nodes again (a raised pattern that produced an
    output replaced that node)."""
    outputs = next(n for n in exported.graph.nodes if n.op == "output").args[0]
    for spec, node in zip(exported.graph_signature.output_specs, outputs):
        if hasattr(spec.arg, "name") and hasattr(node, "name"):
            spec.arg.name = node.name


def _is_tensor(value) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def _run_child(exported, raised, timeout, keep_temps, module):
    import torch

    from . import _ops

    workdir = keep_temps or tempfile.mkdtemp(prefix="kiln-torch-")
    os.makedirs(workdir, exist_ok=True)
    job = {
        "program": os.path.join(workdir, "program.pt2"),
        "output": os.path.join(workdir, "linalg.mlir"),
        "result": os.path.join(workdir, "result.json"),
        "func_name": "forward",
        "raised": {str(i): {"shape": list(_ops._OUTPUTS[i][0]), "dtype": str(_ops._OUTPUTS[i][1]).split(".")[-1]}
                   for i in raised},
    }
    torch.export.save(exported, job["program"])
    job_path = os.path.join(workdir, "job.json")
    with open(job_path, "w") as f:
        json.dump(job, f, indent=1)
    cmd = [sys.executable, CHILD, job_path]
    reproduce = f"reproduce with: {sys.executable} {CHILD} {job_path}"
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise KilnError(f"torch-mlir import of {type(module).__name__} did not finish within {timeout:g} s "
                        f"(killed); the exported program is kept in {workdir}; {reproduce}") from e
    result = None
    if os.path.exists(job["result"]):
        with open(job["result"]) as f:
            result = json.load(f)
    if proc.returncode == 0 and result and result.get("ok"):
        with open(job["output"]) as f:
            text = f.read()
        if not keep_temps:
            shutil.rmtree(workdir, ignore_errors=True)
        return text, result
    error = (result or {}).get("error")
    if proc.returncode == 3 and error and error.get("kind") != "crash":
        if not keep_temps:
            shutil.rmtree(workdir, ignore_errors=True)
        raise KilnError(_describe(error, type(module).__name__))
    tail = "\n".join((proc.stderr or "").strip().splitlines()[-15:])
    how = f"exit status {proc.returncode}" if proc.returncode >= 0 else f"signal {-proc.returncode}"
    raise KilnError(f"the torch-mlir child process crashed ({how}) while importing {type(module).__name__}; "
                    f"reproducer kept in {workdir} ({reproduce}); its last output:\n{tail}")


def _describe(error: dict, module_name: str) -> str:
    """The message for an error the child diagnosed: FX node, op, user source line, then what failed."""
    parts = []
    if error.get("node"):
        node = f"FX node '{error['node']}'"
        if error.get("origin"):
            node += f" (from '{error['origin']}')"
        if error.get("target"):
            node += f" ({error['target']})"
        parts.append(node)
    if error.get("file"):
        where = f"at {error['file']}:{error['line']}"
        if error.get("code"):
            where += f": {error['code']}"
        parts.append(where)
    head = f"cannot compile {module_name}: " + (" ".join(parts) + ": " if parts else "")
    return head + error.get("message", "unknown failure")
