"""End to end: the attnbench CLI (run, sweep, caps) against a real attnbench-server, including
PHASE_BACKWARD: refused where no backend lists it, otherwise dQ, dK, dV written next to O."""

import csv
import io
import json
import math
import os
import random
import struct
import tempfile
import unittest

import harness
from harness import FAST_FLAGS, run_cli

SERVER = None


def setUpModule():
    global SERVER
    # Requests estimated above 4 MiB fail at run time (RESOURCE_EXHAUSTED): a sweep point to fail.
    SERVER = harness.Server("--cpu_threads=2", "--max_request_bytes=4194304")


def tearDownModule():
    if SERVER is not None:
        SERVER.stop()


def server_flag():
    return f"--server={SERVER.target}"


def table_rows(text):
    """Splits an aligned table into {column title: cell} dicts (titles may contain one space)."""
    lines = [line for line in text.splitlines() if line.strip()]
    header = lines[0]
    titles = ["point", "backend", "layout", "mask", "dtype", "B", "S_q", "S_kv", "H", "D",
              "median ms", "p10-p90 ms", "TFLOP/s", "GB/s", "rel err", "pass", "server",
              "device"]
    rows = []
    for line in lines[1:]:
        cells = line.split()
        if len(cells) > 1 and cells[1] == "error":
            rows.append({"point": cells[0], "error": " ".join(cells[2:])})
            continue
        if len(cells) != len(titles):
            raise AssertionError(f"row has {len(cells)} cells, not {len(titles)}: {line!r}")
        rows.append(dict(zip(titles, cells)))
    for title in titles:
        assert title in header, f"{title!r} missing from header {header!r}"
    return rows


class CapsTest(unittest.TestCase):

    def test_table(self):
        out = run_cli("caps", server_flag())
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("backend cpu_reference:", out.stdout)
        self.assertRegex(out.stdout, r"(?m)^server \S+")
        self.assertRegex(out.stdout, r"layouts .*gqa")

    def test_json(self):
        out = run_cli("caps", server_flag(), "--format=json")
        self.assertEqual(out.returncode, 0, out.stderr)
        caps = json.loads(out.stdout)
        self.assertIn("cpu_reference", [b["name"] for b in caps["backends"]])
        self.assertGreater(int(caps["limits"]["maxInlineOutputBytes"]), 0)

    def test_csv(self):
        out = run_cli("caps", server_flag(), "--format=csv")
        self.assertEqual(out.returncode, 0, out.stderr)
        rows = list(csv.DictReader(io.StringIO(out.stdout)))
        self.assertIn("cpu_reference", [row["backend"] for row in rows])

    def test_dns_uri_target(self):
        out = run_cli("caps", f"--server=dns:///{SERVER.target}", "--format=json")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertTrue(json.loads(out.stdout)["backends"])


GQA_RUN = ["--backend=cpu_reference", "--batch=1", "--dtype=fp32", "--layout=gqa", "--heads=4", "--kv_heads=2",
           "--seq_len=128", "--head_dim=64", "--mask=causal", "--check=full",
           *FAST_FLAGS]


