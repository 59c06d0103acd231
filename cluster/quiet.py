"""Keep Ray's chatter out of a user's terminal and log files; keep everything that says something.

Why: a two-worker training stage printed ~60 lines of Ray's own bookkeeping per run (the train controller's
resource requests, "Checkpoint successfully created", "Reporting training result", a placement-group
cleaner's traceback when another Ray instance runs on the machine, the data executor's "execution finished"),
wrapped in ANSI colour codes even when the output went to a file -- and lmpipe's own per-epoch lines drowned
in them.  Filtered here, by default, at the three places they reach the user:

* Python loggers of the driver (``ray``, ``ray.data``): a filter on the loggers that emit the known lines;
* worker output that Ray forwards to the driver (``log_to_driver``): the forwarding handler is wrapped so
  known lines are dropped before Ray prints them (the rest is printed by Ray, unchanged);
* Ray Train's ``ray.train`` loggers in the controller and workers: ``RunConfig(logging_config=...)`` at
  WARNING (:func:`train_log_level`).

``lmpipe -v`` (DEBUG) lets everything through.  Colour prefixes are turned off when stdout is not a
terminal (``RAY_COLOR_PREFIX=0``, read by Ray at print time).  Only messages matched by :data:`NOISE` are
dropped: errors and warnings that are not Ray's own routine output still reach the user.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Any

#: Lines of Ray's routine output (matched anywhere in the line).  Each was seen in a plain ``lmpipe run``.
NOISE = re.compile(
    "|".join(
        [
            r"Token authentication is enabled for this Ray cluster",
            r"Progress bars (for operators )?disabled",
            r"Dataset \S+ execution (finished|started)",
            r"Requesting resources: ",
            r"Attempting to start training worker group",
            r"Started training worker group of size",
            r"^- \(ip=[^)]*\) world_rank=",
            r"Setting up process group for: ",
            r"Checkpoint successfully created at: ",
            r"Reporting training result \d+: ",
            r"has constructor arguments in the object store and max_restarts > 0",
            r"Registered dataset logger for dataset",
            r"gcs_actor_scheduler\.cc:\d+: Failed to kill actor \S+, return status",  # an actor already gone
        ]
    )
)
#: Actors whose whole output is Ray's internal housekeeping: its tracebacks are about querying the state
#: API (they fail harmlessly when two Ray instances run on one machine), never about the user's work.
NOISY_ACTORS = ("PlacementGroupCleaner",)
#: Loggers (in the driver) whose records are matched against :data:`NOISE`.
_LOGGERS = (
    "ray",
    "ray._private.authentication.authentication_token_setup",
    "ray.data",
    "ray.data._internal.progress",
    "ray.data._internal.execution.streaming_executor",
)


class NoiseFilter(logging.Filter):
    """Drops log records whose message matches :data:`NOISE`."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to judge
            return True
        return NOISE.search(message) is None


_FILTER = NoiseFilter()

#: The ``lmpipe`` loggers' level in Ray workers started by this driver (their per-epoch and progress lines).
WORKER_LEVEL_ENV = "LMPIPE_WORKER_LOG_LEVEL"


def worker_level() -> int:
    """The level a worker gives the ``lmpipe`` loggers: the driver's (:data:`WORKER_LEVEL_ENV`), else INFO."""
    level = logging.getLevelName(os.environ.get(WORKER_LEVEL_ENV, "INFO"))
    return level if isinstance(level, int) else logging.INFO


def verbose() -> bool:
    """Whether the user asked for everything (``lmpipe -v``: the ``lmpipe`` logger at DEBUG)."""
    return logging.getLogger("lmpipe").getEffectiveLevel() <= logging.DEBUG


def before_init() -> None:
    """Set up what must be in place before ``ray.init``: no colour codes into files or pipes, and the
    filter on the loggers that speak during ``ray.init`` itself."""
    if not sys.stdout.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    # read by the workers Ray starts from this environment (cluster.training): `lmpipe -q` quiets them too
    os.environ[WORKER_LEVEL_ENV] = logging.getLevelName(logging.getLogger("lmpipe").getEffectiveLevel())
    if verbose():
        return
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def after_init() -> None:
    """Filter the handlers ``ray.init`` configured and the worker output Ray forwards to this process."""
    if not sys.stdout.isatty():
        _plain_dedup_marks()
    if verbose():
        return
    _skip_dedup_advice()
    for handler in logging.getLogger("ray").handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
    _wrap_forwarded_output()


def keep_forwarded(data: dict[str, Any]) -> dict[str, Any] | None:
    """The batch of worker lines Ray forwards (``{"lines": [...], "actor_name": ..., ...}``) without the
    noise, or None when nothing is left."""
    if any(name in str(data.get("actor_name") or "") for name in NOISY_ACTORS):
        return None
    lines = [line for line in data.get("lines", []) if NOISE.search(line) is None]
    if not lines:
        return None
    return {**data, "lines": lines}


def _wrap_forwarded_output() -> None:
    """Replace Ray's handler of forwarded worker output by one that filters first.

    Ray registers ``print_to_stdstream`` under the name ``ray_print_logs`` on its stdstream dispatcher
    (``ray._private.worker``).  That is not public API: when it is absent (another Ray version), the
    output is left as Ray prints it."""
    try:
        from ray._private import worker
    except ImportError:  # pragma: no cover - ray is a dependency
        return
    dispatcher = getattr(worker, "global_worker_stdstream_dispatcher", None)
    handlers = getattr(dispatcher, "handlers", None)
    if not isinstance(handlers, list):
        return
    current = next((handler for name, handler in handlers if name == "ray_print_logs"), None)
    if current is None or getattr(current, "lmpipe_filtered", False):
        return

    def filtered(data: dict[str, Any]) -> None:
        kept = keep_forwarded(data)
        if kept is not None:
            current(kept)

    filtered.lmpipe_filtered = True  # type: ignore[attr-defined]
    dispatcher.remove_handler("ray_print_logs")
    dispatcher.add_handler("ray_print_logs", filtered)


def _plain_dedup_marks() -> None:
    """Ray colours its ``[repeated 2x across cluster]`` marks whatever ``RAY_COLOR_PREFIX`` says; into a file
    or pipe they are printed plain.  Private API (``ray._private.ray_logging._color``): left alone if absent."""
    try:
        from ray._private import ray_logging
    except ImportError:  # pragma: no cover - ray is a dependency
        return
    if callable(getattr(ray_logging, "_color", None)):
        ray_logging._color = str  # type: ignore[attr-defined]


def _skip_dedup_advice() -> None:
    """Ray appends a one-time advice on log deduplication to the first deduplicated line (after the filter
    of :func:`keep_forwarded` has run); spending its ``log_once`` key here keeps it out."""
    try:
        from ray.util.debug import log_once
    except ImportError:  # pragma: no cover - ray is a dependency
        return
    log_once("log_dedup_warning")


def train_log_level() -> str:
    """The level for Ray Train's ``RunConfig(logging_config=LoggingConfig(log_level=...))``."""
    return "INFO" if verbose() else "WARNING"
