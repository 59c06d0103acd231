"""Benchmark the cooccur and glove stages: counting throughput and memory as the corpus grows (1 vs 2
workers), GloVe training seconds per epoch, and GloVe's analogy/similarity scores beside the sgns stage's on
the same corpus, vocabulary cut and dimension, in the same run.

    LMPIPE_DATA_MIRROR=../shared/data .venv/bin/python bench/glove.py               # the full benchmark
    LMPIPE_DATA_MIRROR=../shared/data .venv/bin/python bench/glove.py --quick       # smoke (~2 min), no append

Counting: the mirrored English text (``bench/corpora.py``: PTB + Brown + BBC News + KJV, ~3.7M words)
repeated to each of ``--sizes`` tokens (repetition serves timing and memory only), tokenized once per size
into ~16 shards, then the cooccur stage with 1 and with 2 workers (``--force``): its own counting seconds
(map tasks; the merge is reported apart), tokens/s, the largest per-task peak RSS from its manifest and
the peak summed RSS of the driver and every Ray process, sampled every 0.2 s.  Both runs must write the same
files (the sums are exact), which is checked.  Target: 2 workers >= 1.8x the counting throughput of 1.

Quality: ``--quality-corpora`` (``ptb``: PTB train, ``english``: the un-repeated English text), cooccur
window 10 + glove (``--epochs``, ``--glove-workers``, x_max ``--x-max``) and sgns (``--sgns-epochs``,
default the same epochs) at dim ``--dim`` and min_count 5, both evaluated by ``pipelines.stages.embedding_eval``.
The section is appended to ``bench/RESULTS.md`` (not with ``--quick`` or ``--no-append``).
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

from common import RssSampler, embedding_scores, machine, versions
from corpora import english_text, make_corpus

HERE = Path(__file__).resolve().parent


def _base(name: str, train: str, kind: str, shard_mb: float) -> dict[str, Any]:
    if kind == "ptb":
        text = {"normalize": {"literal_specials": "rename"}, "tokenizer": {"kind": "whitespace"}}
    else:
        text = {
            "normalize": {"lowercase": True},
            "tokenizer": {"kind": "regex", "pattern": r"[a-z]+(?:'[a-z]+)?|[0-9]+"},
        }
    return {
        "name": name,
        "corpus": {"train": train},
        **text,
        "tokenize": {"workers": 2, "shard_mb": shard_mb},
    }


def _run(base: dict[str, Any], run: Path, stages: list[str], mirror: str, **sections: Any) -> dict[str, Any]:
    from lmpipe.pipelines.run import run_pipeline
    from lmpipe.pipelines.spec import parse_spec

    spec = parse_spec({**base, **sections}, source="bench")
    return run_pipeline(
        spec, run_dir=run, stages=stages, force=[s for s in stages if s != "tokenize"], mirror=mirror
    )


# ------------------------------------------------------------------------------------------ counting
def counting_rows(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    rows = []
    text = english_text(args.mirror)
    for i, size in enumerate(args.sizes):
        path = work / f"english-{int(size)}.txt"
        tokens = make_corpus(text, int(size), path)
        base = _base(
            f"bench-cooc-{int(size)}", str(path), "english", max(0.05, path.stat().st_size / 2**20 / 16)
        )
        run = work / f"cooc-{int(size)}"
        _run(base, run, ["tokenize"], str(args.mirror))
        if i == 0:  # warm-up, not recorded: Ray's worker processes start and import numpy/pyarrow once
            _run(base, run, ["cooccur"], str(args.mirror), cooccur={"window": args.window, "workers": 2})
        row: dict[str, Any] = {"tokens": tokens}
        files = {}
        for workers in (1, 2):
            cooccur = {"window": args.window, "min_count": 5, "workers": workers, "memory_mb": args.memory_mb}
            with RssSampler() as rss:
                manifest = _run(base, run, ["cooccur"], str(args.mirror), cooccur=cooccur)["cooccur"]
            c = manifest["counting"]
            row[f"count{workers}_s"] = c["count_seconds"]
            row[f"merge{workers}_s"] = c["merge_seconds"]
            row[f"tok_s{workers}"] = c["tokens_per_second"]
            row[f"task_mb{workers}"] = max(t["peak_rss_mb"] for t in c["tasks"])
            row[f"all_mb{workers}"] = rss.peak / 2**20
            files[workers] = sorted((f["path"], f["sha256"]) for f in manifest["outputs"]["files"])
            row.update(nonzeros=manifest["outputs"]["nonzeros"], partitions=c["partitions"])
        row["same_output"] = files[1] == files[2]
        row["speedup"] = row["count1_s"] / row["count2_s"]
        rows.append(row)
        print(json.dumps(row), flush=True)
        shutil.rmtree(run, ignore_errors=True)
    return rows


# ------------------------------------------------------------------------------------------ quality
def quality_rows(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    rows = []
    for corpus in args.quality_corpora:
        if corpus == "ptb":
            base = _base("bench-glove-ptb", "data:ptb/train", "ptb", 0.25)
        else:
            path = work / "english.txt"
            if not path.exists():
                path.write_text(english_text(args.mirror), encoding="utf-8")
            base = _base("bench-glove-english", str(path), "english", 1.0)
        run = work / f"quality-{corpus}"
        shutil.rmtree(run, ignore_errors=True)
        cooccur = {"window": 10, "min_count": 5, "workers": 2, "memory_mb": args.memory_mb}
        glove = {"dim": args.dim, "epochs": args.epochs, "x_max": args.x_max, "workers": args.glove_workers}
        sgns = {"dim": args.dim, "epochs": args.sgns_epochs or args.epochs, "min_count": 5, "workers": 1}
        started = time.perf_counter()
        manifests = _run(
            base,
            run,
            ["tokenize", "cooccur", "glove", "sgns"],
            str(args.mirror),
            cooccur=cooccur,
            glove=glove,
            sgns=sgns,
        )
        words = manifests["tokenize"]["outputs"]["splits"]["train"]["tokens"]
        g, s = manifests["glove"], manifests["sgns"]
        rows.append(
            {
                "corpus": corpus, "words": words, "nonzeros": manifests["cooccur"]["outputs"]["nonzeros"],
                "cooccur_s": manifests["cooccur"]["counting"]["count_seconds"] + manifests["cooccur"]["counting"]["merge_seconds"],
                "glove_epoch_s": sum(g["training"]["seconds_per_epoch"]) / len(g["training"]["seconds_per_epoch"]),
                "glove_fit_s": g["training"]["seconds"], "glove_epochs": len(g["training"]["epochs"]),
                "sgns_epoch_s": sum(e["seconds"] for e in s["training"]["epochs"]) / len(s["training"]["epochs"]),
                "sgns_fit_s": s["training"]["seconds"], "sgns_epochs": len(s["training"]["epochs"]),
                "glove_vocab": g["outputs"]["count"], "sgns_vocab": s["outputs"]["count"],
                "glove": g["evaluation"], "sgns": s["evaluation"], "seconds": time.perf_counter() - started,
            }
        )  # fmt: skip
        print(json.dumps({k: v for k, v in rows[-1].items() if k not in ("glove", "sgns")}), flush=True)
    return rows


def report(
    args: argparse.Namespace, counting: list[dict], quality: list[dict], seconds: float, load: tuple
) -> str:
    command = "LMPIPE_DATA_MIRROR=../shared/data .venv/bin/python bench/glove.py " + " ".join(args.argv)
    lines = [
        "",
        f"## cooccur + glove stages; GloVe beside sgns ({datetime.date.today().isoformat()})",
        "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {machine()}; {versions()}.  ",
        f"Load average (1 min) {load[0]:.1f} before, {load[1]:.1f} after on {os.cpu_count()} cores; the benchmark took "
        f"{seconds / 60:.1f} min.  ",
        f"Counting: English text repeated, cooccur window {args.window}, min_count 5, memory_mb {args.memory_mb}; count s = "
        "the map tasks (windows, aggregation, spills), merge s = the reduce tasks; task MB = the largest per-task peak "
        "RSS in the manifest; all MB = peak summed RSS of the driver and every Ray process.",
        "",
        "| tokens | non-zeros | partitions | count s 1 → 2 workers | tokens/s 1 → 2 | speed-up | merge s 1 → 2 | task MB 1 / 2 | all MB 1 / 2 | same files |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in counting:
        lines.append(
            f"| {r['tokens'] / 1e6:.1f}M | {r['nonzeros']:,} | {r['partitions']} | {r['count1_s']:.1f} → {r['count2_s']:.1f} | "
            f"{r['tok_s1'] / 1e3:,.0f}k → {r['tok_s2'] / 1e3:,.0f}k | {r['speedup']:.2f}x | {r['merge1_s']:.1f} → {r['merge2_s']:.1f} | "
            f"{r['task_mb1']:.0f} / {r['task_mb2']:.0f} | {r['all_mb1']:.0f} / {r['all_mb2']:.0f} | {r['same_output']} |"
        )
    lines += [
        "",
        f"Quality: dim {args.dim}, min_count 5; glove: window 10 (1/d, symmetric), x_max {args.x_max}, alpha 0.75, eta 0.05, "
        f"{args.glove_workers} worker(s); sgns: window 5, negative 5, 1 worker.  s/epoch = the stage's mean epoch time "
        "(cooccur counted once, apart).  Analogy: questions-words 3CosAdd, restrict_vocab 300k, % semantic / syntactic / "
        "total (answered); similarity: Spearman WS353 / SimLex-999 / MEN / RW.",
        "",
        "| corpus | system | epochs | s/epoch | fit s | vocab | analogy sem / syn / total | WS353 / SimLex / MEN / RW |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in quality:
        corpus = f"{r['corpus']} ({r['words'] / 1e6:.2f}M words, {r['nonzeros']:,} non-zeros, cooccur {r['cooccur_s']:.1f} s)"
        for system in ("glove", "sgns"):
            lines.append(
                f"| {corpus} | {system} | {r[f'{system}_epochs']} | {r[f'{system}_epoch_s']:.2f} | {r[f'{system}_fit_s']:.1f} | "
                f"{r[f'{system}_vocab']:,} | {embedding_scores(r[system])} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--sizes", type=float, nargs="*", default=[4e6, 16e6, 64e6], help="tokens per counting corpus"
    )
    p.add_argument("--window", type=int, default=10)
    p.add_argument("--memory-mb", type=int, default=1024)
    p.add_argument("--quality-corpora", nargs="*", default=["ptb", "english"])
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--epochs", type=int, default=25, help="glove epochs (GloVe's default)")
    p.add_argument("--sgns-epochs", type=int, default=None, help="default: --epochs")
    p.add_argument("--x-max", type=float, default=10.0, help="GloVe demo.sh's value for small corpora")
    p.add_argument("--glove-workers", type=int, default=2)
    p.add_argument(
        "--mirror", type=Path, default=Path(os.environ.get("LMPIPE_DATA_MIRROR", "../shared/data"))
    )
    p.add_argument("--work", type=Path, default=Path("/tmp/lmpipe-bench-glove"))
    p.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke: one copy of the English text, PTB only, 2 epochs; nothing appended",
    )
    p.add_argument("--no-append", action="store_true")
    args = p.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    if args.quick:
        args.sizes, args.quality_corpora, args.epochs, args.no_append = [5e5], ["ptb"], 2, True
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    args.work.mkdir(parents=True, exist_ok=True)
    from lmpipe.cluster.connect import connect

    load_before = os.getloadavg()[0]
    connect()
    started = time.perf_counter()
    counting = counting_rows(args, args.work)
    quality = quality_rows(args, args.work)
    text = report(args, counting, quality, time.perf_counter() - started, (load_before, os.getloadavg()[0]))
    print(text)
    if not args.no_append:
        with open(args.results, "a", encoding="utf-8") as out:
            out.write(text)
        print(f"appended to {args.results}")


if __name__ == "__main__":
    main()
