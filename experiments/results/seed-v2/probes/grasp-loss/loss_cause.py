"""Does a policy drop the cube by opening the gripper, or does the cube slip out of a closed one?

PickCube-v1's Panda maps the gripper action [-1, 1] linearly to a finger target in [-0.01, 0.04] m per finger; the cube
is 0.04 m wide (0.02 m per finger), so a command above 0.2 targets the fingers wider than the cube (a release) and a
command at or below 0.2 squeezes it, the harder the lower (1,000 N/m per finger, at most 100 N). For every transition
where the cube is held before the action and not after it, with no episode end and no success ("grasp lost", as the
grasp-loss probe counts them), this prints the gripper command of the action (clipped to [-1, 1] as the env does),
whether the cube is still at the gripper afterwards and whether the gripper holds it again within a few steps.
ManiSkill's ``is_grasped`` is a contact-force test, so a "loss" with the cube still between the fingers and held again
at once is a flicker of that test, not a drop; a loss under a squeezing command with the cube gone is a slip.

Deterministic mode (default): one episode per seed (seeds 10000.., the failure-mode probe's), each env's transitions
after its first episode end dropped.  ``--stochastic``: the seed-v2 cell's first training rollout of the start policy
at its log-std (the grasp-loss probe's rollout: ``--rollout-envs 40`` gives its 18 losses).

    PYTHONPATH=. python experiments/results/seed-v2/probes/grasp-loss/loss_cause.py NAME=CHECKPOINT ... [--episodes 128]
    PYTHONPATH=. python experiments/results/seed-v2/probes/grasp-loss/loss_cause.py --stochastic [--rollout-envs 40]
"""
import argparse
import dataclasses
import warnings

warnings.filterwarnings("ignore")
import torch  # noqa: E402

torch.set_num_threads(1)
from algorithms.checkpoint import load_policy  # noqa: E402
from algorithms.rollout import collect_rollout  # noqa: E402
from envs import EnvConfig, make_vector_env  # noqa: E402
from envs.obs_layout import TCP_TO_CUBE, is_grasped  # noqa: E402
from orchestrator.spec import expand_trials, load_spec  # noqa: E402

GRIPPER = 7  # the action's last entry (pd_joint_delta_pos: seven arm joints, then the gripper)
RELEASE = 0.2  # commands above this target the fingers wider than the cube
NEAR = 0.02  # m: the cube's centre still within half a cube of the gripper's centre (it did not fall away)
REGAIN = 3  # steps


def losses(ro, first_episode_only: bool):
    """-> dict of 1-D tensors: ``cmd_lost`` (the gripper command at each grasp-losing transition), ``near`` (the
    cube still within NEAR of the gripper's centre after it), ``regained`` (held again within REGAIN steps of the same
    episode), ``cmd_kept`` (the command at every grasp-keeping transition), ``gap_lost`` / ``gap_kept`` (the cube's
    distance from the gripper's centre before the action, m)."""
    held, held_after = is_grasped(ro.obs), is_grasped(ro.next_obs)
    live = torch.ones_like(held)
    if first_episode_only:  # an env's transitions up to and including its first episode end
        live = (ro.dones.int().cumsum(0) - ro.dones.int()) == 0
    fresh = ro.after_autoreset  # its obs may still report the previous episode's grasp: no loss, no keep
    lost = live & held & ~held_after & ~ro.dones & ~ro.success & ~fresh
    kept = live & held & ~lost & ~fresh
    cmd = ro.actions[..., GRIPPER].clamp(-1, 1)
    T = held.shape[0]
    regained = torch.zeros_like(lost)
    for t, e in lost.nonzero().tolist():
        for k in range(t + 1, min(t + 1 + REGAIN, T)):
            if bool(held_after[k, e]) and bool(live[k, e]):
                regained[t, e] = True
                break
            if bool(ro.dones[k, e]):
                break
    gap_before = ro.obs[..., TCP_TO_CUBE].norm(dim=-1)  # m, the cube's centre from the gripper's centre
    near = ro.next_obs[..., TCP_TO_CUBE].norm(dim=-1) <= NEAR
    return dict(cmd_lost=cmd[lost], near=near[lost], regained=regained[lost], cmd_kept=cmd[kept],
                gap_lost=gap_before[lost], gap_kept=gap_before[kept])


