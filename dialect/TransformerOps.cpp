//===- TransformerOps.cpp - result types and verifiers --------------------===//
//
// inferReturnTypes computes each result type from the operands (so builders in
// C++ and Python need no result type) and rejects what makes that impossible
// (wrong ranks). The verifiers check everything else. Every message names the
// operand and dimension at fault. Dynamic dimensions are accepted everywhere
// and checked only where both sides are static.
//
//===----------------------------------------------------------------------===//

#include "dialect/TransformerDialect.h"

#include <cmath>

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringSwitch.h"

using namespace mlir;
using namespace kiln::transformer;

namespace {

/// True when both sizes are static and differ.
bool staticMismatch(int64_t a, int64_t b) {
  return !ShapedType::isDynamic(a) && !ShapedType::isDynamic(b) && a != b;
}

std::string dimStr(int64_t d) {
  return ShapedType::isDynamic(d) ? std::string("?") : std::to_string(d);
}

RankedTensorType tensorType(Value v) { return cast<RankedTensorType>(v.getType()); }

/// inferReturnTypes also runs from builders (C++ and Python), before the ODS
/// type constraints are verified: reject what is not a ranked tensor instead of
/// casting it.
LogicalResult checkRankedTensor(std::optional<Location> loc, StringRef name, Value v) {
  if (isa<RankedTensorType>(v.getType()))
    return success();
  return emitOptionalError(loc, name, " must be a ranked tensor, got ", v.getType());
}

/// Fails with "`name` must have rank `rank` (`layout`), got rank N".
LogicalResult checkRank(std::optional<Location> loc, StringRef name, Value v, int64_t rank,
                        StringRef layout) {
  if (failed(checkRankedTensor(loc, name, v)))
    return failure();
  int64_t actual = tensorType(v).getRank();
  if (actual == rank)
    return success();
  return emitOptionalError(loc, name, " must have rank ", rank, " (", layout, "), got rank ",
                           actual);
}

LogicalResult checkMinRank(std::optional<Location> loc, StringRef name, Value v, int64_t rank) {
  if (failed(checkRankedTensor(loc, name, v)))
    return failure();
  int64_t actual = tensorType(v).getRank();
  if (actual >= rank)
    return success();
  return emitOptionalError(loc, name, " must have rank >= ", rank, ", got rank ", actual);
}

/// All float operands of an op share the element type of `ref`.
LogicalResult checkSameElementType(Operation *op, StringRef refName, Value ref, StringRef name,
                                   Value v) {
  if (!v)
    return success();
  Type want = tensorType(ref).getElementType(), got = tensorType(v).getElementType();
  if (want == got)
    return success();
  return op->emitOpError() << name << " element type " << got << " does not match " << refName
                           << " element type " << want;
}

/// A vector (rank 1) whose size must equal dimension `dim` of `ref`.
LogicalResult checkVectorOfSize(Operation *op, StringRef name, Value v, int64_t size,
                                StringRef sizeName) {
  if (!v)
    return success();
  RankedTensorType type = tensorType(v);
  if (type.getRank() != 1)
    return op->emitOpError() << name << " must have rank 1, got rank " << type.getRank();
  if (staticMismatch(type.getDimSize(0), size))
    return op->emitOpError() << name << " size (" << type.getDimSize(0) << ") does not match "
                             << sizeName << " (" << size << ")";
  return success();
}

SmallVector<int64_t> dropLast(ArrayRef<int64_t> shape) {
  return SmallVector<int64_t>(shape.drop_back());
}

/// InferTypeOpInterface checks the result types (and so the ranks that
/// inferReturnTypes rejects) in a region verifier, which runs only after
/// verify(). The verifiers below index shapes by those ranks, so each runs that
/// check first: a malformed op gets its diagnostic instead of an out-of-bounds
/// read.
LogicalResult verifyInferredTypesFirst(Operation *op) {
  return mlir::detail::verifyInferredResultTypes(op);
}

} // namespace

//===----------------------------------------------------------------------===//
// EmbeddingOp
//===----------------------------------------------------------------------===//

