"""The sgns stage on a real local Ray: 1 and 2 Ray Train workers, resume after a kill, export, CLI errors."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from lmpipe.cluster.training import StopAfterEpoch, latest_checkpoint, to_config
from lmpipe.embeddings.train import split_parts
from lmpipe.embeddings.vectors import Vectors
from lmpipe.pipelines.cli import main
from lmpipe.pipelines.run import run_pipeline
from lmpipe.pipelines.spec import SpecError, load_spec, parse_spec
from lmpipe.pipelines.stages.sgns import STOP_ENV

from .conftest import SPECS


def _spec(*overrides: str):
    return load_spec(SPECS / "tiny.yaml", overrides=list(overrides))  # sgns: dim 20, 2 epochs, min_count 1


@pytest.fixture(scope="module")
def tokenized(ray_local, tmp_path_factory) -> Path:
    """One tokenize run of tiny; each test copies its ``tokenize/`` instead of tokenizing again."""
    run = tmp_path_factory.mktemp("tokenized")
    run_pipeline(_spec(), run_dir=run, stages=["tokenize"])
    return run


def _run_sgns(tokenized: Path, run: Path, *overrides: str) -> dict:
    if not (run / "tokenize").exists():
        shutil.copytree(tokenized / "tokenize", run / "tokenize")
    return run_pipeline(_spec(*overrides), run_dir=run, stages=["sgns"])["sgns"]


@pytest.fixture(scope="module")
def one_worker(tokenized, tmp_path_factory) -> tuple[Path, dict]:
    """An uninterrupted 1-worker, 1-thread, 2-epoch run: the reference for resume and the CLI tests."""
    run = tmp_path_factory.mktemp("one")
    return run, _run_sgns(tokenized, run)


def _train_words(run: Path) -> int:
    import json

    return json.loads((run / "tokenize" / "manifest.json").read_text())["outputs"]["splits"]["train"]["tokens"]


def test_one_worker_trains_every_epoch_and_cleans_up(one_worker):
    """Both epochs on all training words; checkpoints and Ray's storage are gone after success; a rerun skips."""
    run, manifest = one_worker
    training = manifest["training"]
    assert [e["epoch"] for e in training["epochs"]] == [1, 2]
    assert all(e["words_per_rank"] == [_train_words(run)] for e in training["epochs"])
    assert training["sync"] == "sum" and len(training["words_per_second"]) == 2
    vectors = Vectors.load(run / "sgns" / "vectors")
    assert len(vectors) == manifest["outputs"]["count"] > 100 and vectors.dim == 20
    assert "<unk>" not in vectors and np.isfinite(vectors.matrix).all()
    assert not (run / ".checkpoints").exists() and not (run / ".ray-train").exists()
    evaluation = manifest["evaluation"]
    assert "skipped" in evaluation or set(evaluation["analogy"]) >= {"semantic", "syntactic", "total"}
    again = run_pipeline(_spec("sgns.workers=2", "sgns.threads=2"), run_dir=run, stages=["sgns"])["sgns"]
    assert again["skipped"]  # workers and threads are not part of the fingerprint


#: Run in a fresh interpreter: the sgns stage with one worker, then which heavy modules it imported.
_NO_TORCH_RUN = """
import json, sys
from lmpipe.pipelines.cli import main
code = main(["-q", "run", sys.argv[1], "--run-dir", sys.argv[2], "--stages", "sgns"])
print(json.dumps({"code": code, **{m: m in sys.modules for m in ("torch", "ray", "pandas", "numba")}}))
"""


