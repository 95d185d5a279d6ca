#include "server/stats.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace attnbench::server {

double Percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  q = std::clamp(q, 0.0, 1.0);
  const double rank = q * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  const double frac = rank - static_cast<double>(lo);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * frac;
}

TimingStats ComputeStats(const std::vector<double>& samples) {
  TimingStats s;
  if (samples.empty()) return s;
  std::vector<double> sorted = samples;
  std::sort(sorted.begin(), sorted.end());
  s.count = static_cast<int>(sorted.size());
  s.min = sorted.front();
  s.max = sorted.back();
  s.p10 = Percentile(sorted, 0.10);
  s.median = Percentile(sorted, 0.50);
  s.p90 = Percentile(sorted, 0.90);
  double sum = 0;
  for (double x : sorted) sum += x;
  s.mean = sum / static_cast<double>(sorted.size());
  if (sorted.size() >= 2) {
    // Two-pass variance: the samples are close together, where the one-pass formula cancels.
    double ss = 0;
    for (double x : sorted) ss += (x - s.mean) * (x - s.mean);
    s.stdev = std::sqrt(ss / static_cast<double>(sorted.size() - 1));
  }
  return s;
}

double RelativeNoise(const TimingStats& stats) {
  if (stats.count < 2 || !(stats.mean > 0)) return std::numeric_limits<double>::infinity();
  return stats.stdev / stats.mean;
}

}  // namespace attnbench::server
