// elementwise.c — defines gelu_forward, gelu_backward, gelu_tile (tanh form), residual_forward/backward, scale_inplace.
#include "kernels_internal.h"

#include <math.h>

#define GELU_SCALE 0.7978845608028654f   // sqrt(2/pi)
#define GELU_CUBE 0.044715f
#define GELU_W1 (2.0f * GELU_SCALE)                // w = x (W1 + W3 x^2) = 2 sqrt(2/pi) (x + 0.044715 x^3)
#define GELU_W3 (2.0f * GELU_SCALE * GELU_CUBE)

// GELU's tanh form through the logistic function, which needs one exp and one division and has
// no cancellation: with w = 2u = 2 sqrt(2/pi) (x + 0.044715 x^3) and t = e^-|w| (never overflows),
//   0.5 (1 + tanh u) = sigma(w) = 1/(1 + t) for w >= 0, t/(1 + t) for w < 0
//   gelu(x) = x sigma(w),  gelu'(x) = sigma(w) + x w' sigma(w) (1 - sigma(w)),
// and sigma (1 - sigma) = t/(1 + t)^2 for either sign. Each path (plain C, AVX-512) computes every
// element the same way wherever it sits (in a full vector or a tail), so gelu_tile equals
// gelu_forward element for element on each path.

// ---- plain C (vectorised by the compiler; the path of the SCALAR and AVX2 levels)

static inline float gelu_sigmoid(float x, float *t_out, float *r_out) {   // sigma(w); t and 1/(1+t)
    float w = x * (GELU_W1 + GELU_W3 * (x * x));
    float t = sm_expf_inline(-fabsf(w));
    float r = 1.0f / (1.0f + t);
    *t_out = t;
    *r_out = r;
    return w < 0.0f ? t * r : r;
}

static inline float gelu_plain(float x) {
    float t, r;
    return x * gelu_sigmoid(x, &t, &r);
}

static inline float gelu_grad_plain(float x) {
    float t, r;
    float s = gelu_sigmoid(x, &t, &r);
    float dw = GELU_W1 + (3.0f * GELU_W3) * (x * x);   // w'
    return s + t * r * r * x * dw;   // t r^2 first: 0 (not inf * 0) where |x| is huge
}

// ---- AVX-512
#ifdef KERNELS_X86
KERNELS_INLINE_512 __m512 gelu_sigmoid512(__m512 x, __m512 *t_out, __m512 *r_out) {
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 x2 = _mm512_mul_ps(x, x);
    __m512 w = _mm512_mul_ps(x, _mm512_fmadd_ps(x2, _mm512_set1_ps(GELU_W3), _mm512_set1_ps(GELU_W1)));
    __m512 nabs = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(w), _mm512_set1_epi32(INT32_MIN)));
    __m512 t = sm_exp512_nonpos(nabs);   // e^-|w|
    __m512 r = _mm512_div_ps(one, _mm512_add_ps(one, t));
    *t_out = t;
    *r_out = r;
    return _mm512_mask_mul_ps(r, _mm512_cmp_ps_mask(w, _mm512_setzero_ps(), _CMP_LT_OQ), t, r);
}

KERNELS_INLINE_512 __m512 gelu512(__m512 x) {
    __m512 t, r;
    return _mm512_mul_ps(x, gelu_sigmoid512(x, &t, &r));
}

KERNELS_INLINE_512 __m512 gelu_grad512(__m512 x) {
    __m512 t, r;
    __m512 s = gelu_sigmoid512(x, &t, &r);
    __m512 dw = _mm512_fmadd_ps(_mm512_mul_ps(x, x), _mm512_set1_ps(3.0f * GELU_W3), _mm512_set1_ps(GELU_W1));
    __m512 trr = _mm512_mul_ps(_mm512_mul_ps(t, r), r);
    return _mm512_fmadd_ps(_mm512_mul_ps(trr, x), dw, s);
}

KERNELS_INLINE_512 void gelu_forward_512(float *out, const float *inp, size_t n) {
    // inp and out are (n)
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, gelu512(_mm512_loadu_ps(inp + i)));
    if (i < n) {
        __mmask16 k = sm_lanes_mask(n - i);
        _mm512_mask_storeu_ps(out + i, k, gelu512(_mm512_maskz_loadu_ps(k, inp + i)));
    }
}

