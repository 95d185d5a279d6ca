"""bench/sqa_table.py (the SQA paper's Table 3 through the service): its logic against a fake
stub, then --smoke against a real CPU-only server.

  * a fake stub (no server) with known times and a backend that refuses SCOPE_LAYER: the
    fallback to SCOPE_CORE, every speed-up equal to the GQA time over the row's, the paper's
    columns, a time budget cutting the last points, and exit status 1 on a failed check, a
    wrong projection count and a wrong head map;
  * --smoke against cpu_reference (which runs layer scope): every layout at every length, layer
    scope, WorkCounts.projection_flops equal to §7's, speed-ups from the times, the paper's
    columns, the backward column (a layer's training step) where cpu_reference lists
    PHASE_BACKWARD; a backend refusing a layer's backward gets it at core scope;
  * --smoke in process with the real server behind a stub that refuses SCOPE_LAYER: every
    forward point falls back to SCOPE_CORE and still runs and checks.
"""

import json
import math
import os
import subprocess
import sys
import tempfile
import time
import unittest

import harness
from table_harness import BENCH, Refused, run_table, STUBS

import sqa_table  # noqa: E402  (table_harness puts bench/ on sys.path)

grpc, pb, pb_grpc, json_format = STUBS

LAYOUT_NAMES = {"MHA", "GQA", "MQA", "SQA", "sSQA", "xSQA", "GQKVA 4x4"}
EXPECTED_HEADS = {"MHA": (16, 16, 16), "GQA": (16, 4, 16), "MQA": (16, 1, 16),
                  "SQA": (8, 4, 8), "sSQA": (8, 8, 8), "xSQA": (4, 4, 4),
                  "GQKVA 4x4": (4, 4, 16)}

LAYER_REFUSED = "backend fake does not support spec.scope=SCOPE_LAYER (supports: SCOPE_CORE)"
LAYER_BACKWARD_REFUSED = ("backend fake does not support spec.phase=PHASE_BACKWARD with "
                          "spec.scope=SCOPE_LAYER (its backward is core scope only: dQ, dK, dV)")


class RefuseLayer:
    """Wraps a stub: SCOPE_LAYER requests are refused with FAILED_PRECONDITION, as by a backend
    without layer scope; everything else goes through."""

    def __init__(self, stub):
        self.stub = stub
        self.layer_requests = 0

    def GetCapabilities(self, request, timeout=None):
        return self.stub.GetCapabilities(request, timeout=timeout)

    def Run(self, request, timeout=None):
        if request.spec.scope == pb.SCOPE_LAYER:
            self.layer_requests += 1
            raise Refused(LAYER_REFUSED)
        return self.stub.Run(request, timeout=timeout)


