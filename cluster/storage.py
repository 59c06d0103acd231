"""Where a run directory may live: a local path or a shared mount; ``file://`` URIs are local paths.

Stages read and write the run directory through local paths (Arrow IPC shards opened by path, partition
files exchanged between Ray tasks, atomic renames for stage folders), so on a cluster the run directory
must be a filesystem every node mounts at the same path (NFS, EFS, Filestore, a Kubernetes volume, or an
object store mounted with s3fs/gcsfuse/mountpoint-s3).  Object-store URIs (``s3://``, ``gs://``,
``hdfs://`` ...) are refused here with that advice, before any work or any job submission, rather than
turned into a local folder literally named ``s3:``.

    >>> resolve_run_dir("file:///mnt/shared/runs/ptb")
    PosixPath('/mnt/shared/runs/ptb')
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse


class StorageError(ValueError):
    """A run directory lmpipe cannot use; the message says what would work instead."""


def is_uri(value: str) -> bool:
    """True for ``scheme://...`` (one-letter schemes are Windows drive letters, not URIs)."""
    scheme, sep, _ = value.partition("://")
    return bool(sep) and len(scheme) > 1 and scheme.replace("+", "").replace("-", "").replace(".", "").isalnum()


def resolve_run_dir(value: str | Path) -> Path:
    """The local path of a run directory given as a path or a ``file://`` URI; other URIs raise."""
    text = str(value)
    if not is_uri(text):
        return Path(text)
    parsed = urlparse(text)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise StorageError(f"--run-dir {text}: a file:// URI names a local path (file:///path), not host {parsed.netloc!r}")
        return Path(unquote(parsed.path))
    raise StorageError(
        f"--run-dir {text}: {parsed.scheme}:// run directories are not supported: stages read and write the run "
        "directory through local paths.  Mount the bucket or share at the same path on every node (NFS/EFS/"
        "Filestore, s3fs, gcsfuse, mountpoint-s3, a Kubernetes volume) and pass that path, e.g. "
        "--run-dir /mnt/shared/runs/NAME"
    )
