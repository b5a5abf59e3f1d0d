// test_scaling.c — the communication model (trainer/scaling.c) against values worked out by hand
// here, and its latency-bandwidth fit against synthetic data: exact recovery of a line, and on
// noisy points a minimum of the fit's objective checked independently (central differences of the
// objective, evaluated directly, are zero there, and every nearby point is worse). No timing.
#include <CUnit/Basic.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "trainer.h"

// |a - r| <= atol + rtol |r|, printed when it fails
static int close_to(double a, double r, double atol, double rtol) {
    int ok = fabs(a - r) <= atol + rtol * fabs(r);
    if (!ok) printf("\n    got %.17g, expected %.17g (atol %g, rtol %g)\n", a, r, atol, rtol);
    return ok;
}

static const scaling_net NET = {"test", 10e-6, 1e-9, 0.5e-9, "hand-made"};   // 10 us, 1 GB/s, 2 GB/s sums

static void test_ring(void) {
    // N = 4, n = 1e6 B: 2*3*10us = 60 us; 2*(3/4)*1e6*1e-9 = 1.5 ms; (3/4)*1e6*0.5e-9 = 0.375 ms
    CU_ASSERT(close_to(scaling_allreduce_s(SCALING_RING, 4, 1e6, &NET), 60e-6 + 1.5e-3 + 0.375e-3, 0, 1e-12));
    // N = 2: 2 alpha + n beta + n gamma / 2 = 20 us + 1 ms + 0.25 ms
    CU_ASSERT(close_to(scaling_allreduce_s(SCALING_RING, 2, 1e6, &NET), 20e-6 + 1e-3 + 0.25e-3, 0, 1e-12));
    // N = 1000, n = 0: latency only, 2*999*10us = 19.98 ms
    CU_ASSERT(close_to(scaling_allreduce_s(SCALING_RING, 1000, 0.0, &NET), 19.98e-3, 0, 1e-12));
    // the bandwidth terms tend to 2 n beta + n gamma: N = 1e6, n = 1e9 B: (2 s + 0.5 s) x 999999/1e6,
    // and 2 x 999999 x 10 us of latency
    CU_ASSERT(close_to(scaling_allreduce_s(SCALING_RING, 1000000, 1e9, &NET),
                       2.0 * 999999 * 10e-6 + 2.5 * 999999.0 / 1e6, 0, 1e-12));
    CU_ASSERT(scaling_allreduce_s(SCALING_RING, 1, 1e6, &NET) == 0.0);
}

static void test_tree(void) {
    // ceil(log2 N) (alpha + n beta + n gamma): N = 4 -> 2 (10 us + 1 ms + 0.5 ms) = 3.02 ms
    CU_ASSERT(close_to(scaling_allreduce_s(SCALING_TREE, 4, 1e6, &NET), 3.02e-3, 0, 1e-12));
    // N = 5 -> 3 rounds (the non-power of two costs a round); N = 1024 -> 10; N = 1025 -> 11
    CU_ASSERT(close_to(scaling_allreduce_s(SCALING_TREE, 5, 1e6, &NET), 3 * 1.51e-3, 0, 1e-12));
    CU_ASSERT(close_to(scaling_allreduce_s(SCALING_TREE, 1024, 8.0, &NET), 10 * (10e-6 + 8 * 1.5e-9), 0, 1e-12));
    CU_ASSERT(close_to(scaling_allreduce_s(SCALING_TREE, 1025, 8.0, &NET), 11 * (10e-6 + 8 * 1.5e-9), 0, 1e-12));
    CU_ASSERT(close_to(scaling_allreduce_s(SCALING_TREE, 2, 1e6, &NET), 1.51e-3, 0, 1e-12));
    CU_ASSERT(scaling_allreduce_s(SCALING_TREE, 1, 1e6, &NET) == 0.0);
    // where they cross: small messages favour the tree (log N latencies), large ones the ring
    CU_ASSERT(scaling_allreduce_s(SCALING_TREE, 64, 4096, &NET) < scaling_allreduce_s(SCALING_RING, 64, 4096, &NET));
    CU_ASSERT(scaling_allreduce_s(SCALING_TREE, 64, 8e6, &NET) > scaling_allreduce_s(SCALING_RING, 64, 8e6, &NET));
}

