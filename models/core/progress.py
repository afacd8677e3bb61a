"""Progress lines for long steps: n of N, rate and time left, at most one line every few seconds."""

from __future__ import annotations

import time
from typing import Callable


def duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    """`update(done)` logs `<what>: done/total (pct), <rate> <unit>/s, <time> left` when at least
    `every_s` seconds passed since the last line, and always at the end."""

    def __init__(self, what: str, total: int, log: Callable[[str], None], unit: str = "steps",
                 every_s: float = 15.0, start: int = 0):
        self.what, self.total, self.log, self.unit, self.every_s = what, total, log, unit, every_s
        self.start, self.t0 = start, time.perf_counter()
        self.last = self.t0

    def line(self, done: int, extra: str = "") -> str:
        elapsed = time.perf_counter() - self.t0
        rate = (done - self.start) / elapsed if elapsed > 0 else 0.0
        left = (self.total - done) / rate if rate > 0 else float("nan")
        eta = duration(left) if left == left else "?"
        pct = 100.0 * done / self.total if self.total else 100.0
        return (f"{self.what}: {done}/{self.total} {self.unit} ({pct:.0f} %), {rate:.2f} {self.unit}/s, "
                f"{eta} left" + (f"; {extra}" if extra else ""))

    def update(self, done: int, extra: str = "", force: bool = False) -> None:
        now = time.perf_counter()
        if force or done >= self.total or now - self.last >= self.every_s:
            self.last = now
            self.log(self.line(done, extra))
