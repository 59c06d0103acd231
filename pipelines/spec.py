"""Pipeline specs: the sections of a run, each a frozen dataclass validated in its ``__post_init__``.

A spec names the corpus, how text is normalised and tokenized, the vocabulary cut, and the settings of
each stage.  The YAML is read by the generic parser (:mod:`lmpipe.pipelines.spec_parser`, driven by these
annotations alone); unknown keys and bad values are rejected with an error that names the file, the key
path, the bad value and what is allowed::

    >>> spec = load_spec("pipelines/specs/tiny.yaml", overrides=["vocab.min_count=2"])
    >>> spec.vocab.min_count
    2

Shared settings keep one name in every stage section: ``order``, ``prune``, ``epochs``, ``dim``,
``window``, ``model``, ``workers``, ``use_gpu``.  ``--set key.path=value`` overrides any value; the value
is read as YAML (``null``, ``3``, ``[0, 0, 1]``, ``true``).  Field types carry two markers: ``LocalPath``
(a path anchored beside the spec file and shipped with a job: :func:`local_paths`) and ``Runtime[T]``
(left out of the stage fingerprint: where or how fast, not what).

The stages are the ``RunSpec`` fields declared with :func:`stage_section`, in pipeline order: that is the
one list of stage names (:data:`STAGE_ORDER`); each has a module ``pipelines/stages/<name>.py``.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal

from lmpipe.embeddings.word2vec_defaults import mode_defaults
from lmpipe.pipelines.memory_size import MemoryMB, memory_mb
from lmpipe.pipelines.spec_parser import (
    LocalPath,
    New,
    PathRef,
    Runtime,
    SpecError,
    check_range,
    dump,
    fail,
    load,
    local_path_fields,
    local_paths,
    parse,
    plain,
)
from lmpipe.pipelines.suggest import did_you_mean

__all__ = [
    "STAGE_ORDER", "LocalPath", "Runtime", "SpecError", "RunSpec", "dump_spec", "load_spec", "local_path_fields",
    "local_paths", "parse_resources", "parse_spec",
]  # fmt: skip


#: Spec help for a ``resources`` entry (the Ray resources one worker of a stage requests).
_RESOURCES_ALLOWED = "NAME=AMOUNT, amount > 0, each name once: CPU, GPU or a custom resource of the nodes (e.g. ssd=1)"


def parse_resources(path: str, entries: typing.Sequence[str]) -> dict[str, float]:
    """``["CPU=2", "ssd=1"]`` -> ``{"CPU": 2.0, "ssd": 1.0}``, the Ray resources of one stage worker; fails
    naming the key path.  ``memory`` is refused: memory budgets are the stages' ``memory_mb``."""
    out: dict[str, float] = {}
    for i, entry in enumerate(entries):
        name, sep, amount = (part.strip() for part in entry.partition("="))
        try:
            value = float(amount)
        except ValueError:
            value = 0.0
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_:.-]*", name) or not value > 0 or name in out:
            fail(f"{path}[{i}]", entry, _RESOURCES_ALLOWED)
        if name in ("memory", "object_store_memory"):
            fail(f"{path}[{i}]", entry, f"{_RESOURCES_ALLOWED}; not {name} (memory budgets are the stage's memory_mb)")
        out[name] = value
    return out


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
        check_range("corpus.split.valid", self.valid, 0.0, 1.0)
        check_range("corpus.split.test", self.test, 0.0, 1.0)
        if self.valid + self.test >= 1.0:
            fail("corpus.split", {"valid": self.valid, "test": self.test}, "valid + test < 1")


@dataclass(frozen=True, kw_only=True, slots=True)
class CorpusSpec:
    """Where the text is.  Each entry is a path, directory, glob, pyarrow URI (s3://, gs://, hdfs://)
    or a dataset reference ``data:NAME/SPLIT`` resolved through ``lmpipe data`` (mirror or cache)."""

    train: tuple[LocalPath, ...]
    valid: tuple[LocalPath, ...] = ()
    test: tuple[LocalPath, ...] = ()
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
            fail("corpus.train", self.train, "one or more paths, globs, URIs or data:NAME/SPLIT references")
        if self.split is not None and (self.valid or self.test):
            fail("corpus.split", "set", "either corpus.split fractions or corpus.valid/corpus.test inputs")


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
        check_range("normalize.max_line_bytes", self.max_line_bytes, 1, None)


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
        check_range("tokenizer.sp_vocab_size", self.sp_vocab_size, 8, 1 << 24)
        check_range("tokenizer.sp_sample_lines", self.sp_sample_lines, 1, None)
        check_range("tokenizer.sp_character_coverage", self.sp_character_coverage, 0.9, 1.0)
        try:
            re.compile(self.pattern)
        except re.error as exc:
            fail("tokenizer.pattern", self.pattern, f"a valid Python regular expression ({exc})")


@dataclass(frozen=True, kw_only=True, slots=True)
class VocabSpec:
    """The vocabulary cut over training counts.  ``max_size`` counts the three specials; ``null`` = no cap."""

    min_count: int = 1
    max_size: int | None = None

    def __post_init__(self) -> None:
        check_range("vocab.min_count", self.min_count, 1, None)
        if self.max_size is not None:
            check_range("vocab.max_size", self.max_size, 4, (1 << 32) - 1)


