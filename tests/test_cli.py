"""The lmpipe command line: --help everywhere, --version, exit codes, and a dry tiny run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lmpipe.pipelines.cli import main

from .conftest import SPECS

COMMANDS = [[], ["run"], ["validate"], ["data"], ["data", "fetch"], ["data", "list"], ["eval"]]


@pytest.mark.parametrize("words", COMMANDS)
def test_help_everywhere(words, capsys):
    with pytest.raises(SystemExit) as info:
        main([*words, "--help"])
    assert info.value.code == 0
    assert "usage: lmpipe" in capsys.readouterr().out


def test_version_from_the_installed_console_script():
    out = subprocess.run([sys.executable, "-m", "lmpipe.pipelines.cli", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip().startswith("lmpipe ")


def test_validate_prints_the_resolved_spec_and_exit_codes(capsys):
    assert main(["validate", str(SPECS / "ptb.yaml"), "--set", "ngram.order=3"]) == 0
    out = capsys.readouterr().out
    assert "order: 3" in out and "data:ptb/train" in out
    assert main(["validate", str(SPECS / "ptb.yaml"), "--set", "ngram.order=9"]) == 2
    err = capsys.readouterr().err
    assert "ptb.yaml: ngram.order: bad value 9" in err


@pytest.mark.parametrize("spec", sorted(p.name for p in SPECS.glob("*.yaml")))
def test_every_shipped_spec_validates(spec, mirror, capsys, tmp_path):
    # validate runs the stages' checks too: data: references resolve through the mirror, upstream stages
    # are selected or looked for in an empty run directory, workers fit this machine
    args = ["validate", str(SPECS / spec), "--mirror", str(mirror), "--run-dir", str(tmp_path)]
    assert main(args) == 0, capsys.readouterr().err


def test_run_reports_a_missing_input_before_work_with_exit_2(tmp_path, capsys):
    code = main(["run", str(SPECS / "tiny.yaml"), "--run-dir", str(tmp_path), "--set", f"corpus.train={tmp_path}/none.txt"])
    assert code == 2
    assert "none.txt: no such file or directory" in capsys.readouterr().err
    assert not (tmp_path / "tokenize").exists()


def test_data_list_and_fetch_from_the_mirror(tmp_path, mirror, capsys):
    assert main(["data", "list"]) == 0
    listing = capsys.readouterr().out
    for name in ("ptb", "wikitext-2", "wikitext-103", "text8", "conll2003", "conll2000", "ud-en-ewt"):
        assert name in listing
    assert main(["data", "fetch", "ptb", "--mirror", str(mirror), "--dest", str(tmp_path)]) == 0
    assert (tmp_path / "ptb" / "ptb.test.txt").read_bytes() == (mirror / "ptb" / "ptb.test.txt").read_bytes()
    assert main(["data", "fetch", "nosuchset", "--mirror", str(mirror)]) == 2
    assert "ptb" in capsys.readouterr().err


@pytest.mark.usefixtures("ray_local")
def test_run_tiny_then_rerun_skips(tmp_path, capsys):
    args = ["run", str(SPECS / "tiny.yaml"), "--run-dir", str(tmp_path), "--stages", "tokenize"]
    assert main(args) == 0
    assert "tokenize: " in capsys.readouterr().out
    assert main(args) == 0
    assert "skipped (up to date)" in capsys.readouterr().out
    assert main([*args[:-1], "tokenize,bogus"]) == 2
