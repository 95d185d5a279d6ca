#!/usr/bin/env python3
"""The standard attnbench table: our CUDA backends against PyTorch's attention kernels.

Grid: layouts MHA (32 heads), GQA (32 q / 8 kv), SQA (baseline 16: 8 q / 4 kv), xSQA (baseline
32: 8 q = 8 kv), GQKVA (4 query groups x 4 kv groups = 16 output heads) x causal / no mask x
S = 1k, 4k, 16k, 32k x D = 64, 128, bf16, batch max(1, 16384 // S).

Ours: each backend of --ours (default cuda_flash, cuda_unfused) through the server's Run RPC,
with a cold L2 (CACHE_MODE_COLD) and a sampled check of a few rows (or none, --check=off); the
server's median and stdev. cuda_unfused is skipped above --unfused-max-seq (its S x S scores).

Peers, timed in this process the same way (CUDA events around each iteration, warm-up first, L2
flushed before each timed iteration by writing a buffer of at least twice the L2 size outside the
timed region, median and spread over >= 10 iterations):
  * torch SDPA, FLASH_ATTENTION backend   (torch.nn.attention.sdpa_kernel)
  * torch SDPA, CUDNN_ATTENTION backend
  * FlexAttention compiled with torch.compile (slow to compile: by default only at S = 4k, 16k)
GQA and SQA go to the peers with enable_gqa=True; xSQA is plain MHA on its 8 heads; GQKVA is
plain MHA on 16 heads with Q, K, V expanded per output head (index_select outside the timed
region; marked "expanded"). A peer that errors prints "n/a" and the reason.

FLOPs (FlashAttention convention, counted once for everyone): 4 * B * H_out * S * S * D, halved
when causal. Writes standard_table.md and standard_table.json to --out-dir (default $OUT, else
/tmp) and prints the table last.

    python3 bench/standard_table.py --server=127.0.0.1:50051            # the full table
    python3 bench/standard_table.py --server=127.0.0.1:50051 --quick    # S 1k/4k, D 128, MHA+GQA
"""

import argparse
import contextlib
import datetime
import json
import math
import os
import sys
import time
from dataclasses import dataclass

from correctness import connect, import_stubs
from peer_timing import ColdL2Timer, Timing, short

CAUSAL_NAMES = {False: "none", True: "causal"}


@dataclass(frozen=True)
class Layout:
    name: str
    proto: dict          # HeadLayout as a dict for json_format.ParseDict
    query_heads: int     # Q tensor heads
    kv_heads: int        # K/V tensor heads
    out_heads: int       # H_out
    peer_form: str       # "mha", "gqa" (enable_gqa) or "expanded" (index_select per output head)
    kv_groups: int = 0   # GQKVA only


LAYOUTS = {
    "mha": Layout("MHA", {"mha": {"num_heads": 32}}, 32, 32, 32, "mha"),
    "gqa": Layout("GQA", {"gqa": {"num_query_heads": 32, "num_kv_heads": 8}}, 32, 8, 32, "gqa"),
    "sqa": Layout("SQA", {"sqa": {"baseline_heads": 16, "num_query_heads": 8, "num_kv_heads": 4}},
                  8, 4, 8, "gqa"),
    "xsqa": Layout("xSQA", {"extreme_sqa": {"baseline_heads": 32, "num_query_heads": 8}},
                   8, 8, 8, "mha"),
    "gqkva": Layout("GQKVA", {"gqkva": {"query_groups": 4, "kv_groups": 4}}, 4, 4, 16,
                    "expanded", kv_groups=4),
}


@dataclass
class Config:
    layout_key: str
    causal: bool
    seq: int
    dim: int
    batch: int

    @property
    def layout(self):
        return LAYOUTS[self.layout_key]

    def flops(self):
        f = 4.0 * self.batch * self.layout.out_heads * self.seq * self.seq * self.dim
        return f / 2 if self.causal else f


def tflops(config, timing):
    return config.flops() / (timing.median_ms * 1e-3) / 1e12 if timing.ok() else math.nan


