//===- CAPI.cpp - C API of the transformer dialect and Kiln passes --------===//

#include "dialect/CAPI.h"
#include "dialect/TransformerDialect.h"
#include "passes/Passes.h"

#include "mlir/CAPI/Registration.h"

MLIR_DEFINE_CAPI_DIALECT_REGISTRATION(Transformer, transformer,
                                      kiln::transformer::TransformerDialect)

void kilnRegisterPasses(void) {
  static bool registered = [] {
    kiln::registerKilnPasses();
    return true;
  }();
  (void)registered;
}
