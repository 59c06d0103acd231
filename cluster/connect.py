"""The only place lmpipe calls ``ray.init``: an embedded local Ray by default, a cluster by address.

    >>> from lmpipe.cluster.connect import connect
    >>> info = connect()                 # local: all CPUs (and GPUs) of this machine
    >>> info = connect("ray://head:10001")  # or RAY_ADDRESS=... in the environment

Stages never call ``ray.init`` themselves; on a cluster the same stage code runs with more workers.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

logger = logging.getLogger(__name__)


class ResourceError(ValueError):
    """More workers than the cluster (or this machine) can place: a setting the user can fix.  ``cluster/``
    imports no project code, so the CLI names this class beside the project's ``UserError``."""


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    address: str | None
    local: bool
    cpus: float
    gpus: float
    nodes: int


def connect(address: str | None = None, *, num_cpus: int | None = None, quiet: bool = False) -> ClusterInfo:
    """Start or join Ray once per process.  ``address`` falls back to ``RAY_ADDRESS``; without either an
    embedded local instance is started (``num_cpus`` limits it; tests use 2).  Workers' output reaches this
    process (training stages log one line per epoch from their workers) unless ``quiet``."""
    import ray

    if not ray.is_initialized():
        from lmpipe.cluster import quiet as ray_output  # not `quiet`: that is this function's argument

        ray_output.before_init()
        address = address or os.environ.get("RAY_ADDRESS") or None
        kwargs: dict[str, object] = {"log_to_driver": not quiet, "configure_logging": True, "logging_level": logging.WARNING}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, **kwargs)
            from lmpipe.cluster.reaper import start_reaper

            start_reaper()  # its agents would outlive a SIGKILLed driver by a minute or more
        _configure_data()
        ray_output.after_init()
    resources = ray.cluster_resources()
    nodes = len([n for n in ray.nodes() if n.get("Alive")])
    local = not (address or os.environ.get("RAY_ADDRESS"))
    info = ClusterInfo(address, local, resources.get("CPU", 0.0), resources.get("GPU", 0.0), nodes)
    logger.info("Ray: %s, %d node(s), %.0f CPU, %.0f GPU", "local" if local else address, nodes, info.cpus, info.gpus)
    return info


def _configure_data() -> None:
    """Quiet Ray Data's own progress bars (stages draw their own) and keep block order stable."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = True
    ctx.print_on_execution_start = False


def shutdown() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
