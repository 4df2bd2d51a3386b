"""The one optimiser step every training loop takes: zero grads, backward, clip the gradient norm, step."""
from __future__ import annotations

import torch


def optimizer_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, params, max_grad_norm: float | None) -> None:
    """``params``: the parameters whose joint gradient norm is clipped to ``max_grad_norm`` (None: no clip)."""
    optimizer.zero_grad()
    loss.backward()
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
