"""Stanford's GloVe C tools, built from source, as the side-by-side peer of the cooccur + glove stages.

Why: on the English benchmark corpus our glove stage scores analogy 4.65% vs SGNS 10.49% (``bench/RESULTS.md``,
"cooccur + glove stages").  Either our trainer has a defect, or GloVe is simply weaker than SGNS on 3.6M words.
Running Stanford's own code on the same tokens, with the same settings, evaluated by the same code, decides it:

    system            counts            trainer                 what a difference would point at
    ours              cooccur stage     glove stage (torch)     -
    stanford          Stanford cooccur  Stanford glove          anything (counting, trainer)
    stanford-matrix   cooccur stage     Stanford glove          the trainer alone (same X, other optimiser)

Sources: Stanford's C files as shipped in the PyPI sdist of ``crucyble`` 0.1.0.dev4 (Apache-2.0,
``src/lib/glove/LICENSE``), downloaded once with urllib, sha256-checked and cached under
``${LMPIPE_CACHE:-~/.cache/lmpipe}/stanford-glove/``.  crucyble turned each tool's ``main()`` into a library
function (``vocab_count()``, ``cooccur()``, ``shuffle()``, ``train()``) with the parameters as globals, so
this module writes one small C driver per tool that reads ``-flag value`` pairs, sets the globals and calls
the function, and compiles it with ``gcc -O3 -pthread ... -lm`` (binaries cached by a hash of the sources,
the flags and the compiler).  The C files are used unmodified, with one build-time work-around:
``cooccur.c`` closes its log file and then ``merge_files()`` writes to it (use after ``fclose``), so
``cooccur.c`` is compiled with a forced-include shim that routes its ``fclose`` through the driver, which
keeps the log open until ``cooccur()`` returns.

Which glove.c this is.  crucyble's ``glove.c`` update rule is the original 2014 one (identical to upstream
``stanfordnlp/GloVe`` ``src/glove.c`` at commits 039b9ef / df70b05): no gradient clipping, ``fdiff *= eta``
once, so vector *and* bias steps are eta-scaled and AdaGrad accumulates the eta-scaled squares; parameters
initialised ``(rand()/RAND_MAX - 0.5) / (dim + 1)``; the shuffled file is read in the same order every
iteration; float64 throughout, one entry at a time.  Upstream's later ``glove.c`` (v1.2) clips
``fdiff * w`` to +-100 *before* multiplying by eta (as ``embeddings/glove.py`` does) and steps the biases
by ``fdiff / sqrt(G)`` without eta.  Our stage: clip-then-eta (v1.2) with eta-scaled biases (2014).  The
clip's placement cannot matter at these settings: over 25 PTB epochs of our trainer the largest
``|f(x) diff w|`` was 6.7, far from 100 (or from 100 / eta, were it applied after eta).

Measured (2026-11-22, dim 100, min_count 5, window 10, x_max 10, 25 iterations, 1 thread): the two systems
count identical matrices (same non-zeros, values within 1e-12 relative), reach the same cost per iteration
(English final 0.0230 ours vs 0.0233 Stanford) and score alike (PTB analogy 1.75% vs 1.77%, English 4.27-4.65%
over our seeds/worker counts vs 4.73-4.75%), all far below SGNS's 10.49% on English: the gap to SGNS is the
method on a small corpus, not a defect of our trainer.

Tokens: the Stanford tools read whitespace-separated words, one line = one window boundary.  For ``ptb`` and
``english`` this script runs our tokenize stage with exactly ``bench/glove.py``'s settings and writes its
training shards back out as text (one row per line, the stage's tokens, specials skipped as our cooccur
skips them), so both systems count the same token stream; the vocabularies then coincide (checked and
reported), and Stanford's co-occurrence matrix is compared entry by entry with the cooccur stage's.

    LMPIPE_DATA_MIRROR=../shared/data .venv/bin/python bench/stanford_glove.py                  # ptb + english
    .venv/bin/python bench/stanford_glove.py --corpora ptb --systems stanford stanford-matrix      # skip ours
    .venv/bin/python bench/stanford_glove.py --text corpus.txt --work /tmp/sg                      # any text file
    .venv/bin/python bench/stanford_glove.py --text corpus.txt --ours-vectors RUN/glove/vectors    # ... beside ours
    .venv/bin/python bench/stanford_glove.py --build-only                                          # fetch + compile

Results: a markdown table on stdout and ``<work>/results-<corpora or text>.json``; nothing is appended to
RESULTS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from common import embedding_scores

BENCH = Path(__file__).resolve().parent
logger = logging.getLogger("bench.stanford_glove")

SDIST_NAME = "crucyble-0.1.0.dev4"
SDIST_URL = (
    "https://files.pythonhosted.org/packages/8c/5a/85e67f5d53b6548f3b99883b1046710751ebb65ed7f6cbd1b5098ce58d17/"
    f"{SDIST_NAME}.tar.gz"
)
SDIST_SHA256 = "abf6d332cbde9e66e58e156e6a7af03c9312cad79437db5ee9d372335c506f28"
#: The files taken from the sdist's ``src/lib/glove/`` (nothing else of crucyble is used).
SOURCE_FILES = (
    "LICENSE", "vocab_count.c", "vocab_count.h", "cooccur.c", "cooccur.h", "shuffle.c", "shuffle.h",
    "glove.c", "glove.h",
)  # fmt: skip
TOOLS = ("vocab_count", "cooccur", "shuffle", "glove")
CC = "gcc"
CFLAGS = ("-O3", "-pthread")
LIBS = ("-lm",)
#: Stanford's binary co-occurrence record, ``struct {int word1; int word2; double val;}`` (16 bytes, no
#: padding on LP64), word ids 1-based in vocabulary-file order (glove.c: ``l1 = (cr.word1 - 1LL) * ...``).
CREC = np.dtype([("word1", "<i4"), ("word2", "<i4"), ("val", "<f8")])
_DOWNLOAD_TIMEOUT_S = 60
_COST_LINE = re.compile(r"iter: (\d+), cost: (\S+)")


# ------------------------------------------------------------------------------------------ sources
def cache_dir() -> Path:
    """``${LMPIPE_CACHE:-~/.cache/lmpipe}/stanford-glove`` (the same root as KenLM's binaries)."""
    root = os.environ.get("LMPIPE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "lmpipe")
    return Path(root) / "stanford-glove"


def download_sdist(cache: Path) -> Path:
    """The sdist in ``cache`` (downloaded once; a file with another sha256 is refused, never used)."""
    from lmpipe.pipelines.core.files import sha256_file

    target = cache / f"{SDIST_NAME}.tar.gz"
    if target.exists():
        if sha256_file(target) == SDIST_SHA256:
            return target
        raise RuntimeError(
            f"{target}: sha256 {sha256_file(target)} != {SDIST_SHA256}; delete it to download again"
        )
    cache.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s", SDIST_URL)
    h = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=cache, prefix=".download-", delete=False) as tmp:
        try:
            request = urllib.request.Request(SDIST_URL, headers={"User-Agent": "lmpipe-bench"})
            with urllib.request.urlopen(request, timeout=_DOWNLOAD_TIMEOUT_S) as response:  # noqa: S310 (fixed https URL)
                while chunk := response.read(1 << 16):
                    h.update(chunk)
                    tmp.write(chunk)
        except BaseException:
            os.unlink(tmp.name)
            raise
    if h.hexdigest() != SDIST_SHA256:
        os.unlink(tmp.name)
        raise RuntimeError(f"{SDIST_URL}: sha256 {h.hexdigest()} != {SDIST_SHA256}; refusing the download")
    os.replace(tmp.name, target)
    return target


def fetch_sources(cache: Path | None = None) -> Path:
    """``<cache>/src/<sdist>/``: Stanford's C files and LICENSE, extracted from the checked sdist once.

    Only the listed regular files are read out of the archive (by name, never ``extractall``), so a hostile
    archive cannot write elsewhere; a ``.complete`` stamp marks a finished extraction."""
    cache = cache or cache_dir()
    dest = cache / "src" / SDIST_NAME
    if (dest / ".complete").exists():
        return dest
    sdist = download_sdist(cache)
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".src-"))
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            for name in SOURCE_FILES:
                member = tar.getmember(f"{SDIST_NAME}/src/lib/glove/{name}")
                source = tar.extractfile(member) if member.isfile() else None
                if source is None:
                    raise RuntimeError(f"{sdist}: {member.name} is not a regular file")
                (tmp / name).write_bytes(source.read())
        (tmp / ".complete").write_text(SDIST_SHA256 + "\n")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


