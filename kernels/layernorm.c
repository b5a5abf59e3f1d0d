// layernorm.c — defines layernorm_forward, residual_layernorm_forward (residual add fused in) and
// layernorm_backward (eps 1e-5).
#include "kernels_internal.h"

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

void layernorm_forward_serial(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                              const float *bias, int N, int C) {
    assert(C > 0 && "layernorm_forward_serial: C must be positive");
    for (int n = 0; n < N; n++)
        layernorm_row(out + (size_t)n * C, mean + n, rstd + n, inp + (size_t)n * C, weight, bias, C);
}

// Row n of residual_layernorm_forward.
static inline void residual_layernorm_row(float *res, float *out, float *mean, float *rstd, const float *inp1,
                                          const float *inp2, const float *weight, const float *bias, int n, int C) {
    const float *a = inp1 + (size_t)n * C, *b = inp2 + (size_t)n * C;
    float *r = res + (size_t)n * C;
    for (int c = 0; c < C; c++) r[c] = a[c] + b[c];
    layernorm_row(out + (size_t)n * C, mean + n, rstd + n, r, weight, bias, C);
}

void residual_layernorm_forward(float *res, float *out, float *mean, float *rstd, const float *inp1,
                                const float *inp2, const float *weight, const float *bias, int N, int C) {
    // inp1, inp2 are (N,C), weight and bias (C); res (N,C) = inp1 + inp2, then out (N,C), mean and
    // rstd (N) are its LayerNorm, row by row while the row is in L1
    assert(C > 0 && "residual_layernorm_forward: C must be positive");
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) residual_layernorm_row(res, out, mean, rstd, inp1, inp2, weight, bias, n, C);
}

void residual_layernorm_forward_serial(float *res, float *out, float *mean, float *rstd, const float *inp1,
                                       const float *inp2, const float *weight, const float *bias, int N, int C) {
    assert(C > 0 && "residual_layernorm_forward_serial: C must be positive");
    for (int n = 0; n < N; n++) residual_layernorm_row(res, out, mean, rstd, inp1, inp2, weight, bias, n, C);
}

// ---- backward
// Pass 1, rows in parallel: dinp += rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)), with
// norm = (x - mean) * rstd and dnorm = weight * dout. Pass 2, channels in parallel: dweight +=
// sum_n norm * dout and dbias += sum_n dout, each column summed over the rows in order, so nothing
// depends on the thread count. An AVX-512 path and a plain-C path (the other paths).
#define LN_CHUNK 64   // columns per task of pass 2 (a multiple of 16)

static void layernorm_backward_row(float *di, const float *x, const float *d, const float *weight, float m, float rs,
                                   int C) {
    // one row: x, d (dout), weight are (C); di (C) +=; m and rs are the row's mean and rstd
    float a1[LANES] = {0}, a2[LANES] = {0};
    int c = 0;
    for (; c + LANES <= C; c += LANES)
#pragma omp simd   // this loop, not the one around it (GCC's outer-loop vectorisation shuffles)
        for (int l = 0; l < LANES; l++) {
            float norm = (x[c + l] - m) * rs, dnorm = weight[c + l] * d[c + l];
            a1[l] += dnorm;
            a2[l] += dnorm * norm;
        }
    float t1 = 0.0f, t2 = 0.0f;   // the last C % LANES columns (apart: GCC makes a mess of them
    for (; c < C; c++) {          // as lanes of the vector accumulators)
        float norm = (x[c] - m) * rs, dnorm = weight[c] * d[c];
        t1 += dnorm;
        t2 += dnorm * norm;
    }
    float s1 = (lanes_sum(a1) + t1) / C, s2 = (lanes_sum(a2) + t2) / C;
    for (c = 0; c < C; c++) {
        float norm = (x[c] - m) * rs, dnorm = weight[c] * d[c];
        di[c] += rs * (dnorm - s1 - norm * s2);
    }
}

// Columns [c0, c0 + LN_CHUNK) of pass 2 (nc <= LN_CHUNK of them), plain C.
static void layernorm_backward_cols(float *dweight, float *dbias, const float *dout, const float *inp,
                                    const float *mean, const float *rstd, int N, int C, int c0, int nc) {
    // dout and inp are (N,C), mean and rstd (N); dweight and dbias (C) += over columns c0..c0+nc-1
    float dw[LN_CHUNK] = {0}, db[LN_CHUNK] = {0};
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C + c0, *d = dout + (size_t)n * C + c0;
        float m = mean[n], rs = rstd[n];
        if (nc == LN_CHUNK) {   // a fixed trip count: the accumulators vectorise
            for (int j = 0; j < LN_CHUNK; j++) {
                dw[j] += (x[j] - m) * rs * d[j];
                db[j] += d[j];
            }
        } else {
            for (int j = 0; j < nc; j++) {
                dw[j] += (x[j] - m) * rs * d[j];
                db[j] += d[j];
            }
        }
    }
    for (int j = 0; j < nc; j++) {
        dweight[c0 + j] += dw[j];
        dbias[c0 + j] += db[j];
    }
}

