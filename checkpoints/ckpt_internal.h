// ckpt_internal.h — plumbing shared by the checkpoint files (not part of the public API).
#pragma once
#include <hdf5.h>
#include <mpi.h>

#include "checkpoints.h"
#include "comm.h"

// One public call's context: the file named in messages, the message of the first failure,
// rank and world. Messages are "<what> (<where>)"; the first failure wins.
typedef struct {
    char where[4096];
    char msg[CKPT_ERR_MAX];
    int rank, world;
    // how a file that differs from what is expected is described: by a loader ("incompatible
    // checkpoint", "this model expects") or a verifier ("checkpoint fails verification", "its header implies")
    const char *mismatch, *expects;
} ckpt_ctx;

// Fails (and returns -1 on every rank) when MPI is not initialised; silences HDF5's stack dumps.
int ckpt_ctx_init(ckpt_ctx *cx, const char *where);
// Without MPI (a forked child, a fuzzer): rank 0 of 1.
void ckpt_ctx_init_local(ckpt_ctx *cx, const char *where, const char *mismatch, const char *expects);
// Copies the message out (when rc < 0) and returns rc.
int ckpt_ctx_finish(ckpt_ctx *cx, int rc, char *err, size_t errlen);

void ckpt_fail(ckpt_ctx *cx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Appends the innermost entry of HDF5's error stack (the root cause), then clears the stack.
// Call it right after the failing HDF5 call: any other HDF5 call resets the stack.
void ckpt_fail_h5(ckpt_ctx *cx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// The innermost entry of HDF5's error stack (then cleared), e.g. "data error detected by
// Fletcher32 checksum".
void ckpt_h5_reason(char *out, size_t cap);
void ckpt_fail_sys(ckpt_ctx *cx, int errnum, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
// A whole message made elsewhere (it already names its "(<where>)"); returns -1.
int ckpt_fail_msg(ckpt_ctx *cx, const char *msg);

// Check macros: record one line and jump to the function's `error:` block. A local failure must
// never make one rank skip a collective call the others make: jump to a point where every rank
// calls ckpt_agree() next.
#define CK(cond, ...)                                                                          \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            ckpt_fail(cx, __VA_ARGS__);                                                        \
            goto error;                                                                        \
        }                                                                                      \
    } while (0)
#define CK_H5(call, ...)                                                                       \
    do {                                                                                       \
        if ((call) < 0) {                                                                      \
            ckpt_fail_h5(cx, __VA_ARGS__);                                                     \
            goto error;                                                                        \
        }                                                                                      \
    } while (0)
#define CK_SYS(cond, ...)                                                                      \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            ckpt_fail_sys(cx, errno, __VA_ARGS__);                                             \
            goto error;                                                                        \
        }                                                                                      \
    } while (0)
// MPI failures are not recoverable (the ranks can no longer agree on anything): MPI_CHECK
// (comm.h) aborts all ranks.

// Every rank passes its local status (0, or -1 with a message in cx). Returns 0 when all
// succeeded, else -1 on every rank with the message of the lowest failing rank.
int ckpt_agree(ckpt_ctx *cx, int local_rc);
// Closes *file collectively (leaving it H5I_INVALID_HID) and agrees on the outcome: a failed
// close turns local_rc into -1 with a message. Returns ckpt_agree's result.
int ckpt_close_agree(ckpt_ctx *cx, hid_t *file, int local_rc);
// HDF5 handles: close if valid (cleanup blocks).
void ckpt_close_all(hid_t *ids, int n);

// A dataset's logical shape and its chunking. Chunks are ~chunk_floats elements: trailing
// dimensions whole, one dimension p cut into blocks of chunk[p], leading dimensions 1 — so
// each chunk is a contiguous range of the flat tensor.
typedef struct {
    int ndim;
    hsize_t dims[SM_MAX_DIMS], chunk[SM_MAX_DIMS];
    hsize_t n;   // elements
} ckpt_shape;
#define CKPT_CHUNK_FLOATS_DEFAULT ((hsize_t)1 << 18)   // 1 MiB of float32
void ckpt_shape_init(ckpt_shape *s, int ndim, const hsize_t *dims, hsize_t chunk_floats);
// The contiguous range [*lo, *hi) of part `part` of `n_parts` when the chunks are dealt out evenly.
void ckpt_chunk_split(const ckpt_shape *s, int part, int n_parts, hsize_t *lo, hsize_t *hi);
// Selects the flat range [a, b) (row-major) of a dataspace of shape s as a union of at most
// 2*ndim-1 boxes (nothing when a >= b). Using the same selection on a memory space of the
// tensor's shape keeps HDF5 on its fast path (same-shape selections).
int ckpt_select_flat(hid_t space, const ckpt_shape *s, hsize_t a, hsize_t b);
// Formats "[d0, d1, ...]"
void ckpt_shape_str(char *out, size_t cap, int ndim, const hsize_t *dims);

