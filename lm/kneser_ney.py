"""Interpolated modified Kneser-Ney, computed exactly as KenLM's ``lmplz``, over hash-partitioned count tables.

Reimplements kpu/kenlm ``lm/builder/{adjust_counts,initial_probabilities,interpolate}.cc`` (kenlm 0.3.0) as
pure functions over Arrow tables, one per lmplz stage, sequenced once by :func:`estimate` over hash
partitions: in one process by default, or as one Ray task per partition when the ngram stage passes its
``map_fn`` (``pipelines.ray_stages.map_tasks``) and a folder store shared by the tasks.  Arithmetic follows lmplz's
``float`` (float32) operations in lmplz's order, so values agree with lmplz's ARPA to float32 rounding.

Pipeline (k = order, N = highest order; "by X" = the hash-partition key of the inputs, see
:func:`pipelines.core.keyed.partition_by`)::

    raw counts 1..N (lm.ngram_counts.count_ngrams / merge_counts)
     (a) adjust_counts_step      order k by w0..w{k-1}, order k+1 by w1..wk  -> ADJUSTED[k]
     (b) count_stats_step        any partitioning -> OrderStats, summed      -> compute_discounts (tiny)
     (c) initial_probabilities_step  ADJUSTED[k] by context w0..w{k-2}      -> UNINTERP[k], GAMMA[k-1]
         unigram_step            all of ADJUSTED[1] (vocabulary-sized)      -> INTERP[1]
     (d) interpolate_step        UNINTERP[k] by suffix w1..w{k-1}, INTERP[k-1] by w0..w{k-2} -> INTERP[k]
     (e) backoff_step            INTERP[k] by w0..w{k-1}, GAMMA[k] by w0..w{k-1}            -> MODEL[k]
                                 (for k < N inside order k+1's interpolate task, which holds INTERP[k])

    (c) and (d) alternate order by order (c for k, then d for k), so only one order's float tables wait.

The maths (Chen & Goodman 1998, as lmplz does it; a = adjusted count, c = raw count):

* a(x) = c(x) for x of order N and for x beginning with ``<s>``; otherwise a(x) = N1+(. x), the number of
  distinct words v with v x among the (k+1)-grams (``<s>`` included).
* Per order, n_j = #{x : a(x) = j}, j = 1..4, over *all* n-grams (pruned ones too); Y = n1/(n1+2 n2),
  D_j = j - (j+1) Y n_{j+1}/n_j (C&G eq. 26), D_3 used for all a >= 3.
* u(w|h) = (a(hw) - D(a(hw))) / sum_x a(hx);  gamma(h) = (sum_j D_j N_j(h.) + sum_{pruned x} a(hx)) / sum_x a(hx)
  where N_j(h.) counts unpruned extensions with a = j (3 = 3+).
* p(w|h) = u(w|h) + gamma(h) p(w|h'), h' = h without its first word; unigrams interpolate with 1/|V|, |V| =
  kept unigrams excluding ``<s>`` (or ``vocab_pad`` if larger).  ``<s>`` has p = 1 (context only).
* ARPA: log10 p (clipped to <= 0) and backoff log10 gamma(x) for x that are contexts, else 0.

Pruning (lmplz ``--prune``): x of order k is pruned when c(x) <= t_k (raw counts, unlike SRILM) or when it
contains a word outside ``limit_vocab``.  Pruned n-grams still count as left extensions, in n_j and in
denominators; their adjusted counts move into gamma so each distribution still sums to one.  Thresholds must
be non-decreasing, so the context and the suffix of every kept n-gram are kept (a kept n-gram never needs a
pruned one); :func:`interpolate_step` checks it.  ``<unk>`` and ``<s>`` unigrams are never pruned.

Where we knowingly differ from lmplz: (1) the ``</s>`` unigram is never pruned either; lmplz would prune it
with a unigram threshold >= #sentences and then print a garbage probability for it.  (2) ``log10`` is
correctly rounded; glibc's ``log10f`` (fdlibm's) is not, so many printed values differ from lmplz's by one
float32 ulp (at most 5e-7 on PTB).  (3) lmplz refuses ``<unk>`` in the text; :func:`lm.ngram_counts.count_ngrams` can also count it as
a word (``unk="word"``, PTB's closed-vocabulary convention), which these steps then treat like any word.
An lmplz quirk that changes n_j on small corpora *is* reproduced (:func:`last_entry_correction`).

>>> import pyarrow as pa
>>> from lmpipe.lm.ngram_counts import count_ngrams
>>> vocab = ["<unk>", "<s>", "</s>", "a", "b", "c"]
>>> ids = pa.table({"ids": pa.array([[3, 4, 5], [3, 4], [5, 3, 4, 3], [4]], pa.list_(pa.uint32()))})
>>> model = estimate(count_ngrams(ids, 3), vocab, KneserNeyConfig(order=3, discount_fallback=(0.5, 1, 1.5)))
>>> [model.tables[k].num_rows for k in (1, 2, 3)]
[6, 10, 9]
>>> round(model.tables[1].column("prob")[3].as_py(), 5)  # "a": log10(0.15 + 0.5 / 5)
-0.60206
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from lmpipe.pipelines.core.errors import UserError
from lmpipe.pipelines.core.faults import inject
from lmpipe.pipelines.core.keyed import (
    column_np,
    group_rows,
    key_columns,
    lookup_rows,
    partition_by,
    rows_sorted,
    run_starts,
    sort_rows,
)
from lmpipe.pipelines.core.schemas import BOS_ID, COUNT, EOS_ID, TOKEN_ID, UNK_ID, ngram_schema

logger = logging.getLogger(__name__)

F32 = np.float32
#: lmplz's implicit ``--discount_fallback`` values for adjusted counts 1, 2, 3+.
DEFAULT_FALLBACK = (0.5, 1.0, 1.5)


#: How a user substitutes fixed discounts, as the spec spells it (the message is all a user sees).
_FALLBACK_HINT = (
    f"set discount_fallback (in a spec: ngram.discount_fallback: {list(DEFAULT_FALLBACK)}; "
    f"lmplz --discount_fallback {' '.join(map(str, DEFAULT_FALLBACK))})"
)


class BadDiscountError(UserError, ValueError):
    """Closed-form discounts failed for an order (a zero count-of-counts or a discount out of range); the
    user sets ``ngram.discount_fallback``."""


@dataclass(frozen=True, kw_only=True, slots=True)
class KneserNeyConfig:
    """lmplz's estimation options (``lmplz_main.cc``); field names follow its flags.

    ``prune``: raw-count thresholds per order (``--prune``), non-decreasing, the last value repeats.
    ``discount_fallback``: ``None`` = raise :class:`BadDiscountError` (lmplz's default); otherwise up to three
    discounts for adjusted counts 1, 2, 3+ used for orders whose closed form fails (``--discount_fallback``
    alone means ``DEFAULT_FALLBACK``).  ``interpolate_unigrams=False`` is SRILM's behaviour (all unigram
    interpolation mass to ``<unk>``).  ``vocab_pad``: use at least this |V| for the uniform distribution.
    """

    order: int
    prune: tuple[int, ...] = ()
    discount_fallback: tuple[float, ...] | None = None
    interpolate_unigrams: bool = True
    vocab_pad: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.order <= 6:
            raise ValueError(f"order must be in 1..6 (KenLM's default KENLM_MAX_ORDER), got {self.order}")
        if len(self.prune) > self.order:
            raise ValueError(
                f"prune thresholds given for orders 1..{len(self.prune)} but order is {self.order}"
            )
        if any(t < 0 for t in self.prune) or list(self.prune) != sorted(self.prune):
            raise ValueError(f"prune thresholds must be non-negative and non-decreasing, got {self.prune}")
        if self.discount_fallback is not None:
            if not 1 <= len(self.discount_fallback) <= 3:
                raise ValueError(f"discount_fallback takes 1 to 3 values, got {self.discount_fallback}")
            for j, d in enumerate(self.fallback().amounts[1:], start=1):
                if not 0.0 <= d <= j:
                    raise ValueError(f"fallback discount for count {j} is {d}, not in [0, {j}]")
        if self.vocab_pad < 0:
            raise ValueError(f"vocab_pad must be >= 0, got {self.vocab_pad}")
        if self.vocab_pad and not self.interpolate_unigrams:
            raise ValueError("vocab_pad requires interpolate_unigrams (as lmplz's --vocab_pad does)")

    def thresholds(self) -> tuple[int, ...]:
        """Prune threshold of each order 1..N (lmplz pads with the last value; none given = no pruning)."""
        if not self.prune:
            return (0,) * self.order
        return tuple(self.prune) + (self.prune[-1],) * (self.order - len(self.prune))

    def fallback(self) -> Discount:
        """The fallback :class:`Discount` (lmplz repeats the last given value for the missing ones)."""
        given = self.discount_fallback or DEFAULT_FALLBACK
        return Discount(*(float(F32(given[min(i, len(given) - 1)])) for i in range(3)))


@dataclass(frozen=True, slots=True)
class Discount:
    """Discounts D1, D2, D3+ of one order (float32 values, as lmplz stores them)."""

    d1: float
    d2: float
    d3: float

    @property
    def amounts(self) -> np.ndarray:
        """``[0, D1, D2, D3+]`` indexed by ``min(count, 3)``."""
        return np.array([0.0, self.d1, self.d2, self.d3], dtype=F32)

    def apply(self, counts: np.ndarray) -> np.ndarray:
        """``count - D(count)`` in float32 (lmplz ``Discount::Apply``)."""
        counts = np.asarray(counts, dtype=np.uint64)
        return counts.astype(F32) - self.amounts[np.minimum(counts, 3).astype(np.int64)]


@dataclass(frozen=True, slots=True)
class OrderStats:
    """Per-order statistics: n-gram count before/after pruning and counts-of-counts n1..n4 of adjusted counts."""

    count: int = 0
    count_pruned: int = 0
    n: tuple[int, int, int, int] = (0, 0, 0, 0)

    def __add__(self, other: OrderStats) -> OrderStats:
        return OrderStats(
            self.count + other.count,
            self.count_pruned + other.count_pruned,
            tuple(a + b for a, b in zip(self.n, other.n, strict=True)),  # type: ignore[arg-type]
        )


@dataclass(frozen=True, slots=True)
class KneserNeyModel:
    """The estimated model: MODEL[k] tables (see :func:`backoff_step`; empty when they stay in the caller's
    store, see :func:`estimate`) plus what was learnt on the way."""

    order: int
    tables: dict[int, pa.Table]
    discounts: dict[int, Discount]
    stats: dict[int, OrderStats]
    vocab_size: int = 0
    ngrams: dict[int, int] = field(default_factory=dict)  # rows of MODEL[k]


# --------------------------------------------------------------------------------------------------------
# Table helpers
# --------------------------------------------------------------------------------------------------------


def _cols(table: pa.Table, start: int, stop: int) -> list[np.ndarray]:
    return [column_np(table, f"w{i}") for i in range(start, stop)]


#: Value columns of the intermediate tables, after the ``w0..w{k-1}`` uint32 ids (``kn_schema``).
KN_VALUES: dict[str, list[pa.Field]] = {
    "adjusted": [
        pa.field("adjusted", COUNT, False),
        pa.field("raw", COUNT, False),
        pa.field("pruned", pa.bool_(), False),
    ],
    "uninterp": [pa.field("prob", pa.float32(), False), pa.field("gamma", pa.float32(), False)],
    "gamma": [pa.field("gamma", pa.float32(), False)],
    "interp": [pa.field("prob", pa.float32(), False)],
    "model": [pa.field("prob", pa.float32(), False), pa.field("backoff", pa.float32(), False)],
    "model_top": [pa.field("prob", pa.float32(), False)],
}


def kn_schema(order: int, kind: str) -> pa.Schema:
    """Schema of an intermediate table: ADJUSTED ``adjusted``, UNINTERP ``uninterp``, GAMMA ``gamma``,
    INTERP ``interp``, MODEL ``model`` (orders < N) / ``model_top`` (order N).  ``prob``/``gamma`` are float32
    because lmplz computes in float; counts are uint64."""
    ids = [pa.field(f"w{i}", TOKEN_ID, nullable=False) for i in range(order)]
    return pa.schema(ids + KN_VALUES[kind])


def _table(cols: Sequence[np.ndarray], kind: str, *values: np.ndarray) -> pa.Table:
    """Build a ``kn_schema(len(cols), kind)`` table from id columns and the value columns, in schema order."""
    schema = kn_schema(len(cols), kind)
    arrays = [pa.array(np.asarray(c, dtype=np.uint32), TOKEN_ID) for c in cols]
    arrays += [pa.array(v, f.type) for v, f in zip(values, KN_VALUES[kind], strict=True)]
    return pa.Table.from_arrays(arrays, schema=schema)


def _sorted(table: pa.Table, order: int) -> pa.Table:
    """Rows sorted ascending by ``w0..w{order-1}`` (the canonical order of every output table here)."""
    cols = _cols(table, 0, order)
    if table.num_rows < 2 or rows_sorted(cols):  # most steps keep their input's order: no sort needed
        return table
    return table.take(pa.array(sort_rows(cols)))


def _order(table: pa.Table) -> int:
    return sum(1 for name in table.column_names if name.startswith("w") and name[1:].isdigit())


def _segments(cols: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort rows by ``cols``; return (row order, segment starts in sorted order, segment id per sorted row)."""
    order = np.arange(len(cols[0])) if rows_sorted(cols) else sort_rows(cols)
    starts = run_starts([c[order] for c in cols])
    is_start = np.zeros(len(order), dtype=np.int64)
    is_start[starts] = 1
    return order, starts, np.cumsum(is_start) - 1


