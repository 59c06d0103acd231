"""The run directory's guarantees without Ray: one run at a time (the lock), lmpipe deletes only what it
made (the marker), document ids independent of where the corpus lies, and tokenize/cooccur tasks that may
run twice (a Ray retry)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmpipe.pipelines.core.errors import UserError
from lmpipe.pipelines.ingest import find_sources, plan_chunks
from lmpipe.pipelines.run import run_pipeline
from lmpipe.pipelines.rundir import MARKER, ForeignFolderError, StageRun, check_replaceable, clean_stale
from lmpipe.pipelines.runlock import RunLock, RunLockedError
from lmpipe.pipelines.spec import load_spec

from .conftest import SPECS

HOLD = (
    "import sys, time; from lmpipe.pipelines.runlock import RunLock\n"
    "with RunLock(sys.argv[1], shared=sys.argv[2] == 'shared'):\n print('held', flush=True); time.sleep(60)\n"
)


def _holder(run_dir: Path, mode: str = "exclusive") -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir), mode], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_on_a_locked_directory_is_refused_naming_the_holder(tmp_path):
    """While another process holds RUN, ``run_pipeline`` fails at once (UserError: one line, exit 2) with the
    holder's pid and host, and touches nothing; once the holder is SIGKILLed its lock is taken over."""
    run_dir = tmp_path / "run"
    stale = run_dir / ".tokenize.tmp-0123456789ab"
    stale.mkdir(parents=True)
    (stale / MARKER).write_text("tokenize\n")
    proc = _holder(run_dir)
    try:
        with pytest.raises(RunLockedError) as err:
            run_pipeline(load_spec(SPECS / "tiny.yaml"), run_dir=run_dir, stages=["tokenize"])
        message = str(err.value)
        assert isinstance(err.value, UserError) and "\n" not in message
        assert f"pid {proc.pid}" in message and socket.gethostname() in message
        assert stale.exists() and not (run_dir / "spec.yaml").exists()  # the live run's folder is not touched
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with RunLock(run_dir):  # a dead holder's lock is free: flock dies with its process
        with RunLock(run_dir):  # re-entrant in one process
            pass
    assert json.loads((run_dir / ".lmpipe-lock").read_text() or "{}") == {}


def test_readers_share_the_lock_and_keep_a_run_out(tmp_path):
    """A reader (export, generate) holds the lock shared: other readers go on, a run is refused while it reads,
    and a reader is refused, naming the run, while a run holds it.  A reader never creates a run directory."""
    run_dir = tmp_path / "run"
    with RunLock(tmp_path / "missing", shared=True):
        pass
    assert not (tmp_path / "missing").exists()
    run_dir.mkdir()
    reader = _holder(run_dir, "shared")
    try:
        with RunLock(run_dir, shared=True):  # a second reader
            pass
        with pytest.raises(RunLockedError, match="one reading it"):
            run_pipeline(load_spec(SPECS / "tiny.yaml"), run_dir=run_dir, stages=["tokenize"])
        assert not (run_dir / "spec.yaml").exists()
    finally:
        reader.send_signal(signal.SIGKILL)
        reader.wait()
    writer = _holder(run_dir)
    try:
        with pytest.raises(RunLockedError, match=f"pid {writer.pid} on host") as err:
            with RunLock(run_dir, shared=True):
                pass
        assert "--run-dir" not in str(err.value)  # a reader cannot choose another run directory
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    with RunLock(run_dir):
        with RunLock(run_dir, shared=True):  # a reader nested in this process's run: already satisfied
            pass


def _sgns_run(run_dir: Path) -> None:
    """A run directory with a finished sgns stage (three words), enough for ``embeddings export``."""
    import numpy as np

    from lmpipe.embeddings.vectors import Vectors

    vectors = Vectors(["a", "b", "c"], np.eye(3, dtype=np.float32), np.array([3, 2, 1]), source="sgns")
    vectors.save(run_dir / "sgns" / "vectors")
    (run_dir / "sgns" / "manifest.json").write_text(json.dumps({"status": "complete"}))