# --------------------------------------------------------------------------------------------- stages
@dataclass(frozen=True, kw_only=True, slots=True)
class TokenizeSpec:
    """The tokenize stage: input chunks are read, tokenized and written by ``workers`` Ray actors."""

    workers: Runtime[int] = 2
    #: Input bytes per chunk, the unit of parallel work; each chunk becomes one shard (more if it is a
    #: large compressed file).  Output is independent of ``workers``, so shards are byte-identical.
    shard_mb: float = 64.0
    #: Arrow IPC compression of the shards.
    compression: Literal["zstd", "lz4", "none"] = "zstd"
    #: Ray resources per worker (:func:`parse_resources`), e.g. ``[CPU=1, ssd=1]`` to run on nodes started
    #: with ``ray start --resources '{"ssd": 4}'``; default one CPU.  Not in the fingerprint: where, not what.
    resources: Runtime[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        check_range("tokenize.workers", self.workers, 1, 100_000)
        check_range("tokenize.shard_mb", self.shard_mb, 0.001, 16_384)
        parse_resources("tokenize.resources", self.resources)


#: lmplz's ``--discount_fallback`` given without values.
LMPLZ_DISCOUNT_FALLBACK = (0.5, 1.0, 1.5)


@dataclass(frozen=True, kw_only=True, slots=True)
class NgramSpec:
    """The ngram stage: n-gram counts and an interpolated modified Kneser-Ney model, lmplz-exact."""

    order: int = 5
    #: Raw-count thresholds per order (lmplz ``--prune``): non-decreasing, the unigram entry 0.
    prune: tuple[int, ...] = ()
    #: ``lmpipe`` estimates on Ray; ``lmplz`` streams the tokens into an installed KenLM lmplz.
    estimator: Literal["lmpipe", "lmplz"] = "lmpipe"
    workers: Runtime[int] = 2
    #: Where the estimator's tasks run: ``ray`` (tasks on the cluster), ``local`` (``workers`` threads in the
    #: driver: no Ray processes to start or fill with copies of the libraries; the compiled kernels, sorts
    #: and Arrow IO release the GIL) or ``auto`` (``local`` unless the run joins a Ray cluster or sets
    #: ``resources``).  The same tasks either way, so the output is the same.  Not in the fingerprint.
    executor: Runtime[Literal["auto", "ray", "local"]] = "auto"
    #: Hash partitions of the n-gram counts (the unit of distributed estimation); raised automatically to
    #: a multiple of it when one partition would not fit ``memory_mb``.  More partitions than workers
    #: balance the load; a multiple of the workers shares the rounds evenly.
    partitions: int = 4
    #: Memory budget per worker in MB, or as lmplz's ``-S``: ``2G``, ``512M``, ``80%`` (of the physical memory
    #: of the machine reading the spec), resolved to MB; counts beyond it spill to disk.
    memory_mb: MemoryMB = 2048
    #: Discounts D1 D2 D3+ for an order whose counts-of-counts give none (lmplz ``--discount_fallback``);
    #: ``true`` means lmplz's own ``0.5 1 1.5``; ``null``/``false``: such an order is an error.
    discount_fallback: tuple[float, ...] | bool | None = None
    interpolate_unigrams: bool = True
    vocab_pad: int = 0
    #: A file of words (whitespace separated) the model's vocabulary is limited to.
    limit_vocab: LocalPath | None = None
    arpa_gzip: bool = False
    #: Also write KenLM's binary format when ``build_binary`` is found.
    build_binary: bool = True
    #: KenLM binary data structure (``build_binary`` probing|trie; none: ARPA only).  Quantisation (bits for
    #: probabilities and backoffs, ``-q``/``-b``) and pointer compression (``-a``) are trie options.
    binary: New[Literal["none", "probing", "trie"]] = "probing"
    binary_quantize: New[tuple[int, ...]] = ()
    binary_pointer_bits: New[int | None] = None
    #: Ray resources per task, as ``tokenize.resources`` (default one CPU).  Not in the fingerprint.
    resources: Runtime[tuple[str, ...]] = ()
    #: Compression of the spilled partitions (and of the ``counts`` the stage keeps): ``none``, ``lz4`` or
    #: ``zstd`` (Arrow IPC body compression).  Trades CPU for temporary disk; the model does not change, so
    #: it is not in the fingerprint.  ``auto``: ``zstd`` when the counts outgrow ``memory_mb`` (more
    #: partitions than ``partitions``: the out-of-core case, where disk is what runs out), else ``none``.
    spill_compression: Runtime[Literal["auto", "none", "lz4", "zstd"]] = "auto"
    #: Where the partition and spill files go (lmplz ``-T``), e.g. a local disk when the run directory is on
    #: NFS; every Ray worker must see it at the same path.  A fresh folder is made in it and removed after the
    #: stage.  ``null``: inside the stage's temporary folder in the run directory.  Not in the fingerprint.
    temp_dir: Runtime[str | None] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "memory_mb", memory_mb("ngram.memory_mb", self.memory_mb))
        if isinstance(self.discount_fallback, bool):  # lmplz's flag alone means 0.5 1 1.5
            object.__setattr__(self, "discount_fallback", LMPLZ_DISCOUNT_FALLBACK if self.discount_fallback else None)
        check_range("ngram.order", self.order, 1, 6)
        parse_resources("ngram.resources", self.resources)
        check_range("ngram.workers", self.workers, 1, 100_000)
        check_range("ngram.partitions", self.partitions, 1, 1 << 16)
        if self.binary != "trie" and (self.binary_quantize or self.binary_pointer_bits is not None):
            fail("ngram.binary", self.binary, "trie (binary_quantize and binary_pointer_bits are trie options)")
        if self.binary_quantize and (len(self.binary_quantize) != 2 or not all(2 <= b <= 25 for b in self.binary_quantize)):
            fail("ngram.binary_quantize", list(self.binary_quantize), "[probability bits, backoff bits], each 2..25")
        if self.binary_pointer_bits is not None:
            check_range("ngram.binary_pointer_bits", self.binary_pointer_bits, 0, 32)
        check_range("ngram.memory_mb", self.memory_mb, 64, None)
        check_range("ngram.vocab_pad", self.vocab_pad, 0, None)
        if self.prune:
            if len(self.prune) > self.order:
                fail("ngram.prune", list(self.prune), f"at most order={self.order} thresholds")
            if self.prune[0] != 0 or any(b < a for a, b in zip(self.prune, self.prune[1:], strict=False)):
                fail("ngram.prune", list(self.prune), "non-decreasing thresholds starting with 0, e.g. [0, 0, 1]")
        if self.discount_fallback is not None and len(self.discount_fallback) != 3:
            fail("ngram.discount_fallback", list(self.discount_fallback), "three discounts, e.g. [0.5, 1.0, 1.5]")


