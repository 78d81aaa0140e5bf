"""Security defaults: what an embedded (local) run exposes on the network."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from urllib.parse import urlparse

import psutil

from tests.conftest import ROOT

# Started in a subprocess so that the session under test is a fresh JVM (the suite's shared
# session is already running) started with nothing but the project's own settings.
START_SPARK = """
import json, sys
from sales_st.runtime.session import get_spark
from tests.conftest import make_config

cfg = make_config(sys.argv[1], 'spark.conf={"spark.ui.enabled": "true"}')
spark = get_spark(cfg, "sales_st-loopback-test")
print(json.dumps({"ui": spark.sparkContext.uiWebUrl}), flush=True)
sys.stdin.read()  # keep the session up until the test closes stdin
spark.stop()
"""


def is_loopback(host: str) -> bool:
    ip = ipaddress.ip_address(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a JVM's IPv4 socket shows as ::ffff:127.0.0.1
    return ip.is_loopback


def test_embedded_spark_listens_on_loopback_only(tmp_path):
    # Neither an address chosen by the caller nor a gateway of an enclosing spark-submit:
    # the defaults alone must keep the driver, the block manager and the UI on loopback.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SPARK_LOCAL_IP", "SPARK_LOCAL_HOSTNAME", "PYSPARK_GATEWAY_PORT")
        and not k.startswith("PYSPARK_SUBMIT")
    }
    log = tmp_path / "spark.log"
    proc = subprocess.Popen(
        [sys.executable, "-c", START_SPARK, str(tmp_path / "data")],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=open(log, "w"),
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, "the Spark session did not start:\n" + log.read_text()[-3000:]
        ui_port = urlparse(json.loads(line)["ui"]).port
        jvms = [p for p in psutil.Process(proc.pid).children(recursive=True) if p.name() == "java"]
        assert jvms, "no Spark JVM among the children of the Python driver"
        listening = {
            (c.laddr.ip, c.laddr.port)
            for jvm in jvms
            for c in jvm.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        }
        exposed = sorted(addr for addr in listening if not is_loopback(addr[0]))
        assert not exposed, f"Spark listens beyond loopback: {exposed} (all: {sorted(listening)})"
        assert ui_port in {port for _, port in listening}, (ui_port, sorted(listening))
    finally:
        if proc.stdin:
            proc.stdin.close()  # the child stops its session and exits
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
            proc.kill()
            proc.wait()
