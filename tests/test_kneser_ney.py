"""lm.kneser_ney: hand-computed counts and probabilities, invariants, and parity with KenLM's lmplz.

Parity criterion (the n-gram issue): the same n-gram set in every order and every log10 prob and backoff
within 1e-4 of lmplz's ARPA.  In practice the values agree to float32 rounding (<= 5e-7).
"""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from lmpipe.lm.arpa import compare_arpa, read_arpa, write_arpa
from lmpipe.lm.kenlm_tools import KenLMError, kenlm_available, run_lmplz
from lmpipe.lm.kneser_ney import (
    BadDiscountError,
    Discount,
    KneserNeyConfig,
    LastEntry,
    OrderStats,
    adjust_counts_step,
    best_left_extension_step,
    compute_discounts,
    estimate,
    last_entry_correction,
)
from lmpipe.lm.ngram_counts import count_ngrams, first_occurrence_rank
from lmpipe.pipelines.core.schemas import BOS_ID, EOS_ID, SPECIALS, UNK, UNK_ID

TOLERANCE = 1e-4
needs_lmplz = pytest.mark.skipif(
    not kenlm_available(), reason="lmplz/build_binary not found; build them with .ci/build_kenlm.sh"
)

TINY = ["a b c", "a b", "c a b a", "b"]
ENGLISH = """the cat sat on the mat
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
the dog and the bird met
cat
the the the
a bird ran to a mat""".splitlines()
#: Two trailing lines make "zebra" lmplz's last word with raw count 2 but adjusted count 1 (see
#: ``last_entry_correction``); without the correction the model differs from lmplz by 0.034 in log10 p.
QUIRK = [*ENGLISH, "the zebra", "the zebra"]


def synthetic(seed: int, lines: int, vocab: int, max_len: int) -> list[str]:
    """Sentences from a random second-order Markov chain over Zipfian words, a few successors per context.

    Plain random text has too few repeated long n-grams for closed-form discounts at orders 4+; a
    low-entropy chain repeats them with natural-looking counts-of-counts.  Python's ``random`` is used so
    the corpus does not depend on the numpy version.
    """
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocab)]
    weights = [1.0 / (i + 1) for i in range(vocab)]
    successors: dict[tuple[str, str], list[str]] = {}
    out = []
    for _ in range(lines):
        sentence = ["<s>", "<s>"]
        for _ in range(rng.randint(1, max_len)):
            context = (sentence[-2], sentence[-1])
            if context not in successors:
                successors[context] = rng.choices(words, weights, k=rng.randint(1, 6))
            sentence.append(rng.choice(successors[context]))
        out.append(" ".join(sentence[2:]))
    return out


SYN = synthetic(1, 600, 100, 12)  # closed-form discounts at every order 1..6


def encode(lines: list[str], unk_token: str | None = None) -> tuple[list[str], pa.Table]:
    """Vocabulary as the pipeline builds it (specials, then by descending count) and the TOKENS ``ids``.

    ``unk_token`` in the text is mapped to id 0 (as a tokenizer maps out-of-vocabulary words).
    """
    counts = Counter(w for line in lines for w in line.split() if w != unk_token)
    vocab = list(SPECIALS) + sorted(counts, key=lambda w: (-counts[w], w.encode()))
    index = {w: i for i, w in enumerate(vocab)}
    if unk_token is not None:
        index[unk_token] = UNK_ID
    ids = [[index[w] for w in line.split()] for line in lines]
    return vocab, pa.table({"ids": pa.array(ids, pa.list_(pa.uint32()))})


def ours(tmp_path: Path, lines, order, config=None, *, unk="error", unk_token=None, limit=None, partitions=1):
    vocab, table = encode(lines, unk_token)
    model = estimate(
        count_ngrams(table, order, unk=unk),
        vocab,
        config or KneserNeyConfig(order=order),
        limit_vocab=limit,
        word_rank=first_occurrence_rank(table, unk=unk),
        num_partitions=partitions,
    )
    return model, write_arpa(model.tables, vocab, tmp_path / "ours.arpa")


