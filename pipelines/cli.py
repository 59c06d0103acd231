"""The ``lmpipe`` command line.

    lmpipe run SPEC|NAME [--run-dir DIR] [--address ADDR] [--stages a,b] [--force a,b] [--set key.path=value ...]
    lmpipe validate SPEC [--run-dir DIR] [--stages a,b] [--set key.path=value ...]
    lmpipe data fetch NAME [--mirror DIR] [--dest DIR]
    lmpipe data list                                   (a table: name, splits, size, cached or mirrored)
    lmpipe init CORPUS... [--out FILE]                 (a commented starter spec: spec_cli)
    lmpipe schema [--out FILE] | lmpipe completion bash|zsh                       (spec_cli)
    lmpipe eval RUN [--split test] [--json]
    lmpipe generate RUN [--model NAME] --prompt TEXT --max-tokens N --temperature T --seed S
    lmpipe score RUN --model NAME --input PATH... [--out F.jsonl|F.parquet] [--keep-below P|--keep-fraction F --kept PATH]
    lmpipe compare RUN [RUN ...] [--split test] [--normalize none|bpb] [--out DIR] [--ci MODEL_A MODEL_B]
    lmpipe mix RUN --models kn5,lstm [--tune valid] [--method em|grid|fixed] [--bins 10,100,1000]
    lmpipe tune SPEC --stage tagger [--samples N] [--run-dir DIR] [--set key.path=value ...]
    lmpipe embeddings export RUN ... | neighbors|analogy WHERE ... | import PATH --format F --out DIR  (embeddings_cli)
    lmpipe submit SPEC --address http://HEAD:8265 [--run-dir DIR] [--wait] [--set key.path=value ...]  (cluster.cli)
    lmpipe jobs list|status|logs|stop [JOB] --address http://HEAD:8265                           (cluster.cli)

Exit status: 0 on success, 2 for a mistake the user can fix (a ``UserError``: bad spec, bad input, a missing
file or upstream stage, more workers than the machine has; the message, one line, names file, key or line),
1 for anything else (a bug: it traces back).  ``-v``/``-q`` go anywhere on the line; a SPEC may be the name of
a shipped spec (``lmpipe run tiny``: pipelines/specs/tiny.yaml), see ``cli_support``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from lmpipe import __version__

logger = logging.getLogger("lmpipe")


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _mirror(args: argparse.Namespace) -> str | None:
    return getattr(args, "mirror", None) or os.environ.get("LMPIPE_DATA_MIRROR") or None


def cmd_run(args: argparse.Namespace) -> int:
    from lmpipe.cluster.storage import resolve_run_dir
    from lmpipe.pipelines.run import run_pipeline
    from lmpipe.pipelines.spec import load_spec

    spec = load_spec(args.spec, overrides=args.set)
    run_dir = resolve_run_dir(args.run_dir) if args.run_dir else Path("runs") / spec.name
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
        state = (
            "skipped (up to date)" if manifest.get("skipped") else f"{manifest['timings']['seconds']:.1f} s"
        )
        print(f"  {name}: {state}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Parse the spec and run every check ``run`` would before starting Ray (datasets, files, upstream
    stages, workers against this machine when no address is given): a spec that validates runs."""
    from lmpipe.cluster.storage import resolve_run_dir
    from lmpipe.pipelines.core.redact import redact
    from lmpipe.pipelines.run import preflight, select_stages
    from lmpipe.pipelines.spec import dump_spec, load_spec
    from lmpipe.pipelines.stages import StageContext

    spec = load_spec(args.spec, overrides=args.set)
    selected = select_stages(spec, _csv(args.stages) if args.stages else None)
    run_dir = resolve_run_dir(args.run_dir) if args.run_dir else Path("runs") / spec.name
    ctx = StageContext(
        spec=spec, run_dir=run_dir.resolve(), mirror=_mirror(args), selected=tuple(selected), address=args.address,
        num_cpus=args.num_cpus,
    )  # fmt: skip
    preflight(ctx)
    print(redact(dump_spec(spec)), end="")
    print(f"# {args.spec}: valid", file=sys.stderr)
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from lmpipe.pipelines.datasets.fetch import fetch

    path = fetch(args.name, dest=Path(args.dest) if args.dest else None, mirror=_mirror(args))
    print(path)
    return 0


