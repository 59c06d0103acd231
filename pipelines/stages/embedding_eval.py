"""The intrinsic evaluation every embedding stage (sgns, glove) runs on its ``Vectors``, in one place.

A stage calls :func:`evaluate_stage` after writing its vectors; the result goes into its manifest under
``evaluation`` and :func:`summary_lines` prints it.  The sets come from the ``embedding-eval`` dataset
(``pipelines.datasets``), resolved through the mirror or the cache; when they do not resolve the evaluation
is skipped with the reason recorded, never failed, so a stage runs offline.  The metrics are gensim's
protocol (``embeddings.evaluate``): analogies by 3CosAdd and 3CosMul with ``restrict_vocab`` 300k, and
Spearman correlation on WS353 / SimLex-999 / MEN / RW.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lmpipe.embeddings.evaluate import (
    SIMILARITY_SETS,
    evaluate_analogies,
    evaluate_word_pairs,
    read_word_pairs,
)
from lmpipe.embeddings.vectors import Vectors

logger = logging.getLogger(__name__)

#: Evaluation set -> split of the ``embedding-eval`` dataset (``pipelines.datasets``).
EVAL_SPLITS = {
    "analogy": "analogy",
    "wordsim353": "wordsim353",
    "simlex999": "simlex999",
    "men": "men",
    "rw": "rw",
}
RESTRICT_VOCAB = 300_000


def eval_files(mirror: str | None) -> tuple[dict[str, Path], str | None]:
    """The evaluation files by set name, or ``({}, reason)`` when the dataset does not resolve."""
    from lmpipe.pipelines.datasets.registry import DatasetError
    from lmpipe.pipelines.datasets.resolve import resolve

    try:
        return {
            name: resolve(f"data:embedding-eval/{split}", mirror=mirror)
            for name, split in EVAL_SPLITS.items()
        }, None
    except DatasetError as exc:
        return {}, str(exc)


def evaluate(vectors: Vectors, files: dict[str, Path]) -> dict[str, Any]:
    """The standard intrinsic evaluations, gensim's protocol (``embeddings.evaluate``)."""
    out: dict[str, Any] = {"restrict_vocab": RESTRICT_VOCAB}
    for name, (_, delimiter) in SIMILARITY_SETS.items():
        try:
            r = evaluate_word_pairs(vectors, files[name], delimiter=delimiter, restrict_vocab=RESTRICT_VOCAB)
        except ValueError as exc:  # no pair in the vocabulary (tiny corpora): 0 of the file's pairs
            out[name] = {"skipped": str(exc), "pairs": 0, "oov": len(read_word_pairs(files[name], delimiter)[0])}
            continue
        out[name] = {"spearman": r.spearman, "pearson": r.pearson, "pairs": r.pairs, "oov": r.oov}
    for key, method in (("analogy", "3cosadd"), ("analogy_3cosmul", "3cosmul")):
        res = evaluate_analogies(vectors, files["analogy"], method=method, restrict_vocab=RESTRICT_VOCAB)
        out[key] = {
            "method": method,
            "semantic": res.semantic.accuracy,
            "syntactic": res.syntactic.accuracy,
            "total": res.total.accuracy,
            "answered": res.total.correct + res.total.incorrect,
            "questions": res.questions,
            "oov": res.oov,
        }
    return out


def evaluate_stage(stage: str, vectors: Vectors, *, enabled: bool, mirror: str | None) -> dict[str, Any]:
    """What a stage's manifest records under ``evaluation``: the metrics, or ``{"skipped": reason}``."""
    if not enabled:
        return {"skipped": f"{stage}.evaluate is false"}
    files, reason = eval_files(mirror)
    if reason is not None:
        logger.warning("%s: evaluation skipped: %s", stage, reason)
        return {"skipped": reason}
    return evaluate(vectors, files)


def summary_lines(evaluation: dict[str, Any]) -> list[str]:
    """Two lines (analogy, Spearman) for a stage summary, or the reason the evaluation was skipped."""
    if not evaluation:
        return []
    if "skipped" in evaluation:
        return [f"evaluation skipped: {evaluation['skipped']}"]
    a = evaluation["analogy"]
    sims = [
        f"{n} {e['spearman']:.3f} ({e['pairs']:,} of {e['pairs'] + e['oov']:,} pairs)"
        for n in SIMILARITY_SETS
        if "spearman" in (e := evaluation.get(n, {}))
    ]
    return [
        f"analogy 3CosAdd: total {100 * a['total']:.2f}% (semantic {100 * a['semantic']:.2f}%, syntactic "
        f"{100 * a['syntactic']:.2f}%) on {a['answered']:,} of {a['questions']:,} questions",
        "Spearman: " + (", ".join(sims) or "no set had in-vocabulary pairs"),
    ]
