"""Vectorised n-gram counting, merging and hash partitioning over Arrow tables.

What is counted, and why all orders
-----------------------------------
Each sentence (a TOKENS row, ``ids`` without sentence markers) is read the way lmplz reads a line::

    <s> w1 w2 ... wk </s>

and :func:`count_ngrams` returns the **raw counts of every order 1..N** over that sequence, with one ``<s>``
of context only: ``<s>`` appears only as ``w0`` and the unigram ``<s>`` is not counted.  This is the set of
n-grams KenLM's estimator ends up with (lmplz pads with N-1 ``<s>`` and counts only N-grams, then collapses
the ``<s> <s> ...`` ones into lower orders beginning with a single ``<s>``; the result is the same table).
Raw counts of all orders are what pruning thresholds compare against (lmplz prunes on raw, not adjusted,
counts), what the adjusted-count step needs for n-grams that begin with ``<s>`` (they keep their raw count),
and what other consumers (stupid backoff, reports) want; the estimator derives lmplz's adjusted counts from
them exactly (:mod:`lm.kneser_ney`).  Counting every order costs N passes over the tokens instead of one,
which is cheap next to the shuffle.

Sentence of 2 words, order 3 (``·`` = not counted)::

    position   0    1    2    3
    token     <s>   a    b   </s>
    1-grams    ·    a    b   </s>
    2-grams   <s> a, a b, b </s>
    3-grams   <s> a b, a b </s>

Output contract: ``{order: pa.Table}`` with the :func:`pipelines.core.schemas.ngram_schema` columns
``w0..w{order-1}`` (uint32) and ``count`` (uint64), one row per distinct n-gram, sorted ascending by
``(w0, w1, ...)``.  The same contract holds for :func:`merge_counts`.  ``pipelines.core.keyed.partition_by`` splits
a table by a stable 64-bit hash of some key columns, so partial counts from different workers meet in the same
partition.

>>> import pyarrow as pa
>>> from lmpipe.pipelines.core.schemas import TOKENS
>>> t = pa.table({"ids": pa.array([[3, 4], [3]], pa.list_(pa.uint32()))})
>>> c = count_ngrams(t, 2)
>>> c[1].to_pydict()
{'w0': [2, 3, 4], 'count': [2, 2, 1]}
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from lmpipe.pipelines.core.keyed import column_np, group_rows, key_columns, sort_rows
from lmpipe.pipelines.core.schemas import BOS_ID, COUNT, EOS_ID, FIRST_WORD_ID, TOKEN_ID, UNK_ID, ngram_schema

logger = logging.getLogger(__name__)

#: What to do with ``<unk>``/``<s>``/``</s>`` ids inside a sentence (lmplz refuses them by default).
UNK_POLICIES = ("error", "skip", "word")


# --------------------------------------------------------------------------------------------------------
# Public stage functions
# --------------------------------------------------------------------------------------------------------


def _flat_ids(table: pa.Table, unk: str) -> tuple[np.ndarray, np.ndarray]:
    """Flattened ids and per-sentence lengths, after applying the ``unk`` policy."""
    if unk not in UNK_POLICIES:
        raise ValueError(f"unknown unk policy {unk!r}; options are {list(UNK_POLICIES)}")
    ids = table.column("ids").combine_chunks() if table.num_rows else pa.array([], pa.list_(TOKEN_ID))
    if isinstance(ids, pa.ChunkedArray):  # zero chunks
        ids = pa.array([], pa.list_(TOKEN_ID))
    if ids.null_count:
        raise ValueError(f"'ids' column has {ids.null_count} null sentences; TOKENS rows are never null")
    values = ids.flatten().to_numpy(zero_copy_only=False)
    if values.size and values.dtype != np.uint32:
        if values.min() < 0 or values.max() > np.iinfo(np.uint32).max:
            raise ValueError("token ids must fit uint32")
        values = values.astype(np.uint32)
    lengths = ids.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64)
    special = values < FIRST_WORD_ID
    if unk == "word":
        special &= values != UNK_ID
    if special.any():
        n_unk = int(np.count_nonzero(values == UNK_ID))
        n_mark = int(np.count_nonzero((values == BOS_ID) | (values == EOS_ID)))
        if unk != "skip":
            raise ValueError(
                f"sentences contain {n_unk} <unk> and {n_mark} <s>/</s> ids; lmplz refuses these. Pass "
                "unk='skip' to drop them (lmplz --skip_symbols) or unk='word' to count <unk> as an ordinary "
                "word (closed-vocabulary corpora such as PTB); <s>/</s> never belong inside a sentence"
            )
        sentence = np.repeat(np.arange(len(lengths)), lengths)
        lengths = lengths - np.bincount(sentence[special], minlength=len(lengths))
        values = values[~special]
    return values, lengths


def _padded(values: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``<s> w.. </s>`` per sentence, concatenated, and for each position the (exclusive) end of its sentence.

    ::

        seq      <s> a b </s> <s> c </s>
        end       4  4 4  4    7  7  7
    """
    padded_len = lengths + 2
    starts = (np.cumsum(padded_len) - padded_len).astype(np.int64)
    total = int(padded_len.sum())
    seq = np.empty(total, dtype=np.uint32)
    is_word = np.ones(total, dtype=bool)
    is_word[starts] = False
    is_word[starts + lengths + 1] = False
    seq[starts] = BOS_ID
    seq[starts + lengths + 1] = EOS_ID
    seq[is_word] = values
    end = np.repeat(starts + padded_len, padded_len)
    return seq, end


