"""The run directory: one folder per stage, each finished by an atomic rename and a ``manifest.json``.

::

    RUN/
      spec.yaml                   the resolved spec of the last run
      tokenize/manifest.json      written last, inside the temporary folder, before the rename
      .tokenize.tmp-<id>/         a stage in progress (or one that crashed: never mistaken for done)
      .checkpoints/<stage>-<fp>/  training state of an unfinished stage, resumed by a rerun
      .lmpipe-lock                the run lock (``pipelines.runlock``)

Every stage folder and temporary folder lmpipe makes holds ``.lmpipe-stage`` (the stage's name), so lmpipe
deletes or replaces only what it made: a folder without the marker (or, for folders made before it, a
``manifest.json`` naming the stage) is left alone, and a run that would have to replace it refuses.

A stage is skipped when ``RUN/<stage>/manifest.json`` exists, says ``complete`` and carries the same
fingerprint: a hash of the stage's settings and of its inputs (``pipelines.run.plan_stage``): each upstream
stage's fingerprint, the corpus files' identities (uri, size, modification time), and the content hash of
files the spec names (:func:`path_identity`; a ``data:`` reference by its name, pinned by its checksum).
``--force`` reruns it.  Stage names are fixed identifiers, so nothing a spec says can make a stage write
outside the run directory.  The manifest's envelope is :class:`Manifest`, so each of its keys has one type.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmpipe.pipelines.core.errors import UserError
from lmpipe.pipelines.core.redact import redact_data
from lmpipe.pipelines.spec import STAGE_ORDER

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MARKER = ".lmpipe-stage"


class ForeignFolderError(UserError):
    """The run directory holds a folder lmpipe did not make where a stage's output must go."""


def made_by_lmpipe(folder: Path, stage: str) -> bool:
    """Whether ``folder`` is lmpipe's folder for ``stage``: its marker says so, or (a folder made before the
    marker) its manifest names the stage."""
    try:
        return (folder / MARKER).read_text(encoding="utf-8").strip() == stage
    except OSError:
        pass
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("stage") == stage


def check_replaceable(run_dir: Path, stage: str) -> None:
    """Refuse (one line, naming it) when ``RUN/<stage>`` exists but is not lmpipe's."""
    final = Path(run_dir) / stage
    if final.is_symlink() or (final.exists() and not (final.is_dir() and made_by_lmpipe(final, stage))):
        raise ForeignFolderError(
            f"{final}: not made by lmpipe (no {MARKER} or {stage} manifest); move it away, or use another --run-dir"
        )


def fingerprint(payload: Any) -> str:
    """A stable sha256 of JSON-able settings and input identities."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def package_versions() -> dict[str, str]:
    """Versions of what shaped the outputs, recorded in every manifest."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("lmpipe", "ray", "pyarrow", "numpy", "torch", "sentencepiece", "kenlm"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def path_identity(path: Path) -> str | None:
    """Identity of a file the spec names, by content: its sha256; a directory: the hash of its files'
    sha256 by name; None when it does not exist."""
    from lmpipe.pipelines.core.files import sha256_file

    if path.is_dir():
        return fingerprint({p.name: sha256_file(p) for p in sorted(path.iterdir()) if p.is_file()})
    return sha256_file(path) if path.exists() else None


@dataclass(frozen=True, slots=True)
class Timings:
    started: float  # seconds since the epoch
    finished: float
    seconds: float


@dataclass(frozen=True, slots=True)
class Host:
    """The machine the driver ran on (workers record their own placement in the stage's sections)."""

    hostname: str
    platform: str
    cpus: int | None
    argv: list[str]


def host_info() -> Host:
    return Host(socket.gethostname(), _platform(), os.cpu_count(), list(sys.argv))


def _platform() -> str:
    """``platform.platform()``'s string without its processor field (``Linux-6.1.0-x86_64-with-glibc2.36``).

    Why: that field runs ``uname -p`` in a subprocess, and forking the driver at the end of a stage (a few
    hundred MB resident by then) counted twice for a moment in a process-tree memory monitor (bench/sgns_e2e.py
    read 509 MB for a 285 MB driver)."""
    u = platform.uname()  # the processor is looked up lazily: reading these fields runs nothing
    lib, version = platform.libc_ver() if u.system == "Linux" else ("", "")
    return "-".join([u.system, u.release, u.machine] + ([f"with-{lib}{version}"] if lib else []))


@dataclass(frozen=True, slots=True)
class Manifest:
    """``RUN/<stage>/manifest.json``: this envelope, plus the stage's own sections (``sections``, written
    between ``outputs`` and ``timings``; ``training`` is typed by the training harness)."""

    stage: str
    fingerprint: str
    settings: dict[str, Any]
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    timings: Timings
    versions: dict[str, str]
    host: Host
    sections: dict[str, Any] = field(default_factory=dict)
    status: str = "complete"

    def to_json(self) -> dict[str, Any]:
        """The JSON object, keys in the order every manifest has had them."""
        return {
            "stage": self.stage,
            "status": self.status,
            "fingerprint": self.fingerprint,
            "settings": self.settings,
            "inputs": self.inputs,
            "outputs": self.outputs,
            **self.sections,
            "timings": asdict(self.timings),
            "versions": self.versions,
            "host": asdict(self.host),
        }


