"""Resolving ``data:NAME/SPLIT`` references to verified local paths: the mirror in place, else the cache."""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath

from lmpipe.pipelines.datasets.fetch import (
    MIRROR_ENV,
    PathArg,
    data_home,
    find_mirror,
    hash_file,
    marker_current,
    tree_files,
    verify,
    verify_tree,
)
from lmpipe.pipelines.datasets.registry import (
    REF_PREFIX,
    DataFile,
    DataNotFoundError,
    Dataset,
    DataTree,
    UnknownDatasetError,
    get,
    is_data_ref,
)

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- resolve
#: Mirror entries already verified in this process, keyed by their stat, so that a file replaced after
#: it was verified is verified again.
_VERIFIED: set[tuple[object, ...]] = set()


def resolve(ref: str, mirror: PathArg | None = None) -> Path:
    """Resolve ``data:NAME/SPLIT`` or ``data:NAME/relative/path`` to a local, verified path.

    The mirror (``mirror`` or ``$LMPIPE_DATA_MIRROR``) is tried first: its file is used in place, after
    its checksum is checked once per process.  Then the cache (``data_home()``) is tried, if the dataset
    was fetched there.  A reference to a tree split (``data:brown/all``) gives a directory.
    """
    dataset, path, entry = _parse_ref(ref)
    mirror_root = find_mirror(mirror)
    if mirror_root is not None and (mirror_root / path).exists():
        _verify_in_place(mirror_root, entry)
        return mirror_root / path
    home = data_home()
    if (home / path).exists() and marker_current(dataset, home):
        return home / path
    where = (
        f"mirror {mirror_root} nor the cache {home}" if mirror_root else f"the cache {home} (no mirror set)"
    )
    raise DataNotFoundError(
        f"{ref}: {path} is in neither {where}; run `lmpipe data fetch {dataset.name}` "
        f"(or `lmpipe data fetch {dataset.name} --mirror DIR` offline, or set ${MIRROR_ENV})"
    )


def _parse_ref(ref: str) -> tuple[Dataset, str, DataFile | DataTree]:
    """Split a reference into (dataset, path from the data root, the file or tree that pins it)."""
    if not is_data_ref(ref):
        raise UnknownDatasetError(f"{ref!r} is not a data reference; expected {REF_PREFIX}NAME/SPLIT")
    name, _, rest = ref.removeprefix(REF_PREFIX).partition("/")
    dataset = get(name)
    entries = (*dataset.files, *dataset.trees)
    path = dataset.splits.get(rest) or f"{name}/{rest}"
    if rest and ".." not in PurePosixPath(rest).parts:
        for entry in entries:
            if path == entry.path or (isinstance(entry, DataTree) and path.startswith(f"{entry.path}/")):
                return dataset, path, entry
    raise UnknownDatasetError(
        f"{ref}: {name} has no split or file {rest!r}; splits are {sorted(dataset.splits)}, "
        f"paths are {[e.path for e in entries]}"
    )


def _verify_in_place(root: Path, entry: DataFile | DataTree) -> None:
    if isinstance(entry, DataFile):
        st = (root / entry.path).stat()
        key: tuple[object, ...] = (str(root / entry.path), st.st_size, st.st_mtime_ns)
        if key not in _VERIFIED:
            digest = hash_file(root / entry.path)
            verify(str(root / entry.path), entry.sha256, entry.md5, digest)
            if entry.sha256 is None and entry.md5 is None:
                logger.warning(
                    "%s: no published checksum; using the mirror copy unverified", root / entry.path
                )
            _VERIFIED.add(key)
        return
    paths = tree_files(root, entry.path)
    stats = tuple((p, st.st_size, st.st_mtime_ns) for p in paths for st in [(root / p).stat()])
    key = (str(root / entry.path), stats)
    if key not in _VERIFIED:
        verify_tree(entry, {p: hash_file(root / p).sha256.hexdigest() for p in paths}, root)
        _VERIFIED.add(key)
