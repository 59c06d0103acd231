"""The report stage: the run's cross-model table (``pipelines.report``) as Markdown, CSV, JSON and PNG plots.

It reads only committed manifests (rows come from each stage's ``report_rows``), so it is cheap and runs
last; its fingerprint includes every other committed stage's fingerprint, so any retrained model makes
the report stale.  ``lmpipe compare RUN [RUN ...]`` renders the same table over several runs.
"""

from __future__ import annotations

import logging
from typing import Any

from lmpipe.pipelines.report import write_report
from lmpipe.pipelines.report_rows import collect
from lmpipe.pipelines.rundir import StageRun, read_manifest
from lmpipe.pipelines.spec import STAGE_ORDER, ReportSpec
from lmpipe.pipelines.stages import EVERY, Stage, StageContext

logger = logging.getLogger(__name__)
#: Tabulates every stage before it (with no model yet, the report says so); reads manifests only (no Ray).
STAGE = Stage(name="report", settings=ReportSpec, after=(EVERY,), needs_ray=False)


def inputs(ctx: StageContext) -> dict[str, Any]:
    """The fingerprint of every other stage of the run that has completed."""
    inputs: dict[str, Any] = {}
    for name in STAGE_ORDER:
        if name == "report":
            continue
        manifest = read_manifest(ctx.run_dir, name)
        if manifest is not None:
            inputs[name] = manifest["fingerprint"]
    return inputs


def execute(ctx: StageContext, run: StageRun) -> dict[str, Any]:
    spec, tmp_dir = ctx.spec.report, run.tmp_dir
    report = collect(ctx.run_dir)
    written = write_report(report, tmp_dir, split=spec.split, normalize=spec.normalize)
    logger.info("report: %d model row(s), %d vector set(s) -> %s", written["models"], written["embeddings"], written["files"])
    return {"outputs": written}


def summary(manifest: dict[str, Any]) -> list[str]:
    out = manifest["outputs"]
    return [f"{out['models']} language model(s), {out['embeddings']} vector set(s): {', '.join(out['files'])}"]
