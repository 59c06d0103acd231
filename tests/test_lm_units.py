"""lm building blocks without Ray: stream and batch layout, output layers, gradient checks, KenLM accounting."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lmpipe.lm.batching import (
    batchify,
    eval_columns,
    get_batch,
    read_stream,
    sentences_stream,
    stream_length,
    worker_slice,
)
from lmpipe.lm.gradcheck import gradient_check
from lmpipe.lm.models import ModelConfig, RNNModel, align_vectors, init_embedding
from lmpipe.lm.neural_eval import score_columns, text_units
from lmpipe.lm.perplexity import CorpusScore, load_kenlm, score_sentences_kenlm
from lmpipe.lm.softmax import ClassSoftmax, frequency_classes
from lmpipe.pipelines.core.schemas import BOS_ID, EOS_ID, UNK_ID

from .lm_helpers import make_corpus, write_shard

COUNTS = np.array([3, 0, 40] + list(range(30, 2, -1)), dtype=np.uint64)  # <unk>, <s>, </s>, 28 words
V = len(COUNTS)


def test_batchify_and_bptt_layout_on_a_hand_made_sequence():
    """26 letters in 4 columns: the example's drawing, remainder dropped, windows of bptt rows."""
    data = batchify(torch.arange(26), 4)
    assert data.shape == (6, 4)
    assert data[:, 1].tolist() == [6, 7, 8, 9, 10, 11]  # column 1 = g h i j k l
    assert data[0].tolist() == [0, 6, 12, 18]  # a g m s
    x, y = get_batch(data, 0, bptt=2)
    assert x.tolist() == [[0, 6, 12, 18], [1, 7, 13, 19]] and y.tolist() == [[1, 7, 13, 19], [2, 8, 14, 20]]
    x, y = get_batch(data, 4, bptt=2)  # the last window is shorter: rows 4 -> 5 only
    assert x.tolist() == [[4, 10, 16, 22]] and y.tolist() == [[5, 11, 17, 23]]
    assert worker_slice(26, 2, 0, 2) == (0, 12) and worker_slice(26, 2, 1, 2) == (12, 24)
    with pytest.raises(ValueError, match="too few"):
        worker_slice(5, 2, 0, 2)


def test_stream_is_kenlm_token_sequence_and_slices_read_only_their_range(tmp_path):
    """Leading </s> as context, one </s> after each sentence; any slice equals the slice of the whole stream."""
    sentences = [[5, 6], [7], [8, 9, 10], [], [11]]
    path = str(write_shard(tmp_path / "s.arrow", sentences, batch_rows=2))
    whole = read_stream([path])
    assert whole.tolist() == [2, 5, 6, 2, 7, 2, 8, 9, 10, 2, 2, 11, 2] == sentences_stream(sentences).tolist()
    assert stream_length([path]) == 1 + sum(len(s) + 1 for s in sentences)
    for a, b in [(0, 1), (3, 9), (5, 13), (12, 13), (4, 4)]:
        assert read_stream([path], a, b).tolist() == whole[a:b].tolist()


def test_eval_columns_predict_every_token_once():
    """Every target of every sentence (and each </s>) appears exactly once, whatever the column count."""
    rng = np.random.default_rng(0)
    sentences = [rng.integers(3, 50, size=rng.integers(0, 9)) for _ in range(37)]
    expected = sorted(sentences_stream(sentences)[1:].tolist())
    for columns, reset in [(1, False), (4, False), (10, False), (100, False), (1, True)]:
        cols = eval_columns(sentences, columns, reset=reset)
        got = cols.targets[cols.mask].tolist()
        assert sorted(got) == expected and len(got) == sum(len(s) + 1 for s in sentences)
        first_inputs = cols.inputs[0][cols.mask[0]]
        assert (first_inputs == EOS_ID).all()  # every column starts from </s> as <s>


