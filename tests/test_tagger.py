"""Tagger units without Ray: CRF against brute force, the window layout, case feature, overfitting, NaN stop,
spec validation."""

from __future__ import annotations

import dataclasses
import itertools
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lmpipe.cluster.training import WorkerGroup
from lmpipe.lm.tagging.data import MAX_WORD_CHARS, build_char_vocab, build_vocab, encode, pad_batch
from lmpipe.lm.tagging.models import CRF, CharEncoder, Tagger, TaggerConfig, case_of
from lmpipe.lm.tagging.train import OptimConfig, TaggerJob, TaskData, replace_singletons, train_tagger
from lmpipe.pipelines.spec import SpecError, parse_spec

PLAIN = WorkerGroup(0, 1, torch.device("cpu"), False)


def _brute(crf: CRF, em: torch.Tensor, n: int) -> tuple[float, list[int], dict[tuple[int, ...], float]]:
    scores = {}
    em, crf_state = em.detach(), {k: v.detach() for k, v in crf.state_dict().items()}
    for path in itertools.product(range(em.size(1)), repeat=n):
        s = crf_state["start"][path[0]] + crf_state["end"][path[-1]] + sum(em[t, path[t]] for t in range(n))
        s = s + sum(crf_state["trans"][path[t - 1], path[t]] for t in range(1, n))
        scores[path] = float(s)
    log_z = math.log(sum(math.exp(v) for v in scores.values()))
    return log_z, list(max(scores, key=scores.get)), scores


def test_crf_forward_viterbi_and_gold_score_equal_brute_force():
    """log Z, the best path and score(y) by enumeration over every tag sequence of short padded sentences."""
    torch.manual_seed(0)
    crf = CRF(3)
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    lengths = [4, 2, 1, 3]
    em = torch.randn(len(lengths), 4, 3)
    mask = torch.arange(4)[None, :] < torch.tensor(lengths)[:, None]
    tags = torch.randint(0, 3, (len(lengths), 4))
    log_z = crf.log_partition(em, mask)
    best = crf.viterbi(em, mask)
    gold = crf.gold_score(em, tags, mask)
    for b, n in enumerate(lengths):
        z, path, scores = _brute(crf, em[b], n)
        assert log_z[b].item() == pytest.approx(z, abs=1e-5)
        assert best[b] == path
        assert gold[b].item() == pytest.approx(scores[tuple(tags[b, :n].tolist())], abs=1e-5)
    nll = crf.nll(em, tags, mask)
    assert (nll >= 0).all()


def test_window_features_are_the_neighbours_with_zero_padding():
    cfg = TaggerConfig(model="window", vocab_size=9, tasks=(("t", 2),), dim=2, case_dim=0, window=3, hidden=4)
    net = Tagger(cfg)
    x = torch.arange(1, 1 + 2 * 4 * 2, dtype=torch.float32).view(2, 4, 2)
    w = net._window(x)  # (2, 4, 6)
    assert w.shape == (2, 4, 6)
    assert torch.equal(w[0, 0], torch.cat([torch.zeros(2), x[0, 0], x[0, 1]]))
    assert torch.equal(w[1, 2], torch.cat([x[1, 1], x[1, 2], x[1, 3]]))
    assert torch.equal(w[1, 3], torch.cat([x[1, 2], x[1, 3], torch.zeros(2)]))


def test_case_feature():
    assert [case_of(t) for t in ["the", "Paris", "EU", "iPhone", "1996", "McDonald"]] == [1, 2, 3, 4, 5, 4]


# ------------------------------------------------------------------------------------------ tiny training
SENTS = [
    ("John lives in Paris".split(), "B-PER O O B-LOC".split()),
    ("Mary Smith visited London".split(), "B-PER I-PER O B-LOC".split()),
    ("the cat sat".split(), "O O O".split()),
    ("Paris is big".split(), "B-LOC O O".split()),
    ("Smith met John in London".split(), "B-PER O B-PER O B-LOC".split()),
    ("Mary saw the cat".split(), "B-PER O O O".split()),
]


