// bench_comm.c — `smallmind bench comm`: allreduce latency and bandwidth (alpha, beta) over the
// bucket sizes the gradient sync uses, the backward timeline of real training steps, and the
// model of scaling.c that combines them: the step predicted at this run's rank count beside the
// measured one, then step time, exposed communication and efficiency at N = 2..1024 nodes.
//
// The machine this runs on may be shared, and its load changes from second to second: every
// measurement is taken in rounds, each round running one of everything (an allreduce sweep, the
// overlap probe, a real training step, backward alone), so that the figures compared were taken
// under the same conditions; each figure is the median over the rounds.
#include <getopt.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"
#include "common.h"
#include "kernels.h"
#include "bench_util.h"
#include "trainer.h"

static const char BENCH_COMM_USAGE[] =
    "usage: mpirun -np 2 --bind-to none smallmind bench comm [options]       (2 or more ranks)\n"
    "Measures MPI_Allreduce and the non-blocking MPI_Iallreduce the gradient sync uses (in place, float\n"
    "sums, on buffers out of cache; Open MPI's ring for the non-blocking one, as smallmind sets it) from\n"
    "--min-kib to --max-mib and fits t(n) = alpha + n beta over the sizes up to the bucket size (the\n"
    "model keeps MPI_Allreduce's alpha and takes the beta that gives the step's buckets MPI_Iallreduce's\n"
    "measured total, its calls all in flight at once as the sync's are); runs\n"
    "training steps of each shape (the real step, and backward alone with the times of its MPI calls);\n"
    "predicts the step at this rank count and prints it beside the measured one; then predicts step\n"
    "time, exposed communication and scaling efficiency at N = 2..--max-nodes nodes (one rank per node\n"
    "with this run's per-rank batch and threads: weak scaling) for each network and algorithm:\n"
    "  ring  2(N-1) alpha + 2(N-1)/N n beta + (N-1)/N n gamma\n"
    "  tree  ceil(log2 N) (alpha + n beta + n gamma)              (recursive doubling)\n"
    "with gamma this CPU's time per byte of the reduction's sum (measured here).\n"
    "options:\n"
    "  --shape S        small (L=4 H=4 C=256), gpt2 (L=12 H=12 C=768, 124M) or all (default all); V=50257\n"
    "  --batch B        windows per rank and step (default 4)\n"
    "  --seq T          tokens per window (default 64)\n"
    "  --steps N        measured rounds per shape, after 2 warm-up rounds (default 8)\n"
    "  --bucket-mb X    the gradient sync's bucket size in MiB (default 8, as train)\n"
    "  --min-kib K      smallest allreduce size in KiB (default 4)\n"
    "  --max-mib M      largest allreduce size in MiB (default 32)\n"
    "  --net NAME       the networks of the table: measured (this run's fit), 25gbe, ib-edr, ib-hdr or all\n"
    "                   (default all); `--net list` prints each preset, its figures and their source\n"
    "  --alpha US       a network of your own: latency in microseconds ...\n"
    "  --beta NS        ... and link time in nanoseconds per byte (1/beta = GB/s); both or neither\n"
    "  --gamma NS       the reduction's time per byte (default: measured on this CPU)\n"
    "  --cpu-share F    the share of communication time that takes the cores from backward, for the\n"
    "                   presets and --alpha/--beta (default 0: the NIC moves the data); `measured` uses\n"
    "                   the share measured in this run\n"
    "  --algo A         ring, tree or both (default both)\n"
    "  --progress P     the table's progress: calls (default: as smallmind runs, Open MPI moves a round of\n"
    "                   a non-blocking allreduce only inside an MPI call, which backward makes between its\n"
    "                   ops) or continuous (a progress thread, or a NIC that runs the collective)\n"
    "  --max-nodes N    the largest node count of the table (default 1024)\n"
    "  --threads N      OpenMP threads per rank (default: $OMP_NUM_THREADS, else the CPUs this rank may use)\n"
    "  --json           one JSON object per figure\n"
    "  --help\n"
    "Timings on a shared machine are noisy: every figure is a median over the rounds. Where other jobs\n"
    "share the cores, `mpirun --mca mpi_yield_when_idle 1` lets a rank that waits give its core up (else\n"
    "each rank spins while the other is descheduled, and the allreduce figures scatter 10x).\n";

typedef struct {
    int small, gpt2;
    int B, T, steps, threads, json, max_nodes;
    double bucket_mb, min_kib, max_mib;
    int nets;                  // bit 0: measured, bit 1+i: preset i
    double alpha_us, beta_ns;  // custom network (alpha_us < 0: none)
    double gamma_ns;           // < 0: measure
    double cpu_share;          // for the presets and the custom network
    int algos;                 // bit per scaling_algo
    int continuous;            // the table: progress without pause (else at backward's calls, as smallmind runs)
} comm_opts;

// ---------------------------------------------------------------------------------------------
// Allreduce latency and bandwidth, the reduction's cost, and how much of the cores a transfer takes

enum { MAX_SIZES = 24, MAX_SAMPLES = 4096, SCALAR_REPS = 8 };

typedef struct {
    int n_sizes, fit_sizes;        // sizes measured; the first fit_sizes (up to the bucket size) are fitted
    double bytes[MAX_SIZES];
    int reps[MAX_SIZES];           // calls per size and round
    double *samples[2][MAX_SIZES]; // seconds per call (slowest rank): 0 MPI_Allreduce, 1 MPI_Iallreduce
    int n_samples[2][MAX_SIZES];
    double t[2][MAX_SIZES];        // medians
    double alpha[2], beta[2];      // the fits over the sizes, each size one point
    double alpha_b, beta_b;        // the model's line: alpha[0], and beta matching the buckets' total
    int n_buckets;
    double t_buckets;              // the sweep's times summed over the step's buckets
    double *scalar;                // one double, MPI_Allreduce
    int n_scalar;
    double scalar_s;
    double gamma_s;
    // overlap probe: K compute chunks alone, and with an Iallreduce of probe_bytes in flight
    int probe_chunks;
    double probe_bytes;
    double *probe_alone, *probe_with;
    int n_probe;
    double cpu_share;
    // progress probe: MPI_Test calls an Iallreduce of probe_bytes needs when they are far apart
    double *tests;
    int n_tests;
    double probe_comm;             // its time alone, measured when the probe starts
    int calls_per_round;
    double median_tests;
    int n_rounds;                  // the ring's rounds at this rank count
    float *buf;                    // the cold buffer the calls rotate over
    size_t buf_floats, rot;
    float *ga, *gb, *gc;           // the probe's matrices (256 x 256)
    MPI_Request req[64];           // the sweep's non-blocking calls in flight
} ar_state;

// The next n floats of the rotating buffer: each call reduces memory no recent call touched, as
// the step's buckets are (the gradients were written long before, most out of cache)
static size_t ar_span(size_t n) { return (n + 1023) / 1024 * 1024; }
static float *ar_next(ar_state *a, size_t n) {
    if (a->rot + ar_span(n) > a->buf_floats) a->rot = 0;
    float *p = a->buf + a->rot;
    a->rot += ar_span(n);
    return p;
}
// Room for count calls of n floats in a row: calls in flight together never share memory
static void ar_batch(ar_state *a, int count, size_t n) {
    if (a->rot + (size_t)count * ar_span(n) > a->buf_floats) a->rot = 0;
}