LogicalResult EmbeddingOp::inferReturnTypes(MLIRContext *, std::optional<Location> loc,
                                            Adaptor adaptor,
                                            SmallVectorImpl<Type> &inferred) {
  if (failed(checkRank(loc, "table", adaptor.getTable(), 2, "[vocab, dim]")) ||
      failed(checkRankedTensor(loc, "indices", adaptor.getIndices())))
    return failure();
  RankedTensorType table = tensorType(adaptor.getTable());
  SmallVector<int64_t> shape(tensorType(adaptor.getIndices()).getShape());
  shape.push_back(table.getDimSize(1));
  inferred.push_back(RankedTensorType::get(shape, table.getElementType()));
  return success();
}

//===----------------------------------------------------------------------===//
// LinearOp
//===----------------------------------------------------------------------===//

LogicalResult LinearOp::inferReturnTypes(MLIRContext *, std::optional<Location> loc,
                                         Adaptor adaptor, SmallVectorImpl<Type> &inferred) {
  if (failed(checkMinRank(loc, "input", adaptor.getInput(), 1)) ||
      failed(checkRank(loc, "weight", adaptor.getWeight(), 2, "[out_features, in_features]")))
    return failure();
  RankedTensorType input = tensorType(adaptor.getInput());
  SmallVector<int64_t> shape = dropLast(input.getShape());
  shape.push_back(tensorType(adaptor.getWeight()).getDimSize(0));
  inferred.push_back(RankedTensorType::get(shape, input.getElementType()));
  return success();
}

LogicalResult LinearOp::verify() {
  if (failed(verifyInferredTypesFirst(*this)))
    return failure();
  RankedTensorType input = tensorType(getInput()), weight = tensorType(getWeight());
  int64_t inFeatures = input.getShape().back();
  if (staticMismatch(inFeatures, weight.getDimSize(1)))
    return emitOpError() << "input feature dimension (" << inFeatures
                         << ") does not match weight dimension 1 (in_features = "
                         << weight.getDimSize(1) << ")";
  if (failed(checkSameElementType(*this, "input", getInput(), "weight", getWeight())) ||
      failed(checkSameElementType(*this, "input", getInput(), "bias", getBias())))
    return failure();
  return checkVectorOfSize(*this, "bias", getBias(), weight.getDimSize(0), "out_features");
}

//===----------------------------------------------------------------------===//
// DequantizeOp
//===----------------------------------------------------------------------===//

namespace {
/// Bytes of quantized values per 32-value block of a GGUF format, 0 if unknown.
int64_t blockPayload(StringRef format) {
  return llvm::StringSwitch<int64_t>(format).Case("q8_0", 32).Cases("q4_0", "q4_1", 16).Default(0);
}
} // namespace

LogicalResult DequantizeOp::inferReturnTypes(MLIRContext *ctx, std::optional<Location> loc,
                                             Adaptor adaptor, SmallVectorImpl<Type> &inferred) {
  if (failed(checkRank(loc, "data", adaptor.getData(), 3, "[rows, blocks, bytes per block]")))
    return failure();
  RankedTensorType data = tensorType(adaptor.getData());
  int64_t blocks = data.getDimSize(1);
  int64_t k = ShapedType::isDynamic(blocks) ? ShapedType::kDynamic : blocks * 32;
  inferred.push_back(RankedTensorType::get({data.getDimSize(0), k}, Float32Type::get(ctx)));
  return success();
}

LogicalResult DequantizeOp::verify() {
  if (failed(verifyInferredTypesFirst(*this)))
    return failure();
  StringRef format = getFormat();
  int64_t payload = blockPayload(format);
  if (!payload)
    return emitOpError() << "unknown format '" << format << "'; expected q4_0, q4_1 or q8_0";
  RankedTensorType data = tensorType(getData());
  if (!data.getElementType().isInteger(8))
    return emitOpError() << "data must hold i8 bytes, got " << data.getElementType();
  if (staticMismatch(data.getDimSize(2), payload))
    return emitOpError() << "data dimension 2 (" << dimStr(data.getDimSize(2)) << ") must be " << payload
                         << ", the bytes of one " << format << " block";
  bool wantsMins = format == "q4_1";
  if (wantsMins != static_cast<bool>(getMins()))
    return emitOpError() << "format " << format << (wantsMins ? " needs" : " takes no") << " mins";
  for (auto [name, v] : {std::pair<StringRef, Value>{"scales", getScales()}, {"mins", getMins()}}) {
    if (!v)
      continue;
    RankedTensorType t = tensorType(v);
    if (t.getRank() != 2)
      return emitOpError() << name << " must have rank 2 ([rows, blocks]), got rank " << t.getRank();
    for (int64_t d = 0; d < 2; ++d)
      if (staticMismatch(t.getDimSize(d), data.getDimSize(d)))
        return emitOpError() << name << " dimension " << d << " (" << t.getDimSize(d)
                             << ") does not match data dimension " << d << " ("
                             << data.getDimSize(d) << ")";
  }
  return checkSameElementType(*this, "scales", getScales(), "mins", getMins());
}

