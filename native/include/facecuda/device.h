// @file device.h
// @brief Device identity ('cpu', 'cuda:N') and the per-device ordered work queue.
//
// Every device owns one WorkQueue: a native thread that runs submitted tasks one at a time in
// submission order. The CPU queue's thread drives the CPU thread pool for data-parallel work; a CUDA
// queue's thread owns that device's stream, cuBLAS/cuDNN handles and allocator calls. The JS main
// thread only validates, submits and returns; completions come back through the callback.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace fc {

enum class DeviceKind : uint8_t { CPU = 0, CUDA = 1 };

struct Device {
  DeviceKind kind = DeviceKind::CPU;
  int index = 0;

  static Device cpu() { return Device{DeviceKind::CPU, 0}; }
  static Device cuda(int i) { return Device{DeviceKind::CUDA, i}; }
  bool is_cpu() const { return kind == DeviceKind::CPU; }
  bool is_cuda() const { return kind == DeviceKind::CUDA; }
  bool operator==(const Device& o) const { return kind == o.kind && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string str() const;  // "cpu" or "cuda:N"
};

// Parses "cpu", "cuda", "cuda:N" (no 'auto': that is resolved in TypeScript). Throws INVALID_ARGUMENT.
Device parse_device(const std::string& s);

// A FIFO of tasks run by one dedicated thread. Tasks never run concurrently with each other.
class WorkQueue {
 public:
  using Task = std::function<void()>;
  // Called on the queue thread after the task, with nullptr on success or the task's exception.
  using Done = std::function<void(std::exception_ptr)>;

  explicit WorkQueue(std::string name);
  ~WorkQueue();  // drains nothing: pending tasks are dropped with no callback, the thread is joined
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  void submit(Task task, Done done);
  // Runs task on the queue thread and waits for it (rethrows its exception). For tests and tools;
  // never call it from the queue's own thread (that would deadlock; it throws INTERNAL instead).
  void run_sync(const Task& task);
  size_t pending() const;
  bool on_queue_thread() const;

 private:
  void loop();
  struct Item {
    Task task;
    Done done;
  };
  std::string name_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> items_;
  bool stop_ = false;
  size_t running_ = 0;
  std::thread thread_;
};

// The queue of a device, created on first use and kept for the life of the process.
WorkQueue& queue_for(const Device& d);

}  // namespace fc
