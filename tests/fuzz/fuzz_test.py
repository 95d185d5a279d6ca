"""Hostile-input fuzz test (issue #4): thousands of random, mutated, malformed and oversized
requests against the real attnbench-server, meant for the AddressSanitizer + UBSan build.

Asserts that every call ends with a status its case allows (outcomes.py), that the server stays
up and answers in time, that its RSS after the run stays within RSS_GROWTH_MIB of its RSS after a
warm-up, that it still runs a valid request correctly at the end, that it exits 0 on SIGTERM, and
that its stderr holds no AddressSanitizer, LeakSanitizer or UBSan report.

Environment: ATTNBENCH_BIN_DIR and ATTNBENCH_PYTHON_PATH as for tests/e2e; ATTNBENCH_FUZZ_SEED
(default below, printed), ATTNBENCH_FUZZ_CASES (number of cases), ATTNBENCH_FUZZ_CASE (replay
only these comma-separated case numbers), ATTNBENCH_FUZZ_GDB=1 (print the server's thread stacks
with gdb if it does not stop on SIGTERM). The sanitizer options are set unless already in the
environment (see sanitizer_environment).
"""

import collections
import concurrent.futures
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
import harness  # noqa: E402  (sets sys.path for the generated stubs)

import grpc  # noqa: E402

from attnbench.v1 import attnbench_pb2 as pb  # noqa: E402

import cases  # noqa: E402
import outcomes  # noqa: E402
from outcomes import C  # noqa: E402
import valid_requests  # noqa: E402

SEED = int(os.environ.get("ATTNBENCH_FUZZ_SEED", "20250604"))
NUM_CASES = int(os.environ.get("ATTNBENCH_FUZZ_CASES", "8000"))
ONLY = [int(n) for n in os.environ.get("ATTNBENCH_FUZZ_CASE", "").split(",") if n.strip()]
THREADS = 8
# Far above any request here: valid ones take milliseconds to a second under ASan, plus queueing
# behind 7 others; the slowest refusals (a probabilistic mask counted up to its 2^28-draw cap
# before the memory limit is checked) take 20-50 s. Reaching it means the server hung.
DEADLINE_SECONDS = 180.0
WARMUP_CASES = 2000
RSS_GROWTH_MIB = 64
MAX_FAILURES_SHOWN = 25

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "LeakSanitizer",
                     "runtime error:", "SUMMARY: UndefinedBehaviorSanitizer")

SERVER_FLAGS = [
    "--cpu_threads=2",
    f"--max_message_bytes={valid_requests.MAX_MESSAGE_BYTES}",
    f"--max_request_bytes={valid_requests.MAX_REQUEST_BYTES}",
    f"--max_inline_output_bytes={valid_requests.MAX_INLINE_OUTPUT_BYTES}",
    "--stream_chunk_bytes=4096",
    f"--max_sweep_points={valid_requests.MAX_SWEEP_POINTS}",
    f"--max_iterations={valid_requests.MAX_ITERATIONS}",
    f"--max_duration_seconds={valid_requests.MAX_DURATION_SECONDS}",
    "--shutdown_grace_seconds=10",
]


def sanitizer_environment():
    """Leak checking at exit and UBSan halting on its first report, unless the caller chose.
    ASan's quarantine of freed memory (256 MiB by default) is cut to 32 MiB so that it fills
    during the warm-up and its growth is not mistaken for the server's."""
    os.environ.setdefault("ASAN_OPTIONS", "detect_leaks=1:halt_on_error=1:malloc_context_size=20:"
                                          "quarantine_size_mb=32:"
                                          "allocator_release_to_os_interval_ms=200")
    os.environ.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    os.environ.setdefault("LSAN_OPTIONS", "max_leaks=10")


def rss_mib(pid):
    """Resident memory of the server (NaN once it is gone)."""
    # A pause first: the allocator hands freed pages back to the kernel on a timer.
    time.sleep(1.0)
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def stderr_excerpt(text):
    """The server's stderr from its first sanitizer report on, else its end; without protobuf's
    lines about the invalid UTF-8 the fuzzer sends on purpose."""
    lines = [l for l in text.splitlines() if "contains invalid UTF-8" not in l]
    text = "\n".join(lines)
    starts = [text.find(m) for m in SANITIZER_MARKERS if m in text]
    if starts:
        begin = max(0, min(starts) - 500)
        return text[begin:begin + 12000]
    return text[-6000:]


