"""Ingest: find the input files, cut them into chunks, and read a chunk into a batch of lines.

A *chunk* is the unit of parallel work of every pass over raw text.  Uncompressed text and JSONL files
are cut by byte ranges (as word2vec splits its input between threads); a chunk owns every line whose
first byte lies in ``[start, end)``::

    file   |the cat sat\\n|on the mat\\n|a dog\\n|...
    chunk0 [start=0 ........ end=16)            owns lines at 0 and 12 (12 < 16 although it ends at 22)
    chunk1                  [start=16 ........  skips to the first line start >= 16, i.e. 22

Gzip streams cannot be entered in the middle, so a ``.gz`` file is one chunk (read as a stream); a
Parquet file gives one chunk per row group.  Chunking depends only on the inputs and ``shard_mb``, never
on the number of workers, so the shards are byte-identical whatever the cluster.

Every physical line read is accounted for: kept, or rejected with a reason (``blank``, ``too_long``,
``bad_record``), and lines whose invalid UTF-8 was replaced are counted.  Files are opened through pyarrow
filesystems, so ``s3://``, ``gs://`` and ``hdfs://`` URIs work wherever pyarrow supports them.
"""

from __future__ import annotations

import fnmatch
import glob
import gzip
import hashlib
import json
import os
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from lmpipe.pipelines.core.errors import UserError
from lmpipe.pipelines.core.text import normalize_lines
from lmpipe.pipelines.spec import CorpusSpec, NormalizeSpec

#: Bytes read at a time past a chunk's end while looking for the end of its last line.
_TAIL_STEP = 1 << 16
#: Decompressed bytes per batch when streaming a gzip file.
_STREAM_BLOCK = 8 << 20


class InputError(UserError, ValueError):
    """Bad or missing input; the message names the file (and line or byte offset where known)."""


@dataclass(frozen=True, slots=True)
class Source:
    """One input file of one split."""

    index: int
    split: str
    uri: str
    format: str  # text | jsonl | parquet
    compression: str  # none | gzip
    size: int
    mtime_ns: int | None
    #: the file's path relative to the spec entry it came from (the folder, the pattern's fixed part, or the
    #: file itself), prefixed by the entry's place in its split: the document's identity, which never depends
    #: on where the corpus is mounted
    name: str = ""

    def fingerprint(self) -> dict[str, object]:
        """Cheap identity of the file's content: path, size and modification time; and its document name,
        so tokenize outputs made when document ids hashed the absolute URI are recomputed."""
        return {"uri": self.uri, "size": self.size, "mtime_ns": self.mtime_ns, "name": self.name}

    @property
    def doc_hash(self) -> int:
        """The document id: a hash of :attr:`name`, so shards and a ``corpus.split`` depend only on the corpus."""
        return int.from_bytes(hashlib.blake2b((self.name or self.uri).encode(), digest_size=8).digest(), "little")


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of one source: a byte range (text, JSONL), the whole stream (gzip) or a row group."""

    index: int
    source: Source
    start: int
    end: int


@dataclass(slots=True)
class LineBatch:
    """Lines read from a chunk: their text, where they come from, and the accounting so far."""

    text: pa.StringArray
    positions: np.ndarray  # uint64
    counts: Counter = field(default_factory=Counter)


# ------------------------------------------------------------------------------------------ sources
def _filesystem(ref: str) -> tuple[pafs.FileSystem, str]:
    if "://" in ref:
        try:
            return pafs.FileSystem.from_uri(ref)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            raise InputError(f"{ref}: cannot open this URI ({exc})") from exc
    return pafs.LocalFileSystem(), os.path.abspath(ref)


def _detect_format(path: str, declared: str) -> tuple[str, str]:
    name = path.lower()
    compression = "gzip" if name.endswith(".gz") else "none"
    base = name[:-3] if compression == "gzip" else name
    if declared != "auto":
        fmt = declared
    elif base.endswith((".jsonl", ".ndjson", ".json")):
        fmt = "jsonl"
    elif base.endswith((".parquet", ".pq")):
        fmt = "parquet"
    else:
        fmt = "text"
    if fmt == "parquet" and compression == "gzip":
        raise InputError(f"{path}: Parquet files compress internally; a .gz around one is not supported")
    return fmt, compression


def _relative(path: str, root: str) -> str:
    """``path`` relative to ``root`` ("/"-separated), or its base name when ``root`` does not contain it."""
    root = root.rstrip("/")
    if root and path.startswith(root + "/"):
        return path[len(root) + 1 :]
    return path.rsplit("/", 1)[-1]


def _hidden_below(path: str, root: str) -> bool:
    """A listed folder skips hidden entries (``.git/``, ``.DS_Store``) below it; the folders above it are the
    user's to name (``/home/u/.data/corpus`` is a corpus like any other)."""
    return any(part.startswith(".") for part in _relative(path, root).split("/"))


