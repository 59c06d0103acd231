"""The trained-vectors artifact: a vocabulary and a float32 matrix, nothing about how they were trained.

SGNS and GloVe both export this one type, and evaluation reads only this type (the gensim split between
``KeyedVectors`` and ``Word2Vec``): training state (output vectors, optimiser, sampling tables) is discarded
once the vectors are written, and a consumer never needs torch.

On disk a ``Vectors`` is a directory::

    vectors.npy   float32 (count, dim), C order; loaded with mmap_mode="r" so a 1 GB matrix costs no RAM
    vocab.tsv     header "id<TAB>token<TAB>count", then one row per vector in matrix order; count may be
                  empty when unknown (vectors imported from a foreign file); ``core.vocab_tsv``
    meta.json     {"format", "version", "dim", "count", "dtype", "source", "sha256": {file: hex}}

It is written to a temporary sibling directory and renamed into place, so a reader never sees half of it.

>>> import numpy as np
>>> vecs = Vectors(["king", "queen", "apple"], np.array([[1, 0], [0.9, 0.1], [0, 1]], np.float32))
>>> [w for w, _ in vecs.most_similar("king", k=1)]
['queen']
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from lmpipe.pipelines.core.files import make_temp_dir, sha256_file
from lmpipe.pipelines.core.vocab_tsv import read_vocab_tsv, write_vocab_tsv

logger = logging.getLogger(__name__)

FORMAT_NAME = "lmpipe.vectors"
FORMAT_VERSION = 1
#: Rows of the matrix scored per matmul in ``nearest``: bounds the temporary (chunk x queries) array.
_CHUNK_ROWS = 65536


class Vectors:
    """Tokens, an optional count per token, and a ``(count, dim)`` float32 matrix, one row per token.

    The matrix may be a read-only memmap (after :meth:`load`); methods never write to it.  Row order is
    the caller's (normally vocabulary id order, i.e. descending count), which ``restrict`` arguments and
    the evaluation's ``restrict_vocab`` rely on, as in gensim.
    """

    def __init__(
        self,
        tokens: Sequence[str],
        matrix: np.ndarray,
        counts: np.ndarray | Sequence[int] | None = None,
        *,
        source: str = "",
    ) -> None:
        if matrix.ndim != 2 or matrix.shape[0] != len(tokens):
            raise ValueError(f"matrix shape {matrix.shape} does not match {len(tokens)} tokens")
        if matrix.dtype != np.float32:
            raise ValueError(f"Vectors holds float32 only, got {matrix.dtype}; cast with .astype(np.float32)")
        self.tokens: list[str] = list(tokens)
        self.matrix: np.ndarray = matrix
        self.counts: np.ndarray | None = None if counts is None else np.asarray(counts, dtype=np.uint64)
        if self.counts is not None and self.counts.shape != (len(self.tokens),):
            raise ValueError(f"counts shape {self.counts.shape} does not match {len(self.tokens)} tokens")
        self.source = source
        self.key_to_index: dict[str, int] = {}
        for i, tok in enumerate(self.tokens):
            if self.key_to_index.setdefault(tok, i) != i:
                raise ValueError(f"duplicate token {tok!r} at rows {self.key_to_index[tok]} and {i}")
        self._norms: np.ndarray | None = None

    # -- mapping ----------------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return token in self.key_to_index

    def __repr__(self) -> str:
        return f"Vectors(count={len(self)}, dim={self.dim}, source={self.source!r})"

    def index(self, token: str) -> int:
        """Row of ``token``; KeyError names the token (gensim's message style)."""
        try:
            return self.key_to_index[token]
        except KeyError:
            raise KeyError(f"token {token!r} not present in vocabulary of {len(self)} tokens") from None

    def __getitem__(self, token: str) -> np.ndarray:
        return self.matrix[self.index(token)]

    @property
    def norms(self) -> np.ndarray:
        """L2 norm of every row, computed once; summed in float64 so rows of ~1e-20 do not underflow to 0."""
        if self._norms is None:
            norms = np.empty(len(self), dtype=np.float32)
            for start in range(0, len(self), _CHUNK_ROWS):
                block = np.asarray(self.matrix[start : start + _CHUNK_ROWS], dtype=np.float64)
                norms[start : start + len(block)] = np.sqrt(np.einsum("ij,ij->i", block, block))
            self._norms = norms
        return self._norms

    def normalized(self) -> Vectors:
        """A copy with unit-length rows (zero rows stay zero), e.g. for exporting cosine-ready vectors."""
        norms = self.norms.copy()
        norms[norms == 0] = 1.0
        return Vectors(self.tokens, self.matrix / norms[:, None], self.counts, source=self.source)

    # -- similarity -------------------------------------------------------------------------------------
    def nearest(
        self,
        queries: np.ndarray,
        k: int = 10,
        *,
        exclude: Sequence[Iterable[int]] | None = None,
        restrict: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows by cosine similarity for each row of ``queries`` (Q x dim), best first.

        ``exclude[q]`` lists rows never returned for query ``q``; ``restrict`` searches only the first rows.
        The matrix is scored in chunks of rows with one matmul each, so memory stays O(chunk x Q).
        Returns ``(ids, scores)``, both (Q x k'), k' = min(k, searchable rows); excluded rows have score -inf.
        """
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if queries.shape[1] != self.dim:
            raise ValueError(f"query dim {queries.shape[1]} != vectors dim {self.dim}")
        qnorm = np.linalg.norm(queries, axis=1, keepdims=True)
        queries = queries / np.where(qnorm == 0, 1.0, qnorm)
        n = len(self) if restrict is None else min(restrict, len(self))
        k = min(k, n)
        if k <= 0:
            return np.zeros((len(queries), 0), dtype=np.int64), np.zeros((len(queries), 0), dtype=np.float32)
        best_ids = np.zeros((len(queries), 0), dtype=np.int64)
        best_scores = np.zeros((len(queries), 0), dtype=np.float32)
        for start in range(0, n, _CHUNK_ROWS):
            stop = min(n, start + _CHUNK_ROWS)
            norms = self.norms[start:stop]
            scores = (np.asarray(self.matrix[start:stop]) @ queries.T).T / np.where(norms == 0, 1.0, norms)
            if exclude is not None:
                for q, rows in enumerate(exclude):
                    rows = [r - start for r in rows if start <= r < stop]
                    scores[q, rows] = -np.inf
            ids = np.broadcast_to(np.arange(start, stop), scores.shape)
            scores = np.concatenate([best_scores, scores], axis=1)
            ids = np.concatenate([best_ids, ids], axis=1)
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else None
            if top is not None:
                scores = np.take_along_axis(scores, top, axis=1)
                ids = np.take_along_axis(ids, top, axis=1)
            order = np.argsort(-scores, axis=1, kind="stable")
            best_scores = np.take_along_axis(scores, order, axis=1)
            best_ids = np.take_along_axis(ids, order, axis=1)
        return best_ids, best_scores

    def most_similar(
        self,
        query: str | np.ndarray,
        k: int = 10,
        *,
        exclude: Iterable[str] = (),
        restrict: int | None = None,
    ) -> list[tuple[str, float]]:
        """The ``k`` tokens most cosine-similar to a token or a vector.

        A token query is never its own answer (gensim's behaviour); ``exclude`` removes more tokens.
        """
        skip = {self.index(t) for t in exclude}
        if isinstance(query, str):
            skip.add(self.index(query))
            query = self.matrix[self.index(query)]
        ids, scores = self.nearest(
            np.asarray(query)[None, :], k + len(skip), exclude=[skip], restrict=restrict
        )
        out = [(self.tokens[i], float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i not in skip]
        return out[:k]

    def analogy(
        self, positive: Sequence[str], negative: Sequence[str] = (), k: int = 10, *, method: str = "3cosadd"
    ) -> list[tuple[str, float]]:
        """The ``k`` best answers to ``positive - negative`` (``king - man + woman``), the query words excluded.

        ``3cosadd`` is gensim's ``most_similar(positive, negative)``: the cosine with the mean of the unit
        query vectors, weighted +1 / -1.  ``3cosmul`` is its ``most_similar_cosmul`` (Levy & Goldberg 2014,
        eq. 4): the product of the positive cosines over the product of the negative ones, each shifted to
        [0, 1], with 1e-6 added to the denominator.  Unknown words raise KeyError naming the word.
        """
        if not positive:
            raise ValueError("an analogy needs at least one positive word")
        pos = [self.matrix[self.index(t)] / max(float(self.norms[self.index(t)]), 1e-30) for t in positive]
        neg = [self.matrix[self.index(t)] / max(float(self.norms[self.index(t)]), 1e-30) for t in negative]
        skip = {self.index(t) for t in (*positive, *negative)}
        if method == "3cosadd":
            mean = np.mean(np.array(pos + [-v for v in neg], dtype=np.float32), axis=0)
            return self.most_similar(mean, k, exclude=[self.tokens[i] for i in skip])
        if method != "3cosmul":
            raise ValueError(f"unknown analogy method {method!r}; options are ['3cosadd', '3cosmul']")
        norms = np.where(self.norms == 0, 1.0, self.norms)
        scores = np.ones(len(self), dtype=np.float32)
        for v in pos:
            scores *= (1 + (self.matrix @ v.astype(np.float32)) / norms) / 2
        denom = np.ones(len(self), dtype=np.float32)
        for v in neg:
            denom *= (1 + (self.matrix @ v.astype(np.float32)) / norms) / 2
        scores = scores / (denom + np.float32(1e-6))  # no negative word: gensim's empty product, 1
        scores[list(skip)] = -np.inf
        top = np.argsort(-scores, kind="stable")[: min(k, len(self) - len(skip))]
        return [(self.tokens[i], float(scores[i])) for i in top]

    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of two tokens, computed in float64."""
        va, vb = self[a].astype(np.float64), self[b].astype(np.float64)
        denom = np.linalg.norm(va) * np.linalg.norm(vb)
        return float(va @ vb / denom) if denom > 0 else 0.0

    # -- storage ----------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the directory layout of the module docstring atomically (temp dir + rename).

        An existing ``path`` is replaced only with ``overwrite=True``; the old directory is moved aside
        first and deleted after the new one is in place, so a crash leaves one complete copy.
        """
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = make_temp_dir(path)  # not mkdtemp: its 0700 would survive the rename (see core.files)
        try:
            np.save(tmp / "vectors.npy", np.ascontiguousarray(self.matrix))
            write_vocab_tsv(tmp / "vocab.tsv", self.tokens, self.counts)
            meta = {
                "format": FORMAT_NAME,
                "version": FORMAT_VERSION,
                "dim": self.dim,
                "count": len(self),
                "dtype": "float32",
                "source": self.source,
                "sha256": {name: sha256_file(tmp / name) for name in ("vectors.npy", "vocab.tsv")},
            }
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            old = None
            if path.exists():
                old = path.parent / f".{path.name}.old-{os.getpid()}"
                os.replace(path, old)
            os.replace(tmp, path)
            if old is not None:
                shutil.rmtree(old)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        logger.info("wrote vectors %s: %d x %d float32 (source %r)", path, len(self), self.dim, self.source)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, mmap_mode: str | None = "r", verify: bool = False) -> Vectors:
        """Load a directory written by :meth:`save`; the matrix is memory-mapped read-only by default.

        ``verify=True`` re-hashes both files against meta.json (reads the whole matrix once).
        """
        path = Path(path)
        meta_path = path / "meta.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{path} is not a vectors directory: no meta.json")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT_NAME or meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"{meta_path}: unsupported format {meta.get('format')!r} v{meta.get('version')}")
        if verify:
            for name, digest in meta["sha256"].items():
                if sha256_file(path / name) != digest:
                    raise ValueError(f"{path / name}: sha256 does not match meta.json (corrupt or edited)")
        matrix = np.load(path / "vectors.npy", mmap_mode=mmap_mode)
        tokens, counts = read_vocab_tsv(path / "vocab.tsv")
        if matrix.shape != (meta["count"], meta["dim"]):
            raise ValueError(f"{path}: matrix {matrix.shape} != meta ({meta['count']}, {meta['dim']})")
        logger.info(
            "loaded vectors %s: %d x %d (mmap_mode=%s)", path, len(tokens), matrix.shape[1], mmap_mode
        )
        return cls(tokens, matrix, counts, source=meta.get("source", ""))
