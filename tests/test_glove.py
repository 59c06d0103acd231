"""GloVe model and train loop without Ray: f(x), parity of one update with glove.c's formulas, recovery of a
planted low-rank log matrix, NaN stop keeping the last checkpoint, and bit-identical resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from lmpipe.cluster.training import StopAfterEpoch, WorkerGroup, latest_checkpoint, to_config
from lmpipe.embeddings import glove_train
from lmpipe.embeddings.glove import GloVe, GloveConfig, weighting
from lmpipe.embeddings.glove_train import GloveJob, load_share, train_loop
from lmpipe.embeddings.vectors import Vectors
from lmpipe.pipelines.core.schemas import COOC
from lmpipe.pipelines.core.vocab_tsv import write_vocab_tsv


def test_weighting_edge_cases():
    x = torch.tensor([100.0, 100.0 + 1e-4, 1e6, 1e-30, 50.0, 0.0], dtype=torch.float64)
    f = weighting(x, 100.0, 0.75)
    assert f[0] == 1.0 and f[1] == 1.0 and f[2] == 1.0  # x = x_max and x > x_max: capped at 1
    assert 0 < f[3] < 1e-20 and f[3] == pytest.approx((1e-32) ** 0.75, rel=1e-12)  # tiny x: small, not 0
    assert f[4] == pytest.approx(0.5**0.75, rel=1e-15) and f[5] == 0.0
    assert weighting(torch.tensor([25.0]), 100.0, 1.0).item() == 0.25  # alpha 1: linear


def test_one_step_matches_glove_c():
    """One entry, the update of glove.c (float64 here): diff, f, clipped vector gradients times eta, biases
    unclipped, AdaGrad with G from 1 accumulating the eta-scaled gradient."""
    cfg = GloveConfig(dim=3, eta=0.05, x_max=10.0, alpha=0.75, grad_clip=0.3, batch_size=8)
    model = GloVe(4, cfg)
    model.params = torch.tensor(np.random.default_rng(1).normal(0, 2, (8, 4)), dtype=torch.float32)
    model.gradsq = torch.tensor(np.random.default_rng(2).uniform(1, 3, (8, 4)), dtype=torch.float32)
    W, G = model.params.double().numpy().copy(), model.gradsq.double().numpy().copy()
    i, j, x = 1, 2, 3.0
    l1, l2 = i, j + 4
    diff = W[l1, :3] @ W[l2, :3] + W[l1, 3] + W[l2, 3] - math.log(x)
    fdiff = (x / 10.0) ** 0.75 * diff
    t1 = np.clip(fdiff * W[l2, :3], -0.3, 0.3) * 0.05
    t2 = np.clip(fdiff * W[l1, :3], -0.3, 0.3) * 0.05
    assert np.abs(fdiff * W[l2, :3]).max() > 0.3  # the clip is exercised
    expected_W, expected_G = W.copy(), G.copy()
    expected_W[l1, :3] -= t1 / np.sqrt(G[l1, :3])
    expected_W[l2, :3] -= t2 / np.sqrt(G[l2, :3])
    expected_G[l1, :3] += t1**2
    expected_G[l2, :3] += t2**2
    expected_W[l1, 3] -= fdiff * 0.05 / np.sqrt(G[l1, 3])
    expected_W[l2, 3] -= fdiff * 0.05 / np.sqrt(G[l2, 3])
    expected_G[l1, 3] += (fdiff * 0.05) ** 2
    expected_G[l2, 3] += (fdiff * 0.05) ** 2
    xt = torch.tensor([x])
    cost = model.train_entries(torch.tensor([i]), torch.tensor([j]), torch.log(xt), weighting(xt, 10.0, 0.75))
    assert cost == pytest.approx(0.5 * fdiff * diff, rel=1e-5)
    np.testing.assert_allclose(model.params.numpy(), expected_W, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.gradsq.numpy(), expected_G, rtol=1e-5, atol=1e-6)


def test_objective_decreases_and_recovers_a_planted_low_rank_matrix():
    """log X = U V^T + a + c (rank 3): with dim 3 the cost falls by > 1000x and log X is reconstructed."""
    g = torch.Generator().manual_seed(0)
    v, r = 50, 3
    u, c = torch.randn(v, r, generator=g) * 0.7, torch.randn(v, r, generator=g) * 0.7
    log_x = u @ c.T + torch.randn(v, 1, generator=g) * 0.5 + torch.randn(1, v, generator=g) * 0.5 + 2.0
    rows, cols = (t.reshape(-1) for t in torch.meshgrid(torch.arange(v), torch.arange(v), indexing="ij"))
    logx = log_x.reshape(-1)
    fx = weighting(logx.exp(), 100.0, 0.75)
    model = GloVe(v, GloveConfig(dim=r, eta=0.05, batch_size=256, seed=3))
    costs = [model.cost(rows, cols, logx, fx)]
    for epoch in range(150):
        order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(epoch))
        model.train_entries(rows[order], cols[order], logx[order], fx[order])
        if epoch % 30 == 29:
            costs.append(model.cost(rows, cols, logx, fx))
    assert all(b < a for a, b in zip(costs, costs[1:], strict=False)), costs
    assert costs[-1] < costs[0] / 1000
    p = model.params
    fit = p[:v, :r] @ p[v:, :r].T + p[:v, r : r + 1] + p[v:, r][None, :]
    assert torch.sqrt(((fit - log_x) ** 2).mean()) < 0.05


def test_vectors_are_w_plus_w_tilde_or_w():
    model = GloVe(5, GloveConfig(dim=4))
    assert torch.equal(model.vectors("sum"), model.params[:5, :4] + model.params[5:, :4])
    assert torch.equal(model.vectors("word"), model.params[:5, :4])
    with pytest.raises(ValueError, match="output: bad value 'both'"):
        model.vectors("both")


# ------------------------------------------------------------------------------------------ train loop
def _cooc_dir(tmp_path: Path, v: int = 30, shards: int = 3) -> tuple[Path, list[str]]:
    """A cooccur output of a random sparse symmetric matrix, split into ``shards`` files."""
    rng = np.random.default_rng(0)
    dense = np.triu(rng.gamma(0.5, 20, (v, v)) * (rng.random((v, v)) < 0.4))
    dense = dense + dense.T
    rows, cols = np.nonzero(dense)
    folder = tmp_path / "cooccur"
    (folder / "cooc").mkdir(parents=True, exist_ok=True)
    write_vocab_tsv(folder / "vocab.tsv", [f"w{i}" for i in range(v)], np.arange(v, 0, -1))
    paths = []
    for p, idx in enumerate(np.array_split(np.arange(len(rows)), shards)):
        table = pa.table(
            {
                "row": rows[idx].astype(np.uint32),
                "col": cols[idx].astype(np.uint32),
                "value": dense[rows[idx], cols[idx]],
            },
            schema=COOC,
        )
        path = folder / "cooc" / f"part-{p:04d}.arrow"
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, COOC) as writer:
            writer.write_table(table)
        paths.append(str(path))
    return folder, paths


def _job(tmp_path: Path, name: str, **kwargs) -> GloveJob:
    folder, paths = _cooc_dir(tmp_path)
    return GloveJob(
        vocab_path=str(folder / "vocab.tsv"),
        shards=tuple(paths),
        out_dir=str(tmp_path / name),
        checkpoint_dir=str(tmp_path / f"{name}-ckpt"),
        config=GloveConfig(dim=6, epochs=3, batch_size=64, x_max=10.0),
        **{"output": "sum", "threads": 1, "syncs_per_epoch": None, "use_gpu": False, **kwargs},
    )


@pytest.fixture
def one_process(monkeypatch):
    monkeypatch.setattr(
        glove_train.WorkerGroup,
        "current",
        classmethod(lambda cls, use_gpu: WorkerGroup(0, 1, torch.device("cpu"), False)),
    )


def test_shares_split_every_shard_without_overlap(tmp_path):
    _, paths = _cooc_dir(tmp_path)
    whole = load_share(tuple(paths), 0, 1)
    parts = [load_share(tuple(paths), r, 3) for r in range(3)]
    assert abs(len(parts[0][0]) - len(parts[2][0])) <= len(paths)
    pairs = sorted(zip(*(np.concatenate([p[k] for p in parts]) for k in range(2)), strict=True))
    assert pairs == sorted(zip(whole[0], whole[1], strict=True))


def test_training_writes_glove_vectors_and_the_cost_falls(tmp_path, one_process):
    stats = train_loop(to_config(_job(tmp_path, "run")))
    costs = [e["cost"] for e in stats["epochs"]]
    assert costs[0] > costs[1] > costs[2]
    vectors = Vectors.load(tmp_path / "run" / "vectors")
    meta = json.loads((tmp_path / "run" / "vectors" / "meta.json").read_text())
    assert meta["source"] == "glove" and len(vectors) == 30 and vectors.dim == 6
    assert vectors.tokens[:2] == ["w0", "w1"] and np.isfinite(vectors.matrix).all()


def test_a_nan_cost_stops_and_keeps_the_last_good_checkpoint(tmp_path, one_process, monkeypatch):
    real = GloVe.train_entries
    calls = {"n": 0}

    def poisoned(self, *args):
        calls["n"] += 1
        return real(self, *args) if calls["n"] < 2 else float("nan")

    monkeypatch.setattr(GloVe, "train_entries", poisoned)
    job = _job(tmp_path, "nan")
    with pytest.raises(
        FloatingPointError, match=r"cost became nan in epoch 2; .*\(epoch 1\); lower glove.eta"
    ):
        train_loop(to_config(job))
    assert latest_checkpoint(Path(job.checkpoint_dir)).name == "epoch-001"
    assert not (tmp_path / "nan" / "vectors").exists()


def test_a_stopped_run_resumes_to_the_uninterrupted_vectors(tmp_path, one_process):
    reference = train_loop(to_config(_job(tmp_path, "ref")))
    stopped = _job(tmp_path, "stopped", stop_after_epoch=1)
    with pytest.raises(StopAfterEpoch):
        train_loop(to_config(stopped))
    assert latest_checkpoint(Path(stopped.checkpoint_dir)).name == "epoch-001"
    resumed = train_loop(to_config(_job(tmp_path, "stopped")))
    assert resumed["resumed_after_epoch"] == 1 and [e["epoch"] for e in resumed["epochs"]] == [2, 3]
    assert resumed["epochs"][-1]["cost"] == reference["epochs"][-1]["cost"]
    a = Vectors.load(tmp_path / "ref" / "vectors").matrix
    b = Vectors.load(tmp_path / "stopped" / "vectors").matrix
    assert np.array_equal(a, b)
