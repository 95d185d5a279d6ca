#!/usr/bin/env python3
"""Correctness sweep of the attnbench backends through a running server's Run RPC.

For every backend named with --backends (default: cuda_reference, cuda_flash, cuda_unfused) and
every case below (every head layout, every mask, RoPE, ALiBi, softcap, odd sizes, every head dim
a fused kernel compiles with each modifier and mask, decode-shaped prefill, the decode phase, and
the backward phase timed alone and as a training step, where dQ, dK and dV are each checked)
and dtype, sends one Run with check.mode = FULL and a fresh random seed, and requires
result.correctness.passed with relative_error within the server's tolerance.

What a backend must run comes from GetCapabilities, not from this script: a case is *claimed* by
a backend when its lists hold it (dtypes, phases, scopes, layouts, masks, modifiers, and in
decode cache_formats and paged_kv_cache; head_dims where the backend lists no kernels) and, when
the backend lists its kernels (BackendCapabilities.kernels), when one of them for the device's
compute capability holds it. A backend that answers FAILED_PRECONDITION for a claimed case
FAILS; for a case it does not claim the refusal is recorded as "unsupported (not claimed)".
The backends named by --require-all (default: cuda_reference) must run every required case
whatever they claim, and the backends a case names in must_run must run it whatever they claim
(the backward cases: cuda_reference and cuda_unfused, the CUDA backends with a backward, and
cuda_flash when its capabilities list PHASE_BACKWARD, which kFlashBackwardEnabled in
kernels/cuda/flash/support.cc switches). Where a backend lists kernels, the request must run on the first kernel
whose lists all hold it (compute capability, dtypes, phases, masks, modifiers, and the first
head-dim pair with qk >= D_qk and v >= D_v): RunResult.kernel must start with that kernel's name,
else the run FAILS "ran on <kernel> instead of <expected>". Kernels' requirements in words
(alignment, rotary dims) are taken as met by the generated cases -- 16-byte aligned tensors,
rotary dims that are multiples of 16 -- except where a case says otherwise (then the kernel is
not predicted).

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
# The CUDA backends with PHASE_BACKWARD: each must run every backward case.
BACKWARD_BACKENDS = ("cuda_reference", "cuda_unfused")
# Backends whose backward is switched on or off in the build (cuda_flash: kFlashBackwardEnabled in
# kernels/cuda/flash/support.cc): each must run every backward case when the server's capabilities
# list PHASE_BACKWARD for it (the switch's only outward sign).
SWITCHED_BACKWARD_BACKENDS = ("cuda_flash",)
# Half precision is tried on every backend (a refusal it does not claim is "unsupported");
# float32 only on backends that claim it.
HALF_DTYPES = ("bf16", "fp16")
DTYPE_ENUM_NAMES = {"fp32": "DTYPE_FLOAT32", "fp16": "DTYPE_FLOAT16", "bf16": "DTYPE_BFLOAT16",
                    "fp8": "DTYPE_FLOAT8_E4M3"}


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
    # Prefill and backward cases must run on the --require-all backends; decode ones may be
    # unsupported.
    required: bool = True
    # Restrict the dtypes (default: bf16, fp16, plus fp32 on backends that claim it).
    dtypes: tuple = ()
    # Whether the inputs meet what kernels require in words (16-byte aligned rows, rotary dims a
    # multiple of 16); when not, which kernel runs the case is not predicted.
    kernel_requirements_met: bool = True
    # PHASE_BACKWARD: MeasurementSettings.backward_timing ("" leaves it unset: backward only).
    backward_timing: str = ""
    # Backends that must run the case whatever their capabilities claim (beside --require-all):
    # a refusal by one of them fails, so a backend cannot drop a case by dropping its claim.
    must_run: tuple = ()


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


def kernel_cases():
    """What a fused kernel claims: every head dim it compiles (16, 32, 64, 96, 128, 192, 192/128,
    256), each with causal, and every modifier and mask with two of them, on odd S_q != S_kv."""
    dims = [(16, None), (32, None), (64, None), (96, None), (128, None), (192, None), (192, 128),
            (256, None)]
    blocks = [(0, 0), (0, 2), (1, 1), (1, 3), (2, 0), (2, 2), (2, 3)]
    odd = dict(batch=1, seq_q=133, seq_kv=201)
    features = [
        ("none", gqa(4, 2), None, {}),
        ("rope", gqa(4, 2), CAUSAL, {"rope": {}}),
        ("rope_partial32", mha(2), None, {"rope": {"rotary_dims": 32, "theta": 500.0}}),
        # 6 heads: the geometric schedule's interpolation.
        ("alibi_geometric", mha(6), CAUSAL, {"alibi": {}}),
        ("alibi_harmonic", gqa(4, 2), None,
         {"alibi": {"schedule": "ALIBI_SCHEDULE_HARMONIC", "harmonic_base_slope": 0.5}}),
        ("softcap", gqa(4, 2), None, {"softcap": {"cap": 10.0}, "input_scale": 2.0}),
        ("rope_alibi", gqa(4, 2), CAUSAL, {"rope": {}, "alibi": {}}),
        ("alibi_softcap", mha(3), None,
         {"alibi": {"schedule": "ALIBI_SCHEDULE_HARMONIC"}, "softcap": {"cap": 15.0}}),
        ("rope_alibi_softcap", gqa(4, 2), window(48, 0),
         {"rope": {}, "alibi": {}, "softcap": {"cap": 20.0}}),
        ("window", gqa(4, 2), window(40, 16), {}),
        ("block_sparse", gqa(4, 2), block_sparse(64, 64, blocks, False), {}),
        ("block_sparse_causal", gqa(4, 2), block_sparse(64, 64, blocks, True), {}),
        ("prob_block_sparse", gqa(4, 2), prob_block_sparse(64, 64, 0.8, 0.7), {}),
        ("prob_block_sparse_rope_alibi", gqa(4, 2), prob_block_sparse(64, 64, 1.0, 0.5),
         {"rope": {}, "alibi": {}}),
    ]

    def dim_name(qk, v):
        return f"d{qk}" + (f"_dv{v}" if v else "")

    cases = []
    for qk, v in dims:
        cases.append(Case(f"kernel_{dim_name(qk, v)}_causal",
                          shape(1, 257, 257, qk, gqa(4, 2), CAUSAL, head_dim_v=v)))
    for k, (name, layout, mask, extra) in enumerate(features):
        for qk, v in (dims[k % len(dims)], dims[(k + 3) % len(dims)]):
            cases.append(Case(f"kernel_{dim_name(qk, v)}_{name}",
                              shape(odd["batch"], odd["seq_q"], odd["seq_kv"], qk, layout, mask,
                                    head_dim_v=v, **extra)))
    # Small ones for the sanitizer (its stage has a fixed time budget: three more cases).
    cases += [
        Case("kernel_d96_rope_alibi_small",
             shape(1, 37, 61, 96, gqa(4, 2), CAUSAL, rope={}, alibi={}), small=True),
        Case("kernel_d192_dv128_block_sparse_small",
             shape(1, 45, 70, 192, mha(2), block_sparse(16, 32, [(0, 0), (1, 1), (2, 0)], True),
                   head_dim_v=128), small=True),
        Case("kernel_d256_prob_softcap_small",
             shape(1, 40, 72, 256, mha(2), prob_block_sparse(16, 16, 0.7, 0.8),
                   softcap={"cap": 5.0}), small=True),
        # Rotary dims 24, not a multiple of 16: any kernel may run it (or a kernel may refuse
        # what its requirements exclude), so which one is not predicted.
        Case("kernel_d64_rope24", shape(1, 33, 47, 64, mha(2), CAUSAL, rope={"rotary_dims": 24}),
             kernel_requirements_met=False),
    ]
    return cases


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


def backward_cases():
    """PHASE_BACKWARD: dQ, dK and dV each against the float64 oracle, on odd sizes, every kind of
    head map that sums gradients over heads, the masks and modifiers, both timings. cuda_reference
    and cuda_unfused must run them all (must_run); another backend that does not list
    PHASE_BACKWARD answers unsupported (not claimed). The oracle runs on the server's host, so the
    shapes stay small."""
    def backward(name, spec, small=False, training_step=False):
        spec["phase"] = "PHASE_BACKWARD"
        return Case(name, spec, small=small,
                    backward_timing="BACKWARD_TIMING_TRAINING_STEP" if training_step else "",
                    must_run=BACKWARD_BACKENDS)
    explicit = {"explicit_map": {
        "num_query_heads": 3, "num_kv_heads": 2,
        # Query head 2 read twice (its dQ sums two heads), query head 1 never (dQ zero).
        "pairs": [{"query_head": 2, "kv_head": 0}, {"query_head": 0, "kv_head": 1},
                  {"query_head": 2, "kv_head": 1}]}}
    return [
        backward("backward_gqa_odd", shape(2, 37, 53, 40, gqa(6, 2), head_dim_v=24), small=True),
        backward("backward_gqa_causal_step", shape(1, 77, 131, 64, gqa(4, 2), CAUSAL),
                 small=True, training_step=True),
        backward("backward_causal_more_queries", shape(1, 131, 77, 64, mha(2), CAUSAL)),
        backward("backward_mqa_window", shape(1, 150, 170, 64, {"mqa": {"num_heads": 4}},
                                              window(40, 8))),
        backward("backward_gqkva_rope_alibi_softcap",
                 shape(1, 61, 83, 64, {"gqkva": {"query_groups": 2, "kv_groups": 3}}, CAUSAL,
                       rope={}, alibi={}, softcap={"cap": 10.0}, input_scale=2.0),
                 training_step=True),
        backward("backward_explicit_block_sparse",
                 shape(1, 96, 128, 48, explicit,
                       block_sparse(32, 32, [(0, 0), (1, 1), (2, 3), (2, 0)], True))),
        backward("backward_prob_block_sparse_rope",
                 shape(1, 90, 120, 64, mha(2), prob_block_sparse(16, 16, 0.7, 0.8),
                       rope={"rotary_dims": 32})),
        backward("backward_extreme_sqa_alibi_harmonic",
                 shape(1, 100, 100, 128, {"extreme_sqa": {"baseline_heads": 16}}, CAUSAL,
                       alibi={"schedule": "ALIBI_SCHEDULE_HARMONIC"}),
                 training_step=True),
    ]


def all_cases():
    return (layout_cases() + mask_cases() + modifier_cases() + size_cases() + kernel_cases() +
            decode_shaped_cases() + decode_phase_cases() + backward_cases())


def dtypes_for(case, claims_fp32, wanted):
    dtypes = case.dtypes or (HALF_DTYPES + (("fp32",) if claims_fp32 else ()))
    return [d for d in dtypes if d in wanted]


# ---------------------------------------------------------------------------------------------
# Claims: what GetCapabilities says a backend (and which of its kernels) runs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Features:
    """What the capability lists are checked against, read from one AttentionSpec."""
    dtype: int
    phase: int
    scope: int
    layout: str
    mask: str
    modifiers: tuple
    cache_formats: tuple  # decode only: the formats its tokens are stored in
    paged: bool
    head_dim_qk: int
    head_dim_v: int


def features_of(pb, spec):
    """The Features of an AttentionSpec, the proto's defaults filled in."""
    decode = spec.phase == pb.PHASE_DECODE
    formats = ()
    if decode:
        if spec.kv_cache.saq_bands:
            formats = tuple(sorted({b.format or pb.CACHE_FORMAT_NATIVE
                                    for b in spec.kv_cache.saq_bands}))
        else:
            formats = (spec.kv_cache.format or pb.CACHE_FORMAT_NATIVE,)
    return Features(
        dtype=spec.dtype,
        phase=spec.phase or pb.PHASE_PREFILL,
        scope=spec.scope or pb.SCOPE_CORE,
        layout=spec.layout.WhichOneof("layout") or "",
        mask=spec.mask.WhichOneof("kind") or "none",
        modifiers=tuple(m for m in ("rope", "alibi", "softcap") if spec.HasField(m)),
        cache_formats=formats,
        paged=decode and spec.kv_cache.HasField("paging"),
        head_dim_qk=spec.head_dim_qk,
        head_dim_v=spec.head_dim_v if spec.HasField("head_dim_v") else spec.head_dim_qk)


