"""The `kiln` command line.

    kiln compile IN.mlir --target cpu -o OUT.kiln
    kiln compile IN.mlir --target cuda --chip sm_90 -o OUT.kiln   # PTX (+ cubin with ptxas); rocm: hsaco
    kiln compile IN.mlir --target cuda --precision bf16 -o OUT.kiln  # GEMMs on tensor cores (bf16 in, f32 sums)
    kiln compile IN.mlir --compile-to tiled            # print that stage's IR (or write it to -o FILE)
    kiln compile EDITED.mlir --compile-from tiled -o OUT.kiln
    kiln compile IN.mlir --dump-phases-to DIR -o OUT.kiln
    kiln tune IN.mlir [--target cuda|rocm]             # search schedules (on the GPU: tensor-core tiles), cache the winners
    kiln bench [--suite full|smoke] [--threads 1,2] [-o bench.json] [--plot bench.png]
    kiln bench --target cuda [--suite full|smoke|model|check] [--artifacts DIR [--compile-only --chip sm_90]]
    kiln run [MODEL] --prompt "..." [--max-new-tokens N]  # default model: SmolLM2-135M-Instruct
    kiln run [MODEL] --target cuda                     # weights and KV cache on the GPU
    kiln import MODEL_OR_CONFIG.json                   # print the model's transformer-dialect IR
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
        with open(args.input, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise KilnError(f"cannot read {args.input}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise KilnError(f"cannot read {args.input}: it is not UTF-8 text ({e})") from e
    prints_ir = args.compile_to not in (None, "artifact")
    result = kiln.compile(
        text,
        target=args.target,
        compile_to=args.compile_to,
        compile_from=args.compile_from,
        dump_phases_to=args.dump_phases_to,
        output=None if prints_ir else args.output,
        chip=args.chip,
        precision=args.precision,
    )
    if isinstance(result, str):
        text = result if result.endswith("\n") else result + "\n"
        if args.output is None:
            sys.stdout.write(text)
            return 0
        try:
            with open(args.output, "w") as f:
                f.write(text)
        except OSError as e:
            raise KilnError(f"cannot write {args.output}: {e.strerror}") from e
    else:
        kernels = len(result.manifest["kernels"])  # (GPU targets return the artifact, not a Program)
        print(f"wrote {args.output}: {kernels} kernels, entry points: {', '.join(result.manifest['entry_points'])}",
              file=sys.stderr)
    return 0


def _tune(args) -> int:
    from . import tuning
    from .pipelines import gpu_mma

    try:
        with open(args.input) as f:
            text = f.read()
    except OSError as e:
        raise KilnError(f"cannot read {args.input}: {e.strerror}") from e
    cache = tuning.TuningCache()
    results = tuning.tune(text, reps=args.reps, cache=cache, target=args.target,
                          precision=gpu_mma.check_precision(args.precision or "f32"), chip=args.chip)
    if not results:
        print("nothing to tune: no kernel with static shapes" if args.target == "cpu" else
              "nothing to tune: no tensor-core GEMM (static, bf16/f16 operands or --precision bf16|f16)",
              file=sys.stderr)
        return 0
    print(f"{'kernel':<48} {'default ms':>10} {'tuned ms':>9} {'speedup':>7}  schedule")
    for r in results:
        d = r["default_ms"]
        speedup = f"{d / r['ms']:.2f}" if d else "-"
        print(f"{r['kernel']:<48} {d if d else float('nan'):>10.3f} {r['ms']:>9.3f} {speedup:>7}  {r['schedule']}")
        if r.get("wrong"):
            print(f"  {len(r['wrong'])} tiles computed a result other than the default tile's and were refused: "
                  f"{r['wrong']}", file=sys.stderr)
    print(f"winners stored in {cache.path}", file=sys.stderr)
    return 0


def _run(args) -> int:
    """Generate from a model, streaming tokens to stdout, then report speed on stderr."""
    from . import bandwidth, default_model
    from .model import compile_model
    from .runtime import Device

    if args.threads and args.target != "cpu":
        raise KilnError(f"--threads sizes the CPU's thread pool; target '{args.target}' runs on a GPU")
    device = Device(num_threads=args.threads) if args.threads else None
    path = args.model or default_model.path()
    model = compile_model(path, target=args.target, max_seq_len=args.max_seq_len, device=device, chip=args.chip,
                          quantized_weights=not args.float32_weights, precision=args.precision)
    out = model.generate(
        args.prompt, max_new_tokens=args.max_new_tokens, do_sample=args.temperature > 0,
        temperature=args.temperature or 1.0, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
        chat=not args.no_chat, callback=lambda _id, piece: (sys.stdout.write(piece), sys.stdout.flush()),
    )
    sys.stdout.write("\n")
    weights = model.weight_bytes_per_token
    decode_tps = out.decode_tokens_per_second
    used = weights * decode_tps
    speed = (f"prefill: {len(out.prompt_ids)} tokens, {out.prefill_tokens_per_second:.1f} tok/s | "
             f"decode: {len(out.step_seconds)} tokens, {decode_tps:.1f} tok/s | "
             f"{weights / 1e6:.0f} MB of weights per token: {used / 1e9:.1f} GB/s")
    device = model.program.device
    if args.target != "cpu":  # the CPU triad says nothing about GPU memory
        print(f"{speed} ({device.gpu.device_name})", file=sys.stderr)
        return 0
    limit = bandwidth.measured_bandwidth(device)
    print(f"{speed}, {100 * used / limit:.0f}% of the measured {limit / 1e9:.1f} GB/s "
          f"({device.num_threads} threads)", file=sys.stderr)
    return 0


def _import(args) -> int:
    """Print the transformer-dialect IR a model (or a bare config.json) imports to."""
    from . import default_model
    from .model import model_ir

    text = model_ir(args.model or default_model.path(), max_seq_len=args.max_seq_len,
                    prefill_chunk=args.prefill_chunk, quantized_weights=not args.float32_weights, target=args.target)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


def _bench(args) -> int:
    if args.target == "cuda":
        from .bench import gpu

        return gpu.main(args)
    if args.suite == "check" or args.artifacts or args.compile_only:
        raise KilnError("--suite check, --artifacts and --compile-only are for --target cuda")
    if args.suite == "model":
        from .bench import model

        return model.main(args)
    from . import bench

    return bench.main(args)


def main(argv=None) -> int:
    from .targets import STAGES, TARGETS

    parser = argparse.ArgumentParser(prog="kiln", description="Kiln: an MLIR compiler for transformers")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compile", help="compile transformer-dialect IR to a .kiln artifact")
    c.add_argument("input", help="input .mlir file")
    c.add_argument("-o", "--output", help="the .kiln artifact to write (with --compile-to STAGE: that stage's IR)")
    c.add_argument("--target", default="cpu", choices=TARGETS)
    c.add_argument("--chip", help="GPU targets: sm_80, sm_90, sm_90a (Hopper wgmma), ... (cuda; default sm_80) or gfx942, "
                   "gfx1100, ... (rocm; default gfx942)")
    c.add_argument("--precision", help="GPU targets: what GEMMs multiply in: f32 (default), bf16 or f16 "
                   "(f32 sums; tensor cores on cuda sm_80+, rocm CDNA2+/RDNA3+)")
    c.add_argument("--compile-to", choices=STAGES, help="stop after this stage and print its IR")
    c.add_argument("--compile-from", choices=STAGES[:-1],
                   help="the input is the IR after this stage; resume from the next one")
    c.add_argument("--dump-phases-to", metavar="DIR", help="write each stage's IR to DIR/NN-stage.mlir")
    c.set_defaults(run=_compile)
    t = sub.add_parser("tune", help="search each kernel's schedule on this machine; cache the winners")
    t.add_argument("input", help="input .mlir file")
    t.add_argument("--reps", type=int, default=5, help="timed calls per candidate")
    t.add_argument("--target", default="cpu", choices=TARGETS,
                   help="cpu: every kernel's schedule; cuda/rocm: the tensor-core GEMMs' tiles, on this GPU")
    t.add_argument("--precision", help="GPU targets: as for `kiln compile`")
    t.add_argument("--chip", help="GPU targets: the GPU's chip (default: what its driver reports; rocm needs it)")
    t.set_defaults(run=_tune)
    r = sub.add_parser("run", help="generate text with a model (default: the embedded SmolLM2-135M-Instruct)")
    r.add_argument("model", nargs="?", help="a Hugging Face directory or a .gguf file")
    r.add_argument("--prompt", default="What is the capital of France?")
    r.add_argument("--max-new-tokens", type=int, default=64)
    r.add_argument("--max-seq-len", type=int, help="prompt + generated tokens (default: min(context, 1024))")
    r.add_argument("--target", default="cpu", choices=TARGETS)
    r.add_argument("--chip", help="GPU targets: the chip to compile for (default: the GPU's)")
    r.add_argument("--precision", help="GPU targets: what GEMMs multiply in: f32 (default), bf16 or f16 "
                                       "(f32 sums; prefill on tensor cores)")
    r.add_argument("--threads", type=int, help="CPU threads (default: KILN_NUM_THREADS, else all cores)")
    r.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy")
    r.add_argument("--top-k", type=int, default=0)
    r.add_argument("--top-p", type=float, default=1.0)
    r.add_argument("--seed", type=int)
    r.add_argument("--no-chat", action="store_true", help="do not wrap the prompt in the chat template")
    r.add_argument("--float32-weights", action="store_true",
                   help="GGUF: dequantize every weight to float32 at load (default: decode steps read "
                        "Q4_0/Q4_1/Q8_0 blocks as stored, dequantizing in the kernels)")
    r.set_defaults(run=_run)
    im = sub.add_parser("import", help="print the transformer-dialect IR of a model or a config.json")
    im.add_argument("model", nargs="?", help="a Hugging Face directory, a .gguf file or a config.json")
    im.add_argument("--max-seq-len", type=int)
    im.add_argument("--prefill-chunk", type=int, default=128)
    im.add_argument("--target", default="cpu", choices=TARGETS,
                    help="the weight layout compile_model uses for this target (GPUs: W[N, K], not packed panels)")
    im.add_argument("--float32-weights", action="store_true",
                    help="GGUF: float32 weight arguments instead of quantized blocks")
    im.add_argument("-o", "--output", help="write the IR here instead of stdout")
    im.set_defaults(run=_import)
    b = sub.add_parser("bench", help="benchmark Kiln against numpy, PyTorch and (if installed) onnxruntime "
                                     "and IREE (JSON report + PNG plot)")
    b.add_argument("--suite", default="full", choices=("full", "smoke", "model", "check"),
                   help="kernels and a decoder stack (full, smoke), or an LLM's prefill and decode "
                   "against Hugging Face transformers (model); --target cuda: also check (every kernel "
                   "class and tiny models against PyTorch and HF on the GPU)")
    b.add_argument("--model", help="--suite model: a HF directory or .gguf (default: SmolLM2-135M-Instruct)")
    b.add_argument("--target", default="cpu", choices=("cpu", "cuda"),
                   help="cuda: GPU kernels and decode against PyTorch on the same GPU (reports bench-gpu.json/png)")
    b.add_argument("--artifacts", metavar="DIR", help="--target cuda: load the compiled programs from DIR "
                   "(written by --compile-only) instead of compiling them")
    b.add_argument("--compile-only", action="store_true", help="--target cuda: compile the suite into "
                   "--artifacts DIR for --chip and stop (no GPU needed)")
    b.add_argument("--chip", help="--compile-only: the GPU to compile for (default sm_90a: H100/H200, wgmma)")
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
