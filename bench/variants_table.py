#!/usr/bin/env python3
"""The variants table: score modifiers, block-sparse masks and head dims of cuda_flash, through
the server, against PyTorch peers timed in this process.

Parts (--part, run in the order given; default C,B,A, cheapest first, so a time budget cuts the
longest part):
  A  score modifiers: D 128 and 64, MHA 32 heads and GQA 32/8, S 1k/4k/16k (B = 16k / S), no
     mask and causal; variants none, rope (full rotary dims), alibi_geo, alibi_harm (s0 = 1),
     softcap (cap 30), rope+alibi, alibi+softcap, rope+alibi+softcap (combinations use the
     geometric schedule). Ours against our own no-modifier time of the same shape (target: within
     10%) and, for variants without RoPE, FlexAttention with the equivalent score_mod (the same
     slopes and cap; a causal BlockMask from create_block_mask; target ours/flex >= 1.3). RoPE has
     no score_mod equivalent: RoPE rows compare with our no-modifier time only.
  B  block-sparse masks: S 8k/16k (B = 16k / S), MHA 16 heads and GQA 16/4, D 128: no mask (the
     dense baseline), causal, explicit 128x128 blocks at 10/25/50% (a seeded random block list,
     also intersected with causal), probabilistic block-sparse (blocks 128, alpha 1, c solved for
     an expected 10/25/50% of the causal pairs) and explicit 64x64 blocks at 25% (partial tiles).
     The exact kept set is rebuilt in Python (Philox4x32-10 of kernels/spec/mask.h) and checked
     against the server's WorkCounts.kept_pairs; Flex gets a BlockMask of exactly that set, per
     (b, h). TFLOP/s over kept pairs (WorkCounts.flops / median), the ratio to the dense kernel's
     TFLOP/s (target >= 0.90), preparation_ms and mask_preparation_ms, ours/flex (target >= 1.3).
  C  head dims: D 16, 32, 64, 96, 128, 192, 192/128 (D_qk/D_v), 256 at S 4k and 16k, no mask
     and causal, MHA 16 heads: ours against torch SDPA's cuDNN and flash (FA2) backends ("n/a"
     where they refuse). Targets: D 256 and 192/128 at least cuDNN's speed, D 96 at least 1.5x
     FA2, D 16 and 32 at least 1.5x SDPA's faster backend.

Every row records RunResult.kernel and our sampled check (a failed check marks the row FAIL).
Ours: the server's Run with a cold L2, median and p10/p90 of its timed iterations. Peers: CUDA
events around each iteration, L2 flushed before it outside the timed region, warm-up and the
first (compiling) call excluded, median and p10/p90 (peer_timing.ColdL2Timer); fresh random
inputs. Flex outputs are checked on a few sampled rows against a float32 evaluation of the same
score_mod and kept set. FLOPs = WorkCounts.flops = 2 * B * H_out * kept pairs * (D_qk + D_v),
counted once for everyone.

Before measuring, a preflight checks the Python mirror (variant_spec.py) offline and against the
server: kept_pairs of small block-sparse specs, and outputs of small fp32 problems (ALiBi both
schedules, softcap, block masks) against the same score_mod / mask functions evaluated in numpy.
--selftest runs only that.

Each point prints a line as it is measured; points not started within --budget-s are "skip".
Writes variants_table.md and variants_table.json to --out-dir (default $OUT, else /tmp) after
every shape and at the end. Exit status 1 when a check failed (ours, kept pairs, preflight) or
nothing was measured.

    python3 bench/variants_table.py --server=127.0.0.1:50051 --part=A --dims=128
    python3 bench/variants_table.py --server=127.0.0.1:50051 --quick
    python3 bench/variants_table.py --server=127.0.0.1:50051 --smoke     # tiny, any backend
    python3 bench/variants_table.py --server=127.0.0.1:50051 --selftest
"""

import argparse
import datetime
import json
import math
import os
import random
import sys
import time
import traceback
from dataclasses import dataclass, field

import numpy as np

import variant_spec as vs
from correctness import connect, import_stubs
from peer_timing import ColdL2Timer, Timing, short

DTYPE_ENUMS = {"bf16": "DTYPE_BFLOAT16", "fp16": "DTYPE_FLOAT16", "fp32": "DTYPE_FLOAT32"}

# Score-modifier variants of part A: which modifiers each enables.
VARIANTS = {
    "none": {},
    "rope": {"rope": True},
    "alibi_geo": {"alibi": "geometric"},
    "alibi_harm": {"alibi": "harmonic"},
    "softcap": {"softcap": True},
    "rope+alibi": {"rope": True, "alibi": "geometric"},
    "alibi+softcap": {"alibi": "geometric", "softcap": True},
    "rope+alibi+softcap": {"rope": True, "alibi": "geometric", "softcap": True},
}

# Mask kinds of part B, in table order.
SPARSE_KINDS = ("dense", "causal", "block", "block_causal", "prob", "small_block")

# Head-dim pairs of part C (D_qk, D_v).
C_DIMS = "16,32,64,96,128,192,192/128,256"

TARGETS = {"A_vs_none": 1.10, "A_vs_flex": 1.3, "B_vs_dense": 0.90, "B_vs_flex": 1.3,
           "C_vs_cudnn": 1.0, "C_vs_fa2_d96": 1.5, "C_vs_sdpa_small": 1.5}
# Head dims of part C's SDPA target (issue #14: the SQA paper's D = 16, and 32).
SMALL_DIMS = ((16, 16), (32, 32))


# ---------------------------------------------------------------------------------------------
# Shapes and rows
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    part: str
    dtype: str
    layout: str          # "MHA" or "GQA"
    heads_q: int         # = H_out
    heads_kv: int
    seq: int
    batch: int
    dim_qk: int
    dim_v: int
    causal: bool = False  # parts A and C; part B's masks are per row

    @property
    def heads(self):
        return self.heads_q

    @property
    def dims(self):
        return str(self.dim_qk) if self.dim_qk == self.dim_v else f"{self.dim_qk}/{self.dim_v}"

    @property
    def mask_name(self):
        return "causal" if self.causal else "none"

    def label(self):
        heads = (f"{self.layout} {self.heads_q}" if self.heads_q == self.heads_kv else
                 f"{self.layout} {self.heads_q}/{self.heads_kv}")
        mask = "" if self.part == "B" else f" {self.mask_name}"
        return (f"{self.part} {self.dtype} {heads}{mask} S={self.seq} D={self.dims} "
                f"B={self.batch}")


@dataclass
class Row:
    shape: Shape
    name: str                       # variant (A), mask (B), "-" (C)
    params: dict = field(default_factory=dict)
    kept_pairs: int = 0             # Python's count (verified against the server's)
    flops: float = 0.0              # 2 * kept_pairs * (D_qk + D_v)
    ours: Timing = None
    peers: dict = field(default_factory=dict)  # name -> Timing
    derived: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    failed: list = field(default_factory=list)  # why the row is FAIL
    mask: tuple = None              # part B: the server mask (Ours.spec's form)
    selection: object = None        # part B: its variant_spec.BlockSelection (None: dense/causal)

    @property
    def status(self):
        if self.failed:
            return "FAIL"
        if self.ours is None or self.ours.error.startswith("skipped"):
            return "skip"
        return "ok" if self.ours.ok() else "n/a"


def tflops(row, timing):
    if timing is None or not timing.ok() or not row.flops:
        return math.nan
    return row.flops / (timing.median_ms * 1e-3) / 1e12


def skipped(reason="skipped: time budget"):
    return Timing(error=reason)


# ---------------------------------------------------------------------------------------------
# Ours: through the server
# ---------------------------------------------------------------------------------------------


