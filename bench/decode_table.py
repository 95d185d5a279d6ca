"""Issue #13's decode benchmark through the service: one decode step (PHASE_DECODE, docs/variants.md
§5) against a KV cache of every kind, bf16, D 128, on --backend (default cuda_flash), in up to
three parts:

  bandwidth  S_q 1, GQA 32/8 and MHA 32, B x S_kv of 1 x 524,288 and 16 x 32,768 (512k cached
             tokens each), caches native, paged (page 16 and 128 tokens), int8, int4 and SAQ
             (newest 512 tokens native, the next 1,024 int8, the rest int4). Per point: the median
             [p10-p90], WorkCounts.min_bytes (the cache read once at its stored width, scales and
             page table included, §7), the achieved GB/s (min_bytes / median) and its fraction of
             the device's measured copy bandwidth (DeviceInfo.peak_gbps); target >= 0.85. The
             check (CHECK_MODE_AUTO), for a quantized cache split into the kernel's error against
             the cache as stored and the quantization's (Correctness.quantization), and
             RunResult.kernel.
  peers      where torch sees a GPU (not with --no-peers): the same shapes through
             torch.nn.functional.scaled_dot_product_attention, q [B, H_q, 1, D], k and v
             [B, H_kv, S_kv, D] bf16 (enable_gqa for GQA), pinned in turn to SDPA's FLASH_ATTENTION,
             CUDNN_ATTENTION and EFFICIENT_ATTENTION backends (one that raises is skipped with its
             reason), each timed with a cold L2 (peer_timing.ColdL2Timer); the best is the peer.
             Quantized and paged caches time what torch must do first, with the attention:
               int8   int8 [B, H_kv, S_kv, D] and a float32 scale per (token, head): copy_ into a
                      preallocated bf16 buffer, then mul_ by the scale (two elementwise kernels)
               int4   two 4-bit values a byte, [B, H_kv, S_kv, D/2] uint8, low nibble first, each
                      offset by 8 (value = nibble - 8): & 15 and >> 4, stacked and flattened to
                      [..., D], then the int8 path with 8 subtracted before the scale
               saq    the native band copied, the int8 and int4 bands dequantized as above, each
                      into its slice of one bf16 buffer
               paged  pages [B * S_kv / P, P, H_kv, D] bf16 (K and V), a page table of a random
                      permutation, gathered with torch.index_select and viewed as
                      [B, H_kv, S_kv, D] (a transpose of the gathered [B, S_kv, H_kv, D])
             speed-up = the peer's best ms / ours; target >= 2.0.
  sweep      GQA 32/8, native cache, B 1: S_kv 1k-512k x S_q 1, 4, 16, 64 (S_q > 1 with the causal
             mask, aligned bottom-right), with achieved GB/s and TFLOP/s (WorkCounts.flops, kept
             pairs only), each against the device's measured ceilings, and the arithmetic intensity
             flops / min_bytes against the ridge point peak_tflops / peak_gbps: where decode turns
             compute-bound.

A missed target is reported, not a failure. A backend that refuses a cache (FAILED_PRECONDITION)
leaves its row n/a. WorkCounts.min_bytes and .flops are compared with §7's formulas (the GB/s and
TFLOP/s rest on them). Points run in order (bandwidth rows, each with its peer, then the sweep);
those not started within --budget-s are 'skip'. Exit status 1 on a failed check, a count differing
from §7, a script error, or nothing measured.

    python3 bench/decode_table.py --server=127.0.0.1:50051
    python3 bench/decode_table.py --server=127.0.0.1:50051 --parts=bandwidth --caches=native,int8
    python3 bench/decode_table.py --server=127.0.0.1:50051 --smoke        # tiny, cpu_reference

Writes decode_table.md and decode_table.json to --out-dir (default $OUT, else /tmp).
"""

import argparse
import datetime
import json
import math
import os
import sys
import time
import traceback
from dataclasses import dataclass, field

from layer_table import fmt_ratio, ok
from peer_timing import Timing, cuda_torch, short
from sqa_table import (Layout, Ours, add_measurement_args, close, run_points, timing_json,
                       write_atomic)

BANDWIDTH_TARGET = 0.85  # of the device's measured copy bandwidth
SPEEDUP_TARGET = 2.0     # the best SDPA peer's time over ours
PARTS = ("bandwidth", "peers", "sweep")
SDPA_BACKENDS = (("flash", "FLASH_ATTENTION"), ("cudnn", "CUDNN_ATTENTION"),
                 ("efficient", "EFFICIENT_ATTENTION"))
FORMATS = {"native": "CACHE_FORMAT_NATIVE", "int8": "CACHE_FORMAT_INT8",
           "int4": "CACHE_FORMAT_INT4"}


