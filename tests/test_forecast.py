"""The forecast job against a real catalog table: schema, idempotency, failure safety, SQL."""

from __future__ import annotations

import ast
import datetime as dt
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from sales_st.data.frequency import Grid
from sales_st.serving.job import run_forecast, weekday_mismatch
from sales_st.serving.scoring import forecast_table_ddl
from sales_st.storage.catalog import FAIL_WRITE_ENV

pytestmark = pytest.mark.slow

TABLE = "sales_st.forecasts"


def partition(spark, run_date):
    return spark.table(TABLE).where(F.col("run_date") == F.lit(run_date))


@pytest.fixture(scope="module")
def first(tiny_forecast):
    return tiny_forecast


def test_forecasts_table_schema_and_content(spark, tiny_cfg, tiny_features, first):
    expected = spark.createDataFrame(
        [], forecast_table_ddl([0.1, 0.5, 0.9], tiny_cfg.data.region_columns)
    ).schema
    got = spark.table(TABLE).schema
    assert [(f.name, f.dataType) for f in got] == [(f.name, f.dataType) for f in expected]
    run = first.run_date
    df = partition(spark, run).toPandas()
    H = tiny_cfg.features.horizon
    n_series = tiny_features.counts["series"]
    assert len(df) == first.rows == n_series * H
    assert not df.duplicated(["store_id", "item_id", "target_date"]).any()
    assert set(df.horizon) == set(range(1, H + 1))
    assert (df.target_date - df.horizon.map(lambda h: dt.timedelta(days=int(h))) == run).all()
    assert ((df.p10 <= df.p50) & (df.p50 <= df.p90) & (df.p10 >= 0)).all()
    assert (df.model_id == first.model_id).all()
    assert df.state.notna().all() and df.city.notna().all()
    # explanations: attended days lie in the history window, attention weights sum to <= 1
    L = tiny_cfg.features.history
    for d in df.top_history_dates:
        assert all(run - dt.timedelta(days=L - 1) <= x <= run for x in d)
    assert ((df.gate > 0) & (df.gate < 1)).all()
    assert all(abs(sum(w) - 1) < 1e-3 for w in df.spatial_weights if len(w))
    sources = {s for ss in df.spatial_sources for s in ss}
    assert sources & {"spatial_lag", "agg_city", "agg_state"}
    assert any(s.startswith("st") for s in sources)  # neighbour store ids


def test_lead_time_quantiles_of_each_series(spark, tiny_cfg, first):
    df = partition(spark, first.run_date).toPandas().sort_values(["store_id", "item_id", "horizon"])
    for _, s in df.groupby(["store_id", "item_id"]):
        # the median through day h is the sum of the daily medians; p10/p90 are not sums
        assert np.allclose(s.cum_p50, s.p50.cumsum())
        for c in ("cum_p10", "cum_p50", "cum_p90"):
            assert (np.diff(s[c]) >= -1e-9).all(), c  # demand through h+1 >= through h
        assert ((s.cum_p10 <= s.cum_p50) & (s.cum_p50 <= s.cum_p90) & (s.cum_p10 >= 0)).all()
    # an interval of a sum is narrower than the sum of the days' intervals (errors cancel)
    last = df[df.horizon == df.horizon.max()]
    width = (last.cum_p90 - last.cum_p10).sum()
    summed = df.groupby(["store_id", "item_id"]).apply(lambda s: (s.p90 - s.p10).sum()).sum()
    assert 0 < width < summed


def test_region_totals_add_up_the_stores(spark, tiny_cfg, first):
    run = first.run_date
    regions = spark.table("sales_st.forecasts_region").where(F.col("run_date") == F.lit(run))
    got = regions.toPandas()
    df = partition(spark, run).toPandas()
    levels = [c for c in tiny_cfg.data.region_columns if df[c].notna().any()]
    assert sorted(got.level.unique()) == sorted(levels)
    for level in levels:
        mine = got[got.level == level].set_index(["region", "target_date"]).sort_index()
        theirs = df.groupby([level, "target_date"]).agg(p50=("p50", "sum"), series=("p50", "size"))
        theirs.index.names = ["region", "target_date"]
        assert np.allclose(mine.p50, theirs.p50.sort_index())
        assert (mine.series.values == theirs.series.sort_index().values).all()
        assert ((mine.p10 <= mine.p50) & (mine.p50 <= mine.p90)).all()
    assert (got.model_id == first.model_id).all()


