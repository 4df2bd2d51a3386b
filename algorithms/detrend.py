"""Advantages without their between-state trend: an ablation, not the reference's method.

Batch normalisation compares advantages across states.  Where A is largely a function of V(s) (the expert's
Monte-Carlo advantages are <= 0 and most negative where pi* does well), normalised weights mostly choose
*states*, not a state's better actions.  Subtracting A's least-squares line on V(s) over the batch keeps only
what V does not explain, so the weights rank actions against states of similar value.
"""
from __future__ import annotations

import torch


def detrend_on_values(advantages: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """advantages, values [T, N] (any equal shape) -> A - (a + b V) [same shape], with (a, b) the least-squares
    fit of A on V over every element; A - mean(A) where V is constant."""
    a = advantages.double()
    v = values.to(a.device).double()
    vc = v - v.mean()
    den = (vc * vc).sum()
    slope = (vc * (a - a.mean())).sum() / den if den > 0 else torch.zeros((), dtype=a.dtype, device=a.device)
    return (a - a.mean() - slope * vc).to(advantages.dtype)
