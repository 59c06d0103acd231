"""word2vec's skip-gram inner loop compiled with numba: the CPU backend of :mod:`embeddings.sgns`.

Why a compiled loop on CPU.  The batched torch step (``embeddings.sgns_torch.sgns_step``) is the right shape for a
GPU, but on a CPU core each batch pays ~15 operator dispatches and temporaries for ~6 KB of arithmetic,
and Python threads serialise on the GIL between operators, so a second thread gained little (1.1x,
bench/RESULTS.md).  This kernel is word2vec.c's loop -- one pair at a time, SGD applied immediately --
compiled to machine code with the GIL released, and ``threads`` workers run it Hogwild on the shared
matrices (``numba.prange`` over contiguous slices of the block's pairs, in word2vec's order), as word2vec.c's pthreads and
gensim's Cython workers do.  Same semantics as ``sgns_step`` with ``batch_pairs=1``: for each pair the
context word's input row trains against the centre's output row (label 1) and K noise rows (label 0,
a noise word equal to the centre skipped), ``g = (label - sigmoid(u.v)) * lr``, output rows updated at
once, the input row after all 1 + K targets (word2vec's ``neu1e``).

The learning rate falls linearly across the block, from ``lr_start`` at its first pair to ``lr_end`` after
its last, pair index by pair index (each thread's slice gets its part of the ramp).  The loss returned is
the sum over pairs of ``-log sigmoid(u.v_centre) - sum_k log sigmoid(-u.v_k)`` before each pair's update,
estimated from every ``loss_every``-th pair (default :data:`LOSS_EVERY`) times ``loss_every``: the loss only
reports progress, and its ``log1p`` per target cost a third of the kernel's time (1.15 -> 1.7M pairs/s on one
core, V = 50k, d = 100, K = 5); the updates, so the vectors, do not depend on it (``loss_every=1``: exact).
With ``threads=1`` the result is deterministic.
"""

from __future__ import annotations

import math

import numba
import numpy as np

#: The kernels' loss is summed over every LOSS_EVERY-th pair (centre, for CBOW) and scaled: see above.
LOSS_EVERY = 16


@numba.njit(cache=True, nogil=True, fastmath=True, parallel=True)
def train_pairs(
    w_in: np.ndarray,
    w_out: np.ndarray,
    centre: np.ndarray,
    context: np.ndarray,
    noise: np.ndarray,
    lr_start: float,
    lr_end: float,
    slices: int,
    loss_every: int = LOSS_EVERY,
) -> float:
    """SGD over pairs ``(centre[i], context[i])`` with noise rows ``noise[i]`` (float32 matrices, in place)."""
    n = centre.shape[0]
    dim = w_in.shape[1]
    k = noise.shape[1]
    per = (n + slices - 1) // slices
    losses = np.zeros(slices)
    for s in numba.prange(slices):
        grad_in = np.empty(dim, dtype=np.float32)
        loss = 0.0
        for i in range(s * per, min(n, (s + 1) * per)):
            lr = np.float32(lr_start + (lr_end - lr_start) * (i / n))
            u = context[i]
            c = centre[i]
            sampled = i % loss_every == 0
            grad_in[:] = 0.0
            for j in range(k + 1):
                if j == 0:
                    t = c
                    label = np.float32(1.0)
                else:
                    t = noise[i, j - 1]
                    if t == c:
                        continue
                    label = np.float32(0.0)
                f = np.float32(0.0)
                for x in range(dim):
                    f += w_in[u, x] * w_out[t, x]
                # one exp for both the loss term softplus(-margin) and sigmoid(f), without overflow
                e = math.exp(-abs(f))
                if sampled:
                    margin = f if j == 0 else -f
                    loss += math.log1p(e) + max(-margin, 0.0)
                sig = 1.0 / (1.0 + e) if f >= 0 else e / (1.0 + e)
                g = (label - np.float32(sig)) * lr
                for x in range(dim):
                    grad_in[x] += g * w_out[t, x]
                    w_out[t, x] += g * w_in[u, x]
            for x in range(dim):
                w_in[u, x] += grad_in[x]
        losses[s] = loss
    return losses.sum() * loss_every


#: Hogwild slices of a block per kernel thread, taken one at a time (a dynamic schedule): the thread that
#: draws the next block (``SGNS._train_prefetched``) shares the cores with the kernel, and with one static
#: slice per thread the slice it delays holds up the whole block (2 threads: 5.5 s vs 5.1 s for 2 epochs of
#: 3.6M words, bench/RESULTS.md 2026-12-07).
SLICES_PER_THREAD = 8


