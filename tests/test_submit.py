"""``lmpipe submit`` without a cluster: address and token resolution, what the job ships, refusals.

The real submission to a two-node cluster is tests/test_multinode.py.
"""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from lmpipe.cluster.jobs import SubmitError, auth_headers, auth_token, resolve_address
from lmpipe.cluster.process import Placement, ray_options
from lmpipe.cluster.storage import StorageError, resolve_run_dir
from lmpipe.cluster.submit import (
    DRIVER,
    JOB_DIR,
    NO_PYTHON_STATUS,
    entrypoint,
    pip_requirements,
    plan_job,
    stage_working_dir,
)
from lmpipe.pipelines.cli import main
from lmpipe.pipelines.spec import SpecError, load_spec, parse_resources
from lmpipe.pipelines.submission import local_input_paths, shipped_spec

from .conftest import REPO, SPECS


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("words", [["submit"], ["jobs"], ["jobs", "list"], ["jobs", "status"], ["jobs", "logs"], ["jobs", "stop"]])
def test_help(words, capsys):
    with pytest.raises(SystemExit) as info:
        main([*words, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: lmpipe" in out and ("--address" in out or words == ["jobs"])


# ------------------------------------------------------------------------------------------ address, token
def test_address_from_flag_then_lmpipe_then_ray_env():
    env = {"RAY_ADDRESS": "http://ray-env:8265", "LMPIPE_ADDRESS": "lmp-env"}
    assert resolve_address("http://head:9000/", env) == "http://head:9000"
    assert resolve_address(None, env) == "http://lmp-env:8265"
    assert resolve_address(None, {"RAY_ADDRESS": "https://ray-env"}) == "https://ray-env:8265"
    for bad in ("ray://head:10001", "auto", "ftp://head"):
        with pytest.raises(SubmitError, match="http"):
            resolve_address(bad, {})
    with pytest.raises(SubmitError, match="--address"):
        resolve_address(None, {})


def test_token_in_rays_order(tmp_path, monkeypatch):
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    assert auth_token({"RAY_AUTH_TOKEN": "from-env", "RAY_AUTH_TOKEN_PATH": str(token_file)}) == "from-env"
    assert auth_headers({"RAY_AUTH_TOKEN_PATH": str(token_file)}) == {"Authorization": "Bearer from-file"}
    with pytest.raises(SubmitError, match="RAY_AUTH_TOKEN_PATH"):
        auth_token({"RAY_AUTH_TOKEN_PATH": str(tmp_path / "missing")})
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("default-path")
    assert auth_token({}) is None  # the default file only with RAY_AUTH_MODE=token, as Ray does
    assert auth_token({"RAY_AUTH_MODE": "token"}) == "default-path"


def test_unreachable_address_fails_within_seconds_with_exit_2(capsys):
    address = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    assert main(["submit", str(SPECS / "tiny.yaml"), "--address", address]) == 2
    assert time.monotonic() - started < 10
    err = capsys.readouterr().err
    assert address in err and "cannot reach" in err and "--dashboard-port" in err


@pytest.mark.parametrize("words", [["list"], ["status", "J"], ["logs", "J"], ["stop", "J"]])
def test_jobs_commands_report_an_unreachable_cluster(words, capsys):
    assert main(["jobs", *words, "--address", f"127.0.0.1:{closed_port()}"]) == 2
    assert "cannot reach the Ray Job API at http://127.0.0.1:" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ what travels
def package_folders() -> dict[str, Path]:
    """Every sub-package of the checkout (a folder with __init__.py) and its import name, written out here
    independently of pyproject: pipelines/api is ``lmpipe`` itself, the four folders are ``lmpipe.<folder>``."""
    out = {"lmpipe": REPO / "pipelines" / "api"}
    for top in ("pipelines", "lm", "embeddings", "cluster"):
        for init in sorted((REPO / top).rglob("__init__.py")):
            folder = init.parent
            if folder != out["lmpipe"] and "__pycache__" not in folder.parts:
                out[".".join(("lmpipe", *folder.relative_to(REPO).parts))] = folder
    return out


def test_a_spec_in_the_checkout_runs_from_the_shipped_copy(tmp_path):
    plan = plan_job(
        shipped_spec(SPECS / "tiny.yaml", overrides=["ngram.order=2"]), version="9.9.9", run_dir=str(tmp_path / "run"),
        stages="tokenize,ngram", workdir=tmp_path,
    )  # fmt: skip
    try:
        argv = list(plan.argv)
        assert argv[:4] == ["-m", "lmpipe.pipelines.cli", "run", "pipelines/specs/tiny.yaml"]
        assert argv[argv.index("--set") + 1] == "ngram.order=2"
        assert argv[argv.index("--run-dir") + 1] == str(tmp_path / "run")
        assert argv[argv.index("--stages") + 1] == "tokenize,ngram"
        staged = Path(plan.runtime_env["working_dir"])
        assert staged == plan.staged / "working_dir"
        assert (staged / "pipelines" / "specs" / "tiny" / "train.txt").read_bytes() == (SPECS / "tiny" / "train.txt").read_bytes()
        for name in (".venv", ".git", "runs"):
            assert not (staged / name).exists()
        assert not list(plan.staged.rglob("__pycache__")) and not list(plan.staged.rglob("*.pyc"))
        assert plan.metadata["lmpipe_run_dir"] == str(tmp_path / "run") and plan.metadata["lmpipe_spec"] == "tiny"
        assert plan.metadata["lmpipe_version"] == "9.9.9"
        assert "pip" not in plan.runtime_env and plan.notes == ()
    finally:
        shutil.rmtree(plan.staged)


def test_the_checkouts_code_travels_as_the_lmpipe_package(tmp_path):
    """py_modules holds one tree, ``lmpipe/``, laid out as installed: each package's files, byte for byte."""
    plan = plan_job(shipped_spec(SPECS / "tiny.yaml"), version="0", run_dir=str(tmp_path / "run"), workdir=tmp_path)
    try:
        (package,) = map(Path, plan.runtime_env["py_modules"])
        assert package == plan.staged / "lmpipe"
        assert sorted(p.name for p in plan.staged.iterdir()) == ["lmpipe", "working_dir"]
        for name, folder in package_folders().items():
            target = plan.staged.joinpath(*name.split("."))
            for source in folder.glob("*.py"):
                assert (target / source.name).read_bytes() == source.read_bytes(), f"{name}: {source.name}"
        assert (package / "__init__.py").read_bytes() == (REPO / "pipelines" / "api" / "__init__.py").read_bytes()
        assert not (package / "pipelines" / "api").exists(), "pipelines/api is lmpipe itself, not lmpipe.pipelines.api"
        assert (package / "pipelines" / "specs" / "tiny" / "train.txt").is_file()  # package data travels too
        assert (package / "cluster" / "configs" / "rayjob.yaml").is_file()
        assert DRIVER == ("-m", "lmpipe.pipelines.cli", "run") and plan.argv[:3] == DRIVER
    finally:
        shutil.rmtree(plan.staged)


def test_a_spec_from_elsewhere_is_resolved_and_shipped(tmp_path, monkeypatch):
    data = tmp_path / "corpus.txt"
    data.write_text("a b c\n")
    spec_file = tmp_path / "mine.yaml"
    spec_file.write_text(yaml.safe_dump({"name": "mine", "corpus": {"train": "corpus.txt"}, "stages": ["tokenize"]}))
    monkeypatch.chdir(tmp_path)
    plan = plan_job(
        shipped_spec(spec_file, overrides=["vocab.min_count=2"]), version="0", env_vars=["LMPIPE_DATA_MIRROR=/mnt/data"],
        workdir=tmp_path,
    )  # fmt: skip
    try:
        argv = list(plan.argv)
        assert argv[:4] == [*DRIVER, f"{JOB_DIR}/spec.yaml"] and "--set" not in argv
        assert argv[argv.index("--run-dir") + 1] == str(tmp_path / "runs" / "mine")  # absolute: the job's cwd is a copy
        shipped = load_spec(Path(plan.runtime_env["working_dir"]) / JOB_DIR / "spec.yaml")
        assert shipped.vocab.min_count == 2 and shipped.corpus.train == (str(data),)
        assert plan.runtime_env["env_vars"] == {"LMPIPE_DATA_MIRROR": "/mnt/data"}
        assert len(plan.notes) == 1 and str(data) in plan.notes[0]
    finally:
        shutil.rmtree(plan.staged)


def test_a_spec_in_an_excluded_folder_of_the_checkout_is_resolved_and_shipped(tmp_path):
    root = tmp_path / "src"
    (root / "runs").mkdir(parents=True)
    (root / "corpus.txt").write_text("a b\n")
    (root / "runs" / "s.yaml").write_text(yaml.safe_dump({"name": "s", "corpus": {"train": "../corpus.txt"}}))
    (root / "pyproject.toml").write_text('[tool.setuptools.package-dir]\n"lmpipe" = "code"\n')
    (root / "code").mkdir()
    (root / "code" / "__init__.py").write_text("MARK = 1\n")
    plan = plan_job(shipped_spec(root / "runs" / "s.yaml"), version="0", run_dir=str(tmp_path / "run"), root=root, workdir=tmp_path)
    try:
        working_dir = Path(plan.runtime_env["working_dir"])
        assert plan.argv[3] == f"{JOB_DIR}/spec.yaml"
        assert not (working_dir / "runs").exists() and (working_dir / "corpus.txt").is_file()
        assert plan.runtime_env["py_modules"] == [str(plan.staged / "lmpipe")]
        assert (plan.staged / "lmpipe" / "__init__.py").read_text() == "MARK = 1\n"  # the mapping is pyproject's
        (train,) = load_spec(working_dir / JOB_DIR / "spec.yaml").corpus.train
        assert Path(train).resolve() == root / "corpus.txt"  # resolved: an absolute local path, hence the note
        assert len(plan.notes) == 1 and plan.notes[0].startswith(f"{train}: a local path")
    finally:
        shutil.rmtree(plan.staged)


def test_without_a_checkout_only_the_spec_travels(tmp_path, monkeypatch):
    """lmpipe installed from a wheel: no code to ship (the cluster image's lmpipe runs), the resolved spec only."""
    import lmpipe.cluster.submit as submit

    monkeypatch.setattr(submit, "source_root", lambda: None)
    plan = plan_job(shipped_spec(SPECS / "tiny.yaml", overrides=["ngram.order=2"]), version="0", run_dir=str(tmp_path / "r"), workdir=tmp_path)
    try:
        working_dir = Path(plan.runtime_env["working_dir"])
        assert "py_modules" not in plan.runtime_env
        assert [p.relative_to(working_dir).as_posix() for p in working_dir.rglob("*") if p.is_file()] == [f"{JOB_DIR}/spec.yaml"]
        assert list(plan.argv[:4]) == [*DRIVER, f"{JOB_DIR}/spec.yaml"]
        assert load_spec(working_dir / JOB_DIR / "spec.yaml").ngram.order == 2
        assert len(plan.notes) == 3 and all(str(SPECS / "tiny") in n for n in plan.notes)  # train, valid, test
    finally:
        shutil.rmtree(plan.staged)


# ------------------------------------------------------------------------------------------ the driver's interpreter
def _fake_python(folder: Path, name: str, *, probe_ok: bool) -> Path:
    """A stand-in interpreter: answers the probe (``-c ...``) with ``probe_ok``, else records its arguments."""
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = -c ]; then exit {0 if probe_ok else 1}; fi\n'
        f'for a in "$@"; do printf "%s\\n" "$a"; done > {shlex.quote(str(folder / (name + ".argv")))}\n'
    )
    path.chmod(0o755)
    return path