def tiny_job(tmp_path: Path, **model) -> TaggerJob:
    """One span task whose valid set is its training set: a model that fits gets F1 100."""
    vocab = build_vocab([s for s, _ in SENTS], min_count=1, lowercase=True)
    tags = sorted({t for _, ts in SENTS for t in ts})
    enc = encode([s for s, _ in SENTS], [t for _, t in SENTS], vocab, {t: i for i, t in enumerate(tags)})
    for split in ("train", "valid"):
        enc.save(tmp_path / f"task-0-{split}.npz")
    cfg = TaggerConfig(vocab_size=len(vocab.tokens), tasks=(("ner", len(tags)),), dim=8, hidden=16, **model)
    return TaggerJob(
        data_dir=str(tmp_path), tasks=(TaskData(name="ner", kind="span", tags=tuple(tags), train_tags=len(tags),
                                                splits=("train", "valid")),),
        model=cfg, optim=OptimConfig(optimizer="adam", lr=0.05, batch_size=3, epochs=40, patience=None),
        out_dir=str(tmp_path / "out"), checkpoint_dir=str(tmp_path / "ckpt"), threads=1, use_gpu=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    "model",
    [
        {"model": "window", "window": 3},
        {"model": "rnn", "crf": True},
        {"model": "rnn", "cell": "rnn", "layers": 2},
    ],
)
def test_a_tiny_tagger_overfits_a_tiny_data_set(tmp_path, model):
    out = train_tagger(tiny_job(tmp_path, **model), PLAIN)
    assert out["scores"]["ner"]["valid"] == 100.0
    assert out["epochs"][-1]["train_loss"]["ner"] < out["epochs"][0]["train_loss"]["ner"] / 5
    assert (tmp_path / "out" / "model.pt").is_file()


def test_a_diverging_run_stops_with_the_step_and_a_fix(tmp_path):
    optim = OptimConfig(optimizer="sgd", lr=1e38, clip=0.0, epochs=3)
    job = dataclasses.replace(tiny_job(tmp_path, model="window"), optim=optim)
    with pytest.raises(FloatingPointError, match=r"at step \d+ of epoch \d+ .*lower tagger.lr"):
        train_tagger(job, PLAIN)
    assert not any(p.name.startswith(".epoch") for p in (tmp_path / "ckpt").glob("*"))  # no half checkpoint


def test_singleton_replacement_touches_singletons_only_at_rate_p():
    singleton = torch.tensor([False, False, True, False, True])  # ids 2 and 4 were seen once in training
    words = torch.tensor([[2, 3, 4, 0], [4, 4, 3, 2]]).repeat(5000, 1)
    case, lengths, tags = torch.ones_like(words), torch.full((10000,), 4), torch.zeros_like(words)
    chars = torch.ones(*words.shape, 3, dtype=torch.long)
    torch.manual_seed(0)
    out = replace_singletons((words, case, chars, lengths, tags), singleton, 0.3)
    changed = out[0] != words
    assert torch.equal(out[0][changed], torch.ones(int(changed.sum()), dtype=torch.long))  # always to <unk> = 1
    assert not changed[~singleton[words]].any()  # non-singletons and padding are never touched
    rate = changed[singleton[words]].double().mean().item()
    assert abs(rate - 0.3) < 0.01  # 25,000 draws: 4 standard deviations is 0.012
    assert out[1] is case and out[2] is chars and out[4] is tags  # the spelling stays: only the lookup is <unk>


def test_singleton_replacement_trains_and_is_reproducible(tmp_path):
    job = tiny_job(tmp_path, model="rnn", crf=True)
    job = dataclasses.replace(job, optim=dataclasses.replace(job.optim, unk_replace=0.5, epochs=3))
    first = train_tagger(job, PLAIN)
    for path in (tmp_path / "ckpt", tmp_path / "out"):
        shutil.rmtree(path, ignore_errors=True)
    again = train_tagger(job, PLAIN)
    assert [e["train_loss"] for e in first["epochs"]] == [e["train_loss"] for e in again["epochs"]]


def test_multitask_heads_share_the_encoder(tmp_path):
    cfg = TaggerConfig(model="rnn", vocab_size=20, tasks=(("ner", 5), ("pos", 7)), dim=4, hidden=6)
    net = Tagger(cfg)
    words = torch.tensor([[2, 3, 4]])
    case = torch.ones_like(words)
    lengths = torch.tensor([3])
    chars = torch.zeros(1, 3, 1, dtype=torch.long)
    batches = (
        (words, case, chars, lengths, torch.tensor([[0, 1, 2]])),
        (words, case, chars, lengths, torch.tensor([[3, 6, 0]])),
    )
    loss, parts = net(batches, (1.0, 1.0))
    loss.backward()
    assert parts.shape == (2,) and all(p.grad is not None for p in net.parameters())
    assert net.emissions(words, case, lengths, 1).shape == (1, 3, 7)


