// softmax_xent.c — defines softmax_xent (fused softmax + cross-entropy loss and its gradient).
// Per row: the max (one read of the row from memory, which leaves it in L2), the exps written
// straight into dlogits while they are summed (exp() runs once per logit), then an in-place scale
// while the row (Vp floats) is in L2. An AVX-512 path and a plain-C path (the other paths).
#include "kernels_internal.h"

#include <assert.h>
#include <math.h>
#include <omp.h>

#define LANES 16
#define EXP_BLOCK 256   // a multiple of LANES

// One row, plain C (vectorised by the compiler): writes d (Vp) when d is non-NULL, and the row's max
// and 1/sum of exps to *smax, *sinv when smax is non-NULL; returns the loss.
static float softmax_xent_row(float *d, float *smax, float *sinv, const float *l, int tgt, int V, int Vp, float dloss) {
    // l is (Vp) with V real columns; d (Vp) or NULL, may alias l
    // max and sum of exp in LANES partial results combined in a fixed order (vectorises);
    // the sum is accumulated in double
    float mx = row_max(l, V);
    int j;
    float lt = l[tgt];   // read before d (which may alias) is written
    // exps of a block (vectorised), kept in d when it is wanted (so exp() runs once per
    // logit), then added up in double
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
    if (smax) *smax = mx, *sinv = (float)(1.0 / sum);
    if (d) {   // the row is still in L2: scale the exps in place
        float inv = (float)(1.0 / sum);
        for (j = 0; j < V; j++) d[j] = d[j] * inv * dloss;
        d[tgt] -= dloss;
        for (j = V; j < Vp; j++) d[j] = 0.0f;
    }
    return (float)(log(sum) - ((double)lt - mx));
}

#ifdef KERNELS_X86
// AVX-512: the exps cost more than moving the row, so each thread walks its rows as a pipeline.
// While row n's exps are computed (from L2), the max of row n+1 is taken from memory in the same
// loop, so the read of the next row hides behind the arithmetic; row n's exps go to dlogits
// (still in L2) and are scaled in place. Rows stay independent: the results do not depend on how
// rows are split over threads.
#define SX_PREFETCH 512   // floats ahead (2 KiB) of the streaming read that are prefetched: the
                          // hardware prefetcher alone leaves the read well short of the bandwidth
#define SX_FBLOCK 128     // the exps of a block are added in float (4 terms a lane: relative error
                          // <= 3 u), then in double: the loss keeps its few-eps accuracy

KERNELS_INLINE_512 __m512d sx_lo_pd(__m512 x) { return _mm512_cvtps_pd(_mm512_castps512_ps256(x)); }
KERNELS_INLINE_512 __m512d sx_hi_pd(__m512 x) {
    return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
}

// Lane-wise maxima of l[0..V) (vmaxps returns its second operand for a NaN: NaNs are skipped, as
// in the plain path, and reach the loss through the exps).
KERNELS_INLINE_512 __m512 sx_row_max(const float *l, int V) {
    // l is (V)
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    __m512 m0 = ninf, m1 = ninf, m2 = ninf, m3 = ninf;
    int j = 0;
    for (; j + 64 <= V; j += 64) {
        for (int c = 0; c < 64; c += 16) _mm_prefetch((const char *)(l + j + SX_PREFETCH + c), _MM_HINT_T0);
        m0 = _mm512_max_ps(_mm512_loadu_ps(l + j), m0);
        m1 = _mm512_max_ps(_mm512_loadu_ps(l + j + 16), m1);
        m2 = _mm512_max_ps(_mm512_loadu_ps(l + j + 32), m2);
        m3 = _mm512_max_ps(_mm512_loadu_ps(l + j + 48), m3);
    }
    for (; j < V; j += 16) m0 = _mm512_max_ps(_mm512_mask_loadu_ps(ninf, sm_lanes_mask(V - j), l + j), m0);
    return _mm512_max_ps(_mm512_max_ps(m0, m1), _mm512_max_ps(m2, m3));
}

