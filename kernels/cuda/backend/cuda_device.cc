#include "kernels/cuda/backend/cuda_device.h"

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <dlfcn.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/backend/cuda_status.h"
#include "kernels/cuda/backend/device_buffer.h"

namespace attnbench::cuda {
namespace {

// Median of `n` timings of `op` on `stream`, in seconds, after `warmup` untimed runs. 0 on error.
template <typename Op>
double MedianSeconds(cudaStream_t stream, int warmup, int n, Op op) {
  cudaEvent_t start = nullptr;
  cudaEvent_t stop = nullptr;
  if (cudaEventCreate(&start) != cudaSuccess || cudaEventCreate(&stop) != cudaSuccess) return 0;
  std::vector<double> times;
  bool ok = true;
  for (int i = 0; i < warmup + n && ok; ++i) {
    ok = cudaEventRecord(start, stream) == cudaSuccess && op() &&
         cudaEventRecord(stop, stream) == cudaSuccess && cudaEventSynchronize(stop) == cudaSuccess;
    float ms = 0;
    if (ok && i >= warmup && cudaEventElapsedTime(&ms, start, stop) == cudaSuccess) {
      times.push_back(ms * 1e-3);
    }
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  (void)cudaGetLastError();
  if (!ok || times.empty()) return 0;
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// bf16 GEMM rate through cuBLAS on random data (8192^3: large enough to reach the tensor cores'
// sustained rate, about 1 ms on an H100), in TFLOP/s.
double MeasureGemmTflops() {
  constexpr int n = 8192;
  std::vector<__nv_bfloat16> host(static_cast<size_t>(n) * n);
  uint32_t x = 0x9E3779B9u;
  for (auto& e : host) {
    x = x * 1664525u + 1013904223u;
    e = __float2bfloat16(static_cast<float>(static_cast<int32_t>(x >> 8) - (1 << 23)) / (1 << 23));
  }
  absl::StatusOr<DeviceBuffer> a = DeviceBuffer::Upload(host.data(), host.size() * 2, "gemm A");
  absl::StatusOr<DeviceBuffer> c = DeviceBuffer::Allocate(host.size() * 2, "gemm C");
  if (!a.ok() || !c.ok()) return 0;
  cublasHandle_t handle = nullptr;
  if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) return 0;
  const float alpha = 1.0f;
  const float beta = 0.0f;
  const double seconds = MedianSeconds(nullptr, 3, 10, [&] {
    return cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_T, n, n, n, &alpha, a->get(), CUDA_R_16BF, n,
                        a->get(), CUDA_R_16BF, n, &beta, c->get(), CUDA_R_16BF, n,
                        CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS;
  });
  cublasDestroy(handle);
  return seconds > 0 ? 2.0 * n * n * static_cast<double>(n) / seconds / 1e12 : 0;
}

// Device-to-device copy bandwidth counting bytes read plus written, in GB/s.
double MeasureCopyGbps() {
  constexpr uint64_t bytes = 512ull << 20;
  absl::StatusOr<DeviceBuffer> src = DeviceBuffer::Allocate(bytes, "copy source");
  absl::StatusOr<DeviceBuffer> dst = DeviceBuffer::Allocate(bytes, "copy destination");
  if (!src.ok() || !dst.ok()) return 0;
  if (cudaMemset(src->get(), 0x5A, bytes) != cudaSuccess) return 0;
  const double seconds = MedianSeconds(nullptr, 2, 10, [&] {
    return cudaMemcpyAsync(dst->get(), src->get(), bytes, cudaMemcpyDeviceToDevice) == cudaSuccess;
  });
  return seconds > 0 ? 2.0 * static_cast<double>(bytes) / seconds / 1e9 : 0;
}

std::vector<CudaDeviceInfo> Discover() {
  std::vector<CudaDeviceInfo> devices;
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();  // no driver or no device: the CPU service runs alone
    return devices;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess || cudaSetDevice(i) != cudaSuccess) {
      (void)cudaGetLastError();
      continue;
    }
    CudaDeviceInfo info;
    info.cc_major = prop.major;
    info.cc_minor = prop.minor;
    info.l2_bytes = static_cast<uint64_t>(prop.l2CacheSize);
    info.smem_optin_bytes = static_cast<int>(prop.sharedMemPerBlockOptin);
    DeviceDescription& d = info.description;
    d.name = prop.name;
    d.kind = "cuda";
    d.index = i;
    d.compute_units = prop.multiProcessorCount;
    d.memory_bytes = prop.totalGlobalMem;
    d.compute_capability = absl::StrCat(prop.major, ".", prop.minor);
    d.peak_tflops = MeasureGemmTflops();
    d.peak_gbps = MeasureCopyGbps();
    devices.push_back(std::move(info));
  }
  if (count > 0) cudaSetDevice(0);
  return devices;
}

// NVML entry points resolved with dlopen: the library ships with the driver, not the toolkit.
struct Nvml {
  using Device = void*;
  int (*get_handle)(const char* pci_bus_id, Device* device) = nullptr;
  int (*get_clock)(Device device, int clock_type, unsigned int* mhz) = nullptr;
  std::vector<Device> handles;  // by CUDA device index; null where unknown

