"""Co-occurrence counting: exact values against a brute-force reference, symmetry, and merge(split(x)) ==
count(x) across chunks, blocks, spills and partitions (the cooccur stage's tasks called as plain functions)."""

from __future__ import annotations

from collections import defaultdict
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from lmpipe.embeddings.cooccur import (
    CooccurConfig,
    CooccurCounter,
    cooc_table,
    count_sentences,
    dense_ids,
    merge_partials,
    partial_table,
    vocabulary_cut,
)
from lmpipe.pipelines.core.schemas import TOKENS
from lmpipe.pipelines.spec import CooccurSpec, SpecError, parse_spec
from lmpipe.pipelines.stages.cooccur import _count_task, _merge_task, plan_memory


def brute_force(sentences, keep, window, symmetric=True, weighting=True, docs=None):
    """GloVe's cooccur.c loop in plain Python with exact fractions: out-of-cut words are skipped (they hold no
    position); for each word, every earlier kept word of the same segment within ``window`` adds 1/d."""
    rows: dict[tuple[int, int], Fraction] = defaultdict(Fraction)
    segments: list[list[int]] = []
    for i, sentence in enumerate(sentences):
        words = [int(w) for w in sentence if int(w) in keep]
        if docs is not None and i > 0 and docs[i] == docs[i - 1]:
            segments[-1].extend(words)  # a document continues across sentences
        else:
            segments.append(words)
    for words in segments:
        for j, w2 in enumerate(words):
            for k in range(max(0, j - window), j):
                w1, value = words[k], Fraction(1, j - k) if weighting else Fraction(1)
                rows[(keep[w1], keep[w2])] += value
                if symmetric:
                    rows[(keep[w2], keep[w1])] += value
    return {key: float(v) for key, v in rows.items()}


def as_dict(keys: np.ndarray, units: np.ndarray, scale: int) -> dict[tuple[int, int], float]:
    table = cooc_table(keys, units, scale)
    return {
        (r, c): v
        for r, c, v in zip(
            table["row"].to_pylist(), table["col"].to_pylist(), table["value"].to_pylist(), strict=True
        )
    }


def corpus(seed: int = 0, sentences: int = 60, vocab: int = 40) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        np.minimum(rng.zipf(1.5, rng.integers(0, 14)), vocab - 1).astype(np.uint32) + 2
        for _ in range(sentences)
    ]


CONFIGS = [
    CooccurConfig(window=3),
    CooccurConfig(window=1),
    CooccurConfig(window=10, symmetric=False),
    CooccurConfig(window=4, distance_weighting=False),
]


@pytest.mark.parametrize(
    "config", CONFIGS, ids=lambda c: f"w{c.window}-s{c.symmetric}-d{c.distance_weighting}"
)
def test_counts_equal_a_brute_force_reference_exactly(config):
    """1/d weights, sentence boundaries and the min_count cut (out-of-cut words hold no position)."""
    sentences = corpus()
    counts = np.bincount(np.concatenate(sentences), minlength=45)
    keep_ids = vocabulary_cut(counts, min_count=3, max_size=None)
    assert 0 < len(keep_ids) < len(np.flatnonzero(counts))  # the cut removes some words
    mapping = dense_ids(keep_ids, len(counts))
    dense = [mapping[s][mapping[s] >= 0] for s in sentences]
    keys, units = count_sentences(dense, config)
    expected = brute_force(
        sentences,
        {int(w): i for i, w in enumerate(keep_ids)},
        config.window,
        config.symmetric,
        config.distance_weighting,
    )
    assert as_dict(keys, units, config.scale) == expected  # same pairs, every float bit-identical


def test_hand_computed_example():
    """'a b x c' with x cut, window 2: x holds no position, so a-c are at distance 2 (GloVe's semantics)."""
    keys, units = count_sentences(
        [np.array([0, 1, 2]), np.array([2])], CooccurConfig(window=2, symmetric=False)
    )
    assert as_dict(keys, units, CooccurConfig(window=2).scale) == {(0, 1): 1.0, (0, 2): 0.5, (1, 2): 1.0}


