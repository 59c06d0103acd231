"""``lmpipe submit``: run a pipeline spec on a Ray cluster as a Ray job whose driver is ``lmpipe run``.

    >>> shipped = shipped_spec("pipelines/specs/ptb.yaml")  # the CLI's: lmpipe.pipelines.submission
    >>> plan = plan_job(shipped, version="0.1.0", run_dir="/mnt/shared/runs/ptb")
    >>> job_id = submit(jobs_client("http://head:8265"), plan)

What travels with the job (the ``runtime_env``):

* ``py_modules``: the import package ``lmpipe`` staged from this source checkout as the wheel lays it out
  (pyproject's ``[tool.setuptools.package-dir]``: ``pipelines/api`` is ``lmpipe``, ``pipelines/`` is
  ``lmpipe.pipelines``, ...).  Ray puts it first on ``PYTHONPATH`` of the driver and of every worker, ahead
  of any lmpipe installed on the cluster, so the code that runs is the code submitted, on top of the
  dependencies of the cluster image (``cluster/image/Dockerfile``).
* the driver: ``PYTHON -m lmpipe.pipelines.cli run ...``, no console script needed on the head's PATH (see
  :func:`entrypoint`).  ``--python`` names the head's interpreter; without it the entrypoint picks, on the
  head, the first of this process's interpreter (same path: a head started from the same virtualenv or
  image, activated or not), ``python3`` and ``python`` that imports ``ray`` and finds ``lmpipe``, and
  fails with a line naming ``--python`` when none does.
* ``working_dir``: a copy of the checkout (the specs and their small data) without ``.git``, ``.venv``,
  ``runs/``, caches and build folders (:data:`EXCLUDES`, plus ``--exclude``); Ray unpacks it on every node
  and makes it the driver's working directory.  Without a checkout (lmpipe installed from a wheel) only
  the spec travels and the image's lmpipe runs.
* the spec: a spec inside the checkout is run from its copy by its relative path, with the ``--set``
  overrides passed on, so its relative data paths resolve in the copy; a spec from elsewhere is shipped
  as resolved by the CLI (overrides applied, relative paths made absolute) as ``.lmpipe-job/spec.yaml``;
  its local absolute paths must then exist on the cluster (a shared mount); ``plan_job`` lists them in
  ``notes``.
* ``pip`` (``--pip``): lmpipe's requirements as pyproject declares them, minus ``ray`` (the cluster's own
  Ray must serve the job).  Off by default: images have them installed and clusters often have no index.
* ``env_vars`` (``--env KEY=VALUE``), e.g. ``LMPIPE_DATA_MIRROR`` for ``data:`` references on the cluster.

This module reads no spec: the CLI parses and validates it first (so a bad spec fails before a job is
created) and hands over a :class:`ShippedSpec`.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import shlex
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmpipe.cluster.jobs import SubmitError
from lmpipe.cluster.storage import resolve_run_dir

logger = logging.getLogger(__name__)

#: Never shipped: version control, environments, run outputs, caches, build products (gitignore-style names).
EXCLUDES: tuple[str, ...] = (
    ".git", ".venv", "venv", "runs", "build", "dist", "*.egg-info", "__pycache__", "*.pyc", ".pytest_cache",
    ".ruff_cache", ".mypy_cache", ".ipynb_checkpoints", "*.tmp", ".lmpipe-job", "node_modules",
)  # fmt: skip
#: Ray refuses packages over 512 MiB; a checkout this big almost certainly holds data that should be excluded.
MAX_WORKING_DIR_MB = 100
JOB_DIR = ".lmpipe-job"
#: The driver: the cluster's interpreter runs the CLI module (``lmpipe`` may not be on the cluster's PATH).
DRIVER = ("-m", "lmpipe.pipelines.cli", "run")
#: Interpreters the entrypoint tries after this process's own when ``--python`` is not given (head's PATH).
PATH_PYTHONS = ("python3", "python")
#: What a candidate interpreter must do to run the driver: import the cluster's Ray, find lmpipe (shipped
#: on PYTHONPATH as py_modules, or installed in the image).  Cheap: lmpipe itself is not imported.
PROBE = "import importlib.util, ray; assert importlib.util.find_spec('lmpipe')"
#: The entrypoint's exit status when no candidate can run the driver (a shell's "command not found").
NO_PYTHON_STATUS = 127


def candidate_pythons(local_python: str | None = None) -> list[str]:
    """The interpreters the entrypoint tries without ``--python``: this process's (or ``local_python``), then
    :data:`PATH_PYTHONS`."""
    import sys

    return [local_python or sys.executable, *PATH_PYTHONS]


def entrypoint(args: Sequence[str], *, python: str | None = None, local_python: str | None = None) -> str:
    """The job's entrypoint: a shell command (Ray runs it with ``/bin/sh -c`` on the head) starting the driver
    ``<interpreter> -m lmpipe.pipelines.cli run ARGS``.

    ``python`` (``lmpipe submit --python``) is used as given.  Otherwise the interpreter is chosen on the head
    when the job starts, since the client cannot see the head's file system: the first candidate of
    ``local_python`` (default ``sys.executable``: right wherever the head was started from the same
    virtualenv or image, activated or not) and :data:`PATH_PYTHONS` for which :data:`PROBE` succeeds.  A
    head with none of them exits :data:`NO_PYTHON_STATUS` with one line naming ``--python``."""
    driver = shlex.join([*DRIVER, *args])
    if python:
        return f"{shlex.quote(python)} {driver}"
    candidates = candidate_pythons(local_python)
    tried = ", ".join(candidates)
    fail = (
        f"lmpipe submit: no Python on this node imports ray and finds lmpipe (tried {tried}); "
        "submit again with --python PATH, the interpreter the cluster's Ray runs on"
    )
    return (
        f"for py in {' '.join(map(shlex.quote, candidates))}; do "
        f"if \"$py\" -c {shlex.quote(PROBE)} >/dev/null 2>&1; then exec \"$py\" {driver}; fi; done; "
        f"echo {shlex.quote(fail)} >&2; exit {NO_PYTHON_STATUS}"
    )


@dataclass(frozen=True, slots=True)
class ShippedSpec:
    """A spec as the CLI hands it to the job: parsed and validated there, since cluster/ reads no spec."""

    path: Path  # the file as given: run from the shipped copy when it lies in the checkout
    text: str  # the resolved YAML (overrides applied, relative paths absolute): shipped otherwise
    name: str
    local_paths: tuple[str, ...]  # absolute local input paths the run reads (no URIs, no data: references)
    overrides: tuple[str, ...] = ()  # the --set assignments in ``text``; passed on when run from the copy


@dataclass(frozen=True, slots=True)
class JobPlan:
    """Everything ``submit`` sends; ``staged`` is a temporary folder removed once the job is submitted: it holds
    ``working_dir/`` (the ``working_dir``) and the package tree of ``py_modules`` (``lmpipe/``)."""

    submission_id: str
    entrypoint: str  # the shell command Ray runs (:func:`entrypoint`)
    runtime_env: dict[str, Any]
    metadata: dict[str, str]
    staged: Path
    run_dir: str
    notes: tuple[str, ...] = field(default=())
    argv: tuple[str, ...] = field(default=())  # the driver's arguments: ``-m lmpipe.pipelines.cli run ...``
    python: str | None = None  # ``--python``; None: chosen on the head (:func:`entrypoint`)


def source_root() -> Path | None:
    """The lmpipe source checkout this process runs from, or None for an installed wheel."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "pipelines" / "cli.py").is_file() else None


