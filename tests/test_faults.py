"""Fault injection on a real local Ray: workers and the driver killed at points a seeded schedule picks
(``pipelines.core.faults``), and the finished outputs compared byte for byte with a clean run.

One clean run of tokenize -> ngram -> sgns (2 Ray Train workers) -> cooccur on the tiny corpus, its three
files split by document hash, is the reference (a module fixture).  Then one faulted run, driven by
``lmpipe run`` processes that the schedule ends (and once by this process, whose sgns stage fails):

- at every worker point one worker exits (``os._exit``, as SIGKILL or the OOM killer would) at a call
  number drawn from ``random.Random(SEED)``: Ray reruns the task (or restarts the tokenize actor); an sgns
  worker killed in the middle of epoch 2 (between two merges) fails its Ray Train run, and the rerun
  resumes from the epoch-1 checkpoint;
- the driver is killed at every stage boundary (right after each stage commits) and in the middle of the
  ARPA write; each rerun resumes (committed stages skipped, their files untouched);
- at the end every output file is the reference's, with every line accounted for.

And the same corpus copied under another folder tokenizes to the reference's bytes (document ids do not
depend on the path).  The faults and their outcome are the table in bench/RESULTS.md.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lmpipe.cluster.training import WorkerLostError
from lmpipe.pipelines.core.faults import ENV, EXIT_STATUS
from lmpipe.pipelines.run import run_pipeline
from lmpipe.pipelines.spec import load_spec

from .conftest import SPECS

pytestmark = pytest.mark.usefixtures("ray_local")

SEED = 18
STAGES = ["tokenize", "ngram", "sgns", "cooccur"]  # the order they run in (``run.STAGE_ORDER``)
#: worker fault point -> the range of the call that fails (a tiny run makes at least ``stop`` calls)
POINTS = {
    "tokenize.prepare": (0, 2),
    "tokenize.finalize": (0, 2),
    "ngram.count": (0, 2),
    "ngram.merge": (0, 2),
    "ngram.adjust": (0, 2),
    "cooccur.count": (0, 1),
    "cooccur.merge": (0, 2),
    "sgns.mid_epoch": (2, 4),  # one call per rank and epoch (syncs_per_epoch 2): calls 2 and 3 are epoch 2
}
#: the tiny corpus's three files as one, split by document (= line) hash: the split depends on the ids
SPLIT = ["corpus.valid=[]", "corpus.test=[]", "corpus.documents=line", "corpus.split={valid: 0.2, test: 0.2, unit: document}"]
SETTINGS = ["cooccur.workers=2", "ngram.executor=ray", "sgns.workers=2", "sgns.evaluate=false"]  # no evaluation: not a fault


def _overrides(corpus: Path) -> list[str]:
    files = ", ".join(str(corpus / f"{split}.txt") for split in ("train", "valid", "test"))
    return [f"corpus.train=[{files}]", *SPLIT, *SETTINGS]


def _spec(corpus: Path = SPECS / "tiny"):
    return load_spec(SPECS / "tiny.yaml", overrides=_overrides(corpus))


def _outputs(run_dir: Path, stages: list[str] = STAGES) -> dict[str, bytes]:
    """Every output file of the stages (manifests, which hold timings and placements, compared apart)."""
    out = {}
    for stage in stages:
        for path in sorted((run_dir / stage).rglob("*")):
            if path.is_file() and path.name not in ("manifest.json", "lmplz.log"):
                out[str(path.relative_to(run_dir))] = path.read_bytes()
    return out


def _manifests(run_dir: Path, stages: list[str]) -> dict[str, bytes]:
    return {stage: (run_dir / stage / "manifest.json").read_bytes() for stage in stages}


def _lines(run_dir: Path) -> dict:
    return json.loads((run_dir / "tokenize" / "manifest.json").read_text())["lines"]


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("clean")
    run_pipeline(_spec(), run_dir=run_dir, stages=STAGES)
    return run_dir


def _schedule(folder: Path) -> dict[str, int]:
    rng = random.Random(SEED)
    chosen = {point: rng.randrange(*calls) for point, calls in POINTS.items()}
    for point, at in chosen.items():
        (folder / f"{point}.at").write_text(f"{at}\n")
    return chosen


def _driver(run_dir: Path, faults: Path, point: str, stages: list[str]) -> subprocess.CompletedProcess:
    """``lmpipe run`` of ``stages`` in its own process, which the schedule ends at ``point`` (a driver-side
    point, in its own folder ``faults``); it joins the session's Ray, whose workers see the session's
    schedule (the worker points)."""
    import ray

    for old in faults.iterdir():
        old.unlink()
    (faults / f"{point}.at").write_text("0\n")
    address = ray.get_runtime_context().gcs_address
    code = (
        "from pathlib import Path; from lmpipe.pipelines.run import run_pipeline;"
        "from lmpipe.pipelines.spec import load_spec;"
        f"run_pipeline(load_spec(Path({str(SPECS / 'tiny.yaml')!r}), overrides={_overrides(SPECS / 'tiny')!r}),"
        f" run_dir=Path({str(run_dir)!r}), stages={stages!r}, address={address!r})"
    )
    env = dict(os.environ, **{ENV: str(faults)})
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)


def test_worker_and_driver_kills_at_every_point_end_byte_identical(clean, tmp_path):
    workers = Path(os.environ[ENV])  # the session Ray's workers read this folder
    chosen = _schedule(workers)
    faults = tmp_path / "faults"
    faults.mkdir()
    run_dir = tmp_path / "run"
    steps = [  # (driver point, the stages committed afterwards); None: this process runs, sgns fails
        ("run.tokenize.committed", ["tokenize"]),
        ("ngram.arpa", ["tokenize"]),  # mid-write: a half-made .ngram.tmp-* is left
        ("run.ngram.committed", ["tokenize", "ngram"]),
        (None, ["tokenize", "ngram"]),  # an sgns worker killed mid-epoch 2 fails the Ray Train run
        ("run.sgns.committed", ["tokenize", "ngram", "sgns"]),  # sgns resumed from its epoch-1 checkpoint
        ("run.cooccur.committed", STAGES),
    ]
    done_before: list[str] = []
    try:
        for point, committed in steps:
            before = _manifests(run_dir, done_before)
            if point is None:
                with pytest.raises(WorkerLostError, match=r"sgns-\w+-\w+: Ray Train worker rank [01] of 2 died .*rerun"):
                    run_pipeline(_spec(), run_dir=run_dir, stages=STAGES)  # before: a gloo "Connection reset"
                assert not (run_dir / "sgns").exists()
                assert len(list(run_dir.glob(".checkpoints/sgns-*/epoch-001/meta.json"))) == 1
            else:
                done = _driver(run_dir, faults, point, STAGES)
                assert done.returncode == EXIT_STATUS, (point, done.stderr[-3000:])
            assert _manifests(run_dir, done_before) == before, f"{point}: a committed stage ran again"
            assert _outputs(run_dir, committed) == _outputs(clean, committed), point
            if point == "ngram.arpa":
                assert not (run_dir / "ngram").exists() and list(run_dir.glob(".ngram.tmp-*"))
            done_before = committed
        fired = {p: (workers / f"{p}.{at}").exists() and (workers / f"{p}.{at + 1}").exists() for p, at in chosen.items()}
    finally:
        for path in workers.iterdir():
            path.unlink()
    assert all(fired.values()), fired  # each point killed one worker, and a retry (or the rerun) ran past it
    manifests = run_pipeline(_spec(), run_dir=run_dir, stages=STAGES)
    assert all(m["skipped"] for m in manifests.values())
    assert manifests["sgns"]["training"]["resumed_after_epoch"] == 1
    assert not list(run_dir.glob(".*.tmp-*")) and not (run_dir / ".checkpoints").exists()
    assert _outputs(run_dir) == _outputs(clean)
    lines = _lines(run_dir)
    assert lines == _lines(clean) and lines["lines_read"] == lines["lines_kept"] == 760  # no line lost


def test_the_same_corpus_under_another_folder_gives_the_same_bytes(clean, tmp_path):
    """Shards and the document-hash split are the reference's wherever the corpus lies."""
    moved = tmp_path / "elsewhere" / "deeper" / "tiny"
    shutil.copytree(SPECS / "tiny", moved)
    run_pipeline(_spec(moved), run_dir=tmp_path / "run", stages=["tokenize"])
    outputs = _outputs(tmp_path / "run", ["tokenize"])
    assert outputs == _outputs(clean, ["tokenize"]) and any(k.startswith("tokenize/valid/") for k in outputs)
