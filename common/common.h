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

// Usage errors found while the ranks start (flags, input files), before their first collective:
// inside sm_usage_defer(), sm_fatal(SM_EXIT_USAGE, ...) records its message and longjmps to the
// jmp_buf instead of exiting, so that comm_usage_agree() can end every rank together: the lowest
// rank with an error prints its line once and all exit 2 cleanly (no MPI_Abort banner, no rank
// left waiting). Any other exit status still ends the process at once.
#include <setjmp.h>
void sm_usage_defer(jmp_buf *env);   // NULL: back to exiting at once
const char *sm_usage_deferred(void); // the recorded message, or NULL
void sm_usage_print(const char *msg);   // "smallmind: error: msg" (with this rank when several)
// Text from outside (an argument, a line of a file) as it may stand inside a one-line message: control
// characters as C escapes (\n, \t, \x01), at most max_bytes of it and then "...". Returns buf, which
// holds 4 x max_bytes + 4 bytes at most (cap smaller: cut there).
const char *sm_shown(const char *s, size_t max_bytes, char *buf, size_t cap);

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
// Element types. A tensor knows its dtype; a new number format is one row of sm_dtype_info
// (ggml's type_traits idea) that the table, the checkpoint code and the kernels' dispatch read.
//   SM_F32   float32: parameters, gradients, moments, activations (the training arenas)
//   SM_BF16  bfloat16 (uint16 storage: the top half of a float32, rounded to nearest even)
//   SM_Q8    int8 with one float32 scale per group of `group` consecutive elements along the last
//            dimension (symmetric: value = q * scale); the scales follow the int8 values in the
//            tensor's storage, 64-byte aligned
//   SM_F32P  float32 weight matrices packed once for the fp32 GEMM (inference: kernels.h's
//            matmul_pack_weight): each (rows, cols) matrix of the leading dimensions as ceil(rows /
//            group) panels of `group` rows (the GEMM's column-panel width), each stored column-major
//            (cols x group floats, rows past the end zero)
//   SM_Q8P   SM_Q8 matrices packed once for the INT8 GEMM path in use (inference: kernels.h's
//            matmul_q8_pack_weight; the layout is the path's, its size the caller's)
typedef enum { SM_F32 = 0, SM_BF16 = 1, SM_Q8 = 2, SM_F32P = 3, SM_Q8P = 4, SM_DTYPE_COUNT } sm_dtype;
typedef struct {
    const char *name;   // "f32", "bf16", "q8"
    size_t elem_bytes;  // bytes of one element's value (Q8: 1; the scales come on top)
} sm_dtype_info;
extern const sm_dtype_info SM_DTYPE_INFO[SM_DTYPE_COUNT];

// ---------------------------------------------------------------------------
// Named-tensor table: one arena, many named views (name, dtype, shape, offset).
#define SM_MAX_DIMS 4
#define SM_MAX_TENSORS 64
typedef struct {
    const char *name;
    sm_dtype dtype;
    int ndim;
    size_t shape[SM_MAX_DIMS];
    size_t n_elems;    // product of the shape
    size_t n_bytes;    // its storage in the arena (Q8: values and scales), before padding
    size_t offset;     // in bytes, from the start of the arena (a multiple of 64)
    int group;         // SM_Q8: elements per scale, along the last dimension; SM_F32P: the panel
                       // width (rows of a matrix per panel); else 0
    void *data;        // base + offset once the table is bound
    float *ptr;        // data, for SM_F32 tensors; NULL for the others
    float *scales;     // SM_Q8: n_elems / group scales (row-major over groups); else NULL
} sm_tensor;

typedef struct {
    sm_tensor t[SM_MAX_TENSORS];
    int count;
    size_t n_bytes;    // total, each tensor padded to 64 bytes
    void *base;
} sm_table;

// Appends a tensor of the given dtype and shape (ndim dims); returns its index. For SM_Q8,
// group divides the last dimension (the quantisation group); for SM_F32P it is the panel width
// (ndim >= 2); for other dtypes it is ignored.
int sm_table_add_typed(sm_table *tab, const char *name, sm_dtype dtype, int ndim, const size_t *shape, int group);
// The same with the storage's size given by the caller (a layout only the kernels know: SM_Q8P).
int sm_table_add_sized(sm_table *tab, const char *name, sm_dtype dtype, int ndim, const size_t *shape, int group,
                       size_t n_bytes);
// sm_table_add_typed(tab, name, SM_F32, ndim, shape, 0)
int sm_table_add(sm_table *tab, const char *name, int ndim, const size_t *shape);
// Allocates one arena for the whole table (zeroed) and points every view into it.
void sm_table_alloc(sm_table *tab);
// Points the views into an arena the caller owns (tab->n_bytes long).
void sm_table_bind(sm_table *tab, void *base);
const sm_tensor *sm_table_find(const sm_table *tab, const char *name);

// An all-float32 table (the training arenas: parameters, gradients, moments) seen as one flat
// float vector, which the optimizer, the gradient sync and the checkpoints walk. Padding between
// tensors is part of it (zero, and never read as a value). Checked: every tensor is SM_F32.
float *sm_table_f32(const sm_table *tab);
size_t sm_table_n_f32(const sm_table *tab);   // its length in floats
// A tensor's offset in floats from its arena's base (SM_F32 tables).
static inline size_t sm_tensor_f32_offset(const sm_tensor *t) { return t->offset / sizeof(float); }

// ---------------------------------------------------------------------------
// The model's configuration: the one struct the model, the checkpoints (which store each field
// as a root attribute) and the CLI share. GPT-2's shapes; see DESIGN.md's Model section.
#define SM_TOKENIZER_NAME_MAX 16
typedef struct {
    int n_layer;            // L
    int n_head;             // H
    int n_embd;             // C
    int max_seq_len;        // maxT, the context
    int vocab_size;         // V
    int padded_vocab_size;  // Vp: V rounded up to a multiple of 64
    char tokenizer[SM_TOKENIZER_NAME_MAX];   // "byte", "gpt2": what the token ids mean
} sm_model_config;

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
// mkdir -p: path and any missing parents (mode 0755). Returns 0, or -1 with "cannot create
// directory: <strerror> (<the component>)" / "... exists but is not a directory (<path>)" in err;
// *usage set to 1 when the cause is the path itself (a component is a file), 0 for the system.
int sm_mkdir_p(const char *path, int *usage, char *err, size_t errlen);
// The ranks a launcher started this process among (mpirun: OMPI_COMM_WORLD_SIZE; srun: a step's
// SLURM_NTASKS), and this process's rank among them; 1 and 0 when started alone. For commands that
// run as one process and never call MPI_Init.
int sm_launched_ranks(int *rank);
// Opens a file that must be a regular file, without ever blocking: open(2) with
// flags | O_NONBLOCK | O_NOCTTY | O_CLOEXEC (mode 0644 when flags hold O_CREAT), so a FIFO without a
// writer, a tty or a device never hangs the open; then fstat(2), and anything but a regular file is
// refused; O_NONBLOCK is cleared again. `what` names the file in messages ("shard", "checkpoint").
// Returns the descriptor (and *size_out = its size in bytes, when non-NULL), or -1 with errno set and
// the <what> of a one-line error in err, for the caller to add its "(<where>)": "cannot open WHAT:
// <strerror>" or "WHAT is not a regular file (a FIFO)" (errno EINVAL).
int sm_open_regular(const char *path, int flags, const char *what, uint64_t *size_out, char *err, size_t errlen);

// Index of the first of x[0..n) that is not finite (or, with nonneg, is negative; -0 is fine), else
// n. One vectorised pass: an OR over blocks of 1024 floats, the index searched only in a bad block.
size_t sm_first_bad_float(const float *x, size_t n, int nonneg);
// Copies n floats from src to dst (any alignment; from dst's first 64-byte boundary on with non-temporal
// stores, which skip reading dst's lines into the cache: for a buffer written once and read later by
// another thread) and checks them as sm_first_bad_float does, in the same pass. Returns the index of the
// first bad value (every value is copied all the same), else n. Issues no store fence: the caller fences
// (_mm_sfence, or a mutex) before another thread reads dst.
size_t sm_copy_check(void *dst, const float *src, size_t n, int nonneg);

// Where copies of ranges of the float32 parameter arena go as an optimizer pass writes them: a
// checkpoint's buffer, filled by the AdamW pass of the step that saves (trainer/optim.c) instead of a
// second read of the state afterwards (checkpoints/async.c builds it).
typedef struct {
    size_t off, n;        // arena floats [off, off + n)
    unsigned char *dst;   // where they go (4n bytes)
} sm_capture_seg;
typedef struct {
    const sm_capture_seg *seg[3];   // params, m, v: each sorted by off, disjoint
    int n[3];
    int done;             // set by the pass that filled every segment
    int bad;              // set when a copied value was not finite (or, for v, negative)
} sm_capture;

// ---------------------------------------------------------------------------
// JSON output: one object built in a fixed buffer (no allocation), strings escaped (RFC 8259:
// quote, backslash and control characters), non-finite numbers written as null. Used for the run
// log, config.json and the --json outputs.
//     sm_json j; sm_json_begin(&j); sm_json_str(&j, "event", "step"); sm_json_int(&j, "step", 3);
//     sm_json_end(&j); fputs(j.buf, f);     // {"event":"step","step":3}\n
#define SM_JSON_MAX 32768
typedef struct {
    char buf[SM_JSON_MAX];
    size_t len;
    int n_fields;
} sm_json;
void sm_json_begin(sm_json *j);
void sm_json_str(sm_json *j, const char *key, const char *val);
void sm_json_int(sm_json *j, const char *key, long long v);
// fmt is a printf format for one double ("%.6f", "%.9g"): the precision the field needs
void sm_json_num(sm_json *j, const char *key, const char *fmt, double v);
// A value that is already JSON (a nested object or array)
void sm_json_raw(sm_json *j, const char *key, const char *json);
// Closes the object and ends the line. A value that did not fit is a programmer error (exit 1).
void sm_json_end(sm_json *j);
// Writes s as a JSON string literal (quotes included) to f.
void sm_json_fput_str(FILE *f, const char *s);

// Tests: |a - r| <= atol + rtol*|r| elementwise; prints the worst element on failure.
int sm_allclose(const char *what, const float *a, const float *ref, size_t n, double atol, double rtol);

// Called with +k at the start of training step k and -k once its training work is done
// (before evaluation or checkpointing, which may allocate).
// Weak: bound only when tests/alloc_counter.so is preloaded; a no-op otherwise.
void sm_step_mark(int step) __attribute__((weak));
static inline void sm_mark_step(int step) {
    if (sm_step_mark) sm_step_mark(step);
}