# --------------------------------------------------------------------------------------------------------
# (a) adjusted counts
# --------------------------------------------------------------------------------------------------------


def adjust_counts_step(
    lower: pa.Table,
    higher: pa.Table | None,
    *,
    prune_threshold: int = 0,
    prune_words: np.ndarray | None = None,
) -> pa.Table:
    """Adjusted (continuation) counts and prune marks of one order k, for one partition.

    Input: ``lower`` = raw counts of order k (``ngram_schema(k)``) whose ``w0..w{k-1}`` hash to this partition;
    ``higher`` = raw counts of order k+1 whose *suffix* ``w1..wk`` hashes to this partition (``None`` when k
    is the highest order).  Any row order.  ``prune_words[id]`` is True for words outside ``limit_vocab``.
    Output ADJUSTED[k]: ``w0..w{k-1}`` uint32, ``adjusted`` uint64, ``raw`` uint64, ``pruned`` bool; the rows
    of ``lower``, sorted by ``w0..``.  adjusted = raw for the highest order and for n-grams starting with
    ``<s>``; otherwise the number of distinct left extensions in ``higher``.
    """
    k = _order(lower)
    cols = _cols(lower, 0, k)
    raw = column_np(lower, "count").astype(np.uint64)
    if higher is None:
        adjusted = raw.copy()
    else:
        adjusted = np.zeros(len(raw), dtype=np.uint64)
        found = np.zeros(len(raw), dtype=bool)
        if higher.num_rows and len(raw):
            hcols = _cols(higher, 1, k + 1)
            first, extensions = group_rows(hcols)  # distinct left extensions per suffix
            idx, found = lookup_rows(cols, [c[first] for c in hcols])
            adjusted[found] = extensions[idx[found]]
        starts_bos = cols[0] == BOS_ID
        adjusted[starts_bos] = raw[starts_bos]
        missing = ~found & ~starts_bos
        if missing.any():
            raise ValueError(
                f"{int(missing.sum())} {k}-grams have no left extension among the {k + 1}-grams of this "
                "partition: the two tables were not partitioned on the same key (order k by w0..w{k-1}, "
                "order k+1 by w1..wk) or come from different corpora"
            )
    pruned = raw <= np.uint64(prune_threshold)
    if prune_words is not None:
        for c in cols:
            pruned |= prune_words[c]
    if k == 1:  # lmplz never prunes <s> and <unk>; we also keep </s> (see module docstring)
        pruned &= cols[0] > EOS_ID
    return _sorted(_table(cols, "adjusted", adjusted, raw, pruned), k)


