// test_checkpoints.c — CUnit + MPI tests of checkpoints/, and modes for the CTest fixtures.
// Bit-exact round trips, resharding, corrupt, truncated, foreign and incompatible files, keep K,
// failing saves; modes: a file written at 2 ranks read at 1 and 4 and by h5py, kill -9 mid-save,
// a bench.
//   test_checkpoints --dir BASE                 the CUnit suite (any number of ranks)
//   test_checkpoints --write-fixture DIR        step 42 + DIR/expected.json (for h5py)
//   test_checkpoints --load-fixture DIR         loads it at this world size, checks every value
//   test_checkpoints --crash-save DIR STAGE     saves step 1, then step 2 paused at STAGE (never returns)
//   test_checkpoints --crash-save-async DIR STAGE  the same through --ckpt-async's writer thread
//   test_checkpoints --async-pair DIR           DIR/sync and DIR/async: one state saved both ways (h5py compares)
//   test_checkpoints --check-crash DIR STAGE    after kill -9: step 1 (or 2 past the rename) survives, and
//                                               --resume auto takes it (2: it descends from `latest`'s 1)
//   test_checkpoints --bench DIR                save/load figures for a ~54 MB state
//   test_checkpoints --inspect ARGS...          `smallmind inspect ARGS...`
//   test_checkpoints --lock DIR                 takes DIR's lock, prints "locked pid P", waits to be killed
//   test_checkpoints --try-lock DIR             exit 0 if DIR's lock could be taken, else 2 and the error
#include <CUnit/Basic.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <hdf5.h>
#include <math.h>
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "checkpoints.h"
#include "ckpt_internal.h"
#include "comm.h"
#include "common.h"
#include "trainer.h"
#include "cunit_mpi.h"

int cmd_inspect(int argc, char **argv);   // trainer/inspect.c

static int g_rank, g_world;
static char g_dir[1024];   // this run's scratch directory

// ---------------------------------------------------------------------------
// Files (rank 0 touches them; callers barrier before other ranks look)
static void barrier(void) { MPI_Barrier(MPI_COMM_WORLD); }

static void sub(char *out, size_t cap, const char *name) { snprintf(out, cap, "%s/%s", g_dir, name); }

static void mkdir_p(const char *path) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(tmp, 0755);
            *p = '/';
        }
    mkdir(tmp, 0755);
}

// A fresh, empty directory DIR (rank 0 makes it, everyone waits).
static void fresh_dir(const char *path) {
    if (g_rank == 0) {
        mkdir_p(path);
        DIR *d = opendir(path);
        struct dirent *e;
        char p[4400];
        while (d && (e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.' && (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2]))) continue;
            snprintf(p, sizeof p, "%s/%s", path, e->d_name);
            unlink(p);
        }
        if (d) closedir(d);
    }
    barrier();
}

static int exists(const char *path) { return access(path, F_OK) == 0; }

static long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

// Whole file into a malloc'd buffer (NULL if unreadable).
static unsigned char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    rewind(f);
    unsigned char *b = malloc(len > 0 ? (size_t)len : 1);
    *n = fread(b, 1, (size_t)(len > 0 ? len : 0), f);
    fclose(f);
    return b;
}

static int spit(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

static void copy_file(const char *from, const char *to) {
    size_t n = 0;
    unsigned char *b = slurp(from, &n);
    if (b) spit(to, b, n);
    free(b);
}

static uint64_t fnv(const char *path) {
    size_t n = 0;
    unsigned char *b = slurp(path, &n);
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; b && i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    free(b);
    return b ? h : 0;
}

static void read_text(const char *path, char *out, size_t cap) {
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f) return;
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = '\0';
    fclose(f);
}

// XORs n bytes at `offset` of the file with 0xFF.
static void flip(const char *path, long offset, int n) {
    FILE *f = fopen(path, "r+b");
    if (!f) return;
    for (int i = 0; i < n; i++) {
        fseek(f, offset + i, SEEK_SET);
        int c = fgetc(f);
        fseek(f, offset + i, SEEK_SET);
        fputc((c ^ 0xFF) & 0xFF, f);
    }
    fclose(f);
}

// File offset of the middle of chunk `idx` (-1: the last) of a dataset (serial HDF5, rank 0); -1 on failure.
static long chunk_middle(const char *path, const char *dset, int idx) {
    long off = -1;
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = f >= 0 ? H5Dopen2(f, dset, H5P_DEFAULT) : H5I_INVALID_HID;
    hid_t s = d >= 0 ? H5Dget_space(d) : H5I_INVALID_HID;
    hsize_t coords[SM_MAX_DIMS], size = 0;
    haddr_t addr = 0;
    unsigned mask = 0;
    hsize_t n_chunks = 0;
    if (s >= 0 && idx < 0 && H5Dget_num_chunks(d, s, &n_chunks) >= 0 && n_chunks > 0) idx = (int)n_chunks - 1;
    if (s >= 0 && idx >= 0 && H5Dget_chunk_info(d, s, (hsize_t)idx, coords, &mask, &addr, &size) >= 0)
        off = (long)(addr + size / 2);
    if (s >= 0) H5Sclose(s);
    if (d >= 0) H5Dclose(d);
    if (f >= 0) H5Fclose(f);
    return off;
}

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

// ---------------------------------------------------------------------------
// The model state under test: a small GPT-2 table; params whole, moments only [lo, hi)
// allocated (as gpt2_shard_moments does), so touching anything else would fault.
static void test_config(sm_model_config *g, sm_model_config *c, int layers, int embd) {
    char err[256];
    *g = (sm_model_config){.n_layer = layers, .n_head = 2, .n_embd = embd, .max_seq_len = 16, .vocab_size = 100};
    if (gpt2_config_validate(g, err, sizeof err) != 0) sm_fatal(1, "%s", err);
    memset(c, 0, sizeof *c);
    *c = (sm_model_config){g->n_layer, g->n_head, g->n_embd, g->max_seq_len, g->vocab_size, g->padded_vocab_size, "byte"};
}

typedef struct {
    sm_table params, m, v;
    float *alloc[2];
    size_t lo, hi;
} state;

static void zero_slice(size_t n, int world, int r, size_t *lo, size_t *hi) {   // comm/gradsync.c's slices
    size_t len = (n + (size_t)world - 1) / (size_t)world;
    *lo = (size_t)r * len < n ? (size_t)r * len : n;
    *hi = *lo + len < n ? *lo + len : n;
}

static void state_init(state *s, const sm_model_config *cfg, size_t lo, size_t hi) {
    memset(s, 0, sizeof *s);
    gpt2_param_table(&s->params, cfg);
    s->m = s->v = s->params;
    sm_table_alloc(&s->params);
    s->lo = lo;
    s->hi = hi;
    for (int k = 0; k < 2; k++) {
        s->alloc[k] = sm_arena((hi - lo ? hi - lo : 1) * sizeof(float));
        float *base = (float *)((uintptr_t)s->alloc[k] - lo * sizeof(float));
        sm_table_bind(k ? &s->v : &s->m, base);
    }
}

static void state_free(state *s) {
    sm_free(sm_table_f32(&s->params));
    sm_free(s->alloc[0]);
    sm_free(s->alloc[1]);
}

// Distinct, exactly representable values: kind 0 params, 1 m, 2 v; tensor t, element j.
static float value(int kind, int t, size_t j, int seed) {
    uint64_t x = ((uint64_t)seed << 48) ^ ((uint64_t)kind << 40) ^ ((uint64_t)t << 32) ^ j;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    x ^= x >> 31;
    float f = (float)((int64_t)(x >> 41) - (1 << 22)) / 4096.0f;   // 23 bits: exact
    return kind == 2 ? f * f : f;                                  // v >= 0, like Adam's
}

static void state_fill(state *s, int seed) {
    for (int i = 0; i < s->params.count; i++) {
        sm_tensor *t = &s->params.t[i];
        for (size_t j = 0; j < t->n_elems; j++) t->ptr[j] = value(0, i, j, seed);
        for (int k = 1; k <= 2; k++) {
            sm_tensor *o = &(k == 1 ? &s->m : &s->v)->t[i];
            for (size_t j = 0; j < o->n_elems; j++)
                if (sm_tensor_f32_offset(o) + j >= s->lo && sm_tensor_f32_offset(o) + j < s->hi) o->ptr[j] = value(k, i, j, seed);
        }
    }
}

// Mismatches against the values of `seed`: params everywhere, moments in [lo, hi).
static long state_check(const state *s, int seed, int moments) {
    long bad = 0;
    for (int i = 0; i < s->params.count; i++) {
        const sm_tensor *t = &s->params.t[i];
        for (size_t j = 0; j < t->n_elems; j++) bad += t->ptr[j] != value(0, i, j, seed);
        for (int k = 1; moments && k <= 2; k++) {
            const sm_tensor *o = &(k == 1 ? &s->m : &s->v)->t[i];
            for (size_t j = 0; j < o->n_elems; j++)
                if (sm_tensor_f32_offset(o) + j >= s->lo && sm_tensor_f32_offset(o) + j < s->hi) bad += o->ptr[j] != value(k, i, j, seed);
        }
    }
    return bad;
}

static size_t arena_floats(const sm_model_config *g) {
    sm_table t;
    gpt2_param_table(&t, g);
    return sm_table_n_f32(&t);
}

// A state of config g with this rank's ZeRO slice [*lo, *hi) of the moments, filled with seed's values.
static void state_zero(state *s, const sm_model_config *g, int seed, size_t *lo, size_t *hi) {
    sm_table probe;
    gpt2_param_table(&probe, g);
    zero_slice(sm_table_n_f32(&probe), g_world, g_rank, lo, hi);
    state_init(s, g, *lo, *hi);
    state_fill(s, seed);
}

static ckpt_meta test_meta(const sm_model_config *c, int step) {
    ckpt_meta m;
    memset(&m, 0, sizeof m);
    m.step = step;
    m.tokens_seen = 4096ull * (uint64_t)step + 5000000000ull;   // above 2^32 on purpose
    m.data_cursor = 3ull * (uint64_t)step + 1;
    sm_rng_seed(&m.rng, 1000 + (uint64_t)step, (uint64_t)g_rank);
    m.cfg = *c;
    m.optim = (ckpt_optim){6e-4, 6e-5, 0.9, 0.95, 1e-8, 0.1, 10, 1000, 0};
    return m;
}

static int meta_equal(const ckpt_meta *a, const ckpt_meta *b) {
    return a->step == b->step && a->tokens_seen == b->tokens_seen && a->data_cursor == b->data_cursor &&
           memcmp(a->rng.s, b->rng.s, sizeof a->rng.s) == 0 && a->cfg.n_layer == b->cfg.n_layer &&
           a->cfg.n_head == b->cfg.n_head && a->cfg.n_embd == b->cfg.n_embd &&
           a->cfg.max_seq_len == b->cfg.max_seq_len && a->cfg.vocab_size == b->cfg.vocab_size &&
           a->cfg.padded_vocab_size == b->cfg.padded_vocab_size && strcmp(a->cfg.tokenizer, b->cfg.tokenizer) == 0 &&
           a->optim.lr == b->optim.lr && a->optim.min_lr == b->optim.min_lr && a->optim.beta1 == b->optim.beta1 &&
           a->optim.beta2 == b->optim.beta2 && a->optim.eps == b->optim.eps &&
           a->optim.weight_decay == b->optim.weight_decay && a->optim.warmup == b->optim.warmup &&
           a->optim.total_steps == b->optim.total_steps;
}

