"""word2vec's other three modes: skip-gram with hierarchical softmax, CBOW with negative sampling or HS.

``SGNSConfig(model=..., loss=...)`` picks one of word2vec.c's four combinations (``-cbow 0|1``,
``-hs 1 -negative 0`` or ``-hs 0 -negative K``); skip-gram with negative sampling stays in
:mod:`embeddings.sgns` (``sgns_step``, ``sgns_kernel.train_pairs``), bit for bit as before.  This module
holds what the other three add, for both backends:

* CPU (``backend: numba``): word2vec's per-example loops, ``sgns_kernel.train_pairs_hs`` (skip-gram HS) and
  ``sgns_kernel.train_cbow`` (CBOW, NS or HS), Hogwild over slices of the block, no shuffle;
* GPU or ``backend: torch``: :func:`w2v_step`, one batched SGD step for every mode, on examples made from
  the block and shuffled, as ``sgns_step`` does for skip-gram pairs.

One example is an input (the context word for skip-gram, the mean of the context window's input rows for
CBOW, word2vec's ``neu1`` with ``cbow_mean=1``) and T binary targets in the output matrix::

    skip-gram HS:   inputs (B, 1) = context      targets (B, L) = points[centre]   labels 1 - codes[centre]
    CBOW NS:        inputs (B, 2W) = the window  targets (B, 1+K) = centre, noise  labels 1, 0 .. 0
    CBOW HS:        inputs (B, 2W) = the window  targets (B, L) = points[centre]   labels 1 - codes[centre]
    (padded inputs and targets have mask 0; L = the longest Huffman path, W = window)

    h = mean of W_in[inputs] (B, d);  v = W_out[targets] (B, T, d);  f = v h;  g = (label - σ(f)) * lr * mask
    W_out[targets] += g h;  W_in[every input] += Σ_t g v_t   (the full error on each context row: word2vec)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lmpipe.embeddings.huffman import HuffmanTree, huffman_tree
from lmpipe.embeddings.sampling import NoiseSampler, skipgram_pairs, windowed_tokens

#: The trainer these functions drive: an ``embeddings.sgns.SGNS`` (not imported: sgns imports this module).
SGNS = Any


def w2v_step(
    w_in: torch.Tensor,
    w_out: torch.Tensor,
    inputs: torch.Tensor,
    input_mask: torch.Tensor,
    targets: torch.Tensor,
    labels: torch.Tensor,
    target_mask: torch.Tensor,
    lr: float | torch.Tensor,
) -> torch.Tensor:
    """One SGD step on B examples in place (see the module docstring); returns the summed loss before it.

    ``inputs``/``input_mask`` (B, C) ids into ``w_in`` and 1/0 floats; ``targets``/``labels``/``target_mask``
    (B, T) ids into ``w_out``, 1/0 labels and 1/0 floats.  Loss per example: ``Σ_t mask_t softplus(-m_t)``
    with margin ``m_t = f_t`` for label 1 and ``-f_t`` for label 0, i.e. ``-log σ(±h·v_t)``.
    """
    b, c = inputs.shape
    t, d = targets.shape[1], w_in.shape[1]
    x = w_in.index_select(0, inputs.reshape(-1)).view(b, c, d)  # (B, C, d)
    cw = input_mask.sum(1, keepdim=True).clamp_(min=1.0)  # (B, 1) context words
    h = torch.bmm(input_mask[:, None, :], x).view(b, d).div_(cw)  # (B, d) mean of the inputs
    v = w_out.index_select(0, targets.reshape(-1)).view(b, t, d)  # (B, T, d)
    f = torch.bmm(v, h[:, :, None]).view(b, t)  # (B, T)
    g = (labels - torch.sigmoid(f)).mul_(target_mask).mul_(lr)  # (B, T)
    loss = torch.nn.functional.softplus(f * (1.0 - 2.0 * labels)).mul_(target_mask).sum()
    w_out.index_add_(0, targets.reshape(-1), torch.mul(g[:, :, None], h[:, None, :]).view(-1, d))
    neu1e = torch.bmm(g[:, None, :], v).view(b, d)  # (B, d) word2vec's neu1e
    w_in.index_add_(0, inputs.reshape(-1), torch.mul(input_mask[:, :, None], neu1e[:, None, :]).view(-1, d))
    return loss


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
    """What a mode other than skip-gram + NS reads: the Huffman tree (HS), the alias table as numpy (CBOW
    NS draws its noise inside the kernel), and device copies for the torch step."""

    tree: HuffmanTree | None
    accept: np.ndarray  # float32 (V,), NoiseSampler's alias table
    alias: np.ndarray  # int64 (V,)
    codes: torch.Tensor | None  # the tree on the parameters' device (torch backend)
    points: torch.Tensor | None
    lengths: torch.Tensor | None

    @classmethod
    def build(
        cls, loss: str, trainable: np.ndarray, noise: NoiseSampler, device: torch.device
    ) -> ModeTables:
        tree = huffman_tree(trainable) if loss == "hierarchical" else None
        on = (lambda a: torch.as_tensor(a, dtype=torch.int64, device=device)) if tree is not None else None
        return cls(
            tree, noise.accept.cpu().numpy(), noise.alias.cpu().numpy(),
            on(tree.codes) if on else None, on(tree.points) if on else None, on(tree.lengths) if on else None,
        )  # fmt: skip


def train_block(model: SGNS, sentences: Sequence[np.ndarray], rng: np.random.Generator,
                generator: torch.Generator, lr_start: float, lr_end: float) -> tuple[int, float]:  # fmt: skip
    """Train ``model`` (a mode other than skip-gram + NS) on one block; returns (examples, summed loss).
    The learning rate falls linearly from ``lr_start`` to ``lr_end`` across the block's examples."""
    c, tables = model.config, model.modes
    w_in, w_out = model.w_in, model.w_out
    if model.backend == "torch" and c.model == "skipgram":  # the same draws, pairs grouped by offset
        centre_np, context_np = skipgram_pairs(sentences, c.window, model.keep_prob, rng)
        return _train_torch(model, centre_np, context_np[:, None], np.ones((len(centre_np), 1), bool), rng,
                            generator, lr_start, lr_end)  # fmt: skip
    ids, seg, eff = windowed_tokens(sentences, c.window, model.keep_prob, rng)
    if model.backend == "numba":
        from lmpipe.embeddings.sgns_kernel import train_cbow, train_pairs_hs, window_pairs

        tree = tables.tree or _NO_TREE
        if c.model == "skipgram":
            centre, context = window_pairs(ids, seg, eff)
            loss = train_pairs_hs(
                w_in.numpy(), w_out.numpy(), centre, context, tree.codes, tree.points, tree.lengths,
                lr_start, lr_end, model._slices,
            )  # fmt: skip
            return len(centre), float(loss)
        seed = int(rng.integers(2**62))
        negative = c.negative if c.loss == "negative" else 0
        loss, n = train_cbow(
            w_in.numpy(), w_out.numpy(), ids, seg, eff, tree.codes, tree.points, tree.lengths,
            tables.accept, tables.alias, negative, seed, lr_start, lr_end, model._slices,
        )  # fmt: skip
        return int(n), float(loss)
    return _train_torch(model, *cbow_windows(ids, seg, eff, c.window), rng, generator, lr_start, lr_end)


