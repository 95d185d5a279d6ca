"""End to end: a Python gRPC client (stubs generated at build time) against a real server.

Run with inline output vs StreamRun chunks, determinism of generated inputs, Sweep streaming,
GetCapabilities, the status codes of bad requests, and PHASE_BACKWARD: refused where no backend
lists it, and otherwise dQ, dK, dV inline and as chunks "output", "dq", "dk", "dv".
"""

import unittest

import grpc

import harness
from attnbench.v1 import attnbench_pb2 as pb
from attnbench.v1 import attnbench_pb2_grpc as pb_grpc

# Inline outputs above 64 KiB are refused; StreamRun sends 4 KiB chunks; requests estimated
# above 4 MiB fail when they are about to run, and so do runs over 1e10 FLOPs of CPU work.
INLINE_LIMIT = 65536
REQUEST_LIMIT = 4 << 20
FLOP_LIMIT = "1e+10"
CHUNK = 4096
RPC_TIMEOUT = 120

SERVER = None
CHANNEL = None
STUB = None


def setUpModule():
    global SERVER, CHANNEL, STUB
    SERVER = harness.Server("--cpu_threads=2", f"--max_inline_output_bytes={INLINE_LIMIT}",
                            f"--stream_chunk_bytes={CHUNK}", f"--max_request_bytes={REQUEST_LIMIT}",
                            f"--max_request_flops_cpu={FLOP_LIMIT}")
    CHANNEL = grpc.insecure_channel(SERVER.target)
    grpc.channel_ready_future(CHANNEL).result(timeout=30)
    STUB = pb_grpc.AttnBenchStub(CHANNEL)


def tearDownModule():
    if CHANNEL is not None:
        CHANNEL.close()
    if SERVER is not None:
        SERVER.stop()


def request(seq_len=64, heads=2, head_dim=32, seed=7, **kwargs):
    req = pb.RunRequest(backend="cpu_reference", **kwargs)
    spec = req.spec
    spec.batch_size = 1
    spec.seq_len_q = seq_len
    spec.seq_len_kv = seq_len
    spec.head_dim_qk = head_dim
    spec.layout.mha.num_heads = heads
    spec.mask.causal.SetInParent()
    spec.dtype = pb.DTYPE_FLOAT32
    spec.seed = seed
    req.measurement.warmup_iterations = 1
    req.measurement.min_iterations = 2
    req.measurement.max_iterations = 3
    req.check.mode = pb.CHECK_MODE_FULL
    return req


def stream_run(req):
    """Calls StreamRun; returns (chunks, result)."""
    chunks, results = [], []
    for item in STUB.StreamRun(req, timeout=RPC_TIMEOUT):
        kind = item.WhichOneof("item")
        if kind == "chunk":
            if results:
                raise AssertionError("chunk after the result")
            chunks.append(item.chunk)
        elif kind == "result":
            results.append(item.result)
    if len(results) != 1:
        raise AssertionError(f"{len(results)} results in the stream")
    return chunks, results[0]


def reassemble(chunks):
    """Joins the output chunks, checking that they tile [0, total_bytes) in order."""
    data = bytearray()
    for chunk in chunks:
        assert chunk.name == "output", chunk.name
        assert chunk.offset_bytes == len(data), (chunk.offset_bytes, len(data))
        assert chunk.total_bytes == chunks[0].total_bytes
        data += chunk.data
    assert len(data) == chunks[0].total_bytes
    return bytes(data)