class RunTest(unittest.TestCase):

    def test_table(self):
        out = run_cli("run", server_flag(), *GQA_RUN)
        self.assertEqual(out.returncode, 0, out.stderr)
        rows = table_rows(out.stdout)
        self.assertEqual(len(rows), 1)
        row = rows[0]
        self.assertEqual(row["backend"], "cpu_reference")
        self.assertEqual(row["layout"], "gqa:4/2")
        self.assertEqual(row["mask"], "causal")
        self.assertEqual(row["dtype"], "fp32")
        self.assertEqual((row["S_q"], row["S_kv"], row["H"], row["D"]), ("128", "128", "4", "64"))
        self.assertGreater(float(row["median ms"]), 0)
        self.assertEqual(row["pass"], "yes")

    def test_json_echoes_the_normalized_spec(self):
        out = run_cli("run", server_flag(), "--format=json", "--heads=2", "--batch=1", "--seq_len=64",
                      "--head_dim=32", "--dtype=fp16", "--samples", *FAST_FLAGS)
        self.assertEqual(out.returncode, 0, out.stderr)
        result = json.loads(out.stdout)["result"]
        spec = result["spec"]
        self.assertEqual(spec["layout"], {"mha": {"numHeads": 2}})
        self.assertEqual(int(spec["seqLenQ"]), 64)
        self.assertEqual(int(spec["seqLenKv"]), 64)
        self.assertEqual(spec["dtype"], "DTYPE_FLOAT16")
        # Unset on the command line, so the server filled in its defaults.
        self.assertEqual(spec.get("phase"), "PHASE_PREFILL")
        self.assertEqual(spec.get("scope"), "SCOPE_CORE")
        self.assertEqual(result["backend"], "cpu_reference")
        timing = result["timing"]
        self.assertGreaterEqual(timing["count"], 2)
        self.assertEqual(len(timing["samplesMs"]), timing["count"])
        self.assertEqual(len(result["headMap"]), 2)

    def test_csv(self):
        out = run_cli("run", server_flag(), "--format=csv", *GQA_RUN)
        self.assertEqual(out.returncode, 0, out.stderr)
        rows = list(csv.DictReader(io.StringIO(out.stdout)))
        self.assertEqual(len(rows), 1)
        self.assertEqual(rows[0]["layout"], "gqa:4/2")
        self.assertEqual(rows[0]["passed"], "true")
        self.assertLess(float(rows[0]["rel_err"]), 1e-4)
        self.assertGreater(float(rows[0]["tflops"]), 0)

    def test_kv_compression(self):
        flags = [*GQA_RUN, "--kv_spectrum_decay=0.6", "--kv_compression_heads=1"]
        out = run_cli("run", server_flag(), "--format=csv", *flags)
        self.assertEqual(out.returncode, 0, out.stderr)
        rows = list(csv.DictReader(io.StringIO(out.stdout)))
        self.assertEqual(len(rows), 1)
        row = rows[0]
        self.assertEqual(row["kv_heads"], "1")
        self.assertEqual(row["passed"], "true")
        for method in ("pca", "mean_pool"):
            for column in ("key_err", "value_err", "output_err", "median_ms"):
                self.assertGreater(float(row[f"{method}_{column}"]), 0, f"{method}_{column}")
        self.assertLess(float(row["pca_key_err"]), float(row["mean_pool_key_err"]))
        table = run_cli("run", server_flag(), *flags)
        self.assertEqual(table.returncode, 0, table.stderr)
        self.assertIn("KV-head compression", table.stdout)
        self.assertRegex(table.stdout, r"\n +0  pca  ")
        self.assertRegex(table.stdout, r"\n +0  mean_pool  ")
        # A server-side refusal names the field; a flag alone misused is a usage error.
        bad = run_cli("run", server_flag(), *GQA_RUN, "--kv_compression_heads=3")
        self.assertEqual(bad.returncode, 1)
        self.assertIn("spec.kv_compression.target_kv_heads (3)", bad.stderr)
        usage = run_cli("run", server_flag(), *GQA_RUN, "--kv_spectrum_rank=3")
        self.assertEqual(usage.returncode, 2)
        self.assertIn("--kv_spectrum_rank: needs --kv_spectrum_decay", usage.stderr)

    def test_output_file_via_stream_run(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "o.bin")
            out = run_cli("run", server_flag(), f"--output={path}", *GQA_RUN)
            self.assertEqual(out.returncode, 0, out.stderr)
            # O is [B=1, S_q=128, H_out=4, D_v=64] float32.
            self.assertEqual(os.path.getsize(path), 128 * 4 * 64 * 4)
            self.assertIn("wrote 131072 bytes of fp32 [1,128,4,64]", out.stderr)


