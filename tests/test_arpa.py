"""lm.arpa and lm.kenlm_tools: ARPA round trip, atomic writes, KenLM loading/scoring, binaries."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import lmpipe.lm.arpa as arpa
from lmpipe.lm.arpa import compare_arpa, maybe_build_binary, read_arpa, read_arpa_dict, write_arpa
from lmpipe.lm.kenlm_tools import (
    KenLMError,
    KenLMNotFoundError,
    find_kenlm_binary,
    kenlm_available,
    run_lmplz,
)
from lmpipe.lm.kneser_ney import KneserNeyConfig, estimate
from lmpipe.lm.ngram_counts import count_ngrams
from lmpipe.pipelines.core.schemas import SPECIALS, UNK, UNK_ID

needs_lmplz = pytest.mark.skipif(
    not kenlm_available(), reason="lmplz/build_binary not found; build them with .ci/build_kenlm.sh"
)
CORPUS = """the cat sat on the mat
the dog sat on the log
a cat and a dog met on the mat
the cat saw the dog
a dog saw a cat on a log
the mat was red and the log was brown
the cat ran
a dog ran to the cat
on the log sat a bird
the bird saw the cat and ran
a red bird sat on the brown log
the dog and the bird met""".splitlines()


def model_of(lines: list[str], order: int, unk: str = "error", unk_token: str | None = None):
    counts = Counter(w for line in lines for w in line.split() if w != unk_token)
    vocab = list(SPECIALS) + sorted(counts, key=lambda w: (-counts[w], w.encode()))
    index = {w: i for i, w in enumerate(vocab)} | ({unk_token: UNK_ID} if unk_token else {})
    table = pa.table({"ids": pa.array([[index[w] for w in line.split()] for line in lines], pa.list_(pa.uint32()))})
    config = KneserNeyConfig(order=order, discount_fallback=(0.5, 1.0, 1.5))
    return estimate(count_ngrams(table, order, unk=unk), vocab, config), vocab


@pytest.mark.parametrize("name", ["model.arpa", "model.arpa.gz"])
def test_round_trip(tmp_path, name):
    """What is read back equals the tables written: same n-grams, bit-identical float32 values."""
    model, vocab = model_of(CORPUS, 3)
    path = write_arpa(model.tables, vocab, tmp_path / name)
    if name.endswith(".gz"):
        assert path.read_bytes()[:2] == b"\x1f\x8b"
    back = read_arpa(path)
    assert sorted(back) == [1, 2, 3]
    words = np.array(vocab, dtype=object)
    for k, table in model.tables.items():
        ids = [table.column(f"w{i}").to_numpy() for i in range(k)]
        ngrams = [" ".join(ws) for ws in zip(*(words[c] for c in ids), strict=True)]
        got = dict(zip(back[k].column("ngram").to_pylist(), back[k].column("prob").to_numpy(), strict=True))
        assert set(got) == set(ngrams)
        assert all(got[g] == p for g, p in zip(ngrams, table.column("prob").to_numpy(), strict=True))
        if k < 3:
            bo = dict(zip(back[k].column("ngram").to_pylist(), back[k].column("backoff").to_numpy(), strict=True))
            assert all(bo[g] == b for g, b in zip(ngrams, table.column("backoff").to_numpy(), strict=True))
    if name == "model.arpa":
        text = path.read_text()
        lines = text.splitlines()
        assert lines[:4] == ["\\data\\", *(f"ngram {k}={model.tables[k].num_rows}" for k in (1, 2, 3))]
        assert lines[-1] == "\\end\\" and "-0\t" not in text
        section = text.split("\\2-grams:\n")[1].split("\n\n")[0].splitlines()
        top = text.split("\\3-grams:\n")[1].split("\n\n")[0].splitlines()
        assert all(line.count("\t") == 2 for line in section)  # prob, n-gram, backoff
        assert all(line.count("\t") == 1 for line in top)  # the highest order has no backoff


def _arrow_lines(table: pa.Table, order: int, vocab: pa.Array, with_backoff: bool) -> bytes:
    """The ARPA lines as Arrow compute joins them (the writer before its compiled loop): the reference."""
    import pyarrow.compute as pc

    words = [vocab.take(table.column(f"w{i}")) for i in range(order)]
    ngram = words[0] if order == 1 else pc.binary_join_element_wise(*words, " ")
    zero = pa.scalar(0.0, pa.float32())
    fields = [pc.cast(pc.add(table.column("prob"), zero), pa.string()), ngram]
    if with_backoff:
        fields.append(pc.cast(pc.add(table.column("backoff"), zero), pa.string()))
    line = pc.binary_join_element_wise(pc.binary_join_element_wise(*fields, "\t"), "", "\n")
    return "".join(line.to_pylist()).encode()


@pytest.mark.parametrize("order, with_backoff", [(1, True), (3, True), (4, False)])
def test_compiled_line_writer_equals_arrow_joins(order, with_backoff):
    """Unicode and empty-looking tokens, -0.0, subnormal and huge floats, a sliced table: byte for byte."""
    rng = np.random.default_rng(order)
    vocab = pa.array(["<unk>", "<s>", "</s>", "é", "日本語", "a", "x" * 40, "b-c", "'s"])
    n = 5000
    floats = rng.normal(0, 3, n).astype(np.float32)
    floats[:6] = [-0.0, 0.0, 1e-40, -3.4e38, -99.0, 0.1]
    columns = {f"w{i}": pa.array(rng.integers(0, len(vocab), n).astype(np.uint32)) for i in range(order)}
    columns["prob"] = pa.array(floats)
    columns["backoff"] = pa.array(rng.permutation(floats))
    table = pa.table(columns).slice(7, n - 20)
    got = arpa._format_order(table, order, vocab, with_backoff).tobytes()
    assert got == _arrow_lines(table, order, vocab, with_backoff)
    assert arpa._format_order(table.slice(0, 0), order, vocab, with_backoff).tobytes() == b""
    # few distinct values, as backoffs are (each is printed once and gathered): -0 and 0 among them
    few = np.array([-0.0, 0.0, -0.30103, 1e-40, -99.0], np.float32)[rng.integers(0, 5, n)]
    repeated = pa.table({**columns, "prob": pa.array(few), "backoff": pa.array(few[::-1].copy())})
    got = arpa._format_order(repeated, order, vocab, with_backoff).tobytes()
    assert got == _arrow_lines(repeated, order, vocab, with_backoff)


def test_distinct_floats_codes_every_bit_pattern_once():
    """Against numpy's unique of the bit patterns (with -0 as 0), through several table doublings."""
    from lmpipe.lm.arpa_kernels import distinct_floats

    rng = np.random.default_rng(3)
    values = np.round(rng.normal(0, 2, 20000), 3).astype(np.float32)
    values[::7] = -0.0
    codes, distinct, coded = distinct_floats(values, give_up=False)
    assert coded
    assert not distinct_floats(rng.normal(0, 1, 5000).astype(np.float32))[2]  # all distinct: not worth it
    expected = (values + np.float32(0)).view(np.uint32)
    assert np.array_equal(distinct[codes].view(np.uint32), expected)
    assert len(distinct) == len(np.unique(expected))
    assert np.array_equal(distinct.view(np.uint32), expected[np.sort(np.unique(expected, return_index=True)[1])])


