"""``lmpipe embeddings ...``: export, inspect and import the word vectors of a run.

    lmpipe embeddings export RUN [--stage sgns|glove] --format FORMAT --out PATH
    lmpipe embeddings neighbors RUN WORD [-k 10] [--stage sgns|glove]
    lmpipe embeddings import PATH --format FORMAT --out DIR [--overwrite]

FORMAT is one of ``word2vec-text``, ``word2vec-bin`` (both what gensim's
``KeyedVectors.load_word2vec_format`` reads), ``glove`` (no header), ``npy`` (``PATH`` plus
``<stem>.vocab.tsv``) or ``safetensors``.  A stage's vectors are ``RUN/<stage>/vectors`` (an
``embeddings.vectors.Vectors`` directory); ``import`` writes one from a foreign file.

Bad input (no such run or stage, a word outside the vocabulary, an existing output) raises
``FileNotFoundError`` or ``InputError``, which ``lmpipe`` turns into a message and exit status 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lmpipe.pipelines.core.errors import MissingError

#: Command-line format names -> ``embeddings.formats`` names.
FORMATS = {
    "word2vec-text": "word2vec",
    "word2vec-bin": "word2vec-bin",
    "glove": "glove",
    "npy": "npy",
    "safetensors": "safetensors",
}
STAGES = ("sgns", "glove")


def stage_vectors(run: str | Path, stage: str):
    """The ``Vectors`` a finished stage wrote, or a MissingError naming what is missing and the fix."""
    from lmpipe.embeddings.vectors import Vectors
    from lmpipe.pipelines.rundir import read_manifest

    run = Path(run)
    if not run.is_dir():
        raise MissingError(f"{run}: no such run directory")
    if read_manifest(run, stage) is None:
        raise MissingError(
            f"{run / stage}: the {stage} stage has not completed in this run; run it first "
            f"(lmpipe run SPEC --run-dir {run} --stages {stage})"
        )
    path = run / stage / "vectors"
    if not (path / "meta.json").is_file():
        raise MissingError(f"{path}: the {stage} stage left no vectors")
    return Vectors.load(path)


def cmd_export(args: argparse.Namespace) -> int:
    from lmpipe.embeddings.formats import check_text_tokens, export_vectors
    from lmpipe.pipelines.ingest import InputError

    vectors = stage_vectors(args.run, args.stage)
    fmt = FORMATS[args.format]
    if fmt in ("word2vec", "word2vec-bin", "glove"):
        try:
            check_text_tokens(vectors, args.format)
        except ValueError as exc:
            raise InputError(str(exc)) from None
    export_vectors(vectors, args.out, fmt)
    print(f"{args.out}: {len(vectors):,} x {vectors.dim} vectors ({args.format})")
    return 0


def cmd_neighbors(args: argparse.Namespace) -> int:
    from lmpipe.pipelines.ingest import InputError

    if args.k < 1:
        raise InputError(f"-k: bad value {args.k}; allowed: an integer >= 1")
    vectors = stage_vectors(args.run, args.stage)
    if args.word not in vectors:
        folded = [t for t in (args.word.lower(), args.word.upper(), args.word.capitalize()) if t in vectors]
        hint = f"; did you mean {folded[0]!r}?" if folded else ""
        raise InputError(f"{args.word!r} is not in the {args.stage} vocabulary of {len(vectors):,} words{hint}")
    for rank, (token, score) in enumerate(vectors.most_similar(args.word, k=args.k), start=1):
        print(f"{rank:>3}  {score:.4f}  {token}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from lmpipe.embeddings.formats import import_vectors
    from lmpipe.pipelines.ingest import InputError

    src, out = Path(args.path), Path(args.out)
    if not src.is_file():
        raise MissingError(f"{src}: no such file")
    if out.exists() and not args.overwrite:
        raise InputError(f"{out}: exists; pass --overwrite to replace it")
    try:
        vectors = import_vectors(src, FORMATS[args.format])
    except (ValueError, KeyError) as exc:  # malformed file: the reader names the row or byte
        raise InputError(f"{src}: not a readable {args.format} file ({exc})") from None
    vectors.save(out, overwrite=args.overwrite)
    print(f"{out}: {len(vectors):,} x {vectors.dim} vectors")
    return 0


def add_embeddings_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``embeddings {export,neighbors,import}`` to the ``lmpipe`` parser."""
    emb = subparsers.add_parser("embeddings", help="export, inspect or import word vectors")
    sub = emb.add_subparsers(dest="embeddings_command", required=True)

    export = sub.add_parser("export", help="write a stage's vectors in another tool's format")
    export.add_argument("run", help="run directory")
    export.add_argument("--stage", choices=STAGES, default="sgns", help="the stage whose vectors are exported")
    export.add_argument("--format", choices=list(FORMATS), required=True, help="file format to write")
    export.add_argument("--out", required=True, help="output file (npy also writes <stem>.vocab.tsv)")
    export.set_defaults(func=cmd_export)

    neighbors = sub.add_parser("neighbors", help="the nearest words by cosine similarity")
    neighbors.add_argument("run", help="run directory")
    neighbors.add_argument("word", help="the query word")
    neighbors.add_argument("-k", type=int, default=10, help="how many neighbours (default 10)")
    neighbors.add_argument("--stage", choices=STAGES, default="sgns", help="the stage whose vectors are queried")
    neighbors.set_defaults(func=cmd_neighbors)

    imp = sub.add_parser("import", help="read a foreign vectors file into a vectors directory")
    imp.add_argument("path", help="the vectors file to read")
    imp.add_argument("--format", choices=list(FORMATS), required=True, help="format of PATH")
    imp.add_argument("--out", required=True, help="vectors directory to write")
    imp.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    imp.set_defaults(func=cmd_import)
