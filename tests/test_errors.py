"""User errors: every check's mistake exits 2 with one line, from ``run`` and already from ``validate``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lmpipe.cluster.connect import ResourceError
from lmpipe.lm.kenlm_tools import KenLMNotFoundError
from lmpipe.lm.kneser_ney import BadDiscountError
from lmpipe.pipelines.conll import ConllError
from lmpipe.pipelines.core.errors import MissingError, UserError
from lmpipe.pipelines.datasets.registry import (
    ChecksumError,
    DataNotFoundError,
    DatasetError,
    UnknownDatasetError,
)
from lmpipe.pipelines.ingest import InputError
from lmpipe.pipelines.report_rows import CompareError
from lmpipe.pipelines.spec import SpecError

from .conftest import SPECS

#: More Ray workers than this machine has CPUs, on any machine.
TOO_MANY = 4 * (os.cpu_count() or 1)


def _lmpipe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmpipe.pipelines.cli", *args], capture_output=True, text=True, timeout=300)


def _one_line_exit_2(out: subprocess.CompletedProcess, message: str) -> None:
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("lmpipe: error: ")]
    assert len(errors) == 1 and message in errors[0], out.stderr


def test_every_user_error_class_is_a_user_error():
    for cls in (SpecError, InputError, ConllError, DatasetError, UnknownDatasetError, DataNotFoundError, ChecksumError,
                CompareError, KenLMNotFoundError, BadDiscountError, MissingError):  # fmt: skip
        assert issubclass(cls, UserError), cls
    assert issubclass(MissingError, FileNotFoundError)
    assert not issubclass(ResourceError, UserError)  # cluster/ imports no project code: the CLI names it


@pytest.mark.parametrize("command", ["run", "validate"])
def test_more_workers_than_the_machine_exit_2_before_ray_starts(command, tmp_path):
    out = _lmpipe(command, str(SPECS / "tiny.yaml"), "--run-dir", str(tmp_path), "--stages", "tokenize,sgns",
                  "--set", f"sgns.workers={TOO_MANY}")  # fmt: skip
    _one_line_exit_2(out, f"sgns.workers x sgns.threads = {TOO_MANY} x 1 CPUs")
    assert not (tmp_path / "tokenize").exists()  # refused before any stage ran


@pytest.mark.parametrize("command", ["run", "validate"])
def test_a_missing_upstream_stage_exits_2_naming_the_stages_to_run(command, tmp_path):
    out = _lmpipe(command, str(SPECS / "tiny.yaml"), "--run-dir", str(tmp_path), "--stages", "glove")
    _one_line_exit_2(out, "the glove stage needs the cooccur stage; run it first (--stages tokenize,cooccur,glove)")


def test_validate_runs_the_stage_checks(tmp_path):
    missing = tmp_path / "words.txt"
    out = _lmpipe("validate", str(SPECS / "tiny.yaml"), "--set", f"ngram.limit_vocab={missing}")
    _one_line_exit_2(out, f"ngram.limit_vocab: {missing}: no such file")
    out = _lmpipe("validate", str(SPECS / "tiny.yaml"), "--set", "ngram.order=6", "--set", "mix.mixtures=[]",
                  "--stages", "tokenize,ngram,mix")  # fmt: skip
    _one_line_exit_2(out, "mix.mixtures is empty")
    out = _lmpipe("validate", str(SPECS / "tiny.yaml"), "--run-dir", str(tmp_path))
    assert out.returncode == 0 and "name: tiny" in out.stdout, out.stderr
