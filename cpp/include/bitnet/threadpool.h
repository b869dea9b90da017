// The one thread pool of the core. Kernels never create threads; drivers split their work
// (usually output rows) with parallel_for.
#pragma once

#include <cstdint>
#include <functional>

namespace bitnet {

// Number of physical cores available to this process (affinity mask respected), at least 1.
int physical_core_count();

// Sets the number of threads used by the core (n >= 1). The default is physical_core_count().
void set_num_threads(int n);
int get_num_threads();

// Runs fn(task, thread) for task in [0, n_tasks) on min(n_tasks, get_num_threads()) threads
// (the caller is thread 0) and returns when all are done. Tasks are handed out statically:
// thread i gets tasks i, i + T, i + 2T, ... so a caller that passes n_tasks == T gets exactly
// one contiguous task per thread. Exceptions thrown by fn are rethrown in the caller (the first
// one wins). Nested calls from inside fn run serially on the calling thread.
void parallel_for(int64_t n_tasks, const std::function<void(int64_t task, int thread)>& fn);

}  // namespace bitnet
