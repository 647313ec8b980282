//===- TransformerToLinalg.cpp - transformer ops -> linalg on tensors -----===//
//
// One conversion pattern per op. The building blocks (contractions, row
// reductions, elementwise maps, the stable softmax) are small helpers shared
// by the patterns, so e.g. attention and softmax normalize rows the same way.
// Dynamic dimensions are supported throughout via tensor.dim.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "dialect/TransformerDialect.h"

#include "mlir/Dialect/Arith/Utils/Utils.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Utils/StructuredOpsUtils.h"
#include "mlir/IR/AffineMap.h"
#include "mlir/Transforms/DialectConversion.h"

#include <cmath>

namespace kiln {
#define GEN_PASS_DEF_TRANSFORMERTOLINALG
#include "passes/Passes.h.inc"
} // namespace kiln

using namespace mlir;
using namespace kiln::transformer;

namespace {

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

using BodyFn = function_ref<void(OpBuilder &, Location, ValueRange)>;

RankedTensorType tensorType(Value v) { return cast<RankedTensorType>(v.getType()); }
Type elementType(Value v) { return tensorType(v).getElementType(); }

/// The type arithmetic runs in: f32 for narrower floats, the type itself otherwise.
Type computeType(Type t) {
  auto f = cast<FloatType>(t);
  return f.getWidth() < 32 ? Float32Type::get(t.getContext()) : t;
}

Value castFloat(OpBuilder &b, Location loc, Value v, Type to) {
  Type from = v.getType();
  if (from == to)
    return v;
  if (cast<FloatType>(from).getWidth() < cast<FloatType>(to).getWidth())
    return arith::ExtFOp::create(b, loc, to, v);
  return arith::TruncFOp::create(b, loc, to, v);
}

Value floatConst(OpBuilder &b, Location loc, Type t, double v) {
  return arith::ConstantOp::create(b, loc, t, b.getFloatAttr(t, v));
}

Value negInf(OpBuilder &b, Location loc, Type t) {
  return arith::ConstantOp::create(
      b, loc, t, b.getFloatAttr(t, APFloat::getInf(cast<FloatType>(t).getFloatSemantics(), true)));
}

/// A dimension of `v` as a floating-point scalar (for means).
Value dimAsFloat(OpBuilder &b, Location loc, Value v, int64_t dim, Type t) {
  int64_t size = tensorType(v).getDimSize(dim);
  if (!ShapedType::isDynamic(size))
    return floatConst(b, loc, t, static_cast<double>(size));
  Value idx = tensor::DimOp::create(b, loc, v, dim);
  Value i64 = arith::IndexCastOp::create(b, loc, b.getI64Type(), idx);
  return arith::SIToFPOp::create(b, loc, t, i64);
}

/// tensor.empty of the given (mixed static/dynamic) sizes.
Value emptyTensor(OpBuilder &b, Location loc, ArrayRef<OpFoldResult> sizes, Type elt) {
  return tensor::EmptyOp::create(b, loc, sizes, elt);
}

Value filledTensor(OpBuilder &b, Location loc, ArrayRef<OpFoldResult> sizes, Value value) {
  Value empty = emptyTensor(b, loc, sizes, value.getType());
  return linalg::FillOp::create(b, loc, ValueRange{value}, ValueRange{empty}).getResult(0);
}

SmallVector<utils::IteratorType> iterators(int64_t parallel, int64_t reduction = 0) {
  SmallVector<utils::IteratorType> its(parallel, utils::IteratorType::parallel);
  its.append(reduction, utils::IteratorType::reduction);
  return its;
}

/// The map (d0, ..., d{n-1}) -> (dims...).
AffineMap dimsMap(MLIRContext *ctx, int64_t numDims, ArrayRef<int64_t> dims) {
  SmallVector<AffineExpr> exprs;
  for (int64_t d : dims)
    exprs.push_back(getAffineDimExpr(d, ctx));
  return AffineMap::get(numDims, 0, exprs, ctx);
}

/// (d0, ..., d{n-1}) -> (d0, ..., d{n-1}) without dim `drop`.
AffineMap dropDimMap(MLIRContext *ctx, int64_t numDims, int64_t drop) {
  SmallVector<int64_t> dims;
  for (int64_t d = 0; d < numDims; ++d)
    if (d != drop)
      dims.push_back(d);
  return dimsMap(ctx, numDims, dims);
}

SmallVector<int64_t> range(int64_t begin, int64_t end) {
  SmallVector<int64_t> r;
  for (int64_t i = begin; i < end; ++i)
    r.push_back(i);
  return r;
}

void yieldValue(OpBuilder &b, Location loc, Value v) { linalg::YieldOp::create(b, loc, v); }

Value generic(OpBuilder &b, Location loc, ValueRange inputs, Value init, ArrayRef<AffineMap> maps,
              ArrayRef<utils::IteratorType> its, BodyFn body) {
  return linalg::GenericOp::create(b, loc, TypeRange{init.getType()}, inputs, ValueRange{init},
                                   maps, its, body)
      .getResult(0);
}

/// Applies `fn` to every element of `input`, producing elements of type `resultElt`.
Value mapElementwise(OpBuilder &b, Location loc, Value input, Type resultElt,
                     function_ref<Value(OpBuilder &, Location, Value)> fn) {
  int64_t rank = tensorType(input).getRank();
  Value init = emptyTensor(b, loc, tensor::getMixedSizes(b, loc, input), resultElt);
  AffineMap id = b.getMultiDimIdentityMap(rank);
  return generic(b, loc, input, init, {id, id}, iterators(rank),
                 [&](OpBuilder &nb, Location nloc, ValueRange args) {
                   yieldValue(nb, nloc, fn(nb, nloc, args[0]));
                 });
}

Value castTensor(OpBuilder &b, Location loc, Value t, Type elt) {
  if (elementType(t) == elt)
    return t;
  return mapElementwise(b, loc, t, elt, [&](OpBuilder &nb, Location nloc, Value x) {
    return castFloat(nb, nloc, x, elt);
  });
}

/// Reduces `input` (elements cast to `acc`'s type) along `axis` into a tensor
/// without that axis, starting from `initValue`; `combine(acc, x)` folds one element.
Value reduceAxis(OpBuilder &b, Location loc, Value input, int64_t axis, Value initValue,
                 function_ref<Value(OpBuilder &, Location, Value, Value)> combine) {
  int64_t rank = tensorType(input).getRank();
  SmallVector<OpFoldResult> sizes = tensor::getMixedSizes(b, loc, input);
  sizes.erase(sizes.begin() + axis);
  Value init = filledTensor(b, loc, sizes, initValue);
  SmallVector<utils::IteratorType> its = iterators(rank);
  its[axis] = utils::IteratorType::reduction;
  Type accType = initValue.getType();
  return generic(b, loc, input, init,
                 {b.getMultiDimIdentityMap(rank), dropDimMap(b.getContext(), rank, axis)}, its,
                 [&](OpBuilder &nb, Location nloc, ValueRange args) {
                   Value x = castFloat(nb, nloc, args[0], accType);
                   yieldValue(nb, nloc, combine(nb, nloc, args[1], x));
                 });
}

/// Stable softmax of `input` along `axis`, returned in element type `outElt`.
/// Arithmetic runs in computeType(outElt).
Value buildSoftmax(OpBuilder &b, Location loc, Value input, int64_t axis, Type outElt) {
  Type ct = computeType(outElt);
  int64_t rank = tensorType(input).getRank();
  Value rowMax = reduceAxis(b, loc, input, axis, negInf(b, loc, ct),
                            [](OpBuilder &nb, Location nloc, Value acc, Value x) -> Value {
                              return arith::MaximumFOp::create(nb, nloc, acc, x);
                            });
  AffineMap id = b.getMultiDimIdentityMap(rank);
  AffineMap rowMap = dropDimMap(b.getContext(), rank, axis);
  SmallVector<OpFoldResult> rowSizes = tensor::getMixedSizes(b, loc, rowMax);
  SmallVector<utils::IteratorType> sumIts = iterators(rank);
  sumIts[axis] = utils::IteratorType::reduction;
  Value rowSum = generic(b, loc, ValueRange{input, rowMax},
                         filledTensor(b, loc, rowSizes, floatConst(b, loc, ct, 0.0)),
                         {id, rowMap, rowMap}, sumIts,
                         [&](OpBuilder &nb, Location nloc, ValueRange args) {
                           Value x = castFloat(nb, nloc, args[0], ct);
                           Value e = math::ExpOp::create(
                               nb, nloc, arith::SubFOp::create(nb, nloc, x, args[1]));
                           yieldValue(nb, nloc,
                                                   arith::AddFOp::create(nb, nloc, args[2], e));
                         });
  Value out = emptyTensor(b, loc, tensor::getMixedSizes(b, loc, input), outElt);
  return generic(b, loc, ValueRange{input, rowMax, rowSum}, out, {id, rowMap, rowMap, id},
                 iterators(rank), [&](OpBuilder &nb, Location nloc, ValueRange args) {
                   Value x = castFloat(nb, nloc, args[0], ct);
                   Value e = math::ExpOp::create(nb, nloc,
                                                 arith::SubFOp::create(nb, nloc, x, args[1]));
                   Value p = arith::DivFOp::create(nb, nloc, e, args[2]);
                   yieldValue(nb, nloc, castFloat(nb, nloc, p, outElt));
                 });
}

/// A contraction `init[out] += lhs[lhsDims] * rhs[rhsDims]` over `numDims`
/// loops, the last `numReductions` of which are reductions. Products are
/// accumulated in init's element type.
Value contract(OpBuilder &b, Location loc, Value lhs, Value rhs, Value init, int64_t numDims,
               int64_t numReductions, ArrayRef<int64_t> lhsDims, ArrayRef<int64_t> rhsDims,
               ArrayRef<int64_t> outDims) {
  MLIRContext *ctx = b.getContext();
  Type acc = elementType(init);
  return generic(b, loc, ValueRange{lhs, rhs}, init,
                 {dimsMap(ctx, numDims, lhsDims), dimsMap(ctx, numDims, rhsDims),
                  dimsMap(ctx, numDims, outDims)},
                 iterators(numDims - numReductions, numReductions),
                 [&](OpBuilder &nb, Location nloc, ValueRange args) {
                   Value x = castFloat(nb, nloc, args[0], acc);
                   Value y = castFloat(nb, nloc, args[1], acc);
                   Value p = arith::MulFOp::create(nb, nloc, x, y);
                   yieldValue(nb, nloc, arith::AddFOp::create(nb, nloc, args[2], p));
                 });
}

/// The accumulator of x[..., K] · w[N, K]ᵀ: `sizes` filled with the broadcast bias, or zeros.
Value linearInit(OpBuilder &b, Location loc, ArrayRef<OpFoldResult> sizes, Value bias, Type ct) {
  if (!bias)
    return filledTensor(b, loc, sizes, floatConst(b, loc, ct, 0.0));
  int64_t rank = sizes.size();
  Value empty = emptyTensor(b, loc, sizes, ct);
  return generic(b, loc, bias, empty,
                 {dimsMap(b.getContext(), rank, {rank - 1}), b.getMultiDimIdentityMap(rank)},
                 iterators(rank), [&](OpBuilder &nb, Location nloc, ValueRange args) {
                   yieldValue(nb, nloc, castFloat(nb, nloc, args[0], ct));
                 });
}

/// x[..., K] · w[N, K]ᵀ (+ bias[N]) accumulated in computeType; returns that type.
Value buildLinear(OpBuilder &b, Location loc, Value x, Value w, Value bias) {
  int64_t rank = tensorType(x).getRank();
  SmallVector<OpFoldResult> sizes = tensor::getMixedSizes(b, loc, x);
  sizes.back() = tensor::getMixedSize(b, loc, w, 0);
  Value init = linearInit(b, loc, sizes, bias, computeType(elementType(x)));
  // Loops: the rank-1 leading dims of x, then n, then the reduction k.
  SmallVector<int64_t> lead = range(0, rank - 1);
  SmallVector<int64_t> xDims = lead, outDims = lead;
  xDims.push_back(rank);
  outDims.push_back(rank - 1);
  return contract(b, loc, x, w, init, rank + 1, 1, xDims, {rank - 1, rank}, outDims);
}

/// The f32 weight a quantized value stands for (see DequantizeOp): `byte` is the i8 of the
/// block that holds it, `shift` (i32, 4-bit formats) the bit offset of its nibble, `d`/`m` its
/// block's scale and min (m null unless q4_1).
Value dequantizeValue(OpBuilder &b, Location loc, StringRef format, Value byte, Value shift, Value d,
                      Value m) {
  Type f32 = b.getF32Type(), i32 = b.getI32Type();
  Value q;
  if (format == "q8_0") {
    q = arith::SIToFPOp::create(b, loc, f32, byte);
  } else {
    Value nibble = arith::AndIOp::create(
        b, loc, arith::ShRUIOp::create(b, loc, arith::ExtUIOp::create(b, loc, i32, byte), shift),
        arith::ConstantIntOp::create(b, loc, i32, 15));
    q = format == "q4_0"
            ? arith::SIToFPOp::create(
                  b, loc, f32,
                  arith::SubIOp::create(b, loc, nibble, arith::ConstantIntOp::create(b, loc, i32, 8)))
            : arith::UIToFPOp::create(b, loc, f32, nibble).getResult();
  }
  Value w = arith::MulFOp::create(b, loc, castFloat(b, loc, d, f32), q);
  return m ? arith::AddFOp::create(b, loc, w, castFloat(b, loc, m, f32)).getResult() : w;
}

/// A dequantize's inputs for a generic whose loops split each block into two halves of 16
/// values, and their indexing maps (`n`, `blk`, `half`, `j`: the row, block, half and
/// value-in-half dims): data as [N, K/32, 16] bytes and a constant [0, 4] of nibble shifts per
/// half (4-bit formats), or as [N, K/32, 2, 16] (q8_0); scales; mins (q4_1). The shift is an
/// operand rather than a function of linalg.index so that tiling the reduction keeps it right.
std::pair<SmallVector<Value>, SmallVector<AffineMap>>
quantizedInputs(OpBuilder &b, Location loc, DequantizeOp op, ValueRange operands, int64_t numDims,
                int64_t n, int64_t blk, int64_t half, int64_t j) {
  MLIRContext *ctx = b.getContext();
  SmallVector<Value> inputs;
  SmallVector<AffineMap> maps;
  Value data = operands[0];
  if (op.getFormat() == "q8_0") {
    RankedTensorType t = tensorType(data);
    auto type = RankedTensorType::get({t.getDimSize(0), t.getDimSize(1), 2, 16}, t.getElementType());
    inputs.push_back(tensor::ExpandShapeOp::create(
        b, loc, type, data, SmallVector<ReassociationIndices>{{0}, {1}, {2, 3}}));
    maps.push_back(dimsMap(ctx, numDims, {n, blk, half, j}));
  } else {
    inputs.push_back(data);
    maps.push_back(dimsMap(ctx, numDims, {n, blk, j}));
    auto shiftType = RankedTensorType::get({2}, b.getI32Type());
    inputs.push_back(arith::ConstantOp::create(
        b, loc, shiftType, DenseElementsAttr::get(shiftType, ArrayRef<int32_t>{0, 4})));
    maps.push_back(dimsMap(ctx, numDims, {half}));
  }
  for (Value v : operands.drop_front()) {
    inputs.push_back(v);
    maps.push_back(dimsMap(ctx, numDims, {n, blk}));
  }
  return {inputs, maps};
}

/// The weight of a generic body over quantizedInputs' block arguments `a` (from index 0).
Value dequantizedBodyValue(OpBuilder &b, Location loc, DequantizeOp op, ValueRange a) {
  bool q8 = op.getFormat() == "q8_0";
  Value shift = q8 ? Value() : a[1];
  ValueRange rest = a.drop_front(q8 ? 1 : 2);
  return dequantizeValue(b, loc, op.getFormat(), a[0], shift, rest[0],
                         op.getMins() ? rest[1] : Value());
}

/// A linear over a dequantized weight that a decode step runs: its input has a static number
/// of rows below this, and a static K.
constexpr int64_t kMaxDequantizedLinearRows = 16;

bool fusesDequantize(Value x) {
  RankedTensorType t = tensorType(x);
  if (!t.hasStaticShape())
    return false;
  int64_t rows = 1;
  for (int64_t d : t.getShape().drop_back())
    rows *= d;
  return rows < kMaxDequantizedLinearRows;
}

/// The two halves of `v` along its size-2 dimension `dim`, that dimension dropped.
std::pair<Value, Value> halvesOf(OpBuilder &b, Location loc, Value v, int64_t dim) {
  RankedTensorType t = tensorType(v);
  SmallVector<int64_t> shape(t.getShape());
  shape.erase(shape.begin() + dim);
  auto type = RankedTensorType::get(shape, t.getElementType());
  SmallVector<OpFoldResult> offsets(t.getRank(), b.getIndexAttr(0)), sizes, strides(t.getRank(), b.getIndexAttr(1));
  for (int64_t d : t.getShape())
    sizes.push_back(b.getIndexAttr(d));
  sizes[dim] = b.getIndexAttr(1);
  auto half = [&](int64_t i) {
    offsets[dim] = b.getIndexAttr(i);
    return tensor::ExtractSliceOp::create(b, loc, type, v, offsets, sizes, strides).getResult();
  };
  return {half(0), half(1)};
}

/// x[..., K] · dequantize(w)ᵀ (+ bias) as one reduction over the quantized blocks, so a decode
/// step reads 4.5-8.5 bits per weight instead of 32; x is viewed as [lead.., K/32, 2, 16].
/// 4-bit formats: loops [lead.., n, block, j], each step both nibbles of 16 bytes against both
/// halves of x's block (x's halves are two small copies; the running sum sees one add per 32
/// weights). q8_0: loops [lead.., n, block, half, j] over the weight's bytes as they are (halves
/// of the weight as operands would be copies of it on every call). Returns f32.
Value buildDequantizedLinear(OpBuilder &b, Location loc, Value x, DequantizeOp deq,
                             ValueRange quantized, Value bias) {
  MLIRContext *ctx = b.getContext();
  RankedTensorType xt = tensorType(x);
  int64_t rank = xt.getRank();
  SmallVector<int64_t> xShape(xt.getShape().drop_back());
  xShape.append({xt.getShape().back() / 32, 2, 16});
  SmallVector<ReassociationIndices> reassoc;
  for (int64_t d = 0; d < rank - 1; ++d)
    reassoc.push_back({d});
  reassoc.push_back({rank - 1, rank, rank + 1});
  Value xb = tensor::ExpandShapeOp::create(
      b, loc, RankedTensorType::get(xShape, xt.getElementType()), x, reassoc);
  SmallVector<OpFoldResult> sizes = tensor::getMixedSizes(b, loc, x);
  sizes.back() = tensor::getMixedSize(b, loc, quantized[0], 0);
  Value init = linearInit(b, loc, sizes, bias, b.getF32Type());
  SmallVector<int64_t> lead = range(0, rank - 1), outDims = lead;
  int64_t n = rank - 1, blk = rank;
  outDims.push_back(n);
  StringRef format = deq.getFormat();
  Type f32 = b.getF32Type();
  if (format == "q8_0") {
    int64_t half = rank + 1, j = rank + 2, numDims = rank + 3;
    SmallVector<int64_t> xDims = lead;
    xDims.append({blk, half, j});
    RankedTensorType t = tensorType(quantized[0]);
    auto type = RankedTensorType::get({t.getDimSize(0), t.getDimSize(1), 2, 16}, t.getElementType());
    Value data = tensor::ExpandShapeOp::create(b, loc, type, quantized[0],
                                               SmallVector<ReassociationIndices>{{0}, {1}, {2, 3}});
    return generic(b, loc, ValueRange{xb, data, quantized[1]}, init,
                   {dimsMap(ctx, numDims, xDims), dimsMap(ctx, numDims, {n, blk, half, j}),
                    dimsMap(ctx, numDims, {n, blk}), dimsMap(ctx, numDims, outDims)},
                   iterators(rank, 3), [&](OpBuilder &nb, Location l, ValueRange a) {
                     Value w = dequantizeValue(nb, l, format, a[1], Value(), a[2], Value());
                     Value p = arith::MulFOp::create(nb, l, castFloat(nb, l, a[0], f32), w);
                     yieldValue(nb, l, arith::AddFOp::create(nb, l, a.back(), p));
                   });
  }
  int64_t j = rank + 1, numDims = rank + 2;
  SmallVector<int64_t> xDims = lead;
  xDims.append({blk, j});
  auto [xLo, xHi] = halvesOf(b, loc, xb, rank);
  SmallVector<Value> inputs{xLo, xHi, quantized[0]};
  AffineMap xMap = dimsMap(ctx, numDims, xDims), blockMap = dimsMap(ctx, numDims, {n, blk});
  SmallVector<AffineMap> maps{xMap, xMap, dimsMap(ctx, numDims, {n, blk, j})};
  for (Value v : quantized.drop_front()) {
    inputs.push_back(v);
    maps.push_back(blockMap);
  }
  maps.push_back(dimsMap(ctx, numDims, outDims));
  bool hasMins = static_cast<bool>(deq.getMins());
  return generic(b, loc, inputs, init, maps, iterators(rank, 2),
                 [&](OpBuilder &nb, Location l, ValueRange a) {
                   Type i32 = nb.getI32Type();
                   Value m = hasMins ? a[4] : Value();
                   Value wLo = dequantizeValue(nb, l, format, a[2], arith::ConstantIntOp::create(nb, l, i32, 0),
                                               a[3], m);
                   Value wHi = dequantizeValue(nb, l, format, a[2], arith::ConstantIntOp::create(nb, l, i32, 4),
                                               a[3], m);
                   Value pLo = arith::MulFOp::create(nb, l, castFloat(nb, l, a[0], f32), wLo);
                   Value pHi = arith::MulFOp::create(nb, l, castFloat(nb, l, a[1], f32), wHi);
                   Value p = arith::AddFOp::create(nb, l, pLo, pHi);
                   yieldValue(nb, l, arith::AddFOp::create(nb, l, a.back(), p));
                 });
}

/// A linear whose weight operand is `weight` (as written, so a dequantize producer is visible)
/// and `adapted` (as converted): decode-shaped linears over a dequantize read the quantized
/// blocks directly; everything else multiplies by the (materialized) f32 weight.
Value buildLinearOf(ConversionPatternRewriter &b, Location loc, Value x, Value weight, Value adapted,
                    Value bias) {
  auto deq = weight.getDefiningOp<DequantizeOp>();
  if (deq && fusesDequantize(x) && tensorType(x).getShape().back() % 32 == 0) {
    SmallVector<Value> quantized;
    for (Value v : deq->getOperands())
      quantized.push_back(b.getRemappedValue(v));
    return buildDequantizedLinear(b, loc, x, deq, quantized, bias);
  }
  return buildLinear(b, loc, x, adapted, bias);
}

/// Applies a gated-MLP activation name ("silu", "gelu", "gelu_tanh") to a scalar.
Value applyActivation(OpBuilder &b, Location loc, StringRef name, Value x) {
  Type t = x.getType();
  Value one = floatConst(b, loc, t, 1.0), half = floatConst(b, loc, t, 0.5);
  if (name == "silu") {
    Value negX = arith::NegFOp::create(b, loc, x);
    Value denom = arith::AddFOp::create(b, loc, one, math::ExpOp::create(b, loc, negX));
    return arith::DivFOp::create(b, loc, x, denom);
  }
  Value inner;
  if (name == "gelu") {
    Value scaled = arith::MulFOp::create(b, loc, x, floatConst(b, loc, t, M_SQRT1_2));
    inner = math::ErfOp::create(b, loc, scaled);
  } else {
    Value x3 = arith::MulFOp::create(b, loc, arith::MulFOp::create(b, loc, x, x), x);
    Value poly = arith::AddFOp::create(
        b, loc, x, arith::MulFOp::create(b, loc, x3, floatConst(b, loc, t, 0.044715)));
    Value arg = arith::MulFOp::create(b, loc, poly, floatConst(b, loc, t, std::sqrt(2.0 / M_PI)));
    inner = math::TanhOp::create(b, loc, arg);
  }
  Value halfX = arith::MulFOp::create(b, loc, half, x);
  return arith::MulFOp::create(b, loc, halfX, arith::AddFOp::create(b, loc, one, inner));
}

/// Applies an activation elementwise, computing in computeType.
Value activateTensor(OpBuilder &b, Location loc, Value input, StringRef name) {
  Type elt = elementType(input), ct = computeType(elt);
  return mapElementwise(b, loc, input, elt, [&](OpBuilder &nb, Location nloc, Value x) {
    Value y = applyActivation(nb, nloc, name, castFloat(nb, nloc, x, ct));
    return castFloat(nb, nloc, y, elt);
  });
}

//===----------------------------------------------------------------------===//
// Patterns
//===----------------------------------------------------------------------===//

struct EmbeddingLowering : OpConversionPattern<EmbeddingOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult matchAndRewrite(EmbeddingOp op, OpAdaptor adaptor,
                                ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    Value table = adaptor.getTable(), ids = adaptor.getIndices();
    int64_t idsRank = tensorType(ids).getRank(), rank = idsRank + 1;
    SmallVector<OpFoldResult> sizes = tensor::getMixedSizes(rewriter, loc, ids);
    sizes.push_back(tensor::getMixedSize(rewriter, loc, table, 1));
    Value init = emptyTensor(rewriter, loc, sizes, elementType(table));
    Value result = generic(
        rewriter, loc, ids, init,
        {dimsMap(getContext(), rank, range(0, idsRank)), rewriter.getMultiDimIdentityMap(rank)},
        iterators(rank), [&](OpBuilder &b, Location nloc, ValueRange args) {
          Value row = arith::IndexCastOp::create(b, nloc, b.getIndexType(), args[0]);
          Value col = linalg::IndexOp::create(b, nloc, idsRank);
          Value v = tensor::ExtractOp::create(b, nloc, table, ValueRange{row, col});
          yieldValue(b, nloc, v);
        });
    rewriter.replaceOp(op, result);
    return success();
  }
};

