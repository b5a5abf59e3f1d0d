// gemm_f32.c — defines the fp32 rows of the GEMM engine's micro-kernel table (GEMM_F32_C,
// GEMM_F32_AVX2, GEMM_F32_AVX512): their packing, register-tiled micro-kernels and one-row forms
// (x W^T without packing, each element summed exactly as the micro-kernel sums it).
#include "kernels_internal.h"

// Every row sums an element as the micro-kernel does: over each KC slice of the contraction,
// in order, a k-ordered chain (a fused multiply-add per k on the SIMD rows; a product then a sum
// in plain C, which GCC does not contract in ISO C mode), added to C once per slice:
//   C = alpha s_0 (+ beta C) (+ bias),  then C = alpha s_k + C for the later slices.
// The one-row forms below keep exactly this order, so a row of a product (a decode step) has the
// bits of the same row computed inside a larger product (a prefill).
#define KC 256
#define NC 512

static size_t panel_bytes(int rows, int kc) { return (size_t)rows * (size_t)kc * sizeof(float); }

// ---------------------------------------------------------------------------------------------
// Plain C (any CPU): 4 x 16 tile

enum { G_MR = 4, G_NR = 16 };

// op(A)(i,p) for rows [i0, i0+mc), columns [p0, p0+kc) into MR-row micro-panels laid out
// p-major (panel[p*MR + i]); rows past mc are zero-filled.
static void pack_a_generic(float *restrict dst, const gemm_operand *Ao, int i0, int mc, int p0, int kc, int MR) {
    const float *A = Ao->p;
    int lda = Ao->ld;
    for (int s = 0; s < mc; s += MR) {
        int mr = mc - s < MR ? mc - s : MR;
        if (!Ao->trans) {   // op(A)(i,p) = A[i*lda + p]
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

// op(B)(p,j) for rows [p0, p0+kc), columns [j0, j0+nc) into NR-column micro-panels laid out
// p-major (panel[p*NR + j]); columns past nc are zero-filled.
static void pack_b_generic(float *restrict dst, const gemm_operand *Bo, int p0, int kc, int j0, int nc, int NR) {
    const float *B = Bo->p;
    int ldb = Bo->ld;
    for (int s = 0; s < nc; s += NR) {
        int nr = nc - s < NR ? nc - s : NR;
        if (!Bo->trans) {   // op(B)(p,j) = B[p*ldb + j]
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

static void pack_a_g(void *restrict dst, const gemm_operand *A, int i0, int mc, int p0, int kc) {
    pack_a_generic(dst, A, i0, mc, p0, kc, G_MR);
}
static void pack_b_g(void *restrict dst, const gemm_operand *B, int p0, int kc, int j0, int nc) {
    pack_b_generic(dst, B, p0, kc, j0, nc, G_NR);
}
static size_t a_panel_g(int kc, int group) {
    (void)group;
    return panel_bytes(G_MR, kc);
}
static size_t b_panel_g(int kc, int group) {
    (void)group;
    return panel_bytes(G_NR, kc);
}

static void micro_g(int kc, const void *restrict Apv, const void *restrict Bpv, float *C, int ldc, int mr, int nr,
                    const gemm_micro_args *args) {
    const float *restrict Ap = Apv, *restrict Bp = Bpv;
    const float alpha = args->alpha, beta = args->beta, *bias = args->bias;
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

// One row: micro_g's arithmetic per element (a product, then a sum), slice by slice.
static void row_g(int N, int K, float alpha, const gemm_operand *xo, const gemm_operand *Bo, float beta, float *C,
                  const float *bias) {
    const float *x = xo->p, *B = Bo->p;
    for (int pc = 0; pc < K; pc += KC) {
        int kc = K - pc < KC ? K - pc : KC;
        float beta_blk = pc == 0 ? beta : 1.0f;
        const float *bb = pc == 0 ? bias : NULL;
        for (int j = 0; j < N; j++) {
            const float *w = B + (size_t)j * Bo->ld + pc;
            float c = 0.0f;
            for (int p = 0; p < kc; p++) c += x[pc + p] * w[p];
            float r = alpha * c;
            if (beta_blk != 0.0f) r = beta_blk * C[j] + r;
            if (bb) r = r + bb[j];
            C[j] = r;
        }
    }
}

const gemm_ukernel GEMM_F32_C = {
    .name = "f32 c 4x16", .a_type = KERNELS_F32, .b_type = KERNELS_F32, .isa = KERNELS_ISA_C,
    .mr = G_MR, .nr = G_NR, .mc = 128, .kc = KC, .nc = NC,
    .pack_a = pack_a_g, .pack_b = pack_b_g, .a_panel = a_panel_g, .b_panel = b_panel_g, .micro = micro_g, .row = row_g,
};

#ifdef KERNELS_X86
// ---------------------------------------------------------------------------------------------
// AVX2 + FMA: 6 x 16 tile (12 ymm accumulators), generic packing

#define TGT_AVX2 __attribute__((target("avx2,fma")))
enum { A2_MR = 6, A2_NR = 16 };

static void pack_a_a2(void *restrict dst, const gemm_operand *A, int i0, int mc, int p0, int kc) {
    pack_a_generic(dst, A, i0, mc, p0, kc, A2_MR);
}
static void pack_b_a2(void *restrict dst, const gemm_operand *B, int p0, int kc, int j0, int nc) {
    pack_b_generic(dst, B, p0, kc, j0, nc, A2_NR);
}
static size_t a_panel_a2(int kc, int group) {
    (void)group;
    return panel_bytes(A2_MR, kc);
}
static size_t b_panel_a2(int kc, int group) {
    (void)group;
    return panel_bytes(A2_NR, kc);
}

TGT_AVX2 static void micro_a2(int kc, const void *restrict Apv, const void *restrict Bpv, float *C, int ldc, int mr,
                              int nr, const gemm_micro_args *args) {
    const float *restrict Ap = Apv, *restrict Bp = Bpv;
    const float alpha = args->alpha, beta = args->beta, *bias = args->bias;
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

// In-place transpose of the 8 x 8 block in r[0..7] (row i, column c -> row c, column i).
TGT_AVX2 static inline __attribute__((always_inline)) void transpose8(__m256 r[8]) {
    __m256 t[8], s[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int h = 0; h < 2; h++) {   // rows 4h..4h+3
        s[4 * h] = _mm256_shuffle_ps(t[4 * h], t[4 * h + 2], 0x44);
        s[4 * h + 1] = _mm256_shuffle_ps(t[4 * h], t[4 * h + 2], 0xEE);
        s[4 * h + 2] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0x44);
        s[4 * h + 3] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0xEE);
    }
    for (int c = 0; c < 4; c++) {
        r[c] = _mm256_permute2f128_ps(s[c], s[4 + c], 0x20);
        r[4 + c] = _mm256_permute2f128_ps(s[c], s[4 + c], 0x31);
    }
}

// One row: 8 outputs per vector, their weight rows transposed 8 x 8 in registers so that lane j
// runs output j's chain of FMAs in k order, as micro_a2 does.
TGT_AVX2 static void row_a2(int N, int K, float alpha, const gemm_operand *xo, const gemm_operand *Bo, float beta,
                            float *C, const float *bias) {
    const float *x = xo->p, *B = Bo->p;
    int ldb = Bo->ld;
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int j0 = 0; j0 < N; j0 += 8) {
        int nj = N - j0 < 8 ? N - j0 : 8;
        for (int pc = 0; pc < K; pc += KC) {
            int kc = K - pc < KC ? K - pc : KC;
            __m256 acc = _mm256_setzero_ps();
            for (int p = 0; p < kc; p += 8) {
                int np = kc - p < 8 ? kc - p : 8;
                __m256i km = _mm256_cmpgt_epi32(_mm256_set1_epi32(np), lane);
                __m256 r[8];
                for (int i = 0; i < 8; i++)
                    r[i] = i < nj ? _mm256_maskload_ps(B + (size_t)(j0 + i) * ldb + pc + p, km) : _mm256_setzero_ps();
                transpose8(r);
                for (int c = 0; c < np; c++) acc = _mm256_fmadd_ps(_mm256_broadcast_ss(x + pc + p + c), r[c], acc);
            }
            float beta_blk = pc == 0 ? beta : 1.0f;
            const float *bb = pc == 0 ? bias : NULL;
            float *cj = C + j0;
            if (nj == 8) {
                __m256 v = _mm256_mul_ps(_mm256_set1_ps(alpha), acc);
                if (beta_blk != 0.0f) v = _mm256_fmadd_ps(_mm256_set1_ps(beta_blk), _mm256_loadu_ps(cj), v);
                if (bb) v = _mm256_add_ps(v, _mm256_loadu_ps(bb + j0));
                _mm256_storeu_ps(cj, v);
            } else {
                _Alignas(32) float t[8];
                _mm256_store_ps(t, acc);
                for (int j = 0; j < nj; j++) {
                    float v = alpha * t[j];
                    if (beta_blk != 0.0f) v = __builtin_fmaf(beta_blk, cj[j], v);
                    if (bb) v = v + bb[j0 + j];
                    cj[j] = v;
                }
            }
        }
    }
}

const gemm_ukernel GEMM_F32_AVX2 = {
    .name = "f32 avx2 6x16", .a_type = KERNELS_F32, .b_type = KERNELS_F32, .isa = KERNELS_ISA_AVX2,
    .mr = A2_MR, .nr = A2_NR, .mc = 120, .kc = KC, .nc = NC,
    .pack_a = pack_a_a2, .pack_b = pack_b_a2, .a_panel = a_panel_a2, .b_panel = b_panel_a2, .micro = micro_a2,
    .row = row_a2,
};

// ---------------------------------------------------------------------------------------------
// AVX-512: 14 x 32 tile (28 zmm accumulators + 2 B vectors + 1 broadcast = 31 registers),
// packing with in-register 16 x 16 transposes.

enum { Z_MR = 14, Z_NV = 2, Z_NR = 16 * Z_NV };

KERNELS_TGT_512 static void pack_a_z(void *restrict dstv, const gemm_operand *Ao, int i0, int mc, int p0, int kc) {
    float *restrict dst = dstv;
    const float *A = Ao->p;
    int lda = Ao->ld;
    for (int s = 0; s < mc; s += Z_MR) {
        int mr = mc - s < Z_MR ? mc - s : Z_MR;
        // each loop also prefetches what the next micro-panel reads at the same p (the hardware
        // prefetcher follows a few streams, not 14 or 32 interleaved rows)
        int next_rows = mc - s - Z_MR;   // rows of the next micro-panel, if any
        if (!Ao->trans) {   // rows of A are contiguous in p: transpose 14 x 16 blocks
            const float *src = A + (size_t)(i0 + s) * lda + p0;
            for (int p = 0; p < kc; p += 16) {
                for (int i = 0; i < next_rows && i < Z_MR; i++)
                    _mm_prefetch((const char *)(src + (size_t)(Z_MR + i) * lda + p), _MM_HINT_T0);
                transpose_block(dst + (size_t)p * Z_MR, Z_MR, Z_MR, src + p, lda, mr, kc - p < 16 ? kc - p : 16);
            }
        } else {   // op(A)(i,p) = A[p*lda + i]: a masked copy of mr floats per p
            __mmask16 m = sm_lanes_mask(mr), w = sm_lanes_mask(Z_MR);
            for (int p = 0; p < kc; p++) {
                const float *src = A + (size_t)(p0 + p) * lda + i0 + s;
                if (next_rows > 0) _mm_prefetch((const char *)(src + Z_MR + 15), _MM_HINT_T0);
                _mm512_mask_storeu_ps(dst + (size_t)p * Z_MR, w, _mm512_maskz_loadu_ps(m, src));
            }
        }
        dst += (size_t)Z_MR * kc;
    }
}

KERNELS_TGT_512 static void pack_b_z(void *restrict dstv, const gemm_operand *Bo, int p0, int kc, int j0, int nc) {
    float *restrict dst = dstv;
    const float *B = Bo->p;
    int ldb = Bo->ld;
    for (int s = 0; s < nc; s += Z_NR) {
        int nr = nc - s < Z_NR ? nc - s : Z_NR;
        // as in pack_a_z: each loop prefetches what the next micro-panel reads at the same p
        int next_cols = nc - s - Z_NR;   // columns of the next micro-panel, if any
        if (!Bo->trans) {   // op(B)(p,j) = B[p*ldb + j]: masked copies of nr floats per p
            __mmask16 m[Z_NV];
            for (int v = 0; v < Z_NV; v++) m[v] = sm_lanes_mask(nr - 16 * v);
            const float *src = B + (size_t)p0 * ldb + j0 + s;
            for (int p = 0; p < kc; p++) {
                if (next_cols > 0) {
                    _mm_prefetch((const char *)(src + (size_t)p * ldb + Z_NR), _MM_HINT_T0);
                    if (next_cols > 16) _mm_prefetch((const char *)(src + (size_t)p * ldb + Z_NR + 16), _MM_HINT_T0);
                }
#pragma GCC unroll 4
                for (int v = 0; v < Z_NV; v++)
                    _mm512_store_ps(dst + (size_t)p * Z_NR + 16 * v,
                                    _mm512_maskz_loadu_ps(m[v], src + (size_t)p * ldb + 16 * v));
            }
        } else {   // op(B)(p,j) = B[j*ldb + p]: transpose 16 x 16 blocks
            for (int v = 0; v < Z_NV; v++) {
                int rows = nr - 16 * v, next = next_cols - 16 * v;   // this block's rows, the next panel's
                const float *src = B + (size_t)(j0 + s + 16 * v) * ldb + p0;
                for (int p = 0; p < kc; p += 16) {
                    for (int i = 0; i < next && i < 16; i++)
                        _mm_prefetch((const char *)(src + (size_t)(Z_NR + i) * ldb + p), _MM_HINT_T0);
                    transpose_block(dst + (size_t)p * Z_NR + 16 * v, Z_NR, 16, src + p, ldb, rows < 0 ? 0 : rows,
                                    kc - p < 16 ? kc - p : 16);
                }
            }
        }
        dst += (size_t)Z_NR * kc;
    }
}
static size_t a_panel_z(int kc, int group) {
    (void)group;
    return panel_bytes(Z_MR, kc);
}
static size_t b_panel_z(int kc, int group) {
    (void)group;
    return panel_bytes(Z_NR, kc);
}

// The micro-kernel for R rows of the tile (R <= Z_MR; the A panel keeps its Z_MR stride): the
// full tile is R = Z_MR, and a block's last micro-panel of mr < Z_MR rows runs the R = mr form
// instead of computing Z_MR rows and keeping mr (M = 256 = 18 x 14 + 4: the full form would
// spend 10 of every 266 rows' work on padding). Each element's chain is the same in every form.
KERNELS_INLINE_512 void micro_z_rows(int kc, const float *restrict Ap, const float *restrict Bp, float *C, int ldc,
                                     int nr, const gemm_micro_args *args, const int R) {
    const float alpha = args->alpha, beta = args->beta, *bias = args->bias;
    __m512 c[Z_MR][Z_NV];
#pragma GCC unroll 14
    for (int i = 0; i < R; i++) {
        // the tile of C, for writing (or reading, beta != 0) after the k loop: its misses overlap the loop
        __builtin_prefetch(C + (size_t)i * ldc, 1, 3);
        __builtin_prefetch(C + (size_t)i * ldc + 16, 1, 3);
        for (int v = 0; v < Z_NV; v++) c[i][v] = _mm512_setzero_ps();
    }
    for (int p = 0; p < kc; p++) {
        __m512 b[Z_NV];
        for (int v = 0; v < Z_NV; v++) b[v] = _mm512_load_ps(Bp + 16 * v);
#pragma GCC unroll 14
        for (int i = 0; i < R; i++) {
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
    for (int i = 0; i < R; i++) {
        float *ci = C + (size_t)i * ldc;
        for (int v = 0; v < Z_NV; v++) {
            __m512 r = _mm512_mul_ps(va, c[i][v]);
            if (beta != 0.0f) r = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m[v], ci + 16 * v), r);
            if (bias) r = _mm512_add_ps(r, bb[v]);
            _mm512_mask_storeu_ps(ci + 16 * v, m[v], r);
        }
    }
}

GEMM_MICRO_Z_FORMS(KERNELS_TGT_512, float, float)

// One row: 16 outputs per vector, their weight rows transposed 16 x 16 in registers so that lane j
// runs output j's chain of FMAs in k order, as micro_z does. Two blocks of 16 outputs at a time:
// two independent chains (a chain is one FMA latency per k).
enum { ZR_BLOCKS = 2 };
KERNELS_TGT_512 static void row_z(int N, int K, float alpha, const gemm_operand *xo, const gemm_operand *Bo, float beta,
                                  float *C, const float *bias) {
    const float *x = xo->p, *B = Bo->p;
    int ldb = Bo->ld;
    for (int j0 = 0; j0 < N; j0 += 16 * ZR_BLOCKS) {
        for (int pc = 0; pc < K; pc += KC) {
            int kc = K - pc < KC ? K - pc : KC;
            __m512 acc[ZR_BLOCKS];
            for (int b = 0; b < ZR_BLOCKS; b++) acc[b] = _mm512_setzero_ps();
            for (int p = 0; p < kc; p += 16) {
                int np = kc - p < 16 ? kc - p : 16;
                __mmask16 km = sm_lanes_mask(np);
                const float *xp = x + pc + p;
                for (int b = 0; b < ZR_BLOCKS; b++) {
                    int jb = j0 + 16 * b, nj = N - jb;
                    if (nj <= 0) break;
                    __m512 r[16];
                    for (int i = 0; i < 16; i++)
                        r[i] = i < nj ? _mm512_maskz_loadu_ps(km, B + (size_t)(jb + i) * ldb + pc + p) : _mm512_setzero_ps();
                    // the next block's rows at this k, into L2 (the hardware's prefetch does not keep
                    // up with 16 interleaved rows: 7.6 -> 12.9 GB/s from memory on one core, medians)
                    if (jb + 16 * ZR_BLOCKS + 16 <= N)
                        for (int i = 0; i < 16; i++)
                            _mm_prefetch((const char *)(B + (size_t)(jb + 16 * ZR_BLOCKS + i) * ldb + pc + p), _MM_HINT_T1);
                    transpose16(r);
                    if (np == 16) {
#pragma GCC unroll 16
                        for (int c = 0; c < 16; c++) acc[b] = _mm512_fmadd_ps(_mm512_set1_ps(xp[c]), r[c], acc[b]);
                    } else {
                        for (int c = 0; c < np; c++) acc[b] = _mm512_fmadd_ps(_mm512_set1_ps(xp[c]), r[c], acc[b]);
                    }
                }
            }
            float beta_blk = pc == 0 ? beta : 1.0f;
            const float *bb = pc == 0 ? bias : NULL;
            for (int b = 0; b < ZR_BLOCKS; b++) {
                int jb = j0 + 16 * b, nj = N - jb;
                if (nj <= 0) break;
                __mmask16 m = sm_lanes_mask(nj);
                __m512 r = _mm512_mul_ps(_mm512_set1_ps(alpha), acc[b]);
                if (beta_blk != 0.0f) r = _mm512_fmadd_ps(_mm512_set1_ps(beta_blk), _mm512_maskz_loadu_ps(m, C + jb), r);
                if (bb) r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(m, bb + jb));
                _mm512_mask_storeu_ps(C + jb, m, r);
            }
        }
    }
}

// One row over a packed B (gemm_operand.packed): micro_z's arithmetic with one row of A, the
// micro-panels read as they lie (no transposes: row_z's 16 x 16 transposes cap it at about half
// the L3 read rate). ZP_PANELS micro-panels at a time share each broadcast of x: 8 independent
// chains, enough to cover an FMA's latency at two per cycle.
enum { ZP_PANELS = 4 };
KERNELS_TGT_512 static void row_pz(int N, int K, float alpha, const gemm_operand *xo, const gemm_operand *Bo,
                                   float beta, float *C, const float *bias) {
    const float *x = xo->p, *B = Bo->p;   // micro-panel j: B + j*K*Z_NR, element (p, c) at p*Z_NR + c
    const int n_panels = (N + Z_NR - 1) / Z_NR;
    for (int j0 = 0; j0 < n_panels; j0 += ZP_PANELS) {
        const int np = n_panels - j0 < ZP_PANELS ? n_panels - j0 : ZP_PANELS;
        for (int pc = 0; pc < K; pc += KC) {
            const int kc = K - pc < KC ? K - pc : KC;
            const float *bp = B + ((size_t)j0 * K + pc) * Z_NR;
            const size_t ps = (size_t)K * Z_NR;   // floats from one micro-panel to the next
            __m512 acc[ZP_PANELS][Z_NV];
            for (int g = 0; g < ZP_PANELS; g++)
                for (int v = 0; v < Z_NV; v++) acc[g][v] = _mm512_setzero_ps();
            if (np == ZP_PANELS) {
                for (int p = 0; p < kc; p++) {
                    __m512 a = _mm512_set1_ps(x[pc + p]);
#pragma GCC unroll 4
                    for (int g = 0; g < ZP_PANELS; g++)
                        for (int v = 0; v < Z_NV; v++)
                            acc[g][v] = _mm512_fmadd_ps(a, _mm512_load_ps(bp + g * ps + (size_t)p * Z_NR + 16 * v), acc[g][v]);
                }
            } else {
                for (int p = 0; p < kc; p++) {
                    __m512 a = _mm512_set1_ps(x[pc + p]);
                    for (int g = 0; g < np; g++)
                        for (int v = 0; v < Z_NV; v++)
                            acc[g][v] = _mm512_fmadd_ps(a, _mm512_load_ps(bp + g * ps + (size_t)p * Z_NR + 16 * v), acc[g][v]);
                }
            }
            // micro_z's epilogue: alpha, then beta C (later K slices add to C), the bias with the first
            const float beta_blk = pc == 0 ? beta : 1.0f;
            const float *bb = pc == 0 ? bias : NULL;
            for (int g = 0; g < np; g++)
                for (int v = 0; v < Z_NV; v++) {
                    const int jb = (j0 + g) * Z_NR + 16 * v;
                    if (jb >= N) break;
                    __mmask16 m = sm_lanes_mask(N - jb);
                    __m512 r = _mm512_mul_ps(_mm512_set1_ps(alpha), acc[g][v]);
                    if (beta_blk != 0.0f) r = _mm512_fmadd_ps(_mm512_set1_ps(beta_blk), _mm512_maskz_loadu_ps(m, C + jb), r);
                    if (bb) r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(m, bb + jb));
                    _mm512_mask_storeu_ps(C + jb, m, r);
                }
        }
    }
}

const gemm_ukernel GEMM_F32_AVX512 = {
    .name = "f32 avx512 14x32", .a_type = KERNELS_F32, .b_type = KERNELS_F32, .isa = KERNELS_ISA_AVX512,
    .mr = Z_MR, .nr = Z_NR, .mc = Z_MR * 8, .kc = KC, .nc = NC,
    .pack_a = pack_a_z, .pack_b = pack_b_z, .a_panel = a_panel_z, .b_panel = b_panel_z, .micro = micro_z,
    .row = row_z, .row_packed = row_pz,
};
#endif   // KERNELS_X86