// sizes 4 KiB .. 32 MiB, as the bench sweeps
static int sweep_sizes(double *n) {
    int k = 0;
    for (double b = 4096; b <= 32.0 * 1048576; b *= 2) n[k++] = b;
    return k;
}

static void test_fit_exact(void) {
    double n[16], t[16], a = 0, b = 0;
    int k = sweep_sizes(n);
    for (int i = 0; i < k; i++) t[i] = 7e-6 + n[i] * 0.25e-9;
    CU_ASSERT_EQUAL(scaling_fit(n, t, k, &a, &b), 0);
    CU_ASSERT(close_to(a, 7e-6, 0, 1e-9));
    CU_ASSERT(close_to(b, 0.25e-9, 0, 1e-9));
    // two points determine the line
    CU_ASSERT_EQUAL(scaling_fit(n + 3, t + 3, 2, &a, &b), 0);
    CU_ASSERT(close_to(a, 7e-6, 0, 1e-9) && close_to(b, 0.25e-9, 0, 1e-9));
}

// the fit's objective, evaluated directly: sum of squared relative residuals
static double objective(const double *n, const double *t, int k, double a, double b) {
    double s = 0;
    for (int i = 0; i < k; i++) s += ((a + b * n[i] - t[i]) / t[i]) * ((a + b * n[i] - t[i]) / t[i]);
    return s;
}

static void test_fit_noisy(void) {
    double n[16], t[16], a = 0, b = 0;
    int k = sweep_sizes(n);
    // +-10% multiplicative noise from the project's RNG
    sm_rng r;
    sm_rng_seed(&r, 5, 0);
    for (int i = 0; i < k; i++) t[i] = (20e-6 + n[i] * 0.1e-9) * (0.9 + 0.2 * sm_rng_uniform(&r));
    CU_ASSERT_EQUAL(scaling_fit(n, t, k, &a, &b), 0);
    // near the truth ...
    CU_ASSERT(close_to(a, 20e-6, 0, 0.3));
    CU_ASSERT(close_to(b, 0.1e-9, 0, 0.15));
    // ... and the minimum: the objective's central differences vanish (relative to its curvature
    // scale) and every step away, along either axis or both, makes it worse
    double f0 = objective(n, t, k, a, b);
    double ha = a * 1e-4, hb = b * 1e-4;
    double ga = (objective(n, t, k, a + ha, b) - objective(n, t, k, a - ha, b)) / (2 * ha) * ha;
    double gb = (objective(n, t, k, a, b + hb) - objective(n, t, k, a, b - hb)) / (2 * hb) * hb;
    double curv = objective(n, t, k, a + ha, b) + objective(n, t, k, a - ha, b) - 2 * f0;
    CU_ASSERT(fabs(ga) < 1e-3 * fabs(curv) + 1e-15);
    CU_ASSERT(fabs(gb) < 1e-3 * fabs(objective(n, t, k, a, b + hb) + objective(n, t, k, a, b - hb) - 2 * f0) + 1e-15);
    for (int da = -1; da <= 1; da++)
        for (int db = -1; db <= 1; db++)
            if (da || db) CU_ASSERT(objective(n, t, k, a + da * a * 0.01, b + db * b * 0.01) > f0);
}

static void test_fit_refuses(void) {
    double n[3] = {4096, 4096, 4096}, t[3] = {1e-5, 1.1e-5, 0.9e-5}, a, b;
    CU_ASSERT_EQUAL(scaling_fit(n, t, 3, &a, &b), -1);   // one distinct size
    CU_ASSERT_EQUAL(scaling_fit(n, t, 1, &a, &b), -1);
    double n2[2] = {4096, 8192}, t2[2] = {1e-5, 0.0};
    CU_ASSERT_EQUAL(scaling_fit(n2, t2, 2, &a, &b), -1);   // a time of 0
}

