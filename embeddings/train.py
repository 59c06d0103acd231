"""SGNS training entry: one ``train_loop(config)`` for one worker and for N data-parallel workers.

The sgns stage runs it under Ray Train (``TorchTrainer``, ``ScalingConfig(num_workers=workers)``, gloo on
CPU, NCCL with ``use_gpu``); it also runs as a plain function (one process) or under ``torchrun`` (then
``torch.distributed`` gives rank and world size).  One worker is the degree-1 case, not a second path::

    training words, shards in order:  [shard 0 ][shard 1      ][shard 2 ][shard 3   ]   T words in all
    rank r of n: the sentences whose first word lies in [T r / n, T (r+1) / n)  (Share: equal to one sentence,
    whatever the shard sizes); each rank follows the global learning-rate schedule over its own share

    one epoch of a rank, cut into syncs_per_epoch parts of about equal words (by sentence; default: one
    part per SYNC_WORDS words of the largest share, the same count on every rank):
    rank 0   |--- part 1 ---|--- part 2 ---|--- part 3 ---|--- part 4 ---|
    rank 1   |--- part 1 ---|--- part 2 ---|--- part 3 ---|--- part 4 ---|
                            ^ step         ^ step         ^ step         ^ step + flush (end of epoch)

    step k:  D_k = W - W_after_last_merge (both matrices, one (2V, d) buffer); start all-reduce(SUM) of D_k
             (and, for ``touched``, of the touched-row indicator D_k[r] != 0) in the background; apply
             round k-1's merge W += f(sum D_{k-1}) - D_{k-1}; train part k+1 while round k travels
    flush:   wait for the last round, apply it, broadcast rank 0's W (all replicas equal before a checkpoint)

Why periodic model merging and not DDP: a skip-gram step touches a few thousand rows of a V x d table, so
all-reducing gradients every step would move V x d floats per step (and NCCL has no sparse all-reduce).
Merging deltas every ~100k words per worker is the compromise: Hogwild across processes, in coarse steps
(``embeddings.sync`` has the three merge schemes).  A rank with no shard trains nothing but joins every sync.

The dense all-reduce moves 2 x V x d float32 per rank per sync (PTB: 8 MB; 1M words x 300: 2.4 GB).
Measured on 2 CPU workers (V 24k, d 100): the all-reduce itself takes ~17 ms and the delta ~13 ms, but a
synchronous merge cost ~0.14 s, 22% of training at one merge per 100k words, because every rank waited for
the slower one at each merge; the overlapped merge (``ReplicaSync``, default) hides that wait.  It stops being fine when one transfer approaches the time to
train one part (100k words: ~0.3 s per CPU worker here; a GPU trains a part far faster, so it gets there
first); then exchange row-sparse deltas instead: all-gather the touched row ids and all-reduce only the
union's rows (the merge formulas are unchanged on those rows), which pays off once V is much larger than
the rows a part touches (vocabularies of millions).

Checkpoints: after every epoch but the last (its vectors are written right after, and the stage then drops
its checkpoints) rank 0 writes ``<checkpoint_dir>/epoch-NNN/`` (both matrices as ``.npy`` files, every rank's
random streams and ``words_done`` in ``state.json``: ``Checkpoints(storage="numpy")``, so the CPU path needs
no torch; ``meta.json`` last, then an atomic rename) outside the stage's temporary folder, and every rank calls ``ray.train.report`` (rank 0 attaching a pointer checkpoint).  On
start the latest complete epoch is loaded, so a killed run rerun with the same settings continues there
and, with the same world size, ends with the same vectors as an uninterrupted run (bit for bit with
``threads=1``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from lmpipe.cluster.training import (
    Checkpoints,
    Resumed,
    WorkerGroup,
    end_epoch,
    from_config,
    placement,
    rank_seed,
)
from lmpipe.embeddings.sgns import SGNS, SGNSConfig, sentences_from_arrow
from lmpipe.embeddings.sync import merge_deltas
from lmpipe.embeddings.vectors import Vectors
from lmpipe.pipelines.core.faults import inject
from lmpipe.pipelines.core.progress import EpochProgress
from lmpipe.pipelines.core.schemas import BOS_ID, EOS_ID, FIRST_WORD_ID
from lmpipe.pipelines.core.shards import numpy_view, shard_batches
from lmpipe.pipelines.core.vocab import Vocab

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: Words of a worker's share between merges when ``syncs_per_epoch`` is not given.  Measured with 2 workers
#: (bench/RESULTS.md): parts of ~110k words kept PTB and 3.6M English words at 1 worker's quality, parts of
#: ~450k words lost a third of the analogy accuracy.
SYNC_WORDS = 100_000


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainJob:
    """Everything ``train_loop`` needs, as plain data (Ray passes ``train_loop_config`` as a dict:
    ``cluster.training.to_config`` / ``from_config``).  The settings come from ``SgnsSpec`` by name
    (``cluster.training.config_from``); none has a default here, so none can disagree with the spec's."""

    vocab_path: str  # RUN/tokenize/vocab.tsv: tokens and global counts (subsampling, noise, the cut)
    shards: tuple[str, ...]  # train token shards, input order
    out_dir: str  # rank 0 writes <out_dir>/vectors (the stage's temporary folder)
    checkpoint_dir: str  # RUN/.checkpoints/sgns-<fingerprint>; survives a crash
    config: SGNSConfig  # drop_ids is replaced by the min_count cut
    min_count: int
    threads: int
    syncs_per_epoch: int | None  # None: one per SYNC_WORDS words of the largest share
    sync: str
    overlap_sync: bool  # all-reduce a part's delta while the next part trains (ReplicaSync)
    use_gpu: bool
    stop_after_epoch: int | None = None


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
    total = 0
    for batch in shard_batches(path, ["ids"]):
        offsets = batch.column(0).offsets
        total += offsets[-1].as_py() - offsets[0].as_py()
    return total


