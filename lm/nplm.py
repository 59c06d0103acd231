"""Bengio et al.'s neural probabilistic language model (2003), on the same token stream as the recurrent LMs.

    x = [C(w_{t-n+1}); ...; C(w_{t-1})]                       (n-1 word vectors, concatenated)
    y = b + W x + U act(d + H x)                              (W: the optional direct connections)
    p(w_t | context) = softmax(y)[w_t]

``act`` is tanh (the paper), hard-tanh, softsign or ReLU.  It plugs into the lm stage's training and
evaluation unchanged: the "hidden state" carried from one bptt window to the next is the last n-1 input ids
of each column, so the context of a window's first targets comes from the previous window.  The context of
a sentence's first word is n-1 copies of ``<s>``: every position of the window at or before the most
recent ``</s>`` is replaced by ``<s>``, so the model predicts exactly KenLM's tokens (each word and one
``</s>`` per sentence) from a context that never crosses a sentence start, whatever the evaluation's
hidden-state policy.  Weight decay (``weight_decay``) applies to weights and the word vectors, not to
biases, as in the paper (``lm.train.make_optimizer`` groups parameters by dimension).
"""

from __future__ import annotations

import torch
from torch import nn

from lmpipe.pipelines.core.schemas import BOS_ID, EOS_ID

ACTIVATIONS = {"tanh": nn.Tanh, "hardtanh": nn.Hardtanh, "softsign": nn.Softsign, "relu": nn.ReLU}


class NPLM(nn.Module):
    """Feed-forward n-gram network with the recurrent models' interface (``init_hidden``, ``forward``,
    ``next_log_probs``); ``cfg`` is ``lm.models.ModelConfig`` with ``kind="nplm"``."""

    def __init__(self, cfg) -> None:  # noqa: ANN001 - lm.models.ModelConfig (imports this module)
        super().__init__()
        self.cfg = cfg
        n_ctx, stored = cfg.context, cfg.vectors_dim or cfg.emb_dim
        self.embedding = nn.Embedding(cfg.vocab_size, stored)  # C; name shared with RNNModel (vectors init)
        self.in_proj = nn.Linear(stored, cfg.emb_dim, bias=False) if stored != cfg.emb_dim else None
        self.hidden_layer = nn.Linear(n_ctx * cfg.emb_dim, cfg.hidden)  # H, d
        self.act = ACTIVATIONS[cfg.activation]()
        self.drop = nn.Dropout(cfg.dropout)
        self.output = nn.Linear(cfg.hidden, cfg.vocab_size)  # U, b
        self.direct = nn.Linear(n_ctx * cfg.emb_dim, cfg.vocab_size, bias=False) if cfg.direct else None  # W
        self.reset_parameters()
        if cfg.freeze_embedding:
            self.embedding.weight.requires_grad_(False)

    def reset_parameters(self) -> None:
        for layer in (self.hidden_layer, self.output, self.direct, self.in_proj):
            if layer is not None:
                nn.init.xavier_uniform_(layer.weight)
                if getattr(layer, "bias", None) is not None:
                    nn.init.zeros_(layer.bias)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        if self.direct is not None:
            nn.init.zeros_(self.direct.weight)  # start as the plain network; the data grows the shortcut

    def init_hidden(self, bsz: int) -> torch.Tensor:
        """The context before the first input: a sentence end, so the first prediction sees only ``<s>``."""
        return torch.full((self.cfg.context, bsz), EOS_ID, dtype=torch.int64, device=self.embedding.weight.device)

    def contexts(self, ids: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(T, B)`` inputs -> ``(T, B, n-1)`` contexts (the window ending at each input, ``<s>`` at and before
        the last ``</s>``) and the carried state (the last n-1 ids)."""
        n_ctx = self.cfg.context
        full = torch.cat([hidden, ids], 0)  # (n-1+T, B)
        windows = full.unfold(0, n_ctx, 1)[1:]  # (T, B, n-1): window t ends at input t
        ends = windows == EOS_ID
        at_or_before_end = ends.flip(-1).cumsum(-1).flip(-1) > 0
        return windows.masked_fill(at_or_before_end, BOS_ID), full[-n_ctx:]

    def logits(self, ctx: torch.Tensor) -> torch.Tensor:
        t, b, n_ctx = ctx.shape
        x = self.embedding(ctx)
        if self.in_proj is not None:
            x = self.in_proj(x)
        x = self.drop(x.reshape(t, b, n_ctx * self.cfg.emb_dim))
        y = self.output(self.drop(self.act(self.hidden_layer(x))))
        if self.direct is not None:
            y = y + self.direct(x)
        return y

    def forward(
        self, ids: torch.Tensor, hidden: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(T, B)`` log p(target) in nats and the carried context."""
        ctx, hidden = self.contexts(ids, hidden)
        lp = torch.log_softmax(self.logits(ctx), -1)
        return lp.gather(-1, targets.unsqueeze(-1)).squeeze(-1), hidden

    def next_log_probs(self, ids: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ctx, hidden = self.contexts(ids, hidden)
        return torch.log_softmax(self.logits(ctx), -1), hidden
