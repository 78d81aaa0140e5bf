"""The training job's driver side: choose data, write the plan, run Horovod on Spark.

``run_training`` pre-trains on every series (``mode="pretrain"``) or fine-tunes a stored
model on a segment chosen by a SQL predicate (``mode="finetune"``), freezing the encoders the
config names.  The ranks run on Spark executors through ``horovod.spark.run``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow.parquet as pq
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from sales_st.config import Config, to_dict
from sales_st.errors import ConfigError, DataError
from sales_st.features.spec import FeatureSpec, SplitInfo, read_spec, write_spec
from sales_st.runtime import tracking
from sales_st.storage.catalog import RunSummary
from sales_st.storage.files import (
    as_url,
    json_exists,
    remove_file,
    remove_tree,
    write_json,
    write_parquet_atomic,
)
from sales_st.training import store as model_store
from sales_st.training.progress import epoch_lines
from sales_st.training.worker import STOP_FILE, TrainPlan, read_state

log = logging.getLogger(__name__)

EXECUTOR_PYTHON_ENV = "SALES_ST_EXECUTOR_PYTHON"


def parquet_stats(url: str) -> tuple[int, int]:
    """(rows, row groups) of a Parquet directory, from the footers only."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    rows = groups = 0
    for f in fs.find(path):
        if f.endswith(".parquet"):
            with fs.open(f, "rb") as fh:
                meta = pq.ParquetFile(fh).metadata
            rows += meta.num_rows
            groups += meta.num_row_groups
    return rows, groups


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def rank_entry():
    """The function Horovod runs in each rank: puts the shipped package on the path, then
    calls :func:`sales_st.training.worker.train_worker`.

    The ranks are fresh Python processes started next to the executors; Spark's --py-files
    are on the executors' Python workers' path but not on theirs.  This function is created
    here, nested, so that cloudpickle ships it by value and unpickling it imports nothing.
    """

    def entry(plan_json: str):
        import glob
        import os
        import sys

        here = os.environ.get("HOROVOD_SPARK_WORK_DIR", os.getcwd())
        for pkg in sorted(glob.glob(os.path.join(here, "sales_st*.zip"))):
            if pkg not in sys.path:
                sys.path.insert(0, pkg)
        from sales_st.training.worker import train_worker as worker

        return worker(plan_json)

    return entry


def segment_examples(
    spark: SparkSession, spec: FeatureSpec, predicate: str, out_dir: str, partitions: int
) -> FeatureSpec:
    """Write the train/val examples matching ``predicate`` under ``out_dir``; the spec of
    the segment."""
    splits = dict(spec.splits)
    for split in ("train", "val"):
        df = spark.read.parquet(spec.split_path(split)).where(F.expr(predicate))
        dst = write_parquet_atomic(df.repartition(partitions), f"{out_dir}/{split}")
        splits[split] = SplitInfo(dst, parquet_stats(dst)[0])
    return spec.replace(splits=splits)


@dataclass
class TrainResult:
    model_id: str
    model_dir: str
    skipped: bool
    results: list[dict[str, Any]] = field(default_factory=list)  # one per rank
    history: dict[str, list[float]] = field(default_factory=dict)
    summary: RunSummary = field(default_factory=RunSummary)


@dataclass(frozen=True)
class _Setup:
    """What a training run starts from: mode, parent, the spec, settings and learning rate."""

    mode: str
    parent_id: str | None
    spec: FeatureSpec
    model_cfg: dict[str, Any]
    freeze: list[str]
    learning_rate: float
    init_weights: str
    transfer: str = "same_features"  # or other_data: copy the layers that fit (the worker)


