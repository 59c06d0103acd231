"""Gradient check: autograd against central finite differences, one relative error per parameter.

For a scalar loss ``f(theta)`` and a sample of entries ``theta_k`` of each parameter,

    numeric_k = (f(theta + eps e_k) - f(theta - eps e_k)) / (2 eps)        (error O(eps^2))
    rel_error = ||analytic - numeric|| / max(||analytic|| + ||numeric||, tiny)   over the sampled entries

Run it in float64 (``model.double()``): with eps = 1e-4 the truncation error is ~1e-8 relative and float64
rounding ~1e-12 / eps, so a correct gradient gives errors around 1e-9 while a wrong one gives 1e-2 or more.
Dropout must be off (``model.eval()``), otherwise each call of ``f`` draws another mask.

    >>> import torch
    >>> w = torch.nn.Parameter(torch.randn(3, dtype=torch.float64))
    >>> errors = gradient_check(lambda: (w ** 3).sum(), {"w": w})
    >>> errors["w"] < 1e-8
    True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch


def gradient_check(
    loss_fn: Callable[[], torch.Tensor],
    params: Mapping[str, torch.nn.Parameter],
    *,
    eps: float = 1e-4,
    max_entries: int = 20,
    seed: int = 0,
) -> dict[str, float]:
    """Relative error between autograd and central differences for each named parameter (``max_entries``
    entries sampled per parameter; all of a smaller one).  Parameters without ``requires_grad`` are skipped."""
    wanted = {n: p for n, p in params.items() if p.requires_grad}
    for p in wanted.values():
        if p.dtype != torch.float64:
            raise ValueError(f"gradient_check needs float64 parameters (model.double()), got {p.dtype}")
        p.grad = None
    loss = loss_fn()
    grads = torch.autograd.grad(loss, list(wanted.values()), allow_unused=True)
    generator = torch.Generator().manual_seed(seed)
    errors: dict[str, float] = {}
    with torch.no_grad():
        for (name, p), grad in zip(wanted.items(), grads, strict=True):
            analytic_all = torch.zeros_like(p) if grad is None else grad
            flat = p.view(-1)
            picks = torch.randperm(flat.numel(), generator=generator)[:max_entries]
            analytic = analytic_all.reshape(-1)[picks]
            numeric = torch.empty_like(analytic)
            for j, k in enumerate(picks.tolist()):
                saved = flat[k].item()
                flat[k] = saved + eps
                plus = loss_fn().item()
                flat[k] = saved - eps
                minus = loss_fn().item()
                flat[k] = saved
                numeric[j] = (plus - minus) / (2 * eps)
            denom = max((analytic.norm() + numeric.norm()).item(), 1e-12)
            errors[name] = (analytic - numeric).norm().item() / denom
    return errors
