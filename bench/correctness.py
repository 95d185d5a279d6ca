#!/usr/bin/env python3
"""Correctness sweep of the attnbench backends through a running server's Run RPC.

For every backend named with --backends (default: cuda_reference, cuda_flash, cuda_unfused) and
every case below (every head layout, every mask, RoPE, ALiBi, softcap, odd sizes, decode-shaped
prefill and the decode phase) and dtype, sends one Run with check.mode = FULL and a fresh random
seed, and requires result.correctness.passed with relative_error within the server's tolerance.

A backend that answers FAILED_PRECONDITION does not support that combination: the case is recorded
as "unsupported" (with the server's message), not as a failure -- except for the backends named by
--require-all (default: cuda_reference), which must run every forward prefill case.

Prints one line per case and a summary; exits 1 on any failure, 2 on a usage error.

    python3 bench/correctness.py --server=127.0.0.1:50051
    python3 bench/correctness.py --server=127.0.0.1:50051 --small   # the sanitizer's subset
    python3 bench/correctness.py --server=127.0.0.1:50051 --backends=cpu_reference --small

The stubs (attnbench.v1) are found on PYTHONPATH, else under .device/python or
build/release/python of this checkout.
"""

import argparse
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
STUB_DIRS = (REPO_ROOT / ".device" / "python", REPO_ROOT / "build" / "release" / "python")

DEFAULT_BACKENDS = ("cuda_reference", "cuda_flash", "cuda_unfused")
# Backends that run float32 storage; the others are tried in half precision only.
FP32_BACKENDS = ("cuda_reference", "cuda_unfused", "cpu_reference")
HALF_DTYPES = ("bf16", "fp16")
DTYPE_ENUM_NAMES = {"fp32": "DTYPE_FLOAT32", "fp16": "DTYPE_FLOAT16", "bf16": "DTYPE_BFLOAT16"}


def import_stubs():
    """Returns (grpc, attnbench_pb2, attnbench_pb2_grpc, json_format), extending sys.path if the
    stubs are not importable as they are."""
    try:
        from attnbench.v1 import attnbench_pb2  # noqa: F401
    except ImportError:
        for path in reversed(STUB_DIRS):
            if path.is_dir() and str(path) not in sys.path:
                sys.path.insert(0, str(path))
    try:
        import grpc
        from attnbench.v1 import attnbench_pb2, attnbench_pb2_grpc
        from google.protobuf import json_format
    except ImportError as e:
        sys.exit(f"cannot import grpc or the attnbench stubs ({e}); set PYTHONPATH to the folder "
                 f"holding attnbench/v1 (e.g. build/release/python or .device/python)")
    return grpc, attnbench_pb2, attnbench_pb2_grpc, json_format


def connect(grpc, pb_grpc, target, timeout_s=30.0):
    """An AttnBench stub on an insecure channel that is ready (or exits with a clear message)."""
    options = [("grpc.max_receive_message_length", 256 << 20),
               ("grpc.max_send_message_length", 256 << 20)]
    channel = grpc.insecure_channel(target, options=options)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
    except grpc.FutureTimeoutError:
        sys.exit(f"no attnbench server answers at {target} within {timeout_s:.0f} s")
    return channel, pb_grpc.AttnBenchStub(channel)


