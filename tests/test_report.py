"""The report stage and ``lmpipe compare``: rows from the stages' manifests, refusal of incomparable runs,
bits per byte from the raw text size, and the written files (Markdown, CSV, JSON, PNG)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from lmpipe.pipelines.cli import main
from lmpipe.pipelines.report import write_report
from lmpipe.pipelines.report_rows import CompareError, CurvePoint, collect, compare, merge


def _score(
    log10_sum: float, tokens: int, oov: int = 0, oov_log10_sum: float = 0.0, sentences: int = 10
) -> dict:
    return {
        "log10_sum": log10_sum, "tokens": tokens, "sentences": sentences, "oov": oov, "oov_log10_sum": oov_log10_sum,
        "perplexity": 10 ** (-log10_sum / tokens),
        "perplexity_excluding_oov": 10 ** (-(log10_sum - oov_log10_sum) / (tokens - oov)),
        "oov_rate": oov / tokens,
    }  # fmt: skip


def _write(run: Path, stage: str, manifest: dict) -> None:
    (run / stage).mkdir(parents=True, exist_ok=True)
    (run / stage / "manifest.json").write_text(json.dumps({"stage": stage, "status": "complete", **manifest}))


def make_run(
    run: Path, *, lowercase: bool = True, order: int = 3, test_log10: float = -2000.0, test_bytes: int = 5000
) -> Path:
    """A run directory as the stages leave it: tokenize (sources with byte sizes), ngram (scores), sgns."""
    stream = f"tok-{lowercase}"
    _write(run, "tokenize", {
        "fingerprint": stream, "settings": {
            "normalize": {"lowercase": lowercase}, "tokenizer": {"kind": "whitespace"}, "corpus": {"train": "tiny/train.txt"},
        },
        "inputs": {"train": "abc"},
        "outputs": {"splits": {
            "train": {"text_bytes": 40000}, "test": {"text_bytes": test_bytes}, "valid": {"text_bytes": 0},
        }},
    })  # fmt: skip
    _write(run, "ngram", {
        "fingerprint": f"ng{order}", "inputs": {"tokenize": stream}, "settings": {"order": order, "estimator": "lmplz"},
        "outputs": {"ngrams": {"1": 100, "2": 300, "3": 200}}, "timings": {"seconds": 1.5},
        "host": {"hostname": "h", "cpus": 2},
        "perplexity": {"test": _score(test_log10, 1000, oov=50, oov_log10_sum=-300.0), "valid": _score(-1900.0, 1000)},
    })  # fmt: skip
    _write(run, "sgns", {
        "fingerprint": "sg", "inputs": {"tokenize": stream}, "outputs": {"count": 500, "dim": 20},
        "training": {"seconds": 3.0, "device": "cpu", "workers": 2}, "host": {"hostname": "h", "cpus": 2},
        "evaluation": {
            "analogy": {"total": 0.25, "answered": 88, "questions": 19544},
            "analogy_3cosmul": {"total": 0.3, "answered": 88, "questions": 19544},
            "wordsim353": {"spearman": 0.5, "pairs": 8, "oov": 345},
            "simlex999": {"skipped": "no valid in-vocabulary pairs", "pairs": 0, "oov": 999},
        },
    })  # fmt: skip
    return run


def test_rows_come_from_the_stage_manifests(tmp_path):
    report = collect(make_run(tmp_path / "a"))
    (row,) = [r for r in report.models if r.split == "test"]
    assert row.model == "kn3" and row.parameters == 600 and row.train_seconds == 1.5
    assert row.perplexity == pytest.approx(10**2.0) and row.oov_rate == pytest.approx(0.05)
    assert row.bits_per_byte == pytest.approx(2000.0 / 5000 / math.log10(2))  # -sum log2 p / the lines' bytes
    (valid,) = [r for r in report.models if r.split == "valid"]
    assert valid.bits_per_byte is None  # no byte count recorded: no figure rather than a wrong one
    (vec,) = report.embeddings
    assert (
        vec.model,
        vec.count,
        vec.dim,
        vec.analogy,
        vec.analogy_3cosmul,
        vec.wordsim353,
        vec.simlex999,
    ) == (
        "sgns",
        500,
        20,
        0.25,
        0.3,
        0.5,
        None,
    )
    assert "2 x cpu" in vec.hardware


def test_compare_ranks_rows_of_one_stream_and_refuses_different_streams(tmp_path):
    a = collect(make_run(tmp_path / "a", order=3, test_log10=-2000.0))
    b = collect(make_run(tmp_path / "b", order=5, test_log10=-1900.0))
    ranked = compare(merge([a, b]))
    assert [r.model for r in ranked] == ["kn5", "kn3"]  # lower perplexity first
    c = collect(make_run(tmp_path / "c", lowercase=False, test_log10=-1800.0, test_bytes=6000))
    with pytest.raises(
        CompareError, match=r"different token streams.*normalize.lowercase: (True vs False|False vs True)"
    ):
        compare(merge([a, c]))
    by_bpb = compare(merge([a, c]), normalize="bpb")
    assert [Path(r.run).name for r in by_bpb] == ["c", "a"]  # 1800/6000 < 2000/5000 bytes
    with pytest.raises(CompareError, match="no language model was scored on the 'train' split"):
        compare(a, split="train")


def test_collect_refuses_foreign_or_empty_run_directories(tmp_path):
    run = make_run(tmp_path / "a")
    _write(run, "mystery", {"fingerprint": "x"})
    with pytest.raises(CompareError, match=r"\['mystery'\] are not lmpipe stages"):
        collect(run)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CompareError, match="no completed stage"):
        collect(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such run directory"):
        collect(tmp_path / "missing")


def test_write_report_files(tmp_path):
    report = collect(make_run(tmp_path / "a"))
    report.curves += [
        CurvePoint(run="a", model="lstm", epoch=e, perplexity=p) for e, p in [(1, 300.0), (2, 200.0)]
    ]
    written = write_report(report, tmp_path / "out")
    assert set(written["files"]) == {
        "report.md",
        "models.csv",
        "embeddings.csv",
        "report.json",
        "valid_ppl.png",
        "embeddings.png",
        "report.html",
    }
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| kn3 |" in md and "| sgns |" in md and "100.00" in md
    # every evaluation figure with what it covers; a set not scored shows its 0 of N, never a bare figure
    assert "| 25.00 (88/19,544) | 30.00 (88/19,544) | 0.500 (8/353) | – (0/999) | – | – |" in md
    assert "![valid_ppl.png](valid_ppl.png)" in md
    rows = list(csv.DictReader((tmp_path / "out" / "models.csv").open()))
    assert (
        len(rows) == 1 and rows[0]["split"] == "test" and float(rows[0]["perplexity"]) == pytest.approx(100.0)
    )
    payload = json.loads((tmp_path / "out" / "report.json").read_text())
    assert len(payload["all_models"]) == 2 and len(payload["curves"]) == 2
    assert (tmp_path / "out" / "valid_ppl.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_compare(tmp_path, capsys):
    a, c = make_run(tmp_path / "a"), make_run(tmp_path / "c", lowercase=False)
    assert main(["compare", str(a), "--out", str(tmp_path / "out")]) == 0
    assert "| kn3 |" in capsys.readouterr().out
    assert main(["compare", str(a), str(c)]) == 2
    assert "not comparable" in capsys.readouterr().err
    assert main(["compare", str(a), str(c), "--normalize", "bpb"]) == 0
    assert main(["compare", str(tmp_path / "nope")]) == 2


def test_report_stage_on_a_real_run(tmp_path, ray_local):
    """tokenize + ngram + report on the tiny spec: the report's KN row equals the ngram manifest's score."""
    from lmpipe.pipelines.run import run_pipeline
    from lmpipe.pipelines.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parents[1] / "pipelines" / "specs" / "tiny.yaml")
    manifests = run_pipeline(spec, run_dir=tmp_path / "run", stages=["tokenize", "ngram", "report"])
    assert manifests["report"]["outputs"]["models"] == 1
    rows = list(csv.DictReader((tmp_path / "run" / "report" / "models.csv").open()))
    expected = manifests["ngram"]["perplexity"]["test"]["perplexity"]
    assert float(rows[0]["perplexity"]) == pytest.approx(expected, rel=1e-12)
    # the ngram stage wrote every test token's log10 p: their whole-corpus sums are the manifest's figures
    from lmpipe.lm.token_scores import read_token_scores
    from lmpipe.pipelines.run_scores import find_token_scores

    scores = read_token_scores(find_token_scores(tmp_path / "run")["kn3"]["test"]).corpus_score()
    assert scores.perplexity() == pytest.approx(expected, rel=1e-12)
    assert (scores.tokens, scores.oov) == (
        manifests["ngram"]["perplexity"]["test"]["tokens"],
        manifests["ngram"]["perplexity"]["test"]["oov"],
    )
    again = run_pipeline(spec, run_dir=tmp_path / "run", stages=["tokenize", "ngram", "report"])
    assert again["report"]["skipped"]


def _report_with_curves(tmp_path) -> tuple:
    report = collect(make_run(tmp_path / "tiny"))
    run = str(tmp_path / "tiny")
    report.curves += [
        CurvePoint(run=run, model="lstm", epoch=e, perplexity=p, train_perplexity=t)
        for e, p, t in [(1, 420.0, 900.0), (2, 260.0, 330.0), (3, 190.0, 210.0)]
    ]
    return report, run


def test_curves_plot_train_valid_integer_epochs_and_the_ngram_reference(tmp_path):
    """valid_ppl.png: train and valid lines, integer epoch ticks, plain-number y ticks (no 2x10^2 minor
    labels), the run's n-gram validation perplexity as a horizontal line, and a title naming run and corpus."""
    from matplotlib.ticker import NullFormatter

    from lmpipe.pipelines.report import curves_figure

    report, run = _report_with_curves(tmp_path)
    fig = curves_figure(report)
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["lstm valid"].get_ydata()) == [420.0, 260.0, 190.0]
    assert list(lines["lstm train"].get_ydata()) == [900.0, 330.0, 210.0]
    valid_kn = next(r for r in report.models if r.split == "valid").perplexity
    (ref,) = [line for label, line in lines.items() if "n-gram" in label]
    assert set(ref.get_ydata()) == {valid_kn} and "kn3" in ref.get_label()
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if 1 <= t <= 3]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert isinstance(ax.yaxis.get_minor_formatter(), NullFormatter)
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert labels and not any("times" in x or "^" in x or "e+" in x for x in labels), labels
    assert "run tiny, corpus tiny/train.txt" in ax.get_title()
    assert ax.get_yscale() == "log"  # 79 to 900: over a decade
    report.curves = [CurvePoint(run=run, model="lstm", epoch=e, perplexity=40.0 - e) for e in range(1, 8)]
    (ax,) = curves_figure(report).axes
    assert ax.get_yscale() == "linear" and isinstance(ax.yaxis.get_minor_formatter(), NullFormatter)
    assert [t for t in ax.get_xticks() if 1 <= t <= 7] == list(range(1, 8))


