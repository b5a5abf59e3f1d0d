// test_sampler.c — the next-token sampler (trainer/sampler.c) against its definition, written
// here independently: softmax(logits / T) (in long double), restricted to the top_k most
// probable tokens (ties: the lower id first), then to the smallest prefix of them (same order)
// whose probability reaches top_p, renormalised; T = 0 or top_k = 1 is the argmax (lowest id).
// Over many draws from a fixed logits vector the empirical frequencies must pass a chi-square
// test against that distribution, tokens outside the allowed set must never be drawn, and a
// stratified sweep of u over [0,1) must give each token its probability's share of the sweep.
#include <CUnit/Basic.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "trainer.h"

#define MAXV 256

// ---- the reference distribution --------------------------------------------------------------

// prob[0..V) = the probability of drawing each token (0 outside the allowed set).
static void ref_distribution(const float *logits, int V, float T, int top_k, float top_p, double *prob) {
    for (int i = 0; i < V; i++) prob[i] = 0.0;
    int best = 0;
    for (int i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    if (T == 0.0f || top_k == 1) {
        prob[best] = 1.0;
        return;
    }
    // order: logit descending, then id ascending (insertion sort: stable, so equal logits keep id order)
    int order[MAXV];
    for (int i = 0; i < V; i++) {
        int j = i;
        while (j > 0 && logits[order[j - 1]] < logits[i]) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = i;
    }
    long double q[MAXV];
    for (int i = 0; i < V; i++) q[i] = expl(((long double)logits[i] - (long double)logits[best]) / (long double)T);
    int n = top_k > 0 && top_k < V ? top_k : V;
    if (top_p < 1.0f) {
        long double z = 0.0L, cum = 0.0L;
        for (int j = 0; j < n; j++) z += q[order[j]];
        int m = n;
        for (int j = 0; j < n; j++) {
            cum += q[order[j]];
            if (cum >= (long double)top_p * z) {
                m = j + 1;
                break;
            }
        }
        n = m;
    }
    long double z = 0.0L;
    for (int j = 0; j < n; j++) z += q[order[j]];
    for (int j = 0; j < n; j++) prob[order[j]] = (double)(q[order[j]] / z);
}

// ---- draws -----------------------------------------------------------------------------------

// splitmix64 (Steele, Lea, Flood 2014): the test's own generator, not the project's
static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
// u in [0, 1) on the 2^-24 grid every float in [0, 1) of that spacing can hold
static float uniform(uint64_t *x) { return (float)(splitmix64(x) >> 40) * (1.0f / 16777216.0f); }

// The upper-alpha critical value of chi-square with df degrees of freedom, by the Wilson-Hilferty
// cube-root normal approximation (Wilson & Hilferty 1931): chi2 ~= df (1 - 2/(9 df) + z sqrt(2/(9 df)))^3,
// z the standard normal's upper-alpha point. Within a few percent for df >= 3; at df = 1, 2 it
// overestimates (a looser bound: 27.5 vs the exact 23.9 at alpha = 1e-6, df = 1).
static double chi2_critical(int df, double z) {
    double a = 2.0 / (9.0 * df);
    double c = 1.0 - a + z * sqrt(a);
    return df * c * c * c;
}
// alpha = 1e-6 (z = 4.753424): with a fixed seed the test is deterministic; the alpha says how
// unlikely a false failure would be for another seed or another (correct) candidate order, over
// the ~15 distributions below (~1.5e-5 in all). A wrong distribution (the power checks below)
// scores in the thousands at these draw counts.
static const double Z_1E6 = 4.753424;

// Pearson's statistic of counts against N draws of prob; bins: every token with expected count
// >= 5 on its own, the others pooled (the pool merged into the smallest bin if it is < 5 itself).
// Tokens of probability 0 are not bins (a draw of one fails the test separately). *df = bins - 1.
static double chi2_stat(const long *counts, const double *prob, int V, long N, int *df) {
    double stat = 0.0, pool_e = 0.0, pool_o = 0.0;
    int bins = 0, smallest = -1;
    double e_small = INFINITY;
    for (int i = 0; i < V; i++) {
        if (prob[i] <= 0.0) continue;
        double e = prob[i] * (double)N;
        if (e < 5.0) {
            pool_e += e;
            pool_o += (double)counts[i];
            continue;
        }
        bins++;
        if (e < e_small) e_small = e, smallest = i;
    }
    for (int i = 0; i < V; i++) {
        if (prob[i] <= 0.0) continue;
        double e = prob[i] * (double)N, o = (double)counts[i];
        if (e < 5.0) continue;
        if (i == smallest && pool_e > 0.0 && pool_e < 5.0) e += pool_e, o += pool_o;   // merged
        stat += (o - e) * (o - e) / e;
    }
    if (pool_e >= 5.0) {
        bins++;
        stat += (pool_o - pool_e) * (pool_o - pool_e) / pool_e;
    }
    *df = bins - 1;
    return stat;
}

typedef struct {
    const char *name;
    float T;
    int top_k;
    float top_p;
} config;

// Runs the checks for one (logits, config): distribution, random draws + chi-square, a stratified
// sweep, and draws at the ends of [0, 1). V real tokens; logits may have padded columns after them
// (the sampler must never look at them). Returns the counts' chi-square against `prob_other` in
// *stat_other when that is not NULL (power checks).
static void check_config(const float *logits, int V, const config *c, long N, int M, uint64_t seed,
                         const double *prob_other, double *stat_other) {
    double prob[MAXV];
    ref_distribution(logits, V, c->T, c->top_k, c->top_p, prob);
    int n_allowed = 0;
    for (int i = 0; i < V; i++) n_allowed += prob[i] > 0.0;
    sampler s;
    sampler_params p = {.temperature = c->T, .top_k = c->top_k, .top_p = c->top_p};
    sampler_build(&s, &p, V);

    // 1. the distribution the sampler says it draws from: the same set, the same probabilities
    // (both computed in at least double from the same float logits: 1e-12 relative)
    if (c->T > 0.0f && c->top_k != 1) {
        int n = sampler_distribution(&s, logits);
        double z = 0.0;
        int in_set = 1;
        for (int k = 0; k < n; k++) {
            z += s.prob[s.idx[k]];
            in_set &= s.idx[k] >= 0 && s.idx[k] < V && prob[s.idx[k]] > 0.0;
        }
        double worst = 0.0;
        for (int k = 0; k < n && in_set; k++) {
            double e = fabs(s.prob[s.idx[k]] / z - prob[s.idx[k]]) / prob[s.idx[k]];
            if (e > worst) worst = e;
        }
        if (n != n_allowed || !in_set || worst > 1e-12)
            printf("\n  %s: sampler_distribution gives %d candidates (reference %d), in the set: %d, worst rel %.3g",
                   c->name, n, n_allowed, in_set, worst);
        CU_ASSERT_EQUAL(n, n_allowed);
        CU_ASSERT(in_set);
        CU_ASSERT(worst <= 1e-12);
    }

    // 2. N random draws: nothing outside the set; chi-square below the bound
    long counts[MAXV] = {0}, outside = 0;
    uint64_t x = seed;
    for (long d = 0; d < N; d++) {
        int t = sampler_sample(&s, logits, uniform(&x));
        if (t < 0 || t >= V || prob[t] <= 0.0) {
            outside++;
            continue;
        }
        counts[t]++;
    }
    CU_ASSERT_EQUAL(outside, 0);
    if (n_allowed == 1) {
        for (int i = 0; i < V; i++)
            if (prob[i] > 0.0) CU_ASSERT_EQUAL(counts[i], N);
        printf("\n  %-44s %3d allowed: all %ld draws the one token", c->name, n_allowed, N);
    } else {
        int df;
        double stat = chi2_stat(counts, prob, V, N, &df), bound = chi2_critical(df, Z_1E6);
        printf("\n  %-44s %3d allowed: chi2 %8.2f, df %3d, bound %6.2f (alpha 1e-6), %ld draws", c->name, n_allowed,
               stat, df, bound, N);
        CU_ASSERT(df >= 1);
        CU_ASSERT(stat <= bound);
        if (stat_other) {
            int df2;
            *stat_other = chi2_stat(counts, prob_other, V, N, &df2);
        }
    }

    // 3. a stratified sweep u = (i + 1/2)/M: inverse-CDF sampling gives each token an interval of
    // [0,1) of its probability's length, whatever the candidates' order, so it gets prob*M of the
    // points, +-1 at each end of its interval (+-2; the cumulative sums' rounding is ~1e-16)
    long strat[MAXV] = {0};
    long bad_strat = 0;
    for (int i = 0; i < M; i++) {
        int t = sampler_sample(&s, logits, ((float)i + 0.5f) / (float)M);
        if (t < 0 || t >= V || prob[t] <= 0.0)
            bad_strat++;
        else
            strat[t]++;
    }
    CU_ASSERT_EQUAL(bad_strat, 0);
    double worst = 0.0;
    for (int i = 0; i < V; i++) {
        double e = fabs((double)strat[i] - prob[i] * M);
        if (e > worst) worst = e;
    }
    if (worst > 2.0) printf("\n  %s: stratified sweep off by %.2f points of %d", c->name, worst, M);
    CU_ASSERT(worst <= 2.0);

    // 4. the ends of [0, 1): still inside the set
    const float ends[] = {0.0f, 1e-7f, 0.5f, 0.99999994f /* the largest float below 1 */};
    for (size_t i = 0; i < sizeof ends / sizeof ends[0]; i++) {
        int t = sampler_sample(&s, logits, ends[i]);
        CU_ASSERT(t >= 0 && t < V && prob[t] > 0.0);
    }
    sampler_free(&s);
}

// ---- the logits vectors ----------------------------------------------------------------------

// 8 distinct logits, not sorted by id
static const float L8[8] = {1.2f, -0.3f, 2.5f, 0.7f, 2.1f, -1.5f, 0.0f, 1.9f};
// ties: a 3-way tie at the top (ids 1, 2, 3), a 2-way tie below (4, 5) and more below
static const float LTIE[8] = {1.0f, 3.0f, 3.0f, 3.0f, 2.0f, 2.0f, 0.5f, -1.0f};
// ties for top-p: 4 equal at the top
static const float LTIE_P[8] = {0.0f, 2.0f, 2.0f, 0.0f, 2.0f, 0.0f, 2.0f, 0.0f};

static void random_logits(float *l, int V, float sd, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < V; i += 2) {   // Box-Muller from the test's own generator
        double u1 = ((double)(splitmix64(&x) >> 11) + 1.0) / 9007199254740992.0;
        double u2 = (double)(splitmix64(&x) >> 11) / 9007199254740992.0;
        double r = sqrt(-2.0 * log(u1));
        l[i] = (float)(sd * r * cos(2.0 * M_PI * u2));
        if (i + 1 < V) l[i + 1] = (float)(sd * r * sin(2.0 * M_PI * u2));
    }
}