// Every rank agrees on a local truth (for asserts that must not differ between ranks).
static int all(int x) {
    int out = 0;
    MPI_Allreduce(&x, &out, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    return out;
}

static int g_async;   // save_as saves through ckpt_async_* (the --ckpt-async path) instead of ckpt_save

// Saves step `step` (values of `seed`) into dir with ZeRO slices, recording parent_step's file as its
// parent (-1: none); returns the save's rc.
static int save_as(const char *dir, int step, int seed, int parent_step, int keep, char *err, size_t errlen) {
    sm_model_config g;
    sm_model_config c;
    test_config(&g, &c, 2, 32);
    state s;
    size_t lo, hi;
    state_zero(&s, &g, seed, &lo, &hi);
    ckpt_meta meta = test_meta(&c, step);
    if (parent_step >= 0) ckpt_name(meta.parent, sizeof meta.parent, parent_step);
    int rc;
    if (g_async) {   // the same save through --ckpt-async's path: the buffer, the thread, the poll
        ckpt_async *a = NULL;
        int done = 0;
        rc = ckpt_async_create(&a, &s.params, &s.m, &s.v, lo, hi, NULL, err, errlen);
        if (rc == 0) rc = ckpt_async_save(a, dir, &meta, &s.params, &s.m, &s.v, lo, hi, keep, NULL, err, errlen);
        if (rc == 0) rc = ckpt_async_poll(a, 1, &done, NULL, err, errlen);
        if (rc == 0 && !done) rc = -1, snprintf(err, errlen, "the async save was not committed after a waiting poll");
        ckpt_async_free(a);
    } else {
        rc = ckpt_save(dir, &meta, &s.params, &s.m, &s.v, lo, hi, keep, NULL, err, errlen);
    }
    state_free(&s);
    return rc;
}

// A run's consecutive saves: step's parent is step - 1.
static int save_std(const char *dir, int step, int seed, int keep, char *err, size_t errlen) {
    return save_as(dir, step, seed, step > 1 ? step - 1 : -1, keep, err, errlen);
}

// Loads path into a fresh state with moments [lo, hi) and counts mismatches against `seed`.
static long load_check(const char *path, int seed, size_t lo, size_t hi, int with_moments, char *err, size_t errlen,
                       int *rc_out) {
    sm_model_config g;
    sm_model_config c;
    test_config(&g, &c, 2, 32);
    state s;
    state_init(&s, &g, lo, hi);
    ckpt_meta meta;
    *rc_out = ckpt_load(path, &c, &meta, &s.params, with_moments ? &s.m : NULL, with_moments ? &s.v : NULL, lo, hi,
                        NULL, err, errlen);
    long bad = *rc_out == 0 ? state_check(&s, seed, with_moments) : -1;
    state_free(&s);
    return bad;
}

// A fresh scratch directory `name` (into dir) holding step 1 of a run (seed 1); its path into path.
static void run_with_step1(char *dir, size_t dir_cap, const char *name, char *path, size_t path_cap) {
    char err[CKPT_ERR_MAX] = "";
    sub(dir, dir_cap, name);
    fresh_dir(dir);
    CU_ASSERT_EQUAL(save_std(dir, 1, 1, 0, err, sizeof err), 0);
    ckpt_path(path, path_cap, dir, 1);
}

// ---------------------------------------------------------------------------
// Round trips
static void round_trip(int zero, const char *name) {
    char dir[1200], err[CKPT_ERR_MAX] = "", path[1300], text[256];
    sub(dir, sizeof dir, name);
    fresh_dir(dir);
    sm_model_config g;
    sm_model_config c;
    test_config(&g, &c, 2, 32);
    sm_table probe;
    gpt2_param_table(&probe, &g);
    size_t n = sm_table_n_f32(&probe), lo = 0, hi = n;
    if (zero) zero_slice(n, g_world, g_rank, &lo, &hi);
    state a, b;
    state_init(&a, &g, lo, hi);
    state_init(&b, &g, lo, hi);
    state_fill(&a, 7);
    ckpt_meta in = test_meta(&c, 7), out;
    ckpt_stats st = {0};
    uint64_t need = 0;
    CU_ASSERT_EQUAL(ckpt_check_space(dir, &a.params, &need, err, sizeof err), 0);   // room for it
    int rc = ckpt_save(dir, &in, &a.params, &a.m, &a.v, lo, hi, 0, &st, err, sizeof err);
    CU_ASSERT_EQUAL(need, st.reserved);
    if (rc) fprintf(stderr, "rank %d: save: %s\n", g_rank, err);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT(st.bytes > 0 && st.seconds > 0);
    CU_ASSERT(st.bytes <= st.reserved);   // the reservation bounds the file
    if (g_rank == 0 && st.bytes > st.reserved) printf("\n    file %llu bytes > reserved %llu", (unsigned long long)st.bytes, (unsigned long long)st.reserved);
    ckpt_path(path, sizeof path, dir, 7);
    rc = ckpt_load(path, &c, &out, &b.params, &b.m, &b.v, lo, hi, NULL, err, sizeof err);
    if (rc) fprintf(stderr, "rank %d: load: %s\n", g_rank, err);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT(memcmp(sm_table_f32(&a.params), sm_table_f32(&b.params), n * sizeof(float)) == 0);   // padding too (zero both)
    CU_ASSERT(memcmp(a.alloc[0], b.alloc[0], (hi - lo) * sizeof(float)) == 0);
    CU_ASSERT(memcmp(a.alloc[1], b.alloc[1], (hi - lo) * sizeof(float)) == 0);
    CU_ASSERT_EQUAL(state_check(&b, 7, 1), 0);
    CU_ASSERT(meta_equal(&in, &out));
    CU_ASSERT_EQUAL(out.world_size, g_world);
    CU_ASSERT_EQUAL(out.rng_restored, 1);
    snprintf(path, sizeof path, "%s/latest", dir);
    read_text(path, text, sizeof text);
    CU_ASSERT_STRING_EQUAL(text, "ckpt_00000007.h5\n");
    state_free(&a);
    state_free(&b);
}

static void test_round_trip_zero(void) { round_trip(1, "rt_zero"); }
static void test_round_trip_full(void) { round_trip(0, "rt_full"); }

static void test_round_trip_small_chunks(void) {
    // 333-float chunks: many chunks per tensor, none aligned with the ranks' slices
    setenv("SMALLMIND_CKPT_CHUNK_FLOATS", "333", 1);
    round_trip(1, "rt_chunks");
    setenv("SMALLMIND_CKPT_CHUNK_FLOATS", "7", 1);   // tiny chunks: every slice edge cuts one
    round_trip(1, "rt_chunks7");
    unsetenv("SMALLMIND_CKPT_CHUNK_FLOATS");
}

// The fast Fletcher32 + value check (AVX2, and the C path) against the definition, over sizes around
// HDF5's 360-word fold and pieces cut at odd places; the copy equal to its source; the first bad value found.
static void test_fletcher_paths(void) {
    enum { MAXF = 20000 };
    float *x = malloc(MAXF * sizeof(float)), *dst = malloc(MAXF * sizeof(float));
    sm_rng r;
    sm_rng_seed(&r, 7, 0);
    for (int i = 0; i < MAXF; i++) x[i] = (sm_rng_uniform(&r) - 0.5f) * 1e4f;
    const size_t sizes[] = {1, 2, 179, 180, 181, 359, 360, 361, 720, 1000, 4096, 12345, MAXF};
    const int paths[] = {CKPT_PATH_C, CKPT_PATH_AVX2};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        size_t n = sizes[si];
        uint32_t want = ckpt_fletcher32_ref(x, n * sizeof(float));
        for (int pi = 0; pi < 2; pi++)
            for (int cut = 0; cut < 3; cut++) {   // one piece; two at an odd float; many of 7 floats
                ckpt_fletcher f;
                ckpt_fletcher_init(&f);
                memset(dst, 0, n * sizeof(float));
                size_t step = cut == 0 ? n : cut == 1 ? (n / 2) | 1 : 7, bad = 0;
                for (size_t at = 0; at < n; at += step) {
                    size_t k = n - at < step ? n - at : step;
                    bad += ckpt_fletcher_copy_path(&f, (pi + cut) % 2 ? dst + at : NULL, x + at, k * sizeof(float),
                                                   CKPT_CHECK_FINITE, paths[pi]);
                    if ((pi + cut) % 2 == 0) memcpy(dst + at, x + at, k * sizeof(float));
                }
                CU_ASSERT_EQUAL(ckpt_fletcher_end(&f), want);
                CU_ASSERT_EQUAL(bad, n);
                CU_ASSERT(memcmp(dst, x, n * sizeof(float)) == 0);
            }
    }
    // padding zeros streamed after data equal the definition over data + zeros
    memset(dst, 0, MAXF * sizeof(float));
    memcpy(dst, x, 1001 * sizeof(float));
    for (int pi = 0; pi < 2; pi++) {
        ckpt_fletcher f;
        ckpt_fletcher_init(&f);
        ckpt_fletcher_copy_path(&f, NULL, x, 1001 * sizeof(float), CKPT_CHECK_NONE, paths[pi]);
        ckpt_fletcher_add_zeros(&f, 5000 * sizeof(float));
        CU_ASSERT_EQUAL(ckpt_fletcher_end(&f), ckpt_fletcher32_ref(dst, 6001 * sizeof(float)));
    }
    // the first bad value: NaN, Inf, and a negative second moment, at every position class
    const size_t at[] = {0, 7, 8, 359, 360, 4095, MAXF - 1};
    for (size_t ai = 0; ai < sizeof at / sizeof at[0]; ai++)
        for (int pi = 0; pi < 2; pi++)
            for (int kind = 0; kind < 3; kind++) {
                for (int i = 0; i < MAXF; i++) dst[i] = fabsf(x[i]);
                dst[at[ai]] = kind == 0 ? NAN : kind == 1 ? -INFINITY : -1.0f;
                if (at[ai] + 9 < MAXF) dst[at[ai] + 9] = NAN;   // a later one is not the first
                ckpt_fletcher f;
                ckpt_fletcher_init(&f);
                size_t b = ckpt_fletcher_copy_path(&f, NULL, dst, MAXF * sizeof(float),
                                                   kind == 2 ? CKPT_CHECK_NONNEG : CKPT_CHECK_FINITE, paths[pi]);
                CU_ASSERT_EQUAL(b, at[ai]);
                ckpt_fletcher_init(&f);   // a negative value passes the finite check
                if (kind == 2) {
                    b = ckpt_fletcher_copy_path(&f, NULL, dst, MAXF * sizeof(float), CKPT_CHECK_FINITE, paths[pi]);
                    CU_ASSERT_EQUAL(b, at[ai] + 9 < MAXF ? at[ai] + 9 : (size_t)MAXF);
                }
            }
    if (g_rank == 0) printf("\n    fletcher32: c and %s paths equal the definition\n", ckpt_fletcher_path(CKPT_PATH_AUTO));
    free(x);
    free(dst);
}

// The direct chunk reader against HDF5's own read of the same file (SMALLMIND_CKPT_READ=hdf5), both
// against the seed's values, at several moment layouts.
static void test_read_paths(void) {
    char dir[1200], err[CKPT_ERR_MAX] = "", path[1300];
    sub(dir, sizeof dir, "readpaths");
    fresh_dir(dir);
    setenv("SMALLMIND_CKPT_CHUNK_FLOATS", "333", 1);
    CU_ASSERT_EQUAL(save_std(dir, 3, 21, 0, err, sizeof err), 0);
    unsetenv("SMALLMIND_CKPT_CHUNK_FLOATS");
    ckpt_path(path, sizeof path, dir, 3);
    sm_model_config g, c;
    test_config(&g, &c, 2, 32);
    sm_table probe;
    gpt2_param_table(&probe, &g);
    size_t n = sm_table_n_f32(&probe), lo, hi;
    for (int hdf5 = 0; hdf5 < 2; hdf5++) {
        if (hdf5) setenv("SMALLMIND_CKPT_READ", "hdf5", 1);
        int rc;
        CU_ASSERT_EQUAL(load_check(path, 21, 0, n, 1, err, sizeof err, &rc), 0);
        CU_ASSERT_EQUAL(rc, 0);
        zero_slice(n, 3 * g_world, 3 * g_rank + 1, &lo, &hi);
        CU_ASSERT_EQUAL(load_check(path, 21, lo, hi, 1, err, sizeof err, &rc), 0);
        CU_ASSERT_EQUAL(rc, 0);
        unsetenv("SMALLMIND_CKPT_READ");
    }
}