def test_symmetric_counts_are_symmetric_and_the_sum_of_both_directions():
    sentences = corpus(seed=3)
    sym = as_dict(*count_sentences(sentences, CooccurConfig(window=5)), CooccurConfig(window=5).scale)
    left = as_dict(
        *count_sentences(sentences, CooccurConfig(window=5, symmetric=False)), CooccurConfig(window=5).scale
    )
    assert all(sym[(c, r)] == v for (r, c), v in sym.items())
    both = defaultdict(float)
    for (r, c), v in left.items():
        both[(r, c)] += v
        both[(c, r)] += v
    assert sym.keys() == both.keys()
    np.testing.assert_allclose([sym[k] for k in sym], [both[k] for k in sym], rtol=1e-15)


def test_chunks_and_spills_do_not_change_the_counts():
    """Tiny chunks (carry across chunk cuts) and a tiny accumulator (many spills), merged: the same exact sums."""
    sentences = corpus(seed=5, sentences=200)
    config = CooccurConfig(window=4)
    whole = count_sentences(sentences, config)
    spilled: list[pa.Table] = []
    counter = CooccurCounter(
        config, chunk_tokens=7, max_pairs=50, spill=lambda k, u: spilled.append(partial_table(k, u))
    )
    for i, s in enumerate(sentences):
        counter.add(s, np.full(len(s), i))
    counter.flush()
    assert counter.spills > 10
    keys, units = merge_partials(spilled)
    assert np.array_equal(keys, whole[0]) and np.array_equal(units, whole[1])


# ------------------------------------------------------------------------------------------ stage tasks
def write_shards(folder: Path, sentences, docs, per_shard: int) -> list[str]:
    paths = []
    for a in range(0, len(sentences), per_shard):
        part = sentences[a : a + per_shard]
        table = pa.table(
            {
                "source": pa.array([0] * len(part), pa.uint32()),
                "position": pa.array(range(a, a + len(part)), pa.uint64()),
                "doc": pa.array(docs[a : a + len(part)], pa.uint64()),
                "ids": pa.array(
                    [s.tolist() for s in part], pa.list_(pa.field("item", pa.uint32(), nullable=False))
                ),
            },
            schema=TOKENS,
        )
        path = folder / f"part-{a:05d}-000.arrow"
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, TOKENS) as writer:
            for batch in table.to_batches(max_chunksize=3):  # several record batches per shard
                writer.write_batch(batch)
        paths.append(str(path))
    return paths


def run_tasks_inline(paths, blocks, mapping, config, boundary, work, partitions, max_pairs) -> dict:
    bounds = np.linspace(0, len(paths), blocks + 1).round().astype(int)
    for i in range(blocks):
        block = paths[bounds[i] : bounds[i + 1]]
        previous = paths[: bounds[i]][::-1]
        _count_task(block, previous, mapping, config, boundary, str(work), partitions, i, 5, max_pairs)
    out = work.parent / f"{work.name}-out"
    merged = [_merge_task(str(work), str(out), p, config.scale) for p in range(partitions)]
    files = sorted(out.glob("part-*.arrow"))
    assert len(files) == sum(1 for m in merged if m["nonzeros"])
    tables = [pa.ipc.open_file(pa.memory_map(str(f))).read_all() for f in files]
    result = {}
    for t in tables:
        pairs = list(zip(t["row"].to_pylist(), t["col"].to_pylist(), strict=True))
        assert pairs == sorted(pairs)  # each output file sorted by (row, col)
        for pair, v in zip(pairs, t["value"].to_pylist(), strict=True):
            assert pair not in result  # every entry in exactly one partition
            result[pair] = v
    return result


