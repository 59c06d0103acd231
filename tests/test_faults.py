"""Fault injection on a real local Ray: workers and the driver killed at points a seeded schedule picks
(``pipelines.core.faults``), and the finished outputs compared byte for byte with a clean run.

One clean run of tokenize -> ngram -> cooccur on the tiny corpus is the reference.  Then:
- one run where, at every point, one worker exits (``os._exit``, as SIGKILL or the OOM killer would) at a
  call number drawn from ``random.Random(SEED)``: Ray reruns the task (or restarts the tokenize actor) and
  every output file must be the reference's, with every line accounted for;
- the driver killed (a subprocess exiting) right after tokenize commits and again in the middle of the ARPA
  write: the reruns resume (tokenize skipped) and end byte-identical;
- the same corpus copied under another folder: identical shards (document ids do not depend on the path).
The sgns stage's kill-and-resume is tests/test_sgns_stage.py::test_killed_run_resumes_to_the_uninterrupted_vectors.
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

from lmpipe.pipelines.core.faults import ENV, EXIT_STATUS
from lmpipe.pipelines.run import run_pipeline
from lmpipe.pipelines.spec import load_spec

from .conftest import SPECS

pytestmark = pytest.mark.usefixtures("ray_local")

SEED = 18
STAGES = ["tokenize", "ngram", "cooccur"]
#: fault point -> how many calls a tiny run makes at least (the schedule draws the failing call below it)
POINTS = {
    "tokenize.prepare": 2,
    "tokenize.finalize": 2,
    "ngram.count": 2,
    "ngram.merge": 2,
    "ngram.adjust": 2,
    "cooccur.count": 1,
    "cooccur.merge": 2,
}


def _outputs(run_dir: Path) -> dict[str, bytes]:
    """Every output file of the stages (manifests, which hold timings and placements, compared apart)."""
    out = {}
    for stage in STAGES:
        for path in sorted((run_dir / stage).rglob("*")):
            if path.is_file() and path.name not in ("manifest.json", "lmplz.log"):
                out[str(path.relative_to(run_dir))] = path.read_bytes()
    return out


def _lines(run_dir: Path) -> dict:
    return json.loads((run_dir / "tokenize" / "manifest.json").read_text())["lines"]


def _spec():
    return load_spec(SPECS / "tiny.yaml", overrides=["cooccur.workers=2", "ngram.executor=ray"])


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("clean")
    run_pipeline(_spec(), run_dir=run_dir, stages=STAGES)
    return run_dir


def _schedule(folder: Path, points: dict[str, int]) -> dict[str, int]:
    rng = random.Random(SEED)
    chosen = {point: rng.randrange(calls) for point, calls in points.items()}
    for point, at in chosen.items():
        (folder / f"{point}.at").write_text(f"{at}\n")
    return chosen


def _clear(folder: Path) -> None:
    for path in folder.iterdir():
        path.unlink()


def test_worker_kills_at_seeded_points_leave_the_outputs_byte_identical(clean, tmp_path):
    folder = Path(os.environ[ENV])
    chosen = _schedule(folder, POINTS)
    try:
        run_pipeline(_spec(), run_dir=tmp_path, stages=STAGES)
        fired = {p: (folder / f"{p}.{at}").exists() and (folder / f"{p}.{at + 1}").exists() for p, at in chosen.items()}
    finally:
        _clear(folder)
    assert all(fired.values()), fired  # each point killed one worker, and a retry ran past it
    assert _outputs(tmp_path) == _outputs(clean)
    lines = _lines(tmp_path)
    assert lines == _lines(clean) and lines["lines_read"] == lines["lines_kept"] == 760  # no line lost


def _driver(run_dir: Path, faults: Path, point: str) -> subprocess.CompletedProcess:
    """``lmpipe run`` in its own process, which the schedule ends at ``point`` (a driver-side point); it
    joins the session's Ray instance, whose workers see the session's (empty) schedule."""
    import ray

    (faults / f"{point}.at").write_text("0\n")
    address = ray.get_runtime_context().gcs_address
    code = (
        "import sys; from pathlib import Path; from lmpipe.pipelines.run import run_pipeline;"
        "from lmpipe.pipelines.spec import load_spec;"
        f"run_pipeline(load_spec(Path({str(SPECS / 'tiny.yaml')!r}), overrides=['cooccur.workers=2', 'ngram.executor=ray']),"
        f" run_dir=Path({str(run_dir)!r}), stages={STAGES!r}, address={address!r})"
    )
    env = dict(os.environ, **{ENV: str(faults)})
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_driver_killed_at_a_stage_boundary_and_mid_arpa_resumes_to_the_same_bytes(clean, tmp_path):
    faults = tmp_path / "faults"
    faults.mkdir()
    run_dir = tmp_path / "run"
    done = _driver(run_dir, faults, "run.tokenize.committed")
    assert done.returncode == EXIT_STATUS, done.stderr[-2000:]
    assert (run_dir / "tokenize" / "manifest.json").exists() and not (run_dir / "ngram").exists()
    done = _driver(run_dir, faults, "ngram.arpa")
    assert done.returncode == EXIT_STATUS, done.stderr[-2000:]
    assert not (run_dir / "ngram").exists() and list(run_dir.glob(".ngram.tmp-*"))  # a half-made stage left
    manifests = run_pipeline(_spec(), run_dir=run_dir, stages=STAGES)
    assert manifests["tokenize"]["skipped"] and not manifests["ngram"]["skipped"]
    assert not list(run_dir.glob(".*.tmp-*"))
    assert _outputs(run_dir) == _outputs(clean)


def test_the_same_corpus_under_another_folder_gives_the_same_bytes(clean, tmp_path):
    """Shards and a document-hash ``corpus.split`` are identical wherever the corpus lies."""
    for where in ("a", "elsewhere/b"):
        shutil.copytree(SPECS / "tiny", tmp_path / where / "tiny")
    split = ["corpus.valid=[]", "corpus.test=[]", "corpus.documents=line", "corpus.split={valid: 0.2, test: 0.2, unit: document}"]
    outputs = []
    for where in ("a", "elsewhere/b"):
        root = tmp_path / where / "tiny"
        spec = load_spec(
            SPECS / "tiny.yaml",
            overrides=[f"corpus.train=[{root}/train.txt, {root}/valid.txt, {root}/test.txt]", *split],
        )
        run_pipeline(spec, run_dir=tmp_path / f"run-{where.replace('/', '-')}", stages=["tokenize"])
        outputs.append({k: v for k, v in _outputs(tmp_path / f"run-{where.replace('/', '-')}").items() if k.startswith("tokenize/")})
    assert outputs[0] == outputs[1] and any(k.startswith("tokenize/valid/") for k in outputs[0])
