"""One writer per run directory: an OS file lock on ``RUN/.lmpipe-lock``, held for a whole ``lmpipe run``.

    >>> with RunLock(run_dir):
    ...     run the stages            # a second run on RUN now fails at once, naming this one
    >>> with RunLock(run_dir, shared=True):
    ...     read a stage's files      # readers: score, eval, generate, embeddings export/neighbors/analogy, the API

Readers take the same lock shared (``LOCK_SH``): any number of them read one run directory at once, a run
that starts while one reads is refused (it would replace the files being read), and a reader that starts
while a run holds the lock is refused naming the run, instead of reading a vocabulary of one fingerprint
and vectors of the next.  A reader never creates a run directory, and where it cannot open the lock file
(a read-only mount, which no run can be writing through) it reads without the lock.

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
    if not isinstance(info, dict) or "pid" not in info:  # readers leave the file empty
        return "another lmpipe process (one reading it: lmpipe score, eval, generate, embeddings export|neighbors|analogy, or the Python API)"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info.get("started", 0))))
    return f"lmpipe pid {info.get('pid')} on host {info.get('host')} (since {since})"


class RunLock:
    """A non-blocking lock of ``run_dir``, exclusive (a run) or ``shared`` (a reader); re-entrant within one
    process (nested commands: a shared request inside an exclusive hold is already satisfied)."""

    _held: dict[str, tuple[int, bool]] = {}  # resolved run dir -> (depth, shared), for this process

    def __init__(self, run_dir: Path, *, shared: bool = False) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.path = self.run_dir / LOCK_FILE
        self.shared = shared
        self._fd: int | None = None

    def _open(self) -> int | None:
        if not self.shared:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        if not self.run_dir.is_dir():
            return None  # the reader reports the missing run itself; a lock must not create the folder
        for flags in (os.O_RDWR | os.O_CREAT, os.O_RDONLY):
            try:
                return os.open(self.path, flags, 0o666)
            except OSError:  # read-only mount, or a folder of someone else's: nobody writes through it here
                continue
        return None

    def __enter__(self) -> RunLock:
        key = str(self.run_dir)
        if key in RunLock._held:
            depth, shared = RunLock._held[key]
            if shared and not self.shared:
                raise RuntimeError(f"{key}: an exclusive RunLock requested inside a shared one of this process")
            RunLock._held[key] = (depth + 1, shared)
            return self
        fd = self._open()
        if fd is not None:
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                advice = "wait for it to finish" + ("" if self.shared else " or use another --run-dir")
                raise RunLockedError(f"{self.run_dir}: run directory in use by {_holder(self.path)}; {advice}") from None
            if not self.shared:
                info = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()})
                os.ftruncate(fd, 0)
                os.pwrite(fd, info.encode(), 0)
        self._fd = fd
        RunLock._held[key] = (1, self.shared)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        key = str(self.run_dir)
        depth, shared = RunLock._held[key]
        if depth > 1:
            RunLock._held[key] = (depth - 1, shared)
            return
        del RunLock._held[key]
        if self._fd is not None:
            if not self.shared:
                os.ftruncate(self._fd, 0)  # the holder's details go with the lock (the file itself stays)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
