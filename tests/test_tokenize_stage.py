"""The tokenize stage end to end on a real local Ray instance (2 workers)."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from lmpipe.pipelines.core.shards import iter_batches, read_ids
from lmpipe.pipelines.core.vocab import Vocab
from lmpipe.pipelines.ingest import InputError
from lmpipe.pipelines.run import run_pipeline
from lmpipe.pipelines.spec import load_spec, parse_spec

from .conftest import SPECS

pytestmark = pytest.mark.usefixtures("ray_local")


def _run(spec, run_dir, **kw):
    return run_pipeline(spec, run_dir=run_dir, stages=["tokenize"], **kw)["tokenize"]


def _shard_hashes(stage_dir: Path) -> dict[str, str]:
    manifest = json.loads((stage_dir / "manifest.json").read_text())
    hashes = {f["path"]: f["sha256"] for f in manifest["outputs"]["files"]}
    for items in manifest["outputs"]["shards"].values():
        hashes.update({s["path"]: s["sha256"] for s in items})
    return hashes


def test_tiny_round_trip_determinism_and_resume(tmp_path):
    spec = load_spec(SPECS / "tiny.yaml")
    manifest = _run(spec, tmp_path / "a")
    stage = tmp_path / "a" / "tokenize"
    vocab = Vocab.load(stage / "vocab.tsv")
    words = vocab.tokens.to_pylist()
    index = {w: i for i, w in enumerate(words)}
    # Brute force: the same files, lowercased and split, mapped through the vocabulary.
    for split in ("train", "valid", "test"):
        lines = [ln.lower().split() for ln in (SPECS / "tiny" / f"{split}.txt").read_text().splitlines() if ln.strip()]
        expected = [[index.get(w, 0) for w in ln] for ln in lines]
        assert [a.tolist() for a in read_ids(stage, split)] == expected
    train_counts = Counter(w for ln in (SPECS / "tiny" / "train.txt").read_text().lower().split("\n") for w in ln.split())
    assert all(train_counts[w] >= 2 for w in words[3:])  # min_count 2
    assert len(words) == 3 + sum(1 for c in train_counts.values() if c >= 2)
    assert manifest["outputs"]["splits"]["train"]["shards"] > 1  # small shard_mb: several chunks
    assert manifest["lines"]["lines_read"] == manifest["lines"]["lines_kept"] == 760
    positions = [b.column("position").to_pylist() for b in iter_batches(stage, "valid")]
    assert positions[0][0] == 0 and all(np.diff(np.concatenate(positions)) > 0)

    # Same input and spec -> byte-identical outputs, whatever the number of workers.
    one_worker = load_spec(SPECS / "tiny.yaml", overrides=["tokenize.workers=1"])
    _run(one_worker, tmp_path / "b")
    assert _shard_hashes(stage) == _shard_hashes(tmp_path / "b" / "tokenize")

    # Resume: an up-to-date stage is skipped; --force recomputes it.
    mtime = (stage / "manifest.json").stat().st_mtime_ns
    again = _run(spec, tmp_path / "a")
    assert again["skipped"] is True and (stage / "manifest.json").stat().st_mtime_ns == mtime
    forced = _run(spec, tmp_path / "a", force=["tokenize"])
    assert forced["skipped"] is False and (stage / "manifest.json").stat().st_mtime_ns != mtime
    assert _shard_hashes(stage) == _shard_hashes(tmp_path / "b" / "tokenize")
    changed = _run(load_spec(SPECS / "tiny.yaml", overrides=["vocab.min_count=3"]), tmp_path / "a")
    assert changed["skipped"] is False
    assert not list((tmp_path / "a").glob(".tokenize.*"))


def test_ptb_vocabulary_counts_equal_a_brute_force_counter(tmp_path, mirror):
    spec = load_spec(SPECS / "ptb.yaml")
    manifest = _run(spec, tmp_path, mirror=str(mirror))
    counts = Counter()
    lines = (mirror / "ptb" / "ptb.train.txt").read_text().splitlines()
    for line in lines:
        counts.update("[unk]" if w == "<unk>" else w for w in line.split())
    vocab = Vocab.load(tmp_path / "tokenize" / "vocab.tsv")
    got = dict(zip(vocab.tokens.to_pylist()[3:], vocab.counts.tolist()[3:], strict=True))
    assert got == dict(counts)
    assert vocab.counts[2] == len(lines) == 42068
    order = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0].encode()))
    assert vocab.tokens.to_pylist()[3:] == [w for w, _ in order]
    splits = manifest["outputs"]["splits"]
    assert (splits["train"]["tokens"], splits["valid"]["tokens"], splits["test"]["tokens"]) == (887521, 70390, 78669)
    assert splits["valid"]["oov_tokens"] == splits["test"]["oov_tokens"] == 0
    for split in ("train", "valid", "test"):  # no blank line in PTB: the lines' bytes + newlines = the file
        assert splits[split]["text_bytes"] == (mirror / "ptb" / f"ptb.{split}.txt").stat().st_size
    all_unk = sum((mirror / "ptb" / f"ptb.{s}.txt").read_text().split().count("<unk>") for s in ("train", "valid", "test"))
    assert manifest["lines"]["specials"]["specials_renamed"] == all_unk


def _bad_corpus(tmp_path: Path) -> Path:
    root = tmp_path / "bad"
    root.mkdir()
    (root / "a.txt").write_bytes(
        b"a clean line\n"  # kept
        b"\n   \n"  # 2 blank
        b"bad \xff byte here\n"  # kept, replaced
        b"" + b"x" * 300 + b"\n"  # too long
        b"with <unk> and <s> inside\n"  # kept (map: <unk> special, <s> dropped)
        b"<s> </s>\n"  # empty after dropping specials
    )
    with gzip.open(root / "b.txt.gz", "wb") as fh:
        fh.write(b"gzipped line one\ngzipped line two\n")
    (root / "c.jsonl").write_text(json.dumps({"text": "json line"}) + "\n" + "{oops\n")
    return root


def test_bad_input_corpus_is_fully_accounted_for(tmp_path):
    root = _bad_corpus(tmp_path)
    data = {
        "name": "bad",
        "corpus": {"train": str(root)},
        "normalize": {"max_line_bytes": 100, "literal_specials": "map"},
    }
    manifest = _run(parse_spec(data), tmp_path / "run")
    lines = manifest["lines"]
    assert lines["lines_read"] == 7 + 2 + 2
    assert lines["lines_rejected"] == {"bad_record": 1, "blank": 2, "empty_after_tokenization": 1, "too_long": 1}
    assert lines["lines_kept"] == 6
    assert lines["lines_read"] == lines["lines_kept"] + sum(lines["lines_rejected"].values())
    assert lines["lines_utf8_replaced"] == 1
    assert lines["specials"] == {"specials_dropped": 3, "specials_mapped_unk": 1}
    vocab = Vocab.load(tmp_path / "run" / "tokenize" / "vocab.tsv")
    ids = [a.tolist() for a in read_ids(tmp_path / "run" / "tokenize", "train")]
    words = vocab.tokens.to_pylist()
    assert [words[i] for i in ids[2]] == ["with", "<unk>", "and", "inside"]
    assert vocab.counts[0] == 1  # the literal <unk>


@pytest.mark.parametrize(
    ("make", "overrides", "message"),
    [
        (lambda d: d / "missing.txt", [], r"missing\.txt: no such file"),
        (lambda d: (d / "empty.txt").write_text("") and d / "empty.txt" or d / "empty.txt", [], "every input is empty"),
        (lambda d: (d / "blank.txt").write_text("\n \n") and d / "blank.txt", [], "no tokens in the training input"),
        (lambda d: (d / "s.txt").write_text("ok\nhas <unk> here\n") and d / "s.txt", [], r"s\.txt: byte offset 3: the text holds a literal"),
        (lambda d: (d / "u.txt").write_bytes(b"ok\n\xc3(\n") and d / "u.txt", ["normalize.encoding_errors=strict"], r"u\.txt: invalid UTF-8 at byte offset 3"),
        (
            lambda d: (d / "t.txt.gz").write_bytes(gzip.compress(b"word " * 50000)[:200]) and d / "t.txt.gz",
            [],
            r"t\.txt\.gz: truncated gzip",
        ),
    ],
)
def test_bad_inputs_stop_with_an_error_naming_the_file(tmp_path, make, overrides, message):
    path = make(tmp_path)
    spec = parse_spec({"name": "x", "corpus": {"train": str(path)}}, overrides=overrides)
    with pytest.raises(InputError, match=message):
        _run(spec, tmp_path / "run")
    assert not (tmp_path / "run" / "tokenize").exists()
    assert not list((tmp_path / "run").glob(".tokenize.tmp-*"))


def test_sentencepiece_stage_and_fraction_split(tmp_path):
    data = {
        "name": "sp",
        "corpus": {"train": str(SPECS / "tiny" / "train.txt"), "documents": "line", "split": {"valid": 0.1, "test": 0.1}},
        "tokenizer": {"kind": "sentencepiece", "sp_vocab_size": 300, "sp_sample_lines": 400},
        "tokenize": {"shard_mb": 0.02},
    }
    manifest = _run(parse_spec(data), tmp_path)
    stage = tmp_path / "tokenize"
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(stage / "tokenizer.model"))
    vocab = Vocab.load(stage / "vocab.tsv")
    assert len(vocab) == sp.get_piece_size() and vocab.tokens.to_pylist()[:3] == ["<unk>", "<s>", "</s>"]
    splits = manifest["outputs"]["splits"]
    total = sum(s["sentences"] for s in splits.values())
    assert total == 600 and 30 <= splits["valid"]["sentences"] <= 90 and 30 <= splits["test"]["sentences"] <= 90
    train = read_ids(stage, "train")
    assert int(vocab.counts[3:].sum()) + int(vocab.counts[0]) == sum(len(a) for a in train)
    lines = set((SPECS / "tiny" / "train.txt").read_text().splitlines())
    assert all(sp.decode(a.tolist()) in lines for a in train[:50])
