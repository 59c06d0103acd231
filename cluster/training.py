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

The four training loops share this skeleton and keep their own step (nanoGPT: the step is visible in each
model's ``train.py``)::

    job = from_config(MyJob, config)                  # the job, rebuilt from Ray's plain dict
    group = WorkerGroup.current(job.use_gpu)
    checkpoints = Checkpoints(Path(job.checkpoint_dir), "lm", group, seed)
    resumed = checkpoints.resume()                    # None, or the shared state + this rank's streams
    for epoch in ...:
        ... the step ...                              # per step: group.all_finite(loss, norm)
        end_epoch(checkpoints, epoch + 1, ...)        # finite check, checkpoint, report, log, stop-after
    processes = placement(group)                      # every rank's process_info, for the manifest

and the stage side is ``StageTraining``: resources checked, the checkpoint folder named from the stage's
fingerprint, ``LMPIPE_<STAGE>_STOP_AFTER_EPOCH`` read, a fresh Ray Train run, the training time, the
checkpoints removed once the stage is done, and the ``workers`` record of the manifest.

**Resuming at another world size** (:data:`OTHER_WORLD_SIZE`): resume, with fresh random streams.  Every
state a checkpoint shares between the ranks (parameters, optimiser moments, AdaGrad sums, the schedule) is
one replica of a data-parallel model: the replicas are equal after each epoch's sync or DDP step, so it is
valid for any number of workers, and refusing would throw away finished epochs for a setting (``workers``)
that the embedding stages deliberately leave out of their fingerprint.  What cannot carry over is per rank:
the random streams of rank r (dropout, sampling, ``<unk>`` replacement) have no counterpart when the ranks
are other ones; they are drawn afresh from ``rank_seed(seed, rank, epoch)`` and a warning says so.  Such a
run is a valid continuation but not bit-identical to an uninterrupted one; at the same world size every
rank's streams are restored and it is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import types
import typing
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from lmpipe.cluster.connect import ResourceError
from lmpipe.cluster.process import WorkersRecord, process_info

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)
T = TypeVar("T")


class WorkerLostError(RuntimeError):
    """A Ray Train worker's process died (killed, out of memory, its node lost) mid-run; the other workers'
    errors are only its echo (a gloo peer reset).  The stage's checkpoints stay: a rerun resumes."""


class StopAfterEpoch(RuntimeError):
    """Raised on every rank right after ``stop_after_epoch``'s checkpoint: a deliberate kill, for resume tests
    (each training stage reads ``LMPIPE_<STAGE>_STOP_AFTER_EPOCH`` in the driver)."""


@dataclass(frozen=True, slots=True)
class WorkerGroup:
    """This process's place among the data-parallel workers.

    One worker in a plain process needs no torch: a loop that never touches :attr:`device` or a collective
    (the sgns stage on its numba path) runs without importing it; more workers communicate through
    ``torch.distributed``, which is then imported already."""

    rank: int
    world_size: int
    device_name: str  # "cpu", "cuda:0": the name of :attr:`device` (a torch.device is accepted and kept as it)
    in_ray: bool  # inside a Ray Train worker: report to Ray Train

    def __post_init__(self) -> None:
        object.__setattr__(self, "device_name", str(self.device_name))

    @property
    def device(self) -> torch.device:
        """The torch device of this worker's parameters (imports torch)."""
        import torch

        return torch.device(self.device_name)

    @property
    def on_gpu(self) -> bool:
        return self.device_name.startswith("cuda")

    @classmethod
    def current(cls, use_gpu: bool) -> WorkerGroup:
        in_ray = False
        # A Ray Train worker has imported ray.train before it runs the loop; a plain process (the in-process
        # degree-1 case, tests, torchrun) has not, and importing it only to be told so costs ~120 MB of
        # resident memory (pandas and Ray Train's modules) and seconds of start-up.
        ray_train = sys.modules.get("ray.train")
        try:
            if ray_train is None:
                raise RuntimeError("not in a Ray Train worker")
            ctx = ray_train.get_context()
            rank, world, in_ray = ctx.get_world_rank(), ctx.get_world_size(), True
        except RuntimeError:  # a plain process or torchrun (whose script has imported torch.distributed)
            dist = sys.modules.get("torch.distributed")
            initialized = dist is not None and dist.is_initialized()
            rank = dist.get_rank() if initialized else 0
            world = dist.get_world_size() if initialized else 1
        device: Any = "cpu"
        if use_gpu:
            import torch

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
            from lmpipe.cluster.quiet import worker_level

            logging.getLogger("lmpipe").setLevel(worker_level())  # ours at the driver's level (-q: WARNING)
            logging.getLogger("ray.train").setLevel(logging.WARNING)  # "Checkpoint created" / "Reporting ..." x epochs
        return cls(rank, world, device, in_ray)

    def all_reduce_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over the workers, in place (no-op for one worker)."""
        if self.world_size > 1:
            import torch.distributed as dist

            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable, small), in rank order, on every rank."""
        if self.world_size == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def all_finite(self, *values: torch.Tensor | float) -> bool:
        """True when every value is finite on every rank (one all-reduce): all ranks take the same branch, so
        a non-finite loss on one rank stops them all instead of leaving the others in a collective."""
        finite = all(math.isfinite(float(v.detach()) if hasattr(v, "detach") else v) for v in values)
        if self.world_size == 1:
            return finite
        import torch

        flag = torch.tensor([float(not finite)], dtype=torch.float64, device=self.device)
        return self.all_reduce_(flag).item() == 0

    def per_rank_sum(self, values: list[float]) -> np.ndarray:
        """``(world_size, len(values))`` float64: row r is rank r's values, on every rank (one all-reduce)."""
        if self.world_size == 1:
            return np.array([values], dtype=np.float64)
        import torch

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


