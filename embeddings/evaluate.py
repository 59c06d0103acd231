"""Intrinsic evaluation of :class:`~embeddings.vectors.Vectors`: word similarity and word analogies.

Both follow gensim 4's ``KeyedVectors.evaluate_word_pairs`` / ``evaluate_word_analogies`` rule for rule, so
a number here is comparable with a number gensim prints for the same vectors:

* only the first ``restrict_vocab`` rows (default 300,000; gensim PR #1935) are used, both as the
  vocabulary a question or pair must be in and as the candidates an analogy is answered from;
* ``case_insensitive`` upper-cases the test words and the vocabulary, and a test word is looked up as the
  *first* row (the most frequent) among the case variants of a token;
* lines that are not ``w1 w2 score`` / ``a b c d`` are skipped and counted, ``#`` lines are comments;
* an analogy ``a : b :: c : ?`` is answered by the best of the top 5 candidates (the rows of a, b, c
  excluded) whose upper-cased token is none of a, b, c; questions with an unknown word are skipped and
  counted as OOV (or scored wrong with ``dummy4unknown``).

3CosMul (Levy & Goldberg 2014, cosines shifted to [0, 1], eps 1e-6, as gensim's ``most_similar_cosmul``)
is offered beside 3CosAdd.  Questions are answered all sections together, by a top-1 search over tiles of
about ``_TILE`` scores (one matrix product per tile; 3CosMul's cosines once per distinct question word),
so memory does not grow with the vocabulary and the rule is gensim's top-5 rule exactly (float32 near-ties
aside: see :func:`evaluate_analogies`).

>>> res = evaluate_analogies(vecs, "questions-words.txt")                   # doctest: +SKIP
>>> res.total.accuracy, res.semantic.accuracy, res.oov                       # doctest: +SKIP
>>> evaluate_word_pairs(vecs, "MEN_dataset_natural_form_full", delimiter=" ").spearman   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmpipe.embeddings.vectors import Vectors

logger = logging.getLogger(__name__)

#: Standard similarity sets of the data mirror's ``embedding-eval/``: name -> (file, field delimiter).
SIMILARITY_SETS: dict[str, tuple[str, str]] = {
    "wordsim353": ("wordsim353.tsv", "\t"),
    "simlex999": ("simlex999.txt", "\t"),
    "men": ("MEN_dataset_natural_form_full", " "),  # header line "word1 word2 score" is skipped as invalid
    "rw": ("EN-RW-STANFORD.txt", "\t"),
}
ANALOGY_SET = "questions-words.txt"
METHODS = ("3cosadd", "3cosmul")
_TOPN = 5  # candidates gensim inspects per question


def rankdata(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank (scipy.stats.rankdata's default 'average')."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    new_group = np.r_[True, xs[1:] != xs[:-1]]
    group = np.cumsum(new_group) - 1
    bounds = np.r_[
        np.flatnonzero(new_group), len(x)
    ]  # group g spans sorted positions bounds[g]..bounds[g+1]-1
    avg = 0.5 * (bounds[:-1] + bounds[1:] - 1) + 1.0
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = avg[group]
    return ranks


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    x = np.asarray(x, np.float64) - np.mean(x)
    y = np.asarray(y, np.float64) - np.mean(y)
    denom = np.sqrt((x @ x) * (y @ y))
    return float(x @ y / denom) if denom > 0 else float("nan")


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho: Pearson correlation of the average ranks (equals scipy.stats.spearmanr)."""
    return pearson(rankdata(x), rankdata(y))


def _ok_vocab(vectors: Vectors, restrict_vocab: int, case_insensitive: bool) -> dict[str, int]:
    """Test-word -> row over the first ``restrict_vocab`` rows; with case folding the first variant wins."""
    ok: dict[str, int] = {}
    for i, tok in enumerate(vectors.tokens[:restrict_vocab]):
        ok.setdefault(tok.upper() if case_insensitive else tok, i)
    return ok


