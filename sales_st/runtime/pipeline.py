"""The main job: inputs -> features -> train -> evaluate -> forecast, in one Spark session.

Each stage has a fingerprint of what it depends on (its config sections, the run date, the
fingerprint of the stage before it, the library's code, and for external inputs their
files' sizes and modification times).  A stage whose fingerprint matches the last successful
run and whose outputs exist is skipped with a log line; anything upstream that changed re-runs
everything downstream.  State lives in ``<runs>/pipeline/state.json``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pyspark.sql import SparkSession

from sales_st.config import Config
from sales_st.features.spec import code_fingerprint
from sales_st.runtime import tracking
from sales_st.storage.catalog import RunSummary, recorded_run
from sales_st.storage.files import json_exists, path_exists, read_json, write_json

if TYPE_CHECKING:
    from sales_st.evaluation.job import EvaluationResult
    from sales_st.serving.job import ForecastResult

log = logging.getLogger(__name__)

STAGES = ("generate", "features", "train", "evaluate", "forecast")


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def input_files_fingerprint(cfg: Config) -> str:
    """Sizes and mtimes of the external input files (tables source)."""
    from sales_st.data.sources import resolve_input

    entries: list[tuple[str, int | None, int | None]] = []
    for name in ("sales", "stores", "events", "items"):
        src = getattr(cfg.data, name)
        for p in (src.path, src.join_path):
            if not p:
                continue
            path = resolve_input(p, cfg.root)
            if os.path.exists(path):
                st = os.stat(path)
                entries.append((path, st.st_size, int(st.st_mtime)))
            else:
                entries.append((path, None, None))
    return _hash(entries)


class Pipeline:
    def __init__(
        self, spark: SparkSession, cfg: Config, run_date: dt.date | None, force: bool = False
    ):
        self.spark, self.cfg, self.run_date, self.force = spark, cfg, run_date, force
        self.requested_run_date = run_date  # None = "the last day with data"; fingerprints use it
        self.state_path = f"{cfg.path('runs')}/pipeline/state.json"
        self.state: dict[str, Any] = (
            read_json(self.state_path) if json_exists(self.state_path) else {}
        )
        self.fp: dict[str, str] = {}
        self.code = code_fingerprint()
        self.forecast: ForecastResult | None = None
        self.evaluation: EvaluationResult | None = None

    # ---- fingerprints ---------------------------------------------------------------------
    def fingerprint(self, stage: str) -> str:
        c = self.cfg
        if stage == "generate":
            return (
                _hash(c.data.generator, c.path("inputs"), self.code)
                if c.data.source == "generated"
                else input_files_fingerprint(c)
            )
        prev = self.fp.get(STAGES[STAGES.index(stage) - 1], "")
        sections = {
            "features": ("data", "validation", "features"),
            "train": ("model", "train"),
            "forecast": ("forecast",),
            "evaluate": ("evaluate", "model"),
        }[stage]
        return _hash(
            prev,
            c.fingerprint(*sections),
            str(self.requested_run_date),
            c.path("features"),
            self.code,
        )

    def outputs_exist(self, stage: str) -> bool:
        c = self.cfg
        if stage == "generate":
            return c.data.source != "generated" or path_exists(
                self.spark, f"{c.path('inputs')}/sales"
            )
        if stage == "features":
            return json_exists(f"{c.path('features')}/feature_spec.json")
        if stage == "train":
            return json_exists(f"{c.path('models')}/aliases.json")
        if stage == "forecast":
            return self.spark.catalog.tableExists(f"{c.database}.{c.forecast.table}")
        return self.spark.catalog.tableExists(f"{c.database}.metrics")

    # ---- running --------------------------------------------------------------------------
    def run(self, stages: list[str]) -> list[str]:
        """Run the requested stages (skipping unchanged ones); the stages that ran."""
        actions: dict[str, Callable[[str], RunSummary | None]] = {
            "generate": self._generate,
            "features": self._features,
            "train": self._train,
            "forecast": self._forecast,
            "evaluate": self._evaluate,
        }
        upstream_ran = False
        ran: list[str] = []
        for i, stage in enumerate(STAGES):
            self.fp[stage] = self.fingerprint(stage)
            if stage not in stages:
                continue
            same = self.state.get(stage) == self.fp[stage]
            if same and not upstream_ran and not self.force and self.outputs_exist(stage):
                log.info(
                    "[%d/%d] %s: inputs and config unchanged since the last run: skipped",
                    i + 1,
                    len(STAGES),
                    stage,
                )
                continue
            log.info("[%d/%d] %s ...", i + 1, len(STAGES), stage)
            t0 = time.perf_counter()
            with tracking.tracked_job(self.cfg, stage, self.run_date) as tracked:
                with recorded_run(self.spark, self.cfg.database, stage, self.run_date) as rec:
                    outcome = actions[stage](rec.run_id)
                    if outcome is not None:
                        rec.update(outcome)
                tracking.log_record(tracked, rec)
            ran.append(stage)
            upstream_ran = True
            self.state[stage] = self.fp[stage]
            write_json(self.state_path, self.state)
            log.info(
                "[%d/%d] %s done in %.1fs", i + 1, len(STAGES), stage, time.perf_counter() - t0
            )
        return ran

    def _generate(self, run_id: str) -> RunSummary | None:
        from sales_st.data.synthetic import write_generated

        if self.cfg.data.source != "generated":
            log.info("inputs: dataset '%s' read from its configured files", self.cfg.data.name)
            return None
        counts = write_generated(self.spark, self.cfg.data.generator, self.cfg.path("inputs"))
        return RunSummary(rows_out=counts["sales"], details=counts)

    def _features(self, run_id: str) -> RunSummary:
        from sales_st.features.job import run_features

        out = run_features(self.spark, self.cfg, self.run_date, run_id)
        self.run_date = self.run_date or out.run_date
        return out.summary

    def _train(self, run_id: str) -> RunSummary:
        from sales_st.training.driver import run_pretraining

        return run_pretraining(self.spark, self.cfg)[0].summary

    def _forecast(self, run_id: str) -> RunSummary:
        from sales_st.serving.job import run_forecast

        self.forecast = run_forecast(self.spark, self.cfg, self.run_date)
        return self.forecast.summary

    def _evaluate(self, run_id: str) -> RunSummary:
        from sales_st.evaluation.job import run_evaluate

        self.evaluation = run_evaluate(self.spark, self.cfg, self.run_date)
        return self.evaluation.summary


def summary(cfg: Config, pipe: Pipeline) -> str:
    """What a person wants to know at the end: where the forecasts are and how to query them."""
    lines = ["", "sales_st pipeline finished."]
    fc = pipe.forecast
    table = f"{cfg.database}.{cfg.forecast.table}"
    if fc:
        lines.append(
            f"  forecasts : {fc.rows} rows for {fc.series} series, run date "
            f"{fc.run_date}, model {fc.model_id} -> table {table}"
        )
    else:
        lines.append(f"  forecasts : table {table} (unchanged this run)")
    lines.append(f"  warehouse : {cfg.path('warehouse')} (metastore {cfg.path('metastore')})")
    rd = fc.run_date if fc else pipe.run_date
    lines.append(
        "  query     : .venv/bin/spark-sql --conf spark.sql.warehouse.dir="
        f"{cfg.path('warehouse')} --conf spark.hadoop.javax.jdo.option.ConnectionURL="
        f"'jdbc:derby:;databaseName={cfg.path('metastore')}' -e "
        f"\"SELECT * FROM {table} WHERE run_date = DATE'{rd}' LIMIT 10\""
    )
    lines.append('              (or: scripts/sql.sh "SELECT ...")')
    ev = pipe.evaluation
    if ev:
        lines.append(f"  report    : {ev.report}")
        lines.append(f"  metrics   : table {ev.metrics_table}")
    lines.append(f"  manifest  : table {cfg.database}.run_manifest")
    if cfg.tracking.enabled and tracking.tracking_uri(cfg):
        lines.append(
            f"  mlflow    : experiment {tracking.experiment_name(cfg)}, registered model "
            f"{tracking.registered_model_name(cfg)} in {tracking.tracking_uri(cfg)} "
            "(browse: scripts/mlflow-ui.sh)"
        )
    return "\n".join(lines)
