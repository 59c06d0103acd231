"""Score new text with a run's model, per input line and per chunk, as pure functions (no Ray).

A line is read, normalised and tokenized by the code of the tokenize stage (``ingest.read_chunk``,
``encode.tokenize_text``, the run's ``vocab.tsv`` and ``tokenizer.model``), so a line of the run's own test file
gets the ids the tokenize stage gave it, and then scored with KenLM's accounting (``lm.perplexity``): one
``</s>`` per sentence predicted, OOV words scored as ``<unk>`` and counted.  Three kinds of model:

    ngram   the ngram stage's model through ``kenlm.Model`` (``model.binary`` mmapped when it exists), the
            sentence text rebuilt from the vocabulary as ``pipelines.evaluate`` does
    lm      an lm stage model (RNN/LSTM/GRU/NPLM), the state reset at every line (KenLM's reset at ``<s>``):
            equal to the lm stage's figures when its ``eval_state`` is ``reset``
    mix     a mix stage mixture: its components scored as above, combined with its fitted weights

``pipelines.ray_stages.ScoreActor`` wraps :class:`ChunkScorer` (model loaded once per actor); ``pipelines.score``
is the driver.  Rows of rejected lines (blank, too long, empty after tokenization, a bad record) are kept with
``tokens`` 0, so every input line has its record.
"""

from __future__ import annotations

import json
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
from lmpipe.pipelines.tokenizers import list_parts, make_tokenizer

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


class Scorer(Protocol):
    """A loaded model: sentences of ids (no ``</s>``) -> every predicted token's log10 p, ``</s>`` included."""

    def score(self, sentences: list[np.ndarray]) -> TokenScores: ...


