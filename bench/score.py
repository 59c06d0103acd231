"""Benchmark ``lmpipe score`` (KN5 and an LSTM) against KenLM's ``query`` and a plain PyTorch loop, in one run.

    python bench/score.py [--mirror DIR] [--work DIR] [--train-tokens 2e6] [--test-tokens 25e6] [--rounds 2]
                          [--lstm-lines 500]

Text: ``corpora.generated_corpus`` -- the KN5 model is trained (tokenize + ngram stages, probing binary) on
seed 1, the scored text is seed 2, so the model has not seen it (25M tokens: about 0.98M lines).  PTB's
literal ``<unk>`` in the generated text is written ``[unk]`` in the scored copy, so ``query`` and lmpipe read
the same words, and blank lines are dropped (``query`` scores one as a lone ``</s>``; lmpipe, like the
tokenize stage, rejects it and gives it ``tokens`` 0), so both score the same tokens.

* KN5: ``query -v summary model.binary < text`` vs the command ``lmpipe score --workers 1`` (in-process) and
  ``--workers 2`` (a Ray actor pool), on the same binary, alternating, ``--rounds`` times.  Whole wall time
  (lmpipe: start-up, model load, Ray start for 2 workers, Parquet records written; query: its summary only)
  and CPU seconds of every process (user + sys; lmpipe's raylet and actors sampled), so a loaded machine still
  gives per-core figures; the steady state is ``ChunkScorer`` over the chunks in this process, CPU seconds,
  the model already loaded.  Tokens are
  scored tokens, ``</s>`` included; the perplexities must agree; peak RSS per process (query, the driver for
  one worker, each Ray actor for two).
* LSTM (2x200, full softmax, untrained: speed does not depend on the weights): ``pipelines.scoring.NeuralScorer``
  vs a plain PyTorch loop (embedding, nn.LSTM, linear, log_softmax over padded batches of 64 sentences,
  longest first) on the same sentences, CPU, alternating, best of ``--rounds``.

Prints a Markdown section for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import machine, versions  # noqa: E402
from corpora import generated_corpus  # noqa: E402


class PeakPerProcess:
    """Peak RSS and last-seen CPU seconds of this process and of each descendant (the ``lmpipe score`` process,
    Ray's raylet and actors), sampled every 0.2 s."""

    def __init__(self, root: int | None = None) -> None:
        self.peaks: dict[int, tuple[str, int]] = {}
        self.cpu: dict[int, float] = {}
        self._me = os.getpid()
        self._root = root  # sample this process's tree (a command started by the bench), not the bench's own
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        me = psutil.Process(self._root) if self._root else psutil.Process()
        while not self._stop.is_set():
            try:
                tree = [me, *me.children(recursive=True)]
            except psutil.Error:  # the command has ended
                time.sleep(0.05)
                continue
            for proc in tree:
                try:
                    name, rss = " ".join(proc.cmdline())[:80], proc.memory_info().rss
                    times = proc.cpu_times()
                except psutil.Error:
                    continue
                old = self.peaks.get(proc.pid, (name, 0))
                self.peaks[proc.pid] = (name, max(old[1], rss))
                if proc.pid != self._me:
                    self.cpu[proc.pid] = times.user + times.system
            time.sleep(0.2)

    def __enter__(self) -> PeakPerProcess:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def cpu_seconds(self) -> float:
        """CPU seconds of the descendants as last sampled (a process's final 0.2 s may be missed)."""
        return sum(self.cpu.values())

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
                if line.strip():  # a blank line: query scores it as one </s>, lmpipe rejects it (tokens 0)
                    dst.write(line.replace("<unk>", "[unk]"))
    return out


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_query(binary: Path, text: Path) -> tuple[float, float, float, int, PeakPerProcess]:
    """Wall s, CPU s, perplexity and tokens of ``query -v summary`` on ``text``."""
    from lmpipe.lm.kenlm_tools import find_kenlm_binary

    cpu = _children_cpu()
    with PeakPerProcess() as peaks, open(text, "rb") as stdin:
        started = time.perf_counter()
        proc = subprocess.run(
            [str(find_kenlm_binary("query")), "-v", "summary", str(binary)], stdin=stdin, capture_output=True, check=True
        )
        seconds = time.perf_counter() - started
    out = proc.stdout.decode()
    ppl = float(re.search(r"Perplexity including OOVs:\s*([\d.]+)", out).group(1))
    tokens = int(re.search(r"Tokens:\s*(\d+)", out).group(1))
    return seconds, _children_cpu() - cpu, ppl, tokens, peaks


def time_query_pair(binary: Path, text: Path) -> float:
    """Wall s of two ``query`` processes on the text at once: what two processes get from this machine's cores
    for this very work (the ceiling a 2-worker run is compared with, besides 2x)."""
    from lmpipe.lm.kenlm_tools import find_kenlm_binary

    cmd = [str(find_kenlm_binary("query")), "-v", "summary", str(binary)]
    started = time.perf_counter()
    with open(text, "rb") as a, open(text, "rb") as b:
        procs = [subprocess.Popen(cmd, stdin=f, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for f in (a, b)]
        for proc in procs:
            proc.wait()
    return time.perf_counter() - started


def time_score(run: Path, text: Path, workers: int, out: Path, chunk_mb: float) -> tuple[float, float, dict, PeakPerProcess]:
    """Wall s and CPU s (the ``lmpipe score`` process and every process it started: raylet, actors) of the
    command a user runs, and its summary."""
    lmpipe = Path(sys.executable).with_name("lmpipe")
    cmd = [str(lmpipe), "score", str(run), "--model", "kn5", "--input", str(text), "--out", str(out),
           "--workers", str(workers), "--chunk-mb", f"{chunk_mb:g}", "-q"]  # fmt: skip
    cpu = _children_cpu()
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    with PeakPerProcess(root=proc.pid) as peaks:
        if proc.wait() != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}")
        seconds = time.perf_counter() - started
    # the command and what it reaped; or, larger when Ray's processes outlive their parent's accounting, the
    # sampled tree (the command, raylet, actors)
    cpu_s = max(_children_cpu() - cpu, peaks.cpu_seconds())
    summary = json.loads(out.with_name(out.stem + ".summary.json").read_text())
    return seconds, cpu_s, summary, peaks


def steady_state(run: Path, text: Path, chunk_mb: float) -> tuple[float, int]:
    """CPU s and tokens of ``ChunkScorer`` over every chunk, the model loaded and warm (no output written)."""
    from lmpipe.pipelines.ingest import find_sources, plan_chunks
    from lmpipe.pipelines.scoring import ChunkScorer, ScoreJob
    from lmpipe.pipelines.spec import CorpusSpec

    scorer = ChunkScorer(ScoreJob.for_run(run, "kn5"))
    chunks = plan_chunks(find_sources(CorpusSpec(train=(str(text),)))["train"], int(chunk_mb * (1 << 20)))
    scorer(chunks[0])  # warm: first-touch of the mmapped model
    cpu, tokens = time.process_time(), 0
    for chunk in chunks:
        tokens += int(np.sum(scorer(chunk).column("tokens")))
    return time.process_time() - cpu, tokens


def scorer_kind() -> str:
    from lmpipe.lm.kenlm_native import library_path

    return "the C++ batch scorer (lm/native/kenlm_lines.cc)" if library_path() else "the kenlm module (C++ scorer not built)"


def lstm_figures(run: Path, text: Path, lines: int, rounds: int) -> dict[str, float]:
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
    # A plain PyTorch loop: the same sizes, padded batches of 64 sentences, longest first.
    emb, rnn = torch.nn.Embedding(len(vocab), 200), torch.nn.LSTM(200, 200, 2)
    lin = torch.nn.Linear(200, len(vocab))
    order = sorted(sentences, key=len, reverse=True)

    def plain() -> float:
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
        return total

    times: dict[str, list[float]] = {"lmpipe": [], "plain": []}
    finite = True
    for _ in range(rounds):
        for name, fn in (("lmpipe", lambda: float(scorer.score(sentences).log10_prob.sum())), ("plain", plain)):
            started = time.perf_counter()
            finite &= bool(np.isfinite(fn()))
            times[name].append(time.perf_counter() - started)
    lmpipe_s, plain_s = min(times["lmpipe"]), min(times["plain"])
    return {
        "tokens": tokens, "lines": len(sentences), "lmpipe_tps": tokens / lmpipe_s, "plain_tps": tokens / plain_s,
        "ratio": plain_s / lmpipe_s, "finite": finite, "times": times, "load": os.getloadavg(),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_mirror = os.environ.get("LMPIPE_DATA_MIRROR") or HERE.parent.parent / "shared" / "data"
    parser.add_argument("--mirror", type=Path, default=default_mirror)
    parser.add_argument("--work", type=Path, default=HERE / "work" / "score")
    parser.add_argument("--train-tokens", type=float, default=2e6)
    parser.add_argument("--test-tokens", type=float, default=25e6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--lstm-lines", type=int, default=500)
    parser.add_argument("--chunk-mb", type=float, default=8.0, help="input chunk size (several chunks per worker)")
    parser.add_argument("--no-steady", action="store_true", help="skip the in-process steady-state pass")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    run = build_model(args.work, args.mirror, int(args.train_tokens))
    text = scored_text(args.work, args.mirror, int(args.test_tokens))
    binary = run / "ngram" / "model.binary"
    with open(text, "rb") as f:
        lines = sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 24), b""))
    names = ("query", "lmpipe 1 worker", "lmpipe 2 workers")
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    memory: dict[str, float] = {}
    ppl: dict[str, float] = {}
    loads: list[float] = []
    pair: list[float] = []  # two query processes at once: the machine's own 2-process scaling for this work
    tokens = 0
    for _ in range(args.rounds):
        seconds, cpu_s, ppl["query"], tokens, peaks = time_query(binary, text)
        wall["query"].append(seconds)
        cpu["query"].append(cpu_s)
        memory["query"] = peaks.mb(r"^\S*query ")
        pair.append(time_query_pair(binary, text))
        print(f"query: {seconds:.2f} s, {cpu_s:.2f} CPU s, ppl {ppl['query']:.10f}, load {os.getloadavg()[0]:.1f}", flush=True)
        for workers in (1, 2):
            name = f"lmpipe {workers} worker" + ("s" if workers > 1 else "")
            try:
                seconds, cpu_s, summary, peaks = time_score(
                    run, text, workers, args.work / f"scores-{workers}.parquet", args.chunk_mb
                )
            except Exception as exc:  # Ray may not start on an overloaded machine: say so, keep the rest
                print(f"{name}: failed ({str(exc).splitlines()[0][:120]})", flush=True)
                continue
            print(f"{name}: {seconds:.2f} s, {cpu_s:.2f} CPU s (this process), ppl {summary['perplexity']:.10f}, "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
            wall[name].append(seconds)
            cpu[name].append(cpu_s)
            ppl[name] = summary["perplexity"]
            memory[name] = peaks.mb(r"lmpipe score") if workers == 1 else peaks.mb("ScoreActor|MapWorker")
            if workers > 1:
                memory["lmpipe 2 workers driver"] = peaks.mb(r"lmpipe score")
        loads.append(os.getloadavg()[0])
    same = (args.work / "scores-1.parquet").read_bytes() == (args.work / "scores-2.parquet").read_bytes()
    steady_cpu, steady_tokens = (math.nan, 0) if args.no_steady else steady_state(run, text, args.chunk_mb)
    loads.append(os.getloadavg()[0])
    load = os.getloadavg()
    lstm = lstm_figures(run, text, args.lstm_lines, args.rounds)
    q_cpu = min(cpu["query"])
    print(f"\n### `lmpipe score` vs KenLM `query` ({time.strftime('%Y-%m-%d %H:%M')})\n")
    print(f"{machine()}; {versions()}; load average (1 min) after each round "
          f"{' / '.join(f'{x:.1f}' for x in loads)}, {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min) at "
          "the end.\n")  # fmt: skip
    print(f"KN5 (probing binary) on {lines:,} generated lines the model was not trained on ({tokens:,} tokens, "
          f"`</s>` included), {args.chunk_mb:g} MB chunks; {args.rounds} alternating rounds, best of each; "
          "lmpipe is the `lmpipe score` command (Parquet records and its summary written, Ray started for 2 "
          "workers), query prints its summary only; CPU s are every process's (lmpipe: the command, raylet, "
          f"actors). Records of 1 and 2 workers byte-identical: {same}. lmpipe's KenLM scorer: {scorer_kind()}.\n")  # fmt: skip
    print("| scorer | whole wall s | tokens/s (wall) | vs query (wall) | vs 1 worker (wall) | CPU s, all processes "
          "| tokens per CPU s | vs query per core | perplexity | peak RSS per process |\n"
          "|---|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    best_q = min(wall["query"])
    best_1 = min(wall["lmpipe 1 worker"], default=math.nan)
    for name in names:
        if not wall[name]:
            print(f"| {name} | - | - | - | - | - | - | - | - | - (did not run: Ray did not start) |")
            continue
        best, best_cpu = min(wall[name]), min(cpu[name])
        rss = f"{memory.get(name, 0):.0f} MB" + (
            f" per actor, {memory['lmpipe 2 workers driver']:.0f} MB driver" if name == "lmpipe 2 workers" else "")
        print(f"| {name} | {best:.2f} | {tokens / best:,.0f} | {best_q / best:.2f}x | "
              f"{'-' if name == 'query' else f'{best_1 / best:.2f}x'} | {best_cpu:.2f} | {tokens / best_cpu:,.0f} | "
              f"{q_cpu / best_cpu:.2f}x | {ppl[name]:.10f} | {rss} |")  # fmt: skip
    best_pair = min(pair)
    print(f"| 2 x query at once (the same text each; the machine's 2-process ceiling) | {best_pair:.2f} | "
          f"{2 * tokens / best_pair:,.0f} | {2 * best_q / best_pair:.2f}x | - | - | - | - | - | - |")  # fmt: skip
    print(f"| lmpipe steady state (ChunkScorer in one process, model loaded, no output) | - | - | - | - | "
          f"{steady_cpu:.2f} | {steady_tokens / steady_cpu:,.0f} | {q_cpu / steady_cpu:.2f}x | - | - |")  # fmt: skip
    print("\nPer-round seconds: " + "; ".join(f"{n} wall {[round(x, 2) for x in wall[n]]} CPU {[round(x, 2) for x in cpu[n]]}" for n in names))
    print(f"\nLSTM 2x200, full softmax over {len(run.joinpath('tokenize', 'vocab.tsv').read_text().splitlines()) - 1:,} "
          f"words, CPU, {lstm['tokens']:,} tokens of {lstm['lines']:,} lines, best of {args.rounds} alternating: "
          f"lmpipe NeuralScorer {lstm['lmpipe_tps']:,.0f} tokens/s, plain PyTorch loop {lstm['plain_tps']:,.0f} "
          f"tokens/s (**{lstm['ratio']:.2f}x** the plain loop's speed; seconds {lstm['times']}; load "
          f"{lstm['load'][0]:.1f}).")  # fmt: skip


if __name__ == "__main__":
    main()
