"""The feature job on a standalone Spark cluster of two workers on this machine: is every
executor busy, and what does a worker need?

    .venv/bin/python bench/bench_cluster.py [--size 4M] [--workers 2] [--cores 1]
        [--memory 4g] [--executor-memory 3g] [--name cluster_features]

Starts a master and ``--workers`` workers on 127.0.0.1 (``spark-class``, as the cluster test
does), submits ``./spark-submit.sh pipeline --env cluster --stages generate,features`` on a
generated panel of ``--size`` (the sizes of ``bench_features.py``), and reads the
application's event log: per executor, its tasks and their summed run time over the feature
stage's wall time (1.0 = its cores were busy all the time), the peak memory its JVM reported,
and the spill.  Writes ``bench/results/<name>.json`` and a plot of the running tasks per
executor over time (``bench/results/<name>.png``).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import tempfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

from bench_features import SIZES, _size, generator_overrides
from common import ROOT, table, write_results
from profile_events import events

# the loopback cluster's plumbing, as the cluster test starts it
from tests.test_cluster import ENV, VENV_BIN, free_port, port_open, start, stop, wait_for


def start_cluster(tmp: Path, workers: int, cores: int, memory: str) -> tuple[str, list]:
    port, ui = free_port(), free_port()
    spark_class = str(VENV_BIN / "spark-class")
    master = [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1"]
    procs = [start([*master, "--port", str(port), "--webui-port", str(ui)], tmp / "master.log")]
    url = f"spark://127.0.0.1:{port}"
    wait_for(lambda: port_open(port), 90, "the Spark master")
    for i in range(workers):
        worker = [spark_class, "org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1"]
        procs.append(
            start(
                [
                    *worker,
                    "--cores",
                    str(cores),
                    "--memory",
                    memory,
                    "--webui-port",
                    str(free_port()),
                    "--work-dir",
                    str(tmp / f"work{i}"),
                ],
                tmp / f"worker{i}.log",
            )
        )

    def alive() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=5) as r:
                return json.load(r).get("aliveworkers", 0) == workers
        except OSError:
            return False

    wait_for(alive, 120, f"{workers} Spark workers to register")
    return url, procs


def executor_figures(evs: list[dict], phase_prefix: str = "features") -> dict:
    """Per executor: tasks, summed run time, spill, peak JVM heap + off-heap memory, over the
    wall time of the jobs whose description starts with ``phase_prefix`` (the feature stage)."""
    jobs, stage_job = {}, {}
    for e in evs:
        if e.get("Event") == "SparkListenerJobStart":
            desc = (e.get("Properties") or {}).get("spark.job.description") or ""
            jobs[e["Job ID"]] = {"start": e["Submission Time"], "desc": desc}
            for sid in e.get("Stage IDs", []):
                stage_job[sid] = e["Job ID"]
        elif e.get("Event") == "SparkListenerJobEnd" and e["Job ID"] in jobs:
            jobs[e["Job ID"]]["end"] = e["Completion Time"]
    picked = {j for j, v in jobs.items() if v["desc"].startswith(phase_prefix)}
    if not picked:  # no phase names: every job
        picked = set(jobs)
    t0 = min(jobs[j]["start"] for j in picked)
    t1 = max(jobs[j].get("end", jobs[j]["start"]) for j in picked)
    per: dict[str, dict] = defaultdict(
        lambda: {"tasks": 0, "run_s": 0.0, "spill_disk": 0, "peak_jvm": 0, "spans": []}
    )
    for e in evs:
        kind = e.get("Event")
        if kind == "SparkListenerTaskEnd" and stage_job.get(e["Stage ID"]) in picked:
            info, m = e["Task Info"], e.get("Task Metrics") or {}
            ex = per[info["Executor ID"]]
            ex["tasks"] += 1
            ex["run_s"] += m.get("Executor Run Time", 0) / 1000
            ex["spill_disk"] += m.get("Disk Bytes Spilled", 0)
            ex["spans"].append((info["Launch Time"], info["Finish Time"]))
        elif (
            kind == "SparkListenerExecutorMetricsUpdate"
            or kind == "SparkListenerStageExecutorMetrics"
        ):
            peaks = e.get("Executor Metrics") or {}
            used = peaks.get("JVMHeapMemory", 0) + peaks.get("JVMOffHeapMemory", 0)
            rss = peaks.get("ProcessTreeJVMRSSMemory", 0) + peaks.get(
                "ProcessTreePythonRSSMemory", 0
            )
            ex_id = e.get("Executor ID")
            if ex_id is not None:
                per[ex_id]["peak_jvm"] = max(per[ex_id]["peak_jvm"], used)
                per[ex_id]["peak_rss"] = max(per[ex_id].get("peak_rss", 0), rss)
    wall = (t1 - t0) / 1000
    return {"t0": t0, "wall_s": wall, "executors": dict(per)}


def plot(figures: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = figures["t0"]
    execs = sorted(e for e in figures["executors"] if e != "driver")
    fig, axes = plt.subplots(len(execs), 1, figsize=(9, 1.6 * len(execs) + 0.6), sharex=True)
    import numpy as np

    end = max(b for ex in execs for _, b in figures["executors"][ex]["spans"])
    bins = np.arange(0, (end - t0) / 1000 + 1, 1.0)
    for ax, ex in zip(axes if len(execs) > 1 else [axes], execs):
        busy = np.zeros(len(bins))  # task-seconds run in each second
        for a, b in figures["executors"][ex]["spans"]:
            a, b = (a - t0) / 1000, (b - t0) / 1000
            for i in range(int(a), min(int(b) + 1, len(bins))):
                busy[i] += max(0.0, min(b, i + 1) - max(a, i))
        ax.fill_between(bins, busy, step="post", alpha=0.6)
        ax.set_ylabel(f"executor {ex}\nbusy cores")
        ax.set_ylim(0, max(1.0, float(busy.max())) * 1.15)
    (axes[-1] if len(execs) > 1 else axes).set_xlabel("seconds since the feature stage began")
    fig.suptitle("Busy cores per executor (1-second bins), feature job on the standalone cluster")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", default="4M", choices=sorted(SIZES))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cores", type=int, default=1)
    p.add_argument("--memory", default="4g", help="memory each worker offers")
    p.add_argument("--executor-memory", default="3g")
    p.add_argument("--name", default="cluster_features")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        data = tmp / "data"
        (data / "spark-events").mkdir(parents=True)
        t_start = time.perf_counter()
        url, procs = start_cluster(tmp, args.workers, args.cores, args.memory)
        cluster_s = time.perf_counter() - t_start
        try:
            conf = {
                "spark.executor.memory": args.executor_memory,
                "spark.cores.max": str(args.workers * args.cores),
                "spark.eventLog.logStageExecutorMetrics": "true",  # peak memory per executor
                "spark.executor.processTreeMetrics.enabled": "true",  # and its RSS
            }
            submit = [
                "./spark-submit.sh",
                "pipeline",
                "--env",
                "cluster",
                "--stages",
                "generate,features",
                f"paths.data_dir={data}",
                *generator_overrides(args.size),
                "features.stride=28",
                f"spark.conf={json.dumps(conf)}",
            ]
            t0 = time.perf_counter()
            proc = subprocess.run(
                submit,
                cwd=ROOT,
                capture_output=True,
                text=True,
                env={**ENV, "SPARK_MASTER": url},
            )
            submit_s = time.perf_counter() - t0
            (tmp / "pipeline.log").write_text(proc.stderr)
            if proc.returncode != 0:
                print(proc.stdout[-3000:], proc.stderr[-5000:])
                raise SystemExit(f"the pipeline failed ({proc.returncode})")
        finally:
            for proc_ in reversed(procs):
                stop(proc_)
        logs = sorted(glob.glob(f"{data}/spark-events/*"), key=os.path.getmtime)
        figures = executor_figures(events(logs[-1]))
        rows = []
        for ex, f in sorted(figures["executors"].items()):
            if ex == "driver":
                continue
            rows.append(
                {
                    "executor": ex,
                    "tasks": f["tasks"],
                    "task-s": f["run_s"],
                    "busy (task-s / wall-s / cores)": f["run_s"] / figures["wall_s"] / args.cores,
                    "spill to disk GiB": f["spill_disk"] / 2**30,
                    "peak JVM heap + off-heap GiB": f["peak_jvm"] / 2**30,
                    "peak RSS (JVM + Python) GiB": f.get("peak_rss", 0) / 2**30,
                }
            )
        import pyarrow.dataset as ds

        (base,) = glob.glob(f"{data}/inputs/*/sales")
        version = json.loads(Path(base, "_CURRENT").read_text())["version"]
        n_rows = ds.dataset(f"{base}/{version}", format="parquet").count_rows()
        summary = {
            "size": args.size,
            "workers": args.workers,
            "cores per worker": args.cores,
            "executor memory": args.executor_memory,
            "input rows": n_rows,
            "cluster start s": cluster_s,
            "generate + features (spark-submit) s": submit_s,
            "feature stage wall s": figures["wall_s"],
            "features GiB on disk": _size(str(data / "features")) / 2**30,
            "feature stage rows/s": n_rows / figures["wall_s"],
        }
        print(table([summary], "standalone cluster"))
        print(table(rows, "per executor, feature stage"))
        png = ROOT / "bench" / "results" / f"{args.name}.png"
        plot(figures, png)
        out = write_results(args.name, {"summary": summary, "executors": rows})
        print(f"wrote {out} and {png}")


if __name__ == "__main__":
    main()
