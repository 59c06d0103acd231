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


def kenlm_sentence_totals(model, sentences: Iterable[bytes], count: int) -> np.ndarray:
    """Each sentence's ``log10 p(w1 .. wn </s> | <s>)`` from KenLM's own C++ loop (``Model.score``: split on
    ASCII whitespace, one virtual call per word, no Python per token).

    The per-token float32 probabilities are added in a float32, as ``query`` adds a sentence before it adds
    the sentence to its double corpus total; :func:`kenlm_sentence_details` sums the same way, so the two agree
    bit for bit.  ``CorpusScore.add`` (``lmpipe eval``) sums the float32 terms in float64 instead: the totals
    differ from it by float32 rounding (about 1e-7 relative per sentence).  A sentence must hold no NUL byte
    (``Model.score`` reads a C string); such sentences go through :func:`kenlm_sentence_details`.
    """
    return np.fromiter(map(model.score, sentences), dtype=np.float64, count=count)


def kenlm_sentence_details(model, sentence: str | bytes) -> tuple[float, int, float]:
    """``(log10 total as Model.score adds it, OOV count, log10 sum of the OOV tokens)`` of one sentence via
    ``full_scores`` (Python per token: for the rare sentence ``Model.score`` cannot read, one with a NUL byte)."""
    total = np.float32(0.0)
    oov, oov_sum = 0, 0.0
    for log10, _, is_oov in model.full_scores(sentence, bos=True, eos=True):
        total = np.float32(total + np.float32(log10))
        if is_oov:
            oov += 1
            oov_sum += log10
    return float(total), oov, oov_sum


def kenlm_last_word_scores(model, windows: Sequence[bytes], bos: np.ndarray) -> np.ndarray:
    """log10 p of each window's last word given the words before it (after ``<s>`` where ``bos``).

    Why a window is enough: KenLM's state holds at most ``order - 1`` words -- the longest suffix of the
    history that is a context in the model -- so ``p(w | history)`` is a function of the ``order - 1`` words
    before ``w`` (with ``<s>`` when the sentence starts inside them).  A window of those words gives the
    float32 ``full_scores`` gives on the whole sentence, bit for bit (tests/test_perplexity.py), at ``order``
    tokens of Python work per OOV word instead of the whole sentence's."""
    out = np.empty(len(windows), np.float64)
    for j, (window, after_bos) in enumerate(zip(windows, np.asarray(bos, bool).tolist(), strict=True)):
        *_, last = model.full_scores(window, bos=after_bos, eos=False)
        out[j] = last[0]
    return out


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
    from lmpipe.cluster.quiet import verbose

    if verbose():
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
