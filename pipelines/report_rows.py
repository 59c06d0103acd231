"""The rows of the cross-model table: what each model and embedding set of a run contributes, and ranking.

Rows come from the stages themselves.  A stage module that produces comparable models defines

``report_rows(manifest, run_dir) -> list[ModelRow | EmbeddingRow | CurvePoint]``

and :func:`collect` gathers them from each stage's committed manifest, so a new model family (a neural LM
stage, an NPLM, a mixture) adds rows by defining that function, without touching this module.

Comparability.  Perplexities are comparable only over the same token stream: the same evaluation text,
tokenized and normalised the same way, with the same vocabulary (an OOV is scored as ``<unk>``, so a
smaller vocabulary makes an easier task).  Every row carries ``stream``, the tokenize stage's fingerprint,
which covers exactly those settings and inputs.  :func:`compare` refuses to put rows of different streams
in one table and says which settings differ, unless asked to normalise: ``bpb`` compares bits per byte of
the raw evaluation text (defined for any tokenizer, as long as the split was read from plain text files).
Rendering (markdown, CSV, JSON, plots) is ``pipelines.report``'s.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmpipe.cluster.process import WorkersRecord
from lmpipe.pipelines.core.errors import MissingError, UserError
from lmpipe.pipelines.rundir import MANIFEST, read_manifest


class CompareError(UserError, ValueError):
    """Runs or rows that cannot be put side by side; the message says why."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelRow:
    """One language model scored on one split with KenLM's accounting (``lm.perplexity.CorpusScore``)."""

    run: str
    stage: str
    model: str  # unique within the run, e.g. "kn5", "lstm", "kn5+lstm"
    family: str  # "Kneser-Ney", "LSTM", "RNN", "mixture" ...
    split: str
    perplexity: float
    perplexity_excluding_oov: float
    oov_rate: float
    tokens: int  # predicted tokens: words + one </s> per sentence
    sentences: int
    log10_sum: float
    stream: str  # token-stream identity: the tokenize stage's fingerprint
    bits_per_byte: float | None = None
    parameters: int | None = None  # trainable parameters (n-gram models: n-gram entries)
    train_seconds: float | None = None
    hardware: str = ""
    details: str = ""  # order and estimator, layer sizes, mixture weights ...
    scores: str | None = None  # per-token scores file (``lm.token_scores``), relative to the stage folder


@dataclass(frozen=True, kw_only=True, slots=True)
class EmbeddingRow:
    """One set of word vectors and its standard evaluations (``embeddings.evaluate``)."""

    run: str
    stage: str
    model: str
    count: int
    dim: int
    analogy: float | None = None  # 3CosAdd accuracy over answered questions
    analogy_3cosmul: float | None = None
    wordsim353: float | None = None
    simlex999: float | None = None
    men: float | None = None
    rw: float | None = None
    train_seconds: float | None = None
    hardware: str = ""
    # Coverage: a figure over 8 of 353 pairs says little, so each one carries what it was computed on.
    analogy_answered: int | None = None  # questions with all four words in the vocabulary
    analogy_questions: int | None = None  # questions in the file
    wordsim353_pairs: int | None = None  # pairs scored / pairs in the file
    wordsim353_total: int | None = None
    simlex999_pairs: int | None = None
    simlex999_total: int | None = None
    men_pairs: int | None = None
    men_total: int | None = None
    rw_pairs: int | None = None
    rw_total: int | None = None

    def coverage(self, metric: str) -> tuple[int, int] | None:
        """(used, total) behind ``metric`` (``analogy``, ``analogy_3cosmul`` or a similarity set), if known."""
        if metric.startswith("analogy"):
            used, total = self.analogy_answered, self.analogy_questions
        else:
            used, total = getattr(self, f"{metric}_pairs"), getattr(self, f"{metric}_total")
        return None if used is None or total is None else (used, total)


@dataclass(frozen=True, kw_only=True, slots=True)
class CurvePoint:
    """Validation perplexity after one training epoch, for the learning-curve plot."""

    run: str
    model: str
    epoch: int
    perplexity: float
    train_perplexity: float | None = None  # over the epoch's training tokens, as the model was updated


@dataclass(slots=True)
class Report:
    models: list[ModelRow] = field(default_factory=list)
    embeddings: list[EmbeddingRow] = field(default_factory=list)
    curves: list[CurvePoint] = field(default_factory=list)
    streams: dict[str, dict[str, Any]] = field(default_factory=dict)  # stream -> what defines it (per run)
    corpora: dict[str, str] = field(default_factory=dict)  # run -> its training corpus, as the spec names it


