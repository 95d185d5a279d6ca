// Splitting one-off O(elements) host passes (generating inputs, encoding tensors, storing and
// reading back a decode cache) over the host's threads: a cache of 512k tokens has about a
// billion elements, seconds of work per pass on one thread. Threads are started per call, so this
// is for preparation and checking, not for timed work.
#ifndef ATTNBENCH_KERNELS_SPEC_PARALLEL_FILL_H_
#define ATTNBENCH_KERNELS_SPEC_PARALLEL_FILL_H_

#include <algorithm>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

namespace attnbench {

// Runs fill(begin, end) over [0, items) split across threads when the work (items * cost_each)
// is large. Items must be independent (each writes only its own outputs), so splitting the range
// changes nothing but the wall time.
template <typename Fill>
void ParallelFill(int64_t items, int64_t cost_each, const Fill& fill) {
  constexpr double kPerThread = 1 << 16;
  // In double: items * cost_each may pass 2^63 for a huge tensor.
  const double work =
      static_cast<double>(items) * static_cast<double>(std::max<int64_t>(1, cost_each));
  const int64_t hardware = std::max(1u, std::thread::hardware_concurrency());
  const int64_t threads =
      std::min<int64_t>({hardware, static_cast<int64_t>(std::min(work / kPerThread, 1e9)), items});
  if (threads <= 1) {
    fill(int64_t{0}, items);
    return;
  }
  std::vector<std::thread> workers;
  for (int64_t w = 0; w < threads; ++w) {
    workers.emplace_back(fill, items * w / threads, items * (w + 1) / threads);
  }
  for (std::thread& w : workers) w.join();
}

// ParallelFill as a KvCacheStore::ParallelFor (body(item) for every item), for items that are
// each worth a thread of their own (its chunks of 256 tokens).
inline void ParallelForItems(int64_t items, const std::function<void(int64_t)>& body) {
  ParallelFill(items, int64_t{1} << 16, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) body(item);
  });
}

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_SPEC_PARALLEL_FILL_H_
