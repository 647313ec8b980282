//===- KilnExtension.cpp - the kiln._kiln Python extension ----------------===//
//
// Registers the transformer dialect into a DialectRegistry and Kiln's passes
// into the global pass registry. Uses only the C API and the MLIR bindings'
// type casters, and links against the bindings' own libMLIRPythonCAPI.so, so
// the process keeps a single MLIR copy.
//
//===----------------------------------------------------------------------===//

#include "dialect/CAPI.h"

#include "mlir/Bindings/Python/NanobindAdaptors.h"

namespace nb = nanobind;

NB_MODULE(_kiln, m) {
  m.doc() = "Native registration hooks of Kiln's dialect and passes";
  m.def(
      "register_dialects",
      [](MlirDialectRegistry registry) {
        mlirDialectHandleInsertDialect(mlirGetDialectHandle__transformer__(), registry);
      },
      nb::arg("registry"), "Adds the transformer dialect to `registry`.");
  m.def("register_passes", &kilnRegisterPasses,
        "Registers Kiln's passes (transformer-to-linalg, ...) for PassManager.parse.");
}
