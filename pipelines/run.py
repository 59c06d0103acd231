"""Run a pipeline: check every selected stage, then plan/skip/execute them in order.

    >>> from lmpipe.pipelines.run import run_pipeline
    >>> run_pipeline(load_spec("pipelines/specs/tiny.yaml"), run_dir=Path("runs/tiny"))

Everything here is derived from each stage module's ``STAGE`` declaration (``pipelines.stages``): the order
(upstream stages first, ties in ``RunSpec`` order), the upstream check, the settings that shape the output
(the section without its ``Runtime`` fields), the inputs (upstream fingerprints plus the stage's own
``inputs``), the fingerprint and whether Ray is needed.  Stages are skipped when their manifest is complete
with the same fingerprint; ``force`` names stages to recompute anyway.  Every fingerprint is checked before
Ray starts, and Ray is started (or joined, by ``cluster.connect``) only when a stage that needs it must run,
so a rerun with every stage up to date takes a second.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmpipe.pipelines.core.faults import inject
from lmpipe.pipelines.core.redact import redact
from lmpipe.pipelines.rundir import (
    StageRun,
    check_replaceable,
    clean_stale,
    fingerprint,
    is_current,
    read_manifest,
    write_text_atomic,
)
from lmpipe.pipelines.runlock import RunLock
from lmpipe.pipelines.spec import STAGE_ORDER, RunSpec, SpecError, dump_spec
from lmpipe.pipelines.spec_parser import settings_dict
from lmpipe.pipelines.stages import (
    EVERY,
    Stage,
    StageContext,
    check_machine,
    declaration,
    require_stage,
    stage_module,
    wants_ray,
)

logger = logging.getLogger(__name__)


def _after(stage: Stage) -> set[str]:
    """The stages ``stage`` runs after (its upstream and ``after`` ones, ``EVERY`` resolved)."""
    wanted = set(stage.upstream) | {s for s in stage.after if s != EVERY}
    if EVERY in stage.after:
        wanted |= {s for s in STAGE_ORDER if EVERY not in declaration(s).after}
    return wanted - {stage.name}


def stage_order(names: Sequence[str] = STAGE_ORDER) -> list[str]:
    """``names`` in an order where every stage follows the ones it reads; ties keep ``RunSpec`` order."""
    pending = [s for s in STAGE_ORDER if s in set(names)]
    before = {s: _after(declaration(s)) & set(pending) for s in pending}
    order: list[str] = []
    while pending:
        ready = next((s for s in pending if before[s] <= set(order)), None)
        if ready is None:
            raise TypeError(f"stage declarations form a cycle among {pending}")  # a programming error
        order.append(ready)
        pending.remove(ready)
    return order


def select_stages(spec: RunSpec, stages: Sequence[str] | None) -> list[str]:
    """The stages to run, in pipeline order; names are checked against what is implemented."""
    wanted = list(stages) if stages else list(spec.stages)
    for name in wanted:
        if name not in STAGE_ORDER:
            raise SpecError(f"--stages: bad value {name!r}; allowed: {list(STAGE_ORDER)}")
    return stage_order(wanted)


def check_stage(ctx: StageContext, name: str) -> None:
    """Every check of one stage that needs no cluster: its upstream stages, then the module's ``check``."""
    stage = declaration(name)
    for upstream in stage.upstream:
        chain = ",".join(stage_order(_closure(name)))
        require_stage(ctx, upstream, name, f" (--stages {chain})")
    check = getattr(stage_module(name), "check", None)
    if check is not None:
        check(ctx)


def preflight(ctx: StageContext, force: Sequence[str] = ()) -> list[str]:
    """Every check of the selected stages that needs no cluster, before Ray starts; returns the stages that
    must run (not up to date, forced, or after one that runs).  Workers are checked only for those: a rerun
    that skips a stage does not need the CPUs it trained with."""
    for name in ctx.selected:
        check_stage(ctx, name)
    stale: list[str] = []
    for name in ctx.selected:
        after = _after(declaration(name))
        if name in force or after & set(stale) or is_current(ctx.run_dir, name, plan_stage(ctx, name).fingerprint) is None:
            stale.append(name)
    for name in stale:
        if declaration(name).ray_train:
            check_machine(ctx, name)
    return stale