@pytest.mark.parametrize("command", ["export", "generate", "neighbors", "analogy", "eval", "score"])
def test_readers_are_refused_while_a_run_writes(tmp_path, capsys, command):
    """Before: they read the stage's files while a run replaced them (a vocabulary of one run, vectors of the
    next).  Now one line, exit 2, naming the run that holds the directory; afterwards export works."""
    from lmpipe.pipelines.cli import main

    run_dir = tmp_path / "run"
    _sgns_run(run_dir)
    text = tmp_path / "new.txt"
    text.write_text("a b\n")
    argv = {
        "export": ["embeddings", "export", str(run_dir), "--format", "glove", "--out", str(tmp_path / "v.txt")],
        "generate": ["generate", str(run_dir), "--max-tokens", "3"],
        "neighbors": ["embeddings", "neighbors", str(run_dir), "a"],
        "analogy": ["embeddings", "analogy", str(run_dir), "--positive", "a", "b", "--negative", "c"],
        "eval": ["eval", str(run_dir)],
        "score": ["score", str(run_dir), "--model", "kn3", "--input", str(text)],
    }[command]
    writer = _holder(run_dir)
    try:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"in use by lmpipe pid {writer.pid}" in err and err.count("\n") == 1
        assert not (tmp_path / "v.txt").exists()
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    if command == "export":
        assert main(argv) == 0 and (tmp_path / "v.txt").read_text().split("\n")[0] == "a 1 0 0"


def test_the_python_api_loads_under_the_shared_lock(tmp_path):
    from lmpipe import Run

    run_dir = tmp_path / "run"
    _sgns_run(run_dir)
    (run_dir / "spec.yaml").write_text("name: x\ncorpus:\n  train: t.txt\n")
    writer = _holder(run_dir)
    try:
        with pytest.raises(RunLockedError, match=f"in use by lmpipe pid {writer.pid}"):
            Run(run_dir).vectors()
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert Run(run_dir).vectors().tokens[:3] == ["a", "b", "c"]