static void ar_init(ar_state *a, const comm_opts *o) {
    memset(a, 0, sizeof *a);
    for (double kib = o->min_kib; kib * 1024.0 <= o->max_mib * 1048576.0 * 1.0001 && a->n_sizes < MAX_SIZES; kib *= 2) {
        int k = a->n_sizes++;
        a->bytes[k] = floor(kib * 1024.0 / sizeof(float)) * sizeof(float);
        // calls per size and round: 64 MiB in all (twice the L3 here) where 64 calls allow, 4 at least
        int reps = (int)ceil(64.0 * 1024.0 / kib);
        a->reps[k] = reps < 4 ? 4 : reps > 64 ? 64 : reps;
        if (a->bytes[k] <= o->bucket_mb * 1048576.0 * 1.0001) a->fit_sizes = k + 1;
        for (int b = 0; b < 2; b++) a->samples[b][k] = sm_calloc(MAX_SAMPLES, sizeof(double));
    }
    a->scalar = sm_calloc(MAX_SAMPLES, sizeof(double));
    a->probe_alone = sm_calloc(MAX_SAMPLES, sizeof(double));
    a->probe_with = sm_calloc(MAX_SAMPLES, sizeof(double));
    a->tests = sm_calloc(MAX_SAMPLES, sizeof(double));
    // zeros: sums of zeros stay zero however often a region is reduced, at the same speed. Room
    // for 96 MiB (three times the L3 here), and for each size's calls in flight together
    a->buf_floats = (size_t)(96 << 20) / sizeof(float);
    for (int k = 0; k < a->n_sizes; k++) {
        size_t need = (size_t)a->reps[k] * ar_span((size_t)(a->bytes[k] / sizeof(float)));
        if (a->buf_floats < need) a->buf_floats = need;
    }
    a->buf = sm_arena(a->buf_floats * sizeof(float));
    a->probe_bytes = o->bucket_mb * 1048576.0 < a->bytes[a->n_sizes - 1] ? o->bucket_mb * 1048576.0 : a->bytes[a->n_sizes - 1];
    a->probe_bytes = floor(a->probe_bytes / sizeof(float)) * sizeof(float);
    a->ga = sm_arena(3 * 256 * 256 * sizeof(float));
    a->gb = a->ga + 256 * 256;
    a->gc = a->gb + 256 * 256;
    for (int i = 0; i < 2 * 256 * 256; i++) a->ga[i] = 1e-3f * (float)(i % 17);
}

static void ar_free(ar_state *a) {
    for (int k = 0; k < a->n_sizes; k++)
        for (int b = 0; b < 2; b++) sm_free(a->samples[b][k]);
    sm_free(a->scalar);
    sm_free(a->probe_alone);
    sm_free(a->probe_with);
    sm_free(a->tests);
    sm_free(a->buf);
    sm_free(a->ga);
}

static void allreduce_once(float *x, int n, int nonblocking) {
    if (nonblocking) {
        MPI_Request req;
        MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, x, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &req));
        MPI_CHECK(MPI_Wait(&req, MPI_STATUS_IGNORE));
    } else {
        MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, x, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD));
    }
}

// One round of the sweep: at each size, one barrier and then reps[k] calls of each kind, the time
// per call the slowest rank's time over the count. MPI_Allreduce: back to back, one after the other
// (each call's latency). MPI_Iallreduce: all started together and then waited for, as the sync
// starts a layer's buckets, and at the end all that remain: their temporaries, one per call, then
// fall out of cache as the sync's do (60 buckets of 8 MiB in flight take 1.6x as long as one after
// the other here). A barrier before every call would also time only moments when every rank runs:
// where the cores are shared, that leaves out the stalls where one rank waits for another to be
// scheduled again, which the step does see. record = 0 for warm-up rounds.
static void ar_sweep(ar_state *a, int record) {
    double t[2 * MAX_SIZES + 1];
    int m = 0;
    for (int k = 0; k < a->n_sizes; k++)
        for (int b = 0; b < 2; b++) {
            int n = (int)(a->bytes[k] / sizeof(float));
            MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
            double t0 = sm_now_s();
            if (b == 0) {
                for (int r = 0; r < a->reps[k]; r++) allreduce_once(ar_next(a, (size_t)n), n, 0);
            } else {
                ar_batch(a, a->reps[k], (size_t)n);
                for (int r = 0; r < a->reps[k]; r++)
                    MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, ar_next(a, (size_t)n), n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD,
                                             &a->req[r]));
                MPI_CHECK(MPI_Waitall(a->reps[k], a->req, MPI_STATUSES_IGNORE));
            }
            t[m++] = (sm_now_s() - t0) / a->reps[k];
        }
    double v = 1.0, sum;
    MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
    double t0 = sm_now_s();
    for (int r = 0; r < SCALAR_REPS; r++) MPI_CHECK(MPI_Allreduce(&v, &sum, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
    t[m++] = (sm_now_s() - t0) / SCALAR_REPS;
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, t, m, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD));
    if (!record) return;
    m = 0;
    for (int k = 0; k < a->n_sizes; k++)
        for (int b = 0; b < 2; b++) {
            double x = t[m++];
            if (a->n_samples[b][k] < MAX_SAMPLES) a->samples[b][k][a->n_samples[b][k]++] = x;
        }
    if (a->n_scalar < MAX_SAMPLES) a->scalar[a->n_scalar++] = t[m];
}

// The overlap probe: the compute chunk (a 256^3 product on this rank's threads) K times alone, then
// K times with a non-blocking allreduce of probe_bytes in flight, testing it between chunks as
// backward's progress hooks do. The difference is the compute time the transfer took from the
// cores. The first call chooses K so that the chunks outlast the transfer about 4 times.
static void ar_probe(ar_state *a, int record) {
    int n = (int)(a->probe_bytes / sizeof(float));
    if (a->probe_chunks == 0) {
        double t0 = sm_now_s();
        gemm_mt(0, 0, 256, 256, 256, 1.0f, a->ga, 256, a->gb, 256, 0.0f, a->gc, 256);
        double chunk = sm_now_s() - t0;
        MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
        t0 = sm_now_s();
        allreduce_once(ar_next(a, (size_t)n), n, 1);
        double comm = sm_now_s() - t0;
        MPI_CHECK(MPI_Allreduce(&comm, &a->probe_comm, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD));
        int k = (int)(4.0 * comm / (chunk > 1e-6 ? chunk : 1e-6)) + 8;
        if (k > 4000) k = 4000;
        MPI_CHECK(MPI_Allreduce(&k, &a->probe_chunks, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
    }
    // alone, with, with, alone: each pair's difference, in both orders, so a drift of the machine's
    // load over the probe cancels
    double t[4];
    for (int q = 0; q < 4; q++) {
        int with = q == 1 || q == 2;
        MPI_Request req = MPI_REQUEST_NULL;
        MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
        double t0 = sm_now_s();
        if (with)
            MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, ar_next(a, (size_t)n), n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &req));
        for (int c = 0; c < a->probe_chunks; c++) {
            gemm_mt(0, 0, 256, 256, 256, 1.0f, a->ga, 256, a->gb, 256, 0.0f, a->gc, 256);
            if (with) {
                int done = 0;
                MPI_CHECK(MPI_Test(&req, &done, MPI_STATUS_IGNORE));
            }
        }
        t[q] = sm_now_s() - t0;
        if (with) MPI_CHECK(MPI_Wait(&req, MPI_STATUS_IGNORE));
    }
    // progress: test the request only every 3x its time alone (1 ms at least), computing between the
    // tests, and count the tests until it completes: rounds x the calls each round needs
    MPI_Request req;
    MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
    MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, ar_next(a, (size_t)n), n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &req));
    double gap = 3.0 * a->probe_comm > 1e-3 ? 3.0 * a->probe_comm : 1e-3;
    int done = 0, n_tests = 0;
    while (!done && n_tests < 64) {
        double t0 = sm_now_s();
        while (sm_now_s() - t0 < gap) gemm_mt(0, 0, 256, 256, 256, 1.0f, a->ga, 256, a->gb, 256, 0.0f, a->gc, 256);
        MPI_CHECK(MPI_Test(&req, &done, MPI_STATUS_IGNORE));
        n_tests++;
    }
    if (!done) MPI_CHECK(MPI_Wait(&req, MPI_STATUS_IGNORE));
    // the slowest rank's count: the collective is done when the last rank's part is
    double my_tests = n_tests;
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &my_tests, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD));
    if (record && a->n_tests < MAX_SAMPLES) a->tests[a->n_tests++] = my_tests;
    if (record && a->n_probe + 2 <= MAX_SAMPLES) {
        a->probe_alone[a->n_probe] = t[0];
        a->probe_with[a->n_probe++] = t[1];
        a->probe_alone[a->n_probe] = t[3];
        a->probe_with[a->n_probe++] = t[2];
    }
}