def _setup(cfg: Config, spec: FeatureSpec, mode: str, parent: str | None) -> _Setup:
    root, tcfg = cfg.path("models"), cfg.train
    if mode == "pretrain":
        return _Setup(mode, None, spec, to_dict(cfg.model), [], tcfg.learning_rate, "")
    if mode != "finetune":
        raise ConfigError(f"--mode must be pretrain or finetune, found {mode!r}")
    if not parent:
        raise ConfigError("--mode finetune needs --from MODEL_ID (or an alias)")
    parent_root, parent_id = model_store.locate(root, parent)
    parent_spec = model_store.load_spec(parent_root, parent_id)
    transfer = tcfg.finetune.transfer
    if transfer == "same_features" and (
        parent_spec.vocab_sizes != spec.vocab_sizes or parent_spec.layout != spec.layout
    ):
        raise DataError(
            f"model {parent_id} was trained on features with other vocabularies or shapes; "
            "rebuild the features with the same configuration, pre-train again, or start "
            "from the layers that fit with train.finetune.transfer=other_data"
        )
    return _Setup(
        mode,
        parent_id,
        spec if transfer == "other_data" else spec.replace(scalers=parent_spec.scalers),
        model_store.load_meta(parent_root, parent_id)["model_config"],
        list(tcfg.finetune.freeze),
        tcfg.learning_rate * tcfg.finetune.learning_rate_factor,
        f"{model_store.model_dir(parent_root, parent_id)}/weights.h5",
        transfer,
    )


def run_training(
    spark: SparkSession,
    cfg: Config,
    mode: str = "pretrain",
    parent: str | None = None,
    force: bool = False,
    aliases: list[str] | None = None,
    on_start: Callable[[str], None] | None = None,
    register: bool = True,
) -> TrainResult:
    """Pre-train on every series, or fine-tune ``parent`` on ``train.finetune.segment``.

    The training is an MLflow run (params, each epoch's losses, the model's files); with
    ``register`` the model becomes a registered version carrying the store's ``aliases``.

    A model that is already complete is not trained again unless ``force``, which starts
    from the first epoch (:func:`discard_training_state`); an incomplete one resumes after
    its last checkpoint.

    ``on_start`` is called with the model directory just before the ranks start: a watcher
    can read each epoch's losses from ``checkpoints/state.json`` there, and end the training
    after an epoch by creating the file ``STOP`` there (see ``tune``)."""
    root, tcfg = cfg.path("models"), cfg.train
    setup = _setup(cfg, read_spec(cfg.path("features")), mode, parent)
    segment = (tcfg.finetune.segment or None) if mode == "finetune" else None
    train_cfg = to_dict(tcfg)
    depends_on = {
        "features": setup.spec.features_id,
        "model": setup.model_cfg,
        "train": train_cfg,
        "parent": setup.parent_id,
        "segment": segment,
    }
    mid = model_store.model_id(mode, setup.spec.run_date.isoformat(), depends_on)
    mdir = model_store.model_dir(root, mid)
    names = aliases or ["latest", "pretrained" if mode == "pretrain" else "finetuned"]
    summary = RunSummary(run_date=setup.spec.run_date, model_id=mid)
    if model_store.is_complete(root, mid) and not force:
        log.info("model %s is already trained with these inputs and settings: skipping", mid)
        model_store.set_aliases(root, mid, names)
        if register:
            tracking.registry(cfg).register(
                mid, names, source=as_url(mdir), tags=_version_tags(setup)
            )
        return TrainResult(mid, mdir, skipped=True, summary=summary)

    if force:
        discard_training_state(mdir)
    tags = {
        "run_date": setup.spec.run_date.isoformat(),
        "features_id": setup.spec.features_id,
        "model_id": mid,
        "mode": mode,
        "parent_model": setup.parent_id,
        "kind": _kind(setup),
    }
    with tracking.job_run(cfg, "train", mid, tags) as run:
        result = _train(spark, cfg, setup, mid, names, segment, train_cfg, summary, on_start, run)
        run.log_metrics(
            {
                "best_val_loss": result.summary.details.get("best_val_loss"),
                "initial_val_loss": result.summary.details.get("initial_val_loss"),
                "epochs_trained": result.summary.details.get("epochs_trained"),
                "train_examples": result.summary.rows_in,
            }
        )
        for name in sorted(os.listdir(mdir)) if os.path.isdir(mdir) else []:
            path = os.path.join(mdir, name)
            if name == "tensorboard":
                run.log_artifacts(path, "tensorboard")
            elif os.path.isfile(path) and name != STOP_FILE:  # not checkpoints/, segment/
                run.log_artifact(path, "model")
        if register:
            run.register(
                mid, names, artifact_path="model", source=as_url(mdir), tags=_version_tags(setup)
            )
    return result


