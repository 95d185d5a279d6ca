"""End to end: a real Prometheus (Debian's /usr/bin/prometheus) scrapes a real attnbench-server.

The test drives a known number of RPCs with the Python stubs, starts Prometheus on loopback with
a generated configuration (1 s scrapes of the server's metrics port, plus the repository's rules
from deploy/prometheus/rules), and polls Prometheus's HTTP query API until the request counter
reads exactly what was driven. It also checks that the rules load and evaluate without error on
live data, and that Prometheus parses every dashboard query. Skips only when Prometheus is not
installed (scripts/setup installs it). Every wait is bounded.
"""

import json
import os
import pathlib
import re
import signal
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

import grpc

import harness
from attnbench.v1 import attnbench_pb2 as pb
from attnbench.v1 import attnbench_pb2_grpc as pb_grpc

PROMETHEUS = "/usr/bin/prometheus"
DEPLOY_DIR = pathlib.Path(__file__).resolve().parents[2] / "deploy"
RULES_DIR = DEPLOY_DIR / "prometheus" / "rules"
DASHBOARDS = sorted((DEPLOY_DIR / "grafana" / "dashboards").glob("*.json"))
CAPABILITY_CALLS = 7
RPC_TIMEOUT = 120
WAIT_SECONDS = 60


def small_run():
    req = pb.RunRequest(backend="cpu_reference")
    spec = req.spec
    spec.batch_size = 1
    spec.seq_len_q = 32
    spec.seq_len_kv = 32
    spec.head_dim_qk = 16
    spec.layout.mha.num_heads = 1
    spec.mask.causal.SetInParent()
    spec.dtype = pb.DTYPE_FLOAT32
    req.measurement.warmup_iterations = 1
    req.measurement.min_iterations = 2
    req.measurement.max_iterations = 3
    return req


class Prometheus:
    """Prometheus on 127.0.0.1 with a temporary storage dir; always stopped by stop()."""

    def __init__(self, metrics_target):
        self.dir = tempfile.TemporaryDirectory(prefix="attnbench-prom-")
        config = pathlib.Path(self.dir.name) / "prometheus.yml"
        # JSON is YAML; rule files are absolute so the repository's own rules are loaded.
        config.write_text(json.dumps({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES_DIR / "*.yml")],
            "scrape_configs": [{"job_name": "attnbench",
                                "static_configs": [{"targets": [metrics_target]}]}],
        }))
        self.port = harness.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}",
             f"--storage.tsdb.path={self.dir.name}/data",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)

    def log_text(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-4000:]

    def get(self, path, **params):
        """GET path (JSON API) and return its decoded body, or None while Prometheus starts."""
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited (rc={self.proc.returncode}):\n"
                                 f"{self.log_text()}")
        url = f"{self.url}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.load(response)
        except (OSError, ValueError):
            return None

    def get_raw(self, path, **params):
        """GET path and return its JSON body even for an HTTP error (Prometheus explains it)."""
        url = f"{self.url}{path}?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            return json.load(error)

    def query(self, promql):
        """{label-tuple: value} for an instant query, or None if no answer yet."""
        body = self.get("/api/v1/query", query=promql)
        if body is None or body.get("status") != "success":
            return None
        return {tuple(sorted(r["metric"].items())): float(r["value"][1])
                for r in body["data"]["result"]}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()
        self.dir.cleanup()


def wait_for(what, probe, timeout=WAIT_SECONDS):
    """Calls probe() every 0.5 s until it returns something other than None; bounded."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last is not None:
            return last
        time.sleep(0.5)
    raise AssertionError(f"gave up after {timeout} s waiting for {what}")


class PrometheusScrapeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.access(PROMETHEUS, os.X_OK):
            raise unittest.SkipTest(f"{PROMETHEUS} is not installed (bash scripts/setup)")
        cls.server = harness.Server("--cpu_threads=2")
        cls.prometheus = None
        try:
            with grpc.insecure_channel(cls.server.target) as channel:
                grpc.channel_ready_future(channel).result(timeout=30)
                stub = pb_grpc.AttnBenchStub(channel)
                for _ in range(CAPABILITY_CALLS):
                    stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=RPC_TIMEOUT)
                stub.Run(small_run(), timeout=RPC_TIMEOUT)
            cls.prometheus = Prometheus(f"{cls.server.metrics_host}:{cls.server.metrics_port}")
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.prometheus is not None:
            cls.prometheus.stop()
        cls.server.stop()

    def wait_for_value(self, promql, expected):
        """Polls promql until its single series reads `expected`; fails at once above it."""
        def probe():
            result = self.prometheus.query(promql)
            if not result:
                return None
            self.assertEqual(len(result), 1, result)
            value = next(iter(result.values()))
            self.assertLessEqual(value, expected, f"{promql} overshot")
            return value if value == expected else None

        self.assertEqual(wait_for(f"{promql} == {expected}", probe), expected)

    def test_scraped_request_counter_matches_the_calls(self):
        self.wait_for_value(
            'attnbench_requests_total{method="GetCapabilities",code="OK"}', CAPABILITY_CALLS)
        self.wait_for_value('attnbench_requests_total{method="Run",code="OK"}', 1)
        self.wait_for_value('up{job="attnbench"}', 1)

    def test_repository_rules_load_and_evaluate(self):
        # A recorded rate over the scraped counter shows the rules run on live series.
        wait_for("the request rate recording rule",
                 lambda: self.prometheus.query(
                     'instance_method_code:attnbench_requests:rate5m{method="GetCapabilities"}')
                 or None)
        groups = wait_for("the rule groups", lambda: (self.prometheus.get("/api/v1/rules") or {})
                          .get("data", {}).get("groups") or None)
        files = {pathlib.Path(g["file"]).name for g in groups}
        self.assertEqual(files, {p.name for p in RULES_DIR.glob("*.yml")})
        for group in groups:
            for rule in group["rules"]:
                with self.subTest(rule=rule["name"]):
                    self.assertNotEqual(rule.get("health"), "err", rule.get("lastError"))
        # Nothing is wrong with this server, so no alert may be firing.
        alerts = self.prometheus.get("/api/v1/alerts")["data"]["alerts"]
        self.assertEqual([a for a in alerts if a["state"] == "firing"], [])

    def test_dashboard_queries_parse(self):
        # Grafana's variables become what "All" would send; Prometheus then parses each query.
        exprs = []
        for path in DASHBOARDS:
            panels = json.loads(path.read_text())["panels"]
            exprs += [(f"{path.name} {p['title']!r}", t["expr"])
                      for p in panels for t in p.get("targets", [])]
        self.assertTrue(exprs)
        wait_for("the query API", lambda: self.prometheus.get("/api/v1/query", query="1"))
        for where, expr in exprs:
            promql = re.sub(r"\$__(?:rate_)?interval", "1m", expr)
            promql = re.sub(r"\$\{?\w+\}?", ".*", promql)
            with self.subTest(where):
                body = self.prometheus.get_raw("/api/v1/query", query=promql)
                self.assertEqual(body.get("status"), "success", f"{promql}: {body}")


if __name__ == "__main__":
    unittest.main()
