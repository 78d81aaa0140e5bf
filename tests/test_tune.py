"""Hyper-parameter search: the study's bookkeeping with a stand-in training (fast), and the tune
job killed in the middle of a 3-trial study on the tiny panel and run again (real Horovod)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psutil
import pytest
from optuna.trial import TrialState

from sales_st.config import Config, load_config
from sales_st.errors import ConfigError, DataError
from sales_st.training.tune import (
    EpochWatcher,
    TrialRun,
    exclusive,
    open_study,
    overlay_path,
    storage_path,
    study_dir,
    suggest,
    tune,
)
from tests.conftest import CONF, ROOT, TINY, make_config

PY = sys.executable
SPACE = (
    "tune.space={model.dropout: {low: 0.0, high: 0.3}, "
    "train.learning_rate: {low: 0.001, high: 0.01, log: true}}"
)


def conf_copy(tmp_path: Path) -> Path:
    """A copy of conf/, so that the overlay the job writes (conf/tuned.yaml) stays in tmp."""
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    return conf


def config(tmp_path: Path, *overrides: str) -> Config:
    conf = conf_copy(tmp_path)
    return load_config(conf, "local", [f"paths.data_dir={tmp_path / 'data'}", *overrides])


def by_dropout(cfg: Config, number: int, on_epoch) -> TrialRun:
    """A stand-in training of two epochs whose validation loss follows dropout; it tells the
    hook after each epoch and stops when asked, as the real training does."""
    d = cfg.model.dropout
    losses: list[float] = []
    for value in (d + 0.5, d):
        losses.append(value)
        if on_epoch(len(losses) - 1, value):
            break
    return TrialRun(f"model-{number}", losses)


def load(cfg: Config) -> optuna.Study:
    return optuna.load_study(study_name=cfg.tune.study, storage=f"sqlite:///{storage_path(cfg)}")


def test_median_pruning_on_the_epoch_losses_and_the_overlay(tmp_path):
    cfg = config(
        tmp_path,
        "tune.trials=3",
        "tune.space={model.dropout: {low: 0.0, high: 1.0}}",
        "tune.prune_startup_trials=2",
        "tune.prune_warmup_epochs=0",
    )
    study = open_study(cfg, storage_path(cfg))
    for d in (0.1, 0.2, 0.9):  # the third is worse than the median at epoch 1: pruned
        study.enqueue_trial({"model.dropout": d})
    out = tune(cfg, by_dropout)

    trials = load(cfg).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 + [TrialState.PRUNED]
    assert [t.value for t in trials[:2]] == [0.1, 0.2]
    assert trials[2].user_attrs["pruned_at_epoch"] == 1
    assert (out.finished, out.ran) == (3, 3)
    assert out.best == {
        "number": 0,
        "value": 0.1,
        "params": {"model.dropout": 0.1},
        "model_id": "model-0",
    }
    # the overlay is a config overlay of the conf directory: --env local,tuned applies it
    assert out.overlay == overlay_path(cfg) == str(tmp_path / "conf" / "tuned.yaml")
    tuned = load_config(tmp_path / "conf", "local,tuned")
    assert tuned.model.dropout == 0.1 and tuned.model.units == cfg.model.units
    summary = json.loads(Path(out.summary_path).read_text())
    assert summary["states"] == {"COMPLETE": 2, "PRUNED": 1}
    # the pruned trial's training stopped after its first epoch
    assert [r["val_loss"] for r in summary["trials"]] == [[0.6, 0.1], [0.7, 0.2], [1.4]]
    assert os.path.dirname(out.summary_path) == study_dir(cfg)

    again = tune(cfg, lambda c, n, h: pytest.fail("a finished study trains nothing"))
    assert (again.finished, again.ran, again.best) == (3, 0, out.best)


def test_a_trial_left_running_is_failed_and_run_again_with_its_parameters(tmp_path):
    cfg = config(tmp_path, "tune.trials=2", "tune.space={model.dropout: {low: 0.0, high: 0.3}}")
    study = open_study(cfg, storage_path(cfg))
    study.enqueue_trial({"model.dropout": 0.05})
    study.enqueue_trial({"model.dropout": 0.25})
    first = study.ask()
    study.tell(first, 0.05 + first.suggest_float("model.dropout", 0.0, 0.3))
    killed = study.ask()  # a process killed while this trial trained leaves it RUNNING
    killed.suggest_float("model.dropout", 0.0, 0.3)

    seen: list[tuple[int, float]] = []

    def train(c: Config, n: int, on_epoch) -> TrialRun:
        seen.append((n, c.model.dropout))
        return by_dropout(c, n, on_epoch)

    out = tune(cfg, train)
    assert seen == [(2, 0.25)]  # only the interrupted trial, with its parameters
    trials = load(cfg).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[2].user_attrs["retry_of"] == 1
    assert (out.finished, out.best["number"]) == (2, 0)


def draws_of_two_processes(cfg: Config) -> list[tuple]:
    """The parameters of two trials in each of two processes, one after the other, that
    open the same study file."""
    drawn = []
    for _ in range(2):
        study = open_study(cfg, storage_path(cfg))
        for _ in range(2):
            trial = study.ask()
            params = {name: suggest(trial, name, p) for name, p in cfg.tune.space.items()}
            study.tell(trial, 0.1)
            drawn.append(tuple(sorted(params.items())))
    return drawn


def test_a_resumed_study_draws_new_points_not_the_first_search_again(tmp_path):
    """Each process opens the study with a sampler seeded past the trials it already has: a
    search resumed in its random start-up phase does not repeat the first one's draws."""
    drawn = draws_of_two_processes(config(tmp_path, "tune.startup_trials=10", SPACE))
    assert len(set(drawn)) == 4, drawn
    # and the same study history gives the same draws: a rerun of the whole is reproducible
    again = config(tmp_path / "again", "tune.startup_trials=10", SPACE)
    assert draws_of_two_processes(again) == drawn


