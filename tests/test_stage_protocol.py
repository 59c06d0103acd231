"""The stage protocol: declarations, the derived order, and fingerprints that stay what they were.

``stage_fingerprints.json`` was written by the hand-written ``plan`` functions of every stage before the
runner derived settings and inputs from the stage declarations: every run directory written before must
still be seen as current, so each stage's settings, inputs and fingerprint must come out the same."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmpipe.pipelines.ingest import find_sources
from lmpipe.pipelines.run import plan_stage, stage_order
from lmpipe.pipelines.rundir import fingerprint
from lmpipe.pipelines.spec import STAGE_ORDER, RunSpec, load_spec
from lmpipe.pipelines.stages import StageContext, declaration

from .conftest import REPO, SPECS, mirror_dir

EXPECTED = json.loads((Path(__file__).parent / "stage_fingerprints.json").read_text(encoding="utf-8"))
#: Overrides of the ``tiny+paths`` case: every kind of file input (limit_vocab, vectors files and folders,
#: tagged files, a data: reference, an upstream embeddings stage), relative to the repository root.
PATHS = [
    "ngram.limit_vocab=pipelines/specs/tiny/valid.txt",
    "lm.models=[{name: a, embeddings: pipelines/specs/tiny/test.txt, embeddings_format: glove}, "
    "{name: b, embeddings: sgns}, {name: c, embeddings: pipelines/specs/tiny}]",
    "tagger.tasks=[{name: t, format: conll2003, column: ner, train: pipelines/specs/tiny/train.txt, "
    "test: data:conll2003/test}]",
    "tagger.vectors=pipelines/specs/tiny",
]


def _fake_run(tmp_path: Path) -> Path:
    """A run directory where every stage completed with fingerprint ``fp-<stage>`` (ngram and lm scored)."""
    for stage in STAGE_ORDER:
        (tmp_path / stage).mkdir()
        manifest = {"stage": stage, "status": "complete", "fingerprint": f"fp-{stage}"}
        if stage in ("ngram", "lm"):
            manifest["token_scores"] = {"x": {"test": "scores/x/test.arrow"}}
        (tmp_path / stage / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return tmp_path


def _unrepo(value):
    return json.loads(json.dumps(value).replace(str(REPO), "<REPO>"))


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_fingerprints_are_the_ones_the_hand_written_plans_gave(case, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the overrides' relative paths keep their meaning relative to the working dir
    name, _, variant = case.partition("+")
    spec = load_spec(SPECS / f"{name}.yaml", overrides=PATHS if variant else ())
    mirror = mirror_dir()
    ctx = StageContext(spec=spec, run_dir=_fake_run(tmp_path), mirror=str(mirror) if mirror else None)
    assert set(EXPECTED[case]) == set(STAGE_ORDER)
    for stage, want in EXPECTED[case].items():
        if stage == "tokenize" and any(r.startswith("data:") for r in spec.corpus.train) and mirror is None:
            continue  # the corpus files' identities need the dataset mirror
        plan = plan_stage(ctx, stage)
        assert _unrepo(plan.settings) == want["settings"], stage
        assert list(plan.settings) == list(want["settings"]), stage  # the manifest keeps its key order
        if stage == "tokenize":  # file identities (size, mtime) differ between checkouts: recomputed
            inputs = {split: [s.fingerprint() for s in items] for split, items in find_sources(spec.corpus, mirror=ctx.mirror).items()}
            assert plan.inputs == inputs
            assert plan.fingerprint == fingerprint({"stage": stage, "settings": plan.settings, "inputs": inputs})
        else:
            assert plan.inputs == want["inputs"], stage
            assert plan.fingerprint == want["fingerprint"], stage


def test_the_derived_order_is_the_pipeline_order():
    assert stage_order() == ["tokenize", "ngram", "sgns", "cooccur", "glove", "lm", "tagger", "mix", "report"]
    assert stage_order(["report", "glove", "cooccur"]) == ["cooccur", "glove", "report"]
    assert stage_order(["mix", "lm", "sgns"]) == ["sgns", "lm", "mix"]


def test_every_stage_declares_its_section_and_only_earlier_upstreams():
    sections = {f: RunSpec.__dataclass_fields__[f].default_factory for f in STAGE_ORDER}
    for i, name in enumerate(STAGE_ORDER):
        stage = declaration(name)
        assert stage.name == name and stage.settings is sections[name]
        assert all(STAGE_ORDER.index(up) < i for up in stage.upstream), name
    assert [s for s in STAGE_ORDER if not declaration(s).needs_ray] == ["mix", "report"]


def test_runtime_settings_are_left_out_of_the_fingerprint(tmp_path):
    base = load_spec(SPECS / "tiny.yaml")
    scaled = load_spec(
        SPECS / "tiny.yaml",
        overrides=["tokenize.workers=7", "tokenize.resources=[CPU=2]", "ngram.workers=5", "ngram.resources=[ssd=1]",
                   "sgns.workers=3", "sgns.threads=2", "sgns.overlap_sync=false", "cooccur.workers=9",
                   "glove.workers=2", "glove.threads=3", "lm.threads=4", "tagger.threads=2", "tagger.tune.cpus_per_trial=3"],
    )  # fmt: skip
    shaped = load_spec(SPECS / "tiny.yaml", overrides=["sgns.dim=21", "lm.workers=2", "tagger.workers=2"])
    plans = [{s: plan_stage(StageContext(spec=spec, run_dir=tmp_path), s).fingerprint for s in STAGE_ORDER}
             for spec in (base, scaled, shaped)]  # fmt: skip
    assert plans[0] == plans[1]
    assert {s for s in STAGE_ORDER if plans[0][s] != plans[2][s]} == {"sgns", "lm", "tagger"}
