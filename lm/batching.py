"""Token streams for neural language models, and the batchify/bptt layout of truncated BPTT.

The stream is the KenLM token sequence: every sentence of the split followed by ``</s>`` (id 2), in shard and
row order, so a neural model predicts exactly the tokens ``lm.perplexity.CorpusScore`` counts (n + 1 per
sentence of n words).  ``<s>`` is never stored: the stream *starts* with one extra ``</s>``, which is only
context -- the previous sentence's end plays the role of ``<s>`` for the next sentence, and this leading one
for the first sentence.  So the inputs are ``stream[:-1]`` and the targets ``stream[1:]``::

    sentences  [the cat] [a dog runs]
    stream     </s> the cat </s> a dog runs </s>
    inputs     </s> the cat </s> a   dog  runs
    targets    the  cat </s> a  dog  runs </s>          5 + 3 = (2 + 1) + (3 + 1) predicted tokens

Streams are ``int64`` tensors (what ``nn.Embedding`` and ``cross_entropy`` take); a worker reads only its slice
(``read_stream(paths, start, stop)``), so no process holds a whole large corpus.

    >>> import torch
    >>> data = batchify(torch.arange(10), 2)           # two columns
    >>> data.t().tolist()
    [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    >>> x, y = get_batch(data, 0, bptt=3)
    >>> x.t().tolist(), y.t().tolist()
    ([[0, 1, 2], [5, 6, 7]], [[1, 2, 3], [6, 7, 8]])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lmpipe.pipelines.core.schemas import EOS_ID
from lmpipe.pipelines.core.shards import shard_batches


# ------------------------------------------------------------------------------------------ streams
def _shard_sentence_lengths(path: str) -> np.ndarray:
    """Tokens per sentence of one shard, from the list offsets only (no ids are read)."""
    out = []
    for batch in shard_batches(path, ["ids"]):
        offsets = np.asarray(batch.column(0).offsets, dtype=np.int64)
        out.append(np.diff(offsets))
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def stream_length(paths: Sequence[str]) -> int:
    """Length of the stream: 1 (the leading ``</s>``) + sum over sentences of (n + 1)."""
    return 1 + sum(int((_shard_sentence_lengths(p) + 1).sum()) for p in paths)


def read_stream(paths: Sequence[str], start: int = 0, stop: int | None = None) -> torch.Tensor:
    """``stream[start:stop]`` as int64, reading only the record batches that overlap the range."""
    stop = np.iinfo(np.int64).max if stop is None else stop
    pieces: list[np.ndarray] = []

    def take(values: np.ndarray, pos: int) -> None:  # the part of stream[pos : pos + len] inside the range
        lo, hi = max(start - pos, 0), min(stop - pos, len(values))
        if lo < hi:
            pieces.append(values[lo:hi])

    take(np.array([EOS_ID], np.int64), 0)  # position 0: the leading </s>, context only
    pos = 1
    for path in paths:
        for batch in shard_batches(path, ["ids"]):
            if pos >= stop:
                break
            ids = batch.column(0)
            offsets = np.asarray(ids.offsets, dtype=np.int64)
            size = int(offsets[-1] - offsets[0]) + len(ids)  # tokens + one </s> per sentence
            if pos + size > start:
                flat = np.asarray(ids.values, dtype=np.int64)[offsets[0] : offsets[-1]]
                take(np.insert(flat, offsets[1:] - offsets[0], EOS_ID), pos)  # </s> after every sentence
            pos += size
    out = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
    return torch.from_numpy(out)


def sentences_stream(sentences: Iterable[Sequence[int]]) -> torch.Tensor:
    """The stream of in-memory sentences (tests, generation prompts): ``</s>`` s1 ``</s>`` s2 ``</s>`` ..."""
    out = [EOS_ID]
    for s in sentences:
        out.extend(int(t) for t in s)
        out.append(EOS_ID)
    return torch.tensor(out, dtype=torch.int64)


# ------------------------------------------------------------------------------------------ training layout
# batchify cuts the stream into ``bsz`` contiguous columns (the tail that does not fill a row is dropped), as
# the PyTorch word_language_model example does.  With the alphabet and bsz = 4:
#
#     stream a b c d e f g h i j k l m n o p q r s t u v w x y z
#
#     ┌ a g m s ┐    rows are time steps, columns are independent streams trained side by side;
#     │ b h n t │    the hidden state of column j flows down column j across batches (truncated BPTT:
#     │ c i o u │    it is carried, detached, from one bptt window to the next);
#     │ d j p v │    the dependence of 'g' on 'f' cannot be learned, it crosses a column boundary.
#     │ e k q w │
#     └ f l r x ┘    (y z dropped)
#
# get_batch(data, i, bptt=2) takes rows i .. i+1 as input and rows i+1 .. i+2 as target:
#
#     i = 0:  input ┌ a g m s ┐  target ┌ b h n t ┐      i = 2:  input ┌ c i o u ┐  target ┌ d j p v ┐
#                   └ b h n t ┘         └ c i o u ┘                    └ d j p v ┘         └ e k q w ┘
#
# With W data-parallel workers the global batch is W x bsz columns and worker r takes columns r*bsz ..
# (r+1)*bsz - 1, i.e. the contiguous stream slice [r * bsz * rows, (r + 1) * bsz * rows): every worker has the
# same number of rows, hence the same number of steps (DDP needs equal steps on every rank).
def batchify(stream: torch.Tensor, bsz: int) -> torch.Tensor:
    """``(rows, bsz)``: the stream cut into ``bsz`` contiguous columns, the remainder dropped."""
    rows = stream.numel() // bsz
    return stream[: rows * bsz].view(bsz, rows).t().contiguous()


def get_batch(data: torch.Tensor, i: int, bptt: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Input rows ``i .. i+n-1`` and target rows ``i+1 .. i+n``, ``n = min(bptt, rows - 1 - i)``."""
    n = min(bptt, data.size(0) - 1 - i)
    return data[i : i + n], data[i + 1 : i + 1 + n]