def _ignore(patterns: Sequence[str]):
    def ignore(_dir: str, names: list[str]) -> set[str]:
        return {n for n in names if any(fnmatch.fnmatch(n, p) for p in patterns)}

    return ignore


def stage_working_dir(dest: Path, *, root: Path | None, excludes: Sequence[str] = ()) -> int:
    """Copy the checkout into ``dest`` without :data:`EXCLUDES` and ``excludes``; returns the bytes copied."""
    dest.mkdir(parents=True, exist_ok=True)
    if root is None:
        return 0
    shutil.copytree(root, dest, ignore=_ignore((*EXCLUDES, *excludes)), dirs_exist_ok=True, symlinks=True)
    sizes = [(p.stat().st_size, p) for p in dest.rglob("*") if p.is_file() and not p.is_symlink()]
    total = sum(s for s, _ in sizes)
    if total > MAX_WORKING_DIR_MB << 20:
        largest = ", ".join(f"{p.relative_to(dest)} ({s >> 20} MB)" for s, p in sorted(sizes, reverse=True)[:5])
        raise SubmitError(
            f"the working directory to ship is {total >> 20} MB (limit {MAX_WORKING_DIR_MB} MB); largest: {largest}. "
            "Exclude data with --exclude PATTERN and put it on storage the cluster reads"
        )
    return total