// Drops a file's pages from the page cache (every rank its own call, after a barrier); returns 1 when none
// is left there (mincore; 0 on a file system that keeps them, e.g. tmpfs). With first_half, then reads the
// first half of it back in.
static int drop_file(const char *path, int first_half) {
    barrier();
    int fd = open(path, O_RDONLY), cold = 0;
    struct stat st;
    if (fd >= 0 && fstat(fd, &st) == 0 && st.st_size > 0) {
        fdatasync(fd);
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
        size_t pages = ((size_t)st.st_size + 4095) / 4096;
        unsigned char *vec = malloc(pages);
        if (map != MAP_FAILED && vec && mincore(map, (size_t)st.st_size, vec) == 0) {
            cold = 1;
            for (size_t i = 0; i < pages; i++) cold &= !(vec[i] & 1);
        }
        free(vec);
        if (map != MAP_FAILED) munmap(map, (size_t)st.st_size);
        if (first_half) {
            barrier();
            char buf[4096];
            for (off_t at = 0; at < st.st_size / 2; at += (off_t)sizeof buf)
                if (pread(fd, buf, sizeof buf, at) <= 0) break;
        }
    }
    if (fd >= 0) close(fd);
    barrier();
    return all(cold);
}

// ckpt_load of path with seed's values into a fresh state; *direct: the bytes this rank read O_DIRECT.
static long load_direct(const char *path, int seed, size_t lo, size_t hi, uint64_t *direct, char *err, size_t errlen,
                        int *rc_out) {
    sm_model_config g, c;
    test_config(&g, &c, 2, 32);
    state s;
    state_init(&s, &g, lo, hi);
    ckpt_meta meta;
    ckpt_stats st;
    memset(&st, 0, sizeof st);
    *rc_out = ckpt_load(path, &c, &meta, &s.params, &s.m, &s.v, lo, hi, &st, err, errlen);
    *direct = st.direct_bytes;
    long bad = *rc_out == 0 ? state_check(&s, seed, 1) : -1;
    state_free(&s);
    return bad;
}

// Cold loads (the file out of the page cache: read O_DIRECT by the reader threads, ahead of the checks)
// against the seed's values, with page-sized and small unaligned chunks, whole and ZeRO slices, a file half in
// the page cache, and a flipped byte in a cold file refused by Fletcher32 on the rank that reads it.
static void test_cold_reads(void) {
    char dir[1200], err[CKPT_ERR_MAX] = "", path[1300], badp[1300];
    sm_model_config g, c;
    test_config(&g, &c, 2, 32);
    sm_table probe;
    gpt2_param_table(&probe, &g);
    size_t n = sm_table_n_f32(&probe), lo, hi;
    zero_slice(n, g_world, g_rank, &lo, &hi);
    const char *chunks[2] = {"333", "4096"};
    for (int k = 0; k < 2; k++) {
        sub(dir, sizeof dir, k ? "cold_pages" : "cold_small");
        fresh_dir(dir);
        setenv("SMALLMIND_CKPT_CHUNK_FLOATS", chunks[k], 1);
        CU_ASSERT_EQUAL(save_std(dir, 4, 31, 0, err, sizeof err), 0);
        unsetenv("SMALLMIND_CKPT_CHUNK_FLOATS");
        ckpt_path(path, sizeof path, dir, 4);
        int rc;
        uint64_t direct = 0;
        for (int mode = 0; mode < 4; mode++) {   // cold whole, cold ZeRO, half cached, warm
            // a file this small is read whole into the page cache by the readahead of the metadata reads
            // before its data: modes 0 and 1 send every part through the O_DIRECT pipeline
            if (mode < 2) setenv("SMALLMIND_CKPT_READ", "direct", 1);
            if (mode < 3) drop_file(path, mode == 2);
            size_t a = mode == 1 ? lo : 0, b = mode == 1 ? hi : n;
            // warm: read whole into the page cache first; on a busy machine the kernel may evict some of it
            // before the load looks (a load of a partly cold file is correct, just not all warm), so up to
            // 3 tries for a load that reads nothing O_DIRECT
            for (int attempt = 0; attempt < (mode == 3 ? 3 : 1); attempt++) {
                if (mode == 3) fnv(path);
                CU_ASSERT_EQUAL(load_direct(path, 31, a, b, &direct, err, sizeof err, &rc), 0);
                CU_ASSERT_EQUAL(rc, 0);
                if (all(direct == 0)) break;
            }
            unsetenv("SMALLMIND_CKPT_READ");
            if (mode < 2) CU_ASSERT(all(direct > 0));
            if (mode == 3) CU_ASSERT(all(direct == 0));
        }
        if (k == 1) {   // a flipped byte in a parameter chunk, cold: refused on every rank, naming it
            ckpt_path(badp, sizeof badp, dir, 5);
            if (g_rank == 0) {
                copy_file(path, badp);
                long off = chunk_middle(badp, "/model/qkvw", 1);
                CU_ASSERT(off > 0);
                flip(badp, off, 4);
            }
            drop_file(badp, 0);
            setenv("SMALLMIND_CKPT_READ", "direct", 1);
            load_direct(badp, 31, 0, n, &direct, err, sizeof err, &rc);
            unsetenv("SMALLMIND_CKPT_READ");
            CU_ASSERT_EQUAL(rc, -1);
            CU_ASSERT(strstr(err, "Fletcher32") && strstr(err, "/model/qkvw"));
            CU_ASSERT(all(rc == -1));
        }
    }
}

