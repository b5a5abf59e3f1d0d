// adamw.c — defines adamw_update (fused, bias-corrected AdamW), adamw_update_bf16 (the same, writing
// the bf16 copy of the weights in its pass) and sum_squares (fixed-order, thread-count independent).
#include "kernels_internal.h"

#include <assert.h>
#include <math.h>
#include <omp.h>

// One AdamW step over element i, as adamw_update defines it; returns the updated parameter.
static inline __attribute__((always_inline)) float adamw_one(float p, float g, float *m, float *v, float beta1,
                                                             float beta2, float lr, float eps, float weight_decay,
                                                             float grad_scale, float bc1, float bc2) {
    g = g * grad_scale;
    float mi = beta1 * *m + (1.0f - beta1) * g;
    float vi = beta2 * *v + (1.0f - beta2) * g * g;
    *m = mi;
    *v = vi;
    float mhat = mi * bc1, vhat = vi * bc2;
    return p - lr * (mhat / (sqrtf(vhat) + eps) + weight_decay * p);
}

void adamw_update(float *params, const float *grads, float *m, float *v, size_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, float grad_scale, int t) {
    // params, grads, m, v are (n); params, m, v are updated in place; t counts from 1.
    // One pass over the four arrays (28 bytes per parameter); the gradient clip's scale is
    // applied to each gradient as it is read (grads itself is left as it was).
    assert(t >= 1 && "adamw_update: step t counts from 1 (bias correction divides by 1 - beta^t)");
    float bc1 = 1.0f / (1.0f - powf(beta1, (float)t)), bc2 = 1.0f / (1.0f - powf(beta2, (float)t));
#pragma omp parallel for simd schedule(static) if (!omp_in_parallel())
    for (size_t i = 0; i < n; i++)
        params[i] = adamw_one(params[i], grads[i], &m[i], &v[i], beta1, beta2, lr, eps, weight_decay, grad_scale, bc1, bc2);
}

#ifdef KERNELS_X86
// 16 parameters at a time, the bf16 copy by vcvtneps2bf16 (bf16_from_f32's bits); the float32
// arithmetic is adamw_one's in 16 lanes (GCC's vectorisation of the plain loop does the same
// operations, each correctly rounded, so the bits agree). full: all 16 lanes, loads and stores
// unmasked; else the lanes of k (the tail). With every load and store masked the pass took 1.5x as
// long on this Zen 5 (124M parameters: ~100 ms against ~67 unmasked; fp32's own pass ~60).
typedef struct {
    __m512 b1, b2, ob1, ob2, lr, eps, wd, gs, c1, c2;
} adamw_consts512;

__attribute__((target("avx512bf16,avx512f,avx512vl,avx512bw,avx2,fma"), always_inline)) static inline void adamw_bf16_16(
    float *params, uint16_t *pb, const float *grads, float *m, float *v, const adamw_consts512 *c, __mmask16 k,
    int full) {
#define LD(ptr) (full ? _mm512_loadu_ps(ptr) : _mm512_maskz_loadu_ps(k, ptr))
#define ST(ptr, x) (full ? _mm512_storeu_ps(ptr, x) : _mm512_mask_storeu_ps(ptr, k, x))
    __m512 g = _mm512_mul_ps(LD(grads), c->gs);
    // b m + (1-b) g as two roundings (a product, then a sum of two products' roundings), as in C
    __m512 mi = _mm512_add_ps(_mm512_mul_ps(c->b1, LD(m)), _mm512_mul_ps(c->ob1, g));
    __m512 vi = _mm512_add_ps(_mm512_mul_ps(c->b2, LD(v)), _mm512_mul_ps(_mm512_mul_ps(c->ob2, g), g));
    ST(m, mi);
    ST(v, vi);
    __m512 p = LD(params);
    __m512 upd = _mm512_add_ps(_mm512_div_ps(_mm512_mul_ps(mi, c->c1), _mm512_add_ps(_mm512_sqrt_ps(_mm512_mul_ps(vi, c->c2)), c->eps)),
                               _mm512_mul_ps(c->wd, p));
    p = _mm512_sub_ps(p, _mm512_mul_ps(c->lr, upd));
    ST(params, p);
    __m256i h = (__m256i)_mm512_cvtneps_pbh(p);
    if (full) _mm256_storeu_si256((__m256i *)pb, h);
    else _mm256_mask_storeu_epi16(pb, k, h);
#undef LD
#undef ST
}

__attribute__((target("avx512bf16,avx512f,avx512vl,avx512bw,avx2,fma"))) static void adamw_bf16_512(
    float *params, uint16_t *pb, const float *grads, float *m, float *v, size_t n, float lr, float beta1, float beta2,
    float eps, float wd, float grad_scale, float bc1, float bc2) {
    const adamw_consts512 c = {_mm512_set1_ps(beta1), _mm512_set1_ps(beta2), _mm512_set1_ps(1.0f - beta1),
                               _mm512_set1_ps(1.0f - beta2), _mm512_set1_ps(lr), _mm512_set1_ps(eps),
                               _mm512_set1_ps(wd), _mm512_set1_ps(grad_scale), _mm512_set1_ps(bc1), _mm512_set1_ps(bc2)};
    size_t i = 0;
    for (; i + 16 <= n; i += 16) adamw_bf16_16(params + i, pb + i, grads + i, m + i, v + i, &c, 0xFFFF, 1);
    if (i < n) adamw_bf16_16(params + i, pb + i, grads + i, m + i, v + i, &c, sm_lanes_mask((long)(n - i)), 0);
}
#endif

