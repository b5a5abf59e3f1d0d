// chunkio.c — defines the checkpoint's data path: which rank writes which chunk, the ZeRO exchange of
// the chunks that straddle two ranks' moment slices, and the POSIX writes and reads of chunks at the
// places rank 0's layout gave them, each chunk's Fletcher32 sum and the value check computed in one pass.
//
// A chunk is stored as HDF5's Fletcher32 filter stores it: its `full` floats (an edge chunk's past the
// tensor's end are zero) then the 4-byte sum, little-endian. Every chunk is a contiguous range of its
// flat tensor (ckpt_shape_init's chunking), so a chunk's data is one piece of the arena.
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "ckpt_internal.h"


static int check_of(const ckpt_dset *d) { return d->kind == 2 ? CKPT_CHECK_NONNEG : CKPT_CHECK_FINITE; }

static void put_le32(unsigned char *p, uint32_t x) {
    p[0] = (unsigned char)x, p[1] = (unsigned char)(x >> 8), p[2] = (unsigned char)(x >> 16), p[3] = (unsigned char)(x >> 24);
}

static uint32_t get_le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

// All of iov[0..n) at off, through short writes and EINTR. 0 or -1 (errno).
int ckpt_pwritev_all(int fd, struct iovec *iov, int n, off_t off) {
    while (n > 0) {
        ssize_t w = pwritev(fd, iov, n, off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            if (w == 0) errno = EIO;
            return -1;
        }
        off += w;
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++, n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

// All of iov[0..n) from off; a file that ends first is an error (EIO: the checks bound every chunk).
static int preadv_all(int fd, struct iovec *iov, int n, off_t off) {
    while (n > 0) {
        ssize_t r = preadv(fd, iov, n, off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            if (r == 0) errno = EIO;
            return -1;
        }
        off += r;
        while (n > 0 && (size_t)r >= iov->iov_len) {
            r -= (ssize_t)iov->iov_len;
            iov++, n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + r;
            iov->iov_len -= (size_t)r;
        }
    }
    return 0;
}

// ---------------------------------------------------------------------------
// Who writes what
// The rank whose moment slice holds arena element x (the ranges partition [0, n); empty ones hold none).
static int holder(const ckpt_wplan *p, size_t x) {
    for (int r = 0; r < p->world; r++)
        if (x >= p->ranges[2 * r] && x < p->ranges[2 * r + 1]) return r;
    return -1;
}

int ckpt_wplan_build(ckpt_ctx *cx, ckpt_wplan *p, const sm_table *params, const sm_table *m, const sm_table *v,
                     size_t moment_lo, size_t moment_hi, hsize_t chunk_floats) {
    memset(p, 0, sizeof *p);
    p->world = cx->world;
    p->rank = cx->rank;
    size_t n = sm_table_n_f32(params);
    if (moment_hi > n) moment_hi = n;
    if (moment_lo > moment_hi) moment_lo = moment_hi;
    p->lo = moment_lo;
    p->hi = moment_hi;
    // 1. the ranks' moment ranges: every rank the whole arena (dealt out like params), or a partition
    uint64_t mine[2] = {moment_lo, moment_hi};
    p->ranges = sm_malloc(2 * sizeof(uint64_t) * (size_t)cx->world);
    int *order = sm_malloc(sizeof(int) * (size_t)cx->world);
    int rc = -1;
    MPI_CHECK(MPI_Allgather(mine, 2, MPI_UINT64_T, p->ranges, 2, MPI_UINT64_T, MPI_COMM_WORLD));
    int full = 1;
    for (int r = 0; r < cx->world; r++) full &= p->ranges[2 * r] == 0 && p->ranges[2 * r + 1] == n;
    p->even = full;
    if (!full) {   // the non-empty ranges sorted by start (insertion sort: world is small) must tile [0, n)
        int k = 0;
        for (int r = 0; r < cx->world; r++) {
            if (p->ranges[2 * r] == p->ranges[2 * r + 1]) continue;
            int j = k++;
            while (j > 0 && p->ranges[2 * order[j - 1]] > p->ranges[2 * r]) {
                order[j] = order[j - 1];
                j--;
            }
            order[j] = r;
        }
        uint64_t next = 0;
        for (int j = 0; j < k; j++) {
            int r = order[j];
            CK(p->ranges[2 * r] == next,
               "checkpoint: the ranks' moment ranges neither cover the whole arena on every rank nor partition it "
               "(rank %d holds [%llu, %llu), expected a range from %llu)",
               r, (unsigned long long)p->ranges[2 * r], (unsigned long long)p->ranges[2 * r + 1],
               (unsigned long long)next);
            next = p->ranges[2 * r + 1];
        }
        CK(next == n,
           "checkpoint: the ranks' moment ranges neither cover the whole arena on every rank nor partition it "
           "(together they cover [0, %llu) of %zu floats)",
           (unsigned long long)next, n);
    }
    // 2. the chunks this rank writes: its even share (params; moments without ZeRO), or (ZeRO) the chunks
    // whose first element its slice holds, assembled from the holders when they straddle slices
    ckpt_geom_init(&p->g, params, m, v, chunk_floats);
    p->own = sm_malloc(sizeof *p->own * (size_t)(p->g.n_chunks ? p->g.n_chunks : 1));   // at most every chunk
    // the even share: the dealt chunks (every dataset's but ZeRO's moments') in file order, cut into world
    // runs of about equal bytes: rank r writes those whose first byte falls in [r B / world, (r+1) B / world)
    // (a per-tensor cut would give a one-chunk tensor to the last rank alone, and a small model's whole
    // state to one rank)
    uint64_t dealt_bytes = 0, dealt_at = 0;
    for (int i = 0; i < p->g.n_dsets; i++) {
        const ckpt_dset *d = &p->g.d[i];
        if (d->kind > 0 && !p->even) continue;
        for (hsize_t k = 0; k < d->n_chunks; k++) {
            ckpt_chunk c;
            ckpt_chunk_at(&d->s, k, &c);
            dealt_bytes += (uint64_t)c.full * sizeof(float) + 4;
        }
    }
    for (int i = 0; i < p->g.n_dsets; i++) {
        const ckpt_dset *d = &p->g.d[i];
        hsize_t full_f = 1;
        for (int q = 0; q < d->s.ndim; q++) full_f *= d->s.chunk[q];
        if (full_f > p->max_full) p->max_full = full_f;
        hsize_t k0 = 0, k1 = 0;
        int zero = d->kind > 0 && !p->even;
        size_t off = sm_tensor_f32_offset(d->t);
        if (!zero) {
            k0 = 0;
            k1 = d->n_chunks;
        } else if (moment_lo < moment_hi && off < moment_hi && off + d->t->n_elems > moment_lo) {
            // the chunks that hold [max(lo, off), min(hi, off + n)) of this tensor; owned: the first element ours
            size_t a = moment_lo > off ? moment_lo - off : 0;
            size_t b = moment_hi - off < d->t->n_elems ? moment_hi - off : d->t->n_elems;
            k0 = ckpt_chunk_of(&d->s, a);
            k1 = ckpt_chunk_of(&d->s, b - 1) + 1;
        }
        for (hsize_t k = k0; k < k1; k++) {
            ckpt_chunk c;
            ckpt_chunk_at(&d->s, k, &c);
            if (zero && (off + c.start < moment_lo || off + c.start >= moment_hi)) continue;   // another's
            if (!zero) {
                uint64_t at = dealt_at;
                dealt_at += (uint64_t)c.full * sizeof(float) + 4;
                if (at * (uint64_t)cx->world / dealt_bytes != (uint64_t)cx->rank) continue;   // < 2^64 below 16 TB x 2^20 ranks
            }
            ckpt_own *o = &p->own[p->n_own++];
            o->d = i;
            o->k = k;
            o->c = c;
            o->slot = -1;
            o->src = d->t->ptr + c.start;
            if (zero && off + c.start + c.n > moment_hi) {   // it straddles into the next slices
                o->src = NULL;
                o->slot = p->n_assembled++;
            }
        }
    }
    rc = 0;
error:
    sm_free(order);
    return rc;
}

void ckpt_wplan_free(ckpt_wplan *p) {
    sm_free(p->ranges);
    sm_free(p->own);
    memset(p, 0, sizeof *p);
}

hsize_t ckpt_chunk_of(const ckpt_shape *s, hsize_t x) {
    int p = ckpt_cut_dim(s);
    hsize_t inner = 1;
    for (int d = p + 1; d < s->ndim; d++) inner *= s->dims[d];
    hsize_t cp = s->chunk[p], per_row = (s->dims[p] + cp - 1) / cp, rowlen = s->dims[p] * inner;
    return x / rowlen * per_row + x % rowlen / (cp * inner);
}

// ---------------------------------------------------------------------------
// ZeRO: the pieces of the straddling chunks, sent to the rank that writes them
void ckpt_exchange(const ckpt_wplan *p, float *const *slots) {
    if (p->even || p->world == 1) return;
    // at most one send a dataset, and a receive from every other rank for each straddling chunk
    int n_req = 0;
    MPI_Request *req = sm_malloc(sizeof *req * (size_t)(p->g.n_dsets + p->n_assembled * p->world + 1));
    for (int i = 0; i < p->g.n_dsets; i++) {
        const ckpt_dset *d = &p->g.d[i];
        if (d->kind == 0) continue;
        size_t off = sm_tensor_f32_offset(d->t);
        // (a) the chunk holding the start of this rank's slice, if it began in another's: send our part
        if (p->lo < p->hi && off < p->hi && off + d->t->n_elems > p->lo) {
            size_t a = p->lo > off ? p->lo - off : 0;
            ckpt_chunk c;
            ckpt_chunk_at(&d->s, ckpt_chunk_of(&d->s, a), &c);
            if (off + c.start < p->lo) {
                int owner = holder(p, off + c.start);
                size_t e = off + c.start + c.n < p->hi ? off + c.start + c.n : p->hi;
                MPI_CHECK(MPI_Isend(d->t->ptr + a, (int)(e - off - a), MPI_FLOAT, owner, i, MPI_COMM_WORLD, &req[n_req++]));
            }
        }
    }
    // (b) our straddling chunks: our part copied, the others' received
    for (int j = 0; j < p->n_own; j++) {
        const ckpt_own *o = &p->own[j];
        if (o->slot < 0) continue;
        const ckpt_dset *d = &p->g.d[o->d];
        size_t off = sm_tensor_f32_offset(d->t), x0 = off + o->c.start, x1 = x0 + o->c.n;
        float *dst = slots[o->slot];
        memcpy(dst, d->t->ptr + o->c.start, (p->hi - x0) * sizeof(float));
        for (int r = 0; r < p->world; r++) {
            size_t lo = p->ranges[2 * r], hi = p->ranges[2 * r + 1];
            if (r == p->rank || lo >= hi || hi <= x0 || lo >= x1) continue;
            size_t s = lo > x0 ? lo : x0, e = hi < x1 ? hi : x1;
            MPI_CHECK(MPI_Irecv(dst + (s - x0), (int)(e - s), MPI_FLOAT, r, o->d, MPI_COMM_WORLD, &req[n_req++]));
        }
    }
    MPI_CHECK(MPI_Waitall(n_req, req, MPI_STATUSES_IGNORE));
    sm_free(req);
}

// ---------------------------------------------------------------------------
// Sums
void ckpt_value_fail(ckpt_ctx *cx, const ckpt_dset *d, hsize_t element, float x, int loading) {
    char what[64];
    ckpt_bad_value_str(what, sizeof what, x);
    if (loading)
        ckpt_fail(cx, "checkpoint holds a value that is %s: %s/%s element %llu; refusing to load it", what, d->group,
                  d->t->name, (unsigned long long)element);
    else
        ckpt_fail(cx, "refusing to commit a checkpoint with a value that is %s: %s/%s element %llu", what, d->group,
                  d->t->name, (unsigned long long)element);
}

int ckpt_sum_chunk(ckpt_ctx *cx, const ckpt_dset *d, const ckpt_chunk *c, void *dst, const float *src,
                   unsigned char sum_le[4]) {
    ckpt_fletcher f;
    ckpt_fletcher_init(&f);
    size_t n = (size_t)c->n, bad = dst ? ckpt_fletcher_copy(&f, dst, src, n * sizeof(float), check_of(d))
                                       : ckpt_fletcher_add(&f, src, n * sizeof(float), check_of(d));
    if (bad < n) {
        ckpt_value_fail(cx, d, c->start + bad, src[bad], 0);
        return -1;
    }
    size_t pad = (size_t)(c->full - c->n) * sizeof(float);
    if (dst) memset((unsigned char *)dst + n * sizeof(float), 0, pad);
    ckpt_fletcher_add_zeros(&f, pad);
    put_le32(sum_le, ckpt_fletcher_end(&f));
    return 0;
}

// ---------------------------------------------------------------------------
// Writing (a synchronous save)
// The kernel's copy between a buffer and the page cache runs 3-4x slower (in CPU time: measured with perf
// on this machine, AMD EPYC) when the buffer's address and the file offset differ modulo the page: so data
// goes through a per-thread bounce buffer placed congruent with the file (the chunks are also 4 KiB
// aligned in the file: layout.c), filled by the fused copy + sum + check from the tables.
#define BOUNCE_BYTES ((size_t)4 << 20)   // a batch: summed into the bounce, then written while still in cache
#define PAGE 4096

// A batch: own[j0, j1) at increasing places in the file, spanning at most BOUNCE_BYTES (any gaps between
// them included). HDF5 may place a small chunk in an earlier gap (alignment leftovers), so the plan's order
// is not always the file's: a chunk placed before the previous one's end starts a new batch, and the last
// chunk of a batch is the one that ends furthest.
static int next_batch(const ckpt_wplan *p, const ckpt_chunk_loc *locs, int j0) {
    const ckpt_chunk_loc *l0 = &locs[p->g.d[p->own[j0].d].first + p->own[j0].k];
    uint64_t start = l0->addr, end = l0->addr + l0->size;
    int j = j0 + 1;   // at least one (a chunk larger than the bounce gets a bounce of its own)
    for (; j < p->n_own; j++) {
        const ckpt_chunk_loc *l = &locs[p->g.d[p->own[j].d].first + p->own[j].k];
        if (l->addr < end || l->addr + l->size - start + PAGE > BOUNCE_BYTES) break;
        end = l->addr + l->size;
    }
    return j;
}

// A chunk as the file stores it, into out (data, zero padding, sum). 0, or -1 (a bad value: message in cx).
static int stage_chunk(ckpt_ctx *cx, const ckpt_dset *d, const ckpt_chunk *c, const float *src, unsigned char *out) {
    return ckpt_sum_chunk(cx, d, c, out, src, out + (size_t)c->full * sizeof(float));
}

int ckpt_write_owned(ckpt_ctx *cx, int fd, const ckpt_wplan *p, const ckpt_chunk_loc *locs, float *const *slots,
                     double *check_s) {
    int n_batch = 0;
    int *starts = sm_malloc(sizeof(int) * (size_t)(p->n_own + 1));
    for (int j = 0; j < p->n_own; j = next_batch(p, locs, j)) starts[n_batch++] = j;
    starts[n_batch] = p->n_own;
    int bad_batch = n_batch, io_batch = n_batch, io_errno = 0;
    double t_sum = 0;
    // the team's threads take batches in turn: one sums a batch while another's is copied into the page
    // cache (the kernel serialises buffered writes to one file anyway)
#pragma omp parallel reduction(+ : t_sum)
    {
        unsigned char *bounce = NULL;
        size_t cap = 0;
        ckpt_ctx quiet;   // the first failing batch's message is made again below
        ckpt_ctx_init_plain(&quiet, "", "", "");
#pragma omp for schedule(dynamic, 1)
        for (int b = 0; b < n_batch; b++) {
            const ckpt_chunk_loc *l0 = &locs[p->g.d[p->own[starts[b]].d].first + p->own[starts[b]].k];
            const ckpt_chunk_loc *l1 = &locs[p->g.d[p->own[starts[b + 1] - 1].d].first + p->own[starts[b + 1] - 1].k];
            size_t need = (size_t)(l1->addr + l1->size - l0->addr) + 2 * PAGE;
            if (need > cap) {
                sm_free(bounce);
                bounce = sm_malloc(need);   // page aligned (glibc: large blocks are mmap'd, plus a 16-byte header)
                cap = need;
            }
            unsigned char *base = (unsigned char *)(((uintptr_t)bounce + PAGE - 1) / PAGE * PAGE) + l0->addr % PAGE;
            int ok = 1;
            double t0 = sm_now_s();
            for (int j = starts[b]; j < starts[b + 1] && ok; j++) {
                const ckpt_own *o = &p->own[j];
                const ckpt_dset *d = &p->g.d[o->d];
                const ckpt_chunk_loc *l = &locs[d->first + o->k];
                ok = stage_chunk(&quiet, d, &o->c, o->slot >= 0 ? slots[o->slot] : o->src, base + (l->addr - l0->addr)) == 0;
            }
            t_sum += sm_now_s() - t0;
            if (!ok) {
#pragma omp critical(ckpt_write)
                if (b < bad_batch) bad_batch = b;
                continue;
            }
            // chunk by chunk: the gaps between them (alignment) may hold metadata, never written here
            for (int j = starts[b]; j < starts[b + 1]; j++) {
                const ckpt_chunk_loc *l = &locs[p->g.d[p->own[j].d].first + p->own[j].k];
                uint64_t run = l->size;   // chunks with no gap between them go out together
                while (j + 1 < starts[b + 1]) {
                    const ckpt_chunk_loc *next = &locs[p->g.d[p->own[j + 1].d].first + p->own[j + 1].k];
                    if (next->addr != l->addr + run) break;
                    run += next->size;
                    j++;
                }
                struct iovec iov = {base + (l->addr - l0->addr), (size_t)run};
                if (ckpt_pwritev_all(fd, &iov, 1, (off_t)l->addr) != 0) {
                    int e = errno;
#pragma omp critical(ckpt_write)
                    if (b < io_batch) io_batch = b, io_errno = e;
                    break;
                }
            }
        }
        sm_free(bounce);
    }
    *check_s += t_sum;
    int rc = 0;
    if (bad_batch < n_batch) {   // the first bad value, as a serial pass meets it
        unsigned char *tmp = sm_malloc((size_t)p->max_full * sizeof(float) + 4);
        for (int j = starts[bad_batch]; j < starts[bad_batch + 1]; j++) {
            const ckpt_own *o = &p->own[j];
            if (stage_chunk(cx, &p->g.d[o->d], &o->c, o->slot >= 0 ? slots[o->slot] : o->src, tmp) != 0) break;
        }
        sm_free(tmp);
        rc = -1;
    } else if (io_batch < n_batch) {
        ckpt_fail_sys(cx, io_errno, "cannot write the checkpoint's data");
        rc = -1;
    }
    sm_free(starts);
    return rc;
}

// ---------------------------------------------------------------------------
// Reading
// One read task: chunks [k0, k1) of d, in one pread into a bounce congruent with the file (gaps between
// the chunks read and ignored), of which [a, b) of the flat tensor is wanted.
typedef struct {
    int d;
    hsize_t k0, k1, a, b;
    int direct;   // its place in the O_DIRECT pipeline's order, or -1 (read through the page cache)
} read_task;

// The file bytes task t covers: [*start, *end).
static void task_span(const ckpt_geom *g, const ckpt_chunk_loc *locs, const read_task *t, uint64_t *start, uint64_t *end) {
    const ckpt_dset *d = &g->d[t->d];
    const ckpt_chunk_loc *l0 = &locs[d->first + t->k0], *l1 = &locs[d->first + t->k1 - 1];
    *start = l0->addr;
    *end = l1->addr + l1->size;
}

// Verifies task t's chunks, read into base (the task's first byte), and copies the wanted values into
// the tensor. 0, or -1 (message in cx).
static int read_task_verify(ckpt_ctx *cx, const ckpt_dset *d, const ckpt_chunk_loc *locs, const read_task *t,
                            const unsigned char *base) {
    const ckpt_chunk_loc *l0 = &locs[d->first + t->k0];
    float *dst = d->t->ptr;
    for (hsize_t k = t->k0; k < t->k1; k++) {
        ckpt_chunk c;
        ckpt_chunk_at(&d->s, k, &c);
        const ckpt_chunk_loc *l = &locs[d->first + k];
        const unsigned char *data = base + (l->addr - l0->addr), *sum = data + (size_t)c.full * sizeof(float);
        hsize_t s = c.start > t->a ? c.start : t->a, e = c.start + c.n < t->b ? c.start + c.n : t->b;
        int whole = s == c.start && e == c.start + c.n;
        // the sum over data and padding; a whole chunk is copied into the tensor and its values checked in
        // the same pass, a part of one copied and checked after
        ckpt_fletcher f;
        ckpt_fletcher_init(&f);
        size_t n = (size_t)c.n, bad = ckpt_fletcher_copy(&f, whole ? dst + c.start : NULL, data, n * sizeof(float),
                                                         whole ? check_of(d) : CKPT_CHECK_NONE);
        if (c.full > c.n) ckpt_fletcher_add(&f, data + n * sizeof(float), (size_t)(c.full - c.n) * sizeof(float), CKPT_CHECK_NONE);
        uint32_t got = ckpt_fletcher_end(&f), want = get_le32(sum);
        // HDF5 also accepts the sum with its 16-bit halves' bytes swapped (files of HDF5 < 1.6.3)
        uint32_t reversed = ((got & 0x00ff00ffu) << 8) | ((got >> 8) & 0x00ff00ffu);
        if (want != got && want != reversed) {
            ckpt_fail(cx, "checkpoint is corrupt: cannot read %s/%s: data error detected by Fletcher32 checksum "
                      "(chunk %llu at byte %llu)", d->group, d->t->name, (unsigned long long)k, (unsigned long long)l->addr);
            return -1;
        }
        if (!whole) {
            memcpy(dst + s, data + (s - c.start) * sizeof(float), (size_t)(e - s) * sizeof(float));
            bad = sm_first_bad_float(dst + s, (size_t)(e - s), d->kind == 2);
        }
        if (bad < (size_t)(e - s)) {
            ckpt_value_fail(cx, d, s + bad, dst[s + bad], 1);
            return -1;
        }
    }
    return 0;
}

// The O_DIRECT pipeline for the tasks whose bytes are not in the page cache (a cold load): reader threads
// keep READERS page-aligned reads in flight, in file order, into SLOTS buffers, ahead of the verifying
// threads (the caller's OpenMP team), which take the tasks in the same order. The disk then never waits
// for a checksum, nor a checksum for the disk, even on one core (the readers sleep in the kernel while the
// device's DMA fills their buffers), and the bytes skip the page cache's copy. Task q of the pipeline
// uses slot q % SLOTS once task q - SLOTS has been verified.
#define READERS 4   // measured on a virtio disk, 1.5 GB cold at 1 rank: 2 readers 0.74x a plain read, 4: 0.92
#define SLOTS 8
enum { Q_PENDING, Q_READY, Q_RELEASED };

typedef struct {
    int fd;                       // the file, opened O_DIRECT
    int fd_buffered;              // the same, through the page cache (a read O_DIRECT refuses falls back to it)
    const ckpt_geom *g;
    const ckpt_chunk_loc *locs;
    const read_task *tasks;
    const int *order;             // the pipeline's tasks (indices into tasks), in file order
    int n;
    unsigned char *slots;         // SLOTS buffers of `stride` bytes each, page aligned
    size_t stride;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int next;                     // the next pipeline task a reader takes
    int stop;                     // a failure: readers stop reading (tasks are still marked ready)
    int *state;                   // Q_* per pipeline task
    int *err;                     // the read's errno per pipeline task (0: read)
    pthread_t threads[READERS];
    int n_threads;
} dio_pipe;

// The bytes of task t read into slot buffer buf; *base: where the task's first byte landed. 0 or errno.
static int dio_read(dio_pipe *dp, const read_task *t, unsigned char *buf, unsigned char **base) {
    uint64_t start, end;
    task_span(dp->g, dp->locs, t, &start, &end);
    uint64_t a = start / PAGE * PAGE, b = (end + PAGE - 1) / PAGE * PAGE;
    *base = buf + (start - a);
    size_t got = 0, need = (size_t)(end - a), len = (size_t)(b - a);
    int fd = dp->fd;
    while (got < need) {
        ssize_t r = pread(fd, buf + got, len - got, (off_t)(a + got));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && errno == EINVAL && fd == dp->fd) {   // O_DIRECT refused this read: the page cache
            fd = dp->fd_buffered;
            continue;
        }
        if (r <= 0) return r == 0 ? EIO : errno;
        got += (size_t)r;
    }
    return 0;
}

static void *dio_reader(void *arg) {
    dio_pipe *dp = arg;
    pthread_mutex_lock(&dp->mu);
    for (;;) {
        int q = dp->next;
        if (q >= dp->n) break;
        dp->next++;
        while (q >= SLOTS && dp->state[q - SLOTS] != Q_RELEASED) pthread_cond_wait(&dp->cv, &dp->mu);
        int stop = dp->stop;
        pthread_mutex_unlock(&dp->mu);
        unsigned char *base;
        int e = stop ? 0 : dio_read(dp, &dp->tasks[dp->order[q]], dp->slots + (size_t)(q % SLOTS) * dp->stride, &base);
        pthread_mutex_lock(&dp->mu);
        dp->err[q] = e;
        dp->state[q] = Q_READY;
        pthread_cond_broadcast(&dp->cv);
    }
    pthread_mutex_unlock(&dp->mu);
    return NULL;
}

// Waits for pipeline task q's bytes; returns its read's errno (0: read) and where its first byte is.
static int dio_wait(dio_pipe *dp, int q, const unsigned char **base) {
    pthread_mutex_lock(&dp->mu);
    while (dp->state[q] != Q_READY) pthread_cond_wait(&dp->cv, &dp->mu);
    int e = dp->err[q];
    pthread_mutex_unlock(&dp->mu);
    uint64_t start, end;
    task_span(dp->g, dp->locs, &dp->tasks[dp->order[q]], &start, &end);
    *base = dp->slots + (size_t)(q % SLOTS) * dp->stride + start % PAGE;
    return e;
}

// Pipeline task q's slot is free again; with failed, the readers stop reading.
static void dio_release(dio_pipe *dp, int q, int failed) {
    pthread_mutex_lock(&dp->mu);
    dp->state[q] = Q_RELEASED;
    if (failed) dp->stop = 1;
    pthread_cond_broadcast(&dp->cv);
    pthread_mutex_unlock(&dp->mu);
}

// Which tasks go through the pipeline: those with a page of their span not in the page cache. Linux's
// cachestat (6.5) counts a range's cached pages from the page cache's tree (~0.1 ms for a 1.5 GB file);
// without it, mincore on a mapping of the file (page by page: ~20 ms for the same file); without either,
// every task. Sets t->direct; returns how many.
struct sm_cachestat_range {
    uint64_t off, len;
};
struct sm_cachestat {
    uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
};
#ifndef SYS_cachestat
#define SYS_cachestat 451   // the same number on every architecture (the syscall table's common part)
#endif

static int dio_choose(int fd, const ckpt_geom *g, const ckpt_chunk_loc *locs, read_task *tasks, int n_task) {
    int use_cachestat = 1;
    void *map = MAP_FAILED;
    size_t map_len = 0;
    unsigned char *vec = NULL;
    size_t vcap = 0;
    int n = 0;
    for (int j = 0; j < n_task; j++) {
        uint64_t start, end;
        task_span(g, locs, &tasks[j], &start, &end);
        uint64_t a = start / PAGE * PAGE;
        size_t pages = (size_t)((end - a + PAGE - 1) / PAGE);
        int cached = 0;
        if (use_cachestat) {
            struct sm_cachestat_range r = {a, (uint64_t)pages * PAGE};
            struct sm_cachestat cs;
            memset(&cs, 0, sizeof cs);
            if (syscall(SYS_cachestat, fd, &r, &cs, 0) == 0) {
                cached = cs.nr_cache >= pages;
            } else {   // an older kernel: mincore from here on
                use_cachestat = 0;
                struct stat st;
                if (fstat(fd, &st) == 0 && st.st_size > 0) {
                    map_len = (size_t)st.st_size;
                    map = mmap(NULL, map_len, PROT_READ, MAP_SHARED, fd, 0);
                }
            }
        }
        if (!use_cachestat && map != MAP_FAILED && end <= map_len) {
            if (pages > vcap) {
                sm_free(vec);
                vec = sm_malloc(pages);
                vcap = pages;
            }
            if (mincore((char *)map + a, (size_t)(end - a), vec) == 0) {
                cached = 1;
                for (size_t i = 0; i < pages && cached; i++) cached = vec[i] & 1;
            }
        }
        tasks[j].direct = cached ? -1 : n++;
    }
    sm_free(vec);
    if (map != MAP_FAILED) munmap(map, map_len);
    return n;
}

// Starts the pipeline over the tasks chosen; 0, or -1 (no thread started: the tasks go through the page cache).
static int dio_start(dio_pipe *dp, int fd_direct, int fd, const ckpt_geom *g, const ckpt_chunk_loc *locs,
                     read_task *tasks, int n_task, int n_direct) {
    memset(dp, 0, sizeof *dp);
    dp->fd = fd_direct;
    dp->fd_buffered = fd;
    dp->g = g;
    dp->locs = locs;
    dp->tasks = tasks;
    dp->n = n_direct;
    int *order = sm_malloc(sizeof(int) * (size_t)(n_direct + 1));
    size_t longest = 0;
    for (int j = 0; j < n_task; j++) {
        if (tasks[j].direct < 0) continue;
        order[tasks[j].direct] = j;
        uint64_t start, end;
        task_span(g, locs, &tasks[j], &start, &end);
        size_t len = (size_t)(end - start / PAGE * PAGE);
        if (len > longest) longest = len;
    }
    dp->order = order;
    dp->stride = (longest + 2 * PAGE) / PAGE * PAGE;
    dp->slots = sm_arena(dp->stride * SLOTS);   // 2 MiB pages when large: a handful of first-touch faults
    dp->state = sm_calloc((size_t)n_direct + 1, sizeof(int));
    dp->err = sm_calloc((size_t)n_direct + 1, sizeof(int));
    pthread_mutex_init(&dp->mu, NULL);
    pthread_cond_init(&dp->cv, NULL);
    for (int i = 0; i < READERS && i < n_direct; i++) {
        if (pthread_create(&dp->threads[i], NULL, dio_reader, dp) != 0) break;
        dp->n_threads++;
    }
    if (dp->n_threads == 0) {
        pthread_cond_destroy(&dp->cv);
        pthread_mutex_destroy(&dp->mu);
        sm_free(dp->slots);
        sm_free(dp->state);
        sm_free(dp->err);
        sm_free(order);
        memset(dp, 0, sizeof *dp);
        for (int j = 0; j < n_task; j++) tasks[j].direct = -1;
        return -1;
    }
    return 0;
}

static void dio_end(dio_pipe *dp) {
    if (dp->n_threads == 0) return;
    for (int i = 0; i < dp->n_threads; i++) pthread_join(dp->threads[i], NULL);
    pthread_cond_destroy(&dp->cv);
    pthread_mutex_destroy(&dp->mu);
    sm_free(dp->slots);
    sm_free(dp->state);
    sm_free(dp->err);
    sm_free((void *)dp->order);
}

int ckpt_read_ranges(ckpt_ctx *cx, int fd, int fd_direct, int all_direct, const ckpt_geom *g,
                     const ckpt_chunk_loc *locs, const hsize_t *ranges, uint64_t *direct_bytes) {
    // the tasks: runs of chunks at increasing places spanning at most BOUNCE_BYTES (a larger chunk: alone)
    int n_task = 0, cap = 0;
    for (int i = 0; i < g->n_dsets; i++) {
        const ckpt_dset *d = &g->d[i];
        hsize_t a = ranges[2 * i], b = ranges[2 * i + 1];
        if (a < b) cap += (int)(ckpt_chunk_of(&d->s, b - 1) + 1 - ckpt_chunk_of(&d->s, a));
    }
    read_task *tasks = sm_malloc(sizeof *tasks * (size_t)(cap + 1));
    for (int i = 0; i < g->n_dsets; i++) {
        const ckpt_dset *d = &g->d[i];
        hsize_t a = ranges[2 * i], b = ranges[2 * i + 1];
        if (a >= b) continue;
        hsize_t k = ckpt_chunk_of(&d->s, a), k_end = ckpt_chunk_of(&d->s, b - 1) + 1;
        while (k < k_end) {
            read_task *t = &tasks[n_task++];
            *t = (read_task){.d = i, .k0 = k, .a = a, .b = b, .direct = -1};
            // at increasing places only (HDF5 may place a chunk in an earlier gap; a crafted file anywhere):
            // the task's last chunk then ends it, and the read covers every chunk of it
            uint64_t start = locs[d->first + k].addr, end = start + locs[d->first + k].size;
            for (k++; k < k_end; k++) {
                const ckpt_chunk_loc *l = &locs[d->first + k];
                if (l->addr < end || l->addr + l->size - start + PAGE > BOUNCE_BYTES) break;
                end = l->addr + l->size;
            }
            t->k1 = k;
        }
    }
    // the tasks whose bytes are not all in the page cache are read O_DIRECT by the pipeline's threads,
    // the others by the verifying thread through the page cache (a warm load copies on every core)
    dio_pipe dp;
    memset(&dp, 0, sizeof dp);
    if (fd_direct >= 0) {
        int n_direct = all_direct ? n_task : dio_choose(fd, g, locs, tasks, n_task);
        for (int j = 0; all_direct && j < n_task; j++) tasks[j].direct = j;
        if (n_direct > 0) dio_start(&dp, fd_direct, fd, g, locs, tasks, n_task, n_direct);
    }
    *direct_bytes = 0;
    for (int j = 0; j < n_task; j++) {
        uint64_t start, end;
        task_span(g, locs, &tasks[j], &start, &end);
        if (tasks[j].direct >= 0) *direct_bytes += end - start;
    }
    // the team's threads take tasks in file order: one verifies while another's read is in the kernel;
    // the first failing task's message (in file order) is reported
    int first_bad = n_task;
#pragma omp parallel
    {
        unsigned char *bounce = NULL;
        size_t bcap = 0;
        ckpt_ctx mine;
        ckpt_ctx_init_plain(&mine, cx->where, "", "");
#pragma omp for schedule(dynamic, 1)
        for (int j = 0; j < n_task; j++) {
            const read_task *t = &tasks[j];
            const ckpt_dset *d = &g->d[t->d];
            int skip;
#pragma omp atomic read
            skip = first_bad;
            mine.msg[0] = '\0';
            int rc = 0;
            if (t->direct >= 0) {   // the pipeline read it (or, after a failure, skipped it)
                const unsigned char *base;
                int e = dio_wait(&dp, t->direct, &base);
                if (skip < j) {
                    dio_release(&dp, t->direct, 1);
                    continue;
                }
                if (e != 0) {
                    ckpt_fail_sys(&mine, e, "checkpoint is corrupt: cannot read %s/%s", d->group, d->t->name);
                    rc = -1;
                } else {
                    rc = read_task_verify(&mine, d, locs, t, base);
                }
                dio_release(&dp, t->direct, rc != 0);
            } else {
                if (skip < j) continue;
                uint64_t start, end;
                task_span(g, locs, t, &start, &end);
                size_t len = (size_t)(end - start);
                if (len + 2 * PAGE > bcap) {
                    sm_free(bounce);
                    bcap = len + 2 * PAGE;
                    bounce = sm_arena(bcap);   // 2 MiB pages when large: first-touch faults cost ~12 us per 4 KiB
                }
                unsigned char *base = (unsigned char *)(((uintptr_t)bounce + PAGE - 1) / PAGE * PAGE) + start % PAGE;
                struct iovec iov = {base, len};
                if (preadv_all(fd, &iov, 1, (off_t)start) != 0) {
                    ckpt_fail_sys(&mine, errno, "checkpoint is corrupt: cannot read %s/%s", d->group, d->t->name);
                    rc = -1;
                } else {
                    rc = read_task_verify(&mine, d, locs, t, base);
                }
            }
            if (rc != 0) {
#pragma omp critical(ckpt_read)
                if (j < first_bad) {
#pragma omp atomic write
                    first_bad = j;
                    snprintf(cx->msg, sizeof cx->msg, "%s", mine.msg);
                }
            }
        }
        sm_free(bounce);
    }
    dio_end(&dp);
    sm_free(tasks);
    return first_bad < n_task ? -1 : 0;
}
