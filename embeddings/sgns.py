"""Skip-gram with negative sampling (word2vec's SGNS), a compiled loop on CPU or batched torch steps on CUDA.

Semantics follow word2vec.c (`-cbow 0 -hs 0`) and gensim's ``Word2Vec(sg=1)``:

* frequent-word subsampling: a token with count f survives with probability
  ``min(1, (sqrt(f / (s*T)) + 1) * (s*T) / f)`` (s = ``sample``, T = trainable tokens), drawn once per
  token per epoch, *before* windowing, so windows reach over removed tokens;
* dynamic window: every centre draws b uniform in 0..window-1 and uses the effective window ``window - b``
  (1..window), so near context is weighted more;
* each (centre, context) pair trains the context word's input vector against the centre word's output
  vector and ``negative`` noise words drawn from unigram^0.75 (a noise word equal to the centre is skipped);
* learning rate linear from ``alpha`` to ``min_alpha`` (default alpha * 1e-4) over all epochs' raw words;
* init: input vectors uniform in ±0.5/dim, output vectors zero; plain SGD on touched rows, no optimiser.

Two backends train the same model.  ``numba`` (the CPU default): word2vec.c's loop, one pair at a time in
word2vec's order, compiled (``embeddings.sgns_kernel``), on numpy matrices; this path imports neither torch
nor Ray.  ``torch`` (a GPU, ``shared_negatives > 1``, ``compile``): batched steps on tensors
(``embeddings.sgns_torch``, which has the batching diagram).  On CPU both draw the initial vectors and the
noise words from the same stream (``sampling.HostGenerator`` is torch's CPU generator in numpy).

The matrices hold the rows ``0 .. rows - 1`` with ``rows`` = 1 + the largest trainable id: the vocabulary
is sorted by descending count, so with a ``min_count`` cut these are the specials and the kept words, and
the rarer ids (61% of an English vocabulary of 64k types at ``min_count`` 5), which never enter a window and
are never drawn as noise, have no rows::

    ids        0 <unk>  1 <s>  2 </s>  3 .. 24,310 kept (count >= min_count)  |  24,311 .. 63,844 dropped
    matrices   [------------------- rows = 24,311 --------------------------] |  (no rows)
    init draws [------------------- rows x dim ----------------------------] [ skipped: (V - rows) x dim ]

The init still draws ``V x dim`` uniforms (the rows not held are skipped), so the rows held and every later
draw are what they were when the matrices had a row per id: the vectors are the same bytes.

Speed on CPU (see bench/sgns_core.py): ``train_epoch(threads=N)`` runs N Hogwild threads like gensim's
workers; ``compile=True`` fuses the step with torch.compile; ``shared_negatives=16`` is the fastest
setting at equal quality on PTB.  Data parallelism across processes (Ray Train) syncs replicas with
:mod:`embeddings.sync`.

>>> model = SGNS(counts, SGNSConfig(dim=50, epochs=5))      # doctest: +SKIP
>>> for _ in range(model.config.epochs):                     # doctest: +SKIP
...     stats = model.train_epoch(sentences)                 # restartable iterable of uint32 id arrays
>>> model.to_vectors(tokens).save("artifacts/vectors")       # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lmpipe.embeddings.sampling import HostGenerator, NoiseSampler, keep_probabilities, windowed_tokens
from lmpipe.embeddings.sgns_modes import ModeTables
from lmpipe.embeddings.sgns_modes import train_block as train_mode_block
from lmpipe.embeddings.vectors import Vectors
from lmpipe.embeddings.word2vec_defaults import LOSSES, MODELS, mode_defaults
from lmpipe.pipelines.core.schemas import BOS_ID, EOS_ID, UNK_ID
from lmpipe.pipelines.core.shards import numpy_view

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True, slots=True)
class SGNSConfig:
    #: word2vec's architecture and output layer (``embeddings.sgns_modes``): ``skipgram``/``cbow`` (word2vec.c
    #: ``-cbow 0|1``; CBOW averages the context window's input rows, ``cbow_mean=1``), ``negative`` sampling
    #: or ``hierarchical`` softmax over word2vec.c's Huffman tree (``-hs 1 -negative 0``).
    model: str = "skipgram"
    loss: str = "negative"
    dim: int = 100
    window: int = 5  # maximum distance; the effective window is uniform in 1..window
    negative: int | None = None  # noise words per pair; None = word2vec's: 5 with negative sampling, 0 with HS
    sample: float = 1e-3  # subsampling threshold s; 0 disables
    alpha: float | None = None  # initial learning rate; None = word2vec.c's -alpha: 0.025 skip-gram, 0.05 CBOW
    min_alpha: float | None = None  # final learning rate; None = alpha * 1e-4 (word2vec.c's floor)
    ns_exponent: float = 0.75  # noise distribution counts**ns_exponent
    epochs: int = 5
    batch_pairs: int = 1024  # pairs per SGD step; ~1k keeps the (B, 1+K, d) temporaries in L2 on CPU
    block_words: int = 100_000  # tokens per vectorised pair-generation block (~0.5 KB of pairs per token)
    shared_negatives: int = (
        1  # consecutive pairs sharing one noise draw; 1 = word2vec, batch_pairs = per batch
    )
    drop_ids: tuple[int, ...] = (UNK_ID,)  # removed before windowing, as word2vec drops unknown words
    seed: int = 1
    compile: bool = False  # torch.compile the step: ~1.2x on CPU end to end; needs a C++ compiler, ~10-30 s
    #: ``numba``: word2vec's per-pair loop compiled (``embeddings.sgns_kernel``), threads without the GIL: the
    #: fast CPU path.  ``torch``: the batched step (GPU, shared negatives, compile).  ``auto``: numba on CPU
    #: with ``shared_negatives=1`` and no ``compile``, torch otherwise.
    backend: str = "auto"

    def __post_init__(self) -> None:
        if self.model not in MODELS or self.loss not in LOSSES:
            raise ValueError(f"model must be one of {MODELS} and loss one of {LOSSES}, got {self.model!r}, {self.loss!r}")
        for name, value in mode_defaults(self.model, self.loss, alpha=self.alpha, negative=self.negative).items():
            object.__setattr__(self, name, value)  # frozen: the per-model default is filled in once, here
        positive = ("dim", "window", "epochs", "batch_pairs", "block_words", "shared_negatives")
        bad = {name: getattr(self, name) for name in positive if getattr(self, name) < 1}
        if self.loss == "negative" and self.negative < 1:
            bad["negative"] = self.negative
        if bad:
            raise ValueError(f"SGNSConfig fields must be >= 1, got {bad}")
        if self.loss == "hierarchical" and self.negative != 0:
            raise ValueError(f"hierarchical softmax draws no noise words: negative must be 0 (or None), got {self.negative}")
        if (self.model, self.loss) != ("skipgram", "negative") and (self.shared_negatives > 1 or self.compile):
            raise ValueError("shared_negatives > 1 and compile apply to skip-gram with negative sampling only")
        if self.backend not in ("auto", "torch", "numba"):
            raise ValueError(f"backend must be auto, torch or numba, got {self.backend!r}")
        if self.backend == "numba" and (self.shared_negatives > 1 or self.compile):
            raise ValueError("backend numba is word2vec's per-pair loop: it takes neither shared_negatives > 1 nor compile")
        if not 0 < self.alpha or (self.min_alpha is not None and not 0 <= self.min_alpha <= self.alpha):
            raise ValueError(
                f"need 0 < alpha and 0 <= min_alpha <= alpha, got {self.alpha}, {self.min_alpha}"
            )

    @property
    def sgns(self) -> bool:
        """Skip-gram with negative sampling: ``sgns_kernel.train_pairs`` and ``sgns_torch.sgns_step``; the other
        modes train through ``embeddings.sgns_modes``."""
        return self.model == "skipgram" and self.loss == "negative"

    @property
    def final_alpha(self) -> float:
        return self.alpha * 1e-4 if self.min_alpha is None else self.min_alpha


@dataclass(frozen=True, slots=True)
class _Stream:
    """The randomness (and, on the torch backend, the learning-rate scalar) of one training thread."""

    rng: np.random.Generator  # subsampling, windows, pair shuffling
    generator: Any  # noise words: a HostGenerator (numba) or a torch.Generator on the parameters' device
    lr: Any = None  # torch backend: a 0-dim tensor, refilled every step


@dataclass(frozen=True, slots=True)
class _Prepared:
    """One block's draws on the numba SGNS path: raw tokens read, int32 pairs, int32 noise (pairs x negative)."""

    words: int
    centre: np.ndarray
    context: np.ndarray
    noise: np.ndarray


