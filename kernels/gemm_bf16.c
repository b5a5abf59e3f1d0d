// gemm_bf16.c — defines the bf16 rows of the GEMM engine's micro-kernel table (GEMM_BF16_C_FF,
// GEMM_BF16_C_FB, GEMM_BF16_AVX512_FF, GEMM_BF16_AVX512_FB: operands rounded to bf16 pairs as they
// are packed, products summed in float32 by vdpbf16ps or plain C), and the bf16 entry points on
// them: gemm_bf16, gemm_bf16_parallel, matmul_forward_bf16[_gelu], matmul_backward_bf16.
#include "kernels_internal.h"

#include <assert.h>

// The rows' names end in the operands' dtypes as stored: FF reads float32 A and B (both rounded to
// bf16 while packed), FB float32 A and bf16 B (a linear layer's weight, AdamW's bf16 copy, packed
// as it is). Every packed operand is a sequence of 32-bit words, each a pair of bf16 along the
// contraction: low half k = 2p, high half k = 2p+1 (0 past the end of K), which is what vdpbf16ps
// multiplies and sums:
//   A micro-panel (MR rows, K block [p0, p0+kc)): word (p, i) at p*MR + i, for pair p < ceil(kc/2)
//   B micro-panel (NR columns):                  word (p, j) at p*NR + j
// K blocks start at even k (KC is even), so a pair never straddles two blocks. The arithmetic
// per element: acc = 0, then for each pair acc += a_hi b_hi, acc += a_lo b_lo (Intel's order for
// vdpbf16ps; the plain-C rows follow it), the products exact in float32; per K block the
// epilogue of the fp32 rows: C = alpha acc (+ beta C) (+ bias), then C = alpha acc + C.
#define KC 512
#define NC 512
#define NC_SHORT 768   // the AVX-512 rows' column block for K <= KC/2: 768 x 128 pairs, 384 KiB (gemm.c col_block)

static size_t panel_bytes(int rows, int kc) { return (size_t)rows * (size_t)((kc + 1) / 2) * sizeof(uint32_t); }

// ---------------------------------------------------------------------------------------------
// Generic packing (any dtype pair, any stride, any shape): element by element. The plain-C rows
// use it; the AVX-512 rows' packers are the same words, vectorised.

static inline uint16_t fetch_f32(const gemm_operand *X, size_t at) { return bf16_from_f32(((const float *)X->p)[at]); }
static inline uint16_t fetch_bf16(const gemm_operand *X, size_t at) { return ((const uint16_t *)X->p)[at]; }
typedef uint16_t (*fetch_fn)(const gemm_operand *X, size_t at);

static inline __attribute__((always_inline)) void pack_a_generic(uint32_t *restrict dst, const gemm_operand *A, int i0,
                                                                 int mc, int p0, int kc, int MR, fetch_fn get) {
    const int kp = (kc + 1) / 2;
    for (int s = 0; s < mc; s += MR) {
        int mr = mc - s < MR ? mc - s : MR;
        for (int p = 0; p < kp; p++)
            for (int i = 0; i < MR; i++) {
                uint32_t w = 0;
                if (i < mr)
                    for (int h = 0; h < 2 && 2 * p + h < kc; h++) {
                        size_t r = (size_t)(i0 + s + i), k = (size_t)(p0 + 2 * p + h);
                        w |= (uint32_t)get(A, A->trans ? k * (size_t)A->ld + r : r * (size_t)A->ld + k) << (16 * h);
                    }
                dst[(size_t)p * MR + i] = w;
            }
        dst += (size_t)MR * kp;
    }
}

static inline __attribute__((always_inline)) void pack_b_generic(uint32_t *restrict dst, const gemm_operand *B, int p0,
                                                                 int kc, int j0, int nc, int NR, fetch_fn get) {
    const int kp = (kc + 1) / 2;
    for (int s = 0; s < nc; s += NR) {
        int nr = nc - s < NR ? nc - s : NR;
        for (int p = 0; p < kp; p++)
            for (int j = 0; j < NR; j++) {
                uint32_t w = 0;
                if (j < nr)
                    for (int h = 0; h < 2 && 2 * p + h < kc; h++) {
                        size_t c = (size_t)(j0 + s + j), k = (size_t)(p0 + 2 * p + h);
                        w |= (uint32_t)get(B, B->trans ? c * (size_t)B->ld + k : k * (size_t)B->ld + c) << (16 * h);
                    }
                dst[(size_t)p * NR + j] = w;
            }
        dst += (size_t)NR * kp;
    }
}

