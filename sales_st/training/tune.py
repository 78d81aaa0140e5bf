"""Hyper-parameter search: Optuna's TPE sampler over the settings ``tune.space`` names, each
trial a Horovod-on-Spark training (:func:`sales_st.training.driver.run_training`) on the
built features, scored by its best validation loss (the loss on the validation origins).

The study lives in a SQLite file (``tune.storage``), so a killed search resumes: its finished
trials are kept, a trial the killed process left running is marked failed and queued again
with the same parameters (its training resumes after its last checkpoint: the same settings
give the same model id), and only the missing trials run.  One search per study file at a
time; a lock file beside the database enforces it, which is what makes "running" mean
"killed" at the next start.

Pruning (``tune.prune``, Optuna's MedianPruner) judges a trial's validation loss epoch by
epoch against the earlier trials' at the same epoch, while it trains: the ranks run inside
Spark tasks that cannot reach the study, so a watcher thread on the driver reads each
epoch's losses from the checkpoint state rank 0 writes (``<model dir>/checkpoints/
state.json``), reports them, and when the pruner says so creates ``<model dir>/STOP``, which
ends the training after the current epoch on every rank.  A pruned trial is never chosen as
best.

Each trial trains with ``train.calibrate`` and ``train.ablation`` off, into a model store of
its own beside the study (``<storage dir>/<study>/models``), so the production aliases never
move.  At the end the best trial's parameters are written as a YAML overlay
(``tune.overlay``, nested keys) to commit and select with ``--env``, and a summary of every
trial to ``<storage dir>/<study>-summary.json``.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import math
import os
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState
from pyspark.sql import SparkSession

from sales_st.config import Config, resolve_path
from sales_st.config.loader import with_overrides
from sales_st.config.sections import SearchParam
from sales_st.errors import ConfigError, DataError
from sales_st.features.spec import read_spec
from sales_st.runtime import tracking
from sales_st.storage.catalog import RunSummary
from sales_st.storage.files import json_exists, read_json, write_json

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class TrialRun:
    """What a trial's training reports: its model id and validation loss after each epoch."""

    model_id: str
    val_loss: list[float]


# Told each epoch's validation loss as soon as it is known; True asks the training to stop.
EpochHook = Callable[[int, float], bool]
# (the trial's config, its number, the epoch hook) -> what its training reported
TrainFn = Callable[[Config, int, EpochHook], TrialRun]


@dataclass
class TuneResult:
    study: str
    storage: str
    finished: int  # complete or pruned trials in the study
    ran: int  # trials this run started
    best: dict[str, Any] | None  # number, value, params, model_id of the best complete trial
    overlay: str | None  # the overlay written (None when no trial completed)
    summary_path: str
    summary: RunSummary


# ---- paths ----------------------------------------------------------------------------------


def storage_path(cfg: Config) -> str:
    """The study's SQLite file: ``tune.storage`` (relative: to ``paths.data_dir``), else
    ``<paths.runs>/tune/study.db``."""
    t = cfg.tune
    if t.storage:
        path = resolve_path(t.storage, cfg.data_dir)
    else:
        path = f"{cfg.path('runs')}/tune/study.db"
    if "://" in path:
        raise ConfigError(
            f"config key 'tune.storage' must lead to a local file (the study is a SQLite "
            f"database), found {path!r}; set tune.storage to a local path"
        )
    return path


def overlay_path(cfg: Config) -> str:
    """Where the best parameters go: ``tune.overlay``, relative to the repository root."""
    return resolve_path(cfg.tune.overlay, cfg.root or os.getcwd())


def study_dir(cfg: Config) -> str:
    """The trials' model store and the summary live beside the study file."""
    return os.path.dirname(storage_path(cfg))


# ---- the search -----------------------------------------------------------------------------


def run_tuning(spark: SparkSession, cfg: Config) -> TuneResult:
    """Run the missing trials of the configured study, each a Horovod training on Spark."""
    read_spec(cfg.path("features"))  # missing features: one clear error, no failed trial
    return tune(cfg, lambda trial_cfg, number, hook: train_trial(spark, trial_cfg, number, hook))