def _as_ray_runs_it(command: str, path: str, cwd: Path) -> subprocess.CompletedProcess:
    """Ray's JobSupervisor: ``Popen(entrypoint, shell=True)`` with the head's environment (here: only PATH)."""
    return subprocess.run(command, shell=True, cwd=cwd, env={"PATH": path}, capture_output=True, text=True, timeout=120)  # noqa: S602


def test_the_entrypoint_needs_no_python_on_the_heads_path(tmp_path):
    """Issue 18.10: a head started from a virtualenv that is not activated has neither ``lmpipe`` nor the right
    ``python`` on PATH; the entrypoint still starts the driver with the interpreter that runs this process."""
    empty = tmp_path / "bin"
    empty.mkdir()
    args = ["--help"]
    done = _as_ray_runs_it(entrypoint(args), str(empty), REPO)
    assert done.returncode == 0, done.stderr
    assert "usage: lmpipe run" in done.stdout
    old = _as_ray_runs_it(shlex.join(["python", *DRIVER, *args]), str(empty), REPO)  # what main submitted before
    assert old.returncode == 127 and "not found" in old.stderr


def test_the_entrypoint_tries_the_candidates_in_order_and_names_python_when_none_works(tmp_path):
    bin_dir = tmp_path / "bin"
    _fake_python(bin_dir, "python3", probe_ok=False)  # e.g. a system Python without Ray
    _fake_python(bin_dir, "python", probe_ok=True)
    args = ["pipelines/specs/tiny.yaml", "--run-dir", "/mnt/runs/a b", "--set", "name=x y"]
    missing = str(tmp_path / "no-such-venv" / "bin" / "python")
    done = _as_ray_runs_it(entrypoint(args, local_python=missing), str(bin_dir), tmp_path)
    assert done.returncode == 0, done.stderr
    assert (bin_dir / "python.argv").read_text().splitlines() == [*DRIVER, *args]  # quoting survives the shell
    assert not (bin_dir / "python3.argv").exists()
    (bin_dir / "python").unlink()
    done = _as_ray_runs_it(entrypoint(args, local_python=missing), str(bin_dir), tmp_path)
    assert done.returncode == NO_PYTHON_STATUS
    assert done.stderr.count("\n") == 1 and "--python PATH" in done.stderr and missing in done.stderr


