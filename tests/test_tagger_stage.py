"""The tagger stage on local Ray: 2 workers end to end, resume after a kill, bad input, ``lmpipe tune``."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from lmpipe.cluster.training import StopAfterEpoch
from lmpipe.pipelines.cli import main
from lmpipe.pipelines.conll import ConllError, read_predictions
from lmpipe.pipelines.run import run_pipeline
from lmpipe.pipelines.spec import SpecError, parse_spec
from lmpipe.pipelines.stages.tagger import STOP_ENV

NAMES = {"John": "PER", "Mary": "PER", "Smith": "PER", "Paris": "LOC", "London": "LOC", "Reuters": "ORG"}
WORDS = ["the", "cat", "saw", "in", "met", "visited", "big", "a", "city", "said"]


def _sentence(rng: random.Random) -> list[tuple[str, str, str]]:
    """(token, POS, NER in IOB1): names are tagged by a fixed dictionary, two adjacent names merge into one chunk."""
    out = []
    for _ in range(rng.randint(3, 8)):
        if rng.random() < 0.35:
            name = rng.choice(list(NAMES))
            out.append((name, "NNP", f"I-{NAMES[name]}"))
        else:
            word = rng.choice(WORDS)
            out.append((word, "NN" if word in ("cat", "city") else "VB" if word.endswith("d") else "DT", "O"))
    return out


def _write(path: Path, sentences: list[list[tuple[str, str, str]]]) -> Path:
    lines = ["-DOCSTART- -X- O O", ""]
    for s in sentences:
        lines += [f"{t} {p} I-NP {n}" for t, p, n in s] + [""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, str]:
    rng = random.Random(0)
    root = tmp_path_factory.mktemp("conll")
    valid = [_sentence(rng) for _ in range(20)] + [[("Berlin", "NNP", "I-GPE"), ("said", "VB", "O")]]
    return {
        "train": str(_write(root / "eng.train", [_sentence(rng) for _ in range(80)])),
        "valid": str(_write(root / "eng.testa", valid)),  # I-GPE never occurs in train
        "test": str(_write(root / "eng.testb", [_sentence(rng) for _ in range(20)])),
    }


def corpus_words(path: str) -> list[str]:
    return [line.split()[0] for line in Path(path).read_text(encoding="utf-8").splitlines()
            if line and not line.startswith("-DOCSTART-")]  # fmt: skip


def spec_data(corpus: dict[str, str], **tagger) -> dict:
    task = {"format": "conll2003", **corpus}
    return {
        "name": "tagger-test",
        "corpus": {"train": corpus["train"]},
        "stages": ["tagger"],
        "tagger": {
            "tasks": [{**task, "name": "ner", "column": "ner"}, {**task, "name": "pos", "column": "pos"}],
            "dim": 8, "hidden": 16, "epochs": 3, "batch_size": 8, "optimizer": "adam", "lr": 0.02, **tagger,
        },
    }  # fmt: skip


def test_two_workers_end_to_end(ray_local, corpus, tmp_path):
    """2 DDP workers, window + multitask: predictions files score the same with seqeval, unknown tags listed,
    a rerun is skipped."""
    from seqeval.metrics import f1_score

    spec = parse_spec(spec_data(corpus, workers=2, model="window", window=3, epochs=8), source="test")
    m = run_pipeline(spec, run_dir=tmp_path / "run")["tagger"]
    tr = m["training"]
    assert tr["world_size"] == 2 and tr["workers"]["count"] == 2
    assert len({w["pid"] for w in tr["workers"]["processes"]}) == 2
    ner = m["tasks"]["ner"]
    assert ner["unknown_tags"] == {"valid": {"I-GPE": 1}}
    assert "I-GPE" not in ner["tags"] and ner["scheme"] == {"file": "iob1", "model": "bioes"}
    gold, pred = read_predictions(tmp_path / "run" / "tagger" / "ner" / "valid.conll")
    assert ["Berlin", "I-GPE"] == (tmp_path / "run/tagger/ner/valid.conll").read_text().split("\n\n")[
        -2
    ].split()[:2]
    assert ner["scores"]["valid"]["overall"]["f1"] == pytest.approx(100 * f1_score(gold, pred))
    assert ner["scores"]["valid"]["overall"]["f1"] > 50  # learnt something from a trivial task
    assert m["tasks"]["pos"]["scores"]["test"]["accuracy"] > 80
    assert len(gold) == 21 and len(pred[-1]) == 2
    again = run_pipeline(spec, run_dir=tmp_path / "run")["tagger"]
    assert again["skipped"]


def test_resume_after_a_kill_ends_as_an_uninterrupted_run(corpus, tmp_path, monkeypatch):
    """A run stopped after epoch 1's checkpoint, rerun, resumes there and writes the same predictions.

    One worker is the same code in or out of Ray Train: ``fit`` runs the loop in this process here, which keeps
    the three runs free of Ray Train's worker start-up (the 2-worker test covers Ray)."""
    import lmpipe.pipelines.stages.tagger as stage

    monkeypatch.setattr("lmpipe.cluster.training.fit", lambda loop, config, **kw: loop(config))
    monkeypatch.setattr("lmpipe.cluster.training.check_resources", lambda *a, **kw: None)
    monkeypatch.setattr("lmpipe.cluster.connect.connect", lambda *a, **kw: None)
    spec = parse_spec(spec_data(corpus, model="rnn", crf=True, dropout=0.3, chars="cnn"), source="test")
    whole = run_pipeline(spec, run_dir=tmp_path / "a")["tagger"]
    monkeypatch.setenv(STOP_ENV, "1")
    with pytest.raises(StopAfterEpoch):
        run_pipeline(spec, run_dir=tmp_path / "b")
    assert list((tmp_path / "b" / ".checkpoints").glob("tagger-*/epoch-001/meta.json"))
    assert not (tmp_path / "b" / "tagger").exists()
    monkeypatch.delenv(STOP_ENV)
    resumed = run_pipeline(spec, run_dir=tmp_path / "b")["tagger"]
    assert resumed["training"]["resumed_after_epoch"] == 1 and whole["training"]["resumed_after_epoch"] == 0
    assert [e["train_loss"] for e in resumed["training"]["epochs"]] == [
        e["train_loss"] for e in whole["training"]["epochs"]
    ]
    for task in ("ner", "pos"):
        for split in ("valid", "test"):
            a = (tmp_path / "a" / "tagger" / task / f"{split}.conll").read_text()
            assert a == (tmp_path / "b" / "tagger" / task / f"{split}.conll").read_text()
    assert not list((tmp_path / "b" / ".checkpoints").glob("tagger-*"))
    chars = json.loads((tmp_path / "b" / "tagger" / "chars.json").read_text(encoding="utf-8"))
    assert chars[:2] == ["<pad>", "<unk>"] and set(chars[2:]) == set("".join(corpus_words(corpus["train"])))
    assert "char-cnn" in " ".join(stage.summary(resumed))


