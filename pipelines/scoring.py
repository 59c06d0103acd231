"""Score new text with a run's model, per input line and per chunk, as pure functions (no Ray).

A line is read, normalised and tokenized by the code of the tokenize stage (``ingest.read_chunk``,
``encode.tokenize_text``, the run's ``vocab.tsv`` and ``tokenizer.model``), so a line of the run's own test file
gets the ids the tokenize stage gave it, and then scored with KenLM's accounting (``lm.perplexity``): one
``</s>`` per sentence predicted, OOV words scored as ``<unk>`` and counted.  Three kinds of model:

    ngram   the ngram stage's model (``model.binary`` mmapped when it exists), read by KenLM's own loop: lmpipe's
            C++ batch scorer (``lm.kenlm_native``: ``query``'s loop over a batch of tokenized lines, each word
            hashed once, the float32 sentence totals ``query`` prints and the OOV counts and sums), or, where that
            library was not built, ``kenlm.Model.score`` per line with each OOV word's probability fetched from a
            window of ``order - 1`` words -- the same numbers, slower (:class:`NgramScorer`); ``lmpipe eval`` adds
            the same float32 terms in float64, so the two agree to float32 rounding (about 1e-7 relative) and
            ``lmpipe score`` agrees with ``query`` exactly
    lm      an lm stage model (RNN/LSTM/GRU/NPLM), the state reset at every line (KenLM's reset at ``<s>``),
            lines batched by length (``lm.neural_eval.reset_scores``): equal to the lm stage's figures when its
            ``eval_state`` is ``reset``
    mix     a mix stage mixture: its components scored as above, combined with its fitted weights

``pipelines.ray_stages.ScoreActor`` wraps :class:`ChunkScorer` (model loaded once per actor); ``pipelines.score``
is the driver.  Rows of rejected lines (blank, too long, empty after tokenization, a bad record) are kept with
``tokens`` 0, so every input line has its record.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lmpipe.lm.token_scores import TokenScores
from lmpipe.pipelines.core.errors import MissingError, UserError
from lmpipe.pipelines.core.schemas import EOS_ID, UNK_ID
from lmpipe.pipelines.core.vocab import Vocab
from lmpipe.pipelines.encode import _special_error, tokenize_text
from lmpipe.pipelines.ingest import Chunk, line_starts, read_chunk
from lmpipe.pipelines.rundir import read_manifest
from lmpipe.pipelines.spec import STAGE_ORDER, NormalizeSpec, RunSpec, TokenizerSpec, parse_spec
from lmpipe.pipelines.tokenizers import WhitespaceTokenizer, list_parts, make_tokenizer

logger = logging.getLogger(__name__)

#: Per-chunk result: one row per input line the chunk owns (``line`` local to the chunk).
CHUNK_SCORES = pa.schema(
    [
        ("chunk", pa.int64()),
        ("line", pa.uint64()),
        ("tokens", pa.uint32()),
        ("oov", pa.uint32()),
        ("sentences", pa.uint32()),
        ("log10_prob", pa.float64()),
        ("oov_log10_prob", pa.float64()),
        ("error", pa.string()),
    ]
)


@dataclass(frozen=True, slots=True)
class Lines:
    """A batch of tokenized lines, none empty, in what the scorer reads: flat vocabulary ids and their offsets
    (None when the scorer reads words), each line's tokens joined by single spaces (``kenlm.Model.score``), or
    the tokens themselves (the word tokenizer's ``list<string>``, for the C++ KenLM scorer).

    ::

        words    ["the","cat"] ["a","dog","runs"]   pa.ListArray, or None
        text     b"the cat"  b"a dog runs"          list[bytes], or None
        ids      4 9 7 12 30                        uint32, OOV = UNK_ID; or None
        offsets  0 2 5                              int64, line i is ids[offsets[i]:offsets[i + 1]]
    """

    ids: np.ndarray | None
    offsets: np.ndarray
    text: list[bytes] | None = None
    words: pa.ListArray | None = None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def sentences(self) -> list[np.ndarray]:
        return np.split(self.ids.astype(np.int64), self.offsets[1:-1])


@dataclass(frozen=True, slots=True)
class LineSums:
    """Per line: log10 p of its tokens (``</s>`` included), OOV count, log10 p of the OOV tokens."""

    log10_prob: np.ndarray  # float64
    oov: np.ndarray  # int64
    oov_log10_prob: np.ndarray  # float64

    @classmethod
    def of_tokens(cls, scored: TokenScores, lines: int) -> LineSums:
        """Per-token scores summed per sentence (in token order, float64, as ``CorpusScore.add`` sums)."""
        by = scored.sentence
        return cls(
            np.bincount(by, weights=scored.log10_prob, minlength=lines),
            np.bincount(by, weights=scored.oov, minlength=lines).astype(np.int64),
            np.bincount(by, weights=np.where(scored.oov, scored.log10_prob, 0.0), minlength=lines),
        )


class Scorer(Protocol):
    """A loaded model: sentences of ids (no ``</s>``) -> every predicted token's log10 p, ``</s>`` included
    (what a mixture combines), and the per-line sums ``lmpipe score`` writes (a scorer may get them faster)."""

    def score(self, sentences: list[np.ndarray]) -> TokenScores: ...

    def line_sums(self, lines: Lines) -> LineSums: ...


def _targets(sentences: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Predicted ids (each sentence + ``</s>``) and their sentence index."""
    lengths = np.array([len(s) + 1 for s in sentences], dtype=np.int64)
    token = np.concatenate([np.append(s, EOS_ID) for s in sentences]) if sentences else np.zeros(0, np.int64)
    return token.astype(np.uint32), np.repeat(np.arange(len(sentences), dtype=np.uint32), lengths)


def _line_bytes(tokens: pa.ListArray) -> list[bytes]:
    """Each line's tokens joined by one space, as UTF-8 bytes (what ``kenlm.Model.score`` reads without a copy):
    one Arrow join, newlines put between the lines by numpy, one ``bytes.split`` -- no Python per token."""
    joined = pc.binary_join(tokens, " ")
    if joined.buffers()[2] is None:
        return [b""] * len(joined)
    absolute = np.frombuffer(joined.buffers()[1], np.int32)[joined.offset : joined.offset + len(joined) + 1].astype(np.int64)
    data = np.frombuffer(joined.buffers()[2], dtype=np.uint8)[absolute[0] : absolute[-1]]
    offsets = absolute - absolute[0]
    pieces = np.insert(data, offsets[1:-1], 10).tobytes().split(b"\n")
    if len(pieces) != len(joined):  # a token held a newline (never from ingest's lines): cut by the offsets
        raw = data.tobytes()
        pieces = [raw[a:b] for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)]
    return pieces


