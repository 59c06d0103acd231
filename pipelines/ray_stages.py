"""The one way stage code reaches Ray: tasks (:func:`map_tasks`) and an actor pool (:func:`map_chunks`).

:func:`map_tasks` runs ``fn(*args)`` per call as Ray tasks, a bounded number in flight, with retries, a
progress bar and the placement of every task (the ngram and cooccur stages; ``lm.kneser_ney.estimate``
takes it as its ``map_fn``).  :func:`map_chunks` runs the pure per-chunk functions of
``pipelines.encode`` on an actor pool (the tokenize stage)::

    chunks (driver) -> ray.data.from_items -> map_batches(ChunkActor, ActorPoolStrategy(size=workers))
                    -> small result tables streamed back to the driver, one chunk at a time

The actor loads the tokenizer (and vocabulary) once in ``__init__``; each call handles one chunk and
returns a small table, so the driver holds vocabularies and statistics, never the corpus.  Only this
module and ``cluster/`` import ``ray``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from lmpipe.cluster.process import Placement, process_info, release_free_memory
from lmpipe.pipelines.core.faults import inject
from lmpipe.pipelines.encode import ChunkJob, encode_chunk, finalize_chunk, prepare_chunk, sample_chunk
from lmpipe.pipelines.ingest import Chunk, InputError
from lmpipe.pipelines.tokenizers import make_tokenizer

logger = logging.getLogger(__name__)

# Every result carries an ``error`` column: Ray serialises a worker's exception without its cause, so a
# bad-input error travels as data and the driver raises it with its own message (file, byte offset).
_ERROR = ("error", pa.string())
SAMPLE = pa.schema([("chunk", pa.int64()), ("hash", pa.uint64()), ("line", pa.string()), _ERROR])
COUNTS = pa.schema([("chunk", pa.int64()), ("token", pa.string()), ("count", pa.uint64()), _ERROR])
STATS = pa.schema([("chunk", pa.int64()), ("stats", pa.string()), ("piece_counts", pa.binary()), _ERROR])
SCHEMAS = {"sample": SAMPLE, "prepare": COUNTS, "finalize": STATS, "encode": STATS}


class ChunkActor:
    """One worker of a tokenize pass: mode ``prepare``/``finalize`` (word tokenizers) or ``sample``/``encode``
    (sentencepiece); see ``pipelines.encode``."""

    def __init__(self, job: ChunkJob, chunks: Sequence[Chunk], mode: str, sample_k: int = 0) -> None:
        self.job, self.chunks, self.mode, self.sample_k = job, list(chunks), mode, sample_k
        # Loaded once per actor; the sample pass runs before a sentencepiece model exists.
        self.tokenizer = make_tokenizer(job.tokenizer, job.sp_model) if mode == "encode" else None

    def __call__(self, batch: pa.Table) -> pa.Table:
        (index,) = batch.column("chunk").to_pylist()
        try:
            return self._process(self.chunks[index])
        except InputError as exc:
            schema = SCHEMAS[self.mode]
            row = {f.name: [None] for f in schema}
            row.update(chunk=[index], error=[str(exc)])
            return pa.table(row, schema=schema)

    def _process(self, chunk: Chunk) -> pa.Table:
        index = chunk.index
        inject(f"tokenize.{self.mode}")
        if self.mode == "sample":
            rows = sample_chunk(chunk, self.job, self.sample_k)
            return pa.table(
                {
                    "chunk": [index] * len(rows),
                    "hash": [h for h, _ in rows],
                    "line": [s for _, s in rows],
                    "error": [None] * len(rows),
                },
                schema=SAMPLE,
            )
        if self.mode == "prepare":
            counts = prepare_chunk(chunk, self.job)
            return pa.table(
                {
                    "chunk": np.full(counts.num_rows, index, np.int64),
                    "token": counts["token"],
                    "count": counts["count"],
                    "error": pa.nulls(counts.num_rows, pa.string()),
                },
                schema=COUNTS,
            )
        if self.mode == "finalize":
            stats = finalize_chunk(chunk, self.job)
        else:
            stats = encode_chunk(chunk, self.job, self.tokenizer)
        payload = {"counts": dict(stats.counts), "shards": stats.shards, "node": process_info()}
        pieces = b"" if stats.piece_counts is None else stats.piece_counts.astype("<u8").tobytes()
        return pa.table(
            {"chunk": [index], "stats": [json.dumps(payload)], "piece_counts": [pieces], "error": [None]},
            schema=STATS,
        )


def _traced(fn: Callable[..., Any], *args: Any) -> tuple[Any, dict[str, Any]]:
    """``fn(*args)`` and where it ran (``cluster.process.process_info``), for the manifest's ``workers``; the
    memory the task freed goes back to the OS (``release_free_memory``), so a reused worker does not keep it."""
    try:
        return fn(*args), process_info()
    finally:
        release_free_memory()


def map_tasks(
    fn: Callable[..., Any],
    calls: Sequence[tuple],
    *,
    workers: int,
    desc: str,
    options: dict[str, Any] | None = None,
    placement: Placement | None = None,
    retries: int = 2,
    on_result: Callable[[int, Any], None] | None = None,
) -> list[Any]:
    """Run ``fn(*args)`` for every tuple as Ray tasks, at most ``workers`` in flight; results in order.

    ``options`` are each task's resources (``cluster.process.ray_options``; default one CPU); ``placement``
    counts tasks per node and process; ``retries`` is Ray's ``max_retries`` (a task lost with its worker
    is rerun); ``on_result(i, result)`` is called in this thread as each task ends (in any order), so a
    consumer can use results while later tasks run.  A task's exception is raised again as itself, without
    Ray's wrapper.
    """
    import ray

    remote = ray.remote(max_retries=retries, **(options or {"num_cpus": 1}))(_traced)
    results: list[Any] = [None] * len(calls)
    pending: dict[Any, int] = {}
    todo = list(enumerate(calls))
    with tqdm(total=len(calls), desc=desc, unit="task", disable=None, leave=False) as bar:
        while todo or pending:
            while todo and len(pending) < workers:
                i, args = todo.pop(0)
                pending[remote.remote(fn, *args)] = i
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
            try:
                i = pending.pop(ref)
                results[i], where = ray.get(ref)
                if placement is not None:
                    placement.add(where)
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else None
                raise (cause or exc) from None
            if on_result is not None:
                on_result(i, results[i])
            bar.update(1)
    return results


def map_local(
    fn: Callable[..., Any],
    calls: Sequence[tuple],
    *,
    workers: int,
    desc: str,
    placement: Placement | None = None,
    on_result: Callable[[int, Any], None] | None = None,
) -> list[Any]:
    """:func:`map_tasks`'s contract on ``workers`` threads of this process: no Ray, no worker processes.

    For stages whose tasks spend their time in code that releases the GIL (numba ``nogil`` kernels, numpy
    sorts, Arrow IO); results in order, a task's exception raised as itself."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    lock = threading.Lock()

    def run(args: tuple) -> Any:
        result = fn(*args)
        if placement is not None:
            with lock:
                placement.add(process_info())
        return result

    try:
        with tqdm(total=len(calls), desc=desc, unit="task", disable=None, leave=False) as bar:
            results = []
            if workers <= 1 or len(calls) <= 1:
                outcomes = (run(args) for args in calls)
            else:
                pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lmpipe-task")
                futures = [pool.submit(run, args) for args in calls]
                outcomes = (future.result() for future in futures)
            try:
                for i, result in enumerate(outcomes):  # in order: on_result runs here, in the caller's thread
                    results.append(result)
                    if on_result is not None:
                        on_result(i, result)
                    bar.update(1)
            finally:
                if workers > 1 and len(calls) > 1:
                    pool.shutdown(wait=True, cancel_futures=True)
            return results
    finally:
        # The tasks' threads share this process, each with its own heap arena: what a step freed is given back
        # once the step ends (per task would re-fault every task's working set: +30% system time measured).
        release_free_memory()


