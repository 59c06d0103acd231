"""The lm stage on a real local Ray: 2 Ray Train workers (DDP over gloo), two models, vectors imported with a
projection, KenLM-accounted perplexities in the manifest, `lmpipe generate`, fail-fast checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lmpipe.embeddings.formats import save_word2vec
from lmpipe.embeddings.vectors import Vectors
from lmpipe.pipelines.cli import main
from lmpipe.pipelines.core.vocab import Vocab
from lmpipe.pipelines.run import run_pipeline
from lmpipe.pipelines.spec import SpecError, load_spec

from .conftest import SPECS


def _spec(*overrides: str):
    return load_spec(SPECS / "tiny.yaml", overrides=list(overrides))


@pytest.fixture(scope="module")
def tokenized(ray_local, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("lm-tokenized")
    run_pipeline(_spec(), run_dir=run, stages=["tokenize"])
    return run


@pytest.fixture(scope="module")
def vectors_file(tokenized, tmp_path_factory) -> tuple[Path, int]:
    """word2vec text vectors of dimension 8 for every other vocabulary word (plus one word the corpus lacks)."""
    tokens = Vocab.load(tokenized / "tokenize" / "vocab.tsv").tokens.to_pylist()
    words = tokens[3::2] + ["notinthecorpus"]
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("vectors") / "vectors.txt"
    save_word2vec(Vectors(words, rng.normal(size=(len(words), 8)).astype(np.float32)), path)
    return path, len(words) - 1


MODELS = (
    "lm.models=[{name: lstm, kind: lstm, emb_dim: 16, hidden: 16, layers: 2, tie: true, dropout: 0.1, batch_size: 4,"
    " bptt: 10, epochs: 2, schedule: plateau},"
    " {name: gru-w2v, kind: gru, emb_dim: 16, hidden: 12, layers: 1, softmax: class, batch_size: 4, bptt: 10,"
    " epochs: 2, schedule: fixed, embeddings: VEC, embeddings_format: word2vec, dim_mismatch: project,"
    " freeze_embeddings: true}]"
)


@pytest.fixture(scope="module")
def two_workers(tokenized, vectors_file, tmp_path_factory) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("lm-run")
    shutil.copytree(tokenized / "tokenize", run / "tokenize")
    spec = _spec(MODELS.replace("VEC", str(vectors_file[0])), "lm.workers=2")
    return run, run_pipeline(spec, run_dir=run, stages=["lm"])["lm"]


def test_two_workers_train_both_models_and_score_like_kenlm(two_workers, vectors_file):
    """Both models trained by 2 DDP workers; valid/test scored on KenLM's token count (words + one </s> per
    sentence, OOVs as <unk>); imported vectors found/missing counted; checkpoints and Ray storage removed."""
    run, manifest = two_workers
    splits = json.loads((run / "tokenize" / "manifest.json").read_text())["outputs"]["splits"]
    assert manifest["outputs"]["models"] == ["lstm", "gru-w2v"]
    workers = manifest["training"]["workers"]
    assert workers["count"] == 2 and len({w["pid"] for w in workers["processes"]}) == 2
    for name, m in manifest["models"].items():
        assert m["world_size"] == 2 and [e["epoch"] for e in m["epochs"]] == [1, 2]
        for split in ("valid", "test"):
            ev = m["perplexity"][split]
            assert ev["tokens"] == splits[split]["tokens"] + splits[split]["sentences"]
            assert ev["sentences"] == splits[split]["sentences"] and ev["oov"] == splits[split]["oov_tokens"]
            assert 1 < ev["perplexity"] < 5 * manifest_vocab(run) and np.isfinite(ev["bits_per_byte"])
            assert "carried" in ev["hidden_state"]
        assert (run / "lm" / name / "model.pt").is_file()
        assert m["epochs"][-1]["train_tokens"] > 0 and m["epochs"][-1]["tokens_per_second"] > 0
    init = manifest["models"]["gru-w2v"]["embedding_init"]
    assert init["found"] == vectors_file[1] and init["found"] + init["missing"] == manifest_vocab(run)
    assert init["vectors_dim"] == 8 and manifest["models"]["gru-w2v"]["config"]["vectors_dim"] == 8
    params = manifest["models"]["gru-w2v"]["parameters"]
    assert params["trainable"] == params["total"] - manifest_vocab(run) * 8  # the frozen embedding
    assert manifest["models"]["lstm"]["embedding_init"] is None
    assert not (run / ".checkpoints").exists() and not (run / ".ray-train").exists()


def test_token_scores_and_report_rows(two_workers, tmp_path):
    """Every model's per-token scores sum to its manifest figures; the models reach the report with their
    learning curves, and two of them can be mixed (weights fitted on valid) without re-running either."""
    from lmpipe.lm.mixture import apply, fit_em
    from lmpipe.lm.token_scores import read_token_scores
    from lmpipe.pipelines.report import write_report
    from lmpipe.pipelines.report_rows import collect
    from lmpipe.pipelines.run_scores import find_token_scores

    run, manifest = two_workers
    found = find_token_scores(run)
    for name, m in manifest["models"].items():
        for split in ("valid", "test"):
            score = read_token_scores(found[name][split]).corpus_score()
            assert score.tokens == m["perplexity"][split]["tokens"]
            # the driver scores all columns in one batch, the workers their share: float32 rounding differs
            assert score.perplexity() == pytest.approx(m["perplexity"][split]["perplexity"], rel=1e-6)
    report = collect(run)
    assert {r.model for r in report.models} >= {"lstm", "gru-w2v"}
    assert {(c.model, c.epoch) for c in report.curves} >= {("lstm", 1), ("lstm", 2)}
    assert "valid_ppl.png" in write_report(report, tmp_path / "report")["files"]
    valid = {n: read_token_scores(found[n]["valid"]) for n in ("lstm", "gru-w2v")}
    test = {n: read_token_scores(found[n]["test"]) for n in ("lstm", "gru-w2v")}
    weights = fit_em(valid)
    mixed = apply(test, weights).corpus_score().perplexity()
    assert mixed <= max(s.corpus_score().perplexity() for s in test.values())


def manifest_vocab(run: Path) -> int:
    return len(Vocab.load(run / "tokenize" / "vocab.tsv"))


def test_generate_samples_reproducibly_from_a_named_model(two_workers, capsys):
    run, _ = two_workers
    args = [
        "generate",
        str(run),
        "--model",
        "lstm",
        "--prompt",
        "and god said",
        "--max-tokens",
        "12",
        "--seed",
        "3",
    ]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first and first.startswith("and god said")
    assert len(first.split()) >= 4
    assert main([*args[:3], "gru-w2v", *args[4:], "--temperature", "0"]) == 0
    assert main(["generate", str(run), "--model", "nope", "--prompt", "x"]) == 2
    assert "no model named 'nope'" in capsys.readouterr().err


def test_vectors_of_another_dimension_fail_before_training(tokenized, vectors_file, tmp_path):
    """dim_mismatch: error refuses 8-dimensional vectors for emb_dim 16 in check(), naming both fixes."""
    shutil.copytree(tokenized / "tokenize", tmp_path / "tokenize")
    models = MODELS.replace("VEC", str(vectors_file[0])).replace(
        "dim_mismatch: project", "dim_mismatch: error"
    )
    with pytest.raises(
        SpecError, match=r"lm\.models\[1\]\.embeddings: the vectors have dimension 8.*emb_dim: 8.*project"
    ):
        run_pipeline(_spec(models), run_dir=tmp_path, stages=["lm"])
    assert not (tmp_path / ".checkpoints").exists() and not (tmp_path / "lm").exists()
    with pytest.raises(FileNotFoundError, match="needs the sgns stage"):
        run_pipeline(_spec("lm.models=[{name: a, embeddings: sgns}]"), run_dir=tmp_path, stages=["lm"])
