"""Random hyper-parameter search with Ray Tune and ASHA early stopping, shared by every stage that can be tuned
(``lmpipe tune SPEC --stage NAME``; the tagger stage today).

Random search rather than a grid (Bergstra & Bengio 2012: a few parameters matter, and random trials cover each
of them with as many distinct values as there are trials).  ASHA (Li et al. 2018, ``ASHAScheduler``) stops the
trials whose score after ``grace_period``, ``grace_period x reduction_factor``, ... epochs is in the bottom of
their rung, so most of the budget goes to the promising ones.

A stage supplies ``trial(params, fixed, report)``: train with the sampled ``params`` on top of the ``fixed``
plain-data job and call ``report(metrics)`` once per epoch (``metrics[metric]`` is maximised).  Written to
``out_dir``::

    trials.tsv   one row per trial: sampled values, best and last score, epochs run, status
    best.json    the best trial (best score over its epochs): values, score, epoch
    best.yaml    the same values as a spec fragment, e.g. ``tagger: {lr: 0.02, hidden: 200}``, to merge or pass
                 with --set
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

#: Distribution name -> how its bounds are read: loguniform/uniform (low, high), choice (values...).
DISTRIBUTIONS = ("loguniform", "uniform", "choice")


def _domain(kind: str, bounds: tuple[Any, ...]):
    from ray import tune

    if kind == "loguniform":
        return tune.loguniform(*bounds)
    if kind == "uniform":
        return tune.uniform(*bounds)
    if kind == "choice":
        return tune.choice(list(bounds))
    raise ValueError(f"unknown distribution {kind!r}; options are {list(DISTRIBUTIONS)}")


def random_search(
    trial: Callable[[dict[str, Any], dict[str, Any], Callable[[dict[str, Any]], None]], None],
    fixed: dict[str, Any],
    space: dict[str, tuple[str, tuple[Any, ...]]],
    *,
    samples: int,
    metric: str,
    max_t: int,
    grace_period: int = 1,
    reduction_factor: int = 3,
    cpus_per_trial: int = 1,
    seed: int = 0,
    storage: Path,
    out_dir: Path,
    overrides_prefix: str,
) -> dict[str, Any]:
    """Run ``samples`` random trials under ASHA; write the tables to ``out_dir``; return the best trial."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    if samples < 1:
        raise ValueError(f"--samples: bad value {samples}; allowed: an integer >= 1")

    def trainable(config: dict[str, Any]) -> None:
        trial(config, fixed, lambda metrics: tune.report(metrics))

    name = f"tune-{uuid.uuid4().hex[:8]}"
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": cpus_per_trial}),
        param_space={k: _domain(kind, bounds) for k, (kind, bounds) in space.items()},
        tune_config=tune.TuneConfig(
            metric=metric, mode="max", num_samples=samples,
            search_alg=BasicVariantGenerator(random_state=seed),
            scheduler=ASHAScheduler(
                time_attr="training_iteration", max_t=max_t, grace_period=min(grace_period, max_t),
                reduction_factor=reduction_factor,
            ),
        ),
        run_config=tune.RunConfig(storage_path=str(Path(storage).resolve()), name=name, verbose=0),
    )  # fmt: skip
    try:
        grid = tuner.fit()
        rows = []
        for i in range(len(grid)):
            result = grid[i]
            history = result.metrics_dataframe
            scores = [] if history is None or metric not in history else [float(x) for x in history[metric]]
            finite = [s for s in scores if not math.isnan(s)]
            rows.append({
                **{k: result.config[k] for k in space},
                "best": max(finite) if finite else math.nan,
                "best_epoch": 1 + scores.index(max(finite)) if finite else 0,
                "last": scores[-1] if scores else math.nan,
                "epochs": len(scores),
                "status": "error" if result.error else ("stopped" if len(scores) < max_t else "completed"),
            })  # fmt: skip
        if not any(r["epochs"] for r in rows):
            first = next((r.error for r in grid if r.error), None)
            raise RuntimeError(
                f"every one of the {len(rows)} trial(s) failed before reporting; first error: {first}"
            )
    finally:
        shutil.rmtree(Path(storage) / name, ignore_errors=True)
        try:
            Path(storage).rmdir()
        except OSError:
            pass
    best = max((r for r in rows if r["epochs"]), key=lambda r: r["best"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = [*space, "best", "best_epoch", "last", "epochs", "status"]
    with open(out_dir / "trials.tsv", "w", encoding="utf-8") as f:
        f.write("\t".join(columns) + "\n")
        for r in sorted(rows, key=lambda r: -r["best"] if not math.isnan(r["best"]) else math.inf):
            f.write(
                "\t".join(f"{r[c]:.6g}" if isinstance(r[c], float) else str(r[c]) for c in columns) + "\n"
            )
    params = {k: best[k] for k in space}
    summary = {
        "metric": metric, "score": best["best"], "epoch": best["best_epoch"], "params": params, "samples": samples,
        "trials_completed": sum(r["status"] == "completed" for r in rows),
        "trials_stopped": sum(r["status"] == "stopped" for r in rows),
        "trials_failed": sum(r["status"] == "error" for r in rows),
    }  # fmt: skip
    (out_dir / "best.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    sets = " ".join(f"--set {overrides_prefix}.{k}={v}" for k, v in params.items())
    (out_dir / "best.yaml").write_text(
        f"# best of {samples} random trials (ASHA): {metric} {best['best']:.4f} at epoch {best['best_epoch']}\n"
        f"# lmpipe run SPEC {sets}\n" + yaml.safe_dump({overrides_prefix: params}, sort_keys=False),
        encoding="utf-8",
    )
    logger.info("tune: best %s %.4f with %s (%s)", metric, best["best"], params, out_dir)
    return summary
