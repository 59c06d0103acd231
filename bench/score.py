"""Benchmark ``lmpipe score`` (KN5 and an LSTM) against KenLM's ``query`` and a plain PyTorch loop, in one run.

    python bench/score.py [--mirror DIR] [--train-tokens 2e6] [--test-tokens 5e6] [--rounds 2] [--lstm-lines 2000]

Text: ``corpora.generated_corpus`` -- the KN5 model is trained (tokenize + ngram stages, probing binary) on
seed 1, the scored text is seed 2, so the model has not seen it.  PTB's literal ``<unk>`` in the generated text
is written ``[unk]`` in the scored copy, so ``query`` and lmpipe read the same words.

* KN5: ``query -v summary model.binary < text`` vs ``lmpipe score --workers 1`` (in-process) and ``--workers 2``
  (a Ray actor pool), on the same binary, alternating, ``--rounds`` times; tokens/s (scored tokens, ``</s>``
  included) from the wall time; the perplexities must agree; peak RSS per process (the driver for one worker,
  each Ray actor for two).
* LSTM (2x200, full softmax, untrained: speed does not depend on the weights): ``pipelines.scoring.NeuralScorer``
  vs a plain PyTorch loop (embedding, nn.LSTM, linear, log_softmax over padded batches of 64 sentences) on the
  same sentences, CPU.

Prints a Markdown section for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import machine, versions  # noqa: E402
from corpora import generated_corpus  # noqa: E402


class PeakPerProcess:
    """Peak RSS of this process and of each descendant (Ray's actors), sampled every 0.2 s."""

    def __init__(self) -> None:
        self.peaks: dict[int, tuple[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            for proc in [me, *me.children(recursive=True)]:
                try:
                    name, rss = " ".join(proc.cmdline())[:80], proc.memory_info().rss
                except psutil.Error:
                    continue
                old = self.peaks.get(proc.pid, (name, 0))
                self.peaks[proc.pid] = (name, max(old[1], rss))
            time.sleep(0.2)

    def __enter__(self) -> PeakPerProcess:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def mb(self, pattern: str) -> float:
        found = [rss for name, rss in self.peaks.values() if re.search(pattern, name)]
        return max(found, default=0) / 1e6


def build_model(work: Path, mirror: Path, train_tokens: int) -> Path:
    import lmpipe

    train = work / "train.txt"
    generated_corpus(mirror, train_tokens, train, seed=1)
    spec = work / "spec.yaml"
    spec.write_text(
        f"name: bench-score\ncorpus:\n  train: [{train}]\nnormalize:\n  literal_specials: rename\n"
        "tokenizer:\n  kind: whitespace\nvocab:\n  min_count: 1\nstages: [tokenize, ngram]\n"
        "ngram:\n  order: 5\n  binary: probing\n",
        encoding="utf-8",
    )
    return lmpipe.run(spec, run_dir=work / "run").path


def scored_text(work: Path, mirror: Path, tokens: int) -> Path:
    raw = work / "test-raw.txt"
    generated_corpus(mirror, tokens, raw, seed=2)
    out = work / "test.txt"
    if not out.exists() or out.stat().st_mtime < raw.stat().st_mtime:
        with open(raw, encoding="utf-8") as src, open(out, "w", encoding="utf-8") as dst:
            for line in src:
                dst.write(line.replace("<unk>", "[unk]"))
    return out


def time_query(binary: Path, text: Path) -> tuple[float, float, int]:
    from lmpipe.lm.kenlm_tools import find_kenlm_binary

    started = time.perf_counter()
    with open(text, "rb") as stdin:
        proc = subprocess.run(
            [str(find_kenlm_binary("query")), "-v", "summary", str(binary)], stdin=stdin, capture_output=True, check=True
        )
    seconds = time.perf_counter() - started
    out = proc.stdout.decode()
    ppl = float(re.search(r"Perplexity including OOVs:\s*([\d.]+)", out).group(1))
    tokens = int(re.search(r"Tokens:\s*(\d+)", out).group(1))
    return seconds, ppl, tokens


def time_score(run: Path, text: Path, workers: int, out: Path, chunk_mb: float) -> tuple[float, dict, PeakPerProcess]:
    from lmpipe.pipelines.score import score_files

    with PeakPerProcess() as peaks:
        started = time.perf_counter()
        summary = score_files(run, "kn5", [text], out=out, workers=workers, chunk_mb=chunk_mb)
        seconds = time.perf_counter() - started
    return seconds, summary, peaks


def lstm_figures(run: Path, text: Path, lines: int) -> dict[str, float]:
    import numpy as np
    import pyarrow as pa
    import torch

    from lmpipe.lm.models import ModelConfig, build_network
    from lmpipe.pipelines.core.vocab import Vocab
    from lmpipe.pipelines.scoring import NeuralScorer

    torch.manual_seed(0)
    vocab = Vocab.load(run / "tokenize" / "vocab.tsv")
    cfg = ModelConfig(kind="lstm", vocab_size=len(vocab), emb_dim=200, hidden=200, layers=2, softmax="full")
    net = build_network(cfg, counts=vocab.counts)
    model_dir = run / "bench-lstm"
    model_dir.mkdir(exist_ok=True)
    (model_dir / "model.json").write_text(json.dumps({"model": dataclasses.asdict(cfg)}), encoding="utf-8")
    torch.save(net.state_dict(), model_dir / "model.pt")
    with open(text, encoding="utf-8") as f:
        words = [next(f).split() for _ in range(lines)]
    sentences = [np.asarray(vocab.lookup(pa.array(w, pa.string())), np.int64) for w in words if w]
    tokens = sum(len(s) + 1 for s in sentences)
    scorer = NeuralScorer(model_dir, vocab.counts)
    started = time.perf_counter()
    mine = scorer.score(sentences).log10_prob.sum()
    lmpipe_s = time.perf_counter() - started

    # A plain PyTorch loop: the same sizes, padded batches of 64 sentences, longest first.
    emb, rnn = torch.nn.Embedding(len(vocab), 200), torch.nn.LSTM(200, 200, 2)
    lin = torch.nn.Linear(200, len(vocab))
    order = sorted(sentences, key=len, reverse=True)
    started = time.perf_counter()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(order), 64):
            batch = order[i : i + 64]
            n = max(len(s) for s in batch) + 1
            x = torch.full((n, len(batch)), 2, dtype=torch.int64)  # </s> as <s>
            y = torch.full((n, len(batch)), 2, dtype=torch.int64)
            mask = torch.zeros((n, len(batch)), dtype=torch.bool)
            for j, s in enumerate(batch):
                t = torch.as_tensor(s)
                x[1 : len(s) + 1, j], y[: len(s), j], mask[: len(s) + 1, j] = t, t, True
            lp = torch.log_softmax(lin(rnn(emb(x))[0]), -1).gather(2, y.unsqueeze(2)).squeeze(2)
            total += float(lp[mask].sum())
    plain_s = time.perf_counter() - started
    return {
        "tokens": tokens, "lmpipe_tps": tokens / lmpipe_s, "plain_tps": tokens / plain_s,
        "ratio": plain_s / lmpipe_s, "finite": bool(np.isfinite(mine) and np.isfinite(total)),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mirror", type=Path, default=HERE.parent.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=HERE / "work" / "score")
    parser.add_argument("--train-tokens", type=float, default=2e6)
    parser.add_argument("--test-tokens", type=float, default=5e6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--lstm-lines", type=int, default=2000)
    parser.add_argument("--chunk-mb", type=float, default=2.0, help="input chunk size (several chunks per worker)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    run = build_model(args.work, args.mirror, int(args.train_tokens))
    text = scored_text(args.work, args.mirror, int(args.test_tokens))
    binary = run / "ngram" / "model.binary"
    with open(text, "rb") as f:
        lines = sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 24), b""))
    rows: dict[str, list[float]] = {"query": [], "lmpipe 1 worker": [], "lmpipe 2 workers": []}
    memory: dict[str, float] = {}
    ppl: dict[str, float] = {}
    tokens = 0
    for _ in range(args.rounds):
        seconds, ppl["query"], tokens = time_query(binary, text)
        rows["query"].append(seconds)
        print(f"query: {seconds:.2f} s, ppl {ppl['query']:.4f}", flush=True)
        for workers in (1, 2):
            name = f"lmpipe {workers} worker" + ("s" if workers > 1 else "")
            try:
                seconds, summary, peaks = time_score(
                    run, text, workers, args.work / f"scores-{workers}.parquet", args.chunk_mb
                )
            except Exception as exc:  # Ray may not start on an overloaded machine: say so, keep the rest
                print(f"{name}: failed ({str(exc).splitlines()[0][:120]})", flush=True)
                continue
            print(f"{name}: {seconds:.2f} s, ppl {summary['perplexity']:.4f}", flush=True)
            rows[name].append(seconds)
            ppl[name] = summary["perplexity"]
            memory[name] = peaks.mb("score.py") if workers == 1 else peaks.mb("ScoreActor|MapWorker")
    load = os.getloadavg()
    lstm = lstm_figures(run, text, args.lstm_lines)
    print(f"\n### `lmpipe score` vs KenLM `query` ({time.strftime('%Y-%m-%d')})\n")
    print(f"{machine()}; {versions()}; load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min) after "
          "the KN5 rounds -- a shared, loaded machine: the figures are noisy and below an idle machine's.\n")  # fmt: skip
    print(f"KN5 (probing binary) on {lines:,} generated lines the model was not trained on ({tokens:,} tokens, "
          f"`</s>` included), {args.chunk_mb:g} MB chunks; {args.rounds} alternating rounds, best wall time; "
          "lmpipe writes Parquet records, query only its summary.\n")  # fmt: skip
    print("| scorer | best s | tokens/s | vs query | perplexity | peak RSS per process |\n|---|---|---|---|---|---|")
    best_q = min(rows["query"])
    for name, times in rows.items():
        if not times:
            print(f"| {name} | - | - | - | - | - (did not run: Ray did not start on the loaded machine) |")
            continue
        best = min(times)
        mem = f"{memory[name]:.0f} MB" if name in memory else "-"
        print(f"| {name} | {best:.2f} | {tokens / best:,.0f} | {best_q / best:.2f}x | {ppl[name]:.4f} | {mem} |")
    print(f"\nLSTM 2x200, full softmax, CPU, {lstm['tokens']:,} tokens of {args.lstm_lines:,} "
          f"lines: lmpipe NeuralScorer {lstm['lmpipe_tps']:,.0f} tokens/s, plain PyTorch loop {lstm['plain_tps']:,.0f} "
          f"tokens/s ({lstm['ratio']:.2f}x of the plain loop's speed).")  # fmt: skip


if __name__ == "__main__":
    main()
