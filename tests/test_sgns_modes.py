"""word2vec's other modes (skip-gram HS, CBOW NS/HS): the Huffman tree against word2vec.c's construction and
Huffman's optimum, each update against finite differences of its loss, the numba kernels against the batched
torch step, the per-model defaults, and a stage run per mode on the tiny spec whose vectors gensim loads."""

from __future__ import annotations

import heapq
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lmpipe.embeddings.huffman import huffman_tree
from lmpipe.embeddings.sgns import SGNS, SGNSConfig
from lmpipe.embeddings.sgns_kernel import train_cbow, train_pairs_hs
from lmpipe.embeddings.sgns_modes import cbow_windows
from lmpipe.embeddings.sgns_torch import w2v_step
from lmpipe.embeddings.vectors import Vectors
from lmpipe.pipelines.run import run_pipeline
from lmpipe.pipelines.spec import SgnsSpec, SpecError, load_spec

from .conftest import SPECS

MODES = [("skipgram", "hierarchical"), ("cbow", "negative"), ("cbow", "hierarchical")]


# ------------------------------------------------------------------------------------------ Huffman
def word2vec_c_tree(cn: list[int]) -> tuple[list[list[int]], list[list[int]]]:
    """A line-by-line transcription of word2vec.c's CreateBinaryTree (counts sorted descending); returns
    each word's ``code`` and ``point`` arrays as word2vec.c leaves them (``point`` trimmed to codelen)."""
    vocab_size = len(cn)
    count = [0] * (vocab_size * 2 + 1)
    binary = [0] * (vocab_size * 2 + 1)
    parent_node = [0] * (vocab_size * 2 + 1)
    for a in range(vocab_size):
        count[a] = cn[a]
    for a in range(vocab_size, vocab_size * 2):
        count[a] = 10**15
    pos1, pos2 = vocab_size - 1, vocab_size
    for a in range(vocab_size - 1):
        if pos1 >= 0:
            if count[pos1] < count[pos2]:
                min1i, pos1 = pos1, pos1 - 1
            else:
                min1i, pos2 = pos2, pos2 + 1
        else:
            min1i, pos2 = pos2, pos2 + 1
        if pos1 >= 0:
            if count[pos1] < count[pos2]:
                min2i, pos1 = pos1, pos1 - 1
            else:
                min2i, pos2 = pos2, pos2 + 1
        else:
            min2i, pos2 = pos2, pos2 + 1
        count[vocab_size + a] = count[min1i] + count[min2i]
        parent_node[min1i] = vocab_size + a
        parent_node[min2i] = vocab_size + a
        binary[min2i] = 1
    codes, points = [], []
    for a in range(vocab_size):
        b, i, code, point = a, 0, [0] * 64, [0] * 64
        while True:
            code[i] = binary[b]
            point[i] = b
            i += 1
            b = parent_node[b]
            if b == vocab_size * 2 - 2:
                break
        vcode, vpoint = [0] * i, [0] * (i + 1)
        vpoint[0] = vocab_size - 2
        for b in range(i):
            vcode[i - b - 1] = code[b]
            vpoint[i - b] = point[b] - vocab_size
        codes.append(vcode)
        points.append(vpoint[:i])
    return codes, points


def huffman_cost(counts: np.ndarray) -> int:
    """sum count * depth of an optimal prefix code: the sum of every merge (heapq Huffman)."""
    heap = [int(c) for c in counts]
    heapq.heapify(heap)
    cost = 0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        cost += merged
        heapq.heappush(heap, merged)
    return cost


@pytest.mark.parametrize("seed", range(6))
def test_huffman_codes_equal_word2vec_c_construction(seed):
    """Codes and points equal the transcription of word2vec.c on random descending counts (ties included)."""
    rng = np.random.default_rng(seed)
    counts = np.sort(rng.zipf(1.5, size=int(rng.integers(2, 300))) % 1000 + 1)[::-1]
    tree = huffman_tree(counts)
    codes, points = word2vec_c_tree(counts.tolist())
    assert tree.nodes == len(counts) - 1
    for i in range(len(counts)):
        n = tree.lengths[i]
        assert tree.codes[i, :n].tolist() == codes[i] and tree.points[i, :n].tolist() == points[i]


