"""pipelines.ray_stages is the one way stage code reaches Ray: an import walk, and map_tasks on a local Ray."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"


def _imports_ray(path: Path) -> list[int]:
    """Line numbers of every ``import ray...`` / ``from ray... import`` in a file, lazy ones included."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        if any(n == "ray" or n.startswith("ray.") for n in names):
            lines.append(node.lineno)
    return lines


def test_only_ray_stages_imports_ray_in_pipelines():
    offenders = {
        str(p.relative_to(PIPELINES)): lines
        for p in sorted(PIPELINES.rglob("*.py"))
        if p.name != "ray_stages.py" and (lines := _imports_ray(p))
    }
    assert offenders == {}
    assert _imports_ray(PIPELINES / "ray_stages.py")  # the walk does see an import of ray


def _square_or_fail(x: int) -> int:
    if x < 0:
        raise KeyError(f"negative {x}")
    return x * x


def test_map_tasks_keeps_order_counts_placement_and_raises_the_tasks_error(ray_local):
    from lmpipe.cluster.process import Placement
    from lmpipe.pipelines.ray_stages import map_tasks

    placement = Placement()
    calls = [(x,) for x in range(7)]
    assert map_tasks(_square_or_fail, calls, workers=2, desc="test", placement=placement) == [x * x for x in range(7)]
    assert sum(int(row["tasks"]) for row in placement.rows()) == 7
    with pytest.raises(KeyError, match="negative -3") as raised:
        map_tasks(_square_or_fail, [(1,), (-3,)], workers=2, desc="test")
    assert raised.type is KeyError  # the task's own error, not Ray's RayTaskError(KeyError) wrapper