class SweepTest(unittest.TestCase):
    SWEEP = ["sweep", "--backend=cpu_reference", "--batch=1", "--dtype=fp32", "--head_dim=64",
             "--seq_len=64",
             "--sweep_layout=mha:4,gqa:4/2", "--sweep_mask=none,causal", *FAST_FLAGS]

    def test_table_and_progress(self):
        out = run_cli(*self.SWEEP, server_flag())
        self.assertEqual(out.returncode, 0, out.stderr)
        rows = table_rows(out.stdout)
        # Row-major over the axes, the mask (last) varying fastest.
        self.assertEqual([(r["layout"], r["mask"]) for r in rows],
                         [("mha:4", "none"), ("mha:4", "causal"),
                          ("gqa:4/2", "none"), ("gqa:4/2", "causal")])
        for i in range(1, 5):
            self.assertIn(f"[{i}/4] point", out.stderr)

    def test_csv(self):
        out = run_cli(*self.SWEEP, server_flag(), "--format=csv", "--sweep_seq_len=32,64")
        self.assertEqual(out.returncode, 0, out.stderr)
        rows = list(csv.DictReader(io.StringIO(out.stdout)))
        self.assertEqual(len(rows), 8)
        self.assertEqual(sorted({int(r["seq_len_q"]) for r in rows}), [32, 64])
        self.assertTrue(all(r["error"] == "" for r in rows))

    def test_json(self):
        out = run_cli(*self.SWEEP, server_flag(), "--format=json")
        self.assertEqual(out.returncode, 0, out.stderr)
        responses = json.loads(out.stdout)
        self.assertEqual(len(responses), 4)
        self.assertEqual(sorted(r.get("pointIndex", 0) for r in responses), [0, 1, 2, 3])
        self.assertTrue(all(r["totalPoints"] == 4 and "result" in r for r in responses))

    def test_continue_on_error_reports_the_failed_point(self):
        # S=8192 needs more than the server's --max_request_bytes; S=16 runs.
        out = run_cli("sweep", server_flag(), "--batch=1", "--head_dim=64", "--dtype=fp32",
                      "--layout=gqa", "--heads=4", "--kv_heads=2", "--sweep_seq_len=16,8192",
                      "--continue_on_error", *FAST_FLAGS)
        self.assertEqual(out.returncode, 1, out.stdout + out.stderr)
        rows = table_rows(out.stdout)
        self.assertEqual(len(rows), 2)
        self.assertEqual(rows[0]["S_q"], "16")
        self.assertTrue(rows[1]["error"].startswith("RESOURCE_EXHAUSTED:"), rows[1])
        self.assertIn("[2/2] point 1: error RESOURCE_EXHAUSTED", out.stderr)
        self.assertIn("some sweep points failed", out.stderr)

    def test_invalid_point_fails_the_sweep(self):
        out = run_cli("sweep", server_flag(), "--batch=1", "--head_dim=64", "--seq_len=32",
                      "--dtype=fp32", "--sweep_layout=gqa:4/2,gqa:4/3", *FAST_FLAGS)
        self.assertEqual(out.returncode, 1, out.stdout + out.stderr)
        self.assertRegex(out.stderr, r"(?m)^attnbench: INVALID_ARGUMENT: .*num_kv_heads")


# GQA 4/2 backward, D_qk 32 and D_v 16, S 64: Q [1, 64, 4, 32], K [1, 64, 2, 32],
# V [1, 64, 2, 16], O and dO [1, 64, 4, 16], float32.
BACKWARD_RUN = ["--backend=cpu_reference", "--batch=1", "--dtype=fp32", "--layout=gqa",
                "--heads=4", "--kv_heads=2", "--seq_len=64", "--head_dim=32", "--head_dim_v=16",
                "--mask=causal", "--phase=backward", "--check=full", *FAST_FLAGS]
BACKWARD_FILES = {"": [1, 64, 4, 16], ".dq": [1, 64, 4, 32], ".dk": [1, 64, 2, 32],
                  ".dv": [1, 64, 2, 16]}


def write_grad_output(path, elements):
    """A dO file: `elements` float32 values in [-1, 1), little-endian, from a fixed seed."""
    rng = random.Random(3)
    with open(path, "wb") as f:
        f.write(struct.pack(f"<{elements}f", *(rng.uniform(-1, 1) for _ in range(elements))))


