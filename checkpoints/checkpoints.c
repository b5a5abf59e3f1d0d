// checkpoints.c — collective sharded checkpoint save with atomic commit, and load with resharding.
//
// Integrity: HDF5's Fletcher32 filter on every (chunked) dataset, not the CRC32C fallback
// DESIGN.md allows. Checked on this machine (Debian 12, HDF5 1.10.8 openmpi): collective
// parallel writes of Fletcher32-filtered chunked datasets are correct at 1, 2 and 4 ranks, also
// when ranks share chunks (ZeRO slices are not chunk-aligned) and when some ranks select nothing;
// HDF5, h5py and h5dump all refuse a flipped byte ("data error detected by Fletcher32
// checksum"). One trap, avoided below: a memory dataspace of another shape than the file
// selection (e.g. 1-D against a 3-D hyperslab) drops HDF5 onto a per-element path, 5-10x slower
// (30-120 MB/s); using the tensor's own shape with the same selection on its arena pointer keeps
// the fast path (250-700 MB/s) and needs no packing. Metadata is checksummed as well (superblock
// v2 and v2 object headers, libver bounds V18..V110).
//
// Every rank writes its own hyperslabs: parameters are dealt out evenly by whole chunks; the
// moments each rank holds (its ZeRO-1 slice, or without ZeRO the same even split). Nothing is
// gathered. Reads are independent: every rank reads all parameters, and only its own slice of
// the moments, so any world size can load any checkpoint.
//
// Test hook: SMALLMIND_TEST_CKPT_PAUSE=write|rename|latest stops rank 0 of a save (after all
// data is written but before the file is closed / after it is closed and synced but before the
// rename / after the rename but before `latest` is rewritten) and waits there forever, so a test
// can kill -9 it; SMALLMIND_TEST_CKPT_PAUSE_FILE=F then receives the paused pid.
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
static void test_pause(const ckpt_ctx *cx, const char *stage) {
    const char *want = getenv("SMALLMIND_TEST_CKPT_PAUSE");
    if (cx->rank != 0 || !want || strcmp(want, stage) != 0) return;
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
// checksum each, the chunk indexes (v1 B-trees: well under 128 bytes a chunk), and per-dataset
// and per-file metadata.
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
        bytes += 3 * (chunks * chunk_bytes + (16u << 10));
    }
    return bytes + n_chunks * (4 + 128);
}

