"""Skip-gram with negative sampling (word2vec's SGNS), batched and vectorised for torch on CPU or CUDA.

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

What differs is the batching.  word2vec updates after every pair; here a *block* of sentences becomes one
array of pairs (numpy, no per-token Python), shuffled, and ``batch_pairs`` pairs at a time are scored with
the parameters as they were at the start of the batch and their row gradients ``index_add_``-ed into the
two matrices (Hogwild-like staleness inside one batch, as when word2vec runs many threads)::

    sentences ──concat──► ids  [ 7  3  9 | 4  4  8  2 ]   seg [0 0 0 | 1 1 1 1]   (| = sentence boundary)
    subsample ──────────► ids  [ 7  9 | 4  8  2 ]          eff [2 1 | 1 2 2]       (effective windows)
    offset o=1..window:   centre i, context i±o  if  o <= eff[i]  and  seg[i] == seg[i±o]
    shuffle, then per batch:  u = W_in[context] (B,d);  v = W_out[centre, noise] (B,1+K,d)
                              g = (label - sigmoid(u·v)) * lr;  W_in[context] += g v;  W_out[..] += g u

``shared_negatives=G`` lets G consecutive pairs share one draw of K noise words (Ji et al. 2016,
"HogBatch"): the noise scores become a (G x d)(d x K) matmul and G-fold fewer output rows are gathered.

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
import math
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lmpipe.embeddings.sampling import NoiseSampler, keep_probabilities, skipgram_pairs, windowed_tokens
from lmpipe.embeddings.sgns_modes import ModeTables
from lmpipe.embeddings.sgns_modes import train_block as train_mode_block
from lmpipe.embeddings.vectors import Vectors
from lmpipe.embeddings.word2vec_defaults import LOSSES, MODELS, mode_defaults
from lmpipe.pipelines.core.schemas import BOS_ID, EOS_ID, UNK_ID

logger = logging.getLogger(__name__)


def sgns_step(
    w_in: torch.Tensor,
    w_out: torch.Tensor,
    centre: torch.Tensor,
    context: torch.Tensor,
    noise: torch.Tensor,
    lr: float | torch.Tensor,
) -> torch.Tensor:
    """One SGD step on B pairs in place; returns the summed loss of the batch (0-dim, before the step).

    ``noise`` is (B, K) (one draw per pair) or (G, K) with G < B (shared by ceil(B/G) consecutive pairs).
    Loss per pair: ``-log σ(u·v_centre) - Σ_k log σ(-u·v_k)`` with u = w_in[context]; the update is ``-lr``
    times its gradient, computed for all pairs from the parameters at entry: word2vec's
    ``g = (label - σ(f)) * alpha; neu1e += g * syn1neg[target]; syn1neg[target] += g * syn0[context]``.
    A noise word equal to the pair's centre contributes nothing (word2vec: ``if (target == word) continue``).
    """
    # index_select and in-place ops: ~1.8x faster on CPU than advanced indexing with fresh temporaries
    b, d = context.shape[0], w_in.shape[1]
    groups, k = noise.shape
    u = w_in.index_select(0, context)  # (B, d)
    if groups == b:  # independent noise: the centre is target 0 of 1 + K, one gather and one scatter
        targets = torch.cat([centre[:, None], noise], 1).view(-1)  # (B * (1+K),)
        v = w_out.index_select(0, targets).view(b, k + 1, d)  # (B, 1+K, d)
        sign = torch.ones(k + 1, device=u.device, dtype=u.dtype)
        sign[0] = -1.0
        f = torch.mul(v, u[:, None, :]).sum(2).mul_(sign)  # (B, 1+K): -u·v_centre, +u·v_noise
        skip = torch.cat([torch.zeros_like(centre, dtype=torch.bool)[:, None], noise == centre[:, None]], 1)
        g = torch.sigmoid(f).mul_(-sign * lr).masked_fill_(skip, 0.0)  # (label - σ(u·v)) * lr
        w_out.index_add_(0, targets, torch.mul(g[:, :, None], u[:, None, :]).view(-1, d))
        w_in.index_add_(0, context, torch.bmm(g[:, None, :], v).view(b, d))
        return torch.nn.functional.softplus(f).masked_fill_(skip, 0.0).sum()
    per = -(-b // groups)  # shared noise: pairs [i*per, (i+1)*per) use noise[i]
    pad = groups * per - b
    v_pos = w_out.index_select(0, centre)  # (B, d)
    v_neg = w_out.index_select(0, noise.reshape(-1)).view(groups, k, d)  # (G, K, d)
    u_g = torch.cat([u, u.new_zeros(pad, d)]).view(groups, per, d)  # padded pairs have u = 0
    centre_g = torch.cat([centre, centre.new_full((pad,), -1)]).view(groups, per, 1)
    pos = torch.mul(u, v_pos).sum(1)  # (B,)
    neg = torch.bmm(u_g, v_neg.transpose(1, 2))  # (G, per, K)
    skip = noise[:, None, :] == centre_g
    g_pos = torch.sigmoid(-pos).mul_(lr)  # (1 - σ(f)) * lr
    g_neg = torch.sigmoid(neg).mul_(-lr).masked_fill_(skip, 0.0)  # (0 - σ(f)) * lr
    w_out.index_add_(0, centre, g_pos[:, None] * u)
    w_out.index_add_(0, noise.reshape(-1), torch.bmm(g_neg.transpose(1, 2), u_g).view(-1, d))
    w_in.index_add_(0, context, torch.bmm(g_neg, v_neg).view(-1, d)[:b].addcmul_(g_pos[:, None], v_pos))
    neg_loss = torch.nn.functional.softplus(neg).masked_fill_(skip, 0.0).sum() - pad * k * math.log(2.0)
    return torch.nn.functional.softplus(-pos).sum() + neg_loss  # padded pairs scored log 2 per noise word


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
        """Skip-gram with negative sampling: ``sgns_step`` and ``sgns_kernel.train_pairs``; the other modes
        train through ``embeddings.sgns_modes``."""
        return self.model == "skipgram" and self.loss == "negative"

    @property
    def final_alpha(self) -> float:
        return self.alpha * 1e-4 if self.min_alpha is None else self.min_alpha


@dataclass(frozen=True, slots=True)
class _Stream:
    """The randomness and learning-rate scalar of one training thread."""

    rng: np.random.Generator  # subsampling, windows, pair shuffling
    generator: torch.Generator  # noise words (on the parameters' device)
    lr: torch.Tensor  # 0-dim, refilled every step


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
    the learning-rate schedule; by default every counted token except ``<s>``/``</s>``.
    """

    def __init__(
        self,
        counts: np.ndarray,
        config: SGNSConfig,
        *,
        device: str | torch.device = "cpu",
        words_per_epoch: int | None = None,
    ) -> None:
        self.config = config
        self.counts = np.asarray(counts, dtype=np.uint64)
        vocab = len(self.counts)
        trainable = self.counts.astype(np.float64)
        trainable[[i for i in (BOS_ID, EOS_ID, *config.drop_ids) if i < vocab]] = 0.0
        self.keep_prob = keep_probabilities(trainable, config.sample)
        self.keep_prob[trainable == 0] = 0.0  # dropped ids (and ids never counted) never enter a window
        self.noise = NoiseSampler(trainable, config.ns_exponent, device)
        if words_per_epoch is None:
            skip = [i for i in (BOS_ID, EOS_ID) if i < vocab]
            words_per_epoch = int(self.counts.sum() - self.counts[skip].sum())
        self.words_per_epoch = words_per_epoch
        self._stream = _Stream(
            rng=np.random.default_rng(config.seed),
            generator=torch.Generator(device=device).manual_seed(config.seed),
            lr=torch.zeros((), device=device),  # a tensor, so a compiled step is not specialised on it
        )
        self._lock = threading.Lock()
        init = torch.rand(vocab, config.dim, generator=self._stream.generator, device=device)
        self.w_in = (init - 0.5) / config.dim  # word2vec.c: (rand - 0.5) / layer1_size
        self.w_out = torch.zeros(vocab, config.dim, device=device)
        self.words_done = 0  # raw tokens read so far, over all epochs
        self.epoch = 0
        self._step = torch.compile(sgns_step, dynamic=False) if config.compile else sgns_step
        self.backend = _resolve_backend(config, self.w_in.device)
        self._slices = 1  # numba backend: Hogwild slices per block (= threads of train_epoch)
        self.modes = None if config.sgns else ModeTables.build(config.loss, trainable, self.noise, self.w_in.device)
        logger.info(
            "SGNS: %s + %s, vocab %d, dim %d, %d trainable tokens, %d words/epoch, device %s",
            config.model,
            config.loss,
            vocab,
            config.dim,
            int(trainable.sum()),
            words_per_epoch,
            device,
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
        words, words_done = int(sum(len(s) for s in sentences)), self.words_done
        if not c.sgns:  # skip-gram HS, CBOW: embeddings.sgns_modes
            n, loss_sum = train_mode_block(
                self, sentences, st.rng, st.generator, self.learning_rate(words_done),
                self.learning_rate(words_done + words),
            )  # fmt: skip
            with self._lock:
                self.words_done += words
            return n, loss_sum
        if self.backend == "numba":  # word2vec's order, centre by centre: no shuffle (see window_pairs)
            from lmpipe.embeddings.sgns_kernel import train_pairs, window_pairs

            centre_np, context_np = window_pairs(*windowed_tokens(sentences, c.window, self.keep_prob, st.rng))
            noise_np = self.noise.draw((len(centre_np), c.negative), st.generator).numpy()
            loss_sum = train_pairs(
                self.w_in.numpy(), self.w_out.numpy(), centre_np, context_np, noise_np,
                self.learning_rate(words_done), self.learning_rate(words_done + words), self._slices,
            )  # fmt: skip
            with self._lock:
                self.words_done += words
            return len(centre_np), float(loss_sum)
        centre_np, context_np = skipgram_pairs(sentences, c.window, self.keep_prob, st.rng)
        order = st.rng.permutation(len(centre_np))
        device = self.w_in.device
        centre = torch.from_numpy(centre_np[order]).to(device, non_blocking=True)
        context = torch.from_numpy(context_np[order]).to(device, non_blocking=True)
        n, batch = len(order), c.batch_pairs
        per_batch = -(-batch // c.shared_negatives)  # noise draws per full batch
        full_noise = self.noise.draw((n // batch * per_batch, c.negative), st.generator)  # one call per block
        loss = torch.zeros((), device=device)
        for i, start in enumerate(range(0, n, batch)):
            stop = min(n, start + batch)
            st.lr.fill_(self.learning_rate(words_done + words * start / max(n, 1)))
            if stop - start == batch:
                noise, step = full_noise[i * per_batch : (i + 1) * per_batch], self._step
            else:  # the block's last, shorter batch: its own draw, and eager (a compiled step is fixed-shape)
                noise = self.noise.draw((-(-(stop - start) // c.shared_negatives), c.negative), st.generator)
                step = sgns_step
            loss += step(self.w_in, self.w_out, centre[start:stop], context[start:stop], noise, st.lr)
        with self._lock:
            self.words_done += words
        return n, float(loss)

    def train_epoch(self, sentences: Iterable[np.ndarray], *, threads: int = 1) -> EpochStats:
        """One pass over ``sentences`` (id arrays), grouped into blocks of ~``block_words`` tokens.

        ``threads > 1`` trains blocks concurrently on the shared matrices without locks (Hogwild, as
        word2vec.c and gensim's workers do): torch ops release the GIL, and each thread runs its ops
        single-threaded (intra-op threads are set to 1 meanwhile; torch's own intra-op parallelism barely
        helps these small ops).  Results then depend on thread timing; ``threads=1`` is reproducible.
        """
        t0, words = time.perf_counter(), self.words_done
        blocks = _blocks(sentences, self.config.block_words)
        if self.backend == "numba":  # the kernel runs its own GIL-free threads over each block
            from lmpipe.embeddings.sgns_kernel import set_threads

            self._slices = set_threads(threads)
            threads = 1
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
        """Producer (this thread) -> bounded queue -> ``threads`` Hogwild workers, each with its own streams."""
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

        streams = [self._new_stream() for _ in range(threads)]
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

    def _new_stream(self) -> _Stream:
        """Independent randomness for a worker thread, derived from (and advancing) the main stream."""
        seed = int(self._stream.rng.integers(2**63))
        device = self.w_in.device
        return _Stream(
            rng=np.random.default_rng(seed),
            generator=torch.Generator(device=device).manual_seed(seed),
            lr=torch.zeros((), device=device),
        )

    def to_vectors(self, tokens: Sequence[str], *, source: str = "sgns") -> Vectors:
        """The input vectors as the exported artifact (word2vec and gensim export syn0 too)."""
        matrix = self.w_in.detach().to("cpu", torch.float32).numpy().copy()
        return Vectors(tokens, matrix, self.counts, source=source)

    def state_dict(self) -> dict:
        """Everything needed to resume bit-exactly on the same device (rng states included)."""
        return {
            "w_in": self.w_in,
            "w_out": self.w_out,
            "words_done": self.words_done,
            "epoch": self.epoch,
            "rng": self._stream.rng.bit_generator.state,
            "generator": self._stream.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.w_in.copy_(state["w_in"])
        self.w_out.copy_(state["w_out"])
        self.words_done, self.epoch = int(state["words_done"]), int(state["epoch"])
        self._stream.rng.bit_generator.state = state["rng"]
        self._stream.generator.set_state(state["generator"])


def _resolve_backend(config: SGNSConfig, device: torch.device) -> str:
    if config.backend == "torch":
        return "torch"
    cpu = device.type == "cpu"
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
        offsets = chunk.offsets.to_numpy()  # absolute positions in chunk.values, slicing included
        values = chunk.values.to_numpy(zero_copy_only=False)
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
