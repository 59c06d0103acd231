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

from cluster.training import WorkerGroup
from lm.tagging.data import build_vocab, encode
from lm.tagging.models import CRF, Tagger, TaggerConfig, case_of
from lm.tagging.train import OptimConfig, TaggerJob, TaskData, replace_singletons, train_tagger
from pipelines.spec import SpecError, parse_spec

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
        out_dir=str(tmp_path / "out"), checkpoint_dir=str(tmp_path / "ckpt"),
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
    torch.manual_seed(0)
    out = replace_singletons((words, case, lengths, tags), singleton, 0.3)
    changed = out[0] != words
    assert torch.equal(out[0][changed], torch.ones(int(changed.sum()), dtype=torch.long))  # always to <unk> = 1
    assert not changed[~singleton[words]].any()  # non-singletons and padding are never touched
    rate = changed[singleton[words]].double().mean().item()
    assert abs(rate - 0.3) < 0.01  # 25,000 draws: 4 standard deviations is 0.012
    assert out[1] is case and out[3] is tags


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
    batches = (
        (words, case, lengths, torch.tensor([[0, 1, 2]])),
        (words, case, lengths, torch.tensor([[3, 6, 0]])),
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