def cmd_data_list(args: argparse.Namespace) -> int:
    import shutil

    from lmpipe.pipelines.datasets.listing import dataset_rows, format_table

    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    print(format_table(dataset_rows(mirror=_mirror(args)), width=width))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from lmpipe.pipelines.evaluate import evaluate_ngram
    from lmpipe.pipelines.runlock import RunLock

    with RunLock(Path(args.run), shared=True):  # a reader: not the model of one run and the split of the next
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
    from lmpipe.pipelines.generate import generate

    if args.max_tokens < 0 or args.temperature < 0:
        print("lmpipe: error: --max-tokens and --temperature must be 0 or more", file=sys.stderr)
        return 2

    text = generate(
        Path(args.run), model=args.model, prompt=args.prompt, max_tokens=args.max_tokens,
        temperature=args.temperature, seed=args.seed,
    )  # fmt: skip
    print(text)
    return 0


def cmd_mix(args: argparse.Namespace) -> int:
    import yaml

    from lmpipe.pipelines.core.errors import MissingError
    from lmpipe.pipelines.run import run_pipeline
    from lmpipe.pipelines.spec import SpecError, load_spec

    run_dir = Path(args.run)
    spec_file = run_dir / "spec.yaml"
    if not spec_file.is_file():
        raise MissingError(
            f"{spec_file}: not a run directory (no spec.yaml); run `lmpipe run SPEC` first"
        )
    if args.tune != "valid":
        raise SpecError(
            f"--tune: bad value {args.tune!r}; weights are fitted on valid only (test stays unseen)"
        )
    mixture: dict[str, object] = {"models": _csv(args.models), "method": args.method}
    if args.name:
        mixture["name"] = args.name
    if args.bins:
        mixture["context_bins"] = [int(b) for b in _csv(args.bins)]
    if args.weights:
        mixture["weights"] = [float(w) for w in _csv(args.weights)]
    overrides = [
        f"mix.mixtures={yaml.safe_dump([mixture], default_flow_style=True).strip()}",
        f"mix.bootstrap_samples={args.bootstrap}",
    ]
    spec = load_spec(spec_file, overrides=overrides)
    manifest = run_pipeline(spec, run_dir=run_dir, stages=["mix"], force=["mix"])["mix"]
    from lmpipe.pipelines.stages.mix import summary

    for line in summary(manifest):
        print(line)
    return 0


def _bootstrap_models(runs: list[str], names: list[str], split: str, samples: int) -> None:
    """Paired bootstrap of two models' perplexity difference from their token-score files."""
    from lmpipe.lm.bootstrap import paired_bootstrap
    from lmpipe.lm.token_scores import read_token_scores
    from lmpipe.pipelines.report_rows import CompareError
    from lmpipe.pipelines.run_scores import find_token_scores

    available: dict[str, Path] = {}
    for run in runs:
        for model, splits in find_token_scores(Path(run)).items():
            if split in splits:
                available.setdefault(model, splits[split])
    missing = [n for n in names if n not in available]
    if missing:
        raise CompareError(f"--ci: no per-token scores on {split} for {missing}; models with scores: {sorted(available)}")
    a, b = (read_token_scores(available[n]) for n in names)
    result = paired_bootstrap(a, b, samples=samples)
    print(
        f"ppl({names[0]}) - ppl({names[1]}) on {split}: {result.difference:+.3f}, {int(100 * result.confidence)}% CI "
        f"[{result.low:+.3f}, {result.high:+.3f}] ({result.samples} paired resamplings of sentences; "
        f"{names[0]} not better in {100 * result.a_not_better:.1f}% of them)"
    )


