"""Every ``lmpipe`` subcommand run once for real on one tiny run, not only ``--help``.

The commands are listed from the argparse parser itself, so a new subcommand without a case here fails
:func:`test_every_subcommand_has_a_case`.  One module-scoped run directory (``lmpipe run tiny.yaml`` with
the tokenize, ngram, sgns and lm stages) serves them all; each case checks the exit status and one fact of
the output against an independent reference (the manifests, the exported vectors, the vocabulary).
``submit`` and ``jobs`` talk to :class:`LocalJobs`, a stand-in for Ray's Job API that runs each job's
entrypoint at once as Ray would (one shell command in its ``working_dir``, ``py_modules`` first on ``PYTHONPATH``,
this virtualenv off ``PATH`` as on a head started without activating it, joined to
the session's Ray); the real two-node submission is tests/test_multinode.py.
"""

from __future__ import annotations

import argparse
import enum
import io
import json
import os
import random
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from lmpipe.cluster.submit import DRIVER
from lmpipe.pipelines.cli import build_parser, main

from .conftest import SPECS


@dataclass
class Result:
    code: int
    out: str
    err: str


def lmpipe(*argv: object) -> Result:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([str(a) for a in argv])
    return Result(code, out.getvalue(), err.getvalue())


def leaf_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every runnable command of the parser: ``("run",)``, ``("data", "fetch")``, ..."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [prefix]
    return [leaf for name, sub in subs[0].choices.items() for leaf in leaf_commands(sub, (*prefix, name))]


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def tiny(ray_local, tmp_path_factory) -> tuple[Path, Result]:
    run = tmp_path_factory.mktemp("matrix") / "tiny"
    result = lmpipe("run", SPECS / "tiny.yaml", "--run-dir", run, "--stages", "tokenize,ngram,sgns,lm")
    assert result.code == 0, result.err
    return run, result


def manifest(run: Path, stage: str) -> dict[str, Any]:
    return json.loads((run / stage / "manifest.json").read_text(encoding="utf-8"))


class Status(enum.Enum):
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


@dataclass
class Job:
    submission_id: str
    entrypoint: str
    metadata: dict[str, str]
    status: Status
    logs: str
    start_time: int
    message: str = ""
    job_id: str | None = None


@dataclass
class LocalJobs:
    """The part of ``JobSubmissionClient`` lmpipe uses; ``submit_job`` runs the job to its end here."""

    ray_address: str
    lmpipe_address: str = "http://local-jobs:8265"
    jobs: dict[str, Job] = field(default_factory=dict)

    def submit_job(self, *, entrypoint: str, runtime_env: dict, submission_id: str, metadata: dict) -> str:
        modules = [str(Path(p).parent) for p in runtime_env.get("py_modules", [])]
        venv = str(Path(sys.executable).parent)  # a head started from a virtualenv that is not activated:
        path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv)  # not on PATH
        env = {
            **os.environ, **runtime_env.get("env_vars", {}), "RAY_ADDRESS": self.ray_address,
            "PYTHONPATH": os.pathsep.join(modules), "PATH": path,
        }  # fmt: skip
        done = subprocess.run(  # noqa: S602 - as Ray's JobSupervisor runs it: one shell command
            entrypoint, shell=True, cwd=runtime_env["working_dir"], env=env, capture_output=True, text=True, timeout=300
        )
        status = Status.SUCCEEDED if done.returncode == 0 else Status.FAILED
        self.jobs[submission_id] = Job(
            submission_id, entrypoint, metadata, status, done.stdout + done.stderr, int(time.time() * 1000)
        )
        return submission_id

    def _job(self, job_id: str) -> Job:
        if job_id not in self.jobs:
            raise RuntimeError(f"Request failed with status code 404: Job {job_id} does not exist.")
        return self.jobs[job_id]

    def list_jobs(self) -> list[Job]:
        return list(self.jobs.values())

    def get_job_info(self, job_id: str) -> Job:
        return self._job(job_id)

    def get_job_status(self, job_id: str) -> Status:
        return self._job(job_id).status

    def get_job_logs(self, job_id: str) -> str:
        return self._job(job_id).logs

    def stop_job(self, job_id: str) -> bool:
        self._job(job_id)
        return False  # every job here has finished

    async def tail_job_logs(self, job_id: str):
        yield self._job(job_id).logs


