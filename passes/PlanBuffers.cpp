//===- PlanBuffers.cpp - reuse intermediate memory across kernels ---------===//
//
// After bufferization a host function allocates one buffer per intermediate
// tensor and frees it at the end. This pass turns those into a buffer plan:
// every such buffer becomes a view at a fixed offset into one arena, and
// buffers whose lifetimes [alloc, last use through any view] do not overlap
// share memory. Offsets come from
// a greedy first-fit, largest-first placement (64-byte aligned).
//
// The host function is tagged with `kiln.buffer_plan`: the arena size, the
// number of planned buffers and the bytes they would take unplanned.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Interfaces/ViewLikeInterface.h"

#include "llvm/ADT/STLExtras.h"

namespace kiln {
#define GEN_PASS_DEF_PLANBUFFERS
#include "passes/Passes.h.inc"
} // namespace kiln

using namespace mlir;

namespace {

constexpr int64_t kAlignment = 64;

struct PlannedBuffer {
  memref::AllocOp alloc;
  memref::DeallocOp dealloc;
  int64_t begin, end; // positions in the block of the alloc and of the last use
  int64_t bytes;
  int64_t offset = -1;
};

/// A static, identity-layout allocation freed by one memref.dealloc in the same block. Its
/// lifetime ends at the last top-level op that uses it or any view of it (the deallocation
/// pipeline places deallocs at the end of the block, so they say nothing about lifetimes).
std::optional<PlannedBuffer> asPlannable(memref::AllocOp alloc, Block &block,
                                         DenseMap<Operation *, int64_t> &pos) {
  MemRefType type = alloc.getType();
  if (!type.hasStaticShape() || !type.getLayout().isIdentity() || !type.getElementType().isIntOrFloat() ||
      type.getMemorySpace())
    return std::nullopt;
  memref::DeallocOp dealloc;
  int64_t end = pos[alloc];
  SmallVector<Value> worklist{alloc.getResult()};
  while (!worklist.empty()) {
    Value v = worklist.pop_back_val();
    for (Operation *user : v.getUsers()) {
      if (auto d = dyn_cast<memref::DeallocOp>(user)) {
        if (v != alloc.getResult() || dealloc)
          return std::nullopt; // freed twice, or through an alias
        dealloc = d;
        continue;
      }
      Operation *top = block.findAncestorOpInBlock(*user);
      if (!top)
        return std::nullopt;
      end = std::max(end, pos[top]);
      if (auto view = dyn_cast<ViewLikeOpInterface>(user))
        if (view.getViewSource() == v)
          llvm::append_range(worklist, user->getResults());
      if (isa<func::ReturnOp>(user))
        return std::nullopt; // escapes the function
    }
  }
  if (!dealloc)
    return std::nullopt; // not freed here: not an intermediate
  int64_t bits = type.getNumElements() * type.getElementTypeBitWidth();
  int64_t bytes = llvm::alignTo((bits + 7) / 8, kAlignment);
  return PlannedBuffer{alloc, dealloc, pos[alloc], end, bytes};
}

struct PlanBuffers : kiln::impl::PlanBuffersBase<PlanBuffers> {
  void runOnOperation() override {
    func::FuncOp func = getOperation();
    if (func.isExternal() || func->hasAttr("kiln.dispatch") || !func.getBody().hasOneBlock())
      return;
    Block &block = func.getBody().front();
    DenseMap<Operation *, int64_t> pos;
    int64_t i = 0;
    for (Operation &op : block)
      pos[&op] = i++;

    SmallVector<PlannedBuffer> buffers;
    for (auto alloc : block.getOps<memref::AllocOp>())
      if (std::optional<PlannedBuffer> b = asPlannable(alloc, block, pos))
        buffers.push_back(*b);
    if (buffers.size() < 2)
      return;

    // Largest first; each at the lowest offset free during its whole lifetime.
    llvm::stable_sort(buffers, [](auto &a, auto &b) { return a.bytes > b.bytes; });
    int64_t arenaBytes = 0, unplannedBytes = 0;
    for (size_t k = 0; k < buffers.size(); ++k) {
      PlannedBuffer &b = buffers[k];
      SmallVector<std::pair<int64_t, int64_t>> taken;
      for (size_t j = 0; j < k; ++j)
        if (buffers[j].begin <= b.end && b.begin <= buffers[j].end)
          taken.push_back({buffers[j].offset, buffers[j].offset + buffers[j].bytes});
      llvm::sort(taken);
      int64_t offset = 0;
      for (auto [lo, hi] : taken) {
        if (offset + b.bytes <= lo)
          break;
        offset = std::max(offset, hi);
      }
      b.offset = offset;
      arenaBytes = std::max(arenaBytes, offset + b.bytes);
      unplannedBytes += b.bytes;
    }

    OpBuilder builder = OpBuilder::atBlockBegin(&block);
    Location loc = func.getLoc();
    auto arenaType = MemRefType::get({arenaBytes}, builder.getI8Type());
    Value arena = memref::AllocOp::create(builder, loc, arenaType, builder.getI64IntegerAttr(kAlignment));
    for (PlannedBuffer &b : buffers) {
      builder.setInsertionPoint(b.alloc);
      Value offset = arith::ConstantIndexOp::create(builder, b.alloc.getLoc(), b.offset);
      Value view = memref::ViewOp::create(builder, b.alloc.getLoc(), b.alloc.getType(), arena, offset,
                                          ValueRange{});
      b.dealloc.erase();
      b.alloc.replaceAllUsesWith(view);
      b.alloc.erase();
    }
    builder.setInsertionPoint(block.getTerminator());
    memref::DeallocOp::create(builder, loc, arena);

    func->setAttr("kiln.buffer_plan",
                  builder.getDictionaryAttr({
                      builder.getNamedAttr("arena_bytes", builder.getI64IntegerAttr(arenaBytes)),
                      builder.getNamedAttr("buffers", builder.getI64IntegerAttr(buffers.size())),
                      builder.getNamedAttr("unplanned_bytes", builder.getI64IntegerAttr(unplannedBytes)),
                  }));
  }
};

} // namespace
