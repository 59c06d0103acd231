"""Score a run's split with its n-gram model, with KenLM's accounting (see ``lm.perplexity``).

    >>> from lmpipe.pipelines.evaluate import evaluate_ngram
    >>> evaluate_ngram(Path("runs/ptb"), split="test")["perplexity"]   # 141.2 for PTB KN5

The split's token shards are turned back into words through ``vocab.tsv`` (id 0 is written ``<unk>``,
which KenLM scores as its unknown word) and scored sentence by sentence with ``kenlm.Model``; the sums
are whole-corpus, so the result equals what KenLM's ``query`` prints for the same text.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from lmpipe.lm.perplexity import CorpusScore, load_kenlm
from lmpipe.lm.token_scores import ScoresBuilder, write_token_scores
from lmpipe.pipelines.core.errors import MissingError
from lmpipe.pipelines.core.schemas import EOS_ID
from lmpipe.pipelines.core.shards import iter_batches
from lmpipe.pipelines.core.vocab import Vocab
from lmpipe.pipelines.rundir import read_manifest


def split_sentences(run_dir: Path, split: str) -> Iterator[str]:
    """The sentences of a tokenized split as whitespace-joined words, in input order."""
    for _, text in split_id_sentences(run_dir, split):
        yield text


def split_id_sentences(run_dir: Path, split: str) -> Iterator[tuple[np.ndarray, str]]:
    """``(ids, whitespace-joined words)`` of every sentence of a tokenized split, in input order."""
    stage = Path(run_dir) / "tokenize"
    if read_manifest(run_dir, "tokenize") is None:
        raise MissingError(f"{stage}: the tokenize stage has not completed; run `lmpipe run SPEC` first")
    words = np.asarray(Vocab.load(stage / "vocab.tsv").tokens.to_pylist(), dtype=object)
    for batch in iter_batches(stage, split, ["ids"]):
        ids = batch.column(0)
        flat = np.asarray(pc.list_flatten(ids))
        offsets = np.asarray(ids.offsets, dtype=np.int64)
        offsets -= offsets[0]
        text = words[flat]
        for a, b in zip(offsets[:-1], offsets[1:], strict=True):
            yield flat[a:b], " ".join(text[a:b])


def model_path(run_dir: Path) -> Path:
    """The run's n-gram model: KenLM binary if built, else the ARPA (plain or gzip)."""
    stage = Path(run_dir) / "ngram"
    for name in ("model.binary", "model.arpa", "model.arpa.gz"):
        if (stage / name).exists():
            return stage / name
    raise MissingError(
        f"{stage}: no n-gram model; run the ngram stage (`lmpipe run SPEC --stages ngram`)"
    )


def evaluate_ngram(
    run_dir: Path, split: str = "test", model_file: Path | None = None, scores_out: Path | None = None
) -> dict[str, Any]:
    """Whole-corpus perplexity (with and without OOVs), OOV count and rate, tokens scored; with
    ``scores_out``, every token's log10 probability is also written there (``lm.token_scores``)."""
    model = load_kenlm(model_file or model_path(run_dir))
    score = CorpusScore()
    builder = ScoresBuilder() if scores_out is not None else None
    for ids, sentence in split_id_sentences(run_dir, split):
        scored = list(model.full_scores(sentence, bos=True, eos=True))
        log10_probs, oov = [s[0] for s in scored], [s[2] for s in scored]
        score.add(log10_probs, oov)
        if builder is not None:
            builder.add_sentence(np.append(ids, EOS_ID), np.asarray(log10_probs), np.asarray(oov))
    if builder is not None:
        write_token_scores(scores_out, builder.build())
    if score.tokens == 0:
        raise ValueError(f"{run_dir}: split {split!r} is empty; nothing to score")
    return {
        "split": split,
        "model": str(model_file or model_path(run_dir)),
        "order": model.order,
        **score.to_dict(),
    }
