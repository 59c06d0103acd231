"""Scaling, step by step: 1 vs 2 workers per stage and per n-gram step, bytes written per step, a cost model.

    python bench/scale.py [--tokens 1e8] [--order 5] [--sgns-epochs 1] [--loopback] [--nodes 100]

Issue 16 item 6.  Text generated from a model of the mirrored real English (``corpora.generated_corpus``) is
run through tokenize, ngram (``executor: ray``: every step's tasks on Ray workers), cooccur and sgns, once with
every stage's ``workers: 1`` and once with ``workers: 2``, each a fresh ``lmpipe run`` on an embedded local Ray
with 2 CPUs.  From the manifests:

* per stage and per n-gram step (count, merge, adjust, probabilities k, interpolate k, backoff, ARPA, the
  re-partitioning ``split`` steps between them): seconds with 1 and 2 workers, the speed-up, tasks, and the
  bytes the step wrote (its shuffle: every byte a step writes is read by the next one, across nodes on a
  cluster);
* a cost model per step, ``T(w) = serial + parallel / w + bytes · (1 - 1/w) / bandwidth``: ``serial`` and
  ``parallel`` are solved from the two measurements (Amdahl's law), the last term is the share of a step's
  bytes that crosses the network when its tasks are spread over ``w`` nodes (``--bandwidth-mb``, default
  1,000 MB/s, 10 GbE).  Predicted: a ``--nodes``-node run of ``--nodes-tokens`` tokens (work and bytes grow
  linearly with tokens, which the n-gram counts of real text do to within Heaps' law).
* ``--sgns-threads``: sgns scales by Hogwild threads of one worker (``workers: 1, threads: w``), the form a
  single machine runs it in, instead of Ray Train data-parallel workers (``workers: w, threads: 1``).
* ``--loopback``: the same spec with 2 workers on a two-node loopback Ray cluster (``cluster.loopback``,
  1 CPU per node), checked against the model's prediction for w=2 (there the bytes do cross a node boundary,
  through the shared disk).

Appends a section to bench/RESULTS.md.  Load average is recorded; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine, versions
from corpora import generated_corpus

HERE = Path(__file__).resolve().parent
STAGES = ("tokenize", "ngram", "cooccur", "sgns")
#: lmplz's --discount_fallback: at 1e8 generated tokens the bigrams' counts-of-counts (n1..n4 = 5.1M, 308k, 164k,
#: 147k with seed 11) give a negative D3, which the closed form refuses; the timings do not depend on the values.
FALLBACK = (0.5, 1.0, 1.5)


def spec_for(text: Path, workers: int, args: argparse.Namespace) -> dict:
    return {
        "name": "scale", "corpus": {"train": str(text)}, "normalize": {"literal_specials": "rename"},
        "tokenize": {"workers": workers, "shard_mb": args.shard_mb},
        "ngram": {"order": args.order, "workers": workers, "executor": "ray", "memory_mb": args.memory_mb,
                  "build_binary": False, "partitions": 4, "discount_fallback": list(FALLBACK)},
        "cooccur": {"workers": workers},
        "sgns": {"workers": 1 if args.sgns_threads else workers, "threads": workers if args.sgns_threads else 1,
                 "epochs": args.sgns_epochs, "evaluate": False},
    }  # fmt: skip


def run(spec: dict, run_dir: Path, env: dict[str, str] | None = None) -> dict[str, dict]:
    """One fresh ``lmpipe run`` of the four stages; each stage's manifest, and the whole wall seconds."""
    path = run_dir.with_suffix(".yaml")
    path.write_text(json.dumps(spec), encoding="utf-8")  # JSON is YAML
    lmpipe = str(Path(sys.executable).with_name("lmpipe"))
    cmd = [lmpipe, "run", str(path), "--run-dir", str(run_dir), "--stages", ",".join(STAGES), "--force", ",".join(STAGES)]
    if env is None:
        cmd += ["--num-cpus", "2"]
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"lmpipe run failed ({done.returncode}): {done.stderr[-3000:]}")
    out = {s: json.loads((run_dir / s / "manifest.json").read_text()) for s in STAGES}
    out["whole"] = {"seconds": time.perf_counter() - started}
    return out