// e = exp(l - mx) over l[0..V), stored to d[0..V) when store is set (d may alias l); returns the
// sum of e in double, in a fixed order. Also returns in *next_max the lane-wise maxima of
// ln[0..V) (the next row; pass l itself when there is none).
KERNELS_INLINE_512 double sx_exp_pass(float *d, const float *l, const float *ln, int V, float mx, __m512 *next_max,
                                      int store) {
    // l and ln are (V); d is (V) when store is set
    const __m512 ninf = _mm512_set1_ps(-INFINITY), vmx = _mm512_set1_ps(mx);
    __m512d s0 = _mm512_setzero_pd(), s1 = s0, s2 = s0, s3 = s0;
    __m512 nm0 = ninf, nm1 = ninf;
    int j = 0;
    for (; j + SX_FBLOCK <= V; j += SX_FBLOCK) {
        __m512 f0 = _mm512_setzero_ps(), f1 = f0;
        for (int c = j; c < j + SX_FBLOCK; c += 32) {
            _mm_prefetch((const char *)(ln + c + SX_PREFETCH), _MM_HINT_T0);
            _mm_prefetch((const char *)(ln + c + SX_PREFETCH + 16), _MM_HINT_T0);
            nm0 = _mm512_max_ps(_mm512_loadu_ps(ln + c), nm0);
            nm1 = _mm512_max_ps(_mm512_loadu_ps(ln + c + 16), nm1);
            __m512 e0 = sm_exp512_nonpos(_mm512_sub_ps(_mm512_loadu_ps(l + c), vmx));
            __m512 e1 = sm_exp512_nonpos(_mm512_sub_ps(_mm512_loadu_ps(l + c + 16), vmx));
            if (store) {
                _mm512_storeu_ps(d + c, e0);
                _mm512_storeu_ps(d + c + 16, e1);
            }
            f0 = _mm512_add_ps(f0, e0);
            f1 = _mm512_add_ps(f1, e1);
        }
        s0 = _mm512_add_pd(s0, sx_lo_pd(f0));
        s1 = _mm512_add_pd(s1, sx_hi_pd(f0));
        s2 = _mm512_add_pd(s2, sx_lo_pd(f1));
        s3 = _mm512_add_pd(s3, sx_hi_pd(f1));
    }
    for (; j < V; j += 16) {
        __mmask16 k = sm_lanes_mask(V - j);
        nm0 = _mm512_max_ps(_mm512_mask_loadu_ps(ninf, k, ln + j), nm0);
        __m512 e = _mm512_maskz_mov_ps(k, sm_exp512_nonpos(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, l + j), vmx)));
        if (store) _mm512_mask_storeu_ps(d + j, k, e);
        s0 = _mm512_add_pd(s0, sx_lo_pd(e));
        s1 = _mm512_add_pd(s1, sx_hi_pd(e));
    }
    *next_max = _mm512_max_ps(nm0, nm1);
    return _mm512_reduce_add_pd(_mm512_add_pd(_mm512_add_pd(s0, s2), _mm512_add_pd(s1, s3)));
}

// softmax_xent on the rows [n0, n1) (one thread's share), with AVX-512.
KERNELS_TGT_512 static void softmax_xent_rows_512(float *losses, float *dlogits, float *smax, float *sinv,
                                                  const float *logits, const int *targets, int n0, int n1, int V,
                                                  int Vp, float dloss) {
    // logits (N,Vp), dlogits (N,Vp) or NULL, targets and losses (N), smax and sinv (N) or NULL:
    // rows n0..n1-1 of them
    if (n0 >= n1) return;
    __m512 vmax = sx_row_max(logits + (size_t)n0 * Vp, V);
    for (int n = n0; n < n1; n++) {
        const float *l = logits + (size_t)n * Vp;
        const float *ln = n + 1 < n1 ? l + Vp : l;
        float *d = dlogits ? dlogits + (size_t)n * Vp : NULL;
        int tgt = targets[n];
        assert(tgt >= 0 && tgt < V && "softmax_xent: target id outside [0, V) (tokenizer/vocab mismatch?)");
        float mx = _mm512_reduce_max_ps(vmax);
        float lt = l[tgt];   // read before d (which may alias) is written
        double sum = d ? sx_exp_pass(d, l, ln, V, mx, &vmax, 1) : sx_exp_pass(NULL, l, ln, V, mx, &vmax, 0);
        losses[n] = (float)(log(sum) - ((double)lt - mx));
        if (smax) smax[n] = mx, sinv[n] = (float)(1.0 / sum);
        if (!d) continue;
        // the row is in L2: scale the exps in place, then zeros over the padding
        const __m512 vinv = _mm512_set1_ps((float)(1.0 / sum)), vdl = _mm512_set1_ps(dloss);
        int j = 0;
        for (; j + 16 <= V; j += 16)
            _mm512_storeu_ps(d + j, _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(d + j), vinv), vdl));
        for (; j < Vp; j += 16) {
            __mmask16 k = sm_lanes_mask(V - j);
            __m512 p = _mm512_maskz_mul_ps(k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, d + j), vinv), vdl);
            _mm512_mask_storeu_ps(d + j, sm_lanes_mask(Vp - j), p);
        }
        d[tgt] -= dloss;
    }
}
#endif

static double softmax_xent_any(float *losses, float *dlogits, float *smax, float *sinv, const float *logits,
                               const int *targets, int N, int V, int Vp, float dloss) {
    // logits is (N,Vp) with V real columns, targets is (N); losses is (N);
    // dlogits (N,Vp) or NULL, may alias logits: (p - onehot) * dloss over [0,V), 0 over [V,Vp);
    // smax, sinv (N) or NULL: each row's max and 1/sum of exps
    assert(V > 0 && Vp >= V && "softmax_xent: need 0 < V <= Vp");
#ifdef KERNELS_X86
    if (kernels_pick(KERNELS_OP_SOFTMAX_XENT) == KERNELS_ISA_AVX512) {
#pragma omp parallel
        {   // contiguous blocks of rows, one per thread (as schedule(static) would split them)
            int nt = omp_get_num_threads(), t = omp_get_thread_num();
            int q = N / nt, r = N % nt, n0 = t * q + (t < r ? t : r), n1 = n0 + q + (t < r);
            softmax_xent_rows_512(losses, dlogits, smax, sinv, logits, targets, n0, n1, V, Vp, dloss);
        }
    } else
#endif
    {
#pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++) {
            int tgt = targets[n];
            assert(tgt >= 0 && tgt < V && "softmax_xent: target id outside [0, V) (tokenizer/vocab mismatch?)");
            float *d = dlogits ? dlogits + (size_t)n * Vp : NULL;
            losses[n] = softmax_xent_row(d, smax ? smax + n : NULL, sinv ? sinv + n : NULL, logits + (size_t)n * Vp,
                                         tgt, V, Vp, dloss);
        }
    }
    double total = 0.0;
    for (int n = 0; n < N; n++) total += losses[n];
    return total;
}

