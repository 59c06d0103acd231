"""Output layers of the neural language models: ``log p(target | h)`` for training and scoring, and the whole
distribution for sampling.

Every layer answers two questions with the same parameters::

    target_log_probs(h (N, D), target (N,)) -> (N,)   natural-log probability of each target
    log_probs(h (N, D))                       -> (N, V) the full log distribution (generation, tests)

* :class:`FullSoftmax` -- ``log_softmax(h W^T + b)``; ``W`` may be the input embedding (tied weights,
  Press & Wolf 2016 / Inan et al. 2016).
* :class:`ClassSoftmax` -- Mikolov et al. 2011 ("Extensions of recurrent neural network language model"):
  words are binned into C classes by unigram frequency, each class holding about 1/C of the training tokens,
  and ``p(w | h) = p(c(w) | h) p(w | c(w), h)``; a step computes C + |class| scores instead of V
  (C ~ sqrt(V) makes that ~2 sqrt(V)).
* :class:`AdaptiveSoftmax` -- ``torch.nn.AdaptiveLogSoftmaxWithLoss`` (Grave et al. 2017): frequent words in
  a head, rarer ones in clusters of smaller dimension.  Needs ids sorted by frequency, which the vocabulary is
  (``pipelines.core.vocab``: specials, then descending count).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class FullSoftmax(nn.Module):
    """A linear layer onto the vocabulary followed by log-softmax; ``weight`` shares a tied embedding."""

    def __init__(self, in_dim: int, vocab_size: int, weight: nn.Parameter | None = None) -> None:
        super().__init__()
        self.weight = weight if weight is not None else nn.Parameter(torch.empty(vocab_size, in_dim))
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        if weight is None:
            nn.init.xavier_uniform_(self.weight)

    def log_probs(self, h: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(F.linear(h, self.weight, self.bias), dim=-1)

    def target_log_probs(self, h: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return -F.cross_entropy(F.linear(h, self.weight, self.bias), target, reduction="none")


def frequency_classes(counts: np.ndarray, classes: int) -> np.ndarray:
    """Mikolov's frequency binning: ``(V,)`` class of each id.  Words are taken by descending count and a new
    class starts when the running share of tokens passes ``(c + 1) / classes``, so frequent words get small
    classes of their own and the rare tail shares the last ones.  Zero-count ids (``<s>``) go to the last class.
    Every class is non-empty (fewer classes are returned when V < classes)."""
    counts = np.asarray(counts, dtype=np.float64)
    v = len(counts)
    classes = max(1, min(classes, v))
    order = np.argsort(-counts, kind="stable")
    share = np.cumsum(counts[order]) / max(counts.sum(), 1.0)
    out = np.empty(v, dtype=np.int64)
    c = 0
    for rank, word in enumerate(order):
        out[word] = c
        left_words, left_classes = v - rank - 1, classes - c - 1
        if left_classes > 0 and (share[rank] >= (c + 1) / classes or left_words <= left_classes):
            c += 1
    return out


class ClassSoftmax(nn.Module):
    """Class-factorised softmax: ``log p(w|h) = log p(c(w)|h) + log p(w | c(w), h)``.

    Word scores use one ``(V, D)`` matrix (tied to the embedding when given); class ``c``'s words are the rows
    ``members[c]``, and a batch is scored class by class, touching only the rows of the classes present.
    """

    def __init__(self, in_dim: int, word_class: np.ndarray, weight: nn.Parameter | None = None) -> None:
        super().__init__()
        word_class = np.asarray(word_class, dtype=np.int64)
        v = len(word_class)
        n_classes = int(word_class.max()) + 1
        self.class_layer = nn.Linear(in_dim, n_classes)
        self.weight = weight if weight is not None else nn.Parameter(torch.empty(v, in_dim))
        self.bias = nn.Parameter(torch.zeros(v))
        if weight is None:
            nn.init.xavier_uniform_(self.weight)
        nn.init.xavier_uniform_(self.class_layer.weight)
        nn.init.zeros_(self.class_layer.bias)
        within = np.zeros(v, dtype=np.int64)
        members = []
        for c in range(n_classes):
            ids = np.flatnonzero(word_class == c)
            within[ids] = np.arange(len(ids))
            members.append(ids)
        self.register_buffer("word_class", torch.from_numpy(word_class), persistent=False)
        self.register_buffer("within", torch.from_numpy(within), persistent=False)
        self.register_buffer("flat_members", torch.from_numpy(np.concatenate(members)), persistent=False)
        self.bounds = np.concatenate([[0], np.cumsum([len(m) for m in members])]).tolist()

    @property
    def n_classes(self) -> int:
        return len(self.bounds) - 1

    def _members(self, c: int) -> torch.Tensor:
        return self.flat_members[self.bounds[c] : self.bounds[c + 1]]

    def _word_scores(self, h: torch.Tensor, c: int) -> torch.Tensor:
        ids = self._members(c)
        return F.linear(h, self.weight.index_select(0, ids), self.bias.index_select(0, ids))

    def target_log_probs(self, h: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        cls = self.word_class[target]
        out = -F.cross_entropy(self.class_layer(h), cls, reduction="none")
        for c in torch.unique(cls).tolist():  # one small matmul per class present in the batch
            rows = (cls == c).nonzero(as_tuple=True)[0]
            scores = self._word_scores(h.index_select(0, rows), c)
            word = -F.cross_entropy(scores, self.within[target.index_select(0, rows)], reduction="none")
            out = out.index_add(0, rows, word)
        return out

    def log_probs(self, h: torch.Tensor) -> torch.Tensor:
        class_lp = F.log_softmax(self.class_layer(h), dim=-1)
        out = h.new_empty(h.shape[:-1] + (len(self.word_class),))
        for c in range(self.n_classes):
            lp = F.log_softmax(self._word_scores(h, c), dim=-1) + class_lp[..., c : c + 1]
            out = out.index_copy(-1, self._members(c), lp)
        return out


class AdaptiveSoftmax(nn.Module):
    """``torch.nn.AdaptiveLogSoftmaxWithLoss`` behind the common interface (not tied: it has its own head)."""

    def __init__(
        self, in_dim: int, vocab_size: int, cutoffs: tuple[int, ...], div_value: float = 4.0
    ) -> None:
        super().__init__()
        self.inner = nn.AdaptiveLogSoftmaxWithLoss(in_dim, vocab_size, list(cutoffs), div_value=div_value)

    def target_log_probs(self, h: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.inner(h, target).output

    def log_probs(self, h: torch.Tensor) -> torch.Tensor:
        return self.inner.log_prob(h.reshape(-1, h.size(-1))).view(*h.shape[:-1], -1)


def default_classes(vocab_size: int) -> int:
    """Mikolov's rule of thumb: about sqrt(V) classes."""
    return max(1, round(math.sqrt(vocab_size)))


def default_cutoffs(vocab_size: int) -> tuple[int, ...]:
    """Adaptive-softmax clusters at ~2k, ~10k and ~50k words, those below the vocabulary size."""
    return tuple(c for c in (2000, 10000, 50000) if c < vocab_size - 1) or (max(1, vocab_size // 2),)
