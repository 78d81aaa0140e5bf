"""Accuracy of an evaluation run: every method overall, per horizon week and per run-date
weekday, read from the run's predictions (no Spark needed), written to
bench/results/accuracy_<dataset>.json.

    .venv/bin/python jobs/pipeline.py --env local,rossmann      # the run to measure
    .venv/bin/python bench/bench_accuracy.py --env local,rossmann

Metrics follow the run's ``evaluate.metric_filter`` (Rossmann: open days with sales).
"""

from __future__ import annotations

import argparse
import glob
import json

import duckdb
import numpy as np
import pandas as pd
from common import ROOT, config, table, write_results


def load_predictions(cfg, run_date: str | None) -> tuple[pd.DataFrame, str]:
    reports = cfg.path("reports")
    dates = sorted(d.rsplit("/", 1)[1] for d in glob.glob(f"{reports}/*-*-*"))
    run = run_date or dates[-1]
    pointer = json.load(open(f"{reports}/{run}/predictions/_CURRENT"))
    files = glob.glob(f"{reports}/{run}/predictions/{pointer['version']}/*.parquet")
    return pd.concat(pd.read_parquet(f) for f in files), run


def metrics(df: pd.DataFrame) -> dict[str, float]:
    e = df.actual - df.point
    y = df.actual
    nz = y != 0
    out = {
        "n": int(len(df)),
        "rmspe": float(np.sqrt(np.mean((e[nz] / y[nz]) ** 2))),
        "wape": float(np.abs(e).sum() / np.abs(y).sum()),
        "mae": float(np.abs(e).mean()),
    }
    has = df.p_lo.notna().any()
    out["coverage"] = float(((y >= df.p_lo) & (y <= df.p_hi)).mean()) if has else float("nan")
    return out


def weekday_table(scored: pd.DataFrame) -> dict[str, dict[str, dict[int, float]]]:
    """Per method: RMSPE of each run-date weekday's origins over the mean of the weekdays,
    per horizon week (empty when the origins fall on fewer than two weekdays)."""
    if scored.weekday.nunique() < 2:
        return {}
    out: dict[str, dict[str, dict[int, float]]] = {}
    for m, g in scored.groupby("method"):
        cells = {(d, int(w)): metrics(gw)["rmspe"] for (d, w), gw in g.groupby(["weekday", "week"])}
        weeks = sorted({w for _, w in cells})
        means = {w: float(np.mean([v for (_, ww), v in cells.items() if ww == w])) for w in weeks}
        out[str(m)] = {
            d: {w: cells[(d, w)] / means[w] for w in weeks if (d, w) in cells}
            for d in sorted({d for d, _ in cells})
        }
    return out


def sums_coverage(cfg, run: str) -> dict[str, dict[str, float]]:
    """Coverage per method of the daily intervals and of the intervals of sums (lead time,
    region totals), weighted by rows, from the run's metrics table in the warehouse."""
    files = glob.glob(f"{cfg.path('warehouse')}/{cfg.database}.db/metrics/run_date={run}/*.parquet")
    if not files:
        return {}
    rows = duckdb.sql(
        "SELECT method, level, sum(coverage * n) / sum(n) AS coverage FROM read_parquet($files) "
        "WHERE coverage IS NOT NULL AND (level IN ('overall', 'lead_time') "
        "OR level LIKE '%_total') GROUP BY method, level",
        params={"files": files},
    ).df()
    out: dict[str, dict[str, float]] = {}
    for r in rows.itertuples():
        name = "daily" if r.level == "overall" else r.level
        out.setdefault(r.method, {})[name] = float(r.coverage)
    return dict(sorted(out.items()))


def warehouse_table(cfg, name: str, run: str) -> pd.DataFrame:
    """One run date's partition of a warehouse table, read from its Parquet files."""
    files = glob.glob(f"{cfg.path('warehouse')}/{cfg.database}.db/{name}/run_date={run}/*.parquet")
    if not files:
        return pd.DataFrame()
    return duckdb.sql("SELECT * FROM read_parquet($files)", params={"files": files}).df()


