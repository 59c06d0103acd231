"""Make an embedded Ray die with its driver, even when the driver is SIGKILLed.

``ray.init()`` without an address starts a local cluster whose processes are the driver's children.  When the
driver exits normally ``ray.shutdown`` (atexit) stops them; when it is SIGKILLed (the OOM killer, ``kill -9``,
a batch system's timeout) the GCS and raylet go at once, but Ray's dashboard and runtime-env agents keep
running for a minute or more (measured: 65 s on 2 loaded cores; the issue saw about two minutes), holding
ports, memory and the session folder.

:func:`start_reaper` starts one small watcher process per embedded cluster.  It holds the read end of a pipe
whose write end only the driver has: end of file means the driver is gone, however it died.  Meanwhile it
notes, once a second, the driver's descendant processes that are Ray's (by name: ``ray::*``, ``raylet``,
``gcs_server``, Ray's Python entry points); when the driver is gone it sends them SIGTERM, then SIGKILL to
those still there after 3 s.  A process is identified by pid *and* start time, so a reused pid is never
signalled; processes that are not Ray's (a subprocess the user started) are left alone.

    python -m lmpipe.cluster.reaper DRIVER_PID      # started by start_reaper(); not a user command
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

#: Seconds between two looks at the driver's process tree.
POLL_S = 1.0
#: Seconds between SIGTERM and SIGKILL for the leftovers.
GRACE_S = 3.0
_RAY_MARKS = ("ray::", "raylet", "gcs_server", "/ray/", "ray_process_reaper", "dashboard", "runtime_env")


def start_reaper() -> subprocess.Popen | None:
    """Start the watcher for this process's embedded Ray; None where it cannot run (no psutil, not POSIX)."""
    if os.name != "posix":
        return None
    try:
        import psutil  # noqa: F401  (Ray depends on it)
    except ImportError:
        return None
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmpipe.cluster.reaper", str(os.getpid())],
        stdin=read_end,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C to the terminal's process group is the driver's to handle
        close_fds=True,
    )
    os.close(read_end)
    os.set_inheritable(write_end, False)  # only this process keeps the pipe open: EOF == its death
    _KEEP.append(write_end)
    return proc


_KEEP: list[int] = []  # the write ends, open for the life of the process


def _is_ray(proc) -> bool:
    try:
        text = " ".join(proc.cmdline()) or proc.name()
    except Exception:  # gone, or not ours to read
        return False
    return any(mark in text for mark in _RAY_MARKS)


def _ray_descendants(driver: int) -> dict[int, float]:
    import psutil

    try:
        children = psutil.Process(driver).children(recursive=True)
    except psutil.Error:
        return {}
    found = {}
    for child in children:
        if child.pid != os.getpid() and _is_ray(child):
            try:
                found[child.pid] = child.create_time()
            except psutil.Error:
                continue
    return found


def _signal_all(known: dict[int, float], sig: int) -> list[int]:
    """Send ``sig`` to the processes of ``known`` that are still the same processes; return their pids."""
    import psutil

    hit = []
    for pid, started in known.items():
        try:
            proc = psutil.Process(pid)
            if proc.create_time() == started and proc.status() != psutil.STATUS_ZOMBIE:
                proc.send_signal(sig)
                hit.append(pid)
        except psutil.Error:
            continue
    return hit


def watch(driver: int, stdin_fd: int = 0) -> int:
    """Follow ``driver`` until its pipe closes, then stop the Ray processes it left behind; the count."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    known: dict[int, float] = {}
    while True:
        ready, _, _ = select.select([stdin_fd], [], [], POLL_S)
        if ready and not os.read(stdin_fd, 4096):
            break  # end of file: the driver is gone
        known |= _ray_descendants(driver)
    left = _signal_all(known, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = [pid for pid in left if _signal_all({pid: known[pid]}, 0)]
    _signal_all({pid: known[pid] for pid in left}, signal.SIGKILL)
    return len(known)


if __name__ == "__main__":
    watch(int(sys.argv[1]))
