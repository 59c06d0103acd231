"""A fault hook for the fault-injection tests: inert unless ``LMPIPE_FAULTS`` names a folder.

    LMPIPE_FAULTS=/tmp/faults      # set before Ray starts, so every worker inherits it
    echo 2 > /tmp/faults/tokenize.finalize.at
    # the third call of inject("tokenize.finalize"), counted over every process, ends its process

Each call of :func:`inject` at a point claims the next number of that point (an ``O_EXCL`` file
``<point>.<k>`` in the folder, so the count is shared by every worker of the machine); the call that
claims the number written in ``<point>.at`` exits its process at once (``os._exit``), as a SIGKILL or an
OOM kill would, and a retry (which claims the next number) runs on.  Without the variable, or without a
``.at`` file for a point, nothing happens (one ``os.environ`` lookup).
"""

from __future__ import annotations

import os

ENV = "LMPIPE_FAULTS"
#: the exit status of a process the hook ends (distinct from a Python error's 1)
EXIT_STATUS = 86


def _claim(folder: str, point: str) -> int:
    k = 0
    while True:
        try:
            os.close(os.open(os.path.join(folder, f"{point}.{k}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            return k
        except FileExistsError:
            k += 1


def inject(point: str) -> None:
    """End this process here if the fault schedule says so (see the module docstring)."""
    folder = os.environ.get(ENV)
    if not folder:
        return
    try:
        with open(os.path.join(folder, f"{point}.at"), encoding="utf-8") as fh:
            at = int(fh.read().strip())
    except (OSError, ValueError):
        return
    if _claim(folder, point) == at:
        os._exit(EXIT_STATUS)