# ---------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One workload shape; `spec` is an AttentionSpec in proto3 JSON-like dict form (snake_case
    field names), without dtype and seed, which each run sets."""
    name: str
    spec: dict
    small: bool = False
    # Forward prefill cases must run on the --require-all backends; others may be unsupported.
    required: bool = True
    # Restrict the dtypes (default: bf16, fp16, plus fp32 on FP32_BACKENDS).
    dtypes: tuple = ()


def shape(batch, seq_q, seq_kv, head_dim, layout, mask=None, head_dim_v=None, **extra):
    """An AttentionSpec dict; `layout` and `mask` are dicts of one oneof case each."""
    spec = {"batch_size": batch, "seq_len_q": seq_q, "seq_len_kv": seq_kv,
            "head_dim_qk": head_dim, "layout": layout, "mask": mask or {"none": {}}}
    if head_dim_v is not None:
        spec["head_dim_v"] = head_dim_v
    spec.update(extra)
    return spec


def mha(heads):
    return {"mha": {"num_heads": heads}}


def gqa(query_heads, kv_heads):
    return {"gqa": {"num_query_heads": query_heads, "num_kv_heads": kv_heads}}


CAUSAL = {"causal": {}}


def window(left=None, right=None):
    bounds = {}
    if left is not None:
        bounds["left_tokens"] = left
    if right is not None:
        bounds["right_tokens"] = right
    return {"sliding_window": bounds}


def block_sparse(block_q, block_kv, blocks, intersect_causal):
    return {"block_sparse": {
        "query_block_tokens": block_q, "kv_block_tokens": block_kv,
        "blocks": [{"query_block": r, "kv_block": c} for r, c in blocks],
        "intersect_causal": intersect_causal}}


def prob_block_sparse(block_q, block_kv, c_coefficient, alpha):
    # The seed is drawn fresh for every run (see randomize()).
    return {"probabilistic_block_sparse": {
        "query_block_tokens": block_q, "kv_block_tokens": block_kv,
        "c_coefficient": c_coefficient, "alpha": alpha}}


def layout_cases():
    explicit = {"explicit_map": {
        "num_query_heads": 4, "num_kv_heads": 3,
        # Query head 3 is unused, kv head 1 is read by two query heads, query head 2 twice.
        "pairs": [{"query_head": 0, "kv_head": 1}, {"query_head": 2, "kv_head": 0},
                  {"query_head": 2, "kv_head": 2}, {"query_head": 1, "kv_head": 1},
                  {"query_head": 0, "kv_head": 0}]}}
    layouts = [
        ("mha", mha(4)),
        ("mqa", {"mqa": {"num_heads": 4}}),
        ("gqa", gqa(8, 2)),
        ("sqa", {"sqa": {"baseline_heads": 16, "num_query_heads": 8, "num_kv_heads": 4}}),
        ("symmetric_sqa", {"symmetric_sqa": {"baseline_heads": 8}}),
        ("extreme_sqa", {"extreme_sqa": {"baseline_heads": 16}}),
        ("extreme_sqa_hq2", {"extreme_sqa": {"baseline_heads": 16, "num_query_heads": 2}}),
        ("gqkva", {"gqkva": {"query_groups": 2, "kv_groups": 3}}),
        ("explicit_map", explicit),
    ]
    cases = []
    for name, layout in layouts:
        cases.append(Case(f"layout_{name}_causal", shape(2, 192, 192, 64, layout, CAUSAL)))
        cases.append(Case(f"layout_{name}_small", shape(1, 77, 131, 64, layout), small=True))
    return cases


def mask_cases():
    blocks = [(0, 0), (1, 0), (1, 1), (2, 1), (3, 0), (3, 3), (0, 3), (2, 3)]
    return [
        Case("mask_none", shape(2, 256, 256, 64, mha(4))),
        Case("mask_causal", shape(2, 256, 256, 64, mha(4), CAUSAL)),
        Case("mask_causal_small", shape(1, 96, 96, 64, mha(2), CAUSAL), small=True),
        Case("mask_window_causal_64", shape(1, 300, 300, 64, mha(4), window(64, 0))),
        Case("mask_window_32_16", shape(1, 300, 300, 64, mha(4), window(32, 16)), small=True),
        Case("mask_window_left_only", shape(1, 200, 280, 64, mha(4), window(left=48))),
        Case("mask_window_right_only", shape(1, 200, 200, 64, mha(4), window(right=8))),
        Case("mask_block_sparse", shape(1, 256, 256, 64, mha(4),
                                        block_sparse(64, 64, blocks, False))),
        Case("mask_block_sparse_causal", shape(1, 256, 256, 64, mha(4),
                                               block_sparse(64, 64, blocks, True))),
        Case("mask_block_sparse_small", shape(1, 100, 130, 64, mha(2),
                                              block_sparse(32, 64, [(0, 0), (2, 1), (3, 2)], True)),
             small=True),
        Case("mask_prob_block_sparse", shape(1, 512, 512, 64, mha(4),
                                             prob_block_sparse(64, 64, 1.0, 1.0))),
        Case("mask_prob_block_sparse_small", shape(1, 128, 128, 64, mha(2),
                                                   prob_block_sparse(32, 32, 0.8, 0.5)),
             small=True),
    ]


def modifier_cases():
    return [
        Case("rope_partial_causal", shape(2, 160, 160, 64, gqa(4, 2), CAUSAL,
                                          rope={"rotary_dims": 32})),
        Case("rope_full_theta5e5", shape(1, 200, 200, 128, mha(4),
                                         rope={"theta": 500000.0})),
        Case("rope_partial_small", shape(1, 64, 64, 64, mha(2), CAUSAL, rope={"rotary_dims": 16}),
             small=True),
        # 6 heads: the geometric schedule's interpolation for a non-power-of-two head count.
        Case("alibi_geometric_h6", shape(1, 200, 200, 64, mha(6), CAUSAL, alibi={})),
        Case("alibi_geometric_h8", shape(1, 200, 250, 64, mha(8),
                                         alibi={"schedule": "ALIBI_SCHEDULE_GEOMETRIC"})),
        Case("alibi_harmonic", shape(1, 200, 200, 64, mha(4), CAUSAL,
                                     alibi={"schedule": "ALIBI_SCHEDULE_HARMONIC",
                                            "harmonic_base_slope": 0.5})),
        Case("alibi_small", shape(1, 64, 80, 64, mha(3), alibi={}), small=True),
        # Scaled-up inputs so the cap actually bends the scores.
        Case("softcap_5", shape(1, 200, 200, 64, mha(4), CAUSAL, softcap={"cap": 5.0},
                                input_scale=2.0)),
        Case("softcap_small", shape(1, 64, 64, 64, mha(2), softcap={"cap": 3.0}, input_scale=2.0),
             small=True),
        Case("rope_alibi", shape(1, 200, 200, 64, gqa(8, 2), CAUSAL, rope={"rotary_dims": 48},
                                 alibi={})),
        Case("rope_alibi_softcap_window", shape(1, 230, 230, 128, mha(4), window(40, 0),
                                                rope={}, alibi={}, softcap={"cap": 20.0})),
        Case("rope_alibi_small", shape(1, 48, 64, 64, mha(2), CAUSAL, rope={}, alibi={}),
             small=True),
    ]


def size_cases():
    return [
        Case("odd_77x131_none", shape(2, 77, 131, 64, gqa(4, 2))),
        Case("odd_77x131_causal", shape(2, 77, 131, 64, gqa(4, 2), CAUSAL), small=True),
        Case("odd_131x77_causal", shape(1, 131, 77, 64, mha(4), CAUSAL)),
        Case("d80", shape(1, 173, 173, 80, mha(4), CAUSAL)),
        Case("d80_small", shape(1, 33, 65, 80, mha(2)), small=True),
        Case("d128", shape(2, 300, 300, 128, gqa(8, 2), CAUSAL)),
        Case("d192_dv128", shape(1, 257, 257, 192, mha(4), CAUSAL, head_dim_v=128)),
        Case("d192_dv128_small", shape(1, 40, 72, 192, mha(2), head_dim_v=128), small=True),
        Case("d256", shape(1, 129, 129, 256, mha(2), CAUSAL)),
        Case("tiny_1x1", shape(1, 1, 1, 64, mha(1)), small=True),
        Case("batch5_odd", shape(5, 63, 65, 64, gqa(6, 3), CAUSAL)),
    ]


def decode_shaped_cases():
    """Prefill with a few queries against a long KV (bottom-right aligned)."""
    cases = []
    for seq_q in (1, 3, 8, 16):
        cases.append(Case(f"decode_shaped_q{seq_q}_kv1000_causal",
                          shape(2, seq_q, 1000, 128, gqa(8, 2), CAUSAL),
                          small=seq_q in (1, 16)))
    cases.append(Case("decode_shaped_q1_kv1000_none", shape(1, 1, 1000, 64, mha(4))))
    cases.append(Case("decode_shaped_q5_kv1000_window", shape(1, 5, 1000, 64, mha(4),
                                                              window(128, 0))))
    return cases


def decode_phase_cases():
    """The decode phase with a KV cache; every backend may answer unsupported."""
    def decode(name, kv_cache, mask=None, small=False):
        spec = shape(2, 4, 1000, 128, gqa(8, 2), mask, phase="PHASE_DECODE", kv_cache=kv_cache)
        return Case(name, spec, small=small, required=False)
    saq = {"saq_bands": [{"num_tokens": 256, "format": "CACHE_FORMAT_NATIVE"},
                         {"num_tokens": 256, "format": "CACHE_FORMAT_INT8"},
                         {"format": "CACHE_FORMAT_INT4"}]}
    return [
        decode("decode_native", {"format": "CACHE_FORMAT_NATIVE"}, CAUSAL, small=True),
        decode("decode_paged64", {"paging": {"page_size_tokens": 64}}, CAUSAL),
        decode("decode_int8", {"format": "CACHE_FORMAT_INT8"}),
        decode("decode_int4_paged", {"format": "CACHE_FORMAT_INT4",
                                     "paging": {"page_size_tokens": 128}}),
        decode("decode_saq", saq, CAUSAL),
    ]


def all_cases():
    return (layout_cases() + mask_cases() + modifier_cases() + size_cases() +
            decode_shaped_cases() + decode_phase_cases())


def dtypes_for(case, backend, wanted):
    dtypes = case.dtypes or (HALF_DTYPES + (("fp32",) if backend in FP32_BACKENDS else ()))
    return [d for d in dtypes if d in wanted]


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    backend: str
    case: str
    dtype: str
    status: str  # "pass", "fail", "unsupported"
    detail: str = ""
    seed: int = 0
    relative_error: float = math.nan
    tolerance: float = math.nan
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def build_request(pb, json_format, case, backend, dtype, rng):
    spec = json_format.ParseDict(case.spec, pb.AttentionSpec())
    spec.dtype = pb.DType.Value(DTYPE_ENUM_NAMES[dtype])
    spec.seed = rng.getrandbits(63)
    if spec.mask.WhichOneof("kind") == "probabilistic_block_sparse":
        spec.mask.probabilistic_block_sparse.seed = rng.getrandbits(63)
    request = pb.RunRequest(spec=spec, backend=backend)
    # One iteration is enough to check; no flush between iterations.
    request.measurement.warmup_iterations = 1
    request.measurement.min_iterations = 1
    request.measurement.max_iterations = 1
    request.measurement.cache_mode = pb.CACHE_MODE_WARM
    request.check.mode = pb.CHECK_MODE_FULL
    return request


def judge(result, outcome):
    """Fills outcome.status from a RunResult's correctness report."""
    c = result.correctness
    outcome.relative_error = c.relative_error
    outcome.tolerance = c.tolerance
    outcome.extra = {"rows_checked": c.rows_checked, "rows_total": c.rows_total,
                     "max_abs_error": c.max_abs_error, "median_ms": result.timing.median_ms}
    problems = []
    if not c.checked:
        problems.append("not checked")
    if c.rows_checked != c.rows_total:
        problems.append(f"only {c.rows_checked}/{c.rows_total} rows checked")
    if not math.isfinite(c.relative_error):
        problems.append(f"relative_error {c.relative_error}")
    elif c.relative_error > c.tolerance:
        problems.append(f"relative_error {c.relative_error:.3g} > tolerance {c.tolerance:.3g}")
    if not c.passed:
        problems.append("correctness.passed is false")
    if result.backend and result.backend != outcome.backend:
        problems.append(f"ran on {result.backend!r}")
    outcome.status = "fail" if problems else "pass"
    outcome.detail = "; ".join(problems)