# --------------------------------------------------------------------------------------------------------
# (b) counts-of-counts and discounts
# --------------------------------------------------------------------------------------------------------


def count_stats_step(adjusted: pa.Table) -> OrderStats:
    """Counts-of-counts of one ADJUSTED[k] partition; :class:`OrderStats` of partitions add up (``sum``)."""
    a = column_np(adjusted, "adjusted")
    pruned = column_np(adjusted, "pruned")
    hist = np.bincount(np.minimum(a, 5).astype(np.int64), minlength=6)
    return OrderStats(len(a), int(np.count_nonzero(~pruned)), tuple(int(x) for x in hist[1:5]))  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class LastEntry:
    """One candidate for lmplz's last n-gram of an order (see :func:`last_entry_correction`)."""

    rank: int  # lmplz's id of the first word; the candidate with the largest rank wins
    words: tuple[int, ...]
    adjusted: int
    raw: int


def best_left_extension_step(
    adjusted: pa.Table, suffix: Sequence[int], word_rank: np.ndarray | None = None
) -> LastEntry | None:
    """Among one ADJUSTED[k] partition's rows ending in ``suffix`` (k-1 words), the one whose first word has
    the largest ``word_rank`` (lmplz id); ``None`` if no row matches.  Any partitioning (it is a filter)."""
    k = len(suffix) + 1
    if adjusted.num_rows == 0:
        return None
    cols = _cols(adjusted, 0, k)
    mask = np.ones(adjusted.num_rows, dtype=bool) if k > 1 else cols[0] != BOS_ID
    for j, w in enumerate(suffix, start=1):
        mask &= cols[j] == w
    rows = np.flatnonzero(mask)
    if len(rows) == 0:
        return None
    ranks = cols[0][rows].astype(np.int64) if word_rank is None else word_rank[cols[0][rows]]
    r = int(rows[np.argmax(ranks)])
    return LastEntry(
        int(ranks.max()),
        tuple(int(c[r]) for c in cols),
        int(column_np(adjusted, "adjusted")[r]),
        int(column_np(adjusted, "raw")[r]),
    )