def test_rerun_replaces_only_its_partition(spark, tiny_cfg, first, caplog):
    run = first.run_date
    # another weekday: the tiny model's training origins all fall on the run date's
    earlier = run - dt.timedelta(days=8)
    with caplog.at_level(logging.WARNING, logger="sales_st.serving.job"):
        run_forecast(spark, tiny_cfg, earlier)
    weekday = [r.getMessage() for r in caplog.records if "training origins" in r.getMessage()]
    assert len(weekday) == 1 and f"the run date {earlier} is a " in weekday[0]
    before_other = partition(spark, earlier).persist()
    before = partition(spark, run).persist()
    n_before_other = before_other.count()
    assert before.count() == first.rows and n_before_other > 0
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sales_st.serving.job"):
        again = run_forecast(spark, tiny_cfg, run)
    assert not [r for r in caplog.records if "training origins" in r.getMessage()]
    assert again.rows == first.rows
    assertDataFrameEqual(partition(spark, run), before)
    assertDataFrameEqual(partition(spark, earlier), before_other)
    total = spark.table(TABLE).groupBy("run_date").count().toPandas()
    assert set(total.run_date) == {run, earlier}


def test_failure_during_the_write_leaves_the_previous_partition(
    spark, tiny_cfg, first, monkeypatch
):
    run = first.run_date
    before = partition(spark, run).persist()
    n = before.count()
    monkeypatch.setenv(FAIL_WRITE_ENV, "5")
    with pytest.raises(Exception, match="injected failure"):
        run_forecast(spark, tiny_cfg, run)
    monkeypatch.delenv(FAIL_WRITE_ENV)
    spark.sql(f"REFRESH TABLE {TABLE}")
    after = partition(spark, run)
    assert after.count() == n
    assertDataFrameEqual(after, before)
    part_dir = f"{tiny_cfg.path('warehouse')}/sales_st.db/forecasts"
    assert not [d for d in os.listdir(part_dir) if d.startswith(".spark-staging")]


