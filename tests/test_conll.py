"""CoNLL/CoNLL-U readers, tag-scheme conversion, and conlleval scores against seqeval."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from lmpipe.lm.tagging.metrics import accuracy, chunk_scores
from lmpipe.pipelines.conll import ConllError, read_conll, read_predictions, write_predictions
from lmpipe.pipelines.core.tag_schemes import check_scheme, convert, render, spans

CONLL03 = """-DOCSTART- -X- O O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER
-DOCSTART- -X- O O

BRUSSELS NNP I-NP I-LOC
"""

CONLLU = """# sent_id = a
# text = I don't know.
1\tI\tI\tPRON\tPRP\t_\t3\tnsubj\t_\t_
2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_
2\tdo\tdo\tAUX\tVBP\t_\t4\taux\t_\t_
3\tn't\tnot\tPART\tRB\t_\t4\tadvmod\t_\t_
3.1\tknow\t_\t_\t_\t_\t_\t_\t_\t_
4\tknow\tknow\tVERB\tVB\t_\t0\troot\t_\t_

# sent_id = b
1\tYes\tyes\tINTJ\tUH\t_\t0\troot\t_\t_
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_conll2003_reader_skips_docstart_and_keeps_four_columns(tmp_path):
    """-DOCSTART- lines end a sentence and are not tokens; columns come out by name."""
    sents = read_conll(_write(tmp_path, "eng.train", CONLL03), "conll2003")
    assert [s.tokens for s in sents] == [("EU", "rejects", "German"), ("Peter", "Blackburn"), ("BRUSSELS",)]
    assert sents[0].tags["ner"] == ("I-ORG", "O", "I-MISC")
    assert sents[0].tags["pos"] == ("NNP", "VBZ", "JJ")
    assert sents[1].tags["chunk"] == ("I-NP", "I-NP")
    assert [s.line for s in sents] == [3, 7, 11]


def test_conll2000_reader(tmp_path):
    sents = read_conll(_write(tmp_path, "t.txt", "He PRP B-NP\nruns VBZ B-VP\n\nGo VB B-VP\n"), "conll2000")
    assert [s.tags["chunk"] for s in sents] == [("B-NP", "B-VP"), ("B-VP",)]
    assert sents[1].tags["pos"] == ("VB",)


def test_conllu_reader_skips_comments_ranges_and_empty_nodes(tmp_path):
    sents = read_conll(_write(tmp_path, "x.conllu", CONLLU), "conllu")
    assert sents[0].tokens == ("I", "do", "n't", "know")
    assert sents[0].tags["upos"] == ("PRON", "AUX", "PART", "VERB")
    assert sents[0].tags["xpos"] == ("PRP", "VBP", "RB", "VB")
    assert sents[1].tokens == ("Yes",)


@pytest.mark.parametrize(
    ("fmt", "text", "line"),
    [
        ("conll2003", "EU NNP I-NP I-ORG\nrejects VBZ I-VP\n", 2),
        ("conll2000", "He PRP B-NP\n\nx y z w\n", 3),
        ("conllu", "# c\n1\tI\tI\tPRON\tPRP\t_\t3\tnsubj\t_\n", 2),
        ("conllu", "x\tI\tI\tPRON\tPRP\t_\t3\tnsubj\t_\t_\n", 1),
    ],
)
def test_a_malformed_line_names_file_and_line(tmp_path, fmt, text, line):
    path = _write(tmp_path, "bad.txt", text)
    with pytest.raises(ConllError, match=rf"{path}:{line}:"):
        read_conll(path, fmt)


def test_iob1_edge_cases():
    """IOB1: I- starts a chunk after O or another type; B- only between touching chunks of one type."""
    tags = ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG", "I-ORG"]
    assert spans(tags) == [(0, 2, "PER"), (2, 3, "PER"), (4, 5, "LOC"), (5, 7, "ORG")]
    assert convert(tags, "iob1", "iob2") == ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG", "I-ORG"]
    assert convert(tags, "iob1", "bioes") == ["B-PER", "E-PER", "S-PER", "O", "S-LOC", "B-ORG", "E-ORG"]
    # a B- that does not follow a same-type chunk is legal to read but not canonical IOB1
    assert convert(["O", "B-PER", "I-PER"], "iob1", "iob1") == ["O", "I-PER", "I-PER"]
    assert not check_scheme(["O", "B-PER"], "iob1") and check_scheme(["O", "I-PER"], "iob1")
    # B- at the start of a sentence, and I- after B- of another type
    assert spans(["B-PER", "I-LOC"]) == [(0, 1, "PER"), (1, 2, "LOC")]