def cmd_compare(args: argparse.Namespace) -> int:
    from lmpipe.pipelines.report import embeddings_markdown, models_markdown, write_report
    from lmpipe.pipelines.report_rows import collect, compare, merge

    report = merge(collect(Path(run)) for run in args.runs)
    normalize = None if args.normalize == "none" else args.normalize
    multi = len(args.runs) > 1
    has_split = any(r.split == args.split for r in report.models)
    if has_split:
        print(models_markdown(compare(report, split=args.split, normalize=normalize), multi_run=multi))
    elif report.models:
        splits = sorted({r.split for r in report.models})
        print(
            f"no language model was scored on the {args.split!r} split (scored splits: {splits})",
            file=sys.stderr,
        )
    if report.embeddings:
        print(embeddings_markdown(report.embeddings, multi_run=multi))
    if not report.models and not report.embeddings:
        print("lmpipe: error: these runs hold no scored language model and no word vectors", file=sys.stderr)
        return 2
    if args.ci:
        _bootstrap_models(args.runs, args.ci, args.split, args.bootstrap)
    if args.out:
        written = write_report(report, Path(args.out), split=args.split, normalize=normalize)
        print(f"wrote {', '.join(written['files'])} to {args.out}")
    return 0


#: Stage -> the module whose ``tune(ctx, samples, out_dir)`` searches its settings.
TUNERS = {"tagger": "lmpipe.pipelines.tune_tagger"}


