"""`kiln.compile_model()`: a checkpoint in, a `CompiledModel` that generates text (or embeddings) out.

    model = kiln.compile_model("path/to/hf_dir_or.gguf", max_seq_len=1024)
    out = model.generate("What is the capital of France?", max_new_tokens=32)
    logits = model.forward(ids)            # decoders: [len(ids), vocab]
    vectors = model.embed(["a", "b"])      # encoders: mean-pooled, L2-normalised
    model.save("smollm2.kiln"); model = kiln.load("smollm2.kiln")

The model's architecture module (`kiln.models`) turns its config into transformer-dialect IR whose
parameters are entry-point arguments: the weights stay in the checkpoint (mmapped) and are bound at run
time. Compiled artifacts are cached, keyed by the model files, options, target and Kiln version.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Union

import numpy as np

from . import COMPILER_MISSING, __version__, artifact
from .errors import KilnError
from .progress import Progress
from .sampling import Sampler

DTYPES = ("float32",)


def compile_model(
    model,
    target: str = "cpu",
    dtype: str = "float32",
    max_seq_len: Optional[int] = None,
    *,
    example_args=None,
    device=None,
    cache: bool = True,
    progress: bool = True,
    prefill_chunk: int = 128,
    chip: Optional[str] = None,
    quantized_weights: bool = True,
    precision: Optional[str] = None,
):
    """Compiles a model for `target`.

    `model` is a Hugging Face directory (config.json + *.safetensors), a `.gguf` file, or a
    `torch.nn.Module` (with `example_args`, through the PyTorch frontend). `max_seq_len` bounds prompt +
    generated tokens (default: the model's context, at most 1024). Artifacts are cached under
    `$KILN_CACHE_DIR` (default ~/.cache/kiln) unless `cache=False`.

    GPU targets ("cuda", "rocm") open their `device` first (default: GPU 0), so a machine without the
    driver fails before compiling; weights are uploaded once and the KV caches stay in GPU memory.
    `chip` defaults to the device's (cuda) or the target's default chip (rocm).

    With `quantized_weights`, linear weights a GGUF file stores as Q4_0/Q4_1/Q8_0 blocks are read as
    stored by decode steps (and a prefill's output head), dequantized inside the kernels: 4.5-8.5
    bits per weight read instead of 32, with the same float32 values (prefill GEMMs use float32
    copies). Off, every weight is dequantized to float32 at load.

    `precision` (GPU targets) is what GEMM-shaped contractions multiply in: "f32" (the default), "bf16"
    or "f16", with f32 sums, as for `kiln.compile`: prefill GEMMs round their operands on the way in
    (on tensor cores where the shapes allow), decode matvecs in their lanes. A GGUF's blocks are read
    as stored and multiplied in f32 whatever the precision.
    """
    if COMPILER_MISSING:
        raise KilnError(COMPILER_MISSING)
    if _is_torch_module(model):
        from .frontends.torch import compile_module

        return compile_module(model, example_args, target=target)
    if dtype not in DTYPES:
        raise KilnError(f"dtype '{dtype}' is not supported yet; supported: {', '.join(DTYPES)}")
    precision_option = _precision_option(target, precision)
    device, chip = _target_device(target, device, chip)
    from .loaders import load_checkpoint

    checkpoint = load_checkpoint(model)
    options = _options(checkpoint.config, target, dtype, max_seq_len, prefill_chunk)
    options.update(_weight_layout(target, quantized_weights), **precision_option)
    if chip is not None:
        options["chip"] = chip  # in the cache key: an artifact for another chip is never reused
    graph = _build_graph(checkpoint, options)
    params = graph.bind(checkpoint.tensor, checkpoint.blocks)  # a bad tensor fails before compiling
    path = os.path.join(_cache_dir(), f"{_cache_key(checkpoint, options)}.kiln")
    program = None
    if cache and os.path.exists(path):
        try:
            program = _load_program(path, checkpoint, device)
        except KilnError:
            program = None  # stale or damaged: compile again and replace it
    if program is None:
        label = f"compiling {os.path.basename(os.path.normpath(str(model)))}"
        program = _compile_graph(graph, options, checkpoint, path if cache else None, device, label, progress)
    return CompiledModel(program, graph, checkpoint, options, params)


def compile_model_to_file(model, path: str, target: str = "cuda", chip: Optional[str] = None,
                          max_seq_len: Optional[int] = None, prefill_chunk: int = 128, progress: bool = True,
                          quantized_weights: bool = True, precision: Optional[str] = None) -> None:
    """Compiles a checkpoint for `target` without opening a device and writes the saved model to `path`
    (what `CompiledModel.save` writes): cross-compiling for a GPU this machine does not have. The
    machine with the GPU runs it with `kiln.load(path, checkpoint=...)`, which needs no compiler.
    `quantized_weights` and `precision` as for `compile_model`."""
    if COMPILER_MISSING:
        raise KilnError(COMPILER_MISSING)
    from .loaders import load_checkpoint
    from .pipelines import GPU_TARGETS, cuda, rocm

    if target not in GPU_TARGETS:
        raise KilnError(f"compile_model_to_file cross-compiles for the GPU targets ({', '.join(GPU_TARGETS)}); "
                        f"for '{target}' use compile_model(...).save(path)")
    checkpoint = load_checkpoint(model)
    options = _options(checkpoint.config, target, "float32", max_seq_len, prefill_chunk)
    options.update(_weight_layout(target, quantized_weights), **_precision_option(target, precision),
                   chip=chip or (cuda if target == "cuda" else rocm).DEFAULT_CHIP)
    graph = _build_graph(checkpoint, options)
    graph.bind(checkpoint.tensor, checkpoint.blocks)  # a bad tensor fails before compiling
    label = f"compiling {os.path.basename(os.path.normpath(str(model)))} for {options['chip']}"
    _compile_graph(graph, options, checkpoint, path, None, label, progress, saved=True)


def model_ir(model: str, max_seq_len: Optional[int] = None, prefill_chunk: int = 128,
             quantized_weights: bool = True, target: str = "cpu") -> str:
    """The transformer-dialect IR `compile_model` would compile for a checkpoint for `target`, or for a
    bare config.json (no weights needed: parameters are entry-point arguments)."""
    if str(model).endswith(".json"):
        try:
            with open(model) as f:
                config = json.load(f)
        except (OSError, ValueError) as e:
            raise KilnError(f"cannot read the config {model}: {e}") from e
    else:
        from .loaders import load_checkpoint

        config = load_checkpoint(model)
    options = _options(config if isinstance(config, dict) else config.config, target, "float32", max_seq_len,
                       prefill_chunk)
    options.update(_weight_layout(target, quantized_weights))
    return str(_build_graph(config, options).module)


def _precision_option(target: str, precision: Optional[str]) -> dict:
    """The options entry of a GEMM precision other than f32 (in the cache key), checked: GPU targets
    only."""
    if precision in (None, "f32"):
        return {}
    from .pipelines import GPU_TARGETS, gpu_mma

    gpu_mma.check_precision(precision)
    if target not in GPU_TARGETS:
        raise KilnError(f"precision '{precision}' applies to the GPU targets ({', '.join(GPU_TARGETS)}); "
                        f"target '{target}' multiplies in f32")
    return {"precision": precision}


def _weight_layout(target: str, quantized_weights: bool) -> dict:
    """How a target's kernels read linear weights: GGUF blocks as stored by decode steps (on GPUs,
    `gpu_matvec`'s dequantized matvec: a warp per row of blocks), and on the CPU, panels packed once
    at load for prefill GEMMs (models.graph.panel_params; GPU GEMMs read W[N, K] as it is)."""
    return {"quantized_weights": bool(quantized_weights), "panel_weights": target == "cpu"}


def load(path: str, device=None, checkpoint: Optional[str] = None):
    """Loads a `.kiln` file: a `CompiledModel` if it was saved by `CompiledModel.save` (its weights are
    read from the checkpoint files it names), else a `kiln.runtime.Program`.

    A saved model runs without the compiler (the MLIR wheels): compile on one machine, run on another.
    `checkpoint` says where the weights are when they moved with it (another folder or machine); the
    files there must have the content (sha256) they had when the model was saved."""
    from .runtime import load as load_program

    art = artifact.read(path, expected={"kiln_version": __version__})
    if "model" not in art.manifest:
        return load_program(path, device)
    from .loaders import load_checkpoint

    info = art.manifest["model"]
    if checkpoint is None:
        found = load_checkpoint(info["checkpoint"])
        if _file_stamps(found) != info["files"]:
            raise KilnError(f"{path} was compiled from {info['checkpoint']}, whose files have changed since: "
                            "compile the model again")
    else:
        found = load_checkpoint(checkpoint)
        if "sha256" not in info:
            raise KilnError(f"{path} records no content hashes of its weight files (it is a cached artifact, "
                            "not a saved model): it can only be loaded with the files it was compiled from")
        if _file_hashes(found) != info["sha256"]:
            raise KilnError(f"{path} was compiled from other weights than {checkpoint} holds (their sha256 "
                            "differ): compile the model from these files")
    from .runtime import load_artifact

    return _model(load_artifact(art, device, path), found, info["options"], info.get("graph"))


def _target_device(target: str, device, chip):
    """(device, chip) for `target`: a GPU target's device is opened here, before any compile, so a
    missing driver or GPU is reported at once (KilnError from the driver, naming the library)."""
    from .pipelines import GPU_TARGETS, cuda, rocm, stage_functions

    stage_functions(target)  # an unknown target fails with the list of targets
    if target not in GPU_TARGETS:
        if chip is not None:
            raise KilnError(f"chip= applies to the GPU targets (cuda, rocm), not to '{target}'")
        return device, None
    from .runtime import Device

    driver = "cuda" if target == "cuda" else "hip"
    if device is None:
        device = Device(driver)
    elif device.driver != driver:
        raise KilnError(f"target '{target}' runs on a '{driver}' device, got a '{device.driver}' one")
    return device, chip or device.gpu.chip or (cuda if target == "cuda" else rocm).DEFAULT_CHIP


def _is_torch_module(model) -> bool:
    """An nn.Module, checked without importing torch (a process that never imported it has none)."""
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def _options(config: dict, target, dtype, max_seq_len, prefill_chunk) -> dict:
    if max_seq_len is None:
        max_seq_len = min(int(config.get("max_position_embeddings") or 1024), 1024)
    if max_seq_len < 2:
        raise KilnError(f"max_seq_len must be at least 2, got {max_seq_len}")
    chunk = max(1, min(prefill_chunk, max_seq_len))
    # A quarter-size chunk too, for the tail of a prompt (a short chat prompt would otherwise be
    # padded to a whole chunk: 37 tokens computed as 128).
    small = chunk // 4 if chunk >= 32 else 0
    return {"target": target, "dtype": dtype, "max_seq_len": int(max_seq_len), "prefill_chunk": chunk,
            "prefill_small_chunk": small}


def _build_graph(checkpoint, options: dict):
    """The ModelGraph for a checkpoint (or a bare config dict, for `model_ir`)."""
    from . import models

    config = checkpoint if isinstance(checkpoint, dict) else checkpoint.config
    chunk = options["prefill_chunk"]
    chunks = tuple(c for c in (1, options.get("prefill_small_chunk", 0), chunk) if c)
    from mlir import ir

    with ir.Context(), ir.Location.unknown():
        if config.get("model_type") in ("bert",):
            return models.build(config, seq_len=options["max_seq_len"])
        extra = {"panels": True} if options.get("panel_weights") else {}
        formats = stored_block_formats(checkpoint) if options.get("quantized_weights") else {}
        if formats:
            extra["quantized"] = formats
        return models.build(config, max_seq_len=options["max_seq_len"], chunks=chunks, logits_chunk=chunk,
                            **extra)


def stored_block_formats(checkpoint) -> dict:
    """HF name -> transformer.dequantize format of every tensor the checkpoint stores in blocks Kiln's
    kernels read as they are (GGUF Q4_0/Q4_1/Q8_0)."""
    if isinstance(checkpoint, dict):
        return {}
    from .loaders.gguf import BLOCK_FORMATS

    return {name: BLOCK_FORMATS[checkpoint.stored_dtype(name)] for name in checkpoint.names()
            if checkpoint.stored_dtype(name) in BLOCK_FORMATS}


def _compile_graph(graph, options, checkpoint, cache_path, device, label, progress, saved=False):
    from . import compile as kiln_compile
    from .pipelines import STAGES

    with Progress(len(STAGES), label, always=False) as bar:
        bar.enabled = bar.enabled and progress
        tmp = None
        if cache_path:
            os.makedirs(os.path.dirname(os.path.abspath(cache_path)), exist_ok=True)
            tmp = f"{cache_path}.{os.getpid()}.compiling"
        program = kiln_compile(graph.module, target=options["target"], output=tmp, device=device,
                               on_stage=lambda name, _m: bar.advance(name), chip=options.get("chip"),
                               precision=options.get("precision"))
        bar.advance("artifact")
    if tmp:
        art = artifact.read(tmp)
        art.manifest["model"] = _model_manifest(checkpoint, options, graph if saved else None)
        artifact.write(cache_path, art)
        os.unlink(tmp)
    return program


def _model_manifest(checkpoint, options, graph=None) -> dict:
    """The manifest's "model" entry. A saved model (with its `graph`) also records its weight files'
    sha256 and the graph's parameters, so it loads from elsewhere without the compiler."""
    info = {"checkpoint": os.path.abspath(checkpoint.path), "files": _file_stamps(checkpoint), "options": options}
    if graph is not None:
        from .params import graph_to_json

        info.update(sha256=_file_hashes(checkpoint), graph=graph_to_json(graph))
    return info


def _load_program(path, checkpoint, device):
    """The Program of a cached model artifact, after checking it was compiled from `checkpoint`'s files."""
    from .runtime import load_artifact

    art = artifact.read(path, expected={"kiln_version": __version__})
    info = art.manifest.get("model")
    if info is None or info.get("files") != _file_stamps(checkpoint):
        raise KilnError(f"{path} was not compiled from these model files")
    return load_artifact(art, device, path)


def _model(program, checkpoint, options, graph_json=None):
    """The CompiledModel of a loaded program: its graph read from the saved description (no MLIR
    needed) or, for artifacts saved without one, rebuilt."""
    from .params import graph_from_json

    graph = graph_from_json(graph_json) if graph_json else _build_graph(checkpoint, options)
    return CompiledModel(program, graph, checkpoint, options, graph.bind(checkpoint.tensor, checkpoint.blocks))


def _file_hashes(checkpoint) -> list:
    """sha256 of every file the model is read from, in `_file_stamps` order: what a saved model that
    moved is checked by."""
    hashes = []
    for f in sorted(checkpoint.files):
        digest = hashlib.sha256()
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 24), b""):
                digest.update(block)
        hashes.append(digest.hexdigest())
    return hashes