//===----------------------------------------------------------------------===//
// MatmulOp
//===----------------------------------------------------------------------===//

LogicalResult MatmulOp::inferReturnTypes(MLIRContext *, std::optional<Location> loc,
                                         Adaptor adaptor, SmallVectorImpl<Type> &inferred) {
  if (failed(checkMinRank(loc, "lhs", adaptor.getLhs(), 2)) ||
      failed(checkMinRank(loc, "rhs", adaptor.getRhs(), 2)))
    return failure();
  RankedTensorType lhs = tensorType(adaptor.getLhs()), rhs = tensorType(adaptor.getRhs());
  if (lhs.getRank() != rhs.getRank())
    return emitOptionalError(loc, "lhs rank (", lhs.getRank(), ") does not match rhs rank (",
                             rhs.getRank(), ")");
  int64_t rank = lhs.getRank();
  SmallVector<int64_t> shape;
  for (int64_t i = 0; i < rank - 2; ++i)
    shape.push_back(ShapedType::isDynamic(lhs.getDimSize(i)) ? rhs.getDimSize(i)
                                                             : lhs.getDimSize(i));
  shape.push_back(lhs.getDimSize(rank - 2));
  shape.push_back(rhs.getDimSize(adaptor.getTransposeRhs() ? rank - 2 : rank - 1));
  inferred.push_back(RankedTensorType::get(shape, lhs.getElementType()));
  return success();
}

LogicalResult MatmulOp::verify() {
  if (failed(verifyInferredTypesFirst(*this)))
    return failure();
  RankedTensorType lhs = tensorType(getLhs()), rhs = tensorType(getRhs());
  int64_t rank = lhs.getRank();
  for (int64_t i = 0; i < rank - 2; ++i)
    if (staticMismatch(lhs.getDimSize(i), rhs.getDimSize(i)))
      return emitOpError() << "batch dimension " << i << " of lhs (" << lhs.getDimSize(i)
                           << ") does not match rhs (" << rhs.getDimSize(i) << ")";
  int64_t rhsK = rhs.getDimSize(getTransposeRhs() ? rank - 1 : rank - 2);
  if (staticMismatch(lhs.getDimSize(rank - 1), rhsK))
    return emitOpError() << "contraction dimension of lhs (" << lhs.getDimSize(rank - 1)
                         << ") does not match rhs (" << rhsK << ")";
  return checkSameElementType(*this, "lhs", getLhs(), "rhs", getRhs());
}

//===----------------------------------------------------------------------===//
// Norms
//===----------------------------------------------------------------------===//

namespace {
LogicalResult inferNormType(std::optional<Location> loc, Value input,
                            SmallVectorImpl<Type> &inferred) {
  if (failed(checkMinRank(loc, "input", input, 1)))
    return failure();
  inferred.push_back(input.getType());
  return success();
}

LogicalResult verifyNormParams(Operation *op, Value input, Value weight, Value bias,
                               double eps) {
  if (!(eps >= 0)) // NaN too
    return op->emitOpError() << "eps (" << eps << ") must be non-negative";
  int64_t features = tensorType(input).getShape().back();
  if (failed(checkVectorOfSize(op, "weight", weight, features, "the normalized dimension")) ||
      failed(checkVectorOfSize(op, "bias", bias, features, "the normalized dimension")) ||
      failed(checkSameElementType(op, "input", input, "weight", weight)) ||
      failed(checkSameElementType(op, "input", input, "bias", bias)))
    return failure();
  return success();
}
} // namespace

LogicalResult RMSNormOp::inferReturnTypes(MLIRContext *, std::optional<Location> loc,
                                          Adaptor adaptor, SmallVectorImpl<Type> &inferred) {
  return inferNormType(loc, adaptor.getInput(), inferred);
}

