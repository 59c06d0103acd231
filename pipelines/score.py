"""``lmpipe score``: perplexity of new text under a run's model, per input line, and a perplexity filter.

    lmpipe score runs/ptb --model kn5 --input web.txt --out web.scores.parquet --keep-fraction 0.3 --kept web.kept.txt

The input is cut into chunks (``ingest.plan_chunks``, as the tokenize stage cuts its corpus) and each chunk is
scored by ``pipelines.scoring.ChunkScorer`` -- on a Ray actor pool with ``--workers N`` (the model loaded once
per actor), in this process with one worker.  Chunks come back in order, so the output does not depend on the
number of workers.  Output: one record per input line (``line`` numbered from 1 over all inputs in order,
``tokens`` scored with ``</s>``, ``oov``, ``log10_prob``, ``ppl``; a rejected line -- blank, too long -- has
``tokens`` 0 and ``ppl`` null), as JSONL or Parquet by the ``--out`` suffix (JSONL on stdout without one), and
a corpus summary with KenLM's whole-corpus accounting (``lm.perplexity.CorpusScore``), printed and written
beside the output as ``<out stem>.summary.json``.  On the run's test file with its n-gram model the summary's
figures are ``lmpipe eval``'s.

With ``--keep-below PPL`` (lines whose perplexity is below PPL) or ``--keep-fraction F`` (the fraction F of
scored lines with the lowest perplexity, ties broken by line number), ``--kept PATH`` receives the kept input
lines unchanged, byte for byte (Parquet inputs: the kept rows), as CCNet filters web text (Wenzek et al. 2020).
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lmpipe.lm.perplexity import CorpusScore
from lmpipe.pipelines.core.errors import UserError
from lmpipe.pipelines.ingest import Source, find_sources, plan_chunks
from lmpipe.pipelines.scoring import ScoreJob, model_stages, summary_json
from lmpipe.pipelines.spec import CorpusSpec

logger = logging.getLogger(__name__)

#: The output records (Parquet schema; JSONL has the same fields in this order).
RECORDS = pa.schema(
    [
        ("line", pa.uint64()),
        ("tokens", pa.uint32()),
        ("oov", pa.uint32()),
        ("log10_prob", pa.float64()),
        ("ppl", pa.float64()),
    ]
)
DEFAULT_CHUNK_MB = 16.0


def _check_options(out: Path | None, keep_below: float | None, keep_fraction: float | None, kept: Path | None) -> None:
    if keep_below is not None and keep_fraction is not None:
        raise UserError("--keep-below and --keep-fraction: give one of them, not both")
    if kept is not None and keep_below is None and keep_fraction is None:
        raise UserError("--kept: needs --keep-below PPL or --keep-fraction F to say which lines to keep")
    if (keep_below is not None or keep_fraction is not None) and kept is None:
        raise UserError("--keep-below/--keep-fraction: give --kept PATH for the kept lines")
    if keep_fraction is not None and not 0.0 < keep_fraction <= 1.0:
        raise UserError(f"--keep-fraction: bad value {keep_fraction}; allowed: 0 < F <= 1")
    if keep_below is not None and not keep_below > 0:
        raise UserError(f"--keep-below: bad value {keep_below}; allowed: a perplexity > 0")
    if out is not None and out.suffix not in (".jsonl", ".parquet"):
        raise UserError(f"--out {out}: unknown output format {out.suffix!r}; allowed: .jsonl or .parquet")


def _in_order(tables: Iterator[pa.Table]) -> Iterator[pa.Table]:
    """Each chunk's rows, in chunk order, whatever order (or batching) the pool returned them in."""
    pending: dict[int, pa.Table] = {}
    want = 0
    for table in tables:
        chunk_ids = np.asarray(table.column("chunk"))
        for c in np.unique(chunk_ids):
            pending[int(c)] = table.filter(pa.array(chunk_ids == c))
        while want in pending:
            yield pending.pop(want)
            want += 1
    for c in sorted(pending):
        yield pending[c]