# ------------------------------------------------------------------------------------------ drivers
_PRELUDE = r"""/* lmpipe driver for Stanford GloVe's %(tool)s (crucyble's library form), written by bench/stanford_glove.py:
   reads "-flag value" pairs, sets the tool's globals and calls its library function. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <%(tool)s.h>

static const char *flag(int argc, char **argv, const char *name, const char *fallback) {
    int i;
    for (i = 1; i + 1 < argc; i += 2)
        if (strcmp(argv[i], name) == 0) return argv[i + 1];
    if (fallback == NULL) {
        fprintf(stderr, "%(tool)s driver: missing %%s\n", name);
        exit(2);
    }
    return fallback;
}
"""

DRIVERS: dict[str, str] = {
    "vocab_count": r"""
int main(int argc, char **argv) {
    return vocab_count((char *)flag(argc, argv, "-corpus", NULL), (char *)flag(argc, argv, "-vocab", NULL),
                       atoi(flag(argc, argv, "-verbose", "2")), atoll(flag(argc, argv, "-max-vocab", "0")),
                       atoll(flag(argc, argv, "-min-count", "1")), (char *)flag(argc, argv, "-log", NULL));
}
""",
    # cooccur.c is compiled with a shim that turns its fclose() into lmpipe_fclose(): get_cooccurrence()
    # closes `logfile` and then merge_files() writes to it; the log is kept open and closed here instead.
    "cooccur": r"""
extern FILE *logfile;

int lmpipe_fclose(FILE *stream) {
    if (stream == logfile) return fflush(stream);
    return fclose(stream);
}

int main(int argc, char **argv) {
    int rc = cooccur((char *)flag(argc, argv, "-corpus", NULL), (char *)flag(argc, argv, "-vocab", NULL),
                     (char *)flag(argc, argv, "-output", NULL), atoi(flag(argc, argv, "-verbose", "2")),
                     atoi(flag(argc, argv, "-symmetric", "1")), atoi(flag(argc, argv, "-window-size", "15")),
                     (char *)flag(argc, argv, "-overflow-file", NULL),
                     (float)atof(flag(argc, argv, "-memory", "1.0")), (char *)flag(argc, argv, "-log", NULL));
    if (logfile != NULL) fclose(logfile);
    return rc;
}
""",
    "shuffle": r"""
int main(int argc, char **argv) {
    return shuffle((char *)flag(argc, argv, "-input", NULL), (char *)flag(argc, argv, "-output", NULL),
                   (char *)flag(argc, argv, "-temp-file", NULL), atoi(flag(argc, argv, "-verbose", "2")),
                   (float)atof(flag(argc, argv, "-memory", "0.5")));
}
""",
    # glove.c's `real` is double.  use_binary 0 = text vectors only; train() always saves gradsq as well.
    "glove": r"""
extern int use_unk_vec, num_threads, num_iter, vector_size, use_binary, model;
extern double eta, alpha, x_max;

int main(int argc, char **argv) {
    vector_size = atoi(flag(argc, argv, "-vector-size", NULL));
    num_iter = atoi(flag(argc, argv, "-iter", NULL));
    num_threads = atoi(flag(argc, argv, "-threads", "1"));
    eta = atof(flag(argc, argv, "-eta", "0.05"));
    alpha = atof(flag(argc, argv, "-alpha", "0.75"));
    x_max = atof(flag(argc, argv, "-x-max", "100"));
    model = atoi(flag(argc, argv, "-model", "2"));
    use_unk_vec = atoi(flag(argc, argv, "-write-unk", "0"));
    use_binary = 0;
    return train((char *)flag(argc, argv, "-input-file", NULL), (char *)flag(argc, argv, "-vocab-file", NULL),
                 (char *)flag(argc, argv, "-save-file", NULL), (char *)flag(argc, argv, "-gradsq-file", NULL),
                 atoi(flag(argc, argv, "-verbose", "2")));
}
""",
}
_FCLOSE_SHIM = """/* forced include for cooccur.c (bench/stanford_glove.py): its fclose() goes through the driver. */
#include <stdio.h>
int lmpipe_fclose(FILE *stream);
#define fclose lmpipe_fclose
"""