def test_the_watcher_reports_each_epoch_once_and_asks_the_training_to_stop(tmp_path):
    from sales_st.storage.files import write_json

    calls: list[tuple[int, float]] = []

    def hook(epoch: int, value: float) -> bool:
        calls.append((epoch, value))
        return value > 1.5  # "prune" on the second epoch's loss

    mdir = tmp_path / "model"
    w = EpochWatcher(hook)
    w.model_dir = str(mdir)
    w.poll()  # no state yet: nothing to report
    write_json(f"{mdir}/checkpoints/state.json", {"history": {"val_loss": [1.0]}})
    w.poll()
    assert calls == [(0, 1.0)] and not (mdir / "STOP").exists()
    write_json(f"{mdir}/checkpoints/state.json", {"history": {"val_loss": [1.0, 2.0]}})
    w.poll()
    w.poll()
    assert calls == [(0, 1.0), (1, 2.0)]
    assert json.loads((mdir / "STOP").read_text()) == {"epoch": 2}


@pytest.mark.slow
def test_a_stop_request_ends_a_real_training_after_the_epoch(
    spark, tmp_path, tiny_cfg, tiny_features
):
    """The file the watcher writes stops both Horovod ranks after the current epoch."""
    from sales_st.training.driver import run_training

    cfg = dataclasses.replace(
        tiny_cfg,
        paths=dataclasses.replace(tiny_cfg.paths, models=str(tmp_path / "models")),
        train=dataclasses.replace(tiny_cfg.train, epochs=3, calibrate=False, ablation=False),
        model=dataclasses.replace(tiny_cfg.model, spatial=False),  # traces faster; same stop
    )
    out = run_training(
        spark,
        cfg,
        "pretrain",
        on_start=lambda mdir: Path(mdir, "STOP").write_text("{}"),
    )
    meta = json.loads(Path(out.model_dir, "model.json").read_text())
    assert meta["stopped_on_request"] is True and meta["status"] == "complete"
    assert meta["epochs_trained"] == 1 and len(out.history["val_loss"]) == 1
    assert {r["epochs_run"] for r in out.results} == {1}  # both ranks stopped


def test_one_search_per_study_file(tmp_path):
    lock = str(tmp_path / "study.db.lock")
    with exclusive(lock), pytest.raises(DataError, match="another tune job"), exclusive(lock):
        pass
    with exclusive(lock):  # released
        pass


