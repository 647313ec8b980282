//===- FuseElementwise.cpp - fuse elementwise producers without recompute -===//
//
// Fuses an elementwise linalg producer into its linalg consumer only when the
// fusion adds no work: the producer has one use and the consumer reads each
// of its elements exactly once (the consumer's indexing map for that operand
// is a permutation of all its loops). Upstream's linalg-fuse-elementwise-ops
// also fuses when the consumer reads an element many times (e.g. an
// activation into the contraction that consumes it, recomputing it once per
// output column) and folds reshapes into contractions, which turns GEMMs
// into shapes no GEMM schedule recognizes. This pass does neither.
//
// A copy (a linalg.transpose, e.g. split_heads', or any op that only moves
// elements) computes nothing, so it folds into an all-parallel consumer that
// reads it however often: the consumer then reads the copy's source through
// the composed indexing map. An expand_shape between the two (RoPE views the
// features as two halves) is first moved above the copy.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "mlir/Dialect/Linalg/Transforms/Transforms.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace kiln {
#define GEN_PASS_DEF_FUSEELEMENTWISE
#include "passes/Passes.h.inc"
} // namespace kiln

using namespace mlir;

namespace {

bool fusesWithoutRecompute(OpOperand *fused) {
  Operation *producer = fused->get().getDefiningOp();
  auto consumer = dyn_cast<linalg::LinalgOp>(fused->getOwner());
  if (!producer || !consumer || !producer->hasOneUse())
    return false;
  return consumer.getMatchingIndexingMap(fused).isPermutation();
}

/// An op that only moves elements: one tensor input (a fill's scalar is upstream's to fold), all
/// loops parallel, a permutation as its result's map, and a body that yields the input element.
bool isCopy(linalg::LinalgOp op) {
  if (!op || op.getNumDpsInputs() != 1 || op.getNumDpsInits() != 1 || !op.hasPureTensorSemantics() ||
      !isa<RankedTensorType>(op.getDpsInputOperand(0)->get().getType()) ||
      op.getNumParallelLoops() != op.getNumLoops() ||
      !op.getMatchingIndexingMap(op.getDpsInitOperand(0)).isPermutation())
    return false;
  Block *body = op.getBlock();
  Operation *yield = body->getTerminator();
  return body->getOperations().size() == 1 && yield->getNumOperands() == 1 &&
         yield->getOperand(0) == body->getArgument(0);
}

/// The generic that reads `v` as every one of its uses, when that generic can absorb a copy
/// producing `v`: all loops parallel, every result written through a permutation (its loop bounds
/// never come from its inputs).
linalg::GenericOp soleAbsorbingConsumer(Value v) {
  if (v.use_empty())
    return {};
  auto consumer = dyn_cast<linalg::GenericOp>(v.getUses().begin()->getOwner());
  if (!consumer || !consumer.hasPureTensorSemantics() ||
      consumer.getNumParallelLoops() != consumer.getNumLoops())
    return {};
  for (OpOperand &init : consumer.getDpsInitsMutable())
    if (!consumer.getMatchingIndexingMap(&init).isPermutation())
      return {};
  for (OpOperand &use : v.getUses())
    if (use.getOwner() != consumer.getOperation() || !consumer.isDpsInput(&use))
      return {};
  return consumer;
}

/// Consumer reads of a copy's result become reads of its source.
struct FoldCopyIntoConsumer : OpRewritePattern<linalg::GenericOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(linalg::GenericOp consumer, PatternRewriter &rewriter) const override {
    for (OpOperand *operand : consumer.getDpsInputOperands()) {
      auto copy = operand->get().getDefiningOp<linalg::LinalgOp>();
      if (!isCopy(copy) || soleAbsorbingConsumer(copy->getResult(0)) != consumer)
        continue;
      OpOperand *source = copy.getDpsInputOperand(0);
      // copy result indices -> copy loops -> source indices
      AffineMap resultToSource = copy.getMatchingIndexingMap(source).compose(
          inversePermutation(copy.getMatchingIndexingMap(copy.getDpsInitOperand(0))));
      SmallVector<AffineMap> maps = consumer.getIndexingMapsArray();
      Value result = copy->getResult(0);
      rewriter.modifyOpInPlace(consumer, [&] {
        for (OpOperand *use : consumer.getDpsInputOperands()) {
          if (use->get() != result)
            continue;
          AffineMap &map = maps[use->getOperandNumber()];
          map = resultToSource.compose(map);
          use->set(source->get());
        }
        consumer.setIndexingMapsAttr(rewriter.getAffineMapArrayAttr(maps));
      });
      return success();
    }
    return failure();
  }
};

/// Moves an expand_shape above the copy that produces its source when the expanded copy then
/// folds into the expand_shape's consumer.
bool expandsCopyForConsumer(OpOperand *operand) {
  auto expand = dyn_cast<tensor::ExpandShapeOp>(operand->getOwner());
  auto copy = operand->get().getDefiningOp<linalg::LinalgOp>();
  return expand && isCopy(copy) && copy->hasOneUse() && soleAbsorbingConsumer(expand.getResult());
}

struct FuseElementwise : kiln::impl::FuseElementwiseBase<FuseElementwise> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    linalg::populateElementwiseOpsFusionPatterns(patterns, fusesWithoutRecompute);
    linalg::populateFoldReshapeOpsByExpansionPatterns(patterns, expandsCopyForConsumer);
    patterns.add<FoldCopyIntoConsumer>(&getContext());
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace
