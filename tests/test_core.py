"""The ground floor: one vocab.tsv codec (bytes and strictness), one TOKENS shard reader, one text normaliser."""

from __future__ import annotations

import unicodedata

import numpy as np
import pyarrow as pa
import pytest

from lmpipe.pipelines.core.files import read_table, sha256_file, write_table
from lmpipe.pipelines.core.schemas import TOKENS
from lmpipe.pipelines.core.shards import (
    ShardWriter,
    iter_batches,
    numpy_view,
    read_ids,
    read_sentences,
    read_shard,
    shard_batches,
    split_shards,
)
from lmpipe.pipelines.core.text import normalize_line, normalize_lines
from lmpipe.pipelines.core.vocab import TokenCountAccumulator, Vocab, string_array
from lmpipe.pipelines.core.vocab_tsv import read_vocab_tsv, write_vocab_tsv
from lmpipe.pipelines.generate import prompt_ids
from lmpipe.pipelines.ingest import find_sources, plan_chunks, read_chunk
from lmpipe.pipelines.spec import CorpusSpec, NormalizeSpec, parse_spec

# ------------------------------------------------------------------------------------------ vocab.tsv
TOKENS_3 = ["<unk>", "<s>", "</s>", "ħello", "wörld"]


def test_both_writers_give_the_layout_byte_for_byte(tmp_path):
    """The corpus vocabulary (Vocab.save) and a vectors vocabulary (write_vocab_tsv) share one layout."""
    counts = np.array([7, 0, 3, 5, 2], np.uint64)
    Vocab(pa.array(TOKENS_3), counts).save(tmp_path / "a.tsv")
    write_vocab_tsv(tmp_path / "b.tsv", TOKENS_3, counts)
    write_vocab_tsv(tmp_path / "c.tsv", TOKENS_3, None)
    expected = "id\ttoken\tcount\n0\t<unk>\t7\n1\t<s>\t0\n2\t</s>\t3\n3\tħello\t5\n4\twörld\t2\n"
    assert (tmp_path / "a.tsv").read_bytes() == (tmp_path / "b.tsv").read_bytes() == expected.encode("utf-8")
    without_counts = "id\ttoken\tcount\n" + "".join(f"{i}\t{t}\t\n" for i, t in enumerate(TOKENS_3))
    assert (tmp_path / "c.tsv").read_bytes() == without_counts.encode("utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tsv", "b.tsv", "c.tsv"]  # no temporary left
    tokens, back = read_vocab_tsv(tmp_path / "a.tsv")
    assert tokens == TOKENS_3 and back.dtype == np.uint64 and back.tolist() == counts.tolist()
    assert read_vocab_tsv(tmp_path / "c.tsv") == (TOKENS_3, None)
    loaded = Vocab.load(tmp_path / "b.tsv")
    assert loaded.tokens.to_pylist() == TOKENS_3 and loaded.counts.tolist() == counts.tolist()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0\t<unk>\t1\n", r":1: expected header"),  # no header
        ("id\ttoken\tcount\n0\ta\t1\n2\tb\t1\n", r":3: expected .* with id 1"),  # an id skipped
        ("id\ttoken\tcount\n0\ta\t1\t9\n", r":2: expected"),  # a fourth field
        ("id\ttoken\tcount\n0\ta\t-1\n", r":2: count '-1'"),
        ("id\ttoken\tcount\n0\ta\t\u00b2\n", r":2: count '\u00b2'"),  # isdigit() but not a number int() reads
        ("id\ttoken\tcount\r\n0\ta\t1\r\n", r":1: expected header"),  # CRLF: an edited file, not ours
        ("id\ttoken\tcount\n0\ta\t1\n1\tb\t\n", r"some rows have a count and others not"),
    ],
)
def test_reader_is_strict(tmp_path, text, message):
    path = tmp_path / "vocab.tsv"
    path.write_bytes(text.encode("utf-8"))
    with pytest.raises(ValueError, match=message):
        read_vocab_tsv(path)


def test_writer_refuses_tokens_that_would_shift_ids(tmp_path):
    for bad in ("a\tb", "a\nb", "a\rb"):
        with pytest.raises(ValueError, match="contains a tab or newline"):
            write_vocab_tsv(tmp_path / "v.tsv", ["<unk>", bad], None)
        assert not list(tmp_path.iterdir())  # neither the file nor its temporary


def test_a_corpus_vocabulary_needs_counts(tmp_path):
    write_vocab_tsv(tmp_path / "v.tsv", TOKENS_3, None)
    with pytest.raises(ValueError, match="no counts"):
        Vocab.load(tmp_path / "v.tsv")


# ------------------------------------------------------------------------------------------ shards
def _write_split(stage, sentences_per_chunk):
    for chunk, sentences in enumerate(sentences_per_chunk):
        writer = ShardWriter(stage / "train", chunk, max_bytes=1 << 20, compression="zstd", stage_dir=stage)
        n = len(sentences)
        writer.write(
            pa.table(
                {
                    "source": pa.array([0] * n, pa.uint32()),
                    "position": pa.array(range(n), pa.uint64()),
                    "doc": pa.array([0] * n, pa.uint64()),
                    "ids": pa.array(sentences, pa.list_(pa.uint32())),
                },
                schema=TOKENS,
            )
        )
        (info,) = writer.close()
        assert info.rows == n and info.tokens == sum(map(len, sentences))
        assert info.sha256 == sha256_file(stage / info.path)


