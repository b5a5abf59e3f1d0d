// checkpoints.h — HDF5 checkpoints: sharded collective save, atomic commit, resharding load, verify.
// Also the metadata alone and the newest checkpoint that verifies. Knows nothing of GPT: it
// takes named-tensor tables (common.h) and plain metadata structs.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "common.h"

// File layout (format_version 1), one file per checkpoint, RUN_DIR/ckpt_%08d.h5:
//   /               attrs format="smallmind-checkpoint", format_version, step, tokens_seen,
//                   world_size (of the writer), n_layer, n_head, n_embd, max_seq_len,
//                   vocab_size, padded_vocab_size, tokenizer
//   /model/<name>   float32, the tensor's logical shape (no padding), in table order
//   /optim/m/<name>, /optim/v/<name>   float32, AdamW moments, same shapes
//   /optim          attrs lr, min_lr, beta1, beta2, eps, weight_decay, warmup, total_steps,
//                   schedule_position (= step)
//   /state          attr data_cursor (uint64, global window index); dataset rng
//                   uint64 [world_size, 4]: row r is rank r's xoshiro256** state
// Every dataset is chunked (~1 MiB chunks) with HDF5's Fletcher32 filter, so every reader
// (h5py and h5dump too) verifies what it reads.
#define CKPT_FORMAT_NAME "smallmind-checkpoint"
#define CKPT_FORMAT_VERSION 1
#define CKPT_NAME_MAX 64      // a checkpoint's file name, without the directory
#define CKPT_ERR_MAX 1024     // long enough for any message these functions write


typedef struct {
    double lr, min_lr, beta1, beta2, eps, weight_decay;
    int warmup, total_steps;
    int schedule_position;     // save: ignored (the step is written); load: the file's (= step)
} ckpt_optim;

typedef struct {
    char format[32];        // save: ignored (CKPT_FORMAT_NAME is written); load: the file's
    int format_version;     // save: ignored (CKPT_FORMAT_VERSION is written); load: the file's
    int step;               // completed optimizer steps
    uint64_t tokens_seen;
    uint64_t data_cursor;   // global window index of the next batch
    sm_rng rng;             // this rank's generator (save: written as row `rank`; load: read back)
    int rng_restored;       // load: 1 when the file holds a row for this rank (writer world > rank)
    int world_size;         // save: ignored (the MPI world is written); load/read: the writer's
    sm_model_config cfg;
    // The file name (no directory) of the checkpoint this state continued from: the run's previous
    // save, or the checkpoint it resumed from; "" for a fresh run's first. --resume auto follows it
    // (a newer checkpoint that descends from the one `latest` names), and --keep counts along it.
    char parent[CKPT_NAME_MAX];
    char run_options[16384];   // the writer's flags as one JSON object (name: value as text), for the
                               // resume checks; "" in a file written before the attribute existed
    int has_parent;         // load: 0 for a file written before the attribute existed; save: ignored
    ckpt_optim optim;
} ckpt_meta;

// The attributes a checkpoint stores, one row each: save writes them, load and read_meta read them,
// verify checks them and inspect prints them, all by walking this table. The value lives in
// ckpt_meta at `offset`.
typedef enum { CKPT_ATTR_I32, CKPT_ATTR_U64, CKPT_ATTR_F64, CKPT_ATTR_STR } ckpt_attr_type;
typedef struct {
    const char *group;     // the HDF5 object holding it: "/", "/optim" or "/state"
    const char *name;
    ckpt_attr_type type;   // in the file: int32 LE, uint64 LE, float64 LE, variable-length UTF-8
    size_t offset;         // of the value in ckpt_meta (CKPT_ATTR_STR: a char array of `cap` bytes)
    size_t cap;
    const char *section;   // how inspect groups it: "" (the file), "config" or "optim"
    int optional;          // files written before it existed lack it: read as 0 / ""
} ckpt_attr;
extern const ckpt_attr CKPT_ATTRS[];
extern const int CKPT_N_ATTRS;
// Attribute a's value in meta as text (json: strings quoted and escaped, doubles to 17 digits).
void ckpt_attr_format(const ckpt_attr *a, const ckpt_meta *meta, int json, char *out, size_t cap);

