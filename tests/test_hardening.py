"""Issue 18, items 5-11: bounded error messages, one-line errors for malformed inputs, file modes that honour
the umask, secrets kept out of the run directory, patient job submission and a clean Ray Train exit."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from lmpipe.pipelines.cli import main
from lmpipe.pipelines.core.errors import quoted
from lmpipe.pipelines.core.safe_yaml import MAX_NODES, AliasBombError, safe_load

from .conftest import SPECS


# ------------------------------------------------------------------------------ 6: bounded messages
def _alias_bomb(levels: int = 9, width: int = 9) -> str:
    """The "billion laughs" as one flow sequence: ``[&a0 [lol x9], &a1 [*a0 x9], ...]`` (about 400 bytes)."""
    parts = ["&a0 [" + ",".join(["lol"] * width) + "]"]
    for level in range(1, levels):
        parts.append(f"&a{level} [" + ",".join([f"*a{level - 1}"] * width) + "]")
    return "[" + ",".join(parts) + "]"


def test_alias_bomb_is_refused_before_it_expands():
    bomb = _alias_bomb()
    assert len(bomb) < 500
    with pytest.raises(AliasBombError, match=f"beyond {MAX_NODES} values"):
        safe_load("name: " + bomb)
    with pytest.raises(AliasBombError, match="recursive alias"):
        safe_load("a: &x [1, *x]")
    assert safe_load("a: &x {k: [1, 2]}\nb: *x\nc: [*x, *x]") == {"a": {"k": [1, 2]}, "b": {"k": [1, 2]}, "c": [{"k": [1, 2]}] * 2}


@pytest.mark.parametrize("where", ["file", "set"])
def test_validate_with_an_alias_bomb_name_is_fast_and_short(tmp_path, where):
    """Issue 18.6: the bomb as ``name`` (in the file or through --set) used to run for minutes at 3 GB."""
    spec = tmp_path / "bomb.yaml"
    base = (SPECS / "tiny.yaml").read_text(encoding="utf-8")
    args = [sys.executable, "-m", "lmpipe.pipelines.cli", "validate", str(spec), "--run-dir", str(tmp_path / "run")]
    if where == "file":
        spec.write_text(base.replace("name: tiny", "name: " + _alias_bomb(), 1), encoding="utf-8")
    else:
        spec.write_text(base, encoding="utf-8")
        args += ["--set", "name=" + _alias_bomb()]
    assert "name: tiny" in base
    start = time.monotonic()
    out = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert time.monotonic() - start < 20
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.count("\n") == 1 and len(out.stderr) < 600, out.stderr[:2000]
    assert "aliases expand" in out.stderr and "Traceback" not in out.stderr


def test_a_bad_value_is_quoted_by_its_start(tmp_path, capsys):
    """A long or deep bad value is quoted bounded (here a 1 MB name; a nested list via --set)."""
    assert main(["validate", str(SPECS / "tiny.yaml"), "--run-dir", str(tmp_path), "--set", "name=[" + "x" * 1_000_000 + "]"]) == 2
    err = capsys.readouterr().err
    assert "name: bad value ['xxx" in err and len(err) < 400
    deep: list = [1]
    for _ in range(50):
        deep = [deep, deep, "y" * 10_000]
    assert len(quoted(deep)) <= 120 and len(quoted("z" * 10**7)) <= 120
    assert quoted("short") == "'short'"