# ------------------------------------------------------------------------------------------ rows helpers
def token_stream(run_dir: Path) -> tuple[str, dict[str, int]]:
    """The run's token-stream identity (the tokenize stage's fingerprint) and each split's text bytes: the
    UTF-8 bytes of the lines its sentences came from, one newline each, counted by the tokenize stage.  The
    one definition of "per byte" for every model of the run, whatever the tokenizer or the file compression."""
    manifest = read_manifest(run_dir, "tokenize") or {}
    splits = manifest.get("outputs", {}).get("splits", {})
    text_bytes = {split: int(s["text_bytes"]) for split, s in splits.items() if s.get("text_bytes")}
    return manifest.get("fingerprint", ""), text_bytes


def bits_per_byte(log10_sum: float, text_bytes: int | None) -> float | None:
    return -log10_sum / text_bytes / math.log10(2.0) if text_bytes else None


def hardware(manifest: dict[str, Any], device: str = "cpu", workers: Any = 1) -> str:
    """``workers``: a training stage's ``workers`` record (``cluster.process.WorkersRecord``; an int in run
    directories written before it) or a count."""
    host = manifest.get("host", {})
    count = WorkersRecord.from_json(workers).count
    return f"{count} x {device} ({host.get('hostname', '?')}, {host.get('cpus', '?')} cpus)"


def perplexity_row(
    manifest: dict[str, Any], run_dir: Path, split: str, score: dict[str, Any], **fields: Any
) -> ModelRow:
    """A ModelRow from a ``CorpusScore.to_dict()`` of ``split``; ``fields`` fill the rest.  Every model of a
    run is scored on that run's tokenization, so the stream and byte counts come from its tokenize stage."""
    stream, text_bytes = token_stream(run_dir)
    return ModelRow(
        run=str(run_dir),
        stage=manifest["stage"],
        split=split,
        perplexity=float(score["perplexity"]),
        perplexity_excluding_oov=float(score["perplexity_excluding_oov"]),
        oov_rate=float(score["oov_rate"]),
        tokens=int(score["tokens"]),
        sentences=int(score["sentences"]),
        log10_sum=float(score["log10_sum"]),
        stream=stream,
        bits_per_byte=bits_per_byte(float(score["log10_sum"]), text_bytes.get(split)),
        **fields,
    )


def embedding_row(
    manifest: dict[str, Any], run_dir: Path, *, model: str, train_seconds: float | None, hardware: str
) -> EmbeddingRow:
    """An EmbeddingRow from an embedding stage's ``outputs`` and ``evaluation`` (skipped evaluations: None)."""
    ev = manifest.get("evaluation", {})

    def spearman(name: str) -> float | None:
        value = ev.get(name, {}).get("spearman") if isinstance(ev.get(name), dict) else None
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)

    analogy = ev.get("analogy", {}) if isinstance(ev.get("analogy"), dict) else {}
    cosmul = ev.get("analogy_3cosmul", {}) if isinstance(ev.get("analogy_3cosmul"), dict) else {}
    coverage: dict[str, int | None] = {}
    for name in ("wordsim353", "simlex999", "men", "rw"):
        entry = ev.get(name) if isinstance(ev.get(name), dict) else {}
        pairs, oov = entry.get("pairs"), entry.get("oov")
        coverage[f"{name}_pairs"] = pairs
        coverage[f"{name}_total"] = None if pairs is None or oov is None else int(pairs) + int(oov)
    return EmbeddingRow(
        run=str(run_dir),
        stage=manifest["stage"],
        model=model,
        count=int(manifest["outputs"]["count"]),
        dim=int(manifest["outputs"]["dim"]),
        analogy=analogy.get("total"),
        analogy_3cosmul=cosmul.get("total"),
        wordsim353=spearman("wordsim353"),
        simlex999=spearman("simlex999"),
        men=spearman("men"),
        rw=spearman("rw"),
        train_seconds=train_seconds,
        hardware=hardware,
        analogy_answered=analogy.get("answered"),
        analogy_questions=analogy.get("questions"),
        **coverage,
    )


