"""bench/decode_table.py (issue #13's decode benchmark through the service): its arithmetic against
a fake stub of known times and counts, its torch peers on a numpy stand-in, then --smoke against a
real CPU-only server.

  * a fake stub: WorkCounts.min_bytes of every cache kind (written out here by hand from §7) and
    the flops of causal decode, the GB/s, the fraction of the device's copy bandwidth, TFLOP/s,
    flop/B and the bound against the ridge point, the speed-up over the best SDPA backend, the
    met/missed marks (a missed target exits 0), a refused cache (n/a, exit 0), and exit status 1 on
    a failed check (also the kernel's own error of a quantized cache) and on a count off §7;
  * the peer code (dequantization, int4 unpacking, page gather, SDPA pinned to each backend, the
    cold-L2 timer) on tests/e2e/fake_torch;
  * --smoke against cpu_reference: every cache kind at both points and both layouts, the checks
    passing with a quantized cache's error split, the counts equal to §7's, and the sweep.
"""

import os
import sys
import unittest

import harness
from table_harness import ROOT, STUBS, Refused, run_table

import decode_table  # noqa: E402  (table_harness puts bench/ on sys.path)
from peer_timing import Timing  # noqa: E402

grpc, pb, pb_grpc, json_format = STUBS

PEAK_GBPS, PEAK_TFLOPS = 3000.0, 600.0   # ridge point 200 flop/B
# §7 by hand, GQA 32/8, D 128, bf16, B 1, S_kv 524,288, S_q 1: Q and O 2 * 64 * 128 = 16,384
# bytes; a native (token, head) row of K and V 2 * 256 bytes, int8 2 * (128 + 4), int4
# 2 * (64 + 4); a page table 4 bytes a page.
QO = 16384
MIN_BYTES = {
    "native": 8 * 524288 * 512 + QO,                        # 2,147,500,032
    "paged16": 8 * 524288 * 512 + QO + 4 * 524288 // 16,
    "paged128": 8 * 524288 * 512 + QO + 4 * 524288 // 128,
    "int8": 8 * 524288 * 264 + QO,
    "int4": 8 * 524288 * 136 + QO,
    # newest 512 native, 1,024 int8, the other 522,752 int4
    "saq": 8 * (512 * 512 + 1024 * 264 + 522752 * 136) + QO,
}
OURS_MS = {"native": 0.8, "paged16": 1.0, "paged128": 0.9, "int8": 0.5, "int4": 0.25,
           "saq": 0.3}


def cache_kind(spec):
    c = spec.kv_cache
    if c.saq_bands:
        return "saq"
    if c.paging.page_size_tokens:
        return f"paged{c.paging.page_size_tokens}"
    return {pb.CACHE_FORMAT_INT8: "int8", pb.CACHE_FORMAT_INT4: "int4"}.get(c.format, "native")


class FakeServer:
    """Bandwidth runs (GQA 32/8, 1 x 524,288) take OURS_MS with MIN_BYTES; sweep runs (native)
    `sweep_ms` with §7's bytes and flops (causal: S_q S_kv - S_q (S_q - 1) / 2 pairs)."""

    def __init__(self, sweep_ms=0.1, refuse=(), fail_check=(), fail_kernel=(), wrong_bytes=()):
        self.sweep_ms, self.refuse = sweep_ms, refuse
        self.fail_check, self.fail_kernel, self.wrong_bytes = fail_check, fail_kernel, wrong_bytes
        self.requests = []

    def GetCapabilities(self, request, timeout=None):
        caps = pb.GetCapabilitiesResponse()
        caps.backends.add(name="cuda_flash").devices.add(name="fake H100")
        return caps

    def Run(self, request, timeout=None):
        self.requests.append(request)
        spec = request.spec
        kind = cache_kind(spec)
        if kind in self.refuse:
            raise Refused(f"backend cuda_flash does not run a {kind} cache")
        r = pb.RunResponse().result
        r.backend, r.kernel = request.backend, f"fake decode {kind}"
        r.device.name, r.device.peak_gbps, r.device.peak_tflops = "fake H100", PEAK_GBPS, \
            PEAK_TFLOPS
        sq, skv, d = spec.seq_len_q, spec.seq_len_kv, spec.head_dim_qk
        pairs = sq * skv - sq * (sq - 1) // 2 if spec.mask.HasField("causal") else sq * skv
        r.work.flops = 2.0 * 32 * pairs * 2 * d
        if sq == 1 and skv == 524288:
            ms, r.work.min_bytes = OURS_MS[kind], MIN_BYTES[kind]
        else:
            ms = self.sweep_ms
            r.work.min_bytes = 2 * sq * 64 * d + 8 * skv * 4 * d
        if kind in self.wrong_bytes:
            r.work.min_bytes += 4
        r.timing.median_ms, r.timing.p10_ms, r.timing.p90_ms = ms, 0.9 * ms, 1.1 * ms
        r.timing.count = 10
        c = r.correctness
        c.checked, c.rows_checked, c.rows_total = True, 16, 32 * sq
        c.passed = kind not in self.fail_check
        c.relative_error, c.tolerance = (0.5 if not c.passed else 0.02), 0.04
        if kind in ("int8", "int4", "saq"):
            q = c.quantization
            q.kernel_passed = kind not in self.fail_kernel
            q.kernel_relative_error = 0.003 if q.kernel_passed else 0.05
            q.kernel_tolerance, q.quantization_relative_error = 0.01, 0.019
        return pb.RunResponse(result=r)