def decisions(cfg, run: str) -> dict[str, object]:
    """The evaluation's replenishment replay (``replenish.simulate_table``) and the
    scenario job's promotion uplift check, when they were run for this run date."""
    out: dict[str, object] = {}
    policy = warehouse_table(cfg, cfg.replenish.simulate_table, run)
    if len(policy):
        policy = policy.sort_values(["policy", "service_level"])
        out["policy"] = policy.drop(columns=["series"]).to_dict(orient="records")
        shown = policy[policy.service_level.isin(cfg.replenish.simulate_levels)]
        print(
            table(
                shown[
                    ["policy", "service_level", "fill_rate", "stockout_days", "avg_inventory"]
                ].to_dict(orient="records"),
                f"replenishment replay ({int(policy.series.iloc[0])} series, lead time "
                f"{int(policy.lead_time_days.iloc[0])} d, reviews every "
                f"{int(policy.review_days.iloc[0])} d, model = {policy.method.iloc[0]})",
            )
        )
    uplift = warehouse_table(cfg, "uplift_check", run)
    if len(uplift):
        from sales_st.decisions.scenario import uplift_stats

        out["uplift_check"] = uplift_stats(uplift)
        print(table([out["uplift_check"]], "promotion uplift: model implied vs history"))
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--env", default="local")
    p.add_argument("--run-date", default=None)
    p.add_argument(
        "--name", default=None, help="results file bench/results/<name>.json (accuracy_<dataset>)"
    )
    p.add_argument("overrides", nargs="*")
    a = p.parse_args()
    cfg = config(ROOT / "data", *a.overrides, env=a.env)
    preds, run = load_predictions(cfg, a.run_date)
    # the run's own SQL predicate, applied by DuckDB to the predictions frame
    scored = duckdb.sql(f"SELECT * FROM preds WHERE {cfg.evaluate.metric_filter}").df()
    # daily data: horizon weeks (days 1-7, 8-14, ...); weekly and monthly: each period
    daily = cfg.data.frequency in ("auto", "day") and cfg.features.horizon > 7
    scored = scored.assign(
        week=(scored.horizon - 1) // 7 + 1 if daily else scored.horizon,
        weekday=pd.to_datetime(scored.origin).dt.day_name(),
    )
    step = "week" if daily else "h"
    overall = {m: metrics(g) for m, g in scored.groupby("method")}
    weeks = {
        m: {int(w): metrics(gw)["rmspe"] for w, gw in g.groupby("week")}
        for m, g in scored.groupby("method")
    }
    rows = [
        {"method": m, **stats}
        for m, stats in sorted(overall.items(), key=lambda kv: kv[1]["rmspe"])
    ]
    print(
        table(
            rows,
            f"{cfg.data.name}, run date {run}: overall (filter '{cfg.evaluate.metric_filter}')",
        )
    )
    wrows = [{"method": m, **{f"{step} {w}": v for w, v in ws.items()}} for m, ws in weeks.items()]
    print(table(wrows, "RMSPE by horizon week" if daily else "RMSPE by horizon (periods)"))
    by_weekday = weekday_table(scored)
    if by_weekday:
        for m, t in by_weekday.items():
            print(
                table(
                    [
                        {"weekday": d, **{f"week {w}": v for w, v in ws.items()}}
                        for d, ws in t.items()
                    ],
                    f"{m}: RMSPE by run-date weekday / mean over weekdays, per horizon week",
                )
            )
    coverage = sums_coverage(cfg, run)
    if coverage:
        print(
            table(
                [{"method": m, **c} for m, c in coverage.items()],
                "p10-p90 coverage (nominal 0.80): daily rows, lead time (days 1..h) and region "
                "totals, from the run's metrics table",
            )
        )
    decided = decisions(cfg, run)
    out = write_results(
        a.name or f"accuracy_{cfg.data.name}",
        {
            "dataset": cfg.data.name,
            "run_date": run,
            "metric_filter": cfg.evaluate.metric_filter,
            "overrides": a.overrides,
            "overall": overall,
            "rmspe_by_horizon_week": weeks,
            "origins": sorted(str(o) for o in scored.origin.unique()),
            "rmspe_ratio_by_weekday_and_week": by_weekday,
            "interval_coverage": coverage,
            **decided,
        },
    )
    print(f"written: {out}")


if __name__ == "__main__":
    main()
