"""The cross-model table rendered: ``report.md``, ``report.html`` (self-contained), ``models.csv``,
``embeddings.csv``, ``report.json`` and the plots ``valid_ppl.png`` and ``embeddings.png``.

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


def models_table(rows: Sequence[ModelRow], *, multi_run: bool = False) -> tuple[list[str], list[list[str]]]:
    """The language-model table as header and rows of cells, rendered by Markdown and HTML alike."""
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
    body = []
    for r in rows:
        cells = [
            r.model, r.family, r.split, _fmt(r.perplexity, ".2f"), _fmt(r.perplexity_excluding_oov, ".2f"),
            _fmt(100 * r.oov_rate, ".2f"), f"{r.tokens:,}", _fmt(r.bits_per_byte, ".4f"),
            _fmt(r.parameters, ","), _fmt(r.train_seconds, ".1f"), r.hardware, r.details,
        ]  # fmt: skip
        if multi_run:
            cells.insert(0, Path(r.run).name)
        body.append(cells)
    return head, body


#: Word-vector evaluations: row field, column heading, percent (accuracies) or not (correlations).
EVALUATIONS = (
    ("analogy", "analogy 3CosAdd %", True),
    ("analogy_3cosmul", "3CosMul %", True),
    ("wordsim353", "WS353 ρ", False),
    ("simlex999", "SimLex ρ", False),
    ("men", "MEN ρ", False),
    ("rw", "RW ρ", False),
)


def _figure(row: EmbeddingRow, metric: str, percent: bool) -> str:
    """``12.50 (88/19,544)``: the figure and what it was computed on; ``– (0/353)`` for a set not scored."""
    value = getattr(row, metric)
    text = _fmt(None if value is None else 100 * value if percent else value, ".2f" if percent else ".3f")
    cov = row.coverage(metric)
    return f"{text} ({cov[0]:,}/{cov[1]:,})" if cov else text


def embeddings_table(rows: Sequence[EmbeddingRow], *, multi_run: bool = False) -> tuple[list[str], list[list[str]]]:
    """The word-vector table; each evaluation cell says how many pairs or questions it covers."""
    head = ["vectors", "words", "dim", *(h for _, h, _ in EVALUATIONS), "train s", "hardware"]
    if multi_run:
        head.insert(0, "run")
    body = []
    for r in rows:
        cells = [r.model, f"{r.count:,}", str(r.dim), *(_figure(r, m, pct) for m, _, pct in EVALUATIONS)]
        cells += [_fmt(r.train_seconds, ".1f"), r.hardware]
        if multi_run:
            cells.insert(0, Path(r.run).name)
        body.append(cells)
    return head, body


def markdown_table(head: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines) + "\n"


def models_markdown(rows: Sequence[ModelRow], *, multi_run: bool = False) -> str:
    return markdown_table(*models_table(rows, multi_run=multi_run))


def embeddings_markdown(rows: Sequence[EmbeddingRow], *, multi_run: bool = False) -> str:
    return markdown_table(*embeddings_table(rows, multi_run=multi_run))


COVERAGE_NOTE = (
    "Each evaluation is followed by (used/total): the word pairs with both words in the vocabulary, or the "
    "analogy questions with all four, of those in the file (gensim's protocol, the 300,000 most frequent words)."
)


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


def _title(report: Report, runs: Sequence[str], what: str) -> str:
    """``what — run tiny, corpus tiny/train.txt`` (several runs: each name and corpus)."""
    named = [f"{Path(r).name} ({report.corpora[r]})" if r in report.corpora else Path(r).name for r in sorted(set(runs))]
    return f"{what}\nrun {', '.join(named)}" if len(named) > 1 else (
        f"{what}\nrun {Path(runs[0]).name}, corpus {report.corpora.get(runs[0], '?')}"
    )  # fmt: skip


def _save(fig, path: Path) -> bool:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_curves(report: Report, path: Path) -> bool:
    """``valid_ppl.png`` (:func:`curves_figure`); False when no model recorded a curve."""
    fig = curves_figure(report)
    return fig is not None and _save(fig, path)


def plot_embeddings(report: Report, path: Path) -> bool:
    """``embeddings.png`` (:func:`embeddings_figure`); False when no vector set was evaluated."""
    fig = embeddings_figure(report)
    return fig is not None and _save(fig, path)


def curves_figure(report: Report):
    """Training and validation perplexity per epoch, one colour per (run, model), and each run's n-gram model
    on the validation split as a dashed reference line; None when there is nothing to plot."""
    points = report.curves
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, MaxNLocator, NullFormatter, ScalarFormatter

    fig, ax = plt.subplots(figsize=(7, 4.5))
    series: dict[tuple[str, str], list[CurvePoint]] = {}
    for p in points:
        series.setdefault((p.run, p.model), []).append(p)
    multi = len({run for run, _ in series}) > 1
    for (run, model), pts in sorted(series.items()):
        pts = sorted(pts, key=lambda p: p.epoch)
        label = f"{Path(run).name}/{model}" if multi else model
        (line,) = ax.plot([p.epoch for p in pts], [p.perplexity for p in pts], marker="o", label=f"{label} valid")
        train = [(p.epoch, p.train_perplexity) for p in pts if p.train_perplexity is not None]
        if train:
            ax.plot(*zip(*train, strict=True), marker=".", linestyle=":", color=line.get_color(), label=f"{label} train")
    runs = {run for run, _ in series}
    for row in report.models:
        if row.run in runs and row.split == "valid" and row.stage == "ngram":
            label = f"{Path(row.run).name}/{row.model}" if multi else row.model
            ax.axhline(row.perplexity, color="grey", linestyle="--", linewidth=1,
                       label=f"{label} (n-gram) valid {row.perplexity:.1f}")  # fmt: skip
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    low, high = ax.get_ylim()
    if high > 10 * max(low, 1e-9):  # curves spanning over a decade: log scale, ticks at 1, 2, 5 x 10^k
        ax.set_ylabel("perplexity (log scale)")
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ScalarFormatter())  # 200, 500 rather than 2x10^2
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        ax.set_ylabel("perplexity")
        ax.yaxis.set_major_formatter(ScalarFormatter(useOffset=False))
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_title(_title(report, sorted(runs), "Language-model perplexity by epoch"), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def embeddings_figure(report: Report):
    """Two panels, one quantity each: analogy accuracy in percent, and Spearman correlations.  A set no row
    was evaluated on gets no bar and no tick; a row without a figure for a set gets no bar there."""
    rows = report.embeddings
    panels = [
        [(m, h) for m, h, pct in EVALUATIONS if pct == percent and any(getattr(r, m) is not None for r in rows)]
        for percent in (True, False)
    ]
    panels = [(metrics, pct) for metrics, pct in zip(panels, (True, False), strict=True) if metrics]
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 1, 4.5), squeeze=False)
    multi = len({r.run for r in rows}) > 1
    width = 0.8 / len(rows)
    for ax, (metrics, percent) in zip(axes[0], panels, strict=True):
        for i, r in enumerate(rows):
            bars = [(j + i * width, getattr(r, m)) for j, (m, _) in enumerate(metrics) if getattr(r, m) is not None]
            xs, values = zip(*bars, strict=True) if bars else ((), ())
            values = [100 * v if percent else v for v in values]
            ax.bar(xs, values, width=width, color=f"C{i}", label=f"{Path(r.run).name}/{r.model}" if multi else r.model)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(metrics))])
        ax.set_xticklabels([h.removeprefix("analogy ").removesuffix(" %").removesuffix(" ρ") for _, h in metrics])
        if percent:
            ax.set_ylabel("accuracy (%)")
            ax.set_title("Analogy accuracy", fontsize=10)
        else:
            ax.set_ylabel("Spearman ρ")
            ax.set_title("Word similarity", fontsize=10)
            ax.axhline(0, color="black", linewidth=0.6)
        ax.legend(fontsize=8)
    fig.suptitle(_title(report, [r.run for r in rows], "Word-vector evaluation"), fontsize=10)
    return fig


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
    """``report.md``, ``report.html``, ``models.csv``, ``embeddings.csv``, ``report.json`` and the PNG plots.
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
        lm_heading = f"Language models ({split} split, by {key}; KenLM's accounting: one </s> per sentence, OOV as <unk>)"
        parts += [
            f"## {lm_heading}",
            "",
            models_markdown(ranked, multi_run=multi),
        ]
    if report.embeddings:
        parts += ["## Word vectors", "", COVERAGE_NOTE, "", embeddings_markdown(report.embeddings, multi_run=multi)]
    runs = sorted({r.run for r in report.models} | {r.run for r in report.embeddings})
    artifacts = artifacts_markdown([Path(r) for r in runs], multi_run=multi)
    if artifacts:
        parts += ["", "## Artifacts", "", artifacts, ""]
    plots = []
    if plot_curves(report, out_dir / "valid_ppl.png"):
        plots.append("valid_ppl.png")
    if plot_embeddings(report, out_dir / "embeddings.png"):
        plots.append("embeddings.png")
    parts += [f"![{name}]({name})\n" for name in plots]
    files = {
        "report.md": "\n".join(parts),
        "models.csv": rows_csv(ranked),
        "embeddings.csv": rows_csv(report.embeddings),
        "report.json": report_json(report, ranked),
    }
    for name, text in files.items():
        (out_dir / name).write_text(text, encoding="utf-8")
    from lmpipe.pipelines.report_html import report_html

    tables = []
    if ranked:
        tables.append((lm_heading, *models_table(ranked, multi_run=multi)))
    if report.embeddings:
        tables.append(("Word vectors", *embeddings_table(report.embeddings, multi_run=multi)))
    page = report_html(report, tables, [out_dir / name for name in plots], notes={"Word vectors": COVERAGE_NOTE})
    (out_dir / "report.html").write_text(page, encoding="utf-8")
    files["report.html"] = page
    return {
        "files": sorted(files) + plots,
        "models": len(ranked),
        "embeddings": len(report.embeddings),
        "curves": len(report.curves),
    }