def pip_requirements() -> list[str]:
    """lmpipe's runtime requirements as installed metadata declares them (pyproject), without ``ray``."""
    from importlib import metadata

    try:
        declared = metadata.requires("lmpipe") or []
    except metadata.PackageNotFoundError as exc:
        raise SubmitError("--pip: lmpipe's package metadata is not installed here (pip install -e .)") from exc
    out = []
    for req in declared:
        if "extra ==" in req.replace('"', " ").replace("'", " "):
            continue
        name = re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0].lower()
        if name != "ray":
            out.append(req.split(";")[0].strip())
    return out


def package_dirs(root: Path) -> dict[str, Path]:
    """pyproject's ``[tool.setuptools.package-dir]``: each mapped import package and its checkout folder."""
    import tomllib

    with (root / "pyproject.toml").open("rb") as f:
        mapping = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    return {name: root / folder for name, folder in mapping.items()}


def stage_package(dest: Path, *, root: Path, excludes: Sequence[str] = ()) -> list[Path]:
    """Lay the checkout's folders out under ``dest`` as the import packages they are installed as
    (``pipelines/api`` -> ``lmpipe/``, ``pipelines/`` -> ``lmpipe/pipelines/``, ...); returns the top-level
    package folders, for ``py_modules``.  A folder mapped to a package of its own is not copied twice."""
    dirs = package_dirs(root)
    mapped = {folder.resolve() for folder in dirs.values()}
    skip = _ignore((*EXCLUDES, *excludes))
    for name, folder in sorted(dirs.items()):  # parents first: "lmpipe" before "lmpipe.pipelines"
        here = folder.resolve()

        def ignore(parent: str, names: list[str], here: Path = here) -> set[str]:
            inner = {n for n in names if (Path(parent) / n).resolve() in mapped - {here}}
            return skip(parent, names) | inner

        shutil.copytree(folder, dest.joinpath(*name.split(".")), ignore=ignore, dirs_exist_ok=True, symlinks=True)
    return [dest / top for top in sorted({name.split(".")[0] for name in dirs})]


def _outside(paths: Sequence[str], inside: Path | None) -> list[str]:
    """The local input paths not in the shipped tree: every node of the cluster must see them."""
    if inside is None:
        return list(paths)
    return [p for p in paths if not Path(p).resolve().is_relative_to(inside.resolve())]


