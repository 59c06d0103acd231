"""lm.train as a plain function (one process, the degree-1 case of the Ray Train loop): overfitting, resume after
a kill, NaN handling, schedules; and the lm spec's validation errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from lmpipe.cluster.training import StopAfterEpoch, to_config
from lmpipe.lm.models import ModelConfig
from lmpipe.lm.train import LmJob, Schedule, TrainConfig, train_loop
from lmpipe.pipelines.core.shards import read_sentences
from lmpipe.pipelines.core.vocab import Vocab
from lmpipe.pipelines.spec import SpecError, parse_spec

from .lm_helpers import make_corpus

CORPUS = [
    "the cat sat on the mat".split(),
    "a dog ran in the park".split(),
    "the cat ran home".split(),
    "my dog sat down".split(),
] * 12


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict, object]:
    root = tmp_path_factory.mktemp("lmcorpus")
    return make_corpus(root, {"train": CORPUS, "valid": CORPUS[:8], "test": CORPUS[:4] + [["zebra", "cat"]]})


def _job(corpus, tmp_path: Path, **train) -> LmJob:
    vocab_path, shards, vocab = corpus
    cfg = {"lr": 1.0, "batch_size": 4, "bptt": 8, "epochs": 3, "schedule": "fixed", "decay_after": 1, **train}
    model = cfg.pop("model", {})
    return LmJob(
        name="t", vocab_path=str(vocab_path), train=tuple(map(str, shards["train"])),
        valid=tuple(map(str, shards["valid"])), test=tuple(map(str, shards["test"])),
        out_dir=str(tmp_path / "out"), checkpoint_dir=str(tmp_path / "ck"),
        model=ModelConfig(**{"kind": "lstm", "vocab_size": len(vocab), "emb_dim": 16, "hidden": 24, "layers": 1, **model}),
        train_config=TrainConfig(**cfg), threads=1, use_gpu=False,
    )  # fmt: skip


def test_tiny_model_overfits_a_tiny_corpus(corpus, tmp_path):
    """Scored on its own training text as one carried column, a trained LSTM reaches perplexity near 1."""
    job = _job(corpus, tmp_path, epochs=25, schedule="none", eval_columns=1)
    job = dataclasses.replace(
        job, valid=job.train
    )  # the best epoch is the one that fits the training text best
    out = train_loop(to_config(job))
    assert out["perplexity"]["valid"]["perplexity"] < 1.15
    assert out["perplexity"]["valid"]["tokens"] == sum(len(s) + 1 for s in CORPUS)
    assert out["epochs"][0]["train_perplexity"] > 3 * out["epochs"][-1]["train_perplexity"]
    assert (tmp_path / "out" / "model.pt").is_file() and (tmp_path / "out" / "model.json").is_file()



def test_nplm_trains_and_scores_like_the_recurrent_models(corpus, tmp_path):
    """Bengio's NPLM through the same train_loop: every valid token scored once, training perplexity falls,
    and the saved model reloads through load_model."""
    from lmpipe.lm.nplm import NPLM
    from lmpipe.lm.train import load_model

    job = _job(corpus, tmp_path, epochs=6, schedule="none", eval_columns=2, optimizer="adam", lr=0.01,
               model={"kind": "nplm", "context": 3, "hidden": 24, "emb_dim": 8})  # fmt: skip
    out = train_loop(to_config(job))
    assert out["perplexity"]["valid"]["tokens"] == sum(len(s) + 1 for s in read_sentences(job.valid, np.int64))
    assert out["epochs"][-1]["train_perplexity"] < 0.7 * out["epochs"][0]["train_perplexity"]
    counts = Vocab.load(Path(job.vocab_path)).counts
    assert isinstance(load_model(tmp_path / "out", counts), NPLM)

@pytest.mark.parametrize(
    "kind,optimizer,model",
    [("lstm", "sgd", {"dropout": 0.3, "layers": 2}), ("gru", "adam", {"softmax": "class", "classes": 4})],
)
def test_killed_run_resumes_to_the_same_final_metrics(corpus, tmp_path, kind, optimizer, model):
    """Stopped after epoch 2 of 3 (checkpoint kept), the rerun loads it and ends with the uninterrupted run's
    model and metrics: optimiser state, schedule, history and dropout RNG are restored."""
    settings = {
        "optimizer": optimizer,
        "lr": 1.0 if optimizer == "sgd" else 0.01,
        "model": {"kind": kind, **model},
    }
    reference = train_loop(to_config(_job(corpus, tmp_path / "ref", **settings)))
    job = _job(corpus, tmp_path / "killed", **settings)
    with pytest.raises(StopAfterEpoch):
        train_loop(to_config(dataclasses.replace(job, stop_after_epoch=2)))
    assert not (tmp_path / "killed" / "out").exists()
    assert [p.name for p in (tmp_path / "killed" / "ck").glob("epoch-*")] == ["epoch-002"]
    resumed = train_loop(to_config(job))
    assert resumed["resumed_after_epoch"] == 2 and len(resumed["epochs"]) == 3
    assert resumed["epochs"] == [
        {
            **e,
            "seconds": r["seconds"],
            "tokens_per_second": r["tokens_per_second"],
            "valid_seconds": r["valid_seconds"],
        }
        for e, r in zip(reference["epochs"], resumed["epochs"], strict=True)
    ]
    assert resumed["perplexity"] == reference["perplexity"]
    import torch

    a = torch.load(tmp_path / "ref" / "out" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "out" / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(corpus, tmp_path):
    """An IRNN whose rate explodes in epoch 2 without clipping: FloatingPointError naming step, epoch and a fix, on the
    first non-finite step; epoch 1's checkpoint stays on disk untouched."""
    import torch

    job = _job(corpus, tmp_path, lr=0.01, clip=0.0, epochs=3, schedule="none", model={"kind": "irnn"})
    with pytest.raises(StopAfterEpoch):
        train_loop(to_config(dataclasses.replace(job, stop_after_epoch=1)))
    state_file = tmp_path / "ck" / "epoch-001" / "state.pt"
    state = torch.load(state_file, weights_only=True)
    state["shared"]["schedule"]["lr"] = 1e3  # as if the rate had been raised far too high after epoch 1: ReLUs blow up
    torch.save(state, state_file)
    before = state_file.read_bytes()
    with pytest.raises(
        FloatingPointError, match=r"at step \d+ \(epoch 2, batch [12]\).*epoch 1\); lower lm lr .* set clip"
    ):
        train_loop(to_config(job))
    assert [p.name for p in (tmp_path / "ck").glob("epoch-*")] == ["epoch-001"]
    assert state_file.read_bytes() == before and not (tmp_path / "out").exists()