def unwrap_error(exc: BaseException) -> BaseException:
    """The user-facing error inside Ray's wrappers (RayTaskError, UserCodeException), if there is one."""
    from lmpipe.pipelines.ingest import InputError

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, InputError):
            return current
        cause = getattr(current, "cause", None)
        current = cause if isinstance(cause, BaseException) else (current.__cause__ or current.__context__)
    return exc


def map_chunks(
    chunks: Sequence[Chunk],
    job: ChunkJob,
    mode: str,
    *,
    workers: int,
    sample_k: int = 0,
    ray_options: dict[str, object] | None = None,
) -> Iterator[pa.Table]:
    """Run one pass over all chunks on ``workers`` actors; yields each chunk's result table.
    ``ray_options`` are each actor's resources (``cluster.process.ray_options``; default one CPU)."""
    import ray.data

    if not chunks:
        return
    ds = ray.data.from_items([{"chunk": c.index} for c in chunks], override_num_blocks=len(chunks))
    ds = ds.map_batches(
        ChunkActor,
        fn_constructor_kwargs={"job": job, "chunks": list(chunks), "mode": mode, "sample_k": sample_k},
        batch_size=1,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=max(1, min(workers, len(chunks)))),
        **(ray_options or {"num_cpus": 1}),
    )
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            errors = batch.column("error").drop_null()
            if len(errors):
                raise InputError(errors[0].as_py())
            yield batch.drop_columns(["error"])
    except InputError:
        raise
    except Exception as exc:  # re-raise the user-facing error without Ray's wrapping
        inner = unwrap_error(exc)
        if inner is not exc:
            raise inner from None
        raise