def last_entry_correction(
    adjusted: Mapping[int, Iterable[pa.Table]] | Callable[[int, tuple[int, ...]], LastEntry | None],
    order: int,
    word_rank: np.ndarray | None = None,
) -> dict[int, OrderStats]:
    """Reproduce an lmplz quirk: the last n-gram of each lower order is counted with its *raw* count in n_j.

    lmplz's AdjustCounts flushes the pending lower-order n-grams after its loop with
    ``stats.Add(order, actual_counts[...])`` -- the raw count -- where everywhere else it adds the adjusted
    count.  The pending n-grams are the suffixes x_1..x_L of F, the last padded N-gram in suffix order
    (compare the last word first) under lmplz's word ids (``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, then first
    appearance: :func:`lm.ngram_counts.first_occurrence_rank`); L = N-1, or the order of the first suffix
    that starts with ``<s>``.  We find F greedily: the largest last word, then its largest left extension, ...

    ``adjusted``: ``{k: partitions of ADJUSTED[k]}`` (each iterated once per order, so lazily loaded
    partitions work), or a callable ``find(k, suffix)`` returning the best :class:`LastEntry` of ADJUSTED[k]
    over all partitions -- map :func:`best_left_extension_step` over partitions as tasks and reduce by max
    ``rank``: N rounds of tiny tasks.  ``word_rank=None`` ranks by our ids.  Returns per-order corrections
    to add to the summed :class:`OrderStats`.  At most one n-gram per order moves between n_1..n_4, but on
    small corpora that changes discounts (log10 p by up to ~0.4 in our tests).
    """
    if callable(adjusted):
        find = adjusted
    else:
        parts_by_order = adjusted

        def find(k: int, suffix: tuple[int, ...]) -> LastEntry | None:
            found = (best_left_extension_step(t, suffix, word_rank) for t in parts_by_order[k])
            return max((c for c in found if c is not None), key=lambda c: c.rank, default=None)

    fix: dict[int, OrderStats] = {}
    if order < 2:
        return fix
    chain: list[LastEntry] = []
    suffix: tuple[int, ...] = ()
    for k in range(1, order + 1):
        best = find(k, suffix)
        if best is None:
            break
        chain.append(best)
        suffix = best.words
        if suffix[0] == BOS_ID:
            break
    pending = len(chain) if chain and chain[-1].words[0] == BOS_ID and len(chain) < order else order - 1
    for k, entry in enumerate(chain[:pending], start=1):
        adj, raw = entry.adjusted, entry.raw
        if adj == raw:
            continue
        n = [0, 0, 0, 0]
        if 1 <= adj <= 4:
            n[adj - 1] -= 1
        if 1 <= raw <= 4:
            n[raw - 1] += 1
        if any(n):
            fix[k] = OrderStats(0, 0, tuple(n))  # type: ignore[arg-type]
    return fix


def compute_discounts(stats: dict[int, OrderStats], fallback: Discount | None = None) -> dict[int, Discount]:
    """D1, D2, D3+ per order from counts-of-counts (Chen & Goodman eq. 26), in lmplz's float32 arithmetic.

    Raises :class:`BadDiscountError` naming the order and its n1..n4 when some n_j (j <= 3) is zero or a
    discount leaves [0, j], unless ``fallback`` is given: then that order uses ``fallback`` (all three values,
    as lmplz does) and a warning is logged.
    """
    out: dict[int, Discount] = {}
    for k in sorted(stats):
        n = (0, *stats[k].n)  # n[j] for j = 1..4
        try:
            for j in (1, 2, 3):
                if n[j] == 0:
                    raise BadDiscountError(
                        f"Could not calculate Kneser-Ney discounts for {k}-grams with adjusted count {j + 1} "
                        f"because no {k}-grams have adjusted count {j} (counts-of-counts n1..n4 = {n[1:]}). "
                        f"Is this small or artificial data? Deduplicate the input, or {_FALLBACK_HINT}"
                    )
            y = F32(n[1]) / F32(float(n[1]) + 2.0 * float(n[2]))
            d = [F32(0)]
            for j in (1, 2, 3):
                d.append(F32(j) - F32(j + 1) * y * F32(n[j + 1]) / F32(n[j]))
                if not 0.0 <= d[j] <= j:
                    raise BadDiscountError(
                        f"{k}-gram discount out of range for adjusted count {j}: {np.format_float_positional(d[j])} (counts-of-counts "
                        f"n1..n4 = {n[1:]}); modified Kneser-Ney thinks something is odd about the data. "
                        f"To override, {_FALLBACK_HINT}"
                    )
            out[k] = Discount(float(d[1]), float(d[2]), float(d[3]))
        except BadDiscountError as err:
            if fallback is None:
                raise
            logger.warning("%s; substituting fallback discounts for order %d: %s", err, k, fallback)
            out[k] = fallback
    return out


# --------------------------------------------------------------------------------------------------------
# (c) initial (uninterpolated) probabilities
# --------------------------------------------------------------------------------------------------------


def _context_sums(adjusted: np.ndarray, pruned: np.ndarray, ctx: Sequence[np.ndarray], discount: Discount):
    """Per-context denominator and gamma (lmplz ``AddRight``), returned per row in the rows' own order."""
    n = len(adjusted)
    order, starts, seg = (
        _segments(ctx) if ctx else (np.arange(n), np.zeros(1, np.int64), np.zeros(n, np.int64))
    )
    a = adjusted[order]
    p = pruned[order]
    kept = ~p & (a > 0)
    denominator = np.add.reduceat(a, starts)
    normalizer = np.add.reduceat(np.where(p, a, np.uint64(0)), starts)
    gamma = np.zeros(len(starts), dtype=F32)
    for j, d in ((1, discount.d1), (2, discount.d2), (3, discount.d3)):
        cj = np.add.reduceat((kept & (np.minimum(a, 3) == j)).astype(np.uint64), starts)
        gamma = gamma + F32(d) * cj.astype(F32)
    gamma = (gamma + normalizer.astype(F32)) / denominator.astype(F32)
    row_seg = np.empty(n, dtype=np.int64)
    row_seg[order] = seg
    return denominator.astype(F32)[row_seg], gamma[row_seg], order, starts


