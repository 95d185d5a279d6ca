#include "server/gpu_telemetry.h"

#include <dlfcn.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace attnbench::server {

// NVML's C ABI, declared here so the server needs neither the CUDA toolkit nor NVML's header.
namespace {
using NvmlReturn = int;  // NVML_SUCCESS = 0
using NvmlDevice = void*;
struct NvmlUtilization {
  unsigned int gpu;
  unsigned int memory;
};
struct NvmlMemory {
  unsigned long long total;  // NOLINT(runtime/int): NVML's type
  unsigned long long free;   // NOLINT(runtime/int)
  unsigned long long used;   // NOLINT(runtime/int)
};
constexpr int kClockSm = 1;   // NVML_CLOCK_SM
constexpr int kClockMem = 2;  // NVML_CLOCK_MEM
constexpr int kTemperatureGpu = 0;
constexpr double kMiB = 1024.0 * 1024.0;
}  // namespace

struct GpuTelemetry::Nvml {
  void* library = nullptr;
  NvmlReturn (*init)() = nullptr;
  NvmlReturn (*shutdown)() = nullptr;
  NvmlReturn (*count)(unsigned int*) = nullptr;
  NvmlReturn (*handle)(unsigned int, NvmlDevice*) = nullptr;
  NvmlReturn (*uuid)(NvmlDevice, char*, unsigned int) = nullptr;
  NvmlReturn (*name)(NvmlDevice, char*, unsigned int) = nullptr;
  NvmlReturn (*minor)(NvmlDevice, unsigned int*) = nullptr;
  NvmlReturn (*utilization)(NvmlDevice, NvmlUtilization*) = nullptr;
  NvmlReturn (*memory)(NvmlDevice, NvmlMemory*) = nullptr;
  NvmlReturn (*power)(NvmlDevice, unsigned int*) = nullptr;
  NvmlReturn (*clock)(NvmlDevice, int, unsigned int*) = nullptr;
  NvmlReturn (*temperature)(NvmlDevice, int, unsigned int*) = nullptr;
  NvmlReturn (*throttle)(NvmlDevice, unsigned long long*) = nullptr;  // NOLINT(runtime/int)
};

namespace {

template <typename F>
bool Resolve(void* library, const char* symbol, F* out) {
  *out = reinterpret_cast<F>(dlsym(library, symbol));
  return *out != nullptr;
}

struct Series {
  const char* name;
  const char* help;
};

// The DCGM exporter's names, in the order Collect emits them.
constexpr Series kUtil{"DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %)."};
constexpr Series kCopyUtil{"DCGM_FI_DEV_MEM_COPY_UTIL", "Memory utilization (in %)."};
constexpr Series kFbUsed{"DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB)."};
constexpr Series kFbFree{"DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB)."};
constexpr Series kFbTotal{"DCGM_FI_DEV_FB_TOTAL", "Framebuffer memory total (in MiB)."};
constexpr Series kPower{"DCGM_FI_DEV_POWER_USAGE", "Power draw (in W)."};
constexpr Series kSmClock{"DCGM_FI_DEV_SM_CLOCK", "SM clock frequency (in MHz)."};
constexpr Series kMemClock{"DCGM_FI_DEV_MEM_CLOCK", "Memory clock frequency (in MHz)."};
constexpr Series kTemp{"DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C)."};
constexpr Series kThrottle{"DCGM_FI_DEV_CLOCK_THROTTLE_REASONS",
                           "Throttling reasons bitmask (NVML nvmlClocksThrottleReason*)."};

class Families {
 public:
  void Add(const Series& series, const prometheus::ClientMetric::Label* labels, double value) {
    prometheus::MetricFamily& family = families_[series.name];
    family.name = series.name;
    family.help = series.help;
    family.type = prometheus::MetricType::Gauge;
    prometheus::ClientMetric metric;
    metric.label.assign(labels, labels + 4);
    metric.gauge.value = value;
    family.metric.push_back(std::move(metric));
  }
  std::vector<prometheus::MetricFamily> Take() {
    std::vector<prometheus::MetricFamily> out;
    for (const Series* s : {&kUtil, &kCopyUtil, &kFbUsed, &kFbFree, &kFbTotal, &kPower, &kSmClock,
                            &kMemClock, &kTemp, &kThrottle}) {
      auto it = families_.find(s->name);
      if (it != families_.end()) out.push_back(std::move(it->second));
    }
    return out;
  }

 private:
  std::map<std::string, prometheus::MetricFamily> families_;
};

}  // namespace