static void test_net_from_fit(void) {
    // a fit of the ring's times at N ranks gives the link back: t = 2(N-1) alpha + n (2(N-1)/N beta + (N-1)/N gamma)
    for (int N = 2; N <= 8; N *= 2) {
        double n[16], t[16], a, b;
        int k = sweep_sizes(n);
        for (int i = 0; i < k; i++) t[i] = scaling_allreduce_s(SCALING_RING, N, n[i], &NET);
        CU_ASSERT_EQUAL(scaling_fit(n, t, k, &a, &b), 0);
        scaling_net got = scaling_net_from_fit("fit", N, a, b, NET.gamma_s);
        CU_ASSERT(close_to(got.alpha_s, NET.alpha_s, 0, 1e-8));
        CU_ASSERT(close_to(got.beta_s, NET.beta_s, 0, 1e-8));
        CU_ASSERT(got.gamma_s == NET.gamma_s);
    }
    // N = 2 by hand: alpha_fit 20 us, beta_fit 1.25 ns/B, gamma 0.5 -> 10 us, 1.25 - 0.25 = 1 ns/B
    scaling_net h = scaling_net_from_fit("fit", 2, 20e-6, 1.25e-9, 0.5e-9);
    CU_ASSERT(close_to(h.alpha_s, 10e-6, 0, 1e-12) && close_to(h.beta_s, 1e-9, 0, 1e-12));
    // a reduction slower than the fit's whole per-byte time (noise): beta kept at a tenth of the fit's
    scaling_net z = scaling_net_from_fit("fit", 2, 20e-6, 0.1e-9, 1e-9);
    CU_ASSERT(close_to(z.beta_s, 0.01e-9, 0, 1e-12));
}

static void test_predict(void) {
    // buckets ready at 1, 2 and 5 ms into a 5 ms backward, taking 2, 1 and 1 ms on the link:
    // bucket 0 runs 1..3, bucket 1 waits for the link and runs 3..4, bucket 2 runs 5..6: the step
    // waits 1 ms after backward; 3 ms of communication ran during backward, half of it (cpu share
    // 0.5) on backward's cores: +1.5 ms. Step = 2 (fwd) + 5 + 1 (opt) + 1 + 1.5 + 0.25 (scalars).
    const double bytes[3] = {100, 200, 300}, ready[3] = {1e-3, 2e-3, 5e-3}, link[3] = {2e-3, 1e-3, 1e-3};
    scaling_step p = {.n_buckets = 3, .bucket_bytes = bytes, .ready_s = ready, .fwd_s = 2e-3, .bwd_s = 5e-3,
                      .opt_s = 1e-3, .cpu_share = 0.5};
    scaling_prediction r = scaling_predict(&p, link, 1, 0.25e-3);
    CU_ASSERT(close_to(r.comm_s, 4e-3, 0, 1e-12));
    CU_ASSERT(close_to(r.wait_s, 1e-3, 0, 1e-12));
    CU_ASSERT(close_to(r.stretch_s, 1.5e-3, 0, 1e-12));
    CU_ASSERT(close_to(r.step_s, 10.75e-3, 0, 1e-12));
    CU_ASSERT(close_to(r.efficiency, 8.0 / 10.75, 0, 1e-12));
    CU_ASSERT(close_to(r.alone_s, 8e-3, 0, 1e-12));
    // the link still busy with early buckets when backward ends: 0..3 and 3..7 against 5: wait 2
    const double ready2[2] = {0, 0}, link2[2] = {3e-3, 4e-3};
    p = (scaling_step){.n_buckets = 2, .bucket_bytes = bytes, .ready_s = ready2, .fwd_s = 0, .bwd_s = 5e-3};
    r = scaling_predict(&p, link2, 3, 0.0);
    CU_ASSERT(close_to(r.wait_s, 2e-3, 0, 1e-12) && r.stretch_s == 0.0);
    CU_ASSERT(close_to(r.step_s, 7e-3, 0, 1e-12) && close_to(r.efficiency, 5.0 / 7.0, 0, 1e-12));
    // everything hidden and nothing on the cores: efficiency 1
    const double link3[2] = {1e-3, 1e-3};
    r = scaling_predict(&p, link3, 1, 0.0);
    CU_ASSERT(r.wait_s == 0.0 && close_to(r.efficiency, 1.0, 0, 1e-15));
    // all of it on the cores (cpu share 1): the step pays for all of the communication
    p.cpu_share = 1.0;
    r = scaling_predict(&p, link3, 1, 0.0);
    CU_ASSERT(close_to(r.step_s, 7e-3, 0, 1e-12));
}

