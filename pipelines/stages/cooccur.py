"""The cooccur stage: GloVe's word-word co-occurrence matrix X, counted by Ray tasks with a disk shuffle.

Input: ``RUN/tokenize`` (train shards, ``vocab.tsv``).  Output (``RUN/cooccur/``):

    vocab.tsv              id, token, count: the words that got a row (the ``cooccur.min_count`` /
                           ``max_size`` cut), by descending count; row and column ids index this file
    cooc/part-PPPP.arrow   schemas.COOC (row uint32, col uint32, value float64), one file per non-empty
                           hash partition of the row id, sorted by (row, col); every non-zero X[row, col]
                           appears exactly once
    manifest.json          tokens, words kept, pair occurrences, non-zeros, partitions, per-task peak RSS

Steps (``embeddings.cooccur`` holds the pure counting; this module plans and runs the tasks)::

    === 1/3 count ===   task per block of consecutive shards: window pairs, aggregated in a sorted
                        accumulator; past half the memory budget it is split by hash(row) % P and appended
                        as one record batch to that task's file of each partition
                        -> _work/part-PPPP/piece-BBBBB.arrow  (blocks x partitions files, never per spill)
    === 2/3 merge ===   task per partition: sum the pieces exactly (integer units), write cooc/part-PPPP
    === 3/3 manifest ===

Unlike Stanford's ``cooccur`` (an overflow file per full buffer, then a k-way merge of all of them:
28,745 files and "too many open files" on large corpora), the number of files is fixed up front at
blocks x partitions, and a reduce task opens one partition's pieces.  The values are exact sums, so the
output is the same whatever ``workers``, ``memory_mb`` or the number of partitions (a different P only
moves rows between files).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from lmpipe.cluster.process import process_info
from lmpipe.embeddings.cooccur import (
    CooccurConfig,
    CooccurCounter,
    cooc_table,
    dense_ids,
    merge_partials,
    partial_table,
    vocabulary_cut,
)
from lmpipe.pipelines.core.faults import inject
from lmpipe.pipelines.core.files import read_table, sha256_file, write_table
from lmpipe.pipelines.core.keyed import key_hash
from lmpipe.pipelines.core.schemas import COOC_PARTIAL
from lmpipe.pipelines.core.shards import shard_batches, split_shards
from lmpipe.pipelines.core.vocab import Vocab
from lmpipe.pipelines.core.vocab_tsv import write_vocab_tsv
from lmpipe.pipelines.ingest import InputError
from lmpipe.pipelines.partitions import part_dir, partition_count
from lmpipe.pipelines.ray_stages import map_tasks
from lmpipe.pipelines.rundir import StageRun, read_manifest
from lmpipe.pipelines.spec import CooccurSpec
from lmpipe.pipelines.spec_parser import SpecError
from lmpipe.pipelines.stages import Stage, StageContext

logger = logging.getLogger(__name__)

#: Bytes per pair while a task aggregates it: key + units (16), the argsort index (8), the gathered copies
#: and the concatenation with the accumulator (~24).  Measured peak RSS stays under this estimate.
BYTES_PER_PAIR = 48
#: Map tasks per worker: a few, so a slow block does not leave a worker idle at the end.
BLOCKS_PER_WORKER = 2


# ------------------------------------------------------------------------------------------ contract
STAGE = Stage(name="cooccur", settings=CooccurSpec, upstream=("tokenize",))


def summary(manifest: dict[str, Any]) -> list[str]:
    out, c = manifest["outputs"], manifest["counting"]
    peak = max((t["peak_rss_mb"] for t in c["tasks"]), default=0.0)
    return [
        f"X: {out['vocab_size']:,} words, {out['nonzeros']:,} non-zeros, sum {out['total']:,.1f} "
        f"({c['occurrences']:,} pair occurrences from {c['words']:,} of {c['tokens']:,} tokens)",
        f"{c['blocks']} block(s) x {c['partitions']} partition(s), {c['spills']} spill(s); count {c['count_seconds']:.1f} s "
        f"({c['tokens_per_second']:,.0f} tokens/s), merge {c['merge_seconds']:.1f} s; peak RSS per task {peak:.0f} MB",
    ]


# ------------------------------------------------------------------------------------------ tasks
def _batch_words(batch: pa.RecordBatch, mapping: np.ndarray, boundary: str, first_sentence: int):
    """Dense ids of a TOKENS record batch with the cut applied, and each word's segment key."""
    ids = batch.column("ids")
    offsets = np.asarray(ids.offsets, np.int64)
    flat = np.asarray(ids.values, np.uint32)[offsets[0] : offsets[-1]]
    lengths = np.diff(offsets)
    if boundary == "document":
        keys = np.asarray(batch.column("doc"), np.uint64).view(np.int64)
    else:
        keys = np.arange(first_sentence, first_sentence + batch.num_rows, dtype=np.int64)
    dense = mapping[flat]
    kept = dense >= 0
    return dense[kept], np.repeat(keys, lengths)[kept], len(flat)