typedef struct {
    double seconds;      // the whole call, commit included (async: from the save's start to its commit)
    double io_seconds;   // save: layout, data written and synced; load: the chunk table and the data read
    uint64_t bytes;      // size of the checkpoint file
    uint64_t reserved;   // save: the free space required before writing (an upper bound of bytes)
    double check_seconds;   // save: this rank's time summing chunks and checking that every value is finite
                            // (async: ckpt_async_save's, the copy that checks; ckpt_async_poll's, the writer's sums)
    double layout_seconds;  // save: rank 0's serial HDF5 pass that lays the file out (0 on other ranks)
    double write_seconds;   // save: this rank's data writes (sums and checks included)
    double sync_seconds;    // save: this rank's fsync of its data
    double commit_seconds;  // save: rank 0's fsync, rename, directory sync and `latest`
    double stall_seconds;   // async save: what the step that saved spent in ckpt_async_save (the copy)
    uint64_t direct_bytes;  // load: the bytes this rank read O_DIRECT (those not in the page cache)
    int captured;           // async save: the step's AdamW pass filled the buffer (ckpt_async_capture)
} ckpt_stats;

// One dataset as ckpt_verify() found it.
typedef struct {
    char name[80];                   // "/model/wte"
    int ndim;
    uint64_t shape[SM_MAX_DIMS];
    uint64_t n_bytes;                // logical size (elements x element size)
    uint64_t stored_bytes;           // on disk, with the per-chunk checksums
    int ok;                          // read back and every chunk's checksum matched
    char reason[256];                // why not, when !ok
} ckpt_dataset_report;

#define CKPT_MAX_DATASETS (3 * SM_MAX_TENSORS + 8)
// ~80 KB: allocate it, don't put it on a small stack.
typedef struct {
    int meta_ok;                     // meta holds the file's metadata
    ckpt_meta meta;
    uint64_t file_bytes;
    int n_datasets, n_bad;
    ckpt_dataset_report d[CKPT_MAX_DATASETS];
} ckpt_report;

// A checkpoint ckpt_find_latest() skipped, and why.
typedef struct {
    char name[CKPT_NAME_MAX];
    char reason[CKPT_ERR_MAX];
} ckpt_skipped;

// All functions below are collective over MPI_COMM_WORLD (MPI must be initialised: comm_init)
// and return the same result on every rank. On failure they return -1 and write one line
// "<what> (<where>)" into err, the same on every rank, ready for sm_fatal("%s", err).

// Writes RUN_DIR/ckpt_<step>.h5: collectively through MPI-IO to ckpt_<step>.h5.tmp, closed,
// fsynced, renamed, the directory fsynced, then RUN_DIR/latest rewritten the same way (it
// holds the file name). With keep > 0 afterwards deletes the older ckpt_*.h5 beyond the newest
// `keep` (newer ones are never touched), and stale ckpt_*.h5.tmp left by crashed saves.
// params, m, v: tables with the same layout; every rank holds all params. This rank holds
// valid moments for the arena range [moment_lo, moment_hi) (floats, arena coordinates,
// padding included) and nothing of m, v outside it is read. Either every rank passes the whole
// arena (no ZeRO: the work is split evenly), or the ranges partition the arena (ZeRO-1; hi is
// clamped to the arena). Each rank writes its own hyperslabs: nothing is gathered.
// Before writing, the file's size is bounded from above and the space reserved (fallocate;
// free space checked where that is unsupported), and every rank's file-size limit (ulimit -f)
// checked: a full disk is refused up front, because HDF5 1.10 cannot recover from a failed
// write inside a collective save (it hangs, or leaves a file handle that crashes at exit).
// On failure the previous checkpoints and `latest` are untouched and the .tmp is removed.
// stats may be NULL.
int ckpt_save(const char *run_dir, const ckpt_meta *meta, const sm_table *params, const sm_table *m,
              const sm_table *v, size_t moment_lo, size_t moment_hi, int keep, ckpt_stats *stats, char *err,
              size_t errlen);

