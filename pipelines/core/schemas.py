"""Arrow schemas of every artifact lmpipe writes, in one place, never inferred.

Glossary (one name per thing, everywhere):
  * *source*   -- one input file; sources are numbered in the order the tokenize manifest lists them.
  * *sentence* -- one input line (text/jsonl/Parquet record line) after normalisation and tokenization;
                  a row of the TOKENS schema.  Sentence ends (``</s>``) and starts (``<s>``) are *not*
                  stored: consumers add them (KenLM's convention: ``<s>`` is context only, one ``</s>``
                  is predicted per sentence).
  * *shard*    -- one Arrow IPC file of a split (``part-00000.arrow``), a few hundred MB at most.
  * *block*    -- one in-memory ``pa.Table`` handed between Ray Data operators.
  * *order*    -- the n of an n-gram.

Token ids are ``uint32`` (4 G types is far beyond any vocabulary; ``uint16`` would cap it at 65,536, which
sentencepiece vocabularies of 32k fit but word vocabularies of large corpora do not).  Counts are ``uint64``.
"""

from __future__ import annotations

import pyarrow as pa

UNK = "<unk>"
BOS = "<s>"
EOS = "</s>"
SPECIALS = (UNK, BOS, EOS)
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
#: The first id an ordinary (non-special) token can have.
FIRST_WORD_ID = 3
#: Where a space goes in ``char`` tokenization: a visible token, as sentencepiece writes it, so that the
#: output stays whitespace-separable (ARPA files, lmplz input).
SPACE_MARK = "\u2581"
#: The ordinary words literal specials become under ``literal_specials: rename``.  Not ``<UNK>``: KenLM
#: reads ``<UNK>`` as its unknown word too (lm/vocab.cc), which would turn the renamed word back into an OOV.
RENAMED_SPECIALS = {UNK: "[unk]", BOS: "[s]", EOS: "[/s]"}

TOKEN_ID = pa.uint32()
COUNT = pa.uint64()

#: One row per kept sentence.  ``position`` locates the line in its source: the byte offset of the line's
#: first byte in the (decompressed) file for text and JSONL, the row index for Parquet.  ``doc`` is the
#: document id (a 64-bit hash of source path and document start); text files are one document unless
#: ``corpus.documents: blank_line``.
TOKENS = pa.schema(
    [
        pa.field("source", pa.uint32(), nullable=False),
        pa.field("position", pa.uint64(), nullable=False),
        pa.field("doc", pa.uint64(), nullable=False),
        pa.field("ids", pa.list_(pa.field("item", TOKEN_ID, nullable=False)), nullable=False),
    ]
)

#: The vocabulary, in id order: specials first (0 ``<unk>``, 1 ``<s>``, 2 ``</s>``), then ordinary tokens by
#: descending training count, ties broken by the token's UTF-8 bytes, so the same corpus always gives the
#: same ids.  ``count`` is the training-split count (``<s>`` counts 0; ``</s>`` counts sentences).
VOCAB = pa.schema(
    [
        pa.field("id", TOKEN_ID, nullable=False),
        pa.field("token", pa.string(), nullable=False),
        pa.field("count", COUNT, nullable=False),
    ]
)

#: Partial token counts produced per block before the vocabulary exists (strings, not ids).
TOKEN_COUNTS = pa.schema(
    [pa.field("token", pa.string(), nullable=False), pa.field("count", COUNT, nullable=False)]
)


def ngram_schema(order: int) -> pa.Schema:
    """Counts of n-grams of one order: ids ``w0 .. w{order-1}`` (left to right) and a ``count``."""
    if not 1 <= order <= 6:
        raise ValueError(f"n-gram order must be in 1..6, got {order}")
    fields = [pa.field(f"w{i}", TOKEN_ID, nullable=False) for i in range(order)]
    return pa.schema(fields + [pa.field("count", COUNT, nullable=False)])


#: Co-occurrence counts: (row, col) token ids and the 1/distance-weighted value (float64 as Stanford's
#: cooccur accumulates in double).
COOC = pa.schema(
    [
        pa.field("row", TOKEN_ID, nullable=False),
        pa.field("col", TOKEN_ID, nullable=False),
        pa.field("value", pa.float64(), nullable=False),
    ]
)

#: Partial co-occurrence sums spilled between the cooccur stage's map and reduce tasks: ``key`` = row << 32 |
#: col, ``units`` = the value in exact integer units of 1/lcm(1..window) (``embeddings.cooccur``).
COOC_PARTIAL = pa.schema(
    [pa.field("key", pa.uint64(), nullable=False), pa.field("units", pa.uint64(), nullable=False)]
)

#: Per-token scores a model gives a split, shared by the report, mixtures and significance tests: one row
#: per predicted token (words and one ``</s>`` per sentence, KenLM's accounting), log10 probability as KenLM
#: reports it, in input order (``lm.token_scores``).
TOKEN_SCORES = pa.schema(
    [
        pa.field("sentence", pa.uint32(), nullable=False),  # sentence index within the split
        pa.field("token", TOKEN_ID, nullable=False),  # the predicted id (</s> = EOS_ID, OOV = UNK_ID)
        pa.field("log10_prob", pa.float64(), nullable=False),
        pa.field("oov", pa.bool_(), nullable=False),
    ]
)
