// ckpt_internal.h — plumbing shared by the checkpoint files (not part of the public API).
#pragma once
#include <hdf5.h>
#include <mpi.h>
#include <sys/types.h>
#include <sys/uio.h>

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
// The same without any HDF5 call: for OpenMP threads and the --ckpt-async writer thread (this HDF5 is not
// thread-safe: H5Eset_auto2 from a second thread corrupted its free lists).
void ckpt_ctx_init_plain(ckpt_ctx *cx, const char *where, const char *mismatch, const char *expects);
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

// ---------------------------------------------------------------------------
// The data path (layout.c, chunkio.c): every chunk is a contiguous range of its flat tensor; ranks write
// and read chunks with POSIX I/O at the places rank 0's layout gave them.
// 1 when s's chunks have the shape ckpt_shape_init gives (leading dimensions 1, one cut, trailing whole),
// i.e. each chunk is one contiguous range of the flat tensor (files of other writers may differ).
int ckpt_shape_contiguous(const ckpt_shape *s);
int ckpt_cut_dim(const ckpt_shape *s);   // that one cut dimension: the last not whole (0: one chunk)
hsize_t ckpt_n_chunks(const ckpt_shape *s);
typedef struct {
    hsize_t start;                  // its first element in the flat tensor
    hsize_t n;                      // the tensor's elements in it
    hsize_t full;                   // the elements it stores: n, or more for an edge chunk (zero padded)
    hsize_t coord[SM_MAX_DIMS];     // its offset in the dataset (H5Dwrite_chunk, H5Dget_chunk_info_by_coord)
} ckpt_chunk;
void ckpt_chunk_at(const ckpt_shape *s, hsize_t k, ckpt_chunk *c);   // chunk k, in flat order

#define CKPT_ALIGN 4096   // chunks of this size or more start at a multiple of it in the file
// Where a chunk is in the file: addr, and size = full * 4 + 4 (data, padding, then the Fletcher32 sum).
typedef struct {
    uint64_t addr, size;
} ckpt_chunk_loc;
// The checkpoint's tensor datasets in file order (/model, /optim/m, /optim/v; table order in each), and
// their chunks numbered across all of them.
typedef struct {
    const char *group;     // "/model", "/optim/m" or "/optim/v"
    int kind;              // 0 params, 1 m, 2 v
    const sm_tensor *t;    // the tensor in its table
    ckpt_shape s;
    hsize_t first, n_chunks;   // its chunks: [first, first + n_chunks) of the whole table
} ckpt_dset;
typedef struct {
    int count;             // tensors per group
    int n_dsets;
    ckpt_dset d[3 * SM_MAX_TENSORS];
    hsize_t n_chunks;
} ckpt_geom;
// m, v may be NULL (their datasets then describe params' tensors: the shapes are the same).
int ckpt_geom_init(ckpt_geom *g, const sm_table *params, const sm_table *m, const sm_table *v, hsize_t chunk_floats);

// Rank 0, serial HDF5, no MPI: writes `path` with the format's groups, attributes, tensor datasets (every
// chunk allocated, none of their data written) and /state/rng (rng_rows: [world, 4]); locs[] receives
// every chunk's place, *file_bytes the file's size. 0 or -1 (message in cx).
int ckpt_layout_write(ckpt_ctx *cx, const char *path, const ckpt_meta *meta, const uint64_t *rng_rows, int world,
                      const ckpt_geom *g, ckpt_chunk_loc *locs, uint64_t *file_bytes);
// Rank 0, serial HDF5, after the forked check: the file's chunk shapes into g (and g's chunk numbering),
// every chunk's place into *locs (sm_malloc'd; the caller frees it), /state/rng into rng_rows ([rng_world, 4],
// the header's world size). *contiguous = 0 when a dataset is chunked otherwise (another writer's file):
// *locs is then NULL and HDF5 must read the file.
int ckpt_layout_read(ckpt_ctx *cx, const char *path, ckpt_geom *g, ckpt_chunk_loc **locs, uint64_t file_bytes,
                     uint64_t *rng_rows, int rng_world, int *contiguous);

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

