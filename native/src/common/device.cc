// @file device.cc
// @brief Device parsing and the per-device WorkQueue (one thread per device, FIFO).
#include "facecuda/device.h"

#include <cstdlib>
#include <future>
#include <map>

#include "facecuda/error.h"

namespace fc {

std::string Device::str() const { return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index); }

Device parse_device(const std::string& s) {
  if (s == "cpu") return Device::cpu();
  if (s == "cuda") return Device::cuda(0);
  if (s.rfind("cuda:", 0) == 0 && s.size() > 5 && s.size() <= 8) {
    int v = 0;
    for (size_t i = 5; i < s.size(); ++i) {
      if (s[i] < '0' || s[i] > '9') fail(Code::InvalidArgument, str("Expected 'cpu', 'cuda' or 'cuda:N' for device but received '", s, "'"));
      v = v * 10 + (s[i] - '0');
    }
    return Device::cuda(v);
  }
  fail(Code::InvalidArgument, str("Expected 'cpu', 'cuda' or 'cuda:N' for device but received '", s, "'"));
}

WorkQueue::WorkQueue(std::string name) : name_(std::move(name)) { thread_ = std::thread([this] { loop(); }); }

WorkQueue::~WorkQueue() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
    items_.clear();
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void WorkQueue::submit(Task task, Done done) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    FC_CHECK(!stop_, Internal, "work queue ", name_, " is shut down");
    items_.push_back(Item{std::move(task), std::move(done)});
  }
  cv_.notify_one();
}

void WorkQueue::run_sync(const Task& task) {
  FC_CHECK(!on_queue_thread(), Internal, "run_sync called from the ", name_, " queue's own thread");
  std::promise<void> p;
  auto f = p.get_future();
  submit(task, [&p](std::exception_ptr e) {
    if (e) p.set_exception(e);
    else p.set_value();
  });
  f.get();
}

size_t WorkQueue::pending() const {
  std::lock_guard<std::mutex> lk(mu_);
  return items_.size() + running_;
}

bool WorkQueue::on_queue_thread() const { return std::this_thread::get_id() == thread_.get_id(); }

void WorkQueue::loop() {
  for (;;) {
    Item item;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stop_ || !items_.empty(); });
      if (stop_) return;
      item = std::move(items_.front());
      items_.pop_front();
      running_ = 1;
    }
    std::exception_ptr err;
    try {
      item.task();
    } catch (...) {
      err = std::current_exception();
    }
    // Release what the task captured (e.g. tensor storage) before reporting completion.
    item.task = nullptr;
    try {
      if (item.done) item.done(err);
    } catch (...) {
      // A completion callback must not take the queue down; the binding's callbacks do not throw.
    }
    {
      std::lock_guard<std::mutex> lk(mu_);
      running_ = 0;
    }
  }
}

WorkQueue& queue_for(const Device& d) {
  // Leaked on purpose: queues live until the process exits (their threads are detached from static
  // destruction order; the OS reclaims them).
  static std::mutex mu;
  static std::map<std::pair<int, int>, WorkQueue*>* queues = new std::map<std::pair<int, int>, WorkQueue*>();
  std::lock_guard<std::mutex> lk(mu);
  auto key = std::make_pair(static_cast<int>(d.kind), d.index);
  auto it = queues->find(key);
  if (it != queues->end()) return *it->second;
  WorkQueue* q = new WorkQueue(d.str());
  (*queues)[key] = q;
  return *q;
}

}  // namespace fc
