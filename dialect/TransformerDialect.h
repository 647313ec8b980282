//===- TransformerDialect.h - the `transformer` dialect ---------*- C++ -*-===//
//
// Declarations of the dialect, its attributes and its ops, generated from TransformerOps.td.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_DIALECT_TRANSFORMERDIALECT_H
#define KILN_DIALECT_TRANSFORMERDIALECT_H

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/Dialect/SCF/IR/DeviceMappingInterface.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "dialect/TransformerDialect.h.inc"

#define GET_ATTRDEF_CLASSES
#include "dialect/TransformerAttrs.h.inc"

#define GET_OP_CLASSES
#include "dialect/TransformerOps.h.inc"

#endif // KILN_DIALECT_TRANSFORMERDIALECT_H
