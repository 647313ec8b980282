//===- kiln-opt.cpp - mlir-opt with Kiln's dialect and passes -------------===//
//
// Every upstream dialect, extension and pass, plus the transformer dialect and
// Kiln's passes: the driver of the lit tests and of users' own pipelines.
//
//===----------------------------------------------------------------------===//

#include "dialect/TransformerDialect.h"
#include "passes/Passes.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"

int main(int argc, char **argv) {
  mlir::registerAllPasses();
  kiln::registerKilnPasses();

  mlir::DialectRegistry registry;
  mlir::registerAllDialects(registry);
  mlir::registerAllExtensions(registry);
  registry.insert<kiln::transformer::TransformerDialect>();

  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "Kiln optimizer driver\n", registry));
}
