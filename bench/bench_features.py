"""Feature-job cost at ~1M, 4M and 16M input rows, against a single-node DuckDB reference.

    .venv/bin/python bench/bench_features.py [--sizes 1M,4M,16M] [--rossmann] [--no-duckdb]
        [--name features]

Sizes up to 100M rows (``--sizes 100M --no-duckdb``: the scale run of issue 15; each size's
inputs and outputs are deleted once measured, so the disk holds one size at a time).

For each size the generator writes the inputs (not timed), then

* Spark: the whole feature job (validation with accounting, densification, calendar,
  neighbours, aggregates, windows for every split, Parquet output) in local[*] with the
  default memory settings;
* DuckDB: the core of the same features at the same origins -- validation counts,
  densification, masked history and future windows, lags, rolling means/std, the scale,
  and a distance-weighted spatial lag -- written to Parquet.  It leaves out calendar
  distances, neighbour sequences and hierarchy aggregates, so it is a lower bound for a
  single-node engine, not an equal.  A sample of rows is compared with the Spark output.

Prints seconds, input rows/s, the cost-growth exponent (slope of log time over log rows),
the DuckDB/Spark time ratio, the peak memory of the driver/executor JVM and the Python
processes at the largest size, and (--rossmann) the full Rossmann feature build time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import duckdb
import numpy as np
from common import ROSSMANN, PeakMemory, config, session, stage_totals, table, write_results

from sales_st.data.synthetic import write_generated
from sales_st.features.job import run_features
from sales_st.storage.files import current_version

SIZES = {
    "0.1M": (2, 2, 2, 12),  # a quick smoke run
    # n_states, cities_per_state, stores_per_city, n_items -> stores x items x 1028 days
    "1M": (4, 2, 4, 32),
    "4M": (4, 4, 4, 64),
    "16M": (8, 4, 8, 64),
    "64M": (8, 4, 8, 256),
    "100M": (8, 4, 13, 256),  # 416 stores x 256 items: 106,496 series
}
FEATURES = ["features.stride=28"]


def generator_overrides(size: str) -> list[str]:
    """The generator settings of a ``SIZES`` panel (1,000 days, four weeks of plans)."""
    ns, cps, spc, items = SIZES[size]
    return [
        "data.generator.preset=custom",
        "data.generator.days=1000",
        f"data.generator.n_states={ns}",
        f"data.generator.cities_per_state={cps}",
        f"data.generator.stores_per_city={spc}",
        f"data.generator.n_items={items}",
        "data.generator.plan_days=28",
        "data.generator.partitions=8",
    ]


def duckdb_features(
    inputs: str, out: str, run_date, L=56, H=14, stride=28, k=6, bandwidth=50.0
) -> dict:
    con = duckdb.connect()
    con.execute("PRAGMA threads=2")
    con.execute(
        f"CREATE VIEW s AS SELECT date, store_id, item_id, target, promo, open "
        f"FROM read_parquet('{inputs}/sales/v-*/*/*.parquet')"
    )
    con.execute(f"CREATE VIEW st AS SELECT * FROM read_parquet('{inputs}/stores/v-*/*.parquet')")
    counts = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE target < 0), "
        "count(*) - count(DISTINCT (store_id, item_id, date)) FROM s"
    ).fetchone()
    rd = f"DATE '{run_date}'"
    con.execute(f"""
        CREATE TABLE d AS
        WITH series AS (SELECT store_id, item_id, min(date) AS first FROM s GROUP BY ALL),
             bounds AS (SELECT max(date) AS last FROM s),
             grid AS (SELECT store_id, item_id,
                             unnest(generate_series(first, (SELECT last FROM bounds), INTERVAL 1 DAY))::DATE AS date
                      FROM series)
        SELECT g.store_id, g.item_id, g.date, s.target, coalesce(s.promo, 0) AS promo,
               coalesce(s.open, 0) AS open,
               (s.target IS NOT NULL AND g.date <= {rd})::INT AS has_y,
               CASE WHEN s.target IS NOT NULL AND g.date <= {rd} THEN s.target ELSE 0 END AS ym
        FROM grid g LEFT JOIN s USING (store_id, item_id, date)""")
    # k nearest neighbours by great-circle distance, weights 1 / (1 + d / bandwidth)
    con.execute(f"""
        CREATE TABLE nb AS
        WITH p AS (
          SELECT a.store_id, b.store_id AS nbr,
                 2 * 6371 * asin(sqrt(least(1, pow(sin(radians(b.latitude - a.latitude) / 2), 2)
                   + cos(radians(a.latitude)) * cos(radians(b.latitude))
                   * pow(sin(radians(b.longitude - a.longitude) / 2), 2)))) AS km
          FROM st a JOIN st b ON a.store_id <> b.store_id),
        r AS (SELECT *, row_number() OVER (PARTITION BY store_id ORDER BY km, hash(store_id, nbr)) AS rk FROM p)
        SELECT store_id, nbr, (1 / (1 + km / {bandwidth})) / sum(1 / (1 + km / {bandwidth}))
               OVER (PARTITION BY store_id) AS w
        FROM r WHERE rk <= {k}""")
    con.execute("""
        CREATE TABLE lagsp AS
        SELECT n.store_id, d.item_id, d.date,
               sum(n.w * d.ym) FILTER (WHERE d.has_y = 1) / nullif(sum(n.w) FILTER (WHERE d.has_y = 1), 0) AS sp
        FROM nb n JOIN d ON d.store_id = n.nbr GROUP BY ALL""")
    win = "PARTITION BY store_id, item_id ORDER BY date"
    roll = []
    for w in (7, 28, 91):
        frame = f"({win} ROWS BETWEEN {w - 1} PRECEDING AND CURRENT ROW)"
        roll.append(f"avg(CASE WHEN has_y = 1 THEN target END) OVER {frame} AS roll{w}")
        roll.append(f"stddev_pop(CASE WHEN has_y = 1 THEN target END) OVER {frame} AS rollsd{w}")
    hist = f"({win} ROWS BETWEEN {L - 1} PRECEDING AND CURRENT ROW)"
    fut = f"({win} ROWS BETWEEN 1 FOLLOWING AND {H} FOLLOWING)"
    con.execute(f"""
        COPY (
          WITH f AS (
            SELECT d.*, coalesce(l.sp, 0) AS sp,
                   list(ym) OVER {hist} AS hist_y, list(has_y) OVER {hist} AS hist_observed,
                   list(coalesce(l.sp, 0)) OVER {hist} AS hist_spatial_lag,
                   avg(CASE WHEN has_y = 1 THEN ym END) OVER {hist} AS scale,
                   list(ym) OVER {fut} AS y, list(promo) OVER {fut} AS fut_promo,
                   list(open) OVER {fut} AS fut_open,
                   {", ".join(f"CASE WHEN lag(has_y, {q - 1}) OVER ({win}) = 1 THEN lag(ym, {q - 1}) OVER ({win}) END AS lag{q}" for q in (1, 7, 14, 28))},
                   {", ".join(roll)},
                   row_number() OVER ({win}) AS age
            FROM d LEFT JOIN lagsp l USING (store_id, item_id, date))
          SELECT * FROM f
          WHERE date <= {rd} AND age >= {L} AND datediff('day', date, {rd}) % {stride} = 0
        ) TO '{out}' (FORMAT PARQUET)""")
    n = con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone()[0]
    return {"input": counts[0], "negative": counts[1], "duplicates": counts[2], "examples": n}


def compare(spark_examples: str, duck_out: str) -> float:
    """Largest relative difference of roll_mean_7 and lag_1 (raw units) on shared rows."""
    con = duckdb.connect()
    rows = con.execute(f"""
        SELECT s.roll_mean_7 * s.scale AS a, d.roll7 AS b, s.lag_1 * s.scale AS c,
               coalesce(d.lag1, 0) AS e
        FROM read_parquet('{spark_examples}/*/*.parquet', hive_partitioning = 1) s
        JOIN read_parquet('{duck_out}') d
          ON s.store_id = d.store_id AND s.item_id = d.item_id AND s.origin = d.date
        USING SAMPLE 20000 ROWS""").fetchnumpy()
    if not len(rows["a"]):
        return float("nan")
    rel = [
        np.abs(rows["a"] - np.nan_to_num(rows["b"])) / np.maximum(1, np.abs(rows["a"])),
        np.abs(rows["c"] - rows["e"]) / np.maximum(1, np.abs(rows["c"])),
    ]
    return float(max(r.max() for r in rel))


def _size(path: str) -> int:
    path = path.replace("file:", "")
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="1M,4M,16M")
    p.add_argument("--rossmann", action="store_true")
    p.add_argument("--no-duckdb", action="store_true", help="Spark only (the large sizes)")
    p.add_argument("--name", default="", help="write bench/results/<name>.json")
    args = p.parse_args()
    results, mem_report = [], ""
    with tempfile.TemporaryDirectory() as tmp:
        spark = session(config(tmp), "bench.features")
        sizes = [x for x in args.sizes.split(",") if x]  # --sizes "" : Rossmann only
        for size in sizes:
            cfg = config(
                tmp,
                *generator_overrides(size),
                *FEATURES,
                f"paths.inputs=inputs/{size}",
                f"paths.features=features/{size}",
            )
            t0 = time.perf_counter()
            n = write_generated(spark, cfg.data.generator, cfg.path("inputs"))["sales"]
            gen_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            since = time.time() * 1000
            with PeakMemory() as mem:
                out = run_features(spark, cfg, None)
            spark_s = time.perf_counter() - t0
            stages = stage_totals(spark, since)
            if size == sizes[-1]:
                mem_report = f"{size}: {mem.report()}"
            ex = sum(v for k, v in out.counts.items() if k.startswith("examples_"))
            row = {
                "size": size,
                "input rows": n,
                "examples": ex,
                "generate s": gen_s,
                "spark s": spark_s,
                "spark rows/s": n / spark_s,
                "task-s / wall-s": stages["run_s"] / spark_s,
                "tasks": stages["tasks"],
                "spill to disk GiB": stages["disk_spilled"] / 2**30,
                "peak RSS GiB": mem.peak_total / 2**30,
                "peak JVM GiB": mem.peak_by_kind.get("jvm (driver + executors)", 0) / 2**30,
                "output GiB": _size(cfg.path("features")) / 2**30,
            }
            if not args.no_duckdb:
                duck_out = f"{tmp}/duck_{size}.parquet"
                t0 = time.perf_counter()
                duck = duckdb_features(cfg.path("inputs"), duck_out, out.run_date)
                duck_s = time.perf_counter() - t0
                diff = compare(current_version(spark, f"{cfg.path('features')}/examples"), duck_out)
                row.update(
                    {
                        "duckdb s": duck_s,
                        "duckdb rows/s": n / duck_s,
                        "duckdb/spark time": duck_s / spark_s,
                        "max rel diff (sample)": diff,
                        "duckdb examples": duck["examples"],
                    }
                )
                shutil.rmtree(duck_out, ignore_errors=True)
            results.append(row)
            for path in ("inputs", "features"):
                shutil.rmtree(cfg.path(path).replace("file:", ""), ignore_errors=True)
            print(table(results[-1:], f"size {size}"), flush=True)
        if len(results) > 1:
            x = np.log([r["input rows"] for r in results])
            for engine in ("spark",) + (() if args.no_duckdb else ("duckdb",)):
                y = np.log([r[f"{engine} s"] for r in results])
                slope = float(np.polyfit(x, y, 1)[0])
                print(f"cost-growth exponent ({engine}): time ~ rows^{slope:.2f}")
        if results:
            print(
                table(
                    results,
                    "Feature job: Spark (local[*], 2 cores) vs DuckDB reference (2 threads)",
                )
            )
            print(
                f"peak memory at the largest size with the default settings "
                f"(spark.driver.memory {cfg.spark.conf.get('spark.driver.memory')}): {mem_report}"
            )
        if args.name:
            print(f"wrote {write_results(args.name, {'sizes': results, 'peak': mem_report})}")
        if args.rossmann and (ROSSMANN / "train_clean.parquet").exists():
            rcfg = config(tmp, env="local,rossmann")
            for k, v in rcfg.spark.conf.items():  # the overlay's SQL settings (Parquet nanos)
                if spark.conf.isModifiable(k):
                    spark.conf.set(k, v)
            spark.sql(f"CREATE DATABASE IF NOT EXISTS {rcfg.database}")  # its quarantine table
            t0 = time.perf_counter()
            with PeakMemory() as mem:
                out = run_features(spark, rcfg, None)
            secs = time.perf_counter() - t0
            ex = sum(v for k, v in out.counts.items() if k.startswith("examples_"))
            print(
                f"Rossmann full feature build: {out.counts['input']:,} rows -> {ex:,} "
                f"examples in {secs:.1f} s ({mem.report()})"
            )
        spark.stop()


if __name__ == "__main__":
    main()