# ------------------------------------------------------------------------------------------ spec
BASE = {"name": "t", "corpus": {"train": "x"}}
TASK = {"name": "ner", "format": "conll2003", "column": "ner", "train": "data:conll2003/train"}


@pytest.mark.parametrize(
    ("tagger", "key"),
    [
        ({"window": 4}, "tagger.window"),
        ({"dropout": 1.0}, "tagger.dropout"),
        ({"lr": 0}, "tagger.lr"),
        ({"unk_replace": 1.0}, "tagger.unk_replace"),
        ({"model": "cnn"}, "tagger.model"),
        ({"chars": "cnn3"}, "tagger.chars"),
        ({"char_width": 4}, "tagger.char_width"),
        ({"char_size": 0}, "tagger.char_size"),
        ({"tasks": [{**TASK, "column": "upos"}]}, r"tagger.tasks\[0\].column"),
        ({"tasks": [TASK, TASK]}, r"tagger.tasks\[1\].name"),
        ({"tasks": [{**TASK, "valid": "a", "valid_fraction": 0.1}]}, r"tagger.tasks\[0\].valid_fraction"),
        ({"tasks": [{**TASK, "scheme": "bio"}]}, r"tagger.tasks\[0\].scheme"),
        ({"vectors": "sgns", "vectors_format": "glove"}, "tagger.vectors_format"),
        ({"freeze_vectors": True}, "tagger.freeze_vectors"),
        ({"tune": {"window": [4]}}, "tagger.tune.window"),
        ({"tune": {"lr": [0.1, 0.01]}}, "tagger.tune.lr"),
        ({"hidden_size": 3}, "tagger.hidden_size: unknown key"),
    ],
)
def test_bad_tagger_spec_values_are_named(tagger, key):
    with pytest.raises(SpecError, match=key):
        parse_spec({**BASE, "tagger": tagger})


def test_encode_uses_lowercase_lookup_and_unk():
    vocab = build_vocab([["The", "the", "Cat"]], min_count=2, lowercase=True, extra=["dog", "The"])
    assert vocab.tokens == ("<pad>", "<unk>", "the", "dog")
    enc = encode([["THE", "cat", "Dog"]], [["O", "O", "O"]], vocab, {"O": 0})
    assert enc.words.tolist() == [2, 1, 3] and enc.case.tolist() == [3, 1, 2]
    assert np.array_equal(enc.offsets, [0, 3])


# ------------------------------------------------------------------------------------------ characters
def test_pad_batch_holds_every_words_characters_as_written():
    train = [["The", "cat"], ["Paris", "is", "x" * 20 + "-" + "y" * 19]]
    vocab = build_vocab(train, min_count=1, lowercase=True)
    chars = build_char_vocab(train)
    assert chars.chars[:3] == ("<pad>", "<unk>", "x") and "T" in chars.chars and "t" in chars.chars
    index = chars.index()
    sents = [["The", "cat"], ["Paris", "is", "x" * 20 + "-" + "y" * 19], ["Zoë"]]
    enc = encode(sents, [["O"] * len(s) for s in sents], vocab, {"O": 0}, chars)
    words, case, ids, lengths, tags = pad_batch(enc, [2, 1, 0], torch.device("cpu"))
    assert ids.shape == (3, 3, MAX_WORD_CHARS) and lengths.tolist() == [1, 3, 2]
    for j, sent in enumerate([sents[2], sents[1], sents[0]]):
        for k in range(3):
            if k >= len(sent):
                assert not ids[j, k].any()  # a padding token has no character
                continue
            word = sent[k] if len(sent[k]) <= MAX_WORD_CHARS else sent[k][:15] + sent[k][-15:]  # prefix + suffix
            expect = [index.get(c, 1) for c in word]
            assert ids[j, k, : len(expect)].tolist() == expect and not ids[j, k, len(expect) :].any()
    assert ids[0, 0, :3].tolist() == [1, 1, 1]  # Z, o, ë: never in a training word -> <unk>
    assert words[0, 0].item() == 1 and tags[0, 1].item() == -1 and case[0, 0].item() == 2
    no_chars = encode(sents, [["O"] * len(s) for s in sents], vocab, {"O": 0})
    assert pad_batch(no_chars, [0], torch.device("cpu"))[2].tolist() == [[[0], [0]]]


