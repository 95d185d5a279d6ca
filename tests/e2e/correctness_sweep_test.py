"""bench/correctness.py: what a backend must run comes from GetCapabilities.

Without a GPU: the claim logic on a hand-built cuda_flash with two kernels (which kernel a
request must run on per compute capability, dtype, mask, modifiers and head-dim pairs; refusals
of claimed cases failing, of unclaimed ones recorded as unsupported; a run on another kernel
failing), then the sweep against a real CPU-only server, where cpu_reference claims everything
it runs, and a refusal the server really makes judged both ways.
"""

import importlib.util
import os
import random
import unittest

import grpc

import harness
from attnbench.v1 import attnbench_pb2 as pb
from attnbench.v1 import attnbench_pb2_grpc as pb_grpc
from google.protobuf import json_format, text_format

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location(
    "correctness", os.path.join(ROOT, "bench", "correctness.py"))
correctness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(correctness)

FLASH = text_format.Parse("""
    name: "cuda_flash"
    devices { name: "H100" kind: "cuda" compute_capability: "9.0" }
    dtypes: [ DTYPE_FLOAT16, DTYPE_BFLOAT16 ]
    phases: [ PHASE_PREFILL, PHASE_DECODE ]
    scopes: [ SCOPE_CORE ]
    layouts: [ "mha", "mqa", "gqa", "sqa", "symmetric_sqa", "extreme_sqa", "gqkva",
               "explicit_map" ]
    masks: [ "none", "causal", "sliding_window", "block_sparse", "probabilistic_block_sparse" ]
    modifiers: [ "rope", "alibi", "softcap" ]
    cache_formats: [ CACHE_FORMAT_NATIVE ]
    head_dims: [ 64, 96, 128, 192, 256 ]
    kernels {
      name: "hopper wgmma+tma"
      compute_capabilities: "9.0"
      dtypes: [ DTYPE_FLOAT16, DTYPE_BFLOAT16 ]
      phases: [ PHASE_PREFILL, PHASE_DECODE ]
      masks: [ "none", "causal", "sliding_window" ]
      head_dims { qk: 64 v: 64 }
      head_dims { qk: 128 v: 128 }
      requirements: "16-byte aligned rows"
    }
    kernels {
      name: "mma.sync"
      compute_capabilities: "8.0+"
      dtypes: [ DTYPE_FLOAT16, DTYPE_BFLOAT16 ]
      phases: [ PHASE_PREFILL, PHASE_DECODE ]
      masks: [ "none", "causal", "sliding_window", "block_sparse", "probabilistic_block_sparse" ]
      modifiers: [ "rope", "alibi", "softcap" ]
      head_dims { qk: 64 v: 64 }
      head_dims { qk: 96 v: 96 }
      head_dims { qk: 128 v: 128 }
      head_dims { qk: 192 v: 128 }
      head_dims { qk: 192 v: 192 }
      head_dims { qk: 256 v: 256 }
    }
""", pb.BackendCapabilities())


def spec(dtype="DTYPE_BFLOAT16", head_dim=128, head_dim_v=None, mask=None, **extra):
    d = correctness.shape(1, 77, 131, head_dim, correctness.gqa(4, 2), mask,
                          head_dim_v=head_dim_v, **extra)
    d["dtype"] = dtype
    return json_format.ParseDict(d, pb.AttentionSpec())


def claim(s, cc="9.0", backend=FLASH, requirements_met=True):
    return correctness.claim_of(pb, backend, correctness.features_of(pb, s), cc, requirements_met)


class Args:
    rpc_timeout = 120.0
    require_all = set()