struct LinearLowering : OpConversionPattern<LinearOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult matchAndRewrite(LinearOp op, OpAdaptor adaptor,
                                ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    Value acc = buildLinearOf(rewriter, loc, adaptor.getInput(), op.getWeight(),
                              adaptor.getWeight(), adaptor.getBias());
    rewriter.replaceOp(op, castTensor(rewriter, loc, acc, elementType(op.getInput())));
    return success();
  }
};

/// A dequantize on its own: every block expanded to f32 ([N, K/32, 2, 16], collapsed to [N, K]).
struct DequantizeLowering : OpConversionPattern<DequantizeOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult matchAndRewrite(DequantizeOp op, OpAdaptor adaptor,
                                ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    Value data = adaptor.getData();
    SmallVector<OpFoldResult> sizes{tensor::getMixedSize(rewriter, loc, data, 0),
                                    tensor::getMixedSize(rewriter, loc, data, 1),
                                    rewriter.getIndexAttr(2), rewriter.getIndexAttr(16)};
    Value init = emptyTensor(rewriter, loc, sizes, rewriter.getF32Type());
    auto [inputs, maps] = quantizedInputs(rewriter, loc, op, adaptor.getOperands(), 4, 0, 1, 2, 3);
    maps.push_back(rewriter.getMultiDimIdentityMap(4));
    Value blocks = generic(rewriter, loc, inputs, init, maps, iterators(4),
                           [&](OpBuilder &b, Location l, ValueRange a) {
                             yieldValue(b, l, dequantizedBodyValue(b, l, op, a.drop_back()));
                           });
    rewriter.replaceOpWithNewOp<tensor::CollapseShapeOp>(
        op, op.getType(), blocks, SmallVector<ReassociationIndices>{{0}, {1, 2, 3}});
    return success();
  }
};

