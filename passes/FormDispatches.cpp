//===- FormDispatches.cpp - partition a program into kernels --------------===//
//
// IREE-style dispatch formation on linalg-on-tensors IR. Every linalg op of a
// host function becomes one kernel (a "dispatch"): it is outlined, together
// with the linalg.fill ops that only initialize it (a fill shared by several
// ops is first cloned for each) and the linalg.unpack ops
// that unpack its inputs (weights stored pre-packed in the layout the GEMM
// schedule packs them to, so the schedule's pack folds them away), into a
// private function marked `kiln.dispatch`, which the host calls. Elementwise
// producers are already fused into their consumers by the linalg stage. An
// op that a lowering already formed into a kernel (an `scf.forall` tagged
// `kiln.kernel_class`, e.g. flash attention) is outlined as it is.
//
// Kernels are destination-passing: the tensor.empty that a kernel writes
// stays in the host and is passed in, so after bufferization the host owns
// every buffer (and can plan and reuse them) and a kernel writes its output
// in place. Each kernel is tagged with its class (`kiln.kernel_class`:
// contraction, reduction, elementwise, transpose, generic), its loop trip
// counts and kinds, and its root op with `kiln.root`, so the `tiled` stage
// can pick and apply a schedule; a transpose kernel also with its
// `kiln.permutation` (the bufferized stage may read a copy of its result
// through a transposed view of its input instead).
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Linalg/IR/LinalgInterfaces.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/Linalg/Utils/Utils.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/SymbolTable.h"

#include "llvm/ADT/SetVector.h"

namespace kiln {
#define GEN_PASS_DEF_FORMDISPATCHES
#include "passes/Passes.h.inc"
} // namespace kiln

using namespace mlir;