@dataclass(frozen=True, slots=True)
class PairsResult:
    path: str
    spearman: float
    pearson: float
    pairs: int  # pairs scored (including zero-scored OOV pairs under dummy4unknown)
    oov: int  # pairs with a word outside the restricted vocabulary
    invalid: int  # non-comment lines that are not "w1 w2 score"
    dummy4unknown: bool = False

    @property
    def oov_ratio(self) -> float:
        """Percent of pairs with an unknown word, with gensim's denominator."""
        total = self.pairs if self.dummy4unknown else self.pairs + self.oov
        return 100.0 * self.oov / total if total else 0.0


def read_word_pairs(
    path: str | os.PathLike, delimiter: str = "\t"
) -> tuple[list[tuple[str, str, float]], int]:
    """Parse ``w1<delim>w2<delim>score`` lines; returns the pairs and the number of invalid lines."""
    pairs: list[tuple[str, str, float]] = []
    invalid = 0
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f):
            if not line or line.startswith("#"):
                continue
            parts = line.split(delimiter)
            try:
                a, b, score = parts
                pairs.append((a, b, float(score)))
            except ValueError:
                logger.debug("skipping invalid line #%d in %s", line_no, path)
                invalid += 1
    return pairs, invalid


def cosine_rows(matrix: np.ndarray, rows_a: list[int], rows_b: list[int]) -> np.ndarray:
    """Cosine of row pairs in float64; symmetric bit for bit, so (a, b) and (b, a) tie exactly.

    (gensim's float32 BLAS ``dot(unitvec(a), unitvec(b))`` can differ by an ulp between the two orders,
    which breaks such ties and moves Spearman by ~1e-7.)
    """
    va = np.asarray(matrix[rows_a], dtype=np.float64)
    vb = np.asarray(matrix[rows_b], dtype=np.float64)
    denom = np.linalg.norm(va, axis=1) * np.linalg.norm(vb, axis=1)
    return np.einsum("ij,ij->i", va, vb) / np.where(denom == 0, 1.0, denom)


def evaluate_word_pairs(
    vectors: Vectors,
    path: str | os.PathLike,
    *,
    delimiter: str = "\t",
    restrict_vocab: int = 300_000,
    case_insensitive: bool = True,
    dummy4unknown: bool = False,
) -> PairsResult:
    """Spearman and Pearson correlation of cosine similarity (float64) with the human scores."""
    ok = _ok_vocab(vectors, restrict_vocab, case_insensitive)
    pairs, invalid = read_word_pairs(path, delimiter)
    gold: list[float] = []
    rows_a: list[int] = []
    rows_b: list[int] = []
    oov_gold: list[float] = []
    for a, b, score in pairs:
        ka, kb = (a.upper(), b.upper()) if case_insensitive else (a, b)
        if ka in ok and kb in ok:
            gold.append(score)
            rows_a.append(ok[ka])
            rows_b.append(ok[kb])
        else:
            oov_gold.append(score)
    model = cosine_rows(vectors.matrix, rows_a, rows_b)
    if dummy4unknown:  # gensim appends OOV pairs in file order; ranks do not depend on order
        gold, model = gold + oov_gold, np.r_[model, np.zeros(len(oov_gold))]
    if not gold:
        raise ValueError(f"no valid in-vocabulary pairs in {path} for {vectors}")
    result = PairsResult(
        path=str(path),
        spearman=spearman(np.asarray(gold), model),
        pearson=pearson(np.asarray(gold), model),
        pairs=len(gold),
        oov=len(oov_gold),
        invalid=invalid,
        dummy4unknown=dummy4unknown,
    )
    logger.info(
        "%s: spearman %.4f pearson %.4f over %d pairs, %d OOV, %d invalid lines",
        Path(path).name,
        result.spearman,
        result.pearson,
        result.pairs,
        result.oov,
        result.invalid,
    )
    return result


@dataclass(frozen=True, slots=True)
class SectionResult:
    name: str
    correct: int
    incorrect: int

    @property
    def accuracy(self) -> float:
        n = self.correct + self.incorrect
        return self.correct / n if n else 0.0


