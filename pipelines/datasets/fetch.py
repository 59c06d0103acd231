"""Fetching datasets into a data root: download or mirror copy, checksums, atomic install, the marker.

A fetched dataset is ``<root>/<NAME>/...`` plus the marker ``<root>/<NAME>/.lmpipe-fetched.json``, written
last; the cache (``data_home()``) is the default root.  The checksum helpers here also serve
``datasets.resolve``, which verifies mirror files in place.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import logging
import os
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO

from tqdm import tqdm

from lmpipe import __version__
from lmpipe.pipelines.datasets.registry import (
    ChecksumError,
    DataFile,
    DataNotFoundError,
    Dataset,
    DatasetError,
    DataTree,
    Source,
    get,
)

logger = logging.getLogger(__name__)

MIRROR_ENV = "LMPIPE_DATA_MIRROR"
HOME_ENV = "LMPIPE_DATA_HOME"
MARKER = ".lmpipe-fetched.json"
_DOWNLOAD_DIR = ".download"
_CHUNK = 1 << 20
_TIMEOUT_S = 60

PathArg = str | os.PathLike[str]


# ------------------------------------------------------------------------------------------ data roots
def data_home() -> Path:
    """The cache data root: ``$LMPIPE_DATA_HOME``, else ``~/.cache/lmpipe/data``."""
    return Path(os.environ.get(HOME_ENV) or "~/.cache/lmpipe/data").expanduser()


def find_mirror(mirror: PathArg | None) -> Path | None:
    """The mirror data root: ``mirror``, else ``$LMPIPE_DATA_MIRROR``, else None; an error if not a folder."""
    value = mirror if mirror is not None else (os.environ.get(MIRROR_ENV) or None)
    if value is None:
        return None
    root = Path(value).expanduser()
    if not root.is_dir():
        origin = "mirror argument" if mirror is not None else f"${MIRROR_ENV}"
        raise DataNotFoundError(f"data mirror {root} (from the {origin}) is not a directory")
    return root


# --------------------------------------------------------------------------------------- bytes & hashes
class Digest:
    """sha256 and md5 of one byte stream, in one pass (md5 only matters where publishers give md5)."""

    __slots__ = ("sha256", "md5")

    def __init__(self) -> None:
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5(usedforsecurity=False)

    def update(self, chunk: bytes) -> None:
        self.sha256.update(chunk)
        self.md5.update(chunk)


def verify(what: str, sha256: str | None, md5: str | None, digest: Digest) -> None:
    """Raise :class:`ChecksumError` naming ``what`` when a pinned digest (``None`` = unknown) differs."""
    for algorithm, expected, actual in (("sha256", sha256, digest.sha256), ("md5", md5, digest.md5)):
        if expected is not None and actual.hexdigest() != expected:
            raise ChecksumError(what, algorithm, expected, actual.hexdigest())


def _copy(src: IO[bytes], dst: Path, bar: tqdm | None = None) -> Digest:
    digest = Digest()
    with dst.open("wb") as out:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
            if bar is not None:
                bar.update(len(chunk))
    return digest


def hash_file(path: Path) -> Digest:
    """sha256 and md5 of a file, read in chunks."""
    digest = Digest()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest


@contextmanager
def _staged(target: Path) -> Iterator[Path]:
    """Yield a temp path beside ``target``.  On a clean exit, rename it onto ``target``; on an error, delete it.

    The rename is atomic on one file system, so readers see the old file or the complete, verified new one,
    never a partial download.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 mode would survive the rename, and a shared cache must honour the umask.
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def tree_files(root: Path, tree: str) -> list[str]:
    """Paths (relative to ``root``) of the files under ``root/tree``, bytewise sorted, dot files skipped."""
    base = root / tree
    found = (p.relative_to(root) for p in base.rglob("*") if p.is_file())
    return sorted(p.as_posix() for p in found if not any(part.startswith(".") for part in p.parts))


def _tree_digest(digests: dict[str, str]) -> str:
    return hashlib.sha256("".join(f"{digests[p]}  {p}\n" for p in sorted(digests)).encode()).hexdigest()