def test_frequency_classes_bin_by_token_share():
    """Frequent words get small classes, every class is non-empty, zero-count ids fall in the last class."""
    classes = frequency_classes(COUNTS, 5)
    assert set(classes.tolist()) == set(range(5))
    assert classes[2] == 0 and classes[BOS_ID] == 4
    order = np.argsort(-COUNTS.astype(np.float64), kind="stable")
    assert np.all(np.diff(classes[order]) >= 0)  # classes follow descending frequency
    sizes = np.bincount(classes)
    assert sizes[0] < sizes[-1]
    assert frequency_classes(np.array([5, 3]), 10).tolist() == [0, 1]  # never more classes than words


@pytest.mark.parametrize("kind", ["rnn", "irnn", "lstm", "gru"])
@pytest.mark.parametrize("softmax", ["full", "class"])
def test_gradient_check_every_model_family(kind, softmax):
    """Autograd equals central differences (float64, eps 1e-4) for every parameter, tied and untied."""
    cfg = ModelConfig(
        kind=kind, vocab_size=V, emb_dim=6, hidden=5, layers=2, softmax=softmax, classes=5,
        tie=softmax == "class", forget_bias=1.0 if kind == "lstm" else 0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = RNNModel(cfg, counts=COUNTS).double().eval()
    if kind == "irnn":  # the identity init puts every ReLU at its kink (0): move biases off it first
        with torch.no_grad():
            for name, p in model.rnn.named_parameters():
                if name.startswith("bias"):
                    p.uniform_(-1.0, 1.0)
    x, y = torch.randint(0, V, (4, 3)), torch.randint(0, V, (4, 3))
    errors = gradient_check(
        lambda: -model(x, model.init_hidden(3), y)[0].sum(), dict(model.named_parameters()), max_entries=6
    )
    assert len(errors) == len({id(p) for p in model.parameters()})
    assert max(errors.values()) < 1e-4, errors


def test_gradient_check_class_softmax_alone_and_detects_a_wrong_gradient():
    """The class-factorised layer alone passes; a deliberately wrong backward is caught."""
    torch.manual_seed(1)
    layer = ClassSoftmax(4, frequency_classes(COUNTS, 6)).double()
    h = torch.randn(9, 4, dtype=torch.float64)
    y = torch.randint(0, V, (9,))
    errors = gradient_check(lambda: -layer.target_log_probs(h, y).sum(), dict(layer.named_parameters()))
    assert max(errors.values()) < 1e-6, errors
    full = layer.log_probs(h)
    assert torch.allclose(full.exp().sum(-1), torch.ones(9, dtype=torch.float64))
    assert torch.allclose(full.gather(1, y[:, None]).squeeze(1), layer.target_log_probs(h, y))

    class Wrong(torch.autograd.Function):
        @staticmethod
        def forward(ctx, w):
            ctx.save_for_backward(w)
            return (w**2).sum()

        @staticmethod
        def backward(ctx, g):
            (w,) = ctx.saved_tensors
            return g * 3.0 * w  # the true gradient is 2 w

    w = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
    assert gradient_check(lambda: Wrong.apply(w), {"w": w})["w"] > 1e-2


def test_adaptive_softmax_is_a_distribution():
    torch.manual_seed(0)
    model = RNNModel(
        ModelConfig(
            kind="gru", vocab_size=V, emb_dim=8, hidden=16, layers=1, softmax="adaptive", cutoffs=(8, 20)
        )
    )
    x, y = torch.randint(0, V, (5, 2)), torch.randint(0, V, (5, 2))
    lp, _ = model(x, model.init_hidden(2), y)
    full, _ = model.next_log_probs(x, model.init_hidden(2))
    assert torch.allclose(full.exp().sum(-1), torch.ones(5, 2), atol=1e-5)
    assert torch.allclose(full.gather(-1, y[..., None]).squeeze(-1), lp, atol=1e-5)


def _unigram_model(vocab_size: int, log_probs: np.ndarray) -> RNNModel:
    """A model whose every prediction is the given distribution: zero output weights, bias = log p."""
    model = RNNModel(ModelConfig(kind="rnn", vocab_size=vocab_size, emb_dim=4, hidden=4, layers=1))
    with torch.no_grad():
        model.output.weight.zero_()
        model.output.bias.copy_(torch.from_numpy(log_probs))
    return model


SENTENCES = [["the", "cat", "sat"], ["a", "dog"], ["the", "zebra", "sat", "down"], ["cat"]]
TRAIN = [["the", "cat", "sat", "a", "dog"], ["the", "cat"], ["down"]]


def test_uniform_model_perplexity_is_vocabulary_size(tmp_path):
    """Uniform over V outputs: ppl = V exactly, tokens = words + one </s> per sentence, OOVs as <unk>."""
    _, shards, vocab = make_corpus(tmp_path, {"train": TRAIN, "test": SENTENCES})
    from lmpipe.pipelines.core.shards import read_sentences

    sentences = read_sentences(tuple(map(str, shards["test"])), np.int64)
    model = _unigram_model(len(vocab), np.zeros(len(vocab)))
    for columns, reset in [(1, False), (3, False), (1, True)]:
        score = score_columns(model, eval_columns(sentences, columns, reset=reset), bptt=2)
        assert score.tokens == sum(len(s) + 1 for s in SENTENCES) == 14
        assert score.sentences == 4 and score.oov == 1  # "zebra" is not in the training vocabulary
        assert score.perplexity() == pytest.approx(len(vocab), rel=1e-6)  # float32 model
        assert score.perplexity_excluding_oov() == pytest.approx(len(vocab), rel=1e-6)


def test_neural_scores_equal_kenlm_query_on_the_same_distribution(tmp_path):
    """A neural unigram model and the ARPA file of the same probabilities score identically with KenLM:
    same tokens, same OOVs, same whole-corpus log10 sum (KenLM stores float32)."""
    _, shards, vocab = make_corpus(tmp_path, {"train": TRAIN, "test": SENTENCES})
    tokens = vocab.tokens.to_pylist()
    rng = np.random.default_rng(3)
    logits = rng.normal(size=len(tokens))
    logits[BOS_ID] = -1e4  # <s> is never predicted; KenLM gives it no mass either
    log_p = logits - np.logaddexp.reduce(logits)
    arpa = tmp_path / "unigram.arpa"
    log10_p = np.where(np.arange(len(tokens)) == BOS_ID, -99.0, log_p / math.log(10))
    rows = [f"{log10_p[i]:.9f}\t{t}\t0" for i, t in enumerate(tokens)]
    # KenLM loads order >= 2 only: one bigram whose probability equals its word's unigram (a no-op)
    dog = tokens.index("dog")
    arpa.write_text(
        f"\\data\\\nngram 1={len(tokens)}\nngram 2=1\n\n\\1-grams:\n"
        + "\n".join(rows)
        + f"\n\n\\2-grams:\n{log10_p[dog]:.9f}\tdog dog\n\n\\end\\\n"
    )
    kenlm_score = score_sentences_kenlm(load_kenlm(arpa), [" ".join(s) for s in SENTENCES])

    from lmpipe.pipelines.core.shards import read_sentences

    sentences = read_sentences(tuple(map(str, shards["test"])), np.int64)
    ours = score_columns(_unigram_model(len(tokens), log_p), eval_columns(sentences, 2), bptt=3)
    assert (ours.tokens, ours.sentences, ours.oov) == (
        kenlm_score.tokens,
        kenlm_score.sentences,
        kenlm_score.oov,
    )
    assert ours.log10_sum == pytest.approx(kenlm_score.log10_sum, abs=1e-5)
    assert ours.oov_log10_sum == pytest.approx(kenlm_score.oov_log10_sum, abs=1e-6)
    assert ours.perplexity() == pytest.approx(kenlm_score.perplexity(), rel=1e-6)


def test_per_word_perplexity_and_bits_per_byte_denominators():
    """Only the denominator changes: words + sentence ends, UTF-8 bytes + one newline per sentence."""
    tokens = ["<unk>", "<s>", "</s>", "▁the", "▁c", "at", "é"]
    sp = text_units(tokens, [np.array([3, 4, 5]), np.array([6])], "sentencepiece")  # "the cat", "é"
    assert sp == {"words": 3, "sentences": 2, "units": 5, "bytes": len("the cat\né\n".encode())}
    chars = ["<unk>", "<s>", "</s>", "a", "▁", "b"]
    ch = text_units(chars, [np.array([3, 4, 5, 5])], "char")  # "a bb"
    assert ch == {"words": 2, "sentences": 1, "units": 3, "bytes": 5}
    ws = text_units(["<unk>", "<s>", "</s>", "ab", "c"], [np.array([3, 4, 0])], "whitespace")  # "ab c <unk>"
    assert ws["words"] == 3 and ws["bytes"] == len("ab c ?\n")
    score = CorpusScore()
    score.add_natural([-1.0] * 4, [False] * 4)
    assert score.perplexity_per(2) == pytest.approx(math.exp(2.0))
    assert score.bits_per(8) == pytest.approx(4 / math.log(2) / 8)


def test_embedding_init_aligns_by_token_and_counts_missing():
    tokens = ["<unk>", "<s>", "</s>", "cat", "dog", "emu"]
    vec_tokens, matrix = ["dog", "cat", "yak", "</s>"], np.arange(16, dtype=np.float32).reshape(4, 4)
    aligned, found = align_vectors(tokens, vec_tokens, matrix)
    assert found.tolist() == [False, False, True, True, True, False]
    torch.manual_seed(0)
    model = RNNModel(
        ModelConfig(kind="lstm", vocab_size=6, emb_dim=4, hidden=3, layers=1, freeze_embedding=True)
    )
    before = model.embedding.weight.detach().clone()
    done = init_embedding(model, aligned, found)
    assert (done.found, done.missing) == (3, 3)
    w = model.embedding.weight.detach()
    assert (
        w[3].tolist() == matrix[1].tolist()
        and w[4].tolist() == matrix[0].tolist()
        and w[2].tolist() == matrix[3].tolist()
    )
    assert torch.equal(w[[0, 1, 5]], before[[0, 1, 5]]) and not model.embedding.weight.requires_grad
    projected = RNNModel(
        ModelConfig(kind="gru", vocab_size=6, emb_dim=8, hidden=3, layers=1, vectors_dim=4, tie=True)
    )
    assert projected.in_proj is not None and projected.out_proj is not None
    assert projected.output.weight is projected.embedding.weight
    assert init_embedding(projected, aligned, found).vectors_dim == 4
    assert UNK_ID == 0


@pytest.mark.parametrize("kind", ["lstm", "gru", "nplm"])
def test_reset_scores_equal_each_sentence_scored_alone(kind):
    """``lmpipe score``'s batched neural path (sorted by length, padded per batch, windows of rows when the
    logits cap bites) equals the brute force: each sentence alone from a zero state, ``</s>`` as ``<s>``."""
    from lmpipe.lm.models import build_network
    from lmpipe.lm.neural_eval import reset_scores

    torch.manual_seed(0)
    cfg = ModelConfig(kind=kind, vocab_size=V, emb_dim=6, hidden=5, layers=2, softmax="full")
    model = build_network(cfg, counts=COUNTS).eval()
    rng = np.random.default_rng(1)
    sentences = [rng.integers(3, V, size=rng.integers(1, 9)) for _ in range(11)]
    sentences[4][0] = UNK_ID
    want_lp, want_tok = [], []
    with torch.no_grad():
        for s in sentences:
            x = torch.as_tensor(np.concatenate([[EOS_ID], s]), dtype=torch.int64)[:, None]
            y = torch.as_tensor(np.concatenate([s, [EOS_ID]]), dtype=torch.int64)[:, None]
            want_lp.append(model(x, model.init_hidden(1), y)[0][:, 0].double().numpy() / math.log(10))
            want_tok.append(y[:, 0].numpy())
    for batch_lines, max_logits in ((64, 1 << 27), (3, 1 << 27), (4, 1)):
        got = reset_scores(model, sentences, batch_lines=batch_lines, max_logits=max_logits)
        assert got.token.tolist() == np.concatenate(want_tok).tolist()
        assert got.sentence.tolist() == np.repeat(np.arange(11), [len(s) + 1 for s in sentences]).tolist()
        assert got.oov.tolist() == (got.token == UNK_ID).tolist() and got.oov.sum() == 1
        np.testing.assert_allclose(got.log10_prob, np.concatenate(want_lp), rtol=1e-5, atol=1e-6)
