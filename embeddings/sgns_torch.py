"""The torch backend of :mod:`embeddings.sgns` (``backend: torch``, a GPU, ``shared_negatives > 1``, ``compile``):
batched SGD steps on tensors, for all four word2vec modes.  Only this module of the SGNS trainer imports
torch; the CPU path (``backend: numba``) runs on numpy arrays and never loads it.

A *block* of sentences becomes one array of examples (numpy, no per-token Python), shuffled, and
``batch_pairs`` examples at a time are scored with the parameters as they were at the start of the batch and
their row gradients ``index_add_``-ed into the two matrices (Hogwild-like staleness inside one batch, as
when word2vec runs many threads)::

    sentences ──concat──► ids  [ 7  3  9 | 4  4  8  2 ]   seg [0 0 0 | 1 1 1 1]   (| = sentence boundary)
    subsample ──────────► ids  [ 7  9 | 4  8  2 ]          eff [2 1 | 1 2 2]       (effective windows)
    offset o=1..window:   centre i, context i±o  if  o <= eff[i]  and  seg[i] == seg[i±o]
    shuffle, then per batch:  u = W_in[context] (B,d);  v = W_out[centre, noise] (B,1+K,d)
                              g = (label - sigmoid(u·v)) * lr;  W_in[context] += g v;  W_out[..] += g u

``shared_negatives=G`` lets G consecutive pairs share one draw of K noise words (Ji et al. 2016,
"HogBatch"): the noise scores become a (G x d)(d x K) matmul and G-fold fewer output rows are gathered.

The other modes (``embeddings.sgns_modes``) make one example an input (the context word for skip-gram, the
mean of the context window's input rows for CBOW, word2vec's ``neu1`` with ``cbow_mean=1``) and T binary
targets in the output matrix::

    skip-gram HS:   inputs (B, 1) = context      targets (B, L) = points[centre]   labels 1 - codes[centre]
    CBOW NS:        inputs (B, 2W) = the window  targets (B, 1+K) = centre, noise  labels 1, 0 .. 0
    CBOW HS:        inputs (B, 2W) = the window  targets (B, L) = points[centre]   labels 1 - codes[centre]
    (padded inputs and targets have mask 0; L = the longest Huffman path, W = window)

    h = mean of W_in[inputs] (B, d);  v = W_out[targets] (B, T, d);  f = v h;  g = (label - σ(f)) * lr * mask
    W_out[targets] += g h;  W_in[every input] += Σ_t g v_t   (the full error on each context row: word2vec)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from lmpipe.embeddings.sampling import skipgram_pairs, windowed_tokens
from lmpipe.embeddings.sgns_modes import cbow_windows

#: The trainer these functions drive: an ``embeddings.sgns.SGNS`` (not imported: sgns imports this module).
SGNS = Any


def sgns_step(
    w_in: torch.Tensor,
    w_out: torch.Tensor,
    centre: torch.Tensor,
    context: torch.Tensor,
    noise: torch.Tensor,
    lr: float | torch.Tensor,
) -> torch.Tensor:
    """One SGD step on B pairs in place; returns the summed loss of the batch (0-dim, before the step).

    ``noise`` is (B, K) (one draw per pair) or (G, K) with G < B (shared by ceil(B/G) consecutive pairs).
    Loss per pair: ``-log σ(u·v_centre) - Σ_k log σ(-u·v_k)`` with u = w_in[context]; the update is ``-lr``
    times its gradient, computed for all pairs from the parameters at entry: word2vec's
    ``g = (label - σ(f)) * alpha; neu1e += g * syn1neg[target]; syn1neg[target] += g * syn0[context]``.
    A noise word equal to the pair's centre contributes nothing (word2vec: ``if (target == word) continue``).
    """
    # index_select and in-place ops: ~1.8x faster on CPU than advanced indexing with fresh temporaries
    b, d = context.shape[0], w_in.shape[1]
    groups, k = noise.shape
    u = w_in.index_select(0, context)  # (B, d)
    if groups == b:  # independent noise: the centre is target 0 of 1 + K, one gather and one scatter
        targets = torch.cat([centre[:, None], noise], 1).view(-1)  # (B * (1+K),)
        v = w_out.index_select(0, targets).view(b, k + 1, d)  # (B, 1+K, d)
        sign = torch.ones(k + 1, device=u.device, dtype=u.dtype)
        sign[0] = -1.0
        f = torch.mul(v, u[:, None, :]).sum(2).mul_(sign)  # (B, 1+K): -u·v_centre, +u·v_noise
        skip = torch.cat([torch.zeros_like(centre, dtype=torch.bool)[:, None], noise == centre[:, None]], 1)
        g = torch.sigmoid(f).mul_(-sign * lr).masked_fill_(skip, 0.0)  # (label - σ(u·v)) * lr
        w_out.index_add_(0, targets, torch.mul(g[:, :, None], u[:, None, :]).view(-1, d))
        w_in.index_add_(0, context, torch.bmm(g[:, None, :], v).view(b, d))
        return torch.nn.functional.softplus(f).masked_fill_(skip, 0.0).sum()
    per = -(-b // groups)  # shared noise: pairs [i*per, (i+1)*per) use noise[i]
    pad = groups * per - b
    v_pos = w_out.index_select(0, centre)  # (B, d)
    v_neg = w_out.index_select(0, noise.reshape(-1)).view(groups, k, d)  # (G, K, d)
    u_g = torch.cat([u, u.new_zeros(pad, d)]).view(groups, per, d)  # padded pairs have u = 0
    centre_g = torch.cat([centre, centre.new_full((pad,), -1)]).view(groups, per, 1)
    pos = torch.mul(u, v_pos).sum(1)  # (B,)
    neg = torch.bmm(u_g, v_neg.transpose(1, 2))  # (G, per, K)
    skip = noise[:, None, :] == centre_g
    g_pos = torch.sigmoid(-pos).mul_(lr)  # (1 - σ(f)) * lr
    g_neg = torch.sigmoid(neg).mul_(-lr).masked_fill_(skip, 0.0)  # (0 - σ(f)) * lr
    w_out.index_add_(0, centre, g_pos[:, None] * u)
    w_out.index_add_(0, noise.reshape(-1), torch.bmm(g_neg.transpose(1, 2), u_g).view(-1, d))
    w_in.index_add_(0, context, torch.bmm(g_neg, v_neg).view(-1, d)[:b].addcmul_(g_pos[:, None], v_pos))
    neg_loss = torch.nn.functional.softplus(neg).masked_fill_(skip, 0.0).sum() - pad * k * math.log(2.0)
    return torch.nn.functional.softplus(-pos).sum() + neg_loss  # padded pairs scored log 2 per noise word


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
    """One SGD step on B examples of any mode in place (see the module docstring); returns the summed loss
    before it.

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


