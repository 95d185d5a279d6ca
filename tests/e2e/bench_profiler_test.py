"""bench/profiler_check.py (issue #16's profiler agreement and service overhead):

  * --smoke against a real CPU-only server: the overhead phase reports every shape, and the run
    phase writes each run's samples, warm-up and iterations;
  * the compare phase on an Nsight Compute CSV built from those runs: launches a little off the
    server's samples agree, launches 5% slower do not (exit status 1), and a missing launch is
    reported as launches that do not line up with the runs.
"""

import csv
import json
import os
import tempfile
import unittest

import harness
import table_harness  # noqa: F401  (puts bench/ on sys.path)

import profiler_check  # noqa: E402


def write_ncu_csv(path, runs, factor=1.0, drop=0):
    """The raw page's shape: a header row, a units row, one row per launch in ID order."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "Process ID", "Kernel Name", "gpu__time_duration.sum"])
        w.writerow(["", "", "", "usecond"])
        launch = 0
        for r in runs:
            durations = [r["median_ms"]] * r["warmup"] + r["samples_ms"]
            for ms in durations:
                w.writerow([launch, 4242, "Sm90ForwardKernel", f"{ms * factor * 1e3:,.3f}"])
                launch += 1
    if drop:
        with open(path) as f:
            lines = f.readlines()
        with open(path, "w") as f:
            f.writelines(lines[:-drop])


class ProfilerCheckTest(harness.ServerTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.dir = tempfile.mkdtemp()

    def test_smoke_then_compare(self):
        out = os.path.join(self.dir, "out")
        rc = profiler_check.main([f"--server={self.server.target}", "--smoke",
                                  f"--out-dir={out}"])
        self.assertEqual(rc, 0)
        with open(os.path.join(out, "profiler_overhead.json")) as f:
            overhead = json.load(f)
        self.assertEqual([r["shape"] for r in overhead], ["short", "long", "causal"])
        for r in overhead:
            self.assertEqual(len(r["samples_ms"]), 5)
            # The client's RPC time covers the iterations it timed.
            self.assertGreater(r["rpc_ms"], sum(r["samples_ms"]))
            self.assertIsNotNone(r["overhead_fraction"])

        runs_path = os.path.join(self.dir, "runs.json")
        rc = profiler_check.main([f"--server={self.server.target}", "--smoke", "--phase=run",
                                  f"--runs={runs_path}"])
        self.assertEqual(rc, 0)
        with open(runs_path) as f:
            runs = json.load(f)
        self.assertEqual(len(runs), 3)

        csv_path = os.path.join(self.dir, "ncu.csv")
        for factor, agrees in ((1.005, True), (0.995, True), (1.05, False)):
            write_ncu_csv(csv_path, runs, factor)
            rc = profiler_check.main(["--phase=compare", f"--runs={runs_path}",
                                      f"--ncu-csv={csv_path}", f"--out-dir={out}"])
            self.assertEqual(rc, 0 if agrees else 1, factor)
            with open(os.path.join(out, "profiler_check.json")) as f:
                report = json.load(f)
            self.assertTrue(report["lined_up"])
            for row in report["rows"]:
                self.assertAlmostEqual(row["ratio"] * factor, 1.0, delta=1e-3)
                self.assertEqual(row["launches"], 5)

        write_ncu_csv(csv_path, runs, 1.0, drop=1)
        rc = profiler_check.main(["--phase=compare", f"--runs={runs_path}",
                                  f"--ncu-csv={csv_path}", f"--out-dir={out}"])
        self.assertEqual(rc, 1)
        with open(os.path.join(out, "profiler_check.json")) as f:
            self.assertFalse(json.load(f)["lined_up"])


if __name__ == "__main__":
    unittest.main()
