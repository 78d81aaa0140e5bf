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
from typing import Any

import pyarrow.parquet as pq
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from sales_st import model_store
from sales_st.config import Config, to_dict
from sales_st.features import load_spec
from sales_st.io import read_json, write_json, write_parquet_atomic
from sales_st.train import TrainPlan, read_state

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


def _url(path: str) -> str:
    return path if "://" in path else f"file://{path}"


def rank_entry():
    """The function Horovod runs in each rank: puts the shipped package on the path, then
    calls :func:`sales_st.train.train_worker`.

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
        from sales_st.train import train_worker as worker

        return worker(plan_json)

    return entry


def segment_examples(spark: SparkSession, spec: dict[str, Any], predicate: str, out_dir: str,
                     partitions: int) -> dict[str, str]:
    """Write the train/val examples matching ``predicate`` under ``out_dir``."""
    urls = {}
    for split in ("train", "val"):
        src = spec["splits"][split]["path"]
        df = spark.read.parquet(src).where(F.expr(predicate))
        dst = f"{out_dir}/{split}"
        write_parquet_atomic(df.repartition(partitions), dst)
        urls[split] = dst
    return urls


def run_training(
    spark: SparkSession,
    cfg: Config,
    mode: str = "pretrain",
    parent: str | None = None,
    force: bool = False,
    record: Any = None,
    aliases: list[str] | None = None,
) -> dict[str, Any]:
    import horovod.spark

    spec = load_spec(cfg)
    run_date = spec["run_date"]
    root = cfg.path("models")
    tcfg = cfg.train
    parent_id = None
    freeze: list[str] = []
    lr = tcfg.learning_rate
    if mode == "finetune":
        if not parent:
            raise ValueError("--mode finetune needs --from MODEL_ID (or an alias)")
        parent_id = model_store.resolve(root, parent)
        parent_spec = read_json(f"{model_store.model_dir(root, parent_id)}/feature_spec.json")
        if parent_spec["vocab_sizes"] != spec["vocab_sizes"] or parent_spec["shapes"] != spec["shapes"]:
            raise ValueError(
                f"model {parent_id} was trained on features with other vocabularies or shapes; "
                "rebuild the features with the same configuration or pre-train again"
            )
        spec = dict(spec, scalers=parent_spec["scalers"])
        freeze = list(tcfg.finetune.freeze)
        lr = tcfg.learning_rate * tcfg.finetune.learning_rate_factor
    elif mode != "pretrain":
        raise ValueError(f"--mode must be pretrain or finetune, found {mode!r}")

    model_cfg = to_dict(cfg.model)
    if mode == "finetune":
        model_cfg = load_meta_model_config(root, parent_id)
    train_cfg = to_dict(tcfg)
    mid = model_store.model_id(mode, run_date, {
        "features": spec.get("features_id", spec["features_config"]), "model": model_cfg,
        "train": train_cfg,
        "parent": parent_id, "segment": tcfg.finetune.segment if mode == "finetune" else None,
    })
    mdir = model_store.model_dir(root, mid)
    names = aliases or ["latest", "pretrained" if mode == "pretrain" else "finetuned"]
    if record is not None:
        record.model_id = mid
        record.run_date = dt.date.fromisoformat(run_date)
    if model_store.is_complete(root, mid) and not force:
        log.info("model %s is already trained with these inputs and settings: skipping", mid)
        model_store.set_aliases(root, mid, names)
        return {"model_id": mid, "skipped": True, "model_dir": mdir}

    partitions = max(2, tcfg.ranks * 2)
    if mode == "finetune":
        urls = segment_examples(spark, spec, tcfg.finetune.segment, f"{mdir}/segment", partitions)
        init = f"{model_store.model_dir(root, parent_id)}/weights.h5"
    else:
        urls = {s: spec["splits"][s]["path"] for s in ("train", "val")}
        init = ""
    train_rows, train_groups = parquet_stats(urls["train"])
    val_rows, val_groups = parquet_stats(urls["val"])
    if train_rows == 0 or val_rows == 0:
        raise ValueError(f"no training ({train_rows}) or validation ({val_rows}) examples"
                         + (f" in segment '{tcfg.finetune.segment}'" if mode == "finetune" else ""))
    plan = TrainPlan(
        spec=spec, model=model_cfg, train_url=_url(urls["train"]), val_url=_url(urls["val"]),
        train_rows=train_rows, val_rows=val_rows, train_row_groups=train_groups,
        val_row_groups=val_groups, model_dir=mdir, epochs=tcfg.epochs,
        batch_size=tcfg.batch_size, learning_rate=lr, warmup_epochs=tcfg.warmup_epochs,
        patience=tcfg.patience, seed=tcfg.seed, shuffle_buffer=tcfg.shuffle_buffer,
        max_steps_per_epoch=tcfg.max_steps_per_epoch, lr_decay_patience=tcfg.lr_decay_patience,
        init_weights=init, freeze=freeze,
        reader_pool=tcfg.reader_pool, input_mode=tcfg.input,
    )
    meta = {
        "model_id": mid, "mode": mode, "parent": parent_id, "status": "training",
        "run_date": run_date, "model_config": model_cfg, "train_config": train_cfg,
        "segment": tcfg.finetune.segment if mode == "finetune" else None, "freeze": freeze,
    }
    write_json(f"{mdir}/model.json", meta)
    write_json(f"{mdir}/feature_spec.json", spec)
    write_json(f"{mdir}/lineage.json", {
        "run_date": run_date, "features_dir": cfg.path("features"),
        "train": {"path": urls["train"], "rows": train_rows},
        "val": {"path": urls["val"], "rows": val_rows},
        "features_config": spec["features_config"], "parent": parent_id,
        "config_sources": cfg.sources,
    })
    resumed = read_state(plan.checkpoint_dir)
    log.info("training %s (%s) on %d ranks: %d train / %d val examples%s", mid, mode,
             tcfg.ranks, train_rows, val_rows,
             f", resuming after epoch {resumed['epoch']}" if resumed else "")
    executable = os.environ.get(EXECUTOR_PYTHON_ENV) or sys.executable
    # The ranks run with the executors' environment plus our own switches (not the driver's
    # whole environment, whose paths may not exist on the workers).
    env = {k: v for k, v in os.environ.items()
           if k.startswith("SALES_ST_") or k in ("TF_CPP_MIN_LOG_LEVEL",)}
    results = horovod.spark.run(
        rank_entry(), args=(plan.to_json(),), num_proc=tcfg.ranks, use_gloo=True,
        executable=executable, env=env, verbose=1, stdout=sys.stderr, stderr=sys.stderr,
        start_timeout=600,
    )
    results = sorted(results, key=lambda r: r["rank"])
    digests = {r["digest"] for r in results}
    if len(digests) != 1:
        raise RuntimeError(f"ranks ended with different weights: {results}")
    history = results[0].get("history", {})
    meta.update(status="complete", ranks=[{k: v for k, v in r.items() if k != "history"}
                                         for r in results],
                epochs_trained=len(history.get("loss", [])),
                best_val_loss=min(history.get("val_loss", [float("nan")])),
                initial_val_loss=results[0].get("initial_val_loss"),
                finished_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    write_json(f"{mdir}/model.json", meta)
    model_store.set_aliases(root, mid, names)
    if record is not None:
        record.rows_in = train_rows + val_rows
        record.details = {"mode": mode, "ranks": meta["ranks"], "epochs": meta["epochs_trained"],
                          "initial_val_loss": meta["initial_val_loss"],
                          "best_val_loss": meta["best_val_loss"]}
    log.info("model %s trained: %d epochs, val loss %s -> best %.4f; aliases %s", mid,
             meta["epochs_trained"], _fmt(meta["initial_val_loss"]), meta["best_val_loss"], names)
    return {"model_id": mid, "skipped": False, "model_dir": mdir, "results": results,
            "history": history}


def run_pretraining(spark: SparkSession, cfg: Config, force: bool = False,
                    record: Any = None) -> list[dict[str, Any]]:
    """Pre-train the configured model and, with ``train.ablation``, its temporal-only twin."""
    results = [run_training(spark, cfg, "pretrain", force=force, record=record)]
    if cfg.train.ablation and cfg.model.spatial:
        twin = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, spatial=False))
        results.append(run_training(spark, twin, "pretrain", force=force,
                                    aliases=["temporal_only"]))
    return results


def load_meta_model_config(root: str, mid: str) -> dict[str, Any]:
    return model_store.load_meta(root, mid)["model_config"]

