// @file threadpool.cc
// @brief fc::ThreadPool: persistent workers, static task dealing, exceptions carried to the caller.
#include "facecuda/threadpool.h"

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "facecuda/error.h"

namespace fc {

namespace {
thread_local bool tl_in_pool_task = false;

int default_threads() {
  const char* env = std::getenv("FACECUDA_NUM_THREADS");
  if (env && *env) {
    char* end = nullptr;
    long v = std::strtol(env, &end, 10);
    if (end && *end == '\0' && v >= 1 && v <= 1024) return static_cast<int>(v);
  }
  unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : static_cast<int>(hc);
}
}  // namespace

struct ThreadPool::Impl {
  std::mutex mu;               // serializes run() calls from different threads
  std::mutex state_mu;
  std::condition_variable start_cv, done_cv;
  std::vector<std::thread> workers;
  uint64_t generation = 0;
  bool stop = false;
  // The job of the current generation.
  const std::function<void(int64_t, int)>* fn = nullptr;
  int64_t num_tasks = 0;
  int threads_used = 0;
  int remaining = 0;
  std::exception_ptr error;

  void execute(int thread) {
    std::exception_ptr err;
    try {
      tl_in_pool_task = true;
      for (int64_t t = thread; t < num_tasks; t += threads_used) (*fn)(t, thread);
    } catch (...) {
      err = std::current_exception();
    }
    tl_in_pool_task = false;
    if (err) {
      std::lock_guard<std::mutex> lk(state_mu);
      if (!error) error = err;
    }
  }

  void worker_loop(int thread) {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(state_mu);
        start_cv.wait(lk, [&] { return stop || generation != seen; });
        if (stop) return;
        seen = generation;
        if (thread >= threads_used) continue;  // not needed this round
      }
      execute(thread);
      {
        std::lock_guard<std::mutex> lk(state_mu);
        if (--remaining == 0) done_cv.notify_all();
      }
    }
  }
};

ThreadPool& ThreadPool::global() {
  // Intentionally leaked: worker threads must not be joined during static destruction, when the
  // addon may be unloading with tasks of other static objects still referring to the pool.
  static ThreadPool* pool = new ThreadPool(default_threads());
  return *pool;
}

ThreadPool::ThreadPool(int num_threads) : impl_(new Impl), num_threads_(num_threads < 1 ? 1 : num_threads) {
  for (int t = 1; t < num_threads_; ++t) impl_->workers.emplace_back([this, t] { impl_->worker_loop(t); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(impl_->state_mu);
    impl_->stop = true;
  }
  impl_->start_cv.notify_all();
  for (auto& w : impl_->workers) w.join();
  delete impl_;
}

int ThreadPool::threads_for(int max_threads) const {
  if (max_threads <= 0 || max_threads > num_threads_) return num_threads_;
  return max_threads;
}

void ThreadPool::run(int64_t num_tasks, const std::function<void(int64_t, int)>& fn, int max_threads) {
  if (num_tasks <= 0) return;
  int used = threads_for(max_threads);
  if (used > num_tasks) used = static_cast<int>(num_tasks);
  if (used == 1 || tl_in_pool_task) {
    // Serial: same task order as thread 0 would see with one thread.
    for (int64_t t = 0; t < num_tasks; ++t) fn(t, 0);
    return;
  }
  std::lock_guard<std::mutex> run_lock(impl_->mu);
  {
    std::lock_guard<std::mutex> lk(impl_->state_mu);
    impl_->fn = &fn;
    impl_->num_tasks = num_tasks;
    impl_->threads_used = used;
    impl_->remaining = used - 1;
    impl_->error = nullptr;
    ++impl_->generation;
  }
  impl_->start_cv.notify_all();
  impl_->execute(0);
  std::exception_ptr err;
  {
    std::unique_lock<std::mutex> lk(impl_->state_mu);
    impl_->done_cv.wait(lk, [&] { return impl_->remaining == 0; });
    err = impl_->error;
    impl_->error = nullptr;
    impl_->fn = nullptr;
  }
  if (err) std::rethrow_exception(err);
}

}  // namespace fc
