"""Benchmark the ngram stage against KenLM's lmplz on the same machine, in the same run.

    python bench/ngram_vs_lmplz.py [--mirror DIR] [--big-tokens 20e6] [--orders 3 5]

Corpora: PTB train (Mikolov split, ``<unk>`` renamed to an ordinary word) and the mirrored English text
(PTB, Brown, BBC News, KJV: ~3.7M words) repeated to ``--big-tokens`` (repetition distorts
counts-of-counts, so the big corpus serves timing only).  For each corpus and order:

* lmplz: ``lmplz -o N -S <memory>`` on the tokenized training text (the same words lmpipe counts);
* lmpipe: the ngram stage on an embedded local Ray with 2 workers (and 1 worker, for the counting
  speed-up), after the tokenize stage (timed separately: lmplz reads text, lmpipe reads shards).

Reported: wall seconds, peak RSS of all processes (lmpipe: the driver and every Ray process it started,
sampled every 0.2 s; lmplz: its own peak), the largest |Δ log10 p| and |Δ backoff| against lmplz's ARPA,
and test perplexity for PTB.  Appends a table to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import time
from pathlib import Path

from common import RssSampler
from corpora import english_text, make_corpus

HERE = Path(__file__).resolve().parent



def run_lmplz(text: Path, order: int, arpa: Path, memory_mb: int, fallback: list[float] | None) -> dict[str, float]:
    from lmpipe.lm.kenlm_tools import find_kenlm_binary

    cmd = [str(find_kenlm_binary("lmplz")), "-o", str(order), "-S", f"{memory_mb}M", "-T", str(arpa.parent), "--arpa", str(arpa), "--text", str(text)]
    if fallback:
        cmd += ["--discount_fallback", *map(str, fallback)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"seconds": seconds, "peak_mb": max(peak, before) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mirror", default=os.environ.get("LMPIPE_DATA_MIRROR", str(HERE.parent.parent / "shared" / "data")))
    parser.add_argument("--big-tokens", type=float, default=20e6)
    parser.add_argument("--orders", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--memory-mb", type=int, default=2048)
    parser.add_argument("--work", default="/tmp/lmpipe-bench-ngram")
    args = parser.parse_args()

    from lmpipe.cluster.connect import connect
    from lmpipe.lm.arpa import compare_arpa, read_arpa
    from lmpipe.pipelines.evaluate import evaluate_ngram, split_sentences
    from lmpipe.pipelines.run import run_pipeline
    from lmpipe.pipelines.spec import parse_spec

    mirror, work = Path(args.mirror), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    big = work / "english.txt"
    real = make_corpus(english_text(mirror), int(args.big_tokens), big)
    corpora = [
        ("PTB", {"train": str(mirror / "ptb" / "ptb.train.txt"), "valid": str(mirror / "ptb" / "ptb.valid.txt"), "test": str(mirror / "ptb" / "ptb.test.txt")}, None),
        # Repetition leaves no singletons, so closed-form discounts fail: both sides use the fallback.
        (f"English x{real / 1e6:.0f}M (repeated)", {"train": str(big)}, [0.5, 1.0, 1.5]),
    ]
    connect(num_cpus=2)
    rows = []
    for name, corpus, fallback in corpora:
        run_dir = work / name.split()[0].lower()
        base = {"name": "bench", "corpus": corpus, "normalize": {"literal_specials": "rename"}, "tokenize": {"shard_mb": 16}}
        t0 = time.perf_counter()
        run_pipeline(parse_spec(base), run_dir=run_dir, stages=["tokenize"], force=["tokenize"])
        tokenize_s = time.perf_counter() - t0
        text = work / f"{run_dir.name}.train.txt"
        with open(text, "w") as fh:
            for sentence in split_sentences(run_dir, "train"):
                fh.write(sentence + "\n")
        for order in args.orders:
            ref_arpa = work / f"{run_dir.name}.lmplz.{order}.arpa"
            ref = run_lmplz(text, order, ref_arpa, args.memory_mb, fallback)
            row = {"corpus": name, "order": order, "tokenize_s": tokenize_s, "lmplz_s": ref["seconds"], "lmplz_mb": ref["peak_mb"]}
            for workers in (1, 2):
                ngram = {"order": order, "workers": workers, "build_binary": False, "memory_mb": args.memory_mb, "discount_fallback": fallback}
                spec = parse_spec({**base, "ngram": ngram})
                with RssSampler() as rss:
                    t0 = time.perf_counter()
                    manifest = run_pipeline(spec, run_dir=run_dir, stages=["ngram"], force=["ngram"])["ngram"]
                    seconds = time.perf_counter() - t0
                # The stage also scores valid/test with kenlm; lmplz does not, so that part is left out.
                row[f"lmpipe{workers}_s"] = seconds - manifest["estimation"].get("evaluate_seconds", 0.0)
                row[f"lmpipe{workers}_mb"] = rss.peak / 2**20
                row[f"count{workers}_s"] = manifest["estimation"]["count_seconds"]
            diff = compare_arpa(read_arpa(run_dir / "ngram" / "model.arpa"), read_arpa(ref_arpa))
            row.update(same=diff.same_ngrams, dprob=diff.max_prob_diff, dback=diff.max_backoff_diff)
            if "test" in corpus:
                row["ppl_lmpipe"] = manifest["perplexity"]["test"]["perplexity"]
                row["ppl_lmplz"] = evaluate_ngram(run_dir, "test", model_file=ref_arpa)["perplexity"]
            rows.append(row)
            print(row, flush=True)
    report(rows, args)


def report(rows: list[dict], args: argparse.Namespace) -> None:
    import ray

    lines = [
        "| corpus | order | lmplz s | lmplz MB | lmpipe s (2 workers) | ratio | lmpipe MB (all procs) | count s 1→2 workers | count speed-up | same n-grams | max Δ log10 p | max Δ backoff | test ppl lmpipe / lmplz |",
        "|" + "---|" * 13,
    ]
    for r in rows:
        ppl = f"{r['ppl_lmpipe']:.2f} / {r['ppl_lmplz']:.2f}" if "ppl_lmpipe" in r else "–"
        lines.append(
            f"| {r['corpus']} | {r['order']} | {r['lmplz_s']:.1f} | {r['lmplz_mb']:.0f} | {r['lmpipe2_s']:.1f} | "
            f"{r['lmpipe2_s'] / r['lmplz_s']:.2f}× | {r['lmpipe2_mb']:.0f} | {r['count1_s']:.1f} → {r['count2_s']:.1f} | "
            f"{r['count1_s'] / r['count2_s']:.2f}× | {r['same']} | {r['dprob']:.1e} | {r['dback']:.1e} | {ppl} |"
        )
    table = "\n".join(lines)
    print(table)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, ray {ray.__version__}, kenlm 0.3.0 lmplz"
    entry = (
        f"\n## ngram stage vs KenLM lmplz ({time.strftime('%Y-%m-%d')})\n\n"
        f"Command: `python bench/ngram_vs_lmplz.py --big-tokens {args.big_tokens:.0f} --orders {' '.join(map(str, args.orders))}`  \n"
        f"Machine: {machine}; lmplz `-S {args.memory_mb}M`, lmpipe `ngram.memory_mb: {args.memory_mb}`.  \n"
        "lmpipe s = the ngram stage (counting, estimation, ARPA; not its valid/test scoring) with Ray already running (tokenize timed apart: "
        + ", ".join(f"{r['corpus']} {r['tokenize_s']:.1f} s" for r in rows if r["order"] == rows[0]["order"])
        + "); lmplz reads the same words as text.\n\n"
        f"{table}\n"
    )
    with open(HERE / "RESULTS.md", "a", encoding="utf-8") as fh:
        fh.write(entry)


if __name__ == "__main__":
    main()
