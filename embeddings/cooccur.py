"""Word-word co-occurrence counts within a window, GloVe's ``cooccur`` semantics, vectorised with numpy.

Semantics (Stanford GloVe ``src/cooccur.c``):

* words outside the vocabulary cut (``min_count``, ``max_size``) and ``<unk>`` are *skipped*: they do not
  occupy a position, so windows reach over them (``cooccur.c``: ``continue`` before the word enters the
  history buffer; word2vec's min-count does the same);
* for a word at position j and each earlier word at j - d (1 <= d <= window) of the same segment, the pair
  (earlier, later) gains 1/d (1 with ``distance_weighting=False``); ``symmetric`` also adds (later, earlier)
  -- GloVe's ``-symmetric 0`` keeps only the first, so row = left context word, col = the word;
* segments are sentences (a row of the token shards, GloVe's line) or documents (the shards' ``doc``).

Exact sums: a value is stored as an integer number of *units* of 1/L with L = lcm(1..window) (2520 for
window 10), so every 1/d is the integer L/d and sums are exact in int64, whatever the order of addition,
the split into blocks or the number of workers; the output value is ``units / L`` in float64 (correctly
rounded).  This is why ``window`` is at most :data:`MAX_WINDOW` (L stays below 2^28, leaving 2^35 pair
occurrences of headroom per entry).

Layout of one chunk (dense ids, ``|`` = segment boundary), offsets d = 1..window::

    words [ 7  3  9 | 4  8  2 ]     seg [0 0 0 | 1 1 1]
    d=1:  (7,3) (3,9)   (4,8) (8,2)        pairs with seg[i] == seg[i+d] and i + d >= start
    d=2:  (7,9)         (4,2)              key = row << 32 | col (uint64), units = L // d

Each offset's keys are sorted and run-length counted, then all offsets are merged into one sorted
(key, units) table; :class:`CooccurCounter` keeps a running sorted accumulator and hands it to ``spill``
when it exceeds ``max_pairs`` (the memory bound), carrying the last ``window`` words from chunk to chunk
so the result does not depend on where chunks are cut.

>>> import numpy as np
>>> counter = CooccurCounter(CooccurConfig(window=2), chunk_tokens=1000, max_pairs=10**6)
>>> counter.add(np.array([0, 1, 2]), np.zeros(3, np.int64))
>>> keys, units = counter.result()
>>> [(int(k >> 32), int(k & 0xFFFFFFFF), int(u) / counter.scale) for k, u in zip(keys, units)]
[(0, 1, 1.0), (0, 2, 0.5), (1, 0, 1.0), (1, 2, 1.0), (2, 0, 0.5), (2, 1, 1.0)]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from lmpipe.pipelines.core.schemas import COOC, COOC_PARTIAL, FIRST_WORD_ID

#: The largest window: lcm(1..20) = 232,792,560 units per 1.0 keeps every exact sum far below 2^63.
MAX_WINDOW = 20
_EMPTY_KEYS = np.empty(0, np.uint64)
_EMPTY_UNITS = np.empty(0, np.int64)


@dataclass(frozen=True, kw_only=True, slots=True)
class CooccurConfig:
    window: int = 10  # words on each side (left only when not symmetric)
    symmetric: bool = True  # count (later, earlier) too; GloVe's -symmetric 1
    distance_weighting: bool = True  # 1/d per pair (GloVe's -distance-weighting 1), else 1

    def __post_init__(self) -> None:
        if not 1 <= self.window <= MAX_WINDOW:
            raise ValueError(f"window: bad value {self.window}; allowed: 1 .. {MAX_WINDOW}")

    @property
    def scale(self) -> int:
        """L: units per 1.0 (lcm(1..window) with distance weighting, else 1)."""
        return math.lcm(*range(1, self.window + 1)) if self.distance_weighting else 1

    @property
    def pairs_per_token(self) -> int:
        return self.window * (2 if self.symmetric else 1)


# ------------------------------------------------------------------------------------------ vocabulary
def vocabulary_cut(counts: np.ndarray, min_count: int, max_size: int | None) -> np.ndarray:
    """The tokenize-vocabulary ids that get a row, in id order (= descending count): ordinary words counted
    ``min_count`` times or more, the ``max_size`` most frequent of them (no specials: GloVe's vocabulary has
    no ``<unk>``, ``<s>``, ``</s>``)."""
    ids = np.arange(len(counts))
    keep = ids[(ids >= FIRST_WORD_ID) & (np.asarray(counts) >= min_count)]
    return keep if max_size is None else keep[:max_size]


def dense_ids(keep: np.ndarray, vocab_size: int) -> np.ndarray:
    """Tokenize id -> row index (int32), -1 for ids outside the cut (skipped before windowing)."""
    mapping = np.full(vocab_size, -1, np.int32)
    mapping[keep] = np.arange(len(keep), dtype=np.int32)
    return mapping


# ------------------------------------------------------------------------------------------ counting
def aggregate(keys: np.ndarray, units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum ``units`` by ``keys``: sorted unique uint64 keys and int64 sums.  The sort is stable, so an input
    made of already-sorted runs (an accumulator plus a new batch) is merged by timsort in linear time."""
    if len(keys) == 0:
        return _EMPTY_KEYS, _EMPTY_UNITS
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    starts = np.flatnonzero(np.concatenate(([True], k[1:] != k[:-1])))
    return k[starts], np.add.reduceat(units[order], starts)