class Ours:
    """Runs specs on the server with Run and turns results into Timings."""

    def __init__(self, target, args):
        self.args = args
        self.grpc, self.pb, pb_grpc, self.json_format = import_stubs()
        self.channel, self.stub = connect(self.grpc, pb_grpc, target)
        caps = self.stub.GetCapabilities(self.pb.GetCapabilitiesRequest(), timeout=60)
        self.served = [b.name for b in caps.backends]
        self.devices = {b.name: [d.name for d in b.devices] for b in caps.backends}

    def spec(self, shape, mask=None, variant=None, seed=None, dtype=None):
        """An AttentionSpec for the shape; mask is ("none"|"causal",) or ("block", bq, bk,
        blocks, intersect_causal) or ("prob", bq, bk, c, alpha, seed); variant a VARIANTS
        entry plus "cap" and "harmonic_base"."""
        pb = self.pb
        spec = pb.AttentionSpec(
            batch_size=shape.batch, seq_len_q=shape.seq, seq_len_kv=shape.seq,
            head_dim_qk=shape.dim_qk,
            dtype=pb.DType.Value(DTYPE_ENUMS[dtype or shape.dtype]),
            seed=int.from_bytes(os.urandom(7), "little") if seed is None else seed)
        if shape.dim_v != shape.dim_qk:
            spec.head_dim_v = shape.dim_v
        if shape.heads_q == shape.heads_kv:
            spec.layout.mha.num_heads = shape.heads_q
        else:
            spec.layout.gqa.num_query_heads = shape.heads_q
            spec.layout.gqa.num_kv_heads = shape.heads_kv
        mask = mask or (("causal",) if shape.causal else ("none",))
        if mask[0] == "none":
            spec.mask.none.SetInParent()
        elif mask[0] == "causal":
            spec.mask.causal.SetInParent()
        elif mask[0] == "block":
            _, bq, bk, blocks, intersect = mask
            m = spec.mask.block_sparse
            m.query_block_tokens, m.kv_block_tokens = bq, bk
            m.intersect_causal = intersect
            for r, c in blocks:
                m.blocks.add(query_block=r, kv_block=c)
        elif mask[0] == "prob":
            _, bq, bk, c, alpha, mask_seed = mask
            m = spec.mask.probabilistic_block_sparse
            m.query_block_tokens, m.kv_block_tokens = bq, bk
            m.c_coefficient, m.alpha, m.seed = c, alpha, mask_seed
        else:
            raise ValueError(f"unknown mask {mask!r}")
        variant = variant or {}
        if variant.get("rope"):
            spec.rope.rotary_dims = shape.dim_qk
        if variant.get("alibi") == "geometric":
            spec.alibi.schedule = pb.ALIBI_SCHEDULE_GEOMETRIC
        elif variant.get("alibi") == "harmonic":
            spec.alibi.schedule = pb.ALIBI_SCHEDULE_HARMONIC
            spec.alibi.harmonic_base_slope = variant.get("harmonic_base", 1.0)
        if variant.get("softcap"):
            spec.softcap.cap = variant["cap"]
        return spec

    def request(self, spec, backend, check=None, quick=False, return_output=False):
        pb = self.pb
        req = pb.RunRequest(spec=spec, backend=backend, return_output=return_output)
        m = req.measurement
        if quick:  # preflight: one iteration, the number does not matter
            m.warmup_iterations, m.min_iterations, m.max_iterations = 0, 1, 1
        else:
            a = self.args
            m.warmup_iterations, m.min_iterations, m.max_iterations = (a.warmup, a.min_iters,
                                                                       a.max_iters)
            m.max_duration_seconds = a.target_seconds
        m.cache_mode = pb.CACHE_MODE_COLD
        check = check or self.args.check
        if check == "off":
            req.check.mode = pb.CHECK_MODE_OFF
        elif check == "full":
            req.check.mode = pb.CHECK_MODE_FULL
        else:
            req.check.mode = pb.CHECK_MODE_AUTO
            req.check.max_sampled_rows = self.args.check_rows
        return req

    def call(self, req):
        """The RunResult, or raises grpc.RpcError."""
        return self.stub.Run(req, timeout=self.args.rpc_timeout).result

    def measure(self, spec, backend):
        """Timing of one Run, with what the row reports in extra."""
        try:
            r = self.call(self.request(spec, backend))
        except self.grpc.RpcError as e:
            return Timing(error=f"{e.code().name}: {e.details()}"), None
        t = Timing(median_ms=r.timing.median_ms, p10_ms=r.timing.p10_ms, p90_ms=r.timing.p90_ms,
                   min_ms=r.timing.min_ms, stdev_ms=r.timing.stdev_ms, count=r.timing.count)
        c = r.correctness
        if not c.checked:
            check = "off"
        elif c.passed and r.output_summary.non_finite_elements == 0:
            check = "pass"
        else:
            check = "FAIL"
        t.extra = {"kernel": r.kernel, "device": r.device.name, "check": check,
                   "relative_error": c.relative_error, "tolerance": c.tolerance,
                   "rows_checked": c.rows_checked,
                   "non_finite_elements": r.output_summary.non_finite_elements,
                   "kept_pairs": r.work.kept_pairs, "flops": r.work.flops,
                   "flops_flash_convention": r.work.flops_flash_convention,
                   "server_tflops": r.throughput.achieved_tflops,
                   "preparation_ms": r.preparation_ms,
                   "mask_preparation_ms": r.mask_preparation_ms,
                   "sm_clock_mhz_before": r.device.sm_clock_mhz_before,
                   "sm_clock_mhz_after": r.device.sm_clock_mhz_after, "seed": spec.seed}
        return t, r

    def close(self):
        self.channel.close()


# ---------------------------------------------------------------------------------------------
# Peers: PyTorch in this process (imported lazily; absent torch makes every peer "n/a")
# ---------------------------------------------------------------------------------------------


class TorchPeers:
    """FlexAttention (torch.compile'd) and SDPA's cuDNN and flash backends."""

    def __init__(self, args):
        self.args = args
        self.torch = None
        self.error = ""
        self.version = "n/a"
        try:
            import torch
            import torch.nn.functional as functional
            from torch.nn.attention import SDPBackend, sdpa_kernel
        except ImportError as e:
            self.error = f"torch not importable: {e}"
            return
        except Exception as e:  # noqa: BLE001 - a broken install is reported, not fatal
            self.error = f"torch import failed: {short(e)}"
            return
        self.version = torch.__version__
        if not torch.cuda.is_available():
            self.error = "torch sees no CUDA device"
            return
        self.torch, self.F = torch, functional
        self.SDPBackend, self.sdpa_kernel = SDPBackend, sdpa_kernel
        self.device_name = torch.cuda.get_device_properties(0).name
        # Which implementation SDPA's FLASH_ATTENTION backend runs (FA2 unless another one was
        # activated; torch >= 2.10 can register others).
        self.flash_impl = "FA2 (default)"
        try:
            import torch.nn.attention as attention
            if hasattr(attention, "current_flash_attention_impl"):
                self.flash_impl = str(attention.current_flash_attention_impl())
        except Exception as e:  # noqa: BLE001
            self.flash_impl = f"unknown ({short(e)})"
        self.timer = ColdL2Timer(torch)
        self.ops = vs.TorchOps(torch)
        self._flex = None
        self._score_mods = {}
        self._causal_masks = {}
        self.flex_compile_seconds = 0.0

    def dtype(self, name):
        return {"bf16": self.torch.bfloat16, "fp16": self.torch.float16}[name]

    def inputs(self, shape):
        """(q, k, v): [B, H, S, D] views of BSHD storage, standard normal (fresh per call)."""
        torch = self.torch
        dt = self.dtype(shape.dtype)

        def bshd(heads, dim):
            return torch.randn(shape.batch, shape.seq, heads, dim, dtype=dt, device="cuda")

        q = bshd(shape.heads_q, shape.dim_qk)
        k = bshd(shape.heads_kv, shape.dim_qk)
        v = bshd(shape.heads_kv, shape.dim_v)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def release(self):
        self.torch.cuda.synchronize()
        self.torch.cuda.empty_cache()

    # -- FlexAttention ---------------------------------------------------------------------

    def flex(self):
        if self._flex is None:
            torch = self.torch
            from torch.nn.attention.flex_attention import flex_attention
            # Every score_mod function and shape is a recompile of the same frame: lift the limits
            # (past them, dynamo would silently run flex_attention eagerly).
            dynamo = torch._dynamo.config
            for name in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit",
                         "accumulated_recompile_limit"):
                try:
                    if hasattr(dynamo, name):
                        setattr(dynamo, name, max(int(getattr(dynamo, name)), 4096))
                except Exception:  # noqa: BLE001 - a renamed or read-only knob is not fatal
                    pass
            self._flex = torch.compile(flex_attention, dynamic=False)
        return self._flex

    def score_mod(self, variant, heads):
        """The Flex score_mod of a variant (ALiBi and/or softcap), one function object per
        (variant, heads) so compiled kernels are reused across shapes; None for no modifier."""
        key = (variant.get("alibi"), variant.get("harmonic_base"),
               variant.get("cap") if variant.get("softcap") else None, heads)
        if key not in self._score_mods:
            slopes = None
            if variant.get("alibi"):
                slopes = self.torch.tensor(
                    vs.alibi_slopes(variant["alibi"], heads, variant.get("harmonic_base", 1.0)),
                    dtype=self.torch.float32, device="cuda")
            cap = variant["cap"] if variant.get("softcap") else None
            self._score_mods[key] = vs.make_score_mod(slopes=slopes, cap=cap,
                                                      tanh=self.torch.tanh)
        return self._score_mods[key]

    def causal_block_mask(self, seq):
        if seq not in self._causal_masks:
            from torch.nn.attention.flex_attention import create_block_mask
            self._causal_masks[seq] = create_block_mask(vs.causal_mask_mod, None, None, seq, seq,
                                                        device="cuda")
        return self._causal_masks[seq]

    def block_mask(self, selection):
        """A BlockMask of exactly the selection's kept pairs (variant_spec.flex_tables)."""
        torch = self.torch
        from torch.nn.attention.flex_attention import BlockMask
        tables = vs.flex_tables(selection)
        if tables.mask_mod_kind == "causal":
            mask_mod = vs.causal_mask_mod
        elif tables.mask_mod_kind == "table":
            mask_mod = vs.make_table_mask_mod(torch.as_tensor(tables.table, device="cuda"),
                                              selection.bq, selection.bk, selection.causal)
        else:
            mask_mod = None  # no partial tiles: Flex's noop mask

        def dev(a):
            return torch.as_tensor(a, dtype=torch.int32, device="cuda")

        mask = BlockMask.from_kv_blocks(
            kv_num_blocks=dev(tables.kv_num_blocks), kv_indices=dev(tables.kv_indices),
            full_kv_num_blocks=dev(tables.full_kv_num_blocks),
            full_kv_indices=dev(tables.full_kv_indices), BLOCK_SIZE=tables.tile,
            mask_mod=mask_mod, seq_lengths=(selection.seq_q, selection.seq_kv))
        return mask, tables

    def measure_flex(self, qkv, shape, score_mod=None, block_mask=None, keep_fn=None):
        """Timing of compiled Flex; its first call (the compile) is timed apart, and its output
        is checked on sampled rows against score_mod and keep_fn evaluated in float32."""
        q, k, v = qkv
        flex = self.flex()
        gqa = shape.heads_q != shape.heads_kv

        def fn():
            return flex(q, k, v, score_mod=score_mod, block_mask=block_mask, enable_gqa=gqa)

        t0 = time.monotonic()
        out = fn()
        self.torch.cuda.synchronize()
        first_s = time.monotonic() - t0
        self.flex_compile_seconds += first_s
        rel = self.sample_error(out, qkv, shape, score_mod, keep_fn)
        del out
        t = self.time(fn)
        t.extra.update(first_call_seconds=round(first_s, 2), sample_relative_error=rel)
        limit = self.args.flex_tolerance
        if self.args.flex_sample_rows and not (rel <= limit):
            t.note = f"MISMATCH rel={rel:.2e}"
        return t

    def sample_error(self, out, qkv, shape, score_mod, keep_fn):
        """||out - ref|| / ||ref|| over a few sampled rows of two (b, h), ref in float32."""
        n_rows = self.args.flex_sample_rows
        if not n_rows:
            return math.nan
        q, k, v = qkv
        rng = random.Random(shape.seq * 31 + shape.dim_qk)
        scale = 1.0 / math.sqrt(shape.dim_qk)
        group = shape.heads_q // shape.heads_kv
        num = den = 0.0
        for _ in range(2):
            b, h = rng.randrange(shape.batch), rng.randrange(shape.heads_q)
            rows = sorted({0, shape.seq - 1} |
                          {rng.randrange(shape.seq) for _ in range(max(0, n_rows - 2))})
            keep = keep_fn(b, h, rows)
            kh = h // group
            ref = vs.attention_rows(self.ops, q[b, h, rows].float(), k[b, kh].float(),
                                    v[b, kh].float(), scale, b, h, rows, keep, score_mod)
            got = out[b, h, rows].float()
            num += float(((got - ref) ** 2).sum())
            den += float((ref ** 2).sum())
        return math.sqrt(num / den) if den > 0 else (0.0 if num == 0 else math.inf)

    # -- SDPA ----------------------------------------------------------------------------------

    def measure_sdpa(self, qkv, shape, backend_name):
        """Timing of SDPA pinned to one backend ("cudnn" or "flash"); raises when it refuses."""
        q, k, v = qkv
        backend = {"cudnn": self.SDPBackend.CUDNN_ATTENTION,
                   "flash": self.SDPBackend.FLASH_ATTENTION}[backend_name]
        gqa = shape.heads_q != shape.heads_kv
        F = self.F

        def fn():
            if gqa:
                return F.scaled_dot_product_attention(q, k, v, is_causal=shape.causal,
                                                      enable_gqa=True)
            return F.scaled_dot_product_attention(q, k, v, is_causal=shape.causal)

        with self.sdpa_kernel(backend):
            fn()
            self.torch.cuda.synchronize()
            return self.time(fn)

    def time(self, fn):
        a = self.args
        return self.timer.time(fn, warmup=a.warmup, min_iters=a.min_iters, max_iters=a.max_iters,
                               target_seconds=a.target_seconds)


