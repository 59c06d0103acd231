"""The per-chunk work of the tokenize stage, as pure functions (no Ray): sample, count, encode.

Each function takes one :class:`~pipelines.ingest.Chunk` and a :class:`ChunkJob` (everything a worker
needs, picklable), and returns a small result for the driver.  The Ray wrapper in ``pipelines.ray_stages``
only calls these, so they are tested directly on chunks without a cluster.

Passes of the stage::

    word tokenizers
      prepare   chunk -> tokenized once, dictionary-encoded to _chunks/  -> partial train counts -> vocabulary
      finalize  _chunks/ local ids -> global ids, shards written          -> per-chunk statistics
    sentencepiece
      sample    chunk -> bottom-k lines by hash                          -> driver trains the model
      encode    chunk -> piece ids, shards written                       -> per-chunk statistics
"""

from __future__ import annotations

import heapq
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lmpipe.pipelines.core.schemas import SPECIALS, TOKENS, UNK_ID
from lmpipe.pipelines.core.shards import ShardWriter
from lmpipe.pipelines.core.vocab import merge_token_counts
from lmpipe.pipelines.ingest import Chunk, InputError, LineBatch, read_chunk, splitmix64
from lmpipe.pipelines.spec import CorpusSpec, NormalizeSpec, TokenizerSpec
from lmpipe.pipelines.tokenizers import (
    RENAMED_SPECIALS,
    SentencePieceTokenizer,
    handle_literal_specials,
    list_parts,
    make_tokenizer,
)

SPLITS = ("train", "valid", "test")
#: Lines per sentencepiece encode call (its Python-list interface costs ~1 KB per line in flight).
SP_SLICE_LINES = 65_536


@dataclass(frozen=True, slots=True)
class ChunkJob:
    """Everything a worker needs to process chunks; shipped once per actor."""

    corpus: CorpusSpec
    normalize: NormalizeSpec
    tokenizer: TokenizerSpec
    sp_model: bytes | None = None
    vocab_tokens: pa.Array | None = None
    out_dir: str | None = None  # the stage's temporary directory (shared storage on a cluster)
    shard_bytes: int = 64 << 20
    compression: str = "zstd"


@dataclass(slots=True)
class Encoded:
    """Tokenized lines of one split of one batch."""

    tokens: pa.ListArray  # list<string>, or list<uint32> for sentencepiece
    positions: np.ndarray
    docs: np.ndarray


@dataclass(slots=True)
class ChunkStats:
    chunk: int
    counts: Counter = field(default_factory=Counter)
    shards: dict[str, list[dict]] = field(default_factory=dict)
    piece_counts: np.ndarray | None = None  # sentencepiece: train counts per id