# ------------------------------------------------------------------------------------------ state
def new_generator(seed: int, device: str) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def lr_scalar(device: str) -> torch.Tensor:
    """The learning rate as a 0-dim tensor, refilled every step, so a compiled step is not specialised on it."""
    return torch.zeros((), device=device)


def init_matrices(rows: int, ids: int, dim: int, generator: torch.Generator, device: str) -> tuple[torch.Tensor, ...]:
    """word2vec.c's init on ``rows`` rows, drawing ``ids x dim`` uniforms (see ``SGNS.__init__``)."""
    w_in = (torch.rand(rows, dim, generator=generator, device=device) - 0.5) / dim
    for start in range(rows * dim, ids * dim, 1 << 20):  # the draws of the rows not held, discarded
        torch.rand(min(1 << 20, ids * dim - start), generator=generator, device=device)
    return w_in, torch.zeros(rows, dim, device=device)


def device_tree(tree: Any, device: str) -> tuple[torch.Tensor, ...] | None:
    """The Huffman tree's ``(codes, points, lengths)`` on the parameters' device (hierarchical softmax)."""
    if tree is None:
        return None
    return tuple(torch.as_tensor(a, dtype=torch.int64, device=device) for a in (tree.codes, tree.points, tree.lengths))


def compiled_step(compile: bool) -> Any:
    return torch.compile(sgns_step, dynamic=False) if compile else sgns_step


def state_tensor(state: Any) -> torch.Tensor:
    """A generator state read back from a checkpoint (a uint8 numpy array) as the ByteTensor torch takes."""
    return torch.as_tensor(np.asarray(state, dtype=np.uint8))


