"""Tokenizers for Kiln's models: a `tokenizers.Tokenizer` plus what generation needs around it (special
token ids, the chat template, streaming detokenization), built from a Hugging Face directory
(tokenizer.json + tokenizer_config.json) or rebuilt from a GGUF file's `tokenizer.*` metadata.

Everything here matches what `transformers.AutoTokenizer` produces for the same files: same ids, same
chat-template text, so generation is token-for-token comparable with Hugging Face.
"""

from __future__ import annotations

import json
import os
from datetime import datetime

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer as _HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, processors
from tokenizers.decoders import DecodeStream

from kiln.errors import KilnError

SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")


def _token_content(value):
    """tokenizer_config.json spells a special token as a string or as an AddedToken dict."""
    if isinstance(value, dict):
        return value.get("content")
    return value


class Tokenizer:
    """Text <-> ids for one model, with its special tokens and chat template."""

    def __init__(self, backend: _HFTokenizer, *, special_tokens: dict[str, str | None] | None = None,
                 chat_template: str | None = None, eos_token_ids=(), bos_token_id: int | None = None,
                 pad_token_id: int | None = None, clean_up_tokenization_spaces: bool = False, source: str = ""):
        self.backend = backend
        # Padding and truncation stored in tokenizer.json are not applied by default (transformers does not
        # either): encode_batch pads explicitly.
        backend.no_padding()
        backend.no_truncation()
        self.source = source
        self.special_tokens = {k: v for k, v in (special_tokens or {}).items() if v is not None}
        self.chat_template = chat_template
        self.bos_token_id = bos_token_id if bos_token_id is not None else self._id_of("bos_token")
        self.pad_token_id = pad_token_id if pad_token_id is not None else self._id_of("pad_token")
        ids = set(int(i) for i in eos_token_ids)
        if (eos := self._id_of("eos_token")) is not None:
            ids.add(eos)
        self.eos_token_ids: set[int] = ids
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self._template = None

    def _id_of(self, name):
        token = self.special_tokens.get(name)
        return None if token is None else self.backend.token_to_id(token)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: list[str], add_special_tokens: bool = True, max_length: int | None = None):
        """Ids of several texts padded (right) to the longest: (ids int64 [B, T], attention_mask int64 [B, T]).

        With max_length, longer texts are truncated to it first (as `truncation=True, max_length=...`)."""
        if max_length is not None:
            self.backend.enable_truncation(max_length)
        try:
            encs = self.backend.encode_batch(list(texts), add_special_tokens=add_special_tokens)
        finally:
            self.backend.no_truncation()
        width = max((len(e.ids) for e in encs), default=0)
        pad = self.pad_token_id if self.pad_token_id is not None else 0
        ids = np.full((len(encs), width), pad, np.int64)
        mask = np.zeros((len(encs), width), np.int64)
        for row, e in enumerate(encs):
            ids[row, :len(e.ids)] = e.ids
            mask[row, :len(e.ids)] = 1
        return ids, mask

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        text = self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)
        if self.clean_up_tokenization_spaces:
            text = clean_up_tokenization(text)
        return text

    def decode_stream(self, skip_special_tokens: bool = True) -> "StreamDecoder":
        """An incremental detokenizer: feed ids as they are generated, get text pieces back."""
        return StreamDecoder(self, skip_special_tokens)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True, **kwargs) -> str:
        """The prompt text for a conversation, rendered as transformers renders the model's template."""
        if not self.chat_template:
            raise KilnError(f"{self.source or 'tokenizer'}: this model has no chat template")
        if self._template is None:
            self._template = compile_chat_template(self.chat_template)
        return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                     **{**self.special_tokens, **kwargs})


class StreamDecoder:
    """Turns a stream of ids into text pieces; a multi-byte character split across tokens is held back until
    complete, so the pieces concatenate to `decode(all_ids)`."""

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = True):
        self._tokenizer = tokenizer
        self._stream = DecodeStream(skip_special_tokens=skip_special_tokens)

    def push(self, token_id: int) -> str:
        """The text this id completes ('' while a character is still partial)."""
        piece = self._stream.step(self._tokenizer.backend, int(token_id))
        return piece or ""

    def __call__(self, ids):
        """Yields the text pieces of ids, one per id that completes text."""
        for i in ids:
            if piece := self.push(i):
                yield piece