@dataclass(frozen=True, kw_only=True, slots=True)
class SgnsSpec:
    """The sgns stage: word2vec (skip-gram or CBOW, negative sampling or hierarchical softmax) trained with
    Ray Train.

    Defaults are word2vec.c's and gensim's for skip-gram with negative sampling; ``alpha`` and ``negative``
    left ``null`` take word2vec.c's per-model values (``embeddings.word2vec_defaults``: alpha 0.05 for CBOW,
    0.025 for skip-gram; 5 noise words with negative sampling, none with HS), filled in when the spec is
    read, so a skip-gram spec's fingerprint is what it was before the two modes were added.  ``workers`` data-parallel replicas each train on
    their share of the token shards and are merged ``syncs_per_epoch`` times per epoch (``sync`` scheme, see
    ``embeddings.sync``); ``threads`` are Hogwild threads inside one worker.  ``workers`` and ``threads``
    are left out of the stage fingerprint: scaling a run out or in does not invalidate it.
    """

    #: ``skipgram`` (word2vec.c ``-cbow 0``) or ``cbow`` (``-cbow 1``: the mean of the context window's
    #: vectors predicts the centre, gensim's ``cbow_mean=1``; ~3-4x faster per word).
    model: New[Literal["skipgram", "cbow"]] = "skipgram"
    #: ``negative`` sampling or ``hierarchical`` softmax over word2vec.c's Huffman tree of the counts
    #: (``-hs 1 -negative 0``).
    loss: New[Literal["negative", "hierarchical"]] = "negative"
    dim: int = 100
    window: int = 5  # maximum distance; the effective window is uniform in 1..window
    negative: int | None = None  # noise words per example; null: 5 with loss negative, 0 with hierarchical
    sample: float = 1e-3  # subsampling threshold; 0 disables
    alpha: float | None = None  # initial learning rate, decayed linearly to alpha * 1e-4; null: 0.025, cbow 0.05
    #: Words rarer than this (training counts) are removed before windowing, as word2vec does; it is applied
    #: on top of ``vocab.min_count``, so one tokenization serves embeddings of several cuts.
    min_count: int = 5
    epochs: int = 5
    workers: Runtime[int] = 1  # Ray Train workers (data parallel)
    use_gpu: bool = False  # one GPU per worker, NCCL between them
    batch_pairs: int = 1024  # pairs per vectorised SGD step
    shared_negatives: int = 1  # consecutive pairs sharing one noise draw (1 = word2vec; 16 is ~3x faster on CPU)
    threads: Runtime[int] = 1  # Hogwild threads per worker; > 1 makes results depend on thread timing
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
    overlap_sync: Runtime[bool] = True
    seed: int = 1
    #: Run the standard evaluations (analogies, WS353, SimLex, MEN, RW) when ``data:embedding-eval`` resolves
    #: through the mirror or cache; otherwise they are skipped with the reason logged and recorded.
    evaluate: bool = True

    def __post_init__(self) -> None:
        for name, value in mode_defaults(self.model, self.loss, alpha=self.alpha, negative=self.negative).items():
            object.__setattr__(self, name, value)  # frozen: filled in once, so the spec holds what runs
        for name in ("dim", "window", "min_count", "epochs", "workers", "batch_pairs", "threads"):
            check_range(f"sgns.{name}", getattr(self, name), 1, None)
        if self.loss == "negative":
            check_range("sgns.negative", self.negative, 1, None)
        elif self.negative != 0:
            fail("sgns.negative", self.negative, "0 or null with sgns.loss hierarchical (HS draws no noise words)")
        if not (self.model == "skipgram" and self.loss == "negative") and self.shared_negatives > 1:
            fail("sgns.shared_negatives", self.shared_negatives, "1 unless sgns.model is skipgram and sgns.loss negative")
        if self.syncs_per_epoch is not None:
            check_range("sgns.syncs_per_epoch", self.syncs_per_epoch, 1, None)
        check_range("sgns.dim", self.dim, 1, 1 << 16)
        check_range("sgns.sample", self.sample, 0.0, 1.0)
        if not 0.0 < self.alpha <= 1.0:
            fail("sgns.alpha", self.alpha, "a number in (0 .. 1]")
        check_range("sgns.shared_negatives", self.shared_negatives, 1, self.batch_pairs)
        check_range("sgns.seed", self.seed, 0, (1 << 63) - 1)


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
    workers: Runtime[int] = 2  # Ray tasks in flight
    #: Hash partitions of the counts by row (output shards); raised automatically to a multiple of it to
    #: fit ``memory_mb``.
    partitions: int = 4
    #: Memory budget per task in MB (or ``2G``, ``80%``, as ``ngram.memory_mb``): the map side spills its
    #: accumulator to disk at half of it.
    memory_mb: MemoryMB = 1024

    def __post_init__(self) -> None:
        object.__setattr__(self, "memory_mb", memory_mb("cooccur.memory_mb", self.memory_mb))
        check_range("cooccur.window", self.window, 1, 20)
        for name in ("min_count", "workers"):
            check_range(f"cooccur.{name}", getattr(self, name), 1, None)
        check_range("cooccur.partitions", self.partitions, 1, 4096)
        check_range("cooccur.memory_mb", self.memory_mb, 64, None)
        if self.max_size is not None:
            check_range("cooccur.max_size", self.max_size, 1, (1 << 32) - 1)


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
    workers: Runtime[int] = 1  # Ray Train workers, each training on its share of the entries
    threads: Runtime[int] = 1  # torch intra-op threads per worker
    use_gpu: bool = False
    #: Replica merges per epoch when workers > 1; ``null`` = one per ~1M entries of a worker's share.
    syncs_per_epoch: int | None = None
    seed: int = 1
    evaluate: bool = True

    def __post_init__(self) -> None:
        for name in ("dim", "epochs", "batch_size", "workers", "threads"):
            check_range(f"glove.{name}", getattr(self, name), 1, None)
        check_range("glove.dim", self.dim, 1, 1 << 16)
        if self.syncs_per_epoch is not None:
            check_range("glove.syncs_per_epoch", self.syncs_per_epoch, 1, None)
        if not self.x_max > 0:
            fail("glove.x_max", self.x_max, "a number > 0")
        if not 0.0 < self.alpha <= 1.0:
            fail("glove.alpha", self.alpha, "a number in (0 .. 1]")
        if not self.eta > 0:
            fail("glove.eta", self.eta, "a number > 0")
        if not self.grad_clip > 0:
            fail("glove.grad_clip", self.grad_clip, "a number > 0")
        check_range("glove.seed", self.seed, 0, (1 << 63) - 1)


