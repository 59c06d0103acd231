"""Linear interpolation of language models, token by token, with weights fitted by EM on held-out text.

    p_mix(w | h) = sum_m  lambda_m(b(h)) * p_m(w | h),     lambda_m(b) >= 0,  sum_m lambda_m(b) = 1

``b(h)`` is a context bin: one bin for plain interpolation, or the training frequency of the previous
token cut at ``bins`` thresholds (Bengio et al. 2003 conditioned the mixture weights on the context's
frequency: a rare context trusts the neural model more).  EM for mixture weights (Jelinek & Mercer 1980)
never lowers the held-out likelihood and converges to the global optimum (the log-likelihood is concave
in the weights): E-step, each token's posterior of each component; M-step, a bin's weights are the mean
posteriors of its tokens.  Everything is in log space (``logsumexp``), so a component that gives a token
probability 1e-40 does not underflow.

The fit reads only the tuning split's token scores; the weights are then applied to another split's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lmpipe.lm.token_scores import TokenScores, check_same_stream

LN10 = math.log(10.0)


@dataclass(frozen=True, slots=True)
class MixtureWeights:
    """Per-bin weights: ``weights[b, m]``; ``bins`` are the lower count thresholds of bins 1.. (bin 0 holds
    contexts rarer than ``bins[0]``, and sentence starts when ``bins`` is empty)."""

    models: tuple[str, ...]
    weights: np.ndarray  # (bins + 1, models)
    bins: tuple[int, ...] = ()
    iterations: int = 0
    log10_likelihood: float = 0.0  # of the tuning split under the fitted weights
    history: list[float] = field(default_factory=list)  # log10 likelihood after each EM iteration

    def __post_init__(self) -> None:
        w = np.asarray(self.weights, dtype=np.float64)
        if w.ndim != 2 or w.shape != (len(self.bins) + 1, len(self.models)):
            raise ValueError(
                f"mixture weights: shape {w.shape}, expected ({len(self.bins) + 1}, {len(self.models)})"
            )
        if (w < 0).any() or not np.allclose(w.sum(1), 1.0, atol=1e-9):
            raise ValueError(
                f"mixture weights must be non-negative and sum to 1 in every bin, got {w.round(6).tolist()}"
            )

    def as_dict(self) -> dict[str, object]:
        return {
            "models": list(self.models),
            "bins": list(self.bins),
            "weights": [[round(float(x), 6) for x in row] for row in self.weights],
            "iterations": self.iterations,
            "log10_likelihood": self.log10_likelihood,
        }


def context_bins(prev_counts: np.ndarray, bins: Sequence[int]) -> np.ndarray:
    """Bin index of each token from its previous token's training count (``searchsorted`` on thresholds)."""
    return (
        np.searchsorted(np.asarray(bins, dtype=np.int64), prev_counts, side="right")
        if len(bins)
        else np.zeros(len(prev_counts), np.int64)
    )


def _ln_components(scores: Sequence[TokenScores]) -> np.ndarray:
    return np.stack([s.log10_prob * LN10 for s in scores])  # (M, N) natural-log probabilities


def _logsumexp(a: np.ndarray, axis: int = 0) -> np.ndarray:
    top = a.max(axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    return (np.log(np.exp(a - top).sum(axis=axis, keepdims=True)) + top).squeeze(axis)


def mix_log10(
    scores: Sequence[TokenScores], weights: np.ndarray, token_bins: np.ndarray | None = None
) -> np.ndarray:
    """log10 p_mix of every token, for weights of shape (bins, M) and each token's bin (default bin 0)."""
    ln_p = _ln_components(scores)
    w = np.asarray(weights, dtype=np.float64)
    b = np.zeros(ln_p.shape[1], np.int64) if token_bins is None else token_bins
    with np.errstate(divide="ignore"):
        ln_w = np.log(w[b].T)  # (M, N); a zero weight contributes nothing (log 0 = -inf)
    return _logsumexp(ln_w + ln_p) / LN10


def fit_em(
    named: dict[str, TokenScores],
    *,
    prev_counts: np.ndarray | None = None,
    bins: Sequence[int] = (),
    max_iterations: int = 200,
    tolerance: float = 1e-7,
) -> MixtureWeights:
    """EM on the tuning split: stops when the mean log10 likelihood per token improves by less than
    ``tolerance`` (or after ``max_iterations``).  ``prev_counts`` (training count of each token's previous
    token) is needed when ``bins`` is not empty."""
    if len(named) < 2:
        raise ValueError(f"a mixture needs two or more models, got {list(named)}")
    check_same_stream(named)
    if list(bins) != sorted(set(bins)) or any(b < 1 for b in bins):
        raise ValueError(f"mixture bins must be increasing positive counts, got {list(bins)}")
    if bins and prev_counts is None:
        raise ValueError("context-frequency bins need the previous tokens' training counts")
    scores = list(named.values())
    ln_p = _ln_components(scores)  # (M, N)
    m, n = ln_p.shape
    token_bins = context_bins(prev_counts, bins) if bins else np.zeros(n, np.int64)
    weights = np.full((len(bins) + 1, m), 1.0 / m)
    history: list[float] = []
    previous = -math.inf
    iterations = 0
    while iterations < max_iterations:
        iterations += 1
        with np.errstate(divide="ignore"):
            joint = np.log(weights[token_bins].T) + ln_p  # (M, N)
        ln_mix = _logsumexp(joint)
        posterior = np.exp(joint - ln_mix)  # (M, N), columns sum to 1
        for b in range(len(bins) + 1):
            mask = token_bins == b
            if mask.any():
                weights[b] = posterior[:, mask].mean(1)
        weights /= weights.sum(1, keepdims=True)
        mean = float(ln_mix.mean()) / LN10  # with the weights before this M-step
        history.append(mean * n)
        if mean - previous < tolerance:
            break
        previous = mean
    final = float(mix_log10(scores, weights, token_bins).sum())
    return MixtureWeights(tuple(named), weights, tuple(int(b) for b in bins), iterations, final, history)


def apply(
    named: dict[str, TokenScores], weights: MixtureWeights, prev_counts: np.ndarray | None = None
) -> TokenScores:
    """The mixture's token scores on a split (the OOV flags and tokens of the first model)."""
    if tuple(named) != weights.models:
        raise ValueError(f"models {list(named)} do not match the fitted mixture's {list(weights.models)}")
    check_same_stream(named)
    scores = list(named.values())
    token_bins = context_bins(prev_counts, weights.bins) if weights.bins else None
    first = scores[0]
    return TokenScores(first.sentence, first.token, mix_log10(scores, weights.weights, token_bins), first.oov)


def grid_weights(named: dict[str, TokenScores], steps: int = 20) -> MixtureWeights:
    """Two models only: the best weight on a grid of ``steps`` + 1 points (a check on EM, and the classic
    way such weights were tuned)."""
    if len(named) != 2:
        raise ValueError("grid search is for two models; use EM for more")
    check_same_stream(named)
    scores = list(named.values())
    best, best_ll = 0.0, -math.inf
    for i in range(steps + 1):
        lam = i / steps
        ll = float(mix_log10(scores, np.array([[lam, 1.0 - lam]])).sum())
        if ll > best_ll:
            best, best_ll = lam, ll
    return MixtureWeights(tuple(named), np.array([[best, 1.0 - best]]), (), steps + 1, best_ll, [])
