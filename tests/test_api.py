"""The README's "Python API" example runs as written (on the tiny spec, on the session's local Ray), ``import
lmpipe`` stays light, and the notebook logging shows lmpipe's progress."""

from __future__ import annotations

import logging
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


def test_readme_python_api_example_runs(tmp_path, ray_local, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    code = _readme_example().replace("runs/tiny-api", str(tmp_path / "tiny-api"))
    exec(compile(code, "README.md (Python API)", "exec"), {})
    ppl, score_line, title = capsys.readouterr().out.strip().splitlines()[-3:]
    from lmpipe.pipelines.evaluate import evaluate_ngram

    assert float(ppl) == evaluate_ngram(tmp_path / "tiny-api", "test")["perplexity"]
    tokens, line_ppl = score_line.split()
    assert int(tokens) == 11 and float(line_ppl) > 1  # 10 words + </s>
    assert title == "# lmpipe report"


def test_notebook_logging_shows_lmpipe_progress(monkeypatch):
    from lmpipe.session import configure_logging

    log = logging.getLogger("lmpipe")
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    monkeypatch.setattr(log, "handlers", [])
    monkeypatch.setattr(log, "level", logging.NOTSET)
    configure_logging()
    assert len(log.handlers) == 1 and log.getEffectiveLevel() == logging.INFO
    configure_logging()
    assert len(log.handlers) == 1  # idempotent
