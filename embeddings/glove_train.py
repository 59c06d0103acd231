"""GloVe training entry: one ``train_loop(config)`` for one worker and for N data-parallel Ray Train workers.

The glove stage runs it with ``cluster.training.fit`` (``TorchTrainer``, gloo on CPU, NCCL with ``use_gpu``);
tests call it as a plain function.  Each rank takes an equal contiguous slice of every co-occurrence shard,
so shares differ by at most one entry per shard and no rank reads more than its share::

    cooc/part-0000.arrow  [ rank 0 | rank 1 ]       rows [n*r/K, n*(r+1)/K) of every shard -> rank r
    cooc/part-0001.arrow  [ rank 0 | rank 1 ]

    one epoch of a rank: its entries in a fresh random order (seeded by seed, rank, epoch), cut into
    syncs_per_epoch parts of equal count (the same count on every rank):
    rank 0   |--- part 1 ---|--- part 2 ---|--- part 3 ---|
    rank 1   |--- part 1 ---|--- part 2 ---|--- part 3 ---|
                            ^ sync         ^ sync         ^ sync

    sync:  D = P - P_last_sync for the parameters and for the AdaGrad accumulators (both (2V, d+1));
           all-reduce(SUM) of D; P = P_last_sync + sum D   (every worker's updates applied once)

Why this scheme.  A GloVe step touches 2 x batch rows of a (2V, d+1) table, so all-reducing dense gradients
every step would move the whole table per few thousand entries: on PTB (V 9,858, d 100) 8 MB per step of
4,096 entries, while the step itself takes ~9 ms on one CPU worker (measured: ~460k entries/s).  Merging
the replicas' accumulated deltas instead, once per ~1M entries of a share (:data:`SYNC_ENTRIES`, ~2 s of
training), moves 16 MB (parameters + accumulators) per merge: 0.03 s per merge between two local gloo
workers in the quietest epoch of a PTB run, up to 0.7 s including the wait for the slower worker on a
loaded machine (the manifest records ``sync_seconds`` per epoch).  Summing deltas, not averaging, applies
every worker's updates once, as glove.c's lock-free threads do on one matrix; the accumulators are summed
the same way, so G is exactly the sum of every applied squared step.
Like the sgns stage's ``sum`` sync it is Hogwild at a coarse grain: a row's update on one worker does not
see the other worker's updates to that row until the next sync.

Checkpoints: after every epoch rank 0 writes ``<checkpoint_dir>/epoch-NNN/`` (``state.pt`` with the
parameters and accumulators, ``meta.json`` last) through ``cluster.training.end_epoch``; on start
the latest one is loaded.  The shuffles are a function of (seed, rank, epoch), so a resumed run with the
same world size ends with the same vectors as an uninterrupted one, bit for bit with ``threads=1``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmpipe.cluster.training import Checkpoints, WorkerGroup, end_epoch, from_config, placement, rank_seed
from lmpipe.embeddings.glove import GloVe, GloveConfig, weighting
from lmpipe.embeddings.vectors import Vectors
from lmpipe.pipelines.core.files import read_table
from lmpipe.pipelines.core.progress import EpochProgress
from lmpipe.pipelines.core.vocab_tsv import read_vocab_tsv

logger = logging.getLogger(__name__)

#: Entries of a worker's share between merges when ``syncs_per_epoch`` is not given.
SYNC_ENTRIES = 1_000_000


@dataclass(frozen=True, kw_only=True, slots=True)
class GloveJob:
    """Everything ``train_loop`` needs, as plain data (Ray passes ``train_loop_config`` as a dict:
    ``cluster.training.to_config`` / ``from_config``); the settings come from ``GloveSpec`` by name."""

    vocab_path: str  # RUN/cooccur/vocab.tsv: the rows of X, in id order
    shards: tuple[str, ...]  # RUN/cooccur/cooc/part-*.arrow
    out_dir: str  # rank 0 writes <out_dir>/vectors
    checkpoint_dir: str  # RUN/.checkpoints/glove-<fingerprint>; survives a crash
    config: GloveConfig
    output: str  # sum: W + W~; word: W
    threads: int
    syncs_per_epoch: int | None  # None: one per SYNC_ENTRIES entries of the largest share
    use_gpu: bool
    stop_after_epoch: int | None = None


# ------------------------------------------------------------------------------------------ data
def load_share(shards: tuple[str, ...], rank: int, world_size: int) -> tuple[np.ndarray, ...]:
    """This rank's entries ``(rows int64, cols int64, values float64)``: rows [n*r/K, n*(r+1)/K) of each shard."""
    rows, cols, values = [], [], []
    for path in shards:
        table = read_table(Path(path))
        n = table.num_rows
        part = table.slice(n * rank // world_size, n * (rank + 1) // world_size - n * rank // world_size)
        rows.append(np.asarray(part.column("row")).astype(np.int64))
        cols.append(np.asarray(part.column("col")).astype(np.int64))
        values.append(np.asarray(part.column("value"), np.float64))
    if not rows:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64)
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(values)