// Asynchronous saves (train --ckpt-async). ckpt_async_create allocates, once, a buffer holding this
// rank's chunks of a checkpoint as the file stores them — its share of params, m and v: about 12 bytes per
// parameter / ranks (*bytes_out), e.g. 1.5 GB for GPT-2 124M on one rank — and starts a writer thread.
// ckpt_async_save does the save's collective part (the same checks, rank 0's layout, the ZeRO exchange),
// copies this rank's chunks into the buffer, checking every value as it copies (a non-finite value fails
// it here, as ckpt_save would; on rank 0 the thread starts the copy while the main thread lays out), hands
// the summing (Fletcher32) and writing to the thread and returns: the time it takes is the step's stall
// (stats->stall_seconds). A save while another is in flight waits for it first. The commit rules are
// ckpt_save's: the data is written to the .tmp and synced by every rank's thread; once ckpt_async_poll
// finds every rank's data on disk, rank 0's thread commits (sync, rename, directory sync, `latest`,
// prune). The thread makes no MPI call; every function here but ckpt_async_capture is collective, and all
// are called by the main thread only. The tables and moment range must keep the layout given to create.
typedef struct ckpt_async ckpt_async;
int ckpt_async_create(ckpt_async **a, const sm_table *params, const sm_table *m, const sm_table *v, size_t moment_lo,
                      size_t moment_hi, uint64_t *bytes_out, char *err, size_t errlen);
int ckpt_async_save(ckpt_async *a, const char *run_dir, const ckpt_meta *meta, const sm_table *params,
                    const sm_table *m, const sm_table *v, size_t moment_lo, size_t moment_hi, int keep,
                    ckpt_stats *stats, char *err, size_t errlen);
// Advances the save in flight; call at step boundaries (a 2-int allreduce while one is in flight; nothing
// otherwise). wait = 1 blocks until it is committed. *completed = 1 when this call saw it committed (stats,
// may be NULL: its figures). -1 when it failed (message in err; the .tmp removed, the previous checkpoint
// and `latest` untouched).
int ckpt_async_poll(ckpt_async *a, int wait, int *completed, ckpt_stats *stats, char *err, size_t errlen);
int ckpt_async_pending(const ckpt_async *a);   // a save is in flight (the same on every rank)
// Arms a capture for the save of step `step`: *out (NULL when this state cannot be captured: ZeRO moments,
// or a save still in flight, whose buffer is the writer's) tells the AdamW pass of that step where to copy
// the updated p, m and v (adamw_state.capture) — the copy the save would otherwise make after it, reading
// the state again (here about half the memory traffic). ckpt_async_save for that step then writes the
// buffer as the pass left it (when it completed and found every value finite; else it copies as
// usual). Local, no MPI; call it once no save is in flight (ckpt_async_poll with wait), before the step.
void ckpt_async_capture(ckpt_async *a, int step, sm_capture **out);
void ckpt_async_free(ckpt_async *a);           // waits for the thread's current job; not collective

// At start, before any training: whether RUN_DIR can take one checkpoint of these parameters (the
// save's own upper bound of its size, against the free space on rank 0 and every rank's file-size
// limit), so a too-small disk is found now, not at the first save hours later. *bytes_out (may be
// NULL): that bound. The space is not reserved (the save reserves its own). Collective.
int ckpt_check_space(const char *run_dir, const sm_table *params, uint64_t *bytes_out, char *err, size_t errlen);

// Restores a checkpoint: every rank reads all params; each rank reads the moments of
// [moment_lo, moment_hi) only (any world size: that is resharding), its rng row, and the
// metadata. m and v may both be NULL (params only, e.g. for eval). With expect non-NULL the
// file's model config must equal it, else the file is refused as incompatible. Tensor names and
// shapes must match the tables. Every chunk read is checksum-verified. stats may be NULL.
int ckpt_load(const char *path, const sm_model_config *expect, ckpt_meta *meta, sm_table *params, sm_table *m,
              sm_table *v, size_t moment_lo, size_t moment_hi, ckpt_stats *stats, char *err, size_t errlen);

