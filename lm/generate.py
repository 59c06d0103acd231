"""Sample text from a trained recurrent LM: ids in, ids out, and ids back to text.

The model reads ``</s>`` (its ``<s>``) then the prompt's ids, and samples ``max_tokens`` tokens from
``softmax(logits / temperature)`` (temperature 0 = greedy), never ``<s>``.  :func:`render` prints ``</s>`` as
a line break; word tokens are joined with spaces, character and sentencepiece pieces are concatenated with
``▁`` as a space.  Finding the model, vocabulary and tokenizer of a run is ``pipelines.generate``'s job.

    >>> render(["<unk>", "<s>", "</s>", "the", "cat"], sample(net, [3], max_tokens=1), "whitespace")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmpipe.lm.models import RNNModel
from lmpipe.pipelines.core.schemas import BOS_ID, EOS_ID, SPACE_MARK


def render(tokens: list[str], ids: list[int], kind: str) -> str:
    """Token ids back to text: ``</s>`` is a newline; words spaced, pieces concatenated."""
    out: list[str] = []
    for i in ids:
        if i == EOS_ID:
            out.append("\n")
        elif kind in ("char", "sentencepiece"):
            out.append(tokens[i].replace(SPACE_MARK, " "))
        else:
            out.append(("" if not out or out[-1] == "\n" else " ") + tokens[i])
    return "".join(out)


@torch.no_grad()
def sample(net: RNNModel, prompt: Sequence[int], *, max_tokens: int, temperature: float, seed: int) -> list[int]:
    """``max_tokens`` ids sampled after ``</s>`` + ``prompt`` (greedy at temperature 0), never ``<s>``."""
    generator = torch.Generator().manual_seed(seed)
    hidden = net.init_hidden(1)
    log_probs, hidden = net.next_log_probs(torch.tensor([[EOS_ID, *prompt]]).t(), hidden)
    last = log_probs[-1, 0]
    out: list[int] = []
    for _ in range(max_tokens):
        last = last.clone()
        last[BOS_ID] = -torch.inf
        if temperature == 0:
            nxt = int(last.argmax())
        else:
            nxt = int(torch.multinomial(torch.softmax(last / temperature, -1), 1, generator=generator))
        out.append(nxt)
        log_probs, hidden = net.next_log_probs(torch.tensor([[nxt]]), hidden)
        last = log_probs[-1, 0]
    return out
