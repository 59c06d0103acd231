"""Token shards: Arrow IPC files of the TOKENS schema, written atomically, read back as a stream.

The one writer (:class:`ShardWriter`) and the one reader (:func:`shard_batches`, and what is built on it)
of the format: every stage, trainer and evaluator that reads token shards goes through here.

Layout of a tokenize output::

    RUN/tokenize/
      vocab.tsv                     id, token, count
      train/part-00000-000.arrow    chunk 0, first shard (a large gzip chunk may roll over to -001 ...)
      train/part-00001-000.arrow
      valid/part-00002-000.arrow
      manifest.json

Shard names carry the chunk index, so sorting names gives the input order.  IPC files (not Parquet)
because readers memory-map them and take record batches without a decode step; zstd keeps them small.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lmpipe.pipelines.core.files import read_table, sha256_file
from lmpipe.pipelines.core.schemas import TOKENS

#: Rows per record batch inside a shard: small enough to stream, large enough to amortise overhead.
BATCH_ROWS = 65_536


@dataclass(frozen=True, slots=True)
class ShardInfo:
    """What a manifest records of each output file."""

    path: str  # relative to the stage directory
    rows: int
    tokens: int
    bytes: int
    sha256: str

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, "rows": self.rows, "tokens": self.tokens, "bytes": self.bytes, "sha256": self.sha256}


class ShardWriter:
    """Writes TOKENS batches to ``<dir>/part-<chunk>-<k>.arrow``, rolling over at ``max_bytes``.

    Each file is written as ``.tmp`` and renamed when closed, so a half-written shard never looks done."""

    def __init__(self, directory: Path, chunk_index: int, *, max_bytes: int, compression: str, stage_dir: Path) -> None:
        self._dir = directory
        self._chunk = chunk_index
        self._max_bytes = max_bytes
        self._options = pa.ipc.IpcWriteOptions(compression=None if compression == "none" else compression)
        self._stage_dir = stage_dir
        self._writer: pa.ipc.RecordBatchFileWriter | None = None
        self._sink: pa.OSFile | None = None
        self._path: Path | None = None
        self._rows = self._tokens = self._bytes = 0
        self._k = 0
        self.shards: list[ShardInfo] = []

    def _open(self) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        self._path = self._dir / f"part-{self._chunk:05d}-{self._k:03d}.arrow"
        self._sink = pa.OSFile(str(self._path) + ".tmp", "wb")
        self._writer = pa.ipc.new_file(self._sink, TOKENS, options=self._options)
        self._rows = self._tokens = self._bytes = 0

    def write(self, table: pa.Table) -> None:
        for batch in table.to_batches(max_chunksize=BATCH_ROWS):
            if batch.num_rows == 0:
                continue
            if self._writer is None:
                self._open()
            assert self._writer is not None
            self._writer.write_batch(batch)
            self._rows += batch.num_rows
            ids = batch.column("ids")
            self._tokens += int(ids.offsets[-1].as_py() - ids.offsets[0].as_py())
            self._bytes += batch.nbytes
            if self._bytes >= self._max_bytes:
                self._finish()

    def _finish(self) -> None:
        if self._writer is None:
            return
        assert self._sink is not None and self._path is not None
        self._writer.close()
        self._sink.close()
        tmp = Path(str(self._path) + ".tmp")
        os.replace(tmp, self._path)
        size = self._path.stat().st_size
        rel = str(self._path.relative_to(self._stage_dir))
        self.shards.append(ShardInfo(rel, self._rows, self._tokens, size, sha256_file(self._path)))
        self._writer = None
        self._k += 1

    def close(self) -> list[ShardInfo]:
        self._finish()
        return self.shards


def split_shards(stage_dir: Path, split: str) -> list[Path]:
    """The shard files of one split, in input order."""
    return sorted((Path(stage_dir) / split).glob("part-*.arrow"))


def shard_batches(path: str | os.PathLike, columns: Sequence[str] | None = None) -> Iterator[pa.RecordBatch]:
    """The record batches of one shard, memory-mapped: nothing is read until a column's buffers are touched,
    and a batch stays valid after the loop (its buffers keep the mapping alive).

    The zstd-compressed buffers are decompressed into the system allocator's memory, not Arrow's default pool
    (mimalloc): a stream of batches freed one after the other left mimalloc holding ~20 MB that it did not
    return (reading the English shards: +30 MB resident with the default pool, +8 MB with the system one,
    at the same speed)."""
    reader = pa.ipc.open_file(pa.memory_map(str(path)), memory_pool=pa.system_memory_pool())
    for i in range(reader.num_record_batches):
        batch = reader.get_batch(i)
        yield batch.select(list(columns)) if columns else batch


def read_shard(path: str | os.PathLike) -> pa.Table:
    """One whole shard as a table (memory-mapped); a file of another schema is refused by name."""
    table = read_table(Path(path))
    if not table.schema.equals(TOKENS):
        raise ValueError(f"{path}: not a token shard (schema {table.schema}, expected {TOKENS})")
    return table


def iter_batches(stage_dir: Path, split: str, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """Stream a split's sentences as record batches (memory-mapped; nothing is held beyond a batch)."""
    for path in split_shards(stage_dir, split):
        yield from shard_batches(path, columns)


def numpy_view(array: pa.Array) -> np.ndarray:
    """A zero-copy, read-only numpy view of a numeric Arrow array without nulls (a list column's ``offsets`` or
    ``values``), slicing included.  ``array.to_numpy()`` would give the same, but it imports pandas when
    pandas is installed (~50 MB of resident memory, in a trainer that never needs it)."""
    dtype = np.dtype(str(array.type))
    if array.null_count or dtype.kind not in "iuf":
        raise ValueError(f"numpy_view takes a numeric array without nulls, got {array.type} with {array.null_count} null(s)")
    return np.frombuffer(array.buffers()[1], dtype=dtype, count=len(array), offset=array.offset * dtype.itemsize)


def batch_sentences(ids: pa.ListArray, dtype: type = np.uint32) -> list[np.ndarray]:
    """The sentences of one ``ids`` column as one array each (``dtype``), split at the list offsets."""
    flat = np.asarray(pc.list_flatten(ids), dtype=dtype)
    offsets = np.asarray(ids.offsets, dtype=np.int64)
    return np.split(flat, (offsets - offsets[0])[1:-1])


def read_sentences(paths: Sequence[str | os.PathLike], dtype: type = np.uint32) -> list[np.ndarray]:
    """All sentences of some shards, in order, one ``dtype`` array each (for small splits and tests)."""
    out: list[np.ndarray] = []
    for path in paths:
        for batch in shard_batches(path, ["ids"]):
            out.extend(batch_sentences(batch.column(0), dtype))
    return out


def read_ids(stage_dir: Path, split: str) -> list[np.ndarray]:
    """All sentences of a split as uint32 arrays (for small splits and tests)."""
    return read_sentences(split_shards(stage_dir, split))
