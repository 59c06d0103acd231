"""KenLM's accounting: lm.perplexity/pipelines.evaluate equal what KenLM's ``query`` prints for the same text."""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest

from lmpipe.lm.perplexity import CorpusScore, load_kenlm, score_sentences_kenlm


def test_corpus_score_is_whole_corpus_not_a_mean_of_sentences():
    score = CorpusScore()
    score.add([-1.0, -1.0], [False, False])  # sentence 1: ppl 10
    score.add([-3.0, -3.0, -3.0, -3.0], [False, True, False, False])  # sentence 2: ppl 1000
    assert score.tokens == 6 and score.sentences == 2 and score.oov == 1
    assert score.perplexity() == pytest.approx(10 ** (14 / 6))
    assert score.perplexity() != pytest.approx((10 + 1000) / 2)
    assert score.perplexity_excluding_oov() == pytest.approx(10 ** (11 / 5))
    half = CorpusScore()
    half.add_natural(np.array([-1.0, -1.0]) * np.log(10), [False, False])
    assert half.merge(CorpusScore(-12.0, 4, 1, 1, -3.0)).perplexity() == pytest.approx(score.perplexity())


def _query_summary(query_bin, model, text: str) -> dict[str, float]:
    out = subprocess.run([str(query_bin), "-v", "summary", str(model)], input=text, capture_output=True, text=True, check=True)
    found = {}
    for key, pattern in {
        "ppl": r"Perplexity including OOVs:\s+([\d.e+-]+)",
        "ppl_excl": r"Perplexity excluding OOVs:\s+([\d.e+-]+)",
        "oov": r"OOVs:\s+(\d+)",
        "tokens": r"Tokens:\s+(\d+)",
    }.items():
        match = re.search(pattern, out.stdout + out.stderr)
        assert match, f"query printed no {key}: {out.stdout!r}"
        found[key] = float(match.group(1))
    return found


@pytest.mark.kenlm
def test_equals_kenlm_query_on_an_oov_heavy_test_set(tmp_path, kenlm_bin):
    train = "\n".join(["the cat sat on the mat", "the dog sat on the log", "a cat and a dog", "the mat is on the log"] * 5)
    (tmp_path / "train.txt").write_text(train + "\n")
    arpa = tmp_path / "m.arpa"
    subprocess.run(
        [str(kenlm_bin / "lmplz"), "-o", "3", "--discount_fallback", "-S", "100M", "-T", str(tmp_path), "--arpa", str(arpa)],
        stdin=open(tmp_path / "train.txt"),
        capture_output=True,
        check=True,
    )
    test = ["the cat sat on the zebra", "unknown words everywhere here", "a dog", "the mat"]
    model = load_kenlm(arpa)
    ours = score_sentences_kenlm(model, test)
    ref = _query_summary(kenlm_bin / "query", arpa, "\n".join(test) + "\n")
    assert ours.tokens == ref["tokens"] == sum(len(s.split()) + 1 for s in test)
    assert ours.oov == ref["oov"] == 5  # zebra + the four words of the second sentence
    assert ours.perplexity() == pytest.approx(ref["ppl"], rel=1e-5)
    assert ours.perplexity_excluding_oov() == pytest.approx(ref["ppl_excl"], rel=1e-5)


@pytest.mark.kenlm
def test_sentence_totals_and_word_windows_are_full_scores_bit_for_bit(tmp_path, kenlm_bin):
    """``Model.score`` is the float32 running sum of ``full_scores``; a word's log10 p from a window of the
    order - 1 words before it (``<s>`` when the window reaches the start) is its ``full_scores`` value."""
    from lmpipe.lm.perplexity import kenlm_last_word_scores, kenlm_sentence_details, kenlm_sentence_totals

    rng = np.random.default_rng(0)
    words = "the cat sat on mat dog log a and is".split()
    train = [" ".join(rng.choice(words, size=rng.integers(3, 12))) for _ in range(300)]
    (tmp_path / "train.txt").write_text("\n".join(train) + "\n")
    arpa = tmp_path / "m.arpa"
    subprocess.run(
        [str(kenlm_bin / "lmplz"), "-o", "4", "--discount_fallback", "-S", "100M", "-T", str(tmp_path), "--arpa", str(arpa)],
        stdin=open(tmp_path / "train.txt"), capture_output=True, check=True,
    )  # fmt: skip
    model = load_kenlm(arpa)
    test = [list(rng.choice(words + ["zebra", "<unk>"], size=rng.integers(1, 15))) for _ in range(200)]
    totals = kenlm_sentence_totals(model, [" ".join(s).encode() for s in test], len(test))
    windows, bos, want = [], [], []
    for sentence, total in zip(test, totals, strict=True):
        full = list(model.full_scores(" ".join(sentence), bos=True, eos=True))
        acc = np.float32(0.0)
        for lp, _, _ in full:
            acc = np.float32(acc + np.float32(lp))
        assert total == float(acc)
        assert kenlm_sentence_details(model, " ".join(sentence)) == (float(acc), sum(f[2] for f in full), sum(f[0] for f in full if f[2]))
        for k in range(len(sentence)):
            first = max(0, k - (model.order - 1))
            windows.append(" ".join(sentence[first : k + 1]).encode())
            bos.append(first == 0)
            want.append(full[k][0])
    assert kenlm_last_word_scores(model, windows, np.array(bos)).tolist() == want