struct MatmulLowering : OpConversionPattern<MatmulOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult matchAndRewrite(MatmulOp op, OpAdaptor adaptor,
                                ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    Value lhs = adaptor.getLhs(), rhs = adaptor.getRhs();
    int64_t rank = tensorType(lhs).getRank();
    Type elt = elementType(lhs), ct = computeType(elt);
    bool transposed = op.getTransposeRhs();
    // Result sizes as the op's type has them: a batch dim dynamic in lhs may be static in rhs.
    RankedTensorType resultType = op.getType();
    SmallVector<OpFoldResult> sizes = tensor::getMixedSizes(rewriter, loc, lhs);
    sizes.back() = tensor::getMixedSize(rewriter, loc, rhs, transposed ? rank - 2 : rank - 1);
    for (int64_t i = 0; i < rank; ++i)
      if (!resultType.isDynamicDim(i))
        sizes[i] = rewriter.getIndexAttr(resultType.getDimSize(i));
    Value init = filledTensor(rewriter, loc, sizes, floatConst(rewriter, loc, ct, 0.0));
    // Loops: batch dims, m, n, then the reduction k.
    int64_t m = rank - 2, n = rank - 1, k = rank;
    SmallVector<int64_t> batch = range(0, rank - 2);
    SmallVector<int64_t> lhsDims = batch, rhsDims = batch, outDims = batch;
    lhsDims.append({m, k});
    rhsDims.append(transposed ? SmallVector<int64_t>{n, k} : SmallVector<int64_t>{k, n});
    outDims.append({m, n});
    Value acc = contract(rewriter, loc, lhs, rhs, init, rank + 1, 1, lhsDims, rhsDims, outDims);
    rewriter.replaceOp(op, castTensor(rewriter, loc, acc, elt));
    return success();
  }
};

/// Shared by rms_norm and layer_norm: normalizes rows of the last axis.
/// `stats` are per-row tensors of computeType; `normalize(x, stats..., weight?, bias?)`.
Value normalizeRows(OpBuilder &b, Location loc, Value input, ValueRange stats, Value weight,
                    Value bias, function_ref<Value(OpBuilder &, Location, ValueRange)> fn) {
  int64_t rank = tensorType(input).getRank();
  MLIRContext *ctx = b.getContext();
  AffineMap id = b.getMultiDimIdentityMap(rank);
  SmallVector<Value> inputs{input};
  SmallVector<AffineMap> maps{id};
  for (Value s : stats) {
    inputs.push_back(s);
    maps.push_back(dropDimMap(ctx, rank, rank - 1));
  }
  for (Value p : {weight, bias}) {
    if (!p)
      continue;
    inputs.push_back(p);
    maps.push_back(dimsMap(ctx, rank, {rank - 1}));
  }
  maps.push_back(id);
  Value init = emptyTensor(b, loc, tensor::getMixedSizes(b, loc, input), elementType(input));
  return generic(b, loc, inputs, init, maps, iterators(rank),
                 [&](OpBuilder &nb, Location nloc, ValueRange args) {
                   yieldValue(nb, nloc, fn(nb, nloc, args.drop_back()));
                 });
}

struct RMSNormLowering : OpConversionPattern<RMSNormOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult matchAndRewrite(RMSNormOp op, OpAdaptor adaptor,
                                ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    Value x = adaptor.getInput(), weight = adaptor.getWeight();
    int64_t rank = tensorType(x).getRank();
    Type elt = elementType(x), ct = computeType(elt);
    Value sumSq = reduceAxis(rewriter, loc, x, rank - 1, floatConst(rewriter, loc, ct, 0.0),
                             [](OpBuilder &b, Location l, Value acc, Value v) -> Value {
                               return arith::AddFOp::create(b, l, acc,
                                                            arith::MulFOp::create(b, l, v, v));
                             });
    Value n = dimAsFloat(rewriter, loc, x, rank - 1, ct);
    Value eps = floatConst(rewriter, loc, ct, op.getEps().convertToDouble());
    // Hugging Face order: normalize in the compute type, cast back, then scale.
    Value result = normalizeRows(
        rewriter, loc, x, sumSq, weight, Value(), [&](OpBuilder &b, Location l, ValueRange a) {
          Value mean = arith::DivFOp::create(b, l, a[1], n);
          Value rs = math::RsqrtOp::create(b, l, arith::AddFOp::create(b, l, mean, eps));
          Value y = castFloat(b, l, arith::MulFOp::create(b, l, castFloat(b, l, a[0], ct), rs), elt);
          return weight ? arith::MulFOp::create(b, l, a[2], y).getResult() : y;
        });
    rewriter.replaceOp(op, result);
    return success();
  }
};