class ClaimTest(unittest.TestCase):

    def test_first_kernel_holding_the_request_on_this_device(self):
        causal = spec(mask=correctness.CAUSAL)
        self.assertEqual(claim(causal).expected_kernel, "hopper wgmma+tma")
        # Not compute capability 9.0: the next kernel, whose "8.0+" covers 8.0, 8.6, 9.0.
        self.assertEqual(claim(causal, "8.0").expected_kernel, "mma.sync")
        self.assertEqual(claim(causal, "8.6").expected_kernel, "mma.sync")
        self.assertFalse(claim(causal, "7.5").claimed)
        # A modifier or mask the Hopper kernel does not list, or a dim beyond its pairs.
        self.assertEqual(claim(spec(rope={})).expected_kernel, "mma.sync")
        self.assertEqual(claim(spec(mask=correctness.prob_block_sparse(64, 64, 1, 1)))
                         .expected_kernel, "mma.sync")
        self.assertEqual(claim(spec(head_dim=192, head_dim_v=128)).expected_kernel, "mma.sync")
        # The first pair with qk >= D_qk and v >= D_v: 80 runs on Hopper's 128/128, 160/96 on
        # mma.sync's 192/128.
        self.assertEqual(claim(spec(head_dim=80)).expected_kernel, "hopper wgmma+tma")
        self.assertEqual(claim(spec(head_dim=160, head_dim_v=96)).expected_kernel, "mma.sync")
        # Beyond every pair: no kernel holds it, so the backend does not claim it.
        too_wide = claim(spec(head_dim=320))
        self.assertFalse(too_wide.claimed)
        self.assertIn("no kernel holds it", too_wide.why_not)
        # Requirements in words not met by the case: claimed, kernel not predicted.
        unpredicted = claim(spec(rope={"rotary_dims": 24}), requirements_met=False)
        self.assertTrue(unpredicted.claimed)
        self.assertEqual(unpredicted.expected_kernel, "")

    def test_backend_lists(self):
        fp32 = claim(spec(dtype="DTYPE_FLOAT32"))
        self.assertFalse(fp32.claimed)
        self.assertIn("dtype DTYPE_FLOAT32", fp32.why_not)
        paged = spec(phase="PHASE_DECODE", kv_cache={"paging": {"page_size_tokens": 64}})
        self.assertIn("paged", claim(paged).why_not)
        saq = spec(phase="PHASE_DECODE", kv_cache={"saq_bands": [
            {"num_tokens": 64, "format": "CACHE_FORMAT_NATIVE"}, {"format": "CACHE_FORMAT_INT4"}]})
        self.assertIn("CACHE_FORMAT_INT4", claim(saq).why_not)
        self.assertTrue(claim(spec(phase="PHASE_DECODE")).claimed)
        # Without kernels the backend's head_dims list decides.
        plain = pb.BackendCapabilities()
        plain.CopyFrom(FLASH)
        del plain.kernels[:]
        self.assertTrue(claim(spec(head_dim=96), backend=plain).claimed)
        self.assertIn("head_dim_qk 80", claim(spec(head_dim=80), backend=plain).why_not)
        self.assertEqual(claim(spec(head_dim=96), backend=plain).expected_kernel, "")
        # Every list empty but layouts: nothing claimed.
        self.assertFalse(claim(spec(), backend=pb.BackendCapabilities(name="x")).claimed)

    def test_refusals(self):
        claimed = correctness.Claim(True, expected_kernel="mma.sync")
        unclaimed = correctness.Claim(False, "dtype DTYPE_FLOAT32 not in [...]")

        def outcome():
            return correctness.Outcome("cuda_flash", "c", "bf16", "fail")

        o = outcome()
        correctness.classify_refusal("FAILED_PRECONDITION", "no", claimed, False, o)
        self.assertEqual(o.status, "fail")
        self.assertIn("refused a case it claims", o.detail)
        o = outcome()
        correctness.classify_refusal("FAILED_PRECONDITION", "no", unclaimed, False, o)
        self.assertEqual(o.status, "unsupported")
        self.assertTrue(o.detail.startswith("not claimed (dtype DTYPE_FLOAT32"), o.detail)
        o = outcome()
        correctness.classify_refusal("FAILED_PRECONDITION", "no", unclaimed, True, o)
        self.assertEqual(o.status, "fail")
        self.assertIn("--require-all", o.detail)
        o = outcome()
        correctness.classify_refusal("INTERNAL", "boom", unclaimed, False, o)
        self.assertEqual(o.status, "fail")

    def test_backward_cases_must_run_on_both_cuda_backends_with_a_backward(self):
        backward = [c for c in correctness.all_cases()
                    if c.spec.get("phase") == "PHASE_BACKWARD"]
        self.assertGreater(len(backward), 5)
        for case in backward:
            self.assertEqual(set(case.must_run), {"cuda_reference", "cuda_unfused"}, case.name)
            self.assertTrue(correctness.must_run_case(case, "cuda_unfused", Args()))
            self.assertTrue(correctness.must_run_case(case, "cuda_reference", Args()))
            self.assertFalse(correctness.must_run_case(case, "cuda_flash", Args()))
            # cuda_flash's backward is switched in the build (kFlashBackwardEnabled): where its
            # capabilities list PHASE_BACKWARD it must run every backward case too.
            switched = Args()
            switched.backward_on = {"cuda_flash"}
            self.assertTrue(correctness.must_run_case(case, "cuda_flash", switched), case.name)
        flash_on = pb.BackendCapabilities(name="cuda_flash",
                                          phases=[pb.PHASE_PREFILL, pb.PHASE_BACKWARD])
        flash_off = pb.BackendCapabilities(name="cuda_flash", phases=[pb.PHASE_PREFILL])
        self.assertEqual(correctness.switched_backward_on({"cuda_flash": flash_on}, pb),
                         {"cuda_flash"})
        self.assertEqual(correctness.switched_backward_on({"cuda_flash": flash_off}, pb), set())
        self.assertEqual(correctness.switched_backward_on({}, pb), set())
        # Forward cases stay as the claims and --require-all say.
        forward = [c for c in correctness.all_cases() if c.spec.get("phase") != "PHASE_BACKWARD"]
        self.assertTrue(all(not c.must_run for c in forward))
        self.assertFalse(correctness.must_run_case(forward[0], "cuda_unfused", Args()))
        switched = Args()
        switched.backward_on = {"cuda_flash"}
        self.assertFalse(correctness.must_run_case(forward[0], "cuda_flash", switched))
        required = Args()
        required.require_all = {"cuda_unfused"}
        self.assertTrue(correctness.must_run_case(forward[0], "cuda_unfused", required))
        # A refusal by a backend that must run the case fails, even where it claims nothing.
        o = correctness.Outcome("cuda_unfused", backward[0].name, "bf16", "fail")
        correctness.classify_refusal("FAILED_PRECONDITION", "no", correctness.Claim(False, "x"),
                                     True, o)
        self.assertEqual(o.status, "fail")
        self.assertIn("must_run", o.detail)

    def test_a_run_on_another_kernel_fails(self):
        result = text_format.Parse("""
            backend: "cuda_flash" kernel: "mma.sync D=128/128 (common-case build)"
            correctness { checked: true passed: true relative_error: 1e-3 tolerance: 1e-2
                          rows_checked: 5 rows_total: 5 }
        """, pb.RunResult())
        o = correctness.Outcome("cuda_flash", "c", "bf16", "fail")
        correctness.judge(result, o, "hopper wgmma+tma")
        self.assertEqual(o.status, "fail")
        self.assertIn("ran on 'mma.sync D=128/128 (common-case build)' instead of "
                      "'hopper wgmma+tma'", o.detail)
        o = correctness.Outcome("cuda_flash", "c", "bf16", "fail")
        correctness.judge(result, o, "mma.sync")
        self.assertEqual(o.status, "pass", o.detail)
        o = correctness.Outcome("cuda_flash", "c", "bf16", "fail")
        correctness.judge(result, o, "")  # not predicted: any kernel
        self.assertEqual(o.status, "pass", o.detail)


class AgainstCpuServerTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.server = harness.Server("--cpu_threads=2")
        cls.channel = grpc.insecure_channel(cls.server.target)
        cls.stub = pb_grpc.AttnBenchStub(cls.channel)
        caps = cls.stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=60)
        cls.cpu = {b.name: b for b in caps.backends}["cpu_reference"]

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.server.stop()

    def test_small_sweep_passes(self):
        rc = correctness.main([f"--server={self.server.target}", "--backends=cpu_reference",
                               "--require-all=cpu_reference", "--small", "--dtypes=fp32,bf16",
                               "--cases=layout_gqa,mask_,kernel_,decode_native"])
        self.assertEqual(rc, 0)

    def test_refusals_judged_by_the_claim(self):
        stubs = (grpc, pb, pb_grpc, json_format)
        backward = correctness.Case("backward", correctness.shape(
            1, 16, 16, 32, correctness.mha(2), phase="PHASE_BACKWARD"))
        rng = random.Random(1)
        features = correctness.features_of(
            pb, correctness.build_request(pb, json_format, backward, "cpu_reference", "fp8",
                                          random.Random(1)).spec)
        # cpu_reference runs every valid case it lists, so the refusals judged here are the
        # FAILED_PRECONDITION a backend would answer, classified against real capabilities.
        message = "backend cpu_reference does not support spec.dtype=DTYPE_FLOAT8_E4M3"
        # Not claimed (the dtype left out of a copy of its lists): the refusal is "unsupported".
        unclaiming = pb.BackendCapabilities()
        unclaiming.CopyFrom(self.cpu)
        del unclaiming.dtypes[:]
        unclaiming.dtypes.extend([d for d in self.cpu.dtypes if d != pb.DTYPE_FLOAT8_E4M3])
        o = correctness.Outcome("cpu_reference", "backward", "fp8", "fail")
        claim = correctness.claim_of(pb, unclaiming, features, "")
        correctness.classify_refusal("FAILED_PRECONDITION", message, claim, False, o)
        self.assertEqual(o.status, "unsupported", o.detail)
        self.assertIn("not claimed", o.detail)
        # Claimed, as cpu_reference's own lists do: the same refusal fails the sweep.
        o = correctness.Outcome("cpu_reference", "backward", "fp8", "fail")
        claim = correctness.claim_of(pb, self.cpu, features, "")
        self.assertTrue(claim.claimed, claim.why_not)
        correctness.classify_refusal("FAILED_PRECONDITION", message, claim, False, o)
        self.assertEqual(o.status, "fail")
        self.assertIn("refused a case it claims: FAILED_PRECONDITION", o.detail)
        # Not claimed, but a case the backend must run: the refusal fails.
        o = correctness.Outcome("cpu_reference", "backward", "fp8", "fail")
        correctness.classify_refusal("FAILED_PRECONDITION", message,
                                     correctness.claim_of(pb, unclaiming, features, ""), True, o)
        self.assertEqual(o.status, "fail", o.detail)
        self.assertIn("must run", o.detail)
        # A real answer: FP8 has no backward (docs/variants.md §1b), so the server refuses the
        # case as invalid, which is a failure whatever the claim, never "unsupported".
        o = correctness.run_case(stubs, self.stub, backward, unclaiming, "fp8", rng, Args())
        self.assertEqual(o.status, "fail", o.detail)
        self.assertIn("INVALID_ARGUMENT", o.detail)
        # And cpu_reference's float32 backward runs and passes its check.
        o = correctness.run_case(stubs, self.stub, backward, self.cpu, "fp32", rng, Args())
        self.assertEqual(o.status, "pass", o.detail)

if __name__ == "__main__":
    unittest.main()
