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

import json
import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from lmpipe.pipelines.core.files import atomic_path, read_table, write_table
from lmpipe.pipelines.core.keyed import partition_by


def partition_count(needed: int, configured: int) -> int:
    """Partitions for a dataset that needs ``needed`` of them to fit a memory budget: ``configured`` (the
    spec's ``partitions``), or the smallest multiple of it that is at least ``needed``.

    Why a multiple: the per-partition steps run in rounds of one task per worker, so 7 partitions on 2
    workers take 4 rounds against 7 on one (a 1.75x cap, RESULTS.md "Scaling step by step") where 8 take 4
    against 8; with the default 4, 1, 2 and 4 workers share the rounds evenly.  The count stays a function
    of the data and the budget, never of the workers, so the outputs' bytes do not depend on them."""
    return configured * max(1, math.ceil(needed / configured))


def part_dir(dataset: Path, p: int) -> Path:
    return Path(dataset) / f"part-{p:04d}"


def write_partitioned(
    table: pa.Table, dataset: Path, keys: Sequence[str], num_partitions: int, piece: str, compression: str | None = None
) -> list[int]:
    """Split ``table`` by the hash of ``keys`` and write one piece per non-empty partition; rows per part."""
    rows = []
    for p, part in enumerate(partition_by(table, list(keys), num_partitions)):
        if part.num_rows:
            write_table(part_dir(dataset, p) / f"piece-{piece}.arrow", part, compression)
        rows.append(part.num_rows)
    return rows


def read_partition(dataset: Path, p: int, schema: pa.Schema | None = None) -> pa.Table | None:
    """All pieces of partition ``p`` concatenated, or ``schema.empty_table()`` / None if there are none."""
    pieces = sorted(part_dir(dataset, p).glob("piece-*.arrow"))
    if not pieces:
        return schema.empty_table() if schema is not None else None
    return pa.concat_tables([read_table(path) for path in pieces]).combine_chunks()


#: Where a :class:`DirectoryStore` keeps task receipts (``lm.kneser_ney.consuming``).
_RECEIPTS = "_receipts"


class DirectoryStore:
    """``lm.kneser_ney.PartitionStore`` on disk: dataset ``name`` is the folder ``root/name`` (layout above).

    It holds only paths, so Ray ships it to tasks cheaply; every task of a run must see the same ``root``
    (one machine, or shared storage on a cluster).  ``placed`` names datasets that are outputs of the stage
    and their folders (in the stage's output folder): they are written where they stay, while the scratch
    datasets go to ``root``, which may be another disk (``ngram.temp_dir``).
    """

    def __init__(self, root: Path, placed: Mapping[str, Path] | None = None, compression: str | None = None) -> None:
        self.root = Path(root)
        self.placed = {name: Path(folder) for name, folder in (placed or {}).items()}
        #: ``lz4``/``zstd``: pieces are written compressed (less spill disk for a little CPU).
        self.compression = compression

    def path(self, name: str) -> Path:
        return self.placed.get(name) or self.root / name

    def write(self, name: str, table: pa.Table, keys: Sequence[str], num_partitions: int, piece: str) -> None:
        write_partitioned(table, self.path(name), keys, num_partitions, piece, self.compression)

    def put(self, name: str, p: int, table: pa.Table, piece: str = "0") -> None:
        write_table(part_dir(self.path(name), p) / f"piece-{piece}.arrow", table, self.compression)

    def read(self, name: str, p: int, schema: pa.Schema | None = None) -> pa.Table | None:
        return read_partition(self.path(name), p, schema)

    def drop(self, name: str) -> None:
        shutil.rmtree(self.path(name), ignore_errors=True)

    def release(self, name: str, p: int) -> None:
        shutil.rmtree(part_dir(self.path(name), p), ignore_errors=True)

    def record(self, key: str, value: Any) -> None:
        with atomic_path(self.root / _RECEIPTS / f"{key}.json") as tmp:
            tmp.write_text(json.dumps({"value": value}), encoding="utf-8")

    def recorded(self, key: str) -> tuple[Any] | None:
        try:
            return (json.loads((self.root / _RECEIPTS / f"{key}.json").read_text(encoding="utf-8"))["value"],)
        except FileNotFoundError:
            return None

    def drop_receipts(self) -> None:
        shutil.rmtree(self.root / _RECEIPTS, ignore_errors=True)

    def pieces(self, name: str) -> list[Path]:
        """Every piece file of a dataset, in partition then piece order (for streaming it out in order)."""
        return sorted(self.path(name).glob("part-*/piece-*.arrow"))