@pytest.fixture(scope="module")
def jobs(ray_local, tmp_path_factory):
    """One ``lmpipe submit --wait`` of tiny.yaml (tokenize) to :class:`LocalJobs`: the client and the result."""
    import ray

    import lmpipe.cluster.jobs as jobs_module

    client = LocalJobs(ray.get_runtime_context().gcs_address)
    run = tmp_path_factory.mktemp("job") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(jobs_module, "jobs_client", lambda address=None, env=os.environ: client)
        result = lmpipe("submit", SPECS / "tiny.yaml", "--run-dir", run, "--stages", "tokenize", "--wait", "--tail", "5")
        yield client, run, result


@pytest.fixture(scope="module")
def conll(tmp_path_factory) -> dict[str, str]:
    """A few CoNLL-2003 sentences where capitalised words are names (I-PER), for the tagger's tune."""
    rng = random.Random(0)
    root = tmp_path_factory.mktemp("conll")
    words, names = ["the", "cat", "saw", "a", "city"], ["Ann", "Bob", "Eve"]
    out = {}
    for split, n in (("train", 40), ("valid", 10)):
        lines = ["-DOCSTART- -X- O O", ""]
        for _ in range(n):
            for _ in range(rng.randint(3, 6)):
                name = rng.random() < 0.3
                lines.append(f"{rng.choice(names)} NNP I-NP I-PER" if name else f"{rng.choice(words)} NN I-NP O")
            lines.append("")
        (root / f"{split}.conll").write_text("\n".join(lines), encoding="utf-8")
        out[split] = str(root / f"{split}.conll")
    return out


# ------------------------------------------------------------------------------------------ the cases
def case_run(tiny, **_):
    run, result = tiny
    assert f"run directory: {run.resolve()}" in result.out
    for stage in ("tokenize", "ngram", "sgns", "lm"):
        assert f"  {stage}: " in result.out and (run / stage / "manifest.json").is_file()
    again = lmpipe("run", SPECS / "tiny.yaml", "--run-dir", run, "--stages", "tokenize,ngram")
    assert again.code == 0 and "tokenize: skipped (up to date)" in again.out and "ngram: skipped (up to date)" in again.out


def case_validate(**_):
    result = lmpipe("validate", SPECS / "tiny.yaml", "--set", "ngram.order=4")
    assert result.code == 0 and yaml.safe_load(result.out)["ngram"]["order"] == 4
    assert str(SPECS / "tiny" / "train.txt") in yaml.safe_load(result.out)["corpus"]["train"]


def case_data_list(**_):
    result = lmpipe("data", "list")
    assert result.code == 0 and "ptb" in result.out and "conll2003" in result.out


def case_data_fetch(mirror, tmp_path, **_):
    result = lmpipe("data", "fetch", "ptb", "--mirror", mirror, "--dest", tmp_path)
    assert result.code == 0 and Path(result.out.strip()) == tmp_path / "ptb"
    assert (tmp_path / "ptb" / "ptb.valid.txt").read_bytes() == (mirror / "ptb" / "ptb.valid.txt").read_bytes()


def case_eval(tiny, **_):
    run, _ = tiny
    result = lmpipe("eval", run, "--split", "test")
    assert result.code == 0
    expected = manifest(run, "ngram")["perplexity"]["test"]["perplexity"]
    assert result.out.startswith(f"test: perplexity {expected:.2f} including OOVs")


def case_score(tiny, tmp_path, **_):
    run, _ = tiny
    test = SPECS / "tiny" / "test.txt"
    out = tmp_path / "scores.jsonl"
    result = lmpipe("score", run, "--model", "kn3", "--input", test, "--out", out)
    assert result.code == 0, result.err
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(records) == len(test.read_text(encoding="utf-8").splitlines())
    expected = manifest(run, "ngram")["perplexity"]["test"]["perplexity"]
    assert f"kn3: perplexity {expected:.2f} including OOVs" in result.out + result.err


def case_generate(tiny, **_):
    run, _ = tiny
    first = lmpipe("generate", run, "--prompt", "and the", "--max-tokens", "6", "--seed", "3")
    again = lmpipe("generate", run, "--prompt", "and the", "--max-tokens", "6", "--seed", "3")
    assert first.code == 0 and first.out == again.out  # seeded
    words = first.out.split()
    assert words[:2] == ["and", "the"] and 2 < len(words) <= 8, first.out


def case_compare(tiny, tmp_path, **_):
    run, _ = tiny
    result = lmpipe("compare", run, "--out", tmp_path / "report")
    assert result.code == 0 and "kn3" in result.out and "lstm" in result.out
    assert (tmp_path / "report" / "report.md").is_file()