@dataclass(frozen=True, slots=True)
class AnalogyResult:
    path: str
    method: str
    sections: tuple[SectionResult, ...]  # in file order
    questions: int  # valid question lines
    oov: int  # questions with a word outside the restricted vocabulary
    invalid: int  # lines that are neither a section header nor four words

    def _sum(self, name: str, syntactic: bool | None) -> SectionResult:
        picked = [s for s in self.sections if syntactic is None or s.name.startswith("gram") == syntactic]
        return SectionResult(name, sum(s.correct for s in picked), sum(s.incorrect for s in picked))

    @property
    def semantic(self) -> SectionResult:
        return self._sum("semantic", False)

    @property
    def syntactic(self) -> SectionResult:
        """Sections named ``gram*`` (questions-words.txt's convention)."""
        return self._sum("syntactic", True)

    @property
    def total(self) -> SectionResult:
        return self._sum("Total accuracy", None)

    def as_dict(self) -> dict[str, float | int | str]:
        out: dict[str, float | int | str] = {s.name: s.accuracy for s in (self.semantic, self.syntactic)}
        out.update(total=self.total.accuracy, questions=self.questions, oov=self.oov, method=self.method)
        return out


def read_analogies(path: str | os.PathLike) -> tuple[list[tuple[str, list[list[str]]]], int]:
    """Sections of ``a b c d`` questions from a questions-words style file, and the invalid-line count."""
    sections: list[tuple[str, list[list[str]]]] = []
    invalid = 0
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f):
            if line.startswith(": "):
                sections.append((line.lstrip(": ").strip(), []))
                continue
            if not sections:
                raise ValueError(f"{path}:{line_no + 1}: question before the first ': section' header")
            words = line.split()
            if len(words) != 4:
                invalid += 1
                continue
            sections[-1][1].append(words)
    return sections, invalid


#: Scores held at once while answering analogies: one (questions x candidate rows) tile of about this many
#: numbers (4 MB in float32) whatever the vocabulary.  A whole-vocabulary score matrix per batch of 1024
#: questions was 137 MB at 33.5k words (five of them alive for 3CosMul) and 1.2 GB at 300k.
_TILE = 1 << 20
_QUESTIONS = 4096  # questions per tile (all sections together); 3CosMul's per-word products amortise over them


