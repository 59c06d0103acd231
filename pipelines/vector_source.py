"""Where a vectors query reads from: a run, a vectors folder or a vectors file, told apart on disk.

``lmpipe embeddings neighbors|analogy WHERE ...`` accepts

=============================  =========================================================================
WHERE                          read as
=============================  =========================================================================
a run directory                its ``sgns`` or ``glove`` stage's vectors (``--stage``, default sgns)
a vectors folder               an ``embeddings.vectors.Vectors`` directory (``meta.json``), e.g. the output
                               of ``lmpipe embeddings import`` or ``RUN/sgns/vectors`` itself
a file                         any ``embeddings.formats`` format: ``--format``, or guessed from the suffix
                               (``.safetensors``, ``.npy``, ``.bin`` = word2vec binary) and, for text, from
                               the first line (``count dim`` = word2vec text, else GloVe)
=============================  =========================================================================
"""

from __future__ import annotations

from pathlib import Path

from lmpipe.embeddings.vectors import Vectors
from lmpipe.pipelines.core.errors import MissingError, UserError

#: File suffix -> ``embeddings.formats`` name; other suffixes are text, sniffed by :func:`guess_format`.
SUFFIX_FORMATS = {".safetensors": "safetensors", ".npy": "npy", ".bin": "word2vec-bin"}


class VectorsSourceError(UserError, ValueError):
    """A WHERE that is not a run, a vectors folder or a readable vectors file; the message says which."""


def stage_vectors(run: str | Path, stage: str):
    """The ``Vectors`` a finished stage wrote, or a MissingError naming what is missing and the fix."""
    from lmpipe.pipelines.rundir import read_manifest

    run = Path(run)
    if not run.is_dir():
        raise MissingError(f"{run}: no such run directory")
    if read_manifest(run, stage) is None:
        raise MissingError(
            f"{run / stage}: the {stage} stage has not completed in this run; run it first "
            f"(lmpipe run SPEC --run-dir {run} --stages {stage})"
        )
    path = run / stage / "vectors"
    if not (path / "meta.json").is_file():
        raise MissingError(f"{path}: the {stage} stage left no vectors")
    return Vectors.load(path)


def guess_format(path: Path) -> str:
    """The ``embeddings.formats`` name of a vectors file, from its suffix or its first line."""
    if path.suffix.lower() in SUFFIX_FORMATS:
        return SUFFIX_FORMATS[path.suffix.lower()]
    with open(path, "rb") as f:
        first = f.readline(256).split()
    return "word2vec" if len(first) == 2 and all(x.isdigit() for x in first) else "glove"


def open_vectors(where: str | Path, *, stage: str = "sgns", fmt: str | None = None) -> Vectors:
    """The ``Vectors`` WHERE names (see the module docstring); a MissingError or VectorsSourceError otherwise."""
    from lmpipe.embeddings.formats import import_vectors

    where = Path(where)
    if where.is_dir():
        if (where / "meta.json").is_file():
            return Vectors.load(where)
        if (where / stage).is_dir() or any(where.glob("*/manifest.json")):
            from lmpipe.pipelines.runlock import RunLock

            with RunLock(where, shared=True):  # a run directory: read while no run replaces the stage
                return stage_vectors(where, stage)
        raise VectorsSourceError(
            f"{where}: neither a run directory (no */manifest.json) nor a vectors folder (no meta.json)"
        )
    if not where.is_file():
        raise MissingError(f"{where}: no such run directory, vectors folder or vectors file")
    from safetensors import SafetensorError

    fmt = fmt or guess_format(where)
    try:
        return import_vectors(where, fmt)
    except (ValueError, KeyError, OSError, SafetensorError) as exc:  # malformed file: the reader names the row or byte
        raise VectorsSourceError(f"{where}: not a readable {fmt} vectors file ({exc})") from None
