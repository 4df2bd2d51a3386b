"""SPEC.md's per-iteration metrics: every trial reports each of them (tests/test_finetune.py, tests/test_smoke_grid.py)."""
SPEC_METRICS = [
    "eval/success_rate", "eval/success_rate_stochastic", "charts/advantage_mean", "charts/advantage_std",
    "charts/pos_ratio", "losses/policy_loss", "time/rollout", "time/estimate", "time/update",
    "charts/env_steps", "charts/sim_steps", "charts/SPS",
]