// The reduction's own cost on this CPU: s per byte of a[i] += b[i] over 8 MiB (a bucket), one
// thread, as the MPI library's sum runs inside the calling rank.
static double measure_gamma(void) {
    const size_t n = (size_t)2 << 20;
    float *a = sm_arena(n * sizeof(float)), *b = sm_arena(n * sizeof(float));
    for (size_t i = 0; i < n; i++) b[i] = 1e-7f;
    double t[15];
    for (int r = 0; r < 15; r++) {
        double t0 = sm_now_s();
        float *restrict x = a;
        const float *restrict y = b;
        for (size_t i = 0; i < n; i++) x[i] += y[i];
        __asm__ volatile("" : : "r"(a) : "memory");
        t[r] = sm_now_s() - t0;
    }
    sm_free(a);
    sm_free(b);
    return bench_median(t, 15) / (double)(n * sizeof(float));
}

// The sweep's measured time for n bytes (non-blocking), interpolated linearly in log-log between
// the sizes measured; below the smallest, its time; above the largest, its time per byte
static double sweep_time(const ar_state *a, double n) {
    if (n <= a->bytes[0]) return a->t[1][0];   // below the sweep: latency-bound
    for (int k = 1; k < a->n_sizes; k++)
        if (n <= a->bytes[k]) {
            double u = log(n / a->bytes[k - 1]) / log(a->bytes[k] / a->bytes[k - 1]);
            return exp((1 - u) * log(a->t[1][k - 1]) + u * log(a->t[1][k]));
        }
    int l = a->n_sizes - 1;
    return a->t[1][l] * n / a->bytes[l];
}

// Medians, fits, gamma and the CPU share, the same on every rank. The model's line keeps the
// latency of MPI_Allreduce's fit (alpha: one call after another, which the small sizes set; the
// non-blocking calls in flight together overlap theirs) and takes the time per byte that gives the
// step's own buckets, in sum, the time the non-blocking sweep measured at their sizes: the fit over
// the sizes weighs a 4 KiB point like an 8 MiB one, and bandwidth falls past the caches, where most
// of the step's bytes are (8 MiB buckets).
static void ar_finish(ar_state *a, const comm_opts *o, const double *bucket_bytes, int n_buckets) {
    for (int b = 0; b < 2; b++)
        for (int k = 0; k < a->n_sizes; k++) a->t[b][k] = bench_median(a->samples[b][k], a->n_samples[b][k]);
    for (int b = 0; b < 2; b++)
        if (scaling_fit(a->bytes, a->t[b], a->fit_sizes, &a->alpha[b], &a->beta[b]) != 0)
            sm_fatal(SM_EXIT_USAGE, "bench comm: the fit needs two sizes or more up to the bucket size: --min-kib %g, "
                     "--bucket-mb %g (command line)", o->min_kib, o->bucket_mb);
    // the model's line: the fit's latency, and the time per byte that gives the step's buckets, in
    // sum, the time the sweep measured at their sizes
    double t_sum = 0, n_sum = 0;
    for (int i = 0; i < n_buckets; i++) {
        t_sum += sweep_time(a, bucket_bytes[i]);
        n_sum += bucket_bytes[i];
    }
    a->n_buckets = n_buckets;
    a->t_buckets = t_sum;
    a->alpha_b = a->alpha[0] > 0 ? a->alpha[0] : 0.0;
    a->beta_b = (t_sum - n_buckets * a->alpha_b) / n_sum;
    if (a->beta_b <= 0) {   // latency above the buckets' whole time: noise; keep the time per byte
        a->alpha_b = 0.0;
        a->beta_b = t_sum / n_sum;
    }
    a->scalar_s = bench_median(a->scalar, a->n_scalar);
    a->gamma_s = o->gamma_ns >= 0 ? o->gamma_ns * 1e-9 : measure_gamma();
    MPI_CHECK(MPI_Bcast(&a->gamma_s, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD));   // rank 0's, for all
    // the share: compute time lost to the transfer / the transfer's own time at that size
    double lost[MAX_SAMPLES];
    for (int i = 0; i < a->n_probe; i++) lost[i] = a->probe_with[i] - a->probe_alone[i];
    double t_lost = bench_median(lost, a->n_probe);
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &t_lost, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
    int world;
    MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &world));
    t_lost /= world;
    double t_comm = sweep_time(a, a->probe_bytes);
    a->cpu_share = t_comm > 0 ? t_lost / t_comm : 0.0;
    // calls per round: the tests the probe needed over the ring's rounds at this rank count
    double tests = bench_median(a->tests, a->n_tests);
    a->n_rounds = scaling_rounds(SCALING_RING, world);
    a->calls_per_round = (int)lround(tests / a->n_rounds);
    if (a->calls_per_round < 1) a->calls_per_round = 1;
    a->median_tests = tests;
    if (a->cpu_share < 0) a->cpu_share = 0;
    if (a->cpu_share > 1) a->cpu_share = 1;
}

// ---------------------------------------------------------------------------------------------
// Output

static void json_begin(sm_json *j, const char *name) {
    sm_json_begin(j);
    sm_json_str(j, "name", name);
}
static void json_end(sm_json *j) {
    sm_json_end(j);
    fputs(j->buf, stdout);
}
// A comparison: our figure in ms beside the baseline's, and their ratio
static void json_compare(sm_json *j, double ms, const char *baseline, double baseline_ms) {
    sm_json_num(j, "ms", "%.6g", ms);
    sm_json_str(j, "baseline", baseline);
    sm_json_num(j, "baseline_ms", "%.6g", baseline_ms);
    sm_json_num(j, "ratio", "%.4f", baseline_ms > 0 ? ms / baseline_ms : 0.0);
}

static const char *const AR_KIND[2] = {"MPI_Allreduce", "MPI_Iallreduce"};

