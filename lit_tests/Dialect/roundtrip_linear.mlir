// RUN: kiln-opt %s | kiln-opt | FileCheck %s

// CHECK-LABEL: func.func @linear_bias
func.func @linear_bias(%x: tensor<2x7x64xf32>, %w: tensor<96x64xf32>, %b: tensor<96xf32>) -> tensor<2x7x96xf32> {
  // CHECK: transformer.linear %{{.*}}, %{{.*}}, %{{.*}} : (tensor<2x7x64xf32>, tensor<96x64xf32>, tensor<96xf32>) -> tensor<2x7x96xf32>
  %y = transformer.linear %x, %w, %b : (tensor<2x7x64xf32>, tensor<96x64xf32>, tensor<96xf32>) -> tensor<2x7x96xf32>
  return %y : tensor<2x7x96xf32>
}