#: Where the lm stage's input embedding may come from: an earlier stage of the run, or a file/directory.
LM_EMBEDDING_STAGES = ("sgns", "glove")
#: Vectors named by a stage of this run (``sgns``, ``glove``) or by a local path / URI.
VectorsPath = Annotated[str, PathRef(names=LM_EMBEDDING_STAGES)]
_LM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_MIX_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


@dataclass(frozen=True, kw_only=True, slots=True)
class LmModelSpec:
    """One recurrent language model of the lm stage: architecture (``lm.models``) and optimisation
    (``lm.train``).  Defaults are Zaremba et al.'s small LSTM (2 x 200, no dropout, SGD lr 1, clip 5, batch 20,
    bptt 20) with Mikolov's validation-driven schedule; ``lr`` and ``clip`` are in Zaremba's units (loss summed
    over the bptt steps, averaged over the batch).  Share settings between models with YAML anchors."""

    name: str
    #: ``nplm``: Bengio et al.'s feed-forward model (``lm.nplm``): ``context`` previous tokens, ``hidden`` units.
    kind: Literal["rnn", "irnn", "lstm", "gru", "nplm"] = "lstm"
    context: int = 4  # nplm: n - 1
    activation: Literal["tanh", "hardtanh", "softsign", "relu"] = "tanh"  # nplm hidden units
    direct: bool = True  # nplm: direct connections from the word vectors to the output
    emb_dim: int = 200
    hidden: int = 200
    layers: int = 2
    dropout: float = 0.0  # on non-recurrent connections only (Zaremba)
    tie: bool = False  # output matrix = input embedding (a projection is added when hidden != emb_dim)
    forget_bias: float = 0.0  # lstm only
    init: Literal["glorot", "uniform"] = "glorot"  # uniform: +-init_scale, as Zaremba
    init_scale: float = 0.1
    irnn_input_std: float = 0.001  # irnn: std of the input weights (Le et al. 2015)
    #: irnn: the recurrent matrix starts as this x identity (Le et al.: "the identity matrix or its scaled
    #: version"); below 1 the carried state decays instead of summing its inputs over the whole stream.
    irnn_identity_scale: float = 1.0
    softmax: Literal["full", "class", "adaptive"] = "full"
    classes: int | None = None  # class softmax: null = round(sqrt(V))
    cutoffs: tuple[int, ...] = ()  # adaptive softmax cluster bounds; () = 2k/10k/50k below V
    #: Input embedding initialised from ``sgns`` or ``glove`` (RUN/<stage>/vectors) or a path to vectors
    #: (``embeddings_format``: an lmpipe Vectors directory, or a file format of ``lmpipe embeddings import``).
    embeddings: VectorsPath | None = None
    embeddings_format: Literal["vectors", "word2vec", "word2vec-bin", "glove", "npy", "safetensors"] = "vectors"
    freeze_embeddings: bool = False
    #: Vectors whose dimension is not ``emb_dim``: ``error`` stops before training, ``project`` learns a linear map.
    dim_mismatch: Literal["error", "project"] = "error"
    optimizer: Literal["sgd", "adagrad", "adam"] = "sgd"
    lr: float = 1.0
    momentum: float = 0.0
    weight_decay: float = 0.0
    clip: float = 5.0  # max global gradient norm, 0 = off
    batch_size: int = 20  # columns per worker
    bptt: int = 20
    epochs: int = 13
    #: ``plateau``: lr /= lr_factor when validation perplexity does not improve by ``min_improvement`` (Mikolov);
    #: ``fixed``: lr x lr_decay every epoch after ``decay_after`` (Zaremba); ``none``.
    schedule: Literal["plateau", "fixed", "none"] = "plateau"
    lr_factor: float = 4.0
    min_improvement: float = 1.0
    decay_after: int = 4
    lr_decay: float = 0.5
    patience: int | None = None  # stop after this many epochs in a row without improvement
    seed: int = 1

    def validate(self, where: str) -> None:
        """Checks with the key path ``where`` (``lm.models[i]``) in every message."""
        if not _LM_NAME.fullmatch(self.name):
            fail(f"{where}.name", self.name, "letters, digits, '.', '_' and '-', starting with a letter or digit")
        for name in ("emb_dim", "hidden"):
            check_range(f"{where}.{name}", getattr(self, name), 1, 1 << 16)
        check_range(f"{where}.layers", self.layers, 1, 4)
        check_range(f"{where}.context", self.context, 1, 32)
        if self.kind == "nplm" and self.softmax != "full":
            fail(f"{where}.softmax", self.softmax, "full for kind nplm (its output layer is b + Wx + U act(d + Hx))")
        if self.kind == "nplm" and self.tie:
            fail(f"{where}.tie", self.tie, "false for kind nplm (its output layer reads the hidden units)")
        check_range(f"{where}.bptt", self.bptt, 1, 100_000)
        check_range(f"{where}.batch_size", self.batch_size, 1, 1 << 20)
        check_range(f"{where}.epochs", self.epochs, 1, 100_000)
        if not 0.0 <= self.dropout < 1.0:
            fail(f"{where}.dropout", self.dropout, "a number in [0 .. 1)")
        if not self.lr > 0:
            fail(f"{where}.lr", self.lr, "a number > 0")
        if not 0.0 <= self.momentum < 1.0:
            fail(f"{where}.momentum", self.momentum, "a number in [0 .. 1)")
        if self.momentum and self.optimizer != "sgd":
            fail(f"{where}.momentum", self.momentum, f"0 with optimizer {self.optimizer!r} (momentum is for sgd)")
        check_range(f"{where}.weight_decay", self.weight_decay, 0.0, None)
        check_range(f"{where}.clip", self.clip, 0.0, None)
        if not self.init_scale > 0:
            fail(f"{where}.init_scale", self.init_scale, "a number > 0")
        if not self.irnn_input_std > 0:
            fail(f"{where}.irnn_input_std", self.irnn_input_std, "a number > 0")
        if not 0.0 < self.irnn_identity_scale <= 1.0:
            fail(f"{where}.irnn_identity_scale", self.irnn_identity_scale, "a number in (0 .. 1]")
        if self.forget_bias and self.kind != "lstm":
            fail(f"{where}.forget_bias", self.forget_bias, f"0 for kind {self.kind!r} (only an lstm has a forget gate)")
        if self.classes is not None:
            check_range(f"{where}.classes", self.classes, 1, 1 << 20)
        if any(c < 1 for c in self.cutoffs) or any(b <= a for a, b in zip(self.cutoffs, self.cutoffs[1:], strict=False)):
            fail(f"{where}.cutoffs", list(self.cutoffs), "increasing positive ids, e.g. [2000, 10000]")
        if self.tie and self.softmax == "adaptive":
            fail(f"{where}.tie", self.tie, "false with softmax 'adaptive' (it has its own head); or softmax full/class")
        if self.freeze_embeddings and self.embeddings is None:
            fail(f"{where}.freeze_embeddings", True, "false unless `embeddings` names the vectors to freeze")
        if self.freeze_embeddings and self.tie:
            fail(f"{where}.freeze_embeddings", True, "false with tie: true (freezing would freeze the output layer)")
        if self.embeddings in LM_EMBEDDING_STAGES and self.embeddings_format != "vectors":
            fail(f"{where}.embeddings_format", self.embeddings_format, f"'vectors' for the {self.embeddings} stage")
        if not self.lr_factor > 1.0:
            fail(f"{where}.lr_factor", self.lr_factor, "a number > 1")
        check_range(f"{where}.min_improvement", self.min_improvement, 1.0, None)
        check_range(f"{where}.decay_after", self.decay_after, 0, None)
        if not 0.0 < self.lr_decay <= 1.0:
            fail(f"{where}.lr_decay", self.lr_decay, "a number in (0 .. 1]")
        if self.patience is not None:
            check_range(f"{where}.patience", self.patience, 1, None)
        check_range(f"{where}.seed", self.seed, 0, (1 << 63) - 1)


