"""Out-of-core n-gram estimation: counts several times the memory budget, lmplz's ARPA, bounded memory and disk.

    python bench/ngram_out_of_core.py [--mirror DIR] [--order 5] [--factors 4 8] [--generated 0]

Issue 16 item 2.  The real English text of the mirror (PTB, Brown, BBC News, KJV) -- or, with
``--generated N``, N tokens of text generated from a model of it -- is tokenized once; then, per factor F:

* the budget is set so that the n-gram counts of every order (``Σ_k n_k · (4k + 8)`` bytes: k word ids and a
  count per n-gram, from a first run's manifest) are F times ``ngram.memory_mb``;
* ``lmpipe run --stages ngram`` with ``ngram.executor: ray`` (every task in its own worker process, so each
  task's memory is measurable) and ``ngram.temp_dir`` on a local scratch folder;
* ``lmplz -o N -S <same budget> -T <scratch>`` on the same words.

Sampled every 0.1 s: the peak RSS of each process of the lmpipe tree (driver, raylet, each worker) and the
bytes under each tool's scratch folder.  A worker's RSS includes its interpreter and imports: its floor is its RSS while it waited for
its first task (the bare Ray worker); the peak above that floor is the task's data plus the imports the task
brings (numpy, pyarrow, numba, lmpipe: ~250 MB).  Reported beside the corpus's bytes: both tools' peak scratch disk, lmpipe's own
``estimation.peak_work_bytes``, and whether the ARPA equals the unbounded run's byte for byte and holds
lmplz's n-grams.  Appends a section to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine, versions
from corpora import english_text, generated_corpus

HERE = Path(__file__).resolve().parent


def tree_bytes(root: Path) -> int:
    """Bytes of the regular files under ``root`` (files vanish while we walk: skipped)."""
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                continue
    return total


def open_deleted_bytes(processes: list, scratch: Path) -> int:
    """Bytes of files under ``scratch`` that are deleted but still open: lmplz unlinks its temporary files
    as soon as it creates them (KenLM's ``util::MakeTemp``), so only its open descriptors see them."""
    total, prefix = 0, str(scratch)
    for p in processes:
        fds = Path(f"/proc/{p.pid}/fd")
        try:
            entries = list(fds.iterdir())
        except OSError:
            continue
        for fd in entries:
            try:
                target = os.readlink(fd)
                if target.startswith(prefix) and target.endswith(" (deleted)"):
                    total += os.stat(fd).st_size
            except OSError:
                continue
    return total


def sampled(cmd: list[str], scratch: Path) -> dict:
    """Run ``cmd``; its wall seconds, the peak RSS summed over its process tree, each process's peak and
    floor RSS (MB, by pid and name), and the peak bytes under ``scratch``."""
    import psutil

    start = time.perf_counter()
    proc = psutil.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak_total = peak_disk = 0
    per: dict[int, dict] = {}
    while proc.poll() is None:
        total = 0
        try:
            family = [proc, *proc.children(recursive=True)]
        except psutil.Error:
            family = [proc]
        for p in family:
            try:
                rss, name = p.memory_info().rss, p.name()
            except psutil.Error:
                continue
            total += rss
            seen = per.setdefault(p.pid, {"name": name, "peak": 0, "floor": 0, "tasks": False})
            seen["peak"] = max(seen["peak"], rss)
            if name == "ray::IDLE" and not seen["tasks"]:
                seen["floor"] = max(seen["floor"], rss)  # a started worker waiting for its first task
            elif name.startswith("ray::"):
                seen["tasks"], seen["name"] = True, name  # a Ray worker renames itself while it runs a task
        peak_total = max(peak_total, total)
        peak_disk = max(peak_disk, tree_bytes(scratch) + open_deleted_bytes(family, scratch))
        time.sleep(0.1)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
    return {"seconds": seconds, "peak_mb": peak_total / 2**20, "disk": peak_disk, "processes": per}


def line_multiset(path: Path) -> tuple[int, int]:
    """Lines and an order-free digest of them (sum of per-line hashes): two ARPAs with the same lines in
    another order agree.  Line order within an order's section follows the partitioning, hence the budget."""
    lines = digest = 0
    with open(path, "rb") as fh:
        for line in fh:
            lines += 1
            digest = (digest + hash(line)) & 0xFFFFFFFFFFFFFFFF
    return lines, digest


def count_bytes(ngrams: dict) -> int:
    """Bytes of the raw n-gram counts of every order: k 4-byte word ids and an 8-byte count per n-gram."""
    return sum(int(n) * (4 * int(k) + 8) for k, n in ngrams.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mirror", default=os.environ.get("LMPIPE_DATA_MIRROR", str(HERE.parent.parent / "shared" / "data")))
    parser.add_argument("--order", type=int, default=5)
    parser.add_argument("--factors", type=float, nargs="+", default=[4.0, 8.0], help="count bytes / memory budget")
    parser.add_argument("--generated", type=float, default=0, help="tokens of generated text instead of the real text")
    parser.add_argument("--work", default="/tmp/lmpipe-bench-ngram-ooc")
    args = parser.parse_args()

    from lmpipe.lm.arpa import compare_arpa, read_arpa
    from lmpipe.lm.kenlm_tools import find_kenlm_binary
    from lmpipe.pipelines.evaluate import split_sentences

    mirror, work = Path(args.mirror), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.generated:
        text = work / f"generated-{args.generated:.0e}.txt"
        generated_corpus(mirror, int(args.generated), text, seed=7)
        corpus = f"generated {args.generated / 1e6:.0f}M"
    else:
        text = work / "english.txt"
        if not text.exists():
            text.write_text(english_text(mirror), encoding="utf-8")
        corpus = "real English (PTB+Brown+BBC+KJV)"
    lmpipe = str(Path(sys.executable).with_name("lmpipe"))
    lmplz = str(find_kenlm_binary("lmplz"))
    run_dir, spec = work / ("run-" + text.stem), work / f"{text.stem}.yaml"
    body = {"name": "ooc", "corpus": {"train": str(text)}, "normalize": {"literal_specials": "rename"},
            "tokenize": {"shard_mb": 64, "workers": 2}}  # fmt: skip
    spec.write_text(json.dumps(body), encoding="utf-8")  # JSON is YAML
    base = [lmpipe, "run", str(spec), "--run-dir", str(run_dir), "--num-cpus", "2"]
    subprocess.run([*base, "--stages", "tokenize"], check=True, capture_output=True)
    words = work / f"{text.stem}.train.txt"
    if not words.exists():
        with open(words, "w", encoding="utf-8") as fh:
            for sentence in split_sentences(run_dir, "train"):
                fh.write(sentence + "\n")
    corpus_bytes = words.stat().st_size

    def ours(memory_mb: int, scratch: Path) -> tuple[dict, dict]:
        sets = [f"ngram.order={args.order}", "ngram.workers=2", f"ngram.memory_mb={memory_mb}", "ngram.build_binary=false",
                "ngram.executor=ray", f"ngram.temp_dir={scratch}"]  # fmt: skip
        cmd = [*base, "--stages", "ngram", "--force", "ngram"]
        for s in sets:
            cmd += ["--set", s]
        measured = sampled(cmd, scratch)
        return measured, json.loads((run_dir / "ngram" / "manifest.json").read_text())

    # the unbounded run: its ARPA is the reference bytes, its manifest gives the count sizes
    reference, counted = work / f"{text.stem}.reference{args.order}.arpa", work / f"{text.stem}.counts{args.order}.json"
    if not (reference.exists() and counted.exists()):  # a rerun reuses them
        with tempfile.TemporaryDirectory(dir=work) as scratch:
            _, manifest = ours(8192, Path(scratch))
        os.replace(run_dir / "ngram" / "model.arpa", reference)
        counted.write_text(json.dumps(manifest["estimation"]["raw_ngrams"]), encoding="utf-8")
    counts = count_bytes(json.loads(counted.read_text(encoding="utf-8")))
    rows = []
    for factor in args.factors:
        memory_mb = max(1, math.floor(counts / factor / 2**20))
        load = os.getloadavg()
        with tempfile.TemporaryDirectory(dir=work) as scratch:
            mine, manifest = ours(memory_mb, Path(scratch))
        with tempfile.TemporaryDirectory(dir=work) as scratch:
            peer_arpa = Path(scratch) / "peer.arpa"
            peer = sampled([lmplz, "-o", str(args.order), "-S", f"{memory_mb}M", "-T", f"{scratch}/", "--arpa", str(peer_arpa),
                            "--text", str(words)], Path(scratch))  # fmt: skip
            peer["disk"] -= peer_arpa.stat().st_size if peer["disk"] >= peer_arpa.stat().st_size else 0
            diff = compare_arpa(read_arpa(run_dir / "ngram" / "model.arpa"), read_arpa(peer_arpa))
        workers = [p for p in mine["processes"].values() if p["tasks"]]
        task_mb = max(((p["peak"] - p["floor"]) / 2**20 for p in workers if p["floor"]), default=float("nan"))
        rows.append({
            "corpus": corpus, "order": args.order, "corpus_mb": corpus_bytes / 2**20, "counts_mb": counts / 2**20,
            "memory_mb": memory_mb, "factor": counts / (memory_mb * 2**20), "partitions": manifest["estimation"]["partitions"],
            "identical": filecmp.cmp(run_dir / "ngram" / "model.arpa", reference, shallow=False),
            "same_lines": line_multiset(run_dir / "ngram" / "model.arpa") == line_multiset(reference), "same": diff.same_ngrams,
            "dprob": diff.max_prob_diff, "seconds": mine["seconds"], "peak_mb": mine["peak_mb"],
            "worker_peak_mb": max((p["peak"] / 2**20 for p in workers), default=float("nan")), "task_mb": task_mb,
            "disk_mb": mine["disk"] / 2**20, "work_mb": manifest["estimation"]["peak_work_bytes"] / 2**20,
            "lmplz_s": peer["seconds"], "lmplz_mb": peer["peak_mb"], "lmplz_disk_mb": peer["disk"] / 2**20, "load": load,
        })  # fmt: skip
        print(rows[-1], flush=True)
    report(rows, args)


def report(rows: list[dict], args: argparse.Namespace) -> None:
    lines = [
        "| corpus | order | text MB | counts MB | memory_mb | counts / budget | partitions | ARPA = unbounded run's lines (bytes) | "
        "same n-grams as lmplz | max Δ log10 p | lmpipe peak MB (all procs) | worker peak MB (task above floor) | "
        "lmpipe scratch disk MB (÷ text) / with its kept counts | lmplz peak MB | lmplz scratch disk MB (÷ text) | lmpipe s / lmplz s | load avg |",
        "|" + "---|" * 17,
    ]
    for r in rows:
        lines.append(
            f"| {r['corpus']} | {r['order']} | {r['corpus_mb']:.1f} | {r['counts_mb']:.0f} | {r['memory_mb']} | "
            f"{r['factor']:.1f}× | {r['partitions']} | {r['same_lines']} ({r['identical']}) | {r['same']} | {r['dprob']:.1e} | {r['peak_mb']:.0f} | "
            f"{r['worker_peak_mb']:.0f} ({r['task_mb']:.0f}) | {r['disk_mb']:.0f} ({r['disk_mb'] / r['corpus_mb']:.1f}×) / "
            f"{r['work_mb']:.0f} ({r['work_mb'] / r['corpus_mb']:.1f}×) | "
            f"{r['lmplz_mb']:.0f} | {r['lmplz_disk_mb']:.0f} ({r['lmplz_disk_mb'] / r['corpus_mb']:.1f}×) | "
            f"{r['seconds']:.0f} / {r['lmplz_s']:.0f} | {' '.join(f'{x:.1f}' for x in r['load'])} |"
        )
    table = "\n".join(lines)
    print(table)
    gen = f" --generated {args.generated:.0e}" if args.generated else ""
    entry = (
        f"\n## ngram out of core: counts several times the memory budget ({time.strftime('%Y-%m-%d')})\n\n"
        f"Command: `python bench/ngram_out_of_core.py --order {args.order} --factors {' '.join(f'{f:g}' for f in args.factors)}{gen}`  \n"
        f"Machine: {machine()}; {versions('ray', 'numpy', 'pyarrow', 'numba')}; `ngram.executor: ray` (a process per "
        "task), 2 workers, `ngram.temp_dir` and lmplz's `-T` on the same local disk, lmplz `-S` = `memory_mb`.  \n"
        "Counts MB: Σ n-grams × (4 bytes per word id + 8 for the count), every order.  Scratch disk: the peak bytes "
        "under each tool's scratch folder, sampled every 0.1 s: lmpipe's spills under `ngram.temp_dir`; its kept "
        "counts are an output in the run directory, added after the slash from the manifest's "
        "`estimation.peak_work_bytes` (between steps); the ARPA is in neither.  "
        "A worker's floor is its RSS while it waited for its first task (above it: the task's imports, ~250 MB, and "
        "its data); lmplz's scratch includes its deleted-but-open temporary files; times are single runs under "
        "the load shown.\n\n"
        f"{table}\n"
    )
    with open(HERE / "RESULTS.md", "a", encoding="utf-8") as fh:
        fh.write(entry)


if __name__ == "__main__":
    main()