def lmplz(tmp_path: Path, lines, order, args=()) -> Path:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n")
    run_lmplz(corpus, order, tmp_path / "lmplz.arpa", memory="64M", extra_args=list(args), temp_prefix=tmp_path)
    return tmp_path / "lmplz.arpa"


def assert_parity(ours_arpa: Path, lmplz_arpa: Path) -> float:
    diff = compare_arpa(read_arpa(ours_arpa), read_arpa(lmplz_arpa))
    assert diff.same_ngrams, f"n-gram sets differ: only ours {diff.only_left}, only lmplz {diff.only_right}"
    assert diff.max_prob_diff <= TOLERANCE and diff.max_backoff_diff <= TOLERANCE, diff
    return max(diff.max_prob_diff, diff.max_backoff_diff)


def as_dict(table: pa.Table, value: str) -> dict[tuple[int, ...], int]:
    order = sum(1 for c in table.column_names if c.startswith("w"))
    keys = zip(*(table.column(f"w{i}").to_pylist() for i in range(order)), strict=True)
    return dict(zip(keys, table.column(value).to_pylist(), strict=True))


# ----------------------------------------------------------------------------------------------------
# Hand-computed values
# ----------------------------------------------------------------------------------------------------


def test_adjusted_counts_by_hand():
    """Adjusted counts of TINY: distinct left extensions, raw counts for <s>-initial and highest-order n-grams."""
    vocab, table = encode(TINY)
    a, b, c = (vocab.index(w) for w in "abc")
    raw = count_ngrams(table, 3)
    uni = as_dict(adjust_counts_step(raw[1], raw[2]), "adjusted")
    assert uni == {(EOS_ID,): 3, (a,): 3, (b,): 2, (c,): 2}  # </s> after c, b, a; a after <s>, c, b; ...
    bi = adjust_counts_step(raw[2], raw[3])
    assert as_dict(bi, "adjusted") == {
        (BOS_ID, a): 2, (BOS_ID, b): 1, (BOS_ID, c): 1,  # raw counts: sentences starting so
        (a, b): 2, (a, EOS_ID): 1, (b, a): 1, (b, c): 1, (b, EOS_ID): 2, (c, a): 1, (c, EOS_ID): 1,
    }
    assert as_dict(bi, "raw")[(a, b)] == 3
    tri = adjust_counts_step(raw[3], None, prune_threshold=1)
    assert as_dict(tri, "adjusted") == as_dict(raw[3], "count")
    assert as_dict(tri, "pruned") == {k: v <= 1 for k, v in as_dict(raw[3], "count").items()}


def test_probabilities_by_hand(tmp_path):
    """TINY with fallback discounts 0.5/1/1.5, worked through by hand (values match lmplz's ARPA)."""
    model, _ = ours(tmp_path, TINY, 3, KneserNeyConfig(order=3, discount_fallback=(0.5, 1.0, 1.5)))
    vocab, _ = encode(TINY)
    a, b = vocab.index("a"), vocab.index("b")
    uni_p, uni_b = as_dict(model.tables[1], "prob"), as_dict(model.tables[1], "backoff")
    # unigram denominator 10 (a 3, b 2, c 2, </s> 3); gamma = (1*2 + 1.5*2)/10 = 0.5; |V| = 5
    assert uni_p[(a,)] == pytest.approx(np.log10((3 - 1.5) / 10 + 0.5 / 5), abs=1e-6)
    assert uni_p[(b,)] == pytest.approx(np.log10((2 - 1.0) / 10 + 0.5 / 5), abs=1e-6)
    assert uni_p[(UNK_ID,)] == pytest.approx(np.log10(0.5 / 5), abs=1e-6)
    assert uni_p[(BOS_ID,)] == 0.0
    # context a: (a b) a=2, (a </s>) a=1 -> denominator 3, gamma(a) = (0.5 + 1)/3 = 0.5
    bi_p = as_dict(model.tables[2], "prob")
    assert bi_p[(a, b)] == pytest.approx(np.log10((2 - 1.0) / 3 + 0.5 * 0.2), abs=1e-6)
    assert uni_b[(a,)] == pytest.approx(np.log10(0.5), abs=1e-6)
    assert uni_b[(EOS_ID,)] == 0.0  # </s> is never a context
    assert model.vocab_size == 5
    assert [model.tables[k].num_rows for k in (1, 2, 3)] == [6, 10, 9]