def worker_slice(total: int, bsz: int, rank: int, world_size: int) -> tuple[int, int]:
    """The stream range worker ``rank`` batchifies: its ``bsz`` of the ``world_size * bsz`` global columns."""
    rows = total // (bsz * world_size)
    if rows < 2:
        raise ValueError(
            f"the training stream has {total:,} tokens, too few for {world_size} worker(s) x batch_size {bsz} "
            "(each column needs 2 tokens or more): lower lm batch_size or workers"
        )
    return rank * bsz * rows, (rank + 1) * bsz * rows


# ------------------------------------------------------------------------------------------ evaluation layout
@dataclass(frozen=True, slots=True)
class EvalColumns:
    """A split laid out for scoring so that every target is predicted exactly once.

    ``inputs``/``targets``: ``(rows, columns)``; ``mask`` is False on padding.  Column j holds a contiguous run of
    whole sentences with its own leading ``</s>``; the hidden state starts at zero at the top of a column and
    is carried across the sentences below it (the PyTorch example's policy).  One column is the whole split
    carried; one sentence per column is KenLM's reset-at-every-sentence policy.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor


def eval_columns(
    sentences: Sequence[np.ndarray | Sequence[int]], columns: int, *, reset: bool = False
) -> EvalColumns:
    """Lay sentences out in ``columns`` columns of about equal tokens (or one per sentence with ``reset``)."""
    lengths = np.asarray([len(s) + 1 for s in sentences], dtype=np.int64)
    if reset:
        groups = [[i] for i in range(len(sentences))]
    else:
        columns = max(1, min(columns, len(sentences)))
        cum = np.cumsum(lengths)
        # sentence i goes to the column its first token falls in, when the stream is cut in equal parts
        starts = cum - lengths
        which = np.minimum(starts * columns // max(int(cum[-1]) if len(cum) else 1, 1), columns - 1)
        groups = [list(np.flatnonzero(which == c)) for c in range(columns)]
        groups = [g for g in groups if g]
    streams = [sentences_stream(sentences[i] for i in g) for g in groups]
    rows = max((len(s) - 1 for s in streams), default=0)
    inputs = torch.full((rows, len(streams)), EOS_ID, dtype=torch.int64)
    targets = torch.full((rows, len(streams)), EOS_ID, dtype=torch.int64)
    mask = torch.zeros((rows, len(streams)), dtype=torch.bool)
    for j, s in enumerate(streams):
        n = len(s) - 1
        inputs[:n, j], targets[:n, j], mask[:n, j] = s[:-1], s[1:], True
    return EvalColumns(inputs, targets, mask)
