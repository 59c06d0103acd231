"""Hand-made token shards and vocabularies for the lm tests (no tokenize stage, no Ray)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from lmpipe.pipelines.core.schemas import EOS_ID, SPECIALS, TOKENS
from lmpipe.pipelines.core.vocab import Vocab


def write_shard(path: Path, sentences: Sequence[Sequence[int]], batch_rows: int = 3) -> Path:
    """A TOKENS-schema Arrow file with several record batches (so readers cross batch boundaries)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, TOKENS) as writer:
        for start in range(0, len(sentences), batch_rows):
            part = sentences[start : start + batch_rows]
            n = len(part)
            writer.write_batch(
                pa.record_batch(
                    [
                        pa.array(np.zeros(n, np.uint32)),
                        pa.array(np.arange(start, start + n, dtype=np.uint64)),
                        pa.array(np.zeros(n, np.uint64)),
                        pa.array(
                            [list(map(int, s)) for s in part],
                            pa.list_(pa.field("item", pa.uint32(), nullable=False)),
                        ),
                    ],
                    schema=TOKENS,
                )
            )
    return path


def make_corpus(root: Path, splits: dict[str, list[list[str]]]) -> tuple[Path, dict[str, list[Path]], Vocab]:
    """Write ``vocab.tsv`` (from the train split) and one shard per split; words absent from train are <unk>."""
    counts = Counter(w for s in splits["train"] for w in s)
    words = sorted(counts, key=lambda w: (-counts[w], w))
    tokens = list(SPECIALS) + words
    index = {w: i for i, w in enumerate(tokens)}
    vocab_counts = np.array([0, 0, len(splits["train"])] + [counts[w] for w in words], np.uint64)
    vocab = Vocab(pa.array(tokens, pa.string()), vocab_counts)
    root.mkdir(parents=True, exist_ok=True)
    vocab.save(root / "vocab.tsv")
    shards = {}
    for split, sentences in splits.items():
        ids = [[index.get(w, 0) for w in s] for s in sentences]
        shards[split] = [write_shard(root / split / "part-00000-000.arrow", ids)]
    assert EOS_ID == 2
    return root / "vocab.tsv", shards, vocab
