"""Recurrent LM training entry: one ``train_loop(config)`` for one worker and for N DDP workers.

The lm stage runs it under Ray Train (``cluster.training.fit``: ``TorchTrainer``, gloo on CPU, NCCL with
``use_gpu``); it also runs as a plain function (one process; the tests and the benchmark's plain-loop baseline
call it so) or under ``torchrun``.  One worker is the degree-1 case of the same code: no DDP wrapper, no
collectives.

    stream   </s> s1 </s> s2 </s> ... (lm.batching)  cut into W x B columns; rank r batchifies columns
             r*B .. r*B+B-1 = one contiguous slice, so every rank runs the same number of bptt steps
    step     loss = -sum_t mean_b log p(y_tb) over the window (Zaremba's units: lr 1 and clip 5 here are lr 20
             and clip 0.25 of the PyTorch example's per-token mean at bptt 20); backward (DDP averages the
             gradients over ranks); clip the global gradient norm (Pascanu et al. 2013); optimiser step; the
             hidden state is carried, detached, into the next window (truncated BPTT)
    epoch    validation perplexity with KenLM's accounting (lm.neural_eval; each rank scores every W-th eval
             column, the five sums are all-reduced: the figure does not depend on W); learning-rate schedule;
             checkpoint; report to Ray Train

Schedules (``TrainConfig.schedule``): ``plateau`` divides the rate by ``lr_factor`` whenever the validation
perplexity fails to improve by the ratio ``min_improvement`` (Mikolov's rnnlm; the PyTorch example's /4);
``fixed`` keeps ``lr`` for ``decay_after`` epochs and multiplies it by ``lr_decay`` every epoch after that
(Zaremba et al. 2014: 0.5 after epoch 4); ``none`` keeps it.  With ``patience`` set, training stops after that
many epochs in a row without improvement; the model kept is always the best validation epoch's.

Checkpoints: after every epoch rank 0 writes ``<checkpoint_dir>/epoch-NNN/state.pt`` (model, optimiser, best
model, schedule, history and every rank's RNG state; ``cluster.training.end_epoch``).  A rerun
loads the latest one and, with the same settings, ends with the same model and metrics as an uninterrupted
run (every epoch starts from a zero hidden state, so an epoch boundary is a complete cut).  A non-finite loss
or gradient norm on any rank stops every rank at the same step (``WorkerGroup.all_finite``) with a
FloatingPointError naming the step and a fix; the last good checkpoint stays on disk.  The final evaluation
of valid and test also returns every target's score (the ranks' columns gathered), which the stage writes
as ``scores/<model>/<split>.arrow``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from lmpipe.cluster.training import (
    Checkpoints,
    WorkerGroup,
    end_epoch,
    from_config,
    placement,
    rank_seed,
)
from lmpipe.lm.batching import batchify, eval_columns, get_batch, read_stream, stream_length, worker_slice
from lmpipe.lm.models import (
    ModelConfig,
    RNNModel,
    build_network,
    detach_hidden,
    init_embedding,
    parameter_count,
)
from lmpipe.lm.neural_eval import assemble, column_scores
from lmpipe.lm.perplexity import CorpusScore
from lmpipe.lm.token_scores import TokenScores
from lmpipe.pipelines.core.progress import EpochProgress
from lmpipe.pipelines.core.shards import read_sentences
from lmpipe.pipelines.core.vocab import Vocab

logger = logging.getLogger(__name__)



@dataclass(frozen=True, kw_only=True, slots=True)
class TrainConfig:
    """Optimisation of one model (validated for user input by ``pipelines.spec.LmModelSpec``)."""

    optimizer: Literal["sgd", "adagrad", "adam"] = "sgd"
    lr: float = 1.0
    momentum: float = 0.0  # sgd only
    weight_decay: float = 0.0
    clip: float = 5.0  # max global gradient norm; 0 = no clipping
    batch_size: int = 20  # columns per worker
    bptt: int = 20
    epochs: int = 13
    schedule: Literal["plateau", "fixed", "none"] = "plateau"
    lr_factor: float = 4.0  # plateau: lr /= lr_factor when validation does not improve
    min_improvement: float = 1.0  # plateau/patience: improved means ppl < best / min_improvement
    decay_after: int = 4  # fixed: epochs at the initial rate
    lr_decay: float = 0.5  # fixed: factor per epoch after decay_after
    patience: int | None = None  # early stopping: epochs in a row without improvement
    seed: int = 1
    eval_columns: int = 10  # carry policy: contiguous runs of sentences scored side by side
    eval_state: Literal["carry", "reset"] = "carry"


@dataclass(frozen=True, kw_only=True, slots=True)
class LmJob:
    """Everything ``train_loop`` needs, as plain data (Ray passes ``train_loop_config`` as a dict:
    ``cluster.training.to_config`` / ``from_config``)."""

    name: str
    vocab_path: str
    train: tuple[str, ...]  # token shards per split, input order
    valid: tuple[str, ...]
    test: tuple[str, ...]
    out_dir: str  # rank 0 writes model.pt + model.json here
    checkpoint_dir: str  # RUN/.checkpoints/lm-<model fingerprint>; survives a crash
    model: ModelConfig
    train_config: TrainConfig
    embedding_init: str | None = None  # .npz with the aligned vectors (matrix, found) written by the stage
    threads: int
    use_gpu: bool
    stop_after_epoch: int | None = None


# ------------------------------------------------------------------------------------------ schedule
@dataclass(slots=True)
class Schedule:
    """Learning rate, best validation perplexity and early stopping: plain numbers, checkpointed."""

    lr: float
    best: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped: bool = False

    def start_epoch(self, cfg: TrainConfig, epoch: int) -> float:
        """The rate of 0-based ``epoch``; the fixed schedule's is a function of the epoch alone."""
        if cfg.schedule == "fixed":
            self.lr = cfg.lr * cfg.lr_decay ** max(0, epoch + 1 - cfg.decay_after)
        return self.lr

    def end_epoch(self, cfg: TrainConfig, epoch: int, valid_ppl: float | None) -> bool:
        """Record the validation perplexity of 0-based ``epoch``; True when it is the best so far."""
        if valid_ppl is None:  # no validation split: the last epoch is the model
            self.best_epoch = epoch + 1
            return True
        improved = valid_ppl < self.best / cfg.min_improvement
        if valid_ppl < self.best:
            self.best, self.best_epoch = valid_ppl, epoch + 1
        if improved:
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
            if cfg.schedule == "plateau":
                self.lr /= cfg.lr_factor
            if cfg.patience is not None and self.bad_epochs >= cfg.patience:
                self.stopped = True
        return valid_ppl <= self.best


