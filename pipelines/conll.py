"""Readers for tagged corpora (CoNLL-2003, CoNLL-2000, CoNLL-U) and exact conversion between chunk tag schemes.

Tokenization comes from the files themselves: one token a line, a blank line between sentences::

    CoNLL-2003 (token POS chunk NER)    CoNLL-2000 (token POS chunk)    CoNLL-U (10 tab-separated fields)
    -DOCSTART- -X- O O                  Confidence NN B-NP              # sent_id = ...        comment: skipped
                                        in IN B-PP                      1-2  don't ...          range: skipped
    EU NNP I-NP I-ORG                   the DT B-NP                     1    do do AUX VBP ...  word: kept
    rejects VBZ I-VP O                                                  1.1  ...                empty node: skipped

    >>> from lmpipe.pipelines.conll import read_conll, convert
    >>> sentences = read_conll("data/conll2003/eng.train", "conll2003")   # doctest: +SKIP
    >>> convert(["I-PER", "B-PER", "O", "I-LOC"], "iob1", "bioes")
    ['S-PER', 'S-PER', 'O', 'S-LOC']

Schemes (one name per thing: a *tag* is ``O`` or ``<prefix>-<type>``, a *span* is ``(start, stop, type)``,
``stop`` exclusive):

    iob1   I-X inside a chunk; B-X only at the first token of a chunk that directly follows a chunk of the
           same type (CoNLL-2003 as distributed)
    iob2   B-X at the first token of every chunk, I-X after it (CoNLL-2000)
    bioes  S-X a one-token chunk; B-X first, I-X inside, E-X last of a longer chunk

``spans(tags)`` reads any of them with conlleval's rules (``I-X`` after ``O`` or after another type starts a
chunk, so an invalid sequence is read as conlleval reads it) and ``render(spans, n, scheme)`` writes the
unique tag sequence of a scheme, so ``convert = render . spans`` is exact for valid input in every direction.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lmpipe.pipelines.ingest import InputError

Scheme = Literal["iob1", "iob2", "bioes"]
Format = Literal["conll2003", "conll2000", "conllu"]
SCHEMES: tuple[str, ...] = ("iob1", "iob2", "bioes")

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


# ------------------------------------------------------------------------------------------ schemes
def _split_tag(tag: str) -> tuple[str, str]:
    """``B-PER`` -> ``("B", "PER")``, ``O`` -> ``("O", "")`` (conlleval's reading: the prefix is one letter)."""
    if tag == "O":
        return "O", ""
    prefix, _, kind = tag.partition("-")
    return prefix, kind


def _chunk_end(prev: str, tag: str, prev_type: str, kind: str) -> bool:
    """conlleval's endOfChunk: does the chunk open before this token end here?"""
    if prev in ("E", "S"):
        return True
    if prev in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev != "O" and prev_type != kind


def _chunk_start(prev: str, tag: str, prev_type: str, kind: str) -> bool:
    """conlleval's startOfChunk: does a chunk start at this token?"""
    if tag in ("B", "S"):
        return True
    if prev in ("E", "S", "O") and tag in ("E", "I"):
        return True
    return tag != "O" and prev_type != kind


def spans(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """Chunks ``(start, stop, type)`` of one sentence, read with conlleval's rules (any of the schemes)."""
    out: list[tuple[int, int, str]] = []
    prev, prev_type, begin = "O", "", 0
    for i, tag in enumerate([*tags, "O"]):
        cur, kind = _split_tag(tag)
        if _chunk_end(prev, cur, prev_type, kind) and prev != "O":
            out.append((begin, i, prev_type))
        if _chunk_start(prev, cur, prev_type, kind):
            begin = i
        prev, prev_type = cur, kind
    return out


def render(chunks: Iterable[tuple[int, int, str]], length: int, scheme: Scheme) -> list[str]:
    """The tags of ``scheme`` for non-overlapping ``chunks`` over ``length`` tokens."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown tag scheme {scheme!r}; options are {list(SCHEMES)}")
    tags = ["O"] * length
    last_stop, last_type = -1, ""
    for start, stop, kind in sorted(chunks):
        if scheme == "iob1":
            first = "B" if start == last_stop and kind == last_type else "I"
            tags[start:stop] = [f"{first}-{kind}"] + [f"I-{kind}"] * (stop - start - 1)
        elif scheme == "iob2":
            tags[start:stop] = [f"B-{kind}"] + [f"I-{kind}"] * (stop - start - 1)
        elif stop - start == 1:
            tags[start] = f"S-{kind}"
        else:
            tags[start:stop] = [f"B-{kind}"] + [f"I-{kind}"] * (stop - start - 2) + [f"E-{kind}"]
        last_stop, last_type = stop, kind
    return tags


def convert(tags: Sequence[str], source: Scheme, target: Scheme) -> list[str]:
    """Re-tag one sentence from ``source`` to ``target`` (exact for valid input; ``source`` only names the
    input's scheme, since conlleval's reading is the same for all three)."""
    for name in (source, target):
        if name not in SCHEMES:
            raise ValueError(f"unknown tag scheme {name!r}; options are {list(SCHEMES)}")
    return render(spans(tags), len(tags), target)


def check_scheme(tags: Sequence[str], scheme: Scheme) -> bool:
    """True when ``tags`` is exactly the ``scheme`` rendering of its own chunks (a valid, canonical sequence)."""
    return list(tags) == render(spans(tags), len(tags), scheme)


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