// Reads the metadata only (rank 0 reads, all ranks receive). Refuses files that are missing,
// empty, not HDF5, truncated, foreign (no/other format attribute) or of a newer format_version.
int ckpt_read_meta(const char *path, ckpt_meta *meta, char *err, size_t errlen);

// Not collective: 0 if the configs are equal, else -1 naming the first difference.
int ckpt_config_check(const sm_model_config *file_cfg, const sm_model_config *run_cfg, const char *path,
                      char *err, size_t errlen);

// The tensors a model of config cfg has (names and shapes, in order): the model's table builder,
// given to the checkpoints (which know nothing of GPT) so that a file's datasets can be checked
// against what its header implies. 0, or -1 with a message when cfg is not a valid config.
typedef int (*ckpt_layout_fn)(const sm_model_config *cfg, sm_table *params, char *err, size_t errlen);

// Verifies an untrusted checkpoint, in forked children (a crash or hang inside libhdf5 reads as
// "damaged"): the header; then, before any data is read, the structure: /model, /optim/m and
// /optim/v hold exactly the tensors layout(header config) gives (layout NULL: those /model lists),
// each a dataset stored in the file (hard links only), float32 of exactly that shape, chunked with
// Fletcher32 as its only filter and every chunk written; /state/rng is uint64 [world_size, 4];
// nothing else in those groups; the tensors' bytes no more than the file's size. Then every dataset is
// read back (the work split over the ranks), each chunk once, its checksum verified, every value
// finite and every second moment >= 0 — time in proportion to the bytes stored. 0 when all verify.
// rep may be NULL; when given it is filled as far as the file allows (also on failure).
int ckpt_verify(const char *path, ckpt_layout_fn layout, ckpt_report *rep, char *err, size_t errlen);

// --resume, decided before anything in RUN_DIR changes (ckpt_resolve_resume), carried out once the
// trainer's own resume checks have passed (ckpt_adopt_resume).
#define CKPT_MAX_NOTES 16
typedef struct {
    char path[4096];             // the checkpoint to load; "" to start fresh
    int path_in_run_dir;         // path is RUN_DIR's own
    char parent[CKPT_NAME_MAX];  // what this run's first save records as its parent: path's file name, or ""
    int n_notes;                 // one line each for rank 0 to print (sm_warn): damaged checkpoints skipped,
    char notes[CKPT_MAX_NOTES][CKPT_ERR_MAX];   // look-alike names ignored, a damaged `latest`
    int n_abandoned;             // --resume PATH: the checkpoints newer than PATH (their steps), to be moved
    int *abandoned;              // to RUN_DIR/abandoned/ (ckpt_resume_free releases it)
} ckpt_resume;

// mode "auto": the checkpoint RUN_DIR/latest names, or a newer checkpoint that descends from it
// (parent by parent: a save that died between its rename and the rewrite of `latest` loses nothing),
// newest first, each verified (ckpt_verify with layout); damaged ones are skipped with a note; then, if
// `latest`'s own file is damaged, its ancestors. Only when none of those verifies, or `latest` is
// missing or damaged, the rest of RUN_DIR, newest first. No
// checkpoint at all: path "" (fresh). Every one damaged: -1 (exit 2: never start fresh over them).
// mode "none": path "", or -1 when RUN_DIR holds checkpoints. Any other mode is a PATH: its header must
// read, and every checkpoint of RUN_DIR newer than it is listed in abandoned (see the note in
// ckpt_adopt_resume). Files that look like checkpoints but are not named as smallmind names them are
// ignored, each with a note. Changes nothing on disk. Collective; r is the same on every rank.
int ckpt_resolve_resume(const char *run_dir, const char *mode, ckpt_layout_fn layout, ckpt_resume *r, char *err,
                        size_t errlen);
// Carries out r once the resume is accepted: moves the abandoned branch to RUN_DIR/abandoned/ (never
// deleting; a name taken there gets .1, .2, ...), then points `latest` at r->path when it lies in
// RUN_DIR. (DESIGN.md says the abandoned branch is the checkpoints newer than PATH, not its
// descendants: at the moment of a --resume PATH, every newer checkpoint of RUN_DIR is the continuation
// being abandoned — also an earlier continuation of PATH itself, whose step numbers this run will
// write again — so all are moved, and no file is ever overwritten.) Collective.
int ckpt_adopt_resume(const char *run_dir, const ckpt_resume *r, char *err, size_t errlen);
void ckpt_resume_free(ckpt_resume *r);

