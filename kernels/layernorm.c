// layernorm.c — defines layernorm_forward, residual_layernorm_forward (residual add fused in) and
// layernorm_backward (eps 1e-5).
#include "kernels.h"

#include <assert.h>
#include <math.h>

#define LN_EPS 1e-5f
#define LANES 16

// Sum of LANES partial sums, pairwise in a fixed order.
static inline float lanes_sum(const float *acc) {
    float t[LANES];
    for (int l = 0; l < LANES; l++) t[l] = acc[l];
    for (int w = LANES / 2; w > 0; w /= 2)
        for (int l = 0; l < w; l++) t[l] += t[l + w];
    return t[0];
}

// One row: out = (x - mean) * rstd * weight + bias, with mean and rstd saved.
static inline void layernorm_row(float *o, float *mean, float *rstd, const float *x, const float *weight,
                                 const float *bias, int C) {
    // Two passes (the mean, then the variance about it: no cancellation), each summed in
    // LANES float partial sums combined in a fixed order (vectorises; error ~C/LANES eps).
    float acc[LANES] = {0};
    int c = 0;
    for (; c + LANES <= C; c += LANES)
        for (int l = 0; l < LANES; l++) acc[l] += x[c + l];
    for (int l = 0; c < C; c++, l++) acc[l] += x[c];
    float m = lanes_sum(acc) / C;
    for (int l = 0; l < LANES; l++) acc[l] = 0.0f;
    for (c = 0; c + LANES <= C; c += LANES)
        for (int l = 0; l < LANES; l++) {
            float d = x[c + l] - m;
            acc[l] += d * d;
        }
    for (int l = 0; c < C; c++, l++) {
        float d = x[c] - m;
        acc[l] += d * d;
    }
    float v = lanes_sum(acc) / C;
    float rs = 1.0f / sqrtf(v + LN_EPS);
    for (c = 0; c < C; c++) o[c] = (x[c] - m) * rs * weight[c] + bias[c];
    *mean = m;
    *rstd = rs;
}

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                       const float *bias, int N, int C) {
    // inp is (N,C), weight and bias are (C); out is (N,C), mean and rstd are (N) (saved)
    assert(C > 0 && "layernorm_forward: C must be positive");
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
        layernorm_row(out + (size_t)n * C, mean + n, rstd + n, inp + (size_t)n * C, weight, bias, C);
}

void residual_layernorm_forward(float *res, float *out, float *mean, float *rstd, const float *inp1,
                                const float *inp2, const float *weight, const float *bias, int N, int C) {
    // inp1, inp2 are (N,C), weight and bias (C); res (N,C) = inp1 + inp2, then out (N,C), mean and
    // rstd (N) are its LayerNorm, row by row while the row is in L1
    assert(C > 0 && "residual_layernorm_forward: C must be positive");
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *a = inp1 + (size_t)n * C, *b = inp2 + (size_t)n * C;
        float *r = res + (size_t)n * C;
        for (int c = 0; c < C; c++) r[c] = a[c] + b[c];
        layernorm_row(out + (size_t)n * C, mean + n, rstd + n, r, weight, bias, C);
    }
}

void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, const float *mean, const float *rstd, int N, int C) {
    // dout and inp are (N,C), weight is (C), mean and rstd are (N);
    // dinp (N,C) +=, dweight (C) +=, dbias (C) +=
    // Pass 1, rows in parallel: dinp = rstd * (dnorm - mean(dnorm) - norm * mean(dnorm*norm)),
    // with norm = (x - mean) * rstd and dnorm = weight * dout.
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C, *d = dout + (size_t)n * C;
        float m = mean[n], rs = rstd[n];
        float a1[LANES] = {0}, a2[LANES] = {0};
        int c = 0;
        for (; c + LANES <= C; c += LANES)
            for (int l = 0; l < LANES; l++) {
                float norm = (x[c + l] - m) * rs, dnorm = weight[c + l] * d[c + l];
                a1[l] += dnorm;
                a2[l] += dnorm * norm;
            }
        for (int l = 0; c < C; c++, l++) {
            float norm = (x[c] - m) * rs, dnorm = weight[c] * d[c];
            a1[l] += dnorm;
            a2[l] += dnorm * norm;
        }
        float s1 = lanes_sum(a1), s2 = lanes_sum(a2);
        s1 /= C;
        s2 /= C;
        float *di = dinp + (size_t)n * C;
        for (c = 0; c < C; c++) {
            float norm = (x[c] - m) * rs, dnorm = weight[c] * d[c];
            di[c] += rs * (dnorm - s1 - norm * s2);
        }
    }
    // Pass 2, channels in parallel: dweight += sum_n norm * dout, dbias += sum_n dout, each
    // summed over rows in order (independent of the thread count).
    enum { CHUNK = 64 };
    int n_chunks = (C + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static)
    for (int chunk = 0; chunk < n_chunks; chunk++) {
        int c0 = chunk * CHUNK, nc = C - c0 < CHUNK ? C - c0 : CHUNK;
        float dw[CHUNK] = {0}, db[CHUNK] = {0};
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C + c0, *d = dout + (size_t)n * C + c0;
            float m = mean[n], rs = rstd[n];
            for (int j = 0; j < nc; j++) {
                dw[j] += (x[j] - m) * rs * d[j];
                db[j] += d[j];
            }
        }
        for (int j = 0; j < nc; j++) {
            dweight[c0 + j] += dw[j];
            dbias[c0 + j] += db[j];
        }
    }
}
