/* The ABI between generated C kernels and whoever calls them (the XLA FFI handler, the emit
 * harness). A kernel is
 *
 *     void NAME(const void *const *inputs, void *const *outputs, const dnf_runtime *rt);
 *
 * with its shapes baked in. A kernel never starts threads of its own: each parallel loop is
 * handed to rt->parallel_for as body(ctx, begin, end) over [0, n), and the caller decides how
 * to split it and on which threads to run the pieces. Inside jax.jit that is XLA's own
 * intra-op thread pool, the threads that run XLA's GEMMs: an OpenMP team of our own had to be
 * woken for every kernel and competed with XLA's spinning workers for the same cores (~60 µs
 * per kernel measured on 2 cores). A body must give the same result for any split and any
 * order of its ranges, and parallel_for returns only when every range has run. */
#ifndef DNF_ABI_H
#define DNF_ABI_H

typedef void dnf_body(void *ctx, long begin, long end);

typedef struct dnf_runtime {
  void (*parallel_for)(const struct dnf_runtime *rt, long n, dnf_body *body, void *ctx);
  void *state; /* the caller's own data (the FFI handler: XLA's thread pool) */
} dnf_runtime;

#endif
