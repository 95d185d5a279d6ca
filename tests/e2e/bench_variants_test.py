"""End to end: bench/variants_table.py (the GPU variants table) against a real CPU-only server.

The script is written for one H100 device call; everything here runs the same code on
cpu_reference at tiny shapes so that a GPU run starts from tested code:
  * --selftest: the Python mirror of kernels/spec (Philox4x32-10, ALiBi slopes, block masks,
    FlexAttention BlockMask tables) offline and against the server (kept pairs of probabilistic
    and explicit block-sparse specs, outputs of small fp32 problems);
  * --smoke without torch: every part, every row measured and checked, peers "n/a";
  * --smoke with tests/e2e/fake_torch (numpy standing in for torch): the Flex, SDPA, cold-L2
    timer and sampled-check paths, and a deliberately broken Flex caught as MISMATCH;
  * bench/standard_table.py at one tiny shape with the fake torch, since it shares the timer.
"""

import json
import os
import subprocess
import sys
import tempfile
import unittest

import harness

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "bench", "variants_table.py")
STANDARD_TABLE = os.path.join(ROOT, "bench", "standard_table.py")
FAKE_TORCH = os.path.join(ROOT, "tests", "e2e", "fake_torch")
SERVER = None


def setUpModule():
    global SERVER
    SERVER = harness.Server("--cpu_threads=2")


def tearDownModule():
    if SERVER is not None:
        SERVER.stop()


def run_script(*args, fake_torch=False, env_extra=None, timeout=240, script=SCRIPT):
    env = dict(os.environ)
    paths = [p for p in os.environ.get("ATTNBENCH_PYTHON_PATH", "").split(os.pathsep) if p]
    if fake_torch:
        paths.insert(0, FAKE_TORCH)
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(env_extra or {})
    proc = subprocess.run([sys.executable, script, f"--server={SERVER.target}", *args],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                          timeout=timeout, check=False)
    return proc.returncode, proc.stdout


class VariantsTableTest(unittest.TestCase):

    def test_selftest(self):
        rc, out = run_script("--selftest")
        self.assertEqual(rc, 0, out[-3000:])
        self.assertIn("preflight PASS server kept pairs prob", out)
        self.assertIn("preflight PASS server output: probabilistic blocks", out)
        self.assertNotIn("preflight FAIL", out)

    def test_smoke_without_torch(self):
        with tempfile.TemporaryDirectory() as out_dir:
            rc, out = run_script("--smoke", "--no-preflight", f"--out-dir={out_dir}",
                                 env_extra={"PYTHONNOUSERSITE": "1"})
            self.assertEqual(rc, 0, out[-3000:])
            with open(os.path.join(out_dir, "variants_table.json"), encoding="utf-8") as f:
                data = json.load(f)
            with open(os.path.join(out_dir, "variants_table.md"), encoding="utf-8") as f:
                table = f.read()
        rows = data["rows"]
        self.assertEqual({r["part"] for r in rows}, {"A", "B", "C"})
        self.assertTrue(all(r["status"] == "ok" for r in rows),
                        [r for r in rows if r["status"] != "ok"][:2])
        # Every part-B row's kept pairs were verified against the server's.
        for r in rows:
            self.assertEqual(r["ours"]["kept_pairs"], r["kept_pairs"], r["name"])
            self.assertEqual(r["ours"]["check"], "pass", r["name"])
        names = {r["name"] for r in rows if r["part"] == "B"}
        self.assertTrue({"dense", "causal", "block32 10%", "block32+causal 50%", "prob32 ~25%",
                         "block16 25%"} <= names, names)
        variants = {r["name"] for r in rows if r["part"] == "A"}
        self.assertEqual(len(variants), 8)
        dims = {(r["head_dim_qk"], r["head_dim_v"]) for r in rows if r["part"] == "C"}
        self.assertEqual(dims, {(16, 16), (32, 32), (64, 64), (96, 96), (128, 128), (192, 192),
                                (192, 128), (256, 256)})
        for heading in ("## A. Score modifiers", "## B. Block-sparse masks", "## C. Head dims",
                        "Targets:"):
            self.assertIn(heading, table)

    def test_smoke_with_fake_torch(self):
        with tempfile.TemporaryDirectory() as out_dir:
            rc, out = run_script("--smoke", "--no-preflight", "--layouts=gqa",
                                 f"--out-dir={out_dir}", fake_torch=True)
            self.assertEqual(rc, 0, out[-3000:])
            with open(os.path.join(out_dir, "variants_table.json"), encoding="utf-8") as f:
                data = json.load(f)
        self.assertTrue(data["meta"]["torch"].endswith("numpy-fake"), data["meta"])
        rows = data["rows"]
        flex = [r for r in rows
                if r["part"] in "AB" and (r["peers"].get("flex") or {}).get("median_ms")]
        # A: the four variants Flex expresses, at 2 sequence lengths x 2 masks; B: 12 masks.
        self.assertEqual(len([r for r in flex if r["part"] == "A"]), 16)
        self.assertEqual(len([r for r in flex if r["part"] == "B"]), 12)
        for r in flex:
            self.assertLess(r["peers"]["flex"]["sample_relative_error"], 1e-4, r["name"])
            self.assertIn("vs_flex", r["derived"])
        rope = [r for r in rows if r["part"] == "A" and "rope" in r["name"]]
        self.assertTrue(rope and all("no Flex equivalent" in r["peers"]["flex"]["error"]
                                     for r in rope))
        part_c = {(r["head_dim_qk"], r["head_dim_v"], r["mask"]): r for r in rows
                  if r["part"] == "C"}
        for (dqk, dv, _), r in part_c.items():
            self.assertIsNotNone(r["peers"]["cudnn"]["median_ms"])
            if dqk == dv:
                self.assertIsNotNone(r["peers"]["flash"]["median_ms"])
            else:  # FA2 refuses D_qk != D_v: reported n/a, the run goes on
                self.assertIn("No available kernel", r["peers"]["flash"]["error"])

    def test_broken_flex_is_caught(self):
        with tempfile.TemporaryDirectory() as out_dir:
            rc, out = run_script("--smoke", "--no-preflight", "--part=A", "--layouts=gqa",
                                 "--seqs=128", "--variants=none,alibi_geo",
                                 f"--out-dir={out_dir}", fake_torch=True,
                                 env_extra={"FAKE_TORCH_BREAK_FLEX": "1"})
            self.assertEqual(rc, 1, out[-3000:])
            with open(os.path.join(out_dir, "variants_table.md"), encoding="utf-8") as f:
                table = f.read()
        self.assertIn("MISMATCH", out)
        self.assertIn("Flex mismatches", table)

    def test_standard_table_with_fake_torch(self):
        with tempfile.TemporaryDirectory() as out_dir:
            rc, out = run_script("--ours=cpu_reference", "--layouts=gqa", "--seqs=128",
                                 "--dims=64", "--batch-tokens=128", "--flex-seq=128",
                                 "--min-iters=10", "--max-iters=10", "--target-seconds=0.01",
                                 f"--out-dir={out_dir}", fake_torch=True, script=STANDARD_TABLE)
            self.assertEqual(rc, 0, out[-3000:])
            with open(os.path.join(out_dir, "standard_table.json"), encoding="utf-8") as f:
                data = json.load(f)
        for row in data["rows"]:
            for peer in ("flash", "cudnn", "flex"):
                result = row["results"][peer]
                self.assertEqual(result["count"], 10, (peer, result))
                self.assertGreater(result["median_ms"], 0, peer)


if __name__ == "__main__":
    unittest.main()
