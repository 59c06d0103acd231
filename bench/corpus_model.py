"""A generator of realistic English-like text at any size, for scale benchmarks (no large corpus is offline).

Repeated text is not a large corpus: its distinct n-grams stop growing after the first copy.  This module fits
an interpolated Witten-Bell n-gram model (order 4 by default) on the mirrored real English text and samples
sentences from it, so that

* short n-grams follow real English (they are the model's), and longer ones are new combinations at the rate
  an order-``k`` Markov chain makes them;
* the vocabulary keeps growing with size as real text does (Heaps' law ``V(N) = K N^beta``): words seen once in
  the real text are fitted as one class ``RARE``, and each ``RARE`` the chain emits is resolved by a
  Pitman-Yor process over an unbounded lexicon (discount ``d`` = the real text's ``beta``, concentration
  calibrated so the expected number of rare types at the real text's size equals its hapax count): new word
  forms appear at a Heaps' rate and old rare words come back Zipf-like.  New forms are spelt by a character
  trigram model of the real rare words, so they look like words to a tokenizer.

Sampling runs in a numba loop (one chain; about 5-10 M tokens/s on one core); text is written in chunks, so
memory stays bounded at any size.  ``generate(mirror, tokens, path, seed)`` is deterministic in its arguments.

    >>> model = fit(english_text(mirror))                              # doctest: +SKIP
    >>> write_generated(model, 200_000_000, Path("gen-200M.txt"), seed=1)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

BOS, EOS, RARE = 0, 1, 2  # ids of the sentence markers and of the rare-word class
FIRST = 3
#: A sentence longer than this is cut (a chain that never samples EOS would otherwise run on).
MAX_SENTENCE = 200


@dataclass(frozen=True)
class NgramTable:
    """One order's counts as CSR over packed contexts: successors of ``keys[i]`` are ``succ[off[i]:off[i+1]]``
    with cumulative counts ``cum`` (global, so one ``searchsorted`` draws within a segment)."""

    keys: np.ndarray  # uint64 packed contexts, sorted
    off: np.ndarray  # int64, len(keys) + 1
    succ: np.ndarray  # int32
    cum: np.ndarray  # float64 cumulative counts over all segments
    lam: np.ndarray  # float64 Witten-Bell weight of each context: c(h) / (c(h) + N1+(h.))


@dataclass(frozen=True)
class CorpusModel:
    words: np.ndarray  # object array of the word strings by id (BOS, EOS, RARE first)
    tables: tuple[NgramTable, ...]  # contexts of length 1 .. order-1
    unigram_cum: np.ndarray  # float64 cumulative unigram counts (BOS excluded)
    bits: int  # bits per id in a packed context
    heaps_beta: float
    pyp_theta: float
    rare_words: tuple[str, ...]  # the real text's hapaxes: the first types of the rare lexicon
    char_model: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # char trigram CSR for spelling
    alphabet: str


def _pack(cols: list[np.ndarray], bits: int) -> np.ndarray:
    key = np.zeros(len(cols[0]), dtype=np.uint64)
    for c in cols:
        key = (key << np.uint64(bits)) | c.astype(np.uint64)
    return key


def _csr(ctx: np.ndarray, succ: np.ndarray) -> NgramTable:
    """Count (context, successor) pairs and lay them out as CSR with Witten-Bell weights."""
    succ = succ.astype(np.int64)
    order = np.lexsort((succ, ctx))  # by context, then successor
    ctx, succ = ctx[order], succ[order]
    new_pair = np.ones(len(ctx), dtype=bool)
    new_pair[1:] = (ctx[1:] != ctx[:-1]) | (succ[1:] != succ[:-1])
    starts = np.flatnonzero(new_pair)
    counts = np.diff(np.append(starts, len(ctx)))
    pair_ctx, pair_succ = ctx[starts], succ[starts]
    new_ctx = np.ones(len(pair_ctx), dtype=bool)
    new_ctx[1:] = pair_ctx[1:] != pair_ctx[:-1]
    start = np.flatnonzero(new_ctx)
    off = np.append(start, len(pair_ctx)).astype(np.int64)
    totals = np.add.reduceat(counts, start).astype(np.float64)
    types = np.diff(off).astype(np.float64)
    return NgramTable(
        keys=pair_ctx[start], off=off, succ=pair_succ.astype(np.int32), cum=np.cumsum(counts, dtype=np.float64),
        lam=totals / (totals + types),
    )  # fmt: skip


def heaps_beta(tokens: np.ndarray) -> float:
    """Heaps' exponent of a token stream: the least-squares slope of log V(N) on log N at N = n/32 .. n.

    Call it on sentences in random order: the benchmark text concatenates four sources, and in file order
    each new source adds a burst of types that is not vocabulary growth.
    """
    first_seen = np.zeros(len(tokens), dtype=bool)
    _, first = np.unique(tokens, return_index=True)
    first_seen[first] = True
    types = np.cumsum(first_seen)
    points = (len(tokens) / np.geomspace(32, 1, 11)).astype(np.int64)
    slope = np.polyfit(np.log(points), np.log(types[points - 1]), 1)[0]
    return float(slope)


@numba.njit(cache=True)
def pyp_expected_types(theta: float, d: float, n: int) -> float:
    """E[number of types] after ``n`` Pitman-Yor draws (the mean recursion is linear, hence exact)."""
    k = 0.0
    for i in range(n):
        k += (theta + d * k) / (theta + i) if i else 1.0
    return k


def _calibrate_theta(d: float, draws: int, types: int) -> float:
    """The concentration at which ``draws`` Pitman-Yor draws give ``types`` types in expectation."""
    lo, hi = 1e-3, 1e9
    for _ in range(80):  # bisection in log space: E[K] grows with theta
        mid = math.sqrt(lo * hi)
        if pyp_expected_types(mid, d, draws) < types:
            lo = mid
        else:
            hi = mid
    return math.sqrt(lo * hi)


#: The size, in multiples of the real text, at which the generated vocabulary meets the real text's Heaps line.
ANCHOR = 10


def _char_model(words: list[str]) -> tuple[tuple[np.ndarray, ...], str]:
    alphabet = "".join(sorted({ch for w in words for ch in w}))
    index = {ch: i + 2 for i, ch in enumerate(alphabet)}  # 0 = start, 1 = end
    a, b, c = [], [], []
    for w in words:
        ids = [0, 0, *(index[ch] for ch in w), 1]
        for i in range(2, len(ids)):
            a.append(ids[i - 2])
            b.append(ids[i - 1])
            c.append(ids[i])
    size = len(alphabet) + 2
    ctx = np.asarray(a, dtype=np.uint64) * np.uint64(size) + np.asarray(b, dtype=np.uint64)
    t = _csr(ctx, np.asarray(c, dtype=np.int32))
    return (t.keys, t.off, t.succ, t.cum), alphabet


def fit(text: str, order: int = 4) -> CorpusModel:
    """Fit the sampling model on real text (one sentence per line, whitespace tokens)."""
    lines = [ln.split() for ln in text.splitlines() if ln.strip()]
    shuffled = np.random.default_rng(0).permutation(len(lines))
    flat = pa.array([w for ln in lines for w in ln], pa.string())
    encoded = pc.dictionary_encode(flat)
    dictionary = encoded.dictionary.to_numpy(zero_copy_only=False)
    raw = encoded.indices.to_numpy().astype(np.int64)
    counts = np.bincount(raw, minlength=len(dictionary))
    line_of = np.repeat(np.arange(len(lines)), [len(ln) for ln in lines])
    beta = heaps_beta(raw[np.argsort(np.argsort(shuffled)[line_of], kind="stable")])
    hapax = counts == 1
    common = np.flatnonzero(~hapax)
    remap = np.full(len(dictionary), RARE, dtype=np.int32)
    remap[common] = np.arange(FIRST, FIRST + len(common), dtype=np.int32)
    words = np.concatenate([np.array(["<s>", "</s>", "<rare>"], dtype=object), dictionary[common]])
    ids = remap[raw]
    lengths = np.fromiter((len(ln) for ln in lines), dtype=np.int64, count=len(lines))
    # each sentence as  BOS x (order-1), words, EOS
    pad = order - 1
    total = int(lengths.sum()) + len(lines) * (pad + 1)
    stream = np.full(total, BOS, dtype=np.int32)
    starts = np.concatenate([[0], np.cumsum(lengths + pad + 1)[:-1]])
    word_pos = np.repeat(starts + pad, lengths) + (np.arange(len(ids)) - np.repeat(np.cumsum(lengths) - lengths, lengths))
    stream[word_pos] = ids
    stream[starts + pad + lengths] = EOS
    target = np.ones(total, dtype=bool)
    target[np.concatenate([starts + i for i in range(pad)])] = False  # padding positions are never predicted
    pos = np.flatnonzero(target)
    bits = max(1, int(len(words) - 1).bit_length())
    if bits * (order - 1) > 64:
        raise ValueError(f"order {order}: {len(words)} word ids do not pack into 64-bit contexts")
    tables = []
    for k in range(1, order):
        ctx = _pack([stream[pos - j] for j in range(k, 0, -1)], bits)
        tables.append(_csr(ctx, stream[pos]))
    uni = np.bincount(stream[pos], minlength=len(words)).astype(np.float64)
    rare_words = tuple(str(w) for w in dictionary[hapax])
    # Heaps' line of the real text: V(N) = V_real (N / N_real)^beta.  At ANCHOR x the real size the chain
    # emits ANCHOR x as many RARE slots; their types must bring the vocabulary onto that line.
    v_real, common_types = len(dictionary), len(common)
    target = v_real * ANCHOR**beta - common_types
    theta = _calibrate_theta(beta, ANCHOR * int(hapax.sum()), int(target))
    char_model, alphabet = _char_model(list(rare_words))
    return CorpusModel(
        words=words, tables=tuple(tables), unigram_cum=np.cumsum(uni), bits=bits, heaps_beta=beta,
        pyp_theta=theta, rare_words=rare_words, char_model=char_model, alphabet=alphabet,
    )  # fmt: skip


@numba.njit(cache=True)
def _draw(cum, lo, hi, r):
    """Index in [lo, hi) whose cumulative count segment holds ``r`` in (0, segment total]."""
    base = cum[lo - 1] if lo > 0 else 0.0
    return np.searchsorted(cum[lo:hi], base + r * (cum[hi - 1] - base), side="left") + lo


@numba.njit(cache=True)
def _sample(n_tokens, order, bits, keys_list, off_list, succ_list, cum_list, lam_list, uni_cum, state):
    """``n_tokens`` ids (sentences ended by EOS, cut at a sentence end past n_tokens); ``state`` = RNG seed."""
    np.random.seed(state)
    out = np.empty(n_tokens + MAX_SENTENCE + 1, dtype=np.int32)
    hist = np.zeros(order - 1, dtype=np.int64)  # hist[-1] is the newest token
    n = 0
    length = 0
    while True:
        w = -1
        for k in range(order - 1, 0, -1):
            key = np.uint64(0)
            for j in range(order - 1 - k, order - 1):
                key = (key << np.uint64(bits)) | np.uint64(hist[j])
            keys = keys_list[k - 1]
            i = np.searchsorted(keys, key)
            if i < len(keys) and keys[i] == key and np.random.random() < lam_list[k - 1][i]:
                off = off_list[k - 1]
                w = succ_list[k - 1][_draw(cum_list[k - 1], off[i], off[i + 1], 1.0 - np.random.random())]
                break
        if w < 0:
            w = np.searchsorted(uni_cum, (1.0 - np.random.random()) * uni_cum[-1], side="left")
        if w == BOS:  # never predicted; a guard for an empty unigram row
            continue
        length += 1
        if length >= MAX_SENTENCE:
            w = EOS
        out[n] = w
        n += 1
        if w == EOS:
            hist[:] = BOS
            length = 0
            if n >= n_tokens:
                return out[:n]
        else:
            hist[:-1] = hist[1:]
            hist[-1] = w


@numba.njit(cache=True)
def _fenwick_add(tree, i, delta):
    i += 1
    while i < len(tree):
        tree[i] += delta
        i += i & -i


@numba.njit(cache=True)
def _fenwick_find(tree, r):
    """The smallest index whose prefix sum of weights reaches ``r`` (binary lifting, O(log n))."""
    pos, step = 0, 1
    while step * 2 < len(tree):
        step *= 2
    while step:
        nxt = pos + step
        if nxt < len(tree) and tree[nxt] < r:
            pos = nxt
            r -= tree[nxt]
        step //= 2
    return pos  # 0-based index = pos (the 1-based tree slot is pos + 1)


@numba.njit(cache=True)
def _resolve_rare(ids, first_rare_id, tree, n_types, total, theta, d, state):
    """Replace each RARE by a Pitman-Yor draw over the rare types: a new type with probability
    (theta + d K) / (theta + n), else type k with probability (n_k - d) / (theta + n); ``tree`` is a Fenwick
    tree over the weights n_k - d (capacity = its length - 1).  Returns (types, draws) after the chunk."""
    np.random.seed(state)
    for t in range(len(ids)):
        if ids[t] != RARE:
            continue
        if total == 0 or np.random.random() * (theta + total) < theta + d * n_types:
            if n_types + 1 >= len(tree):
                return -1, total  # capacity exhausted: the caller grows the tree and retries the chunk
            k = n_types
            n_types += 1
            _fenwick_add(tree, k, 1.0 - d)
        else:
            k = _fenwick_find(tree, np.random.random() * (total - d * n_types))
            _fenwick_add(tree, k, 1.0)
        total += 1
        ids[t] = first_rare_id + k
    return n_types, total


@numba.njit(cache=True)
def _spell(n_words, keys, off, succ, cum, size, state):
    """``n_words`` strings from the character trigram model, as (codes, lengths); codes are alphabet ids + 2."""
    np.random.seed(state)
    codes = np.empty(n_words * 24, dtype=np.int32)
    lens = np.empty(n_words, dtype=np.int32)
    n = 0
    for w in range(n_words):
        a, b, length = 0, 0, 0
        while True:
            key = np.uint64(a * size + b)
            i = np.searchsorted(keys, key)
            c = succ[_draw(cum, off[i], off[i + 1], 1.0 - np.random.random())]
            if c == 1 or length == 24:
                if length == 0:
                    continue
                break
            codes[n] = c
            n += 1
            length += 1
            a, b = b, c
        lens[w] = length
    return codes[:n], lens


def _letters(i: int) -> str:
    out = ""
    while True:
        i, r = divmod(i, 26)
        out = chr(97 + r) + out
        if i == 0:
            return out
        i -= 1


def _mint(model: CorpusModel, count: int, taken: set[str], rng: np.random.Generator) -> list[str]:
    """``count`` new word forms spelt by the character model, none equal to a word already in use.

    A small character model may run out of unused spellings: after three rounds the remaining forms take a
    letter suffix (``-a``, ``-b``, ...), so minting always ends.
    """
    keys, off, succ, cum = model.char_model
    size = len(model.alphabet) + 2
    alphabet = np.array(list(model.alphabet))
    out: list[str] = []
    for attempt in range(1 << 30):
        need = count - len(out)
        if need == 0:
            return out
        codes, lens = _spell(need + need // 4 + 16, keys, off, succ, cum, size, int(rng.integers(1 << 31)))
        chars = alphabet[codes - 2]
        ends = np.cumsum(lens)
        for e, n in zip(ends, lens, strict=True):
            word = "".join(chars[e - n : e])
            suffix = len(taken)
            while attempt >= 3 and word in taken:
                word, suffix = f"{word}-{_letters(suffix)}", suffix + 1
            if word not in taken:
                taken.add(word)
                out.append(word)
                if len(out) == count:
                    return out
    return out


def write_generated(model: CorpusModel, tokens: int, path: Path, *, seed: int = 1, chunk: int = 4_000_000) -> dict:
    """Write about ``tokens`` words (sentences of the model, one per line) to ``path``; returns its statistics.

    Memory is bounded by one chunk plus the rare lexicon; the output depends only on (model, tokens, seed, chunk).
    """
    rng = np.random.default_rng(seed)
    rare_words = list(model.rare_words)
    rng.shuffle(rare_words)
    lexicon: list[str] = []  # spelling of rare type k
    taken = {str(w) for w in model.words} | set(rare_words)
    draws_per_token = (model.unigram_cum[RARE] - model.unigram_cum[RARE - 1]) / model.unigram_cum[-1]
    capacity = int(3 * pyp_expected_types(model.pyp_theta, model.heaps_beta, int(tokens * draws_per_token * 1.2))) + 10_000
    tree = np.zeros(capacity + 1, dtype=np.float64)
    n_types, draws, written, sentences = 0, 0, 0, 0
    first_rare = len(model.words)
    common = pa.array(model.words.tolist(), pa.string())
    args = (
        model.bits, numba.typed.List([t.keys for t in model.tables]), numba.typed.List([t.off for t in model.tables]),
        numba.typed.List([t.succ for t in model.tables]), numba.typed.List([t.cum for t in model.tables]),
        numba.typed.List([t.lam for t in model.tables]), model.unigram_cum,
    )  # fmt: skip
    order = len(model.tables) + 1
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        while written < tokens:
            ids = _sample(min(chunk, tokens - written), order, *args, int(rng.integers(1 << 31)))
            n_types, draws = _resolve_rare(
                ids, first_rare, tree, n_types, draws, model.pyp_theta, model.heaps_beta, int(rng.integers(1 << 31))
            )
            if n_types < 0:
                raise RuntimeError(f"rare lexicon capacity {capacity} exhausted; raise the estimate")
            while len(lexicon) < n_types:
                from_real = rare_words[len(lexicon) : n_types]
                lexicon += from_real
                lexicon += _mint(model, n_types - len(lexicon), taken, rng)
            vocab = pa.concat_arrays([common, pa.array(lexicon, pa.string())])
            eos = np.flatnonzero(ids == EOS)
            words = ids[ids != EOS]
            offsets = np.concatenate([[0], eos - np.arange(len(eos))]).astype(np.int32)
            lines = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), vocab.take(pa.array(words))), " ")
            out.write("\n".join(lines.to_pylist()))
            out.write("\n")
            written += len(words)
            sentences += len(eos)
    tmp.replace(path)
    return {"tokens": written, "sentences": sentences, "rare_types": n_types, "vocabulary": len(model.words) - 3 + n_types}


def distinct_ngrams(text_lines: list[list[str]], orders: tuple[int, ...], points: list[int]) -> dict[int, list[int]]:
    """Distinct n-grams (within sentences, no padding) in the first ``p`` tokens, for each p of ``points``."""
    flat = pa.array([w for ln in text_lines for w in ln], pa.string())
    ids = pc.dictionary_encode(flat).indices.to_numpy().astype(np.uint64)
    sentence = np.repeat(np.arange(len(text_lines)), [len(ln) for ln in text_lines])
    out: dict[int, list[int]] = {}
    for n in orders:
        valid = np.zeros(len(ids), dtype=bool)  # n-gram ending at position i stays inside one sentence
        valid[n - 1 :] = sentence[n - 1 :] == sentence[: len(ids) - n + 1]
        h = np.zeros(len(ids), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for j in range(n):  # a 64-bit polynomial hash of the n ids ending at i
                shifted = np.zeros(len(ids), dtype=np.uint64)
                shifted[j:] = ids[: len(ids) - j]
                h = h * np.uint64(0x9E3779B97F4A7C15) + shifted + np.uint64(1)
        out[n] = [int(len(np.unique(h[:p][valid[:p]]))) for p in points]
    return out
