"""``lmpipe data list``: one row per registered dataset, with where a copy already is and how big it is.

A dataset is *cached* when the cache data root holds it fetched under the registry's current pins (its
marker, as ``lmpipe data fetch`` writes it), *mirrored* when the mirror data root holds all its files; the
size is read from that local copy (the registry pins digests, not sizes).  Nothing is hashed here: listing
is instant; ``fetch`` and the ``data:`` resolver verify the checksums.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lmpipe.pipelines.datasets.fetch import PathArg, data_home, find_mirror, marker_current
from lmpipe.pipelines.datasets.registry import Dataset, list_datasets


@dataclass(frozen=True, slots=True)
class DatasetRow:
    name: str
    splits: tuple[str, ...]
    size_bytes: int | None  # of the local copy; None when there is none
    where: str  # "cached", "mirrored", "cached, mirrored", "not fetched" or "mirror only: not found"
    description: str


def _entries(dataset: Dataset) -> list[str]:
    return [e.path for e in (*dataset.files, *dataset.trees)]


def _local_bytes(dataset: Dataset, root: Path) -> int:
    total = 0
    for rel in _entries(dataset):
        path = root / rel
        files = [path] if path.is_file() else (p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        total += sum(p.stat().st_size for p in files)
    return total


def dataset_rows(mirror: PathArg | None = None) -> list[DatasetRow]:
    """Every registered dataset, in registry order, with its local state (cache, then ``mirror``)."""
    mirror_root, cache_root = find_mirror(mirror), data_home()
    rows = []
    for dataset in list_datasets():
        cached = marker_current(dataset, cache_root)
        mirrored = mirror_root is not None and all((mirror_root / rel).exists() for rel in _entries(dataset))
        places = [label for label, present in (("cached", cached), ("mirrored", mirrored)) if present]
        if places:
            size: int | None = _local_bytes(dataset, cache_root if cached else mirror_root)  # type: ignore[arg-type]
            where = ", ".join(places)
        else:
            size, where = None, "mirror only: not found" if dataset.mirror_only else "not fetched"
        rows.append(DatasetRow(dataset.name, tuple(dataset.splits), size, where, dataset.description))
    return rows


def human_bytes(n: int | None) -> str:
    """``12345678`` -> ``11.8 MiB``; None -> ``-``."""
    if n is None:
        return "-"
    value, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"


def format_table(rows: list[DatasetRow], width: int | None = None) -> str:
    """A plain-text table, columns padded; with ``width`` (a terminal's) long lines are cut to it."""
    header = ("NAME", "SPLITS", "SIZE", "LOCAL COPY", "DESCRIPTION")
    cells = [(r.name, ",".join(r.splits), human_bytes(r.size_bytes), r.where, r.description) for r in rows]
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(4)]
    lines = []
    for row in [header, *cells]:
        line = "  ".join(cell.ljust(w) if i != 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row[:4], widths, strict=True)))
        line = f"{line}  {row[4]}"
        lines.append(line if width is None or len(line) <= width else line[: width - 3].rstrip() + "...")
    return "\n".join(lines)