def _brute_char_cnn(enc: CharEncoder, ids: list[int]) -> torch.Tensor:
    """Ma & Hovy's feature of one word by its definition: zero-padded window sums, max over positions, tanh."""
    w = enc.conv.weight.detach()  # (filters, dim, width)
    half = w.size(2) // 2
    emb = enc.embed.weight.detach()
    x = [torch.zeros(emb.size(1))] * half + [emb[i] for i in ids] + [torch.zeros(emb.size(1))] * half
    per_position = [
        torch.stack([sum(w[f, :, o] @ x[p + o] for o in range(w.size(2))) for f in range(w.size(0))])
        + enc.conv.bias.detach()
        for p in range(len(ids))
    ]
    return torch.tanh(torch.stack(per_position).max(dim=0).values)


@pytest.mark.parametrize("kind", ["cnn", "lstm"])
def test_a_words_character_vector_ignores_the_rest_of_the_batch(kind):
    """Eval mode: a word's vector alone equals its vector among longer words and padding; the CNN's equals the
    brute-force definition; a token with no character gets zeros."""
    torch.manual_seed(0)
    enc = CharEncoder(kind, vocab=12, dim=4, size=5, width=3, dropout=0.5).eval()
    alone = enc(torch.tensor([[[3, 4, 5]]]))[0, 0]
    batch = torch.tensor([[[7, 8, 9, 10, 11, 2], [3, 4, 5, 0, 0, 0]], [[6, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]]])
    out = enc(batch)
    assert out.shape == (2, 2, enc.out_dim)
    assert torch.allclose(out[0, 1], alone, atol=1e-6)
    assert not out[1, 1].any()
    if kind == "cnn":
        assert torch.allclose(alone, _brute_char_cnn(enc, [3, 4, 5]), atol=1e-5)
        assert torch.allclose(out[1, 0], _brute_char_cnn(enc, [6]), atol=1e-5)


SUFFIXES = {"ing": "V", "ly": "R", "ness": "N"}


def _suffix_sentences(rng: np.random.Generator, n: int) -> list[tuple[list[str], list[str]]]:
    """Made-up words whose tag is their suffix's: a word model cannot tag an unseen one, a character model can."""
    letters = list("bcdfghklmnprstvz")
    out = []
    for _ in range(n):
        words, tags = [], []
        for _ in range(5):
            suffix = list(SUFFIXES)[rng.integers(len(SUFFIXES))]
            words.append("".join(rng.choice(letters, rng.integers(3, 6))) + suffix)
            tags.append(SUFFIXES[suffix])
        out.append((words, tags))
    return out


@pytest.mark.parametrize("chars", ["none", "cnn", "lstm"])
def test_character_features_tag_words_never_seen_in_training(tmp_path, chars):
    rng = np.random.default_rng(0)
    train, valid = _suffix_sentences(rng, 120), _suffix_sentences(rng, 40)
    vocab = build_vocab([s for s, _ in train], min_count=1, lowercase=False)
    char_vocab = build_char_vocab([s for s, _ in train])
    tag_ids = {t: i for i, t in enumerate(sorted(SUFFIXES.values()))}
    for split, sents in (("train", train), ("valid", valid)):
        enc = encode([s for s, _ in sents], [t for _, t in sents], vocab, tag_ids, char_vocab)
        enc.save(tmp_path / f"task-0-{split}.npz")
    unseen = {w for s, _ in valid for w in s} - set(vocab.tokens)
    assert len(unseen) > 150  # nearly every valid word is <unk> to the word lookup
    cfg = TaggerConfig(
        model="rnn", vocab_size=len(vocab.tokens), tasks=(("pos", 3),), dim=8, hidden=16, case_dim=0,
        chars=chars, char_vocab_size=len(char_vocab.chars), char_dim=8, char_size=8,
    )  # fmt: skip
    job = TaggerJob(
        data_dir=str(tmp_path), tasks=(TaskData(name="pos", kind="token", tags=tuple(tag_ids), train_tags=3,
                                                splits=("train", "valid")),),
        model=cfg, optim=OptimConfig(optimizer="adam", lr=0.02, batch_size=8, epochs=8, patience=None),
        out_dir=str(tmp_path / "out"), checkpoint_dir=str(tmp_path / "ckpt"), threads=1, use_gpu=False,
    )  # fmt: skip
    accuracy = train_tagger(job, PLAIN)["scores"]["pos"]["valid"]
    if chars == "none":
        assert accuracy < 50  # a constant guess for <unk>: about a third
    else:
        assert accuracy > 95


