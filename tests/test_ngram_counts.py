"""lm.ngram_counts: exact counts against a brute-force Counter, merge(split(x)) == count(x), partitioning."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from lmpipe.lm.ngram_counts import count_ngrams, first_occurrence_rank, merge_counts
from lmpipe.pipelines.core.keyed import group_rows, key_hash, lookup_rows, pack_keys, partition_by
from lmpipe.pipelines.core.schemas import BOS_ID, EOS_ID, TOKENS, UNK_ID, ngram_schema


def tokens(sentences: list[list[int]]) -> pa.Table:
    """A TOKENS table (source/position/doc filled in) holding ``sentences``."""
    n = len(sentences)
    return pa.table(
        {
            "source": pa.array([0] * n, pa.uint32()),
            "position": pa.array(range(n), pa.uint64()),
            "doc": pa.array([0] * n, pa.uint64()),
            "ids": pa.array(sentences, TOKENS.field("ids").type),
        },
        schema=TOKENS,
    )


def brute_force(sentences: list[list[int]], order: int) -> dict[int, Counter]:
    """Every k-gram of ``<s> w.. </s>``, k = 1..order, except the unigram ``<s>``."""
    out = {k: Counter() for k in range(1, order + 1)}
    for s in sentences:
        seq = [BOS_ID, *s, EOS_ID]
        for k in range(1, order + 1):
            for i in range(len(seq) - k + 1):
                gram = tuple(seq[i : i + k])
                if gram != (BOS_ID,):
                    out[k][gram] += 1
    return out


def as_counter(table: pa.Table, order: int) -> Counter:
    cols = [table.column(f"w{i}").to_pylist() for i in range(order)]
    return Counter(dict(zip(zip(*cols, strict=True), table.column("count").to_pylist(), strict=True)))


def random_sentences(rng: np.random.Generator, n: int, vocab: int, max_len: int) -> list[list[int]]:
    lengths = rng.integers(0, max_len + 1, size=n)  # includes empty sentences
    return [[int(x) for x in rng.integers(3, vocab, size=length)] for length in lengths]


def test_hand_counts():
    """Two sentences, counted by hand: <s> a b </s> and <s> a </s>, ids a=3, b=4."""
    c = count_ngrams(tokens([[3, 4], [3]]), 3)
    assert as_counter(c[1], 1) == {(EOS_ID,): 2, (3,): 2, (4,): 1}
    assert as_counter(c[2], 2) == {(BOS_ID, 3): 2, (3, 4): 1, (4, EOS_ID): 1, (3, EOS_ID): 1}
    assert as_counter(c[3], 3) == {(BOS_ID, 3, 4): 1, (3, 4, EOS_ID): 1, (BOS_ID, 3, EOS_ID): 1}


@pytest.mark.parametrize("order", [1, 2, 3, 5, 6])
def test_counts_equal_brute_force(order):
    """Exact counts, schema and sort order on random sentences (empty ones included)."""
    rng = np.random.default_rng(order)
    sentences = random_sentences(rng, 200, 12, 9)
    got = count_ngrams(tokens(sentences), order)
    expected = brute_force(sentences, order)
    assert sorted(got) == list(range(1, order + 1))
    for k in range(1, order + 1):
        assert got[k].schema == ngram_schema(k)
        assert as_counter(got[k], k) == expected[k]
        rows = list(zip(*(got[k].column(f"w{i}").to_pylist() for i in range(k)), strict=True))
        assert rows == sorted(rows), "rows must be sorted by w0, w1, ..."


def test_empty_input():
    got = count_ngrams(tokens([]), 3)
    assert [got[k].num_rows for k in (1, 2, 3)] == [0, 0, 0] and got[3].schema == ngram_schema(3)
    assert as_counter(count_ngrams(tokens([[]]), 2)[2], 2) == {(BOS_ID, EOS_ID): 1}  # an empty sentence


def test_large_ids_use_multi_column_keys():
    """Ids near 2^32 do not fit a packed 64-bit key for order 3; counting must still be exact."""
    big = [2**32 - 1, 2**31 + 7, 2**20]
    sentences = [[big[0], big[1], big[2], big[0]], [big[1], big[0]], [big[0], big[1], big[2], big[0]]]
    got = count_ngrams(tokens(sentences), 3)
    expected = brute_force(sentences, 3)
    for k in (1, 2, 3):
        assert as_counter(got[k], k) == expected[k]


def test_unk_policies():
    """error (lmplz's default) raises, skip drops like --skip_symbols, word counts <unk> as a word."""
    table = tokens([[3, UNK_ID, 4], [UNK_ID]])
    with pytest.raises(ValueError, match="unk='skip'"):
        count_ngrams(table, 2)
    skipped = count_ngrams(table, 2, unk="skip")
    assert as_counter(skipped[2], 2) == brute_force([[3, 4], []], 2)[2]
    word = count_ngrams(table, 2, unk="word")
    assert as_counter(word[2], 2) == brute_force([[3, UNK_ID, 4], [UNK_ID]], 2)[2]
    with pytest.raises(ValueError, match="never belong inside a sentence"):
        count_ngrams(tokens([[3, EOS_ID]]), 2, unk="word")
    with pytest.raises(ValueError, match="options are"):
        count_ngrams(table, 2, unk="drop")


def test_merge_of_split_equals_count():
    """Counting blocks separately and merging equals counting everything at once (the map-side combine)."""
    rng = np.random.default_rng(7)
    sentences = random_sentences(rng, 300, 20, 8)
    table = tokens(sentences)
    whole = count_ngrams(table, 4)
    blocks = [table.slice(0, 50), table.slice(50, 170), table.slice(220)]
    partial = [count_ngrams(b, 4) for b in blocks]
    for k in range(1, 5):
        assert merge_counts([p[k] for p in partial]).equals(whole[k])
        # ...and partitioning by any key then merging the partitions gives the table back.
        parts = partition_by(whole[k], ["w0"], 3)
        assert sum(p.num_rows for p in parts) == whole[k].num_rows
        assert merge_counts(parts).equals(whole[k])


def test_merge_counts_sums_duplicates_and_checks_orders():
    a = pa.table({"w0": pa.array([5, 3], pa.uint32()), "count": pa.array([1, 2], pa.uint64())})
    b = pa.table({"w0": pa.array([3], pa.uint32()), "count": pa.array([2**40], pa.uint64())})
    merged = merge_counts([a, b])
    assert merged.to_pydict() == {"w0": [3, 5], "count": [2 + 2**40, 1]}
    bigram = count_ngrams(tokens([[3]]), 2)[2]
    with pytest.raises(ValueError, match="different orders"):
        merge_counts([a, bigram])


def test_partition_by_copartitions_suffix_and_key():
    """Trigram suffixes (w1, w2) land in the same partition as the equal bigram (w0, w1)."""
    rng = np.random.default_rng(3)
    counts = count_ngrams(tokens(random_sentences(rng, 200, 15, 8)), 3)
    p = 5
    tri = partition_by(counts[3], ["w1", "w2"], p)
    bi = partition_by(counts[2], ["w0", "w1"], p)
    where = {}
    for i, part in enumerate(bi):
        for key in zip(part.column("w0").to_pylist(), part.column("w1").to_pylist(), strict=True):
            where[key] = i
    for i, part in enumerate(tri):
        for key in zip(part.column("w1").to_pylist(), part.column("w2").to_pylist(), strict=True):
            assert where[key] == i
    assert [t.num_rows for t in partition_by(counts[2], ["w0"], 1)] == [counts[2].num_rows]


def test_key_hash_is_stable():
    """Pinned values: partitions written by one version/machine must be readable by another."""
    h = key_hash([np.array([0, 1, 3], np.uint32), np.array([7, 7, 2**32 - 1], np.uint32)])
    assert h.dtype == np.uint64
    assert h.tolist() == [236966933211079599, 18102033877536474386, 16309308056298234177]
    assert h.tolist() == _splitmix_reference([(0, 7), (1, 7), (3, 2**32 - 1)])
    assert h.tolist() == key_hash([np.array([0, 1, 3]), np.array([7, 7, 2**32 - 1])]).tolist()  # dtype-free


def _splitmix_reference(rows):
    """Plain-Python splitmix64 fold, the specification of key_hash."""
    mask = 2**64 - 1
    out = []
    for row in rows:
        h = 0x9E3779B97F4A7C15
        for w in row:
            h ^= w
            h ^= h >> 30
            h = (h * 0xBF58476D1CE4E5B9) & mask
            h ^= h >> 27
            h = (h * 0x94D049BB133111EB) & mask
            h ^= h >> 31
        out.append(h)
    return out


def test_pack_keys_preserves_order_and_lookup():
    rng = np.random.default_rng(5)
    cols = [rng.integers(0, 2**31, size=500).astype(np.uint32) for _ in range(4)]  # 124 bits: needs ranking
    code = pack_keys(cols)
    rows = list(zip(*(c.tolist() for c in cols), strict=True))
    assert np.argsort(code, kind="stable").tolist() == sorted(range(len(rows)), key=lambda i: rows[i])
    first, sizes = group_rows(cols)
    assert sizes.sum() == 500
    right = [c[::-1][:200] for c in cols]
    idx, found = lookup_rows(cols, right)
    right_rows = list(zip(*(c.tolist() for c in right), strict=True))
    for i, row in enumerate(rows):
        assert found[i] == (row in right_rows)
        if found[i]:
            assert right_rows[idx[i]] == row


def test_first_occurrence_rank_is_lmplz_numbering():
    """lmplz ids: <unk> 0, <s> 1, </s> 2, then words by first appearance."""
    rank = first_occurrence_rank(tokens([[9, 4], [4, 7, 9]]))
    assert rank[:3].tolist() == [0, 1, 2]
    assert (rank[9], rank[4], rank[7]) == (3, 4, 5)
    assert sorted(rank.tolist()) == list(range(len(rank)))