def test_discounts_closed_form_and_errors():
    stats = {1: OrderStats(10, 10, (40, 20, 10, 5)), 2: OrderStats(5, 5, (3, 0, 1, 1))}
    with pytest.raises(BadDiscountError, match=r"2-grams.*adjusted count 3.*n1..n4 = \(3, 0, 1, 1\).*discount_fallback"):
        compute_discounts(stats)
    d = compute_discounts({1: stats[1]})[1]
    y = 40 / (40 + 2 * 20)
    assert (d.d1, d.d2, d.d3) == pytest.approx((1 - 2 * y * 20 / 40, 2 - 3 * y * 10 / 20, 3 - 4 * y * 5 / 10), abs=1e-6)
    fallback = Discount(0.5, 1.0, 1.5)
    assert compute_discounts(stats, fallback)[2] == fallback
    with pytest.raises(BadDiscountError, match="adjusted count 2: -2"):  # D2 = 2 - 3 (10/12) 100/1 < 0
        compute_discounts({1: OrderStats(0, 0, (10, 1, 100, 1))})


def test_config_validation():
    with pytest.raises(ValueError, match="non-decreasing"):
        KneserNeyConfig(order=3, prune=(0, 2, 1))
    with pytest.raises(ValueError, match="order is 2"):
        KneserNeyConfig(order=2, prune=(0, 1, 1))
    with pytest.raises(ValueError, match="requires interpolate_unigrams"):
        KneserNeyConfig(order=3, vocab_pad=100, interpolate_unigrams=False)
    with pytest.raises(ValueError, match=r"not in \[0, 2\]"):
        KneserNeyConfig(order=3, discount_fallback=(0.5, 2.5))
    assert KneserNeyConfig(order=4, prune=(0, 1)).thresholds() == (0, 1, 1, 1)
    assert KneserNeyConfig(order=3, discount_fallback=(0.7,)).fallback() == Discount(*(float(np.float32(0.7)),) * 3)


def test_last_entry_correction_by_hand():
    """QUIRK: lmplz's last unigram is 'zebra' (raw 2, adjusted 1) so one unigram moves from n1 to n2."""
    vocab, table = encode(QUIRK)
    raw = count_ngrams(table, 2)
    adjusted = {1: [adjust_counts_step(raw[1], raw[2])], 2: [adjust_counts_step(raw[2], None)]}
    rank = first_occurrence_rank(table)

    def find(k: int, suffix: tuple[int, ...]) -> LastEntry | None:
        return best_left_extension_step(adjusted[k][0], suffix, rank)

    assert find(1, ()).words == (vocab.index("zebra"),)
    assert last_entry_correction(find, 2) == {1: OrderStats(0, 0, (-1, 1, 0, 0))}
    assert last_entry_correction(adjusted, 2, rank) == {1: OrderStats(0, 0, (-1, 1, 0, 0))}  # partitions form


