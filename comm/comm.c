// comm.c — MPI initialisation, topology discovery, abort hook and small collectives.
#include "comm.h"

#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <mpi.h>
#include <omp.h>
#include <sched.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

void comm_check_failed(int mpi_rc, const char *call, const char *file, int line) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(mpi_rc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "MPI error %d", mpi_rc);
    sm_fatal(SM_EXIT_RUNTIME, "%s failed: %s (%s:%d)", call, msg, file, line);
}

// The smallest address-space limit (ulimit -v) a rank starts under, bytes.
#define COMM_MIN_ADDRESS_SPACE (256ull << 20)

static void abort_all(int exit_status) { MPI_Abort(MPI_COMM_WORLD, exit_status); }

void comm_init(int *argc, char ***argv, comm_topology *topo) {
    // Open MPI's non-blocking allreduce (coll/libnbc) picks a binomial tree for in-place buffers
    // and for fewer than 4 ranks: every rank sends and reduces the whole bucket. The ring
    // (reduce-scatter, then allgather) moves 2(p-1)/p of it: 8 buckets of 8 MiB on 2 ranks here,
    // 75 -> 26 ms. Set before MPI_Init, which reads it; a value the user set is kept.
    SM_CHECK(setenv("OMPI_MCA_coll_libnbc_iallreduce_algorithm", "1", 0) == 0, "setenv failed");
    // A process started without mpirun or srun is an MPI singleton, and Open MPI 4 forks an orted
    // daemon for it (to allow MPI_Comm_spawn, which smallmind never calls). Under a tight ulimit
    // (-v, -f) that daemon or its PMIx shared memory fails inside MPI_Init: 15-43 lines of Open MPI
    // text and a segfault, no line of ours. Isolated, the singleton starts no daemon, and what a limit
    // stops is then our own one-line error. Ignored by mpirun/srun launches (not a singleton).
    SM_CHECK(setenv("OMPI_MCA_ess_singleton_isolated", "1", 0) == 0, "setenv failed");
#ifdef __GLIBC__
    // Each non-blocking allreduce mallocs a temporary as large as its bucket and frees it on
    // completion. With many buckets in flight glibc's heap grows by all of them and is trimmed
    // back at the end, so every step faults the pages in again (~12 us each here): 62 buckets
    // of 8 MiB (124M parameters) reduced at 0.6-0.9 GB/s. Keeping freed memory (no trim, and
    // no mmap below glibc's largest threshold, 32 MiB) gives 2.2-2.7 GB/s from the second step.
    // The user's MALLOC_* settings win. Advisory: an allocator that replaces glibc's (ASan's)
    // ignores it and returns 0, which is not an error.
    if (!getenv("MALLOC_TRIM_THRESHOLD_")) (void)mallopt(M_TRIM_THRESHOLD, INT_MAX);
    if (!getenv("MALLOC_MMAP_THRESHOLD_")) (void)mallopt(M_MMAP_THRESHOLD, 32 << 20);
#endif
    // Below ~50 MB of address space Open MPI segfaults inside MPI_Init as its components fail to
    // map (measured here: 30 and 45 MB segfault, 60 MB and up start). Refused here, before MPI, with margin.
    struct rlimit as;
    if (getrlimit(RLIMIT_AS, &as) == 0 && as.rlim_cur != RLIM_INFINITY && as.rlim_cur < COMM_MIN_ADDRESS_SPACE)
        sm_fatal(SM_EXIT_USAGE, "the address-space limit (ulimit -v) is %llu KiB; smallmind needs at least %llu KiB "
                 "(Open MPI segfaults in MPI_Init below ~50 MB)", (unsigned long long)as.rlim_cur / 1024,
                 (unsigned long long)COMM_MIN_ADDRESS_SPACE / 1024);
    int provided = 0;
    MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
    MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    memset(topo, 0, sizeof *topo);
    MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &topo->rank));
    MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &topo->world_size));
    sm_set_log_rank(topo->rank, topo->world_size);
    if (topo->world_size > 1) sm_set_abort_hook(abort_all);
    if (provided < MPI_THREAD_FUNNELED)
        sm_fatal(SM_EXIT_RUNTIME, "MPI provides thread level %d, smallmind needs MPI_THREAD_FUNNELED", provided);

    MPI_Comm node;
    MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, topo->rank, MPI_INFO_NULL, &node));
    MPI_CHECK(MPI_Comm_rank(node, &topo->local_rank));
    MPI_CHECK(MPI_Comm_size(node, &topo->local_size));
    MPI_CHECK(MPI_Comm_free(&node));
    int leader = topo->local_rank == 0;
    MPI_CHECK(MPI_Allreduce(&leader, &topo->n_nodes, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD));

    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) CPU_SET(0, &set);
    topo->n_cpus = CPU_COUNT(&set);
    // the node's CPUs: the union of its ranks' masks, and the sum of their sizes (> the union when they overlap)
    enum { MASK_WORDS = sizeof(cpu_set_t) / sizeof(unsigned long) };
    unsigned long mask[MASK_WORDS], node_mask[MASK_WORDS];
    memcpy(mask, &set, sizeof mask);
    MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, topo->rank, MPI_INFO_NULL, &node));
    MPI_CHECK(MPI_Allreduce(mask, node_mask, MASK_WORDS, MPI_UNSIGNED_LONG, MPI_BOR, node));
    MPI_CHECK(MPI_Allreduce(&topo->n_cpus, &topo->node_cpus_sum, 1, MPI_INT, MPI_SUM, node));
    MPI_CHECK(MPI_Comm_free(&node));
    for (int w = 0; w < MASK_WORDS; w++) topo->node_cpus += __builtin_popcountl(node_mask[w]);
}

