"""End to end: `attnbench health` (grpc.health.v1 Check, the Dockerfile's HEALTHCHECK and the
TLS overlay's exec probes) against a real attnbench-server: SERVING exits 0, anything else 1."""

import signal
import subprocess
import time
import unittest

import harness
from harness import FAST_FLAGS, run_cli


class HealthCliTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.server = harness.Server("--cpu_threads=1")

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_serving(self):
        for service in ("", "attnbench.v1.AttnBench"):
            out = run_cli("health", f"--server={self.server.target}", f"--service={service}",
                          timeout=30)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertEqual(out.stdout, "SERVING\n")

    def test_unknown_service(self):
        out = run_cli("health", f"--server={self.server.target}", "--service=no.Such", timeout=30)
        self.assertEqual(out.returncode, 1)
        self.assertRegex(out.stderr, r"^attnbench: NOT_FOUND: ")

    def test_nothing_listening_fails_within_the_deadline(self):
        start = time.monotonic()
        out = run_cli("health", f"--server=127.0.0.1:{harness.free_port()}",
                      "--deadline_seconds=2", timeout=30)
        self.assertEqual(out.returncode, 1)
        self.assertRegex(out.stderr, r"^attnbench: (UNAVAILABLE|DEADLINE_EXCEEDED): ")
        self.assertLess(time.monotonic() - start, 15)

    def test_health_takes_no_workload_flags(self):
        out = run_cli("health", "--batch=1")
        self.assertEqual(out.returncode, 2)
        self.assertIn("--batch: not a flag of 'health'", out.stderr)


class DrainingHealthTest(unittest.TestCase):

    def test_unhealthy_while_draining(self):
        # A long run keeps the server draining after SIGTERM. From then on health must fail
        # (NOT_SERVING, or UNAVAILABLE once the server refuses new calls) while the process
        # still runs, so that probes take a draining pod out of service.
        with harness.Server("--cpu_threads=1", "--shutdown_grace_seconds=30") as server:
            run = subprocess.Popen(
                [harness.CLI, "run", f"--server={server.target}", "--backend=cpu_reference",
                 "--batch=1", "--layout=mha", "--heads=8", "--dtype=fp32", "--seq_len=1024",
                 "--head_dim=64", "--warmup=0", "--min_iters=40", "--max_iters=40",
                 "--max_seconds=60"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
            try:
                out = run_cli("health", f"--server={server.target}", timeout=30)
                self.assertEqual((out.returncode, out.stdout), (0, "SERVING\n"), out.stderr)
                time.sleep(1.0)  # The run is in flight.
                server.proc.send_signal(signal.SIGTERM)
                time.sleep(0.2)
                out = run_cli("health", f"--server={server.target}", "--deadline_seconds=2",
                              timeout=30)
                self.assertIsNone(server.proc.poll(), "the server stopped without draining")
                self.assertEqual(out.returncode, 1, out.stdout)
                self.assertTrue(out.stdout == "NOT_SERVING\n" or "UNAVAILABLE" in out.stderr,
                                out.stdout + out.stderr)
            finally:
                run.kill()
                run.wait(timeout=10)


if __name__ == "__main__":
    unittest.main()
