"""The DataFrame helpers every stage shares: a checkpointed frame keeps its rows and drops its
lineage, and ``release`` frees what it holds on the executors."""

from __future__ import annotations

from pyspark.sql import functions as F

from sales_st.frames import checkpointed, release


def held(spark) -> set[int]:
    """Ids of the RDDs whose blocks are kept on the executors."""
    return {int(k) for k in spark.sparkContext._jsc.getPersistentRDDs().keys()}


def test_a_checkpointed_frame_keeps_its_rows_drops_its_lineage_and_is_released(spark):
    left = spark.range(40).withColumn("y", F.col("id") * 3)
    right = spark.range(0, 40, 2).withColumnRenamed("id", "k")
    df = left.join(right, left.id == right.k).select("id", "y")
    before = held(spark)

    ck = checkpointed(df)
    assert sorted(map(tuple, ck.collect())) == [(i, 3 * i) for i in range(0, 40, 2)]
    plan = ck._jdf.queryExecution().analyzed()
    assert plan.getClass().getSimpleName() == "LogicalRDD"  # a scan of the held rows
    assert (
        "Join" not in plan.toString() and "Join" in df._jdf.queryExecution().analyzed().toString()
    )
    assert len(held(spark) - before) == 1  # its rows are held ...
    release(ck)
    assert held(spark) == before  # ... until released

    cached = df.persist()
    cached.count()
    assert len(held(spark) - before) == 1
    release(cached)  # a persisted frame is released as before: its cache dropped
    assert held(spark) == before
