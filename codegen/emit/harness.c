/* The test harness of `python -m dnnfusion_jax emit` (codegen/emit/harness.c, copied into
 * every emitted folder as it is): calls every kernel on its recorded inputs and compares with
 * the outputs the XLA reference computed (floats: |got - want| <= ATOL + RTOL*|want|, NaN where
 * NaN, inf equal; integers and bools bit-exact). Usage: ./harness [DIR] (DIR holds data/;
 * default: the current directory). Exit status: 0 all ok, 1 a mismatch, 2 a missing or short
 * data file.
 *
 * Beside it in the folder: abi.h, the kernels' calling convention (codegen/c/abi.h), and
 * cases.h, generated per model (codegen/emit/harness.py): RTOL, ATOL, one extern declaration
 * per kernel, its input and output files, and the table `cases` of n_cases entries, written
 * with the types below. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "abi.h"

#define MAX_THREADS 64

enum { DNF_F32, DNF_F64, DNF_I32, DNF_I64, DNF_U32, DNF_U8, DNF_I8, DNF_BOOL };
typedef void (*dnf_fn)(const void *const *, void *const *, const dnf_runtime *);
typedef struct { const char *file; long bytes; int dtype; } dnf_file;
typedef struct { const char *symbol; dnf_fn fn; int n_in; const dnf_file *in;
                 int n_out; const dnf_file *out; } dnf_case;

#include "cases.h"

static void *dnf_read(const char *dir, const dnf_file *f) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, f->file);
  void *data = aligned_alloc(64, (size_t)((f->bytes + 63) / 64 * 64 + 64));
  FILE *fp = fopen(path, "rb");
  if (!data || !fp || fread(data, 1, (size_t)f->bytes, fp) != (size_t)f->bytes) {
    fprintf(stderr, "harness: cannot read %ld bytes from %s\n", f->bytes, path);
    exit(2);
  }
  fclose(fp);
  return data;
}

static int dnf_is_float(int dtype) { return dtype == DNF_F32 || dtype == DNF_F64; }

static double dnf_get(const void *p, int dtype, long i) {
  switch (dtype) {
    case DNF_F32: return ((const float *)p)[i];
    case DNF_F64: return ((const double *)p)[i];
    case DNF_I32: return ((const int32_t *)p)[i];
    case DNF_I64: return (double)((const int64_t *)p)[i];
    case DNF_U32: return ((const uint32_t *)p)[i];
    case DNF_I8: return ((const int8_t *)p)[i];
    default: return ((const uint8_t *)p)[i];
  }
}

static long dnf_itemsize(int dtype) {
  switch (dtype) {
    case DNF_F64: case DNF_I64: return 8;
    case DNF_F32: case DNF_I32: case DNF_U32: return 4;
    default: return 1;
  }
}

/* Returns 1 when got matches want; raises *max_err to the largest |got - want| (inf where
 * an inf or NaN differs). */
static int dnf_compare(const dnf_file *f, const void *got, const void *want, double *max_err) {
  int ok = 1;
  long n = f->bytes / dnf_itemsize(f->dtype);
  for (long i = 0; i < n; i++) {
    if (!dnf_is_float(f->dtype)) {  /* integers and bools: bit-exact */
      long size = dnf_itemsize(f->dtype);
      if (memcmp((const char *)got + i * size, (const char *)want + i * size, size)) {
        double e = fabs(dnf_get(got, f->dtype, i) - dnf_get(want, f->dtype, i));
        *max_err = e > *max_err ? e : *max_err;
        ok = 0;
      }
      continue;
    }
    double g = dnf_get(got, f->dtype, i), w = dnf_get(want, f->dtype, i);
    if (isnan(g) || isnan(w) || isinf(g) || isinf(w)) {
      int same = (isnan(g) && isnan(w)) || g == w;
      if (!same) { ok = 0; *max_err = INFINITY; }
      continue;
    }
    double e = fabs(g - w);
    if (e > *max_err) *max_err = e;
    if (!(e <= ATOL + RTOL * fabs(w))) ok = 0;
  }
  return ok;
}

/* The kernels' runtime: each parallel loop split into one contiguous range per thread, the
 * first on this thread, the others on fresh POSIX threads (run here if one cannot start). */
typedef struct { dnf_body *body; void *ctx; long begin, end; } dnf_piece;

static void *dnf_run_piece(void *piece) {
  dnf_piece *p = piece;
  p->body(p->ctx, p->begin, p->end);
  return NULL;
}

static void dnf_threads_for(const dnf_runtime *rt, long n, dnf_body *body, void *ctx) {
  long threads = *(const long *)rt->state;
  threads = threads < n ? threads : n;
  threads = threads < MAX_THREADS ? (threads > 1 ? threads : 1) : MAX_THREADS;
  dnf_piece pieces[MAX_THREADS];
  pthread_t ids[MAX_THREADS];
  int started[MAX_THREADS] = {0};
  for (long t = 0; t < threads; t++)
    pieces[t] = (dnf_piece){body, ctx, n * t / threads, n * (t + 1) / threads};
  for (long t = 1; t < threads; t++) {
    started[t] = pthread_create(&ids[t], NULL, dnf_run_piece, &pieces[t]) == 0;
    if (!started[t]) dnf_run_piece(&pieces[t]);
  }
  dnf_run_piece(&pieces[0]);
  for (long t = 1; t < threads; t++)
    if (started[t]) pthread_join(ids[t], NULL);
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : ".";
  const char *threads_env = getenv("DNF_THREADS");
  long threads = threads_env ? atol(threads_env) : 2;
  const dnf_runtime runtime = {dnf_threads_for, &threads};
  int failed = 0;
  for (int c = 0; c < n_cases; c++) {
    const dnf_case *k = &cases[c];
    const void **ins = malloc(sizeof(void *) * (size_t)(k->n_in + 1));
    void **outs = malloc(sizeof(void *) * (size_t)(k->n_out + 1));
    for (int i = 0; i < k->n_in; i++) ins[i] = dnf_read(dir, &k->in[i]);
    for (int o = 0; o < k->n_out; o++) {
      outs[o] = aligned_alloc(64, (size_t)((k->out[o].bytes + 63) / 64 * 64 + 64));
      memset(outs[o], 0xff, (size_t)k->out[o].bytes);  /* NaN/-1: unwritten values show */
    }
    k->fn(ins, outs, &runtime);
    double max_err = 0.0;
    int ok = 1;
    for (int o = 0; o < k->n_out; o++) {
      void *want = dnf_read(dir, &k->out[o]);
      ok &= dnf_compare(&k->out[o], outs[o], want, &max_err);
      free(want);
      free(outs[o]);
    }
    for (int i = 0; i < k->n_in; i++) free((void *)ins[i]);
    free(ins);
    free(outs);
    printf("KERNEL %s max_abs_err %.3e %s\n", k->symbol, max_err, ok ? "ok" : "MISMATCH");
    failed += !ok;
  }
  printf("%d of %d kernels match (rtol=%g atol=%g)\n", n_cases - failed, n_cases, RTOL, ATOL);
  return failed ? 1 : 0;
}
