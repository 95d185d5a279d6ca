"""End to end under load and faults, on the CPU backend: 64 concurrent clients of two tenants for a
bounded time (every request answered exactly once, the tenants' device time within 10% of each
other, resident memory flat after warm-up), deadlines and cancellation while queued and while
running, and the per-tenant queue limit."""

import threading
import time
import unittest

import grpc

import harness
from attnbench.v1 import attnbench_pb2 as pb
from attnbench.v1 import attnbench_pb2_grpc as pb_grpc

CLIENTS = 64
LOAD_SECONDS = 20
WARMUP_SECONDS = 5


def run_request(seq=32, iterations=2, seconds=None):
    req = pb.RunRequest(backend="cpu_reference")
    req.spec.batch_size, req.spec.seq_len_q, req.spec.seq_len_kv = 1, seq, seq
    req.spec.head_dim_qk = 32
    req.spec.dtype = pb.DTYPE_FLOAT32
    req.spec.layout.mha.num_heads = 2
    req.measurement.warmup_iterations = 0
    # Warm: these tests are about queues and cancellation, not cold caches. A cold run's first
    # flush first-touches a buffer sized from the host's L3 (hundreds of MiB on some hosts),
    # seconds that are not the queueing being measured.
    req.measurement.cache_mode = pb.CACHE_MODE_WARM
    req.measurement.min_iterations = iterations if seconds is None else 1
    req.measurement.max_iterations = iterations
    if seconds is not None:
        req.measurement.max_duration_seconds = seconds
    req.check.mode = pb.CHECK_MODE_OFF
    return req


class LoadTest(unittest.TestCase):

    def test_two_tenants_share_fairly_and_nothing_is_lost(self):
        with harness.Server("--cpu_threads=1", "--tenant_weights=alice=1,bob=1",
                            "--max_queued_per_tenant=0") as server:
            channel = grpc.insecure_channel(server.target)
            grpc.channel_ready_future(channel).result(timeout=30)
            stub = pb_grpc.AttnBenchStub(channel)
            lock = threading.Lock()
            sent = {"alice": 0, "bob": 0}
            answers = {"alice": {}, "bob": {}}  # code name -> count
            window = {}  # tenant -> OK results finished inside the measured window
            stop = threading.Event()
            measuring = threading.Event()
            request = run_request(seq=48, iterations=3)

            def client(tenant):
                while not stop.is_set():
                    with lock:
                        sent[tenant] += 1
                    try:
                        reply = stub.Run(request, timeout=60,
                                         metadata=[("x-attnbench-tenant", tenant)])
                        code = "OK"
                        assert reply.result.tenant == tenant, reply.result.tenant
                    except grpc.RpcError as e:
                        code = e.code().name
                    with lock:
                        answers[tenant][code] = answers[tenant].get(code, 0) + 1
                        if code == "OK" and measuring.is_set() and not stop.is_set():
                            window[tenant] = window.get(tenant, 0) + 1

            threads = [threading.Thread(target=client, args=("alice" if i % 2 else "bob",))
                       for i in range(CLIENTS)]
            for t in threads:
                t.start()
            time.sleep(WARMUP_SECONDS)
            rss_after_warmup = harness.sample(harness.scrape(server), "process_resident_memory_bytes")
            measuring.set()
            time.sleep(LOAD_SECONDS)
            stop.set()
            for t in threads:
                t.join(timeout=120)
                self.assertFalse(t.is_alive(), "a client never got its answer")
            text = harness.scrape(server)
            channel.close()

        for tenant in ("alice", "bob"):
            got = sum(answers[tenant].values())
            self.assertEqual(got, sent[tenant], f"{tenant}: sent {sent[tenant]}, answered {got}")
            self.assertEqual(set(answers[tenant]), {"OK"}, answers[tenant])
        # The server counted exactly the calls the clients made: none lost, none doubled.
        self.assertEqual(harness.sample(text, "attnbench_requests_total", method="Run"),
                         sent["alice"] + sent["bob"])
        a, b = window.get("alice", 0), window.get("bob", 0)
        self.assertGreater(min(a, b), 20, window)
        self.assertLessEqual(abs(a - b) / max(a, b), 0.10, f"unfair split {window}")
        seconds_a = harness.sample(text, "attnbench_tenant_device_seconds_total", tenant="alice")
        seconds_b = harness.sample(text, "attnbench_tenant_device_seconds_total", tenant="bob")
        self.assertLessEqual(abs(seconds_a - seconds_b) / max(seconds_a, seconds_b), 0.10)
        rss_end = harness.sample(text, "process_resident_memory_bytes")
        self.assertGreater(rss_after_warmup, 0)
        self.assertLess(rss_end - rss_after_warmup, 48 << 20,
                        f"resident memory grew from {rss_after_warmup} to {rss_end}")


class FaultTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.server = harness.Server("--cpu_threads=1", "--max_queued_per_tenant=3")
        cls.channel = grpc.insecure_channel(cls.server.target)
        grpc.channel_ready_future(cls.channel).result(timeout=30)
        cls.stub = pb_grpc.AttnBenchStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.server.stop()

    def long_run(self, tenant="holder"):
        """Starts a run that holds the device for about 3 s; returns its future."""
        return self.stub.Run.future(run_request(seq=256, iterations=100000, seconds=3),
                                    timeout=60, metadata=[("x-attnbench-tenant", tenant)])

    def wait_running(self):
        deadline = time.time() + 20
        while time.time() < deadline:
            if harness.sample(harness.scrape(self.server), "attnbench_in_flight", device="cpu:0") == 1:
                return
            time.sleep(0.02)
        self.fail("the long run never started")

    def test_deadline_in_queue_never_starts(self):
        holder = self.long_run()
        self.wait_running()
        before = harness.scrape(self.server)
        # 1.5 s: long enough to reach the queue on a loaded machine (0.5 s once expired before the
        # server queued it, and nothing was counted), short of the holder's 3 s.
        with self.assertRaises(grpc.RpcError) as caught:
            self.stub.Run(run_request(), timeout=1.5)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        holder.result()
        after = harness.scrape(self.server)
        self.assertEqual(harness.sample(after, "attnbench_rejections_total", reason="deadline_in_queue")
                         - harness.sample(before, "attnbench_rejections_total",
                                  reason="deadline_in_queue"), 1)
        # It never ran: only the holder's run was counted.
        self.assertEqual(harness.sample(after, "attnbench_runs_total") -
                         harness.sample(before, "attnbench_runs_total"), 1)

    def test_cancel_in_queue_and_mid_run(self):
        holder = self.long_run()
        self.wait_running()
        queued = self.stub.Run.future(run_request(), timeout=60)
        time.sleep(0.3)
        queued.cancel()
        holder.cancel()  # mid-run: stops at the next iteration boundary
        start = time.time()
        reply = self.stub.Run(run_request(), timeout=30)
        self.assertLess(time.time() - start, 2.5, "the cancelled run kept the device")
        self.assertLess(reply.result.queue_ms, 2000)
        self.assertEqual(harness.sample(harness.scrape(self.server), "attnbench_queue_depth", device="cpu:0"), 0)

    def test_tenant_queue_limit(self):
        holders = [self.long_run("greedy") for _ in range(3)]
        self.wait_running()
        with self.assertRaises(grpc.RpcError) as caught:
            self.stub.Run(run_request(), timeout=30, metadata=[("x-attnbench-tenant", "greedy")])
        self.assertEqual(caught.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertIn("--max_queued_per_tenant=3", caught.exception.details())
        self.assertIn("retry", caught.exception.details())
        # Another tenant is not held back by greedy's limit.
        other = self.stub.Run.future(run_request(), timeout=60,
                                     metadata=[("x-attnbench-tenant", "polite")])
        for h in holders:
            h.cancel()
        self.assertTrue(other.result().result.tenant == "polite")


if __name__ == "__main__":
    unittest.main()