@pytest.mark.parametrize("seed", range(4))
def test_huffman_tree_is_optimal_and_prefix_free_on_any_id_order(seed):
    """Unsorted ids with zero-count ids: sum count * length is Huffman's optimum, zero counts get no path,
    every path starts at the root and the codes are prefix-free."""
    rng = np.random.default_rng(100 + seed)
    counts = rng.integers(0, 500, size=200)
    counts[rng.random(200) < 0.2] = 0
    tree = huffman_tree(counts)
    live = counts > 0
    assert (tree.lengths[~live] == 0).all() and (tree.lengths[live] > 0).all()
    assert int((counts * tree.lengths).sum()) == huffman_cost(counts[live])
    words = ["".join(map(str, tree.codes[i, : tree.lengths[i]])) for i in np.flatnonzero(live)]
    assert len(set(words)) == len(words)
    assert not any(a != b and b.startswith(a) for a in words for b in words)
    assert (tree.points[live, 0] == tree.nodes - 1).all()  # word2vec.c: point[0] = vocab_size - 2
    assert tree.points[live].max() < tree.nodes


# ------------------------------------------------------------------------------------------ gradients
def _loss64(h: np.ndarray, rows: np.ndarray, labels: np.ndarray) -> float:
    """Σ_t -log σ(±h·v_t) in float64: + for label 1, - for label 0."""
    f = rows @ h
    margin = np.where(labels > 0, f, -f)
    return float(np.logaddexp(0.0, -margin).sum())


def _numeric_grad(fn, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[i] = eps
        g[i] = (fn(x + d) - fn(x - d)) / (2 * eps)
    return g


def _matrices(vocab: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 0.5, (vocab, dim)).astype(np.float32), rng.normal(0, 0.5, (vocab, dim)).astype(np.float32))


def _hs_tree(vocab: int):
    return huffman_tree(np.arange(vocab, 0, -1) * 3)  # all ids live, paths of several lengths


def test_skipgram_hs_kernel_step_is_minus_lr_times_the_loss_gradient():
    """One pair: Δ w_in[context] and Δ w_out[path nodes] equal -lr x finite differences of the path loss."""
    vocab, dim, lr, centre, context = 12, 6, 0.1, 7, 2
    w_in, w_out = _matrices(vocab, dim, 0)
    tree = _hs_tree(vocab)
    n = tree.lengths[centre]
    nodes, labels = tree.points[centre, :n], 1.0 - tree.codes[centre, :n]
    u0, v0 = w_in[context].astype(np.float64), w_out[nodes].astype(np.float64)
    a, b = w_in.copy(), w_out.copy()
    loss = train_pairs_hs(
        a, b, np.array([centre]), np.array([context]), tree.codes, tree.points, tree.lengths, lr, lr, 1, loss_every=1
    )
    assert loss == pytest.approx(_loss64(u0, v0, labels), rel=1e-5)
    grad_u = _numeric_grad(lambda u: _loss64(u, v0, labels), u0)
    grad_v = _numeric_grad(lambda v: _loss64(u0, v, labels), v0)
    np.testing.assert_allclose(a[context] - w_in[context], -lr * grad_u, atol=2e-6)
    np.testing.assert_allclose(b[nodes] - w_out[nodes], -lr * grad_v, atol=2e-6)
    untouched = np.setdiff1d(np.arange(vocab), nodes)
    np.testing.assert_array_equal(b[untouched], w_out[untouched])