// The epilogue of a tile, element by element (the plain-C rows, and the AVX-512 rows' partial tiles
// share its arithmetic through their vector forms)
static inline float epilogue1(float acc, float c, float bias, const gemm_micro_args *a) {
    float r = a->alpha * acc;
    if (a->beta != 0.0f) r = __builtin_fmaf(a->beta, c, r);
    if (a->bias) r = r + bias;
    return r;
}

// ---------------------------------------------------------------------------------------------
// Plain C: 4 x 16 tile

enum { G_MR = 4, G_NR = 16 };

static void pack_a_gf(void *restrict dst, const gemm_operand *A, int i0, int mc, int p0, int kc) {
    pack_a_generic(dst, A, i0, mc, p0, kc, G_MR, fetch_f32);
}
static void pack_b_gf(void *restrict dst, const gemm_operand *B, int p0, int kc, int j0, int nc) {
    pack_b_generic(dst, B, p0, kc, j0, nc, G_NR, fetch_f32);
}
static void pack_b_gb(void *restrict dst, const gemm_operand *B, int p0, int kc, int j0, int nc) {
    pack_b_generic(dst, B, p0, kc, j0, nc, G_NR, fetch_bf16);
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
    const uint32_t *Ap = Apv, *Bp = Bpv;
    float acc[G_MR][G_NR] = {{0}};
    for (int p = 0; p < (kc + 1) / 2; p++) {
        for (int i = 0; i < G_MR; i++) {
            float alo = bf16_to_f32((uint16_t)Ap[i]), ahi = bf16_to_f32((uint16_t)(Ap[i] >> 16));
            for (int j = 0; j < G_NR; j++) {
                float blo = bf16_to_f32((uint16_t)Bp[j]), bhi = bf16_to_f32((uint16_t)(Bp[j] >> 16));
                acc[i][j] = acc[i][j] + ahi * bhi;   // exact products: no contraction question
                acc[i][j] = acc[i][j] + alo * blo;
            }
        }
        Ap += G_MR;
        Bp += G_NR;
    }
    for (int i = 0; i < mr; i++) {
        float *ci = C + (size_t)i * ldc;
        for (int j = 0; j < nr; j++) ci[j] = epilogue1(acc[i][j], ci[j], args->bias ? args->bias[j] : 0.0f, args);
    }
}

const gemm_ukernel GEMM_BF16_C_FF = {
    .name = "bf16 c 4x16 (f32 x f32)", .a_type = KERNELS_F32, .b_type = KERNELS_F32, .isa = KERNELS_ISA_C,
    .mr = G_MR, .nr = G_NR, .mc = 128, .kc = KC, .nc = NC,
    .pack_a = pack_a_gf, .pack_b = pack_b_gf, .a_panel = a_panel_g, .b_panel = b_panel_g, .micro = micro_g, .bf16 = 1,
};
const gemm_ukernel GEMM_BF16_C_FB = {
    .name = "bf16 c 4x16 (f32 x bf16)", .a_type = KERNELS_F32, .b_type = KERNELS_BF16, .isa = KERNELS_ISA_C,
    .mr = G_MR, .nr = G_NR, .mc = 128, .kc = KC, .nc = NC,
    .pack_a = pack_a_gf, .pack_b = pack_b_gb, .a_panel = a_panel_g, .b_panel = b_panel_g, .micro = micro_g, .bf16 = 1,
};

#ifdef KERNELS_X86
// ---------------------------------------------------------------------------------------------
// AVX-512 BF16: 14 x 32 tile (28 zmm accumulators, 2 B vectors, 1 broadcast pair), as the fp32
// row's, each vdpbf16ps doing two k per lane. Packing converts 32 floats to bf16 with one
// vcvtne2ps2bf16 and lays the pairs out with 16 x 16 dword transposes or 16-bit permutes. Whole
// vectors are loaded and stored unmasked, masks only at a block's edge (a masked load or store in
// every iteration takes ~1.5x as long on Zen 5); the packers and the micro-kernel prefetch what the
// hardware prefetcher does not follow (rows far apart, the tile of C), as the fp32 row does: the
// lm_head's products stream their weight (packers) and C (50304 columns) from memory.