def _tail(previous: list[str], mapping: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """The last ``window`` kept words (and document keys) before a block, reading shards backwards."""
    words: list[np.ndarray] = []
    segs: list[np.ndarray] = []
    have = 0
    for path in previous:
        for batch in reversed(list(shard_batches(path))):
            w, s, _ = _batch_words(batch, mapping, "document", 0)
            words.insert(0, w)
            segs.insert(0, s)
            have += len(w)
            if have >= window:
                return np.concatenate(words)[-window:], np.concatenate(segs)[-window:]
    if not words:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(words), np.concatenate(segs)


class _Spiller:
    """One open IPC file per partition for this task; each spill appends one record batch to each."""

    def __init__(self, work: Path, partitions: int, index: int) -> None:
        self.work, self.partitions, self.index = work, partitions, index
        self._files: dict[int, tuple[Path, Path, Any, Any]] = {}  # p -> (final, tmp, sink, writer)

    def __call__(self, keys: np.ndarray, units: np.ndarray) -> None:
        part = (key_hash([keys >> np.uint64(32)]) % np.uint64(self.partitions)).astype(np.int64)
        order = np.argsort(part, kind="stable")  # keeps each partition's rows sorted by key
        bounds = np.concatenate(([0], np.cumsum(np.bincount(part, minlength=self.partitions))))
        keys, units = keys[order], units[order]
        for p in range(self.partitions):
            a, b = int(bounds[p]), int(bounds[p + 1])
            if a == b:
                continue
            if p not in self._files:
                final = part_dir(self.work, p) / f"piece-{self.index:05d}.arrow"
                final.parent.mkdir(parents=True, exist_ok=True)
                tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
                sink = pa.OSFile(str(tmp), "wb")
                self._files[p] = (final, tmp, sink, pa.ipc.new_file(sink, COOC_PARTIAL))
            self._files[p][3].write_table(partial_table(keys[a:b], units[a:b]))

    def close(self) -> None:
        """Finish every file and rename it into place (a retried task never leaves half a piece)."""
        for final, tmp, sink, writer in self._files.values():
            writer.close()
            sink.close()
            os.replace(tmp, final)


def _count_task(
    paths: list[str],
    previous: list[str],
    mapping: np.ndarray,
    config: CooccurConfig,
    boundary: str,
    work: str,
    partitions: int,
    index: int,
    chunk_tokens: int,
    max_pairs: int,
) -> dict[str, Any]:
    """Map side: count one block of consecutive shards and spill the sums into the partition files.
    ``previous`` are the shards before the block, nearest first (document boundaries: their last words)."""
    started = time.perf_counter()
    inject("cooccur.count")
    spiller = _Spiller(Path(work), partitions, index)
    counter = CooccurCounter(config, chunk_tokens=chunk_tokens, max_pairs=max_pairs, spill=spiller)
    if previous and boundary == "document":
        words, seg = _tail(previous, mapping, config.window)
        counter.carry(words, seg)  # a document may continue from the previous block: context, not counted
    tokens = sentences = 0
    for path in paths:
        for batch in shard_batches(path):
            words, seg, n = _batch_words(batch, mapping, boundary, sentences)
            counter.add(words, seg)
            tokens += n
            sentences += batch.num_rows
    counter.flush()
    spiller.close()
    return {
        "block": index,
        "shards": len(paths),
        "tokens": tokens,
        "words": counter.words,
        "occurrences": counter.occurrences,
        "spills": counter.spills,
        "seconds": round(time.perf_counter() - started, 3),
        **process_info(),
    }


def _merge_task(work: str, out: str, p: int, scale: int) -> dict[str, Any]:
    """Reduce side: exact sum of partition ``p``'s pieces -> ``cooc/part-PPPP.arrow`` (sorted by row, col)."""
    pieces = sorted(part_dir(Path(work), p).glob("piece-*.arrow"))
    inject("cooccur.merge")
    keys, units = merge_partials(read_table(path) for path in pieces)
    result = {"partition": p, "nonzeros": int(len(keys)), "total_units": int(units.sum()), **process_info()}
    if len(keys):
        path = Path(out) / f"part-{p:04d}.arrow"
        write_table(path, cooc_table(keys, units, scale))
        result["file"] = path.name
    # The pieces stay until the driver has every result (it removes ``work``): a retry must find them.
    return result


# ------------------------------------------------------------------------------------------ driver
def plan_memory(spec: CooccurSpec, train_tokens: int, vocab_size: int) -> tuple[int, int, int]:
    """``(partitions, chunk_tokens, max_pairs)`` for ``memory_mb`` per task.

    Half the budget holds one chunk's pairs, half the accumulator; a reduce task holds one partition,
    whose size is bounded by the pair occurrences (before any aggregation) or the V x V matrix."""
    budget = spec.memory_mb * (1 << 20)
    per_token = spec.window * (2 if spec.symmetric else 1) * BYTES_PER_PAIR
    # cooccur.memory_mb >= 64 and window <= 20: a chunk is always >= 17k tokens, far above the window
    chunk_tokens = budget // 2 // per_token
    max_pairs = budget // 2 // BYTES_PER_PAIR
    total_pairs = min(train_tokens * spec.window * (2 if spec.symmetric else 1), vocab_size * vocab_size)
    partitions = partition_count(math.ceil(total_pairs * BYTES_PER_PAIR / budget), spec.partitions)
    return partitions, int(chunk_tokens), int(max_pairs)


def _blocks(shards: list[Path], workers: int) -> list[list[Path]]:
    """Consecutive runs of shards of about equal count, ``BLOCKS_PER_WORKER`` per worker at most."""
    n = min(len(shards), workers * BLOCKS_PER_WORKER)
    bounds = np.linspace(0, len(shards), n + 1).round().astype(int)
    return [shards[bounds[i] : bounds[i + 1]] for i in range(n)]


def execute(ctx: StageContext, run: StageRun) -> dict[str, Any]:
    spec: CooccurSpec = ctx.spec.cooccur
    tmp_dir = run.tmp_dir
    tokenize_dir = ctx.run_dir / "tokenize"
    shards = split_shards(tokenize_dir, "train")
    if not shards:
        raise InputError(f"{tokenize_dir}/train: the training split is empty; nothing to count")
    vocab = Vocab.load(tokenize_dir / "vocab.tsv")
    keep = vocabulary_cut(vocab.counts, spec.min_count, spec.max_size)
    if len(keep) == 0:
        top = int(vocab.counts[3:].max()) if len(vocab) > 3 else 0
        raise SpecError(
            f"cooccur.min_count: bad value {spec.min_count}; no word occurs that often (the most frequent: {top} times)"
        )
    listed = read_manifest(ctx.run_dir, "tokenize")["outputs"]["shards"]["train"]
    train_tokens = sum(item["tokens"] for item in listed)
    partitions, chunk_tokens, max_pairs = plan_memory(spec, train_tokens, len(keep))
    config = CooccurConfig(
        window=spec.window, symmetric=spec.symmetric, distance_weighting=spec.distance_weighting
    )
    blocks = _blocks(shards, spec.workers)
    mapping = dense_ids(keep, len(vocab))
    work = tmp_dir / "_work"
    logger.info(
        "=== 1/3 Counting co-occurrences: %d shard(s) in %d block(s), %d of %d words kept, window %d%s, "
        "%d partitions ===", len(shards), len(blocks), len(keep), len(vocab) - 3, spec.window,
        "" if spec.symmetric else " (left only)", partitions,
    )  # fmt: skip
    started = time.perf_counter()
    calls = []
    for i, block in enumerate(blocks):
        first = shards.index(block[0])
        previous = [str(p) for p in reversed(shards[:first])] if spec.boundary == "document" else []
        calls.append(
            (
                [str(p) for p in block],
                previous,
                mapping,
                config,
                spec.boundary,
                str(work),
                partitions,
                i,
                chunk_tokens,
                max_pairs,
            )
        )
    tasks = map_tasks(_count_task, calls, workers=spec.workers, desc="cooccur: count")
    count_seconds = time.perf_counter() - started
    tokens = sum(t["tokens"] for t in tasks)
    logger.info(
        "counted %s tokens in %.1f s (%.0f tokens/s)",
        f"{tokens:,}",
        count_seconds,
        tokens / max(count_seconds, 1e-9),
    )

    logger.info("=== 2/3 Merging %d partition(s) ===", partitions)
    merge_started = time.perf_counter()
    out_dir = tmp_dir / "cooc"
    merged = map_tasks(
        _merge_task, [(str(work), str(out_dir), p, config.scale) for p in range(partitions)],
        workers=spec.workers, desc="cooccur: merge",
    )  # fmt: skip
    merge_seconds = time.perf_counter() - merge_started
    shutil.rmtree(work, ignore_errors=True)
    nonzeros = sum(m["nonzeros"] for m in merged)
    if nonzeros == 0:
        raise InputError(
            f"{tokenize_dir}/train: no two words of the cooccur.min_count={spec.min_count} cut share a "
            f"{spec.boundary} within cooccur.window={spec.window}; the co-occurrence matrix is empty: lower "
            "cooccur.min_count or use more text"
        )

    logger.info("=== 3/3 Writing the vocabulary and the manifest ===")
    tokens_list = vocab.tokens.to_pylist()
    write_vocab_tsv(tmp_dir / "vocab.tsv", [tokens_list[i] for i in keep], vocab.counts[keep])
    files = [{"path": "vocab.tsv", "rows": len(keep), "sha256": sha256_file(tmp_dir / "vocab.tsv")}]
    for m in merged:
        if "file" in m:
            path = out_dir / m["file"]
            files.append(
                {
                    "path": f"cooc/{m['file']}",
                    "rows": m["nonzeros"],
                    "bytes": path.stat().st_size,
                    "sha256": sha256_file(path),
                }
            )
    return {
        "outputs": {
            "files": files,
            "vocab_size": len(keep),
            "nonzeros": nonzeros,
            "total": sum(m["total_units"] for m in merged) / config.scale,
            "scale": config.scale,
        },
        "counting": {
            "tokens": tokens,
            "words": sum(t["words"] for t in tasks),
            "occurrences": sum(t["occurrences"] for t in tasks),
            "blocks": len(blocks),
            "partitions": partitions,
            "chunk_tokens": chunk_tokens,
            "max_pairs": max_pairs,
            "spills": sum(t["spills"] for t in tasks),
            "count_seconds": round(count_seconds, 3),
            "merge_seconds": round(merge_seconds, 3),
            "tokens_per_second": round(tokens / max(count_seconds, 1e-9), 1),
            "tasks": tasks + [{k: v for k, v in m.items() if k != "file"} for m in merged],
        },
    }