@dataclass(frozen=True)
class Cache:
    name: str
    format: str = "native"   # of FORMATS (without saq bands)
    page: int = 0            # page size in tokens; 0: contiguous
    saq: tuple = ()          # ((tokens or None for the rest, format), ...), newest band first


def caches(saq_bands):
    return {"native": Cache("native"), "paged16": Cache("paged16", page=16),
            "paged128": Cache("paged128", page=128), "int8": Cache("int8", "int8"),
            "int4": Cache("int4", "int4"), "saq": Cache("saq", saq=saq_bands)}


def parse_saq(text):
    """'512:native,1024:int8,rest:int4' -> ((512, 'native'), (1024, 'int8'), (None, 'int4'))."""
    bands = []
    for item in [x.strip() for x in text.split(",") if x.strip()]:
        tokens, _, fmt = item.partition(":")
        if fmt not in FORMATS or (tokens != "rest" and not tokens.isdigit()):
            raise ValueError(f"bad band {item!r}: TOKENS:FORMAT or rest:FORMAT, FORMAT of "
                             f"{','.join(FORMATS)}")
        bands.append((None if tokens == "rest" else int(tokens), fmt))
    if not bands or any(n is None for n, _ in bands[:-1]) or any(n == 0 for n, _ in bands):
        raise ValueError("bands need positive token counts; only the last may be 'rest'")
    return tuple(bands)


def saq_text(bands):
    return ",".join(f"{'rest' if n is None else n}:{f}" for n, f in bands)


def layouts(gqa_q, gqa_kv, mha):
    return {"gqa": Layout(f"GQA {gqa_q}/{gqa_kv}", {"gqa": {"num_query_heads": gqa_q,
                                                            "num_kv_heads": gqa_kv}},
                          gqa_q, gqa_kv, gqa_q),
            "mha": Layout(f"MHA {mha}", {"mha": {"num_heads": mha}}, mha, mha, mha)}


@dataclass
class Point:
    part: str              # "bandwidth" or "sweep"
    layout: Layout
    batch: int
    seq_q: int
    seq_kv: int
    cache: Cache
    ours: Timing = None
    peer: Timing = None    # the best SDPA backend (extra["sdpa"] names it), or why none
    peers: dict = field(default_factory=dict)   # SDPA backend -> Timing
    failed: list = field(default_factory=list)

    @property
    def causal(self):
        return self.seq_q > 1

    @property
    def label(self):
        return f"{self.batch}x{self.seq_kv}/{self.seq_q} {self.layout.name} {self.cache.name}"

    @property
    def status(self):
        if self.failed:
            return "FAIL"
        if self.ours is None or self.ours.error.startswith("skipped"):
            return "skip"
        return "ok" if ok(self.ours) else "n/a"

    # Derived figures (None where a number is missing).

    def gbps(self):
        if not ok(self.ours) or not self.ours.extra.get("min_bytes"):
            return None
        return self.ours.extra["min_bytes"] / self.ours.median_ms / 1e6

    def bandwidth_fraction(self):
        g, peak = self.gbps(), self.ours.extra.get("peak_gbps") if ok(self.ours) else None
        return g / peak if g is not None and peak else None

    def tflops(self):
        if not ok(self.ours) or not self.ours.extra.get("flops"):
            return None
        return self.ours.extra["flops"] / self.ours.median_ms / 1e9

    def flops_fraction(self):
        t, peak = self.tflops(), self.ours.extra.get("peak_tflops") if ok(self.ours) else None
        return t / peak if t is not None and peak else None

    def intensity(self):
        """Arithmetic intensity, flops / min_bytes (flop/B)."""
        e = self.ours.extra if ok(self.ours) else {}
        return e["flops"] / e["min_bytes"] if e.get("min_bytes") and e.get("flops") else None

    def ridge(self):
        """The device's ridge point, peak_tflops / peak_gbps in flop/B."""
        e = self.ours.extra if ok(self.ours) else {}
        if not e.get("peak_tflops") or not e.get("peak_gbps"):
            return None
        return e["peak_tflops"] * 1e3 / e["peak_gbps"]

    def speedup(self):
        if not ok(self.ours) or not ok(self.peer):
            return None
        return self.peer.median_ms / self.ours.median_ms


# ---------------------------------------------------------------------------------------------
# §7's counts, to check the server's WorkCounts against
# ---------------------------------------------------------------------------------------------