def _run_checked(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {' '.join(argv)}\n{done.stderr[-3000:]}")


def build(src: Path | None = None, cache: Path | None = None) -> dict[str, Path]:
    """Compile one binary per tool (driver + the tool's C file); returns tool -> binary.

    A binary is named by a hash of its driver, shim, C sources, flags and ``gcc --version``, so a change to
    any of them rebuilds it and an unchanged one is reused; gcc runs one job at a time."""
    cache = cache or cache_dir()
    src = src or fetch_sources(cache)
    compiler = subprocess.run([CC, "--version"], capture_output=True, text=True, check=True).stdout
    binaries: dict[str, Path] = {}
    for tool in TOOLS:
        driver = _PRELUDE % {"tool": tool} + DRIVERS[tool]
        key = hashlib.sha256()
        for part in (driver, _FCLOSE_SHIM if tool == "cooccur" else "", " ".join(CFLAGS + LIBS), compiler):
            key.update(part.encode() + b"\0")
        for name in (f"{tool}.c", f"{tool}.h"):
            key.update((src / name).read_bytes() + b"\0")
        out = cache / "bin" / f"{tool}-{key.hexdigest()[:16]}"
        binaries[tool] = out
        if out.exists():
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache, prefix=".build-") as tmp_dir:
            tmp = Path(tmp_dir)
            (tmp / "driver.c").write_text(driver)
            objects = [str(src / f"{tool}.c")]
            if tool == "cooccur":
                (tmp / "fclose_shim.h").write_text(_FCLOSE_SHIM)
                obj = tmp / "cooccur.o"
                _run_checked(
                    [CC, *CFLAGS, "-I", str(src), "-include", str(tmp / "fclose_shim.h"), "-c", objects[0], "-o", str(obj)],
                    f"compiling {tool}.c",
                )  # fmt: skip
                objects = [str(obj)]
            binary = tmp / tool
            _run_checked(
                [CC, *CFLAGS, "-I", str(src), str(tmp / "driver.c"), *objects, "-o", str(binary), *LIBS],
                f"building {tool}",
            )  # fmt: skip
            os.replace(binary, out)
        logger.info("built %s", out)
    return binaries


