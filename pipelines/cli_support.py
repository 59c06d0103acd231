"""What every ``lmpipe`` subcommand shares, applied once to the whole argparse tree (:func:`finish_parser`).

* ``-v/--verbose`` and ``-q/--quiet`` are accepted before or after the subcommand (``lmpipe run tiny -q``):
  each subparser gets them with ``default=SUPPRESS``, so a flag given at any level reaches the namespace
  and one not given never resets the top level's;
* every option shows its default in ``--help`` (:class:`DefaultsHelpFormatter`) unless its help says it;
* a misspelt subcommand or choice gets a "did you mean" (:class:`Parser`, :mod:`lmpipe.pipelines.suggest`);
* a spec argument may name a shipped spec (``lmpipe run tiny``): :func:`resolve_spec`.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmpipe.pipelines.core.errors import MissingError
from lmpipe.pipelines.suggest import did_you_mean

#: The specs shipped with lmpipe (``pipelines/specs/<name>.yaml``), runnable by name.
SPECS_DIR = Path(__file__).resolve().parent / "specs"
_SPEC_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def shipped_specs() -> list[str]:
    """Names of the shipped specs, e.g. ``['conll2003', 'ptb', ..., 'tiny', 'ud-ewt']``."""
    return sorted(p.stem for p in SPECS_DIR.glob("*.yaml"))


def resolve_spec(value: str) -> str:
    """A spec argument: an existing file as given, else the shipped spec of that name; an error naming both."""
    if Path(value).is_file():
        return value
    shipped = SPECS_DIR / f"{value}.yaml"
    if _SPEC_NAME.fullmatch(value) and shipped.is_file():
        return str(shipped)
    if Path(value).exists():
        return value  # a directory: the spec loader says what is wrong with it
    names = shipped_specs()
    guess = did_you_mean(Path(value).stem, names)
    raise MissingError(
        f"{value}: no such spec file, and no shipped spec of that name; "
        f"{f'did you mean {guess!r}? ' if guess else ''}shipped specs: {', '.join(names)}"
    )


class Parser(argparse.ArgumentParser):
    """``ArgumentParser`` whose invalid-choice errors suggest the closest choice (subcommands included, as
    ``add_subparsers`` makes subparsers of the parser's own class)."""

    def error(self, message: str) -> Any:
        match = re.search(r"invalid choice: '?([^' ]*)'? \(choose from (.*)\)", message)
        if match:
            choices = [c.strip(" '\"") for c in match.group(2).split(",")]
            guess = did_you_mean(match.group(1), choices)
            if guess:
                message = f"{message}; did you mean {guess!r}?"
        super().error(message)


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help when it has a default and its help does not state it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            not action.option_strings or "default" in text.lower() or default in (None, False, argparse.SUPPRESS)
            or default == [] or isinstance(action, argparse._VersionAction)
        ):  # fmt: skip
            return text
        return f"{text} (default: %(default)s)"


def walk_parsers(parser: argparse.ArgumentParser, prog: str = "") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """``("lmpipe data fetch", parser)`` for the parser and every subparser below it, depth first."""
    yield (prog or parser.prog), parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk_parsers(sub, f"{prog or parser.prog} {name}")


def add_log_flags(parser: argparse.ArgumentParser, *, default: Any) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", default=default, help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", default=default, help="warnings and errors only")


def finish_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give every subparser the logging flags and the defaults formatter (the top level has its own flags)."""
    for _, sub in walk_parsers(parser):
        sub.formatter_class = DefaultsHelpFormatter
        if sub is not parser:
            add_log_flags(sub, default=argparse.SUPPRESS)
    return parser


def log_level(args: argparse.Namespace) -> int:
    """``-v``: DEBUG; ``-q``: WARNING (``-v`` wins when both are given); else INFO."""
    if getattr(args, "verbose", False):
        return logging.DEBUG
    return logging.WARNING if getattr(args, "quiet", False) else logging.INFO


# ------------------------------------------------------------------------------------------ completion
#: Argument dests completed as files / directories (everything else: the parser's own choices).
_FILE_DESTS = {"spec", "path", "vectors", "input", "file"}
_DIR_DESTS = {"run", "runs", "run_dir", "mirror", "dest", "where"}
COMPLETION_SHELLS = ("bash", "zsh")  # shtab's tcsh script completes subcommands only


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The shell completion script of the whole command tree (generated by shtab from the parser)."""
    try:
        import shtab
    except ImportError as exc:
        raise MissingError("lmpipe completion: the shtab package is missing; pip install shtab") from exc
    for _, sub in walk_parsers(parser):
        for action in sub._actions:
            if action.dest in _FILE_DESTS or action.dest == "out":
                action.complete = shtab.FILE  # type: ignore[attr-defined]
            elif action.dest in _DIR_DESTS:
                action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]
    return shtab.complete(parser, shell=shell)
