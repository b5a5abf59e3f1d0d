// common.c — errors, counted allocation, the named-tensor table, RNG, atomic writes, allclose.
#include "common.h"
#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

// ---------------------------------------------------------------------------
// Errors
static sm_abort_fn g_abort_hook;   // set once by comm_init; read on the error path only
static int g_rank, g_world = 1;

void sm_set_abort_hook(sm_abort_fn fn) { g_abort_hook = fn; }
void sm_set_log_rank(int rank, int world_size) { g_rank = rank; g_world = world_size; }
int sm_log_rank(void) { return g_rank; }

static void vreport(const char *kind, const char *fmt, va_list ap) {
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (g_world > 1)
        fprintf(stderr, "smallmind: [rank %d] %s: %s\n", g_rank, kind, msg);
    else
        fprintf(stderr, "smallmind: %s: %s\n", kind, msg);
    fflush(stderr);
}

static jmp_buf *g_usage_jmp;
static char g_usage_msg[1024];
static int g_usage_have;

void sm_usage_defer(jmp_buf *env) {
    g_usage_jmp = env;
    if (env) g_usage_have = 0;
}

const char *sm_usage_deferred(void) { return g_usage_have ? g_usage_msg : NULL; }

void sm_usage_print(const char *msg) {
    if (g_world > 1)
        fprintf(stderr, "smallmind: [rank %d] error: %s\n", g_rank, msg);
    else
        fprintf(stderr, "smallmind: error: %s\n", msg);
    fflush(stderr);
}

const char *sm_shown(const char *s, size_t max_bytes, char *buf, size_t cap) {
    size_t k = 0, i = 0;
    if (!cap) return buf;
    for (const unsigned char *p = (const unsigned char *)s; *p && k + 5 < cap; p++, i++) {
        if (i == max_bytes) {
            if (k + 4 <= cap) k += (size_t)snprintf(buf + k, cap - k, "...");
            break;
        }
        if (*p >= 0x20 && *p != 0x7F) buf[k++] = (char)*p;
        else if (*p == '\n') buf[k++] = '\\', buf[k++] = 'n';
        else if (*p == '\t') buf[k++] = '\\', buf[k++] = 't';
        else k += (size_t)snprintf(buf + k, cap - k, "\\x%02X", *p);
    }
    buf[k] = '\0';
    return buf;
}

void sm_fatal(int exit_status, const char *fmt, ...) {
    va_list ap;
    if (exit_status == SM_EXIT_USAGE && g_usage_jmp) {
        va_start(ap, fmt);
        vsnprintf(g_usage_msg, sizeof g_usage_msg, fmt, ap);
        va_end(ap);
        g_usage_have = 1;
        jmp_buf *env = g_usage_jmp;
        g_usage_jmp = NULL;
        longjmp(*env, 1);
    }
    va_start(ap, fmt);
    vreport("error", fmt, ap);
    va_end(ap);
    fflush(stdout);
    if (g_abort_hook) g_abort_hook(exit_status);
    exit(exit_status);
}

void sm_warn(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vreport("warning", fmt, ap);
    va_end(ap);
}

void sm_info(const char *fmt, ...) {
    if (g_rank != 0) return;
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
}

void sm_check_failed(const char *file, int line, const char *cond, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    sm_fatal(SM_EXIT_RUNTIME, "%s (%s:%d: check '%s' failed)", msg, file, line, cond);
}

// ---------------------------------------------------------------------------
// Memory
#define SM_HUGE_PAGE ((size_t)2 << 20)
static atomic_uint_fast64_t g_alloc_count;

uint64_t sm_alloc_count(void) { return atomic_load(&g_alloc_count); }

void *sm_malloc_(size_t n_bytes, const char *file, int line) {
    atomic_fetch_add(&g_alloc_count, 1);
    void *p = malloc(n_bytes ? n_bytes : 1);
    if (!p) sm_fatal(SM_EXIT_RUNTIME, "out of memory allocating %zu bytes (%s:%d)", n_bytes, file, line);
    return p;
}

void *sm_calloc_(size_t n, size_t size, const char *file, int line) {
    atomic_fetch_add(&g_alloc_count, 1);
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) sm_fatal(SM_EXIT_RUNTIME, "out of memory allocating %zu x %zu bytes (%s:%d)", n, size, file, line);
    return p;
}

