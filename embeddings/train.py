"""SGNS training entry: one ``train_loop(config)`` for one worker and for N data-parallel workers.

The sgns stage runs it under Ray Train (``TorchTrainer``, ``ScalingConfig(num_workers=workers)``, gloo on
CPU, NCCL with ``use_gpu``); it also runs as a plain function (one process) or under ``torchrun`` (then
``torch.distributed`` gives rank and world size).  One worker is the degree-1 case, not a second path::

    shards   part-0  part-1  part-2  part-3  part-4          shard i -> rank i % world_size
    rank 0   [part-0          part-2          part-4]        each rank: its own share, the global
    rank 1   [        part-1          part-3        ]        learning-rate schedule over that share

    one epoch of a rank, cut into syncs_per_epoch parts of about equal words (by sentence; default: one
    part per SYNC_WORDS words of the largest share, the same count on every rank):
    rank 0   |--- part 1 ---|--- part 2 ---|--- part 3 ---|--- part 4 ---|
    rank 1   |-- part 1 --|-- part 2 --|-- part 3 --|-- part 4 --|         (another share size)
                          ^ sync       ^ sync       ^ sync       ^ sync    every rank, same count

    sync:  D = W - W_last_sync (both matrices, one (2V, d) buffer); all-reduce(SUM) of D (and, for ``touched``,
           of the touched-row indicator D[r] != 0); W = merge_deltas(W_last_sync, sum D, touched, scheme)

Why periodic model merging and not DDP: a skip-gram step touches a few thousand rows of a V x d table, so
all-reducing gradients every step would move V x d floats per step (and NCCL has no sparse all-reduce).
Merging deltas every ~100k words per worker is the compromise: Hogwild across processes, in coarse steps
(``embeddings.sync`` has the three merge schemes).  A rank with no shard trains nothing but joins every sync.

The dense all-reduce moves 2 x V x d float32 per rank per sync (PTB: 8 MB; 1M words x 300: 2.4 GB).
Measured on 2 CPU workers (V 24k, d 100): ~0.14 s per sync including the wait for the slower worker, 22%
of training at one sync per 100k words.  It stops being fine when one transfer approaches the time to
train one part (100k words: ~0.3 s per CPU worker here; a GPU trains a part far faster, so it gets there
first); then exchange row-sparse deltas instead: all-gather the touched row ids and all-reduce only the
union's rows (the merge formulas are unchanged on those rows), which pays off once V is much larger than
the rows a part touches (vocabularies of millions).

Checkpoints: after every epoch rank 0 writes ``<checkpoint_dir>/epoch-NNN/`` (both matrices, every rank's
random streams and ``words_done``, ``meta.json`` last, then an atomic rename) outside the stage's
temporary folder, and every rank calls ``ray.train.report`` (rank 0 attaching a pointer checkpoint).  On
start the latest complete epoch is loaded, so a killed run rerun with the same settings continues there
and, with the same world size, ends with the same vectors as an uninterrupted run (bit for bit with
``threads=1``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.distributed as dist

from embeddings.sgns import SGNS, SGNSConfig, sentences_from_arrow
from embeddings.sync import merge_deltas
from embeddings.vectors import Vectors
from pipelines.schemas import BOS_ID, EOS_ID, FIRST_WORD_ID
from pipelines.vocab import Vocab

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "lmpipe.sgns-checkpoint"
CHECKPOINT_VERSION = 1
#: Words of a worker's share between merges when ``syncs_per_epoch`` is not given.  Measured with 2 workers
#: (bench/RESULTS.md): parts of ~110k words kept PTB and 3.6M English words at 1 worker's quality, parts of
#: ~450k words lost a third of the analogy accuracy.
SYNC_WORDS = 100_000


class StopAfterEpoch(RuntimeError):
    """Raised on every rank after ``stop_after_epoch``'s checkpoint: a deliberate kill, for resume tests."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainJob:
    """Everything ``train_loop`` needs, as plain data (Ray passes ``train_loop_config`` as a dict)."""

    vocab_path: str  # RUN/tokenize/vocab.tsv: tokens and global counts (subsampling, noise, the cut)
    shards: tuple[str, ...]  # train token shards, input order
    out_dir: str  # rank 0 writes <out_dir>/vectors (the stage's temporary folder)
    checkpoint_dir: str  # RUN/.checkpoints/sgns-<fingerprint>; survives a crash
    config: SGNSConfig  # drop_ids is replaced by the min_count cut
    min_count: int = 5
    threads: int = 1
    syncs_per_epoch: int | None = None  # None: one per SYNC_WORDS words of the largest share
    sync: str = "touched"
    use_gpu: bool = False
    stop_after_epoch: int | None = None

    def to_config(self) -> dict[str, Any]:
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, "config": dataclasses.asdict(self.config)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TrainJob:
        cfg = dict(config["config"])
        cfg["drop_ids"] = tuple(cfg.get("drop_ids", ()))
        return cls(**{**config, "shards": tuple(config["shards"]), "config": SGNSConfig(**cfg)})