def test_write_is_atomic(tmp_path, monkeypatch):
    """A failure mid-write leaves the previous file untouched and no temporary behind."""
    model, vocab = model_of(CORPUS, 2)
    target = tmp_path / "model.arpa"
    target.write_text("previous model\n")
    real = arpa._format_order

    def failing(table, order, vocab_arr, with_backoff):
        if order == 2:
            raise RuntimeError("disk full")
        return real(table, order, vocab_arr, with_backoff)

    monkeypatch.setattr(arpa, "_format_order", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        write_arpa(model.tables, vocab, target)
    assert target.read_text() == "previous model\n"
    assert [p.name for p in tmp_path.iterdir()] == ["model.arpa"]


def test_write_rejects_ids_outside_the_vocabulary(tmp_path):
    model, vocab = model_of(CORPUS, 2)
    with pytest.raises(ValueError, match="vocabulary size"):
        write_arpa(model.tables, vocab[:5], tmp_path / "x.arpa")
    assert not (tmp_path / "x.arpa").exists()


def test_read_checks_header_counts(tmp_path):
    bad = tmp_path / "bad.arpa"
    bad.write_text("\\data\\\nngram 1=3\n\n\\1-grams:\n-1\t<unk>\n0\t<s>\n\n\\end\\\n")
    with pytest.raises(ValueError, match="ngram 1=3 but found 2"):
        read_arpa(bad)
    assert read_arpa_dict(_tiny_arpa(tmp_path))[1]["<s>"] == (0.0, pytest.approx(-0.30103, abs=1e-6))


def _tiny_arpa(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.arpa"
    path.write_text("\\data\\\nngram 1=3\n\n\\1-grams:\n-1\t<unk>\n0\t<s>\t-0.30103\n-0.5\t</s>\n\n\\end\\\n")
    return path


def test_compare_reports_differences(tmp_path):
    model, vocab = model_of(CORPUS, 2)
    a = read_arpa(write_arpa(model.tables, vocab, tmp_path / "a.arpa"))
    tables = dict(model.tables)
    tables[2] = tables[2].slice(1)
    b = read_arpa(write_arpa(tables, vocab, tmp_path / "b.arpa"))
    diff = compare_arpa(a, b)
    assert not diff.same_ngrams and len(diff.only_left[2]) == 1 and diff.within(1.0) is False
    assert compare_arpa(a, a).within(0.0)


def test_kenlm_scores_our_arpa(tmp_path):
    """kenlm.Model loads our ARPA; sum(full_scores) == score (kenlm's example.py check), OOVs included;
    and KenLM's per-word probability is the one in our table when the full n-gram is present."""
    kenlm = pytest.importorskip("kenlm")
    model, vocab = model_of(CORPUS, 3)
    lm_ = kenlm.Model(str(write_arpa(model.tables, vocab, tmp_path / "m.arpa")))
    assert lm_.order == 3
    for sentence in ["the cat sat on the mat", "a zebra sat on the log", "unseen words only", "the"]:
        scores = list(lm_.full_scores(sentence))
        assert len(scores) == len(sentence.split()) + 1
        assert sum(s[0] for s in scores) == pytest.approx(lm_.score(sentence), abs=1e-4)
        assert [s[2] for s in scores[:-1]] == [w not in vocab for w in sentence.split()]
    index = {w: i for i, w in enumerate(vocab)}
    tri = model.tables[3]
    key = (index["<s>"], index["the"], index["cat"])
    rows = [i for i in range(tri.num_rows) if tuple(tri.column(f"w{j}")[i].as_py() for j in range(3)) == key]
    assert len(rows) == 1
    first_two = list(lm_.full_scores("the cat", eos=False))
    assert first_two[1][0] == pytest.approx(tri.column("prob")[rows[0]].as_py(), abs=1e-6)
    assert first_two[1][1] == 3


def test_kenlm_scores_unk_as_a_counted_word(tmp_path):
    """With unk='word' (PTB convention) <unk> has a counted probability and KenLM uses it for OOVs."""
    kenlm = pytest.importorskip("kenlm")
    lines = [line.replace("dog", UNK) for line in CORPUS]
    model, vocab = model_of(lines, 2, unk="word", unk_token=UNK)
    path = write_arpa(model.tables, vocab, tmp_path / "m.arpa")
    lm_ = kenlm.Model(str(path))
    unigram = read_arpa_dict(path)[1]
    assert unigram[UNK][0] > -1.5  # a frequent word, not a zeroton
    (p_oov, _, oov), _ = lm_.full_scores("zebra", bos=False)
    assert oov and p_oov == pytest.approx(unigram[UNK][0], abs=1e-6)
    sentence = "the zebra sat"
    assert sum(s[0] for s in lm_.full_scores(sentence)) == pytest.approx(lm_.score(sentence), abs=1e-4)


def test_missing_binaries_give_an_actionable_error(tmp_path, monkeypatch):
    monkeypatch.setenv("LMPIPE_KENLM_BIN", str(tmp_path / "nothing"))
    monkeypatch.setenv("LMPIPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(KenLMNotFoundError, match=r"'lmplz' not found; searched \$LMPIPE_KENLM_BIN .*build_kenlm\.sh"):
        find_kenlm_binary("lmplz")
    assert not kenlm_available()
    arpa_path = _tiny_arpa(tmp_path)
    assert maybe_build_binary(arpa_path, tmp_path / "tiny.binary") is None
    with pytest.raises(ValueError, match="options are"):
        find_kenlm_binary("kenlm")


@needs_lmplz
@pytest.mark.kenlm
def test_run_lmplz_from_lines_and_errors(tmp_path):
    """Lines can be streamed to lmplz's stdin; its refusal of <unk> surfaces as KenLMError with its message."""
    run_lmplz(iter(CORPUS), 2, tmp_path / "a.arpa", memory="64M", extra_args=["--discount_fallback"])
    assert read_arpa(tmp_path / "a.arpa")[1].num_rows == len({w for line in CORPUS for w in line.split()}) + 3
    with pytest.raises(KenLMError, match="Special word <unk> is not allowed"):
        run_lmplz(["a <unk> b"] * 3, 2, tmp_path / "b.arpa", memory="64M", extra_args=["--discount_fallback"])


@needs_lmplz
@pytest.mark.kenlm
def test_build_binary_scores_like_the_arpa(tmp_path):
    kenlm = pytest.importorskip("kenlm")
    model, vocab = model_of(CORPUS, 3)
    path = write_arpa(model.tables, vocab, tmp_path / "m.arpa", binary_out=tmp_path / "m.binary")
    assert (tmp_path / "m.binary").is_file()
    text, binary = kenlm.Model(str(path)), kenlm.Model(str(tmp_path / "m.binary"))
    for sentence in ["the cat sat on the mat", "a zebra ran"]:
        assert binary.score(sentence) == pytest.approx(text.score(sentence), abs=1e-5)


@pytest.mark.parametrize("kernel_copy", [True, False])
@pytest.mark.parametrize("name", ["model.arpa", "model.arpa.gz"])
def test_pieces_assemble_to_the_file_write_arpa_writes(tmp_path, monkeypatch, kernel_copy, name):
    """Pieces of every order, split at arbitrary rows, concatenate to write_arpa's bytes, whether the kernel
    copies (os.copy_file_range) or the buffered fallback does."""
    import gzip

    if not kernel_copy:
        def refuse(*args):
            raise OSError(18, "Invalid cross-device link")

        monkeypatch.setattr(arpa.os, "copy_file_range", refuse, raising=False)
    model, vocab = model_of(CORPUS, 3)
    vocab_arr = pa.array(list(vocab), pa.string())
    pieces: dict[int, list[tuple[Path, int]]] = {}
    for k, table in model.tables.items():
        cuts = [0, table.num_rows // 3, table.num_rows // 3, table.num_rows]  # one empty piece too
        for j, (a, b) in enumerate(zip(cuts[:-1], cuts[1:], strict=True)):
            piece = tmp_path / f"{k}-{j}.txt"
            with open(piece, "wb") as out:
                rows = arpa.write_arpa_lines(table.slice(a, b - a), k, vocab_arr, k < 3, out)
            pieces.setdefault(k, []).append((piece, rows))
    counts = {k: t.num_rows for k, t in model.tables.items()}
    got = arpa.write_arpa_pieces(pieces, counts, tmp_path / name)
    want = write_arpa(model.tables, vocab, tmp_path / ("ref-" + name))
    opener = gzip.open if name.endswith(".gz") else open
    with opener(got, "rb") as a, opener(want, "rb") as b:
        assert a.read() == b.read()
