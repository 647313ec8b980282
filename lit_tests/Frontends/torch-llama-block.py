# A hand-written Llama-style decoder block (plain nn.Module: explicit and nn.RMSNorm, RoPE from
# non-persistent buffers, GQA causal SDPA, SwiGLU) through the PyTorch frontend, printed at
# --compile-to=transformer: the known patterns are transformer ops, the rest (RoPE) is linalg, and
# weights are named function arguments.
# RUN: %PYTHON %s | FileCheck %s

import torch

from kiln.frontends.torch import examples, import_module

block = examples.seeded(examples.LlamaBlock)
print(import_module(block, (torch.zeros(1, 7, 120),)).ir("transformer"))

# CHECK-LABEL: func.func @forward(
# CHECK-SAME:    %[[WQ:[a-z0-9]+]]: tensor<120x120xf32> {kiln.name = "q_proj.weight"}
# CHECK-SAME:    tensor<64x20xf32> {kiln.name = "cos_cached"}
# CHECK-SAME:    %[[X:[a-z0-9]+]]: tensor<1x7x120xf32> {kiln.name = "x"}
# CHECK:         %[[H:[0-9]+]] = transformer.rms_norm %[[X]], %{{.*}} {eps = 1.000000e-05 : f64}
# CHECK:         %[[Q:[0-9]+]] = transformer.linear %[[H]], %[[WQ]]
# CHECK:         transformer.split_heads %[[Q]] {num_heads = 6 : i64} : tensor<1x7x120xf32> -> tensor<1x6x7x20xf32>
# CHECK:         transformer.split_heads %{{.*}} {num_heads = 2 : i64} : tensor<1x7x40xf32> -> tensor<1x2x7x20xf32>
# CHECK:         tensor.concat
# CHECK:         %[[A:[0-9]+]] = transformer.attention %{{.*}}, %{{.*}}, %{{.*}} {causal} : (tensor<1x6x7x20xf32>, tensor<1x2x7x20xf32>, tensor<1x2x7x20xf32>) -> tensor<1x6x7x20xf32>
# CHECK:         %[[M:[0-9]+]] = transformer.merge_heads %[[A]]
# CHECK:         transformer.linear %[[M]]
# CHECK:         %[[H2:[0-9]+]] = transformer.rms_norm %{{.*}}, %{{.*}} {eps = 1.000000e-05 : f64}
# CHECK:         transformer.gated_mlp %[[H2]], %{{.*}}, %{{.*}}, %{{.*}} : (tensor<1x7x120xf32>, tensor<328x120xf32>, tensor<328x120xf32>, tensor<120x328xf32>)
# CHECK-NOT:     __kiln_raised
# CHECK:         return