@dataclass(frozen=True, kw_only=True, slots=True)
class LmSpec:
    """The lm stage: recurrent LMs trained with Ray Train (DDP) and scored with KenLM's accounting.

    ``models`` lists named models trained one after the other, so one run compares e.g. ``lstm``, ``rnn``,
    ``irnn`` and ``lstm-sgns``.  ``workers`` data-parallel replicas each take ``batch_size`` columns of the token
    stream (the global batch is workers x batch_size).  Evaluation: ``eval_state: carry`` scores the split as
    ``eval_columns`` contiguous runs with the hidden state carried across sentences; ``reset`` zeroes it at
    every sentence (KenLM's context).  ``threads`` is left out of the fingerprint."""

    models: tuple[LmModelSpec, ...] = (LmModelSpec(name="lstm"),)
    workers: int = 1
    threads: Runtime[int] = 1  # torch threads per worker
    use_gpu: bool = False
    eval_columns: int = 10
    eval_state: Literal["carry", "reset"] = "carry"

    def __post_init__(self) -> None:
        check_range("lm.workers", self.workers, 1, 100_000)
        check_range("lm.threads", self.threads, 1, 1024)
        check_range("lm.eval_columns", self.eval_columns, 1, 1 << 20)
        if not self.models:
            fail("lm.models", [], "one or more models, e.g. [{name: lstm, kind: lstm}]")
        seen: set[str] = set()
        for i, model in enumerate(self.models):
            model.validate(f"lm.models[{i}]")
            if model.name in seen:
                fail(f"lm.models[{i}].name", model.name, "a name not used by another model of the list")
            seen.add(model.name)

    def model(self, name: str | None) -> LmModelSpec:
        """A model by name (the first one for None); the error lists the names."""
        for m in self.models:
            if name is None or m.name == name:
                return m
        raise SpecError(f"lm.models: no model named {name!r}; models: {[m.name for m in self.models]}")


