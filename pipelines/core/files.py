"""Atomic Arrow IPC files and file hashing: the two file operations every floor shares.

A file is written under a temporary sibling name and renamed into place, so a reader (or a retried task)
never sees half of it; hashes are streamed in blocks, so a matrix of a few GB is never held twice.

    >>> write_table(Path("work/piece-00001.arrow"), table)     # doctest: +SKIP
    >>> read_table(Path("work/piece-00001.arrow")).num_rows    # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pyarrow as pa


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
