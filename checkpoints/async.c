// async.c — defines asynchronous checkpoints: the step that saves copies this rank's chunks into a
// buffer allocated once (checking every value as it copies) and returns; a worker thread sums each chunk
// (Fletcher32, over the copy), writes the buffer and syncs it, and, once every rank's data is on disk,
// rank 0's worker commits. On rank 0 the copy starts in the worker while the main thread lays the file
// out (HDF5), and the step's threads take over the copy once the layout is done: the layout costs the
// step nothing but its share of the machine's memory bandwidth.
//
// MPI: the worker makes no MPI call (MPI_THREAD_FUNNELED is all comm_init asks for, and all Open MPI
// needs to give). Everything collective — the checks, rank 0's layout and the chunk table, the ZeRO
// exchange — happens in ckpt_async_save on the main thread; the only collective afterwards is
// ckpt_async_poll's small allreduce at step boundaries, which finds when every rank's data is written
// (then rank 0's worker commits) and when the commit is done. HDF5: only the main thread calls it
// (the layout, in ckpt_async_save); the worker copies memory and writes with POSIX I/O, and the
// commit's pruning reads headers in a forked child as always.
//
// The commit rules are the synchronous save's: the data goes to ckpt_NNNNNNNN.h5.tmp, is synced by
// every rank, then rank 0 syncs, renames, syncs the directory and rewrites `latest`. A crash at any
// moment leaves the previous checkpoint and `latest` as they were (or, past the rename, the new one
// complete, which --resume auto finds by its parent).
#include <errno.h>
#include <fcntl.h>
#include <immintrin.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "ckpt_internal.h"

enum { JOB_NONE, JOB_COPY, JOB_WRITE, JOB_COMMIT, JOB_QUIT };
#define RUN_BYTES ((size_t)8 << 20)   // the writer sums and writes at most this much at a time (adjacent chunks)
enum { PHASE_IDLE, PHASE_WRITING, PHASE_COMMITTING };

struct ckpt_async {
    int rank, world;
    // this rank's chunks as the file stores them (data, zero padding, sum), in file order; a chunk of a
    // page or more on a page boundary, as the layout places it in the file (the kernel's copies run at
    // full speed), a smaller one on 64 bytes (the layout is not known when the copy starts)
    unsigned char *snap;
    size_t snap_bytes;
    uint64_t *off;        // own[j]'s offset in snap (from the plan)
    int n_own;
    hsize_t *full;        // own[j]'s stored floats (the plan a save makes must be the one sized here)
    float *staging;       // ZeRO: the chunks straddling slices, assembled here first
    int n_assembled;
    hsize_t max_full;
    // a capture (every chunk straight from the table, no ZeRO): the buffer filled by the AdamW pass of the
    // step that saves; segs: each kind's chunks by arena offset
    sm_capture cap;
    sm_capture_seg *segs;
    int capturable, armed, armed_step;
    // the copy in flight: chunks handed out by `next` to the worker (until `joined`) and the step's threads
    float **slots;        // the assembled chunks (ckpt_exchange's)
    atomic_int next, joined, first_bad;
    // the save in flight
    int phase;
    ckpt_saving *sv;
    ckpt_ctx cx;          // its context: file name, message
    ckpt_stats st;
    // the worker
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int job;              // what the worker is asked to do (JOB_NONE when idle)
    int job_rc;           // the last job's result: 1 running, 0 done, -1 failed (message in job_msg)
    char job_msg[CKPT_ERR_MAX];
};

// ---------------------------------------------------------------------------
// The copy
// Chunk c's n floats from src into dst, then its zero padding; every value checked (finite; >= 0 with
// nonneg) as it is copied, 32 KiB at a time (sm_copy_check: non-temporal stores). Returns the index of the
// first bad value, else c->n.
static size_t copy_check(unsigned char *dst, const float *src, const ckpt_chunk *c, int nonneg) {
    enum { PIECE = 8192 };   // floats
    size_t n = (size_t)c->n;
    for (size_t at = 0; at < n; at += PIECE) {
        size_t k = n - at < PIECE ? n - at : PIECE, b = sm_copy_check(dst + at * sizeof(float), src + at, k, nonneg);
        if (b < k) return at + b;
    }
    memset(dst + n * sizeof(float), 0, (size_t)(c->full - c->n) * sizeof(float));
#if defined(__SSE2__)
    _mm_sfence();   // this thread's streamed stores visible before the writer's start
#endif
    return n;
}