def test_schedules_plateau_fixed_and_early_stopping():
    """Mikolov: lr / factor when validation does not improve; Zaremba: halved per epoch after epoch 4; patience."""
    plateau = TrainConfig(lr=1.0, schedule="plateau", lr_factor=4.0, patience=2)
    s = Schedule(lr=1.0)
    for epoch, ppl in enumerate([100.0, 90.0, 95.0, 89.0, 89.5, 89.6]):
        s.start_epoch(plateau, epoch)
        s.end_epoch(plateau, epoch, ppl)
    assert s.lr == pytest.approx(1 / 64) and s.best == 89.0 and s.best_epoch == 4 and s.stopped
    zaremba = TrainConfig(lr=1.0, schedule="fixed", decay_after=4, lr_decay=0.5)
    rates = [Schedule(lr=1.0).start_epoch(zaremba, e) for e in range(13)]
    assert rates[:4] == [1.0] * 4 and rates[4] == 0.5 and rates[12] == pytest.approx(0.5**9)


def test_read_sentences_round_trip(corpus):
    _, shards, _ = corpus
    sentences = read_sentences(tuple(map(str, shards["valid"])), np.int64)
    assert len(sentences) == 8 and all(isinstance(s, np.ndarray) and s.dtype == np.int64 for s in sentences)


BASE = {"name": "t", "corpus": {"train": "x.txt"}}


@pytest.mark.parametrize(
    "models,message",
    [
        ([{"name": "a", "layers": 5}], r"lm\.models\[0\]\.layers: bad value 5"),
        ([{"name": "a", "bptt": 0}], r"lm\.models\[0\]\.bptt: bad value 0"),
        ([{"name": "a", "dropout": 1.0}], r"lm\.models\[0\]\.dropout: bad value 1\.0"),
        ([{"name": "a", "hidden": 0}], r"lm\.models\[0\]\.hidden: bad value 0"),
        ([{"name": "a"}, {"name": "a"}], r"lm\.models\[1\]\.name: bad value 'a'"),
        (
            [{"name": "a", "kind": "gru", "forget_bias": 1.0}],
            r"forget_bias: bad value 1\.0; allowed: 0 for kind 'gru'",
        ),
        ([{"name": "a", "tie": True, "softmax": "adaptive"}], r"lm\.models\[0\]\.tie"),
        ([{"name": "a", "freeze_embeddings": True}], r"freeze_embeddings: bad value True"),
        (
            [{"name": "a", "kind": "transformer"}],
            r"lm\.models\[0\]\.kind: bad value 'transformer'; allowed: one of 'rnn'",
        ),
        ([{"name": "a", "optimizer": "adam", "momentum": 0.9}], r"momentum"),
        ([{"name": "a", "cutoffs": [10, 5]}], r"cutoffs"),
        ([{"name": "a/b"}], r"lm\.models\[0\]\.name"),
        ([], r"lm\.models: bad value \[\]"),
    ],
)
def test_bad_lm_spec_values_name_key_and_value(models, message):
    with pytest.raises(SpecError, match=message):
        parse_spec({**BASE, "lm": {"models": models}}, source="s.yaml")


def test_lm_spec_defaults_are_zaremba_small():
    spec = parse_spec({**BASE, "lm": {"models": [{"name": "lstm"}]}})
    m = spec.lm.model("lstm")
    assert (m.kind, m.layers, m.hidden, m.batch_size, m.bptt, m.lr, m.clip, m.dropout) == (
        "lstm",
        2,
        200,
        20,
        20,
        1.0,
        5.0,
        0.0,
    )
    with pytest.raises(SpecError, match="no model named 'gru'"):
        spec.lm.model("gru")
