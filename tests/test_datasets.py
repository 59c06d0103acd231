"""Tests for pipelines.datasets (registry, fetch, resolve): the registry, mirror copy/resolve, and downloads from file:// URLs.

Mirror tests read ``$LMPIPE_DATA_MIRROR`` (CI sets it to ../shared/data) and skip without it.  Download
tests build their own zip / tar.gz / gz in tmp_path and register a toy dataset.  No test touches the
network: an autouse fixture makes every socket connect fail.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import tarfile
import zipfile
from pathlib import Path

import pytest

from lmpipe.pipelines.datasets import fetch as fetch_module
from lmpipe.pipelines.datasets import registry as ds
from lmpipe.pipelines.datasets import resolve as resolve_module
from lmpipe.pipelines.datasets.fetch import HOME_ENV, MARKER, MIRROR_ENV, fetch
from lmpipe.pipelines.datasets.resolve import resolve

MIRROR = os.environ.get("LMPIPE_DATA_MIRROR")
MIRROR_ONLY = {"brown", "bbc-news", "kjv", "embedding-eval"}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(root: Path) -> list[Path]:
    """Temp files that an aborted install must not leave behind."""
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")] if root.exists() else []


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty cache, no mirror from the environment, a fresh verification memo, and no network."""
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    monkeypatch.setattr(resolve_module, "_VERIFIED", set())

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("tests must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def mirror() -> Path:
    if not MIRROR:
        pytest.skip("LMPIPE_DATA_MIRROR is not set (CI sets it to ../shared/data)")
    return Path(MIRROR)


def copy_into(src_root: Path, dst_root: Path, *paths: str) -> None:
    """Copy files or trees between data roots; copyfile drops the mirror's read-only mode."""
    for path in paths:
        src = src_root / path
        for f in [src] if src.is_file() else [p for p in src.rglob("*") if p.is_file()]:
            (dst_root / f.relative_to(src_root)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dst_root / f.relative_to(src_root))


# ------------------------------------------------------------------------------------------- registry
def test_registry_lists_required_datasets() -> None:
    """Every dataset lmpipe promises is registered; mirror-only ones are exactly the mirror-only sets."""
    names = [d.name for d in ds.list_datasets()]
    assert names == [
        "ptb", "wikitext-2", "wikitext-103", "text8", "conll2003", "conll2000", "ud-en-ewt",
        "brown", "bbc-news", "kjv", "embedding-eval",
    ]  # fmt: skip
    for d in ds.list_datasets():
        assert d.mirror_only == (d.name in MIRROR_ONLY)
        assert all(s.url.startswith("https://") for s in d.sources)
    assert ds.get("ptb").splits == {
        "train": "ptb/ptb.train.txt",
        "valid": "ptb/ptb.valid.txt",
        "test": "ptb/ptb.test.txt",
    }
    assert ds.get("conll2003").splits["test"] == "conll2003/eng.testb"


def test_registry_checksums_match_mirror_sha256sums(mirror: Path) -> None:
    """Every pinned sha256 equals SHA256SUMS, trees included, and every mirrored file is registered."""
    listed = {}
    for line in (mirror / "SHA256SUMS").read_text().splitlines():
        value, _, path = line.partition("  ")
        listed[path.removeprefix("./")] = value
    covered = set()
    for d in ds.list_datasets():
        for f in d.files:
            if f.path in listed:
                assert f.sha256 == listed[f.path], f.path
                covered.add(f.path)
            else:
                assert d.name in {"wikitext-2", "wikitext-103", "text8"}, f"{f.path} is not mirrored"
        for tree in d.trees:
            under = {p: v for p, v in listed.items() if p.startswith(f"{tree.path}/")}
            assert len(under) == tree.n_files
            assert fetch_module._tree_digest(under) == tree.sha256
            covered |= under.keys()
    assert covered == set(listed)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ds.DataFile(path="../etc/passwd"), "without '..'"),
        (lambda: ds.DataFile(path="x/y", sha256="ABC"), "lowercase hex"),
        (lambda: ds.Source(url="https://x/y.zip", kind="zip", target="x/y"), "needs members only"),
        (lambda: ds.Source(url="https://x/y.rar", kind="rar", target="x/y"), "options are"),  # type: ignore[arg-type]
        (
            lambda: ds.Dataset(
                name="a", description="", license="", homepage="", files=(ds.DataFile(path="b/c"),)
            ),
            "must lie under a/",
        ),
        (
            lambda: ds.Dataset(
                name="a",
                description="",
                license="",
                homepage="",
                files=(ds.DataFile(path="a/c"),),
                sources=(ds.Source(url="https://x/d", target="a/d"),),
            ),
            "sources must produce exactly the files",
        ),
    ],
)
def test_registry_entries_are_validated(build, message: str) -> None:
    """A malformed registry entry fails at import time, saying what is wrong."""
    with pytest.raises(ValueError, match=message):
        build()


