"""Where a piece of work ran and what it cost: recorded in stage manifests for every Ray task, actor and
training worker, so a run's memory high-water marks and placement can be read after the fact."""

from __future__ import annotations

import functools
import os
import resource
import socket
import sys
from dataclasses import dataclass
from typing import Any


def process_info() -> dict[str, str | int | float]:
    """Node id (``local`` outside Ray), host name, pid and this process's peak resident memory in MB
    (``ru_maxrss``: the lifetime peak of the process, so a reused Ray worker reports at least its earlier
    work's peak)."""
    ray = sys.modules.get("ray")  # a process that never imported Ray is not in one (and need not pay the import)
    try:
        # get_runtime_context() would start a local Ray instance in a plain process (~20 s): ask first
        node_id = ray.get_runtime_context().get_node_id() if ray is not None and ray.is_initialized() else "local"
    except Exception:  # noqa: BLE001 - outside Ray (direct calls in tests) there is no runtime context
        node_id = "local"
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB
    return {
        "node_id": node_id,
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "peak_rss_mb": round(peak_kb / 1024, 1),
    }


def release_free_memory() -> None:
    """Give memory that a finished task freed back to the OS: Arrow's pool (``release_unused``) and glibc's
    heaps (``malloc_trim``).

    Why: both allocators keep freed pages for reuse, and with tasks on threads every thread has its own glibc
    arena, so without this a process keeps the high-water mark of every step it ran (the ngram stage's driver
    held ~250 MB of free memory between steps, 40% of its peak).  Costs a few milliseconds a call; does
    nothing where the C library has no ``malloc_trim`` or Arrow was never imported."""
    pyarrow = sys.modules.get("pyarrow")
    if pyarrow is not None:
        pyarrow.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim`` from the C library this process already runs on (``dlopen(NULL)``).

    Not ``ctypes.util.find_library("c")``: on Linux that runs ``ldconfig -p`` in a subprocess, and the fork
    of a large process briefly doubles its resident memory as a process-tree monitor counts it (the sgns
    benchmark saw 526 MB for a 263 MB driver)."""
    import ctypes

    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None


def ray_options(resources: dict[str, float]) -> dict[str, object]:
    """Ray task/actor options for one stage worker from a stage's parsed ``resources`` (``CPU`` defaults to 1;
    ``GPU`` becomes ``num_gpus``; other names are custom resources that pin work to nodes offering them)."""
    rest = dict(resources)
    options: dict[str, object] = {"num_cpus": rest.pop("CPU", 1.0)}
    if "GPU" in rest:
        options["num_gpus"] = rest.pop("GPU")
    if rest:
        options["resources"] = rest
    return options


class Placement:
    """Which node and process ran how many of a stage's tasks, for the manifest's ``workers`` list (the same
    shape the tokenize stage records: node id, host, pid, peak RSS, plus a count)."""

    def __init__(self, unit: str = "tasks") -> None:
        self.unit = unit
        self._rows: dict[str, dict[str, str | int | float]] = {}

    def add(self, info: dict[str, str | int | float]) -> None:
        row = self._rows.setdefault(f"{info['node_id']}:{info['pid']}", {**info, self.unit: 0})
        row[self.unit] = int(row[self.unit]) + 1
        row["peak_rss_mb"] = max(float(row["peak_rss_mb"]), float(info["peak_rss_mb"]))

    def rows(self) -> list[dict[str, str | int | float]]:
        return list(self._rows.values())

    def nodes(self) -> list[str]:
        return sorted({str(r["node_id"]) for r in self._rows.values()})


@dataclass(frozen=True, slots=True)
class WorkersRecord:
    """``manifest["training"]["workers"]`` of every training stage: how many data-parallel workers trained
    and where each rank ran (``process_info``, rank order)."""

    count: int
    processes: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "processes": list(self.processes)}

    @classmethod
    def from_json(cls, value: Any) -> WorkersRecord:
        """The record, also from run directories written before it existed: an int (sgns, glove, lm) or the
        tagger's list of ``process_info`` rows."""
        if isinstance(value, dict):
            return cls(int(value["count"]), tuple(value.get("processes", ())))
        if isinstance(value, list):
            return cls(len(value), tuple(value))
        return cls(int(value or 1))
