"""The mix stage: linear interpolations of models the run has already scored (``lm.mixture``).

Input: the per-token scores every scoring stage lists under ``token_scores`` in its manifest (the ngram
stage's ``kn5``, the lm stage's ``lstm`` ...).  For each mixture of ``mix.mixtures``:

    weights   fitted on the valid split only (EM, a grid, or given), optionally per context-frequency bin
    score     valid and test with KenLM's accounting; token scores written like any model's, so a mixture
              can be compared, bootstrapped or mixed again
    compare   paired bootstrap over test sentences: CI of ppl(mixture) - ppl(component) for each component

``lmpipe mix RUN --models kn5,lstm`` runs this stage on an existing run with one mixture.  Models whose token
streams differ (tokenizer or vocabulary) are refused with the first differing position.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from lmpipe.lm.bootstrap import paired_bootstrap
from lmpipe.lm.mixture import MixtureWeights, apply, fit_em, grid_weights
from lmpipe.lm.token_scores import TokenScores, read_token_scores, write_token_scores
from lmpipe.pipelines.core.schemas import BOS_ID
from lmpipe.pipelines.core.vocab import Vocab
from lmpipe.pipelines.run_scores import find_token_scores
from lmpipe.pipelines.rundir import StageRun, read_manifest
from lmpipe.pipelines.spec import STAGE_ORDER, MixSpec, MixtureSpec
from lmpipe.pipelines.spec_parser import SpecError
from lmpipe.pipelines.stages import EVERY, Stage, StageContext

logger = logging.getLogger(__name__)
#: Mixes the scored models of every stage before it; reads manifests and small files only (no Ray).
STAGE = Stage(name="mix", settings=MixSpec, after=(EVERY,), needs_ray=False)
TUNE_SPLIT, EVAL_SPLIT = "valid", "test"


def check(ctx: StageContext) -> None:
    if not ctx.spec.mix.mixtures:
        raise SpecError("mix.mixtures is empty: list at least one mixture, e.g. [{models: [kn5, lstm]}]")


def inputs(ctx: StageContext) -> dict[str, Any]:
    """The fingerprint of every stage of the run that wrote per-token scores."""
    inputs: dict[str, Any] = {}
    for name in STAGE_ORDER:
        if name in ("mix", "report"):
            continue
        manifest = read_manifest(ctx.run_dir, name)
        if manifest is not None and manifest.get("token_scores"):
            inputs[name] = manifest["fingerprint"]
    return inputs


def _load(available: dict[str, dict[str, Path]], mixture: MixtureSpec, split: str) -> dict[str, TokenScores]:
    out = {}
    for model in mixture.models:
        if model not in available:
            raise SpecError(
                f"mix: model {model!r} of mixture {mixture.label!r} has no token scores in this run; "
                f"scored models: {sorted(available)} (run the stage that trains it first)"
            )
        if split not in available[model]:
            raise SpecError(
                f"mix: model {model!r} was not scored on the {split} split (has {sorted(available[model])})"
            )
        out[model] = read_token_scores(available[model][split])
    return out


def _previous_counts(ctx: StageContext, scores: TokenScores) -> np.ndarray:
    counts = Vocab.load(ctx.run_dir / "tokenize" / "vocab.tsv").counts.astype(np.int64)
    return counts[scores.previous_tokens(BOS_ID)]


def _fit(ctx: StageContext, mixture: MixtureSpec, tune: dict[str, TokenScores]) -> MixtureWeights:
    if mixture.method == "fixed":
        assert mixture.weights is not None  # validated by the spec
        return MixtureWeights(mixture.models, np.array([mixture.weights], dtype=np.float64))
    if mixture.method == "grid":
        return grid_weights(tune)
    prev = _previous_counts(ctx, next(iter(tune.values()))) if mixture.context_bins else None
    return fit_em(tune, prev_counts=prev, bins=mixture.context_bins)


def execute(ctx: StageContext, run: StageRun) -> dict[str, Any]:
    spec: MixSpec = ctx.spec.mix
    tmp_dir = run.tmp_dir
    available = find_token_scores(ctx.run_dir)
    results: dict[str, Any] = {}
    token_scores: dict[str, dict[str, str]] = {}
    for i, mixture in enumerate(spec.mixtures, start=1):
        label = mixture.label
        if label in available:
            raise SpecError(
                f"mix.mixtures: name {label!r} is already a model of the run; name the mixture otherwise"
            )
        logger.info(
            "=== %d/%d mixture %s: %s weights on %s ===",
            i,
            len(spec.mixtures),
            label,
            mixture.method,
            TUNE_SPLIT,
        )
        weights = _fit(ctx, mixture, _load(available, mixture, TUNE_SPLIT))
        entry: dict[str, Any] = {
            "weights": weights.as_dict(),
            "method": mixture.method,
            "perplexity": {},
            "components": {},
        }
        token_scores[label] = {}
        for split in (TUNE_SPLIT, EVAL_SPLIT):
            parts = _load(available, mixture, split)
            prev = _previous_counts(ctx, next(iter(parts.values()))) if weights.bins else None
            mixed = apply(parts, weights, prev)
            rel = f"scores/{label}/{split}.arrow"
            write_token_scores(tmp_dir / rel, mixed)
            token_scores[label][split] = rel
            entry["perplexity"][split] = {"split": split, **mixed.corpus_score().to_dict()}
            entry["components"][split] = {m: s.corpus_score().perplexity() for m, s in parts.items()}
            if split == EVAL_SPLIT and spec.bootstrap_samples:
                entry["bootstrap"] = {
                    m: paired_bootstrap(mixed, s, samples=spec.bootstrap_samples, seed=i).as_dict()
                    for m, s in parts.items()
                }
        logger.info(
            "%s: test perplexity %.2f (components %s), weights %s", label, entry["perplexity"][EVAL_SPLIT]["perplexity"],
            {m: round(p, 2) for m, p in entry["components"][EVAL_SPLIT].items()}, weights.as_dict()["weights"],
        )  # fmt: skip
        results[label] = entry
    return {"outputs": {"mixtures": sorted(results)}, "mixtures": results, "token_scores": token_scores}


def _weights_text(weights: dict[str, Any]) -> str:
    rows = weights["weights"]
    if len(rows) == 1:
        return ", ".join(f"{m} {w:.3f}" for m, w in zip(weights["models"], rows[0], strict=True))
    return f"{len(rows)} context bins (thresholds {weights['bins']})"


def report_rows(manifest: dict[str, Any], run_dir: Path) -> list[Any]:
    """One row per mixture and split; details carry the weights and, on test, the bootstrap intervals."""
    from lmpipe.pipelines.report_rows import hardware, perplexity_row

    rows = []
    for label, entry in manifest["mixtures"].items():
        for split, score in entry["perplexity"].items():
            details = f"weights {_weights_text(entry['weights'])} (fitted on {TUNE_SPLIT}, {entry['method']})"
            if split == EVAL_SPLIT and entry.get("bootstrap"):
                cis = [
                    f"Δppl vs {m} {b['difference']:+.2f} [{b['low']:+.2f}, {b['high']:+.2f}]"
                    for m, b in entry["bootstrap"].items()
                ]
                details += (
                    f"; {int(100 * next(iter(entry['bootstrap'].values()))['confidence'])}% CI: "
                    + ", ".join(cis)
                )
            rows.append(
                perplexity_row(
                    manifest,
                    run_dir,
                    split,
                    score,
                    model=label,
                    family="mixture",
                    hardware=hardware(manifest, "cpu"),
                    details=details,
                    scores=manifest.get("token_scores", {}).get(label, {}).get(split),
                )  # fmt: skip
            )
    return rows


def summary(manifest: dict[str, Any]) -> list[str]:
    lines = []
    for label, entry in manifest["mixtures"].items():
        test = entry["perplexity"].get(EVAL_SPLIT, {})
        comps = ", ".join(f"{m} {p:.2f}" for m, p in entry["components"].get(EVAL_SPLIT, {}).items())
        lines.append(
            f"{label}: test perplexity {test.get('perplexity', float('nan')):.2f} ({comps}); weights {_weights_text(entry['weights'])}"
        )
    return lines