def count_ngrams(table: pa.Table, order: int, *, unk: str = "error") -> dict[int, pa.Table]:
    """Raw counts of all n-grams of orders 1..``order`` in ``table``'s sentences (see the module docstring).

    Input: any table with an ``ids`` column of ``list<uint32>`` (TOKENS), one sentence per row, without
    ``<s>``/``</s>``.  ``unk``: ``"error"`` (lmplz's default: ``<unk>``, ``<s>``, ``</s>`` ids inside a sentence
    raise), ``"skip"`` (lmplz ``--skip_symbols``: they are dropped as if they were whitespace) or ``"word"``
    (``<unk>`` is counted as an ordinary word -- the closed-vocabulary convention of PTB; ``<s>``/``</s>``
    still raise).
    Output: ``{k: ngram_schema(k) table}`` for k = 1..order, rows unique, sorted ascending by ``w0, w1, ..``.
    """
    ngram_schema(order)  # validates the order range
    values, lengths = _flat_ids(table, unk)
    seq, end = _padded(values, lengths)
    n = len(seq)
    # One sort serves every order: positions sorted by the ``order`` words that follow them are also sorted
    # by any shorter prefix, so the k-grams are the runs of equal first-k words among the positions where a
    # k-gram fits in its sentence.  Words past a sentence's end only break ties among its shorter n-grams.
    tail = np.concatenate([seq, np.zeros(order, dtype=np.uint32)])
    by_position = [tail[j : j + n] for j in range(order)]
    ranked = sort_rows(by_position) if n else np.zeros(0, dtype=np.int64)
    words = [c[ranked] for c in by_position]  # word j of each position, in sorted order
    room = end[ranked] - ranked  # words left in the sentence from each sorted position
    change = np.zeros(n, dtype=bool)
    if n:
        change[0] = True
    out: dict[int, pa.Table] = {}
    for k in range(1, order + 1):
        col = words[k - 1]
        change[1:] |= col[1:] != col[:-1]
        valid = room >= k
        if k == 1:
            valid &= col != BOS_ID  # <s> is context only: never predicted, never counted as a unigram
        where = np.flatnonzero(valid)
        run = np.cumsum(change)[where]
        first = np.flatnonzero(np.concatenate(([True], run[1:] != run[:-1]))) if len(where) else where
        counts = np.diff(np.append(first, len(where))).astype(np.uint64)
        rows = where[first]
        out[k] = _ngram_table(k, [w[rows] for w in words[:k]], counts)
    logger.debug(
        "counted %d sentences, %d tokens: %s",
        len(lengths),
        len(values),
        ", ".join(f"{k}-grams {t.num_rows}" for k, t in out.items()),
    )
    return out


def _ngram_table(order: int, cols: Sequence[np.ndarray], counts: np.ndarray) -> pa.Table:
    arrays = [pa.array(np.asarray(c, dtype=np.uint32), TOKEN_ID) for c in cols]
    arrays.append(pa.array(np.asarray(counts, dtype=np.uint64), COUNT))
    return pa.Table.from_arrays(arrays, schema=ngram_schema(order))


def _order_of(table: pa.Table) -> int:
    names = [n for n in table.column_names if n != "count"]
    if names != key_columns(len(names)) or "count" not in table.column_names:
        raise ValueError(f"expected columns w0..w{{n-1}}, count; got {table.column_names}")
    return len(names)


def merge_counts(tables: Sequence[pa.Table]) -> pa.Table:
    """Sum the counts of identical n-grams across ``tables`` (all of one order): a group-by-sum.

    Input: tables with the ``ngram_schema(order)`` columns, in any row order, possibly repeating n-grams.
    Output: ``ngram_schema(order)``, one row per distinct n-gram, sorted ascending by ``w0, w1, ..``; so
    ``merge_counts(partition_by(c, ...)) == c`` and merging per-block partial counts equals counting the whole.
    """
    if not tables:
        raise ValueError("merge_counts needs at least one table")
    orders = {_order_of(t) for t in tables}
    if len(orders) != 1:
        raise ValueError(f"cannot merge n-gram tables of different orders {sorted(orders)}")
    order = orders.pop()
    table = pa.concat_tables(
        [t.select([*key_columns(order), "count"]).cast(ngram_schema(order)) for t in tables]
    )
    if table.num_rows == 0:
        return table.combine_chunks()
    table = table.combine_chunks()
    cols = [column_np(table, name) for name in key_columns(order)]
    first, sums = group_rows(cols, column_np(table, "count"))
    return _ngram_table(order, [c[first] for c in cols], sums)


def first_occurrence_rank(table: pa.Table, *, unk: str = "error") -> np.ndarray:
    """lmplz's word numbering for ``table`` read in row order: ``rank[id]`` = lmplz's id of word ``id``.

    lmplz numbers ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2 and then words in order of first appearance.  The ids
    only matter for one of lmplz's quirks (see :func:`lm.kneser_ney.last_entry_correction`), so the estimator
    takes this array optionally.  ``table`` must be in corpus order; ids never seen rank after all seen ones.
    """
    values, _ = _flat_ids(table, unk)
    size = max(int(values.max()) + 1 if values.size else 0, FIRST_WORD_ID)
    rank = np.full(size, np.iinfo(np.int64).max, dtype=np.int64)
    rank[:FIRST_WORD_ID] = np.arange(FIRST_WORD_ID)
    words = values[values >= FIRST_WORD_ID]
    uniq, first = np.unique(words, return_index=True)
    by_first = uniq[np.argsort(first, kind="stable")]
    rank[by_first] = np.arange(FIRST_WORD_ID, FIRST_WORD_ID + len(by_first))
    unseen = rank == np.iinfo(np.int64).max
    rank[unseen] = FIRST_WORD_ID + len(by_first) + np.arange(int(unseen.sum()))
    return rank
