"""The main job's stage logic: unchanged stages are skipped, changed ones re-run downstream."""

from __future__ import annotations

import logging

from sales_st.runtime.pipeline import Pipeline
from tests.conftest import TINY, make_config


def run(spark, cfg, caplog, stages):
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sales_st.runtime.pipeline"):
        Pipeline(spark, cfg, None).run(stages)
    return {
        s: (
            "skipped"
            if any(f"{s}: inputs and config unchanged" in m for m in caplog.messages)
            else "ran"
            if any(f"{s} done" in m for m in caplog.messages)
            else "-"
        )
        for s in stages
    }


def test_unchanged_stages_are_skipped_and_changes_rerun_downstream(spark, data_root, caplog):
    base = [
        *TINY,
        "paths.inputs=inputs/pipe",
        "paths.features=features/pipe",
        "paths.runs=runs/pipe",
        "data.generator.days=120",
        "data.generator.n_items=1",
    ]
    cfg = make_config(data_root, *base)
    stages = ["generate", "features"]
    assert run(spark, cfg, caplog, stages) == {"generate": "ran", "features": "ran"}
    assert run(spark, cfg, caplog, stages) == {"generate": "skipped", "features": "skipped"}
    changed = make_config(data_root, *base, "features.stride=14")
    assert run(spark, changed, caplog, stages) == {"generate": "skipped", "features": "ran"}
    regenerated = make_config(data_root, *base, "features.stride=14", "data.generator.seed=8")
    assert run(spark, regenerated, caplog, stages) == {"generate": "ran", "features": "ran"}
    rows = spark.table("sales_st.run_manifest").where("job = 'features' AND status = 'succeeded'")
    assert rows.count() >= 3


def test_unknown_stage_is_a_usage_error():
    from jobs.pipeline import main

    assert main(["--stages", "features,bogus"]) == 2
