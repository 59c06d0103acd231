"""Word-similarity and analogy evaluation: parity with gensim 4's evaluate_word_pairs/evaluate_word_analogies.

The vectors are random with planted analogy offsets over the real evaluation vocabularies, with case
variants placed before some originals (so the first-variant rule matters) and ~10% of words left out (OOV).
Exact parity is checked with gensim running in float64: in float32 two candidates within ~1e-7 may swap
depending on the BLAS summation order, which says nothing about the protocol.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lmpipe.embeddings.evaluate import (
    SIMILARITY_SETS,
    cosine_rows,
    evaluate_all,
    evaluate_analogies,
    evaluate_word_pairs,
    rankdata,
    spearman,
)
from lmpipe.embeddings.vectors import Vectors

gensim_kv = pytest.importorskip("gensim.models.keyedvectors")
stats = pytest.importorskip("scipy.stats")


@pytest.fixture(scope="module")
def eval_dir(mirror: Path) -> Path:
    """``$LMPIPE_DATA_MIRROR/embedding-eval`` (the conftest ``mirror`` fixture skips when unset)."""
    return mirror / "embedding-eval"


DIM = 24
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # gensim's cosmul calls init_sims


def _eval_words(eval_dir: Path) -> tuple[list[str], list[list[str]]]:
    questions = [ln.split() for ln in (eval_dir / "questions-words.txt").read_text().splitlines()]
    words = {w for q in questions if q[0] != ":" for w in q}
    for fname, delim in SIMILARITY_SETS.values():
        for line in (eval_dir / fname).read_text().splitlines():
            parts = line.split(delim)
            if len(parts) == 3 and not line.startswith("#"):
                words.update(parts[:2])
    return sorted(words), questions


@pytest.fixture(scope="module")
def planted(eval_dir: Path) -> Vectors:
    """Random vectors where `b = a + offset(section) + noise` for the question pairs, in file order."""
    rng = np.random.default_rng(7)
    words, questions = _eval_words(eval_dir)
    vec = {w: rng.normal(size=DIM) for w in words}
    offset = None
    for q in questions:
        if q[0] == ":":
            offset = rng.normal(size=DIM) * 1.5
            continue
        for x, y in ((q[0], q[1]), (q[2], q[3])):
            vec[y] = vec[x] + offset + rng.normal(size=DIM) * 0.5
    tokens = [w for w in words if rng.random() > 0.1]  # ~10% OOV
    variants = [w.swapcase() for w in rng.choice(words, 300, replace=False) if w.swapcase() not in vec]
    tokens += variants
    rng.shuffle(tokens)
    vec.update({v: rng.normal(size=DIM) for v in variants})
    return Vectors(tokens, np.stack([vec[t] for t in tokens]).astype(np.float32), source="planted")


def _gensim(vectors: Vectors, dtype=np.float64):
    kv = gensim_kv.KeyedVectors(vectors.dim, dtype=dtype)
    kv.add_vectors(vectors.tokens, vectors.matrix.astype(dtype))
    assert kv.vectors.dtype == dtype
    return kv


def _section_counts(gensim_sections) -> list[tuple[str, int, int]]:
    return [(s["section"], len(s["correct"]), len(s["incorrect"])) for s in gensim_sections]


def _ours_counts(result) -> list[tuple[str, int, int]]:
    rows = [(s.name, s.correct, s.incorrect) for s in result.sections]
    return rows + [("Total accuracy", result.total.correct, result.total.incorrect)]


def test_rankdata_and_spearman_match_scipy():
    """Own average-rank Spearman equals scipy's, with many ties."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 7, 300).astype(float)
    y = x + rng.integers(0, 4, 300)
    np.testing.assert_array_equal(rankdata(x), stats.rankdata(x))
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_analogies_equal_gensim(planted, eval_dir):
    """Every section's correct/incorrect count equals gensim's evaluate_word_analogies (3CosAdd)."""
    path = eval_dir / "questions-words.txt"
    _, g_sections = _gensim(planted).evaluate_word_analogies(str(path))
    ours = evaluate_analogies(planted, path, dtype=np.float64)
    assert _ours_counts(ours) == _section_counts(g_sections)
    assert 0.2 < ours.total.accuracy < 0.9  # the planted structure is partly recoverable: a real test
    assert ours.questions == 19544 and 0 < ours.oov < ours.questions
    assert ours.semantic.correct + ours.syntactic.correct == ours.total.correct
    f32 = evaluate_analogies(planted, path)  # default float32: same up to rare near-ties
    assert abs(f32.total.correct - ours.total.correct) <= 2


