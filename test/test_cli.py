"""The `kiln` command line, run as a user runs it (a subprocess): `kiln compile` writes artifacts that
load, prints or writes any stage's IR, dumps phases, resumes from a phase; every error is one
`kiln: error: ...` line on stderr and exit status 1, never a traceback.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import kiln
from kiln import reference as ref
from reference import check, randn

SOURCE = """
func.func @mlp(%x: tensor<4x32xf32>, %w: tensor<48x32xf32>) -> tensor<4x48xf32> {
  %h = transformer.linear %x, %w : (tensor<4x32xf32>, tensor<48x32xf32>) -> tensor<4x48xf32>
  %y = transformer.silu %h : tensor<4x48xf32>
  return %y : tensor<4x48xf32>
}
"""

_SCRIPT = os.path.join(os.path.dirname(sys.executable), "kiln")
KILN = [_SCRIPT] if os.path.exists(_SCRIPT) else [sys.executable, "-m", "kiln.cli"]
KILN_MODULE = [sys.executable, "-m", "kiln.cli"]


def run(*args, kiln_cmd=KILN, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(kiln_cmd + list(args), capture_output=True, text=True, timeout=300, cwd=cwd)


def assert_error(proc, message: str):
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("kiln: error: "), proc.stderr
    assert message in proc.stderr, proc.stderr
    assert proc.stdout == ""


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "mlp.mlir"
    path.write_text(SOURCE)
    return str(path)


@pytest.fixture(scope="module")
def compiled(source, tmp_path_factory):
    """`kiln compile IN -o OUT --dump-phases-to DIR`: (process, artifact path, phases dir)."""
    root = tmp_path_factory.mktemp("cli-out")
    out, phases = str(root / "mlp.kiln"), str(root / "phases")
    proc = run("compile", source, "-o", out, "--dump-phases-to", phases)
    return proc, out, phases


def check_artifact(path, rng):
    program = kiln.load(path)
    x, w = randn(rng, (4, 32)), randn(rng, (48, 32), scale=0.3)
    (y,) = program.mlp(x, w)
    check(y, ref.silu(ref.linear(x, w)), scale=2)


def test_compile_writes_an_artifact_that_loads(compiled, rng):
    proc, out, _ = compiled
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.strip() == f"wrote {out}: 2 kernels, entry points: mlp"
    check_artifact(out, rng)


def test_dump_phases_to(compiled):
    _, _, phases = compiled
    assert sorted(os.listdir(phases)) == [
        "00-input.mlir", "01-transformer.mlir", "02-linalg.mlir", "03-dispatch.mlir", "04-tiled.mlir",
        "05-bufferized.mlir", "06-loops.mlir", "07-llvm.mlir", "artifact.json",
    ]


def test_compile_to_prints_ir(source, compiled):
    proc = run("compile", source, "--compile-to", "dispatch")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    with open(os.path.join(compiled[2], "03-dispatch.mlir")) as f:
        assert proc.stdout == f.read()
    assert "kiln.dispatch" in proc.stdout


def test_compile_to_with_output_writes_the_ir(source, tmp_path):
    out = tmp_path / "tiled.mlir"
    proc = run("compile", source, "--compile-to=tiled", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert "scf.forall" in out.read_text()


def test_compile_from_a_dumped_phase(compiled, tmp_path, rng):
    out = str(tmp_path / "resumed.kiln")
    proc = run("compile", os.path.join(compiled[2], "04-tiled.mlir"), "--compile-from", "tiled", "-o", out)
    assert proc.returncode == 0, proc.stderr
    check_artifact(out, rng)


def test_python_dash_m(source):
    proc = run("compile", source, "--compile-to", "transformer", kiln_cmd=KILN_MODULE)
    assert proc.returncode == 0, proc.stderr
    assert "transformer.linear" in proc.stdout


def test_help():
    proc = run("compile", "--help")
    assert proc.returncode == 0
    for option in ("--compile-to", "--compile-from", "--dump-phases-to", "--target", "-o"):
        assert option in proc.stdout


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------


def test_missing_input(tmp_path):
    assert_error(run("compile", str(tmp_path / "absent.mlir"), "-o", str(tmp_path / "x.kiln")),
                 "absent.mlir: No such file or directory")


def test_input_is_a_directory(tmp_path):
    assert_error(run("compile", str(tmp_path), "-o", str(tmp_path / "x.kiln")), "Is a directory")


def test_input_not_utf8(tmp_path):
    path = tmp_path / "binary.mlir"
    path.write_bytes(b"\xff\xfe\x00func")
    assert_error(run("compile", str(path), "-o", str(tmp_path / "x.kiln")), "binary.mlir: it is not UTF-8 text")


def test_invalid_ir(tmp_path):
    path = tmp_path / "bad.mlir"
    path.write_text(
        "func.func @f(%x: tensor<2x7x13xf32>, %w: tensor<5x12xf32>) -> tensor<2x7x5xf32> {\n"
        "  %r = transformer.linear %x, %w : (tensor<2x7x13xf32>, tensor<5x12xf32>) -> tensor<2x7x5xf32>\n"
        "  return %r : tensor<2x7x5xf32>\n}\n")
    proc = run("compile", str(path), "-o", str(tmp_path / "x.kiln"))
    assert_error(proc, "invalid input IR")
    assert "input feature dimension (13) does not match weight dimension 1 (in_features = 12)" in proc.stderr
    assert not (tmp_path / "x.kiln").exists()


def test_needs_output(source):
    assert_error(run("compile", source), "kiln compile needs -o OUT.kiln (or --compile-to STAGE to print IR)")
    assert_error(run("compile", source, "--compile-to", "artifact"), "kiln compile needs -o OUT.kiln")


def test_output_directory_missing(source, tmp_path):
    assert_error(run("compile", source, "-o", str(tmp_path / "no" / "x.kiln")),
                 "cannot write artifact " + str(tmp_path / "no" / "x.kiln") + ": No such file or directory")
    assert_error(run("compile", source, "--compile-to", "linalg", "-o", str(tmp_path / "no" / "x.mlir")),
                 "No such file or directory")


def test_dump_directory_is_a_file(source, tmp_path):
    blocker = tmp_path / "phases"
    blocker.write_text("")
    assert_error(run("compile", source, "--compile-to", "linalg", "--dump-phases-to", str(blocker)),
                 "cannot create the phase dump directory")


def test_stage_order(source):
    assert_error(run("compile", source, "--compile-from", "tiled", "--compile-to", "linalg"),
                 "compile_to 'linalg' does not come after compile_from 'tiled'")


def test_wrong_stage_for_input(source, tmp_path):
    """Transformer IR declared to be bufferized IR: no recorded signatures, no tensor signatures."""
    assert_error(run("compile", source, "--compile-from", "bufferized", "-o", str(tmp_path / "x.kiln")),
                 "IR after stage 'bufferized' no longer shows the entry points' tensor signatures")


@pytest.mark.parametrize("args, message", [
    (["compile", "IN", "--compile-to", "bogus"], "argument --compile-to: invalid choice: 'bogus'"),
    (["compile", "IN", "--compile-from", "artifact"], "argument --compile-from: invalid choice: 'artifact'"),
    (["compile", "IN", "--target", "tpu"], "argument --target: invalid choice: 'tpu'"),
    (["compile"], "the following arguments are required: input"),
    ([], "the following arguments are required: command"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_usage_errors(source, args, message):
    """Usage errors are argparse's: a usage line, the error, exit status 2, no traceback."""
    proc = run(*[source if a == "IN" else a for a in args])
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("usage: kiln")
    assert message in proc.stderr