# ---------------------------------------------------------------------------------------------
# Ours: through the server
# ---------------------------------------------------------------------------------------------


class Ours:
    """Times configs on the server's backends with Run."""

    def __init__(self, target, args):
        self.args = args
        self.grpc, self.pb, pb_grpc, self.json_format = import_stubs()
        self.channel, self.stub = connect(self.grpc, pb_grpc, target)
        caps = self.stub.GetCapabilities(self.pb.GetCapabilitiesRequest(), timeout=60)
        self.served = [b.name for b in caps.backends]
        self.devices = {b.name: [d.name for d in b.devices] for b in caps.backends}

    def request(self, config, backend):
        pb = self.pb
        spec = pb.AttentionSpec(batch_size=config.batch, seq_len_q=config.seq,
                                seq_len_kv=config.seq, head_dim_qk=config.dim,
                                dtype=pb.DTYPE_BFLOAT16, seed=int.from_bytes(os.urandom(7), "little"))
        self.json_format.ParseDict(config.layout.proto, spec.layout)
        if config.causal:
            spec.mask.causal.SetInParent()
        else:
            spec.mask.none.SetInParent()
        req = pb.RunRequest(spec=spec, backend=backend)
        m = req.measurement
        m.warmup_iterations = self.args.warmup
        m.min_iterations = self.args.min_iters
        m.max_iterations = self.args.max_iters
        m.max_duration_seconds = self.args.target_seconds
        m.cache_mode = pb.CACHE_MODE_COLD
        if self.args.check == "off":
            req.check.mode = pb.CHECK_MODE_OFF
        else:
            req.check.mode = pb.CHECK_MODE_AUTO
            req.check.max_sampled_rows = self.args.check_rows
        return req

    def measure(self, config, backend):
        if backend not in self.served:
            return Timing(error=f"{backend} not served")
        if backend == "cuda_unfused" and config.seq > self.args.unfused_max_seq:
            return Timing(error=f"skipped: S > --unfused-max-seq={self.args.unfused_max_seq}")
        try:
            response = self.stub.Run(self.request(config, backend), timeout=self.args.rpc_timeout)
        except self.grpc.RpcError as e:
            return Timing(error=f"{e.code().name}: {e.details()}")
        r = response.result
        t = Timing(median_ms=r.timing.median_ms, stdev_ms=r.timing.stdev_ms,
                   min_ms=r.timing.min_ms, count=r.timing.count)
        t.extra = {"server_tflops_flash_convention": r.throughput.achieved_tflops_flash_convention,
                   "server_flops_flash_convention": r.work.flops_flash_convention,
                   "device": r.device.name,
                   "kernel": r.kernel,
                   "sm_clock_mhz_before": r.device.sm_clock_mhz_before,
                   "sm_clock_mhz_after": r.device.sm_clock_mhz_after,
                   "checked_rows": r.correctness.rows_checked,
                   "relative_error": r.correctness.relative_error,
                   "check_passed": r.correctness.passed}
        if r.correctness.checked and not r.correctness.passed:
            t.note = f"CHECK FAILED rel={r.correctness.relative_error:.2e}"
        return t

    def close(self):
        self.channel.close()


# ---------------------------------------------------------------------------------------------
# Peers: PyTorch in this process
# ---------------------------------------------------------------------------------------------