static void print_allreduce(const comm_opts *o, const ar_state *a, const char *shape) {
    char name[160];
    if (o->json) {
        sm_json j;
        for (int k = 0; k < a->n_sizes; k++)
            for (int b = 0; b < 2; b++) {
                snprintf(name, sizeof name, "comm %s %s %.0f B", shape, AR_KIND[b], a->bytes[k]);
                json_begin(&j, name);
                sm_json_num(&j, "bytes", "%.0f", a->bytes[k]);
                sm_json_num(&j, "gbps", "%.4g", a->bytes[k] / a->t[b][k] * 1e-9);
                sm_json_int(&j, "fitted", k < a->fit_sizes);
                json_compare(&j, a->t[b][k] * 1e3, "fit", (a->alpha[b] + a->beta[b] * a->bytes[k]) * 1e3);
                json_end(&j);
            }
        for (int b = 0; b < 2; b++) {
            snprintf(name, sizeof name, "comm %s %s fit", shape, AR_KIND[b]);
            json_begin(&j, name);
            sm_json_num(&j, "alpha_us", "%.5g", a->alpha[b] * 1e6);
            sm_json_num(&j, "beta_ns_per_byte", "%.5g", a->beta[b] * 1e9);
            sm_json_num(&j, "gbps", "%.4g", 1e-9 / a->beta[b]);
            sm_json_num(&j, "fit_max_bytes", "%.0f", a->bytes[a->fit_sizes - 1]);
            sm_json_num(&j, "ms", "%.6g", a->alpha[b] * 1e3);
            json_end(&j);
        }
        snprintf(name, sizeof name, "comm %s model line", shape);
        json_begin(&j, name);
        sm_json_num(&j, "alpha_us", "%.5g", a->alpha_b * 1e6);
        sm_json_num(&j, "beta_ns_per_byte", "%.5g", a->beta_b * 1e9);
        sm_json_num(&j, "gbps", "%.4g", 1e-9 / a->beta_b);
        sm_json_num(&j, "ms", "%.6g", a->alpha_b * 1e3);
        json_end(&j);
        snprintf(name, sizeof name, "comm %s reduction sum (a += b, 8 MiB, one thread)", shape);
        json_begin(&j, name);
        sm_json_num(&j, "gamma_ns_per_byte", "%.5g", a->gamma_s * 1e9);
        sm_json_num(&j, "gbps", "%.4g", 1e-9 / a->gamma_s);
        sm_json_num(&j, "ms", "%.6g", a->gamma_s * 8388608.0 * 1e3);
        json_end(&j);
        snprintf(name, sizeof name, "comm %s MPI_Allreduce 8 B", shape);
        json_begin(&j, name);
        sm_json_num(&j, "ms", "%.6g", a->scalar_s * 1e3);
        json_end(&j);
        snprintf(name, sizeof name, "comm %s progress", shape);
        json_begin(&j, name);
        sm_json_num(&j, "tests", "%.4g", a->median_tests);
        sm_json_int(&j, "calls_per_round", a->calls_per_round);
        sm_json_num(&j, "ms", "%.6g", a->probe_comm * 1e3);
        json_end(&j);
        snprintf(name, sizeof name, "comm %s cpu share", shape);
        json_begin(&j, name);
        sm_json_num(&j, "frac", "%.4f", a->cpu_share);
        sm_json_num(&j, "probe_bytes", "%.0f", a->probe_bytes);
        sm_json_num(&j, "ms", "%.6g", sweep_time(a, a->probe_bytes) * 1e3);
        json_end(&j);
        return;
    }
    printf("allreduce, in place, float sum, buffers out of cache, 4-64 calls per size and round (64 MiB from 1 MiB up),\n"
           "MPI_Allreduce one after the other, MPI_Iallreduce all in flight at once (the slowest rank's time / calls),\n"
           "median over %d rounds; fits over %.0f..%.0f B (up to the bucket size):\n",
           a->n_samples[1][a->n_sizes - 1], a->bytes[0], a->bytes[a->fit_sizes - 1]);
    printf("  %10s  %13s %8s  %13s %8s  %10s\n", "bytes", "Allreduce ms", "GB/s", "Iallreduce ms", "GB/s", "fit ms");
    for (int k = 0; k < a->n_sizes; k++)
        printf("  %10.0f  %13.4f %8.2f  %13.4f %8.2f  %10.4f%s\n", a->bytes[k], a->t[0][k] * 1e3,
               a->bytes[k] / a->t[0][k] * 1e-9, a->t[1][k] * 1e3, a->bytes[k] / a->t[1][k] * 1e-9,
               (a->alpha_b + a->beta_b * a->bytes[k]) * 1e3, k < a->fit_sizes ? "" : "   (beyond the buckets)");
    for (int b = 0; b < 2; b++)
        printf("  fit %-15s over the sizes, t(n) = alpha + n beta: alpha %8.2f us, beta %.4f ns/B (%.2f GB/s)\n",
               AR_KIND[b], a->alpha[b] * 1e6, a->beta[b] * 1e9, 1e-9 / a->beta[b]);
    printf("  the model's line (the column above): MPI_Allreduce's alpha, and beta %.4f ns/B (%.2f GB/s) that gives\n"
           "  the step's %d buckets MPI_Iallreduce's total time at their sizes, %.2f ms\n", a->beta_b * 1e9, 1e-9 / a->beta_b,
           a->n_buckets, a->t_buckets * 1e3);
    printf("  one double (MPI_Allreduce) %.1f us; the sum on this CPU (a += b, 8 MiB, one thread): gamma %.4f ns/B "
           "(%.1f GB/s)\n", a->scalar_s * 1e6, a->gamma_s * 1e9, 1e-9 / a->gamma_s);
    printf("  cpu share %.2f: a %.0f-byte Iallreduce in flight took %.2f ms from %d compute chunks (256^3 products, "
           "MPI_Test between them)\n", a->cpu_share, a->probe_bytes,
           a->cpu_share * sweep_time(a, a->probe_bytes) * 1e3, a->probe_chunks);
    printf("  progress: the same Iallreduce, tested every %.1f ms, needed %.1f tests for the ring's %d rounds: %d MPI "
           "call%s a round\n", (3.0 * a->probe_comm > 1e-3 ? 3.0 * a->probe_comm : 1e-3) * 1e3, a->median_tests,
           a->n_rounds, a->calls_per_round, a->calls_per_round > 1 ? "s" : "");
}

// ---------------------------------------------------------------------------------------------
// Training steps: the real step (with the sync), and backward alone with its per-layer times

// backward's MPI calls, as the sync's hooks would make them: between its large ops (progress) and
// at each layer's end (layer_done)
typedef struct {
    double *t_calls;   // (max_calls) when each came
    int *layer_call;   // (L) the index of layer l's layer_done among them
    int n_calls, max_calls;
} timeline;

static void tl_call(timeline *tl) {
    if (tl->n_calls < tl->max_calls) tl->t_calls[tl->n_calls] = sm_now_s();
    tl->n_calls++;
}
static void tl_progress(void *ctx) { tl_call(ctx); }
static void tl_layer_done(void *ctx, int layer) {
    timeline *tl = ctx;
    tl->layer_call[layer] = tl->n_calls;
    tl_call(tl);
}

typedef struct {
    // medians over the rounds, averaged over the ranks (seconds)
    double step, fwd, bwd, wait, span, opt;   // the real train_step
    double c_fwd, c_bwd, straggle;            // alone: forward + loss, backward; the wait for the last rank
    double sync_alone;                        // the gradient sync with nothing to overlap
    double norm;                              // sum_squares over the gradient arena (the clip's norm)
    double straggle_step;                     // the real step's wait for the last rank's backward
    double *group_ready;                      // (L+1): seconds into backward when group g is final
    int n_calls;
    double *calls;                            // (n_calls): seconds into backward of each MPI call
    int n_buckets;
    double *bucket_bytes, *bucket_ready;      // (n_buckets), in start order
    size_t n_params;
    double grad_bytes;
} step_figures;

static const struct {
    const char *name;
    int L, H, C;
} SHAPES[2] = {{"small", 4, 4, 256}, {"gpt2-124M", 12, 12, 768}};
enum { BENCH_V = 50257, BENCH_CONTEXT = 1024 };

// Runs the shape's rounds: the allreduce sweep, the overlap probe, one real step and one backward
// alone per round. Collective.
static void measure_shape(const comm_opts *o, int shape, const comm_topology *topo, ar_state *ar, step_figures *f) {
    const int L = SHAPES[shape].L;
    sm_model_config cfg = {.n_layer = L, .n_head = SHAPES[shape].H, .n_embd = SHAPES[shape].C,
                           .max_seq_len = BENCH_CONTEXT, .vocab_size = BENCH_V, .tokenizer = "gpt2"};
    char err[256];
    if (gpt2_config_validate(&cfg, err, sizeof err) != 0) sm_fatal(SM_EXIT_USAGE, "bench comm: %s (command line)", err);
    trainer tr;
    trainer_build(&tr, &cfg, o->B, o->T, 1, o->bucket_mb, 0, 1337, topo);
    const int warmup = 2, steps = o->steps, world = topo->world_size;
    // random tokens: the windows of every step of every rank, real and backward-only
    const size_t n_windows = (size_t)(warmup + 2 * steps) * o->B * world;
    shard data = {.n_tokens = n_windows * o->T + 1, .vocab_size = BENCH_V};
    snprintf(data.path, sizeof data.path, "(random tokens)");
    data.tokens = sm_malloc(data.n_tokens * sizeof(uint16_t));
    sm_rng rng;
    sm_rng_seed(&rng, 42, 0);
    for (size_t i = 0; i < data.n_tokens; i++) data.tokens[i] = (uint16_t)sm_rng_below(&rng, BENCH_V);
    loader ld;
    if (loader_init(&ld, &data, o->T, 0, 0, err, sizeof err) != 0) sm_fatal(SM_EXIT_RUNTIME, "bench comm: %s", err);
    const adamw_hparams hp = {.lr = 1e-4f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};

    // backward's calls: 5 per layer today (4 between its ops, 1 at its end); room for more
    const int max_calls = 16 * L;
    timeline tl = {sm_calloc((size_t)max_calls + 1, sizeof(double)), sm_calloc((size_t)L, sizeof(int)), 0, max_calls};
    // per round: 6 figures of the real step; forward, backward and the wait for the last rank alone;
    // the sync alone; the norm pass; the real step's wait for the last rank; then the times of
    // backward's calls
    const int fixed = 12;
    double *x = NULL;
    int per = 0, n_calls = -1;
    uint64_t cursor = 0;
    int t = 1;
    for (int k = -warmup; k < steps; k++) {
        ar_sweep(ar, k >= 0);
        ar_probe(ar, k >= 0);
        double fig[12];
        // the real step and backward alone, in turn first, so that neither always follows the sweep
        for (int half = 0; half < 2; half++) {
            if ((half == 0) == (k % 2 == 0)) {
                // the real step, as train runs it
                comm_barrier();
                double t0 = sm_now_s();
                train_step_stats st;
                train_step(&tr, &ld, cursor, &hp, 1.0f, t++, &st);
                fig[0] = sm_now_s() - t0;
                fig[1] = st.fwd_ms * 1e-3;
                fig[2] = st.bwd_ms * 1e-3;
                fig[3] = st.comm.wait_ms * 1e-3;
                fig[4] = st.comm.span_ms * 1e-3;
                fig[5] = st.opt_ms * 1e-3;
                // the wait for the last rank in this step: how much later than this rank's the last
                // rank's backward ended (the ranks started together, after the barrier)
                double mine = (st.fwd_ms + st.bwd_ms) * 1e-3, last = mine;
                MPI_CHECK(MPI_Allreduce(&mine, &last, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD));
                fig[11] = last - mine;
                cursor += (uint64_t)o->B * world;
                continue;
            }
            // backward alone: the same computation with hooks that only take the time (no sync), then
            // a barrier: the first rank to finish waits for the last, as it would in the real step
            loader_fill(&ld, cursor + (uint64_t)topo->rank * o->B, o->B, tr.inputs, tr.targets);
            cursor += (uint64_t)o->B * world;
            comm_barrier();
            double c0 = sm_now_s();
            gpt2_zero_grad(&tr.st);
            gpt2_forward(&tr.w, &tr.st.acts, tr.inputs, o->B, o->T);
            gpt2_loss_backward(&cfg, &tr.st.acts, tr.targets, 1.0f / ((float)o->B * o->T * world));
            double c1 = sm_now_s();
            tl.n_calls = 0;
            tr.st.hooks = (gpt2_grad_hooks){tl_layer_done, tl_progress, &tl};
            gpt2_backward(&tr.w, &tr.st, tr.inputs);
            double c2 = sm_now_s();
            tr.st.hooks = (gpt2_grad_hooks){0};
            comm_barrier();
            double c3 = sm_now_s();
            // the clip's norm pass over the gradients (the sync runs it on each bucket once reduced)
            double n0 = sm_now_s();
            volatile double norm_sq = sum_squares(sm_table_f32(&tr.st.grads), sm_table_n_f32(&tr.st.grads));
            (void)norm_sq;
            double n1 = sm_now_s();
            // the whole sync alone, every bucket started at once as the wait does (nothing overlapped)
            comm_gradsync_begin(&tr.sync);
            comm_barrier();
            double s0 = sm_now_s();
            comm_gradsync_wait(&tr.sync);
            double s1 = sm_now_s();
            fig[6] = c1 - c0;
            fig[7] = c2 - c1;
            fig[8] = c3 - c2;
            fig[9] = s1 - s0;
            fig[10] = n1 - n0;
            SM_CHECK(tl.n_calls <= max_calls && (n_calls < 0 || tl.n_calls == n_calls),
                     "bench comm: backward made %d MPI calls (expected %d, at most %d)", tl.n_calls, n_calls, max_calls);
            if (n_calls < 0) {
                n_calls = tl.n_calls;
                per = fixed + n_calls + 1;
                x = sm_calloc((size_t)steps * (size_t)per, sizeof(double));
            }
            for (int c = 0; c < n_calls; c++) tl.t_calls[c] -= c1;
            tl.t_calls[n_calls] = c2 - c1;   // the end of backward: group L (wte, wpe) is ready then
        }
        if (k < 0) continue;
        double *r = x + (size_t)k * per;
        memcpy(r, fig, sizeof fig);
        memcpy(r + fixed, tl.t_calls, (size_t)(n_calls + 1) * sizeof(double));
    }
    // medians over the rounds, figure by figure, then the mean over the ranks
    double *med = sm_calloc((size_t)per, sizeof(double)), *col = sm_calloc((size_t)steps, sizeof(double));
    for (int i = 0; i < per; i++) {
        for (int k = 0; k < steps; k++) col[k] = x[(size_t)k * per + i];
        med[i] = bench_median(col, steps);
    }
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, med, per, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
    for (int i = 0; i < per; i++) med[i] /= world;
    f->step = med[0], f->fwd = med[1], f->bwd = med[2], f->wait = med[3], f->span = med[4], f->opt = med[5];
    f->c_fwd = med[6], f->c_bwd = med[7], f->straggle = med[8];
    f->sync_alone = med[9];
    f->norm = med[10];
    f->straggle_step = med[11];
    // the calls, in order (medians of neighbours need not be), and each group's ready time: its
    // layer's layer_done call; group L at the end of backward
    f->n_calls = n_calls;
    f->calls = sm_calloc((size_t)n_calls + 1, sizeof(double));
    for (int c = 0; c <= n_calls; c++) {
        f->calls[c] = med[fixed + c];
        if (c > 0 && f->calls[c] < f->calls[c - 1]) f->calls[c] = f->calls[c - 1];
    }
    f->c_bwd = f->calls[n_calls];
    f->group_ready = sm_calloc((size_t)L + 1, sizeof(double));
    for (int g = 0; g < L; g++) f->group_ready[g] = f->calls[tl.layer_call[L - 1 - g]];   // group g is layer L-1-g
    f->group_ready[L] = f->c_bwd;
    // the buckets as the sync cut them (comm/gradsync.c), in start order
    f->n_buckets = tr.sync.n_buckets;
    f->bucket_bytes = sm_calloc((size_t)f->n_buckets, sizeof(double));
    f->bucket_ready = sm_calloc((size_t)f->n_buckets, sizeof(double));
    f->grad_bytes = 0;
    for (int i = 0; i < f->n_buckets; i++) {
        f->bucket_bytes[i] = (double)tr.sync.buckets[i].n * sizeof(float);
        f->bucket_ready[i] = f->group_ready[tr.sync.buckets[i].ready_group];
        f->grad_bytes += f->bucket_bytes[i];
    }
    f->n_params = tr.w.n_params;
    sm_free(med);
    sm_free(col);
    sm_free(x);
    sm_free(tl.t_calls);
    sm_free(tl.layer_call);
    loader_free(&ld);
    sm_free(data.tokens);
    trainer_free(&tr);
}

