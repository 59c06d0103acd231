"""Atomic files and folders, Arrow IPC files and file hashing: the file operations every floor shares.

A file is written under a temporary sibling name and renamed into place, so a reader (or a retried task)
never sees half of it; hashes are streamed in blocks, so a matrix of a few GB is never held twice.

Temporary names are made here, not with ``tempfile.mkstemp``/``mkdtemp``: those create mode 0600/0700 so
that nobody else can read a file in ``/tmp``, and the mode survives the rename -- an ARPA model or a
vectors folder in a run directory shared over NFS would be unreadable by the rest of the team.  Files and
folders made here are created by ``open``/``mkdir`` and so get ``0666 & ~umask`` and ``0777 & ~umask``,
like any other file the user makes.

    >>> write_table(Path("work/piece-00001.arrow"), table)     # doctest: +SKIP
    >>> read_table(Path("work/piece-00001.arrow")).num_rows    # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa


def temp_sibling(path: Path, suffix: str = ".tmp") -> Path:
    """A fresh hidden name beside ``path`` (``.name.<12 hex>.tmp``); nothing is created."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path to write; it is renamed onto ``path`` only if the block succeeds
    (and removed if it fails).  The writer creates the file, so its mode honours the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def current_umask() -> int:
    """The process umask, read without changing it where Linux says it (``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (briefly process-wide)
    os.umask(mask)
    return mask


def chmod_as_created(path: Path) -> None:
    """Give a file a library created privately (safetensors writes 0600) the mode ``open`` would have:
    ``0666 & ~umask`` (``0777 & ~umask`` for a folder)."""
    base = 0o777 if path.is_dir() else 0o666
    os.chmod(path, base & ~current_umask())


def make_temp_dir(path: Path) -> Path:
    """Create a fresh hidden folder beside ``path`` (mode ``0777 & ~umask``) to be renamed onto it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = temp_sibling(path, "")
        try:
            tmp.mkdir()
            return tmp
        except FileExistsError:  # 48 random bits: only a retry after a collision
            continue


def write_table(path: Path, table: pa.Table, compression: str | None = None) -> None:
    """Write one IPC file atomically (temp name + rename); ``compression`` ``lz4`` or ``zstd`` compresses its
    buffers (Arrow's IPC body compression: any Arrow reader decompresses them, at the price of a copy)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    options = pa.ipc.IpcWriteOptions(compression=compression) if compression else None
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    os.replace(tmp, path)


def read_table(path: Path) -> pa.Table:
    """A whole IPC file, memory-mapped (the buffers keep the mapping alive)."""
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


def sha256_file(path: str | os.PathLike, block: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in 4 MB blocks (the file may not fit in memory twice)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()