namespace {

/// The class of kernel a linalg op becomes, which selects its schedule.
StringRef kernelClass(linalg::LinalgOp op) {
  if (isa<linalg::TransposeOp>(op.getOperation()))
    return "transpose";
  if (isa<linalg::FillOp>(op.getOperation()))
    return "elementwise";
  if (linalg::isaContractionOpInterface(op))
    return "contraction";
  if (op.getNumReductionLoops() > 0)
    return "reduction";
  if (linalg::isElementwise(op))
    return "elementwise";
  return "generic";
}

/// A fill whose only use is as the init of `root` belongs to root's kernel.
bool isInitFillOf(Operation *op, linalg::LinalgOp root) {
  auto fill = dyn_cast<linalg::FillOp>(op);
  if (!fill || !fill->hasOneUse())
    return false;
  OpOperand &use = *fill->getUses().begin();
  return use.getOwner() == root.getOperation() && root.isDpsInit(&use);
}

struct FormDispatches : kiln::impl::FormDispatchesBase<FormDispatches> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    SymbolTable symbols(module);
    SmallVector<func::FuncOp> hosts;
    for (auto func : module.getOps<func::FuncOp>())
      if (!func.isExternal() && !func->hasAttr("kiln.dispatch"))
        hosts.push_back(func);
    for (func::FuncOp host : hosts)
      if (failed(formDispatches(host, symbols)))
        return signalPassFailure();
  }

  /// A fill that initializes several ops (CSE merged identical fills) is cloned, with its
  /// tensor.empty, for each of them: every kernel then initializes its own output, where one
  /// shared fill would be a kernel of its own plus a host copy of its result for each consumer.
  static void splitSharedInitFills(func::FuncOp host) {
    SmallVector<linalg::FillOp> shared;
    for (auto fill : host.getOps<linalg::FillOp>())
      if (!fill->hasOneUse() && !fill->use_empty())
        shared.push_back(fill);
    for (linalg::FillOp fill : shared) {
      SmallVector<OpOperand *> inits;
      for (OpOperand &use : fill->getUses())
        if (auto consumer = dyn_cast<linalg::LinalgOp>(use.getOwner());
            consumer && consumer->getParentOp() == host.getOperation() && consumer.isDpsInit(&use))
          inits.push_back(&use);
      auto empty = fill.getOutputs()[0].getDefiningOp<tensor::EmptyOp>();
      for (OpOperand *use : inits) {
        OpBuilder b(use->getOwner());
        Operation *clone = b.clone(*fill);
        if (empty)
          clone->setOperand(fill.getNumDpsInputs(), b.clone(*empty)->getResult(0));
        use->set(clone->getResult(0));
      }
      if (fill->use_empty())
        fill->erase();
      if (empty && empty->use_empty())
        empty->erase();
    }
  }

  LogicalResult formDispatches(func::FuncOp host, SymbolTable &symbols) {
    splitSharedInitFills(host);
    SmallVector<Operation *> roots;
    for (Operation &op : host.getBody().getOps()) { // only top-level ops of the host body
      if (op.hasAttr("kiln.kernel_class")) {
        roots.push_back(&op);
        continue;
      }
      if (!isa<linalg::LinalgOp>(op))
        continue;
      if (llvm::any_of(op.getUsers(), [&](Operation *user) {
            auto consumer = dyn_cast<linalg::LinalgOp>(user);
            return consumer && isInitFillOf(&op, consumer);
          }))
        continue; // an init fill: outlined with its consumer
      roots.push_back(&op);
    }
    unsigned index = 0;
    for (Operation *root : roots)
      outline(host, root, index++, symbols);
    return success();
  }

  /// Class, trip counts (-1: dynamic) and loop kinds of a root: a linalg op's, or a formed
  /// kernel's (its class attribute and the parallel grid of its scf.forall).
  static std::tuple<std::string, SmallVector<int64_t>, std::string> describe(Operation *root) {
    if (auto cls = root->getAttrOfType<StringAttr>("kiln.kernel_class")) {
      SmallVector<int64_t> ranges;
      if (auto forall = dyn_cast<scf::ForallOp>(root))
        ranges = llvm::to_vector(forall.getStaticUpperBound());
      for (int64_t &r : ranges)
        if (ShapedType::isDynamic(r))
          r = -1;
      return {cls.str(), ranges, std::string(ranges.size(), 'p')};
    }
    auto op = cast<linalg::LinalgOp>(root);
    SmallVector<int64_t> ranges = op.getStaticLoopRanges();
    for (int64_t &r : ranges)
      if (ShapedType::isDynamic(r))
        r = -1;
    std::string kinds;
    for (utils::IteratorType it : op.getIteratorTypesArray())
      kinds += it == utils::IteratorType::parallel ? 'p' : 'r';
    return {kernelClass(op).str(), ranges, kinds};
  }

  void outline(func::FuncOp host, Operation *rootOp, unsigned index, SymbolTable &symbols) {
    // The kernel: the root, the unpacks of its inputs and the fills that initialize it. An
    // unpack used by several kernels is cloned into each.
    SmallVector<Operation *> group;
    auto root = dyn_cast<linalg::LinalgOp>(rootOp);
    for (OpOperand *input : root ? root.getDpsInputOperands() : SmallVector<OpOperand *>{})
      if (auto unpack = input->get().getDefiningOp<linalg::UnPackOp>();
          unpack && unpack->getParentOp() == host.getOperation() && !llvm::is_contained(group, unpack)) {
        if (auto empty = unpack.getDest().getDefiningOp<tensor::EmptyOp>();
            empty && !llvm::is_contained(group, empty))
          group.push_back(empty); // the unpacked weight is never a host buffer
        group.push_back(unpack);
      }
    if (root)
      for (OpOperand &init : root.getDpsInitsMutable())
        if (Operation *def = init.get().getDefiningOp(); def && isInitFillOf(def, root))
          group.push_back(def);
    group.push_back(rootOp);
    llvm::SmallPtrSet<Operation *, 4> inGroup(group.begin(), group.end());

    // Its arguments: every value used in the group and defined outside it, except small
    // constants, which are cloned into the kernel so they stay visible to its optimizations.
    llvm::SetVector<Value> captures;
    llvm::SetVector<Operation *> constants;
    for (Operation *op : group)
      op->walk([&](Operation *nested) {
        for (Value v : nested->getOperands()) {
          if (definedInGroup(v, inGroup))
            continue;
          if (Operation *def = v.getDefiningOp(); def && isSmallConstant(def))
            constants.insert(def);
          else
            captures.insert(v);
        }
      });

    OpBuilder b(host);
    Location loc = rootOp->getLoc();
    SmallVector<Type> argTypes = llvm::map_to_vector(captures, [](Value v) { return v.getType(); });
    auto kernelType = b.getFunctionType(argTypes, rootOp->getResultTypes());
    auto [cls, ranges, kinds] = describe(rootOp);
    std::string name = (host.getSymName() + "_dispatch_" + Twine(index) + "_" + cls).str();
    auto kernel = func::FuncOp::create(b, loc, name, kernelType);
    kernel.setPrivate();
    kernel->setAttr("kiln.dispatch", b.getUnitAttr());
    kernel->setAttr("kiln.kernel_class", b.getStringAttr(cls));
    // What the tiled stage needs to choose a schedule: trip counts (-1: dynamic) and loop kinds.
    kernel->setAttr("kiln.loop_ranges", b.getDenseI64ArrayAttr(ranges));
    kernel->setAttr("kiln.iterator_types", b.getStringAttr(kinds));
    // A transpose kernel only moves elements: the bufferized stage reads a copy of its result through
    // a transposed view of its input instead (copy_views.py).
    if (auto transpose = dyn_cast<linalg::TransposeOp>(rootOp))
      kernel->setAttr("kiln.permutation", transpose.getPermutationAttr());
    symbols.insert(kernel);

    Block *body = kernel.addEntryBlock();
    IRMapping mapping;
    for (auto [v, arg] : llvm::zip(captures, body->getArguments()))
      mapping.map(v, arg);
    OpBuilder kb = OpBuilder::atBlockBegin(body);
    for (Operation *op : constants)
      kb.clone(*op, mapping);
    Operation *clonedRoot = nullptr;
    for (Operation *op : group)
      clonedRoot = kb.clone(*op, mapping);
    clonedRoot->setAttr("kiln.root", b.getUnitAttr());
    func::ReturnOp::create(kb, loc, clonedRoot->getResults());

    OpBuilder hb(rootOp);
    auto call = func::CallOp::create(hb, loc, kernel, captures.getArrayRef());
    rootOp->replaceAllUsesWith(call.getResults());
    for (Operation *op : llvm::reverse(group))
      if (op->use_empty())
        op->erase();
  }

  static bool definedInGroup(Value v, const llvm::SmallPtrSetImpl<Operation *> &group) {
    Operation *owner = v.getDefiningOp();
    if (!owner)
      owner = v.getParentRegion()->getParentOp();
    for (Operation *op = owner; op; op = op->getParentOp())
      if (group.contains(op))
        return true;
    return false;
  }

  static bool isSmallConstant(Operation *op) {
    if (!op->hasTrait<OpTrait::ConstantLike>() || op->getNumResults() != 1)
      return false;
    auto shaped = dyn_cast<ShapedType>(op->getResult(0).getType());
    return !shaped || (shaped.hasStaticShape() && shaped.getNumElements() <= 4096);
  }
};

} // namespace
