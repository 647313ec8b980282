//===- FuseIntoMatvecs.cpp - elementwise producers into decode matvecs ----===//
//
// A decode step's linears read a vector (a few rows) computed by an
// elementwise op: RMSNorm's scaling feeds q, k, v, gate and up; SiLU(gate)·up
// feeds down. On a GPU each of those is a kernel launch of its own. This pass
// fuses such a producer into every matvec that reads it (cloning it for each),
// so the matvec recomputes the vector as it reads it: one launch instead of
// two, for a little arithmetic per output row. kiln-fuse-elementwise never
// does this (on a CPU, the recompute per output column is the cost). A linear
// over quantized blocks reads its vector through a tensor.expand_shape
// ([.., K] -> [.., K/32, 2, 16]): the producer is expanded to that shape first.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "mlir/Dialect/Linalg/Transforms/Transforms.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Interfaces/FunctionInterfaces.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace kiln {
#define GEN_PASS_DEF_FUSEINTOMATVECS
#include "passes/Passes.h.inc"
} // namespace kiln

using namespace mlir;

namespace {

/// Is `op` elementwise arithmetic only: all-parallel, one result, a body of arith/math ops (no
/// linalg.index, no tensor.extract)?
bool isPlainElementwise(linalg::GenericOp op) {
  if (!op.hasPureTensorSemantics() || op->getNumResults() != 1 ||
      op.getNumParallelLoops() != op.getNumLoops())
    return false;
  for (Operation &inner : op.getRegion().front().without_terminator()) {
    StringRef dialect = inner.getDialect()->getNamespace();
    if ((dialect != "arith" && dialect != "math") || inner.getNumRegions() != 0)
      return false;
  }
  return true;
}

/// Does `consumer` read `operand` as a matvec reads its vector: a static op with reduction loops
/// (one for x · Wᵀ; two or three for a linear over quantized blocks, whose vector is viewed as
/// [.., block, (half,) j] and may be read at a constant half) whose map for the operand reads a
/// reduction loop but drops the output's innermost (column) loop, so the operand is read once per
/// output column, with at most `maxRows` rows?
bool readsAsMatvecVector(linalg::GenericOp consumer, OpOperand &operand, int64_t maxRows) {
  if (!consumer.hasPureTensorSemantics() || consumer.getNumReductionLoops() == 0 ||
      consumer.getNumDpsInits() != 1 || !consumer.isDpsInput(&operand))
    return false;
  SmallVector<int64_t> ranges = consumer.getStaticLoopRanges();
  if (llvm::any_of(ranges, ShapedType::isDynamic))
    return false;
  AffineMap map = consumer.getMatchingIndexingMap(&operand);
  AffineMap outMap = consumer.getMatchingIndexingMap(consumer.getDpsInitOperand(0));
  auto column = outMap.getNumResults() ? dyn_cast<AffineDimExpr>(outMap.getResults().back()) : nullptr;
  if (!column || map.isFunctionOfDim(column.getPosition()) ||
      !llvm::all_of(map.getResults(), [](AffineExpr e) { return isa<AffineDimExpr, AffineConstantExpr>(e); }))
    return false;
  SmallVector<utils::IteratorType> kinds = consumer.getIteratorTypesArray();
  bool readsReduction = false;
  int64_t rows = 1;
  for (unsigned d = 0; d < ranges.size(); ++d) {
    if (kinds[d] == utils::IteratorType::reduction)
      readsReduction |= map.isFunctionOfDim(d);
    else if (map.isFunctionOfDim(d))
      rows *= ranges[d];
  }
  return readsReduction && rows <= maxRows;
}

/// Is `reshaped` (a tensor.expand_shape's source operand) the result of a plain elementwise op
/// that every user of the expand_shape reads as a matvec vector? Then the elementwise op is
/// expanded to the reshaped shape (linalg's fold-reshape-by-expansion) and can be fused.
bool expandsMatvecVector(OpOperand *reshaped, int64_t maxRows) {
  auto reshape = dyn_cast<tensor::ExpandShapeOp>(reshaped->getOwner());
  auto producer = reshaped->get().getDefiningOp<linalg::GenericOp>();
  if (!reshape || !producer || !isPlainElementwise(producer) || reshape->use_empty())
    return false;
  return llvm::all_of(reshape->getUses(), [&](OpOperand &use) {
    auto consumer = dyn_cast<linalg::GenericOp>(use.getOwner());
    return consumer && readsAsMatvecVector(consumer, use, maxRows);
  });
}

struct FuseProducerIntoMatvec : OpRewritePattern<linalg::GenericOp> {
  FuseProducerIntoMatvec(MLIRContext *context, int64_t maxRows)
      : OpRewritePattern(context), maxRows(maxRows) {}

  LogicalResult matchAndRewrite(linalg::GenericOp consumer, PatternRewriter &rewriter) const override {
    if (!isa<FunctionOpInterface>(consumer->getParentOp()))
      return rewriter.notifyMatchFailure(consumer, "not a kernel of its own (nested in another op)");
    for (OpOperand &operand : consumer->getOpOperands()) {
      auto producer = operand.get().getDefiningOp<linalg::GenericOp>();
      if (!producer || !isPlainElementwise(producer) ||
          !readsAsMatvecVector(consumer, operand, maxRows) || !linalg::areElementwiseOpsFusable(&operand))
        continue;
      rewriter.setInsertionPoint(consumer);
      if (!producer->hasOneUse()) {
        // This matvec gets a copy of its own; the producer stays for its other readers.
        Operation *copy = rewriter.clone(*producer);
        rewriter.modifyOpInPlace(consumer, [&] { operand.set(copy->getResult(0)); });
      }
      FailureOr<linalg::ElementwiseOpFusionResult> fused = linalg::fuseElementwiseOps(rewriter, &operand);
      if (failed(fused))
        return rewriter.notifyMatchFailure(consumer, "the elementwise fusion failed");
      rewriter.replaceOp(consumer, fused->replacements.lookup(consumer->getResult(0)));
      return success();
    }
    return rewriter.notifyMatchFailure(consumer, "no elementwise producer of a matvec vector");
  }

  int64_t maxRows;
};

struct FuseIntoMatvecs : kiln::impl::FuseIntoMatvecsBase<FuseIntoMatvecs> {
  using FuseIntoMatvecsBase::FuseIntoMatvecsBase;
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<FuseProducerIntoMatvec>(&getContext(), maxRows);
    int64_t rows = maxRows;
    linalg::populateFoldReshapeOpsByExpansionPatterns(
        patterns, [rows](OpOperand *operand) { return expandsMatvecVector(operand, rows); });
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace
