"""cluster.process.release_free_memory: freed heap memory of a finished task leaves the process's RSS."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from lmpipe.cluster import process


def _anon_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    pytest.skip("no RssAnon in /proc/self/status")


def test_freed_heap_blocks_are_returned():
    """A thread frees 160 MB of small heap blocks except the last (so glibc cannot trim its heap top by
    itself); the RSS stays high until release_free_memory, then drops by most of it."""
    if process._malloc_trim() is None:
        pytest.skip("not glibc: no malloc_trim")
    after: list[float] = []

    def task() -> None:
        blocks = [np.ones(8192, dtype=np.float64) for _ in range(2500)]  # 64 KB each: from the heap, not mmap
        keep = blocks[-1]
        del blocks
        before = _anon_mb()
        process.release_free_memory()
        after.extend([before, _anon_mb()])
        del keep

    thread = threading.Thread(target=task)
    thread.start()
    thread.join()
    before, released = after
    assert before - released > 100, (before, released)
