"""The tagger stage: POS tagging, chunking and NER on CoNLL/CoNLL-U files, trained with Ray Train.

Input: the tasks' tagged files (``tagger.tasks``: paths or ``data:NAME/SPLIT``; tokens come from the files, no
tokenize stage) and optionally word vectors (``tagger.vectors``: ``sgns``/``glove`` = ``RUN/<stage>/vectors``, or a
path in ``vectors_format``).  Output (``RUN/tagger/``)::

    model.pt, model.json        the best valid epoch's state dict; architecture and task tag lists
    vocab.tsv                   the word vocabulary (id, token; lowercased when the lookup is)
    chars.json                  the character vocabulary (a JSON list, id = position), with ``tagger.chars``
    <task>/valid.conll          ``token gold predicted`` a line, a blank line between sentences, tags in the
    <task>/test.conll           file's own scheme (IOB1 for CoNLL-2003): conlleval or seqeval read them as is
    manifest.json               per task and split: accuracy or conlleval P/R/F1 per type and overall,
                                unknown tags (tags of valid/test never seen in train: counted and listed),
                                unknown-word rates; per-epoch training figures

    === 1/3 prepare ===   read and check every file (a malformed line names file and line), convert chunk tags
                          to the training scheme, build the vocabulary (training words + the most frequent
                          vectors), align the vectors, encode -> RUN/.checkpoints/tagger-<fingerprint>/data/
    === 2/3 train ===     TorchTrainer(lm.tagging.train.train_loop), ScalingConfig(num_workers=workers);
                          checkpoints per epoch (resumed on rerun), early stopping on the first task's valid score
    === 3/3 evaluate ===  predictions written and scored in the file's scheme (lm.tagging.metrics)

``LMPIPE_TAGGER_STOP_AFTER_EPOCH=N`` stops training with an error right after epoch N's checkpoint, as a kill
would: the resume tests use it.  ``lmpipe tune SPEC --stage tagger`` calls :func:`tune` (Ray Tune, ASHA).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmpipe.cluster.training import (
    StageTraining,
    config_from,
    from_config,
    start_training,
    stop_after_env,
    to_config,
)
from lmpipe.lm.tagging.data import UNK, CharVocab, WordVocab, build_char_vocab, build_vocab, encode
from lmpipe.lm.tagging.metrics import score
from lmpipe.lm.tagging.models import TaggerConfig
from lmpipe.lm.tagging.train import OptimConfig, TaggerJob, TaskData, train_loop
from lmpipe.pipelines import datasets
from lmpipe.pipelines.conll import (
    FILE_SCHEMES,
    Sentence,
    convert,
    read_conll,
    render,
    spans,
    write_predictions,
)
from lmpipe.pipelines.rundir import fingerprint, read_manifest
from lmpipe.pipelines.shards import sha256_file
from lmpipe.pipelines.spec import (
    LM_EMBEDDING_STAGES,
    TAGGER_SPAN_COLUMNS,
    SpecError,
    TaggerSpec,
    TaggerTaskSpec,
)
from lmpipe.pipelines.stages import StageContext

logger = logging.getLogger(__name__)

STOP_ENV = stop_after_env("tagger")
SPLITS = ("train", "valid", "test")


# ------------------------------------------------------------------------------------------ inputs
def resolve_input(ref: str, mirror: str | None) -> Path:
    return datasets.resolve(ref, mirror=mirror) if datasets.is_data_ref(ref) else Path(ref)


def vectors_location(run_dir: Path, spec: TaggerSpec) -> tuple[Path, str]:
    assert spec.vectors is not None
    if spec.vectors in LM_EMBEDDING_STAGES:
        return run_dir / spec.vectors / "vectors", "vectors"
    return Path(spec.vectors), spec.vectors_format


def check(ctx: StageContext) -> None:
    spec = ctx.spec.tagger
    if not spec.tasks:
        raise SpecError(
            "tagger.tasks: no task; add one, e.g. {name: ner, format: conll2003, column: ner, train: data:conll2003/train}"
        )
    first = spec.tasks[0]
    if first.valid is None and not first.valid_fraction and spec.patience is not None:
        raise SpecError(
            f"tagger.tasks[0] ({first.name}): early stopping (tagger.patience {spec.patience}) needs a valid split: set "
            "`valid`, or `valid_fraction`, or tagger.patience: null"
        )
    for i, task in enumerate(spec.tasks):
        for split in SPLITS:
            ref = getattr(task, split)
            if ref is not None and not resolve_input(ref, ctx.mirror).is_file():
                raise FileNotFoundError(f"tagger.tasks[{i}].{split}: {ref}: no such file")
    if spec.vectors is not None:
        path, fmt = vectors_location(ctx.run_dir, spec)
        if spec.vectors in LM_EMBEDDING_STAGES:
            if spec.vectors not in ctx.selected and read_manifest(ctx.run_dir, spec.vectors) is None:
                raise FileNotFoundError(
                    f"tagger.vectors: {spec.vectors!r} needs the {spec.vectors} stage of this run; run it first or add "
                    "it to --stages (or name a vectors file of another run)"
                )
            if spec.vectors in ctx.selected:
                return
        elif not path.exists():
            raise FileNotFoundError(f"tagger.vectors: {path}: no such vectors file or directory")
        from lmpipe.pipelines.stages.lm import vectors_dim

        dim = vectors_dim(path, fmt)
        if dim is not None and dim != spec.dim:
            raise SpecError(
                f"tagger.dim: {spec.dim}, but the vectors {path} have dimension {dim}; set tagger.dim: {dim}"
            )


def _identity(path: Path) -> str:
    if path.is_dir():
        return fingerprint({p.name: sha256_file(p) for p in sorted(path.iterdir()) if p.is_file()})
    return sha256_file(path)


def plan(ctx: StageContext) -> tuple[dict[str, Any], dict[str, Any]]:
    settings = ctx.spec.to_dict()["tagger"]
    for key in ("threads", "tune"):
        settings.pop(key)
    inputs: dict[str, Any] = {}
    for i, task in enumerate(ctx.spec.tagger.tasks):
        for split in SPLITS:
            ref = getattr(task, split)
            if ref is not None:  # a data: reference is pinned by its checksum; a path by its content
                inputs[f"{i}.{split}"] = ref if datasets.is_data_ref(ref) else _identity(Path(ref))
    spec = ctx.spec.tagger
    if spec.vectors in LM_EMBEDDING_STAGES:
        upstream = read_manifest(ctx.run_dir, spec.vectors)
        inputs["vectors"] = upstream["fingerprint"] if upstream else None
    elif spec.vectors is not None:
        path, _ = vectors_location(ctx.run_dir, spec)
        inputs["vectors"] = _identity(path) if path.exists() else None
    return settings, inputs


# ------------------------------------------------------------------------------------------ prepare
@dataclass(slots=True)
class PreparedTask:
    spec: TaggerTaskSpec
    kind: str  # span | token
    file_scheme: str | None  # the scheme of the file's column (chunk columns), else None
    sentences: dict[str, list[Sentence]]
    gold: dict[str, list[list[str]]]  # tags in the training scheme
    tags: list[str]  # training tags, then unknown ones
    train_tags: int
    unknown: dict[str, dict[str, int]]  # split -> tag (file scheme) -> count


@dataclass(slots=True)
class Prepared:
    job: TaggerJob
    tasks: list[PreparedTask]
    vocab: WordVocab
    char_vocab: CharVocab | None
    report: dict[str, Any]


def _valid_cut(
    sentences: list[Sentence], fraction: float, seed: int
) -> tuple[list[Sentence], list[Sentence]]:
    """(train, valid): a sentence is valid when a hash of (seed, its tokens) falls below ``fraction``."""
    train, valid = [], []
    for s in sentences:
        h = hashlib.blake2b(f"{seed}\x00{' '.join(s.tokens)}".encode(), digest_size=8).digest()
        (valid if int.from_bytes(h, "big") / 2**64 < fraction else train).append(s)
    return train, valid


def _read_task(task: TaggerTaskSpec, i: int, mirror: str | None, seed: int) -> PreparedTask:
    sentences: dict[str, list[Sentence]] = {}
    for split in SPLITS:
        ref = getattr(task, split)
        if ref is not None:
            sentences[split] = read_conll(resolve_input(ref, mirror), task.format)
            if not sentences[split]:
                raise SpecError(f"tagger.tasks[{i}].{split}: {ref} holds no sentence")
    if task.valid is None and task.valid_fraction:
        sentences["train"], sentences["valid"] = _valid_cut(sentences["train"], task.valid_fraction, seed)
        if not sentences["valid"] or not sentences["train"]:
            raise SpecError(
                f"tagger.tasks[{i}].valid_fraction: {task.valid_fraction} leaves an empty train or valid set"
            )
    kind = "span" if task.column in TAGGER_SPAN_COLUMNS else "token"
    file_scheme = FILE_SCHEMES.get((task.format, task.column)) if kind == "span" else None
    gold = {
        split: [
            convert(s.tags[task.column], file_scheme, task.scheme)
            if file_scheme
            else list(s.tags[task.column])
            for s in sents
        ]
        for split, sents in sentences.items()
    }
    tags = sorted({t for ts in gold["train"] for t in ts})
    train_tags = len(tags)
    known_file = {t for s in sentences["train"] for t in s.tags[task.column]}
    unknown: dict[str, dict[str, int]] = {}
    for split in ("valid", "test"):
        if split in sentences:
            missing = Counter(t for s in sentences[split] for t in s.tags[task.column] if t not in known_file)
            if missing:
                unknown[split] = dict(sorted(missing.items()))
                logger.warning(
                    "tagger task %s: %s has %d token(s) with tags never seen in train: %s (kept as gold, counted as errors)",
                    task.name, split, sum(missing.values()), dict(missing),
                )  # fmt: skip
            tags += sorted({t for ts in gold[split] for t in ts} - set(tags))
    return PreparedTask(task, kind, file_scheme, sentences, gold, tags, train_tags, unknown)


def _vectors(ctx: StageContext, spec: TaggerSpec):
    if spec.vectors is None:
        return None
    from lmpipe.pipelines.stages.lm import load_vectors

    path, fmt = vectors_location(ctx.run_dir, spec)
    vectors = load_vectors(path, fmt)
    if vectors.dim != spec.dim:
        raise SpecError(
            f"tagger.dim: {spec.dim}, but the vectors {path} have dimension {vectors.dim}; set tagger.dim: {vectors.dim}"
        )
    return vectors


def align(vocab: WordVocab, tokens: list[str], matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(V, d)`` rows for the vocabulary and the mask of rows found; with a lowercased lookup a word takes the
    vector of the first (most frequent) token that lowercases to it."""
    index: dict[str, int] = {}
    for i, t in enumerate(tokens):
        index.setdefault(vocab.key(t), i)
    found = np.array([i >= 2 and t in index for i, t in enumerate(vocab.tokens)], dtype=bool)
    aligned = np.zeros((len(vocab.tokens), matrix.shape[1]), dtype=np.float32)
    rows = np.array([index[t] for t, f in zip(vocab.tokens, found, strict=True) if f], dtype=np.int64)
    if len(rows):
        aligned[found] = np.asarray(matrix[rows], dtype=np.float32)
    return aligned, found


