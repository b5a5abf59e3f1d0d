// gemm.c — defines gemm (cache-blocked, packed, AVX-512 micro-kernel with a plain C fallback) and gemm_ref.
#include "kernels.h"

#include <assert.h>
#include <string.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

// Blocking (GotoBLAS/BLIS loop order). The packed A block (MC x KC) and packed B block
// (KC x NC) live on the stack (~368 KiB): no heap allocation, safe inside OpenMP threads.
// For each MR-row micro-panel of A (kept in L1), the micro-kernel sweeps the NR-column
// micro-panels of B (streamed from L2). Every C element is summed over k in increasing
// order in each KC block, whatever its position in the tiling, so results do not depend
// on how a caller splits M or N into calls.
#ifdef __AVX512F__
#define GEMM_MR 14   // 14 x 2 zmm accumulators + 2 B vectors + 1 broadcast = 31 registers
#define GEMM_NR 32
#else
#define GEMM_MR 6   // 6 x 2 ymm accumulators (AVX2), or plain scalar code elsewhere
#define GEMM_NR 16
#endif
#define GEMM_KC 256
#define GEMM_MC (GEMM_MR * 8)
#define GEMM_NC 256

// op(A)(i,p) for rows [i0, i0+mc), columns [p0, p0+kc) into MR-row micro-panels laid out
// p-major (panel[p*MR + i]); rows past mc are zero-filled.
static void pack_a(float *restrict dst, int trans_a, const float *A, int lda, int i0, int mc, int p0, int kc) {
    for (int s = 0; s < mc; s += GEMM_MR) {
        int mr = mc - s < GEMM_MR ? mc - s : GEMM_MR;
        if (!trans_a) {   // op(A)(i,p) = A[i*lda + p]: read rows contiguously
            for (int i = 0; i < mr; i++) {
                const float *src = A + (size_t)(i0 + s + i) * lda + p0;
                for (int p = 0; p < kc; p++) dst[p * GEMM_MR + i] = src[p];
            }
        } else {   // op(A)(i,p) = A[p*lda + i]
            for (int p = 0; p < kc; p++) {
                const float *src = A + (size_t)(p0 + p) * lda + i0 + s;
                for (int i = 0; i < mr; i++) dst[p * GEMM_MR + i] = src[i];
            }
        }
        if (mr < GEMM_MR)
            for (int p = 0; p < kc; p++)
                for (int i = mr; i < GEMM_MR; i++) dst[p * GEMM_MR + i] = 0.0f;
        dst += GEMM_MR * kc;
    }
}

// op(B)(p,j) for rows [p0, p0+kc), columns [j0, j0+nc) into NR-column micro-panels laid
// out p-major (panel[p*NR + j]); columns past nc are zero-filled.
static void pack_b(float *restrict dst, int trans_b, const float *B, int ldb, int p0, int kc, int j0, int nc) {
    for (int s = 0; s < nc; s += GEMM_NR) {
        int nr = nc - s < GEMM_NR ? nc - s : GEMM_NR;
        if (!trans_b) {   // op(B)(p,j) = B[p*ldb + j]
            for (int p = 0; p < kc; p++) {
                const float *src = B + (size_t)(p0 + p) * ldb + j0 + s;
                float *d = dst + p * GEMM_NR;
                int j = 0;
                for (; j < nr; j++) d[j] = src[j];
                for (; j < GEMM_NR; j++) d[j] = 0.0f;
            }
        } else {   // op(B)(p,j) = B[j*ldb + p]
            for (int j = 0; j < nr; j++) {
                const float *src = B + (size_t)(j0 + s + j) * ldb + p0;
                for (int p = 0; p < kc; p++) dst[p * GEMM_NR + j] = src[p];
            }
            for (int j = nr; j < GEMM_NR; j++)
                for (int p = 0; p < kc; p++) dst[p * GEMM_NR + j] = 0.0f;
        }
        dst += GEMM_NR * kc;
    }
}