def test_unknown_names_list_the_valid_options() -> None:
    """Unknown datasets list every registered name; unknown splits list the dataset's splits and paths."""
    with pytest.raises(ds.UnknownDatasetError) as e:
        fetch("penn-treebank", progress=False)
    for d in ds.list_datasets():
        assert repr(d.name) in str(e.value)
    with pytest.raises(ds.UnknownDatasetError, match="wikitext-103"):
        resolve("data:wikitext/train")
    with pytest.raises(ds.UnknownDatasetError, match=r"splits are \['test', 'train', 'valid'\]"):
        resolve("data:ptb/dev")
    for bad in ("data:ptb", "data:ptb/../ptb/ptb.train.txt", "ptb/train"):
        with pytest.raises(ds.UnknownDatasetError):
            resolve(bad)
    assert ds.is_data_ref("data:ptb/train") and not ds.is_data_ref("corpus/ptb.txt")


# --------------------------------------------------------------------------------------------- mirror
@pytest.mark.parametrize("name", ["ptb", "conll2000"])
def test_fetch_from_mirror_copies_verified_files_once(mirror: Path, tmp_path: Path, name: str) -> None:
    """fetch --mirror copies every file into dest, checks its sha256, writes the marker, and is idempotent."""
    dest = tmp_path / "dest"
    assert fetch(name, dest=dest, mirror=mirror, progress=False) == dest / name
    files = ds.get(name).files
    for f in files:
        assert sha256((dest / f.path).read_bytes()) == f.sha256
    marker = json.loads((dest / name / MARKER).read_text())
    assert marker["sha256"] == {f.path: f.sha256 for f in files}
    assert marker["fingerprint"] == ds.get(name).fingerprint
    before = {f.path: (dest / f.path).stat().st_mtime_ns for f in files}
    fetch(name, dest=dest, mirror=mirror, progress=False)
    assert {f.path: (dest / f.path).stat().st_mtime_ns for f in files} == before


