"""Transfer learning on generated data: stores with a short history.

    .venv/bin/python bench/bench_transfer.py [--epochs 4]

The panel has new stores that opened 150-300 days before the run date (the rest have three
years).  Three models are compared on the test windows of those new stores only:

* zero-shot: pre-trained on every series, used as is;
* fine-tuned: the pre-trained model trained further on the new stores' windows
  (``--mode finetune``, segment ``is_new_series = 1``);
* from scratch: the same architecture trained on the same new-store windows from a random
  initialisation, with the same budget (epochs, steps, batch size) as the fine-tuning.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile

from common import config, session, table
from pyspark.sql import functions as F

from sales_st.data.synthetic import write_generated
from sales_st.evaluation.baselines import KEYS, truth_rows
from sales_st.evaluation.metrics import compute_metrics
from sales_st.features.job import run_features
from sales_st.features.spec import SplitInfo, write_spec
from sales_st.serving.scoring import score_examples
from sales_st.storage.files import current_version
from sales_st.training import store as model_store
from sales_st.training.driver import run_training

SEGMENT = "is_new_series = 1"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=4)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(
            tmp,
            "data.generator.preset=demo",
            "data.generator.new_store_fraction=0.25",
            "data.generator.new_store_history_days=300",
            "features.new_series_days=300",
            "train.ablation=false",
            f"train.epochs={args.epochs}",
            f'train.finetune.segment="{SEGMENT}"',
        )
        spark = session(cfg, "bench.transfer")
        write_generated(spark, cfg.data.generator, cfg.path("inputs"))
        feats = run_features(spark, cfg, None)
        spec = feats.spec
        pre = run_training(spark, cfg, "pretrain").model_id
        fine = run_training(spark, cfg, "finetune", parent=pre).model_id
        # from scratch: train on the segment's windows only, same epochs and batch
        seg_dir = f"{model_store.model_dir(cfg.path('models'), fine)}/segment"
        scratch_cfg = dataclasses.replace(
            cfg,
            paths=dataclasses.replace(
                cfg.paths, features="features/segment", models="models/scratch"
            ),
        )
        seg_spec = spec.replace(
            splits={
                **spec.splits,
                "train": SplitInfo(
                    current_version(spark, f"{seg_dir}/train"), spec.splits["train"].rows
                ),
                "val": SplitInfo(current_version(spark, f"{seg_dir}/val"), spec.splits["val"].rows),
            }
        )
        write_spec(scratch_cfg.path("features"), seg_spec)
        scratch = run_training(spark, scratch_cfg, "pretrain").model_id

        test = spark.read.parquet(spec.split_path("test")).where(F.expr(SEGMENT)).cache()
        n_windows = test.count()
        truth = truth_rows(test, spec.history, cfg.data.region_columns)
        q = [0.1, 0.5, 0.9]
        parts = []
        for name, root, mid in (
            ("zero-shot (pretrained)", cfg.path("models"), pre),
            ("fine-tuned", cfg.path("models"), fine),
            ("from scratch (segment only)", scratch_cfg.path("models"), scratch),
        ):
            s = score_examples(
                test, root, mid, q, cfg.data.region_columns, feats.run_date, False, 0
            )
            parts.append(
                s.select(
                    F.lit(name).alias("method"),
                    "store_id",
                    "item_id",
                    F.expr("date_sub(target_date, horizon)").alias("origin"),
                    "horizon",
                    F.col("p50").alias("point"),
                    F.col("p10").alias("p_lo"),
                    F.col("p90").alias("p_hi"),
                    "p10",
                    "p90",
                )
            )
        preds = parts[0].unionByName(parts[1]).unionByName(parts[2])
        rows = truth.join(preds, KEYS + ["horizon"]).where("observed = 1 AND open = 1")
        m = compute_metrics(rows, {"overall": []}, {"p10": 0.1, "p90": 0.9}).toPandas()
        seg_train = spark.read.parquet(current_version(spark, f"{seg_dir}/train")).count()
        all_train = spec.splits["train"].rows
        out = [
            {
                "model": r.method,
                "WAPE": r.wape,
                "MAE": r.mae,
                "RMSE": r.rmse,
                "pinball": r.pinball,
                "coverage p10-p90": r.coverage,
            }
            for r in m.sort_values("wape").itertuples()
        ]
        print(
            table(
                out,
                f"Short-history stores: {n_windows} test windows; fine-tune and scratch "
                f"trained on {seg_train} segment windows ({all_train} in the full "
                f"training split), {args.epochs} epochs each",
            )
        )
        spark.stop()


if __name__ == "__main__":
    main()
