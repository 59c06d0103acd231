"""Stream an ARPA file from per-partition model tables on disk, so no process holds the whole model.

The distributed ngram stage leaves MODEL[k] (``lm.kneser_ney.backoff_step`` output) as one Arrow file per
order and partition; this writes them in order-major, partition-minor order with the same line format as
``lm.arpa.write_arpa`` (KenLM reads n-grams of a section in any order).  The header needs the n-gram count
per order, which the caller knows from the tasks' row counts.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from lm.arpa import _WRITE_BATCH, _format_order, _write_strings
from pipelines.partitions import read_table

logger = logging.getLogger(__name__)


def write_arpa_parts(parts: dict[int, Sequence[Path]], counts: dict[int, int], vocab: pa.Array, path: Path) -> Path:
    """Write ``parts[k]`` (MODEL[k] files) of every order 1..N as one ARPA file, atomically."""
    path = Path(path)
    top = max(parts)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as raw:
            out = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6) if path.suffix == ".gz" else raw
            out.write(("\\data\\\n" + "".join(f"ngram {k}={counts[k]}\n" for k in range(1, top + 1)) + "\n").encode())
            for k in range(1, top + 1):
                out.write(f"\\{k}-grams:\n".encode())
                written = 0
                for part in parts[k]:
                    table = read_table(part)
                    for start in range(0, table.num_rows, _WRITE_BATCH):
                        batch = table.slice(start, _WRITE_BATCH)
                        _write_strings(out, _format_order(batch, k, vocab, with_backoff=k < top))
                    written += table.num_rows
                if written != counts[k]:
                    raise RuntimeError(f"{k}-grams: header says {counts[k]}, parts hold {written}")
                out.write(b"\n")
            out.write(b"\\end\\\n")
            if out is not raw:
                out.close()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.info("wrote %s: %s", path, ", ".join(f"{k}-grams {counts[k]:,}" for k in range(1, top + 1)))
    return path


def read_arpa_counts(path: Path) -> dict[int, int]:
    """The ``ngram k=N`` counts of an ARPA header (plain or gzip)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    counts: dict[int, int] = {}
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            match = re.match(r"ngram (\d+)=(\d+)", line.strip())
            if match:
                counts[int(match.group(1))] = int(match.group(2))
            elif line.startswith("\\1-grams"):
                break
    return counts
