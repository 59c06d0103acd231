"""``lmpipe embeddings neighbors|analogy WHERE``: on a vectors file of every format, an imported folder and a
run, the answers equal gensim's ``most_similar`` / ``most_similar_cosmul`` on the same vectors; unknown
words exit 2 with one line; safetensors of a vocabulary too large for its header use a vocabulary file."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from lmpipe.embeddings.formats import (
    SAFETENSORS_HEADER_LIMIT,
    export_vectors,
    load_safetensors,
    save_safetensors,
)
from lmpipe.embeddings.vectors import Vectors
from lmpipe.pipelines.cli import main

gensim_kv = pytest.importorskip("gensim.models.keyedvectors")


def _vectors(n: int = 400, dim: int = 12, seed: int = 3) -> Vectors:
    rng = np.random.default_rng(seed)
    return Vectors([f"w{i}" for i in range(n)], rng.normal(size=(n, dim)).astype(np.float32), source="test")


def _gensim(vecs: Vectors):
    kv = gensim_kv.KeyedVectors(vecs.dim)
    kv.add_vectors(vecs.tokens, np.asarray(vecs.matrix))
    return kv


def _ranked(out: str) -> list[tuple[str, float]]:
    """``rank score token`` lines -> [(token, score)]."""
    return [(line.split()[2], float(line.split()[1])) for line in out.splitlines() if line[:3].strip().isdigit()]


def _same(got: list[tuple[str, float]], want: list[tuple[str, float]]) -> None:
    assert [t for t, _ in got] == [t for t, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=6e-5)  # printed to 4 decimals


FILES = {
    "v.txt": "word2vec",  # header "count dim": word2vec text
    "v.bin": "word2vec-bin",
    "v.glove": "glove",  # no header: GloVe text
    "v.npy": "npy",
    "v.safetensors": "safetensors",
}


@pytest.mark.parametrize("name", list(FILES))
def test_neighbors_and_analogies_on_a_vectors_file_equal_gensim(tmp_path, capsys, name):
    vecs = _vectors()
    path = tmp_path / name
    export_vectors(vecs, path, FILES[name])
    kv = _gensim(vecs)
    assert main(["embeddings", "neighbors", str(path), "w7", "w42", "-k", "5"]) == 0
    out = capsys.readouterr().out
    first, second = out.split("\n\n")
    assert first.startswith("w7:") and second.startswith("w42:")
    _same(_ranked(first), kv.most_similar("w7", topn=5))
    _same(_ranked(second), kv.most_similar("w42", topn=5))
    pos, neg = ["w1", "w2"], ["w3"]
    assert main(["embeddings", "analogy", str(path), "--positive", *pos, "--negative", *neg, "-k", "7"]) == 0
    _same(_ranked(capsys.readouterr().out), kv.most_similar(positive=pos, negative=neg, topn=7))
    argv = ["embeddings", "analogy", str(path), "--positive", *pos, "--negative", *neg, "--method", "3cosmul"]
    assert main(argv) == 0
    _same(_ranked(capsys.readouterr().out), kv.most_similar_cosmul(positive=pos, negative=neg, topn=10))


@pytest.mark.parametrize("negative", [[], ["w5", "w6"]])
@pytest.mark.parametrize("method", ["3cosadd", "3cosmul"])
def test_analogy_api_equals_gensim_with_any_number_of_words(method, negative):
    vecs = _vectors(n=300, dim=8, seed=11)
    vecs.matrix[9] *= 40.0  # norms differ: the query must use unit vectors, as gensim does
    kv = _gensim(vecs)
    pos = ["w9", "w10", "w11"]
    reference = kv.most_similar if method == "3cosadd" else kv.most_similar_cosmul
    got = vecs.analogy(pos, negative, 12, method=method)
    want = reference(positive=pos, negative=negative, topn=12)
    assert [t for t, _ in got] == [t for t, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-5)


def test_queries_on_an_imported_folder_and_format_override(tmp_path, capsys):
    vecs = _vectors()
    export_vectors(vecs, tmp_path / "vectors.dat", "word2vec-bin")  # a suffix that says nothing
    argv = ["embeddings", "import", str(tmp_path / "vectors.dat"), "--format", "word2vec-bin"]
    assert main([*argv, "--out", str(tmp_path / "imported")]) == 0
    capsys.readouterr()
    assert main(["embeddings", "neighbors", str(tmp_path / "imported"), "w3", "-k", "4"]) == 0
    _same(_ranked(capsys.readouterr().out), _gensim(vecs).most_similar("w3", topn=4))
    argv = ["embeddings", "neighbors", str(tmp_path / "vectors.dat"), "w3", "-k", "4", "--format", "word2vec-bin"]
    assert main(argv) == 0
    _same(_ranked(capsys.readouterr().out), _gensim(vecs).most_similar("w3", topn=4))


def test_unknown_words_and_bad_sources_exit_2_with_one_line(tmp_path, capsys):
    export_vectors(Vectors(["Paris", "b"], np.eye(2, dtype=np.float32)), tmp_path / "v.txt", "word2vec")
    cases = [
        (["neighbors", str(tmp_path / "v.txt"), "b", "paris"], "'paris' is not in the vocabulary of .*did you mean 'Paris'"),
        (["analogy", str(tmp_path / "v.txt"), "--positive", "b", "--negative", "zzz"], "'zzz' is not in the vocabulary"),
        (["neighbors", str(tmp_path / "nope"), "b"], "no such run directory, vectors folder or vectors file"),
        (["neighbors", str(tmp_path), "b"], "neither a run directory .* nor a vectors folder"),
        (["neighbors", str(tmp_path / "v.txt"), "b", "-k", "0"], "-k: bad value 0"),
    ]  # fmt: skip
    (tmp_path / "bad.bin").write_bytes(b"3 2\nxx")
    cases.append((["neighbors", str(tmp_path / "bad.bin"), "b"], "not a readable word2vec-bin vectors file"))
    import re

    for argv, message in cases:
        assert main(["embeddings", *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and re.search(message, err), (argv, err)


def test_safetensors_vocabulary_too_large_for_the_header_goes_to_a_sidecar(tmp_path, capsys):
    """~104 MB of tokens: inline metadata would exceed safetensors' 100 MB header; a vocab file is written,
    named in the metadata, found by the reader and by ``neighbors``; small vocabularies stay inline."""
    n = 26_000  # few rows of long tokens: the header bytes of millions of words, in seconds
    tokens = [f"{i:06d}" + "x" * 3994 for i in range(n)]
    matrix = np.ones((n, 2), np.float32)
    matrix[:, 1] = -1.0
    matrix[0, 1], matrix[1, 1], matrix[4, 1] = 0.12, 0.1, 0.3
    vecs = Vectors(tokens, matrix)
    assert sum(map(len, tokens)) > SAFETENSORS_HEADER_LIMIT
    path = tmp_path / "big.safetensors"
    sidecar = save_safetensors(vecs, path)
    assert sidecar == tmp_path / "big.vocab.tsv" and sidecar.is_file()
    (header_len,) = struct.unpack("<Q", path.read_bytes()[:8])
    assert header_len < 10_000 and json.loads(path.read_bytes()[8 : 8 + header_len])["__metadata__"]["vocab_file"] == "big.vocab.tsv"
    back = load_safetensors(path)
    assert back.tokens[-1] == tokens[-1] and len(back) == n
    np.testing.assert_array_equal(back.matrix, matrix)
    assert main(["embeddings", "neighbors", str(path), tokens[1], "-k", "2"]) == 0
    assert [t for t, _ in _ranked(capsys.readouterr().out)] == [tokens[0], tokens[4]]  # (1, .1): (1, .12), (1, .3), then (1, -1)
    small = tmp_path / "small.safetensors"
    assert save_safetensors(_vectors(), small) is None and not (tmp_path / "small.vocab.tsv").exists()
    assert load_safetensors(small).tokens == _vectors().tokens


def test_header_estimate_bounds_the_real_metadata_size():
    """The sidecar decision's estimate is never below the bytes safetensors' header really takes."""
    from lmpipe.embeddings.formats import _tokens_header_bytes

    tokens = ['a"b', "back\\slash", "tab\tnew\x01", "naïve", "日本", "plain"]
    vecs = Vectors(tokens, np.zeros((len(tokens), 1), np.float32), np.arange(len(tokens)) * 10**12)
    meta = {"tokens": json.dumps(tokens, ensure_ascii=False), "counts": json.dumps(vecs.counts.tolist())}
    real = len(json.dumps(meta, ensure_ascii=False, separators=(",", ":")).encode())
    assert real - len('{"tokens":"","counts":""}') <= _tokens_header_bytes(vecs) <= 3 * real