def _parts(n: int, parts: int) -> list[tuple[int, int]]:
    bounds = [n * j // parts for j in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


# ------------------------------------------------------------------------------------------ sync
def _sync(model: GloVe, base: dict[str, torch.Tensor], group: WorkerGroup) -> None:
    """Apply every replica's change since the last sync once (sum of deltas) to the parameters and G."""
    for name in ("params", "gradsq"):
        current = getattr(model, name)
        delta = current - base[name]
        group.all_reduce_(delta)
        base[name].add_(delta)
        current.copy_(base[name])


# ------------------------------------------------------------------------------------------ loop
def train_loop(config: dict[str, Any]) -> dict[str, Any] | None:
    """Train GloVe on this worker's share; rank 0 writes ``<out_dir>/vectors`` and returns the statistics."""
    job = from_config(GloveJob, config)
    cfg = job.config
    group = WorkerGroup.current(job.use_gpu)
    torch.set_num_threads(job.threads)
    tokens, counts = read_vocab_tsv(job.vocab_path)
    rows_np, cols_np, x_np = load_share(job.shards, group.rank, group.world_size)
    shares = group.gather(len(rows_np))
    if sum(shares) == 0:
        raise ValueError(
            f"{Path(job.vocab_path).parent}: the co-occurrence matrix is empty; nothing to train on"
        )
    syncs = job.syncs_per_epoch or max(1, math.ceil(max(shares) / SYNC_ENTRIES))
    device = group.device
    rows = torch.from_numpy(rows_np).to(device)
    cols = torch.from_numpy(cols_np).to(device)
    x = torch.from_numpy(x_np)
    logx = torch.log(x).to(device, torch.float32)
    fx = weighting(x, cfg.x_max, cfg.alpha).to(device, torch.float32)  # computed in float64, stored float32
    model = GloVe(len(tokens), cfg, device=device)  # same seed: the same initial parameters on every rank
    checkpoints = Checkpoints(Path(job.checkpoint_dir), "glove", group, cfg.seed)
    resumed = checkpoints.resume()  # the shuffles are a function of (seed, rank, epoch): nothing per rank
    if resumed is not None:
        model.load_state_dict(resumed.state)
    start = resumed.epoch if resumed is not None else 0
    base = {"params": model.params.clone(), "gradsq": model.gradsq.clone()} if group.world_size > 1 else None
    epochs: list[dict[str, Any]] = []
    for epoch in range(start, cfg.epochs):
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(rank_seed(cfg.seed, group.rank, epoch))
        order = torch.randperm(len(rows), generator=generator).to(device)
        cost = sync_seconds = 0.0
        progress = EpochProgress(f"glove epoch {epoch + 1}/{cfg.epochs}", len(rows), "entries", enabled=group.rank == 0)
        for a, b in _parts(len(rows), syncs if base is not None else 1):
            idx = order[a:b]
            cost += model.train_entries(rows[idx], cols[idx], logx[idx], fx[idx], progress)
            if base is not None:
                t = time.perf_counter()
                _sync(model, base, group)
                sync_seconds += time.perf_counter() - t
        per_rank = group.per_rank_sum([len(rows), cost, time.perf_counter() - started])
        seconds = time.perf_counter() - started
        entries = int(per_rank[:, 0].sum())
        summary = {
            "epoch": epoch + 1,
            "entries": entries,
            "cost": float(per_rank[:, 1].sum() / max(entries, 1)),  # glove.c's "cost": mean of 0.5 f diff^2
            "seconds": round(seconds, 3),
            "sync_seconds": round(sync_seconds, 3),
            "entries_per_second": round(entries / max(seconds, 1e-9), 1),
        }
        epochs.append(summary)
        end_epoch(
            checkpoints, epoch + 1, cfg.epochs, figure=("cost", summary["cost"]), shared=model.state_dict,
            meta={"entries": entries, "shape": list(model.params.shape)}, metrics=summary,
            log=f"glove epoch {epoch + 1}/{cfg.epochs}: {entries} entries, {summary['entries_per_second']:.0f} "
            f"entries/s, cost {summary['cost']:.5f}, sync {sync_seconds:.2f} s",
            hint="lower glove.eta or glove.grad_clip", stop_after_epoch=job.stop_after_epoch,
        )  # fmt: skip
    processes = placement(group)  # where every rank ran and its peak memory, for the manifest
    if group.rank != 0:
        return None
    vectors = Vectors(tokens, model.vectors(job.output).numpy(), counts, source="glove")
    vectors.save(Path(job.out_dir) / "vectors")
    return {
        "epochs": epochs,
        "resumed_after_epoch": start,
        "world_size": group.world_size,
        "device": str(device),
        "share_entries": shares,
        "syncs_per_epoch": syncs if group.world_size > 1 else 0,
        "vectors": {"count": len(vectors), "dim": vectors.dim},
        "processes": processes,
    }