def _enum_names(enum, values):
    return "[" + ", ".join(enum.Name(v) for v in values) + "]"


def backend_gaps(pb, backend, f):
    """Why the backend's own lists do not hold the case (empty: they do). The head dims are
    checked here only for a backend without kernels: with kernels, their head-dim pairs decide
    (a dim between compiled sizes runs zero-padded on the next)."""
    gaps = []
    if f.dtype not in backend.dtypes:
        gaps.append(f"dtype {pb.DType.Name(f.dtype)} not in "
                    f"{_enum_names(pb.DType, backend.dtypes)}")
    if f.phase not in backend.phases:
        gaps.append(f"phase {pb.Phase.Name(f.phase)} not in "
                    f"{_enum_names(pb.Phase, backend.phases)}")
    if f.scope not in backend.scopes:
        gaps.append(f"scope {pb.Scope.Name(f.scope)} not in "
                    f"{_enum_names(pb.Scope, backend.scopes)}")
    if f.layout not in backend.layouts:
        gaps.append(f"layout {f.layout} not in {list(backend.layouts)}")
    if f.mask not in backend.masks:
        gaps.append(f"mask {f.mask} not in {list(backend.masks)}")
    for m in f.modifiers:
        if m not in backend.modifiers:
            gaps.append(f"modifier {m} not in {list(backend.modifiers)}")
    for c in f.cache_formats:
        if c not in backend.cache_formats:
            gaps.append(f"cache format {pb.CacheFormat.Name(c)} not in "
                        f"{_enum_names(pb.CacheFormat, backend.cache_formats)}")
    if f.paged and not backend.paged_kv_cache:
        gaps.append("a paged KV cache (paged_kv_cache is false)")
    if not backend.kernels and backend.head_dims:
        for what, d in (("head_dim_qk", f.head_dim_qk), ("head_dim_v", f.head_dim_v)):
            if d not in backend.head_dims:
                gaps.append(f"{what} {d} not in {list(backend.head_dims)}")
    return gaps