struct LayerNormLowering : OpConversionPattern<LayerNormOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult matchAndRewrite(LayerNormOp op, OpAdaptor adaptor,
                                ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    Value x = adaptor.getInput(), weight = adaptor.getWeight(), bias = adaptor.getBias();
    int64_t rank = tensorType(x).getRank();
    Type elt = elementType(x), ct = computeType(elt);
    Value n = dimAsFloat(rewriter, loc, x, rank - 1, ct);
    Value zero = floatConst(rewriter, loc, ct, 0.0);
    Value sum = reduceAxis(rewriter, loc, x, rank - 1, zero,
                           [](OpBuilder &b, Location l, Value acc, Value v) -> Value {
                             return arith::AddFOp::create(b, l, acc, v);
                           });
    Value mean = mapElementwise(rewriter, loc, sum, ct, [&](OpBuilder &b, Location l, Value s) {
      return arith::DivFOp::create(b, l, s, n).getResult();
    });
    // Two-pass variance: sum((x - mean)^2) / n.
    AffineMap id = rewriter.getMultiDimIdentityMap(rank);
    AffineMap rowMap = dropDimMap(getContext(), rank, rank - 1);
    SmallVector<utils::IteratorType> its = iterators(rank - 1, 1);
    Value sqDev = generic(
        rewriter, loc, ValueRange{x, mean},
        filledTensor(rewriter, loc, tensor::getMixedSizes(rewriter, loc, mean), zero),
        {id, rowMap, rowMap}, its, [&](OpBuilder &b, Location l, ValueRange a) {
          Value d = arith::SubFOp::create(b, l, castFloat(b, l, a[0], ct), a[1]);
          yieldValue(
              b, l, arith::AddFOp::create(b, l, a[2], arith::MulFOp::create(b, l, d, d)));
        });
    Value eps = floatConst(rewriter, loc, ct, op.getEps().convertToDouble());
    Value result = normalizeRows(
        rewriter, loc, x, ValueRange{mean, sqDev}, weight, bias,
        [&](OpBuilder &b, Location l, ValueRange a) {
          Value var = arith::DivFOp::create(b, l, a[2], n);
          Value rs = math::RsqrtOp::create(b, l, arith::AddFOp::create(b, l, var, eps));
          Value centered = arith::SubFOp::create(b, l, castFloat(b, l, a[0], ct), a[1]);
          Value y = arith::MulFOp::create(b, l, centered, rs);
          unsigned next = 3;
          if (weight)
            y = arith::MulFOp::create(b, l, y, castFloat(b, l, a[next++], ct));
          if (bias)
            y = arith::AddFOp::create(b, l, y, castFloat(b, l, a[next++], ct));
          return castFloat(b, l, y, elt);
        });
    rewriter.replaceOp(op, result);
    return success();
  }
};

struct RoPELowering : OpConversionPattern<RoPEOp> {
  using OpConversionPattern::OpConversionPattern;

  /// inv_freq[i] = 1 / theta^(2i / rotary_dim), in f32 as Hugging Face computes it.
  static Value invFreqConstant(OpBuilder &b, Location loc, double theta, int64_t rotaryDim) {
    SmallVector<float> values;
    for (int64_t i = 0; i < rotaryDim; i += 2) {
      float exponent = static_cast<float>(i) / static_cast<float>(rotaryDim);
      values.push_back(1.0f / std::pow(static_cast<float>(theta), exponent));
    }
    auto type = RankedTensorType::get({rotaryDim / 2}, b.getF32Type());
    return arith::ConstantOp::create(b, loc, type,
                                     DenseElementsAttr::get(type, ArrayRef<float>(values)));
  }

  /// [.., d] -> [.., 2, d/2]: the two halves of the features, as a view.
  static Value splitHalves(OpBuilder &b, Location loc, Value t, int64_t half) {
    RankedTensorType type = tensorType(t);
    int64_t rank = type.getRank();
    SmallVector<int64_t> shape(type.getShape().drop_back());
    shape.append({2, half});
    SmallVector<OpFoldResult> sizes = tensor::getMixedSizes(b, loc, t);
    sizes.back() = b.getIndexAttr(2);
    sizes.push_back(b.getIndexAttr(half));
    SmallVector<ReassociationIndices> reassociation;
    for (int64_t i = 0; i < rank - 1; ++i)
      reassociation.push_back({i});
    reassociation.push_back({rank - 1, rank});
    return tensor::ExpandShapeOp::create(b, loc, type.clone(shape), t, reassociation, sizes);
  }

  /// Full rotary (rotary_dim == head_dim): y[.., t, f] over the features viewed as halves [.., 2, half],
  /// x * cos + rotate_half(x) * sin, where rotate_half(x)[.., 0, f] = -x[.., 1, f] and
  /// rotate_half(x)[.., 1, f] = x[.., 0, f]. Both halves are read through indexing maps with a constant
  /// half index, not a tensor.extract, so a producer of x (split_heads' transpose) fuses into the
  /// rotation. Loops (t, b, h, s, f): the half index first, so that the GPU grid maps heads, positions
  /// and features to blocks and threads and each thread does both halves.
  Value rotateHalves(OpBuilder &b, Location loc, Value x, Value cosTable, Value sinTable,
                     int64_t posRank, int64_t half) const {
    MLIRContext *ctx = getContext();
    RankedTensorType type = tensorType(x);
    Type elt = type.getElementType();
    auto d = [&](unsigned i) { return getAffineDimExpr(i, ctx); };
    auto map = [&](ArrayRef<AffineExpr> exprs) { return AffineMap::get(5, 0, exprs, ctx); };
    AffineMap tableMap = posRank == 1 ? map({d(3), d(0), d(4)}) : map({d(1), d(3), d(0), d(4)});
    AffineMap out = map({d(1), d(2), d(3), d(0), d(4)});
    Value halves = splitHalves(b, loc, x, half);
    SmallVector<OpFoldResult> sizes = tensor::getMixedSizes(b, loc, halves);
    Value rotated = generic(
        b, loc,
        ValueRange{halves, halves, splitHalves(b, loc, cosTable, half), splitHalves(b, loc, sinTable, half)},
        emptyTensor(b, loc, sizes, elt),
        {map({d(1), d(2), d(3), getAffineConstantExpr(0, ctx), d(4)}),
         map({d(1), d(2), d(3), getAffineConstantExpr(1, ctx), d(4)}), tableMap, tableMap, out},
        iterators(5), [&](OpBuilder &nb, Location l, ValueRange a) {
          Value first = arith::CmpIOp::create(nb, l, arith::CmpIPredicate::eq,
                                              linalg::IndexOp::create(nb, l, 0),
                                              arith::ConstantIndexOp::create(nb, l, 0));
          Value self = arith::SelectOp::create(nb, l, first, a[0], a[1]);
          Value signedPartner = arith::SelectOp::create(
              nb, l, first, arith::NegFOp::create(nb, l, a[1]), a[0]);
          Value y = arith::AddFOp::create(nb, l, arith::MulFOp::create(nb, l, self, a[2]),
                                          arith::MulFOp::create(nb, l, signedPartner, a[3]));
          yieldValue(nb, l, y);
        });
    return tensor::CollapseShapeOp::create(b, loc, type, rotated,
                                           SmallVector<ReassociationIndices>{{0}, {1}, {2}, {3, 4}});
  }

  /// Partial rotary (rotary_dim < head_dim, or head_dim dynamic): the partner feature d +- rotary_dim/2
  /// is read with a tensor.extract (d itself past rotary_dim, where sin is 0), and the features past
  /// rotary_dim pass through.
  Value rotatePartial(OpBuilder &b, Location loc, Value x, Value cosTable, Value sinTable,
                      int64_t posRank, int64_t rotaryDim) const {
    Type elt = elementType(x);
    AffineMap tableMap = posRank == 1 ? dimsMap(getContext(), 4, {2, 3}) : dimsMap(getContext(), 4, {0, 2, 3});
    AffineMap id = b.getMultiDimIdentityMap(4);
    Value init = emptyTensor(b, loc, tensor::getMixedSizes(b, loc, x), elt);
    return generic(
        b, loc, ValueRange{x, cosTable, sinTable}, init, {id, tableMap, tableMap, id}, iterators(4),
        [&](OpBuilder &nb, Location l, ValueRange a) {
          Value idx[4];
          for (int i = 0; i < 4; ++i)
            idx[i] = linalg::IndexOp::create(nb, l, i);
          Value d = idx[3];
          auto cIdx = [&](int64_t v) { return arith::ConstantIndexOp::create(nb, l, v); };
          Value half = cIdx(rotaryDim / 2);
          Value firstHalf = arith::CmpIOp::create(nb, l, arith::CmpIPredicate::ult, d, half);
          Value rotated = arith::CmpIOp::create(nb, l, arith::CmpIPredicate::ult, d, cIdx(rotaryDim));
          Value partnerIdx = arith::SelectOp::create(
              nb, l, firstHalf, arith::AddIOp::create(nb, l, d, half),
              arith::SelectOp::create(nb, l, rotated, arith::SubIOp::create(nb, l, d, half), d));
          Value partner = tensor::ExtractOp::create(
              nb, l, x, ValueRange{idx[0], idx[1], idx[2], partnerIdx});
          Value signedPartner = arith::SelectOp::create(
              nb, l, firstHalf, arith::NegFOp::create(nb, l, partner), partner);
          Value y = arith::AddFOp::create(nb, l, arith::MulFOp::create(nb, l, a[0], a[1]),
                                          arith::MulFOp::create(nb, l, signedPartner, a[2]));
          yieldValue(nb, l, arith::SelectOp::create(nb, l, rotated, y, a[0]));
        });
  }

  LogicalResult matchAndRewrite(RoPEOp op, OpAdaptor adaptor,
                                ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    Value x = adaptor.getInput(), positions = adaptor.getPositions();
    Type elt = elementType(x);
    Type freqType = computeType(elt);
    int64_t rotaryDim = op.getRotaryDimOrHeadDim();
    double scaling = op.getAttentionScaling().convertToDouble();
    Value invFreq = adaptor.getInvFreq();
    if (!invFreq)
      invFreq = invFreqConstant(rewriter, loc, op.getTheta().convertToDouble(), rotaryDim);
    // cos and sin of every (position, feature) angle, in a table of their own: [.., s, d] with the
    // positions' shape ([s] or [b, s]) and head_dim features (cos 1, sin 0 past rotary_dim). The
    // tables depend on the positions only, so every RoPE of an entry point (q and k of every
    // layer) computes the same ones and CSE keeps one: sin/cos run once per position and
    // feature instead of once per head, per layer.
    RankedTensorType posType = tensorType(positions);
    int64_t posRank = posType.getRank();
    SmallVector<OpFoldResult> tableSizes = tensor::getMixedSizes(rewriter, loc, positions);
    tableSizes.push_back(tensor::getMixedSize(rewriter, loc, x, 3));
    AffineMap tableId = rewriter.getMultiDimIdentityMap(posRank + 1);
    AffineMap posOfTable = AffineMap::getMultiDimIdentityMap(posRank + 1, getContext()).getMajorSubMap(posRank);
    auto table = [&](bool isCos) {
      return generic(
          rewriter, loc, ValueRange{positions}, emptyTensor(rewriter, loc, tableSizes, elt),
          {posOfTable, tableId}, iterators(posRank + 1), [&](OpBuilder &b, Location l, ValueRange a) {
            Value d = linalg::IndexOp::create(b, l, posRank);
            Value half = arith::ConstantIndexOp::create(b, l, rotaryDim / 2);
            Value rotated = arith::CmpIOp::create(b, l, arith::CmpIPredicate::ult, d,
                                                  arith::ConstantIndexOp::create(b, l, rotaryDim));
            // Pass-through features (d >= rotary_dim) compute a discarded value at a safe index.
            Value freqIdx = arith::RemUIOp::create(b, l, d, half);
            Value freq = castFloat(b, l, tensor::ExtractOp::create(b, l, invFreq, freqIdx), freqType);
            Value angle = arith::MulFOp::create(b, l, arith::SIToFPOp::create(b, l, freqType, a[0]), freq);
            Value value = isCos ? math::CosOp::create(b, l, angle).getResult()
                                : math::SinOp::create(b, l, angle).getResult();
            if (scaling != 1.0) // YaRN: cos and sin times the attention factor, in f32 as HF does
              value = arith::MulFOp::create(b, l, value, floatConst(b, l, freqType, scaling));
            yieldValue(b, l, arith::SelectOp::create(b, l, rotated, castFloat(b, l, value, elt),
                                                     floatConst(b, l, elt, isCos ? 1.0 : 0.0)));
          });
    };
    Value cosTable = table(true), sinTable = table(false);
    Value result = tensorType(x).getDimSize(3) == rotaryDim
                       ? rotateHalves(rewriter, loc, x, cosTable, sinTable, posRank, rotaryDim / 2)
                       : rotatePartial(rewriter, loc, x, cosTable, sinTable, posRank, rotaryDim);
    rewriter.replaceOp(op, result);
    return success();
  }
};

