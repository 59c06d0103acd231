"""Export :class:`~embeddings.vectors.Vectors` to the formats other tools read, and import them back.

=================  ==========================================================================================
format             layout (V tokens, dim d)
=================  ==========================================================================================
``word2vec``       text: header ``"V d\\n"``, then ``token v1 ... vd\\n`` (values ``%.9g``, which round-trips
                   float32 exactly); gensim ``load_word2vec_format(binary=False)``
``word2vec-bin``   header ``"V d\\n"``, then ``token`` + ``b" "`` + d little-endian float32 + ``b"\\n"`` per
                   row (word2vec.c's layout; gensim's own writer omits the newline, and both are read)
``glove``          text like ``word2vec`` without the header (gensim ``load_word2vec_format(no_header=True)``)
``npy``            ``<file>.npy`` float32 matrix + a vocabulary file (``id<TAB>token<TAB>count``)
``safetensors``    one tensor ``"vectors"``; tokens in the metadata (JSON) or in a vocabulary file
=================  ==========================================================================================

The text formats separate fields with one space and rows with a newline, so a token containing a space or
a newline (or an empty token) cannot be written: export raises and names the token instead of producing
a file that every reader misparses from that row on.

>>> from lmpipe.embeddings.formats import export_vectors, import_vectors          # doctest: +SKIP
>>> export_vectors(vecs, "out/vectors.bin", "word2vec-bin")                  # doctest: +SKIP
>>> gensim.models.KeyedVectors.load_word2vec_format("out/vectors.bin", binary=True)   # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import re
from pathlib import Path

import numpy as np

from lmpipe.embeddings.vectors import Vectors
from lmpipe.pipelines.core.errors import UserError
from lmpipe.pipelines.core.files import atomic_path, chmod_as_created
from lmpipe.pipelines.core.vocab_tsv import read_vocab_tsv, write_vocab_tsv

logger = logging.getLogger(__name__)

FORMATS = ("word2vec", "word2vec-bin", "glove", "npy", "safetensors")
_BAD_TEXT_CHARS = (" ", "\n", "\r")


class VectorsFileError(UserError, ValueError):
    """A vectors file that cannot be read as its format; the message names the file (and row or byte)."""


def check_text_tokens(vectors: Vectors, fmt: str) -> None:
    """Raise ValueError naming the first token that the space/newline-separated formats cannot hold."""
    for i, tok in enumerate(vectors.tokens):
        if not tok or any(c in tok for c in _BAD_TEXT_CHARS):
            raise ValueError(
                f"token {tok!r} (row {i}) is empty or contains a space or newline and cannot be written in "
                f"{fmt} format; use 'npy' or 'safetensors' with a vocabulary file instead"
            )


def _write_text_rows(f, vectors: Vectors, block: int = 4096) -> None:
    """Rows ``token v1 ... vd`` with ``%.9g`` values: 9 significant digits make float32 round-trip exactly."""
    row_fmt = " ".join(["%.9g"] * vectors.dim)
    for start in range(0, len(vectors), block):
        rows = np.asarray(vectors.matrix[start : start + block], dtype=np.float32).tolist()
        toks = vectors.tokens[start : start + block]
        f.write("".join(f"{t} {row_fmt % tuple(r)}\n" for t, r in zip(toks, rows, strict=True)).encode())


def save_word2vec(vectors: Vectors, path: str | os.PathLike, *, binary: bool = False) -> None:
    """word2vec.c text or binary format, readable by gensim ``load_word2vec_format(binary=...)``."""
    check_text_tokens(vectors, "word2vec-bin" if binary else "word2vec")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(f"{len(vectors)} {vectors.dim}\n".encode())
        if not binary:
            _write_text_rows(f, vectors)
        else:
            for start in range(0, len(vectors), 4096):
                rows = np.asarray(vectors.matrix[start : start + 4096], dtype="<f4")
                for tok, row in zip(vectors.tokens[start : start + 4096], rows, strict=True):
                    f.write(tok.encode() + b" " + row.tobytes() + b"\n")
    logger.info("wrote %s (%s, %d x %d)", path, "binary" if binary else "text", len(vectors), vectors.dim)


def save_glove(vectors: Vectors, path: str | os.PathLike) -> None:
    """GloVe text format: word2vec text rows without the header line."""
    check_text_tokens(vectors, "glove")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        _write_text_rows(f, vectors)
    logger.info("wrote %s (glove text, %d x %d)", path, len(vectors), vectors.dim)


def _parse_text_row(line: bytes, path: os.PathLike | str, line_no: int, dim: int | None, rsplit: bool):
    try:
        text = line.decode("utf-8").rstrip()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}:{line_no}: not valid UTF-8 ({e.reason})") from None
    parts = text.rsplit(" ", dim) if rsplit and dim is not None else text.split(" ")
    if len(parts) < 2 or (dim is not None and len(parts) != dim + 1):
        want = "a token and values" if dim is None else f"a token and {dim} values"
        raise ValueError(f"{path}:{line_no}: expected {want}, got {len(parts) - 1} values: {text[:80]!r}")
    try:
        values = np.array(parts[1:], dtype=np.float32)
    except ValueError:
        raise ValueError(f"{path}:{line_no}: non-numeric value in {text[:80]!r}") from None
    return parts[0], values


def _build(tokens: list[str], rows: list[np.ndarray] | np.ndarray, path, source: str) -> Vectors:
    """Keep the first of duplicate tokens (gensim's choice for foreign files) and warn how many were dropped."""
    seen: dict[str, int] = {}
    keep = [seen.setdefault(t, i) == i for i, t in enumerate(tokens)]
    if not all(keep):
        logger.warning("%s: %d duplicate tokens, keeping the first of each", path, keep.count(False))
    matrix = np.asarray(rows, dtype=np.float32).reshape(len(tokens), -1)
    matrix = matrix[np.asarray(keep)] if not all(keep) else matrix
    return Vectors([t for t, k in zip(tokens, keep, strict=True) if k], matrix, source=source)


def _read_text(path, *, header: bool, rsplit: bool = False) -> Vectors:
    tokens: list[str] = []
    rows: list[np.ndarray] = []
    count = dim = blank_at = None
    with open(path, "rb") as f:
        for line_no, line in enumerate(f, start=1):
            if header and line_no == 1:
                fields = line.split()
                if len(fields) != 2 or not all(x.isdigit() for x in fields):
                    raise ValueError(f"{path}:1: expected header 'count dim', got {line[:80]!r}")
                count, dim = int(fields[0]), int(fields[1])
                continue
            if not line.strip():  # tolerated only at the end of the file
                blank_at = blank_at or line_no
                continue
            if blank_at is not None:
                raise ValueError(f"{path}:{blank_at}: empty line")
            if count is not None and len(tokens) == count:
                raise ValueError(f"{path}:{line_no}: data after the {count} rows announced by the header")
            tok, vec = _parse_text_row(line, path, line_no, dim, rsplit)
            dim = len(vec) if dim is None else dim
            tokens.append(tok)
            rows.append(vec)
    if count is not None and len(tokens) != count:
        raise ValueError(f"{path}: header announces {count} rows, file has {len(tokens)} (truncated?)")
    return _build(tokens, np.stack(rows) if rows else np.zeros((0, dim or 0)), path, str(path))


def _read_word2vec_binary(path) -> Vectors:
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        eol = buf.find(b"\n")
        fields = buf[: max(eol, 0)].split()
        if eol < 0 or len(fields) != 2 or not all(x.isdigit() for x in fields):
            raise ValueError(f"{path}: expected header 'count dim' on the first line")
        count, dim = int(fields[0]), int(fields[1])
        nbytes = 4 * dim
        # Every row holds at least a 1-byte token, a space and its floats, so the file holds at most
        # ``fits`` rows: the matrix is sized by that, never by the header alone (10^12 words would be
        # terabytes); a header announcing more fails below at the first row past the end of the file.
        fits = (len(buf) - eol - 1) // (nbytes + 2)
        matrix = np.empty((min(count, fits), dim), dtype=np.float32)
        tokens: list[str] = []
        pos = eol + 1
        for i in range(count):
            space = buf.find(b" ", pos)
            if space < 0 or space + 1 + nbytes > len(buf):
                raise ValueError(
                    f"{path}: row {i + 1} at byte {pos}: unexpected end of file ({count} announced)"
                )
            raw = buf[pos:space].lstrip(b"\n")  # word2vec.c ends each row with "\n"; gensim's writer does not
            try:
                tokens.append(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}: row {i + 1} at byte {pos}: token not UTF-8 ({e.reason})") from None
            if not raw:
                raise ValueError(f"{path}: row {i + 1} at byte {pos}: empty token")
            matrix[i] = np.frombuffer(buf, dtype="<f4", count=dim, offset=space + 1)
            pos = space + 1 + nbytes
        if buf[pos:].strip():
            raise ValueError(f"{path}: {len(buf) - pos} bytes of data after the {count} announced rows")
    return _build(tokens, matrix, path, str(path))


def load_word2vec(path: str | os.PathLike, *, binary: bool = False) -> Vectors:
    """Read word2vec.c / gensim text or binary files (binary: with or without a newline after each row)."""
    vecs = _read_word2vec_binary(path) if binary else _read_text(path, header=True)
    logger.info("read %s: %d x %d", path, len(vecs), vecs.dim)
    return vecs


def load_glove(path: str | os.PathLike, *, tokens_with_spaces: bool = False) -> Vectors:
    """Read GloVe text (no header; dim taken from the first row).

    ``tokens_with_spaces=True`` splits each row from the right, for releases such as glove.840B whose
    tokens may contain spaces; it then cannot tell a token from an extra value, so it is off by default.
    """
    return _read_text(path, header=False, rsplit=tokens_with_spaces)


def save_npy(vectors: Vectors, npy_path: str | os.PathLike, vocab_path: str | os.PathLike) -> None:
    """Matrix as ``.npy`` (loadable with ``np.load(..., mmap_mode='r')``) plus a vocab.tsv-style file."""
    with atomic_path(npy_path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(vectors.matrix))
    with atomic_path(vocab_path) as tmp:
        write_vocab_tsv(tmp, vectors.tokens, vectors.counts)


def load_npy(
    npy_path: str | os.PathLike, vocab_path: str | os.PathLike, *, mmap_mode: str | None = None
) -> Vectors:
    tokens, counts = read_vocab_tsv(vocab_path)
    matrix = np.load(npy_path, mmap_mode=mmap_mode)
    if matrix.dtype != np.float32:
        matrix = matrix.astype(np.float32)
    return Vectors(tokens, matrix, counts, source=str(npy_path))


#: safetensors refuses a header (tensor table + metadata, JSON) above 100,000,000 bytes; past this estimate
#: the tokens go to a vocabulary file instead (millions of words, e.g. GoogleNews' 3M, exceed it).
SAFETENSORS_HEADER_LIMIT = 100_000_000
_HEADER_MARGIN = 1_000_000  # the tensor table and JSON escaping our estimate does not count exactly


def _tokens_header_bytes(vectors: Vectors) -> int:
    """An upper bound on the header bytes of the tokens and counts as metadata, without building the JSON
    (100 MB of it takes seconds): each token is ``"tok",`` in a JSON list that is itself a JSON string, so
    its quotes become ``\\"`` (+5 bytes a token); ``"``, ``\\`` and control characters are escaped twice
    (at most 7 bytes each); a count takes at most 20 digits and a comma."""
    joined = "".join(vectors.tokens)
    escaped = joined.count('"') + joined.count("\\") + len(re.findall("[\x00-\x1f]", joined))
    counts = 0 if vectors.counts is None else 21 * len(vectors)
    return len(joined.encode()) + 5 * len(vectors) + 7 * escaped + counts


def save_safetensors(
    vectors: Vectors, path: str | os.PathLike, *, vocab_path: str | os.PathLike | None = None
) -> Path | None:
    """One tensor ``vectors``; the tokens (and counts) go to the metadata as JSON unless ``vocab_path``.

    safetensors metadata is a str->str map inside a header capped at 100 MB, so when the vocabulary would not
    fit it is written to ``<stem>.vocab.tsv`` beside ``path`` (``vocab_path`` forces a file), and the
    metadata's ``vocab_file`` names it so :func:`load_safetensors` finds it.  Returns the vocabulary file's
    path, or None when the tokens are in the header.
    """
    from safetensors.numpy import save_file

    path = Path(path)
    meta = {"dim": str(vectors.dim), "count": str(len(vectors)), "source": vectors.source}
    if vocab_path is None:
        if _tokens_header_bytes(vectors) <= SAFETENSORS_HEADER_LIMIT - _HEADER_MARGIN:
            meta["tokens"] = json.dumps(vectors.tokens, ensure_ascii=False)
            if vectors.counts is not None:
                meta["counts"] = json.dumps(vectors.counts.tolist())
        else:
            vocab_path = _vocab_sibling(path)
            logger.info("%s: %d tokens exceed the safetensors header, vocabulary in %s", path, len(vectors), vocab_path)
    if vocab_path is not None:
        vocab_path = Path(vocab_path)
        if vocab_path.resolve().parent != path.resolve().parent:
            raise ValueError(f"{vocab_path}: the vocabulary file must sit beside {path}, where readers look")
        meta["vocab_file"] = vocab_path.name
        with atomic_path(vocab_path) as tmp:
            write_vocab_tsv(tmp, vectors.tokens, vectors.counts)
    with atomic_path(path) as tmp:
        save_file({"vectors": np.ascontiguousarray(vectors.matrix)}, str(tmp), metadata=meta)
        chmod_as_created(tmp)  # safetensors creates its file 0600
    return vocab_path


def load_safetensors(path: str | os.PathLike, *, vocab_path: str | os.PathLike | None = None) -> Vectors:
    """Inverse of :func:`save_safetensors`: tokens from the metadata, or from the vocabulary file it names
    (a bare file name, looked up beside ``path`` only), or from ``vocab_path``."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
            if "vectors" not in f.keys():
                raise ValueError(f"{path}: no tensor 'vectors' (tensors: {sorted(f.keys())[:10]})")
            matrix = f.get_tensor("vectors")
    except SafetensorError as exc:  # a bad header length, truncated data, a header that is not JSON ...
        raise ValueError(f"{path}: not a readable safetensors file ({exc})") from None
    if matrix.ndim != 2:
        raise ValueError(f"{path}: tensor 'vectors' has shape {list(matrix.shape)}, not (count, dim)")
    if vocab_path is None and "vocab_file" in meta:
        vocab_path = path.parent / Path(meta["vocab_file"]).name
        if not vocab_path.is_file():
            raise ValueError(f"{path}: its vocabulary file {vocab_path} is missing (copy it beside the file)")
    if vocab_path is not None:
        tokens, counts = read_vocab_tsv(vocab_path)
    elif "tokens" in meta:
        tokens = json.loads(meta["tokens"])
        counts = np.asarray(json.loads(meta["counts"]), np.uint64) if "counts" in meta else None
    else:
        raise ValueError(f"{path}: no 'tokens' in the metadata; pass vocab_path")
    if len(tokens) != len(matrix):
        raise ValueError(f"{path}: {len(matrix)} vectors but {len(tokens)} tokens in its vocabulary")
    return Vectors(
        tokens, matrix.astype(np.float32, copy=False), counts, source=meta.get("source", str(path))
    )


def _vocab_sibling(path: Path) -> Path:
    return path.with_name(path.stem + ".vocab.tsv")


def export_vectors(vectors: Vectors, path: str | os.PathLike, fmt: str) -> None:
    """Write ``vectors`` in ``fmt``; npy writes ``<stem>.vocab.tsv`` next to ``path``, safetensors embeds it
    (or writes that file when the vocabulary is too large for its header)."""
    path = Path(path)
    if fmt in ("word2vec", "word2vec-bin"):
        save_word2vec(vectors, path, binary=fmt == "word2vec-bin")
    elif fmt == "glove":
        save_glove(vectors, path)
    elif fmt == "npy":
        save_npy(vectors, path, _vocab_sibling(path))
    elif fmt == "safetensors":
        save_safetensors(vectors, path)
    else:
        raise ValueError(f"unknown vectors format {fmt!r}; options are {list(FORMATS)}")


def import_vectors(path: str | os.PathLike, fmt: str) -> Vectors:
    """Inverse of :func:`export_vectors`; a malformed file raises :class:`VectorsFileError` naming it."""
    path = Path(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown vectors format {fmt!r}; options are {list(FORMATS)}")
    try:
        if fmt in ("word2vec", "word2vec-bin"):
            return load_word2vec(path, binary=fmt == "word2vec-bin")
        if fmt == "glove":
            return load_glove(path)
        if fmt == "npy":
            return load_npy(path, _vocab_sibling(path))
        return load_safetensors(path)
    except (ValueError, KeyError, EOFError) as exc:
        message = str(exc)
        raise VectorsFileError(message if message.startswith(str(path)) else f"{path}: {message}") from None
