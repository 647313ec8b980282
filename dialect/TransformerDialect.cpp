//===- TransformerDialect.cpp - dialect registration ----------------------===//

#include "dialect/TransformerDialect.h"

using namespace mlir;
using namespace kiln::transformer;

#include "dialect/TransformerDialect.cpp.inc"

void TransformerDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "dialect/TransformerOps.cpp.inc"
      >();
}
