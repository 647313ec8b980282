"""A dependency-free progress bar for long work (compiling, benchmarking, tuning) on stderr."""

from __future__ import annotations

import sys
import time


class Progress:
    """`with Progress(total, "compiling") as bar: ... bar.advance("item")`; silent when not a TTY
    unless `always` is set (then it prints one line per step, e.g. in CI logs)."""

    def __init__(self, total: int, label: str, stream=None, always: bool = False):
        self.total, self.label, self.done = max(total, 1), label, 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.enabled = self.tty or always
        self.start = time.perf_counter()

    def __enter__(self) -> "Progress":
        self._draw("")
        return self

    def advance(self, item: str = "") -> None:
        self.done += 1
        self._draw(item)

    def __exit__(self, *exc) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self, item: str) -> None:
        if not self.enabled:
            return
        width = 24
        filled = int(width * self.done / self.total)
        bar = "█" * filled + "·" * (width - filled)
        elapsed = time.perf_counter() - self.start
        line = f"{self.label} [{bar}] {self.done}/{self.total} {elapsed:5.1f}s {item}"
        if self.tty:
            self.stream.write("\r\x1b[2K" + line[:160])
        elif item:
            self.stream.write(line + "\n")
        self.stream.flush()