class Peers:
    """SDPA (flash, cuDNN) and FlexAttention, timed with CUDA events and a cold L2."""

    def __init__(self, args):
        self.args = args
        self.torch = None
        self.error = ""
        try:
            import torch
            import torch.nn.functional as functional
            from torch.nn.attention import SDPBackend, sdpa_kernel
        except ImportError as e:
            self.error = f"torch not importable: {e}"
            return
        if not torch.cuda.is_available():
            self.error = "torch sees no CUDA device"
            return
        self.torch, self.F, self.SDPBackend, self.sdpa_kernel = (torch, functional, SDPBackend,
                                                                 sdpa_kernel)
        self.device_name = torch.cuda.get_device_properties(0).name
        self.timer = ColdL2Timer(torch)
        self.flush_bytes = self.timer.flush_bytes
        self.flex = None
        self.flex_compile_seconds = 0.0

    def time(self, fn):
        """Median/spread in ms of fn over >= min_iters iterations, each after an L2 flush."""
        args = self.args
        return self.timer.time(fn, warmup=args.warmup, min_iters=args.min_iters,
                               max_iters=args.max_iters, target_seconds=args.target_seconds)

    def inputs(self, config):
        """(q, k, v) as [B, H, S, D] views of BSHD storage, the form the peers take, and whether
        enable_gqa is needed and whether the heads were expanded."""
        torch = self.torch
        layout = config.layout
        b, s, d = config.batch, config.seq, config.dim

        def bshd(heads):
            return torch.randn(b, s, heads, d, dtype=torch.bfloat16, device="cuda")

        q, k, v = bshd(layout.query_heads), bshd(layout.kv_heads), bshd(layout.kv_heads)
        if layout.peer_form == "expanded":
            out = torch.arange(layout.out_heads, device="cuda")
            q = q.index_select(2, out // layout.kv_groups)
            k = k.index_select(2, out % layout.kv_groups)
            v = v.index_select(2, out % layout.kv_groups)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def sdpa(self, config, qkv):
        gqa = config.layout.peer_form == "gqa"
        q, k, v = qkv
        F = self.F

        def fn():
            return F.scaled_dot_product_attention(q, k, v, is_causal=config.causal,
                                                  enable_gqa=gqa)
        return fn

    def flex_fn(self, config, qkv):
        torch = self.torch
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
        if self.flex is None:
            dynamo = torch._dynamo.config
            for name in ("cache_size_limit", "recompile_limit"):
                if hasattr(dynamo, name):
                    setattr(dynamo, name, 1024)
            self.flex = torch.compile(flex_attention, dynamic=False)
        q, k, v = qkv
        block_mask = None
        if config.causal:
            def causal(b, h, q_idx, kv_idx):
                return q_idx >= kv_idx
            block_mask = create_block_mask(causal, None, None, config.seq, config.seq,
                                           device="cuda")
        gqa = config.layout.peer_form == "gqa"

        def fn():
            return self.flex(q, k, v, block_mask=block_mask, enable_gqa=gqa)
        return fn

    def measure(self, config, names):
        """{peer name: Timing} for the peers in `names` (of flash, cudnn, flex)."""
        if self.error:
            return {name: Timing(error=self.error) for name in names}
        torch = self.torch
        try:
            qkv = self.inputs(config)
        except Exception as e:  # noqa: BLE001 - any failure is reported, not fatal
            return {name: Timing(error=f"inputs: {short(e)}") for name in names}
        # SDPA's backend is pinned by a context entered outside the timed region.
        makers = {"flash": (lambda: self.sdpa(config, qkv),
                            lambda: self.sdpa_kernel(self.SDPBackend.FLASH_ATTENTION)),
                  "cudnn": (lambda: self.sdpa(config, qkv),
                            lambda: self.sdpa_kernel(self.SDPBackend.CUDNN_ATTENTION)),
                  "flex": (lambda: self.flex_fn(config, qkv), contextlib.nullcontext)}
        results = {}
        for name in names:
            make, context = makers[name]
            try:
                fn = make()
                with context():
                    first_call_s = time.monotonic()
                    fn()  # for Flex, this call compiles
                    torch.cuda.synchronize()
                    first_call_s = time.monotonic() - first_call_s
                    t = self.time(fn)
                if name == "flex":
                    self.flex_compile_seconds += first_call_s
                    t.extra["first_call_seconds"] = round(first_call_s, 2)
                if config.layout.peer_form == "expanded":
                    t.note = "expanded"
            except Exception as e:  # noqa: BLE001 - a refusing peer is "n/a", not fatal
                t = Timing(error=short(e))
            results[name] = t
        del qkv
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        return results


# ---------------------------------------------------------------------------------------------
# Table
# ---------------------------------------------------------------------------------------------


def cell(config, timing):
    if timing is None:
        return "-"
    if not timing.ok():
        return "skip" if timing.error.startswith(("skipped", "not run")) else "n/a"
    value = tflops(config, timing)
    value = f"{value:.1f}" if value >= 10 else f"{value:.3g}"
    if timing.note:
        value += f" ({timing.note})"
    return value


def ratio(config, ours, peer):
    if ours is None or peer is None or not ours.ok() or not peer.ok():
        return "n/a"
    return f"{tflops(config, ours) / tflops(config, peer):.2f}"


def markdown(rows, ours_backends, header_lines):
    primary = ours_backends[0] if ours_backends else ""
    ours_cols = [f"ours {b} TFLOP/s" for b in ours_backends]
    head = (["layout", "mask", "S", "D", "B"] + ours_cols +
            ["flash TFLOP/s", "cuDNN TFLOP/s", "flex TFLOP/s",
             "ours/flash", "ours/cuDNN"])
    header_lines = list(header_lines) + [f"Ratios ours/flash and ours/cuDNN use {primary}; "
                                         "n/a: failed or refused (reasons below), skip: not run."]
    lines = header_lines + ["", "| " + " | ".join(head) + " |",
                                  "|" + "|".join("---" for _ in head) + "|"]
    reasons = {}
    for row in rows:
        c = row["config"]
        t = row["timings"]
        cells = [c.layout.name, CAUSAL_NAMES[c.causal], f"{c.seq // 1024}k" if c.seq % 1024 == 0
                 else str(c.seq), str(c.dim), str(c.batch)]
        cells += [cell(c, t.get(b)) for b in ours_backends]
        cells += [cell(c, t.get(p)) for p in ("flash", "cudnn", "flex")]
        cells += [ratio(c, t.get(primary), t.get("flash")), ratio(c, t.get(primary), t.get("cudnn"))]
        lines.append("| " + " | ".join(cells) + " |")
        for name, timing in t.items():
            if timing is not None and timing.error:
                reasons.setdefault((name, timing.error), []).append(
                    f"{c.layout.name}/{CAUSAL_NAMES[c.causal]}/{c.seq}/{c.dim}")
    if reasons:
        lines += ["", "n/a reasons:"]
        for (name, error), where in reasons.items():
            shown = ", ".join(where[:4]) + (f" (+{len(where) - 4} more)" if len(where) > 4 else "")
            lines.append(f"- {name}: {error} [{shown}]")
    return "\n".join(lines) + "\n"


def to_json(rows, meta):
    out = {"meta": meta, "rows": []}
    for row in rows:
        c = row["config"]
        entry = {"layout": c.layout.name, "mask": CAUSAL_NAMES[c.causal], "seq": c.seq,
                 "head_dim": c.dim, "batch": c.batch, "out_heads": c.layout.out_heads,
                 "flops_flash_convention": c.flops(), "results": {}}
        for name, t in row["timings"].items():
            if t is None:
                continue
            entry["results"][name] = {
                "tflops": None if not t.ok() else round(tflops(c, t), 3),
                "median_ms": t.median_ms if t.ok() else None,
                "stdev_ms": t.stdev_ms if t.ok() else None,
                "min_ms": t.min_ms if t.ok() else None,
                "count": t.count, "error": t.error, "note": t.note, **t.extra}
        out["rows"].append(entry)
    return out


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def int_list(text):
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="The standard attnbench table against PyTorch.")
    parser.add_argument("--server", default="", help="gRPC target of attnbench-server "
                        "(empty: peers only, ours n/a)")
    parser.add_argument("--ours", default="cuda_flash,cuda_unfused",
                        help="our backends, the first is the one the ratios use (%(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="S 1k, 4k; D 128; MHA and GQA; no Flex unless --flex-seq is given")
    parser.add_argument("--layouts", default=None,
                        help=f"of {','.join(LAYOUTS)} (default: all; --quick: mha,gqa)")
    parser.add_argument("--seqs", default=None,
                        help="sequence lengths (default: 1024,4096,16384,32768; --quick: 1024,4096)")
    parser.add_argument("--dims", default=None, help="head dims (default: 64,128; --quick: 128)")
    parser.add_argument("--masks", default="none,causal", help="none and/or causal")
    parser.add_argument("--batch-tokens", type=int, default=16384,
                        help="batch = max(1, this // S) (default: %(default)s)")
    parser.add_argument("--flex-seq", default=None,
                        help="sequence lengths where Flex runs (default 4096,16384; "
                             "'none' disables; --quick defaults to none)")
    parser.add_argument("--no-flex", action="store_true", help="never run FlexAttention")
    parser.add_argument("--no-peers", action="store_true", help="only our backends")
    parser.add_argument("--unfused-max-seq", type=int, default=8192,
                        help="largest S for cuda_unfused (S x S scores; default: %(default)s)")
    parser.add_argument("--check", choices=("sampled", "off"), default="sampled",
                        help="our runs: a sampled check of --check-rows rows, or none")
    parser.add_argument("--check-rows", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--min-iters", type=int, default=10)
    parser.add_argument("--max-iters", type=int, default=50)
    parser.add_argument("--target-seconds", type=float, default=0.5,
                        help="measuring time per config and timer (after --min-iters)")
    parser.add_argument("--rpc-timeout", type=float, default=300.0)
    parser.add_argument("--time-budget", type=float, default=0.0,
                        help="seconds; configs not started by then are skipped (0: no limit)")
    parser.add_argument("--out-dir", default=os.environ.get("OUT") or "/tmp",
                        help="where standard_table.md/.json go (default: $OUT, else /tmp)")
    args = parser.parse_args(argv)
    defaults = {"seqs": "1024,4096,16384,32768", "dims": "64,128",
                "layouts": ",".join(LAYOUTS), "flex_seq": "4096,16384"}
    if args.quick:
        defaults.update(seqs="1024,4096", dims="128", layouts="mha,gqa", flex_seq="none")
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.flex_seq = [] if args.no_flex or args.flex_seq == "none" else int_list(args.flex_seq)
    args.layouts = [x for x in args.layouts.split(",") if x]
    unknown = [x for x in args.layouts if x not in LAYOUTS]
    if unknown:
        parser.error(f"unknown layouts {unknown}")
    args.masks = [x for x in args.masks.split(",") if x]
    if any(m not in ("none", "causal") for m in args.masks):
        parser.error("--masks takes none and/or causal")
    args.seqs, args.dims = int_list(args.seqs), int_list(args.dims)
    args.ours = [x for x in args.ours.split(",") if x]
    if args.min_iters < 10:
        parser.error("--min-iters must be >= 10")
    return args


def configs(args):
    """Table order: layout, mask, S, D."""
    out = []
    for key in args.layouts:
        for mask in args.masks:
            for seq in args.seqs:
                for dim in args.dims:
                    out.append(Config(key, mask == "causal", seq, dim,
                                      max(1, args.batch_tokens // seq)))
    return out


def print_progress(config, timings):
    summary = "  ".join(f"{name}={cell(config, t)}" for name, t in timings.items())
    print(f"[table] {config.layout.name:<5} {CAUSAL_NAMES[config.causal]:<6} S={config.seq:<6} "
          f"D={config.dim:<3} B={config.batch:<2} {summary}", flush=True)


def main(argv=None):
    args = parse_args(argv)
    start = time.monotonic()
    ours = Ours(args.server, args) if args.server else None
    peers = None if args.no_peers else Peers(args)
    grid = configs(args)
    device = (peers.device_name if peers is not None and not peers.error else
              ",".join(sum(ours.devices.values(), [])) if ours else "?")
    print(f"[table] {len(grid)} configs; ours {','.join(args.ours)} via "
          f"{args.server or '(no server)'}; peers "
          f"{'off' if peers is None else (peers.error or 'torch ' + peers.torch.__version__)}; "
          f"device {device}", flush=True)

    def over_budget(reserve_s=0.0):
        return args.time_budget and time.monotonic() - start > args.time_budget - reserve_s

    rows = []
    # Ours and SDPA first, cheapest configs first, so a time budget cuts the largest ones; Flex,
    # slow to compile, in a second pass over its sequence lengths.
    for config in sorted(grid, key=lambda c: (c.seq, c.dim)):
        timings = {}
        skipped = Timing(error="skipped: time budget") if over_budget() else None
        for backend in args.ours:
            if skipped:
                timings[backend] = skipped
            elif ours is None:
                timings[backend] = Timing(error="no --server")
            else:
                timings[backend] = ours.measure(config, backend)
        if peers is not None:
            if skipped:
                timings.update(flash=skipped, cudnn=skipped)
            else:
                timings.update(peers.measure(config, ("flash", "cudnn")))
            timings["flex"] = (Timing(error="not run at this S (see --flex-seq)")
                               if config.seq not in args.flex_seq else skipped)
        rows.append({"config": config, "timings": timings})
        print_progress(config, timings)
    if peers is not None:
        for row in rows:
            config, timings = row["config"], row["timings"]
            if config.seq not in args.flex_seq or timings["flex"] is not None:
                continue
            # A compile takes a while: start one only with some budget left.
            if over_budget(reserve_s=45):
                timings["flex"] = Timing(error="skipped: time budget")
                continue
            timings.update(peers.measure(config, ("flex",)))
            print_progress(config, {"flex": timings["flex"]})
    if ours is not None:
        ours.close()
    order = {key: i for i, key in enumerate(args.layouts)}
    rows.sort(key=lambda r: (order[r["config"].layout_key], r["config"].causal, r["config"].seq,
                             r["config"].dim))

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    flex_note = (f"Flex only at S in {args.flex_seq} (torch.compile; slow to compile)"
                 if args.flex_seq else "Flex not run")
    torch_version = peers.torch.__version__ if peers is not None and peers.torch else "n/a"
    header = [
        f"Standard table, {now}, device {device}, torch {torch_version}, bf16, "
        f"FLOPs = 4*B*H_out*S*S*D (halved when causal).",
        f"Ours: server Run, CACHE_MODE_COLD, check {args.check}, median of >= {args.min_iters} "
        f"iterations. Peers: CUDA events, L2 flushed ({(peers.flush_bytes >> 20) if peers and not peers.error else '?'} MiB "
        f"written) before each of >= {args.min_iters} timed iterations, median. {flex_note}. "
        f"GQKVA peers run on K/V (and Q) expanded per output head.",
    ]
    table = markdown(rows, args.ours, header)
    meta = {"date": now, "device": device, "torch": torch_version, "argv": sys.argv,
            "server": args.server, "flex_seq": args.flex_seq,
            "flex_compile_seconds": round(peers.flex_compile_seconds, 1) if peers and not
            peers.error else 0, "elapsed_seconds": round(time.monotonic() - start, 1)}
    os.makedirs(args.out_dir, exist_ok=True)
    md_path = os.path.join(args.out_dir, "standard_table.md")
    json_path = os.path.join(args.out_dir, "standard_table.json")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(table)
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(to_json(rows, meta), f, indent=1)
    print(f"[table] wrote {md_path} and {json_path} in {meta['elapsed_seconds']} s\n", flush=True)
    print(table, flush=True)
    return verdict(rows, args)


def verdict(rows, args):
    """0, or 1 when a sampled check of ours failed or the first of --ours measured nothing."""
    if not args.server or not args.ours:
        return 0
    failed_checks = [r for r in rows for b in args.ours
                     if r["timings"].get(b) is not None and "CHECK FAILED" in r["timings"][b].note]
    measured = [r for r in rows if r["timings"][args.ours[0]].ok()]
    print(f"[table] {args.ours[0]} measured {len(measured)}/{len(rows)} configs; "
          f"{len(failed_checks)} sampled checks failed", flush=True)
    return 1 if failed_checks or not measured else 0


if __name__ == "__main__":
    sys.exit(main())
