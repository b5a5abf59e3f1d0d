// softmax_xent.c — defines softmax_xent (fused softmax + cross-entropy loss and its gradient).
// Per row: the max (one read), the exps written straight into dlogits while they are summed
// (exp() runs once per logit), then an in-place scale while the row (Vp floats) is in L2.
#include "kernels_internal.h"

#include <assert.h>
#include <math.h>

#define LANES 16
#define EXP_BLOCK 256   // a multiple of LANES

double softmax_xent(float *losses, float *dlogits, const float *logits, const int *targets, int N, int V, int Vp,
                    float dloss) {
    // logits is (N,Vp) with V real columns, targets is (N); losses is (N);
    // dlogits (N,Vp) or NULL, may alias logits: (p - onehot) * dloss over [0,V), 0 over [V,Vp)
    assert(V > 0 && Vp >= V && "softmax_xent: need 0 < V <= Vp");
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *l = logits + (size_t)n * Vp;
        int tgt = targets[n];
        assert(tgt >= 0 && tgt < V && "softmax_xent: target id outside [0, V) (tokenizer/vocab mismatch?)");
        // max and sum of exp in LANES partial results combined in a fixed order (vectorises);
        // the sum is accumulated in double
        float m[LANES];
        for (int k = 0; k < LANES; k++) m[k] = -INFINITY;
        int j = 0;
        for (; j + LANES <= V; j += LANES)
            for (int k = 0; k < LANES; k++) m[k] = l[j + k] > m[k] ? l[j + k] : m[k];
        for (int k = 0; j < V; j++, k++) m[k] = l[j] > m[k] ? l[j] : m[k];
        for (int w = LANES / 2; w > 0; w /= 2)
            for (int k = 0; k < w; k++) m[k] = m[k + w] > m[k] ? m[k + w] : m[k];
        float mx = m[0];
        float lt = l[tgt];   // read before dlogits (which may alias) is written
        // exps of a block (vectorised), kept in dlogits when it is wanted (so exp() runs once per
        // logit), then added up in double
        float *d = dlogits ? dlogits + (size_t)n * Vp : NULL;
        double acc[LANES] = {0};
        for (int j0 = 0; j0 < V; j0 += EXP_BLOCK) {
            int nb = V - j0 < EXP_BLOCK ? V - j0 : EXP_BLOCK;
            float e_local[EXP_BLOCK];
            float *e = d ? d + j0 : e_local;
            for (j = 0; j < nb; j++) e[j] = sm_expf_inline(l[j0 + j] - mx);
            int k0 = 0;
            for (; k0 + LANES <= nb; k0 += LANES)
                for (int k = 0; k < LANES; k++) acc[k] += e[k0 + k];
            for (int k = 0; k0 + k < nb; k++) acc[k] += e[k0 + k];
        }
        for (int w = LANES / 2; w > 0; w /= 2)
            for (int k = 0; k < w; k++) acc[k] += acc[k + w];
        double sum = acc[0];
        losses[n] = (float)(log(sum) - ((double)lt - mx));
        if (d) {   // the row is still in L2: scale the exps in place
            float inv = (float)(1.0 / sum);
            for (j = 0; j < V; j++) d[j] = d[j] * inv * dloss;
            d[tgt] -= dloss;
            for (j = V; j < Vp; j++) d[j] = 0.0f;
        }
    }
    double total = 0.0;
    for (int n = 0; n < N; n++) total += losses[n];
    return total;
}
