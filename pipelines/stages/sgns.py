"""The sgns stage: skip-gram word vectors (word2vec's SGNS) trained data-parallel with Ray Train.

Input: ``RUN/tokenize`` (train shards, ``vocab.tsv``).  Output (``RUN/sgns/``): ``vectors/`` (an
``embeddings.vectors.Vectors`` artifact: the words counted ``sgns.min_count`` times or more, in vocabulary id
order, i.e. by descending count) and ``manifest.json`` with words/s per epoch, the words each worker
trained, the sync scheme and the evaluations.

    === 1/3 train ===     TorchTrainer(embeddings.train.train_loop), ScalingConfig(num_workers=workers)
                          checkpoints per epoch in RUN/.checkpoints/sgns-<fingerprint>/ (resumed on rerun)
    === 2/3 evaluate ===  analogies (3CosAdd, restrict_vocab 300k) and WS353 / SimLex / MEN / RW Spearman
                          when data:embedding-eval resolves (mirror or cache), else skipped with the reason
    === 3/3 manifest ===

The fingerprint leaves out ``workers`` and ``threads``: they change the trajectory (replica merging,
Hogwild timing), not what is estimated, and leaving them out lets a run scale out or in, and lets a
checkpoint written by 2 workers be resumed by 1 (same matrices, new random streams).

``LMPIPE_SGNS_STOP_AFTER_EPOCH=N`` (read by the driver) stops training with an error right after epoch N's
checkpoint, as a kill would: the resume tests use it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import ray

from embeddings.evaluate import SIMILARITY_SETS, evaluate_analogies, evaluate_word_pairs
from embeddings.sgns import SGNSConfig
from embeddings.train import TrainJob, train_loop, vocabulary_cut
from embeddings.vectors import Vectors, sha256_file
from pipelines.rundir import fingerprint, read_manifest
from pipelines.shards import split_shards
from pipelines.spec import SgnsSpec
from pipelines.stages import StageContext
from pipelines.vocab import Vocab

logger = logging.getLogger(__name__)

STOP_ENV = "LMPIPE_SGNS_STOP_AFTER_EPOCH"
#: Evaluation set -> split of the ``embedding-eval`` dataset (``pipelines.datasets``).
EVAL_SPLITS = {"analogy": "analogy", "wordsim353": "wordsim353", "simlex999": "simlex999", "men": "men", "rw": "rw"}
RESTRICT_VOCAB = 300_000


def check(ctx: StageContext) -> None:
    if "tokenize" not in ctx.selected and read_manifest(ctx.run_dir, "tokenize") is None:
        raise FileNotFoundError(f"{ctx.run_dir / 'tokenize'}: the sgns stage needs the tokenize stage; run it first")


def plan(ctx: StageContext) -> tuple[dict[str, Any], dict[str, Any]]:
    settings = ctx.spec.to_dict()["sgns"]
    settings.pop("workers")
    settings.pop("threads")
    tokenize = read_manifest(ctx.run_dir, "tokenize")
    return settings, {"tokenize": tokenize["fingerprint"] if tokenize else None}


def _fail_fast_on_resources(spec: SgnsSpec) -> None:
    """Ray Train waits forever for workers the cluster cannot place: refuse before starting instead."""
    resources = ray.cluster_resources()
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    if spec.workers * spec.threads > cpus:
        raise ValueError(
            f"sgns.workers x sgns.threads = {spec.workers} x {spec.threads} CPUs, but the Ray cluster has {cpus:g}; "
            f"lower sgns.workers or sgns.threads"
        )
    if spec.use_gpu and spec.workers > gpus:
        raise ValueError(f"sgns.use_gpu: {spec.workers} worker(s) need one GPU each, the Ray cluster has {gpus:g}")


def _train(job: TrainJob, spec: SgnsSpec, storage: Path, name: str) -> dict[str, Any]:
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig, WorkerGroupError
    from ray.train.torch import TorchConfig, TorchTrainer

    resources: dict[str, float] = {"CPU": float(spec.threads)}
    if spec.use_gpu:
        resources["GPU"] = 1.0
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=job.to_config(),
        torch_config=TorchConfig(backend="nccl" if spec.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=spec.workers, use_gpu=spec.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(storage_path=str(storage), name=name, checkpoint_config=CheckpointConfig(num_to_keep=1)),
    )
    try:
        result = trainer.fit()
    except WorkerGroupError as exc:  # surface the worker's own error (a ValueError stays a ValueError)
        failures = exc.worker_failures
        if failures:
            raise failures[min(failures)] from exc
        raise
    return result.return_value


def _remove_if_empty(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()


def _eval_files(mirror: str | None) -> tuple[dict[str, Path], str | None]:
    from pipelines.datasets import DatasetError, resolve

    try:
        return {name: resolve(f"data:embedding-eval/{split}", mirror=mirror) for name, split in EVAL_SPLITS.items()}, None
    except DatasetError as exc:
        return {}, str(exc)


def evaluate(vectors: Vectors, files: dict[str, Path]) -> dict[str, Any]:
    """The standard intrinsic evaluations, gensim's protocol (``embeddings.evaluate``)."""
    out: dict[str, Any] = {"restrict_vocab": RESTRICT_VOCAB}
    for name, (_, delimiter) in SIMILARITY_SETS.items():
        try:
            r = evaluate_word_pairs(vectors, files[name], delimiter=delimiter, restrict_vocab=RESTRICT_VOCAB)
        except ValueError as exc:  # no pair in the vocabulary (tiny corpora)
            out[name] = {"skipped": str(exc)}
            continue
        out[name] = {"spearman": r.spearman, "pearson": r.pearson, "pairs": r.pairs, "oov": r.oov}
    for key, method in (("analogy", "3cosadd"), ("analogy_3cosmul", "3cosmul")):
        res = evaluate_analogies(vectors, files["analogy"], method=method, restrict_vocab=RESTRICT_VOCAB)
        out[key] = {
            "method": method,
            "semantic": res.semantic.accuracy,
            "syntactic": res.syntactic.accuracy,
            "total": res.total.accuracy,
            "answered": res.total.correct + res.total.incorrect,
            "questions": res.questions,
            "oov": res.oov,
        }
    return out