@pytest.mark.parametrize(
    "override, key",
    [
        ("tune.space={paths.models: {type: categorical, choices: [a]}}", "tune.space.paths.models"),
        ("tune.space={model.units: {type: float, low: 8, high: 64}}", "model.units"),
        ("tune.space={train.learning_rate: {low: 0.0, high: 0.1, log: true}}", "log scale"),
        ("tune.space={model.units: {type: categorical}}", "needs choices"),
        ("tune.trials=0", "tune.trials"),
    ],
)
def test_a_bad_search_space_is_a_config_error_naming_the_key(tmp_path, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        make_config(tmp_path, override)


# ---- the job, killed and resumed, with real trainings -----------------------------------------


def states(db: Path) -> list[tuple[int, str]]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return con.execute("SELECT number, state FROM trials ORDER BY number").fetchall()
    except sqlite3.OperationalError:  # not created yet, or busy: ask again
        return []


def running_params(db: Path) -> int:
    """How many parameters the running trials have drawn so far (0 while none runs)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return con.execute(
                "SELECT count(*) FROM trial_params p JOIN trials t ON p.trial_id = t.trial_id "
                "WHERE t.state = 'RUNNING'"
            ).fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the job's process group and every process it started (the Horovod ranks run
    under the Spark JVM and may have left the group)."""
    children = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGKILL)
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=60)


@pytest.mark.slow
def test_tune_resumes_a_killed_three_trial_study(tmp_path, tiny_cfg, tiny_features):
    conf = conf_copy(tmp_path)
    data = tmp_path / "data"
    args = [
        PY,
        "jobs/tune.py",
        "--conf",
        str(conf),
        "--env",
        "local",
        f"paths.data_dir={data}",  # a metastore of its own: the test session holds the other
        *TINY,
        f"paths.features={tiny_cfg.path('features')}",
        'spark.conf={"spark.sql.shuffle.partitions": "2", "spark.driver.memory": "2g", '
        '"spark.ui.enabled": "false"}',
        "train.epochs=2",
        "model.units=8",
        "model.decoder_units=8",
        # what is tested is the study's kill and resume: the temporal-only network traces
        # in two thirds of the fused one's time
        "model.spatial=false",
        "tune.trials=3",
        "tune.startup_trials=2",
        SPACE,
    ]
    cfg = load_config(conf, "local", args[6:])
    db = Path(storage_path(cfg))
    log = open(tmp_path / "first.log", "w")
    job = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and job.poll() is None:
            seen = dict(states(db))
            # the first trial is done and the second has drawn its two parameters (it is
            # training): kill it now.  Killed between its creation and its draws, a trial
            # has nothing to run again with, and is only marked failed.
            if (
                "COMPLETE" in seen.values()
                and "RUNNING" in seen.values()
                and running_params(db) == 2
            ):
                break
            time.sleep(0.5)
        assert job.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    finally:
        kill_tree(job)
    assert states(db) == [(0, "COMPLETE"), (1, "RUNNING")]  # nobody closed the killed trial
    first = load(cfg).trials[0]

    again = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    (tmp_path / "second.log").write_text(again.stderr)
    assert again.returncode == 0, again.stderr[-3000:]

    trials = load(cfg).trials
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 3
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    kept = trials[0]  # the trial finished before the kill is kept, not trained again
    assert (kept.state, kept.value, kept.params, kept.datetime_start) == (
        TrialState.COMPLETE,
        first.value,
        first.params,
        first.datetime_start,
    )
    assert "trial 0 (" not in again.stderr  # the rerun logged no start of trial 0
    assert trials[1].state == TrialState.FAIL
    assert trials[2].user_attrs["retry_of"] == 1 and trials[2].params == trials[1].params
    assert len(trials) == 4

    best = min((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    tuned = load_config(conf, "local,tuned", args[6:])
    assert tuned.model.dropout == best.params["model.dropout"]
    assert tuned.train.learning_rate == best.params["train.learning_rate"]
    assert tuned.model.units == 8  # only the searched keys are in the overlay
    summary = json.loads(Path(study_dir(cfg), "sales_st-summary.json").read_text())
    assert summary["best"]["number"] == best.number
    assert summary["best"]["model_id"] == best.user_attrs["model_id"]
