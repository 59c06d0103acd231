"""The tokenize stage: raw text -> vocabulary + token shards per split, on a Ray actor pool.

Input: ``corpus.train/valid/test`` (files, directories, globs, URIs, ``data:`` references).
Output (``RUN/tokenize/``): ``vocab.tsv`` (schemas.VOCAB order), ``tokenizer.model`` (sentencepiece
only), ``<split>/part-<chunk>-<k>.arrow`` shards (schemas.TOKENS, input order), ``manifest.json`` with
line accounting ``lines_read = lines_kept + sum(rejected_*)`` for every split together.

Passes (each a Ray Data ``map_batches`` over chunks, see ``pipelines.encode``):

    === 1/3 vocabulary ===   tokenize each chunk once to chunk-local ids + partial counts -> vocabulary
                             (sentencepiece: sample lines, train the model in a Ray task)
    === 2/3 encode ===       local ids -> global ids (sentencepiece: encode), shards written by workers
    === 3/3 summary ===      gather per-chunk statistics, write vocab.tsv
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from lmpipe.cluster.process import ray_options
from lmpipe.pipelines.core.files import sha256_file
from lmpipe.pipelines.core.schemas import EOS_ID
from lmpipe.pipelines.core.vocab import TokenCountAccumulator, Vocab, build_vocab
from lmpipe.pipelines.encode import LOCAL_DIR, ChunkJob
from lmpipe.pipelines.ingest import InputError, find_sources, plan_chunks
from lmpipe.pipelines.ray_stages import map_chunks, map_tasks
from lmpipe.pipelines.rundir import StageRun
from lmpipe.pipelines.spec import TokenizeSpec, parse_resources
from lmpipe.pipelines.stages import Stage, StageContext
from lmpipe.pipelines.tokenizers import SentencePieceTokenizer, train_sentencepiece

logger = logging.getLogger(__name__)

#: The corpus, its normalisation, tokenizer and vocabulary cut shape the output as much as its own section.
STAGE = Stage(name="tokenize", settings=TokenizeSpec, shared=("corpus", "normalize", "tokenizer", "vocab"))


def _sources(ctx: StageContext):
    return find_sources(ctx.spec.corpus, mirror=ctx.mirror)


def check(ctx: StageContext) -> None:
    sources = _sources(ctx)
    if all(s.size == 0 for s in sources["train"]):
        raise InputError(f"corpus.train: every input is empty: {[s.uri for s in sources['train']]}")


def inputs(ctx: StageContext) -> dict[str, Any]:
    """Each split's source files by identity (uri, size, modification time): cheap for a large corpus."""
    return {split: [s.fingerprint() for s in items] for split, items in _sources(ctx).items()}


def _banner(step: int, total: int, text: str) -> None:
    logger.info("=== %d/%d %s ===", step, total, text)


def _progress(total: int, desc: str) -> tqdm:
    return tqdm(total=total, desc=f"tokenize: {desc}", unit="chunk", disable=None, leave=False)