# ------------------------------------------------------------------------------------------ pieces
def make_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """Weight decay on weight matrices and word vectors only, never on biases (Bengio et al. 2003)."""
    params = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    params = [g for g in params if g["params"]]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"optimizer {cfg.optimizer!r}; options are ['sgd', 'adagrad', 'adam']")


def build_model(
    job: LmJob, counts: np.ndarray, device: torch.device
) -> tuple[RNNModel, dict[str, int] | None]:
    """The model with the same initial parameters on every rank (seeded), embedding rows from the vectors."""
    torch.manual_seed(job.train_config.seed)
    model = build_network(job.model, counts=counts)
    init = None
    if job.embedding_init:
        with np.load(job.embedding_init) as z:
            aligned, found = z["matrix"], z["found"]
        done = init_embedding(model, aligned, found)
        init = {"found": done.found, "missing": done.missing, "vectors_dim": done.vectors_dim}
    return model.to(device), init


def evaluate_split(
    model: RNNModel, sentences: list[np.ndarray], cfg: TrainConfig, group: WorkerGroup, *, tokens: bool = False
) -> tuple[CorpusScore, TokenScores | None]:
    """Whole-split score, computed as every W-th column per rank and summed over ranks; with ``tokens`` also
    every target's score, the ranks' columns gathered into the split's order (on every rank)."""
    cols = eval_columns(sentences, cfg.eval_columns, reset=cfg.eval_state == "reset")
    mine = range(group.rank, cols.inputs.size(1), group.world_size)
    per_column = column_scores(model, cols, bptt=max(cfg.bptt, 35), device=group.device, columns=mine)
    part = assemble(per_column).corpus_score()
    every = None
    if tokens:
        merged: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for piece in group.gather(per_column):
            merged.update(piece)
        every = assemble({c: merged[c] for c in range(cols.inputs.size(1))})
    if group.world_size == 1:
        return part, every
    sums = torch.tensor(
        [part.log10_sum, part.tokens, part.sentences, part.oov, part.oov_log10_sum],
        dtype=torch.float64, device=group.device,
    )  # fmt: skip
    group.all_reduce_(sums)
    s = sums.cpu().tolist()
    return CorpusScore(s[0], round(s[1]), round(s[2]), round(s[3]), s[4]), every


