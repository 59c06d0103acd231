"""Per-token log-probabilities of a model on a split, written once and read by mixtures, the report and
significance tests, so no model is re-run to combine or compare it.

File: Arrow IPC (``pipelines.core.schemas.TOKEN_SCORES``), one row per predicted token in input order: the
sentence index, the predicted id (``</s>`` = EOS_ID once per sentence, an OOV word = UNK_ID), its log10
probability and the OOV flag: exactly the terms ``lm.perplexity.CorpusScore`` sums.

Stages that score models list their files in the manifest::

    "token_scores": {"kn5": {"valid": "scores/kn5/valid.arrow", "test": "scores/kn5/test.arrow"}}

(paths relative to the stage folder); ``pipelines.run_scores.find_token_scores`` gathers them over a run.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from lmpipe.lm.perplexity import CorpusScore
from lmpipe.pipelines.core.files import read_table
from lmpipe.pipelines.core.schemas import TOKEN_SCORES


@dataclass(frozen=True, slots=True)
class TokenScores:
    """One model's scores of one split, as numpy columns."""

    sentence: np.ndarray  # uint32, non-decreasing
    token: np.ndarray  # uint32
    log10_prob: np.ndarray  # float64
    oov: np.ndarray  # bool

    def __post_init__(self) -> None:
        n = len(self.token)
        if not (len(self.sentence) == len(self.log10_prob) == len(self.oov) == n):
            raise ValueError("token scores: columns of different lengths")

    def __len__(self) -> int:
        return len(self.token)

    def corpus_score(self) -> CorpusScore:
        score = CorpusScore()
        score.add(self.log10_prob, self.oov, sentences=self.sentences)
        return score

    @property
    def sentences(self) -> int:
        return int(self.sentence[-1]) + 1 if len(self.sentence) else 0

    def per_sentence(self) -> tuple[np.ndarray, np.ndarray]:
        """``(log10 sum, tokens)`` of every sentence, for resampling whole sentences."""
        n = self.sentences
        sums = np.bincount(self.sentence, weights=self.log10_prob, minlength=n)
        counts = np.bincount(self.sentence, minlength=n)
        return sums, counts

    def previous_tokens(self, bos_id: int) -> np.ndarray:
        """The id before each predicted token in its sentence (``bos_id`` for a sentence's first token)."""
        prev = np.empty_like(self.token)
        prev[0:1] = bos_id
        prev[1:] = self.token[:-1]
        starts = np.ones(len(self.token), dtype=bool)
        starts[1:] = self.sentence[1:] != self.sentence[:-1]
        prev[starts] = bos_id
        return prev


def write_token_scores(path: Path, scores: TokenScores) -> dict[str, int | str]:
    """Write atomically (temporary name, then rename); returns the manifest entry fields."""
    table = pa.table(
        {
            "sentence": pa.array(scores.sentence, pa.uint32()),
            "token": pa.array(scores.token, pa.uint32()),
            "log10_prob": pa.array(scores.log10_prob, pa.float64()),
            "oov": pa.array(scores.oov, pa.bool_()),
        },
        schema=TOKEN_SCORES,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    with pa.ipc.new_file(
        str(tmp), TOKEN_SCORES, options=pa.ipc.IpcWriteOptions(compression="zstd")
    ) as writer:
        writer.write_table(table, max_chunksize=1 << 20)
    os.replace(tmp, path)
    return {"rows": len(scores)}


def read_token_scores(path: Path) -> TokenScores:
    table = read_table(path)
    if not table.schema.equals(TOKEN_SCORES):
        raise ValueError(f"{path}: not a token-scores file (schema {table.schema})")
    return TokenScores(
        sentence=table.column("sentence").to_numpy(),
        token=table.column("token").to_numpy(),
        log10_prob=table.column("log10_prob").to_numpy(),
        oov=table.column("oov").to_numpy(zero_copy_only=False),
    )


class ScoresBuilder:
    """Accumulates sentence after sentence (e.g. from KenLM's ``full_scores``) into :class:`TokenScores`."""

    def __init__(self) -> None:
        self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._sentences = 0

    def add_sentence(self, tokens: np.ndarray, log10_probs: np.ndarray, oov: np.ndarray) -> None:
        n = len(tokens)
        self._parts.append(
            (
                np.full(n, self._sentences, np.uint32),
                np.asarray(tokens, np.uint32),
                np.asarray(log10_probs, np.float64),
                np.asarray(oov, bool),
            )
        )
        self._sentences += 1

    def build(self) -> TokenScores:
        if not self._parts:
            return TokenScores(np.zeros(0, np.uint32), np.zeros(0, np.uint32), np.zeros(0), np.zeros(0, bool))
        cols = [np.concatenate(c) for c in zip(*self._parts, strict=True)]
        return TokenScores(*cols)


def check_same_stream(named: dict[str, TokenScores]) -> None:
    """Models to be mixed or compared token by token must have predicted the same tokens in the same order
    (same tokenization and vocabulary); otherwise say which differ and where."""
    items = list(named.items())
    first_name, first = items[0]
    for name, other in items[1:]:
        if len(other) != len(first):
            raise ValueError(
                f"{first_name} scored {len(first):,} tokens and {name} {len(other):,}: different token streams "
                "(tokenizer, vocabulary or split differ), so they cannot be mixed or compared token by token"
            )
        diff = np.flatnonzero((other.token != first.token) | (other.sentence != first.sentence))
        if len(diff):
            i = int(diff[0])
            raise ValueError(
                f"{first_name} and {name} predict different tokens ({len(diff):,} positions differ, first at token {i} "
                f"of sentence {int(first.sentence[i])}: id {int(first.token[i])} vs {int(other.token[i])}): different "
                "vocabularies or tokenizers, so they cannot be mixed or compared token by token"
            )
