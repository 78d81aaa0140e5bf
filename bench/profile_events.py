"""Where a Spark application's time went, from its event log (no UI needed).

    .venv/bin/python bench/profile_events.py data/spark-events/local-1796018532470.zstd
    .venv/bin/python bench/profile_events.py --latest data/spark-events --top 8

Per phase (the job description that ``sales_st.frames.phase`` sets, else the call site):
the wall time its jobs span, the jobs and tasks, the summed executor run time (task-s: over
the wall time, how busy the cores were), shuffle and spill.  Then the slowest stages, and the
driver's time outside any Spark job (planning, Python, TensorFlow).  Compressed logs
(``.zstd``, Spark's default codec here) are read through the ``zstd`` command.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
from collections import defaultdict
from typing import Any

from common import table


def events(path: str) -> list[dict[str, Any]]:
    if ".zstd" in path:
        raw = subprocess.run(["zstd", "-dcq", path], capture_output=True).stdout
    else:
        with open(path, "rb") as f:
            raw = f.read()
    out = []
    for line in raw.decode("utf-8", "replace").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # the last line of a log still being written
            continue
    return out


def profile(evs: list[dict[str, Any]]) -> dict[str, Any]:
    jobs: dict[int, dict[str, Any]] = {}
    stage_job: dict[int, int] = {}
    stages: dict[int, dict[str, Any]] = {}
    app = {"start": None, "end": None}
    for e in evs:
        kind = e.get("Event")
        if kind == "SparkListenerApplicationStart":
            app["start"] = e["Timestamp"]
        elif kind == "SparkListenerApplicationEnd":
            app["end"] = e["Timestamp"]
        elif kind == "SparkListenerJobStart":
            props = e.get("Properties") or {}
            infos = e.get("Stage Infos") or []
            # the result stage is the job's newest (highest id); the others may be reused
            site = max(infos, key=lambda i: i["Stage ID"])["Stage Name"] if infos else "?"
            jobs[e["Job ID"]] = {
                "start": e["Submission Time"],
                "end": None,
                "phase": props.get("spark.job.description") or site,
            }
            for sid in e.get("Stage IDs", []):  # a stage runs in the first job that needs it
                stage_job.setdefault(sid, e["Job ID"])
        elif kind == "SparkListenerJobEnd":
            if e["Job ID"] in jobs:
                jobs[e["Job ID"]]["end"] = e["Completion Time"]
        elif kind == "SparkListenerStageCompleted":
            info = e["Stage Info"]
            _stage(stages, info["Stage ID"]).update(
                name=info["Stage Name"],
                tasks=info["Number of Tasks"],
                wall=(info.get("Completion Time", 0) - info.get("Submission Time", 0)) / 1e3,
            )
        elif kind == "SparkListenerTaskEnd":
            m = e.get("Task Metrics") or {}
            s = stages.setdefault(
                e["Stage ID"],
                {
                    "name": "?",
                    "tasks": 0,
                    "wall": 0.0,
                    "run": 0.0,
                    "shuffle_mb": 0.0,
                    "spill_mb": 0.0,
                },
            )
            s["run"] += m.get("Executor Run Time", 0) / 1e3
            w = m.get("Shuffle Write Metrics") or {}
            s["shuffle_mb"] += w.get("Shuffle Bytes Written", 0) / 2**20
            s["spill_mb"] += m.get("Disk Bytes Spilled", 0) / 2**20
    phases: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"jobs": 0, "first": None, "last": None, "tasks": 0, "task_s": 0.0, "spill_mb": 0.0}
    )
    spans = []
    for j in jobs.values():
        if j["end"] is None:
            continue
        spans.append((j["start"], j["end"]))
        p = phases[j["phase"]]
        p["jobs"] += 1
        p["first"] = j["start"] if p["first"] is None else min(p["first"], j["start"])
        p["last"] = j["end"] if p["last"] is None else max(p["last"], j["end"])
        p.setdefault("busy", []).append((j["start"], j["end"]))
    for sid, s in stages.items():
        jid = stage_job.get(sid)
        if jid in jobs and jobs[jid]["end"] is not None:
            p = phases[jobs[jid]["phase"]]
            p["tasks"] += s["tasks"]
            p["task_s"] += s["run"]
            p["spill_mb"] += s["spill_mb"]
    in_jobs = _union(spans) / 1e3
    total = ((app["end"] or max((e for _, e in spans), default=0)) - (app["start"] or 0)) / 1e3
    rows = []
    for name, p in phases.items():
        wall = _union(p.pop("busy", [])) / 1e3
        rows.append(
            {
                "phase": name[:70],
                "jobs": p["jobs"],
                "job wall s": round(wall, 1),
                "tasks": p["tasks"],
                "task-s": round(p["task_s"], 1),
                "task-s / wall-s": round(p["task_s"] / wall, 2) if wall else 0.0,
                "spill MB": round(p["spill_mb"], 1),
            }
        )
    rows.sort(key=lambda r: -r["job wall s"])
    top = sorted(stages.items(), key=lambda kv: -kv[1]["wall"])
    return {
        "app_s": round(total, 1),
        "in_jobs_s": round(in_jobs, 1),
        "outside_jobs_s": round(total - in_jobs, 1),
        "phases": rows,
        "stages": [
            {
                "stage": sid,
                "phase": jobs[stage_job[sid]]["phase"][:50] if sid in stage_job else "?",
                "name": s["name"][:40],
                "tasks": s["tasks"],
                "wall s": round(s["wall"], 1),
                "task-s": round(s["run"], 1),
                "shuffle MB": round(s["shuffle_mb"], 1),
                "spill MB": round(s["spill_mb"], 1),
            }
            for sid, s in top
        ],
    }


def _stage(stages: dict[int, dict[str, Any]], sid: int) -> dict[str, Any]:
    return stages.setdefault(
        sid, {"name": "?", "tasks": 0, "wall": 0.0, "run": 0.0, "shuffle_mb": 0.0, "spill_mb": 0.0}
    )


def _union(spans: list[tuple[int, int]]) -> float:
    total, end = 0.0, None
    for a, b in sorted(spans):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("log", help="an event log file, or with --latest a directory of them")
    p.add_argument("--latest", action="store_true", help="the newest log in the directory")
    p.add_argument("--top", type=int, default=10, help="slowest stages to list")
    a = p.parse_args()
    path = a.log
    if a.latest:
        path = max(glob.glob(os.path.join(a.log, "*")), key=os.path.getmtime)
    prof = profile(events(path))
    print(
        f"{os.path.basename(path)}: {prof['app_s']} s in all, {prof['in_jobs_s']} s inside "
        f"Spark jobs, {prof['outside_jobs_s']} s outside them (driver: planning, Python, "
        "TensorFlow, waiting)"
    )
    print(table(prof["phases"], "Time per phase (job description or call site)"))
    print(table(prof["stages"][: a.top], f"The {a.top} slowest stages"))


if __name__ == "__main__":
    main()
