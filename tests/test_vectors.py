"""Vectors artifact: storage round trips, similarity search, and every export format against gensim."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmpipe.embeddings.formats import (
    FORMATS,
    export_vectors,
    import_vectors,
    load_glove,
    load_safetensors,
    load_word2vec,
    save_safetensors,
    save_word2vec,
)
from lmpipe.embeddings.vectors import Vectors
from lmpipe.pipelines.core.vocab_tsv import read_vocab_tsv

gensim_kv = pytest.importorskip("gensim.models.keyedvectors")


def _random_vectors(n: int = 50, dim: int = 7, seed: int = 0) -> Vectors:
    rng = np.random.default_rng(seed)
    tokens = ["<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(n - 4)] + ["naïve"]
    matrix = rng.normal(size=(n, dim)).astype(np.float32)
    matrix[5] *= 1e-30  # tiny values must survive the text formats too
    return Vectors(tokens, matrix, np.arange(n, 0, -1), source="test")


def test_save_load_mmap_round_trip(tmp_path):
    """save() writes vectors.npy + vocab.tsv + meta.json; load() memory-maps read-only and is exact."""
    vecs = _random_vectors()
    vecs.save(tmp_path / "v")
    meta = json.loads((tmp_path / "v" / "meta.json").read_text())
    assert (meta["dim"], meta["count"], meta["source"]) == (7, 50, "test")
    assert set(meta["sha256"]) == {"vectors.npy", "vocab.tsv"}
    loaded = Vectors.load(tmp_path / "v", verify=True)
    assert isinstance(loaded.matrix, np.memmap) and not loaded.matrix.flags.writeable
    assert loaded.tokens == vecs.tokens
    np.testing.assert_array_equal(loaded.matrix, vecs.matrix)
    np.testing.assert_array_equal(loaded.counts, vecs.counts)
    assert [p.name for p in tmp_path.iterdir()] == ["v"]  # no temporary directory left behind


def test_save_refuses_overwrite_then_replaces(tmp_path):
    """An existing directory is kept unless overwrite=True; then it is replaced whole."""
    _random_vectors(seed=0).save(tmp_path / "v")
    with pytest.raises(FileExistsError):
        _random_vectors(seed=1).save(tmp_path / "v")
    _random_vectors(seed=1).save(tmp_path / "v", overwrite=True)
    np.testing.assert_array_equal(Vectors.load(tmp_path / "v").matrix, _random_vectors(seed=1).matrix)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v"]


def test_verify_detects_corruption(tmp_path):
    """A byte changed in vectors.npy fails verify=True with the file's name."""
    _random_vectors().save(tmp_path / "v")
    npy = tmp_path / "v" / "vectors.npy"
    data = bytearray(npy.read_bytes())
    data[-1] ^= 0xFF
    npy.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="vectors.npy"):
        Vectors.load(tmp_path / "v", verify=True)


def test_most_similar_hand_made():
    """Cosine ranking on a hand-made matrix, self and `exclude` removed, vector queries allowed."""
    m = np.array([[1, 0], [0.9, 0.1], [0.5, 0.5], [0, 1], [-1, 0], [0, 0]], dtype=np.float32)
    vecs = Vectors(["a", "b", "c", "d", "e", "zero"], m)
    assert [w for w, _ in vecs.most_similar("a", k=3)] == ["b", "c", "d"]
    assert vecs.most_similar("a", k=1)[0][1] == pytest.approx(0.9 / np.hypot(0.9, 0.1), abs=1e-6)
    assert [w for w, _ in vecs.most_similar("a", k=2, exclude=["b"])] == ["c", "d"]
    assert [w for w, _ in vecs.most_similar(np.array([0, 2.0]), k=2)] == ["d", "c"]
    assert [w for w, _ in vecs.most_similar("d", k=2, restrict=3)] == ["c", "b"]
    assert vecs.most_similar("e", k=10)[-1][0] == "a"  # k larger than the vocabulary
    norm = vecs.normalized()
    np.testing.assert_allclose(np.linalg.norm(norm.matrix[:5], axis=1), 1.0, rtol=1e-6)
    assert not norm.matrix[5].any()
    with pytest.raises(KeyError, match="'nope'"):
        vecs.most_similar("nope")


def test_nearest_chunking_matches_brute_force(monkeypatch):
    """The chunked top-k equals a full argsort when the matrix spans several chunks."""
    import lmpipe.embeddings.vectors as mod

    monkeypatch.setattr(mod, "_CHUNK_ROWS", 7)
    vecs = _random_vectors(n=60)
    q = np.random.default_rng(3).normal(size=(4, 7)).astype(np.float32)
    ids, scores = vecs.nearest(q, k=9)
    m64 = vecs.matrix.astype(np.float64)  # row 5 is ~1e-30: its float32 norm underflows to 0
    unit = m64 / np.linalg.norm(m64, axis=1, keepdims=True)
    full = (unit @ (q / np.linalg.norm(q, axis=1, keepdims=True)).T).T
    np.testing.assert_array_equal(ids, np.argsort(-full, axis=1)[:, :9])
    np.testing.assert_allclose(scores, np.sort(full, axis=1)[:, ::-1][:, :9], rtol=1e-5)


def test_constructor_validation():
    with pytest.raises(ValueError, match="duplicate token 'a'"):
        Vectors(["a", "a"], np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="float32"):
        Vectors(["a"], np.zeros((1, 3)))


