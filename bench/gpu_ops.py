"""The GPU half of issue #4's proof, against a running attnbench-server on the GPU machine
(bench/device_run.sh's `ops` stage starts it): NVML telemetry under the DCGM exporter's names and
the per-device metrics on a real device; a request that runs the device out of memory answered
RESOURCE_EXHAUSTED (another process holding the memory) with the server and the device fine for
the next request; with two or more
GPUs, a pinned request on each device and a Sweep spread over the devices (each point on one
device, several devices used, results streamed once each).

Prints one line per check (ok / FAIL) and a last line "[ops] PASS|FAIL: n checks, m failed";
exits 0 only when every check passed.

  python3 bench/gpu_ops.py --server=127.0.0.1:PORT --metrics=127.0.0.1:PORT
"""
import argparse
import re
import sys
import time
import urllib.request

from correctness import import_stubs

grpc, pb, pb_grpc, json_format = import_stubs()

FAILED = []
CHECKS = [0]


def check(ok, what, detail=""):
    CHECKS[0] += 1
    print(f"[ops] {'ok  ' if ok else 'FAIL'} {what}{': ' + detail if detail else ''}", flush=True)
    if not ok:
        FAILED.append(what)
    return ok


def scrape(metrics):
    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10) as r:
        return r.read().decode()


def samples(text, name):
    """[(labels dict, value)] of every sample of `name` in a Prometheus text exposition."""
    out = []
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(\{{(.*)\}})?\s+(\S+)$", line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            out.append((labels, float(m.group(3))))
    return out


def spec(batch, seq, heads=32, dim=128, causal=True):
    s = pb.AttentionSpec(batch_size=batch, seq_len_q=seq, seq_len_kv=seq, head_dim_qk=dim,
                         dtype=pb.DTYPE_BFLOAT16, seed=int(time.time_ns() % (1 << 40)))
    json_format.ParseDict({"mha": {"num_heads": heads}}, s.layout)
    if causal:
        s.mask.causal.SetInParent()
    else:
        s.mask.none.SetInParent()
    return s