class NgramScorer:
    """The ngram stage's model on the sentences' words, as ``pipelines.evaluate.evaluate_ngram`` scores a split.

    With lmpipe's C++ scorer (``lm.kenlm_native``, built by ``make kenlm``) a batch of lines is one call: the
    word tokenizer's tokens as they are (:attr:`reads_words`; a word the model lacks is hashed to KenLM's
    ``<unk>`` as ``evaluate``'s rebuilt ``<unk>`` would be), or, for sentencepiece, the vocabulary's pieces.
    Without it, ``kenlm.Model``: a line whose every id is a word KenLM knows is read by KenLM's own loop
    (``lm.perplexity.kenlm_sentence_totals``) from the tokens' own text; a line with an OOV (``<unk>`` and
    tokens outside the vocabulary) is rebuilt from the ids with ``<unk>`` for an unknown word, and each OOV
    word is scored from a window for the OOV accounting.  Both give float32 totals, as ``query`` prints them,
    and equal numbers (tests/test_kenlm_native.py).
    """

    def __init__(self, path: Path, words: list[str]) -> None:
        from lmpipe.lm.kenlm_native import open_native

        self.path = Path(path)
        self.native = open_native(self.path)
        if self.native is None:
            logger.info("lmpipe's C++ KenLM scorer is not built here (make kenlm): scoring with the kenlm module")
        self.model = self.native if self.native is not None else _load_kenlm_module(self.path)
        self.words = np.asarray(words, dtype=object)
        self.vocab = pa.array(words, pa.string())
        # ids KenLM maps to its <unk> (index 0): <unk> itself, and any vocabulary word the model lacks (only the
        # kenlm-module path needs them; the C++ scorer sees each word's index as it scores it)
        if self.native is None:
            self.unknown = np.fromiter((w not in self.model for w in words), dtype=bool, count=len(words))

    @property
    def reads_words(self) -> bool:
        """True when :meth:`line_sums` takes the tokens' own words (``Lines.words``) and no vocabulary ids."""
        return self.native is not None

    def score(self, sentences: list[np.ndarray]) -> TokenScores:
        """Every token's float32 log10 p (``full_scores``): what a mixture combines."""
        token, sentence = _targets(sentences)
        if self.native is not None:
            ids = np.concatenate(sentences) if sentences else np.zeros(0, np.int64)
            offsets = np.concatenate([[0], np.cumsum([len(s) for s in sentences])]).astype(np.int64)
            log10, oov = self.native.token_scores(self._words(ids, offsets))
            return TokenScores(sentence, token, log10, oov)
        log10 = np.empty(len(token))
        oov = np.empty(len(token), dtype=bool)
        k = 0
        full_scores = self.model.full_scores
        for ids in sentences:
            for lp, _, is_oov in full_scores(" ".join(self.words[ids]), bos=True, eos=True):
                log10[k], oov[k] = lp, is_oov
                k += 1
        return TokenScores(sentence, token, log10, oov)

    def _words(self, ids: np.ndarray, offsets: np.ndarray) -> pa.ListArray:
        """Lines of ids -> lines of the vocabulary's words (``<unk>`` for UNK_ID), as ``evaluate`` rebuilds them."""
        return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), self.vocab.take(pa.array(ids)))

    def line_sums(self, lines: Lines) -> LineSums:
        if self.native is not None:
            words = lines.words if lines.words is not None else self._words(lines.ids, lines.offsets)
            return LineSums(*self.native.line_sums(words))
        return self._module_line_sums(lines)

    def _module_line_sums(self, lines: Lines) -> LineSums:
        """:meth:`line_sums` through the ``kenlm`` module (no C++ scorer built)."""
        from lmpipe.lm.perplexity import kenlm_last_word_scores, kenlm_sentence_details, kenlm_sentence_totals

        n, ids, offsets = len(lines), lines.ids, lines.offsets
        oov_at = np.flatnonzero(self.unknown[ids])  # flat positions of the OOV tokens
        oov_line = np.searchsorted(offsets, oov_at, side="right") - 1
        text = list(lines.text) if lines.text is not None else _line_bytes(self._words(ids, offsets))
        if len(oov_at):  # a line with an OOV is rebuilt from its ids (its unknown words read <unk>)
            rows = np.unique(oov_line)
            rebuilt = _line_bytes(self._words(*_ragged(ids, offsets[rows], offsets[rows + 1] - offsets[rows])))
            for i, line in zip(rows.tolist(), rebuilt, strict=True):
                text[i] = line
        log10 = kenlm_sentence_totals(self.model, text, n)
        # each OOV token's log10 p from a window of the order - 1 words before it (``<s>`` too, if they
        # reach the line's start): kenlm_last_word_scores says why that equals the whole sentence's figure
        first = np.maximum(oov_at - (self.model.order - 1), offsets[oov_line])
        windows = _line_bytes(self._words(*_ragged(ids, first, oov_at - first + 1)))
        oov_scores = kenlm_last_word_scores(self.model, windows, first == offsets[oov_line])
        oov = np.bincount(oov_line, minlength=n)
        oov_log10 = np.bincount(oov_line, weights=oov_scores, minlength=n)
        if any(b"\0" in line for line in text):  # Model.score reads a C string, which a NUL byte cuts short
            for i in (i for i, line in enumerate(text) if b"\0" in line):
                log10[i], oov[i], oov_log10[i] = kenlm_sentence_details(self.model, text[i])
        return LineSums(log10, oov.astype(np.int64), oov_log10)


