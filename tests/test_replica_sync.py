"""ReplicaSync on two real gloo processes, and the word-balanced Share, against closed-form references.

Training is replaced by adding known per-rank, per-part deltas, so the merged result has a formula
independent of timing: with ``sum`` every rank ends at ``W0 + sum over ranks and parts of the deltas``,
with ``mean`` at ``W0 + sum over parts of the mean delta``, overlapped or not.
"""

from __future__ import annotations

import socket
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lmpipe.cluster.training import WorkerGroup
from lmpipe.embeddings.train import ReplicaSync, Share
from lmpipe.pipelines.core.schemas import TOKENS

VOCAB, DIM, PARTS, WORLD = 7, 3, 4, 2


def _deltas(rank: int, part: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * rank + part)
    d_in = torch.randn(VOCAB, DIM, generator=g, dtype=torch.float64)
    d_out = torch.randn(VOCAB, DIM, generator=g, dtype=torch.float64)
    d_in[rank::3] = 0.0  # rows some rank leaves untouched
    return d_in, d_out


def _worker(rank: int, port: int, scheme: str, overlap: bool, out: dict) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        g = torch.Generator().manual_seed(7)
        model = SimpleNamespace(
            w_in=torch.randn(VOCAB, DIM, generator=g, dtype=torch.float64),
            w_out=torch.randn(VOCAB, DIM, generator=g, dtype=torch.float64),
        )
        merger = ReplicaSync(
            model, WorkerGroup(rank, WORLD, torch.device("cpu"), False), scheme, overlap=overlap
        )
        for part in range(PARTS):
            d_in, d_out = _deltas(rank, part)
            model.w_in += d_in
            model.w_out += d_out
            merger.step()
        merger.flush()
        out[rank] = (model.w_in.numpy().copy(), model.w_out.numpy().copy())
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("overlap", [False, True])
@pytest.mark.parametrize("scheme", ["sum", "mean"])
def test_merged_replicas_equal_the_closed_form(scheme, overlap):
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        out = manager.dict()
        port = _free_port()
        procs = [ctx.Process(target=_worker, args=(r, port, scheme, overlap, out)) for r in range(WORLD)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
        result = dict(out)
    g = torch.Generator().manual_seed(7)
    w_in = torch.randn(VOCAB, DIM, generator=g, dtype=torch.float64).numpy()
    w_out = torch.randn(VOCAB, DIM, generator=g, dtype=torch.float64).numpy()
    scale = 1.0 if scheme == "sum" else 1.0 / WORLD
    for rank in range(WORLD):
        for part in range(PARTS):
            d_in, d_out = _deltas(rank, part)
            w_in = w_in + scale * d_in.numpy()
            w_out = w_out + scale * d_out.numpy()
    for rank in range(WORLD):
        np.testing.assert_allclose(result[rank][0], w_in, rtol=0, atol=1e-12)
        np.testing.assert_allclose(result[rank][1], w_out, rtol=0, atol=1e-12)
    assert np.array_equal(result[0][0], result[1][0])  # flush leaves identical replicas


def _write_shard(path, sentences):
    table = pa.table({"ids": pa.array(sentences, type=TOKENS.field("ids").type)})
    with pa.ipc.new_file(str(path), table.schema) as w:
        for batch in table.to_batches(max_chunksize=3):  # several record batches per shard
            w.write_batch(batch)
    return str(path)


def test_share_splits_the_word_stream_evenly_and_loses_nothing(tmp_path):
    rng = np.random.default_rng(3)
    sentences = [list(rng.integers(3, 50, size=rng.integers(1, 12))) for _ in range(60)]
    cuts = [0, 5, 6, 40, 60]  # uneven shards, one with a single sentence
    paths = [
        _write_shard(tmp_path / f"s{i}.arrow", sentences[a:b])
        for i, (a, b) in enumerate(zip(cuts[:-1], cuts[1:], strict=True))
    ]
    total = sum(len(s) for s in sentences)
    for world in (1, 2, 3, 5):
        shares = [Share.of(paths, r, world) for r in range(world)]
        got = [[s.tolist() for s in sh.sentences()] for sh in shares]
        assert sum(got, []) == [[int(x) for x in s] for s in sentences]  # in order, each sentence once
        words = [sh.words for sh in shares]
        assert words == [sum(len(s) for s in g) for g in got] and sum(words) == total
        assert max(words) - min(words) <= 2 * 11  # within a sentence of the ideal T / n on each side
        # brute force: a sentence belongs to rank r when its first word's position is in [T r/n, T (r+1)/n)
        starts = np.cumsum([0] + [len(s) for s in sentences[:-1]])
        for r, g in enumerate(got):
            lo, hi = total * r // world, total * (r + 1) // world
            assert len(g) == int(((starts >= lo) & (starts < hi)).sum())
