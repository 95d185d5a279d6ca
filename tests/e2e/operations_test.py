"""End to end: what operators rely on. gRPC health and reflection, the Prometheus endpoint
(promtool-clean, counters moving), and a prompt, clean exit on SIGTERM."""

import shutil
import signal
import subprocess
import time
import unittest

import grpc

import harness
from attnbench.v1 import attnbench_pb2 as pb
from attnbench.v1 import attnbench_pb2_grpc as pb_grpc
from health.v1 import health_pb2
from health.v1 import health_pb2_grpc
from reflection.v1alpha import reflection_pb2
from reflection.v1alpha import reflection_pb2_grpc

TIMEOUT = 30

SERVER = None
CHANNEL = None


def setUpModule():
    global SERVER, CHANNEL
    SERVER = harness.Server("--cpu_threads=2")
    CHANNEL = grpc.insecure_channel(SERVER.target)
    grpc.channel_ready_future(CHANNEL).result(timeout=TIMEOUT)


def tearDownModule():
    if CHANNEL is not None:
        CHANNEL.close()
    if SERVER is not None:
        SERVER.stop()


def scrape():
    out = subprocess.run(["curl", "-sS", "--fail", "--max-time", "10", SERVER.metrics_url],
                         capture_output=True, text=True, timeout=TIMEOUT)
    if out.returncode != 0:
        raise AssertionError(f"curl {SERVER.metrics_url} failed: {out.stderr}")
    return out.stdout


def small_run_request():
    req = pb.RunRequest(backend="cpu_reference")
    req.spec.batch_size, req.spec.seq_len_q, req.spec.seq_len_kv = 1, 32, 32
    req.spec.head_dim_qk = 32
    req.spec.dtype = pb.DTYPE_FLOAT32
    req.spec.layout.gqa.num_query_heads = 2
    req.spec.layout.gqa.num_kv_heads = 1
    req.measurement.min_iterations = 2
    req.measurement.max_iterations = 2
    return req


class HealthTest(unittest.TestCase):

    def test_serving(self):
        stub = health_pb2_grpc.HealthStub(CHANNEL)
        for service in ("", "attnbench.v1.AttnBench"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
            self.assertEqual(reply.status, health_pb2.HealthCheckResponse.SERVING, service)

    def test_unknown_service_is_not_found(self):
        stub = health_pb2_grpc.HealthStub(CHANNEL)
        with self.assertRaises(grpc.RpcError) as raised:
            stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=TIMEOUT)
        self.assertEqual(raised.exception.code(), grpc.StatusCode.NOT_FOUND)


class ReflectionTest(unittest.TestCase):

    def test_lists_services_and_serves_the_schema(self):
        stub = reflection_pb2_grpc.ServerReflectionStub(CHANNEL)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="attnbench.v1.AttnBench"),
        ]
        replies = list(stub.ServerReflectionInfo(iter(requests), timeout=TIMEOUT))
        self.assertEqual(len(replies), 2)
        services = {s.name for s in replies[0].list_services_response.service}
        self.assertIn("attnbench.v1.AttnBench", services)
        self.assertIn("grpc.health.v1.Health", services)
        files = replies[1].file_descriptor_response.file_descriptor_proto
        self.assertTrue(files)
        self.assertTrue(any(b"AttnBench" in f for f in files))


class MetricsTest(unittest.TestCase):

    def test_promtool_accepts_the_exposition(self):
        promtool = shutil.which("promtool")
        self.assertIsNotNone(promtool, "promtool not installed (scripts/setup installs it)")
        # A measured run, so that every family has a sample (empty families are not exposed).
        pb_grpc.AttnBenchStub(CHANNEL).Run(small_run_request(), timeout=TIMEOUT)
        text = scrape()
        for name in ("attnbench_requests_total", "attnbench_request_duration_seconds",
                     "attnbench_runs_total", "attnbench_kernel_time_seconds",
                     "attnbench_build_info"):
            self.assertIn(f"# TYPE {name} ", text)
        out = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                             text=True, timeout=TIMEOUT)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)

    def test_counters_move(self):
        stub = pb_grpc.AttnBenchStub(CHANNEL)
        before = scrape()
        stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=TIMEOUT)
        req = small_run_request()
        stub.Run(req, timeout=TIMEOUT)
        bad = pb.RunRequest()
        bad.CopyFrom(req)
        bad.spec.layout.gqa.num_kv_heads = 3
        with self.assertRaises(grpc.RpcError):
            stub.Run(bad, timeout=TIMEOUT)
        after = scrape()

        def delta(name, **labels):
            return harness.sample(after, name, **labels) - harness.sample(before, name, **labels)

        self.assertEqual(delta("attnbench_requests_total", method="GetCapabilities", code="OK"), 1)
        self.assertEqual(delta("attnbench_requests_total", method="Run", code="OK"), 1)
        self.assertEqual(
            delta("attnbench_requests_total", method="Run", code="INVALID_ARGUMENT"), 1)
        self.assertEqual(delta("attnbench_request_duration_seconds_count", method="Run"), 2)
        self.assertEqual(delta("attnbench_runs_total", backend="cpu_reference", layout="gqa"), 1)
        self.assertEqual(delta("attnbench_kernel_time_seconds_count", backend="cpu_reference"), 1)
        self.assertEqual(harness.sample(after, "attnbench_build_info"), 1)


class ShutdownTest(unittest.TestCase):

    def test_sigterm_exits_zero_promptly(self):
        with harness.Server("--cpu_threads=1", "--shutdown_grace_seconds=5") as server:
            with grpc.insecure_channel(server.target) as channel:
                stub = pb_grpc.AttnBenchStub(channel)
                stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=TIMEOUT)
            start = time.monotonic()
            code = server.terminate(timeout=20)
            elapsed = time.monotonic() - start
            self.assertEqual(code, 0, server.stderr_text())
            self.assertLess(elapsed, 10)

    def test_sigterm_lets_an_in_flight_run_finish(self):
        with harness.Server("--cpu_threads=1", "--shutdown_grace_seconds=30") as server:
            with grpc.insecure_channel(server.target) as channel:
                grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
                stub = pb_grpc.AttnBenchStub(channel)
                req = small_run_request()
                # About a second or more of work on one thread.
                req.spec.seq_len_q = req.spec.seq_len_kv = 512
                req.spec.head_dim_qk = 64
                req.measurement.min_iterations = req.measurement.max_iterations = 40
                req.measurement.max_duration_seconds = 20
                future = stub.Run.future(req, timeout=60)
                time.sleep(1.0)  # Let the request reach the server.
                server.proc.send_signal(signal.SIGTERM)
                result = future.result(timeout=60).result
                self.assertEqual(result.timing.count, 40)
            self.assertEqual(server.terminate(timeout=30), 0, server.stderr_text())


if __name__ == "__main__":
    unittest.main()
