# RUN: %PYTHON %s | FileCheck %s
# `import kiln` registers Kiln's passes for mlir.passmanager: transformer-to-linalg can be named in a
# textual pipeline and run from Python.

import subprocess
import sys

import kiln  # noqa: F401  (registers the dialect and the passes)
from mlir import ir
from mlir.passmanager import PassManager

PIPELINE = "builtin.module(func.func(transformer-to-linalg))"

# Without `import kiln`, upstream MLIR does not know the pass: the registration is Kiln's doing.
# CHECK-LABEL: TEST: unknown_without_kiln
print("TEST: unknown_without_kiln")
probe = f"""
from mlir import ir
from mlir.passmanager import PassManager
with ir.Context():
    try:
        PassManager.parse({PIPELINE!r})
        print("parsed")
    except ValueError as e:
        print("not registered:", "transformer-to-linalg" in str(e))
"""
# CHECK: not registered: True
print(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip())

# CHECK-LABEL: TEST: parse_and_run
print("TEST: parse_and_run")
with ir.Context():
    pm = PassManager.parse(PIPELINE)
    # CHECK: builtin.module(func.func(transformer-to-linalg{flash-kv-tile=0 flash-query-rows=32}))
    print(pm)
    module = ir.Module.parse(
        """
        func.func @block(%x: tensor<2x7x64xf32>, %w: tensor<96x64xf32>, %g: tensor<64xf32>) -> tensor<2x7x96xf32> {
          %n = transformer.rms_norm %x, %g : (tensor<2x7x64xf32>, tensor<64xf32>) -> tensor<2x7x64xf32>
          %y = transformer.linear %n, %w : (tensor<2x7x64xf32>, tensor<96x64xf32>) -> tensor<2x7x96xf32>
          %s = transformer.silu %y : tensor<2x7x96xf32>
          return %s : tensor<2x7x96xf32>
        }
        """
    )
    pm.run(module.operation)
    # CHECK: func.func @block
    # CHECK-NOT: transformer.
    # CHECK: math.rsqrt
    # CHECK: linalg.generic {{.+}} iterator_types = ["parallel", "parallel", "parallel", "reduction"]
    # CHECK: math.exp
    # CHECK-NOT: transformer.
    # CHECK: return
    print(module)
    # CHECK: verified: True
    print("verified:", module.operation.verify())
