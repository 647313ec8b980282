# RUN: %PYTHON %s | FileCheck %s
# Builders generated from the ODS infer result types (none is passed here); parsed ops come back as
# the generated classes, with named accessors for operands and attributes.

import kiln
from kiln.dialects import transformer
from mlir import ir
from mlir.dialects import func


def f32_tensor(*shape):
    return ir.RankedTensorType.get(shape, ir.F32Type.get())


def tensor(shape, element_type):
    return ir.RankedTensorType.get(shape, element_type)


# CHECK-LABEL: TEST: linear_infers_result_type
print("TEST: linear_infers_result_type")
with ir.Context(), ir.Location.unknown():
    module = ir.Module.create()
    with ir.InsertionPoint(module.body):

        @func.FuncOp.from_py_func(f32_tensor(2, 7, 64), f32_tensor(96, 64))
        def linear(x, w):
            return transformer.linear(x, w)

    # CHECK: transformer.linear %{{.*}}, %{{.*}} : (tensor<2x7x64xf32>, tensor<96x64xf32>) -> tensor<2x7x96xf32>
    print(module)


# Every op, built with its generated builder; the printed IR must carry the inferred result types
# and verify.
# CHECK-LABEL: TEST: build_every_op
print("TEST: build_every_op")
with ir.Context(), ir.Location.unknown():
    f32, bf16 = ir.F32Type.get(), ir.BF16Type.get()
    i64 = ir.IntegerType.get_signless(64)
    index = ir.IndexType.get()
    dyn = ir.ShapedType.get_dynamic_size()
    module = ir.Module.create()
    with ir.InsertionPoint(module.body):

        # CHECK: func.func @every_op(%[[TABLE:.+]]: tensor<100x64xf32>, %[[IDS:.+]]: tensor<1x7xi64>, %[[W:.+]]: tensor<576x64xf32>, %[[B:.+]]: tensor<576xf32>, %[[G:.+]]: tensor<64xf32>, %[[POS:.+]]: tensor<1x7xi64>, %[[FREQ:.+]]: tensor<8xf32>, %[[KC:.+]]: tensor<1x3x128x64xf32>, %[[P:.+]]: index, %[[MASK:.+]]: tensor<1x1x7x128xf32>, %[[WG:.+]]: tensor<128x64xf32>, %[[WD:.+]]: tensor<64x128xf32>, %[[WK:.+]]: tensor<192x64xf32>, %[[XD:.+]]: tensor<?x?x64xbf16>, %[[WB:.+]]: tensor<576x64xbf16>)
        @func.FuncOp.from_py_func(
            f32_tensor(100, 64), tensor([1, 7], i64), f32_tensor(576, 64), f32_tensor(576),
            f32_tensor(64), tensor([1, 7], i64), f32_tensor(8), f32_tensor(1, 3, 128, 64), index,
            f32_tensor(1, 1, 7, 128), f32_tensor(128, 64), f32_tensor(64, 128), f32_tensor(192, 64),
            tensor([dyn, dyn, 64], bf16), tensor([576, 64], bf16),
        )
        def every_op(table, ids, w, b, g, pos, freq, kc, p, mask, wg, wd, wk, xd, wb):
            # CHECK: %[[H:.+]] = transformer.embedding %[[TABLE]][%[[IDS]]] : tensor<100x64xf32>, tensor<1x7xi64> -> tensor<1x7x64xf32>
            h = transformer.embedding(table, ids)
            # CHECK: %[[N:.+]] = transformer.rms_norm %[[H]], %[[G]] {eps = 1.000000e-05 : f64} : (tensor<1x7x64xf32>, tensor<64xf32>) -> tensor<1x7x64xf32>
            n = transformer.rms_norm(h, weight=g, eps=1e-5)
            # CHECK: transformer.rms_norm %[[H]] : (tensor<1x7x64xf32>) -> tensor<1x7x64xf32>
            transformer.rms_norm(h)
            # CHECK: transformer.layer_norm %[[N]] weight(%[[G]]) bias(%[[G]]) : (tensor<1x7x64xf32>, tensor<64xf32>, tensor<64xf32>) -> tensor<1x7x64xf32>
            transformer.layer_norm(n, weight=g, bias=g)
            # CHECK: transformer.layer_norm %[[N]] bias(%[[G]]) {eps = 9.9999999999999998E-13 : f64} : (tensor<1x7x64xf32>, tensor<64xf32>) -> tensor<1x7x64xf32>
            transformer.layer_norm(n, bias=g, eps=1e-12)
            # CHECK: %[[Q:.+]] = transformer.linear %[[N]], %[[W]], %[[B]] : (tensor<1x7x64xf32>, tensor<576x64xf32>, tensor<576xf32>) -> tensor<1x7x576xf32>
            q = transformer.linear(n, w, bias=b)
            # CHECK: %[[QH:.+]] = transformer.split_heads %[[Q]] {num_heads = 9 : i64} : tensor<1x7x576xf32> -> tensor<1x9x7x64xf32>
            qh = transformer.split_heads(q, 9)
            # CHECK: %[[QR:.+]] = transformer.rope %[[QH]], %[[POS]] {theta = 1.000000e+05 : f64} : (tensor<1x9x7x64xf32>, tensor<1x7xi64>) -> tensor<1x9x7x64xf32>
            qr = transformer.rope(qh, pos, theta=1e5)
            # CHECK: transformer.rope %[[QH]], %[[POS]] inv_freq(%[[FREQ]]) {rotary_dim = 16 : i64} : (tensor<1x9x7x64xf32>, tensor<1x7xi64>, tensor<8xf32>) -> tensor<1x9x7x64xf32>
            transformer.rope(qh, pos, inv_freq=freq, rotary_dim=16)
            # CHECK: %[[S:.+]] = transformer.matmul %[[QR]], %[[QR]] {transpose_rhs} : (tensor<1x9x7x64xf32>, tensor<1x9x7x64xf32>) -> tensor<1x9x7x7xf32>
            s = transformer.matmul(qr, qr, transpose_rhs=True)
            # CHECK: transformer.matmul %[[S]], %[[QR]] : (tensor<1x9x7x7xf32>, tensor<1x9x7x64xf32>) -> tensor<1x9x7x64xf32>
            transformer.matmul(s, qr)
            # CHECK: transformer.softmax %[[S]] {axis = 2 : i64} : tensor<1x9x7x7xf32>
            transformer.softmax(s, axis=2)
            # CHECK: transformer.softmax %[[S]] : tensor<1x9x7x7xf32>
            transformer.softmax(s)
            # CHECK: %[[KP:.+]] = transformer.linear %[[N]], %[[WK]] : (tensor<1x7x64xf32>, tensor<192x64xf32>) -> tensor<1x7x192xf32>
            # CHECK: %[[KN:.+]] = transformer.split_heads %[[KP]] {num_heads = 3 : i64} : tensor<1x7x192xf32> -> tensor<1x3x7x64xf32>
            kn = transformer.split_heads(transformer.linear(n, wk), 3)
            # CHECK: %[[K:.+]] = transformer.kv_cache_update %[[KC]], %[[KN]] at %[[P]] : tensor<1x3x128x64xf32>, tensor<1x3x7x64xf32> -> tensor<1x3x128x64xf32>
            k = transformer.kv_cache_update(kc, kn, p)
            # CHECK: %[[O:.+]] = transformer.attention %[[QR]], %[[K]], %[[K]] mask(%[[MASK]]) offset(%[[P]]) {causal, scale = 1.250000e-01 : f64} : (tensor<1x9x7x64xf32>, tensor<1x3x128x64xf32>, tensor<1x3x128x64xf32>, tensor<1x1x7x128xf32>, index) -> tensor<1x9x7x64xf32>
            o = transformer.attention(qr, k, k, mask=mask, offset=p, causal=True, scale=0.125)
            # CHECK: transformer.attention %[[QR]], %[[QR]], %[[QR]] : (tensor<1x9x7x64xf32>, tensor<1x9x7x64xf32>, tensor<1x9x7x64xf32>) -> tensor<1x9x7x64xf32>
            transformer.attention(qr, qr, qr)
            # CHECK: %[[M:.+]] = transformer.merge_heads %[[O]] : tensor<1x9x7x64xf32> -> tensor<1x7x576xf32>
            m = transformer.merge_heads(o)
            # CHECK: transformer.silu %[[M]] : tensor<1x7x576xf32>
            transformer.silu(m)
            # CHECK: transformer.gelu %[[M]] : tensor<1x7x576xf32>
            transformer.gelu(m)
            # CHECK: %[[GE:.+]] = transformer.gelu %[[M]] {approximate = "tanh"} : tensor<1x7x576xf32>
            ge = transformer.gelu(m, approximate="tanh")
            # CHECK: transformer.gated_mlp %[[N]], %[[WG]], %[[WG]], %[[WD]] : (tensor<1x7x64xf32>, tensor<128x64xf32>, tensor<128x64xf32>, tensor<64x128xf32>) -> tensor<1x7x64xf32>
            transformer.gated_mlp(n, wg, wg, wd)
            # CHECK: transformer.gated_mlp %[[N]], %[[WG]], %[[WG]], %[[WD]] {activation = "gelu"} :
            transformer.gated_mlp(n, wg, wg, wd, activation="gelu")
            # CHECK: transformer.gated_mlp %[[N]], %[[WG]], %[[WG]], %[[WD]] {activation = "gelu_tanh"} :
            transformer.gated_mlp(n, wg, wg, wd, activation="gelu_tanh")
            # CHECK: transformer.argmax %[[GE]] : tensor<1x7x576xf32> -> tensor<1x7xi64>
            am = transformer.argmax(ge)
            # Dynamic dims propagate: [?, ?, 64] -> [?, ?, 576] -> [?, 9, ?, 64] -> [?, ?, 576].
            # CHECK: %[[YD:.+]] = transformer.linear %[[XD]], %[[WB]] : (tensor<?x?x64xbf16>, tensor<576x64xbf16>) -> tensor<?x?x576xbf16>
            yd = transformer.linear(xd, wb)
            # CHECK: transformer.split_heads %[[YD]] {num_heads = 9 : i64} : tensor<?x?x576xbf16> -> tensor<?x9x?x64xbf16>
            # CHECK: transformer.merge_heads %{{.+}} : tensor<?x9x?x64xbf16> -> tensor<?x?x576xbf16>
            transformer.merge_heads(transformer.split_heads(yd, 9))
            return am

    # CHECK: verified: True
    print(module)
    print("verified:", module.operation.verify())