def _fixed_part(path: str) -> str:
    """The folder a glob pattern's matches lie under: its components before the first wildcard."""
    parts = path.split("/")
    for i, part in enumerate(parts):
        if any(ch in part for ch in "*?["):
            return "/".join(parts[:i])
    return path.rsplit("/", 1)[0]


def _expand(ref: str, mirror: str | None) -> list[tuple[pafs.FileSystem, str, str, str]]:
    """One spec entry -> [(filesystem, path, display uri, name relative to the entry)], sorted, or an
    InputError naming it."""
    if ref.startswith("data:"):
        from lmpipe.pipelines.datasets.resolve import resolve

        try:
            ref = str(resolve(ref, mirror=mirror))
        except (KeyError, FileNotFoundError, ValueError) as exc:
            raise InputError(f"{ref}: {exc}") from exc
    fs, path = _filesystem(ref)
    is_uri = "://" in ref
    prefix = ref[: ref.index("://") + 3] if is_uri else ""
    if any(ch in path for ch in "*?["):
        if is_uri:
            parent, pattern = path.rsplit("/", 1)
            infos = fs.get_file_info(pafs.FileSelector(parent, allow_not_found=True))
            paths = sorted(i.path for i in infos if i.type == pafs.FileType.File and fnmatch.fnmatch(i.base_name, pattern))
        else:
            paths = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
        if not paths:
            raise InputError(f"{ref}: no file matches this pattern")
        root = _fixed_part(path)
        return [(fs, p, prefix + p if is_uri else p, _relative(p, root)) for p in paths]
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise InputError(f"{ref}: no such file or directory")
    if info.type == pafs.FileType.Directory:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
        paths = sorted(i.path for i in infos if i.type == pafs.FileType.File and not _hidden_below(i.path, path))
        if not paths:
            raise InputError(f"{ref}: directory holds no files")
        return [(fs, p, prefix + p if is_uri else p, _relative(p, path)) for p in paths]
    return [(fs, path, ref if is_uri else path, _relative(path, ""))]


def find_sources(corpus: CorpusSpec, *, mirror: str | None = None) -> dict[str, list[Source]]:
    """Expand every input of every split and check each is readable -- before any work starts."""
    result: dict[str, list[Source]] = {}
    index = 0
    for split in ("train", "valid", "test"):
        sources = []
        for entry, ref in enumerate(getattr(corpus, split)):
            try:
                found = [(fs, path, uri, rel, fs.get_file_info(path)) for fs, path, uri, rel in _expand(ref, mirror)]
            except OSError as exc:  # an unreachable or refusing store (s3://, gs://, hdfs://)
                raise InputError(f"{ref}: cannot reach this input ({exc})") from None
            for fs, path, uri, rel, info in found:
                if isinstance(fs, pafs.LocalFileSystem) and not os.access(path, os.R_OK):
                    raise InputError(f"{uri}: file is not readable (permission denied)")
                fmt, compression = _detect_format(path, corpus.format)
                mtime = info.mtime_ns if info.mtime_ns is not None else None
                name = f"{split}/{entry}/{rel}"
                sources.append(Source(index, split, uri, fmt, compression, int(info.size or 0), mtime, name))
                index += 1
        result[split] = sources
    return result


