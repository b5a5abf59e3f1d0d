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
} ckpt_attr;
extern const ckpt_attr CKPT_ATTRS[];
extern const int CKPT_N_ATTRS;
// Attribute a's value in meta as text (json: strings quoted and escaped, doubles to 17 digits).
void ckpt_attr_format(const ckpt_attr *a, const ckpt_meta *meta, int json, char *out, size_t cap);

typedef struct {
    double seconds;      // the whole call, commit included
    double io_seconds;   // save: HDF5 create..close; load: open..close
    uint64_t bytes;      // size of the checkpoint file
    uint64_t reserved;   // save: disk space reserved before writing (an upper bound of bytes)
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

// Reads every dataset of the file (the work split over the ranks), checking checksums, types
// and that /model, /optim/m and /optim/v hold the same tensors. 0 when all verify. rep may be
// NULL; when given it is filled as far as the file allows (also on failure).
int ckpt_verify(const char *path, ckpt_report *rep, char *err, size_t errlen);

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

// RUN_DIR/ckpt_%08d.h5
void ckpt_path(char *out, size_t cap, const char *run_dir, int step);
// The one parser of checkpoint file names (no directory): CKPT_NAME_CKPT for "ckpt_<digits>.h5",
// CKPT_NAME_TMP for a save's temporary "ckpt_<digits>.h5.tmp" (*step set for both), else
// CKPT_NAME_NONE.
enum { CKPT_NAME_NONE = 0, CKPT_NAME_CKPT = 1, CKPT_NAME_TMP = 2 };
int ckpt_name_parse(const char *name, int *step);