def test_python_given_is_used_as_is(tmp_path):
    """``lmpipe submit --python PATH``: no search, the path itself (quoted) runs the driver."""
    fake = _fake_python(tmp_path / "my env", "py", probe_ok=False)  # the probe is not run for a given path
    plan = plan_job(
        shipped_spec(SPECS / "tiny.yaml"), version="0", run_dir=str(tmp_path / "run"), workdir=tmp_path, python=str(fake)
    )
    try:
        assert plan.entrypoint == shlex.join([str(fake), *plan.argv]) and plan.python == str(fake)
        done = _as_ray_runs_it(plan.entrypoint, "/nonexistent", tmp_path)
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "my env" / "py.argv").read_text().splitlines() == list(plan.argv)
    finally:
        shutil.rmtree(plan.staged)


def test_every_local_input_of_a_spec_is_listed(tmp_path):
    """corpus splits, ngram.limit_vocab, lm and tagger vectors, tagger task files: all must reach the cluster."""
    for name in ("a.txt", "v.txt", "e.vec", "t.vec", "ner.train", "ner.dev"):
        (tmp_path / name).write_text("x\n")
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(yaml.safe_dump({
        "name": "s", "corpus": {"train": ["a.txt", "data:ptb/train"], "test": "s3://bucket/test.txt"},
        "ngram": {"limit_vocab": "v.txt"},
        "lm": {"models": [{"name": "a", "embeddings": "e.vec"}, {"name": "b", "embeddings": "sgns"}]},
        "tagger": {"vectors": "t.vec", "vectors_format": "word2vec", "tasks": [
            {"name": "ner", "format": "conll2003", "column": "ner", "train": "ner.train", "valid": "ner.dev"},
        ]},
    }))  # fmt: skip
    listed = local_input_paths(load_spec(spec_file))
    assert sorted(listed) == sorted(str(tmp_path / n) for n in ("a.txt", "v.txt", "e.vec", "t.vec", "ner.train", "ner.dev"))


