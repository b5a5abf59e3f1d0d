// gemm.c — defines gemm, gemm_ex, gemm_parallel, gemm_mt and gemm_ref: a cache-blocked, packed,
// register-tiled GEMM with AVX-512, AVX2 and plain-C micro-kernels chosen at run time, and the
// SIMD-level switch (kernels_simd*).
#include "kernels_internal.h"

#include <assert.h>
#include <omp.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

// Loop order (GotoBLAS/BLIS): for each NC-column block of op(B), for each KC slice of the
// contraction, pack op(B)[KC x NC] once (it stays in L2); for each MC-row block of op(A), pack
// op(A)[MC x KC]; then for each MR-row micro-panel of A (kept in L1) sweep the NR-column
// micro-panels of B with the micro-kernel, which holds an MR x NR tile of C in registers.
// Every C element is the sum over KC slices, in order, of a k-ordered chain of FMAs, added to
// C once per slice: where an element sits in the tiling never changes its value, so results
// do not depend on how callers split M or N (nor on the thread count).
// Packing buffers live on the stack (<= ~640 KiB): no heap, safe inside OpenMP threads.
#define KC 256
#define NC_MAX 512
#define MC_MAX 128

typedef void (*pack_a_fn)(float *restrict dst, int trans_a, const float *A, int lda, int i0, int mc, int p0, int kc);
typedef void (*pack_b_fn)(float *restrict dst, int trans_b, const float *B, int ldb, int p0, int kc, int j0, int nc);
// C (mr,nr) = alpha * Ap (MR,kc) @ Bp (kc,NR) + beta * C (+ bias (nr) if non-NULL), top-left
// mr x nr corner of the register tile; beta == 0 never reads C.
typedef void (*micro_fn)(int kc, const float *restrict Ap, const float *restrict Bp, float *C, int ldc, int mr, int nr,
                         float alpha, float beta, const float *bias);

typedef struct {
    int mr, nr, mc;   // register tile, and the row block (a multiple of mr, <= MC_MAX)
    pack_a_fn pack_a;
    pack_b_fn pack_b;
    micro_fn micro;
} gemm_isa;

// ---------------------------------------------------------------------------------------------
// Plain C (any CPU): 4 x 16 tile

enum { G_MR = 4, G_NR = 16 };

// op(A)(i,p) for rows [i0, i0+mc), columns [p0, p0+kc) into mr-row micro-panels laid out
// p-major (panel[p*mr + i]); rows past mc are zero-filled.
static void pack_a_generic(float *restrict dst, int trans_a, const float *A, int lda, int i0, int mc, int p0, int kc,
                           int MR) {
    for (int s = 0; s < mc; s += MR) {
        int mr = mc - s < MR ? mc - s : MR;
        if (!trans_a) {   // op(A)(i,p) = A[i*lda + p]
            for (int i = 0; i < mr; i++) {
                const float *src = A + (size_t)(i0 + s + i) * lda + p0;
                for (int p = 0; p < kc; p++) dst[p * MR + i] = src[p];
            }
        } else {   // op(A)(i,p) = A[p*lda + i]
            for (int p = 0; p < kc; p++) {
                const float *src = A + (size_t)(p0 + p) * lda + i0 + s;
                for (int i = 0; i < mr; i++) dst[p * MR + i] = src[i];
            }
        }
        for (int p = 0; p < kc; p++)
            for (int i = mr; i < MR; i++) dst[p * MR + i] = 0.0f;
        dst += (size_t)MR * kc;
    }
}

// op(B)(p,j) for rows [p0, p0+kc), columns [j0, j0+nc) into nr-column micro-panels laid out
// p-major (panel[p*nr + j]); columns past nc are zero-filled.
static void pack_b_generic(float *restrict dst, int trans_b, const float *B, int ldb, int p0, int kc, int j0, int nc,
                           int NR) {
    for (int s = 0; s < nc; s += NR) {
        int nr = nc - s < NR ? nc - s : NR;
        if (!trans_b) {   // op(B)(p,j) = B[p*ldb + j]
            for (int p = 0; p < kc; p++) {
                const float *src = B + (size_t)(p0 + p) * ldb + j0 + s;
                float *d = dst + (size_t)p * NR;
                for (int j = 0; j < nr; j++) d[j] = src[j];
            }
        } else {   // op(B)(p,j) = B[j*ldb + p]
            for (int j = 0; j < nr; j++) {
                const float *src = B + (size_t)(j0 + s + j) * ldb + p0;
                for (int p = 0; p < kc; p++) dst[(size_t)p * NR + j] = src[p];
            }
        }
        for (int p = 0; p < kc; p++)
            for (int j = nr; j < NR; j++) dst[(size_t)p * NR + j] = 0.0f;
        dst += (size_t)NR * kc;
    }
}