// --ckpt-async's path: its checkpoint loads to the same values as ckpt_save's; a second save started while
// the first is in flight waits for it (both committed, `latest` the second); a non-finite value is refused
// at the copy, nothing committed.
// Without ZeRO every rank writes about 1/world of the file's bytes (to within a chunk), every chunk exactly
// once, each rank's in file order; a one-chunk tensor does not always fall to the last rank.
static void share_check(int layers, int embd, const char *chunk_floats) {
    sm_model_config g, c;
    test_config(&g, &c, layers, embd);
    state s;
    state_init(&s, &g, 0, arena_floats(&g));
    if (chunk_floats) setenv("SMALLMIND_CKPT_CHUNK_FLOATS", chunk_floats, 1);
    ckpt_ctx cx;
    ckpt_wplan p;
    memset(&p, 0, sizeof p);
    CU_ASSERT_FATAL(ckpt_ctx_init(&cx, "share") == 0);
    hsize_t chunk = chunk_floats ? (hsize_t)atoll(chunk_floats) : CKPT_CHUNK_FLOATS_DEFAULT;
    CU_ASSERT_FATAL(ckpt_wplan_build(&cx, &p, &s.params, &s.m, &s.v, 0, arena_floats(&g), chunk) == 0);
    unsetenv("SMALLMIND_CKPT_CHUNK_FLOATS");
    double mine[2] = {0, (double)p.n_own}, sum[2], most = 0, least = 0, biggest = 0, total = 0;
    int ordered = 1;
    for (int j = 0; j < p.n_own; j++) {
        mine[0] += (double)p.own[j].c.full * 4 + 4;
        if (j && (p.own[j].d < p.own[j - 1].d || (p.own[j].d == p.own[j - 1].d && p.own[j].k <= p.own[j - 1].k))) ordered = 0;
    }
    for (int i = 0; i < p.g.n_dsets; i++)
        for (hsize_t k = 0; k < p.g.d[i].n_chunks; k++) {
            ckpt_chunk ch;
            ckpt_chunk_at(&p.g.d[i].s, k, &ch);
            total += (double)ch.full * 4 + 4;
            if ((double)ch.full * 4 + 4 > biggest) biggest = (double)ch.full * 4 + 4;
        }
    MPI_Allreduce(mine, sum, 2, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allreduce(&mine[0], &most, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    MPI_Allreduce(&mine[0], &least, 1, MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD);
    CU_ASSERT_EQUAL(sum[0], total);                  // every byte once
    CU_ASSERT_EQUAL(sum[1], (double)p.g.n_chunks);   // every chunk once
    CU_ASSERT(all(ordered));
    CU_ASSERT(most <= total / g_world + biggest && least >= total / g_world - biggest);
    if (g_world > 1) CU_ASSERT(least > 0);           // every rank writes something
    ckpt_wplan_free(&p);
    state_free(&s);
}

static void test_even_share(void) {
    share_check(1, 8, NULL);      // every tensor one chunk
    share_check(2, 16, "333");    // several chunks a tensor
    share_check(1, 8, "7");       // tiny chunks
}

static void test_async(void) {
    char dir[1200], err[CKPT_ERR_MAX] = "", path[1300], text[256] = "";
    sub(dir, sizeof dir, "async");
    fresh_dir(dir);
    g_async = 1;
    setenv("SMALLMIND_CKPT_CHUNK_FLOATS", "333", 1);
    CU_ASSERT_EQUAL(save_std(dir, 1, 5, 0, err, sizeof err), 0);
    unsetenv("SMALLMIND_CKPT_CHUNK_FLOATS");
    g_async = 0;
    ckpt_path(path, sizeof path, dir, 1);
    sm_model_config g, c;
    test_config(&g, &c, 2, 32);
    sm_table probe;
    gpt2_param_table(&probe, &g);
    size_t n = sm_table_n_f32(&probe), lo, hi;
    int rc;
    CU_ASSERT_EQUAL(load_check(path, 5, 0, n, 1, err, sizeof err, &rc), 0);
    CU_ASSERT_EQUAL(rc, 0);
    // two saves back to back from one buffer
    state s;
    state_zero(&s, &g, 6, &lo, &hi);
    ckpt_async *a = NULL;
    int done = 0;
    CU_ASSERT_EQUAL_FATAL(ckpt_async_create(&a, &s.params, &s.m, &s.v, lo, hi, NULL, err, sizeof err), 0);
    ckpt_meta meta = test_meta(&c, 2);
    ckpt_name(meta.parent, sizeof meta.parent, 1);
    CU_ASSERT_EQUAL(ckpt_async_save(a, dir, &meta, &s.params, &s.m, &s.v, lo, hi, 0, NULL, err, sizeof err), 0);
    CU_ASSERT(ckpt_async_pending(a));
    meta = test_meta(&c, 3);
    ckpt_name(meta.parent, sizeof meta.parent, 2);
    CU_ASSERT_EQUAL(ckpt_async_save(a, dir, &meta, &s.params, &s.m, &s.v, lo, hi, 0, NULL, err, sizeof err), 0);
    ckpt_path(path, sizeof path, dir, 2);
    CU_ASSERT(exists(path));   // the first was committed before the second started
    CU_ASSERT_EQUAL(ckpt_async_poll(a, 1, &done, NULL, err, sizeof err), 0);
    CU_ASSERT_EQUAL(done, 1);
    CU_ASSERT(!ckpt_async_pending(a));
    char lp[1300];
    snprintf(lp, sizeof lp, "%s/latest", dir);
    read_text(lp, text, sizeof text);
    CU_ASSERT_STRING_EQUAL(text, "ckpt_00000003.h5\n");
    for (int step = 2; step <= 3; step++) {
        ckpt_path(path, sizeof path, dir, step);
        CU_ASSERT_EQUAL(load_check(path, 6, 0, n, 1, err, sizeof err, &rc), 0);
        CU_ASSERT_EQUAL(rc, 0);
    }
    // a NaN: refused in the step that saves, nothing committed, the buffer usable again
    float keep = s.params.t[0].ptr[0];
    s.params.t[0].ptr[0] = NAN;   // every rank (whichever writes that chunk)
    meta = test_meta(&c, 4);
    CU_ASSERT_EQUAL(ckpt_async_save(a, dir, &meta, &s.params, &s.m, &s.v, lo, hi, 0, NULL, err, sizeof err), -1);
    CU_ASSERT(strstr(err, "refusing to commit") != NULL);
    CU_ASSERT(!ckpt_async_pending(a));
    ckpt_path(path, sizeof path, dir, 4);
    CU_ASSERT(!exists(path));
    s.params.t[0].ptr[0] = keep;
    CU_ASSERT_EQUAL(ckpt_async_save(a, dir, &meta, &s.params, &s.m, &s.v, lo, hi, 0, NULL, err, sizeof err), 0);
    CU_ASSERT_EQUAL(ckpt_async_poll(a, 1, &done, NULL, err, sizeof err), 0);
    CU_ASSERT(exists(path));
    ckpt_async_free(a);
    state_free(&s);
}

// Written with this world's ZeRO slices, read back with other layouts.
static void test_reshard(void) {
    char dir[1200], err[CKPT_ERR_MAX] = "", path[1300];
    sub(dir, sizeof dir, "reshard");
    fresh_dir(dir);
    setenv("SMALLMIND_CKPT_CHUNK_FLOATS", "1000", 1);
    CU_ASSERT_EQUAL(save_std(dir, 3, 11, 0, err, sizeof err), 0);
    unsetenv("SMALLMIND_CKPT_CHUNK_FLOATS");
    ckpt_path(path, sizeof path, dir, 3);
    sm_model_config g;
    sm_model_config c;
    test_config(&g, &c, 2, 32);
    sm_table probe;
    gpt2_param_table(&probe, &g);
    size_t n = sm_table_n_f32(&probe), lo, hi;
    int rc;
    // (a) as one rank: everything
    CU_ASSERT_EQUAL(load_check(path, 11, 0, n, 1, err, sizeof err, &rc), 0);
    CU_ASSERT_EQUAL(rc, 0);
    // (b) the slices in reverse rank order
    zero_slice(n, g_world, g_world - 1 - g_rank, &lo, &hi);
    CU_ASSERT_EQUAL(load_check(path, 11, lo, hi, 1, err, sizeof err, &rc), 0);
    // (c) uneven boundaries, quadratic in the rank; (d) three times the ranks, this rank's third
    lo = n * (size_t)(g_rank * g_rank) / (size_t)(g_world * g_world);
    hi = n * (size_t)((g_rank + 1) * (g_rank + 1)) / (size_t)(g_world * g_world);
    CU_ASSERT_EQUAL(load_check(path, 11, lo, hi, 1, err, sizeof err, &rc), 0);
    for (int part = 0; part < 3; part++) {
        zero_slice(n, 3 * g_world, 3 * g_rank + part, &lo, &hi);
        CU_ASSERT_EQUAL(load_check(path, 11, lo, hi, 1, err, sizeof err, &rc), 0);
    }
    // (e) parameters only (eval)
    CU_ASSERT_EQUAL(load_check(path, 11, 0, 0, 0, err, sizeof err, &rc), 0);
    CU_ASSERT_EQUAL(rc, 0);
}

static void test_meta_and_verify(void) {
    char dir[1200], err[CKPT_ERR_MAX] = "", path[1300];
    sub(dir, sizeof dir, "meta");
    fresh_dir(dir);
    CU_ASSERT_EQUAL(save_std(dir, 5, 2, 0, err, sizeof err), 0);
    ckpt_path(path, sizeof path, dir, 5);
    sm_model_config g;
    sm_model_config c;
    test_config(&g, &c, 2, 32);
    ckpt_meta m, want = test_meta(&c, 5);
    CU_ASSERT_EQUAL(ckpt_read_meta(path, &m, err, sizeof err), 0);
    want.rng = m.rng;   // read_meta does not read rng states
    CU_ASSERT(meta_equal(&m, &want));
    CU_ASSERT_EQUAL(m.world_size, g_world);
    ckpt_report *r = malloc(sizeof *r);
    CU_ASSERT_EQUAL(ckpt_verify(path, ckpt_layout_gpt2, r, err, sizeof err), 0);
    CU_ASSERT_EQUAL(r->n_datasets, 3 * NUM_PARAM_TENSORS + 1);
    CU_ASSERT_EQUAL(r->n_bad, 0);
    sm_table probe;
    gpt2_param_table(&probe, &g);
    for (int i = 0; i < NUM_PARAM_TENSORS && r->n_datasets == 3 * NUM_PARAM_TENSORS + 1; i++) {
        char want_name[96];
        snprintf(want_name, sizeof want_name, "/model/%s", probe.t[i].name);   // in the model's order
        CU_ASSERT_STRING_EQUAL(r->d[i].name, want_name);
        CU_ASSERT_EQUAL(r->d[i].ndim, probe.t[i].ndim);
        for (int d = 0; d < probe.t[i].ndim; d++) CU_ASSERT_EQUAL(r->d[i].shape[d], probe.t[i].shape[d]);
        CU_ASSERT_EQUAL(r->d[i].n_bytes, probe.t[i].n_elems * 4);
    }
    free(r);
}

// ---------------------------------------------------------------------------
// Damaged and foreign files: each refused with its own message, nothing overwritten.
static void expect_refused(const char *path, const char *what, const char *needle) {
    char err[CKPT_ERR_MAX] = "";
    int rc;
    ckpt_report *r = malloc(sizeof *r);
    int v = ckpt_verify(path, ckpt_layout_gpt2, r, err, sizeof err);
    CU_ASSERT_EQUAL(v, -1);
    if (g_rank == 0) printf("\n    %-22s verify: %s", what, err);
    CU_ASSERT(strstr(err, needle) != NULL);
    CU_ASSERT(strchr(err, '\n') == NULL);
    CU_ASSERT(all(v == -1 && strstr(err, needle) != NULL));   // the same outcome on every rank
    err[0] = '\0';
    long bad = load_check(path, 1, 0, 0, 1, err, sizeof err, &rc);
    CU_ASSERT_EQUAL(rc, -1);
    CU_ASSERT_EQUAL(bad, -1);
    CU_ASSERT(strstr(err, needle) != NULL);
    if (g_rank == 0 && !strstr(err, needle)) printf("\n    load said: %s", err);
    free(r);
}

static void test_corrupt_data(void) {
    char dir[1200], err[CKPT_ERR_MAX] = "", good[1300], badp[1300], bad2[1300];
    sub(dir, sizeof dir, "corrupt");
    fresh_dir(dir);
    setenv("SMALLMIND_CKPT_CHUNK_FLOATS", "1000", 1);
    CU_ASSERT_EQUAL(save_std(dir, 1, 1, 0, err, sizeof err), 0);
    unsetenv("SMALLMIND_CKPT_CHUNK_FLOATS");
    ckpt_path(good, sizeof good, dir, 1);
    ckpt_path(badp, sizeof badp, dir, 2);
    ckpt_path(bad2, sizeof bad2, dir, 3);
    uint64_t h_bad = 0, h_bad2 = 0;
    if (g_rank == 0) {
        copy_file(good, badp);   // a flipped parameter chunk
        long off = chunk_middle(badp, "/model/qkvw", 2);
        CU_ASSERT(off > 0);
        flip(badp, off, 4);
        copy_file(good, bad2);   // a flipped chunk at the end of a moment: only its owner reads it
        off = chunk_middle(bad2, "/optim/v/fcprojw", -1);
        CU_ASSERT(off > 0);
        flip(bad2, off, 2);
        h_bad = fnv(badp);
        h_bad2 = fnv(bad2);
    }
    barrier();
    expect_refused(badp, "flipped bytes", "Fletcher32");
    expect_refused(badp, "flipped bytes", "/model/qkvw");
    // a ZeRO load: the rank holding the end of the arena fails, every rank returns -1
    sm_model_config g;
    sm_model_config c;
    test_config(&g, &c, 2, 32);
    sm_table probe;
    gpt2_param_table(&probe, &g);
    size_t lo, hi;
    int rc;
    zero_slice(sm_table_n_f32(&probe), g_world, g_rank, &lo, &hi);
    err[0] = '\0';
    load_check(bad2, 1, lo, hi, 1, err, sizeof err, &rc);
    CU_ASSERT_EQUAL(rc, -1);
    CU_ASSERT(strstr(err, "/optim/v") && strstr(err, "Fletcher32"));
    CU_ASSERT(all(rc == -1));
    // the good one still loads, and the damaged ones were not touched
    CU_ASSERT_EQUAL(load_check(good, 1, lo, hi, 1, err, sizeof err, &rc), 0);
    if (g_rank == 0) {
        CU_ASSERT_EQUAL(fnv(badp), h_bad);
        CU_ASSERT_EQUAL(fnv(bad2), h_bad2);
    }
    // --resume auto skips both and takes step 1
    char found[1300] = "";
    ckpt_skipped sk[4];
    int n_sk = 0;
    rc = ckpt_find_latest(dir, found, sizeof found, sk, 4, &n_sk, err, sizeof err);
    CU_ASSERT_EQUAL(rc, CKPT_FIND_FOUND);
    CU_ASSERT_STRING_EQUAL(found, good);
    CU_ASSERT_EQUAL(n_sk, 2);
    if (n_sk == 2) {
        CU_ASSERT_STRING_EQUAL(sk[0].name, "ckpt_00000003.h5");
        CU_ASSERT_STRING_EQUAL(sk[1].name, "ckpt_00000002.h5");
        CU_ASSERT(strstr(sk[1].reason, "Fletcher32") != NULL);
    }
}

static void test_truncated_garbage_empty(void) {
    char dir[1200], err[CKPT_ERR_MAX] = "", good[1300], p[1300];
    run_with_step1(dir, sizeof dir, "damaged", good, sizeof good);
    if (g_rank == 0) {
        ckpt_path(p, sizeof p, dir, 2);
        copy_file(good, p);
        CU_ASSERT_EQUAL(truncate(p, file_size(good) / 2), 0);
        ckpt_path(p, sizeof p, dir, 3);
        unsigned char junk[5000];
        for (size_t i = 0; i < sizeof junk; i++) junk[i] = (unsigned char)(i * 131 + 7);
        spit(p, junk, sizeof junk);
        ckpt_path(p, sizeof p, dir, 4);
        spit(p, "", 0);
    }
    barrier();
    ckpt_path(p, sizeof p, dir, 2);
    expect_refused(p, "truncated", "truncated");
    ckpt_path(p, sizeof p, dir, 3);
    expect_refused(p, "garbage", "not an HDF5 file");
    ckpt_path(p, sizeof p, dir, 4);
    expect_refused(p, "empty", "empty");
    ckpt_path(p, sizeof p, dir, 9);
    expect_refused(p, "missing", "not found");
    char found[1300];
    int n_sk = 0;
    CU_ASSERT_EQUAL(ckpt_find_latest(dir, found, sizeof found, NULL, 0, &n_sk, err, sizeof err), CKPT_FIND_FOUND);
    CU_ASSERT_STRING_EQUAL(found, good);
}

// Serial HDF5 edits of a copy: a file of another program, another format name, a newer version.
static void test_foreign(void) {
    char dir[1200], good[1300], p[1300];
    run_with_step1(dir, sizeof dir, "foreign", good, sizeof good);
    if (g_rank == 0) {
        snprintf(p, sizeof p, "%s/other.h5", dir);
        hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
        hsize_t n = 10;
        hid_t s = H5Screate_simple(1, &n, NULL);
        hid_t d = H5Dcreate2(f, "weights", H5T_NATIVE_FLOAT, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        H5Dclose(d), H5Sclose(s), H5Fclose(f);

        snprintf(p, sizeof p, "%s/renamed.h5", dir);
        copy_file(good, p);
        f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
        hid_t t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, H5T_VARIABLE);
        hid_t a = H5Aopen(f, "format", H5P_DEFAULT);
        const char *other = "other-format";
        CU_ASSERT(H5Awrite(a, t, &other) >= 0);
        H5Aclose(a), H5Tclose(t), H5Fclose(f);

        snprintf(p, sizeof p, "%s/newer.h5", dir);
        copy_file(good, p);
        f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
        a = H5Aopen(f, "format_version", H5P_DEFAULT);
        int v = 2;
        CU_ASSERT(H5Awrite(a, H5T_NATIVE_INT, &v) >= 0);
        H5Aclose(a), H5Fclose(f);

        snprintf(p, sizeof p, "%s/nomodel.h5", dir);   // our format, a dataset missing
        copy_file(good, p);
        f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
        CU_ASSERT(H5Ldelete(f, "/optim/m/fcb", H5P_DEFAULT) >= 0);
        H5Fclose(f);
    }
    barrier();
    snprintf(p, sizeof p, "%s/other.h5", dir);
    expect_refused(p, "foreign HDF5", "without the 'format' attribute");
    snprintf(p, sizeof p, "%s/renamed.h5", dir);
    expect_refused(p, "other format", "format is 'other-format'");
    snprintf(p, sizeof p, "%s/newer.h5", dir);
    expect_refused(p, "newer version", "newer than this smallmind");
    snprintf(p, sizeof p, "%s/nomodel.h5", dir);
    expect_refused(p, "missing tensor", "/optim/m");
}

static void test_incompatible(void) {
    char dir[1200], err[CKPT_ERR_MAX] = "", path[1300];
    run_with_step1(dir, sizeof dir, "incompat", path, sizeof path);
    uint64_t before = g_rank == 0 ? fnv(path) : 0;
    // (a) another config, checked against the file's attributes
    sm_model_config g;
    sm_model_config c;
    test_config(&g, &c, 3, 32);
    state s;
    state_init(&s, &g, 0, arena_floats(&g));
    ckpt_meta m;
    int rc = ckpt_load(path, &c, &m, &s.params, &s.m, &s.v, 0, sm_table_n_f32(&s.params), NULL, err, sizeof err);
    if (g_rank == 0) printf("\n    %-22s load: %s", "other n_layer", err);
    CU_ASSERT_EQUAL(rc, -1);
    CU_ASSERT(strstr(err, "model config differs") && strstr(err, "n_layer=2") && strstr(err, "n_layer=3"));
    // (b) without a config to compare: the tensor shapes refuse it
    rc = ckpt_load(path, NULL, &m, &s.params, &s.m, &s.v, 0, sm_table_n_f32(&s.params), NULL, err, sizeof err);
    if (g_rank == 0) printf("\n    %-22s load: %s", "other shapes", err);
    CU_ASSERT_EQUAL(rc, -1);
    CU_ASSERT(strstr(err, "/model/ln1w has shape [2, 32], this model expects [3, 32]") != NULL);
    state_free(&s);
    // (c) same shapes, another head count or tokenizer
    test_config(&g, &c, 2, 32);
    state_init(&s, &g, 0, arena_floats(&g));
    c.n_head = 4;
    rc = ckpt_load(path, &c, &m, &s.params, &s.m, &s.v, 0, sm_table_n_f32(&s.params), NULL, err, sizeof err);
    CU_ASSERT(rc == -1 && strstr(err, "n_head") != NULL);
    c.n_head = 2;
    snprintf(c.tokenizer, sizeof c.tokenizer, "gpt2");
    rc = ckpt_load(path, &c, &m, &s.params, &s.m, &s.v, 0, sm_table_n_f32(&s.params), NULL, err, sizeof err);
    CU_ASSERT(rc == -1 && strstr(err, "tokenizer") != NULL);
    state_free(&s);
    if (g_rank == 0) CU_ASSERT_EQUAL(fnv(path), before);
}

static void test_find_latest_cases(void) {
    char dir[1200], err[CKPT_ERR_MAX] = "", found[1300] = "", p[1300];
    ckpt_skipped sk[4];
    int n_sk = -1;
    sub(dir, sizeof dir, "does_not_exist");
    CU_ASSERT_EQUAL(ckpt_find_latest(dir, found, sizeof found, sk, 4, &n_sk, err, sizeof err), CKPT_FIND_NONE);
    CU_ASSERT_EQUAL(n_sk, 0);
    sub(dir, sizeof dir, "find");
    fresh_dir(dir);
    if (g_rank == 0) {   // a crashed save's temporary and `latest` are not checkpoints
        snprintf(p, sizeof p, "%s/ckpt_00000004.h5.tmp", dir);
        spit(p, "partial", 7);
        snprintf(p, sizeof p, "%s/latest", dir);
        spit(p, "ckpt_00000004.h5\n", 17);
    }
    barrier();
    CU_ASSERT_EQUAL(ckpt_find_latest(dir, found, sizeof found, sk, 4, &n_sk, err, sizeof err), CKPT_FIND_NONE);
    if (g_rank == 0) {   // only damaged ones: stop, never start fresh over them
        ckpt_path(p, sizeof p, dir, 2);
        spit(p, "junk junk junk", 14);
        ckpt_path(p, sizeof p, dir, 10);
        spit(p, "", 0);
    }
    barrier();
    int rc = ckpt_find_latest(dir, found, sizeof found, sk, 4, &n_sk, err, sizeof err);
    if (g_rank == 0) printf("\n    all damaged: %s", err);
    CU_ASSERT_EQUAL(rc, -1);
    CU_ASSERT_EQUAL(n_sk, 2);
    CU_ASSERT(strstr(err, "all 2 checkpoints") != NULL);
    if (n_sk == 2) CU_ASSERT_STRING_EQUAL(sk[0].name, "ckpt_00000010.h5");   // newest first
}

// ---------------------------------------------------------------------------
// keep K, and failing saves that must leave the previous checkpoint and `latest` alone
static int ckpt_files(const char *dir, int *steps, int cap) {   // sorted ascending, *.tmp counted as -1
    int n = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        int step;
        char tail[16];
        if (sscanf(e->d_name, "ckpt_%d%15s", &step, tail) != 2) continue;
        if (n < cap) steps[n++] = strcmp(tail, ".h5") == 0 ? step : -1;
    }
    if (d) closedir(d);
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && steps[j - 1] > steps[j]; j--) {
            int t = steps[j];
            steps[j] = steps[j - 1];
            steps[j - 1] = t;
        }
    return n;
}