def _scorer(
    matrix: np.ndarray, unit: np.ndarray, norms: np.ndarray, q: np.ndarray, method: str
) -> Callable[[int, int], np.ndarray]:
    """``score(j0, j1)``: the (Q, j1 - j0) scores of candidate rows ``j0..j1`` for questions ``q`` (Q x 3 rows
    of a, b, c), a fresh array the caller may overwrite.  The arithmetic is gensim's, element by element.

    3CosAdd: the mean of the unit vectors (+b, +c, -a), re-normalised in float64 and cast to float32, against
    the raw rows divided by their norms (gensim's ``dot(vectors, mean) / norms``).  3CosMul: each question
    word's shifted cosines ``(1 + cos) / 2`` are computed once per chunk of rows for the distinct words of the block
    (a few hundred words answer thousands of questions), then ``b * c / (a + 1e-6)`` per question."""
    if method == "3cosadd":
        a, b, c = unit[q[:, 0]], unit[q[:, 1]], unit[q[:, 2]]
        mean = ((b + c) - a).astype(np.float64) / 3.0
        mean /= np.linalg.norm(mean, axis=1, keepdims=True)
        mean32 = mean.astype(np.float32).astype(matrix.dtype)

        def cosadd(j0: int, j1: int) -> np.ndarray:
            tile = mean32 @ matrix[j0:j1].T  # (Q, cols)
            tile /= norms[j0:j1]
            return tile

        return cosadd
    words, inverse = np.unique(q, return_inverse=True)
    inverse = inverse.reshape(q.shape)
    word_units = unit[words]  # (W, d)
    spare = np.empty(_TILE + len(q), dtype=matrix.dtype)  # one temporary reused by every tile
    chunk = max(1, _TILE // max(len(words), 1))  # the words' shifted cosines, this many rows at a time
    cache: dict[str, Any] = {"start": -1, "stop": -1, "shifted": None}

    def cosmul(j0: int, j1: int) -> np.ndarray:
        if not cache["start"] <= j0 < j1 <= cache["stop"]:  # one product per chunk of rows, not per tile
            stop = min(len(matrix), max(j1, j0 + chunk))
            shifted = word_units @ matrix[j0:stop].T  # (W, rows): (1 + cos) / 2, in place (one array, not four)
            shifted /= norms[j0:stop]
            shifted += 1
            shifted /= 2
            cache.update(start=j0, stop=stop, shifted=shifted)
        shifted = cache["shifted"][:, j0 - cache["start"] : j1 - cache["start"]]
        tile = np.take(shifted, inverse[:, 1], axis=0)  # b
        other = spare[: tile.size].reshape(tile.shape)
        np.multiply(tile, np.take(shifted, inverse[:, 2], axis=0, out=other, mode="clip"), out=tile)  # b * c
        np.add(np.take(shifted, inverse[:, 0], axis=0, out=other, mode="clip"), 1e-6, out=other)  # a + eps
        return np.divide(tile, other, out=tile)

    return cosmul


def _best_rows(
    score: Callable[[int, int], np.ndarray], questions: int, n: int, excluded: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-1 search in column tiles: each question's best row outside its ``excluded`` (question, row) pairs
    (the first row on ties, as ``argmax``), that row's score (-1 and -inf when none is left), and the scores
    of the excluded pairs, in the order of ``excluded``::

        candidate rows  0 ........ cols | cols ....... 2 cols | ... | n     one tile per column block:
        question 0      [ score  tile   ] [ score  tile      ]            mask its excluded pairs, argmax,
        ...             [               ] [                  ]            keep the best so far (strictly
        question Q-1    [               ] [                  ]            greater: earlier rows win ties)
    """
    eq, er = excluded
    order = np.argsort(er, kind="stable")
    eq, er = eq[order], er[order]
    best = np.full(questions, -1, dtype=np.int64)
    top = np.full(questions, -np.inf)
    seen = np.empty(len(er))
    index = np.arange(questions)
    cols = max(1, _TILE // max(questions, 1))
    for j0 in range(0, n, cols):
        j1 = min(n, j0 + cols)
        tile = score(j0, j1)
        lo, hi = np.searchsorted(er, (j0, j1))
        qi, col = eq[lo:hi], er[lo:hi] - j0
        seen[order[lo:hi]] = tile[qi, col]
        tile[qi, col] = -np.inf
        arg = tile.argmax(axis=1)
        val = tile[index, arg]
        better = val > top
        best[better] = arg[better] + j0
        top[better] = val[better]
    return best, top, seen


def _predict(best: int, top: float, variants: list[tuple[float, int]], key_of: Callable[[int], str]) -> str | None:
    """gensim's answer: the first of the top ``_TOPN`` candidates (the rows of a, b, c excluded) whose key is
    none of a, b, c, else the last of them.  ``variants`` are the (score, row) of the other rows whose key is
    one of a, b, c (case variants): they only matter when ``_TOPN`` of them outrank ``best``."""
    # candidates rank by score, then by row (repeated argmax); -inf is no candidate
    above = sorted((-s, r) for s, r in variants if s != -np.inf and (s > top or (s == top and r < best)))
    if len(above) < _TOPN and best >= 0:
        return key_of(best)
    return key_of(above[:_TOPN][-1][1]) if above else None


def evaluate_analogies(
    vectors: Vectors,
    path: str | os.PathLike,
    *,
    method: str = "3cosadd",
    restrict_vocab: int = 300_000,
    case_insensitive: bool = True,
    dummy4unknown: bool = False,
    dtype: type = np.float32,
    batch_size: int = _QUESTIONS,
) -> AnalogyResult:
    """Accuracy per section on an analogy file (3CosAdd or 3CosMul), gensim's protocol.

    All sections' in-vocabulary questions are answered together, ``batch_size`` at a time, by a top-1 search
    over column tiles (:func:`_best_rows`, memory bounded by ``_TILE``) instead of gensim's per-question
    top-5 sort; rows whose key is one of a, b, c are excluded from the search and put back by
    :func:`_predict`, so the answer is gensim's rule exactly.  Float32 scores are sums in BLAS order, which
    depends on the matrix shapes: two candidates within ~1e-7 may swap between block sizes or BLAS builds.
    ``dtype=np.float64`` scores in double precision, where that does not happen (the parity tests use it).
    """
    if method not in METHODS:
        raise ValueError(f"unknown analogy method {method!r}; options are {list(METHODS)}")
    ok = _ok_vocab(vectors, restrict_vocab, case_insensitive)
    n = min(restrict_vocab, len(vectors))
    keys = [tok.upper() if case_insensitive else tok for tok in vectors.tokens[:n]]
    rows_of: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        rows_of.setdefault(key, []).append(i)
    matrix = np.asarray(vectors.matrix[:n], dtype=dtype)
    norms = np.linalg.norm(matrix, axis=1)
    norms[norms == 0] = 1.0  # gensim divides by zero here; an all-zero row then simply scores 0
    unit = matrix / norms[:, None]
    raw_sections, invalid = read_analogies(path)
    questions = oov = 0
    known: list[list[str]] = []  # every section's in-vocabulary questions, in file order
    section_of: list[int] = []
    for s, (_, quads) in enumerate(raw_sections):
        for qd in quads:
            k = [w.upper() for w in qd] if case_insensitive else qd
            questions += 1
            if all(w in ok for w in k):
                known.append(k)
                section_of.append(s)
            else:
                oov += 1
    correct = np.zeros(len(raw_sections), dtype=np.int64)
    for start in range(0, len(known), batch_size):
        batch = known[start : start + batch_size]
        q = np.array([[ok[w] for w in k[:3]] for k in batch], dtype=np.int64).reshape(-1, 3)
        # excluded (question, row) pairs: every row whose key is a, b or c (usually exactly their 3 rows)
        excluded = [(i, r) for i, k in enumerate(batch) for r in sorted({r for w in set(k[:3]) for r in rows_of[w]})]
        eq, er = np.array(excluded, dtype=np.int64).reshape(-1, 2).T
        best, top, seen = _best_rows(_scorer(matrix, unit, norms, q, method), len(batch), n, (eq, er))
        variants: dict[int, list[tuple[float, int]]] = {}
        for j in np.flatnonzero(er != q[eq, 0]):  # excluded rows other than a, b, c themselves
            i, r = int(eq[j]), int(er[j])
            if r != q[i, 1] and r != q[i, 2]:
                variants.setdefault(i, []).append((float(seen[j]), r))
        for i, k in enumerate(batch):
            predicted = _predict(int(best[i]), float(top[i]), variants.get(i, []), keys.__getitem__)
            correct[section_of[start + i]] += predicted == k[3]
    results: list[SectionResult] = []
    for s, (name, quads) in enumerate(raw_sections):
        answered = sum(1 for x in section_of if x == s)
        incorrect = answered - int(correct[s]) + (len(quads) - answered if dummy4unknown else 0)
        results.append(SectionResult(name, int(correct[s]), incorrect))
    result = AnalogyResult(str(path), method, tuple(results), questions, oov, invalid)
    logger.info(
        "%s (%s, restrict_vocab %d): semantic %.4f syntactic %.4f total %.4f; %d/%d questions OOV",
        Path(path).name,
        method,
        restrict_vocab,
        result.semantic.accuracy,
        result.syntactic.accuracy,
        result.total.accuracy,
        oov,
        questions,
    )
    return result


def evaluate_all(vectors: Vectors, eval_dir: str | os.PathLike, *, restrict_vocab: int = 300_000) -> dict:
    """Every standard set present in ``eval_dir`` -> a JSON-ready dict of metrics (missing files skipped)."""
    eval_dir = Path(eval_dir)
    out: dict[str, dict] = {}
    for name, (fname, delim) in SIMILARITY_SETS.items():
        if (eval_dir / fname).exists():
            r = evaluate_word_pairs(vectors, eval_dir / fname, delimiter=delim, restrict_vocab=restrict_vocab)
            out[name] = {"spearman": r.spearman, "pearson": r.pearson, "pairs": r.pairs, "oov": r.oov}
        else:
            logger.warning("similarity set %s not found in %s, skipped", fname, eval_dir)
    if (eval_dir / ANALOGY_SET).exists():
        for method in METHODS:
            out[f"analogy_{method}"] = evaluate_analogies(
                vectors, eval_dir / ANALOGY_SET, method=method, restrict_vocab=restrict_vocab
            ).as_dict()
    return out
