"""The benchmark corpora: the mirrored English text (real), and text generated from a model of it (scale).

PTB train, Brown (tags stripped), BBC News (blank lines dropped) and KJV (verse references dropped): about
3.7M words of real English.  ``generated_corpus`` samples any size from an n-gram model fitted on it, with new
word forms at its Heaps' rate (``corpus_model.py``).  ``make_corpus`` (repetition) only serves throughput
figures that do not depend on the text: it distorts n-gram counts-of-counts and embedding quality.
"""

from __future__ import annotations

from pathlib import Path


def english_text(mirror: Path) -> str:
    parts = [(mirror / "ptb" / "ptb.train.txt").read_text()]
    for path in sorted((mirror / "brown").glob("c[a-r][0-9][0-9]")):
        for line in path.read_text(errors="replace").splitlines():
            words = [w.rsplit("/", 1)[0] for w in line.split()]
            if words:
                parts.append(" ".join(words) + "\n")
    for path in sorted((mirror / "bbc-news").rglob("*.txt")):
        parts.append("\n".join(ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()) + "\n")
    for line in (mirror / "kjv" / "kjv.txt").read_text().splitlines():
        if " " in line:
            parts.append(line.split(" ", 1)[1] + "\n")
    return "".join(parts)


def make_corpus(text: str, tokens: int, path: Path) -> int:
    """Repeat text until ``tokens`` whitespace tokens; returns the real count."""
    per = len(text.split())
    reps = max(1, round(tokens / per))
    if not path.exists() or path.stat().st_size != len(text.encode()) * reps:
        with open(path, "w") as out:
            for _ in range(reps):
                out.write(text)
    return per * reps




def generated_corpus(mirror: Path, tokens: int, path: Path, *, seed: int = 1, order: int = 4) -> dict:
    """Write ``tokens`` words of text sampled from an n-gram model of :func:`english_text` (with new word forms
    at the real text's Heaps' rate: ``bench/corpus_model.py``) to ``path``, unless it is already there.

    Returns the corpus statistics (``tokens``, ``sentences``, ``vocabulary``); a ``.json`` beside the file
    records them with the arguments, so a rerun with the same arguments reuses the file.
    """
    import json

    from corpus_model import fit, write_generated

    meta_path = path.with_name(path.name + ".json")
    wanted = {"tokens": tokens, "seed": seed, "order": order}
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("arguments") == wanted:
            return meta["statistics"]
    stats = write_generated(fit(english_text(mirror), order=order), tokens, path, seed=seed)
    meta_path.write_text(json.dumps({"arguments": wanted, "statistics": stats}, indent=1) + "\n")
    return stats