def vocabulary_cut(counts: np.ndarray, min_count: int) -> tuple[np.ndarray, np.ndarray]:
    """``(keep, drop)`` id arrays: words counted ``min_count`` times or more are trained and exported, in id
    order; ``<unk>`` and rarer words are removed before windowing (word2vec's min-count).  ``<s>``/``</s>``
    are in neither: they never occur inside the token shards."""
    ids = np.arange(len(counts))
    words = ids >= FIRST_WORD_ID
    keep = words & (np.asarray(counts) >= min_count)
    drop = ~keep & (ids != BOS_ID) & (ids != EOS_ID)
    return ids[keep], ids[drop]


# ------------------------------------------------------------------------------------------ data
def shard_words(path: str) -> int:
    """Tokens in one shard, from the list offsets only (no ids are read)."""
    reader = pa.ipc.open_file(pa.memory_map(path))
    total = 0
    for i in range(reader.num_record_batches):
        offsets = reader.get_batch(i).column("ids").offsets
        total += offsets[-1].as_py() - offsets[0].as_py()
    return total


def iter_sentences(paths: Iterable[str]) -> Iterator[np.ndarray]:
    """Sentences (uint32 id arrays, views of the memory-mapped shards) in shard and row order."""
    for path in paths:
        reader = pa.ipc.open_file(pa.memory_map(path))  # buffers keep the mapping alive after the loop
        for i in range(reader.num_record_batches):
            yield from sentences_from_arrow(reader.get_batch(i))


def split_parts(sentences: Iterable[np.ndarray], total_words: int, parts: int) -> Iterator[Iterator[np.ndarray]]:
    """Cut one pass into exactly ``parts`` consecutive runs: a sentence belongs to part j when the words
    before it are fewer than ``total_words * (j + 1) / parts``.  Parts may be empty (every rank must still
    sync ``parts`` times); the last part takes whatever is left.  Consume each part before the next."""
    source = iter(sentences)
    pending: list[np.ndarray] = []
    done = 0

    def part(bound: float) -> Iterator[np.ndarray]:
        nonlocal done
        while True:
            if not pending:
                nxt = next(source, None)
                if nxt is None:
                    return
                pending.append(nxt)
            if done >= bound:
                return
            sentence = pending.pop()
            done += len(sentence)
            yield sentence

    for j in range(parts):
        yield part(float("inf") if j == parts - 1 else total_words * (j + 1) / parts)


