"""Whole-run n-gram benchmark against KenLM's lmplz: what a user sees, Ray start included, on text never repeated.

    python bench/ngram_whole_run.py [--mirror DIR] [--generated 8e6 ...] [--orders 5 3] [--rounds 3]

Corpora: all the mirrored English text together (PTB, Brown, BBC News, KJV: ~3.7M words, real) and text
generated from a model of it (``corpora.generated_corpus``) at each ``--generated`` size.  Each corpus is
tokenized once (``lmpipe run --stages tokenize``) and its training sentences written out as lmplz's input, so
both tools count the same words.  Then, per order, ``--rounds`` alternating pairs of whole processes:

* ``lmplz -o N -S <memory> -T <dir>`` reading that text;
* ``lmpipe run SPEC --stages ngram --force ngram`` (a fresh process: interpreter, imports, an embedded local
  Ray with 2 CPUs, the stage, shutdown) with ``ngram.workers: 2``.

Reported: medians of wall seconds and of the peak resident memory summed over the process and all its
descendants (lmpipe: driver, raylet, GCS, workers; sampled every 0.1 s), the stage's own time from its
manifest, the ratio, the load average before the runs, and whether the ARPAs hold the same n-grams and how
far their values are apart.  Appends a section to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import machine, versions
from corpora import english_text, generated_corpus

HERE = Path(__file__).resolve().parent


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB, summed over the process tree) of one command."""
    import psutil

    start = time.perf_counter()
    proc = psutil.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        total = 0
        try:
            for p in [proc, *proc.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    continue
        except psutil.Error:
            pass
        peak = max(peak, total)
        time.sleep(0.1)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
    return seconds, peak / 2**20


#: Above this size an ARPA is not read whole (``read_arpa`` holds it in memory several times over).
WHOLE_COMPARE_BYTES = 2 << 30
#: First words of the n-grams compared line by line in a large ARPA (mid-frequency words: a sample of a few
#: hundred thousand n-grams of every order, the same n-grams in both files whatever their line order).
SAMPLE_WORDS = ("king", "water", "small", "government")


def _sample(arpa: Path) -> dict[str, tuple[float, float]]:
    """``ngram -> (log10 p, backoff)`` for the n-grams of ``arpa`` that start with a :data:`SAMPLE_WORDS` word
    (``grep -F``: a streaming pass at disk speed, where a Python pass over billions of bytes would not be)."""
    args = ["grep", "-F", *[a for w in SAMPLE_WORDS for a in ("-e", f"\t{w} ", "-e", f"\t{w}\t")], str(arpa)]
    out = subprocess.run(args, capture_output=True, check=False, env={**os.environ, "LC_ALL": "C"}).stdout
    table: dict[str, tuple[float, float]] = {}
    for line in out.decode("utf-8").splitlines():
        fields = line.split("\t")
        table[fields[1]] = (float(fields[0]), float(fields[2]) if len(fields) > 2 else 0.0)
    return table


def compare(ours: Path, ref: Path) -> tuple[str, float]:
    """``(same n-grams, max |Δ log10 p|)``: read whole when small; when large, the per-order counts of the
    ``\\data\\`` headers and the :func:`_sample` n-grams (same set, values), reported as such."""
    from lmpipe.lm.arpa import compare_arpa, read_arpa, read_arpa_counts

    if max(ours.stat().st_size, ref.stat().st_size) <= WHOLE_COMPARE_BYTES:
        diff = compare_arpa(read_arpa(ours), read_arpa(ref))
        return str(diff.same_ngrams), diff.max_prob_diff
    a, b = _sample(ours), _sample(ref)
    same = read_arpa_counts(ours) == read_arpa_counts(ref) and a.keys() == b.keys()
    dprob = max((abs(a[g][0] - b[g][0]) for g in a.keys() & b.keys()), default=float("nan"))
    return f"{same} (counts; {len(a):,} sampled n-grams)", dprob


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mirror", default=os.environ.get("LMPIPE_DATA_MIRROR", str(HERE.parent.parent / "shared" / "data")))
    parser.add_argument("--generated", type=float, nargs="*", default=[8e6], help="generated corpus sizes (tokens)")
    parser.add_argument("--orders", type=int, nargs="+", default=[5, 3])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-mb", type=int, default=2048)
    parser.add_argument("--work", default="/tmp/lmpipe-bench-ngram-whole")
    parser.add_argument("--no-real", action="store_true", help="skip the real English corpus")
    args = parser.parse_args()

    from lmpipe.lm.kenlm_tools import find_kenlm_binary
    from lmpipe.pipelines.evaluate import split_sentences

    mirror, work = Path(args.mirror), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    corpora: list[tuple[str, Path]] = []
    if not args.no_real:
        real = work / "english.txt"
        if not real.exists():
            real.write_text(english_text(mirror), encoding="utf-8")
        corpora.append(("real English (PTB+Brown+BBC+KJV)", real))
    for size in args.generated:
        path = work / f"generated-{size:.0e}.txt"
        generated_corpus(mirror, int(size), path, seed=7)
        corpora.append((f"generated {size / 1e6:.0f}M", path))

    lmpipe = str(Path(sys.executable).with_name("lmpipe"))
    lmplz = str(find_kenlm_binary("lmplz"))
    rows = []
    for name, text in corpora:
        run_dir = work / ("run-" + text.stem)
        spec = work / f"{text.stem}.yaml"
        body = {
            "name": "bench", "corpus": {"train": str(text)}, "normalize": {"literal_specials": "rename"},
            "tokenize": {"shard_mb": 64, "workers": 2},
        }  # fmt: skip
        spec.write_text(json.dumps(body), encoding="utf-8")  # JSON is YAML
        subprocess.run([lmpipe, "run", str(spec), "--run-dir", str(run_dir), "--stages", "tokenize", "--num-cpus", "2"], check=True, capture_output=True)
        words = work / f"{text.stem}.train.txt"
        if not words.exists():
            with open(words, "w", encoding="utf-8") as fh:
                for sentence in split_sentences(run_dir, "train"):
                    fh.write(sentence + "\n")
        tokens = json.loads((run_dir / "tokenize" / "manifest.json").read_text())
        for order in args.orders:
            ref = work / f"{text.stem}.lmplz{order}.arpa"
            lmplz_cmd = [lmplz, "-o", str(order), "-S", f"{args.memory_mb}M", "-T", str(work), "--arpa", str(ref), "--text", str(words)]
            sets = [f"ngram.order={order}", "ngram.workers=2", f"ngram.memory_mb={args.memory_mb}", "ngram.build_binary=false"]
            ours_cmd = [lmpipe, "run", str(spec), "--run-dir", str(run_dir), "--stages", "ngram", "--force", "ngram", "--num-cpus", "2"]
            for s in sets:
                ours_cmd += ["--set", s]
            load = os.getloadavg()
            peer, mine, stage = [], [], []
            for _ in range(args.rounds):  # alternating, so drift in the machine's load hits both alike
                peer.append(timed(lmplz_cmd))
                mine.append(timed(ours_cmd))
                manifest = json.loads((run_dir / "ngram" / "manifest.json").read_text())
                stage.append(manifest["timings"]["seconds"])
            same, dprob = compare(run_dir / "ngram" / "model.arpa", ref)
            est = manifest["estimation"]
            row = {
                "corpus": name, "order": order, "tokens": _train_tokens(tokens),
                "lmplz_s": statistics.median(s for s, _ in peer), "lmplz_mb": statistics.median(m for _, m in peer),
                "lmpipe_s": statistics.median(s for s, _ in mine), "lmpipe_mb": statistics.median(m for _, m in mine),
                "stage_s": statistics.median(stage), "count_s": est["count_seconds"], "estimate_s": est["estimate_seconds"],
                "arpa_s": est["arpa_seconds"], "same": same, "dprob": dprob, "load": load,
                "all_lmplz": [round(s, 1) for s, _ in peer], "all_lmpipe": [round(s, 1) for s, _ in mine],
            }  # fmt: skip
            rows.append(row)
            print(row, flush=True)
    report(rows, args)


def _train_tokens(manifest: dict) -> int:
    shards = manifest["outputs"]["shards"]["train"]
    return sum(int(s["tokens"]) for s in shards)


def report(rows: list[dict], args: argparse.Namespace) -> None:
    lines = [
        "| corpus | train tokens | order | lmplz s | lmpipe run s | ratio | stage s (count / estimate / ARPA) | lmplz MB | lmpipe MB (all procs) | memory ratio | same n-grams | max Δ log10 p | load avg before |",
        "|" + "---|" * 13,
    ]
    for r in rows:
        lines.append(
            f"| {r['corpus']} | {r['tokens'] / 1e6:.2f}M | {r['order']} | {r['lmplz_s']:.1f} | {r['lmpipe_s']:.1f} | "
            f"**{r['lmpipe_s'] / r['lmplz_s']:.2f}×** | {r['stage_s']:.1f} ({r['count_s']:.1f} / {r['estimate_s']:.1f} / {r['arpa_s']:.1f}) | "
            f"{r['lmplz_mb']:.0f} | {r['lmpipe_mb']:.0f} | {r['lmpipe_mb'] / r['lmplz_mb']:.2f}× | {r['same']} | {r['dprob']:.1e} | "
            f"{' '.join(f'{x:.2f}' for x in r['load'])} |"
        )
    table = "\n".join(lines)
    print(table)
    entry = (
        f"\n## ngram whole run vs lmplz, text never repeated ({time.strftime('%Y-%m-%d')})\n\n"
        f"Command: `python bench/ngram_whole_run.py --generated {' '.join(f'{g:.0e}' for g in args.generated)} "
        f"--orders {' '.join(map(str, args.orders))} --rounds {args.rounds}"
        f"{' --no-real' if args.no_real else ''} --memory-mb {args.memory_mb}`  \n"
        f"Machine: {machine()}; {versions('ray', 'numpy', 'pyarrow', 'numba')}; lmplz `-S {args.memory_mb}M`, "
        f"lmpipe `ngram.memory_mb: {args.memory_mb}`, 2 workers, embedded local Ray with 2 CPUs.  \n"
        "Medians of alternating whole processes; lmpipe run s includes interpreter start, imports, Ray start and "
        "shutdown; memory is the peak RSS summed over each process tree. Per-run seconds: "
        + "; ".join(f"{r['corpus']} o{r['order']}: lmplz {r['all_lmplz']}, lmpipe {r['all_lmpipe']}" for r in rows)
        + "\n\n"
        f"{table}\n"
    )
    with open(HERE / "RESULTS.md", "a", encoding="utf-8") as fh:
        fh.write(entry)


if __name__ == "__main__":
    main()
