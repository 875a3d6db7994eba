// One XLA FFI handler for every C kernel dnnfusion_jax generates.
//
// A kernel is `void NAME(const void *const *inputs, void *const *outputs)` with its shapes baked
// in. The custom call names its kernel by a 64-bit id (a hash of the kernel's source, stable
// across processes) rather than by a function pointer: a persistent compilation cache may hand
// the HLO to another process, where a pointer would be garbage but the id resolves again once
// that process has loaded the kernel. ffi_runtime.py compiles this file with g++ and registers
// `DnnfusionCKernel` as the target "dnnfusion_c_kernel".
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using KernelFn = void (*)(const void* const* inputs, void* const* outputs);

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

// Enough pointer slots for nearly every fused block without touching the heap.
constexpr size_t kStackSlots = 64;

// The id arrives as int64: jax cannot build a uint64 attribute of 2**63 or more, so Python sends
// the same 64 bits signed.
ffi::Error CallKernel(ffi::RemainingArgs args, ffi::RemainingRets rets, int64_t kernel_bits) {
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
  fn(slots, slots + n_in);
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
                                  .RemainingArgs()
                                  .RemainingRets()
                                  .Attr<int64_t>("kernel"));