class NoPeers:
    """Stands in for TorchPeers when peers are off or torch is missing: every peer is n/a."""

    def __init__(self, reason):
        self.error = reason
        self.torch = None
        self.version = "n/a"
        self.flex_compile_seconds = 0.0


# ---------------------------------------------------------------------------------------------
# The runner: budget, parts, progress
# ---------------------------------------------------------------------------------------------


class Runner:
    def __init__(self, args, ours, peers):
        self.args = args
        self.ours = ours
        self.peers = peers
        self.start = time.monotonic()
        self.rows = []
        self.errors = []  # shapes that raised

    # -- budget ---------------------------------------------------------------------------------

    def elapsed(self):
        return time.monotonic() - self.start

    def over_budget(self, reserve_s=0.0):
        return self.args.budget_s > 0 and self.elapsed() > self.args.budget_s - reserve_s

    def peers_ok(self):
        return not self.peers.error

    # -- progress -------------------------------------------------------------------------------

    def say(self, text):
        print(f"[variants] {text}", flush=True)

    def ours_line(self, row, extra=""):
        t = row.ours
        if not t.ok():
            self.say(f"{row.shape.label()} {row.name:<18} ours {cell_text(t)}: {t.error}")
            return
        e = t.extra
        self.say(f"{row.shape.label()} {row.name:<18} ours {fmt_ms(t)} "
                 f"{fmt_tf(tflops(row, t))} TFLOP/s{extra} check={e['check']} "
                 f"kernel={e['kernel'] or '-'}")

    def peer_line(self, row, name, extra=""):
        t = row.peers[name]
        if not t.ok():
            self.say(f"{row.shape.label()} {row.name:<18} {name} {cell_text(t)}: {t.error}")
            return
        note = f" {t.note}" if t.note else ""
        first = t.extra.get("first_call_seconds")
        first = f" first call {first:.1f} s" if first is not None else ""
        self.say(f"{row.shape.label()} {row.name:<18} {name} {fmt_ms(t)} "
                 f"{fmt_tf(tflops(row, t))} TFLOP/s{extra}{first}{note}")

    # -- ours -------------------------------------------------------------------------------------

    def run_ours(self, row, spec):
        """Measures row on the server, verifies the kept pairs and records the check."""
        if self.over_budget():
            row.ours = skipped()
            return
        row.ours, _ = self.ours.measure(spec, self.args.backend)
        t = row.ours
        if not t.ok():
            return
        e = t.extra
        if e["check"] == "FAIL":
            row.failed.append(f"check failed: relative error {e['relative_error']:.3g} > "
                              f"{e['tolerance']:.3g}, {e['non_finite_elements']} non-finite")
        if e["kept_pairs"] != row.kept_pairs:
            row.failed.append(f"kept pairs: server {e['kept_pairs']} != Python {row.kept_pairs}")
        elif abs(e["flops"] - row.flops) > 1e-9 * row.flops:
            row.failed.append(f"flops: server {e['flops']:.6g} != Python {row.flops:.6g}")

    # -- part A ---------------------------------------------------------------------------------

    def part_a(self, shape):
        a = self.args
        pairs = vs.mask_pairs(shape.seq, shape.seq, shape.causal) * shape.batch * shape.heads
        rows = []
        for name in a.variants:
            variant = dict(VARIANTS[name], cap=a.softcap, harmonic_base=a.harmonic_base)
            row = Row(shape, name, params=variant, kept_pairs=pairs,
                      flops=2.0 * pairs * (shape.dim_qk + shape.dim_v))
            rows.append(row)
            self.rows.append(row)
        for row in rows:
            self.run_ours(row, self.ours.spec(shape, variant=row.params))
            base = next((r for r in rows if r.name == "none"), None)
            if row.ours.ok() and base is not None and base.ours is not None and base.ours.ok():
                row.derived["vs_none"] = row.ours.median_ms / base.ours.median_ms
            self.ours_line(row, extra=(f" x{row.derived['vs_none']:.3f} of none"
                                       if "vs_none" in row.derived else ""))
        # Flex, for the variants it can express.
        flex_rows = [r for r in rows if not r.params.get("rope") and
                     (r.params.get("alibi") or r.params.get("softcap"))]
        for r in rows:
            if r.params.get("rope"):
                r.peers["flex"] = Timing(error="no Flex equivalent: RoPE is applied to q and k, "
                                               "not a score_mod")
        if not flex_rows:
            return
        if not self.peers_ok() or a.no_flex:
            for r in flex_rows:
                r.peers["flex"] = Timing(error=self.peers.error or "not run (--no-flex)")
            return
        qkv = None
        try:
            for row in flex_rows:
                if row.status == "FAIL":
                    row.peers["flex"] = Timing(error="not run: our row failed (see FAIL)")
                    continue
                if row.status == "skip" or self.over_budget(reserve_s=a.flex_reserve_s):
                    row.peers["flex"] = skipped()
                    continue
                try:
                    if qkv is None:
                        qkv = self.peers.inputs(shape)
                    block_mask = self.peers.causal_block_mask(shape.seq) if shape.causal else None
                    score_mod = self.peers.score_mod(row.params, shape.heads)

                    def keep(b, h, rows_, causal=shape.causal, seq=shape.seq):
                        rows_ = np.asarray(rows_)[:, None]
                        j = np.arange(seq)[None, :]
                        return (j <= rows_) if causal else np.ones((len(rows_), seq), bool)

                    row.peers["flex"] = self.peers.measure_flex(qkv, shape, score_mod, block_mask,
                                                                keep)
                except Exception as e:  # noqa: BLE001 - a refusing peer is n/a, not fatal
                    row.peers["flex"] = Timing(error=short(e))
                self.derive_flex(row)
                self.peer_line(row, "flex", extra=(f" ours/flex {row.derived['vs_flex']:.2f}"
                                                   if "vs_flex" in row.derived else ""))
        finally:
            del qkv
            self.peers.release()

    def derive_flex(self, row):
        """ours/flex, unless Flex's sampled check failed: then it computed something else, and
        the ratio is kept apart (vs_flex_invalid) from the targets."""
        f = row.peers.get("flex")
        if row.ours is not None and row.ours.ok() and f is not None and f.ok():
            key = "vs_flex_invalid" if f.note.startswith("MISMATCH") else "vs_flex"
            row.derived[key] = f.median_ms / row.ours.median_ms

    # -- part B ---------------------------------------------------------------------------------

    def sparse_masks(self, shape):
        """(name, params, server mask tuple, BlockSelection or None, causal) of part B."""
        a = self.args
        s = shape.seq
        out = []
        for kind in a.sparse_kinds:
            if kind == "dense":
                out.append(("dense", {"kind": "none"}, ("none",), None, False))
            elif kind == "causal":
                out.append(("causal", {"kind": "causal"}, ("causal",), None, True))
            elif kind in ("block", "block_causal", "small_block"):
                block = a.small_block if kind == "small_block" else a.block
                densities = a.small_block_densities if kind == "small_block" else a.densities
                causal = kind == "block_causal"
                for density in densities:
                    seed = a.mask_seed + 1000 * s + int(round(density * 1000)) + \
                        (500 if causal else 0) + block
                    blocks, sel = vs.explicit_selection(s, s, block, block, density, causal, seed)
                    name = (f"block{block}{'+causal' if causal else ''} "
                            f"{density:.0%}")
                    params = {"kind": "block_sparse", "block": block, "intersect_causal": causal,
                              "target_density": density, "rng_seed": seed,
                              "blocks": len(blocks)}
                    out.append((name, params, ("block", block, block, blocks, causal), sel,
                                causal))
            elif kind == "prob":
                for n, density in enumerate(a.densities):
                    c = vs.solve_probabilistic_c(s, a.block, a.block, a.prob_alpha, density)
                    seed = (a.mask_seed + 7919 * n + s) & ((1 << 64) - 1)
                    sel = vs.probabilistic_selection(shape.batch, shape.heads, s, s, a.block,
                                                     a.block, c, a.prob_alpha, seed)
                    params = {"kind": "probabilistic_block_sparse", "block": a.block,
                              "c_coefficient": c, "alpha": a.prob_alpha, "mask_seed": seed,
                              "target_density": density,
                              "expected_density": vs.expected_probabilistic_density(
                                  s, a.block, a.block, c, a.prob_alpha)}
                    out.append((f"prob{a.block} ~{density:.0%}", params,
                                 ("prob", a.block, a.block, c, a.prob_alpha, seed), sel, True))
        return out

    def part_b(self, shape):
        a = self.args
        rows = []
        for name, params, mask, sel, causal in self.sparse_masks(shape):
            if sel is None:
                pairs = vs.mask_pairs(shape.seq, shape.seq, causal) * shape.batch * shape.heads
                envelope = shape.seq * shape.seq * shape.batch * shape.heads
            else:
                pairs = sel.kept_pairs(shape.batch, shape.heads)
                envelope = sel.envelope_pairs(shape.batch, shape.heads)
            params = dict(params, density=pairs / (shape.seq * shape.seq * shape.batch *
                                                   shape.heads),
                          density_of_envelope=pairs / envelope,
                          envelope="causal" if causal else "all")
            row = Row(shape, name, params=params, kept_pairs=pairs,
                      flops=2.0 * pairs * (shape.dim_qk + shape.dim_v), mask=mask, selection=sel)
            rows.append(row)
            self.rows.append(row)
        dense = next((r for r in rows if r.name == "dense"), None)
        for row in rows:
            self.run_ours(row, self.ours.spec(shape, mask=row.mask))
            if (row.ours.ok() and dense is not None and dense.ours is not None and
                    dense.ours.ok()):
                row.derived["vs_dense"] = tflops(row, row.ours) / tflops(dense, dense.ours)
            extra = f" density {row.params['density']:.1%}"
            if row.params["envelope"] == "causal":
                extra += f" ({row.params['density_of_envelope']:.1%} of causal)"
            if "vs_dense" in row.derived:
                extra += f" x{row.derived['vs_dense']:.3f} of dense TFLOP/s"
            if row.ours.ok():
                extra += (f" prep {row.ours.extra['preparation_ms']:.0f} ms"
                          f" (mask {row.ours.extra['mask_preparation_ms']:.1f} ms)")
            self.ours_line(row, extra=extra)
        if not self.peers_ok() or a.no_flex:
            for r in rows:
                r.peers["flex"] = Timing(error=self.peers.error or "not run (--no-flex)")
            return
        qkv = None
        try:
            for row in rows:
                if row.status == "FAIL":
                    row.peers["flex"] = Timing(error="not run: our row failed (see FAIL)")
                    continue
                if row.status == "skip" or self.over_budget(reserve_s=a.flex_reserve_s):
                    row.peers["flex"] = skipped()
                    continue
                try:
                    if qkv is None:
                        qkv = self.peers.inputs(shape)
                    sel = row.selection
                    if sel is None and row.mask[0] == "causal":
                        sel = vs.BlockSelection(shape.seq, shape.seq, a.block, a.block, True,
                                                np.ones((1, 1, vs.ceil_div(shape.seq, a.block),
                                                         vs.ceil_div(shape.seq, a.block)), bool))
                    if sel is None:
                        block_mask, tiles = None, ""
                        keep = (lambda b, h, rows_, seq=shape.seq:
                                np.ones((len(rows_), seq), bool))
                    else:
                        block_mask, tables = self.peers.block_mask(sel)
                        tiles = (f" tiles {tables.full_tiles()} full + {tables.partial_tiles()} "
                                 f"partial ({tables.mask_mod_kind or 'no'} mask_mod)")
                        keep = sel.keep_rows
                    row.peers["flex"] = self.peers.measure_flex(qkv, shape, None, block_mask, keep)
                    row.peers["flex"].extra["tiles"] = tiles.strip()
                except Exception as e:  # noqa: BLE001
                    row.peers["flex"] = Timing(error=short(e))
                self.derive_flex(row)
                self.peer_line(row, "flex", extra=(f" ours/flex {row.derived['vs_flex']:.2f}"
                                                   if "vs_flex" in row.derived else ""))
        finally:
            del qkv
            self.peers.release()

    # -- part C ---------------------------------------------------------------------------------

    def part_c(self, shape):
        pairs = vs.mask_pairs(shape.seq, shape.seq, shape.causal) * shape.batch * shape.heads
        row = Row(shape, "-", kept_pairs=pairs, flops=2.0 * pairs * (shape.dim_qk + shape.dim_v))
        self.rows.append(row)
        self.run_ours(row, self.ours.spec(shape))
        self.ours_line(row)
        names = ("cudnn", "flash")
        if not self.peers_ok():
            for n in names:
                row.peers[n] = Timing(error=self.peers.error)
        else:
            qkv = None
            try:
                for n in names:
                    if self.over_budget():
                        row.peers[n] = skipped()
                        continue
                    try:
                        if qkv is None:
                            qkv = self.peers.inputs(shape)
                        row.peers[n] = self.peers.measure_sdpa(qkv, shape, n)
                    except Exception as e:  # noqa: BLE001 - a refusing backend is n/a
                        row.peers[n] = Timing(error=short(e))
                    self.peer_line(row, n)
            finally:
                del qkv
                self.peers.release()
        ours = row.ours
        for n, key in (("cudnn", "vs_cudnn"), ("flash", "vs_fa2")):
            p = row.peers.get(n)
            if ours is not None and ours.ok() and p is not None and p.ok():
                row.derived[key] = p.median_ms / ours.median_ms
        if "vs_cudnn" in row.derived or "vs_fa2" in row.derived:
            row.derived["vs_sdpa"] = min(row.derived.get(k, float("inf"))
                                         for k in ("vs_cudnn", "vs_fa2"))
        ratios = [f"{label} {row.derived[key]:.2f}" for key, label in
                  (("vs_cudnn", "ours/cuDNN"), ("vs_fa2", "ours/FA2")) if key in row.derived]
        if ratios:
            target = c_target(row)
            self.say(f"{shape.label()} {' '.join(ratios)}" + (f" ({target})" if target else ""))

    # -- plan -----------------------------------------------------------------------------------

    def shapes(self):
        """[(part, Shape)] in run order."""
        a = self.args
        out = []
        for part in a.parts:
            dtypes = a.dtypes + (["fp16"] if part in a.fp16_parts and "fp16" not in a.dtypes
                                 else [])
            for dtype in dtypes:
                if part == "A":
                    for dqk, dv in a.a_dims:
                        for seq in a.a_seqs:
                            for lay in a.layouts:
                                hq, hkv = a.a_heads[lay]
                                for mask in a.masks:
                                    out.append(Shape("A", dtype, lay.upper(), hq, hkv, seq,
                                                     max(1, a.batch_tokens // seq), dqk, dv,
                                                     mask == "causal"))
                elif part == "B":
                    for dqk, dv in a.b_dims:
                        for seq in a.b_seqs:
                            for lay in a.b_layouts:
                                hq, hkv = a.b_heads[lay]
                                out.append(Shape("B", dtype, lay.upper(), hq, hkv, seq,
                                                 max(1, a.sparse_tokens // seq), dqk, dv))
                elif part == "C":
                    for seq in a.c_seqs:
                        for dqk, dv in a.c_dims:
                            for mask in a.masks:
                                out.append(Shape("C", dtype, "MHA", a.c_heads, a.c_heads, seq,
                                                 max(1, a.batch_tokens // seq), dqk, dv,
                                                 mask == "causal"))
        return out

    def run(self, write):
        plan = self.shapes()
        self.say(f"{len(plan)} shapes in parts {','.join(self.args.parts)}; budget "
                 f"{self.args.budget_s:.0f} s")
        for shape in plan:
            try:
                {"A": self.part_a, "B": self.part_b, "C": self.part_c}[shape.part](shape)
            except Exception as e:  # noqa: BLE001 - one shape's bug must not lose the others
                traceback.print_exc()
                self.errors.append(f"{shape.label()}: {short(e, 300)}")
                self.say(f"{shape.label()}: ERROR {short(e, 300)}")
            write()


# ---------------------------------------------------------------------------------------------
# Preflight: the Python mirror against its definitions and against the server
# ---------------------------------------------------------------------------------------------


def preflight(args, ours, say):
    """[(name, ok, detail)]: offline checks, then kept pairs and outputs of small specs on the
    server (--selftest-backend, default cpu_reference where served)."""
    results = list(vs.offline_checks())
    if ours is None:
        return results
    backend = args.selftest_backend
    if backend not in ours.served:
        results.append((f"selftest backend {backend} served", False,
                        f"served: {','.join(ours.served)}"))
        return results
    pb = ours.pb

    def check(name, ok, detail=""):
        results.append((name, bool(ok), detail))

    # Kept pairs of block-sparse specs with odd sizes, S_q != S_kv, unequal blocks, large seeds.
    dtype = "fp32" if backend in ("cpu_reference", "cuda_reference", "cuda_unfused") else "bf16"
    cases = [
        (2, 3, 300, 333, 48, 40, ("prob", 1.3, 0.7, 0x1234_5678_9abc_def0)),
        (1, 4, 333, 300, 32, 64, ("prob", 0.4, 1.0, 99)),
        (2, 2, 256, 256, 64, 64, ("prob", 2.0, 1.5, (1 << 64) - 5)),
        (1, 2, 200, 260, 16, 48, ("block", 0.3, False, 3)),
        (2, 1, 260, 200, 48, 16, ("block", 0.4, True, 4)),
    ]
    for batch, heads, sq, skv, bq, bk, m in cases:
        shape = Shape("P", dtype, "MHA", heads, heads, sq, batch, 16, 16)
        if m[0] == "prob":
            _, c, alpha, seed = m
            sel = vs.probabilistic_selection(batch, heads, sq, skv, bq, bk, c, alpha, seed)
            mask = ("prob", bq, bk, c, alpha, seed)
        else:
            _, density, causal, seed = m
            rows, cols = vs.ceil_div(sq, bq), vs.ceil_div(skv, bk)
            rng = random.Random(seed)
            blocks = sorted(rng.sample([(r, c) for r in range(rows) for c in range(cols)],
                                       max(1, int(density * rows * cols))))
            selected = np.zeros((1, 1, rows, cols), bool)
            for r, c in blocks:
                selected[0, 0, r, c] = True
            sel = vs.BlockSelection(sq, skv, bq, bk, causal, selected)
            mask = ("block", bq, bk, blocks, causal)
        spec = ours.spec(shape, mask=mask, seed=1)
        spec.seq_len_kv = skv
        name = f"server kept pairs {m[0]} B={batch} H={heads} {sq}x{skv} blocks {bq}x{bk}"
        try:
            r = ours.call(ours.request(spec, backend, check="off", quick=True))
        except ours.grpc.RpcError as e:
            check(name, False, f"{e.code().name}: {e.details()}")
            continue
        want = sel.kept_pairs(batch, heads)
        check(name, r.work.kept_pairs == want, f"server {r.work.kept_pairs}, Python {want}")

    # Outputs: fp32 inputs sent with the request, the server's output against numpy evaluating
    # the very score_mod / keep functions the Flex comparisons use.
    fp32_backend = next((b for b in ("cpu_reference", "cuda_reference") if b in ours.served),
                        None)
    if fp32_backend is None:
        check("server output checks", True, "skipped: neither cpu_reference nor cuda_reference "
              "(fp32) is served")
        return results
    rng = np.random.default_rng(2024)
    out_cases = [
        # name, heads_q, heads_kv, S_q, S_kv, D, variant, mask
        ("alibi geometric, 6 heads, causal, S_q < S_kv", 6, 3, 40, 56, 16,
         {"alibi": "geometric"}, ("causal",)),
        ("alibi harmonic s0=0.5, none", 4, 4, 48, 48, 16,
         {"alibi": "harmonic", "harmonic_base": 0.5}, ("none",)),
        ("softcap 0.7, causal", 4, 2, 48, 48, 16, {"softcap": True, "cap": 0.7}, ("causal",)),
        ("alibi geometric + softcap 2, none", 8, 8, 40, 40, 16,
         {"alibi": "geometric", "softcap": True, "cap": 2.0}, ("none",)),
        ("probabilistic blocks 8, alibi harmonic", 4, 2, 64, 64, 16,
         {"alibi": "harmonic", "harmonic_base": 1.0}, ("prob", 8, 8, 0.6, 1.0, 77)),
        ("explicit blocks 8 + causal, softcap", 2, 2, 64, 64, 16,
         {"softcap": True, "cap": 1.0}, ("block", 8, 8, 0.4, True, 78)),
        ("explicit blocks 16, no causal", 2, 1, 64, 64, 16, {}, ("block", 16, 16, 0.3, False, 79)),
    ]
    batch = 2
    for name, hq, hkv, sq, skv, d, variant, mask in out_cases:
        shape = Shape("P", "fp32", "GQA" if hq != hkv else "MHA", hq, hkv, sq, batch, d, d)
        offset = skv - sq
        if mask[0] == "prob":
            _, bq, bk, c, alpha, seed = mask
            sel = vs.probabilistic_selection(batch, hq, sq, skv, bq, bk, c, alpha, seed)
            server_mask = mask
        elif mask[0] == "block":
            _, bq, bk, density, causal, seed = mask
            blocks, sel = vs.explicit_selection(sq, skv, bq, bk, density, causal, seed)
            server_mask = ("block", bq, bk, blocks, causal)
        else:
            sel = None
            server_mask = mask
        spec = ours.spec(shape, mask=server_mask, variant=variant, seed=1)
        spec.seq_len_kv = skv
        x = {n: rng.standard_normal((batch, s, h, d)).astype(np.float32) * 1.5
             for n, s, h in (("query", sq, hq), ("key", skv, hkv), ("value", skv, hkv))}
        for n, arr in x.items():
            t = getattr(spec.inputs, n)
            t.dtype = pb.DTYPE_FLOAT32
            t.shape.extend(arr.shape)
            t.data = arr.astype("<f4").tobytes()
        try:
            r = ours.call(ours.request(spec, fp32_backend, check="off", quick=True,
                                       return_output=True))
        except ours.grpc.RpcError as e:
            check(f"server output: {name}", False, f"{e.code().name}: {e.details()}")
            continue
        got = np.frombuffer(r.output.data, dtype="<f4").reshape(batch, sq, hq, d)
        slopes = (np.array(vs.alibi_slopes(variant["alibi"], hq,
                                           variant.get("harmonic_base", 1.0)))
                  if variant.get("alibi") else None)
        score_mod = vs.make_score_mod(slopes=slopes,
                                      cap=variant["cap"] if variant.get("softcap") else None,
                                      tanh=np.tanh, offset=offset)
        num = den = 0.0
        rows = np.arange(sq)
        for b in range(batch):
            for h in range(hq):
                if sel is not None:
                    keep = sel.keep_rows(b, h, rows)
                elif mask[0] == "causal":
                    keep = np.arange(skv)[None, :] <= rows[:, None] + offset
                else:
                    keep = np.ones((sq, skv), bool)
                kh = h // (hq // hkv)
                ref = vs.attention_rows(vs.NumpyOps, x["query"][b, :, h].astype(np.float64),
                                        x["key"][b, :, kh].astype(np.float64),
                                        x["value"][b, :, kh].astype(np.float64),
                                        1.0 / math.sqrt(d), b, h, rows, keep, score_mod)
                num += float(((got[b, :, h] - ref) ** 2).sum())
                den += float((ref ** 2).sum())
        rel = math.sqrt(num / den)
        check(f"server output: {name}", rel < 1e-4, f"relative error {rel:.2e}")
    return results


# ---------------------------------------------------------------------------------------------
# Table and JSON
# ---------------------------------------------------------------------------------------------


def fmt_tf(value):
    return f"{value:7.1f}" if value >= 10 else f"{value:7.3g}"


def fmt_ms(t):
    return f"{t.median_ms:.3f} ms [{t.p10_ms:.3f}-{t.p90_ms:.3f}]"


def cell_text(t):
    if t is None:
        return "-"
    if t.ok():
        return ""
    if t.error.startswith("skipped"):
        return "skip"
    return "n/a"


def tf_cell(row, t):
    if t is None:
        return "-"
    if not t.ok():
        return cell_text(t)
    v = tflops(row, t)
    text = f"{v:.1f}" if v >= 10 else f"{v:.3g}"
    return text + (f" ({t.note})" if t.note else "")


def ms_cell(t):
    if t is None:
        return "-"
    if not t.ok():
        return cell_text(t)
    return f"{t.median_ms:.3f} [{t.p10_ms:.3f}-{t.p90_ms:.3f}]"


def ratio_cell(value, target=None, at_least=True):
    if value is None or not math.isfinite(value):
        return "n/a"
    text = f"{value:.2f}"
    if target is not None:
        met = value >= target if at_least else value <= target
        text += "" if met else " MISS"
    return text


def flex_ratio_cell(row, target):
    if "vs_flex_invalid" in row.derived:
        return f"({row.derived['vs_flex_invalid']:.2f}, invalid)"
    return ratio_cell(row.derived.get("vs_flex"), target)


def check_cell(row):
    if row.failed:
        return "FAIL"
    t = row.ours
    if t is None or not t.ok():
        return cell_text(t)
    e = t.extra
    if e["check"] == "off":
        return "off"
    return f"{e['check']} {e['relative_error']:.1e}"


def kernel_cell(row):
    t = row.ours
    return (t.extra.get("kernel") or "-") if t is not None and t.ok() else "-"


def table(head, lines):
    return ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"] + \
        ["| " + " | ".join(str(c) for c in line) + " |" for line in lines]


def c_target(row):
    """The part-C target of a row, as text."""
    s = row.shape
    d = row.derived
    if (s.dim_qk, s.dim_v) in ((256, 256), (192, 128)):
        if "vs_cudnn" not in d:
            return "ours >= cuDNN: n/a (cuDNN did not run)"
        return "ours >= cuDNN: " + ("met" if d["vs_cudnn"] >= TARGETS["C_vs_cudnn"] else "MISS")
    if (s.dim_qk, s.dim_v) == (96, 96):
        if "vs_fa2" not in d:
            return "ours >= 1.5x FA2: n/a (FA2 did not run)"
        return "ours >= 1.5x FA2: " + ("met" if d["vs_fa2"] >= TARGETS["C_vs_fa2_d96"]
                                       else "MISS")
    if (s.dim_qk, s.dim_v) in SMALL_DIMS:
        if "vs_sdpa" not in d:
            return "ours >= 1.5x SDPA: n/a (neither SDPA backend ran)"
        return "ours >= 1.5x SDPA: " + ("met" if d["vs_sdpa"] >= TARGETS["C_vs_sdpa_small"]
                                        else "MISS")
    return ""


def markdown(rows, header, preflight_results, backend, errors=()):
    out = list(header)
    fails = [p for p in preflight_results if not p[1]]
    out.append(f"Preflight: {len(preflight_results) - len(fails)}/{len(preflight_results)} "
               f"checks passed" + ("" if not fails else
                                   "; FAILED: " + "; ".join(f"{n} ({d})" for n, _, d in fails)))
    reasons = {}

    def note_errors(row, label):
        for name, t in [("ours", row.ours)] + list(row.peers.items()):
            if t is not None and t.error and not t.error.startswith("skipped"):
                reasons.setdefault((name, t.error), []).append(label)

    part_rows = {p: [r for r in rows if r.shape.part == p] for p in "ABC"}
    if part_rows["A"]:
        out += ["", "## A. Score modifiers", "",
                f"ours: {backend} through the server; x none: our time / our no-modifier time "
                f"of the same shape (target <= {TARGETS['A_vs_none']:.2f}); ours/flex: Flex time "
                f"/ our time (target >= {TARGETS['A_vs_flex']}); MISS marks a missed target. "
                "RoPE has no Flex score_mod equivalent: RoPE rows compare with our no-modifier "
                "time only. ALiBi slopes and the cap are the same for both (geometric "
                "2^(-8(h+1)/H), harmonic s0/(h+1)).", ""]
        lines = []
        for r in part_rows["A"]:
            s = r.shape
            flex = r.peers.get("flex")
            flex_cell = ("no equiv." if r.params.get("rope") else
                         "-" if flex is None else tf_cell(r, flex))
            lines.append([r.status, s.dtype, s.layout + (f" {s.heads_q}/{s.heads_kv}"),
                          s.mask_name, s.seq, s.dims, s.batch, r.name, ms_cell(r.ours),
                          tf_cell(r, r.ours),
                          ratio_cell(r.derived.get("vs_none"), TARGETS["A_vs_none"], False)
                          if r.name != "none" else "1",
                          flex_cell,
                          flex_ratio_cell(r, TARGETS["A_vs_flex"])
                          if "flex" in r.peers and not r.params.get("rope") else "-",
                          kernel_cell(r), check_cell(r)])
            note_errors(r, f"A/{s.layout}/{s.mask_name}/{s.seq}/{s.dims}/{r.name}")
        out += table(["st", "dtype", "layout", "mask", "S", "D", "B", "variant",
                      "ours ms [p10-p90]", "ours TFLOP/s", "x none", "flex TFLOP/s",
                      "ours/flex", "kernel", "check"], lines)
    if part_rows["B"]:
        out += ["", "## B. Block-sparse masks", "",
                "TFLOP/s over kept pairs (WorkCounts.flops / median). density: kept pairs / "
                "(B*H*S^2); of env.: of the pairs the mask thins out (all, or the causal ones "
                "for +causal and prob). /dense: our TFLOP/s / our dense (no mask) TFLOP/s of the "
                f"same shape (target >= {TARGETS['B_vs_dense']:.2f}); ours/flex: Flex time / our "
                f"time, Flex given a BlockMask of exactly the same kept set (target >= "
                f"{TARGETS['B_vs_flex']}). kept: Python's kept-pair count equals the server's "
                "WorkCounts.kept_pairs. prep / mask prep: RunResult.preparation_ms / "
                "mask_preparation_ms.", ""]
        lines = []
        for r in part_rows["B"]:
            s = r.shape
            e = r.ours.extra if r.ours is not None and r.ours.ok() else {}
            kept = ("-" if not e else "ok" if e["kept_pairs"] == r.kept_pairs else
                    f"MISMATCH {e['kept_pairs']}")
            lines.append([r.status, s.dtype, s.layout + f" {s.heads_q}/{s.heads_kv}", s.seq,
                          s.dims, s.batch, r.name, f"{r.params['density']:.1%}",
                          f"{r.params['density_of_envelope']:.1%}", kept, ms_cell(r.ours),
                          tf_cell(r, r.ours),
                          ratio_cell(r.derived.get("vs_dense"), TARGETS["B_vs_dense"])
                          if r.name != "dense" else "1",
                          f"{e['preparation_ms']:.0f}" if e else "-",
                          f"{e['mask_preparation_ms']:.2f}" if e else "-",
                          tf_cell(r, r.peers.get("flex")),
                          flex_ratio_cell(r, TARGETS["B_vs_flex"]),
                          kernel_cell(r), check_cell(r)])
            note_errors(r, f"B/{s.layout}/{s.seq}/{r.name}")
        out += table(["st", "dtype", "layout", "S", "D", "B", "mask", "density", "of env.",
                      "kept", "ours ms [p10-p90]", "ours TFLOP/s", "/dense", "prep ms",
                      "mask prep ms", "flex TFLOP/s", "ours/flex", "kernel", "check"], lines)
    if part_rows["C"]:
        out += ["", "## C. Head dims", "",
                "MHA, ours against torch SDPA pinned to cuDNN and to flash (FA2); ratios are the "
                "peer's time / ours. Targets: D 256 and 192/128 at least cuDNN's speed "
                "(ours/cuDNN >= 1), D 96 at least 1.5x FA2.", ""]
        lines = []
        for r in part_rows["C"]:
            s = r.shape
            lines.append([r.status, s.dtype, s.dims, s.mask_name, s.seq, s.batch,
                          f"{s.heads_q}", ms_cell(r.ours), tf_cell(r, r.ours),
                          tf_cell(r, r.peers.get("cudnn")), tf_cell(r, r.peers.get("flash")),
                          ratio_cell(r.derived.get("vs_cudnn")),
                          ratio_cell(r.derived.get("vs_fa2")), c_target(r) or "-",
                          kernel_cell(r), check_cell(r)])
            note_errors(r, f"C/{s.dims}/{s.mask_name}/{s.seq}")
        out += table(["st", "dtype", "D", "mask", "S", "B", "H", "ours ms [p10-p90]",
                      "ours TFLOP/s", "cuDNN TFLOP/s", "FA2 TFLOP/s", "ours/cuDNN", "ours/FA2",
                      "target", "kernel", "check"], lines)
    failed = [r for r in rows if r.failed]
    if failed:
        out += ["", "FAIL rows:"]
        for r in failed:
            out.append(f"- {r.shape.label()} {r.name}: {'; '.join(r.failed)}")
    mismatched = flex_mismatches(rows)
    if mismatched:
        out += ["", "Flex mismatches (Flex's output differs from the same score_mod and kept set "
                "evaluated in float32 on sampled rows: its ratio is left out of the targets):"]
        for r in mismatched:
            out.append(f"- {r.shape.label()} {r.name}: {r.peers['flex'].note}")
    if reasons:
        out += ["", "n/a reasons:"]
        for (name, error), where in reasons.items():
            shown = ", ".join(where[:4]) + (f" (+{len(where) - 4} more)" if len(where) > 4 else "")
            out.append(f"- {name}: {error} [{shown}]")
    if errors:
        out += ["", "Script errors (shapes that raised; see the log):"] + \
            [f"- {e}" for e in errors]
    summary = summarize(rows)
    if summary:
        out += ["", "Targets:"] + [f"- {line}" for line in summary]
    return "\n".join(out) + "\n"


def flex_mismatches(rows):
    return [r for r in rows if r.peers.get("flex") is not None and
            r.peers["flex"].note.startswith("MISMATCH")]


def summarize(rows):
    """One line per target: how many measured rows met it."""
    lines = []

    def count(rows_, key, target, at_least=True):
        values = [r.derived[key] for r in rows_ if key in r.derived]
        met = [v for v in values if (v >= target if at_least else v <= target)]
        return len(met), len(values)

    a = [r for r in rows if r.shape.part == "A" and r.name != "none"]
    if a:
        met, n = count(a, "vs_none", TARGETS["A_vs_none"], at_least=False)
        lines.append(f"A: within {TARGETS['A_vs_none'] - 1:.0%} of our no-modifier time: "
                     f"{met}/{n} rows")
        met, n = count(a, "vs_flex", TARGETS["A_vs_flex"])
        lines.append(f"A: ours/flex >= {TARGETS['A_vs_flex']}: {met}/{n} rows")
    b = [r for r in rows if r.shape.part == "B" and r.name != "dense"]
    if b:
        met, n = count(b, "vs_dense", TARGETS["B_vs_dense"])
        lines.append(f"B: >= {TARGETS['B_vs_dense']:.0%} of dense TFLOP/s: {met}/{n} rows")
        met, n = count(b, "vs_flex", TARGETS["B_vs_flex"])
        lines.append(f"B: ours/flex >= {TARGETS['B_vs_flex']}: {met}/{n} rows")
    c = [r for r in rows if r.shape.part == "C"]
    if c:
        big = [r for r in c if (r.shape.dim_qk, r.shape.dim_v) in ((256, 256), (192, 128))]
        met, n = count(big, "vs_cudnn", TARGETS["C_vs_cudnn"])
        lines.append(f"C: D 256 and 192/128 at least cuDNN's speed: {met}/{n} rows where cuDNN "
                     "ran")
        d96 = [r for r in c if (r.shape.dim_qk, r.shape.dim_v) == (96, 96)]
        met, n = count(d96, "vs_fa2", TARGETS["C_vs_fa2_d96"])
        lines.append(f"C: D 96 at least 1.5x FA2: {met}/{n} rows where FA2 ran")
        small = [r for r in c if (r.shape.dim_qk, r.shape.dim_v) in SMALL_DIMS]
        met, n = count(small, "vs_sdpa", TARGETS["C_vs_sdpa_small"])
        lines.append(f"C: D 16 and 32 at least 1.5x SDPA's faster backend: {met}/{n} rows where "
                     "SDPA ran")
    fails = sum(1 for r in rows if r.failed)
    skips = sum(1 for r in rows if r.status == "skip")
    lines.append(f"rows: {len(rows)}, FAIL {fails}, skip {skips}")
    return lines


def timing_json(t):
    if t is None:
        return None
    return {"median_ms": t.median_ms if t.ok() else None,
            "p10_ms": t.p10_ms if t.ok() else None, "p90_ms": t.p90_ms if t.ok() else None,
            "min_ms": t.min_ms if t.ok() else None, "stdev_ms": t.stdev_ms if t.ok() else None,
            "count": t.count, "error": t.error, "note": t.note, **t.extra}


def to_json(rows, meta, preflight_results):
    out = {"meta": meta,
           "preflight": [{"name": n, "ok": ok, "detail": d} for n, ok, d in preflight_results],
           "rows": []}
    for r in rows:
        s = r.shape
        entry = {"part": s.part, "status": r.status, "dtype": s.dtype, "layout": s.layout,
                 "heads_q": s.heads_q, "heads_kv": s.heads_kv, "seq": s.seq, "batch": s.batch,
                 "head_dim_qk": s.dim_qk, "head_dim_v": s.dim_v,
                 "mask": s.mask_name if s.part != "B" else r.params.get("kind"),
                 "name": r.name, "params": r.params, "kept_pairs": r.kept_pairs,
                 "flops": r.flops, "derived": r.derived, "failed": r.failed,
                 "ours": timing_json(r.ours),
                 "ours_tflops": None if r.ours is None or not r.ours.ok() else
                 round(tflops(r, r.ours), 3),
                 "peers": {n: dict(timing_json(t), tflops=None if not t.ok() else
                                   round(tflops(r, t), 3)) for n, t in r.peers.items()}}
        out["rows"].append(entry)
    return out


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------


def int_list(text):
    return [int(x) for x in text.split(",") if x.strip()]


def float_list(text):
    return [float(x) for x in text.split(",") if x.strip()]


def dim_list(text):
    """"64,192/128" -> [(64, 64), (192, 128)] ("x" also separates D_qk and D_v)."""
    out = []
    for item in text.split(","):
        item = item.strip().replace("x", "/")
        if not item:
            continue
        qk, _, v = item.partition("/")
        out.append((int(qk), int(v or qk)))
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", default="", help="gRPC target of attnbench-server (required)")
    p.add_argument("--backend", default="cuda_flash",
                   help="our backend (default cuda_flash; --smoke falls back to cpu_reference "
                        "when cuda_flash is not served)")
    p.add_argument("--part", default="C,B,A",
                   help="parts to run, in this order (default C,B,A)")
    p.add_argument("--quick", action="store_true",
                   help="one call's overview: A at D 128, S 4k; B at S 8k, MHA; C at S 4k")
    p.add_argument("--smoke", action="store_true",
                   help="tiny shapes every backend finishes in seconds (cpu_reference), peers "
                        "only where torch and a GPU are there")
    p.add_argument("--selftest", action="store_true",
                   help="only the preflight checks (offline and against the server); exit 1 on "
                        "a failure")
    p.add_argument("--no-preflight", action="store_true", help="skip the preflight checks")
    p.add_argument("--selftest-backend", default="cpu_reference",
                   help="backend of the preflight's kept-pair checks (default %(default)s)")
    p.add_argument("--dims", default=None,
                   help="head dims of every part, e.g. 128 or 64,192/128 (defaults: A 128,64; "
                        f"B 128; C {C_DIMS})")
    p.add_argument("--seqs", default=None,
                   help="sequence lengths of every part (defaults: A 1024,4096,16384; B "
                        "8192,16384; C 4096,16384)")
    p.add_argument("--layouts", default="mha,gqa", help="parts A and B: mha and/or gqa")
    p.add_argument("--masks", default="none,causal", help="parts A and C: none and/or causal")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help="part A variants (default: all; 'none' is the baseline of the ratios)")
    p.add_argument("--sparse-kinds", default=",".join(SPARSE_KINDS),
                   help="part B masks (default: all; 'dense' is the baseline of the ratios)")
    p.add_argument("--dtypes", default="bf16", help="bf16 and/or fp16 (default bf16)")
    p.add_argument("--fp16-parts", default="",
                   help="parts that also run fp16 after bf16, e.g. C (the cheap one)")
    p.add_argument("--batch-tokens", type=int, default=16384,
                   help="parts A and C: batch = max(1, this // S) (default %(default)s)")
    p.add_argument("--sparse-tokens", type=int, default=16384,
                   help="part B: batch = max(1, this // S) (default %(default)s)")
    p.add_argument("--densities", default="0.1,0.25,0.5", help="part B target densities")
    p.add_argument("--block", type=int, default=128, help="part B block size (default 128)")
    p.add_argument("--small-block", type=int, default=64,
                   help="part B's partial-tile row: block size (default 64)")
    p.add_argument("--small-block-densities", default="0.25",
                   help="part B's partial-tile row: densities (default 0.25)")
    p.add_argument("--prob-alpha", type=float, default=1.0,
                   help="part B probabilistic masks: alpha; c is solved per density")
    p.add_argument("--mask-seed", type=int, default=20241124,
                   help="seed of part B's block lists and probabilistic masks")
    p.add_argument("--softcap", type=float, default=30.0, help="part A softcap (default 30)")
    p.add_argument("--harmonic-base", type=float, default=1.0,
                   help="part A harmonic ALiBi s0 (default 1)")
    p.add_argument("--no-peers", action="store_true", help="no PyTorch peers")
    p.add_argument("--no-flex", action="store_true", help="no FlexAttention")
    p.add_argument("--flex-sample-rows", type=int, default=8,
                   help="rows per (b, h) of the Flex output check (2 (b, h) a point; 0: off)")
    p.add_argument("--flex-tolerance", type=float, default=2e-2,
                   help="largest relative error of the Flex sample check (default %(default)s)")
    p.add_argument("--flex-reserve-s", type=float, default=20.0,
                   help="no Flex point (a compile) starts with less budget left than this")
    p.add_argument("--check", choices=("sampled", "full", "off"), default="sampled",
                   help="our runs: the server's sampled check (default), full, or none")
    p.add_argument("--check-rows", type=int, default=16)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--min-iters", type=int, default=10)
    p.add_argument("--max-iters", type=int, default=30)
    p.add_argument("--target-seconds", type=float, default=0.3,
                   help="measuring time per point and timer, after --min-iters")
    p.add_argument("--rpc-timeout", type=float, default=300.0)
    p.add_argument("--budget-s", type=float, default=480.0,
                   help="seconds; points not started by then are 'skip' (0: no limit)")
    p.add_argument("--out-dir", default=os.environ.get("OUT") or "/tmp",
                   help="where variants_table.md/.json go (default: $OUT, else /tmp)")
    a = p.parse_args(argv)

    a.parts = [x.strip().upper() for x in a.part.split(",") if x.strip()]
    if not a.parts or any(x not in "ABC" or len(x) != 1 for x in a.parts):
        p.error("--part takes A, B and/or C")
    a.layouts = [x for x in a.layouts.split(",") if x]
    if any(x not in ("mha", "gqa") for x in a.layouts):
        p.error("--layouts takes mha and/or gqa")
    a.masks = [x for x in a.masks.split(",") if x]
    if any(x not in ("none", "causal") for x in a.masks):
        p.error("--masks takes none and/or causal")
    a.variants = [x for x in a.variants.split(",") if x]
    if any(x not in VARIANTS for x in a.variants):
        p.error(f"--variants takes {','.join(VARIANTS)}")
    a.sparse_kinds = [x for x in a.sparse_kinds.split(",") if x]
    if any(x not in SPARSE_KINDS for x in a.sparse_kinds):
        p.error(f"--sparse-kinds takes {','.join(SPARSE_KINDS)}")
    a.fp16_parts = [x.strip().upper() for x in a.fp16_parts.split(",") if x.strip()]
    if any(x not in ("A", "B", "C") for x in a.fp16_parts):
        p.error("--fp16-parts takes A, B and/or C")
    a.dtypes = [x for x in a.dtypes.split(",") if x]
    if any(x not in ("bf16", "fp16") for x in a.dtypes):
        p.error("--dtypes takes bf16 and/or fp16")
    a.densities = float_list(a.densities)
    a.small_block_densities = float_list(a.small_block_densities)
    if a.min_iters < 10 and not a.smoke:
        p.error("--min-iters must be >= 10")

    a.b_layouts = list(a.layouts)
    a.a_dims, a.b_dims, a.c_dims = dim_list("128,64"), dim_list("128"), dim_list(C_DIMS)
    a.a_seqs, a.b_seqs, a.c_seqs = [1024, 4096, 16384], [8192, 16384], [4096, 16384]
    a.a_heads = {"mha": (32, 32), "gqa": (32, 8)}
    a.b_heads = {"mha": (16, 16), "gqa": (16, 4)}
    a.c_heads = 16
    if a.quick:
        a.a_dims, a.a_seqs = dim_list("128"), [4096]
        a.b_seqs = [8192]
        a.b_layouts = [x for x in a.b_layouts if x == "mha"] or a.b_layouts
        a.c_seqs = [4096]
    if a.smoke:
        a.a_dims, a.b_dims = dim_list("64"), dim_list("64")
        a.a_seqs, a.b_seqs, a.c_seqs = [128, 256], [512], [128]
        a.a_heads = {"mha": (4, 4), "gqa": (4, 2)}
        a.b_heads = {"mha": (4, 4), "gqa": (4, 2)}
        a.c_heads = 4
        a.batch_tokens, a.sparse_tokens = 256, 512
        a.block, a.small_block = 32, 16
        a.warmup, a.min_iters, a.max_iters, a.target_seconds = 0, 2, 3, 0.05
        a.flex_reserve_s = 0.0
    if a.dims is not None:
        a.a_dims = a.b_dims = a.c_dims = dim_list(a.dims)
    if a.seqs is not None:
        a.a_seqs = a.b_seqs = a.c_seqs = int_list(a.seqs)
    return a


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def main(argv=None):
    args = parse_args(argv)
    if not args.server:
        sys.exit("--server is required (a running attnbench-server)")
    ours = Ours(args.server, args)
    if args.backend not in ours.served:
        if args.smoke and "cpu_reference" in ours.served:
            print(f"[variants] --smoke: {args.backend} is not served; using cpu_reference",
                  flush=True)
            args.backend = "cpu_reference"
        elif not args.selftest:
            sys.exit(f"backend {args.backend} is not served (served: {','.join(ours.served)})")
    if args.selftest_backend not in ours.served:
        args.selftest_backend = args.backend

    def say(text):
        print(f"[variants] {text}", flush=True)

    results = []
    if args.selftest or not args.no_preflight:
        t0 = time.monotonic()
        results = preflight(args, ours, say)
        for name, ok, detail in results:
            if not ok or args.selftest:
                say(f"preflight {'PASS' if ok else 'FAIL'} {name}" +
                    (f" ({detail})" if detail else ""))
        bad = sum(1 for _, ok, _ in results if not ok)
        say(f"preflight: {len(results) - bad}/{len(results)} checks passed "
            f"({time.monotonic() - t0:.1f} s)")
        if args.selftest:
            ours.close()
            return 1 if bad else 0

    if args.no_peers:
        peers = NoPeers("not run (--no-peers)")
    else:
        peers = TorchPeers(args)
        if peers.error:
            peers = NoPeers(peers.error)
    device = ",".join(ours.devices.get(args.backend, [])) or "?"
    say(f"ours {args.backend} on {device} via {args.server}; peers "
        f"{peers.error or 'torch ' + peers.version}")

    runner = Runner(args, ours, peers)
    os.makedirs(args.out_dir, exist_ok=True)
    md_path = os.path.join(args.out_dir, "variants_table.md")
    json_path = os.path.join(args.out_dir, "variants_table.json")

    def write():
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        flush_mib = (peers.timer.flush_bytes >> 20) if hasattr(peers, "timer") else None
        header = [
            f"# Variants table, {now}, device {device}, torch {peers.version}, backend "
            f"{args.backend}",
            "",
            f"Ours: server Run, CACHE_MODE_COLD, check {args.check}, median [p10-p90] of "
            f">= {args.min_iters} iterations after {args.warmup} warm-up. Peers: CUDA events, "
            f"L2 flushed ({flush_mib if flush_mib is not None else '?'} MiB written) before each "
            f"of >= {args.min_iters} timed iterations, warm-up and the first call (Flex's "
            "compile) excluded, median [p10-p90]; Flex outputs checked on sampled rows "
            f"(MISMATCH above {args.flex_tolerance:g}). FLOPs = 2*B*H*kept pairs*(D_qk+D_v) "
            "(WorkCounts.flops). st: ok, FAIL (our check or kept pairs failed), n/a (ours "
            "refused), skip (time budget).",
            "Command: " + " ".join(sys.argv),
        ]
        meta = {"date": now, "device": device, "backend": args.backend,
                "torch": peers.version, "peers": peers.error or "ok", "argv": sys.argv,
                "server": args.server, "budget_s": args.budget_s, "targets": TARGETS,
                "flex_compile_seconds": round(peers.flex_compile_seconds, 1),
                "sdpa_flash_impl": peers.flash_impl if hasattr(peers, "flash_impl") else None,
                "script_errors": runner.errors,
                "elapsed_seconds": round(runner.elapsed(), 1)}
        write_atomic(md_path, markdown(runner.rows, header, results, args.backend,
                                       runner.errors))
        write_atomic(json_path, json.dumps(to_json(runner.rows, meta, results), indent=1))

    try:
        runner.run(write)
    finally:
        write()
        ours.close()
    say(f"wrote {md_path} and {json_path} in {runner.elapsed():.0f} s")
    print()
    with open(md_path, encoding="utf-8") as f:
        print(f.read(), flush=True)
    measured = [r for r in runner.rows if r.ours is not None and r.ours.ok()]
    failed = [r for r in runner.rows if r.failed]
    bad_preflight = [x for x in results if not x[1]]
    mismatched = flex_mismatches(runner.rows)
    say(f"{len(measured)}/{len(runner.rows)} points measured; {len(failed)} FAIL rows; "
        f"{len(mismatched)} Flex mismatches; {len(runner.errors)} script errors; preflight "
        f"{'FAIL' if bad_preflight else 'ok'}")
    return 1 if failed or bad_preflight or mismatched or runner.errors or not measured else 0


if __name__ == "__main__":
    sys.exit(main())