// Rank 0: reserves `bytes` of disk for the (open) temporary without changing its size
// (ENOSPC now, not inside HDF5's collective writes); where fallocate is unsupported, checks the
// free space instead.
static int reserve_space(ckpt_ctx *cx, const char *tmp, const char *run_dir, uint64_t bytes) {
    int fd = open(tmp, O_RDWR | O_CLOEXEC);
    CK_SYS(fd >= 0, "cannot open the new checkpoint to reserve disk space");
    int rc = fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, (off_t)bytes), e = errno;
    close(fd);
    if (rc != 0 && (e == EOPNOTSUPP || e == ENOSYS)) {
        struct statvfs vfs;
        CK_SYS(statvfs(run_dir, &vfs) == 0, "cannot read the free space of %s", run_dir);
        uint64_t avail = (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize;
        CK(avail >= bytes, "not enough disk space for the checkpoint: %.1f MB free, it needs up to %.1f MB",
           (double)avail / 1e6, (double)bytes / 1e6);
        return 0;
    }
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

typedef struct {
    hsize_t chunk_floats;
    int even;                    // moments: every rank holds all, deal them out like params
    size_t moment_lo, moment_hi; // this rank's range, clamped to the arena
    uint64_t reserve;            // bytes of disk reserved for the file
    const char *run_dir;
    double check_seconds;        // this rank's time checking values (finite, v >= 0)
} save_plan;

// The ranks' moment ranges: all the whole arena (even split), or a partition of it.
static int plan_moments(ckpt_ctx *cx, save_plan *plan, size_t n) {
    uint64_t mine[2] = {plan->moment_lo, plan->moment_hi};
    uint64_t *all = sm_malloc(2 * sizeof(uint64_t) * (size_t)cx->world);
    int *order = sm_malloc(sizeof(int) * (size_t)cx->world);
    int rc = -1;
    MPI_CHECK(MPI_Allgather(mine, 2, MPI_UINT64_T, all, 2, MPI_UINT64_T, MPI_COMM_WORLD));
    int full = 1;
    for (int r = 0; r < cx->world; r++) full &= all[2 * r] == 0 && all[2 * r + 1] == n;
    if (full) {
        plan->even = 1;
        rc = 0;
        goto error;
    }
    // sort the non-empty ranges by start (insertion sort: world is small), then they must tile [0, n)
    int k = 0;
    for (int r = 0; r < cx->world; r++) {
        if (all[2 * r] == all[2 * r + 1]) continue;
        int j = k++;
        while (j > 0 && all[2 * order[j - 1]] > all[2 * r]) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = r;
    }
    uint64_t next = 0;
    for (int j = 0; j < k; j++) {
        int r = order[j];
        CK(all[2 * r] == next,
           "checkpoint: the ranks' moment ranges neither cover the whole arena on every rank nor partition it "
           "(rank %d holds [%llu, %llu), expected a range from %llu)",
           r, (unsigned long long)all[2 * r], (unsigned long long)all[2 * r + 1], (unsigned long long)next);
        next = all[2 * r + 1];
    }
    CK(next == n,
       "checkpoint: the ranks' moment ranges neither cover the whole arena on every rank nor partition it "
       "(together they cover [0, %llu) of %zu floats)",
       (unsigned long long)next, n);
    plan->even = 0;
    rc = 0;
error:
    sm_free(order);
    sm_free(all);
    return rc;
}

// Writes one tensor: this rank's flat range [a, b) of it, from ptr (the tensor's start; only the
// range is read). Collective: every rank calls it for every tensor, in the same order.
// A checkpoint is committed only when every value in it is finite (and every second moment >= 0):
// each rank checks the range it writes, just before handing it to HDF5, which reads it again from
// cache for the checksum; a bad value fails the write on every rank (the agreement below is there
// anyway), so the temporary is removed and the previous checkpoint stays the last one.
static int write_tensor(ckpt_ctx *cx, hid_t group, const char *gname, const char *name, const ckpt_shape *s,
                        const float *ptr, hsize_t a, hsize_t b, hid_t dxpl, double *check_s) {
    hid_t ids[4] = {H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID};   // fspace mspace dcpl dset
    int local = -1;
    double t0 = sm_now_s();
    size_t bad_at = sm_first_bad_float(ptr + a, (size_t)(b - a), strcmp(gname, "/optim/v") == 0);
    *check_s += sm_now_s() - t0;
    if (bad_at < (size_t)(b - a)) {
        char what[64];
        ckpt_bad_value_str(what, sizeof what, ptr[a + bad_at]);
        ckpt_fail(cx, "refusing to commit a checkpoint with a value that is %s: %s/%s element %llu", what, gname, name,
                  (unsigned long long)(a + bad_at));
        goto error;
    }
    // local preparation, then agree, so no rank enters the collective calls alone
    CK_H5(ids[0] = H5Screate_simple(s->ndim, s->dims, NULL), "cannot write %s/%s", gname, name);
    CK_H5(ids[1] = H5Screate_simple(s->ndim, s->dims, NULL), "cannot write %s/%s", gname, name);
    CK_H5(ids[2] = H5Pcreate(H5P_DATASET_CREATE), "cannot write %s/%s", gname, name);
    CK_H5(H5Pset_chunk(ids[2], s->ndim, s->chunk), "cannot chunk %s/%s", gname, name);
    CK_H5(H5Pset_fletcher32(ids[2]), "cannot add a checksum to %s/%s", gname, name);
    CK_H5(H5Pset_fill_time(ids[2], H5D_FILL_TIME_NEVER), "cannot write %s/%s", gname, name);   // all written
    CK_H5(ckpt_select_flat(ids[0], s, a, b), "cannot select this rank's part of %s/%s", gname, name);
    CK_H5(ckpt_select_flat(ids[1], s, a, b), "cannot select this rank's part of %s/%s", gname, name);
    local = 0;
error:
    if (ckpt_agree(cx, local) != 0) {
        ckpt_close_all(ids, 4);
        return -1;
    }
    local = -1;
    ids[3] = H5Dcreate2(group, name, H5T_IEEE_F32LE, ids[0], H5P_DEFAULT, ids[2], H5P_DEFAULT);
    if (ids[3] < 0)
        ckpt_fail_h5(cx, "cannot create %s/%s", gname, name);
    else if (H5Dwrite(ids[3], H5T_NATIVE_FLOAT, ids[1], ids[0], dxpl, ptr) < 0)
        ckpt_fail_h5(cx, "cannot write %s/%s", gname, name);
    else
        local = 0;
    ckpt_close_all(ids, 4);
    return ckpt_agree(cx, local);
}

// Attributes and groups (collective: every rank the same values — rank 0's).
static int write_layout(ckpt_ctx *cx, hid_t file, const ckpt_meta *meta, hid_t *groups) {
    hid_t gcpl = H5I_INVALID_HID;
    int local = -1;
    CK_H5(gcpl = H5Pcreate(H5P_GROUP_CREATE), "cannot create groups");
    // h5py and inspect list tensors in the model's order
    CK_H5(H5Pset_link_creation_order(gcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED), "cannot create groups");
    const char *gnames[5] = {"/model", "/optim", "/optim/m", "/optim/v", "/state"};
    for (int i = 0; i < 5; i++)
        CK_H5(groups[i] = H5Gcreate2(file, gnames[i], H5P_DEFAULT, gcpl, H5P_DEFAULT), "cannot create group %s",
              gnames[i]);

    if (ckpt_attrs_write(cx, file, meta) != 0) goto error;
    local = 0;
error:
    if (gcpl >= 0) H5Pclose(gcpl);
    return ckpt_agree(cx, local);
}

// /state/rng: uint64 [world, 4], row r written by rank r.
static int write_rng(ckpt_ctx *cx, hid_t state, const sm_rng *rng, hid_t dxpl) {
    hid_t ids[4] = {H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID};   // fspace mspace dcpl dset
    hsize_t dims[2] = {(hsize_t)cx->world, 4}, row[2] = {1, 4}, start[2] = {(hsize_t)cx->rank, 0};
    int local = -1;
    CK_H5(ids[0] = H5Screate_simple(2, dims, NULL), "cannot write /state/rng");
    CK_H5(ids[1] = H5Screate_simple(2, row, NULL), "cannot write /state/rng");
    CK_H5(ids[2] = H5Pcreate(H5P_DATASET_CREATE), "cannot write /state/rng");
    CK_H5(H5Pset_chunk(ids[2], 2, dims), "cannot write /state/rng");
    CK_H5(H5Pset_fletcher32(ids[2]), "cannot write /state/rng");
    CK_H5(H5Sselect_hyperslab(ids[0], H5S_SELECT_SET, start, NULL, row, NULL), "cannot write /state/rng");
    local = 0;
error:
    if (ckpt_agree(cx, local) != 0) {
        ckpt_close_all(ids, 4);
        return -1;
    }
    local = -1;
    ids[3] = H5Dcreate2(state, "rng", H5T_STD_U64LE, ids[0], H5P_DEFAULT, ids[2], H5P_DEFAULT);
    if (ids[3] < 0)
        ckpt_fail_h5(cx, "cannot create /state/rng");
    else if (H5Dwrite(ids[3], H5T_NATIVE_UINT64, ids[1], ids[0], dxpl, rng->s) < 0)
        ckpt_fail_h5(cx, "cannot write /state/rng");
    else
        local = 0;
    ckpt_close_all(ids, 4);
    return ckpt_agree(cx, local);
}

// Creates, writes and closes the temporary file. Collective; the same result on every rank.
static int write_file(ckpt_ctx *cx, const char *tmp, const ckpt_meta *meta, const sm_table *params, const sm_table *m,
                      const sm_table *v, save_plan *plan) {
    hid_t fapl = H5I_INVALID_HID, fcpl = H5I_INVALID_HID, dxpl = H5I_INVALID_HID, file = H5I_INVALID_HID;
    hid_t groups[5] = {H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID};
    int local = -1, rc = -1;
    CK_H5(fapl = ckpt_fapl_mpio(1), "cannot set up MPI-IO for the checkpoint");
    CK_H5(fcpl = H5Pcreate(H5P_FILE_CREATE), "cannot create the checkpoint");
    CK_H5(H5Pset_link_creation_order(fcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED), "cannot create the checkpoint");
    CK_H5(H5Pset_attr_creation_order(fcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED), "cannot create the checkpoint");
    CK_H5(dxpl = H5Pcreate(H5P_DATASET_XFER), "cannot create the checkpoint");
    // filtered datasets can only be written collectively in parallel
    CK_H5(H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE), "cannot create the checkpoint");
    local = 0;
error:
    if (ckpt_agree(cx, local) != 0) goto done;
    file = H5Fcreate(tmp, H5F_ACC_TRUNC, fcpl, fapl);   // collective
    local = 0;
    if (file < 0) {
        ckpt_fail_h5(cx, "cannot create the checkpoint file");
        local = -1;
    }
    if (ckpt_agree(cx, local) != 0) goto done;
    // H5F_ACC_TRUNC dropped the reservation made before: make it again, before any data
    if (ckpt_agree(cx, cx->rank == 0 ? reserve_space(cx, tmp, plan->run_dir, plan->reserve) : 0) != 0) goto done;
    if (write_layout(cx, file, meta, groups) != 0) goto done;

    for (int i = 0; i < params->count; i++) {
        const sm_tensor *t = &params->t[i];
        ckpt_shape s;
        hsize_t a, b;
        tensor_shape(&s, t, plan->chunk_floats);
        ckpt_chunk_split(&s, cx->rank, cx->world, &a, &b);
        if (write_tensor(cx, groups[0], "/model", t->name, &s, t->ptr, a, b, dxpl, &plan->check_seconds) != 0) goto done;
    }
    for (int k = 0; k < 2; k++) {
        const sm_table *o = k ? v : m;
        for (int i = 0; i < o->count; i++) {
            const sm_tensor *t = &o->t[i];
            ckpt_shape s;
            hsize_t a, b;
            tensor_shape(&s, t, plan->chunk_floats);
            if (plan->even)
                ckpt_chunk_split(&s, cx->rank, cx->world, &a, &b);
            else
                tensor_part(t, plan->moment_lo, plan->moment_hi, &a, &b);
            if (write_tensor(cx, groups[2 + k], k ? "/optim/v" : "/optim/m", t->name, &s, t->ptr, a, b, dxpl,
                             &plan->check_seconds) != 0)
                goto done;
        }
    }
    if (write_rng(cx, groups[4], &meta->rng, dxpl) != 0) goto done;
    test_pause(cx, "write");
    // MPI_File_sync on every rank: on a parallel filesystem one client's fsync does not cover
    // the others' writes
    local = 0;
    if (H5Fflush(file, H5F_SCOPE_GLOBAL) < 0) {
        ckpt_fail_h5(cx, "cannot flush the checkpoint");
        local = -1;
    }
    if (ckpt_agree(cx, local) != 0) goto done;
    ckpt_close_all(groups, 5);
    rc = ckpt_close_agree(cx, &file, 0);
done:
    ckpt_close_all(groups, 5);
    hid_t rest[4] = {file, dxpl, fcpl, fapl};
    ckpt_close_all(rest, 4);
    return rc;
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

// Rank 0: fsync the closed temporary, rename it into place, fsync the directory, rewrite
// `latest` the same way, prune.
static int commit(ckpt_ctx *cx, const char *run_dir, const char *tmp, const char *final, int step, int keep) {
    int fd = -1, renamed = 0;
    const char *name = strrchr(final, '/') ? strrchr(final, '/') + 1 : final;
    CK_SYS((fd = open(tmp, O_RDWR | O_CLOEXEC)) >= 0, "cannot open the written checkpoint to sync it");
    struct stat st;
    CK_SYS(fstat(fd, &st) == 0, "cannot stat the checkpoint");
    // the space reserved past the end of the file is released by truncating to its own size
    CK_SYS(ftruncate(fd, st.st_size) == 0, "cannot release the disk reserved past the end of the checkpoint");
    CK_SYS(fsync(fd) == 0, "cannot fsync the checkpoint");
    int closed = close(fd);
    fd = -1;
    CK_SYS(closed == 0, "cannot close the checkpoint");
    test_pause(cx, "rename");
    CK_SYS(rename(tmp, final) == 0, "cannot rename %s.tmp into place", name);
    renamed = 1;
    CK_SYS(ckpt_sync_dir(run_dir) == 0, "checkpoint renamed into place, but cannot fsync its directory %s", run_dir);
    test_pause(cx, "latest");
    char latest[4200], line[CKPT_NAME_MAX + 2], why[CKPT_ERR_MAX];
    snprintf(latest, sizeof latest, "%s/latest", run_dir);
    int len = snprintf(line, sizeof line, "%s\n", name);
    CK(sm_write_file_atomic(latest, line, (size_t)len, why, sizeof why) == 0,
       "checkpoint committed, but `latest` could not be rewritten: %s", why);
    ckpt_prune(run_dir, step, keep);
    return 0;
error:
    if (fd >= 0) close(fd);
    if (!renamed) unlink(tmp);
    return -1;
}

int ckpt_save(const char *run_dir, const ckpt_meta *meta_in, const sm_table *params, const sm_table *m,
              const sm_table *v, size_t moment_lo, size_t moment_hi, int keep, ckpt_stats *stats, char *err,
              size_t errlen) {
    double t0 = sm_now_s();
    char final[4096], tmp[4200];
    ckpt_path(final, sizeof final, run_dir, meta_in->step);
    snprintf(tmp, sizeof tmp, "%s.tmp", final);
    ckpt_ctx c, *cx = &c;
    if (ckpt_ctx_init(cx, final) != 0) return ckpt_ctx_finish(cx, -1, err, errlen);

    // 1. arguments, the same metadata everywhere (rank 0's), and where every rank writes
    save_plan plan = {.chunk_floats = CKPT_CHUNK_FLOATS_DEFAULT, .moment_lo = moment_lo, .moment_hi = moment_hi,
                      .run_dir = run_dir};
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
    if (ckpt_agree(cx, local) != 0) return ckpt_ctx_finish(cx, -1, err, errlen);
    int steps[2] = {meta_in->step, -meta_in->step}, ext[2];
    MPI_CHECK(MPI_Allreduce(steps, ext, 2, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
    if (ext[0] != -ext[1]) {
        ckpt_fail(cx, "checkpoint: the ranks disagree on the step to save (%d to %d)", -ext[1], ext[0]);
        return ckpt_ctx_finish(cx, -1, err, errlen);
    }
    ckpt_meta meta = *meta_in;
    comm_bcast_bytes(&meta, sizeof meta, 0);
    meta.rng = meta_in->rng;   // the one per-rank field
    // what the file says of itself
    snprintf(meta.format, sizeof meta.format, "%s", CKPT_FORMAT_NAME);
    meta.format_version = CKPT_FORMAT_VERSION;
    meta.world_size = cx->world;
    meta.optim.schedule_position = meta.step;
    plan.chunk_floats = chunk_floats(cx);
    size_t n = sm_table_n_f32(params);
    if (plan.moment_hi > n) plan.moment_hi = n;
    if (plan.moment_lo > plan.moment_hi) plan.moment_lo = plan.moment_hi;
    if (ckpt_agree(cx, plan_moments(cx, &plan, n)) != 0) return ckpt_ctx_finish(cx, -1, err, errlen);
    plan.reserve = size_bound(params, plan.chunk_floats, cx->world);

    // 2. rank 0 makes sure the temporary can be created, for a plain message when it cannot
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
            int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
            if (fd < 0) {
                ckpt_fail_sys(cx, errno, "cannot create %s.tmp", strrchr(final, '/') + 1);
                local = -1;
            } else {
                close(fd);
                local = reserve_space(cx, tmp, run_dir, plan.reserve);
                if (local != 0) unlink(tmp);
            }
        }
    }
    if (local == 0) local = check_fsize_limit(cx, plan.reserve);
    if (ckpt_agree(cx, local) != 0) {
        if (cx->rank == 0) unlink(tmp);
        return ckpt_ctx_finish(cx, -1, err, errlen);
    }

    // 3. every rank writes its hyperslabs; 4. rank 0 commits
    double t_io = sm_now_s();
    int rc = write_file(cx, tmp, &meta, params, m, v, &plan);
    t_io = sm_now_s() - t_io;
    if (rc == 0) {
        rc = ckpt_agree(cx, cx->rank == 0 ? commit(cx, run_dir, tmp, final, meta.step, keep) : 0);
    } else if (cx->rank == 0) {
        unlink(tmp);   // every rank has closed it (write_file agreed after its cleanup)
    }
    if (rc == 0 && stats) {
        struct stat st;
        uint64_t bytes = cx->rank == 0 && stat(final, &st) == 0 ? (uint64_t)st.st_size : 0;
        comm_bcast_bytes(&bytes, sizeof bytes, 0);
        stats->bytes = bytes;
        stats->io_seconds = t_io;
        stats->seconds = sm_now_s() - t0;
        stats->reserved = plan.reserve;
        stats->check_seconds = plan.check_seconds;
    }
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

    // 2. every rank reads all params and its own moments
    double t_io = sm_now_s();
    hid_t fapl = H5I_INVALID_HID, dxpl = H5I_INVALID_HID, file = H5I_INVALID_HID;
    hid_t groups[3] = {H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID};
    const char *gnames[3] = {"/model", "/optim/m", "/optim/v"};
    int rc = -1;
    local = -1;
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
    if (local == 0) local = read_rng(cx, file, &meta, dxpl);
    if (ckpt_agree(cx, local) != 0) goto done;
    ckpt_close_all(groups, 3);
    rc = ckpt_close_agree(cx, &file, 0);
done:
    ckpt_close_all(groups, 3);
    hid_t rest[3] = {file, dxpl, fapl};
    ckpt_close_all(rest, 3);
    if (rc == 0) {
        *meta_out = meta;
        if (stats) {
            stats->bytes = file_bytes;
            stats->io_seconds = sm_now_s() - t_io;
            stats->seconds = sm_now_s() - t0;
        }
    }
    return ckpt_ctx_finish(cx, rc, err, errlen);
}