# ------------------------------------------------------------------------------------------ running
@dataclass(frozen=True, kw_only=True, slots=True)
class Settings:
    """One GloVe configuration, spelled as Stanford's flags take it (defaults: bench/glove.py's PTB row)."""

    min_count: int = 5
    window: int = 10
    symmetric: bool = True
    x_max: float = 10.0
    alpha: float = 0.75
    eta: float = 0.05
    iterations: int = 25
    dim: int = 100
    threads: int = 1
    memory_gb: float = 1.0  # cooccur's soft limit; shuffle gets half
    verbose: int = 2


@dataclass(slots=True)
class StanfordRun:
    """What one pipeline produced: the text vectors, the vocabulary file, seconds per step, glove's costs."""

    work: Path
    vectors: Path
    vocab: Path
    cooccurrence: Path | None = None  # unshuffled cooccur output (text mode only)
    seconds: dict[str, float] = field(default_factory=dict)
    costs: list[float] = field(default_factory=list)


def _step(name: str, argv: list[str], work: Path, seconds: dict[str, float]) -> str:
    """Run one tool with its output in ``<work>/<name>.log``; record its wall time; return the log text."""
    log_path = work / f"{name}.log"
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False)
    seconds[name] = round(time.perf_counter() - started, 3)
    text = log_path.read_text(errors="replace")
    if done.returncode != 0:
        raise RuntimeError(f"Stanford {name} exited {done.returncode}: {' '.join(argv)}\n{text[-3000:]}")
    logger.info("stanford %s: %.1f s", name, seconds[name])
    return text


def _check_vocab_file(path: Path) -> int:
    """glove.c's save_params() stops at a vocabulary word ``<unk>`` (it reserves the name): refuse early."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if any(line.split(" ", 1)[0] == "<unk>" for line in lines):
        raise ValueError(
            f"{path}: the vocabulary holds the word <unk>, which Stanford glove refuses to write; rename it in "
            "the text (the ptb corpus here is tokenized with literal_specials: rename, <unk> -> [unk])"
        )
    if not lines:
        raise ValueError(f"{path}: empty vocabulary (min_count too high for this text?)")
    return len(lines)


def _shuffle_and_train(
    bins: dict[str, Path], crec: Path, vocab: Path, work: Path, s: Settings, seconds: dict[str, float]
) -> tuple[Path, list[float]]:
    shuffled = work / "cooccurrence.shuf.bin"
    _step(
        "shuffle",
        [str(bins["shuffle"]), "-input", str(crec), "-output", str(shuffled), "-temp-file", str(work / "temp_shuffle"),
         "-verbose", str(s.verbose), "-memory", str(s.memory_gb / 2)],
        work, seconds,
    )  # fmt: skip
    log = _step(
        "glove",
        [str(bins["glove"]), "-input-file", str(shuffled), "-vocab-file", str(vocab), "-save-file", str(work / "vectors"),
         "-gradsq-file", str(work / "gradsq"), "-verbose", str(s.verbose), "-vector-size", str(s.dim),
         "-iter", str(s.iterations), "-threads", str(s.threads), "-eta", repr(s.eta), "-alpha", repr(s.alpha),
         "-x-max", repr(s.x_max), "-model", "2", "-write-unk", "0"],
        work, seconds,
    )  # fmt: skip
    for extra in ("gradsq.txt", "gradsq.bin"):  # train() always saves the accumulators; not needed here
        (work / extra).unlink(missing_ok=True)
    shuffled.unlink()
    costs = [float(m.group(2)) for m in _COST_LINE.finditer(log)]
    return work / "vectors.txt", costs


def run_text(text: Path, work: Path, settings: Settings, bins: dict[str, Path]) -> StanfordRun:
    """Stanford's whole pipeline on a whitespace-tokenized text file: vocab_count -> cooccur -> shuffle -> glove."""
    work.mkdir(parents=True, exist_ok=True)
    if len(str(work / "overflow")) > 180:  # cooccur.c builds overflow names in a char[200]
        raise ValueError(f"{work}: path too long for Stanford cooccur's temporary file names")
    s, seconds = settings, {}
    vocab, cooc = work / "vocab.txt", work / "cooccurrence.bin"
    _step(
        "vocab_count",
        [str(bins["vocab_count"]), "-corpus", str(text), "-vocab", str(vocab), "-verbose", str(s.verbose),
         "-min-count", str(s.min_count), "-log", str(work / "vocab_count.stderr")],
        work, seconds,
    )  # fmt: skip
    _check_vocab_file(vocab)
    _step(
        "cooccur",
        [str(bins["cooccur"]), "-corpus", str(text), "-vocab", str(vocab), "-output", str(cooc), "-verbose",
         str(s.verbose), "-symmetric", str(int(s.symmetric)), "-window-size", str(s.window), "-overflow-file",
         str(work / "overflow"), "-memory", str(s.memory_gb), "-log", str(work / "cooccur.stderr")],
        work, seconds,
    )  # fmt: skip
    vectors, costs = _shuffle_and_train(bins, cooc, vocab, work, s, seconds)
    return StanfordRun(
        work=work, vectors=vectors, vocab=vocab, cooccurrence=cooc, seconds=seconds, costs=costs
    )


