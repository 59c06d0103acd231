"""ARPA back-off language model files: write (atomically, plain or ``.gz``), read, compare, binarize.

Format (as lmplz writes it; tab-separated, log10 values)::

    \\data\\
    ngram 1=6
    ngram 2=10

    \\1-grams:
    -1\\t<unk>\\t0
    0\\t<s>\\t-0.30103            <- p(<s>) = 1: context only
    ...
    \\2-grams:
    -0.5351132\\ta </s>           <- the highest order has no backoff column
    \\end\\

Writing is vectorised with Arrow (ids -> strings -> joined lines -> one buffer), so PTB 5-gram ARPAs (millions
of lines) take seconds; floats are printed in the shortest form that reads back as the same float32, which
is what lmplz prints too.  The file appears under its final name only when complete (temp file + rename),
so a crashed run never leaves a truncated model for the next stage to load.

>>> # tables = lm.kneser_ney.estimate(...).tables
>>> # write_arpa(tables, vocab, "model.arpa.gz"); read_arpa("model.arpa.gz")[2].column("ngram")
"""

from __future__ import annotations

import gzip
import io
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from lmpipe.lm import kenlm_tools
from lmpipe.pipelines.core.faults import inject
from lmpipe.pipelines.core.files import read_table, temp_sibling

logger = logging.getLogger(__name__)

#: Rows formatted per batch while writing; bounds the memory of the string buffers (~100 bytes a line).
_WRITE_BATCH = 1 << 20


def _format_order(table: pa.Table, order: int, vocab: pa.Array, with_backoff: bool) -> np.ndarray:
    """``prob \\t w0 w1 .. [\\t backoff] \\n`` for every row, as one byte buffer (``lm.arpa_kernels``)."""
    from lmpipe.lm.arpa_kernels import join_lines

    prob = _float_strings(table.column("prob"))
    if with_backoff:
        backoff = _float_strings(table.column("backoff"))
    else:
        backoff = (np.zeros(table.num_rows, dtype=np.int32), np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.uint8))
    ids = np.stack([table.column(f"w{i}").to_numpy() for i in range(order)]) if table.num_rows else np.zeros((order, 0), np.uint32)
    return join_lines(ids, *_string_buffers(vocab), *prob, *backoff, with_backoff)


