"""Timing helpers shared by the benchmark scripts (standard_table.py, variants_table.py,
layer_table.py, decode_table.py).

`Timing` is one measurement in ms (or why there is none); `ColdL2Timer` times a callable the way
the server times its kernels and the project's rules require of peers: warm-up iterations first
(excluded), then CUDA events around each iteration with the L2 flushed before it by writing a
buffer of at least twice the L2 size outside the timed region, and the median, p10/p90 and
spread of the samples. Percentiles and the standard deviation follow server/stats.cc (linear
interpolation between order statistics; the sample standard deviation), so the peers' numbers
and the server's compare directly.

torch is never imported at module level: ColdL2Timer is handed the module, and `cuda_torch`
imports it only when a script asks for its peers, so everything else stays importable and testable
on a machine without it.
"""

import math
import statistics
from dataclasses import dataclass, field


@dataclass
class Timing:
    """A measurement in ms, or why there is none."""
    median_ms: float = math.nan
    stdev_ms: float = math.nan
    min_ms: float = math.nan
    count: int = 0
    error: str = ""
    note: str = ""
    extra: dict = field(default_factory=dict)
    p10_ms: float = math.nan
    p90_ms: float = math.nan

    def ok(self):
        return not self.error and self.median_ms > 0


def percentile(sorted_samples, q):
    """The q-quantile (0 <= q <= 1) of ascending samples, interpolated as server/stats.cc does."""
    if not sorted_samples:
        return math.nan
    q = min(max(q, 0.0), 1.0)
    rank = q * (len(sorted_samples) - 1)
    lo = int(math.floor(rank))
    hi = min(lo + 1, len(sorted_samples) - 1)
    return sorted_samples[lo] + (sorted_samples[hi] - sorted_samples[lo]) * (rank - lo)


def timing_from_samples(samples_ms):
    """Timing of per-iteration samples: median, p10, p90, min, sample standard deviation."""
    s = sorted(samples_ms)
    if not s:
        return Timing(error="no samples")
    return Timing(median_ms=percentile(s, 0.5), p10_ms=percentile(s, 0.1),
                  p90_ms=percentile(s, 0.9), min_ms=s[0],
                  stdev_ms=statistics.stdev(s) if len(s) >= 2 else 0.0, count=len(s))


class ColdL2Timer:
    """CUDA-event timing with a cold L2, for callables that enqueue work on the current stream."""

    def __init__(self, torch, device=0):
        self.torch = torch
        props = torch.cuda.get_device_properties(device)
        l2_bytes = getattr(props, "L2_cache_size", 0) or (50 << 20)
        self.flush_bytes = max(2 * l2_bytes, 128 << 20)
        self.flush_buffer = torch.empty(self.flush_bytes, dtype=torch.uint8, device="cuda")

    def flush_l2(self):
        self.flush_buffer.fill_(0x5A)

    def time(self, fn, warmup=3, min_iters=10, max_iters=50, target_seconds=0.5):
        """Timing of fn over >= min_iters (and <= max_iters) iterations, each after an L2 flush,
        sized to take about target_seconds after warmup iterations that are not timed."""
        torch = self.torch
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize()
        # Size the run from one flushed, timed iteration.
        self.flush_l2()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        estimate_ms = max(start.elapsed_time(end), 1e-3)
        iters = int(min(max_iters, max(min_iters, target_seconds * 1e3 / estimate_ms)))
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        for i in range(iters):
            self.flush_l2()
            starts[i].record()
            fn()
            ends[i].record()
        torch.cuda.synchronize()
        return timing_from_samples([s.elapsed_time(e) for s, e in zip(starts, ends)])


def cuda_torch(enabled=True):
    """(torch, a ColdL2Timer, "") when torch imports and sees a CUDA device, else (None, None, why
    not): the peers' reason on a machine without them ("not run (--no-peers)" when `enabled` is
    false)."""
    if not enabled:
        return None, None, "not run (--no-peers)"
    try:
        import torch  # noqa: PLC0415 - optional: only on a GPU machine
        if not torch.cuda.is_available():
            return None, None, "torch has no CUDA device"
        return torch, ColdL2Timer(torch), ""
    except Exception as e:  # noqa: BLE001 - any import or set-up problem means no peer
        return None, None, f"no torch: {short(e)}"


def short(exc, limit=160):
    """One line naming an exception, at most `limit` characters."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[:limit - 3] + "..."