LogicalResult RMSNormOp::verify() {
  if (failed(verifyInferredTypesFirst(*this)))
    return failure();
  return verifyNormParams(*this, getInput(), getWeight(), Value(), getEps().convertToDouble());
}

LogicalResult LayerNormOp::inferReturnTypes(MLIRContext *, std::optional<Location> loc,
                                            Adaptor adaptor, SmallVectorImpl<Type> &inferred) {
  return inferNormType(loc, adaptor.getInput(), inferred);
}

LogicalResult LayerNormOp::verify() {
  if (failed(verifyInferredTypesFirst(*this)))
    return failure();
  return verifyNormParams(*this, getInput(), getWeight(), getBias(), getEps().convertToDouble());
}

//===----------------------------------------------------------------------===//
// RoPEOp
//===----------------------------------------------------------------------===//

int64_t RoPEOp::getRotaryDimOrHeadDim() {
  if (std::optional<uint64_t> dim = getRotaryDim())
    return static_cast<int64_t>(*dim);
  return tensorType(getInput()).getDimSize(3);
}

LogicalResult RoPEOp::inferReturnTypes(MLIRContext *, std::optional<Location> loc,
                                       Adaptor adaptor, SmallVectorImpl<Type> &inferred) {
  if (failed(checkRank(loc, "input", adaptor.getInput(), 4, "[batch, heads, seq, head_dim]")))
    return failure();
  inferred.push_back(adaptor.getInput().getType());
  return success();
}

LogicalResult RoPEOp::verify() {
  if (failed(verifyInferredTypesFirst(*this)))
    return failure();
  RankedTensorType input = tensorType(getInput()), positions = tensorType(getPositions());
  if (positions.getRank() != 1 && positions.getRank() != 2)
    return emitOpError() << "positions must have rank 1 ([seq]) or 2 ([batch, seq]), got rank "
                         << positions.getRank();
  int64_t seq = positions.getShape().back();
  if (staticMismatch(seq, input.getDimSize(2)))
    return emitOpError() << "positions sequence dimension (" << seq
                         << ") does not match input dimension 2 (seq = " << input.getDimSize(2)
                         << ")";
  if (positions.getRank() == 2 && staticMismatch(positions.getDimSize(0), input.getDimSize(0)))
    return emitOpError() << "positions batch dimension (" << positions.getDimSize(0)
                         << ") does not match input dimension 0 (batch = " << input.getDimSize(0)
                         << ")";
  if (!(getTheta().convertToDouble() > 0)) // NaN too
    return emitOpError() << "theta (" << getTheta().convertToDouble() << ") must be positive";
  double scaling = getAttentionScaling().convertToDouble();
  if (!(scaling > 0) || std::isinf(scaling))
    return emitOpError() << "attention_scaling (" << scaling << ") must be positive and finite";
  int64_t headDim = input.getDimSize(3);
  if (std::optional<uint64_t> attr = getRotaryDim()) {
    int64_t rotaryDim = static_cast<int64_t>(*attr);
    if (rotaryDim <= 0 || rotaryDim % 2 != 0)
      return emitOpError() << "rotary_dim (" << rotaryDim << ") must be positive and even";
    if (!ShapedType::isDynamic(headDim) && rotaryDim > headDim)
      return emitOpError() << "rotary_dim (" << rotaryDim << ") exceeds head_dim (" << headDim
                           << ")";
  } else if (ShapedType::isDynamic(headDim)) {
    return emitOpError() << "rotary_dim is required when head_dim is dynamic";
  } else if (headDim % 2 != 0) {
    return emitOpError() << "head_dim (" << headDim
                         << ") is odd: set an even rotary_dim for partial rotary";
  }
  if (Value invFreq = getInvFreq()) {
    if (failed(checkVectorOfSize(*this, "inv_freq", invFreq, getRotaryDimOrHeadDim() / 2,
                                 "rotary_dim / 2")))
      return failure();
  }
  return success();
}

//===----------------------------------------------------------------------===//
// AttentionOp
//===----------------------------------------------------------------------===//

