"""End to end: a Python sweep fanned out over two replicas behind one target.

Two servers on loopback, one client target `ipv4:127.0.0.1:P1,127.0.0.1:P2` with round_robin:
sweep(..., fan_out=N) splits the grid into one sub-sweep per value of its first axis and runs N
at once, each one call, which the channel sends to alternate replicas; the merged records must
be the whole grid in order, and each server's /metrics must show that it ran its share. Also
the splitting arithmetic itself, without a server.
"""

import os
import subprocess
import sys
import time
import unittest

import harness

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "client", "python"))

import attnbench_client as ab  # noqa: E402
from attnbench_client import requests as reqs  # noqa: E402

TIMEOUT = 120
# Requests estimated above 4 MiB fail when they are about to run (S=8192 does).
REQUEST_LIMIT = 4 << 20
FAST = dict(warmup=1, min_iters=2, max_iters=2, check="off")
BASE = dict(batch=1, head_dim=32, dtype="fp32", mask="causal", backend="cpu_reference", **FAST)
SEQ_LENS = [16, 32, 48, 64]
LAYOUTS = ["mha:2", "gqa:4/2"]
NAMES = ("replica-a", "replica-b")
SERVERS = []
CLIENT = None


def server_supports_names():
    """Whether this attnbench-server has --server_name (RunResult.server then names it)."""
    out = subprocess.run([harness.SERVER, "--helpfull"], capture_output=True, text=True,
                         timeout=30, stdin=subprocess.DEVNULL)
    return "--server_name" in out.stdout + out.stderr


def runs(server):
    return harness.sample(harness.scrape(server), "attnbench_runs_total")


def setUpModule():
    global CLIENT
    named = server_supports_names()
    for name in NAMES:
        flags = ["--cpu_threads=1", f"--max_request_bytes={REQUEST_LIMIT}"]
        if named:
            flags.append(f"--server_name={name}")
        SERVERS.append(harness.Server(*flags))
    target = "ipv4:" + ",".join(s.target for s in SERVERS)
    CLIENT = ab.Client(target, timeout=TIMEOUT)
    CLIENT.wait_ready()
    # round_robin picks among connected replicas only: call until both have answered, so the
    # sub-sweeps below alternate between them instead of all going to the first one up.
    deadline = time.monotonic() + 30
    while not all(harness.sample(harness.scrape(s), "attnbench_requests_total", method="GetCapabilities")
                  for s in SERVERS):
        if time.monotonic() > deadline:
            raise AssertionError("the client never reached both replicas")
        CLIENT.capabilities()
        time.sleep(0.05)


def tearDownModule():
    if CLIENT is not None:
        CLIENT.close()
    for server in SERVERS:
        server.stop()


def expected_grid():
    return [(s, layout) for s in SEQ_LENS for layout in LAYOUTS]


class SplitTest(unittest.TestCase):
    """The grid arithmetic: point offset + p of a sub-grid is point offset + p of the grid."""

    def check_pieces(self, axes, pieces):
        self.assertEqual(sum(reqs.grid_size(sub) for sub, _ in pieces), reqs.grid_size(axes))
        for sub, offset in pieces:
            for p in range(reqs.grid_size(sub)):
                self.assertEqual(reqs.point_values(sub, p), reqs.point_values(axes, offset + p))

    def test_one_piece_per_value_of_the_first_axis(self):
        axes = reqs.normalize_axes({"seq_len": [1, 2, 3], "batch": [1, 2],
                                    "head_dim": [8, 16, 32]})
        pieces = reqs.split_grid(axes)
        self.assertEqual([(sub[0][1], offset) for sub, offset in pieces],
                         [([1], 0), ([2], 6), ([3], 12)])
        self.assertTrue(all(sub[1:] == axes[1:] for sub, _ in pieces))
        self.check_pieces(axes, pieces)

    def test_single_valued_leading_axes_are_kept(self):
        axes = reqs.normalize_axes({"batch": [1], "layout": ["mha:2", "mqa:2"],
                                    "seq_len": [8, 16, 32]})
        pieces = reqs.split_grid(axes)
        self.assertEqual([offset for _, offset in pieces], [0, 3])
        self.check_pieces(axes, pieces)

    def test_a_single_point_is_one_piece(self):
        axes = reqs.normalize_axes({"batch": [1], "seq_len": [8]})
        self.assertEqual(reqs.split_grid(axes), [(axes, 0)])


