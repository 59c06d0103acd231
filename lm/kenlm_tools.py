"""Locate and run KenLM's command-line tools (``lmplz``, ``build_binary``, ``query``).

The PyPI ``kenlm`` package only provides the query-side Python module; the estimation binaries are built
from the same sdist by ``.ci/build_kenlm.sh`` into a cache outside the checkout.  Lookup order for every
binary (first hit wins):

1. ``$LMPIPE_KENLM_BIN`` -- a directory holding the binaries (e.g. a site-wide KenLM build);
2. ``PATH``;
3. ``${LMPIPE_CACHE:-~/.cache/lmpipe}/kenlm-0.3.0/bin`` -- where ``.ci/build_kenlm.sh`` installs them.

Every call uses an argument list, never a shell, so corpus and output paths need no quoting.

>>> from lmpipe.lm.kenlm_tools import kenlm_available, run_lmplz
>>> if kenlm_available():                                       # doctest: +SKIP
...     run_lmplz(["a b c", "a b"], order=3, arpa_out="/tmp/x.arpa", extra_args=["--discount_fallback"])
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO

from lmpipe.pipelines.core.errors import MissingError

logger = logging.getLogger(__name__)

KENLM_VERSION = "0.3.0"
BINARIES = ("lmplz", "build_binary", "query")
BUILD_HINT = (
    "build them with `.ci/build_kenlm.sh` (needs cmake, g++ and the Boost/zlib/bz2/lzma dev packages)"
)


class KenLMNotFoundError(MissingError):
    """A KenLM binary is missing; the message lists every place searched and how to build it."""


class KenLMError(RuntimeError):
    """A KenLM binary exited non-zero; the message carries the tail of its stderr."""


def cache_bin_dir() -> Path:
    """Where ``.ci/build_kenlm.sh`` installs the binaries (kept in sync with that script)."""
    cache = os.environ.get("LMPIPE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "lmpipe")
    return Path(cache) / f"kenlm-{KENLM_VERSION}" / "bin"


def _candidates(name: str) -> list[tuple[str, Path | None]]:
    env_dir = os.environ.get("LMPIPE_KENLM_BIN")
    on_path = shutil.which(name)
    return [
        ("$LMPIPE_KENLM_BIN", Path(env_dir) / name if env_dir else None),
        ("PATH", Path(on_path) if on_path else None),
        ("cache", cache_bin_dir() / name),
    ]


def find_kenlm_binary(name: str) -> Path:
    """Return the path of KenLM binary ``name`` or raise :class:`KenLMNotFoundError` saying where we looked."""
    if name not in BINARIES:
        raise ValueError(f"unknown KenLM binary {name!r}; options are {list(BINARIES)}")
    searched = []
    for where, path in _candidates(name):
        if path is not None and path.is_file() and os.access(path, os.X_OK):
            return path
        searched.append(f"{where} ({path})" if path is not None else f"{where} (unset)")
    raise KenLMNotFoundError(f"KenLM binary {name!r} not found; searched {', '.join(searched)}; {BUILD_HINT}")


def kenlm_available(names: Sequence[str] = ("lmplz", "build_binary")) -> bool:
    """True when every binary in ``names`` can be found (used by tests to skip, and by the CLI to fail fast)."""
    try:
        for name in names:
            find_kenlm_binary(name)
    except KenLMNotFoundError:
        return False
    return True


def _run(cmd: list[str], stdin_lines: Iterable[str] | IO[bytes] | None = None) -> str:
    """Run ``cmd``; feed ``stdin_lines`` (str lines without newline, or a binary file) from a thread.

    stderr goes to a temporary file rather than a pipe: lmplz writes progress bars there, and a full pipe
    while we are still writing stdin would deadlock both processes.
    """
    logger.info("running %s", " ".join(cmd))
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(  # noqa: S603 -- argument list, no shell
            cmd, stdin=subprocess.PIPE if stdin_lines is not None else subprocess.DEVNULL, stderr=err
        )
        feeder_error: list[BaseException] = []
        if stdin_lines is not None:
            assert proc.stdin is not None

            def feed() -> None:
                try:
                    if hasattr(stdin_lines, "read"):
                        shutil.copyfileobj(stdin_lines, proc.stdin)  # type: ignore[arg-type]
                    else:
                        for line in stdin_lines:  # type: ignore[union-attr]
                            proc.stdin.write(line.encode("utf-8"))
                            proc.stdin.write(b"\n")
                except BrokenPipeError:  # the binary died; its stderr says why
                    pass
                except BaseException as exc:  # re-raised in the caller thread
                    feeder_error.append(exc)
                finally:
                    try:
                        proc.stdin.close()
                    except BrokenPipeError:
                        pass

            feeder = threading.Thread(target=feed, daemon=True)
            feeder.start()
            proc.wait()
            feeder.join()
        else:
            proc.wait()
        err.seek(0)
        stderr = err.read().decode("utf-8", errors="replace")
    if feeder_error:
        raise feeder_error[0]
    if proc.returncode != 0:
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        raise KenLMError(f"{Path(cmd[0]).name} exited with status {proc.returncode}:\n{tail}")
    return stderr


def run_lmplz(
    text: str | os.PathLike[str] | Iterable[str] | IO[bytes],
    order: int,
    arpa_out: str | os.PathLike[str],
    memory: str = "1G",
    extra_args: Sequence[str] = (),
    temp_prefix: str | os.PathLike[str] | None = None,
) -> str:
    """Estimate an ARPA model with ``lmplz -o order -S memory``; return lmplz's stderr (its statistics).

    ``text`` is a path to a corpus file (one sentence per line, whitespace-separated tokens), an iterable of
    such lines (without newlines), or a binary file object streamed to lmplz's stdin.  ``memory`` is passed to
    ``-S``; lmplz's own default (80% of RAM) makes it allocate for seconds even on tiny corpora, so we pin it.
    ``extra_args`` go through unchanged (e.g. ``["--discount_fallback"]``, ``["--prune", "0", "1"]``).
    Raises :class:`KenLMError` with lmplz's message (e.g. a BadDiscount explanation) on failure.
    """
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    cmd = [str(find_kenlm_binary("lmplz")), "-o", str(order), "-S", memory, "--arpa", os.fspath(arpa_out)]
    if temp_prefix is not None:
        cmd += ["-T", os.fspath(temp_prefix)]
    cmd += list(extra_args)
    if isinstance(text, (str, os.PathLike)):
        return _run(cmd + ["--text", os.fspath(text)])
    return _run(cmd, stdin_lines=text)


def run_build_binary(
    arpa: str | os.PathLike[str],
    binary_out: str | os.PathLike[str],
    kind: str = "probing",
    extra_args: Sequence[str] = (),
) -> str:
    """Convert an ARPA file to KenLM's mmap-able binary format (``probing`` or ``trie``); return stderr."""
    if kind not in ("probing", "trie"):
        raise ValueError(f"unknown build_binary data structure {kind!r}; options are ['probing', 'trie']")
    cmd = [str(find_kenlm_binary("build_binary")), *extra_args, kind, os.fspath(arpa), os.fspath(binary_out)]
    return _run(cmd)
