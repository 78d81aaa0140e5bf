"""What averaging independently trained networks gains, read off their saved predictions.

    .venv/bin/python bench/bench_network.py --env local,rossmann --predictions /tmp/pred \\
        --variant 'dec256_s11=model.decoder_units=256,seed=11' ... seeds 12, 13
    .venv/bin/python bench/bench_seed_ensemble.py --name network_rossmann_seed_ensemble \\
        --group 'dec256=/tmp/pred/dec256_s11,/tmp/pred/dec256_s12,/tmp/pred/dec256_s13'

Each prefix names the ``<prefix>_val.npz`` / ``<prefix>_test.npz`` files that
``bench_network.py --predictions`` writes (quantiles in sales units, the actuals, and the
rows ``evaluate.metric_filter`` keeps).  For every group the table shows each run's RMSPE
and WAPE of the median on the validation and test windows, their mean, and the same metrics
for the mean of the runs' quantiles (a seed ensemble trained as separate runs), which is
what ``model.members`` serves from one model trained side by side.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np
from bench_network import rmspe_wape
from common import table, write_results

SPLITS = ("val", "test")


def metrics(median: np.ndarray, actual: np.ndarray, keep: np.ndarray) -> tuple[float, float]:
    return rmspe_wape(actual[keep], median[keep])


def load(prefix: str, split: str) -> dict[str, np.ndarray]:
    with np.load(f"{prefix}_{split}.npz") as f:
        return {k: f[k] for k in f.files}


def group_rows(name: str, prefixes: list[str]) -> list[dict[str, Any]]:
    runs = {p: {s: load(p, s) for s in SPLITS} for p in prefixes}
    first = runs[prefixes[0]]
    for p, data in runs.items():
        for s in SPLITS:  # the same windows and rows, or the mean below would be meaningless
            if not (
                np.array_equal(data[s]["keep"], first[s]["keep"])
                and np.allclose(data[s]["actual"], first[s]["actual"])
            ):
                raise SystemExit(f"{p}: not the same {s} windows as {prefixes[0]}")
    mid = first["test"]["q"].shape[-1] // 2  # the middle quantile: the median of p10/p50/p90
    figures: dict[str, dict[str, tuple[float, float]]] = {}  # run -> split -> (rmspe, wape)
    for p, data in runs.items():
        figures[p.rsplit("/", 1)[-1]] = {
            s: metrics(data[s]["q"][..., mid], data[s]["actual"], data[s]["keep"]) for s in SPLITS
        }
    n = len(prefixes)
    figures[f"mean of the {n} runs"] = {
        s: tuple(np.mean([f[s] for f in list(figures.values())[:n]], axis=0)) for s in SPLITS
    }
    figures[f"mean of the {n} forecasts"] = {
        s: metrics(
            np.mean([runs[p][s]["q"][..., mid] for p in prefixes], axis=0),
            first[s]["actual"],
            first[s]["keep"],
        )
        for s in SPLITS
    }
    rows: list[dict[str, Any]] = []
    for run, by_split in figures.items():
        row: dict[str, Any] = {"group": name, "run": run}
        for s, (rmspe, wape) in by_split.items():
            row[f"{s}_rmspe"], row[f"{s}_wape"] = round(float(rmspe), 4), round(float(wape), 4)
        rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--group", action="append", required=True, help="name=prefix,prefix,...")
    p.add_argument("--name", default="network_seed_ensemble")
    args = p.parse_args()
    rows: list[dict[str, Any]] = []
    for g in args.group:
        name, _, rest = g.partition("=")
        rows += group_rows(name, [x for x in rest.split(",") if x])
    print(table(rows, "seed ensembles from saved predictions (RMSPE / WAPE of the median)"))
    out = write_results(args.name, {"command": " ".join(sys.argv), "rows": rows})
    print(f"figures: {out}")


if __name__ == "__main__":
    main()