def test_one_worker_on_cpu_trains_without_importing_torch_or_ray(tokenized, one_worker, tmp_path):
    """`lmpipe run --stages sgns` with one CPU worker, in its own process: numba trains numpy matrices,
    checkpoints are written without torch, and neither torch, Ray nor pandas is ever imported; the vectors are the
    same bytes as the reference run's (which ran in this test process, where torch is imported)."""
    import json
    import subprocess
    import sys

    shutil.copytree(tokenized / "tokenize", tmp_path / "tokenize")
    out = subprocess.run(
        [sys.executable, "-c", _NO_TORCH_RUN, str(SPECS / "tiny.yaml"), str(tmp_path)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    imported = json.loads(out.stdout.strip().splitlines()[-1])
    assert imported == {"code": 0, "torch": False, "ray": False, "pandas": False, "numba": True}, out.stderr[-2000:]
    ours, reference = Vectors.load(tmp_path / "sgns" / "vectors"), Vectors.load(one_worker[0] / "sgns" / "vectors")
    assert ours.tokens == reference.tokens and np.array_equal(ours.matrix, reference.matrix)


def test_two_workers_both_train_their_shards(tokenized, tmp_path):
    """Two Ray Train workers each train their own share (shard i -> rank i % 2) and sync 2x per epoch."""
    manifest = _run_sgns(tokenized, tmp_path, "sgns.workers=2", "sgns.sync=mean")
    training = manifest["training"]
    total = _train_words(tmp_path)
    assert len(training["share_words"]) == 2 and sum(training["share_words"]) == total
    for epoch in training["epochs"]:
        assert len(epoch["words_per_rank"]) == 2 and min(epoch["words_per_rank"]) > 0
        assert epoch["words_per_rank"] == training["share_words"]
    assert training["sync"] == "mean" and training["syncs_per_epoch"] == 2
    assert training["workers"]["count"] == 2 and len({w["pid"] for w in training["workers"]["processes"]}) == 2
    assert np.isfinite(Vectors.load(tmp_path / "sgns" / "vectors").matrix).all()


def test_killed_run_resumes_to_the_uninterrupted_vectors(tokenized, one_worker, tmp_path, monkeypatch):
    """Stopped after epoch 1 of 2, the rerun loads epoch 1's checkpoint and ends where an uninterrupted run does."""
    monkeypatch.setenv(STOP_ENV, "1")
    with pytest.raises(StopAfterEpoch):
        _run_sgns(tokenized, tmp_path)
    assert not (tmp_path / "sgns").exists()
    assert len(list((tmp_path / ".checkpoints").glob("sgns-*/epoch-001/meta.json"))) == 1
    monkeypatch.delenv(STOP_ENV)
    manifest = _run_sgns(tokenized, tmp_path)
    assert manifest["training"]["resumed_after_epoch"] == 1
    assert [e["epoch"] for e in manifest["training"]["epochs"]] == [2]
    resumed = Vectors.load(tmp_path / "sgns" / "vectors")
    reference = Vectors.load(one_worker[0] / "sgns" / "vectors")
    assert resumed.tokens == reference.tokens
    np.testing.assert_allclose(resumed.matrix, reference.matrix, rtol=0, atol=1e-6)
    assert np.array_equal(resumed.matrix, reference.matrix)  # bit for bit: threads=1, streams restored


@pytest.mark.parametrize("fmt", ["word2vec-text", "word2vec-bin", "glove", "npy", "safetensors"])
def test_export_loads_in_gensim_with_identical_vectors(one_worker, tmp_path, fmt):
    """Every export format round-trips exactly; the word2vec and GloVe files load in gensim."""
    from gensim.models import KeyedVectors

    run = one_worker[0]
    ours = Vectors.load(run / "sgns" / "vectors")
    out = tmp_path / f"vectors.{fmt}"
    assert main(["embeddings", "export", str(run), "--format", fmt, "--out", str(out)]) == 0
    if fmt in ("word2vec-text", "word2vec-bin", "glove"):
        kv = KeyedVectors.load_word2vec_format(out, binary=fmt == "word2vec-bin", no_header=fmt == "glove")
        tokens, matrix = list(kv.index_to_key), kv.vectors
    assert main(["embeddings", "import", str(out), "--format", fmt, "--out", str(tmp_path / "back")]) == 0
    back = Vectors.load(tmp_path / "back")
    if fmt in ("npy", "safetensors"):
        tokens, matrix = back.tokens, back.matrix
    assert tokens == ours.tokens == back.tokens
    assert np.array_equal(matrix, ours.matrix) and np.array_equal(back.matrix, ours.matrix)


def test_neighbors_prints_k_lines(one_worker, capsys):
    run = one_worker[0]
    word = Vectors.load(run / "sgns" / "vectors").tokens[10]
    assert main(["embeddings", "neighbors", str(run), word, "-k", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all(word not in line.split() for line in lines)


def test_bad_inputs_exit_2_with_a_message(one_worker, tokenized, tmp_path, capsys):
    run = str(one_worker[0])
    cases = [
        (["embeddings", "neighbors", run, "no-such-word-xyz"], "not in the sgns vocabulary"),
        (["embeddings", "neighbors", str(tmp_path / "missing"), "god"], "no such run directory"),
        (["embeddings", "neighbors", str(tokenized), "god"], "sgns stage has not completed"),
        (["embeddings", "export", run, "--stage", "glove", "--format", "npy", "--out", str(tmp_path / "x.npy")], "glove stage"),
        (["embeddings", "import", str(tmp_path / "none.bin"), "--format", "word2vec-bin", "--out", str(tmp_path / "v")], "no such file"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err


@pytest.mark.gpu
def test_one_gpu_worker(tokenized, tmp_path):
    manifest = _run_sgns(tokenized, tmp_path, "sgns.use_gpu=true")
    assert manifest["training"]["device"].startswith("cuda")


# ------------------------------------------------------------------------------------------ no Ray
def test_spec_defaults_are_word2vec_skipgram_and_bad_values_are_named():
    spec = parse_spec({"name": "x", "corpus": {"train": "t.txt"}}).sgns
    assert (spec.dim, spec.window, spec.negative, spec.sample, spec.alpha, spec.min_count, spec.epochs) == (
        100, 5, 5, 1e-3, 0.025, 5, 5,
    )  # fmt: skip
    assert (spec.workers, spec.threads, spec.use_gpu, spec.sync, spec.evaluate) == (1, 1, False, "sum", True)
    for key, value, message in [
        ("dim", 0, "sgns.dim: bad value 0"),
        ("sync", "median", "sgns.sync: bad value 'median'"),
        ("alpha", 0, "sgns.alpha: bad value 0"),
        ("shared_negatives", 2048, "sgns.shared_negatives: bad value 2048"),
        ("workers", 0, "sgns.workers: bad value 0"),
        ("syncs_per_epoch", 0, "sgns.syncs_per_epoch: bad value 0"),
    ]:
        with pytest.raises(SpecError, match=message):
            parse_spec({"name": "x", "corpus": {"train": "t.txt"}, "sgns": {key: value}})


def test_split_parts_cuts_exactly_n_parts_by_words():
    """Always ``parts`` runs (empty ones too, so every rank syncs equally often), in order, nothing lost."""
    sentences = [np.arange(n, dtype=np.uint32) for n in (5, 1, 7, 3, 4)]  # 20 words
    parts = [list(p) for p in split_parts(sentences, 20, 4)]
    assert [[len(s) for s in p] for p in parts] == [[5], [1, 7], [3], [4]]  # starts 0 | 5, 6 | 13 | 16
    assert [[len(s) for s in p] for p in split_parts(sentences, 20, 8)][:4] == [[5], [], [1, 7], []]
    assert [list(p) for p in split_parts([], 0, 3)] == [[], [], []]
    assert sum(len(list(p)) for p in split_parts(sentences, 10, 2)) == 5  # a wrong total still loses nothing


def test_too_few_words_for_the_negatives_is_refused_before_training(tokenized, tmp_path):
    with pytest.raises(ValueError, match=r"sgns.negative: bad value 5; only \d+ words occur sgns.min_count=300"):
        _run_sgns(tokenized, tmp_path, "sgns.min_count=300")
    assert not (tmp_path / "sgns").exists()


def test_a_diverging_loss_stops_and_keeps_the_last_good_checkpoint(tokenized, tmp_path, monkeypatch):
    """The train loop itself (one plain process, no Ray Train): a NaN loss in epoch 2 stops the run, naming
    the epoch and the fix, and epoch 1's checkpoint stays the latest one."""
    from lmpipe.embeddings import train as train_mod
    from lmpipe.embeddings.sgns import SGNS, SGNSConfig

    real = SGNS.train_epoch

    def poisoned(self, sentences, *, threads=1):
        stats = real(self, sentences, threads=threads)
        return dataclasses.replace(stats, loss=float("nan")) if self.epoch >= 2 else stats

    monkeypatch.setattr(SGNS, "train_epoch", poisoned)
    monkeypatch.setattr(train_mod.WorkerGroup, "current", classmethod(lambda cls, use_gpu: cls(0, 1, __import__("torch").device("cpu"), False)))
    stage = tokenized / "tokenize"
    job = train_mod.TrainJob(
        vocab_path=str(stage / "vocab.tsv"),
        shards=tuple(str(p) for p in sorted((stage / "train").glob("*.arrow"))),
        out_dir=str(tmp_path / "out"),
        checkpoint_dir=str(tmp_path / "ckpt"),
        config=SGNSConfig(dim=8, epochs=3),
        min_count=1,
        threads=1,
        syncs_per_epoch=None,
        sync="sum",
        overlap_sync=True,
        use_gpu=False,
    )
    with pytest.raises(FloatingPointError, match=r"(?s)loss became nan in epoch 2 .*epoch 1.*lower sgns.alpha"):
        train_mod.train_loop(to_config(job))
    assert latest_checkpoint(tmp_path / "ckpt").name == "epoch-001"
