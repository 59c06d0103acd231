"""Partitioned tables on disk, and the file-based shuffle between distributed steps.

A *dataset* here is a folder of hash partitions, each a folder of Arrow IPC *pieces*::

    work/raw3/part-0004/piece-00012.arrow     order-3 counts of shard 12 whose key hashes to partition 4

Writers produce one piece per (producer, partition); a consumer of partition p reads every piece of
``part-p``.  That is a shuffle with the disk as the exchange: no table ever needs to fit in one process's
memory -- a producer holds one input block, a consumer one partition -- and it works the same on one
machine and on a cluster whose run directory is shared storage.  Pieces are written under a temporary
name and renamed, so a retried task never leaves a half piece behind.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa

from lmpipe.pipelines.core.files import read_table, write_table
from lmpipe.pipelines.core.keyed import partition_by


def part_dir(dataset: Path, p: int) -> Path:
    return Path(dataset) / f"part-{p:04d}"


def write_partitioned(table: pa.Table, dataset: Path, keys: Sequence[str], num_partitions: int, piece: str) -> list[int]:
    """Split ``table`` by the hash of ``keys`` and write one piece per non-empty partition; rows per part."""
    rows = []
    for p, part in enumerate(partition_by(table, list(keys), num_partitions)):
        if part.num_rows:
            write_table(part_dir(dataset, p) / f"piece-{piece}.arrow", part)
        rows.append(part.num_rows)
    return rows


def read_partition(dataset: Path, p: int, schema: pa.Schema | None = None) -> pa.Table | None:
    """All pieces of partition ``p`` concatenated, or ``schema.empty_table()`` / None if there are none."""
    pieces = sorted(part_dir(dataset, p).glob("piece-*.arrow"))
    if not pieces:
        return schema.empty_table() if schema is not None else None
    return pa.concat_tables([read_table(path) for path in pieces]).combine_chunks()


class LazyPartitions(Sequence):
    """The partitions of a dataset as a sequence that reads one partition at a time when iterated."""

    def __init__(self, dataset: Path, num_partitions: int, schema: pa.Schema | None = None) -> None:
        self.dataset, self.num_partitions, self.schema = Path(dataset), num_partitions, schema

    def __len__(self) -> int:
        return self.num_partitions

    def __getitem__(self, p):  # type: ignore[override]
        if isinstance(p, slice):
            return [self[i] for i in range(*p.indices(len(self)))]
        table = read_partition(self.dataset, p, self.schema)
        return table if table is not None else pa.table({})

    def __iter__(self) -> Iterator[pa.Table]:
        for p in range(self.num_partitions):
            yield self[p]