def _load_kenlm_module(path: Path):
    from lmpipe.lm.perplexity import load_kenlm

    return load_kenlm(path)


def _ragged_index(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``concat(range(starts[i], starts[i] + lengths[i]))`` without a Python loop."""
    return np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) + np.arange(int(lengths.sum()))


def _ragged(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``values[starts[i] : starts[i] + lengths[i]]`` for every i, as flat values and offsets (no Python loop)."""
    return values[_ragged_index(starts, lengths)], np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


class NeuralScorer:
    """An lm stage model, the state zero at each line (KenLM's reset at ``<s>``): ``lm.neural_eval`` sums.

    Lines are sorted by length and cut into batches of ``batch_lines``, each padded only to its own longest
    line and run in one forward pass (``lm.neural_eval.reset_scores``)."""

    def __init__(self, model_dir: Path, counts: np.ndarray, device: str = "cpu", batch_lines: int = 64) -> None:
        from lmpipe.lm.train import load_model

        self.model = load_model(model_dir, counts, device)
        self.device, self.batch_lines = device, batch_lines

    def score(self, sentences: list[np.ndarray]) -> TokenScores:
        from lmpipe.lm.neural_eval import reset_scores

        return reset_scores(self.model, sentences, device=self.device, batch_lines=self.batch_lines)

    def line_sums(self, lines: Lines) -> LineSums:
        return LineSums.of_tokens(self.score(lines.sentences()), len(lines))


class MixScorer:
    """A fitted mixture of other scorers (``lm.mixture.apply``), context bins from the training counts."""

    def __init__(self, components: dict[str, Scorer], weights, counts: np.ndarray) -> None:
        self.components, self.weights, self.counts = components, weights, counts.astype(np.int64)

    def score(self, sentences: list[np.ndarray]) -> TokenScores:
        from lmpipe.lm.mixture import apply
        from lmpipe.pipelines.core.schemas import BOS_ID

        parts = {name: s.score(sentences) for name, s in self.components.items()}
        first = next(iter(parts.values()))
        prev = self.counts[first.previous_tokens(BOS_ID)] if self.weights.bins else None
        return apply(parts, self.weights, prev)

    def line_sums(self, lines: Lines) -> LineSums:
        return LineSums.of_tokens(self.score(lines.sentences()), len(lines))


# ------------------------------------------------------------------------------------------ the run's models
def run_spec(run_dir: Path) -> RunSpec:
    """The run's resolved spec (``spec.yaml``): its normalisation and tokenizer settings."""
    import yaml

    path = Path(run_dir) / "spec.yaml"
    if not path.is_file():
        raise MissingError(f"{path}: not a run directory (no spec.yaml); run `lmpipe run SPEC` first")
    return parse_spec(yaml.safe_load(path.read_text(encoding="utf-8")), source=str(path))


def model_stages(run_dir: Path) -> dict[str, str]:
    """``{model name: stage}`` for every scorable model of the run (n-gram ``kn<order>``, lm, mixtures)."""
    found: dict[str, str] = {}
    ngram = read_manifest(run_dir, "ngram")
    if ngram is not None:
        found[f"kn{ngram['settings']['order']}"] = "ngram"
    for stage in STAGE_ORDER:
        manifest = read_manifest(run_dir, stage)
        if manifest is None or stage not in ("ngram", "lm", "mix"):
            continue
        names = manifest.get("models", {}) if stage == "lm" else manifest.get("mixtures", {}) if stage == "mix" else {}
        for name in names:
            found[name] = stage
    return found


def load_scorer(run_dir: Path, model: str, device: str = "cpu", vocab: Vocab | None = None) -> Scorer:
    """The named model of the run, loaded (a mixture loads its components); ``vocab``: the run's, if read."""
    from lmpipe.pipelines.evaluate import model_path

    run_dir = Path(run_dir)
    stages = model_stages(run_dir)
    if model not in stages:
        raise UserError(f"--model {model}: the run {run_dir} has no such model; scorable models: {sorted(stages) or 'none'}")
    vocab = vocab if vocab is not None else Vocab.load(run_dir / "tokenize" / "vocab.tsv")
    stage = stages[model]
    if stage == "ngram":
        return NgramScorer(model_path(run_dir), vocab.tokens.to_pylist())
    if stage == "lm":
        return NeuralScorer(run_dir / "lm" / model, vocab.counts, device)
    from lmpipe.lm.mixture import MixtureWeights

    w = read_manifest(run_dir, "mix")["mixtures"][model]["weights"]
    weights = MixtureWeights(tuple(w["models"]), np.asarray(w["weights"], np.float64), tuple(w["bins"]))
    return MixScorer({m: load_scorer(run_dir, m, device, vocab) for m in weights.models}, weights, vocab.counts)


# ------------------------------------------------------------------------------------------ per chunk
@dataclass(frozen=True, slots=True)
class ScoreJob:
    """Everything a worker needs; shipped once per actor (small: names and settings, never a model)."""

    run_dir: str
    model: str
    normalize: NormalizeSpec
    tokenizer: TokenizerSpec
    text_field: str = "text"
    device: str = "cpu"

    @classmethod
    def for_run(cls, run_dir: Path, model: str, text_field: str = "text", device: str = "cpu") -> ScoreJob:
        spec = run_spec(run_dir)
        return cls(str(run_dir), model, spec.normalize, spec.tokenizer, text_field, device)


class ChunkScorer:
    """The model, tokenizer and vocabulary, loaded once; :meth:`__call__` scores one chunk."""

    def __init__(self, job: ScoreJob) -> None:
        run_dir = Path(job.run_dir)
        self.job = job
        vocab = Vocab.load(run_dir / "tokenize" / "vocab.tsv")
        self.scorer = load_scorer(run_dir, job.model, job.device, vocab)
        proto = None
        if job.tokenizer.kind == "sentencepiece":
            proto = (run_dir / "tokenize" / "tokenizer.model").read_bytes()
        self.tokenizer = make_tokenizer(job.tokenizer, proto)
        self.vocab_tokens = vocab.tokens
        # what the scorer reads: KenLM's C++ scorer the tokens themselves, kenlm.Model their joined text
        self.wants_words = getattr(self.scorer, "reads_words", False)
        self.wants_text = isinstance(self.scorer, NgramScorer) and not self.wants_words
        # whitespace tokens and KenLM's C++ scorer: the lines are split and scored in one C++ pass
        self.splits_in_kenlm = self.wants_words and isinstance(self.tokenizer, WhitespaceTokenizer)

    def _tokens(self, text: pa.StringArray, chunk: Chunk, positions: np.ndarray) -> tuple[pa.ListArray, np.ndarray]:
        """Normalised lines -> the tokens of the lines not empty after tokenization (the tokenize stage's code
        and ``literal_specials`` policy), and the mask of those lines."""
        tokens, _, bad = tokenize_text(text, self.tokenizer, self.job.normalize.literal_specials)
        if bad is not None:
            raise _special_error(chunk, int(positions[bad]))
        keep = np.asarray(pc.list_value_length(tokens), dtype=np.int64) > 0
        if not keep.all():  # lines empty after tokenization stay unscored
            tokens = tokens.filter(pa.array(keep))
        return tokens, keep

    def lines(self, text: pa.StringArray, chunk: Chunk, positions: np.ndarray) -> tuple[Lines, np.ndarray]:
        """Normalised lines -> the non-empty ones tokenized (:class:`Lines`, ``<unk>`` = 0 for unknown words)
        and the positions of those lines."""
        tokens, keep = self._tokens(text, chunk, positions)
        positions = positions[keep]
        flat, offsets = list_parts(tokens)
        if self.job.tokenizer.kind == "sentencepiece":
            return Lines(np.asarray(flat, dtype=np.uint32), offsets), positions
        if self.wants_words:  # no vocabulary lookup: KenLM hashes each word once, in C++
            return Lines(None, offsets, words=tokens), positions
        ids = np.asarray(pc.index_in(flat, value_set=self.vocab_tokens).fill_null(UNK_ID), dtype=np.uint32)
        return Lines(ids, offsets, _line_bytes(tokens) if self.wants_text else None), positions

    def scored_lines(self, text: pa.StringArray, chunk: Chunk, positions: np.ndarray) -> tuple[LineSums, np.ndarray, np.ndarray]:
        """Normalised lines -> the sums of the non-empty ones, their scored tokens (``</s>`` included) and
        their positions."""
        if self.splits_in_kenlm:
            return self._split_in_kenlm(text, chunk, positions)
        lines, positions = self.lines(text, chunk, positions)
        if not len(lines):
            return LineSums(np.zeros(0), np.zeros(0, np.int64), np.zeros(0)), np.zeros(0, np.int64), positions
        return self.scorer.line_sums(lines), np.diff(lines.offsets) + 1, positions

    def _split_in_kenlm(self, text: pa.StringArray, chunk: Chunk, positions: np.ndarray) -> tuple[LineSums, np.ndarray, np.ndarray]:
        """:meth:`scored_lines` in one C++ pass (``NativeKenLM.text_sums``): the whitespace tokenizer's split and
        KenLM's loop, no token arrays.  The rare line holding a literal ``<s>``, ``</s>`` or ``<unk>`` goes again
        through :meth:`lines`, where the tokenize stage's ``literal_specials`` policy renames, maps, drops or
        rejects it, so every line gets what the token path gives it (tests/test_kenlm_native.py)."""
        native = self.scorer.native
        total, oov, oov_log10, words, special = native.text_sums(text)
        if special.any():
            rows = np.flatnonzero(special)
            tokens, keep = self._tokens(text.take(pa.array(rows)), chunk, positions[rows])
            words[rows] = 0  # a line the policy empties stays unscored
            at = rows[keep]
            if len(at):
                total[at], oov[at], oov_log10[at] = native.line_sums(tokens)
                words[at] = np.asarray(pc.list_value_length(tokens), dtype=np.int64)
        keep = words > 0
        if keep.all():
            return LineSums(total, oov, oov_log10), words + 1, positions
        return LineSums(total[keep], oov[keep], oov_log10[keep]), words[keep] + 1, positions[keep]

    def __call__(self, chunk: Chunk) -> pa.Table:
        starts = line_starts(chunk, self.job.normalize)
        n = len(starts)
        sums = {k: np.zeros(n, np.float64) for k in ("log10_prob", "oov_log10_prob")}
        counts = {k: np.zeros(n, np.int64) for k in ("tokens", "oov", "sentences")}
        for batch in read_chunk(chunk, self.job.normalize, self.job.text_field):
            scored, tokens, positions = self.scored_lines(batch.text, chunk, batch.positions)
            if not len(tokens):
                continue
            # a record (JSONL/Parquet) may hold several lines: its sums add theirs, in line order
            record = np.searchsorted(starts, positions)
            for name, values in (("log10_prob", scored.log10_prob), ("oov_log10_prob", scored.oov_log10_prob)):
                sums[name] += np.bincount(record, weights=values, minlength=n)
            per_line = {"tokens": tokens, "oov": scored.oov, "sentences": np.ones(len(tokens), np.int64)}
            for name, values in per_line.items():
                counts[name] += np.bincount(record, weights=values, minlength=n).astype(np.int64)
        return pa.table(
            {
                "chunk": np.full(n, chunk.index, np.int64),
                "line": np.arange(n, dtype=np.uint64),
                **{k: v.astype(np.uint32) for k, v in counts.items()},
                **sums,
                "error": pa.nulls(n, pa.string()),
            },
            schema=CHUNK_SCORES,
        )


def error_table(chunk: Chunk, message: str) -> pa.Table:
    """A chunk's result when its input is bad: the message travels as data (see ``pipelines.ray_stages``)."""
    row = {f.name: [None] for f in CHUNK_SCORES}
    row.update(chunk=[chunk.index], error=[message])
    return pa.table(row, schema=CHUNK_SCORES)


def summary_json(summary: dict) -> str:
    return json.dumps(summary, indent=2, sort_keys=True) + "\n"
