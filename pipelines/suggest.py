""""Did you mean ...?" for a misspelt spec key or subcommand: a close spelling, or the name another tool uses.

Users come from gensim, word2vec.c, GloVe and KenLM with those tools' names in their fingers
(``vector_size``, ``iter``, ``-S``); :data:`ALIASES` maps them to lmpipe's, and :func:`difflib.get_close_matches`
catches the typos (``epoch`` -> ``epochs``)::

    >>> did_you_mean("vector_size", ["dim", "window", "epochs"])
    'dim'
    >>> did_you_mean("epoch", ["dim", "window", "epochs"])
    'epochs'
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

#: Another tool's name -> lmpipe's candidates (the first one that is a valid choice where the key was written).
ALIASES: dict[str, tuple[str, ...]] = {
    # gensim Word2Vec / word2vec.c / GloVe
    "vector_size": ("dim",), "size": ("dim",), "vector-size": ("dim",), "dimension": ("dim",), "emb_size": ("dim", "emb_dim"),
    "iter": ("epochs",), "iters": ("epochs",), "iterations": ("epochs",), "n_epochs": ("epochs",), "num_epochs": ("epochs",),
    "epoch": ("epochs",), "min-count": ("min_count",), "mincount": ("min_count",), "neg": ("negative",),
    "learning_rate": ("alpha", "lr", "eta"), "starting_alpha": ("alpha",), "threads": ("threads", "workers"),
    "sg": ("model",), "cbow": ("model",), "hs": ("loss",), "seed": ("seed",), "max_vocab_size": ("max_size",),
    "max-vocab": ("max_size",), "max_vocab": ("max_size",), "xmax": ("x_max",), "x-max": ("x_max",),
    "window_size": ("window",), "batch_words": ("batch_pairs",),
    # KenLM lmplz
    "o": ("order",), "n": ("order",), "S": ("memory_mb",), "memory": ("memory_mb",), "mem": ("memory_mb",),
    "T": ("temp_dir",), "temp_prefix": ("temp_dir",), "tmp_dir": ("temp_dir",), "tmpdir": ("temp_dir",),
    "temp": ("temp_dir",), "discount": ("discount_fallback",), "fallback": ("discount_fallback",),
    "limit_vocab_file": ("limit_vocab",), "arpa": ("arpa_gzip",), "pruning": ("prune",),
}  # fmt: skip


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """The valid choice ``word`` most likely meant (an alias from another tool, else the closest spelling)."""
    options = [str(c) for c in choices]
    for candidate in ALIASES.get(word, ()) + ALIASES.get(word.lower(), ()):
        if candidate in options and candidate != word:
            return candidate
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6) or difflib.get_close_matches(
        word.lower(), [o.lower() for o in options], n=1, cutoff=0.6
    )
    if not close:
        return None
    return next(o for o in options if o.lower() == close[0].lower())

