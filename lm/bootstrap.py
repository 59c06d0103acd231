"""Paired bootstrap over sentences for the difference of two models' perplexities on the same text.

Resampling units are sentences (tokens inside a sentence are not independent), and both models are
resampled with the *same* sentence indices (paired), so the interval reflects how much the difference
depends on which sentences happen to be in the test set (Koehn 2004; Efron & Tibshirani 1993).  Each
replicate's perplexity is whole-corpus (sum of log10 p over the resampled sentences' tokens / their token
count), as KenLM's accounting requires, never a mean of per-sentence perplexities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmpipe.lm.token_scores import TokenScores, check_same_stream


@dataclass(frozen=True, slots=True)
class BootstrapResult:
    difference: float  # perplexity(a) - perplexity(b) on the full set
    low: float
    high: float
    confidence: float
    samples: int
    #: Share of replicates in which ``a`` is not better than ``b`` (perplexity(a) >= perplexity(b)): a
    #: one-sided p-value for "a is better" when the difference is negative.
    a_not_better: float

    def as_dict(self) -> dict[str, float | int]:
        return {k: getattr(self, k) for k in self.__slots__}  # type: ignore[attr-defined]


def _perplexity(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return 10.0 ** (-sums / counts)


def paired_bootstrap(
    a: TokenScores, b: TokenScores, *, samples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> BootstrapResult:
    """Percentile interval of ``perplexity(a) - perplexity(b)`` over ``samples`` resamplings of sentences."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    check_same_stream({"a": a, "b": b})
    sums_a, counts = a.per_sentence()
    sums_b, _ = b.per_sentence()
    n = len(counts)
    if n == 0:
        raise ValueError("no sentences to resample")
    rng = np.random.default_rng(seed)
    diffs = np.empty(samples)
    for start in range(0, samples, 256):  # (chunk, n) index matrices keep memory bounded for big test sets
        stop = min(samples, start + 256)
        idx = rng.integers(0, n, size=(stop - start, n))
        tokens = counts[idx].sum(1)
        diffs[start:stop] = _perplexity(sums_a[idx].sum(1), tokens) - _perplexity(sums_b[idx].sum(1), tokens)
    total = counts.sum()
    point = float(_perplexity(sums_a.sum(), total) - _perplexity(sums_b.sum(), total))
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(diffs, [tail, 1.0 - tail])
    return BootstrapResult(point, float(low), float(high), confidence, samples, float((diffs >= 0).mean()))
