"""lmpipe: a distributed pipeline, on Ray, for word embeddings and large-corpus language modelling.

The import namespace over the repository's folders (``pyproject.toml`` maps them)::

    lmpipe.pipelines   the run directory, the spec, the stages, the CLI (``lmpipe``)
    lmpipe.lm          n-gram estimation (lmplz-exact modified Kneser-Ney), neural LMs, taggers
    lmpipe.embeddings  skip-gram and GloVe trainers, the ``Vectors`` artifact, evaluation
    lmpipe.cluster     Ray connection, the training harness, job submission

The Python API (``lmpipe.run``, ``lmpipe.Run``; see ``lmpipe.session``) is reached lazily through
:func:`__getattr__`: importing ``lmpipe`` imports nothing, so a Ray worker that unpickles
``lmpipe.lm.train.train_loop`` does not pay for the orchestration floor.

    >>> import lmpipe
    >>> run = lmpipe.run("pipelines/specs/tiny.yaml", run_dir="runs/tiny")   # doctest: +SKIP
    >>> run.score(["in the beginning god created the heaven"], model="kn3")  # doctest: +SKIP
"""

__version__ = "0.1.0"

#: Public names of the Python API -> the sub-module defining them (imported on first use).
_LAZY = {"run": "lmpipe.session", "Run": "lmpipe.session"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lmpipe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