def _capability(text):
    """(major, minor) of "9.0" (or of "8.0+", with the plus dropped); None if unreadable."""
    try:
        major, minor = text.rstrip("+").split(".")
        return int(major), int(minor)
    except ValueError:
        return None


def compute_capability_matches(kernel, device_cc):
    """Whether a kernel built for kernel.compute_capabilities ("9.0" exactly, "8.0+" at least)
    runs on a device of compute capability `device_cc` ("9.0"). No list: any device."""
    if not kernel.compute_capabilities:
        return True
    device = _capability(device_cc)
    if device is None:
        return False
    for entry in kernel.compute_capabilities:
        wanted = _capability(entry)
        if wanted is None:
            continue
        if entry.endswith("+") and device >= wanted or device == wanted:
            return True
    return False


def kernel_gaps(pb, kernel, f, device_cc):
    """Why a kernel does not hold the case on this device (empty: it does). Every list is an
    allow-list (modifiers: any combination of the listed ones, so an empty list allows none),
    except that no compute capabilities means any device and no head-dim pairs any dims."""
    gaps = []
    if not compute_capability_matches(kernel, device_cc):
        gaps.append(f"compute capability {device_cc or '?'} not in "
                    f"{list(kernel.compute_capabilities)}")
    if f.dtype not in kernel.dtypes:
        gaps.append(f"dtype {pb.DType.Name(f.dtype)}")
    if f.phase not in kernel.phases:
        gaps.append(f"phase {pb.Phase.Name(f.phase)}")
    if f.mask not in kernel.masks:
        gaps.append(f"mask {f.mask}")
    gaps += [f"modifier {m}" for m in f.modifiers if m not in kernel.modifiers]
    if kernel.head_dims and not any(p.qk >= f.head_dim_qk and p.v >= f.head_dim_v
                                    for p in kernel.head_dims):
        gaps.append(f"head dims {f.head_dim_qk}/{f.head_dim_v} above every pair "
                    f"{[(p.qk, p.v) for p in kernel.head_dims]}")
    return gaps


