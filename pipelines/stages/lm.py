"""The lm stage: recurrent language models (RNN, IRNN, LSTM, GRU) trained with Ray Train, scored like KenLM.

Input: ``RUN/tokenize`` (train/valid/test shards, ``vocab.tsv``) and, for models whose ``embeddings`` names
them, ``RUN/sgns/vectors`` / ``RUN/glove/vectors`` or a vectors file.  Output (``RUN/lm/``): per model
``<name>/model.pt`` (the best validation epoch's state dict) and ``<name>/model.json`` (its architecture), and
``manifest.json`` with per-epoch training figures and each model's valid/test perplexity with KenLM's
accounting (``lm.neural_eval`` -> ``lm.perplexity.CorpusScore``), next to the n-gram model's when the run has one.

    === 1/3 embeddings === per model with `embeddings`: vectors aligned to the vocabulary by token (counts of
                           found / random-init rows), dimension checked (error or projection)
    === 2/3 train ===      per model: TorchTrainer(lm.train.train_loop), ScalingConfig(num_workers=workers);
                           checkpoints per epoch in RUN/.checkpoints/lm-<name>-<fingerprint>/ (resumed on rerun)
    === 3/3 evaluate ===   inside the workers after training: valid and test, every target once; per-word
                           perplexity and bits per byte from the words/bytes the tokens stand for

``LMPIPE_LM_STOP_AFTER_EPOCH=N`` (read by the driver) stops training with an error right after epoch N's
checkpoint, as a kill would: the resume tests use it.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from lmpipe.cluster.training import config_from, start_training, stop_after_env, to_config
from lmpipe.lm.models import ModelConfig, align_vectors
from lmpipe.lm.softmax import default_classes, default_cutoffs
from lmpipe.lm.train import LmJob, TrainConfig, train_models
from lmpipe.pipelines.core.errors import MissingError
from lmpipe.pipelines.core.files import sha256_file
from lmpipe.pipelines.core.shards import read_sentences, split_shards
from lmpipe.pipelines.core.vocab import Vocab
from lmpipe.pipelines.ingest import InputError
from lmpipe.pipelines.rundir import StageRun, fingerprint, path_identity, read_manifest
from lmpipe.pipelines.spec import LM_EMBEDDING_STAGES, LmModelSpec, LmSpec
from lmpipe.pipelines.spec_parser import SpecError
from lmpipe.pipelines.stages import Stage, StageContext

logger = logging.getLogger(__name__)

STOP_ENV = stop_after_env("lm")
#: A model's input vectors may come from an embeddings stage of the run (``lm.models[].embeddings``).
STAGE = Stage(name="lm", settings=LmSpec, upstream=("tokenize",), after=LM_EMBEDDING_STAGES, ray_train=True)
HIDDEN_STATE = {
    "carry": "zero at the top of each of eval_columns contiguous runs of sentences, carried across sentence ends",
    "reset": "zero at the start of every sentence (KenLM's reset at <s>)",
}


# ------------------------------------------------------------------------------------------ vectors
def vectors_location(run_dir: Path, model: LmModelSpec) -> tuple[Path, str]:
    """Where a model's initial vectors are and their format (``vectors`` = an lmpipe Vectors directory)."""
    assert model.embeddings is not None
    if model.embeddings in LM_EMBEDDING_STAGES:
        return run_dir / model.embeddings / "vectors", "vectors"
    return Path(model.embeddings), model.embeddings_format


def vectors_dim(path: Path, fmt: str) -> int | None:
    """The dimension of stored vectors, read cheaply (a header, a first line, a meta file); None if unknown."""
    import json

    if fmt == "vectors":
        return int(json.loads((path / "meta.json").read_text(encoding="utf-8"))["dim"])
    if fmt in ("word2vec", "word2vec-bin"):
        with open(path, "rb") as f:
            header = f.readline(256).split()
        if len(header) != 2 or not header[1].isdigit():
            raise InputError(f"{path}: expected a header 'count dim' on the first line ({fmt} format)")
        return int(header[1])
    if fmt == "glove":
        with open(path, "rb") as f:
            return len(f.readline().rstrip().split(b" ")) - 1
    if fmt == "npy":
        return int(np.load(path, mmap_mode="r").shape[1])
    return None