def thread_stacks(pid):
    """Every thread's stack of a hung server, when gdb is installed (ATTNBENCH_FUZZ_GDB=1)."""
    if not os.environ.get("ATTNBENCH_FUZZ_GDB") or not shutil.which("gdb"):
        return ""
    out = subprocess.run(["gdb", "-p", str(pid), "-batch", "-ex", "thread apply all bt 15"],
                         capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    return out.stdout[-20000:]


def send(channel, case):
    """Performs the call; returns (code, details, response messages as bytes, seconds)."""
    path = cases.SERVICE + case.method
    timeout = case.deadline if case.deadline is not None else DEADLINE_SECONDS
    metadata = case.metadata or None
    start = time.monotonic()
    messages = []
    try:
        if case.method in cases.STREAMING:
            stream = channel.unary_stream(path)(case.payload, timeout=timeout, metadata=metadata)
            if case.cancel_after == 0:
                stream.cancel()
            for message in stream:
                messages.append(message)
                if case.cancel_after is not None and len(messages) >= case.cancel_after:
                    stream.cancel()
        else:
            method = channel.unary_unary(path)
            if case.cancel_after is not None:
                future = method.future(case.payload, timeout=timeout, metadata=metadata)
                if case.cancel_after == 0:
                    future.cancel()
                try:
                    messages.append(future.result())
                except grpc.FutureCancelledError:
                    return (C.CANCELLED, "cancelled by the fuzzer", messages,
                            time.monotonic() - start)
            else:
                messages.append(method(case.payload, timeout=timeout, metadata=metadata))
    except grpc.RpcError as e:
        return e.code(), e.details(), messages, time.monotonic() - start
    return C.OK, "", messages, time.monotonic() - start


def _check_run_result(result, request, valid):
    problems = []
    if result.timing.count < 1:
        problems.append(f"timing.count = {result.timing.count}")
    if not result.backend:
        problems.append("no backend in the result")
    if valid:
        spec = request.spec
        for name in ("batch_size", "seq_len_q", "seq_len_kv", "head_dim_qk", "dtype", "seed"):
            if getattr(result.spec, name) != getattr(spec, name):
                problems.append(f"result.spec.{name} = {getattr(result.spec, name)}, asked "
                                f"{getattr(spec, name)}")
        # A quantized decode cache is compared with the unquantized reference (docs/variants.md
        # §5): its error is a measurement, and can exceed the tolerance on sharp softmaxes.
        cache = spec.kv_cache
        quantized = spec.phase == pb.PHASE_DECODE and (
            cache.saq_bands or cache.format in (pb.CACHE_FORMAT_INT8, pb.CACHE_FORMAT_INT4))
        if result.correctness.checked and not result.correctness.passed and not quantized:
            problems.append(f"correctness failed: relative_error "
                            f"{result.correctness.relative_error} > {result.correctness.tolerance}")
    return problems


def _check_chunks(chunks):
    """Each named tensor's chunks are contiguous, in offset order and add up to its total; the
    tensors come in the proto's order ("output", then "dq", "dk", "dv" for a core backward run, or
    "dx", "dw_q", "dw_k", "dw_v", "dw_o" for a layer's backward)."""
    problems = []
    names = []
    for chunk in chunks:
        if not names or names[-1][0] != chunk.name:
            if any(name == chunk.name for name, _, _ in names):
                return [f"chunks of {chunk.name!r} are not contiguous"]
            names.append([chunk.name, 0, chunk.total_bytes])
        entry = names[-1]
        if chunk.offset_bytes != entry[1]:
            return [f"{chunk.name!r} chunk at {chunk.offset_bytes}, expected {entry[1]}"]
        entry[1] += len(chunk.data)
    for name, offset, total in names:
        if offset != total:
            problems.append(f"{name!r} chunks add up to {offset} of {total} bytes")
    order = [name for name, _, _ in names]
    allowed = ["output", "dq", "dk", "dv", "dx", "dw_q", "dw_k", "dw_v", "dw_o"]
    if order != [n for n in allowed if n in order]:
        problems.append(f"chunk tensors in order {order}")
    return problems


def check_ok(case, messages):
    """Structural checks of a successful call's responses; returns a list of problems."""
    problems = []
    if case.method == "Run":
        request = pb.RunRequest.FromString(case.payload)
        result = pb.RunResponse.FromString(messages[0]).result
        problems += _check_run_result(result, request, case.valid)
        if request.return_output:
            out = result.output
            count = 1
            for d in out.shape:
                count *= d
            if len(out.data) != count * valid_requests.DTYPE_BYTES.get(out.dtype, 0):
                problems.append(f"inline output has {len(out.data)} bytes for shape "
                                f"{list(out.shape)}")
    elif case.method == "StreamRun":
        request = pb.RunRequest.FromString(case.payload)
        items = [pb.StreamRunResponse.FromString(m) for m in messages]
        if not items or items[-1].WhichOneof("item") != "result":
            return ["the stream does not end with its result"]
        if any(i.WhichOneof("item") != "chunk" for i in items[:-1]):
            return ["a result before the last message"]
        problems += _check_chunks([item.chunk for item in items[:-1]])
        if request.return_output and len(items) < 2:
            problems.append("return_output but no chunk")
        problems += _check_run_result(items[-1].result, request, case.valid)
    elif case.method == "Sweep":
        request = pb.SweepRequest.FromString(case.payload)
        items = [pb.SweepResponse.FromString(m) for m in messages]
        total = 1
        for axis in request.axes:
            which = axis.WhichOneof("axis")
            total *= len(getattr(axis, which).values) if which else 0
        if len(items) != total:
            problems.append(f"{len(items)} sweep responses for {total} points")
        seen = set()
        for n, item in enumerate(items, start=1):
            if item.total_points != total or item.completed_points != n:
                problems.append(f"point {item.point_index}: total {item.total_points}, "
                                f"completed {item.completed_points} (expected {total}, {n})")
            seen.add(item.point_index)
            if item.WhichOneof("outcome") == "error":
                err = item.error
                if case.valid or err.code not in outcomes.POINT_ERROR_CODES or not err.message:
                    problems.append(f"point {item.point_index} error {err.code}: {err.message!r}")
            elif item.WhichOneof("outcome") == "result":
                point_request = pb.RunRequest()
                point_request.CopyFrom(request.base)
                problems += _check_run_result(item.result, point_request, False)
            else:
                problems.append(f"point {item.point_index} has no outcome")
        if seen != set(range(len(items))):
            problems.append(f"point indexes {sorted(seen)}")
    elif case.method == "GetCapabilities":
        caps = pb.GetCapabilitiesResponse.FromString(messages[0])
        if not caps.backends:
            problems.append("no backends")
        if caps.limits.max_message_bytes != valid_requests.MAX_MESSAGE_BYTES:
            problems.append(f"limits.max_message_bytes = {caps.limits.max_message_bytes}")
    return problems


def check_partial(case, code, messages):
    """A stream that ended in an error or a cancellation: what it sent must still be sound."""
    problems = []
    if case.method == "Sweep":
        for m in messages:
            item = pb.SweepResponse.FromString(m)
            if item.WhichOneof("outcome") == "error":
                err = item.error
                if err.code not in outcomes.POINT_ERROR_CODES or not err.message:
                    problems.append(f"point {item.point_index} error {err.code}: {err.message!r}")
    return problems


class Fuzzer:
    def __init__(self, server, channel):
        self.server = server
        self.channel = channel
        self.lock = threading.Lock()
        self.failures = []
        self.codes = collections.Counter()
        self.categories = collections.Counter()
        self.slowest = (0.0, None)

    def fail(self, case, why):
        with self.lock:
            self.failures.append(
                f"case {case.index} [{case.category} {case.method}: {case.note}]: {why}")

    def one(self, index):
        case = cases.build(SEED, index)
        code, details, messages, seconds = send(self.channel, case)
        with self.lock:
            self.codes[code.name] += 1
            self.categories[case.category] += 1
            if seconds > self.slowest[0]:
                self.slowest = (seconds, f"case {index} {case.method} {case.note}")
        if code == C.UNAVAILABLE or self.server.proc.poll() is not None:
            self.fail(case, f"{code.name} {details!r}; server exit status "
                            f"{self.server.proc.poll()}")
            return
        why = outcomes.judge(case.expect, code, details, seconds, DEADLINE_SECONDS)
        if why is not None:
            self.fail(case, why)
            return
        try:
            problems = (check_ok(case, messages) if code == C.OK else
                        check_partial(case, code, messages))
        except Exception as e:  # a response that does not even parse
            problems = [f"{type(e).__name__}: {e}"]
        for p in problems:
            self.fail(case, p)

    def run(self, indexes):
        with concurrent.futures.ThreadPoolExecutor(max_workers=THREADS) as pool:
            for future in concurrent.futures.as_completed(
                    [pool.submit(self.one, i) for i in indexes]):
                future.result()
                if self.server.proc.poll() is not None:
                    break


def final_run_request():
    req = pb.RunRequest(backend="cpu_reference")
    spec = req.spec
    spec.batch_size, spec.seq_len_q, spec.seq_len_kv, spec.head_dim_qk = 1, 48, 48, 16
    spec.layout.gqa.num_query_heads, spec.layout.gqa.num_kv_heads = 4, 2
    spec.mask.causal.SetInParent()
    spec.dtype = pb.DTYPE_FLOAT32
    spec.seed = 99
    req.measurement.min_iterations = 1
    req.measurement.max_iterations = 2
    req.check.mode = pb.CHECK_MODE_FULL
    req.return_output = True
    return req


class HostileInputTest(unittest.TestCase):

    def test_hostile_input(self):
        sanitizer_environment()
        indexes = ONLY or list(range(NUM_CASES))
        print(f"fuzz: seed {SEED} (ATTNBENCH_FUZZ_SEED), {len(indexes)} cases "
              f"(ATTNBENCH_FUZZ_CASES), {THREADS} threads, server {harness.SERVER}", flush=True)
        started = time.monotonic()
        with harness.Server(*SERVER_FLAGS) as server:
            options = [("grpc.max_receive_message_length", -1),
                       ("grpc.max_send_message_length", -1)]
            with grpc.insecure_channel(server.target, options=options) as channel:
                grpc.channel_ready_future(channel).result(timeout=60)
                fuzzer = Fuzzer(server, channel)
                warmup = indexes[:WARMUP_CASES] if not ONLY else indexes
                fuzzer.run(warmup)
                rss_warm = rss_mib(server.proc.pid)
                # In slices, so the report shows whether the RSS levels off or keeps climbing.
                rss_trace = [round(rss_warm)]
                rest = indexes[len(warmup):]
                for start in range(0, len(rest), 500):
                    fuzzer.run(rest[start:start + 500])
                    if server.proc.poll() is not None:
                        break
                    rss_trace.append(round(rss_mib(server.proc.pid)))
                alive = server.proc.poll() is None
                rss_end = rss_mib(server.proc.pid) if alive else float("nan")

                final_ok = None
                if alive:
                    stub_run = channel.unary_unary(cases.SERVICE + "Run")
                    req = final_run_request()
                    try:
                        result = pb.RunResponse.FromString(
                            stub_run(req.SerializeToString(), timeout=DEADLINE_SECONDS)).result
                        final_ok = (result.correctness.checked and result.correctness.passed and
                                    len(result.output.data) == 48 * 4 * 16 * 4)
                    except grpc.RpcError as e:
                        final_ok = f"{e.code().name}: {e.details()}"
            exit_status = server.proc.poll()
            stacks = ""
            if alive:
                server.proc.send_signal(signal.SIGTERM)
                try:
                    exit_status = server.proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    exit_status = "none: still running 60 s after SIGTERM (killed)"
                    stacks = thread_stacks(server.proc.pid)
                    server.proc.kill()
                    server.proc.wait(timeout=30)
            stderr = server.stderr_text()

        elapsed = time.monotonic() - started
        print(f"fuzz: {sum(fuzzer.codes.values())} calls in {elapsed:.0f} s; codes "
              f"{dict(sorted(fuzzer.codes.items()))}; categories "
              f"{dict(sorted(fuzzer.categories.items()))}", flush=True)
        print(f"fuzz: slowest call {fuzzer.slowest[0]:.2f} s ({fuzzer.slowest[1]}); RSS "
              f"{rss_warm:.0f} MiB after {len(warmup)} warm-up cases, {rss_end:.0f} MiB at the end "
              f"(every 500 cases: {rss_trace})",
              flush=True)

        problems = list(fuzzer.failures[:MAX_FAILURES_SHOWN])
        if len(fuzzer.failures) > MAX_FAILURES_SHOWN:
            problems.append(f"... and {len(fuzzer.failures) - MAX_FAILURES_SHOWN} more failures")
        if not alive:
            problems.append(f"the server died during the run (exit status {exit_status})")
        elif rss_end - rss_warm > RSS_GROWTH_MIB:
            problems.append(f"server RSS grew {rss_end - rss_warm:.0f} MiB after warm-up "
                            f"(limit {RSS_GROWTH_MIB})")
        if alive and final_ok is not True:
            problems.append(f"the final valid Run failed: {final_ok}")
        if alive and exit_status != 0:
            problems.append(f"the server exited {exit_status} on SIGTERM")
        reports = [m for m in SANITIZER_MARKERS if m in stderr]
        if reports or problems:
            print(f"fuzz: server stderr (excerpt):\n{stderr_excerpt(stderr)}", flush=True)
        if reports:
            problems.append(f"sanitizer report in the server's stderr: {reports}")
        if stacks:
            problems.append(f"server threads when it would not stop:\n{stacks}")
        if problems:
            if fuzzer.failures:
                numbers = ",".join(f.split()[1] for f in fuzzer.failures[:10])
                problems.append(f"replay with ATTNBENCH_FUZZ_SEED={SEED} "
                                f"ATTNBENCH_FUZZ_CASE={numbers}")
            self.fail("\n".join(problems))


if __name__ == "__main__":
    unittest.main()