def execute(ctx: StageContext, tmp_dir: Path) -> dict[str, Any]:
    spec: SgnsSpec = ctx.spec.sgns
    tokenize_dir = ctx.run_dir / "tokenize"
    shards = split_shards(tokenize_dir, "train")
    if not shards:
        raise ValueError(f"{tokenize_dir}/train: the training split is empty; nothing to train on")
    vocab = Vocab.load(tokenize_dir / "vocab.tsv")
    keep, drop = vocabulary_cut(vocab.counts, spec.min_count)
    if len(keep) == 0:
        top = int(vocab.counts[3:].max()) if len(vocab) > 3 else 0
        raise ValueError(f"sgns.min_count: bad value {spec.min_count}; no word occurs that often (the most frequent: {top} times)")
    if len(keep) <= spec.negative:
        raise ValueError(
            f"sgns.negative: bad value {spec.negative}; only {len(keep)} words occur sgns.min_count={spec.min_count} "
            "times or more, too few to draw that many distinct noise words: lower sgns.negative or sgns.min_count"
        )
    _fail_fast_on_resources(spec)
    settings, inputs = plan(ctx)
    fp = fingerprint({"stage": "sgns", "settings": settings, "inputs": inputs})  # the runner's formula
    checkpoint_dir = ctx.run_dir / ".checkpoints" / f"sgns-{fp[:16]}"
    stop = os.environ.get(STOP_ENV)
    job = TrainJob(
        vocab_path=str(tokenize_dir / "vocab.tsv"),
        shards=tuple(str(p) for p in shards),
        out_dir=str(tmp_dir),
        checkpoint_dir=str(checkpoint_dir),
        config=SGNSConfig(
            dim=spec.dim, window=spec.window, negative=spec.negative, sample=spec.sample, alpha=spec.alpha,
            epochs=spec.epochs, batch_pairs=spec.batch_pairs, shared_negatives=spec.shared_negatives, seed=spec.seed,
        ),  # fmt: skip
        min_count=spec.min_count,
        threads=spec.threads,
        syncs_per_epoch=spec.syncs_per_epoch,
        sync=spec.sync,
        use_gpu=spec.use_gpu,
        stop_after_epoch=int(stop) if stop else None,
    )
    logger.info(
        "=== 1/3 Training SGNS: %d shard(s), %d of %d words kept (min_count %d), %d worker(s) x %d thread(s), "
        "sync %s x%s/epoch ===", len(shards), len(keep), len(vocab), spec.min_count, spec.workers, spec.threads,
        spec.sync, spec.syncs_per_epoch or "auto",
    )  # fmt: skip
    storage = ctx.run_dir / ".ray-train"
    name = f"sgns-{fp[:12]}-{uuid.uuid4().hex[:8]}"  # fresh: Ray Train V2 would auto-restore a reused name
    started = time.perf_counter()
    try:
        training = _train(job, spec, storage, name)
    finally:
        shutil.rmtree(storage / name, ignore_errors=True)  # our own checkpoints are the resume source
        _remove_if_empty(storage)
    train_seconds = time.perf_counter() - started
    shutil.rmtree(checkpoint_dir, ignore_errors=True)  # finished: a --force rerun starts from scratch
    _remove_if_empty(checkpoint_dir.parent)

    vectors = Vectors.load(tmp_dir / "vectors")
    evaluation: dict[str, Any] = {}
    if spec.evaluate:
        logger.info("=== 2/3 Evaluating: analogies, WS353, SimLex-999, MEN, RW ===")
        files, reason = _eval_files(ctx.mirror)
        if reason is None:
            evaluation = evaluate(vectors, files)
        else:
            logger.warning("sgns: evaluation skipped: %s", reason)
            evaluation = {"skipped": reason}
    else:
        evaluation = {"skipped": "sgns.evaluate is false"}
    logger.info("=== 3/3 Writing the manifest ===")
    files_out = [
        {"path": f"vectors/{n}", "sha256": sha256_file(tmp_dir / "vectors" / n)} for n in ("vectors.npy", "vocab.tsv")
    ]
    epochs = training["epochs"]
    return {
        "outputs": {"files": files_out, "vectors": "vectors", "count": len(vectors), "dim": vectors.dim},
        "training": {
            "workers": spec.workers,
            "threads": spec.threads,
            "sync": spec.sync,
            "syncs_per_epoch": training["syncs_per_epoch"],
            "device": training["device"],
            "vocab_kept": len(keep),
            "vocab_dropped": len(drop),
            "share_words": training["share_words"],
            "resumed_after_epoch": training["resumed_after_epoch"],
            "epochs": epochs,
            "words_per_second": [e["words_per_second"] for e in epochs],
            "seconds": round(train_seconds, 3),
        },
        "evaluation": evaluation,
    }