LogicalResult AttentionOp::inferReturnTypes(MLIRContext *, std::optional<Location> loc,
                                            Adaptor adaptor, SmallVectorImpl<Type> &inferred) {
  if (failed(checkRank(loc, "query", adaptor.getQuery(), 4,
                       "[batch, num_heads, q_len, head_dim]")) ||
      failed(checkRank(loc, "value", adaptor.getValue(), 4,
                       "[batch, num_kv_heads, kv_len, v_head_dim]")))
    return failure();
  RankedTensorType q = tensorType(adaptor.getQuery()), v = tensorType(adaptor.getValue());
  inferred.push_back(RankedTensorType::get(
      {q.getDimSize(0), q.getDimSize(1), q.getDimSize(2), v.getDimSize(3)}, q.getElementType()));
  return success();
}

LogicalResult AttentionOp::verify() {
  if (failed(verifyInferredTypesFirst(*this)))
    return failure();
  RankedTensorType q = tensorType(getQuery()), k = tensorType(getKey()), v = tensorType(getValue());
  if (k.getRank() != 4)
    return emitOpError() << "key must have rank 4 ([batch, num_kv_heads, kv_len, head_dim]), got rank "
                         << k.getRank();
  if (staticMismatch(q.getDimSize(0), k.getDimSize(0)) ||
      staticMismatch(q.getDimSize(0), v.getDimSize(0)))
    return emitOpError() << "batch dimensions of query (" << dimStr(q.getDimSize(0)) << "), key ("
                         << dimStr(k.getDimSize(0)) << ") and value (" << dimStr(v.getDimSize(0))
                         << ") differ";
  if (staticMismatch(k.getDimSize(1), v.getDimSize(1)))
    return emitOpError() << "num_kv_heads of key (" << k.getDimSize(1) << ") and value ("
                         << v.getDimSize(1) << ") differ";
  int64_t heads = q.getDimSize(1), kvHeads = k.getDimSize(1);
  if (!ShapedType::isDynamic(heads) && !ShapedType::isDynamic(kvHeads) &&
      (kvHeads == 0 || heads % kvHeads != 0))
    return emitOpError() << "num_heads (" << heads << ") is not a multiple of num_kv_heads ("
                         << kvHeads << ")";
  if ((ShapedType::isDynamic(heads) || ShapedType::isDynamic(kvHeads)) && heads != kvHeads)
    return emitOpError() << "num_heads and num_kv_heads must be static for grouped-query attention";
  if (staticMismatch(q.getDimSize(3), k.getDimSize(3)))
    return emitOpError() << "head_dim of query (" << q.getDimSize(3) << ") and key ("
                         << k.getDimSize(3) << ") differ";
  if (staticMismatch(k.getDimSize(2), v.getDimSize(2)))
    return emitOpError() << "kv_len of key (" << k.getDimSize(2) << ") and value ("
                         << v.getDimSize(2) << ") differ";
  if (failed(checkSameElementType(*this, "query", getQuery(), "key", getKey())) ||
      failed(checkSameElementType(*this, "query", getQuery(), "value", getValue())) ||
      failed(checkSameElementType(*this, "query", getQuery(), "mask", getMask())))
    return failure();
  if (Value mask = getMask()) {
    RankedTensorType m = tensorType(mask);
    if (m.getRank() != 4)
      return emitOpError() << "mask must have rank 4 ([batch, num_heads, q_len, kv_len] or 1 "
                              "where broadcast), got rank "
                           << m.getRank();
    int64_t full[4] = {q.getDimSize(0), heads, q.getDimSize(2), k.getDimSize(2)};
    static const char *names[4] = {"batch", "num_heads", "q_len", "kv_len"};
    // Whether the mask's head dimension broadcasts decides how heads are grouped, so it must be known.
    if (m.isDynamicDim(1))
      return emitOpError() << "mask dimension 1 (num_heads) must be static: 1 or num_heads";
    for (int i = 0; i < 4; ++i)
      if (m.getDimSize(i) != 1 && staticMismatch(m.getDimSize(i), full[i]))
        return emitOpError() << "mask dimension " << i << " (" << m.getDimSize(i)
                             << ") is neither 1 nor " << names[i] << " (" << full[i] << ")";
  }
  if (std::optional<APFloat> scale = getScale()) {
    if (!(scale->convertToDouble() > 0))
      return emitOpError() << "scale (" << scale->convertToDouble() << ") must be positive";
  } else if (q.isDynamicDim(3)) {
    return emitOpError() << "scale is required when head_dim is dynamic (its default is 1/sqrt(head_dim))";
  }
  return success();
}

