"""End to end: the Python package in client/python against a real server.

The wrapper is imported from the source tree with the stubs the build generated
(ATTNBENCH_PYTHON_PATH); one test also builds the wheel offline and runs it with nothing else on
its path, so the installable package carries its own stubs. Covers run and sweep records, the
errors (an exception with the gRPC code; a record for a failed sweep point), the pandas view,
targets in the dns:/// and ipv4: schemes, TLS with a bearer token and the tenant header, and
the plotting example writing a PNG.
"""

import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest
import zipfile

import harness

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE_DIR = os.path.join(ROOT, "client", "python")
sys.path.insert(0, PACKAGE_DIR)

import attnbench_client as ab  # noqa: E402

# Requests estimated above 4 MiB fail when they are about to run: a sweep point that fails at
# run time, not at validation.
REQUEST_LIMIT = 4 << 20
TIMEOUT = 120
FAST = dict(warmup=1, min_iters=2, max_iters=3)
SERVER = None
CLIENT = None


def setUpModule():
    global SERVER, CLIENT
    SERVER = harness.Server("--cpu_threads=2", f"--max_request_bytes={REQUEST_LIMIT}")
    CLIENT = ab.Client(SERVER.target, timeout=TIMEOUT)
    CLIENT.wait_ready()


def tearDownModule():
    if CLIENT is not None:
        CLIENT.close()
    if SERVER is not None:
        SERVER.stop()


def small(**overrides):
    workload = dict(batch=1, seq_len=64, head_dim=32, layout="gqa:4/2", mask="causal",
                    dtype="fp32", backend="cpu_reference", **FAST)
    workload.update(overrides)
    return workload