@dataclass
class StageRun:
    """A stage being computed into a temporary folder; ``commit`` makes it the stage's output."""

    run_dir: Path
    stage: str
    fingerprint: str
    settings: dict[str, Any]
    inputs: dict[str, Any]
    tmp_dir: Path = field(init=False)
    started: float = field(default_factory=time.time)
    #: Working folders of :meth:`scratch_dir`, removed by :meth:`commit` and :meth:`abort`.
    scratch: list[Path] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        if self.stage not in STAGE_ORDER:
            raise ValueError(f"unknown stage {self.stage!r}; stages: {list(STAGE_ORDER)}")
        self.tmp_dir = self.run_dir / f".{self.stage}.tmp-{uuid.uuid4().hex[:12]}"
        self.tmp_dir.mkdir(parents=True)
        (self.tmp_dir / MARKER).write_text(self.stage + "\n", encoding="utf-8")

    def scratch_dir(self, parent: str | os.PathLike[str] | None, setting: str) -> Path:
        """A working folder for intermediate files, removed when the stage commits or aborts: a fresh folder
        ``lmpipe-<stage>-*`` made in ``parent`` (lmplz's ``-T``: e.g. a local disk when the run directory is on
        NFS), or with None ``tmp_dir/_work`` inside the run directory.  ``setting`` names the spec key in errors."""
        if parent is None:
            path = self.tmp_dir / "_work"
            path.mkdir(exist_ok=True)
        else:
            root = Path(parent).expanduser()
            try:
                root.mkdir(parents=True, exist_ok=True)
                path = Path(tempfile.mkdtemp(prefix=f"lmpipe-{self.stage}-", dir=root))
            except OSError as exc:
                raise UserError(f"{setting}: {root}: cannot make a working folder there ({exc.strerror or exc})") from exc
        self.scratch.append(path)
        return path

    def _drop_scratch(self) -> None:
        for path in self.scratch:  # only folders made above: nothing else in `parent` is touched
            shutil.rmtree(path, ignore_errors=True)
        self.scratch.clear()

    def commit(self, outputs: dict[str, Any], **extra: Any) -> dict[str, Any]:
        """Write the manifest into the temporary folder, then swap it in for ``RUN/<stage>``."""
        self._drop_scratch()
        finished = time.time()
        clash = set(extra) & {f.name for f in dataclasses.fields(Manifest)}
        if clash:
            raise TypeError(f"the {self.stage} stage returned envelope keys {sorted(clash)}")  # a programming error
        manifest = Manifest(
            stage=self.stage,
            fingerprint=self.fingerprint,
            settings=self.settings,
            inputs=self.inputs,
            outputs=outputs,
            sections=extra,
            timings=Timings(self.started, finished, round(finished - self.started, 3)),
            versions=package_versions(),
            host=host_info(),
        ).to_json()
        manifest = redact_data(manifest)  # URIs (inputs, sources, argv) may carry credentials
        write_json_atomic(self.tmp_dir / MANIFEST, manifest)
        final = self.run_dir / self.stage
        check_replaceable(self.run_dir, self.stage)
        old = None
        if final.exists():
            old = self.run_dir / f".{self.stage}.old-{uuid.uuid4().hex[:12]}"
            os.replace(final, old)
        os.replace(self.tmp_dir, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return manifest

    def abort(self) -> None:
        self._drop_scratch()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + f".tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_manifest(run_dir: Path, stage: str) -> dict[str, Any] | None:
    """The manifest of a finished stage, or None if the stage has not completed."""
    path = Path(run_dir) / stage / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return manifest if manifest.get("status") == "complete" else None


def is_current(run_dir: Path, stage: str, fp: str) -> dict[str, Any] | None:
    """The manifest if the stage finished with exactly this fingerprint (so it can be skipped)."""
    manifest = read_manifest(run_dir, stage)
    return manifest if manifest is not None and manifest.get("fingerprint") == fp else None


def clean_stale(run_dir: Path) -> None:
    """Remove temporary folders left by crashed stages (they are never read); only lmpipe's own, marked
    ones: a hidden folder a user named alike is left alone.  Called with the run lock held, so no live run
    owns them."""
    for path in Path(run_dir).glob(".*.tmp-*"):
        stage = path.name[1:].split(".tmp-", 1)[0]
        if path.is_dir() and not path.is_symlink() and (path / MARKER).is_file() and made_by_lmpipe(path, stage):
            logger.info("removing unfinished stage folder %s", path)
            shutil.rmtree(path, ignore_errors=True)
