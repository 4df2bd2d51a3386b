"""orchestrator.analysis on a real (tiny) Ray Tune experiment.

The trainable reports made-up but realistic rows (the analysis is under test, not the simulator):
2 estimators x 2 update rules x 3 seeds, iterations 0..4, evaluations at 0, 2 and 4, and one trial that
raises at iteration 3.  Success at an evaluation is ``0.5 + gain(cell) * it / 4 + 0.02 * (seed - 2)``, so
every summary number below can be worked out by hand.
"""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import MISSING, fields
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from orchestrator.analysis import analyze, merge
from orchestrator.results_frame import summarize
from orchestrator.rundir import NotAnExperimentError, load_experiment


def load_results(run_dir):
    return load_experiment(run_dir).results

GAINS = {"gae+ppo": 0.2, "gae+awr": 0.3, "mc+ppo": 0.3, "mc+awr": 0.45}
BATCH = 400  # finetuning env steps per iteration
MC_COST = 11  # simulator steps per env step with MC re-rollouts


def _make_trainable():
    """The trainable, built in a function: Ray then ships it to the workers by value (the test module is not
    importable there)."""

    def trainable(config):
        from ray import tune

        est, upd, seed = config["estimator"], config["update"], config["seed"]
        gain = {"gae+ppo": 0.2, "gae+awr": 0.3, "mc+ppo": 0.3, "mc+awr": 0.45}[f"{est}+{upd}"]
        for it in range(5):
            if (est, upd, seed) == ("gae", "awr", 3) and it == 3:
                raise RuntimeError("simulated divergence: NaN in policy loss")
            row = {"iteration": it, "charts/env_steps": 400 * it, "charts/sim_steps": 400 * it * (11 if est == "mc" else 1),
                   "time/total": 2.0 * it}
            if it > 0:
                row.update({"time/rollout": 0.5, "time/estimate": 0.9 if est == "mc" else 0.1, "time/update": 0.3,
                            "charts/advantage_mean": 0.01 * it, "charts/advantage_std": 1.0, "charts/pos_ratio": 0.5,
                            "losses/policy_loss": -0.1 * it})
            if it % 2 == 0:
                row["eval/success_rate"] = 0.5 + gain * it / 4 + 0.02 * (seed - 2)
                row["eval/success_rate_stochastic"] = row["eval/success_rate"] - 0.1
                if it > 0:
                    row["quality/spearman"] = 0.99 if est == "mc" else 0.9
            tune.report(row)

    return trainable


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    ray = pytest.importorskip("ray")
    from ray import tune

    from algorithms.config import FinetuneConfig

    # A realistic param_space: every flat FinetuneConfig field at its default, the grid on top.
    base = {f.name: f.default for f in fields(FinetuneConfig) if f.default is not MISSING}
    space = {**base, "estimator": tune.grid_search(["gae", "mc"]), "update": tune.grid_search(["ppo", "awr"]),
             "seed": tune.grid_search([1, 2, 3]),
             # a per-method setting (as orchestrator.tune_runner resolves them): varies, but must not split cells
             "update_epochs": tune.sample_from(lambda spec: 200 if spec.config.update == "awr" else 4)}
    storage = tmp_path_factory.mktemp("tune")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        # reuse_actors: one worker process runs trial after trial, which halves the wall time on 2 CPUs.
        tuner = tune.Tuner(_make_trainable(), param_space=space, tune_config=tune.TuneConfig(reuse_actors=True), run_config=tune.RunConfig(
            name="grid", storage_path=str(storage), verbose=0, failure_config=tune.FailureConfig(max_failures=0)))
        grid = tuner.fit()
        assert len(grid.errors) == 1
    finally:
        ray.shutdown()
    return storage / "grid"


def _success(cell: str, seed: int, it: int) -> float:
    return 0.5 + GAINS[cell] * it / 4 + 0.02 * (seed - 2)