void adamw_update_bf16(float *params, uint16_t *params_bf16, const float *grads, float *m, float *v, size_t n,
                       float lr, float beta1, float beta2, float eps, float weight_decay, float grad_scale, int t) {
    // as adamw_update; params_bf16 (n) = bf16(the updated params), in the same pass (30 bytes per parameter)
    assert(t >= 1 && "adamw_update_bf16: step t counts from 1 (bias correction divides by 1 - beta^t)");
    float bc1 = 1.0f / (1.0f - powf(beta1, (float)t)), bc2 = 1.0f / (1.0f - powf(beta2, (float)t));
#ifdef KERNELS_X86
    if (kernels_pick(KERNELS_OP_GEMM_BF16) == KERNELS_ISA_AVX512_BF16) {
        enum { CHUNK = 1 << 14 };   // floats per OpenMP iteration (a multiple of 16)
        size_t n_chunks = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static) if (!omp_in_parallel())
        for (size_t c = 0; c < n_chunks; c++) {
            size_t i0 = c * CHUNK, len = n - i0 < CHUNK ? n - i0 : CHUNK;
            adamw_bf16_512(params + i0, params_bf16 + i0, grads + i0, m + i0, v + i0, len, lr, beta1, beta2, eps,
                           weight_decay, grad_scale, bc1, bc2);
        }
        return;
    }
#endif
#pragma omp parallel for simd schedule(static) if (!omp_in_parallel())
    for (size_t i = 0; i < n; i++) {
        float p = adamw_one(params[i], grads[i], &m[i], &v[i], beta1, beta2, lr, eps, weight_decay, grad_scale, bc1, bc2);
        params[i] = p;
        params_bf16[i] = bf16_from_f32(p);
    }
}

// Fixed chunking: the sum is a sum over chunks of SS_CHUNK elements, taken in chunk order;
// each chunk is summed in double with SS_LANES partial sums combined in a fixed order.
// Nothing depends on the number of threads, nor on the build's vector width (each lane adds its
// own elements in order; the square of a float is exact in double, so even a contracted
// multiply-add gives the same bits).
#define SS_CHUNK ((size_t)1 << 16)
#define SS_LANES 32        // 4 vectors of 8 doubles: independent chains keep the adds off the
                           // critical path
#define SS_GROUP 256       // chunk partials held on the stack at once (2 KiB)
// Software prefetch, two streams: into L2 16 KiB ahead, then into L1 2 KiB ahead. On this
// machine the hardware prefetcher alone reads at ~half the bandwidth (13 against ~27 GB/s).
#define SS_PREFETCH_L1 512    // floats
#define SS_PREFETCH_L2 4096

static double chunk_sum_squares(const float *g, size_t n) {
    double acc[SS_LANES] = {0};
    size_t i = 0;
    for (; i + SS_LANES <= n; i += SS_LANES) {
        for (int l = 0; l < SS_LANES; l += 16) {   // a 64-byte line per 16 floats
            __builtin_prefetch(g + i + SS_PREFETCH_L2 + l, 0, 2);
            __builtin_prefetch(g + i + SS_PREFETCH_L1 + l, 0, 3);
        }
#pragma omp simd   // this loop (GCC's outer-loop vectorisation shuffles)
        for (int l = 0; l < SS_LANES; l++) acc[l] += (double)g[i + l] * g[i + l];
    }
    for (int l = 0; i < n; i++, l++) acc[l] += (double)g[i] * g[i];
    for (int w = SS_LANES / 2; w > 0; w /= 2)
        for (int l = 0; l < w; l++) acc[l] += acc[l + w];
    return acc[0];
}

double sum_squares(const float *g, size_t n) {
    // g is (n); returns sum g^2 in double
    size_t n_chunks = (n + SS_CHUNK - 1) / SS_CHUNK;
    if (n_chunks <= 1) return chunk_sum_squares(g, n);   // the same sum, without a parallel region
    double total = 0.0;
    for (size_t g0 = 0; g0 < n_chunks; g0 += SS_GROUP) {
        int ng = n_chunks - g0 < SS_GROUP ? (int)(n_chunks - g0) : SS_GROUP;
        double part[SS_GROUP];
#pragma omp parallel for schedule(static)
        for (int k = 0; k < ng; k++) {
            size_t i0 = (g0 + (size_t)k) * SS_CHUNK, len = n - i0 < SS_CHUNK ? n - i0 : SS_CHUNK;
            part[k] = chunk_sum_squares(g + i0, len);
        }
        for (int k = 0; k < ng; k++) total += part[k];
    }
    return total;
}
