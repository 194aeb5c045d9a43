// @file threadpool.h
// @brief The CPU worker pool. Work is split by a static partition that depends only on the problem
// size and the thread count, so results never depend on scheduling (the GEMM's determinism rests
// on this: every output element is computed by exactly one thread in a fixed order).
#pragma once

#include <cstdint>
#include <functional>

namespace fc {

class ThreadPool {
 public:
  // The process-wide pool. Its size is FACECUDA_NUM_THREADS when set (1..1024), else the number of
  // hardware threads. Created on first use.
  static ThreadPool& global();

  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Runs fn(task, thread) for task in [0, num_tasks) on up to `max_threads` threads (0 = all) and
  // waits. Tasks are dealt statically: thread t runs tasks t, t+T, t+2T, ... (T = threads used), so
  // the assignment is a pure function of (num_tasks, T). The caller's thread acts as thread 0.
  // An exception thrown by any task is rethrown here after all threads finish. Calls made from
  // inside a task run serially on the calling thread (no nested parallelism).
  void run(int64_t num_tasks, const std::function<void(int64_t task, int thread)>& fn, int max_threads = 0);

  // Number of threads run() will use for max_threads (clamped to [1, num_threads]).
  int threads_for(int max_threads) const;

 private:
  struct Impl;
  Impl* impl_;
  int num_threads_;
};

}  // namespace fc