def prepare(
    ctx: StageContext, data_dir: Path, out_dir: Path, checkpoint_dir: Path, spec: TaggerSpec | None = None,
    stop_after_epoch: int | None = None,
) -> Prepared:
    """Read, check and encode every task; align the vectors; the job for ``train_loop``."""
    spec = spec or ctx.spec.tagger
    tasks = [_read_task(t, i, ctx.mirror, spec.seed) for i, t in enumerate(spec.tasks)]
    vectors = _vectors(ctx, spec)
    vec_tokens = vectors.tokens[: spec.max_vectors] if vectors is not None else []
    lowercase = spec.lowercase
    if lowercase is None:
        lowercase = not any(t != t.lower() for t in vec_tokens)
    train_tokens = [s.tokens for t in tasks for s in t.sentences["train"]]
    vocab = build_vocab(train_tokens, min_count=spec.min_count, lowercase=lowercase, extra=vec_tokens)
    char_vocab = build_char_vocab(train_tokens) if spec.chars != "none" else None
    data_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "vocabulary": {"size": len(vocab.tokens), "lowercase": lowercase},
        "unk_rate": {},
    }
    if char_vocab is not None:
        report["vocabulary"]["characters"] = len(char_vocab.chars)
    if vectors is not None:
        aligned, found = align(vocab, vec_tokens, vectors.matrix[: spec.max_vectors])
        np.savez(data_dir / "embedding-init.npz", matrix=aligned, found=found)
        report["vocabulary"]["with_vectors"] = int(found.sum())
        logger.info(
            "tagger: vocabulary %d words (lowercase lookup %s), %d with a vector from %s", len(vocab.tokens), lowercase,
            int(found.sum()), spec.vectors,
        )  # fmt: skip
    task_data = []
    for k, t in enumerate(tasks):
        ids = {tag: i for i, tag in enumerate(t.tags)}
        for split, sents in t.sentences.items():
            enc = encode([s.tokens for s in sents], t.gold[split], vocab, ids, char_vocab)
            enc.save(data_dir / f"task-{k}-{split}.npz")
            report["unk_rate"].setdefault(t.spec.name, {})[split] = round(float((enc.words == UNK).mean()), 5)
        task_data.append(
            TaskData(
                name=t.spec.name,
                kind=t.kind,
                tags=tuple(t.tags),
                train_tags=t.train_tags,
                splits=tuple(s for s in SPLITS if s in t.sentences),
                weight=t.spec.weight,
            )  # fmt: skip
        )
    job = config_from(
        TaggerJob, spec, data_dir=str(data_dir), tasks=tuple(task_data),
        model=config_from(
            TaggerConfig, spec, vocab_size=len(vocab.tokens), tasks=tuple((t.name, t.train_tags) for t in task_data),
            char_vocab_size=len(char_vocab.chars) if char_vocab is not None else 0,
        ),
        optim=config_from(OptimConfig, spec, patience=spec.patience if "valid" in task_data[0].splits else None),
        out_dir=str(out_dir), checkpoint_dir=str(checkpoint_dir), embedding_init=vectors is not None,
        stop_after_epoch=stop_after_epoch,
    )  # fmt: skip
    for t in tasks:
        if len(t.sentences["train"]) < spec.workers:
            raise SpecError(
                f"tagger.workers: {spec.workers} workers but task {t.spec.name} has {len(t.sentences['train'])} training "
                "sentence(s); lower tagger.workers"
            )
    return Prepared(job, tasks, vocab, char_vocab, report)