def initial_probabilities_step(adjusted: pa.Table, discount: Discount) -> tuple[pa.Table, pa.Table]:
    """Uninterpolated probabilities u(w|h) and context gammas of one order k >= 2, for one partition.

    Input: ADJUSTED[k] rows whose context ``w0..w{k-2}`` hashes to this partition (all extensions of a
    context together), any row order; ``discount`` of order k (broadcast).
    Output: UNINTERP[k] = ``w0..w{k-1}``, ``prob`` float32 (u), ``gamma`` float32 (gamma of the row's context)
    for the kept (unpruned) rows, sorted by ``w0..``; and GAMMA[k-1] = ``w0..w{k-2}``, ``gamma`` float32,
    one row per context (also contexts whose extensions were all pruned), sorted.
    """
    k = _order(adjusted)
    if k < 2:
        raise ValueError("initial_probabilities_step handles orders >= 2; unigrams go through unigram_step")
    cols = _cols(adjusted, 0, k)
    a = column_np(adjusted, "adjusted").astype(np.uint64)
    pruned = column_np(adjusted, "pruned").astype(bool)
    denominator, gamma, order, starts = _context_sums(a, pruned, cols[:-1], discount)
    u = discount.apply(a) / denominator
    kept = ~pruned
    uninterp = _table([c[kept] for c in cols], "uninterp", u[kept], gamma[kept])
    first = order[starts]
    gammas = _table([c[first] for c in cols[:-1]], "gamma", gamma[first])
    return _sorted(uninterp, k), _sorted(gammas, k - 1)


def unigram_step(
    adjusted: pa.Table, discount: Discount, *, interpolate_unigrams: bool = True, vocab_pad: int = 0
) -> tuple[pa.Table, int]:
    """Unigram probabilities, interpolated with the uniform distribution (lmplz ``MergeRight`` + ``Interpolate``).

    Input: all of ADJUSTED[1] (vocabulary-sized; one task), any order.  ``<unk>`` and ``<s>`` rows are added
    with adjusted count 0 when absent.  Output: INTERP[1] = ``w0``, ``prob`` float32 (interpolated, linear) for
    the kept unigrams and the specials, sorted; and |V| used for the uniform distribution.
    ``<unk>``: u = 0 and it gets gamma/|V| like any zeroton (``interpolate_unigrams``), or u = gamma and no
    unigram is interpolated (SRILM).  ``<s>``: p = 1, since it is only ever context.
    """
    w = column_np(adjusted, "w0").astype(np.uint32)
    a = column_np(adjusted, "adjusted").astype(np.uint64)
    pruned = column_np(adjusted, "pruned").astype(bool)
    for special in (UNK_ID, BOS_ID):
        if not np.any(w == special):
            w, a, pruned = (
                np.append(w, np.uint32(special)),
                np.append(a, np.uint64(0)),
                np.append(pruned, False),
            )
    _, gamma, _, _ = _context_sums(a, pruned, [], discount)
    total_gamma = gamma[0] if len(gamma) else F32(0)
    denominator = F32(a.sum())
    u = discount.apply(a) / denominator
    row_gamma = np.full(len(w), total_gamma if interpolate_unigrams else F32(0), dtype=F32)
    if not interpolate_unigrams:
        u[w == UNK_ID] = u[w == UNK_ID] + total_gamma
    u[w == BOS_ID] = F32(1)
    row_gamma[w == BOS_ID] = F32(0)
    kept = ~pruned
    vocab_size = max(vocab_pad, int(np.count_nonzero(kept)) - 1)  # |V| includes <unk>, excludes <s>
    uniform = F32(1.0 / float(F32(vocab_size)))
    prob = u + row_gamma * uniform
    return _sorted(_table([w[kept]], "interp", prob[kept]), 1), vocab_size


# --------------------------------------------------------------------------------------------------------
# (d) interpolation and (e) backoffs
# --------------------------------------------------------------------------------------------------------


def interpolate_step(uninterp: pa.Table, lower: pa.Table) -> pa.Table:
    """p(w|h) = u(w|h) + gamma(h) p(w|h') for one order k >= 2 and one partition (lmplz ``Interpolate``).

    Input: UNINTERP[k] rows whose suffix ``w1..w{k-1}`` hashes to this partition; INTERP[k-1] rows (``w0..``,
    ``prob`` linear float32) whose ``w0..w{k-2}`` hash to this partition.  Any row order.
    Output: INTERP[k] = ``w0..w{k-1}``, ``prob`` float32 (linear), the rows of ``uninterp``, sorted.
    """
    k = _order(uninterp)
    cols = _cols(uninterp, 0, k)
    idx, found = lookup_rows(cols[1:], _cols(lower, 0, k - 1))
    if not found.all():
        raise ValueError(
            f"{int((~found).sum())} {k}-grams have no suffix among the {k - 1}-grams of this partition "
            "(a kept n-gram whose suffix was pruned, or tables partitioned on different keys)"
        )
    lower_prob = column_np(lower, "prob").astype(F32)[idx] if lower.num_rows else np.zeros(0, F32)
    prob = column_np(uninterp, "prob").astype(F32) + column_np(uninterp, "gamma").astype(F32) * lower_prob
    return _sorted(_table(cols, "interp", prob), k)


def _log10f(x: np.ndarray) -> np.ndarray:
    """log10 of float32 values, correctly rounded to float32 (lmplz calls glibc's ``log10f``).

    numpy's own float32 ``log10`` is less accurate; rounding the float64 result is platform independent and
    within one ulp of glibc's.
    """
    with np.errstate(divide="ignore"):
        return np.log10(np.asarray(x, dtype=F32).astype(np.float64)).astype(F32)


def backoff_step(interp: pa.Table, gammas: pa.Table | None) -> pa.Table:
    """Final ARPA values of one order k for one partition: log10 p and log10 backoff.

    Input: INTERP[k] rows and GAMMA[k] rows (``gamma`` of each k-gram as a context, from order k+1's
    :func:`initial_probabilities_step`; ``None`` for the highest order), both partitioned by ``w0..w{k-1}``.
    Output MODEL[k]: ``w0..w{k-1}`` uint32, ``prob`` float32 = min(0, log10 p), and for k < N ``backoff``
    float32 = log10 gamma, or 0 for n-grams that are no context (e.g. ending in ``</s>``); sorted by ``w0..``.
    """
    k = _order(interp)
    cols = _cols(interp, 0, k)
    prob = np.minimum(F32(0), _log10f(column_np(interp, "prob"))) + F32(0)  # + 0 turns -0 into 0
    if gammas is None:
        return _sorted(_table(cols, "model_top", prob), k)
    gamma = np.ones(len(prob), dtype=F32)  # not a context: backoff log10(1) = 0
    if gammas.num_rows and len(prob):
        idx, found = lookup_rows(cols, _cols(gammas, 0, k))
        gamma[found] = column_np(gammas, "gamma").astype(F32)[idx[found]]
    return _sorted(_table(cols, "model", prob, _log10f(gamma) + F32(0)), k)