# ------------------------------------------------------------------------------------------ our matrix
def cooc_shards(cooccur_dir: Path) -> list[Path]:
    return sorted((cooccur_dir / "cooc").glob("part-*.arrow"))


def write_crec(cooccur_dir: Path, crec_path: Path, vocab_path: Path) -> dict[str, int]:
    """The cooccur stage's output as Stanford's input: CREC records (1-based ids) and a ``word count`` vocab.

    Row r of ``cooccur/vocab.tsv`` becomes line r + 1 of the vocabulary file, so id r is word r + 1 in
    glove.c; X[row, col] becomes ``{row + 1, col + 1, value}`` (row = the word, glove.c's W; col = the
    context, W~), in the shards' order (shuffle randomises it)."""
    from lmpipe.pipelines.core.vocab_tsv import read_vocab_tsv

    tokens, counts = read_vocab_tsv(cooccur_dir / "vocab.tsv")
    with open(vocab_path, "w", encoding="utf-8", newline="\n") as f:
        for i, tok in enumerate(tokens):
            if not tok or any(c.isspace() for c in tok):
                raise ValueError(
                    f"{cooccur_dir}/vocab.tsv: token {tok!r} (id {i}) is empty or holds whitespace"
                )
            f.write(f"{tok} {int(counts[i]) if counts is not None else 1}\n")
    _check_vocab_file(vocab_path)
    import pyarrow as pa

    assert CREC.itemsize == 16
    entries = 0
    with open(crec_path, "wb") as out:
        for shard in cooc_shards(cooccur_dir):
            with pa.memory_map(str(shard)) as source:
                table = pa.ipc.open_file(source).read_all()
            rows = np.asarray(table.column("row"), np.int64)
            cols = np.asarray(table.column("col"), np.int64)
            values = np.asarray(table.column("value"), np.float64)
            if len(rows) and (max(rows.max(), cols.max()) >= len(tokens) or values.min() <= 0):
                raise ValueError(f"{shard}: an id beyond the {len(tokens)}-word vocabulary or a value <= 0")
            records = np.empty(len(rows), CREC)
            records["word1"], records["word2"], records["val"] = rows + 1, cols + 1, values
            records.tofile(out)
            entries += len(rows)
    return {"vocab": len(tokens), "entries": entries}


def run_matrix(cooccur_dir: Path, work: Path, settings: Settings, bins: dict[str, Path]) -> StanfordRun:
    """Stanford shuffle + glove on the cooccur stage's matrix and vocabulary: the trainers side by side."""
    work.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    crec, vocab = work / "cooccurrence.bin", work / "vocab.txt"
    started = time.perf_counter()
    write_crec(cooccur_dir, crec, vocab)
    seconds["write_crec"] = round(time.perf_counter() - started, 3)
    vectors, costs = _shuffle_and_train(bins, crec, vocab, work, settings, seconds)
    crec.unlink()
    return StanfordRun(work=work, vectors=vectors, vocab=vocab, seconds=seconds, costs=costs)