class RunTest(unittest.TestCase):

    def test_record_columns(self):
        record = CLIENT.run(check="full", **small())
        self.assertEqual(list(record), list(ab.COLUMNS))
        self.assertEqual(record["backend"], "cpu_reference")
        self.assertEqual(record["device_kind"], "cpu")
        self.assertTrue(record["device"])
        self.assertEqual((record["layout"], record["heads"], record["q_heads"],
                          record["kv_heads"]), ("gqa:4/2", 4, 4, 2))
        self.assertEqual((record["mask"], record["causal"], record["dtype"], record["phase"]),
                         ("causal", True, "fp32", "prefill"))
        self.assertEqual((record["batch"], record["seq_q"], record["seq_kv"], record["head_dim"],
                          record["head_dim_v"]), (1, 64, 64, 32, 32))
        # Causal S=64: 64*65/2 kept pairs per head; 2 matmuls of 2*(D_qk + D_v) FLOPs per pair.
        self.assertEqual(record["flops"], 4 * (64 * 65 // 2) * 2 * (32 + 32))
        self.assertGreaterEqual(record["iterations"], 2)
        self.assertGreater(record["median_ms"], 0)
        self.assertLessEqual(record["p10_ms"], record["median_ms"])
        self.assertLessEqual(record["median_ms"], record["p90_ms"])
        self.assertGreater(record["tflops"], 0)
        self.assertGreater(record["gbps"], 0)
        self.assertTrue(record["checked"])
        self.assertTrue(record["passed"])
        self.assertLess(record["rel_error"], 1e-5)
        self.assertEqual(record["non_finite_elements"], 0)
        self.assertGreaterEqual(record["queue_ms"], 0)
        self.assertIsNone(record["point_index"])
        self.assertIsNone(record["error_code"])

    def test_check_off_leaves_correctness_empty(self):
        record = CLIENT.run(check="off", **small(seq_len=32, layout="mha:2", mask="none"))
        self.assertEqual((record["causal"], record["heads"]), (False, 2))
        self.assertFalse(record["checked"])
        self.assertIsNone(record["passed"])
        self.assertIsNone(record["rel_error"])

    def test_base_request_and_keywords_combine(self):
        base = ab.build_request(**small())
        base.spec.softcap.cap = 30.0  # A field the keywords do not cover.
        record = CLIENT.run(base, seq_len=32, check="full")
        self.assertEqual((record["seq_q"], record["layout"]), (32, "gqa:4/2"))
        self.assertTrue(record["passed"])

    def test_server_error_carries_code_and_message(self):
        with self.assertRaises(ab.AttnBenchError) as raised:
            CLIENT.run(**small(layout="gqa:4/3"))
        error = raised.exception
        self.assertEqual(error.code_name, "INVALID_ARGUMENT")
        self.assertIn("num_kv_heads", error.message)
        self.assertTrue(str(error).startswith("INVALID_ARGUMENT: "))
        with self.assertRaises(ab.AttnBenchError) as raised:
            CLIENT.run(**small(backend="no_such_backend"))
        self.assertEqual(raised.exception.code_name, "INVALID_ARGUMENT")
        self.assertIn("no_such_backend", raised.exception.message)
        with self.assertRaises(ab.AttnBenchError) as raised:  # Missing dtype: server checks.
            CLIENT.run(batch=1, seq_len=32, head_dim=32, layout="mha:2", backend="cpu_reference")
        self.assertEqual(raised.exception.code_name, "INVALID_ARGUMENT")

    def test_bad_syntax_fails_before_calling(self):
        for bad in (dict(layout="gqa:4"), dict(layout="huge:4"), dict(mask="diagonal"),
                    dict(dtype="fp64")):
            with self.subTest(bad=bad), self.assertRaises(ValueError):
                CLIENT.run(**small(**bad))

    def test_unreachable_server_is_unavailable(self):
        with ab.Client(f"127.0.0.1:{harness.free_port()}", timeout=10) as client:
            with self.assertRaises(ab.AttnBenchError) as raised:
                client.capabilities()
        self.assertIn(raised.exception.code_name, ("UNAVAILABLE", "DEADLINE_EXCEEDED"))

    def test_capabilities(self):
        caps = CLIENT.capabilities()
        self.assertIn("cpu_reference", [b.name for b in caps.backends])
        self.assertEqual(caps.limits.max_request_bytes, REQUEST_LIMIT)
        self.assertIn("cpu_reference", CLIENT.backends())


class LayerTest(unittest.TestCase):
    """SCOPE_LAYER through the package: d_model, the client's X and weights, and the time split
    between projections and core in the record."""

    def test_generated_layer_records_the_split(self):
        start = list(ab.COLUMNS).index("scope")
        self.assertEqual(list(ab.COLUMNS)[start:start + 4],
                         ["scope", "d_model", "projections_ms", "core_ms"])
        record = CLIENT.run(check="full", scope="layer", d_model=48, **small(seq_len=16))
        self.assertEqual((record["scope"], record["d_model"]), ("layer", 48))
        self.assertTrue(record["passed"])
        self.assertGreater(record["projections_ms"], 0)
        self.assertGreater(record["core_ms"], 0)
        core = CLIENT.run(**small(seq_len=16))
        self.assertEqual((core["scope"], core["d_model"], core["projections_ms"], core["core_ms"]),
                         ("core", None, None, None))

    def test_client_x_is_the_one_run(self):
        try:
            import numpy
        except ImportError:
            self.skipTest("numpy is not installed (Debian: python3-numpy)")
        # GQA 4/2, D 32, d_model 48: X [1, 16, 48].
        x = numpy.random.default_rng(5).standard_normal((1, 16, 48)).astype(numpy.float32)
        layer = dict(scope="layer", d_model=48, return_output=True, **small(seq_len=16))
        given = CLIENT.stream_result(x=x, check="full", **layer)
        self.assertTrue(given.correctness.passed)
        self.assertEqual(list(given.spec.inputs.x.shape), [1, 16, 48])
        generated = CLIENT.stream_result(**layer)
        self.assertFalse((ab.to_numpy(given.output) == ab.to_numpy(generated.output)).all())
        with self.assertRaises(ab.AttnBenchError) as raised:
            CLIENT.run(x=x[:, :8], **small(seq_len=16, scope="layer", d_model=48))
        self.assertEqual(raised.exception.code_name, "INVALID_ARGUMENT")
        self.assertIn("spec.inputs.x.shape [1, 8, 48] must be [1, 16, 48]", raised.exception.message)
        with self.assertRaises(ab.AttnBenchError) as raised:
            CLIENT.run(w_o=numpy.zeros((64, 48), numpy.float32),
                       **small(seq_len=16, scope="layer", d_model=48))
        self.assertIn("w_q, w_k, w_v and w_o or none", raised.exception.message)


GRADIENTS = ("dq", "dk", "dv")


def backward(**overrides):
    """GQA 4/2 backward, D_qk 32 and D_v 16, S 64: Q [1, 64, 4, 32], K [1, 64, 2, 32],
    V [1, 64, 2, 16], O and dO [1, 64, 4, 16], float32, every gradient checked."""
    return small(phase="backward", head_dim_v=16, check="full", **overrides)


SHAPES = {"output": [1, 64, 4, 16], "dq": [1, 64, 4, 32], "dk": [1, 64, 2, 32],
          "dv": [1, 64, 2, 16]}


class BackwardRequestTest(unittest.TestCase):
    """What the package sends and receives for PHASE_BACKWARD, whatever the server runs."""

    def test_keywords_set_the_backward_fields(self):
        d_o = ab.pb.Tensor(dtype=ab.pb.DTYPE_BFLOAT16, shape=[1, 2, 1, 1], data=b"\x80\x3f\0\xc0")
        req = ab.build_request(phase="backward", backward_timing="training_step",
                               grad_output=d_o, return_output=True)
        self.assertEqual(req.spec.phase, ab.pb.PHASE_BACKWARD)
        self.assertEqual(req.measurement.backward_timing, ab.pb.BACKWARD_TIMING_TRAINING_STEP)
        self.assertEqual(req.spec.inputs.grad_output, d_o)
        self.assertFalse(req.spec.inputs.HasField("query"))
        self.assertTrue(req.return_output)
        self.assertEqual(ab.build_request(backward_timing=ab.pb.BACKWARD_TIMING_BACKWARD_ONLY)
                         .measurement.backward_timing, ab.pb.BACKWARD_TIMING_BACKWARD_ONLY)
        with self.assertRaises(ValueError):
            ab.build_request(backward_timing="forward_only")
        # deterministic asks for the same bits over runs; unset, the field stays false.
        self.assertTrue(ab.build_request(phase="backward", deterministic=True)
                        .measurement.deterministic)
        self.assertFalse(ab.build_request(phase="backward").measurement.deterministic)

    def test_numpy_tensors_both_ways(self):
        try:
            import numpy
        except ImportError:
            self.skipTest("numpy is not installed (Debian: python3-numpy)")
        d_o = numpy.arange(8, dtype=numpy.float32).reshape(1, 2, 2, 2) - 3.5
        req = ab.build_request(grad_output=d_o)
        tensor = req.spec.inputs.grad_output
        self.assertEqual((tensor.dtype, list(tensor.shape)), (ab.pb.DTYPE_FLOAT32, [1, 2, 2, 2]))
        self.assertEqual(tensor.data, d_o.astype("<f4").tobytes())
        self.assertTrue((ab.to_numpy(tensor) == d_o).all())
        half = ab.from_numpy(numpy.array([1.5, -2], dtype=numpy.float16))
        self.assertEqual((half.dtype, half.data), (ab.pb.DTYPE_FLOAT16, b"\x00\x3e\x00\xc0"))
        bf16 = ab.pb.Tensor(dtype=ab.pb.DTYPE_BFLOAT16, shape=[2], data=b"\x80\x3f\x00\xc0")
        self.assertEqual(ab.to_numpy(bf16).tolist(), [1.0, -2.0])
        with self.assertRaises(ValueError):
            ab.from_numpy(numpy.zeros(2, dtype=numpy.float64))

    def test_chunks_reassemble_per_tensor_or_fail_as_data_loss(self):
        def chunk(name, offset, total, data, shape=(2, 2)):
            return ab.pb.TensorChunk(name=name, dtype=ab.pb.DTYPE_FLOAT16, shape=list(shape),
                                     offset_bytes=offset, total_bytes=total, data=data)

        assembler = ab.ChunkAssembler()
        for c in (chunk("output", 0, 8, b"abc"), chunk("output", 3, 8, b"defgh"),
                  chunk("dq", 0, 4, b"12", (1, 2)), chunk("dq", 2, 4, b"34", (1, 2))):
            assembler.add(c)
        tensors = assembler.finish()
        self.assertEqual(list(tensors), ["output", "dq"])
        self.assertEqual(tensors["output"].data, b"abcdefgh")
        self.assertEqual(list(tensors["dq"].shape), [1, 2])
        self.assertEqual(tensors["dq"].dtype, ab.pb.DTYPE_FLOAT16)

        bad = [([chunk("dk", 0, 4, b"ab"), chunk("dk", 3, 4, b"c")],
                "dk chunk at offset 3 out of order (expected 2)"),
               ([chunk("dk", 0, 4, b"abcde")],
                "dk chunk at offset 0 runs past its total of 4 bytes"),
               ([chunk("dk", 0, 4, b"ab"), chunk("dk", 2, 4, b"cd", (4,))],
                "dk chunk at offset 2 describes another tensor than its first"),
               ([chunk("dz", 0, 4, b"ab")], "unknown tensor 'dz' in the stream")]
        for chunks, message in bad:
            assembler = ab.ChunkAssembler()
            with self.subTest(message=message), self.assertRaises(ab.AttnBenchError) as raised:
                for c in chunks:
                    assembler.add(c)
            self.assertEqual((raised.exception.code_name, raised.exception.message),
                             ("DATA_LOSS", message))
        assembler = ab.ChunkAssembler()
        assembler.add(chunk("dv", 0, 4, b"abc"))
        with self.assertRaises(ab.AttnBenchError) as raised:
            assembler.finish()
        self.assertEqual(raised.exception.message, "dv has 3 bytes, expected 4")

    def test_forward_records_have_no_backward_columns(self):
        record = CLIENT.run(check="full", **small(seq_len=16))
        self.assertEqual(record["phase"], "prefill")
        for column in ["backward_timing"] + [f"{g}_{c}" for g in GRADIENTS
                                             for c in ("rel_error", "max_abs_error", "passed")]:
            self.assertIsNone(record[column], column)
        # The backward columns, then the expression columns appended after them.
        start = list(ab.COLUMNS).index("backward_timing")
        self.assertEqual(list(ab.COLUMNS)[start:start + 10],
                         ["backward_timing", "dq_rel_error", "dq_max_abs_error", "dq_passed",
                          "dk_rel_error", "dk_max_abs_error", "dk_passed", "dv_rel_error",
                          "dv_max_abs_error", "dv_passed"])

    def test_forward_stream_result_carries_the_output(self):
        result = CLIENT.stream_result(check="off", **small(seq_len=16))
        self.assertEqual(list(ab.tensors(result)), ["output"])
        self.assertEqual(list(result.output.shape), [1, 16, 4, 32])
        self.assertEqual(len(result.output.data), 16 * 4 * 32 * 4)
        inline = CLIENT.run_result(ab.build_request(check="off", return_output=True,
                                                    **small(seq_len=16)))
        self.assertEqual(result.output.data, inline.output.data)

    def test_backward_settings_refused_on_a_forward_phase(self):
        with self.assertRaises(ab.AttnBenchError) as raised:
            CLIENT.run(backward_timing="backward_only", **small())
        self.assertEqual(raised.exception.code_name, "INVALID_ARGUMENT")
        self.assertEqual(raised.exception.message,
                         "measurement.backward_timing = BACKWARD_TIMING_BACKWARD_ONLY: only valid "
                         "with spec.phase = PHASE_BACKWARD (spec.phase is PHASE_PREFILL)")
        with self.assertRaises(ab.AttnBenchError) as raised:
            CLIENT.sweep({"phase": ["backward", "prefill"]}, backward_timing="training_step",
                         **small())
        self.assertEqual(raised.exception.code_name, "INVALID_ARGUMENT")
        self.assertIn("sweep point 1 (axes[0].phase=PHASE_PREFILL): "
                      "base.measurement.backward_timing", raised.exception.message)
        self.assertEqual(raised.exception.records, [])

    def test_refused_where_no_backend_lists_it(self):
        if harness.serves_backward(SERVER):
            self.skipTest(harness.BACKWARD_SERVED_SKIP)
        for call in (CLIENT.run, CLIENT.stream_result):
            with self.subTest(call=call.__name__), self.assertRaises(ab.AttnBenchError) as raised:
                call(backward_timing="training_step", **backward())
            self.assertEqual((raised.exception.code_name, raised.exception.message),
                             ("FAILED_PRECONDITION", harness.NO_BACKWARD_ON_CPU))


class ExpressionRequestTest(unittest.TestCase):
    """score_mod, mask_mod and aux: what the package sends, and that the server sees it."""

    def test_keywords_set_the_expression_fields(self):
        slopes = ab.pb.Tensor(dtype=ab.pb.DTYPE_FLOAT32, shape=[2], data=struct.pack("<2f", 0.5, 0.25))
        req = ab.build_request(score_mod="s - slopes[h] * (q - kv)", mask_mod="doc[q] == doc[kv]",
                               aux={"slopes": slopes, "doc": [0, 0, 1, 1]})
        self.assertEqual(req.spec.score_mod.expression, "s - slopes[h] * (q - kv)")
        self.assertEqual(req.spec.mask_mod.expression, "doc[q] == doc[kv]")
        self.assertEqual([a.name for a in req.spec.aux], ["slopes", "doc"])
        self.assertEqual(req.spec.aux[0].tensor, slopes)
        self.assertEqual(req.spec.aux[1].tensor,
                         ab.pb.Tensor(dtype=ab.pb.DTYPE_FLOAT32, shape=[4],
                                      data=struct.pack("<4f", 0, 0, 1, 1)))
        # Keywords replace the base's aux, and leave unset what they do not name.
        again = ab.build_request(req, aux=[("bias", [[1, 2], [3, 4.5]])])
        self.assertEqual([a.name for a in again.spec.aux], ["bias"])
        self.assertEqual(list(again.spec.aux[0].tensor.shape), [2, 2])
        self.assertEqual(again.spec.aux[0].tensor.data, struct.pack("<4f", 1, 2, 3, 4.5))
        self.assertEqual(again.spec.mask_mod.expression, "doc[q] == doc[kv]")
        self.assertFalse(ab.build_request().spec.HasField("score_mod"))
        self.assertFalse(ab.build_request().spec.HasField("mask_mod"))

    def test_bad_keywords_raise_before_sending(self):
        cases = [(dict(score_mod=""), "score_mod: empty expression"),
                 (dict(mask_mod=3), "mask_mod: an expression string, not int"),
                 (dict(aux={"doc": []}), "aux doc: empty"),
                 (dict(aux={"t": [[[1]]]}), "aux t: more than 2 dimensions"),
                 (dict(aux={"t": [[1, 2], [3]]}), "aux t: row 1 has 1 numbers, row 0 has 2"),
                 (dict(aux={"t": [1, float("nan")]}), "aux t: element 1 is nan"),
                 (dict(aux={"t": [1 << 25]}), "aux t: element 0 is the integer 33554432"),
                 (dict(aux={"t": ["1"]}), "aux t: element 0 is '1', not a number"),
                 (dict(aux=[("t", [1]), ("t", [2])]), "aux: tensor 't' given twice")]
        for kwargs, message in cases:
            with self.subTest(message=message), self.assertRaises(ValueError) as raised:
                ab.build_request(**kwargs)
            self.assertIn(message, str(raised.exception))

    def test_kv_compression_columns(self):
        record = CLIENT.run(check="full", kv_spectrum_decay=0.6, kv_compression_heads=1,
                            **small(seq_len=16))
        self.assertEqual(record["kv_compression_heads"], 1)
        for method in ("pca", "mean_pool"):
            for column in ("key_error", "value_error", "output_error", "median_ms"):
                self.assertGreater(record[f"{method}_{column}"], 0, f"{method}_{column}")
        self.assertLess(record["pca_key_error"], record["mean_pool_key_error"])
        plain = CLIENT.run(check="off", **small(seq_len=16))
        self.assertIsNone(plain["kv_compression_heads"])
        self.assertIsNone(plain["pca_output_error"])
        request = ab.build_request(kv_spectrum_decay=0.5, kv_spectrum_rank=4,
                                   kv_compression_heads=2)
        self.assertEqual((request.spec.kv_spectrum.decay, request.spec.kv_spectrum.rank,
                          request.spec.kv_compression.target_kv_heads), (0.5, 4, 2))
        with self.assertRaises(ValueError):
            ab.build_request(kv_spectrum_rank=4)

    def test_fp8_scales_echoed_and_quantization_split(self):
        # docs/variants.md §1b: derived per-head scales come back in the spec beside the given
        # ones; O is bfloat16; the check splits the kernel's error from e4m3's.
        request = ab.build_request(**small(dtype="fp8"), check="full", fp8_scales="head",
                                   key_scales=[0.25, 0.5])
        result = CLIENT.run_result(request)
        self.assertEqual(result.spec.output_dtype, ab.pb.DTYPE_BFLOAT16)
        self.assertEqual(list(result.spec.float8.key_scales), [0.25, 0.5])
        self.assertEqual(len(result.spec.float8.query_scales), 4)  # gqa:4/2, derived
        self.assertTrue(all(s > 0 for s in result.spec.float8.value_scales))
        quantization = result.correctness.quantization
        self.assertTrue(result.correctness.passed)
        self.assertTrue(quantization.kernel_passed)
        self.assertGreater(quantization.quantization_relative_error,
                           quantization.kernel_relative_error)
        with self.assertRaises(ValueError):
            ab.build_request(fp8_scales="row")

    def test_quantized_decode_and_deterministic_columns(self):
        self.assertEqual(list(ab.COLUMNS)[-4:], ["kernel_rel_error", "kernel_passed",
                                                 "quantization_rel_error", "deterministic"])
        base = ab.build_request(**small(phase="decode", seq_len_q=1, seq_len_kv=64,
                                        mask="none", dtype="fp16"), check="full",
                                deterministic=True)
        base.spec.kv_cache.format = ab.pb.CACHE_FORMAT_INT4
        record = CLIENT.run(base)
        self.assertTrue(record["deterministic"])
        self.assertTrue(record["kernel_passed"])
        # int4 costs far more than cpu_reference's own rounding, and the two make up rel_error.
        self.assertLess(10 * record["kernel_rel_error"], record["quantization_rel_error"])
        self.assertAlmostEqual(record["rel_error"], record["quantization_rel_error"],
                               delta=2 * record["kernel_rel_error"])
        plain = CLIENT.run(check="full", **small(seq_len=16))
        self.assertIsNone(plain["kernel_rel_error"])
        self.assertIsNone(plain["quantization_rel_error"])
        self.assertFalse(plain["deterministic"])

    def test_records_carry_the_expressions_last(self):
        start = list(ab.COLUMNS).index("score_mod")
        self.assertEqual(list(ab.COLUMNS)[start:start + 3],
                         ["score_mod", "mask_mod", "scope"])
        record = CLIENT.run(check="off", **small(seq_len=16))
        self.assertEqual((record["score_mod"], record["mask_mod"]), (None, None))

    def test_numpy_arrays_of_any_real_dtype(self):
        try:
            import numpy
        except ImportError:
            self.skipTest("numpy is not installed (Debian: python3-numpy)")
        doc = ab.aux_tensor(numpy.repeat(numpy.arange(2, dtype=numpy.int64), 2), "doc")
        self.assertEqual((list(doc.shape), doc.data), ([4], struct.pack("<4f", 0, 0, 1, 1)))
        table = ab.aux_tensor(numpy.full((2, 3), 0.5, dtype=numpy.float64))
        self.assertEqual(list(table.shape), [2, 3])
        self.assertEqual(table.data, struct.pack("<6f", *[0.5] * 6))

    def test_the_server_checks_what_was_sent(self):
        # The server compiles the expression against the shape: an index past the aux tensor
        # (doc has 4 elements, q and kv run to 63) is INVALID_ARGUMENT naming the field and
        # column, whether or not the backend could run the expression.
        with self.assertRaises(ab.AttnBenchError) as raised:
            CLIENT.run(mask_mod="doc[q] == doc[kv]", aux={"doc": [0, 0, 1, 1]}, **small())
        self.assertEqual(raised.exception.code_name, "INVALID_ARGUMENT")
        self.assertIn("spec.mask_mod.expression: column 5: index 0 of 'doc'",
                      raised.exception.message)
        with self.assertRaises(ab.AttnBenchError) as raised:
            CLIENT.run(score_mod="s + nope", **small())
        self.assertEqual(raised.exception.code_name, "INVALID_ARGUMENT")
        self.assertIn("spec.score_mod.expression: column 5: unknown name 'nope'",
                      raised.exception.message)


class BackwardRunTest(unittest.TestCase):
    """PHASE_BACKWARD measured and checked, where cpu_reference lists it."""

    def setUp(self):
        if not harness.serves_backward(SERVER):
            self.skipTest(harness.NO_BACKWARD_SKIP)

    def check_result(self, result, timing):
        self.assertEqual(result.spec.phase, ab.pb.PHASE_BACKWARD)
        self.assertEqual(result.measurement.backward_timing, timing)
        checks = {t.name: t for t in result.correctness.tensors}
        self.assertEqual(sorted(checks), sorted(GRADIENTS))
        self.assertTrue(all(t.passed and t.non_finite_elements == 0 for t in checks.values()),
                        result.correctness)
        self.assertTrue(result.correctness.passed)
        tensors = ab.tensors(result)
        self.assertEqual(list(tensors), ["output", "dq", "dk", "dv"])
        for name, tensor in tensors.items():
            self.assertEqual(tensor.dtype, ab.pb.DTYPE_FLOAT32, name)
            self.assertEqual(list(tensor.shape), SHAPES[name], name)
            self.assertEqual(len(tensor.data), 4 * SHAPES[name][1] * SHAPES[name][2]
                             * SHAPES[name][3], name)

    def test_run_and_stream_run_return_the_gradients(self):
        inline = CLIENT.run_result(ab.build_request(return_output=True,
                                                    backward_timing="training_step", **backward()))
        self.check_result(inline, ab.pb.BACKWARD_TIMING_TRAINING_STEP)
        streamed = CLIENT.stream_result(**backward())
        self.check_result(streamed, ab.pb.BACKWARD_TIMING_BACKWARD_ONLY)

    def test_records_carry_every_gradients_check(self):
        record = CLIENT.run(backward_timing="training_step", **backward())
        self.assertEqual((record["phase"], record["backward_timing"]),
                         ("backward", "training_step"))
        for g in GRADIENTS:
            self.assertTrue(record[f"{g}_passed"], g)
            self.assertTrue(0 <= record[f"{g}_rel_error"] < 1, g)  # `passed` judges tolerance
            self.assertIsNotNone(record[f"{g}_max_abs_error"], g)
        self.assertTrue(record["passed"])
        records = CLIENT.sweep({"phase": ["prefill", "backward"]}, check="full",
                               **small(head_dim_v=16))
        self.assertEqual([(r["phase"], r["backward_timing"]) for r in records],
                         [("prefill", None), ("backward", "backward_only")])
        self.assertIsNone(records[0]["dq_passed"])
        self.assertTrue(records[1]["dq_passed"])

    def test_client_grad_output_is_the_one_checked(self):
        try:
            import numpy
        except ImportError:
            self.skipTest("numpy is not installed (Debian: python3-numpy)")
        d_o = numpy.random.default_rng(5).standard_normal(SHAPES["output"]).astype(numpy.float32)
        given = CLIENT.stream_result(grad_output=d_o, **backward())
        self.check_result(given, ab.pb.BACKWARD_TIMING_BACKWARD_ONLY)
        generated = CLIENT.stream_result(**backward())
        self.assertFalse(numpy.allclose(ab.to_numpy(given.dq), ab.to_numpy(generated.dq)))
        self.assertEqual(given.spec.inputs.grad_output.data, b"")  # echoed without its bytes
        self.assertEqual(list(given.spec.inputs.grad_output.shape), SHAPES["output"])
        with self.assertRaises(ab.AttnBenchError) as raised:
            CLIENT.run(grad_output=d_o[:, :32], **backward())
        self.assertEqual(raised.exception.code_name, "INVALID_ARGUMENT")
        self.assertIn("spec.inputs.grad_output", raised.exception.message)


# A layer's backward: GQA 4/2, D 32, S 16, d_model 48, float32: Y and dX [1, 16, 48], dW_q
# [48, 128], dW_k and dW_v [48, 64], dW_o [128, 48].
LAYER_SHAPES = {"output": [1, 16, 48], "dx": [1, 16, 48], "dw_q": [48, 128], "dw_k": [48, 64],
                "dw_v": [48, 64], "dw_o": [128, 48]}
LAYER_GRADIENTS = ("dx", "dw_q", "dw_k", "dw_v", "dw_o")


class LayerBackwardTest(unittest.TestCase):
    """PHASE_BACKWARD at SCOPE_LAYER: dX and the weight gradients, inline and streamed, checked
    one by one, and their record columns."""

    def setUp(self):
        if not harness.serves_backward(SERVER):
            self.skipTest(harness.NO_BACKWARD_SKIP)

    def layer(self, **overrides):
        return small(seq_len=16, scope="layer", d_model=48, phase="backward", check="full",
                     **overrides)

    def check_result(self, result):
        checks = [t.name for t in result.correctness.tensors]
        self.assertEqual(checks, list(LAYER_GRADIENTS))
        self.assertTrue(result.correctness.passed, result.correctness)
        tensors = ab.tensors(result)
        self.assertEqual(list(tensors), ["output", *LAYER_GRADIENTS])
        for name, tensor in tensors.items():
            self.assertEqual(list(tensor.shape), LAYER_SHAPES[name], name)
            self.assertEqual(len(tensor.data), 4 * math.prod(LAYER_SHAPES[name]), name)

    def test_run_and_stream_run_return_the_layers_gradients(self):
        inline = CLIENT.run_result(ab.build_request(return_output=True,
                                                    backward_timing="training_step",
                                                    **self.layer()))
        self.check_result(inline)
        streamed = CLIENT.stream_result(**self.layer())
        self.check_result(streamed)
        for name in LAYER_GRADIENTS:  # deterministic: the same bytes either way
            self.assertEqual(getattr(inline, name).data, getattr(streamed, name).data, name)

    def test_records_carry_each_gradients_check(self):
        record = CLIENT.run(**self.layer())
        self.assertTrue(record["passed"])
        self.assertEqual((record["scope"], record["phase"]), ("layer", "backward"))
        for g in LAYER_GRADIENTS:
            self.assertTrue(record[f"{g}_passed"], g)
            self.assertTrue(0 <= record[f"{g}_rel_error"] < 1e-4, g)  # float32
        self.assertIsNone(record["dq_passed"])
        self.assertGreater(record["projections_ms"], 0)


class TargetTest(unittest.TestCase):

    def test_name_and_address_list_schemes(self):
        # dns:/// resolves every address of the name; ipv4: lists them. round_robin only picks
        # connected ones, so an address nothing listens on does not fail the calls.
        dead = harness.free_port()
        for target in (f"dns:///localhost:{SERVER.port}", f"ipv4:127.0.0.1:{SERVER.port}",
                       f"ipv4:127.0.0.1:{SERVER.port},127.0.0.1:{dead}"):
            with self.subTest(target=target), ab.Client(target, timeout=TIMEOUT) as client:
                client.wait_ready()
                for _ in range(3):
                    self.assertIn("cpu_reference", client.backends())

    def test_round_robin_is_configured(self):
        options = dict(ab.channel_options())
        self.assertIn('"round_robin"', options["grpc.service_config"])


class AuthTest(unittest.TestCase):
    """TLS (a self-signed certificate made by openssl) with --tokens_file, and the tenant header."""

    TOKEN = "py-client-token-0123456789abcdef"

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="attnbench-pyclient-")
        d = cls.tmp.name
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{d}/key.pem", "-out",
                        f"{d}/cert.pem", "-days", "2", "-subj", "/CN=attnbench test",
                        "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        with open(f"{d}/tokens.txt", "w") as f:
            f.write(f"{cls.TOKEN} alice\n")
        with open(f"{d}/cert.pem", "rb") as f:
            cls.cert = f.read()
        cls.server = harness.Server("--cpu_threads=1", f"--tls_cert_file={d}/cert.pem",
                                    f"--tls_key_file={d}/key.pem",
                                    f"--tokens_file={d}/tokens.txt")

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls.tmp.cleanup()

    def test_token_over_tls(self):
        with ab.Client(self.server.target, root_certificates=self.cert, token=self.TOKEN,
                       timeout=TIMEOUT) as client:
            record = client.run(**small(seq_len=16))
        self.assertGreater(record["median_ms"], 0)
        if record["tenant"]:  # Servers that fill RunResult.tenant.
            self.assertEqual(record["tenant"], "alice")

    def test_rejections(self):
        with ab.Client(self.server.target, root_certificates=self.cert,
                       timeout=TIMEOUT) as client:
            with self.assertRaises(ab.AttnBenchError) as raised:
                client.run(**small(seq_len=16))
            self.assertEqual(raised.exception.code_name, "UNAUTHENTICATED")
        with ab.Client(self.server.target, token=self.TOKEN, timeout=10) as client:
            with self.assertRaises(ab.AttnBenchError) as raised:  # Plaintext to a TLS port.
                client.capabilities()
            self.assertIn(raised.exception.code_name, ("UNAVAILABLE", "DEADLINE_EXCEEDED"))

    def test_tenant_header_without_tokens(self):
        with ab.Client(SERVER.target, tenant="team-x", timeout=TIMEOUT) as client:
            record = client.run(**small(seq_len=16))
        if record["tenant"]:
            self.assertEqual(record["tenant"], "team-x")


class SweepTest(unittest.TestCase):

    def test_records_in_grid_order(self):
        seen = []
        records = CLIENT.sweep({"seq_len": [16, 32], "layout": ["mha:2", "gqa:4/2"]},
                               on_record=seen.append, check="off", **small())
        self.assertIsInstance(records, ab.Records)
        self.assertEqual([r["point_index"] for r in records], [0, 1, 2, 3])
        self.assertEqual([(r["seq_q"], r["layout"]) for r in records],
                         [(16, "mha:2"), (16, "gqa:4/2"), (32, "mha:2"), (32, "gqa:4/2")])
        self.assertEqual(sorted(r["point_index"] for r in seen), [0, 1, 2, 3])
        self.assertTrue(all(r["median_ms"] > 0 and r["error_code"] is None for r in records))

    def test_every_axis_kind(self):
        records = CLIENT.sweep([("dtype", ["fp32", "fp16"]), ("mask", ["none", "window:8/0"]),
                                ("head_dim", [16]), ("batch", [2]), ("backend", ["cpu_reference"]),
                                ("phase", ["prefill"])], check="full", **small(seq_len=32))
        self.assertEqual([(r["dtype"], r["mask"]) for r in records],
                         [("fp32", "none"), ("fp32", "window:8/0"), ("fp16", "none"),
                          ("fp16", "window:8/0")])
        self.assertTrue(all((r["head_dim"], r["head_dim_v"], r["batch"]) == (16, 16, 2)
                            for r in records))
        self.assertTrue(all(r["passed"] for r in records))

    def test_failed_point_becomes_a_record_when_continuing(self):
        records = CLIENT.sweep({"seq_len": [16, 8192, 32]}, continue_on_error=True, check="off",
                               **small())
        self.assertEqual([r["point_index"] for r in records], [0, 1, 2])
        self.assertEqual([r["error_code"] for r in records], [None, "RESOURCE_EXHAUSTED", None])
        failed = records[1]
        self.assertIn("max_request_bytes", failed["error_message"])
        self.assertEqual((failed["seq_q"], failed["layout"], failed["backend"]),
                         (8192, "gqa:4/2", "cpu_reference"))
        self.assertIsNone(failed["median_ms"])
        self.assertGreater(records[2]["median_ms"], 0)

    def test_failed_point_raises_otherwise_with_the_points_before(self):
        with self.assertRaises(ab.AttnBenchError) as raised:
            CLIENT.sweep({"seq_len": [16, 8192, 32]}, check="off", **small())
        self.assertEqual(raised.exception.code_name, "RESOURCE_EXHAUSTED")
        self.assertEqual([r["point_index"] for r in raised.exception.records], [0])

    def test_invalid_point_rejects_the_sweep(self):
        with self.assertRaises(ab.AttnBenchError) as raised:
            CLIENT.sweep({"layout": ["gqa:4/2", "gqa:4/3"]}, **small())
        self.assertEqual(raised.exception.code_name, "INVALID_ARGUMENT")
        self.assertEqual(raised.exception.records, [])

    def test_bad_axes_fail_before_calling(self):
        for axes in ({}, {"seq": [1]}, {"seq_len": []}, {"seq_len": 16}, {"layout": ["x:1"]}):
            with self.subTest(axes=axes), self.assertRaises(ValueError):
                CLIENT.sweep(axes, **small())
        with self.assertRaises(ValueError):
            CLIENT.sweep({"seq_len": [16]}, fan_out=0, **small())


class PandasTest(unittest.TestCase):

    def test_records_load_into_a_data_frame(self):
        try:
            import pandas
        except ImportError:
            self.skipTest("pandas is not installed (Debian: python3-pandas)")
        records = CLIENT.sweep({"seq_len": [16, 32, 48], "layout": ["mha:2", "gqa:4/2"]},
                               check="off", **small())
        frame = records.to_pandas()
        self.assertIsInstance(frame, pandas.DataFrame)
        self.assertEqual(list(frame.columns), list(ab.COLUMNS))
        self.assertEqual(len(frame), 6)
        self.assertEqual(list(frame["point_index"]), list(range(6)))
        by_layout = frame.groupby("layout")["median_ms"].count()
        self.assertEqual(dict(by_layout), {"gqa:4/2": 3, "mha:2": 3})
        self.assertTrue((frame["median_ms"] > 0).all())
        self.assertEqual(len(pandas.DataFrame(records)), 6)  # Plain records load too.


class PlotExampleTest(unittest.TestCase):

    def test_writes_a_png(self):
        try:
            import matplotlib  # noqa: F401
            import pandas  # noqa: F401
        except ImportError:
            self.skipTest("matplotlib or pandas is not installed")
        with tempfile.TemporaryDirectory() as tmp:
            png = os.path.join(tmp, "sweep.png")
            csv_path = os.path.join(tmp, "sweep.csv")
            env = dict(os.environ, MPLCONFIGDIR=tmp, PYTHONPATH=os.pathsep.join(
                [PACKAGE_DIR, os.environ.get("ATTNBENCH_PYTHON_PATH", "")]))
            env.pop("DISPLAY", None)  # Headless, as in CI.
            out = subprocess.run(
                [sys.executable, os.path.join(PACKAGE_DIR, "examples", "plot_sweep.py"),
                 f"--target={SERVER.target}", f"--out={png}", f"--csv={csv_path}",
                 "--seq_lens=32,64", "--layouts=mha:4,gqa:4/2,xsqa:8", "--head_dim=32",
                 "--iters=2", "--fan_out=2"],
                capture_output=True, text=True, timeout=TIMEOUT, env=env,
                stdin=subprocess.DEVNULL)
            self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
            self.assertIn(f"wrote {png}", out.stdout)
            self.assertIn("gqa:4/2", out.stdout)
            with open(png, "rb") as f:
                data = f.read()
            self.assertEqual(data[:8], b"\x89PNG\r\n\x1a\n")
            self.assertEqual(data[12:16], b"IHDR")
            width, height = struct.unpack(">II", data[16:24])
            self.assertGreaterEqual((width, height), (600, 300))
            self.assertGreater(len(data), 20000)  # Axes, lines and text, not a blank canvas.
            self.assertEqual(data[-8:-4], b"IEND")
            with open(csv_path) as f:
                lines = f.read().splitlines()
            self.assertEqual(len(lines), 1 + 6)
            self.assertTrue(lines[0].startswith("point_index,backend,server"))

    def test_reports_a_server_error(self):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [PACKAGE_DIR, os.environ.get("ATTNBENCH_PYTHON_PATH", "")]))
        with tempfile.TemporaryDirectory() as tmp:
            env["MPLCONFIGDIR"] = tmp
            out = subprocess.run(
                [sys.executable, os.path.join(PACKAGE_DIR, "examples", "plot_sweep.py"),
                 f"--target={SERVER.target}", f"--out={tmp}/x.png", "--layouts=gqa:4/3"],
                capture_output=True, text=True, timeout=TIMEOUT, env=env,
                stdin=subprocess.DEVNULL)
            self.assertEqual(out.returncode, 1, out.stdout + out.stderr)
            self.assertIn("INVALID_ARGUMENT", out.stderr)
            self.assertFalse(os.path.exists(f"{tmp}/x.png"))