  static Nvml* Load() {
    void* lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) return nullptr;
    auto init = reinterpret_cast<int (*)()>(dlsym(lib, "nvmlInit_v2"));
    auto nvml = std::make_unique<Nvml>();
    nvml->get_handle = reinterpret_cast<int (*)(const char*, Device*)>(
        dlsym(lib, "nvmlDeviceGetHandleByPciBusId_v2"));
    nvml->get_clock =
        reinterpret_cast<int (*)(Device, int, unsigned int*)>(dlsym(lib, "nvmlDeviceGetClockInfo"));
    if (init == nullptr || nvml->get_handle == nullptr || nvml->get_clock == nullptr ||
        init() != 0) {
      return nullptr;
    }
    for (const CudaDeviceInfo& info : CudaDevices()) {
      char bus_id[64] = {};
      Device handle = nullptr;
      if (cudaDeviceGetPCIBusId(bus_id, sizeof(bus_id), info.description.index) != cudaSuccess ||
          nvml->get_handle(bus_id, &handle) != 0) {
        handle = nullptr;
      }
      nvml->handles.push_back(handle);
    }
    return nvml.release();
  }
};

constexpr int kNvmlClockSm = 1;  // NVML_CLOCK_SM

struct FlushBuffers {
  std::mutex mu;
  std::vector<DeviceBuffer> by_device;
  uint32_t pattern = 0;
};

}  // namespace

const std::vector<CudaDeviceInfo>& CudaDevices() {
  static const auto* const devices = new std::vector<CudaDeviceInfo>(Discover());
  return *devices;
}

absl::Status FlushL2(int device, cudaStream_t stream) {
  static auto* const flush = new FlushBuffers();
  const std::vector<CudaDeviceInfo>& devices = CudaDevices();
  if (device < 0 || device >= static_cast<int>(devices.size())) {
    return absl::InvalidArgumentError(absl::StrCat("no CUDA device ", device));
  }
  std::lock_guard<std::mutex> lock(flush->mu);
  if (flush->by_device.size() < devices.size()) flush->by_device.resize(devices.size());
  DeviceBuffer& buffer = flush->by_device[device];
  if (buffer.get() == nullptr) {
    const uint64_t bytes = std::max<uint64_t>(2 * devices[device].l2_bytes, 8ull << 20);
    absl::StatusOr<DeviceBuffer> b = DeviceBuffer::Allocate(bytes, "the L2 flush buffer");
    if (!b.ok()) return b.status();
    buffer = *std::move(b);
  }
  // A changing value, so no layer of the memory system can treat the write as a repeat.
  flush->pattern = (flush->pattern + 1) & 0xFF;
  ATTNBENCH_CUDA_RETURN_IF_ERROR(
      cudaMemsetAsync(buffer.get(), static_cast<int>(flush->pattern), buffer.bytes(), stream));
  return absl::OkStatus();
}

int SmClockMhz(int device) {
  static Nvml* const nvml = Nvml::Load();
  if (nvml == nullptr || device < 0 || device >= static_cast<int>(nvml->handles.size()) ||
      nvml->handles[device] == nullptr) {
    return 0;
  }
  unsigned int mhz = 0;
  return nvml->get_clock(nvml->handles[device], kNvmlClockSm, &mhz) == 0 ? static_cast<int>(mhz)
                                                                         : 0;
}

}  // namespace attnbench::cuda