def compare_matrices(stanford_crec: Path, stanford_vocab: Path, cooccur_dir: Path) -> dict[str, Any]:
    """Stanford cooccur's matrix vs the cooccur stage's, entry by entry after mapping ids through the tokens.

    Same counting rules give the same non-zeros; values differ only by float64 summation order (ours are
    exact sums), so ``max_rel_diff`` stays ~1e-12 (measured: PTB 1.1e-13 over 2.9M entries, English 8.5e-13
    over 9.8M)."""
    import pyarrow as pa

    from lmpipe.pipelines.core.vocab_tsv import read_vocab_tsv

    ours_tokens, _ = read_vocab_tsv(cooccur_dir / "vocab.tsv")
    theirs = [line.split(" ", 1)[0] for line in stanford_vocab.read_text(encoding="utf-8").splitlines()]
    index = {t: i for i, t in enumerate(ours_tokens)}
    to_ours = np.array([index.get(t, -1) for t in theirs], np.int64)
    out: dict[str, Any] = {
        "vocab_ours": len(ours_tokens), "vocab_stanford": len(theirs),
        "vocab_only_stanford": sorted(set(theirs) - set(ours_tokens))[:20],
        "vocab_only_ours": sorted(set(ours_tokens) - set(theirs))[:20],
    }  # fmt: skip
    records = np.fromfile(stanford_crec, CREC)
    r, c = to_ours[records["word1"] - 1], to_ours[records["word2"] - 1]
    known = (r >= 0) & (c >= 0)
    keys_s = (r[known].astype(np.uint64) << np.uint64(32)) | c[known].astype(np.uint64)
    order = np.argsort(keys_s)
    keys_s, vals_s = keys_s[order], records["val"][known][order]
    parts = []
    for shard in cooc_shards(cooccur_dir):
        with pa.memory_map(str(shard)) as source:
            parts.append(pa.ipc.open_file(source).read_all())
    table = pa.concat_tables(parts)
    keys_o = (np.asarray(table.column("row"), np.uint64) << np.uint64(32)) | np.asarray(
        table.column("col"), np.uint64
    )
    order = np.argsort(keys_o)
    keys_o, vals_o = keys_o[order], np.asarray(table.column("value"), np.float64)[order]
    out.update(
        nonzeros_stanford=len(records),
        nonzeros_ours=len(keys_o),
        same_entries=bool(np.array_equal(keys_s, keys_o)),
    )
    if out["same_entries"]:
        diff = np.abs(vals_s - vals_o)
        out.update(max_abs_diff=float(diff.max()), max_rel_diff=float((diff / vals_o).max()))
    return out


# ------------------------------------------------------------------------------------------ evaluation
def restrict(vectors: Any, tokens: list[str]) -> Any:
    """The rows of ``tokens`` (in that order) as a new ``Vectors``: for scoring two systems on one vocabulary."""
    from lmpipe.embeddings.vectors import Vectors

    rows = np.array([vectors.index(t) for t in tokens], np.int64)
    return Vectors(tokens, np.ascontiguousarray(vectors.matrix[rows], np.float32), source=vectors.source)


def vocab_report(systems: dict[str, Any]) -> dict[str, Any]:
    """Sizes, the common vocabulary (in the first system's order) and a sample of each system's extras."""
    names = list(systems)
    common = [t for t in systems[names[0]].tokens if all(t in systems[n].key_to_index for n in names[1:])]
    shared = set(common)
    return {
        "sizes": {n: len(v) for n, v in systems.items()},
        "common": common,
        "extra": {n: sorted(set(v.tokens) - shared)[:20] for n, v in systems.items()},
        "extra_count": {n: len(set(v.tokens) - shared) for n, v in systems.items()},
    }


def evaluate(vectors: Any, mirror: str | None) -> dict[str, Any]:
    """The shared evaluation of every embedding stage (``pipelines.stages.embedding_eval``): questions-words
    3CosAdd/3CosMul with restrict_vocab 300k, Spearman on WS353 / SimLex-999 / MEN / RW."""
    from lmpipe.pipelines.stages.embedding_eval import evaluate_stage

    return evaluate_stage("stanford_glove", vectors, enabled=True, mirror=mirror)


# ------------------------------------------------------------------------------------------ corpora
def write_token_text(tokenize_dir: Path, out: Path) -> dict[str, int]:
    """The tokenize stage's training shards as text: one row per line, tokens joined by spaces.

    Specials (ids below FIRST_WORD_ID, i.e. words cut from the tokenize vocabulary) are left out: the cooccur
    stage skips them without giving them a position, which is what Stanford cooccur does with words missing
    from its vocabulary, so leaving them out counts the same windows."""
    from lmpipe.pipelines.core.schemas import FIRST_WORD_ID
    from lmpipe.pipelines.core.shards import iter_batches
    from lmpipe.pipelines.core.vocab import Vocab

    vocab = Vocab.load(tokenize_dir / "vocab.tsv")
    words = np.array(vocab.tokens.to_pylist(), dtype=object)
    for i, tok in enumerate(words[FIRST_WORD_ID:], start=FIRST_WORD_ID):
        if any(c.isspace() for c in tok):
            raise ValueError(f"{tokenize_dir}/vocab.tsv: token {tok!r} (id {i}) holds whitespace")
    lines = tokens = 0
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for batch in iter_batches(tokenize_dir, "train", ["ids"]):
            ids = batch.column("ids")
            offsets = np.asarray(ids.offsets, np.int64)
            flat = np.asarray(ids.values, np.int64)[offsets[0] : offsets[-1]]
            offsets = offsets - offsets[0]
            for a, b in zip(offsets[:-1], offsets[1:], strict=True):
                row = flat[a:b]
                row = row[row >= FIRST_WORD_ID]
                if len(row):
                    f.write(" ".join(words[row]) + "\n")
                    lines += 1
                    tokens += len(row)
    os.replace(tmp, out)
    return {"lines": lines, "tokens": tokens}


