"""bench/layer_table.py (issue #14's layer targets through the service): its arithmetic against a
fake stub of known times, then --smoke against a real CPU-only server.

  * a fake stub: the layer's split and the core alone give the two ratios the table judges
    (torch's GEMMs stand in through a fake timer), a target missed is reported but does not fail
    the run, and a failed check or a projection count off §7 does (exit status 1);
  * --smoke against cpu_reference: every point at layer scope with its split, the core alone,
    the checks passing, the sum judged from our own split (no torch).
"""

import unittest

import harness
from table_harness import STUBS, run_table

import layer_table  # noqa: E402  (table_harness puts bench/ on sys.path)
from peer_timing import Timing  # noqa: E402

grpc, pb, pb_grpc, json_format = STUBS


class FakeServer:
    """Layer runs take `layer_ms` with the split `proj_ms` / `core_ms`; core runs `core_alone_ms`;
    projection FLOPs per §7 unless `wrong_projection`; checks pass unless `fail_check`."""

    def __init__(self, layer_ms=10.0, proj_ms=4.0, core_ms=6.0, core_alone_ms=5.8,
                 wrong_projection=False, fail_check=False):
        self.layer_ms, self.proj_ms, self.core_ms = layer_ms, proj_ms, core_ms
        self.core_alone_ms = core_alone_ms
        self.wrong_projection, self.fail_check = wrong_projection, fail_check
        self.requests = []

    def GetCapabilities(self, request, timeout=None):
        caps = pb.GetCapabilitiesResponse()
        b = caps.backends.add(name="cuda_flash")
        b.devices.add(name="fake H100")
        return caps

    def Run(self, request, timeout=None):
        self.requests.append(request)
        spec = request.spec
        layer = spec.scope == pb.SCOPE_LAYER
        response = pb.RunResponse()
        r = response.result
        r.backend = request.backend
        ms = self.layer_ms if layer else self.core_alone_ms
        r.timing.median_ms, r.timing.p10_ms, r.timing.p90_ms = ms, 0.9 * ms, 1.1 * ms
        r.timing.count = 10
        if layer:
            hq = hkv = spec.layout.mha.num_heads or spec.layout.gqa.num_query_heads
            if spec.layout.HasField("gqa"):
                hkv = spec.layout.gqa.num_kv_heads
            tokens, d, dim = spec.batch_size * spec.seq_len_q, spec.d_model, spec.head_dim_qk
            r.work.projection_flops = 2.0 * tokens * d * (hq + 2 * hkv) * dim + \
                2.0 * tokens * hq * dim * d
            if self.wrong_projection:
                r.work.projection_flops *= 2
            r.layer_timing.projections.median_ms = self.proj_ms
            r.layer_timing.core.median_ms = self.core_ms
        c = r.correctness
        c.checked, c.passed, c.rows_checked, c.rows_total = True, not self.fail_check, 16, 64
        c.relative_error, c.tolerance = (0.5 if self.fail_check else 1e-3), 1e-2
        return response


class FakeGemms:
    """torch's four GEMMs, `ms` each point."""

    def __init__(self, ms):
        self.ms, self.error = ms, ""

    def time(self, p, d_model, dim, args):
        return Timing(median_ms=self.ms, p10_ms=self.ms, p90_ms=self.ms, count=10)


def run_fake(fake, gemms_ms=None, *argv):
    saved = layer_table.TorchGemms
    if gemms_ms is not None:
        layer_table.TorchGemms = lambda enabled: FakeGemms(gemms_ms)
    try:
        return run_table(layer_table.main, "layer",
                         ["--seqs=4096,8192", "--layouts=mha,gqa", "--budget-s=0", *argv],
                         fake=fake)
    finally:
        layer_table.TorchGemms = saved


class FakeStubTest(unittest.TestCase):

    def test_ratios_from_the_split_the_core_alone_and_the_gemms(self):
        fake = FakeServer(layer_ms=10.0, proj_ms=4.0, core_ms=6.0, core_alone_ms=5.8)
        rc, out, data, table = run_fake(fake, 3.6)
        self.assertEqual(rc, 0, out[-3000:])
        self.assertEqual(len(data["points"]), 4)
        for p in data["points"]:
            self.assertAlmostEqual(p["projection_rate_vs_cublas"], 3.6 / 4.0)   # 0.9: met
            self.assertAlmostEqual(p["layer_over_parts"], 10.0 / (3.6 + 5.8))  # 1.064: missed
            self.assertEqual(p["parts_projections_from"], "torch")
            self.assertEqual(p["failed"], [])
        self.assertIn("0.900 (met)", table)
        self.assertIn("1.064 (missed)", table)
        # Each point: one layer run and one core run of the same problem, d_model 4096.
        layer = [q for q in fake.requests if q.spec.scope == pb.SCOPE_LAYER]
        core = [q for q in fake.requests if q.spec.scope == pb.SCOPE_CORE]
        self.assertEqual((len(layer), len(core)), (4, 4))
        for q in layer:
            self.assertEqual((q.spec.d_model, q.spec.head_dim_qk), (4096, 128))
            self.assertEqual(q.spec.dtype, pb.DTYPE_BFLOAT16)
            self.assertEqual(q.spec.mask.WhichOneof("kind"), "causal")
        for q in core:
            self.assertFalse(q.spec.HasField("d_model"))

    def test_without_torch_the_sum_uses_our_split(self):
        rc, out, data, table = run_fake(FakeServer(), None, "--no-peers")
        self.assertEqual(rc, 0, out[-3000:])
        for p in data["points"]:
            self.assertIsNone(p["projection_rate_vs_cublas"])
            self.assertEqual(p["parts_projections_from"], "ours")
            self.assertAlmostEqual(p["layer_over_parts"], 10.0 / (4.0 + 5.8))
        self.assertIn("not run (--no-peers)", table)

    def test_failed_check_and_wrong_count_fail(self):
        rc, out, data, table = run_fake(FakeServer(fail_check=True), 3.6)
        self.assertEqual(rc, 1, out[-3000:])
        self.assertIn("check failed", table)
        rc, out, data, table = run_fake(FakeServer(wrong_projection=True), 3.6)
        self.assertEqual(rc, 1, out[-3000:])
        self.assertIn("WorkCounts.projection_flops", data["points"][0]["failed"][0])


class SmokeTest(harness.ServerTestCase):

    def test_smoke_on_cpu_reference(self):
        rc, out, data, _ = run_table(layer_table.main, "layer",
                                     [f"--server={self.server.target}", "--smoke"])
        self.assertEqual(rc, 0, out[-3000:])
        self.assertEqual(data["meta"]["backend"], "cpu_reference")
        self.assertEqual([p["seq"] for p in data["points"]], [32, 48])
        for p in data["points"]:
            self.assertEqual(p["layer"]["check"], "pass", p)
            self.assertEqual(p["core"]["check"], "pass", p)
            self.assertGreater(p["layer"]["projections_ms"], 0)
            self.assertGreater(p["layer"]["core_ms"], 0)
            self.assertGreater(p["core"]["median_ms"], 0)
            self.assertEqual(p["parts_projections_from"], "ours")
            self.assertGreater(p["layer_over_parts"], 0)


if __name__ == "__main__":
    unittest.main()