@dataclass
class Claim:
    claimed: bool
    why_not: str = ""           # when not claimed
    expected_kernel: str = ""   # the kernel the case must run on ("" where not predicted)


def claim_of(pb, backend, f, device_cc, requirements_met=True):
    """Whether the backend claims the case, and on which of its kernels it must run."""
    gaps = backend_gaps(pb, backend, f)
    if gaps:
        return Claim(False, "; ".join(gaps))
    if not backend.kernels:
        return Claim(True)
    refusals = []
    for kernel in backend.kernels:
        missing = kernel_gaps(pb, kernel, f, device_cc)
        if not missing:
            return Claim(True, expected_kernel=kernel.name if requirements_met else "")
        refusals.append(f"{kernel.name}: {', '.join(missing)}")
    return Claim(False, "no kernel holds it (" + "; ".join(refusals) + ")")


def device_cc_of(backend):
    """The compute capability of the backend's first device ("" on the CPU)."""
    return backend.devices[0].compute_capability if backend.devices else ""


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
    if case.backward_timing:
        request.measurement.backward_timing = pb.BackwardTiming.Value(case.backward_timing)
    return request


def judge(result, outcome, expected_kernel=""):
    """Fills outcome.status from a RunResult's correctness report and, where the kernel is
    predicted, the kernel it ran on."""
    c = result.correctness
    outcome.relative_error = c.relative_error
    outcome.tolerance = c.tolerance
    outcome.extra.update({"rows_checked": c.rows_checked, "rows_total": c.rows_total,
                          "max_abs_error": c.max_abs_error, "median_ms": result.timing.median_ms,
                          "kernel": result.kernel})
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
    if expected_kernel and not result.kernel.startswith(expected_kernel):
        problems.append(f"ran on {result.kernel or '(no kernel named)'!r} instead of "
                        f"{expected_kernel!r}")
    outcome.status = "fail" if problems else "pass"
    outcome.detail = "; ".join(problems)


