// sampler.c — defines the next-token sampler (sampler_*): greedy, temperature, top-k and top-p
// (nucleus, Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration"), from one
// uniform draw, with scratch allocated once.
#include <math.h>
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

// Candidate order: higher probability first, then lower token id (a total order, so the result
// does not depend on how the sort works). The sorts are heaps in place: glibc's qsort mallocs a
// buffer for arrays above 1 KiB, and nothing may allocate per token.
static int after(const double *p, int a, int b) { return p[a] < p[b] || (p[a] == p[b] && a > b); }

// Restores the heap property below node i of h (n nodes): a parent comes after its children.
static void sift_down(int *h, int n, int i, const double *p) {
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n) return;
        if (c + 1 < n && after(p, h[c + 1], h[c])) c++;
        if (!after(p, h[c], h[i])) return;
        int t = h[i];
        h[i] = h[c];
        h[c] = t;
        i = c;
    }
}

// Sorts h (n) into candidate order.
static void heap_sort(int *h, int n, const double *p) {
    for (int i = n / 2 - 1; i >= 0; i--) sift_down(h, n, i, p);
    for (int end = n - 1; end > 0; end--) {
        int t = h[0];
        h[0] = h[end];
        h[end] = t;
        sift_down(h, end, 0, p);
    }
}

// The k first of ids 0..V-1 in candidate order, sorted, into h[0..k).
static void top_k(int *h, int k, int V, const double *p) {
    for (int i = 0; i < k; i++) h[i] = i;
    for (int i = k / 2 - 1; i >= 0; i--) sift_down(h, k, i, p);   // root: the last of the k kept
    for (int i = k; i < V; i++)
        if (after(p, h[0], i)) {
            h[0] = i;
            sift_down(h, k, 0, p);
        }
    heap_sort(h, k, p);
}

int sampler_distribution(sampler *s, const float *logits) {
    const int V = s->V;
    const double T = s->p.temperature;
    // unnormalised softmax(logits / T), in double
    float m = logits[argmax(logits, V)];
    for (int i = 0; i < V; i++) s->prob[i] = exp(((double)logits[i] - (double)m) / T);
    int n = 0;
    if (s->p.top_k > 0 && s->p.top_k < V) {   // the k most probable (ties by id)
        n = s->p.top_k;
        top_k(s->idx, n, V, s->prob);
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
        heap_sort(s->idx, kept, s->prob);
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