# --------------------------------------------------------------------------------------------------------
# The driver: steps (a)-(e) over partitioned storage, mapped serially or as tasks
# --------------------------------------------------------------------------------------------------------


class PartitionStore(Protocol):
    """Named datasets of hash partitions, the exchange between the steps (the shuffle).

    A dataset is written in *pieces*: ``write`` splits a table by the hash of ``keys`` into one piece per
    partition, ``put`` stores a table as one piece of partition ``p``; ``read`` concatenates partition
    ``p``'s pieces in piece-name order (``None``, or ``schema.empty_table()``, when it has none).  A store the
    tasks of a parallel ``map_fn`` write to must be reachable from them (a shared folder,
    ``pipelines.partitions.DirectoryStore``); :class:`MemoryStore` serves the serial map.
    """

    def write(self, name: str, table: pa.Table, keys: Sequence[str], num_partitions: int, piece: str) -> None: ...

    def put(self, name: str, p: int, table: pa.Table) -> None: ...

    def read(self, name: str, p: int, schema: pa.Schema | None = None) -> pa.Table | None: ...

    def drop(self, name: str) -> None: ...

    def release(self, name: str, p: int) -> None:
        """Remove partition ``p`` of ``name``: its one reader is done (see :func:`consuming`)."""

    def record(self, key: str, value: Any) -> None:
        """Keep a finished task's JSON-able result under ``key`` until :meth:`drop_receipts`."""

    def recorded(self, key: str) -> tuple[Any] | None:
        """``(value,)`` recorded under ``key``, or None."""

    def drop_receipts(self) -> None:
        """Forget every receipt: called after a step, when no task of it can be retried any more."""


class MemoryStore:
    """:class:`PartitionStore` in this process's memory, for :func:`serial_map`."""

    def __init__(self) -> None:
        self._pieces: dict[str, dict[int, dict[str, pa.Table]]] = {}
        self._receipts: dict[str, Any] = {}

    def write(self, name: str, table: pa.Table, keys: Sequence[str], num_partitions: int, piece: str) -> None:
        for p, part in enumerate(partition_by(table, list(keys), num_partitions)):
            if part.num_rows:
                self.put(name, p, part, piece)

    def put(self, name: str, p: int, table: pa.Table, piece: str = "0") -> None:
        self._pieces.setdefault(name, {}).setdefault(p, {})[piece] = table

    def read(self, name: str, p: int, schema: pa.Schema | None = None) -> pa.Table | None:
        pieces = self._pieces.get(name, {}).get(p, {})
        if not pieces:
            return schema.empty_table() if schema is not None else None
        return pa.concat_tables([pieces[k] for k in sorted(pieces)]).combine_chunks()

    def drop(self, name: str) -> None:
        self._pieces.pop(name, None)

    def release(self, name: str, p: int) -> None:
        self._pieces.get(name, {}).pop(p, None)

    def record(self, key: str, value: Any) -> None:
        self._receipts[key] = value

    def recorded(self, key: str) -> tuple[Any] | None:
        return (self._receipts[key],) if key in self._receipts else None

    def drop_receipts(self) -> None:
        self._receipts.clear()


#: ``map_fn(fn, calls, desc)``: ``[fn(*args) for args in calls]``, in order, however it runs them.
MapFn = Callable[[Callable[..., Any], Sequence[tuple], str], list[Any]]


def serial_map(fn: Callable[..., Any], calls: Sequence[tuple], desc: str = "") -> list[Any]:
    """The default ``map_fn``: every call in this process, one after another."""
    return [fn(*args) for args in calls]


def partitions_of(store: PartitionStore, name: str, num_partitions: int) -> Iterator[pa.Table]:
    """The non-empty partitions of a dataset, read one at a time (so a task never holds all of them)."""
    for p in range(num_partitions):
        table = store.read(name, p)
        if table is not None and table.num_rows:
            yield table


def prune_words_mask(vocab: Sequence[str], limit_vocab: Collection[str] | None) -> np.ndarray | None:
    """``mask[id]`` True for words to prune (outside ``limit_vocab``; lmplz ``--limit_vocab_file``)."""
    if limit_vocab is None:
        return None
    allowed = set(limit_vocab)
    mask = np.array([word not in allowed for word in vocab], dtype=bool)
    mask[[UNK_ID, BOS_ID, EOS_ID]] = False
    return mask


# Tasks: one step on one partition, reading and writing the store (module-level, so Ray can ship them).


def consuming(store: PartitionStore, key: str, inputs: Iterable[tuple[str, int]], compute: Callable[[], Any]) -> Any:
    """``compute()`` for a task that is its inputs' only reader, which then removes those partitions.

    Why: a step's disk would otherwise hold its inputs and its outputs in full until the driver drops the
    inputs after the step; releasing each partition as its task ends keeps about one copy (issue 16 item 2,
    scratch disk).  Releasing inputs makes a retry unable to recompute, so the result is recorded first (a
    receipt, ``store.record``; the driver calls ``store.drop_receipts()`` after the step) and a retried task
    (Ray reruns a task whose worker died, even after its work was done) returns it.
    ``compute`` writes its outputs atomically before it returns, so a receipt means they are complete; a
    task killed before its receipt still has all its inputs.  ``compute``'s result must be JSON-able."""
    seen = store.recorded(key)
    if seen is None:
        seen = (compute(),)
        store.record(key, seen[0])
    for name, p in inputs:
        store.release(name, p)
    return seen[0]


def _resplit_task(store: PartitionStore, src: str, p: int, dst: str, keys: list[str], parts: int) -> None:
    table = store.read(src, p)
    if table is not None and table.num_rows:
        store.write(dst, table, keys, parts, f"{p:04d}")