def test_frame_is_one_row_per_trial_and_iteration(run_dir):
    exp = load_experiment(run_dir)
    frame = exp.results
    assert len(exp.trials) == 12
    assert exp.trials["status"].value_counts().to_dict() == {"TERMINATED": 11, "ERROR": 1}
    assert len(frame) == 11 * 5 + 3  # the failed trial reported iterations 0..2
    assert not frame.duplicated(["trial_id", "iteration"]).any()
    for col in ("trial_id", "status", "error", "config/estimator", "config/update", "config/seed", "config/awr_beta",
                "iteration", "eval/success_rate", "charts/env_steps", "charts/sim_steps", "quality/spearman"):
        assert col in frame.columns, col
    assert "hostname" not in frame.columns and "config" not in frame.columns  # Ray bookkeeping dropped
    failed = frame[frame["status"] == "ERROR"]
    assert set(failed["config/estimator"] + "+" + failed["config/update"]) == {"gae+awr"}
    assert set(failed["config/seed"]) == {3} and sorted(failed["iteration"]) == [0, 1, 2]
    assert set(failed["error"]) == {"RuntimeError: simulated divergence: NaN in policy loss"}
    assert set(frame.loc[frame["status"] == "TERMINATED", "error"]) == {""}
    row = frame[(frame["config/estimator"] == "mc") & (frame["config/update"] == "awr") & (frame["config/seed"] == 1)
                & (frame["iteration"] == 4)].iloc[0]
    assert row["eval/success_rate"] == pytest.approx(_success("mc+awr", 1, 4))
    assert row["charts/sim_steps"] == 4 * BATCH * MC_COST
    assert len(load_results(run_dir)) == len(frame)


def test_summary_hand_checked(run_dir):
    s = summarize(load_results(run_dir), target=0.9, reps=2000)
    # Constant config fields, and update_epochs (fixed per update rule), are not cell columns.
    assert s.cell_columns == ["config/estimator", "config/update"]
    assert s.table["cell"].tolist() == ["gae+awr", "gae+ppo", "mc+awr", "mc+ppo"]
    t = s.table.set_index("cell")

    mc = t.loc["mc+awr"]  # seeds 1..3: start .48/.50/.52, it 2: .705/.725/.745, final .93/.95/.97
    assert (mc["runs"], mc["finished"], mc["failed"], mc["n"]) == (3, 3, 0, 3)
    assert mc["start_iqm"] == pytest.approx(0.50)
    assert mc["final_iqm"] == pytest.approx(0.95)  # 3 runs: IQM trims nothing
    assert mc["peak_iqm"] == pytest.approx(0.95)
    # 3 runs (< 5): a Student-t interval, 0.95 +- t(0.975, 2) * 0.02 / sqrt(3), not the degenerate percentile bootstrap
    half = 4.302652729911275 * 0.02 / np.sqrt(3)
    assert mc["final_method"] == "t" and (mc["final_low"], mc["final_high"]) == pytest.approx((0.95 - half, min(0.95 + half, 1.0)))
    assert mc["auc_iqm"] == pytest.approx((0.50 + 2 * 0.725 + 0.95) / 4)  # trapezoid over 0/800/1600 steps
    assert (mc["reached"], mc["steps_to_target"]) == (3, 1600)  # 90% first met at iteration 4
    assert mc["sim_steps"] == 1600 * MC_COST and mc["sim_per_env_step"] == MC_COST
    assert mc["wall_s"] == pytest.approx(8.0) and mc["estimate_s"] == pytest.approx(4 * 0.9)

    gae_awr = t.loc["gae+awr"]  # the seed-3 run crashed: counted, but not in the statistics
    assert (gae_awr["runs"], gae_awr["finished"], gae_awr["failed"], gae_awr["n"]) == (3, 2, 1, 2)
    assert gae_awr["final_iqm"] == pytest.approx((0.78 + 0.80) / 2)
    assert (gae_awr["reached"], np.isinf(gae_awr["steps_to_target"])) == (0, True)

    imp = s.improvement.set_index(["x", "y"])
    assert imp.loc[("mc+awr", "gae+ppo"), "p"] == 1.0 and imp.loc[("gae+ppo", "mc+awr"), "p"] == 0.0
    # mc+ppo finals .78/.80/.82 vs gae+awr .78/.80: 0.5 + (1 + 0.5) + 2 = 4 of 6 pairs.
    assert imp.loc[("mc+ppo", "gae+awr"), "p"] == pytest.approx(4 / 6)
    assert imp.loc[("gae+awr", "mc+ppo"), "p"] == pytest.approx(2 / 6)
    assert len(s.improvement) == 4 * 3

    q = s.quality.set_index("estimator")
    assert q.loc["mc", "quality/spearman"] == pytest.approx(0.99) and q.loc["mc", "measurements"] == 12
    assert q.loc["gae", "measurements"] == 11  # the crashed run measured once before failing
    by_it = s.quality_by_iteration.set_index(["estimator", "iteration"])
    assert by_it.loc[("mc", 2), "runs"] == 6 and by_it.loc[("gae", 4), "runs"] == 5  # the crashed run stopped at 3
    assert by_it.loc[("mc", 4), "rho_mean"] == pytest.approx(0.99)

    c = s.curves[s.curves["cell"] == "mc+awr"]
    assert c["env_steps"].tolist() == [0, 800, 1600]
    np.testing.assert_allclose(c["iqm"], [0.50, 0.725, 0.95])