# CHECK-LABEL: TEST: parsed_ops_are_generated_classes
print("TEST: parsed_ops_are_generated_classes")
with ir.Context():
    module = ir.Module.parse(
        """
        func.func @f(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
          %y = transformer.silu %x : tensor<4x8xf32>
          return %y : tensor<4x8xf32>
        }
        """
    )
    op = module.body.operations[0].regions[0].blocks[0].operations[0]
    # CHECK: SiLUOp
    print(type(op).__name__)


# Every op parsed back from text: the generated class, and its operands and attributes through the
# named accessors (absent optional operands are None; default-valued attributes are materialized).
# CHECK-LABEL: TEST: parsed_accessors
print("TEST: parsed_accessors")
with ir.Context():
    module = ir.Module.parse(
        """
        func.func @f(%table: tensor<100x64xf32>, %ids: tensor<1x7xi64>, %x: tensor<1x7x64xf32>,
                     %w: tensor<576x64xf32>, %b: tensor<576xf32>, %g: tensor<64xf32>,
                     %q: tensor<1x9x7x64xf32>, %pos: tensor<7xi64>, %freq: tensor<8xf32>,
                     %kc: tensor<1x3x128x64xf32>, %kn: tensor<1x3x7x64xf32>, %p: index,
                     %mask: tensor<1x1x7x128xf32>, %wg: tensor<128x64xf32>, %wd: tensor<64x128xf32>,
                     %y: tensor<1x7x576xf32>) {
          %0 = transformer.embedding %table[%ids] : tensor<100x64xf32>, tensor<1x7xi64> -> tensor<1x7x64xf32>
          %1 = transformer.linear %x, %w, %b : (tensor<1x7x64xf32>, tensor<576x64xf32>, tensor<576xf32>) -> tensor<1x7x576xf32>
          %2 = transformer.linear %x, %w : (tensor<1x7x64xf32>, tensor<576x64xf32>) -> tensor<1x7x576xf32>
          %3 = transformer.matmul %q, %q {transpose_rhs} : (tensor<1x9x7x64xf32>, tensor<1x9x7x64xf32>) -> tensor<1x9x7x7xf32>
          %4 = transformer.rms_norm %x, %g {eps = 1.0e-05 : f64} : (tensor<1x7x64xf32>, tensor<64xf32>) -> tensor<1x7x64xf32>
          %5 = transformer.layer_norm %x bias(%g) : (tensor<1x7x64xf32>, tensor<64xf32>) -> tensor<1x7x64xf32>
          %6 = transformer.rope %q, %pos inv_freq(%freq) {rotary_dim = 16 : i64} : (tensor<1x9x7x64xf32>, tensor<7xi64>, tensor<8xf32>) -> tensor<1x9x7x64xf32>
          %7 = transformer.kv_cache_update %kc, %kn at %p : tensor<1x3x128x64xf32>, tensor<1x3x7x64xf32> -> tensor<1x3x128x64xf32>
          %8 = transformer.attention %q, %7, %7 mask(%mask) offset(%p) {causal, scale = 0.125 : f64} : (tensor<1x9x7x64xf32>, tensor<1x3x128x64xf32>, tensor<1x3x128x64xf32>, tensor<1x1x7x128xf32>, index) -> tensor<1x9x7x64xf32>
          %9 = transformer.attention %q, %q, %q : (tensor<1x9x7x64xf32>, tensor<1x9x7x64xf32>, tensor<1x9x7x64xf32>) -> tensor<1x9x7x64xf32>
          %10 = transformer.split_heads %y {num_heads = 9 : i64} : tensor<1x7x576xf32> -> tensor<1x9x7x64xf32>
          %11 = transformer.merge_heads %q : tensor<1x9x7x64xf32> -> tensor<1x7x576xf32>
          %12 = transformer.softmax %3 {axis = 2 : i64} : tensor<1x9x7x7xf32>
          %13 = transformer.silu %y : tensor<1x7x576xf32>
          %14 = transformer.gelu %y {approximate = "tanh"} : tensor<1x7x576xf32>
          %15 = transformer.gated_mlp %x, %wg, %wg, %wd {activation = "gelu"} : (tensor<1x7x64xf32>, tensor<128x64xf32>, tensor<128x64xf32>, tensor<64x128xf32>) -> tensor<1x7x64xf32>
          %16 = transformer.argmax %y : tensor<1x7x576xf32> -> tensor<1x7xi64>
          return
        }
        """
    )
    fn = module.body.operations[0]
    args = fn.regions[0].blocks[0].arguments
    ops = list(fn.regions[0].blocks[0].operations)

    def arg(value):
        """The source name of a block argument (`x` for %x), or None for an absent operand."""
        names = ["table", "ids", "x", "w", "b", "g", "q", "pos", "freq", "kc", "kn", "p", "mask",
                 "wg", "wd", "y"]
        if value is None:
            return "None"
        for i, a in enumerate(args):
            if a == value:
                return names[i]
        return "?"

    emb, lin_b, lin, mm, rms, ln, rope, kv, attn, attn_plain = ops[:10]
    split, merge, softmax, silu, gelu, mlp, argmax = ops[10:17]
    # CHECK: EmbeddingOp table=table indices=ids result=tensor<1x7x64xf32>
    print(type(emb).__name__, f"table={arg(emb.table)}", f"indices={arg(emb.indices)}",
          f"result={emb.result.type}")
    # CHECK: LinearOp input=x weight=w bias=b
    print(type(lin_b).__name__, f"input={arg(lin_b.input)}", f"weight={arg(lin_b.weight)}",
          f"bias={arg(lin_b.bias)}")
    # CHECK: LinearOp bias=None
    print(type(lin).__name__, f"bias={arg(lin.bias)}")
    # CHECK: MatmulOp lhs=q rhs=q transpose_rhs=True
    print(type(mm).__name__, f"lhs={arg(mm.lhs)}", f"rhs={arg(mm.rhs)}",
          f"transpose_rhs={mm.transpose_rhs}")
    # CHECK: RMSNormOp input=x weight=g eps=1e-05
    print(type(rms).__name__, f"input={arg(rms.input)}", f"weight={arg(rms.weight)}",
          f"eps={rms.eps.value}")
    # CHECK: LayerNormOp weight=None bias=g eps=1e-05
    print(type(ln).__name__, f"weight={arg(ln.weight)}", f"bias={arg(ln.bias)}",
          f"eps={ln.eps.value}")
    # CHECK: RoPEOp input=q positions=pos inv_freq=freq theta=10000.0 rotary_dim=16
    print(type(rope).__name__, f"input={arg(rope.input)}", f"positions={arg(rope.positions)}",
          f"inv_freq={arg(rope.inv_freq)}", f"theta={rope.theta.value}",
          f"rotary_dim={rope.rotary_dim.value}")
    # CHECK: KVCacheUpdateOp cache=kc update=kn position=p
    print(type(kv).__name__, f"cache={arg(kv.cache)}", f"update={arg(kv.update)}",
          f"position={arg(kv.position)}")
    # CHECK: AttentionOp query=q key_is_cache_update=True mask=mask offset=p causal=True scale=0.125
    print(type(attn).__name__, f"query={arg(attn.query)}",
          f"key_is_cache_update={attn.key == kv.result}", f"mask={arg(attn.mask)}",
          f"offset={arg(attn.offset)}", f"causal={attn.causal}", f"scale={attn.scale.value}")
    # CHECK: AttentionOp mask=None offset=None causal=False scale=None
    print(type(attn_plain).__name__, f"mask={arg(attn_plain.mask)}",
          f"offset={arg(attn_plain.offset)}", f"causal={attn_plain.causal}",
          f"scale={attn_plain.scale}")
    # CHECK: SplitHeadsOp input=y num_heads=9 result=tensor<1x9x7x64xf32>
    print(type(split).__name__, f"input={arg(split.input)}", f"num_heads={split.num_heads.value}",
          f"result={split.result.type}")
    # CHECK: MergeHeadsOp input=q result=tensor<1x7x576xf32>
    print(type(merge).__name__, f"input={arg(merge.input)}", f"result={merge.result.type}")
    # CHECK: SoftmaxOp axis=2
    print(type(softmax).__name__, f"axis={softmax.axis.value}")
    # CHECK: SiLUOp input=y
    print(type(silu).__name__, f"input={arg(silu.input)}")
    # CHECK: GeluOp approximate=tanh
    print(type(gelu).__name__, f"approximate={gelu.approximate.value}")
    # CHECK: GatedMLPOp input=x gate_weight=wg up_weight=wg down_weight=wd activation=gelu
    print(type(mlp).__name__, f"input={arg(mlp.input)}", f"gate_weight={arg(mlp.gate_weight)}",
          f"up_weight={arg(mlp.up_weight)}", f"down_weight={arg(mlp.down_weight)}",
          f"activation={mlp.activation.value}")
    # CHECK: ArgMaxOp input=y result=tensor<1x7xi64>
    print(type(argmax).__name__, f"input={arg(argmax.input)}", f"result={argmax.result.type}")

    # The accessors also write: an attribute set from Python shows up in the IR.
    attn_plain.causal = True
    # CHECK: transformer.attention %{{.+}}, %{{.+}}, %{{.+}} {causal} : (tensor<1x9x7x64xf32>,
    print(attn_plain)