def _check_vectors(ctx: StageContext, i: int, model: LmModelSpec) -> None:
    where = f"lm.models[{i}].embeddings"
    path, fmt = vectors_location(ctx.run_dir, model)
    if model.embeddings in LM_EMBEDDING_STAGES:
        if model.embeddings not in ctx.selected and read_manifest(ctx.run_dir, model.embeddings) is None:
            raise MissingError(
                f"{where}: {model.embeddings!r} needs the {model.embeddings} stage of this run; run it first or "
                f"add it to --stages"
            )
        if model.embeddings in ctx.selected:
            return  # produced in this run: checked again before training
    elif not path.exists():
        raise MissingError(f"{where}: {path}: no such vectors file or directory")
    dim = vectors_dim(path, fmt)
    if dim is not None and dim != model.emb_dim and model.dim_mismatch == "error":
        raise SpecError(
            f"{where}: the vectors have dimension {dim}, lm.models[{i}].emb_dim is {model.emb_dim}; set emb_dim: "
            f"{dim}, or dim_mismatch: project to learn a {dim} -> {model.emb_dim} projection"
        )


def load_vectors(path: Path, fmt: str):
    from lmpipe.embeddings.vectors import Vectors

    if fmt == "vectors":
        return Vectors.load(path)
    from lmpipe.embeddings.formats import import_vectors

    return import_vectors(path, fmt)


# ------------------------------------------------------------------------------------------ contract
def check(ctx: StageContext) -> None:
    for i, model in enumerate(ctx.spec.lm.models):
        if model.embeddings is not None:
            _check_vectors(ctx, i, model)


def _input_identity(ctx: StageContext, model: LmModelSpec) -> str | None:
    if model.embeddings is None:
        return None
    if model.embeddings in LM_EMBEDDING_STAGES:
        upstream = read_manifest(ctx.run_dir, model.embeddings)
        return upstream["fingerprint"] if upstream else None
    return path_identity(vectors_location(ctx.run_dir, model)[0])


def inputs(ctx: StageContext) -> dict[str, Any]:
    """Each model's input vectors: the embeddings stage's fingerprint, or the vectors' content hash."""
    return {f"embeddings:{m.name}": _input_identity(ctx, m) for m in ctx.spec.lm.models if m.embeddings is not None}


# ------------------------------------------------------------------------------------------ execute
def model_config(model: LmModelSpec, vocab: Vocab, vectors_dim: int | None) -> ModelConfig:
    """The architecture for ``lm.models``: spec settings by name + vocabulary size + defaults that need V."""
    v = len(vocab)
    return config_from(
        ModelConfig, model, rename={"freeze_embedding": "freeze_embeddings"}, vocab_size=v,
        vectors_dim=vectors_dim if vectors_dim not in (None, model.emb_dim) else None,
        classes=model.classes or default_classes(v), cutoffs=model.cutoffs or default_cutoffs(v),
    )  # fmt: skip


def train_config(model: LmModelSpec, spec: LmSpec) -> TrainConfig:
    """The optimisation of one model: its settings, then the stage-wide ones (evaluation), by name."""
    return config_from(TrainConfig, model, spec)


def _prepare_embedding(
    ctx: StageContext, i: int, model: LmModelSpec, vocab: Vocab, checkpoint_dir: Path
) -> tuple[str | None, int | None]:
    """Align the model's vectors to the vocabulary into ``checkpoint_dir/embedding-init.npz``."""
    if model.embeddings is None:
        return None, None
    path, fmt = vectors_location(ctx.run_dir, model)
    vectors = load_vectors(path, fmt)
    if vectors.dim != model.emb_dim and model.dim_mismatch == "error":
        raise SpecError(
            f"lm.models[{i}].embeddings: the vectors have dimension {vectors.dim}, lm.models[{i}].emb_dim is "
            f"{model.emb_dim}; set emb_dim: {vectors.dim}, or dim_mismatch: project"
        )
    aligned, found = align_vectors(vocab.tokens.to_pylist(), vectors.tokens, vectors.matrix)
    logger.info(
        "lm %s: input embedding from %s (%d x %d): %d of %d vocabulary tokens found, %d random",
        model.name, path, len(vectors), vectors.dim, int(found.sum()), len(vocab), len(vocab) - int(found.sum()),
    )  # fmt: skip
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    out = checkpoint_dir / "embedding-init.npz"
    np.savez(out, matrix=aligned, found=found)
    return str(out), vectors.dim


def text_units_of(ctx: StageContext, split: str, vocab: Vocab, paths: list[Path]) -> dict[str, int]:
    from lmpipe.lm.neural_eval import text_units

    return text_units(
        vocab.tokens.to_pylist(), read_sentences(tuple(str(p) for p in paths), np.int64), ctx.spec.tokenizer.kind
    )


