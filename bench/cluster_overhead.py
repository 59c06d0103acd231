"""What submitting to a cluster costs: the same spec run locally (``lmpipe run``, embedded Ray with 2 CPUs)
and submitted as a Ray job (``lmpipe submit`` path: ``plan_job`` + ``submit``) to a two-node loopback cluster
(``cluster.loopback``: head 1 CPU + second node 1 CPU, token auth), on the same machine.

Per run, all times from the moment the command (local) or the submission (cluster) starts:

* ``to RUNNING``  (cluster) the job's status first seen RUNNING (polled every 0.1 s): validating the spec,
  staging and uploading the working directory, the job supervisor starting;
* ``to 1st stage`` the first stage's ``timings.started`` in its manifest: adds the driver's start-up (Python,
  ``lmpipe`` imports, ``ray.init`` to start or join Ray, stage checks);
* ``stages``       the sum of the stage manifests' ``timings.seconds``: the pipeline's own work;
* ``end-to-end``   until the command exits (local) or SUCCEEDED is seen (cluster);
* ``overhead``     end-to-end minus stages.

The cluster's own start-up (``ray start`` x 2) is reported once, apart: it is paid once per cluster, not per job.

    LMPIPE_DATA_MIRROR=../shared/data .venv/bin/python bench/cluster_overhead.py            # tiny + ptb, 2 repeats
    .venv/bin/python bench/cluster_overhead.py --specs tiny --repeats 1 --no-append                  # smoke

Both specs run tokenize + ngram (``stages=[tokenize,ngram]`` is set for every run); ``--set`` adds overrides.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import machine
from common import versions as package_versions

BENCH = Path(__file__).resolve().parent


def versions() -> str:
    return package_versions("ray", "pyarrow", "torch")

REPO = BENCH.parent
STAGES = ["stages=[tokenize, ngram]"]  # the same work for both specs, whatever else their stages list
SPECS = {"tiny": REPO / "pipelines" / "specs" / "tiny.yaml", "ptb": REPO / "pipelines" / "specs" / "ptb.yaml"}


def stage_times(run_dir: Path) -> tuple[float, float]:
    """(earliest stage start as a Unix time, sum of stage seconds) from the run's manifests."""
    starts, seconds = [], 0.0
    for manifest in run_dir.glob("*/manifest.json"):
        timings = json.loads(manifest.read_text())["timings"]
        starts.append(timings["started"])
        seconds += timings["seconds"]
    if not starts:
        raise RuntimeError(f"{run_dir}: no finished stage")
    return min(starts), seconds


def run_local(spec: Path, run_dir: Path, overrides: list[str], mirror: str | None) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "LMPIPE_ADDRESS")}
    if mirror:
        env["LMPIPE_DATA_MIRROR"] = mirror
    cmd = [str(Path(sys.executable).parent / "lmpipe"), "run", str(spec), "--run-dir", str(run_dir), "--num-cpus", "2"]
    for item in overrides:
        cmd += ["--set", item]
    t0 = time.time()
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    end = time.time()
    if out.returncode != 0:
        raise RuntimeError(f"local run failed:\n{out.stderr[-3000:]}")
    first, stages = stage_times(run_dir)
    return {"to_running": float("nan"), "to_first_stage": first - t0, "stages": stages, "end_to_end": end - t0}


def run_cluster(cluster: Any, spec: Path, run_dir: Path, overrides: list[str], mirror: str | None) -> dict[str, float]:
    from lmpipe.cluster.jobs import jobs_client, log_tail
    from lmpipe.cluster.submit import plan_job, submit

    t0 = time.time()
    client = jobs_client(cluster.dashboard_url, env=cluster.client_env())
    env_vars = [f"LMPIPE_DATA_MIRROR={mirror}"] if mirror else []
    plan = plan_job(spec, run_dir=str(run_dir), overrides=overrides, env_vars=env_vars)
    job = submit(client, plan)
    running = None
    while True:
        status = client.get_job_status(job).value
        if status == "RUNNING" and running is None:
            running = time.time()
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            end = time.time()
            break
        time.sleep(0.1)
    if status != "SUCCEEDED":
        raise RuntimeError(f"job {job} {status}:\n{log_tail(client, job)}")
    first, stages = stage_times(run_dir)
    return {"to_running": (running or end) - t0, "to_first_stage": first - t0, "stages": stages, "end_to_end": end - t0}


