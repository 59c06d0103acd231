"""The ``lmpipe score`` subcommand's arguments (the work is ``pipelines.score``; imported only when run)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_score(args: argparse.Namespace) -> int:
    from lmpipe.pipelines.score import score_files, summary_lines

    summary = score_files(
        Path(args.run), args.model, args.input, fmt=args.format, text_field=args.text_field,
        out=Path(args.out) if args.out else None, keep_below=args.keep_below, keep_fraction=args.keep_fraction,
        kept=Path(args.kept) if args.kept else None, workers=args.workers, device=args.device,
        chunk_mb=args.chunk_mb, address=args.address,
    )  # fmt: skip
    # Records go to stdout without --out, so the summary then goes to stderr.
    print("\n".join(summary_lines(summary)), file=sys.stdout if args.out else sys.stderr)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("score", help="per-line perplexity of new text under a run's model; perplexity filter")
    p.add_argument("run", help="run directory")
    p.add_argument("--model", required=True, help="kn<order>, an lm model name or a mixture name")
    p.add_argument("--input", nargs="+", required=True, help="files, directories or globs to score")
    p.add_argument(
        "--format", default="auto", choices=["auto", "text", "jsonl", "parquet"],
        help="input format (auto: from the suffix)",
    )  # fmt: skip
    p.add_argument("--text-field", default="text", help="JSONL field / Parquet column holding the text")
    p.add_argument("--out", help="records: .jsonl or .parquet (default: JSONL on stdout)")
    keep = p.add_mutually_exclusive_group()
    keep.add_argument("--keep-below", type=float, help="keep the lines with perplexity below PPL")
    keep.add_argument("--keep-fraction", type=float, help="keep the fraction F of lines with the lowest perplexity")
    p.add_argument("--kept", help="where the kept input lines are written, unchanged")
    p.add_argument("--workers", type=int, default=1, help="Ray actors (1: in this process)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (neural models)")
    p.add_argument("--chunk-mb", type=float, default=16.0, help="input chunk size, the unit of parallel work")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or a local instance)")
    p.set_defaults(func=cmd_score)