def plan_job(
    spec: ShippedSpec,
    *,
    version: str,
    run_dir: str | None = None,
    stages: str | None = None,
    force: str | None = None,
    pip: bool = False,
    env_vars: Sequence[str] = (),
    excludes: Sequence[str] = (),
    root: Path | None = None,
    workdir: Path | None = None,
    python: str | None = None,
) -> JobPlan:
    """Stage the working directory and the package, and build the job; raises SubmitError/StorageError.
    ``version`` is the submitting lmpipe's, recorded in the job's metadata; ``python`` the head's interpreter
    (``--python``; default: chosen on the head, :func:`entrypoint`)."""
    root = source_root() if root is None else root
    run = resolve_run_dir(run_dir) if run_dir else Path("runs") / spec.name
    run = run.expanduser().absolute()  # the job's working directory is a temporary copy: never relative
    env: dict[str, str] = {}
    for item in env_vars:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise SubmitError(f"--env {item!r}: expected NAME=VALUE")
        env[key] = value

    staged = Path(tempfile.mkdtemp(prefix="lmpipe-job-", dir=workdir))
    working_dir = staged / "working_dir"
    runtime_env: dict[str, Any] = {"working_dir": str(working_dir)}
    try:
        stage_working_dir(working_dir, root=root, excludes=excludes)
        if root is not None:
            runtime_env["py_modules"] = [str(p) for p in stage_package(staged, root=root, excludes=excludes)]
        spec_abs = spec.path.resolve()
        shipped = spec_abs.relative_to(root).as_posix() if root is not None and spec_abs.is_relative_to(root) else None
        args = list(DRIVER)
        if shipped is not None and (working_dir / shipped).is_file():  # not in an excluded folder such as runs/
            args += [shipped]
            for assignment in spec.overrides:
                args += ["--set", assignment]
            notes = _outside(spec.local_paths, root)
        else:  # as resolved by the CLI: overrides applied, relative paths absolute
            (working_dir / JOB_DIR).mkdir()
            (working_dir / JOB_DIR / "spec.yaml").write_text(spec.text, encoding="utf-8")
            args += [f"{JOB_DIR}/spec.yaml"]
            notes = list(spec.local_paths)
        args += ["--run-dir", str(run)]
        if stages:
            args += ["--stages", stages]
        if force:
            args += ["--force", force]
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    if pip:
        runtime_env["pip"] = {"packages": pip_requirements(), "pip_check": False}
    if env:
        runtime_env["env_vars"] = env
    stamp = time.strftime("%Y%m%d-%H%M%S")
    submission_id = f"lmpipe-{re.sub(r'[^A-Za-z0-9_-]', '-', spec.name)}-{stamp}-{uuid.uuid4().hex[:6]}"
    metadata = {"lmpipe_spec": spec.name, "lmpipe_run_dir": str(run), "lmpipe_version": version}
    messages = tuple(f"{p}: a local path; every node of the cluster must see it at this path" for p in notes)
    command = entrypoint(args[len(DRIVER) :], python=python)
    return JobPlan(submission_id, command, runtime_env, metadata, staged, str(run), messages, tuple(args), python)


#: What the Job API answers (HTTP 500) while a fresh head's job agent is not up yet.
NO_AGENT = "No available agent to submit job"
#: Seconds ``submit`` keeps retrying that answer, with backoff from 0.5 s doubling up to 8 s.
AGENT_PATIENCE_S = 90.0


def submit(
    client: Any,
    plan: JobPlan,
    *,
    patience_s: float = AGENT_PATIENCE_S,
    sleep: Callable[[float], Any] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """Upload the working directory and create the job; the staged copy is removed either way.

    Right after ``ray start --head`` the Job API answers HTTP 500 "No available agent to submit job, please
    try again later" until the head's agent has registered: that answer is retried for ``patience_s``
    seconds (same submission id, so a retry can never create a second job); any other error is not."""
    from lmpipe.cluster.jobs import SubmitError, translated_errors

    address = getattr(client, "lmpipe_address", "the cluster")
    deadline, delay, attempts = clock() + patience_s, 0.5, 0
    try:
        while True:
            attempts += 1
            try:
                with translated_errors(address):
                    return client.submit_job(
                        entrypoint=plan.entrypoint,
                        runtime_env=plan.runtime_env,
                        submission_id=plan.submission_id,
                        metadata=plan.metadata,
                    )
            except RuntimeError as exc:
                if isinstance(exc, SubmitError) or NO_AGENT not in str(exc):
                    raise
                if clock() + delay > deadline:
                    raise SubmitError(
                        f"the Ray cluster at {address} still has no job agent after {attempts} attempts in "
                        f"{patience_s:g} s (a head that is starting, or one whose dashboard agent failed: see "
                        "/tmp/ray/session_latest/logs/dashboard_agent.log on the head)"
                    ) from None
                logger.info("%s: the job agent is not up yet; retrying in %.1f s", address, delay)
                sleep(delay)
                delay = min(2 * delay, 8.0)
    finally:
        shutil.rmtree(plan.staged, ignore_errors=True)


def describe(plan: JobPlan) -> list[str]:
    """Lines for the terminal: what is about to run where."""
    python = plan.python or "the first that works on the head of " + ", ".join(candidate_pythons())
    lines = [
        f"job {plan.submission_id}", f"  driver: {shlex.join(plan.argv)}", f"  python: {python}",
        f"  run directory: {plan.run_dir}",
    ]  # fmt: skip
    if "pip" in plan.runtime_env:
        lines.append(f"  pip: {' '.join(plan.runtime_env['pip']['packages'])}")
    for key in sorted(plan.runtime_env.get("env_vars", {})):
        lines.append(f"  env: {key}")
    lines += [f"  note: {n}" for n in plan.notes]
    return lines