def fmt(values: list[float]) -> str:
    values = [v for v in values if v == v]  # drop NaN
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--specs", nargs="*", default=["tiny", "ptb"], choices=sorted(SPECS))
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="spec override for every run")
    p.add_argument("--mirror", default=os.environ.get("LMPIPE_DATA_MIRROR"))
    p.add_argument("--results", type=Path, default=BENCH / "RESULTS.md")
    p.add_argument("--no-append", action="store_true", help="print the section, do not append it")
    args = p.parse_args(argv)
    if "ptb" in args.specs and not args.mirror:
        raise SystemExit("the ptb spec needs the dataset mirror: set LMPIPE_DATA_MIRROR (e.g. ../shared/data)")

    from lmpipe.cluster.loopback import LoopbackCluster

    work = Path(tempfile.mkdtemp(prefix="lmpipe-bench-cluster-"))
    load_before = os.getloadavg()
    started = time.perf_counter()
    rows: dict[tuple[str, str], list[dict[str, float]]] = {}
    cluster = LoopbackCluster(Path(tempfile.mkdtemp(prefix="lmp-", dir="/tmp")))
    try:
        t = time.perf_counter()
        cluster.start()
        cluster_start = time.perf_counter() - t
        print(f"loopback cluster up in {cluster_start:.1f} s ({cluster.dashboard_url})", flush=True)
        for name in args.specs:
            for i in range(args.repeats):  # alternate, so drifting load hits both modes alike
                for mode in ("local", "cluster"):
                    run_dir = work / f"{name}-{mode}-{i}"
                    if mode == "local":
                        result = run_local(SPECS[name], run_dir, [*STAGES, *args.set], args.mirror)
                    else:
                        result = run_cluster(cluster, SPECS[name], run_dir, [*STAGES, *args.set], args.mirror)
                    rows.setdefault((name, mode), []).append(result)
                    print(name, mode, i, {k: round(v, 2) for k, v in result.items()}, flush=True)
                    shutil.rmtree(run_dir, ignore_errors=True)
    finally:
        cluster.stop()
        cluster.remove()
        shutil.rmtree(work, ignore_errors=True)
    total_s = time.perf_counter() - started
    load_after = os.getloadavg()

    table = []
    for (name, mode), results in rows.items():
        col = {k: [r[k] for r in results] for k in results[0]}
        overhead = [e - s for e, s in zip(col["end_to_end"], col["stages"], strict=True)]
        table.append(
            f"| {name} | {mode} | {fmt(col['to_running'])} | {fmt(col['to_first_stage'])} | {fmt(col['stages'])} | "
            f"{fmt(col['end_to_end'])} | {fmt(overhead)} |"
        )
    command = ".venv/bin/python bench/cluster_overhead.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.mirror:
        command = f"LMPIPE_DATA_MIRROR={args.mirror} " + command
    section = [
        "",
        f"## Cluster overhead: local `lmpipe run` vs `lmpipe submit` to a two-node loopback cluster ({datetime.date.today().isoformat()})",
        "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {machine()}; {versions()}.  ",
        "Local: `lmpipe run --num-cpus 2` (embedded Ray started by the run).  Cluster: `ray start` head (1 CPU, "
        "Job API, token auth) + second node (1 CPU) on this machine; the job ships the checkout as its "
        f"working_dir; cluster start-up {cluster_start:.1f} s, paid once.  {args.repeats} run(s) per row, "
        "median (min–max), seconds.  ",
        f"Load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after on {os.cpu_count()} cores; "
        f"the whole benchmark took {total_s / 60:.1f} min.",
        "",
        "| spec | mode | to RUNNING | to 1st stage | stages | end-to-end | overhead |",
        "|---|---|---|---|---|---|---|",
        *table,
        "",
    ]
    text = "\n".join(section)
    print(text)
    if not args.no_append:
        with open(args.results, "a", encoding="utf-8") as out:
            out.write(text)
        print(f"appended to {args.results}")


if __name__ == "__main__":
    main()
