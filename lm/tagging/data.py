"""Tagger inputs: the word and character vocabularies, word/case/character/tag ids of every sentence, and
padded batches.

An encoded split is flat arrays plus offsets, saved with ``np.savez`` (no pickle) by the stage and read by every
Ray Train worker::

    offsets       int64 (n + 1,)       sentence i is tokens offsets[i] .. offsets[i + 1]
    words         int32 (tokens,)      0 <pad>, 1 <unk>, then the vocabulary
    case          int8  (tokens,)      lm.tagging.models.case_of (1 .. 5)
    tags          int32 (tokens,)      ids into the task's tag list; ids >= the number of training tags are tags
                                       seen only in valid/test (reported, kept as gold, never predicted)
    char_offsets  int64 (tokens + 1,)  token j is characters char_offsets[j] .. char_offsets[j + 1]
    chars         int32 (characters,)  0 <pad>, 1 <unk>, then the training characters (case kept)

Word lookup is lowercased when the vectors are (``lowercase``), with capitalisation kept by the case feature and
by the characters, which are never lowercased: a character model (Ma & Hovy 2016, Lample et al. 2016) sees the
word as written, including words without a vector or unseen in training.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from lmpipe.lm.tagging.models import case_of

PAD, UNK = 0, 1
SPECIALS = ("<pad>", "<unk>")
#: A longer word is read by its first and last MAX_WORD_CHARS // 2 characters (prefix and suffix carry the
#: morphology; CoNLL-2003 has no token this long outside URLs and e-mail addresses).
MAX_WORD_CHARS = 30


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
class CharVocab:
    """``<pad>``, ``<unk>``, then the characters of the training words (by count, then code point)."""

    chars: tuple[str, ...]

    def index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.chars)}


def build_char_vocab(train: Sequence[Sequence[str]]) -> CharVocab:
    counts = Counter(c for sent in train for t in sent for c in t)
    return CharVocab(tuple(SPECIALS) + tuple(sorted(counts, key=lambda c: (-counts[c], c))))


def word_chars(token: str) -> str:
    """The characters a character model reads: the word, or its first and last MAX_WORD_CHARS // 2."""
    if len(token) <= MAX_WORD_CHARS:
        return token
    half = MAX_WORD_CHARS // 2
    return token[:half] + token[-half:]


@dataclass(frozen=True, slots=True)
class Encoded:
    offsets: np.ndarray
    words: np.ndarray
    case: np.ndarray
    tags: np.ndarray
    char_offsets: np.ndarray
    chars: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def save(self, path) -> None:
        np.savez(path, **{f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def load(cls, path) -> Encoded:
        with np.load(path, allow_pickle=False) as z:
            return cls(**{f.name: z[f.name] for f in fields(cls)})

    def sentence(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.words[a:b], self.case[a:b], self.tags[a:b]


def encode(
    sentences: Sequence[Sequence[str]],
    tags: Sequence[Sequence[str]],
    vocab: WordVocab,
    tag_ids: dict[str, int],
    char_vocab: CharVocab | None = None,
) -> Encoded:
    """Ids of every token; a tag missing from ``tag_ids`` is a programming error (the stage extends the list).
    Without ``char_vocab`` the character arrays are empty (every word has no characters)."""
    index = vocab.index()
    lengths = np.array([len(s) for s in sentences], dtype=np.int64)
    offsets = np.zeros(len(sentences) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = [t for s in sentences for t in s]
    words = np.array([index.get(vocab.key(t), UNK) for t in flat], dtype=np.int32)
    case = np.array([case_of(t) for t in flat], dtype=np.int8)
    tag = np.array([tag_ids[t] for ts in tags for t in ts], dtype=np.int32)
    forms = [word_chars(t) for t in flat] if char_vocab is not None else [""] * len(flat)
    char_offsets = np.zeros(len(flat) + 1, dtype=np.int64)
    np.cumsum([len(f) for f in forms], out=char_offsets[1:])
    cindex = char_vocab.index() if char_vocab is not None else {}
    chars = np.array([cindex.get(c, UNK) for f in forms for c in f], dtype=np.int32)
    return Encoded(offsets, words, case, tag, char_offsets, chars)


def pad_batch(data: Encoded, rows: Sequence[int], device: torch.device) -> tuple[torch.Tensor, ...]:
    """``(words, case, chars, lengths, tags)`` of the sentences ``rows``: (B, T) long tensors padded with 0 (tags:
    -1), ``chars`` (B, T, C) with C the longest word of the batch (at least 1), padded with 0.  Vectorised: slot
    (j, k) of the batch is token ``offsets[rows[j]] + k`` of ``data`` when k < the sentence's length."""
    rows_arr = np.asarray(rows, dtype=np.int64)
    lengths = data.offsets[rows_arr + 1] - data.offsets[rows_arr]
    width = int(lengths.max())
    slot = np.arange(width)[None, :]
    present = slot < lengths[:, None]  # (B, T)
    token = (data.offsets[rows_arr][:, None] + slot)[present]  # data token ids, row-major

    def spread(values: np.ndarray, fill: int) -> np.ndarray:
        out = np.full(present.shape, fill, dtype=np.int64)
        out[present] = values[token]
        return out

    starts = data.char_offsets[token]
    nchars = data.char_offsets[token + 1] - starts
    pos = np.arange(max(int(nchars.max()), 1))[None, :]
    has = pos < nchars[:, None]
    chars = np.zeros((*present.shape, pos.shape[1]), dtype=np.int64)
    per_token = np.zeros((len(token), pos.shape[1]), dtype=np.int64)
    per_token[has] = data.chars[(starts[:, None] + pos)[has]]
    chars[present] = per_token
    return (
        torch.from_numpy(spread(data.words, 0)).to(device),
        torch.from_numpy(spread(data.case, 0)).to(device),
        torch.from_numpy(chars).to(device),
        torch.from_numpy(lengths),
        torch.from_numpy(spread(data.tags, -1)).to(device),
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
