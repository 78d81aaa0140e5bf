"""The evaluation report: one self-contained HTML file with tables and embedded plots.

Plots: forecast vs actual for sample series (history, p10-p90 band, median, baselines),
error by horizon, error by region (heat map of methods x regions), quantile calibration.
Only small aggregates and a handful of sample series reach the driver.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import logging
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sales_st.config import Config
from sales_st.features.spec import FeatureSpec
from sales_st.frames import one_row, to_pandas
from sales_st.serving.aggregates import item_group_levels

log = logging.getLogger(__name__)


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}"/>'


def plot_by_horizon(m: pd.DataFrame, metric: str = "wape"):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for method, g in m.groupby("method"):
        g = g.assign(h=g["group_key"].astype(int)).sort_values("h")
        ax.plot(g["h"], g[metric], marker="o", ms=3, label=method)
    ax.set_xlabel("horizon (days after the origin)")
    ax.set_ylabel(metric.upper())
    ax.set_title(f"{metric.upper()} by horizon")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_region_heatmap(m: pd.DataFrame, metric: str = "wape"):
    import matplotlib.pyplot as plt

    pivot = m.pivot_table(index="method", columns="group_key", values=metric)
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * pivot.shape[1] + 2), 0.5 * pivot.shape[0] + 1.5))
    values = pivot.to_numpy()
    im = ax.imshow(values, cmap="viridis_r", aspect="auto")
    lo, hi = np.nanmin(values), np.nanmax(values)
    ax.set_xticks(range(pivot.shape[1]), pivot.columns, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(pivot.shape[0]), pivot.index, fontsize=8)
    for i in range(pivot.shape[0]):
        for j in range(pivot.shape[1]):
            v = pivot.iat[i, j]
            if np.isfinite(v):  # dark text on the light (low-error) cells
                light = (v - lo) / max(hi - lo, 1e-12) < 0.5
                ax.text(
                    j,
                    i,
                    f"{v:.3f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="k" if light else "w",
                )
    fig.colorbar(im, ax=ax, label=metric.upper())
    ax.set_title(f"{metric.upper()} by region and method")
    return fig


def plot_calibration(cal: pd.DataFrame):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="ideal")
    for method, g in cal.groupby("method"):
        g = g.sort_values("q")
        ax.plot(g["q"], g["share_below"], marker="o", label=method)
    ax.set_xlabel("nominal quantile")
    ax.set_ylabel("share of actuals below the forecast")
    ax.set_title("Quantile calibration")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def plot_series(
    sample: pd.DataFrame, history: dict[tuple, pd.DataFrame], qcols: list[str], methods: list[str]
):
    import matplotlib.pyplot as plt

    keys = list(sample.groupby(["store_id", "item_id"]).groups)
    n = len(keys)
    fig, axes = plt.subplots(n, 1, figsize=(9, 2.4 * n), squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        s = sample[(sample.store_id == key[0]) & (sample.item_id == key[1])]
        hist = history.get(key)
        if hist is not None:
            ax.plot(hist["date"], hist["y"], color="0.5", lw=1, label="history")
        main = s[s.method == methods[0]].sort_values("target_date") if methods else s.iloc[:0]
        truth = s.drop_duplicates("target_date").sort_values("target_date")
        ax.plot(truth["target_date"], truth["actual"], "k.-", lw=1, label="actual")
        if len(main) and main[qcols[0]].notna().any():
            ax.fill_between(
                main["target_date"],
                main[qcols[0]],
                main[qcols[-1]],
                alpha=0.25,
                label=f"{methods[0]} {qcols[0]}-{qcols[-1]}",
            )
        for m in methods:
            g = s[s.method == m].sort_values("target_date")
            ax.plot(g["target_date"], g["point"], lw=1.2, label=m)
        ax.set_title(f"store {key[0]}, item {key[1]}", fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7, ncol=4, loc="upper left")
    fig.tight_layout()
    return fig


def write_report(
    spark: SparkSession,
    cfg: Config,
    rows: DataFrame,
    scored: DataFrame,
    metrics: DataFrame,
    out_dir: str,
    spec: FeatureSpec,
    qcols: list[str],
    run_date: dt.date,
    policy: dict[str, Any] | None = None,
) -> str:
    import matplotlib

    matplotlib.use("Agg")
    # a few hundred rows per method at most: the per-series rows stay in the table
    m = to_pandas(metrics.where(F.col("level") != "series"))
    overall = m[m.level == "overall"].sort_values("wape")
    methods = list(overall["method"])
    if "fused" in methods:  # the band in the sample plots is the fused model's
        methods.insert(0, methods.pop(methods.index("fused")))
    origins = sorted(m.loc[m.level == "origin", "group_key"].unique())
    sections = []
    cols = [
        "method",
        "model_id",
        "n",
        "rmspe",
        "wape",
        "mae",
        "rmse",
        "smape",
        "mase",
        "pinball",
        "coverage",
    ]
    sections.append(
        "<h2>Overall</h2>"
        + overall[cols].to_html(index=False, float_format=lambda v: f"{v:.4f}", na_rep="-")
    )
    sections.append(_img(_png(plot_by_horizon(m[m.level == "horizon"])), "WAPE by horizon"))
    regions = cfg.data.region_columns + item_group_levels(spec.item_levels)
    for level in [
        lvl for lvl in regions + [f"{r}_total" for r in regions] if (m.level == lvl).any()
    ]:
        sub = m[m.level == level]
        if sub["group_key"].nunique() > 40:
            continue
        sections.append(
            f"<h3>by {level}</h3>" + _img(_png(plot_region_heatmap(sub)), f"WAPE by {level}")
        )
    qs = {c: float(c[1:]) / 100 for c in qcols}
    cal = to_pandas(
        scored.where(F.col(qcols[0]).isNotNull())
        .groupBy("method")
        .agg(*[F.avg((F.col("actual") <= F.col(c)).cast("double")).alias(c) for c in qcols])
    ).melt(id_vars="method", var_name="col", value_name="share_below")
    if len(cal):
        cal["q"] = cal["col"].map(qs)
        sections.append("<h2>Calibration</h2>" + _img(_png(plot_calibration(cal)), "calibration"))
    if policy is not None:
        sections.append(_policy_section(policy, cfg.replenish.simulate_levels))
    sections.append(_series_section(spark, cfg, rows, spec, qcols, methods))
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>sales_st evaluation {run_date}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}
table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px}}</style>
</head><body><h1>sales_st backtest &mdash; {html.escape(cfg.data.name)}, run date {run_date}</h1>
<p>Backtest origins: {html.escape(", ".join(origins))};
metric filter: <code>{html.escape(cfg.evaluate.metric_filter)}</code>; horizon {spec.horizon} days.
Predictions: <code>{html.escape(out_dir)}/predictions</code>; metrics table:
<code>{html.escape(cfg.database)}.metrics</code>.</p>
{"".join(sections)}
</body></html>"""
    path = f"{out_dir}/report.html"
    import fsspec

    with fsspec.open(path, "w") as fh:
        fh.write(page)
    log.info("report: %s", path)
    return path