def _records(table: pa.Table, first_line: int) -> pa.Table:
    tokens = np.asarray(table.column("tokens"), np.int64)
    log10 = np.asarray(table.column("log10_prob"), np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ppl = np.power(10.0, -log10 / tokens)
    return pa.table(
        {
            "line": np.arange(first_line, first_line + len(tokens), dtype=np.uint64),
            "tokens": table.column("tokens"),
            "oov": table.column("oov"),
            "log10_prob": log10,
            "ppl": pa.array(ppl, pa.float64(), mask=tokens == 0),
        },
        schema=RECORDS,
    )


class _RecordSink:
    """JSONL (a file or stdout) or Parquet, written under a temporary name and renamed when complete."""

    def __init__(self, out: Path | None) -> None:
        self.out = out
        self.tmp = None if out is None else out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
        self.parquet = None
        self.text: IO[str] | None = None
        if out is None:
            self.text = sys.stdout
        elif out.suffix == ".parquet":
            out.parent.mkdir(parents=True, exist_ok=True)
            self.parquet = pq.ParquetWriter(str(self.tmp), RECORDS)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            self.text = open(self.tmp, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, records: pa.Table) -> None:
        if self.parquet is not None:
            self.parquet.write_table(records)
            return
        assert self.text is not None
        cols = [records.column(name).to_pylist() for name in RECORDS.names]
        self.text.writelines(
            json.dumps(dict(zip(RECORDS.names, row, strict=True))) + "\n" for row in zip(*cols, strict=True)
        )

    def close(self) -> None:
        if self.parquet is not None:
            self.parquet.close()
        elif self.text is not None and self.out is not None:
            self.text.close()
        if self.out is not None:
            os.replace(self.tmp, self.out)


def summary_path(out: Path) -> Path:
    """Where the summary JSON of ``out`` goes: ``scores.parquet`` -> ``scores.summary.json``."""
    return out.with_name(f"{out.stem}.summary.json")


def kept_mask(ppl: np.ndarray, keep_below: float | None, keep_fraction: float | None) -> np.ndarray:
    """Lines to keep: perplexity below ``keep_below``, or the ``keep_fraction`` of scored lines with the lowest
    perplexity (ties by line number).  Unscored lines (NaN) are never kept."""
    scored = ~np.isnan(ppl)
    if keep_below is not None:
        return scored & (ppl < keep_below)
    assert keep_fraction is not None
    idx = np.flatnonzero(scored)
    k = int(math.floor(keep_fraction * len(idx) + 1e-9))
    order = idx[np.lexsort((idx, ppl[idx]))][:k]
    mask = np.zeros(len(ppl), dtype=bool)
    mask[order] = True
    return mask


def _open_bytes(source: Source):
    import pyarrow.fs as pafs

    fs, path = (pafs.FileSystem.from_uri(source.uri) if "://" in source.uri else (pafs.LocalFileSystem(), source.uri))
    raw = fs.open_input_stream(path, compression=None)
    return gzip.GzipFile(fileobj=raw) if source.compression == "gzip" else raw


def write_kept(sources: Sequence[Source], keep: np.ndarray, path: Path) -> int:
    """The kept input lines, unchanged (their own bytes and line ends), atomically; Parquet: the kept rows."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    line = 0
    if all(s.format == "parquet" for s in sources):
        tables = []
        for s in sources:
            table = pq.read_table(s.uri)
            tables.append(table.filter(pa.array(keep[line : line + table.num_rows])))
            line += table.num_rows
        pq.write_table(pa.concat_tables(tables), str(tmp))
    elif any(s.format == "parquet" for s in sources):
        raise UserError("--kept: the inputs mix Parquet and text files; filter them in separate runs")
    else:
        with open(tmp, "wb") as sink:
            for s in sources:
                with _open_bytes(s) as handle:
                    for raw in _lines(handle):
                        if keep[line]:
                            sink.write(raw)
                        line += 1
    os.replace(tmp, path)
    return int(keep.sum())


def _lines(handle) -> Iterator[bytes]:
    """Physical lines of a byte stream with their line ends, as ``ingest`` cuts them (on ``\\n`` only)."""
    carry = b""
    while True:
        block = handle.read(1 << 22)
        if not block:
            break
        parts = (carry + block).split(b"\n")
        carry = parts.pop()
        for p in parts:
            yield p + b"\n"
    if carry:
        yield carry


def score_files(run_dir: Path, model: str, inputs: Sequence[str | Path], **options: Any) -> dict[str, Any]:
    """Score ``inputs`` with the run's ``model`` (options: :func:`_score_files`) holding the run lock shared: the
    whole scoring sees one run's model and vocabulary, and a run that would replace them waits its turn
    (refused, naming this reader), as ``lmpipe embeddings export`` reads."""
    from lmpipe.pipelines.runlock import RunLock

    with RunLock(Path(run_dir), shared=True):
        return _score_files(run_dir, model, inputs, **options)


def _score_files(
    run_dir: Path, model: str, inputs: Sequence[str | Path], *, fmt: str = "auto", text_field: str = "text",
    out: Path | None = None, keep_below: float | None = None, keep_fraction: float | None = None,
    kept: Path | None = None, workers: int = 1, device: str = "cpu", chunk_mb: float = DEFAULT_CHUNK_MB,
    address: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Score ``inputs`` with the run's ``model``; write the records (and kept lines); the corpus summary."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else None
    kept = Path(kept) if kept is not None else None
    _check_options(out, keep_below, keep_fraction, kept)
    if workers < 1:
        raise UserError(f"--workers: bad value {workers}; allowed: 1 or more")
    stages = model_stages(run_dir)
    if model not in stages:
        raise UserError(f"--model {model}: the run {run_dir} has no such model; scorable models: {sorted(stages) or 'none'}")
    if not inputs:
        raise UserError("--input: give one or more files to score")
    job = ScoreJob.for_run(run_dir, model, text_field, device)
    corpus = CorpusSpec(train=tuple(str(p) for p in inputs), format=fmt, text_field=text_field)  # type: ignore[arg-type]
    sources = find_sources(corpus)["train"]
    chunks = plan_chunks(sources, max(1, int(chunk_mb * (1 << 20))))
    from lmpipe.pipelines.ray_stages import map_score_chunks

    options = None
    if workers > 1:
        from lmpipe.cluster.connect import connect

        connect(address, quiet=True)
        options = {"num_cpus": 1, **({"num_gpus": 1.0 / workers} if device.startswith("cuda") else {})}
    logger.info("score: %s on %d input(s), %d chunk(s), %d worker(s)", model, len(sources), len(chunks), workers)
    total = CorpusScore()
    sink = _RecordSink(out)
    ppl_parts: list[np.ndarray] = []
    lines = 0
    try:
        for table in _in_order(map_score_chunks(chunks, job, workers=workers, ray_options=options)):
            records = _records(table, lines + 1)
            sink.write(records)
            lines += records.num_rows
            total = total.merge(
                CorpusScore(
                    float(np.sum(table.column("log10_prob"))), int(np.sum(table.column("tokens"))),
                    int(np.sum(table.column("sentences"))), int(np.sum(table.column("oov"))),
                    float(np.sum(table.column("oov_log10_prob"))),
                )
            )  # fmt: skip
            ppl_parts.append(np.asarray(records.column("ppl").fill_null(math.nan), np.float64))
    finally:
        sink.close()
    ppl = np.concatenate(ppl_parts) if ppl_parts else np.zeros(0)
    summary: dict[str, Any] = {
        "model": model,
        "stage": stages[model],
        "inputs": [s.uri for s in sources],
        "lines": lines,
        "lines_scored": int((~np.isnan(ppl)).sum()),
        "workers": workers,
        "chunks": len(chunks),
        **total.to_dict(),
    }
    if stages[model] != "ngram":
        summary["hidden_state"] = "reset at every line (KenLM's reset at <s>)"
    if kept is not None:
        keep = kept_mask(ppl, keep_below, keep_fraction)
        summary["filter"] = {
            "keep_below": keep_below, "keep_fraction": keep_fraction, "kept": write_kept(sources, keep, kept),
            "max_kept_ppl": float(ppl[keep].max()) if keep.any() else None, "path": str(kept),
        }  # fmt: skip
    if out is not None:
        tmp = summary_path(out).with_name(f".{summary_path(out).name}.tmp")
        tmp.write_text(summary_json(summary), encoding="utf-8")
        os.replace(tmp, summary_path(out))
    return summary


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The summary as the CLI prints it (the same wording as ``lmpipe eval``)."""
    rows = [
        f"{summary['model']}: perplexity {summary['perplexity']:.2f} including OOVs, "
        f"{summary['perplexity_excluding_oov']:.2f} excluding; OOVs {summary['oov']:,} "
        f"({100 * summary['oov_rate']:.2f}%); tokens {summary['tokens']:,} in {summary['sentences']:,} sentences",
        f"lines {summary['lines']:,}, scored {summary['lines_scored']:,} ({summary['chunks']} chunk(s), "
        f"{summary['workers']} worker(s))",
    ]
    if "filter" in summary:
        f = summary["filter"]
        rows.append(f"kept {f['kept']:,} line(s) -> {f['path']}")
    return rows
