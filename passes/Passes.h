//===- Passes.h - Kiln's passes ---------------------------------*- C++ -*-===//

#ifndef KILN_PASSES_PASSES_H
#define KILN_PASSES_PASSES_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Pass/Pass.h"

namespace kiln {

/// The patterns of `transformer-to-linalg`, for passes that lower as part of
/// a larger conversion. `flashKvTile` > 0 adds the flash-attention form (see
/// the pass's `flash-kv-tile` option).
void populateTransformerToLinalgPatterns(mlir::RewritePatternSet &patterns, int64_t flashKvTile = 0,
                                         int64_t flashQueryRows = 32);

#define GEN_PASS_DECL
#include "passes/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "passes/Passes.h.inc"

} // namespace kiln

#endif // KILN_PASSES_PASSES_H
