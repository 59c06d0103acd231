"""The compiled loop behind :mod:`lm.arpa`'s writer: ARPA lines assembled byte by byte from string pieces.

Why numba here: an ARPA line is ``prob \\t w0 w1 .. [\\t backoff] \\n``.  With Arrow compute that is one
``take`` of the vocabulary per word column and three element-wise joins, each materialising a new string
array of every line (a 5-gram model of 3.7M English words: ~10M lines, 4 s of the stage's ARPA time, most of
it in those joins).  One loop that copies the bytes of each piece straight into the output buffer does it in
two passes (sizes, then bytes) with no intermediate strings.  The float columns are still printed by Arrow's
cast (shortest round-trip digits, the format lmplz's files and every earlier lmpipe ARPA share).
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def join_lines(
    ids: np.ndarray,
    vocab_offsets: np.ndarray,
    vocab_bytes: np.ndarray,
    prob_offsets: np.ndarray,
    prob_bytes: np.ndarray,
    backoff_offsets: np.ndarray,
    backoff_bytes: np.ndarray,
    with_backoff: bool,
) -> np.ndarray:
    """The bytes of ``prob[i] \\t vocab[ids[0, i]] .. vocab[ids[k-1, i]] [\\t backoff[i]] \\n`` for every row i.

    ``ids`` is (k, n); each string array is given as (offsets, bytes) with ``len(offsets) == rows + 1``."""
    k, n = ids.shape
    size = 0
    for i in range(n):
        size += prob_offsets[i + 1] - prob_offsets[i] + k + 1  # k - 1 spaces, a tab and the newline
        for c in range(k):
            w = ids[c, i]
            size += vocab_offsets[w + 1] - vocab_offsets[w]
        if with_backoff:
            size += backoff_offsets[i + 1] - backoff_offsets[i] + 1
    out = np.empty(size, dtype=np.uint8)
    at = 0
    for i in range(n):
        for b in range(prob_offsets[i], prob_offsets[i + 1]):
            out[at] = prob_bytes[b]
            at += 1
        out[at] = 9  # \t
        at += 1
        for c in range(k):
            if c:
                out[at] = 32  # space
                at += 1
            w = ids[c, i]
            for b in range(vocab_offsets[w], vocab_offsets[w + 1]):
                out[at] = vocab_bytes[b]
                at += 1
        if with_backoff:
            out[at] = 9
            at += 1
            for b in range(backoff_offsets[i], backoff_offsets[i + 1]):
                out[at] = backoff_bytes[b]
                at += 1
        out[at] = 10  # \n
        at += 1
    return out