// File access through MPI-IO on MPI_COMM_WORLD; collective metadata when `writing`.
hid_t ckpt_fapl_mpio(int writing);

// Scalar attributes of one of the format's types (CKPT_ATTR_STR: val is a char array of cap bytes).
// Reading checks the file's type class, and integers' range (read at 64 bits, never clamped).
int ckpt_attr_write(ckpt_ctx *cx, hid_t obj, const char *name, ckpt_attr_type type, const void *val);
int ckpt_attr_read(ckpt_ctx *cx, hid_t obj, const char *objname, const char *name, ckpt_attr_type type, void *val,
                   size_t cap);
// Writes every attribute of CKPT_ATTRS from meta (the groups exist). Collective when writing in parallel.
int ckpt_attrs_write(ckpt_ctx *cx, hid_t file, const ckpt_meta *meta);

// Rank-local: checks the file (exists, not empty, HDF5, opens, our format and version) and
// reads its metadata. Used by ckpt_read_meta on rank 0.
int ckpt_read_meta_local(ckpt_ctx *cx, const char *path, ckpt_meta *meta, uint64_t *file_bytes);

// The run directory's checkpoint files, as one rank sees them (rundir.c).
typedef struct {
    char name[256];
    int step;
    int kind;   // CKPT_NAME_CKPT, CKPT_NAME_TMP or CKPT_NAME_OTHER
} ckpt_dir_entry;
typedef struct {
    ckpt_dir_entry *e;   // checkpoints first, newest first, then temporaries, then look-alikes
    int n, n_ckpt;
} ckpt_dir;
// Lists RUN_DIR (one that does not exist is empty). 0, or -1 with "<what>" in err.
int ckpt_dir_scan(const char *run_dir, ckpt_dir *out, char *err, size_t errlen);
void ckpt_dir_free(ckpt_dir *d);

// Runs fn(arg, out) in a forked child that makes no MPI call, and copies its `out` (n_bytes) back, so
// a crash or a hang inside libhdf5 on an untrusted file ends the child, not the caller. The child is
// killed after a time limit that grows with file_bytes. 0, or -1 with the reason in why ("the HDF5
// library crashed reading it (Segmentation fault ...)"). SMALLMIND_CKPT_NO_FORK=1 runs fn in-process.
int ckpt_contained(void (*fn)(void *arg, void *out), void *arg, void *out, size_t n_bytes, uint64_t file_bytes,
                   char *why, size_t cap);

// Checks a checkpoint rank-locally, in a contained child (verify.c): the header (header_only stops
// there), then the structure against the tensors of `expect` (a loader's table), or of
// layout(header config), or of /model's own listing (both NULL): every dataset a hard link, float32
// (/state/rng uint64 [world_size, 4]) of exactly that shape, chunked with Fletcher32 alone, every chunk
// stored, the tensors' bytes within the file, no other object in the format's groups; then with
// n_parts > 0 reads back the datasets i % n_parts == part, chunk by chunk, every float finite and every
// /optim/v value >= 0. stage: 0 passed, 1 the header failed (or the check crashed), 2 the structure or
// data failed; msg is the whole one-line message; *rep (when rep is non-NULL) what was found.
typedef struct {
    int stage;
    char msg[CKPT_ERR_MAX];
    ckpt_report *rep;
} ckpt_check_result;
int ckpt_check_local(const char *path, const sm_table *expect, ckpt_layout_fn layout, int header_only, int part,
                     int n_parts, ckpt_check_result *res);

// "NaN", "+Inf", "-Inf" or "negative (-1)"
void ckpt_bad_value_str(char *out, size_t cap, float x);
// After a commit (rank 0): removes stale temporaries and, with keep > 0, the checkpoints beyond the
// newest `keep` along the new one's lineage (rundir.c). Warnings only.
void ckpt_prune(const char *run_dir, int new_step, int keep);
// fsync of a directory (EINVAL, a filesystem that cannot, is success). 0 or -1 (errno).
int ckpt_sync_dir(const char *dir);

// Rank 0's half of ckpt_resolve_resume (rundir.c): scans RUN_DIR, reads `latest` and the headers (in a
// contained child), and plans. auto: p->order, the steps to verify in that order; PATH (path_meta: its
// header): p->moved, the steps newer than it; notes go into r. Nothing is verified or changed. 0 or -1.
typedef struct {
    int *order, n_order;   // sm_malloc'd; the caller frees both
    int *moved, n_moved;
} ckpt_resume_plan;
int ckpt_plan_resume(ckpt_ctx *cx, const char *run_dir, const char *mode, ckpt_resume *r, ckpt_resume_plan *p,
                     const ckpt_meta *path_meta);
