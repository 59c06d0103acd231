"""Tagger inputs: the word vocabulary, word/case/tag ids of every sentence, and padded batches.

An encoded split is four flat arrays plus offsets, saved with ``np.savez`` (no pickle) by the stage and read
by every Ray Train worker::

    offsets  int64 (n + 1,)   sentence i is rows offsets[i] .. offsets[i + 1]
    words    int32 (tokens,)  0 <pad>, 1 <unk>, then the vocabulary
    case     int8  (tokens,)  lm.tagging.models.case_of (1 .. 5)
    tags     int32 (tokens,)  ids into the task's tag list; ids >= the number of training tags are tags seen
                              only in valid/test (reported, kept as gold, never predicted)

Word lookup is lowercased when the vectors are (``lowercase``), with capitalisation kept by the case feature.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lm.tagging.models import case_of

PAD, UNK = 0, 1
SPECIALS = ("<pad>", "<unk>")


@dataclass(frozen=True, slots=True)
class WordVocab:
    tokens: tuple[str, ...]
    lowercase: bool

    def index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tokens)}

    def key(self, token: str) -> str:
        return token.lower() if self.lowercase else token


def build_vocab(
    train: Sequence[Sequence[str]], *, min_count: int, lowercase: bool, extra: Sequence[str] = ()
) -> WordVocab:
    """``<pad>``, ``<unk>``, the training words seen ``min_count`` times or more (by count, then text), then the
    ``extra`` words (the pretrained vectors' tokens) not already in, in their order."""
    counts = Counter(t.lower() if lowercase else t for sent in train for t in sent)
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    seen = set(words) | set(SPECIALS)
    out = list(SPECIALS) + words
    for token in extra:
        t = token.lower() if lowercase else token
        if t not in seen:
            seen.add(t)
            out.append(t)
    return WordVocab(tuple(out), lowercase)


@dataclass(frozen=True, slots=True)
class Encoded:
    offsets: np.ndarray
    words: np.ndarray
    case: np.ndarray
    tags: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def save(self, path) -> None:
        np.savez(path, offsets=self.offsets, words=self.words, case=self.case, tags=self.tags)

    @classmethod
    def load(cls, path) -> Encoded:
        with np.load(path, allow_pickle=False) as z:
            return cls(z["offsets"], z["words"], z["case"], z["tags"])

    def sentence(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.words[a:b], self.case[a:b], self.tags[a:b]


def encode(
    sentences: Sequence[Sequence[str]],
    tags: Sequence[Sequence[str]],
    vocab: WordVocab,
    tag_ids: dict[str, int],
) -> Encoded:
    """Ids of every token; a tag missing from ``tag_ids`` is a programming error (the stage extends the list)."""
    index = vocab.index()
    lengths = np.array([len(s) for s in sentences], dtype=np.int64)
    offsets = np.zeros(len(sentences) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = [t for s in sentences for t in s]
    words = np.array([index.get(vocab.key(t), UNK) for t in flat], dtype=np.int32)
    case = np.array([case_of(t) for t in flat], dtype=np.int8)
    tag = np.array([tag_ids[t] for ts in tags for t in ts], dtype=np.int32)
    return Encoded(offsets, words, case, tag)


def pad_batch(data: Encoded, rows: Sequence[int], device: torch.device) -> tuple[torch.Tensor, ...]:
    """``(words, case, lengths, tags)`` of the sentences ``rows``: (B, T) long tensors padded with 0 (tags: -1)."""
    lengths = [int(data.offsets[i + 1] - data.offsets[i]) for i in rows]
    width = max(lengths)
    words = np.zeros((len(rows), width), dtype=np.int64)
    case = np.zeros((len(rows), width), dtype=np.int64)
    tags = np.full((len(rows), width), -1, dtype=np.int64)
    for j, i in enumerate(rows):
        w, c, t = data.sentence(i)
        words[j, : len(w)], case[j, : len(c)], tags[j, : len(t)] = w, c, t
    return (
        torch.from_numpy(words).to(device),
        torch.from_numpy(case).to(device),
        torch.tensor(lengths, dtype=torch.long),
        torch.from_numpy(tags).to(device),
    )


def epoch_batches(
    rows: np.ndarray, batch_size: int, steps: int, rng: np.random.Generator
) -> Iterator[np.ndarray]:
    """Exactly ``steps`` batches of ``rows``: shuffled passes, restarted (reshuffled) when one runs out, so a task
    with fewer sentences cycles while the largest one makes one pass.  Batches are not length-bucketed: the
    window model ignores padding and the RNN packs its sequences."""
    if len(rows) == 0:
        raise ValueError("a worker has no training sentence for a task: use fewer workers than sentences")
    done = 0
    while done < steps:
        order = rows[rng.permutation(len(rows))]
        for start in range(0, len(order), batch_size):
            if done == steps:
                return
            yield order[start : start + batch_size]
            done += 1
