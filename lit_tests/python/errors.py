# RUN: %PYTHON %s | FileCheck %s
# Bad shapes given to the generated builders. An error of inferReturnTypes is raised by the builder
# itself (the op cannot get a result type); an error of the verifier is raised by verify() on the
# built op. Either way the exception carries the dialect's message and the op's location.

import kiln
from kiln.dialects import transformer
from mlir import ir
from mlir.dialects import func


def tensor(*shape, element_type=None):
    return ir.RankedTensorType.get(shape, element_type or ir.F32Type.get())


def report(what, fn):
    """Runs `fn`; prints the type and message of the MLIRError it raises, or that it raised none."""
    try:
        fn()
    except ir.MLIRError as e:
        print(f"{what}: {type(e).__name__}: {e}")
    else:
        print(f"{what}: no error")


def in_function(arg_types, body):
    """Calls `body(*args)` in a new function whose arguments have the types `arg_types()` builds,
    with model.py:12:3 as the location of everything built."""
    with ir.Context(), ir.Location.file("model.py", 12, 3):
        module = ir.Module.create()
        with ir.InsertionPoint(module.body):
            fn = func.FuncOp("f", (arg_types(), []))
            with ir.InsertionPoint(fn.add_entry_block()):
                body(*fn.arguments)
                func.ReturnOp([])


def build(what, arg_types, body):
    """The builder call `body(*args)` must raise."""
    in_function(arg_types, lambda *args: report(what, lambda: body(*args)))


def build_and_verify(what, arg_types, body):
    """The builder call `body(*args)` returns a result; verifying its op must raise."""
    in_function(arg_types, lambda *args: report(what, lambda: body(*args).owner.verify()))


# CHECK-LABEL: TEST: builder_errors
print("TEST: builder_errors")

# CHECK: linear: MLIRError: Operation creation failed:
# CHECK-NEXT: error: "model.py":12:3: weight must have rank 2 ([out_features, in_features]), got rank 1
build("linear", lambda: [tensor(2, 64), tensor(64)], lambda x, w: transformer.linear(x, w))

# CHECK: matmul: MLIRError: Operation creation failed:
# CHECK-NEXT: error: "model.py":12:3: lhs rank (3) does not match rhs rank (2)
build("matmul", lambda: [tensor(2, 3, 4), tensor(4, 5)], lambda a, b: transformer.matmul(a, b))

# CHECK: split_heads: MLIRError: Operation creation failed:
# CHECK-NEXT: error: "model.py":12:3: feature dimension (576) is not a multiple of num_heads (7)
build("split_heads", lambda: [tensor(1, 7, 576)], lambda x: transformer.split_heads(x, 7))

# CHECK: split_heads_zero: MLIRError: Operation creation failed:
# CHECK-NEXT: error: "model.py":12:3: num_heads (0) must be positive
build("split_heads_zero", lambda: [tensor(1, 7, 576)], lambda x: transformer.split_heads(x, 0))

# CHECK: attention: MLIRError: Operation creation failed:
# CHECK-NEXT: error: "model.py":12:3: query must have rank 4 ([batch, num_heads, q_len, head_dim]), got rank 3
build("attention", lambda: [tensor(9, 7, 64), tensor(1, 3, 7, 64)],
      lambda q, k: transformer.attention(q, k, k))

# CHECK: embedding: MLIRError: Operation creation failed:
# CHECK-NEXT: error: "model.py":12:3: table must have rank 2 ([vocab, dim]), got rank 3
build("embedding", lambda: [tensor(1, 100, 64), tensor(7, element_type=ir.IntegerType.get_signless(64))],
      lambda t, i: transformer.embedding(t, i))

# CHECK: argmax: MLIRError: Operation creation failed:
# CHECK-NEXT: error: "model.py":12:3: input must have rank >= 1, got rank 0
build("argmax", lambda: [tensor()], lambda x: transformer.argmax(x))

