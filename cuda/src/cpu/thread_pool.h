// thread_pool.h: a fixed pool of worker threads for the CPU backend. The calling thread works
// too, so a pool of n threads starts n - 1 workers. One job at a time (the engine runs one
// step at a time); tasks are claimed dynamically, so uneven tasks balance out.
//
// A decode step runs ~50 short jobs, so waking workers through a condition variable alone
// (tens of microseconds each) would cost more than the math: idle workers spin for a short
// while before they sleep. The caller never waits for a worker that has not started: it
// works through the tasks itself, then closes the job; only workers already inside it (and
// those finishing a task) are waited for. On a machine with more threads than cores (tests
// in parallel) that keeps a descheduled worker from stalling every job.
#pragma once
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace nsn {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return (int)workers_.size() + 1; }
  // Runs fn(task, thread) for every task in [0, n_tasks); thread is in [0, size()) and
  // identifies per-thread scratch. Returns when all tasks are done. Allocates nothing (a step
  // must not fail half-way for want of memory).
  template <class F>
  void run(int n_tasks, F&& fn) {
    using Fn = std::remove_reference_t<F>;
    run_raw(n_tasks, [](void* f, int task, int thread) { (*static_cast<Fn*>(f))(task, thread); },
            const_cast<void*>(static_cast<const void*>(&fn)));
  }

 private:
  typedef void (*Call)(void* fn, int task, int thread);
  void run_raw(int n_tasks, Call call, void* fn);
  void worker(int thread);
  void work(int thread);

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  Call call_ = nullptr;  // the job, published by generation_ / open_
  void* fn_ = nullptr;
  int n_tasks_ = 0;
  std::atomic<int> next_{0};       // next task to claim
  std::atomic<int> done_{0};       // tasks finished
  std::atomic<int> active_{0};     // workers inside the job
  std::atomic<bool> open_{false};  // workers may still join the job
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace nsn
