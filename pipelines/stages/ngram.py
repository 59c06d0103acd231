"""The ngram stage: n-gram counts and an interpolated modified Kneser-Ney model, lmplz-exact, on Ray.

Input: ``RUN/tokenize`` (train shards, ``vocab.tsv``).  Output (``RUN/ngram/``): ``model.arpa`` (or
``.arpa.gz``), ``model.binary`` when ``build_binary`` is found, ``counts/order-<k>/part-<p>/`` raw counts
per order (``schemas.ngram_schema``), and ``manifest.json`` with counts-of-counts, discounts and the valid
and test perplexities (KenLM's accounting).

Each step is a set of Ray tasks (``pipelines.ray_stages.map_tasks``) over hash partitions, exchanging data
through partition files (``pipelines.partitions.DirectoryStore``), so a task holds one shard or one
partition, never the whole model::

    === 1/3 count ===     task per shard: count orders 1..N (pre-aggregated), split by hash of the n-gram
                          task per (order, partition): merge the pieces -> counts/order-k/part-p, and split
                          them by suffix for the adjust step (k >= 2)
    === 2/3 estimate ===  lm.kneser_ney.estimate, its map_fn = these Ray tasks, its store = the folder store:
                          adjust, discounts, probabilities, interpolate, backoff (sequenced there only)
    === 3/3 ARPA ===      the driver streams the MODEL parts into the ARPA, one part at a time

``estimator: lmplz`` streams the tokenized training text into an installed KenLM ``lmplz`` instead.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from lmpipe.cluster.process import Placement, ray_options
from lmpipe.lm import kneser_ney as kn
from lmpipe.lm.ngram_counts import count_ngrams, merge_counts
from lmpipe.pipelines.core.errors import MissingError
from lmpipe.pipelines.core.faults import inject
from lmpipe.pipelines.core.files import read_table, sha256_file, write_table
from lmpipe.pipelines.core.keyed import key_columns
from lmpipe.pipelines.core.schemas import FIRST_WORD_ID, UNK_ID, ngram_schema
from lmpipe.pipelines.core.shards import read_shard, split_shards
from lmpipe.pipelines.core.vocab import Vocab
from lmpipe.pipelines.ingest import InputError
from lmpipe.pipelines.partitions import DirectoryStore, partition_count
from lmpipe.pipelines.ray_stages import map_local, map_tasks
from lmpipe.pipelines.rundir import StageRun, read_manifest
from lmpipe.pipelines.spec import NgramSpec, parse_resources
from lmpipe.pipelines.spec_parser import SpecError
from lmpipe.pipelines.stages import Stage, StageContext

logger = logging.getLogger(__name__)

#: Bytes one n-gram occupies while a task groups it (ids + count + sort/hash scratch), for memory planning.
_BYTES_PER_NGRAM_ID = 4
_GROUP_OVERHEAD = 3.0
#: Count tasks per worker: enough that every worker gets work and the tail balances, and small enough that
#: the workers' concurrent count tasks (each holds its slice's sort keys and n-grams of every order) stay
#: below the estimation steps' peak, which is set by the partitions (so by the ARPA's byte order).
_SLICES_PER_WORKER = 4
#: The most tokens one count task takes, whatever the budget allows: counting sorts every position by its N
#: words, packing word ids with the position into uint64 keys (``keyed.sort_rows``); up to 2^22 positions two
#: 21-bit ids (a vocabulary of up to 2M words) fit one key beside the position, and the sort's and gathers'
#: arrays stay small enough for the caches.  Measured on 200M generated tokens (RESULTS.md, 2026-12-08): a
#: 12M-token slice counts 1.5-1.7x slower per token at order 3 (a 6M one 1.9-2.2x at order 5) than 3-4M ones,
#: at twice the memory; smaller slices pre-aggregate less (more rows to shuffle), so not much smaller.
_COUNT_SLICE_TOKENS = 1 << 22


# ------------------------------------------------------------------------------------------ contract
#: The PyPI kenlm module is compiled with KENLM_MAX_ORDER 6 (its setup.py default) and does not expose it.
KENLM_MODULE_MAX_ORDER = 6

STAGE = Stage(name="ngram", settings=NgramSpec, upstream=("tokenize",), needs_ray=lambda ctx: _needs_ray(ctx))


def runs_locally(ctx: StageContext) -> bool:
    """``ngram.executor`` resolved: threads in the driver (``local``) or Ray tasks; ``auto`` is local unless the
    run joins a cluster (``--address`` or ``RAY_ADDRESS``) or places its tasks by ``resources``."""
    spec = ctx.spec.ngram
    if spec.executor != "auto":
        return spec.executor == "local"
    return ctx.address is None and not os.environ.get("RAY_ADDRESS") and not spec.resources


def _needs_ray(ctx: StageContext) -> bool:
    return ctx.spec.ngram.estimator == "lmpipe" and not runs_locally(ctx)


def check(ctx: StageContext) -> None:
    spec: NgramSpec = ctx.spec.ngram
    if spec.order > KENLM_MODULE_MAX_ORDER:
        raise SpecError(f"ngram.order: bad value {spec.order}; the kenlm module loads orders up to {KENLM_MODULE_MAX_ORDER}")
    if spec.estimator == "lmplz":
        from lmpipe.lm.kenlm_tools import find_kenlm_binary

        find_kenlm_binary("lmplz")  # raises naming where it looked and how to build it
    if spec.limit_vocab is not None and not Path(spec.limit_vocab).is_file():
        raise MissingError(f"ngram.limit_vocab: {spec.limit_vocab}: no such file")


def inputs(ctx: StageContext) -> dict[str, Any]:
    """The word list the vocabulary is limited to, by content."""
    return {"limit_vocab": sha256_file(Path(ctx.spec.ngram.limit_vocab))} if ctx.spec.ngram.limit_vocab else {}


def summary(manifest: dict[str, Any]) -> list[str]:
    out = manifest["outputs"]
    rows = [", ".join(f"{k}-grams {n:,}" for k, n in out["ngrams"].items()) + f" -> {out['model']}"]
    rows.append(binary_text(out.get("binary")))
    for split, ev in manifest.get("perplexity", {}).items():
        rows.append(
            f"{split} perplexity {ev['perplexity']:.2f} (excl. OOV {ev['perplexity_excluding_oov']:.2f}), "
            f"{ev['tokens']:,} tokens, {ev['oov']:,} OOV"
        )
    return rows


def binary_text(state: dict[str, Any] | None) -> str:
    """What became of the KenLM binary, in words (the summary and the report's row details)."""
    if state is None:
        return "KenLM binary: not recorded (a run from before ngram.binary)"
    if state.get("built"):
        return f"KenLM binary: {state['kind']} {' '.join(state.get('options', []))}".rstrip()
    return f"KenLM binary: {state['missing']}" if "missing" in state else "KenLM binary: none (ngram.binary: none)"


def report_rows(manifest: dict[str, Any], run_dir: Path) -> list[Any]:
    """One row per scored split for ``pipelines.report_rows`` (parameters = n-gram entries of the ARPA)."""
    from lmpipe.pipelines.report_rows import hardware, perplexity_row

    settings = manifest["settings"]
    order = settings["order"]
    details = f"order {order}, {settings.get('estimator', 'lmpipe')} estimator" + (
        f", prune {settings['prune']}" if settings.get("prune") else ""
    )
    details += "; " + binary_text(manifest["outputs"].get("binary"))
    return [
        perplexity_row(
            manifest, run_dir, split, score, model=f"kn{order}", family="Kneser-Ney (modified, interpolated)",
            parameters=sum(int(n) for n in manifest["outputs"]["ngrams"].values()),
            scores=manifest.get("token_scores", {}).get(f"kn{order}", {}).get(split),
            train_seconds=manifest.get("timings", {}).get("seconds"), hardware=hardware(manifest, "cpu"), details=details,
        )  # fmt: skip
        for split, score in manifest.get("perplexity", {}).items()
    ]


# ------------------------------------------------------------------------------------------ counting
def _count_task(
    shard: str, order: int, store: DirectoryStore, partitions: int, index: int, piece: int = 0, pieces: int = 1
) -> dict[str, Any]:
    """Map side: count one slice of a token shard (rows ``piece/pieces`` of it, pre-aggregated) and split
    each order by the hash of its n-gram.  Slices in corpus order keep ``_word_rank``'s first positions."""
    inject("ngram.count")
    table = read_shard(shard)
    start, stop = table.num_rows * piece // pieces, table.num_rows * (piece + 1) // pieces
    table = table.slice(start, stop - start)
    counts = count_ngrams(table, order, unk="word")
    for k, t in counts.items():
        store.write(f"raw{k}", t, key_columns(k), partitions, f"{index:05d}")
    flat = np.asarray(table.column("ids").combine_chunks().flatten() if table.num_rows else [], dtype=np.uint32)
    words = flat[flat >= FIRST_WORD_ID]
    ids, first = np.unique(words, return_index=True)
    return {"tokens": int(len(flat)), "sentences": table.num_rows, "words": len(words), "ids": ids, "first": first}


def _merge_task(store: DirectoryStore, order: int, p: int, parts: int) -> int:
    """Reduce side: merge partition ``p``'s pieces of one order into ``counts{order}``, the estimator's input,
    and (order >= 2) split the merged table by its suffix into ``suffix{order}``, the adjust step's other
    input, while it is in hand (``kn.estimate(counts_by_suffix=True)``: no step re-reads the counts for it)."""
    inject("ngram.merge")

    def compute() -> int:
        merged = merge_counts([store.read(f"raw{order}", p, ngram_schema(order))])
        store.put(f"counts{order}", p, merged)
        if order >= 2:
            store.write(f"suffix{order}", merged, key_columns(order, 1), parts, f"{p:04d}")
        return merged.num_rows

    return kn.consuming(store, f"merge-{order}-{p}", [(f"raw{order}", p)], compute)  # the raw pieces go as read


def _file_sizes(*roots: Path) -> dict[str, int]:
    """Size of every file under ``roots`` (the stage's spill folders), by path: their sum is the stage's
    temporary disk, and what appeared or grew during a step is what the step wrote (its shuffle)."""
    sizes: dict[str, int] = {}
    for root in roots:
        for folder, _, files in os.walk(root):
            for name in files:
                path = os.path.join(folder, name)
                try:
                    sizes[path] = os.stat(path).st_size
                except FileNotFoundError:  # dropped while we walked
                    pass
    return sizes


def _by_dataset(sizes: dict[str, int], work: Path, counts: Path) -> dict[str, int]:
    """Bytes per dataset (``raw3``, ``adjctx5``, ...; the kept counts as ``counts``): where a step's disk is."""
    totals: dict[str, int] = {}
    for path, size in sizes.items():
        name = "counts" if path.startswith(str(counts)) else Path(path).relative_to(work).parts[0]
        totals[name] = totals.get(name, 0) + size
    return dict(sorted(totals.items()))


def _written(before: dict[str, int], after: dict[str, int]) -> int:
    """Bytes of the files that are new in ``after`` or changed size (a step writes new datasets)."""
    return sum(size for path, size in after.items() if before.get(path) != size)


def _arpa_task(store: DirectoryStore, k: int, p: int, top: int, work: str) -> tuple[str, int]:
    """Format partition ``p`` of MODEL[k] as ARPA lines into a text piece (the driver concatenates them)."""
    from lmpipe.lm.arpa import write_arpa_lines

    def compute() -> list[Any]:
        table = store.read(f"model{k}", p)
        if table is None or table.num_rows == 0:
            return ["", 0]
        vocab = read_table(Path(work) / "vocab.arrow").column("token").combine_chunks()
        piece = Path(work) / "arpa" / f"{k}-{p:05d}.txt"
        piece.parent.mkdir(parents=True, exist_ok=True)
        partial = piece.with_suffix(f".{os.getpid()}.tmp")  # a retried task never appends to a half piece
        with open(partial, "wb") as out:
            rows = write_arpa_lines(table, k, vocab, k < top, out)
        os.replace(partial, piece)
        return [str(piece), rows]

    # the model's partition goes once formatted: the scratch disk never holds the model and its text in full
    piece, rows = kn.consuming(store, f"arpa-{k}-{p}", [(f"model{k}", p)], compute)
    return piece, rows


class _InOrder:
    """The ARPA tasks' ``on_result``: each text piece is appended to the ARPA (and deleted) as soon as it and
    every piece before it have been formatted, while later pieces are still being formatted, so the scratch
    disk holds a few pieces rather than a second copy of the ARPA and the copy overlaps the formatting."""

    def __init__(self, writer: Any, calls: Sequence[tuple]) -> None:
        self.writer, self.orders = writer, [call[1] for call in calls]
        self.done: dict[int, tuple[str, int]] = {}
        self.next = 0

    def __call__(self, i: int, result: tuple[str, int]) -> None:
        self.done[i] = result
        while self.next in self.done:
            piece, rows = self.done.pop(self.next)
            if rows:
                self.writer.append_piece(self.orders[self.next], Path(piece), rows, consume=True)
            self.next += 1


# ------------------------------------------------------------------------------------------ driver
def _bytes_per_token(order: int) -> float:
    """Memory one counted token costs a task (its n-grams of every order, plus sort scratch)."""
    return sum(_BYTES_PER_NGRAM_ID * k + 8 for k in range(1, order + 1)) * _GROUP_OVERHEAD


def _slice_tokens(spec: NgramSpec) -> int:
    """The most tokens one count task may take: what fits ``memory_mb``, and at most ``_COUNT_SLICE_TOKENS``
    (shards are cut to this)."""
    return max(1, min(_COUNT_SLICE_TOKENS, int(spec.memory_mb * (1 << 20) / _bytes_per_token(spec.order))))


def _partitions(spec: NgramSpec, train_tokens: int, shard_tokens: int) -> int:
    """Partitions so one partition of the largest order fits ``memory_mb`` (``partition_count``: a multiple
    of ``ngram.partitions``); fail fast if a count task cannot."""
    budget = spec.memory_mb * (1 << 20)
    per_token = _bytes_per_token(spec.order)
    if shard_tokens * per_token > budget:
        need = math.ceil(shard_tokens * per_token / (1 << 20))
        raise SpecError(
            f"ngram.memory_mb: bad value {spec.memory_mb}; counting one token shard ({shard_tokens:,} tokens, "
            f"orders 1..{spec.order}) needs about {need} MB: increase ngram.memory_mb to {need} or lower tokenize.shard_mb"
        )
    return partition_count(math.ceil(train_tokens * per_token / budget), spec.partitions)


def _spill_compression(spec: NgramSpec, parts: int) -> str | None:
    """``ngram.spill_compression`` resolved: ``auto`` compresses (zstd) only out of core, where the counts forced
    more partitions than ``ngram.partitions`` -- zstd shrinks the kept counts ~6x (RESULTS.md) for some CPU."""
    if spec.spill_compression == "auto":
        return "zstd" if parts > spec.partitions else None
    return None if spec.spill_compression == "none" else spec.spill_compression


def _slices(tokens_per_shard: list[int], workers: int, max_tokens: int) -> list[int]:
    """Row slices per shard for the count tasks: about equal sizes so that every worker gets work even when
    the tokenizer wrote one large shard and one small one (``_SLICES_PER_WORKER`` slices per worker balance
    the tail and bound the memory of the concurrent tasks), and no slice over ``max_tokens`` (what one task's
    memory budget holds).  The counts do not depend on the slicing: every order's pieces are summed."""
    target = max(1, math.ceil(sum(tokens_per_shard) / max(1, _SLICES_PER_WORKER * workers)))
    return [
        max(1, round(tokens / target) if workers > 1 else 1, math.ceil(tokens / max_tokens)) for tokens in tokens_per_shard
    ]


def _count_calls(
    shards: list[Path], slices: list[int], order: int, store: DirectoryStore, parts: int
) -> list[tuple]:
    """One count task per row slice, numbered in corpus order (``_word_rank`` adds their positions up)."""
    calls, index = [], 0
    for shard, pieces in zip(shards, slices, strict=True):
        for piece in range(pieces):
            calls.append((str(shard), order, store, parts, index, piece, pieces))
            index += 1
    return calls


def _word_rank(results: list[dict[str, Any]], vocab_size: int) -> np.ndarray:
    """lmplz's word numbering (first appearance in corpus order) from per-shard first positions."""
    best = np.full(vocab_size, np.iinfo(np.int64).max, dtype=np.int64)
    offset = 0
    for r in results:
        np.minimum.at(best, r["ids"].astype(np.int64), r["first"].astype(np.int64) + offset)
        offset += r["words"]
    rank = np.full(vocab_size, np.iinfo(np.int64).max, dtype=np.int64)
    rank[:FIRST_WORD_ID] = np.arange(FIRST_WORD_ID)
    seen = np.flatnonzero(best[FIRST_WORD_ID:] < np.iinfo(np.int64).max) + FIRST_WORD_ID
    by_first = seen[np.argsort(best[seen], kind="stable")]
    rank[by_first] = np.arange(FIRST_WORD_ID, FIRST_WORD_ID + len(by_first))
    unseen = rank == np.iinfo(np.int64).max
    rank[unseen] = FIRST_WORD_ID + len(by_first) + np.arange(int(unseen.sum()))
    return rank


def _estimate(
    spec: NgramSpec, shards: list[Path], tokens_per_shard: list[int], vocab: Vocab, tmp_dir: Path, work: Path, workers: int,
    placement: Placement | None = None, *, local: bool = False,
) -> dict[str, Any]:
    """Count on tasks, then ``lm.kneser_ney.estimate`` with the same tasks as its map over a folder store:
    Ray tasks, or (``local``) threads of this process."""
    options = ray_options(parse_resources("ngram.resources", spec.resources))

    peak_datasets: dict[str, int] = {}  # bytes per dataset after the step with the most (spills and kept counts)
    peak_scratch = [0]  # the most spills after any step: what ngram.temp_dir must hold
    steps: list[dict[str, Any]] = []  # per map step: its tasks, seconds and bytes written (the scaling figures)

    def tasks(fn: Callable[..., Any], calls: Sequence[tuple], desc: str, on_result: Callable[[int, Any], None] | None = None) -> list[Any]:
        counts = tmp_dir / "counts"
        before = _file_sizes(work, counts)
        started = time.perf_counter()
        common = {"workers": workers, "desc": f"ngram: {desc}", "placement": placement, "on_result": on_result}
        if local:
            out = map_local(fn, calls, **common)
        else:
            out = map_tasks(fn, calls, options=options, **common)
        seconds = time.perf_counter() - started
        after = _file_sizes(work, counts)
        # between steps (a step's tasks release their inputs as they finish, see kn.consuming; the running
        # tasks' outputs in flight come on top: the bench samples the disk during the run)
        datasets = _by_dataset(after, work, counts)
        on_disk = sum(datasets.values())
        if on_disk > sum(peak_datasets.values()):
            peak_datasets.clear()
            peak_datasets.update(datasets)
        peak_scratch[0] = max(peak_scratch[0], on_disk - datasets.get("counts", 0))
        steps.append({
            "step": desc, "tasks": len(calls), "seconds": round(seconds, 3), "bytes_written": _written(before, after),
            "bytes_on_disk": on_disk,
        })  # fmt: skip
        return out

    n = spec.order
    slices = _slices(tokens_per_shard, workers, _slice_tokens(spec))
    largest = max(math.ceil(tokens / pieces) for tokens, pieces in zip(tokens_per_shard, slices, strict=True))
    parts = _partitions(spec, sum(tokens_per_shard), largest)
    # the counts are outputs of the stage: written where they stay; the scratch datasets go to `work`
    store = DirectoryStore(
        work, placed={f"counts{k}": tmp_dir / "counts" / f"order-{k}" for k in range(1, n + 1)},
        compression=_spill_compression(spec, parts),
    )  # fmt: skip
    logger.info("=== 1/3 Counting n-grams: %d shard(s), orders 1..%d, %d partitions ===", len(shards), n, parts)
    started = time.perf_counter()
    results = tasks(_count_task, _count_calls(shards, slices, n, store, parts), "count")
    rows = tasks(_merge_task, [(store, k, p, parts) for k in range(1, n + 1) for p in range(parts)], "merge")
    store.drop_receipts()  # after a step: no task of it can be retried any more
    count_seconds = time.perf_counter() - started
    ngram_counts = {k: sum(rows[(k - 1) * parts : k * parts]) for k in range(1, n + 1)}
    for k in range(1, n + 1):
        store.drop(f"raw{k}")

    config = kn.KneserNeyConfig(
        order=n, prune=spec.prune, discount_fallback=spec.discount_fallback,
        interpolate_unigrams=spec.interpolate_unigrams, vocab_pad=spec.vocab_pad,
    )  # fmt: skip
    limit = set(Path(spec.limit_vocab).read_text(encoding="utf-8").split()) if spec.limit_vocab else None
    logger.info("=== 2/3 Estimating the Kneser-Ney model (lm.kneser_ney, %d partitions) ===", parts)
    model = kn.estimate(
        None, vocab.tokens.to_pylist(), config, limit_vocab=limit, word_rank=_word_rank(results, len(vocab)),
        num_partitions=parts, map_fn=tasks, store=store, counts_by_suffix=True,
    )  # fmt: skip

    logger.info("=== 3/3 Writing the ARPA ===")
    from lmpipe.lm.arpa import ArpaWriter

    arpa = tmp_dir / ("model.arpa.gz" if spec.arpa_gzip else "model.arpa")
    arpa_started = time.perf_counter()
    write_table(work / "vocab.arrow", pa.table({"token": vocab.tokens}))  # read (mapped) by every ARPA task
    calls = [(store, k, q, n, str(work)) for k in range(1, n + 1) for q in range(parts)]
    with ArpaWriter(arpa, model.ngrams) as writer:
        tasks(_arpa_task, calls, "ARPA", on_result=_InOrder(writer, calls))
    store.drop_receipts()
    for k in range(1, n + 1):  # formatted: the model's partitions are no longer needed
        store.drop(f"model{k}")
    arpa_seconds = time.perf_counter() - arpa_started
    return {
        "arpa": arpa,
        "partitions": parts,
        "count_seconds": round(count_seconds, 3),
        "estimate_seconds": round(arpa_started - started - count_seconds, 3),
        "arpa_seconds": round(arpa_seconds, 3),
        "spill_compression": store.compression or "none",
        "peak_work_bytes": sum(peak_datasets.values()),  # spills and kept counts, between steps (not the ARPA)
        "peak_scratch_bytes": peak_scratch[0],  # spills only: what ngram.temp_dir must hold
        "peak_work_datasets": peak_datasets,  # bytes per dataset after the step of the peak
        "steps": steps,
        "raw_ngrams": ngram_counts,
        "ngrams": model.ngrams,
        "vocab_size_uniform": model.vocab_size,
        "discounts": {k: [d.d1, d.d2, d.d3] for k, d in model.discounts.items()},
        "counts_of_counts": {k: list(s.n) for k, s in model.stats.items()},
    }


def _estimate_lmplz(spec: NgramSpec, tokenize_dir: Path, vocab: Vocab, tmp_dir: Path, work: Path) -> dict[str, Any]:
    """Stream the training text (ids back to words) into KenLM's lmplz."""
    from lmpipe.lm.kenlm_tools import run_lmplz
    from lmpipe.pipelines.evaluate import split_sentences

    if vocab.counts[UNK_ID] > 0:
        raise SpecError(
            "ngram.estimator: lmplz refuses <unk> in its input, and the training shards hold <unk> "
            f"({int(vocab.counts[UNK_ID]):,} tokens cut by vocab.min_count/max_size); use estimator: lmpipe, "
            "or vocab.min_count: 1 and vocab.max_size: null"
        )
    args: list[str] = []
    if spec.prune:
        args += ["--prune", *map(str, spec.prune)]
    if spec.discount_fallback is not None:
        args += ["--discount_fallback", *map(str, spec.discount_fallback)]
    if not spec.interpolate_unigrams:
        args += ["--interpolate_unigrams", "0"]
    if spec.vocab_pad:
        args += ["--vocab_pad", str(spec.vocab_pad)]
    if spec.limit_vocab:
        args += ["--limit_vocab_file", spec.limit_vocab]
    arpa = tmp_dir / "model.arpa"
    log = run_lmplz(split_sentences(tokenize_dir.parent, "train"), spec.order, arpa, memory=f"{spec.memory_mb}M", extra_args=args, temp_prefix=f"{work}/")
    (tmp_dir / "lmplz.log").write_text(log, encoding="utf-8")
    from lmpipe.lm.arpa import read_arpa_counts

    ngrams = read_arpa_counts(arpa)
    if spec.arpa_gzip:
        import gzip

        with open(arpa, "rb") as src, gzip.open(tmp_dir / "model.arpa.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
        arpa.unlink()
        arpa = tmp_dir / "model.arpa.gz"
    return {"arpa": arpa, "ngrams": ngrams}


def execute(ctx: StageContext, run: StageRun) -> dict[str, Any]:
    spec, tmp_dir = ctx.spec.ngram, run.tmp_dir
    tokenize_dir = ctx.run_dir / "tokenize"
    vocab = Vocab.load(tokenize_dir / "vocab.tsv")
    shards = split_shards(tokenize_dir, "train")
    if not shards:
        raise InputError(f"{tokenize_dir}/train: the training split is empty; nothing to count")
    work = run.scratch_dir(spec.temp_dir, "ngram.temp_dir")  # lmplz's -T: spill and partition files
    placement = Placement()
    if spec.estimator == "lmplz":
        result = _estimate_lmplz(spec, tokenize_dir, vocab, tmp_dir, work)
    else:
        # Shard sizes come from the tokenize manifest, not from reading every shard again.
        listed = {item["path"]: item["tokens"] for item in read_manifest(ctx.run_dir, "tokenize")["outputs"]["shards"]["train"]}
        tokens_per_shard = [listed[str(s.relative_to(tokenize_dir))] for s in shards]
        local = runs_locally(ctx)
        result = _estimate(spec, shards, tokens_per_shard, vocab, tmp_dir, work, spec.workers, placement, local=local)
        result["executor"] = "local" if local else "ray"
    shutil.rmtree(work, ignore_errors=True)
    arpa: Path = result.pop("arpa")
    files = [{"path": arpa.name, "sha256": sha256_file(arpa), "bytes": arpa.stat().st_size}]
    model_file = arpa
    binary_state = {"kind": spec.binary if spec.build_binary else "none", "built": False}
    if spec.build_binary and spec.binary != "none":
        from lmpipe.lm.arpa import binary_options, maybe_build_binary
        from lmpipe.lm.kenlm_tools import BUILD_HINT

        options = binary_options(spec.binary_quantize, spec.binary_pointer_bits)
        binary = maybe_build_binary(arpa, tmp_dir / "model.binary", kind=spec.binary, extra_args=options)
        binary_state["options"] = options
        if binary is not None:
            files.append({"path": binary.name, "sha256": sha256_file(binary), "bytes": binary.stat().st_size})
            model_file = binary
            binary_state["built"] = True
        else:
            binary_state["missing"] = f"build_binary not found: no model.binary, the ARPA is the model ({BUILD_HINT})"
    perplexity = {}
    from lmpipe.pipelines.evaluate import evaluate_ngram

    evaluate_started = time.perf_counter()
    staged = ctx.run_dir  # the tokenize stage is already final; the model is still in tmp_dir
    name = f"kn{spec.order}"
    token_scores: dict[str, str] = {}
    for split in ("valid", "test"):
        if split_shards(tokenize_dir, split):
            rel = f"scores/{name}/{split}.arrow"  # per-token log10 p, for mixtures and significance tests
            perplexity[split] = evaluate_ngram(staged, split, model_file=model_file, scores_out=tmp_dir / rel)
            perplexity[split]["model"] = model_file.name
            token_scores[split] = rel
    result["evaluate_seconds"] = round(time.perf_counter() - evaluate_started, 3)
    return {
        "outputs": {"files": files, "model": arpa.name, "binary": binary_state, "ngrams": {str(k): v for k, v in result.pop("ngrams").items()}},
        "estimation": {k: ({str(o): v for o, v in val.items()} if isinstance(val, dict) else val) for k, val in result.items()},
        "perplexity": perplexity,
        "token_scores": {name: token_scores} if token_scores else {},
        "workers": placement.rows(),  # node, host, pid, peak RSS and task count of every Ray worker used
    }