#define TGT_BF16 __attribute__((target("avx512bf16,avx512f,avx512bw,avx512vl,avx2,fma")))
#define INLINE_BF16 static inline __attribute__((always_inline, target("avx512bf16,avx512f,avx512bw,avx512vl,avx2,fma")))

enum { Z_MR = 14, Z_NV = 2, Z_NR = 16 * Z_NV };
enum { PF_PAIRS = 8 };   // how many pairs ahead the k-across-rows packers prefetch their rows

// The first n 16-bit lanes (n clamped to [0, 32])
INLINE_BF16 __mmask32 lanes32(long n) {
    return n >= 32 ? (__mmask32)0xFFFFFFFFu : n <= 0 ? (__mmask32)0 : (__mmask32)((1u << n) - 1);
}

// 32 consecutive elements (n of them valid, the rest 0) as 32 bf16 words: from float32 (rounded,
// with vcvtne2ps2bf16: words 0..15 from the first 16 floats) or bf16
INLINE_BF16 __m512i pairs_f32(const float *x, int n) {
    if (n >= 32) return (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + 16), _mm512_loadu_ps(x));
    __m512 lo = _mm512_maskz_loadu_ps(sm_lanes_mask(n), x), hi = _mm512_maskz_loadu_ps(sm_lanes_mask(n - 16), x + 16);
    return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}
INLINE_BF16 __m512i pairs_bf16(const uint16_t *x, int n) {
    return n >= 32 ? _mm512_loadu_si512(x) : _mm512_maskz_loadu_epi16(lanes32(n), x);
}

// Prefetch n_bytes from x (into L1: _MM_HINT_T0, L2: _MM_HINT_T1), a line at a time (and the last
// byte's line)
#define prefetch_span(x, n_bytes, hint)                                                                                \
    do {                                                                                                             \
        const char *pf_x_ = (x);                                                                                     \
        size_t pf_n_ = (n_bytes);                                                                                    \
        for (size_t pf_b_ = 0; pf_b_ < pf_n_; pf_b_ += 64) _mm_prefetch(pf_x_ + pf_b_, hint);                         \
        if (pf_n_) _mm_prefetch(pf_x_ + pf_n_ - 1, hint);                                                            \
    } while (0)

// Rows k and k+1 of 32 columns each (as 32 bf16 words) into the pairs of those columns: out[0] the
// words (k, k+1) of columns 0..15, out[1] of columns 16..31. vpunpck{l,h}wd interleave within
// 128-bit lanes (columns 8L..8L+3 and 8L+4..8L+7 of lane L); vpermt2d puts the columns in order.
INLINE_BF16 void interleave_rows(__m512i out[2], __m512i rk, __m512i rk1) {
    const __m512i idx0 = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
    const __m512i idx1 = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
    __m512i lo = _mm512_unpacklo_epi16(rk, rk1), hi = _mm512_unpackhi_epi16(rk, rk1);
    out[0] = _mm512_permutex2var_epi32(lo, idx0, hi);
    out[1] = _mm512_permutex2var_epi32(lo, idx1, hi);
}

// op(X) with k along stored rows (A not transposed, B transposed): rows [r0, r0+nrows) (<= 16),
// each contributing the pairs of [p0, p0+kc); word (p, r) goes to dst[p*stride + r] for r < width
// (lanes r >= nrows are 0). 16 pairs of 16 rows at a time, transposed in registers. Also prefetches
// rows [r0+pf_off, r0+pf_off+pf_rows) at the same k: the next micro-panel's.
INLINE_BF16 void pack_k_along_rows(uint32_t *dst, int stride, int width, const gemm_operand *X, int is_bf16, int r0,
                                   int nrows, int p0, int kc, int pf_off, int pf_rows) {
    const size_t esz = is_bf16 ? 2 : 4;
    const char *base = X->p;
    __mmask16 wm = sm_lanes_mask(width);
    for (int k = 0; k < kc; k += 32) {
        int n = kc - k < 32 ? kc - k : 32;
        __m512 r[16];
        for (int i = 0; i < 16; i++) {
            if (i >= nrows) {
                r[i] = _mm512_setzero_ps();
                continue;
            }
            size_t at = (size_t)(r0 + i) * (size_t)X->ld + (size_t)(p0 + k);
            r[i] = (__m512)(is_bf16 ? pairs_bf16((const uint16_t *)X->p + at, n) : pairs_f32((const float *)X->p + at, n));
        }
        for (int i = 0; i < pf_rows; i++)
            prefetch_span(base + ((size_t)(r0 + pf_off + i) * (size_t)X->ld + (size_t)(p0 + k)) * esz, (size_t)n * esz,
                          _MM_HINT_T0);
        transpose16(r);
        int np = (n + 1) / 2;
        if (width == 16)
            for (int c = 0; c < np; c++) _mm512_storeu_ps(dst + (size_t)(k / 2 + c) * stride, r[c]);
        else
            for (int c = 0; c < np; c++) _mm512_mask_storeu_ps(dst + (size_t)(k / 2 + c) * stride, wm, r[c]);
    }
}

