"""What every data-parallel training stage shares (sgns, glove, lm, tagger): the worker's place in the group,
per-epoch checkpoint folders written atomically, reporting to Ray Train, and launching a ``TorchTrainer``.

A training stage supplies ``train_loop(config: dict)``; the same function runs

* under Ray Train (``fit``: ``TorchTrainer`` with ``ScalingConfig(num_workers=workers)``, gloo on CPU and NCCL
  with ``use_gpu``), where ``ray.train.get_context()`` gives rank and world size;
* as a plain function (one process; tests call it directly) or under ``torchrun`` (``torch.distributed``
  gives rank and world size).

Checkpoints are the stages' own, not Ray Train's: ``<checkpoint_dir>/epoch-NNN/`` with ``meta.json`` written
last and the folder renamed into place, so a reader never sees half a checkpoint, and Ray's storage holds
only a small pointer (``report``), not a second copy of the parameters.  ``checkpoint_dir`` lives in the run
directory (``RUN/.checkpoints/<stage>-<fingerprint>``), outside the stage's temporary folder, so it
survives a crash; a rerun with the same settings resumes from ``latest_checkpoint``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from lmpipe.cluster.connect import ResourceError


class StopAfterEpoch(RuntimeError):
    """Raised on every rank right after ``stop_after_epoch``'s checkpoint: a deliberate kill, for resume tests
    (each training stage reads ``LMPIPE_<STAGE>_STOP_AFTER_EPOCH`` in the driver)."""


@dataclass(frozen=True, slots=True)
class WorkerGroup:
    """This process's place among the data-parallel workers."""

    rank: int
    world_size: int
    device: torch.device
    in_ray: bool  # inside a Ray Train worker: report to Ray Train

    @classmethod
    def current(cls, use_gpu: bool) -> WorkerGroup:
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
        if in_ray and not logging.getLogger().handlers:
            # a Ray Train worker has no log handler: without one its per-epoch progress lines are dropped;
            # with one they reach the driver's terminal (ray.init(log_to_driver=True), prefixed by Ray)
            logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
            for package in ("lmpipe",):  # ours at INFO, Ray's own at WARNING
                logging.getLogger(package).setLevel(logging.INFO)
            logging.getLogger("ray.train").setLevel(logging.WARNING)  # "Checkpoint created" / "Reporting ..." x epochs
        return cls(rank, world, device, in_ray)

    def all_reduce_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over the workers, in place (no-op for one worker)."""
        if self.world_size > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable, small), in rank order, on every rank."""
        if self.world_size == 1:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def per_rank_sum(self, values: list[float]) -> np.ndarray:
        """``(world_size, len(values))`` float64: row r is rank r's values, on every rank (one all-reduce)."""
        table = torch.zeros(self.world_size, len(values), dtype=torch.float64, device=self.device)
        table[self.rank] = torch.tensor(values, dtype=torch.float64)
        return self.all_reduce_(table).cpu().numpy()


def rank_seed(seed: int, *key: int) -> int:
    """An independent 63-bit seed for ``(seed, *key)`` (e.g. a rank, an epoch)."""
    return int(np.random.SeedSequence([seed, *key]).generate_state(1, np.uint64)[0] >> 1)


# ------------------------------------------------------------------------------------------ checkpoints
def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest ``epoch-NNN`` folder with its ``meta.json`` (written last), or None."""
    done = sorted(
        p for p in Path(checkpoint_dir).glob("epoch-[0-9][0-9][0-9]") if (p / "meta.json").is_file()
    )
    return done[-1] if done else None


def read_checkpoint_meta(path: Path) -> dict[str, Any]:
    return json.loads((Path(path) / "meta.json").read_text(encoding="utf-8"))


def commit_checkpoint(
    checkpoint_dir: Path, epoch: int, write: Callable[[Path], None], meta: dict[str, Any]
) -> Path:
    """Write ``epoch-NNN/``: ``write(folder)`` puts the state files in a temporary folder, ``meta.json`` is
    written last, then the folder is renamed into place; older epochs are removed once the new one is
    complete.  Call on rank 0 only."""
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    tmp = checkpoint_dir / f".epoch-{epoch:03d}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    write(tmp)
    (tmp / "meta.json").write_text(json.dumps({**meta, "epoch": epoch}, indent=2) + "\n", encoding="utf-8")
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


def report(group: WorkerGroup, metrics: dict[str, Any], checkpoint: Path | None) -> None:
    """``ray.train.report`` on every rank (outside Ray Train: nothing); rank 0 attaches a small checkpoint
    naming the epoch folder, so Ray's storage does not hold a second copy of the parameters."""
    if not group.in_ray:
        return
    import ray.train

    if checkpoint is None:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="lmpipe-report-") as tmp:
        Path(tmp, "checkpoint.json").write_text(
            json.dumps({"path": str(checkpoint), **metrics}), encoding="utf-8"
        )
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


# ------------------------------------------------------------------------------------------ launching
def check_resources(
    section: str, workers: int, threads: int, use_gpu: bool, available: tuple[float, float] | None = None
) -> None:
    """Ray Train waits forever for workers the cluster cannot place: refuse before starting instead.
    ``section`` names the spec section in the message (``sgns``, ``glove``, ``lm`` ...); ``available`` is
    (CPUs, GPUs), by default the joined Ray cluster's."""
    if available is None:
        import ray

        resources = ray.cluster_resources()
        available = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    cpus, gpus = available
    if workers * threads > cpus:
        raise ResourceError(
            f"{section}.workers x {section}.threads = {workers} x {threads} CPUs, but the Ray cluster has {cpus:g}; "
            f"lower {section}.workers or {section}.threads"
        )
    if use_gpu and workers > gpus:
        raise ResourceError(
            f"{section}.use_gpu: {workers} worker(s) need one GPU each, the Ray cluster has {gpus:g}"
        )


def _remove_if_empty(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()


def fit(
    train_loop: Callable[[dict[str, Any]], Any],
    config: dict[str, Any],
    *,
    workers: int,
    threads: int = 1,
    use_gpu: bool = False,
    storage: Path,
    name: str,
) -> Any:
    """Run ``train_loop(config)`` on ``workers`` Ray Train workers and return rank 0's return value.

    ``name`` must be fresh for each call (Ray Train V2 would auto-restore a reused name); Ray's own run
    folder ``storage/name`` is removed afterwards, since the stage's checkpoints are the resume source.  A
    worker's exception is re-raised as itself (a ValueError stays a ValueError), not as Ray's wrapper."""
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig, WorkerGroupError
    from ray.train.torch import TorchConfig, TorchTrainer

    resources: dict[str, float] = {"CPU": float(threads)}
    if use_gpu:
        resources["GPU"] = 1.0
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=config,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            storage_path=str(storage), name=name, checkpoint_config=CheckpointConfig(num_to_keep=1)
        ),
    )
    try:
        result = trainer.fit()
    except WorkerGroupError as exc:
        failures = exc.worker_failures
        if failures:
            raise failures[min(failures)] from exc
        raise
    finally:
        shutil.rmtree(Path(storage) / name, ignore_errors=True)
        _remove_if_empty(Path(storage))
    return result.return_value


def remove_checkpoints(checkpoint_dir: Path) -> None:
    """A finished stage drops its checkpoints (a ``--force`` rerun starts from scratch)."""
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    _remove_if_empty(Path(checkpoint_dir).parent)
