"""The cross-model table rendered: ``report.md``, ``models.csv``, ``embeddings.csv``, ``report.json``, plots.

Every language model and every embedding set of one or more runs, side by side.  The rows, how stages build
them from their manifests and which rows may be ranked together are ``pipelines.report_rows``'s; this module
only renders them.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lmpipe.pipelines.report_rows import CurvePoint, EmbeddingRow, ModelRow, Report, compare


# ------------------------------------------------------------------------------------------ render
def _fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isnan(value):
        return "–"
    return format(value, spec) if spec else str(value)


def models_markdown(rows: Sequence[ModelRow], *, multi_run: bool = False) -> str:
    head = [
        "model",
        "family",
        "split",
        "ppl",
        "ppl w/o OOV",
        "OOV %",
        "tokens",
        "bits/byte",
        "params",
        "train s",
        "hardware",
        "details",
    ]
    if multi_run:
        head.insert(0, "run")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            r.model, r.family, r.split, _fmt(r.perplexity, ".2f"), _fmt(r.perplexity_excluding_oov, ".2f"),
            _fmt(100 * r.oov_rate, ".2f"), f"{r.tokens:,}", _fmt(r.bits_per_byte, ".4f"),
            _fmt(r.parameters, ","), _fmt(r.train_seconds, ".1f"), r.hardware, r.details,
        ]  # fmt: skip
        if multi_run:
            cells.insert(0, Path(r.run).name)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def embeddings_markdown(rows: Sequence[EmbeddingRow], *, multi_run: bool = False) -> str:
    head = [
        "vectors",
        "words",
        "dim",
        "analogy 3CosAdd %",
        "3CosMul %",
        "WS353",
        "SimLex",
        "MEN",
        "RW",
        "train s",
        "hardware",
    ]
    if multi_run:
        head.insert(0, "run")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        pct = [None if x is None else 100 * x for x in (r.analogy, r.analogy_3cosmul)]
        cells = [
            r.model, f"{r.count:,}", str(r.dim), _fmt(pct[0], ".2f"), _fmt(pct[1], ".2f"), _fmt(r.wordsim353, ".3f"),
            _fmt(r.simlex999, ".3f"), _fmt(r.men, ".3f"), _fmt(r.rw, ".3f"), _fmt(r.train_seconds, ".1f"), r.hardware,
        ]  # fmt: skip
        if multi_run:
            cells.insert(0, Path(r.run).name)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def rows_csv(rows: Sequence[Any]) -> str:
    if not rows:
        return ""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(asdict(rows[0])))
    writer.writeheader()
    for r in rows:
        writer.writerow(asdict(r))
    return out.getvalue()


def report_json(report: Report, ranked: Sequence[ModelRow]) -> str:
    payload = {
        "models": [asdict(r) for r in ranked],
        "all_models": [asdict(r) for r in report.models],
        "embeddings": [asdict(r) for r in report.embeddings],
        "curves": [asdict(r) for r in report.curves],
    }
    return json.dumps(payload, indent=2, allow_nan=True) + "\n"


def plot_curves(points: Sequence[CurvePoint], path: Path) -> bool:
    """Validation perplexity per epoch, one line per (run, model); False when there is nothing to plot."""
    if not points:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    series: dict[tuple[str, str], list[CurvePoint]] = {}
    for p in points:
        series.setdefault((Path(p.run).name, p.model), []).append(p)
    multi = len({run for run, _ in series}) > 1
    for (run, model), pts in sorted(series.items()):
        pts = sorted(pts, key=lambda p: p.epoch)
        ax.plot(
            [p.epoch for p in pts],
            [p.perplexity for p in pts],
            marker="o",
            label=f"{run}/{model}" if multi else model,
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation perplexity")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_embeddings(rows: Sequence[EmbeddingRow], path: Path) -> bool:
    """Grouped bars: each evaluation (analogy as a fraction, Spearman correlations) per vector set."""
    metrics = ["analogy", "wordsim353", "simlex999", "men", "rw"]
    usable = [r for r in rows if any(getattr(r, m) is not None for m in metrics)]
    if not usable:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    width = 0.8 / len(usable)
    multi = len({r.run for r in usable}) > 1
    for i, r in enumerate(usable):
        values = [getattr(r, m) or 0.0 for m in metrics]
        xs = [j + i * width for j in range(len(metrics))]
        ax.bar(xs, values, width=width, label=f"{Path(r.run).name}/{r.model}" if multi else r.model)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(metrics))])
    ax.set_xticklabels(["analogy acc.", "WS353 ρ", "SimLex ρ", "MEN ρ", "RW ρ"])
    ax.set_ylabel("accuracy / Spearman")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def artifacts_markdown(run_dirs: Sequence[Path], *, multi_run: bool = False) -> str:
    """Every file the stages list in their manifests (``outputs.files``) with its size, e.g. the ARPA and the
    KenLM binary side by side."""
    from lmpipe.pipelines.rundir import read_manifest
    from lmpipe.pipelines.spec import STAGE_ORDER

    lines = []
    for run_dir in run_dirs:
        for stage in STAGE_ORDER:
            manifest = read_manifest(run_dir, stage)
            for item in (manifest or {}).get("outputs", {}).get("files", []) if manifest else []:
                path = run_dir / stage / item["path"]
                size = item.get("bytes", path.stat().st_size if path.exists() else None)
                where = f"{run_dir} | " if multi_run else ""
                lines.append(f"| {where}{stage}/{item['path']} | {_fmt(size / 1e6, '.2f') if size is not None else '-'} |")
    if not lines:
        return ""
    head = "| run | file | MB |\n|---|---|---|" if multi_run else "| file | MB |\n|---|---|"
    return "\n".join([head, *lines])


def write_report(
    report: Report, out_dir: Path, *, split: str = "test", normalize: str | None = None
) -> dict[str, Any]:
    """``report.md``, ``models.csv``, ``embeddings.csv``, ``report.json`` and the PNG plots in ``out_dir``.
    An empty model table (a run with embeddings only) is not an error here."""
    out_dir.mkdir(parents=True, exist_ok=True)
    multi = len({r.run for r in report.models} | {r.run for r in report.embeddings}) > 1
    ranked: list[ModelRow] = (
        compare(report, split=split, normalize=normalize)
        if any(r.split == split for r in report.models)
        else []
    )
    parts = ["# lmpipe report", ""]
    if ranked:
        key = "bits per byte" if normalize == "bpb" else "perplexity"
        parts += [
            f"## Language models ({split} split, by {key}; KenLM's accounting: one </s> per sentence, OOV as <unk>)",
            "",
            models_markdown(ranked, multi_run=multi),
        ]
    if report.embeddings:
        parts += ["## Word vectors", "", embeddings_markdown(report.embeddings, multi_run=multi)]
    runs = sorted({r.run for r in report.models} | {r.run for r in report.embeddings})
    artifacts = artifacts_markdown([Path(r) for r in runs], multi_run=multi)
    if artifacts:
        parts += ["", "## Artifacts", "", artifacts]
    files = {
        "report.md": "\n".join(parts),
        "models.csv": rows_csv(ranked),
        "embeddings.csv": rows_csv(report.embeddings),
        "report.json": report_json(report, ranked),
    }
    for name, text in files.items():
        (out_dir / name).write_text(text, encoding="utf-8")
    plots = []
    if plot_curves(report.curves, out_dir / "valid_ppl.png"):
        plots.append("valid_ppl.png")
    if plot_embeddings(report.embeddings, out_dir / "embeddings.png"):
        plots.append("embeddings.png")
    return {
        "files": sorted(files) + plots,
        "models": len(ranked),
        "embeddings": len(report.embeddings),
        "curves": len(report.curves),
    }
