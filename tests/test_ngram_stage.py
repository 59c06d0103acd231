"""The ngram stage on a real local Ray instance: lmplz parity through the whole pipeline, resume, errors."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from lmpipe.lm.arpa import compare_arpa, read_arpa
from lmpipe.lm.kenlm_tools import run_lmplz
from lmpipe.pipelines.evaluate import split_sentences
from lmpipe.pipelines.run import run_pipeline
from lmpipe.pipelines.spec import load_spec, parse_spec

from .conftest import SPECS

pytestmark = [pytest.mark.usefixtures("ray_local")]


def _lmplz_on_run(run_dir, tmp_path, order, args=()):
    arpa = tmp_path / "lmplz.arpa"
    run_lmplz(split_sentences(run_dir, "train"), order, arpa, memory="256M", extra_args=list(args), temp_prefix=tmp_path)
    return arpa


def _assert_same(ours, ref, tol=1e-4):
    diff = compare_arpa(read_arpa(ours), read_arpa(ref))
    assert diff.same_ngrams, f"only ours {diff.only_left}, only lmplz {diff.only_right}"
    assert diff.max_prob_diff < tol and diff.max_backoff_diff < tol, diff
    return diff


@pytest.mark.kenlm
def test_tiny_pipeline_matches_lmplz_and_resumes(tmp_path, kenlm_bin):
    spec = load_spec(SPECS / "tiny.yaml", overrides=["vocab.min_count=1", "ngram.partitions=3"])
    manifests = run_pipeline(spec, run_dir=tmp_path / "run")
    ngram = manifests["ngram"]
    ours = tmp_path / "run" / "ngram" / "model.arpa"
    _assert_same(ours, _lmplz_on_run(tmp_path / "run", tmp_path, 3, ["--discount_fallback", "0.5", "1.0", "1.5"]))
    assert set(ngram["perplexity"]) == {"valid", "test"}
    assert ngram["perplexity"]["test"]["tokens"] == 2337 + 80
    counts = sorted((tmp_path / "run" / "ngram" / "counts" / "order-3").glob("part-*/*.arrow"))
    assert len(counts) == 3
    steps = {s["step"]: s for s in ngram["estimation"]["steps"]}  # per-step figures for the scaling model
    assert {"count", "merge", "adjust", "probabilities 3", "interpolate 3", "backoff", "ARPA"} <= set(steps)
    assert steps["count"]["bytes_written"] > 0 and steps["merge"]["tasks"] == 3 * 3  # 3 orders x 3 partitions
    assert all(s["seconds"] >= 0 for s in steps.values())
    assert max(s["bytes_written"] for s in steps.values()) <= ngram["estimation"]["peak_work_bytes"] * 2
    again = run_pipeline(spec, run_dir=tmp_path / "run")
    assert again["ngram"]["skipped"] and again["tokenize"]["skipped"]
    lmplz_spec = load_spec(SPECS / "tiny.yaml", overrides=["vocab.min_count=1", "ngram.estimator=lmplz"])
    via_lmplz = run_pipeline(lmplz_spec, run_dir=tmp_path / "run", stages=["ngram"])["ngram"]
    assert not via_lmplz["skipped"]
    _assert_same(tmp_path / "run" / "ngram" / "model.arpa", ours)
    assert via_lmplz["perplexity"]["test"]["perplexity"] == pytest.approx(ngram["perplexity"]["test"]["perplexity"], rel=1e-4)


@pytest.mark.kenlm
def test_ptb_order3_on_ray_matches_lmplz(tmp_path, mirror, kenlm_bin):
    spec = load_spec(SPECS / "ptb.yaml", overrides=["ngram.order=3", "ngram.partitions=4"])
    manifest = run_pipeline(spec, run_dir=tmp_path / "run", stages=["tokenize", "ngram"], mirror=str(mirror))["ngram"]
    diff = _assert_same(tmp_path / "run" / "ngram" / "model.arpa", _lmplz_on_run(tmp_path / "run", tmp_path, 3))
    assert diff.max_prob_diff < 1e-5
    test = manifest["perplexity"]["test"]
    assert test["tokens"] == 82430 and test["oov"] == 0
    assert test["perplexity"] == pytest.approx(148.28, abs=0.01)  # lmplz KN3 on this machine kind


def test_memory_budget_too_small_is_an_error_with_the_fix():
    from lmpipe.pipelines.stages.ngram import _partitions

    spec = parse_spec({"name": "x", "corpus": {"train": "t.txt"}, "ngram": {"memory_mb": 64, "order": 6}}).ngram
    with pytest.raises(ValueError, match=r"ngram.memory_mb: bad value 64; counting one token shard .* increase ngram.memory_mb to \d+"):
        _partitions(spec, train_tokens=10**9, shard_tokens=10**8)
    assert _partitions(spec, train_tokens=10**9, shard_tokens=10**5) > 100  # the partitions grow instead


def test_partitions_raised_by_the_budget_are_a_multiple_of_the_configured_ones():
    """7 partitions on 2 workers cap a per-partition step at 7/4 = 1.75x; rounding up to a multiple of
    ``ngram.partitions`` (4) lets 1, 2 and 4 workers share the rounds evenly."""
    from lmpipe.pipelines.stages.ngram import _bytes_per_token, _partitions

    for configured in (1, 3, 4):
        spec = parse_spec({"name": "x", "corpus": {"train": "t.txt"}, "ngram": {"memory_mb": 64, "partitions": configured}}).ngram
        per_partition = 64 * (1 << 20) / _bytes_per_token(spec.order)  # tokens one partition's budget holds
        for fill in (0.5, 1.0, 6.5, 7.0, 7.2, 29.9):
            tokens = math.ceil(fill * per_partition)
            parts = _partitions(spec, train_tokens=tokens, shard_tokens=1000)
            assert parts % configured == 0 and parts * per_partition >= tokens, "a multiple, and every partition fits"
            assert parts == configured or (parts - configured) * per_partition < tokens, "the smallest such multiple"
    four = parse_spec({"name": "x", "corpus": {"train": "t.txt"}, "ngram": {"memory_mb": 64}}).ngram
    assert four.partitions == 4 and _partitions(four, math.ceil(6.5 * 64 * (1 << 20) / _bytes_per_token(four.order)), 1000) == 8


def test_spill_compression_auto_compresses_only_out_of_core():
    from lmpipe.pipelines.stages.ngram import _partitions, _spill_compression

    def spec(value):
        return parse_spec({"name": "x", "corpus": {"train": "t.txt"}, "ngram": {"memory_mb": 64, "spill_compression": value}}).ngram

    auto = spec("auto")
    in_memory, out_of_core = _partitions(auto, 10**4, 10**4), _partitions(auto, 10**8, 10**4)
    assert in_memory == auto.partitions < out_of_core
    assert _spill_compression(auto, in_memory) is None and _spill_compression(auto, out_of_core) == "zstd"
    assert _spill_compression(spec("none"), out_of_core) is None and _spill_compression(spec("lz4"), in_memory) == "lz4"


def test_missing_limit_vocab_stops_before_any_work(tmp_path):
    base = {"name": "x", "corpus": {"train": str(SPECS / "tiny" / "train.txt")}, "stages": ["tokenize", "ngram"]}
    with pytest.raises(FileNotFoundError, match="limit_vocab"):
        run_pipeline(parse_spec({**base, "ngram": {"limit_vocab": str(tmp_path / "none.txt")}}), run_dir=tmp_path / "b")
    assert not (tmp_path / "b" / "tokenize").exists()


def test_bad_discounts_name_the_order_and_suggest_the_fallback(tmp_path):
    corpus = tmp_path / "small.txt"
    corpus.write_text("a b c d\na b c e\nf g h\n")
    spec = parse_spec({"name": "x", "corpus": {"train": str(corpus)}, "stages": ["tokenize", "ngram"], "ngram": {"order": 3}})
    with pytest.raises(ValueError, match=r"(?s)for 1-grams.*n1..n4 = .*set discount_fallback"):
        run_pipeline(spec, run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "ngram").exists()
    assert not list((tmp_path / "run").glob(".ngram.tmp-*"))


def test_local_and_ray_executors_write_the_same_bytes(tmp_path):
    """ngram.executor: local (threads in the driver) and ray (Ray tasks) run the same tasks: identical
    ARPA bytes; auto resolves to local on an embedded Ray, so the manifest says where the tasks ran."""
    base = ["vocab.min_count=1", "ngram.partitions=3", "ngram.build_binary=false", "ngram.discount_fallback=[0.5, 1, 1.5]"]
    out = {}
    for executor in ("local", "ray", "auto"):
        spec = load_spec(SPECS / "tiny.yaml", overrides=[*base, f"ngram.executor={executor}"])
        manifest = run_pipeline(spec, run_dir=tmp_path / executor, stages=["tokenize", "ngram"])["ngram"]
        out[executor] = ((tmp_path / executor / "ngram" / "model.arpa").read_bytes(), manifest)
    assert out["local"][0] == out["ray"][0] == out["auto"][0]
    assert out["local"][1]["estimation"]["executor"] == "local" == out["auto"][1]["estimation"]["executor"]
    assert out["ray"][1]["estimation"]["executor"] == "ray"
    assert {w["pid"] for w in out["local"][1]["workers"]} == {os.getpid()}
    assert {w["pid"] for w in out["ray"][1]["workers"]}.isdisjoint({os.getpid()})
    # A run whose only stage to compute is a local ngram never starts Ray (nor imports it).
    probe = (
        "import sys; from lmpipe.pipelines.run import run_pipeline; from lmpipe.pipelines.spec import load_spec; "
        f"spec = load_spec({str(SPECS / 'tiny.yaml')!r}, overrides={[*base, 'ngram.order=2']!r}); "
        f"run_pipeline(spec, run_dir={str(tmp_path / 'auto')!r}, stages=['tokenize', 'ngram']); print('ray' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"
    rerun = json.loads((tmp_path / "auto" / "ngram" / "manifest.json").read_text())
    assert rerun["estimation"]["executor"] == "local" and set(rerun["outputs"]["ngrams"]) == {"1", "2"}


def test_count_slices_stay_small_enough_to_sort_fast_whatever_the_budget():
    """A 2 GB budget would let one count task take a whole 12M-token shard; it counts 1.5-1.7x slower per token
    than 4M-token slices (RESULTS.md), so shards are cut to at most ``_COUNT_SLICE_TOKENS`` tokens; a small
    budget still cuts them smaller, and small shards are not cut more than the workers need."""
    from lmpipe.pipelines.stages.ngram import _COUNT_SLICE_TOKENS, _slice_tokens, _slices

    def spec(memory_mb, order):
        return parse_spec({"name": "x", "corpus": {"train": "t.txt"}, "ngram": {"memory_mb": memory_mb, "order": order}}).ngram

    shards = [12_000_000, 11_000_000, 300_000]
    for order in (3, 5):
        cap = _slice_tokens(spec(2048, order))
        assert cap == _COUNT_SLICE_TOKENS
        pieces = _slices(shards, 2, cap)
        assert all(math.ceil(tokens / n) <= _COUNT_SLICE_TOKENS for tokens, n in zip(shards, pieces, strict=True))
        assert pieces[2] == 1 and pieces[0] >= 3
    small = _slice_tokens(spec(64, 5))
    assert small < _COUNT_SLICE_TOKENS
    assert all(math.ceil(t / n) <= small for t, n in zip(shards, _slices(shards, 2, small), strict=True))
