"""The benchmark corpora: the mirrored English text, concatenated and repeated to a target size.

PTB train, Brown (tags stripped), BBC News (blank lines dropped) and KJV (verse references dropped): about
3.7M words of real English.  Repetition only serves throughput and memory figures (it distorts n-gram
counts-of-counts and embedding quality).
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


