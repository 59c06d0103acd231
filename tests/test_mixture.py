"""Mixtures (EM, grid, context bins), per-token score files, the paired bootstrap and the mix stage, against
closed forms and sampled data with known answers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from lmpipe.lm.bootstrap import paired_bootstrap
from lmpipe.lm.mixture import MixtureWeights, apply, fit_em, grid_weights, mix_log10
from lmpipe.lm.token_scores import TokenScores, check_same_stream, read_token_scores, write_token_scores
from lmpipe.pipelines.core.vocab import Vocab
from lmpipe.pipelines.run_scores import find_token_scores
from lmpipe.pipelines.spec import SpecError, parse_spec

V = 40


def _sampled(n_tokens: int, lam, seed: int = 0, per_bin=None):
    """Tokens drawn from lam * p1 + (1 - lam) * p2 (lam per context bin when ``per_bin``), scored by p1 and p2."""
    rng = np.random.default_rng(seed)
    p1, p2 = rng.dirichlet(np.full(V, 0.3)), rng.dirichlet(np.full(V, 0.3))
    bins = rng.integers(0, len(per_bin), n_tokens) if per_bin is not None else np.zeros(n_tokens, np.int64)
    lam_t = np.asarray(per_bin)[bins] if per_bin is not None else np.full(n_tokens, lam)
    from_first = rng.random(n_tokens) < lam_t
    tokens = np.where(from_first, rng.choice(V, n_tokens, p=p1), rng.choice(V, n_tokens, p=p2)).astype(
        np.uint32
    )
    sentence = (np.arange(n_tokens) // 10).astype(np.uint32)
    oov = np.zeros(n_tokens, bool)

    def scores(p):
        return TokenScores(sentence, tokens, np.log10(p[tokens]), oov)

    return scores(p1), scores(p2), bins


def test_em_recovers_the_weight_of_a_sampled_mixture():
    a, b, _ = _sampled(40_000, 0.3)
    fitted = fit_em({"a": a, "b": b})
    assert fitted.weights[0, 0] == pytest.approx(0.3, abs=0.02)
    assert all(
        y >= x - 1e-9 for x, y in zip(fitted.history, fitted.history[1:], strict=False)
    )  # EM never worsens
    grid = grid_weights({"a": a, "b": b}, steps=100)
    assert grid.weights[0, 0] == pytest.approx(fitted.weights[0, 0], abs=0.011)  # the grid's optimum agrees
    assert fitted.log10_likelihood >= grid.log10_likelihood - 1e-6


def test_context_bins_get_their_own_weights():
    a, b, bins = _sampled(60_000, None, seed=1, per_bin=[0.8, 0.2])
    prev_counts = np.where(bins == 0, 5, 500)  # bin 0: rare context (< 100), bin 1: frequent
    fitted = fit_em({"a": a, "b": b}, prev_counts=prev_counts, bins=[100])
    assert fitted.weights[:, 0] == pytest.approx([0.8, 0.2], abs=0.03)
    single = fit_em({"a": a, "b": b})
    assert fitted.log10_likelihood > single.log10_likelihood


def test_mixture_of_a_model_with_itself_is_the_model():
    a, _, _ = _sampled(1000, 0.5)
    mixed = apply({"a": a, "a2": a}, MixtureWeights(("a", "a2"), np.array([[0.37, 0.63]])))
    np.testing.assert_allclose(mixed.log10_prob, a.log10_prob, rtol=0, atol=1e-12)
    assert mixed.corpus_score().perplexity() == pytest.approx(a.corpus_score().perplexity(), rel=1e-12)


def test_mix_log10_is_the_weighted_sum_of_probabilities():
    a, b, _ = _sampled(500, 0.5)
    expected = np.log10(0.25 * 10**a.log10_prob + 0.75 * 10**b.log10_prob)
    np.testing.assert_allclose(mix_log10([a, b], np.array([[0.25, 0.75]])), expected, rtol=1e-12)
    tiny = TokenScores(
        a.sentence, a.token, np.full(len(a), -400.0), a.oov
    )  # 1e-400 underflows in linear space
    assert np.isfinite(mix_log10([tiny, tiny], np.array([[0.5, 0.5]]))).all()


def test_weights_and_streams_are_checked():
    with pytest.raises(ValueError, match="sum to 1"):
        MixtureWeights(("a", "b"), np.array([[0.5, 0.6]]))
    with pytest.raises(ValueError, match="non-negative"):
        MixtureWeights(("a", "b"), np.array([[-0.1, 1.1]]))
    a, b, _ = _sampled(100, 0.5)
    shifted = TokenScores(a.sentence, (a.token + 1).astype(np.uint32), a.log10_prob, a.oov)
    with pytest.raises(ValueError, match="predict different tokens .* first at token 0"):
        check_same_stream({"a": a, "shifted": shifted})
    with pytest.raises(ValueError, match="scored 100 tokens and short 99"):
        check_same_stream(
            {"a": a, "short": TokenScores(a.sentence[:-1], a.token[:-1], a.log10_prob[:-1], a.oov[:-1])}
        )
    with pytest.raises(ValueError, match="two or more models"):
        fit_em({"a": a})


@pytest.mark.parametrize(
    "mixture, message",
    [
        ({"models": ["kn5"]}, "two or more different model names"),
        ({"models": ["kn5", "lstm"], "method": "fixed"}, "2 weights for method fixed"),
        ({"models": ["kn5", "lstm"], "method": "fixed", "weights": [0.5, 0.6]}, "summing to 1"),
        ({"models": ["kn5", "lstm"], "weights": [0.5, 0.5]}, "no weights unless method is fixed"),
        ({"models": ["a", "b", "c"], "method": "grid"}, "grid is for two"),
        ({"models": ["a", "b"], "context_bins": [100, 10]}, "increasing positive counts"),
        ({"models": ["a", "b"], "name": "../../etc"}, "mix.mixtures\\[0\\].name"),
        ({"models": ["a", "../b"]}, "a model name of the run"),
    ],
)
def test_mix_spec_errors(mixture, message):
    with pytest.raises(SpecError, match=message):
        parse_spec({"name": "x", "corpus": {"train": "t.txt"}, "mix": {"mixtures": [mixture]}})


def test_token_scores_file_round_trip(tmp_path):
    a, _, _ = _sampled(3000, 0.5)
    write_token_scores(tmp_path / "s" / "test.arrow", a)
    back = read_token_scores(tmp_path / "s" / "test.arrow")
    for field in ("sentence", "token", "log10_prob", "oov"):
        np.testing.assert_array_equal(getattr(back, field), getattr(a, field))
    assert not list((tmp_path / "s").glob(".*tmp*"))
    assert back.sentences == 300
    sums, counts = back.per_sentence()
    assert counts.sum() == 3000 and sums.sum() == pytest.approx(a.log10_prob.sum())
    prev = TokenScores(
        np.array([0, 0, 0, 1, 1], np.uint32),
        np.array([5, 6, 2, 7, 2], np.uint32),
        np.zeros(5),
        np.zeros(5, bool),
    ).previous_tokens(bos_id=1)
    assert prev.tolist() == [1, 5, 6, 1, 7]


def test_bootstrap_interval_covers_the_population_difference():
    """Test sets of 150 sentences drawn from a population with a known perplexity difference: the 90% interval
    covers it in about 90% of the draws."""
    rng = np.random.default_rng(7)
    pop = 20_000
    lengths = rng.integers(5, 25, pop)
    sums_a = -rng.gamma(4.0, 0.5, pop) * lengths  # log10 sums per sentence
    sums_b = sums_a + rng.normal(0.08, 0.6, pop) * lengths / 10
    true = 10 ** (-sums_a.sum() / lengths.sum()) - 10 ** (-sums_b.sum() / lengths.sum())
    covered = 0
    trials = 60
    for t in range(trials):
        pick = rng.integers(0, pop, 150)
        sentence = np.repeat(np.arange(150), lengths[pick]).astype(np.uint32)
        token = np.zeros(len(sentence), np.uint32)
        # spread each sentence's sum evenly over its tokens (only sums matter for whole-corpus perplexity)
        per_a = np.repeat(sums_a[pick] / lengths[pick], lengths[pick])
        per_b = np.repeat(sums_b[pick] / lengths[pick], lengths[pick])
        oov = np.zeros(len(sentence), bool)
        r = paired_bootstrap(
            TokenScores(sentence, token, per_a, oov),
            TokenScores(sentence, token, per_b, oov),
            samples=400,
            confidence=0.9,
            seed=t,
        )
        assert r.low <= r.difference <= r.high
        covered += r.low <= true <= r.high
    assert 0.78 <= covered / trials <= 0.98


def _fake_run(run: Path, models: dict[str, tuple[TokenScores, TokenScores]]) -> None:
    """A run with a tokenize manifest + vocab and a scoring stage listing the models' token scores."""
    (run / "tokenize").mkdir(parents=True)
    Vocab(
        pa.array(["<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(3, V)]),
        np.arange(V, dtype=np.uint64) * 10,
    ).save(run / "tokenize" / "vocab.tsv")
    (run / "tokenize" / "manifest.json").write_text(
        json.dumps({"stage": "tokenize", "status": "complete", "fingerprint": "tok", "sources": []})
    )
    (run / "ngram").mkdir()
    listed = {}
    for name, (valid, test) in models.items():
        write_token_scores(run / "ngram" / f"scores/{name}/valid.arrow", valid)
        write_token_scores(run / "ngram" / f"scores/{name}/test.arrow", test)
        listed[name] = {"valid": f"scores/{name}/valid.arrow", "test": f"scores/{name}/test.arrow"}
    manifest = {"stage": "ngram", "status": "complete", "fingerprint": "fp-ngram", "inputs": {"tokenize": "tok"},
                "settings": {"order": 5}, "outputs": {"ngrams": {}}, "perplexity": {}, "token_scores": listed}  # fmt: skip
    (run / "ngram" / "manifest.json").write_text(json.dumps(manifest))


def test_mix_stage_and_cli(tmp_path, capsys):
    from lmpipe.pipelines.cli import main
    from lmpipe.pipelines.report_rows import collect, compare

    a_valid, b_valid, _ = _sampled(8000, 0.4, seed=3)
    a_test, b_test, _ = _sampled(8000, 0.4, seed=3)
    run = tmp_path / "run"
    _fake_run(run, {"kn": (a_valid, a_test), "rnn": (b_valid, b_test)})
    (run / "spec.yaml").write_text("name: fake\ncorpus: {train: t.txt}\n")
    assert set(find_token_scores(run)) == {"kn", "rnn"}
    assert main(["mix", str(run), "--models", "kn,rnn", "--bootstrap", "200"]) == 0
    assert "kn+rnn: test perplexity" in capsys.readouterr().out
    manifest = json.loads((run / "mix" / "manifest.json").read_text())
    entry = manifest["mixtures"]["kn+rnn"]
    lam = entry["weights"]["weights"][0][0]
    assert lam == pytest.approx(0.4, abs=0.05)
    test_ppl = entry["perplexity"]["test"]["perplexity"]
    assert test_ppl < min(entry["components"]["test"].values())  # the mixture beats both components
    expected = 10 ** (-mix_log10([a_test, b_test], np.array([[lam, 1 - lam]])).sum() / len(a_test))
    assert test_ppl == pytest.approx(expected, rel=1e-4)  # weights are rounded to 6 digits in the manifest
    assert entry["bootstrap"]["kn"]["high"] < 0  # significantly better than each component
    rows = compare(collect(run))  # the mixture's rows reach the report (and name their scores file)
    assert rows[0].model == "kn+rnn" and rows[0].family == "mixture" and "weights kn" in rows[0].details
    assert main(["compare", str(run), "--ci", "kn+rnn", "kn", "--bootstrap", "100"]) == 0
    assert "ppl(kn+rnn) - ppl(kn) on test" in capsys.readouterr().out
    assert main(["mix", str(run), "--models", "kn,nope"]) == 2  # a user error: one line, no traceback
    assert "model 'nope' of mixture 'kn+nope' has no token scores" in capsys.readouterr().err
    assert main(["mix", str(run), "--models", "kn,rnn", "--tune", "test"]) == 2


def test_ngram_probabilities_sum_to_one_over_the_vocabulary(kenlm_bin, tmp_path):
    """KenLM's scores of a Kneser-Ney ARPA: for several contexts, p(w | h) summed over the vocabulary
    (words, </s>, <unk>) is 1 -- the property every model of a mixture must have."""
    import kenlm

    from lmpipe.lm.kenlm_tools import run_lmplz

    del kenlm_bin
    lines = ["a b c a", "b c d", "a c d b", "d d a", "c a b", "e a b c", "b e"] * 3
    words = sorted({w for s in lines for w in s.split()})
    path = tmp_path / "m.arpa"
    run_lmplz(lines, 3, path, extra_args=["--discount_fallback"])
    model = kenlm.Model(str(path))
    for context in (["a"], ["b", "c"], ["d", "d"], ["zzz"]):
        total = 0.0
        for w in [*words, "</s>", "<unk>"]:
            state, out = kenlm.State(), kenlm.State()
            model.BeginSentenceWrite(state)
            for c in context:
                nxt = kenlm.State()
                model.BaseScore(state, c, nxt)
                state = nxt
            total += 10 ** model.BaseScore(state, w, out)
        assert total == pytest.approx(1.0, abs=1e-4), context
    assert math.isfinite(total)