static void pack_a_g(float *restrict dst, int trans_a, const float *A, int lda, int i0, int mc, int p0, int kc) {
    pack_a_generic(dst, trans_a, A, lda, i0, mc, p0, kc, G_MR);
}
static void pack_b_g(float *restrict dst, int trans_b, const float *B, int ldb, int p0, int kc, int j0, int nc) {
    pack_b_generic(dst, trans_b, B, ldb, p0, kc, j0, nc, G_NR);
}

static void micro_g(int kc, const float *restrict Ap, const float *restrict Bp, float *C, int ldc, int mr, int nr,
                    float alpha, float beta, const float *bias) {
    float c[G_MR][G_NR] = {{0}};
    for (int p = 0; p < kc; p++) {
        for (int i = 0; i < G_MR; i++) {
            float a = Ap[i];
            for (int j = 0; j < G_NR; j++) c[i][j] += a * Bp[j];
        }
        Ap += G_MR;
        Bp += G_NR;
    }
    for (int i = 0; i < mr; i++) {
        float *ci = C + (size_t)i * ldc;
        for (int j = 0; j < nr; j++) {
            float r = alpha * c[i][j];
            if (beta != 0.0f) r = beta * ci[j] + r;
            if (bias) r = r + bias[j];
            ci[j] = r;
        }
    }
}

static const gemm_isa ISA_GENERIC = {G_MR, G_NR, 128, pack_a_g, pack_b_g, micro_g};

#ifdef KERNELS_X86
// ---------------------------------------------------------------------------------------------
// AVX2 + FMA: 6 x 16 tile (12 ymm accumulators), generic packing

#define TGT_AVX2 __attribute__((target("avx2,fma")))
enum { A2_MR = 6, A2_NR = 16 };

static void pack_a_a2(float *restrict dst, int trans_a, const float *A, int lda, int i0, int mc, int p0, int kc) {
    pack_a_generic(dst, trans_a, A, lda, i0, mc, p0, kc, A2_MR);
}
static void pack_b_a2(float *restrict dst, int trans_b, const float *B, int ldb, int p0, int kc, int j0, int nc) {
    pack_b_generic(dst, trans_b, B, ldb, p0, kc, j0, nc, A2_NR);
}

TGT_AVX2 static void micro_a2(int kc, const float *restrict Ap, const float *restrict Bp, float *C, int ldc, int mr,
                              int nr, float alpha, float beta, const float *bias) {
    __m256 c[A2_MR][2];
#pragma GCC unroll 6
    for (int i = 0; i < A2_MR; i++) c[i][0] = c[i][1] = _mm256_setzero_ps();
    for (int p = 0; p < kc; p++) {
        __m256 b0 = _mm256_load_ps(Bp), b1 = _mm256_load_ps(Bp + 8);
#pragma GCC unroll 6
        for (int i = 0; i < A2_MR; i++) {
            __m256 a = _mm256_broadcast_ss(Ap + i);
            c[i][0] = _mm256_fmadd_ps(a, b0, c[i][0]);
            c[i][1] = _mm256_fmadd_ps(a, b1, c[i][1]);
        }
        Ap += A2_MR;
        Bp += A2_NR;
    }
    if (nr == A2_NR) {
        __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
        __m256 bb0 = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
        __m256 bb1 = bias ? _mm256_loadu_ps(bias + 8) : _mm256_setzero_ps();
#pragma GCC unroll 6
        for (int i = 0; i < A2_MR; i++) {
            if (i >= mr) break;
            float *ci = C + (size_t)i * ldc;
            __m256 r0 = _mm256_mul_ps(va, c[i][0]), r1 = _mm256_mul_ps(va, c[i][1]);
            if (beta != 0.0f) {
                r0 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci), r0);
                r1 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci + 8), r1);
            }
            if (bias) {
                r0 = _mm256_add_ps(r0, bb0);
                r1 = _mm256_add_ps(r1, bb1);
            }
            _mm256_storeu_ps(ci, r0);
            _mm256_storeu_ps(ci + 8, r1);
        }
    } else {   // a partial tile: through memory, the same arithmetic per element
        _Alignas(32) float t[A2_MR][A2_NR];
        for (int i = 0; i < A2_MR; i++) {
            _mm256_store_ps(t[i], c[i][0]);
            _mm256_store_ps(t[i] + 8, c[i][1]);
        }
        for (int i = 0; i < mr; i++) {
            float *ci = C + (size_t)i * ldc;
            for (int j = 0; j < nr; j++) {
                float r = alpha * t[i][j];
                if (beta != 0.0f) r = __builtin_fmaf(beta, ci[j], r);
                if (bias) r = r + bias[j];
                ci[j] = r;
            }
        }
    }
}