class BackwardTest(unittest.TestCase):

    def test_usage_errors_never_reach_the_server(self):
        dead = f"--server=127.0.0.1:{harness.free_port()}"
        out = run_cli("run", dead, *GQA_RUN, "--backward_timing=training_step")
        self.assertEqual(out.returncode, 2, out.stderr)
        self.assertIn("attnbench run: --backward_timing: needs --phase=backward", out.stderr)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "do.bin")
            write_grad_output(path, 100)
            out = run_cli("run", dead, *BACKWARD_RUN, f"--grad_output={path}")
            self.assertEqual(out.returncode, 2, out.stderr)
            self.assertIn(f"attnbench run: --grad_output: {path} has 400 bytes; dO [1,64,4,16] of "
                          "fp32 needs 16384", out.stderr)
        out = run_cli("sweep", dead, *BACKWARD_RUN, "--backward_timing=training_step",
                      "--sweep_phase=backward,prefill")
        self.assertEqual(out.returncode, 2, out.stderr)
        self.assertIn("--backward_timing: needs every point's phase to be backward", out.stderr)

    def test_refused_where_no_backend_lists_it(self):
        if harness.serves_backward(SERVER):
            self.skipTest(harness.BACKWARD_SERVED_SKIP)
        with tempfile.TemporaryDirectory() as tmp:
            out = run_cli("run", server_flag(), *BACKWARD_RUN, "--backward_timing=training_step",
                          f"--output={os.path.join(tmp, 'o.bin')}")
        self.assertEqual(out.returncode, 1, out.stderr)
        self.assertEqual(out.stdout, "")
        self.assertEqual(out.stderr,
                         f"attnbench: FAILED_PRECONDITION: {harness.NO_BACKWARD_ON_CPU}\n")

    def test_gradients_to_files_and_per_gradient_columns(self):
        if not harness.serves_backward(SERVER):
            self.skipTest(harness.NO_BACKWARD_SKIP)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "o.bin")
            d_o = os.path.join(tmp, "do.bin")
            write_grad_output(d_o, 64 * 4 * 16)
            out = run_cli("run", server_flag(), *BACKWARD_RUN, "--backward_timing=training_step",
                          f"--grad_output={d_o}", f"--output={path}", "--format=csv")
            self.assertEqual(out.returncode, 0, out.stderr)
            for suffix, shape in BACKWARD_FILES.items():
                size = 4 * shape[1] * shape[2] * shape[3]
                self.assertEqual(os.path.getsize(path + suffix), size, suffix)
                self.assertIn(f"wrote {size} bytes of fp32 [{','.join(map(str, shape))}] to "
                              f"{path}{suffix}\n", out.stderr)
                with open(path + suffix, "rb") as f:
                    values = struct.unpack(f"<{size // 4}f", f.read())
                self.assertTrue(all(math.isfinite(v) for v in values), suffix)
        rows = list(csv.DictReader(io.StringIO(out.stdout)))
        self.assertEqual(len(rows), 1)
        row = rows[0]
        self.assertEqual((row["phase"], row["backward_timing"]), ("backward", "training_step"))
        self.assertEqual(row["passed"], "true")
        for g in ("dq", "dk", "dv"):
            self.assertEqual(row[f"{g}_passed"], "true", g)
            # Within the kernels' tolerance for the gradient, which `passed` already judges.
            self.assertTrue(0 <= float(row[f"{g}_rel_err"]) < 1, g)

        out = run_cli("run", server_flag(), *BACKWARD_RUN)
        self.assertEqual(out.returncode, 0, out.stderr)
        header, cells = [line for line in out.stdout.splitlines() if line.strip()]
        self.assertTrue(header.endswith("  device    dQ err    dK err    dV err"), header)
        self.assertEqual(cells.split()[15], "yes")  # pass
        self.assertEqual(len(cells.split()), 18 + 3)

    def test_layer_gradients_to_files(self):
        if not harness.serves_backward(SERVER):
            self.skipTest(harness.NO_BACKWARD_SKIP)
        # GQA 4/2, D 32, S 16, d_model 48, float32: Y and dX [1, 16, 48], dW_q [48, 128],
        # dW_k and dW_v [48, 64], dW_o [128, 48].
        files = {"": [1, 16, 48], ".dx": [1, 16, 48], ".dw_q": [48, 128], ".dw_k": [48, 64],
                 ".dw_v": [48, 64], ".dw_o": [128, 48]}
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "y.bin")
            out = run_cli("run", server_flag(), "--backend=cpu_reference", "--batch=1",
                          "--dtype=fp32", "--layout=gqa", "--heads=4", "--kv_heads=2",
                          "--seq_len=16", "--head_dim=32", "--scope=layer", "--d_model=48",
                          "--phase=backward", "--check=full", f"--output={path}", *FAST_FLAGS)
            self.assertEqual(out.returncode, 0, out.stderr)
            for suffix, shape in files.items():
                size = 4 * math.prod(shape)
                self.assertEqual(os.path.getsize(path + suffix), size, suffix)
                self.assertIn(f"wrote {size} bytes of fp32 [{','.join(map(str, shape))}] to "
                              f"{path}{suffix}\n", out.stderr)
        header, cells = [line for line in out.stdout.splitlines() if line.strip()]
        self.assertTrue(header.endswith("dX err  dW_q err  dW_k err  dW_v err  dW_o err"), header)
        self.assertEqual(cells.split()[15], "yes")  # pass
        self.assertEqual(len(cells.split()), 18 + 5)  # the five gradients' errors

        # The CSV: the five gradients' checks in the columns appended after every older one (only
        # a quantized decode's split and `deterministic` come after them); no dQ, dK, dV.
        out = run_cli("run", server_flag(), "--backend=cpu_reference", "--batch=1",
                      "--dtype=fp32", "--layout=gqa", "--heads=4", "--kv_heads=2",
                      "--seq_len=16", "--head_dim=32", "--scope=layer", "--d_model=48",
                      "--phase=backward", "--check=full", "--format=csv", *FAST_FLAGS)
        self.assertEqual(out.returncode, 0, out.stderr)
        header = out.stdout.splitlines()[0].split(",")
        layer_columns = [f"{g}_{c}" for g in ("dx", "dw_q", "dw_k", "dw_v", "dw_o")
                         for c in ("rel_err", "passed")]
        later = ["kernel_rel_err", "kernel_passed", "quantization_rel_err", "deterministic"]
        self.assertEqual(header[-len(later) - len(layer_columns):], layer_columns + later)
        rows = list(csv.DictReader(io.StringIO(out.stdout)))
        self.assertEqual(len(rows), 1)
        row = rows[0]
        self.assertEqual((row["phase"], row["passed"]), ("backward", "true"))
        for g in ("dx", "dw_q", "dw_k", "dw_v", "dw_o"):
            self.assertEqual(row[f"{g}_passed"], "true", g)
            self.assertTrue(0 <= float(row[f"{g}_rel_err"]) < 1, g)
        for g in ("dq", "dk", "dv"):
            self.assertEqual((row[f"{g}_rel_err"], row[f"{g}_passed"]), ("", ""), g)
        self.assertEqual((row["kernel_rel_err"], row["deterministic"]), ("", "false"))

    def test_sweep_over_phases(self):
        if not harness.serves_backward(SERVER):
            self.skipTest(harness.NO_BACKWARD_SKIP)
        args = [a for a in BACKWARD_RUN if not a.startswith("--phase=")]
        out = run_cli("sweep", server_flag(), *args, "--sweep_phase=prefill,backward",
                      "--format=csv")
        self.assertEqual(out.returncode, 0, out.stderr)
        rows = list(csv.DictReader(io.StringIO(out.stdout)))
        self.assertEqual([(r["phase"], r["backward_timing"], r["dq_passed"]) for r in rows],
                         [("prefill", "", ""), ("backward", "backward_only", "true")])
        self.assertTrue(all(r["passed"] == "true" for r in rows))


