"""SGNS core: sampling distributions, the pair generator, the gradient of the sparse step, and learning."""

from __future__ import annotations

import copy
import math
from collections import Counter

import numpy as np
import pytest
import torch

from lmpipe.embeddings.sampling import HostGenerator, NoiseSampler, keep_probabilities, skipgram_pairs
from lmpipe.embeddings.sgns import SGNS, SGNSConfig
from lmpipe.embeddings.sgns_torch import sgns_step
from lmpipe.embeddings.sync import merge_deltas, merge_replicas

torch.set_num_threads(1)  # CPU index_add_ is then deterministic, and tests do not fight over 2 cores


def test_keep_probabilities_formula():
    """word2vec.c: keep = (sqrt(f/(sT)) + 1) * sT/f, capped at 1; unseen ids and sample=0 keep everything."""
    counts = np.array([0, 1, 10, 1_000, 50_000, 200_000])
    total, s = counts.sum(), 1e-3
    keep = keep_probabilities(counts, s)
    for f, p in zip(counts, keep, strict=True):
        expected = 1.0 if f == 0 else min(1.0, (math.sqrt(f / (s * total)) + 1) * (s * total) / f)
        assert p == pytest.approx(expected, rel=1e-12)
    assert keep[-1] < keep[-2] < 1.0 == keep[1]
    assert np.all(keep_probabilities(counts, 0.0) == 1.0)


def test_subsampling_rate_in_pair_generator():
    """Tokens survive at keep_prob: a token kept with p=0.25 appears in ~25% of its possible pairs."""
    rng = np.random.default_rng(0)
    keep = np.array([1.0, 0.25])
    sentence = np.array([0, 1] * 20_000, dtype=np.uint32)  # each 1 sits between two 0s
    centre, context = skipgram_pairs([sentence], 1, keep, rng)
    kept_ones = np.sum((centre == 1) & (context == 0)) / 2  # window 1: both neighbours are always 0s
    n = 20_000
    assert abs(kept_ones - 0.25 * n) < 5 * math.sqrt(n * 0.25 * 0.75)


def _chi2(observed: np.ndarray, probs: np.ndarray) -> tuple[float, int]:
    n = observed.sum()
    support = probs > 0
    expected = probs[support] * n
    return float(((observed[support] - expected) ** 2 / expected).sum()), int(support.sum()) - 1


def test_noise_distribution_is_unigram_075():
    """Alias draws match counts**0.75 by a chi-square bound of mean + 6 sd (p ~ 1e-6 to fail by chance);
    the same bound rejects counts**1, so the test has the power to see a wrong exponent."""
    counts = np.array([0] + [int(5_000 / r) for r in range(1, 60)] + [0, 3])
    sampler = NoiseSampler(counts, 0.75)
    draws = sampler.draw((400_000,), torch.Generator().manual_seed(0)).numpy()
    observed = np.bincount(draws, minlength=len(counts))
    assert observed[0] == 0 and observed[60] == 0  # zero counts are never noise
    p075 = counts**0.75 / (counts**0.75).sum()
    chi2, dof = _chi2(observed, p075)
    bound = dof + 6 * math.sqrt(2 * dof)
    assert chi2 < bound
    chi2_wrong, _ = _chi2(observed, counts / counts.sum())
    assert chi2_wrong > 10 * bound


def _brute_force_pairs(sentences, window, keep_prob, seed):
    """Replays skipgram_pairs' random draws and enumerates windows with plain loops."""
    rng = np.random.default_rng(seed)
    flat = [int(t) for s in sentences for t in s]
    sent_of = [i for i, s in enumerate(sentences) for _ in s]
    kept = rng.random(len(flat)) < keep_prob[np.array(flat, dtype=np.int64)]
    toks = [t for t, k in zip(flat, kept, strict=True) if k]
    segs = [s for s, k in zip(sent_of, kept, strict=True) if k]
    eff = window - rng.integers(0, window, size=len(toks))
    pairs = Counter()
    for i in range(len(toks)):
        for j in range(i - eff[i], i + eff[i] + 1):
            if j != i and 0 <= j < len(toks) and segs[j] == segs[i]:
                pairs[(toks[i], toks[j])] += 1
    return pairs