def our_pipeline(corpus: str, args: argparse.Namespace, work: Path) -> tuple[Path, dict[str, Any]]:
    """tokenize + cooccur (+ glove with ``ours``) with bench/glove.py's exact corpus and tokenizer settings."""
    import glove as glove_bench  # its _base: the same normalize + tokenizer settings per corpus, so the same tokens

    from lmpipe.pipelines.run import run_pipeline
    from lmpipe.pipelines.spec import parse_spec

    if corpus == "ptb":
        base = glove_bench._base("bench-glove-ptb", "data:ptb/train", "ptb", 0.25)
    else:
        path = work / "english.txt"
        if not path.exists():  # exactly bench/glove.py's quality corpus
            path.write_text(glove_bench.english_text(args.mirror), encoding="utf-8")
        base = glove_bench._base("bench-glove-english", str(path), "english", 1.0)
    s: Settings = args.settings
    sections = {
        "cooccur": {"window": s.window, "symmetric": s.symmetric, "min_count": s.min_count, "workers": args.cooccur_workers},
        "glove": {"dim": s.dim, "epochs": s.iterations, "x_max": s.x_max, "alpha": s.alpha, "eta": s.eta,
                  "workers": args.glove_workers, "threads": s.threads},
    }  # fmt: skip
    stages = ["tokenize", "cooccur", "glove"] if "ours" in args.systems else ["tokenize", "cooccur"]
    run = work / f"run-{corpus}"
    spec = parse_spec({**base, **sections}, source="bench/stanford_glove.py")
    started = time.perf_counter()
    manifests = run_pipeline(
        spec, run_dir=run, stages=stages, force=stages[1:], mirror=str(args.mirror), num_cpus=args.num_cpus
    )
    manifests["_seconds"] = time.perf_counter() - started
    return run, manifests


# ------------------------------------------------------------------------------------------ benchmark
def _row(
    corpus: str, system: str, vectors: Any, ev: dict[str, Any], cost: float | None, seconds: str
) -> dict[str, Any]:
    return {
        "corpus": corpus,
        "system": system,
        "vocab": len(vectors),
        "evaluation": ev,
        "final_cost": cost,
        "seconds": seconds,
    }


def bench_corpus(corpus: str, args: argparse.Namespace, bins: dict[str, Path]) -> dict[str, Any]:
    from lmpipe.embeddings.formats import load_glove
    from lmpipe.embeddings.vectors import Vectors

    s: Settings = args.settings
    work = args.work / corpus
    work.mkdir(parents=True, exist_ok=True)
    run, manifests = our_pipeline(corpus, args, args.work)
    from lmpipe.cluster.connect import shutdown

    shutdown()  # Ray's processes would otherwise share the two cores with the C tools
    result: dict[str, Any] = {"corpus": corpus, "rows": [], "settings": asdict(s)}
    cooc = manifests["cooccur"]
    result["ours_cooccur"] = {
        "nonzeros": cooc["outputs"]["nonzeros"], "vocab": cooc["outputs"]["vocab_size"],
        "seconds": cooc["counting"]["count_seconds"] + cooc["counting"]["merge_seconds"],
    }  # fmt: skip
    systems: dict[str, Any] = {}

    def add_stanford(name: str, trained: Any) -> None:
        """Load, evaluate and tabulate one Stanford run (``stanford`` or ``stanford-matrix``)."""
        vecs = load_glove(trained.vectors)
        systems[name] = vecs
        secs = " + ".join(f"{k} {v:.1f}" for k, v in trained.seconds.items())
        result["rows"].append(
            _row(corpus, name, vecs, evaluate(vecs, str(args.mirror)), trained.costs[-1], secs)
        )
        result[f"{name.replace('-', '_')}_costs"] = trained.costs

    if "ours" in args.systems:
        g = manifests["glove"]
        ours = Vectors.load(run / "glove" / "vectors")
        systems["ours"] = ours
        tr = g["training"]
        secs = (
            f"cooccur {result['ours_cooccur']['seconds']:.1f} + glove {sum(tr['seconds_per_epoch']):.1f} "
            f"({tr['workers']} worker x {tr['threads']} thread; fit incl. Ray Train start {tr['seconds']:.1f})"
        )
        result["rows"].append(_row(corpus, "ours", ours, g["evaluation"], tr["epochs"][-1]["cost"], secs))
    if "stanford" in args.systems:
        text = work / "tokens.txt"
        result["token_text"] = write_token_text(run / "tokenize", text)
        st = run_text(text, work / "stanford", s, bins)
        result["matrix_check"] = compare_matrices(st.cooccurrence, st.vocab, run / "cooccur")
        st.cooccurrence.unlink()
        add_stanford("stanford", st)
    if "stanford-matrix" in args.systems:
        add_stanford("stanford-matrix", run_matrix(run / "cooccur", work / "stanford-matrix", s, bins))
    if "ours" in args.systems:
        result["ours_costs"] = [e["cost"] for e in manifests["glove"]["training"]["epochs"]]
    if len(systems) > 1:
        result["vocab"] = compare_on_common_vocab(corpus, systems, str(args.mirror), result["rows"])
    return result