def _run_lengths(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k = np.sort(keys)
    starts = np.flatnonzero(np.concatenate(([True], k[1:] != k[:-1])))
    return k[starts], np.diff(np.append(starts, len(k)))


def window_pairs(
    words: np.ndarray, seg: np.ndarray, start: int, config: CooccurConfig
) -> tuple[np.ndarray, np.ndarray, int]:
    """Aggregated pairs of one chunk whose later word is at position ``start`` or after (words before
    ``start`` are the carried context of the previous chunk): ``(keys, units, occurrences)``."""
    n = len(words)
    w = words.astype(np.uint64)
    scale = config.scale
    keys: list[np.ndarray] = []
    units: list[np.ndarray] = []
    occurrences = 0
    for d in range(1, min(config.window, n - 1) + 1):
        lo = max(0, start - d)
        same = seg[lo : n - d] == seg[lo + d : n]
        left, right = w[lo : n - d][same], w[lo + d : n][same]
        if len(left) == 0:
            continue
        per_d = [(left << np.uint64(32)) | right]
        if config.symmetric:
            per_d.append((right << np.uint64(32)) | left)
        uniq, counts = _run_lengths(np.concatenate(per_d))
        keys.append(uniq)
        units.append(counts.astype(np.int64) * (scale // d if config.distance_weighting else 1))
        occurrences += len(left) * len(per_d)
    if not keys:
        return _EMPTY_KEYS, _EMPTY_UNITS, 0
    k, u = aggregate(np.concatenate(keys), np.concatenate(units))
    return k, u, occurrences


class CooccurCounter:
    """Map side: counts a stream of (words, segment) arrays in corpus order into a sorted accumulator of at
    most ``max_pairs`` distinct pairs, spilling it (``spill(keys, units)``) whenever it grows past that.

    ``add`` may be called with arrays of any length: they are cut into chunks of ``chunk_tokens`` words
    (the pair arrays of a chunk take ``chunk_tokens * pairs_per_token`` entries), and the last ``window``
    words are carried into the next chunk, so the counts equal those of one call on the concatenation."""

    def __init__(
        self,
        config: CooccurConfig,
        *,
        chunk_tokens: int,
        max_pairs: int,
        spill: Callable[[np.ndarray, np.ndarray], None] | None = None,
    ) -> None:
        self.config = config
        self.scale = config.scale
        self.chunk_tokens = max(1, chunk_tokens)
        self.max_pairs = max_pairs
        self._spill = spill
        self._keys, self._units = _EMPTY_KEYS, _EMPTY_UNITS
        self._carry_words = np.empty(0, np.int64)
        self._carry_seg = np.empty(0, np.int64)
        self.words = 0  # in-vocabulary words seen
        self.occurrences = 0  # (row, col) increments made, i.e. pairs before aggregation
        self.spills = 0

    def carry(self, words: np.ndarray, seg: np.ndarray) -> None:
        """Set the context that precedes the next ``add`` (the tail of the previous block), not counted."""
        self._carry_words = np.asarray(words, np.int64)[-self.config.window :]
        self._carry_seg = np.asarray(seg, np.int64)[-self.config.window :]

    def add(self, words: np.ndarray, seg: np.ndarray) -> None:
        words, seg = np.asarray(words, np.int64), np.asarray(seg, np.int64)
        self.words += len(words)
        for a in range(0, len(words), self.chunk_tokens):
            w = np.concatenate([self._carry_words, words[a : a + self.chunk_tokens]])
            s = np.concatenate([self._carry_seg, seg[a : a + self.chunk_tokens]])
            keys, units, occurrences = window_pairs(w, s, len(self._carry_words), self.config)
            self.occurrences += occurrences
            self._keys, self._units = aggregate(
                np.concatenate([self._keys, keys]), np.concatenate([self._units, units])
            )
            self.carry(w, s)
            if self._spill is not None and len(self._keys) > self.max_pairs:
                self.flush()

    def flush(self) -> None:
        """Hand the accumulator to ``spill`` (if any pairs) and start a new one."""
        if self._spill is not None and len(self._keys):
            self._spill(self._keys, self._units)
            self.spills += 1
            self._keys, self._units = _EMPTY_KEYS, _EMPTY_UNITS

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """The accumulator (what has not been spilled): sorted keys and int64 units."""
        return self._keys, self._units


def count_sentences(sentences: Iterable[np.ndarray], config: CooccurConfig) -> tuple[np.ndarray, np.ndarray]:
    """All pairs of in-memory sentences of dense ids (one segment each), for tests and small inputs."""
    counter = CooccurCounter(config, chunk_tokens=1 << 20, max_pairs=1 << 62)
    for i, s in enumerate(sentences):
        counter.add(s, np.full(len(s), i, np.int64))
    return counter.result()


# ------------------------------------------------------------------------------------------ tables
def partial_table(keys: np.ndarray, units: np.ndarray) -> pa.Table:
    """Exact partial sums as spilled between map and reduce (schema ``COOC_PARTIAL``)."""
    return pa.table({"key": keys, "units": units.astype(np.uint64)}, schema=COOC_PARTIAL)


def merge_partials(tables: Iterable[pa.Table]) -> tuple[np.ndarray, np.ndarray]:
    """Reduce side: sum partial tables by key (exact integer sums)."""
    parts = [t for t in tables if t.num_rows]
    if not parts:
        return _EMPTY_KEYS, _EMPTY_UNITS
    table = pa.concat_tables(parts).combine_chunks()
    return aggregate(
        np.asarray(table.column("key"), np.uint64), np.asarray(table.column("units")).astype(np.int64)
    )


def cooc_table(keys: np.ndarray, units: np.ndarray, scale: int) -> pa.Table:
    """The output rows (schema ``COOC``), sorted by (row, col) as the keys are."""
    return pa.table(
        {
            "row": (keys >> np.uint64(32)).astype(np.uint32),
            "col": (keys & np.uint64(0xFFFFFFFF)).astype(np.uint32),
            "value": units.astype(np.float64) / scale,
        },
        schema=COOC,
    )