@pytest.mark.parametrize("binary", [False, True])
def test_word2vec_formats_load_in_gensim(tmp_path, binary):
    """gensim's load_word2vec_format reads our word2vec text/binary with bit-identical vectors."""
    vecs = _random_vectors()
    save_word2vec(vecs, tmp_path / "v.w2v", binary=binary)
    kv = gensim_kv.KeyedVectors.load_word2vec_format(str(tmp_path / "v.w2v"), binary=binary)
    assert kv.index_to_key == vecs.tokens
    np.testing.assert_array_equal(kv.vectors, vecs.matrix)


def test_glove_format_loads_in_gensim(tmp_path):
    vecs = _random_vectors()
    export_vectors(vecs, tmp_path / "v.txt", "glove")
    assert not (tmp_path / "v.txt").read_text().splitlines()[0].startswith("50 7")
    kv = gensim_kv.KeyedVectors.load_word2vec_format(str(tmp_path / "v.txt"), no_header=True)
    assert kv.index_to_key == vecs.tokens
    np.testing.assert_array_equal(kv.vectors, vecs.matrix)


@pytest.mark.parametrize("fmt", FORMATS)
def test_import_round_trip(tmp_path, fmt):
    """export then import gives the same tokens and bit-identical float32 values, for every format."""
    vecs = _random_vectors()
    export_vectors(vecs, tmp_path / f"v.{fmt}", fmt)
    back = import_vectors(tmp_path / f"v.{fmt}", fmt)
    assert back.tokens == vecs.tokens
    np.testing.assert_array_equal(back.matrix, vecs.matrix)
    if fmt in ("npy", "safetensors"):  # the formats with a place for counts keep them
        np.testing.assert_array_equal(back.counts, vecs.counts)


def test_import_gensim_writer_output(tmp_path):
    """Binary files from gensim's own writer (no newline after each row) and its text files import exactly."""
    vecs = _random_vectors()
    kv = gensim_kv.KeyedVectors(vecs.dim)
    kv.add_vectors(vecs.tokens, vecs.matrix)
    kv.save_word2vec_format(str(tmp_path / "g.bin"), binary=True)
    kv.save_word2vec_format(str(tmp_path / "g.txt"), binary=False)
    for path, binary in ((tmp_path / "g.bin", True), (tmp_path / "g.txt", False)):
        back = load_word2vec(path, binary=binary)
        assert back.tokens == vecs.tokens
        np.testing.assert_array_equal(back.matrix, vecs.matrix)


def test_safetensors_with_vocab_file(tmp_path):
    vecs = _random_vectors()
    save_safetensors(vecs, tmp_path / "v.safetensors", vocab_path=tmp_path / "vocab.tsv")
    back = load_safetensors(tmp_path / "v.safetensors", vocab_path=tmp_path / "vocab.tsv")
    assert back.tokens == vecs.tokens and read_vocab_tsv(tmp_path / "vocab.tsv")[0] == vecs.tokens
    np.testing.assert_array_equal(back.matrix, vecs.matrix)
    assert load_safetensors(tmp_path / "v.safetensors").tokens == vecs.tokens  # the metadata names the file
    (tmp_path / "vocab.tsv").unlink()
    with pytest.raises(ValueError, match="vocabulary file .*vocab.tsv is missing"):
        load_safetensors(tmp_path / "v.safetensors")


@pytest.mark.parametrize("bad", ["two words", "new\nline", ""])
def test_text_export_names_bad_token(tmp_path, bad):
    """A token with a space/newline (or empty) cannot be written as text: the error names it, no file left."""
    vecs = Vectors(["ok", bad], np.zeros((2, 3), np.float32))
    for fmt in ("word2vec", "word2vec-bin", "glove"):
        with pytest.raises(ValueError, match=repr(bad).replace("\\", "\\\\")):
            export_vectors(vecs, tmp_path / "out", fmt)
    assert not list(tmp_path.iterdir())


def test_bad_lines_raise_with_file_and_line(tmp_path):
    """Import errors name the file and the 1-based line number."""
    glove = tmp_path / "g.txt"
    glove.write_text("a 1 2 3\nb 1 2\nc 1 2 3\n")
    with pytest.raises(ValueError, match=r"g\.txt:2: expected a token and 3 values, got 2"):
        load_glove(glove)
    glove.write_text("a 1 2 3\nb 1 x 3\n")
    with pytest.raises(ValueError, match=r"g\.txt:2: non-numeric"):
        load_glove(glove)
    glove.write_text("a 1 2 3\n\nb 1 2 3\n")
    with pytest.raises(ValueError, match=r"g\.txt:2: empty line"):
        load_glove(glove)
    w2v = tmp_path / "w.txt"
    w2v.write_text("3 2\na 1 2\nb 1 2\n")
    with pytest.raises(ValueError, match=r"w\.txt: header announces 3 rows, file has 2"):
        load_word2vec(w2v)
    w2v.write_text("1 2\na 1 2\nb 1 2\n")
    with pytest.raises(ValueError, match=r"w\.txt:3: data after the 1 rows"):
        load_word2vec(w2v)
    w2b = tmp_path / "w.bin"
    w2b.write_bytes(b"2 2\na " + np.zeros(2, "<f4").tobytes() + b"\nb " + b"\x00" * 3)
    with pytest.raises(ValueError, match=r"w\.bin: row 2 at byte \d+: unexpected end of file"):
        load_word2vec(w2b, binary=True)
    with pytest.raises(ValueError, match="options are"):
        import_vectors(w2b, "fasttext")