static const gemm_isa ISA_AVX2 = {A2_MR, A2_NR, 120, pack_a_a2, pack_b_a2, micro_a2};

// ---------------------------------------------------------------------------------------------
// AVX-512: 14 x 32 tile (28 zmm accumulators + 2 B vectors + 1 broadcast = 31 registers),
// packing with in-register 16 x 16 transposes.

enum { Z_MR = 14, Z_NV = 2, Z_NR = 16 * Z_NV };

KERNELS_TGT_512 static void pack_a_z(float *restrict dst, int trans_a, const float *A, int lda, int i0, int mc, int p0, int kc) {
    for (int s = 0; s < mc; s += Z_MR) {
        int mr = mc - s < Z_MR ? mc - s : Z_MR;
        if (!trans_a) {   // rows of A are contiguous in p: transpose 14 x 16 blocks
            const float *src = A + (size_t)(i0 + s) * lda + p0;
            for (int p = 0; p < kc; p += 16)
                transpose_block(dst + (size_t)p * Z_MR, Z_MR, Z_MR, src + p, lda, mr, kc - p < 16 ? kc - p : 16);
        } else {   // op(A)(i,p) = A[p*lda + i]: a masked copy of mr floats per p
            __mmask16 m = sm_lanes_mask(mr), w = sm_lanes_mask(Z_MR);
            for (int p = 0; p < kc; p++)
                _mm512_mask_storeu_ps(dst + (size_t)p * Z_MR, w,
                                      _mm512_maskz_loadu_ps(m, A + (size_t)(p0 + p) * lda + i0 + s));
        }
        dst += (size_t)Z_MR * kc;
    }
}

KERNELS_TGT_512 static void pack_b_z(float *restrict dst, int trans_b, const float *B, int ldb, int p0, int kc, int j0, int nc) {
    for (int s = 0; s < nc; s += Z_NR) {
        int nr = nc - s < Z_NR ? nc - s : Z_NR;
        if (!trans_b) {   // op(B)(p,j) = B[p*ldb + j]: masked copies of nr floats per p
            __mmask16 m[Z_NV];
            for (int v = 0; v < Z_NV; v++) m[v] = sm_lanes_mask(nr - 16 * v);
            const float *src = B + (size_t)p0 * ldb + j0 + s;
            for (int p = 0; p < kc; p++) {
#pragma GCC unroll 4
                for (int v = 0; v < Z_NV; v++)
                    _mm512_store_ps(dst + (size_t)p * Z_NR + 16 * v,
                                    _mm512_maskz_loadu_ps(m[v], src + (size_t)p * ldb + 16 * v));
            }
        } else {   // op(B)(p,j) = B[j*ldb + p]: transpose 16 x 16 blocks
            for (int v = 0; v < Z_NV; v++) {
                int rows = nr - 16 * v;
                const float *src = B + (size_t)(j0 + s + 16 * v) * ldb + p0;
                for (int p = 0; p < kc; p += 16)
                    transpose_block(dst + (size_t)p * Z_NR + 16 * v, Z_NR, 16, src + p, ldb, rows < 0 ? 0 : rows,
                                    kc - p < 16 ? kc - p : 16);
            }
        }
        dst += (size_t)Z_NR * kc;
    }
}