def test_embeddings_plot_one_quantity_per_axis_in_percent_and_no_empty_bars(tmp_path):
    from lmpipe.pipelines.report import embeddings_figure

    report, _ = _report_with_curves(tmp_path)
    fig = embeddings_figure(report)
    acc, sim = fig.axes
    assert acc.get_ylabel() == "accuracy (%)" and sim.get_ylabel() == "Spearman ρ"
    assert sorted(round(p.get_height(), 6) for p in acc.patches) == [25.0, 30.0]  # percent, not 0.25
    assert [round(p.get_height(), 6) for p in sim.patches] == [0.5]  # SimLex/MEN/RW not evaluated: no bar
    assert [t.get_text() for t in sim.get_xticklabels()] == ["WS353"]
    assert "run tiny" in fig._suptitle.get_text()


def test_report_html_is_self_contained(tmp_path):
    """report.html holds the tables and both plots inline (data: URIs); nothing is fetched from elsewhere."""
    import base64
    from html.parser import HTMLParser

    report, _ = _report_with_curves(tmp_path)
    write_report(report, tmp_path / "out")
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    refs: list[tuple[str, str]] = []

    class Refs(HTMLParser):
        def handle_starttag(self, tag, attrs):
            refs.extend((tag, v) for k, v in attrs if k in ("src", "href", "srcset", "data", "action"))

    Refs().feed(page)
    assert len(refs) == 2 and all(tag == "img" and v.startswith("data:image/png;base64,") for tag, v in refs)
    pngs = [base64.b64decode(v.split(",", 1)[1]) for _, v in refs]
    assert pngs == [(tmp_path / "out" / n).read_bytes() for n in ("valid_ppl.png", "embeddings.png")]
    assert "<script" not in page and "@import" not in page and "url(" not in page
    assert "<td>25.00 (88/19,544)</td>" in page and "<td>kn3</td>" in page
    assert "run tiny, corpus tiny/train.txt" in page