#: The JSON stand-in for an array in ``state.json``: ``{"npy": "<file>"}`` names its ``.npy`` file.
_NPY = "npy"


def save_numpy_state(folder: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (nested dicts with string keys, lists, tuples, numbers, strings, None, numpy arrays and
    torch tensors) into ``folder``: each array as ``<path>.npy`` (``np.save``, no pickle; a tensor is moved
    to the host first), everything else as ``state.json`` with ``{"npy": "<path>.npy"}`` in the arrays'
    places.  Files are created by ``open``, so their mode honours the umask; the folder is a checkpoint's
    temporary folder, renamed into place by :func:`commit_checkpoint` once complete.  Tuples come back as
    lists."""
    names: set[str] = set()

    def encode(value: Any, path: str) -> Any:
        if isinstance(value, dict):
            if not all(isinstance(k, str) for k in value):
                raise TypeError(f"numpy checkpoint storage needs string keys, got {list(value)[:5]} at {path!r}")
            return {k: encode(v, f"{path}.{k}") for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [encode(v, f"{path}.{i}") for i, v in enumerate(value)]
        if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor (torch is imported then)
            value = value.detach().cpu().numpy()
        if isinstance(value, np.ndarray):
            name = "".join(c if c.isalnum() or c in "._-" else "_" for c in path) + ".npy"
            if name in names:
                raise ValueError(f"two arrays of the checkpoint map to one file name {name!r}")
            names.add(name)
            with open(folder / name, "wb") as handle:
                np.save(handle, value, allow_pickle=False)
            return {_NPY: name}
        if isinstance(value, np.generic):
            return value.item()
        return value

    body = {k: encode(v, k) for k, v in state.items()}
    (folder / "state.json").write_text(json.dumps(body) + "\n", encoding="utf-8")


def load_numpy_state(folder: Path) -> dict[str, Any]:
    """The state :func:`save_numpy_state` wrote, arrays loaded from their ``.npy`` files (no pickle)."""

    def decode(value: Any) -> Any:
        if isinstance(value, dict):
            if set(value) == {_NPY}:
                return np.load(folder / value[_NPY], allow_pickle=False)
            return {k: decode(v) for k, v in value.items()}
        if isinstance(value, list):
            return [decode(v) for v in value]
        return value

    return decode(json.loads((folder / "state.json").read_text(encoding="utf-8")))


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


# ------------------------------------------------------------------------------------------ random streams
def capture_rng(device: Any = "cpu") -> dict[str, Any]:
    """This process's global random streams in one layout (python, numpy, torch CPU, the GPU's on CUDA), as
    plain values (lists, numbers) and ByteTensors, which ``torch.load(weights_only=True)`` reads back and a
    numpy checkpoint stores as arrays.  torch's streams are taken only when torch is imported (a process that
    never imported it has drawn nothing from them): ``None`` otherwise."""
    _, key, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    torch = sys.modules.get("torch")
    on_gpu = str(device).startswith("cuda")
    return {
        "python": random.getstate(),
        "numpy": {"key": key.tolist(), "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state() if torch is not None else None,
        "cuda": torch.cuda.get_rng_state(device) if torch is not None and on_gpu else None,
    }


def restore_rng(state: dict[str, Any], device: Any = "cpu") -> None:
    """Set the streams :func:`capture_rng` took (torch's only where both the state and torch are there)."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    n = state["numpy"]
    key = np.asarray(n["key"]).astype(np.uint32)  # a list, an array, or a tensor (checkpoints before 2026-12)
    np.random.set_state(("MT19937", key, int(n["pos"]), int(n["has_gauss"]), float(n["gauss"])))
    torch = sys.modules.get("torch")
    if torch is None:
        return
    if state["torch"] is not None:
        torch.set_rng_state(_byte_tensor(state["torch"]))
    if str(device).startswith("cuda") and state["cuda"] is not None:
        torch.cuda.set_rng_state(_byte_tensor(state["cuda"]), device)


def _byte_tensor(state: Any) -> torch.Tensor:
    import torch

    return state if torch.is_tensor(state) else torch.from_numpy(np.asarray(state, dtype=np.uint8).copy())


def seed_rng(seed: int) -> None:
    """Seed every global stream :func:`capture_rng` captures (``torch.manual_seed`` seeds the GPUs too)."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)


# ------------------------------------------------------------------------------------------ resume policy
#: What a checkpoint written by another number of workers does on resume (see the module docstring): the
#: shared state is loaded, each rank's random streams are drawn afresh from ``rank_seed(seed, rank, epoch)``.
OTHER_WORLD_SIZE = "resume with fresh random streams"
CHECKPOINT_VERSION = 2  # 2: one layout for every stage (shared state + per-rank streams)
#: How a checkpoint's state is stored (``meta.json``'s ``storage``; absent means ``torch``).
STORAGES = ("torch", "numpy")


@dataclass(frozen=True, slots=True)
class Resumed:
    """A checkpoint loaded on one rank: the epochs done, the state the ranks share, and this rank's own state
    (``None`` when the checkpoint was written by another number of workers: its streams were reseeded)."""

    path: Path
    epoch: int
    state: dict[str, Any]
    rank_state: dict[str, Any] | None
    meta: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Checkpoints:
    """One training run's ``epoch-NNN`` folders in one layout for every stage: the state
    ``{"shared": ..., "ranks": [{"rng": capture_rng(), **rank_state}, ...]}`` and ``meta.json``.

    ``storage`` says how the state is written: ``torch`` (the default): one ``state.pt`` (``torch.save``; model
    and optimiser state dicts as they are); ``numpy``: every array (numpy, or a tensor moved to the host) in
    its own ``.npy`` file and the rest in ``state.json`` (:func:`save_numpy_state`), for a loop that runs
    without torch (the sgns stage on CPU).  Both are written into the checkpoint's temporary folder, which
    :func:`commit_checkpoint` renames into place."""

    folder: Path
    kind: str  # "sgns", "glove", "lm", "tagger": the format name in meta.json and in messages
    group: WorkerGroup
    seed: int  # reseeds the streams of a resume at another world size
    storage: str = "torch"

    def __post_init__(self) -> None:
        if self.storage not in STORAGES:
            raise ValueError(f"checkpoint storage must be one of {STORAGES}, got {self.storage!r}")

    @property
    def format(self) -> str:
        return f"lmpipe.{self.kind}-checkpoint"

    def resume(self) -> Resumed | None:
        """The latest complete checkpoint, loaded with the declared :data:`OTHER_WORLD_SIZE` policy; None when
        there is none.  A folder of another format, layout or storage is refused, naming what to remove."""
        found = latest_checkpoint(self.folder)
        if found is None:
            return None
        meta = read_checkpoint_meta(found)
        storage = meta.get("storage", "torch")
        if meta.get("format") != self.format or meta.get("version") != CHECKPOINT_VERSION or storage != self.storage:
            raise ValueError(
                f"{found}: not a {self.kind} checkpoint of version {CHECKPOINT_VERSION} in {self.storage} storage "
                f"(format {meta.get('format')!r}, version {meta.get('version')!r}, storage {storage!r}); "
                f"remove {self.folder} to start over"
            )
        if storage == "numpy":
            state = load_numpy_state(found)
        else:
            import torch

            state = torch.load(found / "state.pt", map_location="cpu", weights_only=True)
        epoch = int(meta["epoch"])
        group = self.group
        mine: dict[str, Any] | None = None
        if meta["world_size"] == group.world_size:
            mine = dict(state["ranks"][group.rank])
            restore_rng(mine.pop("rng"), group.device_name)
        else:
            if group.rank == 0:
                logger.warning(
                    "%s was written by %d worker(s), resuming with %d: same shared state, fresh random streams "
                    "(a valid continuation, not bit-identical to an uninterrupted run)",
                    found, meta["world_size"], group.world_size,
                )  # fmt: skip
            seed_rng(rank_seed(self.seed, group.rank, epoch))
        logger.info("%s rank %d: resuming after epoch %d from %s", self.kind, group.rank, epoch, found)
        return Resumed(found, epoch, state["shared"], mine, meta)

    def save(
        self, epoch: int, shared: Callable[[], dict[str, Any]], rank_state: dict[str, Any], meta: dict[str, Any]
    ) -> Path | None:
        """Every rank: gather the ranks' streams and ``rank_state``; rank 0 writes ``epoch-NNN`` with
        ``shared()`` (called on rank 0 only).  Returns the folder on rank 0, None elsewhere."""
        ranks = self.group.gather({"rng": capture_rng(self.group.device_name), **rank_state})
        if self.group.rank != 0:
            return None

        def write(folder: Path) -> None:
            state = {"shared": shared(), "ranks": ranks}
            if self.storage == "numpy":
                save_numpy_state(folder, state)
            else:
                import torch

                torch.save(state, folder / "state.pt")

        head = {"format": self.format, "version": CHECKPOINT_VERSION, "world_size": self.group.world_size}
        if self.storage != "torch":
            head["storage"] = self.storage
        return commit_checkpoint(self.folder, epoch, write, {**head, **meta})

    def kept(self, epochs_done: int) -> str:
        """The clause of an error message saying what survives a failure after ``epochs_done`` epochs."""
        if not epochs_done:
            return "no epoch had completed, so there is no checkpoint"
        return f"the last good checkpoint is kept in {self.folder} (epoch {epochs_done})"


def end_epoch(
    checkpoints: Checkpoints,
    epoch: int,
    epochs: int,
    *,
    figure: tuple[str, float],
    shared: Callable[[], dict[str, Any]],
    metrics: dict[str, Any],
    log: str,
    rank_state: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    hint: str = "",
    detail: str = "",
    stop_after_epoch: int | None = None,
    checkpoint_last: bool = True,
) -> None:
    """After 1-based ``epoch`` of ``epochs``, on every rank: stop all ranks together if ``figure`` (name, value)
    is not finite on some rank (this epoch is not checkpointed; the message names the last good one and
    ``hint``); checkpoint; report ``metrics`` to Ray Train; rank 0 logs ``log``; raise
    :class:`StopAfterEpoch` when ``stop_after_epoch`` is this epoch (and it is not the last).

    ``checkpoint_last=False`` skips the last epoch's checkpoint, for a loop that writes its output right
    after the last epoch: the stage removes its checkpoints as soon as that output exists, so the last one
    would be written only to be deleted (the whole matrices, seconds on a loaded disk); a crash in that
    window repeats one epoch from the previous checkpoint."""
    group = checkpoints.group
    name, value = figure
    if not group.all_finite(value):
        raise FloatingPointError(
            f"{checkpoints.kind}: the {name} became {value} in epoch {epoch}{detail}; "
            f"{checkpoints.kept(epoch - 1)}; {hint} and rerun"
        )
    skip = epoch >= epochs and not checkpoint_last
    written = None if skip else checkpoints.save(epoch, shared, rank_state or {}, meta or {})
    report(group, metrics, written)
    if group.rank == 0:
        logger.info("%s", log)
    if epoch == stop_after_epoch and epoch < epochs:
        raise StopAfterEpoch(f"stopped after epoch {epoch} of {epochs} (stop_after_epoch)")


def placement(group: WorkerGroup) -> list[dict[str, Any]]:
    """Every rank's ``process_info`` (node, host, pid, peak RSS), in rank order, on every rank: where the
    workers of a stage ran, for the manifest's ``workers`` record.  A collective: call it on every rank."""
    return group.gather(process_info())


# ------------------------------------------------------------------------------------------ job configs
def to_config(job: Any) -> dict[str, Any]:
    """A job dataclass as the plain dict Ray passes to ``train_loop`` (nested dataclasses included)."""
    return dataclasses.asdict(job)


def from_config(cls: type[T], data: dict[str, Any]) -> T:
    """The dataclass ``cls`` rebuilt from :func:`to_config`'s dict (or a JSON file's): nested dataclasses and
    tuples restored from their field types, so no job lists its fields by hand."""
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: _typed(hints[f.name], data[f.name]) for f in dataclasses.fields(cls) if f.name in data})


