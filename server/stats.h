// Summary statistics of per-iteration kernel times: what TimingStats reports and what the
// harness's noise-based stopping rule reads.
#ifndef ATTNBENCH_SERVER_STATS_H_
#define ATTNBENCH_SERVER_STATS_H_

#include <vector>

namespace attnbench::server {

struct TimingStats {
  int count = 0;
  double min = 0;
  double p10 = 0;
  double median = 0;
  double mean = 0;
  double p90 = 0;
  double max = 0;
  double stdev = 0;  // sample standard deviation (n - 1); 0 for fewer than two samples
};

// Percentile q in [0, 1] of samples sorted ascending, interpolating linearly between the two
// nearest ranks (rank q * (n - 1), the "type 7" definition of R and NumPy). 0 when empty.
double Percentile(const std::vector<double>& sorted, double q);

// Statistics of samples in any order and any unit (results are in the same unit).
TimingStats ComputeStats(const std::vector<double>& samples);

// stdev / mean, or +infinity while it is undefined (fewer than two samples, or mean <= 0), so
// "noise below target" never holds by accident.
double RelativeNoise(const TimingStats& stats);

}  // namespace attnbench::server

#endif  // ATTNBENCH_SERVER_STATS_H_