def _split_of(chunk: Chunk, positions: np.ndarray, docs: np.ndarray, corpus: CorpusSpec) -> np.ndarray:
    """0/1/2 = train/valid/test for each line: the source's split, or a hash bucket of doc or line."""
    if corpus.split is None:
        return np.full(len(positions), SPLITS.index(chunk.source.split), np.int8)
    frac = corpus.split
    if frac.unit == "document":
        keys = docs
    else:
        keys = splitmix64(np.full(len(positions), chunk.source.doc_hash, np.uint64) ^ positions)
    u = (splitmix64(keys ^ np.uint64(frac.seed)) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    out = np.zeros(len(positions), np.int8)
    out[u < frac.valid + frac.test] = 2
    out[u < frac.valid] = 1
    return out


def _text_level_specials(text: pa.StringArray, policy: str) -> tuple[pa.StringArray, Counter, int | None]:
    """Literal specials for sentencepiece, which would otherwise cut ``<unk>`` into pieces."""
    pattern = r"(^|\s)(<unk>|<s>|</s>)(\s|$)"
    hit = np.asarray(pc.match_substring_regex(text, pattern), dtype=bool)
    if not hit.any():
        return text, Counter(), None
    if policy == "error":
        return text, Counter(), int(np.flatnonzero(hit)[0])
    counts: Counter = Counter()
    lines = text.to_pylist()
    for i in np.flatnonzero(hit):
        words = lines[i].split()
        if policy == "rename":
            counts["specials_renamed"] += sum(w in SPECIALS for w in words)
            words = [RENAMED_SPECIALS.get(w, w) for w in words]
        else:
            counts["specials_dropped"] += sum(w in SPECIALS[1:] for w in words)
            counts["specials_mapped_unk"] += sum(w == SPECIALS[0] for w in words)
            words = [w for w in words if w not in SPECIALS[1:]]  # sentencepiece maps <unk> text itself poorly
        lines[i] = " ".join(words)
    return pa.array(lines, pa.string()), counts, None


def _special_error(chunk: Chunk, position: int) -> InputError:
    what = "row" if chunk.source.format == "parquet" else "byte offset"
    return InputError(
        f"{chunk.source.uri}: {what} {position}: the text holds a literal <s>, </s> or <unk>; set "
        "normalize.literal_specials to 'map' (make <unk> the unknown word) or 'rename' (keep them as ordinary words)"
    )


def tokenize_text(text: pa.StringArray, tokenizer, literal_specials: str) -> tuple[pa.ListArray, Counter, int | None]:
    """Normalised lines -> tokens (word tokenizers: ``list<string>``) or piece ids (sentencepiece), with the
    literal-special policy applied; the third value is the row of a forbidden special (policy ``error``).
    The tokenize stage and ``lmpipe score`` both call this, so new text is tokenized as the corpus was."""
    if isinstance(tokenizer, SentencePieceTokenizer):
        text, special_counts, bad = _text_level_specials(text, literal_specials)
        return tokenizer.ids(text), special_counts, bad
    tokens = tokenizer.tokens(text)
    return handle_literal_specials(tokens, literal_specials)


def encode_batch(batch: LineBatch, chunk: Chunk, job: ChunkJob, tokenizer) -> dict[str, Encoded]:
    """Tokenize one batch of lines and route them to their splits; lines left empty are rejected."""
    text = batch.text
    # bytes of each line as read (after normalisation) plus its newline: the denominator of bits per byte, the
    # same for every tokenizer of the same text
    line_bytes = np.asarray(pc.binary_length(text).fill_null(0), dtype=np.int64) + 1
    tokens, special_counts, bad = tokenize_text(text, tokenizer, job.normalize.literal_specials)
    if bad is not None:
        raise _special_error(chunk, int(batch.positions[bad]))
    batch.counts.update(special_counts)
    lengths = np.asarray(pc.list_value_length(tokens), dtype=np.int64)
    empty = lengths == 0
    if empty.any():
        batch.counts["rejected_empty_after_tokenization"] += int(empty.sum())
        keep = pa.array(~empty)
        tokens = tokens.filter(keep)
        positions = batch.positions[~empty]
        line_bytes = line_bytes[~empty]
    else:
        positions = batch.positions
    if job.corpus.documents == "file":
        docs = np.full(len(positions), chunk.source.doc_hash, np.uint64)
    else:
        docs = splitmix64(np.full(len(positions), chunk.source.doc_hash, np.uint64) ^ positions)
    splits = _split_of(chunk, positions, docs, job.corpus)
    out = {}
    for k, name in enumerate(SPLITS):
        mask = splits == k
        if mask.any():
            sel = pa.array(mask)
            out[name] = Encoded(tokens.filter(sel), positions[mask], docs[mask])
            batch.counts[f"{name}_text_bytes"] += int(line_bytes[mask].sum())
    batch.counts["lines_kept"] += len(positions)
    return out


def sample_chunk(chunk: Chunk, job: ChunkJob, k: int) -> list[tuple[int, str]]:
    """The k training lines of a chunk with the smallest content hashes: a deterministic sample whose
    union over chunks, cut to the k smallest again, is the bottom-k sample of the whole corpus."""
    heap: list[tuple[int, str]] = []
    tokenizer_free = make_tokenizer(TokenizerSpec(kind="whitespace"))
    for batch in read_chunk(chunk, job.normalize, job.corpus.text_field):
        routed = encode_batch(LineBatch(batch.text, batch.positions, Counter()), chunk, job, tokenizer_free)
        if "train" not in routed:
            continue
        lines = pc.binary_join(routed["train"].tokens, " ").to_pylist()
        hashes = splitmix64(np.asarray([hash_text(s) for s in lines], np.uint64) ^ np.uint64(job.tokenizer.seed))
        for h, line in zip(hashes.tolist(), lines, strict=True):
            if len(heap) < k:
                heapq.heappush(heap, (-h, line))
            elif -heap[0][0] > h:
                heapq.heapreplace(heap, (-h, line))
    return [(-h, line) for h, line in heap]


def hash_text(text: str) -> int:
    """A stable 64-bit content hash (Python's ``hash`` is salted per process)."""
    import hashlib

    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


#: Per-chunk intermediate of word tokenizers (between the two passes): lines with chunk-local ids.
LOCAL = pa.schema(
    [
        pa.field("split", pa.int8(), nullable=False),
        pa.field("position", pa.uint64(), nullable=False),
        pa.field("doc", pa.uint64(), nullable=False),
        pa.field("ids", pa.list_(pa.int32()), nullable=False),
    ]
)
LOCAL_DIR = "_chunks"


def _local_paths(job: ChunkJob, chunk: Chunk) -> tuple[Path, Path]:
    base = Path(job.out_dir) / LOCAL_DIR / f"chunk-{chunk.index:05d}"
    return base.with_suffix(".arrow"), base.with_suffix(".dict.arrow")


def prepare_chunk(chunk: Chunk, job: ChunkJob) -> pa.Table:
    """Pass 1 of word tokenizers: tokenize the chunk once, dictionary-encode its tokens, keep the result.

    Writes ``_chunks/chunk-<i>.arrow`` (LOCAL schema: chunk-local int32 ids per line; accounting in the
    schema metadata) and ``chunk-<i>.dict.arrow`` (the local dictionaries, one per batch).  Returns the
    counts of the chunk's training tokens (TOKEN_COUNTS), the map side of the vocabulary.  Pass 2 then
    only remaps local ids to global ids -- text is read and split once, not twice."""
    tokenizer = make_tokenizer(job.tokenizer)
    data_path, dict_path = _local_paths(job, chunk)
    data_path.parent.mkdir(parents=True, exist_ok=True)
    counts: Counter = Counter()
    partial: list[pa.Table] = []
    batches, dictionaries = [], []
    for batch in read_chunk(chunk, job.normalize, job.corpus.text_field):
        routed = encode_batch(batch, chunk, job, tokenizer)
        counts.update(batch.counts)
        parts = [(SPLITS.index(name), enc) for name, enc in routed.items()]
        if not parts:
            continue
        tokens = pa.concat_arrays([enc.tokens for _, enc in parts])
        flat, offsets = list_parts(tokens)
        encoded = pc.dictionary_encode(flat)
        local = encoded.indices
        if "train" in routed:
            n_train = int(offsets[len(routed["train"].positions)]) if parts[0][0] == 0 else 0
            hist = np.bincount(np.asarray(local[:n_train]), minlength=len(encoded.dictionary))
            nz = np.flatnonzero(hist)
            partial.append(pa.table({"token": encoded.dictionary.take(pa.array(nz)), "count": pa.array(hist[nz], pa.uint64())}))
        split_col = np.concatenate([np.full(len(enc.positions), k, np.int8) for k, enc in parts])
        batches.append(
            pa.record_batch(
                [
                    pa.array(split_col),
                    pa.array(np.concatenate([enc.positions for _, enc in parts]), pa.uint64()),
                    pa.array(np.concatenate([enc.docs for _, enc in parts]), pa.uint64()),
                    pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), local),
                ],
                schema=LOCAL,
            )
        )
        dictionaries.append(pa.record_batch([encoded.dictionary], names=["token"]))
    schema = LOCAL.with_metadata({"counts": json.dumps(dict(counts))})
    with pa.OSFile(str(data_path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for b in batches:
            writer.write_batch(b)
    with pa.OSFile(str(dict_path), "wb") as sink, pa.ipc.new_file(sink, pa.schema([("token", pa.string())])) as writer:
        for d in dictionaries:
            writer.write_batch(d)
    return merge_token_counts(partial)


def finalize_chunk(chunk: Chunk, job: ChunkJob) -> ChunkStats:
    """Pass 2 of word tokenizers: local ids -> global ids through the vocabulary; write the shards."""
    data_path, dict_path = _local_paths(job, chunk)
    stats = ChunkStats(chunk.index)
    writers = _writers(job, chunk)
    with pa.memory_map(str(data_path)) as data_src, pa.memory_map(str(dict_path)) as dict_src:
        data, dicts = pa.ipc.open_file(data_src), pa.ipc.open_file(dict_src)
        stats.counts.update(json.loads(data.schema.metadata[b"counts"]))
        for i in range(data.num_record_batches):
            batch, dictionary = data.get_batch(i), dicts.get_batch(i).column(0)
            mapping = pc.index_in(dictionary, value_set=job.vocab_tokens)
            oov_local = np.asarray(mapping.is_null())
            mapping = np.asarray(mapping.fill_null(UNK_ID).cast(pa.uint32()))
            split_col = np.asarray(batch.column("split"))
            lists = batch.column("ids")
            for k, split in enumerate(SPLITS):
                mask = split_col == k
                if not mask.any():
                    continue
                sub = lists.filter(pa.array(mask))
                flat, offsets = list_parts(sub)
                local = np.asarray(flat)
                stats.counts[f"{split}_oov_tokens"] += int(oov_local[local].sum())
                ids = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(mapping[local]))
                positions = np.asarray(batch.column("position"))[mask]
                docs = np.asarray(batch.column("doc"))[mask]
                _write_split(writers[split], stats, split, chunk, ids, positions, docs)
    # The intermediates stay: a retried task (its worker died before the driver had the result) reads them
    # again; the driver removes ``_chunks/`` once every result is in.
    _close(writers, stats)
    return stats


def _writers(job: ChunkJob, chunk: Chunk) -> dict[str, ShardWriter]:
    stage_dir = Path(job.out_dir)
    return {
        s: ShardWriter(stage_dir / s, chunk.index, max_bytes=job.shard_bytes, compression=job.compression, stage_dir=stage_dir)
        for s in SPLITS
    }


def _write_split(writer: ShardWriter, stats: ChunkStats, split: str, chunk: Chunk, ids: pa.ListArray, positions, docs) -> None:
    stats.counts[f"{split}_sentences"] += len(ids)
    stats.counts[f"{split}_tokens"] += int(ids.offsets[-1].as_py() - ids.offsets[0].as_py())
    table = pa.table(
        {
            "source": pa.array(np.full(len(ids), chunk.source.index, np.uint32)),
            "position": pa.array(positions, pa.uint64()),
            "doc": pa.array(docs, pa.uint64()),
            "ids": ids,
        },
        schema=TOKENS,
    )
    writer.write(table)


def _close(writers: dict[str, ShardWriter], stats: ChunkStats) -> None:
    for split, writer in writers.items():
        shards = writer.close()
        if shards:
            stats.shards[split] = [s.to_dict() for s in shards]


def encode_chunk(chunk: Chunk, job: ChunkJob, tokenizer: SentencePieceTokenizer | None = None) -> ChunkStats:
    """Sentencepiece: encode a chunk straight to piece ids (the model is the vocabulary) and write shards."""
    tokenizer = tokenizer or make_tokenizer(job.tokenizer, job.sp_model)
    assert isinstance(tokenizer, SentencePieceTokenizer)
    writers = _writers(job, chunk)
    stats = ChunkStats(chunk.index)
    stats.piece_counts = np.zeros(len(job.vocab_tokens), np.uint64)
    for batch in read_chunk(chunk, job.normalize, job.corpus.text_field):
        stats.counts.update(batch.counts)
        # sentencepiece goes through Python lists: encode in slices so a worker's memory stays bounded.
        for start in range(0, len(batch.text), SP_SLICE_LINES):
            piece = LineBatch(batch.text.slice(start, SP_SLICE_LINES), batch.positions[start : start + SP_SLICE_LINES])
            routed = encode_batch(piece, chunk, job, tokenizer)
            stats.counts.update(piece.counts)
            _write_routed(routed, writers, stats, chunk)
    _close(writers, stats)
    return stats


def _write_routed(routed: dict[str, Encoded], writers: dict[str, ShardWriter], stats: ChunkStats, chunk: Chunk) -> None:
    for split, enc in routed.items():
        ids = enc.tokens
        if split == "train":
            flat, _ = list_parts(ids)
            stats.piece_counts += np.bincount(np.asarray(flat), minlength=len(stats.piece_counts)).astype(np.uint64)
        _write_split(writers[split], stats, split, chunk, ids, enc.positions, enc.docs)