def execute(ctx: StageContext, run: StageRun) -> dict[str, Any]:

    spec, tmp_dir = ctx.spec, run.tmp_dir
    sources = _sources(ctx)
    all_sources = [s for split in ("train", "valid", "test") for s in sources[split]]
    shard_bytes = max(1, int(spec.tokenize.shard_mb * (1 << 20)))
    chunks = plan_chunks(all_sources, shard_bytes)
    train_chunks = [c for c in chunks if c.source.split == "train"]
    workers = spec.tokenize.workers
    options = ray_options(parse_resources("tokenize.resources", spec.tokenize.resources))
    job = ChunkJob(
        corpus=spec.corpus,
        normalize=spec.normalize,
        tokenizer=spec.tokenizer,
        shard_bytes=shard_bytes,
        compression=spec.tokenize.compression,
        out_dir=str(tmp_dir),
    )
    logger.info("tokenize: %d source(s), %d chunk(s), %d worker(s)", len(all_sources), len(chunks), workers)

    # --- 1/3 vocabulary
    sp_model = None
    if spec.tokenizer.kind == "sentencepiece":
        _banner(1, 3, f"Sampling {spec.tokenizer.sp_sample_lines} lines and training sentencepiece")
        sample: list[tuple[int, str]] = []
        with _progress(len(train_chunks), "sample") as bar:
            for table in map_chunks(
                train_chunks, job, "sample", workers=workers, sample_k=spec.tokenizer.sp_sample_lines, ray_options=options
            ):
                sample.extend(zip(table["hash"].to_pylist(), table["line"].to_pylist(), strict=True))
                bar.update(1)
        if not sample:
            raise InputError("corpus.train: no usable lines to train sentencepiece on")
        lines = [line for _, line in sorted(sample)[: spec.tokenizer.sp_sample_lines]]
        # One task (Ray's default three retries), so the training runs where the resources say.
        (sp_model,) = map_tasks(
            train_sentencepiece, [(lines, spec.tokenizer)], workers=1, desc="tokenize: sentencepiece", options=options, retries=3
        )
        (tmp_dir / "tokenizer.model").write_bytes(sp_model)
        pieces = SentencePieceTokenizer(sp_model).pieces()
        vocab_tokens = pa.array(pieces, pa.string())
        logger.info("sentencepiece: %d pieces trained on %d lines", len(pieces), len(lines))
    else:
        _banner(1, 3, "Tokenizing and counting tokens for the vocabulary")
        acc = TokenCountAccumulator()
        with _progress(len(chunks), "prepare") as bar:
            for table in map_chunks(chunks, job, "prepare", workers=workers, ray_options=options):
                acc.add(table.drop_columns(["chunk"]))
                bar.update(1)
        counts = acc.result()
        if counts.num_rows == 0:
            raise InputError(f"corpus.train: no tokens in the training input {[s.uri for s in sources['train']]}")
        vocab = build_vocab(counts, min_count=spec.vocab.min_count, max_size=spec.vocab.max_size, sentences=0)
        vocab_tokens = vocab.tokens
        logger.info("vocabulary: %d types (%d distinct in train)", len(vocab), counts.num_rows)

    # --- 2/3 encode
    _banner(2, 3, "Mapping to vocabulary ids and writing shards")
    job = dataclasses.replace(job, sp_model=sp_model, vocab_tokens=vocab_tokens)
    per_chunk: dict[int, dict[str, Any]] = {}
    piece_counts = np.zeros(len(vocab_tokens), np.uint64)
    with _progress(len(chunks), "encode") as bar:
        for table in map_chunks(
            chunks, job, "encode" if sp_model is not None else "finalize", workers=workers, ray_options=options
        ):
            for row in table.to_pylist():
                per_chunk[row["chunk"]] = json.loads(row["stats"])
                if row["piece_counts"]:
                    piece_counts += np.frombuffer(row["piece_counts"], dtype="<u8")
            bar.update(1)

    shutil.rmtree(tmp_dir / LOCAL_DIR, ignore_errors=True)

    # --- 3/3 summary
    _banner(3, 3, "Writing the vocabulary and the manifest")
    accounting: Counter = Counter()
    shards: dict[str, list[dict]] = {"train": [], "valid": [], "test": []}
    nodes: dict[str, dict[str, Any]] = {}
    for index in sorted(per_chunk):
        stats = per_chunk[index]
        accounting.update(stats["counts"])
        for split, items in stats["shards"].items():
            shards[split].extend(items)
        node = stats["node"]
        entry = nodes.setdefault(f"{node['node_id']}:{node['pid']}", {**node, "chunks": 0})
        entry["chunks"] += 1
        entry["peak_rss_mb"] = max(entry["peak_rss_mb"], node["peak_rss_mb"])
    if accounting["train_sentences"] == 0:
        raise InputError(f"corpus.train: no sentence survived normalisation and tokenization (accounting: {dict(accounting)})")
    rejected = {k: v for k, v in accounting.items() if k.startswith("rejected_")}
    if accounting["lines_read"] != accounting["lines_kept"] + sum(rejected.values()):
        raise RuntimeError(f"line accounting does not balance: {dict(accounting)}")  # a bug, never user error
    if sp_model is not None:
        piece_counts[EOS_ID] = accounting["train_sentences"]
        vocab = Vocab(vocab_tokens, piece_counts)
    else:
        counts_arr = vocab.counts.copy()
        counts_arr[EOS_ID] = accounting["train_sentences"]
        vocab = Vocab(vocab.tokens, counts_arr)
    vocab.save(tmp_dir / "vocab.tsv")
    splits = {
        split: {
            "sentences": accounting[f"{split}_sentences"],
            "tokens": accounting[f"{split}_tokens"],
            "oov_tokens": accounting[f"{split}_oov_tokens"],
            "text_bytes": accounting[f"{split}_text_bytes"],  # UTF-8 bytes of the kept lines + newlines
            "shards": len(shards[split]),
        }
        for split in ("train", "valid", "test")
    }
    files = [{"path": "vocab.tsv", "rows": len(vocab), "sha256": sha256_file(tmp_dir / "vocab.tsv")}]
    if sp_model is not None:
        files.append({"path": "tokenizer.model", "sha256": sha256_file(tmp_dir / "tokenizer.model")})
    lines = {
        "lines_read": accounting["lines_read"],
        "lines_kept": accounting["lines_kept"],
        "lines_rejected": {k.removeprefix("rejected_"): v for k, v in sorted(rejected.items())},
        "lines_utf8_replaced": accounting["lines_utf8_replaced"],
        "specials": {k: v for k, v in sorted(accounting.items()) if k.startswith("specials_")},
    }
    return {
        "outputs": {"files": files, "shards": shards, "vocab_size": len(vocab), "splits": splits},
        "lines": lines,
        "sources": [{"index": s.index, "split": s.split, "uri": s.uri, "format": s.format, "bytes": s.size} for s in all_sources],
        "workers": list(nodes.values()),
    }


def summary(manifest: dict[str, Any]) -> list[str]:
    out = manifest["outputs"]
    lines = manifest["lines"]
    rows = [f"vocabulary {out['vocab_size']:,} types"]
    for split, s in out["splits"].items():
        if s["sentences"]:
            rows.append(
                f"{split:<5} {s['sentences']:>10,} sentences {s['tokens']:>12,} tokens "
                f"{s['oov_tokens']:>9,} OOV  {s['shards']} shard(s)"
            )
    rej = ", ".join(f"{k} {v:,}" for k, v in lines["lines_rejected"].items()) or "none"
    rows.append(f"lines read {lines['lines_read']:,}, kept {lines['lines_kept']:,}, rejected: {rej}")
    return rows