# Operands that are not ranked tensors reach inferReturnTypes before any type constraint is
# checked: they are reported, not cast (this used to crash the interpreter).
# CHECK: scalar_input: MLIRError: Operation creation failed:
# CHECK-NEXT: error: "model.py":12:3: input must be a ranked tensor, got 'i32'
build("scalar_input", lambda: [ir.IntegerType.get_signless(32), tensor(96, 64)],
      lambda x, w: transformer.linear(x, w))

# CHECK: unranked_weight: MLIRError: Operation creation failed:
# CHECK-NEXT: error: "model.py":12:3: weight must be a ranked tensor, got 'tensor<*xf32>'
build("unranked_weight", lambda: [tensor(2, 64), ir.UnrankedTensorType.get(ir.F32Type.get())],
      lambda x, w: transformer.linear(x, w))

# CHECK: scalar_indices: MLIRError: Operation creation failed:
# CHECK-NEXT: error: "model.py":12:3: indices must be a ranked tensor, got 'index'
build("scalar_indices", lambda: [tensor(100, 64), ir.IndexType.get()],
      lambda t, i: transformer.embedding(t, i))

# CHECK: scalar_cache: MLIRError: Operation creation failed:
# CHECK-NEXT: error: "model.py":12:3: cache must be a ranked tensor, got 'f32'
build("scalar_cache", lambda: [ir.F32Type.get(), tensor(1, 3, 1, 64), ir.IndexType.get()],
      lambda c, u, p: transformer.kv_cache_update(c, u, p))


# CHECK-LABEL: TEST: verifier_errors
print("TEST: verifier_errors")

# CHECK: linear: MLIRError: Verification failed:
# CHECK-NEXT: error: "model.py":12:3: 'transformer.linear' op input feature dimension (64) does not match weight dimension 1 (in_features = 63)
build_and_verify("linear", lambda: [tensor(2, 64), tensor(96, 63)],
                 lambda x, w: transformer.linear(x, w))

# CHECK: attention_gqa: MLIRError: Verification failed:
# CHECK-NEXT: error: "model.py":12:3: 'transformer.attention' op num_heads (8) is not a multiple of num_kv_heads (3)
build_and_verify("attention_gqa", lambda: [tensor(1, 8, 16, 64), tensor(1, 3, 16, 64)],
                 lambda q, k: transformer.attention(q, k, k))

# CHECK: rope: MLIRError: Verification failed:
# CHECK-NEXT: error: "model.py":12:3: 'transformer.rope' op rotary_dim (33) must be positive and even
build_and_verify("rope", lambda: [tensor(1, 2, 7, 64), tensor(7, element_type=ir.IntegerType.get_signless(64))],
                 lambda x, p: transformer.rope(x, p, rotary_dim=33))

# CHECK: gelu: MLIRError: Verification failed:
# CHECK-NEXT: error: "model.py":12:3: 'transformer.gelu' op approximate must be "none" or "tanh", got "erf"
build_and_verify("gelu", lambda: [tensor(2, 8)], lambda x: transformer.gelu(x, approximate="erf"))

# CHECK: gated_mlp: MLIRError: Verification failed:
# CHECK-NEXT: error: "model.py":12:3: 'transformer.gated_mlp' op down_weight dimension 1 (64) does not match ffn (32)
build_and_verify("gated_mlp", lambda: [tensor(2, 16), tensor(32, 16), tensor(16, 64)],
                 lambda x, wg, wd: transformer.gated_mlp(x, wg, wg, wd))

# A type constraint of the ODS: an integer tensor as linear input builds (inference only needs
# ranks) but does not verify.
# CHECK: integer_input: MLIRError: Verification failed:
# CHECK-NEXT: error: "model.py":12:3: 'transformer.linear' op operand #0 must be ranked tensor of floating-point values, but got 'tensor<2x64xi32>'
build_and_verify("integer_input",
                 lambda: [tensor(2, 64, element_type=ir.IntegerType.get_signless(32)), tensor(96, 64)],
                 lambda x, w: transformer.linear(x, w))

# A valid op verifies: the harness above does not report errors that are not there.
# CHECK: valid: no error
build_and_verify("valid", lambda: [tensor(2, 64), tensor(96, 64)], lambda x, w: transformer.linear(x, w))
