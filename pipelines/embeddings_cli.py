"""``lmpipe embeddings ...``: export, inspect and import the word vectors of a run.

    lmpipe embeddings export RUN [--stage sgns|glove] --format FORMAT --out PATH
    lmpipe embeddings neighbors WHERE WORD... [-k 10] [--stage sgns|glove] [--format FORMAT]
    lmpipe embeddings analogy WHERE --positive W... [--negative W...] [-k 10] [--method 3cosadd|3cosmul]
    lmpipe embeddings import PATH --format FORMAT --out DIR [--overwrite]

FORMAT is one of ``word2vec-text``, ``word2vec-bin`` (both what gensim's
``KeyedVectors.load_word2vec_format`` reads), ``glove`` (no header), ``npy`` (``PATH`` plus
``<stem>.vocab.tsv``) or ``safetensors`` (a ``<stem>.vocab.tsv`` beside it when the vocabulary is too large
for its header).  A stage's vectors are ``RUN/<stage>/vectors`` (an ``embeddings.vectors.Vectors``
directory); ``import`` writes one from a foreign file.  The queries read WHERE: a run, a vectors folder or
a vectors file in any of those formats (``pipelines.vector_source``); their answers are gensim's
``most_similar`` and ``most_similar_cosmul``.

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


def cmd_export(args: argparse.Namespace) -> int:
    from lmpipe.embeddings.formats import check_text_tokens, export_vectors
    from lmpipe.pipelines.ingest import InputError
    from lmpipe.pipelines.runlock import RunLock
    from lmpipe.pipelines.vector_source import stage_vectors

    # a reader: a run that would replace the stage's vectors (and vocabulary) is refused until it is written
    with RunLock(Path(args.run), shared=True):
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


def _check_words(vectors, words: list[str], args: argparse.Namespace) -> None:
    """One line naming the first unknown word (and a case variant that is known), exit 2."""
    from lmpipe.pipelines.ingest import InputError

    where = Path(args.where)
    kind = f"{args.stage} " if where.is_dir() and not (where / "meta.json").is_file() else ""
    for word in words:
        if word not in vectors:
            folded = [t for t in (word.lower(), word.upper(), word.capitalize()) if t in vectors]
            hint = f"; did you mean {folded[0]!r}?" if folded else ""
            raise InputError(f"{word!r} is not in the {kind}vocabulary of {where} ({len(vectors):,} words){hint}")


def _print_ranked(pairs: list[tuple[str, float]]) -> None:
    for rank, (token, score) in enumerate(pairs, start=1):
        print(f"{rank:>3}  {score:.4f}  {token}")


def _positive_k(k: int) -> None:
    from lmpipe.pipelines.ingest import InputError

    if k < 1:
        raise InputError(f"-k: bad value {k}; allowed: an integer >= 1")


def cmd_neighbors(args: argparse.Namespace) -> int:
    from lmpipe.pipelines.vector_source import open_vectors

    _positive_k(args.k)
    vectors = open_vectors(args.where, stage=args.stage, fmt=FORMATS.get(args.format))
    _check_words(vectors, args.words, args)
    for i, word in enumerate(args.words):
        if len(args.words) > 1:
            print(("\n" if i else "") + f"{word}:")
        _print_ranked(vectors.most_similar(word, k=args.k))
    return 0


def cmd_analogy(args: argparse.Namespace) -> int:
    from lmpipe.pipelines.vector_source import open_vectors

    _positive_k(args.k)
    vectors = open_vectors(args.where, stage=args.stage, fmt=FORMATS.get(args.format))
    _check_words(vectors, args.positive + args.negative, args)
    _print_ranked(vectors.analogy(args.positive, args.negative, args.k, method=args.method))
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
    """Add ``embeddings {export,neighbors,analogy,import}`` to the ``lmpipe`` parser."""
    emb = subparsers.add_parser("embeddings", help="export, inspect or import word vectors")
    sub = emb.add_subparsers(dest="embeddings_command", required=True)

    export = sub.add_parser("export", help="write a stage's vectors in another tool's format")
    export.add_argument("run", help="run directory")
    export.add_argument("--stage", choices=STAGES, default="sgns", help="the stage whose vectors are exported")
    export.add_argument("--format", choices=list(FORMATS), required=True, help="file format to write")
    export.add_argument("--out", required=True, help="output file (npy also writes <stem>.vocab.tsv)")
    export.set_defaults(func=cmd_export)

    where_help = "a run directory, a vectors folder (lmpipe embeddings import) or a vectors file"
    format_help = "format of a vectors file (default: from its suffix and first line)"
    neighbors = sub.add_parser("neighbors", help="the nearest words by cosine similarity (gensim most_similar)")
    neighbors.add_argument("where", metavar="WHERE", help=where_help)
    neighbors.add_argument("words", metavar="WORD", nargs="+", help="query word(s), answered one after another")
    neighbors.add_argument("-k", type=int, default=10, help="how many neighbours (default 10)")
    neighbors.add_argument("--stage", choices=STAGES, default="sgns", help="a run's stage (default sgns)")
    neighbors.add_argument("--format", choices=list(FORMATS), help=format_help)
    neighbors.set_defaults(func=cmd_neighbors)

    analogy = sub.add_parser(
        "analogy", help="positive - negative, e.g. --positive king woman --negative man (gensim most_similar)"
    )
    analogy.add_argument("where", metavar="WHERE", help=where_help)
    analogy.add_argument("--positive", nargs="+", required=True, metavar="W", help="words added")
    analogy.add_argument("--negative", nargs="*", default=[], metavar="W", help="words subtracted")
    analogy.add_argument("-k", type=int, default=10, help="how many answers (default 10)")
    analogy.add_argument(
        "--method", choices=("3cosadd", "3cosmul"), default="3cosadd",
        help="3cosadd: most_similar (default); 3cosmul: most_similar_cosmul (Levy & Goldberg 2014)",
    )  # fmt: skip
    analogy.add_argument("--stage", choices=STAGES, default="sgns", help="a run's stage (default sgns)")
    analogy.add_argument("--format", choices=list(FORMATS), help=format_help)
    analogy.set_defaults(func=cmd_analogy)

    imp = sub.add_parser("import", help="read a foreign vectors file into a vectors directory")
    imp.add_argument("path", help="the vectors file to read")
    imp.add_argument("--format", choices=list(FORMATS), required=True, help="format of PATH")
    imp.add_argument("--out", required=True, help="vectors directory to write")
    imp.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    imp.set_defaults(func=cmd_import)