# ------------------------------------------------------------------------------------------ blocks
def train_sgns_block(model: SGNS, sentences: Sequence[np.ndarray], stream: Any, words_done: int, words: int
                     ) -> tuple[int, float]:  # fmt: skip
    """Skip-gram + NS on one block: pairs shuffled, ``batch_pairs`` at a time; returns (pairs, summed loss)."""
    c, st = model.config, stream
    centre_np, context_np = skipgram_pairs(sentences, c.window, model.keep_prob, st.rng)
    order = st.rng.permutation(len(centre_np))
    device = model.w_in.device
    centre = torch.from_numpy(centre_np[order]).to(device, non_blocking=True)
    context = torch.from_numpy(context_np[order]).to(device, non_blocking=True)
    n, batch = len(order), c.batch_pairs
    per_batch = -(-batch // c.shared_negatives)  # noise draws per full batch
    full_noise = model.noise.draw((n // batch * per_batch, c.negative), st.generator)  # one call per block
    loss = torch.zeros((), device=device)
    for i, start in enumerate(range(0, n, batch)):
        stop = min(n, start + batch)
        st.lr.fill_(model.learning_rate(words_done + words * start / max(n, 1)))
        if stop - start == batch:
            noise, step = full_noise[i * per_batch : (i + 1) * per_batch], model._step
        else:  # the block's last, shorter batch: its own draw, and eager (a compiled step is fixed-shape)
            noise = model.noise.draw((-(-(stop - start) // c.shared_negatives), c.negative), st.generator)
            step = sgns_step
        loss += step(model.w_in, model.w_out, centre[start:stop], context[start:stop], noise, st.lr)
    return n, float(loss)


def train_mode_block(model: SGNS, sentences: Sequence[np.ndarray], stream: Any, lr_start: float, lr_end: float
                     ) -> tuple[int, float]:  # fmt: skip
    """Skip-gram HS or CBOW on one block: the examples shuffled, in steps of ``batch_pairs``."""
    c, rng = model.config, stream.rng
    if c.model == "skipgram":  # the same draws, pairs grouped by offset
        centre_np, context_np = skipgram_pairs(sentences, c.window, model.keep_prob, rng)
        examples = centre_np, context_np[:, None], np.ones((len(centre_np), 1), bool)
    else:
        examples = cbow_windows(*windowed_tokens(sentences, c.window, model.keep_prob, rng), c.window)
    return _train_examples(model, *examples, stream, lr_start, lr_end)


def _train_examples(model: SGNS, centre_np: np.ndarray, inputs_np: np.ndarray, mask_np: np.ndarray,
                    stream: Any, lr_start: float, lr_end: float) -> tuple[int, float]:  # fmt: skip
    """The examples of a block, shuffled, in steps of ``batch_pairs`` (:func:`w2v_step`)."""
    c, w_in, w_out = model.config, model.w_in, model.w_out
    order = stream.rng.permutation(len(centre_np))
    device = w_in.device
    centre = torch.from_numpy(centre_np[order]).to(device)
    inputs = torch.from_numpy(inputs_np[order]).to(device)
    input_mask = torch.from_numpy(mask_np[order]).to(device, torch.float32)
    n, loss = len(order), torch.zeros((), device=device)
    for start in range(0, n, c.batch_pairs):
        stop = min(n, start + c.batch_pairs)
        targets, labels, target_mask = _targets(model, centre[start:stop], stream.generator)
        lr = lr_start + (lr_end - lr_start) * start / n
        loss += w2v_step(
            w_in, w_out, inputs[start:stop], input_mask[start:stop], targets, labels, target_mask, lr
        )
    return n, float(loss)


def _targets(model: SGNS, centre: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """(targets, labels, mask) of a batch of centres: Huffman paths (HS) or centre + noise words (NS)."""
    if model.config.loss == "hierarchical":
        codes, points, lengths = model._device_tree
        points, codes, lengths = points[centre], codes[centre], lengths[centre]
        mask = torch.arange(points.shape[1], device=centre.device)[None, :] < lengths[:, None]
        return points, 1.0 - codes.float(), mask.float()
    noise = model.noise.draw((len(centre), model.config.negative), generator)
    targets = torch.cat([centre[:, None], noise], 1)
    labels = torch.zeros(targets.shape, device=centre.device)
    labels[:, 0] = 1.0
    mask = torch.cat([torch.ones_like(centre, dtype=torch.bool)[:, None], noise != centre[:, None]], 1)
    return targets, labels, mask.float()
