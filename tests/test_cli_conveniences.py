"""CLI conveniences: ``init`` -> ``validate`` -> ``run``, shipped specs by name, ``schema``, "did you mean" for
subcommands, help and defaults on every option, ``-v/-q`` anywhere, shell completion, the ``data list`` table."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess

import pytest
import yaml

from lmpipe.pipelines.cli import build_parser, main
from lmpipe.pipelines.cli_support import DefaultsHelpFormatter, log_level, shipped_specs, walk_parsers
from lmpipe.pipelines.datasets.listing import human_bytes
from lmpipe.pipelines.spec import load_spec

from .conftest import SPECS


# ------------------------------------------------------------------------------------------ init
def _corpus(tmp_path):
    folder = tmp_path / "corpora" / "tinytext"
    folder.mkdir(parents=True)
    shutil.copy(SPECS / "tiny" / "train.txt", folder / "train.txt")
    return folder / "train.txt"


@pytest.mark.usefixtures("ray_local")
def test_init_writes_a_starter_spec_that_validates_and_runs(tmp_path, capsys, monkeypatch):
    corpus = _corpus(tmp_path)
    out = tmp_path / "spec.yaml"
    assert main(["init", str(corpus), "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert text.count("\n#") + text.count("  #") > 20  # a commented spec
    data = yaml.safe_load(text)
    assert data["name"] == "tinytext"  # generic file names give the folder's name
    assert data["corpus"]["train"] == ["corpora/tinytext/train.txt"]  # relative to the spec: movable together
    assert data["corpus"]["split"] == {"valid": 0.01, "test": 0.01, "unit": "line"}
    assert data["ngram"]["memory_mb"] == "2G"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # paths are read beside the spec file, not from the working directory
    capsys.readouterr()
    assert main(["validate", str(out), "--run-dir", str(tmp_path / "run")]) == 0, capsys.readouterr().err
    assert load_spec(out).corpus.train == (str(corpus),)
    args = ["run", str(out), "--run-dir", str(tmp_path / "run"), "--stages", "tokenize,ngram", "-q",
            "--set", "ngram.order=3", "--set", "ngram.discount_fallback=true", "--set", "ngram.workers=1"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    manifest = json.loads((tmp_path / "run" / "ngram" / "manifest.json").read_text())
    assert (tmp_path / "run" / "ngram" / "model.arpa").is_file()
    assert manifest["settings"]["discount_fallback"] == [0.5, 1.0, 1.5]
    assert manifest["settings"]["memory_mb"] == 2048
    tokens = json.loads((tmp_path / "run" / "tokenize" / "manifest.json").read_text())
    assert "train" in tokens["outputs"]["shards"]


def test_init_to_stdout_uses_absolute_paths_and_held_out_files(tmp_path, capsys):
    corpus = _corpus(tmp_path)
    valid = SPECS / "tiny" / "valid.txt"
    assert main(["init", str(corpus), "--valid", str(valid), "--name", "mine"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    assert data["name"] == "mine"
    assert data["corpus"]["train"] == [str(corpus)] and data["corpus"]["valid"] == [str(valid)]
    assert "split" not in data["corpus"]
    assert main(["init", "data:ptb/train"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["name"] == "ptb"


def test_init_errors_are_one_line_with_exit_2(tmp_path, capsys):
    corpus = _corpus(tmp_path)
    out = tmp_path / "spec.yaml"
    out.write_text("mine\n")
    assert main(["init", str(corpus), "--out", str(out)]) == 2
    assert "spec.yaml: already exists; pass --force" in capsys.readouterr().err
    assert out.read_text() == "mine\n"  # never overwritten without --force
    assert main(["init", str(corpus), "--out", str(out), "--force"]) == 0
    assert yaml.safe_load(out.read_text())["corpus"]["train"] == ["corpora/tinytext/train.txt"]
    assert main(["init", str(tmp_path / "none.txt")]) == 2
    assert "none.txt: no such file or directory" in capsys.readouterr().err
    assert main(["init", "data:nosuchset/train"]) == 2
    assert "ptb" in capsys.readouterr().err  # the known datasets are listed


# ------------------------------------------------------------------------------------------ specs by name
def test_a_shipped_spec_runs_by_name(capsys):
    assert {"tiny", "ptb", "ptb-lm", "conll2003"} <= set(shipped_specs())
    assert main(["validate", "tiny"]) == 0
    assert "name: tiny" in capsys.readouterr().out
    assert main(["validate", "tny"]) == 2
    err = capsys.readouterr().err
    assert "tny: no such spec file, and no shipped spec of that name; did you mean 'tiny'?" in err


def test_a_local_file_wins_over_a_shipped_name(tmp_path, capsys, monkeypatch):
    (tmp_path / "tiny").write_text("name: local\ncorpus: {train: [x.txt]}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "tiny", "--stages", "tokenize"]) == 2  # x.txt is missing: the local file was read
    assert "x.txt" in capsys.readouterr().err


def test_run_help_lists_the_shipped_specs(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for name in shipped_specs():
        assert name in out


# ------------------------------------------------------------------------------------------ schema
def test_schema_command_prints_and_writes_the_json_schema(tmp_path, capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$schema"].endswith("2020-12/schema") and "NgramSpec" in schema["$defs"]
    assert main(["schema", "--out", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text()) == schema


# ------------------------------------------------------------------------------------------ parser tree
def test_misspelt_subcommands_get_a_suggestion(capsys):
    for words, guess in ((["rn"], "run"), (["embeddings", "exprot"], "export"), (["data", "lst"], "list"),
                         (["eval", "r", "--split", "tset"], "test")):  # fmt: skip
        with pytest.raises(SystemExit) as info:
            main(words)
        assert info.value.code == 2
        assert f"did you mean {guess!r}?" in capsys.readouterr().err


def test_every_argument_of_every_command_has_help_and_shows_its_default():
    parser = build_parser()
    checked = 0
    for prog, sub in walk_parsers(parser):
        assert sub.formatter_class is DefaultsHelpFormatter, prog
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    assert choice.help, f"{prog} {choice.dest}: a subcommand without help"
                continue
            assert action.help and action.help.strip(), f"{prog} {action.option_strings or action.dest}: no help"
            shown = sub._get_formatter()._expand_help(action)
            meaningful = action.option_strings and action.default not in (None, False, [], argparse.SUPPRESS)
            if meaningful and not isinstance(action, argparse._VersionAction):
                assert "default" in shown, f"{prog} {action.option_strings}: default {action.default!r} not shown"
                checked += 1
    assert checked >= 15
    help_text = " ".join(next(p for n, p in walk_parsers(parser) if n == "lmpipe generate").format_help().split())
    assert "tokens to sample after the prompt (default: 50)" in help_text


@pytest.mark.parametrize(
    "words",
    [["-q", "validate", "tiny"], ["validate", "tiny", "-q"], ["validate", "-q", "tiny"], ["data", "list", "--quiet"],
     ["embeddings", "neighbors", "r", "w", "-q"]],
)  # fmt: skip
def test_quiet_is_accepted_before_or_after_the_subcommand(words):
    args = build_parser().parse_args(words)
    assert args.quiet and not args.verbose
    assert log_level(args) == logging.WARNING


def test_verbose_anywhere_and_the_default_level():
    parser = build_parser()
    assert log_level(parser.parse_args(["data", "list", "-v"])) == logging.DEBUG
    assert log_level(parser.parse_args(["-v", "data", "list"])) == logging.DEBUG
    assert log_level(parser.parse_args(["data", "list"])) == logging.INFO


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_scripts_cover_the_command_tree(shell, capsys):
    pytest.importorskip("shtab")
    assert main(["completion", shell]) == 0
    script = capsys.readouterr().out
    for word in ("run", "validate", "init", "schema", "export", "--max-tokens", "--stages"):
        assert word in script, word
    if shell == "bash" and shutil.which("bash"):
        subprocess.run(["bash", "-n"], input=script, text=True, check=True)  # it parses as bash
        out = subprocess.run(
            ["bash", "-c", 'source /dev/stdin; COMP_WORDS=(lmpipe ini); COMP_CWORD=1; _shtab_lmpipe; echo "${COMPREPLY[@]}"'],
            input=script, text=True, capture_output=True, check=True,
        ).stdout  # fmt: skip
        assert out.split() == ["init"]


# ------------------------------------------------------------------------------------------ data list
def test_data_list_is_a_table_with_sizes_and_local_copies(tmp_path, mirror, capsys, monkeypatch):
    monkeypatch.setenv("LMPIPE_DATA_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("LMPIPE_DATA_MIRROR", raising=False)
    assert main(["data", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["NAME", "SPLITS", "SIZE", "LOCAL"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert "Dataset(" not in "".join(lines)
    assert "not fetched" in rows["ptb"] and "mirror only: not found" in rows["brown"]
    assert main(["data", "list", "--mirror", str(mirror)]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    ptb_bytes = sum(p.stat().st_size for p in (mirror / "ptb").glob("ptb.*.txt"))
    assert "mirrored" in rows["ptb"] and human_bytes(ptb_bytes) in rows["ptb"]
    assert main(["data", "fetch", "ptb", "--mirror", str(mirror)]) == 0
    capsys.readouterr()
    assert main(["data", "list", "--mirror", str(mirror)]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "cached, mirrored" in rows["ptb"] and "not fetched" in rows["wikitext-2"]


def test_human_bytes():
    assert [human_bytes(n) for n in (None, 0, 1023, 1024, 5 * 1024**2 + 1, 3 * 1024**4)] == [
        "-", "0 B", "1023 B", "1.0 KiB", "5.0 MiB", "3.0 TiB"
    ]  # fmt: skip
