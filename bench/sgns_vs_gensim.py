"""Benchmark the sgns stage (Ray Train, 1 and 2 workers) against gensim 4 ``Word2Vec(sg=1, workers=2)``.

Both systems train on the same token stream: the tokenize stage's training shards, given to gensim as
lists of the same token strings, with the same settings (dim, window, negative, sample, alpha -> alpha *
1e-4, min_count, epochs; so the same vocabulary, checked).  Reported per system: training wall time and
raw words per second (the sgns stage's sum of epoch times, and separately its whole ``fit`` with Ray
Train's worker start-up), analogy accuracy (questions-words, 3CosAdd, restrict_vocab 300k:
semantic/syntactic/total) and WS353 / SimLex-999 Spearman, all computed by ``embeddings.evaluate``.
The section is appended to ``bench/RESULTS.md``.

    LMPIPE_DATA_MIRROR=../shared/data .venv/bin/python bench/sgns_vs_gensim.py            # ptb + english
    .venv/bin/python bench/sgns_vs_gensim.py --corpora ptb --configs 1x1 --epochs 1 --no-append  # smoke

Corpora: ``ptb`` (PTB train as distributed, whitespace tokens, ``<unk>`` kept as the word ``[unk]``) and
``english`` (PTB + Brown + BBC News + KJV from ``bench/corpora.py``, ~3.7M words, lowercased,
``[a-z]+('[a-z]+)?|[0-9]+`` tokens as in ``bench/sgns_core.py``).  ``--configs`` lists sgns
``workers x threads[:sync scheme]``; each worker trains an equal share of the words (``embeddings.train.Share``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import RssSampler, machine, versions
from corpora import english_text

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
logger = logging.getLogger("bench.sgns_vs_gensim")


def corpus_spec(corpus: str, mirror: Path, work: Path) -> dict[str, Any]:
    """Raw spec data (the ``sgns`` section is added per run)."""
    if corpus == "ptb":
        return {
            "name": "bench-ptb", "corpus": {"train": "data:ptb/train"}, "normalize": {"literal_specials": "rename"},
            "tokenizer": {"kind": "whitespace"}, "tokenize": {"workers": 2, "shard_mb": 0.25},
        }  # fmt: skip
    if corpus == "english":
        path = work / "english.txt"
        if not path.exists():
            path.write_text(english_text(mirror), encoding="utf-8")
        return {
            "name": "bench-english", "corpus": {"train": str(path)}, "normalize": {"lowercase": True},
            "tokenizer": {"kind": "regex", "pattern": r"[a-z]+(?:'[a-z]+)?|[0-9]+"},
            "tokenize": {"workers": 2, "shard_mb": 1},
        }  # fmt: skip
    raise SystemExit(f"unknown corpus {corpus!r}; options: ptb, english")


def gensim_run(sentences: list[list[str]], args: argparse.Namespace, eval_files) -> dict[str, Any]:
    from gensim.models import Word2Vec

    from lmpipe.embeddings.vectors import Vectors
    from lmpipe.pipelines.stages.embedding_eval import evaluate

    model = Word2Vec(
        vector_size=args.dim, window=args.window, min_count=args.min_count, sg=int(args.model == "skipgram"),
        hs=int(args.loss == "hierarchical"), negative=args.negative, cbow_mean=1,
        sample=args.sample, alpha=args.alpha, min_alpha=args.alpha * 1e-4, epochs=args.epochs,
        workers=args.gensim_workers, seed=1,
    )  # fmt: skip
    words = sum(len(s) for s in sentences)
    with RssSampler(0.02, tree=False) as rss:
        model.build_vocab(sentences)
        t0 = time.perf_counter()
        model.train(sentences, total_examples=len(sentences), total_words=words, epochs=args.epochs)
        seconds = time.perf_counter() - t0
    wv = model.wv
    vectors = Vectors(list(wv.index_to_key), wv.vectors.astype(np.float32), source="gensim")
    return {
        "system": f"gensim Word2Vec {args.model}+{args.loss} workers={args.gensim_workers}", "train_s": seconds,
        "wall_s": seconds,
        "words_per_s": words * args.epochs / seconds, "vocab": set(wv.index_to_key),
        "eval": evaluate(vectors, eval_files), "peak_mb": rss.peak / 2**20,
    }  # fmt: skip


def sgns_run(
    base: dict[str, Any], tokenized: Path, work: Path, workers: int, threads: int, sync: str, args
) -> dict[str, Any]:
    from lmpipe.embeddings.vectors import Vectors
    from lmpipe.pipelines.run import run_pipeline
    from lmpipe.pipelines.spec import parse_spec

    run = work / f"{base['name']}-{args.model}-{args.loss}-{workers}x{threads}-{sync}"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(tokenized / "tokenize", run / "tokenize")
    sgns = {
        "model": args.model, "loss": args.loss,
        "dim": args.dim, "window": args.window, "negative": args.negative, "sample": args.sample, "alpha": args.alpha,
        "min_count": args.min_count, "epochs": args.epochs, "workers": workers, "threads": threads,
        "syncs_per_epoch": args.syncs_per_epoch, "sync": sync, "shared_negatives": args.shared_negatives,
    }  # fmt: skip
    spec = parse_spec({**base, "sgns": sgns}, source="bench")
    t0 = time.perf_counter()
    manifest = run_pipeline(spec, run_dir=run, stages=["sgns"], mirror=str(args.mirror))["sgns"]
    wall = time.perf_counter() - t0
    tr = manifest["training"]
    train_s = sum(e["seconds"] for e in tr["epochs"])
    words = sum(e["words"] for e in tr["epochs"])
    return {
        "system": f"lmpipe sgns {args.model}+{args.loss} {workers} worker(s) x {threads} thread(s)" + (f", sync {sync}" if workers > 1 else ""), "train_s": train_s, "wall_s": wall,
        "fit_s": tr["seconds"], "words_per_s": words / train_s, "vocab": set(Vectors.load(run / "sgns" / "vectors").tokens),
        "eval": manifest["evaluation"], "share_words": tr["share_words"],
        "sync_s": sum(e["sync_seconds"] for e in tr["epochs"]), "syncs": tr["syncs_per_epoch"],
        "peak_mb": max(w["peak_rss_mb"] for w in tr["workers"]["processes"]),
    }  # fmt: skip


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median words/s (its quality figures too), with every run's words/s attached."""
    ranked = sorted(runs, key=lambda r: r["words_per_s"])
    return {**ranked[(len(ranked) - 1) // 2], "all_words_per_s": [r["words_per_s"] for r in runs]}


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def table_rows(corpus: str, words: int, rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in rows:
        ev = r["eval"]
        a = ev["analogy"]
        fit = f"{r['fit_s']:.1f}" if "fit_s" in r else "–"
        out.append(
            f"| {corpus} ({words / 1e6:.2f}M words) | {r['system']} | {r['train_s']:.1f} | {fit} | "
            f"{r['words_per_s'] / 1e3:.0f}k | {_pct(a['semantic'])} / {_pct(a['syntactic'])} / {_pct(a['total'])} "
            f"({a['answered']:,}) | {ev['wordsim353']['spearman']:.3f} | {ev['simlex999']['spearman']:.3f} | "
            f"{r['peak_mb']:,.0f} |"
        )
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpora", nargs="*", default=["ptb", "english"])
    p.add_argument(
        "--configs", nargs="*", default=["1x1", "2x1", "2x1:touched"],
        help="sgns WORKERSxTHREADS[:SYNC], SYNC default --sync",
    )  # fmt: skip
    p.add_argument("--gensim-workers", type=int, default=2)
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--window", type=int, default=5)
    p.add_argument("--model", choices=("skipgram", "cbow"), default="skipgram", help="word2vec -cbow 0|1")
    p.add_argument("--loss", choices=("negative", "hierarchical"), default="negative", help="-hs 0|1")
    p.add_argument("--negative", type=int, default=None, help="default: 5 with --loss negative, 0 with hierarchical")
    p.add_argument("--sample", type=float, default=1e-3)
    p.add_argument("--alpha", type=float, default=None, help="default: word2vec's, 0.025 skip-gram, 0.05 cbow")
    p.add_argument("--repeats", type=int, default=1, help="runs of each system; the table shows the median words/s")
    p.add_argument("--min-count", type=int, default=5)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--syncs-per-epoch", type=int, default=None, help="default: the stage's (auto)")
    p.add_argument("--sync", default="sum")
    p.add_argument("--shared-negatives", type=int, default=1)
    p.add_argument("--mirror", type=Path, default=Path(os.environ.get("LMPIPE_DATA_MIRROR", "../shared/data")))
    p.add_argument("--work", type=Path, default=Path("/tmp/lmpipe-bench-sgns"), help="run directories")
    p.add_argument("--results", type=Path, default=BENCH / "RESULTS.md")
    p.add_argument("--no-append", action="store_true", help="print the section, do not append it")
    args = p.parse_args(argv)
    from lmpipe.embeddings.word2vec_defaults import mode_defaults

    for name, value in mode_defaults(args.model, args.loss, alpha=args.alpha, negative=args.negative).items():
        setattr(args, name, value)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    args.work.mkdir(parents=True, exist_ok=True)

    from lmpipe.cluster.connect import connect
    from lmpipe.pipelines.core.shards import read_ids
    from lmpipe.pipelines.core.vocab import Vocab
    from lmpipe.pipelines.run import run_pipeline
    from lmpipe.pipelines.spec import parse_spec
    from lmpipe.pipelines.stages.embedding_eval import eval_files as resolve_eval_files

    eval_files, reason = resolve_eval_files(str(args.mirror))
    if reason:
        raise SystemExit(f"evaluation files not found: {reason}")
    load_before = os.getloadavg()
    connect()
    started = time.perf_counter()
    lines: list[str] = []
    notes: list[str] = []
    for corpus in args.corpora:
        base = corpus_spec(corpus, args.mirror, args.work)
        tokenized = args.work / f"{base['name']}-tokenized"
        t0 = time.perf_counter()
        run_pipeline(parse_spec(base, source="bench"), run_dir=tokenized, stages=["tokenize"], mirror=str(args.mirror))
        tokenize_s = time.perf_counter() - t0
        tokens = Vocab.load(tokenized / "tokenize" / "vocab.tsv").tokens.to_pylist()
        sentences = [[tokens[i] for i in s.tolist()] for s in read_ids(tokenized / "tokenize", "train")]
        words = sum(len(s) for s in sentences)
        print(f"{corpus}: {len(sentences):,} sentences, {words:,} words, tokenize {tokenize_s:.1f} s", flush=True)
        runs: list[list[dict[str, Any]]] = [[] for _ in range(1 + len(args.configs))]
        for _ in range(args.repeats):  # alternating systems, so a change in the machine's load hits both
            runs[0].append(gensim_run(sentences, args, eval_files))
            print(runs[0][-1]["system"], f"{runs[0][-1]['words_per_s']:.0f} words/s", flush=True)
            for i, config in enumerate(args.configs, 1):
                shape, _, sync = config.partition(":")
                workers, threads = (int(x) for x in shape.split("x"))
                runs[i].append(sgns_run(base, tokenized, args.work, workers, threads, sync or args.sync, args))
                print(runs[i][-1]["system"], f"{runs[i][-1]['words_per_s']:.0f} words/s", flush=True)
        del sentences
        rows = [_median_run(r) for r in runs]
        for r in rows[1:]:
            notes.append(
                f"{corpus}, {r['system']}: words/s {r['words_per_s'] / rows[0]['words_per_s']:.2f}x gensim's "
                f"(median of {args.repeats}; each run: " + ", ".join(f"{x:.0f}" for x in r["all_words_per_s"])
                + "; gensim: " + ", ".join(f"{x:.0f}" for x in rows[0]["all_words_per_s"]) + ")"
            )
        same = all(r["vocab"] == rows[0]["vocab"] for r in rows)
        notes.append(f"{corpus}: vocabulary {len(rows[0]['vocab']):,} words, identical in all systems: {same}")
        for r in rows[1:]:
            notes.append(
                f"{corpus}, {r['system']}: words per worker {r['share_words']}, {r['syncs']} syncs/epoch, "
                f"{r['sync_s']:.1f} s in syncs (waits for the slower worker included)"
            )
        lines += table_rows(corpus, words, rows)
        print("\n".join(lines[-len(rows):]), flush=True)
    total_s = time.perf_counter() - started
    load_after = os.getloadavg()
    command = "LMPIPE_DATA_MIRROR=../shared/data .venv/bin/python bench/sgns_vs_gensim.py " + " ".join(argv or sys.argv[1:])
    section = [
        "",
        f"## sgns stage vs gensim Word2Vec, {args.model} + {args.loss} ({datetime.date.today().isoformat()})",
        "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {machine()}; {versions('ray', 'torch', 'gensim', 'numpy', 'pyarrow', 'numba')}.  ",
        f"Settings (both systems): {args.model}, {args.loss}, dim {args.dim}, window {args.window}, negative {args.negative}, sample "
        f"{args.sample:g}, alpha {args.alpha} -> {args.alpha * 1e-4:g}, min_count {args.min_count}, {args.epochs} epochs; "
        f"gensim workers={args.gensim_workers}; sgns syncs/epoch {args.syncs_per_epoch or 'auto'} (scheme `{args.sync}` unless named), "
        f"shared_negatives {args.shared_negatives}, one CPU per thread.  ",
        f"Load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after on {os.cpu_count()} cores; "
        f"the whole benchmark took {total_s / 60:.1f} min.  ",
        "train s = training only (sgns: sum of its epoch times, syncs included; gensim: `train()`); fit s = the "
        "sgns stage's whole Ray Train `fit` (worker start-up, vocabulary, checkpoints, vectors written); "
        "words/s = raw words x epochs / train s.  Analogy: questions-words 3CosAdd, restrict_vocab 300k, % "
        "semantic / syntactic / total (questions answered); similarity: Spearman.  peak MB: resident memory high-water "
        "mark of the training process (gensim: the benchmark process during build_vocab + train, holding the corpus "
        "as lists of strings; sgns: the largest Ray Train worker's ru_maxrss).",
        "",
        "| corpus | system | train s | fit s | words/s | analogy sem / syn / total | WS353 | SimLex | peak MB |",
        "|---|---|---|---|---|---|---|---|---|",
        *lines,
        "",
        *[f"- {n}" for n in notes],
        "",
    ]
    text = "\n".join(section)
    print(text)
    if not args.no_append:
        with open(args.results, "a", encoding="utf-8") as out:
            out.write(text)
        print(f"appended to {args.results}")
    (args.work / "last.json").write_text(json.dumps({"lines": lines, "notes": notes}, indent=2))


if __name__ == "__main__":
    main()