def _typed(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        arms = [a for a in args if a is not type(None)]
        return _typed(arms[0], value) if len(arms) == 1 else value
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else from_config(hint, value)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_typed(args[0], v) for v in value)
        return tuple(_typed(a, v) for a, v in zip(args, value, strict=True))
    return value


_MISSING = object()


def config_from(cls: type[T], *sources: Any, rename: dict[str, str] | None = None, **given: Any) -> T:
    """``cls`` with every field taken by name from the first of ``sources`` that has it (a spec section, then
    e.g. the run-wide section), ``rename`` mapping a field to a source attribute of another name, and
    ``given`` for what no source holds (paths, sizes known at run time).  Fields no source has keep their
    default: the spec section is the one definition of a setting, this is the only mapping."""
    rename = rename or {}
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in given:
            values[f.name] = given[f.name]
            continue
        attr = rename.get(f.name, f.name)
        for source in sources:
            value = getattr(source, attr, _MISSING)
            if value is not _MISSING and not callable(value):  # a setting, not a method of the section
                values[f.name] = value
                break
    return cls(**values)


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
    worker's exception is re-raised as itself (a ValueError stays a ValueError), not as Ray's wrapper;
    a worker whose process died is a :class:`WorkerLostError` naming its rank (not its peers' echo of it).

    One worker without a GPU runs ``train_loop`` in this process (:func:`fit_in_process`): the degree-1 case
    of the same loop, without Ray Train's controller and worker actors, whose start-up and reporting cost
    several seconds per stage (bench/RESULTS.md, the SGNS fixed costs)."""
    if workers == 1 and not use_gpu:
        return fit_in_process(train_loop, config)
    from ray.train import CheckpointConfig, LoggingConfig, RunConfig, ScalingConfig, WorkerGroupError
    from ray.train.torch import TorchConfig, TorchTrainer

    from lmpipe.cluster.quiet import train_log_level

    resources: dict[str, float] = {"CPU": float(threads)}
    if use_gpu:
        resources["GPU"] = 1.0
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=config,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            storage_path=str(storage), name=name, checkpoint_config=CheckpointConfig(num_to_keep=1),
            logging_config=LoggingConfig(log_level=train_log_level()),  # Ray Train's chatter: see cluster.quiet
        ),
    )
    try:
        with _own_sigint():
            result = trainer.fit()
    except WorkerGroupError as exc:
        failures = exc.worker_failures
        lost = {rank: err for rank, err in failures.items() if _died(err)}
        if lost:  # the cause; the survivors' errors (a collective's peer gone) are its consequence
            rank = min(lost)
            reason = str(getattr(lost[rank], "health_check_failure", lost[rank])).strip().splitlines()
            raise WorkerLostError(
                f"{name}: Ray Train worker rank {rank} of {workers} died ({reason[0][:200] if reason else 'no reason given'}); "
                "the epochs checkpointed so far are kept: rerun to resume from the last one"
            ) from exc
        if failures:
            raise failures[min(failures)] from exc
        raise
    finally:
        shutil.rmtree(Path(storage) / name, ignore_errors=True)
        _remove_if_empty(Path(storage))
    return result.return_value


def _died(error: BaseException) -> bool:
    """Whether a Ray Train worker failure is its process dying (Ray's health check lost the actor)."""
    from ray.exceptions import RayActorError

    return isinstance(error, RayActorError) or isinstance(getattr(error, "health_check_failure", None), RayActorError)


@contextlib.contextmanager
def _own_sigint() -> Iterator[None]:
    """Give Ctrl-C back to the caller around ``TorchTrainer.fit``.

    Ray Train installs a SIGINT handler that aborts the run and then calls ``sys.exit(0)``; it is never
    removed, so a later Ctrl-C in the same process (a notebook, the next stage) only aborts a finished run.
    Here the abort still happens, its ``SystemExit`` becomes the ``KeyboardInterrupt`` a Ctrl-C means (the
    CLI's ``lmpipe: interrupted``, exit 130), and the previous handler is restored in every case."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    try:
        yield
    except SystemExit:
        if main and signal.getsignal(signal.SIGINT) is not previous:  # raised by Ray Train's handler
            raise KeyboardInterrupt from None
        raise
    finally:
        if main and previous is not None:
            signal.signal(signal.SIGINT, previous)


def fit_in_process(train_loop: Callable[[dict[str, Any]], Any], config: dict[str, Any]) -> Any:
    """``train_loop(config)`` as a plain function in this process (rank 0 of 1; ``WorkerGroup.current`` finds no
    Ray Train context), leaving this process's torch thread count as it was.  torch is not imported for
    that: a loop that does not use it (sgns on CPU) runs without it, and one that imports it first sets its
    own threads (every torch loop does)."""
    torch = sys.modules.get("torch")
    intra_op = torch.get_num_threads() if torch is not None else None
    try:
        return train_loop(config)
    finally:
        if intra_op is not None:
            torch.set_num_threads(intra_op)


def remove_checkpoints(checkpoint_dir: Path) -> None:
    """A finished stage drops its checkpoints (a ``--force`` rerun starts from scratch)."""
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    _remove_if_empty(Path(checkpoint_dir).parent)


def stop_after_env(stage: str) -> str:
    """The environment variable that stops a stage's training after an epoch's checkpoint (resume tests)."""
    return f"LMPIPE_{stage.upper()}_STOP_AFTER_EPOCH"


@dataclass(slots=True)
class StageTraining:
    """The stage side of a training run (sgns, glove, lm, tagger): built by :func:`start_training`."""

    stage: str
    run_dir: Path
    fingerprint: str  # the stage's fingerprint: names the checkpoint folder and the Ray Train run
    workers: int
    threads: int
    use_gpu: bool
    seconds: float = 0.0  # time spent in fit
    folders: list[Path] = field(default_factory=list)

    @property
    def stop_after_epoch(self) -> int | None:
        stop = os.environ.get(stop_after_env(self.stage))
        return int(stop) if stop else None

    def job(self, cls: type[T], section: Any, **given: Any) -> T:
        """A job of type ``cls`` from the stage's settings by field name (:func:`config_from`), with this run's
        checkpoint folder and stop-after epoch."""
        return config_from(
            cls, section, checkpoint_dir=str(self.checkpoint_dir()), stop_after_epoch=self.stop_after_epoch, **given
        )

    def checkpoint_dir(self, name: str | None = None, fingerprint: str | None = None) -> Path:
        """``RUN/.checkpoints/<stage>[-<name>]-<fingerprint[:16]>``: outside the stage's temporary folder, so
        it survives a crash; ``name``/``fingerprint`` for one of several models (the lm stage)."""
        fp = (fingerprint or self.fingerprint)[:16]
        folder = self.run_dir / ".checkpoints" / f"{self.stage}-{name + '-' if name else ''}{fp}"
        self.folders.append(folder)
        return folder

    def fit(self, train_loop: Callable[[dict[str, Any]], Any], config: dict[str, Any]) -> Any:
        """:func:`fit` on the stage's workers, under a fresh run name; the seconds are added to ``seconds``."""
        name = f"{self.stage}-{self.fingerprint[:12]}-{uuid.uuid4().hex[:8]}"  # fresh: V2 would auto-restore
        started = time.perf_counter()
        try:
            return fit(
                train_loop, config, workers=self.workers, threads=self.threads, use_gpu=self.use_gpu,
                storage=self.run_dir / ".ray-train", name=name,
            )  # fmt: skip
        finally:
            self.seconds += time.perf_counter() - started

    def finish(self) -> None:
        """The stage is done: its checkpoints are removed (a ``--force`` rerun starts from scratch)."""
        for folder in self.folders:
            remove_checkpoints(folder)

    def record(self, processes: list[dict[str, Any]]) -> dict[str, Any]:
        """The manifest's ``workers`` record from the workers' :func:`placement`."""
        return WorkersRecord(self.workers, tuple(processes)).to_json()


def start_training(stage: str, run_dir: Path, fingerprint: str, section: Any) -> StageTraining:
    """Check that the cluster can place the workers of ``section`` (the stage's settings: its ``workers``,
    ``threads`` and ``use_gpu``; else a ResourceError naming them) and return the stage's :class:`StageTraining`."""

    ray = sys.modules.get("ray")
    if section.workers > 1 or section.use_gpu or (ray is not None and ray.is_initialized()):
        check_resources(stage, section.workers, section.threads, section.use_gpu)
    # else: it trains in this process (fit_in_process), checked against this machine before the run
    return StageTraining(stage, Path(run_dir), fingerprint, section.workers, section.threads, section.use_gpu)
