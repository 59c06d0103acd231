"""Spec parsing: every validation error names file, key path, bad value and allowed values."""

from __future__ import annotations

import pytest
import yaml

from lmpipe.pipelines.spec import RunSpec, SpecError, dump_spec, load_spec, parse_spec

from .conftest import SPECS

BASE = {"name": "t", "corpus": {"train": "a.txt"}}


def _parse(overrides=(), data=None):
    return parse_spec(data or BASE, source="t.yaml", overrides=overrides)


def test_shipped_specs_are_valid():
    for path in SPECS.glob("*.yaml"):
        spec = load_spec(path)
        assert isinstance(spec, RunSpec)
        assert spec.stages[0] == "tokenize"


def test_relative_paths_resolve_beside_the_spec_file():
    spec = load_spec(SPECS / "tiny.yaml")
    assert spec.corpus.train == (str(SPECS / "tiny" / "train.txt"),)
    ptb = load_spec(SPECS / "ptb.yaml")
    assert ptb.corpus.train == ("data:ptb/train",)


def test_set_overrides_any_value_as_yaml():
    spec = _parse(["vocab.max_size=null", "vocab.min_count=3", "ngram.prune=[0, 1, 1]", "tokenizer.kind=char"])
    assert spec.vocab.max_size is None and spec.vocab.min_count == 3
    assert spec.ngram.prune == (0, 1, 1)
    assert spec.tokenizer.kind == "char"
    spec = _parse(["corpus.train=other.txt", "corpus.valid=[v1.txt, v2.txt]"])
    assert spec.corpus.train == ("other.txt",) and spec.corpus.valid == ("v1.txt", "v2.txt")


def test_dump_round_trips():
    spec = load_spec(SPECS / "ptb.yaml", overrides=["ngram.order=3"])
    again = parse_spec(yaml.safe_load(dump_spec(spec)))
    assert again == spec


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("vocab.min_count=0", "vocab.min_count: bad value 0"),
        ("vocab.max_size=2", "vocab.max_size: bad value 2"),
        ("vocab.min_count=many", "vocab.min_count: bad value 'many'; allowed: an integer"),
        ("tokenizer.kind=bpe", "tokenizer.kind: bad value 'bpe'; allowed: one of 'whitespace', 'regex', 'char', 'sentencepiece'"),
        ("tokenizer.pattern=(", "tokenizer.pattern: bad value '('"),
        ("tokenizer.sp_vocab_size=2", "tokenizer.sp_vocab_size: bad value 2"),
        ("normalize.encoding_errors=ignore", "normalize.encoding_errors: bad value 'ignore'; allowed: one of 'replace', 'strict'"),
        ("normalize.literal_specials=keep", "normalize.literal_specials: bad value 'keep'"),
        ("normalize.lowercase=yes please", "normalize.lowercase: bad value 'yes please'; allowed: true or false"),
        ("normalize.max_line_bytes=0", "normalize.max_line_bytes: bad value 0"),
        ("corpus.format=xml", "corpus.format: bad value 'xml'"),
        ("corpus.documents=page", "corpus.documents: bad value 'page'"),
        ("corpus.train=[]", "corpus.train: bad value ()"),
        ("tokenize.workers=0", "tokenize.workers: bad value 0"),
        ("tokenize.shard_mb=0", "tokenize.shard_mb: bad value 0.0"),
        ("tokenize.compression=gzip", "tokenize.compression: bad value 'gzip'"),
        ("ngram.order=7", "ngram.order: bad value 7; allowed: a number in [1 .. 6]"),
        ("ngram.order=0", "ngram.order: bad value 0"),
        ("ngram.prune=[1, 0]", "ngram.prune: bad value [1, 0]; allowed: non-decreasing thresholds starting with 0"),
        ("ngram.prune=[0, 2, 1]", "ngram.prune: bad value [0, 2, 1]"),
        ("ngram.prune=[0, 0, 0, 0, 0, 0]", "ngram.prune: bad value [0, 0, 0, 0, 0, 0]; allowed: at most order=5"),
        ("ngram.discount_fallback=[0.5]", "ngram.discount_fallback: bad value [0.5]"),
        ("ngram.estimator=srilm", "ngram.estimator: bad value 'srilm'"),
        ("ngram.memory_mb=1", "ngram.memory_mb: bad value 1"),
        ("stages=[tokenize, frobnicate]", "stages: bad value ['tokenize', 'frobnicate']"),
        ("name=a/b", "name: bad value 'a/b'"),
        ("corpus.split.valid=1.5", "corpus.split.valid: bad value 1.5"),
        ("corpus.split={valid: 0.6, test: 0.5}", "corpus.split: bad value"),
        ("corpus.split.unit=word", "corpus.split.unit: bad value 'word'"),
    ],
)
def test_each_validation_error_names_file_key_value_and_allowed(override, fragment):
    with pytest.raises(SpecError) as info:
        _parse([override])
    message = str(info.value)
    assert message.startswith("t.yaml: ")
    assert fragment in message
    assert "allowed" in message


