// thread_pool.cpp: see thread_pool.h.
#include "thread_pool.h"

#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define NSN_PAUSE() _mm_pause()
#else
#define NSN_PAUSE() std::this_thread::yield()
#endif

namespace nsn {

namespace {

// How long an idle worker polls for the next job before it sleeps.
constexpr auto kSpin = std::chrono::microseconds(200);

}  // namespace

ThreadPool::ThreadPool(int n_threads) {
  for (int i = 1; i < n_threads; i++) workers_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_.store(true);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::work(int thread) {
  for (int task; (task = next_.fetch_add(1)) < n_tasks_;) {
    call_(fn_, task, thread);
    done_.fetch_add(1, std::memory_order_release);
  }
}

void ThreadPool::worker(int thread) {
  uint64_t seen = 0;
  for (;;) {
    auto changed = [&] {
      return stop_.load(std::memory_order_acquire) ||
             generation_.load(std::memory_order_acquire) != seen;
    };
    const auto until = std::chrono::steady_clock::now() + kSpin;
    while (!changed() && std::chrono::steady_clock::now() < until) {
      for (int i = 0; i < 64 && !changed(); i++) NSN_PAUSE();
    }
    if (!changed()) {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, changed);
    }
    if (stop_.load(std::memory_order_acquire)) return;
    seen = generation_.load(std::memory_order_acquire);
    // Announce first, then look: run() closes the job before it waits for active_ == 0, so
    // either it sees this worker or this worker sees the job closed (sequential consistency).
    active_.fetch_add(1);
    if (open_.load()) work(thread);
    active_.fetch_sub(1);
  }
}

void ThreadPool::run_raw(int n_tasks, Call call, void* fn) {
  if (n_tasks <= 0) return;
  if (workers_.empty() || n_tasks == 1) {
    for (int t = 0; t < n_tasks; t++) call(fn, t, 0);
    return;
  }
  call_ = call;
  fn_ = fn;
  n_tasks_ = n_tasks;
  next_.store(0);
  done_.store(0);
  open_.store(true);
  generation_.fetch_add(1);
  {
    // Taking the lock orders this wake-up after any worker's check of the generation.
    std::lock_guard<std::mutex> lock(mutex_);
  }
  wake_.notify_all();
  work(0);
  auto wait_for = [](auto&& ready) {
    for (int i = 0; !ready(); i++) {
      if (i < 4096) {
        NSN_PAUSE();
      } else {
        std::this_thread::yield();
      }
    }
  };
  wait_for([&] { return done_.load(std::memory_order_acquire) == n_tasks; });
  open_.store(false);
  wait_for([&] { return active_.load() == 0; });  // then fn may go out of scope
}

}  // namespace nsn
