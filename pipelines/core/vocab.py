"""The vocabulary: partial token counts -> a deterministic id assignment, and its ``vocab.tsv`` file.

Partial counts come from each chunk (map side) and are summed here (reduce side); only the vocabulary,
never the corpus, is held by the driver.  Ids: 0 ``<unk>``, 1 ``<s>``, 2 ``</s>``, then tokens by
descending count, ties by the token's UTF-8 bytes.  ``min_count`` drops rare tokens (they become
``<unk>``); ``max_size`` caps the total size including the three specials.

``vocab.tsv`` (``core.vocab_tsv``) has a header line ``id<TAB>token<TAB>count`` and one line per id; tokens
never contain a tab or newline (the tokenizers split on whitespace or keep spaces as ``▁``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lmpipe.pipelines.core.schemas import BOS_ID, EOS_ID, SPECIALS, TOKEN_COUNTS, UNK_ID, VOCAB
from lmpipe.pipelines.core.vocab_tsv import read_vocab_tsv, write_vocab_tsv


def merge_token_counts(tables: Iterable[pa.Table]) -> pa.Table:
    """Reduce side: sum partial counts by token (TOKEN_COUNTS schema, unsorted).

    Each table is cast to TOKEN_COUNTS first: a partial table from a worker has nullable fields, the result
    of an earlier merge does not, and Arrow refuses to concatenate the two (a large vocabulary merges more
    than once)."""
    tables = [t.cast(TOKEN_COUNTS) for t in tables if t.num_rows]
    if not tables:
        return TOKEN_COUNTS.empty_table()
    merged = pa.concat_tables(tables).group_by("token").aggregate([("count", "sum")])
    return pa.table({"token": merged["token"], "count": merged["count_sum"].cast(pa.uint64())}, schema=TOKEN_COUNTS)


class TokenCountAccumulator:
    """Sums a stream of partial counts, compacting every ``flush_rows`` rows so memory stays at about
    the vocabulary size plus one batch."""

    def __init__(self, flush_rows: int = 2_000_000) -> None:
        self._merged = TOKEN_COUNTS.empty_table()
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._flush_rows = flush_rows

    def add(self, table: pa.Table) -> None:
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows >= self._flush_rows:
            self._compact()

    def _compact(self) -> None:
        self._merged = merge_token_counts([self._merged, *self._pending])
        self._pending, self._pending_rows = [], 0

    def result(self) -> pa.Table:
        self._compact()
        return self._merged


@dataclass(frozen=True, slots=True)
class Vocab:
    """Tokens in id order with their training counts."""

    tokens: pa.StringArray
    counts: np.ndarray  # uint64, aligned with tokens

    def __len__(self) -> int:
        return len(self.tokens)

    def to_table(self) -> pa.Table:
        ids = pa.array(np.arange(len(self), dtype=np.uint32))
        return pa.table({"id": ids, "token": self.tokens, "count": pa.array(self.counts, pa.uint64())}, schema=VOCAB)

    def lookup(self, tokens: pa.Array) -> pa.Array:
        """Token strings -> uint32 ids, ``<unk>`` for tokens outside the vocabulary."""
        ids = pc.index_in(tokens, value_set=self.tokens)
        return ids.fill_null(UNK_ID).cast(pa.uint32())

    def save(self, path: Path) -> None:
        """Write ``vocab.tsv`` (header ``id token count``) to ``path`` via a temporary file."""
        write_vocab_tsv(path, self.tokens.to_pylist(), self.counts)

    @classmethod
    def load(cls, path: Path) -> Vocab:
        """Read a ``vocab.tsv`` that has a count on every row (a corpus vocabulary)."""
        tokens, counts = read_vocab_tsv(path)
        if counts is None:
            raise ValueError(f"{path}: no counts; a corpus vocabulary needs the count column filled")
        return cls(string_array(tokens), counts)


def string_array(values: list[str]) -> pa.StringArray:
    """``pa.array(values, pa.string())`` built from its two buffers (int32 offsets, UTF-8 bytes).

    Why: ``pa.array`` on any Python or numpy input imports pandas when it is installed (to rule out pandas
    types), ~50 MB of resident memory in a process that otherwise never needs it (the sgns stage's driver)."""
    data = [v.encode("utf-8") for v in values]
    offsets = np.zeros(len(data) + 1, np.int64)
    np.cumsum(np.fromiter((len(b) for b in data), np.int64, count=len(data)), out=offsets[1:])
    if offsets[-1] >= 2**31:
        raise ValueError(f"{len(values)} strings of {offsets[-1]} bytes: too large for a string array (2 GiB)")
    return pa.StringArray.from_buffers(len(data), pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(b"".join(data)))


def build_vocab(counts: pa.Table, *, min_count: int, max_size: int | None, sentences: int) -> Vocab:
    """Cut and order the vocabulary.  ``sentences`` is the count of ``</s>`` (one per kept sentence);
    ``min_count`` and ``max_size`` are the spec's ``vocab`` settings.

    ``<unk>``'s count is the mass of the tokens the cut removed (and literal ``<unk>`` mapped to it)."""
    specials = pa.array(list(SPECIALS))
    is_special = pc.is_in(counts["token"], value_set=specials)
    literal_unk = counts.filter(pc.equal(counts["token"], SPECIALS[UNK_ID]))
    words = counts.filter(pc.invert(is_special))
    order = pc.sort_indices(
        pa.table({"neg": pc.negate(words["count"].cast(pa.int64())), "bytes": words["token"].cast(pa.binary())}),
        sort_keys=[("neg", "ascending"), ("bytes", "ascending")],
    )
    words = words.take(order)
    keep = pc.greater_equal(words["count"], min_count)
    kept = words.filter(keep)
    if max_size is not None:
        kept = kept.slice(0, max(max_size - len(SPECIALS), 0))
    total = int(pc.sum(counts["count"]).as_py() or 0)
    unk_mass = total - int(pc.sum(kept["count"]).as_py() or 0) - int(pc.sum(counts.filter(is_special)["count"]).as_py() or 0)
    unk_mass += int(pc.sum(literal_unk["count"]).as_py() or 0)
    special_counts = [0, 0, 0]
    special_counts[UNK_ID], special_counts[BOS_ID], special_counts[EOS_ID] = unk_mass, 0, sentences
    tokens = pa.concat_arrays([specials, kept["token"].combine_chunks()]) if kept.num_rows else specials
    counts_out = np.concatenate([np.asarray(special_counts, np.uint64), np.asarray(kept["count"], np.uint64)])
    return Vocab(tokens.cast(pa.string()), counts_out)
