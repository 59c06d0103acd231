"""``ngram.temp_dir`` (lmplz's ``-T``): the stage's scratch files go there, the output is byte-identical and the
fingerprint unchanged, and the folder lmpipe made there is removed; ``discount_fallback: true`` against lmplz's
bare ``--discount_fallback``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lmpipe.lm.arpa import compare_arpa, read_arpa
from lmpipe.lm.kenlm_tools import run_lmplz
from lmpipe.pipelines.core.errors import UserError
from lmpipe.pipelines.run import run_pipeline
from lmpipe.pipelines.rundir import StageRun
from lmpipe.pipelines.spec import load_spec, parse_spec

from .conftest import SPECS


def test_scratch_dir_is_a_fresh_folder_removed_on_commit_and_abort(tmp_path):
    parent = tmp_path / "local" / "scratch"  # made if missing
    for finish in ("commit", "abort"):
        run = StageRun(tmp_path / "run", "ngram", "fp", {}, {})
        work = run.scratch_dir(str(parent), "ngram.temp_dir")
        assert work.parent == parent and work.name.startswith("lmpipe-ngram-") and work.is_dir()
        (parent / "theirs.txt").write_text("not lmpipe's")
        (work / "piece.arrow").write_bytes(b"x")
        run.commit({}) if finish == "commit" else run.abort()
        assert not work.exists()
        assert (parent / "theirs.txt").read_text() == "not lmpipe's"  # nothing lmpipe did not make is deleted
    default = StageRun(tmp_path / "run", "ngram", "fp", {}, {})
    assert default.scratch_dir(None, "ngram.temp_dir") == default.tmp_dir / "_work"
    default.abort()


def test_an_unusable_temp_dir_is_a_user_error_naming_the_key(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    run = StageRun(tmp_path / "run", "ngram", "fp", {}, {})
    with pytest.raises(UserError, match=r"ngram.temp_dir: .*file: cannot make a working folder there"):
        run.scratch_dir(str(blocker), "ngram.temp_dir")
    run.abort()


@pytest.mark.usefixtures("ray_local")
def test_temp_dir_holds_the_scratch_and_changes_nothing_else(tmp_path, monkeypatch):
    temp = tmp_path / "local-disk"
    seen: dict[str, list[str]] = {}
    dropped: list[str] = []  # datasets removed from the working folder as soon as their last reader ran
    real_rmtree = shutil.rmtree

    def spy(path, *args, **kwargs):  # what the stage's working folder held when it was removed
        path = Path(path)
        if path.parent == temp and path.is_dir():
            seen[path.name] = sorted(p.name for p in path.iterdir())
        if path.parent.parent == temp and path.is_dir():
            dropped.append(path.name)
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", spy)
    base = ["ngram.partitions=2", "ngram.build_binary=false"]
    plain = run_pipeline(load_spec(SPECS / "tiny.yaml", overrides=base), run_dir=tmp_path / "a")["ngram"]
    local = run_pipeline(load_spec(SPECS / "tiny.yaml", overrides=[*base, f"ngram.temp_dir={temp}"]), run_dir=tmp_path / "b")["ngram"]
    assert local["fingerprint"] == plain["fingerprint"]
    assert (tmp_path / "b/ngram/model.arpa").read_bytes() == (tmp_path / "a/ngram/model.arpa").read_bytes()
    for k in (1, 2, 3):  # the counts, outputs of the stage, are in the run directory as before
        a, b = (sorted(p.relative_to(r) for p in (r / f"order-{k}").rglob("*.arrow")) for r in
                (tmp_path / "a/ngram/counts", tmp_path / "b/ngram/counts"))  # fmt: skip
        assert a == b and a
    (work,) = seen.values()  # one working folder was made in temp_dir, holding the scratch datasets
    assert {"adj1", "adjctx3", "uninterp3", "interp2", "model1", "model2", "model3"} <= set(dropped)
    assert not any(name.startswith("counts") for name in [*work, *dropped])
    assert list(temp.iterdir()) == []  # and removed after the stage
    assert not list((tmp_path / "b").glob(".ngram.tmp-*")) and not (tmp_path / "b/ngram/_work").exists()


@pytest.mark.kenlm
@pytest.mark.usefixtures("ray_local")
def test_discount_fallback_true_matches_lmplz_s_bare_flag(tmp_path, kenlm_bin):
    corpus = tmp_path / "small.txt"  # too few counts for discounts: lmplz needs --discount_fallback
    corpus.write_text("a b c d\na b c e\nf g h\nb c d a\n")
    spec = parse_spec({"name": "x", "corpus": {"train": str(corpus)}, "stages": ["tokenize", "ngram"],
                       "ngram": {"order": 3, "discount_fallback": True, "build_binary": False,
                                 "estimator": "lmplz", "temp_dir": str(tmp_path / "t")}})  # fmt: skip
    run_pipeline(spec, run_dir=tmp_path / "run")
    via_lmpipe = parse_spec({**spec.to_dict(), "ngram": {**spec.to_dict()["ngram"], "estimator": "lmpipe"}})
    run_pipeline(via_lmpipe, run_dir=tmp_path / "run2")
    reference = tmp_path / "lmplz.arpa"
    run_lmplz(str(corpus), 3, reference, memory="64M", extra_args=["--discount_fallback"], temp_prefix=f"{tmp_path}/")
    for ours in (tmp_path / "run/ngram/model.arpa", tmp_path / "run2/ngram/model.arpa"):
        diff = compare_arpa(read_arpa(ours), read_arpa(reference))
        assert diff.same_ngrams and diff.max_prob_diff < 1e-5 and diff.max_backoff_diff < 1e-5, diff
    assert list((tmp_path / "t").iterdir()) == []
