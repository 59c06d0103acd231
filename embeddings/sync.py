"""Merging SGNS replicas trained on different shards: the math of the periodic sync, no communication.

Data parallelism for SGNS (Ray Train or anything else) runs K workers, each with a full copy of both
matrices and its own shard of sentences.  Every sync period they start from the same parameters ``W0``,
train locally to ``W_k``, and then agree on new parameters from the deltas ``D_k = W_k - W0``.  Gradients
are not all-reduced per step: a step touches a few thousand rows of a V x d table, and dense all-reduce
of sparse gradients per step would cost V x d traffic each time (NCCL has no sparse all-reduce either).

Schemes, for row r (``m[r]`` = number of workers whose delta for r is non-zero)::

    sum      W[r] = W0[r] + sum_k D_k[r]          Hogwild's result to first order in alpha: every update of
                                                  every worker is applied once, as word2vec.c's threads do
                                                  on one shared matrix.  Needs each worker to follow the
                                                  global learning-rate schedule over its own shard.
    mean     W[r] = W0[r] + sum_k D_k[r] / K      plain model averaging (mean of the replicas); rare rows
                                                  seen by one worker get 1/K of their update.
    touched  W[r] = W0[r] + sum_k D_k[r] / m[r]   mean over the workers that updated r: rare rows keep their
                                                  whole update, rows every worker updated are averaged
                                                  (no K-fold overshoot on frequent rows).  Rows nobody
                                                  touched stay W0[r].

All three need only two all-reduce(SUM) results, ``sum_k D_k`` and ``m``, which is why
:func:`merge_deltas` takes those and not the replicas.  When V x d is too large to reduce densely, the
same formulas hold on the union of touched rows (exchange row ids + delta rows instead).

The functions accept numpy arrays or torch tensors (only operators shared by both are used).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TypeVar

logger = logging.getLogger(__name__)

SCHEMES = ("sum", "mean", "touched")
Array = TypeVar("Array")


def merge_deltas(
    base: Array, delta_sum: Array, touched: Array, *, world_size: int, scheme: str = "touched"
) -> Array:
    """New parameters from ``base`` (V x d), ``delta_sum`` = sum of the workers' deltas, ``touched`` (V,).

    ``touched[r]`` counts the workers that changed row r (all-reduce of ``(delta != 0).any(1)``).
    """
    if scheme == "sum":
        return base + delta_sum
    if scheme == "mean":
        return base + delta_sum / world_size
    if scheme == "touched":
        return base + delta_sum / touched.clip(min=1)[:, None]
    raise ValueError(f"unknown sync scheme {scheme!r}; options are {list(SCHEMES)}")


def merge_replicas(base: Array, replicas: Sequence[Array], *, scheme: str = "touched") -> Array:
    """Single-process reference of a sync: the same result :func:`merge_deltas` gets after all-reduce."""
    deltas = [w - base for w in replicas]
    delta_sum = sum(deltas[1:], deltas[0])
    touched = sum(((d != 0).any(1) * 1 for d in deltas[1:]), (deltas[0] != 0).any(1) * 1)
    return merge_deltas(base, delta_sum, touched, world_size=len(replicas), scheme=scheme)