//===----------------------------------------------------------------------===//
// KVCacheUpdateOp
//===----------------------------------------------------------------------===//

LogicalResult KVCacheUpdateOp::inferReturnTypes(MLIRContext *, std::optional<Location> loc,
                                                Adaptor adaptor,
                                                SmallVectorImpl<Type> &inferred) {
  if (failed(checkRank(loc, "cache", adaptor.getCache(), 4,
                       "[batch, kv_heads, max_seq, head_dim]")))
    return failure();
  inferred.push_back(adaptor.getCache().getType());
  return success();
}

LogicalResult KVCacheUpdateOp::verify() {
  if (failed(verifyInferredTypesFirst(*this)))
    return failure();
  RankedTensorType cache = tensorType(getCache()), update = tensorType(getUpdate());
  if (update.getRank() != 4)
    return emitOpError() << "update must have rank 4 ([batch, kv_heads, new_len, head_dim]), got rank "
                         << update.getRank();
  static const char *names[4] = {"batch", "kv_heads", "seq", "head_dim"};
  for (int i : {0, 1, 3})
    if (staticMismatch(cache.getDimSize(i), update.getDimSize(i)))
      return emitOpError() << "update dimension " << i << " (" << names[i] << " = "
                           << update.getDimSize(i) << ") does not match cache ("
                           << cache.getDimSize(i) << ")";
  if (!ShapedType::isDynamic(cache.getDimSize(2)) && !ShapedType::isDynamic(update.getDimSize(2)) &&
      update.getDimSize(2) > cache.getDimSize(2))
    return emitOpError() << "update length (" << update.getDimSize(2)
                         << ") exceeds cache length (max_seq = " << cache.getDimSize(2) << ")";
  return checkSameElementType(*this, "cache", getCache(), "update", getUpdate());
}

//===----------------------------------------------------------------------===//
// SplitHeadsOp / MergeHeadsOp
//===----------------------------------------------------------------------===//

LogicalResult SplitHeadsOp::inferReturnTypes(MLIRContext *, std::optional<Location> loc,
                                             Adaptor adaptor, SmallVectorImpl<Type> &inferred) {
  if (failed(checkRank(loc, "input", adaptor.getInput(), 3, "[batch, seq, heads * head_dim]")))
    return failure();
  int64_t heads = static_cast<int64_t>(adaptor.getNumHeads());
  if (heads <= 0)
    return emitOptionalError(loc, "num_heads (", heads, ") must be positive");
  RankedTensorType input = tensorType(adaptor.getInput());
  int64_t features = input.getDimSize(2);
  if (!ShapedType::isDynamic(features) && features % heads != 0)
    return emitOptionalError(loc, "feature dimension (", features,
                             ") is not a multiple of num_heads (", heads, ")");
  int64_t headDim = ShapedType::isDynamic(features) ? ShapedType::kDynamic : features / heads;
  inferred.push_back(RankedTensorType::get(
      {input.getDimSize(0), heads, input.getDimSize(1), headDim}, input.getElementType()));
  return success();
}

LogicalResult MergeHeadsOp::inferReturnTypes(MLIRContext *, std::optional<Location> loc,
                                             Adaptor adaptor, SmallVectorImpl<Type> &inferred) {
  if (failed(checkRank(loc, "input", adaptor.getInput(), 4, "[batch, heads, seq, head_dim]")))
    return failure();
  RankedTensorType input = tensorType(adaptor.getInput());
  int64_t heads = input.getDimSize(1), headDim = input.getDimSize(3);
  int64_t features = ShapedType::isDynamic(heads) || ShapedType::isDynamic(headDim)
                         ? ShapedType::kDynamic
                         : heads * headDim;
  inferred.push_back(RankedTensorType::get({input.getDimSize(0), input.getDimSize(2), features},
                                           input.getElementType()));
  return success();
}

//===----------------------------------------------------------------------===//
// Activations, MLP, sampling
//===----------------------------------------------------------------------===//

int64_t SoftmaxOp::getNormalizedAxis() {
  int64_t axis = static_cast<int64_t>(getAxis());
  return axis < 0 ? axis + tensorType(getInput()).getRank() : axis;
}