@pytest.mark.parametrize("seed", [1, 3, 2**40 + 7, 8_123_456_789_012_345_678])  # the last: 63 bits, as rank_seed
def test_host_generator_draws_what_torchs_cpu_generator_draws(seed):
    """HostGenerator (numpy, no torch) == torch.Generator().manual_seed(seed): rand, randint, skip, and the
    noise draws through the alias table, value for value, big seeds included (torch keeps their low 32 bits)."""
    host, ref = HostGenerator(seed), torch.Generator().manual_seed(seed)
    assert np.array_equal(host.rand(1000), torch.rand(1000, generator=ref).numpy())
    assert np.array_equal(host.randint(63_845, 5000), torch.randint(63_845, (5000,), generator=ref).numpy())
    out = np.empty((70, 300), np.float32)  # more than one chunk
    host.fill_uniform(out)
    assert np.array_equal(out, torch.rand(70, 300, generator=ref).numpy())
    host.skip(12_345)
    torch.rand(12_345, generator=ref)
    counts = np.r_[0, 0, 0, np.arange(1, 2000) ** 2, np.zeros(500)]  # trailing ids of count 0: never drawn
    sampler = NoiseSampler(counts)
    ours = sampler.draw((40_000, 5), host)  # ~3 chunks of slots, then of coins
    assert np.array_equal(ours, sampler.draw((40_000, 5), ref).numpy())
    assert ours.dtype == np.int32 and counts[ours].min() > 0


def test_matrices_hold_the_rows_up_to_the_last_trained_id_with_the_full_vocabularys_init():
    """Rows 0..rows-1 (the ids up to the last trainable one) are what a row-per-id init gives them, and the
    stream after the init is where it was: the vectors do not depend on the ids cut by min_count."""
    vocab, dim, kept = 500, 7, 120
    counts = np.r_[[0, 0, 0], np.arange(vocab - 3, 0, -1)].astype(np.uint64)  # descending, as the vocabulary
    drop = (0, *range(kept, vocab))
    for backend in ("numba", "torch"):
        model = SGNS(counts, SGNSConfig(dim=dim, drop_ids=drop, backend=backend, seed=4))
        ref = torch.Generator().manual_seed(4)
        full = (torch.rand(vocab, dim, generator=ref) - 0.5) / dim
        w_in, w_out = model.host_matrices()
        assert model.rows == kept and w_in.shape == w_out.shape == (kept, dim)
        assert np.array_equal(w_in, full[:kept].numpy()) and not w_out.any()
        after = model._stream.generator
        nxt = after.rand(10) if backend == "numba" else torch.rand(10, generator=after).numpy()
        assert np.array_equal(nxt, torch.rand(10, generator=ref).numpy())
    assert model.to_vectors([f"w{i}" for i in range(vocab)]).matrix.shape == (kept, dim)


@pytest.mark.parametrize("window", [1, 3, 5])
def test_pair_generator_matches_brute_force(window):
    """Same seed -> the vectorised generator yields exactly the brute-force multiset of (centre, context)."""
    rng = np.random.default_rng(window)
    sentences = [rng.integers(0, 30, size=n).astype(np.uint32) for n in (0, 1, 2, 7, 40, 3, 0, 25, 6)]
    keep_prob = rng.uniform(0.3, 1.0, size=30)
    centre, context = skipgram_pairs(sentences, window, keep_prob, np.random.default_rng(42))
    assert centre.dtype == context.dtype == np.int64
    assert Counter(zip(centre.tolist(), context.tolist(), strict=True)) == _brute_force_pairs(
        sentences, window, keep_prob, 42
    )


@pytest.mark.parametrize("window", [1, 3, 5])
def test_numba_window_pairs_are_word2vec_order(window):
    """The numba backend's pairs: the brute-force pairs in word2vec.c's sequence (centre by centre, each
    centre's contexts left to right), from the same draws as skipgram_pairs."""
    from lmpipe.embeddings.sampling import windowed_tokens
    from lmpipe.embeddings.sgns_kernel import window_pairs

    rng = np.random.default_rng(window)
    sentences = [rng.integers(0, 30, size=n).astype(np.uint32) for n in (0, 1, 2, 7, 40, 3, 0, 25, 6)]
    keep_prob = rng.uniform(0.3, 1.0, size=30)
    ids, seg, eff = windowed_tokens(sentences, window, keep_prob, np.random.default_rng(42))
    centre, context = window_pairs(ids, seg, eff)
    expected = [
        (int(ids[i]), int(ids[j]))
        for i in range(len(ids))
        for j in range(i - eff[i], i + eff[i] + 1)
        if j != i and 0 <= j < len(ids) and seg[j] == seg[i]
    ]
    assert list(zip(centre.tolist(), context.tolist(), strict=True)) == expected
    assert Counter(expected) == _brute_force_pairs(sentences, window, keep_prob, 42)


