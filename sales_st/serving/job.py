"""The forecast job: rebuild the run date's scoring windows with the feature code (the
model's vocabularies), score them with the stored model, and replace the run date's partition
of the catalog table ``<database>.forecasts``.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from sales_st.config import Config
from sales_st.data.contract import SERIES_KEY
from sales_st.errors import DataError
from sales_st.features.assemble import build_examples_df
from sales_st.features.job import prepare
from sales_st.features.spec import FeatureSpec
from sales_st.serving.scoring import forecast_ddl, score_examples
from sales_st.storage.catalog import RunSummary, ensure_table, replace_partition
from sales_st.training import store as model_store

log = logging.getLogger(__name__)


@dataclass
class ForecastResult:
    table: str
    rows: int
    series: int
    model_id: str
    run_date: dt.date
    summary: RunSummary = field(default_factory=RunSummary)


def run_forecast(spark: SparkSession, cfg: Config, run_date: dt.date | None) -> ForecastResult:
    root = cfg.path("models")
    mid = model_store.resolve(root, cfg.forecast.model)
    meta = model_store.load_meta(root, mid)
    spec = model_store.load_spec(root, mid)
    prep = prepare(spark, cfg, run_date, vocab=spec.vocab)
    try:
        check_compatible(spec, cfg, prep.wide.levels)
        examples = build_examples_df(prep.wide, cfg, ("score",))
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.forecast.batch_size))
        quantiles = meta["model_config"]["quantiles"]
        regions = cfg.data.region_columns
        rows = score_examples(
            examples,
            root,
            mid,
            quantiles,
            regions,
            prep.run_date,
            cfg.forecast.explain,
            cfg.forecast.top_steps,
        )
        table = f"{cfg.database}.{cfg.forecast.table}"
        ensure_table(spark, table, forecast_ddl(quantiles, regions), ["run_date"])
        replace_partition(rows, table, {"run_date": prep.run_date})
        total_series = prep.wide.table.count()
    finally:
        prep.release()
    written = spark.table(table).where(F.col("run_date") == F.lit(prep.run_date))
    n_rows = written.count()
    n_series = written.select(*SERIES_KEY).distinct().count()
    if n_series < total_series:
        log.warning(
            "forecast: %d of %d series have no scoring window (too little history)",
            total_series - n_series,
            total_series,
        )
    log.info(
        "forecast: %d rows for %d series, run date %s, model %s -> %s",
        n_rows,
        n_series,
        prep.run_date,
        mid,
        table,
    )
    summary = RunSummary(
        run_date=prep.run_date,
        model_id=mid,
        rows_in=total_series,
        rows_out=n_rows,
        details={
            "series_forecast": n_series,
            "series_total": total_series,
            "series_without_forecast": total_series - n_series,
        },
    )
    return ForecastResult(
        table=table,
        rows=n_rows,
        series=n_series,
        model_id=mid,
        run_date=prep.run_date,
        summary=summary,
    )


def check_compatible(spec: FeatureSpec, cfg: Config, levels: list[str]) -> None:
    f = cfg.features
    want = {
        "history": f.history,
        "horizon": f.horizon,
        "k": f.spatial.k,
        "aggregate_levels": levels,
    }
    have = {
        "history": spec.history,
        "horizon": spec.horizon,
        "k": spec.k,
        "aggregate_levels": spec.aggregate_levels,
    }
    if want != have:
        raise DataError(
            f"the model was trained with features {have} but the config asks for "
            f"{want}; forecast with the same feature settings or retrain"
        )