static void test_small_vocab(void) {
    const config cs[] = {
        {"T=1 (plain softmax)", 1.0f, 0, 1.0f},
        {"T=0.5", 0.5f, 0, 1.0f},
        {"T=2, top-k 3", 2.0f, 3, 1.0f},
        {"T=1, top-p 0.8", 1.0f, 0, 0.8f},
        {"T=0.7, top-k 5, top-p 0.9", 0.7f, 5, 0.9f},
        {"T=1, top-k 8 (= V: no restriction)", 1.0f, 8, 1.0f},
        {"T=1, top-k 1000 (> V)", 1.0f, 1000, 1.0f},
        {"T=0.05 (nearly greedy)", 0.05f, 0, 1.0f},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) check_config(L8, 8, &cs[i], 200000, 1 << 16, 100 + i, NULL, NULL);
    printf("\n");
}

static void test_ties(void) {
    const config cs[] = {
        {"ties: T=1, top-k 2 (of a 3-way tie: ids 1, 2)", 1.0f, 2, 1.0f},
        {"ties: T=1, top-k 4 (the tie, then id 4 of 4,5)", 1.0f, 4, 1.0f},
        {"ties: T=1.5, top-p 0.5", 1.5f, 0, 0.5f},
        {"ties: T=1", 1.0f, 0, 1.0f},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) check_config(LTIE, 8, &cs[i], 200000, 1 << 16, 200 + i, NULL, NULL);
    // the set itself, spelled out: top-k 2 of the 3-way tie keeps ids 1 and 2
    double prob[MAXV];
    ref_distribution(LTIE, 8, 1.0f, 2, 1.0f, prob);
    CU_ASSERT(prob[1] == 0.5 && prob[2] == 0.5 && prob[3] == 0.0);
    // 4 equal tokens (ids 1, 2, 4, 6) of probability 0.22 each, the other 4 0.03 each: top-p 0.45
    // needs 3 of them (0.44 < 0.45 <= 0.66): ids 1, 2, 4
    const config cp = {"ties: T=1, top-p 0.45 (3 of 4 equal: 1, 2, 4)", 1.0f, 0, 0.45f};
    check_config(LTIE_P, 8, &cp, 200000, 1 << 16, 300, NULL, NULL);
    ref_distribution(LTIE_P, 8, 1.0f, 0, 0.45f, prob);
    CU_ASSERT(prob[1] > 0.33 && prob[2] > 0.33 && prob[4] > 0.33 && prob[6] == 0.0 && prob[0] == 0.0);
    // top-p exactly reached: 4 equal tokens, top-p 0.5: two of them hold exactly half (the sums are
    // exact in binary), and "reaches" is >=: ids 0 and 1, not 3 tokens
    const float four[4] = {1.0f, 1.0f, 1.0f, 1.0f};
    const config ch = {"4 equal, top-p 0.5 (reached exactly: ids 0, 1)", 1.0f, 0, 0.5f};
    check_config(four, 4, &ch, 100000, 1 << 16, 302, NULL, NULL);
    ref_distribution(four, 4, 1.0f, 0, 0.5f, prob);
    CU_ASSERT(prob[0] == 0.5 && prob[1] == 0.5 && prob[2] == 0.0 && prob[3] == 0.0);
    // all equal: uniform
    float flat[16];
    for (int i = 0; i < 16; i++) flat[i] = 0.25f;
    const config cu = {"all 16 equal: uniform", 1.0f, 0, 1.0f};
    check_config(flat, 16, &cu, 160000, 1 << 16, 301, NULL, NULL);
    printf("\n");
}

