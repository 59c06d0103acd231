"""Keyed tables: vectorised grouping, joining and hash partitioning of rows of integer key columns.

The few numpy primitives the n-gram estimator, the co-occurrence counter and the file shuffle share: a key
is a tuple of unsigned integer columns (token ids, usually ``w0..w{n-1}``).  :func:`pack_keys` codes rows
as one order-preserving uint64, on which :func:`group_rows` (group-by with exact uint64 sums) and
:func:`lookup_rows` (a sort-merge join) work; :func:`key_hash` is a stable 64-bit hash whose
:func:`partition_by` sends equal keys from any worker to the same partition.

>>> import numpy as np
>>> group_rows([np.array([2, 1, 2], np.uint32)])[1].tolist()   # group sizes, keys ascending
[1, 2]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

_SEED = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def key_columns(order: int, start: int = 0) -> list[str]:
    """Names of the word columns ``w{start}..w{order-1}`` (``key_columns(3, 1) == ['w1', 'w2']``)."""
    return [f"w{i}" for i in range(start, order)]


def column_np(table: pa.Table, name: str) -> np.ndarray:
    """A column as a numpy array (zero-copy when it is one chunk without nulls)."""
    col = table.column(name)
    return col.chunk(0).to_numpy(zero_copy_only=False) if col.num_chunks == 1 else col.to_numpy()


def pack_keys(cols: Sequence[np.ndarray]) -> np.ndarray:
    """Injective, order-preserving uint64 code of the rows of ``cols`` (lexicographic order of the tuples).

    Columns are shifted into one uint64 while their bit widths fit; when the next column would overflow 64
    bits, the code so far is replaced by its dense rank (``np.unique(..., return_inverse=True)``), which keeps
    the order and needs only ``log2(#distinct)`` bits.  PTB 5-grams: 14-bit ids, so ``w0..w3`` pack directly
    and one dense-rank pass makes room for ``w4``.
    """
    if not cols:
        raise ValueError("pack_keys needs at least one column")
    n = len(cols[0])
    code = np.zeros(n, dtype=np.uint64)
    used = 0
    for col in cols:
        col = np.asarray(col)
        width = max(1, int(col.max()).bit_length()) if n else 1
        if used + width > 64:
            _, inverse = np.unique(code, return_inverse=True)
            code = inverse.astype(np.uint64).reshape(-1)
            used = max(1, int(code.max()).bit_length()) if n else 1
            if used + width > 64:  # cannot happen with <= 2^32 rows and 32-bit ids
                raise OverflowError(f"cannot pack {len(cols)} key columns of {n} rows into 64 bits")
        code = (code << np.uint64(width)) | col.astype(np.uint64)
        used += width
    return code


def group_rows(
    cols: Sequence[np.ndarray], weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Group identical rows of ``cols``; return (index of one row per group, group sizes or weight sums).

    Groups come out in ascending lexicographic order of the key tuple.  Sums stay uint64 (``np.bincount``
    would go through float64 and lose counts above 2^53).
    """
    n = len(cols[0]) if cols else 0
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint64)
    code = pack_keys(cols)
    # Any row of a group represents it (the keys are equal), so the faster unstable sort will do.
    order = np.argsort(code)
    sorted_code = code[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_code[1:] != sorted_code[:-1])))
    if weights is None:
        sums = np.diff(np.append(starts, n)).astype(np.uint64)
    else:
        sums = np.add.reduceat(np.asarray(weights, dtype=np.uint64)[order], starts)
    return order[starts], sums


def lookup_rows(left: Sequence[np.ndarray], right: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``left``, the index of the equal row in ``right`` (whose rows are unique) and a found mask.

    A sort-merge join in numpy: both sides are packed with one shared code so equal tuples get equal codes.
    """
    n_left = len(left[0])
    n_right = len(right[0])
    if n_right == 0 or n_left == 0:
        return np.zeros(n_left, dtype=np.int64), np.zeros(n_left, dtype=bool)
    code = pack_keys(
        [np.concatenate([np.asarray(a), np.asarray(b)]) for a, b in zip(left, right, strict=True)]
    )
    code_left, code_right = code[:n_left], code[n_left:]
    order = np.argsort(code_right, kind="stable")
    sorted_right = code_right[order]
    pos = np.minimum(np.searchsorted(sorted_right, code_left), n_right - 1)
    found = sorted_right[pos] == code_left
    return order[pos], found


def key_hash(cols: Sequence[np.ndarray]) -> np.ndarray:
    """Stable 64-bit hash of id tuples: splitmix64's finaliser folded over the columns.

    Stable = the same on every machine, process and run (unlike Python's ``hash``), which is what lets partial
    aggregates from different workers be combined partition by partition.  Only the values matter, not the
    column names: ``(w1, w2)`` of a trigram table and ``(w0, w1)`` of a bigram table hash alike.
    """
    n = len(cols[0]) if cols else 0
    h = np.full(n, _SEED, dtype=np.uint64)
    for col in cols:
        h ^= np.asarray(col).astype(np.uint64)
        h ^= h >> np.uint64(30)
        h *= _M1
        h ^= h >> np.uint64(27)
        h *= _M2
        h ^= h >> np.uint64(31)
    return h


def partition_of(table: pa.Table, key_cols: Sequence[str], num_partitions: int) -> np.ndarray:
    """The partition index (``key_hash % num_partitions``) of every row."""
    if num_partitions < 1:
        raise ValueError(f"num_partitions must be >= 1, got {num_partitions}")
    if not key_cols:
        return np.zeros(table.num_rows, dtype=np.int64)
    cols = [column_np(table, c) for c in key_cols]
    return (key_hash(cols) % np.uint64(num_partitions)).astype(np.int64)


def partition_by(table: pa.Table, key_columns: Sequence[str], num_partitions: int) -> list[pa.Table]:
    """Split ``table`` into ``num_partitions`` tables by a stable 64-bit hash of ``key_columns``' values.

    Rows with equal key values land in the same partition whatever table they come from, so tables of
    different orders partitioned on matching keys (e.g. trigram suffix ``w1, w2`` and bigram ``w0, w1``) can be
    joined partition by partition.  Rows keep their relative order (a sorted input gives sorted partitions);
    the partition index is ``key_hash(values) % num_partitions``.
    """
    table = table.combine_chunks()
    part = partition_of(table, key_columns, num_partitions)
    # Stable, to keep sorted inputs sorted; on uint16 numpy's stable sort is a linear-time radix sort.
    order = np.argsort(part.astype(np.uint16) if num_partitions <= 1 << 16 else part, kind="stable")
    bounds = np.concatenate(([0], np.cumsum(np.bincount(part, minlength=num_partitions))))
    taken = table.take(pa.array(order))
    return [taken.slice(int(bounds[p]), int(bounds[p + 1] - bounds[p])) for p in range(num_partitions)]
