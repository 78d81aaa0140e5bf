"""Scoring throughput: the Spark forecast path vs model.predict on in-memory tensors.

    .venv/bin/python bench/bench_forecast.py

On the demo panel (model trained for 2 epochs), the same windows (the training split, for
volume, in one partition per core as the forecast job's ``scoring_tasks`` lays them out) are
scored (a) by the forecast job's Spark path -- mapInArrow, model loaded once per Python
worker, Arrow batches, long rows out, written to Parquet -- with and without the
explanations, and (b) by model.predict on tensors already in memory (one process).  Each is
timed REPEATS times after a warm-up; the table shows the median.  A mapInArrow pass that
only counts the windows gives the floor the Spark path cannot go below: the windows' trip
from the JVM into Python.  Also times the whole forecast job (rebuilding the scoring windows
with the feature code and replacing the table partition).  Figures:
bench/results/forecast.json.
"""

from __future__ import annotations

import statistics
import tempfile
import time

from common import config, session, table, write_results

from sales_st.data.synthetic import write_generated
from sales_st.features.job import run_features
from sales_st.model.tensors import columns_from_pandas, model_inputs_from_columns
from sales_st.serving.job import run_forecast
from sales_st.serving.scoring import score_examples
from sales_st.training import store as model_store
from sales_st.training.driver import run_training

REPEATS = 3


def timed(fn) -> list[float]:
    out = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def count_batches(batches):
    import pyarrow as pa

    for b in batches:
        yield pa.RecordBatch.from_pydict({"n": [b.num_rows]})


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(tmp, "train.ablation=false", "train.epochs=2", "forecast.model=latest")
        spark = session(cfg, "bench.forecast")
        write_generated(spark, cfg.data.generator, cfg.path("inputs"))
        feats = run_features(spark, cfg, None)
        mid = run_training(spark, cfg, "pretrain").model_id
        root = cfg.path("models")
        spec = feats.spec
        H = spec.horizon
        regions = cfg.data.region_columns
        cores = spark.sparkContext.defaultParallelism
        examples = spark.read.parquet(spec.split_path("train")).repartition(cores).cache()
        n = examples.count()
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "512")
        q = [0.1, 0.5, 0.9]
        # warm the Python workers' model cache, then time
        score_examples(examples.limit(100), root, mid, q, regions, feats.run_date, True, 3).count()
        runs = {}
        for explain in (True, False):
            scored = score_examples(examples, root, mid, q, regions, feats.run_date, explain, 3)
            runs[explain] = timed(
                lambda s=scored: s.write.mode("overwrite").parquet(f"{tmp}/scored")
            )
        # the columns the scorer reads, each window once into Python and nothing done there
        wanted = [*spec.layout.input_columns(), "scale", "origin", "store_id", "item_id"]
        moved = examples.select(*dict.fromkeys(wanted)).mapInArrow(count_batches, "n long")
        runs["transfer"] = timed(lambda: moved.count())
        spark_s = {k: statistics.median(v) for k, v in runs.items()}

        full, _, _ = model_store.load_model(root, mid)
        pdf = examples.toPandas()  # the benchmark's in-memory reference
        x = model_inputs_from_columns(columns_from_pandas(pdf, spec.layout.all_columns()), spec)
        full.predict(x, batch_size=512, verbose=0)
        runs["predict"] = timed(lambda: full.predict(x, batch_size=512, verbose=0))
        predict_s = statistics.median(runs["predict"])

        t0 = time.perf_counter()
        job = run_forecast(spark, cfg, None)
        job_s = time.perf_counter() - t0
        rows = [
            {
                "path": f"Spark mapInArrow ({'+' if explain else 'no '}explanations, Parquet)",
                "windows": n,
                "seconds": spark_s[explain],
                "windows/s": n / spark_s[explain],
                "forecasts/s": n * H / spark_s[explain],
                "speed vs predict": predict_s / spark_s[explain],
            }
            for explain in (True, False)
        ] + [
            {
                "path": "floor: the windows into Python and counted (mapInArrow, no model)",
                "windows": n,
                "seconds": spark_s["transfer"],
                "windows/s": n / spark_s["transfer"],
                "forecasts/s": "–",
                "speed vs predict": predict_s / spark_s["transfer"],
            },
            {
                "path": "model.predict, in-memory tensors",
                "windows": n,
                "seconds": predict_s,
                "windows/s": n / predict_s,
                "forecasts/s": n * H / predict_s,
                "speed vs predict": 1.0,
            },
            {
                "path": "whole forecast job (features + score + table)",
                "windows": job.series,
                "seconds": job_s,
                "windows/s": job.series / job_s,
                "forecasts/s": job.rows / job_s,
                "speed vs predict": "–",
            },
        ]
        print(
            table(
                rows,
                f"Scoring throughput (demo model, horizon {H}, "
                f"{spark.sparkContext.defaultParallelism} cores)",
            )
        )
        raw = {
            ("explain" if k is True else "plain" if k is False else k): v for k, v in runs.items()
        }
        record = {"cores": cores, "repeats": REPEATS, "rows": rows, "seconds_each_run": raw}
        print(f"written to {write_results('forecast', record)}")
        spark.stop()


if __name__ == "__main__":
    main()
