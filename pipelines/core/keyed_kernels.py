"""Compiled loops behind :mod:`pipelines.core.keyed`: the row hash, the partition split and the merge join.

Why numba here: each of these is one pass over the rows, but in numpy it takes one temporary array and one
pass per column and per operation (the 64-bit hash alone is ~8 passes per column).  On 3M-row 5-gram tables
the fused loops are several times faster, and the merge join of two sorted tables needs no sort at all.
Imported lazily by ``keyed`` so that importing lmpipe never pays for numba.
"""

from __future__ import annotations

import numba
import numpy as np

_SEED = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


@numba.njit(cache=True, nogil=True)
def hash_rows(rows: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser folded over the columns of ``rows`` (k x n); equals ``keyed.key_hash``."""
    k, n = rows.shape
    out = np.empty(n, dtype=np.uint64)
    for i in range(n):
        h = _SEED
        for c in range(k):
            h ^= np.uint64(rows[c, i])
            h ^= h >> np.uint64(30)
            h *= _M1
            h ^= h >> np.uint64(27)
            h *= _M2
            h ^= h >> np.uint64(31)
        out[i] = h
    return out


@numba.njit(cache=True, nogil=True)
def split_order(rows: np.ndarray, num_partitions: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows grouped by ``hash % num_partitions``, keeping their relative order (a counting sort).

    Returns (permutation, partition bounds of length ``num_partitions + 1``).
    """
    n = rows.shape[1]
    part = hash_rows(rows) % np.uint64(num_partitions)
    bounds = np.zeros(num_partitions + 1, dtype=np.int64)
    for i in range(n):
        bounds[part[i] + 1] += 1
    for p in range(num_partitions):
        bounds[p + 1] += bounds[p]
    fill = bounds[:-1].copy()
    perm = np.empty(n, dtype=np.int64)
    for i in range(n):
        p = part[i]
        perm[fill[p]] = i
        fill[p] += 1
    return perm, bounds


@numba.njit(cache=True, nogil=True)
def gather(src: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``src[order]``: one compiled loop; about twice numpy's fancy indexing or Arrow's ``take`` on the
    partition split's orders (increasing runs per partition), which is where the disk shuffle spends."""
    out = np.empty(order.shape[0], dtype=src.dtype)
    for i in range(order.shape[0]):
        out[i] = src[order[i]]
    return out


@numba.njit(cache=True, nogil=True)
def merge_lookup(left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``left`` (k x n, rows ascending), the index of the equal row of ``right`` (k x m, rows
    strictly ascending) and a found mask: one linear merge."""
    k, n = left.shape
    m = right.shape[1]
    idx = np.zeros(n, dtype=np.int64)
    found = np.zeros(n, dtype=np.bool_)
    j = 0
    for i in range(n):
        while j < m:
            cmp = 0
            for c in range(k):
                if right[c, j] != left[c, i]:
                    cmp = -1 if right[c, j] < left[c, i] else 1
                    break
            if cmp < 0:
                j += 1
                continue
            if cmp == 0:
                idx[i] = j
                found[i] = True
            break
    return idx, found


@numba.njit(cache=True, nogil=True)
def _row_less(keys: np.ndarray, a: int, b: int) -> bool:
    for c in range(keys.shape[0]):
        if keys[c, a] != keys[c, b]:
            return keys[c, a] < keys[c, b]
    return False


@numba.njit(cache=True, nogil=True)
def merge_runs(keys: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """The stable permutation sorting rows of ``keys`` (k x n) that are ascending within each run
    ``bounds[r]:bounds[r + 1]``: pairwise merges of adjacent runs, linear per round."""
    n = keys.shape[1]
    perm = np.arange(n)
    spare = np.empty(n, dtype=np.int64)
    runs = bounds.copy()
    while len(runs) > 2:
        merged = [runs[0]]
        r = 0
        while r + 2 < len(runs):
            lo, mid, hi = runs[r], runs[r + 1], runs[r + 2]
            i, j, out = lo, mid, lo
            while i < mid and j < hi:
                if _row_less(keys, perm[j], perm[i]):  # right strictly smaller: stable on ties
                    spare[out] = perm[j]
                    j += 1
                else:
                    spare[out] = perm[i]
                    i += 1
                out += 1
            while i < mid:
                spare[out] = perm[i]
                i += 1
                out += 1
            while j < hi:
                spare[out] = perm[j]
                j += 1
                out += 1
            merged.append(hi)
            r += 2
        if r + 1 < len(runs):  # an odd run out: copied as it is
            for t in range(runs[r], runs[r + 1]):
                spare[t] = perm[t]
            merged.append(runs[r + 1])
        perm, spare = spare, perm
        runs = np.array(merged, dtype=np.int64)
    return perm