def _targets(sentences: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Predicted ids (each sentence + ``</s>``) and their sentence index."""
    lengths = np.array([len(s) + 1 for s in sentences], dtype=np.int64)
    token = np.concatenate([np.append(s, EOS_ID) for s in sentences]) if sentences else np.zeros(0, np.int64)
    return token.astype(np.uint32), np.repeat(np.arange(len(sentences), dtype=np.uint32), lengths)


class NgramScorer:
    """``kenlm.Model`` on the sentence's words, as ``pipelines.evaluate.evaluate_ngram`` scores a split."""

    def __init__(self, path: Path, words: list[str]) -> None:
        from lmpipe.lm.perplexity import load_kenlm

        self.path = Path(path)
        self.model = load_kenlm(self.path)
        self.words = np.asarray(words, dtype=object)

    def score(self, sentences: list[np.ndarray]) -> TokenScores:
        token, sentence = _targets(sentences)
        log10 = np.empty(len(token))
        oov = np.empty(len(token), dtype=bool)
        k = 0
        full_scores = self.model.full_scores
        for ids in sentences:
            for lp, _, is_oov in full_scores(" ".join(self.words[ids]), bos=True, eos=True):
                log10[k], oov[k] = lp, is_oov
                k += 1
        return TokenScores(sentence, token, log10, oov)


class NeuralScorer:
    """An lm stage model, one sentence per column (state zero at each line): ``lm.neural_eval`` sums."""

    def __init__(self, model_dir: Path, counts: np.ndarray, device: str = "cpu", batch_columns: int = 64) -> None:
        from lmpipe.lm.train import load_model

        self.model = load_model(model_dir, counts, device)
        self.device, self.batch_columns = device, batch_columns

    def score(self, sentences: list[np.ndarray]) -> TokenScores:
        from lmpipe.lm.batching import eval_columns
        from lmpipe.lm.neural_eval import assemble, column_scores

        if not sentences:
            return TokenScores(*(np.zeros(0, t) for t in (np.uint32, np.uint32, np.float64, bool)))
        # Longest first: a batch of columns is padded to its longest sentence.
        order = sorted(range(len(sentences)), key=lambda i: -len(sentences[i]))
        cols = eval_columns([np.asarray(sentences[i], np.int64) for i in order], 1, reset=True)
        per_column = column_scores(
            self.model, cols, bptt=256, device=self.device, batch_columns=self.batch_columns
        )
        back = {i: per_column[j] for j, i in enumerate(order)}
        return assemble({i: back[i] for i in range(len(sentences))})


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


def load_scorer(run_dir: Path, model: str, device: str = "cpu") -> Scorer:
    """The named model of the run, loaded (a mixture loads its components)."""
    from lmpipe.pipelines.evaluate import model_path

    run_dir = Path(run_dir)
    stages = model_stages(run_dir)
    if model not in stages:
        raise UserError(f"--model {model}: the run {run_dir} has no such model; scorable models: {sorted(stages) or 'none'}")
    vocab = Vocab.load(run_dir / "tokenize" / "vocab.tsv")
    stage = stages[model]
    if stage == "ngram":
        return NgramScorer(model_path(run_dir), vocab.tokens.to_pylist())
    if stage == "lm":
        return NeuralScorer(run_dir / "lm" / model, vocab.counts, device)
    from lmpipe.lm.mixture import MixtureWeights

    w = read_manifest(run_dir, "mix")["mixtures"][model]["weights"]
    weights = MixtureWeights(tuple(w["models"]), np.asarray(w["weights"], np.float64), tuple(w["bins"]))
    return MixScorer({m: load_scorer(run_dir, m, device) for m in weights.models}, weights, vocab.counts)


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
        self.scorer = load_scorer(run_dir, job.model, job.device)
        proto = None
        if job.tokenizer.kind == "sentencepiece":
            proto = (run_dir / "tokenize" / "tokenizer.model").read_bytes()
        self.tokenizer = make_tokenizer(job.tokenizer, proto)
        self.vocab_tokens = Vocab.load(run_dir / "tokenize" / "vocab.tsv").tokens

    def ids(self, text: pa.StringArray, chunk: Chunk, positions: np.ndarray) -> pa.ListArray:
        """Normalised lines -> vocabulary ids per line (``<unk>`` = 0 for unknown words)."""
        tokens, _, bad = tokenize_text(text, self.tokenizer, self.job.normalize.literal_specials)
        if bad is not None:
            raise _special_error(chunk, int(positions[bad]))
        if self.job.tokenizer.kind == "sentencepiece":
            return tokens
        flat, offsets = list_parts(tokens)
        ids = pc.index_in(flat, value_set=self.vocab_tokens).fill_null(UNK_ID).cast(pa.uint32())
        return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), ids)

    def __call__(self, chunk: Chunk) -> pa.Table:
        starts = line_starts(chunk, self.job.normalize)
        n = len(starts)
        sums = {k: np.zeros(n, np.float64) for k in ("log10_prob", "oov_log10_prob")}
        counts = {k: np.zeros(n, np.int64) for k in ("tokens", "oov", "sentences")}
        for batch in read_chunk(chunk, self.job.normalize, self.job.text_field):
            ids = self.ids(batch.text, chunk, batch.positions)
            flat, offsets = list_parts(ids)
            flat = np.asarray(flat, dtype=np.int64)
            keep = np.flatnonzero(np.diff(offsets) > 0)  # lines empty after tokenization stay unscored
            sentences = [flat[offsets[i] : offsets[i + 1]] for i in keep]
            scored = self.scorer.score(sentences)
            record = np.searchsorted(starts, batch.positions[keep])[scored.sentence]
            np.add.at(sums["log10_prob"], record, scored.log10_prob)
            np.add.at(sums["oov_log10_prob"], record, np.where(scored.oov, scored.log10_prob, 0.0))
            np.add.at(counts["tokens"], record, 1)
            np.add.at(counts["oov"], record, scored.oov.astype(np.int64))
            np.add.at(counts["sentences"], np.searchsorted(starts, batch.positions[keep]), 1)
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
