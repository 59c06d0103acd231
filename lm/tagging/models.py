"""Tagger networks: a shared encoder, one output layer per task, softmax or a linear-chain CRF on top.

    words (B, T), case (B, T) --lookup--> (B, T, dim + case_dim)      shared by every task
      + chars (B, T, C) --CharEncoder--> (B, T, char features)       optional, concatenated to the lookup:
              cnn   (Ma & Hovy 2016): character embeddings, dropout, a convolution of width 3, max over the word
              lstm  (Lample et al. 2016): a bidirectional LSTM over the characters, both final states
      window  (Collobert & Weston 2011, "window approach"): the w = 2k+1 vectors around each token,
              concatenated (B, T, w * (dim + case_dim)) -> [Linear -> hardtanh/tanh -> dropout] x layers
      rnn     (Irsoy & Cardie 2014; Lample et al. 2016): stacked bidirectional LSTM/GRU/Elman RNN; layer l reads
              both directions of layer l-1; output (B, T, 2 * hidden)
    encoder output --Linear per task--> emissions (B, T, tags_k) -> softmax cross-entropy, or CRF NLL

Multitask (Collobert & Weston's section 5): tasks share the lookup tables and the encoder (the hidden layers);
each has its own output layer (and CRF); the training loss is the sum of the tasks' losses, each the mean
negative log-likelihood per token of its batch.  The models never import ray; ``lm.tagging.train`` applies DDP.

    >>> cfg = TaggerConfig(model="rnn", vocab_size=10, tasks=(("pos", 5),), hidden=8, dim=6)
    >>> net = Tagger(cfg)
    >>> words = torch.tensor([[2, 3, 4], [5, 6, 0]]); lengths = torch.tensor([3, 2])
    >>> net.emissions(words, case_features(words), lengths)[0].shape
    torch.Size([2, 3, 5])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

#: Capitalisation feature ids (Collobert & Weston's "caps" feature); 0 is padding.
CASE_LOWER, CASE_TITLE, CASE_UPPER, CASE_MIXED, CASE_NONE = 1, 2, 3, 4, 5
N_CASE = 6


def case_of(token: str) -> int:
    """all lowercase / initial capital / all caps / has a capital elsewhere / no letters."""
    letters = [c for c in token if c.isalpha()]
    if not letters:
        return CASE_NONE
    if all(c.islower() for c in letters):
        return CASE_LOWER
    if all(c.isupper() for c in letters):
        return CASE_UPPER
    if letters[0].isupper() and all(c.islower() for c in letters[1:]):
        return CASE_TITLE
    return CASE_MIXED


def case_features(words: torch.Tensor) -> torch.Tensor:
    """A stand-in case tensor for tests and doctests: lowercase wherever there is a word."""
    return (words != 0).long() * CASE_LOWER


# ------------------------------------------------------------------------------------------ CRF
class CRF(nn.Module):
    """Linear-chain CRF (Lafferty et al. 2001; Collobert & Weston's sentence-level likelihood):
    score(y) = start[y_1] + sum_t emit[t, y_t] + sum_{t>1} trans[y_{t-1}, y_t] + end[y_T]."""

    def __init__(self, tags: int) -> None:
        super().__init__()
        self.trans = nn.Parameter(torch.zeros(tags, tags))  # trans[i, j]: tag i followed by tag j
        self.start = nn.Parameter(torch.zeros(tags))
        self.end = nn.Parameter(torch.zeros(tags))

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """log Z per sentence (forward algorithm).  emissions (B, T, N), mask (B, T) bool, mask[:, 0] all true."""
        alpha = self.start + emissions[:, 0]  # (B, N)
        for t in range(1, emissions.size(1)):
            nxt = torch.logsumexp(alpha.unsqueeze(2) + self.trans, dim=1) + emissions[:, t]  # (B, N)
            alpha = torch.where(mask[:, t : t + 1], nxt, alpha)
        return torch.logsumexp(alpha + self.end, dim=1)

    def gold_score(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """score(y) of the gold tags (B, T) (padding positions may hold any valid id)."""
        m = mask.to(emissions.dtype)
        emit = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)  # (B, T)
        trans = self.trans[tags[:, :-1], tags[:, 1:]]  # (B, T-1)
        last = tags.gather(1, (mask.sum(1) - 1).unsqueeze(1)).squeeze(1)
        return self.start[tags[:, 0]] + (emit * m).sum(1) + (trans * m[:, 1:]).sum(1) + self.end[last]

    def nll(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """-log p(y | x) per sentence, (B,)."""
        return self.log_partition(emissions, mask) - self.gold_score(emissions, tags, mask)

    @torch.no_grad()
    def viterbi(self, emissions: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        """The best tag sequence of each sentence (lengths from the mask)."""
        score = self.start + emissions[:, 0]  # (B, N)
        back: list[torch.Tensor] = []
        for t in range(1, emissions.size(1)):
            best, arg = (score.unsqueeze(2) + self.trans).max(dim=1)  # over the previous tag
            nxt = best + emissions[:, t]
            keep = mask[:, t : t + 1]
            score = torch.where(keep, nxt, score)
            # a padded step points every tag at itself, so the backtrace passes through it unchanged
            same = torch.arange(score.size(1), device=score.device).expand_as(arg)
            back.append(torch.where(keep, arg, same))
        last = (score + self.end).argmax(dim=1)  # (B,)
        path = [last]
        for arg in reversed(back):
            last = arg.gather(1, last.unsqueeze(1)).squeeze(1)
            path.append(last)
        full = torch.stack(path[::-1], dim=1).tolist()  # (B, T)
        lengths = mask.sum(1).tolist()
        return [row[:n] for row, n in zip(full, lengths, strict=True)]


# ------------------------------------------------------------------------------------------ characters
class CharEncoder(nn.Module):
    """One vector per word from its characters (as written, case kept), so that a word without a vector, or never
    seen in training, still shows its prefixes, suffixes, capitals, digits and hyphens to the tagger.

    ``cnn``: Ma & Hovy (2016) -- embeddings, dropout, Conv1d (``width``, zero padding at both ends of the word),
    max over the word's own positions, tanh; ``size`` filters.  ``lstm``: Lample et al. (2016) -- a BiLSTM over
    the characters, the last forward state ++ the first backward state; ``size`` units per direction.  Both are
    independent of how long the other words of the batch are (padding never reaches a word's vector)."""

    def __init__(
        self, kind: Literal["cnn", "lstm"], vocab: int, dim: int, size: int, width: int, dropout: float
    ) -> None:
        super().__init__()
        self.kind = kind
        self.embed = nn.Embedding(vocab, dim, padding_idx=0)
        bound = (3.0 / dim) ** 0.5  # Ma & Hovy's uniform [-sqrt(3/dim), +sqrt(3/dim)]
        nn.init.uniform_(self.embed.weight, -bound, bound)
        with torch.no_grad():
            self.embed.weight[0].zero_()
        self.drop = nn.Dropout(dropout)
        if kind == "cnn":
            self.conv = nn.Conv1d(dim, size, width, padding=width // 2)
            self.out_dim = size
        else:
            self.lstm = nn.LSTM(dim, size, batch_first=True, bidirectional=True)
            self.out_dim = 2 * size

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        """(B, T, C) character ids, 0 = padding -> (B, T, out_dim); a word with no character gets zeros."""
        b, t, c = chars.shape
        flat = chars.reshape(b * t, c)
        counts = (flat != 0).sum(1)
        words = torch.nonzero(counts > 0).squeeze(1)
        out = torch.zeros(b * t, self.out_dim, device=chars.device, dtype=self.embed.weight.dtype)
        if len(words) == 0:
            return out.view(b, t, -1)
        n = counts[words]
        x = self.drop(self.embed(flat[words, : int(n.max())]))  # (N, C', dim)
        if self.kind == "cnn":
            h = self.conv(x.transpose(1, 2))  # (N, size, C')
            inside = torch.arange(h.size(2), device=h.device)[None, :] < n[:, None]
            h = torch.tanh(h.masked_fill(~inside.unsqueeze(1), -torch.inf).amax(dim=2))
        else:
            packed = pack_padded_sequence(x, n.cpu(), batch_first=True, enforce_sorted=False)
            _, (last, _) = self.lstm(packed)  # (2, N, size): forward's last state, backward's first
            h = torch.cat([last[0], last[1]], dim=1)
        out = out.index_copy(0, words, h)
        return out.view(b, t, -1)


# ------------------------------------------------------------------------------------------ config
@dataclass(frozen=True, kw_only=True, slots=True)
class TaggerConfig:
    """The architecture (validated for user input by ``pipelines.spec.TaggerSpec``)."""

    model: Literal["window", "rnn"] = "window"
    vocab_size: int
    tasks: tuple[tuple[str, int], ...]  # (name, number of tags) per task, in spec order
    dim: int = 50  # word vectors
    case_dim: int = 5  # 0: no capitalisation feature
    window: int = 5  # window model: tokens per window (odd)
    hidden: int = 300  # window: hidden units; rnn: units per direction
    layers: int = 1
    cell: Literal["lstm", "gru", "rnn"] = "lstm"
    activation: Literal["hardtanh", "tanh"] = "hardtanh"
    dropout: float = 0.0
    crf: bool = False
    chars: Literal["none", "cnn", "lstm"] = "none"  # character features (CharEncoder)
    char_vocab_size: int = 0
    char_dim: int = 30
    char_size: int = 30  # cnn: filters; lstm: units per direction
    char_width: int = 3  # cnn: characters per filter (odd)


# ------------------------------------------------------------------------------------------ model
class Tagger(nn.Module):
    def __init__(self, cfg: TaggerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.words = nn.Embedding(cfg.vocab_size, cfg.dim, padding_idx=0)
        nn.init.normal_(self.words.weight, std=0.1)
        with torch.no_grad():
            self.words.weight[0].zero_()
        self.case = nn.Embedding(N_CASE, cfg.case_dim, padding_idx=0) if cfg.case_dim else None
        self.chars = (
            CharEncoder(cfg.chars, cfg.char_vocab_size, cfg.char_dim, cfg.char_size, cfg.char_width, cfg.dropout)
            if cfg.chars != "none"
            else None
        )
        width = cfg.dim + cfg.case_dim + (self.chars.out_dim if self.chars is not None else 0)
        self.drop = nn.Dropout(cfg.dropout)
        if cfg.model == "window":
            act = nn.Hardtanh if cfg.activation == "hardtanh" else nn.Tanh
            layers: list[nn.Module] = []
            inp = cfg.window * width
            for _ in range(cfg.layers):
                layers += [nn.Linear(inp, cfg.hidden), act(), nn.Dropout(cfg.dropout)]
                inp = cfg.hidden
            self.encoder: nn.Module = nn.Sequential(*layers)
            out = cfg.hidden
        else:
            kinds = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
            self.encoder = kinds[cfg.cell](
                width, cfg.hidden, num_layers=cfg.layers, bidirectional=True, batch_first=True,
                dropout=cfg.dropout if cfg.layers > 1 else 0.0,
            )  # fmt: skip
            out = 2 * cfg.hidden
        self.heads = nn.ModuleList(nn.Linear(out, n) for _, n in cfg.tasks)
        self.crfs = nn.ModuleList(CRF(n) for _, n in cfg.tasks) if cfg.crf else None

    def _window(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, F) -> (B, T, w * F): token t sees t-k .. t+k, zero vectors (padding) past either end::

        pad pad [x1 x2 x3 x4] pad pad      w = 5: x1's window = pad pad x1 x2 x3
        """
        k = self.cfg.window // 2
        padded = nn.functional.pad(x, (0, 0, k, k))  # (B, T + 2k, F)
        win = padded.unfold(1, self.cfg.window, 1)  # (B, T, F, w)
        return win.transpose(2, 3).reshape(x.size(0), x.size(1), -1)

    def features(
        self, words: torch.Tensor, case: torch.Tensor, lengths: torch.Tensor, chars: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Shared encoder output (B, T, H); ``chars`` (B, T, C) is required when the model has character features."""
        parts = [self.words(words)]
        if self.case is not None:
            parts.append(self.case(case))
        if self.chars is not None:
            if chars is None:
                raise ValueError(f"this tagger reads characters ({self.cfg.chars}): pass the chars tensor")
            parts.append(self.chars(chars))
        x = self.drop(torch.cat(parts, dim=2))
        if self.cfg.model == "window":
            return self.encoder(self._window(x))
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.encoder(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=words.size(1))
        return self.drop(out)

    def emissions(
        self,
        words: torch.Tensor,
        case: torch.Tensor,
        lengths: torch.Tensor,
        task: int = 0,
        chars: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.heads[task](self.features(words, case, lengths, chars))

    def task_loss(self, task: int, words, case, chars, lengths, tags) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed NLL, token count) of one task's batch; tags (B, T) with -1 at padding."""
        em = self.emissions(words, case, lengths, task, chars)
        mask = tags >= 0
        if self.crfs is not None:
            nll = self.crfs[task].nll(em, tags.clamp(min=0), mask).sum()
        else:
            nll = nn.functional.cross_entropy(em[mask], tags[mask], reduction="sum")
        return nll, mask.sum()

    def forward(self, batches: tuple, weights: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """The multitask loss: sum over tasks of weight x mean NLL per token.  ``batches`` holds one
        ``(words, case, chars, lengths, tags)`` per task (every task in every step, so DDP sees every parameter used).
        Returns (loss, per-task summed NLL (detached))."""
        total = torch.zeros((), device=self.words.weight.device)
        parts = []
        for k, batch in enumerate(batches):
            nll, n = self.task_loss(k, *batch)
            total = total + weights[k] * nll / n.clamp(min=1)
            parts.append(nll.detach())
        return total, torch.stack(parts)

    @torch.no_grad()
    def predict(self, task: int, words, case, lengths, chars=None) -> list[list[int]]:
        em = self.emissions(words, case, lengths, task, chars)
        mask = torch.arange(words.size(1), device=words.device)[None, :] < lengths.to(words.device)[:, None]
        if self.crfs is not None:
            return self.crfs[task].viterbi(em, mask)
        best = em.argmax(dim=2).tolist()
        return [row[:n] for row, n in zip(best, lengths.tolist(), strict=True)]


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