def test_lock_holder_details_are_recorded_while_held(tmp_path):
    with RunLock(tmp_path):
        info = json.loads((tmp_path / ".lmpipe-lock").read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        assert abs(info["started"] - time.time()) < 60


def test_clean_stale_removes_only_marked_temporary_folders(tmp_path):
    """A crashed stage's marked ``.X.tmp-*`` folder goes; a user's look-alike hidden folder stays."""
    crashed = StageRun(tmp_path, "tokenize", "f" * 64, {}, {}).tmp_dir
    users = tmp_path / ".tokenize.tmp-mine"
    users.mkdir()
    (users / "notes.txt").write_text("keep me")
    forged = tmp_path / ".ngram.tmp-forged"
    forged.mkdir()
    (forged / MARKER).write_text("tokenize\n")  # marker of another stage: not this folder's
    clean_stale(tmp_path)
    assert not crashed.exists()
    assert (users / "notes.txt").read_text() == "keep me" and forged.exists()


def test_a_foreign_stage_named_folder_is_refused_not_deleted(tmp_path):
    """A user's own ``RUN/tokenize/notes.txt``: the commit refuses naming it, and the file survives."""
    (tmp_path / "tokenize").mkdir()
    (tmp_path / "tokenize" / "notes.txt").write_text("mine")
    run = StageRun(tmp_path, "tokenize", "f" * 64, {}, {})
    with pytest.raises(ForeignFolderError, match=r"tokenize: not made by lmpipe"):
        run.commit({})
    assert (tmp_path / "tokenize" / "notes.txt").read_text() == "mine"
    (tmp_path / "ngram").write_text("a file")
    with pytest.raises(ForeignFolderError, match="ngram"):
        check_replaceable(tmp_path, "ngram")


def test_stage_folders_are_marked_and_old_ones_proven_by_their_manifest_still_replace(tmp_path):
    run = StageRun(tmp_path, "tokenize", "a" * 64, {}, {})
    run.commit({})
    assert (tmp_path / "tokenize" / MARKER).read_text() == "tokenize\n"
    # a folder made before the marker existed: its manifest proves it is lmpipe's
    (tmp_path / "tokenize" / MARKER).unlink()
    check_replaceable(tmp_path, "tokenize")
    manifest = StageRun(tmp_path, "tokenize", "b" * 64, {}, {}).commit({})
    assert manifest["fingerprint"] == "b" * 64
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tokenize")] == []


def test_a_run_refuses_before_work_when_a_stage_folder_is_foreign(tmp_path):
    (tmp_path / "tokenize").mkdir()
    (tmp_path / "tokenize" / "notes.txt").write_text("mine")
    with pytest.raises(ForeignFolderError, match="notes|not made by lmpipe"):
        run_pipeline(load_spec(SPECS / "tiny.yaml"), run_dir=tmp_path, stages=["tokenize"])
    assert list((tmp_path / "tokenize").iterdir()) == [tmp_path / "tokenize" / "notes.txt"]


def _copy_corpus(dest: Path) -> Path:
    shutil.copytree(SPECS / "tiny", dest / "tiny")
    spec = (SPECS / "tiny.yaml").read_text()
    (dest / "tiny.yaml").write_text(spec)
    return dest / "tiny.yaml"


def test_document_ids_do_not_depend_on_where_the_corpus_lies(tmp_path):
    """The same files under two roots (single files, a folder, a glob): the same document hashes."""
    hashes = []
    for root in ("a", "deeper/b"):
        spec = load_spec(_copy_corpus(tmp_path / root))
        sources = find_sources(spec.corpus)
        hashes.append([(s.name, s.doc_hash) for split in sources.values() for s in split])
    assert hashes[0] == hashes[1]
    assert len({h for _, h in hashes[0]}) == 3  # three files, three documents

    from lmpipe.pipelines.spec import parse_spec

    def _folder_hashes(root: Path, pattern: str) -> list[int]:
        spec = parse_spec({"name": "x", "corpus": {"train": str(root / pattern)}})
        return [s.doc_hash for s in find_sources(spec.corpus)["train"]]

    for pattern in ("tiny", "tiny/*.txt", "**/train.txt"):
        assert _folder_hashes(tmp_path / "a", pattern) == _folder_hashes(tmp_path / "deeper" / "b", pattern), pattern


def _job(tmp_path: Path):
    import dataclasses

    import pyarrow as pa

    from lmpipe.pipelines.encode import ChunkJob

    spec = load_spec(SPECS / "tiny.yaml")
    chunks = plan_chunks(find_sources(spec.corpus)["train"], 4096)
    job = ChunkJob(corpus=spec.corpus, normalize=spec.normalize, tokenizer=spec.tokenizer, shard_bytes=1 << 20,
                   compression="none", out_dir=str(tmp_path))  # fmt: skip
    return chunks, dataclasses.replace(job, vocab_tokens=pa.array(["<unk>", "<s>", "</s>", "the", "and"]))


def test_a_retried_tokenize_pass_2_task_gives_the_same_shards(tmp_path):
    """Pass 2 run twice on one chunk (a Ray retry after its worker died): the second succeeds and writes
    the same bytes -- it used to find its intermediates deleted (FileNotFoundError)."""
    from lmpipe.pipelines.encode import finalize_chunk, prepare_chunk

    chunks, job = _job(tmp_path)
    prepare_chunk(chunks[0], job)
    first = finalize_chunk(chunks[0], job)
    again = finalize_chunk(chunks[0], job)
    assert first.shards == again.shards and first.counts == again.counts and first.shards


def test_a_retried_cooccur_merge_task_gives_the_same_partition(tmp_path):
    """The reduce task run twice: the same file and counts (it used to delete its pieces, so a retry
    silently wrote an empty partition)."""
    import numpy as np

    from lmpipe.embeddings.cooccur import partial_table
    from lmpipe.pipelines.core.files import read_table, write_table
    from lmpipe.pipelines.partitions import part_dir
    from lmpipe.pipelines.stages.cooccur import _merge_task

    work, out = tmp_path / "work", tmp_path / "out"
    keys = np.array([3, 7, 7, 9], np.uint64)
    units = np.array([1, 2, 3, 4], np.uint64)
    write_table(part_dir(work, 0) / "piece-00000.arrow", partial_table(keys[:2], units[:2]))
    write_table(part_dir(work, 0) / "piece-00001.arrow", partial_table(keys[2:], units[2:]))
    first = _merge_task(str(work), str(out), 0, 1)
    table = read_table(out / "part-0000.arrow")
    again = _merge_task(str(work), str(out), 0, 1)
    same = ("partition", "nonzeros", "total_units", "file")
    assert {k: first.get(k) for k in same} == {k: again.get(k) for k in same}
    assert first["nonzeros"] == 3 and read_table(out / "part-0000.arrow").equals(table)