static void test_keep(void) {
    char dir[1200], err[CKPT_ERR_MAX] = "", p[1300], text[256];
    int steps[32], n;
    sub(dir, sizeof dir, "keep");
    fresh_dir(dir);
    for (int s = 1; s <= 5; s++) CU_ASSERT_EQUAL(save_std(dir, s, s, 2, err, sizeof err), 0);
    if (g_rank == 0) {
        n = ckpt_files(dir, steps, 32);
        CU_ASSERT(n == 2 && steps[0] == 4 && steps[1] == 5);
        snprintf(p, sizeof p, "%s/latest", dir);
        read_text(p, text, sizeof text);
        CU_ASSERT_STRING_EQUAL(text, "ckpt_00000005.h5\n");
        ckpt_path(p, sizeof p, dir, 99);   // a newer one (another timeline): left alone
        spit(p, "newer", 5);
        snprintf(p, sizeof p, "%s/ckpt_00000003.h5.tmp", dir);   // a crashed save's leftover
        spit(p, "partial", 7);
    }
    barrier();
    CU_ASSERT_EQUAL(save_std(dir, 6, 6, 2, err, sizeof err), 0);
    if (g_rank == 0) {
        n = ckpt_files(dir, steps, 32);
        CU_ASSERT(n == 3 && steps[0] == 5 && steps[1] == 6 && steps[2] == 99);
    }
    // keep 0 keeps everything
    CU_ASSERT_EQUAL(save_std(dir, 7, 7, 0, err, sizeof err), 0);
    if (g_rank == 0) CU_ASSERT_EQUAL(ckpt_files(dir, steps, 32), 4);
    int rc;
    ckpt_path(p, sizeof p, dir, 7);
    CU_ASSERT_EQUAL(load_check(p, 7, 0, 0, 0, err, sizeof err, &rc), 0);
}

// After a failed save: step 1 verifies and loads, `latest` names it, no step 2 and no temporary.
static void check_intact(const char *dir) {
    char err[CKPT_ERR_MAX] = "", p[1300], text[256];
    int steps[8], rc;
    ckpt_path(p, sizeof p, dir, 1);
    CU_ASSERT_EQUAL(ckpt_verify(p, ckpt_layout_gpt2, NULL, err, sizeof err), 0);
    CU_ASSERT_EQUAL(load_check(p, 1, 0, 0, 0, err, sizeof err, &rc), 0);
    if (g_rank == 0) {
        snprintf(p, sizeof p, "%s/latest", dir);
        read_text(p, text, sizeof text);
        CU_ASSERT_STRING_EQUAL(text, "ckpt_00000001.h5\n");
        int n = ckpt_files(dir, steps, 8);
        CU_ASSERT(n == 1 && steps[0] == 1);
    }
    barrier();
}

static void test_readonly_dir(void) {
    char dir[1200], err[CKPT_ERR_MAX] = "", p[1300];
    sub(dir, sizeof dir, "readonly");
    fresh_dir(dir);
    CU_ASSERT_EQUAL(save_std(dir, 1, 1, 0, err, sizeof err), 0);
    int root = geteuid() == 0;
    if (!root) {
        if (g_rank == 0) chmod(dir, 0555);
        barrier();
        int rc = save_std(dir, 2, 2, 0, err, sizeof err);
        if (g_rank == 0) printf("\n    read-only run dir: %s", err);
        CU_ASSERT(rc == -1 && strstr(err, "Permission denied") != NULL);
        CU_ASSERT(all(rc == -1));
        if (g_rank == 0) chmod(dir, 0755);
        barrier();
    } else if (g_rank == 0) {
        printf("\n    running as root: chmod 555 does not stop root, the read-only dir case is skipped");
    }
    // as anyone: a run dir under a regular file, and one that does not exist
    if (g_rank == 0) {
        snprintf(p, sizeof p, "%s/afile", g_dir);
        spit(p, "x", 1);
    }
    barrier();
    snprintf(p, sizeof p, "%s/afile/run", g_dir);
    int rc = save_std(p, 2, 2, 0, err, sizeof err);
    if (g_rank == 0) printf("\n    run dir under a file: %s", err);
    CU_ASSERT(rc == -1 && strstr(err, "Not a directory") != NULL);
    snprintf(p, sizeof p, "%s/no/such/dir", g_dir);
    rc = save_std(p, 2, 2, 0, err, sizeof err);
    CU_ASSERT(rc == -1 && strstr(err, "No such file") != NULL);
    check_intact(dir);
}

// A file-size limit (ulimit -f; RLIMIT_FSIZE works for root too) below the checkpoint: refused
// before anything is written.
static void test_fsize_limit(void) {
    char dir[1200], err[CKPT_ERR_MAX] = "";
    sub(dir, sizeof dir, "fsize");
    fresh_dir(dir);
    CU_ASSERT_EQUAL(save_std(dir, 1, 1, 0, err, sizeof err), 0);
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 64 << 10;
    signal(SIGXFSZ, SIG_IGN);
    CU_ASSERT_EQUAL(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int rc = save_std(dir, 2, 2, 0, err, sizeof err);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, SIG_DFL);
    if (g_rank == 0) printf("\n    ulimit -f 64: %s", err);
    CU_ASSERT_EQUAL(rc, -1);
    CU_ASSERT(all(rc == -1));
    CU_ASSERT(strstr(err, "ulimit -f") != NULL && strchr(err, '\n') == NULL);
    check_intact(dir);
}

