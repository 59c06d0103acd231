"""Chunk tag schemes: BIO/IOBES tags <-> spans, exactly, with conlleval's reading of invalid sequences.

One name per thing: a *tag* is ``O`` or ``<prefix>-<type>``, a *span* is ``(start, stop, type)``, ``stop``
exclusive.  Schemes:

    iob1   I-X inside a chunk; B-X only at the first token of a chunk that directly follows a chunk of the
           same type (CoNLL-2003 as distributed)
    iob2   B-X at the first token of every chunk, I-X after it (CoNLL-2000)
    bioes  S-X a one-token chunk; B-X first, I-X inside, E-X last of a longer chunk

``spans(tags)`` reads any of them with conlleval's rules (``I-X`` after ``O`` or after another type starts a
chunk, so an invalid sequence is read as conlleval reads it) and ``render(spans, n, scheme)`` writes the
unique tag sequence of a scheme, so ``convert = render . spans`` is exact for valid input in every direction.

    >>> convert(["I-PER", "B-PER", "O", "I-LOC"], "iob1", "bioes")
    ['S-PER', 'S-PER', 'O', 'S-LOC']
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

Scheme = Literal["iob1", "iob2", "bioes"]
SCHEMES: tuple[str, ...] = ("iob1", "iob2", "bioes")


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
