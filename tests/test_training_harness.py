"""cluster.training as plain functions: one RNG capture, the declared policy for resuming at another world
size, the end-of-epoch helper (non-finite stop, checkpoint, stop-after), job (de)serialisation by field types,
spec -> config by field names, and the manifest's workers record."""

from __future__ import annotations

import dataclasses
import json
import logging
import random

import numpy as np
import pytest
import torch

from lmpipe.cluster.process import WorkersRecord, process_info
from lmpipe.cluster.training import (
    CHECKPOINT_VERSION,
    Checkpoints,
    StopAfterEpoch,
    WorkerGroup,
    capture_rng,
    commit_checkpoint,
    config_from,
    end_epoch,
    from_config,
    latest_checkpoint,
    load_numpy_state,
    placement,
    rank_seed,
    restore_rng,
    to_config,
)
from lmpipe.embeddings.sgns import SGNSConfig
from lmpipe.embeddings.train import TrainJob
from lmpipe.lm.tagging.models import TaggerConfig
from lmpipe.lm.tagging.train import OptimConfig, TaggerJob, TaskData
from lmpipe.pipelines.spec import SgnsSpec

CPU = torch.device("cpu")
ONE = WorkerGroup(0, 1, CPU, False)


def _draws() -> tuple[float, float, list[float]]:
    return random.random(), float(np.random.random()), torch.rand(3).tolist()


def test_rng_capture_restores_python_numpy_and_torch_streams(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = capture_rng(CPU)
    torch.save(state, tmp_path / "rng.pt")
    first = _draws()
    _draws()
    restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True), CPU)  # the checkpoints' loader
    assert _draws() == first


def _two_rank_checkpoint(folder, epoch: int = 1) -> None:
    """A checkpoint as two workers write it (rank 1's streams differ from rank 0's)."""
    ranks = []
    for seed in (10, 11):
        torch.manual_seed(seed)
        ranks.append({"rng": capture_rng(CPU), "words_done": seed})
    meta = {"format": "lmpipe.sgns-checkpoint", "version": CHECKPOINT_VERSION, "world_size": 2}
    commit_checkpoint(
        folder, epoch, lambda f: torch.save({"shared": {"w": torch.ones(2)}, "ranks": ranks}, f / "state.pt"), meta
    )


def test_same_world_size_restores_this_ranks_streams(tmp_path):
    _two_rank_checkpoint(tmp_path)
    torch.manual_seed(11)
    expected = torch.rand(4)
    rank1 = WorkerGroup(1, 2, CPU, False)
    resumed = Checkpoints(tmp_path, "sgns", rank1, seed=5).resume()
    assert resumed.epoch == 1 and torch.equal(resumed.state["w"], torch.ones(2))
    assert resumed.rank_state == {"words_done": 11}
    assert torch.equal(torch.rand(4), expected)


def test_another_world_size_resumes_with_fresh_streams_and_says_so(tmp_path, caplog):
    """The declared policy: the shared state carries over, this rank's streams are reseeded from
    (seed, rank, epoch), a warning names both world sizes."""
    _two_rank_checkpoint(tmp_path, epoch=3)
    torch.manual_seed(rank_seed(5, 0, 3))
    expected = torch.rand(4)
    with caplog.at_level(logging.WARNING, logger="lmpipe.cluster.training"):
        resumed = Checkpoints(tmp_path, "sgns", ONE, seed=5).resume()
    assert resumed.epoch == 3 and resumed.rank_state is None and torch.equal(resumed.state["w"], torch.ones(2))
    assert torch.equal(torch.rand(4), expected)
    assert "written by 2 worker(s), resuming with 1" in caplog.text


def test_a_checkpoint_of_another_format_or_version_is_refused(tmp_path):
    commit_checkpoint(tmp_path, 1, lambda f: None, {"format": "lmpipe.sgns-checkpoint", "version": 1, "world_size": 1})
    with pytest.raises(ValueError, match=r"not a sgns checkpoint of version 2 .*remove .* to start over"):
        Checkpoints(tmp_path, "sgns", ONE, seed=1).resume()
    with pytest.raises(ValueError, match="not a glove checkpoint"):
        Checkpoints(tmp_path, "glove", ONE, seed=1).resume()


def _end(checkpoints, epoch, value, **kw):
    end_epoch(
        checkpoints, epoch, 3, figure=("loss", value), shared=lambda: {"w": torch.full((2,), float(epoch))},
        metrics={"epoch": epoch}, log=f"epoch {epoch}", hint="lower x.lr", **kw,
    )  # fmt: skip


def test_end_epoch_checkpoints_stops_after_and_refuses_a_non_finite_figure(tmp_path):
    checkpoints = Checkpoints(tmp_path, "sgns", ONE, seed=1)
    _end(checkpoints, 1, 0.5, rank_state={"words_done": 7})
    with pytest.raises(StopAfterEpoch, match="after epoch 2 of 3"):
        _end(checkpoints, 2, 0.4, stop_after_epoch=2)
    assert latest_checkpoint(tmp_path).name == "epoch-002"
    resumed = checkpoints.resume()
    assert resumed.epoch == 2 and torch.equal(resumed.state["w"], torch.full((2,), 2.0))
    assert resumed.rank_state == {}  # epoch 2 recorded no rank state
    with pytest.raises(FloatingPointError, match=r"sgns: the loss became nan in epoch 3; .*\(epoch 2\); lower x.lr"):
        _end(checkpoints, 3, float("nan"))
    assert latest_checkpoint(tmp_path).name == "epoch-002"  # the bad epoch is not checkpointed


