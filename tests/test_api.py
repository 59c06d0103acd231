"""The README's "Python API" example runs as written (on the tiny spec), and ``import lmpipe`` stays light."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import REPO


def _readme_example() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_import_lmpipe_is_light():
    code = "import sys, lmpipe; print(sorted(m for m in ('torch', 'ray', 'pyarrow', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_readme_python_api_example_runs(tmp_path):
    code = _readme_example().replace("runs/tiny-api", str(tmp_path / "tiny-api"))
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ppl, score_line, title = proc.stdout.strip().splitlines()
    from lmpipe.pipelines.evaluate import evaluate_ngram

    assert float(ppl) == evaluate_ngram(tmp_path / "tiny-api", "test")["perplexity"]
    tokens, line_ppl = score_line.split()
    assert int(tokens) == 11 and float(line_ppl) > 1
    assert title == "# lmpipe report"
    assert "lmpipe.pipelines.run" in proc.stderr  # progress logged for notebooks
