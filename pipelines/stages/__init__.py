"""Stage registry.  A stage module provides three functions:

``check(ctx)``
    validate settings that need the environment (binaries, upstream stages, input paths) before any
    stage runs, raising an error that names the problem and the fix.
``plan(ctx) -> (settings, inputs)``
    the JSON-able settings that shape the output and the identities of its inputs; their hash is the
    stage's fingerprint (same fingerprint + complete manifest = skip).
``execute(ctx, tmp_dir) -> dict``
    compute into ``tmp_dir`` and return manifest fields (``outputs`` required; anything else is added).
``summary(manifest) -> list[str]``
    lines printed after the stage (also for a skipped stage).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from lmpipe.pipelines.spec import RunSpec

#: Stage name -> module implementing it.  A new stage adds one line here and a section to RunSpec.
STAGE_MODULES: dict[str, str] = {
    "tokenize": "lmpipe.pipelines.stages.tokenize",
    "ngram": "lmpipe.pipelines.stages.ngram",
    "sgns": "lmpipe.pipelines.stages.sgns",
    "cooccur": "lmpipe.pipelines.stages.cooccur",
    "glove": "lmpipe.pipelines.stages.glove",
    "lm": "lmpipe.pipelines.stages.lm",
    "tagger": "lmpipe.pipelines.stages.tagger",
    "mix": "lmpipe.pipelines.stages.mix",
    "report": "lmpipe.pipelines.stages.report",
}


@dataclass(frozen=True, slots=True)
class StageContext:
    spec: RunSpec
    run_dir: Path
    mirror: str | None = None
    #: The stages this run executes (a stage may need an upstream one to run now or to have run before).
    selected: tuple[str, ...] = ()


def require_stage(ctx: StageContext, upstream: str, stage: str, hint: str = "") -> None:
    """A stage's ``check``: ``upstream`` must run in this invocation or have completed in the run directory."""
    from lmpipe.pipelines.rundir import read_manifest

    if upstream not in ctx.selected and read_manifest(ctx.run_dir, upstream) is None:
        raise FileNotFoundError(f"{ctx.run_dir / upstream}: the {stage} stage needs the {upstream} stage; run it first{hint}")


def stage_module(name: str) -> ModuleType:
    if name not in STAGE_MODULES:
        raise ValueError(f"stage {name!r} is not implemented; implemented stages: {sorted(STAGE_MODULES)}")
    return importlib.import_module(STAGE_MODULES[name])