// A full disk, for real: a small tmpfs (root only; skipped with a note otherwise), step 1 saved,
// then a filler leaves less than a checkpoint free.
static void test_disk_full(void) {
    char dir[1200], err[CKPT_ERR_MAX] = "", p[1300];
    sub(dir, sizeof dir, "full");
    fresh_dir(dir);
    int mounted = g_rank == 0 && mount("tmpfs", dir, "tmpfs", 0, "size=4m") == 0;
    if (g_rank == 0 && !mounted) printf("\n    cannot mount a tmpfs (%s): the real disk-full case is skipped", strerror(errno));
    MPI_Bcast(&mounted, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (!mounted) return;
    ckpt_stats st = {0};
    sm_model_config g;
    sm_model_config c;
    test_config(&g, &c, 2, 32);
    size_t lo, hi;
    zero_slice(arena_floats(&g), g_world, g_rank, &lo, &hi);
    state s;
    state_init(&s, &g, lo, hi);
    state_fill(&s, 1);
    ckpt_meta m = test_meta(&c, 1);
    CU_ASSERT_EQUAL(ckpt_save(dir, &m, &s.params, &s.m, &s.v, lo, hi, 0, &st, err, sizeof err), 0);
    if (g_rank == 0) {   // leave half a checkpoint's reservation free
        struct statvfs vfs;
        statvfs(dir, &vfs);
        uint64_t avail = (uint64_t)vfs.f_bavail * vfs.f_frsize, fill = avail - st.reserved / 2;
        snprintf(p, sizeof p, "%s/filler", dir);
        int fd = open(p, O_WRONLY | O_CREAT, 0644);
        CU_ASSERT(fd >= 0 && posix_fallocate(fd, 0, (off_t)fill) == 0);
        close(fd);
    }
    barrier();
    m = test_meta(&c, 2);
    // found at start already: the space check a trainer makes before its first step
    uint64_t need = 0;
    int sc = ckpt_check_space(dir, &s.params, &need, err, sizeof err);
    if (g_rank == 0) printf("\n    space check: %s", err);
    CU_ASSERT(all(sc == -1) && strstr(err, "not enough disk space") != NULL && need == st.reserved);
    int rc = ckpt_save(dir, &m, &s.params, &s.m, &s.v, lo, hi, 0, NULL, err, sizeof err);
    if (g_rank == 0) printf("\n    disk full: %s", err);
    CU_ASSERT_EQUAL(rc, -1);
    CU_ASSERT(all(rc == -1));
    CU_ASSERT(strstr(err, "No space left") != NULL || strstr(err, "not enough disk space") != NULL);
    if (g_rank == 0) unlink(p);
    barrier();
    check_intact(dir);
    state_free(&s);
    barrier();
    if (g_rank == 0) CU_ASSERT_EQUAL(umount2(dir, MNT_DETACH), 0);
    barrier();
}

static void test_bad_ranges(void) {
    char dir[1200], err[CKPT_ERR_MAX] = "";
    sub(dir, sizeof dir, "ranges");
    fresh_dir(dir);
    sm_model_config g;
    sm_model_config c;
    test_config(&g, &c, 2, 32);
    sm_table probe;
    gpt2_param_table(&probe, &g);
    size_t n = sm_table_n_f32(&probe);
    state s;
    state_init(&s, &g, 0, n / 2);   // every rank the first half: neither all nor a partition
    state_fill(&s, 1);
    ckpt_meta m = test_meta(&c, 1);
    int rc = ckpt_save(dir, &m, &s.params, &s.m, &s.v, 0, n / 2, 0, NULL, err, sizeof err);
    if (g_rank == 0) printf("\n    bad moment ranges: %s", err);
    CU_ASSERT(rc == -1 && strstr(err, "partition") != NULL);
    state_free(&s);
    int steps[4];
    if (g_rank == 0) CU_ASSERT_EQUAL(ckpt_files(dir, steps, 4), 0);
}


// ---------------------------------------------------------------------------
// Non-finite state (issue 13 item 1): never committed, never loaded.
static void test_nonfinite_save(void) {
    char dir[1200], err[CKPT_ERR_MAX] = "";
    sub(dir, sizeof dir, "nonfinite_save");
    fresh_dir(dir);
    CU_ASSERT_EQUAL(save_std(dir, 1, 1, 0, err, sizeof err), 0);
    sm_model_config g, c;
    test_config(&g, &c, 2, 32);
    struct { int kind; const char *tensor; int last; float x; const char *needle, *what; } cases[] = {
        {0, "lnfb", 1, NAN, "/model/lnfb", "NaN"},          // written by the last rank only
        {1, "lnfb", 1, INFINITY, "/optim/m/lnfb", "+Inf"},  // held by the last rank's ZeRO slice only
        {2, "wte", 0, -1.0f, "/optim/v/wte", "negative"},   // rank 0's slice
        {2, "qkvw", 0, -INFINITY, "/optim/v/qkvw", "-Inf"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        state s;
        size_t lo, hi;
        state_zero(&s, &g, 2, &lo, &hi);
        sm_table *tab = cases[k].kind == 0 ? &s.params : cases[k].kind == 1 ? &s.m : &s.v;
        const sm_tensor *t = sm_table_find(tab, cases[k].tensor);
        size_t j = cases[k].last ? t->n_elems - 1 : 0, at = sm_tensor_f32_offset(t) + j;
        if (cases[k].kind == 0 || (at >= lo && at < hi)) t->ptr[j] = cases[k].x;
        ckpt_meta m = test_meta(&c, 2);
        ckpt_name(m.parent, sizeof m.parent, 1);
        int rc = ckpt_save(dir, &m, &s.params, &s.m, &s.v, lo, hi, 1, NULL, err, sizeof err);
        if (g_rank == 0) printf("\n    %s: %s", cases[k].needle, err);
        CU_ASSERT(all(rc == -1));
        CU_ASSERT(strstr(err, cases[k].needle) != NULL && strstr(err, cases[k].what) != NULL);
        state_free(&s);
        check_intact(dir);   // keep 1 deleted nothing: the last good checkpoint stays
    }
}

// Serial HDF5 (rank 0): element `index` of dataset dset of a copy of `from` set to x.
static void poison(const char *from, const char *to, const char *dset, size_t index, float x) {
    copy_file(from, to);
    hid_t f = H5Fopen(to, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, dset, H5P_DEFAULT);
    hid_t sp = H5Dget_space(d);
    hsize_t n = (hsize_t)H5Sget_simple_extent_npoints(sp);
    float *buf = malloc(n * sizeof(float));
    CU_ASSERT(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    buf[index] = x;
    CU_ASSERT(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    free(buf);
    H5Sclose(sp), H5Dclose(d), H5Fclose(f);
}

static void test_nonfinite_load(void) {
    char dir[1200], err[CKPT_ERR_MAX] = "", good[1300], bad1[1300], bad2[1300];
    run_with_step1(dir, sizeof dir, "nonfinite_load", good, sizeof good);
    snprintf(bad1, sizeof bad1, "%s/nan_fcprojb.h5", dir);
    snprintf(bad2, sizeof bad2, "%s/neg_v_lnfb.h5", dir);
    sm_model_config g, c;
    test_config(&g, &c, 2, 32);
    if (g_rank == 0) {
        poison(good, bad1, "/optim/m/fcprojb", 3, NAN);
        poison(good, bad2, "/optim/v/lnfb", 31, -0.5f);   // the arena's end: the last rank's slice
    }
    barrier();
    sm_table probe;
    gpt2_param_table(&probe, &g);
    size_t lo, hi;
    zero_slice(sm_table_n_f32(&probe), g_world, g_rank, &lo, &hi);
    const char *paths[2] = {bad1, bad2}, *needles[2] = {"/optim/m/fcprojb", "/optim/v/lnfb"};
    for (int k = 0; k < 2; k++) {
        int rc;
        load_check(paths[k], 1, lo, hi, 1, err, sizeof err, &rc);   // each rank reads its own slice only
        if (g_rank == 0) printf("\n    load: %s", err);
        CU_ASSERT(all(rc == -1));
        CU_ASSERT(strstr(err, needles[k]) != NULL && strstr(err, "refusing to load") != NULL);
        rc = ckpt_verify(paths[k], ckpt_layout_gpt2, NULL, err, sizeof err);
        CU_ASSERT(all(rc == -1));
        CU_ASSERT(strstr(err, needles[k]) != NULL);
    }
}

// ---------------------------------------------------------------------------
// Lineage (issue 13 item 4): `auto` follows `latest` and its descendants; PATH sets the abandoned
// branch aside; --keep counts along the lineage; look-alike names are ignored, with a note.
static void set_latest(const char *dir, int step) {
    if (g_rank == 0) {
        char p[1300], line[64];
        snprintf(p, sizeof p, "%s/latest", dir);
        int n = snprintf(line, sizeof line, "ckpt_%08d.h5\n", step);
        unlink(p);
        spit(p, line, (size_t)n);
    }
    barrier();
}

static int has_note(const ckpt_resume *r, const char *needle) {
    for (int i = 0; i < r->n_notes; i++)
        if (strstr(r->notes[i], needle)) return 1;
    return 0;
}

// Rank 0 flips bytes in the first chunk of dataset dset of step's checkpoint; everyone waits.
static void damage(const char *dir, int step, const char *dset) {
    if (g_rank == 0) {
        char p[1300];
        ckpt_path(p, sizeof p, dir, step);
        flip(p, chunk_middle(p, dset, 0), 4);
    }
    barrier();
}

// --resume auto on dir takes step `want`, with n_notes notes, one of them holding `note`.
static void expect_auto(const char *dir, int want, int n_notes, const char *note) {
    char err[CKPT_ERR_MAX] = "", path[1300];
    ckpt_resume r;
    CU_ASSERT_EQUAL(ckpt_resolve_resume(dir, "auto", ckpt_layout_gpt2, &r, err, sizeof err), 0);
    ckpt_path(path, sizeof path, dir, want);
    CU_ASSERT_STRING_EQUAL(r.path, path);
    CU_ASSERT(r.n_notes == n_notes && has_note(&r, note));
    ckpt_resume_free(&r);
}

static void test_resume_auto(void) {
    char dir[1200], err[CKPT_ERR_MAX] = "", p[1300], want[1300];
    sub(dir, sizeof dir, "lineage_auto");
    fresh_dir(dir);
    for (int s = 1; s <= 3; s++) CU_ASSERT_EQUAL(save_std(dir, s, s, 0, err, sizeof err), 0);
    CU_ASSERT_EQUAL(save_as(dir, 4, 4, 3, 0, err, sizeof err), 0);   // renamed, then the save died before `latest`
    CU_ASSERT_EQUAL(save_as(dir, 9, 9, 1, 0, err, sizeof err), 0);   // an abandoned branch, newer, from step 1
    set_latest(dir, 3);
    ckpt_resume r;
    // (a) the newest descendant of what `latest` names, not the newest file
    CU_ASSERT_EQUAL(ckpt_resolve_resume(dir, "auto", ckpt_layout_gpt2, &r, err, sizeof err), 0);
    ckpt_path(want, sizeof want, dir, 4);
    CU_ASSERT_STRING_EQUAL(r.path, want);
    CU_ASSERT_STRING_EQUAL(r.parent, "ckpt_00000004.h5");
    CU_ASSERT_EQUAL(r.n_notes, 0);
    ckpt_resume_free(&r);
    char found[1300];
    int n_sk;
    CU_ASSERT_EQUAL(ckpt_find_latest(dir, found, sizeof found, NULL, 0, &n_sk, err, sizeof err), CKPT_FIND_FOUND);
    ckpt_path(want, sizeof want, dir, 9);
    CU_ASSERT_STRING_EQUAL(found, want);   // the scan alone (the old rule) would take the abandoned branch
    // (b) a damaged descendant is skipped with a note: `latest`'s own file
    damage(dir, 4, "/model/wte");
    expect_auto(dir, 3, 1, "skipping damaged checkpoint ckpt_00000004.h5");
    // (b2) `latest`'s own file damaged too: its ancestors, before the newer file of another branch
    damage(dir, 3, "/model/wte");
    expect_auto(dir, 2, 2, "skipping damaged checkpoint ckpt_00000003.h5");
    ckpt_path(want, sizeof want, dir, 2);
    // (c) look-alike names are ignored, each with a note
    if (g_rank == 0) {
        const char *odd[3] = {"ckpt_5.h5", "ckpt_00000003.h5.bak", "ckpt_000000010.h5"};
        for (int i = 0; i < 3; i++) {
            snprintf(p, sizeof p, "%s/%s", dir, odd[i]);
            spit(p, "x", 1);
        }
    }
    barrier();
    CU_ASSERT_EQUAL(ckpt_resolve_resume(dir, "auto", ckpt_layout_gpt2, &r, err, sizeof err), 0);
    CU_ASSERT_STRING_EQUAL(r.path, want);
    CU_ASSERT(has_note(&r, "ignoring") && has_note(&r, "/ckpt_5.h5:") && has_note(&r, "ckpt_00000003.h5.bak") &&
              has_note(&r, "ckpt_000000010.h5"));
    ckpt_resume_free(&r);
    // (d) `latest` damaged (a FIFO: never waited on) or missing: the newest that verifies, with a note
    snprintf(p, sizeof p, "%s/latest", dir);
    if (g_rank == 0) {
        unlink(p);
        CU_ASSERT_EQUAL(mkfifo(p, 0644), 0);
    }
    barrier();
    CU_ASSERT_EQUAL(ckpt_resolve_resume(dir, "auto", ckpt_layout_gpt2, &r, err, sizeof err), 0);
    ckpt_path(want, sizeof want, dir, 9);
    CU_ASSERT_STRING_EQUAL(r.path, want);
    CU_ASSERT(has_note(&r, "not a regular file"));
    ckpt_resume_free(&r);
    // (e) none refuses a directory with checkpoints; every one damaged stops (never a fresh start)
    CU_ASSERT_EQUAL(ckpt_resolve_resume(dir, "none", ckpt_layout_gpt2, &r, err, sizeof err), -1);
    CU_ASSERT(strstr(err, "--resume none") != NULL);
    barrier();
    if (g_rank == 0) {
        unlink(p);
        for (int s = 1; s <= 9; s++) {
            ckpt_path(p, sizeof p, dir, s);
            if (exists(p)) flip(p, chunk_middle(p, "/model/lnfw", 0), 2);
        }
    }
    barrier();
    CU_ASSERT_EQUAL(ckpt_resolve_resume(dir, "auto", ckpt_layout_gpt2, &r, err, sizeof err), -1);
    if (g_rank == 0) printf("\n    all damaged: %s", err);
    CU_ASSERT(strstr(err, "all 5 checkpoints") != NULL);   // 4 and 3 were damaged already
    // (f) nothing at all: a fresh start
    sub(dir, sizeof dir, "lineage_empty");
    fresh_dir(dir);
    CU_ASSERT_EQUAL(ckpt_resolve_resume(dir, "auto", ckpt_layout_gpt2, &r, err, sizeof err), 0);
    CU_ASSERT(r.path[0] == '\0' && r.parent[0] == '\0');
}

static void test_resume_path(void) {
    char dir[1200], err[CKPT_ERR_MAX] = "", p[1300], q[1400], text[256];
    sub(dir, sizeof dir, "rollback");
    fresh_dir(dir);
    for (int s = 1; s <= 4; s++) CU_ASSERT_EQUAL(save_std(dir, s, s, 0, err, sizeof err), 0);
    if (g_rank == 0) {   // an earlier roll-back's file under the same name: never overwritten
        snprintf(q, sizeof q, "%s/abandoned", dir);
        mkdir(q, 0755);
        snprintf(q, sizeof q, "%s/abandoned/ckpt_00000003.h5", dir);
        spit(q, "older", 5);
    }
    barrier();
    ckpt_resume r;
    ckpt_path(p, sizeof p, dir, 2);
    CU_ASSERT_EQUAL(ckpt_resolve_resume(dir, p, ckpt_layout_gpt2, &r, err, sizeof err), 0);
    CU_ASSERT_STRING_EQUAL(r.path, p);
    CU_ASSERT_STRING_EQUAL(r.parent, "ckpt_00000002.h5");
    CU_ASSERT(r.path_in_run_dir == 1 && r.n_abandoned == 2);
    ckpt_path(q, sizeof q, dir, 4);
    CU_ASSERT(exists(q));   // nothing moved before the resume is accepted
    barrier();
    CU_ASSERT_EQUAL(ckpt_adopt_resume(dir, &r, err, sizeof err), 0);
    ckpt_resume_free(&r);
    if (g_rank == 0) {
        int steps[8];
        CU_ASSERT(ckpt_files(dir, steps, 8) == 2 && steps[0] == 1 && steps[1] == 2);
        snprintf(q, sizeof q, "%s/abandoned/ckpt_00000004.h5", dir);
        CU_ASSERT(exists(q));
        snprintf(q, sizeof q, "%s/abandoned/ckpt_00000003.h5.1", dir);
        CU_ASSERT(exists(q));
        snprintf(q, sizeof q, "%s/abandoned/ckpt_00000003.h5", dir);
        read_text(q, text, sizeof text);
        CU_ASSERT_STRING_EQUAL(text, "older");
        snprintf(q, sizeof q, "%s/latest", dir);
        read_text(q, text, sizeof text);
        CU_ASSERT_STRING_EQUAL(text, "ckpt_00000002.h5\n");
    }
    barrier();
    snprintf(q, sizeof q, "%s/abandoned/ckpt_00000004.h5", dir);
    CU_ASSERT_EQUAL(ckpt_verify(q, ckpt_layout_gpt2, NULL, err, sizeof err), 0);   // moved whole
    // the new branch: its step 3 is what auto resumes from, not the abandoned one
    CU_ASSERT_EQUAL(save_as(dir, 3, 33, 2, 0, err, sizeof err), 0);
    CU_ASSERT_EQUAL(ckpt_resolve_resume(dir, "auto", ckpt_layout_gpt2, &r, err, sizeof err), 0);
    int rc;
    CU_ASSERT_EQUAL(load_check(r.path, 33, 0, 0, 0, err, sizeof err, &rc), 0);
    ckpt_resume_free(&r);
    // a PATH that is not a checkpoint: refused, nothing moved
    snprintf(q, sizeof q, "%s/nosuch.h5", dir);
    CU_ASSERT_EQUAL(ckpt_resolve_resume(dir, q, ckpt_layout_gpt2, &r, err, sizeof err), -1);
    CU_ASSERT(strstr(err, "not found") != NULL);
}

static void test_keep_lineage(void) {
    char dir[1200], err[CKPT_ERR_MAX] = "";
    sub(dir, sizeof dir, "keep_lineage");
    fresh_dir(dir);
    for (int s = 1; s <= 3; s++) CU_ASSERT_EQUAL(save_std(dir, s, s, 0, err, sizeof err), 0);
    CU_ASSERT_EQUAL(save_as(dir, 4, 4, 2, 0, err, sizeof err), 0);   // another branch from 2, newer than 3
    CU_ASSERT_EQUAL(save_as(dir, 5, 5, 3, 2, err, sizeof err), 0);   // the live branch 1-2-3-5, keep 2
    if (g_rank == 0) {
        int steps[8], n = ckpt_files(dir, steps, 8);
        // by step number 3 (live) would go and 4 stay; along the lineage 5 and 3 stay, 2 and 1 go
        CU_ASSERT(n == 3 && steps[0] == 3 && steps[1] == 4 && steps[2] == 5);
    }
    barrier();
}

// The parent attribute round-trips; a save refuses a parent that is not an older checkpoint's name.
static void test_parent_attr(void) {
    char dir[1200], err[CKPT_ERR_MAX] = "", p[1300];
    sub(dir, sizeof dir, "parent");
    fresh_dir(dir);
    CU_ASSERT_EQUAL(save_as(dir, 7, 7, 5, 0, err, sizeof err), 0);
    ckpt_path(p, sizeof p, dir, 7);
    ckpt_meta m;
    CU_ASSERT_EQUAL(ckpt_read_meta(p, &m, err, sizeof err), 0);
    CU_ASSERT_STRING_EQUAL(m.parent, "ckpt_00000005.h5");
    CU_ASSERT_EQUAL(m.has_parent, 1);
    CU_ASSERT_EQUAL(save_as(dir, 8, 8, 8, 0, err, sizeof err), -1);   // itself: not older
    CU_ASSERT(strstr(err, "parent") != NULL);
}

// ---------------------------------------------------------------------------
// Modes for CTest fixtures and scripts
static int fixture_seed(void) { return 42; }

static int write_fixture(const char *dir) {
    char err[CKPT_ERR_MAX] = "", p[1200];
    mkdir_p(dir);
    fresh_dir(dir);
    setenv("SMALLMIND_CKPT_CHUNK_FLOATS", "1000", 1);   // several chunks per tensor for h5py
    sm_model_config g;
    sm_model_config c;
    test_config(&g, &c, 2, 32);
    state s;
    size_t lo, hi;
    state_zero(&s, &g, fixture_seed(), &lo, &hi);
    ckpt_meta meta = test_meta(&c, 42);
    int rc = ckpt_save(dir, &meta, &s.params, &s.m, &s.v, lo, hi, 0, NULL, err, sizeof err);
    if (rc) {
        if (g_rank == 0) fprintf(stderr, "write-fixture: %s\n", err);
        return 1;
    }
    uint64_t *rngs = malloc(sizeof(uint64_t) * 4 * (size_t)g_world);
    MPI_Gather(meta.rng.s, 4, MPI_UINT64_T, rngs, 4, MPI_UINT64_T, 0, MPI_COMM_WORLD);
    if (g_rank == 0) {   // what h5py must find, written from the C side's own values
        snprintf(p, sizeof p, "%s/expected.json", dir);
        FILE *f = fopen(p, "w");
        fprintf(f, "{\"file\":\"ckpt_00000042.h5\",\"format\":\"%s\",\"format_version\":%d,\"step\":%d,"
                   "\"tokens_seen\":%llu,\"data_cursor\":%llu,\"world_size\":%d,\n",
                CKPT_FORMAT_NAME, CKPT_FORMAT_VERSION, meta.step, (unsigned long long)meta.tokens_seen,
                (unsigned long long)meta.data_cursor, g_world);
        fprintf(f, "\"config\":{\"n_layer\":%d,\"n_head\":%d,\"n_embd\":%d,\"max_seq_len\":%d,\"vocab_size\":%d,"
                   "\"padded_vocab_size\":%d,\"tokenizer\":\"%s\"},\n",
                c.n_layer, c.n_head, c.n_embd, c.max_seq_len, c.vocab_size, c.padded_vocab_size, c.tokenizer);
        const ckpt_optim *o = &meta.optim;
        fprintf(f, "\"optim\":{\"lr\":%.17g,\"min_lr\":%.17g,\"beta1\":%.17g,\"beta2\":%.17g,\"eps\":%.17g,"
                   "\"weight_decay\":%.17g,\"warmup\":%d,\"total_steps\":%d,\"schedule_position\":%d},\n",
                o->lr, o->min_lr, o->beta1, o->beta2, o->eps, o->weight_decay, o->warmup, o->total_steps, meta.step);
        fprintf(f, "\"rng\":[");
        for (int r = 0; r < g_world; r++)
            fprintf(f, "%s[\"%llu\",\"%llu\",\"%llu\",\"%llu\"]", r ? "," : "", (unsigned long long)rngs[4 * r],
                    (unsigned long long)rngs[4 * r + 1], (unsigned long long)rngs[4 * r + 2],
                    (unsigned long long)rngs[4 * r + 3]);
        fprintf(f, "],\n\"tensors\":[\n");
        for (int i = 0; i < s.params.count; i++) {
            const sm_tensor *t = &s.params.t[i];
            fprintf(f, "%s{\"name\":\"%s\",\"shape\":[", i ? ",\n" : "", t->name);
            for (int d = 0; d < t->ndim; d++) fprintf(f, "%s%zu", d ? "," : "", t->shape[d]);
            fprintf(f, "],\"samples\":[");   // [flat index, params bits, m bits, v bits] (float32 bits)
            size_t idx[4] = {0, 1, t->n_elems / 2, t->n_elems - 1};
            for (int k = 0; k < 4; k++) {
                uint32_t bits[3];
                for (int kind = 0; kind < 3; kind++) {
                    float x = value(kind, i, idx[k], fixture_seed());
                    memcpy(&bits[kind], &x, 4);
                }
                fprintf(f, "%s[%zu,%u,%u,%u]", k ? "," : "", idx[k], bits[0], bits[1], bits[2]);
            }
            fprintf(f, "]}");
        }
        fprintf(f, "\n]}\n");
        fclose(f);
        printf("wrote %s/ckpt_00000042.h5 at %d ranks and expected.json\n", dir, g_world);
    }
    free(rngs);
    state_free(&s);
    return 0;
}

static int load_fixture(const char *dir) {
    char err[CKPT_ERR_MAX] = "", path[1300];
    int n_sk = 0, bad = 0;
    if (ckpt_find_latest(dir, path, sizeof path, NULL, 0, &n_sk, err, sizeof err) != CKPT_FIND_FOUND) {
        if (g_rank == 0) fprintf(stderr, "load-fixture: no checkpoint: %s\n", err);
        return 1;
    }
    sm_model_config g;
    sm_model_config c;
    test_config(&g, &c, 2, 32);
    sm_table probe;
    gpt2_param_table(&probe, &g);
    for (int layout = 0; layout < 2; layout++) {   // this world's ZeRO slices, then everything
        size_t lo = 0, hi = sm_table_n_f32(&probe);
        if (layout == 0) zero_slice(sm_table_n_f32(&probe), g_world, g_rank, &lo, &hi);
        state s;
        state_init(&s, &g, lo, hi);
        ckpt_meta m;
        ckpt_stats st;
        int rc = ckpt_load(path, &c, &m, &s.params, &s.m, &s.v, lo, hi, &st, err, sizeof err);
        long mism = rc == 0 ? state_check(&s, fixture_seed(), 1) : -1;
        sm_rng want;
        sm_rng_seed(&want, 1000 + 42, (uint64_t)g_rank);
        int rng_ok = m.rng_restored == (g_rank < m.world_size) &&
                     (!m.rng_restored || memcmp(want.s, m.rng.s, sizeof want.s) == 0);
        if (rc != 0 || mism != 0 || m.step != 42 || !rng_ok) {
            fprintf(stderr, "rank %d: load-fixture (layout %d): rc %d (%s), %ld mismatches, step %d, rng %s\n", g_rank,
                    layout, rc, rc ? err : "", mism, m.step, rng_ok ? "ok" : "WRONG");
            bad = 1;
        }
        if (g_rank == 0 && rc == 0)
            printf("loaded %s (written by %d ranks) at %d ranks, moments [%zu, %zu) of %zu on rank 0: %s\n", path,
                   m.world_size, g_world, lo, hi, sm_table_n_f32(&probe), mism == 0 ? "all values equal" : "MISMATCH");
        state_free(&s);
    }
    return all(!bad) ? 0 : 1;
}

static int crash_save(const char *dir, const char *stage) {
    char err[CKPT_ERR_MAX] = "";
    fresh_dir(dir);
    if (save_std(dir, 1, 1, 0, err, sizeof err) != 0) {
        fprintf(stderr, "crash-save: step 1: %s\n", err);
        return 1;
    }
    setenv("SMALLMIND_TEST_CKPT_PAUSE", stage, 1);
    save_std(dir, 2, 2, 0, err, sizeof err);
    fprintf(stderr, "crash-save: the save of step 2 was not paused at '%s'\n", stage);
    return 3;
}

// DIR/sync and DIR/async: step 7 of the same state and metadata, saved by ckpt_save and through
// --ckpt-async's path (h5py then compares every dataset and attribute: test_ckpt_async.py).
static int async_pair(const char *dir) {
    char err[CKPT_ERR_MAX] = "", d[1300];
    int bad = 0;
    for (int async = 0; async < 2; async++) {
        snprintf(d, sizeof d, "%s/%s", dir, async ? "async" : "sync");
        fresh_dir(d);
        g_async = async;
        if (save_as(d, 7, 3, 6, 0, err, sizeof err) != 0) {
            fprintf(stderr, "async-pair: %s save: %s\n", async ? "async" : "sync", err);
            bad = 1;
        }
    }
    g_async = 0;
    return all(!bad) ? 0 : 1;
}

static int check_crash(const char *dir, const char *stage) {
    char err[CKPT_ERR_MAX] = "", p[1300], text[256] = "", found[4096] = "";
    int bad = 0, past_rename = strcmp(stage, "latest") == 0;
    // `latest` still names step 1; step 2 exists only if the crash came after its rename
    snprintf(p, sizeof p, "%s/latest", dir);
    read_text(p, text, sizeof text);
    if (strcmp(text, "ckpt_00000001.h5\n") != 0) {
        fprintf(stderr, "check-crash %s: latest holds '%s'\n", stage, text);
        bad = 1;
    }
    ckpt_path(p, sizeof p, dir, 2);
    if (exists(p) != past_rename) {
        fprintf(stderr, "check-crash %s: ckpt_00000002.h5 %s\n", stage, exists(p) ? "exists" : "is missing");
        bad = 1;
    }
    // --resume auto: what `latest` names or a newer checkpoint descending from it — past the rename,
    // step 2 (its parent is step 1), not an unrelated newer file (step 5, another branch: no parent)
    int want = past_rename ? 2 : 1;
    if (save_as(dir, 5, 5, -1, 0, err, sizeof err) != 0) {
        fprintf(stderr, "check-crash %s: cannot save the unrelated step 5: %s\n", stage, err);
        bad = 1;
    }
    set_latest(dir, 1);
    ckpt_resume r;
    int rc = ckpt_resolve_resume(dir, "auto", ckpt_layout_gpt2, &r, err, sizeof err);
    snprintf(found, sizeof found, "%s", rc == 0 ? r.path : "");
    ckpt_path(p, sizeof p, dir, want);
    if (rc != 0 || strcmp(found, p) != 0 || r.n_notes != 0) {
        fprintf(stderr, "check-crash %s: resume auto %d '%s' (%s)\n", stage, rc, found, err);
        bad = 1;
    }
    ckpt_resume_free(&r);
    ckpt_path(p, sizeof p, dir, 5);
    if (g_rank == 0) unlink(p);
    barrier();
    ckpt_path(p, sizeof p, dir, want);
    int lrc;
    sm_model_config g;
    sm_model_config c;
    test_config(&g, &c, 2, 32);
    if (load_check(p, want, 0, arena_floats(&g), 1, err, sizeof err, &lrc) != 0) {
        fprintf(stderr, "check-crash %s: step %d does not load: %s\n", stage, want, err);
        bad = 1;
    }
    // the next save commits, and clears the crashed save's temporary
    if (save_std(dir, 3, 3, 0, err, sizeof err) != 0) {
        fprintf(stderr, "check-crash %s: the next save failed: %s\n", stage, err);
        bad = 1;
    }
    int steps[8], n = g_rank == 0 ? ckpt_files(dir, steps, 8) : 0;
    for (int i = 0; i < n; i++)
        if (steps[i] < 0) {
            fprintf(stderr, "check-crash %s: a .tmp is left after the next save\n", stage);
            bad = 1;
        }
    if (g_rank == 0 && !bad) printf("after kill -9 at '%s': step %d verifies and loads, latest intact\n", stage, want);
    return all(!bad) ? 0 : 1;
}

static int bench(const char *dir) {
    char err[CKPT_ERR_MAX] = "", path[1300];
    fresh_dir(dir);
    sm_model_config g = {.n_layer = 3, .n_head = 4, .n_embd = 256, .max_seq_len = 256, .vocab_size = 8192};
    gpt2_config_validate(&g, err, sizeof err);
    sm_model_config c = {g.n_layer, g.n_head, g.n_embd, g.max_seq_len, g.vocab_size, g.padded_vocab_size, "byte"};
    state s;
    size_t lo, hi;
    state_zero(&s, &g, 5, &lo, &hi);
    for (int rep = 1; rep <= 3; rep++) {
        ckpt_meta m = test_meta(&c, rep);
        ckpt_stats st;
        if (ckpt_save(dir, &m, &s.params, &s.m, &s.v, lo, hi, 1, &st, err, sizeof err) != 0) {
            fprintf(stderr, "bench: %s\n", err);
            return 1;
        }
        if (g_rank == 0)
            printf("save  %d ranks: %.1f MB in %.3f s (%.0f MB/s; HDF5 write+close %.3f s, %.0f MB/s)\n", g_world,
                   (double)st.bytes / 1e6, st.seconds, (double)st.bytes / 1e6 / st.seconds, st.io_seconds,
                   (double)st.bytes / 1e6 / st.io_seconds);
        ckpt_path(path, sizeof path, dir, rep);
        ckpt_meta out;
        double t0 = MPI_Wtime();
        if (ckpt_load(path, &c, &out, &s.params, &s.m, &s.v, lo, hi, &st, err, sizeof err) != 0) {
            fprintf(stderr, "bench: %s\n", err);
            return 1;
        }
        double t_load = MPI_Wtime() - t0;
        t0 = MPI_Wtime();
        ckpt_verify(path, ckpt_layout_gpt2, NULL, err, sizeof err);
        double t_verify = MPI_Wtime() - t0;
        if (g_rank == 0)
            printf("load  %d ranks: %.3f s (%.0f MB/s of file; each rank reads all params + its moments); "
                   "verify %.3f s (%.0f MB/s)\n",
                   g_world, t_load, (double)st.bytes / 1e6 / t_load, t_verify, (double)st.bytes / 1e6 / t_verify);
    }
    state_free(&s);
    return 0;
}

// ---------------------------------------------------------------------------
int main(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "--inspect")) return cmd_inspect(argc - 1, argv + 1);
    comm_topology topo;
    comm_init(&argc, &argv, &topo);
    g_rank = topo.rank;
    g_world = topo.world_size;
    int rc = 0;
    if (argc == 3 && !strcmp(argv[1], "--write-fixture")) rc = write_fixture(argv[2]);
    else if (argc == 3 && !strcmp(argv[1], "--load-fixture")) rc = load_fixture(argv[2]);
    else if (argc == 4 && !strcmp(argv[1], "--crash-save")) rc = crash_save(argv[2], argv[3]);
    else if (argc == 4 && !strcmp(argv[1], "--crash-save-async")) g_async = 1, rc = crash_save(argv[2], argv[3]);
    else if (argc == 4 && !strcmp(argv[1], "--check-crash")) rc = check_crash(argv[2], argv[3]);
    else if (argc == 3 && !strcmp(argv[1], "--async-pair")) rc = async_pair(argv[2]);
    else if (argc == 3 && !strcmp(argv[1], "--bench")) rc = bench(argv[2]);
    else if (argc == 3 && (!strcmp(argv[1], "--lock") || !strcmp(argv[1], "--try-lock"))) {
        ckpt_lock lock;
        char err[CKPT_ERR_MAX];
        if (ckpt_lock_run_dir(argv[2], &lock, err, sizeof err) != 0) sm_fatal(SM_EXIT_USAGE, "%s", err);
        if (!strcmp(argv[1], "--lock")) {
            printf("locked pid %d\n", (int)getpid());
            fflush(stdout);
            for (;;) pause();
        }
        ckpt_unlock_run_dir(&lock);
    }
    else if (argc == 3 && !strcmp(argv[1], "--dir")) {
        // a fresh scratch directory under BASE, shared by the ranks
        if (g_rank == 0) {
            mkdir_p(argv[2]);
            snprintf(g_dir, sizeof g_dir, "%s/run.XXXXXX", argv[2]);
            if (!mkdtemp(g_dir)) sm_fatal(1, "cannot create a scratch directory under %s", argv[2]);
        }
        MPI_Bcast(g_dir, sizeof g_dir, MPI_CHAR, 0, MPI_COMM_WORLD);
        CU_initialize_registry();
        CU_pSuite s = CU_add_suite("checkpoints", NULL, NULL);
        CU_add_test(s, "round trip, ZeRO slices, bit-exact", test_round_trip_zero);
        CU_add_test(s, "round trip, every rank all moments", test_round_trip_full);
        CU_add_test(s, "round trip, small unaligned chunks", test_round_trip_small_chunks);
        CU_add_test(s, "resharding: other moment layouts", test_reshard);
        CU_add_test(s, "metadata and verify report", test_meta_and_verify);
        CU_add_test(s, "flipped bytes refused, skipped", test_corrupt_data);
        CU_add_test(s, "truncated, garbage, empty, missing", test_truncated_garbage_empty);
        CU_add_test(s, "foreign HDF5, format, version", test_foreign);
        CU_add_test(s, "incompatible model config", test_incompatible);
        CU_add_test(s, "find_latest: none vs all damaged", test_find_latest_cases);
        CU_add_test(s, "keep K deletes older ones only", test_keep);
        CU_add_test(s, "read-only / bad run dir", test_readonly_dir);
        CU_add_test(s, "file size limit (ulimit -f)", test_fsize_limit);
        CU_add_test(s, "disk full (a small tmpfs)", test_disk_full);
        CU_add_test(s, "moment ranges must partition", test_bad_ranges);
        CU_add_test(s, "non-finite state never committed", test_nonfinite_save);
        CU_add_test(s, "non-finite state never loaded", test_nonfinite_load);
        CU_add_test(s, "auto: latest and its descendants", test_resume_auto);
        CU_add_test(s, "PATH: abandoned branch moved", test_resume_path);
        CU_add_test(s, "keep K along the lineage", test_keep_lineage);
        CU_add_test(s, "parent attribute", test_parent_attr);
        CU_add_test(s, "fletcher32 fast paths = definition", test_fletcher_paths);
        CU_add_test(s, "direct chunk reads = HDF5 reads", test_read_paths);
        CU_add_test(s, "cold loads (O_DIRECT) = the values", test_cold_reads);
        CU_add_test(s, "async saves (--ckpt-async)", test_async);
        CU_add_test(s, "even share of the bytes a rank writes", test_even_share);
        if (g_rank == 0) printf("checkpoints at %d rank%s, scratch %s\n", g_world, g_world > 1 ? "s" : "", g_dir);
        int total = cunit_run_mpi(g_rank);
        if (g_rank == 0) {
            if (total == 0)
                nftw(g_dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
            else
                printf("%d failures over all ranks; files kept in %s\n", total, g_dir);
        }
        rc = total != 0;
    } else {
        if (g_rank == 0) fprintf(stderr, "usage: see the top of tests/test_checkpoints.c\n");
        rc = 2;
    }
    comm_finalize();
    return rc;
}