static void test_vocab_256(void) {
    float l[MAXV];
    random_logits(l, 256, 1.5f, 7);
    const config cs[] = {
        {"V=256: T=0.9, top-k 40, top-p 0.95", 0.9f, 40, 0.95f},
        {"V=256: T=1.3, top-p 0.9", 1.3f, 0, 0.9f},
        {"V=256: T=1", 1.0f, 0, 1.0f},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) check_config(l, 256, &cs[i], 100000, 1 << 14, 400 + i, NULL, NULL);
    printf("\n");
}

// The padded columns of the logits (Vp > V) are never drawn, however large.
static void test_padding(void) {
    float l[64];
    random_logits(l, 50, 1.0f, 9);
    for (int i = 50; i < 64; i++) l[i] = 1000.0f;
    const config cs[] = {{"V=50 of Vp=64 (padding at 1000): T=1", 1.0f, 0, 1.0f},
                         {"V=50 of Vp=64: T=1, top-k 10", 1.0f, 10, 1.0f},
                         {"V=50 of Vp=64: T=1, top-p 0.7", 1.0f, 0, 0.7f}};
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) check_config(l, 50, &cs[i], 100000, 1 << 14, 500 + i, NULL, NULL);
    // greedy too
    sampler s;
    sampler_params p = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f};
    sampler_build(&s, &p, 50);
    int t = sampler_sample(&s, l, 0.5f);
    CU_ASSERT(t >= 0 && t < 50);
    sampler_free(&s);
    printf("\n");
}