@dataclass(frozen=True, kw_only=True, slots=True)
class MixtureSpec:
    """One interpolated mixture of the run's models (names as the stages list them: ``kn5``, ``lstm`` ...)."""

    models: tuple[str, ...]
    name: str | None = None  # default: the model names joined by "+"
    #: ``em`` fits the weights on the valid split (never on test); ``grid`` tries 21 weights (two models);
    #: ``fixed`` uses ``weights`` as given.
    method: Literal["em", "grid", "fixed"] = "em"
    weights: tuple[float, ...] | None = None  # for method fixed: one per model, >= 0, summing to 1
    #: Weights conditioned on the previous token's training count (Bengio et al. 2003): the thresholds that
    #: start bins 1.., e.g. [10, 100, 1000]; empty = one set of weights.
    context_bins: tuple[int, ...] = ()

    @property
    def label(self) -> str:
        return self.name or "+".join(self.models)

    def validate(self, path: str) -> None:
        # the label names the mixture's score files (RUN/mix/scores/<label>/): never a path outside the run
        for i, model in enumerate(self.models):
            if not _LM_NAME.fullmatch(model):
                fail(f"{path}.models[{i}]", model, "a model name of the run (letters, digits, '.', '_', '-')")
        if not _MIX_NAME.fullmatch(self.label) or ".." in self.label:
            fail(f"{path}.name", self.label, "letters, digits, '.', '_', '-', '+', starting with a letter or digit")
        if len(self.models) < 2 or len(set(self.models)) != len(self.models):
            fail(f"{path}.models", list(self.models), "two or more different model names, e.g. [kn5, lstm]")
        if self.method == "fixed":
            w = self.weights
            if w is None or len(w) != len(self.models):
                fail(f"{path}.weights", None if w is None else list(w), f"{len(self.models)} weights for method fixed")
            if any(x < 0 for x in w) or abs(sum(w) - 1.0) > 1e-6:
                fail(f"{path}.weights", list(w), "non-negative weights summing to 1")
        elif self.weights is not None:
            fail(f"{path}.weights", list(self.weights), "no weights unless method is fixed (em and grid fit them)")
        if self.method == "grid" and len(self.models) != 2:
            fail(f"{path}.method", self.method, "em or fixed for more than two models (grid is for two)")
        if list(self.context_bins) != sorted(set(self.context_bins)) or any(b < 1 for b in self.context_bins):
            fail(f"{path}.context_bins", list(self.context_bins), "increasing positive counts, e.g. [10, 100, 1000]")
        if self.context_bins and self.method != "em":
            fail(f"{path}.context_bins", list(self.context_bins), "bins only with method em")


@dataclass(frozen=True, kw_only=True, slots=True)
class MixSpec:
    """The mix stage: linear interpolations of models already scored in the run (``lm.mixture``), weights
    fitted on ``valid`` only, each scored on ``test`` with KenLM's accounting."""

    mixtures: tuple[MixtureSpec, ...] = ()
    bootstrap_samples: int = 1000  # paired bootstrap of the test perplexity difference vs each component

    def __post_init__(self) -> None:
        check_range("mix.bootstrap_samples", self.bootstrap_samples, 0, 1_000_000)
        seen: set[str] = set()
        for i, mixture in enumerate(self.mixtures):
            mixture.validate(f"mix.mixtures[{i}]")
            if mixture.label in seen:
                fail(f"mix.mixtures[{i}].name", mixture.label, "a name not used by another mixture")
            seen.add(mixture.label)


@dataclass(frozen=True, kw_only=True, slots=True)
class ReportSpec:
    """The report stage: one table over every model of the run (``pipelines.report``); runs last."""

    split: str = "test"  # the split the model table ranks by
    #: ``null``: perplexity (rows of one token stream); ``bpb``: bits per byte of the raw text.
    normalize: Literal["bpb"] | None = None

    def __post_init__(self) -> None:
        if self.split not in ("train", "valid", "test"):
            fail("report.split", self.split, "one of train, valid, test")


# --------------------------------------------------------------------------------------------- tagger
#: Tag columns per tagged-file format (``pipelines.conll.COLUMNS``); chunk columns are scored as spans.
TAGGER_COLUMNS: dict[str, tuple[str, ...]] = {
    "conll2003": ("ner", "chunk", "pos"), "conll2000": ("chunk", "pos"), "conllu": ("upos", "xpos"),
}  # fmt: skip
TAGGER_SPAN_COLUMNS = ("ner", "chunk")