def _closure(name: str) -> set[str]:
    out = {name}
    for upstream in declaration(name).upstream:
        out |= _closure(upstream)
    return out


@dataclass(frozen=True, slots=True)
class StagePlan:
    """What a stage would compute: its fingerprint is the hash of these three."""

    name: str
    settings: dict[str, Any]
    inputs: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        return fingerprint({"stage": self.name, "settings": self.settings, "inputs": self.inputs})


def plan_stage(ctx: StageContext, name: str) -> StagePlan:
    """The settings that shape a stage's output and the identities of its inputs, from its declaration."""
    stage = declaration(name)
    own = settings_dict(ctx.spec.section(name), fingerprint=True)
    if stage.shared:
        settings = {s: settings_dict(ctx.spec.section(s)) for s in stage.shared} | {name: own}
    else:
        settings = own
    inputs: dict[str, Any] = {}
    for upstream in stage.upstream:
        manifest = read_manifest(ctx.run_dir, upstream)
        inputs[upstream] = manifest["fingerprint"] if manifest else None
    extra = getattr(stage_module(name), "inputs", None)
    if extra is not None:
        inputs.update(extra(ctx))
    return StagePlan(name, settings, inputs)


def run_pipeline(
    spec: RunSpec,
    *,
    run_dir: Path,
    stages: Sequence[str] | None = None,
    force: Sequence[str] = (),
    address: str | None = None,
    mirror: str | None = None,
    num_cpus: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Run the selected stages; returns each stage's manifest (fresh or reused)."""
    selected = select_stages(spec, stages)
    for name in force:
        if name not in STAGE_ORDER:
            raise SpecError(f"--force: bad value {name!r}; allowed: {list(STAGE_ORDER)}")
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir):
        return _run_locked(spec, run_dir, selected, force, address, mirror, num_cpus)


def _run_locked(
    spec: RunSpec,
    run_dir: Path,
    selected: list[str],
    force: Sequence[str],
    address: str | None,
    mirror: str | None,
    num_cpus: int | None,
) -> dict[str, dict[str, Any]]:
    """``run_pipeline`` with the run directory's lock held."""
    clean_stale(run_dir)
    ctx = StageContext(
        spec=spec, run_dir=run_dir, mirror=mirror, selected=tuple(selected), address=address, num_cpus=num_cpus
    )
    for name in preflight(ctx, force):  # fail fast, before any cluster time is spent
        check_replaceable(run_dir, name)
    # Only an accepted run describes the outputs (generate and mix read it); credentials stay in memory.
    write_text_atomic(run_dir / "spec.yaml", redact(dump_spec(spec)))
    connected = False
    manifests: dict[str, dict[str, Any]] = {}
    for step, name in enumerate(selected, start=1):
        module = stage_module(name)
        plan = plan_stage(ctx, name)
        fp = plan.fingerprint
        current = None if name in force else is_current(run_dir, name, fp)
        if current is not None:
            logger.info("[%d/%d] %s: up to date, skipped (fingerprint %s)", step, len(selected), name, fp[:12])
            current["skipped"] = True
            manifests[name] = current
        else:
            if wants_ray(ctx, name) and not connected:
                from lmpipe.cluster.connect import connect

                connect(address, num_cpus=num_cpus)
                connected = True
            logger.info("[%d/%d] %s: running", step, len(selected), name)
            started = time.time()
            stage_run = StageRun(run_dir, name, fp, plan.settings, plan.inputs)
            try:
                result = module.execute(ctx, stage_run)
            except BaseException:
                stage_run.abort()
                raise
            manifests[name] = stage_run.commit(**result)
            inject(f"run.{name}.committed")  # the fault-injection suite's driver kill at a stage boundary
            manifests[name]["skipped"] = False
            logger.info("[%d/%d] %s: done in %.1f s", step, len(selected), name, time.time() - started)
        for line in module.summary(manifests[name]):
            logger.info("  %s: %s", name, line)
    return manifests
