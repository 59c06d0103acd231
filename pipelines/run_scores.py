"""Where a run's per-token score files are: the ``token_scores`` entries of its stages' manifests.

Stages that score models list their files (``lm.token_scores`` format) in the manifest::

    "token_scores": {"kn5": {"valid": "scores/kn5/valid.arrow", "test": "scores/kn5/test.arrow"}}

with paths relative to the stage folder; mixtures, significance tests and the report find them here.
"""

from __future__ import annotations

from pathlib import Path

from lmpipe.pipelines.rundir import read_manifest
from lmpipe.pipelines.spec import STAGE_ORDER


def find_token_scores(run_dir: Path) -> dict[str, dict[str, Path]]:
    """``{model: {split: path}}`` over every committed stage of the run that lists ``token_scores``.
    Two stages offering the same model name is an error (a mixture must know which model it reads)."""
    found: dict[str, dict[str, Path]] = {}
    owner: dict[str, str] = {}
    for stage in STAGE_ORDER:
        manifest = read_manifest(run_dir, stage)
        if manifest is None:
            continue
        for model, splits in manifest.get("token_scores", {}).items():
            if model in owner:
                raise ValueError(
                    f"{run_dir}: model name {model!r} is offered by stages {owner[model]} and {stage}"
                )
            owner[model] = stage
            found[model] = {split: Path(run_dir) / stage / rel for split, rel in splits.items()}
    return found
