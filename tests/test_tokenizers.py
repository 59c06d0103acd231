"""Tokenizers against hand-computed expectations, and the literal-specials policies."""

from __future__ import annotations

import pyarrow as pa
import pytest

from lmpipe.pipelines.spec import TokenizerSpec
from lmpipe.pipelines.tokenizers import (
    SentencePieceTokenizer,
    filter_list_values,
    handle_literal_specials,
    make_tokenizer,
    train_sentencepiece,
)


def _tok(kind, lines, **kw):
    return make_tokenizer(TokenizerSpec(kind=kind, **kw)).tokens(pa.array(lines, pa.string())).to_pylist()


def test_whitespace_splits_runs_of_unicode_whitespace_and_trims():
    lines = [" aer banknote  berlitz ", "a\tb\u00a0c", "x"]
    assert _tok("whitespace", lines) == [["aer", "banknote", "berlitz"], ["a", "b", "c"], ["x"]]


def test_regex_default_keeps_inner_hyphens_and_apostrophes_and_splits_punctuation():
    assert _tok("regex", ["Don't stop-gap, ok?!"]) == [["Don't", "stop-gap", ",", "ok", "?", "!"]]
    assert _tok("regex", ["a1 b_2"], pattern=r"[a-z]") == [["a", "b"]]


def test_char_marks_whitespace_runs_with_one_space_token():
    assert _tok("char", ["ab  c", " é "]) == [["a", "b", "\u2581", "c"], ["é"]]


@pytest.mark.parametrize(
    ("policy", "expected", "first_bad"),
    [
        ("rename", [["a", "[unk]", "b"], ["[s]", "c", "[/s]"]], None),
        ("map", [["a", "<unk>", "b"], ["c"]], None),
        ("error", [["a", "<unk>", "b"], ["<s>", "c", "</s>"]], 0),
    ],
)
def test_literal_specials_policies(policy, expected, first_bad):
    tokens = pa.array([["a", "<unk>", "b"], ["<s>", "c", "</s>"]], pa.list_(pa.string()))
    out, counts, bad = handle_literal_specials(tokens, policy)
    assert out.to_pylist() == expected
    assert bad == first_bad
    if policy == "map":
        assert counts["specials_dropped"] == 2 and counts["specials_mapped_unk"] == 1
    if policy == "rename":
        assert counts["specials_renamed"] == 3


def test_error_policy_points_at_the_first_offending_line():
    tokens = pa.array([["ok"], ["fine"], ["x", "</s>"]], pa.list_(pa.string()))
    assert handle_literal_specials(tokens, "error")[2] == 2


def test_filter_list_values_on_a_sliced_array():
    arr = pa.array([[1, 2], [3], [4, 5, 6], []], pa.list_(pa.int64())).slice(1, 3)
    out = filter_list_values(arr, __import__("numpy").array([True, False, True, True]))
    assert out.to_pylist() == [[3], [5, 6], []]


def test_sentencepiece_is_deterministic_and_uses_lmpipe_special_ids():
    lines = [f"the quick brown fox {i} jumps over the lazy dog number {i % 7}" for i in range(300)]
    spec = TokenizerSpec(kind="sentencepiece", sp_vocab_size=60, sp_model_type="bpe")
    model_a, model_b = train_sentencepiece(lines, spec), train_sentencepiece(lines, spec)
    assert model_a == model_b
    tok = SentencePieceTokenizer(model_a)
    assert tok.pieces()[:3] == ["<unk>", "<s>", "</s>"]
    ids = tok.ids(pa.array(["the lazy dog"])).to_pylist()[0]
    assert ids and all(i >= 3 for i in ids)
    pieces = tok.tokens(pa.array(["the lazy dog"])).to_pylist()[0]
    assert "".join(pieces).replace("\u2581", " ").strip() == "the lazy dog"
    # travels to Ray actors as its proto bytes
    clone = __import__("pickle").loads(__import__("pickle").dumps(tok))
    assert clone.ids(pa.array(["the lazy dog"])).to_pylist()[0] == ids