void comm_finalize(void) { MPI_Finalize(); }

void comm_fatal_agreed(int status, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (sm_log_rank() == 0) sm_usage_print(msg);
    fflush(stdout);
    MPI_Finalize();
    exit(status);
}

void comm_usage_agree(void) {
    sm_usage_defer(NULL);
    const char *msg = sm_usage_deferred();
    int rank, world, first;
    MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &world));
    int mine = msg ? rank : world;
    MPI_CHECK(MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD));
    if (first == world) return;
    if (rank == first) sm_usage_print(msg);
    MPI_Finalize();
    exit(SM_EXIT_USAGE);
}
// --- threads per rank and the topology line (issue 14: Slurm) ---------------------------------
// The default thread count of a rank: the CPUs of its affinity mask, or, when the node's ranks
// share CPUs (mpirun --bind-to none: every mask is the whole node), its part of their union, so
// that 2 ranks on 2 CPUs run 1 thread each, not 2. From comm_init's figures: no collective here.
static int default_threads(const comm_topology *topo) {
    int n = topo->n_cpus > 0 ? topo->n_cpus : 1;
    if (topo->local_size <= 1 || topo->node_cpus_sum <= topo->node_cpus) return n;   // own CPUs each
    int share = topo->node_cpus / topo->local_size;
    return share < 1 ? 1 : share < n ? share : n;
}

int comm_set_threads(comm_topology *topo, int flag) {
    const int fallback = default_threads(topo);
    int threads = flag;
    const char *from = "--threads";
    const char *omp = getenv("OMP_NUM_THREADS"), *slurm = getenv("SLURM_CPUS_PER_TASK");
    if (threads <= 0 && omp && omp[0]) {
        threads = omp_get_max_threads();   // libgomp parsed it (a list "4,2" gives its first level)
        from = "OMP_NUM_THREADS";
    }
    if (threads <= 0 && slurm && slurm[0]) {
        // sbatch/srun -c N: Slurm reserved N CPUs for each task; without this each rank would
        // take every CPU of its mask (all of the node's under task/none), N ranks x all CPUs
        char *end = NULL;
        errno = 0;
        long n = strtol(slurm, &end, 10);
        if (errno != 0 || end == slurm || *end != '\0' || n < 1 || n > 1024)
            sm_fatal(SM_EXIT_USAGE, "SLURM_CPUS_PER_TASK='%s' is not a thread count in 1..1024 (environment)", slurm);
        threads = (int)n;
        from = "SLURM_CPUS_PER_TASK";
    }
    if (threads <= 0) {
        threads = fallback;
        from = threads < topo->n_cpus ? "the node's CPUs shared by its ranks" : "the CPUs this rank may use";
    }
    omp_set_num_threads(threads);
    topo->threads = threads;
    topo->threads_from = from;
    return threads;
}

// What each rank tells rank 0 for the topology lines.
typedef struct {
    char cpus[256];     // "0,1"
    char host[64];      // MPI_Get_processor_name, cut
    int node_leader;    // local rank 0: reports its node
    int node_ranks, node_threads, node_cpus;   // the node's ranks, their threads summed, the union of their masks
} topo_report;

