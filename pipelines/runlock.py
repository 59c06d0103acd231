"""One writer per run directory: an OS file lock on ``RUN/.lmpipe-lock``, held for a whole ``lmpipe run``.

    >>> with RunLock(run_dir):
    ...     run the stages            # a second run on RUN now fails at once, naming this one

Two runs on one folder would delete each other's temporary stage folders, race their commits (the last
one silently wins) or read shards another run is replacing.  ``fcntl.flock`` is released by the kernel
when the holder dies, however it dies (SIGKILL, OOM, a lost node's local process), so a stale lock is never
a problem: the next run simply takes it.  The file's text (host, pid, start time of the holder) exists
only for the message; it is never trusted to decide who holds the lock.

Shared storage: ``flock`` is exclusive between processes of one machine on every file system.  Across
machines it holds only where the file system forwards it (NFSv4, Lustre with ``flock``, CephFS, EFS);
NFSv3 without lockd and some FUSE mounts grant it to everyone.  lmpipe's rule: drive one run directory
from one machine at a time (Ray workers on other nodes write only inside the driver's temporary folder).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from lmpipe.pipelines.core.errors import UserError

LOCK_FILE = ".lmpipe-lock"


class RunLockedError(UserError):
    """Another lmpipe process holds the run directory; the message names it."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "another lmpipe process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info.get("started", 0))))
    return f"lmpipe pid {info.get('pid')} on host {info.get('host')} (since {since})"


class RunLock:
    """An exclusive, non-blocking lock of ``run_dir``; re-entrant within one process (nested commands)."""

    _held: dict[str, int] = {}  # resolved run dir -> depth, for this process

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        key = str(self.run_dir)
        if key in RunLock._held:
            RunLock._held[key] += 1
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLockedError(
                f"{self.run_dir}: run directory in use by {_holder(self.path)}; wait for it to finish or use another --run-dir"
            ) from None
        info = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        self._fd = fd
        RunLock._held[key] = 1
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        key = str(self.run_dir)
        RunLock._held[key] -= 1
        if RunLock._held[key]:
            return
        del RunLock._held[key]
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # the holder's details go with the lock (the file itself stays)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
