"""Issue #16, item 3: do the server's kernel timings agree with Nsight Compute's, and how much
does the service itself cost around a measured kernel?

Three shapes (short: S 1k, long: S 16k, causal: S 8k; MHA, D 128, bf16; the batch sized so each
kernel takes about a millisecond or more) run through the server with a fixed number of
iterations and every sample returned. The `profiler` stage of bench/device_run.sh runs them twice:

  1. `--phase=overhead` against a plain server: the service overhead of each shape, from the client's
     own clock: (RPC seconds - preparation - the sum of every timed iteration) per iteration, with
     the L2 warm (no flush between iterations) so that only the service's work is left; judged
     against 1% of the shape's median kernel time.
  2. `--phase=run` again against the server started under
       ncu --target-processes all --kernel-name regex:K --metrics gpu__time_duration.sum
           --clock-control none --cache-control none
     (one metric in one pass: no replay, nothing added between the server's CUDA events; the
     server flushes the L2 itself before each iteration, as always). The script writes what it
     asked for and what the server measured to --runs.
  3. `--phase=compare --runs=FILE --ncu-csv=FILE` (the CSV of `ncu --import REPORT --csv --page raw
     --metrics gpu__time_duration.sum`): the profiled launches, in launch order, are the runs'
     iterations in order (warm-up included); the median of each run's measured launches against
     the server's median, judged within 2%.

Writes profiler_check.md and profiler_check.json to --out-dir; the exit status is 1 when a
target is missed, launches do not line up with the runs, or a run fails. `--smoke` runs tiny
shapes on cpu_reference (no profiler: phase 1 alone, targets not judged), for the tests.
"""

import argparse
import csv
import json
import os
import statistics
import sys
import time

AGREEMENT = 0.02           # |server median / ncu median - 1|
OVERHEAD_FRACTION = 0.01   # service overhead per iteration over the median kernel time

# name, sequence length, batch, causal
SHAPES = (("short", 1024, 16, False), ("long", 16384, 1, False), ("causal", 8192, 2, True))
SMOKE_SHAPES = (("short", 64, 1, False), ("long", 256, 1, False), ("causal", 128, 1, True))


def request_for(pb, shape, backend, iterations, warmup, warm_cache, heads, dim):
    name, seq, batch, causal = shape
    req = pb.RunRequest(backend=backend)
    s = req.spec
    s.batch_size, s.seq_len_q, s.seq_len_kv, s.head_dim_qk = batch, seq, seq, dim
    s.layout.mha.num_heads = heads
    s.dtype = pb.DTYPE_BFLOAT16
    if causal:
        s.mask.causal.SetInParent()
    s.seed = 16
    m = req.measurement
    m.warmup_iterations = warmup
    m.min_iterations = m.max_iterations = iterations
    m.max_duration_seconds = 120
    m.cache_mode = pb.CACHE_MODE_WARM if warm_cache else pb.CACHE_MODE_COLD
    m.return_samples = True
    req.check.mode = pb.CHECK_MODE_OFF
    return req


def run_shapes(stub, pb, args, warm_cache):
    """One Run per shape; returns a dict per shape: the server's samples and what was asked."""
    runs = []
    for shape in (SMOKE_SHAPES if args.smoke else SHAPES):
        req = request_for(pb, shape, args.backend, args.iterations, args.warmup, warm_cache,
                          args.heads, args.dim)
        start = time.perf_counter()
        reply = stub.Run(req, timeout=600)
        rpc_ms = (time.perf_counter() - start) * 1e3
        r = reply.result
        samples = list(r.timing.samples_ms)
        runs.append({"shape": shape[0], "seq": shape[1], "batch": shape[2], "causal": shape[3],
                     "kernel": r.kernel, "warmup": args.warmup, "iterations": len(samples),
                     "samples_ms": samples, "median_ms": r.timing.median_ms,
                     "rpc_ms": rpc_ms, "wall_ms": r.wall_ms, "queue_ms": r.queue_ms,
                     "preparation_ms": r.preparation_ms, "device": r.device.name})
    return runs


def overhead(run):
    """Service overhead per iteration (ms) and its fraction of the median kernel time: the
    client's RPC time less preparation, queueing and every timed iteration (the warm-up's
    counted at the median), over the iterations."""
    timed = sum(run["samples_ms"]) + run["warmup"] * run["median_ms"]
    total = run["rpc_ms"] - run["preparation_ms"] - run["queue_ms"] - timed
    n = run["iterations"] + run["warmup"]
    per_iteration = total / n
    return per_iteration, per_iteration / run["median_ms"] if run["median_ms"] > 0 else None