static void test_predict_post(void) {
    // post work of 1 ms per 1000 B. Buckets of 1000, 2000 and 1000 B ready at 0, 4 and 5 ms into a
    // 5 ms backward, 2, 3 and 1 ms on the link: 0..2, 4..7, 7..8; the last two end after backward
    // (3000 B). Beside the link: the cores take bucket 1 at 7 (until 9), bucket 2 at 9 (until 10):
    // wait 5. After the link: 3 (link) + 3 (post) = 6. Half and half (cpu share 0.5): 5.5.
    // Stretch: half the 3 ms of link time before 5 ms (bucket 0's 2, bucket 1's 1), 1.5, and bucket
    // 0's post work, 1: 2.5. Alone: 1 + 5 + 1 + 4 ms of post work = 11. Step: 7 + 5.5 + 2.5 = 15.
    const double bytes[3] = {1000, 2000, 1000}, ready[3] = {0, 4e-3, 5e-3}, link[3] = {2e-3, 3e-3, 1e-3};
    scaling_step p = {.n_buckets = 3, .bucket_bytes = bytes, .ready_s = ready, .fwd_s = 1e-3, .bwd_s = 5e-3,
                      .opt_s = 1e-3, .post_s = 1e-6, .cpu_share = 0.5};
    scaling_prediction r = scaling_predict(&p, link, 2, 0.0);
    CU_ASSERT(close_to(r.comm_s, 6e-3, 0, 1e-12));
    CU_ASSERT(close_to(r.wait_s, 5.5e-3, 0, 1e-12));
    CU_ASSERT(close_to(r.stretch_s, 2.5e-3, 0, 1e-12));
    CU_ASSERT(close_to(r.alone_s, 11e-3, 0, 1e-12));
    CU_ASSERT(close_to(r.step_s, 15e-3, 0, 1e-12));
    CU_ASSERT(close_to(r.efficiency, 11.0 / 15.0, 0, 1e-12));
    // the extremes: beside the link only (share 0): wait 5, stretch 1; after it only (share 1): wait 6, stretch 4
    p.cpu_share = 0.0;
    r = scaling_predict(&p, link, 2, 0.0);
    CU_ASSERT(close_to(r.wait_s, 5e-3, 0, 1e-12) && close_to(r.stretch_s, 1e-3, 0, 1e-12));
    p.cpu_share = 1.0;
    r = scaling_predict(&p, link, 2, 0.0);
    CU_ASSERT(close_to(r.wait_s, 6e-3, 0, 1e-12) && close_to(r.stretch_s, 4e-3, 0, 1e-12));
}

static void test_rounds(void) {
    CU_ASSERT(scaling_rounds(SCALING_RING, 2) == 2 && scaling_rounds(SCALING_RING, 1024) == 2046);
    CU_ASSERT(scaling_rounds(SCALING_TREE, 2) == 1 && scaling_rounds(SCALING_TREE, 1024) == 10);
    CU_ASSERT(scaling_rounds(SCALING_TREE, 1000) == 10 && scaling_rounds(SCALING_RING, 1) == 0);
}

