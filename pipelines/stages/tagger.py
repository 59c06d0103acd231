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
would: the resume tests use it.  ``lmpipe tune SPEC --stage tagger`` runs ``pipelines.tune_tagger`` (Ray Tune,
ASHA) over the same :func:`prepare`.  The data preparation itself is ``lm.tagging.prepare``'s.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmpipe.cluster.training import (
    StageTraining,
    config_from,
    start_training,
    stop_after_env,
    to_config,
)
from lmpipe.lm.tagging.data import CharVocab, WordVocab
from lmpipe.lm.tagging.metrics import score
from lmpipe.lm.tagging.models import TaggerConfig
from lmpipe.lm.tagging.prepare import TaskText, prepare_data, tag_inventory, valid_cut
from lmpipe.lm.tagging.train import OptimConfig, TaggerJob, TaskData, train_loop
from lmpipe.pipelines.conll import FILE_SCHEMES, Sentence, read_conll, write_predictions
from lmpipe.pipelines.core.errors import MissingError
from lmpipe.pipelines.core.files import sha256_file
from lmpipe.pipelines.core.tag_schemes import convert, render, spans
from lmpipe.pipelines.datasets.registry import is_data_ref
from lmpipe.pipelines.datasets.resolve import resolve
from lmpipe.pipelines.rundir import StageRun, path_identity, read_manifest
from lmpipe.pipelines.spec import (
    LM_EMBEDDING_STAGES,
    TAGGER_SPAN_COLUMNS,
    SpecError,
    TaggerSpec,
    TaggerTaskSpec,
)
from lmpipe.pipelines.stages import Stage, StageContext

logger = logging.getLogger(__name__)

STOP_ENV = stop_after_env("tagger")
SPLITS = ("train", "valid", "test")
#: Its word vectors may come from an embeddings stage of the run (``tagger.vectors``).
STAGE = Stage(name="tagger", settings=TaggerSpec, after=LM_EMBEDDING_STAGES, ray_train=True)


# ------------------------------------------------------------------------------------------ inputs
def resolve_input(ref: str, mirror: str | None) -> Path:
    return resolve(ref, mirror=mirror) if is_data_ref(ref) else Path(ref)


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
                raise MissingError(f"tagger.tasks[{i}].{split}: {ref}: no such file")
    if spec.vectors is not None:
        path, fmt = vectors_location(ctx.run_dir, spec)
        if spec.vectors in LM_EMBEDDING_STAGES:
            if spec.vectors not in ctx.selected and read_manifest(ctx.run_dir, spec.vectors) is None:
                raise MissingError(
                    f"tagger.vectors: {spec.vectors!r} needs the {spec.vectors} stage of this run; run it first or add "
                    "it to --stages (or name a vectors file of another run)"
                )
            if spec.vectors in ctx.selected:
                return
        elif not path.exists():
            raise MissingError(f"tagger.vectors: {path}: no such vectors file or directory")
        from lmpipe.pipelines.stages.lm import vectors_dim

        dim = vectors_dim(path, fmt)
        if dim is not None and dim != spec.dim:
            raise SpecError(
                f"tagger.dim: {spec.dim}, but the vectors {path} have dimension {dim}; set tagger.dim: {dim}"
            )


def inputs(ctx: StageContext) -> dict[str, Any]:
    """Each task's files (a ``data:`` reference is pinned by its checksum, a path by its content) and the
    word vectors (the embeddings stage's fingerprint, or their content hash)."""
    inputs: dict[str, Any] = {}
    for i, task in enumerate(ctx.spec.tagger.tasks):
        for split in SPLITS:
            ref = getattr(task, split)
            if ref is not None:  # a data: reference is pinned by its checksum; a path by its content
                inputs[f"{i}.{split}"] = ref if is_data_ref(ref) else path_identity(Path(ref))
    spec = ctx.spec.tagger
    if spec.vectors in LM_EMBEDDING_STAGES:
        upstream = read_manifest(ctx.run_dir, spec.vectors)
        inputs["vectors"] = upstream["fingerprint"] if upstream else None
    elif spec.vectors is not None:
        path, _ = vectors_location(ctx.run_dir, spec)
        inputs["vectors"] = path_identity(path)
    return inputs


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