def plan_chunks(sources: Sequence[Source], chunk_bytes: int) -> list[Chunk]:
    """Cut sources into chunks (see the module docstring).  Deterministic in the inputs alone."""
    chunks: list[Chunk] = []
    for src in sources:
        if src.format == "parquet":
            import pyarrow.parquet as pq

            fs, path = _filesystem(src.uri)
            with fs.open_input_file(path) as handle:
                groups = pq.ParquetFile(handle).num_row_groups
            chunks.extend(Chunk(len(chunks) + g, src, g, g + 1) for g in range(max(groups, 1)))
        elif src.compression == "gzip" or src.size == 0:
            chunks.append(Chunk(len(chunks), src, 0, src.size))
        else:
            for start in range(0, src.size, chunk_bytes):
                chunks.append(Chunk(len(chunks), src, start, min(start + chunk_bytes, src.size)))
    return chunks


# ------------------------------------------------------------------------------------------ reading
def _read_range(handle: pa.NativeFile, start: int, end: int, size: int, max_line: int) -> tuple[bytes, int]:
    """Bytes of the lines a chunk owns, and the offset of the first one (see the diagram above)."""
    if start > 0:
        prev = handle.read_at(1, start - 1)
        if prev != b"\n":
            # Skip the tail of a line owned by the previous chunk.
            pos = start
            while pos < size:
                piece = handle.read_at(min(_TAIL_STEP, size - pos), pos)
                nl = piece.find(b"\n")
                if nl >= 0:
                    start = pos + nl + 1
                    break
                pos += len(piece)
            else:
                return b"", size
    if start >= end:
        return b"", start
    body = handle.read_at(end - start, start)
    if not body.endswith(b"\n") and end < size:
        # The last line began inside the chunk: read on to its end (bounded, a longer line is rejected).
        tail = []
        pos, read = end, 0
        while pos < size and read <= max_line:
            piece = handle.read_at(min(_TAIL_STEP, size - pos), pos)
            nl = piece.find(b"\n")
            if nl >= 0:
                tail.append(piece[: nl + 1])
                break
            tail.append(piece)
            pos += len(piece)
            read += len(piece)
        body += b"".join(tail)
    return body, start


def _split_lines(buf: bytes, base: int, source: Source, normalize: NormalizeSpec) -> LineBatch:
    """Split a buffer of whole lines into a string array without a Python loop over lines."""
    counts: Counter = Counter()
    if not buf:
        return LineBatch(pa.array([], pa.string()), np.zeros(0, np.uint64), counts)
    data = np.frombuffer(buf, dtype=np.uint8)
    newlines = np.flatnonzero(data == 10)
    ends = newlines + 1
    if len(buf) and buf[-1:] != b"\n":
        ends = np.append(ends, len(buf))
    starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
    offsets = np.concatenate([[0], ends]).astype(np.int64)
    raw = pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(starts), [None, pa.py_buffer(offsets), pa.py_buffer(buf)])
    counts["lines_read"] += len(starts)
    lengths = ends - starts
    positions = (starts + base).astype(np.uint64)
    too_long = lengths > normalize.max_line_bytes + 1  # +1: the newline itself
    if too_long.any():
        counts["rejected_too_long"] += int(too_long.sum())
        keep = ~too_long
        raw = raw.filter(pa.array(keep))
        positions = positions[keep]
    text = _decode(raw, positions, source, normalize, counts)
    return LineBatch(text, positions, counts)


def _decode(raw: pa.Array, positions: np.ndarray, source: Source, normalize: NormalizeSpec, counts: Counter) -> pa.StringArray:
    """UTF-8 validation in one vectorised cast; the per-line path only runs on a failure."""
    try:
        text = raw.cast(pa.large_string())
    except pa.ArrowInvalid:
        decoded = []
        for pos, value in zip(positions.tolist(), raw.to_pylist(), strict=True):
            try:
                decoded.append(value.decode("utf-8"))
            except UnicodeDecodeError as exc:
                if normalize.encoding_errors == "strict":
                    raise InputError(
                        f"{source.uri}: invalid UTF-8 at byte offset {pos + exc.start} "
                        f"(set normalize.encoding_errors: replace to substitute U+FFFD)"
                    ) from None
                counts["lines_utf8_replaced"] += 1
                decoded.append(value.decode("utf-8", errors="replace"))
        text = pa.array(decoded, pa.large_string())
    return pc.utf8_rtrim(text, characters="\r\n").cast(pa.string())