// A: float32 activations or gradients (the rows' A is always float32), MR-row panels
TGT_BF16 static void pack_a_zf(void *restrict dstv, const gemm_operand *A, int i0, int mc, int p0, int kc) {
    uint32_t *dst = dstv;
    const int kp = (kc + 1) / 2;
    const size_t panel = (size_t)Z_MR * (size_t)kp;
    if (!A->trans) {
        for (int s = 0; s < mc; s += Z_MR, dst += panel) {
            int mr = mc - s < Z_MR ? mc - s : Z_MR, next = mc - s - Z_MR;
            pack_k_along_rows(dst, Z_MR, Z_MR, A, 0, i0 + s, mr, p0, kc, Z_MR, next < 0 ? 0 : next > Z_MR ? Z_MR : next);
        }
        return;
    }
    // op(A)(i,k) = A[k*lda + i] (a weight gradient's dout^T): pair p of the block's rows from
    // stored rows p0+2p and p0+2p+1, contiguous in i, pair by pair across all the panels; 16 rows
    // of op(A) at a time are rounded by one vcvtne2ps2bf16 (row k in words 0..15, row k+1 in
    // 16..31) and interleaved into pairs by one vpermw. Stored rows far apart: prefetched ahead.
    const float *X = A->p;
    const size_t ld = (size_t)A->ld;
    const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5,
                                         20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __mmask16 w = sm_lanes_mask(Z_MR);
    for (int p = 0; p < kp; p++) {
        const float *rk = X + (size_t)(p0 + 2 * p) * ld + i0, *rk1 = rk + ld;
        const int has1 = 2 * p + 1 < kc;
        if (p + PF_PAIRS < kp) {
            prefetch_span((const char *)(rk + 2 * PF_PAIRS * ld), (size_t)mc * 4, _MM_HINT_T0);
            if (2 * (p + PF_PAIRS) + 1 < kc)
                prefetch_span((const char *)(rk1 + 2 * PF_PAIRS * ld), (size_t)mc * 4, _MM_HINT_T0);
        }
        // and the same rows of the next block (the next mc rows of op(A), if any: a prefetch past
        // the matrix never faults) into L2, a whole block ahead of its packing
        prefetch_span((const char *)(rk + mc), (size_t)mc * 4, _MM_HINT_T1);
        if (has1) prefetch_span((const char *)(rk1 + mc), (size_t)mc * 4, _MM_HINT_T1);
        for (int s = 0; s < mc; s += Z_MR) {
            __m512 lo, hi = _mm512_setzero_ps();
            if (s + 16 <= mc) {   // 16 rows readable (lanes 14, 15: the next panel's, not stored)
                lo = _mm512_loadu_ps(rk + s);
                if (has1) hi = _mm512_loadu_ps(rk1 + s);
            } else {
                __mmask16 m = sm_lanes_mask(mc - s);
                lo = _mm512_maskz_loadu_ps(m, rk + s);
                if (has1) hi = _mm512_maskz_loadu_ps(m, rk1 + s);
            }
            __m512i words = _mm512_permutexvar_epi16(idx, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_mask_storeu_epi32(dst + (size_t)(s / Z_MR) * panel + (size_t)p * Z_MR, w, words);
        }
    }
}

INLINE_BF16 void pack_b_z(uint32_t *dst, const gemm_operand *B, int is_bf16, int p0, int kc, int j0, int nc) {
    const int kp = (kc + 1) / 2;
    const size_t panel = (size_t)Z_NR * (size_t)kp;
    if (B->trans) {   // column j of op(B) is stored row j: two runs of 16 rows per panel
        for (int s = 0; s < nc; s += Z_NR, dst += panel) {
            int nr = nc - s < Z_NR ? nc - s : Z_NR;
            for (int v = 0; v < Z_NV; v++) {
                int rows = nr - 16 * v, next = nc - s - Z_NR - 16 * v;   // this run's rows, the next panel's
                pack_k_along_rows(dst + 16 * v, Z_NR, 16, B, is_bf16, j0 + s + 16 * v, rows < 0 ? 0 : rows, p0, kc, Z_NR,
                                  next < 0 ? 0 : next > 16 ? 16 : next);
            }
        }
        return;
    }
    // op(B)(k,j) = B[k*ldb + j] (a weight for dinp, activations for dweight): pair p of 32 columns
    // from stored rows p0+2p and p0+2p+1, pair by pair across all the panels (the block's part of
    // each stored row read in one run), rows ahead prefetched. Columns >= nc: 0 (masked loads).
    const size_t ld = (size_t)B->ld, esz = is_bf16 ? 2 : 4;
    const char *base = B->p;
    for (int p = 0; p < kp; p++) {
        if (p + PF_PAIRS < kp)
            for (int h = 0; h < 2 && 2 * (p + PF_PAIRS) + h < kc; h++)
                prefetch_span(base + ((size_t)(p0 + 2 * (p + PF_PAIRS) + h) * ld + (size_t)j0) * esz, (size_t)nc * esz,
                              _MM_HINT_T0);
        for (int s = 0; s < nc; s += Z_NR) {
            int nr = nc - s < Z_NR ? nc - s : Z_NR;
            __m512i rows[2];
            for (int h = 0; h < 2; h++) {
                if (2 * p + h >= kc) {
                    rows[h] = _mm512_setzero_si512();
                    continue;
                }
                size_t at = (size_t)(p0 + 2 * p + h) * ld + (size_t)(j0 + s);
                rows[h] = is_bf16 ? pairs_bf16((const uint16_t *)B->p + at, nr) : pairs_f32((const float *)B->p + at, nr);
            }
            __m512i out[2];
            interleave_rows(out, rows[0], rows[1]);
            uint32_t *d = dst + (size_t)(s / Z_NR) * panel + (size_t)p * Z_NR;
            _mm512_storeu_si512(d, out[0]);
            _mm512_storeu_si512(d + 16, out[1]);
        }
    }
}
TGT_BF16 static void pack_b_zf(void *restrict dst, const gemm_operand *B, int p0, int kc, int j0, int nc) {
    pack_b_z(dst, B, 0, p0, kc, j0, nc);
}
TGT_BF16 static void pack_b_zb(void *restrict dst, const gemm_operand *B, int p0, int kc, int j0, int nc) {
    pack_b_z(dst, B, 1, p0, kc, j0, nc);
}
static size_t a_panel_z(int kc, int group) {
    (void)group;
    return panel_bytes(Z_MR, kc);
}
static size_t b_panel_z(int kc, int group) {
    (void)group;
    return panel_bytes(Z_NR, kc);
}

// The micro-kernel for R rows of the tile (R <= Z_MR; the A panel keeps its Z_MR stride): the full
// tile is R = Z_MR, and a block's last micro-panel of mr < Z_MR rows runs the R = mr form (M = 256
// = 18 x 14 + 4: the full form would spend 10 of every 266 rows' work on padding), as the fp32
// row does. Each element's chain is the same in every form.
INLINE_BF16 void micro_z_rows(int kc, const uint32_t *restrict Ap, const __m512i *restrict Bp, float *C, int ldc, int nr,
                              const gemm_micro_args *args, const int R) {
    const float alpha = args->alpha, beta = args->beta, *bias = args->bias;
    __m512 c[Z_MR][Z_NV];
#pragma GCC unroll 14
    for (int i = 0; i < R; i++) {
        // the tile of C, for writing (or reading, beta != 0) after the k loop: its misses overlap the loop
        __builtin_prefetch(C + (size_t)i * ldc, 1, 3);
        __builtin_prefetch(C + (size_t)i * ldc + 16, 1, 3);
        for (int v = 0; v < Z_NV; v++) c[i][v] = _mm512_setzero_ps();
    }
    for (int p = 0; p < (kc + 1) / 2; p++) {
        __m512bh b[Z_NV];
        for (int v = 0; v < Z_NV; v++) b[v] = (__m512bh)_mm512_load_si512(Bp + v);
#pragma GCC unroll 14
        for (int i = 0; i < R; i++) {
            __m512bh a = (__m512bh)_mm512_set1_epi32((int)Ap[i]);
            for (int v = 0; v < Z_NV; v++) c[i][v] = _mm512_dpbf16_ps(c[i][v], a, b[v]);
        }
        Ap += Z_MR;
        Bp += Z_NV;
    }
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    if (nr == Z_NR) {   // a whole tile: unmasked
        __m512 bb[Z_NV];
        for (int v = 0; v < Z_NV; v++) bb[v] = bias ? _mm512_loadu_ps(bias + 16 * v) : _mm512_setzero_ps();
#pragma GCC unroll 14
        for (int i = 0; i < R; i++) {
            float *ci = C + (size_t)i * ldc;
            for (int v = 0; v < Z_NV; v++) {
                __m512 r = _mm512_mul_ps(va, c[i][v]);
                if (beta != 0.0f) r = _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci + 16 * v), r);
                if (bias) r = _mm512_add_ps(r, bb[v]);
                _mm512_storeu_ps(ci + 16 * v, r);
            }
        }
        return;
    }
    __mmask16 m[Z_NV];
    __m512 bb[Z_NV];
    for (int v = 0; v < Z_NV; v++) {
        m[v] = sm_lanes_mask(nr - 16 * v);
        bb[v] = bias ? _mm512_maskz_loadu_ps(m[v], bias + 16 * v) : _mm512_setzero_ps();
    }
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

