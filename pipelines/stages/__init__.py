"""The stage protocol.  A stage is a ``RunSpec`` section declared with ``stage_section`` plus a module
``pipelines/stages/<name>.py`` holding:

``STAGE = Stage(name=..., settings=<its spec section class>, upstream=(...), ...)``
    the declaration the runner (``pipelines.run``) derives the rest from: the order (upstream stages run
    first), the settings (the section without its ``Runtime`` fields, plus the ``shared`` sections), the
    inputs (each upstream stage's fingerprint, plus :func:`inputs`), the fingerprint, the checkpoint folder,
    whether Ray is started, the check that every upstream stage runs now or has completed, and (``ray_train``)
    the check of its workers against the machine when it must run.
``check(ctx)`` (optional)
    validate what needs the environment (binaries, input paths, vectors) before any stage runs, raising a
    ``UserError`` that names the problem and the fix; ``lmpipe validate`` runs it too.
``inputs(ctx) -> dict`` (optional)
    identities of what the stage reads besides its upstream stages (files named by the spec: their
    content hash, see :func:`lmpipe.pipelines.rundir.path_identity`).
``execute(ctx, run) -> dict``
    compute into ``run.tmp_dir`` (a :class:`~lmpipe.pipelines.rundir.StageRun`: fingerprint, settings,
    inputs, checkpoint folder) and return manifest sections (``outputs`` required).
``summary(manifest) -> list[str]``
    lines printed after the stage (also for a skipped stage).

Optional extras: ``report_rows(manifest, run_dir)`` (rows for ``pipelines.report``) and ``tune(ctx, ...)``
(``lmpipe tune``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from lmpipe.pipelines.core.errors import MissingError
from lmpipe.pipelines.spec import STAGE_ORDER, RunSpec, SpecError


def epoch_lines(manifest: dict, epochs: list[dict], line) -> list[str]:
    """A summary's per-epoch lines, ``line(epoch)`` each; for a skipped (up-to-date) stage only the last,
    said to be from earlier, so a rerun does not reprint a history it did not compute."""
    if manifest.get("skipped") and epochs:
        return [f"{len(epochs)} epoch(s) trained earlier; last: {line(epochs[-1])}"]
    return [line(e) for e in epochs]


#: In :attr:`Stage.after`: every stage that does not itself say ``EVERY`` (the mix and report stages).
EVERY = "*"


@dataclass(frozen=True, slots=True)
class Stage:
    """What a stage module declares about itself; see the module docstring."""

    name: str
    #: The stage's spec section (``RunSpec.<name>``).
    settings: type
    #: Stages whose outputs it reads: they run first, must run now or have completed, and their fingerprints
    #: are inputs (``{"tokenize": <fingerprint>}``).
    upstream: tuple[str, ...] = ()
    #: Stages it reads when present (named by a setting, or every earlier one): ordering only.
    after: tuple[str, ...] = ()
    #: Shared sections that also shape its output; settings are then ``{section: ..., name: ...}``.
    shared: tuple[str, ...] = ()
    #: False for a stage that reads manifests and small files only: no Ray instance is started for it; a
    #: function of the run's context for a stage that decides from its settings (``ngram.executor``).
    needs_ray: bool | Callable[[StageContext], bool] = True
    #: Trains with Ray Train: when the stage must run, its section's ``workers`` x ``threads`` CPUs (and a GPU
    #: per worker with ``use_gpu``) are checked against the machine before Ray starts (:func:`check_machine`).
    ray_train: bool = False


@dataclass(frozen=True, slots=True)
class StageContext:
    spec: RunSpec
    run_dir: Path
    mirror: str | None = None
    #: The stages this run executes (a stage may need an upstream one to run now or to have run before).
    selected: tuple[str, ...] = ()
    #: The Ray address the run will join (None: an embedded local Ray on this machine).
    address: str | None = None
    #: CPUs of the embedded local Ray (None: all of this machine's).
    num_cpus: int | None = None


def require_stage(ctx: StageContext, upstream: str, stage: str, hint: str = "") -> None:
    """``upstream`` must run in this invocation or have completed in the run directory."""
    from lmpipe.pipelines.rundir import read_manifest

    if upstream not in ctx.selected and read_manifest(ctx.run_dir, upstream) is None:
        raise MissingError(f"{ctx.run_dir / upstream}: the {stage} stage needs the {upstream} stage; run it first{hint}")


def stage_module(name: str) -> ModuleType:
    """The module of a stage (``pipelines/stages/<name>.py``), checked against its declaration."""
    if name not in STAGE_ORDER:
        raise SpecError(f"stage {name!r} is not implemented; implemented stages: {list(STAGE_ORDER)}")
    module = importlib.import_module(f"{__name__}.{name}")
    declared: Stage = module.STAGE
    section = RunSpec.__dataclass_fields__[name].default_factory  # type: ignore[misc]
    if declared.name != name or declared.settings is not section:
        raise TypeError(f"{module.__name__}: STAGE declares {declared.name!r}/{declared.settings.__name__}, "
                        f"RunSpec.{name} is {section.__name__}")  # a programming error  # fmt: skip
    return module


def declaration(name: str) -> Stage:
    return stage_module(name).STAGE


def in_process(section: Any) -> bool:
    """A training section with one worker and no GPU trains in the driver's process
    (``cluster.training.fit_in_process``): the degree-1 case of the same loop, without Ray Train."""
    return getattr(section, "workers", 0) == 1 and not getattr(section, "use_gpu", False)


def wants_ray(ctx: StageContext, name: str) -> bool:
    """Whether running stage ``name`` needs a Ray instance: its declaration's ``needs_ray``, except a Ray Train
    stage that trains in process (:func:`in_process`) on an embedded local Ray, which then is never started."""
    stage = declaration(name)
    if callable(stage.needs_ray):  # the stage decides from its settings (ngram.executor)
        return stage.needs_ray(ctx)
    if not stage.needs_ray:
        return False
    if stage.ray_train and not ctx.address and in_process(ctx.spec.section(name)):
        return False
    return True


def check_machine(ctx: StageContext, section: str) -> None:
    """A training stage's ``workers`` x ``threads`` (and GPUs) against what the run will have, before Ray
    starts: this machine for an embedded local Ray (``num_cpus`` if given), the running Ray instance if this
    process has one.  A cluster to be joined is checked once joined (``cluster.training.check_resources``)."""
    import os
    import sys

    from lmpipe.cluster.training import check_resources

    spec = ctx.spec.section(section)
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        check_resources(section, spec.workers, spec.threads, spec.use_gpu)
        return
    if ctx.address or os.environ.get("RAY_ADDRESS"):
        return
    machine = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = ctx.num_cpus or machine
    gpus = 0
    if spec.use_gpu:
        import torch

        gpus = torch.cuda.device_count()
    check_resources(section, spec.workers, spec.threads, spec.use_gpu, available=(float(cpus or 1), float(gpus)))
