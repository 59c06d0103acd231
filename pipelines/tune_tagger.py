"""``lmpipe tune SPEC --stage tagger``: random search over the tagger's settings with Ray Tune and ASHA.

The tagger stage's :func:`~lmpipe.pipelines.stages.tagger.prepare` writes the encoded data once; every trial
is the stage's training loop on one worker, with the sampled settings, reporting each epoch's valid score.
"""

from __future__ import annotations

import dataclasses
import shutil
import uuid
from pathlib import Path
from typing import Any

from lmpipe.cluster.training import from_config, to_config
from lmpipe.lm.tagging.train import TaggerJob
from lmpipe.pipelines.spec import SpecError
from lmpipe.pipelines.stages import StageContext
from lmpipe.pipelines.stages.tagger import check, prepare


def tune(ctx: StageContext, samples: int, out_dir: Path | None = None) -> dict[str, Any]:
    """Random search over lr, hidden, dropout (and window for the window model) with ASHA on the first task's
    valid score; writes ``trials.tsv``, ``best.json`` and ``best.yaml`` (the spec overrides) to ``out_dir``
    (default ``RUN/tune-tagger/``).  Returns the best trial's settings and score."""
    from lmpipe.cluster.tune import random_search

    spec = ctx.spec.tagger
    check(ctx)
    out_dir = Path(out_dir or ctx.run_dir / "tune-tagger")
    work = ctx.run_dir / ".tune-tagger"
    prepared = prepare(ctx, work / "data", work / "model", work / "checkpoints")
    if "valid" not in prepared.job.tasks[0].splits:
        raise SpecError(f"tagger.tasks[0]: tuning needs a valid split for {prepared.job.tasks[0].name}")
    t = spec.tune
    space: dict[str, tuple[str, Any]] = {
        "lr": ("loguniform", tuple(t.lr)), "hidden": ("choice", tuple(t.hidden)), "dropout": ("uniform", tuple(t.dropout)),
    }  # fmt: skip
    if spec.model == "window":
        space["window"] = ("choice", tuple(t.window))
    best = random_search(
        _trial, {"job": to_config(prepared.job), "work": str(work / "trials")}, space, samples=samples,
        metric="valid_score", max_t=spec.epochs, grace_period=t.grace_period, reduction_factor=t.reduction_factor,
        cpus_per_trial=t.cpus_per_trial, seed=spec.seed, storage=ctx.run_dir / ".ray-tune", out_dir=out_dir,
        overrides_prefix="tagger",
    )  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)
    return best


def _trial(params: dict[str, Any], fixed: dict[str, Any], report) -> None:
    """One trial: the base job with the sampled settings, one worker in this Tune actor, each epoch reported."""
    from lmpipe.cluster.training import WorkerGroup
    from lmpipe.lm.tagging.train import train_tagger

    job = from_config(TaggerJob, fixed["job"])
    model = {k: params[k] for k in ("hidden", "dropout", "window") if k in params}
    trial_dir = Path(fixed["work"]) / uuid.uuid4().hex[:12]
    job = dataclasses.replace(
        job, model=dataclasses.replace(job.model, **model), optim=dataclasses.replace(job.optim, lr=params["lr"]),
        out_dir=str(trial_dir / "model"), checkpoint_dir=str(trial_dir / "checkpoints"), stop_after_epoch=None,
    )  # fmt: skip
    import torch

    train_tagger(job, WorkerGroup(0, 1, torch.device("cpu"), False), on_epoch=report)
