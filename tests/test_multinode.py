"""A real two-node Ray cluster on loopback: ``lmpipe submit`` runs tiny.yaml as a Ray job across both nodes.

The cluster (``cluster.loopback``) has its own ports, temp dir (/tmp/lmp-XXXX: Unix socket paths must stay
short) and token; every ``lmpipe`` here is a subprocess given that environment, so this process's
environment and the session's local Ray (``ray_local``) are untouched.  Teardown stops only the processes
the cluster started, also when a test fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from lmpipe.cluster.jobs import jobs_client, log_tail, wait_for_job
from lmpipe.cluster.loopback import LoopbackCluster
from lmpipe.cluster.submit import EXCLUDES, plan_job, submit
from lmpipe.pipelines.submission import shipped_spec

from .conftest import REPO, SPECS

LMPIPE = str(Path(sys.executable).parent / "lmpipe")
pytestmark = pytest.mark.multinode


@pytest.fixture(scope="module")
def cluster():
    root = Path(tempfile.mkdtemp(prefix="lmp-", dir="/tmp"))
    # the virtualenv off the nodes' PATH: a head started without activating it (issue 18.10); lmpipe's own
    # subprocesses here run by absolute path, so only the job's entrypoint is affected
    loopback = LoopbackCluster(
        root, head_cpus=1, worker_cpus=1, worker_resources={"second_node": 1.0}, bin_dir_on_path=False
    )
    try:
        loopback.start()
        yield loopback
    finally:
        loopback.stop()
        loopback.remove()


def lmpipe(cluster: LoopbackCluster, *args: str, env: dict[str, str] | None = None, timeout: float = 120):
    return subprocess.run(
        [LMPIPE, *args], cwd=REPO, env=env or cluster.client_env(), capture_output=True, text=True, timeout=timeout
    )


def test_submit_tiny_runs_on_both_nodes(cluster, tmp_path):
    """tokenize is pinned to the second node by its custom resource; ngram's driver-side tasks start on the head."""
    nodes = {n["node_id"]: n for n in cluster.nodes()}
    (second,) = [i for i, n in nodes.items() if "second_node" in n.get("resources_total", {})]
    (head,) = [i for i, n in nodes.items() if n.get("is_head_node")]
    run = tmp_path / "run"
    out = lmpipe(
        cluster, "submit", str(SPECS / "tiny.yaml"), "--address", cluster.dashboard_url, "--run-dir", str(run), "--wait",
        "--set", "tokenize.workers=1", "--set", "tokenize.resources=[CPU=1, second_node=1]",
        "--set", "ngram.build_binary=false",
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCEEDED" in out.stdout and "run directory:" in out.stdout

    tokenize = json.loads((run / "tokenize" / "manifest.json").read_text())
    ngram = json.loads((run / "ngram" / "manifest.json").read_text())
    assert tokenize["outputs"]["splits"]["train"]["sentences"] == 600
    assert (run / "ngram" / "model.arpa").stat().st_size > 0
    assert ngram["perplexity"]["test"]["tokens"] > 0
    assert {w["node_id"] for w in tokenize["workers"]} == {second}
    assert sum(w["chunks"] for w in tokenize["workers"]) == sum(s["shards"] for s in tokenize["outputs"]["splits"].values())
    ngram_nodes = {w["node_id"] for w in ngram["workers"]}
    assert head in ngram_nodes and ngram_nodes <= set(nodes)
    assert "resources" not in tokenize["settings"]["tokenize"]  # where work runs is not in the fingerprint


def test_failed_job_exits_nonzero_with_the_log_tail(cluster, tmp_path):
    out = lmpipe(
        cluster, "submit", str(SPECS / "tiny.yaml"), "--run-dir", str(tmp_path / "run"), "--wait",
        "--set", f"corpus.train={tmp_path}/missing.txt",
    )  # fmt: skip
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAILED" in out.stderr and "last 40 lines of its log" in out.stderr
    assert "missing.txt: no such file or directory" in out.stderr


def test_jobs_list_status_logs(cluster):
    listing = lmpipe(cluster, "jobs", "list")
    assert listing.returncode == 0, listing.stderr
    jobs = [line.split() for line in listing.stdout.splitlines()[1:]]
    assert {row[1] for row in jobs} == {"SUCCEEDED", "FAILED"}
    succeeded = next(row[0] for row in jobs if row[1] == "SUCCEEDED")
    status = lmpipe(cluster, "jobs", "status", succeeded)
    assert status.returncode == 0 and f"{succeeded}: SUCCEEDED" in status.stdout
    assert "lmpipe_spec: tiny" in status.stdout
    logs = lmpipe(cluster, "jobs", "logs", succeeded, "--tail", "5")
    assert logs.returncode == 0 and "ngram:" in logs.stdout and len(logs.stdout.splitlines()) == 5
    followed = lmpipe(cluster, "jobs", "logs", succeeded, "--follow")  # a finished job: the whole log, then exit
    assert followed.returncode == 0 and "=== 1/3 Counting n-grams" in followed.stdout
    missing = lmpipe(cluster, "jobs", "status", "lmpipe-no-such-job")
    assert missing.returncode == 2 and "no job 'lmpipe-no-such-job'" in missing.stderr


def test_the_submitted_copy_runs_not_the_installed_one(cluster, tmp_path):
    """Submit from a copy of the checkout whose ``lmpipe/__init__.py`` records every process that imports it:
    the job's driver and its worker on the second node must run that copy (shipped as py_modules), not the
    editable install this test process and the cluster's nodes resolve ``lmpipe`` to."""
    copy = tmp_path / "checkout"
    shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(*EXCLUDES))
    marks = tmp_path / "marks.txt"
    with (copy / "pipelines" / "api" / "__init__.py").open("a", encoding="utf-8") as f:
        f.write(
            "\nimport os as _os\n"
            f"with open({str(marks)!r}, 'a', encoding='utf-8') as _f:\n"
            "    _f.write(f'{_os.getpid()} {__file__}\\n')\n"
        )
    run = tmp_path / "run"
    spec = shipped_spec(
        copy / "pipelines" / "specs" / "tiny.yaml", overrides=["tokenize.workers=1", "tokenize.resources=[CPU=1, second_node=1]"]
    )
    plan = plan_job(spec, version="marked", run_dir=str(run), stages="tokenize", root=copy, workdir=tmp_path)
    client = jobs_client(cluster.dashboard_url, env=cluster.client_env())
    job = submit(client, plan)
    status = wait_for_job(client, job, timeout=240)
    assert status == "SUCCEEDED", log_tail(client, job, lines=40)
    assert json.loads((run / "tokenize" / "manifest.json").read_text())["outputs"]["splits"]["train"]["sentences"] == 600
    rows = [line.split(" ", 1) for line in marks.read_text(encoding="utf-8").splitlines()]
    pids = {int(pid) for pid, _ in rows}
    assert len(pids) >= 2, f"the driver and the tokenize worker both import the marked copy: {rows}"
    for _, path in rows:
        assert Path(path).name == "__init__.py" and Path(path).parent.name == "lmpipe", path
        assert not Path(path).is_relative_to(REPO) and not Path(path).is_relative_to(copy), "Ray's unpacked copy"
    assert not plan.staged.exists()  # removed once submitted


def test_the_cluster_requires_its_token(cluster, tmp_path):
    env = {k: v for k, v in cluster.client_env().items() if not k.startswith("RAY_AUTH")}
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token to fall back on
    out = lmpipe(cluster, "jobs", "list", env=env)
    assert out.returncode == 2
    assert cluster.dashboard_url in out.stderr and "RAY_AUTH_TOKEN" in out.stderr


def test_stop_leaves_no_process_of_the_cluster(cluster):
    assert cluster.leftovers(), "the cluster's processes name its root on their command lines"
    pids = [p.pid for p in cluster._procs]
    started = time.monotonic()
    cluster.stop()
    assert time.monotonic() - started < 30
    assert cluster.leftovers() == []
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert os.environ.get("RAY_AUTH_TOKEN") != cluster.token  # never leaked into this process