def classify_refusal(code_name, message, claim, must_run, outcome):
    """Fills outcome for a Run that failed with status `code_name`: FAILED_PRECONDITION on a case
    the backend does not claim (and need not run) is "unsupported (not claimed)"; on a claimed
    case, or any other code, a failure."""
    outcome.extra["code"] = code_name
    if code_name == "FAILED_PRECONDITION" and not must_run and not claim.claimed:
        outcome.status = "unsupported"
        outcome.detail = f"not claimed ({claim.why_not}): {code_name}: {message}"
        return
    outcome.status = "fail"
    if code_name == "FAILED_PRECONDITION" and claim.claimed:
        outcome.detail = f"refused a case it claims: {code_name}: {message}"
    elif code_name == "FAILED_PRECONDITION":
        outcome.detail = (f"refused a case it must run (--require-all or the case's must_run): "
                          f"{code_name}: {message}")
    else:
        outcome.detail = f"{code_name}: {message}"


def must_run_case(case, backend_name, args):
    """Whether `backend_name` must run `case` whatever it claims: a required case on a
    --require-all backend, a backend the case names in must_run, or for a backward case a
    switched backend whose backward is on (args.backward_on, from the capabilities)."""
    backward = case.spec.get("phase") == "PHASE_BACKWARD"
    return ((backend_name in args.require_all and case.required) or
            backend_name in case.must_run or
            (backward and backend_name in getattr(args, "backward_on", ())))


def switched_backward_on(served, pb):
    """The SWITCHED_BACKWARD_BACKENDS whose capabilities list PHASE_BACKWARD."""
    return {name for name in SWITCHED_BACKWARD_BACKENDS
            if name in served and pb.PHASE_BACKWARD in served[name].phases}


def run_case(stubs, stub, case, backend, dtype, rng, args):
    """Runs one case on `backend` (its BackendCapabilities) and judges it."""
    grpc, pb, _, json_format = stubs
    request = build_request(pb, json_format, case, backend.name, dtype, rng)
    outcome = Outcome(backend.name, case.name, dtype, "fail", seed=request.spec.seed)
    features = features_of(pb, request.spec)
    claim = claim_of(pb, backend, features, device_cc_of(backend), case.kernel_requirements_met)
    outcome.extra = {"claimed": claim.claimed, "expected_kernel": claim.expected_kernel}
    start = time.monotonic()
    try:
        response = stub.Run(request, timeout=args.rpc_timeout)
    except grpc.RpcError as e:
        must_run = must_run_case(case, backend.name, args)
        if claim.claimed and backend.kernels and not case.kernel_requirements_met:
            # The case breaks what kernels require in words: a refusal may be their due.
            claim = Claim(False, "the case does not meet the kernels' requirements in words")
        classify_refusal(e.code().name, e.details(), claim, must_run, outcome)
    else:
        result = response.result
        # The kernel the device it ran on must use (a server may hold devices of several kinds).
        if result.device.compute_capability and backend.kernels:
            claim = claim_of(pb, backend, features, result.device.compute_capability,
                             case.kernel_requirements_met)
            outcome.extra.update({"claimed": claim.claimed,
                                  "expected_kernel": claim.expected_kernel})
        judge(result, outcome, claim.expected_kernel)
    outcome.seconds = time.monotonic() - start
    return outcome


