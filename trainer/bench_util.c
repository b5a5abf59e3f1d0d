// bench_util.c — defines what the bench commands share (bench_*): medians, figure lines,
// OpenBLAS loaded at run time, the STREAM triad, a child process's output.
#include "bench_util.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double bench_median(double *x, int n) {
    if (n <= 0) return 0.0;
    qsort(x, (size_t)n, sizeof *x, cmp_double);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

void bench_sleep(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

void bench_emit(int json, const char *name, const char *unit, double value, double ms, double baseline,
                const char *baseline_name) {
    const int has_base = baseline > 0;
    if (json) {
        sm_json j;
        sm_json_begin(&j);
        sm_json_str(&j, "name", name);
        sm_json_num(&j, unit, "%.6g", value);
        if (strcmp(unit, "ms")) sm_json_num(&j, "ms", "%.6g", ms);
        if (has_base) {
            char key[64];
            snprintf(key, sizeof key, "baseline_%s", unit);
            sm_json_str(&j, "baseline", baseline_name);
            sm_json_num(&j, key, "%.6g", baseline);
            sm_json_num(&j, "ratio", "%.4f", value / baseline);
        }
        sm_json_end(&j);
        fputs(j.buf, stdout);
    } else {
        printf("  %-46s %10.2f %-12s %10.3f ms", name, value, unit, ms);
        if (has_base) printf("   %-12s %10.2f   ratio %6.3f", baseline_name, baseline, value / baseline);
        printf("\n");
    }
    fflush(stdout);
}

// The OpenBLAS kernel family for this CPU's instruction set, set in the environment before
// OpenBLAS loads (here and in the PyTorch child, whose torch links OpenBLAS too). DESIGN.md says
// to clear OPENBLAS_CORETYPE so that OpenBLAS picks its best; but OpenBLAS 0.3.21 chooses by CPU
// model, and on a model it does not know (family 6 model 207, seen here) it falls back to
// Prescott, SSE3 at ~30 GFLOP/s, a baseline 7x too weak. The instruction set names the kernel
// it would pick on a model it knows: Cooperlake for AVX-512 with BF16 (as on Sapphire Rapids),
// SkylakeX for AVX-512, Haswell for AVX2. OPENBLAS_L2_SIZE is cleared (its own probe is right).
const char *bench_blas_core(void) {
    unsetenv("OPENBLAS_L2_SIZE");
    const char *core = NULL;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512bf16")) core = "Cooperlake";
    else if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) core = "SkylakeX";
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) core = "Haswell";
    if (core) setenv("OPENBLAS_CORETYPE", core, 1);
    else unsetenv("OPENBLAS_CORETYPE");
    return core ? core : "OpenBLAS's own choice";
}

int bench_blas_open(bench_blas *b, int threads) {
    memset(b, 0, sizeof *b);
    bench_blas_core();
    const char *names[] = {"libopenblas.so.0", "libopenblas.so"};
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !b->handle; i++)
        b->handle = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!b->handle) {
        sm_warn("OpenBLAS not found (%s): no sgemm baseline; install libopenblas0-pthread", dlerror());
        return -1;
    }
    b->sgemm = (bench_sgemm_fn)dlsym(b->handle, "cblas_sgemm");
    void (*set_threads)(int) = (void (*)(int))dlsym(b->handle, "openblas_set_num_threads");
    b->corename = (char *(*)(void))dlsym(b->handle, "openblas_get_corename");
    if (!b->sgemm) {
        sm_warn("libopenblas has no cblas_sgemm: no sgemm baseline");
        dlclose(b->handle);
        b->handle = NULL;
        return -1;
    }
    if (set_threads) set_threads(threads);
    return 0;
}

double bench_stream_gbps(int rounds) {
    const size_t n = (size_t)1 << 25;   // 3 x 128 MiB: far beyond the caches
    float *a = sm_arena(n * sizeof(float)), *b = sm_arena(n * sizeof(float)), *c = sm_arena(n * sizeof(float));
    for (size_t i = 0; i < n; i++) b[i] = c[i] = 1.0f;
    double t[64];
    if (rounds > 64) rounds = 64;
    if (rounds < 1) rounds = 1;
    for (int r = 0; r <= rounds; r++) {   // round 0 is a warm-up
        double t0 = sm_now_s();
#pragma omp parallel for simd schedule(static)
        for (size_t i = 0; i < n; i++) a[i] = b[i] + 3.0f * c[i];
        if (r) t[r - 1] = sm_now_s() - t0;
    }
    double s = bench_median(t, rounds);
    sm_free(a);
    sm_free(b);
    sm_free(c);
    return 12.0 * (double)n / s * 1e-9;
}

int bench_run(char *const argv[], const char *const *env, char *out, size_t out_cap, char *err_out, size_t err_cap) {
    int po[2], pe[2];
    out[0] = err_out[0] = '\0';
    if (pipe(po) != 0) return -1;
    if (pipe(pe) != 0) {
        close(po[0]);
        close(po[1]);
        return -1;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        close(po[0]), close(po[1]), close(pe[0]), close(pe[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(po[1], STDOUT_FILENO);
        dup2(pe[1], STDERR_FILENO);
        close(po[0]), close(po[1]), close(pe[0]), close(pe[1]);
        for (const char *const *e = env; e && *e; e++) putenv((char *)*e);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    size_t n_out = 0, n_err = 0;
    struct pollfd fds[2] = {{po[0], POLLIN, 0}, {pe[0], POLLIN, 0}};
    int open_fds = 2;
    while (open_fds > 0) {
        if (poll(fds, 2, -1) < 0 && errno != EINTR) break;
        for (int k = 0; k < 2; k++) {
            if (fds[k].fd < 0 || !(fds[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            char *buf = k ? err_out : out;
            size_t *n = k ? &n_err : &n_out, cap = k ? err_cap : out_cap;
            char sink[4096];
            ssize_t r = *n + 1 < cap ? read(fds[k].fd, buf + *n, cap - 1 - *n) : read(fds[k].fd, sink, sizeof sink);
            if (r <= 0) {
                close(fds[k].fd);
                fds[k].fd = -1;
                open_fds--;
            } else if (*n + 1 < cap) {
                *n += (size_t)r;
                buf[*n] = '\0';
            }
        }
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}