def _float_strings(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(code per row, offsets, bytes) of a float32 column printed by Arrow's cast (shortest round-trip digits;
    -0 prints as 0), row i's text being string ``code[i]``: a column of few distinct values is printed once
    per value (``arpa_kernels.distinct_floats``), any other value by value."""
    from lmpipe.lm.arpa_kernels import distinct_floats

    if column.null_count:
        raise ValueError("ARPA fields must not be null")
    values = np.ascontiguousarray(column.to_numpy(), dtype=np.float32)
    codes, distinct, coded = distinct_floats(values)
    if not coded:
        codes, distinct = np.arange(len(values), dtype=np.int32), values + np.float32(0)
    return (codes, *_string_buffers(pc.cast(pa.array(distinct, pa.float32()), pa.string())))


def _string_buffers(arr: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(offsets rebased to 0 as int64, bytes) of a string array without nulls, for the compiled writer."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.null_count:
        raise ValueError("ARPA fields must not be null")
    width = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    _, offsets_buf, data = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=width)[arr.offset : arr.offset + len(arr) + 1].astype(np.int64)
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, dtype=np.uint8)
    return offsets - offsets[0], raw[offsets[0] : offsets[-1]]


def write_arpa(
    tables: dict[int, pa.Table],
    vocab: Sequence[str] | pa.Array,
    path: str | os.PathLike[str],
    *,
    binary_out: str | os.PathLike[str] | None = None,
) -> Path:
    """Write MODEL tables (``w0..``, ``prob``, ``backoff`` for lower orders; see :mod:`lm.kneser_ney`) as ARPA.

    ``vocab[id]`` is the token string of ``id``.  A path ending in ``.gz`` is gzip-compressed (KenLM reads
    it directly).  The write is atomic.  With ``binary_out``, also runs ``build_binary`` when it is available
    (see :func:`maybe_build_binary`).  Returns the ARPA path.
    """
    path = Path(path)
    vocab_arr = vocab if isinstance(vocab, pa.Array) else pa.array(list(vocab), pa.string())
    top = max(tables)
    if sorted(tables) != list(range(1, top + 1)):
        raise ValueError(f"ARPA needs every order 1..{top}, got {sorted(tables)}")
    for k, t in tables.items():
        for i in range(k):
            col = t.column(f"w{i}")
            if len(col) and pc.max(col).as_py() >= len(vocab_arr):
                raise ValueError(f"{k}-grams use ids >= the vocabulary size {len(vocab_arr)}")
    counts = {k: tables[k].num_rows for k in tables}
    _write_sections(path, counts, lambda k, out: write_arpa_lines(tables[k], k, vocab_arr, k < top, out))
    if binary_out is not None:
        maybe_build_binary(path, binary_out)
    return path


def write_arpa_lines(table: pa.Table, order: int, vocab: pa.Array, with_backoff: bool, out: BinaryIO) -> int:
    """Write the ARPA lines of one MODEL[k] table (no section header) to ``out``, in batches; returns rows.

    The ngram stage calls it per partition in its tasks (one text piece each) and an :class:`ArpaWriter`
    appends the pieces in order, so formatting -- most of the ARPA's cost -- runs on every worker."""
    for start in range(0, table.num_rows, _WRITE_BATCH):
        out.write(_format_order(table.slice(start, _WRITE_BATCH), order, vocab, with_backoff))
    return table.num_rows


def write_arpa_parts(
    parts: dict[int, Sequence[Path]], counts: dict[int, int], vocab: pa.Array, path: Path
) -> Path:
    """Write MODEL[k] tables stored as Arrow files (one per partition, as the distributed ngram stage leaves
    them) as one ARPA file, reading one part at a time, so no process holds the whole model.  KenLM reads
    the n-grams of a section in any order; ``counts[k]`` (the header) must equal the parts' rows."""
    top = max(counts)

    def write_order(k: int, out: BinaryIO) -> int:
        return sum(write_arpa_lines(read_table(part), k, vocab, k < top, out) for part in parts[k])

    return _write_sections(Path(path), counts, write_order)


def write_arpa_pieces(pieces: dict[int, Sequence[tuple[Path, int]]], counts: dict[int, int], path: Path) -> Path:
    """Assemble an ARPA file from text pieces written by :func:`write_arpa_lines`: ``pieces[k]`` lists
    (file, rows) in section order.  Plain output is a byte copy of the pieces (:func:`_append_file`, in the
    kernel where it can); ``.gz`` compresses them.  (The ngram stage appends its pieces as they are formatted,
    through :class:`ArpaWriter` directly.)"""
    with ArpaWriter(Path(path), counts) as arpa:
        for k in sorted(pieces):
            for piece, rows in pieces[k]:
                arpa.append_piece(k, piece, rows)
    return Path(path)


def _append_file(source: Path, out: BinaryIO) -> None:
    """Append the bytes of ``source`` to ``out``.  To a plain file: ``os.copy_file_range`` (the kernel copies
    page cache to page cache: a 400 MB ARPA costs 0.14 CPU s instead of 0.9 through user space), else, or
    where the call is refused (another file system, an old kernel), a buffered copy."""
    import shutil

    with open(source, "rb") as src:
        if isinstance(out, io.BufferedWriter) and hasattr(os, "copy_file_range"):
            out.flush()
            at = out.tell()
            size = os.fstat(src.fileno()).st_size
            done = 0
            try:
                while done < size:
                    step = os.copy_file_range(src.fileno(), out.fileno(), size - done, done, at + done)
                    if step == 0:
                        break
                    done += step
            except OSError:
                pass
            out.seek(at + done)
            src.seek(done)
        shutil.copyfileobj(src, out, 1 << 22)  # what the kernel did not copy (nothing, usually)