def plot_policy(summary: pd.DataFrame, targets: list[float]):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for policy, g in summary.groupby("policy"):
        g = g.sort_values("service_level")
        ax.plot(g["avg_inventory"], g["fill_rate"], marker="o", ms=4, label=policy)
        for _, r in g[g["service_level"].isin(targets)].iterrows():
            ax.annotate(
                f"{r['service_level']:g}",
                (r["avg_inventory"], r["fill_rate"]),
                fontsize=7,
                textcoords="offset points",
                xytext=(4, -8),
            )
    for t in targets:
        ax.axhline(t, color="0.7", lw=0.8, ls=":")
    ax.set_xlabel("average inventory per series and day (target units)")
    ax.set_ylabel("fill rate")
    ax.set_title("Fill rate against inventory (labels: target service level)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _policy_section(policy: dict[str, Any], targets: list[float]) -> str:
    info, summary = policy["info"], policy["summary"]
    shown = summary[summary["service_level"].isin(targets)]
    fmt = {"float_format": lambda v: f"{v:.4f}", "na_rep": "-", "index": False}
    return (
        "<h2>Replenishment policies on the backtest</h2>"
        f"<p>{info['series']} series replayed day by day from {info['first_review']} to "
        f"{info['last_day']} (lost sales): orders at {info['reviews']} reviews every "
        f"{info['review_days']} days, arriving after {info['lead_time_days']} days; "
        f"{info['measured_days']} measured days per series. <b>model</b>: order up to the "
        f"lead-time demand quantile of <code>{html.escape(info['method'])}</code>; "
        "<b>baseline</b>: weekday average plus a normal safety stock from the residuals of "
        "the history.</p>"
        + shown.to_html(**fmt)
        + "<h3>Inventory needed for a target fill rate</h3>"
        + policy["comparison"].to_html(**fmt)
        + _img(_png(plot_policy(summary, targets)), "fill rate against inventory")
    )


def _series_section(
    spark: SparkSession,
    cfg: Config,
    rows: DataFrame,
    spec: FeatureSpec,
    qcols: list[str],
    methods: list[str],
) -> str:
    last = one_row(rows.agg(F.max("origin")))[0]
    keys = (
        rows.where(F.col("origin") == last)
        .select("store_id", "item_id")
        .distinct()
        .orderBy(F.xxhash64("store_id", "item_id"))
        .limit(cfg.evaluate.sample_series)
        .collect()
    )
    if not keys:
        return ""
    pairs = [(k["store_id"], k["item_id"]) for k in keys]
    cond = None
    for s, i in pairs:
        c = (F.col("store_id") == s) & (F.col("item_id") == i)
        cond = c if cond is None else cond | c
    sample = to_pandas(rows.where(cond & (F.col("origin") == last)))
    test = spark.read.parquet(spec.split_path("test")).where(cond & (F.col("origin") == last))
    L = spec.history
    history = {}
    for r in test.select(
        "store_id", "item_id", "origin", "hist_y", "hist_observed", "scale"
    ).collect():
        dates = pd.date_range(end=pd.Timestamp(r["origin"]), periods=L).date
        y = np.array(r["hist_y"]) * r["scale"]
        y[np.array(r["hist_observed"]) == 0] = np.nan
        history[(r["store_id"], r["item_id"])] = pd.DataFrame({"date": dates, "y": y})
    fig = plot_series(sample, history, qcols, methods)
    return f"<h2>Sample series (origin {last})</h2>" + _img(_png(fig), "sample series")
