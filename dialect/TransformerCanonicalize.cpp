//===- TransformerCanonicalize.cpp - folders and canonicalizations --------===//
//
// Rewrites that remove real work: optional operands that are no-ops (a zero
// bias or mask, a unit norm weight) are dropped so no kernel reads them, and
// split_heads/merge_heads round trips and whole-cache overwrites fold away.
//
//===----------------------------------------------------------------------===//

#include "dialect/TransformerDialect.h"

#include "mlir/IR/Matchers.h"
#include "mlir/IR/PatternMatch.h"

using namespace mlir;
using namespace kiln::transformer;

namespace {

/// True when `v` is a constant tensor whose elements all equal `value`.
bool isSplatOf(Value v, double value) {
  if (!v)
    return false;
  DenseElementsAttr attr;
  if (!matchPattern(v, m_Constant(&attr)) || !attr.isSplat() ||
      !isa<FloatType>(attr.getElementType()))
    return false;
  return attr.getSplatValue<APFloat>().convertToDouble() == value;
}

/// Removes an optional operand when `isNoOp` holds for it.
template <typename OpTy>
struct DropNoOpOperand : OpRewritePattern<OpTy> {
  using GetMutable = MutableOperandRange (OpTy::*)();
  DropNoOpOperand(MLIRContext *ctx, GetMutable getMutable, double neutral)
      : OpRewritePattern<OpTy>(ctx), getMutable(getMutable), neutral(neutral) {}

  LogicalResult matchAndRewrite(OpTy op, PatternRewriter &rewriter) const override {
    MutableOperandRange range = (op.*getMutable)();
    if (range.empty() || !isSplatOf(range[0].get(), neutral))
      return rewriter.notifyMatchFailure(op, "operand is absent or not a neutral splat");
    rewriter.modifyOpInPlace(op, [&] { (op.*getMutable)().clear(); });
    return success();
  }

  GetMutable getMutable;
  double neutral;
};

/// A non-causal attention ignores its offset; drop it.
struct DropUnusedAttentionOffset : OpRewritePattern<AttentionOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(AttentionOp op, PatternRewriter &rewriter) const override {
    if (op.getCausal() || !op.getOffset())
      return rewriter.notifyMatchFailure(op, "offset is used or absent");
    rewriter.modifyOpInPlace(op, [&] { op.getOffsetMutable().clear(); });
    return success();
  }
};

} // namespace

void LinearOp::getCanonicalizationPatterns(RewritePatternSet &results, MLIRContext *context) {
  results.add<DropNoOpOperand<LinearOp>>(context, &LinearOp::getBiasMutable, 0.0);
}

void RMSNormOp::getCanonicalizationPatterns(RewritePatternSet &results, MLIRContext *context) {
  results.add<DropNoOpOperand<RMSNormOp>>(context, &RMSNormOp::getWeightMutable, 1.0);
}

void LayerNormOp::getCanonicalizationPatterns(RewritePatternSet &results, MLIRContext *context) {
  results.add<DropNoOpOperand<LayerNormOp>>(context, &LayerNormOp::getWeightMutable, 1.0);
  results.add<DropNoOpOperand<LayerNormOp>>(context, &LayerNormOp::getBiasMutable, 0.0);
}

void AttentionOp::getCanonicalizationPatterns(RewritePatternSet &results, MLIRContext *context) {
  results.add<DropNoOpOperand<AttentionOp>>(context, &AttentionOp::getMaskMutable, 0.0);
  results.add<DropUnusedAttentionOffset>(context);
}

OpFoldResult KVCacheUpdateOp::fold(FoldAdaptor adaptor) {
  // Writing a cache-sized update at position 0 replaces the whole cache.
  auto position = dyn_cast_or_null<IntegerAttr>(adaptor.getPosition());
  RankedTensorType cacheType = getCache().getType();
  if (position && position.getValue().isZero() && cacheType.hasStaticShape() &&
      getUpdate().getType() == cacheType)
    return getUpdate();
  return {};
}

OpFoldResult SplitHeadsOp::fold(FoldAdaptor) {
  if (auto merge = getInput().getDefiningOp<MergeHeadsOp>())
    if (merge.getInput().getType() == getType())
      return merge.getInput();
  return {};
}

OpFoldResult MergeHeadsOp::fold(FoldAdaptor) {
  if (auto split = getInput().getDefiningOp<SplitHeadsOp>())
    if (split.getInput().getType() == getType())
      return split.getInput();
  return {};
}
