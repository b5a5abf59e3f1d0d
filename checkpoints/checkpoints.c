// checkpoints.c — collective sharded checkpoint save with atomic commit, and load with resharding.
//
// Integrity: HDF5's Fletcher32 filter on every (chunked) dataset, not the CRC32C fallback DESIGN.md
// allows: every reader (h5py, h5dump) verifies what it reads. Metadata is checksummed as well
// (superblock v2 and v2 object headers, libver bounds V18..V110).
//
// The data does not go through HDF5 (layout.c says why: its collective filtered path wrote every chunk
// twice). A save: rank 0 lays the file out with serial HDF5 (groups, attributes, datasets, every chunk
// placed, none written) and reserves its disk space; every rank then writes its chunks with POSIX I/O —
// parameters dealt out evenly by whole chunks, the moments each rank holds (its ZeRO-1 slice: a chunk
// straddling two slices is assembled by the rank holding its start; without ZeRO the same even split) —
// each chunk stored as HDF5's filter stores it (data, zero padding, Fletcher32 sum), the sum and the
// value check computed in one pass; each rank fsyncs; rank 0 commits. Nothing is gathered but the ranks'
// 32-byte generator states.
// A load: rank 0 checks the untrusted file in a forked child (verify.c), reads the chunk table, and every
// rank reads what it needs with POSIX I/O (its share of the parameters, then all-gathered; the moments of
// its own slice: any world size loads any checkpoint), verifying every chunk's Fletcher32 sum as HDF5
// would and every value. A file chunked otherwise (another writer) is read through HDF5 (MPI-IO,
// independent), as SMALLMIND_CKPT_READ=hdf5 forces (tests compare the two).
//
// Test hook: SMALLMIND_TEST_CKPT_PAUSE=layout|copy|write|rename|latest stops rank 0 of a save (after the
// layout is written, before any data / async only: its chunks copied into the buffer, the writer not yet
// started / after its data is written, before it is synced / after the file
// is synced but before the rename / after the rename but before `latest` is rewritten) and waits there
// forever, so a test can kill -9 it; SMALLMIND_TEST_CKPT_PAUSE_FILE=F then receives the paused pid.
// SMALLMIND_CKPT_CHUNK_FLOATS overrides the chunk size (tests use small chunks).
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <unistd.h>

#include "ckpt_internal.h"

// ---------------------------------------------------------------------------
// Checks shared by save and load (local; the caller agrees)
static int check_tables(ckpt_ctx *cx, const sm_table *params, const sm_table *m, const sm_table *v) {
    CK(params && params->count > 0 && params->count <= SM_MAX_TENSORS && params->base,
       "checkpoint: the parameter table is empty or not bound to an arena");
    for (int i = 0; i < params->count; i++) {
        const sm_tensor *t = &params->t[i];
        CK(t->name && t->name[0] && !strchr(t->name, '/') && strcmp(t->name, ".") != 0,
           "checkpoint: tensor %d has an invalid name", i);
        CK(strlen(t->name) < 48, "checkpoint: tensor name '%s' is too long", t->name);
        CK(t->ndim >= 1 && t->ndim <= SM_MAX_DIMS, "checkpoint: tensor '%s' has %d dims", t->name, t->ndim);
        CK(t->dtype == SM_F32, "checkpoint: tensor '%s' is %s; checkpoints hold float32", t->name,
           SM_DTYPE_INFO[t->dtype].name);
        for (int j = 0; j < i; j++) CK(strcmp(params->t[j].name, t->name) != 0, "checkpoint: two tensors named '%s'", t->name);
    }
    CK((m == NULL) == (v == NULL), "checkpoint: pass both moment tables or neither");
    for (int k = 0; m && k < 2; k++) {
        const sm_table *o = k ? v : m;
        const char *which = k ? "v" : "m";
        CK(o->count == params->count && o->n_bytes == params->n_bytes && o->base,
           "checkpoint: the %s table does not have the parameters' layout", which);
        for (int i = 0; i < params->count; i++) {
            const sm_tensor *a = &params->t[i], *b = &o->t[i];
            int same = strcmp(a->name, b->name) == 0 && a->ndim == b->ndim && a->offset == b->offset;
            for (int d = 0; same && d < a->ndim; d++) same = a->shape[d] == b->shape[d];
            CK(same, "checkpoint: the %s table differs from the parameters at tensor '%s'", which, a->name);
        }
    }
    return 0;
error:
    return -1;
}

static void tensor_shape(ckpt_shape *s, const sm_tensor *t, hsize_t chunk_floats) {
    hsize_t dims[SM_MAX_DIMS];
    for (int d = 0; d < t->ndim; d++) dims[d] = (hsize_t)t->shape[d];
    ckpt_shape_init(s, t->ndim, dims, chunk_floats);
}

