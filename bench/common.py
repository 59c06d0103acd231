"""What every benchmark script shares: the machine and version lines of a RESULTS.md section and a
peak-memory sampler.  The scripts import it plainly (``from common import RssSampler``), like ``corpora.py``:
a script's own folder is first on ``sys.path``, and no file here is named like a standard-library module."""

from __future__ import annotations

import os
import platform
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any


def machine() -> str:
    """``x86_64, 2 cores (AMD EPYC)``: architecture, CPU count and model."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.machine()}, {os.cpu_count()} cores ({cpu})"


def versions(*names: str) -> str:
    """``Python 3.11.7, ray 2.60.0, ...`` for the named distributions (default: the ones every bench uses)."""
    names = names or ("ray", "torch", "numpy", "pyarrow")
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join([f"Python {platform.python_version()}", *found])


class RssSampler:
    """Peak resident memory while the block runs, sampled every ``interval`` seconds: of this process alone,
    or (``tree=True``) summed over this process and all its descendants (Ray's raylet, workers, lmplz)."""

    def __init__(self, interval: float = 0.2, *, tree: bool = True) -> None:
        self.interval, self.tree, self.peak = interval, tree, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        import psutil

        me = psutil.Process()
        total = 0
        for proc in [me, *me.children(recursive=True)] if self.tree else [me]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:  # a child that just exited
                continue
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            time.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())


def embedding_scores(ev: dict[str, Any]) -> str:
    """``sem / syn / total (answered) | ws353 / simlex / men / rw`` of an embedding stage's evaluation: the two
    quality columns of the GloVe tables (a skipped evaluation keeps both columns)."""
    if "skipped" in ev:
        return f"skipped ({ev['skipped'][:60]}) | –"
    a = ev["analogy"]
    sims = " / ".join(
        f"{ev[n]['spearman']:.3f}" if "spearman" in ev[n] else "–"
        for n in ("wordsim353", "simlex999", "men", "rw")
    )
    return f"{100 * a['semantic']:.2f} / {100 * a['syntactic']:.2f} / {100 * a['total']:.2f} ({a['answered']:,}) | {sims}"
