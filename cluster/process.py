"""Where a piece of work ran and what it cost: recorded in stage manifests for every Ray task, actor and
training worker, so a run's memory high-water marks and placement can be read after the fact."""

from __future__ import annotations

import os
import resource
import socket


def process_info() -> dict[str, str | int | float]:
    """Node id (``local`` outside Ray), host name, pid and this process's peak resident memory in MB
    (``ru_maxrss``: the lifetime peak of the process, so a reused Ray worker reports at least its earlier
    work's peak)."""
    try:
        import ray

        node_id = ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside Ray (direct calls in tests) there is no runtime context
        node_id = "local"
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB
    return {
        "node_id": node_id,
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "peak_rss_mb": round(peak_kb / 1024, 1),
    }
