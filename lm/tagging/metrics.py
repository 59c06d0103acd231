"""Tagging scores: token accuracy (POS) and conlleval's chunk precision, recall and F1 (chunking, NER).

conlleval (the CoNLL-2000 Perl script) reads each sentence's chunks leniently (``I-X`` after ``O`` starts a
chunk; ``pipelines.core.tag_schemes.spans``) and counts a predicted chunk as correct when its start, end and type all
equal a gold chunk's.  Per type and overall::

    precision = correct / predicted chunks     recall = correct / gold chunks     F1 = 2PR / (P + R)

reported in percent, 0 when a denominator is 0, as conlleval prints them.  ``seqeval``'s default mode gives
the same figures (tests/test_conll.py checks both on random sequences and on tagger output).

    >>> chunk_scores([["B-PER", "I-PER", "O"]], [["B-PER", "O", "O"]])["overall"]["f1"]
    0.0
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from lmpipe.pipelines.core.tag_schemes import spans


def _prf(correct: int, predicted: int, gold: int) -> dict[str, float | int]:
    p = 100.0 * correct / predicted if predicted else 0.0
    r = 100.0 * correct / gold if gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f, "correct": correct, "predicted": predicted, "gold": gold}


def chunk_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, Any]:
    """conlleval's figures for sentences of gold and predicted tags: ``overall`` and ``types`` (per chunk type,
    sorted), plus token ``accuracy`` (percent, as conlleval's first line)."""
    correct: Counter[str] = Counter()
    found_pred: Counter[str] = Counter()
    found_gold: Counter[str] = Counter()
    tokens = same = 0
    for i, (g, p) in enumerate(zip(gold, pred, strict=True)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted")
        gs, ps = spans(g), spans(p)
        found_gold.update(t for _, _, t in gs)
        found_pred.update(t for _, _, t in ps)
        correct.update(t for _, _, t in set(gs) & set(ps))
        tokens += len(g)
        same += sum(a == b for a, b in zip(g, p, strict=True))
    types = sorted(found_gold.keys() | found_pred.keys())
    return {
        "overall": _prf(sum(correct.values()), sum(found_pred.values()), sum(found_gold.values())),
        "types": {t: _prf(correct[t], found_pred[t], found_gold[t]) for t in types},
        "accuracy": 100.0 * same / tokens if tokens else 0.0,
        "tokens": tokens,
    }


def accuracy(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Token accuracy in percent, with the token count and the most frequent confusions (gold -> predicted)."""
    tokens = same = 0
    confusions: Counter[tuple[str, str]] = Counter()
    for g, p in zip(gold, pred, strict=True):
        for a, b in zip(g, p, strict=True):
            tokens += 1
            if a == b:
                same += 1
            else:
                confusions[(a, b)] += 1
    return {
        "accuracy": 100.0 * same / tokens if tokens else 0.0,
        "tokens": tokens,
        "errors": tokens - same,
        "top_confusions": [[a, b, n] for (a, b), n in confusions.most_common(10)],
    }


def score(kind: str, gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, Any]:
    """The task's figures and its headline number ``score`` (F1 for spans, accuracy for tokens)."""
    if kind == "span":
        out = chunk_scores(gold, pred)
        return {**out, "score": out["overall"]["f1"]}
    out = accuracy(gold, pred)
    return {**out, "score": out["accuracy"]}
