"""Shared helpers for the benchmarks: config, Spark session, peak memory, task parallelism,
printed tables.  Benchmarks print tables and ratios against references measured in the same
run; they are not tests and assert nothing about speed."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from sales_st.config import Config, load_config  # noqa: E402
from sales_st.runtime.jobs import setup_logging  # noqa: E402

ROSSMANN = ROOT.parent / "shared" / "data" / "rossmann"


def config(data_dir: str | Path, *overrides: str, env: str = "local") -> Config:
    return load_config(ROOT / "conf", env, [f"paths.data_dir={data_dir}", *overrides])


def session(cfg: Config, name: str):
    from sales_st.runtime.session import get_spark

    setup_logging("WARNING")
    return get_spark(cfg, name)


class PeakMemory:
    """Peak resident memory of this process and all its children (JVM, Python workers),
    sampled every ``interval`` seconds, in total and per kind of process."""

    def __init__(self, interval: float = 0.25):
        self.interval = interval
        self.peak_total = 0
        self.peak_by_kind: dict[str, int] = {}
        self._stop = threading.Event()

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total, kinds = 0, {}
            for p in [me] + me.children(recursive=True):
                try:
                    rss = p.memory_info().rss
                    name = p.name()
                    parent = p.parent().name() if p.pid != me.pid else ""
                except psutil.Error:
                    continue
                if "java" in parent and "python" not in name:
                    # a JVM child between fork and exec of a helper (chmod, ...) still maps
                    # the JVM's pages (and carries the forking thread's name): not counted
                    continue
                kind = (
                    "jvm (driver + executors)"
                    if "java" in name
                    else (
                        "driver python"
                        if p.pid == me.pid
                        else "python workers"
                        if "python" in name
                        else "other"
                    )
                )
                kinds[kind] = kinds.get(kind, 0) + rss
                total += rss
            self.peak_total = max(self.peak_total, total)
            for k, v in kinds.items():
                self.peak_by_kind[k] = max(self.peak_by_kind.get(k, 0), v)
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def report(self) -> str:
        parts = ", ".join(f"{k} {v / 2**30:.2f} GiB" for k, v in sorted(self.peak_by_kind.items()))
        return f"peak RSS {self.peak_total / 2**30:.2f} GiB ({parts})"


def task_time(spark, since_ms: float) -> tuple[int, float]:
    """(tasks, summed executor run time in s) of the stages completed since ``since_ms``:
    summed task time over wall time is the parallelism."""
    totals = stage_totals(spark, since_ms)
    return int(totals["tasks"]), totals["run_s"]


def stage_totals(spark, since_ms: float) -> dict[str, float]:
    """Tasks, summed executor run time (s) and bytes spilled to disk and from memory of the
    stages submitted since ``since_ms`` (Spark's status REST API; nan without a UI)."""
    url = spark.sparkContext.uiWebUrl
    app = spark.sparkContext.applicationId
    if not url:
        nan = float("nan")
        return {"tasks": 0, "run_s": nan, "disk_spilled": nan, "memory_spilled": nan}
    with urllib.request.urlopen(f"{url}/api/v1/applications/{app}/stages?status=complete") as r:
        stages = json.load(r)
    out = {"tasks": 0, "run_s": 0.0, "disk_spilled": 0, "memory_spilled": 0}
    for s in stages:
        sub = s.get("submissionTime")
        if sub and _epoch_ms(sub) >= since_ms:
            out["tasks"] += s["numCompleteTasks"]
            out["run_s"] += s["executorRunTime"] / 1000
            out["disk_spilled"] += s.get("diskBytesSpilled", 0)
            out["memory_spilled"] += s.get("memoryBytesSpilled", 0)
    return out


def _epoch_ms(text: str) -> float:
    from datetime import datetime

    return (
        datetime.strptime(text.replace("GMT", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp() * 1000
    )


def table(rows: list[dict[str, Any]], title: str) -> str:
    cols = list(rows[0])
    fmt = {c: max(len(c), *(len(_f(r[c])) for r in rows)) for c in cols}
    line = " | ".join(c.ljust(fmt[c]) for c in cols)
    out = [f"\n{title}", line, "-+-".join("-" * fmt[c] for c in cols)]
    out += [" | ".join(_f(r[c]).ljust(fmt[c]) for c in cols) for r in rows]
    return "\n".join(out)


def _f(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def write_results(name: str, figures: dict[str, Any]) -> Path:
    """``bench/results/<name>.json``: the figures, the commit they were measured at, when."""
    import subprocess

    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = bool(
        subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    out = ROOT / "bench" / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": name,
        "commit": commit,
        "dirty_tree": dirty,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **figures,
    }
    out.write_text(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")
    return out
