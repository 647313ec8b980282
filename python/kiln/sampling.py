"""Choosing the next token from logits: greedy, or sampling with temperature, top-k and top-p.

Follows Hugging Face's order of logits processors (temperature, then top-k, then top-p) so a seeded
run is reproducible and greedy decoding picks exactly the argmax HF picks (the first maximum on ties).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .errors import KilnError


@dataclass(frozen=True)
class Sampler:
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: Optional[int] = None

    def __post_init__(self):
        if self.temperature <= 0:
            raise KilnError(f"temperature must be > 0, got {self.temperature} (use do_sample=False for greedy)")
        if self.top_k < 0:
            raise KilnError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise KilnError(f"top_p must be in (0, 1], got {self.top_p}")

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)

    def choose(self, logits: np.ndarray, rng: np.random.Generator) -> int:
        """The next token id from a `[vocab]` row of logits."""
        if not self.do_sample:
            return int(np.argmax(logits))
        scores = logits.astype(np.float64) / self.temperature
        if self.top_k and self.top_k < scores.size:
            kth = np.partition(scores, -self.top_k)[-self.top_k]
            scores = np.where(scores < kth, -np.inf, scores)
        if self.top_p < 1.0:
            order = np.argsort(scores)  # ascending, as HF's TopPLogitsWarper
            probs = _softmax(scores[order])
            remove = np.cumsum(probs) <= 1 - self.top_p
            remove[-1] = False  # always keep the most likely token
            scores[order[remove]] = -np.inf
        probs = _softmax(scores)
        return int(rng.choice(probs.size, p=probs))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x))
    return e / e.sum()
