"""word2vec's three sampling procedures, vectorised: subsampling, dynamic-window pairs, noise words.

Pure numpy/torch functions with an explicit random generator, so each is tested against its formula or
a brute-force enumeration; :mod:`embeddings.sgns` composes them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def keep_probabilities(counts: np.ndarray, sample: float, total: int | None = None) -> np.ndarray:
    """word2vec.c's subsampling keep probability per id (1 for unseen ids and when ``sample`` is 0)."""
    f = np.asarray(counts, dtype=np.float64)
    if sample <= 0:
        return np.ones_like(f)
    threshold = sample * (f.sum() if total is None else total)
    with np.errstate(divide="ignore"):
        p = (np.sqrt(f / threshold) + 1.0) * threshold / f
    return np.where(f > 0, np.minimum(p, 1.0), 1.0)


class NoiseSampler:
    """Draws noise ids from counts**exponent with Walker's alias method (Vose's construction).

    word2vec.c fills a 1e8-entry table and gensim bisects a cumulative table; an alias table is exact and
    costs one uniform id, one uniform float and two gathers per draw (~8x faster than torch.searchsorted
    on a cumulative table here), with 12 bytes per vocabulary entry.
    """

    def __init__(
        self, counts: np.ndarray, exponent: float = 0.75, device: str | torch.device = "cpu"
    ) -> None:
        weights = np.asarray(counts, dtype=np.float64) ** exponent
        weights[np.asarray(counts) == 0] = 0.0
        if weights.sum() <= 0:
            raise ValueError("no id has a positive count: cannot draw noise words")
        self.probs = weights / weights.sum()
        n = len(weights)
        scaled = self.probs * n
        accept = np.ones(n)
        alias = np.arange(n)
        small = [i for i in range(n) if scaled[i] < 1.0]
        large = [i for i in range(n) if scaled[i] >= 1.0]
        while small and large:
            s, g = small.pop(), large.pop()
            accept[s], alias[s] = scaled[s], g
            scaled[g] -= 1.0 - scaled[s]
            (small if scaled[g] < 1.0 else large).append(g)
        self.accept = torch.as_tensor(accept, dtype=torch.float32, device=device)
        self.alias = torch.as_tensor(alias, dtype=torch.int64, device=device)

    def draw(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        device = self.alias.device
        slot = torch.randint(len(self.alias), shape, generator=generator, device=device)
        coin = torch.rand(shape, generator=generator, device=device)
        return torch.where(coin < self.accept[slot], slot, self.alias[slot])


def windowed_tokens(
    sentences: Sequence[np.ndarray], window: int, keep_prob: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """word2vec's two draws over a block of sentences: ``(ids, seg, eff)`` of the tokens kept by subsampling,
    their sentence index and their effective window in 1..window (int64 arrays).

    Randomness, in this order: one uniform per token for subsampling (kept if ``u < keep_prob[id]``), then
    one ``b`` in 0..window-1 per kept token (``eff = window - b``).
    """
    lengths = np.fromiter((len(s) for s in sentences), dtype=np.int64, count=len(sentences))
    ids = np.concatenate(sentences).astype(np.int64) if len(sentences) else np.zeros(0, np.int64)
    seg = np.repeat(np.arange(len(sentences)), lengths)
    kept = rng.random(len(ids)) < keep_prob[ids]
    ids, seg = ids[kept], seg[kept]
    eff = window - rng.integers(0, window, size=len(ids))
    return ids, seg, eff


def skipgram_pairs(
    sentences: Sequence[np.ndarray], window: int, keep_prob: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """All (centre, context) id pairs of a block of sentences, word2vec's sampling, as two int64 arrays.

    The draws are :func:`windowed_tokens`'.  Pairs come grouped by offset (forward, then backward); the
    numba backend enumerates the same pairs centre by centre instead (``sgns_kernel.window_pairs``).
    """
    ids, seg, eff = windowed_tokens(sentences, window, keep_prob, rng)
    centres, contexts = [], []
    for o in range(1, min(window, len(ids) - 1) + 1):
        same = seg[o:] == seg[:-o]
        fwd = same & (eff[:-o] >= o)  # centre i, context i + o
        bwd = same & (eff[o:] >= o)  # centre i + o, context i
        centres += [ids[:-o][fwd], ids[o:][bwd]]
        contexts += [ids[o:][fwd], ids[:-o][bwd]]
    if not centres:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(centres), np.concatenate(contexts)