static void test_predict_calls(void) {
    // backward of 10 ms calls MPI at 2, 4, 6 and 8 ms; one bucket ready at 2 (its layer's call),
    // 2 ms on the link in 2 rounds of 1 ms.
    const double bytes[2] = {1000, 1000}, calls[4] = {2e-3, 4e-3, 6e-3, 8e-3}, ready[2] = {2e-3, 2e-3};
    const double link[2] = {2e-3, 2e-3};
    scaling_step p = {.n_buckets = 1, .bucket_bytes = bytes, .ready_s = ready, .bwd_s = 10e-3, .n_calls = 4,
                      .calls_s = calls, .calls_per_round = 1};
    // one call a round: 2..3, then posted at the call of 4: 4..5; nothing left for the wait
    scaling_prediction r = scaling_predict(&p, link, 2, 0.0);
    CU_ASSERT(r.wait_s == 0.0 && close_to(r.step_s, 10e-3, 0, 1e-12));
    // 6 rounds of 1/3 ms: 2.., 4.., 6.., 8.. during backward (4 rounds), the last 2 in the wait: 10..10.67
    r = scaling_predict(&p, link, 6, 0.0);
    CU_ASSERT(close_to(r.wait_s, 2e-3 / 3, 0, 1e-12));
    // 6 rounds of 1 ms (a 6 ms transfer): 2..3, 4..5, 6..7, 8..9, then 10..11, 11..12: wait 2 ms;
    // the link's 4 ms before 10 ms, at cpu share 0.5, stretch backward by 2
    const double link6[1] = {6e-3};
    p.cpu_share = 0.5;
    r = scaling_predict(&p, link6, 6, 0.0);
    CU_ASSERT(close_to(r.wait_s, 2e-3, 0, 1e-12) && close_to(r.stretch_s, 2e-3, 0, 1e-12));
    p.cpu_share = 0.0;
    // without pause (no calls): 2..8, all during backward
    p.n_calls = 0;
    r = scaling_predict(&p, link6, 6, 0.0);
    CU_ASSERT(r.wait_s == 0.0);
    // two calls a round (the data moves at the next call): posted 2, moves 4..5; posted at 6, moves 8..9
    p.n_calls = 4;
    p.calls_per_round = 2;
    r = scaling_predict(&p, link, 2, 0.0);
    CU_ASSERT(r.wait_s == 0.0);
    // ... and 4 rounds of 0.5 ms: 4..4.5 and 8..8.5 during backward; the wait: 10..10.5, 10.5..11
    r = scaling_predict(&p, link, 4, 0.0);
    CU_ASSERT(close_to(r.wait_s, 1e-3, 0, 1e-12));
    // three calls a round (the data moves at the second call after): 2 rounds of 1 ms: posted at 2,
    // moves at 6..7; posted at 8, moves in the wait: 10..11
    p.calls_per_round = 3;
    r = scaling_predict(&p, link, 2, 0.0);
    CU_ASSERT(close_to(r.wait_s, 1e-3, 0, 1e-12));
    // two buckets ready at the same call share the link in turn: at 2: A 2..3, B 3..4; at 4: A
    // 4..5, B 5..6 (posted at 4, B's first round having ended at 4)
    p.n_buckets = 2;
    p.calls_per_round = 1;
    p.bwd_s = 5.5e-3;   // B's last round runs past backward: wait 0.5 ms
    r = scaling_predict(&p, link, 2, 0.0);
    CU_ASSERT(close_to(r.wait_s, 0.5e-3, 0, 1e-12));
    CU_ASSERT(close_to(r.comm_s, 4e-3, 0, 1e-12));
}

static void test_presets(void) {
    // each preset has a positive latency and link time and says where they come from
    for (int i = 0; i < SCALING_N_PRESETS; i++) {
        const scaling_net *n = &SCALING_PRESETS[i];
        CU_ASSERT(n->alpha_s > 0 && n->beta_s > 0 && n->gamma_s == 0.0);
        CU_ASSERT(n->source && strlen(n->source) > 40);
    }
    // 25 GbE carries 2.94 GB/s of TCP payload; EDR 12.5 GB/s
    CU_ASSERT(close_to(1.0 / SCALING_PRESETS[0].beta_s, 2.94e9, 0, 1e-12));
    CU_ASSERT(close_to(1.0 / SCALING_PRESETS[1].beta_s, 12.5e9, 0, 1e-12));
}

int main(void) {
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("scaling", NULL, NULL);
    CU_add_test(s, "ring allreduce against hand-computed values", test_ring);
    CU_add_test(s, "tree (recursive doubling) against hand-computed values", test_tree);
    CU_add_test(s, "fit: a line recovered exactly", test_fit_exact);
    CU_add_test(s, "fit: noisy points give the objective's minimum", test_fit_noisy);
    CU_add_test(s, "fit: one size or a zero time refused", test_fit_refuses);
    CU_add_test(s, "the link read back from a ring's fit", test_net_from_fit);
    CU_add_test(s, "step prediction: wait, stretch, efficiency by hand", test_predict);
    CU_add_test(s, "step prediction with post work per bucket, by hand", test_predict_post);
    CU_add_test(s, "rounds of ring and tree", test_rounds);
    CU_add_test(s, "step prediction with progress only at MPI calls, by hand", test_predict_calls);
    CU_add_test(s, "presets", test_presets);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