// Rank-local: reads RUN_DIR/latest (never blocking: a FIFO is refused) into name. 0; CKPT_LATEST_MISSING
// when there is none; -1 when it is not a regular file or does not hold one checkpoint file name.
enum { CKPT_LATEST_MISSING = -2 };
int ckpt_read_latest(const char *run_dir, char *name, size_t cap, char *err, size_t errlen);
// Rank-local: the file name of RUN_DIR's newest checkpoint by step (not verified) into name. 1 when there
// is one; 0 when there is none, or RUN_DIR cannot be listed.
int ckpt_newest_name(const char *run_dir, char *name, size_t cap);

// One trainer per run directory: rank 0 takes an exclusive flock on RUN_DIR/.lock (which must be a
// regular file; created if missing) and writes "pid P on host H" into it; the kernel releases the lock
// when the process ends, crash or not, so it is never stale. A second trainer gets -1 with a message
// naming the holder's pid and host (exit 2). On a filesystem without flock a warning is printed and 0
// returned. RUN_DIR must exist. Collective; keep *lock for the life of the run.
typedef struct {
    int fd;
} ckpt_lock;
int ckpt_lock_run_dir(const char *run_dir, ckpt_lock *lock, char *err, size_t errlen);
void ckpt_unlock_run_dir(ckpt_lock *lock);   // tests; a trainer simply exits

enum { CKPT_FIND_NONE = 0, CKPT_FIND_FOUND = 1 };
// The newest RUN_DIR/ckpt_*.h5 (by step) that verifies, for `--resume auto`.
//   CKPT_FIND_FOUND: its path is in path_out;
//   CKPT_FIND_NONE:  RUN_DIR holds no checkpoint at all (or does not exist): start fresh;
//   -1:              every checkpoint is damaged (n_skipped > 0), or RUN_DIR cannot be read.
// The damaged ones met before (newest first) are listed in skipped[0..*n_skipped) (up to
// max_skipped; skipped may be NULL). `latest` is not consulted: a save that died after its
// rename but before rewriting `latest` left a complete, newer checkpoint.
int ckpt_find_latest(const char *run_dir, char *path_out, size_t path_len, ckpt_skipped *skipped, int max_skipped,
                     int *n_skipped, char *err, size_t errlen);

// Multi-node runs (issue 14): every rank must see RUN_DIR as the same directory, or checkpoints
// written by one node cannot be resumed by another. Rank 0 writes RUN_DIR/.shared-check-<token>
// (a fresh 64-bit token as text, fsynced), every rank reads it back, rank 0 removes it. RUN_DIR
// must exist. Returns 0, or -1 on every rank with a message naming the lowest rank that does not
// see the token and its node (MPI_Get_processor_name). Collective.
int ckpt_check_shared_dir(const char *run_dir, char *err, size_t errlen);

// RUN_DIR/ckpt_%08d.h5
void ckpt_path(char *out, size_t cap, const char *run_dir, int step);
// "ckpt_%08d.h5": a checkpoint's file name
void ckpt_name(char *out, size_t cap, int step);
// The one parser of checkpoint file names (no directory): CKPT_NAME_CKPT for a name exactly as
// ckpt_name writes it, CKPT_NAME_TMP for a save's temporary (that name + ".tmp"), *step set for both;
// CKPT_NAME_OTHER for a name that looks like a checkpoint ("ckpt_..." or "*.h5") but is neither
// (ckpt_5.h5, ckpt_00000005.h5.bak: ignored, with a note); else CKPT_NAME_NONE.
enum { CKPT_NAME_NONE = 0, CKPT_NAME_CKPT = 1, CKPT_NAME_TMP = 2, CKPT_NAME_OTHER = 3 };
int ckpt_name_parse(const char *name, int *step);