def discard_training_state(mdir: str) -> None:
    """``force``: train again from the first epoch.  The model's checkpoints (with the
    resume state) and TensorBoard logs go; a run resumed from them instead would start after
    their last epoch -- after every epoch of a finished model -- and train nothing."""
    for name in ("checkpoints", "tensorboard"):
        path = f"{mdir}/{name}"
        if remove_tree(path):
            log.info("training again from the first epoch (--force): removed %s", path)


def _kind(setup: _Setup) -> str:
    return "fused" if setup.model_cfg.get("spatial", True) else "temporal_only"


def _version_tags(setup: _Setup) -> dict[str, Any]:
    return {"kind": _kind(setup), "mode": setup.mode, "parent_model": setup.parent_id or ""}


def _train(
    spark: SparkSession,
    cfg: Config,
    setup: _Setup,
    mid: str,
    names: list[str],
    segment: str | None,
    train_cfg: dict[str, Any],
    summary: RunSummary,
    on_start: Callable[[str], None] | None,
    run: tracking.TrackedRun,
) -> TrainResult:
    root, tcfg, mode = cfg.path("models"), cfg.train, setup.mode
    mdir = model_store.model_dir(root, mid)

    spec = setup.spec
    if segment is not None:
        spec = segment_examples(spark, spec, segment, f"{mdir}/segment", max(2, tcfg.ranks * 2))
    plan = make_plan(spec, setup, train_cfg, mdir, segment)
    meta: dict[str, Any] = {
        "model_id": mid,
        "mode": mode,
        "parent": setup.parent_id,
        "status": "training",
        "run_date": spec.run_date.isoformat(),
        "model_config": setup.model_cfg,
        "train_config": train_cfg,
        "segment": segment,
        "freeze": setup.freeze,
        "transfer": setup.transfer if setup.parent_id else None,
        "parent_weights": setup.init_weights or None,
    }
    write_json(f"{mdir}/model.json", meta)
    write_spec(mdir, spec)
    write_json(
        f"{mdir}/lineage.json",
        {
            "run_date": spec.run_date,
            "features_dir": cfg.path("features"),
            "train": {"path": spec.split_path("train"), "rows": plan.train_rows},
            "val": {"path": spec.split_path("val"), "rows": plan.val_rows},
            "features_config": spec.features_config,
            "parent": setup.parent_id,
            "config_sources": cfg.sources,
        },
    )
    resumed = read_state(plan.checkpoint_dir)
    log.info(
        "training %s (%s) on %d ranks: %d train / %d val examples%s",
        mid,
        mode,
        tcfg.ranks,
        plan.train_rows,
        plan.val_rows,
        f", resuming after epoch {resumed['epoch']}" if resumed else "",
    )
    stop = f"{mdir}/{STOP_FILE}"
    remove_file(stop)  # a request left by an earlier run of this model is not for this one
    if on_start is not None:
        on_start(mdir)

    def to_mlflow(history: dict[str, list[float]], start: int, end: int) -> None:
        run.log_history({k: v[:end] for k, v in history.items()}, first=start)

    with epoch_lines(mdir, tcfg.epochs, mid, listener=to_mlflow):
        results = run_ranks(plan, tcfg.ranks)
    history = results[0].get("history", {})
    if json_exists(stop):
        meta["stopped_on_request"] = True
        log.info("model %s: training ended on request (%s)", mid, stop)
    calibration = calibrate(spark, cfg, spec, mdir, mid, setup.model_cfg["quantiles"])
    meta.update(
        status="complete",
        ranks=[{k: v for k, v in r.items() if k not in ("history", "layers")} for r in results],
        # other_data: which layers started from the parent's weights, which from scratch
        layers=results[0].get("layers"),
        epochs_trained=len(history.get("loss", [])),
        best_val_loss=min(history.get("val_loss", [float("nan")])),
        # the epoch whose weights the model keeps: the best validation epoch's
        kept_epoch=results[0].get("kept_epoch"),
        initial_val_loss=results[0].get("initial_val_loss"),
        finished_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        calibration=calibration,
    )
    write_json(f"{mdir}/model.json", meta)
    model_store.set_aliases(root, mid, names)
    log.info(
        "model %s trained: %d epochs, val loss %s -> best %.4f (epoch %s kept); aliases %s",
        mid,
        meta["epochs_trained"],
        _fmt(meta["initial_val_loss"]),
        meta["best_val_loss"],
        meta["kept_epoch"],
        names,
    )
    summary.rows_in = plan.train_rows + plan.val_rows
    summary.details = {
        k: meta[k] for k in ("mode", "ranks", "epochs_trained", "initial_val_loss", "best_val_loss")
    }
    return TrainResult(mid, mdir, skipped=False, results=results, history=history, summary=summary)