// The part of tensor t (as a flat range of the tensor) inside the arena range [lo, hi).
static void tensor_part(const sm_tensor *t, size_t lo, size_t hi, hsize_t *a, hsize_t *b) {
    size_t off = sm_tensor_f32_offset(t);
    size_t s = off > lo ? off : lo;
    size_t e = off + t->n_elems < hi ? off + t->n_elems : hi;
    if (s >= e) {
        *a = *b = 0;
        return;
    }
    *a = (hsize_t)(s - off);
    *b = (hsize_t)(e - off);
}

// ---------------------------------------------------------------------------
// Save
void ckpt_test_pause(int rank, const char *stage) {
    const char *want = getenv("SMALLMIND_TEST_CKPT_PAUSE");
    if (rank != 0 || !want || strcmp(want, stage) != 0) return;
    const char *pid_file = getenv("SMALLMIND_TEST_CKPT_PAUSE_FILE");
    if (pid_file) {
        char tmp[4200];
        snprintf(tmp, sizeof tmp, "%s.tmp", pid_file);
        FILE *f = fopen(tmp, "w");
        if (f) {
            fprintf(f, "%d\n", (int)getpid());
            if (fclose(f) == 0) rename(tmp, pid_file);
        }
    }
    fprintf(stderr, "smallmind: test hook: checkpoint save paused at '%s' (pid %d)\n", stage, (int)getpid());
    fflush(stderr);
    for (;;) pause();
}

// An upper bound of the file's size: whole chunks (edge chunks are stored whole), a 4-byte
// checksum each, the chunk indexes (v1 B-trees: well under 128 bytes a chunk), each chunk's
// alignment gap, and per-dataset and per-file metadata.
static uint64_t size_bound(const sm_table *params, hsize_t chunk_floats, int world) {
    uint64_t bytes = (256u << 10) + 64u * (uint64_t)world, n_chunks = 1;
    for (int i = 0; i < params->count; i++) {
        ckpt_shape s;
        tensor_shape(&s, &params->t[i], chunk_floats);
        uint64_t chunks = 1, chunk_bytes = sizeof(float);
        for (int d = 0; d < s.ndim; d++) {
            chunks *= (s.dims[d] + s.chunk[d] - 1) / s.chunk[d];
            chunk_bytes *= s.chunk[d];
        }
        n_chunks += 3 * chunks;
        uint64_t gap = chunk_bytes + 4 >= CKPT_ALIGN ? CKPT_ALIGN : 0;   // chunks of a page start on one
        bytes += 3 * (chunks * (chunk_bytes + gap) + (16u << 10));
    }
    return bytes + n_chunks * (4 + 128);   // the sum, the index entry
}

// Rank 0, before the layout: the free space of RUN_DIR against the file's upper bound.
static int check_free(ckpt_ctx *cx, const char *run_dir, uint64_t bytes) {
    struct statvfs vfs;
    CK_SYS(statvfs(run_dir, &vfs) == 0, "cannot read the free space of %s", run_dir);
    uint64_t avail = (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize;
    CK(avail >= bytes, "not enough disk space for the checkpoint: %.1f MB free, it needs up to %.1f MB",
       (double)avail / 1e6, (double)bytes / 1e6);
    return 0;
error:
    return -1;
}

// Rank 0, after the layout: the whole file's disk blocks allocated (its holes, where the ranks write the
// chunks, included), so a full disk fails here, before any data, not inside the ranks' writes. A
// filesystem without fallocate relies on check_free.
static int reserve_file(ckpt_ctx *cx, const char *tmp, uint64_t bytes) {
    int fd = open(tmp, O_RDWR | O_CLOEXEC);
    CK_SYS(fd >= 0, "cannot open the new checkpoint to reserve disk space");
    int rc = fallocate(fd, 0, 0, (off_t)bytes), e = errno;
    close(fd);
    if (rc != 0 && (e == EOPNOTSUPP || e == ENOSYS)) return 0;
    errno = e;
    CK_SYS(rc == 0, "cannot reserve %.1f MB of disk for the checkpoint", (double)bytes / 1e6);
    return 0;
error:
    return -1;
}

// Every rank: a file-size limit (ulimit -f) below the file would fail the writes midway.
static int check_fsize_limit(ckpt_ctx *cx, uint64_t bytes) {
    struct rlimit lim;
    CK_SYS(getrlimit(RLIMIT_FSIZE, &lim) == 0, "cannot read the file size limit");
    CK(lim.rlim_cur == RLIM_INFINITY || (uint64_t)lim.rlim_cur >= bytes,
       "the file size limit (ulimit -f) of rank %d is %llu bytes, the checkpoint needs up to %llu", cx->rank,
       (unsigned long long)lim.rlim_cur, (unsigned long long)bytes);
    return 0;
error:
    return -1;
}

// Floats per chunk: the default, or rank 0's SMALLMIND_CKPT_CHUNK_FLOATS (tests). Collective.
static hsize_t chunk_floats(ckpt_ctx *cx) {
    hsize_t n = CKPT_CHUNK_FLOATS_DEFAULT;
    const char *env = cx->rank == 0 ? getenv("SMALLMIND_CKPT_CHUNK_FLOATS") : NULL;
    if (env && atoll(env) > 0) n = (hsize_t)atoll(env);
    comm_bcast_bytes(&n, sizeof n, 0);
    return n;
}

int ckpt_check_space(const char *run_dir, const sm_table *params, uint64_t *bytes_out, char *err, size_t errlen) {
    ckpt_ctx c, *cx = &c;
    if (ckpt_ctx_init(cx, run_dir) != 0) return ckpt_ctx_finish(cx, -1, err, errlen);
    hsize_t chunk = chunk_floats(cx);
    uint64_t bytes = params && params->count > 0 ? size_bound(params, chunk, cx->world) : 0;
    int local = check_fsize_limit(cx, bytes);
    if (local == 0 && cx->rank == 0) {
        struct statvfs vfs;
        if (statvfs(run_dir, &vfs) != 0) {
            ckpt_fail_sys(cx, errno, "cannot read the free space of the run directory");
            local = -1;
        } else if ((uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize < bytes) {
            ckpt_fail(cx, "not enough disk space for a checkpoint: %.1f MB free, one needs up to %.1f MB",
                      (double)vfs.f_bavail * (double)vfs.f_frsize / 1e6, (double)bytes / 1e6);
            local = -1;
        }
    }
    if (bytes_out) *bytes_out = bytes;
    return ckpt_ctx_finish(cx, ckpt_agree(cx, local), err, errlen);
}

int ckpt_sync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc != 0 && e == EINVAL) rc = 0;   // some filesystems cannot sync directories
    errno = e;
    return rc;
}

