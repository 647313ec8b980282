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
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "mlir/Dialect/Linalg/Transforms/Transforms.h"
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

struct FuseElementwise : kiln::impl::FuseElementwiseBase<FuseElementwise> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    linalg::populateElementwiseOpsFusionPatterns(patterns, fusesWithoutRecompute);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace
