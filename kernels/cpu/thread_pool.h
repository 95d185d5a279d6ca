// A fixed pool of worker threads for the CPU backend: created once (per workload), reused by
// every run, so timed iterations never pay for thread creation.
#ifndef ATTNBENCH_KERNELS_CPU_THREAD_POOL_H_
#define ATTNBENCH_KERNELS_CPU_THREAD_POOL_H_

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace attnbench {

class ThreadPool {
 public:
  // num_threads <= 0: one per hardware thread. The calling thread counts as one of them.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Calls fn(item, thread_index) for every item in [0, count), items handed out dynamically;
  // thread_index in [0, num_threads()) identifies the caller's scratch. Returns when all are done.
  // Calls from several threads at once are serialized.
  void ParallelFor(int64_t count, const std::function<void(int64_t, int)>& fn);

 private:
  void WorkerLoop(int thread_index);
  void RunItems(int thread_index);

  const int num_threads_;
  std::vector<std::thread> workers_;
  std::mutex call_mutex_;  // one ParallelFor at a time
  std::mutex mutex_;
  std::condition_variable start_;
  std::condition_variable done_;
  const std::function<void(int64_t, int)>* fn_ = nullptr;
  int64_t count_ = 0;
  int64_t next_ = 0;
  uint64_t generation_ = 0;
  int active_ = 0;
  bool stop_ = false;
};

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_CPU_THREAD_POOL_H_