def _adjust_task(
    store: PartitionStore, k: int, p: int, top: int, threshold: int, prune_words: np.ndarray | None, parts: int
) -> OrderStats:
    inject("ngram.adjust")

    def compute() -> list[Any]:
        lower = store.read(f"counts{k}", p, ngram_schema(k))
        higher = store.read(f"suffix{k + 1}", p, ngram_schema(k + 1)) if k < top else None
        adjusted = adjust_counts_step(lower, higher, prune_threshold=threshold, prune_words=prune_words)
        if k == 1:  # the unigram step reads all of ADJUSTED[1] at once
            store.put("adj1", p, adjusted)
        else:  # written straight into the partitioning its consumer (probabilities) joins on: by context
            store.write(f"adjctx{k}", adjusted, key_columns(k - 1), parts, f"{p:04d}")
        stats = count_stats_step(adjusted)
        return [int(stats.count), int(stats.count_pruned), [int(x) for x in stats.n]]

    # the counts are the caller's (kept); the suffix split is read here only
    count, pruned, n = consuming(store, f"adjust-{k}-{p}", [(f"suffix{k + 1}", p)] if k < top else [], compute)
    return OrderStats(count, pruned, tuple(n))


@dataclass(frozen=True, slots=True)
class _Partitions:
    """A dataset's non-empty partitions, re-read on every iteration (:func:`last_entry_correction` iterates)."""

    store: PartitionStore
    name: str
    parts: int

    def __iter__(self) -> Iterator[pa.Table]:
        return partitions_of(self.store, self.name, self.parts)


def _last_entry_task(
    store: PartitionStore, top: int, parts: int, word_rank: np.ndarray | None
) -> tuple[dict[int, OrderStats], int]:
    """lmplz's last-entry corrections, and how many of ``<unk>``, ``<s>`` the unigram step will add."""
    adjusted = {k: _Partitions(store, "adj1" if k == 1 else f"adjctx{k}", parts) for k in range(1, top + 1)}
    has_unk = any(np.any(column_np(t, "w0") == UNK_ID) for t in adjusted[1])
    return last_entry_correction(adjusted, top, word_rank), 2 - int(has_unk)


def _unigram_task(store: PartitionStore, parts: int, discount: Discount, interpolate: bool, pad: int) -> int:
    adjusted = pa.concat_tables(list(partitions_of(store, "adj1", parts)))
    unigrams, vocab_size = unigram_step(adjusted, discount, interpolate_unigrams=interpolate, vocab_pad=pad)
    store.write("interp1", unigrams, key_columns(1), parts, "0000")
    return vocab_size


def _initial_task(store: PartitionStore, k: int, p: int, discount: Discount, parts: int) -> None:
    def compute() -> None:
        adjusted = store.read(f"adjctx{k}", p)
        if adjusted is None or adjusted.num_rows == 0:
            return
        uninterp, gammas = initial_probabilities_step(adjusted, discount)
        # Written straight into the partitioning their consumers join on: u by suffix, gamma by its own key.
        store.write(f"uninterp{k}", uninterp, key_columns(k, 1), parts, f"{p:04d}")
        store.write(f"gamma{k - 1}", gammas, key_columns(k - 1), parts, f"{p:04d}")

    consuming(store, f"probabilities-{k}-{p}", [(f"adjctx{k}", p)], compute)


def _interpolate_task(store: PartitionStore, k: int, p: int, parts: int) -> int:
    """INTERP[k] from UNINTERP[k] and INTERP[k-1] of partition ``p``, and MODEL[k-1] of ``p`` while INTERP[k-1]
    is in hand (:func:`backoff_step` joins it with GAMMA[k-1] on the same key, so it needs no step and no
    second read of its own); returns MODEL[k-1]'s rows."""

    def compute() -> int:
        lower = store.read(f"interp{k - 1}", p, kn_schema(k - 1, "interp"))
        uninterp = store.read(f"uninterp{k}", p)
        if uninterp is not None and uninterp.num_rows:
            store.write(f"interp{k}", interpolate_step(uninterp, lower), key_columns(k), parts, f"{p:04d}")
        return _put_model(store, k - 1, p, lower, store.read(f"gamma{k - 1}", p, kn_schema(k - 1, "gamma")))

    inputs = [(f"interp{k - 1}", p), (f"uninterp{k}", p), (f"gamma{k - 1}", p)]
    return consuming(store, f"interpolate-{k}-{p}", inputs, compute)


def _backoff_task(store: PartitionStore, k: int, p: int) -> int:
    """MODEL[k] of partition ``p`` for the highest order (no gammas); the lower orders' come with interpolation."""
    def compute() -> int:
        return _put_model(store, k, p, store.read(f"interp{k}", p), None)

    return consuming(store, f"backoff-{k}-{p}", [(f"interp{k}", p)], compute)


def _put_model(store: PartitionStore, k: int, p: int, interp: pa.Table | None, gammas: pa.Table | None) -> int:
    if interp is None or interp.num_rows == 0:
        return 0
    model = backoff_step(interp, gammas)
    store.put(f"model{k}", p, model)
    return model.num_rows


def _resplit(
    map_fn: MapFn, store: PartitionStore, src: str, dst: str, keys: Mapping[int, list[str]], p: int, desc: str
) -> None:
    """The shuffle between two steps: each partition of dataset ``src{k}`` re-hashed by ``keys[k]`` into ``dst{k}``."""
    map_fn(_resplit_task, [(store, f"{src}{k}", q, f"{dst}{k}", keys[k], p) for k in keys for q in range(p)], desc)


def _check_counts(counts_by_order: Mapping[int, pa.Table], vocab: Sequence[str], order: int) -> None:
    missing = [k for k in range(1, order + 1) if k not in counts_by_order]
    if missing:
        raise ValueError(f"counts for orders {missing} missing; count_ngrams(table, {order}) gives all of them")
    for k in range(1, order + 1):
        t = counts_by_order[k]
        if t.num_rows and max(int(column_np(t.combine_chunks(), f"w{i}").max()) for i in range(k)) >= len(
            vocab
        ):
            raise ValueError(f"{k}-gram counts use ids >= the vocabulary size {len(vocab)}")
    if counts_by_order[1].num_rows == 0:
        raise ValueError("no unigrams to estimate from: the corpus has no sentences")


def _forgetting_receipts(map_fn: MapFn, store: PartitionStore) -> MapFn:
    """``map_fn`` that drops the store's receipts (:func:`consuming`) after each step: once a step has
    returned, none of its tasks can be retried any more."""

    def step(fn: Callable[..., Any], calls: Sequence[tuple], desc: str) -> list[Any]:
        results = map_fn(fn, calls, desc)
        store.drop_receipts()
        return results

    return step


