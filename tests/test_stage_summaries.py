"""A skipped (up-to-date) training stage prints one line about its old epochs, not every epoch again."""

from __future__ import annotations

from lmpipe.pipelines.stages import glove, sgns


def _sgns(skipped: bool) -> dict:
    epochs = [{"epoch": e, "words": 1000, "words_per_second": 5e5, "loss": 3.0 - e / 10} for e in range(1, 6)]
    training = {
        "workers": 1, "threads": 2, "device": "cpu", "share_words": [1000], "vocab_dropped": 0,
        "epochs": epochs, "resumed_after_epoch": 0, "sync": "sum", "syncs_per_epoch": 1,
    }  # fmt: skip
    return {"outputs": {"count": 10, "dim": 4}, "training": training, "skipped": skipped}


def _glove(skipped: bool) -> dict:
    epochs = [{"epoch": e, "cost": 0.1 / e, "seconds": 1.0, "entries_per_second": 1e6} for e in range(1, 4)]
    training = {
        "workers": 1, "threads": 2, "device": "cpu", "share_entries": [5], "output": "sum",
        "epochs": epochs, "resumed_after_epoch": 0, "syncs_per_epoch": 1,
    }  # fmt: skip
    return {"outputs": {"count": 10, "dim": 4}, "training": training, "skipped": skipped}


def test_fresh_stages_print_every_epoch_and_skipped_ones_only_the_last():
    for module, manifest, n in ((sgns, _sgns, 5), (glove, _glove, 3)):
        fresh = [x for x in module.summary(manifest(False)) if x.startswith("epoch ")]
        assert [x.split(":")[0] for x in fresh] == [f"epoch {e}" for e in range(1, n + 1)]
        skipped = [x for x in module.summary(manifest(True)) if "epoch" in x]
        assert skipped == [f"{n} epoch(s) trained earlier; last: {fresh[-1]}"]