/// [b, H, s, d] -> [b, Hkv, G, s, d] (query head h = kv_head * G + g).
Value splitGroups(OpBuilder &b, Location loc, Value t, int64_t kvHeads, int64_t group) {
  RankedTensorType type = tensorType(t);
  SmallVector<OpFoldResult> sizes = tensor::getMixedSizes(b, loc, t);
  SmallVector<OpFoldResult> outSizes{sizes[0], b.getIndexAttr(kvHeads), b.getIndexAttr(group),
                                     sizes[2], sizes[3]};
  if (ShapedType::isDynamic(kvHeads))
    outSizes[1] = sizes[1];
  SmallVector<int64_t> shape{type.getDimSize(0), kvHeads, group, type.getDimSize(2),
                             type.getDimSize(3)};
  auto resultType = RankedTensorType::get(shape, type.getElementType());
  return tensor::ExpandShapeOp::create(b, loc, resultType, t,
                                       SmallVector<ReassociationIndices>{{0}, {1, 2}, {3}, {4}},
                                       outSizes);
}

/// The attention scale: the op's, else 1/sqrt(head_dim) (the verifier requires an explicit scale
/// when head_dim is dynamic).
double attentionScale(AttentionOp op, int64_t headDim) {
  if (std::optional<APFloat> s = op.getScale())
    return s->convertToDouble();
  return 1.0 / std::sqrt(static_cast<double>(headDim));
}

struct AttentionLowering : OpConversionPattern<AttentionOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult matchAndRewrite(AttentionOp op, OpAdaptor adaptor,
                                ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    MLIRContext *ctx = getContext();
    Value q = adaptor.getQuery(), k = adaptor.getKey(), v = adaptor.getValue();
    Value mask = adaptor.getMask(), offset = adaptor.getOffset();
    RankedTensorType qType = tensorType(q);
    Type elt = qType.getElementType(), ct = computeType(elt);
    int64_t heads = qType.getDimSize(1), kvHeads = tensorType(k).getDimSize(1);
    int64_t group = ShapedType::isDynamic(heads) ? 1 : heads / kvHeads;
    int64_t headDim = qType.getDimSize(3);
    double scale = attentionScale(op, headDim);

    // Causal attention over a key sequence that may extend past the last query (a KV cache):
    // those keys never contribute, so they are not read at all. K and V are sliced to
    // min(kv_len, offset + q_len) rows, a runtime bound, and the cost follows the filled part of
    // the cache rather than its capacity. (Not with a mask, whose key axis would need slicing too.)
    bool causal = op.getCausal();
    int64_t qLen = qType.getDimSize(2), kvLen = tensorType(k).getDimSize(2);
    std::optional<int64_t> constOffset =
        offset ? getConstantIntValue(offset) : std::optional<int64_t>(0);
    bool keysPastQueries = !constOffset || ShapedType::isDynamic(qLen) ||
                           ShapedType::isDynamic(kvLen) || kvLen > *constOffset + qLen;
    if (causal && keysPastQueries && !mask) {
      Value limit = tensor::DimOp::create(rewriter, loc, q, 2);
      if (offset)
        limit = arith::AddIOp::create(rewriter, loc, limit, offset);
      Value rows = arith::MinUIOp::create(rewriter, loc, limit,
                                          tensor::DimOp::create(rewriter, loc, k, 2));
      auto firstRows = [&](Value t) -> Value {
        SmallVector<OpFoldResult> sizes = tensor::getMixedSizes(rewriter, loc, t);
        sizes[2] = rows;
        SmallVector<OpFoldResult> zeros(4, rewriter.getIndexAttr(0)), ones(4, rewriter.getIndexAttr(1));
        return tensor::ExtractSliceOp::create(rewriter, loc, t, zeros, sizes, ones);
      };
      k = firstRows(k);
      v = firstRows(v);
      keysPastQueries = false;
    }

    // Loops of the score computation: (b, h, g, i, j) + reduction d.
    Value q5 = splitGroups(rewriter, loc, q, kvHeads, group);
    SmallVector<OpFoldResult> qSizes = tensor::getMixedSizes(rewriter, loc, q5);
    SmallVector<OpFoldResult> scoreSizes{qSizes[0], qSizes[1], qSizes[2], qSizes[3],
                                         tensor::getMixedSize(rewriter, loc, k, 2)};
    Value zero = floatConst(rewriter, loc, ct, 0.0);
    Value scores = contract(rewriter, loc, q5, k, filledTensor(rewriter, loc, scoreSizes, zero),
                            6, 1, {0, 1, 2, 3, 5}, {0, 1, 4, 5}, {0, 1, 2, 3, 4});

    // Scale, mask and causal bound in one elementwise op.
    SmallVector<Value> inputs{scores};
    AffineMap id5 = rewriter.getMultiDimIdentityMap(5);
    SmallVector<AffineMap> maps{id5};
    if (mask) {
      RankedTensorType maskType = tensorType(mask);
      Value mask5 = maskType.getDimSize(1) == 1 && heads != 1
                        ? tensor::ExpandShapeOp::create(
                              rewriter, loc,
                              RankedTensorType::get({maskType.getDimSize(0), 1, 1,
                                                     maskType.getDimSize(2),
                                                     maskType.getDimSize(3)},
                                                    maskType.getElementType()),
                              mask, SmallVector<ReassociationIndices>{{0}, {1, 2}, {3}, {4}},
                              SmallVector<OpFoldResult>{
                                  tensor::getMixedSize(rewriter, loc, mask, 0),
                                  rewriter.getIndexAttr(1), rewriter.getIndexAttr(1),
                                  tensor::getMixedSize(rewriter, loc, mask, 2),
                                  tensor::getMixedSize(rewriter, loc, mask, 3)})
                              .getResult()
                        : splitGroups(rewriter, loc, mask, kvHeads, group);
      // Broadcast (size-1) mask dims read index 0.
      RankedTensorType m5 = tensorType(mask5);
      int64_t full[5] = {qType.getDimSize(0), kvHeads, group, qType.getDimSize(2),
                         tensorType(k).getDimSize(2)};
      SmallVector<AffineExpr> exprs;
      for (int64_t i = 0; i < 5; ++i)
        exprs.push_back(m5.getDimSize(i) == 1 && full[i] != 1 ? getAffineConstantExpr(0, ctx)
                                                              : getAffineDimExpr(i, ctx));
      inputs.push_back(mask5);
      maps.push_back(AffineMap::get(5, 0, exprs, ctx));
    }
    maps.push_back(id5);
    Value scaleV = floatConst(rewriter, loc, ct, scale);
    Value ninf = negInf(rewriter, loc, ct);
    // Key j is in the future of query row i when j > offset + i.
    auto isFuture = [&](OpBuilder &b, Location l, Value i, Value j) -> Value {
      Value limit = offset ? arith::AddIOp::create(b, l, i, offset).getResult() : i;
      return arith::CmpIOp::create(b, l, arith::CmpIPredicate::ugt, j, limit);
    };
    Value masked = generic(
        rewriter, loc, inputs, emptyTensor(rewriter, loc, scoreSizes, ct), maps, iterators(5),
        [&](OpBuilder &b, Location l, ValueRange a) {
          Value s = arith::MulFOp::create(b, l, a[0], scaleV);
          if (mask)
            s = arith::AddFOp::create(b, l, s, castFloat(b, l, a[1], ct));
          if (causal) {
            Value i = linalg::IndexOp::create(b, l, 3), j = linalg::IndexOp::create(b, l, 4);
            s = arith::SelectOp::create(b, l, isFuture(b, l, i, j), ninf, s);
          }
          yieldValue(b, l, s);
        });
    Value probs = buildSoftmax(rewriter, loc, masked, 4, ct);

    // out[b, h, g, i, e] = sum_j probs[b, h, g, i, j] * v[b, h, j, e]. With `causal`, keys past
    // the last query position are skipped rather than weighted by 0: 0 * v is NaN where an
    // unwritten cache row holds NaN or inf, and such rows must never reach the result. When no
    // key can lie past it (a static kv_len <= constant offset + q_len, e.g. a prefill without a
    // cache, or K and V sliced above) the product stays a plain contraction, which GEMM
    // schedules recognize.
    SmallVector<OpFoldResult> outSizes{qSizes[0], qSizes[1], qSizes[2], qSizes[3],
                                       tensor::getMixedSize(rewriter, loc, v, 3)};
    Value outInit = filledTensor(rewriter, loc, outSizes, zero);
    Value out5;
    if (!causal || !keysPastQueries) {
      out5 = contract(rewriter, loc, probs, v, outInit, 6, 1, {0, 1, 2, 3, 5}, {0, 1, 5, 4},
                      {0, 1, 2, 3, 4});
    } else {
      out5 = generic(rewriter, loc, ValueRange{probs, v}, outInit,
                     {dimsMap(ctx, 6, {0, 1, 2, 3, 5}), dimsMap(ctx, 6, {0, 1, 5, 4}),
                      dimsMap(ctx, 6, {0, 1, 2, 3, 4})},
                     iterators(5, 1), [&](OpBuilder &b, Location l, ValueRange a) {
                       Value p = arith::MulFOp::create(b, l, a[0], castFloat(b, l, a[1], ct));
                       Value sum = arith::AddFOp::create(b, l, a[2], p);
                       Value i = linalg::IndexOp::create(b, l, 3),
                             j = linalg::IndexOp::create(b, l, 5);
                       yieldValue(b, l,
                                  arith::SelectOp::create(b, l, isFuture(b, l, i, j), a[2], sum));
                     });
    }
    out5 = castTensor(rewriter, loc, out5, elt);
    Value out = tensor::CollapseShapeOp::create(
        rewriter, loc, op.getType(), out5,
        SmallVector<ReassociationIndices>{{0}, {1, 2}, {3}, {4}});
    rewriter.replaceOp(op, out);
    return success();
  }
};