KERNELS_TGT_512 static void micro_z(int kc, const float *restrict Ap, const float *restrict Bp, float *C, int ldc, int mr, int nr,
                            float alpha, float beta, const float *bias) {
    __m512 c[Z_MR][Z_NV];
#pragma GCC unroll 14
    for (int i = 0; i < Z_MR; i++)
        for (int v = 0; v < Z_NV; v++) c[i][v] = _mm512_setzero_ps();
    for (int p = 0; p < kc; p++) {
        __m512 b[Z_NV];
        for (int v = 0; v < Z_NV; v++) b[v] = _mm512_load_ps(Bp + 16 * v);
#pragma GCC unroll 14
        for (int i = 0; i < Z_MR; i++) {
            __m512 a = _mm512_set1_ps(Ap[i]);
            for (int v = 0; v < Z_NV; v++) c[i][v] = _mm512_fmadd_ps(a, b[v], c[i][v]);
        }
        Ap += Z_MR;
        Bp += Z_NR;
    }
    __mmask16 m[Z_NV];
    __m512 bb[Z_NV];
    for (int v = 0; v < Z_NV; v++) {
        m[v] = sm_lanes_mask(nr - 16 * v);
        bb[v] = bias ? _mm512_maskz_loadu_ps(m[v], bias + 16 * v) : _mm512_setzero_ps();
    }
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 14
    for (int i = 0; i < Z_MR; i++) {
        if (i >= mr) break;
        float *ci = C + (size_t)i * ldc;
        for (int v = 0; v < Z_NV; v++) {
            __m512 r = _mm512_mul_ps(va, c[i][v]);
            if (beta != 0.0f) r = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m[v], ci + 16 * v), r);
            if (bias) r = _mm512_add_ps(r, bb[v]);
            _mm512_mask_storeu_ps(ci + 16 * v, m[v], r);
        }
    }
}

static const gemm_isa ISA_AVX512 = {Z_MR, Z_NR, Z_MR * 8, pack_a_z, pack_b_z, micro_z};
#endif   // KERNELS_X86

// ---------------------------------------------------------------------------------------------
// SIMD level: the best the CPU has, or lower when asked (tests, bench)

static atomic_int g_simd_cap = -1;   // -1: no cap

kernels_simd kernels_simd_detect(void) {
#ifdef KERNELS_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return SM_SIMD_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return SM_SIMD_AVX2;
#endif
    return SM_SIMD_SCALAR;
}

kernels_simd kernels_simd_level(void) {
    kernels_simd best = kernels_simd_detect();
    int cap = atomic_load_explicit(&g_simd_cap, memory_order_relaxed);
    return cap >= 0 && cap < (int)best ? (kernels_simd)cap : best;
}

kernels_simd kernels_set_simd(kernels_simd level) {
    atomic_store(&g_simd_cap, (int)level);
    return kernels_simd_level();
}

const char *kernels_simd_name(kernels_simd level) {
    return level == SM_SIMD_AVX512 ? "avx512" : level == SM_SIMD_AVX2 ? "avx2" : "scalar";
}

static const gemm_isa *pick_isa(void) {
#ifdef KERNELS_X86
    switch (kernels_simd_level()) {
    case SM_SIMD_AVX512: return &ISA_AVX512;
    case SM_SIMD_AVX2: return &ISA_AVX2;
    default: break;
    }
#endif
    return &ISA_GENERIC;
}

// ---------------------------------------------------------------------------------------------
// Drivers

static void apply_gelu_epilogue(const gemm_epilogue *ep, const float *C, int ldc, int i0, int j0, int mr, int nr) {
    gelu_tile(ep->gelu_out + (size_t)i0 * ep->ldg + j0, ep->ldg, C + (size_t)i0 * ldc + j0, ldc, mr, nr);
}