def test_bad_input_is_refused_before_anything_is_staged(tmp_path, monkeypatch, capsys):
    with pytest.raises(SpecError, match="ngram.order"):
        shipped_spec(SPECS / "tiny.yaml", overrides=["ngram.order=9"])
    tiny = shipped_spec(SPECS / "tiny.yaml")
    with pytest.raises(StorageError, match="gs:// run directories are not supported"):
        plan_job(tiny, version="0", run_dir="gs://bucket/runs/tiny", workdir=tmp_path)
    with pytest.raises(SubmitError, match="NAME=VALUE"):
        plan_job(tiny, version="0", env_vars=["1BAD"], workdir=tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where plan_job would stage
    address = f"http://127.0.0.1:{closed_port()}"
    assert main(["submit", str(SPECS / "tiny.yaml"), "--set", "ngram.order=9", "--address", address]) == 2
    err = capsys.readouterr().err
    assert "ngram.order" in err and "cannot reach" not in err  # the spec is checked before the cluster is contacted
    assert list(tmp_path.iterdir()) == []


def test_run_dir_uris():
    assert resolve_run_dir("file:///mnt/shared/runs/x") == Path("/mnt/shared/runs/x")
    assert resolve_run_dir("runs/x") == Path("runs/x")
    for uri in ("s3://b/runs", "hdfs://nn:8020/runs", "file://otherhost/runs"):
        with pytest.raises(StorageError):
            resolve_run_dir(uri)


def test_lmpipe_run_refuses_an_object_store_run_dir(capsys):
    assert main(["run", str(SPECS / "tiny.yaml"), "--run-dir", "s3://bucket/runs/tiny"]) == 2
    assert "mount" in capsys.readouterr().err


def test_working_dir_size_limit(tmp_path, monkeypatch):
    import lmpipe.cluster.submit as submit

    root = tmp_path / "src"
    (root / "data").mkdir(parents=True)
    (root / "data" / "big.bin").write_bytes(b"\0" * (2 << 20))
    monkeypatch.setattr(submit, "MAX_WORKING_DIR_MB", 1)
    with pytest.raises(SubmitError, match=r"data/big.bin \(2 MB\).*--exclude"):
        stage_working_dir(tmp_path / "out", root=root)
    assert stage_working_dir(tmp_path / "out2", root=root, excludes=["data"]) == 0


def test_pip_requirements_are_pyprojects_without_ray():
    reqs = pip_requirements()
    names = {r.split(">")[0].split("=")[0].split("[")[0].strip() for r in reqs}
    assert {"torch", "pyarrow", "sentencepiece", "kenlm", "pyyaml"} <= names
    assert "ray" not in names and "pytest" not in names  # the cluster's Ray serves the job; no dev extras
    assert any(r.startswith("torch>=") for r in reqs)


# ------------------------------------------------------------------------------------------ stage resources
def test_stage_resources_parse_and_map_to_ray_options():
    assert parse_resources("x", ["CPU=2", "ssd=1", "GPU=0.5"]) == {"CPU": 2.0, "ssd": 1.0, "GPU": 0.5}
    assert ray_options({}) == {"num_cpus": 1.0}
    assert ray_options({"CPU": 2.0, "GPU": 0.5, "ssd": 1.0}) == {"num_cpus": 2.0, "num_gpus": 0.5, "resources": {"ssd": 1.0}}
    for bad in (["CPU"], ["CPU=0"], ["CPU=1", "CPU=2"], ["memory=100"], ["a b=1"]):
        with pytest.raises(SpecError, match=r"tokenize.resources\[\d\]"):
            load_spec(SPECS / "tiny.yaml", overrides=[f"tokenize.resources={bad}".replace("'", "")])


def test_resources_do_not_change_the_fingerprint():
    from lmpipe.pipelines.run import plan_stage
    from lmpipe.pipelines.stages import StageContext

    base = load_spec(SPECS / "tiny.yaml")
    placed = load_spec(SPECS / "tiny.yaml", overrides=["tokenize.resources=[CPU=2]", "ngram.resources=[ssd=1]"])
    for stage in ("tokenize", "ngram"):
        a = plan_stage(StageContext(spec=base, run_dir=REPO / "runs" / "none"), stage)
        b = plan_stage(StageContext(spec=placed, run_dir=REPO / "runs" / "none"), stage)
        assert a == b and a.fingerprint == b.fingerprint


def test_placement_counts_tasks_per_node_and_process():
    placement = Placement()
    placement.add({"node_id": "n1", "hostname": "h", "pid": 1, "peak_rss_mb": 10.0})
    placement.add({"node_id": "n1", "hostname": "h", "pid": 1, "peak_rss_mb": 30.0})
    placement.add({"node_id": "n2", "hostname": "h2", "pid": 7, "peak_rss_mb": 5.0})
    rows = {r["node_id"]: r for r in placement.rows()}
    assert rows["n1"]["tasks"] == 2 and rows["n1"]["peak_rss_mb"] == 30.0 and rows["n2"]["tasks"] == 1
    assert placement.nodes() == ["n1", "n2"]
