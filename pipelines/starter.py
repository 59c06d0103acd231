"""``lmpipe init CORPUS...``: a commented starter spec for a user's own text.

The spec names the corpus (with a deterministic valid/test split carved out of it unless ``--valid``/``--test``
files are given), the main settings of the tokenize, ngram and sgns stages with their defaults (read from the
spec dataclasses, so the comments cannot drift from what runs), and commented-out lines for the options
users of lmplz and word2vec look for.  It is parsed before it is written: ``init`` never writes a spec that
``lmpipe validate`` would refuse for its shape.
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import yaml

from lmpipe import __version__
from lmpipe.pipelines.core.errors import MissingError, UserError
from lmpipe.pipelines.spec import STAGE_ORDER, NgramSpec, SgnsSpec, VocabSpec, parse_spec

_SUFFIXES = (".gz", ".txt", ".jsonl", ".parquet", ".tokens", ".raw")
_GENERIC = {"train", "training", "valid", "dev", "test", "corpus", "data", "text", "all", "*"}


def _is_local(ref: str) -> bool:
    return not ("://" in ref or ref.startswith("data:"))


def _check_ref(ref: str) -> None:
    """A local file must exist (a glob must match); a ``data:`` reference must name a registered dataset."""
    if ref.startswith("data:"):
        from lmpipe.pipelines.datasets.registry import get

        get(ref[len("data:") :].split("/", 1)[0])  # raises listing the dataset names
    elif _is_local(ref):
        if glob.has_magic(ref):
            if not glob.glob(os.path.expanduser(ref), recursive=True):
                raise MissingError(f"{ref}: the pattern matches no file")
        elif not Path(ref).expanduser().exists():
            raise MissingError(f"{ref}: no such file or directory")


def default_name(ref: str) -> str:
    """A run name from the first corpus entry: ``data/wiki.train.txt.gz`` -> ``wiki.train``, ``data:ptb/train`` -> ``ptb``."""
    if ref.startswith("data:"):
        stem = ref[len("data:") :].split("/", 1)[0]
    else:
        path = Path(ref.rstrip("/"))
        stem = path.name
        while stem.lower().endswith(_SUFFIXES):
            stem = stem[: stem.rfind(".")]
        if stem.lower() in _GENERIC and path.parent.name:  # corpora/bbc/train.txt -> bbc
            stem = path.parent.name
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip(".-")
    return stem or "my-corpus"


def _written(ref: str, base: Path | None) -> str:
    """How ``ref`` is written in the spec: relative to the spec's folder (spec paths are read beside the
    file), absolute when the spec goes to stdout; URIs and ``data:`` references unchanged."""
    if not _is_local(ref):
        return ref
    absolute = os.path.abspath(os.path.expanduser(ref))
    if base is None:
        return absolute
    relative = os.path.relpath(absolute, os.path.abspath(base))
    return absolute if relative.startswith("..") else relative  # beside or below the spec: kept movable


def _yaml_list(refs: Sequence[str], indent: str) -> str:
    return "".join(f"{indent}- {json.dumps(r)}\n" for r in refs)


def starter_spec(
    train: Sequence[str], *, valid: Sequence[str] = (), test: Sequence[str] = (), name: str | None = None,
    spec_dir: Path | None = None,
) -> str:  # fmt: skip
    """The text of a starter spec over these corpus entries; ``spec_dir`` is where it will be written
    (None: stdout, paths absolute)."""
    if not train:
        raise UserError("lmpipe init: name one or more training files, directories, globs or data:NAME/SPLIT references")
    for ref in (*train, *valid, *test):
        _check_ref(ref)
    name = name or default_name(train[0])
    ng, sg, vocab = NgramSpec(), SgnsSpec(), VocabSpec()

    def refs(items: Sequence[str]) -> list[str]:
        return [_written(r, spec_dir) for r in items]

    held_out = ""
    if valid:
        held_out += f"  valid:\n{_yaml_list(refs(valid), '    ')}"
    if test:
        held_out += f"  test:\n{_yaml_list(refs(test), '    ')}"
    if not held_out:
        held_out = (
            "  # No valid/test files given: 1% of the training lines each, chosen by a hash of the line\n"
            "  # (deterministic). Or name held-out text instead:  valid: [valid.txt]  test: [test.txt]\n"
            "  split:\n    valid: 0.01\n    test: 0.01\n    unit: line\n"
        )
    text = f"""\
# lmpipe pipeline spec for {name}, written by `lmpipe init` (lmpipe {__version__}).
# Check it:  lmpipe validate SPEC        Run it:  lmpipe run SPEC   (outputs in runs/{name}/)
# Every key, its type and default:  lmpipe schema   Examples: pipelines/specs/*.yaml (`lmpipe run tiny`).
# Relative paths are read relative to this file.
name: {json.dumps(name)}

corpus:
  # Text files (one sentence per line, .gz read too), directories, globs, .jsonl/.parquet (see text_field),
  # s3:// or gs:// URIs, or data:NAME/SPLIT references (`lmpipe data list`).
  train:
{_yaml_list(refs(train), "    ")}{held_out}
normalize:
  lowercase: false          # true: fold case before counting
  nfkc: false               # Unicode NFKC normalisation

tokenizer:
  kind: whitespace          # whitespace | regex | char | sentencepiece (then sp_vocab_size: 8000)

vocab:
  min_count: {vocab.min_count}              # rarer training words become <unk>
  max_size: null            # or a cap on the vocabulary (counting <s>, </s>, <unk>)

# Stages `lmpipe run` executes (in pipeline order: {", ".join(STAGE_ORDER)}).
# A stage whose settings and inputs did not change is skipped on the next run.
stages: [tokenize, ngram, sgns, report]

ngram:                      # modified Kneser-Ney, the same ARPA as KenLM's lmplz
  order: {ng.order}                  # lmplz -o
  memory_mb: 2G             # per worker, as lmplz -S: 512M, 2G or 80% (of physical memory)
  workers: {ng.workers}
  # prune: [0, 0, 1]        # lmplz --prune: drop n-grams seen at most this often, per order
  # discount_fallback: true # lmplz --discount_fallback (0.5 1 1.5) for orders with too few counts
  # temp_dir: /tmp          # lmplz -T: spill files on a local disk instead of the run directory
  # estimator: lmplz        # run an installed KenLM lmplz instead of the Ray estimator

sgns:                       # word2vec skip-gram with negative sampling (defaults: word2vec.c's)
  dim: {sg.dim}                  # word2vec -size, gensim vector_size
  window: {sg.window}                 # -window
  negative: {sg.negative}               # -negative
  epochs: {sg.epochs}                 # -iter, gensim epochs
  min_count: {sg.min_count}              # -min-count
  workers: {sg.workers}                # Ray Train workers; use_gpu: true for a GPU each
  # threads: 4              # Hogwild threads per worker (word2vec -threads)

# More stages: cooccur + glove (GloVe vectors), lm (recurrent language models), tagger, mix.
# See `lmpipe schema` for their keys, pipelines/specs/ptb-glove.yaml and ptb-lm.yaml for examples.
"""
    parse_spec(yaml.safe_load(text), source="lmpipe init")  # a programming error if the template went wrong
    return text
