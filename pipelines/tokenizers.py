"""Tokenizers: a normalised line (``pa.StringArray``) -> tokens (``list<string>``) or ids (``list<uint32>``).

Four kinds, one interface.  ``whitespace`` (as PTB and WikiText ship) runs entirely in Arrow compute; the
``regex`` and ``char`` kinds run Python per line; ``sentencepiece`` encodes straight to ids with the piece
ids laid out so that 0/1/2 are ``<unk>``/``<s>``/``</s>`` like every other vocabulary of lmpipe.

    >>> tok = make_tokenizer(TokenizerSpec(kind="whitespace"))
    >>> tok.tokens(pa.array([" the cat  sat "])).to_pylist()
    [['the', 'cat', 'sat']]

Sentencepiece models are trained on a deterministic sample (``train_sentencepiece``) and travel to Ray
actors as their serialized proto bytes, so every worker holds the same model without a shared disk.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lmpipe.pipelines.core.schemas import BOS, EOS, RENAMED_SPECIALS, SPACE_MARK, SPECIALS, TOKEN_ID, UNK


class TokenizerSettings(Protocol):
    """What a tokenizer reads of its settings (``spec.TokenizerSpec`` has these fields).  A protocol, not the
    spec class, so a Ray worker that tokenizes never imports the spec parser."""

    @property
    def kind(self) -> str: ...
    @property
    def pattern(self) -> str: ...
    @property
    def sp_model_type(self) -> str: ...
    @property
    def sp_vocab_size(self) -> int: ...
    @property
    def sp_character_coverage(self) -> float: ...


def list_parts(values: pa.ListArray) -> tuple[pa.Array, np.ndarray]:
    """The flat values and zero-based int64 offsets of a (possibly sliced) list array."""
    offsets = np.asarray(values.offsets, dtype=np.int64)
    flat = values.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
    return flat, offsets - offsets[0]


def make_list(flat: pa.Array, offsets: np.ndarray) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32), pa.int32()), flat)


def filter_list_values(values: pa.ListArray, keep: np.ndarray) -> pa.ListArray:
    """Drop the flat values where ``keep`` is False, keeping every list (possibly emptied)."""
    flat, offsets = list_parts(values)
    parents = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    lengths = np.bincount(parents[keep], minlength=len(offsets) - 1)
    new_offsets = np.concatenate([[0], np.cumsum(lengths)])
    return make_list(flat.filter(pa.array(keep)), new_offsets)


class WhitespaceTokenizer:
    """Split on runs of Unicode whitespace, in Arrow (no Python loop per line)."""

    def tokens(self, text: pa.StringArray) -> pa.ListArray:
        return pc.utf8_split_whitespace(pc.utf8_trim_whitespace(text))


class RegexTokenizer:
    """Tokens are the matches of a regular expression (default: words with inner hyphens/apostrophes,
    and single punctuation marks)."""

    def __init__(self, pattern: str) -> None:
        self._findall = re.compile(pattern).findall

    def tokens(self, text: pa.StringArray) -> pa.ListArray:
        return pa.array([self._findall(line) for line in text.to_pylist()], pa.list_(pa.string()))


class CharTokenizer:
    """Characters, with each run of whitespace one ``▁`` token (sentencepiece's space mark)."""

    def tokens(self, text: pa.StringArray) -> pa.ListArray:
        out = [list(SPACE_MARK.join(line.split())) for line in text.to_pylist()]
        return pa.array(out, pa.list_(pa.string()))


class SentencePieceTokenizer:
    """A trained sentencepiece model whose ids 0/1/2 are ``<unk>``/``<s>``/``</s>``."""

    def __init__(self, model_proto: bytes) -> None:
        import sentencepiece as spm

        self.model_proto = model_proto
        self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
        if (self._sp.unk_id(), self._sp.bos_id(), self._sp.eos_id()) != (0, 1, 2):
            raise ValueError("sentencepiece model must use unk_id=0, bos_id=1, eos_id=2 (train with train_sentencepiece)")

    def pieces(self) -> list[str]:
        """The vocabulary in id order, with lmpipe's names for the three specials."""
        names = [self._sp.id_to_piece(i) for i in range(self._sp.get_piece_size())]
        names[:3] = list(SPECIALS)
        return names

    def tokens(self, text: pa.StringArray) -> pa.ListArray:
        return pa.array(self._sp.encode(text.to_pylist(), out_type=str), pa.list_(pa.string()))

    def ids(self, text: pa.StringArray) -> pa.ListArray:
        return pa.array(self._sp.encode(text.to_pylist()), pa.list_(TOKEN_ID))

    def __reduce__(self):  # ship the proto bytes, not the C++ object, to Ray actors
        return (SentencePieceTokenizer, (self.model_proto,))


Tokenizer = WhitespaceTokenizer | RegexTokenizer | CharTokenizer | SentencePieceTokenizer


def make_tokenizer(spec: TokenizerSettings, model_proto: bytes | None = None) -> Tokenizer:
    """The tokenizer a spec asks for; ``sentencepiece`` needs the trained model's proto bytes."""
    if spec.kind == "whitespace":
        return WhitespaceTokenizer()
    if spec.kind == "regex":
        return RegexTokenizer(spec.pattern)
    if spec.kind == "char":
        return CharTokenizer()
    if model_proto is None:
        raise ValueError("a sentencepiece tokenizer needs a trained model (train_sentencepiece)")
    return SentencePieceTokenizer(model_proto)


def train_sentencepiece(lines: Sequence[str], spec: TokenizerSettings) -> bytes:
    """Train a sentencepiece model on a sample of lines; returns the serialized model proto.

    Deterministic for the same lines and spec: one thread, fixed seed, no input shuffling."""
    import io

    import sentencepiece as spm

    if not lines:
        raise ValueError("no lines to train sentencepiece on")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type=spec.sp_model_type,
        vocab_size=spec.sp_vocab_size,
        character_coverage=spec.sp_character_coverage,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        unk_piece=UNK,
        bos_piece=BOS,
        eos_piece=EOS,
        num_threads=1,
        shuffle_input_sentence=False,
        input_sentence_size=0,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return model.getvalue()


def handle_literal_specials(tokens: pa.ListArray, policy: str) -> tuple[pa.ListArray, Counter, int | None]:
    """Apply ``normalize.literal_specials`` to tokenized lines.

    Returns the new tokens, counts (``specials_renamed``, ``specials_dropped``) and, for the ``error``
    policy, the row of the first line holding a special (the caller names file and position), else None.
    """
    counts: Counter = Counter()
    flat, offsets = list_parts(tokens)
    is_special = np.asarray(pc.is_in(flat, value_set=pa.array(list(SPECIALS))).fill_null(False), dtype=bool)
    if not is_special.any():
        return tokens, counts, None
    if policy == "error":
        first = int(np.searchsorted(offsets, np.flatnonzero(is_special)[0], side="right") - 1)
        return tokens, counts, first
    if policy == "rename":
        # Replace only the few special positions (one pass), not an if_else per special over every token.
        hits = flat.filter(pa.array(is_special))
        names = pa.array([RENAMED_SPECIALS[t] for t in hits.to_pylist()], pa.string())
        counts["specials_renamed"] += len(names)
        return make_list(pc.replace_with_mask(flat, pa.array(is_special), names), offsets), counts, None
    # map: <unk> is the unknown-word special already; <s>/</s> cannot sit inside a sentence.
    boundary = np.asarray(pc.is_in(flat, value_set=pa.array([BOS, EOS])).fill_null(False), dtype=bool)
    counts["specials_mapped_unk"] += int(is_special.sum() - boundary.sum())
    if boundary.any():
        counts["specials_dropped"] += int(boundary.sum())
        tokens = filter_list_values(tokens, ~boundary)
    return tokens, counts, None
