"""word2vec's modes and its per-model defaults, without torch or numba: the sgns spec and ``SGNSConfig`` both
read this module, and the spec must load without the training stack (a rerun with every stage up to date
imports neither torch nor Ray)."""

from __future__ import annotations

MODELS = ("skipgram", "cbow")  # word2vec.c -cbow 0 | 1
LOSSES = ("negative", "hierarchical")  # -hs 0 -negative K | -hs 1 -negative 0


def mode_defaults(
    model: str, loss: str, *, alpha: float | None, negative: int | None
) -> dict[str, float | int]:
    """word2vec.c's defaults for the settings left ``None``: ``alpha`` 0.05 for CBOW and 0.025 for skip-gram
    (``-alpha``), ``negative`` 5 with negative sampling and 0 with hierarchical softmax (HS draws no noise
    words).  The one place these defaults are written."""
    out: dict[str, float | int] = {}
    if alpha is None:
        out["alpha"] = 0.05 if model == "cbow" else 0.025
    if negative is None:
        out["negative"] = 5 if loss == "negative" else 0
    return out
