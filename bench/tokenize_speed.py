"""Benchmark the tokenize stage against a single-process pyarrow baseline, in the same run.

    python bench/tokenize_speed.py [--mirror DIR] [--big-tokens 100e6] [--workers 2] [--skip-sp]

Corpora: PTB train (887k words), and the mirrored English text (PTB train, Brown without tags, BBC News,
KJV without verse references; about 3.7M words) concatenated and repeated to 10M and ``--big-tokens``
tokens (repetition only serves throughput and memory figures).  For each corpus and tokenizer it runs:

* ``baseline``: one Python process with pyarrow compute, the same work as the stage: a counting pass,
  the vocabulary, an encoding pass to uint32 ids, Arrow IPC output; streaming in 64 MB blocks.
* ``lmpipe``: ``lmpipe run`` of the tokenize stage on an embedded local Ray with ``--workers`` actors,
  started fresh for each run in a subprocess (so its cold start is counted, as a user would see it).

Peak memory: the driver's peak RSS (the lmpipe process) and the largest worker peak RSS the stage's
manifest records.  Results are printed and appended to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from corpora import english_text, make_corpus

HERE = Path(__file__).resolve().parent


BLOCK = 64 << 20


def blocks(path: Path) -> Iterator[pa.StringArray]:
    with open(path, "rb") as fh:
        carry = b""
        while True:
            data = fh.read(BLOCK)
            if not data:
                break
            data = carry + data
            cut = data.rfind(b"\n") + 1
            carry = data[cut:]
            yield pa.array(data[:cut].decode().split("\n")[:-1], pa.string())
        if carry:
            yield pa.array([carry.decode()], pa.string())


def baseline(path: Path, out: Path) -> dict[str, float]:
    """Single process, two streaming passes, pyarrow compute; writes uint32 ids to one IPC file."""
    start = time.perf_counter()
    partial = []
    for lines in blocks(path):
        toks = pc.list_flatten(pc.utf8_split_whitespace(pc.utf8_trim_whitespace(lines)))
        vc = pc.value_counts(toks)
        partial.append(pa.table({"t": vc.field("values"), "c": vc.field("counts")}))
    counts = pa.concat_tables(partial).group_by("t").aggregate([("c", "sum")]).sort_by([("c_sum", "descending")])
    vocab = counts["t"].combine_chunks()
    n_tokens = 0
    schema = pa.schema([("ids", pa.list_(pa.uint32()))])
    with pa.OSFile(str(out), "wb") as sink, pa.ipc.new_file(sink, schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as w:
        for lines in blocks(path):
            lists = pc.utf8_split_whitespace(pc.utf8_trim_whitespace(lines))
            flat = pc.list_flatten(lists)
            ids = pc.index_in(flat, value_set=vocab).fill_null(0).cast(pa.uint32())
            n_tokens += len(ids)
            offsets = np.concatenate([[0], np.cumsum(np.asarray(pc.list_value_length(lists)))]).astype(np.int32)
            w.write_table(pa.table({"ids": pa.ListArray.from_arrays(pa.array(offsets), ids)}, schema=schema))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "tokens": n_tokens, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def baseline_sp(path: Path, model: Path, out: Path) -> dict[str, float]:
    """Single process sentencepiece encoding with the model the stage trained (one thread), same output."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model))
    start = time.perf_counter()
    n_tokens = 0
    schema = pa.schema([("ids", pa.list_(pa.uint32()))])
    with pa.OSFile(str(out), "wb") as sink, pa.ipc.new_file(sink, schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as w:
        for lines in blocks(path):
            ids = pa.array(sp.encode(lines.to_pylist(), num_threads=1), pa.list_(pa.uint32()))
            n_tokens += len(pc.list_flatten(ids))
            w.write_table(pa.table({"ids": ids}, schema=schema))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "tokens": n_tokens, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_lmpipe(path: Path, run_dir: Path, kind: str, workers: int, shard_mb: float) -> dict[str, float]:
    spec = {
        "name": "bench",
        "corpus": {"train": str(path)},
        "normalize": {"literal_specials": "rename"},  # PTB and the repeated corpus hold literal <unk>
        "tokenizer": {"kind": kind, "sp_vocab_size": 8000, "sp_sample_lines": 100_000},
        "tokenize": {"workers": workers, "shard_mb": shard_mb},
    }
    spec_path = run_dir.with_suffix(".yaml")
    spec_path.write_text(json.dumps(spec))
    cmd = [
        sys.executable,
        "-c",
        # The driver's own peak RSS, sampled: ru_maxrss of a child started from this (large) process
        # would report this process's peak, inherited across fork and exec.
        "import sys,threading,time,psutil\n"
        "peak=[0]\n"
        "def watch():\n"
        "    me=psutil.Process()\n"
        "    while True: peak[0]=max(peak[0], me.memory_info().rss); time.sleep(0.1)\n"
        "threading.Thread(target=watch, daemon=True).start()\n"
        "from pipelines.cli import main\n"
        "code=main(sys.argv[1:]); print('PEAK', peak[0]/2**20); sys.exit(code)",
        "run",
        str(spec_path),
        "--run-dir",
        str(run_dir),
        "--force",
        "tokenize",
        "--stages",
        "tokenize",
        "--num-cpus",
        str(workers),
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    driver = float([ln for ln in proc.stdout.splitlines() if ln.startswith("PEAK")][-1].split()[1])
    manifest = json.loads((run_dir / "tokenize" / "manifest.json").read_text())
    stage_seconds = manifest["timings"]["seconds"]
    worker_peak = max(w["peak_rss_mb"] for w in manifest["workers"])
    tokens = manifest["outputs"]["splits"]["train"]["tokens"]
    return {"seconds": seconds, "stage_seconds": stage_seconds, "tokens": tokens, "driver_mb": driver, "worker_mb": worker_peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mirror", default=os.environ.get("LMPIPE_DATA_MIRROR", str(HERE.parent.parent / "shared" / "data")))
    parser.add_argument("--big-tokens", type=float, default=100e6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-sp", action="store_true")
    parser.add_argument("--work", default="/tmp/lmpipe-bench")
    args = parser.parse_args()
    mirror, work = Path(args.mirror), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    text = english_text(mirror)
    corpora = [("PTB train", mirror / "ptb" / "ptb.train.txt", 887_521)]
    for n in (args.big_tokens / 10, args.big_tokens):
        path = work / f"english-{int(n / 1e6)}M.txt"
        real = make_corpus(text, int(n), path)
        corpora.append((f"English x{real / 1e6:.0f}M", path, real))
    rows = []
    for name, path, _ in corpora:
        size_mb = path.stat().st_size / 2**20
        shard_mb = 2.0 if size_mb < 64 else 64.0
        for kind in ("whitespace", "sentencepiece"):
            if kind == "sentencepiece" and args.skip_sp:
                continue
            res = run_lmpipe(path, work / f"run-{kind}-{path.stem}", kind, args.workers, shard_mb)
            if kind == "whitespace":
                base = baseline(path, work / "baseline.arrow")
            else:
                model = work / f"run-{kind}-{path.stem}" / "tokenize" / "tokenizer.model"
                base = baseline_sp(path, model, work / "baseline.arrow")
            row = {
                "corpus": name,
                "MB": round(size_mb, 1),
                "tokenizer": kind,
                "tokens": res["tokens"],
                "lmpipe_s": round(res["seconds"], 1),
                "stage_s": round(res["stage_seconds"], 1),
                "lmpipe_tok_s": res["tokens"] / res["seconds"],
                "stage_tok_s": res["tokens"] / res["stage_seconds"],
                "driver_mb": round(res["driver_mb"]),
                "worker_mb": round(res["worker_mb"]),
            }
            if base:
                row.update(base_s=round(base["seconds"], 1), base_tok_s=base["tokens"] / base["seconds"], base_mb=round(base["peak_rss_mb"]))
            rows.append(row)
            print(json.dumps(row), flush=True)
    report(rows, args)


def report(rows: list[dict], args: argparse.Namespace) -> None:
    import pyarrow
    import ray

    head = (
        "| corpus | MB | tokenizer | tokens | lmpipe wall s (stage s) | lmpipe tok/s (stage) | baseline s | "
        "baseline tok/s | ratio wall (stage) | driver MB | worker MB | baseline MB |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        ratio = f"{r['lmpipe_tok_s'] / r['base_tok_s']:.2f}× ({r['stage_tok_s'] / r['base_tok_s']:.2f}×)" if "base_s" in r else "–"
        lines.append(
            f"| {r['corpus']} | {r['MB']} | {r['tokenizer']} | {r['tokens']:,} | {r['lmpipe_s']} ({r['stage_s']}) | "
            f"{r['lmpipe_tok_s'] / 1e6:.2f}M ({r['stage_tok_s'] / 1e6:.2f}M) | {r.get('base_s', '–')} | "
            f"{r['base_tok_s'] / 1e6:.2f}M | {ratio} | {r['driver_mb']} | {r['worker_mb']} | {r.get('base_mb', '–')} |"
            if "base_s" in r
            else f"| {r['corpus']} | {r['MB']} | {r['tokenizer']} | {r['tokens']:,} | {r['lmpipe_s']} ({r['stage_s']}) | "
            f"{r['lmpipe_tok_s'] / 1e6:.2f}M ({r['stage_tok_s'] / 1e6:.2f}M) | – | – | – | {r['driver_mb']} | {r['worker_mb']} | – |"
        )
    table = "\n".join(lines)
    print(table)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, ray {ray.__version__}, pyarrow {pyarrow.__version__}"
    entry = (
        f"\n## tokenize stage vs single-process pyarrow baseline ({time.strftime('%Y-%m-%d')})\n\n"
        f"Command: `python bench/tokenize_speed.py --workers {args.workers} --big-tokens {args.big_tokens:.0f}`  \n"
        f"Machine: {machine}  \n"
        "lmpipe wall = the whole `lmpipe run` process (Ray start included); stage = the stage's own timing. "
        "Tokens = training tokens (no `</s>`; sentencepiece: pieces). Baseline = one process: pyarrow compute with the "
        "same two passes and output (whitespace), or sentencepiece encoding with the model the stage trained (its "
        "training time is in lmpipe's column only).\n\n"
        f"{table}\n"
    )
    with open(HERE / "RESULTS.md", "a", encoding="utf-8") as fh:
        fh.write(entry)


if __name__ == "__main__":
    main()