def steps(manifests: dict[str, dict]) -> dict[str, dict]:
    """Seconds, tasks and bytes written of every measured step: whole stages, and the n-gram steps."""
    rows: dict[str, dict] = {"whole run (lmpipe run)": {"seconds": manifests["whole"]["seconds"], "tasks": None, "bytes": None}}
    for stage in STAGES:
        rows[stage] = {"seconds": manifests[stage]["timings"]["seconds"], "tasks": None, "bytes": None}
    for s in manifests["ngram"]["estimation"].get("steps", []):
        name = f"ngram: {s['step']}"
        rows[name] = {"seconds": s["seconds"], "tasks": s["tasks"], "bytes": s["bytes_written"]}
    epochs = manifests["sgns"].get("training", {}).get("epochs", [])
    if epochs:
        rows["sgns: epochs"] = {"seconds": sum(e["seconds"] for e in epochs), "tasks": None, "bytes": None}
    return rows


def model(t1: float, t2: float) -> tuple[float, float, float]:
    """A step measured at w=1 and w=2 (one machine: no network term) as (serial, parallel, overhead) of
    ``T(w) = serial + parallel / w + overhead · (w - 1)``: Amdahl's split when 2 workers were faster; when they
    were slower, no parallel part and the difference as a per-extra-worker coordination cost (start-up of a
    worker group, replica merges), which is what makes such a step scale worse the more nodes it gets."""
    if t2 < t1:
        parallel = min(t1, 2.0 * (t1 - t2))
        return t1 - parallel, parallel, 0.0
    return t1, 0.0, t2 - t1


def predict(fit: tuple[float, float, float], nbytes: int | None, w: int, scale: float, bandwidth: float) -> float:
    """Seconds at ``w`` nodes for ``scale`` times the tokens: serial and parallel work grow with the data
    (a driver step that reads every partition's summary grows too), parallel work is split over the nodes, the
    coordination cost grows with them, and a share ``1 - 1/w`` of the bytes a step writes crosses the network."""
    serial, parallel, overhead = fit
    network = (nbytes or 0) * scale * (1.0 - 1.0 / w) / bandwidth
    return serial * scale + parallel * scale / w + overhead * (w - 1) + network


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mirror", default=os.environ.get("LMPIPE_DATA_MIRROR", str(HERE.parent.parent / "shared" / "data")))
    parser.add_argument("--tokens", type=float, default=1e8)
    parser.add_argument("--order", type=int, default=5)
    parser.add_argument("--memory-mb", type=int, default=4096)
    parser.add_argument("--shard-mb", type=float, default=64.0)
    parser.add_argument("--sgns-epochs", type=int, default=1)
    parser.add_argument("--loopback", action="store_true", help="also run w=2 on a two-node loopback cluster")
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--nodes-tokens", type=float, default=1e10, help="corpus size of the predicted run")
    parser.add_argument("--bandwidth-mb", type=float, default=1000.0)
    parser.add_argument("--work", default="/tmp/lmpipe-bench-scale")
    parser.add_argument("--no-append", action="store_true", help="print the table only (a smoke run)")
    parser.add_argument("--sgns-threads", action="store_true",
                        help="sgns scales by Hogwild threads in one worker (threads: w) instead of Ray Train workers")
    parser.add_argument("--report-only", action="store_true", help="report the last measurement of this size again")
    args = parser.parse_args()

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    text = work / f"generated-{args.tokens:.0e}.txt"
    generated_corpus(Path(args.mirror), int(args.tokens), text, seed=11)
    saved = work / f"measured-{args.tokens:.0e}-o{args.order}{'-threads' if args.sgns_threads else ''}.json"
    if args.report_only:  # the figures of the last measurement, reported again (e.g. after a model change)
        data = json.loads(saved.read_text(encoding="utf-8"))
        measured, loop, load = {int(w): v for w, v in data["measured"].items()}, data["loop"], tuple(data["load"])
    else:
        load = os.getloadavg()
        measured = {w: steps(run(spec_for(text, w, args), work / f"run-w{w}")) for w in (1, 2)}
        loop = None
        if args.loopback:
            from lmpipe.cluster.loopback import LoopbackCluster

            with LoopbackCluster(Path(tempfile.mkdtemp(prefix="lmp-", dir="/tmp"))) as cluster:
                env = {**cluster.env(), "RAY_ADDRESS": cluster.gcs_address}
                loop = steps(run(spec_for(text, 2, args), work / "run-loopback", env))
        saved.write_text(json.dumps({"measured": measured, "loop": loop, "load": load}), encoding="utf-8")
    report(measured, loop, load, args)


