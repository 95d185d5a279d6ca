"""Times torch SDPA's flash backend (FlashAttention-2) on the shapes flash_check.cu times, the
same way (CUDA events, L2 flushed by a 2 x L2 memset outside the timed region, median of 30),
then prints a side-by-side table with the rows flash_check wrote (argv[1])."""
import sys

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
import torch.nn.functional as F


def main():
    ours_path = sys.argv[1] if len(sys.argv) > 1 else "ours.tsv"
    ours = {}
    for line in open(ours_path):
        name, s, d, causal, ms, tf = line.split("\t")
        ours.setdefault((int(s), int(d), int(causal)), []).append((name, float(ms), float(tf)))
    props = torch.cuda.get_device_properties(0)
    flush = torch.empty(2 * props.L2_cache_size, dtype=torch.uint8, device="cuda")
    tokens, heads = 16384, 32
    rows = []
    for d in (64, 128):
        for s in (1024, 4096, 16384):
            b = tokens // s
            q, k, v = (torch.randn(b, s, heads, d, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
                       for _ in range(3))
            for causal in (0, 1):
                flops = 4.0 * b * heads * s * s * d / (2 if causal else 1)
                with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                    for _ in range(3):
                        F.scaled_dot_product_attention(q, k, v, is_causal=bool(causal))
                    times = []
                    for it in range(30):
                        flush.fill_(it & 0xFF)
                        e0 = torch.cuda.Event(enable_timing=True)
                        e1 = torch.cuda.Event(enable_timing=True)
                        e0.record()
                        F.scaled_dot_product_attention(q, k, v, is_causal=bool(causal))
                        e1.record()
                        e1.synchronize()
                        times.append(e0.elapsed_time(e1))
                times.sort()
                ms = times[len(times) // 2]
                rows.append((s, d, causal, ms, flops / (ms * 1e-3) / 1e12))
    print(f"\n{'S':>6} {'D':>4} {'causal':>6} | {'torch flash TF/s':>16} | {'ours shipped TF/s':>17}"
          f" | best variant")
    for s, d, causal, ms, tf in rows:
        mine = ours.get((s, d, causal), [])
        shipped = next((x for x in mine if x[0] == "shipped"), None)
        best = max(mine, key=lambda x: x[2]) if mine else None
        print(f"{s:>6} {d:>4} {causal:>6} | {tf:>16.1f} | "
              f"{(shipped[2] if shipped else float('nan')):>17.1f} | "
              f"{best[0] + ' ' + format(best[2], '.1f') if best else '-'}")


if __name__ == "__main__":
    main()
