"""Tagger training entry: one ``train_loop(config)`` for one worker and for N DDP workers (Ray Train).

The tagger stage runs it with ``cluster.training.fit`` (``TorchTrainer``, gloo on CPU, NCCL with ``use_gpu``);
``lmpipe tune`` calls :func:`train_tagger` in each trial with a callback that reports to Ray Tune; the tests
call it as a plain function.  One worker is the degree-1 case of the same code (no DDP wrapper).

    task k's training sentences, rank r of n: rows r, r + n, r + 2n, ...  (strided: equal to one sentence)
    step     one batch of every task (tasks cycle, reshuffled, while the largest makes one pass per epoch;
             the step count is the same on every rank); loss = sum_k weight_k x mean token NLL_k; backward
             (DDP averages over ranks); clip the global norm; a non-finite loss or norm on any rank stops all
             ranks at the same step with a FloatingPointError naming it
    epoch    predict every task's valid split (rank r takes rows r::n, gathered); early stopping and model
             selection on the first task's valid score (F1 for chunk tags, accuracy for token tags); checkpoint;
             report to Ray Train (or the tune callback)

Checkpoints (``cluster.training.end_epoch``): ``<checkpoint_dir>/epoch-NNN/state.pt`` holds the model,
optimiser, best model, schedule, history and every rank's RNG states; shuffles are seeded by (seed, rank,
epoch, task), so a rerun resumes after the last finished epoch and ends as an uninterrupted run would.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from lmpipe.cluster.training import Checkpoints, WorkerGroup, end_epoch, from_config, placement, rank_seed
from lmpipe.lm.tagging.data import UNK, Encoded, epoch_batches, pad_batch
from lmpipe.lm.tagging.metrics import score
from lmpipe.lm.tagging.models import Tagger, TaggerConfig, parameter_count
from lmpipe.pipelines.core.progress import EpochProgress

logger = logging.getLogger(__name__)

EVAL_BATCH = 256


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskData:
    """One task as the workers see it: where its encoded splits are and how to read its tags."""

    name: str
    kind: Literal["span", "token"]  # span: conlleval F1; token: accuracy
    tags: tuple[str, ...]  # training tags first, then tags seen only in valid/test
    train_tags: int  # the model predicts ids < train_tags
    splits: tuple[str, ...]  # encoded splits present: train, then valid/test if given
    weight: float = 1.0


@dataclass(frozen=True, kw_only=True, slots=True)
class OptimConfig:
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    lr_decay: float = 0.0  # lr_t = lr / (1 + lr_decay * t) (Ma & Hovy 2016: 0.05)
    unk_replace: float = 0.0  # P(a training singleton is read as <unk>) per occurrence (Lample et al.: 0.5)
    clip: float = 5.0  # max global gradient norm; 0 = off
    batch_size: int = 16  # sentences per task per worker
    epochs: int = 20
    patience: int | None = 5  # epochs without a better valid score before stopping
    seed: int = 1


@dataclass(frozen=True, kw_only=True, slots=True)
class TaggerJob:
    """Everything ``train_loop`` needs, as plain data (Ray passes ``train_loop_config`` as a dict:
    ``cluster.training.to_config`` / ``from_config``)."""

    data_dir: str  # task-<k>-<split>.npz (lm.tagging.data.Encoded), embedding-init.npz
    tasks: tuple[TaskData, ...]
    model: TaggerConfig
    optim: OptimConfig
    out_dir: str  # rank 0 writes model.pt + model.json
    checkpoint_dir: str
    embedding_init: bool = False
    freeze_vectors: bool = False
    threads: int
    use_gpu: bool
    stop_after_epoch: int | None = None


# ------------------------------------------------------------------------------------------ pieces
def make_optimizer(params: list[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"optimizer {cfg.optimizer!r}; options are ['sgd', 'adam']")


def build_model(job: TaggerJob, device: torch.device) -> tuple[Tagger, dict[str, int] | None]:
    """Same initial parameters on every rank (seeded); rows found in the pretrained vectors copied in."""
    torch.manual_seed(job.optim.seed)
    model = Tagger(job.model)
    init = None
    if job.embedding_init:
        with np.load(Path(job.data_dir) / "embedding-init.npz", allow_pickle=False) as z:
            matrix, found = z["matrix"], z["found"]
        with torch.no_grad():
            weight = model.words.weight
            rows = torch.from_numpy(np.flatnonzero(found))
            weight[rows] = torch.from_numpy(matrix[found]).to(weight.dtype)
            # rows without a vector: random with the vectors' spread, so they are on the same scale
            std = float(matrix[found].std()) if found.any() else 0.1
            missing = torch.from_numpy(np.flatnonzero(~found))
            missing = missing[missing > 0]
            weight[missing] = torch.randn(len(missing), weight.size(1)) * std
        if job.freeze_vectors:
            model.words.weight.requires_grad_(False)
        init = {"found": int(found.sum()), "random": int((~found).sum()) - 1}
    return model.to(device), init


def load_task_data(job: TaggerJob) -> list[dict[str, Encoded]]:
    return [
        {s: Encoded.load(Path(job.data_dir) / f"task-{k}-{s}.npz") for s in task.splits}
        for k, task in enumerate(job.tasks)
    ]


def predict_split(model: Tagger, data: Encoded, task: int, group: WorkerGroup) -> list[list[int]]:
    """Predicted tag ids of every sentence of ``data``: rank r predicts rows r::n (by length, for little
    padding), the pieces are gathered, so every rank returns the whole split."""
    model.eval()
    rows = np.arange(group.rank, len(data), group.world_size)
    lengths = data.offsets[rows + 1] - data.offsets[rows]
    rows = rows[np.argsort(lengths, kind="stable")]
    mine: dict[int, list[int]] = {}
    for start in range(0, len(rows), EVAL_BATCH):
        chunk = rows[start : start + EVAL_BATCH]
        words, case, chars, lens, _ = pad_batch(data, chunk, group.device)
        for i, pred in zip(chunk.tolist(), model.predict(task, words, case, lens, chars), strict=True):
            mine[i] = pred
    model.train()
    merged: dict[int, list[int]] = {}
    for part in group.gather(mine):
        merged.update(part)
    return [merged[i] for i in range(len(data))]


def split_gold(data: Encoded, tags: tuple[str, ...]) -> list[list[str]]:
    return [[tags[t] for t in data.sentence(i)[2].tolist()] for i in range(len(data))]


def _nonfinite(job: TaggerJob, kept: str, epoch: int, step: int, loss: float, norm: float, lr: float) -> FloatingPointError:
    clip = job.optim.clip
    hint = f"lower tagger.lr (the rate was {lr:g})" + (
        " or set tagger.clip (e.g. 5)" if clip <= 0 else f" or tagger.clip (now {clip:g})"
    )
    return FloatingPointError(
        f"tagger: the loss became {loss} (gradient norm {norm}) at step {step} of epoch {epoch + 1} on some worker; "
        f"{kept}; {hint} and rerun"
    )


def replace_singletons(
    batch: tuple[torch.Tensor, ...], singleton: torch.Tensor, p: float
) -> tuple[torch.Tensor, ...]:
    """``batch`` (words, case, chars, lengths, tags) with each singleton word id replaced by ``<unk>`` with probability
    ``p`` (torch's RNG: seeded per rank and kept in checkpoints, so a resumed run draws the same).  The case
    feature and the characters are kept: an unseen capitalised word still looks capitalised and is still spelt."""
    words = batch[0]
    drop = singleton[words] & (torch.rand(words.shape, device=words.device) < p)
    return (words.masked_fill(drop, UNK), *batch[1:])


def _state(model: Tagger, optimizer: torch.optim.Optimizer, best_state, schedule, history) -> dict[str, Any]:
    """What a checkpoint holds besides the ranks' streams: one replica (DDP keeps them equal)."""
    return {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "best": best_state,
        "schedule": dict(schedule),
        "history": history,
    }


# ------------------------------------------------------------------------------------------ loop
def train_loop(config: dict[str, Any]) -> dict[str, Any] | None:
    """Ray Train / plain entry: train on this worker's share; rank 0 returns the results."""
    job = from_config(TaggerJob, config)
    return train_tagger(job, WorkerGroup.current(job.use_gpu))


def train_tagger(
    job: TaggerJob, group: WorkerGroup, on_epoch: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any] | None:
    """Train, select the best valid epoch, predict valid/test; rank 0 writes the model and returns
    ``{"epochs", "best_epoch", "predictions": {task: {split: [[tag id]]}}, "scores", ...}``."""
    cfg = job.optim
    torch.set_num_threads(job.threads)
    data = load_task_data(job)
    model, embedding_init = build_model(job, group.device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, cfg)
    torch.manual_seed(rank_seed(cfg.seed, group.rank))  # dropout streams differ per rank
    shares = [np.arange(group.rank, len(d["train"]), group.world_size) for d in data]
    vocab_size = model.words.num_embeddings
    singletons = [  # over the whole training set, which every rank loads: the same words on every rank
        torch.from_numpy(np.bincount(d["train"].words, minlength=vocab_size) == 1).to(group.device) for d in data
    ]
    steps = max(math.ceil(math.ceil(len(d["train"]) / group.world_size) / cfg.batch_size) for d in data)
    weights = tuple(t.weight for t in job.tasks)
    primary, primary_valid = job.tasks[0], "valid" in job.tasks[0].splits
    valid_gold = {k: split_gold(d["valid"], job.tasks[k].tags) for k, d in enumerate(data) if "valid" in d}
    history: list[dict[str, Any]] = []
    schedule = {"best": -math.inf, "best_epoch": 0, "bad_epochs": 0, "stopped": False}
    best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    checkpoints = Checkpoints(Path(job.checkpoint_dir), "tagger", group, cfg.seed)
    resumed = checkpoints.resume()  # restores this rank's dropout and <unk> streams (or reseeds them)
    first = 0
    if resumed is not None:
        state = resumed.state
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        best_state, history, schedule, first = state["best"], state["history"], state["schedule"], resumed.epoch
    net: torch.nn.Module = model
    if group.world_size > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[group.device.index] if group.device.type == "cuda" else None
        )
    model.train()
    for epoch in range(first, cfg.epochs):
        if schedule["stopped"]:
            break
        lr = cfg.lr / (1.0 + cfg.lr_decay * epoch)
        for g in optimizer.param_groups:
            g["lr"] = lr
        started = time.perf_counter()
        streams = [
            epoch_batches(
                rows, cfg.batch_size, steps, np.random.default_rng(rank_seed(cfg.seed, group.rank, epoch, k))
            )
            for k, rows in enumerate(shares)
        ]
        nll = torch.zeros(len(data), dtype=torch.float64, device=group.device)
        tokens = torch.zeros(len(data), dtype=torch.float64, device=group.device)
        progress = EpochProgress(f"tagger epoch {epoch + 1}/{cfg.epochs}", steps, "batches", enabled=group.rank == 0)
        for step in range(steps):
            batches = tuple(
                pad_batch(d["train"], next(s), group.device) for d, s in zip(data, streams, strict=True)
            )
            if cfg.unk_replace > 0:
                batches = tuple(
                    replace_singletons(b, singletons[k], cfg.unk_replace) for k, b in enumerate(batches)
                )
            optimizer.zero_grad(set_to_none=True)
            loss, parts = net(batches, weights)
            loss.backward()
            if cfg.clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.clip)
            else:
                norm = torch.nn.utils.get_total_norm([p.grad for p in trainable if p.grad is not None])
            if not group.all_finite(loss, norm):  # all-reduced: every rank stops at the same step
                raise _nonfinite(job, checkpoints.kept(epoch), epoch, step + 1, loss.item(), norm.item(), lr)
            optimizer.step()
            progress.advance(1)
            nll += parts.double()
            tokens += torch.tensor(
                [float((b[-1] >= 0).sum()) for b in batches], dtype=torch.float64, device=group.device
            )
        seconds = time.perf_counter() - started
        group.all_reduce_(nll)
        group.all_reduce_(tokens)
        summary: dict[str, Any] = {
            "epoch": epoch + 1,
            "lr": lr,
            "seconds": round(seconds, 3),
            "train_loss": {t.name: float(nll[k] / max(tokens[k].item(), 1)) for k, t in enumerate(job.tasks)},
            "train_tokens": int(tokens.sum().item()),
        }
        valid_scores = {}
        for k, task in enumerate(job.tasks):
            if k in valid_gold:
                pred = predict_split(model, data[k]["valid"], k, group)
                valid_scores[task.name] = score(
                    task.kind, valid_gold[k], [[task.tags[i] for i in p] for p in pred]
                )["score"]
        summary["valid_score"] = valid_scores
        current = (
            valid_scores[primary.name] if primary_valid else float(epoch + 1)
        )  # no valid: the last epoch
        if current > schedule["best"]:
            schedule.update(best=current, best_epoch=epoch + 1, bad_epochs=0)
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            schedule["bad_epochs"] += 1
            if cfg.patience is not None and schedule["bad_epochs"] >= cfg.patience:
                schedule["stopped"] = True
        history.append(summary)
        flat = {"epoch": epoch + 1, "lr": lr, "valid_score": current if primary_valid else math.nan}
        flat.update({f"valid_{n}": v for n, v in valid_scores.items()})
        end_epoch(
            checkpoints, epoch + 1, cfg.epochs, figure=("loss", sum(summary["train_loss"].values())),
            shared=functools.partial(_state, model, optimizer, best_state, schedule, history), metrics=flat,
            log=f"tagger epoch {epoch + 1}/{cfg.epochs}: lr {lr:.4g}, loss "
            f"{ {n: round(v, 4) for n, v in summary['train_loss'].items()} }, valid "
            f"{ {n: round(v, 2) for n, v in valid_scores.items()} }, {seconds:.1f} s",
            hint=f"lower tagger.lr (the rate was {lr:g})", stop_after_epoch=job.stop_after_epoch,
        )  # fmt: skip
        if on_epoch is not None:
            on_epoch(flat)
    model.load_state_dict(best_state)
    predictions: dict[str, dict[str, list[list[int]]]] = {}
    scores: dict[str, dict[str, Any]] = {}
    for k, task in enumerate(job.tasks):
        for split in ("valid", "test"):
            if split in data[k]:
                pred = predict_split(model, data[k][split], k, group)
                predictions.setdefault(task.name, {})[split] = pred
                gold = valid_gold[k] if split == "valid" else split_gold(data[k][split], task.tags)
                scores.setdefault(task.name, {})[split] = score(
                    task.kind, gold, [[task.tags[i] for i in p] for p in pred]
                )["score"]
    processes = placement(group)  # where every rank ran and its peak memory, for the manifest
    if group.rank != 0:
        return None
    out = Path(job.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, out / "model.pt")
    (out / "model.json").write_text(
        json.dumps(
            {"model": dataclasses.asdict(job.model), "tasks": [dataclasses.asdict(t) for t in job.tasks]},
            indent=1,
        )
        + "\n",
        encoding="utf-8",
    )
    return {
        "epochs": history,
        "best_epoch": schedule["best_epoch"],
        "stopped_early": schedule["stopped"],
        "resumed_after_epoch": first,
        "steps_per_epoch": steps,
        "world_size": group.world_size,
        "device": str(group.device),
        "parameters": parameter_count(model),
        "embedding_init": embedding_init,
        "predictions": predictions,
        "scores": scores,
        "processes": processes,
    }


def load_tagger(model_dir: Path, device: torch.device | str = "cpu") -> tuple[Tagger, list[dict[str, Any]]]:
    """A trained tagger from ``RUN/tagger/`` (``model.json`` + ``model.pt``, loaded with weights_only)."""
    meta = json.loads((Path(model_dir) / "model.json").read_text(encoding="utf-8"))
    model = Tagger(from_config(TaggerConfig, meta["model"]))
    model.load_state_dict(torch.load(Path(model_dir) / "model.pt", map_location="cpu", weights_only=True))
    return model.to(device).eval(), meta["tasks"]
