// bf16.c — defines the bfloat16 array conversions (bf16_from_f32_array, bf16_to_f32_array):
// vcvtneps2bf16 where the bf16 GEMM's AVX512-BF16 path is in use, plain C elsewhere, the same bits
// (bf16_from_f32 in kernels.h is the definition both follow).
#include "kernels_internal.h"

#include <assert.h>
#include <omp.h>

// Chunks of the arrays per OpenMP iteration (a multiple of 16: whole vectors but the last)
#define CVT_CHUNK ((size_t)1 << 15)

#ifdef KERNELS_X86
__attribute__((target("avx512bf16,avx512f,avx512vl,avx2,fma"))) static void from_f32_512(uint16_t *dst, const float *src,
                                                                                           size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(void *)(dst + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + i)));
    if (i < n) {
        __mmask16 m = sm_lanes_mask((long)(n - i));
        _mm256_mask_storeu_epi16(dst + i, m, (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + i)));
    }
}
#endif

static void from_f32_c(uint16_t *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = bf16_from_f32(src[i]);
}

void bf16_from_f32_array(uint16_t *dst, const float *src, size_t n) {
    // src (n) float32; dst (n) = its bf16 rounding
    size_t n_chunks = (n + CVT_CHUNK - 1) / CVT_CHUNK;
#ifdef KERNELS_X86
    int fast = kernels_pick(KERNELS_OP_GEMM_BF16) == KERNELS_ISA_AVX512_BF16;
#endif
#pragma omp parallel for schedule(static) if (n_chunks > 1)
    for (size_t c = 0; c < n_chunks; c++) {
        size_t i0 = c * CVT_CHUNK, len = n - i0 < CVT_CHUNK ? n - i0 : CVT_CHUNK;
#ifdef KERNELS_X86
        if (fast) {
            from_f32_512(dst + i0, src + i0, len);
            continue;
        }
#endif
        from_f32_c(dst + i0, src + i0, len);
    }
}

void bf16_to_f32_array(float *dst, const uint16_t *src, size_t n) {
    // src (n) bf16; dst (n) = the same values as float32 (exact)
#pragma omp parallel for simd schedule(static) if (n > CVT_CHUNK)
    for (size_t i = 0; i < n; i++) dst[i] = bf16_to_f32(src[i]);
}

// ---------------------------------------------------------------------------------------------
// The instruction peak: the bench's measure of what this CPU's bf16 products can gain

#ifdef KERNELS_X86
enum { PEAK_CHAINS = 16 };   // independent accumulators: more than latency x throughput (4 x 2)

__attribute__((target("avx512f,avx2,fma"), noinline)) static float fma_loop(long n) {
    __m512 acc[PEAK_CHAINS], a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(1e-3f);
    for (int c = 0; c < PEAK_CHAINS; c++) acc[c] = _mm512_set1_ps((float)c);
    for (long i = 0; i < n; i++) {
        __asm__ volatile("" : "+v"(a));   // a new value each time: the loop body stays as written
#pragma GCC unroll 16
        for (int c = 0; c < PEAK_CHAINS; c++) acc[c] = _mm512_fmadd_ps(a, b, acc[c]);
    }
    __m512 s = acc[0];
    for (int c = 1; c < PEAK_CHAINS; c++) s = _mm512_add_ps(s, acc[c]);
    return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx512bf16,avx512f,avx2,fma"), noinline)) static float dpbf16_loop(long n) {
    __m512 acc[PEAK_CHAINS];
    __m512bh a = (__m512bh)_mm512_set1_epi32(0x3F7F3F7F), b = (__m512bh)_mm512_set1_epi32(0x3A833A83);
    for (int c = 0; c < PEAK_CHAINS; c++) acc[c] = _mm512_set1_ps((float)c);
    for (long i = 0; i < n; i++) {
        __asm__ volatile("" : "+v"(a));
#pragma GCC unroll 16
        for (int c = 0; c < PEAK_CHAINS; c++) acc[c] = _mm512_dpbf16_ps(acc[c], a, b);
    }
    __m512 s = acc[0];
    for (int c = 1; c < PEAK_CHAINS; c++) s = _mm512_add_ps(s, acc[c]);
    return _mm512_reduce_add_ps(s);
}
#endif

double kernels_peak_loop(int bf16, long n) {
    // n iterations of PEAK_CHAINS independent 512-bit instructions on each thread of a team this
    // opens; returns the floating-point operations done (an FMA lane: 2; a vdpbf16ps lane: 4)
#ifdef KERNELS_X86
    if (bf16 ? !kernels_bf16_available() : !(kernels_cpu_features() & KERNELS_CPU_AVX512F)) return 0.0;
    int nt = 1;
    float sink = 0.0f;
#pragma omp parallel reduction(+ : sink)
    {
#pragma omp single
        nt = omp_get_num_threads();
        sink += bf16 ? dpbf16_loop(n) : fma_loop(n);
    }
    volatile float keep = sink;   // the loops' results are used
    (void)keep;
    return (double)nt * (double)n * PEAK_CHAINS * 16 * (bf16 ? 4.0 : 2.0);
#else
    (void)bf16, (void)n;
    return 0.0;
#endif
}
