"""What ``lmpipe submit`` hands to ``cluster/submit.py``: the spec parsed, validated and resolved here, in the
run layer, because the cluster floor reads no spec.

    >>> shipped = shipped_spec("pipelines/specs/tiny.yaml", overrides=["ngram.order=3"])
    >>> shipped.name, shipped.local_paths[0]
    ('tiny', '/.../pipelines/specs/tiny/train.txt')
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lmpipe.cluster.submit import ShippedSpec
from lmpipe.pipelines.spec import RunSpec, dump_spec, load_spec, local_paths


def local_input_paths(spec: RunSpec) -> tuple[str, ...]:
    """Every absolute local path the resolved spec reads (the spec's ``LocalPath`` fields: corpus splits,
    ``ngram.limit_vocab``, the lm models' and the tagger's vectors, the tagger tasks' files).  Relative paths
    (``--set`` values, which mean the job's working directory) travel with the working directory."""
    return tuple(value for _, value in local_paths(spec) if Path(value).is_absolute())


def shipped_spec(path: str | Path, *, overrides: Sequence[str] = ()) -> ShippedSpec:
    """Load and validate the spec (``SpecError`` before anything is staged) and resolve it for the job."""
    spec = load_spec(path, overrides=overrides)
    return ShippedSpec(
        path=Path(path), text=dump_spec(spec), name=spec.name, local_paths=local_input_paths(spec),
        overrides=tuple(overrides),
    )  # fmt: skip