int ckpt_save_plan(ckpt_ctx *cx, ckpt_saving *sv, const char *run_dir, const ckpt_meta *meta_in,
                    const sm_table *params, const sm_table *m, const sm_table *v, size_t moment_lo, size_t moment_hi,
                    int keep) {
    memset(sv, 0, sizeof *sv);
    sv->t0 = sm_now_s();
    sv->run_dir = run_dir;
    sv->keep = keep;
    ckpt_path(sv->final, sizeof sv->final, run_dir, meta_in->step);
    snprintf(sv->tmp, sizeof sv->tmp, "%s.tmp", sv->final);

    // 1. arguments, the same metadata everywhere (rank 0's), and where every rank writes
    int local = check_tables(cx, params, m, v);
    if (local == 0 && (!m || !v)) {
        ckpt_fail(cx, "checkpoint: a save needs the moment tables");
        local = -1;
    }
    if (local == 0 && moment_lo > moment_hi) {
        ckpt_fail(cx, "checkpoint: moment range [%zu, %zu) is reversed", moment_lo, moment_hi);
        local = -1;
    }
    if (local == 0 && (meta_in->step < 0 || keep < 0)) {
        ckpt_fail(cx, "checkpoint: step %d or keep %d is negative", meta_in->step, keep);
        local = -1;
    }
    int parent_step = -1;
    if (local == 0 && meta_in->parent[0] &&
        (ckpt_name_parse(meta_in->parent, &parent_step) != CKPT_NAME_CKPT || parent_step >= meta_in->step)) {
        ckpt_fail(cx, "checkpoint: parent '%s' is not the file name of an older checkpoint", meta_in->parent);
        local = -1;
    }
    if (ckpt_agree(cx, local) != 0) return -1;
    int steps[2] = {meta_in->step, -meta_in->step}, ext[2];
    MPI_CHECK(MPI_Allreduce(steps, ext, 2, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
    if (ext[0] != -ext[1]) {
        ckpt_fail(cx, "checkpoint: the ranks disagree on the step to save (%d to %d)", -ext[1], ext[0]);
        return -1;
    }
    ckpt_meta *meta = &sv->meta;
    *meta = *meta_in;
    comm_bcast_bytes(meta, sizeof *meta, 0);
    meta->rng = meta_in->rng;   // the one per-rank field
    // what the file says of itself
    snprintf(meta->format, sizeof meta->format, "%s", CKPT_FORMAT_NAME);
    meta->format_version = CKPT_FORMAT_VERSION;
    meta->world_size = cx->world;
    meta->optim.schedule_position = meta->step;
    hsize_t chunk = chunk_floats(cx);
    if (ckpt_agree(cx, ckpt_wplan_build(cx, &sv->plan, params, m, v, moment_lo, moment_hi, chunk)) != 0) return -1;
    sv->reserve = size_bound(params, chunk, cx->world);

    // 2. room for it: rank 0 the run directory and its free space, every rank its file-size limit
    local = 0;
    if (cx->rank == 0) {
        struct stat st;
        if (stat(run_dir, &st) != 0) {
            ckpt_fail_sys(cx, errno, "cannot save a checkpoint: run directory %s", run_dir);
            local = -1;
        } else if (!S_ISDIR(st.st_mode)) {
            ckpt_fail(cx, "cannot save a checkpoint: %s is not a directory", run_dir);
            local = -1;
        } else {
            local = check_free(cx, run_dir, sv->reserve);
        }
    }
    if (local == 0) local = check_fsize_limit(cx, sv->reserve);
    if (ckpt_agree(cx, local) != 0) return -1;

    // 3. the ranks' generator states to rank 0 (32 bytes each), for its layout
    sv->rng_rows = cx->rank == 0 ? sm_malloc(4 * sizeof(uint64_t) * (size_t)cx->world) : NULL;
    MPI_CHECK(MPI_Gather(meta->rng.s, 4, MPI_UINT64_T, sv->rng_rows, 4, MPI_UINT64_T, 0, MPI_COMM_WORLD));
    sv->locs = sm_malloc(sizeof *sv->locs * (size_t)(sv->plan.g.n_chunks ? sv->plan.g.n_chunks : 1));
    return 0;
}

int ckpt_save_layout(ckpt_ctx *cx, ckpt_saving *sv) {
    double t = sm_now_s();
    int rc = ckpt_layout_write(cx, sv->tmp, &sv->meta, sv->rng_rows, cx->world, &sv->plan.g, sv->locs, &sv->file_bytes);
    if (rc == 0) rc = reserve_file(cx, sv->tmp, sv->file_bytes);
    if (rc != 0) unlink(sv->tmp);
    sv->layout_seconds = sm_now_s() - t;
    return rc;
}

int ckpt_save_share(ckpt_ctx *cx, ckpt_saving *sv, int local) {
    if (ckpt_agree(cx, local) != 0) return -1;
    ckpt_test_pause(cx->rank, "layout");
    comm_bcast_bytes(sv->locs, sizeof *sv->locs * (size_t)sv->plan.g.n_chunks, 0);
    comm_bcast_bytes(&sv->file_bytes, sizeof sv->file_bytes, 0);
    return 0;
}

int ckpt_save_begin(ckpt_ctx *cx, ckpt_saving *sv, const char *run_dir, const ckpt_meta *meta_in,
                    const sm_table *params, const sm_table *m, const sm_table *v, size_t moment_lo, size_t moment_hi,
                    int keep) {
    if (ckpt_save_plan(cx, sv, run_dir, meta_in, params, m, v, moment_lo, moment_hi, keep) != 0) return -1;
    return ckpt_save_share(cx, sv, cx->rank == 0 ? ckpt_save_layout(cx, sv) : 0);
}

void ckpt_saving_free(ckpt_saving *sv) {
    ckpt_wplan_free(&sv->plan);
    sm_free(sv->rng_rows);
    sv->rng_rows = NULL;
    sm_free(sv->locs);
    sv->locs = NULL;
}

int ckpt_save_commit(ckpt_ctx *cx, const ckpt_saving *sv) {
    int fd = -1, renamed = 0;
    const char *tmp = sv->tmp, *final = sv->final, *run_dir = sv->run_dir;
    const char *name = strrchr(final, '/') ? strrchr(final, '/') + 1 : final;
    // the ranks synced their data; this syncs rank 0's layout (and, on one node, is all there is left)
    CK_SYS((fd = open(tmp, O_RDWR | O_CLOEXEC)) >= 0, "cannot open the written checkpoint to sync it");
    CK_SYS(fsync(fd) == 0, "cannot fsync the checkpoint");
    int closed = close(fd);
    fd = -1;
    CK_SYS(closed == 0, "cannot close the checkpoint");
    ckpt_test_pause(cx->rank, "rename");
    CK_SYS(rename(tmp, final) == 0, "cannot rename %s.tmp into place", name);
    renamed = 1;
    CK_SYS(ckpt_sync_dir(run_dir) == 0, "checkpoint renamed into place, but cannot fsync its directory %s", run_dir);
    ckpt_test_pause(cx->rank, "latest");
    char latest[4200], line[CKPT_NAME_MAX + 2], why[CKPT_ERR_MAX];
    snprintf(latest, sizeof latest, "%s/latest", run_dir);
    int len = snprintf(line, sizeof line, "%s\n", name);
    CK(sm_write_file_atomic(latest, line, (size_t)len, why, sizeof why) == 0,
       "checkpoint committed, but `latest` could not be rewritten: %s", why);
    ckpt_prune(run_dir, sv->meta.step, sv->keep);
    return 0;
error:
    if (fd >= 0) close(fd);
    if (!renamed) unlink(tmp);
    return -1;
}

// Every rank: its chunks into the laid-out file, then fsync (on a parallel filesystem one client's fsync
// does not cover the others' writes). The ZeRO exchange first (collective). 0 or -1, local.
static int write_data(ckpt_ctx *cx, ckpt_saving *sv, ckpt_stats *st) {
    const ckpt_wplan *p = &sv->plan;
    float *staging = sm_malloc(sizeof(float) * (size_t)p->max_full * (size_t)(p->n_assembled + 1));
    float **slots = sm_malloc(sizeof *slots * (size_t)(p->n_assembled + 1));
    for (int j = 0; j < p->n_assembled; j++) slots[j] = staging + (size_t)j * (size_t)p->max_full;
    ckpt_exchange(p, slots);
    int fd = -1, rc = -1;
    double t = sm_now_s();
    CK_SYS((fd = open(sv->tmp, O_WRONLY | O_CLOEXEC)) >= 0, "cannot open the new checkpoint to write it");
    if (ckpt_write_owned(cx, fd, p, sv->locs, slots, &st->check_seconds) != 0) goto error;
    st->write_seconds = sm_now_s() - t;
    ckpt_test_pause(cx->rank, "write");
    t = sm_now_s();
    CK_SYS(fsync(fd) == 0, "cannot fsync the checkpoint's data");
    int closed = close(fd);
    fd = -1;
    CK_SYS(closed == 0, "cannot close the checkpoint");
    st->sync_seconds = sm_now_s() - t;
    rc = 0;
error:
    if (fd >= 0) close(fd);
    sm_free(slots);
    sm_free(staging);
    return rc;
}

int ckpt_save(const char *run_dir, const ckpt_meta *meta_in, const sm_table *params, const sm_table *m,
              const sm_table *v, size_t moment_lo, size_t moment_hi, int keep, ckpt_stats *stats, char *err,
              size_t errlen) {
    char final[4096];
    ckpt_path(final, sizeof final, run_dir, meta_in->step);
    ckpt_ctx c, *cx = &c;
    if (ckpt_ctx_init(cx, final) != 0) return ckpt_ctx_finish(cx, -1, err, errlen);
    ckpt_saving *sv = sm_malloc(sizeof *sv);
    ckpt_stats st = {0};
    int rc = ckpt_save_begin(cx, sv, run_dir, meta_in, params, m, v, moment_lo, moment_hi, keep);
    if (rc == 0) {
        double t_io = sm_now_s();
        rc = ckpt_agree(cx, write_data(cx, sv, &st));
        st.io_seconds = sm_now_s() - t_io + sv->layout_seconds;
        if (rc == 0) {
            double t = sm_now_s();
            rc = ckpt_agree(cx, cx->rank == 0 ? ckpt_save_commit(cx, sv) : 0);
            st.commit_seconds = sm_now_s() - t;
        } else if (cx->rank == 0) {
            unlink(sv->tmp);   // every rank has closed it (write_data agreed after its cleanup)
        }
    }
    if (rc == 0 && stats) {
        st.bytes = sv->file_bytes;
        st.reserved = sv->reserve;
        st.layout_seconds = sv->layout_seconds;
        st.seconds = sm_now_s() - sv->t0;
        *stats = st;
    }
    ckpt_saving_free(sv);
    sm_free(sv);
    return ckpt_ctx_finish(cx, rc, err, errlen);
}

// ---------------------------------------------------------------------------
// Load
// Reads the flat range [a, b) of dataset gname/name into ptr (the tensor's start: only the
// range is written), after checking type and shape. Independent reads: every chunk read is
// checksum-verified, a failure stays local (the caller agrees).
static int read_tensor(ckpt_ctx *cx, hid_t group, const char *gname, const sm_tensor *t, float *ptr, hsize_t a,
                       hsize_t b, hid_t dxpl) {
    hid_t ids[4] = {H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID};   // dset fspace mspace type
    int rc = -1;
    htri_t ex;
    CK_H5(ex = H5Lexists(group, t->name, H5P_DEFAULT), "cannot look up %s/%s", gname, t->name);
    CK(ex > 0, "incompatible checkpoint: no tensor %s/%s, which this model has", gname, t->name);
    CK_H5(ids[0] = H5Dopen2(group, t->name, H5P_DEFAULT), "cannot open %s/%s", gname, t->name);
    CK_H5(ids[3] = H5Dget_type(ids[0]), "cannot read %s/%s", gname, t->name);
    CK(H5Tget_class(ids[3]) == H5T_FLOAT && H5Tget_size(ids[3]) == 4, "%s/%s is not float32", gname, t->name);
    CK_H5(ids[1] = H5Dget_space(ids[0]), "cannot read %s/%s", gname, t->name);
    hsize_t dims[H5S_MAX_RANK];
    int ndim = H5Sget_simple_extent_ndims(ids[1]);
    CK_H5(ndim, "cannot read the shape of %s/%s", gname, t->name);
    int same = ndim == t->ndim && H5Sget_simple_extent_dims(ids[1], dims, NULL) == ndim;
    for (int d = 0; same && d < ndim; d++) same = dims[d] == (hsize_t)t->shape[d];
    if (!same) {
        char have[128] = "?", want[128];
        hsize_t tw[SM_MAX_DIMS];
        for (int d = 0; d < t->ndim; d++) tw[d] = (hsize_t)t->shape[d];
        if (ndim > 0 && ndim <= H5S_MAX_RANK && H5Sget_simple_extent_dims(ids[1], dims, NULL) == ndim)
            ckpt_shape_str(have, sizeof have, ndim, dims);
        ckpt_shape_str(want, sizeof want, t->ndim, tw);
        ckpt_fail(cx, "incompatible checkpoint: %s/%s has shape %s, this model expects %s", gname, t->name, have, want);
        goto error;
    }
    if (a >= b) {
        rc = 0;
        goto error;
    }
    ckpt_shape s;
    tensor_shape(&s, t, 1);
    CK_H5(ids[2] = H5Screate_simple(s.ndim, s.dims, NULL), "cannot read %s/%s", gname, t->name);
    CK_H5(ckpt_select_flat(ids[1], &s, a, b), "cannot select part of %s/%s", gname, t->name);
    CK_H5(ckpt_select_flat(ids[2], &s, a, b), "cannot select part of %s/%s", gname, t->name);
    CK_H5(H5Dread(ids[0], H5T_NATIVE_FLOAT, ids[2], ids[1], dxpl, ptr), "checkpoint is corrupt: cannot read %s/%s",
          gname, t->name);
    // every value finite, every second moment >= 0: checked while the range is still in cache
    size_t bad_at = sm_first_bad_float(ptr + a, (size_t)(b - a), strcmp(gname, "/optim/v") == 0);
    if (bad_at < (size_t)(b - a)) {
        char what[64];
        ckpt_bad_value_str(what, sizeof what, ptr[a + bad_at]);
        ckpt_fail(cx, "checkpoint holds a value that is %s: %s/%s element %llu; refusing to load it", what, gname,
                  t->name, (unsigned long long)(a + bad_at));
        goto error;
    }
    rc = 0;
error:
    ckpt_close_all(ids, 4);
    return rc;
}

static int read_rng(ckpt_ctx *cx, hid_t file, ckpt_meta *meta, hid_t dxpl) {
    hid_t ids[3] = {H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID};   // dset fspace mspace
    hsize_t dims[2] = {0, 0}, row[2] = {1, 4};
    int rc = -1;
    meta->rng_restored = 0;
    CK_H5(ids[0] = H5Dopen2(file, "/state/rng", H5P_DEFAULT), "cannot open /state/rng");
    CK_H5(ids[1] = H5Dget_space(ids[0]), "cannot read /state/rng");
    CK(H5Sget_simple_extent_ndims(ids[1]) == 2 && H5Sget_simple_extent_dims(ids[1], dims, NULL) == 2 && dims[1] == 4,
       "/state/rng is not a [world_size, 4] table");
    if ((hsize_t)cx->rank >= dims[0]) {
        rc = 0;
        goto error;
    }
    hsize_t start[2] = {(hsize_t)cx->rank, 0};
    CK_H5(H5Sselect_hyperslab(ids[1], H5S_SELECT_SET, start, NULL, row, NULL), "cannot read /state/rng");
    CK_H5(ids[2] = H5Screate_simple(2, row, NULL), "cannot read /state/rng");
    CK_H5(H5Dread(ids[0], H5T_NATIVE_UINT64, ids[2], ids[1], dxpl, meta->rng.s), "checkpoint is corrupt: cannot read /state/rng");
    meta->rng_restored = 1;
    rc = 0;
error:
    ckpt_close_all(ids, 3);
    return rc;
}

// The reference reader (and the one for files chunked otherwise): HDF5 over MPI-IO, independent reads,
// every chunk through HDF5's Fletcher32 filter. Collective; the same result everywhere.
static int load_hdf5(ckpt_ctx *cx, const char *path, ckpt_meta *meta, sm_table *params, sm_table *m, sm_table *v,
                     size_t moment_lo, size_t moment_hi) {
    hid_t fapl = H5I_INVALID_HID, dxpl = H5I_INVALID_HID, file = H5I_INVALID_HID;
    hid_t groups[3] = {H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID};
    const char *gnames[3] = {"/model", "/optim/m", "/optim/v"};
    int rc = -1, local = -1;
    CK_H5(fapl = ckpt_fapl_mpio(0), "cannot set up MPI-IO for the checkpoint");
    CK_H5(dxpl = H5Pcreate(H5P_DATASET_XFER), "cannot read the checkpoint");
    CK_H5(H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_INDEPENDENT), "cannot read the checkpoint");
    local = 0;
error:
    if (ckpt_agree(cx, local) != 0) goto done;
    local = 0;
    file = H5Fopen(path, H5F_ACC_RDONLY, fapl);   // collective
    if (file < 0) {
        ckpt_fail_h5(cx, "cannot open the checkpoint");
        local = -1;
    }
    if (ckpt_agree(cx, local) != 0) goto done;
    local = 0;
    for (int k = 0; k < (m ? 3 : 1) && local == 0; k++) {
        groups[k] = H5Gopen2(file, gnames[k], H5P_DEFAULT);
        if (groups[k] < 0) {
            ckpt_fail_h5(cx, "not a complete smallmind checkpoint: cannot open %s", gnames[k]);
            local = -1;
        }
    }
    for (int k = 0; k < (m ? 3 : 1) && local == 0; k++) {
        sm_table *tab = k == 0 ? params : k == 1 ? m : v;
        for (int i = 0; i < tab->count && local == 0; i++) {
            sm_tensor *t = &tab->t[i];
            hsize_t a = 0, b = (hsize_t)t->n_elems;
            if (k > 0) tensor_part(t, moment_lo, moment_hi, &a, &b);
            local = read_tensor(cx, groups[k], gnames[k], t, t->ptr, a, b, dxpl);
        }
    }
    if (local == 0) local = read_rng(cx, file, meta, dxpl);
    if (ckpt_agree(cx, local) != 0) goto done;
    ckpt_close_all(groups, 3);
    rc = ckpt_close_agree(cx, &file, 0);
done:
    ckpt_close_all(groups, 3);
    hid_t rest[3] = {file, dxpl, fapl};
    ckpt_close_all(rest, 3);
    return rc;
}

// This rank's piece of the parameter arena, [*lo, *hi) in floats: an even split, the same on every rank.
static void param_piece(size_t n, int rank, int world, size_t *lo, size_t *hi) {
    *lo = n / (size_t)world * (size_t)rank + (n % (size_t)world < (size_t)rank ? n % (size_t)world : (size_t)rank);
    *hi = *lo + n / (size_t)world + ((size_t)rank < n % (size_t)world);
}

// Every rank: its piece of the parameter arena (all of it at one rank) and the chunks holding its
// moments, read with POSIX I/O and verified; local (the caller agrees).
static int read_data(ckpt_ctx *cx, const char *path, const ckpt_geom *g, const ckpt_chunk_loc *locs, int with_moments,
                     size_t moment_lo, size_t moment_hi, size_t param_lo, size_t param_hi, uint64_t *direct_bytes) {
    hsize_t *ranges = sm_calloc(2 * (size_t)g->n_dsets, sizeof(hsize_t));
    int fd = -1, fd_direct = -1, rc = -1;
    for (int i = 0; i < g->n_dsets; i++) {
        const ckpt_dset *d = &g->d[i];
        if (d->kind == 0) tensor_part(d->t, param_lo, param_hi, &ranges[2 * i], &ranges[2 * i + 1]);
        else if (with_moments) tensor_part(d->t, moment_lo, moment_hi, &ranges[2 * i], &ranges[2 * i + 1]);
    }
    CK_SYS((fd = open(path, O_RDONLY | O_CLOEXEC)) >= 0, "cannot open the checkpoint");
    // a cold file's bytes skip the page cache (where the file system refuses O_DIRECT: through it, as warm)
    fd_direct = open(path, O_RDONLY | O_CLOEXEC | O_DIRECT);
    const char *force = getenv("SMALLMIND_CKPT_READ");   // tests: "direct" reads every part O_DIRECT
    rc = ckpt_read_ranges(cx, fd, fd_direct, force && !strcmp(force, "direct"), g, locs, ranges, direct_bytes);
error:
    if (fd_direct >= 0) close(fd_direct);
    if (fd >= 0) close(fd);
    sm_free(ranges);
    return rc;
}

// Every rank's piece of the parameter arena, to every rank (in place): one allgather (the per-tensor calls
// before cost 148 collectives for GPT-2); an arena past MPI's int counts goes piece by piece from each rank.
static void allgather_params(ckpt_ctx *cx, float *arena, size_t n) {
    if (n <= (size_t)INT_MAX) {
        int *counts = sm_malloc(2 * sizeof(int) * (size_t)cx->world), *displs = counts + cx->world;
        for (int r = 0; r < cx->world; r++) {
            size_t lo, hi;
            param_piece(n, r, cx->world, &lo, &hi);
            displs[r] = (int)lo;
            counts[r] = (int)(hi - lo);
        }
        MPI_CHECK(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, arena, counts, displs, MPI_FLOAT, MPI_COMM_WORLD));
        sm_free(counts);
        return;
    }
    const size_t piece = (size_t)1 << 30;
    for (int r = 0; r < cx->world; r++) {
        size_t lo, hi;
        param_piece(n, r, cx->world, &lo, &hi);
        for (size_t at = lo; at < hi; at += piece)
            MPI_CHECK(MPI_Bcast(arena + at, (int)(hi - at < piece ? hi - at : piece), MPI_FLOAT, r, MPI_COMM_WORLD));
    }
}