@pytest.mark.parametrize("loss_kind", ["hierarchical", "negative"])
def test_cbow_kernel_step_is_minus_lr_times_the_gradient_wrt_the_window_mean(loss_kind):
    """One centre with 4 context words: every context row moves by -lr dL/dh (h = their mean; word2vec.c adds
    the whole neu1e to each), the output rows by -lr dL/dv; with NS the noise word is the one other output
    row that moved (negative=1)."""
    vocab, dim, lr = 12, 5, 0.1
    ids, seg, eff = np.array([3, 5, 1, 8, 4]), np.zeros(5, np.int64), np.array([0, 0, 2, 0, 0])
    tree = _hs_tree(vocab)
    counts = np.arange(vocab, 0, -1).astype(float)
    from lmpipe.embeddings.sampling import NoiseSampler

    noise = NoiseSampler(counts)
    accept, alias = noise.accept, noise.alias
    centre, context = 1, [3, 5, 8, 4]
    for seed in range(50):  # a seed whose noise word is not the centre itself
        w_in, w_out = _matrices(vocab, dim, seed)
        a, b = w_in.copy(), w_out.copy()
        negative = 1 if loss_kind == "negative" else 0
        loss, trained = train_cbow(
            a, b, ids, seg, eff, tree.codes, tree.points, tree.lengths, accept, alias, negative, seed, lr, lr, 1,
            loss_every=1,
        )
        moved = np.flatnonzero((b != w_out).any(1))
        if loss_kind == "negative" and len(moved) != 2:
            continue
        break
    assert trained == 1  # the other tokens have eff 0: no context
    if loss_kind == "hierarchical":
        n = tree.lengths[centre]
        targets, labels = tree.points[centre, :n], 1.0 - tree.codes[centre, :n]
    else:
        targets, labels = np.array([centre, [t for t in moved if t != centre][0]]), np.array([1.0, 0.0])
    assert sorted(moved.tolist()) == sorted(targets.tolist())
    h0 = w_in[context].astype(np.float64).mean(0)
    v0 = w_out[targets].astype(np.float64)
    assert loss == pytest.approx(_loss64(h0, v0, labels), rel=1e-5)
    grad_h = _numeric_grad(lambda h: _loss64(h, v0, labels), h0)
    grad_v = _numeric_grad(lambda v: _loss64(h0, v, labels), v0)
    for c in context:
        np.testing.assert_allclose(a[c] - w_in[c], -lr * grad_h, atol=2e-6)
    np.testing.assert_allclose(b[targets] - w_out[targets], -lr * grad_v, atol=2e-6)
    np.testing.assert_array_equal(a[[0, 1, 2, 6, 7, 9, 10, 11]], w_in[[0, 1, 2, 6, 7, 9, 10, 11]])


