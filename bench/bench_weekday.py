"""Does the run date's weekday matter?  A backtest with an origin on every day, once with the
training origins on the run date's weekday only and once shifted per series
(``features.splits.train_offsets``), on a generated panel.

    .venv/bin/python bench/bench_weekday.py [--preset demo] [key=value ...]

For each setting and method: RMSPE / WAPE overall, and the RMSPE of the origins on each
weekday over the mean of the seven weekdays, per horizon week (1.00 = that weekday is as
good as the average; the issue's target is within 3%).  Figures go to
``bench/results/weekday_<preset>.json``.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import duckdb
import numpy as np
from bench_accuracy import load_predictions, metrics, weekday_table
from common import config, session, table, write_results

from sales_st.runtime.pipeline import Pipeline

MODES = ("run_date", "series")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="demo")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        spark = None
        for mode in MODES:
            cfg = config(
                tmp,
                f"data.generator.preset={a.preset}",
                "features.splits.test_stride=1",
                f"features.splits.train_offsets={mode}",
                f"paths.features=features/{mode}",
                f"paths.models=models/{mode}",
                f"paths.reports=reports/{mode}",
                "train.ablation=false",
                "evaluate.baselines=[weekday_average,lightgbm]",
                *a.overrides,
            )
            spark = spark or session(cfg, "bench.weekday")
            t0 = time.perf_counter()
            Pipeline(spark, cfg, None).run(["generate", "features", "train", "evaluate"])
            seconds = time.perf_counter() - t0
            preds, run = load_predictions(cfg, None)
            scored = duckdb.sql(f"SELECT * FROM preds WHERE {cfg.evaluate.metric_filter}").df()
            scored = scored.assign(
                week=(scored.horizon - 1) // 7 + 1,
                weekday=scored.origin.astype("datetime64[ns]").dt.day_name(),
            )
            ratios = weekday_table(scored)
            overall = {m: metrics(g) for m, g in scored.groupby("method")}
            worst = {
                m: float(max(abs(v - 1) for ws in t.values() for v in ws.values()))
                for m, t in ratios.items()
            }
            results[mode] = {
                "run_date": run,
                "seconds": seconds,
                "origins": int(scored.origin.nunique()),
                "overall": overall,
                "ratio_by_weekday_and_week": ratios,
                "worst_weekday_deviation": worst,
            }
    rows = [
        {
            "train origins": mode,
            "method": m,
            "rmspe": r["overall"][m]["rmspe"],
            "wape": r["overall"][m]["wape"],
            "worst weekday / mean - 1": r["worst_weekday_deviation"].get(m, np.nan),
        }
        for mode, r in results.items()
        for m in sorted(r["overall"])
    ]
    print(table(rows, f"{a.preset} panel: backtest from every weekday"))
    for mode, r in results.items():
        for m in ("fused", "best"):
            if m in r["ratio_by_weekday_and_week"]:
                t = r["ratio_by_weekday_and_week"][m]
                print(
                    table(
                        [
                            {"weekday": d, **{f"week {w}": v for w, v in ws.items()}}
                            for d, ws in t.items()
                        ],
                        f"{mode} offsets, {m}: RMSPE by run-date weekday / mean of weekdays",
                    )
                )
    out = write_results(f"weekday_{a.preset}", {"preset": a.preset, "modes": results})
    print(f"written: {out}")


if __name__ == "__main__":
    main()
