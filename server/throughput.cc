#include "server/throughput.h"

namespace attnbench::server {

::attnbench::v1::Throughput ComputeThroughput(const WorkCounts& work, double median_seconds,
                                              const DeviceDescription& device) {
  ::attnbench::v1::Throughput t;
  const double total_flops = work.flops + work.projection_flops;
  const double bytes = static_cast<double>(work.min_bytes);
  if (bytes > 0) t.set_flops_per_byte(total_flops / bytes);
  if (device.peak_tflops > 0 && device.peak_gbps > 0) {
    // The ridge point of the roofline, in FLOPs per byte.
    const double ridge = (device.peak_tflops * 1e12) / (device.peak_gbps * 1e9);
    t.set_memory_bound(t.flops_per_byte() < ridge);
  }
  if (!(median_seconds > 0)) return t;
  t.set_achieved_tflops(total_flops / median_seconds / 1e12);
  // Projections are counted the same way in both conventions, so the two figures differ only in
  // how the attention core is counted.
  t.set_achieved_tflops_flash_convention((work.flops_flash_convention + work.projection_flops) /
                                         median_seconds / 1e12);
  t.set_achieved_gbps(bytes / median_seconds / 1e9);
  if (device.peak_tflops > 0)
    t.set_fraction_of_peak_flops(t.achieved_tflops() / device.peak_tflops);
  if (device.peak_gbps > 0) t.set_fraction_of_peak_bandwidth(t.achieved_gbps() / device.peak_gbps);
  return t;
}

}  // namespace attnbench::server
