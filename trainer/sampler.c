// sampler.c — defines the next-token sampler (sampler_*): greedy, temperature, top-k and top-p
// (nucleus, Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration"), from one
// uniform draw, with scratch allocated once.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "trainer.h"

void sampler_build(sampler *s, const sampler_params *p, int V) {
    memset(s, 0, sizeof *s);
    s->p = *p;
    s->V = V;
    s->prob = sm_arena((size_t)V * sizeof(double));
    s->idx = sm_arena((size_t)V * sizeof(int));
}

void sampler_free(sampler *s) {
    sm_free(s->prob);
    sm_free(s->idx);
    memset(s, 0, sizeof *s);
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

// Candidate order: higher probability first, then lower token id (a total order: results do not
// depend on the sort's stability).
static const double *g_prob;   // qsort has no context argument; the sampler is single-threaded
static int by_prob_desc(const void *a, const void *b) {
    int i = *(const int *)a, j = *(const int *)b;
    if (g_prob[i] != g_prob[j]) return g_prob[i] > g_prob[j] ? -1 : 1;
    return (i > j) - (i < j);
}

int sampler_distribution(sampler *s, const float *logits) {
    const int V = s->V;
    const double T = s->p.temperature;
    // unnormalised softmax(logits / T), in double
    float m = logits[argmax(logits, V)];
    for (int i = 0; i < V; i++) s->prob[i] = exp(((double)logits[i] - (double)m) / T);
    int n = 0;
    if (s->p.top_k > 0 && s->p.top_k < V) {
        // the k most probable: every candidate at or above the k-th largest value (ties by id)
        for (int i = 0; i < V; i++) s->idx[i] = i;
        g_prob = s->prob;
        qsort(s->idx, (size_t)V, sizeof(int), by_prob_desc);
        n = s->p.top_k;
    } else {
        n = V;
        for (int i = 0; i < V; i++) s->idx[i] = i;
    }
    if (s->p.top_p > 0.0f && s->p.top_p < 1.0f) {
        double z = 0.0;
        for (int k = 0; k < n; k++) z += s->prob[s->idx[k]];
        // A token whose probability q is below (1-p)/n cannot be in the nucleus: every token at
        // or after it in sorted order has q' <= q, so their sum is < 1-p. Sort only the others
        // (half that bound, against rounding).
        double bound = 0.5 * (1.0 - (double)s->p.top_p) / (double)n * z;
        int kept = 0;
        for (int k = 0; k < n; k++)
            if (s->prob[s->idx[k]] >= bound) s->idx[kept++] = s->idx[k];
        g_prob = s->prob;
        qsort(s->idx, (size_t)kept, sizeof(int), by_prob_desc);
        // the smallest prefix whose probability reaches top_p
        double cum = 0.0, target = (double)s->p.top_p * z;
        n = kept;
        for (int k = 0; k < kept; k++) {
            cum += s->prob[s->idx[k]];
            if (cum >= target) {
                n = k + 1;
                break;
            }
        }
    }
    return n;
}

int sampler_sample(sampler *s, const float *logits, float u) {
    if (s->p.temperature == 0.0f || s->p.top_k == 1) return argmax(logits, s->V);
    int n = sampler_distribution(s, logits);
    double z = 0.0;
    for (int k = 0; k < n; k++) z += s->prob[s->idx[k]];
    double r = (double)u * z, cum = 0.0;
    for (int k = 0; k < n; k++) {
        cum += s->prob[s->idx[k]];
        if (r < cum) return s->idx[k];
    }
    return s->idx[n - 1];   // u rounding up to 1
}
