//===- AccumulateResiduals.cpp - add residuals in contraction accumulators -===//
//
// `r + C`, where C is a contraction that starts from zero and has no other
// use, becomes the contraction accumulating into r: one kernel instead of a
// contraction kernel and an elementwise one. A transformer's residual
// connections (h + o_proj(attention), h + down_proj(mlp)) are all of this
// form, so a decode step on a GPU loses two launches per layer.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Linalg/IR/LinalgInterfaces.h"
#include "mlir/IR/Dominance.h"
#include "mlir/IR/Matchers.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace kiln {
#define GEN_PASS_DEF_ACCUMULATERESIDUALS
#include "passes/Passes.h.inc"
} // namespace kiln

using namespace mlir;

namespace {

/// Is `op` an elementwise addition of its two inputs (identity maps, body `addf(in0, in1)`)?
bool isElementwiseAdd(linalg::GenericOp op) {
  if (op.getNumDpsInputs() != 2 || op.getNumDpsInits() != 1 || !op.hasPureTensorSemantics() ||
      op.getNumParallelLoops() != op.getNumLoops() ||
      !llvm::all_of(op.getIndexingMapsArray(), [](AffineMap m) { return m.isIdentity(); }))
    return false;
  Block &body = op.getRegion().front();
  if (body.getOperations().size() != 2)
    return false;
  auto add = body.getTerminator()->getOperand(0).getDefiningOp<arith::AddFOp>();
  if (!add)
    return false;
  Value a = body.getArgument(0), b = body.getArgument(1);
  return (add.getLhs() == a && add.getRhs() == b) || (add.getLhs() == b && add.getRhs() == a);
}

/// Does `op` only add terms to its accumulator: reduction loops, and a body yielding
/// `out + term` (or `term + out`) with `out` used nowhere else? A linear over quantized blocks is
/// such a sum, though not a contraction.
bool sumsIntoAccumulator(linalg::LinalgOp op) {
  auto generic = dyn_cast<linalg::GenericOp>(op.getOperation());
  if (!generic || generic.getNumReductionLoops() == 0 || generic.getNumDpsInits() != 1)
    return false;
  Block &body = generic.getRegion().front();
  BlockArgument out = body.getArguments().back();
  auto add = body.getTerminator()->getOperand(0).getDefiningOp<arith::AddFOp>();
  return add && out.hasOneUse() && (add.getLhs() == out || add.getRhs() == out);
}

/// The zero-filled accumulator of `value`'s defining contraction (or sum, `sumsIntoAccumulator`)
/// when it has no other use.
OpOperand *zeroStartedAccumulator(Value value) {
  auto contraction = value.getDefiningOp<linalg::LinalgOp>();
  if (!contraction || !value.hasOneUse() || contraction->getNumResults() != 1 ||
      !(linalg::isaContractionOpInterface(contraction) || sumsIntoAccumulator(contraction)))
    return nullptr;
  OpOperand *init = contraction.getDpsInitOperand(0);
  auto fill = init->get().getDefiningOp<linalg::FillOp>();
  if (!fill || !matchPattern(fill.value(), m_AnyZeroFloat()))
    return nullptr;
  return init;
}

struct AccumulateIntoResidual : OpRewritePattern<linalg::GenericOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(linalg::GenericOp add, PatternRewriter &rewriter) const override {
    if (!isElementwiseAdd(add))
      return rewriter.notifyMatchFailure(add, "not an elementwise addition of two tensors");
    DominanceInfo dominance(add->getParentOp());
    for (int i = 0; i < 2; ++i) {
      Value sum = add.getDpsInputOperand(i)->get();
      Value residual = add.getDpsInputOperand(1 - i)->get();
      OpOperand *init = zeroStartedAccumulator(sum);
      if (!init || residual.getType() != sum.getType() ||
          !dominance.properlyDominates(residual, init->getOwner()))
        continue;
      rewriter.modifyOpInPlace(init->getOwner(), [&] { init->set(residual); });
      rewriter.replaceOp(add, sum);
      return success();
    }
    return rewriter.notifyMatchFailure(add, "no zero-started contraction to accumulate into");
  }
};

struct AccumulateResiduals : kiln::impl::AccumulateResidualsBase<AccumulateResiduals> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<AccumulateIntoResidual>(&getContext());
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace
