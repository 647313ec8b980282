"""Kiln: a hackable MLIR compiler for transformer models.

Importing kiln registers the `transformer` dialect in every `mlir.ir.Context` created afterwards and
Kiln's passes (e.g. ``transformer-to-linalg``) for ``mlir.passmanager.PassManager.parse``.

    program = kiln.compile(ir_text, target="cpu")   # -> kiln.runtime.Program
    (y,) = program.forward(x, w)                    # one native call per entry point
"""

from mlir._mlir_libs import _mlir as _cext
from mlir._mlir_libs import get_dialect_registry as _get_dialect_registry

from . import _kiln

__version__ = "0.1.0"

_kiln.register_dialects(_get_dialect_registry())
_kiln.register_passes()
# Parsed transformer ops are returned as kiln.dialects.transformer classes.
_cext.globals.append_dialect_search_prefix("kiln.dialects")

from . import runtime  # noqa: E402
from .compiler import compile  # noqa: E402
from .errors import KilnError  # noqa: E402
from .model import CompiledModel, compile_model, load  # noqa: E402

__all__ = ["CompiledModel", "KilnError", "__version__", "compile", "compile_model", "load", "runtime"]
