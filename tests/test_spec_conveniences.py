"""Spec conveniences for users of lmplz and word2vec: memory sizes, ``discount_fallback: true``, ``ngram.temp_dir``
out of the fingerprint, "did you mean" for misspelt keys, and the JSON Schema against the parser."""

from __future__ import annotations

import dataclasses
import os

import pytest
import yaml

from lmpipe.pipelines.spec import RunSpec, SpecError, load_spec, parse_spec
from lmpipe.pipelines.spec_parser import settings_dict
from lmpipe.pipelines.spec_schema import field_docs, spec_schema

from .conftest import SPECS

BASE = {"name": "x", "corpus": {"train": ["t.txt"]}}


def _ngram(**settings):
    return parse_spec({**BASE, "ngram": settings}, source="t.yaml").ngram


@pytest.mark.parametrize(
    ("value", "mb"),
    [(2048, 2048), ("2G", 2048), ("2g", 2048), ("2GB", 2048), ("512M", 512), ("512", 512), ("1.5G", 1536),
     ("1T", 1 << 20), ("65536K", 64), (" 3 G ", 3072), (str(64 << 20) + "b", 64)],
)  # fmt: skip
def test_memory_sizes_are_lmplz_s_binary_units_and_integers_stay_megabytes(value, mb):
    assert _ngram(memory_mb=value).memory_mb == mb
    assert parse_spec({**BASE, "cooccur": {"memory_mb": value}}).cooccur.memory_mb == mb


def test_a_percentage_is_of_this_machine_s_physical_memory():
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert _ngram(memory_mb="80%").memory_mb == int(physical * 0.8) // (1 << 20)
    assert _ngram(memory_mb="100%").memory_mb == physical // (1 << 20)


@pytest.mark.parametrize("value", ["2X", "G", "-1G", "0%", "150%", "80 %%", True, "", 3.5])
def test_bad_memory_sizes_name_the_key_and_the_forms(value):
    with pytest.raises(SpecError, match=r"t.yaml: ngram.memory_mb: bad value"):
        _ngram(memory_mb=value)


def test_the_budget_floor_still_applies_to_a_size():
    with pytest.raises(SpecError, match=r"ngram.memory_mb: bad value 32"):
        _ngram(memory_mb="32M")


def test_a_size_and_its_integer_have_the_same_fingerprint_settings():
    two_g, plain = _ngram(memory_mb="2G"), _ngram(memory_mb=2048)
    assert settings_dict(two_g, fingerprint=True) == settings_dict(plain, fingerprint=True)
    assert settings_dict(_ngram(), fingerprint=True)["memory_mb"] == 2048  # the default, pinned in stage_fingerprints.json


def test_discount_fallback_true_is_lmplz_s_default_values():
    assert _ngram(discount_fallback=True).discount_fallback == (0.5, 1.0, 1.5)
    assert _ngram(discount_fallback=False).discount_fallback is None
    assert _ngram(discount_fallback=[0.4, 0.9, 1.3]).discount_fallback == (0.4, 0.9, 1.3)
    assert settings_dict(_ngram(discount_fallback=True), fingerprint=True) == settings_dict(
        _ngram(discount_fallback=[0.5, 1, 1.5]), fingerprint=True
    )
    with pytest.raises(SpecError, match="ngram.discount_fallback: bad value"):
        _ngram(discount_fallback="yes")


def test_temp_dir_is_not_in_the_fingerprint():
    with_temp = _ngram(temp_dir="/scratch/me")
    assert with_temp.temp_dir == "/scratch/me"
    assert settings_dict(with_temp, fingerprint=True) == settings_dict(_ngram(), fingerprint=True)
    assert "temp_dir" not in settings_dict(_ngram(), fingerprint=True)


@pytest.mark.parametrize(
    ("override", "guess"),
    [("sgns.epoch=3", "epochs"), ("sgns.vector_size=50", "dim"), ("sgns.size=50", "dim"), ("sgns.iter=3", "epochs"),
     ("glove.iter=3", "epochs"), ("ngram.tmp_dir=/tmp", "temp_dir"), ("ngram.S=2G", "memory_mb"),
     ("ngram.ordr=3", "order"), ("vocab.min_cuont=2", "min_count"), ("sgns.learning_rate=0.1", "alpha"),
     ("lm.models=[{name: a, hiden: 3}]", "hidden"), ("tokenzer.kind=char", "tokenizer")],
)  # fmt: skip
def test_misspelt_and_other_tools_keys_get_a_suggestion(override, guess):
    with pytest.raises(SpecError, match=rf"unknown key; did you mean '{guess}'\? allowed keys"):
        parse_spec(BASE, source="t.yaml", overrides=[override])