class ArpaWriter:
    """An ARPA file written section by section, in order, as its lines or pieces arrive; atomic (a temporary
    sibling renamed into place on a clean exit, removed on an error).

    The header is known first (``counts``: the rows of each order), so the pieces of a distributed model can
    be appended while later ones are still being formatted: the ngram stage appends each piece the moment it
    and every piece before it are done, and deletes it, so its scratch disk holds a few pieces, not a second
    copy of the ARPA.  Each section's rows are checked against the header when the next one starts.

    >>> with ArpaWriter(path, {1: 3, 2: 2}) as arpa:       # doctest: +SKIP
    ...     arpa.append_piece(1, unigrams_piece, 3)
    ...     arpa.section(2); arpa.out.write(lines); arpa.rows[2] += 2
    """

    def __init__(self, path: Path, counts: dict[int, int]) -> None:
        self.path, self.counts = Path(path), dict(counts)
        self.top = max(self.counts)
        self.rows = {k: 0 for k in self.counts}
        self.k = 0  # the section being written (0: the header only)
        self._tmp = temp_sibling(self.path)  # not mkstemp: its 0600 would survive the rename (see core.files)
        self._raw: BinaryIO | None = None
        self.out: BinaryIO

    def __enter__(self) -> ArpaWriter:
        self._raw = open(self._tmp, "xb")  # noqa: SIM115 -- closed in __exit__
        self.out = gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=6) if self.path.suffix == ".gz" else self._raw
        header = "\\data\\\n" + "".join(f"ngram {k}={self.counts[k]}\n" for k in range(1, self.top + 1)) + "\n"
        self.out.write(header.encode())
        return self

    def section(self, k: int) -> None:
        """Move on to order ``k``'s section (writing every section header up to it)."""
        if k < self.k:
            raise ValueError(f"ARPA sections go in order: {k}-grams after {self.k}-grams")
        while self.k < k:
            self._close_section()
            self.k += 1
            inject("ngram.arpa")  # the fault-injection suite ends the driver mid-write here
            self.out.write(f"\\{self.k}-grams:\n".encode())

    def append_piece(self, k: int, piece: Path, rows: int, *, consume: bool = False) -> None:
        """Append a text piece of order ``k`` (``rows`` lines); ``consume``: delete it once its bytes are in."""
        self.section(k)
        _append_file(Path(piece), self.out)
        self.rows[k] += rows
        if consume:
            self.out.flush()
            Path(piece).unlink()

    def _close_section(self) -> None:
        if self.k:
            if self.rows[self.k] != self.counts[self.k]:
                raise RuntimeError(f"{self.k}-grams: the header says {self.counts[self.k]}, the tables hold {self.rows[self.k]}")
            self.out.write(b"\n")

    def __exit__(self, exc_type, exc, tb) -> None:
        done = False
        try:
            if exc_type is None:
                self.section(self.top)
                self._close_section()
                self.out.write(b"\\end\\\n")
                done = True
        finally:
            if self.out is not self._raw:
                self.out.close()
            self._raw.close()
            if done:
                os.replace(self._tmp, self.path)
            else:
                Path(self._tmp).unlink(missing_ok=True)
        if done:
            top = range(1, self.top + 1)
            logger.info("wrote %s: %s", self.path, ", ".join(f"{k}-grams {self.counts[k]:,}" for k in top))


def _write_sections(path: Path, counts: dict[int, int], write_order: Callable[[int, BinaryIO], int]) -> Path:
    """The ARPA of ``write_order(k, out)``'s lines per order (it returns the rows it wrote): an :class:`ArpaWriter`."""
    with ArpaWriter(Path(path), counts) as arpa:
        for k in range(1, arpa.top + 1):
            arpa.section(k)
            arpa.rows[k] += write_order(k, arpa.out)
    return Path(path)