void *sm_arena_(size_t n_bytes, const char *file, int line) {
    atomic_fetch_add(&g_alloc_count, 1);
    // Arenas of 2 MiB or more sit on 2 MiB boundaries and ask for transparent huge pages: one
    // page fault per 2 MiB at the first touch instead of 512, and far fewer TLB misses in the
    // kernels' strided walks (a GEMM packing 14 rows of a (N, 50304) logits matrix touches 14
    // pages per 64 bytes of each row). Where THP is off, madvise fails harmlessly.
    size_t align = n_bytes >= SM_HUGE_PAGE ? SM_HUGE_PAGE : 64;
    size_t rounded = (n_bytes + align - 1) / align * align;
    void *p = NULL;
    int rc = posix_memalign(&p, align, rounded ? rounded : 64);
    if (rc != 0 || !p)
        sm_fatal(SM_EXIT_RUNTIME, "out of memory allocating an arena of %zu bytes (%s:%d)", n_bytes, file, line);
    if (align == SM_HUGE_PAGE) (void)madvise(p, rounded, MADV_HUGEPAGE);   // advisory: failure is not an error
    memset(p, 0, rounded);   // first touch happens once, here, not inside a step
    return p;
}

void sm_free(void *p) { free(p); }

// ---------------------------------------------------------------------------
// Named-tensor table
const sm_dtype_info SM_DTYPE_INFO[SM_DTYPE_COUNT] = {
    [SM_F32] = {"f32", 4},
    [SM_BF16] = {"bf16", 2},
    [SM_Q8] = {"q8", 1},
    [SM_F32P] = {"f32p", 4},
    [SM_Q8P] = {"q8p", 1},
};

static size_t pad64(size_t n) { return (n + 63) / 64 * 64; }

int sm_table_add_typed(sm_table *tab, const char *name, sm_dtype dtype, int ndim, const size_t *shape, int group) {
    SM_CHECK(tab->count < SM_MAX_TENSORS, "tensor table full adding '%s'", name);
    SM_CHECK(ndim >= 1 && ndim <= SM_MAX_DIMS, "tensor '%s' has %d dims", name, ndim);
    SM_CHECK(dtype >= 0 && dtype < SM_DTYPE_COUNT, "tensor '%s' has an unknown dtype %d", name, (int)dtype);
    sm_tensor *t = &tab->t[tab->count];
    memset(t, 0, sizeof *t);
    t->name = name;
    t->dtype = dtype;
    t->ndim = ndim;
    t->n_elems = 1;
    for (int d = 0; d < SM_MAX_DIMS; d++) t->shape[d] = d < ndim ? shape[d] : 1;
    for (int d = 0; d < ndim; d++) t->n_elems *= shape[d];
    t->n_bytes = t->n_elems * SM_DTYPE_INFO[dtype].elem_bytes;
    if (dtype == SM_Q8) {
        SM_CHECK(group > 0 && shape[ndim - 1] % (size_t)group == 0,
                 "tensor '%s': quantisation group %d does not divide its last dimension %zu", name, group,
                 shape[ndim - 1]);
        t->group = group;
        t->n_bytes = pad64(t->n_bytes) + t->n_elems / (size_t)group * sizeof(float);
    }
    if (dtype == SM_F32P) {
        SM_CHECK(group > 0 && ndim >= 2, "tensor '%s': packed with panel width %d over %d dims", name, group, ndim);
        t->group = group;
        const size_t rows = shape[ndim - 2], cols = shape[ndim - 1], mats = t->n_elems / (rows * cols);
        t->n_bytes = mats * ((rows + (size_t)group - 1) / (size_t)group * (size_t)group) * cols * sizeof(float);
    }
    t->offset = tab->n_bytes;
    tab->n_bytes += pad64(t->n_bytes);
    return tab->count++;
}

int sm_table_add_sized(sm_table *tab, const char *name, sm_dtype dtype, int ndim, const size_t *shape, int group,
                       size_t n_bytes) {
    SM_CHECK(dtype == SM_Q8P, "tensor '%s': only packed INT8 takes its size from the caller", name);
    int i = sm_table_add_typed(tab, name, dtype, ndim, shape, group);
    sm_tensor *t = &tab->t[i];
    tab->n_bytes -= pad64(t->n_bytes);
    t->group = group;
    t->n_bytes = n_bytes;
    tab->n_bytes += pad64(t->n_bytes);
    return i;
}

int sm_table_add(sm_table *tab, const char *name, int ndim, const size_t *shape) {
    return sm_table_add_typed(tab, name, SM_F32, ndim, shape, 0);
}

void sm_table_bind(sm_table *tab, void *base) {
    tab->base = base;
    for (int i = 0; i < tab->count; i++) {
        sm_tensor *t = &tab->t[i];
        t->data = (char *)base + t->offset;
        t->ptr = t->dtype == SM_F32 ? (float *)t->data : NULL;
        t->scales = t->dtype == SM_Q8 ? (float *)((char *)t->data + pad64(t->n_elems)) : NULL;
    }
}

void sm_table_alloc(sm_table *tab) { sm_table_bind(tab, sm_arena(tab->n_bytes)); }

const sm_tensor *sm_table_find(const sm_table *tab, const char *name) {
    for (int i = 0; i < tab->count; i++)
        if (strcmp(tab->t[i].name, name) == 0) return &tab->t[i];
    return NULL;
}

static void check_all_f32(const sm_table *tab) {
    for (int i = 0; i < tab->count; i++)
        SM_CHECK(tab->t[i].dtype == SM_F32, "tensor '%s' is %s where float32 is required", tab->t[i].name,
                 SM_DTYPE_INFO[tab->t[i].dtype].name);
}

float *sm_table_f32(const sm_table *tab) {
    check_all_f32(tab);
    return (float *)tab->base;
}

size_t sm_table_n_f32(const sm_table *tab) {
    check_all_f32(tab);
    return tab->n_bytes / sizeof(float);
}

// ---------------------------------------------------------------------------
// JSON output
static void json_put(sm_json *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void json_put(sm_json *j, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(j->buf + j->len, sizeof j->buf - j->len, fmt, ap);
    va_end(ap);
    SM_CHECK(n >= 0 && (size_t)n < sizeof j->buf - j->len, "a JSON line does not fit its %d-byte buffer", SM_JSON_MAX);
    j->len += (size_t)n;
}

// s as a JSON string: " and \ escaped, control characters as \uXXXX; other bytes as they are
// (UTF-8 passes through)
static void json_put_str(sm_json *j, const char *s) {
    json_put(j, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') json_put(j, "\\%c", *p);
        else if (*p == '\n') json_put(j, "\\n");
        else if (*p == '\t') json_put(j, "\\t");
        else if (*p < 0x20 || *p == 0x7f) json_put(j, "\\u%04x", *p);
        else json_put(j, "%c", *p);
    }
    json_put(j, "\"");
}

static void json_key(sm_json *j, const char *key) {
    if (j->n_fields++) json_put(j, ",");
    json_put_str(j, key);
    json_put(j, ":");
}

void sm_json_begin(sm_json *j) {
    j->len = 0;
    j->n_fields = 0;
    j->buf[0] = '\0';
    json_put(j, "{");
}

void sm_json_str(sm_json *j, const char *key, const char *val) {
    json_key(j, key);
    json_put_str(j, val);
}

void sm_json_int(sm_json *j, const char *key, long long v) {
    json_key(j, key);
    json_put(j, "%lld", v);
}

void sm_json_num(sm_json *j, const char *key, const char *fmt, double v) {
    json_key(j, key);
    if (!isfinite(v)) {
        json_put(j, "null");
        return;
    }
    char tmp[64];
    snprintf(tmp, sizeof tmp, fmt, v);
    json_put(j, "%s", tmp);
}

void sm_json_raw(sm_json *j, const char *key, const char *json) {
    json_key(j, key);
    json_put(j, "%s", json);
}

void sm_json_end(sm_json *j) { json_put(j, "}\n"); }

void sm_json_fput_str(FILE *f, const char *s) {
    sm_json j;
    j.len = 0;
    j.n_fields = 0;
    json_put_str(&j, s);
    fputs(j.buf, f);
}

// ---------------------------------------------------------------------------
// RNG: xoshiro256** (Blackman & Vigna), seeded by splitmix64.
static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void sm_rng_seed(sm_rng *r, uint64_t seed, uint64_t stream) {
    uint64_t x = seed ^ (stream * 0xD1B54A32D192ED03ull);
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t sm_rng_u64(sm_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float sm_rng_uniform(sm_rng *r) { return (float)(sm_rng_u64(r) >> 40) * (1.0f / 16777216.0f); }

float sm_rng_normal(sm_rng *r) {
    // Box-Muller in double; u1 in (0, 1] so log() is finite
    double u1 = ((double)(sm_rng_u64(r) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)(sm_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

uint64_t sm_rng_below(sm_rng *r, uint64_t n) {
    // Lemire-free simple rejection: unbiased
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = sm_rng_u64(r);
    while (x >= limit);
    return x % n;
}

// ---------------------------------------------------------------------------
double sm_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int sm_write_file_atomic(const char *path, const void *data, size_t n_bytes, char *err, size_t errlen) {
    char tmp[4096], dir[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    snprintf(dir, sizeof dir, "%s", path);
    const char *op = "open";
    int fd = -1;
    // a fresh temporary: whatever a crashed writer left under its name (even a FIFO, which an
    // open for writing would wait on forever) is removed first
    if (unlink(tmp) != 0 && errno != ENOENT) goto error;
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) goto error;
    op = "write";
    const char *p = data;
    size_t left = n_bytes;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            goto error_close;
        }
        p += w;
        left -= (size_t)w;
    }
    op = "fsync";
    if (fsync(fd) != 0) goto error_close;
    op = "close";
    if (close(fd) != 0) { fd = -1; goto error_unlink; }
    fd = -1;
    op = "rename";
    if (rename(tmp, path) != 0) goto error_unlink;
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd);   // best effort: some filesystems refuse fsync on directories
        close(dfd);
    }
    return 0;
error_close:
    close(fd);
error_unlink:
    unlink(tmp);
error:
    snprintf(err, errlen, "cannot %s %s: %s", op, fd < 0 && strcmp(op, "open") == 0 ? tmp : path, strerror(errno));
    return -1;
}

static const char *file_kind(mode_t m) {
    return S_ISDIR(m) ? "a directory" : S_ISFIFO(m) ? "a FIFO" : S_ISCHR(m) ? "a character device"
         : S_ISBLK(m) ? "a block device" : S_ISSOCK(m) ? "a socket" : "not a plain file";
}

int sm_open_regular(const char *path, int flags, const char *what, uint64_t *size_out, char *err, size_t errlen) {
    const char *op = "open";
    int fd = open(path, flags | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, 0644), e;
    if (fd < 0) goto error;
    struct stat st;
    op = "stat";
    if (fstat(fd, &st) != 0) goto error;
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s is not a regular file (%s)", what, file_kind(st.st_mode));
        close(fd);
        errno = EINVAL;
        return -1;
    }
    op = "set up";
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) goto error;
    if (size_out) *size_out = (uint64_t)st.st_size;
    return fd;
error:
    e = errno;
    snprintf(err, errlen, "cannot %s %s: %s", op, what, strerror(e));
    if (fd >= 0) close(fd);
    errno = e;
    return -1;
}

size_t sm_first_bad_float(const float *x, size_t n, int nonneg) {
    const uint32_t *u = (const uint32_t *)(const void *)x;
    const uint32_t neg = nonneg ? 0x80000000u : 0xffffffffu;   // u > neg: negative and not -0
    for (size_t i = 0; i < n; i += 1024) {
        size_t e = n - i < 1024 ? n : i + 1024;
        uint32_t acc = 0;
        for (size_t j = i; j < e; j++) acc |= ((u[j] & 0x7f800000u) == 0x7f800000u) | (u[j] > neg);
        if (!acc) continue;
        for (size_t j = i; j < e; j++)
            if ((u[j] & 0x7f800000u) == 0x7f800000u || u[j] > neg) return j;
    }
    return n;
}

