// One XLA FFI handler for every C kernel dnnfusion_jax generates.
//
// A kernel follows c_abi.h: `void NAME(inputs, outputs, const dnf_runtime *rt)`, shapes baked in;
// its parallel loops come back to `ParallelFor` here, which runs them on XLA's intra-op thread
// pool (the threads that run XLA's own ops; see c_abi.h for why not OpenMP).
//
// The custom call names its kernel by a 64-bit id (a hash of the kernel's source, stable
// across processes) rather than by a function pointer: a persistent compilation cache may hand
// the HLO to another process, where a pointer would be garbage but the id resolves again once
// that process has loaded the kernel. ffi_runtime.py compiles this file with g++ and registers
// `DnnfusionCKernel` as the target "dnnfusion_c_kernel".
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "xla/ffi/api/ffi.h"

extern "C" {
#include "c_abi.h"  // ffi_runtime.py puts the file's text here
}

namespace ffi = xla::ffi;

namespace {

using KernelFn = void (*)(const void* const* inputs, void* const* outputs, const dnf_runtime* rt);

struct Registry {
  std::shared_mutex mutex;  // many concurrent calls read, a rare load_kernel writes
  std::unordered_map<uint64_t, KernelFn> kernels;
};

Registry& registry() {
  // Never destroyed: XLA threads may still call kernels while the process exits.
  static Registry* instance = new Registry();
  return *instance;
}

KernelFn Lookup(uint64_t id) {
  Registry& r = registry();
  std::shared_lock<std::shared_mutex> lock(r.mutex);
  auto it = r.kernels.find(id);
  return it == r.kernels.end() ? nullptr : it->second;
}

// One parallel loop in flight: its range is cut into `pieces` equal parts that the calling
// thread and pool workers claim one at a time. Shared ownership, because a worker may start
// only after the loop is over (it then claims nothing and touches nothing else).
struct ParallelLoop {
  dnf_body* body;
  void* ctx;
  long n;
  long pieces;
  std::atomic<long> next{0};
  std::atomic<long> finished{0};

  void RunPieces() {
    for (long k = next.fetch_add(1); k < pieces; k = next.fetch_add(1)) {
      body(ctx, n * k / pieces, n * (k + 1) / pieces);
      finished.fetch_add(1, std::memory_order_release);
    }
  }
};

// Pieces per pool thread: a few, so a worker that wakes late or is busy with another op
// leaves its share to the others instead of stalling the loop.
constexpr long kPiecesPerThread = 4;

// dnf_runtime.parallel_for under XLA: the caller claims pieces too, so the loop finishes even
// when no pool thread is free (XLA may run a task on the caller or in a pool of one thread);
// afterwards it only waits for pieces already running elsewhere.
void ParallelFor(const dnf_runtime* rt, long n, dnf_body* body, void* ctx) {
  auto* pool = static_cast<ffi::ThreadPool*>(rt->state);
  const long threads = pool->num_threads();
  const long pieces = std::min(n, std::max(threads, 1L) * kPiecesPerThread);
  if (threads <= 1 || pieces <= 1) {
    body(ctx, 0, n);
    return;
  }
  auto loop = std::make_shared<ParallelLoop>();
  loop->body = body;
  loop->ctx = ctx;
  loop->n = n;
  loop->pieces = pieces;
  for (long t = 1; t < std::min(threads, pieces); ++t) {
    pool->Schedule([loop] { loop->RunPieces(); });
  }
  loop->RunPieces();
  while (loop->finished.load(std::memory_order_acquire) < pieces) {
    std::this_thread::yield();
  }
}

// Enough pointer slots for nearly every fused block without touching the heap.
constexpr size_t kStackSlots = 64;

// The id arrives as int64: jax cannot build a uint64 attribute of 2**63 or more, so Python sends
// the same 64 bits signed.
ffi::Error CallKernel(ffi::ThreadPool pool, ffi::RemainingArgs args, ffi::RemainingRets rets,
                      int64_t kernel_bits) {
  const uint64_t kernel = static_cast<uint64_t>(kernel_bits);
  KernelFn fn = Lookup(kernel);
  if (fn == nullptr) {
    return ffi::Error(ffi::ErrorCode::kNotFound,
                      "dnnfusion_c_kernel: no kernel registered under id " +
                          std::to_string(kernel) +
                          " in this process (call ffi_runtime.load_kernel first)");
  }
  const size_t n_in = args.size(), n_out = rets.size();
  void* stack[kStackSlots];
  std::vector<void*> heap;
  void** slots = stack;
  if (n_in + n_out > kStackSlots) {
    heap.resize(n_in + n_out);
    slots = heap.data();
  }
  for (size_t i = 0; i < n_in; ++i) {
    auto buffer = args.get<ffi::AnyBuffer>(i);
    if (buffer.has_error()) return buffer.error();
    slots[i] = buffer->untyped_data();
  }
  for (size_t i = 0; i < n_out; ++i) {
    auto buffer = rets.get<ffi::AnyBuffer>(i);
    if (buffer.has_error()) return buffer.error();
    slots[n_in + i] = (*buffer)->untyped_data();
  }
  const dnf_runtime runtime = {ParallelFor, &pool};
  fn(slots, slots + n_in, &runtime);
  return ffi::Error::Success();
}

}  // namespace

extern "C" void dnnfusion_register_kernel(uint64_t id, void* fn) {
  Registry& r = registry();
  std::unique_lock<std::shared_mutex> lock(r.mutex);
  r.kernels[id] = reinterpret_cast<KernelFn>(fn);
}

extern "C" int dnnfusion_kernel_registered(uint64_t id) { return Lookup(id) != nullptr; }

XLA_FFI_DEFINE_HANDLER_SYMBOL(DnnfusionCKernel, CallKernel,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .RemainingArgs()
                                  .RemainingRets()
                                  .Attr<int64_t>("kernel"));