def read_arpa_counts(path: str | os.PathLike[str]) -> dict[int, int]:
    """The ``ngram k=N`` counts of an ARPA header (plain or gzip), without reading the n-grams."""
    counts: dict[int, int] = {}
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("ngram "):
                k, n = line[6:].strip().split("=")
                counts[int(k)] = int(n)
            elif line.startswith("\\1-grams"):
                break
    return counts


def binary_options(quantize: Sequence[int] = (), pointer_bits: int | None = None) -> list[str]:
    """build_binary's trie options: ``-q`` probability bits, ``-b`` backoff bits, ``-a`` pointer compression."""
    args: list[str] = []
    if quantize:
        args += ["-q", str(quantize[0]), "-b", str(quantize[1])]
    if pointer_bits is not None:
        args += ["-a", str(pointer_bits)]
    return args


def maybe_build_binary(
    arpa: str | os.PathLike[str], binary_out: str | os.PathLike[str], kind: str = "probing",
    extra_args: Sequence[str] = (),
) -> Path | None:  # fmt: skip
    """Run KenLM ``build_binary`` if it can be found; log and return ``None`` if not (the ARPA still works)."""
    if not kenlm_tools.kenlm_available(["build_binary"]):
        logger.warning("build_binary not found, leaving %s as ARPA; %s", arpa, kenlm_tools.BUILD_HINT)
        return None
    out = Path(binary_out)
    tmp = out.with_name(f".{out.name}.tmp")
    kenlm_tools.run_build_binary(arpa, tmp, kind=kind, extra_args=extra_args)
    os.replace(tmp, out)
    return out


def _read_lines(path: Path) -> pa.Array:
    """Every non-empty line of the file as one string array (read by Arrow's CSV reader, one column)."""
    stream = pa.input_stream(str(path), compression="gzip" if path.suffix == ".gz" else None)
    table = pacsv.read_csv(
        stream,
        read_options=pacsv.ReadOptions(column_names=["line"], block_size=1 << 26),
        parse_options=pacsv.ParseOptions(delimiter="\x1f", quote_char=False, escape_char=False),
        convert_options=pacsv.ConvertOptions(
            column_types={"line": pa.large_string()}, strings_can_be_null=False
        ),
    )
    return table.column("line").combine_chunks()


def read_arpa(path: str | os.PathLike[str]) -> dict[int, pa.Table]:
    """Read an ARPA file (plain or ``.gz``) into ``{order: table(ngram: string, prob: float32, backoff: float32)}``.

    ``ngram`` is the space-joined tokens (so models with different vocab numberings compare directly);
    ``backoff`` is 0 where the file has none.  Row order is the file's.  Checks the header counts.
    """
    path = Path(path)
    lines = _read_lines(path)
    is_marker = pc.starts_with(lines, "\\").to_numpy(zero_copy_only=False)
    markers = np.flatnonzero(is_marker)
    names = [lines[int(i)].as_py().strip() for i in markers]
    if not names or names[0] != "\\data\\" or names[-1] != "\\end\\":
        raise ValueError(f"{path}: not an ARPA file (no \\data\\ ... \\end\\)")
    header = lines[int(markers[0]) + 1 : int(markers[1])].to_pylist()
    expected = {
        int(h.split()[1].split("=")[0]): int(h.split("=")[1]) for h in header if h.startswith("ngram ")
    }
    out: dict[int, pa.Table] = {}
    for j in range(1, len(markers) - 1):
        name = names[j]
        if not name.endswith("-grams:"):
            raise ValueError(f"{path}: unexpected section {name!r}")
        order = int(name[1 : -len("-grams:")])
        body = lines[int(markers[j]) + 1 : int(markers[j + 1])]
        parts = pc.split_pattern(body, "\t")
        n_fields = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
        if len(body) and (n_fields.min() < 2 or n_fields.max() > 3):
            raise ValueError(f"{path}: {order}-gram lines must have 2 or 3 tab-separated fields")
        prob = pc.cast(pc.list_element(parts, 0), pa.float32())
        ngram = pc.cast(pc.list_element(parts, 1), pa.string())
        backoff = np.zeros(len(body), dtype=np.float32)
        has = n_fields == 3
        if has.any():
            third = pc.list_element(pc.filter(parts, pa.array(has)), 2)
            backoff[has] = pc.cast(third, pa.float32()).to_numpy(zero_copy_only=False)
        out[order] = pa.table({"ngram": ngram, "prob": prob, "backoff": pa.array(backoff)})
        if expected.get(order) != len(body):
            raise ValueError(
                f"{path}: header says ngram {order}={expected.get(order)} but found {len(body)} lines"
            )
    return out