def test_table_is_readable_with_sql_from_another_process(spark, tiny_cfg, first):
    table_dir = f"{tiny_cfg.path('warehouse')}/sales_st.db/forecasts"
    query = (
        "import duckdb, sys; con = duckdb.connect(); "
        f'print(con.execute("SELECT count(*), count(DISTINCT store_id || item_id), min(p50) >= 0 '
        f"FROM read_parquet('{table_dir}/*/*.parquet', hive_partitioning=1) "
        f"WHERE run_date = '{first.run_date}'\").fetchone())"
    )
    out = subprocess.run([sys.executable, "-c", query], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows, series, nonneg = ast.literal_eval(out.stdout.strip())
    assert rows == first.rows and series == first.series and nonneg
    spark_rows = partition(spark, first.run_date).count()
    assert spark_rows == rows
    p50 = partition(spark, first.run_date).agg(F.sum("p50")).first()[0]
    assert np.isfinite(p50)


def test_scoring_tasks_one_per_core_more_for_many_series_never_more_than_partitions(
    spark, tmp_path
):
    from sales_st.serving.job import scoring_tasks
    from tests.conftest import make_config

    cores = spark.sparkContext.defaultParallelism
    cfg = make_config(tmp_path, "forecast.series_per_task=10")
    examples = spark.range(1000).repartition(cores + 6)
    # few series: one task per core
    assert scoring_tasks(examples, 5, cfg).rdd.getNumPartitions() == cores
    # ceil(45 / 10) = 5 tasks per 10 series, when that is more than the cores
    assert scoring_tasks(examples, 45, cfg).rdd.getNumPartitions() == max(cores, 5)
    # never more tasks than the windows have partitions
    assert scoring_tasks(examples, 10_000, cfg).rdd.getNumPartitions() == cores + 6
    assert scoring_tasks(examples, 45, cfg).count() == 1000


def test_scored_rows_are_the_models_outputs_window_by_window(spark, tiny_cfg, tiny_model):
    """Arrow batches of 5 windows: every window's quantiles are the stored model's outputs on
    that window times its scale, 0 on closed days, and its most-attended days are the model's
    attention read by hand."""
    from sales_st.features.spec import read_spec
    from sales_st.model.tensors import columns_from_pandas, model_inputs_from_columns
    from sales_st.serving.scoring import score_examples
    from sales_st.training import store as model_store

    root, mid = tiny_cfg.path("models"), tiny_model.model_id
    spec = read_spec(tiny_cfg.path("features"))
    examples = spark.read.parquet(spec.split_path("val"))
    key = ["store_id", "item_id", "origin"]
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "5")
    try:
        args = (root, mid, [0.1, 0.5, 0.9], tiny_cfg.data.region_columns, spec.run_date)
        got = score_examples(examples, *args, True, 3, calibrated=False).toPandas()
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
    pdf = examples.toPandas().sort_values(key).reset_index(drop=True)
    # the reference: each window's columns through pandas, one Python list per cell
    cols = columns_from_pandas(pdf, spec.layout.input_columns())
    full, _, _ = model_store.load_model(root, mid)
    out = full(model_inputs_from_columns(cols, spec), training=False)
    q = out["quantiles"].numpy() * pdf["scale"].to_numpy()[:, None, None]
    q = np.maximum(q * cols["fut_open"][:, :, None], 0.0)
    H, L = spec.horizon, spec.history
    assert len(got) == len(pdf) * H
    got["origin"] = [d - dt.timedelta(days=int(h)) for d, h in zip(got.target_date, got.horizon)]
    got = got.sort_values([*key, "horizon"]).reset_index(drop=True)
    assert (got.origin.to_numpy() == np.repeat(pdf.origin.to_numpy(), H)).all()
    assert (got.store_id.to_numpy() == np.repeat(pdf.store_id.to_numpy(), H)).all()
    for i, c in enumerate(["p10", "p50", "p90"]):
        np.testing.assert_allclose(got[c].to_numpy(), q[:, :, i].ravel(), rtol=1e-5, atol=1e-6)
    alpha = out["temporal_attention"].numpy()
    top = np.argsort(-alpha, axis=1)[:, :3]
    first = got[got.horizon == 1].reset_index(drop=True)
    for w in (0, len(pdf) // 2, len(pdf) - 1):
        days = [pdf.origin[w] - dt.timedelta(days=int(L - 1 - t)) for t in top[w]]
        assert list(first.top_history_dates[w]) == days
        np.testing.assert_allclose(first.top_history_weights[w], alpha[w, top[w]], rtol=1e-5)
        assert first.gate[w] == pytest.approx(float(out["gate"].numpy().reshape(-1)[w]), 1e-5)
    # without explanations the explanation columns are null, the quantiles the same
    plain = score_examples(examples, *args, False, 3, calibrated=False).toPandas()
    assert plain.gate.isna().all() and plain.spatial_sources.isna().all()
    plain = plain.sort_values(["store_id", "item_id", "target_date"]).reset_index(drop=True)
    np.testing.assert_allclose(plain.p50.to_numpy(), q[:, :, 1].ravel(), rtol=1e-5, atol=1e-6)


def test_forecasting_from_another_weekday_than_the_training_origins_is_named(tiny_features):
    spec = tiny_features.spec
    run = spec.run_date
    # the tiny panel's origins: stride 7 on the run date's weekday (train_offsets run_date)
    assert spec.origin_weekdays == [run.isoweekday()]
    assert weekday_mismatch(spec, run) is None
    assert weekday_mismatch(spec, run - dt.timedelta(days=14)) is None
    other = run - dt.timedelta(days=1)
    said = weekday_mismatch(spec, other)
    assert said is not None and f"all fall on {run:%A}s" in said
    assert f"the run date {other} is a {other:%A}" in said and "train_offsets: series" in said
    # every weekday covered, unknown (a spec written before), or a weekly grid: nothing to say
    assert weekday_mismatch(spec.replace(origin_weekdays=list(range(1, 8))), other) is None
    assert weekday_mismatch(spec.replace(origin_weekdays=[]), other) is None
    weekly = Grid("week", "sunday", "end").to_dict()
    assert weekday_mismatch(spec.replace(grid=weekly), other) is None