def _train_torch(model: SGNS, centre_np: np.ndarray, inputs_np: np.ndarray, mask_np: np.ndarray,
                 rng: np.random.Generator, generator: torch.Generator, lr_start: float, lr_end: float,
                 ) -> tuple[int, float]:  # fmt: skip
    """The examples of a block, shuffled, in steps of ``batch_pairs`` (:func:`w2v_step`)."""
    c, w_in, w_out = model.config, model.w_in, model.w_out
    order = rng.permutation(len(centre_np))
    device = w_in.device
    centre = torch.from_numpy(centre_np[order]).to(device)
    inputs = torch.from_numpy(inputs_np[order]).to(device)
    input_mask = torch.from_numpy(mask_np[order]).to(device, torch.float32)
    n, loss = len(order), torch.zeros((), device=device)
    for start in range(0, n, c.batch_pairs):
        stop = min(n, start + c.batch_pairs)
        targets, labels, target_mask = _targets(model, centre[start:stop], generator)
        lr = lr_start + (lr_end - lr_start) * start / n
        loss += w2v_step(
            w_in, w_out, inputs[start:stop], input_mask[start:stop], targets, labels, target_mask, lr
        )
    return n, float(loss)


def _targets(model: SGNS, centre: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """(targets, labels, mask) of a batch of centres: Huffman paths (HS) or centre + noise words (NS)."""
    tables = model.modes
    if model.config.loss == "hierarchical":
        points, codes, lengths = tables.points[centre], tables.codes[centre], tables.lengths[centre]
        mask = torch.arange(points.shape[1], device=centre.device)[None, :] < lengths[:, None]
        return points, 1.0 - codes.float(), mask.float()
    noise = model.noise.draw((len(centre), model.config.negative), generator)
    targets = torch.cat([centre[:, None], noise], 1)
    labels = torch.zeros(targets.shape, device=centre.device)
    labels[:, 0] = 1.0
    mask = torch.cat([torch.ones_like(centre, dtype=torch.bool)[:, None], noise != centre[:, None]], 1)
    return targets, labels, mask.float()


#: Placeholder tree arrays for the CBOW kernel with negative sampling (numba needs typed arrays).
_NO_TREE = HuffmanTree(np.zeros((1, 1), np.uint8), np.zeros((1, 1), np.int64), np.zeros(1, np.int64), 0)
