"""The hyper-parameter search as a benchmark: runs ``jobs/tune.py`` and tabulates its study.

    .venv/bin/python bench/bench_tune.py --env local tune.trials=12 tune.study=demo_s42

Runs the tuning job with the same environment and overrides (``--no-run``: only reads a study
that is already there; a finished study's re-run trains nothing), then reads the study's
summary (``<study dir>/<study>-summary.json``) and prints every trial -- state, best
validation loss, parameters, training seconds, the epoch a pruned trial stopped at -- the best
trial and the study's wall time: from the first trial's start to the last one's end, which a
killed and resumed search counts with its pause.  Whether the best parameters also forecast
the test windows better is ``bench_network.py``'s question (a variant with them against one
without, same seeds).

Figures: ``bench/results/<--name>.json`` (default ``tune_<study>``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from typing import Any

from common import ROOT, table, write_results

from sales_st.config import load_config


def trial_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for t in summary["trials"]:
        losses = t.get("val_loss") or []
        rows.append(
            {
                "trial": t["number"],
                "state": t["state"],
                "best_val_loss": t["value"],
                "epochs": len(losses),
                "pruned_at": t.get("pruned_at_epoch") or "",
                "seconds": round(t["seconds"]) if t.get("seconds") is not None else "",
                **{k.split(".", 1)[1]: v for k, v in sorted(t["params"].items())},
            }
        )
    return rows


def study_wall_seconds(summary: dict[str, Any]) -> float | None:
    trials = summary["trials"]
    starts = [dt.datetime.fromisoformat(t["started"]) for t in trials if t.get("started")]
    ends = [dt.datetime.fromisoformat(t["finished"]) for t in trials if t.get("finished")]
    if not starts or not ends:
        return None
    return round((max(ends) - min(starts)).total_seconds(), 1)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--env", default="local")
    p.add_argument("--name", default="")
    p.add_argument("--no-run", action="store_true", help="read the study, do not run the job")
    p.add_argument("overrides", nargs="*", help="config overrides, as for jobs/tune.py")
    args = p.parse_args()
    cfg = load_config(ROOT / "conf", args.env, args.overrides)
    run_s = None
    if not args.no_run:
        started = time.monotonic()
        cmd = [sys.executable, str(ROOT / "jobs" / "tune.py"), "--env", args.env, *args.overrides]
        subprocess.run(cmd, cwd=ROOT, check=True)
        run_s = round(time.monotonic() - started, 1)

    from sales_st.training.tune import study_dir

    path = os.path.join(study_dir(cfg), f"{cfg.tune.study}-summary.json")
    with open(path) as fh:
        summary = json.load(fh)
    rows = trial_rows(summary)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    print(table([{k: r.get(k, "") for k in keys} for r in rows], f"study {summary['study']}"))
    best = summary["best"]
    wall = study_wall_seconds(summary)
    print(f"\nbest: trial {best['number']}, val loss {best['value']:.5f}, {best['params']}")
    print(f"states: {summary['states']}; study wall {wall} s; this run {run_s} s")
    figures = {
        "command": " ".join(["bench/bench_tune.py", "--env", args.env, *args.overrides]),
        "study": summary["study"],
        "space": {k: vars(v) for k, v in cfg.tune.space.items()},
        "states": summary["states"],
        "best": best,
        "overlay": summary["overlay"],
        "trials": rows,
        "study_wall_s": wall,
        "training_s": summary["wall_seconds"]["all_trials"],
        "this_run_s": run_s,
    }
    out = write_results(args.name or f"tune_{cfg.tune.study}", figures)
    print(f"figures: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