GEMM_MICRO_Z_FORMS(TGT_BF16, uint32_t, __m512i)

const gemm_ukernel GEMM_BF16_AVX512_FF = {
    .name = "bf16 avx512 14x32 (f32 x f32)", .a_type = KERNELS_F32, .b_type = KERNELS_F32,
    .isa = KERNELS_ISA_AVX512_BF16, .mr = Z_MR, .nr = Z_NR, .mc = Z_MR * 8, .kc = KC, .nc = NC, .nc_short = NC_SHORT,
    .pack_a = pack_a_zf, .pack_b = pack_b_zf, .a_panel = a_panel_z, .b_panel = b_panel_z, .micro = micro_z, .bf16 = 1,
};
const gemm_ukernel GEMM_BF16_AVX512_FB = {
    .name = "bf16 avx512 14x32 (f32 x bf16)", .a_type = KERNELS_F32, .b_type = KERNELS_BF16,
    .isa = KERNELS_ISA_AVX512_BF16, .mr = Z_MR, .nr = Z_NR, .mc = Z_MR * 8, .kc = KC, .nc = NC, .nc_short = NC_SHORT,
    .pack_a = pack_a_zf, .pack_b = pack_b_zb, .a_panel = a_panel_z, .b_panel = b_panel_z, .micro = micro_z, .bf16 = 1,
};
#endif   // KERNELS_X86

