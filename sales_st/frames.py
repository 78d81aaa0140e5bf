"""Small typed helpers over Spark DataFrames, shared by every stage."""

from __future__ import annotations

from typing import cast

import pandas as pd
from pyspark.sql import DataFrame, Row


def one_row(df: DataFrame) -> Row:
    """The first row of an aggregate (which always has one)."""
    row = df.first()
    if row is None:
        raise RuntimeError("an aggregate returned no row")
    return row


def to_pandas(df: DataFrame) -> pd.DataFrame:
    """``df.toPandas()`` typed as a pandas DataFrame; for small results only."""
    return cast(pd.DataFrame, df.toPandas())
