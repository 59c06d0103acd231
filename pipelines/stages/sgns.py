"""The sgns stage: word2vec vectors (skip-gram or CBOW, negative sampling or hierarchical softmax: ``sgns.model``,
``sgns.loss``) trained data-parallel with Ray Train.

Input: ``RUN/tokenize`` (train shards, ``vocab.tsv``).  Output (``RUN/sgns/``): ``vectors/`` (an
``embeddings.vectors.Vectors`` artifact: the words counted ``sgns.min_count`` times or more, in vocabulary id
order, i.e. by descending count) and ``manifest.json`` with words/s per epoch, the words each worker
trained, the sync scheme and the evaluations.

    === 1/3 train ===     TorchTrainer(embeddings.train.train_loop), ScalingConfig(num_workers=workers)
                          checkpoints after every epoch but the last in RUN/.checkpoints/sgns-<fingerprint>/
                          (resumed on rerun; the last epoch's vectors are the output, written at once)
    === 2/3 evaluate ===  analogies (3CosAdd and 3CosMul, restrict_vocab 300k, scores in bounded tiles) and
                          WS353 / SimLex / MEN / RW Spearman
                          when data:embedding-eval resolves (mirror or cache), else skipped with the reason
    === 3/3 manifest ===

The fingerprint leaves out ``workers`` and ``threads``: they change the trajectory (replica merging,
Hogwild timing), not what is estimated, and leaving them out lets a run scale out or in, and lets a
checkpoint written by 2 workers be resumed by 1 (same matrices, new random streams).

``LMPIPE_SGNS_STOP_AFTER_EPOCH=N`` (read by the driver) stops training with an error right after epoch N's
checkpoint, as a kill would: the resume tests use it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lmpipe.cluster.process import WorkersRecord, release_free_memory
from lmpipe.cluster.training import config_from, start_training, stop_after_env, to_config
from lmpipe.embeddings.sgns import SGNSConfig
from lmpipe.embeddings.train import TrainJob, train_loop, vocabulary_cut
from lmpipe.embeddings.vectors import Vectors
from lmpipe.pipelines.core.files import sha256_file
from lmpipe.pipelines.core.shards import split_shards
from lmpipe.pipelines.core.vocab import Vocab
from lmpipe.pipelines.ingest import InputError
from lmpipe.pipelines.rundir import StageRun
from lmpipe.pipelines.spec import SgnsSpec
from lmpipe.pipelines.spec_parser import SpecError
from lmpipe.pipelines.stages import Stage, StageContext, epoch_lines
from lmpipe.pipelines.stages.embedding_eval import evaluate_stage, summary_lines

logger = logging.getLogger(__name__)

STOP_ENV = stop_after_env("sgns")
STAGE = Stage(name="sgns", settings=SgnsSpec, upstream=("tokenize",), ray_train=True)


def execute(ctx: StageContext, run: StageRun) -> dict[str, Any]:
    spec: SgnsSpec = ctx.spec.sgns
    tmp_dir = run.tmp_dir
    tokenize_dir = ctx.run_dir / "tokenize"
    shards = split_shards(tokenize_dir, "train")
    if not shards:
        raise InputError(f"{tokenize_dir}/train: the training split is empty; nothing to train on")
    vocab = Vocab.load(tokenize_dir / "vocab.tsv")
    keep, drop = vocabulary_cut(vocab.counts, spec.min_count)
    if len(keep) == 0:
        top = int(vocab.counts[3:].max()) if len(vocab) > 3 else 0
        raise SpecError(
            f"sgns.min_count: bad value {spec.min_count}; no word occurs that often (the most frequent: {top} times)"
        )
    if len(keep) <= spec.negative:
        raise SpecError(
            f"sgns.negative: bad value {spec.negative}; only {len(keep)} words occur sgns.min_count={spec.min_count} "
            "times or more, too few to draw that many distinct noise words: lower sgns.negative or sgns.min_count"
        )
    trainer = start_training("sgns", ctx.run_dir, run.fingerprint, spec)
    job = trainer.job(
        TrainJob, spec, vocab_path=str(tokenize_dir / "vocab.tsv"), shards=tuple(str(p) for p in shards),
        out_dir=str(tmp_dir), config=config_from(SGNSConfig, spec),
    )  # fmt: skip
    logger.info(
        "=== 1/3 Training word2vec %s + %s: %d shard(s), %d of %d words kept (min_count %d), %d worker(s) x %d "
        "thread(s), sync %s x%s/epoch ===", spec.model, spec.loss, len(shards), len(keep), len(vocab), spec.min_count, spec.workers, spec.threads,
        spec.sync, spec.syncs_per_epoch or "auto",
    )  # fmt: skip
    training = trainer.fit(train_loop, to_config(job))
    trainer.finish()
    release_free_memory()  # one worker trained in this process: its freed blocks go back before the evaluation

    vectors = Vectors.load(tmp_dir / "vectors")
    if spec.evaluate:
        logger.info("=== 2/3 Evaluating: analogies, WS353, SimLex-999, MEN, RW ===")
    evaluation = evaluate_stage("sgns", vectors, enabled=spec.evaluate, mirror=ctx.mirror)
    logger.info("=== 3/3 Writing the manifest ===")
    files_out = [
        {"path": f"vectors/{n}", "sha256": sha256_file(tmp_dir / "vectors" / n)}
        for n in ("vectors.npy", "vocab.tsv")
    ]
    epochs = training["epochs"]
    return {
        "outputs": {"files": files_out, "vectors": "vectors", "count": len(vectors), "dim": vectors.dim},
        "training": {
            "workers": trainer.record(training["processes"]),
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
            "seconds": round(trainer.seconds, 3),
        },
        "evaluation": evaluation,
    }


def report_rows(manifest: dict[str, Any], run_dir: Path) -> list[Any]:
    """The vectors and their evaluations, for ``pipelines.report_rows``."""
    from lmpipe.pipelines.report_rows import embedding_row, hardware

    tr = manifest["training"]
    return [
        embedding_row(
            manifest, run_dir, model="sgns", train_seconds=tr.get("seconds"),
            hardware=hardware(manifest, tr.get("device", "cpu"), tr.get("workers", 1)),
        )  # fmt: skip
    ]


def summary(manifest: dict[str, Any]) -> list[str]:
    out, tr, ev = manifest["outputs"], manifest["training"], manifest.get("evaluation", {})
    workers = WorkersRecord.from_json(tr["workers"]).count
    rows = [f"vectors {out['count']:,} x {out['dim']} ({tr['vocab_dropped']:,} rare or unknown ids dropped)"]
    sync = f", sync {tr['sync']} x{tr['syncs_per_epoch']}/epoch" if workers > 1 else ""
    rows.append(
        f"{workers} worker(s) x {tr['threads']} thread(s) on {tr['device']}{sync}; words per worker {tr['share_words']}"
    )
    rows += epoch_lines(
        manifest, tr["epochs"],
        lambda e: f"epoch {e['epoch']}: {e['words']:,} words, {e['words_per_second']:,.0f} words/s, loss {e['loss']:.4f}",
    )  # fmt: skip
    if tr["resumed_after_epoch"]:
        rows.append(f"resumed after epoch {tr['resumed_after_epoch']} from a checkpoint")
    rows += summary_lines(ev)
    return rows