@dataclass(frozen=True, kw_only=True, slots=True)
class TaggerTaskSpec:
    """One tagging task: a tag column of a tagged corpus.  Tasks may come from different corpora (POS from
    one, NER from another); the first task is the one early stopping and model selection watch."""

    name: str
    format: Literal["conll2003", "conll2000", "conllu"]
    column: str  # conll2003: ner | chunk | pos; conll2000: chunk | pos; conllu: upos | xpos
    train: LocalPath  # a path or data:NAME/SPLIT
    valid: LocalPath | None = None
    test: LocalPath | None = None
    #: With no ``valid`` file: this fraction of the training sentences (by a hash of the sentence) is the valid set.
    valid_fraction: float = 0.0
    #: Chunk columns are trained and predicted in this scheme (read from and written back in the file's own).
    scheme: Literal["iob1", "iob2", "bioes"] = "bioes"
    weight: float = 1.0  # of this task's loss in the multitask sum

    def validate(self, where: str) -> None:
        if not _LM_NAME.fullmatch(self.name):
            fail(f"{where}.name", self.name, "letters, digits, '.', '_' and '-', starting with a letter or digit")
        if self.column not in TAGGER_COLUMNS[self.format]:
            fail(f"{where}.column", self.column, f"one of {list(TAGGER_COLUMNS[self.format])} for format {self.format!r}")
        if not 0.0 <= self.valid_fraction < 1.0:
            fail(f"{where}.valid_fraction", self.valid_fraction, "a number in [0 .. 1)")
        if self.valid is not None and self.valid_fraction:
            fail(f"{where}.valid_fraction", self.valid_fraction, "0 when `valid` names a file")
        if not self.weight > 0:
            fail(f"{where}.weight", self.weight, "a number > 0")


@dataclass(frozen=True, kw_only=True, slots=True)
class TaggerTuneSpec:
    """``lmpipe tune SPEC --stage tagger``: random search (Bergstra & Bengio 2012) with ASHA early stopping.
    Ranges: ``lr`` log-uniform in [low, high], ``dropout`` uniform in [low, high], ``hidden`` and ``window`` choices."""

    lr: tuple[float, ...] = (0.003, 0.1)
    dropout: tuple[float, ...] = (0.0, 0.5)
    hidden: tuple[int, ...] = (100, 200, 300)
    window: tuple[int, ...] = (3, 5, 7)
    grace_period: int = 2  # ASHA: epochs before a trial may be stopped
    reduction_factor: int = 3
    cpus_per_trial: int = 1

    def __post_init__(self) -> None:
        for name in ("lr", "dropout"):
            lo_hi = getattr(self, name)
            if len(lo_hi) != 2 or not lo_hi[0] <= lo_hi[1]:
                fail(f"tagger.tune.{name}", list(lo_hi), "[low, high] with low <= high")
        if not self.lr[0] > 0:
            fail("tagger.tune.lr", list(self.lr), "positive bounds")
        if not (0.0 <= self.dropout[0] and self.dropout[1] < 1.0):
            fail("tagger.tune.dropout", list(self.dropout), "bounds in [0 .. 1)")
        if not self.hidden or any(h < 1 for h in self.hidden):
            fail("tagger.tune.hidden", list(self.hidden), "one or more positive sizes")
        if not self.window or any(w < 1 or w % 2 == 0 for w in self.window):
            fail("tagger.tune.window", list(self.window), "one or more odd window sizes")
        check_range("tagger.tune.grace_period", self.grace_period, 1, None)
        check_range("tagger.tune.reduction_factor", self.reduction_factor, 2, None)
        check_range("tagger.tune.cpus_per_trial", self.cpus_per_trial, 1, 1024)