size_t sm_copy_check(void *dst_, const float *src, size_t n, int nonneg) {
    unsigned char *dst = dst_;
    size_t head = (64 - (uintptr_t)dst % 64) % 64;          // bytes to dst's next 64-byte boundary
    head = head % sizeof(float) ? n : head / sizeof(float);   // not reachable in whole floats: all plain
    if (head > n) head = n;
    memcpy(dst, src, head * sizeof(float));
    size_t i = head, flagged = n;   // flagged: the first streamed block holding a bad value
#if defined(__AVX512F__) || defined(__SSE2__)
    const uint32_t neg = nonneg ? 0x80000000u : 0xffffffffu;   // bits above neg: negative and not -0
#endif
#if defined(__AVX512F__)
    const __m512i expm = _mm512_set1_epi32(0x7f800000), negv = _mm512_set1_epi32((int)neg);
    for (; i + 16 <= n; i += 16) {
        __m512i x = _mm512_loadu_si512((const void *)(src + i));
        if ((_mm512_cmpeq_epi32_mask(_mm512_and_si512(x, expm), expm) | _mm512_cmpgt_epu32_mask(x, negv)) && flagged == n)
            flagged = i;
        _mm512_stream_si512((void *)(dst + i * sizeof(float)), x);
    }
#elif defined(__SSE2__)
    // unsigned x > neg as signed (x ^ 2^31) > (neg ^ 2^31)
    const __m128i expm = _mm_set1_epi32(0x7f800000), flip = _mm_set1_epi32((int)0x80000000u);
    const __m128i negv = _mm_set1_epi32((int)(neg ^ 0x80000000u));
    for (; i + 4 <= n; i += 4) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(src + i));
        __m128i b = _mm_or_si128(_mm_cmpeq_epi32(_mm_and_si128(x, expm), expm), _mm_cmpgt_epi32(_mm_xor_si128(x, flip), negv));
        if (_mm_movemask_epi8(b) && flagged == n) flagged = i;
        _mm_stream_si128((__m128i *)(void *)(dst + i * sizeof(float)), x);
    }
#endif
    memcpy(dst + i * sizeof(float), src + i, (n - i) * sizeof(float));
    // the first bad index: in the head, else from the flagged block on, else in the plain tail
    size_t bad = sm_first_bad_float(src, head, nonneg);
    if (bad < head) return bad;
    size_t from = flagged < n ? flagged : i;
    bad = sm_first_bad_float(src + from, n - from, nonneg);
    return bad < n - from ? from + bad : n;
}

int sm_allclose(const char *what, const float *a, const float *ref, size_t n, double atol, double rtol) {
    size_t worst = 0, n_bad = 0;
    double worst_excess = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)ref[i]);
        double bound = atol + rtol * fabs((double)ref[i]);
        double excess = isnan(d) ? INFINITY : d - bound;
        if (excess > 0) n_bad++;
        if (excess > worst_excess) { worst_excess = excess; worst = i; }
    }
    if (n_bad) {
        fprintf(stderr, "allclose %s: %zu of %zu elements out of tolerance (atol %g rtol %g); worst [%zu]: %.9g vs ref %.9g\n",
                what, n_bad, n, atol, rtol, worst, (double)a[worst], (double)ref[worst]);
        return 0;
    }
    return 1;
}

int sm_mkdir_p(const char *path, int *usage, char *err, size_t errlen) {
    char buf[4096];
    *usage = 0;
    if ((size_t)snprintf(buf, sizeof buf, "%s", path) >= sizeof buf) {
        *usage = 1;
        snprintf(err, errlen, "directory path too long (%.200s...)", path);
        return -1;
    }
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;
            *p = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
                *usage = errno == ENOTDIR;
                snprintf(err, errlen, "cannot create directory: %s (%s)", strerror(errno), buf);
                return -1;
            }
            *p = saved;
            if (!saved) break;
        }
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        *usage = 1;
        snprintf(err, errlen, "exists but is not a directory (%s)", path);
        return -1;
    }
    return 0;
}

int sm_launched_ranks(int *rank) {
    const char *size = getenv("OMPI_COMM_WORLD_SIZE"), *r = getenv("OMPI_COMM_WORLD_RANK");
    if (!size && getenv("SLURM_STEP_NUM_TASKS")) {   // srun's tasks (not a batch script's own step)
        size = getenv("SLURM_STEP_NUM_TASKS");
        r = getenv("SLURM_PROCID");
    }
    *rank = r ? atoi(r) : 0;
    int n = size ? atoi(size) : 1;
    return n > 1 ? n : 1;
}