def test_resolve_reads_the_mirror_in_place(mirror: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Splits, relative paths and tree splits resolve to the mirror's own files, verified once per process."""
    assert resolve("data:ptb/train", mirror=mirror) == mirror / "ptb/ptb.train.txt"
    assert resolve("data:conll2003/eng.testa", mirror=mirror) == mirror / "conll2003/eng.testa"
    assert resolve("data:brown/all", mirror=mirror) == mirror / "brown"
    assert resolve("data:brown/ca01", mirror=mirror) == mirror / "brown/ca01"
    monkeypatch.setenv(MIRROR_ENV, str(mirror))
    assert resolve("data:conll2000/test") == mirror / "conll2000/test.txt"
    hashed = []
    monkeypatch.setattr(resolve_module, "hash_file", lambda path: hashed.append(path))
    resolve("data:ptb/train")
    resolve("data:conll2000/test")
    assert hashed == []


def test_resolve_falls_back_to_the_cache(mirror: Path, tmp_path: Path) -> None:
    """A mirror that lacks the file is skipped in favour of a fetched cache."""
    fetch("ptb", mirror=mirror, progress=False)  # into $LMPIPE_DATA_HOME
    cached = tmp_path / "cache/ptb/ptb.valid.txt"
    assert resolve("data:ptb/valid") == cached
    (tmp_path / "empty-mirror").mkdir()
    assert resolve("data:ptb/valid", mirror=tmp_path / "empty-mirror") == cached


def test_resolve_without_data_says_how_to_fetch(tmp_path: Path) -> None:
    """With neither a mirror nor a fetched cache, the error gives the fetch command."""
    with pytest.raises(ds.DataNotFoundError, match=r"lmpipe data fetch ptb.*--mirror"):
        resolve("data:ptb/train")
    partial = tmp_path / "cache/ptb/ptb.train.txt"  # a file without a marker is not trusted
    partial.parent.mkdir(parents=True)
    partial.write_text("a partial copy\n")
    with pytest.raises(ds.DataNotFoundError, match="lmpipe data fetch ptb"):
        resolve("data:ptb/train")


def test_corrupt_mirror_file_is_rejected_by_name(mirror: Path, tmp_path: Path) -> None:
    """A corrupted mirror copy fails fetch and resolve, naming the file and both hashes; nothing is installed."""
    bad = tmp_path / "bad-mirror"
    copy_into(mirror, bad, "ptb")
    corrupt = bad / "ptb/ptb.valid.txt"
    corrupt.write_bytes(corrupt.read_bytes().replace(b"the", b"teh", 1))
    expected, actual = ds.get("ptb").splits["valid"], sha256(corrupt.read_bytes())
    expected = next(f.sha256 for f in ds.get("ptb").files if f.path == expected)
    dest = tmp_path / "dest"
    with pytest.raises(ds.ChecksumError) as e:
        fetch("ptb", dest=dest, mirror=bad, progress=False)
    assert "ptb/ptb.valid.txt" in str(e.value) and expected in str(e.value) and actual in str(e.value)
    assert not (dest / "ptb/ptb.valid.txt").exists() and not (dest / "ptb" / MARKER).exists()
    assert leftovers(dest) == []
    with pytest.raises(ds.ChecksumError, match="ptb.valid.txt"):
        resolve("data:ptb/valid", mirror=bad)
    assert resolve("data:ptb/train", mirror=bad) == bad / "ptb/ptb.train.txt"


def test_corrupt_file_in_a_tree_is_named(mirror: Path, tmp_path: Path) -> None:
    """A tree's single digest still names the culprit when the mirror carries SHA256SUMS."""
    bad = tmp_path / "bad-mirror"
    copy_into(mirror, bad, "brown")
    (bad / "brown/cb01").write_bytes(b"not the brown corpus\n")
    with pytest.raises(ds.ChecksumError, match="tree sha256") as e:
        resolve("data:brown/all", mirror=bad)
    assert "brown/ (503 files)" in str(e.value)
    sums = [ln for ln in (mirror / "SHA256SUMS").read_text().splitlines() if "./brown/" in ln]
    (bad / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    with pytest.raises(ds.ChecksumError) as e:
        fetch("brown", dest=tmp_path / "dest", mirror=bad, progress=False)
    assert e.value.what == str(bad / "brown/cb01")
    assert e.value.actual == sha256(b"not the brown corpus\n")


def test_mirror_only_dataset_needs_a_mirror() -> None:
    """Without a mirror, a mirror-only dataset says so instead of trying the network."""
    with pytest.raises(ds.DataNotFoundError, match=r"mirror-only.*--mirror"):
        fetch("kjv", progress=False)


def test_mirror_without_the_dataset_does_not_download(tmp_path: Path) -> None:
    """A mirror is authoritative: a missing dataset is an error naming the files, never a network fallback."""
    (tmp_path / "m").mkdir()
    with pytest.raises(ds.DataNotFoundError, match="lacks text8/text8"):
        fetch("text8", mirror=tmp_path / "m", progress=False)
    with pytest.raises(ds.DataNotFoundError, match="not a directory"):
        fetch("ptb", mirror=tmp_path / "nowhere", progress=False)


# ------------------------------------------------------------------------------------------- download
FILES = {"toy/a.txt": b"alpha beta\n" * 300, "toy/b.txt": b"gamma\n" * 120}
KINDS = ["file", "gz", "zip", "tar.gz"]


def toy_dataset(upstream: Path, kind: str) -> ds.Dataset:
    """A two-file dataset served from file:// URLs, packed as ``kind``, with correct checksums."""
    upstream.mkdir(parents=True, exist_ok=True)
    members = tuple((f"toy-1.0/{Path(p).name}", p) for p in FILES)
    if kind in ("file", "gz"):
        sources = []
        for path, data in FILES.items():
            blob = gzip.compress(data) if kind == "gz" else data
            blob_path = upstream / (Path(path).name + (".gz" if kind == "gz" else ""))
            blob_path.write_bytes(blob)
            sources.append(ds.Source(url=blob_path.as_uri(), kind=kind, target=path, sha256=sha256(blob)))
    else:
        archive = upstream / f"toy-1.0.{kind}"
        if kind == "zip":
            with zipfile.ZipFile(archive, "w") as zf:
                for member, path in members:
                    zf.writestr(member, FILES[path])
        else:
            with tarfile.open(archive, "w:gz") as tf:
                for member, path in members:
                    info = tarfile.TarInfo(member)
                    info.size = len(FILES[path])
                    tf.addfile(info, io.BytesIO(FILES[path]))
        sources = [
            ds.Source(url=archive.as_uri(), kind=kind, members=members, sha256=sha256(archive.read_bytes()))
        ]
    return ds.Dataset(
        name="toy",
        description="two tiny files",
        license="test",
        homepage="",
        files=tuple(ds.DataFile(path=p, split=Path(p).stem, sha256=sha256(d)) for p, d in FILES.items()),
        sources=tuple(sources),
    )


@pytest.mark.parametrize("kind", KINDS)
def test_download_extracts_verifies_and_never_refetches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """A download lands verified in the cache, extracted, with a marker; a second fetch downloads nothing."""
    monkeypatch.setitem(ds._REGISTRY, "toy", toy_dataset(tmp_path / "upstream", kind))
    cache = tmp_path / "cache"
    assert fetch("toy", progress=False) == cache / "toy"
    for path, data in FILES.items():
        assert (cache / path).read_bytes() == data
    assert not (cache / "toy/.download").exists() and leftovers(cache) == []
    assert json.loads((cache / "toy" / MARKER).read_text())["sha256"] == {
        p: sha256(d) for p, d in FILES.items()
    }
    assert resolve("data:toy/a") == cache / "toy/a.txt"
    before = {p: (cache / p).stat().st_mtime_ns for p in FILES}
    shutil.rmtree(tmp_path / "upstream")  # any download attempt would now fail
    assert fetch("toy", progress=False) == cache / "toy"
    assert {p: (cache / p).stat().st_mtime_ns for p in FILES} == before


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("algorithm", ["sha256", "md5"])
def test_download_checksum_mismatch_installs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, algorithm: str
) -> None:
    """Downloaded bytes that differ from the pinned digest raise ChecksumError naming the URL."""
    toy = toy_dataset(tmp_path / "upstream", kind)
    wrong = {algorithm: "0" * (64 if algorithm == "sha256" else 32)}
    toy = dataclasses.replace(toy, sources=(dataclasses.replace(toy.sources[0], **wrong), *toy.sources[1:]))
    monkeypatch.setitem(ds._REGISTRY, "toy", toy)
    with pytest.raises(ds.ChecksumError) as e:
        fetch("toy", progress=False)
    assert e.value.what == toy.sources[0].url and e.value.algorithm == algorithm
    assert wrong[algorithm] in str(e.value)
    cache = tmp_path / "cache"
    assert not (cache / "toy" / MARKER).exists() and not (cache / "toy/a.txt").exists()
    assert leftovers(cache) == []


@pytest.mark.parametrize("kind", KINDS)
def test_extracted_file_mismatch_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """An intact archive whose member differs from the pinned file digest names that file."""
    toy = toy_dataset(tmp_path / "upstream", kind)
    toy = dataclasses.replace(toy, files=(dataclasses.replace(toy.files[0], sha256="f" * 64), toy.files[1]))
    monkeypatch.setitem(ds._REGISTRY, "toy", toy)
    with pytest.raises(ds.ChecksumError, match="toy/a.txt") as e:
        fetch("toy", progress=False)
    assert e.value.expected == "f" * 64 and e.value.actual == sha256(FILES["toy/a.txt"])
    assert not (tmp_path / "cache/toy" / MARKER).exists() and leftovers(tmp_path / "cache") == []


def test_registry_change_makes_the_cache_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A marker written under other pins does not count: the dataset is fetched again."""
    toy = toy_dataset(tmp_path / "upstream", "zip")
    monkeypatch.setitem(ds._REGISTRY, "toy", toy)
    fetch("toy", progress=False)
    md5 = hashlib.md5(FILES["toy/a.txt"]).hexdigest()
    pinned = dataclasses.replace(toy, files=(dataclasses.replace(toy.files[0], md5=md5), toy.files[1]))
    monkeypatch.setitem(ds._REGISTRY, "toy", pinned)
    with pytest.raises(ds.DataNotFoundError, match="lmpipe data fetch toy"):
        resolve("data:toy/a")
    fetch("toy", progress=False)
    assert json.loads((tmp_path / "cache/toy" / MARKER).read_text())["fingerprint"] == pinned.fingerprint


def test_missing_member_and_unreachable_url_are_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An archive without a listed member names what it has; a failed download points at --mirror."""
    toy = toy_dataset(tmp_path / "upstream", "zip")
    renamed = tuple((m.replace("toy-1.0", "toy-2.0"), p) for m, p in toy.sources[0].members)
    renamed_source = dataclasses.replace(toy.sources[0], members=renamed)
    monkeypatch.setitem(ds._REGISTRY, "toy", dataclasses.replace(toy, sources=(renamed_source,)))
    with pytest.raises(ds.DatasetError, match=r"no regular file 'toy-2.0/a.txt'.*toy-1.0/a.txt"):
        fetch("toy", progress=False)
    gone = dataclasses.replace(toy.sources[0], url=(tmp_path / "nowhere.zip").as_uri())
    monkeypatch.setitem(ds._REGISTRY, "toy", dataclasses.replace(toy, sources=(gone,)))
    with pytest.raises(ds.DatasetError, match=r"download of .*nowhere.zip failed.*--mirror"):
        fetch("toy", progress=False)
    assert leftovers(tmp_path / "cache") == []