def test_dynamic_window_distribution():
    """Effective windows are uniform in 1..window: pairs at distance o occur with p = (w - o + 1) / w."""
    n, window = 60_000, 5
    sentence = np.arange(n, dtype=np.uint32)  # id = position, so |centre - context| is the distance
    centre, context = skipgram_pairs([sentence], window, np.ones(n), np.random.default_rng(0))
    dist = np.abs(centre - context)
    for o in range(1, window + 1):
        p = (window - o + 1) / window
        trials = 2 * (n - o)  # forward and backward pairs at distance o
        assert abs(np.sum(dist == o) - p * trials) < 5 * math.sqrt(trials * p * (1 - p) + 1)
    assert dist.max() == window


def _reference_loss(w_in, w_out, centre, context, noise):
    """Plain per-pair SGNS loss (noise equal to the centre skipped), shared noise by row grouping."""
    per = -(-len(context) // len(noise))
    total = 0.0
    for p in range(len(context)):
        u = w_in[context[p]]
        total += float(torch.nn.functional.softplus(-(u @ w_out[centre[p]])))
        for k in noise[p // per]:
            if k != centre[p]:
                total += float(torch.nn.functional.softplus(u @ w_out[k]))
    return total


@pytest.mark.parametrize("groups", [7, 3])  # 7 = one draw per pair, 3 = shared by 3, 3 and 1 pairs
def test_sparse_step_is_minus_lr_times_finite_difference_gradient(groups):
    """The row-wise update equals -lr * dL/dW by central differences (float64), repeated rows included."""
    gen = torch.Generator().manual_seed(0)
    w_in = torch.randn(9, 4, generator=gen, dtype=torch.float64)
    w_out = torch.randn(9, 4, generator=gen, dtype=torch.float64)
    centre = torch.tensor([1, 2, 2, 5, 0, 8, 1])
    context = torch.tensor([3, 3, 4, 6, 7, 3, 2])
    noise = torch.randint(0, 9, (groups, 3), generator=gen)
    noise[0, 1] = 1  # equal to pair 0's centre: must be skipped
    args = (centre.tolist(), context.tolist(), noise.tolist())
    eps = 1e-6
    grads = []
    for w in (w_in, w_out):
        g = torch.zeros_like(w)
        for idx in np.ndindex(*w.shape):
            orig = w[idx].item()
            w[idx] = orig + eps
            hi = _reference_loss(w_in, w_out, *args)
            w[idx] = orig - eps
            lo = _reference_loss(w_in, w_out, *args)
            w[idx] = orig
            g[idx] = (hi - lo) / (2 * eps)
        grads.append(g)
    lr = 0.3
    new_in, new_out = w_in.clone(), w_out.clone()
    loss = sgns_step(new_in, new_out, centre, context, noise, lr)
    assert float(loss) == pytest.approx(_reference_loss(w_in, w_out, *args), rel=1e-12)
    torch.testing.assert_close(new_in - w_in, -lr * grads[0], atol=1e-7, rtol=1e-6)
    torch.testing.assert_close(new_out - w_out, -lr * grads[1], atol=1e-7, rtol=1e-6)


def _topic_corpus(topics=8, words_per_topic=8, sentences=5_000, length=10, seed=0):
    """Sentences drawn from one topic each: words of a topic co-occur, words of different topics never."""
    rng = np.random.default_rng(seed)
    first = 3  # ids 0..2 are <unk>, <s>, </s>
    sents = [
        (first + rng.integers(t * words_per_topic, (t + 1) * words_per_topic, size=length)).astype(np.uint32)
        for t in rng.integers(0, topics, size=sentences)
    ]
    counts = np.bincount(np.concatenate(sents), minlength=first + topics * words_per_topic).astype(np.uint64)
    tokens = ["<unk>", "<s>", "</s>"] + [
        f"t{i // words_per_topic}_{i}" for i in range(topics * words_per_topic)
    ]
    return sents, counts, tokens


def test_init_and_schedule():
    """word2vec init (input U(-0.5/d, 0.5/d), output 0) and linear decay alpha -> alpha * 1e-4."""
    sents, counts, _ = _topic_corpus(sentences=50)
    model = SGNS(counts, SGNSConfig(dim=20, epochs=2))
    assert np.abs(model.w_in).max() <= 0.5 / 20 and np.abs(model.w_in).max() > 0.4 / 20
    assert not model.w_out.any()
    words = model.words_per_epoch
    assert words == sum(len(s) for s in sents)
    assert model.learning_rate(0) == 0.025
    assert model.learning_rate(words) == pytest.approx((0.025 + 0.025e-4) / 2)
    assert model.learning_rate(2 * words) == pytest.approx(0.025e-4)
    with pytest.raises(ValueError, match="window"):
        SGNSConfig(window=0)


def test_loss_decreases():
    # 300 sentences: still learning at epoch 4 (with 1,500, word2vec's pair order reaches the corpus's
    # loss floor by epoch 2, where epoch-to-epoch differences are noise)
    sents, counts, _ = _topic_corpus(sentences=300)
    model = SGNS(counts, SGNSConfig(dim=16, epochs=4, negative=5, batch_pairs=1024, sample=0))
    losses = [model.train_epoch(sents).loss for _ in range(4)]
    assert losses[0] > losses[1] > losses[2] > losses[3]
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.parametrize("shared, backend", [(1, "numba"), (1, "torch"), (16, "torch")])
def test_planted_topics_are_nearest_neighbours(shared, backend):
    """On the topic corpus every word's 5 nearest neighbours are in its own topic (64 words, 8 topics);
    random vectors would pass this for a word with probability ~1e-5."""
    sents, counts, tokens = _topic_corpus()
    config = SGNSConfig(
        dim=16, epochs=3, window=3, batch_pairs=1024, shared_negatives=shared, seed=3, backend=backend
    )
    model = SGNS(counts, config)
    for _ in range(config.epochs):
        model.train_epoch(sents)
    vecs = model.to_vectors(tokens)
    words = tokens[3:]
    hits = sum(all(n.split("_")[0] == w.split("_")[0] for n, _ in vecs.most_similar(w, k=5)) for w in words)
    assert hits >= len(words) - 1, f"{hits}/{len(words)} words with all 5 neighbours in-topic"


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_hogwild_threads_learn_and_count_every_word(backend):
    """threads=2 (lock-free workers on shared matrices) reads every word once and still finds the topics."""
    sents, counts, tokens = _topic_corpus()
    config = SGNSConfig(
        dim=16, epochs=3, window=3, batch_pairs=1024, block_words=5_000, seed=3, backend=backend
    )
    model = SGNS(counts, config)
    intra_op = torch.get_num_threads()
    for _ in range(config.epochs):
        stats = model.train_epoch(sents, threads=2)
        assert stats.words == sum(len(s) for s in sents)
    assert torch.get_num_threads() == intra_op  # restored after the threaded epoch
    assert model.learning_rate() == pytest.approx(config.final_alpha)
    vecs = model.to_vectors(tokens)
    hits = sum(all(n[:3] == w[:3] for n, _ in vecs.most_similar(w, k=5)) for w in tokens[3:])
    assert hits >= len(tokens) - 4


def test_prefetched_epoch_equals_the_block_by_block_loop():
    """The numba epoch draws block i+1 on a helper thread while the kernel trains block i; with one thread the
    vectors are those of drawing and training block by block in one thread, bit for bit, and the schedule
    and word counts are the same."""
    from lmpipe.embeddings.sgns import _blocks
    from lmpipe.embeddings.sgns_kernel import set_threads

    sents, counts, _ = _topic_corpus(sentences=2_000)
    config = SGNSConfig(dim=12, epochs=2, window=3, block_words=1_500, seed=5)
    a, b = SGNS(counts, config), SGNS(counts, config)
    b._slices = set_threads(1)
    for _ in range(config.epochs):
        stats = a.train_epoch(sents, threads=1)
        pairs = sum(b.train_block(block)[0] for block in _blocks(sents, config.block_words))
        assert stats.pairs == pairs and stats.words == sum(len(s) for s in sents)
    assert np.array_equal(a.w_in, b.w_in) and np.array_equal(a.w_out, b.w_out)
    assert a.words_done == b.words_done and a.learning_rate() == b.learning_rate()


def test_an_error_while_reading_the_next_block_reaches_the_caller():
    """The helper thread reads the sentences: a reader's error is raised by train_epoch, not lost."""
    sents, counts, _ = _topic_corpus(sentences=500)

    def failing():
        yield from sents[:200]
        raise OSError("shard 3 unreadable")

    model = SGNS(counts, SGNSConfig(dim=8, epochs=1, block_words=300))
    with pytest.raises(OSError, match="shard 3 unreadable"):
        model.train_epoch(failing(), threads=2)


def test_state_dict_resume_is_exact():
    """Saving after epoch 1 and resuming reproduces epoch 2 bit for bit (rng states included)."""
    sents, counts, _ = _topic_corpus(sentences=300)
    config = SGNSConfig(dim=8, epochs=2, batch_pairs=512)
    a = SGNS(counts, config)
    a.train_epoch(sents)
    state = copy.deepcopy(a.state_dict())  # the state holds the live matrices: copy before training on
    a.train_epoch(sents)
    b = SGNS(counts, config)
    b.load_state_dict(state)
    b.train_epoch(sents)
    assert np.array_equal(a.w_in, b.w_in) and np.array_equal(a.w_out, b.w_out)


def test_drop_ids_never_train():
    """<unk> (dropped by default) never enters a window: its input vector keeps its initial value."""
    sents, counts, _ = _topic_corpus(sentences=200)
    sents = [np.r_[s, np.uint32(0)] for s in sents]
    counts[0] = len(sents)
    model = SGNS(counts, SGNSConfig(dim=8, epochs=1))
    before = model.w_in[0].copy()
    model.train_epoch(sents)
    assert np.array_equal(model.w_in[0], before) and not model.w_out[0].any()


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_sync_schemes(lib):
    """sum / mean / touched merges on hand-made replicas, the same in numpy and torch."""
    base = np.zeros((3, 2))
    r1 = np.array([[1.0, 1.0], [2.0, 0.0], [0.0, 0.0]])
    r2 = np.array([[3.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    if lib == "torch":
        base, r1, r2 = map(torch.from_numpy, (base, r1, r2))
    as_np = np.asarray
    assert np.array_equal(as_np(merge_replicas(base, [r1, r2], scheme="sum")), [[4, 2], [2, 0], [0, 0]])
    assert np.array_equal(as_np(merge_replicas(base, [r1, r2], scheme="mean")), [[2, 1], [1, 0], [0, 0]])
    assert np.array_equal(as_np(merge_replicas(base, [r1, r2], scheme="touched")), [[2, 1], [2, 0], [0, 0]])
    with pytest.raises(ValueError, match="options are"):
        merge_deltas(base, base, base[:, 0], world_size=2, scheme="avg")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_step_matches_cpu():
    gen = torch.Generator().manual_seed(0)
    w_in, w_out = torch.randn(50, 8, generator=gen), torch.randn(50, 8, generator=gen)
    centre, context = torch.randint(0, 50, (64,), generator=gen), torch.randint(0, 50, (64,), generator=gen)
    noise = torch.randint(0, 50, (64, 5), generator=gen)
    cpu = (w_in.clone(), w_out.clone())
    gpu = (w_in.cuda(), w_out.cuda())
    sgns_step(*cpu, centre, context, noise, 0.1)
    sgns_step(*gpu, centre.cuda(), context.cuda(), noise.cuda(), 0.1)
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gpu[1].cpu(), cpu[1], atol=1e-5, rtol=1e-5)


def test_sentences_from_arrow_zero_copy_views():
    """TOKENS `ids` list<uint32> rows become uint32 arrays, sliced batches and chunked tables included."""
    pa = pytest.importorskip("pyarrow")
    from lmpipe.embeddings.sgns import sentences_from_arrow

    rows = [[3, 4, 5], [], [6], [7, 8]]
    table = pa.table({"ids": pa.array(rows, type=pa.list_(pa.uint32()))})
    chunked = pa.concat_tables([table.slice(1, 2), table.slice(3)])
    assert [s.tolist() for s in sentences_from_arrow(table)] == rows
    assert [s.tolist() for s in sentences_from_arrow(chunked)] == rows[1:]
    assert [s.tolist() for s in sentences_from_arrow(table.to_batches()[0].slice(2))] == rows[2:]
    assert all(s.dtype == np.uint32 for s in sentences_from_arrow(table))


@pytest.mark.slow
def test_compiled_step_matches_eager():
    """compile=True runs the same math: the compiled step equals the eager one on the same batch."""
    gen = torch.Generator().manual_seed(0)
    w_in, w_out = torch.randn(300, 16, generator=gen), torch.randn(300, 16, generator=gen) * 0.1
    centre, context = (
        torch.randint(0, 300, (256,), generator=gen),
        torch.randint(0, 300, (256,), generator=gen),
    )
    for noise in (
        torch.randint(0, 300, (256, 5), generator=gen),
        torch.randint(0, 300, (16, 5), generator=gen),
    ):
        eager, compiled = (w_in.clone(), w_out.clone()), (w_in.clone(), w_out.clone())
        lr = torch.tensor(0.05)
        loss_e = sgns_step(*eager, centre, context, noise, lr)
        loss_c = torch.compile(sgns_step, dynamic=False)(*compiled, centre, context, noise, lr)
        torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(compiled[0], eager[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(compiled[1], eager[1], rtol=1e-5, atol=1e-6)


def test_numba_kernel_equals_word2vec_pair_by_pair():
    """The compiled loop equals ``sgns_step`` applied to one pair at a time (word2vec's order: each pair
    sees the previous pairs' updates), with the learning rate ramped linearly over the pairs."""
    from lmpipe.embeddings.sgns_kernel import set_threads, train_pairs

    rng = np.random.default_rng(0)
    vocab, dim, n, k = 30, 8, 400, 3
    w_in = rng.uniform(-0.5, 0.5, (vocab, dim)).astype(np.float32)
    w_out = rng.uniform(-0.5, 0.5, (vocab, dim)).astype(np.float32)
    centre, context = rng.integers(0, vocab, n), rng.integers(0, vocab, n)
    # distinct noise words within a pair: word2vec applies a repeated noise word's two updates one after the
    # other, the batched step sums them from the same entry values (both are fine; they differ in 2nd order)
    noise = np.stack([rng.choice(vocab, k, replace=False) for _ in range(n)])
    noise[::7, 0] = centre[::7]  # noise equal to the centre is skipped
    ref_in, ref_out = torch.from_numpy(w_in.copy()), torch.from_numpy(w_out.copy())
    ref_loss = 0.0
    for i in range(n):
        lr = 0.05 + (0.01 - 0.05) * i / n
        ref_loss += float(
            sgns_step(
                ref_in,
                ref_out,
                torch.tensor([centre[i]]),
                torch.tensor([context[i]]),
                torch.from_numpy(noise[i : i + 1]),
                lr,
            )
        )
    set_threads(1)
    loss = train_pairs(w_in, w_out, centre, context, noise, 0.05, 0.01, 1, loss_every=1)
    np.testing.assert_allclose(w_in, ref_in.numpy(), rtol=0, atol=2e-5)
    np.testing.assert_allclose(w_out, ref_out.numpy(), rtol=0, atol=2e-5)
    assert loss == pytest.approx(ref_loss, rel=1e-4)


def test_the_kernels_sampled_loss_estimates_the_exact_one_and_changes_no_update():
    """The loss summed over every 16th pair, times 16, is within 3% of the exact sum; the matrices are the same
    bytes whatever ``loss_every`` is (the loss only reports)."""
    from lmpipe.embeddings.sgns_kernel import set_threads, train_pairs

    rng = np.random.default_rng(3)
    vocab, dim, n, k = 500, 16, 20_000, 5
    start_in = rng.uniform(-0.5, 0.5, (vocab, dim)).astype(np.float32) / dim
    centre, context = rng.integers(0, vocab, n), rng.integers(0, vocab, n)
    noise = rng.integers(0, vocab, (n, k))
    set_threads(1)
    out = {}
    for every in (1, 16):
        w_in, w_out = start_in.copy(), np.zeros((vocab, dim), np.float32)
        out[every] = train_pairs(w_in, w_out, centre, context, noise, 0.05, 0.01, 1, loss_every=every), w_in, w_out
    assert out[16][0] == pytest.approx(out[1][0], rel=0.03) and out[16][0] != out[1][0]
    assert out[16][1].tobytes() == out[1][1].tobytes() and out[16][2].tobytes() == out[1][2].tobytes()


def test_backend_choice():
    counts = np.array([0, 0, 0, 5, 6, 7, 8], dtype=np.uint64)
    assert SGNS(counts, SGNSConfig(dim=4)).backend == "numba"  # CPU, word2vec's settings
    assert SGNS(counts, SGNSConfig(dim=4, shared_negatives=4)).backend == "torch"
    with pytest.raises(ValueError, match="neither shared_negatives > 1 nor compile"):
        SGNSConfig(backend="numba", shared_negatives=4)
    with pytest.raises(ValueError, match="backend must be"):
        SGNSConfig(backend="cython")