// ---------------------------------------------------------------------------
// Fletcher32 as HDF5's filter computes it (checksum.c), streamed over a chunk's pieces (its data, then
// the zero padding of an edge chunk), with the value check fused into the same pass.
typedef struct {
    uint32_t s1, s2;
    uint32_t in_block;   // words since HDF5's last fold (it folds every 360 words)
} ckpt_fletcher;
enum { CKPT_CHECK_NONE = 0, CKPT_CHECK_FINITE = 1, CKPT_CHECK_NONNEG = 2 };   // finite; finite and >= 0 (v)
enum { CKPT_PATH_AUTO = 0, CKPT_PATH_C = 1, CKPT_PATH_AVX2 = 2 };
// H5_checksum_fletcher32 written out (any n_bytes): the definition the fast path is tested against.
uint32_t ckpt_fletcher32_ref(const void *data, size_t n_bytes);
void ckpt_fletcher_init(ckpt_fletcher *f);
// Adds n_bytes (whole floats) and checks them as floats: returns the index of the first float that fails
// `check` (CKPT_CHECK_*), else n_bytes / 4. The _path form picks the code (tests); AUTO: AVX2 if the CPU has it.
size_t ckpt_fletcher_add(ckpt_fletcher *f, const void *data, size_t n_bytes, int check);
// The same, copying the bytes to dst in the same pass (dst NULL: no copy); path: CKPT_PATH_*.
size_t ckpt_fletcher_copy(ckpt_fletcher *f, void *dst, const void *data, size_t n_bytes, int check);
size_t ckpt_fletcher_copy_path(ckpt_fletcher *f, void *dst, const void *data, size_t n_bytes, int check, int path);
void ckpt_fletcher_add_zeros(ckpt_fletcher *f, size_t n_bytes);
// The checksum HDF5 stores after the chunk (little-endian in the file).
uint32_t ckpt_fletcher_end(const ckpt_fletcher *f);
const char *ckpt_fletcher_path(int path);   // "avx2" or "c": what AUTO (or path) runs here
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

// ---------------------------------------------------------------------------
// Who writes which chunk (chunkio.c)
// All of iov[0..n) at off, through short writes and EINTR (iov is consumed). 0 or -1 (errno).
int ckpt_pwritev_all(int fd, struct iovec *iov, int n, off_t off);
typedef struct {
    int d;                 // its dataset (geom index)
    hsize_t k;             // its index in the dataset
    ckpt_chunk c;
    const float *src;      // its c.n floats in the caller's table; NULL when assembled (slot >= 0)
    int slot;              // ZeRO: a chunk straddling slices, assembled by the exchange; else -1
} ckpt_own;
typedef struct {
    int rank, world;
    ckpt_geom g;
    int even;              // moments: every rank holds all (dealt out like params); else a partition (ZeRO)
    size_t lo, hi;         // this rank's moments, clamped to the arena
    uint64_t *ranges;      // every rank's [lo, hi): 2 x world
    ckpt_own *own;         // the chunks this rank writes, in file order
    int n_own, n_assembled;
    hsize_t max_full;      // floats of the largest chunk
} ckpt_wplan;
// Collective (the ranges are gathered and must be all the arena everywhere, or a partition). 0 or -1.
int ckpt_wplan_build(ckpt_ctx *cx, ckpt_wplan *p, const sm_table *params, const sm_table *m, const sm_table *v,
                     size_t moment_lo, size_t moment_hi, hsize_t chunk_floats);
void ckpt_wplan_free(ckpt_wplan *p);
// The chunk of s holding flat element x.
hsize_t ckpt_chunk_of(const ckpt_shape *s, hsize_t x);
// ZeRO: fills slots[own->slot] (c.n floats each) of this rank's straddling chunks: its own part copied, the
// others' received; sends this rank's parts of others' chunks. Collective (point to point).
void ckpt_exchange(const ckpt_wplan *p, float *const *slots);
// "refusing to commit ... / ... refusing to load it" for a bad value x at element `element` of d.
void ckpt_value_fail(ckpt_ctx *cx, const ckpt_dset *d, hsize_t element, float x, int loading);
// Chunk c of d from src: its sum (data, then zero padding) into sum_le, the value check fused; with dst
// non-NULL the data is copied there in the same pass. 0, or -1 (a bad value: message in cx).
int ckpt_sum_chunk(ckpt_ctx *cx, const ckpt_dset *d, const ckpt_chunk *c, void *dst, const float *src,
                   unsigned char sum_le[4]);
