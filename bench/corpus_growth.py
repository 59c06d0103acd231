"""Does the generated corpus grow like real text?  Distinct n-grams per order against tokens, real vs generated.

    .venv/bin/python bench/corpus_growth.py --mirror ../shared/data            # table + plot, appended to RESULTS.md

Real: the mirrored English text (``corpora.english_text``) with its sentences in random order (the generator
is fitted on the mixture of four sources, so its output mixes them at every position; in file order each new
source adds a burst of n-grams that is not growth).  Generated: ``corpora.generated_corpus`` at the real size
and beyond (``--sizes``).  Writes ``corpus_growth.png`` beside this file.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from corpora import english_text, generated_corpus
from corpus_model import distinct_ngrams

HERE = Path(__file__).resolve().parent
ORDERS = (1, 2, 3, 4, 5)


def _lines(text: str) -> list[list[str]]:
    return [ln.split() for ln in text.splitlines() if ln.strip()]


def _plot(curves: dict[str, tuple[list[int], dict[int, list[int]]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for n, color in zip(ORDERS, ("C0", "C1", "C2", "C3", "C4"), strict=True):
        for name, style in (("real", "-"), ("generated", "--")):
            points, counts = curves[name]
            ax.plot(points, counts[n], style, color=color, label=f"{n}-grams, {name}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tokens")
    ax.set_ylabel("distinct n-grams")
    ax.set_title("Distinct n-grams: real English (solid) vs generated (dashed)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mirror", type=Path, default=Path(os.environ.get("LMPIPE_DATA_MIRROR", "../shared/data")))
    p.add_argument("--work", type=Path, default=Path("/tmp/lmpipe-bench-corpora"))
    p.add_argument("--sizes", type=float, nargs="*", default=[16e6], help="generated sizes beyond the real one")
    p.add_argument("--no-append", action="store_true")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    real = _lines(english_text(args.mirror))
    real = [real[i] for i in np.random.default_rng(0).permutation(len(real))]
    n_real = sum(map(len, real))
    points = [p for p in (250_000, 500_000, 1_000_000, 2_000_000) if p < n_real] + [n_real]
    curves = {"real": (points, distinct_ngrams(real, ORDERS, points))}
    gen_path = args.work / f"generated-{n_real}.txt"
    t0 = time.perf_counter()
    stats = generated_corpus(args.mirror, n_real, gen_path)
    gen_seconds = time.perf_counter() - t0
    generated = _lines(gen_path.read_text(encoding="utf-8"))
    curves["generated"] = (points, distinct_ngrams(generated, ORDERS, points))
    rows = [
        "| tokens | " + " | ".join(f"{n}-grams real / generated" for n in ORDERS) + " |",
        "|---|" + "---|" * len(ORDERS),
    ]
    for i, n_tok in enumerate(points):
        cells = [f"{curves['real'][1][n][i]:,} / {curves['generated'][1][n][i]:,}" for n in ORDERS]
        rows.append(f"| {n_tok:,} | " + " | ".join(cells) + " |")
    beyond = []
    for size in args.sizes:
        path = args.work / f"generated-{int(size)}.txt"
        t0 = time.perf_counter()
        big = generated_corpus(args.mirror, int(size), path)
        seconds = time.perf_counter() - t0
        lines = _lines(path.read_text(encoding="utf-8"))
        counts = distinct_ngrams(lines, ORDERS, [big["tokens"]])
        beyond.append(
            f"| {big['tokens']:,} (generated in {seconds:.0f} s) | "
            + " | ".join(f"{counts[n][0]:,}" for n in ORDERS)
            + f" | {big['vocabulary']:,} |"
        )
    _plot(curves, HERE / "corpus_growth.png")
    load = os.getloadavg()[0]
    entry = [
        f"\n## Generated corpus vs real English: distinct n-grams as size grows ({time.strftime('%Y-%m-%d')})\n",
        "Command: `.venv/bin/python bench/corpus_growth.py --sizes "
        + " ".join(f"{s:.0f}" for s in args.sizes)
        + f"`; load average {load:.1f}; {time.time() - started:.0f} s in all.  ",
        f"Real: the mirrored English text, {n_real:,} tokens, sentences shuffled; generated: "
        f"`corpora.generated_corpus` (order-4 Witten-Bell chain + Pitman-Yor rare words), {stats['tokens']:,} "
        f"tokens in {gen_seconds:.0f} s, vocabulary {stats['vocabulary']:,}.  Plot: `bench/corpus_growth.png`.\n",
        *rows,
        "",
        "Beyond the real size (generated only):\n",
        "| tokens | " + " | ".join(f"{n}-grams" for n in ORDERS) + " | vocabulary |",
        "|---|" + "---|" * (len(ORDERS) + 1),
        *beyond,
        "",
    ]
    text = "\n".join(entry)
    print(text)
    if not args.no_append:
        with open(HERE / "RESULTS.md", "a", encoding="utf-8") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
