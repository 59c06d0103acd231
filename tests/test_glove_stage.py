"""The cooccur and glove stages on a real local Ray: counts against a brute-force reference computed from the
token shards, a 2-worker GloVe run, export through the shared CLI, and an empty co-occurrence set refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from lmpipe.embeddings.vectors import Vectors
from lmpipe.pipelines.cli import main
from lmpipe.pipelines.core.shards import read_ids
from lmpipe.pipelines.core.vocab import Vocab
from lmpipe.pipelines.core.vocab_tsv import read_vocab_tsv
from lmpipe.pipelines.run import run_pipeline
from lmpipe.pipelines.spec import load_spec, parse_spec

from .conftest import SPECS
from .test_cooccur import brute_force


def _spec(*overrides: str):
    return load_spec(
        SPECS / "tiny.yaml", overrides=list(overrides)
    )  # cooccur window 5; glove dim 20, 3 epochs


@pytest.fixture(scope="module")
def counted(ray_local, tmp_path_factory) -> tuple[Path, dict]:
    """tiny tokenized and counted once (cooccur.min_count 3, so the cut removes words)."""
    run = tmp_path_factory.mktemp("counted")
    manifests = run_pipeline(_spec("cooccur.min_count=3"), run_dir=run, stages=["tokenize", "cooccur"])
    return run, manifests["cooccur"]


def test_cooccur_stage_equals_the_brute_force_reference(counted):
    """Every value of RUN/cooccur/cooc equals GloVe's loop run in exact fractions over the shards' sentences."""
    run, manifest = counted
    vocab = Vocab.load(run / "tokenize" / "vocab.tsv")
    tokens, counts = read_vocab_tsv(run / "cooccur" / "vocab.tsv")
    kept_ids = [i for i in range(3, len(vocab)) if vocab.counts[i] >= 3]
    assert tokens == [vocab.tokens[i].as_py() for i in kept_ids] and len(kept_ids) < len(vocab) - 3
    assert counts.tolist() == [int(vocab.counts[i]) for i in kept_ids]
    expected = brute_force(read_ids(run / "tokenize", "train"), {w: i for i, w in enumerate(kept_ids)}, 5)
    got = {}
    files = sorted((run / "cooccur" / "cooc").glob("part-*.arrow"))
    assert len(files) == manifest["counting"]["partitions"] == 4
    for path in files:
        table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
        for r, c, v in zip(*(table[k].to_pylist() for k in ("row", "col", "value")), strict=True):
            got[(r, c)] = v
    assert got == expected
    out = manifest["outputs"]
    assert out["nonzeros"] == len(expected) and out["vocab_size"] == len(kept_ids)
    assert manifest["counting"]["blocks"] == 4  # 2 workers x 2 blocks over tiny's 4 shards
    assert all(t["peak_rss_mb"] > 0 for t in manifest["counting"]["tasks"])


def test_glove_two_workers_train_export_and_rerun_skips(counted, tmp_path, capsys):
    """2 Ray Train workers, each a share of the entries, merged per epoch; W + W~ exported through the CLI."""
    run = tmp_path / "run"
    for stage in ("tokenize", "cooccur"):
        shutil.copytree(counted[0] / stage, run / stage)
    spec = _spec("cooccur.min_count=3", "glove.workers=2")
    manifest = run_pipeline(spec, run_dir=run, stages=["glove"])["glove"]
    training = manifest["training"]
    nonzeros = counted[1]["outputs"]["nonzeros"]
    assert len(training["share_entries"]) == 2 and sum(training["share_entries"]) == nonzeros
    assert min(training["share_entries"]) > 0.4 * nonzeros
    assert [e["epoch"] for e in training["epochs"]] == [1, 2, 3] and training["syncs_per_epoch"] == 1
    assert training["workers"]["count"] == 2 and len({w["pid"] for w in training["workers"]["processes"]}) == 2
    costs = [e["cost"] for e in training["epochs"]]
    assert costs[0] > costs[-1] and all(np.isfinite(costs))
    vectors = Vectors.load(run / "glove" / "vectors")
    assert len(vectors) == counted[1]["outputs"]["vocab_size"] and vectors.dim == 20
    assert json.loads((run / "glove" / "vectors" / "meta.json").read_text())["source"] == "glove"
    assert not (run / ".checkpoints").exists() and not (run / ".ray-train").exists()
    out = tmp_path / "glove.txt"
    assert (
        main(["embeddings", "export", str(run), "--stage", "glove", "--format", "glove", "--out", str(out)])
        == 0
    )
    lines = out.read_text().splitlines()
    assert len(lines) == len(vectors) and lines[0].split()[0] == vectors.tokens[0]
    np.testing.assert_allclose([float(x) for x in lines[0].split()[1:]], vectors.matrix[0], rtol=1e-6)
    capsys.readouterr()
    assert main(["embeddings", "neighbors", str(run), vectors.tokens[5], "--stage", "glove", "-k", "3"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    again = run_pipeline(_spec("cooccur.min_count=3", "glove.workers=1"), run_dir=run, stages=["glove"])[
        "glove"
    ]
    assert again["skipped"]  # workers are not part of the fingerprint


def test_an_empty_cooccurrence_set_is_refused_before_training(ray_local, tmp_path):
    """One-word sentences share no window: the cooccur stage stops naming the cause; glove never starts."""
    (tmp_path / "one.txt").write_text("alpha\nbeta\nalpha\nbeta\n")
    spec = parse_spec(
        {"name": "one", "corpus": {"train": str(tmp_path / "one.txt")}, "cooccur": {"min_count": 1}}
    )
    with pytest.raises(ValueError, match="co-occurrence matrix is empty: lower cooccur.min_count"):
        run_pipeline(spec, run_dir=tmp_path / "run", stages=["tokenize", "cooccur", "glove"])
    assert not (tmp_path / "run" / "cooccur").exists() and not (tmp_path / "run" / "glove").exists()


def test_glove_without_cooccur_fails_fast(tmp_path):
    with pytest.raises(FileNotFoundError, match="the glove stage needs the cooccur stage"):
        run_pipeline(_spec(), run_dir=tmp_path, stages=["glove"])


@pytest.mark.gpu
def test_one_gpu_worker(counted, tmp_path):
    run = tmp_path / "run"
    for stage in ("tokenize", "cooccur"):
        shutil.copytree(counted[0] / stage, run / stage)
    manifest = run_pipeline(_spec("cooccur.min_count=3", "glove.use_gpu=true"), run_dir=run, stages=["glove"])
    assert manifest["glove"]["training"]["device"].startswith("cuda")