/// Flash attention (the CPU pipeline's form, `flash-kv-tile` > 0): f32 attention without a mask
/// becomes one kernel, an `scf.forall` over (batch, kv head, query tile) marked
/// `kiln.kernel_class = "attention"`, that never materializes the scores. A workgroup takes the
/// queries of all G heads that share its kv head (GQA: each key and value tile is read once for
/// G heads), `rows` = G x `positions` query rows, and walks the keys in tiles of `kvTile`
/// carrying the running row maximum m, row sum l and unnormalized output acc (online softmax):
///
///   S = Q Kᵀ * scale (masked: -inf)   m' = max(m, rowmax S)   P = exp(S - m')
///   l' = l e^(m - m') + rowsum P       acc' = acc e^(m - m') + P V        out = acc / l
///
/// Causal attention stops at the last key the tile's last query sees, so fully masked tiles are
/// never computed. Key tiles are full, static-shaped tiles, then at most one tail tile padded with
/// zeros and masked; query tiles past the end are padded too and never written. Every linalg op
/// of the tile body is tagged `kiln.flash` (queries, keys, scores, mask, row_max, rescale, probs,
/// row_sum, sum_update, acc_scale, pv, normalize, init) for the attention schedule of the `tiled`
/// stage, and the forall carries the tile shape (`kiln.flash_tile` = [rows, keys, head_dim]), the
/// scale (`kiln.flash_scale`), a constant offset (`kiln.flash_offset`) and, for causal attention,
/// `kiln.flash_causal`.
/// A decode step is the same kernel with G rows (one position per tile): 4-5x faster than the
/// decomposed form at 512 cached keys, although G-lane vectors fill little of a register.
/// When the heads are merged next (a prefill's o projection input), the kernel writes its output
/// position-major ([b, s, kv heads, group, d], `kiln.flash_position_major`) and the op's result is
/// a transpose of that, which MergeHeadsLowering cancels: no transpose kernel for merge_heads.
struct FlashAttentionLowering : OpConversionPattern<AttentionOp> {
  FlashAttentionLowering(MLIRContext *ctx, int64_t kvTile, int64_t queryRows)
      : OpConversionPattern(ctx, /*benefit=*/2), kvTile(kvTile), queryRows(queryRows) {}

  int64_t kvTile, queryRows;

  /// Query positions per tile: all of them when G x q_len fits in `queryRows`; else rows
  /// (G x positions) in whole 16-lane vectors, the most within `queryRows` or failing that the
  /// fewest within twice that (GQA groups of 3: 48 rows); else the most rows within `queryRows`
  /// that are a multiple of 8; at least one position.
  int64_t positionsPerTile(int64_t qLen, int64_t group) const {
    if (!ShapedType::isDynamic(qLen) && qLen * group <= queryRows)
      return qLen;
    int64_t most = std::max<int64_t>(1, queryRows / group);
    for (int64_t t = most; t >= 1; --t)
      if ((group * t) % 16 == 0)
        return t;
    for (int64_t t = most + 1; group * t <= 2 * queryRows; ++t)
      if ((group * t) % 16 == 0)
        return t;
    for (int64_t t = most; t >= 1; --t)
      if ((group * t) % 8 == 0)
        return t;
    return most;
  }