def test_a_swept_field_splits_cells(run_dir):
    frame = load_results(run_dir)
    assert set(frame.loc[frame["config/update"] == "awr", "config/update_epochs"]) == {200}
    swept = frame.assign(**{"config/awr_beta": np.where(frame["config/seed"] == 1, 0.5, 1.0)})
    s = summarize(swept, reps=200)
    assert s.cell_columns == ["config/estimator", "config/update", "config/awr_beta"]
    assert s.table["cell"].tolist()[:2] == ["gae+awr awr_beta=0.5", "gae+awr awr_beta=1.0"]
    assert s.table.set_index("cell").loc["mc+awr awr_beta=1.0", "n"] == 2


def _is_png(path: Path) -> bool:
    import matplotlib.image

    img = matplotlib.image.imread(path)
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


def test_analyze_writes_tables_figures_and_report(run_dir, tmp_path):
    out = analyze(run_dir, tmp_path / "analysis", reps=1000)
    assert len(pd.read_csv(out.results_csv)) == 58
    assert out.results_parquet is not None and len(pd.read_parquet(out.results_parquet)) == 58
    assert len(pd.read_csv(out.summary_csv)) == 4
    names = sorted(p.name for p in out.figures)
    assert names == ["aggregate.png", "compute_cost.png", "curves_by_estimator.png", "curves_by_update.png",
                     "estimator_quality.png", "performance_profile.png"]
    assert all(_is_png(p) and p.with_suffix(".svg").read_text().lstrip().startswith("<?xml") for p in out.figures)

    md = _check_report(out.out_dir)
    assert "| cell | runs (ok/failed/unfinished) | n | CI |" in md
    mc_row = next(line for line in md.splitlines() if line.startswith("| mc+awr | 3 (3/0/0) | 3 | Student-t |"))
    assert "| 95.0 [" in mc_row and "| 1,600 |" in mc_row
    assert "| gae+awr | 3 (2/1/0) | 2 | Student-t |" in md
    assert "P(row > column)" in md and "1.00 [1.00, 1.00]" in md
    assert "| mc | 12 | 6 | 0.990 [0.990, 0.990] |" in md  # quality table: rho per run, then over runs
    assert "| gae | 2 | 6 | 0.900 [0.900, 0.900] |" in md  # and per measured iteration
    failures = md.split("## Failures")[1]
    assert "RuntimeError: simulated divergence: NaN in policy loss" in failures and "gae+awr" in failures
    for name in names:
        assert f"]({name})" in md
    assert "Unfinished" not in md


def _trial_dir(run_dir: Path, est: str, upd: str, seed: int) -> Path:
    for d in run_dir.iterdir():
        p = d / "params.json"
        if p.is_file():
            cfg = json.loads(p.read_text())
            if (cfg["estimator"], cfg["update"], cfg["seed"]) == (est, upd, seed):
                return d
    raise AssertionError(f"no trial {est}+{upd} seed {seed}")