def train_trial(spark: SparkSession, cfg: Config, number: int, on_epoch: EpochHook) -> TrialRun:
    """One trial's training (pre-training on every series), aliased ``trial-<number>`` in the
    trials' model store; a model already trained with these settings is read, not retrained.
    Each epoch's validation loss reaches ``on_epoch`` while the training runs."""
    from sales_st.training.driver import run_training

    watcher = EpochWatcher(on_epoch)
    try:
        result = run_training(
            spark,
            cfg,
            "pretrain",
            aliases=[f"trial-{number}"],
            on_start=watcher.start,
            register=False,  # a trial is a run of the study, not a model to publish
        )
    finally:
        watcher.stop()
    history = result.history
    if not history and json_exists(f"{result.model_dir}/history.json"):
        history = read_json(f"{result.model_dir}/history.json")
    return TrialRun(result.model_id, [float(v) for v in history.get("val_loss", [])])


class EpochWatcher:
    """Polls a training's checkpoint state (``<model dir>/checkpoints/state.json``, written
    by rank 0 after every epoch) from a driver thread: each new epoch's validation loss goes
    to the hook, and when the hook answers True the file ``<model dir>/STOP`` asks the ranks
    to end the training after their current epoch."""

    def __init__(self, hook: EpochHook, interval_s: float = 1.0):
        self.hook, self.interval_s = hook, interval_s
        self.seen = 0
        self.model_dir = ""
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, model_dir: str) -> None:
        self.model_dir = model_dir
        self._thread = threading.Thread(target=self._run, name="tune-epoch-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._done.wait(self.interval_s):
            try:
                self.poll()
            except Exception:  # a half-written state file: read it again next time
                log.debug("epoch watcher: state not readable yet", exc_info=True)

    def poll(self) -> None:
        from sales_st.training.worker import STOP_FILE

        path = f"{self.model_dir}/checkpoints/state.json"
        if not json_exists(path):
            return
        losses = read_json(path).get("history", {}).get("val_loss", [])
        for epoch in range(self.seen, len(losses)):
            if self.hook(epoch, float(losses[epoch])):
                write_json(f"{self.model_dir}/{STOP_FILE}", {"epoch": epoch + 1})
        self.seen = max(self.seen, len(losses))


def tune(cfg: Config, train: TrainFn) -> TuneResult:
    """Open (or create) the study, re-queue the trials a killed run left running, run trials
    until ``tune.trials`` have finished, then write the overlay and the summary."""
    t = cfg.tune
    db = storage_path(cfg)
    started = time.monotonic()
    with exclusive(f"{db}.lock"):
        study = open_study(cfg, db)
        requeue_interrupted(study)
        done = count_finished(study)
        todo = max(0, t.trials - done)
        log.info(
            "study %s (%s): %d of %d trials finished, %d to run",
            t.study,
            db,
            done,
            t.trials,
            todo,
        )
        if todo:
            models = os.path.join(study_dir(cfg), t.study, "models")
            study.optimize(objective(cfg, train, study, models), n_trials=todo)
        best = best_trial(study)
        overlay = None
        if best is not None:
            overlay = overlay_path(cfg)
            write_text_atomic(overlay, overlay_text(study, best))
        else:
            log.warning("study %s has no complete trial: no overlay written", t.study)
        summary = study_summary(study, db, overlay, time.monotonic() - started, todo)
        summary_path = os.path.join(study_dir(cfg), f"{t.study}-summary.json")
        write_json(summary_path, summary)
        tracked = tracking.current(cfg)  # the tune job's run; the trials' runs are its children
        tracked.log_dict(summary, "tune/summary.json")
        if overlay is not None:
            tracked.log_artifact(overlay, "tune")
        if best is not None:
            tracked.log_params({f"best.{k}": v for k, v in best.params.items()})
            tracked.log_metrics({"best_val_loss": best.value, "best_trial": best.number})
    finished = count_finished(study)
    if best is not None:
        log.info(
            "study %s: %d of %d trials finished (trials by state: %s); best trial %d: val loss "
            "%.4f with %s; overlay %s (add it to --env to train with it); summary %s",
            t.study,
            finished,
            t.trials,
            ", ".join(f"{n} {s.lower()}" for s, n in sorted(summary["states"].items())),
            best.number,
            best.value,
            format_params(best.params),
            overlay,
            summary_path,
        )
    return TuneResult(
        study=t.study,
        storage=db,
        finished=finished,
        ran=todo,
        best=summary["best"],
        overlay=overlay,
        summary_path=summary_path,
        summary=RunSummary(
            model_id=best.user_attrs.get("model_id") if best else None,
            details={
                "study": t.study,
                "storage": db,
                "trials_finished": finished,
                "trials_run": todo,
                "best_value": best.value if best else None,
                "best_params": best.params if best else {},
            },
        ),
    )


def open_study(cfg: Config, db: str) -> optuna.Study:
    """The study in ``db`` (created when missing): TPE sampler with ``tune.seed`` plus the
    number of trials the study already has, median pruner (or none), minimising the
    validation loss."""
    t = cfg.tune
    # Optuna's own lines: warnings only, through the root logger like the other libraries'
    # (the trial lines of this module say what its INFO lines would).
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    os.makedirs(os.path.dirname(db), exist_ok=True)
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.MedianPruner(
            n_startup_trials=t.prune_startup_trials, n_warmup_steps=t.prune_warmup_epochs
        )
        if t.prune
        else optuna.pruners.NopPruner()
    )
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    try:
        earlier = len(storage.get_all_trials(storage.get_study_id_from_name(t.study)))
    except KeyError:  # a new study
        earlier = 0
    return optuna.create_study(
        storage=storage,
        # seeded past the trials already drawn: a resumed search draws new points, where the
        # same seed would repeat the first search's random start-up draws
        sampler=optuna.samplers.TPESampler(
            seed=t.seed + earlier, n_startup_trials=t.startup_trials
        ),
        pruner=pruner,
        study_name=t.study,
        direction="minimize",
        load_if_exists=True,
    )


