"""Does restoring a saved state change where the expert's continuation ends?  Env 0 runs the start policy (stochastic)
for t0 steps, then the expert (deterministic) to the episode's end; env 1 gets env 0's state at t0 restored (with the
warm-up, as MC re-rollouts do) and runs the same deterministic expert.  Any difference in outcome is restore fidelity."""
import sys, warnings; warnings.filterwarnings("ignore")
import torch
torch.set_num_threads(1)
from envs import EnvConfig, make_vector_env
from algorithms.checkpoint import load_policy
from envs.obs_layout import GRASPED
start, _ = load_policy("experiments/checkpoints/pickcube/start.pt")
expert, _ = load_policy("experiments/checkpoints/pickcube/expert.pt")
gamma = 0.8
venv = make_vector_env(EnvConfig("PickCube-v1", num_envs=2, backend="cpu", autoreset=False, num_workers=1))
g = torch.Generator().manual_seed(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
rows = []
E = int(sys.argv[2]) if len(sys.argv) > 2 else 60
for ep in range(E):
    obs = venv.reset(seeds=[9000 + ep, 9000 + ep])
    t0 = int(torch.randint(3, 40, (1,), generator=g))
    alive = True
    for t in range(t0):
        with torch.no_grad():
            a = start.act(obs[:1], deterministic=False, generator=g)
        st = venv.step(a, env_ids=torch.tensor([0]))
        if bool(st.terminated[0] | st.truncated[0]):
            alive = False
            break
        obs = torch.cat([st.final_obs, obs[1:]])
    if not alive:
        continue
    grasped = bool(obs[0, GRASPED] > 0.5)
    s = venv.get_state()
    o1 = venv.set_state(s[torch.tensor([0])], env_ids=torch.tensor([1]), warmup=True)
    obs = torch.cat([obs[:1], o1.reshape(1, -1)])
    out = []
    for e in (0, 1):
        o, ret, disc, succ, n = obs[e:e + 1], 0.0, 1.0, False, 0
        while True:
            with torch.no_grad():
                a = expert.act(o, deterministic=True)
            st = venv.step(a, env_ids=torch.tensor([e]))
            n += 1
            ret += disc * float(st.reward[0]); disc *= gamma
            succ = succ or bool(st.success[0])
            if bool(st.terminated[0] | st.truncated[0]):
                break
            o = st.final_obs
        out.append((succ, ret, n))
    rows.append((grasped, t0, *out[0], *out[1]))
import statistics as S
for label, sel in (("grasped", True), ("not grasped", False)):
    r = [x for x in rows if x[0] == sel]
    if not r:
        continue
    flips = sum(x[2] != x[5] for x in r)
    same_len = sum(x[4] == x[7] for x in r)
    print(f"{label}: {len(r)} states; success natural {sum(x[2] for x in r)/len(r):.3f} restored {sum(x[5] for x in r)/len(r):.3f}; "
          f"outcome flips {flips}; same length {same_len}; mean return natural {S.mean(x[3] for x in r):.4f} restored {S.mean(x[6] for x in r):.4f}; "
          f"mean |return diff| {S.mean(abs(x[3]-x[6]) for x in r):.4f}")
venv.close()