def calibrate(
    spark: SparkSession, cfg: Config, spec: FeatureSpec, mdir: str, mid: str, quantiles: list[float]
) -> dict[str, Any]:
    """Fit the conformal interval offsets on the validation windows (train.calibrate) and
    store them with the model; returns them (empty when turned off)."""
    from sales_st.serving.calibration import CALIBRATION_FILE, fit_calibration

    if not cfg.train.calibrate:
        return {}
    val = spark.read.parquet(spec.split_path("val"))
    offsets = fit_calibration(
        val,
        cfg.path("models"),
        mid,
        quantiles,
        cfg.data.region_columns,
        spec.run_date,
        spec.horizon,
        spec.history,
        spec.period,
    )
    write_json(f"{mdir}/{CALIBRATION_FILE}", offsets)
    for key, values in offsets["offsets"].items():
        log.info(
            "calibration %s: interval %s offsets (scaled) h=1 %.3f, h=%d %.3f",
            mid,
            key,
            values[0],
            len(values),
            values[-1],
        )
    return offsets


def make_plan(
    spec: FeatureSpec, setup: _Setup, train_cfg: dict[str, Any], model_dir: str, segment: str | None
) -> TrainPlan:
    """The plan the ranks run, with the row and row-group counts of its Parquet inputs."""
    train_rows, train_groups = parquet_stats(spec.split_path("train"))
    val_rows, val_groups = parquet_stats(spec.split_path("val"))
    if train_rows == 0 or val_rows == 0:
        raise DataError(
            f"no training ({train_rows}) or validation ({val_rows}) examples"
            + (f" in segment '{segment}'" if segment else "")
        )
    return TrainPlan(
        spec=spec.to_dict(),
        model=setup.model_cfg,
        train=train_cfg,
        train_url=as_url(spec.split_path("train")),
        val_url=as_url(spec.split_path("val")),
        train_rows=train_rows,
        val_rows=val_rows,
        train_row_groups=train_groups,
        val_row_groups=val_groups,
        model_dir=model_dir,
        learning_rate=setup.learning_rate,
        init_weights=setup.init_weights,
        freeze=setup.freeze,
        transfer=setup.transfer,
    )


def run_ranks(plan: TrainPlan, ranks: int) -> list[dict[str, Any]]:
    """Run the worker on ``ranks`` Horovod processes on the Spark executors; their results
    sorted by rank, after checking that every rank ended with the same weights."""
    import horovod.spark

    executable = os.environ.get(EXECUTOR_PYTHON_ENV) or sys.executable
    # The ranks run with the executors' environment plus our own switches (not the driver's
    # whole environment, whose paths may not exist on the workers).
    env = {
        k: v
        for k, v in os.environ.items()
        if k.startswith("SALES_ST_") or k in ("TF_CPP_MIN_LOG_LEVEL",)
    }
    results = horovod.spark.run(
        rank_entry(),
        args=(plan.to_json(),),
        num_proc=ranks,
        use_gloo=True,
        executable=executable,
        env=env,
        verbose=1,
        stdout=sys.stderr,
        stderr=sys.stderr,
        start_timeout=600,
    )
    results = sorted(results, key=lambda r: r["rank"])
    if len({r["digest"] for r in results}) != 1:
        raise RuntimeError(f"ranks ended with different weights: {results}")
    return results


def run_pretraining(spark: SparkSession, cfg: Config, force: bool = False) -> list[TrainResult]:
    """Pre-train the configured model and, with ``train.ablation``, its temporal-only twin."""
    results = [run_training(spark, cfg, "pretrain", force=force)]
    if cfg.train.ablation and cfg.model.spatial:
        twin = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, spatial=False))
        results.append(
            run_training(spark, twin, "pretrain", force=force, aliases=["temporal_only"])
        )
    return results