# ------------------------------------------------------------------------------------------ collect
def collect(run_dir: Path) -> Report:
    """Every row the run's committed stages offer.  A folder with a manifest of an unknown stage, or no
    committed stage at all, is an error naming the folder (a report must not silently miss models)."""
    from lmpipe.pipelines.spec import STAGE_ORDER
    from lmpipe.pipelines.stages import stage_module

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MissingError(f"{run_dir}: no such run directory")
    found = sorted(p.parent.name for p in run_dir.glob(f"*/{MANIFEST}"))
    foreign = [name for name in found if name not in STAGE_ORDER]
    if foreign:
        raise CompareError(
            f"{run_dir}: stage folder(s) {foreign} are not lmpipe stages (known: {sorted(STAGE_ORDER)}); "
            "is this a run directory of another version or tool?"
        )
    report = Report()
    complete = []
    for name in found:
        manifest = read_manifest(run_dir, name)
        if manifest is None:
            continue
        complete.append(name)
        rows_of = getattr(stage_module(name), "report_rows", None)
        if rows_of is None:
            continue
        for row in rows_of(manifest, run_dir):
            if isinstance(row, ModelRow):
                report.models.append(row)
            elif isinstance(row, EmbeddingRow):
                report.embeddings.append(row)
            else:
                report.curves.append(row)
    if not complete:
        raise CompareError(f"{run_dir}: no completed stage (no */{MANIFEST}); run `lmpipe run` first")
    tokenize = read_manifest(run_dir, "tokenize")
    if tokenize is not None:
        report.corpora[str(run_dir)] = corpus_name(tokenize.get("settings", {}))
        report.streams[tokenize["fingerprint"]] = {
            "run": str(run_dir),
            "settings": tokenize.get("settings", {}),
            "inputs": tokenize.get("inputs", {}),
        }
    return report


def corpus_name(settings: dict[str, Any]) -> str:
    """The training corpus as the tokenize stage's settings name it (``data:ptb/train``, ``tiny/train.txt``)."""
    train = settings.get("corpus", {}).get("train") if isinstance(settings.get("corpus"), dict) else None
    if isinstance(train, list):
        more = f" (+{len(train) - 1} more)" if len(train) > 1 else ""
        return (corpus_name({"corpus": {"train": train[0]}}) if train else "?") + more
    if not train:
        return "?"
    train = str(train)
    return train if train.startswith("data:") or "://" in train else "/".join(Path(train).parts[-2:])


def merge(reports: Iterable[Report]) -> Report:
    out = Report()
    for r in reports:
        out.models += r.models
        out.embeddings += r.embeddings
        out.curves += r.curves
        out.streams.update(r.streams)
        out.corpora.update(r.corpora)
    return out


def _differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    out: list[str] = []
    for k in keys:
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _differences(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} vs {vb!r}")
    return out


def compare(report: Report, *, split: str = "test", normalize: str | None = None) -> list[ModelRow]:
    """The rows of ``split``, best first.  Rows of different token streams are refused (naming the settings
    that differ) unless ``normalize="bpb"``, which ranks by bits per byte of the raw text instead."""
    rows = [r for r in report.models if r.split == split]
    if not rows:
        raise CompareError(f"no language model was scored on the {split!r} split in these runs")
    streams = sorted({r.stream for r in rows})
    if normalize not in (None, "bpb"):
        raise CompareError(f"normalize: bad value {normalize!r}; options: bpb (bits per byte) or none")
    if len(streams) > 1 and normalize is None:
        first, *others = streams
        reasons = []
        for other in others:
            a, b = report.streams.get(first, {}), report.streams.get(other, {})
            diff = _differences({"settings": a.get("settings", {}), "inputs": a.get("inputs", {})},
                                {"settings": b.get("settings", {}), "inputs": b.get("inputs", {})})  # fmt: skip
            runs = f"{a.get('run', first[:12])} vs {b.get('run', other[:12])}"
            reasons.append(f"{runs}: " + ("; ".join(diff[:6]) if diff else "different tokenize fingerprints"))
        raise CompareError(
            "these models were scored on different token streams (tokenization, normalisation, vocabulary or "
            "input text differ), so their perplexities are not comparable: "
            + " | ".join(reasons)
            + ". Compare runs of one tokenization, or pass --normalize bpb to rank by bits per byte"
        )
    if normalize == "bpb":
        missing = [f"{r.run}:{r.model}" for r in rows if r.bits_per_byte is None]
        if missing:
            raise CompareError(
                f"bits per byte are unknown for {missing} (the split was not read from plain text files)"
            )
        return sorted(rows, key=lambda r: r.bits_per_byte)  # type: ignore[arg-type, return-value]
    return sorted(rows, key=lambda r: r.perplexity)