class FakePeers:
    """SDPA flash 2.0 ms, cuDNN 1.5 ms, efficient refusing; the real choice of the best."""

    error = ""

    def __init__(self, enabled):
        pass

    def time(self, p, dim, args):
        results = {"flash": Timing(median_ms=2.0, p10_ms=1.9, p90_ms=2.1, count=10),
                   "cudnn": Timing(median_ms=1.5, p10_ms=1.4, p90_ms=1.6, count=10),
                   "efficient": Timing(error="RuntimeError: No available kernel.")}
        return decode_table.best_of(results), results


def run_fake(fake, *argv, peers=FakePeers):
    saved = decode_table.DecodePeers
    decode_table.DecodePeers = peers
    try:
        return run_table(decode_table.main, "decode",
                         ["--layouts=gqa", "--points=1x524288", "--sweep-seqs=1024,4096",
                          "--sweep-q=1,4,64", "--budget-s=0", *argv], fake=fake)
    finally:
        decode_table.DecodePeers = saved


def by_cache(data):
    return {r["cache"]: r for r in data["bandwidth"]}


class FakeStubTest(unittest.TestCase):

    def test_bandwidth_peers_and_sweep_arithmetic(self):
        fake = FakeServer()
        rc, out, data, table = run_fake(fake)
        self.assertEqual(rc, 0, out[-3000:])
        rows = by_cache(data)
        self.assertEqual(set(rows), set(MIN_BYTES))
        for kind, r in rows.items():
            ms = OURS_MS[kind]
            self.assertEqual(r["failed"], [], kind)
            self.assertEqual(r["expected_min_bytes"], MIN_BYTES[kind], kind)
            self.assertAlmostEqual(r["gbps"], MIN_BYTES[kind] / ms / 1e6)
            self.assertAlmostEqual(r["fraction_of_copy_bandwidth"],
                                   MIN_BYTES[kind] / ms / 1e6 / PEAK_GBPS)
            self.assertAlmostEqual(r["speedup"], 1.5 / ms)   # cuDNN's 1.5 ms, the best
            self.assertEqual(r["peer"]["sdpa"], "cudnn")
            self.assertEqual(r["speedup_target_met"], 1.5 / ms >= 2.0, kind)
            self.assertEqual(r["ours"]["kernel"], f"fake decode {kind}")
        # native: 2,147,500,032 B in 0.8 ms = 2,684.4 GB/s, 0.895 of 3,000: met; 1.875x: missed.
        self.assertTrue(rows["native"]["bandwidth_target_met"])
        self.assertFalse(rows["native"]["speedup_target_met"])
        # paged16 in 1.0 ms: 0.716, missed; int4 in 0.25 ms: 6x the peer, met.
        self.assertFalse(rows["paged16"]["bandwidth_target_met"])
        self.assertTrue(rows["int4"]["speedup_target_met"])
        self.assertIn("| 2684.4 | 0.895 (met) | 1.5 (cudnn) | 1.875 (missed) | pass | 0.02 | "
                      "fake decode native | ok |", table)  # the native row's cells, in order
        self.assertIn("0.003 / 0.019", table)             # a quantized cache's error split
        self.assertIn("6.000 (met)", table)
        self.assertIn("SDPA efficient: RuntimeError: No available kernel.", table)
        # The requests: decode, bf16, D 128, cold L2, sampled check; each cache as asked.
        saq = [q for q in fake.requests if q.spec.kv_cache.saq_bands][0].spec.kv_cache
        self.assertEqual([(b.num_tokens if b.HasField("num_tokens") else None, b.format)
                          for b in saq.saq_bands],
                         [(512, pb.CACHE_FORMAT_NATIVE), (1024, pb.CACHE_FORMAT_INT8),
                          (None, pb.CACHE_FORMAT_INT4)])
        for q in fake.requests:
            self.assertEqual((q.spec.phase, q.spec.dtype, q.spec.head_dim_qk, q.backend),
                             (pb.PHASE_DECODE, pb.DTYPE_BFLOAT16, 128, "cuda_flash"))
            self.assertEqual(q.spec.layout.gqa.num_query_heads, 32)
            self.assertEqual(q.spec.layout.gqa.num_kv_heads, 8)
            self.assertEqual(q.measurement.cache_mode, pb.CACHE_MODE_COLD)
            self.assertEqual(q.check.mode, pb.CHECK_MODE_AUTO)
            self.assertEqual(q.spec.mask.HasField("causal"), q.spec.seq_len_q > 1)
        # The sweep: S_kv 1k and 4k x S_q 1, 4, 64, 0.1 ms each.
        sweep = {(r["seq_kv"], r["seq_q"]): r for r in data["sweep"]}
        self.assertEqual(set(sweep), {(s, q) for s in (1024, 4096) for q in (1, 4, 64)})
        r = sweep[(4096, 64)]
        flops = 2.0 * 32 * (64 * 4096 - 64 * 63 // 2) * 256
        min_bytes = 2 * 64 * 64 * 128 + 8 * 4096 * 512
        self.assertAlmostEqual(r["tflops"], flops / 0.1 / 1e9)
        self.assertAlmostEqual(r["flops_per_byte"], flops / min_bytes)
        self.assertAlmostEqual(r["fraction_of_peak_flops"], flops / 0.1 / 1e9 / PEAK_TFLOPS)
        self.assertAlmostEqual(r["ridge_flops_per_byte"], 200.0)
        self.assertTrue(r["causal"])
        self.assertFalse(sweep[(4096, 1)]["causal"])
        self.assertIn("Ridge point (measured peak_tflops / peak_gbps): 200.0 flop/B", table)
        # 4 query heads a KV head: about 4 S_q flop/B, less the causal pairs (S_q 64: 198 at
        # S_kv 1k, 239 at 4k).
        self.assertIn("Where decode turns compute-bound: S_kv 1,024 not by S_q 64; S_kv 4,096 at "
                      "S_q 64.", table)
        self.assertIn("Targets: copy bandwidth >= 0.85: 1/6 met; speed-up over the best SDPA "
                      "peer >= 2.0: 3/6 met", table)
        self.assertRegex(table, r"\| 4,096 \| 64 \| causal \|.*\| compute \| pass \|")
        self.assertRegex(table, r"\| 4,096 \| 4 \| causal \|.*\| memory \| pass \|")

    def test_refused_cache_is_not_a_failure(self):
        rc, out, data, table = run_fake(FakeServer(refuse=("paged16", "paged128")),
                                        "--no-peers", "--parts=bandwidth")
        self.assertEqual(rc, 0, out[-3000:])
        rows = by_cache(data)
        self.assertEqual(rows["paged16"]["status"], "n/a")
        self.assertIn("FAILED_PRECONDITION", rows["paged16"]["ours"]["error"])
        self.assertEqual(rows["native"]["status"], "ok")
        self.assertEqual(data["sweep"], [])
        self.assertEqual(data["meta"]["peers"], "not run (--no-peers)")
        self.assertIn("ours: FAILED_PRECONDITION: backend cuda_flash does not run a paged16", table)

    def test_failures_exit_1(self):
        for fake, what in ((FakeServer(fail_check=("native",)), "check failed"),
                           (FakeServer(fail_kernel=("int4",)), "kernel error 0.05"),
                           (FakeServer(wrong_bytes=("saq",)), "WorkCounts.min_bytes")):
            rc, out, data, table = run_fake(fake, "--no-peers")
            self.assertEqual(rc, 1, what)
            self.assertIn(what, table)

    def test_peers_on_a_numpy_stand_in_for_torch(self):
        fake_torch = os.path.join(ROOT, "tests", "e2e", "fake_torch")
        sys.path.insert(0, fake_torch)
        try:
            import torch  # noqa: PLC0415 - the stand-in
            self.assertIn("numpy-fake", torch.__version__)
            # int4: 0x9F holds 15 (7 + 8) low and 9 (1 + 8) high; int8 values times the scale.
            out = torch.empty(1, 1, 1, 2)
            band = ("int4", torch.tensor([[[[0x9F]]]], dtype=torch.uint8),
                    torch.tensor([[[2.0]]], dtype=torch.float32))
            self.assertEqual(decode_table.dequantize_band(torch, band, out).tolist(),
                             [[[[14.0, 2.0]]]])
            band = ("int8", torch.tensor([[[[-3, 5]]]], dtype=torch.int8),
                    torch.tensor([[[0.5]]], dtype=torch.float32))
            self.assertEqual(decode_table.dequantize_band(torch, band, out).tolist(),
                             [[[[-1.5, 2.5]]]])
            # The fake's counts are those of the big shapes, so these rows fail their §7
            # comparison (exit status 1): only the peers matter here.
            _, _, data, _ = run_fake(
                FakeServer(), "--parts=bandwidth,peers", "--points=2x96", "--gqa-heads=4/2",
                "--head-dim=16", "--saq=16:native,32:int8,rest:int4", "--warmup=0",
                "--min-iters=2", "--max-iters=2", peers=decode_table.DecodePeers)
        finally:
            sys.path.remove(fake_torch)
            for name in [n for n in sys.modules if n == "torch" or n.startswith("torch.")]:
                del sys.modules[name]
        self.assertEqual(data["meta"]["peers"], "ok")
        for r in data["bandwidth"]:
            self.assertEqual(set(r["peers"]), {"flash", "cudnn", "efficient"}, r["cache"])
            self.assertTrue(all(t["median_ms"] > 0 for t in r["peers"].values()), r["peers"])
            self.assertGreater(r["peer"]["median_ms"], 0, r["cache"])


class SmokeTest(harness.ServerTestCase):

    def test_smoke_on_cpu_reference(self):
        rc, out, data, table = run_table(decode_table.main, "decode",
                                         [f"--server={self.server.target}", "--smoke"])
        self.assertEqual(rc, 0, out[-3000:])
        self.assertEqual(data["meta"]["backend"], "cpu_reference")
        self.assertEqual(data["meta"]["peers"], "not run (--no-peers)")
        rows = data["bandwidth"]
        self.assertEqual({(r["batch"], r["seq_kv"], r["layout"], r["cache"]) for r in rows},
                         {(b, s, lay, c) for b, s in ((1, 64), (2, 96))
                          for lay in ("GQA 4/2", "MHA 2")
                          for c in ("native", "paged16", "paged128", "int8", "int4", "saq")})
        for r in rows:
            ours = r["ours"]
            self.assertEqual((r["status"], ours["check"]), ("ok", "pass"), r)
            # The script fails a row whose counts differ from §7; these are the server's.
            self.assertEqual(ours["min_bytes"], r["expected_min_bytes"])
            self.assertGreater(r["gbps"], 0)
            if r["cache"] in ("int8", "int4", "saq"):
                self.assertTrue(ours["kernel_passed"], r)
                self.assertGreater(ours["quantization_relative_error"], 0, r)
            else:
                self.assertNotIn("kernel_passed", ours)
        sweep = data["sweep"]
        self.assertEqual({(r["seq_kv"], r["seq_q"]) for r in sweep},
                         {(s, q) for s in (64, 96) for q in (1, 2)})
        for r in sweep:
            self.assertEqual(r["ours"]["check"], "pass", r)
            self.assertEqual(r["causal"], r["seq_q"] == 2)
            self.assertAlmostEqual(r["flops_per_byte"],
                                   r["ours"]["flops"] / r["ours"]["min_bytes"])
        self.assertIn("## Sweep: GQA 4/2, native cache, B 1", table)


if __name__ == "__main__":
    unittest.main()