def run_case(stubs, stub, case, backend, dtype, rng, args):
    grpc, pb, _, json_format = stubs
    request = build_request(pb, json_format, case, backend, dtype, rng)
    outcome = Outcome(backend, case.name, dtype, "fail", seed=request.spec.seed)
    start = time.monotonic()
    try:
        response = stub.Run(request, timeout=args.rpc_timeout)
    except grpc.RpcError as e:
        code, message = e.code(), e.details()
        must_run = backend in args.require_all and case.required
        if code == grpc.StatusCode.FAILED_PRECONDITION and not must_run:
            outcome.status = "unsupported"
        outcome.detail = f"{code.name}: {message}"
        outcome.extra = {"code": code.name}
    else:
        judge(response.result, outcome)
    outcome.seconds = time.monotonic() - start
    return outcome


def format_line(o):
    status = {"pass": "PASS", "fail": "FAIL", "unsupported": "UNSUP"}[o.status]
    error = ""
    if math.isfinite(o.relative_error):
        error = f"rel={o.relative_error:.2e} tol={o.tolerance:.0e}"
    line = (f"{status:<5} {o.backend:<14} {o.case:<34} {o.dtype:<4} {error:<24} "
            f"{o.seconds:6.2f}s seed={o.seed}")
    if o.detail:
        line += f"  {o.detail}"
    return line