def test_partial_interrupted_experiment(run_dir, tmp_path):
    """What an interrupted driver leaves: a torn result.json, a trial still RUNNING in the state file, a trial
    the state never recorded, and a retried trial whose result.json repeats iterations.  (A trial that never
    reported is in test_a_grid_in_which_no_trial_reported.)"""
    part = tmp_path / "grid"
    shutil.copytree(run_dir, part)
    cut = _trial_dir(part, "mc", "awr", 3)
    lines = (cut / "result.json").read_text().splitlines()
    (cut / "result.json").write_text("\n".join(lines[:3]) + "\n" + lines[3][: len(lines[3]) // 2])
    unrecorded = _trial_dir(part, "gae", "ppo", 1)
    retried = _trial_dir(part, "mc", "ppo", 2)
    rows = [json.loads(line) for line in (retried / "result.json").read_text().splitlines()]
    redo = [dict(r, **{"eval/success_rate": 0.99}) if "eval/success_rate" in r else dict(r) for r in rows[3:]]
    (retried / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows + redo))  # restart from checkpoint at 2

    state_file = sorted(part.glob("experiment_state-*.json"))[-1]
    state = json.loads(state_file.read_text())
    kept = []
    for entry in state["trial_data"]:
        trial = json.loads(entry[0])
        if trial["relative_logdir"] == cut.name:
            trial["status"] = "RUNNING"
            entry = [json.dumps(trial), entry[1]]
        if trial["relative_logdir"] != unrecorded.name:
            kept.append(entry)
    state["trial_data"] = kept
    state_file.write_text(json.dumps(state))

    exp = load_experiment(part)
    status = exp.trials.set_index("trial_dir")["status"]
    # Tune's ExperimentAnalysis reads a trial its state saved as RUNNING as PENDING (not finished, to be resumed)
    assert status[cut.name] == "PENDING" and status[unrecorded.name] == "RUNNING"
    assert len(exp.trials) == 12
    f = exp.results
    # the torn 4th line and the 5th are recovered from progress.csv (Tune writes both files per report), with a warning
    assert sorted(f.loc[f["trial_dir"] == cut.name, "iteration"]) == [0, 1, 2, 3, 4]
    assert [w for w in exp.warnings if str(cut / "result.json") in w and "recovered 2 row(s) from progress.csv" in w]
    r = f[f["trial_dir"] == retried.name].sort_values("iteration")
    assert r["iteration"].tolist() == [0, 1, 2, 3, 4] and r["eval/success_rate"].iloc[-1] == 0.99

    out = analyze(part, tmp_path / "out", reps=500, figures=False)
    t = out.summary.table.set_index("cell")
    assert (t.loc["mc+awr", "unfinished"], t.loc["mc+awr", "n"]) == (1, 3)
    assert t.loc["mc+awr", "final_iqm"] == pytest.approx(0.95)
    md = out.report.read_text()
    assert "## Unfinished trials" in md and md.count("| RUNNING |") == 1 and md.count("| PENDING |") == 1
    assert "## Warnings" in md and f"{part.name}/{cut.name}/result.json: 1 damaged line(s)" in md


def test_finished_only_leaves_out_a_trial_still_running(run_dir, tmp_path, capsys):
    """By default an unfinished trial enters with its latest evaluation as its final (a run in progress reads as a
    result); --finished-only leaves it out, says so, and keeps the failed trial in the Failures section."""
    from orchestrator.cli import main

    part = tmp_path / "grid"
    shutil.copytree(run_dir, part)
    cut = _trial_dir(part, "mc", "awr", 3)
    rows = (cut / "result.json").read_text().splitlines()
    (cut / "result.json").write_text("\n".join(rows[:3]) + "\n")  # iterations 0-2 reported, then the driver stopped
    state_file = sorted(part.glob("experiment_state-*.json"))[-1]
    state = json.loads(state_file.read_text())
    for i, entry in enumerate(state["trial_data"]):
        trial = json.loads(entry[0])
        if trial["relative_logdir"] == cut.name:
            state["trial_data"][i] = [json.dumps(dict(trial, status="PAUSED")), entry[1]]
    state_file.write_text(json.dumps(state))

    every = analyze(part, tmp_path / "every", reps=500, figures=False).summary.table.set_index("cell")
    assert (every.loc["mc+awr", "n"], every.loc["mc+awr", "unfinished"]) == (3, 1)
    assert every.loc["mc+awr", "final_iqm"] == pytest.approx((0.93 + 0.95 + 0.745) / 3)  # seed 3 "ends" at iteration 2
    main(["analyze", str(part), "--out", str(tmp_path / "done"), "--reps", "500", "--no-figures", "--finished-only"])
    captured = capsys.readouterr()
    assert "warning: 1 unfinished trial left out (finished_only)" in captured.err
    assert "mc+awr: n=2, final IQM 94.0%" in captured.out and "1 failed trial" in captured.out
    done = pd.read_csv(tmp_path / "done" / "summary.csv").set_index("cell")
    assert (done.loc["mc+awr", "n"], done.loc["mc+awr", "unfinished"]) == (2, 0)
    assert cut.name not in (tmp_path / "done" / "trials.csv").read_text()
    assert "## Failures" in (tmp_path / "done" / "report.md").read_text()
    from orchestrator.analysis import AnalysisError, drop_unfinished

    exp = load_experiment(part)
    with pytest.raises(AnalysisError, match="no trial has finished or failed yet"):
        drop_unfinished(exp.trials.assign(status="PAUSED"), exp.results)


def test_bad_run_dir_is_one_clear_line(run_dir, tmp_path, capsys):
    from orchestrator.cli import main

    with pytest.raises(NotAnExperimentError, match="RUN_DIR is not a Tune experiment directory"):
        load_results(tmp_path)
    # The storage folder above the experiment: the message names the experiment inside.
    with pytest.raises(NotAnExperimentError, match=r"pass .*grid"):
        load_results(run_dir.parent)
    with pytest.raises(SystemExit) as e:
        main(["analyze", str(tmp_path / "missing")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: RUN_DIR is not a Tune experiment directory") and "\n" not in err


def test_cli_prints_summary_and_report_path(run_dir, tmp_path, capsys):
    from orchestrator.cli import main

    main(["analyze", str(run_dir), "--out", str(tmp_path / "a"), "--reps", "500", "--no-figures"])
    out = capsys.readouterr().out
    assert "mc+awr: n=3, final IQM 95.0%" in out
    assert "1 failed trial" in out
    assert out.strip().splitlines()[-1] == f"report: {tmp_path / 'a' / 'report.md'}"


# ------------------------------------------------------------------------------------------ the report


SECTIONS = ("## Summary", "## Per seed", "## Hyperparameters", "## Sample efficiency", "## Performance profiles",
            "## Probability of improvement", "## Estimator quality", "## Compute cost", "## Failures")
# an absolute POSIX path: a '/' that starts a token (not a relative path's inner '/' nor a ratio like 3/0/0)
ABSOLUTE = re.compile(r"(?:^|[\s(\[`'\"|=:])/(?:[A-Za-z0-9_.+-]+/)+")


def _check_report(out_dir: Path) -> str:
    md = (out_dir / "report.md").read_text()
    for s in SECTIONS:
        assert s in md, s
    html = (out_dir / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and all(f"<h2>{s[3:]}" in html for s in SECTIONS)
    assert ABSOLUTE.search(md) is None, ABSOLUTE.search(md).group(0)
    assert ABSOLUTE.search(html.replace("</", "<")) is None
    tex = (out_dir / "summary.tex").read_text()
    assert "\\begin{tabular}" in tex and "\\bottomrule" in tex
    for link in re.findall(r"\]\(([^)]+)\)", md):  # every link is relative and points at a written file
        assert (out_dir / link).is_file(), link
    return md


def _export_subset(src: Path, dst: Path, seeds: set) -> Path:
    """An exported folder (results.csv + trials.csv) holding only some seeds' trials."""
    dst.mkdir()
    for name in ("results.csv", "trials.csv"):
        f = pd.read_csv(src / name, dtype={"trial_id": str})
        f[f["config/seed"].isin(seeds)].to_csv(dst / name, index=False)
    return dst


def test_report_for_one_seed_three_seeds_and_two_runs(run_dir, tmp_path):
    three = analyze(run_dir, tmp_path / "three", reps=500, figures=False)  # figures: test_analyze_writes_...
    md = _check_report(three.out_dir)
    assert "n = 2 to 3 runs per cell" in md and "**Below 5 seeds the IQM is the trimmed mean of too few runs**" in md
    assert "Student-t" in md and "| seed 1 | seed 2 | seed 3 |" in md
    assert "| estimator | gae, mc |" in md and "| update_epochs | 4, 200 |" in md  # swept / per-method fields
    assert "| num_envs |" in md and "| awr_beta |" in md  # fixed fields

    one = analyze(_export_subset(three.out_dir, tmp_path / "one-seed", {1}), tmp_path / "one", reps=500, figures=False)
    md = _check_report(one.out_dir)
    assert "n = 1 runs per cell" in md and "none (one run)" in md and "(exported results table)" in md
    assert one.summary.table.set_index("cell").loc["mc+awr", "final_iqm"] == pytest.approx(_success("mc+awr", 1, 4))

    copy = tmp_path / "grid-b"
    shutil.copytree(run_dir, copy)
    pooled = analyze([run_dir, copy], tmp_path / "pooled", reps=500, figures=False)
    md = _check_report(pooled.out_dir)
    mc = pooled.summary.table.set_index("cell").loc["mc+awr"]
    assert (mc["n"], mc["final_method"]) == (6, "percentile")  # the same cell of two runs: seeds pooled
    assert "percentile stratified bootstrap" in md and "2 run directories" in md
    assert pooled.warnings == ["24 trials of the merged runs repeat another run's config and seed; they are pooled as separate runs"]
    side = analyze([run_dir, copy], tmp_path / "side", reps=500, compare=True, figures=False)
    _check_report(side.out_dir)
    cells = side.summary.table["cell"].tolist()
    assert len(cells) == 8 and "mc+awr run=grid-b" in cells and "mc+awr run=grid" in cells
    # focused comparisons beyond 6 cells: per update rule across estimators, per estimator across rules
    assert set(side.summary.improvement["group"]) == {"update awr: estimators", "update ppo: estimators",
                                                      "estimator gae: update rules", "estimator mc: update rules"}


def _cut_off(run: Path, trial: str, reports: int) -> None:
    """Trial ``trial`` of ``run`` stopped after ``reports`` reports, as a run interrupted mid-trial leaves it."""
    for name in ("result.json", "progress.csv"):
        lines = (run / trial / name).read_text().splitlines()
        (run / trial / name).write_text("\n".join(lines[:reports + (name == "progress.csv")]) + "\n")
    for state_file in run.glob("experiment_state-*.json"):
        state = json.loads(state_file.read_text())
        for i, entry in enumerate(state["trial_data"]):
            t = json.loads(entry[0])
            if t["relative_logdir"] == trial:
                state["trial_data"][i] = [json.dumps({**t, "status": "RUNNING"}), entry[1]]
        state_file.write_text(json.dumps(state))


def _piece_of(run: Path, piece: Path, keep: tuple) -> None:
    """``piece``: a copy of ``run`` that holds the trials ``keep`` only (a grid --cells run)."""
    shutil.copytree(run, piece)
    for state_file in piece.glob("experiment_state-*.json"):
        state = json.loads(state_file.read_text())
        state["trial_data"] = [e for e in state["trial_data"] if json.loads(e[0])["relative_logdir"] in keep]
        state_file.write_text(json.dumps(state))
    for d in piece.iterdir():
        if (d / "params.json").is_file() and d.name not in keep:
            shutil.rmtree(d)


def test_a_grid_run_in_pieces_counts_each_trial_once(run_dir, tmp_path):
    """grid --cells: a trial that never started in the whole grid's run and ran in a piece's run is one run, and so
    is a trial cut off in the whole grid's run and restarted to its end in a piece's."""
    whole, piece = tmp_path / "grid", tmp_path / "grid-rest"
    shutil.copytree(run_dir, whole)
    moved = _trial_dir(whole, "mc", "awr", 3).name
    restarted = _trial_dir(whole, "mc", "ppo", 2).name
    _piece_of(whole, piece, (moved, restarted))
    for name in ("result.json", "progress.csv"):  # never reported there
        (whole / moved / name).unlink()
    _cut_off(whole, restarted, 2)
    out = analyze([whole, piece], tmp_path / "pooled", reps=200, figures=False)
    assert out.warnings == ["2 trials that never reported or did not finish in one run ran to a further point in another "
                            "(a grid run in pieces); only those copies count"]
    t = out.summary.table.set_index("cell")
    for cell in ("mc+awr", "mc+ppo"):
        assert (t.loc[cell, "n"], t.loc[cell, "unfinished"]) == (3, 0)
        assert t.loc[cell, "final_iqm"] == pytest.approx(np.mean([_success(cell, s, 4) for s in (1, 2, 3)]))
    md = out.report.read_text()  # the moved trial is no unfinished one, and the header counts it once
    assert "## Unfinished trials" not in md and "12 trials:" in md


def test_a_restart_under_way_counts_once_at_its_furthest_copy(run_dir, tmp_path):
    """A trial cut off in one run and restarted, still unfinished, in a piece's run: one run, the copy with the
    latest iteration (whichever run holds it), not two seeds."""
    whole, piece = tmp_path / "grid", tmp_path / "grid-mc"
    shutil.copytree(run_dir, whole)
    ahead_in_whole = _trial_dir(whole, "mc", "awr", 1).name
    ahead_in_piece = _trial_dir(whole, "mc", "ppo", 3).name
    _piece_of(whole, piece, (ahead_in_whole, ahead_in_piece))
    _cut_off(whole, ahead_in_whole, 4)  # iterations 0-3, evaluated at 0 and 2
    _cut_off(piece, ahead_in_whole, 2)  # evaluated at 0
    _cut_off(whole, ahead_in_piece, 2)
    _cut_off(piece, ahead_in_piece, 3)
    out = analyze([whole, piece], tmp_path / "pooled", reps=200, figures=False)
    assert len(out.warnings) == 1 and out.warnings[0].startswith(
        "2 unfinished copies of a trial restarted in another run are left out, the copy with the latest iteration counting: ")
    ids = {d: str(t) for d, t in zip(load_experiment(whole).trials["trial_dir"].map(lambda x: Path(x).name),
                                      load_experiment(whole).trials["trial_id"])}
    a, b = ids[ahead_in_whole], ids[ahead_in_piece]  # each left-out copy is named, with how far both copies got
    assert f"grid-mc:{a} (iteration 1) in favour of grid:{a} (iteration 3)" in out.warnings[0]
    assert f"grid:{b} (iteration 1) in favour of grid-mc:{b} (iteration 2)" in out.warnings[0]
    t = out.summary.table.set_index("cell")
    for cell, seed in (("mc+awr", 1), ("mc+ppo", 3)):
        assert (t.loc[cell, "n"], t.loc[cell, "unfinished"]) == (3, 1)
        finals = [_success(cell, s, 2 if s == seed else 4) for s in (1, 2, 3)]  # the further copy's last evaluation
        assert t.loc[cell, "final_iqm"] == pytest.approx(np.mean(finals))
    md = out.report.read_text()  # the unfinished trials listed are the counting copies, under the runs holding them
    unfinished = md.split("## Unfinished trials")[1].split("\n## ")[0]
    assert f"| grid | {a} |" in unfinished and f"| grid-mc | {b} |" in unfinished
    assert f"| grid-mc | {a} |" not in unfinished and f"| grid | {b} |" not in unfinished
    assert "_Not drawn (`analyze --no-figures`)._" in md and "_No final evaluations._" not in md


def test_a_run_recorded_before_a_config_field_existed_merges_with_its_default(run_dir, tmp_path):
    """The first copy of a restarted trial was recorded before a config field was added: the field reads as its
    default there, so the two copies are one trial (the further one counts), not two configs."""
    whole, piece = tmp_path / "grid", tmp_path / "grid-mc"
    shutil.copytree(run_dir, whole)
    trial = _trial_dir(whole, "mc", "awr", 1).name
    _piece_of(whole, piece, (trial,))
    _cut_off(whole, trial, 4)
    _cut_off(piece, trial, 2)
    old, new = load_experiment(whole), load_experiment(piece)
    old.trials = old.trials.drop(columns=["config/advantage_detrend"])  # as a run recorded before the field
    trials, results, warnings = merge([old, new], compare=False)
    assert len(trials) == 12 and not any("repeat" in w for w in warnings)
    kept = trials[trials["config/seed"].eq(1) & trials["config/estimator"].eq("mc") & trials["config/update"].eq("awr")]
    assert kept["trial_id"].str.startswith("grid:").tolist() == [True] and kept["config/advantage_detrend"].tolist() == [False]


def test_published_numbers_and_explicit_cell_labels(run_dir, tmp_path):
    pub = tmp_path / "published.yaml"
    pub.write_text("source: a paper\nsuccess:\n  mc16-expert+awr: {peak: 0.991, final: 0.991}\n"
                   "quality:\n  mc: {spearman: 0.5}\n  td: {spearman: 0.96}\n")
    export = tmp_path / "labelled"
    shutil.copytree(analyze(run_dir, tmp_path / "plain", reps=200, figures=False).out_dir, export)
    for name in ("results.csv", "trials.csv"):  # the lead's FinetuneConfig.cell: a label that names the cell
        f = pd.read_csv(export / name, dtype={"trial_id": str})
        f["config/cell"] = np.where((f["config/estimator"] == "mc") & (f["config/update"] == "awr"), "mc16-expert+awr", "")
        f.to_csv(export / name, index=False)
    out = analyze(export, tmp_path / "out", reps=200, published=pub, figures=False)
    md = _check_report(out.out_dir)
    assert "mc16-expert+awr" in out.summary.table["cell"].tolist()
    row = next(line for line in md.splitlines() if line.startswith("| mc16-expert+awr |"))
    assert row.endswith("| 99.1 | 99.1 |")  # published final, peak
    assert "| mc | 12 | 6 | 0.990 [0.990, 0.990] |" in md and md.count("| 0.50 |") == 1


# ------------------------------------------------------------------------------------------ bad input (issue 12)


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_grid_in_which_no_trial_reported(run_dir, tmp_path, capsys):
    """Every trial interrupted before its first report: a report that says so, not a TypeError."""
    from orchestrator.cli import main

    empty = tmp_path / "grid"
    shutil.copytree(run_dir, empty)
    for p in [*empty.glob("*/result.json"), *empty.glob("*/progress.csv")]:
        p.write_text("")
    before = _snapshot(empty)
    main(["analyze", str(empty), "--out", str(tmp_path / "out"), "--reps", "100", "--no-figures"])
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"report: {tmp_path / 'out' / 'report.md'}"
    md = _check_report(tmp_path / "out")
    assert "**No trial reported a result row**" in md and "| mc+awr | 3 (3/0/0) | 0 | - |" in md
    assert "| gae+awr | 3 (2/1/0) | 0 |" in md and "RuntimeError: simulated divergence" in md
    assert _snapshot(empty) == before


def test_torn_result_json_is_recovered_or_reported(run_dir, tmp_path, capsys):
    from orchestrator.cli import main

    part = tmp_path / "grid"
    shutil.copytree(run_dir, part)
    recovered, damaged = _trial_dir(part, "mc", "awr", 1), _trial_dir(part, "gae", "ppo", 2)
    for d in (recovered, damaged):  # a crash mid-write: the last line cut
        text = (d / "result.json").read_text().rstrip("\n")
        (d / "result.json").write_text(text[: len(text) - 40])
    csv = (damaged / "progress.csv").read_text().splitlines()
    (damaged / "progress.csv").write_text("\n".join(csv[:-1]) + "\n")  # its progress.csv lost the row too
    before = _snapshot(part)
    main(["analyze", str(part), "--out", str(tmp_path / "out"), "--reps", "100", "--no-figures"])
    err = capsys.readouterr().err
    assert f"warning: {recovered / 'result.json'}: 1 damaged line(s)" in err and "recovered 1 row(s) from progress.csv" in err
    assert f"warning: {damaged / 'result.json'}: 1 damaged line(s)" in err and "no later row in progress.csv to recover" in err
    frame = pd.read_csv(tmp_path / "out" / "results.csv")
    assert frame.groupby("trial_dir")["iteration"].max()[recovered.name] == 4  # the torn row came back from progress.csv
    assert frame.groupby("trial_dir")["iteration"].max()[damaged.name] == 3  # lost: the run enters with iteration 3
    md = _check_report(tmp_path / "out")
    assert "## Warnings" in md and f"grid/{damaged.name}/result.json" in md
    assert _snapshot(part) == before


@pytest.mark.parametrize("where", ["file", "below_file"])
def test_unwritable_out_is_one_line_before_any_work(run_dir, tmp_path, capsys, where):
    from orchestrator.cli import main

    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    out = blocker if where == "file" else blocker / "analysis"
    before = _snapshot(run_dir)
    with pytest.raises(SystemExit) as e:
        main(["analyze", str(run_dir), "--out", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --out {out} ") and "\n" not in err
    assert blocker.read_text() == "keep me" and _snapshot(run_dir) == before and not (run_dir / "analysis").exists()


def test_orchestrator_has_no_import_cycle():
    """Every import between orchestrator modules, also those inside functions: the graph has no cycle."""
    import ast

    pkg = Path(__file__).resolve().parent.parent / "orchestrator"
    graph = {}
    for path in pkg.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("orchestrator"):
                names = [node.module.split(".")[1]] if "." in node.module else [a.name for a in node.names]
                deps.update(names)
            elif isinstance(node, ast.Import):
                deps.update(a.name.split(".")[1] for a in node.names if a.name.startswith("orchestrator."))
        graph[path.stem] = deps & {p.stem for p in pkg.glob("*.py")}
    state = {}

    def visit(m, stack):
        state[m] = "open"
        for d in graph[m]:
            assert state.get(d) != "open", "import cycle: " + " -> ".join([*stack, m, d])
            if d not in state:
                visit(d, [*stack, m])
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m, [])


def test_a_spec_names_its_published_numbers(repo_root, tmp_path):
    from orchestrator.spec import SpecError, load_spec, parse_spec

    spec = load_spec(repo_root / "experiments" / "reference-subset.yaml", base_dir=repo_root)
    assert spec.published == str(repo_root / "experiments" / "published" / "reference-v2.yaml")
    assert spec.to_dict()["published"] == spec.published  # recorded in spec.resolved.json, where analyze finds it
    data = {**spec.to_dict(), "published": str(tmp_path / "missing.yaml")}
    with pytest.raises(SpecError, match="published: no such file"):
        parse_spec(data)


def test_launch_records_travel_with_the_export(run_dir, tmp_path):
    from orchestrator import launches

    grid = tmp_path / "grid"
    shutil.copytree(run_dir, grid)
    launches.record_launch(grid, "start")
    launches.record_end(grid, trials=12, finished=11, failed=1)
    first = analyze(grid, tmp_path / "export", reps=100, figures=False)
    again = analyze(first.out_dir, tmp_path / "again", reps=100, figures=False)  # the export alone, no Tune directory
    start = launches.read(grid)[0]
    for out in (first, again):
        md = out.report.read_text()
        assert f"| {start['time']} | start | " in md and "| 11/12 (1 failed) |" in md
    pd.testing.assert_frame_equal(again.summary.table, first.summary.table)
