"""The compiler's stages and targets by name. MLIR-free, so the CLI and a runtime-only install (see
kiln/__init__.py) name them without importing the compiler."""

STAGES = ("transformer", "linalg", "dispatch", "tiled", "bufferized", "loops", "llvm", "artifact")
TARGETS = ("cpu", "cuda", "rocm")
GPU_TARGETS = ("cuda", "rocm")