def _with_units(score: dict[str, Any], units: dict[str, int], kind: str, policy: str) -> dict[str, Any]:
    from lmpipe.lm.perplexity import CorpusScore

    s = CorpusScore(
        score["log10_sum"], score["tokens"], score["sentences"], score["oov"], score["oov_log10_sum"]
    )
    out = {
        **score,
        "hidden_state": policy,
        "bits_per_byte": s.bits_per(units["bytes"]),
        "bytes": units["bytes"],
    }
    if kind in ("char", "sentencepiece"):
        out["words"] = units["units"]
        out["perplexity_per_word"] = s.perplexity_per(units["units"])
    return out


def execute(ctx: StageContext, run: StageRun) -> dict[str, Any]:
    spec: LmSpec = ctx.spec.lm
    tmp_dir = run.tmp_dir
    tokenize_dir = ctx.run_dir / "tokenize"
    vocab = Vocab.load(tokenize_dir / "vocab.tsv")
    shards = {s: split_shards(tokenize_dir, s) for s in ("train", "valid", "test")}
    if not shards["train"]:
        raise InputError(f"{tokenize_dir}/train: the training split is empty; nothing to train on")
    for i, model in enumerate(spec.models):
        if not shards["valid"] and (model.schedule == "plateau" or model.patience is not None):
            raise SpecError(
                f"lm.models[{i}].schedule: {model.schedule!r} (patience {model.patience}) needs a validation split, "
                "and the corpus has none: set corpus.valid or corpus.split, or schedule: fixed/none and patience: null"
            )
    settings, inputs = run.settings, run.inputs
    trainer = start_training("lm", ctx.run_dir, run.fingerprint, spec)
    units = {s: text_units_of(ctx, s, vocab, shards[s]) for s in ("valid", "test") if shards[s]}
    from lmpipe.pipelines.report_rows import token_stream

    _, text_bytes = token_stream(ctx.run_dir)  # bits per byte: the tokenize stage's byte count, as every row
    for split, n in text_bytes.items():
        if split in units:
            units[split]["bytes"] = n
    policy = HIDDEN_STATE[spec.eval_state]
    jobs: list[LmJob] = []
    logger.info("=== 1/3 Input embeddings ===")
    for i, model in enumerate(spec.models):
        fp = fingerprint(
            {"stage": "lm", "model": settings["models"][i], "workers": spec.workers, "inputs": inputs}
        )
        checkpoint_dir = trainer.checkpoint_dir(model.name, fp)
        init_path, vdim = _prepare_embedding(ctx, i, model, vocab, checkpoint_dir)
        jobs.append(
            config_from(
                LmJob, spec, name=model.name, vocab_path=str(tokenize_dir / "vocab.tsv"),
                train=tuple(map(str, shards["train"])), valid=tuple(map(str, shards["valid"])),
                test=tuple(map(str, shards["test"])), out_dir=str(tmp_dir / model.name),
                checkpoint_dir=str(checkpoint_dir), model=model_config(model, vocab, vdim),
                train_config=train_config(model, spec), embedding_init=init_path,
                stop_after_epoch=trainer.stop_after_epoch,
            )  # fmt: skip
        )
    described = [
        f"{m.name} ({m.kind} {m.layers}x{m.hidden}, {m.softmax} softmax, batch {m.batch_size}, bptt {m.bptt}, "
        f"{m.epochs} epochs)"
        for m in spec.models
    ]
    logger.info("=== 2/3 Training %s on %d worker(s) ===", ", ".join(described), spec.workers)
    trained = trainer.fit(train_models, {"jobs": [to_config(j) for j in jobs], "use_gpu": spec.use_gpu})
    logger.info("=== 3/3 Scored valid/test with KenLM's accounting ===")
    results: dict[str, Any] = {}
    scores: dict[str, dict[str, Any]] = {}
    for job, out in zip(jobs, trained["models"], strict=True):
        scores[job.name] = out.pop("token_scores")
        out["config"] = dataclasses.asdict(job.model)
        out["perplexity"] = {
            split: _with_units(score, units[split], ctx.spec.tokenizer.kind, policy)
            for split, score in out["perplexity"].items()
        }
        results[job.name] = out
    token_scores = _write_token_scores(scores, tmp_dir, results)
    trainer.finish()  # only once every model is done: a rerun after a crash re-evaluates, not retrains
    files = []
    for name in results:
        for fname in ("model.pt", "model.json"):
            path = tmp_dir / name / fname
            files.append(
                {"path": f"{name}/{fname}", "sha256": sha256_file(path), "bytes": path.stat().st_size}
            )
    ngram = read_manifest(ctx.run_dir, "ngram")
    compare = {
        split: {"model": "ngram", "perplexity": ev["perplexity"], "tokens": ev["tokens"], "oov": ev["oov"]}
        for split, ev in (ngram or {}).get("perplexity", {}).items()
    }
    return {
        "outputs": {"files": files, "models": list(results)},
        "models": results,
        "token_scores": token_scores,
        "hidden_state": policy,
        "ngram": compare,
        "training": {
            "workers": trainer.record(trained["processes"]), "threads": spec.threads, "seconds": round(trainer.seconds, 3),
        },  # fmt: skip
    }


