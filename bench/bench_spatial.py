"""A controlled spatial experiment with a known truth: does the spatial encoder use it?

    .venv/bin/python bench/bench_spatial.py [--modes leadlag none] [--epochs 8]
        [--seeds 11 12] [--lead-lag-days 14] [--variant 'name:key=value,...'] [overrides]

For each ``data.generator.spatial_signal`` mode a demo panel is generated, the features built
(18 weekly test origins: the last 126 days), and the models trained on the same windows with
each training seed and scored on the test windows: the fused model as configured, the fused
model with the spatial encoder's lead-lag path (``model.lead_lag_days``; skipped with
``--lead-lag-days 0``), any ``--variant`` and the temporal-only ablation
(``model.spatial=false``, the twin ``train.ablation`` trains):

* ``leadlag``: each city's demand shocks reach one leader store first and the city's other
  stores (the leader's nearest neighbours) 3-14 days later, the lag drawn per city.  The
  leader's recent history foretells its followers' next days: a model that reads its
  neighbours should beat the temporal-only one, above all on the followers;
* ``none``: shocks of the same size, drawn per store.  The neighbours carry nothing the own
  history lacks: the fused model should cost nothing against the temporal-only one.

Prints WAPE and RMSPE per horizon week (all series; for leadlag also followers and leaders),
the mean fusion gate, the mean entropy of the spatial attention (nats; uniform over the k
neighbours and the context sequences would be log(k + ctx)) and, for the lead-lag path on the
followers' test windows, the weight it puts on the true leader and how often its top
(neighbour, lag) pair is the leader at the drawn lag +-1 day.  Writes
bench/results/spatial.json.  Overrides (``key=value``) apply to every model.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import numpy as np
import pandas as pd
from common import config, session, table, write_results
from pyspark.sql import functions as F

from sales_st.data.synthetic import spatial_truth, write_generated
from sales_st.evaluation.baselines import KEYS, truth_rows
from sales_st.features.job import run_features
from sales_st.serving.scoring import score_examples
from sales_st.training import store as model_store
from sales_st.training.driver import run_training

TEMPORAL = "temporal-only"
# a test period of 18 weekly origins (the default -70 / -42 leaves 6): more shocks scored
SPLITS = ["features.splits.train_end=-154", "features.splits.val_end=-126"]


def variants(lead_lag_days: int, extra: list[str]) -> dict[str, list[str]]:
    """Model name -> the overrides that make it; ``extra`` adds 'name:key=value,...'."""
    out = {"fused": ["model.lead_lag_days=0"]}
    if lead_lag_days:
        out["fused + lead-lag"] = [f"model.lead_lag_days={lead_lag_days}"]
    for item in extra:
        name, _, overrides = item.partition(":")
        out[name] = overrides.split(",")
    out[TEMPORAL] = ["model.spatial=false", "model.lead_lag_days=0"]
    return out


def run_mode(
    spark, base: list[str], mode: str, models: dict[str, list[str]], seeds: list[int]
) -> dict[str, Any]:
    """Generate, build features, train every model with every training seed and score the
    test windows of one mode."""
    cfg = config(base[0], *base[1:])
    t0 = time.time()
    write_generated(spark, cfg.data.generator, cfg.path("inputs"))
    feats = run_features(spark, cfg, None)
    t_feat = time.time()
    trained = {}
    for seed in seeds:
        for i, (name, extra) in enumerate(models.items()):
            vcfg = config(base[0], *base[1:], *extra, f"train.seed={seed}")
            alias = f"variant{i}_seed{seed}"
            trained[name, seed] = run_training(spark, vcfg, "pretrain", aliases=[alias])
    t_train = time.time()
    spec = feats.spec
    test = spark.read.parquet(spec.split_path("test")).cache()
    truth = truth_rows(test, spec.history, cfg.data.region_columns)
    parts = []
    for (name, seed), res in trained.items():
        s = score_examples(
            test,
            cfg.path("models"),
            res.model_id,
            cfg.model.quantiles,
            cfg.data.region_columns,
            feats.run_date,
            True,
            0,
        )
        parts.append(
            s.select(
                F.lit(name).alias("method"),
                F.lit(seed).alias("seed"),
                "store_id",
                "item_id",
                F.expr("date_sub(target_date, horizon)").alias("origin"),
                "horizon",
                F.col("p50").alias("point"),
                "gate",
                "spatial_weights",
            )
        )
    preds = parts[0]
    for part in parts[1:]:
        preds = preds.unionByName(part)
    stores = spatial_truth(spark, cfg.data.generator)["stores"]
    rows = (
        truth.join(preds, KEYS + ["horizon"])
        .where("observed = 1 AND open = 1")
        .join(stores.select("store_id", "lag_days"), "store_id")
        .select(
            "method",
            "seed",
            "store_id",
            "horizon",
            "actual",
            "point",
            "gate",
            "spatial_weights",
            "lag_days",
        )
        .toPandas()
    )
    t_score = time.time()
    rows["week"] = (rows.horizon - 1) // 7 + 1
    out: dict[str, Any] = {
        "test_windows": int(test.count()),
        "train_windows": int(spec.splits["train"].rows),
        "seeds": seeds,
        "models": {
            name: {
                "overrides": models[name],
                **{
                    f"seed{seed}": {
                        "model_id": r.model_id,
                        "epochs": len(r.history.get("loss", [])),
                        "best_val_loss": min(r.history.get("val_loss", [float("nan")])),
                    }
                    for (n, seed), r in trained.items()
                    if n == name
                },
            }
            for name in models
        },
        "seconds": {
            "generate+features": round(t_feat - t0, 1),
            "train (all models)": round(t_train - t_feat, 1),
            "score": round(t_score - t_train, 1),
        },
        "metrics": {},
        "explanations": {},
    }
    subsets = {"all": rows}
    if mode == "leadlag":
        subsets["followers"] = rows[rows.lag_days > 0]
        subsets["leaders"] = rows[rows.lag_days == 0]
    for subset, df in subsets.items():
        for method, g in df.groupby("method"):
            # per seed, then the mean over seeds
            per_seed = []
            for _, gs in g.groupby("seed"):
                m: dict[str, Any] = _errors(gs)
                for w, gw in gs.groupby("week"):
                    m.update({f"{k}_week{w}": v for k, v in _errors(gw).items()})
                per_seed.append(m)
            mean = {k: float(np.mean([m[k] for m in per_seed])) for k in per_seed[0]}
            out["metrics"].setdefault(subset, {})[method] = {
                "n": int(len(g) // len(seeds)),
                **mean,
                "wape_by_seed": [m["wape"] for m in per_seed],
            }
    first = rows[(rows.horizon == 1) & (rows.method != TEMPORAL)]
    for method, g in first.groupby("method"):
        out["explanations"][method] = {
            "mean_gate": float(g.gate.mean()),
            "spatial_attention_entropy": float(np.mean([_entropy(w) for w in g.spatial_weights])),
        }
    if "fused + lead-lag" in models and mode == "leadlag":
        checks = [
            lead_lag_truth(cfg, trained["fused + lead-lag", seed].model_id, test, stores)
            for seed in seeds
        ]
        out["explanations"]["fused + lead-lag"].update(
            {k: float(np.mean([c[k] for c in checks])) for k in checks[0]}
        )
    return out


def lead_lag_truth(cfg, mid: str, test, stores) -> dict[str, float]:
    """On the followers' test windows: the lead-lag weight on the true leader, and the share
    of windows whose top (neighbour, lag) pair is the leader at the drawn lag +-1 day."""
    from tensorflow import keras

    from sales_st.model.tensors import columns_from_pandas, model_inputs_from_columns

    full, spec, _ = model_store.load_model(cfg.path("models"), mid)
    scores = keras.Model(full.inputs, full.get_layer("spatial_lead_scores").output)
    leaders = stores.where("lag_days = 0").select("city", F.col("store_id").alias("leader"))
    followers = (
        stores.where("lag_days > 0").join(leaders, "city").select("store_id", "leader", "lag_days")
    )
    pdf = test.join(followers, "store_id").toPandas()
    cols = columns_from_pandas(pdf, spec.layout.input_columns())
    w = scores.predict(model_inputs_from_columns(cols, spec), batch_size=512, verbose=0)
    on_leader, top_hit = [], []
    for i, r in enumerate(pdf.itertuples()):
        ids = list(r.nbr_ids) if r.nbr_ids is not None else []
        if r.leader not in ids:
            continue
        slot = ids.index(r.leader)
        on_leader.append(float(w[i, slot].sum()))
        k, j = np.unravel_index(int(np.argmax(w[i])), w[i].shape)
        top_hit.append(k == slot and abs(j + 1 - r.lag_days) <= 1)
    return {
        "follower_windows": len(on_leader),
        "lead_weight_on_leader": float(np.mean(on_leader)),
        "top_pair_is_leader_at_lag": float(np.mean(top_hit)),
    }


def _errors(g: pd.DataFrame) -> dict[str, float]:
    e = g.actual - g.point
    nz = g.actual != 0
    return {
        "wape": float(e.abs().sum() / g.actual.abs().sum()),
        "rmspe": float(np.sqrt(np.mean((e[nz] / g.actual[nz]) ** 2))),
    }


def _entropy(weights) -> float:
    """Entropy (nats) of one window's spatial attention, renormalised over the sources the
    explanations keep (weights above 1e-4)."""
    w = np.asarray([] if weights is None else weights, dtype=float)
    w = w[w > 0] / max(w.sum(), 1e-12)
    return float(-(w * np.log(w)).sum())


def report(figures: dict[str, Any]) -> None:
    rows = []
    for mode, r in figures["modes"].items():
        for subset, by_method in r["metrics"].items():
            ref = by_method[TEMPORAL]["wape"]
            for method, m in by_method.items():
                ex = r["explanations"].get(method, {}) if subset == "all" else {}
                rows.append(
                    {
                        "signal": mode,
                        "series": subset,
                        "model": method,
                        "WAPE wk1": m["wape_week1"],
                        "WAPE wk2": m["wape_week2"],
                        "RMSPE wk1": m["rmspe_week1"],
                        "RMSPE wk2": m["rmspe_week2"],
                        "WAPE / temporal": m["wape"] / ref,
                        "per seed": ", ".join(
                            f"{w / r:.3f}"
                            for w, r in zip(m["wape_by_seed"], by_method[TEMPORAL]["wape_by_seed"])
                        ),
                        "gate": ex.get("mean_gate", ""),
                        "attn entropy": ex.get("spatial_attention_entropy", ""),
                    }
                )
    print(
        table(
            rows,
            f"Fused vs temporal-only by horizon week ({figures['preset']}, "
            f"{figures['epochs']} epochs, mean over training seeds {figures['seeds']})",
        )
    )
    for mode, r in figures["modes"].items():
        ex = r["explanations"].get("fused + lead-lag", {})
        if "lead_weight_on_leader" in ex:
            print(
                f"\n{mode}: lead-lag path on {ex['follower_windows']:.0f} follower windows: "
                f"weight on the true leader {ex['lead_weight_on_leader']:.2f}, top pair = "
                f"leader at the drawn lag +-1 in {ex['top_pair_is_leader_at_lag']:.0%}"
            )
    times = [{"signal": m, **r["seconds"]} for m, r in figures["modes"].items()]
    print(table(times, "Wall time (s)"))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--modes", nargs="+", default=["leadlag", "none"])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--seeds", type=int, nargs="+", default=[11], help="train.seed values")
    p.add_argument("--preset", default="demo")
    p.add_argument("--lead-lag-days", type=int, default=14)
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        help="another model, 'name:key=value,key=value' (e.g. a fusion gate bias)",
    )
    p.add_argument("--name", default="spatial", help="results file bench/results/<name>.json")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args()
    models = variants(a.lead_lag_days, a.variant)
    figures: dict[str, Any] = {
        "preset": a.preset,
        "epochs": a.epochs,
        "seeds": a.seeds,
        "overrides": SPLITS + a.overrides,
        "modes": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        spark = None
        for mode in a.modes:
            base = [
                tmp,
                f"data.generator.preset={a.preset}",
                f"data.generator.spatial_signal={mode}",
                f"paths.inputs=inputs/{mode}",
                f"paths.features=features/{mode}",
                f"paths.models=models/{mode}",
                f"train.epochs={a.epochs}",
                *SPLITS,
                *a.overrides,
            ]
            spark = spark or session(config(tmp, *base[1:]), "bench.spatial")
            t0 = time.time()
            figures["modes"][mode] = run_mode(spark, base, mode, models, a.seeds)
            figures["modes"][mode]["seconds"]["total"] = round(time.time() - t0, 1)
        if spark is not None:
            spark.stop()
    report(figures)
    out = write_results(a.name, figures)
    print(f"written: {out}")


if __name__ == "__main__":
    main()
