//===- TransformerDialect.cpp - dialect registration ----------------------===//

#include "dialect/TransformerDialect.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace kiln::transformer;

#include "dialect/TransformerDialect.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "dialect/TransformerAttrs.cpp.inc"

void TransformerDialect::initialize() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "dialect/TransformerAttrs.cpp.inc"
      >();
  addOperations<
#define GET_OP_LIST
#include "dialect/TransformerOps.cpp.inc"
      >();
}

LogicalResult WorkgroupMappingAttr::verify(function_ref<InFlightDiagnostic()> emitError, int64_t dim) {
  if (dim < 0)
    return emitError() << "workgroup dimension must be non-negative, got " << dim;
  return success();
}

// A workgroup dimension: no linear (flattened) mapping, the dimension's number as its id.
int64_t WorkgroupMappingAttr::getMappingId() const { return getDim(); }
bool WorkgroupMappingAttr::isLinearMapping() const { return false; }
int64_t WorkgroupMappingAttr::getRelativeIndex() const { return getDim(); }
