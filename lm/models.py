"""Recurrent language models: Elman RNN (tanh), IRNN, LSTM and GRU over token ids, with one output layer.

    ids (T, B) -> embedding (T, B, E) [-> in_proj (T, B, H0)] -> dropout -> recurrent layers x L (T, B, H)
              -> dropout [-> out_proj (T, B, E) when tied and H != E] -> output layer -> log p(target)

* **IRNN** (Le, Jaitly & Hinton 2015): ReLU units, recurrent matrix initialised to the identity, biases 0,
  input weights drawn from N(0, ``irnn_input_std``^2) (small), so at the start the state integrates its input
  and gradients neither vanish nor explode through time.
* **Dropout** only on the non-recurrent connections (Zaremba, Sutskever & Vinyals 2014): after the embedding,
  between layers (``nn.LSTM(dropout=)``) and before the output layer; never on the recurrent state.
* **Initialisation**: Glorot (Xavier) uniform for every weight matrix (``init: glorot``), or uniform in
  +-``init_scale`` as Zaremba et al. (``init: uniform``); biases 0; the LSTM forget-gate bias may start at
  ``forget_bias`` (Gers et al. 2000; Jozefowicz et al. 2015 recommend 1).
* **Input embedding from vectors** (``init_embedding``): rows of tokens found in a ``Vectors`` artifact are
  copied, the others keep their random init; both counts are returned for the manifest.  The embedding may
  be frozen.  Vectors of another dimension are either refused or fed through a learned projection.
* **Tied weights** (Press & Wolf 2016): the output matrix is the input embedding; when the top hidden size
  differs from the embedding size a linear projection maps H -> E first.

The model never imports ``ray``: data parallelism (DDP) is applied from outside, in ``lm.train``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from lmpipe.lm.softmax import AdaptiveSoftmax, ClassSoftmax, FullSoftmax, frequency_classes

Hidden = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelConfig:
    """The architecture of one recurrent LM.  Validated in one place, ``pipelines.spec.LmModelSpec.validate``
    (kind, layers 1-4, tie with the adaptive softmax, ...): the lm stage builds it from that section."""

    kind: Literal["rnn", "irnn", "lstm", "gru", "nplm"] = "lstm"
    vocab_size: int
    emb_dim: int = 200
    hidden: int = 200
    layers: int = 2
    dropout: float = 0.0
    tie: bool = False
    forget_bias: float = 0.0
    init: Literal["glorot", "uniform"] = "glorot"
    init_scale: float = 0.1
    irnn_input_std: float = 0.001
    irnn_identity_scale: float = 1.0  # Le et al.: "the identity matrix or its scaled version"
    #: Width of the stored embedding when it differs from ``emb_dim`` (pretrained vectors + projection).
    vectors_dim: int | None = None
    freeze_embedding: bool = False
    softmax: Literal["full", "class", "adaptive"] = "full"
    classes: int = 100
    cutoffs: tuple[int, ...] = ()
    context: int = 4  # nplm: n - 1 previous tokens
    activation: Literal["tanh", "hardtanh", "softsign", "relu"] = "tanh"  # nplm hidden units
    direct: bool = True  # nplm: direct connections from the word vectors to the output


def _init_uniform_or_glorot(weight: torch.Tensor, cfg: ModelConfig) -> None:
    if cfg.init == "uniform":
        nn.init.uniform_(weight, -cfg.init_scale, cfg.init_scale)
    else:
        nn.init.xavier_uniform_(weight)


class RNNModel(nn.Module):
    """Embedding, recurrent stack and output layer; ``forward`` returns the log-probability of each target."""

    def __init__(self, cfg: ModelConfig, counts: np.ndarray | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        stored = cfg.vectors_dim or cfg.emb_dim
        self.embedding = nn.Embedding(cfg.vocab_size, stored)
        self.in_proj = nn.Linear(stored, cfg.emb_dim, bias=False) if stored != cfg.emb_dim else None
        self.drop = nn.Dropout(cfg.dropout)
        between = cfg.dropout if cfg.layers > 1 else 0.0
        if cfg.kind in ("rnn", "irnn"):
            nonlinearity = "tanh" if cfg.kind == "rnn" else "relu"
            self.rnn: nn.RNNBase = nn.RNN(
                cfg.emb_dim, cfg.hidden, cfg.layers, nonlinearity=nonlinearity, dropout=between
            )
        elif cfg.kind == "lstm":
            self.rnn = nn.LSTM(cfg.emb_dim, cfg.hidden, cfg.layers, dropout=between)
        else:
            self.rnn = nn.GRU(cfg.emb_dim, cfg.hidden, cfg.layers, dropout=between)
        top = cfg.hidden
        self.out_proj = None
        if cfg.tie and cfg.hidden != stored:
            self.out_proj = nn.Linear(cfg.hidden, stored, bias=False)
            top = stored
        tied = self.embedding.weight if cfg.tie else None
        if cfg.softmax == "full":
            self.output: nn.Module = FullSoftmax(top, cfg.vocab_size, weight=tied)
        elif cfg.softmax == "class":
            if counts is None:
                raise ValueError("the class-factorised softmax needs the training counts of the vocabulary")
            self.output = ClassSoftmax(top, frequency_classes(counts, cfg.classes), weight=tied)
        else:
            self.output = AdaptiveSoftmax(top, cfg.vocab_size, cfg.cutoffs)
        self.reset_parameters()
        if cfg.freeze_embedding:
            self.embedding.weight.requires_grad_(False)

    def reset_parameters(self) -> None:
        cfg = self.cfg
        _init_uniform_or_glorot(self.embedding.weight, cfg)
        for proj in (self.in_proj, self.out_proj):
            if proj is not None:
                _init_uniform_or_glorot(proj.weight, cfg)
        for name, p in self.rnn.named_parameters():
            if name.startswith("bias"):
                nn.init.zeros_(p)
            elif cfg.kind == "irnn" and name.startswith("weight_hh"):
                with torch.no_grad():  # Le et al. 2015: identity (or scaled identity) recurrent matrix
                    p.copy_(torch.eye(cfg.hidden) * cfg.irnn_identity_scale)
            elif cfg.kind == "irnn":
                nn.init.normal_(p, 0.0, cfg.irnn_input_std)  # small input weights
            else:  # one Glorot draw per gate block: each gate is its own (H, in) matrix
                for block in p.chunk(p.shape[0] // cfg.hidden, 0):
                    _init_uniform_or_glorot(block, cfg)
        if cfg.kind == "lstm" and cfg.forget_bias:
            h = cfg.hidden
            for layer in range(cfg.layers):  # gate order i, f, g, o: rows h .. 2h are the forget gate
                getattr(self.rnn, f"bias_ih_l{layer}").data[h : 2 * h] = cfg.forget_bias
        out = self.output
        if isinstance(out, FullSoftmax | ClassSoftmax) and not self.cfg.tie:
            _init_uniform_or_glorot(out.weight, cfg)

    def init_hidden(self, bsz: int) -> Hidden:
        w = next(self.rnn.parameters())
        zeros = w.new_zeros(self.cfg.layers, bsz, self.cfg.hidden)
        return (zeros, zeros.clone()) if self.cfg.kind == "lstm" else zeros

    def features(self, ids: torch.Tensor, hidden: Hidden) -> tuple[torch.Tensor, Hidden]:
        """``(T, B)`` ids -> ``(T, B, D)`` inputs of the output layer, and the new hidden state."""
        x = self.embedding(ids)  # (T, B, E')
        if self.in_proj is not None:
            x = self.in_proj(x)  # (T, B, E)
        y, hidden = self.rnn(self.drop(x), hidden)  # (T, B, H)
        y = self.drop(y)
        if self.out_proj is not None:
            y = self.out_proj(y)  # (T, B, E') for the tied output matrix
        return y, hidden

    def forward(
        self, ids: torch.Tensor, hidden: Hidden, targets: torch.Tensor
    ) -> tuple[torch.Tensor, Hidden]:
        """``(T, B)`` log p(target) in nats and the new hidden state.  The loss lives inside ``forward`` so that
        DDP sees every parameter (the class and adaptive softmax have their own)."""
        y, hidden = self.features(ids, hidden)
        lp = self.output.target_log_probs(y.reshape(-1, y.size(-1)), targets.reshape(-1))
        return lp.view_as(targets), hidden

    def next_log_probs(self, ids: torch.Tensor, hidden: Hidden) -> tuple[torch.Tensor, Hidden]:
        """``(T, B, V)`` log distribution of the next token after each input position (generation)."""
        y, hidden = self.features(ids, hidden)
        return self.output.log_probs(y), hidden


def detach_hidden(hidden: Hidden) -> Hidden:
    """Cut the graph between bptt windows, keeping the values (truncated BPTT's ``repackage_hidden``)."""
    if isinstance(hidden, tuple):
        return tuple(h.detach() for h in hidden)  # type: ignore[return-value]
    return hidden.detach()


def parameter_count(model: nn.Module) -> dict[str, int]:
    params = {id(p): p for p in model.parameters()}.values()  # tied weights once
    return {
        "total": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
    }


# ------------------------------------------------------------------------------------------ vectors
@dataclass(frozen=True, slots=True)
class EmbeddingInit:
    """How many vocabulary rows came from the vectors, and how many kept their random init."""

    found: int
    missing: int
    vectors_dim: int


def align_vectors(
    tokens: list[str], vectors_tokens: list[str], matrix: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(V, d)`` float32 rows of the vectors in vocabulary order (aligned by token string) and a ``(V,)``
    mask of the tokens that have one.  ``<s>`` never occurs in vectors; ``</s>`` and ``<unk>`` are taken when
    the file has them (word2vec writes ``</s>``)."""
    index = {t: i for i, t in enumerate(vectors_tokens)}
    found = np.array([t in index for t in tokens], dtype=bool)
    aligned = np.zeros((len(tokens), matrix.shape[1]), dtype=np.float32)
    rows = np.array([index[t] for t, f in zip(tokens, found, strict=True) if f], dtype=np.int64)
    if len(rows):
        aligned[found] = np.asarray(matrix[rows], dtype=np.float32)
    return aligned, found


def init_embedding(model: RNNModel, aligned: np.ndarray, found: np.ndarray) -> EmbeddingInit:
    """Copy the rows of ``aligned`` marked in ``found`` into the model's stored embedding; the other rows keep
    their random init."""
    if aligned.shape != (model.cfg.vocab_size, model.embedding.embedding_dim):
        raise ValueError(
            f"aligned vectors {aligned.shape} != stored embedding ({model.cfg.vocab_size}, "
            f"{model.embedding.embedding_dim})"
        )
    mask = torch.from_numpy(np.asarray(found, dtype=bool))
    with torch.no_grad():
        weight = model.embedding.weight
        weight[mask] = torch.from_numpy(np.asarray(aligned, dtype=np.float32))[mask].to(weight)
    n = int(mask.sum())
    return EmbeddingInit(found=n, missing=model.cfg.vocab_size - n, vectors_dim=int(aligned.shape[1]))


def build_network(cfg: ModelConfig, counts: np.ndarray | None = None) -> nn.Module:
    """The network of ``cfg.kind``: a recurrent ``RNNModel`` or Bengio's ``lm.nplm.NPLM`` (same interface)."""
    if cfg.kind == "nplm":
        from lmpipe.lm.nplm import NPLM

        return NPLM(cfg)
    return RNNModel(cfg, counts=counts)