void gemm_ex(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
             int ldb, float beta, float *C, int ldc, const gemm_epilogue *ep) {
    // op(A) is (M,K), op(B) is (K,N); C is (M,N) with row stride ldc
    assert(M >= 0 && N >= 0 && K >= 0 && "gemm: negative dimension");
    assert(ldc >= N && "gemm: ldc smaller than N");
    assert(lda >= (trans_a ? M : K) && "gemm: lda smaller than the stored row width of A");
    assert(ldb >= (trans_b ? K : N) && "gemm: ldb smaller than the stored row width of B");
    if (M == 0 || N == 0) return;
    const float *bias = ep ? ep->bias : NULL;
    if (K == 0 || alpha == 0.0f) {   // C = beta * C (+ bias), never reading C when beta == 0
        for (int i = 0; i < M; i++) {
            float *ci = C + (size_t)i * ldc;
            for (int j = 0; j < N; j++) {
                float r = beta == 0.0f ? 0.0f : beta * ci[j];
                ci[j] = bias ? r + bias[j] : r;
            }
        }
        if (ep && ep->gelu_out) apply_gelu_epilogue(ep, C, ldc, 0, 0, M, N);
        return;
    }
    const gemm_isa *isa = pick_isa();
    const int MR = isa->mr, NR = isa->nr, MC = isa->mc;
    _Alignas(64) float Ap[MC_MAX * KC];
    _Alignas(64) float Bp[KC * NC_MAX];
    for (int jc = 0; jc < N; jc += NC_MAX) {
        int nc = N - jc < NC_MAX ? N - jc : NC_MAX;
        for (int pc = 0; pc < K; pc += KC) {
            int kc = K - pc < KC ? K - pc : KC;
            int first = pc == 0, last = pc + kc == K;
            float beta_blk = first ? beta : 1.0f;   // later K slices accumulate
            isa->pack_b(Bp, trans_b, B, ldb, pc, kc, jc, nc);
            for (int ic = 0; ic < M; ic += MC) {
                int mc = M - ic < MC ? M - ic : MC;
                isa->pack_a(Ap, trans_a, A, lda, ic, mc, pc, kc);
                for (int ir = 0; ir < mc; ir += MR) {
                    int mr = mc - ir < MR ? mc - ir : MR;
                    for (int jr = 0; jr < nc; jr += NR) {
                        int nr = nc - jr < NR ? nc - jr : NR;
                        float *Ct = C + (size_t)(ic + ir) * ldc + jc + jr;
                        isa->micro(kc, Ap + (size_t)ir * kc, Bp + (size_t)jr * kc, Ct, ldc, mr, nr, alpha, beta_blk,
                                   first && bias ? bias + jc + jr : NULL);
                        if (last && ep && ep->gelu_out) apply_gelu_epilogue(ep, C, ldc, ic + ir, jc + jr, mr, nr);
                    }
                }
            }
        }
    }
}

void gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
          float beta, float *C, int ldc) {
    gemm_ex(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, NULL);
}

void gemm_parallel(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                   const float *B, int ldb, float beta, float *C, int ldc, const gemm_epilogue *ep) {
    if (M == 0 || N == 0) return;
    const gemm_isa *isa = pick_isa();
    const int MR = isa->mr, NR = isa->nr;
    int nt = omp_get_max_threads();
    // A grid of gr x gc tiles, one per thread. Columns first: each thread then packs only its
    // share of op(B) (the weights, in a linear layer) and all of the smaller op(A). Rows when
    // there are too few columns to share (or op(A) is the much larger operand).
    int gr = 1, gc = nt;
    int col_units = (N + NR - 1) / NR, row_units = (M + MR - 1) / MR;
    if (nt > 1 && (col_units < 2 * nt || (size_t)M > 4 * (size_t)N)) {
        gr = nt;
        gc = 1;
        if (row_units < gr) gr = row_units < 1 ? 1 : row_units;
    }
    if (gc > col_units) gc = col_units;
    // tile edges on whole micro-tiles, as even as possible
    int n_tiles = gr * gc;
    if (n_tiles <= 1) {
        gemm_ex(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, ep);
        return;
    }
#pragma omp parallel for schedule(static) num_threads(n_tiles)
    for (int tile = 0; tile < n_tiles; tile++) {
        int ti = tile / gc, tj = tile % gc;
        int r0 = (int)((long)row_units * ti / gr) * MR, r1 = (int)((long)row_units * (ti + 1) / gr) * MR;
        int c0 = (int)((long)col_units * tj / gc) * NR, c1 = (int)((long)col_units * (tj + 1) / gc) * NR;
        if (r1 > M) r1 = M;
        if (c1 > N) c1 = N;
        if (r1 <= r0 || c1 <= c0) continue;
        const float *At = trans_a ? A + r0 : A + (size_t)r0 * lda;
        const float *Bt = trans_b ? B + (size_t)c0 * ldb : B + c0;
        gemm_epilogue e, *pe = NULL;
        if (ep) {
            e = *ep;
            if (e.bias) e.bias += c0;
            if (e.gelu_out) e.gelu_out += (size_t)r0 * e.ldg + c0;
            pe = &e;
        }
        gemm_ex(trans_a, trans_b, r1 - r0, c1 - c0, K, alpha, At, lda, Bt, ldb, beta, C + (size_t)r0 * ldc + c0, ldc, pe);
    }
}

void gemm_mt(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
             int ldb, float beta, float *C, int ldc) {
    gemm_parallel(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, NULL);
}

void gemm_ref(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
              int ldb, float beta, float *C, int ldc) {
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
