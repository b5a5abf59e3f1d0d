// test_comm.c — CUnit + MPI tests of comm/'s bucketed gradient sync at any number of ranks:
// after begin / ready(group) ... / wait, every gradient this rank owns equals the sum over ranks
// of what each rank held, computed here from the formula each rank filled its arena with.
// Values are small integers, so every summation order gives the same exact sum. Segments are
// out of flat order, of uneven sizes, some larger than a bucket and some adjacent, so both kinds
// of bucket are exercised: those reduced in place (one range of the arena) and those staged.
// The piece function (the trainer's sum of squares) must see exactly the final owned values.
//   mpirun -np N test_comm
#include <CUnit/Basic.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"
#include "common.h"
#include "cunit_mpi.h"

static int g_rank, g_world;

// what rank r holds at element i in step s (exact in float, sums exact too)
static float grad_value(int r, size_t i, int step) { return (float)((int)((i * 7 + (size_t)r * 13 + (size_t)step * 5) % 61) - 30); }

enum { N_SEGS = 12 };
// Flat ranges [offset, offset+n) of a 30000-float arena, in the order they become ready. The
// arena's gaps (not in any segment) must be left alone. With buckets of ~1000 and ~5000 floats,
// the large segments get buckets of their own and the small ones share staged buckets.
static const comm_segment SEGS[N_SEGS] = {
    {20000, 9000, 0},   // larger than a bucket: several in-place buckets
    {100, 50, 0},       // small and apart: a staged bucket
    {200, 30, 0},
    {5000, 700, 1},
    {29500, 500, 1},
    {5700, 3000, 1},    // adjacent to {5000, 700}, but ready after {29500, 500}
    {0, 100, 2},        // small for the larger bucket, large for the smaller
    {150, 50, 2},       // 0..230 in three groups, 200..230 earlier
    {14500, 40, 2},
    {12000, 2048, 2},
    {9000, 1000, 3},
    {15000, 5000, 4},   // adjacent to the first segment
};
#define ARENA 30000

static int in_segment(size_t i) {
    for (int k = 0; k < N_SEGS; k++)
        if (i >= SEGS[k].offset && i < SEGS[k].offset + SEGS[k].n) return 1;
    return 0;
}

// the piece function: sum of squares in double (exact for these values), and a count of calls
static int g_piece_calls;
static double sumsq_piece(const float *x, size_t n) {
    double t = 0.0;
    for (size_t i = 0; i < n; i++) t += (double)x[i] * x[i];
    g_piece_calls++;
    return t;
}

static void sync_case(int zero, double bucket_mb) {
    float *g = sm_arena(ARENA * sizeof(float));
    comm_gradsync s;
    comm_gradsync_init(&s, g, ARENA, SEGS, N_SEGS, bucket_mb, zero);
    comm_gradsync_set_piece_fn(&s, sumsq_piece);
    int n_contig = 0, n_staged = 0;
    for (int b = 0; b < s.n_buckets; b++) s.buckets[b].contiguous ? n_contig++ : n_staged++;
    CU_ASSERT(n_contig > 0 && n_staged > 0);   // both kinds are exercised
    // a bucket holding any of a large segment (>= 1/16 of a bucket) holds only that segment
    size_t large = (size_t)(bucket_mb * 1024 * 1024 / sizeof(float)) / 16;
    for (int b = 0; b < s.n_buckets; b++)
        for (int p = s.buckets[b].first_piece; p < s.buckets[b].first_piece + s.buckets[b].n_pieces; p++)
            for (int k = 0; k < N_SEGS; k++)
                if (s.pieces[p].flat >= SEGS[k].offset && s.pieces[p].flat < SEGS[k].offset + SEGS[k].n &&
                    SEGS[k].n >= large)
                    CU_ASSERT(s.buckets[b].contiguous);
    for (int step = 0; step < 3; step++) {
        // as in backward: a segment holds garbage until just before its group is announced, so
        // a bucket started before all of its pieces are final sums garbage
        for (size_t i = 0; i < ARENA; i++) g[i] = in_segment(i) ? 1e6f : grad_value(g_rank, i, step);
        comm_gradsync_begin(&s);
        g_piece_calls = 0;
        for (int grp = 0; grp <= 4; grp++) {
            for (int k = 0; k < N_SEGS; k++)
                if (SEGS[k].group == grp)
                    for (size_t i = SEGS[k].offset; i < SEGS[k].offset + SEGS[k].n; i++)
                        g[i] = grad_value(g_rank, i, step);
            comm_gradsync_ready(&s, grp);
        }
        comm_gradsync_wait(&s);
        // the piece function saw the final values of exactly the owned elements: its total,
        // summed over ranks under ZeRO, is the global sum of squares (exact in double)
        double total = comm_gradsync_total(&s), want_total = 0.0;
        if (zero) MPI_Allreduce(MPI_IN_PLACE, &total, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        for (size_t i = 0; i < ARENA; i++)
            if (in_segment(i)) {
                double v = 0.0;
                for (int r = 0; r < g_world; r++) v += grad_value(r, i, step);
                want_total += v * v;
            }
        CU_ASSERT(total == want_total);
        CU_ASSERT(g_piece_calls > 0 && g_piece_calls <= s.n_pieces);
        size_t bad = 0, first_bad = 0;
        for (size_t i = 0; i < ARENA; i++) {
            float want;
            if (!in_segment(i)) want = grad_value(g_rank, i, step);   // untouched
            else if (zero && (i < s.slice_lo || i >= s.slice_hi)) continue;   // not this rank's
            else {
                want = 0.0f;
                for (int r = 0; r < g_world; r++) want += grad_value(r, i, step);
            }
            if (g[i] != want && bad++ == 0) first_bad = i;
        }
        if (bad)
            printf("\nrank %d zero=%d bucket %.4f MB step %d: %zu wrong, first at %zu: %g vs %g\n", g_rank, zero,
                   bucket_mb, step, bad, first_bad, g[first_bad], (double)grad_value(g_rank, first_bad, step));
        CU_ASSERT_EQUAL(bad, 0);
    }
    comm_gradsync_free(&s);
    sm_free(g);
}

static void test_allreduce(void) {
    sync_case(0, 0.004);   // 1048 floats a bucket
    sync_case(0, 0.02);
}

static void test_reduce_scatter(void) {
    sync_case(1, 0.004);
    sync_case(1, 0.02);
}

int main(int argc, char **argv) {
    comm_topology topo;
    comm_init(&argc, &argv, &topo);
    g_rank = topo.rank;
    g_world = topo.world_size;
    CU_initialize_registry();
    CU_pSuite st = CU_add_suite("gradsync", NULL, NULL);
    CU_add_test(st, "allreduce: in place and staged buckets", test_allreduce);
    CU_add_test(st, "ZeRO reduce-scatter: each rank's slice", test_reduce_scatter);
    if (g_rank == 0) printf("gradsync at %d rank%s\n", g_world, g_world > 1 ? "s" : "");
    int total = cunit_run_mpi(g_rank);
    comm_finalize();
    return total != 0;
}
