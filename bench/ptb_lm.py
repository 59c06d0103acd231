"""Benchmark the lm stage on the Penn Treebank: the perplexity table (KN5, Zaremba's small LSTM, a tanh RNN and
an IRNN of the same size, the LSTM initialised from the run's SGNS vectors) and Ray Train's training throughput
against a plain PyTorch loop of the same model, measured in the same run.

    LMPIPE_DATA_MIRROR=../shared/data .venv/bin/python bench/ptb_lm.py           # full: ~2-2.5 h on 2 quiet cores
    .venv/bin/python bench/ptb_lm.py --quick --no-append                            # smoke: a few minutes

The table comes from one ``lmpipe run pipelines/specs/ptb-lm.yaml`` (stages tokenize, ngram, sgns, lm); every
perplexity is whole-corpus with KenLM's accounting (82,430 test tokens = words + one ``</s>`` per sentence, 0
OOV).  Throughput: the same 2 x 200 LSTM, batch 20, bptt 20, SGD + clip 5, on the first ``--throughput-tokens``
training tokens, (a) through the lm stage with 1 Ray Train worker (tokens/s of its training epoch, measured
inside the worker; the whole ``fit`` with Ray Train's start-up reported separately) and (b) as a plain loop in
this process (the PyTorch word_language_model example's loop), both with ``--threads`` torch threads.
``--quick`` trains every model for 1 epoch on the first 3,000 training sentences and measures throughput on
40k tokens: it checks the script, not the targets.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from common import machine
from common import versions as package_versions

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SPEC = REPO / "pipelines" / "specs" / "ptb-lm.yaml"
PAPER = {
    "lstm": "120.7 / 114.5 (Zaremba small)",
    "ngram": "– / 141.2 (Mikolov & Zweig KN5)",
    "rnn": "– / 124.7 (Mikolov RNN, 200 classes)",
}
logger = logging.getLogger("bench.ptb_lm")


def versions() -> str:
    return package_versions("ray", "torch", "numpy", "kenlm")


def head_lines(src: Path, dst: Path, lines: int) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, encoding="utf-8") as f, open(dst, "w", encoding="utf-8") as out:
        for i, line in enumerate(f):
            if i >= lines:
                break
            out.write(line)
    return dst


def base_spec(args: argparse.Namespace) -> dict[str, Any]:
    """ptb-lm.yaml as data; --quick: 1 epoch on 3,000 training sentences, sgns 1 epoch."""
    from lmpipe.pipelines.datasets.resolve import resolve

    data = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
    data["lm"]["threads"] = args.threads
    if args.models:
        keep = set(args.models)
        data["lm"]["models"] = [m for m in data["lm"]["models"] if m["name"] in keep]
        if not any(m.get("embeddings") == "sgns" for m in data["lm"]["models"]):
            data["stages"] = [s for s in data["stages"] if s != "sgns"]
        names = keep | {f"kn{data['ngram']['order']}"}
        mixtures = [m for m in data.get("mix", {}).get("mixtures", []) if set(m["models"]) <= names]
        data.setdefault("mix", {})["mixtures"] = mixtures
        if not mixtures:
            data["stages"] = [s for s in data["stages"] if s != "mix"]
    if args.lstm_epochs:  # a shorter run: Zaremba's halving then starts after half the epochs
        for model in data["lm"]["models"]:
            if model["name"] == "lstm":
                model["epochs"] = args.lstm_epochs
                model["decay_after"] = max(1, min(model.get("decay_after", 4), args.lstm_epochs // 2))
    if args.other_epochs:
        for model in data["lm"]["models"]:
            if model["name"] != "lstm":
                model["epochs"] = args.other_epochs
    for item in args.epochs or []:  # NAME=N, after --lstm-epochs / --other-epochs
        name, _, count = item.partition("=")
        chosen = [m for m in data["lm"]["models"] if m["name"] == name]
        if not chosen or not count.isdigit():
            raise SystemExit(f"--epochs {item!r}: expected NAME=N with NAME one of the spec's models")
        chosen[0]["epochs"] = int(count)
    if args.quick:
        train = resolve("data:ptb/train", mirror=str(args.mirror))
        data["corpus"]["train"] = str(head_lines(Path(train), args.work / "ptb-quick.train.txt", 3000))
        data["ngram"]["discount_fallback"] = [0.5, 1.0, 1.5]
        data["sgns"]["epochs"] = 1
        for model in data["lm"]["models"]:
            model["epochs"] = 1
        data["name"] = "ptb-lm-quick"
    return data


def plain_loop(run: Path, model_cfg, train_cfg, threads: int) -> dict[str, float]:
    """The same model and step as lm.train, as a bare loop (no Ray, no DDP, no checkpoints, no validation)."""
    import torch

    from lmpipe.lm.batching import batchify, get_batch, read_stream
    from lmpipe.lm.models import RNNModel, detach_hidden
    from lmpipe.pipelines.core.shards import split_shards

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # as lm.train does
    torch.manual_seed(train_cfg.seed)
    model = RNNModel(model_cfg)
    data = batchify(
        read_stream([str(p) for p in split_shards(run / "tokenize", "train")]), train_cfg.batch_size
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=train_cfg.lr)
    hidden = model.init_hidden(train_cfg.batch_size)
    tokens = 0
    started = time.perf_counter()
    for i in range(0, data.size(0) - 1, train_cfg.bptt):
        x, y = get_batch(data, i, train_cfg.bptt)
        hidden = detach_hidden(hidden)
        optimizer.zero_grad(set_to_none=True)
        lp, hidden = model(x, hidden, y)
        (-lp.sum() / train_cfg.batch_size).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.clip)
        optimizer.step()
        tokens += y.numel()
    seconds = time.perf_counter() - started
    return {"tokens": tokens, "seconds": seconds, "tokens_per_second": tokens / seconds}


def throughput(args: argparse.Namespace, data: dict[str, Any]) -> dict[str, Any]:
    """Ray Train (1 worker) vs the plain loop on the same first N training tokens, same model and threads.

    The two are run ``--repeats`` times, alternating, and compared by their medians: on 2 cores a single pair is
    at the mercy of whatever else wakes up during one of the two measurements."""
    import statistics

    from lmpipe.lm.train import TrainConfig
    from lmpipe.pipelines.core.vocab import Vocab
    from lmpipe.pipelines.datasets.resolve import resolve
    from lmpipe.pipelines.run import run_pipeline
    from lmpipe.pipelines.spec import parse_spec
    from lmpipe.pipelines.stages.lm import model_config, train_config

    lines = max(1, args.throughput_tokens // 21)  # PTB averages ~21 tokens per line incl. </s>
    train = head_lines(
        Path(resolve("data:ptb/train", mirror=str(args.mirror))), args.work / "ptb-tp.train.txt", lines
    )
    lstm = {**data["lm"]["models"][0], "epochs": 1, "schedule": "none"}
    spec_data = {
        **data, "name": "ptb-lm-throughput", "stages": ["tokenize", "lm"],
        "corpus": {**data["corpus"], "train": str(train)},
        "lm": {**data["lm"], "workers": 1, "models": [lstm]},
    }  # fmt: skip
    spec = parse_spec(spec_data, source="bench")
    run = args.work / "ptb-lm-throughput"
    shutil.rmtree(run, ignore_errors=True)
    run_pipeline(spec, run_dir=run, stages=["tokenize"], mirror=str(args.mirror))
    vocab = Vocab.load(run / "tokenize" / "vocab.tsv")
    m = spec.lm.models[0]
    cfg: TrainConfig = train_config(m, spec.lm)
    ray_runs: list[dict[str, float]] = []
    plain_runs: list[dict[str, float]] = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        manifest = run_pipeline(spec, run_dir=run, stages=["lm"], mirror=str(args.mirror), force=["lm"])["lm"]
        stage_wall = time.perf_counter() - t0
        epoch = manifest["models"]["lstm"]["epochs"][0]
        ray_runs.append({
            "tps": epoch["tokens_per_second"], "epoch_s": epoch["seconds"], "tokens": epoch["train_tokens"],
            "fit_s": manifest["training"]["seconds"], "stage_wall_s": stage_wall,
        })  # fmt: skip
        plain = plain_loop(run, model_config(m, vocab, None), cfg, args.threads)
        plain_runs.append({"tps": plain["tokens_per_second"], "seconds": plain["seconds"]})
    ray_tps = statistics.median(r["tps"] for r in ray_runs)
    plain_tps = statistics.median(r["tps"] for r in plain_runs)
    return {
        "tokens": ray_runs[0]["tokens"],
        "ray_tps": ray_tps,
        "plain_tps": plain_tps,
        "ray_all": [r["tps"] for r in ray_runs],
        "plain_all": [r["tps"] for r in plain_runs],
        "ray_fit_s": statistics.median(r["fit_s"] for r in ray_runs),
        "ray_epoch_s": statistics.median(r["epoch_s"] for r in ray_runs),
        "plain_s": statistics.median(r["seconds"] for r in plain_runs),
    }


def table_rows(manifests: dict[str, dict[str, Any]]) -> list[str]:
    """One Markdown row for KN5 and one per recurrent model, from the ngram and lm manifests."""
    ng = manifests["ngram"]["perplexity"]
    lm = manifests["lm"]
    test_bytes = next(iter(lm["models"].values()))["perplexity"]["test"]["bytes"]
    kn_bpb = -ng["test"]["log10_sum"] / test_bytes / math.log10(2.0)
    rows = [
        f"| KN5 (ngram stage, lmplz-exact) | – | {ng['valid']['perplexity']:.1f} | {ng['test']['perplexity']:.1f} | "
        f"{ng['test']['tokens']:,} / {ng['test']['oov']} | {kn_bpb:.3f} | {PAPER['ngram']} |"
    ]
    for name, m in lm["models"].items():
        cfg, ev = m["config"], m["perplexity"]
        init = m.get("embedding_init")
        shape = (
            f"nplm n={cfg['context'] + 1}, {cfg['emb_dim']}-d vectors, {cfg['hidden']} {cfg['activation']}, direct {cfg['direct']}"
            if cfg["kind"] == "nplm"
            else f"{cfg['kind']} {cfg['layers']}x{cfg['hidden']}"
        )
        what = shape + (
            f", embedding from sgns ({init['found']:,} found, {init['missing']:,} random)"
            if init
            else ", random init"
        )
        epochs = m["epochs"]
        train_s = sum(e["seconds"] for e in epochs)
        rows.append(
            f"| {name}: {what} | {m['best_epoch']}/{len(epochs)} ep, {train_s / 60:.1f} min, "
            f"{epochs[-1]['tokens_per_second']:,.0f} tok/s | {ev['valid']['perplexity']:.1f} | {ev['test']['perplexity']:.1f} | "
            f"{ev['test']['tokens']:,} / {ev['test']['oov']} | {ev['test']['bits_per_byte']:.3f} | {PAPER.get(name, '–')} |"
        )
    for label, m in manifests.get("mix", {}).get("mixtures", {}).items():
        ev = m["perplexity"]
        weights = ", ".join(
            f"{n} {w:.2f}" for n, w in zip(m["weights"]["models"], m["weights"]["weights"][0], strict=True)
        )
        cis = "; ".join(
            f"vs {n} {b['difference']:+.1f} [{b['low']:+.1f}, {b['high']:+.1f}]"
            for n, b in m.get("bootstrap", {}).items()
        )
        below = all(ev["test"]["perplexity"] < p for p in m["components"]["test"].values())
        rows.append(
            f"| {label}: interpolation, weights {weights} (EM on valid) | test ppl − component, 95% CI: {cis} | "
            f"{ev['valid']['perplexity']:.1f} | {ev['test']['perplexity']:.1f} | {ev['test']['tokens']:,} / {ev['test']['oov']} | "
            f"{-ev['test']['log10_sum'] / test_bytes / math.log10(2.0):.3f} | below both components: {'yes' if below else 'NO'} |"
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1 epoch on 3,000 sentences: checks the script only")
    p.add_argument("--models", nargs="*", help="model names of ptb-lm.yaml to train (default: all)")
    p.add_argument(
        "--other-epochs", type=int, help="epochs of every model but `lstm` (default: the spec's 13)"
    )
    p.add_argument("--lstm-epochs", type=int, help="epochs of `lstm` (default: the spec's 13, Zaremba's)")
    p.add_argument("--epochs", nargs="*", metavar="NAME=N", help="epochs of one model, e.g. rnn=6 irnn=6")
    p.add_argument(
        "--part", choices=["all", "table", "throughput"], default="all",
        help="the perplexity table, the throughput comparison, or both (default)",
    )  # fmt: skip
    p.add_argument(
        "--repeats", type=int, default=3, help="alternating Ray Train / plain-loop throughput pairs"
    )
    p.add_argument("--threads", type=int, default=2, help="torch threads per worker and for the plain loop")
    p.add_argument("--throughput-tokens", type=int, default=None, help="default 200k (quick: 40k)")
    p.add_argument(
        "--mirror", type=Path, default=Path(os.environ.get("LMPIPE_DATA_MIRROR", "../shared/data"))
    )
    p.add_argument("--work", type=Path, default=Path("/tmp/lmpipe-bench-lm"), help="run directories")
    p.add_argument("--results", type=Path, default=BENCH / "RESULTS.md")
    p.add_argument("--no-append", action="store_true", help="print the section, do not append it")
    args = p.parse_args(argv)
    args.throughput_tokens = args.throughput_tokens or (40_000 if args.quick else 200_000)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.work.mkdir(parents=True, exist_ok=True)

    from lmpipe.cluster.connect import connect
    from lmpipe.pipelines.run import run_pipeline
    from lmpipe.pipelines.spec import parse_spec

    load_before = os.getloadavg()
    connect(num_cpus=os.cpu_count())
    started = time.perf_counter()
    data = base_spec(args)
    command = ".venv/bin/python bench/ptb_lm.py " + " ".join(argv if argv is not None else sys.argv[1:])
    section = [
        "",
        f"## lm stage on PTB: {'recurrent LMs vs KN5' if args.part != 'throughput' else 'Ray Train vs plain loop throughput'}"
        f" ({datetime.date.today().isoformat()}{', --quick' if args.quick else ''})",
        "",
        f"Command: `LMPIPE_DATA_MIRROR={args.mirror} {command.strip()}`  ",
        f"Machine: {machine()}; {versions()}.  ",
    ]
    body: list[str] = []
    if args.part in ("all", "table"):
        run = args.work / data["name"]
        shutil.rmtree(run, ignore_errors=True)
        manifests = run_pipeline(parse_spec(data, source=str(SPEC)), run_dir=run, mirror=str(args.mirror))
        body += [
            f"Spec `pipelines/specs/ptb-lm.yaml`: 1 Ray Train worker x {args.threads} torch threads; perplexity = "
            f"whole corpus, KenLM's accounting (words + one </s> per sentence); hidden state: "
            f"{manifests['lm']['hidden_state']}; table {(time.perf_counter() - started) / 60:.1f} min.",
            "",
            "| model | training | valid ppl | test ppl | test tokens / OOV | test bits/byte | published valid / test |",
            "|---|---|---|---|---|---|---|",
            *table_rows(manifests),
            "",
        ]
    if args.part in ("all", "throughput"):
        tp = throughput(args, data)
        ratio = tp["ray_tps"] / tp["plain_tps"]
        pairs = ", ".join(f"{r:,.0f}/{q:,.0f}" for r, q in zip(tp["ray_all"], tp["plain_all"], strict=True))
        body += [
            f"Throughput, LSTM 2x200 (batch 20, bptt 20, SGD, clip 5), first {tp['tokens']:,} training tokens, "
            f"{args.threads} thread(s), {args.repeats} alternating runs each (Ray/plain tokens/s: {pairs}): Ray Train "
            f"1 worker median {tp['ray_tps']:,.0f} tokens/s (epoch {tp['ray_epoch_s']:.1f} s, measured in the worker; "
            f"whole fit incl. worker start-up and evaluation {tp['ray_fit_s']:.1f} s) vs plain PyTorch loop median "
            f"{tp['plain_tps']:,.0f} tokens/s ({tp['plain_s']:.1f} s): **{ratio:.2f}x** (target >= 0.9x).",
            "",
        ]
    total_s = time.perf_counter() - started
    load_after = os.getloadavg()
    section += [
        f"Load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after; the benchmark took "
        f"{total_s / 60:.1f} min.",
        "",
        *body,
    ]
    text = "\n".join(section)
    print(text)
    if not args.no_append:
        with open(args.results, "a", encoding="utf-8") as f:
            f.write(text)
        print(f"appended to {args.results}")


if __name__ == "__main__":
    main()