def test_tag_inventory_lists_training_tags_then_unknown_ones():
    """Training tags sorted, then valid/test-only tags; unknown tags are counted in the file's scheme."""
    from lmpipe.lm.tagging.prepare import tag_inventory

    gold = {"train": [["B-NP", "I-NP"], ["B-NP"]], "valid": [["B-VP", "B-NP"]], "test": [["B-PP"]]}
    file_tags = {"train": [["I-NP", "I-NP"], ["I-NP"]], "valid": [["I-VP", "I-NP"]], "test": [["I-PP"]]}
    tags, train_tags, unknown = tag_inventory(gold, file_tags)
    assert tags == ["B-NP", "I-NP", "B-VP", "B-PP"] and train_tags == 2
    assert unknown == {"valid": {"I-VP": 1}, "test": {"I-PP": 1}}


def test_valid_cut_depends_on_the_text_not_the_order():
    """The cut is a function of (seed, tokens): reversing the file keeps every sentence's side; 0 and 1 are
    the extremes, and about ``fraction`` of many sentences go to valid."""
    from lmpipe.lm.tagging.prepare import valid_cut

    sents = [[f"w{i}", f"x{i % 7}"] for i in range(2000)]
    cut = valid_cut(sents, 0.25, seed=3)
    assert valid_cut(sents[::-1], 0.25, seed=3) == cut[::-1]
    assert 400 < sum(cut) < 600 and valid_cut(sents, 0.25, seed=4) != cut
    assert not any(valid_cut(sents, 0.0, seed=3)) and all(valid_cut(sents, 1.0, seed=3))


def test_prepare_data_writes_each_split_and_the_aligned_vectors(tmp_path):
    """Vocabulary from all tasks' training words then the vectors' tokens; lowercase lookup when the vectors
    are lowercase; characters as written (<pad>, <unk>, then T h e c a t P r i s); every split encoded with
    its unknown-word rate; vector rows aligned to the vocabulary."""
    from lmpipe.lm.tagging.data import Encoded
    from lmpipe.lm.tagging.prepare import TaskText, prepare_data

    pos = TaskText(name="pos", tokens={"train": [["The", "cat"]], "test": [["A", "cat"]]},
                   gold={"train": [["DT", "NN"]], "test": [["DT", "NN"]]}, tags=["DT", "NN"])  # fmt: skip
    ner = TaskText(name="ner", tokens={"train": [["Paris"]]}, gold={"train": [["B-LOC"]]}, tags=["B-LOC"])
    matrix = np.arange(6, dtype=np.float32).reshape(3, 2)
    data = prepare_data([pos, ner], tmp_path, min_count=1, lowercase=None, chars=True,
                        vectors=(["cat", "dog", "paris"], matrix))  # fmt: skip
    assert data.vocab.lowercase and data.vocab.tokens == ("<pad>", "<unk>", "cat", "paris", "the", "dog")
    assert data.report["unk_rate"] == {"pos": {"train": 0.0, "test": 0.5}, "ner": {"train": 0.0}}
    assert data.report["vocabulary"] == {"size": 6, "lowercase": True, "characters": 2 + 10, "with_vectors": 3}
    test = Encoded.load(tmp_path / "task-0-test.npz")
    assert test.words.tolist() == [1, 2] and test.tags.tolist() == [0, 1]
    with np.load(tmp_path / "embedding-init.npz") as z:
        assert z["found"].tolist() == [False, False, True, True, False, True]
        assert z["matrix"][3].tolist() == [4.0, 5.0] and z["matrix"][5].tolist() == [2.0, 3.0]
