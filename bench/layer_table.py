"""Issue #14's layer targets through the service: one attention layer (SCOPE_LAYER, docs/variants.md
§6) at d_model 4096 with 32 heads of dim 128, bf16, causal, S 4k-32k, measured three ways in one
call:

  * the layer's forward on --backend, with RunResult.layer_timing splitting the same iterations
    into projections (X W_q, X W_k, X W_v and O W_o) and core;
  * the core alone (SCOPE_CORE, the same problem otherwise) on the same backend;
  * the projections' GEMMs alone through torch (cuBLAS: bf16 operands, float32 accumulation, bf16
    results, the same shapes, each timed with the L2 flushed as the server times), where torch
    with CUDA is importable.

Two targets are judged on each point: the projections at >= 85% of cuBLAS's rate on the same
shapes (torch GEMMs ms / our projections ms >= 0.85), and the layer within 5% of projections and
core measured apart (layer ms <= 1.05 x (torch GEMMs ms + core ms)). Without torch the second uses
our own projections median instead (marked 'ours'), and the first is not judged. A missed target
is reported, not a failure: the exit status is 1 on a failed check, WorkCounts.projection_flops
differing from §7, or nothing measured.

    python3 bench/layer_table.py --server=127.0.0.1:50051                 # S 4k, 8k, 16k, 32k
    python3 bench/layer_table.py --server=127.0.0.1:50051 --layouts=mha,gqa
    python3 bench/layer_table.py --server=127.0.0.1:50051 --smoke         # tiny, cpu_reference

Writes layer_table.md and layer_table.json to --out-dir (default $OUT, else /tmp).
"""

import argparse
import datetime
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, field

from peer_timing import Timing, cuda_torch, short
import sqa_table
from sqa_table import (Layout, Ours, add_measurement_args, close, projection_flops, run_points,
                       write_atomic)

PROJECTION_RATE_TARGET = 0.85  # of cuBLAS's rate on the same shapes
SUM_TARGET = 1.05              # layer time over projections + core measured apart


def layouts(heads):
    return {"mha": Layout("MHA", {"mha": {"num_heads": heads}}, heads, heads, heads),
            "gqa": Layout("GQA", {"gqa": {"num_query_heads": heads,
                                          "num_kv_heads": max(1, heads // 4)}},
                          heads, max(1, heads // 4), heads)}


@dataclass
class Point:
    layout: Layout
    batch: int
    seq: int
    layer: Timing = None   # the layer's forward (extra: projections_ms, core_ms, counts)
    core: Timing = None    # SCOPE_CORE alone
    gemms: Timing = None   # torch's four GEMMs alone, summed
    failed: list = field(default_factory=list)

    def projection_rate(self):
        """torch GEMMs ms / our projections ms (>= 0.85 meets the target), or None."""
        if not ok(self.layer) or not ok(self.gemms) or "projections_ms" not in self.layer.extra:
            return None
        return self.gemms.median_ms / self.layer.extra["projections_ms"]

    def apart_ms(self):
        """(projections ms measured apart, where from): torch's, else our own split's."""
        if ok(self.gemms):
            return self.gemms.median_ms, "torch"
        if ok(self.layer) and "projections_ms" in self.layer.extra:
            return self.layer.extra["projections_ms"], "ours"
        return None, ""

    def sum_ratio(self):
        """layer ms / (projections + core measured apart) (<= 1.05 meets the target), or None."""
        proj, _ = self.apart_ms()
        if proj is None or not ok(self.layer) or not ok(self.core):
            return None
        return self.layer.median_ms / (proj + self.core.median_ms)


def ok(t):
    return t is not None and t.ok()


class TorchGemms:
    """The layer's four products through torch.matmul (cuBLAS) on the same shapes, or why not."""

    def __init__(self, enabled):
        self.torch, self.timer, self.error = cuda_torch(enabled)

    def time(self, p, d_model, dim, args):
        if self.torch is None:
            return Timing(error=self.error)
        torch = self.torch
        tokens = p.batch * p.seq
        lay = p.layout
        try:
            x = torch.randn(tokens, d_model, device="cuda", dtype=torch.bfloat16)
            w = [torch.randn(d_model, n * dim, device="cuda", dtype=torch.bfloat16)
                 for n in (lay.heads_q, lay.heads_kv, lay.heads_kv)]
            o = torch.randn(tokens, lay.heads_out * dim, device="cuda", dtype=torch.bfloat16)
            w_o = torch.randn(lay.heads_out * dim, d_model, device="cuda", dtype=torch.bfloat16)

            def products():
                for weight in w:
                    torch.matmul(x, weight)
                torch.matmul(o, w_o)

            t = self.timer.time(products, warmup=args.warmup, min_iters=args.min_iters,
                                max_iters=args.max_iters, target_seconds=args.target_seconds)
            del x, w, o, w_o
            torch.cuda.empty_cache()
            return t
        except Exception as e:  # noqa: BLE001 - out of memory or the like: that point has none
            return Timing(error=short(e))


class Runner:
    def __init__(self, args, ours, gemms, say=None):
        self.args, self.ours, self.gemms = args, ours, gemms
        self.start = time.monotonic()
        self.points = []
        self.errors = []
        self.say = say or (lambda text: print(f"[layer] {text}", flush=True))

    def elapsed(self):
        return time.monotonic() - self.start

    def request(self, p, scope):
        pb, a = self.ours.pb, self.args
        spec = pb.AttentionSpec(batch_size=p.batch, seq_len_q=p.seq, seq_len_kv=p.seq,
                                head_dim_qk=a.head_dim, dtype=pb.DTYPE_BFLOAT16,
                                seed=int.from_bytes(os.urandom(7), "little"))
        self.ours.json_format.ParseDict(p.layout.proto, spec.layout)
        if a.mask == "causal":
            spec.mask.causal.SetInParent()
        if scope == "layer":
            spec.scope = pb.SCOPE_LAYER
            spec.d_model = a.d_model
        else:
            spec.scope = pb.SCOPE_CORE
        return self.ours.settings(pb.RunRequest(spec=spec, backend=a.backend))

    def measure(self, p):
        a = self.args
        layer, result = self.ours.run(self.request(p, "layer"))
        p.layer = layer
        if result is not None:
            want = projection_flops(p.layout, p.batch, p.seq, d_model=a.d_model, dim=a.head_dim)
            if not close(layer.extra["projection_flops"], want):
                p.failed.append(f"WorkCounts.projection_flops {layer.extra['projection_flops']:.6g}"
                                f" != §7 {want:.6g}")
            if "projections_ms" not in layer.extra:
                p.failed.append("no RunResult.layer_timing on a layer run")
        p.core, _ = self.ours.run(self.request(p, "core"))
        p.gemms = self.gemms.time(p, a.d_model, a.head_dim, a)
        for what, t in (("layer", p.layer), ("core", p.core)):
            if t.ok() and t.extra.get("check") == "FAIL":
                p.failed.append(f"{what} check failed: relative error "
                                f"{t.extra['relative_error']:.3g} > {t.extra['tolerance']:.3g}")
        self.say(line(p))

    def run(self, write=lambda: None):
        for seq in self.args.seqs:
            for lay in self.args.layout_list:
                p = Point(lay, self.args.batch, seq)
                self.points.append(p)
                if self.args.budget_s and self.elapsed() > self.args.budget_s:
                    p.layer = p.core = p.gemms = Timing(error="skipped: time budget")
                    continue
                try:
                    self.measure(p)
                except Exception as e:  # noqa: BLE001 - a broken point is recorded
                    self.errors.append(f"S={seq} {lay.name}: {type(e).__name__}: {e}")
                    self.say(f"ERROR S={seq} {lay.name}:\n{traceback.format_exc()}")
                    p.failed.append(f"script error: {e}")
                write()


def fmt(t):
    return f"{t.median_ms:.4g}" if ok(t) else "-"


def fmt_ratio(x, target, above):
    if x is None:
        return "-"
    met = x >= target if above else x <= target
    return f"{x:.3f} ({'met' if met else 'missed'})"


def line(p):
    e = p.layer.extra if ok(p.layer) else {}
    split = (f"{e['projections_ms']:.4g} / {e['core_ms']:.4g}" if "projections_ms" in e
             else "-")
    gemms = fmt(p.gemms) if ok(p.gemms) else f"- ({p.gemms.error})"
    text = (f"S={p.seq:<6} {p.layout.name:<4} layer {fmt(p.layer)} ms (proj / core {split}), "
            f"core alone {fmt(p.core)}, torch GEMMs {gemms}; rate "
            f"{fmt_ratio(p.projection_rate(), PROJECTION_RATE_TARGET, True)}, sum "
            f"{fmt_ratio(p.sum_ratio(), SUM_TARGET, False)}")
    return text + (f" FAIL: {'; '.join(p.failed)}" if p.failed else "")


def markdown(points, header, errors):
    head = ["S", "layout", "layer ms [p10-p90]", "proj / core ms (split)", "core alone ms",
            "torch GEMMs ms", "proj rate vs cuBLAS (>= 0.85)",
            "layer / (proj + core apart) (<= 1.05)", "check", "st"]
    lines = list(header) + ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = {}
    for p in points:
        e = p.layer.extra if ok(p.layer) else {}
        layer = fmt(p.layer) + (f" [{p.layer.p10_ms:.4g}-{p.layer.p90_ms:.4g}]"
                                if ok(p.layer) else "")
        split = (f"{e['projections_ms']:.4g} / {e['core_ms']:.4g}" if "projections_ms" in e
                 else "-")
        _, source = p.apart_ms()
        checks = "/".join(t.extra.get("check", "") for t in (p.layer, p.core) if ok(t)) or "-"
        status = "FAIL" if p.failed else ("ok" if ok(p.layer) else "n/a")
        lines.append("| " + " | ".join([
            f"{p.seq:,}", p.layout.name, layer, split, fmt(p.core), fmt(p.gemms),
            fmt_ratio(p.projection_rate(), PROJECTION_RATE_TARGET, True),
            fmt_ratio(p.sum_ratio(), SUM_TARGET, False) + (" ours" if source == "ours" else ""),
            checks, status]) + " |")
        for what, t in (("layer", p.layer), ("core", p.core), ("torch GEMMs", p.gemms)):
            if t is not None and t.error:
                notes.setdefault(f"{what}: {t.error}", []).append(f"{p.seq}/{p.layout.name}")
    if notes:
        lines += ["", "Notes:"] + [f"- {k} [{', '.join(v)}]" for k, v in notes.items()]
    failed = [p for p in points if p.failed]
    if failed:
        lines += ["", "Failures:"] + [f"- {p.seq}/{p.layout.name}: {'; '.join(p.failed)}"
                                      for p in failed]
    if errors:
        lines += ["", "Script errors:"] + [f"- {e}" for e in errors]
    return "\n".join(lines) + "\n"


def timing_json(t):
    return sqa_table.timing_json(t)


def to_json(points, meta):
    return {"meta": meta, "points": [{
        "seq": p.seq, "batch": p.batch, "layout": p.layout.name, "heads_q": p.layout.heads_q,
        "heads_kv": p.layout.heads_kv, "layer": timing_json(p.layer), "core": timing_json(p.core),
        "torch_gemms": timing_json(p.gemms), "projection_rate_vs_cublas": p.projection_rate(),
        "layer_over_parts": p.sum_ratio(), "parts_projections_from": p.apart_ms()[1],
        "failed": p.failed} for p in points]}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", default="", help="gRPC target of attnbench-server (required)")
    p.add_argument("--backend", default="cuda_flash")
    p.add_argument("--seqs", default="4096,8192,16384,32768")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--layouts", default="mha", help="of mha,gqa (GQA: heads/4 KV heads)")
    p.add_argument("--d-model", type=int, default=4096)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--mask", choices=("causal", "none"), default="causal")
    p.add_argument("--no-peers", action="store_true", help="no torch GEMMs")
    p.add_argument("--smoke", action="store_true",
                   help="d_model 64, 4 heads of dim 16, S 32 and 48 on cpu_reference, no torch")
    add_measurement_args(p, budget_s=300.0)
    a = p.parse_args(argv)
    if a.smoke:
        a.backend, a.d_model, a.heads, a.head_dim, a.seqs = "cpu_reference", 64, 4, 16, "32,48"
        a.warmup, a.min_iters, a.max_iters, a.target_seconds, a.no_peers = 0, 2, 3, 0.05, True
    try:
        a.seqs = [int(s) for s in a.seqs.split(",") if s.strip()]
    except ValueError:
        p.error("--seqs takes comma-separated integers")
    known = layouts(a.heads)
    wanted = [x.strip().lower() for x in a.layouts.split(",") if x.strip()]
    if not wanted or any(w not in known for w in wanted):
        p.error(f"--layouts takes of {','.join(known)}")
    a.layout_list = [known[w] for w in wanted]
    if not a.seqs or min(a.seqs) <= 0 or a.batch <= 0:
        p.error("--seqs and --batch must be positive")
    return a


def main(argv=None, wrap_stub=None, stubs=None):
    """Exit status; wrap_stub and stubs let tests stand in for the server."""
    args = parse_args(argv)
    if not args.server and wrap_stub is None:
        print("layer_table.py: --server is required", file=sys.stderr)
        return 2
    ours = Ours(args.server or None, args, wrap_stub=wrap_stub, stubs=stubs)
    runner = Runner(args, ours, TorchGemms(not args.no_peers))
    device = ",".join(ours.devices.get(args.backend, [])) or "?"
    os.makedirs(args.out_dir, exist_ok=True)
    md_path = os.path.join(args.out_dir, "layer_table.md")
    json_path = os.path.join(args.out_dir, "layer_table.json")

    def write():
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        header = [f"# One attention layer's forward against its parts, {now}, backend "
                  f"{args.backend}, device {device}", "",
                  f"SCOPE_LAYER, d_model {args.d_model}, {args.heads} heads of dim "
                  f"{args.head_dim}, {args.mask}, bf16, B {args.batch}; server Run, "
                  f"CACHE_MODE_COLD, median of >= {args.min_iters} iterations; the core alone at "
                  "SCOPE_CORE; torch's four GEMMs (X W_q, X W_k, X W_v, O W_o) with a cold L2. "
                  "Targets (issue #14): projections >= 0.85 of cuBLAS's rate, layer <= 1.05 x "
                  "(projections + core measured apart).",
                  "Command: " + " ".join(sys.argv if argv is None else ["layer_table.py", *argv])]
        meta = {"date": now, "device": device, "backend": args.backend, "d_model": args.d_model,
                "heads": args.heads, "head_dim": args.head_dim, "mask": args.mask,
                "batch": args.batch, "torch": runner.gemms.error or "ok",
                "script_errors": runner.errors, "elapsed_seconds": round(runner.elapsed(), 1)}
        write_atomic(md_path, markdown(runner.points, header, runner.errors))
        write_atomic(json_path, json.dumps(to_json(runner.points, meta), indent=1))

    return run_points(runner, write, ours, md_path, lambda p: ok(p.layer))


if __name__ == "__main__":
    sys.exit(main())
