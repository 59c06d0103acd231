"""Tagger data preparation: tokens and gold tags of every task in, the encoded arrays ``train_loop`` reads out.

Plain data only: the tagger stage reads the CoNLL files, converts chunk tags to the training scheme and passes
each split's tokens and tags (:class:`TaskText`); this module cuts a valid set, lists each task's tags, builds
the word and character vocabularies, aligns pretrained vectors and writes the ``lm.tagging.data.Encoded``
arrays (``task-<k>-<split>.npz``, ``embedding-init.npz``) that every Ray Train worker loads::

    >>> text = TaskText(name="pos", tokens={"train": [["The", "cat"]]}, gold={"train": [["DT", "NN"]]},
    ...                 tags=["DT", "NN"])
    >>> data = prepare_data([text], data_dir, min_count=1, lowercase=None, chars=False)  # doctest: +SKIP
    >>> data.vocab.tokens  # doctest: +SKIP
    ('<pad>', '<unk>', 'cat', 'the')
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmpipe.lm.tagging.data import UNK, CharVocab, WordVocab, build_char_vocab, build_vocab, encode


def valid_cut(sentences: Sequence[Sequence[str]], fraction: float, seed: int) -> list[bool]:
    """Per sentence, True when it goes to the valid set: a hash of (seed, its tokens) falls below ``fraction``,
    so the cut depends on the text, not on the file's order, and is the same on every rerun."""
    out = []
    for tokens in sentences:
        h = hashlib.blake2b(f"{seed}\x00{' '.join(tokens)}".encode(), digest_size=8).digest()
        out.append(int.from_bytes(h, "big") / 2**64 < fraction)
    return out


def tag_inventory(
    gold: Mapping[str, Sequence[Sequence[str]]], file_tags: Mapping[str, Sequence[Sequence[str]]]
) -> tuple[list[str], int, dict[str, dict[str, int]]]:
    """A task's tag list: the training tags (sorted), then tags seen only in valid/test (kept as gold, never
    predicted); how many are training tags; and per valid/test split the file-scheme tags never seen in train,
    with their token counts.  ``gold`` is in the training scheme, ``file_tags`` in the file's own."""
    tags = sorted({t for ts in gold["train"] for t in ts})
    train_tags = len(tags)
    known_file = {t for ts in file_tags["train"] for t in ts}
    unknown: dict[str, dict[str, int]] = {}
    for split in ("valid", "test"):
        if split in gold:
            missing = Counter(t for ts in file_tags[split] for t in ts if t not in known_file)
            if missing:
                unknown[split] = dict(sorted(missing.items()))
            tags += sorted({t for ts in gold[split] for t in ts} - set(tags))
    return tags, train_tags, unknown


def align(vocab: WordVocab, tokens: Sequence[str], matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(V, d)`` rows for the vocabulary and the mask of rows found; with a lowercased lookup a word takes the
    vector of the first (most frequent) token that lowercases to it."""
    index: dict[str, int] = {}
    for i, t in enumerate(tokens):
        index.setdefault(vocab.key(t), i)
    found = np.array([i >= 2 and t in index for i, t in enumerate(vocab.tokens)], dtype=bool)
    aligned = np.zeros((len(vocab.tokens), matrix.shape[1]), dtype=np.float32)
    rows = np.array([index[t] for t, f in zip(vocab.tokens, found, strict=True) if f], dtype=np.int64)
    if len(rows):
        aligned[found] = np.asarray(matrix[rows], dtype=np.float32)
    return aligned, found


@dataclass(slots=True)
class TaskText:
    """One task as plain data: per split, each sentence's tokens and gold tags (training scheme)."""

    name: str
    tokens: dict[str, list[Sequence[str]]]
    gold: dict[str, list[list[str]]]
    tags: list[str]  # training tags, then unknown ones (:func:`tag_inventory`)


@dataclass(slots=True)
class PreparedData:
    """What :func:`prepare_data` wrote, and the manifest figures (vocabulary sizes, unknown-word rates)."""

    vocab: WordVocab
    char_vocab: CharVocab | None
    report: dict[str, Any]


def prepare_data(
    tasks: Sequence[TaskText],
    data_dir: Path,
    *,
    min_count: int,
    lowercase: bool | None,
    chars: bool,
    vectors: tuple[Sequence[str], np.ndarray] | None = None,
) -> PreparedData:
    """Build the vocabularies, align ``vectors`` (tokens, matrix), and write every task's encoded splits.

    The vocabulary is the training words of all tasks seen ``min_count`` times, then the vectors' tokens;
    ``lowercase=None`` lowercases the lookup when the vectors hold no capitalised token.  ``chars`` builds the
    character vocabulary from the training words.  Writes ``data_dir/task-<k>-<split>.npz`` and, with vectors,
    ``data_dir/embedding-init.npz`` (``matrix``, ``found``).
    """
    vec_tokens = vectors[0] if vectors is not None else []
    if lowercase is None:
        lowercase = not any(t != t.lower() for t in vec_tokens)
    train_tokens = [s for t in tasks for s in t.tokens["train"]]
    vocab = build_vocab(train_tokens, min_count=min_count, lowercase=lowercase, extra=vec_tokens)
    char_vocab = build_char_vocab(train_tokens) if chars else None
    data_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "vocabulary": {"size": len(vocab.tokens), "lowercase": lowercase},
        "unk_rate": {},
    }
    if char_vocab is not None:
        report["vocabulary"]["characters"] = len(char_vocab.chars)
    if vectors is not None:
        aligned, found = align(vocab, vec_tokens, vectors[1])
        np.savez(data_dir / "embedding-init.npz", matrix=aligned, found=found)
        report["vocabulary"]["with_vectors"] = int(found.sum())
    for k, t in enumerate(tasks):
        ids = {tag: i for i, tag in enumerate(t.tags)}
        for split, sents in t.tokens.items():
            enc = encode(sents, t.gold[split], vocab, ids, char_vocab)
            enc.save(data_dir / f"task-{k}-{split}.npz")
            report["unk_rate"].setdefault(t.name, {})[split] = round(float((enc.words == UNK).mean()), 5)
    return PreparedData(vocab, char_vocab, report)