# ------------------------------------------------------------------------------------------ group
@dataclass(frozen=True, slots=True)
class _Group:
    """This process's place among the data-parallel workers."""

    rank: int
    world_size: int
    device: torch.device
    in_ray: bool  # inside a Ray Train worker: report to Ray Train

    @classmethod
    def current(cls, use_gpu: bool) -> _Group:
        in_ray = False
        try:
            import ray.train

            ctx = ray.train.get_context()
            rank, world, in_ray = ctx.get_world_rank(), ctx.get_world_size(), True
        except (ImportError, RuntimeError):  # a plain process or torchrun
            rank = dist.get_rank() if dist.is_initialized() else 0
            world = dist.get_world_size() if dist.is_initialized() else 1
        device = torch.device("cpu")
        if use_gpu:
            if in_ray:
                import ray.train.torch

                device = ray.train.torch.get_device()
            else:
                device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)  # NCCL object collectives use the current device
        return cls(rank, world, device, in_ray)

    def all_reduce_(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def gather(self, obj: Any) -> list[Any]:
        if self.world_size == 1:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


def _sync(model: SGNS, base: torch.Tensor, group: _Group, scheme: str) -> None:
    """Merge the replicas: ``base`` (2V x d, both matrices at the last sync) becomes the merged parameters."""
    v = model.w_in.shape[0]
    delta = torch.cat([model.w_in, model.w_out]).sub_(base)  # (2V, d): one all-reduce for both matrices
    touched = (delta != 0).any(1).to(delta.dtype)  # (2V,)
    group.all_reduce_(delta)
    if scheme == "touched":  # the other schemes do not read it: skip the second all-reduce
        group.all_reduce_(touched)
    base.copy_(merge_deltas(base, delta, touched, world_size=group.world_size, scheme=scheme))
    model.w_in.copy_(base[:v])
    model.w_out.copy_(base[v:])


# ------------------------------------------------------------------------------------------ state
def _streams(seed: int, device: torch.device) -> dict[str, Any]:
    """Fresh random streams in the layout of ``SGNS.state_dict`` (numpy bit generator, torch generator)."""
    return {
        "rng": np.random.default_rng(seed).bit_generator.state,
        "generator": torch.Generator(device=device).manual_seed(seed).get_state(),
    }


def _rank_seed(seed: int, *key: int) -> int:
    return int(np.random.SeedSequence([seed, *key]).generate_state(1, np.uint64)[0] >> 1)


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest ``epoch-NNN`` folder with its ``meta.json`` (written last), or None."""
    done = sorted(p for p in Path(checkpoint_dir).glob("epoch-[0-9][0-9][0-9]") if (p / "meta.json").is_file())
    return done[-1] if done else None


def _write_checkpoint(checkpoint_dir: Path, model: SGNS, epoch: int, ranks: list[dict[str, Any]]) -> Path:
    """Rank 0: ``epoch-NNN/`` = state.pt (matrices, every rank's streams) + meta.json, renamed into place;
    older epochs are removed once the new one is complete."""
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    tmp = checkpoint_dir / f".epoch-{epoch:03d}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    state = {"w_in": model.w_in.detach().cpu(), "w_out": model.w_out.detach().cpu(), "ranks": ranks}
    torch.save(state, tmp / "state.pt")
    meta = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "epoch": epoch, "world_size": len(ranks),
        "words_done": [r["words_done"] for r in ranks], "shape": list(model.w_in.shape),
    }  # fmt: skip
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    final = checkpoint_dir / f"epoch-{epoch:03d}"
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in checkpoint_dir.glob("epoch-[0-9][0-9][0-9]"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    for stale in checkpoint_dir.glob(".epoch-*.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return final


def _resume(model: SGNS, path: Path, group: _Group, share: int) -> int:
    """Load a checkpoint into ``model``; returns the epochs already done.  With another world size the
    matrices and the schedule position carry over but the random streams cannot (logged)."""
    meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    if list(state["w_in"].shape) != list(model.w_in.shape):
        raise ValueError(f"{path}: checkpoint shape {list(state['w_in'].shape)} != model {list(model.w_in.shape)}")
    epoch = int(meta["epoch"])
    if meta["world_size"] == group.world_size:
        mine = state["ranks"][group.rank]
    else:
        logger.warning(
            "%s was written by %d workers, resuming with %d: same matrices, new random streams",
            path, meta["world_size"], group.world_size,
        )  # fmt: skip
        mine = {**_streams(_rank_seed(model.config.seed, group.rank, epoch), group.device), "words_done": epoch * share}
    model.load_state_dict({"w_in": state["w_in"], "w_out": state["w_out"], "epoch": epoch, **mine})
    return epoch


def _report(group: _Group, metrics: dict[str, Any], checkpoint: Path | None) -> None:
    """``ray.train.report`` on every rank; rank 0 attaches a small checkpoint naming the epoch folder, so
    Ray's storage does not hold a second copy of the matrices."""
    if not group.in_ray:
        return
    import ray.train

    if checkpoint is None:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="sgns-report-") as tmp:
        Path(tmp, "checkpoint.json").write_text(json.dumps({"path": str(checkpoint), **metrics}), encoding="utf-8")
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


# ------------------------------------------------------------------------------------------ loop
def train_loop(config: dict[str, Any]) -> dict[str, Any] | None:
    """Train SGNS on this worker's share; rank 0 writes ``<out_dir>/vectors`` and returns the statistics."""
    job = TrainJob.from_config(config)
    group = _Group.current(job.use_gpu)
    torch.set_num_threads(1)  # parallelism is workers x Hogwild threads; also makes index_add_ deterministic
    vocab = Vocab.load(Path(job.vocab_path))
    keep, drop = vocabulary_cut(vocab.counts, job.min_count)
    mine = list(job.shards[group.rank :: group.world_size])
    share = sum(shard_words(p) for p in mine)
    shares = group.gather(share)
    syncs = job.syncs_per_epoch or max(1, math.ceil(max(shares) / SYNC_WORDS))  # the same on every rank
    model = SGNS(
        vocab.counts, dataclasses.replace(job.config, drop_ids=tuple(int(i) for i in drop)),
        device=group.device, words_per_epoch=max(share, 1),
    )  # fmt: skip
    if group.rank > 0:  # same initial matrices on every rank (same seed), independent sampling streams
        model.load_state_dict({**model.state_dict(), **_streams(_rank_seed(job.config.seed, group.rank), group.device)})
    checkpoint_dir = Path(job.checkpoint_dir)
    found = latest_checkpoint(checkpoint_dir)
    start = _resume(model, found, group, share) if found is not None else 0
    if found is not None:
        logger.info("rank %d: resuming after epoch %d from %s", group.rank, start, found)
    base = torch.cat([model.w_in, model.w_out]) if group.world_size > 1 else None
    epochs: list[dict[str, Any]] = []
    for epoch in range(start, job.config.epochs):
        started = time.perf_counter()
        words = pairs = 0
        loss = sync_seconds = 0.0
        sentences = iter_sentences(mine)
        parts: Iterable[Iterable[np.ndarray]] = (
            [sentences] if base is None else split_parts(sentences, share, syncs)
        )
        for part in parts:
            model.epoch = epoch  # train_epoch counts calls; all parts belong to this epoch
            stats = model.train_epoch(part, threads=job.threads)
            words, pairs, loss = words + stats.words, pairs + stats.pairs, loss + stats.loss * stats.pairs
            if base is not None:
                t = time.perf_counter()
                _sync(model, base, group, job.sync)
                sync_seconds += time.perf_counter() - t
        model.epoch = epoch + 1
        train_seconds = time.perf_counter() - started
        row = torch.zeros(group.world_size, 4, dtype=torch.float64, device=group.device)
        row[group.rank] = torch.tensor([words, pairs, loss, train_seconds], dtype=torch.float64)
        per_rank = group.all_reduce_(row).cpu().numpy()
        seconds = time.perf_counter() - started
        summary = {
            "epoch": epoch + 1,
            "words": int(per_rank[:, 0].sum()),
            "words_per_rank": [int(w) for w in per_rank[:, 0]],
            "pairs": int(per_rank[:, 1].sum()),
            "loss": float(per_rank[:, 2].sum() / max(per_rank[:, 1].sum(), 1)),
            "seconds": round(seconds, 3),
            "sync_seconds": round(sync_seconds, 3),
            "words_per_second": round(per_rank[:, 0].sum() / max(seconds, 1e-9), 1),
            "lr": model.learning_rate(),
        }
        if not math.isfinite(summary["loss"]):
            # Every rank sees the same all-reduced loss, so all stop together (no rank is left in a collective);
            # this epoch's parameters are not checkpointed, the last good epoch stays on disk.
            raise FloatingPointError(
                f"sgns: the loss became {summary['loss']} in epoch {epoch + 1} (after {model.words_done:,} words on rank "
                f"{group.rank}); the last good checkpoint is kept in {checkpoint_dir} (epoch {epoch}); lower sgns.alpha "
                "or sgns.batch_pairs and rerun"
            )
        epochs.append(summary)
        streams = model.state_dict()
        ranks = group.gather({"rng": streams["rng"], "generator": streams["generator"], "words_done": model.words_done})
        written = _write_checkpoint(checkpoint_dir, model, epoch + 1, ranks) if group.rank == 0 else None
        _report(group, {k: v for k, v in summary.items() if k != "words_per_rank"}, written)
        if group.rank == 0:
            logger.info(
                "sgns epoch %d/%d: %d words, %.0f words/s, loss %.4f, sync %.2f s",
                epoch + 1, job.config.epochs, summary["words"], summary["words_per_second"], summary["loss"], sync_seconds,
            )  # fmt: skip
        if epoch + 1 == job.stop_after_epoch and epoch + 1 < job.config.epochs:
            raise StopAfterEpoch(f"stopped after epoch {epoch + 1} of {job.config.epochs} (stop_after_epoch)")
    if group.rank != 0:
        return None
    tokens = vocab.tokens.to_pylist()
    matrix = model.w_in.detach().to("cpu", torch.float32).numpy()[keep]
    vectors = Vectors([tokens[i] for i in keep], np.ascontiguousarray(matrix), vocab.counts[keep], source="sgns")
    vectors.save(Path(job.out_dir) / "vectors")
    return {
        "epochs": epochs,
        "resumed_after_epoch": start,
        "world_size": group.world_size,
        "device": str(group.device),
        "share_words": shares,
        "syncs_per_epoch": syncs if group.world_size > 1 else 0,
        "vectors": {"count": len(vectors), "dim": vectors.dim},
    }