class ScoreActor:
    """One worker of ``lmpipe score``: the model loaded once (``pipelines.scoring.ChunkScorer``), one chunk a
    call.  The same class runs in-process when one worker is asked for, so both paths are one code path."""

    def __init__(self, job: Any, chunks: Sequence[Chunk]) -> None:
        from lmpipe.pipelines.scoring import ChunkScorer

        self.chunks = list(chunks)
        self.scorer = ChunkScorer(job)

    def __call__(self, batch: pa.Table) -> pa.Table:
        from lmpipe.pipelines.core.errors import UserError
        from lmpipe.pipelines.scoring import error_table

        (index,) = batch.column("chunk").to_pylist()
        try:
            return self.scorer(self.chunks[index])
        except UserError as exc:
            return error_table(self.chunks[index], str(exc))


def map_score_chunks(
    chunks: Sequence[Chunk], job: Any, *, workers: int, ray_options: dict[str, object] | None = None
) -> Iterator[pa.Table]:
    """Score chunks on ``workers`` actors (``workers`` = 1: in this process, no Ray); tables in chunk order."""
    if workers <= 1:
        actor = ScoreActor(job, chunks)
        tables: Iterator[pa.Table] = (actor(pa.table({"chunk": [c.index]})) for c in chunks)
    else:
        import ray.data

        ds = ray.data.from_items([{"chunk": c.index} for c in chunks], override_num_blocks=len(chunks))
        ds = ds.map_batches(
            ScoreActor,
            fn_constructor_kwargs={"job": job, "chunks": list(chunks)},
            batch_size=1,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=max(1, min(workers, len(chunks)))),
            **(ray_options or {"num_cpus": 1}),
        )
        tables = ds.iter_batches(batch_size=None, batch_format="pyarrow")
    for table in tables:
        errors = table.column("error").drop_null()
        if len(errors):
            raise InputError(errors[0].as_py())
        yield table.drop_columns(["error"])