@dataclass(frozen=True, slots=True)
class Share:
    """One worker's share of the training sentences: those whose first word's position in the whole
    training stream (shards in order) falls in ``[start, stop)`` = rank r's ``[T r / n, T (r+1) / n)``.

    Cutting the word stream, not the list of shards, gives every rank the same number of words to within
    one sentence whatever the number and sizes of the shards (shard ``i -> rank i % n`` left one worker
    with a whole extra shard when shards were few), and only the shards that overlap the range are opened.
    """

    paths: tuple[str, ...]
    shard_sizes: tuple[int, ...]  # words per shard
    start: int
    stop: int

    @classmethod
    def of(cls, paths: Iterable[str], rank: int, world_size: int) -> Share:
        paths = tuple(paths)
        sizes = tuple(shard_words(p) for p in paths)
        total = sum(sizes)
        return cls(paths, sizes, total * rank // world_size, total * (rank + 1) // world_size)

    def _rows(self) -> Iterator[tuple[pa.RecordBatch, int, int]]:
        """(record batch, first row, stop row) of this share's sentences, in stream order."""
        shard_start = 0
        for path, size in zip(self.paths, self.shard_sizes, strict=True):
            first, shard_start = shard_start, shard_start + size
            if size == 0 or first >= self.stop or shard_start <= self.start:
                continue  # every sentence of this shard starts outside [start, stop)
            for batch in shard_batches(path):
                offsets = numpy_view(batch.column("ids").offsets)
                starts = first + offsets[:-1] - offsets[0]  # global position of each sentence's first word
                first += int(offsets[-1] - offsets[0])
                lo, hi = np.searchsorted(starts, [self.start, self.stop])
                if hi > lo:
                    yield batch, int(lo), int(hi)

    @property
    def words(self) -> int:
        total = 0
        for batch, lo, hi in self._rows():
            offsets = batch.column("ids").offsets
            total += offsets[hi].as_py() - offsets[lo].as_py()
        return total

    def sentences(self) -> Iterator[np.ndarray]:
        """The share's sentences (uint32 id arrays, views of the memory-mapped shards) in stream order."""
        for batch, lo, hi in self._rows():
            yield from sentences_from_arrow(batch.slice(lo, hi - lo))


def split_parts(
    sentences: Iterable[np.ndarray], total_words: int, parts: int
) -> Iterator[Iterator[np.ndarray]]:
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


# ------------------------------------------------------------------------------------------ sync
class ReplicaSync:
    """Periodic merging of the workers' replicas (see the module docstring), optionally overlapped.

    ``step()`` at the end of every part, ``flush()`` at the end of the epoch.  Synchronous (``overlap``
    false): all-reduce this part's delta and apply the merge before training on.  Overlapped (the default):
    start the all-reduce of this part's delta in the background, apply the *previous* part's merge, and
    train the next part meanwhile: the other workers' updates arrive one part late, and the wait for the
    slowest worker is absorbed unless it lags by a whole part.  Either way every worker's update is applied
    once (``sum``), and after ``flush`` every replica holds rank 0's parameters bit for bit.

    One round's merge is ``W += f(S, m) - D``: ``D`` is this worker's own delta for the round (already in
    ``W``), ``S`` the all-reduced sum of the deltas, ``m`` the touched-row counts, ``f`` the scheme
    (``merge_deltas`` from a zero base).  The next round's delta is measured from the parameters after the
    correction, so only the worker's own training enters it.
    """

    def __init__(self, model: SGNS, group: WorkerGroup, scheme: str, *, overlap: bool = True) -> None:
        self.model, self.group, self.scheme, self.overlap = model, group, scheme, overlap
        self.base = self._params()  # parameters after the last applied merge (own deltas start here)
        self._pending: _Round | None = None
        self.seconds = 0.0  # time spent in step/flush, waits included

    def _matrices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Both matrices as tensors: themselves (torch backend) or sharing the numpy arrays' memory (numba)."""
        import torch

        return torch.as_tensor(self.model.w_in), torch.as_tensor(self.model.w_out)

    def _params(self) -> torch.Tensor:
        import torch

        return torch.cat(self._matrices())  # (2 rows, d): one all-reduce for both matrices

    def _set(self, params: torch.Tensor) -> None:
        w_in, w_out = self._matrices()
        w_in.copy_(params[: len(w_in)])
        w_out.copy_(params[len(w_in) :])

    def _start(self, delta: torch.Tensor) -> _Round:
        import torch.distributed as dist

        total = delta.clone()
        touched = (delta != 0).any(1).to(delta.dtype) if self.scheme == "touched" else None
        work = [dist.all_reduce(total, op=dist.ReduceOp.SUM, async_op=True)]
        if touched is not None:  # the other schemes do not read it: skip the second all-reduce
            work.append(dist.all_reduce(touched, op=dist.ReduceOp.SUM, async_op=True))
        return _Round(work, total, touched, delta)

    def _correction(self, rnd: _Round) -> torch.Tensor:
        import torch

        for w in rnd.work:
            w.wait()
        zero = torch.zeros((), dtype=rnd.total.dtype, device=rnd.total.device)
        merged = merge_deltas(
            zero, rnd.total, rnd.touched, world_size=self.group.world_size, scheme=self.scheme
        )
        return merged.sub_(rnd.own)

    def step(self) -> None:
        t = time.perf_counter()
        params = self._params()
        launched = self._start(params - self.base)
        if not self.overlap:
            params += self._correction(launched)
        else:
            if self._pending is not None:
                params += self._correction(self._pending)
            self._pending = launched
        self._set(params)
        self.base = params
        self.seconds += time.perf_counter() - t

    def flush(self) -> None:
        """Apply the round in flight and make every replica equal to rank 0's (sums taken in another order
        differ in the last bits)."""
        import torch.distributed as dist

        t = time.perf_counter()
        params = self._params()
        if self._pending is not None:
            params += self._correction(self._pending)
            self._pending = None
        dist.broadcast(params, src=0)
        self._set(params)
        self.base = params
        self.seconds += time.perf_counter() - t


@dataclass(frozen=True, slots=True)
class _Round:
    """One merge round in flight: the all-reduce handles, its buffers and this worker's own delta."""

    work: list[Any]
    total: torch.Tensor
    touched: torch.Tensor | None
    own: torch.Tensor


# ------------------------------------------------------------------------------------------ state
def _resume(model: SGNS, resumed: Resumed, group: WorkerGroup, share: int) -> int:
    """Load a checkpoint into ``model``; returns the epochs already done.  At another world size
    (``cluster.training.OTHER_WORLD_SIZE``) the matrices and the schedule position carry over and this rank's
    sampling streams start afresh from ``(seed, rank, epoch)``."""
    state, epoch = resumed.state, resumed.epoch
    if list(state["w_in"].shape) != list(model.w_in.shape):
        raise ValueError(
            f"{resumed.path}: checkpoint shape {list(state['w_in'].shape)} != model {list(model.w_in.shape)}"
        )
    mine = resumed.rank_state or {
        "sampling": model.seeded_streams(rank_seed(model.config.seed, group.rank, epoch)),
        "words_done": epoch * share,
    }
    model.load_state_dict(
        {"w_in": state["w_in"], "w_out": state["w_out"], "epoch": epoch, "words_done": mine["words_done"],
         **mine["sampling"]}
    )  # fmt: skip
    return epoch


# ------------------------------------------------------------------------------------------ loop
def train_loop(config: dict[str, Any]) -> dict[str, Any] | None:
    """Train SGNS on this worker's share; rank 0 writes ``<out_dir>/vectors`` and returns the statistics."""
    job = from_config(TrainJob, config)
    group = WorkerGroup.current(job.use_gpu)
    vocab = Vocab.load(Path(job.vocab_path))
    keep, drop = vocabulary_cut(vocab.counts, job.min_count)
    mine = Share.of(job.shards, group.rank, group.world_size)
    share = mine.words
    shares = group.gather(share)
    syncs = job.syncs_per_epoch or max(1, math.ceil(max(shares) / SYNC_WORDS))  # the same on every rank
    model = SGNS(
        vocab.counts, dataclasses.replace(job.config, drop_ids=tuple(int(i) for i in drop)),
        device=group.device_name, words_per_epoch=max(share, 1),
    )  # fmt: skip
    if model.backend == "torch" or group.world_size > 1:  # torch is imported there already
        import torch

        torch.set_num_threads(1)  # parallelism is workers x Hogwild threads; also makes index_add_ deterministic
    if group.rank > 0:  # same initial matrices on every rank (same seed), independent sampling streams
        model.load_state_dict({**model.state_dict(), **model.seeded_streams(rank_seed(job.config.seed, group.rank))})
    checkpoints = Checkpoints(Path(job.checkpoint_dir), "sgns", group, job.config.seed, storage="numpy")
    resumed = checkpoints.resume()
    start = _resume(model, resumed, group, share) if resumed is not None else 0
    merger = ReplicaSync(model, group, job.sync, overlap=job.overlap_sync) if group.world_size > 1 else None
    epochs: list[dict[str, Any]] = []
    for epoch in range(start, job.config.epochs):
        started = time.perf_counter()
        words = pairs = 0
        loss = 0.0
        progress = EpochProgress(
            f"sgns epoch {epoch + 1}/{job.config.epochs}", share, "words", enabled=group.rank == 0
        )
        sentences = progress.wrap(mine.sentences(), len)
        parts: Iterable[Iterable[np.ndarray]] = (
            [sentences] if merger is None else split_parts(sentences, share, syncs)
        )
        for i, part in enumerate(parts):
            model.epoch = epoch  # train_epoch counts calls; all parts belong to this epoch
            stats = model.train_epoch(part, threads=job.threads)
            words, pairs, loss = words + stats.words, pairs + stats.pairs, loss + stats.loss * stats.pairs
            if merger is not None:
                merger.step()
                if i + 1 < syncs:
                    inject("sgns.mid_epoch")  # the fault-injection suite's worker kill between two merges
        sync_seconds = 0.0
        if merger is not None:
            merger.flush()
            sync_seconds, merger.seconds = merger.seconds, 0.0
        model.epoch = epoch + 1
        train_seconds = time.perf_counter() - started
        per_rank = group.per_rank_sum([words, pairs, loss, train_seconds])
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
        epochs.append(summary)
        streams = model.state_dict()
        end_epoch(
            checkpoints, epoch + 1, job.config.epochs, figure=("loss", summary["loss"]),
            shared=lambda: dict(zip(("w_in", "w_out"), model.host_matrices(), strict=True)),
            rank_state={"sampling": {"rng": streams["rng"], "generator": streams["generator"]},
                        "words_done": model.words_done},
            meta={"shape": list(model.w_in.shape)},
            metrics={k: v for k, v in summary.items() if k != "words_per_rank"},
            log=f"sgns epoch {epoch + 1}/{job.config.epochs}: {summary['words']} words, "
            f"{summary['words_per_second']:.0f} words/s, loss {summary['loss']:.4f}, sync {sync_seconds:.2f} s",
            detail=f" (after {model.words_done:,} words on rank {group.rank})",
            hint="lower sgns.alpha or sgns.batch_pairs", stop_after_epoch=job.stop_after_epoch,
            checkpoint_last=False,  # the vectors are written next and the stage then drops its checkpoints
        )  # fmt: skip
    processes = placement(group)  # where every rank ran and its peak memory, for the manifest
    if group.rank != 0:
        return None
    tokens = vocab.tokens.to_pylist()
    w_in = model.host_matrices()[0]  # every kept id has a row (model.rows: the ids up to the last kept)
    contiguous = int(keep[-1]) - int(keep[0]) + 1 == len(keep)  # a vocabulary sorted by count: no copy
    matrix = w_in[int(keep[0]) : int(keep[-1]) + 1] if contiguous else w_in[keep]
    vectors = Vectors(
        [tokens[i] for i in keep], np.ascontiguousarray(matrix), vocab.counts[keep], source="sgns"
    )
    vectors.save(Path(job.out_dir) / "vectors")
    return {
        "epochs": epochs,
        "resumed_after_epoch": start,
        "world_size": group.world_size,
        "device": group.device_name,
        "share_words": shares,
        "syncs_per_epoch": syncs if group.world_size > 1 else 0,
        "vectors": {"count": len(vectors), "dim": vectors.dim},
        "processes": processes,
    }