def _read_task(task: TaggerTaskSpec, i: int, mirror: str | None, seed: int) -> PreparedTask:
    """Read and check one task's files, cut a valid set if asked, and convert chunk tags to the training scheme."""
    sentences: dict[str, list[Sentence]] = {}
    for split in SPLITS:
        ref = getattr(task, split)
        if ref is not None:
            sentences[split] = read_conll(resolve_input(ref, mirror), task.format)
            if not sentences[split]:
                raise SpecError(f"tagger.tasks[{i}].{split}: {ref} holds no sentence")
    if task.valid is None and task.valid_fraction:
        train = sentences["train"]
        to_valid = valid_cut([s.tokens for s in train], task.valid_fraction, seed)
        sentences["train"] = [s for s, v in zip(train, to_valid, strict=True) if not v]
        sentences["valid"] = [s for s, v in zip(train, to_valid, strict=True) if v]
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
    file_tags = {split: [s.tags[task.column] for s in sents] for split, sents in sentences.items()}
    tags, train_tags, unknown = tag_inventory(gold, file_tags)
    for split, missing in unknown.items():
        logger.warning(
            "tagger task %s: %s has %d token(s) with tags never seen in train: %s (kept as gold, counted as errors)",
            task.name, split, sum(missing.values()), missing,
        )  # fmt: skip
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


def prepare(
    ctx: StageContext, data_dir: Path, out_dir: Path, checkpoint_dir: Path, spec: TaggerSpec | None = None,
    stop_after_epoch: int | None = None,
) -> Prepared:
    """Read, check and encode every task; align the vectors; the job for ``train_loop``."""
    spec = spec or ctx.spec.tagger
    tasks = [_read_task(t, i, ctx.mirror, spec.seed) for i, t in enumerate(spec.tasks)]
    vectors = _vectors(ctx, spec)
    data = prepare_data(
        [
            TaskText(name=t.spec.name, tokens={split: [s.tokens for s in sents] for split, sents in t.sentences.items()},
                     gold=t.gold, tags=t.tags)
            for t in tasks
        ],
        data_dir, min_count=spec.min_count, lowercase=spec.lowercase, chars=spec.chars != "none",
        vectors=(vectors.tokens[: spec.max_vectors], vectors.matrix[: spec.max_vectors]) if vectors is not None else None,
    )  # fmt: skip
    vocab, char_vocab = data.vocab, data.char_vocab
    if vectors is not None:
        logger.info(
            "tagger: vocabulary %d words (lowercase lookup %s), %d with a vector from %s", len(vocab.tokens), vocab.lowercase,
            data.report["vocabulary"]["with_vectors"], spec.vectors,
        )  # fmt: skip
    task_data = [
        TaskData(
            name=t.spec.name, kind=t.kind, tags=tuple(t.tags), train_tags=t.train_tags,
            splits=tuple(s for s in SPLITS if s in t.sentences), weight=t.spec.weight,
        )  # fmt: skip
        for t in tasks
    ]
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
    return Prepared(job, tasks, vocab, char_vocab, data.report)


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


def execute(ctx: StageContext, run: StageRun) -> dict[str, Any]:
    spec: TaggerSpec = ctx.spec.tagger
    tmp_dir = run.tmp_dir
    trainer: StageTraining = start_training("tagger", ctx.run_dir, run.fingerprint, spec)
    checkpoint_dir = trainer.checkpoint_dir()
    logger.info("=== 1/3 Preparing %d task(s): %s ===", len(spec.tasks), [t.name for t in spec.tasks])
    prepared = prepare(ctx, checkpoint_dir / "data", tmp_dir, checkpoint_dir, stop_after_epoch=trainer.stop_after_epoch)
    cfg = prepared.job.model
    logger.info(
        "=== 2/3 Training the %s tagger%s: %d worker(s), vocabulary %d, tasks %s ===", cfg.model,
        " + CRF" if cfg.crf else "", spec.workers, cfg.vocab_size, dict(cfg.tasks),
    )  # fmt: skip
    out = trainer.fit(train_loop, to_config(prepared.job))
    logger.info("=== 3/3 Writing and scoring predictions ===")
    tasks = evaluate(prepared, out.pop("predictions"), tmp_dir)
    from lmpipe.pipelines.core.vocab_tsv import write_vocab_tsv

    write_vocab_tsv(tmp_dir / "vocab.tsv", prepared.vocab.tokens, None)
    if prepared.char_vocab is not None:
        (tmp_dir / "chars.json").write_text(json.dumps(list(prepared.char_vocab.chars)) + "\n", encoding="utf-8")
    trainer.finish()
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
            "workers": trainer.record(out["processes"]),
            "seconds": round(trainer.seconds, 3),
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