def test_w2v_step_matches_autograd_of_its_loss():
    """The batched step: loss equals the formula, Δ w_out = -lr dL/dv and each input row -lr dL/dh, with
    autograd on the masked mean as the reference (distinct rows, so the scatter adds do not mix)."""
    torch.manual_seed(0)
    vocab, dim, lr = 40, 6, 0.05
    w_in, w_out = torch.randn(vocab, dim), torch.randn(vocab, dim)
    inputs = torch.arange(12).view(3, 4)
    input_mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.float32)
    targets = torch.arange(20, 35).view(3, 5)
    labels = torch.tensor([[1, 0, 0, 0, 0], [1, 0, 1, 1, 0], [0, 1, 0, 1, 0]], dtype=torch.float32)
    target_mask = torch.tensor([[1, 1, 1, 0, 1], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.float32)
    x = w_in[inputs].clone().requires_grad_(True)
    h = (x * input_mask[:, :, None]).sum(1) / input_mask.sum(1, keepdim=True)
    h.retain_grad()
    v = w_out[targets].clone().requires_grad_(True)
    f = (v * h[:, None, :]).sum(2)
    ref = (torch.nn.functional.softplus(-(2 * labels - 1) * f) * target_mask).sum()
    ref.backward()
    a, b = w_in.clone(), w_out.clone()
    loss = w2v_step(a, b, inputs, input_mask, targets, labels, target_mask, lr)
    assert float(loss) == pytest.approx(float(ref.detach()), rel=1e-5)
    torch.testing.assert_close(b[targets] - w_out[targets], -lr * v.grad, atol=1e-6, rtol=1e-5)
    expected_in = -lr * h.grad[:, None, :] * input_mask[:, :, None]
    torch.testing.assert_close(a[inputs] - w_in[inputs], expected_in, atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------------------------------ kernel vs torch
def _block(n: int, vocab: int, window: int, seed: int):
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, vocab, n)
    seg = np.repeat(np.arange(n // 10 + 1), 10)[:n]
    eff = window - rng.integers(0, window, n)
    return ids, seg, eff


def test_cbow_windows_equal_brute_force():
    ids, seg, eff = _block(200, 30, 4, 0)
    centre, contexts, mask = cbow_windows(ids, seg, eff, 4)
    expected = []
    for i in range(len(ids)):
        ctx = sorted(ids[j] for j in range(len(ids)) if j != i and abs(j - i) <= eff[i] and seg[j] == seg[i])
        if ctx:
            expected.append((ids[i], ctx))
    assert len(centre) == len(expected)
    for k, (c, ctx) in enumerate(expected):
        assert centre[k] == c and sorted(contexts[k][mask[k]].tolist()) == ctx


@pytest.mark.parametrize("model", ["skipgram", "cbow"])
def test_hs_kernel_equals_torch_step_one_example_at_a_time(model):
    """With one example per step, the numba kernel and w2v_step are the same SGD (HS: no random draws)."""
    vocab, dim, lr, window = 30, 8, 0.05, 3
    ids, seg, eff = _block(120, vocab, window, 1)
    counts = np.bincount(ids, minlength=vocab)
    tree = huffman_tree(counts)
    w_in, w_out = _matrices(vocab, dim, 2)
    w_in *= 0.1
    a, b = w_in.copy(), w_out.copy()
    if model == "skipgram":
        from lmpipe.embeddings.sgns_kernel import window_pairs

        centre, context = window_pairs(ids, seg, eff)
        train_pairs_hs(a, b, centre, context, tree.codes, tree.points, tree.lengths, lr, lr, 1)
        inputs, mask = context[:, None], np.ones((len(centre), 1), bool)
    else:
        no = np.zeros(1, np.float32), np.zeros(1, np.int64)
        train_cbow(a, b, ids, seg, eff, tree.codes, tree.points, tree.lengths, *no, 0, 0, lr, lr, 1)
        centre, inputs, mask = cbow_windows(ids, seg, eff, window)
    ta, tb = torch.from_numpy(w_in.copy()), torch.from_numpy(w_out.copy())
    codes, points = torch.from_numpy(tree.codes.astype(np.int64)), torch.from_numpy(tree.points)
    for k in range(len(centre)):
        c, n = int(centre[k]), int(tree.lengths[centre[k]])
        w2v_step(
            ta, tb, torch.from_numpy(inputs[k : k + 1]), torch.from_numpy(mask[k : k + 1]).float(),
            points[c : c + 1, :n], 1.0 - codes[c : c + 1, :n].float(), torch.ones(1, n), lr,
        )  # fmt: skip
    np.testing.assert_allclose(ta.numpy(), a, atol=2e-5)
    np.testing.assert_allclose(tb.numpy(), b, atol=2e-5)


# ------------------------------------------------------------------------------------------ training
def _corpus(seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """Two topics of 20 words each: sentences draw from one topic, so a word's neighbours are its topic."""
    rng = np.random.default_rng(seed)
    vocab = 43
    sents = [(rng.integers(0, 20, 12) + 3 + 20 * (i % 2)).astype(np.uint32) for i in range(1500)]
    counts = np.bincount(np.concatenate(sents), minlength=vocab).astype(np.uint64)
    return counts, sents


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize(("model", "loss"), MODES)
def test_every_mode_learns_the_topics_on_both_backends(model, loss, backend):
    """Loss falls and words sit nearer their own topic than the other (cosine of the input vectors)."""
    counts, sents = _corpus()
    config = SGNSConfig(model=model, loss=loss, dim=16, epochs=4, sample=0, backend=backend, batch_pairs=64)
    sgns = SGNS(counts, config)
    assert sgns.backend == backend
    losses = [sgns.train_epoch(sents).loss for _ in range(config.epochs)]
    assert losses[-1] < losses[0] and np.isfinite(losses).all()
    w = sgns.host_matrices()[0][3:]
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    sim = w @ w.T
    same = np.add.outer(np.arange(40) // 20, np.arange(40) // 20) != 1
    np.fill_diagonal(same, False)
    diff = np.add.outer(np.arange(40) // 20, np.arange(40) // 20) == 1
    assert sim[same].mean() > sim[diff].mean() + 0.2


def test_per_model_defaults_and_their_errors():
    """word2vec.c's defaults per model; HS takes no noise words; explicit values are kept."""
    assert (SGNSConfig().alpha, SGNSConfig().negative) == (0.025, 5)
    assert (SGNSConfig(model="cbow").alpha, SGNSConfig(loss="hierarchical").negative) == (0.05, 0)
    assert SGNSConfig(model="cbow", alpha=0.01).alpha == 0.01
    spec = SgnsSpec(model="cbow", loss="hierarchical")
    assert (spec.alpha, spec.negative) == (0.05, 0)
    assert (SgnsSpec().alpha, SgnsSpec().negative) == (0.025, 5)
    with pytest.raises(SpecError, match="sgns.negative"):
        SgnsSpec(loss="hierarchical", negative=5)
    with pytest.raises(SpecError, match="sgns.shared_negatives"):
        SgnsSpec(model="cbow", shared_negatives=4)
    with pytest.raises(ValueError, match="negative must be 0"):
        SGNSConfig(loss="hierarchical", negative=3)
    with pytest.raises(ValueError, match="model must be one of"):
        SGNSConfig(model="glove")


def test_new_fields_at_their_defaults_leave_the_fingerprint_settings_as_they_were():
    """skip-gram + NS settings, as fingerprinted: no model/loss keys, alpha and negative as numbers."""
    from lmpipe.pipelines.spec_parser import settings_dict

    settings = settings_dict(load_spec(SPECS / "tiny.yaml").sgns, fingerprint=True)
    assert "model" not in settings and "loss" not in settings
    assert (settings["alpha"], settings["negative"]) == (0.025, 5)
    cbow = settings_dict(load_spec(SPECS / "tiny.yaml", overrides=["sgns.model=cbow"]).sgns, fingerprint=True)
    assert cbow["model"] == "cbow" and cbow["alpha"] == 0.05


@pytest.fixture(scope="module")
def tokenized(ray_local, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("tokenized")
    run_pipeline(load_spec(SPECS / "tiny.yaml"), run_dir=run, stages=["tokenize"])
    return run


@pytest.mark.parametrize(("model", "loss"), MODES)
def test_stage_runs_every_mode_and_gensim_loads_the_vectors(tokenized, tmp_path, model, loss):
    """The sgns stage on tiny in each mode: finite vectors, the mode in the manifest's settings, and the
    word2vec export loads in gensim with the same rows."""
    gensim = pytest.importorskip("gensim")
    from lmpipe.embeddings.formats import save_word2vec

    shutil.copytree(tokenized / "tokenize", tmp_path / "tokenize")
    spec = load_spec(SPECS / "tiny.yaml", overrides=[f"sgns.model={model}", f"sgns.loss={loss}"])
    manifest = run_pipeline(spec, run_dir=tmp_path, stages=["sgns"])["sgns"]
    settings = manifest["settings"]  # a New field at its default is left out, as in fingerprints
    assert (settings.get("model", "skipgram"), settings.get("loss", "negative")) == (model, loss)
    assert {"model", "loss"} & set(settings)  # a non-default mode is recorded
    assert manifest["settings"]["alpha"] == (0.05 if model == "cbow" else 0.025)
    vectors = Vectors.load(tmp_path / "sgns" / "vectors")
    assert np.isfinite(vectors.matrix).all() and np.abs(vectors.matrix).max() > 0
    save_word2vec(vectors, tmp_path / "v.bin", binary=True)
    kv = gensim.models.KeyedVectors.load_word2vec_format(str(tmp_path / "v.bin"), binary=True)
    assert list(kv.index_to_key) == list(vectors.tokens)
    np.testing.assert_array_equal(kv.vectors, vectors.matrix)