def _random_chunks(rng: random.Random, n: int) -> list[tuple[int, int, str]]:
    out, i = [], 0
    while i < n:
        if rng.random() < 0.4:
            stop = min(n, i + rng.randint(1, 3))
            out.append((i, stop, rng.choice(["PER", "LOC", "X"])))
            i = stop
        else:
            i += 1
    return out


def test_scheme_round_trips_are_exact():
    """spans(render(c, s)) == c for every scheme, and converting between any two schemes and back is the identity."""
    rng = random.Random(0)
    for _ in range(500):
        n = rng.randint(1, 12)
        chunks = _random_chunks(rng, n)
        for scheme in ("iob1", "iob2", "bioes"):
            tags = render(chunks, n, scheme)
            assert spans(tags) == chunks
            assert check_scheme(tags, scheme)
            for other in ("iob1", "iob2", "bioes"):
                assert convert(convert(tags, scheme, other), other, scheme) == tags


def test_predictions_file_round_trip(tmp_path):
    sents = read_conll(_write(tmp_path, "e", CONLL03), "conll2003")
    gold = [list(s.tags["ner"]) for s in sents]
    pred = [["O"] * len(s.tokens) for s in sents]
    write_predictions(tmp_path / "p.conll", sents, gold, pred)
    assert (tmp_path / "p.conll").read_text().splitlines()[:2] == ["EU I-ORG O", "rejects O O"]
    assert read_predictions(tmp_path / "p.conll") == (gold, pred)


def _random_tags(rng: random.Random, n: int) -> list[str]:
    """Any mix of prefixes and types, invalid sequences included (I- after O, E- without B-, ...)."""
    return [
        rng.choice(["O", "O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "E-LOC", "S-MISC"])
        for _ in range(n)
    ]


def test_conlleval_matches_seqeval_default_mode():
    """Overall and per-type precision, recall and F1 equal seqeval's default (conlleval) mode."""
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

    rng = random.Random(1)
    for _ in range(40):
        gold = [_random_tags(rng, rng.randint(1, 10)) for _ in range(rng.randint(1, 8))]
        pred = [_random_tags(rng, len(g)) for g in gold]
        ours = chunk_scores(gold, pred)
        o = ours["overall"]
        assert o["precision"] == pytest.approx(100 * precision_score(gold, pred, zero_division=0))
        assert o["recall"] == pytest.approx(100 * recall_score(gold, pred, zero_division=0))
        assert o["f1"] == pytest.approx(100 * f1_score(gold, pred, zero_division=0))
        report = classification_report(gold, pred, output_dict=True, zero_division=0)
        for kind, figures in ours["types"].items():
            if figures["gold"]:  # seqeval lists the types that occur in the gold tags
                assert figures["f1"] == pytest.approx(100 * report[kind]["f1-score"])
                assert figures["precision"] == pytest.approx(100 * report[kind]["precision"])


def test_conlleval_hand_counted():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["I-ORG"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG"]]
    s = chunk_scores(gold, pred)
    assert (s["overall"]["correct"], s["overall"]["predicted"], s["overall"]["gold"]) == (2, 3, 3)
    assert s["types"]["LOC"]["recall"] == 0.0 and s["types"]["PER"]["f1"] == 100.0
    assert s["accuracy"] == pytest.approx(100 * 3 / 5)
    assert accuracy([["NN", "VB"]], [["NN", "NN"]])["accuracy"] == 50.0


def test_mirrored_corpora_read_with_their_published_sizes(mirror):
    """Sentence and token counts of ../shared/data/README.md; IOB1 NER survives a BIOES round trip."""
    c03 = {s: read_conll(mirror / "conll2003" / f"eng.{s}", "conll2003") for s in ("train", "testa", "testb")}
    assert [len(v) for v in c03.values()] == [14041, 3250, 3453]
    assert [sum(len(x.tokens) for x in v) for v in c03.values()] == [203621, 51362, 46435]
    odd = 0
    for s in c03["train"]:
        tags = list(s.tags["ner"])
        back = convert(convert(tags, "iob1", "bioes"), "bioes", "iob1")
        assert spans(back) == spans(tags)
        if check_scheme(tags, "iob1"):
            assert back == tags
        else:
            odd += 1
    assert (
        odd == 2
    )  # two sentences open a chunk with B- after O ("the Atlanta/B-MISC Games"): read as conlleval does
    c00 = read_conll(mirror / "conll2000" / "train.txt", "conll2000")
    assert (len(c00), sum(len(s.tokens) for s in c00)) == (8936, 211727)
    ud = read_conll(mirror / "ud-en-ewt" / "en_ewt-ud-train.conllu", "conllu")
    assert (len(ud), sum(len(s.tokens) for s in ud)) == (12544, 204577)
