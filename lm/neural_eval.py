"""Score a split with a neural LM into ``lm.perplexity.CorpusScore`` -- the accumulator the n-gram models use,
so both columns of the perplexity table come out of the same sums.

What is predicted is KenLM's token stream (``lm.batching``): every word of every sentence and one ``</s>`` per
sentence; a target id 0 (``<unk>``) is an OOV, scored as the ``<unk>`` class like KenLM does; sums are over the
whole split.  **Hidden-state policy** (the one legitimate difference from KenLM, stated in every manifest):

* ``carry`` -- the split is cut into ``eval_columns`` contiguous runs of whole sentences; the state is zero at
  the top of a run and carried across sentence ends inside it (the PyTorch example's evaluation);
* ``reset`` -- the state is zero at the start of every sentence (KenLM's reset at ``<s>``).

Either way the context of a sentence's first word is ``</s>``, the model's ``<s>``.

``text_units`` gives the denominators of the tokenizer-independent figures (Mielke 2019, REFERENCES G):
per-word perplexity = exp(total NLL / (words + sentences)) and bits per byte = total NLL / (ln 2 x bytes),
bytes of the text rebuilt from the tokens plus one newline per sentence.  A pipeline run uses the tokenize
stage's count of the lines' own bytes instead (``pipelines.report_rows.token_stream``), the one definition its
report uses for every model; the rebuilt count serves token streams without that manifest.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lmpipe.lm.batching import EvalColumns
from lmpipe.lm.models import RNNModel
from lmpipe.lm.perplexity import LN10, CorpusScore
from lmpipe.lm.token_scores import TokenScores
from lmpipe.pipelines.core.schemas import EOS_ID, SPACE_MARK, UNK_ID


def score_columns(
    model: RNNModel,
    cols: EvalColumns,
    *,
    bptt: int = 35,
    device: torch.device | str = "cpu",
    columns: Sequence[int] | None = None,
    batch_columns: int = 64,
) -> CorpusScore:
    """Whole-corpus log-probabilities of the (selected) columns' targets: the sums of the per-token scores
    (``assemble(column_scores(...))``, every target's log10 p in the split's token order)."""
    return assemble(
        column_scores(model, cols, bptt=bptt, device=device, columns=columns, batch_columns=batch_columns)
    ).corpus_score()


@torch.no_grad()
def column_scores(
    model: RNNModel,
    cols: EvalColumns,
    *,
    bptt: int = 35,
    device: torch.device | str = "cpu",
    columns: Sequence[int] | None = None,
    batch_columns: int = 64,
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """``{column: (target ids, ln p)}`` of the (selected) columns, in column order; the state is carried down
    a column in windows of ``bptt`` rows, ``batch_columns`` columns at a time.  Columns are contiguous runs of
    sentences in order, so data-parallel workers each score their columns and :func:`assemble` joins the
    pieces, column after column, into the split's token order."""
    was_training = model.training
    model.eval()
    picked = list(range(cols.inputs.size(1))) if columns is None else list(columns)
    per_column: dict[int, list[np.ndarray]] = {c: [] for c in picked}
    targets_of: dict[int, list[np.ndarray]] = {c: [] for c in picked}
    for start in range(0, len(picked), batch_columns):
        idx = torch.tensor(picked[start : start + batch_columns], dtype=torch.int64)
        inputs, targets, mask = (t.index_select(1, idx) for t in (cols.inputs, cols.targets, cols.mask))
        rows = int(mask.sum(0).max().item()) if mask.numel() else 0
        hidden = model.init_hidden(len(idx))
        for i in range(0, rows, bptt):
            x, y, m = inputs[i : i + bptt], targets[i : i + bptt], mask[i : i + bptt]
            lp, hidden = model(x.to(device), hidden, y.to(device))
            lp = lp.double().cpu()
            for j, col in enumerate(idx.tolist()):
                keep = m[:, j]
                per_column[col].append(lp[:, j][keep].numpy())
                targets_of[col].append(y[:, j][keep].numpy())
        del hidden
    model.train(was_training)
    empty_ids, empty_lp = np.zeros(0, np.int64), np.zeros(0)
    return {
        c: (np.concatenate(targets_of[c] or [empty_ids]), np.concatenate(per_column[c] or [empty_lp]))
        for c in picked
    }