def summary(manifest: dict[str, Any]) -> list[str]:
    out, tr, ev = manifest["outputs"], manifest["training"], manifest.get("evaluation", {})
    rows = [f"vectors {out['count']:,} x {out['dim']} ({tr['vocab_dropped']:,} rare or unknown ids dropped)"]
    sync = f", sync {tr['sync']} x{tr['syncs_per_epoch']}/epoch" if tr["workers"] > 1 else ""
    rows.append(f"{tr['workers']} worker(s) x {tr['threads']} thread(s) on {tr['device']}{sync}; words per worker {tr['share_words']}")
    for e in tr["epochs"]:
        rows.append(f"epoch {e['epoch']}: {e['words']:,} words, {e['words_per_second']:,.0f} words/s, loss {e['loss']:.4f}")
    if tr["resumed_after_epoch"]:
        rows.append(f"resumed after epoch {tr['resumed_after_epoch']} from a checkpoint")
    if "skipped" in ev:
        rows.append(f"evaluation skipped: {ev['skipped']}")
    elif ev:
        a = ev["analogy"]
        rows.append(
            f"analogy 3CosAdd: total {100 * a['total']:.2f}% (semantic {100 * a['semantic']:.2f}%, syntactic "
            f"{100 * a['syntactic']:.2f}%) on {a['answered']:,} of {a['questions']:,} questions"
        )
        sims = [f"{n} {ev[n]['spearman']:.3f}" for n in SIMILARITY_SETS if "spearman" in ev.get(n, {})]
        rows.append("Spearman: " + (", ".join(sims) or "no set had in-vocabulary pairs"))
    return rows
