"""Where do a policy's deterministic episodes fail?  Each episode (PickCube-v1, 50 steps, fixed seeds) is sorted into:
success; never grasped; grasped but the cube never within the goal threshold; placed but the arm never static there
(PickCube's success is placed AND arm joint speeds <= 0.2).  Also: mean steps to first grasp / first placement /
success; and, for the "grasped, never placed" episodes, whether the cube is still held when the episode ends (from
session 17).  Batched deterministic inference on the CPU backend (success may differ from a trial's evaluation by an
episode or two of 128).  The JSON's per-episode ``placed_moving`` (steps at the goal with the arm moving) uses the env's
own test (``envs.obs_layout.is_arm_static``: every arm joint <= 0.2) from session 17 on; the JSON files written before
counted a step as moving when the norm of the arm's joint speeds exceeded 0.2 (the tables do not use this count).

    python experiments/results/seed-v2/probes/failure-modes/failure_modes.py NAME=CHECKPOINT ... [--episodes 128] [--seed 10000]
"""
import argparse
import json
import warnings

warnings.filterwarnings("ignore")
import torch  # noqa: E402

torch.set_num_threads(1)
from algorithms.checkpoint import load_policy  # noqa: E402
from envs import EnvConfig, make_vector_env  # noqa: E402
from envs.obs_layout import CUBE_TO_GOAL, GOAL_THRESH, is_arm_static, is_grasped  # noqa: E402


def episodes(policy, venv, seeds):
    rows = []
    for i in range(0, len(seeds), venv.num_envs):
        batch = seeds[i:i + venv.num_envs]
        obs = venv.reset(seeds=batch + [batch[-1]] * (venv.num_envs - len(batch)))
        rec = [dict(seed=s, grasp=None, placed=None, success=None, placed_moving=0, min_dist=9.0, length=None,
                    held_end=None) for s in batch]
        alive = torch.ones(venv.num_envs, dtype=torch.bool)
        alive[len(batch):] = False
        for t in range(1, 51):
            ids = alive.nonzero().flatten()
            if not len(ids):
                break
            with torch.no_grad():
                a = policy.act(obs[ids], deterministic=True)
            st = venv.step(a, env_ids=ids)
            o = st.final_obs
            for k, e in enumerate(ids.tolist()):
                r = rec[e]
                dist = float(o[k, CUBE_TO_GOAL].norm())
                r["min_dist"] = min(r["min_dist"], dist)
                if r["grasp"] is None and is_grasped(o[k]):
                    r["grasp"] = t
                if dist <= GOAL_THRESH:
                    r["placed"] = r["placed"] or t
                    if not is_arm_static(o[k]):
                        r["placed_moving"] += 1
                if bool(st.success[k]) and r["success"] is None:
                    r["success"] = t
                if bool(st.terminated[k] | st.truncated[k]):
                    alive[e] = False
                    r["length"] = t
                    r["held_end"] = bool(is_grasped(o[k]))
            obs = obs.clone()
            obs[ids] = st.obs
        rows += rec
    return rows


def classify(r):
    if r["success"]:
        return "success"
    if r["grasp"] is None:
        return "never grasped"
    if r["placed"] is None:
        return "grasped, never placed"
    return "placed, never static there"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("policies", nargs="+", help="NAME=CHECKPOINT")
    p.add_argument("--episodes", type=int, default=128)
    p.add_argument("--seed", type=int, default=10000)
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--json", default=None, help="write every episode's record here")
    ns = p.parse_args()
    venv = make_vector_env(EnvConfig("PickCube-v1", num_envs=ns.num_envs, backend="cpu", autoreset=False, num_workers=1))
    seeds = list(range(ns.seed, ns.seed + ns.episodes))
    out = {}
    kinds = ("success", "never grasped", "grasped, never placed", "placed, never static there")
    print("| policy | " + " | ".join(kinds) + " | steps to grasp / placed / success (mean) |")
    print("|---|" + "---|" * (len(kinds) + 1))
    for spec in ns.policies:
        name, path = spec.split("=", 1)
        policy, _ = load_policy(path)
        rows = episodes(policy, venv, seeds)
        out[name] = rows
        counts = {k: sum(classify(r) == k for r in rows) for k in kinds}

        def mean(key):
            v = [r[key] for r in rows if r[key]]
            return f"{sum(v) / len(v):.1f}" if v else "-"
        print(f"| {name} | " + " | ".join(f"{100 * counts[k] / len(rows):.1f}%" for k in kinds)
              + f" | {mean('grasp')} / {mean('placed')} / {mean('success')} |", flush=True)
    venv.close()
    # "grasped, never placed" is an outcome, not a drop: the episode may end with the cube still held, short of the goal
    print("\n| policy | grasped, never placed | still held at the episode's end | not held at the end | closest to the goal (mean) |")
    print("|---|---|---|---|---|")
    for name, rows in out.items():
        gnp = [r for r in rows if classify(r) == "grasped, never placed"]
        held = sum(bool(r["held_end"]) for r in gnp)
        close = f"{100 * sum(r['min_dist'] for r in gnp) / len(gnp):.1f} cm" if gnp else "-"
        print(f"| {name} | {len(gnp)} | {held} | {len(gnp) - held} | {close} |")
    if ns.json:
        with open(ns.json, "w") as f:
            json.dump(out, f)


if __name__ == "__main__":
    main()