// Copies chunks handed out one at a time until none is left (or, with stop_when_joined, until the step's
// threads join); the lowest failing chunk's index into a->first_bad.
static void copy_chunks(struct ckpt_async *a, int stop_when_joined) {
    const ckpt_wplan *p = &a->sv->plan;
    for (;;) {
        if (stop_when_joined && atomic_load_explicit(&a->joined, memory_order_relaxed)) break;
        int j = atomic_fetch_add_explicit(&a->next, 1, memory_order_relaxed);
        if (j >= p->n_own) break;
        const ckpt_own *o = &p->own[j];
        if (copy_check(a->snap + a->off[j], o->slot >= 0 ? a->slots[o->slot] : o->src, &o->c, p->g.d[o->d].kind == 2) < o->c.n) {
            int b = atomic_load(&a->first_bad);
            while (j < b && !atomic_compare_exchange_weak(&a->first_bad, &b, j)) {
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The worker
static int write_snapshot(struct ckpt_async *a, ckpt_ctx *cx) {
    const ckpt_saving *sv = a->sv;
    const ckpt_wplan *p = &sv->plan;
    int fd = -1, rc = -1;
    double t = sm_now_s();
    CK_SYS((fd = open(sv->tmp, O_WRONLY | O_CLOEXEC)) >= 0, "cannot open the new checkpoint to write it");
    enum { MAX_IOV = 64 };
    struct iovec iov[MAX_IOV];
    for (int j = 0; j < p->n_own;) {   // chunk by chunk (the gaps may hold metadata), adjacent ones together
        const ckpt_chunk_loc *l = &sv->locs[p->g.d[p->own[j].d].first + p->own[j].k];
        uint64_t at = l->addr, len = 0;
        int j0 = j, n = 0;
        for (; j < p->n_own && n < MAX_IOV && len < RUN_BYTES; j++, n++) {
            const ckpt_chunk_loc *lj = &sv->locs[p->g.d[p->own[j].d].first + p->own[j].k];
            if (lj->addr != at + len) break;
            CK(lj->size == (uint64_t)p->own[j].c.full * sizeof(float) + 4,
               "checkpoint: the layout gave a chunk %llu bytes, its data takes %llu (an internal error)",
               (unsigned long long)lj->size, (unsigned long long)p->own[j].c.full * sizeof(float) + 4);
            iov[n] = (struct iovec){a->snap + a->off[j], (size_t)lj->size};
            len += lj->size;
        }
        // each chunk's Fletcher32 over what the step copied (data and padding), stored after it; then the
        // run goes out while still in cache
        double ts = sm_now_s();
        for (int q = j0; q < j; q++) {
            unsigned char *data = a->snap + a->off[q];
            size_t bytes = (size_t)p->own[q].c.full * sizeof(float);
            ckpt_fletcher f;
            ckpt_fletcher_init(&f);
            ckpt_fletcher_add(&f, data, bytes, CKPT_CHECK_NONE);
            uint32_t x = ckpt_fletcher_end(&f);
            data[bytes] = (unsigned char)x, data[bytes + 1] = (unsigned char)(x >> 8);
            data[bytes + 2] = (unsigned char)(x >> 16), data[bytes + 3] = (unsigned char)(x >> 24);
        }
        a->st.check_seconds += sm_now_s() - ts;
        CK_SYS(ckpt_pwritev_all(fd, iov, n, (off_t)at) == 0, "cannot write the checkpoint's data");
    }
    a->st.write_seconds = sm_now_s() - t;
    ckpt_test_pause(a->rank, "write");
    t = sm_now_s();
    CK_SYS(fsync(fd) == 0, "cannot fsync the checkpoint's data");
    int closed = close(fd);
    fd = -1;
    CK_SYS(closed == 0, "cannot close the checkpoint");
    a->st.sync_seconds = sm_now_s() - t;
    rc = 0;
error:
    if (fd >= 0) close(fd);
    return rc;
}

static void *worker(void *arg) {
    struct ckpt_async *a = arg;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (a->job == JOB_NONE) pthread_cond_wait(&a->cv, &a->mu);
        int job = a->job;
        if (job == JOB_QUIT) break;
        pthread_mutex_unlock(&a->mu);
        ckpt_ctx c;   // the message goes through a context of the worker's own
        ckpt_ctx_init_plain(&c, a->sv->final, "", "");
        c.rank = a->rank;
        c.world = a->world;
        double t = sm_now_s();
        int rc = 0;
        if (job == JOB_COPY) copy_chunks(a, 1);
        else rc = job == JOB_WRITE ? write_snapshot(a, &c) : ckpt_save_commit(&c, a->sv);
        if (job == JOB_COMMIT) a->st.commit_seconds = sm_now_s() - t;
        pthread_mutex_lock(&a->mu);
        a->job_rc = rc;
        if (rc != 0) snprintf(a->job_msg, sizeof a->job_msg, "%s", c.msg[0] ? c.msg : "checkpoint error");
        a->job = JOB_NONE;
        pthread_cond_broadcast(&a->cv);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

static void start_job(struct ckpt_async *a, int job) {
    pthread_mutex_lock(&a->mu);
    a->job_rc = 1;
    a->job = job;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

// The last job's result (1 still running); with wait, once it has ended.
static int job_state(struct ckpt_async *a, int wait) {
    pthread_mutex_lock(&a->mu);
    while (wait && a->job != JOB_NONE) pthread_cond_wait(&a->cv, &a->mu);
    int rc = a->job_rc;
    pthread_mutex_unlock(&a->mu);
    return rc;
}

// ---------------------------------------------------------------------------
// Where each chunk goes in the snapshot, from the plan alone: after the previous one, a page-sized or
// larger chunk on a page boundary (where the layout puts it in the file), a smaller one on 64 bytes.
static void place_chunks(const ckpt_wplan *p, uint64_t *off) {
    uint64_t end = 0;
    for (int j = 0; j < p->n_own; j++) {
        uint64_t size = (uint64_t)p->own[j].c.full * sizeof(float) + 4, align = size >= CKPT_ALIGN ? CKPT_ALIGN : 64;
        off[j] = (end + align - 1) / align * align;
        end = off[j] + size;
    }
}

static int seg_cmp(const void *x, const void *y) {
    const sm_capture_seg *a = x, *b = y;
    return a->off < b->off ? -1 : a->off > b->off;
}

void ckpt_async_capture(ckpt_async *a, int step, sm_capture **out) {
    *out = NULL;
    a->armed = 0;
    if (!a->capturable || a->phase != PHASE_IDLE) return;   // the buffer is the writer's until committed
    a->cap.done = a->cap.bad = 0;
    a->armed = 1;
    a->armed_step = step;
    *out = &a->cap;
}

int ckpt_async_create(ckpt_async **out, const sm_table *params, const sm_table *m, const sm_table *v,
                      size_t moment_lo, size_t moment_hi, uint64_t *bytes_out, char *err, size_t errlen) {
    ckpt_ctx c, *cx = &c;
    *out = NULL;
    if (ckpt_ctx_init(cx, "--ckpt-async") != 0) return ckpt_ctx_finish(cx, -1, err, errlen);
    const char *env = cx->rank == 0 ? getenv("SMALLMIND_CKPT_CHUNK_FLOATS") : NULL;
    hsize_t chunk = env && atoll(env) > 0 ? (hsize_t)atoll(env) : CKPT_CHUNK_FLOATS_DEFAULT;
    comm_bcast_bytes(&chunk, sizeof chunk, 0);
    ckpt_wplan *p = sm_calloc(1, sizeof *p);
    if (ckpt_agree(cx, ckpt_wplan_build(cx, p, params, m, v, moment_lo, moment_hi, chunk)) != 0) {
        ckpt_wplan_free(p);
        sm_free(p);
        return ckpt_ctx_finish(cx, -1, err, errlen);
    }
    struct ckpt_async *a = sm_calloc(1, sizeof *a);
    a->rank = cx->rank;
    a->world = cx->world;
    a->n_own = p->n_own;
    a->off = sm_malloc(sizeof *a->off * (size_t)(p->n_own + 1));
    a->full = sm_malloc(sizeof *a->full * (size_t)(p->n_own + 1));
    for (int j = 0; j < p->n_own; j++) {   // each chunk, and up to a page to place it congruent with the file
        a->full[j] = p->own[j].c.full;
        a->snap_bytes += (size_t)p->own[j].c.full * sizeof(float) + 4 + CKPT_ALIGN;
    }
    a->n_assembled = p->n_assembled;
    a->max_full = p->max_full;
    a->snap = sm_arena(a->snap_bytes ? a->snap_bytes : 64);   // touched once, here (not in the step that saves)
    place_chunks(p, a->off);
    // a capture needs every chunk in the caller's tables (not assembled from other ranks' slices)
    a->capturable = p->even && p->n_assembled == 0;
    a->segs = sm_malloc(sizeof *a->segs * (size_t)(p->n_own + 1));
    for (int kind = 0, at = 0; kind < 3; kind++) {
        a->cap.seg[kind] = a->segs + at;
        for (int j = 0; j < p->n_own; j++) {
            const ckpt_own *o = &p->own[j];
            if (p->g.d[o->d].kind != kind) continue;
            a->segs[at++] = (sm_capture_seg){sm_tensor_f32_offset(p->g.d[o->d].t) + (size_t)o->c.start, (size_t)o->c.n,
                                             a->snap + a->off[j]};
            a->cap.n[kind]++;
        }
        qsort(a->segs + (a->cap.seg[kind] - a->segs), (size_t)a->cap.n[kind], sizeof *a->segs, seg_cmp);
    }
    a->staging = sm_arena(sizeof(float) * (size_t)p->max_full * (size_t)(p->n_assembled + 1));
    ckpt_wplan_free(p);
    sm_free(p);
    if (bytes_out) *bytes_out = a->snap_bytes;
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    int rc = pthread_create(&a->thread, NULL, worker, a);
    if (rc != 0) {
        ckpt_fail_sys(cx, rc, "cannot start the checkpoint writer thread");
        sm_free(a->segs);
        sm_free(a->snap);
        sm_free(a->staging);
        sm_free(a->off);
        sm_free(a->full);
        sm_free(a);
        a = NULL;
    }
    *out = a;
    return ckpt_ctx_finish(cx, ckpt_agree(cx, a ? 0 : -1), err, errlen);
}

void ckpt_async_free(ckpt_async *a) {
    if (!a) return;
    job_state(a, 1);   // a write or commit in flight ends first
    pthread_mutex_lock(&a->mu);
    a->job = JOB_QUIT;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->thread, NULL);
    pthread_cond_destroy(&a->cv);
    pthread_mutex_destroy(&a->mu);
    if (a->sv) {
        ckpt_saving_free(a->sv);
        sm_free(a->sv);
    }
    sm_free(a->snap);
    sm_free(a->staging);
    sm_free(a->segs);
    sm_free(a->off);
    sm_free(a->full);
    sm_free(a);
}

int ckpt_async_pending(const ckpt_async *a) { return a && a->phase != PHASE_IDLE; }

// Ends the save in flight as failed: every rank's worker idle, the temporary removed.
static int abandon(struct ckpt_async *a, ckpt_ctx *cx) {
    job_state(a, 1);
    if (a->rank == 0) unlink(a->sv->tmp);
    ckpt_saving_free(a->sv);
    sm_free(a->sv);
    a->sv = NULL;
    a->phase = PHASE_IDLE;
    (void)cx;
    return -1;
}

int ckpt_async_poll(ckpt_async *a, int wait, int *completed, ckpt_stats *stats, char *err, size_t errlen) {
    *completed = 0;
    if (!a || a->phase == PHASE_IDLE) return 0;
    ckpt_ctx *cx = &a->cx;
    for (;;) {
        // every rank: is its worker still busy, did it fail (the commit: rank 0's alone)
        int mine = a->phase == PHASE_WRITING || a->rank == 0 ? job_state(a, wait) : 0;
        int flags[2] = {mine == 1, mine == -1}, all[2];
        MPI_CHECK(MPI_Allreduce(flags, all, 2, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
        if (all[1]) {   // the lowest failing rank's message, on every rank
            if (mine == -1) ckpt_fail_msg(cx, a->job_msg);
            ckpt_agree(cx, mine == -1 ? -1 : 0);
            return ckpt_ctx_finish(cx, abandon(a, cx), err, errlen);
        }
        if (all[0]) {
            if (!wait) return 0;
            continue;
        }
        if (a->phase == PHASE_WRITING) {   // every rank's data is on disk: rank 0 commits
            a->phase = PHASE_COMMITTING;
            if (a->rank == 0) start_job(a, JOB_COMMIT);
            if (!wait) return 0;
            continue;
        }
        // committed
        a->st.seconds = sm_now_s() - a->sv->t0;
        a->st.bytes = a->sv->file_bytes;
        a->st.reserved = a->sv->reserve;
        a->st.layout_seconds = a->sv->layout_seconds;
        a->st.io_seconds = a->st.layout_seconds + a->st.write_seconds + a->st.sync_seconds;
        if (stats) *stats = a->st;
        ckpt_saving_free(a->sv);
        sm_free(a->sv);
        a->sv = NULL;
        a->phase = PHASE_IDLE;
        *completed = 1;
        return 0;
    }
}

int ckpt_async_save(ckpt_async *a, const char *run_dir, const ckpt_meta *meta, const sm_table *params,
                    const sm_table *m, const sm_table *v, size_t moment_lo, size_t moment_hi, int keep,
                    ckpt_stats *stats, char *err, size_t errlen) {
    double t0 = sm_now_s();
    // a second save waits for the first
    int done = 0;
    if (ckpt_async_poll(a, 1, &done, NULL, err, errlen) != 0) return -1;
    char final[4096];
    ckpt_path(final, sizeof final, run_dir, meta->step);
    ckpt_ctx *cx = &a->cx;
    if (ckpt_ctx_init(cx, final) != 0) return ckpt_ctx_finish(cx, -1, err, errlen);
    a->sv = sm_malloc(sizeof *a->sv);
    memset(&a->st, 0, sizeof a->st);
    if (ckpt_save_plan(cx, a->sv, run_dir, meta, params, m, v, moment_lo, moment_hi, keep) != 0) {
        ckpt_saving_free(a->sv);
        sm_free(a->sv);
        a->sv = NULL;
        return ckpt_ctx_finish(cx, -1, err, errlen);
    }
    a->phase = PHASE_WRITING;   // from here a failure is abandon()'s to clean up
    const ckpt_wplan *p = &a->sv->plan;
    int same = p->n_own == a->n_own;
    for (int j = 0; same && j < p->n_own; j++) same = p->own[j].c.full == a->full[j];
    if (!same) ckpt_fail(cx, "checkpoint: the state's layout changed since the --ckpt-async buffer was sized");
    if (ckpt_agree(cx, same ? 0 : -1) != 0) return ckpt_ctx_finish(cx, abandon(a, cx), err, errlen);

    // a capture armed for this save that the step's AdamW pass completed: the buffer holds the chunks' data
    int captured = a->armed && a->armed_step == meta->step && a->cap.done && !a->cap.bad;
    a->armed = 0;
    // the chunks straddling ZeRO slices assembled first (collective); then every chunk copied and its values
    // checked piece by piece from the cache: on rank 0 by the worker while the main thread lays the file
    // out, then by the step's threads (the sums are the writer's, over the copy: what is written is what is
    // summed)
    a->slots = sm_malloc(sizeof *a->slots * (size_t)(p->n_assembled + 1));
    for (int j = 0; j < p->n_assembled; j++) a->slots[j] = a->staging + (size_t)j * (size_t)a->max_full;
    ckpt_exchange(p, a->slots);
    double t_sum = sm_now_s();
    atomic_store(&a->next, 0);
    atomic_store(&a->joined, 0);
    atomic_store(&a->first_bad, p->n_own);
    int local = 0;
    if (captured) {   // only the padding of edge chunks is left to write
        for (int j = 0; j < p->n_own; j++)
            memset(a->snap + a->off[j] + (size_t)p->own[j].c.n * sizeof(float), 0,
                   (size_t)(p->own[j].c.full - p->own[j].c.n) * sizeof(float));
        if (a->rank == 0) local = ckpt_save_layout(cx, a->sv);
    } else {
        if (a->rank == 0) {
            start_job(a, JOB_COPY);
            local = ckpt_save_layout(cx, a->sv);
            atomic_store(&a->joined, 1);
        }
#pragma omp parallel
        copy_chunks(a, 0);
        if (a->rank == 0) job_state(a, 1);   // the worker's last chunk copied
    }
    a->st.check_seconds = sm_now_s() - t_sum;
    int first_bad = atomic_load(&a->first_bad);
    if (first_bad < p->n_own) {
        const ckpt_own *o = &p->own[first_bad];
        const float *src = o->slot >= 0 ? a->slots[o->slot] : o->src;
        size_t bad = sm_first_bad_float(src, (size_t)o->c.n, p->g.d[o->d].kind == 2);
        cx->msg[0] = '\0';   // a bad value is the message, not the layout's consequence of it
        ckpt_value_fail(cx, &p->g.d[o->d], o->c.start + bad, src[bad], 0);
        local = -1;
    }
    sm_free(a->slots);
    a->slots = NULL;
    // every rank's copy checked and rank 0's layout done: the chunk table to every rank
    if (ckpt_save_share(cx, a->sv, local) != 0) return ckpt_ctx_finish(cx, abandon(a, cx), err, errlen);
    ckpt_test_pause(a->rank, "copy");
    const double copy_seconds = a->st.check_seconds;
    a->st.check_seconds = 0;   // from here the writer's sums (the stats ckpt_async_poll gives)
    start_job(a, JOB_WRITE);
    a->st.stall_seconds = sm_now_s() - t0;
    if (stats) {   // the step's part
        memset(stats, 0, sizeof *stats);
        stats->stall_seconds = a->st.stall_seconds;
        stats->layout_seconds = a->sv->layout_seconds;
        stats->check_seconds = copy_seconds;
        stats->bytes = a->sv->file_bytes;
        stats->reserved = a->sv->reserve;
        stats->captured = captured;
    }
    return ckpt_ctx_finish(cx, 0, err, errlen);
}
