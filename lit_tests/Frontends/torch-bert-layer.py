# A post-LN BERT layer (plain nn.Module) through the PyTorch frontend: the additive padding mask
# built from a [batch, seq] 0/1 mask stays linalg and feeds transformer.attention's mask operand;
# LayerNorm, Linear and exact GELU are raised.
# RUN: %PYTHON %s | FileCheck %s

import torch

from kiln.frontends.torch import examples, import_module

layer = examples.seeded(examples.BertLayer)
print(import_module(layer, (torch.zeros(2, 5, 72), torch.ones(2, 5, dtype=torch.int64))).ir("transformer"))

# CHECK-LABEL: func.func @forward(
# CHECK-SAME:    tensor<2x5xi64> {kiln.name = "attention_mask"}
# CHECK:         linalg.generic
# CHECK:         transformer.attention %{{.*}}, %{{.*}}, %{{.*}} mask(%{{.*}}) : (tensor<2x4x5x18xf32>, tensor<2x4x5x18xf32>, tensor<2x4x5x18xf32>, tensor<2x1x1x5xf32>) -> tensor<2x4x5x18xf32>
# CHECK:         transformer.layer_norm %{{.*}} weight(%{{.*}}) bias(%{{.*}}) {eps = 9.9999999999999998E-13 : f64}
# CHECK:         transformer.gelu %{{.*}} : tensor<2x5x200xf32>
# CHECK:         transformer.layer_norm
# CHECK:         return
