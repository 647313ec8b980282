# RUN: %PYTHON %s | FileCheck %s
# Builders generated from the ODS infer result types; parsed ops come back as the generated classes.

import kiln
from kiln.dialects import transformer
from mlir import ir
from mlir.dialects import func


def f32_tensor(*shape):
    return ir.RankedTensorType.get(shape, ir.F32Type.get())


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
