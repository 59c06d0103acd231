"""lmpipe's C++ KenLM scorer (``lm/native/kenlm_lines.cc`` via ``lm.kenlm_native``) against the independent
reference, the ``kenlm`` module: per line ``Model.score``'s float32 total bit for bit, the OOV count and sum
``full_scores`` reports, every token's ``full_scores`` value, for an ARPA and each binary kind; and the
``NgramScorer`` written records equal with and without the library."""

from __future__ import annotations

import subprocess

import numpy as np
import pyarrow as pa
import pytest

from lmpipe.lm.kenlm_native import NativeScorerError, library_path, open_native
from lmpipe.lm.kenlm_tools import cache_bin_dir

WORDS = "the cat sat on mat dog log a and is".split()


@pytest.fixture(scope="module")
def models(tmp_path_factory, kenlm_bin):
    """A 4-gram ARPA from lmplz and its probing, trie and quantised trie binaries."""
    if library_path() is None:
        pytest.skip("lmpipe's KenLM scorer is not built (make kenlm)")
    tmp = tmp_path_factory.mktemp("native")
    rng = np.random.default_rng(0)
    train = [" ".join(rng.choice(WORDS, size=rng.integers(3, 12))) for _ in range(400)]
    (tmp / "train.txt").write_text("\n".join(train) + "\n")
    arpa = tmp / "m.arpa"
    with open(tmp / "train.txt", "rb") as text:
        subprocess.run(
            [str(kenlm_bin / "lmplz"), "-o", "4", "--discount_fallback", "-S", "100M", "-T", str(tmp), "--arpa", str(arpa)],
            stdin=text, capture_output=True, check=True,
        )  # fmt: skip
    paths = {"arpa": arpa}
    for kind, args in (("probing", ["probing"]), ("trie", ["trie"]), ("quant", ["-q", "8", "-b", "8", "trie"])):
        paths[kind] = tmp / f"m.{kind}"
        subprocess.run([str(kenlm_bin / "build_binary"), *args, str(arpa), str(paths[kind])], capture_output=True, check=True)
    return paths


def _test_lines(rng) -> list[list[str]]:
    vocab = WORDS + ["zebra", "<unk>", "qu\u00e9", "<s>"]
    lines = [list(rng.choice(vocab, size=rng.integers(1, 15))) for _ in range(300)]
    # a token holding whitespace is several KenLM words, as the joined line Model.score splits
    lines += [["the", "cat\x0bsat", "on"], ["a", " dog "], ["NUL\x00word", "mat"]]
    return lines


@pytest.mark.kenlm
@pytest.mark.parametrize("kind", ["arpa", "probing", "trie", "quant"])
def test_line_sums_and_token_scores_are_the_kenlm_modules_bit_for_bit(models, kind):
    import kenlm

    reference = kenlm.Model(str(models[kind]))
    native = open_native(models[kind])
    assert native.order == reference.order == 4
    lines = _test_lines(np.random.default_rng(1))
    total, oov, oov_log10 = native.line_sums(pa.array(lines, pa.list_(pa.string())))
    want_tokens = []
    for i, tokens in enumerate(lines):
        joined = " ".join(tokens)
        full = list(reference.full_scores(joined, bos=True, eos=True))
        want_tokens += full
        if "\x00" not in joined:  # Model.score reads a C string; full_scores (and query) read the whole word
            assert total[i] == reference.score(joined), (i, tokens)
        acc = np.float32(0.0)
        for lp, _, _ in full:
            acc = np.float32(acc + np.float32(lp))
        assert total[i] == float(acc)
        assert oov[i] == sum(f[2] for f in full)
        assert oov_log10[i] == sum(f[0] for f in full if f[2])
    log10, is_oov = native.token_scores(pa.array(lines))
    assert log10.tolist() == [f[0] for f in want_tokens]
    assert is_oov.tolist() == [f[2] for f in want_tokens]
    assert ("cat" in native) and ("zebra" not in native) and ("<unk>" not in native)


@pytest.mark.kenlm
def test_sliced_large_and_empty_batches(models):
    native = open_native(models["probing"])
    lines = pa.array(_test_lines(np.random.default_rng(2)))
    whole = native.line_sums(lines)
    for got, want in zip(native.line_sums(lines.slice(7, 50)), whole, strict=True):
        assert np.array_equal(got, want[7:57])
    large = pa.array(lines.to_pylist(), pa.list_(pa.large_string()))
    assert all(np.array_equal(a, b) for a, b in zip(native.line_sums(large), whole, strict=True))
    empty = native.line_sums(lines.slice(0, 0))
    assert [len(a) for a in empty] == [0, 0, 0]
    assert [len(a) for a in native.token_scores(lines.slice(0, 0))] == [0, 0]


@pytest.mark.kenlm
def test_a_file_kenlm_cannot_read_is_one_named_error(models, tmp_path):
    bad = tmp_path / "bad.arpa"
    bad.write_text("this is not an ARPA file\n")
    with pytest.raises(NativeScorerError, match="bad.arpa: KenLM cannot read this model"):
        open_native(bad)


@pytest.mark.kenlm
def test_make_kenlm_builds_the_scorer_beside_the_tools(kenlm_bin):
    """Where .ci/build_kenlm.sh installed the tools it also built the scorer for this source."""
    if kenlm_bin != cache_bin_dir():
        pytest.skip("KenLM's tools come from elsewhere than make kenlm's cache")
    assert library_path() is not None


def test_the_library_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("LMPIPE_KENLM_NATIVE", "0")
    assert library_path() is None and open_native("any.arpa") is None


@pytest.mark.kenlm
def test_text_sums_split_every_code_point_as_the_whitespace_tokenizer(models):
    """The C++ split of whole lines against Arrow's (``WhitespaceTokenizer``), for every Unicode code point as a
    separator and at both ends, then the sums against the token path's, bit for bit."""
    import pyarrow.compute as pc

    from lmpipe.pipelines.tokenizers import WhitespaceTokenizer

    native = open_native(models["probing"])
    points = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    lines = [f"the{chr(c)}cat" for c in points] + [f"{chr(c)}a dog{chr(c)}" for c in points]
    lines += ["the <unk> cat", "</s> a", "<s>", "NUL\x00word is", "tab\tsep\x0bvt"]
    text = pa.array(lines, pa.string())  # no blank line: ingest.read_chunk removes those before tokenizing
    tokens = WhitespaceTokenizer().tokens(text)
    total, oov, oov_log10, words, special = native.text_sums(text)
    assert np.array_equal(words, np.asarray(pc.list_value_length(tokens)))
    for got, expected in zip((total, oov, oov_log10), native.line_sums(tokens), strict=True):
        assert np.array_equal(got, expected)
    assert np.flatnonzero(special).tolist() == [len(lines) - 5, len(lines) - 4, len(lines) - 3]
    assert native.text_sums(pa.array(["  \u3000", "\u00a0"]))[3].tolist() == [0, 0]
    sliced = native.text_sums(text.slice(5, 100))
    assert all(np.array_equal(a, b[5:105]) for a, b in zip(sliced, (total, oov, oov_log10, words, special), strict=True))