def _file_stamps(checkpoint) -> list:
    """(path, size, mtime) of every file the model is read from: what the artifact cache is keyed by."""
    stamps = []
    for f in sorted(checkpoint.files):
        st = os.stat(f)
        stamps.append([os.path.abspath(f), st.st_size, st.st_mtime_ns])
    return stamps


def _cache_key(checkpoint, options) -> str:
    from .pipelines.cpu import host_cpu

    key = {"files": _file_stamps(checkpoint), "options": options, "kiln": __version__, "cpu": host_cpu(),
           "compiler": _compiler_fingerprint()}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def _compiler_fingerprint() -> str:
    """A hash of what decides the generated code (the native passes, the pipelines, the model
    builders), so a changed compiler never reuses an artifact an older one cached."""
    from . import _kiln, models, pipelines

    digest = hashlib.sha256()
    files = [_kiln.__file__]
    for package in (pipelines, models):
        directory = os.path.dirname(package.__file__)
        files += sorted(os.path.join(directory, f) for f in os.listdir(directory) if f.endswith(".py"))
    for f in files:
        with open(f, "rb") as fh:
            digest.update(hashlib.sha256(fh.read()).digest())
    return digest.hexdigest()[:16]


def _cache_dir() -> str:
    root = os.environ.get("KILN_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "kiln")
    return os.path.join(root, "models")


@dataclass
class Generation:
    """What `generate` returns: the new token ids and text, and how fast they came."""

    prompt_ids: list
    ids: list
    text: str
    prefill_seconds: float
    decode_seconds: float
    stopped_by: str  # "eos", "stop", "max_new_tokens" or "max_seq_len"
    step_seconds: list = field(default_factory=list)

    @property
    def prefill_tokens_per_second(self) -> float:
        return len(self.prompt_ids) / self.prefill_seconds if self.prefill_seconds else float("nan")

    @property
    def decode_tokens_per_second(self) -> float:
        """Tokens after the first (which prefill produces) per second of decode steps."""
        steps = len(self.step_seconds)
        return steps / self.decode_seconds if self.decode_seconds else float("nan")


class CompiledModel:
    """A compiled model bound to its checkpoint's weights, with its KV cache kept in device buffers."""

    def __init__(self, program, graph, checkpoint, options: dict, params: list):
        self.program = program
        self.graph = graph
        self.checkpoint = checkpoint
        self.options = options
        self.config = checkpoint.config
        self.tokenizer = checkpoint.tokenizer
        self.max_seq_len = options["max_seq_len"]
        device = program.device
        self._params = [device.wrap(a) if device.driver == "cpu" else device.upload(a) for a in params]
        # Zeroed: GPU attention reads the whole cache capacity (unwritten rows masked, but never NaN).
        self._caches = [device.upload(np.zeros(s, np.float32)) for s in graph.cache_shapes]
        self._calls = {}

    # -- decoders ---------------------------------------------------------------------------------

    @property
    def weight_bytes_per_token(self) -> int:
        """Bytes of weights a decode step reads: every parameter but the embedding table (gathered one
        row at a time; a tied output head is its own parameter), the float32 copies of weights it
        reads as quantized blocks and the panels only prefill GEMMs read."""
        names = {p.name for p in self.graph.params}
        total = 0
        for p, buf in zip(self.graph.params, self._params):
            if p.name == "embed" or p.panel or f"{p.name}.data" in names:
                continue
            total += int(np.prod(buf.shape)) * buf.dtype.itemsize
        return total

    def forward(self, input_ids) -> np.ndarray:
        """Logits `[len(input_ids), vocab]` for a sequence of token ids (decoders), from a fresh cache."""
        self._require("decoder", "forward")
        ids = self._ids(input_ids)
        chunk = self.options["prefill_chunk"]
        entry = f"logits_{chunk}"
        self._reset_cache()
        out = []
        for start in range(0, len(ids), chunk):
            piece = ids[start:start + chunk]
            logits = self._run(entry, piece, start, np.arange(chunk, dtype=np.int64))
            out.append(logits[: len(piece)].copy())
        return np.concatenate(out, axis=0)

    def generate(
        self,
        prompt: Union[str, Sequence[int], list],
        max_new_tokens: int = 32,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: Optional[int] = None,
        stop: Optional[Sequence] = None,
        callback: Optional[Callable[[int, str], None]] = None,
        chat: Optional[bool] = None,
    ) -> Generation:
        """Prefill the prompt, then decode up to `max_new_tokens` tokens.

        `prompt`: text (wrapped in the model's chat template when it has one, unless `chat=False`), a
        list of chat messages, or token ids. Generation stops at an end-of-sequence token, at any id or
        string in `stop`, or at `max_seq_len`. `callback(token_id, text_piece)` streams tokens."""
        self._require("decoder", "generate")
        sampler = Sampler(do_sample, temperature, top_k, top_p, seed)
        rng = sampler.rng()
        prompt_ids = self._prompt_ids(prompt, chat)
        stop_ids, stop_texts = _split_stops(stop)
        eos = set(self.tokenizer.eos_token_ids) if self.tokenizer else set()
        config_eos = self.config.get("eos_token_id")
        eos |= set(config_eos if isinstance(config_eos, list) else [config_eos] if config_eos is not None else [])
        stream = self.tokenizer.decode_stream() if self.tokenizer and callback else None

        t0 = time.perf_counter()
        logits = self._prefill(prompt_ids)
        prefill_seconds = time.perf_counter() - t0
        ids, steps, stopped_by, text_so_far = [], [], "max_new_tokens", ""
        position = len(prompt_ids)
        decode_start = time.perf_counter()
        while len(ids) < max_new_tokens:
            token = sampler.choose(logits, rng)
            ids.append(token)
            if callback is not None:
                piece = stream.push(token) if stream else ""
                callback(token, piece)
            if token in eos:
                stopped_by = "eos"
                break
            if token in stop_ids:
                stopped_by = "stop"
                break
            if stop_texts and self.tokenizer:
                text_so_far = self.tokenizer.decode(ids)
                if any(s in text_so_far for s in stop_texts):
                    stopped_by = "stop"
                    break
            if len(ids) >= max_new_tokens:
                break
            if position >= self.max_seq_len:
                stopped_by = "max_seq_len"
                break
            t = time.perf_counter()
            logits = self._decode(token, position)
            steps.append(time.perf_counter() - t)
            position += 1
        decode_seconds = time.perf_counter() - decode_start
        text = self.tokenizer.decode(ids) if self.tokenizer else ""
        return Generation(prompt_ids, ids, text, prefill_seconds, sum(steps) if steps else decode_seconds,
                          stopped_by, steps)

    def _prompt_ids(self, prompt, chat) -> list:
        if isinstance(prompt, str) or (isinstance(prompt, list) and prompt and isinstance(prompt[0], dict)):
            if self.tokenizer is None:
                raise KilnError("this model has no tokenizer: pass token ids")
            if isinstance(prompt, str):
                use_chat = chat if chat is not None else self.tokenizer.chat_template is not None
                if not use_chat:
                    return self.tokenizer.encode(prompt)
                prompt = [{"role": "user", "content": prompt}]
            text = self.tokenizer.apply_chat_template(prompt, add_generation_prompt=True)
            return self.tokenizer.encode(text, add_special_tokens=False)
        return self._ids(prompt)

    def _ids(self, input_ids) -> np.ndarray:
        ids = np.asarray(input_ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            raise KilnError("the prompt is empty: give at least one token")
        if ids.size > self.max_seq_len:
            raise KilnError(f"{ids.size} tokens do not fit in max_seq_len {self.max_seq_len}: compile with a "
                            "larger max_seq_len")
        vocab = self.graph.vocab_size
        bad = ids[(ids < 0) | (ids >= vocab)]
        if bad.size:
            raise KilnError(f"token id {int(bad[0])} is outside the vocabulary (0..{vocab - 1})")
        return ids

    def _prefill(self, prompt_ids) -> np.ndarray:
        """Runs the prompt through in chunks: whole chunks, then the tail in quarter-size chunks when
        it is at most half a chunk (less padding computed), a single token as a decode step."""
        ids = self._ids(prompt_ids)
        big, small = self.options["prefill_chunk"], self.options.get("prefill_small_chunk", 0)
        logits, start = None, 0
        while start < len(ids):
            remaining = len(ids) - start
            chunk = small if small and remaining <= big // 2 else big
            piece = ids[start:start + chunk]
            if len(piece) == 1:
                logits = self._decode(int(piece[0]), start)
            else:
                logits = self._run(f"prefill_{chunk}", piece, start, np.array([len(piece) - 1]))[0]
            start += len(piece)
        return logits

    def _decode(self, token: int, position: int) -> np.ndarray:
        return self._run("decode", np.array([token]), position, np.zeros(1, np.int64))[0]

    def _run(self, entry: str, piece: np.ndarray, start: int, rows: np.ndarray) -> np.ndarray:
        """One call of a prefill/decode/logits entry point on `piece` (padded to the chunk) at `start`."""
        call = self._calls.get(entry)
        if call is None:
            chunk = self.graph.entry_points[entry]
            ep = self.program.entry_point(entry)
            device = self.program.device
            ids = device.allocate((1, chunk), np.int64)
            positions = device.allocate((chunk,), np.int64)
            row_ids = device.allocate((len(rows),), np.int64)
            logits = device.allocate((len(rows), self.graph.vocab_size), np.float32)
            bound = ep.bind(ids, positions, 0, row_ids, *self._params, *self._caches, out=[logits])
            call = self._calls[entry] = (chunk, bound, ids, positions, row_ids, logits)
        chunk, bound, ids, positions, row_ids, logits = call
        padded = np.zeros((1, chunk), np.int64)
        padded[0, : len(piece)] = piece
        ids.write(padded)
        positions.write(np.arange(start, start + chunk, dtype=np.int64))
        row_ids.write(np.asarray(rows, np.int64))
        bound.set_scalar(2, start)
        bound()
        # GPU logits come back to the host for sampling; CPU ones are read where they lie.
        return logits.host_view() if logits.device.driver == "cpu" else logits.to_numpy()

    def _reset_cache(self) -> None:
        for c in self._caches:
            c.write(np.zeros(c.shape, c.dtype))

    def _require(self, kind: str, what: str) -> None:
        if self.graph.kind != kind:
            raise KilnError(f"{what}() needs a {kind} model; this one is a {self.graph.kind} "
                            f"({self.config.get('model_type')})")

    # -- encoders ---------------------------------------------------------------------------------

    def hidden_states(self, input_ids, token_type_ids=None) -> np.ndarray:
        """Last hidden states `[len(input_ids), hidden]` of one sequence (encoders): it is padded to the
        shortest compiled length it fits, and the padding is masked out of attention."""
        self._require("encoder", "hidden_states")
        ids = self._ids(input_ids)
        n = len(ids)
        # The shortest compiled length the sequence fits (encoders compile a few padded lengths).
        entry, length = min(((e, s) for e, s in self.graph.entry_points.items() if s >= n), key=lambda es: es[1])
        types = np.zeros(n, np.int64) if token_type_ids is None else np.asarray(token_type_ids, np.int64).reshape(-1)
        if types.shape != ids.shape:
            raise KilnError(f"token_type_ids has {types.size} entries for {n} tokens")
        kinds = next((p.shape[0] for p in self.graph.params if p.name == "type_embed"), 1)
        if types.size and (types.min() < 0 or types.max() >= kinds):
            raise KilnError(f"token type ids must be in 0..{kinds - 1}, got {int(types.min())}..{int(types.max())}")
        padded = np.zeros((2, length), np.int64)
        padded[0, :n], padded[1, :n] = ids, types
        mask = np.zeros((1, length), np.float32)
        mask[0, :n] = 1.0
        (hidden,) = self.program.entry_point(entry)(padded[:1], padded[1:], mask, *self._params)
        return np.array(hidden[0, :n])

    def embed(self, texts: Sequence[str], normalize: bool = True) -> np.ndarray:
        """Sentence embeddings `[len(texts), hidden]`: mean pooling over real tokens, then L2
        normalisation, as sentence-transformers does. Texts longer than the compiled length are
        truncated as the tokenizer truncates (keeping the final special token)."""
        self._require("encoder", "embed")
        if self.tokenizer is None:
            raise KilnError("this model has no tokenizer")
        out = []
        for text in texts:
            ids, real = self.tokenizer.encode_batch([text], max_length=self.max_seq_len)
            hidden = self.hidden_states(ids[0][real[0] == 1])
            pooled = hidden.astype(np.float64).mean(axis=0)
            if normalize:
                pooled /= max(np.linalg.norm(pooled), 1e-12)
            out.append(pooled.astype(np.float32))
        return np.stack(out)

    # -- saving -----------------------------------------------------------------------------------

    def save(self, path: str) -> None:
        """Writes the compiled artifact plus references to the checkpoint files (not the weights): their
        paths, and their sha256 for loading them from elsewhere (`kiln.load(path, checkpoint=...)`)."""
        manifest = dict(self.program.manifest)
        manifest["model"] = _model_manifest(self.checkpoint, self.options, self.graph)
        if self.program.device.driver == "cpu":
            blobs = {"executable": self.program.executable.blob}
        else:
            blobs = self.program.blobs  # kernels and constants, as loaded
        artifact.write(path, artifact.Artifact(manifest, blobs))

    def __repr__(self) -> str:
        return (f"CompiledModel({self.config.get('model_type')}, {len(self.graph.params)} parameters, "
                f"max_seq_len={self.max_seq_len}, target={self.options['target']})")


def _split_stops(stop) -> tuple:
    ids, texts = set(), []
    for s in stop or ():
        if isinstance(s, str):
            texts.append(s)
        else:
            ids.add(int(s))
    return ids, texts
