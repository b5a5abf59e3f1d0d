// softmax_xent.c — defines softmax_xent (fused softmax + cross-entropy loss and its gradient).
#include "kernels.h"

#include <assert.h>
#include <math.h>

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
        float mx = -INFINITY;
        for (int j = 0; j < V; j++) mx = fmaxf(mx, l[j]);
        float lt = l[tgt];   // read before dlogits (which may alias) is written
        // sum of exp in double, in 8 partial sums combined in a fixed order
        double acc[8] = {0};
        int j = 0;
        for (; j + 8 <= V; j += 8)
            for (int k = 0; k < 8; k++) acc[k] += expf(l[j + k] - mx);
        for (int k = 0; j < V; j++, k++) acc[k] += expf(l[j] - mx);
        double sum = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
        losses[n] = (float)(log(sum) - ((double)lt - mx));
        if (dlogits) {
            float *d = dlogits + (size_t)n * Vp;
            float inv = (float)(1.0 / sum);
            for (j = 0; j < V; j++) d[j] = expf(l[j] - mx) * inv * dloss;
            d[tgt] -= dloss;
            for (j = V; j < Vp; j++) d[j] = 0.0f;
        }
    }
    double total = 0.0;
    for (int n = 0; n < N; n++) total += losses[n];
    return total;
}
