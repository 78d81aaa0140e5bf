"""Rossmann by week: the daily sales summed into weeks ending on Sunday, written where the
overlay ``conf/rossmann_weekly.yaml`` reads them (``<data_dir>/inputs/rossmann_weekly``).

    .venv/bin/python bench/rossmann_weekly.py            # writes the weekly sales table
    .venv/bin/python jobs/pipeline.py --env local,rossmann,rossmann_weekly
    .venv/bin/python bench/bench_accuracy.py --env local,rossmann,rossmann_weekly

A week is kept for a store only when all its 7 days are in the source (the 2014 gap and
the partial first and last weeks become missing weeks, not small ones).  Open and Promo
become 1 when the store was open / on promotion on any day of the week; Customers and
Sales are summed.  Holidays stay daily in the events table and are counted per week by the
feature job.  The weekly table is derived data: it lives under data/, never in git.
"""

from __future__ import annotations

import duckdb
from common import ROOT, ROSSMANN

OUT = ROOT / "data" / "inputs" / "rossmann_weekly"


def main() -> None:
    src = ROSSMANN / "train_clean.parquet"
    if not src.exists():
        raise SystemExit(f"Rossmann data not found at {src} (see ../shared/data/README.md)")
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / "sales.parquet"
    duckdb.sql(
        f"""
        COPY (
          WITH days AS (
            SELECT Store, CAST(Date AS DATE) AS day, Sales, Customers, Open, Promo
            FROM read_parquet('{src}')
          )
          SELECT Store,
                 CAST(day + (7 - isodow(day)) * INTERVAL 1 DAY AS DATE) AS week_end,
                 SUM(Sales)::DOUBLE AS Sales, SUM(Customers)::DOUBLE AS Customers,
                 MAX(Open)::INT AS Open, MAX(Promo)::INT AS Promo
          FROM days GROUP BY 1, 2 HAVING COUNT(*) = 7
        ) TO '{out}' (FORMAT PARQUET)
        """
    )
    n, stores, lo, hi = duckdb.sql(
        f"SELECT count(*), count(DISTINCT Store), min(week_end), max(week_end) "
        f"FROM read_parquet('{out}')"
    ).fetchall()[0]
    print(f"{out}: {n:,} store-weeks, {stores:,} stores, weeks ending {lo} .. {hi}")


if __name__ == "__main__":
    main()
