"""Bad input never costs work or results: every command refuses it before it starts, in one line, touching nothing.

The cases, their workspace and how each is run are in ``tests/bad_inputs.py``.  For every case this asserts: exit
status 2; exactly one non-empty stderr line (``error: ...`` with the words that name the problem); no Ray and no
env-worker process among the command's descendants (sampled every 20 ms while it runs); and the workspace's tree
byte-for-byte unchanged (sha256 and mtime of every file).  How long a refusal takes (target: under 5 s) is measured
by ``benchmarks/bad_input_refusal.py``, not here.

The cases run two at a time, each in its own copy of the workspace, each forked from a server that has imported
torch and the CLI once (``run_cases(forked=True)``: the command's own process, output, descendants and files are
observed as for a subprocess; the import is most of a refusal's cost, so the benchmark times real subprocesses).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.bad_inputs import CASES, TRIAL, Case, ForkServer, build_workspace, run_case, run_cases, trial_flags


@pytest.fixture(scope="module")
def paths(tmp_path_factory, policy_checkpoint) -> dict:
    return build_workspace(tmp_path_factory.mktemp("bad_input"), policy_checkpoint)


@pytest.fixture(scope="module")
def outcomes(paths) -> dict:
    return run_cases(paths, forked=True)


def test_at_least_forty_bad_inputs_across_every_command():
    commands = {case.args({"inp": Path("i"), "start": Path("s"), "bare": Path("b"), "iql": Path("q"), "root": Path("r"), "ws": Path("w")})[0]
                for case in CASES}
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)
    assert commands >= {"grid", "resume", "finetune", "quality", "eval", "collect", "pretrain-iql", "pretrain-critic", "pretrain", "select", "submit"}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_before_any_work(case, outcomes):
    out = outcomes[case.id]
    if isinstance(out, str):
        pytest.skip(out)
    lines = [l for l in out.stderr.splitlines() if l.strip()]
    assert out.returncode == 2, f"exit {out.returncode}; stderr:\n{out.stderr[-3000:]}"
    assert len(lines) == 1 and lines[0].startswith("error: "), f"not one error line:\n{out.stderr[-3000:]}"
    for w in case.words:
        assert w in lines[0], f"{w!r} not in {lines[0]!r}"
    assert not out.forbidden, f"started {out.forbidden}"
    assert "Started a local Ray instance" not in out.stdout + out.stderr
    assert not out.changed, f"changed in the workspace: {out.changed}"
    assert not out.timed_out, "still running after 120 s: it did not refuse"


def test_the_observer_sees_a_command_that_does_work(paths, tmp_path):
    """The same observation of a good command, run the same way: it starts env workers and writes its trial, and both
    are seen (the refusals' "nothing started, nothing changed" means something only if this holds)."""
    ws = tmp_path / "ws"
    shutil.copytree(paths["template"], ws, symlinks=True)
    good = Case("a tiny trial", lambda p: ["finetune", *trial_flags(p["start"]), "--out-dir", "new"], ())
    server = ForkServer()
    try:
        out = run_case(good, paths, ws, tmp_path / "log", server)
    finally:
        server.close()
    assert out.returncode == 0, out.stderr[-3000:]
    assert any("envs.fork_parent" in c for c in out.forbidden), out.forbidden
    assert {"new/config.json", "new/checkpoint/trial_state.pt"} <= set(out.changed)


def test_overwrite_replaces_only_the_old_trial(paths, tmp_path, capsys):
    """--overwrite removes the previous trial's files (and says so); anything else in --out-dir stays."""
    from algorithms.config import FinetuneConfig
    from algorithms.finetune import TRIAL_FILES, prepare_trial_dir

    out = tmp_path / "trial"
    shutil.copytree(paths["template"] / "results" / "trial", out)
    (out / "notes.txt").write_text("mine\n")
    cfg = FinetuneConfig(**TRIAL, start_checkpoint=str(paths["start"]))
    assert prepare_trial_dir(out, cfg, resume=True) == out / "checkpoint"  # the same config resumes
    assert prepare_trial_dir(out, cfg, overwrite=True) is None
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert "removed the previous trial's config.json, metrics.jsonl, tb, checkpoint" in capsys.readouterr().err
    assert all(not (out / name).exists() for name in TRIAL_FILES)


def test_known_task_sizes_are_the_simulators():
    """The table that answers size checks without a simulator agrees with ManiSkill's own envs (built here, in-process)."""
    from envs.task_spaces import KNOWN_SPACES, TaskSpaces, UnknownTask, task_spaces
    from envs.worker import make_single_env

    for (env_id, mode), sizes in KNOWN_SPACES.items():
        env = make_single_env(env_id, mode, "sparse")
        try:
            assert TaskSpaces(env.observation_space.shape[-1], env.action_space.shape[-1]) == sizes, (env_id, mode)
        finally:
            env.close()
    # the registry snapshot that refuses unknown ids without importing ManiSkill is ManiSkill's registry
    from importlib import metadata

    from envs.task_spaces import HEADLESS_IDS, REGISTERED_IDS, REGISTRY_VERSION, live_registered_env_ids, registered_env_ids
    from envs.tasks import HEADLESS_VARIANTS

    assert set(HEADLESS_IDS) == {headless for headless, _ in HEADLESS_VARIANTS.values()}
    assert registered_env_ids() == live_registered_env_ids()
    if metadata.version("mani_skill") == REGISTRY_VERSION:
        assert REGISTERED_IDS <= set(live_registered_env_ids())
    # a registered task outside the table: no sizes before its env is built; an unregistered one is refused
    assert task_spaces("PickCube-v1", "pd_joint_pos_vel") is None
    with pytest.raises(UnknownTask, match=r"env id 'PickCub-v1' is not a registered ManiSkill task \(did you mean PickCube-v1"):
        task_spaces("PickCub-v1", "pd_joint_delta_pos")