std::shared_ptr<GpuTelemetry> GpuTelemetry::Create() {
  void* library = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) return nullptr;
  auto nvml = std::make_unique<Nvml>();
  nvml->library = library;
  const bool ok = Resolve(library, "nvmlInit_v2", &nvml->init) &&
                  Resolve(library, "nvmlShutdown", &nvml->shutdown) &&
                  Resolve(library, "nvmlDeviceGetCount_v2", &nvml->count) &&
                  Resolve(library, "nvmlDeviceGetHandleByIndex_v2", &nvml->handle);
  if (!ok || nvml->init() != 0) {
    dlclose(library);
    return nullptr;
  }
  // Optional entry points: a missing one only drops its series.
  Resolve(library, "nvmlDeviceGetUUID", &nvml->uuid);
  Resolve(library, "nvmlDeviceGetName", &nvml->name);
  Resolve(library, "nvmlDeviceGetMinorNumber", &nvml->minor);
  Resolve(library, "nvmlDeviceGetUtilizationRates", &nvml->utilization);
  Resolve(library, "nvmlDeviceGetMemoryInfo", &nvml->memory);
  Resolve(library, "nvmlDeviceGetPowerUsage", &nvml->power);
  Resolve(library, "nvmlDeviceGetClockInfo", &nvml->clock);
  Resolve(library, "nvmlDeviceGetTemperature", &nvml->temperature);
  // Renamed "clocks event reasons" in newer drivers; the old name stays exported.
  if (!Resolve(library, "nvmlDeviceGetCurrentClocksEventReasons", &nvml->throttle)) {
    Resolve(library, "nvmlDeviceGetCurrentClocksThrottleReasons", &nvml->throttle);
  }
  return std::shared_ptr<GpuTelemetry>(new GpuTelemetry(std::move(nvml)));
}

GpuTelemetry::GpuTelemetry(std::unique_ptr<Nvml> nvml) : nvml_(std::move(nvml)) {}

GpuTelemetry::~GpuTelemetry() {
  nvml_->shutdown();
  dlclose(nvml_->library);
}

int GpuTelemetry::device_count() const {
  unsigned int n = 0;
  return nvml_->count(&n) == 0 ? static_cast<int>(n) : 0;
}

std::vector<prometheus::MetricFamily> GpuTelemetry::Collect() const {
  Families families;
  const Nvml& nvml = *nvml_;
  const int count = device_count();
  for (int i = 0; i < count; ++i) {
    NvmlDevice device = nullptr;
    if (nvml.handle(static_cast<unsigned int>(i), &device) != 0) continue;
    char uuid[96] = {};
    char model[96] = {};
    unsigned int minor = static_cast<unsigned int>(i);
    if (nvml.uuid != nullptr) nvml.uuid(device, uuid, sizeof(uuid));
    if (nvml.name != nullptr) nvml.name(device, model, sizeof(model));
    if (nvml.minor != nullptr) nvml.minor(device, &minor);
    const prometheus::ClientMetric::Label labels[4] = {{"gpu", std::to_string(i)},
                                                       {"UUID", uuid},
                                                       {"device", absl::StrCat("nvidia", minor)},
                                                       {"modelName", model}};
    NvmlUtilization util{};
    if (nvml.utilization != nullptr && nvml.utilization(device, &util) == 0) {
      families.Add(kUtil, labels, util.gpu);
      families.Add(kCopyUtil, labels, util.memory);
    }
    NvmlMemory memory{};
    if (nvml.memory != nullptr && nvml.memory(device, &memory) == 0) {
      families.Add(kFbUsed, labels, static_cast<double>(memory.used) / kMiB);
      families.Add(kFbFree, labels, static_cast<double>(memory.free) / kMiB);
      families.Add(kFbTotal, labels, static_cast<double>(memory.total) / kMiB);
    }
    unsigned int value = 0;
    if (nvml.power != nullptr && nvml.power(device, &value) == 0) {
      families.Add(kPower, labels, value / 1000.0);  // NVML reports milliwatts
    }
    if (nvml.clock != nullptr && nvml.clock(device, kClockSm, &value) == 0) {
      families.Add(kSmClock, labels, value);
    }
    if (nvml.clock != nullptr && nvml.clock(device, kClockMem, &value) == 0) {
      families.Add(kMemClock, labels, value);
    }
    if (nvml.temperature != nullptr && nvml.temperature(device, kTemperatureGpu, &value) == 0) {
      families.Add(kTemp, labels, value);
    }
    unsigned long long reasons = 0;  // NOLINT(runtime/int)
    if (nvml.throttle != nullptr && nvml.throttle(device, &reasons) == 0) {
      families.Add(kThrottle, labels, static_cast<double>(reasons));
    }
  }
  return families.Take();
}

}  // namespace attnbench::server
