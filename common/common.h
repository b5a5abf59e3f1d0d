// common.h — the one shared floor: check macros, errors, the counted allocator,
// the named-tensor table, the project RNG and test helpers (allclose).
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

// ---------------------------------------------------------------------------
// Errors. Every message is one line on stderr:
//   smallmind: [rank R] error: <what> (<where>)
// sm_fatal() ends the process with the given exit status; once comm/ has installed
// an abort hook (multi-rank runs) it calls that instead, so no rank hangs another.
// SM_EXIT_STOPPED: stopped by a signal after writing a checkpoint, not finished (requeue, resume;
// EX_TEMPFAIL in sysexits.h).
enum { SM_EXIT_OK = 0, SM_EXIT_RUNTIME = 1, SM_EXIT_USAGE = 2, SM_EXIT_STOPPED = 75 };

typedef void (*sm_abort_fn)(int exit_status);
void sm_set_abort_hook(sm_abort_fn fn);   // comm/ installs MPI_Abort here
void sm_set_log_rank(int rank, int world_size);
int sm_log_rank(void);

void sm_fatal(int exit_status, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
void sm_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
// rank-0-only informational line to stdout
void sm_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// CHECK(cond, fmt, ...): a runtime failure (exit 1) naming file:line.
#define SM_CHECK(cond, ...)                                                                  \
    do {                                                                                     \
        if (!(cond)) sm_check_failed(__FILE__, __LINE__, #cond, __VA_ARGS__);                \
    } while (0)
void sm_check_failed(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 4, 5)));

// ---------------------------------------------------------------------------
// Memory. Every allocation smallmind makes goes through these; they count calls so
// tests can prove a training step allocates nothing. sm_alloc_arena() returns
// 64-byte-aligned memory that is zeroed (touched once, here, at start-up).
void *sm_malloc_(size_t n_bytes, const char *file, int line);
void *sm_calloc_(size_t n, size_t size, const char *file, int line);
void *sm_arena_(size_t n_bytes, const char *file, int line);
#define sm_malloc(n) sm_malloc_((n), __FILE__, __LINE__)
#define sm_calloc(n, s) sm_calloc_((n), (s), __FILE__, __LINE__)
#define sm_arena(n) sm_arena_((n), __FILE__, __LINE__)
void sm_free(void *p);
uint64_t sm_alloc_count(void);   // calls to sm_malloc/sm_calloc/sm_arena so far

// ---------------------------------------------------------------------------
// Named-tensor table: one arena, many named views (name, shape, offset).
#define SM_MAX_DIMS 4
#define SM_MAX_TENSORS 64
typedef struct {
    const char *name;
    int ndim;
    size_t shape[SM_MAX_DIMS];
    size_t n_floats;
    size_t offset;   // in floats, from the start of the arena
    float *ptr;      // base + offset once the table is bound
} sm_tensor;

typedef struct {
    sm_tensor t[SM_MAX_TENSORS];
    int count;
    size_t n_floats;   // total, each tensor padded to 16 floats (64 bytes)
    float *base;
} sm_table;

// Appends a tensor of the given shape (ndim dims); returns its index.
int sm_table_add(sm_table *tab, const char *name, int ndim, const size_t *shape);
// Allocates one arena for the whole table (zeroed) and points every view into it.
void sm_table_alloc(sm_table *tab);
// Points the views into an arena the caller owns (n_floats long).
void sm_table_bind(sm_table *tab, float *base);
const sm_tensor *sm_table_find(const sm_table *tab, const char *name);

// ---------------------------------------------------------------------------
// RNG: xoshiro256** seeded through splitmix64. State is 4 x uint64 so checkpoints can
// save it. Normal variates by Box-Muller (no cached second value: the state is all).
typedef struct { uint64_t s[4]; } sm_rng;
void sm_rng_seed(sm_rng *r, uint64_t seed, uint64_t stream);
uint64_t sm_rng_u64(sm_rng *r);
float sm_rng_uniform(sm_rng *r);         // [0, 1)
float sm_rng_normal(sm_rng *r);          // N(0, 1)
uint64_t sm_rng_below(sm_rng *r, uint64_t n);   // uniform in [0, n), unbiased

// ---------------------------------------------------------------------------
// Small utilities
double sm_now_s(void);   // monotonic seconds
// Writes `n_bytes` to `path` atomically: PATH.tmp, fsync, rename, fsync dir.
// Returns 0, or -1 with a message in err.
int sm_write_file_atomic(const char *path, const void *data, size_t n_bytes, char *err, size_t errlen);

// Tests: |a - r| <= atol + rtol*|r| elementwise; prints the worst element on failure.
int sm_allclose(const char *what, const float *a, const float *ref, size_t n, double atol, double rtol);

// Called with +k at the start of training step k and -k once its training work is done
// (before evaluation or checkpointing, which may allocate).
// Weak: bound only when tests/alloc_counter.so is preloaded; a no-op otherwise.
void sm_step_mark(int step) __attribute__((weak));
static inline void sm_mark_step(int step) {
    if (sm_step_mark) sm_step_mark(step);
}