def _read_text_chunk(chunk: Chunk, normalize: NormalizeSpec) -> Iterator[LineBatch]:
    src = chunk.source
    fs, path = _filesystem(src.uri)
    if src.compression == "gzip":
        yield from _read_gzip(fs, path, src, normalize)
        return
    with fs.open_input_file(path) as handle:
        buf, first = _read_range(handle, chunk.start, chunk.end, src.size, normalize.max_line_bytes)
    yield _split_lines(buf, first, src, normalize)


def _too_long_line() -> LineBatch:
    """The accounting of one physical line rejected before it was read to its end."""
    return LineBatch(pa.array([], pa.string()), np.zeros(0, np.uint64), Counter(lines_read=1, rejected_too_long=1))


def _read_gzip(fs: pafs.FileSystem, path: str, src: Source, normalize: NormalizeSpec) -> Iterator[LineBatch]:
    """Stream a gzip file in blocks of whole lines; a truncated or corrupt stream names the file.

    A line longer than ``max_line_bytes`` that spans blocks is counted once as ``too_long`` and skipped to
    its newline, so a compressed input accounts exactly like the same text uncompressed."""
    offset, carry = 0, b""  # offset: decompressed byte offset of the start of ``carry``
    skipping = False  # inside an over-long line already counted; drop bytes up to its newline
    try:
        with fs.open_input_stream(path, compression=None) as raw, gzip.GzipFile(fileobj=raw) as stream:
            while True:
                block = stream.read(_STREAM_BLOCK)
                if not block:
                    break
                if skipping:
                    nl = block.find(b"\n")
                    if nl < 0:
                        offset += len(block)
                        continue
                    block, offset, skipping = block[nl + 1 :], offset + nl + 1, False
                block = carry + block
                cut = block.rfind(b"\n") + 1
                if cut == 0:
                    carry = block
                    if len(block) > normalize.max_line_bytes:
                        yield _too_long_line()
                        offset, carry, skipping = offset + len(block), b"", True
                    continue
                yield _split_lines(block[:cut], offset, src, normalize)
                offset += cut
                carry = block[cut:]
    except EOFError as exc:
        raise InputError(f"{src.uri}: truncated gzip file ({exc}); {offset} bytes decompressed before the end") from None
    except (OSError, zlib.error) as exc:
        raise InputError(f"{src.uri}: corrupt gzip file ({exc})") from None
    if carry:
        yield _split_lines(carry, offset, src, normalize)


def _records_to_lines(records: list[object], positions: list[int], src: Source, text_field: str) -> LineBatch:
    """JSONL/Parquet records -> lines: a record's text may hold several lines (sentences)."""
    counts: Counter = Counter()
    lines: list[str] = []
    pos_out: list[int] = []
    for pos, text in zip(positions, records, strict=True):
        if not isinstance(text, str):
            counts["lines_read"] += 1
            counts["rejected_bad_record"] += 1
            continue
        parts = text.split("\n")
        counts["lines_read"] += len(parts)
        lines.extend(parts)
        pos_out.extend([pos] * len(parts))
    return LineBatch(pa.array(lines, pa.string()), np.asarray(pos_out, np.uint64), counts)


def _read_jsonl_chunk(chunk: Chunk, normalize: NormalizeSpec, text_field: str) -> Iterator[LineBatch]:
    for batch in _read_text_chunk(chunk, normalize):
        records: list[object] = []
        for value in batch.text.to_pylist():
            if not value.strip():
                records.append("")  # a blank line: rejected as blank below, not as a bad record
                continue
            try:
                obj = json.loads(value)
            except json.JSONDecodeError:
                obj = None
            records.append(obj.get(text_field) if isinstance(obj, dict) else None)
        out = _records_to_lines(records, batch.positions.tolist(), chunk.source, text_field)
        # Physical lines dropped before decoding (too long) are still lines read.
        out.counts["lines_read"] += batch.counts["rejected_too_long"]
        out.counts["rejected_too_long"] += batch.counts["rejected_too_long"]
        out.counts["lines_utf8_replaced"] += batch.counts["lines_utf8_replaced"]
        yield out