// ---------------------------------------------------------------------------------------------
// Entry points

static const gemm_ukernel *bf16_row(kernels_dtype b_type) {
    const gemm_ukernel *uk = gemm_ukernel_pick(KERNELS_OP_GEMM_BF16, KERNELS_F32, b_type);
    assert(uk && "gemm bf16: no row for the chosen path (cpu.c's path list and gemm.c's table disagree)");
    return uk;
}

int kernels_bf16_available(void) { return kernels_pick(KERNELS_OP_GEMM_BF16) == KERNELS_ISA_AVX512_BF16; }

static void check_dims(int trans_a, int trans_b, int M, int N, int K, int lda, int ldb, int ldc) {
    assert(M >= 0 && N >= 0 && K >= 0 && "gemm_bf16: negative dimension");
    assert(ldc >= N && lda >= (trans_a ? M : K) && ldb >= (trans_b ? K : N) && "gemm_bf16: a leading dimension too small");
    (void)trans_a, (void)trans_b, (void)M, (void)N, (void)K, (void)lda, (void)ldb, (void)ldc;
}

void gemm_bf16(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
               int ldb, float beta, float *C, int ldc) {
    // op(A) is (M,K), op(B) is (K,N); C is (M,N) with row stride ldc
    check_dims(trans_a, trans_b, M, N, K, lda, ldb, ldc);
    gemm_operand a = {.p = A, .ld = lda, .trans = trans_a}, b = {.p = B, .ld = ldb, .trans = trans_b};
    gemm_run(bf16_row(KERNELS_F32), M, N, K, alpha, &a, &b, beta, C, ldc, NULL);
}

