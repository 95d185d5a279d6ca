#!/usr/bin/env python3
"""The SQA paper's Table 3 (Sparse Query Attention, arXiv 2510.01817), reproduced through the
server: one attention layer per point, against the paper's published 8-layer forward times.

Set-up (the paper's): 16 baseline heads of dim 16 (d_model 256), causal, bf16; batch 128 at 1,024
tokens, 32 at 4,096, 4 at 32,768, 1 at 131,072 and at 200,000; layouts (H_q/H_kv), each mapped to
the proto's HeadLayout oneof:
  MHA   16/16  mha {num_heads: 16}
  GQA   16/4   gqa {num_query_heads: 16, num_kv_heads: 4}
  MQA   16/1   mqa {num_heads: 16}
  SQA   8/4    sqa {baseline_heads: 16, num_query_heads: 8, num_kv_heads: 4}
  sSQA  8/8    symmetric_sqa {baseline_heads: 16}              (H_q = H_kv = H/2)
  xSQA  4/4    extreme_sqa {baseline_heads: 16, num_query_heads: 4}   (H_q = H_kv = H/4)
plus GQKVA (--gqkva, default 4x4: gqkva {query_groups: 4, kv_groups: 4}, H_q = H_kv = 4, 16
output heads) beside MHA at the same d_model, for its projection savings (not in the paper).
Every result's head map (RunResult.head_map) must resolve to those H_q / H_kv / H_out.

Each point asks for SCOPE_LAYER with d_model 256 (X -> Q, K, V projections, the core, the output
projection; docs/variants.md §6), forward. A backend that refuses layer scope with
FAILED_PRECONDITION gets the same point again at SCOPE_CORE, and the row says so ("core (layer
refused)"); speed-ups over GQA compare only rows of the same scope. A second pass (after every
forward point, so a budget cuts it first) runs PHASE_BACKWARD as a training step of one layer
(its forward then its backward, dX and the weight gradients included; --backward-timing=backward
for the backward alone) on --backward-backend (default: --backend) when that backend lists
PHASE_BACKWARD; a backend that refuses the layer's backward (BackendCapabilities.layer_backward
off) runs it at SCOPE_CORE instead, marked the same way; an extra column. Every run has the server's sampled check (CheckSettings: CHECK_MODE_AUTO with
--check-rows rows, so the largest shapes stay cheap); WorkCounts.flops and .projection_flops are
reported and compared with §7's formulas (a mismatch fails the row), as is the head map.

Printed beside ours: the paper's seconds per step (an 8-layer model forward, with feed-forward
layers, on one A100 40GB through PyTorch SDPA) and its speed-ups over GQA. Ours are one layer,
milliseconds; compare the speed-up columns, not the times.

Points run cheapest first (tokens ascending; within a length GQA first, since every ratio needs
it, then by output heads); points not started within --budget-s are "skip". Writes sqa_table.md
and sqa_table.json to --out-dir (default $OUT, else /tmp) after every point. Exit status 1 when a
check failed, a count or head map disagreed, a point raised, or nothing was measured.

    python3 bench/sqa_table.py --server=127.0.0.1:50051                   # the whole table
    python3 bench/sqa_table.py --server=127.0.0.1:50051 --quick           # 1k, 32k, 131k
    python3 bench/sqa_table.py --server=127.0.0.1:50051 --smoke           # tiny, cpu_reference
"""

import argparse
import datetime
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, field

from peer_timing import Timing

# The paper's Table 3: seconds per step, 8-layer model forward, one A100 40GB, PyTorch SDPA.
PAPER_TOKENS = (1024, 4096, 32768, 131072, 200000)
PAPER_BATCH = {1024: 128, 4096: 32, 32768: 4, 131072: 1, 200000: 1}
PAPER_SECONDS = {
    1024: {"xSQA": 0.0570, "SQA": 0.0642, "sSQA": 0.0669, "MQA": 0.0760, "GQA": 0.0785,
           "MHA": 0.0869},
    4096: {"xSQA": 0.0637, "SQA": 0.0750, "sSQA": 0.0793, "MQA": 0.1001, "GQA": 0.1027,
           "MHA": 0.1114},
    32768: {"xSQA": 0.1348, "SQA": 0.1991, "sSQA": 0.2117, "MQA": 0.3612, "GQA": 0.3637,
            "MHA": 0.3727},
    131072: {"xSQA": 0.3759, "SQA": 0.6308, "sSQA": 0.6630, "MQA": 1.2530, "GQA": 1.2558,
             "MHA": 1.2648},
    200000: {"xSQA": 0.8194, "SQA": 1.4116, "sSQA": 1.4824, "MQA": 2.8555, "GQA": 2.8596,
             "MHA": 2.8734},
}
# --smoke: (batch, seq) standing in for each paper length, so cpu_reference finishes in seconds.
SMOKE_SHAPES = {1024: (2, 64), 4096: (1, 96), 32768: (1, 128), 131072: (1, 160),
                200000: (1, 192)}
QUICK_TOKENS = (1024, 32768, 131072)