def _read_parquet_chunk(chunk: Chunk, text_field: str) -> Iterator[LineBatch]:
    import pyarrow.parquet as pq

    src = chunk.source
    fs, path = _filesystem(src.uri)
    with fs.open_input_file(path) as handle:
        pf = pq.ParquetFile(handle)
        if text_field not in pf.schema_arrow.names:
            raise InputError(f"{src.uri}: no column {text_field!r}; columns: {pf.schema_arrow.names} (corpus.text_field)")
        if pf.num_row_groups == 0:
            return
        table = pf.read_row_group(chunk.start, columns=[text_field])
        first_row = sum(pf.metadata.row_group(g).num_rows for g in range(chunk.start))
    values = table.column(text_field).to_pylist()
    yield _records_to_lines(values, list(range(first_row, first_row + len(values))), src, text_field)


def read_chunk(chunk: Chunk, normalize: NormalizeSpec, text_field: str = "text") -> Iterator[LineBatch]:
    """Yield the lines of a chunk, normalised (NFKC, lowercase) and with blank lines removed.

    Output: :class:`LineBatch` with ``text`` free of newlines, ``positions`` (see schemas.TOKENS) and
    counts ``lines_read``, ``rejected_*``, ``lines_utf8_replaced``; ``lines_read - sum(rejected_*)``
    lines remain in ``text``.
    """
    src = chunk.source
    if src.format == "parquet":
        batches = _read_parquet_chunk(chunk, text_field)
    elif src.format == "jsonl":
        batches = _read_jsonl_chunk(chunk, normalize, text_field)
    else:
        batches = _read_text_chunk(chunk, normalize)
    for batch in batches:
        text = normalize_lines(batch.text, nfkc=normalize.nfkc, lowercase=normalize.lowercase)
        blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(text)), 0)
        n_blank = pc.sum(blank).as_py() or 0
        if n_blank:
            batch.counts["rejected_blank"] += n_blank
            keep = pc.invert(blank)
            text = text.filter(keep)
            batch.positions = batch.positions[np.asarray(keep)]
        batch.text = text
        yield batch


def splitmix64(x: np.ndarray) -> np.ndarray:
    """A fast, well-mixed 64-bit hash (Steele et al.), vectorised; used for ids and split buckets."""
    z = (x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def line_starts(chunk: Chunk, normalize: NormalizeSpec) -> np.ndarray:
    """Where every record the chunk owns begins (uint64): the byte offset of each physical line (text, JSONL;
    of the decompressed stream for gzip) or the row index (Parquet) -- the ``positions`` :func:`read_chunk`
    gives its kept lines, so a caller can number every input line, rejected ones included."""
    src = chunk.source
    fs, path = _filesystem(src.uri)
    if src.format == "parquet":
        import pyarrow.parquet as pq

        with fs.open_input_file(path) as handle:
            meta = pq.ParquetFile(handle).metadata
        if meta.num_row_groups == 0:
            return np.zeros(0, np.uint64)
        first = sum(meta.row_group(g).num_rows for g in range(chunk.start))
        return np.arange(first, first + meta.row_group(chunk.start).num_rows, dtype=np.uint64)
    if src.compression == "gzip":
        with fs.open_input_stream(path, compression=None) as raw, gzip.GzipFile(fileobj=raw) as stream:
            buf, base = stream.read(), 0
    else:
        with fs.open_input_file(path) as handle:
            buf, base = _read_range(handle, chunk.start, chunk.end, src.size, normalize.max_line_bytes)
    if not buf:
        return np.zeros(0, np.uint64)
    newlines = np.flatnonzero(np.frombuffer(buf, dtype=np.uint8) == 10)
    starts = np.concatenate([[0], newlines + 1])
    if buf.endswith(b"\n"):
        starts = starts[:-1]
    return (starts + base).astype(np.uint64)