# ----------------------------------------------------------------------------------------------------
# Invariants
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config,limit",
    [
        (KneserNeyConfig(order=3), None),
        (KneserNeyConfig(order=4, prune=(0, 1, 1, 2)), None),
        (KneserNeyConfig(order=3, interpolate_unigrams=False), None),
        (KneserNeyConfig(order=3), [f"w{i}" for i in range(30)]),
    ],
    ids=["plain", "pruned", "sri-unigrams", "limit-vocab"],
)
def test_model_normalises(tmp_path, config, limit):
    """sum_w p(w | h) = 1 for every context h in the model, querying the tables with ARPA backoff semantics."""
    model, _ = ours(tmp_path, SYN, config.order, config, limit=limit)
    probs = {k: as_dict(t, "prob") for k, t in model.tables.items()}
    backoffs = {k: as_dict(t, "backoff") for k, t in model.tables.items() if k < model.order}
    words = [w for (w,) in probs[1] if w != BOS_ID]

    def logp(context: tuple[int, ...], w: int) -> float:
        penalty = 0.0
        while True:
            gram = (*context, w)
            if gram in probs[len(gram)]:
                return penalty + probs[len(gram)][gram]
            penalty += backoffs[len(context)].get(context, 0.0) if context else 0.0
            context = context[1:]

    contexts = [()] + [g for k in backoffs for g in probs[k] if g[-1] != EOS_ID]
    for context in contexts[:: max(1, len(contexts) // 150)]:
        total = sum(10.0 ** logp(context, w) for w in words)
        assert total == pytest.approx(1.0, abs=2e-5), context


def test_partitioning_does_not_change_the_model(tmp_path):
    """The steps are exact per hash partition: 1 and 4 partitions give identical tables."""
    config = KneserNeyConfig(order=4, prune=(0, 0, 1))
    one, _ = ours(tmp_path, SYN, 4, config, partitions=1)
    four, _ = ours(tmp_path, SYN, 4, config, partitions=4)
    for k in range(1, 5):
        assert one.tables[k].equals(four.tables[k])
    assert one.discounts == four.discounts and one.stats == four.stats


def test_folder_store_and_counted_map_give_the_memory_model(tmp_path):
    """The ngram stage's way (counts in a folder store, MODEL left there, every task through ``map_fn``)
    gives the same tables as the in-memory default, and every step goes through ``map_fn``."""
    from lmpipe.lm.ngram_counts import key_columns
    from lmpipe.pipelines.partitions import DirectoryStore, read_table

    config = KneserNeyConfig(order=4, prune=(0, 0, 1))
    memory, _ = ours(tmp_path, SYN, 4, config, partitions=3)
    vocab, table = encode(SYN)
    store = DirectoryStore(tmp_path / "store")
    for k, counts in count_ngrams(table, 4).items():
        store.write(f"counts{k}", counts, key_columns(k), 3, "0")
    seen: list[str] = []

    def counted_map(fn, calls, desc):
        seen.append(desc)
        return [fn(*args) for args in calls]

    folder = estimate(
        None, vocab, config, word_rank=first_occurrence_rank(table), num_partitions=3, map_fn=counted_map,
        store=store,
    )  # fmt: skip
    assert folder.tables == {}
    assert {"adjust", "last entry", "unigrams", "probabilities 4", "backoff", "interpolate 4"} <= set(seen)
    for k in range(1, 5):
        parts = [read_table(path) for path in store.pieces(f"model{k}")]
        got = pa.concat_tables(parts).sort_by([(f"w{i}", "ascending") for i in range(k)])
        assert got.equals(memory.tables[k]) and folder.ngrams[k] == memory.tables[k].num_rows
    assert folder.discounts == memory.discounts and folder.stats == memory.stats
    # Only the input and the model are left in the store.
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == [f"{d}{k}" for d in ("counts", "model") for k in range(1, 5)]


@pytest.mark.parametrize("store_kind", ["memory", "folder"])
def test_retried_tasks_return_their_receipts_after_releasing_their_inputs(tmp_path, store_kind):
    """Ray reruns a task whose worker died, also one that had finished its work: every task of every step
    is run twice here.  A task that released its inputs (``consuming``) must return its recorded result
    the second time and leave the outputs as they were, so the model is the one of a clean run; and each
    step's consumed inputs are gone by the time the step ends, before the driver drops them."""
    from lmpipe.lm.kneser_ney import MemoryStore
    from lmpipe.lm.ngram_counts import key_columns
    from lmpipe.pipelines.partitions import DirectoryStore

    config = KneserNeyConfig(order=4, prune=(0, 0, 1))
    memory, _ = ours(tmp_path, SYN, 4, config, partitions=3)
    vocab, table = encode(SYN)
    store = MemoryStore() if store_kind == "memory" else DirectoryStore(tmp_path / "store")
    for k, counts in count_ngrams(table, 4).items():
        store.write(f"counts{k}", counts, key_columns(k), 3, "0")
    consumed = {"adjust": ["suffix2", "suffix3", "suffix4"], "probabilities 3": ["adjctx3"],
                "interpolate 3": ["interp2", "uninterp3", "gamma2"], "backoff": ["interp4"]}  # fmt: skip
    released: dict[str, list[bool]] = {}

    def twice(fn, calls, desc):
        assert all(store.read(name, q) is not None for name in consumed.get(desc, []) for q in range(3)), desc
        first = [fn(*args) for args in calls]
        assert [fn(*args) for args in calls] == first, desc
        released[desc] = [store.read(name, q) is None for name in consumed.get(desc, []) for q in range(3)]
        return first

    got = estimate(
        None, vocab, config, word_rank=first_occurrence_rank(table), num_partitions=3, map_fn=twice, store=store,
        counts_by_suffix=False,
    )  # fmt: skip
    for desc in consumed:
        assert released[desc] and all(released[desc]), desc
    for k in range(1, 5):
        parts = [store.read(f"model{k}", q) for q in range(3)]
        model = pa.concat_tables([t for t in parts if t is not None]).sort_by([(f"w{i}", "ascending") for i in range(k)])
        assert model.equals(memory.tables[k]) and got.ngrams[k] == memory.tables[k].num_rows
    assert got.discounts == memory.discounts and got.stats == memory.stats
    if store_kind == "folder":  # receipts are dropped after each step
        assert not (tmp_path / "store" / "_receipts").exists()


def test_empty_corpus_fails_fast():
    empty = pa.table({"ids": pa.array([], pa.list_(pa.uint32()))})
    with pytest.raises(ValueError, match="no sentences"):
        estimate(count_ngrams(empty, 3), list(SPECIALS), KneserNeyConfig(order=3))


def test_counts_from_another_partitioning_are_rejected():
    raw = count_ngrams(encode(TINY)[1], 2)
    with pytest.raises(ValueError, match="no left extension"):
        adjust_counts_step(raw[1], raw[2].slice(0, 2))


# ----------------------------------------------------------------------------------------------------
# Parity with lmplz
# ----------------------------------------------------------------------------------------------------

FALLBACK = (["--discount_fallback"], {"discount_fallback": (0.5, 1.0, 1.5)})
MIXED = (
    ["x"] * 5 + ["y", "z", ""]  # one-word lines and an empty line
    + synthetic(3, 40, 15, 6) * 3  # duplicated lines
    + [f"u{i}" for i in range(40)] + [f"a{i} b{i} c{i}" for i in range(30)]  # singletons (OOV-like)
)
random.Random(0).shuffle(MIXED)
CASES = {
    # name: (lines, order, lmplz args, config kwargs, estimate kwargs)
    "fallback-tiny": (TINY, 3, *FALLBACK, {}),
    "english-o3": (ENGLISH, 3, *FALLBACK, {}),
    "synthetic-o3": (SYN, 3, [], {}, {}),
    "synthetic-o5": (SYN, 5, [], {}, {}),
    "synthetic-o6": (SYN, 6, [], {}, {}),
    "order-1": (SYN, 1, [], {}, {}),
    "mixed-o2": (MIXED, 2, *FALLBACK, {}),
    "mixed-o4": (MIXED, 4, *FALLBACK, {}),
    "prune-o4": (SYN, 4, ["--prune", "0", "1", "1", "2"], {"prune": (0, 1, 1, 2)}, {}),
    "prune-unigrams": (SYN, 3, ["--prune", "1", "1", "2"], {"prune": (1, 1, 2)}, {}),
    "interpolate-unigrams-0": (SYN, 3, ["--interpolate_unigrams", "0"], {"interpolate_unigrams": False}, {}),
    "vocab-pad": (SYN, 3, ["--vocab_pad", "5000"], {"vocab_pad": 5000}, {}),
    "limit-vocab": (SYN, 4, ["--limit_vocab_file", "{limit}"], {}, {"limit": [f"w{i}" for i in range(40)] + ["nope"]}),
    "limit-vocab-prune": (
        SYN, 3, ["--limit_vocab_file", "{limit}", "--prune", "0", "1"], {"prune": (0, 1)},
        {"limit": [f"w{i}" for i in range(0, 80, 2)]},
    ),
    "oov-skip": (
        [line.replace("w7", UNK).replace("w9", "<s>") for line in SYN], 3, ["--skip_symbols"], {},
        {"unk": "skip", "unk_token": UNK},
    ),
    "lmplz-quirk-o2": (QUIRK, 2, [], {}, {}),
    "lmplz-quirk-o3": (QUIRK, 3, [], {}, {}),
}


@needs_lmplz
@pytest.mark.kenlm
@pytest.mark.parametrize("partitions", [1, 3])
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_lmplz(tmp_path, case, partitions):
    lines, order, args, config_kwargs, kwargs = CASES[case]
    kwargs = dict(kwargs)
    if case == "oov-skip":  # "<s>" in the text is also skipped; map it to <unk> so ids stay words
        lines = [line.replace("<s>", UNK) for line in lines]
    if "limit" in kwargs:
        (tmp_path / "limit.txt").write_text(" ".join(kwargs["limit"]) + "\n")
        args = [a.replace("{limit}", str(tmp_path / "limit.txt")) for a in args]
    reference = lmplz(tmp_path, lines, order, args)
    _, arpa = ours(tmp_path, lines, order, KneserNeyConfig(order=order, **config_kwargs), partitions=partitions, **kwargs)
    assert_parity(arpa, reference)


@needs_lmplz
@pytest.mark.kenlm
def test_bad_discounts_fail_like_lmplz(tmp_path):
    """Without --discount_fallback both refuse TINY, naming the same order."""
    with pytest.raises(KenLMError, match="1-grams with adjusted count 2"):
        lmplz(tmp_path, TINY, 3)
    with pytest.raises(BadDiscountError, match="1-grams with adjusted count 2.*discount_fallback"):
        ours(tmp_path, TINY, 3)


def ptb_lines() -> list[str]:
    mirror = os.environ.get("LMPIPE_DATA_MIRROR")
    if not mirror:
        pytest.skip("LMPIPE_DATA_MIRROR is not set; it should point at the dataset mirror holding ptb/")
    path = Path(mirror) / "ptb" / "ptb.train.txt"
    if not path.is_file():
        pytest.skip(f"{path} not found in the dataset mirror")
    # PTB writes <unk> literally, which lmplz refuses: make it an ordinary word on both sides.
    return path.read_text().replace("<unk>", "<UNK>").splitlines()


@needs_lmplz
@pytest.mark.kenlm
@pytest.mark.parametrize("order", [3, 5])
def test_matches_lmplz_on_ptb(tmp_path, order):
    lines = ptb_lines()
    reference = lmplz(tmp_path, lines, order)
    model, arpa = ours(tmp_path, lines, order, partitions=2)
    assert model.tables[1].num_rows == 10002  # 10k words with <UNK>, plus <unk> and <s>
    assert_parity(arpa, reference)