BASELINE_HEADS = 16
HEAD_DIM = 16
D_MODEL = 256
REFERENCE = "GQA"  # the speed-ups are over this layout, as in the paper


@dataclass(frozen=True)
class Layout:
    name: str
    proto: dict        # HeadLayout as a dict for json_format.ParseDict
    heads_q: int
    heads_kv: int
    heads_out: int
    in_paper: bool = True

    @property
    def label(self):
        return f"{self.heads_q}/{self.heads_kv}" + (
            f" ({self.heads_out} out)" if self.heads_out != self.heads_q else "")


def paper_layouts():
    h = BASELINE_HEADS
    return [
        Layout("MHA", {"mha": {"num_heads": h}}, h, h, h),
        Layout("GQA", {"gqa": {"num_query_heads": h, "num_kv_heads": h // 4}}, h, h // 4, h),
        Layout("MQA", {"mqa": {"num_heads": h}}, h, 1, h),
        Layout("SQA", {"sqa": {"baseline_heads": h, "num_query_heads": h // 2,
                               "num_kv_heads": h // 4}}, h // 2, h // 4, h // 2),
        Layout("sSQA", {"symmetric_sqa": {"baseline_heads": h}}, h // 2, h // 2, h // 2),
        Layout("xSQA", {"extreme_sqa": {"baseline_heads": h, "num_query_heads": h // 4}},
               h // 4, h // 4, h // 4),
    ]


def gqkva_layout(query_groups, kv_groups):
    return Layout(f"GQKVA {query_groups}x{kv_groups}",
                  {"gqkva": {"query_groups": query_groups, "kv_groups": kv_groups}},
                  query_groups, kv_groups, query_groups * kv_groups, in_paper=False)


# ---------------------------------------------------------------------------------------------
# §7 counting, to check the server's WorkCounts against
# ---------------------------------------------------------------------------------------------


def causal_pairs(seq):
    return seq * (seq + 1) // 2


def attention_flops(layout, batch, seq, dim=HEAD_DIM, passes=1.0):
    """2 * B * H_out * N * (D_qk + D_v), N the causal kept pairs; passes 2.5 (backward) or 3.5
    (training step)."""
    return passes * 2.0 * batch * layout.heads_out * causal_pairs(seq) * (2 * dim)


def projection_flops(layout, batch, seq, d_model=D_MODEL, dim=HEAD_DIM):
    """Q, K, V projections 2*B*S*d_model*(H_q*D + 2*H_kv*D) plus the output 2*B*S*H_out*D*d."""
    tokens = float(batch) * seq
    return (2.0 * tokens * d_model * (layout.heads_q * dim + 2 * layout.heads_kv * dim) +
            2.0 * tokens * layout.heads_out * dim * d_model)


def close(a, b, rel=1e-9):
    return abs(a - b) <= rel * max(abs(a), abs(b), 1.0)


# ---------------------------------------------------------------------------------------------
# Points and rows
# ---------------------------------------------------------------------------------------------


@dataclass
class Row:
    tokens: int            # the paper's sequence length this row stands for
    batch: int
    seq: int
    layout: Layout
    scope: str = ""        # "layer" or "core" (what ran)
    fallback: str = ""     # why layer scope was not used
    bwd_scope: str = ""    # the same for the backward column
    bwd_fallback: str = ""
    fwd: Timing = None
    bwd: Timing = None
    failed: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def status(self):
        if self.failed:
            return "FAIL"
        if self.fwd is None or self.fwd.error.startswith("skipped"):
            return "skip"
        return "ok" if self.fwd.ok() else "n/a"

    def paper_seconds(self):
        return PAPER_SECONDS.get(self.tokens, {}).get(self.layout.name)


def skipped(reason="skipped: time budget"):
    return Timing(error=reason)


def speedup(reference, timing, same_scope=True):
    """reference time / timing (> 1: faster than the reference), or None."""
    if (not same_scope or reference is None or timing is None or not reference.ok() or
            not timing.ok()):
        return None
    return reference.median_ms / timing.median_ms


def paper_speedup(tokens, name):
    paper = PAPER_SECONDS.get(tokens, {})
    if name not in paper or REFERENCE not in paper:
        return None
    return paper[REFERENCE] / paper[name]


def reference_row(rows, row):
    for r in rows:
        if r.tokens == row.tokens and r.layout.name == REFERENCE:
            return r
    return None


def fwd_speedup(rows, row):
    ref = reference_row(rows, row)
    if ref is None:
        return None
    return speedup(ref.fwd, row.fwd, same_scope=ref.scope == row.scope)


def bwd_speedup(rows, row):
    ref = reference_row(rows, row)
    if ref is None:
        return None
    return speedup(ref.bwd, row.bwd, same_scope=ref.bwd_scope == row.bwd_scope)


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------


class Ours:
    """Runs points on the server with Run; `wrap_stub(stub, grpc, pb)` (tests) may replace the
    stub with one that refuses or fakes some requests."""

    def __init__(self, target, args, wrap_stub=None, stubs=None):
        from correctness import connect, import_stubs
        self.args = args
        self.grpc, self.pb, pb_grpc, self.json_format = stubs or import_stubs()
        if target is None:  # tests: the stub comes from wrap_stub alone
            self.channel, self.stub = None, None
        else:
            self.channel, self.stub = connect(self.grpc, pb_grpc, target)
        if wrap_stub is not None:
            self.stub = wrap_stub(self.stub, self.grpc, self.pb)
        caps = self.stub.GetCapabilities(self.pb.GetCapabilitiesRequest(), timeout=60)
        self.served = [b.name for b in caps.backends]
        self.devices = {b.name: [d.name for d in b.devices] for b in caps.backends}
        self.phases = {b.name: {self.pb.Phase.Name(p) for p in b.phases} for b in caps.backends}
        self.scopes = {b.name: {self.pb.Scope.Name(s) for s in b.scopes} for b in caps.backends}

    def lists_backward(self, backend):
        if backend == "auto" or not backend:
            return any("PHASE_BACKWARD" in p for p in self.phases.values())
        return "PHASE_BACKWARD" in self.phases.get(backend, set())

    def request(self, row, scope, backward=False):
        pb, a = self.pb, self.args
        spec = pb.AttentionSpec(batch_size=row.batch, seq_len_q=row.seq, seq_len_kv=row.seq,
                                head_dim_qk=HEAD_DIM, dtype=pb.DTYPE_BFLOAT16,
                                seed=int.from_bytes(os.urandom(7), "little"))
        self.json_format.ParseDict(row.layout.proto, spec.layout)
        spec.mask.causal.SetInParent()
        if scope == "layer":
            spec.scope = pb.SCOPE_LAYER
            spec.d_model = D_MODEL
        else:
            spec.scope = pb.SCOPE_CORE
        if backward:
            spec.phase = pb.PHASE_BACKWARD
        # RunRequest copies spec: every spec field is set above this line.
        req = self.settings(pb.RunRequest(spec=spec, backend=a.backward_backend if backward
                                          else a.backend))
        if backward:
            req.measurement.backward_timing = (
                pb.BACKWARD_TIMING_TRAINING_STEP if a.backward_timing == "step"
                else pb.BACKWARD_TIMING_BACKWARD_ONLY)
        return req

    def settings(self, req):
        """req with the arguments' measurement (--warmup, --min-iters, --max-iters,
        --target-seconds; a cold L2) and check (--check: sampled, the default, is
        CHECK_MODE_AUTO with --check-rows rows; full; off) filled in; the tables share it."""
        pb, a = self.pb, self.args
        m = req.measurement
        m.warmup_iterations, m.min_iterations, m.max_iterations = (a.warmup, a.min_iters,
                                                                   a.max_iters)
        m.max_duration_seconds = a.target_seconds
        m.cache_mode = pb.CACHE_MODE_COLD
        check = getattr(a, "check", "sampled")
        if check == "off":
            req.check.mode = pb.CHECK_MODE_OFF
        elif check == "full":
            req.check.mode = pb.CHECK_MODE_FULL
        else:
            req.check.mode = pb.CHECK_MODE_AUTO
            req.check.max_sampled_rows = a.check_rows
        return req

    def run(self, req):
        """(Timing, RunResult or None); an RPC error becomes the Timing's error, and its status
        code name is kept in extra["code"]."""
        try:
            r = self.stub.Run(req, timeout=self.args.rpc_timeout).result
        except self.grpc.RpcError as e:
            t = Timing(error=f"{e.code().name}: {e.details()}")
            t.extra["code"] = e.code().name
            return t, None
        t = Timing(median_ms=r.timing.median_ms, p10_ms=r.timing.p10_ms, p90_ms=r.timing.p90_ms,
                   min_ms=r.timing.min_ms, stdev_ms=r.timing.stdev_ms, count=r.timing.count)
        c = r.correctness
        # A decode from a quantized cache (Correctness.quantization) passes only when the kernel's
        # own error, against the cache as stored, is within the dtype's tolerance too.
        quantized = c.HasField("quantization")
        if not c.checked:
            check = "off"
        elif (c.passed and r.output_summary.non_finite_elements == 0 and
              (not quantized or c.quantization.kernel_passed)):
            check = "pass"
        else:
            check = "FAIL"
        t.extra = {"backend": r.backend, "kernel": r.kernel, "device": r.device.name,
                   "check": check, "relative_error": c.relative_error, "tolerance": c.tolerance,
                   "rows_checked": c.rows_checked, "rows_total": c.rows_total,
                   "non_finite_elements": r.output_summary.non_finite_elements,
                   "flops": r.work.flops, "projection_flops": r.work.projection_flops,
                   "flops_flash_convention": r.work.flops_flash_convention,
                   "min_bytes": r.work.min_bytes,
                   "server_tflops": r.throughput.achieved_tflops,
                   "server_gbps": r.throughput.achieved_gbps,
                   "server_fraction_of_peak_bandwidth": r.throughput.fraction_of_peak_bandwidth,
                   "peak_tflops": r.device.peak_tflops, "peak_gbps": r.device.peak_gbps,
                   "preparation_ms": r.preparation_ms, "seed": req.spec.seed,
                   "sm_clock_mhz_before": r.device.sm_clock_mhz_before,
                   "sm_clock_mhz_after": r.device.sm_clock_mhz_after}
        if quantized:
            q = c.quantization
            t.extra.update(kernel_relative_error=q.kernel_relative_error,
                           kernel_max_abs_error=q.kernel_max_abs_error,
                           kernel_tolerance=q.kernel_tolerance, kernel_passed=q.kernel_passed,
                           quantization_relative_error=q.quantization_relative_error)
        if r.HasField("layer_timing"):  # SCOPE_LAYER: each iteration's projections and core
            t.extra["projections_ms"] = r.layer_timing.projections.median_ms
            t.extra["core_ms"] = r.layer_timing.core.median_ms
        return t, r

    def close(self):
        if self.channel is not None:
            self.channel.close()


# ---------------------------------------------------------------------------------------------
# Running the points
# ---------------------------------------------------------------------------------------------


class Runner:
    def __init__(self, args, ours, say=None):
        self.args = args
        self.ours = ours
        self.start = time.monotonic()
        self.rows = []
        self.errors = []
        self.say = say or (lambda text: print(f"[sqa] {text}", flush=True))

    def elapsed(self):
        return time.monotonic() - self.start

    def over_budget(self):
        return self.args.budget_s > 0 and self.elapsed() > self.args.budget_s

    def verify(self, row, timing, result, scope, passes, projection_passes=1.0):
        """Checks a measured run: the server's check, the head map, the §7 counts (the core's
        FLOPs `passes` times the forward's, the projections' `projection_passes` times)."""
        e = timing.extra
        what = "fwd" if passes == 1.0 else "fwd+bwd" if passes == 3.5 else "bwd"
        if e["check"] == "FAIL":
            row.failed.append(f"{what} check failed: relative error {e['relative_error']:.3g} "
                              f"> {e['tolerance']:.3g}, {e['non_finite_elements']} non-finite")
        lay = row.layout
        pairs = [(p.query_head, p.kv_head) for p in result.head_map]
        if pairs:
            got = (max(q for q, _ in pairs) + 1, max(k for _, k in pairs) + 1, len(pairs))
            if got != (lay.heads_q, lay.heads_kv, lay.heads_out):
                row.failed.append(f"{what} head map resolves to H_q/H_kv/H_out "
                                  f"{got[0]}/{got[1]}/{got[2]}, expected "
                                  f"{lay.heads_q}/{lay.heads_kv}/{lay.heads_out}")
        want = attention_flops(lay, row.batch, row.seq, passes=passes)
        if not close(e["flops"], want):
            row.failed.append(f"{what} WorkCounts.flops {e['flops']:.6g} != §7 {want:.6g}")
        want_proj = (projection_passes * projection_flops(lay, row.batch, row.seq)
                     if scope == "layer" else 0.0)
        if not close(e["projection_flops"], want_proj):
            row.failed.append(f"{what} WorkCounts.projection_flops {e['projection_flops']:.6g} "
                              f"!= §7 {want_proj:.6g}")

    def forward(self, row):
        if self.over_budget():
            row.fwd = skipped()
            return
        timing, result = self.ours.run(self.ours.request(row, "layer"))
        row.scope = "layer"
        if timing.extra.get("code") == "FAILED_PRECONDITION":
            row.fallback = timing.error
            row.scope = "core"
            timing, result = self.ours.run(self.ours.request(row, "core"))
        row.fwd = timing
        if result is not None:
            self.verify(row, timing, result, row.scope, 1.0)
        self.line(row, "fwd", timing)

    def backward(self, row):
        a = self.args
        if a.backward_backend == "none":
            row.bwd = Timing(error="not run (--backward-backend=none)")
            return
        if not self.ours.lists_backward(a.backward_backend):
            row.bwd = Timing(error=f"{a.backward_backend} does not list PHASE_BACKWARD")
            return
        if a.backward_max_seq and row.seq > a.backward_max_seq:
            row.bwd = Timing(error=f"skipped: S > --backward-max-seq={a.backward_max_seq}")
            return
        if self.over_budget():
            row.bwd = skipped()
            return
        step = a.backward_timing == "step"
        timing, result = self.ours.run(self.ours.request(row, "layer", backward=True))
        row.bwd_scope = "layer"
        if timing.extra.get("code") == "FAILED_PRECONDITION":
            row.bwd_fallback = timing.error
            row.bwd_scope = "core"
            timing, result = self.ours.run(self.ours.request(row, "core", backward=True))
        row.bwd = timing
        if result is not None:
            # §7: a layer's backward adds twice the projections (dX and dW of each), a training
            # step three times.
            self.verify(row, timing, result, row.bwd_scope, 3.5 if step else 2.5,
                        3.0 if step else 2.0)
        self.line(row, "fwd+bwd" if step else "bwd", timing)

    def line(self, row, what, t):
        head = (f"{row.tokens:>6} B={row.batch:<3} S={row.seq:<6} {row.layout.name:<11} "
                f"{what:<7}")
        if not t.ok():
            self.say(f"{head} {t.error}")
            return
        scope = row.scope if what == "fwd" else row.bwd_scope
        fb = " (layer refused)" if (row.fallback if what == "fwd" else row.bwd_fallback) else ""
        self.say(f"{head} {t.median_ms:.4f} ms [{t.p10_ms:.4f}-{t.p90_ms:.4f}] {scope}{fb} "
                 f"check={t.extra['check']}" + (f" FAIL: {'; '.join(row.failed)}"
                                                 if row.failed else ""))

    def guarded(self, fn, row):
        try:
            fn(row)
        except Exception as e:  # noqa: BLE001 - a broken point is recorded, the rest runs
            self.errors.append(f"{row.tokens}/{row.layout.name}: {type(e).__name__}: {e}")
            self.say(f"ERROR {row.tokens}/{row.layout.name}:\n{traceback.format_exc()}")
            row.failed.append(f"script error: {type(e).__name__}: {e}")
            if row.fwd is None:
                row.fwd = Timing(error=f"script error: {e}")

    def run(self, write=lambda: None):
        self.rows = make_rows(self.args)
        for row in self.rows:                       # forward first, cheapest first
            self.guarded(self.forward, row)
            write()
        for row in self.rows:                       # then the backward column
            if row.fwd is not None and row.fwd.error.startswith("skipped") and \
                    row.bwd is None:
                row.bwd = skipped()
                continue
            self.guarded(self.backward, row)
            write()


def make_rows(args):
    """Rows in run order: tokens ascending; within a length GQA first, then by output heads."""
    rows = []
    for tokens in args.tokens:
        batch, seq = (SMOKE_SHAPES[tokens] if args.smoke else (PAPER_BATCH[tokens], tokens))
        if args.batch_scale != 1.0:
            batch = max(1, int(round(batch * args.batch_scale)))
        order = sorted(args.layout_list, key=lambda l: (l.name != REFERENCE, l.heads_out,
                                                        l.heads_q + 2 * l.heads_kv))
        rows += [Row(tokens, batch, seq, layout) for layout in order]
    return rows


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def fmt_x(x):
    return "n/a" if x is None else f"{x:.2f}x"


def fmt_ms(t):
    if t is None:
        return "-"
    if t.error.startswith(("skipped", "not run")):
        return "skip"
    if not t.ok():
        return "n/a"
    return f"{t.median_ms:.4g}"


def fmt_count(x):
    return "-" if x is None else f"{x:.3g}"


def scope_text(row):
    if not row.scope:
        return "-"
    return "core (layer refused)" if row.fallback else row.scope


def bwd_text(row):
    """The backward column's median and the scope it ran at."""
    if row.bwd is None or not row.bwd.ok():
        return fmt_ms(row.bwd)
    return f"{fmt_ms(row.bwd)} ({'core, layer refused' if row.bwd_fallback else row.bwd_scope})"


def split_text(extra):
    """The medians of a layer iteration's projections and core (RunResult.layer_timing)."""
    if "projections_ms" not in extra:
        return "-"
    return f"{extra['projections_ms']:.4g} / {extra['core_ms']:.4g}"


def projection_vs_mha(row):
    mha = Layout("MHA", {}, BASELINE_HEADS, BASELINE_HEADS, BASELINE_HEADS)
    return projection_flops(row.layout, 1, 1) / projection_flops(mha, 1, 1)


def markdown(rows, header, args, errors):
    lines = list(header)
    order = [l.name for l in args.layout_list]
    # The paper-shaped summary: one line per length, one cell per layout.
    lines += ["", "## Forward: ours ms per layer (speed-up over GQA) / paper s per step (speed-up "
              "over GQA)", "",
              "| tokens | " + " | ".join(order) + " |", "|---|" + "---|" * len(order)]
    for tokens in args.tokens:
        cells = []
        for name in order:
            row = next((r for r in rows if r.tokens == tokens and r.layout.name == name), None)
            ours = "-" if row is None else f"{fmt_ms(row.fwd)} ({fmt_x(fwd_speedup(rows, row))})"
            if row is not None and row.fallback:
                ours += " core"
            paper = PAPER_SECONDS.get(tokens, {}).get(name)
            cells.append(ours + (f" / {paper:.4f} ({fmt_x(paper_speedup(tokens, name))})"
                                 if paper is not None else " / -"))
        lines.append(f"| {tokens:,} | " + " | ".join(cells) + " |")
    bwd_name = "fwd+bwd" if args.backward_timing == "step" else "bwd"
    head = ["tokens", "B x S", "layout", "H_q/H_kv", "scope", "ours fwd ms [p10-p90]",
            "proj / core ms", "ours x GQA", "paper s/step", "paper x GQA", f"{bwd_name} ms (scope)",
            f"{bwd_name} x GQA", "flops (attn)", "projection_flops", "proj vs MHA", "check",
            "st"]
    lines += ["", "## Every point", "", "| " + " | ".join(head) + " |",
              "|" + "---|" * len(head)]
    reasons = {}
    rank = {name: i for i, name in enumerate(order)}
    for r in sorted(rows, key=lambda r: (r.tokens, rank.get(r.layout.name, len(rank)))):
        fwd = r.fwd
        fwd_text = fmt_ms(fwd)
        if fwd is not None and fwd.ok():
            fwd_text += f" [{fwd.p10_ms:.4g}-{fwd.p90_ms:.4g}]"
        paper = r.paper_seconds()
        e = fwd.extra if fwd is not None and fwd.ok() else {}
        be = r.bwd.extra if r.bwd is not None and r.bwd.ok() else {}
        checks = [x for x in (e.get("check"), be.get("check")) if x]
        cells = [f"{r.tokens:,}", f"{r.batch} x {r.seq}", r.layout.name, r.layout.label,
                 scope_text(r), fwd_text, split_text(e), fmt_x(fwd_speedup(rows, r)),
                 "-" if paper is None else f"{paper:.4f}",
                 fmt_x(paper_speedup(r.tokens, r.layout.name)) if paper is not None else "-",
                 bwd_text(r), fmt_x(bwd_speedup(rows, r)), fmt_count(e.get("flops")),
                 fmt_count(e.get("projection_flops")) if e else "-",
                 f"{projection_vs_mha(r):.2f}", "/".join(checks) or "-", r.status]
        lines.append("| " + " | ".join(cells) + " |")
        for what, t in (("fwd", fwd), (bwd_name, r.bwd)):
            if t is not None and t.error:
                reasons.setdefault(f"{what}: {t.error}", []).append(
                    f"{r.tokens}/{r.layout.name}")
        if r.fallback:
            reasons.setdefault(f"layer scope refused, ran SCOPE_CORE: {r.fallback}", []).append(
                f"{r.tokens}/{r.layout.name}")
        if r.bwd_fallback:
            reasons.setdefault(f"{bwd_name}: layer scope refused, ran SCOPE_CORE: "
                               f"{r.bwd_fallback}", []).append(f"{r.tokens}/{r.layout.name}")
    if reasons:
        lines += ["", "Notes:"]
        for reason, where in reasons.items():
            shown = ", ".join(where[:6]) + (f" (+{len(where) - 6} more)" if len(where) > 6
                                            else "")
            lines.append(f"- {reason} [{shown}]")
    failed = [r for r in rows if r.failed]
    if failed:
        lines += ["", "Failures:"]
        for r in failed:
            lines.append(f"- {r.tokens}/{r.layout.name}: {'; '.join(r.failed)}")
    if errors:
        lines += ["", "Script errors:"] + [f"- {e}" for e in errors]
    trend = trends(rows, args)
    if trend:
        lines += ["", "Trend (the issue's target: xSQA and SQA over GQA growing with length): " +
                  "; ".join(f"{k} {v['ours']} (paper {v['paper']})" for k, v in trend.items())]
    return "\n".join(lines) + "\n"


def trends(rows, args):
    """Per SQA layout: its forward speed-ups over GQA by length, and whether they grow."""
    out = {}
    for name in ("xSQA", "SQA"):
        ours = [(r.tokens, fwd_speedup(rows, r)) for r in rows if r.layout.name == name]
        ours = [(t, x) for t, x in ours if x is not None]
        paper = [paper_speedup(t, name) for t in args.tokens]
        if len(ours) < 2:
            continue
        values = [x for _, x in ours]
        grows = all(b >= a for a, b in zip(values, values[1:])) and values[-1] > values[0]
        out[name] = {"ours": " -> ".join(f"{x:.2f}" for x in values) +
                     (" (grows)" if grows else " (does not grow)"),
                     "paper": " -> ".join(f"{x:.2f}" for x in paper if x is not None),
                     "grows": grows, "values": values}
    return out


def timing_json(t):
    if t is None:
        return None
    ok = t.ok()
    return {"median_ms": t.median_ms if ok else None, "p10_ms": t.p10_ms if ok else None,
            "p90_ms": t.p90_ms if ok else None, "min_ms": t.min_ms if ok else None,
            "stdev_ms": t.stdev_ms if ok else None, "count": t.count, "error": t.error,
            **t.extra}


def to_json(rows, meta, args):
    out = {"meta": meta, "rows": [], "paper_seconds": {str(k): v for k, v in
                                                       PAPER_SECONDS.items()}}
    for r in rows:
        paper = r.paper_seconds()
        out["rows"].append({
            "tokens": r.tokens, "batch": r.batch, "seq": r.seq, "layout": r.layout.name,
            "proto_layout": r.layout.proto, "heads_q": r.layout.heads_q,
            "heads_kv": r.layout.heads_kv, "heads_out": r.layout.heads_out,
            "head_dim": HEAD_DIM, "d_model": D_MODEL, "scope": r.scope,
            "fallback": r.fallback, "status": r.status, "failed": r.failed,
            "forward": timing_json(r.fwd), "backward": timing_json(r.bwd),
            "backward_scope": r.bwd_scope, "backward_fallback": r.bwd_fallback,
            "speedup_vs_gqa": fwd_speedup(rows, r),
            "backward_speedup_vs_gqa": bwd_speedup(rows, r),
            "paper_seconds": paper,
            "paper_speedup_vs_gqa": paper_speedup(r.tokens, r.layout.name) if paper else None,
            "expected_flops": attention_flops(r.layout, r.batch, r.seq),
            "expected_projection_flops": projection_flops(r.layout, r.batch, r.seq),
            "projection_vs_mha": projection_vs_mha(r)})
    out["trend"] = trends(rows, args)
    return out


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def add_measurement_args(p, budget_s):
    """The measurement, check, time-budget and output arguments every table takes."""
    p.add_argument("--check-rows", type=int, default=16)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--min-iters", type=int, default=10)
    p.add_argument("--max-iters", type=int, default=30)
    p.add_argument("--target-seconds", type=float, default=0.5)
    p.add_argument("--rpc-timeout", type=float, default=600.0)
    p.add_argument("--budget-s", type=float, default=budget_s,
                   help="seconds; points not started by then are skipped (0: no limit)")
    p.add_argument("--out-dir", "--out", dest="out_dir", default=os.environ.get("OUT") or "/tmp")


def run_points(runner, write, ours, md_path, measured):
    """Runs a table of points (runner.points, each with .failed) writing as it goes, prints the
    markdown at md_path, and returns the exit status: 1 on a failed point, a script error or no
    point for which measured(point) holds, else 0."""
    try:
        runner.run(write)
    finally:
        write()
        ours.close()
    print()
    with open(md_path, encoding="utf-8") as f:
        print(f.read(), flush=True)
    failed = [p for p in runner.points if p.failed]
    return 1 if failed or runner.errors or not any(measured(p) for p in runner.points) else 0


# ---------------------------------------------------------------------------------------------
# Arguments and main
# ---------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", default="", help="gRPC target of attnbench-server (required)")
    p.add_argument("--backend", default="cuda_flash",
                   help="our backend (default cuda_flash; --smoke falls back to cpu_reference "
                        "when it is not served)")
    p.add_argument("--backward-backend", default="",
                   help="backend of the backward column (default: --backend; 'none' skips the "
                        "column); run only where it lists PHASE_BACKWARD, at layer scope where it "
                        "runs a layer's backward, else at core scope")
    p.add_argument("--backward-timing", choices=("step", "backward"), default="step",
                   help="step: forward then backward timed together (default); backward: the "
                        "backward alone")
    p.add_argument("--backward-max-seq", type=int, default=0,
                   help="no backward above this S (0: no limit; e.g. 8192 for cuda_unfused's "
                        "S x S scores)")
    p.add_argument("--quick", action="store_true",
                   help=f"tokens {','.join(map(str, QUICK_TOKENS))} only, fewer iterations")
    p.add_argument("--smoke", action="store_true",
                   help="the paper's heads and d_model at tiny batch x S standing in for each "
                        "length, so cpu_reference finishes in seconds")
    p.add_argument("--tokens", default=None,
                   help=f"paper lengths to run (default all: {','.join(map(str, PAPER_TOKENS))})")
    p.add_argument("--layouts", default=None,
                   help="of MHA,GQA,MQA,SQA,sSQA,xSQA,GQKVA (default all; GQA is always run, "
                        "every ratio needs it)")
    p.add_argument("--gqkva", default="4x4",
                   help="GQKVA query groups x kv groups, comma-separated (default 4x4; '' none)")
    p.add_argument("--batch-scale", type=float, default=1.0,
                   help="multiply every batch by this (e.g. 0.25 to fit a smaller device)")
    p.add_argument("--check", choices=("sampled", "full", "off"), default="sampled",
                   help="the server's sampled check (default), full, or none")
    p.add_argument("--check-rows", type=int, default=16)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--min-iters", type=int, default=10)
    p.add_argument("--max-iters", type=int, default=30)
    p.add_argument("--target-seconds", type=float, default=0.5,
                   help="measuring time per point after --min-iters")
    p.add_argument("--rpc-timeout", type=float, default=600.0)
    p.add_argument("--budget-s", type=float, default=480.0,
                   help="seconds; points not started by then are 'skip' (0: no limit)")
    p.add_argument("--out-dir", "--out", dest="out_dir",
                   default=os.environ.get("OUT") or "/tmp",
                   help="where sqa_table.md/.json go (default: $OUT, else /tmp)")
    a = p.parse_args(argv)

    a.tokens = (list(QUICK_TOKENS) if a.quick else list(PAPER_TOKENS)) if a.tokens is None \
        else [int(x) for x in a.tokens.split(",") if x.strip()]
    if not a.tokens or any(t not in PAPER_BATCH for t in a.tokens):
        p.error(f"--tokens takes of {','.join(map(str, PAPER_TOKENS))}")
    layouts = paper_layouts()
    for item in [x for x in a.gqkva.split(",") if x.strip()]:
        try:
            gq, gkv = (int(x) for x in item.lower().split("x"))
        except ValueError:
            p.error(f"--gqkva takes QxKV, e.g. 4x4 (got {item!r})")
        if gq <= 0 or gkv <= 0:
            p.error("--gqkva groups must be positive")
        layouts.append(gqkva_layout(gq, gkv))
    if a.layouts is not None:
        wanted = {x.strip().lower() for x in a.layouts.split(",") if x.strip()}
        known = {l.name.split()[0].lower() for l in layouts}
        if wanted - known:
            p.error(f"unknown --layouts {sorted(wanted - known)}")
        wanted.add(REFERENCE.lower())
        layouts = [l for l in layouts if l.name.split()[0].lower() in wanted]
    a.layout_list = layouts
    if a.min_iters < 10 and not a.smoke:
        p.error("--min-iters must be >= 10")
    if a.quick:
        a.max_iters = min(a.max_iters, 15)
        a.target_seconds = min(a.target_seconds, 0.25)
    if a.smoke:
        a.warmup, a.min_iters, a.max_iters, a.target_seconds = 0, 2, 3, 0.05
    return a


def main(argv=None, wrap_stub=None, stubs=None):
    """Exit status; wrap_stub and stubs let tests stand in for (parts of) the server."""
    args = parse_args(argv)
    if not args.server and wrap_stub is None:
        sys.exit("--server is required (a running attnbench-server)")
    ours = Ours(args.server or None, args, wrap_stub=wrap_stub, stubs=stubs)
    if args.backend != "auto" and args.backend not in ours.served:
        if args.smoke and "cpu_reference" in ours.served:
            print(f"[sqa] --smoke: {args.backend} is not served; using cpu_reference", flush=True)
            args.backend = "cpu_reference"
        else:
            ours.close()
            sys.exit(f"backend {args.backend} is not served (served: {','.join(ours.served)})")
    if not args.backward_backend:
        args.backward_backend = args.backend

    device = ",".join(ours.devices.get(args.backend, [])) or "?"
    runner = Runner(args, ours)
    runner.say(f"{args.backend} on {device} via {args.server or '(test stub)'}; "
               f"{len(args.tokens)} lengths x {len(args.layout_list)} layouts; backward on "
               f"{args.backward_backend} "
               f"({'listed' if ours.lists_backward(args.backward_backend) else 'not listed'})")
    os.makedirs(args.out_dir, exist_ok=True)
    md_path = os.path.join(args.out_dir, "sqa_table.md")
    json_path = os.path.join(args.out_dir, "sqa_table.json")
    bwd_name = "forward+backward (training step)" if args.backward_timing == "step" else \
        "backward alone"

    def write():
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        header = [
            f"# SQA paper Table 3 through attnbench, {now}, backend {args.backend}, device "
            f"{device}",
            "",
            f"One attention layer (SCOPE_LAYER, d_model {D_MODEL}, {BASELINE_HEADS} baseline "
            f"heads of dim {HEAD_DIM}, causal, bf16), forward; server Run, CACHE_MODE_COLD, "
            f"median of >= {args.min_iters} iterations after {args.warmup} warm-up, check "
            f"{args.check} ({args.check_rows} rows). Where the backend refuses layer scope the "
            "point ran at SCOPE_CORE (marked); speed-ups over GQA compare rows of one scope. "
            f"Backward column: {bwd_name} of one layer on {args.backward_backend} (SCOPE_CORE "
            "where the layer's backward is refused, marked). Paper: seconds "
            "per step of an 8-layer model forward (feed-forward layers included) on one A100 "
            "40GB via PyTorch SDPA: compare speed-ups, not times."
            + (" --smoke: tiny B x S stand in for each paper length." if args.smoke else ""),
            "Command: " + " ".join(sys.argv if argv is None else ["sqa_table.py", *argv]),
        ]
        meta = {"date": now, "device": device, "backend": args.backend,
                "backward_backend": args.backward_backend,
                "backward_timing": args.backward_timing, "server": args.server,
                "argv": sys.argv if argv is None else argv, "smoke": args.smoke,
                "budget_s": args.budget_s, "check": args.check, "check_rows": args.check_rows,
                "d_model": D_MODEL, "head_dim": HEAD_DIM, "baseline_heads": BASELINE_HEADS,
                "script_errors": runner.errors, "elapsed_seconds": round(runner.elapsed(), 1)}
        write_atomic(md_path, markdown(runner.rows, header, args, runner.errors))
        write_atomic(json_path, json.dumps(to_json(runner.rows, meta, args), indent=1))

    try:
        runner.run(write)
    finally:
        write()
        ours.close()
    runner.say(f"wrote {md_path} and {json_path} in {runner.elapsed():.0f} s")
    print()
    with open(md_path, encoding="utf-8") as f:
        print(f.read(), flush=True)
    measured = [r for r in runner.rows if r.fwd is not None and r.fwd.ok()]
    failed = [r for r in runner.rows if r.failed]
    runner.say(f"{len(measured)}/{len(runner.rows)} points measured; {len(failed)} FAIL rows; "
               f"{len(runner.errors)} script errors")
    return 1 if failed or runner.errors or not measured else 0


if __name__ == "__main__":
    sys.exit(main())
