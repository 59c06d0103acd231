"""The glove stage: GloVe word vectors trained data-parallel with Ray Train on the cooccur stage's counts.

Input: ``RUN/cooccur`` (``vocab.tsv``, ``cooc/part-*.arrow``).  Output (``RUN/glove/``): ``vectors/`` (an
``embeddings.vectors.Vectors`` artifact, the same type the sgns stage writes: every word of the cooccur
vocabulary in its id order, W + W~ or W by ``glove.output``) and ``manifest.json`` with the cost and
entries/s per epoch, each worker's share, the sync count and the evaluations (shared with sgns:
``pipelines.stages.embedding_eval``).

    === 1/3 train ===     TorchTrainer(embeddings.glove_train.train_loop), ScalingConfig(num_workers=workers)
                          checkpoints per epoch in RUN/.checkpoints/glove-<fingerprint>/ (resumed on rerun)
    === 2/3 evaluate ===  analogies and WS353 / SimLex / MEN / RW when data:embedding-eval resolves
    === 3/3 manifest ===

``workers`` and ``threads`` are left out of the fingerprint (they change the trajectory, not what is
estimated), so a checkpoint written by 2 workers can be resumed by 1.

``LMPIPE_GLOVE_STOP_AFTER_EPOCH=N`` (read by the driver) stops training with an error right after epoch N's
checkpoint, as a kill would: the resume tests use it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lmpipe.cluster.process import WorkersRecord
from lmpipe.cluster.training import config_from, start_training, stop_after_env, to_config
from lmpipe.embeddings.glove import GloveConfig
from lmpipe.embeddings.glove_train import GloveJob, train_loop
from lmpipe.embeddings.vectors import Vectors
from lmpipe.pipelines.core.files import sha256_file
from lmpipe.pipelines.ingest import InputError
from lmpipe.pipelines.rundir import StageRun, read_manifest
from lmpipe.pipelines.spec import GloveSpec
from lmpipe.pipelines.stages import Stage, StageContext, epoch_lines
from lmpipe.pipelines.stages.embedding_eval import evaluate_stage, summary_lines

logger = logging.getLogger(__name__)

STOP_ENV = stop_after_env("glove")
STAGE = Stage(name="glove", settings=GloveSpec, upstream=("cooccur",), ray_train=True)


def execute(ctx: StageContext, run: StageRun) -> dict[str, Any]:
    spec: GloveSpec = ctx.spec.glove
    tmp_dir = run.tmp_dir
    cooccur_dir = ctx.run_dir / "cooccur"
    manifest = read_manifest(ctx.run_dir, "cooccur")
    shards = sorted((cooccur_dir / "cooc").glob("part-*.arrow"))
    if manifest is None or manifest["outputs"]["nonzeros"] == 0 or not shards:
        raise InputError(f"{cooccur_dir}/cooc: the co-occurrence matrix is empty; nothing to train on")
    trainer = start_training("glove", ctx.run_dir, run.fingerprint, spec)
    job = trainer.job(
        GloveJob, spec, vocab_path=str(cooccur_dir / "vocab.tsv"), shards=tuple(str(p) for p in shards),
        out_dir=str(tmp_dir), config=config_from(GloveConfig, spec),
    )  # fmt: skip
    logger.info(
        "=== 1/3 Training GloVe: %d words, %d non-zeros in %d shard(s), dim %d, %d epoch(s), %d worker(s) x %d "
        "thread(s) ===", manifest["outputs"]["vocab_size"], manifest["outputs"]["nonzeros"], len(shards),
        spec.dim, spec.epochs, spec.workers, spec.threads,
    )  # fmt: skip
    training = trainer.fit(train_loop, to_config(job))
    trainer.finish()

    vectors = Vectors.load(tmp_dir / "vectors")
    if spec.evaluate:
        logger.info("=== 2/3 Evaluating: analogies, WS353, SimLex-999, MEN, RW ===")
    evaluation = evaluate_stage("glove", vectors, enabled=spec.evaluate, mirror=ctx.mirror)
    logger.info("=== 3/3 Writing the manifest ===")
    files = [
        {"path": f"vectors/{n}", "sha256": sha256_file(tmp_dir / "vectors" / n)}
        for n in ("vectors.npy", "vocab.tsv")
    ]
    epochs = training["epochs"]
    return {
        "outputs": {"files": files, "vectors": "vectors", "count": len(vectors), "dim": vectors.dim},
        "training": {
            "workers": trainer.record(training["processes"]),
            "threads": spec.threads,
            "output": spec.output,
            "syncs_per_epoch": training["syncs_per_epoch"],
            "device": training["device"],
            "share_entries": training["share_entries"],
            "resumed_after_epoch": training["resumed_after_epoch"],
            "epochs": epochs,
            "seconds_per_epoch": [e["seconds"] for e in epochs],
            "seconds": round(trainer.seconds, 3),
        },
        "evaluation": evaluation,
    }


def report_rows(manifest: dict[str, Any], run_dir: Path) -> list[Any]:
    """The vectors and their evaluations, for ``pipelines.report_rows`` (the same row type as sgns)."""
    from lmpipe.pipelines.report_rows import embedding_row, hardware

    tr = manifest["training"]
    return [
        embedding_row(
            manifest,
            run_dir,
            model="glove",
            train_seconds=tr.get("seconds"),
            hardware=hardware(manifest, tr.get("device", "cpu"), tr.get("workers", 1)),
        )  # fmt: skip
    ]


def summary(manifest: dict[str, Any]) -> list[str]:
    out, tr = manifest["outputs"], manifest["training"]
    workers = WorkersRecord.from_json(tr["workers"]).count
    sync = f", {tr['syncs_per_epoch']} sync(s)/epoch" if workers > 1 else ""
    rows = [
        f"vectors {out['count']:,} x {out['dim']} ({'W + W~' if tr['output'] == 'sum' else 'W'})",
        f"{workers} worker(s) x {tr['threads']} thread(s) on {tr['device']}{sync}; entries per worker "
        f"{tr['share_entries']}",
    ]
    rows += epoch_lines(
        manifest, tr["epochs"],
        lambda e: f"epoch {e['epoch']}: cost {e['cost']:.5f}, {e['seconds']:.2f} s, {e['entries_per_second']:,.0f} entries/s",
    )  # fmt: skip
    if tr["resumed_after_epoch"]:
        rows.append(f"resumed after epoch {tr['resumed_after_epoch']} from a checkpoint")
    return rows + summary_lines(manifest.get("evaluation", {}))