def cache_segments(seq_kv, cache):
    """[(tokens, format)] covering the cache (kernels/spec/cache_format.cc's CacheSegments)."""
    if not cache.saq:
        return [(seq_kv, cache.format)]
    segments, left = [], seq_kv
    for tokens, fmt in cache.saq:
        if left <= 0:
            break
        take = left if tokens is None else min(tokens, left)
        segments.append((take, fmt))
        left -= take
    if left > 0:
        segments.append((left, "native"))
    return segments


def row_bytes(fmt, dim, width=2):
    """Stored bytes of one (token, head) row: int8 a byte an element and a float32 scale, int4 two
    elements a byte and the scale, native the dtype's width."""
    return {"int8": dim + 4, "int4": (dim + 1) // 2 + 4}.get(fmt, dim * width)


def kept_pairs(seq_q, seq_kv, causal):
    """Kept (i, j) pairs of one (b, h); causal aligned bottom-right (§3)."""
    if not causal:
        return seq_q * seq_kv
    return sum(min(seq_kv, seq_kv - seq_q + i + 1) for i in range(seq_q))


def expected_min_bytes(p, dim, width=2):
    """§7: Q read and O written once, the cache read once at its stored width, the page table."""
    lay = p.layout
    total = width * p.batch * p.seq_q * (lay.heads_q + lay.heads_out) * dim
    total += p.batch * lay.heads_kv * sum(n * 2 * row_bytes(f, dim, width)
                                          for n, f in cache_segments(p.seq_kv, p.cache))
    if p.cache.page:
        total += 4 * p.batch * math.ceil(p.seq_kv / p.cache.page)
    return total


def expected_flops(p, dim):
    return 2.0 * p.batch * p.layout.heads_out * kept_pairs(p.seq_q, p.seq_kv, p.causal) * 2 * dim


# ---------------------------------------------------------------------------------------------
# The peers: torch in this process
# ---------------------------------------------------------------------------------------------


class DecodePeers:
    """The point's decode through torch SDPA, after the dequantization or page gather its cache
    needs (see the module's docstring), timed per SDPA backend with a cold L2; or why not."""

    def __init__(self, enabled):
        self.torch, self.timer, self.error = cuda_torch(enabled)

    def time(self, p, dim, args):
        """(the best Timing, with extra["sdpa"] naming its backend; {backend: Timing})."""
        if self.torch is None:
            return Timing(error=self.error), {}
        try:
            results = self.measure(p, dim, args)
        except Exception as e:  # noqa: BLE001 - out of memory or the like: no peer here
            return Timing(error=f"inputs: {short(e)}"), {}
        finally:  # the inputs are gone: give their memory back for the server's next run
            self.torch.cuda.synchronize()
            self.torch.cuda.empty_cache()
        return best_of(results), results

    def measure(self, p, dim, args):
        """{SDPA backend: Timing} of the point's decode step (a backend that raises: its reason)."""
        torch = self.torch
        from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: PLC0415 - with torch only
        import torch.nn.functional as functional  # noqa: PLC0415
        q, prepare = self.inputs(p, dim)
        kwargs = {"enable_gqa": True} if p.layout.heads_q != p.layout.heads_kv else {}

        def step():
            k, v = prepare()
            return functional.scaled_dot_product_attention(q, k, v, **kwargs)

        results = {}
        for name, backend in SDPA_BACKENDS:
            try:
                with sdpa_kernel(getattr(SDPBackend, backend)):
                    step()  # a backend that cannot run the shape raises here
                    torch.cuda.synchronize()
                    results[name] = self.timer.time(
                        step, warmup=args.warmup, min_iters=args.min_iters,
                        max_iters=args.max_iters, target_seconds=args.target_seconds)
            except Exception as e:  # noqa: BLE001 - a refusing backend is skipped with its reason
                results[name] = Timing(error=short(e))
        return results

    def inputs(self, p, dim):
        """(q, prepare): prepare() returns this cache's (k, v) as SDPA takes them."""
        torch = self.torch
        lay, b, s = p.layout, p.batch, p.seq_kv
        bf16 = torch.bfloat16
        q = torch.randn(b, lay.heads_q, p.seq_q, dim, dtype=bf16, device="cuda")
        cache = p.cache
        if cache.page:
            pages_per_seq = math.ceil(s / cache.page)
            pages = [torch.randn(b * pages_per_seq, cache.page, lay.heads_kv, dim, dtype=bf16,
                                 device="cuda") for _ in range(2)]
            table = torch.randperm(b * pages_per_seq, device="cuda")

            def gather():
                return tuple(torch.index_select(x, 0, table).view(
                    b, pages_per_seq * cache.page, lay.heads_kv, dim)[:, :s].transpose(1, 2)
                    for x in pages)
            return q, gather
        segments = cache_segments(s, cache)
        if all(f == "native" for _, f in segments):
            kv = tuple(torch.randn(b, lay.heads_kv, s, dim, dtype=bf16, device="cuda")
                       for _ in range(2))
            return q, lambda: kv
        # Oldest tokens first, as they sit in the sequence: the bands are newest first.
        stored = [[quantized_band(torch, f, (b, lay.heads_kv, n, dim)) for n, f in
                   reversed(segments)] for _ in range(2)]
        out = [torch.empty(b, lay.heads_kv, s, dim, dtype=bf16, device="cuda") for _ in range(2)]

        def dequantize():
            for bands, buffer in zip(stored, out):
                start = 0
                for band in bands:
                    n = band[1].shape[2]
                    dequantize_band(torch, band, buffer[:, :, start:start + n])
                    start += n
            return tuple(out)
        return q, dequantize


def best_of(results):
    """The fastest of {SDPA backend: Timing}, extra["sdpa"] naming it; or why none ran."""
    timed = [(t.median_ms, name) for name, t in results.items() if ok(t)]
    if not timed:
        return Timing(error="no SDPA backend ran: " + "; ".join(
            f"{n}: {t.error}" for n, t in results.items()))
    name = min(timed)[1]
    best = results[name]
    peer = Timing(median_ms=best.median_ms, p10_ms=best.p10_ms, p90_ms=best.p90_ms,
                  min_ms=best.min_ms, stdev_ms=best.stdev_ms, count=best.count)
    peer.extra["sdpa"] = name
    return peer


def quantized_band(torch, fmt, shape):
    """A band as the peer stores it: ("native", bf16 values); ("int8", int8 values, float32
    scale); ("int4", uint8 pairs of offset nibbles, float32 scale)."""
    b, h, n, dim = shape
    if fmt == "native":
        return fmt, torch.randn(b, h, n, dim, dtype=torch.bfloat16, device="cuda")
    scale = torch.rand(b, h, n, dtype=torch.float32, device="cuda")
    if fmt == "int8":
        return fmt, torch.randint(-127, 128, (b, h, n, dim), dtype=torch.int8,
                                  device="cuda"), scale
    return fmt, torch.randint(0, 256, (b, h, n, dim // 2), dtype=torch.uint8,
                              device="cuda"), scale


def unpack_int4(torch, packed):
    """uint8 [..., D/2], two values a byte, low nibble first, each offset by 8 -> uint8 [..., D] of
    the nibbles (value + 8)."""
    return torch.stack((packed & 15, packed >> 4), dim=-1).flatten(-2)


def dequantize_band(torch, band, out):
    """Writes the band's values as bf16 into `out` (a view of the peer's cache buffer)."""
    fmt, values = band[0], band[1]
    if fmt == "int4":
        out.copy_(unpack_int4(torch, values))
        out.sub_(8)
    else:
        out.copy_(values)
    if fmt != "native":
        out.mul_(band[2].unsqueeze(-1))
    return out


# ---------------------------------------------------------------------------------------------
# Running the points
# ---------------------------------------------------------------------------------------------


class Runner:
    def __init__(self, args, ours, peers, say=None):
        self.args, self.ours, self.peers = args, ours, peers
        self.start = time.monotonic()
        self.points = []
        self.errors = []
        self.say = say or (lambda text: print(f"[decode] {text}", flush=True))

    def elapsed(self):
        return time.monotonic() - self.start

    def request(self, p):
        pb, a = self.ours.pb, self.args
        spec = pb.AttentionSpec(batch_size=p.batch, seq_len_q=p.seq_q, seq_len_kv=p.seq_kv,
                                head_dim_qk=a.head_dim, dtype=pb.DTYPE_BFLOAT16,
                                phase=pb.PHASE_DECODE,
                                seed=int.from_bytes(os.urandom(7), "little"))
        self.ours.json_format.ParseDict(p.layout.proto, spec.layout)
        if p.causal:
            spec.mask.causal.SetInParent()
        cache = spec.kv_cache
        if p.cache.page:
            cache.paging.page_size_tokens = p.cache.page
        if p.cache.saq:
            for tokens, fmt in p.cache.saq:
                band = cache.saq_bands.add(format=pb.CacheFormat.Value(FORMATS[fmt]))
                if tokens is not None:
                    band.num_tokens = tokens
        elif p.cache.format != "native":
            cache.format = pb.CacheFormat.Value(FORMATS[p.cache.format])
        return self.ours.settings(pb.RunRequest(spec=spec, backend=a.backend))

    def measure(self, p):
        a = self.args
        p.ours, result = self.ours.run(self.request(p))
        if result is not None:
            e = p.ours.extra
            if e["check"] == "FAIL":
                text = (f"check failed: relative error {e['relative_error']:.3g} > "
                        f"{e['tolerance']:.3g}, {e['non_finite_elements']} non-finite")
                if "kernel_passed" in e:
                    text += (f"; kernel error {e['kernel_relative_error']:.3g} (tolerance "
                             f"{e['kernel_tolerance']:.3g})")
                p.failed.append(text)
            want = expected_min_bytes(p, a.head_dim)
            if e["min_bytes"] != want:
                p.failed.append(f"WorkCounts.min_bytes {e['min_bytes']} != §7 {want}")
            want = expected_flops(p, a.head_dim)
            if not close(e["flops"], want):
                p.failed.append(f"WorkCounts.flops {e['flops']:.6g} != §7 {want:.6g}")
        if p.part == "bandwidth" and "peers" in a.part_list:
            if ok(p.ours):
                p.peer, p.peers = self.peers.time(p, a.head_dim, a)
            else:
                p.peer = Timing(error="not run: ours not measured")
        self.say(line(p))

    def run(self, write=lambda: None):
        self.points = make_points(self.args)
        for p in self.points:
            if self.args.budget_s and self.elapsed() > self.args.budget_s:
                p.ours = Timing(error="skipped: time budget")
                continue
            try:
                self.measure(p)
            except Exception as e:  # noqa: BLE001 - a broken point is recorded, the rest runs
                self.errors.append(f"{p.label}: {type(e).__name__}: {e}")
                self.say(f"ERROR {p.label}:\n{traceback.format_exc()}")
                p.failed.append(f"script error: {type(e).__name__}: {e}")
                if p.ours is None:
                    p.ours = Timing(error=f"script error: {e}")
            write()


def make_points(args):
    """Bandwidth points (each layout and cache at each B x S_kv, S_q 1), then the sweep's."""
    points = []
    if {"bandwidth", "peers"} & set(args.part_list):
        for batch, seq in args.point_list:
            for lay in args.layout_list:
                points += [Point("bandwidth", lay, batch, 1, seq, c) for c in args.cache_list]
    if "sweep" in args.part_list:
        lay = args.known_layouts["gqa"]
        for seq in args.sweep_seq_list:
            points += [Point("sweep", lay, args.sweep_batch, sq, seq, Cache("native"))
                       for sq in args.sweep_q_list if sq <= seq]
    return points


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def fmt_ms(t):
    if t is None:
        return "-"
    if t.error.startswith(("skipped", "not run")):
        return "skip"
    if not ok(t):
        return "n/a"
    return f"{t.median_ms:.4g}"


def fmt_spread(t):
    return fmt_ms(t) + (f" [{t.p10_ms:.4g}-{t.p90_ms:.4g}]" if ok(t) else "")


def fmt_num(x, spec=".4g"):
    return "-" if x is None else format(x, spec)


def fmt_gbps(x):
    return "-" if x is None else f"{x:.1f}" if x >= 10 else f"{x:.3g}"


def fmt_bytes(n):
    """Decimal units, as GB/s is."""
    if not n:
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.4g} {unit}"
    return f"{n} B"


def check_text(t):
    return t.extra.get("check", "-") if ok(t) else "-"


def error_split(t):
    """'kernel err / quantization err' of a quantized cache's check, else the relative error."""
    if not ok(t) or t.extra.get("check") == "off":
        return "-"
    e = t.extra
    if "kernel_passed" in e:
        return f"{e['kernel_relative_error']:.2g} / {e['quantization_relative_error']:.2g}"
    return f"{e['relative_error']:.2g}"


def peer_text(p):
    if p.peer is None:
        return "-"
    if not ok(p.peer):
        return fmt_ms(p.peer)
    return f"{p.peer.median_ms:.4g} ({p.peer.extra.get('sdpa', '?')})"


def cache_label(cache):
    if cache.saq:
        return f"saq {saq_text(cache.saq)}"
    if cache.page:
        return f"paged P={cache.page}"
    return cache.format


def bound(p):
    ai, ridge = p.intensity(), p.ridge()
    if ai is None or ridge is None:
        return "-"
    return "compute" if ai >= ridge else "memory"


def target_summary(points):
    """How many measured rows meet each target, e.g. ['copy bandwidth >= 0.85: 3/12 met']."""
    out = []
    for name, values, target in (
            (f"copy bandwidth >= {BANDWIDTH_TARGET}", [p.bandwidth_fraction() for p in points],
             BANDWIDTH_TARGET),
            (f"speed-up over the best SDPA peer >= {SPEEDUP_TARGET}",
             [p.speedup() for p in points], SPEEDUP_TARGET)):
        values = [v for v in values if v is not None]
        out.append(f"{name}: {sum(v >= target for v in values)}/{len(values)} met"
                   if values else f"{name}: not measured")
    return out


def turning_points(sweep):
    """Per S_kv, the smallest S_q whose flop/B reaches the ridge point (of those measured)."""
    out = []
    for seq in sorted({p.seq_kv for p in sweep}):
        measured = [p for p in sweep if p.seq_kv == seq and bound(p) != "-"]
        first = next((p.seq_q for p in sorted(measured, key=lambda p: p.seq_q)
                      if bound(p) == "compute"), None)
        if not measured:
            continue
        out.append(f"S_kv {seq:,} at S_q {first}" if first is not None else
                   f"S_kv {seq:,} not by S_q {max(p.seq_q for p in measured)}")
    return out or ["nothing measured"]


def notes_and_failures(points, lines, errors):
    notes = {}
    for p in points:
        for what, t in [("ours", p.ours), ("peer", p.peer)] + [
                (f"SDPA {name}", t) for name, t in p.peers.items()]:
            if t is not None and t.error and not (what == "peer" and p.peers):
                notes.setdefault(f"{what}: {t.error}", []).append(p.label)
    if notes:
        lines += ["", "Notes:"]
        for reason, where in notes.items():
            shown = ", ".join(where[:6]) + (f" (+{len(where) - 6} more)" if len(where) > 6
                                            else "")
            lines.append(f"- {reason} [{shown}]")
    failed = [p for p in points if p.failed]
    if failed:
        lines += ["", "Failures:"] + [f"- {p.label}: {'; '.join(p.failed)}" for p in failed]
    if errors:
        lines += ["", "Script errors:"] + [f"- {e}" for e in errors]


def markdown(points, header, args, errors):
    lines = list(header)
    bandwidth = [p for p in points if p.part == "bandwidth"]
    if bandwidth:
        head = ["B x S_kv", "layout", "cache", "ours ms [p10-p90]", "min bytes", "GB/s",
                f"of copy BW (>= {BANDWIDTH_TARGET})", "peer best ms (SDPA)",
                f"speed-up (>= {SPEEDUP_TARGET})", "check", "err (kernel / quant)", "kernel",
                "st"]
        lines += ["", "## Bandwidth: S_q = 1", "", "| " + " | ".join(head) + " |",
                  "|" + "---|" * len(head)]
        for p in bandwidth:
            e = p.ours.extra if ok(p.ours) else {}
            lines.append("| " + " | ".join([
                f"{p.batch} x {p.seq_kv:,}", p.layout.name, cache_label(p.cache),
                fmt_spread(p.ours), fmt_bytes(e.get("min_bytes")), fmt_gbps(p.gbps()),
                fmt_ratio(p.bandwidth_fraction(), BANDWIDTH_TARGET, True), peer_text(p),
                fmt_ratio(p.speedup(), SPEEDUP_TARGET, True), check_text(p.ours),
                error_split(p.ours), e.get("kernel") or "-", p.status]) + " |")
        lines += ["", "Targets: " + "; ".join(target_summary(bandwidth))]
    sweep = [p for p in points if p.part == "sweep"]
    if sweep:
        head = ["S_kv", "S_q", "mask", "ms [p10-p90]", "flops", "min bytes", "flop/B", "GB/s",
                "of copy BW", "TFLOP/s", "of GEMM peak", "bound", "check", "kernel", "st"]
        lines += ["", f"## Sweep: {sweep[0].layout.name}, native cache, B {sweep[0].batch}", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for p in sweep:
            e = p.ours.extra if ok(p.ours) else {}
            lines.append("| " + " | ".join([
                f"{p.seq_kv:,}", str(p.seq_q), "causal" if p.causal else "none",
                fmt_spread(p.ours), fmt_num(e.get("flops"), ".3g"), fmt_bytes(e.get("min_bytes")),
                fmt_num(p.intensity(), ".3g"), fmt_gbps(p.gbps()),
                fmt_num(p.bandwidth_fraction(), ".3f"), fmt_num(p.tflops(), ".3g"),
                fmt_num(p.flops_fraction(), ".3f"), bound(p), check_text(p.ours),
                e.get("kernel") or "-", p.status]) + " |")
        ridge = next((p.ridge() for p in sweep if p.ridge() is not None), None)
        lines += ["", "Ridge point (measured peak_tflops / peak_gbps): " +
                  (f"{ridge:.1f} flop/B; a point of higher flop/B is compute-bound."
                   if ridge is not None else "unknown (the device reports no ceilings).")]
        if ridge is not None:
            lines.append("Where decode turns compute-bound: " + "; ".join(turning_points(sweep)) +
                         ".")
    notes_and_failures(points, lines, errors)
    return "\n".join(lines) + "\n"


def to_json(points, meta, args):
    out = {"meta": meta, "bandwidth": [], "sweep": []}
    for p in points:
        row = {"batch": p.batch, "seq_q": p.seq_q, "seq_kv": p.seq_kv, "layout": p.layout.name,
               "heads_q": p.layout.heads_q, "heads_kv": p.layout.heads_kv,
               "cache": p.cache.name, "cache_label": cache_label(p.cache),
               "causal": p.causal, "ours": timing_json(p.ours),
               "expected_min_bytes": expected_min_bytes(p, args.head_dim),
               "expected_flops": expected_flops(p, args.head_dim), "gbps": p.gbps(),
               "fraction_of_copy_bandwidth": p.bandwidth_fraction(), "tflops": p.tflops(),
               "fraction_of_peak_flops": p.flops_fraction(), "flops_per_byte": p.intensity(),
               "ridge_flops_per_byte": p.ridge(), "status": p.status, "failed": p.failed}
        if p.part == "bandwidth":
            row.update(peer=timing_json(p.peer), speedup=p.speedup(),
                       peers={k: timing_json(t) for k, t in p.peers.items()},
                       bandwidth_target_met=(None if p.bandwidth_fraction() is None else
                                             p.bandwidth_fraction() >= BANDWIDTH_TARGET),
                       speedup_target_met=(None if p.speedup() is None else
                                           p.speedup() >= SPEEDUP_TARGET))
        out[p.part].append(row)
    return out


def line(p):
    text = (f"{p.label:<34} ours {fmt_spread(p.ours)} ms, {fmt_gbps(p.gbps())} GB/s "
            f"({fmt_ratio(p.bandwidth_fraction(), BANDWIDTH_TARGET, True)} of copy BW)")
    if p.part == "sweep":
        text += f", {fmt_num(p.tflops(), '.3g')} TFLOP/s, {fmt_num(p.intensity(), '.3g')} flop/B"
    elif p.peer is not None:
        text += (f"; peer {peer_text(p)}, speed-up "
                 f"{fmt_ratio(p.speedup(), SPEEDUP_TARGET, True)}")
    if p.ours is not None and p.ours.error:
        text += f" ({p.ours.error})"
    return text + (f" FAIL: {'; '.join(p.failed)}" if p.failed else "")


# ---------------------------------------------------------------------------------------------
# Arguments and main
# ---------------------------------------------------------------------------------------------


def int_list(text):
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", default="", help="gRPC target of attnbench-server (required)")
    p.add_argument("--backend", default="cuda_flash")
    p.add_argument("--parts", default=",".join(PARTS),
                   help=f"of {','.join(PARTS)} (peers measure ours on the bandwidth shapes too)")
    p.add_argument("--caches", default="native,paged16,paged128,int8,int4,saq")
    p.add_argument("--layouts", default="gqa,mha", help="of gqa,mha (bandwidth and peers)")
    p.add_argument("--points", default="1x524288,16x32768", help="B x S_kv of the bandwidth part")
    p.add_argument("--saq", default="512:native,1024:int8,rest:int4",
                   help="the saq cache's bands, newest first")
    p.add_argument("--gqa-heads", default="32/8", help="H_q/H_kv of the GQA layout")
    p.add_argument("--mha-heads", type=int, default=32)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--sweep-seqs", default="1024,4096,16384,65536,131072,524288")
    p.add_argument("--sweep-q", default="1,4,16,64")
    p.add_argument("--sweep-batch", type=int, default=1)
    p.add_argument("--no-peers", action="store_true", help="no torch SDPA peers")
    p.add_argument("--smoke", action="store_true",
                   help="cpu_reference, MHA 2 / GQA 4/2 heads of dim 16, S_kv 64 and 96, S_q 1 "
                        "and 2, every cache kind (SAQ 16 native, 32 int8, rest int4), no torch")
    add_measurement_args(p, budget_s=400.0)
    a = p.parse_args(argv)
    if a.smoke:
        a.backend, a.gqa_heads, a.mha_heads, a.head_dim = "cpu_reference", "4/2", 2, 16
        a.points, a.sweep_seqs, a.sweep_q, a.saq = "1x64,2x96", "64,96", "1,2", \
            "16:native,32:int8,rest:int4"
        a.warmup, a.min_iters, a.max_iters, a.target_seconds, a.no_peers = 0, 2, 3, 0.05, True
    a.part_list = [x.strip() for x in a.parts.split(",") if x.strip()]
    if not a.part_list or set(a.part_list) - set(PARTS):
        p.error(f"--parts takes of {','.join(PARTS)}")
    try:
        a.point_list = [tuple(int(v) for v in x.lower().split("x"))
                        for x in a.points.split(",") if x.strip()]
        a.sweep_seq_list, a.sweep_q_list = int_list(a.sweep_seqs), int_list(a.sweep_q)
        gqa_q, gqa_kv = (int(v) for v in a.gqa_heads.split("/"))
        saq = parse_saq(a.saq)
    except ValueError as e:
        p.error(f"--points takes BxS_kv,..., --sweep-* integers, --gqa-heads Hq/Hkv, --saq "
                f"TOKENS:FORMAT,...,rest:FORMAT ({e})")
    if any(len(x) != 2 or min(x) <= 0 for x in a.point_list) or \
            min(a.sweep_seq_list + a.sweep_q_list + [a.sweep_batch, gqa_q, gqa_kv,
                                                      a.mha_heads, a.head_dim]) <= 0 or \
            gqa_q % gqa_kv:
        p.error("sizes must be positive, and --gqa-heads' H_q a multiple of H_kv")
    a.known_layouts = layouts(gqa_q, gqa_kv, a.mha_heads)
    wanted = [x.strip().lower() for x in a.layouts.split(",") if x.strip()]
    if not wanted or set(wanted) - set(a.known_layouts):
        p.error("--layouts takes of gqa,mha")
    a.layout_list = [a.known_layouts[w] for w in wanted]
    known = caches(saq)
    wanted = [x.strip().lower() for x in a.caches.split(",") if x.strip()]
    if not wanted or set(wanted) - set(known):
        p.error(f"--caches takes of {','.join(known)}")
    a.cache_list = [known[w] for w in wanted]
    a.peers_note = "not run (--no-peers)" if a.no_peers else "not run (--parts)"
    if a.no_peers and "peers" in a.part_list:
        a.part_list.remove("peers")
    return a


def main(argv=None, wrap_stub=None, stubs=None):
    """Exit status; wrap_stub and stubs let tests stand in for the server."""
    args = parse_args(argv)
    if not args.server and wrap_stub is None:
        print("decode_table.py: --server is required", file=sys.stderr)
        return 2
    ours = Ours(args.server or None, args, wrap_stub=wrap_stub, stubs=stubs)
    peers = DecodePeers("peers" in args.part_list)
    runner = Runner(args, ours, peers)
    device = ",".join(ours.devices.get(args.backend, [])) or "?"
    os.makedirs(args.out_dir, exist_ok=True)
    md_path = os.path.join(args.out_dir, "decode_table.md")
    json_path = os.path.join(args.out_dir, "decode_table.json")
    peers_state = (peers.error or "ok") if "peers" in args.part_list else args.peers_note

    def write():
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        header = [f"# Decode against a KV cache (issue #13), {now}, backend {args.backend}, "
                  f"device {device}", "",
                  f"PHASE_DECODE, bf16, D {args.head_dim}; server Run, CACHE_MODE_COLD, median "
                  f"of >= {args.min_iters} iterations after {args.warmup} warm-up, check "
                  f"CHECK_MODE_AUTO ({args.check_rows} rows). GB/s = WorkCounts.min_bytes (the "
                  "cache once at its stored width) / median, against the device's measured copy "
                  f"bandwidth (target >= {BANDWIDTH_TARGET}). Peers: torch SDPA (flash, cuDNN, "
                  "efficient; the best) after torch's own dequantization or page gather, cold "
                  f"L2 (target ours >= {SPEEDUP_TARGET}x faster): {peers_state}. SAQ bands "
                  f"(newest first): {args.saq}." + (" --smoke: tiny shapes on cpu_reference."
                                                    if args.smoke else ""),
                  "Command: " + " ".join(sys.argv if argv is None else ["decode_table.py", *argv])]
        meta = {"date": now, "device": device, "backend": args.backend, "server": args.server,
                "head_dim": args.head_dim, "parts": args.part_list, "saq": args.saq,
                "smoke": args.smoke, "budget_s": args.budget_s, "check_rows": args.check_rows,
                "peers": peers_state, "bandwidth_target": BANDWIDTH_TARGET,
                "speedup_target": SPEEDUP_TARGET, "script_errors": runner.errors,
                "elapsed_seconds": round(runner.elapsed(), 1)}
        write_atomic(md_path, markdown(runner.points, header, args, runner.errors))
        write_atomic(json_path, json.dumps(to_json(runner.points, meta, args), indent=1))

    return run_points(runner, write, ours, md_path, lambda p: ok(p.ours))


if __name__ == "__main__":
    sys.exit(main())