def ncu_durations_ms(path):
    """gpu__time_duration.sum of each profiled launch, in launch order (ms), and the kernels'
    names, from `ncu --import R --csv --page raw --metrics gpu__time_duration.sum`."""
    with open(path, newline="") as f:
        rows = [row for row in csv.reader(f) if row]
    header_at = next(i for i, row in enumerate(rows) if "gpu__time_duration.sum" in row)
    header = rows[header_at]
    col = header.index("gpu__time_duration.sum")
    name_col = header.index("Kernel Name") if "Kernel Name" in header else None
    id_col = header.index("ID") if "ID" in header else None
    unit = rows[header_at + 1][col] if header_at + 1 < len(rows) else ""
    scale = {"ns": 1e-6, "nsecond": 1e-6, "usecond": 1e-3, "us": 1e-3, "msecond": 1.0,
             "ms": 1.0, "second": 1e3, "s": 1e3}
    out = []
    for row in rows[header_at + 1:]:
        try:
            value = float(row[col].replace(",", ""))
        except ValueError:
            if unit == "" and row[col] in scale:
                unit = row[col]
            continue  # the units row
        out.append((int(row[id_col]) if id_col is not None else len(out), value,
                    row[name_col] if name_col is not None else ""))
    out.sort(key=lambda t: t[0])
    factor = scale.get(unit.strip().lower(), 1e-6)  # ncu's default unit is ns
    return [v * factor for _, v, _ in out], [n for _, _, n in out]


def compare(runs, durations):
    """Splits the launches over the runs in order; each run's measured launches (after its
    warm-up) give ncu's median. Returns rows and whether the launches lined up."""
    rows, at = [], 0
    expected = sum(r["warmup"] + r["iterations"] for r in runs)
    for r in runs:
        mine = durations[at:at + r["warmup"] + r["iterations"]][r["warmup"]:]
        at += r["warmup"] + r["iterations"]
        ncu = statistics.median(mine) if mine else None
        ratio = r["median_ms"] / ncu if ncu else None
        rows.append({**{k: r[k] for k in ("shape", "seq", "batch", "causal", "kernel")},
                     "server_median_ms": r["median_ms"], "ncu_median_ms": ncu,
                     "launches": len(mine), "ratio": ratio,
                     "agrees": ratio is not None and abs(ratio - 1) <= AGREEMENT})
    return rows, len(durations) == expected


def write(out_dir, name, lines, data):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{name}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        json.dump(data, f, indent=1)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--phase", choices=("overhead", "run", "compare"), default="overhead")
    p.add_argument("--server", default="127.0.0.1:50051")
    p.add_argument("--backend", default="cuda_flash")
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--runs", help="phase run writes, phase compare reads this JSON")
    p.add_argument("--ncu-csv", help="phase compare: ncu's raw CSV of the profiled launches")
    p.add_argument("--out-dir", default=os.environ.get("OUT", "/tmp"))
    p.add_argument("--smoke", action="store_true", help="tiny shapes on cpu_reference")
    args = p.parse_args(argv)
    if args.smoke:
        args.backend, args.heads, args.dim, args.iterations = "cpu_reference", 2, 32, 5
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.phase == "compare":
        with open(args.runs) as f:
            runs = json.load(f)
        durations, names = ncu_durations_ms(args.ncu_csv)
        rows, lined_up = compare(runs, durations)
        lines = ["| shape | kernel | server median ms | ncu median ms | server/ncu | within 2% |",
                 "|---|---|---|---|---|---|"]
        for r in rows:
            ncu = f"{r['ncu_median_ms']:.4f}" if r["ncu_median_ms"] else "-"
            ratio = f"{r['ratio']:.4f}" if r["ratio"] else "-"
            lines.append(f"| {r['shape']} | {r['kernel']} | {r['server_median_ms']:.4f} | {ncu} "
                         f"| {ratio} | {'met' if r['agrees'] else 'MISSED'} |")
        if not lined_up:
            lines.append(f"\nFAIL: {len(durations)} profiled launches for "
                         f"{sum(r['warmup'] + r['iterations'] for r in runs)} iterations "
                         f"(kernels: {sorted(set(names))})")
        print("\n".join(lines))
        write(args.out_dir, "profiler_check", lines, {"rows": rows, "lined_up": lined_up})
        return 0 if lined_up and all(r["agrees"] for r in rows) else 1

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from correctness import connect, import_stubs
    grpc, pb, pb_grpc, _ = import_stubs()
    _, stub = connect(grpc, pb_grpc, args.server)
    if args.phase == "run":
        runs = run_shapes(stub, pb, args, warm_cache=False)
        with open(args.runs, "w") as f:
            json.dump(runs, f, indent=1)
        print(f"{len(runs)} runs written to {args.runs}")
        return 0
    runs = run_shapes(stub, pb, args, warm_cache=True)
    lines = ["| shape | kernel | median ms | iterations | overhead us/iter | of the kernel | "
             "target |", "|---|---|---|---|---|---|---|"]
    missed = False
    for r in runs:
        per_iteration, fraction = overhead(r)
        r["overhead_ms_per_iteration"], r["overhead_fraction"] = per_iteration, fraction
        judged = not args.smoke and r["median_ms"] >= 0.5
        met = fraction is not None and fraction <= OVERHEAD_FRACTION
        missed = missed or (judged and not met)
        verdict = ("met" if met else "MISSED") if judged else "not judged"
        lines.append(f"| {r['shape']} | {r['kernel']} | {r['median_ms']:.4f} | {r['iterations']} "
                     f"| {per_iteration * 1e3:.1f} | {fraction:.4f} | {verdict} |")
    print("\n".join(lines))
    write(args.out_dir, "profiler_overhead", lines, runs)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
