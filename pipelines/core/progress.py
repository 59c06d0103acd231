"""Progress inside a training epoch: % done, rate and ETA, one log line every few seconds.

Why a log line and not a bar: training loops run in Ray workers whose output reaches the user line by line
(forwarded to the driver), in log files and in CI -- a bar redraws itself with control codes that become
garbage there.  gensim and fastText report the same way (``EPOCH 0 - PROGRESS: at 45.2% examples,
380k words/s``).  Only rank 0 reports (its share is representative; every rank would repeat it).

    >>> ticks = iter([0.0, 6.0, 12.0])
    >>> p = EpochProgress("sgns epoch 1/3", 1000, "words", every=5.0, clock=lambda: next(ticks))
    >>> p.advance(300)
    'sgns epoch 1/3: 30.0% (300/1,000 words), 50 words/s, ETA 0:00:14'
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

logger = logging.getLogger("lmpipe.progress")

T = TypeVar("T")

#: Seconds between two progress lines; ``LMPIPE_PROGRESS_SECONDS`` overrides (0 turns them off).
DEFAULT_EVERY = 10.0


def _every() -> float:
    raw = os.environ.get("LMPIPE_PROGRESS_SECONDS")
    try:
        return float(raw) if raw is not None else DEFAULT_EVERY
    except ValueError:
        return DEFAULT_EVERY


def _clock_text(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class EpochProgress:
    """Counts units done in one epoch of ``total`` and logs a line at most every ``every`` seconds."""

    def __init__(
        self,
        label: str,
        total: float,
        unit: str,
        *,
        enabled: bool = True,
        every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label, self.total, self.unit = label, max(float(total), 0.0), unit
        self.every = _every() if every is None else every
        self.enabled = enabled and self.every > 0
        self.clock = clock
        self.done = 0.0
        self.started = self.last = clock() if self.enabled else 0.0

    def advance(self, units: float) -> str | None:
        """Add ``units`` done; returns the line logged, if this call logged one."""
        self.done += units
        if not self.enabled:
            return None
        now = self.clock()
        if now - self.last < self.every:
            return None
        self.last = now
        line = self.line(now)
        logger.info("%s", line)
        return line

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        text = f"{self.label}: "
        if self.total > 0:
            text += f"{100.0 * min(self.done / self.total, 1.0):.1f}% ({self.done:,.0f}/{self.total:,.0f} {self.unit}), "
        else:
            text += f"{self.done:,.0f} {self.unit}, "
        text += f"{rate:,.0f} {self.unit}/s"
        if self.total > 0 and rate > 0:
            text += f", ETA {_clock_text(max(self.total - self.done, 0.0) / rate)}"
        return text

    def wrap(self, items: Iterable[T], size: Callable[[T], float]) -> Iterator[T]:
        """Yield ``items``, counting ``size(item)`` units for each after the consumer asks for the next."""
        for item in items:
            yield item
            self.advance(size(item))