@contextmanager
def exclusive(lock: str) -> Iterator[None]:
    """Hold an exclusive lock on ``lock`` (released by the OS when the process dies)."""
    os.makedirs(os.path.dirname(lock), exist_ok=True)
    with open(lock, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataError(
                f"another tune job is running this study ({lock} is locked): wait for it to "
                "end, or give this search its own tune.storage"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def requeue_interrupted(study: optuna.Study) -> list[int]:
    """Mark the trials left running by a killed search as failed and queue each again with
    its parameters; the numbers of those trials.  Only safe under :func:`exclusive`."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        study.tell(trial.number, state=TrialState.FAIL)
        if trial.params:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        log.warning(
            "trial %d was left running by a killed search: marked failed%s",
            trial.number,
            ", queued again with the same parameters" if trial.params else "",
        )
    return [trial.number for trial in stale]


def count_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return min(complete, key=lambda t: math.inf if t.value is None else t.value, default=None)


def suggest(trial: optuna.Trial, name: str, p: SearchParam) -> Any:
    if p.type == "categorical":
        return trial.suggest_categorical(name, list(p.choices))
    if p.type == "int":
        return trial.suggest_int(name, int(p.low), int(p.high), log=p.log)
    return trial.suggest_float(name, p.low, p.high, log=p.log)


def objective(
    cfg: Config, train: TrainFn, study: optuna.Study, models: str
) -> Callable[[optuna.Trial], float]:
    """The function Optuna calls per trial: draw the parameters, train, report each epoch's
    validation loss to the pruner, return the best."""
    t = cfg.tune

    def run(trial: optuna.Trial) -> float:
        params = {name: suggest(trial, name, p) for name, p in t.space.items()}
        trial_cfg = with_overrides(
            cfg,
            {**params, "paths.models": models, "train.calibrate": False, "train.ablation": False},
            source=f"tune trial {trial.number}",
        )
        retry = trial.user_attrs.get("retry_of")
        log.info(
            "trial %d (%d of %d)%s: %s",
            trial.number,
            count_finished(study) + 1,
            t.trials,
            f", again for killed trial {retry}" if retry is not None else "",
            format_params(params),
        )
        reported: dict[int, float] = {}
        pruned_at: list[int] = []

        def on_epoch(epoch: int, value: float) -> bool:
            """Report an epoch's loss once; True (stop the training) once pruned."""
            if epoch not in reported and math.isfinite(value):
                reported[epoch] = value
                trial.report(value, epoch)
                if not pruned_at and trial.should_prune():
                    pruned_at.append(epoch)
                    log.info(
                        "trial %d: val loss %.4f at epoch %d is worse than the earlier "
                        "trials' median there: pruned, its training stops",
                        trial.number,
                        value,
                        epoch + 1,
                    )
            return bool(pruned_at)

        started = time.monotonic()
        out = train(trial_cfg, trial.number, on_epoch)
        seconds = time.monotonic() - started
        trial.set_user_attr("model_id", out.model_id)
        trial.set_user_attr("val_loss", [v if math.isfinite(v) else None for v in out.val_loss])
        trial.set_user_attr("seconds", round(seconds, 1))
        finite = [(e, v) for e, v in enumerate(out.val_loss) if math.isfinite(v)]
        if not finite:
            log.warning(
                "trial %d: no finite validation loss (%s): the trial fails", trial.number, out
            )
            return float("nan")  # Optuna records the trial as failed
        for epoch, value in finite:  # the epochs the watcher had not seen yet
            if on_epoch(epoch, value):
                break
        if pruned_at:
            epoch = pruned_at[0]
            trial.set_user_attr("pruned_at_epoch", epoch + 1)
            log.info(
                "trial %d pruned at epoch %d after %d epochs (%.0f s, model %s)",
                trial.number,
                epoch + 1,
                len(out.val_loss),
                seconds,
                out.model_id,
            )
            raise optuna.TrialPruned(f"epoch {epoch + 1}: val loss {reported[epoch]:.4f}")
        best_epoch, best = min(finite, key=lambda ev: ev[1])
        log.info(
            "trial %d: best val loss %.4f at epoch %d of %d (%.0f s, model %s)",
            trial.number,
            best,
            best_epoch + 1,
            len(out.val_loss),
            seconds,
            out.model_id,
        )
        return best

    return run


# ---- outputs --------------------------------------------------------------------------------


def format_params(params: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def nested(params: dict[str, Any]) -> dict[str, Any]:
    """{"model.units": 32} -> {"model": {"units": 32}}: the shape of a config overlay."""
    out: dict[str, Any] = {}
    for key, value in sorted(params.items()):
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def overlay_text(study: optuna.Study, best: FrozenTrial) -> str:
    """The overlay file: a header saying where the values came from, then the nested keys."""
    when = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    header = [
        f"Best parameters of the tuning study '{study.study_name}' (jobs/tune.py, {when}):",
        f"the best of {count_finished(study)} finished trials: trial {best.number}, validation "
        f"loss {best.value:.6g}, model {best.user_attrs.get('model_id', '?')}.",
        "Written by the tune job; select it with --env (e.g. --env local,tuned): its keys",
        "override those of the overlays listed before it.",
    ]
    body = yaml.safe_dump(nested(best.params), sort_keys=True, default_flow_style=False)
    return "".join(f"# {line}\n" for line in header) + body


def write_text_atomic(path: str, text: str) -> None:
    """Write a local text file through a temporary file and a rename: never half-written."""
    parent = os.path.dirname(path) or "."
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def study_summary(
    study: optuna.Study, db: str, overlay: str | None, wall_s: float, ran: int
) -> dict[str, Any]:
    """Every trial (state, value, parameters, model, per-epoch validation loss, timings), the
    counts by state and the best trial."""
    trials = study.get_trials(deepcopy=False)
    best = best_trial(study)
    rows = [
        {
            "number": t.number,
            "state": t.state.name,
            "value": _finite(t.value) if t.state in FINISHED else None,
            "params": t.params,
            "model_id": t.user_attrs.get("model_id"),
            "val_loss": t.user_attrs.get("val_loss"),
            "pruned_at_epoch": t.user_attrs.get("pruned_at_epoch"),
            "retry_of": t.user_attrs.get("retry_of"),
            "started": t.datetime_start,
            "finished": t.datetime_complete,
            "seconds": t.user_attrs.get("seconds"),  # its training (none for a killed one)
        }
        for t in trials
    ]
    return {
        "study": study.study_name,
        "storage": db,
        "direction": "minimize validation loss",
        "states": dict(Counter(t.state.name for t in trials)),
        "best": (
            {
                "number": best.number,
                "value": best.value,
                "params": best.params,
                "model_id": best.user_attrs.get("model_id"),
            }
            if best
            else None
        ),
        "overlay": overlay,
        "trials": rows,
        "trials_run_now": ran,
        "wall_seconds": {
            "this_run": round(wall_s, 1),
            "all_trials": round(sum(float(t.user_attrs.get("seconds", 0.0)) for t in trials), 1),
        },
    }
