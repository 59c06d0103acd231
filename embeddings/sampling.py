"""word2vec's three sampling procedures, vectorised: subsampling, dynamic-window pairs, noise words.

Pure numpy functions with an explicit random generator, so each is tested against its formula or a
brute-force enumeration; :mod:`embeddings.sgns` composes them.  Noise words and the initial vectors come
from one of two generators: on the CPU path (``backend: numba``) a :class:`HostGenerator`, numpy's MT19937
drawing exactly what ``torch.Generator()`` draws on CPU, so that path never imports torch; on the torch
backend a ``torch.Generator`` on the parameters' device (torch is imported there, and only there).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

#: Draws per chunk of :meth:`NoiseSampler.draw` and :meth:`HostGenerator.fill_uniform`: the temporaries of a
#: chunk stay ~2 MB however many draws a block needs (one block's noise is ~2M draws).
CHUNK = 1 << 16


class HostGenerator:
    """torch's CPU generator in numpy: ``HostGenerator(seed)`` draws what ``torch.Generator().manual_seed(seed)``
    draws, value for value, without importing torch.

    torch's CPU engine is MT19937 seeded with the low 32 bits of the seed (``init_genrand``, as numpy's legacy
    ``RandomState(seed)``); ``torch.rand`` (float32) is ``(u32 & 0xFFFFFF) * 2**-24`` and ``torch.randint(high)``
    is ``u32 % high`` (``high < 2**32``), one 32-bit output per element in order.  ``tests/test_sgns.py``
    checks the equality against torch itself.
    """

    def __init__(self, seed: int) -> None:
        legacy = np.random.RandomState(seed & 0xFFFFFFFF).get_state(legacy=False)
        self.bits = np.random.MT19937(0)
        self.bits.state = {"bit_generator": "MT19937", "state": legacy["state"]}

    def raw32(self, n: int) -> np.ndarray:
        """The next ``n`` 32-bit outputs (uint32), what torch's ``random()`` returns."""
        return self.bits.random_raw(n).astype(np.uint32)

    def rand(self, n: int) -> np.ndarray:
        """``torch.rand(n)``: float32 in [0, 1) on a 2**-24 grid."""
        raw = self.raw32(n)
        raw &= np.uint32(0xFFFFFF)
        return raw.astype(np.float32) * np.float32(2.0**-24)

    def randint(self, high: int, n: int) -> np.ndarray:
        """``torch.randint(high, (n,))``: int64 in [0, high)."""
        if not 0 < high < 2**32:
            raise ValueError(f"randint: high must be in 1..2**32-1, got {high}")
        raw = self.raw32(n)
        raw %= np.uint32(high)
        return raw.astype(np.int64)

    def fill_uniform(self, out: np.ndarray) -> None:
        """``out[...] = torch.rand(out.shape)`` (float32 ``out``), in chunks of :data:`CHUNK`."""
        flat = out.reshape(-1)
        for start in range(0, len(flat), CHUNK):
            flat[start : start + CHUNK] = self.rand(min(CHUNK, len(flat) - start))

    def skip(self, n: int) -> None:
        """Advance the stream by ``n`` outputs, as a draw of ``n`` values would, storing none."""
        self.bits.random_raw(n, output=False)

    @property
    def state(self) -> dict[str, Any]:
        return self.bits.state

    @state.setter
    def state(self, value: dict[str, Any]) -> None:
        self.bits.state = value


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
    on a cumulative table here), with 12 bytes per vocabulary entry.  The table has a slot per id (ids of
    count 0 are never drawn: their slot always aliases to a counted id), so the draws depend on the
    vocabulary's length, not on which rows the matrices hold.
    """

    def __init__(self, counts: np.ndarray, exponent: float = 0.75) -> None:
        if len(counts) >= 2**31:
            raise ValueError(f"{len(counts)} ids: noise ids are int32, the vocabulary must stay below 2**31 ids")
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
        self.accept = accept.astype(np.float32)  # (V,) probability of keeping the slot's own id
        self.alias = alias.astype(np.int64)  # (V,) the id drawn otherwise
        # the host draw's integer forms: coin * 2**-24 < accept  <=>  24-bit coin < ceil(accept * 2**24)
        self._accept24 = np.ceil(self.accept.astype(np.float64) * 2**24).astype(np.uint32)
        self._alias32 = self.alias.astype(np.int32)
        self._on_device: dict[str, tuple[Any, Any]] = {}  # device -> (accept, alias) as torch tensors

    def draw(self, shape: tuple[int, ...], generator: HostGenerator | torch.Generator, out: np.ndarray | None = None) -> Any:
        """``shape`` noise ids: an int32 numpy array from a :class:`HostGenerator` (written into ``out``, a 1-D
        int32 array of at least that many elements, when given), an int64 tensor on the generator's device
        from a ``torch.Generator``.  Both take all slots first, then all coins (torch's order), so a
        HostGenerator and a CPU torch.Generator with the same state draw the same ids."""
        if isinstance(generator, HostGenerator):
            return self._draw_host(shape, generator, out)
        import torch

        device = generator.device
        if str(device) not in self._on_device:
            self._on_device[str(device)] = (
                torch.as_tensor(self.accept, device=device), torch.as_tensor(self.alias, device=device)
            )
        accept, alias = self._on_device[str(device)]
        slot = torch.randint(len(alias), shape, generator=generator, device=device)
        coin = torch.rand(shape, generator=generator, device=device)
        return torch.where(coin < accept[slot], slot, alias[slot])

    def _draw_host(self, shape: tuple[int, ...], generator: HostGenerator, out: np.ndarray | None) -> np.ndarray:
        """The ids in place in one int32 array, coins in chunks: 4 bytes per draw, not the ~40 of whole-array
        temporaries (slots, coins, two gathers, the select)."""
        n = int(np.prod(shape))
        out = np.empty(n, np.int32) if out is None else out[:n]
        slots = np.uint32(len(self.alias))
        for start in range(0, n, CHUNK):  # torch.randint: u32 % V
            raw = generator.raw32(min(CHUNK, n - start))
            raw %= slots
            out[start : start + CHUNK] = raw
        for start in range(0, n, CHUNK):  # torch.rand < accept, as 24-bit integers
            slot = out[start : start + CHUNK]
            coin = generator.raw32(len(slot))
            coin &= np.uint32(0xFFFFFF)
            np.copyto(slot, self._alias32[slot], where=coin >= self._accept24[slot])
        return out.reshape(shape)


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