// C (mr,nr) = alpha * Ap (MR,kc) @ Bp (kc,NR) + beta * C, for the top-left mr x nr corner.
// beta == 0 never reads C.
#ifdef __AVX512F__
static void micro_kernel(int kc, const float *restrict Ap, const float *restrict Bp, float *C, int ldc, int mr,
                         int nr, float alpha, float beta) {
    __m512 c[GEMM_MR][2];
#pragma GCC unroll 14
    for (int i = 0; i < GEMM_MR; i++) c[i][0] = c[i][1] = _mm512_setzero_ps();
    for (int p = 0; p < kc; p++) {
        __m512 b0 = _mm512_load_ps(Bp), b1 = _mm512_load_ps(Bp + 16);
#pragma GCC unroll 14
        for (int i = 0; i < GEMM_MR; i++) {
            __m512 a = _mm512_set1_ps(Ap[i]);
            c[i][0] = _mm512_fmadd_ps(a, b0, c[i][0]);
            c[i][1] = _mm512_fmadd_ps(a, b1, c[i][1]);
        }
        Ap += GEMM_MR;
        Bp += GEMM_NR;
    }
    __mmask16 m0 = nr >= 16 ? 0xFFFF : (__mmask16)((1u << nr) - 1);
    __mmask16 m1 = nr >= 32 ? 0xFFFF : nr <= 16 ? 0 : (__mmask16)((1u << (nr - 16)) - 1);
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 14
    for (int i = 0; i < GEMM_MR; i++) {
        if (i >= mr) break;
        float *ci = C + (size_t)i * ldc;
        __m512 r0 = _mm512_mul_ps(va, c[i][0]), r1 = _mm512_mul_ps(va, c[i][1]);
        if (beta != 0.0f) {
            r0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, ci), r0);
            r1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, ci + 16), r1);
        }
        _mm512_mask_storeu_ps(ci, m0, r0);
        _mm512_mask_storeu_ps(ci + 16, m1, r1);
    }
}
#else
static void micro_kernel(int kc, const float *restrict Ap, const float *restrict Bp, float *C, int ldc, int mr,
                         int nr, float alpha, float beta) {
    float c[GEMM_MR][GEMM_NR] = {{0}};
    for (int p = 0; p < kc; p++) {
#pragma GCC unroll 8
        for (int i = 0; i < GEMM_MR; i++) {
            float a = Ap[i];
#pragma GCC unroll 16
            for (int j = 0; j < GEMM_NR; j++) c[i][j] += a * Bp[j];
        }
        Ap += GEMM_MR;
        Bp += GEMM_NR;
    }
    for (int i = 0; i < mr; i++) {
        float *ci = C + (size_t)i * ldc;
        if (beta != 0.0f)
            for (int j = 0; j < nr; j++) ci[j] = alpha * c[i][j] + beta * ci[j];
        else
            for (int j = 0; j < nr; j++) ci[j] = alpha * c[i][j];
    }
}
#endif

void gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
          int ldb, float beta, float *C, int ldc) {
    // op(A) is (M,K), op(B) is (K,N); C is (M,N) with row stride ldc
    assert(M >= 0 && N >= 0 && K >= 0 && "gemm: negative dimension");
    assert(ldc >= N && "gemm: ldc smaller than N");
    assert(lda >= (trans_a ? M : K) && "gemm: lda smaller than the stored row width of A");
    assert(ldb >= (trans_b ? K : N) && "gemm: ldb smaller than the stored row width of B");
    if (M == 0 || N == 0) return;
    if (K == 0 || alpha == 0.0f) {   // C = beta * C, never reading C when beta == 0
        for (int i = 0; i < M; i++) {
            float *ci = C + (size_t)i * ldc;
            if (beta == 0.0f)
                memset(ci, 0, (size_t)N * sizeof(float));
            else
                for (int j = 0; j < N; j++) ci[j] *= beta;
        }
        return;
    }
    _Alignas(64) float Ap[GEMM_MC * GEMM_KC];
    _Alignas(64) float Bp[GEMM_KC * GEMM_NC];
    for (int jc = 0; jc < N; jc += GEMM_NC) {
        int nc = N - jc < GEMM_NC ? N - jc : GEMM_NC;
        for (int pc = 0; pc < K; pc += GEMM_KC) {
            int kc = K - pc < GEMM_KC ? K - pc : GEMM_KC;
            float beta_blk = pc == 0 ? beta : 1.0f;   // later K blocks accumulate
            pack_b(Bp, trans_b, B, ldb, pc, kc, jc, nc);
            for (int ic = 0; ic < M; ic += GEMM_MC) {
                int mc = M - ic < GEMM_MC ? M - ic : GEMM_MC;
                pack_a(Ap, trans_a, A, lda, ic, mc, pc, kc);
                for (int ir = 0; ir < mc; ir += GEMM_MR) {
                    int mr = mc - ir < GEMM_MR ? mc - ir : GEMM_MR;
                    for (int jr = 0; jr < nc; jr += GEMM_NR) {
                        int nr = nc - jr < GEMM_NR ? nc - jr : GEMM_NR;
                        micro_kernel(kc, Ap + (size_t)ir * kc, Bp + (size_t)jr * kc,
                                     C + (size_t)(ic + ir) * ldc + jc + jr, ldc, mr, nr, alpha, beta_blk);
                    }
                }
            }
        }
    }
}

void gemm_ref(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float s = 0.0f;
            for (int p = 0; p < K; p++) {
                float a = trans_a ? A[(size_t)p * lda + i] : A[(size_t)i * lda + p];
                float b = trans_b ? B[(size_t)j * ldb + p] : B[(size_t)p * ldb + j];
                s += a * b;
            }
            float *c = &C[(size_t)i * ldc + j];
            *c = beta == 0.0f ? alpha * s : alpha * s + beta * *c;
        }
}
