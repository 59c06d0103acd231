"""The report stage: the run's cross-model table (``pipelines.report``) as Markdown, CSV, JSON and PNG plots.

It reads only committed manifests (rows come from each stage's ``report_rows``), so it is cheap and runs
last; its fingerprint includes every other committed stage's fingerprint, so any retrained model makes
the report stale.  ``lmpipe compare RUN [RUN ...]`` renders the same table over several runs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lmpipe.pipelines.report import write_report
from lmpipe.pipelines.report_rows import collect
from lmpipe.pipelines.rundir import read_manifest
from lmpipe.pipelines.spec import STAGE_ORDER
from lmpipe.pipelines.stages import StageContext

logger = logging.getLogger(__name__)
#: Reads manifests and small files only: no Ray instance is started for it.
NEEDS_RAY = False


def check(ctx: StageContext) -> None:
    """Nothing to check up front: with no model yet, the report says so when it runs."""


def plan(ctx: StageContext) -> tuple[dict[str, Any], dict[str, Any]]:
    inputs: dict[str, Any] = {}
    for name in STAGE_ORDER:
        if name == "report":
            continue
        manifest = read_manifest(ctx.run_dir, name)
        if manifest is not None:
            inputs[name] = manifest["fingerprint"]
    return ctx.spec.to_dict()["report"], inputs


def execute(ctx: StageContext, tmp_dir: Path) -> dict[str, Any]:
    spec = ctx.spec.report
    report = collect(ctx.run_dir)
    written = write_report(report, tmp_dir, split=spec.split, normalize=spec.normalize)
    logger.info("report: %d model row(s), %d vector set(s) -> %s", written["models"], written["embeddings"], written["files"])
    return {"outputs": written}


def summary(manifest: dict[str, Any]) -> list[str]:
    out = manifest["outputs"]
    return [f"{out['models']} language model(s), {out['embeddings']} vector set(s): {', '.join(out['files'])}"]