# ------------------------------------------------------------------------------------------ execute
def _file_tags(task: PreparedTask, tags: list[str]) -> list[str]:
    """A predicted sequence (training scheme) in the file's scheme (chunks read with conlleval's rules)."""
    if task.file_scheme is None:
        return tags
    return render(spans(tags), len(tags), task.file_scheme)


def evaluate(
    prepared: Prepared, predictions: dict[str, dict[str, list[list[int]]]], out_dir: Path
) -> dict[str, Any]:
    """Write ``<task>/<split>.conll`` and score it: the figures of the manifest's ``tasks`` section."""
    result: dict[str, Any] = {}
    for t in prepared.tasks:
        name = t.spec.name
        entry: dict[str, Any] = {
            "format": t.spec.format, "column": t.spec.column, "kind": t.kind,
            "scheme": {"file": t.file_scheme, "model": t.spec.scheme} if t.kind == "span" else None,
            "sentences": {s: len(v) for s, v in t.sentences.items()},
            "tokens": {s: sum(len(x.tokens) for x in v) for s, v in t.sentences.items()},
            "tags": t.tags[: t.train_tags], "unknown_tags": t.unknown, "scores": {}, "files": {},
        }  # fmt: skip
        for split, pred_ids in predictions.get(name, {}).items():
            sents = t.sentences[split]
            gold = [list(s.tags[t.spec.column]) for s in sents]
            pred = [_file_tags(t, [t.tags[i] for i in p]) for p in pred_ids]
            path = out_dir / name / f"{split}.conll"
            write_predictions(path, sents, gold, pred)
            entry["scores"][split] = score(t.kind, gold, pred)
            entry["files"][split] = f"{name}/{split}.conll"
        result[name] = entry
    return result


