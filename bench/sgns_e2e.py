"""Whole-process SGNS: ``lmpipe run --stages sgns`` against a gensim ``Word2Vec(sg=1, workers=2)`` process.

Each system runs as its own process, alternating (gensim, lmpipe, gensim, lmpipe, ...), ``--repeats`` times;
reported: medians of the process wall time, of the training time (lmpipe: the sum of the epoch times in the
manifest; gensim: ``train()``), per-epoch words/s, and the peak resident memory summed over the process and
all its descendants (psutil, sampled every 0.1 s: the driver, and Ray's raylet/GCS/workers when they run).
Both read the same tokens: the tokenize stage's training shards (done once, not timed), written once as a
text file of space-separated tokens that gensim streams (``LineSentence``, the corpus never held in memory).
Quality of each system's last vectors: ``embeddings.evaluate`` (analogy 3CosAdd, WS353), outside the timing.

    .venv/bin/python bench/sgns_e2e.py --corpus english --repeats 3
    .venv/bin/python bench/sgns_e2e.py --corpus generated --tokens 8000000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

GENSIM = """
import json, sys, time
from gensim.models import Word2Vec
from gensim.models.word2vec import LineSentence
text, out, epochs, workers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
t0 = time.perf_counter()
model = Word2Vec(vector_size=100, window=5, min_count=5, sg=1, hs=0, negative=5, sample=1e-3, alpha=0.025,
                 min_alpha=0.025e-4, epochs=epochs, workers=workers, seed=1)