def estimate(
    counts_by_order: Mapping[int, pa.Table] | None,
    vocab: Sequence[str],
    config: KneserNeyConfig,
    *,
    limit_vocab: Collection[str] | None = None,
    word_rank: np.ndarray | None = None,
    num_partitions: int = 1,
    map_fn: MapFn = serial_map,
    store: PartitionStore | None = None,
    counts_by_suffix: bool = False,
) -> KneserNeyModel:
    """Estimate the model from raw counts of orders 1..N by running steps (a)-(e) over ``num_partitions``.

    The one sequencing of the steps.  Each step is ``map_fn`` over (order, partition) tasks that read and
    write ``store``; only a few numbers per task come back (counts-of-counts, row counts), so the caller's
    process never holds a table larger than the vocabulary.  Defaults: :func:`serial_map` and a
    :class:`MemoryStore` filled from ``counts_by_order`` (:func:`lm.ngram_counts.count_ngrams` output, one
    merged table per order); ``tables`` of the result are then MODEL[k], sorted.  With a ``store`` of its
    own, the caller passes ``counts_by_order=None`` and has put the merged counts of order k in dataset
    ``counts{k}``, hash-partitioned by ``w0..w{k-1}`` into ``num_partitions``; MODEL[k] is left in dataset
    ``model{k}`` (one sorted piece per partition) and ``tables`` is empty.  ``counts_by_suffix``: the caller has
    also written dataset ``suffix{k}`` for k >= 2, the same counts partitioned by ``w1..w{k-1}`` with one piece
    per counts partition named ``f"{p:04d}"`` (the ngram stage does it while merging, from the table in hand),
    so the split by suffix is skipped.

    ``vocab``: token strings by id (for ``limit_vocab`` and id validation).  ``word_rank``: lmplz's word
    numbering (:func:`lm.ngram_counts.first_occurrence_rank`), only needed to reproduce one lmplz quirk
    exactly (:func:`last_entry_correction`).
    """
    n_order, p = config.order, num_partitions
    if word_rank is not None and len(word_rank) < len(vocab):
        raise ValueError(f"word_rank has {len(word_rank)} entries for a vocabulary of {len(vocab)}")
    collect = store is None
    if store is None:
        if counts_by_order is None:
            raise ValueError("estimate needs counts_by_order, or a store holding datasets counts1..countsN")
        _check_counts(counts_by_order, vocab, n_order)
        store = MemoryStore()
        for k in range(1, n_order + 1):
            store.write(f"counts{k}", counts_by_order[k], key_columns(k), p, "0")
    elif counts_by_order is not None:
        raise ValueError("with a store of its own, estimate reads the counts from it: pass counts_by_order=None")
    map_fn = _forgetting_receipts(map_fn, store)
    thresholds = config.thresholds()
    orders, higher = range(1, n_order + 1), range(2, n_order + 1)

    logger.info("--- 1/5 Adjusting counts (order %d, %d partitions) ---", n_order, p)
    if not counts_by_suffix:
        _resplit(map_fn, store, "counts", "suffix", {k: key_columns(k, 1) for k in higher}, p, "split by suffix")
    prune_words = prune_words_mask(vocab, limit_vocab)
    calls = [(store, k, q, n_order, thresholds[k - 1], prune_words, p) for k in orders for q in range(p)]
    part_stats = map_fn(_adjust_task, calls, "adjust")
    for k in higher:
        store.drop(f"suffix{k}")

    logger.info("--- 2/5 Counts-of-counts and discounts ---")
    stats = {k: sum(part_stats[(k - 1) * p : k * p], OrderStats()) for k in orders}
    ((corrections, n_specials),) = map_fn(_last_entry_task, [(store, n_order, p, word_rank)], "last entry")
    for k, delta in corrections.items():
        stats[k] = stats[k] + delta
    stats[1] = stats[1] + OrderStats(n_specials, n_specials, (0, 0, 0, 0))  # <unk>, <s> added later
    fallback = config.fallback() if config.discount_fallback is not None else None
    discounts = compute_discounts(stats, fallback)
    for k in orders:
        d, s = discounts[k], stats[k]
        logger.info("%d %d/%d D1=%g D2=%g D3+=%g n1..n4=%s", k, s.count_pruned, s.count, d.d1, d.d2, d.d3, s.n)

    logger.info("--- 3/5 Unigram probabilities ---")
    unigram_call = (store, p, discounts[1], config.interpolate_unigrams, config.vocab_pad)
    (vocab_size,) = map_fn(_unigram_task, [unigram_call], "unigrams")
    store.drop("adj1")  # each dataset is dropped once its last reader has run: the scratch disk holds fewer copies

    logger.info("--- 4/5 Per order: initial probabilities, interpolation, and backoffs of the order below ---")
    ngrams: dict[int, int] = {}
    for k in higher:
        # Order by order, not all orders' probabilities first: UNINTERP[k] and GAMMA[k-1] (float columns, which
        # compress poorly) exist only while order k is interpolated, and the higher orders wait as ADJUSTED
        # counts (integers, which compress well out of core), so the scratch peak holds one order's floats.
        map_fn(_initial_task, [(store, k, q, discounts[k], p) for q in range(p)], f"probabilities {k}")
        store.drop(f"adjctx{k}")
        # order k needs all of INTERP[k-1]; MODEL[k-1] is written on the way
        sizes = map_fn(_interpolate_task, [(store, k, q, p) for q in range(p)], f"interpolate {k}")
        ngrams[k - 1] = sum(sizes)
        for name in (f"uninterp{k}", f"interp{k - 1}", f"gamma{k - 1}"):
            store.drop(name)

    logger.info("--- 5/5 Backoffs of order %d ---", n_order)
    ngrams[n_order] = sum(map_fn(_backoff_task, [(store, n_order, q) for q in range(p)], "backoff"))
    store.drop(f"interp{n_order}")
    for k in orders:
        logger.info("%d-grams: %d", k, ngrams[k])
    tables: dict[int, pa.Table] = {}
    if collect:
        for k in orders:
            parts = [t for q in range(p) if (t := store.read(f"model{k}", q)) is not None]
            tables[k] = _sorted(pa.concat_tables(parts).combine_chunks(), k)
    return KneserNeyModel(
        order=n_order, tables=tables, discounts=discounts, stats=stats, vocab_size=vocab_size, ngrams=ngrams
    )