def head_map(layout):
    """(qh, kh) per output head, from docs/variants.md §2, written out independently."""
    which = layout.WhichOneof("layout")
    x = getattr(layout, which)
    if which == "mha":
        return [(h, h) for h in range(x.num_heads)]
    if which == "mqa":
        return [(h, 0) for h in range(x.num_heads)]
    if which in ("gqa", "sqa"):
        group = x.num_query_heads // x.num_kv_heads
        return [(h, h // group) for h in range(x.num_query_heads)]
    if which == "symmetric_sqa":
        return [(h, h) for h in range(x.baseline_heads // 2)]
    if which == "extreme_sqa":
        n = x.num_query_heads if x.HasField("num_query_heads") else x.baseline_heads // 4
        return [(h, h) for h in range(n)]
    if which == "gqkva":
        return [(h // x.kv_groups, h % x.kv_groups) for h in range(x.query_groups * x.kv_groups)]
    raise ValueError(which)


class FakeServer:
    """A stub standing in for the server: deterministic times, counts per §7 (computed here, not
    with the script's functions), a backend that may refuse layer scope, and faults on demand."""

    def __init__(self, refuse_layer=False, sleep_s=0.0, fail_check_for=None,
                 wrong_projection_for=None, wrong_map_for=None, refuse_layer_backward=False):
        self.refuse_layer = refuse_layer
        self.refuse_layer_backward = refuse_layer_backward
        self.sleep_s = sleep_s
        self.fail_check_for = fail_check_for
        self.wrong_projection_for = wrong_projection_for
        self.wrong_map_for = wrong_map_for
        self.requests = []

    def GetCapabilities(self, request, timeout=None):
        caps = pb.GetCapabilitiesResponse()
        b = caps.backends.add(name="fake")
        b.phases.extend([pb.PHASE_PREFILL, pb.PHASE_BACKWARD])
        b.scopes.extend([pb.SCOPE_CORE] if self.refuse_layer else [pb.SCOPE_CORE, pb.SCOPE_LAYER])
        b.devices.add(name="fake device")
        return caps

    @staticmethod
    def median_ms(spec, backward):
        hmap = head_map(spec.layout)
        s = spec.seq_len_q
        base = 1e-6 * spec.batch_size * len(hmap) * s * (s + 1) / 2
        if spec.scope == pb.SCOPE_LAYER:
            base += 1e-7 * spec.batch_size * s * (max(q for q, _ in hmap) + 1)
        return base * (3.5 if backward else 1.0)

    def Run(self, request, timeout=None):
        self.requests.append(request)
        if self.sleep_s:
            time.sleep(self.sleep_s)
        spec = request.spec
        layer = spec.scope == pb.SCOPE_LAYER
        backward = spec.phase == pb.PHASE_BACKWARD
        if layer and self.refuse_layer:
            raise Refused(LAYER_REFUSED)
        if layer and backward and self.refuse_layer_backward:
            raise Refused(LAYER_BACKWARD_REFUSED)
        hmap = head_map(spec.layout)
        hq = max(q for q, _ in hmap) + 1
        hkv = max(k for _, k in hmap) + 1
        b, s, d = spec.batch_size, spec.seq_len_q, spec.head_dim_qk
        name = spec.layout.WhichOneof("layout")
        r = pb.RunResponse().result
        r.backend = request.backend
        r.spec.CopyFrom(spec)
        ms = self.median_ms(spec, backward)
        r.timing.median_ms, r.timing.p10_ms, r.timing.p90_ms = ms, 0.9 * ms, 1.1 * ms
        r.timing.min_ms, r.timing.count = 0.9 * ms, 3
        r.work.flops = (3.5 if backward else 1.0) * 2 * b * len(hmap) * s * (s + 1) / 2 * 2 * d
        if layer:
            r.work.projection_flops = (2.0 * b * s * spec.d_model * (hq + 2 * hkv) * d +
                                       2.0 * b * s * len(hmap) * d * spec.d_model)
            if backward:  # §7: dX and dW of each projection; a training step adds the forward
                step = request.measurement.backward_timing == pb.BACKWARD_TIMING_TRAINING_STEP
                r.work.projection_flops *= 3.0 if step else 2.0
            if name == self.wrong_projection_for:
                r.work.projection_flops *= 1.5
        if name == self.wrong_map_for:
            hmap = hmap[:-1]
        for q, k in hmap:
            r.head_map.add(query_head=q, kv_head=k)
        c = r.correctness
        c.checked, c.rows_checked, c.rows_total = True, 16, b * s * len(hmap)
        c.passed = name != self.fail_check_for
        c.relative_error, c.tolerance = (0.5 if not c.passed else 1e-3), 1e-2
        response = pb.RunResponse()
        response.result.CopyFrom(r)
        return response


def run_main(argv, wrap_stub, out_dir, target=None):
    """sqa_table.main in process; (exit status, its output, the JSON, the markdown)."""
    return run_table(sqa_table.main, "sqa",
                     [*argv] + ([f"--server={target}"] if target else []),
                     wrap_stub=wrap_stub, out_dir=out_dir)


def by_point(data):
    return {(r["tokens"], r["layout"]): r for r in data["rows"]}


class FakeStubTest(unittest.TestCase):
    """The table's logic with a stub of known times (no server)."""

    def run_fake(self, fake, *argv):
        with tempfile.TemporaryDirectory() as out_dir:
            return run_main(["--backend=fake", "--min-iters=10", "--budget-s=0", *argv],
                            lambda stub, g, p: fake, out_dir)

    def test_layer_refused_falls_back_to_core(self):
        fake = FakeServer(refuse_layer=True)
        rc, out, data, table = self.run_fake(fake)
        self.assertEqual(rc, 0, out[-3000:])
        rows = data["rows"]
        self.assertEqual(len(rows), 5 * 7)
        self.assertEqual({(r["tokens"], r["layout"]) for r in rows},
                         {(t, n) for t in sqa_table.PAPER_TOKENS for n in LAYOUT_NAMES})
        # Every forward point asked for layer scope once, was refused, and ran at core scope.
        forward = [q for q in fake.requests if q.spec.phase != pb.PHASE_BACKWARD]
        self.assertEqual(sum(q.spec.scope == pb.SCOPE_LAYER for q in forward), 35)
        self.assertEqual(sum(q.spec.scope == pb.SCOPE_CORE for q in forward), 35)
        for q in forward:
            self.assertEqual(q.spec.HasField("d_model"), q.spec.scope == pb.SCOPE_LAYER)
        for r in rows:
            self.assertEqual(r["status"], "ok", r)
            self.assertEqual(r["scope"], "core")
            self.assertIn("FAILED_PRECONDITION", r["fallback"])
            self.assertEqual(r["forward"]["projection_flops"], 0.0)
        self.assertIn("core (layer refused)", table)
        self.assertIn("layer scope refused, ran SCOPE_CORE: FAILED_PRECONDITION", table)
        self.check_ratios(data)
        # The backward column: each point asked for a layer's training step once, was refused,
        # and ran at core scope.
        backward = [q for q in fake.requests if q.spec.phase == pb.PHASE_BACKWARD]
        self.assertEqual(len(backward), 70)
        self.assertEqual(sum(q.spec.scope == pb.SCOPE_LAYER for q in backward), 35)
        for q in backward:
            self.assertEqual(q.measurement.backward_timing, pb.BACKWARD_TIMING_TRAINING_STEP)
            self.assertEqual(q.check.mode, pb.CHECK_MODE_AUTO)
        for r in rows:
            self.assertEqual(r["backward_scope"], "core")
            self.assertIn("FAILED_PRECONDITION", r["backward_fallback"])
            self.assertEqual(r["backward"]["projection_flops"], 0.0)

    def test_layer_backward_refused_runs_the_backward_at_core_scope(self):
        # As the CUDA backends do until their layer backward is declared: the forward at layer
        # scope, the backward column at core scope, marked, its speed-ups among core rows.
        fake = FakeServer(refuse_layer_backward=True)
        rc, out, data, table = self.run_fake(fake)
        self.assertEqual(rc, 0, out[-3000:])
        for r in data["rows"]:
            self.assertEqual(r["status"], "ok", r)
            self.assertEqual(r["scope"], "layer")
            self.assertEqual(r["backward_scope"], "core")
            self.assertIn(LAYER_BACKWARD_REFUSED, r["backward_fallback"])
            self.assertEqual(r["backward"]["check"], "pass")
        self.check_ratios(data)
        self.assertIn("(core, layer refused)", table)
        self.assertIn("fwd+bwd: layer scope refused, ran SCOPE_CORE", table)

    def check_ratios(self, data):
        points = by_point(data)
        for (tokens, name), r in points.items():
            gqa = points[(tokens, "GQA")]
            want = gqa["forward"]["median_ms"] / r["forward"]["median_ms"]
            self.assertAlmostEqual(r["speedup_vs_gqa"], want, places=12)
            want_b = gqa["backward"]["median_ms"] / r["backward"]["median_ms"]
            self.assertAlmostEqual(r["backward_speedup_vs_gqa"], want_b, places=12)
            paper = sqa_table.PAPER_SECONDS[tokens]
            if name in paper:
                self.assertEqual(r["paper_seconds"], paper[name])
                self.assertAlmostEqual(r["paper_speedup_vs_gqa"], paper["GQA"] / paper[name])
            else:
                self.assertIsNone(r["paper_seconds"])
        # The paper's own numbers: xSQA 0.0785 / 0.0570 at 1k, 2.8596 / 0.8194 at 200k.
        self.assertAlmostEqual(points[(1024, "xSQA")]["paper_speedup_vs_gqa"], 1.3772, places=3)
        self.assertAlmostEqual(points[(200000, "xSQA")]["paper_speedup_vs_gqa"], 3.4899,
                               places=3)

    def test_layer_scope_counts_and_layouts(self):
        fake = FakeServer()
        rc, out, data, table = self.run_fake(fake)
        self.assertEqual(rc, 0, out[-3000:])
        for r in data["rows"]:
            self.assertEqual(r["scope"], "layer")
            self.assertEqual(r["fallback"], "")
            self.assertEqual((r["heads_q"], r["heads_kv"], r["heads_out"]),
                             EXPECTED_HEADS[r["layout"]])
            self.assertGreater(r["forward"]["projection_flops"], 0)
            self.assertEqual(r["forward"]["projection_flops"], r["expected_projection_flops"])
            # The backward column: a layer's training step, 3x the projections (§7).
            self.assertEqual(r["backward_scope"], "layer")
            self.assertEqual(r["backward_fallback"], "")
            self.assertEqual(r["backward"]["projection_flops"],
                             3 * r["expected_projection_flops"])
        self.assertIn(" (layer) |", table)
        self.check_ratios(data)
        # The batches of the paper: 128 at 1k, 32 at 4k, 4 at 32k, 1 at 131k and 200k.
        self.assertEqual({(r["tokens"], r["batch"], r["seq"]) for r in data["rows"]},
                         {(1024, 128, 1024), (4096, 32, 4096), (32768, 4, 32768),
                          (131072, 1, 131072), (200000, 1, 200000)})
        layer = [q for q in fake.requests if q.spec.scope == pb.SCOPE_LAYER]
        self.assertTrue(layer and all(q.spec.d_model == 256 and q.spec.head_dim_qk == 16 and
                                      q.spec.dtype == pb.DTYPE_BFLOAT16 and
                                      q.spec.mask.WhichOneof("kind") == "causal"
                                      for q in layer))
        # Projection savings of GQKVA 4x4 and SQA against MHA: (H_q + 2 H_kv + H_out) / 64.
        points = by_point(data)
        self.assertAlmostEqual(points[(1024, "GQKVA 4x4")]["projection_vs_mha"], 28 / 64)
        self.assertAlmostEqual(points[(1024, "SQA")]["projection_vs_mha"], 24 / 64)
        self.assertIn("Trend", table)
        # Run order: cheapest first; GQA leads every length.
        order = [(q.spec.seq_len_q, json_format.MessageToDict(q.spec.layout))
                 for q in fake.requests if q.spec.phase != pb.PHASE_BACKWARD]
        self.assertEqual([s for s, _ in order], sorted(s for s, _ in order))
        self.assertIn("gqa", order[0][1])

    def test_failed_check_fails(self):
        rc, out, data, table = self.run_fake(FakeServer(fail_check_for="sqa"), "--tokens=1024")
        self.assertEqual(rc, 1, out[-3000:])
        self.assertEqual(by_point(data)[(1024, "SQA")]["status"], "FAIL")
        self.assertIn("check failed", table)

    def test_wrong_projection_count_fails(self):
        rc, out, data, _ = self.run_fake(FakeServer(wrong_projection_for="symmetric_sqa"),
                                         "--tokens=4096", "--backward-backend=none")
        self.assertEqual(rc, 1, out[-3000:])
        failed = by_point(data)[(4096, "sSQA")]["failed"]
        self.assertTrue(any("projection_flops" in f for f in failed), failed)

    def test_wrong_head_map_fails(self):
        rc, out, data, _ = self.run_fake(FakeServer(wrong_map_for="extreme_sqa"),
                                         "--tokens=1024", "--layouts=xsqa")
        self.assertEqual(rc, 1, out[-3000:])
        self.assertEqual([r["layout"] for r in data["rows"]], ["GQA", "xSQA"])
        failed = by_point(data)[(1024, "xSQA")]["failed"]
        self.assertTrue(any("head map" in f for f in failed), failed)

    def test_budget_skips_the_last_points(self):
        fake = FakeServer(sleep_s=0.05)
        with tempfile.TemporaryDirectory() as out_dir:
            rc, out, data, table = run_main(["--backend=fake", "--budget-s=0.3"],
                                            lambda stub, g, p: fake, out_dir)
        self.assertEqual(rc, 0, out[-3000:])
        status = [r["status"] for r in data["rows"]]
        self.assertIn("ok", status)
        self.assertIn("skip", status)
        # Skips only after the measured points (run order), never before.
        self.assertEqual(status, sorted(status, key=lambda s: s == "skip"))
        self.assertIn("skip", table)


class SmokeTest(harness.ServerTestCase):
    """--smoke against the real cpu_reference server."""

    def test_smoke_layer_scope(self):
        # As a device call runs it: the script in its own process, stubs from PYTHONPATH.
        env = dict(os.environ, PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.environ.get("ATTNBENCH_PYTHON_PATH", ""))
        with tempfile.TemporaryDirectory() as out_dir:
            t0 = time.monotonic()
            proc = subprocess.run([sys.executable, os.path.join(BENCH, "sqa_table.py"),
                                   f"--server={self.server.target}", "--smoke",
                                   f"--out-dir={out_dir}"], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, env=env, timeout=120,
                                  check=False)
            elapsed = time.monotonic() - t0
            rc, out = proc.returncode, proc.stdout
            with open(os.path.join(out_dir, "sqa_table.json"), encoding="utf-8") as f:
                data = json.load(f)
            with open(os.path.join(out_dir, "sqa_table.md"), encoding="utf-8") as f:
                table = f.read()
        self.assertEqual(rc, 0, out[-3000:])
        self.assertEqual(data["meta"]["backend"], "cpu_reference")
        rows = data["rows"]
        self.assertEqual({r["layout"] for r in rows}, LAYOUT_NAMES)
        self.assertEqual({r["tokens"] for r in rows}, set(sqa_table.PAPER_TOKENS))
        backward = harness.serves_backward(self.server)
        for r in rows:
            self.assertEqual(r["status"], "ok", r)
            self.assertEqual(r["scope"], "layer", r)
            self.assertEqual(r["d_model"], 256)
            f = r["forward"]
            self.assertEqual(f["check"], "pass", r)
            self.assertEqual(f["backend"], "cpu_reference")
            self.assertGreater(f["projection_flops"], 0)
            self.assertAlmostEqual(f["projection_flops"] / r["expected_projection_flops"], 1.0)
            self.assertAlmostEqual(f["flops"] / r["expected_flops"], 1.0)
            # RunResult.layer_timing: both parts measured, inside the iteration.
            self.assertGreater(f["projections_ms"], 0)
            self.assertGreater(f["core_ms"], 0)
            self.assertLessEqual(f["projections_ms"] + f["core_ms"], f["median_ms"] * 1.5)
            self.assertTrue(math.isfinite(r["speedup_vs_gqa"]) and r["speedup_vs_gqa"] > 0)
            if backward:
                # cpu_reference runs a layer's backward: the training step of one layer.
                self.assertEqual(r["backward_scope"], "layer", r)
                self.assertEqual(r["backward"]["check"], "pass", r)
                self.assertGreater(r["backward"]["median_ms"], 0)
                self.assertAlmostEqual(r["backward"]["projection_flops"] /
                                       r["expected_projection_flops"], 3.0)
            else:
                self.assertIn("does not list PHASE_BACKWARD", r["backward"]["error"])
        points = by_point(data)
        for (tokens, name), r in points.items():
            gqa = points[(tokens, "GQA")]
            self.assertAlmostEqual(r["speedup_vs_gqa"],
                                   gqa["forward"]["median_ms"] / r["forward"]["median_ms"])
            if name in sqa_table.PAPER_SECONDS[tokens]:
                self.assertEqual(r["paper_seconds"], sqa_table.PAPER_SECONDS[tokens][name])
        # The markdown: the paper-shaped summary and the details, paper columns included.
        self.assertIn("| tokens | MHA | GQA | MQA | SQA | sSQA | xSQA | GQKVA 4x4 |", table)
        self.assertIn("paper s/step", table)
        self.assertIn("| 200,000 |", table)
        self.assertIn("0.8194 (3.49x)", table)          # the paper's xSQA at 200k
        self.assertNotIn("core (layer refused)", table)
        self.assertLess(elapsed, 60, "the smoke run should take seconds on cpu_reference")

    def test_smoke_layer_refused_uses_core(self):
        wrappers = []

        def wrap(stub, g, p):
            wrappers.append(RefuseLayer(stub))
            return wrappers[0]

        with tempfile.TemporaryDirectory() as out_dir:
            rc, out, data, table = run_main(["--smoke", "--tokens=1024,4096",
                                             "--backward-backend=none"], wrap, out_dir,
                                            target=self.server.target)
        self.assertEqual(rc, 0, out[-3000:])
        self.assertEqual(wrappers[0].layer_requests, 14)
        for r in data["rows"]:
            self.assertEqual(r["status"], "ok", r)
            self.assertEqual(r["scope"], "core")
            self.assertIn(LAYER_REFUSED, r["fallback"])
            self.assertEqual(r["forward"]["check"], "pass")
            self.assertEqual(r["forward"]["projection_flops"], 0.0)
            self.assertNotIn("projections_ms", r["forward"])
            self.assertIn("not run", r["backward"]["error"])
        self.assertIn("core (layer refused)", table)


if __name__ == "__main__":
    unittest.main()