def format_line(o):
    status = {"pass": "PASS", "fail": "FAIL", "unsupported": "UNSUP"}[o.status]
    error = ""
    if math.isfinite(o.relative_error):
        error = f"rel={o.relative_error:.2e} tol={o.tolerance:.0e}"
    line = (f"{status:<5} {o.backend:<14} {o.case:<40} {o.dtype:<4} {error:<24} "
            f"{o.seconds:6.2f}s seed={o.seed}")
    if o.extra.get("kernel"):
        line += f"  [{o.extra['kernel']}]"
    if o.detail:
        line += f"  {o.detail}"
    return line


def served_capabilities(stub, pb, timeout):
    """The server's BackendCapabilities by backend name."""
    caps = stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=timeout)
    return {b.name: b for b in caps.backends}


def summarize(outcomes, backends):
    """Per backend: passed, failed, refused where not claimed ("unsup"), and of the failures
    the refusals of claimed cases and the runs on another kernel than predicted."""
    lines = [f"{'backend':<14} {'pass':>5} {'fail':>5} {'unsup':>6} {'refused-claimed':>16} "
             f"{'wrong-kernel':>13}"]
    for backend in backends:
        mine = [o for o in outcomes if o.backend == backend]
        counts = {s: sum(o.status == s for o in mine) for s in ("pass", "fail", "unsupported")}
        refused = sum(o.status == "fail" and "refused a case it claims" in o.detail for o in mine)
        wrong_kernel = sum(o.status == "fail" and "instead of" in o.detail for o in mine)
        lines.append(f"{backend:<14} {counts['pass']:>5} {counts['fail']:>5} "
                     f"{counts['unsupported']:>6} {refused:>16} {wrong_kernel:>13}")
    return lines


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Correctness sweep of attnbench backends through a running server.")
    parser.add_argument("--server", default="127.0.0.1:50051", help="gRPC target of the server")
    parser.add_argument("--backends", default=",".join(DEFAULT_BACKENDS),
                        help="comma-separated backends to check (default: %(default)s)")
    parser.add_argument("--require-all", default="cuda_reference",
                        help="backends that must run every required case whatever they claim "
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
            print(f"{case.name:<40} small={case.small!s:<5} required={case.required!s:<5} "
                  f"kernel_predicted={case.kernel_requirements_met}"
                  + (f" must_run={','.join(case.must_run)}" if case.must_run else ""))
        return 0
    stubs = import_stubs()
    grpc, pb, pb_grpc, _ = stubs
    seed = args.seed if args.seed is not None else random.SystemRandom().getrandbits(32)
    rng = random.Random(seed)
    channel, stub = connect(grpc, pb_grpc, args.server)
    served = served_capabilities(stub, pb, args.rpc_timeout)
    args.backward_on = switched_backward_on(served, pb)
    print(f"[correctness] server {args.server} serves {','.join(served)}; checking "
          f"{','.join(args.backends)} on {len(cases)} cases"
          f"{' (small)' if args.small else ''}; --seed={seed}", flush=True)
    for name in args.backends:
        if name in served:
            b = served[name]
            kernels = ", ".join(f"{k.name} ({' '.join(k.compute_capabilities) or 'any'})"
                                for k in b.kernels)
            print(f"[correctness] {name}: device compute capability "
                  f"{device_cc_of(b) or '-'}; kernels: {kernels or '-'}", flush=True)

    outcomes = []
    aborted = ""
    for name in args.backends:
        if name not in served:
            status = "unsupported" if args.allow_missing else "fail"
            o = Outcome(name, "*", "*", status, detail="backend not served by the server")
            outcomes.append(o)
            print(format_line(o), flush=True)
            continue
        backend = served[name]
        claims_fp32 = pb.DTYPE_FLOAT32 in backend.dtypes
        for case in cases:
            for dtype in dtypes_for(case, claims_fp32, args.dtypes):
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
          f"{sum(o.status == 'unsupported' for o in outcomes)} unsupported (not claimed)",
          flush=True)
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