def served_backends(stub, pb, timeout):
    caps = stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=timeout)
    return [b.name for b in caps.backends]


def summarize(outcomes, backends):
    lines = [f"{'backend':<14} {'pass':>5} {'fail':>5} {'unsup':>6}"]
    for backend in backends:
        mine = [o for o in outcomes if o.backend == backend]
        counts = {s: sum(o.status == s for o in mine) for s in ("pass", "fail", "unsupported")}
        lines.append(f"{backend:<14} {counts['pass']:>5} {counts['fail']:>5} "
                     f"{counts['unsupported']:>6}")
    return lines


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Correctness sweep of attnbench backends through a running server.")
    parser.add_argument("--server", default="127.0.0.1:50051", help="gRPC target of the server")
    parser.add_argument("--backends", default=",".join(DEFAULT_BACKENDS),
                        help="comma-separated backends to check (default: %(default)s)")
    parser.add_argument("--require-all", default="cuda_reference",
                        help="backends that must support every forward prefill case "
                             "(comma-separated; default: %(default)s)")
    parser.add_argument("--small", action="store_true",
                        help="only the small cases (for runs under compute-sanitizer)")
    parser.add_argument("--dtypes", default="bf16,fp16,fp32",
                        help="dtypes to try, of bf16, fp16, fp32 (default: %(default)s)")
    parser.add_argument("--cases", default="",
                        help="only cases whose name contains one of these comma-separated words")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the per-case seeds (default: random, printed)")
    parser.add_argument("--rpc-timeout", type=float, default=300.0,
                        help="seconds each Run may take (default: %(default)s)")
    parser.add_argument("--allow-missing", action="store_true",
                        help="skip backends the server does not serve instead of failing")
    parser.add_argument("--json", default="", help="write every outcome to this JSON file")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    args = parser.parse_args(argv)
    args.backends = [b for b in args.backends.split(",") if b]
    args.require_all = {b for b in args.require_all.split(",") if b}
    args.dtypes = [d for d in args.dtypes.split(",") if d]
    bad = [d for d in args.dtypes if d not in DTYPE_ENUM_NAMES]
    if bad:
        parser.error(f"unknown dtype(s) {bad}; use bf16, fp16, fp32")
    if not args.backends:
        parser.error("--backends is empty")
    return args


