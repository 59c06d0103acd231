"""Run a pipeline: check every selected stage, then plan/skip/execute them in order.

    >>> from lmpipe.pipelines.run import run_pipeline
    >>> run_pipeline(load_spec("pipelines/specs/tiny.yaml"), run_dir=Path("runs/tiny"))

Stages are skipped when their manifest is complete with the same fingerprint (settings + inputs);
``force`` names stages to recompute anyway.  Ray is started (or joined) once, by ``cluster.connect``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmpipe.pipelines.rundir import StageRun, clean_stale, fingerprint, is_current, write_text_atomic
from lmpipe.pipelines.spec import STAGE_ORDER, RunSpec, SpecError, dump_spec
from lmpipe.pipelines.stages import StageContext, stage_module

logger = logging.getLogger(__name__)


def select_stages(spec: RunSpec, stages: Sequence[str] | None) -> list[str]:
    """The stages to run, in pipeline order; names are checked against what is implemented."""
    wanted = list(stages) if stages else list(spec.stages)
    known = [s for s in STAGE_ORDER if s in {f for f in spec.to_dict()}]
    for name in wanted:
        if name not in known:
            raise SpecError(f"--stages: bad value {name!r}; allowed: {known}")
    return [s for s in STAGE_ORDER if s in wanted]


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
    from lmpipe.cluster.connect import connect

    selected = select_stages(spec, stages)
    for name in force:
        if name not in STAGE_ORDER:
            raise SpecError(f"--force: bad value {name!r}; allowed: {list(STAGE_ORDER)}")
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    clean_stale(run_dir)
    write_text_atomic(run_dir / "spec.yaml", dump_spec(spec))
    ctx = StageContext(spec=spec, run_dir=run_dir, mirror=mirror, selected=tuple(selected))
    modules = {name: stage_module(name) for name in selected}
    for name in selected:  # fail fast, before any cluster time is spent
        modules[name].check(ctx)
    if any(getattr(modules[name], "NEEDS_RAY", True) for name in selected):
        connect(address, num_cpus=num_cpus)
    manifests: dict[str, dict[str, Any]] = {}
    for step, name in enumerate(selected, start=1):
        module = modules[name]
        settings, inputs = module.plan(ctx)
        fp = fingerprint({"stage": name, "settings": settings, "inputs": inputs})
        current = None if name in force else is_current(run_dir, name, fp)
        if current is not None:
            logger.info("[%d/%d] %s: up to date, skipped (fingerprint %s)", step, len(selected), name, fp[:12])
            current["skipped"] = True
            manifests[name] = current
        else:
            logger.info("[%d/%d] %s: running", step, len(selected), name)
            started = time.time()
            stage_run = StageRun(run_dir, name, fp, settings, inputs)
            try:
                result = module.execute(ctx, stage_run.tmp_dir)
            except BaseException:
                stage_run.abort()
                raise
            manifests[name] = stage_run.commit(**result)
            manifests[name]["skipped"] = False
            logger.info("[%d/%d] %s: done in %.1f s", step, len(selected), name, time.time() - started)
        for line in module.summary(manifests[name]):
            logger.info("  %s: %s", name, line)
    return manifests
