"""The PyTorch frontend: compile any `torch.nn.Module` through torch.export and torch-mlir, with the
patterns Kiln has kernels for raised to `transformer` ops.

    from kiln.frontends.torch import compile_module
    compiled = compile_module(module, (x,), target="cpu")
    y = compiled(x)

torch-mlir runs in a child process (`_child.py`); see `importer.py` for the flow and `raising.py`
for the recognised patterns.
"""

from .importer import CompiledModule, ImportedModule, compile_module, import_module

__all__ = ["CompiledModule", "ImportedModule", "compile_module", "import_module"]
