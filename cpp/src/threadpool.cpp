// Persistent worker threads that spin briefly on a generation counter (decode GEMVs take tens of
// microseconds, so a condition-variable wake-up per call would cost a visible share) and then
// sleep on a condition variable when idle.
#include "bitnet/threadpool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define BITNET_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define BITNET_PAUSE() __asm__ __volatile__("yield")
#else
#define BITNET_PAUSE() std::this_thread::yield()
#endif

namespace bitnet {

int physical_core_count() {
  unsigned hw = std::max(1u, std::thread::hardware_concurrency());
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    std::set<std::pair<int, int>> cores;
    int allowed = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (!CPU_ISSET(cpu, &set)) continue;
      ++allowed;
      std::string base = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
      std::ifstream pkg(base + "physical_package_id"), core(base + "core_id");
      int p = -1, c = -1;
      if (!(pkg >> p) || !(core >> c)) return allowed > 0 ? allowed : int(hw);  // no topology
      cores.insert({p, c});
    }
    if (!cores.empty()) return int(cores.size());
    if (allowed > 0) return allowed;
  }
#endif
  return int(hw);
}

namespace {

using Task = std::function<void(int64_t, int)>;
thread_local bool t_inside_pool = false;

class Pool {
 public:
  explicit Pool(int n_threads) : n_threads_(std::max(1, n_threads)) {
    for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker(i); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  int size() const { return n_threads_; }

  void run(int64_t n_tasks, const Task& fn) {
    std::unique_lock<std::mutex> busy(run_mu_, std::try_to_lock);
    const int active = int(std::min<int64_t>(n_threads_, n_tasks));
    if (!busy.owns_lock() || active <= 1) {  // pool in use by another caller, or one task
      serial(n_tasks, fn);
      return;
    }
    job_ = &fn;
    n_tasks_ = n_tasks;
    n_active_ = active;
    error_ = nullptr;
    pending_.store(active - 1, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lk(mu_);
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    execute(0);
    while (pending_.load(std::memory_order_acquire) != 0) BITNET_PAUSE();
    job_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  static void serial(int64_t n_tasks, const Task& fn) {
    bool was_inside = t_inside_pool;
    t_inside_pool = true;
    try {
      for (int64_t t = 0; t < n_tasks; ++t) fn(t, 0);
    } catch (...) {
      t_inside_pool = was_inside;
      throw;
    }
    t_inside_pool = was_inside;
  }

  void execute(int index) {
    t_inside_pool = true;
    try {
      for (int64_t t = index; t < n_tasks_; t += n_active_) (*job_)(t, index);
    } catch (...) {
      std::lock_guard<std::mutex> lk(error_mu_);
      if (!error_) error_ = std::current_exception();
    }
    t_inside_pool = false;
  }

  void worker(int index) {
    uint64_t seen = 0;
    for (;;) {
      // Spin for roughly 100 microseconds, then sleep until the next job.
      uint64_t gen = generation_.load(std::memory_order_acquire);
      for (int spin = 0; gen == seen && spin < 20000; ++spin) {
        BITNET_PAUSE();
        gen = generation_.load(std::memory_order_acquire);
      }
      if (gen == seen) {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return generation_.load(std::memory_order_acquire) != seen; });
        gen = generation_.load(std::memory_order_acquire);
      }
      seen = gen;
      if (stop_) return;
      if (index < n_active_) {
        execute(index);
        pending_.fetch_sub(1, std::memory_order_acq_rel);
      }
    }
  }

  const int n_threads_;
  std::vector<std::thread> workers_;
  std::mutex run_mu_;  // one parallel_for at a time; concurrent callers run serially
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  bool stop_ = false;
  const Task* job_ = nullptr;
  int64_t n_tasks_ = 0;
  int n_active_ = 0;
  std::mutex error_mu_;
  std::exception_ptr error_;
};

std::mutex g_pool_mu;
// Shared so that a set_num_threads() racing with a running parallel_for never frees a pool in use.
std::shared_ptr<Pool> g_pool;
int g_num_threads = 0;

int default_threads() {
  if (const char* env = std::getenv("BITNET_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n >= 1) return n;
  }
  return physical_core_count();
}

#if defined(__linux__)
void after_fork_in_child() {
  // The workers did not survive fork(): leak the old pool (joining them would hang) and
  // rebuild lazily.
  new (&g_pool) std::shared_ptr<Pool>();
  new (&g_pool_mu) std::mutex();
}
struct ForkGuard {
  ForkGuard() { pthread_atfork(nullptr, nullptr, after_fork_in_child); }
} g_fork_guard;
#endif

std::shared_ptr<Pool> pool() {
  std::lock_guard<std::mutex> lk(g_pool_mu);
  if (g_num_threads == 0) g_num_threads = default_threads();
  if (!g_pool || g_pool->size() != g_num_threads) g_pool = std::make_shared<Pool>(g_num_threads);
  return g_pool;
}

}  // namespace

void set_num_threads(int n) {
  if (n < 1)
    throw std::invalid_argument("set_num_threads: n must be >= 1, got " + std::to_string(n));
  std::lock_guard<std::mutex> lk(g_pool_mu);
  g_num_threads = n;
}

int get_num_threads() {
  std::lock_guard<std::mutex> lk(g_pool_mu);
  if (g_num_threads == 0) g_num_threads = default_threads();
  return g_num_threads;
}

void parallel_for(int64_t n_tasks, const Task& fn) {
  if (n_tasks <= 0) return;
  if (t_inside_pool) {  // nested: stay on this thread
    for (int64_t t = 0; t < n_tasks; ++t) fn(t, 0);
    return;
  }
  pool()->run(n_tasks, fn);
}

}  // namespace bitnet