def test_no_suggestion_when_nothing_is_close():
    with pytest.raises(SpecError) as info:
        parse_spec(BASE, source="t.yaml", overrides=["sgns.zzqqx=1"])
    assert "did you mean" not in str(info.value) and "allowed keys of sgns" in str(info.value)


def test_misspelt_choices_and_stage_names_get_a_suggestion():
    with pytest.raises(SpecError, match=r"tokenizer.kind: bad value 'sentencepeice'; allowed: one of .*; did you mean 'sentencepiece'\?"):
        parse_spec(BASE, source="t.yaml", overrides=["tokenizer.kind=sentencepeice"])
    with pytest.raises(SpecError, match=r"stages: bad value .*; did you mean 'ngram'\?"):
        parse_spec(BASE, source="t.yaml", overrides=["stages=[tokenize, ngarm]"])
    with pytest.raises(SpecError) as info:
        parse_spec(BASE, source="t.yaml", overrides=["tokenizer.kind=zzz"])
    assert "did you mean" not in str(info.value)


# ------------------------------------------------------------------------------------------ JSON Schema
@pytest.fixture(scope="module")
def validator():
    jsonschema = pytest.importorskip("jsonschema")  # in the dev environment (Ray depends on it)
    schema = spec_schema(RunSpec)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("spec", sorted(p.name for p in SPECS.glob("*.yaml")))
def test_every_shipped_spec_is_valid_under_the_schema(spec, validator):
    data = yaml.safe_load((SPECS / spec).read_text(encoding="utf-8"))
    assert [e.message for e in validator.iter_errors(data)] == []
    load_spec(SPECS / spec)  # and the parser agrees


@pytest.mark.parametrize(
    ("patch", "where"),
    [({"ngram": {"order": "five"}}, "order"), ({"sgns": {"epoch": 3}}, "epoch"), ({"ngram": {"memory_mb": "2X"}}, "memory_mb"),
     ({"tokenizer": {"kind": "bpe"}}, "kind"), ({"stages": "tokenize"}, None), ({"corpus": {}}, "train"),
     ({"sgns": {"use_gpu": "yes"}}, "use_gpu"), ({"lm": {"models": [{"kind": "lstm"}]}}, "name")],
)  # fmt: skip
def test_the_schema_rejects_what_the_parser_rejects(patch, where, validator):
    data = {**BASE, **patch}
    errors = list(validator.iter_errors(data))
    if where is None:  # a single string is a one-item list for the parser: both accept it
        assert errors == [] and parse_spec(data).stages == ("tokenize",)
        return
    assert errors, f"schema accepted {patch}"
    assert any(where in (e.message + str(list(e.absolute_path))) for e in errors), [e.message for e in errors]
    with pytest.raises(SpecError):
        parse_spec(data)


def test_the_schema_accepts_the_new_forms(validator):
    data = {**BASE, "ngram": {"memory_mb": "80%", "discount_fallback": True, "temp_dir": "/tmp"}, "cooccur": {"memory_mb": "1G"}}
    assert list(validator.iter_errors(data)) == []
    parse_spec(data)


def test_the_schema_has_every_field_of_every_section_with_its_default():
    schema = spec_schema(RunSpec)
    ngram = schema["$defs"]["NgramSpec"]
    assert list(ngram["properties"]) == [f.name for f in dataclasses.fields(type(_ngram()))]
    assert ngram["additionalProperties"] is False
    assert ngram["properties"]["order"] == {"type": "integer", "default": 5}
    assert "lmplz" in ngram["properties"]["temp_dir"]["description"]
    assert schema["required"] == ["name", "corpus"]
    for name, section in schema["$defs"].items():
        assert section["type"] == "object" and section["properties"], name
    assert field_docs(type(_ngram()))["prune"].startswith("Raw-count thresholds per order")