  LogicalResult matchAndRewrite(AttentionOp op, OpAdaptor adaptor,
                                ConversionPatternRewriter &rewriter) const override {
    Value q = adaptor.getQuery(), k = adaptor.getKey(), v = adaptor.getValue();
    Value offset = adaptor.getOffset();
    RankedTensorType qType = tensorType(q), kType = tensorType(k), vType = tensorType(v);
    Type f32 = rewriter.getF32Type();
    if (kvTile <= 0 || adaptor.getMask() || qType.getElementType() != f32 ||
        kType.getElementType() != f32 || vType.getElementType() != f32)
      return failure();
    int64_t heads = qType.getDimSize(1), kvHeads = kType.getDimSize(1), headDim = qType.getDimSize(3);
    int64_t qLen = qType.getDimSize(2);
    if (ShapedType::isDynamic(heads) || ShapedType::isDynamic(kvHeads) ||
        ShapedType::isDynamic(headDim) || vType.getDimSize(3) != headDim || heads % kvHeads != 0 ||
        qLen == 0)
      return failure();
    int64_t group = heads / kvHeads;
    int64_t positions = positionsPerTile(qLen, group), rows = group * positions;
    // When the heads are merged next ([b, h, s, d] -> [b, s, h*d], the o projection's input), the
    // kernel writes its output position-major, [b, s, kv heads, group, d]: the merge is then a
    // reshape instead of a transpose kernel (MergeHeadsLowering). One position needs no transpose.
    bool positionMajor = qLen != 1 && op->hasOneUse() && isa<MergeHeadsOp>(*op->getUsers().begin());
    bool paddedQueries = ShapedType::isDynamic(qLen) || qLen % positions != 0;
    bool causal = op.getCausal();
    double scale = attentionScale(op, headDim);

    Location loc = op.getLoc();
    MLIRContext *ctx = getContext();
    auto idx = [&](OpBuilder &b, int64_t n) -> Value { return arith::ConstantIndexOp::create(b, loc, n); };
    auto tag = [&](Value v, StringRef role) {
      v.getDefiningOp()->setAttr("kiln.flash", StringAttr::get(ctx, role));
      return v;
    };
    auto fill = [&](OpBuilder &b, ArrayRef<int64_t> shape, Value value) {
      return tag(filledTensor(b, loc, getAsIndexOpFoldResult(ctx, shape), value), "init");
    };
    Value zero = floatConst(rewriter, loc, f32, 0.0), ninf = negInf(rewriter, loc, f32);
    Value scaleV = floatConst(rewriter, loc, f32, scale);

    Value q5 = splitGroups(rewriter, loc, q, kvHeads, group);
    SmallVector<OpFoldResult> q5Sizes = tensor::getMixedSizes(rewriter, loc, q5);
    Value out5 = emptyTensor(rewriter, loc,
                             positionMajor ? SmallVector<OpFoldResult>{q5Sizes[0], q5Sizes[3], q5Sizes[1],
                                                                       q5Sizes[2], q5Sizes[4]}
                                           : q5Sizes,
                             f32);
    Value qLenV = tensor::DimOp::create(rewriter, loc, q, 2);
    Value kvLenV = tensor::DimOp::create(rewriter, loc, k, 2);
    Value tiles = arith::CeilDivUIOp::create(rewriter, loc, qLenV, idx(rewriter, positions));
    SmallVector<OpFoldResult> grid{q5Sizes[0], rewriter.getIndexAttr(kvHeads), tiles};
    // Mapped to workgroups, so canonicalization keeps the kernel even where every dim is 1.
    SmallVector<Attribute> workgroups;
    for (int64_t d = static_cast<int64_t>(grid.size()) - 1; d >= 0; --d)
      workgroups.push_back(WorkgroupMappingAttr::get(ctx, d));
    auto forall = scf::ForallOp::create(rewriter, loc, grid, ValueRange{out5},
                                        ArrayAttr::get(ctx, workgroups));
    forall->setAttr("kiln.kernel_class", StringAttr::get(ctx, "attention"));
    // The tile shape, for the schedule: query rows, keys per tile, head_dim.
    forall->setAttr("kiln.flash_tile", rewriter.getDenseI64ArrayAttr({rows, kvTile, headDim}));
    // What the body computes, for targets that write the kernel themselves (GPU): the scores'
    // scale and whether keys past a query's position are masked.
    forall->setAttr("kiln.flash_scale", rewriter.getF64FloatAttr(scale));
    if (causal)
      forall->setAttr("kiln.flash_causal", rewriter.getUnitAttr());
    // A constant offset is folded into the body; a runtime one stays the kernel's index argument.
    if (std::optional<int64_t> constOffset = offset ? getConstantIntValue(offset) : std::optional<int64_t>(0))
      forall->setAttr("kiln.flash_offset", rewriter.getI64IntegerAttr(*constOffset));
    // The output's layout: [b, s, kv heads, group, d] rather than [b, kv heads, group, s, d].
    if (positionMajor)
      forall->setAttr("kiln.flash_position_major", rewriter.getUnitAttr());

    OpBuilder b = OpBuilder::atBlockBegin(forall.getBody());
    Value bI = forall.getInductionVars()[0], hI = forall.getInductionVars()[1];
    Value q0 = arith::MulIOp::create(b, loc, forall.getInductionVars()[2], idx(b, positions));
    // Valid query positions in this tile.
    OpFoldResult qValid = b.getIndexAttr(positions);
    if (paddedQueries)
      qValid = arith::MinUIOp::create(b, loc, idx(b, positions),
                                      arith::SubIOp::create(b, loc, qLenV, q0)).getResult();
    auto one = b.getIndexAttr(1), zeroIdx = b.getIndexAttr(0);
    SmallVector<OpFoldResult> ones(5, one);
    Value qTile = tensor::ExtractSliceOp::create(
        b, loc, RankedTensorType::get({group, paddedQueries ? ShapedType::kDynamic : positions, headDim}, f32),
        q5, SmallVector<OpFoldResult>{bI, hI, zeroIdx, q0, zeroIdx},
        SmallVector<OpFoldResult>{one, one, b.getIndexAttr(group), qValid, b.getIndexAttr(headDim)}, ones);
    if (paddedQueries)
      qTile = tensor::InsertSliceOp::create(
          b, loc, qTile, fill(b, {group, positions, headDim}, zero), SmallVector<OpFoldResult>(3, zeroIdx),
          SmallVector<OpFoldResult>{b.getIndexAttr(group), qValid, b.getIndexAttr(headDim)},
          SmallVector<OpFoldResult>(3, one));
    qTile = tensor::CollapseShapeOp::create(b, loc, RankedTensorType::get({rows, headDim}, f32), qTile,
                                            SmallVector<ReassociationIndices>{{0, 1}, {2}});
    auto transposed = [&](OpBuilder &b, Value t, int64_t r, int64_t c, StringRef role) {
      return tag(linalg::TransposeOp::create(b, loc, t,
                                             emptyTensor(b, loc, getAsIndexOpFoldResult(ctx, {c, r}), f32),
                                             ArrayRef<int64_t>{1, 0})->getResult(0),
                 role);
    };
    Value queriesT = transposed(b, qTile, rows, headDim, "queries");

    // Keys past the last one this tile's last (valid) query sees are never read: they may be
    // unwritten cache rows (NaN, inf), and 0 * NaN would reach the result.
    Value kvEnd = kvLenV;
    if (causal) {
      Value last = arith::AddIOp::create(b, loc, q0, getValueOrCreateConstantIndexOp(b, loc, qValid));
      if (offset)
        last = arith::AddIOp::create(b, loc, last, offset);
      kvEnd = arith::MinUIOp::create(b, loc, last, kvLenV);
    }
    Value fullEnd = arith::MulIOp::create(
        b, loc, arith::DivUIOp::create(b, loc, kvEnd, idx(b, kvTile)), idx(b, kvTile));

    // Tiles are [keys, rows] (Sᵀ, Pᵀ): both products are then outer products of contiguous rows
    // (Kᵀ[d, :] with Qᵀ[d, :], Pᵀ[j, :] with V[j, :]) and the row max and sum reduce over the
    // outer dimension, elementwise across vectors.
    AffineMap id2 = AffineMap::getMultiDimIdentityMap(2, ctx), row2 = dimsMap(ctx, 2, {0}),
              col2 = dimsMap(ctx, 2, {1});
    AffineMap id1 = AffineMap::getMultiDimIdentityMap(1, ctx);
    // One key tile: K and V rows [j0, j0 + kvTile) as [kvTile, headDim] (zero-padded in the tail).
    auto step = [&](OpBuilder &b, Value kTile, Value vTile, Value j0, ValueRange carried,
                    bool tail) -> SmallVector<Value> {
      Value m = carried[0], l = carried[1], acc = carried[2];
      Value keysT = transposed(b, kTile, kvTile, headDim, "keys");
      // Sᵀ[j, i] = sum_d Kᵀ[d, j] Qᵀ[d, i]
      Value scores = tag(contract(b, loc, keysT, queriesT, fill(b, {kvTile, rows}, zero), 3, 1, {2, 0}, {2, 1},
                                  {0, 1}),
                         "scores");
      // Scale; -inf where key j0 + j is padding or in the future of query q0 + i mod positions.
      scores = tag(generic(b, loc, ValueRange{}, scores, {id2}, iterators(2),
                           [&](OpBuilder &nb, Location l, ValueRange a) {
                             Value s = arith::MulFOp::create(nb, l, a[0], scaleV);
                             Value key = arith::AddIOp::create(nb, l, j0, linalg::IndexOp::create(nb, l, 0));
                             Value masked;
                             if (tail)
                               masked = arith::CmpIOp::create(nb, l, arith::CmpIPredicate::uge, key, kvEnd);
                             if (causal) {
                               Value pos = linalg::IndexOp::create(nb, l, 1);
                               if (group > 1)
                                 pos = arith::RemUIOp::create(nb, l, pos, idx(nb, positions));
                               pos = arith::AddIOp::create(nb, l, pos, q0);
                               if (offset)
                                 pos = arith::AddIOp::create(nb, l, pos, offset);
                               Value future = arith::CmpIOp::create(nb, l, arith::CmpIPredicate::ugt, key, pos);
                               masked = masked ? arith::OrIOp::create(nb, l, masked, future).getResult() : future;
                             }
                             yieldValue(nb, l, masked ? arith::SelectOp::create(nb, l, masked, ninf, s).getResult() : s);
                           }),
                   "mask");
      auto columnReduction = SmallVector<utils::IteratorType>{utils::IteratorType::reduction,
                                                              utils::IteratorType::parallel};
      Value tileMax = tag(generic(b, loc, scores, fill(b, {rows}, ninf), {id2, col2}, columnReduction,
                                  [&](OpBuilder &nb, Location l, ValueRange a) {
                                    yieldValue(nb, l, arith::MaximumFOp::create(nb, l, a[1], a[0]));
                                  }),
                          "row_max");
      // m' = max(m, rowmax S), written over m (every carried value is updated in place), and
      // alpha = e^(m - m').
      auto rescale = linalg::GenericOp::create(
          b, loc, TypeRange{m.getType(), m.getType()}, ValueRange{tileMax},
          ValueRange{m, emptyTensor(b, loc, getAsIndexOpFoldResult(ctx, {rows}), f32)},
          ArrayRef<AffineMap>{id1, id1, id1}, iterators(1), [&](OpBuilder &nb, Location l, ValueRange a) {
            Value newMax = arith::MaximumFOp::create(nb, l, a[1], a[0]);
            Value alpha = math::ExpOp::create(nb, l, arith::SubFOp::create(nb, l, a[1], newMax));
            linalg::YieldOp::create(nb, l, ValueRange{newMax, alpha});
          });
      rescale->setAttr("kiln.flash", StringAttr::get(ctx, "rescale"));
      Value newMax = rescale.getResult(0), alpha = rescale.getResult(1);
      Value probs = tag(generic(b, loc, newMax, scores, {col2, id2}, iterators(2),
                                [&](OpBuilder &nb, Location l, ValueRange a) {
                                  yieldValue(nb, l, math::ExpOp::create(nb, l, arith::SubFOp::create(nb, l, a[1], a[0])));
                                }),
                        "probs");
      Value tileSum = tag(generic(b, loc, probs, fill(b, {rows}, zero), {id2, col2}, columnReduction,
                                  [&](OpBuilder &nb, Location l, ValueRange a) {
                                    yieldValue(nb, l, arith::AddFOp::create(nb, l, a[1], a[0]));
                                  }),
                          "row_sum");
      Value newSum = tag(generic(b, loc, ValueRange{alpha, tileSum}, l, {id1, id1, id1}, iterators(1),
                                 [&](OpBuilder &nb, Location lc, ValueRange a) {
                                   yieldValue(nb, lc, arith::AddFOp::create(
                                                          nb, lc, arith::MulFOp::create(nb, lc, a[2], a[0]), a[1]));
                                 }),
                         "sum_update");
      Value scaled = tag(generic(b, loc, alpha, acc, {row2, id2}, iterators(2),
                                 [&](OpBuilder &nb, Location l, ValueRange a) {
                                   yieldValue(nb, l, arith::MulFOp::create(nb, l, a[1], a[0]));
                                 }),
                         "acc_scale");
      // acc[i, e] += sum_j Pᵀ[j, i] V[j, e]
      Value newAcc = tag(contract(b, loc, probs, vTile, scaled, 3, 1, {2, 0}, {2, 1}, {0, 1}), "pv");
      return {newMax, newSum, newAcc};
    };

    auto keyTile = [&](OpBuilder &b, Value t, Value j0, OpFoldResult count, bool tail) -> Value {
      Value tile = tensor::ExtractSliceOp::create(
          b, loc, RankedTensorType::get({tail ? ShapedType::kDynamic : kvTile, headDim}, f32), t,
          SmallVector<OpFoldResult>{bI, hI, j0, zeroIdx},
          SmallVector<OpFoldResult>{one, one, count, b.getIndexAttr(headDim)},
          SmallVector<OpFoldResult>(4, one));
      if (!tail)
        return tile;
      return tensor::InsertSliceOp::create(b, loc, tile, fill(b, {kvTile, headDim}, zero),
                                           SmallVector<OpFoldResult>(2, zeroIdx),
                                           SmallVector<OpFoldResult>{count, b.getIndexAttr(headDim)},
                                           SmallVector<OpFoldResult>(2, one));
    };
    SmallVector<Value> carried{fill(b, {rows}, ninf), fill(b, {rows}, zero), fill(b, {rows, headDim}, zero)};
    auto full = scf::ForOp::create(
        b, loc, idx(b, 0), fullEnd, idx(b, kvTile), carried,
        [&](OpBuilder &nb, Location l, Value j0, ValueRange iters) {
          OpFoldResult count = nb.getIndexAttr(kvTile);
          scf::YieldOp::create(nb, l, step(nb, keyTile(nb, k, j0, count, false),
                                           keyTile(nb, v, j0, count, false), j0, iters, false));
        });
    auto tail = scf::ForOp::create(
        b, loc, fullEnd, kvEnd, idx(b, kvTile), full.getResults(),
        [&](OpBuilder &nb, Location l, Value j0, ValueRange iters) {
          OpFoldResult count = arith::SubIOp::create(nb, l, kvEnd, j0).getResult();
          scf::YieldOp::create(nb, l, step(nb, keyTile(nb, k, j0, count, true),
                                           keyTile(nb, v, j0, count, true), j0, iters, true));
        });
    Value acc = tail.getResult(2), sum = tail.getResult(1);
    auto divide = [&](OpBuilder &nb, Location l, ValueRange a) {
      yieldValue(nb, l, arith::DivFOp::create(nb, l, a[1], a[0]));
    };
    Value out;
    if (!positionMajor) {
      out = tag(generic(b, loc, sum, acc, {row2, id2}, iterators(2), divide), "normalize");
      out = tensor::ExpandShapeOp::create(b, loc, RankedTensorType::get({group, positions, headDim}, f32), out,
                                          SmallVector<ReassociationIndices>{{0, 1}, {2}});
    } else {
      // The same divisions, written [positions, group, d] (loops p, g, e).
      Value acc3 = tensor::ExpandShapeOp::create(
          b, loc, RankedTensorType::get({group, positions, headDim}, f32), acc,
          SmallVector<ReassociationIndices>{{0, 1}, {2}});
      Value sum2 = tensor::ExpandShapeOp::create(b, loc, RankedTensorType::get({group, positions}, f32), sum,
                                                 SmallVector<ReassociationIndices>{{0, 1}});
      out = tag(generic(b, loc, ValueRange{sum2, acc3},
                        emptyTensor(b, loc, getAsIndexOpFoldResult(ctx, {positions, group, headDim}), f32),
                        {dimsMap(ctx, 3, {1, 0}), dimsMap(ctx, 3, {1, 0, 2}),
                         AffineMap::getMultiDimIdentityMap(3, ctx)},
                        iterators(3), divide),
                "normalize");
    }
    if (paddedQueries)
      out = tensor::ExtractSliceOp::create(
          b, loc,
          positionMajor ? RankedTensorType::get({ShapedType::kDynamic, group, headDim}, f32)
                        : RankedTensorType::get({group, ShapedType::kDynamic, headDim}, f32),
          out, SmallVector<OpFoldResult>(3, zeroIdx),
          positionMajor ? SmallVector<OpFoldResult>{qValid, b.getIndexAttr(group), b.getIndexAttr(headDim)}
                        : SmallVector<OpFoldResult>{b.getIndexAttr(group), qValid, b.getIndexAttr(headDim)},
          SmallVector<OpFoldResult>(3, one));
    b.setInsertionPointToStart(forall.getTerminator().getBody());
    if (positionMajor)
      tensor::ParallelInsertSliceOp::create(
          b, loc, out, forall.getRegionIterArgs()[0], SmallVector<OpFoldResult>{bI, q0, hI, zeroIdx, zeroIdx},
          SmallVector<OpFoldResult>{one, qValid, one, b.getIndexAttr(group), b.getIndexAttr(headDim)}, ones);
    else
      tensor::ParallelInsertSliceOp::create(
          b, loc, out, forall.getRegionIterArgs()[0], SmallVector<OpFoldResult>{bI, hI, zeroIdx, q0, zeroIdx},
          SmallVector<OpFoldResult>{one, one, b.getIndexAttr(group), qValid, b.getIndexAttr(headDim)}, ones);

    rewriter.setInsertionPointAfter(forall);
    if (!positionMajor) {
      rewriter.replaceOpWithNewOp<tensor::CollapseShapeOp>(
          op, op.getType(), forall.getResult(0), SmallVector<ReassociationIndices>{{0}, {1, 2}, {3}, {4}});
      return success();
    }
    // [b, s, kv heads, group, d] -> [b, s, h, d], seen as the op's [b, h, s, d] through a transpose
    // that the merge of the heads cancels.
    RankedTensorType type = op.getType();
    Value merged = tensor::CollapseShapeOp::create(
        rewriter, loc,
        RankedTensorType::get({type.getDimSize(0), type.getDimSize(2), heads, headDim}, f32),
        forall.getResult(0), SmallVector<ReassociationIndices>{{0}, {1}, {2, 3}, {4}});
    SmallVector<OpFoldResult> sizes = tensor::getMixedSizes(rewriter, loc, merged);
    Value init = emptyTensor(rewriter, loc, {sizes[0], sizes[2], sizes[1], sizes[3]}, f32);
    rewriter.replaceOp(op, linalg::TransposeOp::create(rewriter, loc, merged, init,
                                                       ArrayRef<int64_t>{0, 2, 1, 3})
                               .getResult()[0]);
    return success();
  }
};

