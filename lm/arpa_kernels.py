"""The compiled loop behind :mod:`lm.arpa`'s writer: ARPA lines assembled byte by byte from string pieces.

Why numba here: an ARPA line is ``prob \\t w0 w1 .. [\\t backoff] \\n``.  With Arrow compute that is one
``take`` of the vocabulary per word column and three element-wise joins, each materialising a new string
array of every line (a 5-gram model of 3.7M English words: ~10M lines, 4 s of the stage's ARPA time, most of
it in those joins).  One loop that copies the bytes of each piece straight into the output buffer does it in
two passes (sizes, then bytes) with no intermediate strings.

The float columns are still printed by Arrow's cast (shortest round-trip digits, the format lmplz's files and
every earlier lmpipe ARPA share), but a column of few distinct values only once per value:
:func:`distinct_floats` codes it by its distinct bit patterns (a hash table that grows with them and stays in
cache), the cast prints the distinct values, and the line loop picks each row's string by its code.
Backoffs take few values (a 5-gram model of 3.7M English words: 8k distinct among 6.8M), probabilities about
half as many as rows, where the hash table's cache misses would cost as much as the cast (~100 ns a value)
saves: the coding gives up after the first 4096 values when more than a quarter of them are distinct.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def distinct_floats(values: np.ndarray, give_up: bool = True) -> tuple[np.ndarray, np.ndarray, bool]:
    """(code of every value, the distinct values in order of first appearance, True) of a float32 array, by
    bit pattern with -0 taken as +0 (what ``x + 0.0`` gives; lmplz prints 0): ``distinct[codes] == values + 0``.
    With ``give_up``, returns (empty, empty, False) as soon as more than a quarter of the first >= 4096 values
    are distinct (coding would not pay).

    Open addressing on the bit pattern; the table doubles at half load, so it stays as small as the number
    of distinct values allows."""
    n = values.shape[0]
    bits = values.view(np.uint32)
    codes = np.empty(n, dtype=np.int32)
    keys = np.empty(n, dtype=np.uint32)
    size = 1024
    slots = np.full(size, -1, dtype=np.int32)
    m = 0
    for i in range(n):
        b = bits[i]
        if b == np.uint32(0x80000000):
            b = np.uint32(0)
        h = (np.uint64(b) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)  # top bits: well mixed
        s = np.int64(h) & (size - 1)
        while True:
            code = slots[s]
            if code < 0:
                slots[s] = m
                keys[m] = b
                codes[i] = m
                m += 1
                break
            if keys[code] == b:
                codes[i] = code
                break
            s = (s + 1) & (size - 1)
        if give_up and i + 1 >= 4096 and 4 * m > i + 1:
            return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32), False
        if 2 * m > size:  # rehash into a table twice the size
            size *= 2
            slots = np.full(size, -1, dtype=np.int32)
            for c in range(m):
                t = np.int64((np.uint64(keys[c]) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)) & (size - 1)
                while slots[t] >= 0:
                    t = (t + 1) & (size - 1)
                slots[t] = c
    return codes, keys[:m].copy().view(np.float32), True


#: Bytes of a word kept in its fixed-width slot (:func:`vocab_slots`); longer words are copied from the pool.
SLOT = 16


@numba.njit(cache=True, nogil=True)
def vocab_slots(offsets: np.ndarray, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(slots, lengths): the first ``SLOT`` bytes of every word in a row of its own, zero-padded, and its
    length.  The line loop copies a whole slot per word (one cache line, a fixed-count loop the compiler
    unrolls) instead of reading two offsets and a byte range: ~25% faster on real 3- to 5-gram tables."""
    n = offsets.shape[0] - 1
    slots = np.zeros((n, SLOT), dtype=np.uint8)
    lengths = np.empty(n, dtype=np.int64)
    for w in range(n):
        size = offsets[w + 1] - offsets[w]
        lengths[w] = size
        for b in range(min(size, SLOT)):
            slots[w, b] = pool[offsets[w] + b]
    return slots, lengths


@numba.njit(cache=True, nogil=True)
def join_lines(
    ids: np.ndarray,
    vocab_offsets: np.ndarray,
    vocab_bytes: np.ndarray,
    prob_codes: np.ndarray,
    prob_offsets: np.ndarray,
    prob_bytes: np.ndarray,
    backoff_codes: np.ndarray,
    backoff_offsets: np.ndarray,
    backoff_bytes: np.ndarray,
    with_backoff: bool,
) -> np.ndarray:
    """The bytes of ``prob[i] \\t vocab[ids[0, i]] .. vocab[ids[k-1, i]] [\\t backoff[i]] \\n`` for every row i.

    ``ids`` is (k, n); each string array is given as (offsets, bytes) with ``len(offsets) == strings + 1``;
    row i's prob is string ``prob_codes[i]`` (:func:`distinct_floats`), its backoff ``backoff_codes[i]``."""
    k, n = ids.shape
    slots, lengths = vocab_slots(vocab_offsets, vocab_bytes)
    size = 0
    for i in range(n):
        p = prob_codes[i]
        size += prob_offsets[p + 1] - prob_offsets[p] + k + 1  # k - 1 spaces, a tab and the newline
        for c in range(k):
            size += lengths[ids[c, i]]
        if with_backoff:
            q = backoff_codes[i]
            size += backoff_offsets[q + 1] - backoff_offsets[q] + 1
    out = np.empty(size + SLOT, dtype=np.uint8)  # a whole slot may be copied past the last word
    at = 0
    for i in range(n):
        p = prob_codes[i]
        for b in range(prob_offsets[p], prob_offsets[p + 1]):
            out[at] = prob_bytes[b]
            at += 1
        out[at] = 9  # \t
        at += 1
        for c in range(k):
            if c:
                out[at] = 32  # space
                at += 1
            w = ids[c, i]
            size_w = lengths[w]
            if size_w <= SLOT:
                for b in range(SLOT):  # the padding is overwritten by what follows
                    out[at + b] = slots[w, b]
            else:
                for b in range(size_w):
                    out[at + b] = vocab_bytes[vocab_offsets[w] + b]
            at += size_w
        if with_backoff:
            out[at] = 9
            at += 1
            q = backoff_codes[i]
            for b in range(backoff_offsets[q], backoff_offsets[q + 1]):
                out[at] = backoff_bytes[b]
                at += 1
        out[at] = 10  # \n
        at += 1
    return out[:size]