static void free_steps(step_figures *f) {
    sm_free(f->group_ready);
    sm_free(f->calls);
    sm_free(f->bucket_bytes);
    sm_free(f->bucket_ready);
}

// ---------------------------------------------------------------------------------------------
// The model against the measurement, and the table for N nodes

// The step as the model sees it: the compute alone, backward's calls, the buckets; the optimizer's
// measured time (its two scalar allreduces included). calls_per_round 0: progress without pause.
static scaling_step model_step(const step_figures *f, double cpu_share, int calls_per_round) {
    return (scaling_step){.n_buckets = f->n_buckets, .bucket_bytes = f->bucket_bytes, .ready_s = f->bucket_ready,
                          .fwd_s = f->c_fwd, .bwd_s = f->c_bwd, .opt_s = f->opt, .post_s = f->norm / f->grad_bytes,
                          .cpu_share = cpu_share, .n_calls = calls_per_round ? f->n_calls : 0, .calls_s = f->calls,
                          .calls_per_round = calls_per_round};
}

static void check_row(const comm_opts *o, const char *shape, const char *what, double pred, double meas, int world) {
    double ratio = meas > 0 ? pred / meas : 0.0;
    int ok = fabs(ratio - 1.0) <= 0.2;
    if (o->json) {
        char name[160];
        snprintf(name, sizeof name, "comm %s %s at %d ranks: predicted", shape, what, world);
        sm_json j;
        json_begin(&j, name);
        json_compare(&j, pred * 1e3, "measured", meas * 1e3);
        sm_json_int(&j, "within_20pct", ok);
        json_end(&j);
    } else {
        printf("  %-34s %10.1f %10.1f %8.2f   %s\n", what, meas * 1e3, pred * 1e3, ratio, ok ? "within 20%" : "OFF by more than 20%");
    }
}

static void check_prediction(const comm_opts *o, const char *shape, const step_figures *f, const ar_state *a, int world) {
    scaling_step p = model_step(f, a->cpu_share, a->calls_per_round);
    double *bs = sm_calloc((size_t)f->n_buckets, sizeof(double));
    for (int i = 0; i < f->n_buckets; i++) bs[i] = a->alpha_b + a->beta_b * f->bucket_bytes[i];
    scaling_prediction r = scaling_predict(&p, bs, scaling_rounds(SCALING_RING, world), 0.0);
    sm_free(bs);
    // the ranks are not identical here: in each step the first to finish backward waits for the
    // last before the last buckets can go. That imbalance is an input, measured in the same steps
    // (the spread of the ranks' forward + backward times), not something the model predicts.
    double wait = r.wait_s + f->straggle_step, step = r.step_s + f->straggle_step;
    if (!o->json) {
        printf("the step at %d ranks, measured, and predicted from backward alone, the allreduce line, the cpu share,\n"
               "the calls a round needs and the measured wait for the last rank (medians over the rounds):\n", world);
        printf("  %-34s %10s %10s %8s\n", "(ms)", "measured", "predicted", "ratio");
    }
    check_row(o, shape, "step", step, f->step, world);
    check_row(o, shape, "exposed wait", wait, f->wait, world);
    check_row(o, shape, "backward (with the sync's work)", f->c_bwd + r.stretch_s, f->bwd, world);
    check_row(o, shape, "forward", f->c_fwd, f->fwd, world);
    check_row(o, shape, "gradient sync alone", r.comm_s + f->norm, f->sync_alone, world);
    if (o->json) return;
    double sum_meas = 0;
    for (int i = 0; i < f->n_buckets; i++) sum_meas += sweep_time(a, f->bucket_bytes[i]);
    printf("  (step and exposed wait are the checks; the other rows show where a difference comes from)\n");
    printf("  where: forward %.1f, backward alone %.1f (+%.1f stretch), optimizer %.1f; the wait: the last buckets "
           "%.1f, the last rank %.1f (%.1f in the rounds of backward alone)\n", f->c_fwd * 1e3, f->c_bwd * 1e3,
           r.stretch_s * 1e3, f->opt * 1e3, r.wait_s * 1e3, f->straggle_step * 1e3, f->straggle * 1e3);
    printf("  the sync alone: its buckets one by one %.1f (the line; %.1f by the sweep's own times), + the norm pass "
           "%.1f\n", r.comm_s * 1e3, sum_meas * 1e3, f->norm * 1e3);
}

// The figures the model takes, as one JSON object (the tests recompute the table from it)
static void print_timeline(const char *shape, const step_figures *f, const ar_state *a) {
    char name[160], list[3][SM_JSON_MAX / 3 - 64];
    size_t len[3] = {0, 0, 0};
    for (int b = 0; b < 3; b++) {
        int n = b < 2 ? f->n_buckets : f->n_calls;
        for (int i = 0; i < n; i++) {
            double v = b == 0 ? f->bucket_bytes[i] : b == 1 ? f->bucket_ready[i] * 1e3 : f->calls[i] * 1e3;
            int w = snprintf(list[b] + len[b], sizeof list[b] - len[b], "%s%.9g", i ? "," : "[", v);
            SM_CHECK(w > 0 && len[b] + (size_t)w + 2 < sizeof list[b], "bench comm: %d buckets overflow the JSON line",
                     f->n_buckets);
            len[b] += (size_t)w;
        }
        snprintf(list[b] + len[b], sizeof list[b] - len[b], n ? "]" : "[]");
    }
    snprintf(name, sizeof name, "comm %s timeline", shape);
    sm_json j;
    json_begin(&j, name);
    sm_json_num(&j, "fwd_ms", "%.9g", f->c_fwd * 1e3);
    sm_json_num(&j, "bwd_ms", "%.9g", f->c_bwd * 1e3);
    sm_json_num(&j, "opt_ms", "%.9g", f->opt * 1e3);
    sm_json_num(&j, "scalar_ms", "%.9g", a->scalar_s * 1e3);
    sm_json_num(&j, "straggle_ms", "%.9g", f->straggle_step * 1e3);
    sm_json_num(&j, "gamma_ns_per_byte", "%.9g", a->gamma_s * 1e9);
    sm_json_num(&j, "cpu_share", "%.9g", a->cpu_share);
    sm_json_num(&j, "post_ns_per_byte", "%.9g", f->norm / f->grad_bytes * 1e9);
    sm_json_int(&j, "n_buckets", f->n_buckets);
    sm_json_raw(&j, "bucket_bytes", list[0]);
    sm_json_raw(&j, "ready_ms", list[1]);
    sm_json_raw(&j, "calls_ms", list[2]);
    sm_json_int(&j, "calls_per_round", a->calls_per_round);
    sm_json_num(&j, "ms", "%.9g", f->c_bwd * 1e3);
    json_end(&j);
}