void comm_print_topology(const comm_topology *topo, int threads) {
    cpu_set_t set;
    CPU_ZERO(&set);
    topo_report me;
    memset(&me, 0, sizeof me);
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        size_t len = 0;
        for (int c = 0; c < CPU_SETSIZE && len + 8 < sizeof me.cpus; c++)
            if (CPU_ISSET(c, &set)) len += (size_t)snprintf(me.cpus + len, sizeof me.cpus - len, len ? ",%d" : "%d", c);
    }
    char host[MPI_MAX_PROCESSOR_NAME];
    int host_len = 0;
    MPI_CHECK(MPI_Get_processor_name(host, &host_len));
    snprintf(me.host, sizeof me.host, "%.*s", (int)sizeof me.host - 1, host);

    // the node's ranks together: threads summed, CPUs = the union of their affinity masks
    MPI_Comm node;
    MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, topo->rank, MPI_INFO_NULL, &node));
    enum { MASK_WORDS = sizeof(cpu_set_t) / sizeof(unsigned long) };
    unsigned long mask[MASK_WORDS], node_mask[MASK_WORDS];
    memcpy(mask, &set, sizeof mask);
    MPI_CHECK(MPI_Allreduce(mask, node_mask, MASK_WORDS, MPI_UNSIGNED_LONG, MPI_BOR, node));
    MPI_CHECK(MPI_Allreduce(&threads, &me.node_threads, 1, MPI_INT, MPI_SUM, node));
    MPI_CHECK(MPI_Comm_free(&node));
    for (int w = 0; w < MASK_WORDS; w++) me.node_cpus += __builtin_popcountl(node_mask[w]);
    me.node_leader = topo->local_rank == 0;
    me.node_ranks = topo->local_size;

    // gather every rank's report on rank 0 so the lines show them all
    topo_report *all = NULL;
    if (topo->rank == 0) all = sm_malloc(sizeof *all * (size_t)topo->world_size);
    MPI_CHECK(MPI_Gather(&me, (int)sizeof me, MPI_BYTE, all, (int)sizeof me, MPI_BYTE, 0, MPI_COMM_WORLD));
    if (topo->rank == 0) {
        printf("topology: %d rank%s on %d node%s (%d per node), %d OpenMP thread%s per rank (%s)\n", topo->world_size,
               topo->world_size > 1 ? "s" : "", topo->n_nodes, topo->n_nodes > 1 ? "s" : "", topo->local_size,
               threads, threads > 1 ? "s" : "", topo->threads_from ? topo->threads_from : "set by the caller");
        for (int r = 0; r < topo->world_size; r++)
            printf("  rank %d on %s may use CPUs {%s}\n", r, all[r].host, all[r].cpus);
        fflush(stdout);
        for (int r = 0; r < topo->world_size; r++)
            if (all[r].node_leader && all[r].node_threads > all[r].node_cpus)
                sm_warn("node %s: its %d rank%s run %d OpenMP threads in all on %d CPU%s: give each rank fewer threads "
                        "(--threads, OMP_NUM_THREADS, or Slurm's -c / --cpus-per-task) or run fewer ranks per node",
                        all[r].host, all[r].node_ranks, all[r].node_ranks > 1 ? "s" : "", all[r].node_threads,
                        all[r].node_cpus, all[r].node_cpus > 1 ? "s" : "");
        sm_free(all);
    }
    if (threads > topo->n_cpus)
        sm_warn("%d OpenMP threads share %d CPU%s on this rank (mpirun binds each rank to one core by default: "
                "use --bind-to none or --map-by slot:PE=N)", threads, topo->n_cpus, topo->n_cpus > 1 ? "s" : "");
}

void comm_barrier(void) { MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD)); }

void comm_bcast_bytes(void *buf, size_t n_bytes, int root) {
    char *p = buf;
    while (n_bytes > 0) {   // MPI counts are int: send in chunks of at most 1 GiB
        int chunk = n_bytes > (1u << 30) ? (1 << 30) : (int)n_bytes;
        MPI_CHECK(MPI_Bcast(p, chunk, MPI_BYTE, root, MPI_COMM_WORLD));
        p += chunk;
        n_bytes -= (size_t)chunk;
    }
}

double comm_allreduce_sum_double(double x) {
    double out = 0.0;
    MPI_CHECK(MPI_Allreduce(&x, &out, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
    return out;
}

void comm_allreduce_sum_doubles(double *x, size_t n) {
    // in pieces whose count fits an int
    for (size_t at = 0; at < n; at += (size_t)1 << 26) {
        size_t k = n - at < ((size_t)1 << 26) ? n - at : (size_t)1 << 26;
        MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, x + at, (int)k, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
    }
}

int comm_allreduce_max_int(int x) {
    int out = 0;
    MPI_CHECK(MPI_Allreduce(&x, &out, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
    return out;
}

int comm_all_equal_u64(uint64_t x) {
    uint64_t lo[2] = {x, ~x}, out[2];
    MPI_CHECK(MPI_Allreduce(lo, out, 2, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD));
    return out[0] == x && ~out[1] == x;
}

void comm_allreduce_mean_floats(float *buf, size_t n) {
    int world = 1;
    MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &world));
    if (world == 1) return;
    const size_t chunk = (size_t)1 << 22;
    for (size_t off = 0; off < n; off += chunk) {
        int count = (int)(n - off < chunk ? n - off : chunk);
        MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, buf + off, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD));
    }
    const float inv = 1.0f / (float)world;
    for (size_t i = 0; i < n; i++) buf[i] *= inv;
}
