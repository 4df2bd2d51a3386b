"""MC16(pi*)+AWR success per update: ours at gamma 0.8 (the grid's two seeds) and 0.95 (this ablation) beside the
reference's at the same gammas.  Writes curves.png / curves.svg next to this file.

    PYTHONPATH=. python experiments/results/seed-v2/ablations/mc16-gamma095/plot_curves.py

Ours: deterministic success on 128 fixed episodes, CPU PhysX, start 47.7%; read from the pooled grid report
(`grid/analysis/results.csv`) and this arm's TensorBoard folder.  The reference: zyc00/OfflineRLPlayGround,
experiments/log.md, "Results -- Gamma Sweep (MC16 optimal vs GAE PPO)", one seed, GPU PhysX, start 43.8% (its i1 is
the start, i2..i10 follow updates 1-9; no evaluation after update 10).
"""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

HERE = Path(__file__).resolve().parent
GRID = HERE.parents[1] / "grid" / "analysis" / "results.csv"
REFERENCE = {  # gamma -> success (%) at the start and after updates 1-9
    0.8: [43.8, 81.0, 87.9, 96.1, 98.6, 96.3, 97.6, 96.9, 97.9, 99.1],
    0.95: [43.8, 71.0, 91.0, 96.5, 91.5, 94.9, 97.1, 97.3, 98.7, 97.7],
}


def ours_gamma08() -> dict[str, list[float]]:
    r = pd.read_csv(GRID)
    r = r[r["config/cell"] == "mc16-expert+awr"]
    return {f"seed {s}": list(100 * g.sort_values("iteration")["eval/success_rate"])
            for s, g in r.groupby("config/seed")}


def ours_gamma095() -> list[float]:
    ea = EventAccumulator(str(HERE / "tb"))
    ea.Reload()
    return [100 * e.value for e in ea.Scalars("eval/success_rate")]


def main() -> None:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for gamma, color in ((0.8, "tab:blue"), (0.95, "tab:orange")):
        ax.plot(range(len(REFERENCE[gamma])), REFERENCE[gamma], color=color, ls="--", marker="o", ms=3,
                label=f"reference, gamma {gamma} (1 seed, GPU PhysX)")
    for i, (seed, curve) in enumerate(ours_gamma08().items()):
        ax.plot(range(len(curve)), curve, color="tab:blue", marker="s", ms=3, alpha=1 - 0.35 * i,
                label=f"ours, gamma 0.8, {seed}")
    g95 = ours_gamma095()
    ax.plot(range(len(g95)), g95, color="tab:orange", marker="s", ms=3, label="ours, gamma 0.95, seed 1")
    ax.axhline(90, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="updates", ylabel="deterministic success (%)", ylim=(0, 100), xticks=range(11),
           title="MC16(pi*)+AWR, seed-v2 protocol: ours against the reference")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(HERE / f"curves.{ext}", dpi=120)


if __name__ == "__main__":
    main()