def row(name, episodes, r):
    f = lambda x: f"{float(x.mean()):+.2f}" if len(x) else "-"
    cm = lambda x: f"{100 * float(x.mean()):.1f}" if len(x) else "-"
    n = len(r["cmd_lost"])
    count = lambda m: f"{int(m.sum())}"
    print(f"| {name} | {episodes} | {n} | {count(r['cmd_lost'] > RELEASE)} | {count(r['near'])} | {count(r['regained'])} | "
          f"{f(r['cmd_lost'])} | {f(r['cmd_kept'])} | {cm(r['gap_lost'])} / {cm(r['gap_kept'])} |", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("policies", nargs="*", help="NAME=CHECKPOINT, run deterministically")
    p.add_argument("--episodes", type=int, default=128, help="deterministic episodes per policy")
    p.add_argument("--seed", type=int, default=10000, help="first episode seed (deterministic mode)")
    p.add_argument("--num-envs", type=int, default=32, help="envs per batch of deterministic episodes")
    p.add_argument("--rollout-envs", type=int, default=40, help="envs of the stochastic rollout (the cell: 100)")
    p.add_argument("--stochastic", action="store_true", help="the seed-v2 cell's first training rollout of the start")
    ns = p.parse_args()
    if ns.policies and ns.episodes % ns.num_envs:
        p.error(f"--episodes {ns.episodes} is not a multiple of --num-envs {ns.num_envs}")
    device = torch.device("cpu")
    print(f"| policy | episodes | grasp losses | commanded open (> {RELEASE}) | cube within {100 * NEAR:.0f} cm of the "
          f"gripper after | held again within {REGAIN} steps | command at losses (mean) | command while keeping (mean) | "
          f"cube from the gripper's centre before the action, losing / keeping (mean, cm) |")
    print("|---|---|---|---|---|---|---|---|---|")
    if ns.stochastic:
        cfg = next(c for c in expand_trials(load_spec("experiments/seed-v2.yaml")) if c.label == "mc16-expert+awr")
        cfg = dataclasses.replace(cfg, num_envs=ns.rollout_envs)
        torch.manual_seed(cfg.seed)
        agent, _ = load_policy(cfg.start_checkpoint, device=device, env_id=cfg.env_id, control_mode=cfg.control_mode)
        agent.set_logstd(cfg.start_logstd)
        venv = make_vector_env(EnvConfig(cfg.env_id, cfg.num_envs, cfg.control_mode, "sparse", backend=cfg.backend))
        try:
            obs = venv.reset(seeds=[cfg.seed * 1000 + i for i in range(cfg.num_envs)])
            gen = torch.Generator().manual_seed(cfg.seed + 1)
            ro = collect_rollout(agent, venv, obs, cfg.num_steps, device, generator=gen)
        finally:
            venv.close()
        row(f"start, stochastic (log-std {cfg.start_logstd}), seed {cfg.seed}'s first rollout",
            f"{cfg.num_envs} envs x {cfg.num_steps} steps", losses(ro, first_episode_only=False))
    venv = make_vector_env(EnvConfig("PickCube-v1", num_envs=ns.num_envs, backend="cpu")) if ns.policies else None
    try:
        for spec in ns.policies:
            name, path = spec.split("=", 1)
            agent, _ = load_policy(path, device=device)
            parts = []
            for lo in range(ns.seed, ns.seed + ns.episodes, ns.num_envs):
                obs = venv.reset(seeds=[lo + i for i in range(ns.num_envs)])
                parts.append(losses(collect_rollout(agent, venv, obs, 50, device, deterministic=True), True))
            row(name, ns.episodes, {k: torch.cat([q[k] for q in parts]) for k in parts[0]})
    finally:
        if venv is not None:
            venv.close()


if __name__ == "__main__":
    main()