def clean_up_tokenization(text: str) -> str:
    """transformers' `clean_up_tokenization` (spaces before punctuation and contractions removed)."""
    for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
                 (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(a, b)
    return text


def compile_chat_template(source: str):
    """A jinja2 template in the environment transformers renders chat templates in (sandboxed, trim_blocks,
    lstrip_blocks, loop controls, `raise_exception`, `strftime_now`, a non-escaping `tojson`, and the
    `{% generation %}` block rendered as its body)."""
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationBlock(Extension):
        """`{% generation %}...{% endgeneration %}` marks assistant text (for training masks): render the body."""
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.Scope(body, lineno=lineno)

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationBlock, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(source)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise KilnError(f"chat template does not parse: {e} (line {e.lineno})") from e


# ---------------------------------------------------------------------------------------------------------
# From a Hugging Face directory


def _as_id_list(value):
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def tokenizer_from_hf_dir(directory: str, config: dict | None = None) -> Tokenizer | None:
    """The tokenizer of a HF model directory, or None when it has no tokenizer.json."""
    path = os.path.join(directory, "tokenizer.json")
    if not os.path.isfile(path):
        return None
    try:
        backend = _HFTokenizer.from_file(path)
    except Exception as e:  # tokenizers raises its own Exception type
        raise KilnError(f"{path}: cannot read tokenizer: {e}") from e
    tok_config = _read_json(os.path.join(directory, "tokenizer_config.json"))
    special = {name: _token_content(tok_config.get(name)) for name in SPECIAL_TOKEN_NAMES}
    # special_tokens_map.json fills what tokenizer_config.json leaves out (older checkpoints).
    for name, value in _read_json(os.path.join(directory, "special_tokens_map.json")).items():
        if name in SPECIAL_TOKEN_NAMES and special.get(name) is None:
            special[name] = _token_content(value)
    template = tok_config.get("chat_template")
    if isinstance(template, list):  # named templates: use the default one
        named = {t.get("name"): t.get("template") for t in template}
        template = named.get("default") or next(iter(named.values()), None)
    jinja_path = os.path.join(directory, "chat_template.jinja")
    if template is None and os.path.isfile(jinja_path):
        with open(jinja_path, encoding="utf-8") as f:
            template = f.read()
    config = config or {}
    generation = _read_json(os.path.join(directory, "generation_config.json"))
    eos = _as_id_list(config.get("eos_token_id")) + _as_id_list(generation.get("eos_token_id"))
    return Tokenizer(backend, special_tokens=special, chat_template=template, eos_token_ids=eos,
                     clean_up_tokenization_spaces=bool(tok_config.get("clean_up_tokenization_spaces", False)),
                     source=path)


def _read_json(path):
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise KilnError(f"{path}: cannot read JSON: {e}") from e


# ---------------------------------------------------------------------------------------------------------
# From GGUF metadata

# Pre-tokenizer split regexes by `tokenizer.ggml.pre`, as transformers' GGUF converter applies them; a name
# not listed keeps the byte-level default (GPT-2's regex), which is what transformers does too.
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_TOKENIZER_SPLITS = {
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "smaug-bpe", "dbrx"), _LLAMA3_SPLIT),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen"), _QWEN2_SPLIT),
}

TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table that byte-level BPE vocabularies are spelled in."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def tokenizer_from_gguf_metadata(meta: dict, source: str) -> Tokenizer | None:
    """Rebuild the tokenizer a GGUF file describes (`tokenizer.ggml.*` keys), or None if it has none."""
    kind = meta.get("tokenizer.ggml.model")
    if kind is None:
        return None
    tokens = list(meta.get("tokenizer.ggml.tokens") or [])
    if not tokens:
        raise KilnError(f"{source}: GGUF tokenizer metadata has no tokenizer.ggml.tokens")
    token_types = list(meta.get("tokenizer.ggml.token_type") or [])
    if kind == "gpt2":
        backend = _byte_level_bpe(meta, tokens, token_types)
    elif kind == "llama":
        backend = _sentencepiece_bpe(meta, tokens, token_types)
    else:
        raise KilnError(f"{source}: GGUF tokenizer model {kind!r} is not supported (Kiln rebuilds 'gpt2' and 'llama')")

    def token(key):
        i = meta.get(f"tokenizer.ggml.{key}")
        return tokens[i] if i is not None and 0 <= i < len(tokens) else None

    special = {"bos_token": token("bos_token_id"), "eos_token": token("eos_token_id"),
               "unk_token": token("unknown_token_id"), "pad_token": token("padding_token_id")}
    add_bos = meta.get("tokenizer.ggml.add_bos_token", kind == "llama")
    add_eos = meta.get("tokenizer.ggml.add_eos_token", False)
    _set_post_processor(backend, special["bos_token"] if add_bos else None, special["eos_token"] if add_eos else None)
    eos = [meta[k] for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                             "tokenizer.ggml.eom_token_id") if k in meta]
    return Tokenizer(backend, special_tokens=special, chat_template=meta.get("tokenizer.chat_template"),
                     eos_token_ids=eos, bos_token_id=meta.get("tokenizer.ggml.bos_token_id"),
                     pad_token_id=meta.get("tokenizer.ggml.padding_token_id"), source=source)