def test_unknown_keys_are_rejected_with_the_allowed_keys():
    with pytest.raises(SpecError, match=r"t.yaml: vocab.min_cuont: unknown key; did you mean 'min_count'\? allowed keys of vocab: \['max_size', 'min_count'\]"):
        _parse(["vocab.min_cuont=2"])
    with pytest.raises(SpecError, match="t.yaml: bogus: unknown key"):
        _parse(["bogus.x=1"])


def test_missing_required_key_and_non_mapping():
    with pytest.raises(SpecError, match="corpus: missing required key"):
        parse_spec({"name": "x"}, source="t.yaml")
    with pytest.raises(SpecError, match="a spec is a YAML mapping"):
        parse_spec([1, 2], source="t.yaml")
    with pytest.raises(SpecError, match="expected key.path=value"):
        _parse(["vocab.min_count"])


def test_split_fractions_conflict_with_separate_inputs():
    data = {"name": "t", "corpus": {"train": "a.txt", "valid": "b.txt", "split": {"valid": 0.1}}}
    with pytest.raises(SpecError, match="corpus.split"):
        parse_spec(data, source="t.yaml")


def test_load_spec_names_the_file_on_yaml_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="bad.yaml: not valid YAML"):
        load_spec(bad)
    with pytest.raises(SpecError, match="cannot read spec"):
        load_spec(tmp_path / "missing.yaml")


def test_local_path_fields_are_found_by_their_type():
    from lmpipe.pipelines.spec import local_path_fields

    assert local_path_fields(RunSpec) == [
        "corpus.train[]", "corpus.valid[]", "corpus.test[]", "ngram.limit_vocab", "lm.models[].embeddings",
        "tagger.tasks[].train", "tagger.tasks[].valid", "tagger.tasks[].test", "tagger.vectors",
    ]  # fmt: skip


def test_every_local_path_is_anchored_beside_the_spec_and_listed(tmp_path):
    from lmpipe.pipelines.spec import local_paths

    data = {
        "name": "t",
        "corpus": {"train": "a.txt", "valid": ["s3://bucket/v.txt"], "test": ["data:ptb/test"]},
        "ngram": {"limit_vocab": "words.txt"},
        "lm": {"models": [{"name": "a", "embeddings": "vec"}, {"name": "b", "embeddings": "sgns"},
                          {"name": "c", "embeddings": "/abs/vec"}]},
        "tagger": {"vectors": "glove", "tasks": [{"name": "t", "format": "conll2003", "column": "ner",
                                                   "train": "tagged/train.txt", "test": "data:conll2003/test"}]},
    }  # fmt: skip
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    spec = load_spec(tmp_path / "t.yaml")
    assert local_paths(spec) == [
        ("corpus.train[0]", str(tmp_path / "a.txt")),
        ("ngram.limit_vocab", str(tmp_path / "words.txt")),
        ("lm.models[0].embeddings", str(tmp_path / "vec")),
        ("lm.models[2].embeddings", "/abs/vec"),
        ("tagger.tasks[0].train", str(tmp_path / "tagged" / "train.txt")),
    ]
    assert spec.corpus.valid == ("s3://bucket/v.txt",) and spec.corpus.test == ("data:ptb/test",)
    assert spec.lm.models[1].embeddings == "sgns" and spec.tagger.vectors == "glove"
    moved = load_spec(tmp_path / "t.yaml", overrides=["ngram.limit_vocab=rel.txt"])  # --set: relative to the cwd
    assert moved.ngram.limit_vocab == "rel.txt"
