#include "kernels/cpu/cpu_device.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>

namespace attnbench {
namespace {

using Clock = std::chrono::steady_clock;

std::string CpuModelName() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) {
        size_t start = line.find_first_not_of(" \t", colon + 1);
        return start == std::string::npos ? "cpu" : line.substr(start);
      }
    }
  }
  return "cpu";
}

int HardwareThreads() {
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

uint64_t PhysicalMemoryBytes() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page_size > 0 ? static_cast<uint64_t>(pages) * page_size : 0;
}

// Dense float32 matmul rate with every hardware thread multiplying its own small matrices (in
// cache), i.e. the arithmetic ceiling a plain vectorized loop reaches, not the memory system's.
double MeasurePeakTflops(double seconds) {
  constexpr int n = 128;
  const int threads = HardwareThreads();
  std::atomic<double> total_flops{0};
  auto worker = [&] {
    std::vector<float> a(n * n, 1.0f / n), b(n * n, 0.5f), c(n * n, 0.0f);
    double flops = 0;
    const auto end = Clock::now() + std::chrono::duration<double>(seconds);
    while (Clock::now() < end) {
      for (int i = 0; i < n; ++i) {
        for (int k = 0; k < n; ++k) {
          const float aik = a[i * n + k];
          for (int j = 0; j < n; ++j) c[i * n + j] += aik * b[k * n + j];
        }
      }
      flops += 2.0 * n * n * n;
    }
    // Keeps the result observable so the loop is not optimized away.
    volatile float sink = c[n + 1];
    (void)sink;
    double seen = total_flops.load();
    while (!total_flops.compare_exchange_weak(seen, seen + flops)) {
    }
  };
  const auto start = Clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(worker);
  for (std::thread& t : pool) t.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  return elapsed > 0 ? total_flops.load() / elapsed / 1e12 : 0;
}

// memcpy bandwidth (bytes read plus bytes written) on all threads between two 16 MiB buffers:
// beyond the per-core caches and small enough that allocating and touching them (untimed, the
// first copy) stays within the time budget even where page faults are slow.
double MeasurePeakGbps(double seconds) {
  const size_t bytes = size_t{16} << 20;
  std::vector<unsigned char> src(bytes, 1), dst(bytes, 0);
  const int threads = HardwareThreads();
  const size_t slice = bytes / threads;
  auto copy_all = [&] {
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] { std::memcpy(&dst[t * slice], &src[t * slice], slice); });
    }
    for (std::thread& t : pool) t.join();
  };
  copy_all();
  double moved = 0;
  const auto start = Clock::now();
  const auto end = start + std::chrono::duration<double>(seconds);
  do {
    copy_all();
    moved += 2.0 * static_cast<double>(slice) * threads;
  } while (Clock::now() < end);
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  return elapsed > 0 ? moved / elapsed / 1e9 : 0;
}

}  // namespace

uint64_t LastLevelCacheBytes() {
  static const uint64_t bytes = [] {
    const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (l3 > 0) return static_cast<uint64_t>(l3);
    for (int index = 4; index >= 0; --index) {
      std::ifstream in("/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) +
                       "/size");
      std::string text;
      if (in >> text && !text.empty()) {
        uint64_t value = std::strtoull(text.c_str(), nullptr, 10);
        const char unit = text.back();
        if (unit == 'K') value <<= 10;
        if (unit == 'M') value <<= 20;
        if (value > 0) return value;
      }
    }
    return uint64_t{64} << 20;
  }();
  return bytes;
}

DeviceDescription CpuDevice() {
  static std::once_flag once;
  static DeviceDescription device;
  std::call_once(once, [] {
    device.name = CpuModelName();
    device.kind = "cpu";
    device.index = 0;
    device.compute_units = HardwareThreads();
    device.memory_bytes = PhysicalMemoryBytes();
    // Well under 200 ms together, allocation included.
    device.peak_tflops = MeasurePeakTflops(0.06);
    device.peak_gbps = MeasurePeakGbps(0.04);
  });
  return device;
}

void FlushLastLevelCache(const StopCheck* stop) {
  // One buffer for the whole process: workloads come and go, and allocating (and first touching)
  // hundreds of MiB per workload would cost more than the runs it makes cold. Uninitialized
  // (new[]), so its pages are first touched below, chunk by chunk, where a stop can cut in.
  static std::mutex mutex;
  static unsigned char* buffer = nullptr;
  static const uint64_t bytes = FlushBufferBytes();
  static unsigned char value = 0;
  constexpr uint64_t kChunk = uint64_t{8} << 20;
  std::lock_guard<std::mutex> lock(mutex);
  if (buffer == nullptr) buffer = new unsigned char[bytes];
  // A different value each time, so no write can be skipped as redundant.
  ++value;
  for (uint64_t at = 0; at < bytes; at += kChunk) {
    if (ShouldStop(stop)) return;
    std::memset(buffer + at, value, std::min(kChunk, bytes - at));
  }
  volatile unsigned char sink = buffer[bytes / 2];
  (void)sink;
}

uint64_t FlushBufferBytes() {
  const uint64_t llc = LastLevelCacheBytes();
  return llc + std::max<uint64_t>(llc / 4, uint64_t{8} << 20);
}

}  // namespace attnbench