def test_a_malformed_line_fails_the_stage_with_file_and_line(ray_local, corpus, tmp_path):
    bad = tmp_path / "bad.train"
    bad.write_text("EU NNP I-NP I-ORG\nrejects VBZ\n", encoding="utf-8")
    spec = parse_spec(spec_data({**corpus, "train": str(bad)}), source="test")
    with pytest.raises(ConllError, match=rf"{bad}:2: expected 4"):
        run_pipeline(spec, run_dir=tmp_path / "run")


def test_stage_checks_fail_before_any_work(corpus, tmp_path):
    with pytest.raises(SpecError, match="tagger.tasks: no task"):
        run_pipeline(parse_spec({**spec_data(corpus), "tagger": {}}, source="t"), run_dir=tmp_path / "r")
    no_valid = {**corpus, "valid": None}
    with pytest.raises(SpecError, match=r"tagger.tasks\[0\].*needs a valid split"):
        run_pipeline(parse_spec(spec_data(no_valid), source="t"), run_dir=tmp_path / "r")
    with pytest.raises(FileNotFoundError, match=r"tagger.tasks\[0\].test"):
        run_pipeline(
            parse_spec(spec_data({**corpus, "test": str(tmp_path / "nope")}), source="t"),
            run_dir=tmp_path / "r",
        )
    with pytest.raises(FileNotFoundError, match="tagger.vectors: 'sgns' needs the sgns stage"):
        run_pipeline(parse_spec(spec_data(corpus, vectors="sgns"), source="t"), run_dir=tmp_path / "r")


def test_vectors_initialise_the_lookup_table(corpus, tmp_path):
    """Imported GloVe text: lowercased lookup (the file is lowercase), found rows copied, others random."""
    import numpy as np

    from lmpipe.lm.tagging.train import build_model
    from lmpipe.pipelines.stages import StageContext
    from lmpipe.pipelines.stages.tagger import prepare

    vec = tmp_path / "v.txt"
    vec.write_text("john 1 2 3 4 5 6 7 8\nparis 8 7 6 5 4 3 2 1\nzebra 0 0 0 0 0 0 0 1\n", encoding="utf-8")
    spec = parse_spec(spec_data(corpus, vectors=str(vec), vectors_format="glove"), source="t")
    ctx = StageContext(spec=spec, run_dir=tmp_path / "run")
    prepared = prepare(ctx, tmp_path / "data", tmp_path / "out", tmp_path / "ckpt")
    vocab = prepared.vocab
    assert vocab.lowercase and "zebra" in vocab.tokens and "John" not in vocab.tokens
    model, init = build_model(prepared.job, __import__("torch").device("cpu"))
    assert init == {"found": 3, "random": len(vocab.tokens) - 1 - 3}  # <unk> is random too
    row = model.words.weight[vocab.tokens.index("paris")].detach().numpy()
    assert np.array_equal(row, np.arange(8, 0, -1, dtype=np.float32))


def test_lmpipe_tune_writes_the_best_settings(ray_local, corpus, tmp_path):
    """Random search with ASHA: 2 trials, the table and the best settings beside it."""
    import yaml

    spec_path = tmp_path / "spec.yaml"
    data = spec_data(corpus, epochs=2, tune={"grace_period": 1, "hidden": [8, 16]})
    data["tagger"]["tasks"] = data["tagger"]["tasks"][:1]
    spec_path.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert (
        main(
            [
                "tune",
                str(spec_path),
                "--stage",
                "tagger",
                "--samples",
                "2",
                "--run-dir",
                str(tmp_path / "run"),
            ]
        )
        == 0
    )
    out = tmp_path / "run" / "tune-tagger"
    best = json.loads((out / "best.json").read_text())
    rows = (out / "trials.tsv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("lr\thidden\tdropout\twindow\tbest")
    assert best["params"]["hidden"] in (8, 16) and 0.003 <= best["params"]["lr"] <= 0.1
    assert best["score"] == pytest.approx(
        max(float(r.split("\t")[4]) for r in rows[1:]), rel=1e-5
    )  # tsv: 6 digits
    assert yaml.safe_load((out / "best.yaml").read_text())["tagger"] == best["params"]