int ckpt_load(const char *path, const sm_model_config *expect, ckpt_meta *meta_out, sm_table *params, sm_table *m,
              sm_table *v, size_t moment_lo, size_t moment_hi, ckpt_stats *stats, char *err, size_t errlen) {
    double t0 = sm_now_s();
    ckpt_ctx c, *cx = &c;
    if (ckpt_ctx_init(cx, path) != 0) return ckpt_ctx_finish(cx, -1, err, errlen);
    int local = check_tables(cx, params, m, v);
    if (local == 0 && moment_lo > moment_hi) {
        ckpt_fail(cx, "checkpoint: moment range [%zu, %zu) is reversed", moment_lo, moment_hi);
        local = -1;
    }
    if (ckpt_agree(cx, local) != 0) return ckpt_ctx_finish(cx, -1, err, errlen);
    if (moment_hi > sm_table_n_f32(params)) moment_hi = sm_table_n_f32(params);
    if (moment_lo > moment_hi) moment_lo = moment_hi;

    // 1. the file is ours, of a version we read, fits this model, and holds exactly its tensors, each
    // fully written with its checksums (rank 0 checks, in a child process: nothing is read yet)
    ckpt_meta meta;
    memset(&meta, 0, sizeof meta);
    uint64_t file_bytes = 0;
    ckpt_report *rep = sm_calloc(1, sizeof *rep);
    ckpt_check_result res = {.rep = rep};
    if (cx->rank == 0) ckpt_check_local(path, params, NULL, 0, 0, 0, &res);
    comm_bcast_bytes(&res.stage, sizeof res.stage, 0);
    comm_bcast_bytes(res.msg, sizeof res.msg, 0);
    comm_bcast_bytes(&rep->meta, sizeof rep->meta, 0);
    meta = rep->meta;
    file_bytes = rep->file_bytes;
    comm_bcast_bytes(&file_bytes, sizeof file_bytes, 0);
    sm_free(rep);
    // the header's failure first, then a config that differs, then the datasets'
    if (res.stage == 1) ckpt_fail_msg(cx, res.msg);
    else if (expect && ckpt_config_check(&meta.cfg, expect, path, cx->msg, sizeof cx->msg) != 0) (void)0;
    else if (res.stage == 2) ckpt_fail_msg(cx, res.msg);
    if (cx->msg[0]) return ckpt_ctx_finish(cx, -1, err, errlen);

    // 2. rank 0 reads the chunk table (the calls the check just made) and the generator states
    double t_io = sm_now_s();
    ckpt_geom *g = sm_malloc(sizeof *g);
    ckpt_geom_init(g, params, m, v, CKPT_CHUNK_FLOATS_DEFAULT);
    ckpt_chunk_loc *locs = NULL;
    uint64_t *rows = sm_malloc(4 * sizeof(uint64_t) * (size_t)meta.world_size);
    int contiguous = 0, rc = -1;
    uint64_t direct_bytes = 0;
    local = 0;
    if (cx->rank == 0) {
        local = ckpt_layout_read(cx, path, g, &locs, file_bytes, rows, meta.world_size, &contiguous);
        const char *force = getenv("SMALLMIND_CKPT_READ");
        if (force && !strcmp(force, "hdf5")) contiguous = 0;
    }
    if (ckpt_agree(cx, local) != 0) goto done;
    comm_bcast_bytes(&contiguous, sizeof contiguous, 0);
    if (!contiguous) {   // another writer's chunking: through HDF5
        rc = load_hdf5(cx, path, &meta, params, m, v, moment_lo, moment_hi);
        goto done;
    }
    comm_bcast_bytes(rows, 4 * sizeof(uint64_t) * (size_t)meta.world_size, 0);
    for (int i = 0; i < g->n_dsets; i++) comm_bcast_bytes(g->d[i].s.chunk, sizeof g->d[i].s.chunk, 0);
    g->n_chunks = 0;
    for (int i = 0; i < g->n_dsets; i++) {   // the file's chunks, numbered on every rank
        g->d[i].first = g->n_chunks;
        g->d[i].n_chunks = ckpt_n_chunks(&g->d[i].s);
        g->n_chunks += g->d[i].n_chunks;
    }
    if (cx->rank != 0) locs = sm_malloc(sizeof *locs * (size_t)(g->n_chunks ? g->n_chunks : 1));
    comm_bcast_bytes(locs, sizeof *locs * (size_t)g->n_chunks, 0);

    // 3. every rank reads its part, verified; the parameters' shares then go to every rank
    size_t param_lo, param_hi, n_params = sm_table_n_f32(params);
    param_piece(n_params, cx->rank, cx->world, &param_lo, &param_hi);
    if (ckpt_agree(cx, read_data(cx, path, g, locs, m != NULL, moment_lo, moment_hi, param_lo, param_hi, &direct_bytes)) != 0) goto done;
    if (cx->world > 1) allgather_params(cx, sm_table_f32(params), n_params);
    meta.rng_restored = cx->rank < meta.world_size;
    if (meta.rng_restored) memcpy(meta.rng.s, rows + 4 * (size_t)cx->rank, sizeof meta.rng.s);
    rc = 0;
done:
    sm_free(locs);
    sm_free(rows);
    sm_free(g);
    if (rc == 0) {
        *meta_out = meta;
        if (stats) {
            memset(stats, 0, sizeof *stats);
            stats->bytes = file_bytes;
            stats->io_seconds = sm_now_s() - t_io;
            stats->direct_bytes = direct_bytes;
            stats->seconds = sm_now_s() - t0;
        }
    }
    return ckpt_ctx_finish(cx, rc, err, errlen);
}