def cmd_tune(args: argparse.Namespace) -> int:
    from lmpipe.cluster.connect import connect
    from lmpipe.pipelines.spec import load_spec
    from lmpipe.pipelines.stages import StageContext

    spec = load_spec(args.spec, overrides=args.set)
    if args.stage not in TUNERS:
        print(
            f"lmpipe: error: --stage {args.stage}: this stage has no search space; tunable stages: tagger",
            file=sys.stderr,
        )
        return 2
    run_dir = (Path(args.run_dir) if args.run_dir else Path("runs") / spec.name).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    ctx = StageContext(spec=spec, run_dir=run_dir, mirror=_mirror(args), address=args.address, num_cpus=args.num_cpus)
    connect(args.address, num_cpus=args.num_cpus)
    out = Path(args.out) if args.out else run_dir / f"tune-{args.stage}"
    from lmpipe.pipelines.runlock import RunLock

    with RunLock(run_dir):  # it reads the run's stages and writes beside them: not while a run changes them
        best = importlib.import_module(TUNERS[args.stage]).tune(ctx, args.samples, out)
    print(f"best {best['metric']} {best['score']:.4f} (epoch {best['epoch']}) with {best['params']}")
    print(f"trials: {out / 'trials.tsv'}; best settings: {out / 'best.yaml'}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    """The spec is validated and resolved here, before the cluster is contacted; cluster/ only ships it."""
    from lmpipe.cluster.cli import submit_spec
    from lmpipe.pipelines.submission import shipped_spec

    return submit_spec(args, shipped_spec(args.spec, overrides=args.set), version=__version__)


def build_parser() -> argparse.ArgumentParser:
    from lmpipe.pipelines.cli_support import Parser, add_log_flags, finish_parser, shipped_specs

    specs = f"pipeline YAML, or a shipped spec by name: {', '.join(shipped_specs())}"
    parser = Parser(
        prog="lmpipe",
        description="Distributed pipeline on Ray for word embeddings and large-corpus language modelling.",
    )
    parser.add_argument("--version", action="version", version=f"lmpipe {__version__}")
    add_log_flags(parser, default=False)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run", help="run a pipeline spec (stages already done with the same inputs are skipped)"
    )
    run.add_argument("spec", help=specs)
    run.add_argument("--run-dir", help="run directory (default runs/<spec name>)")
    run.add_argument(
        "--address", help="Ray cluster address (default: RAY_ADDRESS, else an embedded local Ray)"
    )
    run.add_argument("--stages", help="comma-separated stages to run (default: the spec's `stages`)")
    run.add_argument("--force", help="comma-separated stages to recompute even if up to date")
    run.add_argument(
        "--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="override a spec value (YAML)"
    )
    run.add_argument("--mirror", help="dataset mirror directory (default: LMPIPE_DATA_MIRROR)")
    run.add_argument("--num-cpus", type=int, help="CPUs of the embedded local Ray (default: all)")
    run.set_defaults(func=cmd_run)

    validate = sub.add_parser(
        "validate", help="parse a spec and run every check `run` makes before starting Ray; print it resolved"
    )
    validate.add_argument("spec", help=specs)
    validate.add_argument(
        "--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="override a spec value (YAML)"
    )
    validate.add_argument("--run-dir", help="run directory upstream stages are looked for in (default runs/<spec name>)")
    validate.add_argument("--stages", help="comma-separated stages to check (default: the spec's `stages`)")
    validate.add_argument("--mirror", help="dataset mirror directory (default: LMPIPE_DATA_MIRROR)")
    validate.add_argument("--address", help="the Ray cluster the run will join (workers are then not checked here)")
    validate.add_argument("--num-cpus", type=int, help="CPUs the embedded local Ray will have (default: all)")
    validate.set_defaults(func=cmd_validate)

    data = sub.add_parser("data", help="datasets: fetch from the canonical URL or a mirror")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    fetch = data_sub.add_parser("fetch", help="fetch a dataset and verify its checksums")
    fetch.add_argument("name", help="dataset name (see `lmpipe data list`)")
    fetch.add_argument("--mirror", help="take files from this directory (default: LMPIPE_DATA_MIRROR)")
    fetch.add_argument(
        "--dest", help="where to put the files (default: LMPIPE_DATA_HOME or ~/.cache/lmpipe/data)"
    )
    fetch.set_defaults(func=cmd_data_fetch)
    listing = data_sub.add_parser("list", help="list known datasets: splits, size, cached or mirrored")
    listing.add_argument("--mirror", help="dataset mirror directory (default: LMPIPE_DATA_MIRROR)")
    listing.set_defaults(func=cmd_data_list)

    ev = sub.add_parser("eval", help="perplexity of a run's n-gram model with KenLM's accounting")
    ev.add_argument("run", help="run directory")
    ev.add_argument("--split", default="test", choices=["train", "valid", "test"], help="the split to score")
    ev.add_argument("--json", action="store_true", help="also print all figures as JSON")
    ev.set_defaults(func=cmd_eval)

    gen = sub.add_parser(
        "generate", help="sample text from a run's trained recurrent language model (lm stage)"
    )
    gen.add_argument("run", help="run directory")
    gen.add_argument("--model", help="model name of lm.models (default: the first)")
    gen.add_argument("--prompt", default="", help="text the sample continues (tokenized like the corpus)")
    gen.add_argument("--max-tokens", type=int, default=50, help="tokens to sample after the prompt")
    gen.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    gen.add_argument("--seed", type=int, default=0, help="random seed of the sampling")
    gen.set_defaults(func=cmd_generate)

    from lmpipe.pipelines.score_cli import add_parser as add_score_parser

    add_score_parser(sub)

    cmp = sub.add_parser(
        "compare", help="one table over every model of one or more runs (perplexity, vectors)"
    )
    cmp.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    cmp.add_argument("--split", default="test", choices=["train", "valid", "test"], help="the split models are ranked by")
    cmp.add_argument(
        "--normalize", default="none", choices=["none", "bpb"],
        help="bpb: rank by bits per byte, so runs of different tokenizations can share a table",
    )  # fmt: skip
    cmp.add_argument("--out", help="also write report.md, report.html, CSV, JSON and PNG plots into this directory")
    cmp.add_argument(
        "--ci", nargs=2, metavar=("MODEL_A", "MODEL_B"), help="paired bootstrap CI of ppl(A) - ppl(B)"
    )
    cmp.add_argument(
        "--bootstrap", type=int, default=1000, help="bootstrap resamplings for --ci (default 1000)"
    )
    cmp.set_defaults(func=cmd_compare)

    mix = sub.add_parser("mix", help="interpolate models of a run (weights fitted on valid), scored on test")
    mix.add_argument("run", help="run directory")
    mix.add_argument("--models", required=True, help="comma-separated model names, e.g. kn5,lstm")
    mix.add_argument("--tune", default="valid", help="split the weights are fitted on (valid only)")
    mix.add_argument(
        "--method", default="em", choices=["em", "grid", "fixed"], help="em: fit the weights; grid: 21 weights (2 models); fixed: --weights"
    )
    mix.add_argument("--weights", help="comma-separated weights for --method fixed")
    mix.add_argument("--bins", help="context-frequency thresholds for per-bin weights, e.g. 10,100,1000")
    mix.add_argument("--name", help="name of the mixture (default: the models joined by +)")
    mix.add_argument("--bootstrap", type=int, default=1000, help="paired bootstrap resamplings (0: none)")
    mix.set_defaults(func=cmd_mix)

    tn = sub.add_parser("tune", help="random hyper-parameter search with Ray Tune + ASHA (tagger stage)")
    tn.add_argument("spec", help=specs)
    tn.add_argument("--stage", required=True, choices=sorted(TUNERS), help="the stage to tune")
    tn.add_argument("--samples", type=int, default=10, help="random trials (default 10)")
    tn.add_argument(
        "--run-dir", help="run directory (default runs/<spec name>); results in RUN/tune-<stage>/"
    )
    tn.add_argument("--out", help="where trials.tsv, best.json and best.yaml go (default RUN/tune-<stage>)")
    tn.add_argument(
        "--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="override a spec value (YAML)"
    )
    tn.add_argument("--mirror", help="dataset mirror directory (default: LMPIPE_DATA_MIRROR)")
    tn.add_argument(
        "--address", help="Ray cluster address (default: RAY_ADDRESS, else an embedded local Ray)"
    )
    tn.add_argument("--num-cpus", type=int, help="CPUs of the embedded local Ray (default: all)")
    tn.set_defaults(func=cmd_tune)

    from lmpipe.pipelines.embeddings_cli import add_embeddings_commands

    add_embeddings_commands(sub)
    from lmpipe.cluster.cli import add_cluster_commands

    add_cluster_commands(sub, submit_command=cmd_submit)
    from lmpipe.pipelines.spec_cli import add_spec_commands

    add_spec_commands(sub, parser)
    return finish_parser(parser)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from lmpipe.pipelines.cli_support import log_level, resolve_spec

    logging.basicConfig(
        level=log_level(args),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # cluster/ imports no project code, so its user errors do not subclass UserError: named here.
    from lmpipe.cluster.connect import ResourceError
    from lmpipe.cluster.jobs import SubmitError
    from lmpipe.cluster.storage import StorageError
    from lmpipe.pipelines.core.errors import UserError
    from lmpipe.pipelines.core.redact import redact

    try:
        if isinstance(getattr(args, "spec", None), str):
            args.spec = resolve_spec(args.spec)  # `lmpipe run tiny`: a shipped spec by name
        return int(args.func(args) or 0)
    except (UserError, SubmitError, StorageError, ResourceError) as exc:
        print(f"lmpipe: error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lmpipe: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `lmpipe schema | head`: the reader stopped reading; not a failure
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def entry() -> None:
    """The ``lmpipe`` command: :func:`main`, then exit without the interpreter's collection of every object
    alive (``gc.freeze``).

    Why: after a stage the process holds numba's and Arrow's ~150k objects, and the cyclic collections of
    interpreter shutdown took ~0.2 s of every ``lmpipe`` command (0.03 s frozen) -- 5-10% of a small n-gram
    run against lmplz.  Files are closed by their ``with`` blocks and the standard streams are flushed as
    usual; only garbage cycles alive at exit go uncollected, which the exit frees anyway."""
    import gc

    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    entry()