typedef struct {
    scaling_net net;
    double cpu_share;
    int calls_per_round;
} table_net;

static void print_table(const comm_opts *o, const char *shape, const step_figures *f, const table_net *tn,
                        const comm_topology *topo, double scalar_measured_s) {
    int n_algo = 0, algos[SCALING_N_ALGOS];
    for (int a = 0; a < SCALING_N_ALGOS; a++)
        if (o->algos >> a & 1) algos[n_algo++] = a;
    // the optimizer without its two scalar allreduces (loss, skip decision), which go by
    // recursive doubling at every node count, as MPI does for 8-byte messages
    double opt_alone = f->opt - 2.0 * scalar_measured_s;
    if (opt_alone < 0) opt_alone = 0;
    scaling_step p = model_step(f, tn->cpu_share, o->continuous ? 0 : tn->calls_per_round);
    p.opt_s = opt_alone;
    double tokens = (double)o->B * o->T;
    double *bs = sm_calloc((size_t)f->n_buckets, sizeof(double));
    if (!o->json) {
        char progress[64];
        if (o->continuous) snprintf(progress, sizeof progress, "without pause");
        else snprintf(progress, sizeof progress, "at backward's calls, %d a round", tn->calls_per_round);
        printf("network %s: alpha %.2f us, beta %.4f ns/B (%.2f GB/s), gamma %.4f ns/B, cpu share %.2f, progress %s\n"
               "  (%s)\n", tn->net.name, tn->net.alpha_s * 1e6, tn->net.beta_s * 1e9, 1e-9 / tn->net.beta_s,
               tn->net.gamma_s * 1e9, tn->cpu_share, progress, tn->net.source);
        printf("  %6s", "N");
        for (int a = 0; a < n_algo; a++)
            printf(" | %-5s %9s %9s %6s %10s", scaling_algo_name(algos[a]), "step ms", "exposed", "eff", "tokens/s");
        printf("\n");
    }
    for (int N = 2; N <= o->max_nodes; N *= 2) {
        if (!o->json) printf("  %6d", N);
        for (int a = 0; a < n_algo; a++) {
            for (int i = 0; i < f->n_buckets; i++) bs[i] = scaling_allreduce_s(algos[a], N, f->bucket_bytes[i], &tn->net);
            double scalars = 2.0 * scaling_allreduce_s(SCALING_TREE, N, 8.0, &tn->net);
            scaling_prediction r = scaling_predict(&p, bs, scaling_rounds(algos[a], N), scalars);
            double alone = r.alone_s, exposed = r.step_s - alone;
            if (o->json) {
                char name[200];
                snprintf(name, sizeof name, "scaling %s %s %s N=%d", shape, tn->net.name, scaling_algo_name(algos[a]), N);
                sm_json j;
                json_begin(&j, name);
                sm_json_int(&j, "nodes", N);
                sm_json_num(&j, "ms", "%.6g", r.step_s * 1e3);
                sm_json_num(&j, "exposed_ms", "%.6g", exposed * 1e3);
                sm_json_num(&j, "wait_ms", "%.6g", r.wait_s * 1e3);
                sm_json_num(&j, "comm_ms", "%.6g", r.comm_s * 1e3);
                sm_json_num(&j, "efficiency", "%.4f", r.efficiency);
                sm_json_num(&j, "tokens_per_s", "%.6g", N * tokens / r.step_s);
                sm_json_num(&j, "alpha_us", "%.5g", tn->net.alpha_s * 1e6);
                sm_json_num(&j, "beta_ns_per_byte", "%.5g", tn->net.beta_s * 1e9);
                sm_json_num(&j, "gamma_ns_per_byte", "%.5g", tn->net.gamma_s * 1e9);
                sm_json_num(&j, "cpu_share", "%.4f", tn->cpu_share);
                sm_json_int(&j, "calls_per_round", o->continuous ? 0 : tn->calls_per_round);
                sm_json_int(&j, "rounds", scaling_rounds(algos[a], N));
                sm_json_str(&j, "baseline", "one node, no communication");
                sm_json_num(&j, "baseline_ms", "%.6g", alone * 1e3);
                sm_json_num(&j, "ratio", "%.4f", r.step_s / alone);
                json_end(&j);
            } else {
                printf(" | %-5s %9.1f %9.1f %6.3f %10.0f", "", r.step_s * 1e3, exposed * 1e3, r.efficiency,
                       N * tokens / r.step_s);
            }
        }
        if (!o->json) printf("\n");
    }
    (void)topo;
    sm_free(bs);
}

// ---------------------------------------------------------------------------------------------

