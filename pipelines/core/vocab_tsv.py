"""The one ``vocab.tsv`` codec: ``id<TAB>token<TAB>count`` rows under a header line, ids 0, 1, 2, ...

Written by the tokenize stage (the corpus vocabulary), the cooccur and tagger stages and every ``Vectors``
directory; read by every stage, trainer and exporter.  One layout, one strictness::

    id      token   count
    0       <unk>   12
    1       <s>     0

* A token holding a tab, newline or carriage return cannot be written (it would shift every later id), so it
  is refused by name.
* The header is required; ids must count 0, 1, 2, ... in order; counts are non-negative integers, or empty on
  every row (vectors imported from a foreign file carry no counts), never a mix.

The file is written under a temporary name and renamed, so a reader never sees half of it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

HEADER = "id\ttoken\tcount"


def _is_natural(field: str) -> bool:
    """ASCII digits only (``str.isdigit`` alone accepts ``²``, which ``int`` then refuses)."""
    return field.isascii() and field.isdigit()


def write_vocab_tsv(path: str | os.PathLike, tokens: Sequence[str], counts: np.ndarray | None) -> None:
    """Write ``tokens`` (and their counts, or empty count fields for ``None``) atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as out:
            out.write(HEADER + "\n")
            for i, tok in enumerate(tokens):
                if any(c in tok for c in "\t\n\r"):
                    raise ValueError(f"token {tok!r} (id {i}) contains a tab or newline; vocab.tsv cannot hold it")
                count = "" if counts is None else str(int(counts[i]))
                out.write(f"{i}\t{tok}\t{count}\n")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)


def read_vocab_tsv(path: str | os.PathLike) -> tuple[list[str], np.ndarray | None]:
    """The tokens in id order and their uint64 counts (``None`` when every count field is empty).

    Any departure from the layout raises ValueError naming the file and the 1-based line."""
    tokens: list[str] = []
    counts: list[int | None] = []
    with open(path, encoding="utf-8", newline="\n") as handle:
        header = handle.readline().rstrip("\n")
        if header != HEADER:
            raise ValueError(f"{path}:1: expected header 'id<TAB>token<TAB>count', got {header!r}")
        for line_no, line in enumerate(handle, start=2):
            line = line.rstrip("\n")
            parts = line.split("\t")
            if len(parts) != 3 or not _is_natural(parts[0]) or int(parts[0]) != len(tokens):
                raise ValueError(
                    f"{path}:{line_no}: expected 'id<TAB>token<TAB>count' with id {len(tokens)}, got {line!r}"
                )
            if parts[2] and not _is_natural(parts[2]):
                raise ValueError(f"{path}:{line_no}: count {parts[2]!r} is not a non-negative integer")
            tokens.append(parts[1])
            counts.append(int(parts[2]) if parts[2] else None)
    if all(c is None for c in counts):
        return tokens, None
    if any(c is None for c in counts):
        raise ValueError(f"{path}: some rows have a count and others not")
    return tokens, np.asarray(counts, dtype=np.uint64)