LogicalResult SoftmaxOp::verify() {
  int64_t rank = tensorType(getInput()).getRank();
  int64_t axis = static_cast<int64_t>(getAxis());
  if (rank == 0 || axis < -rank || axis >= rank)
    return emitOpError() << "axis (" << axis << ") is out of range for rank " << rank;
  return success();
}

LogicalResult GeluOp::verify() {
  if (getApproximate() != "none" && getApproximate() != "tanh")
    return emitOpError() << "approximate must be \"none\" or \"tanh\", got \"" << getApproximate()
                         << "\"";
  return success();
}

LogicalResult GatedMLPOp::inferReturnTypes(MLIRContext *, std::optional<Location> loc,
                                           Adaptor adaptor, SmallVectorImpl<Type> &inferred) {
  if (failed(checkMinRank(loc, "input", adaptor.getInput(), 1)) ||
      failed(checkRank(loc, "down_weight", adaptor.getDownWeight(), 2, "[hidden, ffn]")))
    return failure();
  RankedTensorType input = tensorType(adaptor.getInput());
  SmallVector<int64_t> shape = dropLast(input.getShape());
  shape.push_back(tensorType(adaptor.getDownWeight()).getDimSize(0));
  inferred.push_back(RankedTensorType::get(shape, input.getElementType()));
  return success();
}

LogicalResult GatedMLPOp::verify() {
  if (failed(verifyInferredTypesFirst(*this)))
    return failure();
  StringRef act = getActivation();
  if (act != "silu" && act != "gelu" && act != "gelu_tanh")
    return emitOpError() << "activation must be \"silu\", \"gelu\" or \"gelu_tanh\", got \"" << act
                         << "\"";
  RankedTensorType input = tensorType(getInput()), gate = tensorType(getGateWeight()),
                   up = tensorType(getUpWeight()), down = tensorType(getDownWeight());
  if (gate.getRank() != 2 || up.getRank() != 2)
    return emitOpError() << "gate_weight and up_weight must have rank 2 ([ffn, hidden])";
  int64_t hidden = input.getShape().back();
  if (staticMismatch(gate.getDimSize(1), hidden))
    return emitOpError() << "gate_weight dimension 1 (" << gate.getDimSize(1)
                         << ") does not match the input feature dimension (" << hidden << ")";
  if (staticMismatch(up.getDimSize(0), gate.getDimSize(0)) ||
      staticMismatch(up.getDimSize(1), gate.getDimSize(1)))
    return emitOpError() << "up_weight shape [" << dimStr(up.getDimSize(0)) << ", "
                         << dimStr(up.getDimSize(1)) << "] does not match gate_weight ["
                         << dimStr(gate.getDimSize(0)) << ", " << dimStr(gate.getDimSize(1)) << "]";
  if (staticMismatch(down.getDimSize(1), gate.getDimSize(0)))
    return emitOpError() << "down_weight dimension 1 (" << down.getDimSize(1)
                         << ") does not match ffn (" << gate.getDimSize(0) << ")";
  for (auto [name, w] : {std::pair<StringRef, Value>{"gate_weight", getGateWeight()},
                         {"up_weight", getUpWeight()},
                         {"down_weight", getDownWeight()}})
    if (failed(checkSameElementType(*this, "input", getInput(), name, w)))
      return failure();
  return success();
}

LogicalResult ArgMaxOp::inferReturnTypes(MLIRContext *context, std::optional<Location> loc,
                                         Adaptor adaptor, SmallVectorImpl<Type> &inferred) {
  if (failed(checkMinRank(loc, "input", adaptor.getInput(), 1)))
    return failure();
  inferred.push_back(RankedTensorType::get(dropLast(tensorType(adaptor.getInput()).getShape()),
                                           IntegerType::get(context, 64)));
  return success();
}

LogicalResult ArgMaxOp::verify() {
  if (failed(verifyInferredTypesFirst(*this)))
    return failure();
  int64_t n = tensorType(getInput()).getShape().back();
  if (n == 0)
    return emitOpError() << "the reduced (last) dimension is empty";
  return success();
}

#define GET_OP_CLASSES
#include "dialect/TransformerOps.cpp.inc"