class RunTest(unittest.TestCase):

    def test_inline_output_matches_stream_run(self):
        req = request(return_output=True)
        inline = STUB.Run(req, timeout=RPC_TIMEOUT).result
        self.assertEqual(list(inline.output.shape), [1, 64, 2, 32])
        self.assertEqual(inline.output.dtype, pb.DTYPE_FLOAT32)
        self.assertEqual(len(inline.output.data), 64 * 2 * 32 * 4)
        self.assertTrue(inline.correctness.checked)
        self.assertTrue(inline.correctness.passed)

        chunks, streamed = stream_run(req)
        self.assertGreaterEqual(len(chunks), 4)  # 16 KiB in 4 KiB chunks.
        self.assertLessEqual(max(len(c.data) for c in chunks), CHUNK)
        self.assertEqual(list(chunks[0].shape), [1, 64, 2, 32])
        self.assertEqual(reassemble(chunks), inline.output.data)
        self.assertEqual(streamed.output_summary.checksum, inline.output_summary.checksum)
        self.assertFalse(streamed.HasField("output"))

    def test_same_seed_same_output_other_seed_differs(self):
        first = STUB.Run(request(seed=11, return_output=True), timeout=RPC_TIMEOUT).result
        again = STUB.Run(request(seed=11, return_output=True), timeout=RPC_TIMEOUT).result
        other = STUB.Run(request(seed=12, return_output=True), timeout=RPC_TIMEOUT).result
        self.assertEqual(first.output.data, again.output.data)
        self.assertNotEqual(first.output.data, other.output.data)

    def test_result_echoes_spec_and_counts_work(self):
        result = STUB.Run(request(seq_len=32, heads=2, head_dim=32), timeout=RPC_TIMEOUT).result
        self.assertEqual(result.spec.seq_len_q, 32)
        self.assertTrue(result.spec.mask.HasField("causal"))
        self.assertEqual(result.spec.phase, pb.PHASE_PREFILL)
        self.assertEqual(len(result.head_map), 2)
        # Causal S=32: 32*33/2 kept pairs per head, 2 heads.
        self.assertEqual(result.work.kept_pairs, 2 * 32 * 33 // 2)
        self.assertEqual(result.work.flops, 2 * 2 * (32 * 33 // 2) * (32 + 32))
        self.assertGreaterEqual(result.timing.count, 2)
        self.assertGreater(result.timing.median_ms, 0)
        self.assertFalse(result.HasField("output"))

    def test_large_output_needs_stream_run(self):
        req = request(seq_len=512, heads=2, head_dim=32, return_output=True)  # 128 KiB.
        with self.assertRaises(grpc.RpcError) as raised:
            STUB.Run(req, timeout=RPC_TIMEOUT)
        self.assertEqual(raised.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertIn("StreamRun", raised.exception.details())
        req.check.mode = pb.CHECK_MODE_OFF
        chunks, _ = stream_run(req)
        self.assertEqual(len(reassemble(chunks)), 512 * 2 * 32 * 4)


class SweepTest(unittest.TestCase):

    def test_streams_every_point_in_grid_order(self):
        sweep = pb.SweepRequest(base=request(seq_len=32))
        sweep.base.check.mode = pb.CHECK_MODE_OFF
        sweep.axes.add().seq_len.values.extend([16, 32])
        layouts = sweep.axes.add().layout
        layouts.values.add().mha.num_heads = 2
        gqa = layouts.values.add().gqa
        gqa.num_query_heads, gqa.num_kv_heads = 4, 2
        responses = list(STUB.Sweep(sweep, timeout=RPC_TIMEOUT))
        self.assertEqual(len(responses), 4)
        self.assertEqual([r.completed_points for r in responses], [1, 2, 3, 4])
        self.assertTrue(all(r.total_points == 4 for r in responses))
        by_point = {r.point_index: r.result for r in responses}
        self.assertEqual(sorted(by_point), [0, 1, 2, 3])
        # Row-major, last axis fastest: (16, mha), (16, gqa), (32, mha), (32, gqa).
        self.assertEqual([(by_point[i].spec.seq_len_q, by_point[i].spec.layout.WhichOneof("layout"))
                          for i in range(4)],
                         [(16, "mha"), (16, "gqa"), (32, "mha"), (32, "gqa")])

    @staticmethod
    def too_big_second_point(continue_on_error):
        """A sweep whose second point (S=8192) exceeds the server's --max_request_bytes."""
        sweep = pb.SweepRequest(base=request(), continue_on_error=continue_on_error)
        sweep.base.check.mode = pb.CHECK_MODE_OFF
        sweep.axes.add().seq_len.values.extend([16, 8192, 32])
        return sweep

    def test_failed_point_streams_its_error_when_continuing(self):
        responses = list(STUB.Sweep(self.too_big_second_point(True), timeout=RPC_TIMEOUT))
        by_point = {r.point_index: r for r in responses}
        self.assertEqual(sorted(by_point), [0, 1, 2])
        self.assertEqual([by_point[i].WhichOneof("outcome") for i in range(3)],
                         ["result", "error", "result"])
        self.assertEqual(by_point[1].error.code, grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])
        self.assertIn("max_request_bytes", by_point[1].error.message)

    def test_failed_point_ends_the_sweep_otherwise(self):
        responses = []
        with self.assertRaises(grpc.RpcError) as raised:
            for response in STUB.Sweep(self.too_big_second_point(False), timeout=RPC_TIMEOUT):
                responses.append(response)
        self.assertEqual(raised.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertEqual([r.point_index for r in responses], [0])

    def test_invalid_point_rejects_the_sweep(self):
        sweep = pb.SweepRequest(base=request(seq_len=16))
        layouts = sweep.axes.add().layout
        for kv_heads in (2, 3):
            gqa = layouts.values.add().gqa
            gqa.num_query_heads, gqa.num_kv_heads = 4, kv_heads
        with self.assertRaises(grpc.RpcError) as raised:
            list(STUB.Sweep(sweep, timeout=RPC_TIMEOUT))
        self.assertEqual(raised.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)


class CapabilitiesTest(unittest.TestCase):

    def test_lists_the_cpu_backend_and_limits(self):
        caps = STUB.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=RPC_TIMEOUT)
        self.assertTrue(caps.server_version)
        backends = {b.name: b for b in caps.backends}
        self.assertIn("cpu_reference", backends)
        cpu = backends["cpu_reference"]
        self.assertTrue(cpu.devices)
        self.assertEqual(cpu.devices[0].kind, "cpu")
        self.assertIn("mha", cpu.layouts)
        self.assertIn(pb.DTYPE_FLOAT32, cpu.dtypes)
        self.assertEqual(caps.limits.max_inline_output_bytes, INLINE_LIMIT)


class ErrorStatusTest(unittest.TestCase):

    def assertStatus(self, req, code, fragment=None):
        with self.assertRaises(grpc.RpcError) as raised:
            STUB.Run(req, timeout=RPC_TIMEOUT)
        self.assertEqual(raised.exception.code(), code, raised.exception.details())
        if fragment:
            self.assertIn(fragment, raised.exception.details())

    def test_kv_heads_not_dividing(self):
        req = request()
        req.spec.layout.gqa.num_query_heads = 4
        req.spec.layout.gqa.num_kv_heads = 3
        self.assertStatus(req, grpc.StatusCode.INVALID_ARGUMENT)

    def test_unknown_backend(self):
        req = request()
        req.backend = "no_such_backend"
        self.assertStatus(req, grpc.StatusCode.INVALID_ARGUMENT, "no_such_backend")

    def test_missing_shape(self):
        req = request()
        req.spec.ClearField("seq_len_q")
        self.assertStatus(req, grpc.StatusCode.INVALID_ARGUMENT)

    def test_cuda_graph_on_cpu(self):
        req = request()
        req.measurement.use_cuda_graph = True
        self.assertStatus(req, grpc.StatusCode.FAILED_PRECONDITION)

    def test_runaway_work_refused_naming_the_flag(self):
        # 16384^2 / 2 causal pairs at head dim 8, each 2 x 16 FLOPs + 64: ~1.3e10 per iteration,
        # in under REQUEST_LIMIT bytes.
        req = request(seq_len=16384, heads=1, head_dim=8)
        self.assertStatus(req, grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"--max_request_flops_cpu={FLOP_LIMIT}")

    def test_stream_run_reports_errors_too(self):
        req = request()
        req.spec.layout.mha.num_heads = 0
        with self.assertRaises(grpc.RpcError) as raised:
            stream_run(req)
        self.assertEqual(raised.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)


def backward_request(seq_len=64, timing=pb.BACKWARD_TIMING_TRAINING_STEP, **kwargs):
    """GQA 4/2 backward, D_qk 32 and D_v 16: Q [1, S, 4, 32], K [1, S, 2, 32], V [1, S, 2, 16],
    O and dO [1, S, 4, 16], float32, every gradient checked."""
    req = request(seq_len=seq_len, head_dim=32, **kwargs)
    req.spec.layout.gqa.num_query_heads = 4
    req.spec.layout.gqa.num_kv_heads = 2
    req.spec.head_dim_v = 16
    req.spec.phase = pb.PHASE_BACKWARD
    req.measurement.backward_timing = timing
    return req


def shapes(seq_len):
    return {"output": [1, seq_len, 4, 16], "dq": [1, seq_len, 4, 32], "dk": [1, seq_len, 2, 32],
            "dv": [1, seq_len, 2, 16]}


class BackwardTest(unittest.TestCase):

    def assertStatus(self, req, code, message):
        with self.assertRaises(grpc.RpcError) as raised:
            STUB.Run(req, timeout=RPC_TIMEOUT)
        self.assertEqual(raised.exception.code(), code, raised.exception.details())
        self.assertEqual(raised.exception.details(), message)

    def test_backward_settings_refused_on_a_forward_phase(self):
        req = request()
        req.measurement.backward_timing = pb.BACKWARD_TIMING_TRAINING_STEP
        self.assertStatus(req, grpc.StatusCode.INVALID_ARGUMENT,
                          "measurement.backward_timing = BACKWARD_TIMING_TRAINING_STEP: only "
                          "valid with spec.phase = PHASE_BACKWARD (spec.phase is PHASE_PREFILL)")
        req = request(seq_len=16)
        d_o = req.spec.inputs.grad_output
        d_o.dtype = pb.DTYPE_FLOAT32
        d_o.shape.extend([1, 16, 2, 32])
        d_o.data = bytes(16 * 2 * 32 * 4)
        self.assertStatus(req, grpc.StatusCode.INVALID_ARGUMENT,
                          "spec.inputs.grad_output is only valid with spec.phase = PHASE_BACKWARD")

    def test_refused_where_no_backend_lists_it(self):
        if harness.serves_backward(SERVER):
            self.skipTest(harness.BACKWARD_SERVED_SKIP)
        self.assertStatus(backward_request(), grpc.StatusCode.FAILED_PRECONDITION,
                          harness.NO_BACKWARD_ON_CPU)
        with self.assertRaises(grpc.RpcError) as raised:
            stream_run(backward_request(return_output=True))
        self.assertEqual(raised.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
        self.assertEqual(raised.exception.details(), harness.NO_BACKWARD_ON_CPU)

    def check_gradients_passed(self, result, timing, seq_len=64):
        self.assertEqual(result.spec.phase, pb.PHASE_BACKWARD)
        self.assertEqual(result.measurement.backward_timing, timing)
        correctness = result.correctness
        self.assertTrue(correctness.checked)
        checks = {t.name: t for t in correctness.tensors}
        self.assertEqual(sorted(checks), ["dk", "dq", "dv"])
        for name, check in checks.items():
            self.assertTrue(check.passed, f"{name}: {check}")
            self.assertEqual(check.non_finite_elements, 0, name)
            self.assertGreater(check.rows_checked, 0, name)
        self.assertTrue(correctness.passed)
        self.assertEqual(result.output_summary.num_elements, seq_len * 4 * 16)  # O, no gradient
        self.assertEqual(result.output_summary.non_finite_elements, 0)

    def test_inline_gradients(self):
        if not harness.serves_backward(SERVER):
            self.skipTest(harness.NO_BACKWARD_SKIP)
        # S = 32: O (8 KiB), dQ (16 KiB), dK (8 KiB) and dV (4 KiB) fit the inline limit together.
        result = STUB.Run(backward_request(seq_len=32, return_output=True),
                          timeout=RPC_TIMEOUT).result
        self.check_gradients_passed(result, pb.BACKWARD_TIMING_TRAINING_STEP, seq_len=32)
        for name, shape in shapes(32).items():
            tensor = getattr(result, name)
            self.assertEqual(tensor.dtype, pb.DTYPE_FLOAT32, name)
            self.assertEqual(list(tensor.shape), shape, name)
            self.assertEqual(len(tensor.data), 4 * shape[1] * shape[2] * shape[3], name)
        # The backward alone is the default, echoed.
        result = STUB.Run(backward_request(seq_len=32, timing=pb.BACKWARD_TIMING_UNSPECIFIED),
                          timeout=RPC_TIMEOUT).result
        self.check_gradients_passed(result, pb.BACKWARD_TIMING_BACKWARD_ONLY, seq_len=32)
        self.assertFalse(result.HasField("dq"))

    def test_deterministic_backward_gives_the_same_bits(self):
        if not harness.serves_backward(SERVER):
            self.skipTest(harness.NO_BACKWARD_SKIP)
        caps = STUB.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=RPC_TIMEOUT)
        deterministic = [b.name for b in caps.backends
                         if pb.PHASE_BACKWARD in b.deterministic_phases]
        self.assertTrue(deterministic, "some backend must run the backward deterministically")
        for b in caps.backends:  # a phase it runs deterministically is a phase it runs
            self.assertLessEqual(set(b.deterministic_phases), set(b.phases), b.name)
        req = backward_request(seq_len=32, return_output=True)
        req.measurement.deterministic = True
        first = STUB.Run(req, timeout=RPC_TIMEOUT).result
        second = STUB.Run(req, timeout=RPC_TIMEOUT).result
        self.assertIn(first.backend, deterministic)
        self.assertTrue(first.measurement.deterministic)
        self.check_gradients_passed(first, pb.BACKWARD_TIMING_TRAINING_STEP, seq_len=32)
        for name in shapes(32):
            self.assertEqual(getattr(first, name).data, getattr(second, name).data, name)

    def test_stream_run_sends_output_then_dq_dk_dv(self):
        if not harness.serves_backward(SERVER):
            self.skipTest(harness.NO_BACKWARD_SKIP)
        chunks, result = stream_run(backward_request(return_output=True))
        self.check_gradients_passed(result, pb.BACKWARD_TIMING_TRAINING_STEP)
        for name in ("output", "dq", "dk", "dv"):
            self.assertFalse(result.HasField(name), name)
        # Each tensor's chunks together, in this order, tiling it exactly.
        order = []
        for chunk in chunks:
            if not order or order[-1] != chunk.name:
                order.append(chunk.name)
        self.assertEqual(order, ["output", "dq", "dk", "dv"])
        for name, shape in shapes(64).items():
            mine = [c for c in chunks if c.name == name]
            self.assertTrue(all(list(c.shape) == shape and c.dtype == pb.DTYPE_FLOAT32
                                and len(c.data) <= CHUNK for c in mine), name)
            self.assertEqual(len(reassemble_named(mine, name)),
                             4 * shape[1] * shape[2] * shape[3], name)

    def test_inline_limit_counts_the_gradients(self):
        if not harness.serves_backward(SERVER):
            self.skipTest(harness.NO_BACKWARD_SKIP)
        # S = 256: O is 64 KiB and fits the inline limit alone; with dQ (128 KiB), dK (64 KiB)
        # and dV (32 KiB) it does not.
        self.assertStatus(backward_request(seq_len=256, return_output=True),
                          grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"return_output: the output, dQ, dK and dV are {288 * 1024} bytes "
                          f"together, over --max_inline_output_bytes={INLINE_LIMIT}; use "
                          "StreamRun to receive them in chunks")


def reassemble_named(chunks, name):
    data = bytearray()
    for chunk in chunks:
        assert chunk.name == name, chunk.name
        assert chunk.offset_bytes == len(data), (name, chunk.offset_bytes, len(data))
        assert chunk.total_bytes == chunks[0].total_bytes, name
        data += chunk.data
    assert len(data) == chunks[0].total_bytes, name
    return bytes(data)


if __name__ == "__main__":
    unittest.main()
