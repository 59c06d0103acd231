"""CPU seconds per word of word2vec's four modes: the SGNS trainer in process (numba, 1 thread) vs gensim
``Word2Vec(workers=1)``, the same PTB tokens and settings, alternating runs.

Why CPU time: on a shared machine the wall time of a run is set by the other tenants' load (a 2-core VM at
load 20-40 gave epoch times that varied 2x within one run); the process CPU time of a single-threaded
trainer is what the code costs.  gensim's CPU time includes its job-producer thread, as a process's does.

    LMPIPE_DATA_MIRROR=../shared/data .venv/bin/python bench/sgns_modes_cpu.py --tokenized RUN --repeats 2

``RUN`` is a run directory whose ``tokenize`` stage holds PTB (``bench/sgns_vs_gensim.py`` leaves one in its
``--work`` folder as ``bench-ptb-tokenized``).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np


def lmpipe_cpu(ids: list[np.ndarray], counts: np.ndarray, model: str, loss: str, epochs: int) -> float:
    from lmpipe.embeddings.sgns import SGNS, SGNSConfig
    from lmpipe.embeddings.train import vocabulary_cut

    _, drop = vocabulary_cut(counts, 5)
    config = SGNSConfig(model=model, loss=loss, epochs=epochs, drop_ids=tuple(int(i) for i in drop), backend="numba")
    SGNS(counts, config).train_epoch(ids[:200])  # compile (or load numba's cache) before timing
    trainer = SGNS(counts, config)
    t0 = time.process_time()
    for _ in range(epochs):
        trainer.train_epoch(ids, threads=1)
    return time.process_time() - t0


def gensim_cpu(sentences: list[list[str]], model: str, loss: str, epochs: int) -> float:
    from gensim.models import Word2Vec

    from lmpipe.embeddings.word2vec_defaults import mode_defaults

    d = mode_defaults(model, loss, alpha=None, negative=None)
    w2v = Word2Vec(
        vector_size=100, window=5, min_count=5, sg=int(model == "skipgram"), hs=int(loss == "hierarchical"),
        negative=d["negative"], cbow_mean=1, sample=1e-3, alpha=d["alpha"], min_alpha=d["alpha"] * 1e-4,
        epochs=epochs, workers=1, seed=1,
    )  # fmt: skip
    w2v.build_vocab(sentences)
    words = sum(len(s) for s in sentences)
    t0 = time.process_time()
    w2v.train(sentences, total_examples=len(sentences), total_words=words, epochs=epochs)
    return time.process_time() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenized", type=Path, required=True)
    p.add_argument("--modes", nargs="*", default=["skipgram:negative", "skipgram:hierarchical", "cbow:negative", "cbow:hierarchical"])
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()

    from lmpipe.pipelines.core.shards import read_ids
    from lmpipe.pipelines.core.vocab import Vocab

    vocab = Vocab.load(args.tokenized / "tokenize" / "vocab.tsv")
    tokens = vocab.tokens.to_pylist()
    ids = [np.asarray(s) for s in read_ids(args.tokenized / "tokenize", "train")]
    sentences = [[tokens[i] for i in s.tolist()] for s in ids]
    words = sum(len(s) for s in ids) * args.epochs
    print(f"{words:,} words x epochs; load {os.getloadavg()[0]:.1f}")
    print("| mode | lmpipe CPU s | gensim CPU s | lmpipe words/CPU-s | gensim words/CPU-s | ratio | load before / after |")
    print("|---|---|---|---|---|---|---|")
    for mode in args.modes:
        model, loss = mode.split(":")
        load = os.getloadavg()[0]
        ours, theirs = [], []
        for _ in range(args.repeats):
            ours.append(lmpipe_cpu(ids, vocab.counts, model, loss, args.epochs))
            theirs.append(gensim_cpu(sentences, model, loss, args.epochs))
        a, b = float(np.median(ours)), float(np.median(theirs))
        print(
            f"| {model} + {loss} | {a:.1f} | {b:.1f} | {words / a / 1e3:.0f}k | {words / b / 1e3:.0f}k | "
            f"**{b / a:.2f}x** | {load:.1f} / {os.getloadavg()[0]:.1f} |", flush=True,
        )  # fmt: skip


if __name__ == "__main__":
    main()