double softmax_xent(float *losses, float *dlogits, const float *logits, const int *targets, int N, int V, int Vp,
                    float dloss) {
    return softmax_xent_any(losses, dlogits, NULL, NULL, logits, targets, N, V, Vp, dloss);
}

double softmax_xent_stats(float *losses, float *row_max, float *row_inv, const float *logits, const int *targets, int N,
                          int V, int Vp) {
    // logits (N,Vp), targets (N); losses, row_max, row_inv (N)
    return softmax_xent_any(losses, NULL, row_max, row_inv, logits, targets, N, V, Vp, 0.0f);
}

// ---------------------------------------------------------------------------------------------
// The gradient recomputed from the row statistics (the LM head's fused backward): the values
// softmax_xent writes to dlogits, bit for bit, on the same path.

#ifdef KERNELS_X86
KERNELS_TGT_512 static void grad_rows_512(float *d, int ldd, const float *logits, int ldl, const float *smax,
                                          const float *sinv, const int *targets, int n0, int n1, int v0, int v1,
                                          int V, float dloss) {
    const __m512 vdl = _mm512_set1_ps(dloss);
    enum { AHEAD = 8 };   // rows: each row's piece of the block is only v1 - v0 floats (1 KiB) from memory,
                          // too short for the hardware prefetcher to get going
    for (int n = n0; n < n1 && n < n0 + AHEAD; n++)
        for (int j = v0; j < v1; j += 16) _mm_prefetch((const char *)(logits + (size_t)n * ldl + j), _MM_HINT_T0);
    for (int n = n0; n < n1; n++) {
        const float *l = logits + (size_t)n * ldl;
        if (n + AHEAD < n1)
            for (int j = v0; j < v1; j += 16) _mm_prefetch((const char *)(l + (size_t)AHEAD * ldl + j), _MM_HINT_T0);
        // and this row's piece of the next block into L2: a block's worth of products from now
        for (int j = v1; j < 2 * v1 - v0 && j < ldl; j += 16) _mm_prefetch((const char *)(l + j), _MM_HINT_T1);
        float *dn = d + (size_t)(n - n0) * ldd - v0;   // dn[j] for j in [v0, v1)
        const __m512 vmx = _mm512_set1_ps(smax[n]), vinv = _mm512_set1_ps(sinv[n]);
        for (int j = v0; j < v1; j += 16) {
            __mmask16 w = sm_lanes_mask(v1 - j), k = sm_lanes_mask(V - j) & w;
            // as sx_exp_pass and the scaling after it: e = exp(l - max), (e * inv) * dloss; 0 past V
            __m512 e = sm_exp512_nonpos(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, l + j), vmx));
            __m512 p = _mm512_maskz_mul_ps(k, _mm512_mul_ps(e, vinv), vdl);
            _mm512_mask_storeu_ps(dn + j, w, p);
        }
        int tgt = targets[n];
        if (tgt >= v0 && tgt < v1) dn[tgt] -= dloss;
    }
}
#endif

void softmax_xent_grad_block(float *d, int ldd, const float *logits, int ldl, const float *row_max,
                             const float *row_inv, const int *targets, int n0, int n1, int v0, int v1, int V,
                             float dloss) {
#ifdef KERNELS_X86
    if (kernels_pick(KERNELS_OP_SOFTMAX_XENT) == KERNELS_ISA_AVX512) {
        grad_rows_512(d, ldd, logits, ldl, row_max, row_inv, targets, n0, n1, v0, v1, V, dloss);
        return;
    }
#endif
    for (int n = n0; n < n1; n++) {
        const float *l = logits + (size_t)n * ldl;
        float *dn = d + (size_t)(n - n0) * ldd - v0;
        float mx = row_max[n], inv = row_inv[n];
        int ve = v1 < V ? v1 : V, j = v0;
        for (; j < ve; j++) {   // as softmax_xent_row: e = exp(l - max), then e * inv * dloss
            float e = sm_expf_inline(l[j] - mx);
            dn[j] = e * inv * dloss;
        }
        for (; j < v1; j++) dn[j] = 0.0f;
        int tgt = targets[n];
        if (tgt >= v0 && tgt < v1) dn[tgt] -= dloss;
    }
}