def case_mix(tiny, **_):
    run, _ = tiny
    result = lmpipe("mix", run, "--models", "kn3,lstm", "--bootstrap", "0")
    assert result.code == 0, result.err
    entry = manifest(run, "mix")["mixtures"]["kn3+lstm"]
    assert sum(entry["weights"]["weights"][0]) == pytest.approx(1.0, abs=1e-5)
    assert f"kn3+lstm: test perplexity {entry['perplexity']['test']['perplexity']:.2f}" in result.out


def case_tune(conll, tmp_path, **_):
    task = {"name": "ner", "format": "conll2003", "column": "ner", "train": conll["train"], "valid": conll["valid"]}
    spec = tmp_path / "tagger.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "tune-smoke", "corpus": {"train": conll["train"]}, "stages": ["tagger"],
        "tagger": {"tasks": [task], "dim": 8, "hidden": 8, "epochs": 1, "batch_size": 8, "optimizer": "adam",
                   "tune": {"grace_period": 1, "hidden": [8]}},
    }), encoding="utf-8")  # fmt: skip
    result = lmpipe("tune", spec, "--stage", "tagger", "--samples", "1", "--run-dir", tmp_path / "run")
    assert result.code == 0, result.err
    header, trial = (line.split("\t") for line in (tmp_path / "run" / "tune-tagger" / "trials.tsv").read_text().splitlines())
    best, epoch = trial[header.index("best")], trial[header.index("best_epoch")]
    assert re.search(rf"^best \S+ {float(best):.4f} \(epoch {epoch}\) with ", result.out, re.M), result.out[-500:]


def _vocab(run: Path) -> set[str]:
    return {line.split("\t")[0] for line in (run / "sgns" / "vectors" / "vocab.tsv").read_text(encoding="utf-8").splitlines()}


def case_embeddings_export(tiny, tmp_path, **_):
    run, _ = tiny
    out = tmp_path / "v.txt"
    result = lmpipe("embeddings", "export", run, "--stage", "sgns", "--format", "word2vec-text", "--out", out)
    assert result.code == 0
    count, dim = map(int, out.read_text(encoding="utf-8").splitlines()[0].split())
    assert dim == 20 and result.out.startswith(f"{out}: {count:,} x 20 vectors")


def case_embeddings_import(tiny, tmp_path, **_):
    run, _ = tiny
    assert lmpipe("embeddings", "export", run, "--format", "word2vec-text", "--out", tmp_path / "v.txt").code == 0
    result = lmpipe("embeddings", "import", tmp_path / "v.txt", "--format", "word2vec-text", "--out", tmp_path / "imported")
    assert result.code == 0 and (tmp_path / "imported" / "meta.json").is_file()
    from lmpipe.embeddings.vectors import Vectors

    mine, back = Vectors.load(run / "sgns" / "vectors"), Vectors.load(tmp_path / "imported")
    assert len(back) == len(mine) and back.dim == mine.dim


def case_embeddings_neighbors(tiny, tmp_path, **_):
    """The top 3 by cosine, recomputed here with numpy from the exported text vectors."""
    run, _ = tiny
    out = tmp_path / "v.txt"
    assert lmpipe("embeddings", "export", run, "--format", "word2vec-text", "--out", out).code == 0
    rows = [line.split(" ") for line in out.read_text(encoding="utf-8").splitlines()[1:]]
    words = [r[0] for r in rows]
    matrix = np.array([[float(x) for x in r[1:]] for r in rows])
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    word = "god" if "god" in words else words[0]
    cos = matrix @ matrix[words.index(word)]
    cos[words.index(word)] = -np.inf
    expected = [words[i] for i in np.argsort(-cos)[:3]]
    result = lmpipe("embeddings", "neighbors", run, word, "-k", "3")
    assert result.code == 0
    assert [line.split()[2] for line in result.out.splitlines()] == expected


def case_embeddings_analogy(tiny, **_):
    """The best answer to a - b + c by 3CosAdd, recomputed here with numpy from the run's own vectors."""
    run, _ = tiny
    from lmpipe.embeddings.vectors import Vectors

    vecs = Vectors.load(run / "sgns" / "vectors")
    unit = np.asarray(vecs.matrix, np.float64) / np.linalg.norm(vecs.matrix, axis=1, keepdims=True)
    a, b, c = (vecs.index(w) for w in vecs.tokens[10:13])
    cos = unit @ (unit[b] - unit[a] + unit[c])
    cos[[a, b, c]] = -np.inf
    result = lmpipe("embeddings", "analogy", run, "--positive", vecs.tokens[b], vecs.tokens[c], "--negative", vecs.tokens[a], "-k", "1")
    assert result.code == 0 and result.out.split()[2] == vecs.tokens[int(np.argmax(cos))]