def test_one_reader_of_token_shards(tmp_path):
    chunks = [[[3, 4, 5], [], [6]], [[7, 8]]]
    _write_split(tmp_path, chunks)
    paths = split_shards(tmp_path, "train")
    assert [p.name for p in paths] == ["part-00000-000.arrow", "part-00001-000.arrow"]
    flat = [s for c in chunks for s in c]
    assert [s.tolist() for s in read_ids(tmp_path, "train")] == flat
    wide = read_sentences(paths, np.int64)
    assert [s.tolist() for s in wide] == flat and all(s.dtype == np.int64 for s in wide)
    assert read_shard(paths[0]).column("ids").to_pylist() == chunks[0]
    assert read_shard(paths[0]).schema.equals(TOKENS)
    write_table(tmp_path / "other.arrow", pa.table({"ids": pa.array([[1]], pa.list_(pa.uint32()))}))
    with pytest.raises(ValueError, match="other.arrow: not a token shard"):
        read_shard(tmp_path / "other.arrow")
    assert [b.schema.names for b in shard_batches(paths[1], ["ids", "source"])] == [["ids", "source"]]
    assert sum(b.num_rows for b in iter_batches(tmp_path, "train")) == 4


def test_atomic_table_io(tmp_path):
    table = pa.table({"w0": pa.array([1, 2], pa.uint32())})
    write_table(tmp_path / "d" / "piece.arrow", table)
    assert read_table(tmp_path / "d" / "piece.arrow").equals(table)
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["piece.arrow"]


# ------------------------------------------------------------------------------------------ text
def test_normaliser_order_is_nfkc_then_lowercase():
    """Reference: Python's unicodedata in ingest's order.  The other order would give ``H`` for ``ℌ``."""
    assert unicodedata.normalize("NFKC", "ℌ").lower() == "h"
    assert unicodedata.normalize("NFKC", "ℌ".lower()) == "H"
    assert normalize_line("ℌ ＡＢ ﬁ", nfkc=True, lowercase=True) == "h ab fi"
    assert normalize_line("ℌ ＡＢ", nfkc=False, lowercase=True) == "ℌ ａｂ"
    assert normalize_line("ℌ ＡＢ", nfkc=True, lowercase=False) == "H AB"
    assert normalize_lines(pa.array(["ℌ", "X"]), nfkc=False, lowercase=False).to_pylist() == ["ℌ", "X"]


def test_a_prompt_is_normalised_as_the_corpus_was(tmp_path):
    """``ℌ`` (and friends) give the same ids in a generation prompt as in the corpus."""
    line = "ℌello ＷＯＲＬＤ ﬁne Ⅻ"
    corpus = tmp_path / "train.txt"
    corpus.write_text(line + "\n", encoding="utf-8")
    normalize = NormalizeSpec(nfkc=True, lowercase=True)
    (chunk,) = plan_chunks(find_sources(CorpusSpec(train=(str(corpus),)))["train"], 1 << 20)
    (batch,) = list(read_chunk(chunk, normalize))
    corpus_tokens = batch.text.to_pylist()[0].split()
    assert corpus_tokens == ["hello", "world", "fine", "xii"]
    vocab = Vocab(pa.array(["<unk>", "<s>", "</s>", *corpus_tokens]), np.array([0, 0, 1, 1, 1, 1, 1], np.uint64))
    spec = parse_spec(
        {"name": "t", "corpus": {"train": str(corpus)}, "normalize": {"nfkc": True, "lowercase": True}}
    )
    assert prompt_ids(tmp_path, spec, vocab, line) == [3, 4, 5, 6]
    assert prompt_ids(tmp_path, spec, vocab, "ℌ ℌello") == [0, 3]  # "h" is no word of this corpus


def test_numpy_view_and_string_array_equal_pyarrows_own_conversions():
    """The two pandas-free conversions: a zero-copy view of a (sliced) list column's offsets and values, and a
    string array from its buffers (non-ASCII and empty strings included)."""
    ids = pa.array([[1, 2], [], [3, 4, 5], [6]], pa.list_(pa.uint32())).slice(1, 3)
    assert np.array_equal(numpy_view(ids.offsets), ids.offsets.to_numpy())
    assert np.array_equal(numpy_view(ids.values), ids.values.to_numpy())
    assert numpy_view(ids.values[2:]).tolist() == [3, 4, 5, 6]
    with pytest.raises(ValueError, match="without nulls"):
        numpy_view(pa.array([1, None]))
    words = ["<unk>", "été", "", "x" * 300]
    assert string_array(words).equals(pa.array(words, pa.string())) and string_array([]).to_pylist() == []


def test_token_counts_accumulate_over_several_compactions():
    """A large vocabulary compacts the running sum more than once: the merged table (non-nullable fields)
    then meets workers' partial tables (nullable), which Arrow will not concatenate as they are (a 200M-token
    corpus failed there).  The sum must equal a brute-force count."""
    from collections import Counter

    rng = np.random.default_rng(3)
    acc, expected = TokenCountAccumulator(flush_rows=50), Counter()
    for _ in range(12):
        tokens = [f"w{i}" for i in rng.integers(0, 300, size=40)]
        counts = Counter(tokens)
        expected.update(counts)
        acc.add(pa.table({"token": list(counts), "count": pa.array(list(counts.values()), pa.uint64())}))  # nullable
    got = acc.result()
    assert dict(zip(got["token"].to_pylist(), got["count"].to_pylist(), strict=True)) == dict(expected)