class ErrorTest(unittest.TestCase):

    def test_server_rejects_kv_heads_not_dividing(self):
        out = run_cli("run", server_flag(), "--batch=1", "--layout=gqa", "--heads=4",
                      "--kv_heads=3", "--dtype=fp32", "--seq_len=32", "--head_dim=64", *FAST_FLAGS)
        self.assertEqual(out.returncode, 1)
        self.assertEqual(out.stdout, "")
        self.assertRegex(out.stderr, r"^attnbench: INVALID_ARGUMENT: .+")

    def test_usage_error_never_reaches_the_server(self):
        # A port nothing listens on: a contacted server would make this UNAVAILABLE (exit 1).
        dead = f"--server=127.0.0.1:{harness.free_port()}"
        out = run_cli("run", dead, "--layout=foo", "--heads=4")
        self.assertEqual(out.returncode, 2)
        self.assertIn("--layout: unknown layout 'foo'", out.stderr)
        out = run_cli("sweep", dead, "--sweep_seq_len=1,x")
        self.assertEqual(out.returncode, 2)
        self.assertIn("--sweep_seq_len:", out.stderr)
        out = run_cli("run", dead, "--batch=many")
        self.assertEqual(out.returncode, 2)
        self.assertIn("--batch:", out.stderr)
        out = run_cli("frobnicate")
        self.assertEqual(out.returncode, 2)
        out = run_cli()
        self.assertEqual(out.returncode, 2)
        self.assertIn("Usage: attnbench", out.stderr)

    def test_unreachable_server(self):
        out = run_cli("caps", f"--server=127.0.0.1:{harness.free_port()}", "--deadline_seconds=10")
        self.assertEqual(out.returncode, 1)
        self.assertRegex(out.stderr, r"attnbench: (UNAVAILABLE|DEADLINE_EXCEEDED): ")

    def test_help(self):
        out = run_cli("--help")
        self.assertEqual(out.returncode, 0)
        self.assertIn("run", out.stdout)
        out = run_cli("sweep", "--help")
        self.assertEqual(out.returncode, 0)
        self.assertIn("--sweep_layout", out.stdout)


if __name__ == "__main__":
    unittest.main()