class WheelTest(unittest.TestCase):

    def test_wheel_carries_its_stubs(self):
        try:
            import setuptools  # noqa: F401
            import wheel  # noqa: F401
        except ImportError:
            self.skipTest("setuptools or wheel is not installed (Debian: python3-setuptools, "
                          "python3-wheel)")
        with tempfile.TemporaryDirectory() as tmp:
            # A copy, so the build leaves nothing in the source tree; the proto from the repo.
            src = os.path.join(tmp, "src")
            shutil.copytree(PACKAGE_DIR, src, ignore=shutil.ignore_patterns(
                "build", "dist", "*.egg-info", "__pycache__"))
            dist = os.path.join(tmp, "dist")
            env = dict(os.environ, ATTNBENCH_PROTO_DIR=os.path.join(ROOT, "proto"))
            env.pop("PYTHONPATH", None)
            out = subprocess.run(
                [sys.executable, "-c", "import sys\nfrom setuptools import build_meta\n"
                 "print(build_meta.build_wheel(sys.argv[1]))", dist],
                cwd=src, capture_output=True, text=True, timeout=TIMEOUT, env=env,
                stdin=subprocess.DEVNULL)
            self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
            wheel_path = os.path.join(dist, out.stdout.strip().splitlines()[-1])
            with zipfile.ZipFile(wheel_path) as archive:
                names = set(archive.namelist())
                for needed in ("attnbench/v1/attnbench_pb2.py",
                               "attnbench/v1/attnbench_pb2_grpc.py", "attnbench/__init__.py",
                               "attnbench/v1/__init__.py", "attnbench_client/__init__.py",
                               "attnbench_client/client.py"):
                    self.assertIn(needed, names)
                site = os.path.join(tmp, "site")
                archive.extractall(site)
            # Only the unpacked wheel on the path (no source tree, no build stubs).
            script = ("import attnbench_client as ab, attnbench.v1.attnbench_pb2 as pb, sys\n"
                      "assert ab.__file__.startswith(sys.argv[2]), ab.__file__\n"
                      "assert pb.__file__.startswith(sys.argv[2]), pb.__file__\n"
                      "with ab.Client(sys.argv[1], timeout=60) as c:\n"
                      "    r = c.run(batch=1, seq_len=16, head_dim=16, layout='mha:1',\n"
                      "              dtype='fp32', backend='cpu_reference', max_iters=2)\n"
                      "    print('median_ms', r['median_ms'] > 0)\n")
            out = subprocess.run([sys.executable, "-I", "-c",
                                  f"import sys; sys.path.insert(0, {site!r}); exec({script!r})",
                                  SERVER.target, site],
                                 capture_output=True, text=True, timeout=TIMEOUT,
                                 stdin=subprocess.DEVNULL)
            self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
            self.assertIn("median_ms True", out.stdout)


if __name__ == "__main__":
    unittest.main()