def execute(ctx: StageContext, tmp_dir: Path) -> dict[str, Any]:
    spec: TaggerSpec = ctx.spec.tagger
    settings, inputs = plan(ctx)
    fp = fingerprint({"stage": "tagger", "settings": settings, "inputs": inputs})  # the runner's formula
    run: StageTraining = start_training(
        "tagger", ctx.run_dir, fp, workers=spec.workers, threads=spec.threads, use_gpu=spec.use_gpu
    )
    checkpoint_dir = run.checkpoint_dir()
    logger.info("=== 1/3 Preparing %d task(s): %s ===", len(spec.tasks), [t.name for t in spec.tasks])
    prepared = prepare(ctx, checkpoint_dir / "data", tmp_dir, checkpoint_dir, stop_after_epoch=run.stop_after_epoch)
    cfg = prepared.job.model
    logger.info(
        "=== 2/3 Training the %s tagger%s: %d worker(s), vocabulary %d, tasks %s ===", cfg.model,
        " + CRF" if cfg.crf else "", spec.workers, cfg.vocab_size, dict(cfg.tasks),
    )  # fmt: skip
    out = run.fit(train_loop, to_config(prepared.job))
    logger.info("=== 3/3 Writing and scoring predictions ===")
    tasks = evaluate(prepared, out.pop("predictions"), tmp_dir)
    from lmpipe.embeddings.vectors import write_vocab_tsv

    write_vocab_tsv(tmp_dir / "vocab.tsv", prepared.vocab.tokens, None)
    if prepared.char_vocab is not None:
        (tmp_dir / "chars.json").write_text(json.dumps(list(prepared.char_vocab.chars)) + "\n", encoding="utf-8")
    run.finish()
    files = sorted(p for p in tmp_dir.rglob("*") if p.is_file())
    return {
        "outputs": {
            "files": [{"path": p.relative_to(tmp_dir).as_posix(), "sha256": sha256_file(p)} for p in files],
            "model": "model.pt",
        },
        "tasks": tasks,
        **prepared.report,
        "training": {
            **{k: v for k, v in out.items() if k not in ("scores", "processes")},
            "workers": run.record(out["processes"]),
            "seconds": round(run.seconds, 3),
            "config": dataclasses.asdict(prepared.job.model),
        },
    }