static void parse_comm(int argc, char **argv, comm_opts *o, int *list_nets) {
    *o = (comm_opts){.small = 1, .gpt2 = 1, .B = 4, .T = 64, .steps = 8, .max_nodes = 1024, .bucket_mb = 8.0,
                     .min_kib = 4, .max_mib = 32, .nets = ~0, .alpha_us = -1, .beta_ns = -1, .gamma_ns = -1,
                     .cpu_share = 0.0, .algos = 3};
    *list_nets = 0;
    enum { O_SHAPE = 256, O_BATCH, O_SEQ, O_STEPS, O_BUCKET, O_MINK, O_MAXM, O_NET, O_ALPHA, O_BETA, O_GAMMA, O_SHARE,
           O_ALGO, O_MAXN, O_THREADS, O_PROGRESS, O_JSON, O_HELP };
    static const struct option opts[] = {
        {"shape", required_argument, 0, O_SHAPE}, {"batch", required_argument, 0, O_BATCH},
        {"seq", required_argument, 0, O_SEQ}, {"steps", required_argument, 0, O_STEPS},
        {"bucket-mb", required_argument, 0, O_BUCKET}, {"min-kib", required_argument, 0, O_MINK},
        {"max-mib", required_argument, 0, O_MAXM}, {"net", required_argument, 0, O_NET},
        {"alpha", required_argument, 0, O_ALPHA}, {"beta", required_argument, 0, O_BETA},
        {"gamma", required_argument, 0, O_GAMMA}, {"cpu-share", required_argument, 0, O_SHARE},
        {"algo", required_argument, 0, O_ALGO}, {"max-nodes", required_argument, 0, O_MAXN},
        {"threads", required_argument, 0, O_THREADS}, {"progress", required_argument, 0, O_PROGRESS},
        {"json", no_argument, 0, O_JSON},
        {"help", no_argument, 0, O_HELP}, {0, 0, 0, 0},
    };
    opterr = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_SHAPE:
            if (!strcmp(optarg, "small")) o->small = 1, o->gpt2 = 0;
            else if (!strcmp(optarg, "gpt2")) o->small = 0, o->gpt2 = 1;
            else if (!strcmp(optarg, "all")) o->small = o->gpt2 = 1;
            else sm_fatal(SM_EXIT_USAGE, "--shape expects small, gpt2 or all, got '%s' (command line)", optarg);
            break;
        case O_BATCH: o->B = (int)cli_int("--batch", optarg, 1, 1024); break;
        case O_SEQ: o->T = (int)cli_int("--seq", optarg, 1, BENCH_CONTEXT); break;
        case O_STEPS: o->steps = (int)cli_int("--steps", optarg, 1, 256); break;
        case O_BUCKET: o->bucket_mb = cli_double("--bucket-mb", optarg, 0.01, 1024); break;
        case O_MINK: o->min_kib = cli_double("--min-kib", optarg, 0.25, 1048576); break;
        case O_MAXM: o->max_mib = cli_double("--max-mib", optarg, 0.001, 1024); break;
        case O_NET:
            if (!strcmp(optarg, "all")) o->nets = ~0;
            else if (!strcmp(optarg, "list")) *list_nets = 1;
            else if (!strcmp(optarg, "measured")) o->nets = 1;
            else {
                int found = -1;
                for (int i = 0; i < SCALING_N_PRESETS; i++)
                    if (!strcmp(optarg, SCALING_PRESETS[i].name)) found = i;
                if (found < 0)
                    sm_fatal(SM_EXIT_USAGE, "--net expects measured, 25gbe, ib-edr, ib-hdr, all or list, got '%s' "
                             "(command line)", optarg);
                o->nets = 1 << (1 + found);
            }
            break;
        case O_ALPHA: o->alpha_us = cli_double("--alpha", optarg, 0, 1e6); break;
        case O_BETA: o->beta_ns = cli_double("--beta", optarg, 1e-6, 1e6); break;
        case O_GAMMA: o->gamma_ns = cli_double("--gamma", optarg, 0, 1e6); break;
        case O_SHARE: o->cpu_share = cli_double("--cpu-share", optarg, 0, 1); break;
        case O_ALGO:
            if (!strcmp(optarg, "ring")) o->algos = 1 << SCALING_RING;
            else if (!strcmp(optarg, "tree")) o->algos = 1 << SCALING_TREE;
            else if (!strcmp(optarg, "both")) o->algos = 3;
            else sm_fatal(SM_EXIT_USAGE, "--algo expects ring, tree or both, got '%s' (command line)", optarg);
            break;
        case O_MAXN: o->max_nodes = (int)cli_int("--max-nodes", optarg, 2, 1 << 20); break;
        case O_THREADS: o->threads = (int)cli_int("--threads", optarg, 1, 1024); break;
        case O_PROGRESS:
            if (!strcmp(optarg, "calls")) o->continuous = 0;
            else if (!strcmp(optarg, "continuous")) o->continuous = 1;
            else sm_fatal(SM_EXIT_USAGE, "--progress expects calls or continuous, got '%s' (command line)", optarg);
            break;
        case O_JSON: o->json = 1; break;
        case O_HELP: fputs(BENCH_COMM_USAGE, stdout); exit(SM_EXIT_OK);
        default: cli_bad_option("bench comm", argc, argv);
        }
    }
    if (optind < argc) sm_fatal(SM_EXIT_USAGE, "bench comm: unexpected argument '%s' (command line)", argv[optind]);
    if ((o->alpha_us >= 0) != (o->beta_ns >= 0))
        sm_fatal(SM_EXIT_USAGE, "bench comm: --alpha and --beta go together (command line)");
    if (o->min_kib * 1024.0 > o->max_mib * 1048576.0)
        sm_fatal(SM_EXIT_USAGE, "bench comm: --min-kib %g is above --max-mib %g (command line)", o->min_kib, o->max_mib);
}

int bench_comm(int argc, char **argv) {
    comm_opts o;
    int list_nets;
    parse_comm(argc, argv, &o, &list_nets);
    if (list_nets) {
        for (int i = 0; i < SCALING_N_PRESETS; i++) {
            const scaling_net *n = &SCALING_PRESETS[i];
            printf("%-7s alpha %.1f us, beta %.4f ns/B (%.2f GB/s)\n        %s\n", n->name, n->alpha_s * 1e6,
                   n->beta_s * 1e9, 1e-9 / n->beta_s, n->source);
        }
        return SM_EXIT_OK;
    }
    comm_topology topo;
    comm_init(&argc, &argv, &topo);
    if (topo.world_size < 2)
        comm_fatal_agreed(SM_EXIT_USAGE, "bench comm: 1 rank has nothing to reduce: run it under mpirun with 2 ranks or "
                          "more (mpirun -np 2 --bind-to none smallmind bench comm) (command line)");
    o.threads = comm_set_threads(&topo, o.threads);
    kernels_flush_denormals(1);
    if (topo.rank == 0 && !o.json)
        printf("bench comm: %d ranks on %d node%s, %d thread%s per rank; figures are medians over rounds (the machine "
               "may be shared: noisy)\n", topo.world_size, topo.n_nodes, topo.n_nodes > 1 ? "s" : "", o.threads,
               o.threads > 1 ? "s" : "");
    for (int s = 0; s < 2; s++) {
        if (!(s == 0 ? o.small : o.gpt2)) continue;
        ar_state ar;
        ar_init(&ar, &o);
        step_figures f;
        measure_shape(&o, s, &topo, &ar, &f);
        ar_finish(&ar, &o, f.bucket_bytes, f.n_buckets);
        const char *shape = SHAPES[s].name;
        if (topo.rank == 0) {
            if (!o.json)
                printf("\n%s (L=%d H=%d C=%d V=%d, %zu params; %.1f MiB of gradients in %d buckets of <= %g MiB), B=%d "
                       "T=%d per rank, %d ranks x %d thread%s on %d node%s, %d rounds\n",
                       shape, SHAPES[s].L, SHAPES[s].H, SHAPES[s].C, BENCH_V, f.n_params, f.grad_bytes / 1048576.0,
                       f.n_buckets, o.bucket_mb, o.B, o.T, topo.world_size, o.threads, o.threads > 1 ? "s" : "",
                       topo.n_nodes, topo.n_nodes > 1 ? "s" : "", o.steps);
            print_allreduce(&o, &ar, shape);
            check_prediction(&o, shape, &f, &ar, topo.world_size);
            if (o.json) print_timeline(shape, &f, &ar);
            if (!o.json)
                printf("predicted for N nodes, one rank per node as here (B=%d T=%d, %d thread%s), identical nodes "
                       "(no stragglers), %s; efficiency = the step of one node without communication / the step at N\n",
                       o.B, o.T, o.threads, o.threads > 1 ? "s" : "", o.algos == 3 ? "ring and tree" : scaling_algo_name(o.algos >> 1 & 1));
            table_net tn;
            if (o.nets & 1) {
                tn.net = scaling_net_from_fit(topo.n_nodes > 1 ? "measured (TCP between the hosts)" : "measured (one host)",
                                              topo.world_size, ar.alpha_b, ar.beta_b, ar.gamma_s);
                tn.cpu_share = ar.cpu_share;
                tn.calls_per_round = ar.calls_per_round;
                print_table(&o, shape, &f, &tn, &topo, ar.scalar_s);
            }
            for (int i = 0; i < SCALING_N_PRESETS; i++) {
                if (!(o.nets >> (1 + i) & 1)) continue;
                tn.net = SCALING_PRESETS[i];
                tn.net.gamma_s = ar.gamma_s;
                tn.cpu_share = o.cpu_share;
                tn.calls_per_round = 1;
                print_table(&o, shape, &f, &tn, &topo, ar.scalar_s);
            }
            if (o.alpha_us >= 0) {
                tn.net = (scaling_net){"custom", o.alpha_us * 1e-6, o.beta_ns * 1e-9, ar.gamma_s, "--alpha, --beta"};
                tn.cpu_share = o.cpu_share;
                tn.calls_per_round = 1;
                print_table(&o, shape, &f, &tn, &topo, ar.scalar_s);
            }
            fflush(stdout);
        }
        free_steps(&f);
        ar_free(&ar);
    }
    comm_finalize();
    return SM_EXIT_OK;
}
