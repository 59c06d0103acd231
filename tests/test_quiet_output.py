"""Long runs show progress and stay quiet: progress lines inside an epoch (% done, rate, ETA), Ray's routine
chatter and KenLM's loading banner filtered, no ANSI codes in output that is not a terminal."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from lmpipe.cluster import quiet as ray_output
from lmpipe.cluster.quiet import NoiseFilter, keep_forwarded
from lmpipe.pipelines.core.progress import EpochProgress

from .conftest import SPECS

# Lines copied from a real two-worker `lmpipe run` before the filter (Ray 2.60).
CHATTER = [
    "Requesting resources: {'CPU': 1.0} * 2",
    "Attempting to start training worker group of size 2 with the following resources: [{'CPU': 1.0}] * 2",
    "Started training worker group of size 2: ",
    "- (ip=192.0.2.2, pid=27721) world_rank=0, local_rank=0, node_rank=0",
    "Setting up process group for: env:// [rank=0, world_size=2]",
    "Checkpoint successfully created at: Checkpoint(filesystem=local, path=/tmp/t1/.ray-train/x/checkpoint_1)",
    "Reporting training result 1: TrainingReport(checkpoint=None, metrics={'epoch': 1})",
    "[2026-12-02 18:35:25,662 E 27443 27556] core_worker.cc:2465: Actor with class name: 'PreemptionWatcher' "
    "and ID: '2caf' has constructor arguments in the object store and max_restarts > 0",
    "[2026-12-03 10:42:08,732 E 738 738] (gcs_server) gcs_actor_scheduler.cc:538: Failed to kill actor c19a, "
    "return status: Invalid: KillActor RPC failed for actor c19a: RpcError: RPC error: Socket closed",
]
OURS = [
    "sgns epoch 1/2: 16961 words, 907 words/s, loss 4.1130, sync 0.27 s",
    "Traceback (most recent call last):",  # a worker's own failure is never filtered
    "ValueError: sgns.alpha must be > 0",
]


def test_forwarded_worker_lines_lose_rays_chatter_and_keep_everything_else():
    kept = keep_forwarded({"lines": CHATTER + OURS, "pid": 1, "actor_name": "RayTrainWorker"})
    assert kept is not None and kept["lines"] == OURS and kept["pid"] == 1
    assert keep_forwarded({"lines": CHATTER, "pid": 2}) is None
    cleaner = {"lines": ["Exception in thread PlacementGroupCleanerMonitor:", "Traceback ..."], "actor_name": "PlacementGroupCleaner"}
    assert keep_forwarded(cleaner) is None


def test_driver_log_records_of_ray_routine_are_dropped():
    def record(message: str, level: int = logging.WARNING) -> logging.LogRecord:
        return logging.LogRecord("ray.data", level, __file__, 1, message, None, None)

    noise = NoiseFilter()
    assert not noise.filter(record("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled"))
    assert not noise.filter(record("Progress bars disabled. To enable, set `ray.data.DataContext...`"))
    assert not noise.filter(record("✔️  Dataset dataset_0357_0 execution finished in 13.40 seconds", logging.INFO))
    assert noise.filter(record("Failed to connect to GCS at 10.0.0.1:6379", logging.ERROR))


def test_workers_log_at_the_drivers_level(monkeypatch):
    """``lmpipe -q`` sets the ``lmpipe`` logger to WARNING; the workers Ray starts read it from their
    environment, so their per-epoch and progress lines are quiet too."""
    monkeypatch.delenv(ray_output.WORKER_LEVEL_ENV, raising=False)
    assert ray_output.worker_level() == logging.INFO  # no driver said otherwise
    lmpipe_logger = logging.getLogger("lmpipe")
    monkeypatch.setattr(lmpipe_logger, "level", logging.WARNING)
    ray_output.before_init()
    assert os.environ[ray_output.WORKER_LEVEL_ENV] == "WARNING" and ray_output.worker_level() == logging.WARNING
    monkeypatch.setenv(ray_output.WORKER_LEVEL_ENV, "nonsense")
    assert ray_output.worker_level() == logging.INFO


def test_progress_reports_percent_rate_and_eta_at_most_every_interval():
    now = [100.0]
    p = EpochProgress("lm medium epoch 2/39", 10_000, "tokens", every=5.0, clock=lambda: now[0])
    now[0] = 102.0
    assert p.advance(1_000) is None  # within the interval: silent
    now[0] = 110.0
    line = p.advance(1_000)  # 2,000 tokens in 10 s: 200 tokens/s, 8,000 left: 40 s
    assert line == "lm medium epoch 2/39: 20.0% (2,000/10,000 tokens), 200 tokens/s, ETA 0:00:40"
    now[0] = 111.0
    assert p.advance(10) is None
    quiet = EpochProgress("x", 10, "words", enabled=False, clock=lambda: now[0])
    assert quiet.advance(5) is None and quiet.done == 5
    counted = EpochProgress("y", 6, "words", every=0.0, clock=lambda: now[0])
    assert [len(s) for s in counted.wrap([[1, 2], [3, 4, 5, 6]], len)] == [2, 4] and counted.done == 6


def test_progress_interval_from_the_environment(monkeypatch):
    monkeypatch.setenv("LMPIPE_PROGRESS_SECONDS", "0")
    assert not EpochProgress("z", 10, "words").enabled  # 0 turns progress lines off
    monkeypatch.setenv("LMPIPE_PROGRESS_SECONDS", "2.5")
    assert EpochProgress("z", 10, "words").every == 2.5


def test_a_two_worker_run_into_a_file_shows_progress_and_no_chatter_or_colour(tmp_path):
    """A real ``lmpipe run`` (its own local Ray, Ray Train with 2 workers) and ``lmpipe eval`` on the ARPA,
    their output captured as a file would be: our epoch and progress lines are there, Ray's bookkeeping,
    ANSI codes and KenLM's banner are not."""
    lmpipe = [sys.executable, "-m", "lmpipe.pipelines.cli"]
    env = {**os.environ, "LMPIPE_PROGRESS_SECONDS": "0.000001"}
    env.pop("RAY_ADDRESS", None)
    run_dir = tmp_path / "run"
    sets = ["sgns.workers=2", "sgns.epochs=1", "ngram.binary=none", "ngram.build_binary=false"]
    command = lmpipe + ["run", str(SPECS / "tiny.yaml"), "--run-dir", str(run_dir), "--num-cpus", "2",
                        "--stages", "tokenize,ngram,sgns"]  # fmt: skip
    for item in sets:
        command += ["--set", item]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout + done.stderr
    assert "sgns epoch 1/1:" in out and "% (" in out and "words/s, ETA " in out  # progress within the epoch
    assert "\x1b[" not in out  # no colour codes into a file
    for chatter in ("Checkpoint successfully created", "Reporting training result", "Requesting resources",
                    "Token authentication is enabled", "execution finished in", "Progress bars disabled"):  # fmt: skip
        assert chatter not in out, chatter
    evaluated = subprocess.run(lmpipe + ["eval", str(run_dir), "--split", "test"], env=env, capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert "perplexity" in evaluated.stdout.lower()
    assert "Loading the LM will be faster" not in evaluated.stderr and "****" not in evaluated.stderr
