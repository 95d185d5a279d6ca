#!/usr/bin/env python3
"""Example: sweeps sequence length x head layout on an attnbench server and plots the result.

    python3 plot_sweep.py --target=localhost:50051 --out=sweep.png

Writes a PNG with two panels (median kernel time and achieved TFLOP/s against sequence length,
one line per layout), prints the records as a table, and with --csv saves them. Headless: it
uses matplotlib's Agg backend, so no display is needed. --fan_out=N splits the sweep over up to
N concurrent calls (spread over replicas by a dns:/// or ipv4:a,b target).
"""

import argparse
import sys

import matplotlib

matplotlib.use("Agg")  # Before pyplot: render to files only.
import matplotlib.pyplot as plt  # noqa: E402
import pandas  # noqa: E402

import attnbench_client as ab  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--target", default="localhost:50051", help="gRPC target of the server(s)")
    p.add_argument("--out", default="sweep.png", help="PNG to write")
    p.add_argument("--csv", help="also write the records to this CSV file")
    p.add_argument("--seq_lens", default="256,512,1024", help="comma-separated sequence lengths")
    p.add_argument("--layouts", default="mha:8,gqa:8/2,sqa:8/4/2,xsqa:8",
                   help="comma-separated layouts in the CLI's compact form")
    p.add_argument("--mask", default="causal")
    p.add_argument("--head_dim", type=int, default=64)
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--backend", default="auto")
    p.add_argument("--iters", type=int, default=5, help="max timed iterations per point")
    p.add_argument("--fan_out", type=int, default=1)
    p.add_argument("--timeout", type=float, default=600, help="deadline of the sweep, seconds")
    return p.parse_args(argv)


def plot(frame, title, out):
    fig, (time_ax, rate_ax) = plt.subplots(1, 2, figsize=(11, 4.5), constrained_layout=True)
    for layout, rows in frame.groupby("layout", sort=False):
        rows = rows.sort_values("seq_q")
        time_ax.plot(rows["seq_q"], rows["median_ms"], marker="o", label=layout)
        time_ax.fill_between(rows["seq_q"], rows["p10_ms"], rows["p90_ms"], alpha=0.2)
        rate_ax.plot(rows["seq_q"], rows["tflops"], marker="o", label=layout)
    time_ax.set(yscale="log", xlabel="sequence length",
                ylabel="median kernel time (ms), p10-p90 band", title="time")
    rate_ax.set(xlabel="sequence length", ylabel="achieved TFLOP/s",
                title="throughput")
    seq_lens = sorted(set(frame["seq_q"]))
    for ax in (time_ax, rate_ax):
        ax.set_xscale("log", base=2)
        ax.set_xticks(seq_lens, [str(s) for s in seq_lens])
        ax.minorticks_off()
        ax.grid(True, alpha=0.3)
        ax.legend(title="layout")
    fig.suptitle(title)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv):
    args = parse_args(argv)
    axes = {
        "seq_len": [int(s) for s in args.seq_lens.split(",")],
        "layout": args.layouts.split(","),
    }
    with ab.Client(args.target, timeout=args.timeout) as client:
        records = client.sweep(axes, batch=1, head_dim=args.head_dim, dtype=args.dtype,
                               mask=args.mask, backend=args.backend, warmup=1, min_iters=2,
                               max_iters=args.iters, check="off", fan_out=args.fan_out)
    frame = records.to_pandas()
    columns = ["point_index", "server", "device", "backend", "layout", "seq_q", "median_ms",
               "p10_ms", "p90_ms", "tflops"]
    with pandas.option_context("display.width", 160, "display.max_rows", None):
        print(frame[columns].to_string(index=False))
    if args.csv:
        frame.to_csv(args.csv, index=False)
    devices = ", ".join(sorted(set(frame["device"])))
    title = (f"{args.mask} attention, D={args.head_dim}, {args.dtype}, batch 1 "
             f"on {devices} ({', '.join(sorted(set(frame['backend'])))})")
    plot(frame, title, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except ab.AttnBenchError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
