"""Runs on a real cluster: a Spark standalone master and two workers on 127.0.0.1, the
pipeline submitted through ./spark-submit.sh with the code and the venv shipped, Horovod
ranks on both executors; then the Thrift server over the same catalog, queried by beeline."""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY

pytestmark = pytest.mark.slow

VENV_BIN = Path(sys.executable).parent
import pyspark  # noqa: E402

ENV = {
    **os.environ,
    "SPARK_LOCAL_IP": "127.0.0.1",
    "SPARK_LOCAL_HOSTNAME": "localhost",
    "SPARK_HOME": os.path.dirname(pyspark.__file__),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(1)
    raise TimeoutError(f"timed out waiting for {what}")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def start(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        args,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        env=ENV,
        cwd=ROOT,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A standalone master and two 1-core workers on loopback; always stopped afterwards."""
    tmp = tmp_path_factory.mktemp("cluster")
    port, ui = free_port(), free_port()
    spark_class = str(VENV_BIN / "spark-class")
    procs = [
        start(
            [
                spark_class,
                "org.apache.spark.deploy.master.Master",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--webui-port",
                str(ui),
            ],
            tmp / "master.log",
        )
    ]
    try:
        wait_for(lambda: port_open(port), 90, "the Spark master")
        url = f"spark://127.0.0.1:{port}"
        for i in range(2):
            procs.append(
                start(
                    [
                        spark_class,
                        "org.apache.spark.deploy.worker.Worker",
                        url,
                        "--host",
                        "127.0.0.1",
                        "--cores",
                        "1",
                        "--memory",
                        "4g",
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
                    return json.load(r).get("aliveworkers", 0) == 2
            except OSError:  # the web UI starts a little after the RPC port
                return False

        wait_for(alive, 120, "two Spark workers to register")
        yield {"url": url, "dir": tmp}
    finally:
        for p in reversed(procs):
            stop(p)


NOISE = re.compile(
    r"WARN.*(hive|datanucleus|metastore|tensorflow|petastorm|DAGScheduler)"
    r"|Cache cleanup complete|is slow compared to the batch time",
    re.IGNORECASE,
)


@pytest.fixture(scope="module")
def pipeline_run(cluster):
    data = cluster["dir"] / "data"
    args = [
        "./spark-submit.sh",
        "pipeline",
        "--env",
        "cluster",
        f"paths.data_dir={data}",
        # the tiny panel: what is proven here is the submission, the shipped environment and
        # the ranks on both executors, not the model (two shards, one per rank)
        *TINY,
        "train.epochs=2",
        # 2 shuffle partitions, not the overlay's 16: on 1-core executors every task costs
        # about 0.13 s of scheduling, and the tiny panel fills none of them (1,300 fewer tasks)
        'spark.conf={"spark.executor.memory": "2g", "spark.cores.max": "2", '
        '"spark.sql.shuffle.partitions": "2"}',
    ]
    t0 = time.time()
    proc = subprocess.run(
        args,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        env={**ENV, "SPARK_MASTER": cluster["url"]},
    )
    (cluster["dir"] / "pipeline.log").write_text(proc.stderr)
    (cluster["dir"] / "pipeline.out").write_text(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return {"data": data, "stdout": proc.stdout, "stderr": proc.stderr, "seconds": time.time() - t0}


def test_pipeline_runs_on_the_standalone_cluster(cluster, pipeline_run):
    err = pipeline_run["stderr"]
    both = pipeline_run["stdout"] + err
    # submitted to the cluster with the package and the environment shipped
    line = next(
        line
        for line in err.splitlines()
        if line.startswith("spark-submit.sh: ") and " --master " in line
    )
    assert f"--master {cluster['url']}" in line and "--py-files" in line
    assert "#environment" in line and "spark.pyspark.python=./environment/bin/python" in line
    # two Horovod ranks, one in each executor's directory, running the shipped interpreter
    ranks = re.findall(r"rank (\d) of 2 .* executor dir (\S+), python (\S+)", both)
    assert sorted(r[0] for r in ranks) == ["0", "1"], both[-3000:]
    dirs = {r[1] for r in ranks}
    assert len(dirs) == 2 and all("/app-" in d for d in dirs)
    assert all(r[2].endswith("environment/bin/python") for r in ranks)
    out = pipeline_run["stdout"]
    assert "sales_st pipeline finished." in out and "-> table sales_st.forecasts" in out
    # a quiet console: none of Hive's, the metastore's, TensorFlow's or Petastorm's routine
    # warnings and prints, on the driver or from the ranks
    noisy = [line for line in both.splitlines() if NOISE.search(line)]
    assert not noisy, "\n".join(noisy[:20])
    n_rows = int(re.search(r"forecasts : (\d+) rows", out).group(1))
    table = pipeline_run["data"] / "warehouse" / "sales_st.db" / "forecasts"
    q = (
        f'import duckdb; print(duckdb.connect().execute("SELECT count(*), '
        f"min(p10 <= p50 AND p50 <= p90) FROM read_parquet('{table}/*/*.parquet')\").fetchone())"
    )
    res = subprocess.run([sys.executable, "-c", q], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    count, ordered = ast.literal_eval(res.stdout.strip())
    assert count == n_rows > 0 and ordered


def test_thrift_server_serves_the_forecasts_to_beeline(pipeline_run):
    data = pipeline_run["data"]
    port = free_port()
    env = ENV
    start_cmd = [
        "scripts/thrift-server.sh",
        "start",
        "--env",
        "cluster",
        "--port",
        str(port),
        f"paths.data_dir={data}",
    ]
    proc = subprocess.run(start_cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    try:
        assert proc.returncode == 0, proc.stderr + proc.stdout
        beeline = [
            str(VENV_BIN / "beeline"),
            "-u",
            f"jdbc:hive2://127.0.0.1:{port}",
            "--silent=true",
            "--outputformat=csv2",
            "-e",
            "SELECT run_date, count(*) AS n FROM sales_st.forecasts GROUP BY run_date",
        ]
        res = subprocess.run(beeline, capture_output=True, text=True, timeout=300, env=ENV)
        assert res.returncode == 0, res.stderr[-3000:]
        lines = [x for x in res.stdout.splitlines() if re.match(r"\d{4}-\d\d-\d\d,\d+", x)]
        n_rows = int(re.search(r"forecasts : (\d+) rows", pipeline_run["stdout"]).group(1))
        assert len(lines) == 1 and int(lines[0].split(",")[1]) == n_rows
    finally:
        subprocess.run(
            ["scripts/thrift-server.sh", "stop", "--port", str(port)], cwd=ROOT, env=env, timeout=60
        )
