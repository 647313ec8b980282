// RUN: kiln-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(kiln-plan-buffers))' | FileCheck %s

// A chain a -> b -> c: a is dead once b is written, so c reuses a's memory.
// CHECK-LABEL: func.func @chain
// CHECK-SAME: kiln.buffer_plan = {arena_bytes = 8192 : i64, buffers = 3 : i64, unplanned_bytes = 12288 : i64}
// CHECK: %[[ARENA:.+]] = memref.alloc() {alignment = 64 : i64} : memref<8192xi8>
// CHECK: %[[A:.+]] = memref.view %[[ARENA]][%c0{{(_[0-9]+)?}}][] : memref<8192xi8> to memref<1024xf32>
// CHECK: call @k(%arg0, %[[A]])
// CHECK: %[[B:.+]] = memref.view %[[ARENA]][%c4096][] : memref<8192xi8> to memref<1024xf32>
// CHECK: call @k(%[[A]], %[[B]])
// CHECK: %[[C:.+]] = memref.view %[[ARENA]][%c0{{(_[0-9]+)?}}][] : memref<8192xi8> to memref<1024xf32>
// CHECK: call @k(%[[B]], %[[C]])
// CHECK-NOT: memref.dealloc %[[A]]
// CHECK: memref.dealloc %[[ARENA]]
// CHECK-NEXT: return
func.func private @k(memref<1024xf32>, memref<1024xf32>)
func.func @chain(%in: memref<1024xf32>, %out: memref<1024xf32>) {
  %a = memref.alloc() {alignment = 64 : i64} : memref<1024xf32>
  call @k(%in, %a) : (memref<1024xf32>, memref<1024xf32>) -> ()
  %b = memref.alloc() {alignment = 64 : i64} : memref<1024xf32>
  call @k(%a, %b) : (memref<1024xf32>, memref<1024xf32>) -> ()
  %c = memref.alloc() {alignment = 64 : i64} : memref<1024xf32>
  call @k(%b, %c) : (memref<1024xf32>, memref<1024xf32>) -> ()
  call @k(%c, %out) : (memref<1024xf32>, memref<1024xf32>) -> ()
  memref.dealloc %a : memref<1024xf32>
  memref.dealloc %b : memref<1024xf32>
  memref.dealloc %c : memref<1024xf32>
  return
}

// -----

// A use through a view (expand_shape) keeps the buffer alive: a and b never share memory.
// CHECK-LABEL: func.func @alias_extends_lifetime
// CHECK-SAME: arena_bytes = 8192 : i64, buffers = 2 : i64, unplanned_bytes = 8192 : i64
func.func private @k2(memref<32x32xf32>, memref<1024xf32>)
func.func @alias_extends_lifetime(%in: memref<1024xf32>) {
  %a = memref.alloc() : memref<1024xf32>
  %b = memref.alloc() : memref<1024xf32>
  %av = memref.expand_shape %a [[0, 1]] output_shape [32, 32] : memref<1024xf32> into memref<32x32xf32>
  call @k2(%av, %b) : (memref<32x32xf32>, memref<1024xf32>) -> ()
  memref.dealloc %a : memref<1024xf32>
  memref.dealloc %b : memref<1024xf32>
  return
}

// -----

// Not planned: a returned buffer, a dynamic shape, and a function with a single candidate.
// CHECK-LABEL: func.func @escapes
// CHECK-NOT: kiln.buffer_plan
// CHECK: memref.alloc() : memref<16xf32>
// CHECK: memref.alloc(%{{.+}}) : memref<?xf32>
func.func @escapes(%n: index) -> memref<16xf32> {
  %a = memref.alloc() : memref<16xf32>
  %d = memref.alloc(%n) : memref<?xf32>
  %b = memref.alloc() : memref<16xf32>
  memref.dealloc %d : memref<?xf32>
  memref.dealloc %b : memref<16xf32>
  return %a : memref<16xf32>
}

// -----

// Kernels are left alone.
// CHECK-LABEL: func.func private @kernel
// CHECK-NOT: memref.view
func.func private @kernel(%x: memref<8xf32>) attributes {kiln.dispatch} {
  %a = memref.alloc() : memref<8xf32>
  %b = memref.alloc() : memref<8xf32>
  memref.dealloc %a : memref<8xf32>
  memref.dealloc %b : memref<8xf32>
  return
}
