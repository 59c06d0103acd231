"""word2vec's other three modes: skip-gram with hierarchical softmax, CBOW with negative sampling or HS.

``SGNSConfig(model=..., loss=...)`` picks one of word2vec.c's four combinations (``-cbow 0|1``,
``-hs 1 -negative 0`` or ``-hs 0 -negative K``); skip-gram with negative sampling stays in
:mod:`embeddings.sgns` (``sgns_kernel.train_pairs``, ``sgns_torch.sgns_step``), bit for bit as before.  This
module holds what the other three add on the CPU path, without torch:

* CPU (``backend: numba``): word2vec's per-example loops, ``sgns_kernel.train_pairs_hs`` (skip-gram HS) and
  ``sgns_kernel.train_cbow`` (CBOW, NS or HS), Hogwild over slices of the block, no shuffle;
* GPU or ``backend: torch``: ``sgns_torch.w2v_step``, one batched SGD step for every mode, on examples made
  from the block (:func:`cbow_windows` for CBOW) and shuffled, as ``sgns_step`` does for skip-gram pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lmpipe.embeddings.huffman import HuffmanTree, huffman_tree
from lmpipe.embeddings.sampling import NoiseSampler, windowed_tokens

#: The trainer these functions drive: an ``embeddings.sgns.SGNS`` (not imported: sgns imports this module).
SGNS = Any


def cbow_windows(ids: np.ndarray, seg: np.ndarray, eff: np.ndarray, window: int) -> tuple[np.ndarray, ...]:
    """``(centre, contexts, mask)`` of every kept token with at least one context word: ``contexts`` (N, 2W)
    holds the tokens of its sentence within its effective window (left ones first by distance, then right
    ones), padded with id 0 where ``mask`` (N, 2W) is false.  The same windows as ``train_cbow`` reads."""
    n = len(ids)
    pos = np.arange(n)
    contexts = np.zeros((n, 2 * window), np.int64)
    mask = np.zeros((n, 2 * window), bool)
    for o in range(1, window + 1):
        for col, j in ((2 * o - 2, pos - o), (2 * o - 1, pos + o)):
            ok = (j >= 0) & (j < n) & (eff >= o)
            ok[ok] &= seg[j[ok]] == seg[ok]
            contexts[ok, col] = ids[j[ok]]
            mask[ok, col] = True
    some = mask.any(1)
    return ids[some], contexts[some], mask[some]


@dataclass(frozen=True, slots=True)
class ModeTables:
    """What a mode other than skip-gram + NS reads: the Huffman tree (HS) and the alias table (CBOW NS draws its
    noise inside the kernel); the torch backend copies the tree to its device (``sgns_torch.device_tree``)."""

    tree: HuffmanTree | None
    accept: np.ndarray  # float32 (V,), NoiseSampler's alias table
    alias: np.ndarray  # int64 (V,)

    @classmethod
    def build(cls, loss: str, trainable: np.ndarray, noise: NoiseSampler) -> ModeTables:
        return cls(huffman_tree(trainable) if loss == "hierarchical" else None, noise.accept, noise.alias)


def train_block(model: SGNS, sentences: Sequence[np.ndarray], rng: np.random.Generator,
                lr_start: float, lr_end: float) -> tuple[int, float]:  # fmt: skip
    """Train ``model`` (a mode other than skip-gram + NS, numba backend) on one block; returns (examples, summed
    loss).  The learning rate falls linearly from ``lr_start`` to ``lr_end`` across the block's examples."""
    from lmpipe.embeddings.sgns_kernel import train_cbow, train_pairs_hs, window_pairs

    c, tables = model.config, model.modes
    ids, seg, eff = windowed_tokens(sentences, c.window, model.keep_prob, rng)
    tree = tables.tree or _NO_TREE
    if c.model == "skipgram":
        centre, context = window_pairs(ids, seg, eff)
        loss = train_pairs_hs(
            model.w_in, model.w_out, centre, context, tree.codes, tree.points, tree.lengths,
            lr_start, lr_end, model._slices,
        )  # fmt: skip
        return len(centre), float(loss)
    seed = int(rng.integers(2**62))
    negative = c.negative if c.loss == "negative" else 0
    loss, n = train_cbow(
        model.w_in, model.w_out, ids, seg, eff, tree.codes, tree.points, tree.lengths,
        tables.accept, tables.alias, negative, seed, lr_start, lr_end, model._slices,
    )  # fmt: skip
    return int(n), float(loss)


#: Placeholder tree arrays for the CBOW kernel with negative sampling (numba needs typed arrays).
_NO_TREE = HuffmanTree(np.zeros((1, 1), np.uint8), np.zeros((1, 1), np.int64), np.zeros(1, np.int64), 0)