@dataclass(frozen=True, slots=True)
class EpochStats:
    words: int  # raw tokens read (before subsampling), the unit of the learning-rate schedule
    pairs: int
    loss: float  # mean loss per pair
    seconds: float
    lr: float  # learning rate at the end of the epoch

    @property
    def words_per_second(self) -> float:
        return self.words / self.seconds if self.seconds > 0 else float("inf")


class SGNS:
    """Training state: both matrices, sampling tables, random generators and schedule position.

    ``counts`` are the *global* vocabulary counts (they fix subsampling and noise), indexed by id.
    ``words_per_epoch`` is what *this* trainer reads per epoch (its shard under data parallelism) and sets
    the learning-rate schedule; by default every counted token except ``<s>``/``</s>``.  ``w_in``/``w_out``
    are float32 (rows, dim) numpy arrays on the numba backend and tensors on ``device`` on the torch backend;
    :meth:`host_matrices` gives both as numpy either way.
    """

    def __init__(
        self,
        counts: np.ndarray,
        config: SGNSConfig,
        *,
        device: Any = "cpu",
        words_per_epoch: int | None = None,
    ) -> None:
        self.config = config
        self.counts = np.asarray(counts, dtype=np.uint64)
        vocab = len(self.counts)
        trainable = self.counts.astype(np.float64)
        trainable[[i for i in (BOS_ID, EOS_ID, *config.drop_ids) if i < vocab]] = 0.0
        self.keep_prob = keep_probabilities(trainable, config.sample)
        self.keep_prob[trainable == 0] = 0.0  # dropped ids (and ids never counted) never enter a window
        self.noise = NoiseSampler(trainable, config.ns_exponent)  # raises when no id is trainable
        if words_per_epoch is None:
            skip = [i for i in (BOS_ID, EOS_ID) if i < vocab]
            words_per_epoch = int(self.counts.sum() - self.counts[skip].sum())
        self.words_per_epoch = words_per_epoch
        self.device = str(device)  # "cpu", "cuda:0" (a torch.device is accepted and kept as its name)
        self.backend = _resolve_backend(config, self.device)
        self.rows = int(np.flatnonzero(trainable).max()) + 1  # see the module docstring
        self._stream = self._new_stream(config.seed)
        self._lock = threading.Lock()
        if self.backend == "numba":
            self.w_in = np.empty((self.rows, config.dim), np.float32)
            self._stream.generator.fill_uniform(self.w_in)
            self.w_in -= np.float32(0.5)
            self.w_in /= np.float32(config.dim)  # word2vec.c: (rand - 0.5) / layer1_size
            self._stream.generator.skip((vocab - self.rows) * config.dim)  # the rows not held
            self.w_out = np.zeros((self.rows, config.dim), np.float32)
        else:
            from lmpipe.embeddings import sgns_torch

            self.w_in, self.w_out = sgns_torch.init_matrices(
                self.rows, vocab, config.dim, self._stream.generator, self.device
            )
            self._step = sgns_torch.compiled_step(config.compile)
        self.words_done = 0  # raw tokens read so far, over all epochs
        self.epoch = 0
        self._slices = 1  # numba backend: Hogwild slices per block (= threads of train_epoch)
        self._noise_buffers: list[np.ndarray | None] = [None, None]  # numba backend: see _noise_out
        self.modes = None if config.sgns else ModeTables.build(config.loss, trainable, self.noise)
        if self.backend == "torch" and self.modes is not None:
            self._device_tree = sgns_torch.device_tree(self.modes.tree, self.device)
        logger.info(
            "SGNS: %s + %s, vocab %d, %d rows x dim %d, %d trainable tokens, %d words/epoch, %s on %s",
            config.model,
            config.loss,
            vocab,
            self.rows,
            config.dim,
            int(trainable.sum()),
            words_per_epoch,
            self.backend,
            self.device,
        )

    def learning_rate(self, words_done: float | None = None) -> float:
        """Linear decay over ``epochs * words_per_epoch`` raw tokens, as gensim (word2vec.c floors it)."""
        c = self.config
        done = self.words_done if words_done is None else words_done
        progress = min(1.0, done / max(1, c.epochs * self.words_per_epoch))
        return c.alpha - (c.alpha - c.final_alpha) * progress

    def train_block(
        self, sentences: Sequence[np.ndarray], stream: _Stream | None = None
    ) -> tuple[int, float]:
        """Train on one block of sentences with ``stream``'s randomness; returns (pairs, summed loss)."""
        c, st = self.config, stream or self._stream
        if self.backend == "numba" and c.sgns:  # word2vec's order, centre by centre: no shuffle (see window_pairs)
            return self._train_prepared(self._prepare(sentences, st, 0))
        words, words_done = int(sum(len(s) for s in sentences)), self.words_done
        lr_start, lr_end = self.learning_rate(words_done), self.learning_rate(words_done + words)
        if self.backend == "torch":
            from lmpipe.embeddings import sgns_torch

            if c.sgns:
                n, loss_sum = sgns_torch.train_sgns_block(self, sentences, st, words_done, words)
            else:
                n, loss_sum = sgns_torch.train_mode_block(self, sentences, st, lr_start, lr_end)
        else:  # skip-gram HS, CBOW: embeddings.sgns_modes
            n, loss_sum = train_mode_block(self, sentences, st.rng, lr_start, lr_end)
        with self._lock:
            self.words_done += words
        return n, loss_sum

    def _prepare(self, sentences: Sequence[np.ndarray], stream: _Stream, slot: int) -> _Prepared:
        """The numba SGNS path's draws for one block (subsampling, windows, pairs, noise words), into noise
        buffer ``slot``: everything of a block but the kernel, so the next block can be drawn while the kernel
        trains on this one (:meth:`_train_prefetched`)."""
        from lmpipe.embeddings.sgns_kernel import window_pairs

        c = self.config
        centre, context = window_pairs(*windowed_tokens(sentences, c.window, self.keep_prob, stream.rng))
        noise = self.noise.draw((len(centre), c.negative), stream.generator, self._noise_out(len(centre), slot))
        return _Prepared(int(sum(len(s) for s in sentences)), centre, context, noise)

    def _train_prepared(self, block: _Prepared) -> tuple[int, float]:
        """The kernel over one prepared block, the learning rate taken where the schedule stands now."""
        import numba

        from lmpipe.embeddings.sgns_kernel import SLICES_PER_THREAD, train_pairs

        lr_start, lr_end = self.learning_rate(), self.learning_rate(self.words_done + block.words)
        slices = self._slices * SLICES_PER_THREAD if self._slices > 1 else 1
        with numba.parallel_chunksize(1):  # threads take the next slice when done: see SLICES_PER_THREAD
            loss_sum = float(train_pairs(
                self.w_in, self.w_out, block.centre, block.context, block.noise, lr_start, lr_end, slices
            ))  # fmt: skip
        with self._lock:
            self.words_done += block.words
        return len(block.centre), loss_sum

    def _train_prefetched(self, blocks: Iterator[list[np.ndarray]]) -> list[tuple[int, float]]:
        """The numba SGNS epoch: one helper thread reads the next block and draws its pairs and noise while the
        kernel trains on this one.

        Why: the draws are a third of an epoch's CPU time (bench/RESULTS.md, 2026-12-07) and ran between two
        kernel calls on one core while the kernel's other threads waited; overlapped, an epoch costs about
        (kernel + draws) / cores instead of kernel / cores + draws, as gensim's job producer thread overlaps
        its workers.  The draws use the trainer's streams in block order and the kernel trains the blocks in
        order, so the result is what the serial loop gives, bit for bit (``threads=1``).  Two noise buffers
        alternate: the block drawn is never the block trained."""
        from concurrent.futures import ThreadPoolExecutor

        slots = itertools.cycle((0, 1))

        def draw_next() -> _Prepared | None:
            block = next(blocks, None)
            return None if block is None else self._prepare(block, self._stream, next(slots))

        results: list[tuple[int, float]] = []
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sgns-draws") as pool:
            pending = pool.submit(draw_next)
            while (block := pending.result()) is not None:
                pending = pool.submit(draw_next)
                results.append(self._train_prepared(block))
        return results

    def _noise_out(self, pairs: int, slot: int = 0) -> np.ndarray:
        """The numba path's noise array (int32) of buffer ``slot`` (0 or 1), kept from block to block (grown by
        a quarter when a block needs more): the block's largest array is then allocated a few times per run,
        not once per block, which kept glibc from raising its mmap threshold and holding ~25 MB of freed
        blocks (bench/RESULTS.md, 2026-12-03).  Two slots: one block is drawn while the other trains."""
        n = pairs * self.config.negative
        buffer = self._noise_buffers[slot]
        if buffer is None or len(buffer) < n:
            buffer = self._noise_buffers[slot] = np.empty(n + n // 4, np.int32)
        return buffer

    def train_epoch(self, sentences: Iterable[np.ndarray], *, threads: int = 1) -> EpochStats:
        """One pass over ``sentences`` (id arrays), grouped into blocks of ~``block_words`` tokens.

        ``threads > 1`` trains concurrently on the shared matrices without locks (Hogwild, as word2vec.c and
        gensim's workers do).  numba backend: the kernel splits each block over ``threads`` GIL-free threads.
        torch backend: ``threads`` Python threads train whole blocks (torch ops release the GIL), each running
        its ops single-threaded (intra-op threads are set to 1 meanwhile; torch's own intra-op parallelism
        barely helps these small ops).  Results then depend on thread timing; ``threads=1`` is reproducible.
        """
        t0, words = time.perf_counter(), self.words_done
        blocks = _blocks(sentences, self.config.block_words)
        if self.backend == "numba":  # the kernel runs its own GIL-free threads over each block
            from lmpipe.embeddings.sgns_kernel import set_threads

            self._slices = set_threads(threads)
            if self.config.sgns:
                results = self._train_prefetched(blocks)
            else:
                results = [self.train_block(b) for b in blocks]
        else:
            results = [self.train_block(b) for b in itertools.islice(blocks, 1)]  # a compiled step compiles here
            if threads <= 1:
                results += [self.train_block(b) for b in blocks]
            else:
                results += self._train_threaded(blocks, threads)
        pairs, loss = sum(n for n, _ in results), sum(x for _, x in results)
        self.epoch += 1
        stats = EpochStats(
            words=self.words_done - words,
            pairs=pairs,
            loss=loss / max(pairs, 1),
            seconds=time.perf_counter() - t0,
            lr=self.learning_rate(),
        )
        logger.info(
            "epoch %d: %d words, %d pairs, loss %.4f, %.0f words/s, lr %.5f",
            self.epoch,
            stats.words,
            stats.pairs,
            stats.loss,
            stats.words_per_second,
            stats.lr,
        )
        return stats

    def _train_threaded(self, blocks: Iterator[list[np.ndarray]], threads: int) -> list[tuple[int, float]]:
        """Producer (this thread) -> bounded queue -> ``threads`` Hogwild workers, each with its own streams
        (torch backend)."""
        import torch

        work: queue.Queue = queue.Queue(maxsize=2 * threads)
        results: list[tuple[int, float]] = []
        errors: list[BaseException] = []

        def worker(stream: _Stream) -> None:
            while (block := work.get()) is not None:
                if errors:
                    continue  # keep draining so the producer never blocks on a dead pool
                try:
                    results.append(self.train_block(block, stream))
                except BaseException as e:  # re-raised in the calling thread below
                    errors.append(e)

        streams = [self._new_stream(int(self._stream.rng.integers(2**63))) for _ in range(threads)]
        pool = [threading.Thread(target=worker, args=(st,), daemon=True) for st in streams]
        intra_op = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for t in pool:
                t.start()
            for block in blocks:
                work.put(block)
        finally:
            for _ in pool:
                work.put(None)
            for t in pool:
                t.join()
            torch.set_num_threads(intra_op)
        if errors:
            raise errors[0]
        return results

    def _new_stream(self, seed: int) -> _Stream:
        """Randomness seeded with ``seed``: the trainer's own (``config.seed``), or a worker thread's, derived
        from (and advancing) the trainer's."""
        if self.backend == "numba":
            return _Stream(rng=np.random.default_rng(seed), generator=HostGenerator(seed))
        from lmpipe.embeddings import sgns_torch

        return _Stream(
            rng=np.random.default_rng(seed), generator=sgns_torch.new_generator(seed, self.device),
            lr=sgns_torch.lr_scalar(self.device),
        )  # fmt: skip

    def seeded_streams(self, seed: int) -> dict[str, Any]:
        """Fresh random streams from ``seed`` in the layout of :meth:`state_dict` (``rng``, ``generator``)."""
        st = self._new_stream(seed)
        return {"rng": st.rng.bit_generator.state, "generator": _generator_state(st.generator)}

    def host_matrices(self) -> tuple[np.ndarray, np.ndarray]:
        """``(w_in, w_out)`` as float32 numpy arrays: the matrices themselves (numba) or host copies (torch)."""
        if self.backend == "numba":
            return self.w_in, self.w_out
        return tuple(w.detach().cpu().numpy() for w in (self.w_in, self.w_out))  # type: ignore[return-value]

    def to_vectors(self, tokens: Sequence[str], *, source: str = "sgns") -> Vectors:
        """The input vectors of every id with a row (``tokens[:rows]``) as the exported artifact (word2vec and
        gensim export syn0 too)."""
        matrix = self.host_matrices()[0].copy()
        return Vectors(list(tokens)[: self.rows], matrix, self.counts[: self.rows], source=source)

    def state_dict(self) -> dict:
        """Everything needed to resume bit-exactly on the same device (rng states included).  The matrices are
        the live ones, not copies."""
        return {
            "w_in": self.w_in,
            "w_out": self.w_out,
            "words_done": self.words_done,
            "epoch": self.epoch,
            "rng": self._stream.rng.bit_generator.state,
            "generator": _generator_state(self._stream.generator),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s values (matrices as numpy arrays or tensors, generator states as written
        by :meth:`state_dict` or read back from a checkpoint)."""
        if self.backend == "numba":
            np.copyto(self.w_in, np.asarray(state["w_in"]))
            np.copyto(self.w_out, np.asarray(state["w_out"]))
            self._stream.generator.state = state["generator"]
        else:
            import torch

            from lmpipe.embeddings.sgns_torch import state_tensor

            self.w_in.copy_(torch.as_tensor(state["w_in"]))
            self.w_out.copy_(torch.as_tensor(state["w_out"]))
            self._stream.generator.set_state(state_tensor(state["generator"]))
        self.words_done, self.epoch = int(state["words_done"]), int(state["epoch"])
        self._stream.rng.bit_generator.state = state["rng"]


def _generator_state(generator: Any) -> Any:
    """A noise generator's state: a dict (HostGenerator) or the ByteTensor of ``torch.Generator.get_state``."""
    return generator.state if isinstance(generator, HostGenerator) else generator.get_state()


def _resolve_backend(config: SGNSConfig, device: str) -> str:
    if config.backend == "torch":
        return "torch"
    cpu = device.split(":")[0] == "cpu"
    if config.backend == "numba":
        if not cpu:
            raise ValueError(f"backend numba runs on CPU; the parameters are on {device} (use backend torch)")
        return "numba"
    if not cpu or config.shared_negatives > 1 or config.compile:
        return "torch"
    try:
        import numba  # noqa: F401
    except ImportError:  # a CUDA-only install may leave it out: the torch step is the same algorithm
        logger.warning("numba is not installed: SGNS on CPU uses the slower batched torch step")
        return "torch"
    return "numba"


def sentences_from_arrow(batch, column: str = "ids") -> list[np.ndarray]:
    """Zero-copy uint32 views of a TOKENS-schema ``ids`` list column (pa.Table or pa.RecordBatch), one per
    sentence: what a Ray Data shard's ``iter_batches(batch_format="pyarrow")`` yields, ready for
    :meth:`SGNS.train_epoch`."""
    col = batch.column(column)
    out: list[np.ndarray] = []
    for chunk in getattr(col, "chunks", [col]):
        offsets = numpy_view(chunk.offsets)  # absolute positions in chunk.values, slicing included
        values = numpy_view(chunk.values)
        out += [values[offsets[i] : offsets[i + 1]] for i in range(len(chunk))]
    return out


def _blocks(sentences: Iterable[np.ndarray], block_words: int) -> Iterator[list[np.ndarray]]:
    block: list[np.ndarray] = []
    words = 0
    for s in sentences:
        block.append(np.asarray(s))
        words += len(s)
        if words >= block_words:
            yield block
            block, words = [], 0
    if block:
        yield block