void gemm_bf16_parallel(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                        const float *B, int ldb, float beta, float *C, int ldc) {
    check_dims(trans_a, trans_b, M, N, K, lda, ldb, ldc);
    gemm_operand a = {.p = A, .ld = lda, .trans = trans_a}, b = {.p = B, .ld = ldb, .trans = trans_b};
    gemm_run_parallel(bf16_row(KERNELS_F32), M, N, K, alpha, &a, &b, beta, C, ldc, NULL);
}

void matmul_forward_bf16(float *out, const float *inp, const uint16_t *weight, const float *bias, int N, int C, int OC) {
    // inp is (N,C), weight is (OC,C) bf16, bias is (OC) or NULL; out is (N,OC)
    assert(N >= 0 && C > 0 && OC > 0 && "matmul_forward_bf16: bad dimensions");
    gemm_operand a = {.p = inp, .ld = C}, b = {.p = weight, .ld = C, .trans = 1};
    gemm_epilogue ep = {.bias = bias};
    gemm_run_parallel(bf16_row(KERNELS_BF16), N, OC, C, 1.0f, &a, &b, 0.0f, out, OC, &ep);
}

void matmul_forward_bf16_gelu(float *out, float *out_gelu, const float *inp, const uint16_t *weight, const float *bias,
                              int N, int C, int OC) {
    // as matmul_forward_bf16; out_gelu (N,OC) = gelu(out), tile by tile while the tile is in cache
    assert(N >= 0 && C > 0 && OC > 0 && "matmul_forward_bf16_gelu: bad dimensions");
    gemm_operand a = {.p = inp, .ld = C}, b = {.p = weight, .ld = C, .trans = 1};
    gemm_epilogue ep = {.bias = bias, .gelu_out = out_gelu, .ldg = OC};
    gemm_run_parallel(bf16_row(KERNELS_BF16), N, OC, C, 1.0f, &a, &b, 0.0f, out, OC, &ep);
}

void matmul_forward_bf16_part(float *out, float *out_gelu, const float *inp, const uint16_t *weight, const float *bias,
                              int N, int C, int OC, int part, int parts) {
    assert(N >= 0 && C > 0 && OC > 0 && "matmul_forward_bf16_part: bad dimensions");
    gemm_operand a = {.p = inp, .ld = C}, b = {.p = weight, .ld = C, .trans = 1};
    gemm_epilogue ep = {.bias = bias, .gelu_out = out_gelu, .ldg = OC};
    gemm_run_part(bf16_row(KERNELS_BF16), part, parts, N, OC, C, 1.0f, &a, &b, 0.0f, out, OC, &ep);
}

void matmul_backward_bf16(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                          const uint16_t *weight, int N, int C, int OC, int accumulate) {
    // dout is (N,OC), inp is (N,C), weight is (OC,C) bf16; dinp (N,C) =; dweight (OC,C) and dbias
    // (OC) (may be NULL) += when accumulate, else =
    assert(N >= 0 && C > 0 && OC > 0 && "matmul_backward_bf16: bad dimensions");
    if (N == 0) return;
    // dinp (N,C) = dout (N,OC) @ weight (OC,C)
    gemm_operand d = {.p = dout, .ld = OC}, w = {.p = weight, .ld = C};
    gemm_run_parallel(bf16_row(KERNELS_BF16), N, C, OC, 1.0f, &d, &w, 0.0f, dinp, C, NULL);
    // dweight (OC,C) (+)= dout^T (OC,N) @ inp (N,C)
    gemm_operand dt = {.p = dout, .ld = OC, .trans = 1}, x = {.p = inp, .ld = C};
    gemm_run_parallel(bf16_row(KERNELS_F32), OC, C, N, 1.0f, &dt, &x, accumulate ? 1.0f : 0.0f, dweight, C, NULL);
    if (dbias) matmul_dbias(dbias, dout, N, OC, accumulate);
}