@torch.inference_mode()
def reset_scores(
    model: RNNModel,
    sentences: Sequence[np.ndarray],
    *,
    device: torch.device | str = "cpu",
    batch_lines: int = 64,
    max_logits: int = 1 << 27,
) -> TokenScores:
    """Every sentence scored from a zero state (KenLM's reset at ``<s>``), as :class:`TokenScores` in sentence
    order -- the ``reset`` policy's figures, one forward pass per batch of sentences.

    Sentences are sorted longest first and cut into batches of ``batch_lines``; a batch is padded only to its
    own longest sentence (``.`` below: padding, never scored), so sorting leaves almost no padding::

        sorted     inputs (T, B)      targets (T, B)
        [a b c]    </s> </s>          a    d
        [d e]      a    d             b    e
                   b    e             c    </s>
                   c    .             </s> .

    A batch whose logits (positions x vocabulary) would pass ``max_logits`` floats is run in windows of rows,
    the state carried between them (the bptt loop of :func:`column_scores`)."""
    n = len(sentences)
    lengths = np.fromiter((len(s) for s in sentences), dtype=np.int64, count=n) + 1  # predicted: words + </s>
    ends = np.cumsum(lengths)
    token = np.full(int(ends[-1]) if n else 0, EOS_ID, dtype=np.int64)  # each sentence's words, then </s>
    if n:
        words = np.concatenate(sentences).astype(np.int64)
        is_word = np.ones(len(token), dtype=bool)
        is_word[ends - 1] = False
        token[is_word] = words
    ln_p = np.empty(len(token), dtype=np.float64)
    was_training = model.training
    model.eval()
    vocab = model.cfg.vocab_size
    longest_first = np.argsort(-lengths, kind="stable")
    for first in range(0, n, batch_lines):
        idx = longest_first[first : first + batch_lines]
        size, rows = lengths[idx], int(lengths[idx].max())
        b = len(idx)
        col = np.repeat(np.arange(b), size)  # the batch's targets, sentence after sentence
        row = np.arange(int(size.sum())) - np.repeat(np.cumsum(size) - size, size)
        src = np.repeat(ends[idx] - size, size) + row  # where each target sits in ``token``
        targets = np.full((rows, b), EOS_ID, dtype=np.int64)
        targets[row, col] = token[src]
        inputs = np.full((rows, b), EOS_ID, dtype=np.int64)  # </s> before the first word plays <s>
        inputs[1:] = targets[:-1]
        x, y = torch.from_numpy(inputs).to(device), torch.from_numpy(targets).to(device)
        window = max(1, max_logits // max(1, b * vocab))
        hidden = model.init_hidden(b)
        parts = []
        for top in range(0, rows, window):
            lp, hidden = model(x[top : top + window], hidden, y[top : top + window])
            parts.append(lp)
        lp_all = torch.cat(parts).double().cpu().numpy()  # (rows, b) ln p
        ln_p[src] = lp_all[row, col]
    model.train(was_training)
    sentence = np.repeat(np.arange(n, dtype=np.uint32), lengths)
    return TokenScores(sentence, token.astype(np.uint32), ln_p / LN10, token == UNK_ID)


def assemble(per_column: dict[int, tuple[np.ndarray, np.ndarray]]) -> TokenScores:
    """The columns' targets concatenated column after column (in the dict's order): sentence ids from the
    ``</s>`` ends, log10 p, OOV flags."""
    token = np.concatenate([t for t, _ in per_column.values()] or [np.zeros(0, np.int64)])
    ln_p = np.concatenate([lp for _, lp in per_column.values()] or [np.zeros(0)])
    ends = token == EOS_ID
    sentence = np.concatenate([[0], np.cumsum(ends)[:-1]]) if len(token) else np.zeros(0, np.int64)
    return TokenScores(sentence.astype(np.uint32), token.astype(np.uint32), ln_p / LN10, token == UNK_ID)


def text_units(tokens: Sequence[str], sentences: Sequence[np.ndarray], kind: str) -> dict[str, int]:
    """Words and UTF-8 bytes of the text the token ids stand for, for per-word perplexity and bits per byte.

    ``whitespace``/``regex`` tokens are joined with one space; ``char`` and ``sentencepiece`` pieces are
    concatenated and ``▁`` becomes a space.  ``<unk>`` counts as one word and one byte (its real text is not
    stored).  ``bytes`` includes one newline per sentence (the byte ``</s>`` stands for); ``units`` = words +
    sentences, KenLM's n + 1."""
    words = n_bytes = 0
    lengths = np.array([len(t.encode("utf-8")) for t in tokens], dtype=np.int64)
    lengths[UNK_ID] = 1
    marks = np.array([t.count(SPACE_MARK) for t in tokens], dtype=np.int64)
    mark_bytes = len(SPACE_MARK.encode("utf-8"))
    starts = np.array([t.startswith(SPACE_MARK) for t in tokens], dtype=bool)
    for s in sentences:
        s = np.asarray(s, dtype=np.int64)
        if len(s) == 0:
            n_bytes += 1
            continue
        if kind in ("char", "sentencepiece"):
            # a ▁ is one space byte; sentencepiece's leading ▁ of the first piece is not text
            b = int(lengths[s].sum() - marks[s].sum() * (mark_bytes - 1)) - int(starts[s[0]])
            w = (
                int(starts[s].sum()) + int(not starts[s[0]])
                if kind == "sentencepiece"
                else int(marks[s].sum()) + 1
            )
        else:
            b = int(lengths[s].sum()) + len(s) - 1
            w = len(s)
        n_bytes += b + 1
        words += w
    return {"words": words, "sentences": len(sentences), "units": words + len(sentences), "bytes": n_bytes}