KERNELS_INLINE_512 void gelu_backward_512(float *dinp, const float *inp, const float *dout, size_t n) {
    // inp and dout are (n); dinp (n) = (written, never read)
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 g = gelu_grad512(_mm512_loadu_ps(inp + i));
        _mm512_storeu_ps(dinp + i, _mm512_mul_ps(g, _mm512_loadu_ps(dout + i)));
    }
    if (i < n) {
        __mmask16 k = sm_lanes_mask(n - i);
        __m512 g = gelu_grad512(_mm512_maskz_loadu_ps(k, inp + i));
        _mm512_mask_storeu_ps(dinp + i, k, _mm512_mul_ps(g, _mm512_maskz_loadu_ps(k, dout + i)));
    }
}
#endif

// The parallel loops go over blocks of GELU_BLOCK elements (a multiple of 16).
#define GELU_BLOCK 4096

#ifdef KERNELS_X86
KERNELS_TGT_512 static void gelu_forward_avx512(float *out, const float *inp, size_t n) {
    // inp and out are (n)
    size_t n_blocks = (n + GELU_BLOCK - 1) / GELU_BLOCK;
#pragma omp parallel for schedule(static)
    for (size_t b = 0; b < n_blocks; b++) {
        size_t i0 = b * GELU_BLOCK, len = n - i0 < GELU_BLOCK ? n - i0 : GELU_BLOCK;
        gelu_forward_512(out + i0, inp + i0, len);
    }
}

KERNELS_TGT_512 static void gelu_tile_avx512(float *out, int ldo, const float *in, int ldi, int rows, int cols) {
    // in is (rows,cols) with row stride ldi; out likewise with ldo (one call per GEMM tile)
    for (int i = 0; i < rows; i++) gelu_forward_512(out + (size_t)i * ldo, in + (size_t)i * ldi, (size_t)cols);
}

KERNELS_TGT_512 static void gelu_backward_avx512(float *dinp, const float *inp, const float *dout, size_t n) {
    // inp and dout are (n); dinp (n) =
    size_t n_blocks = (n + GELU_BLOCK - 1) / GELU_BLOCK;
#pragma omp parallel for schedule(static)
    for (size_t b = 0; b < n_blocks; b++) {
        size_t i0 = b * GELU_BLOCK, len = n - i0 < GELU_BLOCK ? n - i0 : GELU_BLOCK;
        gelu_backward_512(dinp + i0, inp + i0, dout + i0, len);
    }
}
#endif

void gelu_forward(float *out, const float *inp, size_t n) {
    // out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); inp and out are (n)
#ifdef KERNELS_X86
    if (kernels_pick(KERNELS_OP_GELU) == KERNELS_ISA_AVX512) {
        gelu_forward_avx512(out, inp, n);
        return;
    }
#endif
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) out[i] = gelu_plain(inp[i]);
}

void gelu_tile(float *out, int ldo, const float *in, int ldi, int rows, int cols) {
    // in is (rows,cols) with row stride ldi; out likewise with ldo; the arithmetic of gelu_forward
#ifdef KERNELS_X86
    if (kernels_pick(KERNELS_OP_GELU) == KERNELS_ISA_AVX512) {
        gelu_tile_avx512(out, ldo, in, ldi, rows, cols);
        return;
    }
#endif
    for (int i = 0; i < rows; i++) {
        const float *x = in + (size_t)i * ldi;
        float *o = out + (size_t)i * ldo;
#pragma omp simd
        for (int j = 0; j < cols; j++) o[j] = gelu_plain(x[j]);
    }
}

void gelu_backward(float *dinp, const float *inp, const float *dout, size_t n) {
    // dinp (n) = gelu'(inp) * dout, the exact derivative of the tanh form (overwritten: the MLP's
    // pre-activation gradient has no other contribution, so no clearing pass is needed)
#ifdef KERNELS_X86
    if (kernels_pick(KERNELS_OP_GELU) == KERNELS_ISA_AVX512) {
        gelu_backward_avx512(dinp, inp, dout, n);
        return;
    }
#endif
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) dinp[i] = gelu_grad_plain(inp[i]) * dout[i];
}

void residual_forward(float *out, const float *inp1, const float *inp2, size_t n) {
    // out = inp1 + inp2; all (n)
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) out[i] = inp1[i] + inp2[i];
}

void residual_backward(float *dinp1, float *dinp2, const float *dout, size_t n) {
    // dinp1 (n) += dout; dinp2 (n) += dout
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) {
        dinp1[i] += dout[i];
        dinp2[i] += dout[i];
    }
}

void scale_inplace(float *x, float s, size_t n) {
    // x (n) *= s
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) x[i] *= s;
}