def select_cases(args):
    cases = [c for c in all_cases() if c.small or not args.small]
    words = [w for w in args.cases.split(",") if w]
    if words:
        cases = [c for c in cases if any(w in c.name for w in words)]
    return cases


def main(argv=None):
    args = parse_args(argv)
    cases = select_cases(args)
    if args.list:
        for case in cases:
            print(f"{case.name:<36} small={case.small!s:<5} required={case.required}")
        return 0
    stubs = import_stubs()
    grpc, pb, pb_grpc, _ = stubs
    seed = args.seed if args.seed is not None else random.SystemRandom().getrandbits(32)
    rng = random.Random(seed)
    channel, stub = connect(grpc, pb_grpc, args.server)
    served = served_backends(stub, pb, args.rpc_timeout)
    print(f"[correctness] server {args.server} serves {','.join(served)}; checking "
          f"{','.join(args.backends)} on {len(cases)} cases"
          f"{' (small)' if args.small else ''}; --seed={seed}", flush=True)

    outcomes = []
    aborted = ""
    for backend in args.backends:
        if backend not in served:
            status = "unsupported" if args.allow_missing else "fail"
            o = Outcome(backend, "*", "*", status, detail="backend not served by the server")
            outcomes.append(o)
            print(format_line(o), flush=True)
            continue
        for case in cases:
            for dtype in dtypes_for(case, backend, args.dtypes):
                o = run_case(stubs, stub, case, backend, dtype, rng, args)
                outcomes.append(o)
                print(format_line(o), flush=True)
                if o.extra.get("code") in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
                    aborted = f"stopped after {o.extra['code']} (server down or hung?)"
                    break
            if aborted:
                break
        if aborted:
            break
    channel.close()

    failures = [o for o in outcomes if o.status == "fail"]
    print()
    for line in summarize(outcomes, args.backends):
        print(f"[correctness] {line}")
    if aborted:
        print(f"[correctness] {aborted}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"seed": args.seed if args.seed is not None else seed, "server": args.server,
                       "small": args.small, "outcomes": [o.__dict__ for o in outcomes]},
                      f, indent=1, default=str)
    verdict = "PASS" if not failures and not aborted else "FAIL"
    print(f"[correctness] {verdict}: {len(outcomes)} runs, {len(failures)} failed, "
          f"{sum(o.status == 'unsupported' for o in outcomes)} unsupported", flush=True)
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
