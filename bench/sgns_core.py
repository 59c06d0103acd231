"""Benchmark the SGNS core against gensim Word2Vec(sg=1) at equal settings, in one run.

Trains on PTB train (``$LMPIPE_DATA_MIRROR/ptb/ptb.train.txt``) by default, or with ``--corpus all`` on
PTB + Brown + BBC News + KJV (~3.6M words); reports raw corpus words per second of training (vocabulary
building excluded for both; "steady" = median epoch after the first, i.e. without torch.compile's
warm-up) and the same intrinsic metrics for both (wordsim353, SimLex-999, MEN, RW Spearman;
questions-words 3CosAdd), computed by ``embeddings.evaluate``.  Runs are interleaved (gensim, ours,
gensim, ...) so a machine whose load changes affects both alike; ``t=N`` is N Hogwild threads with one
torch intra-op thread each, the counterpart of gensim's ``workers=N``.

    LMPIPE_DATA_MIRROR=../shared/data python bench/sgns_core.py --repeats 2 \\
        --ours batch=1024 batch=1024,compile=1 batch=1024,shared=16 --gensim-workers 1 2 --threads 1 2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import statistics
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from lmpipe.embeddings.evaluate import ANALOGY_SET, SIMILARITY_SETS, evaluate_analogies, evaluate_word_pairs
from lmpipe.embeddings.sgns import SGNS, SGNSConfig
from lmpipe.embeddings.vectors import Vectors

logger = logging.getLogger("bench.sgns_core")


_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?|[0-9]+")


def read_lines(corpus: str, mirror: Path) -> list[list[str]]:
    """``ptb``: PTB train as distributed; ``all``: PTB + Brown + BBC News + KJV (~3.7M words), lowercased
    and cut into ``[a-z]+('[a-z]+)?|[0-9]+`` tokens (Brown's /tags and KJV's verse references removed);
    anything else: a whitespace-tokenized text file."""
    if corpus == "ptb":
        return [ln.split() for ln in (mirror / "ptb" / "ptb.train.txt").read_text().splitlines()]
    if corpus != "all":
        return [ln.split() for ln in Path(corpus).read_text(encoding="utf-8").splitlines()]
    texts = [(mirror / "ptb" / "ptb.train.txt").read_text()]
    texts += [re.sub(r"/\S+", "", f.read_text()) for f in sorted((mirror / "brown").glob("c[a-r][0-9][0-9]"))]
    texts += [f.read_text(errors="replace") for f in sorted((mirror / "bbc-news").glob("*/*.txt"))]
    texts.append(re.sub(r"^\S+ ", "", (mirror / "kjv" / "kjv.txt").read_text(), flags=re.M))
    lines = (_WORD.findall(ln.lower()) for text in texts for ln in text.splitlines())
    return [ln for ln in lines if ln]


def load_corpus(
    lines: list[list[str]], min_count: int
) -> tuple[list[list[str]], list[str], np.ndarray, list[np.ndarray]]:
    """Sentences as gensim sees them (rare words removed) and as id arrays over a vocab.tsv-style vocabulary.

    PTB's literal ``<unk>`` is an ordinary frequent word to gensim; it takes id 0 here and is trained
    (``drop_ids=()``) so both systems see the same token stream.
    """
    counts = Counter(w for line in lines for w in line)
    kept = sorted(
        (w for w, n in counts.items() if n >= min_count and w != "<unk>"), key=lambda w: (-counts[w], w)
    )
    tokens = ["<unk>", "<s>", "</s>", *kept]
    index = {w: i for i, w in enumerate(tokens)}
    vocab_counts = np.array([counts.get("<unk>", 0), 0, 0] + [counts[w] for w in kept], dtype=np.uint64)
    gensim_sents = [[w for w in line if w in index] for line in lines]
    id_sents = [np.array([index[w] for w in s], dtype=np.uint32) for s in gensim_sents]
    return gensim_sents, tokens, vocab_counts, id_sents


def quality(vectors: Vectors, eval_dir: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, (fname, delim) in SIMILARITY_SETS.items():
        out[name] = evaluate_word_pairs(vectors, eval_dir / fname, delimiter=delim).spearman
    res = evaluate_analogies(vectors, eval_dir / ANALOGY_SET)
    out.update(
        analogy=res.total.accuracy, analogy_sem=res.semantic.accuracy, analogy_syn=res.syntactic.accuracy
    )
    out["analogy_n"] = res.total.correct + res.total.incorrect
    return out


def run_gensim(sents, args, workers: int, seed: int) -> tuple[Vectors, float, list[float]]:
    from gensim.models import Word2Vec
    from gensim.models.callbacks import CallbackAny2Vec

    class EpochTimer(CallbackAny2Vec):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_epoch_end(self, model) -> None:
            self.ends.append(time.perf_counter())

    model = Word2Vec(
        vector_size=args.dim, window=args.window, min_count=args.min_count, sg=1, hs=0, negative=args.negative,
        sample=args.sample, alpha=args.alpha, min_alpha=args.alpha * 1e-4, epochs=args.epochs,
        workers=workers, seed=seed,
    )  # fmt: skip
    model.build_vocab(sents)
    timer = EpochTimer()
    t0 = time.perf_counter()
    model.train(sents, total_examples=len(sents), epochs=args.epochs, callbacks=[timer])
    seconds = time.perf_counter() - t0
    epochs = np.diff([t0, *timer.ends]).tolist()
    wv = model.wv
    return Vectors(list(wv.index_to_key), wv.vectors.astype(np.float32), source="gensim"), seconds, epochs


def run_ours(tokens, counts, id_sents, args, spec: dict[str, int], threads: int, seed: int):
    torch.set_num_threads(1)  # parallelism is Hogwild threads (train_epoch(threads=...)), like gensim workers
    config = SGNSConfig(
        dim=args.dim, window=args.window, negative=args.negative, sample=args.sample, alpha=args.alpha,
        epochs=args.epochs, batch_pairs=spec.get("batch", 1024), shared_negatives=spec.get("shared", 1),
        compile=bool(spec.get("compile", 0)), drop_ids=(), seed=seed,
    )  # fmt: skip
    model = SGNS(counts, config, device=args.device)
    t0 = time.perf_counter()
    stats = [model.train_epoch(id_sents, threads=threads) for _ in range(config.epochs)]
    seconds = time.perf_counter() - t0
    return model.to_vectors(tokens, source="lmpipe"), seconds, [s.seconds for s in stats], stats[-1].loss


def parse_spec(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in (item.split("=") for item in text.split(","))}


def main(argv: list[str] | None = None) -> None:
    mirror = Path(os.environ.get("LMPIPE_DATA_MIRROR", "../shared/data"))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default="ptb", help="ptb, all (PTB+Brown+BBC+KJV) or a text file")
    p.add_argument("--eval-dir", type=Path, default=mirror / "embedding-eval")
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--window", type=int, default=5)
    p.add_argument("--negative", type=int, default=5)
    p.add_argument("--sample", type=float, default=1e-3)
    p.add_argument("--alpha", type=float, default=0.025)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--min-count", type=int, default=5)
    p.add_argument("--repeats", type=int, default=1, help="seeds per system (quality spread)")
    p.add_argument("--gensim-workers", type=int, nargs="*", default=[1, 2])
    p.add_argument("--threads", type=int, nargs="*", default=[1, 2], help="Hogwild training threads")
    p.add_argument(
        "--ours", nargs="*", default=["batch=1024"], help="variants, e.g. batch=1024,shared=16,compile=1"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path, help="write all results here")
    p.add_argument("--dry-run", action="store_true", help="1 epoch on the first 2,000 sentences")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")

    sents, tokens, counts, id_sents = load_corpus(read_lines(args.corpus, mirror), args.min_count)
    if args.dry_run:
        sents, id_sents, args.epochs, args.repeats = sents[:2000], id_sents[:2000], 1, 1
    raw_words = sum(len(s) for s in sents)
    print(f"corpus {args.corpus}: {len(sents)} sentences, {raw_words} words, "
          f"vocab {len(tokens)}; {args.epochs} epochs; load avg {os.getloadavg()[0]:.1f}")  # fmt: skip

    rows: list[dict] = []
    for seed in range(1, args.repeats + 1):
        for workers in args.gensim_workers:
            vecs, sec, epochs = run_gensim(sents, args, workers, seed)
            rows.append({"system": f"gensim workers={workers}", "seed": seed, "seconds": sec,
                         "words_per_s": raw_words * args.epochs / sec,
                         "steady_words_per_s": raw_words / statistics.median(epochs[1:] or epochs),
                         **quality(vecs, args.eval_dir)})  # fmt: skip
            print(_fmt(rows[-1]), flush=True)
        for spec in args.ours:
            for threads in args.threads:
                vecs, sec, epochs, loss = run_ours(
                    tokens, counts, id_sents, args, parse_spec(spec), threads, seed
                )
                rows.append({"system": f"lmpipe {spec} t={threads}", "seed": seed, "seconds": sec,
                             "words_per_s": raw_words * args.epochs / sec,
                             "steady_words_per_s": raw_words / statistics.median(epochs[1:] or epochs),
                             "loss": loss, **quality(vecs, args.eval_dir)})  # fmt: skip
                print(_fmt(rows[-1]), flush=True)
    print("\nmean over seeds:")
    for system in dict.fromkeys(r["system"] for r in rows):
        sel = [r for r in rows if r["system"] == system]
        mean = {k: statistics.fmean(r[k] for r in sel) for k in sel[0] if isinstance(sel[0][k], float)}
        print(_fmt({"system": system, "seed": f"n={len(sel)}", **mean}))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


def _fmt(r: dict) -> str:
    return (
        f"{r['system']:<38} seed {r['seed']!s:<4} {r['words_per_s'] / 1e3:5.0f} kw/s "
        f"(steady {r['steady_words_per_s'] / 1e3:4.0f}) {r['seconds']:5.1f} s | "
        f"ws353 {r['wordsim353']:.3f} simlex {r['simlex999']:.3f} men {r['men']:.3f} rw {r['rw']:.3f} | "
        f"analogy {100 * r['analogy']:.2f}% (sem {100 * r['analogy_sem']:.2f} syn {100 * r['analogy_syn']:.2f})"
    )


if __name__ == "__main__":
    main()
