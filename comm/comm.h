// comm.h — MPI for smallmind: initialisation, topology, fatal-error abort, small collectives.
// Knows nothing of GPT: it takes flat buffers.
#pragma once
#include <stddef.h>
#include <stdint.h>

// MPI_CHECK(call): with MPI_ERRORS_RETURN set by comm_init, a failed MPI call ends the job
// (MPI_Abort through sm_fatal) with MPI's message and the call site. Needs <mpi.h>.
#define MPI_CHECK(call)                                              \
    do {                                                             \
        int mpi_rc_ = (call);                                        \
        if (mpi_rc_ != MPI_SUCCESS) comm_check_failed(mpi_rc_, #call, __FILE__, __LINE__); \
    } while (0)
void comm_check_failed(int mpi_rc, const char *call, const char *file, int line) __attribute__((noreturn));

typedef struct {
    int rank, world_size;        // MPI_COMM_WORLD
    int local_rank, local_size;  // within the node (MPI_COMM_TYPE_SHARED)
    int n_nodes;
    int n_cpus;                  // CPUs in this rank's affinity mask
    int threads;                 // OpenMP threads per rank (comm_set_threads; 0 before)
    const char *threads_from;    // where that count came from: "--threads", "OMP_NUM_THREADS", ...
} comm_topology;

// MPI_Init_thread (FUNNELED, checked), errors returned rather than fatal, topology filled in,
// sm_fatal() routed to MPI_Abort when world_size > 1. A bare `smallmind` is a singleton.
void comm_init(int *argc, char ***argv, comm_topology *topo);
void comm_finalize(void);
// Ends a deferred start-up phase (sm_usage_defer, common.h): collective. If any rank recorded a
// usage error, the lowest such rank prints it (once), every rank finalizes MPI and exits 2;
// otherwise returns with errors exiting at once again.
void comm_usage_agree(void);
// An error that every rank has found alike (the result of a collective): rank 0 prints it once,
// every rank finalizes MPI and exits with status. Call it on every rank.
void comm_fatal_agreed(int status, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
// OpenMP threads per rank, the one rule train and bench share (DESIGN.md): `flag` (--threads)
// when > 0, else OMP_NUM_THREADS (as libgomp reads it), else SLURM_CPUS_PER_TASK (sbatch/srun
// -c N: Slurm's CPUs for each task), else the CPUs in this rank's affinity mask. Calls
// omp_set_num_threads, records the count and its source in topo and returns the count.
// Errors: a SLURM_CPUS_PER_TASK that is not an integer in 1..1024 exits 2, naming it.
int comm_set_threads(comm_topology *topo, int flag);
// Prints the topology line(s) on rank 0 and warns when threads of a rank share a core, and (rank
// 0) when the ranks of a node together run more threads than the CPUs they may use (the union
// of their affinity masks; e.g. srun -n 2 without -c on a 2-CPU node, each rank taking both).
// Collective.
void comm_print_topology(const comm_topology *topo, int threads);

// Collectives over MPI_COMM_WORLD; every rank must call them.
void comm_barrier(void);
void comm_bcast_bytes(void *buf, size_t n_bytes, int root);
double comm_allreduce_sum_double(double x);
int comm_allreduce_max_int(int x);
// In-place sum over ranks of n doubles (blocking).
void comm_allreduce_sum_doubles(double *x, size_t n);
// 1 on every rank if all ranks passed the same 64-bit value, else 0
int comm_all_equal_u64(uint64_t x);
// In-place sum over ranks of a float buffer, divided by world size (blocking, in chunks
// of at most 4 Mi floats so Open MPI's temporaries stay below glibc's mmap threshold).
void comm_allreduce_mean_floats(float *buf, size_t n);

// ---- bucketed gradient synchronisation, overlapped with backward ---------------------------
// The caller describes its flat gradient arena as segments in the order they become final
// (groups 0, 1, ... are announced in that order). The element stream in that order is cut
// into buckets of ~bucket_mb; a bucket's non-blocking reduction starts as soon as the group
// of its last element is ready. A bucket's pieces are taken in increasing flat offset (split at
// ZeRO slice boundaries), so that with zero=1 a reduce-scatter with counts that follow the
// slices delivers each rank the reduced values of the contiguous slice it owns. A segment of
// at least 1/16 of a bucket (a weight matrix) gets buckets of its own, which are one range of
// the arena and are reduced where they lie; the small segments (biases, LayerNorm) share
// buckets that are packed into a staging buffer and copied back. Gradients are SUMMED over ranks (scale the loss by
// 1/world beforehand to average). No allocation after init.
typedef struct {
    size_t offset, n;   // in floats, in the gradient arena
    int group;          // announced ready in increasing group order
} comm_segment;

typedef struct {
    size_t flat, n, stage;   // arena offset, length, offset in the staging buffer
} comm_piece;

typedef struct {
    int first_piece, n_pieces;
    size_t stage_lo, n;       // its range of the staging buffer (offsets within it also when contiguous)
    int contiguous;           // its pieces are one range of the arena: reduced from there, never staged
    int ready_group;          // may start once this group is ready
    int *recvcounts;          // zero=1: per-rank counts (world)
    size_t own_lo, own_n;     // zero=1: this rank's part within the bucket (stage offsets)
    size_t recv_lo;           // zero=1: where that part lands in the receive buffer
    int started, done;
} comm_bucket;

typedef struct {
    float *grads;
    size_t n_floats;          // length of the arena
    int zero, world, rank;
    size_t slice_lo, slice_hi;   // this rank's ZeRO slice of the arena (zero=0: 0..n_floats)
    size_t slice_len;            // ceil(n_floats / world)
    comm_piece *pieces;
    int n_pieces;
    comm_bucket *buckets;
    int n_buckets;
    void *requests;           // MPI_Request[n_buckets]
    float *stage;             // staging buffer (all buckets)
    float *recv;              // zero=1: reduce-scatter results for this rank
    int next_group;           // groups announced so far
    int in_flight;            // buckets started and not yet finished
    int *gather_counts, *gather_displs;   // zero=1: parameter allgather
    int *completed;           // indices from MPI_Testsome / MPI_Waitsome (n_buckets)
    double (*piece_fn)(const float *x, size_t n);   // see comm_gradsync_set_piece_fn
    double *bucket_total;     // piece_fn summed over each bucket's owned pieces (n_buckets)
    // figures of the last sync
    double t_first_start, t_wait_start, t_end;
} comm_gradsync;

// Figures of the last sync, for logs and the bench: the trainer reads them here, never from the
// struct's fields.
typedef struct {
    int n_buckets;
    double wait_ms;       // blocked in comm_gradsync_wait (the exposed part)
    double span_ms;       // first bucket started .. last bucket finished
    double hidden_frac;   // 1 - wait/span: the share of the reductions hidden behind backward
} comm_gradsync_stats;

void comm_gradsync_init(comm_gradsync *s, float *grads, size_t n_floats, const comm_segment *segs, int n_segs,
                        double bucket_mb, int zero);
void comm_gradsync_free(comm_gradsync *s);
// A new step: no bucket started, no group ready.
void comm_gradsync_begin(comm_gradsync *s);
// Group g (the next in order) is final: start every bucket it completes, and give MPI a
// chance to progress those in flight.
void comm_gradsync_ready(comm_gradsync *s, int group);
// Gives MPI a chance to progress the buckets in flight and finishes those complete (nothing
// when none is in flight): call it between the ops of backward, so the reductions advance
// while backward computes (Open MPI progresses them only inside MPI calls).
void comm_gradsync_progress(comm_gradsync *s);
// Announces any remaining groups, waits for every bucket and unpacks the reduced sums into
// the arena (zero=1: only this rank's slice is valid afterwards).
void comm_gradsync_wait(comm_gradsync *s);
// Optional: fn(x, n) runs on every piece of the arena this rank owns (zero=1: its slice) as soon
// as the piece's values are final: at ready time on a single rank, else when its bucket's
// reduction completes (during backward's ready calls, or while the wait waits for the others),
// so it reads them while they are still in cache. comm_gradsync_total() is the sum of the
// results, per bucket in piece order, then over buckets in order: independent of completion
// order. The trainer passes the sum of squares for the global-norm clip.
void comm_gradsync_set_piece_fn(comm_gradsync *s, double (*fn)(const float *x, size_t n));
double comm_gradsync_total(const comm_gradsync *s);   // after comm_gradsync_wait
comm_gradsync_stats comm_gradsync_figures(const comm_gradsync *s);
// This rank's slice [*lo, *hi) of the arena (floats): the range it owns the reduced values of and
// updates (zero=0: the whole arena).
void comm_gradsync_slice(const comm_gradsync *s, size_t *lo, size_t *hi);
// zero=1: every rank contributes its slice of params (same layout as the gradient arena);
// afterwards every rank holds all of them.
void comm_allgather_slices(comm_gradsync *s, float *params);
// The same for a bf16 copy of params (uint16 elements at the same element offsets): half the bytes.
void comm_allgather_slices_bf16(comm_gradsync *s, uint16_t *params_bf16);
