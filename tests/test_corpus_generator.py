"""bench/corpus_model.py, the generator of large realistic corpora: its samplers against brute force and
closed forms, determinism, and vocabulary growth."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # numba's cache and dataclasses look the module up by name
    spec.loader.exec_module(module)
    return module


cm = _load("corpus_model")

TEXT = "\n".join(
    [
        "the cat sat on the mat",
        "the dog sat on the log",
        "a cat saw a dog",
        "the bird flew over the house",
        "a dog ran to the park",
        "the cat ran after the bird",
        "zebras graze quietly",
        "an old man walked home",
        "the house was quiet",
        "a bird sang in the park",
    ]
    * 3
    + [f"unique{i} words{i} here{i}" for i in range(40)]
)


def test_fenwick_find_equals_a_cumulative_search():
    rng = np.random.default_rng(3)
    weights = rng.random(1000)
    tree = np.zeros(1025)
    for i, w in enumerate(weights):
        cm._fenwick_add(tree, i, w)
    cum = np.cumsum(weights)
    for r in rng.random(500) * cum[-1]:
        assert cm._fenwick_find(tree, r) == np.searchsorted(cum, r)


def test_pitman_yor_types_match_the_expected_count():
    """The Fenwick-tree Pitman-Yor sampler gives E[K_n] of the exact mean recursion (20 runs, 4 s.e.)."""
    theta, d, n = 50.0, 0.6, 20_000
    types = []
    for seed in range(20):
        ids = np.full(n, cm.RARE, dtype=np.int32)
        tree = np.zeros(n + 2)
        k, total = cm._resolve_rare(ids, 100, tree, 0, 0, theta, d, seed)
        assert total == n and k == len(np.unique(ids)) and ids.min() == 100
        types.append(k)
    expected = cm.pyp_expected_types(theta, d, n)
    assert abs(np.mean(types) - expected) < 4 * np.std(types) / np.sqrt(len(types)) + 1


def test_witten_bell_tables_count_every_pair():
    ctx = np.array([5, 5, 5, 7, 7, 5], dtype=np.uint64)
    succ = np.array([1, 2, 1, 3, 3, 1], dtype=np.int32)
    table = cm._csr(ctx, succ)
    assert table.keys.tolist() == [5, 7]
    assert table.succ.tolist() == [1, 2, 3] and table.off.tolist() == [0, 2, 3]
    assert np.diff(np.concatenate([[0], table.cum])).tolist() == [3, 1, 2]
    assert table.lam.tolist() == pytest.approx([4 / 6, 2 / 3])  # c(h) / (c(h) + distinct successors)


def test_generated_text_is_deterministic_and_made_of_the_model_words(tmp_path):
    model = cm.fit(TEXT, order=3)
    a, b, c = (tmp_path / n for n in ("a.txt", "b.txt", "c.txt"))
    stats = cm.write_generated(model, 5_000, a, seed=7, chunk=1_000)
    cm.write_generated(model, 5_000, b, seed=7, chunk=1_000)
    cm.write_generated(model, 5_000, c, seed=8, chunk=1_000)
    assert a.read_bytes() == b.read_bytes() and a.read_bytes() != c.read_bytes()
    lines = a.read_text().splitlines()
    assert len(lines) == stats["sentences"] and all(lines)
    words = [w for ln in lines for w in ln.split()]
    assert len(words) == stats["tokens"] >= 5_000
    common = set(model.words[cm.FIRST :].tolist())
    rare = [w for w in words if w not in common]
    assert len(set(rare)) == stats["rare_types"] > len(model.rare_words)  # new forms beyond the real hapaxes
    assert not {"<s>", "</s>", "<rare>"} & set(words)


def test_vocabulary_grows_with_size(tmp_path):
    model = cm.fit(TEXT, order=3)
    small = cm.write_generated(model, 2_000, tmp_path / "s.txt", seed=1)
    large = cm.write_generated(model, 20_000, tmp_path / "l.txt", seed=1)
    assert large["vocabulary"] > small["vocabulary"]
