"""Does MC16 of pi* penalise the start's actions that lose a grasp?

Both MC16 finals keep the start's lost grasps (10.9 / 12.5% of episodes grasp the cube and never place it; the start
11.7%, `expert.pt` 3.1%): `../failure-modes/table-mc16-finals.md`.  This probe runs the seed-v2 cell
`mc16-expert+awr`'s first estimate on a smaller batch (the start policy at the cell's log-std, stochastic, as in
training; MC16 re-rollouts of pi*) and compares the batch-normalised advantages, and the AWR weights they give, of
the transitions where the cube is grasped before the action and not after it ("grasp lost") with those of all
other transitions where the cube is grasped before the action ("grasp kept").  From session 17 it also splits the
start's largest failure, the cube at the goal with the arm still moving: actions that bring the arm to rest there
(success at that step, "at goal, stops") against those that do not ("at goal, moves on").

    PYTHONPATH=. python experiments/results/seed-v2/probes/grasp-loss/grasp_loss.py [--num-envs 24] [--seed 1] [--json F]
        [--expert-checkpoint PT] [--gamma G]
"""
import argparse
import dataclasses
import json
import warnings

warnings.filterwarnings("ignore")
import torch  # noqa: E402

torch.set_num_threads(1)
from algorithms.checkpoint import load_policy  # noqa: E402
from algorithms.estimators import make_estimator  # noqa: E402
from algorithms.estimators.base import TrialContext  # noqa: E402
from algorithms.finetune import load_expert, resolve_device  # noqa: E402
from algorithms.rollout import collect_rollout  # noqa: E402
from algorithms.updates.awr import awr_weights, batch_advantages, mean_one  # noqa: E402
from envs import EnvConfig, make_vector_env  # noqa: E402
from envs.obs_layout import is_arm_static, is_grasped, is_placed  # noqa: E402
from orchestrator.spec import expand_trials, load_spec  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-envs", type=int, default=24, help="envs of the rollout (the cell: 100)")
    ap.add_argument("--seed", type=int, default=1, help="the trial seed whose first rollout this is")
    ap.add_argument("--json", default=None, help="write every grasped transition's record here")
    ap.add_argument("--expert-checkpoint", default=None, help="pi* for the re-rollouts (default: the cell's, expert.pt)")
    ap.add_argument("--gamma", type=float, default=None, help="discount of the re-rollout returns (default: the cell's, 0.8)")
    args = ap.parse_args()

    cfg = next(c for c in expand_trials(load_spec("experiments/seed-v2.yaml")) if c.label == "mc16-expert+awr")
    cfg = dataclasses.replace(cfg, seed=args.seed, num_envs=args.num_envs, quality_every=0,
                              expert_checkpoint=args.expert_checkpoint or cfg.expert_checkpoint,
                              gamma=cfg.gamma if args.gamma is None else args.gamma)
    device = resolve_device("cpu")
    torch.manual_seed(cfg.seed)
    agent, _ = load_policy(cfg.start_checkpoint, device=device, env_id=cfg.env_id, control_mode=cfg.control_mode)
    agent.set_logstd(cfg.start_logstd)
    expert = load_expert(cfg, device, agent.obs_dim, agent.act_dim)
    env_cfg = EnvConfig(cfg.env_id, cfg.num_envs, cfg.control_mode, "sparse", backend=cfg.backend)

    def make_env(num_envs: int, autoreset: bool = True):
        return make_vector_env(dataclasses.replace(env_cfg, num_envs=num_envs, autoreset=autoreset))

    venv = make_env(cfg.num_envs)
    ctx = TrialContext(cfg=cfg, device=device, make_env=make_env, expert=expert, obs_dim=venv.obs_dim, act_dim=venv.act_dim)
    estimator = make_estimator(cfg.estimator, ctx)
    estimator.prepare(agent)
    try:
        obs = venv.reset(seeds=[cfg.seed * 1000 + i for i in range(cfg.num_envs)])
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        ro = collect_rollout(agent, venv, obs, cfg.num_steps, device, save_states=True, generator=gen)
        est = estimator.estimate(ro, agent)
    finally:
        estimator.close()
        venv.close()

    adv = est.advantages  # [T, N]
    # the AWR update's own batch normalisation and weights; `relative` is what each transition counts for once the
    # update re-normalises the weights per minibatch (exp is convex, so a transition above the mean advantage can
    # still weigh less than the mean weight)
    norm = batch_advantages(cfg, adv.reshape(-1)).view_as(adv)
    weight = awr_weights(norm, cfg.awr_beta, cfg.awr_max_weight)
    relative = mean_one(weight.reshape(-1)).view_as(weight)
    before = is_grasped(ro.obs)
    after = is_grasped(ro.next_obs)
    ended = ro.dones
    fresh = ro.after_autoreset  # its obs may still report the previous episode's grasp: no loss, no keep
    lost = before & ~after & ~ended & ~ro.success & ~fresh
    kept = before & ~lost & ~fresh
    # the start's other failure: the cube at the goal, the arm still moving (success needs it at rest); the action
    # either brings the arm to rest there (success at this step) or not
    at_goal = is_placed(ro.obs) & ~is_arm_static(ro.obs)
    stops = at_goal & ro.success
    moves_on = at_goal & ~ro.success & ~ended
    groups = (("grasp lost", lost), ("grasp kept", kept), ("at goal, stops", stops), ("at goal, moves on", moves_on),
              ("all", torch.ones_like(lost)))
    rows = []
    for name, mask in groups:
        n = int(mask.sum())
        rows.append(dict(group=name, n=n,
                         adv_raw=float(adv[mask].mean()) if n else None,
                         adv_norm=float(norm[mask].mean()) if n else None,
                         positive=float((norm[mask] > 0).float().mean()) if n else None,
                         weight=float(weight[mask].mean()) if n else None,
                         relative=float(relative[mask].mean()) if n else None,
                         q=float(est.q[mask].mean()) if n and est.q is not None else None,
                         v=float(est.v[mask].mean()) if n and est.v is not None else None))
    print(f"mc16-expert+awr first estimate, seed {cfg.seed}, {cfg.num_envs} envs x {cfg.num_steps} steps, "
          f"start log-std {cfg.start_logstd}, gamma {cfg.gamma}, {cfg.mc_samples} re-rollouts of pi* ({cfg.expert_checkpoint}) each for Q and V")
    print("| transitions | n | A raw (mean) | A normalised (mean) | positive | AWR weight (mean) | relative weight | Q / V (mean) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        f = lambda x, d=3: "-" if x is None else f"{x:.{d}f}"
        print(f"| {r['group']} | {r['n']} | {f(r['adv_raw'])} | {f(r['adv_norm'], 2)} | {f(r['positive'], 2)} | "
              f"{f(r['weight'], 2)} | {f(r['relative'], 2)} | "
              f"{f(r['q'])} / {f(r['v'])} |")
    if args.json:
        t, i = torch.nonzero(before | at_goal, as_tuple=True)
        recs = [dict(step=int(a), env=int(b), lost=bool(lost[a, b]), at_goal=bool(at_goal[a, b]), stops=bool(stops[a, b]),
                     adv=float(adv[a, b]), norm=float(norm[a, b]),
                     q=None if est.q is None else float(est.q[a, b]), v=None if est.v is None else float(est.v[a, b]))
                for a, b in zip(t.tolist(), i.tolist())]
        with open(args.json, "w") as fh:
            json.dump(dict(rows=rows, grasped=recs), fh)


if __name__ == "__main__":
    main()
