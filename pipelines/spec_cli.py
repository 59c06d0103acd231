"""The spec conveniences of the command line: ``lmpipe init`` (a starter spec), ``lmpipe schema`` (its JSON
Schema) and ``lmpipe completion`` (shell completion of the whole command tree)."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

from lmpipe.pipelines.core.errors import UserError


def _write_new(path: Path, text: str, force: bool) -> None:
    from lmpipe.pipelines.rundir import write_text_atomic

    if path.exists() and not force:
        raise UserError(f"{path}: already exists; pass --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)


def cmd_init(args: argparse.Namespace) -> int:
    from lmpipe.pipelines.starter import starter_spec

    out = Path(args.out) if args.out else None
    text = starter_spec(
        args.corpus, valid=args.valid, test=args.test, name=args.name, spec_dir=out.parent if out else None
    )
    if out is None:
        print(text, end="")
        return 0
    _write_new(out, text, args.force)
    print(f"wrote {out}; check it with `lmpipe validate {out}`, run it with `lmpipe run {out}`", file=sys.stderr)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from lmpipe.pipelines.spec import RunSpec
    from lmpipe.pipelines.spec_schema import spec_schema

    text = json.dumps(spec_schema(RunSpec), indent=2) + "\n"
    if args.out:
        _write_new(Path(args.out), text, force=True)
    else:
        print(text, end="")
    return 0


def cmd_completion(root: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from lmpipe.pipelines.cli_support import completion_script

    print(completion_script(root, args.shell), end="")
    return 0


def add_spec_commands(sub: argparse._SubParsersAction, root: argparse.ArgumentParser) -> None:
    """Register ``init``, ``schema`` and ``completion`` (of the whole tree under ``root``) as subcommands."""
    from lmpipe.pipelines.cli_support import COMPLETION_SHELLS

    init = sub.add_parser("init", help="write a commented starter spec for your corpus (then: validate, run)")
    init.add_argument("corpus", nargs="+", metavar="CORPUS", help="training text: files, directories, globs or data:NAME/SPLIT")
    init.add_argument("--valid", nargs="+", default=[], metavar="FILE", help="held-out text (default: 1%% of the training lines)")
    init.add_argument("--test", nargs="+", default=[], metavar="FILE", help="test text (default: 1%% of the training lines)")
    init.add_argument("--name", help="run name (default: from the first corpus file, e.g. wiki for wiki.txt)")
    init.add_argument("--out", metavar="FILE", help="write the spec here (default: print it); paths are made relative to it")
    init.add_argument("--force", action="store_true", help="replace --out if it exists")
    init.set_defaults(func=cmd_init)

    schema = sub.add_parser("schema", help="print the JSON Schema of pipeline specs (editor completion and checks)")
    schema.add_argument("--out", metavar="FILE", help="write it to FILE instead of printing it")
    schema.set_defaults(func=cmd_schema)

    completion = sub.add_parser(
        "completion", help="print a shell completion script, e.g. `lmpipe completion bash > ~/.local/share/bash-completion/completions/lmpipe`"
    )
    completion.add_argument("shell", choices=COMPLETION_SHELLS, help="the shell")
    completion.set_defaults(func=functools.partial(cmd_completion, root))
