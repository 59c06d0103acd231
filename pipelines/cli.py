"""The ``lmpipe`` command line.

    lmpipe run SPEC [--run-dir DIR] [--address ADDR] [--stages a,b] [--force a,b] [--set key.path=value ...]
    lmpipe validate SPEC [--set key.path=value ...]
    lmpipe data fetch NAME [--mirror DIR] [--dest DIR]
    lmpipe data list
    lmpipe eval RUN [--split test]
    lmpipe generate RUN [--model NAME] --prompt TEXT --max-tokens N --temperature T --seed S
    lmpipe compare RUN [RUN ...] [--split test] [--normalize none|bpb] [--out DIR]

Exit status: 0 on success, 2 for a bad spec or bad input (the message names file, key or line),
1 for anything else.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pipelines import __version__

logger = logging.getLogger("lmpipe")


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _mirror(args: argparse.Namespace) -> str | None:
    return getattr(args, "mirror", None) or os.environ.get("LMPIPE_DATA_MIRROR") or None


def cmd_run(args: argparse.Namespace) -> int:
    from pipelines.run import run_pipeline
    from pipelines.spec import load_spec

    spec = load_spec(args.spec, overrides=args.set)
    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / spec.name
    manifests = run_pipeline(
        spec,
        run_dir=run_dir,
        stages=_csv(args.stages) if args.stages else None,
        force=_csv(args.force) if args.force else (),
        address=args.address,
        mirror=_mirror(args),
        num_cpus=args.num_cpus,
    )
    print(f"run directory: {run_dir.resolve()}")
    for name, manifest in manifests.items():
        state = "skipped (up to date)" if manifest.get("skipped") else f"{manifest['timings']['seconds']:.1f} s"
        print(f"  {name}: {state}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from pipelines.spec import dump_spec, load_spec

    spec = load_spec(args.spec, overrides=args.set)
    print(dump_spec(spec), end="")
    print(f"# {args.spec}: valid", file=sys.stderr)
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from pipelines.datasets import fetch

    path = fetch(args.name, dest=Path(args.dest) if args.dest else None, mirror=_mirror(args))
    print(path)
    return 0


def cmd_data_list(args: argparse.Namespace) -> int:
    from pipelines.datasets import list_datasets

    for item in list_datasets():
        print(item)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from lm.evaluate import evaluate_ngram

    result = evaluate_ngram(Path(args.run), split=args.split)
    print(
        f"{args.split}: perplexity {result['perplexity']:.2f} including OOVs, "
        f"{result['perplexity_excluding_oov']:.2f} excluding; OOVs {result['oov']:,} "
        f"({100 * result['oov_rate']:.2f}%); tokens {result['tokens']:,} in {result['sentences']:,} sentences"
    )
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from lm.generate import generate

    if args.max_tokens < 0 or args.temperature < 0:
        print("lmpipe: error: --max-tokens and --temperature must be 0 or more", file=sys.stderr)
        return 2

    text = generate(
        Path(args.run), model=args.model, prompt=args.prompt, max_tokens=args.max_tokens,
        temperature=args.temperature, seed=args.seed,
    )  # fmt: skip
    print(text)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from pipelines.report import collect, compare, embeddings_markdown, merge, models_markdown, write_report

    report = merge(collect(Path(run)) for run in args.runs)
    normalize = None if args.normalize == "none" else args.normalize
    multi = len(args.runs) > 1
    has_split = any(r.split == args.split for r in report.models)
    if has_split:
        print(models_markdown(compare(report, split=args.split, normalize=normalize), multi_run=multi))
    elif report.models:
        splits = sorted({r.split for r in report.models})
        print(f"no language model was scored on the {args.split!r} split (scored splits: {splits})", file=sys.stderr)
    if report.embeddings:
        print(embeddings_markdown(report.embeddings, multi_run=multi))
    if not report.models and not report.embeddings:
        print("lmpipe: error: these runs hold no scored language model and no word vectors", file=sys.stderr)
        return 2
    if args.out:
        written = write_report(report, Path(args.out), split=args.split, normalize=normalize)
        print(f"wrote {', '.join(written['files'])} to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmpipe", description="Distributed pipeline on Ray for word embeddings and large-corpus language modelling."
    )
    parser.add_argument("--version", action="version", version=f"lmpipe {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a pipeline spec (stages already done with the same inputs are skipped)")
    run.add_argument("spec", help="pipeline YAML, e.g. pipelines/specs/ptb.yaml")
    run.add_argument("--run-dir", help="run directory (default runs/<spec name>)")
    run.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else an embedded local Ray)")
    run.add_argument("--stages", help="comma-separated stages to run (default: the spec's `stages`)")
    run.add_argument("--force", help="comma-separated stages to recompute even if up to date")
    run.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="override a spec value (YAML)")
    run.add_argument("--mirror", help="dataset mirror directory (default: LMPIPE_DATA_MIRROR)")
    run.add_argument("--num-cpus", type=int, help="CPUs of the embedded local Ray (default: all)")
    run.set_defaults(func=cmd_run)

    validate = sub.add_parser("validate", help="parse and validate a spec; print it resolved")
    validate.add_argument("spec")
    validate.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE")
    validate.set_defaults(func=cmd_validate)

    data = sub.add_parser("data", help="datasets: fetch from the canonical URL or a mirror")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    fetch = data_sub.add_parser("fetch", help="fetch a dataset and verify its checksums")
    fetch.add_argument("name")
    fetch.add_argument("--mirror", help="take files from this directory (default: LMPIPE_DATA_MIRROR)")
    fetch.add_argument("--dest", help="where to put the files (default: LMPIPE_DATA_HOME or ~/.cache/lmpipe/data)")
    fetch.set_defaults(func=cmd_data_fetch)
    listing = data_sub.add_parser("list", help="list known datasets")
    listing.set_defaults(func=cmd_data_list)

    ev = sub.add_parser("eval", help="perplexity of a run's n-gram model with KenLM's accounting")
    ev.add_argument("run", help="run directory")
    ev.add_argument("--split", default="test", choices=["train", "valid", "test"])
    ev.add_argument("--json", action="store_true", help="also print all figures as JSON")
    ev.set_defaults(func=cmd_eval)

    gen = sub.add_parser("generate", help="sample text from a run's trained recurrent language model (lm stage)")
    gen.add_argument("run", help="run directory")
    gen.add_argument("--model", help="model name of lm.models (default: the first)")
    gen.add_argument("--prompt", default="", help="text the sample continues (tokenized like the corpus)")
    gen.add_argument("--max-tokens", type=int, default=50)
    gen.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    gen.add_argument("--seed", type=int, default=0)
    gen.set_defaults(func=cmd_generate)

    cmp = sub.add_parser("compare", help="one table over every model of one or more runs (perplexity, vectors)")
    cmp.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    cmp.add_argument("--split", default="test", choices=["train", "valid", "test"])
    cmp.add_argument(
        "--normalize", default="none", choices=["none", "bpb"],
        help="bpb: rank by bits per byte, so runs of different tokenizations can share a table",
    )  # fmt: skip
    cmp.add_argument("--out", help="also write report.md, CSV, JSON and PNG plots into this directory")
    cmp.set_defaults(func=cmd_compare)

    from embeddings.cli import add_embeddings_commands

    add_embeddings_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    from pipelines.datasets import DatasetError
    from pipelines.ingest import InputError
    from pipelines.report import CompareError
    from pipelines.spec import SpecError

    try:
        return int(args.func(args) or 0)
    except (SpecError, InputError, DatasetError, FileNotFoundError, CompareError) as exc:
        print(f"lmpipe: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lmpipe: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
