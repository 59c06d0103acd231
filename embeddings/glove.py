"""GloVe (Pennington, Socher & Manning 2014): weighted least squares on log co-occurrences, AdaGrad, torch.

The model fits, for every non-zero entry X_ij of the co-occurrence matrix (``embeddings.cooccur``)::

    J = sum_ij f(X_ij) (w_i . w~_j + b_i + b~_j - log X_ij)^2,     f(x) = min(1, (x / x_max)^alpha)

with Stanford ``glove.c``'s optimiser, entry by entry: g = f(X_ij) * diff; the vector gradients g * w~_j
and g * w_i are clipped per coordinate to +-``grad_clip`` (glove.c's grad_clip_value), scaled by eta, and
applied AdaGrad-style ``theta -= eta*g / sqrt(G); G += (eta*g)^2`` with G initialised to 1 (so the first
step is eta * g; glove.c accumulates the *scaled* gradient, which we keep).  Biases follow the same rule,
unclipped.  Initialisation: every parameter uniform in (-0.5, 0.5) / dim.

Parameters live in glove.c's layout, one ``(2V, d + 1)`` tensor: rows 0..V-1 are the word vectors w with
their bias b in the last column, rows V..2V-1 the context vectors w~ and biases b~; the AdaGrad
accumulators G have the same shape::

    params  [ w_0   b_0  ]     gradsq  [ G ... ]      row i     : word i as the word
            [ ...        ]                            row V + j : word j as the context
            [ w~_0  b~_0 ]
            [ ...        ]

What differs from glove.c is the batching.  glove.c runs lock-free threads over a shuffled file, one entry
at a time; here ``batch_size`` shuffled entries are scored with the parameters at the start of the batch
and their per-entry updates (each with its own G at the start of the batch) are ``index_add_``-ed, so
entries of one batch sharing a row behave like Hogwild threads hitting the same row.  One ``(2V, d+1)``
tensor also makes merging data-parallel replicas one all-reduce (``embeddings.glove_train``).

>>> model = GloVe(vocab_size=1000, config=GloveConfig(dim=50))      # doctest: +SKIP
>>> cost = model.train_entries(rows, cols, torch.log(x), weighting(x, 100.0, 0.75))  # doctest: +SKIP
>>> model.vectors("sum")                                             # (V, 50) float32: W + W~
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from lmpipe.pipelines.core.progress import EpochProgress


def weighting(x: torch.Tensor, x_max: float, alpha: float) -> torch.Tensor:
    """f(x) = min(1, (x / x_max)^alpha): rare pairs count less, frequent ones are capped at 1 (x >= x_max)."""
    return torch.clamp(torch.pow(x / x_max, alpha), max=1.0)


@dataclass(frozen=True, kw_only=True, slots=True)
class GloveConfig:
    dim: int = 100
    epochs: int = 25
    eta: float = 0.05  # AdaGrad initial learning rate (glove.c -eta)
    alpha: float = 0.75  # weighting exponent (glove.c -alpha)
    x_max: float = 100.0  # weighting cutoff (glove.c -x-max)
    grad_clip: float = 100.0  # per-coordinate clip of the vector gradients (glove.c grad_clip_value)
    batch_size: int = 4096  # entries per step
    seed: int = 1


class GloVe:
    """Parameters, AdaGrad state and the batched update of the GloVe objective."""

    def __init__(self, vocab_size: int, config: GloveConfig, *, device: torch.device | str = "cpu") -> None:
        self.vocab_size, self.config, self.device = vocab_size, config, torch.device(device)
        generator = torch.Generator().manual_seed(config.seed)
        shape = (2 * vocab_size, config.dim + 1)
        # glove.c: W[a] = (rand() / RAND_MAX - 0.5) / vector_size for vectors and biases alike
        self.params = ((torch.rand(shape, generator=generator) - 0.5) / config.dim).to(self.device)
        self.gradsq = torch.ones(
            shape, device=self.device
        )  # "so initial value of eta is equal to initial learning rate"

    # ------------------------------------------------------------------------------------------ training
    def _step(
        self, rows: torch.Tensor, cols: torch.Tensor, logx: torch.Tensor, fx: torch.Tensor
    ) -> torch.Tensor:
        """One batch in place; returns its cost sum(0.5 f diff^2) at the parameters before the step."""
        cfg, d = self.config, self.config.dim
        ctx = cols + self.vocab_size
        wi = self.params.index_select(0, rows)  # (B, d+1)
        wj = self.params.index_select(0, ctx)  # (B, d+1)
        diff = (wi[:, :d] * wj[:, :d]).sum(1) + wi[:, d] + wj[:, d] - logx  # (B,)
        fdiff = fx * diff
        cost = 0.5 * (fdiff * diff).sum()
        scaled = fdiff * cfg.eta
        clip = cfg.grad_clip
        gi = torch.cat([(fdiff[:, None] * wj[:, :d]).clamp_(-clip, clip).mul_(cfg.eta), scaled[:, None]], 1)
        gj = torch.cat([(fdiff[:, None] * wi[:, :d]).clamp_(-clip, clip).mul_(cfg.eta), scaled[:, None]], 1)
        index = torch.cat([rows, ctx])  # (2B,)
        grad = torch.cat([gi, gj])  # (2B, d+1): eta * clipped gradient
        step = grad / self.gradsq.index_select(0, index).sqrt_()
        self.params.index_add_(0, index, step, alpha=-1.0)
        self.gradsq.index_add_(0, index, grad.square_())
        return cost

    def train_entries(
        self, rows: torch.Tensor, cols: torch.Tensor, logx: torch.Tensor, fx: torch.Tensor,
        progress: EpochProgress | None = None,
    ) -> float:  # fmt: skip
        """One pass over the given entries in the given order, ``batch_size`` at a time; returns the summed
        cost (divide by the entries for glove.c's printed cost).  ``progress`` counts the entries done."""
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        b = self.config.batch_size
        for a in range(0, len(rows), b):
            total += self._step(rows[a : a + b], cols[a : a + b], logx[a : a + b], fx[a : a + b])
            if progress is not None:
                progress.advance(min(b, len(rows) - a))
        return float(total)

    # ------------------------------------------------------------------------------------------ results
    def cost(self, rows: torch.Tensor, cols: torch.Tensor, logx: torch.Tensor, fx: torch.Tensor) -> float:
        """The objective sum(0.5 f diff^2) over the entries at the current parameters (no update)."""
        d = self.config.dim
        wi, wj = self.params[rows], self.params[cols + self.vocab_size]
        diff = (wi[:, :d] * wj[:, :d]).sum(1) + wi[:, d] + wj[:, d] - logx
        return float(0.5 * (fx * diff * diff).sum(dtype=torch.float64))

    def vectors(self, output: str = "sum") -> torch.Tensor:
        """(V, d) float32 on CPU: W + W~ (``sum``, glove.c -model 2) or W (``word``, -model 1)."""
        d, v = self.config.dim, self.vocab_size
        if output == "sum":
            matrix = self.params[:v, :d] + self.params[v:, :d]
        elif output == "word":
            matrix = self.params[:v, :d]
        else:
            raise ValueError(f"output: bad value {output!r}; allowed: 'sum', 'word'")
        return matrix.detach().to("cpu", torch.float32).contiguous()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"params": self.params.detach().cpu(), "gradsq": self.gradsq.detach().cpu()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name in ("params", "gradsq"):
            if tuple(state[name].shape) != tuple(self.params.shape):
                raise ValueError(
                    f"{name}: shape {tuple(state[name].shape)} != model {tuple(self.params.shape)}"
                )
        self.params = state["params"].to(self.device, torch.float32).clone()
        self.gradsq = state["gradsq"].to(self.device, torch.float32).clone()
