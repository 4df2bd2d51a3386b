"""The self-cloning diagnostic: does a protocol keep the start policy where it is when advantages carry no
information?

It runs the trial loop with the ``uniform`` estimator (every advantage 0, so AWR's weights are all equal and
the update clones the policy's own stochastic samples) and reports the deterministic success before and after.
A protocol under which this already drags the policy down (too many gradient steps on too few samples, a start
policy that its own exploration noise ruins) will collapse it whatever the estimator says; measuring it first
takes minutes and saves blaming an estimator.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional
from pathlib import Path

from algorithms.config import FinetuneConfig
from algorithms.finetune import run_trial

HOLD_POINTS = 5.0  # the start policy "holds" when it ends within this many success points of where it began


@dataclass
class SelfCloneResult:
    label: str  # the protocol diagnosed (a grid cell's label, or estimator+update)
    curve: list  # [(iteration, deterministic success)]
    episodes: Optional[int] = None  # episodes per evaluation (None: unknown, no interval is given)

    @property
    def start(self) -> float:
        return self.curve[0][1]

    @property
    def end(self) -> float:
        return self.curve[-1][1]

    @property
    def holds(self) -> bool:
        return abs(self.end - self.start) * 100 <= HOLD_POINTS

    def change_interval(self, z: float = 1.96) -> Optional[tuple[float, float]]:
        """The change end - start in success points with its normal-approximation interval (z=1.96: 95%), the two
        evaluations taken as independent binomial samples of ``episodes`` each; None without ``episodes``.  On the
        same fixed seeds the two are positively correlated, so this interval is conservative."""
        if not self.episodes:
            return None
        var = sum(p * (1 - p) / self.episodes for p in (self.start, self.end))
        d, h = (self.end - self.start) * 100, z * math.sqrt(var) * 100
        return d - h, d + h

    def line(self) -> str:
        path = " -> ".join(f"{s * 100:.1f}%" for _, s in self.curve)
        verdict = "holds" if self.holds else ("collapses" if self.end < self.start else "drifts up")
        ci = self.change_interval()
        noise = "" if ci is None else (f"; 95% interval of the change [{ci[0]:+.1f}, {ci[1]:+.1f}] points at {self.episodes} "
                                       f"episodes per evaluation: more episodes (--num-eval-episodes) or seeds narrow it")
        return (f"self-cloning under {self.label}: {path} ({(self.end - self.start) * 100:+.1f} points over {self.curve[-1][0]} "
                f"iterations: {verdict}, where 'holds' means ending within {HOLD_POINTS:g} points of the start{noise})")


def self_clone_config(cfg: FinetuneConfig) -> FinetuneConfig:
    """``cfg`` with zero advantages (estimator ``uniform``) and without the costs an estimator would add."""
    return dataclasses.replace(cfg, estimator="uniform", cell=f"selfclone:{cfg.label}", quality_every=0, offline=False)


def self_clone(cfg: FinetuneConfig, out_dir: str | Path, progress: bool = False, **trial_kw) -> SelfCloneResult:
    """Run the self-cloning trial of ``cfg`` in ``out_dir`` (``trial_kw``: :func:`run_trial`'s other arguments)."""
    history = run_trial(self_clone_config(cfg), out_dir, progress=progress, **trial_kw)
    evals = [h for h in history if "eval/success_rate" in h]
    return SelfCloneResult(cfg.label, [(h["iteration"], h["eval/success_rate"]) for h in evals],
                           min((h.get("eval/episodes", 0) for h in evals), default=0) or None)