def _write_token_scores(
    scores: dict[str, dict[str, Any]], tmp_dir: Path, results: dict[str, Any]
) -> dict[str, dict[str, str]]:
    """Each model's per-token log10 p of valid and test (``scores/<model>/<split>.arrow``), as the workers
    scored them in their final evaluation (their columns gathered); the sums are checked against the
    all-reduced figures of the manifest."""
    from lmpipe.lm.token_scores import write_token_scores

    out: dict[str, dict[str, str]] = {}
    for name, splits in scores.items():
        out[name] = {}
        for split, tokens in splits.items():
            reported = results[name]["perplexity"][split]
            mine = tokens.corpus_score()
            if mine.tokens != reported["tokens"] or abs(mine.log10_sum - reported["log10_sum"]) > 1e-6 * max(1.0, abs(mine.log10_sum)):
                raise RuntimeError(
                    f"lm {name}: token scores of {split} sum to {mine.log10_sum} over {mine.tokens} tokens, the "
                    f"workers' evaluation to {reported['log10_sum']} over {reported['tokens']}"
                )
            rel = f"scores/{name}/{split}.arrow"
            write_token_scores(tmp_dir / rel, tokens)
            out[name][split] = rel
    return out


def report_rows(manifest: dict[str, Any], run_dir: Path) -> list[Any]:
    """One row per model and split, and each model's validation perplexity per epoch, for the report."""
    from lmpipe.pipelines.report_rows import CurvePoint, hardware, perplexity_row

    training = manifest.get("training", {})
    rows: list[Any] = []
    for name, m in manifest["models"].items():
        cfg = m["config"]
        family = {"rnn": "RNN (tanh)", "irnn": "IRNN", "lstm": "LSTM", "gru": "GRU", "nplm": "NPLM (Bengio 2003)"}.get(cfg["kind"], cfg["kind"])
        init = " + vectors" if m.get("embedding_init") else ""
        shape = (
            f"n={cfg['context'] + 1}, {cfg['hidden']} {cfg['activation']} units, direct {'on' if cfg['direct'] else 'off'}"
            if cfg["kind"] == "nplm"
            else f"{cfg['layers']}x{cfg['hidden']}"
        )
        details = f"{shape}, emb {cfg['emb_dim']}{init}, {cfg['softmax']} softmax, best epoch {m['best_epoch']}"
        seconds = sum(e.get("seconds", 0.0) for e in m["epochs"]) or None
        for split, score in m["perplexity"].items():
            rows.append(
                perplexity_row(
                    manifest, run_dir, split, score, model=name, family=family,
                    parameters=m["parameters"]["total"], train_seconds=seconds,
                    hardware=hardware(manifest, m.get("device", "cpu"), training.get("workers", 1)), details=details,
                    scores=manifest.get("token_scores", {}).get(name, {}).get(split),
                )  # fmt: skip
            )
        rows += [
            CurvePoint(
                run=str(run_dir), model=name, epoch=int(e["epoch"]), perplexity=float(e["valid_perplexity"]),
                train_perplexity=e.get("train_perplexity"),
            )  # fmt: skip
            for e in m["epochs"]
            if e.get("valid_perplexity") is not None
        ]
    return rows


def summary(manifest: dict[str, Any]) -> list[str]:
    rows = []
    for name, m in manifest["models"].items():
        cfg, ppl = m["config"], m["perplexity"]
        figures = ", ".join(f"{s} ppl {v['perplexity']:.2f}" for s, v in ppl.items())
        tps = m["epochs"][-1]["tokens_per_second"] if m["epochs"] else 0
        rows.append(
            f"{name}: {cfg['kind']} {cfg['layers']}x{cfg['hidden']}, {m['parameters']['total']:,} parameters, "
            f"best epoch {m['best_epoch']} of {len(m['epochs'])}: {figures} ({tps:,.0f} train tokens/s)"
        )
        if m.get("embedding_init"):
            e = m["embedding_init"]
            rows.append(f"{name}: input embedding {e['found']:,} rows from vectors, {e['missing']:,} random")
        if m["resumed_after_epoch"]:
            rows.append(f"{name}: resumed after epoch {m['resumed_after_epoch']} from a checkpoint")
    for split, ev in manifest.get("ngram", {}).items():
        rows.append(f"n-gram model {split} ppl {ev['perplexity']:.2f} (same {ev['tokens']:,} tokens)")
    rows.append(f"hidden state: {manifest['hidden_state']}")
    return rows
