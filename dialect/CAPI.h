/*===- CAPI.h - C API of the transformer dialect and Kiln passes ----------===*\
|*                                                                            *|
|* What language bindings (the Python extension) call: a dialect handle for   *|
|* registries and the registration of Kiln's passes in the global pass        *|
|* registry, so that PassManager.parse() and kiln-opt see the same passes.    *|
\*===----------------------------------------------------------------------===*/

#ifndef KILN_DIALECT_CAPI_H
#define KILN_DIALECT_CAPI_H

#include "mlir-c/IR.h"

#ifdef __cplusplus
extern "C" {
#endif

MLIR_DECLARE_CAPI_DIALECT_REGISTRATION(Transformer, transformer);

/// Registers every Kiln pass in the global pass registry (idempotent).
MLIR_CAPI_EXPORTED void kilnRegisterPasses(void);

#ifdef __cplusplus
}
#endif

#endif // KILN_DIALECT_CAPI_H