// T = 0 and top_k = 1: the argmax, the lowest id among equal maxima, for every u.
static void test_greedy(void) {
    const float l[8] = {0.5f, 1.0f, -2.0f, 3.0f, 1.0f, 3.0f, 2.9f, 0.0f};   // max 3.0 at ids 3 and 5
    const sampler_params ps[] = {{0.0f, 0, 1.0f}, {0.0f, 5, 0.5f}, {1.0f, 1, 1.0f}, {5.0f, 1, 0.9f}};
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++) {
        sampler s;
        sampler_build(&s, &ps[i], 8);
        int wrong = 0;
        for (int k = 0; k <= 1000; k++) wrong += sampler_sample(&s, l, k == 1000 ? 0.99999994f : k / 1000.0f) != 3;
        CU_ASSERT_EQUAL(wrong, 0);
        sampler_free(&s);
    }
}

// The checks can fail: the draws of one distribution score far above the bound against another
// (a temperature ignored; a temperature 15% off on the right support).
static void test_power(void) {
    double wrong[MAXV];
    double stat;
    // drawn at T=0.5, scored against T=1
    ref_distribution(L8, 8, 1.0f, 0, 1.0f, wrong);
    const config c1 = {"power: drawn at T=0.5", 0.5f, 0, 1.0f};
    check_config(L8, 8, &c1, 200000, 1 << 16, 600, wrong, &stat);
    printf("\n  ... scored against T=1: chi2 %.0f (bound %.2f at df 7)", stat, chi2_critical(7, Z_1E6));
    CU_ASSERT(stat > 10 * chi2_critical(7, Z_1E6));
    // drawn at T=1.3 top-p 0.9 over V=256, scored against the softmax at T=1.5 renormalised over the
    // same tokens (a temperature 15% off, on the support the sampler allows)
    float l[MAXV];
    random_logits(l, 256, 1.5f, 7);
    double p_right[MAXV];
    ref_distribution(l, 256, 1.3f, 0, 0.9f, p_right);
    ref_distribution(l, 256, 1.5f, 0, 1.0f, wrong);
    double zw = 0.0;
    for (int i = 0; i < 256; i++)
        if (p_right[i] > 0.0) zw += wrong[i];
    for (int i = 0; i < 256; i++) wrong[i] = p_right[i] > 0.0 ? wrong[i] / zw : 0.0;
    const config c2 = {"power: V=256, T=1.3, top-p 0.9", 1.3f, 0, 0.9f};
    int df = 0;
    for (int i = 0; i < 256; i++) df += p_right[i] > 0.0;
    check_config(l, 256, &c2, 100000, 1 << 14, 601, wrong, &stat);
    printf("\n  ... scored against T=1.5 on the same tokens: chi2 %.0f (bound %.2f at df %d)", stat,
           chi2_critical(df - 1, Z_1E6), df - 1);
    CU_ASSERT(stat > 3 * chi2_critical(df - 1, Z_1E6));
    printf("\n");
}

int main(void) {
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("sampler", NULL, NULL);
    CU_add_test(s, "T, top-k, top-p over 8 distinct logits", test_small_vocab);
    CU_add_test(s, "ties (top-k and top-p boundaries inside a tie; uniform)", test_ties);
    CU_add_test(s, "V=256 random logits", test_vocab_256);
    CU_add_test(s, "padded columns never drawn", test_padding);
    CU_add_test(s, "greedy: T=0 and top-k 1, lowest id among equal maxima", test_greedy);
    CU_add_test(s, "power: a wrong distribution fails the bound", test_power);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    return fails != 0;
}
