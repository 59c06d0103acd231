"""bench/stanford_glove.py's file formats, without a compiler or the network: the cooccur stage's matrix as
Stanford's CREC records (1-based ids, ``struct {int; int; double}``) and vocabulary, the tokenize stage's
shards written back as text, and scoring two systems on their shared vocabulary."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from lmpipe.embeddings.vectors import Vectors
from lmpipe.pipelines.core.schemas import COOC
from lmpipe.pipelines.core.vocab_tsv import write_vocab_tsv


def _run_bench_script(path: Path) -> dict:
    """The script's globals, loaded as Python runs it: its folder first on sys.path (it imports its siblings)."""
    sys.path.insert(0, str(path.parent))
    try:
        return runpy.run_path(str(path))
    finally:
        sys.path.remove(str(path.parent))


BENCH = _run_bench_script(Path(__file__).resolve().parent.parent / "bench" / "stanford_glove.py")


def _cooccur_dir(tmp_path: Path, tokens: list[str], entries: list[tuple[int, int, float]]) -> Path:
    folder = tmp_path / "cooccur"
    (folder / "cooc").mkdir(parents=True)
    write_vocab_tsv(folder / "vocab.tsv", tokens, np.arange(len(tokens), 0, -1) * 10)
    for p, part in enumerate((entries[:2], entries[2:])):
        rows, cols, values = zip(*part, strict=True)
        table = pa.table({"row": rows, "col": cols, "value": values}, schema=COOC)
        with (
            pa.OSFile(str(folder / "cooc" / f"part-{p:04d}.arrow"), "wb") as sink,
            pa.ipc.new_file(sink, COOC) as w,
        ):
            w.write_table(table)
    return folder


def test_crec_records_are_16_bytes_with_one_based_ids(tmp_path):
    entries = [(0, 1, 1.5), (1, 0, 1.5), (2, 2, 0.25), (1, 2, 3.0)]
    folder = _cooccur_dir(tmp_path, ["the", "cat", "sat"], entries)
    stats = BENCH["write_crec"](folder, tmp_path / "x.bin", tmp_path / "vocab.txt")
    assert stats == {"vocab": 3, "entries": 4}
    raw = (tmp_path / "x.bin").read_bytes()
    assert len(raw) == 4 * 16  # glove.c derives the entry count from the file size / sizeof(CREC)
    first = np.frombuffer(raw[:16], np.dtype([("w1", "<i4"), ("w2", "<i4"), ("val", "<f8")]))[0]
    assert (int(first["w1"]), int(first["w2"]), float(first["val"])) == (1, 2, 1.5)
    records = np.fromfile(tmp_path / "x.bin", BENCH["CREC"])
    assert [(int(a), int(b), float(v)) for a, b, v in records] == [(r + 1, c + 1, v) for r, c, v in entries]
    # line k of the vocabulary is word id k (1-based), "word count" as vocab_count writes it
    assert (tmp_path / "vocab.txt").read_text().splitlines() == ["the 30", "cat 20", "sat 10"]


def test_a_vocabulary_word_unk_is_refused(tmp_path):
    folder = _cooccur_dir(tmp_path, ["<unk>", "cat", "sat"], [(0, 1, 1.0), (1, 0, 1.0), (1, 2, 1.0)])
    with pytest.raises(ValueError, match="Stanford glove refuses"):
        BENCH["write_crec"](folder, tmp_path / "x.bin", tmp_path / "vocab.txt")


def test_token_text_is_one_line_per_row_without_specials(tmp_path):
    from lmpipe.pipelines.core.schemas import TOKENS
    from lmpipe.pipelines.core.vocab import Vocab

    tok = tmp_path / "tokenize"
    (tok / "train").mkdir(parents=True)
    Vocab(pa.array(["<unk>", "<s>", "</s>", "a", "b"]), np.array([1, 0, 0, 5, 2], np.uint64)).save(
        tok / "vocab.tsv"
    )
    table = pa.table(
        {"source": [0, 0, 0], "position": [0, 1, 2], "doc": [0, 0, 0], "ids": [[3, 4, 0, 3], [0], [4]]},
        schema=TOKENS,
    )
    with pa.OSFile(str(tok / "train" / "part-00000.arrow"), "wb") as sink, pa.ipc.new_file(sink, TOKENS) as w:
        w.write_table(table)
    stats = BENCH["write_token_text"](tok, tmp_path / "tokens.txt")
    # <unk> (id 0) is left out, as the cooccur stage skips it without giving it a position
    assert (tmp_path / "tokens.txt").read_text() == "a b a\nb\n"
    assert stats == {"lines": 2, "tokens": 4}


def test_common_vocabulary_scoring_uses_the_same_rows():
    a = Vectors(["x", "y", "z"], np.eye(3, dtype=np.float32))
    b = Vectors(["z", "x", "w"], np.arange(9, dtype=np.float32).reshape(3, 3))
    report = BENCH["vocab_report"]({"a": a, "b": b})
    assert report["common"] == ["x", "z"] and report["extra_count"] == {"a": 1, "b": 1}
    sub = BENCH["restrict"](b, report["common"])
    assert sub.tokens == ["x", "z"] and np.array_equal(sub.matrix, b.matrix[[1, 0]])
