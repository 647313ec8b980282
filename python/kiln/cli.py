"""The `kiln` command line.

    kiln compile IN.mlir --target cpu -o OUT.kiln
    kiln compile IN.mlir --compile-to tiled            # print that stage's IR
    kiln compile EDITED.mlir --compile-from tiled -o OUT.kiln
    kiln compile IN.mlir --dump-phases-to DIR -o OUT.kiln
    kiln bench [--suite full|smoke] [--threads 1,2] [-o bench.json] [--plot bench.png]
"""

from __future__ import annotations

import argparse
import sys

from .errors import KilnError


def _compile(args) -> int:
    import kiln

    if args.output is None and args.compile_to in (None, "artifact"):
        raise KilnError("kiln compile needs -o OUT.kiln (or --compile-to STAGE to print IR)")
    try:
        with open(args.input) as f:
            text = f.read()
    except OSError as e:
        raise KilnError(f"cannot read {args.input}: {e.strerror}") from e
    result = kiln.compile(
        text,
        target=args.target,
        compile_to=args.compile_to,
        compile_from=args.compile_from,
        dump_phases_to=args.dump_phases_to,
        output=args.output,
    )
    if isinstance(result, str):
        sys.stdout.write(result + "\n")
    else:
        kernels = len(result.manifest["kernels"])
        print(f"wrote {args.output}: {kernels} kernels, entry points: {', '.join(result.entry_points)}",
              file=sys.stderr)
    return 0


def _bench(args) -> int:
    from . import bench

    return bench.main(args)


def main(argv=None) -> int:
    from .pipelines import STAGES, TARGETS

    parser = argparse.ArgumentParser(prog="kiln", description="Kiln: an MLIR compiler for transformers")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compile", help="compile transformer-dialect IR to a .kiln artifact")
    c.add_argument("input", help="input .mlir file")
    c.add_argument("-o", "--output", help="the .kiln artifact to write")
    c.add_argument("--target", default="cpu", choices=TARGETS)
    c.add_argument("--compile-to", choices=STAGES, help="stop after this stage and print its IR")
    c.add_argument("--compile-from", choices=STAGES[:-1],
                   help="the input is the IR after this stage; resume from the next one")
    c.add_argument("--dump-phases-to", metavar="DIR", help="write each stage's IR to DIR/NN-stage.mlir")
    c.set_defaults(run=_compile)
    b = sub.add_parser("bench", help="benchmark Kiln against numpy and PyTorch (JSON report + PNG plot)")
    b.add_argument("--suite", default="full", choices=("full", "smoke"))
    b.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    b.add_argument("--rounds", type=int, default=4, help="interleaved rounds; medians over all samples")
    b.add_argument("--reps", type=int, default=5, help="timed calls per round")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("-o", "--output", default="bench.json", help="JSON report path")
    b.add_argument("--plot", default="bench.png", help="PNG plot path ('' for none)")
    b.set_defaults(run=_bench)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except KilnError as e:
        print(f"kiln: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