def summary(manifest: dict[str, Any]) -> list[str]:
    tr = manifest["training"]
    cfg = tr["config"]
    arch = f"{cfg['model']}" + (
        f" {cfg['cell']} {cfg['layers']}x{cfg['hidden']}"
        if cfg["model"] == "rnn"
        else f" w{cfg['window']} h{cfg['hidden']}"
    )
    if cfg.get("chars", "none") != "none":
        arch += f" + char-{cfg['chars']}"
    rows = [
        f"{arch}{' + CRF' if cfg['crf'] else ''}, {tr['parameters']:,} parameters, best epoch {tr['best_epoch']} of "
        f"{len(tr['epochs'])}{' (stopped early)' if tr['stopped_early'] else ''}, {tr['world_size']} worker(s)"
    ]
    if tr.get("embedding_init"):
        e = tr["embedding_init"]
        rows.append(f"word vectors: {e['found']:,} rows from vectors, {e['random']:,} random")
    if tr["resumed_after_epoch"]:
        rows.append(f"resumed after epoch {tr['resumed_after_epoch']} from a checkpoint")
    for name, t in manifest["tasks"].items():
        figures = []
        for split, s in t["scores"].items():
            if t["kind"] == "span":
                o = s["overall"]
                figures.append(f"{split} F1 {o['f1']:.2f} (P {o['precision']:.2f}, R {o['recall']:.2f})")
            else:
                figures.append(f"{split} accuracy {s['accuracy']:.2f}%")
        rows.append(f"{name} ({t['column']}): " + ", ".join(figures))
        for split, tags in t["unknown_tags"].items():
            rows.append(f"{name}: {split} has tags never seen in train: {tags}")
    return rows


# ------------------------------------------------------------------------------------------ tune
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
    import shutil

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
