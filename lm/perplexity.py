"""Perplexity with KenLM's accounting -- the one place every model of the perplexity table is scored.

KenLM's ``query`` (lm/ngram_query.hh) and the Python module agree on these conventions, and so must every
neural model compared with them:

* each sentence is scored as ``log10 p(w1 .. wn </s> | <s>)``: ``<s>`` is context only, and one ``</s>``
  per sentence is a predicted token (so a sentence of n words contributes n + 1 tokens);
* out-of-vocabulary words are scored as ``<unk>`` and counted as OOV;
* perplexity is whole-corpus: ``10 ** (-sum(log10 p) / sum(n_i + 1))`` -- never a mean of per-sentence
  perplexities (kpu/kenlm#69);
* "excluding OOVs" subtracts the OOV tokens' log-probabilities and counts, keeping their context effects.

    >>> score = CorpusScore()
    >>> score.add(log10_probs=[-1.0, -2.0, -1.0], oov=[False, True, False])
    >>> round(score.perplexity(), 3), score.oov_rate()
    (46.416, 0.3333333333333333)
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lmpipe.pipelines.core.errors import MissingError

LN10 = math.log(10.0)


def _pow10(x: float) -> float:
    """``10 ** x``, inf instead of OverflowError (a diverged model's perplexity is inf, not a crash)."""
    try:
        return 10.0**x
    except OverflowError:
        return math.inf


@dataclass(slots=True)
class CorpusScore:
    """Running whole-corpus sums (log10), as KenLM's query keeps them."""

    log10_sum: float = 0.0
    tokens: int = 0  # predicted tokens: words + one </s> per sentence
    sentences: int = 0
    oov: int = 0
    oov_log10_sum: float = 0.0

    def add(
        self, log10_probs: Sequence[float] | np.ndarray, oov: Sequence[bool] | np.ndarray, sentences: int = 1
    ) -> None:
        """Add one or more sentences' per-token log10 probabilities (``</s>`` included) and OOV flags."""
        lp = np.asarray(log10_probs, dtype=np.float64)
        flags = np.asarray(oov, dtype=bool)
        self.log10_sum += float(lp.sum())
        self.tokens += len(lp)
        self.sentences += sentences
        self.oov += int(flags.sum())
        self.oov_log10_sum += float(lp[flags].sum())

    def add_natural(
        self, ln_probs: Sequence[float] | np.ndarray, oov: Sequence[bool] | np.ndarray, sentences: int = 1
    ) -> None:
        """The same for natural-log probabilities (neural models): log10 = ln / ln 10."""
        self.add(np.asarray(ln_probs, dtype=np.float64) / LN10, oov, sentences)

    def merge(self, other: CorpusScore) -> CorpusScore:
        """Sum of two partial scores (e.g. from two workers)."""
        return CorpusScore(
            self.log10_sum + other.log10_sum,
            self.tokens + other.tokens,
            self.sentences + other.sentences,
            self.oov + other.oov,
            self.oov_log10_sum + other.oov_log10_sum,
        )

    def perplexity(self) -> float:
        """Perplexity including OOVs: ``10 ** (-sum log10 p / tokens)``."""
        return _pow10(-self.log10_sum / self.tokens) if self.tokens else float("nan")

    def perplexity_excluding_oov(self) -> float:
        kept = self.tokens - self.oov
        return _pow10(-(self.log10_sum - self.oov_log10_sum) / kept) if kept else float("nan")

    def oov_rate(self) -> float:
        return self.oov / self.tokens if self.tokens else 0.0

    def perplexity_per(self, units: int) -> float:
        """The same total log-probability over another denominator (Mielke 2019): e.g. per-word perplexity of
        a subword or character model with ``units`` = words + one ``</s>`` per sentence (KenLM's n + 1)."""
        return _pow10(-self.log10_sum / units) if units else float("nan")

    def bits_per(self, units: int) -> float:
        """Bits per unit, e.g. bits per byte with ``units`` = UTF-8 bytes of the text (tokenizer-agnostic)."""
        return -self.log10_sum / units / math.log10(2.0) if units else float("nan")

    def cross_entropy_bits(self) -> float:
        """Bits per predicted token (log2 of the perplexity)."""
        return -self.log10_sum / self.tokens / math.log10(2.0) if self.tokens else float("nan")

    def to_dict(self) -> dict[str, float | int]:
        out: dict[str, float | int] = asdict(self)
        out.update(
            perplexity=self.perplexity(),
            perplexity_excluding_oov=self.perplexity_excluding_oov(),
            oov_rate=self.oov_rate(),
        )
        return out


def score_sentences_kenlm(model, sentences: Iterable[str]) -> CorpusScore:
    """Score whitespace-joined sentences with a ``kenlm.Model`` exactly as ``query`` does."""
    score = CorpusScore()
    for sentence in sentences:
        scored = list(model.full_scores(sentence, bos=True, eos=True))
        score.add([s[0] for s in scored], [s[2] for s in scored])
    return score


def load_kenlm(path: Path):
    """Open an ARPA or KenLM binary file with the ``kenlm`` module (named error if it is missing)."""
    try:
        import kenlm
    except ImportError as exc:  # pragma: no cover - kenlm is a dependency
        raise RuntimeError("the kenlm Python module is not installed: pip install kenlm") from exc
    if not Path(path).exists():
        raise MissingError(f"{path}: no such language model file")
    with _without_kenlm_banner():
        return kenlm.Model(str(path))


#: What KenLM's C++ loader prints to stderr on every ARPA load: advice, the file name and a progress bar.
_BANNER = re.compile(rb"^(Loading the LM will be faster if you build a binary file\.|Reading .*|[-*0-9]+)$")


@contextlib.contextmanager
def _without_kenlm_banner() -> Iterator[None]:
    """Hold back KenLM's loading banner (C++ writes it to file descriptor 2, beyond Python's logging):
    stderr goes to a temporary file while the model loads, and every other line it received is written
    back afterwards.  ``lmpipe -v`` keeps the banner."""
    if logging.getLogger("lmpipe").getEffectiveLevel() <= logging.DEBUG:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().splitlines() if line and not _BANNER.match(line)]
            if kept:
                os.write(2, b"\n".join(kept) + b"\n")
