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
is offered beside 3CosAdd.  Questions are answered in batches, one matmul per batch.

>>> res = evaluate_analogies(vecs, "questions-words.txt")                   # doctest: +SKIP
>>> res.total.accuracy, res.semantic.accuracy, res.oov                       # doctest: +SKIP
>>> evaluate_word_pairs(vecs, "MEN_dataset_natural_form_full", delimiter=" ").spearman   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

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


def _answer(
    matrix: np.ndarray, unit: np.ndarray, norms: np.ndarray, q: np.ndarray, method: str
) -> np.ndarray:
    """Top-``_TOPN`` candidate rows for questions ``q`` (Q x 3 rows of a, b, c); -1 pads excluded rows."""
    a, b, c = unit[q[:, 0]], unit[q[:, 1]], unit[q[:, 2]]
    if method == "3cosadd":
        # gensim: mean of the unit vectors (+b, +c, -a), re-normalised and cast to float32
        mean = ((b + c) - a).astype(np.float64) / 3.0
        mean /= np.linalg.norm(mean, axis=1, keepdims=True)
        scores = (mean.astype(np.float32).astype(matrix.dtype) @ matrix.T) / norms  # (Q, n), C order
    else:

        def shifted(v: np.ndarray) -> np.ndarray:
            return (1 + (v @ matrix.T) / norms) / 2

        scores = shifted(b) * shifted(c) / (shifted(a) + 1e-6)
    rows = np.arange(len(q))
    scores[rows[:, None], q] = -np.inf
    top = np.full((len(q), _TOPN), -1, dtype=np.int64)
    for j in range(min(_TOPN, scores.shape[1])):  # 5 argmax passes: ~20x faster than argpartition here
        best = scores.argmax(axis=1)
        top[:, j] = np.where(np.isneginf(scores[rows, best]), -1, best)
        scores[rows, best] = -np.inf
    return top


def evaluate_analogies(
    vectors: Vectors,
    path: str | os.PathLike,
    *,
    method: str = "3cosadd",
    restrict_vocab: int = 300_000,
    case_insensitive: bool = True,
    dummy4unknown: bool = False,
    dtype: type = np.float32,
    batch_size: int = 1024,
) -> AnalogyResult:
    """Accuracy per section on an analogy file (3CosAdd or 3CosMul), gensim's protocol.

    ``dtype=np.float64`` scores in double precision: slower, but the answers then do not depend on the BLAS
    build's float32 rounding when two candidates are within ~1e-7 (the parity tests use it).
    """
    if method not in METHODS:
        raise ValueError(f"unknown analogy method {method!r}; options are {list(METHODS)}")
    ok = _ok_vocab(vectors, restrict_vocab, case_insensitive)
    n = min(restrict_vocab, len(vectors))
    matrix = np.asarray(vectors.matrix[:n], dtype=dtype)
    norms = np.linalg.norm(matrix, axis=1)
    norms[norms == 0] = 1.0  # gensim divides by zero here; an all-zero row then simply scores 0
    unit = matrix / norms[:, None]
    raw_sections, invalid = read_analogies(path)
    results: list[SectionResult] = []
    questions = oov = 0
    for name, quads in raw_sections:
        keys = [[w.upper() for w in qd] if case_insensitive else qd for qd in quads]
        known = [k for k in keys if all(w in ok for w in k)]
        questions += len(keys)
        oov += len(keys) - len(known)
        correct = 0
        for start in range(0, len(known), batch_size):
            batch = known[start : start + batch_size]
            q = np.array([[ok[w] for w in k[:3]] for k in batch], dtype=np.int64).reshape(-1, 3)
            top = _answer(matrix, unit, norms, q, method)
            for k, cands in zip(batch, top, strict=True):
                predicted = None
                for row in cands[cands >= 0]:
                    tok = vectors.tokens[row]
                    predicted = tok.upper() if case_insensitive else tok
                    if predicted not in k[:3]:
                        break
                correct += predicted == k[3]
        incorrect = len(known) - correct + (len(keys) - len(known) if dummy4unknown else 0)
        results.append(SectionResult(name, correct, incorrect))
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
