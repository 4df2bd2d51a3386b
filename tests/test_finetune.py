"""Every estimator x update rule the smoke grid does not run runs a real 2-iteration trial from the shipped start policy; a
killed trial resumes."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from algorithms.config import FinetuneConfig
from algorithms.estimators import ESTIMATORS
from algorithms.finetune import TRIAL_STATE, run_trial
from algorithms.updates import UPDATES
from tests.spec_metrics import SPEC_METRICS

CK = "experiments/checkpoints/pickcube"
TINY = dict(
    num_envs=1, num_steps=6, num_iterations=2, num_eval_episodes=1, minibatch_size=6, update_epochs=1,
    mc_samples=1, mc_workers=1, gae_critic_epochs=1, iql_checkpoint=f"{CK}/iql.pt", backend="cpu", device="cpu",
)


def tiny_cfg(estimator, update, **kw):
    d = dict(TINY, estimator=estimator, update=update)
    if estimator == "sarsa":
        d["iql_checkpoint"] = f"{CK}/sarsa.pt"
        d["iql_expectile"] = 0.5
    d.update(kw)
    return FinetuneConfig(**d)


# every estimator with every rule; the uniform estimator (the self-cloning diagnostic) only with AWR, where zero
# advantages mean cloning (PPO has no gradient at zero advantage, RECAP would see only negatives).  The cells of
# the shipped smoke grid are checked for the same metrics there, through Ray Tune (tests/test_smoke_grid.py).
_SMOKE = yaml.safe_load((Path(__file__).resolve().parent.parent / "experiments" / "smoke.yaml").read_text())
COMBINATIONS = [(e, u) for e in ESTIMATORS for u in UPDATES if (e != "uniform" or u == "awr")
                and not (e in _SMOKE["estimators"] and u in _SMOKE["updates"])]


@pytest.mark.parametrize("estimator,update", COMBINATIONS, ids=[f"{e}-{u}" for e, u in COMBINATIONS])
def test_every_combination_runs_and_reports_spec_metrics(env_fork_server, estimator, update, tmp_path):
    reported = []
    hist = run_trial(tiny_cfg(estimator, update), tmp_path, report=lambda m, d: reported.append((m, d)), fork_server=env_fork_server)
    assert [h["iteration"] for h in hist] == [0, 1, 2]
    assert len(reported) == 3 and all((d / TRIAL_STATE).exists() for _, d in reported)
    last = hist[-1]
    missing = [k for k in SPEC_METRICS if k not in last]
    assert not missing, missing
    assert "losses/value_loss" in last or estimator != "gae"
    if update == "recap":
        assert "losses/pos_loss" in last and "losses/neg_loss" in last
    if update == "awr":
        assert 0.0 < last["charts/awr_weight_ess"] <= 1.0 + 1e-9
    if estimator != "uniform":  # every estimator but the self-cloning one returns V(s_t) beside A
        corr = last["charts/advantage_value_corr"]
        assert math.isnan(corr) or -1.0 - 1e-9 <= corr <= 1.0 + 1e-9
    assert last["charts/env_steps"] == 2 * 6
    if estimator == "mc":
        assert last["charts/sim_steps"] > last["charts/env_steps"]  # re-rollouts are counted
    else:
        assert last["charts/sim_steps"] == last["charts/env_steps"]
    assert 0.0 <= last["eval/success_rate"] <= 1.0
    assert (tmp_path / "tb").is_dir() and any((tmp_path / "tb").iterdir())
    assert json.loads((tmp_path / "config.json").read_text())["estimator"] == estimator


def _comparable(history):
    return [{k: v for k, v in h.items() if not k.startswith("time/") and k != "charts/SPS"} for h in history]


@pytest.fixture(scope="module")
def mc_ppo_trial(env_fork_server, tmp_path_factory):
    """One tiny mc+ppo trial, as the tests below start from it: (its history, a copy of the checkpoint directory of
    each report by iteration)."""
    import shutil

    root = tmp_path_factory.mktemp("mc_ppo")
    copies = {}

    def keep(metrics, checkpoint_dir):
        copies[metrics["iteration"]] = root / f"at{metrics['iteration']}"
        shutil.copytree(checkpoint_dir, copies[metrics["iteration"]])

    return run_trial(tiny_cfg("mc", "ppo"), root / "trial", report=keep, fork_server=env_fork_server), copies


def test_same_seed_same_metrics(env_fork_server, mc_ppo_trial, tmp_path):
    a, _ = mc_ppo_trial
    b = run_trial(tiny_cfg("mc", "ppo"), tmp_path / "b", fork_server=env_fork_server)
    assert _comparable(a) == _comparable(b)  # CPU backend: bit-identical metrics for the same config and seed


def test_a_folder_of_finetune_trials_reads_as_an_experiment(mc_ppo_trial, tmp_path):
    """``orchestrator analyze`` on ``finetune`` out-dirs: metrics.jsonl holds the trial's history; a trial written before
    that file existed is rebuilt from its TensorBoard scalars; one whose rows stop early is INCOMPLETE."""
    import shutil

    from orchestrator.analysis import analyze
    from orchestrator.rundir import FINISHED, INCOMPLETE, load_experiment

    history, copies = mc_ppo_trial
    trial = copies[0].parent / "trial"
    lines = (trial / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == json.loads(json.dumps(history))
    root = tmp_path / "trials"
    shutil.copytree(trial, root / "jsonl", ignore=shutil.ignore_patterns("checkpoint"))
    shutil.copytree(trial, root / "tb-only", ignore=shutil.ignore_patterns("checkpoint", "metrics.jsonl"))
    shutil.copytree(trial, root / "cut", ignore=shutil.ignore_patterns("checkpoint"))
    (root / "cut" / "metrics.jsonl").write_text("".join(line + "\n" for line in lines[:-1]))

    exp = load_experiment(root)
    assert exp.source == "trials" and exp.warnings == []
    assert dict(zip(exp.trials["trial_id"], exp.trials["status"])) == {"jsonl": FINISHED, "tb-only": FINISHED, "cut": INCOMPLETE}
    evals = [(h["iteration"], h["eval/success_rate"]) for h in history if "eval/success_rate" in h]
    for name in ("jsonl", "tb-only"):
        rows = exp.results[exp.results["trial_id"] == name]
        assert list(rows["iteration"]) == [h["iteration"] for h in history]
        assert (rows["config/estimator"] == "mc").all() and (rows["config/update"] == "ppo").all()
        got = rows.dropna(subset=["eval/success_rate"])
        assert list(got["iteration"]) == [it for it, _ in evals]
        assert got["eval/success_rate"].tolist() == pytest.approx([s for _, s in evals], abs=1e-6)  # TensorBoard: float32
    assert list(load_experiment(trial).trials["trial_id"]) == ["trial"]  # one trial directory, given itself
    # a trial whose config.json is torn is left out with a warning, not pooled as a trial of no cell
    shutil.copytree(trial, root / "torn", ignore=shutil.ignore_patterns("checkpoint"))
    (root / "torn" / "config.json").write_text('{"estimator": "mc", "upd')
    torn = load_experiment(root)
    assert set(torn.trials["trial_id"]) == {"jsonl", "tb-only", "cut"} and "torn" not in set(torn.results["trial_id"])
    assert len(torn.warnings) == 1 and "torn" in torn.warnings[0] and "left out" in torn.warnings[0]
    shutil.rmtree(root / "torn")
    out = analyze(root, tmp_path / "analysis")
    assert "mc+ppo" in (tmp_path / "analysis" / "report.md").read_text() and out


def test_killed_trial_resumes_to_the_same_final_metrics(tmp_path):
    flags = ["--estimator", "gae", "--update", "awr", "--num-envs", "1", "--num-steps", "6", "--num-iterations", "3",
             "--num-eval-episodes", "2", "--minibatch-size", "6", "--update-epochs", "1", "--backend", "cpu", "--device", "cpu", "--no-progress"]
    cmd = [sys.executable, "-m", "orchestrator", "finetune", *flags]
    full = tmp_path / "full"
    subprocess.run(cmd + ["--out-dir", str(full)], check=True, capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--out-dir", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    state = killed / "checkpoint" / TRIAL_STATE
    deadline = time.time() + 300
    while time.time() < deadline:
        if state.exists() and torch.load(state, weights_only=False)["iteration"] >= 1:
            break
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the trial and its env workers
    proc.wait()
    it_at_kill = torch.load(state, weights_only=False)["iteration"]
    assert it_at_kill < 3, "the trial finished before it could be killed"
    subprocess.run(cmd + ["--out-dir", str(killed), "--resume"], check=True, capture_output=True)
    a = torch.load(full / "checkpoint" / TRIAL_STATE, weights_only=False)["history"]
    b = torch.load(state, weights_only=False)["history"]
    assert [h["iteration"] for h in b] == [0, 1, 2, 3]
    assert _comparable(a) == _comparable(b)
    # the resumed trial's metrics.jsonl is its whole history (rewritten from the trial state, no torn or doubled rows)
    assert [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()] == json.loads(json.dumps(b))


def test_iql_file_as_gae_critic_is_refused_before_any_env_starts():
    from algorithms.checkpoint import CheckpointError
    from algorithms.finetune import validate_trial_inputs

    with pytest.raises(CheckpointError, match="not a V-only critic"):
        validate_trial_inputs(tiny_cfg("gae", "ppo", gae_critic_checkpoint=f"{CK}/iql.pt"))


def test_start_logstd_sets_the_start_policys_noise(env_fork_server, tmp_path):
    """--start-logstd (the reference's -1.5) replaces the checkpoint's log-std before the first rollout; with a
    vanishing learning rate the saved policy still carries it, and the start's evaluations match a trial from a
    checkpoint saved with that log-std (deterministic evaluation does not see it, stochastic does)."""
    from algorithms.checkpoint import load_policy, save_policy

    agent, ck = load_policy(f"{CK}/start.pt")
    with torch.no_grad():
        agent.actor_logstd.fill_(-1.3)
    saved = tmp_path / "start-1.3.pt"
    save_policy(saved, agent, env_id=ck["env_id"], control_mode=ck["control_mode"], config=ck.get("config"), metrics={})
    kw = dict(num_iterations=1, learning_rate=1e-12)
    a = run_trial(tiny_cfg("uniform", "awr", start_logstd=-1.3, **kw), tmp_path / "a", fork_server=env_fork_server)
    b = run_trial(tiny_cfg("uniform", "awr", start_checkpoint=str(saved), **kw), tmp_path / "b", fork_server=env_fork_server)
    assert _comparable(a)[0] == _comparable(b)[0]
    after, _ = load_policy(tmp_path / "a" / "checkpoint" / "policy.pt")
    assert torch.allclose(after.actor_logstd, torch.full_like(after.actor_logstd, -1.3), atol=1e-6)


def test_expert_logstd_sets_pi_stars_noise_and_keeps_its_mean():
    """--expert-logstd (an ablation; the reference keeps the checkpoint's) changes only pi*'s log-std, and the copy
    that acts inside the env workers for the re-rollouts carries it."""
    from algorithms.agent import actor_payload, agent_from_payload
    from algorithms.checkpoint import load_policy
    from algorithms.finetune import load_expert

    stored, _ = load_policy(f"{CK}/expert.pt")
    cpu = torch.device("cpu")
    kept = load_expert(tiny_cfg("mc", "awr"), cpu, stored.obs_dim, stored.act_dim)
    assert torch.equal(kept.actor_logstd, stored.actor_logstd) and not kept.training
    noisy = load_expert(tiny_cfg("mc", "awr", expert_logstd=-0.75), cpu, stored.obs_dim, stored.act_dim)
    assert torch.equal(noisy.actor_logstd, torch.full_like(stored.actor_logstd, -0.75)) and not noisy.training
    means = {k: v for k, v in stored.state_dict().items() if k.startswith("actor_mean")}
    assert means and all(torch.equal(noisy.state_dict()[k], v) for k, v in means.items())
    in_worker = agent_from_payload(actor_payload(noisy))
    assert torch.equal(in_worker.actor_logstd, noisy.actor_logstd)


def test_a_trial_checkpointed_on_a_gpu_machine_resumes_on_a_cpu_one(env_fork_server, mc_ppo_trial, tmp_path, capsys):
    """A GPU machine's trial state carries CUDA generator states (16 bytes: seed and offset), which a CPU generator
    cannot take (the seed-v2 grid's MC trials, moved from the lent machine to this one, failed so). The resume seeds
    its generators from them instead, says so, and finishes; resumed twice, the same numbers."""
    import shutil

    cfg = tiny_cfg("mc", "ppo")
    at1 = tmp_path / "at1"
    shutil.copytree(mc_ppo_trial[1][1], at1)
    st = torch.load(at1 / TRIAL_STATE, weights_only=False)
    cuda_state = lambda i: torch.arange(16, dtype=torch.uint8) + i
    st["rng"] = {k: cuda_state(i) for i, k in enumerate(st["rng"])}
    st["estimator"] = {k: (cuda_state(9) if k in ("gen", "score_gen") else v) for k, v in st["estimator"].items()}
    torch.save(st, at1 / TRIAL_STATE)
    b = run_trial(cfg, tmp_path / "b", resume_from=at1, fork_server=env_fork_server)
    assert "the random streams continue from seeds derived from the saved ones" in capsys.readouterr().out
    c = run_trial(cfg, tmp_path / "c", resume_from=at1, fork_server=env_fork_server)
    assert [h["iteration"] for h in b] == [0, 1, 2]
    assert _comparable(b) == _comparable(c)


def test_a_finished_trials_state_resumed_reports_its_final_metrics_again_without_another_update(env_fork_server, mc_ppo_trial, tmp_path):
    """A stop between a trial's last report reaching storage and the driver recording it leaves a finished state
    that Tune resumes (the seed-v2 MC16 seed-2 trial, stopped on the lent machine just after update 10): the
    resumed trial reports the final metrics it holds, and does no further update."""
    cfg = tiny_cfg("mc", "ppo")
    done, copies = mc_ppo_trial
    final = copies[cfg.num_iterations]
    again = []
    resumed = run_trial(cfg, tmp_path / "b", resume_from=final, report=lambda m, d: again.append((m, sorted(os.listdir(d)))), fork_server=env_fork_server)
    assert [m["iteration"] for m, _ in again] == [cfg.num_iterations]
    assert again[0][0] == done[-1] and TRIAL_STATE in again[0][1]
    assert _comparable(resumed) == _comparable(done)


def test_a_trial_resumed_with_more_iterations_continues_as_a_longer_trial_would(env_fork_server, tmp_path, capsys):
    """--num-iterations is the one field a resume may change (a run extended past its planned end, as the seed-v2
    gamma-0.95 ablation was): 2 iterations, then resumed to 3, give the metrics of a 3-iteration trial; a resume
    that asks for fewer iterations than are done is refused before anything is written."""
    from algorithms.finetune import prepare_trial_dir

    short = tmp_path / "short"
    run_trial(tiny_cfg("gae", "awr", eval_every=1), short, fork_server=env_fork_server)
    extended = run_trial(tiny_cfg("gae", "awr", eval_every=1, num_iterations=3), short, resume_from=short / "checkpoint", fork_server=env_fork_server)
    assert "the trial runs to iteration 3 (it was set to 2); 2 are done" in capsys.readouterr().out
    straight = run_trial(tiny_cfg("gae", "awr", eval_every=1, num_iterations=3), tmp_path / "straight", fork_server=env_fork_server)
    assert [h["iteration"] for h in extended] == [0, 1, 2, 3]
    assert _comparable(extended) == _comparable(straight)
    assert json.loads((short / "config.json").read_text())["num_iterations"] == 3
    before = sorted(p.name for p in short.rglob("*"))
    with pytest.raises(ValueError, match="has finished 3 iterations, so --num-iterations must be at least 3"):
        prepare_trial_dir(short, tiny_cfg("gae", "awr", eval_every=1, num_iterations=1), resume=True)
    assert sorted(p.name for p in short.rglob("*")) == before
