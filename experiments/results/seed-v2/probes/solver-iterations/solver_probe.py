"""Do the MC16 plateau's lost grasps depend on the CPU contact solver?  Each policy's deterministic episodes
(PickCube-v1, 50 steps, seeds 10000.., success ends an episode) under PhysX CPU with ManiSkill's default scene config
(TGS, 15 position iterations; ManiSkill's own note: "if stable grasps are necessary >= 20 is preferred") and with
more position iterations.  Everything else is the stock task; the policies were trained at 15.

Counted per episode, as ``probes/failure-modes/failure_modes.py`` sorts them: success; never grasped; grasped but the
cube never within the goal threshold (a lost grasp, in practice); placed but never static there.  One env in this
process, seeded resets that rebuild the scene (as our env workers do), batched nothing: a few minutes per policy and
setting on one core.

    PYTHONPATH=. python experiments/results/seed-v2/probes/solver-iterations/solver_probe.py \
        NAME=CHECKPOINT ... [--iterations 15 30 60] [--episodes 128] [--seed 10000] [--json FILE]
"""
import argparse
import json
import time
import warnings

warnings.filterwarnings("ignore")
import torch  # noqa: E402

torch.set_num_threads(1)
import gymnasium as gym  # noqa: E402
import mani_skill.envs  # noqa: E402,F401

from algorithms.checkpoint import load_policy  # noqa: E402
from envs.backend import can_render  # noqa: E402
from envs.obs_layout import CUBE_TO_GOAL, GOAL_THRESH, is_arm_static, is_grasped  # noqa: E402
from envs.tasks import register_headless_variants, resolve_env_id  # noqa: E402


def make_env(iterations: int):
    register_headless_variants()
    renders = can_render()
    return gym.make(resolve_env_id("PickCube-v1", renders), num_envs=1, obs_mode="state", control_mode="pd_joint_delta_pos",
                    reward_mode="sparse", sim_backend="physx_cpu", render_backend="gpu" if renders else "none",
                    sim_config={"scene_config": {"solver_position_iterations": iterations}}).unwrapped


def episode(policy, env, seed: int) -> dict:
    obs, _ = env.reset(seed=seed, options={"reconfigure": True})
    obs = obs.float()
    r = dict(seed=seed, grasp=None, placed=None, success=None, moving_at_goal=0)
    for t in range(1, 51):
        with torch.no_grad():
            a = policy.act(obs, deterministic=True)
        obs, _, _, _, info = env.step(a)
        obs = obs.float()
        o = obs[0]
        if r["grasp"] is None and bool(is_grasped(o)):
            r["grasp"] = t
        if float(o[CUBE_TO_GOAL].norm()) <= GOAL_THRESH:
            r["placed"] = r["placed"] or t
            r["moving_at_goal"] += int(not bool(is_arm_static(o)))
        if bool(info["success"][0]):
            r["success"] = t
            break
    return r


def summary(rows: list) -> dict:
    n = len(rows)
    pct = lambda k: round(100 * sum(k(r) for r in rows) / n, 1)  # noqa: E731
    return {"success": pct(lambda r: r["success"] is not None),
            "never grasped": pct(lambda r: r["grasp"] is None),
            "grasped, never placed": pct(lambda r: r["grasp"] is not None and r["placed"] is None),
            "placed, never static": pct(lambda r: r["placed"] is not None and r["success"] is None)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("policies", nargs="+", help="NAME=CHECKPOINT")
    p.add_argument("--iterations", type=int, nargs="+", default=[15, 30, 60], help="PhysX solver position iterations")
    p.add_argument("--episodes", type=int, default=128, help="episodes per policy and setting")
    p.add_argument("--seed", type=int, default=10000, help="first episode seed")
    p.add_argument("--json", default=None, help="write every episode's record here")
    args = p.parse_args()
    seeds = list(range(args.seed, args.seed + args.episodes))
    out, table = {}, []
    for it in args.iterations:
        env = make_env(it)
        for spec in args.policies:
            name, path = spec.split("=", 1)
            policy, _ = load_policy(path)
            t0 = time.time()
            rows = [episode(policy, env, s) for s in seeds]
            s = summary(rows)
            out[f"{name}@{it}"] = rows
            table.append(f"| {name} | {it} | " + " | ".join(f"{v}%" for v in s.values()) + f" | {time.time() - t0:.0f} s |")
            print(table[-1], flush=True)
        env.close()
    print("\n| policy | position iterations | success | never grasped | grasped, never placed | placed, never static | wall |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(table))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f)


if __name__ == "__main__":
    main()