def verify_tree(tree: DataTree, digests: dict[str, str], root: Path) -> None:
    """Check a tree's digest.  On a mismatch, use ``root/SHA256SUMS`` (if present) to name the files that differ."""
    actual = _tree_digest(digests)
    if actual == tree.sha256 and len(digests) == tree.n_files:
        return
    listed: dict[str, str] = {}
    sums = root / "SHA256SUMS"
    if sums.is_file():
        for line in sums.read_text(encoding="utf-8").splitlines():
            value, _, path = line.partition(" ")
            path = path.lstrip(" *").removeprefix("./")
            if path == tree.path or path.startswith(f"{tree.path}/"):
                listed[path] = value
    if listed and _tree_digest(listed) == tree.sha256:
        for path in sorted(listed.keys() | digests.keys()):
            if listed.get(path) != digests.get(path):
                raise ChecksumError(
                    str(root / path), "sha256", listed.get(path, "(file absent)"), digests.get(path, "(file missing)"),
                    hint=f"The file belongs to tree {tree.path}/ ({tree.n_files} files).",
                )  # fmt: skip
    raise ChecksumError(
        f"{root / tree.path}/ ({len(digests)} files)", "tree sha256", tree.sha256, actual,
        hint=f"Expected {tree.n_files} files; no matching SHA256SUMS beside it says which file differs.",
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------ fetch
def fetch(
    name: str, dest: PathArg | None = None, mirror: PathArg | None = None, progress: bool = True
) -> Path:
    """Make dataset ``name`` available, verified, under the data root ``dest``; return ``dest/NAME``.

    ``dest`` defaults to ``data_home()``.  ``mirror`` (or ``$LMPIPE_DATA_MIRROR``) makes this an offline
    copy, with no fallback to the network, so an air-gapped run never hangs on a download.  A dataset
    whose marker is current is not fetched again.
    """
    dataset = get(name)
    root = Path(dest).expanduser() if dest is not None else data_home()
    mirror_root = find_mirror(mirror)
    if marker_current(dataset, root):
        logger.info("%s: already fetched and verified in %s", name, root / name)
        return root / name
    if mirror_root is not None:
        if mirror_root.resolve() == root.resolve():
            raise DatasetError(f"--dest and --mirror are both {root}; a mirror is read in place by resolve()")
        origin, record = f"mirror {mirror_root}", _copy_from_mirror(dataset, mirror_root, root, progress)
    elif dataset.sources:
        origin, record = "download", _download(dataset, root, progress)
    else:
        raise DataNotFoundError(
            f"{name} is mirror-only (no public download registered): run `lmpipe data fetch {name} --mirror DIR`"
            f" or set ${MIRROR_ENV} to a directory holding {name}/"
        )
    marker = {
        "dataset": name, "fingerprint": dataset.fingerprint, "origin": origin,
        "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"), "sha256": record,
    }  # fmt: skip
    with _staged(root / name / MARKER) as tmp:
        tmp.write_text(json.dumps(marker, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    logger.info("%s: %d files verified and installed in %s (from %s)", name, len(record), root / name, origin)
    return root / name


def marker_current(dataset: Dataset, root: Path) -> bool:
    """True when ``root`` holds ``dataset`` fetched under the registry's current pins (marker and files)."""
    marker = root / dataset.name / MARKER
    try:
        content = json.loads(marker.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False
    except (OSError, ValueError) as e:
        logger.warning("%s: unreadable marker %s (%s); fetching again", dataset.name, marker, e)
        return False
    if content.get("fingerprint") != dataset.fingerprint:
        logger.info(
            "%s: registry changed since %s was fetched; fetching again", dataset.name, root / dataset.name
        )
        return False
    return all((root / e.path).exists() for e in (*dataset.files, *dataset.trees))


def _bar(total: int | None, desc: str, progress: bool) -> tqdm:
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress)


def _copy_from_mirror(dataset: Dataset, mirror: Path, root: Path, progress: bool) -> dict[str, str]:
    missing = [e.path for e in (*dataset.files, *dataset.trees) if not (mirror / e.path).exists()]
    if missing:
        raise DataNotFoundError(
            f"mirror {mirror} lacks {', '.join(missing)} of {dataset.name}; fill the mirror, or fetch without "
            f"--mirror (and with ${MIRROR_ENV} unset) to download"
        )
    listed = {t.path: tree_files(mirror, t.path) for t in dataset.trees}
    paths = [f.path for f in dataset.files] + [p for ps in listed.values() for p in ps]
    record: dict[str, str] = {}
    with _bar(sum((mirror / p).stat().st_size for p in paths), dataset.name, progress) as bar:
        for f in dataset.files:
            with (mirror / f.path).open("rb") as src, _staged(root / f.path) as tmp:
                digest = _copy(src, tmp, bar)
                verify(str(mirror / f.path), f.sha256, f.md5, digest)
            record[f.path] = _record(f, digest)
        for tree in dataset.trees:
            digests: dict[str, str] = {}
            for path in listed[tree.path]:
                with (mirror / path).open("rb") as src, _staged(root / path) as tmp:
                    digests[path] = _copy(src, tmp, bar).sha256.hexdigest()
            verify_tree(tree, digests, mirror)
            record.update(digests)
    return record


def _record(f: DataFile, digest: Digest) -> str:
    if f.sha256 is None:
        logger.warning(
            "%s: no published sha256; recording the one found, %s", f.path, digest.sha256.hexdigest()
        )
    return digest.sha256.hexdigest()


@contextmanager
def _open_url(url: str, name: str) -> Iterator[IO[bytes]]:
    request = urllib.request.Request(url, headers={"User-Agent": f"lmpipe/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
            yield response
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as e:
        raise DatasetError(
            f"download of {url} failed ({e}); offline machines fetch from a mirror: "
            f"`lmpipe data fetch {name} --mirror DIR`"
        ) from e


def _download(dataset: Dataset, root: Path, progress: bool) -> dict[str, str]:
    by_path = {f.path: f for f in dataset.files}
    record: dict[str, str] = {}
    for source in dataset.sources:
        if source.sha256 is None and source.md5 is None:
            logger.warning("%s: no published checksum for %s", dataset.name, source.url)
        basename = PurePosixPath(urllib.parse.urlsplit(source.url).path).name or "download"
        # A plain file is streamed straight to its final place; an archive goes to .download/ first.
        target = (
            root / source.target if source.kind == "file" else root / dataset.name / _DOWNLOAD_DIR / basename
        )
        logger.info("%s: downloading %s", dataset.name, source.url)
        with _open_url(source.url, dataset.name) as response, _staged(target) as tmp:
            length = response.headers.get("Content-Length")
            with _bar(int(length) if length else None, basename, progress) as bar:
                digest = _copy(response, tmp, bar)
            verify(source.url, source.sha256, source.md5, digest)
            if source.kind == "file":
                f = by_path[source.target]
                verify(f.path, f.sha256, f.md5, digest)
                record[f.path] = _record(f, digest)
        if source.kind != "file":
            try:
                record.update(_extract(source, target, root, by_path))
            finally:
                target.unlink(missing_ok=True)
                try:
                    target.parent.rmdir()
                except OSError:
                    pass  # other downloads still there
    return record


def _extract(source: Source, archive: Path, root: Path, by_path: dict[str, DataFile]) -> dict[str, str]:
    """Install each output of ``source`` from ``archive``, verified.  Returns path -> sha256."""
    record: dict[str, str] = {}

    def install(src: IO[bytes], path: str) -> None:
        f = by_path[path]
        with _staged(root / path) as tmp:
            digest = _copy(src, tmp)
            verify(f"{path} (from {archive.name})", f.sha256, f.md5, digest)
        record[path] = _record(f, digest)

    def missing(member: str, names: list[str]) -> DatasetError:
        return DatasetError(f"{source.url} has no regular file {member!r}; it has {names[:10]}")

    if source.kind == "gz":
        assert source.target is not None  # guaranteed by Source.__post_init__
        with gzip.open(archive, "rb") as src:
            install(src, source.target)
    elif source.kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            for member, path in source.members:
                if member not in zf.namelist() or zf.getinfo(member).is_dir():
                    raise missing(member, zf.namelist())
                with zf.open(member) as src:
                    install(src, path)
    else:
        with tarfile.open(archive, "r:gz") as tf:
            for member, path in source.members:
                try:
                    src = tf.extractfile(tf.getmember(member))
                except KeyError:
                    src = None
                if src is None:
                    raise missing(member, tf.getnames())
                with src:
                    install(src, path)
    return record