@pytest.mark.parametrize("boundary", ["sentence", "document"])
def test_merge_of_split_equals_count_across_blocks_and_partitions(tmp_path, boundary):
    """Shards in 1 or 3 blocks, 1 or 5 partitions, accumulators spilled every few pairs: identical output,
    equal to the brute-force reference.  Documents span shards and blocks."""
    sentences = [s + 1 for s in corpus(seed=7, sentences=40)]  # ids >= 3: ordinary words
    docs = [i // 7 for i in range(len(sentences))]  # documents of 7 sentences, crossing shard boundaries
    paths = write_shards(tmp_path, sentences, docs, per_shard=4)
    counts = np.bincount(np.concatenate(sentences), minlength=50).astype(np.uint64)
    keep_ids = vocabulary_cut(counts, min_count=2, max_size=15)  # ids are not by count here: a plain cut
    assert len(keep_ids) == 15 and len(np.flatnonzero(counts >= 2)) > 15
    mapping = dense_ids(keep_ids, len(counts))
    config = CooccurConfig(window=3)
    expected = brute_force(
        sentences,
        {int(w): i for i, w in enumerate(keep_ids)},
        3,
        docs=docs if boundary == "document" else None,
    )
    for blocks, partitions, max_pairs in [(1, 1, 10**9), (3, 5, 20), (10, 2, 7)]:
        work = tmp_path / f"work-{blocks}-{partitions}-{max_pairs}"
        got = run_tasks_inline(paths, blocks, mapping, config, boundary, work, partitions, max_pairs)
        assert got == expected, (blocks, partitions, max_pairs)
    if boundary == "document":  # the windows really did cross sentences
        assert expected != brute_force(sentences, {int(w): i for i, w in enumerate(keep_ids)}, 3)


# ------------------------------------------------------------------------------------------ spec, memory
def test_memory_budget_sets_partitions():
    small = plan_memory(CooccurSpec(memory_mb=64, partitions=1), train_tokens=10_000_000, vocab_size=100_000)
    large = plan_memory(
        CooccurSpec(memory_mb=4096, partitions=1), train_tokens=10_000_000, vocab_size=100_000
    )
    assert small[0] > large[0] >= 1 and small[1] < large[1] and small[2] < large[2]
    assert plan_memory(CooccurSpec(partitions=4), train_tokens=100, vocab_size=10)[0] == 4


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("cooccur", "window", 0, "cooccur.window: bad value 0"),
        ("cooccur", "window", 21, "cooccur.window: bad value 21"),
        ("cooccur", "boundary", "paragraph", "cooccur.boundary: bad value 'paragraph'"),
        ("cooccur", "min_count", 0, "cooccur.min_count: bad value 0"),
        ("glove", "x_max", 0, "glove.x_max: bad value 0.0"),
        ("glove", "x_max", -5, "glove.x_max: bad value -5.0"),
        ("glove", "alpha", 0, "glove.alpha: bad value 0.0"),
        ("glove", "alpha", 1.5, "glove.alpha: bad value 1.5"),
        ("glove", "eta", 0, "glove.eta: bad value 0.0"),
        ("glove", "output", "context", "glove.output: bad value 'context'"),
    ],
)
def test_bad_spec_values_are_refused_naming_file_key_and_value(section, key, value, message):
    with pytest.raises(SpecError, match=f"^spec.yaml: {message}"):
        parse_spec({"name": "x", "corpus": {"train": "t.txt"}, section: {key: value}}, source="spec.yaml")


def test_spec_defaults_are_glove_papers():
    spec = parse_spec({"name": "x", "corpus": {"train": "t.txt"}})
    assert (spec.cooccur.window, spec.cooccur.symmetric, spec.cooccur.distance_weighting) == (10, True, True)
    g = spec.glove
    assert (g.x_max, g.alpha, g.eta, g.grad_clip, g.epochs, g.output) == (100.0, 0.75, 0.05, 100.0, 25, "sum")
    assert parse_spec({"name": "x", "corpus": {"train": "t"}, "glove": {"alpha": 1}}).glove.alpha == 1.0
