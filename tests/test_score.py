"""``lmpipe score`` on the tiny run: equal to ``lmpipe eval`` and the lm/mix stages' test figures, per line equal to
``kenlm.Model`` on the raw (lowercased) line, the filter, 1 vs 2 workers byte for byte, a sentencepiece run's ids
equal to its tokenize shards, bad input (exit 2, one line)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pyarrow.parquet as pq
import pytest

from lmpipe.pipelines.cli import main
from lmpipe.pipelines.evaluate import evaluate_ngram, split_id_sentences
from lmpipe.pipelines.rundir import read_manifest
from lmpipe.pipelines.score import score_files
from tests.conftest import SPECS

TEST_FILE = SPECS / "tiny" / "test.txt"
MIX = "kn3+lstm"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, ray_local):
    """tokenize, ngram (order 3), one small LSTM scored with the state reset per sentence, and their mixture."""
    run = tmp_path_factory.mktemp("score") / "run"
    rc = main(
        [
            "run", str(SPECS / "tiny.yaml"), "--run-dir", str(run), "--stages", "tokenize,ngram,lm,mix",
            "--set", "lm.eval_state=reset",
            "--set", "mix.mixtures=[{models: [kn3, lstm]}]",
        ]
    )  # fmt: skip
    assert rc == 0
    return run


def _same_figures(summary, expected, rel=1e-7):
    """Counts equal; sums equal to float32 rounding.  n-gram: ``lmpipe score`` adds each line's float32 token
    probabilities in a float32 (``kenlm.Model.score``'s C++ loop, the totals ``query`` prints) where ``lmpipe
    eval`` adds them in float64; neural: the batches of sentences are laid out differently from the lm stage's
    evaluation."""
    for key in ("tokens", "sentences", "oov"):
        assert summary[key] == expected[key], key
    for key in ("log10_sum", "perplexity", "perplexity_excluding_oov"):
        assert summary[key] == pytest.approx(expected[key], rel=rel), key


def test_score_equals_eval_for_kn_lstm_and_mixture(tiny_run, tmp_path):
    kn = score_files(tiny_run, "kn3", [TEST_FILE], out=tmp_path / "kn.jsonl")
    _same_figures(kn, evaluate_ngram(tiny_run, "test"))
    lstm = score_files(tiny_run, "lstm", [TEST_FILE], out=tmp_path / "lstm.parquet")
    _same_figures(lstm, read_manifest(tiny_run, "lm")["models"]["lstm"]["perplexity"]["test"])
    mix = score_files(tiny_run, MIX, [TEST_FILE])
    _same_figures(mix, read_manifest(tiny_run, "mix")["mixtures"][MIX]["perplexity"]["test"])
    assert json.loads((tmp_path / "kn.summary.json").read_text())["perplexity"] == kn["perplexity"]
    assert pq.read_table(tmp_path / "lstm.parquet").num_rows == lstm["lines"] == 80


def test_the_cpp_scorer_and_the_kenlm_module_write_the_same_bytes(tiny_run, tmp_path, monkeypatch):
    """lmpipe's C++ KenLM scorer (make kenlm) and the kenlm-module fallback: the same records and summaries,
    for the n-gram model and for a mixture (per-token scores)."""
    from lmpipe.lm.kenlm_native import library_path

    if library_path() is None:
        pytest.skip("lmpipe's KenLM scorer is not built (make kenlm)")
    out = {}
    for path in ("native", "module"):
        if path == "module":
            monkeypatch.setenv("LMPIPE_KENLM_NATIVE", "0")
        summaries = [score_files(tiny_run, m, [TEST_FILE], out=tmp_path / f"{path}.{m}.parquet") for m in ("kn3", MIX)]
        out[path] = summaries, [(tmp_path / f"{path}.{m}.parquet").read_bytes() for m in ("kn3", MIX)]
    assert out["native"] == out["module"]


def test_each_line_is_kenlm_on_the_raw_lowercased_line(tiny_run, tmp_path):
    """An independent path: kenlm on the raw text (the tiny spec lowercases; its vocabulary is the ARPA's)."""
    import kenlm

    model = kenlm.Model(str(tiny_run / "ngram" / "model.arpa"))
    score_files(tiny_run, "kn3", [TEST_FILE], out=tmp_path / "kn.jsonl")
    records = [json.loads(line) for line in (tmp_path / "kn.jsonl").read_text().splitlines()]
    lines = TEST_FILE.read_text(encoding="utf-8").splitlines()
    assert [r["line"] for r in records] == list(range(1, len(lines) + 1))
    for r, line in zip(records, lines, strict=True):
        full = list(model.full_scores(line.lower(), bos=True, eos=True))
        assert r["tokens"] == len(full) and r["oov"] == sum(s[2] for s in full)
        assert r["log10_prob"] == model.score(line.lower())  # KenLM's own float32 sum, bit for bit
        assert r["ppl"] == pytest.approx(10 ** (-r["log10_prob"] / r["tokens"]), rel=1e-12)


@pytest.mark.kenlm
def test_summary_is_what_kenlm_query_prints(tiny_run, tmp_path, kenlm_bin):
    """The independent reference: KenLM's ``query`` on the raw lowercased test file, the same binary."""
    import subprocess

    from lmpipe.pipelines.evaluate import model_path

    text = TEST_FILE.read_text(encoding="utf-8").lower()
    out = subprocess.run(
        [str(kenlm_bin / "query"), "-v", "summary", str(model_path(tiny_run))], input=text, capture_output=True, text=True, check=True
    ).stdout
    want = {k: float(v) for k, v in re.findall(r"(Perplexity including OOVs|Perplexity excluding OOVs|OOVs|Tokens):\s*([\d.e+-]+)", out)}
    got = score_files(tiny_run, "kn3", [TEST_FILE])
    assert (got["oov"], got["tokens"]) == (want["OOVs"], want["Tokens"])
    assert got["perplexity"] == pytest.approx(want["Perplexity including OOVs"], rel=1e-12)
    assert got["perplexity_excluding_oov"] == pytest.approx(want["Perplexity excluding OOVs"], rel=1e-12)


def test_filter_keeps_exactly_the_lines_under_the_threshold(tiny_run, tmp_path):
    raw = TEST_FILE.read_bytes().splitlines(keepends=True)
    score_files(tiny_run, "kn3", [TEST_FILE], out=tmp_path / "all.jsonl")
    ppl = np.array([json.loads(x)["ppl"] for x in (tmp_path / "all.jsonl").read_text().splitlines()])
    threshold = float(np.median(ppl))
    summary = score_files(
        tiny_run, "kn3", [TEST_FILE], out=tmp_path / "s.jsonl", keep_below=threshold, kept=tmp_path / "kept.txt"
    )
    expected = b"".join(line for line, p in zip(raw, ppl, strict=True) if p < threshold)
    assert (tmp_path / "kept.txt").read_bytes() == expected
    assert summary["filter"]["kept"] == int((ppl < threshold).sum()) > 0
    summary = score_files(tiny_run, "kn3", [TEST_FILE], keep_fraction=0.25, kept=tmp_path / "quarter.txt")
    lowest = set(np.argsort(ppl, kind="stable")[: math.floor(0.25 * len(ppl))])
    assert (tmp_path / "quarter.txt").read_bytes() == b"".join(raw[i] for i in sorted(lowest))
    assert summary["filter"]["kept"] == 20


def test_output_is_byte_identical_with_one_and_two_workers(tiny_run, tmp_path):
    """Several chunks (4 KB each), a JSONL input with blank lines, Parquet and JSONL outputs."""
    rows = [json.dumps({"text": line}) for line in TEST_FILE.read_text(encoding="utf-8").splitlines()]
    rows[3:3] = ["", json.dumps({"text": "   "})]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = {}
    for workers in (1, 2):
        for suffix in ("jsonl", "parquet"):
            path = tmp_path / f"w{workers}.{suffix}"
            s = score_files(tiny_run, "kn3", [src], out=path, workers=workers, chunk_mb=0.004)
            out[workers, suffix] = path.read_bytes()
        assert s["chunks"] > 2 and s["lines"] == 82 and s["lines_scored"] == 80
    assert out[1, "jsonl"] == out[2, "jsonl"]
    assert out[1, "parquet"] == out[2, "parquet"]
    blank = json.loads(out[1, "jsonl"].decode().splitlines()[3])
    assert blank == {"line": 4, "tokens": 0, "oov": 0, "log10_prob": 0.0, "ppl": None}
    _same_figures(s, evaluate_ngram(tiny_run, "test"))


def test_sentencepiece_run_scores_raw_text_as_its_tokenize_stage(tmp_path, ray_local):
    run = tmp_path / "sp"
    rc = main(
        [
            "run", str(SPECS / "tiny.yaml"), "--run-dir", str(run), "--stages", "tokenize,ngram",
            "--set", "tokenizer.kind=sentencepiece", "--set", "tokenizer.sp_vocab_size=200",
            "--set", "tokenizer.sp_sample_lines=400",
        ]
    )  # fmt: skip
    assert rc == 0
    from lmpipe.pipelines.ingest import find_sources, plan_chunks, read_chunk
    from lmpipe.pipelines.scoring import ChunkScorer, ScoreJob
    from lmpipe.pipelines.spec import CorpusSpec

    scorer = ChunkScorer(ScoreJob.for_run(run, "kn3"))
    chunk = plan_chunks(find_sources(CorpusSpec(train=(str(TEST_FILE),)))["train"], 1 << 20)[0]
    mine = [ids for b in read_chunk(chunk, scorer.job.normalize) for ids in scorer.lines(b.text, chunk, b.positions)[0].sentences()]
    theirs = [ids for ids, _ in split_id_sentences(run, "test")]
    assert len(mine) == len(theirs) and all(np.array_equal(a, b) for a, b in zip(mine, theirs, strict=True))
    summary = score_files(run, "kn3", [TEST_FILE])
    test = read_manifest(run, "tokenize")["outputs"]["splits"]["test"]
    assert summary["tokens"] == test["tokens"] + test["sentences"]
    _same_figures(summary, evaluate_ngram(run, "test"))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "kn9", "--input", str(TEST_FILE)], "--model kn9: the run"),
        (["--model", "kn3", "--input", "/nonexistent/x.txt"], "/nonexistent/x.txt: no such file"),
        (["--model", "kn3", "--input", str(TEST_FILE), "--out", "x.csv"], "--out x.csv: unknown output format"),
        (["--model", "kn3", "--input", str(TEST_FILE), "--keep-fraction", "0.5"], "give --kept PATH"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tiny_run, capsys, args, message):
    assert main(["score", str(tiny_run), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


# ------------------------------------------------------------------------------------------ KenLM binaries
@pytest.mark.parametrize(
    "kind, options, tolerance",
    [("probing", [], 1e-9), ("trie", [], 1e-9), ("trie", ["-q", "10", "-b", "10", "-a", "22"], 0.1)],
)
def test_each_binary_kind_loads_in_kenlm_with_the_arpas_perplexity(tiny_run, tmp_path, kenlm_bin, kind, options, tolerance):
    import kenlm

    from lmpipe.lm.arpa import maybe_build_binary
    from lmpipe.lm.perplexity import score_sentences_kenlm
    from lmpipe.pipelines.evaluate import split_sentences

    arpa = tiny_run / "ngram" / "model.arpa"
    binary = maybe_build_binary(arpa, tmp_path / "model.binary", kind=kind, extra_args=options)
    sentences = list(split_sentences(tiny_run, "test"))
    want = score_sentences_kenlm(kenlm.Model(str(arpa)), sentences).perplexity()
    got = score_sentences_kenlm(kenlm.Model(str(binary)), sentences).perplexity()
    if tolerance < 1e-6:
        assert got == pytest.approx(want, rel=1e-6)
    else:
        assert abs(got - want) < tolerance and got != want  # quantised: close, not equal


def _copy_run(tiny_run, dest):
    import shutil

    shutil.copytree(tiny_run, dest, ignore=shutil.ignore_patterns("lm", "mix", ".checkpoints"))
    return dest


def test_ngram_stage_writes_a_quantised_trie_and_the_report_lists_sizes(tiny_run, tmp_path, kenlm_bin):
    run = _copy_run(tiny_run, tmp_path / "trie")
    rc = main(
        [
            "run", str(SPECS / "tiny.yaml"), "--run-dir", str(run), "--stages", "tokenize,ngram,report",
            "--set", "ngram.binary=trie", "--set", "ngram.binary_quantize=[10,10]", "--set", "ngram.binary_pointer_bits=22",
        ]
    )  # fmt: skip
    assert rc == 0
    out = read_manifest(run, "ngram")["outputs"]
    assert out["binary"] == {"kind": "trie", "built": True, "options": ["-q", "10", "-b", "10", "-a", "22"]}
    assert (run / "ngram" / "model.binary").read_bytes()[:4] != b"\\dat"  # a KenLM binary, not an ARPA
    assert abs(evaluate_ngram(run, "test")["perplexity"] - evaluate_ngram(tiny_run, "test")["perplexity"]) < 0.1
    report = (run / "report" / "report.md").read_text()
    size = (run / "ngram" / "model.binary").stat().st_size
    assert f"| ngram/model.binary | {size / 1e6:.2f} |" in report and "| ngram/model.arpa |" in report
    assert "KenLM binary: trie -q 10 -b 10 -a 22" in report


def test_missing_build_binary_is_in_the_manifest_and_report(tiny_run, tmp_path, monkeypatch):
    from lmpipe.lm import kenlm_tools

    monkeypatch.setattr(kenlm_tools, "kenlm_available", lambda names=(): False)
    run = _copy_run(tiny_run, tmp_path / "nobin")
    rc = main(["run", str(SPECS / "tiny.yaml"), "--run-dir", str(run), "--stages", "tokenize,ngram,report", "--force", "ngram"])
    assert rc == 0
    out = read_manifest(run, "ngram")["outputs"]
    assert out["binary"]["built"] is False and "build_binary not found" in out["binary"]["missing"]
    assert not (run / "ngram" / "model.binary").exists()
    assert "KenLM binary: build_binary not found" in (run / "report" / "report.md").read_text()


def test_default_binary_setting_keeps_the_ngram_fingerprint(tiny_run):
    """The ngram.binary settings at their defaults are left out of the fingerprint (the pins stay valid)."""
    settings = read_manifest(tiny_run, "ngram")["settings"]
    assert not {"binary", "binary_quantize", "binary_pointer_bits"} & set(settings)


@pytest.mark.parametrize("policy", ["map", "rename", "error"])
def test_the_one_pass_split_gives_the_token_paths_records(tiny_run, tmp_path, policy):
    """Whitespace lines split and scored in one C++ pass vs the tokenize stage's token path, on lines with
    literal specials (each policy), Unicode spaces, a NUL, and lines a policy empties."""
    import dataclasses

    from lmpipe.pipelines.ingest import InputError, find_sources, plan_chunks
    from lmpipe.pipelines.scoring import ChunkScorer, ScoreJob
    from lmpipe.pipelines.spec import CorpusSpec

    base = ScoreJob.for_run(tiny_run, "kn3")
    job = dataclasses.replace(base, normalize=dataclasses.replace(base.normalize, literal_specials=policy))
    fast = ChunkScorer(job)
    if not fast.splits_in_kenlm:
        pytest.skip("lmpipe's KenLM scorer is not built (make kenlm)")
    slow = ChunkScorer(job)
    slow.splits_in_kenlm = False
    lines = TEST_FILE.read_text(encoding="utf-8").splitlines()[:30]
    lines += ["the <unk> cat\u00a0sat", "<s> </s>", "a\u3000b\tc", "NUL\x00word the", "</s>", "tail <s> x"]
    path = tmp_path / "mixed.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    chunks = plan_chunks(find_sources(CorpusSpec(train=(str(path),)))["train"], 300)
    assert len(chunks) > 2
    errors = 0
    for chunk in chunks:
        try:
            want = slow(chunk)
        except InputError as exc:  # policy error: the same one-line message, naming the same byte offset
            errors += 1
            with pytest.raises(InputError, match=re.escape(str(exc))):
                fast(chunk)
            continue
        assert fast(chunk).equals(want)
    assert (errors > 0) == (policy == "error")