class FanOutTest(unittest.TestCase):

    def check_grid(self, records):
        self.assertEqual([r["point_index"] for r in records], list(range(8)))
        self.assertEqual([(r["seq_q"], r["layout"]) for r in records], expected_grid())
        self.assertTrue(all(r["median_ms"] > 0 and r["error_code"] is None for r in records))
        self.assertTrue(all(r["device"] and r["device_kind"] == "cpu" for r in records))

    def test_sub_sweeps_reach_both_replicas(self):
        before = [runs(s) for s in SERVERS]
        arrived = []
        records = CLIENT.sweep({"seq_len": SEQ_LENS, "layout": LAYOUTS}, fan_out=2,
                               on_record=arrived.append, **BASE)
        self.check_grid(records)
        self.assertEqual(sorted(r["point_index"] for r in arrived), list(range(8)))
        # Four calls of two points; round_robin alternates the calls, so each replica ran 4.
        self.assertEqual([runs(s) - b for s, b in zip(SERVERS, before)], [4, 4])
        if all(r["server"] for r in records):  # A server with --server_name.
            servers = [r["server"] for r in records]
            self.assertEqual(set(servers), set(NAMES))
            self.assertTrue(all(servers[i] == servers[i + 1] for i in range(0, 8, 2)))
            self.assertEqual(sorted(servers), [NAMES[0]] * 4 + [NAMES[1]] * 4)

    def test_same_grid_as_one_call(self):
        whole = CLIENT.sweep({"seq_len": SEQ_LENS, "layout": LAYOUTS}, **BASE)
        split = CLIENT.sweep({"seq_len": SEQ_LENS, "layout": LAYOUTS}, fan_out=3, **BASE)
        self.check_grid(whole)
        self.check_grid(split)
        spec_columns = ("layout", "heads", "mask", "dtype", "seq_q", "seq_kv", "head_dim",
                        "flops", "min_bytes")
        self.assertEqual([[r[c] for c in spec_columns] for r in whole],
                         [[r[c] for c in spec_columns] for r in split])

    def test_fan_out_wider_than_the_first_axis(self):
        before = sum(runs(s) for s in SERVERS)
        records = CLIENT.sweep({"seq_len": SEQ_LENS, "layout": LAYOUTS}, fan_out=16, **BASE)
        self.check_grid(records)
        self.assertEqual(sum(runs(s) for s in SERVERS) - before, 8)

    def test_a_failing_sub_sweep_fails_the_sweep(self):
        # The second layout is invalid: its sub-sweep is rejected whole, and the error surfaces
        # from the merged sweep.
        with self.assertRaises(ab.AttnBenchError) as raised:
            CLIENT.sweep({"layout": ["mha:2", "gqa:4/3"], "seq_len": [16, 32]}, fan_out=2,
                         **BASE)
        self.assertEqual(raised.exception.code_name, "INVALID_ARGUMENT")
        self.assertTrue(all(r["layout"] == "mha:2" for r in raised.exception.records))

    def test_continue_on_error_keeps_point_indices_global(self):
        records = CLIENT.sweep({"layout": ["mha:2", "gqa:4/2"], "seq_len": [16, 8192]},
                               fan_out=2, continue_on_error=True, **BASE)
        self.assertEqual([r["point_index"] for r in records], [0, 1, 2, 3])
        self.assertEqual([r["error_code"] is None for r in records], [True, False, True, False])
        self.assertEqual([(r["layout"], r["seq_q"]) for r in records],
                         [("mha:2", 16), ("mha:2", 8192), ("gqa:4/2", 16), ("gqa:4/2", 8192)])
        self.assertEqual({r["error_code"] for r in records[1::2]}, {"RESOURCE_EXHAUSTED"})


if __name__ == "__main__":
    unittest.main()