def test_jobs_round_trip_through_ray_dicts_and_json():
    job = TaggerJob(
        data_dir="d", tasks=(TaskData(name="ner", kind="span", tags=("O", "B-PER"), train_tags=2, splits=("train",)),),
        model=TaggerConfig(vocab_size=10, tasks=(("ner", 2),)), optim=OptimConfig(lr=0.1), out_dir="o",
        checkpoint_dir="c", threads=1, use_gpu=False,
    )  # fmt: skip
    assert from_config(TaggerJob, to_config(job)) == job
    assert from_config(TaggerJob, json.loads(json.dumps(to_config(job)))) == job  # lists become tuples again


def test_spec_sections_map_to_configs_by_field_name():
    spec = SgnsSpec(dim=7, window=3, negative=4, sample=0.0, alpha=0.1, epochs=2, batch_pairs=64, shared_negatives=2,
                    seed=9, min_count=2, threads=2, syncs_per_epoch=3)  # fmt: skip
    config = config_from(SGNSConfig, spec)
    assert config == SGNSConfig(
        dim=7, window=3, negative=4, sample=0.0, alpha=0.1, epochs=2, batch_pairs=64, shared_negatives=2, seed=9
    )
    job = config_from(TrainJob, spec, vocab_path="v", shards=(), out_dir="o", checkpoint_dir="c", config=config)
    assert (job.sync, job.min_count, job.threads, job.syncs_per_epoch, job.overlap_sync) == ("sum", 2, 2, 3, True)
    with pytest.raises(TypeError):  # a job setting no source holds is an error, not a silent default
        config_from(TrainJob, object(), vocab_path="v", shards=(), out_dir="o", checkpoint_dir="c", config=config)


def test_workers_record_is_one_type_and_reads_older_manifests():
    rows = placement(ONE)
    assert rows == [{**process_info(), "peak_rss_mb": rows[0]["peak_rss_mb"]}]
    record = WorkersRecord(1, tuple(rows))
    assert WorkersRecord.from_json(json.loads(json.dumps(record.to_json()))) == record
    assert WorkersRecord.from_json(2) == WorkersRecord(2)  # sgns/glove/lm manifests before the record
    assert WorkersRecord.from_json(rows + rows).count == 2  # the tagger's list of process_info rows
    assert dataclasses.asdict(record)["count"] == 1


def test_end_epoch_can_skip_the_last_epochs_checkpoint(tmp_path):
    """checkpoint_last=False writes every epoch but the last (whose output the loop writes right after)."""
    checkpoints = Checkpoints(tmp_path, "sgns", ONE, seed=1)
    for epoch in (1, 2):
        _end(checkpoints, epoch, 0.5, checkpoint_last=False)
        assert latest_checkpoint(tmp_path).name == f"epoch-{epoch:03d}"
    _end(checkpoints, 3, 0.5, checkpoint_last=False)
    assert latest_checkpoint(tmp_path).name == "epoch-002"
    _end(checkpoints, 3, 0.5)
    assert latest_checkpoint(tmp_path).name == "epoch-003"


def test_numpy_storage_round_trips_arrays_streams_and_big_ints_without_pickle(tmp_path):
    """storage="numpy": arrays in .npy files, the rest in state.json; the ranks' streams restored exactly; a
    tensor is stored as its host array; a checkpoint of the other storage is refused with the fix."""
    checkpoints = Checkpoints(tmp_path, "sgns", ONE, seed=1, storage="numpy")
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    pcg = np.random.default_rng(7).bit_generator.state  # a 128-bit int inside
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    end_epoch(
        checkpoints, 1, 3, figure=("loss", 0.5), shared=lambda: {"w": w, "t": torch.ones(2)},
        rank_state={"sampling": {"rng": pcg, "generator": np.random.MT19937(5).state}, "words_done": 9},
        metrics={}, log="epoch 1",
    )  # fmt: skip
    first = _draws()
    folder = latest_checkpoint(tmp_path)
    assert (folder / "state.json").is_file() and not (folder / "state.pt").exists()
    assert json.loads((folder / "meta.json").read_text())["storage"] == "numpy"
    resumed = checkpoints.resume()
    assert _draws() == first  # python, numpy and torch streams restored
    assert np.array_equal(resumed.state["w"], w) and resumed.state["w"].dtype == np.float32
    assert np.array_equal(resumed.state["t"], [1.0, 1.0])
    assert resumed.rank_state["words_done"] == 9 and resumed.rank_state["sampling"]["rng"] == pcg
    mt = np.random.MT19937(0)
    mt.state = resumed.rank_state["sampling"]["generator"]
    assert np.array_equal(mt.random_raw(4), np.random.MT19937(5).random_raw(4))
    assert set(load_numpy_state(folder)) == {"shared", "ranks"}
    with pytest.raises(ValueError, match=r"in torch storage .*storage 'numpy'.*remove .* to start over"):
        Checkpoints(tmp_path, "sgns", ONE, seed=1).resume()
