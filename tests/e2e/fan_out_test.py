"""End to end: `attnbench sweep --fan_out` against TWO real servers behind one target.

The target lists both loopback servers (ipv4:127.0.0.1:P1,127.0.0.1:P2), the CLI's channel uses
round_robin, and the grid is split along its first multi-valued axis into concurrent
sub-sweeps. Checks: every point arrives exactly once at its row-major index, both servers ran
points (their own /metrics count the runs), results are labelled with the server that measured
them, a dead address in the target is skipped, and a failing part fails the sweep.
"""

import json
import re
import subprocess
import unittest
import urllib.request

import harness
from harness import FAST_FLAGS, run_cli

SERVERS = []
# Whether this attnbench-server takes --server_name (RunResult.server); without it the servers
# are told apart by their metrics alone.
NAMED = False

# The CLI orders the axes seq_len before head_dim: the grid splits along seq_len into six
# sub-sweeps of two points each.
SEQ_LENS = [16, 24, 32, 40, 48, 56]
HEAD_DIMS = [16, 32]
POINTS = len(SEQ_LENS) * len(HEAD_DIMS)
GRID = ["sweep", "--backend=cpu_reference", "--batch=1", "--dtype=fp32", "--layout=mha",
        "--heads=2", "--sweep_seq_len=" + ",".join(map(str, SEQ_LENS)),
        "--sweep_head_dim=" + ",".join(map(str, HEAD_DIMS)), *FAST_FLAGS]


def server_takes_name():
    out = subprocess.run([harness.SERVER, "--helpfull"], capture_output=True, text=True,
                         timeout=60, stdin=subprocess.DEVNULL)
    return "--server_name" in out.stdout + out.stderr


def setUpModule():
    global NAMED
    NAMED = server_takes_name()
    for name in ("alpha", "beta"):
        flags = ["--cpu_threads=1", "--max_request_bytes=4194304"]
        if NAMED:
            flags.append(f"--server_name={name}")
        SERVERS.append(harness.Server(*flags))


def tearDownModule():
    for server in SERVERS:
        server.stop()


def both_target():
    return "ipv4:" + ",".join(f"127.0.0.1:{s.port}" for s in SERVERS)


def runs_on(server):
    """Sum of attnbench_runs_total over all label sets on one server's /metrics."""
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        match = re.match(r"^attnbench_runs_total(\{[^}]*\})? ([0-9.eE+-]+)$", line)
        if match:
            total += float(match.group(2))
    return total


def expected_point(index):
    """(seq_len, head_dim) of point `index`: row-major, the last axis (head_dim) fastest."""
    return SEQ_LENS[index // len(HEAD_DIMS)], HEAD_DIMS[index % len(HEAD_DIMS)]


class FanOutTest(unittest.TestCase):

    def test_points_spread_over_both_servers_and_arrive_once(self):
        before = [runs_on(s) for s in SERVERS]
        out = run_cli(*GRID, f"--server={both_target()}", "--fan_out=2", "--format=json",
                      timeout=240)
        self.assertEqual(out.returncode, 0, out.stderr)
        responses = json.loads(out.stdout)
        total = POINTS
        self.assertEqual(len(responses), total)
        # Every point once, in grid order (the CLI sorts the merged stream).
        self.assertEqual([r.get("pointIndex", 0) for r in responses], list(range(total)))
        self.assertTrue(all(r["totalPoints"] == total for r in responses))
        self.assertEqual(sorted(r["completedPoints"] for r in responses),
                         list(range(1, total + 1)))
        for r in responses:
            seq_len, head_dim = expected_point(r.get("pointIndex", 0))
            spec = r["result"]["spec"]
            self.assertEqual((int(spec["seqLenQ"]), spec["headDimQk"]), (seq_len, head_dim), r)
        self.assertIn(f"[{total}/{total}] point", out.stderr)

        ran = [runs_on(s) - b for s, b in zip(SERVERS, before)]
        self.assertEqual(sum(ran), total, ran)
        self.assertTrue(all(n > 0 for n in ran), f"runs per server: {ran}")
        if NAMED:
            names = [r["result"]["server"] for r in responses]
            self.assertEqual(set(names), {"alpha", "beta"})
            for name, n in zip(("alpha", "beta"), ran):
                self.assertEqual(names.count(name), n)

    def test_table_labels_each_row_with_server_and_device(self):
        out = run_cli(*GRID, f"--server={both_target()}", "--fan_out=3", timeout=240)
        self.assertEqual(out.returncode, 0, out.stderr)
        lines = [l for l in out.stdout.splitlines() if l.strip()]
        self.assertTrue(lines[0].split()[-2:] == ["server", "device"], lines[0])
        rows = [l.split() for l in lines[1:]]
        self.assertEqual([int(r[0]) for r in rows], list(range(POINTS)))
        self.assertTrue(all(r[-1] == "cpu:0" for r in rows), rows)
        if NAMED:
            self.assertEqual({r[-2] for r in rows}, {"alpha", "beta"})
            self.assertRegex(out.stderr, r"ms on (alpha|beta) cpu:0")

    def test_dead_address_is_skipped(self):
        # round_robin picks only connected servers: a listed address with nothing behind it
        # costs nothing, and every point runs on the live one.
        dead = harness.free_port()
        before = runs_on(SERVERS[0])
        out = run_cli(*GRID, f"--server=ipv4:127.0.0.1:{dead},127.0.0.1:{SERVERS[0].port}",
                      "--fan_out=2", "--format=json", "--deadline_seconds=120", timeout=240)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(len(json.loads(out.stdout)), POINTS)
        self.assertEqual(runs_on(SERVERS[0]) - before, POINTS)

    def test_failing_part_fails_the_sweep(self):
        # S=8192 needs more than --max_request_bytes: that part's Sweep fails, the others are
        # cancelled or finish, and the CLI reports the failure.
        out = run_cli("sweep", "--backend=cpu_reference", "--batch=1", "--dtype=fp32",
                      "--head_dim=64", "--layout=mha", "--heads=4", "--sweep_seq_len=16,8192,32",
                      f"--server={both_target()}", "--fan_out=3", *FAST_FLAGS, timeout=240)
        self.assertEqual(out.returncode, 1, out.stdout + out.stderr)
        self.assertRegex(out.stderr, r"(?m)^attnbench: RESOURCE_EXHAUSTED: ")

    def test_bad_fan_out_is_a_usage_error(self):
        out = run_cli(*GRID, f"--server={both_target()}", "--fan_out=-1")
        self.assertEqual(out.returncode, 2)
        self.assertIn("--fan_out: must be 0 to", out.stderr)
        out = run_cli(*GRID, "--server=ipv4:127.0.0.1", "--fan_out=2")
        self.assertEqual(out.returncode, 2)
        self.assertIn("--server: target 'ipv4:127.0.0.1'", out.stderr)


if __name__ == "__main__":
    unittest.main()