#ifdef KERNELS_X86
// One row of pass 1; sums in 32 float lanes (two vectors) combined in a fixed order.
KERNELS_TGT_512 static void layernorm_backward_row_512(float *di, const float *x, const float *d,
                                                       const float *weight, float m, float rs, int C) {
    // one row: x, d (dout), weight are (C); di (C) +=; m and rs are the row's mean and rstd
    const __m512 vm = _mm512_set1_ps(m), vrs = _mm512_set1_ps(rs);
    __m512 a1 = _mm512_setzero_ps(), b1 = a1, a2 = a1, b2 = a1;
    int c = 0;
    for (; c + 32 <= C; c += 32) {
        __m512 n0 = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + c), vm), vrs);
        __m512 n1 = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + c + 16), vm), vrs);
        __m512 g0 = _mm512_mul_ps(_mm512_loadu_ps(weight + c), _mm512_loadu_ps(d + c));
        __m512 g1 = _mm512_mul_ps(_mm512_loadu_ps(weight + c + 16), _mm512_loadu_ps(d + c + 16));
        a1 = _mm512_add_ps(a1, g0);
        b1 = _mm512_add_ps(b1, g1);
        a2 = _mm512_fmadd_ps(g0, n0, a2);
        b2 = _mm512_fmadd_ps(g1, n1, b2);
    }
    for (; c < C; c += 16) {   // zeros in the lanes past C add nothing
        __mmask16 k = sm_lanes_mask(C - c);
        __m512 n0 = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + c), vm), vrs);
        __m512 g0 = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, weight + c), _mm512_maskz_loadu_ps(k, d + c));
        a1 = _mm512_add_ps(a1, g0);
        a2 = _mm512_fmadd_ps(g0, n0, a2);
    }
    const __m512 s1 = _mm512_set1_ps(_mm512_reduce_add_ps(_mm512_add_ps(a1, b1)) / C);
    const __m512 s2 = _mm512_set1_ps(_mm512_reduce_add_ps(_mm512_add_ps(a2, b2)) / C);
    for (c = 0; c < C; c += 16) {
        __mmask16 k = sm_lanes_mask(C - c);
        __m512 norm = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + c), vm), vrs);
        __m512 g = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, weight + c), _mm512_maskz_loadu_ps(k, d + c));
        __m512 t = _mm512_fnmadd_ps(norm, s2, _mm512_sub_ps(g, s1));
        _mm512_mask_storeu_ps(di + c, k, _mm512_fmadd_ps(vrs, t, _mm512_maskz_loadu_ps(k, di + c)));
    }
}

// Columns [c0, c0 + nc) of pass 2, nc <= LN_CHUNK, each summed over the rows in order.
KERNELS_TGT_512 static void layernorm_backward_cols_512(float *dweight, float *dbias, const float *dout,
                                                        const float *inp, const float *mean, const float *rstd,
                                                        int N, int C, int c0, int nc) {
    // dout and inp are (N,C), mean and rstd (N); dweight and dbias (C) += over columns c0..c0+nc-1
    enum { NV = LN_CHUNK / 16 };
    __m512 dw[NV], db[NV];
    __mmask16 k[NV];
    for (int v = 0; v < NV; v++) {
        dw[v] = db[v] = _mm512_setzero_ps();
        k[v] = sm_lanes_mask(nc - 16 * v);
    }
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C + c0, *d = dout + (size_t)n * C + c0;
        const __m512 vm = _mm512_set1_ps(mean[n]), vrs = _mm512_set1_ps(rstd[n]);
        for (int v = 0; v < NV; v++) {
            __m512 dv = _mm512_maskz_loadu_ps(k[v], d + 16 * v);
            __m512 norm = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k[v], x + 16 * v), vm), vrs);
            dw[v] = _mm512_fmadd_ps(norm, dv, dw[v]);
            db[v] = _mm512_add_ps(db[v], dv);
        }
    }
    for (int v = 0; v < NV; v++) {
        float *w = dweight + c0 + 16 * v, *b = dbias + c0 + 16 * v;
        _mm512_mask_storeu_ps(w, k[v], _mm512_add_ps(_mm512_maskz_loadu_ps(k[v], w), dw[v]));
        _mm512_mask_storeu_ps(b, k[v], _mm512_add_ps(_mm512_maskz_loadu_ps(k[v], b), db[v]));
    }
}
#endif

void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, const float *mean, const float *rstd, int N, int C) {
    // dout and inp are (N,C), weight is (C), mean and rstd are (N);
    // dinp (N,C) +=, dweight (C) +=, dbias (C) +=
    assert(C > 0 && "layernorm_backward: C must be positive");
    int avx512 = kernels_pick(KERNELS_OP_LAYERNORM) == KERNELS_ISA_AVX512;
    int n_chunks = (C + LN_CHUNK - 1) / LN_CHUNK;
#pragma omp parallel
    {
#pragma omp for schedule(static)
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C, *d = dout + (size_t)n * C;
            float *di = dinp + (size_t)n * C;
#ifdef KERNELS_X86
            if (avx512) {
                layernorm_backward_row_512(di, x, d, weight, mean[n], rstd[n], C);
                continue;
            }
#endif
            layernorm_backward_row(di, x, d, weight, mean[n], rstd[n], C);
        }
        // (the implied barrier: pass 2 reads nothing pass 1 writes, but keeps the passes apart)
#pragma omp for schedule(static)
        for (int chunk = 0; chunk < n_chunks; chunk++) {
            int c0 = chunk * LN_CHUNK, nc = C - c0 < LN_CHUNK ? C - c0 : LN_CHUNK;
#ifdef KERNELS_X86
            if (avx512) {
                layernorm_backward_cols_512(dweight, dbias, dout, inp, mean, rstd, N, C, c0, nc);
                continue;
            }
#endif
            layernorm_backward_cols(dweight, dbias, dout, inp, mean, rstd, N, C, c0, nc);
        }
    }
    (void)avx512;
}