// Writes this rank's chunks into fd (open on the laid-out file) at locs, from the tables (slots: the
// assembled chunks): each chunk copied into a bounce buffer, summed and checked in the same pass, then
// written, batches shared by the calling thread's OpenMP team. *check_s += the threads' copying and
// summing time. 0, or -1 (message in cx: the first bad value in file order, or the write's error).
int ckpt_write_owned(ckpt_ctx *cx, int fd, const ckpt_wplan *p, const ckpt_chunk_loc *locs, float *const *slots,
                     double *check_s);
// Reads ranges[2i, 2i+1) of every dataset i's flat tensor into its table (g->d[i].t->ptr; nothing else of
// the tables is written) from fd: every chunk holding part of them read once, its sum verified, the values
// loaded checked, the work shared by the calling thread's OpenMP team. fd_direct: the same file opened
// O_DIRECT, or -1; the parts not in the page cache (with all_direct, every part) are then read through it by
// reader threads ahead of the verification (*direct_bytes: how many bytes went that way). 0, or -1 with the
// message of the first failure in file order (in cx).
int ckpt_read_ranges(ckpt_ctx *cx, int fd, int fd_direct, int all_direct, const ckpt_geom *g,
                     const ckpt_chunk_loc *locs, const hsize_t *ranges, uint64_t *direct_bytes);

// ---------------------------------------------------------------------------
// A save in progress (checkpoints.c; async.c drives the same steps from a thread)
typedef struct {
    char final[4096], tmp[4200];
    const char *run_dir;
    int keep;
    ckpt_meta meta;             // what the file says (rank 0's, with this rank's generator)
    ckpt_wplan plan;
    ckpt_chunk_loc *locs;       // every chunk's place (plan.g's numbering; filled by the layout, shared by _share)
    uint64_t *rng_rows;         // rank 0: every rank's generator state, [world, 4] (the layout writes them)
    uint64_t reserve;           // the size bound checked against the free space
    uint64_t file_bytes;        // the laid-out file's size (reserved on disk)
    double t0, layout_seconds;
} ckpt_saving;
// A save's start in three parts, which ckpt_save_begin runs in a row and async.c around its copy:
// _plan (collective): the checks, the metadata, the plan, the generator states gathered on rank 0;
// 0, or -1 on every rank (message in cx). _layout (rank 0 alone, serial HDF5, no MPI): lays the .tmp file
// out and reserves its blocks; 0, or -1 with the file removed. _share (collective): agrees on `local` (the
// layout's result, or any other local failure), then gives every rank the chunk table and the file size;
// 0, or -1 on every rank. sv is freed by ckpt_saving_free whatever the result.
int ckpt_save_plan(ckpt_ctx *cx, ckpt_saving *sv, const char *run_dir, const ckpt_meta *meta_in,
                   const sm_table *params, const sm_table *m, const sm_table *v, size_t moment_lo, size_t moment_hi,
                   int keep);
int ckpt_save_layout(ckpt_ctx *cx, ckpt_saving *sv);
int ckpt_save_share(ckpt_ctx *cx, ckpt_saving *sv, int local);
// Collective: the checks, the metadata, the plan, rank 0's layout and reservation, the chunk table on every
// rank. 0, or -1 on every rank (message in cx; nothing left on disk).
int ckpt_save_begin(ckpt_ctx *cx, ckpt_saving *sv, const char *run_dir, const ckpt_meta *meta_in,
                    const sm_table *params, const sm_table *m, const sm_table *v, size_t moment_lo, size_t moment_hi,
                    int keep);
// Rank 0, once every rank's data is written and synced: fsync, rename, directory sync, `latest`, prune.
// No MPI (a thread may run it). 0, or -1 (message in cx; the .tmp removed unless already renamed).
int ckpt_save_commit(ckpt_ctx *cx, const ckpt_saving *sv);
void ckpt_saving_free(ckpt_saving *sv);
// SMALLMIND_TEST_CKPT_PAUSE: rank 0 stops at `stage` forever (tests kill it there).
void ckpt_test_pause(int rank, const char *stage);