@dataclass(frozen=True, kw_only=True, slots=True)
class TaggerSpec:
    """The tagger stage: Collobert & Weston's window tagger or a deep bidirectional RNN (Irsoy & Cardie), softmax
    or CRF output, one output layer per task over shared lookup tables and hidden layers, trained with Ray
    Train.  Defaults are Collobert & Weston's window network (50-d words, 5-d caps, window 5, 300 hardtanh
    units); ``model: rnn`` with ``crf: true`` is Lample et al.'s BiLSTM-CRF.  Word vectors come from this
    run's ``sgns``/``glove`` stage or a vectors path (``vectors_format``); ``lowercase: null`` lowercases the
    lookup when the vectors hold no uppercase token (or when there are no vectors)."""

    tasks: tuple[TaggerTaskSpec, ...] = ()
    model: Literal["window", "rnn"] = "window"
    vectors: VectorsPath | None = None
    vectors_format: Literal["vectors", "word2vec", "word2vec-bin", "glove", "npy", "safetensors"] = "vectors"
    max_vectors: int | None = 100_000  # the most frequent vectors added to the vocabulary (null: all)
    lowercase: bool | None = None
    min_count: int = 1  # training words seen less often are <unk> (unless they have a vector)
    freeze_vectors: bool = False
    dim: int = 50
    case_dim: int = 5  # 0: no capitalisation feature
    window: int = 5  # window model only, odd
    hidden: int = 300  # window: hidden units; rnn: units per direction
    layers: int = 1
    cell: Literal["lstm", "gru", "rnn"] = "lstm"  # rnn model only; rnn = Elman (tanh)
    activation: Literal["hardtanh", "tanh"] = "hardtanh"  # window model only
    crf: bool = False
    #: Character features of each word, concatenated to its vector: ``cnn`` (Ma & Hovy 2016: 30-d character
    #: embeddings, 30 filters of width 3, max-pooled) or ``lstm`` (Lample et al. 2016: a character BiLSTM; set
    #: char_dim 25, char_size 25); ``none``: words only (Collobert & Weston).
    chars: Literal["none", "cnn", "lstm"] = "none"
    char_dim: int = 30
    char_size: int = 30  # cnn: filters; lstm: units per direction
    char_width: int = 3  # cnn only, odd
    dropout: float = 0.0
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    lr_decay: float = 0.0  # lr / (1 + lr_decay x epoch)
    #: Lample et al. (2016): a training word seen once is read as <unk> with this probability at each
    #: occurrence, so the <unk> vector is trained on words like the unseen ones of dev/test (their 0.5); 0: off.
    unk_replace: float = 0.0
    clip: float = 5.0
    batch_size: int = 16  # sentences per task per worker
    epochs: int = 20
    patience: int | None = 5
    seed: int = 1
    workers: int = 1
    threads: Runtime[int] = 1
    use_gpu: bool = False
    #: ``lmpipe tune``'s search space: it never shapes the stage's output.
    tune: Runtime[TaggerTuneSpec] = field(default_factory=TaggerTuneSpec)

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for i, task in enumerate(self.tasks):
            task.validate(f"tagger.tasks[{i}]")
            if task.name in seen:
                fail(f"tagger.tasks[{i}].name", task.name, "a name not used by another task")
            seen.add(task.name)
        if self.max_vectors is not None:
            check_range("tagger.max_vectors", self.max_vectors, 1, None)
        if self.vectors in LM_EMBEDDING_STAGES and self.vectors_format != "vectors":
            fail("tagger.vectors_format", self.vectors_format, f"'vectors' for the {self.vectors} stage")
        if self.freeze_vectors and self.vectors is None:
            fail("tagger.freeze_vectors", True, "false unless `vectors` names the vectors to freeze")
        check_range("tagger.min_count", self.min_count, 1, None)
        check_range("tagger.dim", self.dim, 1, 1 << 16)
        check_range("tagger.case_dim", self.case_dim, 0, 1 << 10)
        if self.window < 1 or self.window % 2 == 0:
            fail("tagger.window", self.window, "an odd number >= 1 (the token in the middle)")
        check_range("tagger.hidden", self.hidden, 1, 1 << 16)
        check_range("tagger.layers", self.layers, 1, 8)
        check_range("tagger.char_dim", self.char_dim, 1, 1 << 12)
        check_range("tagger.char_size", self.char_size, 1, 1 << 12)
        if self.char_width < 1 or self.char_width % 2 == 0:
            fail("tagger.char_width", self.char_width, "an odd number >= 1 (characters per filter)")
        if not 0.0 <= self.dropout < 1.0:
            fail("tagger.dropout", self.dropout, "a number in [0 .. 1)")
        if not self.lr > 0:
            fail("tagger.lr", self.lr, "a number > 0")
        if not 0.0 <= self.momentum < 1.0:
            fail("tagger.momentum", self.momentum, "a number in [0 .. 1)")
        if self.momentum and self.optimizer != "sgd":
            fail("tagger.momentum", self.momentum, f"0 with optimizer {self.optimizer!r} (momentum is for sgd)")
        check_range("tagger.weight_decay", self.weight_decay, 0.0, None)
        check_range("tagger.lr_decay", self.lr_decay, 0.0, None)
        if not 0.0 <= self.unk_replace < 1.0:
            fail("tagger.unk_replace", self.unk_replace, "a probability in [0 .. 1)")
        check_range("tagger.clip", self.clip, 0.0, None)
        check_range("tagger.batch_size", self.batch_size, 1, 1 << 20)
        check_range("tagger.epochs", self.epochs, 1, 100_000)
        if self.patience is not None:
            check_range("tagger.patience", self.patience, 1, None)
        check_range("tagger.seed", self.seed, 0, (1 << 63) - 1)
        check_range("tagger.workers", self.workers, 1, 100_000)
        check_range("tagger.threads", self.threads, 1, 1024)


def stage_section(section: type) -> Any:
    """A ``RunSpec`` field that is a stage's settings: the stage is named after the field, runs in field
    order unless its declared upstream stages say otherwise, and lives in ``pipelines/stages/<name>.py``."""
    return field(default_factory=section, metadata={"stage": True})


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
    tokenize: TokenizeSpec = stage_section(TokenizeSpec)
    ngram: NgramSpec = stage_section(NgramSpec)
    sgns: SgnsSpec = stage_section(SgnsSpec)
    cooccur: CooccurSpec = stage_section(CooccurSpec)
    glove: GloveSpec = stage_section(GloveSpec)
    lm: LmSpec = stage_section(LmSpec)
    tagger: TaggerSpec = stage_section(TaggerSpec)
    mix: MixSpec = stage_section(MixSpec)
    report: ReportSpec = stage_section(ReportSpec)

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith(".") or not self.name.isprintable():
            fail("name", self.name, "a non-empty run name without '/' or control characters that does not start with '.'")
        for stage in self.stages:
            if stage not in STAGE_ORDER:
                guess = did_you_mean(stage, STAGE_ORDER)
                fail("stages", list(self.stages), f"stage names from {list(STAGE_ORDER)}" + (f"; did you mean {guess!r}?" if guess else ""))

    def section(self, name: str) -> Any:
        """The settings dataclass of one stage (or a shared section) by name."""
        return getattr(self, name)

    def to_dict(self) -> dict[str, Any]:
        """The resolved spec as plain YAML-able data (tuples become lists)."""
        return plain(self)


#: The stages: the ``RunSpec`` fields declared with :func:`stage_section`, in pipeline order.
STAGE_ORDER: tuple[str, ...] = tuple(f.name for f in fields(RunSpec) if f.metadata.get("stage"))


def parse_spec(data: Any, *, source: str = "<spec>", overrides: typing.Sequence[str] = ()) -> RunSpec:
    """Parse raw YAML data (plus ``--set`` overrides) into a validated :class:`RunSpec`."""
    return parse(RunSpec, data, source=source, overrides=overrides)


def load_spec(path: str | Path, *, overrides: typing.Sequence[str] = ()) -> RunSpec:
    """Read a spec file with ``yaml.safe_load`` and parse it; relative :data:`LocalPath` values mean
    'beside the spec file'.  Names the file in every error."""
    return load(RunSpec, path, overrides=overrides)


def dump_spec(spec: RunSpec) -> str:
    """The resolved spec as YAML, written to the run directory so a run documents itself."""
    return dump(spec)