struct KVCacheUpdateLowering : OpConversionPattern<KVCacheUpdateOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult matchAndRewrite(KVCacheUpdateOp op, OpAdaptor adaptor,
                                ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    Value update = adaptor.getUpdate();
    SmallVector<OpFoldResult> offsets(4, rewriter.getIndexAttr(0));
    offsets[2] = adaptor.getPosition();
    SmallVector<OpFoldResult> strides(4, rewriter.getIndexAttr(1));
    rewriter.replaceOpWithNewOp<tensor::InsertSliceOp>(
        op, update, adaptor.getCache(), offsets, tensor::getMixedSizes(rewriter, loc, update),
        strides);
    return success();
  }
};

struct SplitHeadsLowering : OpConversionPattern<SplitHeadsOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult matchAndRewrite(SplitHeadsOp op, OpAdaptor adaptor,
                                ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    Value x = adaptor.getInput();
    RankedTensorType result = op.getType();
    int64_t heads = result.getDimSize(1);
    SmallVector<OpFoldResult> sizes = tensor::getMixedSizes(rewriter, loc, x);
    OpFoldResult headDim = rewriter.getIndexAttr(result.getDimSize(3));
    if (result.isDynamicDim(3)) {
      Value features = getValueOrCreateConstantIndexOp(rewriter, loc, sizes[2]);
      headDim = arith::DivUIOp::create(rewriter, loc, features,
                                       arith::ConstantIndexOp::create(rewriter, loc, heads))
                    .getResult();
    }
    if (result.getDimSize(2) == 1) {
      // One position: [b, 1, h*d] and [b, h, 1, d] hold the same elements in the same order, so the
      // split is a reshape (a view once bufferized), not a transpose kernel. [b, 1, h*d] -> [b, h*d]
      // -> [b, h, 1, d].
      auto flatType = RankedTensorType::get({result.getDimSize(0), tensorType(x).getDimSize(2)},
                                            result.getElementType());
      Value flat = tensor::CollapseShapeOp::create(rewriter, loc, flatType, x,
                                                   SmallVector<ReassociationIndices>{{0}, {1, 2}});
      rewriter.replaceOpWithNewOp<tensor::ExpandShapeOp>(
          op, result, flat, SmallVector<ReassociationIndices>{{0}, {1, 2, 3}},
          SmallVector<OpFoldResult>{sizes[0], rewriter.getIndexAttr(heads), rewriter.getIndexAttr(1),
                                    headDim});
      return success();
    }
    auto expandedType = RankedTensorType::get(
        {result.getDimSize(0), result.getDimSize(2), heads, result.getDimSize(3)},
        result.getElementType());
    Value expanded = tensor::ExpandShapeOp::create(
        rewriter, loc, expandedType, x, SmallVector<ReassociationIndices>{{0}, {1}, {2, 3}},
        SmallVector<OpFoldResult>{sizes[0], sizes[1], rewriter.getIndexAttr(heads), headDim});
    SmallVector<OpFoldResult> outSizes{sizes[0], rewriter.getIndexAttr(heads), sizes[1], headDim};
    Value init = emptyTensor(rewriter, loc, outSizes, result.getElementType());
    rewriter.replaceOp(op, linalg::TransposeOp::create(rewriter, loc, expanded, init,
                                                       ArrayRef<int64_t>{0, 2, 1, 3})
                               .getResult()[0]);
    return success();
  }
};

struct MergeHeadsLowering : OpConversionPattern<MergeHeadsOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult matchAndRewrite(MergeHeadsOp op, OpAdaptor adaptor,
                                ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    Value x = adaptor.getInput();
    RankedTensorType type = tensorType(x);
    // A transpose of [b, s, h, d] (flash attention's output, written position-major for this
    // merge): the two transposes cancel and the merge is a reshape of its source.
    if (auto transpose = x.getDefiningOp<linalg::TransposeOp>();
        transpose && transpose.getPermutation() == ArrayRef<int64_t>{0, 2, 1, 3}) {
      rewriter.replaceOpWithNewOp<tensor::CollapseShapeOp>(
          op, op.getType(), transpose.getInput(), SmallVector<ReassociationIndices>{{0}, {1}, {2, 3}});
      return success();
    }
    SmallVector<OpFoldResult> sizes = tensor::getMixedSizes(rewriter, loc, x);
    if (type.getDimSize(2) == 1) {
      // One position: a reshape, as in SplitHeadsLowering. [b, h, 1, d] -> [b, h*d] -> [b, 1, h*d].
      RankedTensorType result = op.getType();
      auto flatType = RankedTensorType::get({result.getDimSize(0), result.getDimSize(2)},
                                            result.getElementType());
      Value flat = tensor::CollapseShapeOp::create(rewriter, loc, flatType, x,
                                                   SmallVector<ReassociationIndices>{{0}, {1, 2, 3}});
      rewriter.replaceOpWithNewOp<tensor::ExpandShapeOp>(
          op, result, flat, SmallVector<ReassociationIndices>{{0}, {1, 2}});
      return success();
    }
    SmallVector<OpFoldResult> tSizes{sizes[0], sizes[2], sizes[1], sizes[3]};
    Value init = emptyTensor(rewriter, loc, tSizes, type.getElementType());
    Value transposed =
        linalg::TransposeOp::create(rewriter, loc, x, init, ArrayRef<int64_t>{0, 2, 1, 3})
            .getResult()[0];
    rewriter.replaceOpWithNewOp<tensor::CollapseShapeOp>(
        op, op.getType(), transposed, SmallVector<ReassociationIndices>{{0}, {1}, {2, 3}});
    return success();
  }
};

struct SoftmaxLowering : OpConversionPattern<SoftmaxOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult matchAndRewrite(SoftmaxOp op, OpAdaptor adaptor,
                                ConversionPatternRewriter &rewriter) const override {
    Value x = adaptor.getInput();
    rewriter.replaceOp(op, buildSoftmax(rewriter, op.getLoc(), x, op.getNormalizedAxis(),
                                        elementType(x)));
    return success();
  }
};

struct SiLULowering : OpConversionPattern<SiLUOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult matchAndRewrite(SiLUOp op, OpAdaptor adaptor,
                                ConversionPatternRewriter &rewriter) const override {
    rewriter.replaceOp(op, activateTensor(rewriter, op.getLoc(), adaptor.getInput(), "silu"));
    return success();
  }
};

struct GeluLowering : OpConversionPattern<GeluOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult matchAndRewrite(GeluOp op, OpAdaptor adaptor,
                                ConversionPatternRewriter &rewriter) const override {
    StringRef act = op.getApproximate() == "tanh" ? "gelu_tanh" : "gelu";
    rewriter.replaceOp(op, activateTensor(rewriter, op.getLoc(), adaptor.getInput(), act));
    return success();
  }
};

struct GatedMLPLowering : OpConversionPattern<GatedMLPOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult matchAndRewrite(GatedMLPOp op, OpAdaptor adaptor,
                                ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    Value x = adaptor.getInput();
    Type elt = elementType(x), ct = computeType(elt);
    Value gate = buildLinearOf(rewriter, loc, x, op.getGateWeight(), adaptor.getGateWeight(), Value());
    Value up = buildLinearOf(rewriter, loc, x, op.getUpWeight(), adaptor.getUpWeight(), Value());
    int64_t rank = tensorType(gate).getRank();
    AffineMap id = rewriter.getMultiDimIdentityMap(rank);
    StringRef act = op.getActivation();
    // The product is rounded to the element type before the down projection, as in eager PyTorch.
    Value hidden = generic(
        rewriter, loc, ValueRange{gate, up},
        emptyTensor(rewriter, loc, tensor::getMixedSizes(rewriter, loc, gate), elt),
        {id, id, id}, iterators(rank), [&](OpBuilder &b, Location l, ValueRange a) {
          Value g = castFloat(b, l, castFloat(b, l, a[0], elt), ct);
          Value u = castFloat(b, l, castFloat(b, l, a[1], elt), ct);
          Value h = arith::MulFOp::create(b, l, applyActivation(b, l, act, g), u);
          yieldValue(b, l, castFloat(b, l, h, elt));
        });
    Value down =
        buildLinearOf(rewriter, loc, hidden, op.getDownWeight(), adaptor.getDownWeight(), Value());
    rewriter.replaceOp(op, castTensor(rewriter, loc, down, elt));
    return success();
  }
};

struct ArgMaxLowering : OpConversionPattern<ArgMaxOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult matchAndRewrite(ArgMaxOp op, OpAdaptor adaptor,
                                ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    Value x = adaptor.getInput();
    int64_t rank = tensorType(x).getRank();
    Type ct = computeType(elementType(x));
    SmallVector<OpFoldResult> sizes = tensor::getMixedSizes(rewriter, loc, x);
    sizes.pop_back();
    Value maxInit = filledTensor(rewriter, loc, sizes, negInf(rewriter, loc, ct));
    Value idxInit = filledTensor(
        rewriter, loc, sizes,
        arith::ConstantOp::create(rewriter, loc, rewriter.getI64IntegerAttr(0)).getResult());
    AffineMap id = rewriter.getMultiDimIdentityMap(rank);
    AffineMap rowMap = dropDimMap(getContext(), rank, rank - 1);
    auto reduction = linalg::GenericOp::create(
        rewriter, loc, TypeRange{maxInit.getType(), idxInit.getType()}, ValueRange{x},
        ValueRange{maxInit, idxInit}, ArrayRef<AffineMap>{id, rowMap, rowMap},
        iterators(rank - 1, 1), [&](OpBuilder &b, Location l, ValueRange a) {
          Value v = castFloat(b, l, a[0], ct);
          Value j = arith::IndexCastOp::create(b, l, b.getI64Type(),
                                               linalg::IndexOp::create(b, l, rank - 1));
          // Strictly greater keeps the first maximum, as torch.argmax does.
          Value better = arith::CmpFOp::create(b, l, arith::CmpFPredicate::OGT, v, a[1]);
          linalg::YieldOp::create(b, l, ValueRange{arith::SelectOp::create(b, l, better, v, a[1]),
                                             arith::SelectOp::create(b, l, better, j, a[2])});
        });
    rewriter.replaceOp(op, reduction.getResult(1));
    return success();
  }
};

struct TransformerToLinalg : kiln::impl::TransformerToLinalgBase<TransformerToLinalg> {
  using TransformerToLinalgBase::TransformerToLinalgBase;
  void runOnOperation() override {
    MLIRContext *ctx = &getContext();
    ConversionTarget target(*ctx);
    target.addIllegalDialect<TransformerDialect>();
    target.markUnknownOpDynamicallyLegal([](Operation *) { return true; });
    RewritePatternSet patterns(ctx);
    kiln::populateTransformerToLinalgPatterns(patterns, flashKvTile, flashQueryRows);
    if (failed(applyPartialConversion(getOperation(), target, std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace

void kiln::populateTransformerToLinalgPatterns(RewritePatternSet &patterns, int64_t flashKvTile,
                                              int64_t flashQueryRows) {
  if (flashKvTile > 0)
    patterns.add<FlashAttentionLowering>(patterns.getContext(), flashKvTile, flashQueryRows);
  patterns.add<EmbeddingLowering, DequantizeLowering, LinearLowering, MatmulLowering, RMSNormLowering,
               LayerNormLowering, RoPELowering, AttentionLowering, KVCacheUpdateLowering,
               SplitHeadsLowering, MergeHeadsLowering, SoftmaxLowering, SiLULowering,
               GeluLowering, GatedMLPLowering, ArgMaxLowering>(patterns.getContext());
}
