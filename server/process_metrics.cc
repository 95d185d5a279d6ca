#include "server/process_metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>

#include "server/metric_family.h"

namespace attnbench::server {
namespace {

// The fields of /proc/self/stat after the parenthesized command name (which may hold spaces),
// so fields[0] is field 3 (state) of proc(5).
std::vector<std::string> StatFields() {
  std::ifstream in("/proc/self/stat");
  std::string line;
  if (!std::getline(in, line)) return {};
  const size_t close = line.rfind(')');
  if (close == std::string::npos) return {};
  std::istringstream rest(line.substr(close + 1));
  std::vector<std::string> fields;
  for (std::string f; rest >> f;) fields.push_back(f);
  return fields;
}

// Seconds since the epoch at boot, from /proc/stat's btime.
double BootTime() {
  std::ifstream in("/proc/stat");
  for (std::string key; in >> key;) {
    if (key == "btime") {
      double t = 0;
      in >> t;
      return t;
    }
    in.ignore(1 << 16, '\n');
  }
  return 0;
}

int OpenFds() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int n = 0;
  while (const dirent* entry = readdir(dir)) {
    if (entry->d_name[0] != '.') ++n;
  }
  closedir(dir);
  return n - 1;  // not the descriptor opendir itself holds
}

}  // namespace

std::vector<prometheus::MetricFamily> ProcessMetrics::Collect() const {
  using prometheus::MetricType;
  std::vector<prometheus::MetricFamily> out;
  const std::vector<std::string> f = StatFields();
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  // proc(5) fields utime 14, stime 15, num_threads 20, starttime 22, vsize 23, rss 24.
  if (f.size() >= 22 && ticks > 0) {
    const double cpu = (std::stod(f[11]) + std::stod(f[12])) / ticks;
    out.push_back(SingleValueFamily("process_cpu_seconds_total",
                                    "User and system CPU time spent in seconds.",
                                    MetricType::Counter, cpu));
    out.push_back(SingleValueFamily("process_threads", "Number of OS threads in the process.",
                                    MetricType::Gauge, std::stod(f[17])));
    out.push_back(SingleValueFamily("process_start_time_seconds",
                                    "Start time of the process since unix epoch in seconds.",
                                    MetricType::Gauge, BootTime() + std::stod(f[19]) / ticks));
    out.push_back(SingleValueFamily("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                                    MetricType::Gauge, std::stod(f[20])));
    out.push_back(SingleValueFamily("process_resident_memory_bytes",
                                    "Resident memory size in bytes.", MetricType::Gauge,
                                    std::stod(f[21]) * page));
  }
  if (const int fds = OpenFds(); fds >= 0) {
    out.push_back(SingleValueFamily("process_open_fds", "Number of open file descriptors.",
                                    MetricType::Gauge, fds));
  }
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    out.push_back(SingleValueFamily("process_max_fds", "Maximum number of open file descriptors.",
                                    MetricType::Gauge, static_cast<double>(limit.rlim_cur)));
  }
  return out;
}

}  // namespace attnbench::server