def test_analogies_restrict_vocab_and_dummy(planted, eval_dir, tmp_path):
    """restrict_vocab and dummy4unknown follow gensim (on a 30-questions-per-section subset)."""
    subset = tmp_path / "q.txt"
    lines, n = [], 0
    for line in (eval_dir / "questions-words.txt").read_text().splitlines():
        n = 0 if line.startswith(":") else n + 1
        if n <= 30:
            lines.append(line)
    subset.write_text("\n".join(lines) + "\n")
    kv = _gensim(planted)
    for kwargs in ({"restrict_vocab": len(planted) * 2 // 3}, {"dummy4unknown": True}):
        _, g_sections = kv.evaluate_word_analogies(str(subset), **kwargs)
        assert _ours_counts(
            evaluate_analogies(planted, subset, dtype=np.float64, **kwargs)
        ) == _section_counts(g_sections)


def test_3cosmul_equals_gensim_most_similar_cosmul(planted, eval_dir, tmp_path):
    """3CosMul answers equal gensim's most_similar_cosmul under the same evaluation protocol."""
    lines, n = [], 0
    for line in (eval_dir / "questions-words.txt").read_text().splitlines():
        n = 0 if line.startswith(":") else n + 1
        if n <= 25:
            lines.append(line)
    (tmp_path / "q.txt").write_text("\n".join(lines) + "\n")
    kv = _gensim(planted)
    ok = {}
    for i, t in enumerate(planted.tokens):
        ok.setdefault(t.upper(), i)
    expected, section = [], None
    for line in lines:
        if line.startswith(":"):
            section = [line[2:], 0, 0]
            expected.append(section)
            continue
        a, b, c, d = (w.upper() for w in line.split())
        if not all(w in ok for w in (a, b, c, d)):
            continue
        kv.key_to_index, original = ok, kv.key_to_index
        sims = kv.most_similar_cosmul(positive=[b, c], negative=[a], topn=5)
        kv.key_to_index = original
        predicted = next((w.upper() for w, _ in sims if w.upper() not in (a, b, c)), sims[-1][0].upper())
        section[1 if predicted == d else 2] += 1
    ours = evaluate_analogies(planted, tmp_path / "q.txt", method="3cosmul", dtype=np.float64)
    assert [(s.name, s.correct, s.incorrect) for s in ours.sections] == [tuple(s) for s in expected]
    assert ours.total.correct > 0


def _drop_reversed_pairs(src: Path, delim: str, dst: Path) -> Path:
    """Copy of a pairs file without "b a" rows that repeat an earlier "a b".

    Such a pair has exactly the cosine of its twin, and our float64 similarity keeps the tie; gensim's
    ``dot(unitvec(a), unitvec(b))`` goes through BLAS ddot whose summation order depends on the arrays'
    alignment, so it may differ by one ulp and break the tie (EN-RW-STANFORD's discovery/rediscovery moves
    rho by 3e-7).  Comparing on the copy keeps the 1e-9 bound meaningful.
    """
    seen, kept = set(), []
    for line in src.read_text().splitlines(keepends=True):
        parts = line.split(delim)
        key = frozenset(w.upper() for w in parts[:2]) if len(parts) == 3 else None
        if key is None or len(key) < 2 or key not in seen:
            kept.append(line)
        seen.add(key)
    dst.write_text("".join(kept))
    return dst


def test_reversed_pairs_tie_exactly(planted):
    """Our similarity of (a, b) equals that of (b, a) bit for bit, so Spearman sees the true tie."""
    rows = np.arange(len(planted))
    rev = np.random.default_rng(0).permutation(rows)
    np.testing.assert_array_equal(
        cosine_rows(planted.matrix, rows, rev), cosine_rows(planted.matrix, rev, rows)
    )


@pytest.mark.parametrize("name", sorted(SIMILARITY_SETS))
def test_word_pairs_equal_gensim(planted, eval_dir, name, tmp_path):
    """Spearman within 1e-9 of gensim's evaluate_word_pairs (float64), same OOV ratio; float32 within 1e-6."""
    fname, delim = SIMILARITY_SETS[name]
    path = _drop_reversed_pairs(eval_dir / fname, delim, tmp_path / fname)
    ours = evaluate_word_pairs(planted, path, delimiter=delim)
    pearson, spear, oov_ratio = _gensim(planted).evaluate_word_pairs(str(path), delimiter=delim)
    assert ours.spearman == pytest.approx(spear.statistic, abs=1e-9)
    assert ours.pearson == pytest.approx(pearson.statistic, abs=1e-9)
    assert ours.oov_ratio == pytest.approx(oov_ratio, abs=1e-12)
    assert ours.oov > 0 and ours.pairs > 100
    _, spear32, _ = _gensim(planted, np.float32).evaluate_word_pairs(str(path), delimiter=delim)
    assert ours.spearman == pytest.approx(spear32.statistic, abs=1e-6)
    if name == "men":
        assert ours.invalid == 1  # the "word1 word2 score" header
    dummy = evaluate_word_pairs(planted, path, delimiter=delim, dummy4unknown=True)
    _, spear_d, oov_d = _gensim(planted).evaluate_word_pairs(str(path), delimiter=delim, dummy4unknown=True)
    assert dummy.spearman == pytest.approx(spear_d.statistic, abs=1e-9)
    assert dummy.oov_ratio == pytest.approx(oov_d, abs=1e-12)


def test_evaluate_all_reports_every_set(planted, eval_dir):
    out = evaluate_all(planted, eval_dir)
    assert set(out) == set(SIMILARITY_SETS) | {"analogy_3cosadd", "analogy_3cosmul"}
    assert out["analogy_3cosadd"]["questions"] == 19544
