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
    METHODS,
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


def _reference_3cosadd(vectors: Vectors, path: Path, restrict_vocab: int = 300_000) -> list[tuple[str, int, int]]:
    """gensim's rule question by question, brute force: the whole score row of each question (float32, as
    gensim's ``dot(vectors, mean) / norms``), its 5 best rows by repeated argmax (a, b, c excluded), the first
    whose upper-cased token is none of a, b, c, else the fifth."""
    n = min(restrict_vocab, len(vectors))
    m = np.asarray(vectors.matrix[:n], dtype=np.float32)
    norms = np.linalg.norm(m, axis=1)
    norms[norms == 0] = 1.0
    unit = m / norms[:, None]
    ok: dict[str, int] = {}
    for i, t in enumerate(vectors.tokens[:n]):
        ok.setdefault(t.upper(), i)
    out, section = [], None
    for line in path.read_text().splitlines():
        if line.startswith(": "):
            section = [line[2:].strip(), 0, 0]
            out.append(section)
            continue
        k = [w.upper() for w in line.split()]
        if len(k) != 4 or not all(w in ok for w in k):
            continue
        a, b, c = (unit[ok[w]] for w in k[:3])
        mean = ((b + c) - a).astype(np.float64) / 3.0
        scores = (m @ (mean / np.linalg.norm(mean)).astype(np.float32)) / norms
        scores[[ok[w] for w in k[:3]]] = -np.inf
        predicted = None
        for _ in range(5):
            row = int(scores.argmax())
            if np.isneginf(scores[row]):
                break
            scores[row] = -np.inf
            predicted = vectors.tokens[row].upper()
            if predicted not in k[:3]:
                break
        section[1 if predicted == k[3] else 2] += 1
    return [tuple(s) for s in out]


def test_float32_analogies_equal_the_brute_force_rule_and_gensim(planted, eval_dir):
    """Default (float32, tiled top-1 search): the same counts as gensim's rule applied question by question
    with whole score rows, and as gensim's own float32 evaluate_word_analogies."""
    path = eval_dir / "questions-words.txt"
    ours = evaluate_analogies(planted, path)
    assert [(s.name, s.correct, s.incorrect) for s in ours.sections] == _reference_3cosadd(planted, path)
    _, g_sections = _gensim(planted, np.float32).evaluate_word_analogies(str(path))
    assert _ours_counts(ours) == _section_counts(g_sections)


def test_tile_and_batch_sizes_do_not_change_the_answers(planted, eval_dir, monkeypatch):
    """Small tiles and question batches (many column tiles, ties across tile edges) give the same counts."""
    import lmpipe.embeddings.evaluate as ev

    path = eval_dir / "questions-words.txt"
    for method in METHODS:
        whole = evaluate_analogies(planted, path, method=method, dtype=np.float64)
        monkeypatch.setattr(ev, "_TILE", 997)
        tiled = evaluate_analogies(planted, path, method=method, dtype=np.float64, batch_size=333)
        monkeypatch.undo()
        assert _ours_counts(tiled) == _ours_counts(whole)


@pytest.mark.parametrize("variants", [3, 6])
def test_case_variants_outranking_the_answer_follow_gensim(tmp_path, variants):
    """Rows whose upper-cased token is one of a, b, c are skipped among gensim's top 5: with 3 such variants
    above the answer it is still found, with 6 the fifth candidate (a variant) is the wrong answer."""
    rng = np.random.default_rng(3)
    base = {w: rng.normal(size=16) for w in ("man", "woman", "king", "paris", "france", "rome", "italy")}
    base["queen"] = base["king"] - base["man"] + base["woman"] + rng.normal(size=16) * 0.3
    base["rome"] = base["paris"] - base["france"] + base["italy"] + rng.normal(size=16) * 0.3
    mean = base["king"] - base["man"] + base["woman"]
    tokens, rows = list(base), list(base.values())
    for i in range(variants):  # near-copies of the query direction, cased variants of "king"
        tokens.append("".join(ch.upper() if (i + 1) >> j & 1 else ch for j, ch in enumerate("king")))
        rows.append(mean + rng.normal(size=16) * 0.01)
    vectors = Vectors(tokens, np.stack(rows).astype(np.float32), source="hand-made")
    path = tmp_path / "q.txt"
    path.write_text(": s\nman king woman queen\nfrance paris italy rome\n")
    ours = evaluate_analogies(vectors, path, dtype=np.float64)
    _, g_sections = _gensim(vectors).evaluate_word_analogies(str(path))
    assert _ours_counts(ours) == _section_counts(g_sections)
    assert ours.sections[0].correct == (2 if variants < 5 else 1)


def test_analogy_memory_is_bounded_by_the_tile_not_the_vocabulary(eval_dir):
    """Answering ~19k questions over 60k candidate rows never allocates a (batch x vocabulary) score matrix:
    numpy's allocations (traced by tracemalloc) stay far below one 1024 x 60k float32 block (246 MB)."""
    import tracemalloc

    words, _ = _eval_words(eval_dir)
    n = 60_000
    tokens = words + [f"filler{i}" for i in range(n - len(words))]
    vectors = Vectors(tokens, np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32), source="random")
    for method in METHODS:
        tracemalloc.start()
        evaluate_analogies(vectors, eval_dir / "questions-words.txt", method=method)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < 64 * 2**20, f"{method}: peak {peak / 2**20:.0f} MB"