def _set_post_processor(backend, bos, eos):
    single = ([f"{bos}:0"] if bos else []) + ["$A:0"] + ([f"{eos}:0"] if eos else [])
    pair = single + ([f"{bos}:1"] if bos else []) + ["$B:1"] + ([f"{eos}:1"] if eos else [])
    specials = [(t, backend.token_to_id(t)) for t in {bos, eos} if t]
    backend.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)


def _add_special_tokens(backend, tokens, token_types, byte_alphabet=None):
    """Control tokens become special (kept whole, skipped by decode), user-defined ones plain added tokens."""
    control = [AddedToken(t, normalized=False, special=True) for t, kind in zip(tokens, token_types)
               if kind == TOKEN_TYPE_CONTROL and (byte_alphabet is None or set(t) <= byte_alphabet)]
    if control:
        backend.add_special_tokens(control)
    user = [AddedToken(t, normalized=False, special=False) for t, kind in zip(tokens, token_types)
            if kind == TOKEN_TYPE_USER_DEFINED]
    if user:
        backend.add_tokens(user)


def _merges(meta, tokens, vocab, scores_by_token=None):
    if "tokenizer.ggml.merges" in meta:
        return [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    # No merges stored (sentencepiece files): recover them from the vocabulary, best score first, as
    # transformers' generate_merges does.
    if scores_by_token is None:
        scores_by_token = dict(zip(tokens, meta.get("tokenizer.ggml.scores") or [0.0] * len(tokens)))
    merges = []
    for merge, score in scores_by_token.items():
        local = [(merge[:i], merge[i:], score) for i in range(1, len(merge))
                 if merge[:i] in vocab and merge[i:] in vocab]
        local.sort(key=lambda x: (vocab[x[0]], vocab[x[1]]))
        merges.extend(local)
    merges.sort(key=lambda v: (v[2], len(v[0]), len(v[1])), reverse=True)
    return [(a, b) for a, b, _ in merges]


def _byte_level_bpe(meta, tokens, token_types):
    """Byte-level BPE (GPT-2 style), as transformers' GGUF converter builds it."""
    spelling = bytes_to_unicode()
    alphabet = set(spelling.values())
    vocab = {}
    for i, t in enumerate(tokens):
        key = t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8"))
        vocab.setdefault(key, i)
    backend = _HFTokenizer(models.BPE(vocab=vocab, merges=_merges(meta, tokens, vocab), fuse_unk=False,
                                      byte_fallback=False, continuing_subword_prefix="", end_of_word_suffix=""))
    split = PRE_TOKENIZER_SPLITS.get(meta.get("tokenizer.ggml.pre"))
    if split is None:
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    backend.decoder = decoders.ByteLevel()
    _add_special_tokens(backend, tokens, token_types, alphabet)
    return backend


def _sentencepiece_bpe(meta, tokens, token_types):
    """SentencePiece-style BPE with byte fallback (Llama 1/2, Mistral), as transformers' LlamaTokenizer builds it:
    no unk token in the model (unknown characters fall back to <0xNN> byte tokens), a `▁` prepended to the
    first word (transformers does this whatever `tokenizer.ggml.add_space_prefix` says, and so do we)."""
    vocab = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    backend = _HFTokenizer(models.BPE(vocab=vocab, merges=_merges(meta, tokens, vocab), fuse_unk=True,
                                      byte_fallback=True))
    backend.normalizer = None
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
    _add_special_tokens(backend, tokens, token_types)
    return backend