def _nonfinite(
    job: LmJob, kept: str, epoch: int, batch: int, step: int, loss: float, norm: float, lr: float
) -> FloatingPointError:
    cfg = job.train_config
    hint = f"lower lm lr (the rate was {lr:g})" + (
        f" or set clip (now {cfg.clip:g}; 5 is Zaremba's)"
        if cfg.clip <= 0
        else f" or clip (now {cfg.clip:g})"
    )
    return FloatingPointError(
        f"lm model {job.name!r}: the loss became {loss} (gradient norm {norm}) at step {step} (epoch {epoch + 1}, "
        f"batch {batch + 1}) on some worker; {kept}; {hint} and rerun"
    )


def _state(model: RNNModel, optimizer: torch.optim.Optimizer, best_state, schedule, history) -> dict[str, Any]:
    """What a checkpoint holds besides the ranks' streams: one replica (DDP keeps them equal)."""
    return {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "best": best_state,
        "schedule": dataclasses.asdict(schedule),
        "history": history,
    }


# ------------------------------------------------------------------------------------------ loop
def train_loop(config: dict[str, Any]) -> dict[str, Any] | None:
    """Train one model on this worker's slice; rank 0 writes ``<out_dir>/model.pt`` and returns the metrics."""
    job = from_config(LmJob, config)
    cfg = job.train_config
    group = WorkerGroup.current(job.use_gpu)
    torch.set_num_threads(job.threads)
    # an IRNN's decaying ReLU states reach subnormal floats: 20x slower on CPU unless flushed to zero
    torch.set_flush_denormal(True)
    vocab = Vocab.load(Path(job.vocab_path))
    model, embedding_init = build_model(job, vocab.counts, group.device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, cfg)
    schedule = Schedule(lr=cfg.lr)
    torch.manual_seed(rank_seed(cfg.seed, group.rank))  # dropout streams differ per rank
    total = stream_length(job.train)
    start, stop = worker_slice(total, cfg.batch_size, group.rank, group.world_size)
    data = batchify(read_stream(job.train, start, stop), cfg.batch_size).to(group.device)  # (rows, B)
    valid = read_sentences(job.valid, np.int64) if job.valid else []
    history: list[dict[str, Any]] = []
    best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    checkpoints = Checkpoints(Path(job.checkpoint_dir), "lm", group, cfg.seed)
    resumed = checkpoints.resume()  # restores this rank's dropout streams (or reseeds them)
    first = 0
    if resumed is not None:
        state = resumed.state
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        best_state, history, first = state["best"], state["history"], resumed.epoch
        schedule = Schedule(**state["schedule"])
    net: torch.nn.Module = model
    if group.world_size > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model,
            device_ids=[group.device.index] if group.device.type == "cuda" else None,
            find_unused_parameters=job.model.softmax == "adaptive",  # tail clusters absent from a batch
        )
    steps_per_epoch = math.ceil((data.size(0) - 1) / cfg.bptt)
    epoch = first
    for epoch in range(first, cfg.epochs):
        if schedule.stopped:
            break
        lr = schedule.start_epoch(cfg, epoch)
        for g in optimizer.param_groups:
            g["lr"] = lr
        model.train()
        hidden = model.init_hidden(cfg.batch_size)
        started = time.perf_counter()
        nll = torch.zeros((), dtype=torch.float64, device=group.device)
        tokens = 0
        progress = EpochProgress(
            f"lm {job.name} epoch {epoch + 1}/{cfg.epochs}", (data.size(0) - 1) * data.size(1), "tokens",
            enabled=group.rank == 0,
        )  # fmt: skip
        for batch, i in enumerate(range(0, data.size(0) - 1, cfg.bptt)):
            x, y = get_batch(data, i, cfg.bptt)
            hidden = detach_hidden(hidden)
            optimizer.zero_grad(set_to_none=True)
            lp, hidden = net(x, hidden, y)
            loss = -lp.sum() / cfg.batch_size  # summed over the window's steps, mean over columns
            loss.backward()
            if cfg.clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.clip)
            else:
                norm = torch.nn.utils.get_total_norm([p.grad for p in trainable if p.grad is not None])
            if not group.all_finite(loss, norm):  # all-reduced: every rank stops at the same step
                raise _nonfinite(
                    job, checkpoints.kept(epoch), epoch, batch, epoch * steps_per_epoch + batch + 1,
                    loss.item(), norm.item(), lr,
                )  # fmt: skip
            optimizer.step()
            nll += -lp.detach().double().sum()
            tokens += y.numel()
            progress.advance(y.numel())
        seconds = time.perf_counter() - started
        per_rank = group.per_rank_sum([nll.item(), tokens, seconds])
        train_tokens = int(per_rank[:, 1].sum())
        summary: dict[str, Any] = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_tokens": train_tokens,
            "train_perplexity": math.exp(min(per_rank[:, 0].sum() / max(train_tokens, 1), 700.0)),
            "seconds": round(float(per_rank[:, 2].max()), 3),
            "tokens_per_second": round(train_tokens / max(float(per_rank[:, 2].max()), 1e-9), 1),
        }
        valid_ppl = None
        if valid:
            t = time.perf_counter()
            valid_ppl = evaluate_split(model, valid, cfg, group)[0].perplexity()
            summary["valid_perplexity"] = valid_ppl
            summary["valid_seconds"] = round(time.perf_counter() - t, 3)
        if schedule.end_epoch(cfg, epoch, valid_ppl):
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        history.append(summary)
        end_epoch(
            checkpoints, epoch + 1, cfg.epochs, figure=("train perplexity", summary["train_perplexity"]),
            shared=functools.partial(_state, model, optimizer, best_state, schedule, history), meta={"model": job.name},
            metrics={k: v for k, v in summary.items() if isinstance(v, int | float)},
            log=f"lm {job.name} epoch {epoch + 1}/{cfg.epochs}: lr {lr:.4g}, train ppl {summary['train_perplexity']:.2f}, "
            f"valid ppl {f'{valid_ppl:.2f}' if valid_ppl is not None else '-'}, {summary['tokens_per_second']:.0f} tokens/s",
            hint=f"lower lm lr (the rate was {lr:g})", stop_after_epoch=job.stop_after_epoch,
        )  # fmt: skip
    model.load_state_dict(best_state)
    results: dict[str, Any] = {}
    token_scores: dict[str, TokenScores] = {}
    for split, paths in (("valid", job.valid), ("test", job.test)):
        if paths:
            score, tokens = evaluate_split(
                model, valid if split == "valid" else read_sentences(paths, np.int64), cfg, group, tokens=True
            )
            results[split], token_scores[split] = score.to_dict(), tokens
    if group.rank != 0:
        return None
    out = Path(job.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, out / "model.pt")
    (out / "model.json").write_text(
        json.dumps({"model": dataclasses.asdict(job.model)}, indent=2) + "\n", encoding="utf-8"
    )
    return {
        "name": job.name,
        "epochs": history,
        "resumed_after_epoch": first,
        "best_epoch": schedule.best_epoch,
        "stopped_early": schedule.stopped,
        "world_size": group.world_size,
        "device": str(group.device),
        "parameters": parameter_count(model),
        "embedding_init": embedding_init,
        "perplexity": results,
        "token_scores": token_scores,  # every target's log10 p, for RUN/lm/scores (not the manifest)
    }


def train_models(config: dict[str, Any]) -> dict[str, Any] | None:
    """``train_loop`` for each of ``config["jobs"]`` in turn, in one worker group: a list of models pays Ray
    Train's worker start-up once.  Rank 0 returns ``{"models": [result, ...], "processes": placement}``."""
    results = [train_loop(job) for job in config["jobs"]]
    processes = placement(WorkerGroup.current(config["use_gpu"]))
    return None if any(r is None for r in results) else {"models": results, "processes": processes}


def load_model(model_dir: Path, counts: np.ndarray, device: torch.device | str = "cpu") -> RNNModel:
    """A trained model from ``RUN/lm/<name>/`` (``model.json`` + ``model.pt``, loaded with weights_only)."""
    meta = json.loads((Path(model_dir) / "model.json").read_text(encoding="utf-8"))
    model = build_network(from_config(ModelConfig, meta["model"]), counts=counts)
    model.load_state_dict(torch.load(Path(model_dir) / "model.pt", map_location="cpu", weights_only=True))
    return model.to(device).eval()
