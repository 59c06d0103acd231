"""Benchmark the tagger stage: CoNLL-2003 NER, CoNLL-2000 chunking and UD EWT UPOS, beside Collobert & Weston.

For every task: the window tagger (Collobert & Weston 2011: window 5, 300 hardtanh units, caps feature) and the
BiLSTM-CRF (Lample et al. 2016 without character features; ``--models bilstm-crf-charcnn bilstm-crf-charlstm``
add Ma & Hovy's character CNN or Lample's character BiLSTM), each with random word vectors and with the
pipeline's own vectors; and multitask (NER + POS + chunk on CoNLL-2003, shared lookup and hidden layers) against
single-task NER.  Scores are the stage's own (conlleval F1 on testb / the CoNLL-2000 test set, UPOS accuracy on
the EWT test set); the published rows of REFERENCES.md section E are printed beside them.  The section is
appended to ``bench/RESULTS.md``.

    LMPIPE_DATA_MIRROR=../shared/data .venv/bin/python bench/taggers.py           # the full table
    LMPIPE_DATA_MIRROR=../shared/data .venv/bin/python bench/taggers.py --quick   # ~5 min smoke, no append

Pre-trained vectors: the ``sgns`` stage (dim 100, window 5, 5 epochs, min_count 5) on the English corpus of
``bench/corpora.py`` (PTB + Brown + BBC + KJV, ~3.7M words, lowercased, ``[a-z]+('[a-z]+)?|[0-9]+`` tokens)
plus the words of the three tasks' training files (~0.6M; ``--no-tagger-text`` leaves them out), built here first (the tagger looks words up lowercased and keeps capitalisation in its caps feature).
``--vectors sgns glove`` adds a GloVe column pair.  CoNLL-2000 has no dev set: 10% of the training sentences
(by sentence hash) are held out for early stopping.  ``--quick`` cuts every data set to a few hundred
sentences, the corpus to 300k words and training to 2 epochs: it checks that the script works, its figures
mean nothing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from common import machine
from common import versions as package_versions
from corpora import english_text

BENCH = Path(__file__).resolve().parent
logger = logging.getLogger("bench.taggers")

#: Task -> (tagger task entries, headline metric); full data through the dataset mirror.
TASKS: dict[str, dict[str, Any]] = {
    "ner": {"format": "conll2003", "column": "ner", "train": "data:conll2003/train", "valid": "data:conll2003/valid",
            "test": "data:conll2003/test", "scheme": "bioes"},
    "chunk": {"format": "conll2000", "column": "chunk", "train": "data:conll2000/train", "test": "data:conll2000/test",
              "valid_fraction": 0.1, "scheme": "bioes"},
    "upos": {"format": "conllu", "column": "upos", "train": "data:ud-en-ewt/train", "valid": "data:ud-en-ewt/valid",
             "test": "data:ud-en-ewt/test"},
}  # fmt: skip
#: Collobert & Weston's window network (their lr schedule replaced by Adam for all rows).
WINDOW = {"model": "window", "window": 5, "hidden": 300, "activation": "hardtanh", "dropout": 0.2,
          "optimizer": "adam", "lr": 0.001, "epochs": 20, "patience": 4}  # fmt: skip
#: BiLSTM-CRF: 1 x 100 units per direction, dropout 0.5 (Lample et al. without character features).
BILSTM_CRF = {"model": "rnn", "cell": "lstm", "layers": 1, "hidden": 100, "crf": True, "dropout": 0.5,
              "optimizer": "adam", "lr": 0.002, "epochs": 25, "patience": 5}  # fmt: skip
#: The same BiLSTM-CRF with character features of each word: Ma & Hovy's (2016) CNN (30-d characters, 30
#: filters of width 3) or Lample et al.'s (2016) character BiLSTM (25-d characters, 25 units per direction).
MODELS: dict[str, dict[str, Any]] = {
    "window": WINDOW,
    "bilstm-crf": BILSTM_CRF,
    "bilstm-crf-charcnn": {**BILSTM_CRF, "chars": "cnn", "char_dim": 30, "char_size": 30, "char_width": 3},
    "bilstm-crf-charlstm": {**BILSTM_CRF, "chars": "lstm", "char_dim": 25, "char_size": 25},
}
PUBLISHED = [
    ("Collobert & Weston 2011, NN+WLL (window, random emb.)", "96.31", "89.13", "79.53"),
    ("Collobert & Weston 2011, NN+SLL (window + sentence-level likelihood)", "96.37", "90.33", "81.47"),
    ("Collobert & Weston 2011, NN+SLL+LM2 (pre-trained emb.)", "97.20", "93.63", "88.67"),
    ("Collobert & Weston 2011, SENNA (+ suffix, gazetteer, POS/CHUNK)", "97.29", "94.32", "89.59"),
    ("Huang et al. 2015, BiLSTM-CRF (Senna emb. + features)", "97.55", "94.46", "90.10"),
    (
        "Lample et al. 2016, LSTM-CRF random emb. / pre-trained / + char + dropout",
        "",
        "",
        "83.63 / 88.39 / 90.94",
    ),
]


# ------------------------------------------------------------------------------------------ vectors
def build_vectors(kind: str, args, work: Path) -> tuple[Path, dict[str, Any]]:
    """Tokenize the English corpus and train ``kind`` (sgns or glove) vectors with the pipeline itself."""
    from lmpipe.pipelines.run import run_pipeline
    from lmpipe.pipelines.spec import parse_spec

    text_path = work / (
        f"english{'-taggers' if args.tagger_text else ''}{'-quick' if args.quick else ''}.txt"
    )
    if not text_path.exists():
        text = english_text(args.mirror)
        if args.tagger_text:
            text += "\n" + tagger_train_text(args.mirror)
        if args.quick:
            text = " ".join(text.split()[:300_000])
            text = "\n".join(text[i : i + 400] for i in range(0, len(text), 400))
        text_path.write_text(text, encoding="utf-8")
    epochs = 1 if args.quick else args.vector_epochs
    stages = ["tokenize", "sgns"] if kind == "sgns" else ["tokenize", "cooccur", "glove"]
    data = {
        "name": f"bench-taggers-{kind}", "corpus": {"train": str(text_path)}, "normalize": {"lowercase": True},
        "tokenizer": {"kind": "regex", "pattern": r"[a-z]+(?:'[a-z]+)?|[0-9]+"},
        "tokenize": {"workers": 2, "shard_mb": 1}, "stages": stages,
        "sgns": {"dim": args.dim, "window": 5, "min_count": 5, "epochs": epochs, "shared_negatives": 16, "evaluate": False},
        "glove": {"dim": args.dim, "epochs": 5 if args.quick else 25, "evaluate": False},
    }  # fmt: skip
    run = work / f"vectors-{kind}{'-taggers' if args.tagger_text else ''}{'-quick' if args.quick else ''}"
    t0 = time.perf_counter()
    manifests = run_pipeline(parse_spec(data, source="bench"), run_dir=run, mirror=str(args.mirror))
    out = manifests[kind]["outputs"]
    return run / kind / "vectors", {"count": out["count"], "seconds": time.perf_counter() - t0}


def tagger_train_text(mirror: Path) -> str:
    """The words of the three tasks' *training* files, a sentence per line: unlabelled in-domain text for the
    vectors (Reuters news, WSJ, web text), as a semi-supervised tagger would use; dev and test stay unseen."""
    from lmpipe.pipelines.conll import read_conll
    from lmpipe.pipelines.datasets.resolve import resolve

    lines: list[str] = []
    for task in TASKS.values():
        for sentence in read_conll(resolve(task["train"], mirror=str(mirror)), task["format"]):
            lines.append(" ".join(sentence.tokens))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ data
def quick_tasks(args, work: Path) -> dict[str, dict[str, Any]]:
    """The same tasks on the first sentences of each file (written under ``work/quick``)."""
    from lmpipe.pipelines.conll import read_conll
    from lmpipe.pipelines.datasets.resolve import resolve

    out: dict[str, dict[str, Any]] = {}
    folder = work / "quick"
    folder.mkdir(parents=True, exist_ok=True)
    for name, task in TASKS.items():
        entry = dict(task)
        for split, limit in (("train", 400), ("valid", 100), ("test", 100)):
            if split not in task:
                continue
            src = resolve(task[split], mirror=str(args.mirror))
            sents = read_conll(src, task["format"])[:limit]
            path = folder / f"{name}.{split}"
            cols = ["pos", "chunk", "ner"] if task["format"] == "conll2003" else ["pos", "chunk"]
            with open(path, "w", encoding="utf-8") as f:
                for s in sents:
                    for i, tok in enumerate(s.tokens):
                        if task["format"] == "conllu":
                            f.write(
                                f"{i + 1}\t{tok}\t_\t{s.tags['upos'][i]}\t{s.tags['xpos'][i]}\t_\t0\tdep\t_\t_\n"
                            )
                        else:
                            f.write(" ".join([tok, *(s.tags[c][i] for c in cols)]) + "\n")
                    f.write("\n")
            entry[split] = str(path)
        out[name] = entry
    return out


# ------------------------------------------------------------------------------------------ runs
def run_tagger(
    label: str, tasks: list[dict[str, Any]], model: dict[str, Any], vectors: Path | None, args, work: Path
):
    from lmpipe.pipelines.run import run_pipeline
    from lmpipe.pipelines.spec import parse_spec

    tagger = {
        **model, "tasks": tasks, "dim": args.dim, "batch_size": 16, "threads": args.threads, "seed": args.seed,
        **({"vectors": str(vectors), "max_vectors": None} if vectors else {}),
        **({"epochs": min(model["epochs"], args.max_epochs)} if args.max_epochs else {}),
        **({"unk_replace": args.unk_replace} if args.unk_replace else {}),
        **({"epochs": 2, "patience": None} if args.quick else {}),
    }  # fmt: skip
    data = {"name": "bench-tagger", "corpus": {"train": str(work)}, "stages": ["tagger"], "tagger": tagger}
    run = work / "runs" / label
    t0 = time.perf_counter()
    m = run_pipeline(
        parse_spec(data, source="bench"), run_dir=run, mirror=str(args.mirror), force=["tagger"]
    )["tagger"]  # timed: never reuse an earlier run
    wall = time.perf_counter() - t0
    primary = m["tasks"][tasks[0]["name"]]
    figure = (lambda s: s["overall"]["f1"]) if primary["kind"] == "span" else (lambda s: s["accuracy"])
    tr = m["training"]
    return {
        "valid": figure(primary["scores"]["valid"]) if "valid" in primary["scores"] else float("nan"),
        "test": figure(primary["scores"]["test"]),
        "best_epoch": tr["best_epoch"], "epochs": len(tr["epochs"]), "wall_s": wall,
        "epoch_s": sum(e["seconds"] for e in tr["epochs"]) / max(len(tr["epochs"]), 1),
        "with_vectors": m["vocabulary"].get("with_vectors"), "vocab": m["vocabulary"]["size"],
        "unk_test": m["unk_rate"][tasks[0]["name"]].get("test"), "parameters": tr["parameters"],
    }  # fmt: skip


def versions() -> str:
    return package_versions("ray", "torch", "numpy")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--quick", action="store_true", help="tiny slices, 2 epochs: checks the script, prints, no append"
    )
    p.add_argument("--tasks", nargs="*", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--models", nargs="*", default=["window", "bilstm-crf"], choices=list(MODELS))
    p.add_argument("--vectors", nargs="*", default=["sgns"], choices=["sgns", "glove"])
    p.add_argument("--no-multitask", action="store_true", help="skip the multitask rows")
    p.add_argument("--no-single", action="store_true", help="skip the single-task rows (multitask only)")
    p.add_argument(
        "--no-random", action="store_true", help="skip the random-initialisation rows (e.g. a second seed)"
    )
    p.add_argument("--dim", type=int, default=100, help="word vector size (random and pre-trained alike)")
    p.add_argument("--vector-epochs", type=int, default=5)
    p.add_argument(
        "--tagger-text", action=argparse.BooleanOptionalAction, default=True,
        help="add the tasks' training sentences (words only) to the vectors' corpus (default: on)",
    )  # fmt: skip
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the one training worker (2 oversubscribed a loaded 2-core VM)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-epochs", type=int, help="cap every model's epochs (a time budget; default: none)")
    p.add_argument(
        "--unk-replace", type=float, default=0.0,
        help="tagger.unk_replace for every model: singletons read as <unk> with this probability (Lample: 0.5)",
    )  # fmt: skip
    p.add_argument(
        "--mirror", type=Path, default=Path(os.environ.get("LMPIPE_DATA_MIRROR", "../shared/data"))
    )
    p.add_argument("--work", type=Path, default=Path("/tmp/lmpipe-bench-taggers"))
    p.add_argument("--results", type=Path, default=BENCH / "RESULTS.md")
    p.add_argument("--no-append", action="store_true", help="print the section, do not append it")
    p.add_argument("--verbose", action="store_true", help="log the stages' progress (one line per epoch)")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(name)s %(message)s"
    )
    args.work.mkdir(parents=True, exist_ok=True)
    from lmpipe.cluster.connect import connect

    load_before = os.getloadavg()
    connect(num_cpus=os.cpu_count())
    started = time.perf_counter()
    vectors: dict[str, Path] = {}
    notes: list[str] = []
    for kind in args.vectors:
        vectors[kind], info = build_vectors(kind, args, args.work)
        notes.append(
            f"{kind} vectors: {info['count']:,} words x {args.dim}, built in {info['seconds']:.0f} s on PTB + Brown + "
            f"BBC + KJV{' + the tasks training sentences' if args.tagger_text else ''} (lowercased)"
        )
        print(notes[-1], flush=True)
    tasks = quick_tasks(args, args.work) if args.quick else TASKS
    models = MODELS
    rows: list[tuple[str, str, str, str, dict[str, Any]]] = []

    def record(task: str, model: str, init: str, setting: str, result: dict[str, Any]) -> None:
        rows.append((task, model, init, setting, result))
        print(f"{task:6} {model:10} {init:7} {setting:10} dev {result['valid']:6.2f} test {result['test']:6.2f} "
              f"({result['best_epoch']}/{result['epochs']} epochs, {result['epoch_s']:.0f} s/epoch)", flush=True)  # fmt: skip

    seed_label = f"-seed{args.seed}" if args.seed != 1 else ""  # seed 1 keeps the earlier run folders
    for task in [] if args.no_single else args.tasks:
        for model in args.models:
            for init in [*([] if args.no_random else ["random"]), *args.vectors]:
                label = f"{task}-{model}-{init}{seed_label}"
                record(task, model, init, "single", run_tagger(label, [{"name": task, **tasks[task]}], models[model], vectors.get(init), args, args.work))  # fmt: skip
    if not args.no_multitask and "ner" in args.tasks:
        ner = tasks["ner"]
        extra = [{"name": "ner", **ner}, {"name": "pos", **{**ner, "column": "pos"}},
                 {"name": "chunk", **{**ner, "column": "chunk"}}]  # fmt: skip
        for model in args.models:
            for init in ["random", *args.vectors][-1:]:  # the pre-trained setting: C&W's multitask rows
                record("ner", model, init, "multitask", run_tagger(f"ner-{model}-{init}-mtl{seed_label}", extra, models[model], vectors.get(init), args, args.work))  # fmt: skip
    total_s = time.perf_counter() - started
    load_after = os.getloadavg()

    metric = {"ner": "NER F1 (testb)", "chunk": "chunk F1 (test)", "upos": "UPOS acc. (test)"}
    table = ["| task | model | word vectors | tasks | dev | test | lift from vectors | best/run epochs | s/epoch |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for task, model, init, setting, r in rows:
        base = next((x for t, m, i, s, x in rows if (t, m, i, s) == (task, model, "random", setting)), None)
        lift = f"{r['test'] - base['test']:+.2f}" if base is not None and init != "random" else ""
        table.append(
            f"| {metric[task]} | {model} | {init} | {'NER+POS+chunk' if setting == 'multitask' else task} | "
            f"{r['valid']:.2f} | {r['test']:.2f} | {lift} | {r['best_epoch']}/{r['epochs']} | {r['epoch_s']:.0f} |"
        )
    single = {(t, m, i): r for t, m, i, s, r in rows if s == "single"}
    for t, m, i, s, r in rows:
        if s == "multitask" and (t, m, i) in single:
            notes.append(
                f"multitask vs single-task NER, {m} + {i}: {r['test'] - single[(t, m, i)]['test']:+.2f} F1 on testb"
            )
    published = ["| published system | POS acc. (WSJ) | chunk F1 | NER F1 |", "|---|---|---|---|"]
    published += [f"| {name} | {pos} | {chunk} | {ner} |" for name, pos, chunk, ner in PUBLISHED]
    command = "LMPIPE_DATA_MIRROR=../shared/data .venv/bin/python bench/taggers.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    section = [
        "",
        f"## Taggers: window and BiLSTM-CRF, random vs pipeline vectors, multitask ({datetime.date.today().isoformat()})"
        + (" -- QUICK MODE, figures meaningless" if args.quick else ""),
        "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {machine()}; {versions()}.  ",
        f"Load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after on {os.cpu_count()} cores; "
        f"the whole benchmark took {total_s / 60:.1f} min.  ",
        f"Settings: word vectors {args.dim}-d (random N(0, 0.1) or the pipeline's; lowercase lookup + 5-d caps "
        "feature), batch 16 sentences, Adam, gradient norm clip 5, early stopping on dev (CoNLL-2000: 10% of train)"
        + (f", epochs capped at {args.max_epochs}" if args.max_epochs else "")
        + (f", training singletons read as <unk> with p = {args.unk_replace}" if args.unk_replace else "")
        + ". "
        f"window = {json.dumps({k: v for k, v in WINDOW.items() if k != 'model'})}; "
        f"bilstm-crf = {json.dumps({k: v for k, v in BILSTM_CRF.items() if k != 'model'})}"
        + "".join(
            f"; {m} = bilstm-crf + {json.dumps({k: v for k, v in MODELS[m].items() if k not in BILSTM_CRF})}"
            for m in args.models
            if m.startswith("bilstm-crf-")
        )
        + ". "
        "Scores: conlleval F1 (tests/test_conll.py checks it against seqeval) and token accuracy, from the stage's manifest.",
        "",
        *table,
        "",
        *published,
        "",
        "Published POS figures are PTB WSJ 22-24 accuracies (45 tags), not UD EWT UPOS (17 tags): not comparable.",
        "",
        *[f"- {n}" for n in notes],
        "",
    ]
    text = "\n".join(section)
    print(text)
    if args.quick or args.no_append:
        print("(not appended: --quick / --no-append)")
    else:
        with open(args.results, "a", encoding="utf-8") as out:
            out.write(text)
        print(f"appended to {args.results}")
    (args.work / "last.json").write_text(json.dumps([list(r[:4]) + [r[4]] for r in rows], indent=1))


if __name__ == "__main__":
    main()
