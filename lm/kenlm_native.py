"""KenLM's query loop over whole batches of tokenized lines: lmpipe's small C++ scorer, loaded with ctypes.

Why: ``kenlm.Model.score`` is one Python call per line and knows nothing of OOV words, so ``lmpipe score`` had
to look every token up a second time (ours, then KenLM's) and score each OOV word again from a window of
words -- about 0.6-0.7x ``query``'s speed per core.  ``lm/native/kenlm_lines.cc`` runs ``query``'s own loop
(the concrete model class, ``Vocabulary::Index`` once per word, ``FullScore``) over a batch laid out as Arrow
lays out a ``list<string>`` column, and returns per line the float32 total ``query`` prints, the OOV count and
the OOV words' log10 p (or every token's score, for mixtures).  The results are ``kenlm.Model``'s, bit for bit
(tests/test_kenlm_native.py).

Where the library comes from: ``.ci/build_kenlm.sh`` (``make kenlm``) compiles it against KenLM's static
libraries into ``${LMPIPE_CACHE:-~/.cache/lmpipe}/kenlm-0.3.0/lib/liblmpipe_kenlm-<hash>.so``, ``<hash>`` being
the source file's, so a library built from other source is never loaded.  ``$LMPIPE_KENLM_NATIVE`` names a
library file to use instead, or ``0`` to switch it off.  Without it :func:`open_native` returns ``None`` and
callers use the ``kenlm`` module (same numbers, slower): a Ray worker on a machine without the build still
scores correctly.

>>> model = open_native("model.binary")                          # doctest: +SKIP
>>> totals, oov, oov_log10 = model.line_sums(tokens)             # doctest: +SKIP  (tokens: list<string>)
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from lmpipe.lm.kenlm_tools import cache_bin_dir
from lmpipe.pipelines.core.errors import MissingError

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("native") / "kenlm_lines.cc"
#: Must equal ``lmpipe_kenlm_abi()`` in the source: the signatures declared in :func:`_bind`.
ABI = 2
_ERROR_BYTES = 4096

_i64p = ctypes.POINTER(ctypes.c_int64)
_f64p = ctypes.POINTER(ctypes.c_double)


class NativeScorerError(RuntimeError):
    """The library refused a model file (its C++ message is carried)."""


def library_path() -> Path | None:
    """The scorer library to load, or ``None`` when it is switched off or was not built."""
    chosen = os.environ.get("LMPIPE_KENLM_NATIVE", "")
    if chosen == "0":
        return None
    if chosen:
        return Path(chosen)
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    path = cache_bin_dir().parent / "lib" / f"liblmpipe_kenlm-{digest}.so"
    return path if path.is_file() else None


@functools.cache
def _library(path: str) -> ctypes.CDLL:
    lib = ctypes.CDLL(path)
    _bind(lib)
    if lib.lmpipe_kenlm_abi() != ABI:
        raise NativeScorerError(f"{path}: ABI {lib.lmpipe_kenlm_abi()}, this lmpipe needs {ABI}; rebuild: make kenlm")
    return lib


def _bind(lib: ctypes.CDLL) -> None:
    lib.lmpipe_kenlm_abi.restype = ctypes.c_int
    lib.lmpipe_kenlm_abi.argtypes = []
    lib.lmpipe_kenlm_open.restype = ctypes.c_void_p
    lib.lmpipe_kenlm_open.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.lmpipe_kenlm_close.restype = None
    lib.lmpipe_kenlm_close.argtypes = [ctypes.c_void_p]
    lib.lmpipe_kenlm_order.restype = ctypes.c_int
    lib.lmpipe_kenlm_order.argtypes = [ctypes.c_void_p]
    lib.lmpipe_kenlm_knows.restype = ctypes.c_int
    lib.lmpipe_kenlm_knows.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    batch = [ctypes.c_void_p, ctypes.c_void_p, _i64p, _i64p, ctypes.c_int64]
    lib.lmpipe_kenlm_line_sums.restype = None
    lib.lmpipe_kenlm_line_sums.argtypes = [*batch, _f64p, _i64p, _f64p]
    lib.lmpipe_kenlm_text_sums.restype = None
    lib.lmpipe_kenlm_text_sums.argtypes = [ctypes.c_void_p, ctypes.c_void_p, _i64p, ctypes.c_int64, _f64p, _i64p, _f64p, _i64p, ctypes.c_void_p]
    lib.lmpipe_kenlm_token_scores.restype = ctypes.c_int64
    lib.lmpipe_kenlm_token_scores.argtypes = [*batch, ctypes.POINTER(ctypes.c_float), ctypes.c_void_p, ctypes.c_int64]


def _ptr(array: np.ndarray, kind=_i64p):
    return array.ctypes.data_as(kind)


def _strings(values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, pa.Buffer | None, int | None]:
    """A string column as the C side reads it: int64 offsets into its bytes (a slice's own), the bytes' buffer
    (the caller keeps it alive while C reads it) and their address (None when there are none)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not pa.types.is_large_string(values.type):
        values = values.cast(pa.string())
    width = np.int64 if pa.types.is_large_string(values.type) else np.int32
    offsets = np.frombuffer(values.buffers()[1], dtype=width)[values.offset : values.offset + len(values) + 1]
    data = values.buffers()[2]
    return np.ascontiguousarray(offsets, dtype=np.int64), data, data.address if data is not None and data.size else None


class _Batch:
    """A ``list<string>`` column as the C++ side reads it: the tokens' bytes, int64 token offsets into them and
    int64 line offsets into the tokens (slices and int32/int64 offsets normalised here, without copying text)."""

    def __init__(self, lines: pa.ListArray | pa.ChunkedArray) -> None:
        if isinstance(lines, pa.ChunkedArray):
            lines = lines.combine_chunks()
        self.lines = len(lines)
        self.line_offsets = np.ascontiguousarray(np.asarray(lines.offsets, dtype=np.int64))
        self.token_offsets, self.data, self.address = _strings(lines.values)  # data kept alive with the batch
        self.tokens = int(self.line_offsets[-1] - self.line_offsets[0]) if self.lines else 0

    def args(self) -> list:
        return [ctypes.c_void_p(self.address), _ptr(self.token_offsets), _ptr(self.line_offsets), self.lines]


class NativeKenLM:
    """A KenLM model (ARPA or any binary kind, mmapped as KenLM does) scored by lmpipe's C++ batch loop."""

    def __init__(self, lib: ctypes.CDLL, path: Path) -> None:
        path = Path(path)
        if not path.exists():
            raise MissingError(f"{path}: no such language model file")
        error = ctypes.create_string_buffer(_ERROR_BYTES)
        handle = lib.lmpipe_kenlm_open(os.fsencode(path), error, _ERROR_BYTES)
        if not handle:
            message = error.value.decode("utf-8", "replace").strip().replace("\n", " ")
            raise NativeScorerError(f"{path}: KenLM cannot read this model ({message})")
        self._lib, self._handle, self.path = lib, ctypes.c_void_p(handle), path
        self.order = lib.lmpipe_kenlm_order(self._handle)

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle:
            self._lib.lmpipe_kenlm_close(handle)
            self._handle = None

    def __contains__(self, word: str) -> bool:
        """Whether KenLM has the word (``kenlm.Model``'s ``in``): its index is not ``<unk>``'s."""
        raw = word.encode("utf-8")
        return bool(self._lib.lmpipe_kenlm_knows(self._handle, raw, len(raw)))

    def line_sums(self, lines: pa.ListArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per line of words: float32 log10 total (words and ``</s>``, after ``<s>``), OOV count (int64), and
        the OOV words' log10 sum (float64).  A token holding whitespace is several words, as KenLM splits."""
        batch = _Batch(lines)
        total, oov_log10 = np.empty(batch.lines), np.empty(batch.lines)
        oov = np.empty(batch.lines, dtype=np.int64)
        if batch.lines:
            self._lib.lmpipe_kenlm_line_sums(self._handle, *batch.args(), _ptr(total, _f64p), _ptr(oov), _ptr(oov_log10, _f64p))
        return total, oov, oov_log10

    def text_sums(self, text: pa.StringArray) -> tuple[np.ndarray, ...]:
        """Whole lines split on Unicode whitespace in C++, as ``pipelines.tokenizers.WhitespaceTokenizer``
        splits them (no token arrays built): :meth:`line_sums`'s three columns, each line's word count (int64)
        and whether it holds a literal ``<s>``, ``</s>`` or ``<unk>`` (bool; the caller applies its policy)."""
        line_offsets, data, address = _strings(text)  # data: alive while C reads it
        n = len(line_offsets) - 1
        total, oov_log10 = np.empty(n), np.empty(n)
        oov, words = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
        special = np.empty(n, dtype=np.uint8)
        if n:
            self._lib.lmpipe_kenlm_text_sums(
                self._handle, ctypes.c_void_p(address), _ptr(line_offsets), n, _ptr(total, _f64p), _ptr(oov),
                _ptr(oov_log10, _f64p), _ptr(words), special.ctypes.data,
            )  # fmt: skip
        return total, oov, oov_log10, words, special.astype(bool)

    def token_scores(self, lines: pa.ListArray) -> tuple[np.ndarray, np.ndarray]:
        """Every predicted word's float32 log10 p (``</s>`` closing each line) and its OOV flag, in order:
        what ``kenlm.Model.full_scores`` yields line after line."""
        batch = _Batch(lines)
        capacity = batch.tokens + batch.lines
        while True:
            log10 = np.empty(capacity, dtype=np.float32)
            oov = np.empty(capacity, dtype=np.uint8)
            written = self._lib.lmpipe_kenlm_token_scores(
                self._handle, *batch.args(), _ptr(log10, ctypes.POINTER(ctypes.c_float)), oov.ctypes.data, capacity
            ) if batch.lines else 0
            if written >= 0:
                return log10[:written].astype(np.float64), oov[:written].astype(bool)
            capacity *= 2  # a token held whitespace: KenLM saw more words than tokens


def open_native(path: Path) -> NativeKenLM | None:
    """The model through lmpipe's C++ scorer, or ``None`` when the library is absent or switched off."""
    lib_path = library_path()
    if lib_path is None:
        logger.debug("lmpipe's KenLM scorer is not built (make kenlm); using the kenlm module")
        return None
    return NativeKenLM(_library(str(lib_path)), path)
