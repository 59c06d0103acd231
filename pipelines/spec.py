"""Pipeline specs: YAML in, frozen dataclasses out, parsed and validated in exactly this one place.

A spec names the corpus, how text is normalised and tokenized, the vocabulary cut, and the settings of
each stage.  Every section is a frozen dataclass; unknown keys and bad values are rejected with an error
that names the file, the key path, the bad value and what is allowed::

    >>> spec = load_spec("pipelines/specs/tiny.yaml", overrides=["vocab.min_count=2"])
    >>> spec.vocab.min_count
    2

Shared settings keep one name in every stage section: ``order``, ``prune``, ``epochs``, ``dim``,
``window``, ``model``, ``workers``, ``use_gpu``.  ``--set key.path=value`` overrides any value; the value
is read as YAML (``null``, ``3``, ``[0, 0, 1]``, ``true``).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

#: Stages in the order the runner executes them.
STAGE_ORDER: tuple[str, ...] = ("tokenize", "ngram", "sgns", "cooccur", "glove", "lm", "tagger", "report")


class SpecError(ValueError):
    """A spec is invalid; the message names file, key path, bad value and allowed values."""


def _fail(path: str, value: Any, allowed: str) -> typing.NoReturn:
    raise SpecError(f"{path}: bad value {value!r}; allowed: {allowed}")


def _check_range(path: str, value: float | int, lo: float | None = None, hi: float | None = None) -> None:
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"{'' if lo is None else lo} .. {'' if hi is None else hi}"
        _fail(path, value, f"a number in [{bounds}]")


# --------------------------------------------------------------------------------------------- corpus
@dataclass(frozen=True, kw_only=True, slots=True)
class SplitFractions:
    """Deterministic split of one input into train/valid/test by a 64-bit hash of the unit."""

    valid: float = 0.0
    test: float = 0.0
    #: ``document``: whole documents move together; ``line``: each sentence is hashed on its own.
    unit: Literal["document", "line"] = "document"
    seed: int = 0

    def __post_init__(self) -> None:
        _check_range("corpus.split.valid", self.valid, 0.0, 1.0)
        _check_range("corpus.split.test", self.test, 0.0, 1.0)
        if self.valid + self.test >= 1.0:
            _fail("corpus.split", {"valid": self.valid, "test": self.test}, "valid + test < 1")


@dataclass(frozen=True, kw_only=True, slots=True)
class CorpusSpec:
    """Where the text is.  Each entry is a path, directory, glob, pyarrow URI (s3://, gs://, hdfs://)
    or a dataset reference ``data:NAME/SPLIT`` resolved through ``lmpipe data`` (mirror or cache)."""

    train: tuple[str, ...]
    valid: tuple[str, ...] = ()
    test: tuple[str, ...] = ()
    #: ``auto`` decides by extension: .txt/.txt.gz/other -> text, .jsonl(.gz) -> jsonl, .parquet -> parquet.
    format: Literal["auto", "text", "jsonl", "parquet"] = "auto"
    #: The field (JSONL) or column (Parquet) holding the text.
    text_field: str = "text"
    #: What a document is, for document ids and document-hash splits: a whole file, or each line/record.
    documents: Literal["file", "line"] = "file"
    #: Split fractions, used only when ``valid``/``test`` inputs are not given.
    split: SplitFractions | None = None

    def __post_init__(self) -> None:
        if not self.train:
            _fail("corpus.train", self.train, "one or more paths, globs, URIs or data:NAME/SPLIT references")
        if self.split is not None and (self.valid or self.test):
            _fail("corpus.split", "set", "either corpus.split fractions or corpus.valid/corpus.test inputs")


@dataclass(frozen=True, kw_only=True, slots=True)
class NormalizeSpec:
    """Text normalisation applied to every line before tokenization (one sentence per line)."""

    nfkc: bool = False
    lowercase: bool = False
    #: Invalid UTF-8: ``replace`` substitutes U+FFFD (lines counted), ``strict`` stops naming file and byte.
    encoding_errors: Literal["replace", "strict"] = "replace"
    #: Lines longer than this many bytes are rejected and counted.
    max_line_bytes: int = 1 << 20
    #: ``<s>``, ``</s>``, ``<unk>`` written literally in the text: ``error`` stops; ``map`` makes ``<unk>``
    #: the unknown-word special and drops ``<s>``/``</s>`` (counted); ``rename`` keeps them as ordinary
    #: words ``[unk]``, ``[s]``, ``[/s]`` (what comparing with lmplz needs, which refuses literal specials).
    literal_specials: Literal["error", "map", "rename"] = "error"

    def __post_init__(self) -> None:
        _check_range("normalize.max_line_bytes", self.max_line_bytes, 1, None)


@dataclass(frozen=True, kw_only=True, slots=True)
class TokenizerSpec:
    """How a normalised line becomes tokens."""

    kind: Literal["whitespace", "regex", "char", "sentencepiece"] = "whitespace"
    #: ``regex``: tokens are the matches of this pattern (Python ``re``).
    pattern: str = r"\w+(?:[-']\w+)*|[^\w\s]"
    #: ``sentencepiece``: model type, vocabulary size, lines in the training sample, coverage.
    sp_model_type: Literal["unigram", "bpe"] = "unigram"
    sp_vocab_size: int = 8000
    sp_sample_lines: int = 200_000
    sp_character_coverage: float = 0.9995
    seed: int = 0

    def __post_init__(self) -> None:
        _check_range("tokenizer.sp_vocab_size", self.sp_vocab_size, 8, 1 << 24)
        _check_range("tokenizer.sp_sample_lines", self.sp_sample_lines, 1, None)
        _check_range("tokenizer.sp_character_coverage", self.sp_character_coverage, 0.9, 1.0)
        try:
            re.compile(self.pattern)
        except re.error as exc:
            _fail("tokenizer.pattern", self.pattern, f"a valid Python regular expression ({exc})")


@dataclass(frozen=True, kw_only=True, slots=True)
class VocabSpec:
    """The vocabulary cut over training counts.  ``max_size`` counts the three specials; ``null`` = no cap."""

    min_count: int = 1
    max_size: int | None = None

    def __post_init__(self) -> None:
        _check_range("vocab.min_count", self.min_count, 1, None)
        if self.max_size is not None:
            _check_range("vocab.max_size", self.max_size, 4, (1 << 32) - 1)


# --------------------------------------------------------------------------------------------- stages
@dataclass(frozen=True, kw_only=True, slots=True)
class TokenizeSpec:
    """The tokenize stage: input chunks are read, tokenized and written by ``workers`` Ray actors."""

    workers: int = 2
    #: Input bytes per chunk, the unit of parallel work; each chunk becomes one shard (more if it is a
    #: large compressed file).  Output is independent of ``workers``, so shards are byte-identical.
    shard_mb: float = 64.0
    #: Arrow IPC compression of the shards.
    compression: Literal["zstd", "lz4", "none"] = "zstd"

    def __post_init__(self) -> None:
        _check_range("tokenize.workers", self.workers, 1, 100_000)
        _check_range("tokenize.shard_mb", self.shard_mb, 0.001, 16_384)


@dataclass(frozen=True, kw_only=True, slots=True)
class NgramSpec:
    """The ngram stage: n-gram counts and an interpolated modified Kneser-Ney model, lmplz-exact."""

    order: int = 5
    #: Raw-count thresholds per order (lmplz ``--prune``): non-decreasing, the unigram entry 0.
    prune: tuple[int, ...] = ()
    #: ``lmpipe`` estimates on Ray; ``lmplz`` streams the tokens into an installed KenLM lmplz.
    estimator: Literal["lmpipe", "lmplz"] = "lmpipe"
    workers: int = 2
    #: Hash partitions of the n-gram counts (the unit of distributed estimation); raised automatically
    #: when one partition would not fit ``memory_mb``.  More partitions than workers balance the load.
    partitions: int = 4
    #: Memory budget per worker in MB; counts beyond it spill to disk.
    memory_mb: int = 2048
    discount_fallback: tuple[float, ...] | None = None
    interpolate_unigrams: bool = True
    vocab_pad: int = 0
    #: A file of words (whitespace separated) the model's vocabulary is limited to.
    limit_vocab: str | None = None
    arpa_gzip: bool = False
    #: Also write KenLM's binary format when ``build_binary`` is found.
    build_binary: bool = True

    def __post_init__(self) -> None:
        _check_range("ngram.order", self.order, 1, 6)
        _check_range("ngram.workers", self.workers, 1, 100_000)
        _check_range("ngram.partitions", self.partitions, 1, 1 << 16)
        _check_range("ngram.memory_mb", self.memory_mb, 64, None)
        _check_range("ngram.vocab_pad", self.vocab_pad, 0, None)
        if self.prune:
            if len(self.prune) > self.order:
                _fail("ngram.prune", list(self.prune), f"at most order={self.order} thresholds")
            if self.prune[0] != 0 or any(b < a for a, b in zip(self.prune, self.prune[1:], strict=False)):
                _fail("ngram.prune", list(self.prune), "non-decreasing thresholds starting with 0, e.g. [0, 0, 1]")
        if self.discount_fallback is not None and len(self.discount_fallback) != 3:
            _fail("ngram.discount_fallback", list(self.discount_fallback), "three discounts, e.g. [0.5, 1.0, 1.5]")


@dataclass(frozen=True, kw_only=True, slots=True)
class SgnsSpec:
    """The sgns stage: skip-gram with negative sampling (word2vec ``-cbow 0``) trained with Ray Train.

    Defaults are word2vec.c's and gensim's for skip-gram.  ``workers`` data-parallel replicas each train on
    their share of the token shards and are merged ``syncs_per_epoch`` times per epoch (``sync`` scheme, see
    ``embeddings.sync``); ``threads`` are Hogwild threads inside one worker.  ``workers`` and ``threads``
    are left out of the stage fingerprint: scaling a run out or in does not invalidate it.
    """

    dim: int = 100
    window: int = 5  # maximum distance; the effective window is uniform in 1..window
    negative: int = 5  # noise words per (centre, context) pair
    sample: float = 1e-3  # subsampling threshold; 0 disables
    alpha: float = 0.025  # initial learning rate, decayed linearly to alpha * 1e-4
    #: Words rarer than this (training counts) are removed before windowing, as word2vec does; it is applied
    #: on top of ``vocab.min_count``, so one tokenization serves embeddings of several cuts.
    min_count: int = 5
    epochs: int = 5
    workers: int = 1  # Ray Train workers (data parallel)
    use_gpu: bool = False  # one GPU per worker, NCCL between them
    batch_pairs: int = 1024  # pairs per vectorised SGD step
    shared_negatives: int = 1  # consecutive pairs sharing one noise draw (1 = word2vec; 16 is ~3x faster on CPU)
    threads: int = 1  # Hogwild threads per worker; > 1 makes results depend on thread timing
    #: Replica merges per epoch when workers > 1; ``null`` = one per ~100k words of the largest worker's
    #: share (``embeddings.train.SYNC_WORDS``).  Rarer merges let the replicas drift apart: on 3.6M English
    #: words 2 workers reached 5.2% analogy accuracy with 4 merges per epoch, 7.4% with 16 (1 worker: 8.1%).
    syncs_per_epoch: int | None = None
    #: How replicas merge (``embeddings.sync``).  ``sum`` applies every worker's update once, as Hogwild
    #: threads do on one matrix; averaging (``touched``, ``mean``) halves the step on rows several workers
    #: update, and with 2 workers lost a third of the analogy accuracy on PTB and on 3.6M English words
    #: (bench/RESULTS.md), while ``sum`` matched 1 worker.
    sync: Literal["sum", "touched", "mean"] = "sum"
    #: All-reduce a part's delta in the background while the next part trains, applying the merge one part
    #: late (``embeddings.train.ReplicaSync``): the wait for the slowest worker is hidden.  Left out of the
    #: fingerprint, like ``workers``.
    overlap_sync: bool = True
    seed: int = 1
    #: Run the standard evaluations (analogies, WS353, SimLex, MEN, RW) when ``data:embedding-eval`` resolves
    #: through the mirror or cache; otherwise they are skipped with the reason logged and recorded.
    evaluate: bool = True

    def __post_init__(self) -> None:
        for name in ("dim", "window", "negative", "min_count", "epochs", "workers", "batch_pairs", "threads"):
            _check_range(f"sgns.{name}", getattr(self, name), 1, None)
        if self.syncs_per_epoch is not None:
            _check_range("sgns.syncs_per_epoch", self.syncs_per_epoch, 1, None)
        _check_range("sgns.dim", self.dim, 1, 1 << 16)
        _check_range("sgns.sample", self.sample, 0.0, 1.0)
        if not 0.0 < self.alpha <= 1.0:
            _fail("sgns.alpha", self.alpha, "a number in (0 .. 1]")
        _check_range("sgns.shared_negatives", self.shared_negatives, 1, self.batch_pairs)
        _check_range("sgns.seed", self.seed, 0, (1 << 63) - 1)


@dataclass(frozen=True, kw_only=True, slots=True)
class CooccurSpec:
    """The cooccur stage: GloVe's word-word co-occurrence counts (``cooccur``), on Ray tasks.

    Defaults are the GloVe paper's (symmetric window 10, 1/d weighting); Stanford's tool defaults to window
    15.  ``min_count``/``max_size`` cut the vocabulary on top of ``vocab`` (GloVe's ``vocab_count
    -min-count/-max-vocab``; ``max_size`` counts words only); words outside the cut are skipped before
    windowing.  ``workers`` is left out of the fingerprint: the counts are exact and do not depend on it.
    """

    window: int = 10  # words on each side; at most 20 (exact sums in units of 1/lcm(1..window))
    symmetric: bool = True  # false: left context only (GloVe's -symmetric 0)
    distance_weighting: bool = True  # each pair adds 1/distance; false: 1
    #: What a window may not cross: ``sentence`` (a row of the token shards, GloVe's line) or ``document``.
    boundary: Literal["sentence", "document"] = "sentence"
    min_count: int = 5
    max_size: int | None = None
    workers: int = 2  # Ray tasks in flight
    #: Hash partitions of the counts by row (output shards); raised automatically to fit ``memory_mb``.
    partitions: int = 4
    #: Memory budget per task in MB: the map side spills its accumulator to disk at half of it.
    memory_mb: int = 1024

    def __post_init__(self) -> None:
        _check_range("cooccur.window", self.window, 1, 20)
        for name in ("min_count", "workers", "partitions"):
            _check_range(f"cooccur.{name}", getattr(self, name), 1, None)
        _check_range("cooccur.partitions", self.partitions, 1, 4096)
        _check_range("cooccur.memory_mb", self.memory_mb, 64, None)
        if self.max_size is not None:
            _check_range("cooccur.max_size", self.max_size, 1, (1 << 32) - 1)


@dataclass(frozen=True, kw_only=True, slots=True)
class GloveSpec:
    """The glove stage: GloVe's weighted least squares on the cooccur stage's counts, AdaGrad, Ray Train.

    Defaults are Stanford ``glove``'s (iter 25, eta 0.05, alpha 0.75, x_max 100, grad_clip 100, model 2 =
    W + W~) except ``dim`` (100, the sgns stage's, so the two compare at equal size).  ``workers`` and
    ``threads`` are left out of the fingerprint, as for sgns.
    """

    dim: int = 100
    epochs: int = 25
    eta: float = 0.05  # AdaGrad initial learning rate
    alpha: float = 0.75  # exponent of the weighting f(x) = min(1, (x / x_max) ^ alpha)
    x_max: float = 100.0
    grad_clip: float = 100.0  # per-coordinate gradient clip (GloVe's grad_clip_value)
    #: Non-zero entries per AdaGrad step (gradients of entries sharing a row are summed).
    batch_size: int = 4096
    #: ``sum``: W + W~ (GloVe's -model 2, the paper's choice); ``word``: W alone (-model 1).
    output: Literal["sum", "word"] = "sum"
    workers: int = 1  # Ray Train workers, each training on its share of the entries
    threads: int = 1  # torch intra-op threads per worker
    use_gpu: bool = False
    #: Replica merges per epoch when workers > 1; ``null`` = one per ~1M entries of a worker's share.
    syncs_per_epoch: int | None = None
    seed: int = 1
    evaluate: bool = True

    def __post_init__(self) -> None:
        for name in ("dim", "epochs", "batch_size", "workers", "threads"):
            _check_range(f"glove.{name}", getattr(self, name), 1, None)
        _check_range("glove.dim", self.dim, 1, 1 << 16)
        if self.syncs_per_epoch is not None:
            _check_range("glove.syncs_per_epoch", self.syncs_per_epoch, 1, None)
        if not self.x_max > 0:
            _fail("glove.x_max", self.x_max, "a number > 0")
        if not 0.0 < self.alpha <= 1.0:
            _fail("glove.alpha", self.alpha, "a number in (0 .. 1]")
        if not self.eta > 0:
            _fail("glove.eta", self.eta, "a number > 0")
        if not self.grad_clip > 0:
            _fail("glove.grad_clip", self.grad_clip, "a number > 0")
        _check_range("glove.seed", self.seed, 0, (1 << 63) - 1)


@dataclass(frozen=True, kw_only=True, slots=True)
class RunSpec:
    """The whole pipeline: corpus, text handling and the settings of every stage."""

    name: str
    corpus: CorpusSpec
    normalize: NormalizeSpec = field(default_factory=NormalizeSpec)
    tokenizer: TokenizerSpec = field(default_factory=TokenizerSpec)
    vocab: VocabSpec = field(default_factory=VocabSpec)
    #: Stages ``lmpipe run`` executes by default (``--stages`` overrides), in :data:`STAGE_ORDER`.
    stages: tuple[str, ...] = ("tokenize",)
    tokenize: TokenizeSpec = field(default_factory=TokenizeSpec)
    ngram: NgramSpec = field(default_factory=NgramSpec)
    sgns: SgnsSpec = field(default_factory=SgnsSpec)
    cooccur: CooccurSpec = field(default_factory=CooccurSpec)
    glove: GloveSpec = field(default_factory=GloveSpec)

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            _fail("name", self.name, "a non-empty run name without '/' that does not start with '.'")
        known = [s for s in STAGE_ORDER if s in _implemented_stages()]
        for stage in self.stages:
            if stage not in known:
                _fail("stages", list(self.stages), f"stage names from {known}")

    def section(self, name: str) -> Any:
        """The settings dataclass of one stage (or a shared section) by name."""
        return getattr(self, name)

    def to_dict(self) -> dict[str, Any]:
        """The resolved spec as plain YAML-able data (tuples become lists)."""
        return _plain(dataclasses.asdict(self))


def _implemented_stages() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(RunSpec) if f.name in STAGE_ORDER)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------- parsing
def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp))
    if origin is tuple:
        return f"a list of {_describe(get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return f"a mapping with keys {[f.name for f in dataclasses.fields(tp)]}"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _convert(tp: Any, value: Any, path: str) -> Any:
    """Convert one YAML value to the annotated type, or fail naming path, value and what is allowed."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        real = [a for a in args if a is not type(None)]
        if len(real) == 1:  # Optional[X]: X's own error is the precise one
            return _convert(real[0], value, path)
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, path)
            except SpecError as exc:
                errors.append(exc)
        _fail(path, value, _describe(tp))
    if origin is Literal:
        if value not in get_args(tp):
            _fail(path, value, _describe(tp))
        return value
    if origin is tuple:
        item_type = get_args(tp)[0]
        items = [value] if isinstance(value, str | int | float) and not isinstance(value, bool) else value
        if not isinstance(items, list | tuple):
            _fail(path, value, _describe(tp))
        return tuple(_convert(item_type, v, f"{path}[{i}]") for i, v in enumerate(items))
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            _fail(path, value, "true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(path, value, "an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            _fail(path, value, "a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            _fail(path, value, "a string")
        return value
    raise TypeError(f"unsupported spec type {tp!r} at {path}")  # a programming error, not user input


def _build(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        _fail(path or "<top>", data, _describe(cls))
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            where = f"{path}.{key}" if path else str(key)
            raise SpecError(f"{where}: unknown key; allowed keys{' of ' + path if path else ''}: {sorted(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        where = f"{path}.{f.name}" if path else f.name
        if f.name in data:
            kwargs[f.name] = _convert(hints[f.name], data[f.name], where)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise SpecError(f"{where}: missing required key ({_describe(hints[f.name])})")
    return cls(**kwargs)


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``key.path=value`` override (value parsed as YAML) to raw spec data, in place."""
    if "=" not in assignment:
        raise SpecError(f"--set {assignment!r}: expected key.path=value")
    key, raw = assignment.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise SpecError(f"--set {assignment!r}: empty key path")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise SpecError(f"--set {key}: value {raw!r} is not valid YAML ({exc})") from exc
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise SpecError(f"--set {key}: {'.'.join(parts[: i + 1])} is {child!r}, not a section")
        node = child
    node[parts[-1]] = value


def parse_spec(data: Any, *, source: str = "<spec>", overrides: typing.Sequence[str] = ()) -> RunSpec:
    """Parse raw YAML data (plus ``--set`` overrides) into a validated :class:`RunSpec`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a spec is a YAML mapping, got {type(data).__name__}")
    data = yaml.safe_load(yaml.safe_dump(data))  # deep copy of plain data
    try:
        for assignment in overrides:
            apply_override(data, assignment)
        return _build(RunSpec, data, "")
    except SpecError as exc:
        raise SpecError(f"{source}: {exc}") from None


def load_spec(path: str | Path, *, overrides: typing.Sequence[str] = ()) -> RunSpec:
    """Read a spec file with ``yaml.safe_load`` and parse it.  Names the file in every error."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{path}: cannot read spec ({exc.strerror or exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML ({exc})") from exc
    if isinstance(data, dict):
        _anchor_paths(data, path.parent.resolve())
    return parse_spec(data, source=str(path), overrides=overrides)


def is_local_relative(ref: str) -> bool:
    """True for a relative local path (not a URI, not a ``data:`` reference, not absolute)."""
    return not ("://" in ref or ref.startswith("data:") or Path(ref).is_absolute())


def _anchor_paths(data: dict[str, Any], base: Path) -> None:
    """Relative paths written in a spec file mean 'beside the spec file', wherever lmpipe is run from.

    Paths given later with ``--set`` keep their meaning relative to the working directory."""
    corpus = data.get("corpus")
    if isinstance(corpus, dict):
        for split in ("train", "valid", "test"):
            refs = corpus.get(split)
            if isinstance(refs, str):
                refs = [refs]
            if isinstance(refs, list):
                corpus[split] = [str(base / r) if isinstance(r, str) and is_local_relative(r) else r for r in refs]
    ngram = data.get("ngram")
    if isinstance(ngram, dict) and isinstance(ngram.get("limit_vocab"), str) and is_local_relative(ngram["limit_vocab"]):
        ngram["limit_vocab"] = str(base / ngram["limit_vocab"])


def dump_spec(spec: RunSpec) -> str:
    """The resolved spec as YAML, written to the run directory so a run documents itself."""
    return yaml.safe_dump(spec.to_dict(), sort_keys=False)