def report(measured: dict[int, dict], loop: dict | None, load: tuple, args: argparse.Namespace) -> None:
    bandwidth = args.bandwidth_mb * 2**20
    scale = args.nodes_tokens / args.tokens
    head = ["step", "tasks", "MB written", "1 worker s", "2 workers s", "speed-up", "serial / parallel / overhead s",
            f"predicted s, {args.nodes} nodes, {args.nodes_tokens:.0e} tokens"]  # fmt: skip
    if loop is not None:
        head += ["loopback 2 nodes s", "predicted 2 nodes s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, one in measured[1].items():
        two = measured[2].get(name)
        if two is None:
            continue
        fit = model(one["seconds"], two["seconds"])
        row = [
            name, "" if two["tasks"] is None else str(two["tasks"]),
            "" if two["bytes"] is None else f"{two['bytes'] / 2**20:,.0f}", f"{one['seconds']:.1f}", f"{two['seconds']:.1f}",
            f"**{one['seconds'] / max(two['seconds'], 1e-9):.2f}×**", f"{fit[0]:.1f} / {fit[1]:.1f} / {fit[2]:.1f}",
            f"{predict(fit, two['bytes'], args.nodes, scale, bandwidth):,.0f}",
        ]  # fmt: skip
        if loop is not None and name in loop:
            row += [f"{loop[name]['seconds']:.1f}", f"{predict(fit, two['bytes'], 2, 1.0, bandwidth):.1f}"]
        lines.append("| " + " | ".join(row) + " |")
    table = "\n".join(lines)
    print(table)
    entry = (
        f"\n## Scaling step by step: 1 vs 2 workers, bytes per step, a cost model ({time.strftime('%Y-%m-%d')})\n\n"
        f"Command: `python bench/scale.py --tokens {args.tokens:.0e} --order {args.order} --sgns-epochs {args.sgns_epochs}"
        f"{' --sgns-threads' if args.sgns_threads else ''}"
        f"{' --loopback' if loop is not None else ''} --nodes {args.nodes} --nodes-tokens {args.nodes_tokens:.0e}`  \n"
        f"Machine: {machine()}; {versions('ray', 'numpy', 'pyarrow', 'numba', 'torch')}; load average before: "
        f"{' '.join(f'{x:.2f}' for x in load)}.  Generated text (`corpora.generated_corpus`), {args.tokens:.0e} tokens; "
        "Model per step: `T(w) = serial + parallel / w + overhead · (w - 1) + bytes · (1 - 1/w) / bandwidth`, the first "
        f"three solved from the two runs (overhead only where 2 workers were slower), bandwidth {args.bandwidth_mb:,.0f} MB/s; predictions scale work and bytes linearly "
        "with tokens.\n\n"
        f"{table}\n"
    )
    if not args.no_append:
        with open(HERE / "RESULTS.md", "a", encoding="utf-8") as fh:
            fh.write(entry)


if __name__ == "__main__":
    main()