def set_threads(threads: int) -> int:
    """Threads the kernel runs on (at most numba's pool size, the machine's CPUs); returns the number set."""
    n = max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    return n


@numba.njit(cache=True, nogil=True)
def window_pairs(ids: np.ndarray, seg: np.ndarray, eff: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (centre, context) pairs of kept tokens ``ids`` (sentence index ``seg``, effective window ``eff``),
    in word2vec.c's order: centre by centre, each centre's contexts from the leftmost to the rightmost.

    Consecutive pairs share the centre's output row and neighbouring input rows, which stay in the L1/L2
    cache; a shuffled pair order touches two random rows per pair instead (bench/RESULTS.md, the SGNS
    profile).  Same pairs as :func:`embeddings.sampling.skipgram_pairs` given the same draws, as int32 (half
    the block's largest arrays; a row index of 2**31 would need a matrix larger than any memory)."""
    n = ids.shape[0]
    total = 0
    for i in range(n):
        lo, hi = max(0, i - eff[i]), min(n - 1, i + eff[i])
        for j in range(lo, hi + 1):
            if j != i and seg[j] == seg[i]:
                total += 1
    centre = np.empty(total, dtype=np.int32)
    context = np.empty(total, dtype=np.int32)
    p = 0
    for i in range(n):
        lo, hi = max(0, i - eff[i]), min(n - 1, i + eff[i])
        for j in range(lo, hi + 1):
            if j != i and seg[j] == seg[i]:
                centre[p] = ids[i]
                context[p] = ids[j]
                p += 1
    return centre, context


# ------------------------------------------------------------------ hierarchical softmax and CBOW
@numba.njit(cache=True, nogil=True, fastmath=True, inline="always")
def _train_target(
    w_in_row: np.ndarray, w_out: np.ndarray, t: int, label: np.float32, lr: np.float32, grad: np.ndarray, sampled: bool
) -> float:
    """One binary decision of word2vec: ``g = (label - sigmoid(h . w_out[t])) * lr``; ``grad += g w_out[t]``,
    ``w_out[t] += g h``.  Returns its loss ``-log sigmoid(+-f)`` (softplus of the margin, no overflow) when
    ``sampled``, else 0 (see :data:`LOSS_EVERY`)."""
    dim = w_out.shape[1]
    f = np.float32(0.0)
    for x in range(dim):
        f += w_in_row[x] * w_out[t, x]
    e = math.exp(-abs(f))
    margin = f if label > 0 else -f
    sig = 1.0 / (1.0 + e) if f >= 0 else e / (1.0 + e)
    g = (label - np.float32(sig)) * lr
    for x in range(dim):
        grad[x] += g * w_out[t, x]
        w_out[t, x] += g * w_in_row[x]
    return math.log1p(e) + max(-margin, 0.0) if sampled else 0.0


@numba.njit(cache=True, nogil=True, fastmath=True, parallel=True)
def train_pairs_hs(
    w_in: np.ndarray,
    w_out: np.ndarray,
    centre: np.ndarray,
    context: np.ndarray,
    codes: np.ndarray,
    points: np.ndarray,
    lengths: np.ndarray,
    lr_start: float,
    lr_end: float,
    slices: int,
    loss_every: int = LOSS_EVERY,
) -> float:
    """Skip-gram with hierarchical softmax (word2vec.c ``-cbow 0 -hs 1 -negative 0``): the context word's input
    row trains against the inner nodes on the centre's Huffman path (``embeddings.huffman``), node j towards
    ``1 - codes[centre, j]``; the input row is updated after the whole path.  Same slices and learning-rate
    ramp as :func:`train_pairs`; returns the summed loss before each pair's update."""
    n = centre.shape[0]
    dim = w_in.shape[1]
    per = (n + slices - 1) // slices
    losses = np.zeros(slices)
    for s in numba.prange(slices):
        grad_in = np.empty(dim, dtype=np.float32)
        loss = 0.0
        for i in range(s * per, min(n, (s + 1) * per)):
            lr = np.float32(lr_start + (lr_end - lr_start) * (i / n))
            u, c = context[i], centre[i]
            grad_in[:] = 0.0
            sampled = i % loss_every == 0
            for j in range(lengths[c]):
                label = np.float32(1.0) - np.float32(codes[c, j])
                loss += _train_target(w_in[u], w_out, points[c, j], label, lr, grad_in, sampled)
            for x in range(dim):
                w_in[u, x] += grad_in[x]
        losses[s] = loss
    return losses.sum() * loss_every


_LCG_A = np.uint64(25214903917)  # word2vec.c's next_random = next_random * 25214903917 + 11
_LCG_C = np.uint64(11)


@numba.njit(cache=True, nogil=True, fastmath=True, parallel=True)
def train_cbow(
    w_in: np.ndarray,
    w_out: np.ndarray,
    ids: np.ndarray,
    seg: np.ndarray,
    eff: np.ndarray,
    codes: np.ndarray,
    points: np.ndarray,
    lengths: np.ndarray,
    accept: np.ndarray,
    alias: np.ndarray,
    negative: int,
    seed: int,
    lr_start: float,
    lr_end: float,
    slices: int,
    loss_every: int = LOSS_EVERY,
) -> tuple[float, int]:
    """CBOW (word2vec.c ``-cbow 1``, gensim ``cbow_mean=1``) over the kept tokens ``ids`` (sentence ``seg``,
    effective window ``eff``, as :func:`embeddings.sampling.windowed_tokens` draws them).

    For each centre i: ``h`` = the mean of the input rows of its context (the tokens of its sentence within
    ``eff[i]``, the centre excluded); ``h`` trains against the centre's targets, either ``negative`` > 0:
    the centre (label 1) and ``negative`` noise words (label 0, one equal to the centre skipped), or
    ``negative`` == 0: the inner nodes of the centre's Huffman path (``codes``, ``points``, ``lengths``).
    Then the error ``neu1e`` (the sum over targets of ``g w_out[t]``) is added, undivided, to every context
    row, as word2vec.c and gensim do: the step on each context row is ``cw`` times the gradient of the loss
    with respect to that row (``cw`` = context words), i.e. ``-lr`` times the gradient with respect to ``h``.

    Noise words are drawn here, not materialised: word2vec.c's LCG (one stream per slice, seeded
    ``seed + slice``) picks a slot and a coin of the alias table (``accept``, ``alias``: the unigram^0.75
    distribution of ``embeddings.sampling.NoiseSampler``).  Returns (summed loss before each update,
    centres trained); centres without a context word are skipped, as in word2vec.c.
    """
    n = ids.shape[0]
    dim = w_in.shape[1]
    vocab = np.uint64(accept.shape[0])
    per = (n + slices - 1) // slices
    losses = np.zeros(slices)
    trained = np.zeros(slices, dtype=np.int64)
    for s in numba.prange(slices):
        h = np.empty(dim, dtype=np.float32)
        grad = np.empty(dim, dtype=np.float32)
        rnd = np.uint64(seed) + np.uint64(s)
        loss = 0.0
        count = 0
        for i in range(s * per, min(n, (s + 1) * per)):
            lo, hi = max(0, i - eff[i]), min(n - 1, i + eff[i])
            h[:] = 0.0
            cw = 0
            for j in range(lo, hi + 1):
                if j != i and seg[j] == seg[i]:
                    for x in range(dim):
                        h[x] += w_in[ids[j], x]
                    cw += 1
            if cw == 0:
                continue
            lr = np.float32(lr_start + (lr_end - lr_start) * (i / n))
            inv = np.float32(1.0 / cw)
            for x in range(dim):
                h[x] *= inv
            grad[:] = 0.0
            c = ids[i]
            sampled = i % loss_every == 0
            if negative == 0:
                for j in range(lengths[c]):
                    label = np.float32(1.0) - np.float32(codes[c, j])
                    loss += _train_target(h, w_out, points[c, j], label, lr, grad, sampled)
            else:
                loss += _train_target(h, w_out, c, np.float32(1.0), lr, grad, sampled)
                for _ in range(negative):
                    rnd = rnd * _LCG_A + _LCG_C
                    slot = (rnd >> np.uint64(16)) % vocab
                    rnd = rnd * _LCG_A + _LCG_C
                    coin = np.float32((rnd >> np.uint64(40)) & np.uint64(0xFFFFFF)) * np.float32(
                        1.0 / 16777216.0
                    )
                    t = np.int64(slot) if coin < accept[slot] else alias[slot]
                    if t == c:
                        continue
                    loss += _train_target(h, w_out, t, np.float32(0.0), lr, grad, sampled)
            for j in range(lo, hi + 1):
                if j != i and seg[j] == seg[i]:
                    for x in range(dim):
                        w_in[ids[j], x] += grad[x]
            count += 1
        losses[s] = loss
        trained[s] = count
    return losses.sum() * loss_every, trained.sum()