corpus = LineSentence(text)
model.build_vocab(corpus)
vocab_s = time.perf_counter() - t0
t1 = time.perf_counter()
model.train(corpus, total_examples=model.corpus_count, total_words=model.corpus_total_words, epochs=epochs)
train_s = time.perf_counter() - t1
model.wv.save_word2vec_format(out)
json.dump({"vocab_s": vocab_s, "train_s": train_s, "words": model.corpus_total_words}, open(out + ".json", "w"))
"""


class TreeRss:
    """Peak of the summed RSS of a process and its descendants, sampled every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        import psutil

        self.proc, self.interval, self.peak = psutil.Process(pid), interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
            except psutil.Error:
                procs = []
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    continue
            self.peak = max(self.peak, total)
            time.sleep(self.interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def timed(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, int]:
    """(wall seconds, peak tree RSS bytes) of ``cmd``; its output goes to ``log``."""
    with open(log, "w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        rss = TreeRss(proc.pid)
        rc = proc.wait()
        wall = time.perf_counter() - t0
    peak = rss.stop()
    if rc != 0:
        raise SystemExit(f"{cmd[:3]} failed with exit status {rc}; see {log}")
    return wall, peak


def prepare(args: argparse.Namespace) -> tuple[dict, Path, Path, int]:
    """The spec's data (tokenize section), the tokenized run directory and the gensim text file."""
    sys.path.insert(0, str(BENCH))
    from corpora import english_text, generated_corpus

    from lmpipe.pipelines.run import run_pipeline
    from lmpipe.pipelines.spec import parse_spec

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    if args.tokenized is not None:  # an existing run directory's tokenize stage; its spec is the base
        import yaml

        tokenized = args.tokenized
        base = yaml.safe_load((tokenized / "spec.yaml").read_text())
        base = {k: base[k] for k in ("name", "corpus", "normalize", "tokenizer", "vocab", "tokenize") if k in base}
        return base, tokenized, *_token_text(tokenized, work / f"{args.corpus}.tokens.txt")
    raw = work / f"{args.corpus}.raw.txt"
    if args.corpus == "english":
        if not raw.exists():
            raw.write_text(english_text(args.mirror), encoding="utf-8")
        tokenizer = {"kind": "regex", "pattern": r"[a-z]+(?:'[a-z]+)?|[0-9]+"}
        normalize = {"lowercase": True}
    else:
        generated_corpus(args.mirror, args.tokens, raw, seed=1)
        tokenizer, normalize = {"kind": "whitespace"}, {"literal_specials": "rename"}
    base = {"name": f"e2e-{args.corpus}", "corpus": {"train": str(raw)}, "normalize": normalize,
            "tokenizer": tokenizer, "tokenize": {"workers": 2, "shard_mb": 4}}  # fmt: skip
    tokenized = work / f"{args.corpus}-tokenized"
    if not (tokenized / "tokenize" / "manifest.json").exists():
        run_pipeline(parse_spec(base, source="bench"), run_dir=tokenized, stages=["tokenize"], mirror=str(args.mirror))
    return base, tokenized, *_token_text(tokenized, work / f"{args.corpus}.tokens.txt")


def _token_text(tokenized: Path, text: Path) -> tuple[Path, int]:
    """The training shards' tokens as one text file (a line per sentence) for gensim, and their count."""
    from lmpipe.pipelines.core.shards import read_ids
    from lmpipe.pipelines.core.vocab import Vocab

    if not text.exists():
        tokens = Vocab.load(tokenized / "tokenize" / "vocab.tsv").tokens.to_pylist()
        with open(text, "w", encoding="utf-8") as out:
            for s in read_ids(tokenized / "tokenize", "train"):
                out.write(" ".join(tokens[i] for i in s.tolist()) + "\n")
    with open(text, encoding="utf-8") as f:
        words = sum(len(line.split()) for line in f)
    return text, words


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", choices=["english", "generated"], default="english")
    p.add_argument("--tokens", type=int, default=8_000_000, help="generated corpus size")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--workers", type=int, default=1, help="sgns.workers (threads: --threads)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--mirror", type=Path, default=Path(os.environ.get("LMPIPE_DATA_MIRROR", "../shared/data")))
    p.add_argument("--tokenized", type=Path, default=None, help="reuse this run directory's tokenize stage")
    p.add_argument("--lmpipe", default=None, help="lmpipe executable (default: this venv's; another checkout's = before)")
    p.add_argument("--work", type=Path, default=Path("/tmp/lmpipe-bench-sgns-e2e"))
    args = p.parse_args()
    import yaml

    base, tokenized, text, words = prepare(args)
    spec_path = args.work / f"{args.corpus}.yaml"
    sgns = {"dim": 100, "window": 5, "negative": 5, "sample": 1e-3, "alpha": 0.025, "min_count": 5,
            "epochs": args.epochs, "workers": args.workers, "threads": args.threads}  # fmt: skip
    spec_path.write_text(yaml.safe_dump({**base, "sgns": sgns}))
    env = {**os.environ, "LMPIPE_DATA_MIRROR": str(args.mirror)}
    rows: dict[str, list[dict]] = {"gensim": [], "lmpipe": []}
    load = [os.getloadavg()[0]]
    for rep in range(args.repeats):
        out = args.work / "gensim.vec"
        wall, peak = timed([sys.executable, "-c", GENSIM, str(text), str(out), str(args.epochs), "2"], env,
                           args.work / f"gensim-{rep}.log")  # fmt: skip
        g = json.loads(Path(str(out) + ".json").read_text())
        rows["gensim"].append({"wall": wall, "peak": peak, "train": g["train_s"], "wps": words * args.epochs / g["train_s"]})
        print("gensim", rows["gensim"][-1], "load", os.getloadavg()[0], flush=True)
        run = args.work / f"{args.corpus}-run"
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(tokenized / "tokenize", run / "tokenize")
        shutil.copy(tokenized / "spec.yaml", run / "spec.yaml")
        wall, peak = timed([args.lmpipe or str(Path(sys.executable).parent / "lmpipe"), "run", str(spec_path), "--run-dir", str(run),
                            "--stages", "sgns"], env, args.work / f"lmpipe-{rep}.log")  # fmt: skip
        m = json.loads((run / "sgns" / "manifest.json").read_text())
        tr = m["training"]
        eps = tr["epochs"]
        rows["lmpipe"].append({
            "wall": wall, "peak": peak, "train": sum(e["seconds"] for e in eps), "fit": tr["seconds"],
            "wps": sum(e["words"] for e in eps) / sum(e["seconds"] for e in eps),
            "epoch_wps": [e["words_per_second"] for e in eps], "eval": m["evaluation"],
        })  # fmt: skip
        print("lmpipe", {k: v for k, v in rows["lmpipe"][-1].items() if k != "eval"}, "load", os.getloadavg()[0], flush=True)
        load.append(os.getloadavg()[0])
    from lmpipe.embeddings.vectors import Vectors
    from lmpipe.pipelines.stages.embedding_eval import eval_files, evaluate

    files, _ = eval_files(str(args.mirror))
    from gensim.models import KeyedVectors

    kv = KeyedVectors.load_word2vec_format(str(args.work / "gensim.vec"))
    gensim_eval = evaluate(Vectors(list(kv.index_to_key), kv.vectors.astype(np.float32), source="gensim"), files)
    med = {s: {k: statistics.median(r[k] for r in rs) for k in ("wall", "peak", "train", "wps")} for s, rs in rows.items()}
    ev = rows["lmpipe"][-1]["eval"]
    summary = {
        "corpus": args.corpus, "words": words, "vocab": len(kv.index_to_key), "repeats": args.repeats,
        "load_1min": load, "median": med, "runs": {s: [{k: v for k, v in r.items() if k != "eval"} for r in rs] for s, rs in rows.items()},
        "quality": {
            "gensim": {"analogy": gensim_eval["analogy"]["total"], "ws353": gensim_eval["wordsim353"]["spearman"]},
            "lmpipe": {"analogy": ev["analogy"]["total"], "ws353": ev["wordsim353"]["spearman"]},
        },
    }  # fmt: skip
    (args.work / f"{args.corpus}-summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: summary[k] for k in ("corpus", "words", "vocab", "load_1min", "median", "quality")}, indent=1))


if __name__ == "__main__":
    main()