def case_submit(jobs, **_):
    client, run, result = jobs
    assert result.code == 0, result.err
    (job,) = client.jobs.values()
    assert job.status is Status.SUCCEEDED, job.logs
    assert shlex.join((*DRIVER, "pipelines/specs/tiny.yaml")) in job.entrypoint  # run with the venv off PATH
    assert f"submitted {job.submission_id}" in result.out and "run directory:" in result.out
    assert manifest(run, "tokenize")["outputs"]["splits"]["train"]["sentences"] == 600


def case_jobs_list(jobs, **_):
    client, run, _ = jobs
    result = lmpipe("jobs", "list")
    (job,) = client.jobs.values()
    assert result.code == 0 and f"{job.submission_id}" in result.out and "SUCCEEDED" in result.out and str(run) in result.out


def case_jobs_status(jobs, **_):
    client, _, _ = jobs
    (job,) = client.jobs.values()
    result = lmpipe("jobs", "status", job.submission_id)
    assert result.code == 0 and f"{job.submission_id}: SUCCEEDED" in result.out and "lmpipe_spec: tiny" in result.out
    assert lmpipe("jobs", "status", "lmpipe-no-such-job").code == 2


def case_jobs_logs(jobs, **_):
    client, _, _ = jobs
    (job,) = client.jobs.values()
    result = lmpipe("jobs", "logs", job.submission_id, "--tail", "3")
    assert result.code == 0 and result.out.splitlines() == job.logs.strip().splitlines()[-3:]


def case_jobs_stop(jobs, **_):
    client, _, _ = jobs
    (job,) = client.jobs.values()
    result = lmpipe("jobs", "stop", job.submission_id)
    assert result.code == 0 and result.out.strip() == f"{job.submission_id}: already finished (SUCCEEDED)"


def case_init(tmp_path, **_):
    out = tmp_path / "mine.yaml"
    result = lmpipe("init", SPECS / "tiny" / "train.txt", "--valid", SPECS / "tiny" / "valid.txt", "--out", out)
    assert result.code == 0 and "lmpipe validate" in result.err
    spec = lmpipe("validate", out, "--stages", "tokenize")
    assert spec.code == 0 and yaml.safe_load(spec.out)["corpus"]["valid"] == [str(SPECS / "tiny" / "valid.txt")]


def case_schema(**_):
    result = lmpipe("schema")
    schema = json.loads(result.out)
    assert result.code == 0 and schema["$defs"]["NgramSpec"]["properties"]["order"]["default"] == 5


def case_completion(**_):
    result = lmpipe("completion", "bash")
    assert result.code == 0 and "_shtab_lmpipe" in result.out and "embeddings" in result.out


CASES: dict[tuple[str, ...], Callable[..., None]] = {
    ("run",): case_run,
    ("validate",): case_validate,
    ("data", "list"): case_data_list,
    ("data", "fetch"): case_data_fetch,
    ("eval",): case_eval,
    ("score",): case_score,
    ("generate",): case_generate,
    ("compare",): case_compare,
    ("mix",): case_mix,
    ("tune",): case_tune,
    ("embeddings", "export"): case_embeddings_export,
    ("embeddings", "import"): case_embeddings_import,
    ("embeddings", "neighbors"): case_embeddings_neighbors,
    ("embeddings", "analogy"): case_embeddings_analogy,
    ("submit",): case_submit,
    ("jobs", "list"): case_jobs_list,
    ("jobs", "status"): case_jobs_status,
    ("jobs", "logs"): case_jobs_logs,
    ("jobs", "stop"): case_jobs_stop,
    ("init",): case_init,
    ("schema",): case_schema,
    ("completion",): case_completion,
}


def test_every_subcommand_has_a_case():
    assert sorted(leaf_commands(build_parser())) == sorted(CASES)


@pytest.mark.parametrize("command", list(CASES), ids=" ".join)
def test_subcommand(command, request, tmp_path):
    case = CASES[command]
    needs = case.__code__.co_varnames[: case.__code__.co_argcount]
    case(tmp_path=tmp_path, **{name: request.getfixturevalue(name) for name in needs if name != "tmp_path"})