def run_request(batch, seq, device=None, iters=5):
    req = pb.RunRequest(spec=spec(batch, seq), backend="cuda_flash")
    if device is not None:
        req.device_index = device
    req.measurement.warmup_iterations = 1
    req.measurement.min_iterations = iters
    req.measurement.max_iterations = iters
    req.check.mode = pb.CHECK_MODE_AUTO
    req.check.max_sampled_rows = 8
    return req


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--metrics", required=True)
    parser.add_argument("--skip-oom", action="store_true",
                        help="skip the out-of-memory check (its host-side input generation takes "
                             "~2 minutes)")
    args = parser.parse_args()
    stub = pb_grpc.AttnBenchStub(grpc.insecure_channel(args.server))

    caps = stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=60)
    flash = next((b for b in caps.backends if b.name == "cuda_flash"), None)
    if not check(flash is not None and len(flash.devices) > 0, "cuda_flash is served"):
        return finish()
    devices = len(flash.devices)
    print(f"[ops] {devices} device(s): {', '.join(d.name for d in flash.devices)}")

    # ---- telemetry and per-device metrics around a real run ----
    before = scrape(args.metrics)
    r = stub.Run(run_request(4, 4096), timeout=300).result
    check(r.correctness.passed, "a 4 x 4096 causal D = 128 run passes its check",
          f"{r.throughput.achieved_tflops:.0f} TFLOP/s on {r.device.name} [{r.kernel}]")
    check(r.kernel != "", "RunResult.kernel names the kernel", r.kernel)
    after = scrape(args.metrics)
    for name in ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_MEM_COPY_UTIL", "DCGM_FI_DEV_FB_USED",
                 "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_FB_TOTAL", "DCGM_FI_DEV_POWER_USAGE",
                 "DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_MEM_CLOCK", "DCGM_FI_DEV_GPU_TEMP",
                 "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS"):
        got = samples(after, name)
        check(len(got) == devices and all({"gpu", "UUID", "device", "modelName"} <= set(l)
                                          for l, _ in got),
              f"{name} for every GPU with gpu/UUID/device/modelName labels",
              ", ".join(f"gpu{l.get('gpu')}={v:g}" for l, v in got))
    total = {l["gpu"]: v for l, v in samples(after, "DCGM_FI_DEV_FB_TOTAL")}
    used = {l["gpu"]: v for l, v in samples(after, "DCGM_FI_DEV_FB_USED")}
    free = {l["gpu"]: v for l, v in samples(after, "DCGM_FI_DEV_FB_FREE")}
    check(all(t > 16000 and abs(used[g] + free[g] - t) <= 0.02 * t for g, t in total.items()),
          "FB_USED + FB_FREE = FB_TOTAL (MiB, within 2%)", str(total))
    check(all(30 <= v <= 3000 for _, v in samples(after, "DCGM_FI_DEV_SM_CLOCK")),
          "SM clock in MHz is plausible")
    check(all(10 <= v <= 110 for _, v in samples(after, "DCGM_FI_DEV_GPU_TEMP")),
          "GPU temperature in degrees C is plausible")
    check(all(20 <= v <= 1500 for _, v in samples(after, "DCGM_FI_DEV_POWER_USAGE")),
          "power in W is plausible")
    busy0 = sum(v for _, v in samples(before, "attnbench_device_busy_seconds_total"))
    busy1 = sum(v for _, v in samples(after, "attnbench_device_busy_seconds_total"))
    check(busy1 > busy0, "attnbench_device_busy_seconds_total grew", f"{busy0:.3f} -> {busy1:.3f}")
    up = samples(after, "attnbench_device_up")
    check(len(up) >= devices and all(v == 1 for _, v in up), "attnbench_device_up is 1",
          str([(l.get("device"), v) for l, v in up]))
    check(any(v > 0 for _, v in samples(after, "attnbench_achieved_tflops_count")),
          "attnbench_achieved_tflops observed the run")

    # ---- out of device memory, then the next request ----
    if args.skip_oom:
        print("[ops] out-of-memory check skipped (--skip-oom)")
    else:
        out_of_memory(stub, args.metrics)

    # ---- several GPUs: pinning and a spread sweep ----
    if devices >= 2:
        for d in range(devices):
            r = stub.Run(run_request(2, 2048, device=d), timeout=300).result
            check(r.device.index == d and r.correctness.passed, f"a request pinned to device {d}",
                  f"ran on {r.device.index}")
        sweep = pb.SweepRequest(base=run_request(4, 4096, iters=20), spread_devices=True)
        sweep.axes.add().seq_len.values.extend([4096] * (2 * devices))
        t0 = time.time()
        seen = {}
        for resp in stub.Sweep(sweep, timeout=600):
            if resp.HasField("result"):
                seen.setdefault(resp.point_index, []).append(resp.result.device.index)
        wall = time.time() - t0
        check(sorted(seen) == list(range(2 * devices)) and all(len(v) == 1 for v in seen.values()),
              "a spread sweep streams every point once", str(seen))
        used_devices = {v[0] for v in seen.values()}
        check(len(used_devices) >= 2, "the spread sweep ran on several devices",
              f"{sorted(used_devices)} in {wall:.1f} s")
    else:
        print("[ops] one device: pinning and spread sweeps need two (run on nvidia-h200-x2)")
    return finish()


def out_of_memory(stub, metrics):
    """Another process (a tenant sharing the GPU) holds all but 2 GiB of device 0; a request for
    ~4.3 GB of device memory (B 8, S 16k, 32 heads, D 128 bf16: Q, K, V, O of 1.07 GB) must then
    fail cleanly, and run once the memory is back. (A request larger than the whole GPU cannot
    be made here: the server builds its inputs on the host first, at twice the device bytes.)"""
    import torch
    free, total = torch.cuda.mem_get_info(0)
    hog = torch.empty(free - (2 << 30), dtype=torch.uint8, device="cuda:0")
    print(f"[ops] holding {hog.numel() / 2**30:.1f} GiB of device 0 ({total / 2**30:.1f} GiB)")
    try:
        stub.Run(run_request(8, 16384, device=0, iters=1), timeout=300)
        check(False, "a request the device cannot hold is refused", "it ran")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED,
              "a request the device cannot hold is RESOURCE_EXHAUSTED",
              f"{e.code().name}: {e.details()}")
    del hog
    torch.cuda.empty_cache()
    r = stub.Run(run_request(8, 16384, device=0, iters=2), timeout=300).result
    check(r.correctness.passed and r.timing.count == 2,
          "the same request runs and passes once the memory is free",
          f"{r.throughput.achieved_tflops:.0f} TFLOP/s")
    up = samples(scrape(metrics), "attnbench_device_up")
    check(all(v == 1 for _, v in up), "every device is still up after the OOM")


def finish():
    print(f"[ops] {'PASS' if not FAILED else 'FAIL'}: {CHECKS[0]} checks, {len(FAILED)} failed")
    return 0 if not FAILED else 1


if __name__ == "__main__":
    sys.exit(main())
