"""Readers and writers of tagged corpora (CoNLL-2003, CoNLL-2000, CoNLL-U).

Tokenization comes from the files themselves: one token a line, a blank line between sentences::

    CoNLL-2003 (token POS chunk NER)    CoNLL-2000 (token POS chunk)    CoNLL-U (10 tab-separated fields)
    -DOCSTART- -X- O O                  Confidence NN B-NP              # sent_id = ...        comment: skipped
                                        in IN B-PP                      1-2  don't ...          range: skipped
    EU NNP I-NP I-ORG                   the DT B-NP                     1    do do AUX VBP ...  word: kept
    rejects VBZ I-VP O                                                  1.1  ...                empty node: skipped

    >>> from lmpipe.pipelines.conll import read_conll
    >>> sentences = read_conll("data/conll2003/eng.train", "conll2003")   # doctest: +SKIP

The chunk tag schemes (``iob1``, ``iob2``, ``bioes``) and exact conversion between them live on the ground
floor (``pipelines.core.tag_schemes``), since the tagger's metrics read spans too; ``FILE_SCHEMES`` says
which scheme each column is distributed in.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lmpipe.pipelines.core.tag_schemes import Scheme
from lmpipe.pipelines.ingest import InputError

Format = Literal["conll2003", "conll2000", "conllu"]

#: Column name -> index, per format.
COLUMNS: dict[str, dict[str, int]] = {
    "conll2003": {"token": 0, "pos": 1, "chunk": 2, "ner": 3},
    "conll2000": {"token": 0, "pos": 1, "chunk": 2},
    "conllu": {"token": 1, "upos": 3, "xpos": 4},
}
_WIDTH = {"conll2003": 4, "conll2000": 3, "conllu": 10}
#: The scheme of each chunk-tagged column as distributed; other columns are plain token tags.
FILE_SCHEMES: dict[tuple[str, str], Scheme] = {
    ("conll2003", "chunk"): "iob1",
    ("conll2003", "ner"): "iob1",
    ("conll2000", "chunk"): "iob2",
}


class ConllError(InputError):
    """A malformed tagged file; the message names the file and the 1-based line number."""


@dataclass(frozen=True, slots=True)
class Sentence:
    """One sentence: its tokens and one tag sequence per column, plus where it starts in its file."""

    tokens: tuple[str, ...]
    tags: dict[str, tuple[str, ...]] = field(default_factory=dict)
    line: int = 0  # 1-based line of the first token


def _split(line: str, fmt: str) -> list[str]:
    return line.split("\t") if fmt == "conllu" else line.split()


def read_conll(path: str | os.PathLike, fmt: Format) -> list[Sentence]:
    """All sentences of a file in ``fmt``.  A line with the wrong number of fields, an empty field, or (CoNLL-U)
    a bad word id raises :class:`ConllError` naming the file and line."""
    if fmt not in _WIDTH:
        raise ValueError(f"unknown tagged-file format {fmt!r}; options are {list(_WIDTH)}")
    width, columns = _WIDTH[fmt], COLUMNS[fmt]
    out: list[Sentence] = []
    rows: list[list[str]] = []
    start = 0

    def flush() -> None:
        if rows:
            tags = {name: tuple(r[i] for r in rows) for name, i in columns.items() if name != "token"}
            out.append(Sentence(tuple(r[columns["token"]] for r in rows), tags, start))
            rows.clear()

    with open(path, encoding="utf-8") as f:
        for n, raw in enumerate(f, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                flush()
                continue
            if fmt == "conllu" and line.startswith("#"):
                continue
            fields = _split(line, fmt)
            if fmt != "conllu" and fields[0] == "-DOCSTART-":
                flush()
                continue
            if len(fields) != width or not all(fields):
                raise ConllError(
                    f"{path}:{n}: expected {width} {'tab' if fmt == 'conllu' else 'whitespace'}-separated fields "
                    f"({fmt}), found {len([x for x in fields if x])}: {line[:80]!r}"
                )
            if fmt == "conllu":
                wid = fields[0]
                if "-" in wid or "." in wid:
                    continue  # multiword-token range (1-2) or empty node (1.1): not a word of the sentence
                if not wid.isdigit():
                    raise ConllError(
                        f"{path}:{n}: CoNLL-U word id {wid!r} is not an integer, a range or a decimal"
                    )
            if not rows:
                start = n
            rows.append(fields)
    flush()
    return out


# ------------------------------------------------------------------------------------------ writing
def write_predictions(
    path: str | os.PathLike,
    sentences: Sequence[Sentence],
    gold: Sequence[Sequence[str]],
    pred: Sequence[Sequence[str]],
) -> None:
    """``token gold pred`` a line, a blank line after each sentence: what conlleval and seqeval read."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for s, g, p in zip(sentences, gold, pred, strict=True):
            for tok, gt, pt in zip(s.tokens, g, p, strict=True):
                f.write(f"{tok} {gt} {pt}\n")
            f.write("\n")


def read_predictions(path: str | os.PathLike) -> tuple[list[list[str]], list[list[str]]]:
    """Gold and predicted tag sequences of a file written by :func:`write_predictions` (last two fields)."""
    gold: list[list[str]] = []
    pred: list[list[str]] = []
    g: list[str] = []
    p: list[str] = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                if g:
                    gold.append(g)
                    pred.append(p)
                    g, p = [], []
                continue
            if len(fields) < 3:
                raise ConllError(f"{path}:{n}: expected token gold pred, found {line.rstrip()!r}")
            g.append(fields[-2])
            p.append(fields[-1])
    if g:
        gold.append(g)
        pred.append(p)
    return gold, pred
