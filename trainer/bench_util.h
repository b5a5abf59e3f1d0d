// bench_util.h — (internal to trainer/) what the `smallmind bench` commands share: medians over
// rounds, the figure lines (a table, or one JSON object per figure with its baseline and ratio),
// OpenBLAS loaded at run time, the STREAM triad, and a child process's output (the PyTorch and
// node baselines).
#pragma once
#include <stddef.h>

// The median of x (n values; x is sorted in place).
double bench_median(double *x, int n);
void bench_sleep(double seconds);

// One figure: a table line, or with json one object {"name", unit: value, "ms", and with a baseline
// > 0 "baseline", "baseline_<unit>", "ratio" = value / baseline}.
void bench_emit(int json, const char *name, const char *unit, double value, double ms, double baseline,
                const char *baseline_name);

// OpenBLAS's cblas_sgemm, loaded with dlopen (never linked into training), its kernel chosen from
// the CPU's instruction set as bench.c explains (OPENBLAS_CORETYPE; OPENBLAS_L2_SIZE cleared).
typedef void (*bench_sgemm_fn)(int order, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                               const float *B, int ldb, float beta, float *C, int ldc);
typedef struct {
    void *handle;
    bench_sgemm_fn sgemm;   // NULL: not available (a warning was printed)
    char *(*corename)(void);  // openblas_get_corename, or NULL
} bench_blas;
int bench_blas_open(bench_blas *b, int threads);
const char *bench_blas_core(void);   // sets the environment; returns the kernel family named
enum { BENCH_ROW_MAJOR = 101, BENCH_NO_TRANS = 111, BENCH_TRANS = 112 };

// STREAM triad a = b + 3 c over 3 x 128 MiB with the OpenMP threads in use: GB/s at 12 bytes per
// element (two reads, one write), the median of `rounds` rounds.
double bench_stream_gbps(int rounds);

// Runs argv (argv[0] a path, or a name looked up in PATH) with the extra environment `env` ("NAME=value" strings, NULL-ended, may
// be NULL) and collects its stdout and stderr (each at most cap-1 bytes, NUL-ended). Returns the
// exit status, or -1 when it could not run.
int bench_run(char *const argv[], const char *const *env, char *out, size_t out_cap, char *err_out, size_t err_cap);
