"""Where an in-process SGNS run's memory goes: the driver's resident memory after each phase of ``train_loop``'s
set-up and first blocks, then of the analogy evaluation (bench/RESULTS.md, the SGNS memory section).

The phases are those of ``embeddings.train.train_loop`` with one worker (imports, vocabulary, ``Share``,
``SGNS``, the first blocks), called one by one so each gets its figure; RSS from ``/proc/self/statm``, peak
from ``ru_maxrss``.

    LMPIPE_DATA_MIRROR=../shared/data .venv/bin/python bench/sgns_memory.py --tokenized RUN [--blocks 6]
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
from pathlib import Path


def rss(tag: str) -> None:
    """Print the current and peak resident memory of this process."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{tag:48s} rss {pages * os.sysconf('SC_PAGE_SIZE') / 2**20:6.0f} MB   peak {peak:6.0f} MB", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenized", type=Path, required=True, help="a run directory with a tokenize stage")
    p.add_argument("--blocks", type=int, default=6, help="blocks of 100k words to train")
    p.add_argument("--min-count", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    rss("start")
    import numpy as np  # noqa: F401
    import pyarrow  # noqa: F401

    rss("numpy + pyarrow")
    from lmpipe.cluster.training import WorkerGroup
    from lmpipe.embeddings.sgns import SGNS, SGNSConfig, _blocks
    from lmpipe.embeddings.train import Share, vocabulary_cut
    from lmpipe.pipelines.core.shards import split_shards
    from lmpipe.pipelines.core.vocab import Vocab

    rss("lmpipe training modules")
    WorkerGroup.current(False)
    rss("WorkerGroup.current (in process)")
    tokenize = args.tokenized / "tokenize"
    vocab = Vocab.load(tokenize / "vocab.tsv")
    keep, drop = vocabulary_cut(vocab.counts, args.min_count)
    rss(f"vocabulary: {len(vocab):,} ids, {len(keep):,} kept")
    share = Share.of([str(s) for s in split_shards(tokenize, "train")], 0, 1)
    words = share.words
    rss(f"Share.of + words ({words:,})")
    model = SGNS(vocab.counts, SGNSConfig(dim=100, epochs=3, drop_ids=tuple(int(i) for i in drop)), words_per_epoch=words)
    rss(f"SGNS(): 2 x {model.rows:,} x 100 float32, backend {model.backend}")
    if model.backend == "numba":
        from lmpipe.embeddings.sgns_kernel import set_threads

        model._slices = set_threads(args.threads)
        rss("numba imported, threads set")
    for i, block in enumerate(itertools.islice(_blocks(share.sentences(), model.config.block_words), args.blocks)):
        model.train_block(block)
        rss(f"after block {i}")
    mirror = os.environ.get("LMPIPE_DATA_MIRROR")
    if mirror:
        from lmpipe.embeddings.evaluate import evaluate_analogies

        vectors = model.to_vectors(vocab.tokens.to_pylist())
        rss("vectors exported")
        for method in ("3cosadd", "3cosmul"):
            evaluate_analogies(vectors, Path(mirror) / "embedding-eval" / "questions-words.txt", method=method)
            rss(f"analogies {method}")
    import sys

    print("torch imported:", "torch" in sys.modules, " ray imported:", "ray" in sys.modules)


if __name__ == "__main__":
    main()