def compare_on_common_vocab(
    corpus: str, systems: dict[str, Any], mirror: str, rows: list[dict[str, Any]]
) -> dict:
    """The vocabulary report; when the systems' vocabularies differ, every system is scored again on the
    shared words only (appended to ``rows``), so a gap cannot come from answering other questions."""
    vr = vocab_report(systems)
    if any(n != len(vr["common"]) for n in vr["sizes"].values()):
        for name, vecs in systems.items():
            sub = restrict(vecs, vr["common"])
            rows.append(_row(corpus, f"{name} (common vocab)", sub, evaluate(sub, mirror), None, "–"))
    return {k: v for k, v in vr.items() if k != "common"} | {"common": len(vr["common"])}


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| corpus | system | vocab | analogy sem / syn / total (answered) | WS353 / SimLex / MEN / RW | final cost | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for r in res["rows"]:
            cost = f"{r['final_cost']:.4f}" if r["final_cost"] is not None else "–"
            lines.append(
                f"| {r['corpus']} | {r['system']} | {r['vocab']:,} | {embedding_scores(r['evaluation'])} | {cost} | {r['seconds']} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpora", nargs="*", default=["ptb", "english"], choices=["ptb", "english"])
    p.add_argument("--systems", nargs="*", default=["ours", "stanford", "stanford-matrix"],
                   choices=["ours", "stanford", "stanford-matrix"])  # fmt: skip
    p.add_argument("--text", type=Path, help="only run Stanford's pipeline on this text file and evaluate it")
    p.add_argument(
        "--ours-vectors", type=Path, help="with --text: a glove stage's RUN/glove/vectors to score beside it"
    )
    p.add_argument("--build-only", action="store_true", help="fetch the sources, compile, print the binaries")
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--min-count", type=int, default=5)
    p.add_argument("--window", type=int, default=10)
    p.add_argument("--x-max", type=float, default=10.0)
    p.add_argument("--alpha", type=float, default=0.75)
    p.add_argument("--eta", type=float, default=0.05)
    p.add_argument("--epochs", type=int, default=25, help="GloVe iterations (both systems)")
    p.add_argument(
        "--threads", type=int, default=1, help="Stanford glove threads = our torch threads per worker"
    )
    p.add_argument("--memory-gb", type=float, default=1.0)
    p.add_argument("--glove-workers", type=int, default=1)
    p.add_argument("--cooccur-workers", type=int, default=1)
    p.add_argument("--num-cpus", type=int, default=2, help="the embedded Ray's CPUs")
    p.add_argument(
        "--mirror", type=Path, default=Path(os.environ.get("LMPIPE_DATA_MIRROR", "../shared/data"))
    )
    p.add_argument("--work", type=Path, default=Path("/tmp/lmpipe-stanford-glove"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.settings = Settings(
        min_count=args.min_count, window=args.window, x_max=args.x_max, alpha=args.alpha, eta=args.eta,
        iterations=args.epochs, dim=args.dim, threads=args.threads, memory_gb=args.memory_gb,
    )  # fmt: skip
    bins = build()
    if args.build_only:
        print(json.dumps({k: str(v) for k, v in bins.items()}, indent=1))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    if args.text is not None:
        from lmpipe.embeddings.formats import load_glove

        st = run_text(args.text, args.work / "stanford", args.settings, bins)
        vecs = load_glove(st.vectors)
        seconds = " + ".join(f"{k} {v:.1f}" for k, v in st.seconds.items())
        ev = evaluate(vecs, str(args.mirror))
        res: dict[str, Any] = {"corpus": args.text.name}
        res["rows"] = [_row(args.text.name, "stanford", vecs, ev, st.costs[-1], seconds)]
        if args.ours_vectors is not None:  # a glove stage's output on (presumably) the same text
            from lmpipe.embeddings.vectors import Vectors

            ours = Vectors.load(args.ours_vectors)
            res["rows"].insert(
                0, _row(args.text.name, "ours", ours, evaluate(ours, str(args.mirror)), None, "–")
            )
            res["vocab"] = compare_on_common_vocab(
                args.text.name, {"ours": ours, "stanford": vecs}, str(args.mirror), res["rows"]
            )
        results = [res]
    else:
        results = [bench_corpus(corpus, args, bins) for corpus in args.corpora]
    out = args.work / f"results-{'text' if args.text is not None else '-'.join(args.corpora)}.json"
    out.write_text(json.dumps(results, indent=1, default=str))
    print(
        f"\nSettings: {asdict(args.settings)}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n"
    )
    print(table(results))
    for res in results:
        for key in ("ours_cooccur", "token_text", "matrix_check", "vocab"):
            if key in res:
                print(f"{res.get('corpus', '')} {key}: {json.dumps(res[key])}")
    print(f"\nfull results: {out}")


if __name__ == "__main__":
    main()