def read_arpa_dict(path: str | os.PathLike[str]) -> dict[int, dict[str, tuple[float, float]]]:
    """``{order: {"w0 w1": (log10 p, log10 backoff)}}``; convenient for small models in tests."""
    out: dict[int, dict[str, tuple[float, float]]] = {}
    for k, t in read_arpa(path).items():
        values = zip(t.column("prob").to_pylist(), t.column("backoff").to_pylist(), strict=True)
        out[k] = dict(zip(t.column("ngram").to_pylist(), values, strict=True))
    return out


@dataclass(frozen=True, slots=True)
class ArpaDiff:
    """How two ARPA models differ: n-grams only in one of them, and the largest value differences."""

    only_left: dict[int, list[str]]
    only_right: dict[int, list[str]]
    max_prob_diff: float
    max_backoff_diff: float
    worst: str = ""

    @property
    def same_ngrams(self) -> bool:
        return not any(self.only_left.values()) and not any(self.only_right.values())

    def within(self, tol: float) -> bool:
        return self.same_ngrams and self.max_prob_diff <= tol and self.max_backoff_diff <= tol


def compare_arpa(left: dict[int, pa.Table], right: dict[int, pa.Table], examples: int = 5) -> ArpaDiff:
    """Compare two :func:`read_arpa` results by n-gram set and values (row order is irrelevant)."""
    only_left: dict[int, list[str]] = {}
    only_right: dict[int, list[str]] = {}
    max_p = max_b = 0.0
    worst = ""
    for k in sorted(set(left) | set(right)):
        a = left.get(
            k,
            pa.table(
                {
                    "ngram": pa.array([], pa.string()),
                    "prob": pa.array([], pa.float32()),
                    "backoff": pa.array([], pa.float32()),
                }
            ),
        )
        b = right.get(k, a.slice(0, 0))
        joined = a.join(
            b, "ngram", join_type="full outer", left_suffix="_l", right_suffix="_r", coalesce_keys=True
        )
        pl, pr = joined.column("prob_l"), joined.column("prob_r")
        only_left[k] = joined.filter(pc.is_null(pr)).column("ngram").slice(0, examples).to_pylist()
        only_right[k] = joined.filter(pc.is_null(pl)).column("ngram").slice(0, examples).to_pylist()
        both = joined.filter(pc.and_(pc.is_valid(pl), pc.is_valid(pr)))
        if both.num_rows == 0:
            continue
        dp = np.abs(both.column("prob_l").to_numpy().astype(np.float64) - both.column("prob_r").to_numpy())
        db = np.abs(
            both.column("backoff_l").to_numpy().astype(np.float64) - both.column("backoff_r").to_numpy()
        )
        dp = np.where(
            np.isinf(both.column("prob_l").to_numpy())
            & (both.column("prob_l").to_numpy() == both.column("prob_r").to_numpy()),
            0.0,
            dp,
        )
        if dp.max() > max_p:
            max_p = float(dp.max())
            worst = f"{both.column('ngram')[int(dp.argmax())].as_py()} (prob)"
        if db.max() > max_b:
            max_b = float(db.max())
    return ArpaDiff(only_left, only_right, max_p, max_b, worst)
