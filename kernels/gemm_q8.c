// gemm_q8.c — defines INT8 weights with per-group scales: q8_quantize and q8_dequantize, the q8
// rows of the GEMM engine's micro-kernel table (GEMM_Q8_C, GEMM_Q8_AVX2, GEMM_Q8_AVX_VNNI,
// GEMM_Q8_AVX512_VNNI: fp32 activations quantized while packed, times int8 weights), their
// one-row forms for a decode step, and matmul_forward_q8 / matmul_forward_q8_gelu.
#include "kernels_internal.h"

#include <assert.h>

// The arithmetic, the same on every path (so every path, the packed GEMM and the one-row form
// give the same bits, whatever the thread count):
//   weights W (OC,IC): per row o and group g of `group` consecutive inputs, sw = amax/127 and
//     wq = round(W * 127/amax) in [-127, 127] (q8_quantize, once, at load);
//   activations x (N,IC): the same per row and group at run time (sx, xq);
//   isum(o,g) = sum over the group of xq wq, an exact int32 (|isum| <= 512 * 127^2 < 2^24, so
//     its conversion to float is exact too);
//   out = bias (or 0), then out = fma(isum, sx * sw, out) for g = 0, 1, ... in order (one rounding
//     for the scales' product, one per group).
// Paths differ only in how they form isum: plain C; AVX2's vpmaddubsw (u8 x s8 summed in pairs
// into int16, which saturates: it gets |x| and sign(x) w, so a pair is at most 2 * 127 * 127 =
// 32258 < 32767) with vpmaddwd to widen; VNNI's vpdpbusd (u8 x s8 summed in fours into int32,
// no saturation) on w + 128 (the weight's bits xor 0x80) and x, less 128 sum(x) per group, which
// the activations' packing computes once (rather than the weights' sums per call).

// ---------------------------------------------------------------------------------------------
// Quantizing one group (the same arithmetic on every path, for weights and activations)

#define Q8_ROUND 12582912.0f   // 1.5 * 2^23: (v + R) - R rounds v to the nearest integer, ties to even

// q (len) = x quantized, *scale its scale; returns the sum of q. amax = max |x|; scale = amax/127
// (NaN if x holds a NaN, so the products carry it); q = round(x * (127/amax)), clamped to
// [-127, 127] (a NaN clamps to -127: only finite inputs give meaningful q). Written for GCC's
// vectoriser (fixed lanes combined in a fixed order; max and integer sums are exact in any order).
#define Q8_LANES 16
static inline __attribute__((always_inline)) int q8_group_body(int8_t *restrict q, float *scale, const float *restrict x,
                                                               int len) {
    float m[Q8_LANES];
    int nan[Q8_LANES];
    for (int l = 0; l < Q8_LANES; l++) m[l] = 0.0f, nan[l] = 0;
    int k = 0;
    for (; k + Q8_LANES <= len; k += Q8_LANES)
#pragma omp simd
        for (int l = 0; l < Q8_LANES; l++) {
            float a = fabsf(x[k + l]);
            m[l] = a > m[l] ? a : m[l];
            nan[l] |= a != a;
        }
    for (int l = 0; k < len; k++, l++) {
        float a = fabsf(x[k]);
        m[l] = a > m[l] ? a : m[l];
        nan[l] |= a != a;
    }
    float amax = 0.0f;
    int any_nan = 0;
    for (int l = 0; l < Q8_LANES; l++) {
        amax = m[l] > amax ? m[l] : amax;
        any_nan |= nan[l];
    }
    *scale = any_nan ? NAN : amax / 127.0f;
    float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    int sum[Q8_LANES] = {0};
    k = 0;
    for (; k + Q8_LANES <= len; k += Q8_LANES)
#pragma omp simd
        for (int l = 0; l < Q8_LANES; l++) {
            float v = x[k + l] * inv;
            v = v > -127.0f ? v : -127.0f;   // as vmaxps: a NaN gives -127
            v = v < 127.0f ? v : 127.0f;
            int r = (int)((v + Q8_ROUND) - Q8_ROUND);
            q[k + l] = (int8_t)r;
            sum[l] += r;
        }
    for (int l = 0; k < len; k++, l++) {
        float v = x[k] * inv;
        v = v > -127.0f ? v : -127.0f;
        v = v < 127.0f ? v : 127.0f;
        int r = (int)((v + Q8_ROUND) - Q8_ROUND);
        q[k] = (int8_t)r;
        sum[l] += r;
    }
    int s = 0;
    for (int l = 0; l < Q8_LANES; l++) s += sum[l];
    return s;
}

static int q8_group_c(int8_t *restrict q, float *scale, const float *restrict x, int len) {
    return q8_group_body(q, scale, x, len);
}

static int q8_groups(int cols, int group) { return (cols + group - 1) / group; }

static void check_group(int group) {
    assert(group >= 4 && group <= KERNELS_Q8_MAX_GROUP && group % 4 == 0 &&
           "q8: the group size must be a multiple of 4 in [4, 512]");
    (void)group;
}

void q8_quantize(int8_t *q, float *scales, const float *w, int rows, int cols, int group) {
    // w is (rows,cols); q (rows,cols) =, scales (rows, ceil(cols/group)) =
    assert(rows >= 0 && cols >= 0 && "q8_quantize: negative dimension");
    check_group(group);
    int G = q8_groups(cols, group);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++)
        for (int g = 0; g < G; g++) {
            int k0 = g * group, len = cols - k0 < group ? cols - k0 : group;
            q8_group_c(q + (size_t)r * cols + k0, scales + (size_t)r * G + g, w + (size_t)r * cols + k0, len);
        }
}

void q8_dequantize(float *w, const int8_t *q, const float *scales, int rows, int cols, int group) {
    // q (rows,cols), scales (rows, ceil(cols/group)); w (rows,cols) = q * its group's scale
    assert(rows >= 0 && cols >= 0 && "q8_dequantize: negative dimension");
    check_group(group);
    int G = q8_groups(cols, group);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++)
        for (int k = 0; k < cols; k++) w[(size_t)r * cols + k] = (float)q[(size_t)r * cols + k] * scales[(size_t)r * G + k / group];
}

// ---------------------------------------------------------------------------------------------
// Packed layouts, shared by the rows (MR and NR are the row's)
//
// A micro-panel (MR rows of op(A), K block [p0, p0+kc)), group after group (the last may be short):
//   nq = ceil(len/4) quads x MR rows x 4 bytes of xq (row i's bytes 4q..4q+3 of the group; zero
//   past the group's end and in rows past mc), then MR floats sx, then MR int32 -128 sum(xq).
// B micro-panel (NR columns of op(B) = NR rows of W), the same groups:
//   nq quads x NR columns x 4 bytes of wq (xor 0x80 on the VNNI rows: w + 128 as u8), then NR floats
//   sw (zero in columns past nc; their bytes are zero too).

static size_t a_panel_q8(int kc, int group, int MR) {
    size_t bytes = 0;
    for (int g0 = 0; g0 < kc; g0 += group) {
        int len = kc - g0 < group ? kc - g0 : group;
        bytes += (size_t)((len + 3) / 4) * MR * 4 + (size_t)MR * 8;
    }
    return bytes;
}
static size_t b_panel_q8(int kc, int group, int NR) {
    size_t bytes = 0;
    for (int g0 = 0; g0 < kc; g0 += group) {
        int len = kc - g0 < group ? kc - g0 : group;
        bytes += (size_t)((len + 3) / 4) * NR * 4 + (size_t)NR * 4;
    }
    return bytes;
}

typedef int (*q8_group_fn)(int8_t *restrict q, float *scale, const float *restrict x, int len);

// op(A) = A (N,K) as stored (activations: a linear layer's input is never transposed).
static inline __attribute__((always_inline)) void pack_a_q8_body(void *restrict dstv, const gemm_operand *Ao, int i0,
                                                                 int mc, int p0, int kc, int MR, q8_group_fn quant) {
    assert(!Ao->trans && "q8 GEMM: op(A) must be the stored activations");
    const float *A = Ao->p;
    const int group = Ao->group;
    uint8_t *dst = dstv;
    _Alignas(64) int8_t q[KERNELS_Q8_MAX_GROUP + 4];
    for (int s = 0; s < mc; s += MR) {
        int mr = mc - s < MR ? mc - s : MR;
        for (int g0 = 0; g0 < kc; g0 += group) {
            int len = kc - g0 < group ? kc - g0 : group, nq = (len + 3) / 4;
            float sx[32];
            int32_t corr[32];
            for (int i = 0; i < MR; i++) {
                if (i < mr) {
                    int sum = quant(q, &sx[i], A + (size_t)(i0 + s + i) * Ao->ld + p0 + g0, len);
                    corr[i] = -128 * sum;
                    for (int k = len; k < nq * 4; k++) q[k] = 0;
                } else {
                    sx[i] = 0.0f;
                    corr[i] = 0;
                    memset(q, 0, (size_t)nq * 4);
                }
                for (int qq = 0; qq < nq; qq++) memcpy(dst + ((size_t)qq * MR + i) * 4, q + 4 * qq, 4);
            }
            dst += (size_t)nq * MR * 4;
            memcpy(dst, sx, (size_t)MR * sizeof(float));
            memcpy(dst + (size_t)MR * 4, corr, (size_t)MR * sizeof(int32_t));
            dst += (size_t)MR * 8;
        }
    }
}

// op(B) = W^T with W (OC,K) stored: column j of op(B) is row j of W, its scales row j of the
// scales. The generic (byte by byte) packing; AVX-512 has its own below.
static void pack_b_q8_generic(void *restrict dstv, const gemm_operand *Bo, int p0, int kc, int j0, int nc, int NR,
                              uint8_t flip) {
    assert(Bo->trans && "q8 GEMM: op(B) must be the transposed weight");
    const int8_t *W = Bo->p;
    const int group = Bo->group;
    uint8_t *dst = dstv;
    for (int s = 0; s < nc; s += NR) {
        int nr = nc - s < NR ? nc - s : NR;
        for (int g0 = 0; g0 < kc; g0 += group) {
            int len = kc - g0 < group ? kc - g0 : group, nq = (len + 3) / 4;
            for (int j = 0; j < NR; j++) {
                const int8_t *src = j < nr ? W + (size_t)(j0 + s + j) * Bo->ld + p0 + g0 : NULL;
                for (int k = 0; k < nq * 4; k++)
                    dst[((size_t)(k / 4) * NR + j) * 4 + k % 4] = src && k < len ? (uint8_t)((uint8_t)src[k] ^ flip) : 0;
            }
            dst += (size_t)nq * NR * 4;
            int g = (p0 + g0) / group;
            for (int j = 0; j < NR; j++) {
                float sw = j < nr ? Bo->scales[(size_t)(j0 + s + j) * Bo->ld_scales + g] : 0.0f;
                memcpy(dst + (size_t)j * 4, &sw, 4);
            }
            dst += (size_t)NR * 4;
        }
    }
}

// The first K block starts each element's chain at the bias (or 0), a later one at C.
static inline float chain_start(const gemm_micro_args *a, const float *C, int ldc, int i, int j) {
    return a->first ? (a->bias ? a->bias[j] : 0.0f) : C[(size_t)i * ldc + j];
}

// ---------------------------------------------------------------------------------------------
// Plain C: 4 x 16 tile

enum { QC_MR = 4, QC_NR = 16 };

static void pack_a_q8c(void *restrict dst, const gemm_operand *A, int i0, int mc, int p0, int kc) {
    pack_a_q8_body(dst, A, i0, mc, p0, kc, QC_MR, q8_group_c);
}
static void pack_b_q8c(void *restrict dst, const gemm_operand *B, int p0, int kc, int j0, int nc) {
    pack_b_q8_generic(dst, B, p0, kc, j0, nc, QC_NR, 0);
}
static size_t a_panel_q8c(int kc, int group) { return a_panel_q8(kc, group, QC_MR); }
static size_t b_panel_q8c(int kc, int group) { return b_panel_q8(kc, group, QC_NR); }

static void micro_q8c(int kc, const void *restrict Apv, const void *restrict Bpv, float *C, int ldc, int mr, int nr,
                      const gemm_micro_args *args) {
    const int8_t *Ap = Apv, *Bp = Bpv;
    float acc[QC_MR][QC_NR];
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) acc[i][j] = chain_start(args, C, ldc, i, j);
    for (int g0 = 0; g0 < kc; g0 += args->group) {
        int len = kc - g0 < args->group ? kc - g0 : args->group, nq = (len + 3) / 4;
        int32_t isum[QC_MR][QC_NR] = {{0}};
        for (int q = 0; q < nq; q++)
            for (int i = 0; i < QC_MR; i++)
                for (int j = 0; j < QC_NR; j++)
                    for (int t = 0; t < 4; t++) isum[i][j] += Ap[(q * QC_MR + i) * 4 + t] * Bp[(q * QC_NR + j) * 4 + t];
        const float *sx = (const float *)(const void *)(Ap + nq * QC_MR * 4);
        const float *sw = (const float *)(const void *)(Bp + nq * QC_NR * 4);
        for (int i = 0; i < mr; i++)
            for (int j = 0; j < nr; j++) acc[i][j] = __builtin_fmaf((float)isum[i][j], sx[i] * sw[j], acc[i][j]);
        Ap += nq * QC_MR * 4 + QC_MR * 8;
        Bp += nq * QC_NR * 4 + QC_NR * 4;
    }
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) C[(size_t)i * ldc + j] = acc[i][j];
}

// The one-row forms quantize x (1,K) in chunks of whole groups into stack buffers (no heap, any K),
// then continue each output's chain over the chunk's groups.
#define Q8_ROW_CHUNK 4096
typedef struct {
    _Alignas(64) int8_t xq[Q8_ROW_CHUNK + 64];   // zero past the chunk's end
    float sx[Q8_ROW_CHUNK / 4];
    int32_t corr[Q8_ROW_CHUNK / 4];              // -128 sum(xq) of each group
    int len, n_groups, g_base;                   // elements, groups, the first group's index in K
} q8_chunk;

static inline __attribute__((always_inline)) void quantize_chunk(q8_chunk *ch, const float *x, int c0, int clen,
                                                                 int group, q8_group_fn quant) {
    ch->len = clen;
    ch->n_groups = (clen + group - 1) / group;
    ch->g_base = c0 / group;
    for (int g = 0; g < ch->n_groups; g++) {
        int len = clen - g * group < group ? clen - g * group : group;
        ch->corr[g] = -128 * quant(ch->xq + g * group, &ch->sx[g], x + c0 + g * group, len);
    }
    memset(ch->xq + clen, 0, 64);
}

// The generic frame: output by output, dot(xq, wq row o) per group.
typedef int32_t (*q8_dot_fn)(const int8_t *xq, int32_t corr, const int8_t *w, int len);

static inline __attribute__((always_inline)) void row_q8_body(int N, int K, const gemm_operand *xo, const gemm_operand *Bo,
                                                              float *C, const float *bias, q8_group_fn quant, q8_dot_fn dot) {
    const int8_t *W = Bo->p;
    const int group = Bo->group, chunk = Q8_ROW_CHUNK / group * group;
    q8_chunk ch;
    for (int c0 = 0; c0 < K; c0 += chunk) {
        quantize_chunk(&ch, xo->p, c0, K - c0 < chunk ? K - c0 : chunk, group, quant);
        for (int o = 0; o < N; o++) {
            const int8_t *wo = W + (size_t)o * Bo->ld + c0;
            const float *so = Bo->scales + (size_t)o * Bo->ld_scales + ch.g_base;
            float acc = c0 == 0 ? (bias ? bias[o] : 0.0f) : C[o];
            for (int g = 0; g < ch.n_groups; g++) {
                int len = ch.len - g * group < group ? ch.len - g * group : group;
                int32_t isum = dot(ch.xq + g * group, ch.corr[g], wo + g * group, len);
                acc = __builtin_fmaf((float)isum, ch.sx[g] * so[g], acc);
            }
            C[o] = acc;
        }
    }
}

static int32_t dot_q8c(const int8_t *xq, int32_t corr, const int8_t *w, int len) {
    (void)corr;
    int32_t s = 0;
    for (int k = 0; k < len; k++) s += xq[k] * w[k];
    return s;
}

static void row_q8c(int N, int K, float alpha, const gemm_operand *x, const gemm_operand *B, float beta, float *C,
                    const float *bias) {
    (void)alpha, (void)beta;
    row_q8_body(N, K, x, B, C, bias, q8_group_c, dot_q8c);
}

const gemm_ukernel GEMM_Q8_C = {
    .name = "q8 c 4x16", .a_type = KERNELS_F32, .b_type = KERNELS_Q8, .isa = KERNELS_ISA_C,
    .mr = QC_MR, .nr = QC_NR, .mc = 128, .kc = 512, .nc = 512, .grouped = 1,
    .pack_a = pack_a_q8c, .pack_b = pack_b_q8c, .a_panel = a_panel_q8c, .b_panel = b_panel_q8c, .micro = micro_q8c,
    .row = row_q8c,
};

#ifdef KERNELS_X86
// ---------------------------------------------------------------------------------------------
// AVX2: 3 x 16 tile, vpmaddubsw on |x| and sign(x) w, widened by vpmaddwd

#define TGT_Q8_AVX2 __attribute__((target("avx2,fma")))
#define TGT_Q8_AVXVNNI __attribute__((target("avxvnni,avx2,fma")))
enum { Q2_MR = 3, Q2_NR = 16 };

TGT_Q8_AVX2 static int q8_group_a2(int8_t *restrict q, float *scale, const float *restrict x, int len) {
    return q8_group_body(q, scale, x, len);
}
TGT_Q8_AVX2 static void pack_a_q8a2(void *restrict dst, const gemm_operand *A, int i0, int mc, int p0, int kc) {
    pack_a_q8_body(dst, A, i0, mc, p0, kc, Q2_MR, q8_group_a2);
}
static void pack_b_q8a2(void *restrict dst, const gemm_operand *B, int p0, int kc, int j0, int nc) {
    pack_b_q8_generic(dst, B, p0, kc, j0, nc, Q2_NR, 0);
}
static size_t a_panel_q8a2(int kc, int group) { return a_panel_q8(kc, group, Q2_MR); }
static size_t b_panel_q8a2(int kc, int group) { return b_panel_q8(kc, group, Q2_NR); }

// acc (8 x int32) += the 4-byte dot products of |x| and sign(x) w, per 32-bit lane
TGT_Q8_AVX2 static inline __attribute__((always_inline)) __m256i dot4_a2(__m256i acc, __m256i w, __m256i x) {
    __m256i p = _mm256_maddubs_epi16(_mm256_abs_epi8(x), _mm256_sign_epi8(w, x));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
}

// The group epilogue of the 8-lane rows: f = fma(isum, sx * sw, f) for the MR x 2 vectors of a
// tile, the group's scales read after its nq quads in each panel
TGT_Q8_AVX2 static inline __attribute__((always_inline)) void epilogue_256(__m256 *f, const __m256i *s, int MR,
                                                                            const uint8_t *Ap, const uint8_t *Bp, int nq) {
    const float *sx = (const float *)(const void *)(Ap + nq * MR * 4);
    const float *sw = (const float *)(const void *)(Bp + nq * 64);
    __m256 w0 = _mm256_loadu_ps(sw), w1 = _mm256_loadu_ps(sw + 8);
    for (int i = 0; i < MR; i++) {
        __m256 si = _mm256_set1_ps(sx[i]);
        f[2 * i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[2 * i]), _mm256_mul_ps(si, w0), f[2 * i]);
        f[2 * i + 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[2 * i + 1]), _mm256_mul_ps(si, w1), f[2 * i + 1]);
    }
}

// Chain starts and stores of an 8-lane tile through memory (partial tiles included)
TGT_Q8_AVX2 static inline __attribute__((always_inline)) void tile_load_256(__m256 *f, int MR, int NV, const float *C,
                                                                             int ldc, int mr, int nr,
                                                                             const gemm_micro_args *a) {
    _Alignas(32) float t[8 * 2];
    for (int i = 0; i < MR; i++) {
        for (int j = 0; j < 8 * NV; j++) t[j] = i < mr && j < nr ? chain_start(a, C, ldc, i, j) : 0.0f;
        for (int v = 0; v < NV; v++) f[i * NV + v] = _mm256_load_ps(t + 8 * v);
    }
}
TGT_Q8_AVX2 static inline __attribute__((always_inline)) void tile_store_256(const __m256 *f, int NV, float *C, int ldc,
                                                                              int mr, int nr) {
    _Alignas(32) float t[8 * 2];
    for (int i = 0; i < mr; i++) {
        for (int v = 0; v < NV; v++) _mm256_store_ps(t + 8 * v, f[i * NV + v]);
        memcpy(C + (size_t)i * ldc, t, (size_t)nr * sizeof(float));
    }
}

// The 8-lane rows' micro-kernel, MR x 16: per group, dot(s, w, x) over its quads (s from 0, or from
// -128 sum(x) when the row's weights are packed as w + 128), then the chain step.
typedef __m256i (*dot4_256_fn)(__m256i acc, __m256i w, __m256i x);
TGT_Q8_AVX2 static inline __attribute__((always_inline)) void micro_q8_256(int kc, const uint8_t *Ap, const uint8_t *Bp,
                                                                            float *C, int ldc, int mr, int nr,
                                                                            const gemm_micro_args *args, int MR,
                                                                            int offset, dot4_256_fn dot) {
    __m256 f[4][2];
    __m256i s[4][2];
    tile_load_256(&f[0][0], MR, 2, C, ldc, mr, nr, args);
    for (int g0 = 0; g0 < kc; g0 += args->group) {
        int len = kc - g0 < args->group ? kc - g0 : args->group, nq = (len + 3) / 4;
        const int32_t *corr = (const int32_t *)(const void *)(Ap + nq * MR * 4 + MR * 4);
        for (int i = 0; i < MR; i++) s[i][0] = s[i][1] = offset ? _mm256_set1_epi32(corr[i]) : _mm256_setzero_si256();
        for (int q = 0; q < nq; q++) {
            __m256i b0 = _mm256_loadu_si256((const __m256i *)(const void *)(Bp + q * 64));
            __m256i b1 = _mm256_loadu_si256((const __m256i *)(const void *)(Bp + q * 64 + 32));
#pragma GCC unroll 4
            for (int i = 0; i < MR; i++) {
                int32_t xi;
                memcpy(&xi, Ap + (q * MR + i) * 4, 4);
                __m256i xb = _mm256_set1_epi32(xi);
                s[i][0] = dot(s[i][0], b0, xb);
                s[i][1] = dot(s[i][1], b1, xb);
            }
        }
        epilogue_256(&f[0][0], &s[0][0], MR, Ap, Bp, nq);
        Ap += nq * MR * 4 + MR * 8;
        Bp += nq * 64 + 64;
    }
    tile_store_256(&f[0][0], 2, C, ldc, mr, nr);
}

TGT_Q8_AVX2 static void micro_q8a2(int kc, const void *restrict Apv, const void *restrict Bpv, float *C, int ldc,
                                   int mr, int nr, const gemm_micro_args *args) {
    micro_q8_256(kc, Apv, Bpv, C, ldc, mr, nr, args, Q2_MR, 0, dot4_a2);
}

// sum over len bytes (a multiple of 4, zero-padded) of x w, 32 bytes at a time
TGT_Q8_AVX2 static inline __attribute__((always_inline)) int32_t hsum_256(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

// The last bytes of a group (n < 32 of them) as a vector, zero beyond: a copy, so nothing past the
// group's end (possibly past the weights' end) is read, and no byte of the next group enters.
static inline void tail_copy(int8_t *t, const int8_t *src, int n, int width) {
    memset(t, 0, (size_t)width);
    memcpy(t, src, (size_t)n);
}

TGT_Q8_AVX2 static int32_t dot_q8a2(const int8_t *xq, int32_t corr, const int8_t *w, int len) {
    (void)corr;
    __m256i acc = _mm256_setzero_si256();
    int k = 0;
    for (; k + 32 <= len; k += 32)
        acc = dot4_a2(acc, _mm256_loadu_si256((const __m256i *)(const void *)(w + k)),
                      _mm256_loadu_si256((const __m256i *)(const void *)(xq + k)));
    if (k < len) {
        _Alignas(32) int8_t t[32], u[32];
        tail_copy(t, w + k, len - k, 32);
        tail_copy(u, xq + k, len - k, 32);
        acc = dot4_a2(acc, _mm256_load_si256((const __m256i *)(const void *)t),
                      _mm256_load_si256((const __m256i *)(const void *)u));
    }
    return hsum_256(acc);
}

TGT_Q8_AVX2 static void row_q8a2(int N, int K, float alpha, const gemm_operand *x, const gemm_operand *B, float beta,
                                 float *C, const float *bias) {
    (void)alpha, (void)beta;
    row_q8_body(N, K, x, B, C, bias, q8_group_a2, dot_q8a2);
}

const gemm_ukernel GEMM_Q8_AVX2 = {
    .name = "q8 avx2 3x16", .a_type = KERNELS_F32, .b_type = KERNELS_Q8, .isa = KERNELS_ISA_AVX2,
    .mr = Q2_MR, .nr = Q2_NR, .mc = 120, .kc = 512, .nc = 512, .grouped = 1,
    .pack_a = pack_a_q8a2, .pack_b = pack_b_q8a2, .a_panel = a_panel_q8a2, .b_panel = b_panel_q8a2, .micro = micro_q8a2,
    .row = row_q8a2,
};

// ---------------------------------------------------------------------------------------------
// AVX-VNNI: 3 x 16 tile, vpdpbusd (ymm) on w + 128 and x, less 128 sum(x)

enum { QV_MR = 3, QV_NR = 16 };

TGT_Q8_AVXVNNI static void pack_a_q8v(void *restrict dst, const gemm_operand *A, int i0, int mc, int p0, int kc) {
    pack_a_q8_body(dst, A, i0, mc, p0, kc, QV_MR, q8_group_a2);
}
static void pack_b_q8v(void *restrict dst, const gemm_operand *B, int p0, int kc, int j0, int nc) {
    pack_b_q8_generic(dst, B, p0, kc, j0, nc, QV_NR, 0x80);
}
static size_t a_panel_q8v(int kc, int group) { return a_panel_q8(kc, group, QV_MR); }
static size_t b_panel_q8v(int kc, int group) { return b_panel_q8(kc, group, QV_NR); }

TGT_Q8_AVXVNNI static inline __attribute__((always_inline)) __m256i dot4_v(__m256i acc, __m256i w, __m256i x) {
    return _mm256_dpbusd_avx_epi32(acc, w, x);
}

TGT_Q8_AVXVNNI static void micro_q8v(int kc, const void *restrict Apv, const void *restrict Bpv, float *C, int ldc,
                                     int mr, int nr, const gemm_micro_args *args) {
    micro_q8_256(kc, Apv, Bpv, C, ldc, mr, nr, args, QV_MR, 1, dot4_v);
}

TGT_Q8_AVXVNNI static int32_t dot_q8v(const int8_t *xq, int32_t corr, const int8_t *w, int len) {
    const __m256i flip = _mm256_set1_epi8((char)0x80);
    __m256i acc = _mm256_setzero_si256();
    int k = 0;
    for (; k + 32 <= len; k += 32)
        acc = _mm256_dpbusd_avx_epi32(acc, _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(const void *)(w + k)), flip),
                                      _mm256_loadu_si256((const __m256i *)(const void *)(xq + k)));
    if (k < len) {   // past len: w + 128 = 128 against x = 0
        _Alignas(32) int8_t t[32], u[32];
        tail_copy(t, w + k, len - k, 32);
        tail_copy(u, xq + k, len - k, 32);
        acc = _mm256_dpbusd_avx_epi32(acc, _mm256_xor_si256(_mm256_load_si256((const __m256i *)(const void *)t), flip),
                                      _mm256_load_si256((const __m256i *)(const void *)u));
    }
    return hsum_256(acc) + corr;
}

TGT_Q8_AVXVNNI static void row_q8v(int N, int K, float alpha, const gemm_operand *x, const gemm_operand *B, float beta,
                                   float *C, const float *bias) {
    (void)alpha, (void)beta;
    row_q8_body(N, K, x, B, C, bias, q8_group_a2, dot_q8v);
}

const gemm_ukernel GEMM_Q8_AVX_VNNI = {
    .name = "q8 avx-vnni 3x16", .a_type = KERNELS_F32, .b_type = KERNELS_Q8, .isa = KERNELS_ISA_AVX_VNNI,
    .mr = QV_MR, .nr = QV_NR, .mc = 120, .kc = 512, .nc = 512, .grouped = 1,
    .pack_a = pack_a_q8v, .pack_b = pack_b_q8v, .a_panel = a_panel_q8v, .b_panel = b_panel_q8v, .micro = micro_q8v,
    .row = row_q8v,
};

// ---------------------------------------------------------------------------------------------
// AVX-512 VNNI: 6 x 32 tile (12 int32 + 12 float accumulators), vpdpbusd (zmm) on w + 128 and x,
// weights packed with in-register 16 x 16 transposes of 4-byte quads

#define TGT_Q8_512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")))
enum { QZ_MR = 6, QZ_NR = 32 };

TGT_Q8_512 static int q8_group_z(int8_t *restrict q, float *scale, const float *restrict x, int len) {
    return q8_group_body(q, scale, x, len);
}
TGT_Q8_512 static void pack_a_q8z(void *restrict dst, const gemm_operand *A, int i0, int mc, int p0, int kc) {
    pack_a_q8_body(dst, A, i0, mc, p0, kc, QZ_MR, q8_group_z);
}

TGT_Q8_512 static void pack_b_q8z(void *restrict dstv, const gemm_operand *Bo, int p0, int kc, int j0, int nc) {
    assert(Bo->trans && "q8 GEMM: op(B) must be the transposed weight");
    const int8_t *W = Bo->p;
    const int group = Bo->group;
    uint8_t *dst = dstv;
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    for (int s = 0; s < nc; s += QZ_NR) {
        int nr = nc - s < QZ_NR ? nc - s : QZ_NR;
        for (int g0 = 0; g0 < kc; g0 += group) {
            int len = kc - g0 < group ? kc - g0 : group, nq = (len + 3) / 4;
            for (int h = 0; h < 2; h++) {   // columns 16h..16h+15
                int rows = nr - 16 * h;
                for (int q0 = 0; q0 < nq; q0 += 16) {   // 16 quads (64 bytes) of 16 weight rows
                    int nb = len - 4 * q0 < 64 ? len - 4 * q0 : 64;
                    __mmask64 bm = nb >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << nb) - 1);
                    __m512 r[16];
                    for (int i = 0; i < 16; i++)
                        r[i] = i < rows ? _mm512_castsi512_ps(_mm512_maskz_loadu_epi8(
                                              bm, W + (size_t)(j0 + s + 16 * h + i) * Bo->ld + p0 + g0 + 4 * q0))
                                        : _mm512_setzero_ps();
                    transpose16(r);
                    int n_out = nq - q0 < 16 ? nq - q0 : 16;
                    for (int c = 0; c < n_out; c++) {   // quad q0+c of the 16 columns; padding becomes 0x80 ^ 0
                        __m512i v = _mm512_xor_si512(_mm512_castps_si512(r[c]), flip);
                        v = _mm512_maskz_mov_epi32(sm_lanes_mask(rows), v);   // columns past nc: 0
                        _mm512_storeu_si512((void *)(dst + ((size_t)(q0 + c) * QZ_NR + 16 * h) * 4), v);
                    }
                }
            }
            dst += (size_t)nq * QZ_NR * 4;
            int g = (p0 + g0) / group;
            for (int j = 0; j < QZ_NR; j++) {
                float sw = j < nr ? Bo->scales[(size_t)(j0 + s + j) * Bo->ld_scales + g] : 0.0f;
                memcpy(dst + (size_t)j * 4, &sw, 4);
            }
            dst += (size_t)QZ_NR * 4;
        }
    }
}
static size_t a_panel_q8z(int kc, int group) { return a_panel_q8(kc, group, QZ_MR); }
static size_t b_panel_q8z(int kc, int group) { return b_panel_q8(kc, group, QZ_NR); }

// acc += the 4-byte dot products of a (u8) and b (s8) per 32-bit lane (vpdpbusd). In asm with the
// accumulator in place: GCC 12 gives _mm512_dpbusd_epi32 a copy of the accumulator per use
// (a register move per vpdpbusd in the micro-kernel's loop, measured 15% of its time).
TGT_Q8_512 static inline __attribute__((always_inline)) __m512i dpbusd512(__m512i acc, __m512i a, __m512i b) {
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
    return acc;
}

TGT_Q8_512 static void micro_q8z(int kc, const void *restrict Apv, const void *restrict Bpv, float *C, int ldc, int mr,
                                 int nr, const gemm_micro_args *args) {
    const uint8_t *Ap = Apv, *Bp = Bpv;
    __mmask16 m[2] = {sm_lanes_mask(nr), sm_lanes_mask(nr - 16)};
    __m512 f[QZ_MR][2];
    if (args->first) {
        __m512 b0 = args->bias ? _mm512_maskz_loadu_ps(m[0], args->bias) : _mm512_setzero_ps();
        __m512 b1 = args->bias ? _mm512_maskz_loadu_ps(m[1], args->bias + 16) : _mm512_setzero_ps();
        for (int i = 0; i < QZ_MR; i++) f[i][0] = b0, f[i][1] = b1;
    } else {
        for (int i = 0; i < QZ_MR; i++)
            for (int v = 0; v < 2; v++)
                f[i][v] = i < mr ? _mm512_maskz_loadu_ps(m[v], C + (size_t)i * ldc + 16 * v) : _mm512_setzero_ps();
    }
    for (int g0 = 0; g0 < kc; g0 += args->group) {
        int len = kc - g0 < args->group ? kc - g0 : args->group, nq = (len + 3) / 4;
        const int32_t *corr = (const int32_t *)(const void *)(Ap + nq * QZ_MR * 4 + QZ_MR * 4);
        __m512i s[QZ_MR][2];
#pragma GCC unroll 8
        for (int i = 0; i < QZ_MR; i++) s[i][0] = s[i][1] = _mm512_set1_epi32(corr[i]);
        for (int q = 0; q < nq; q++) {
            __m512i b0 = _mm512_loadu_si512((const void *)(Bp + q * 128));
            __m512i b1 = _mm512_loadu_si512((const void *)(Bp + q * 128 + 64));
#pragma GCC unroll 8
            for (int i = 0; i < QZ_MR; i++) {
                int32_t xi;
                memcpy(&xi, Ap + (q * QZ_MR + i) * 4, 4);
                __m512i xb = _mm512_set1_epi32(xi);
                s[i][0] = dpbusd512(s[i][0], b0, xb);
                s[i][1] = dpbusd512(s[i][1], b1, xb);
            }
        }
        const float *sx = (const float *)(const void *)(Ap + nq * QZ_MR * 4);
        const float *sw = (const float *)(const void *)(Bp + nq * QZ_NR * 4);
        __m512 w0 = _mm512_loadu_ps(sw), w1 = _mm512_loadu_ps(sw + 16);
#pragma GCC unroll 8
        for (int i = 0; i < QZ_MR; i++) {
            __m512 si = _mm512_set1_ps(sx[i]);
            f[i][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[i][0]), _mm512_mul_ps(si, w0), f[i][0]);
            f[i][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[i][1]), _mm512_mul_ps(si, w1), f[i][1]);
        }
        Ap += nq * QZ_MR * 4 + QZ_MR * 8;
        Bp += nq * QZ_NR * 4 + QZ_NR * 4;
    }
    for (int i = 0; i < QZ_MR; i++) {
        if (i >= mr) break;
        _mm512_mask_storeu_ps(C + (size_t)i * ldc, m[0], f[i][0]);
        _mm512_mask_storeu_ps(C + (size_t)i * ldc + 16, m[1], f[i][1]);
    }
}

// The sums of 16 vectors: lane r of the result = the sum of a[r]'s 16 lanes (a tree of unpacks and
// 128-bit shuffles, 45 operations instead of 16 horizontal reductions).
TGT_Q8_512 static inline __attribute__((always_inline)) __m512i sums16(const __m512i a[16]) {
    __m512i b[8], c[4], d[2];
    for (int i = 0; i < 8; i++)   // per 128-bit lane: [a0, a1, a0, a1] partials of pair i
        b[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_epi32(a[2 * i], a[2 * i + 1]));
    for (int i = 0; i < 4; i++)   // per 128-bit lane L: the lane-L sums of rows 4i..4i+3
        c[i] = _mm512_add_epi32(_mm512_unpacklo_epi64(b[2 * i], b[2 * i + 1]), _mm512_unpackhi_epi64(b[2 * i], b[2 * i + 1]));
    for (int i = 0; i < 2; i++)   // [rows 8i..8i+3 (L0+L1), (L2+L3), rows 8i+4.. (L0+L1), (L2+L3)]
        d[i] = _mm512_add_epi32(_mm512_shuffle_i32x4(c[2 * i], c[2 * i + 1], 0x88), _mm512_shuffle_i32x4(c[2 * i], c[2 * i + 1], 0xDD));
    return _mm512_add_epi32(_mm512_shuffle_i32x4(d[0], d[1], 0x88), _mm512_shuffle_i32x4(d[0], d[1], 0xDD));
}

// One row: 16 outputs at a time, lane r for output o0 + r. Per group, each output's vpdpbusd over
// its 64-byte pieces, the 16 sums gathered into one vector, then the chain step for all 16.
TGT_Q8_512 static void row_q8z(int N, int K, float alpha, const gemm_operand *xo, const gemm_operand *Bo, float beta,
                               float *C, const float *bias) {
    (void)alpha, (void)beta;
    const int8_t *W = Bo->p;
    const int group = Bo->group, chunk = Q8_ROW_CHUNK / group * group;
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    q8_chunk ch;
    _Alignas(64) float st[Q8_ROW_CHUNK / 4][16];   // 16 rows' scales of a chunk's groups, group-major
    for (int c0 = 0; c0 < K; c0 += chunk) {
        quantize_chunk(&ch, xo->p, c0, K - c0 < chunk ? K - c0 : chunk, group, q8_group_z);
        for (int o0 = 0; o0 < N; o0 += 16) {
            int no = N - o0 < 16 ? N - o0 : 16;
            __mmask16 om = sm_lanes_mask(no);
            __m512 f = c0 > 0 ? _mm512_maskz_loadu_ps(om, C + o0) : bias ? _mm512_maskz_loadu_ps(om, bias + o0) : _mm512_setzero_ps();
            const int8_t *wo = W + (size_t)o0 * Bo->ld + c0;
            const float *so = Bo->scales + (size_t)o0 * Bo->ld_scales + ch.g_base;
            // (a gather per group, as this was, took a quarter of the time on Zen 5)
            for (int r = 0; r < 16; r++)
                for (int g = 0; g < ch.n_groups; g++) st[g][r] = r < no ? so[(size_t)r * Bo->ld_scales + g] : 0.0f;
            for (int g = 0; g < ch.n_groups; g++) {
                int len = ch.len - g * group < group ? ch.len - g * group : group;
                __m512i a[16];
                for (int r = 0; r < 16; r++) a[r] = _mm512_setzero_si512();
                for (int k = g * group; k < g * group + len; k += 64) {
                    int nb = g * group + len - k < 64 ? g * group + len - k : 64;
                    __mmask64 bm = nb >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << nb) - 1);
                    __m512i xv = _mm512_maskz_loadu_epi8(bm, ch.xq + k);   // bytes past len: x = 0, w + 128 = 128
                    if (o0 + 32 <= N)   // the next 16 rows at this k, into L2 (as the fp32 one-row form)
                        for (int r = 0; r < 16; r++) _mm_prefetch((const char *)(wo + (size_t)(16 + r) * Bo->ld + k), _MM_HINT_T1);
                    if (nb == 64) {   // whole vectors: plain loads (a masked load costs more on Zen 5)
#pragma GCC unroll 16
                        for (int r = 0; r < 16; r++)
                            if (r < no)
                                a[r] = dpbusd512(a[r], _mm512_xor_si512(_mm512_loadu_si512(wo + (size_t)r * Bo->ld + k), flip), xv);
                    } else {
#pragma GCC unroll 16
                        for (int r = 0; r < 16; r++)
                            if (r < no)
                                a[r] = dpbusd512(a[r], _mm512_xor_si512(_mm512_maskz_loadu_epi8(bm, wo + (size_t)r * Bo->ld + k), flip), xv);
                    }
                }
                __m512i isum = _mm512_add_epi32(sums16(a), _mm512_set1_epi32(ch.corr[g]));
                __m512 sw = _mm512_load_ps(st[g]);
                f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(_mm512_set1_ps(ch.sx[g]), sw), f);
            }
            _mm512_mask_storeu_ps(C + o0, om, f);
        }
    }
}

// One row over a packed B (gemm_operand.packed: pack_b_q8z over all of K, whole groups):
// micro_q8z's arithmetic with one row of A, quantized as row_q8z quantizes it, the panels read as
// they lie: each output's group sum in its own lane (no sums16 reduction, no gather of scales, the
// flip to unsigned done once at packing). QP_PANELS micro-panels at a time share each broadcast of
// x: 8 independent chains of vpdpbusd.
enum { QP_PANELS = 4 };
TGT_Q8_512 static void row_pq8z(int N, int K, float alpha, const gemm_operand *xo, const gemm_operand *Bo, float beta,
                                float *C, const float *bias) {
    (void)alpha, (void)beta;
    const uint8_t *B = Bo->p;
    const int group = Bo->group, chunk = Q8_ROW_CHUNK / group * group, nq = group / 4;
    const size_t gblock = (size_t)nq * QZ_NR * 4 + QZ_NR * 4;   // one group of one micro-panel
    const size_t ps = (size_t)(K / group) * gblock;               // one micro-panel: b_panel_q8z(K)
    const int n_panels = (N + QZ_NR - 1) / QZ_NR;
    q8_chunk ch;
    for (int c0 = 0; c0 < K; c0 += chunk) {
        quantize_chunk(&ch, xo->p, c0, K - c0 < chunk ? K - c0 : chunk, group, q8_group_z);
        for (int j0 = 0; j0 < n_panels; j0 += QP_PANELS) {
            const int np = n_panels - j0 < QP_PANELS ? n_panels - j0 : QP_PANELS;
            __m512 f[QP_PANELS][2];
            __mmask16 m[QP_PANELS][2];
            for (int p = 0; p < QP_PANELS; p++)
                for (int v = 0; v < 2; v++) {
                    int jb = (j0 + p) * QZ_NR + 16 * v;
                    m[p][v] = p < np ? sm_lanes_mask(N - jb) : 0;
                    f[p][v] = c0 > 0 ? _mm512_maskz_loadu_ps(m[p][v], C + jb)
                              : bias ? _mm512_maskz_loadu_ps(m[p][v], bias + jb) : _mm512_setzero_ps();
                }
            const uint8_t *bp = B + (size_t)j0 * ps + (size_t)ch.g_base * gblock;
            for (int g = 0; g < ch.n_groups; g++, bp += gblock) {
                __m512i sm[QP_PANELS][2];
                for (int p = 0; p < QP_PANELS; p++) sm[p][0] = sm[p][1] = _mm512_set1_epi32(ch.corr[g]);
                const int8_t *xg = ch.xq + (size_t)g * group;
                if (np == QP_PANELS) {
                    for (int q = 0; q < nq; q++) {
                        int32_t xi;
                        memcpy(&xi, xg + 4 * q, 4);
                        __m512i xb = _mm512_set1_epi32(xi);
#pragma GCC unroll 4
                        for (int p = 0; p < QP_PANELS; p++) {
                            const uint8_t *b = bp + (size_t)p * ps + (size_t)q * 128;
                            sm[p][0] = dpbusd512(sm[p][0], _mm512_loadu_si512((const void *)b), xb);
                            sm[p][1] = dpbusd512(sm[p][1], _mm512_loadu_si512((const void *)(b + 64)), xb);
                        }
                    }
                } else {
                    for (int q = 0; q < nq; q++) {
                        int32_t xi;
                        memcpy(&xi, xg + 4 * q, 4);
                        __m512i xb = _mm512_set1_epi32(xi);
                        for (int p = 0; p < np; p++) {
                            const uint8_t *b = bp + (size_t)p * ps + (size_t)q * 128;
                            sm[p][0] = dpbusd512(sm[p][0], _mm512_loadu_si512((const void *)b), xb);
                            sm[p][1] = dpbusd512(sm[p][1], _mm512_loadu_si512((const void *)(b + 64)), xb);
                        }
                    }
                }
                __m512 si = _mm512_set1_ps(ch.sx[g]);
                for (int p = 0; p < np; p++) {
                    const float *sw = (const float *)(const void *)(bp + (size_t)p * ps + (size_t)nq * QZ_NR * 4);
                    f[p][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sm[p][0]), _mm512_mul_ps(si, _mm512_loadu_ps(sw)), f[p][0]);
                    f[p][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sm[p][1]), _mm512_mul_ps(si, _mm512_loadu_ps(sw + 16)),
                                              f[p][1]);
                }
            }
            for (int p = 0; p < np; p++)
                for (int v = 0; v < 2; v++) _mm512_mask_storeu_ps(C + (size_t)(j0 + p) * QZ_NR + 16 * v, m[p][v], f[p][v]);
        }
    }
}

const gemm_ukernel GEMM_Q8_AVX512_VNNI = {
    .name = "q8 avx512-vnni 6x32", .a_type = KERNELS_F32, .b_type = KERNELS_Q8, .isa = KERNELS_ISA_AVX512_VNNI,
    .mr = QZ_MR, .nr = QZ_NR, .mc = 120, .kc = 512, .nc = 512, .grouped = 1,
    .pack_a = pack_a_q8z, .pack_b = pack_b_q8z, .a_panel = a_panel_q8z, .b_panel = b_panel_q8z, .micro = micro_q8z,
    .row = row_q8z, .row_packed = row_pq8z,
};
#endif   // KERNELS_X86

// ---------------------------------------------------------------------------------------------

static const gemm_ukernel *q8_row(void) {
    const gemm_ukernel *uk = gemm_ukernel_pick(KERNELS_OP_GEMM_Q8, KERNELS_F32, KERNELS_Q8);
    assert(uk && "matmul_forward_q8: no q8 micro-kernel row for the chosen path");
    return uk;
}

// The forward through gemm_run_parallel (parts 0), or share `part` of `parts` (gemm_run_part);
// packed: wq holds the weight as matmul_q8_pack_weight packs it (wscale unused).
static void matmul_q8(float *out, float *out_gelu, const float *inp, const void *wq, const float *wscale,
                      const float *bias, int N, int C, int OC, int group, int part, int parts, int packed) {
    assert(N >= 0 && C > 0 && OC > 0 && "matmul_forward_q8: bad dimensions");
    check_group(group);
    const gemm_ukernel *uk = q8_row();
    assert((!packed || uk->row_packed) && "matmul_forward_q8_packed: packed for another q8 path");
    gemm_operand a = {.p = inp, .ld = C, .trans = 0, .group = group};
    gemm_operand b = {.p = wq, .ld = C, .trans = 1, .scales = packed ? NULL : wscale,
                      .ld_scales = q8_groups(C, group), .group = group, .packed = packed};
    gemm_epilogue ep = {.bias = bias, .gelu_out = out_gelu, .ldg = OC};
    if (parts == 0)
        gemm_run_parallel(uk, N, OC, C, 1.0f, &a, &b, 0.0f, out, OC, &ep);
    else
        gemm_run_part(uk, part, parts, N, OC, C, 1.0f, &a, &b, 0.0f, out, OC, &ep);
}

void matmul_forward_q8(float *out, const float *inp, const int8_t *wq, const float *wscale, const float *bias, int N,
                       int C, int OC, int group) {
    // inp is (N,C), wq is (OC,C) with wscale (OC, ceil(C/group)), bias is (OC) or NULL; out is (N,OC)
    matmul_q8(out, NULL, inp, wq, wscale, bias, N, C, OC, group, 0, 0, 0);
}

void matmul_forward_q8_gelu(float *out, float *out_gelu, const float *inp, const int8_t *wq, const float *wscale,
                            const float *bias, int N, int C, int OC, int group) {
    // as matmul_forward_q8; out_gelu (N,OC) = gelu(out), tile by tile while the tile is in cache
    matmul_q8(out, out_gelu, inp, wq, wscale, bias, N, C, OC, group, 0, 0, 0);
}

void matmul_forward_q8_part(float *out, float *out_gelu, const float *inp, const int8_t *wq, const float *wscale,
                            const float *bias, int N, int C, int OC, int group, int part, int parts) {
    assert(parts >= 1 && "matmul_forward_q8_part: no parts");
    matmul_q8(out, out_gelu, inp, wq, wscale, bias, N, C, OC, group, part, parts, 0);
}

size_t matmul_q8_packed_bytes(int OC, int C, int group) {
    const gemm_ukernel *uk = q8_row();
    return uk->row_packed && C % group == 0 ? gemm_packed_bytes(uk, OC, C, group) : 0;
}

void matmul_q8_pack_weight(void *dst, const int8_t *wq, const float *wscale, int OC, int C, int group) {
    check_group(group);
    const gemm_ukernel *uk = q8_row();
    assert(uk->row_packed && C % group == 0 && "matmul_q8_pack_weight: no packed form on this path");
    gemm_operand b = {.p = wq, .ld = C, .trans = 1, .scales = wscale, .ld_scales = q8_groups(C, group), .group = group};
    gemm_pack_b_whole(uk, dst, &b, OC, C);
}

void matmul_forward_q8_packed(float *out, float *out_gelu, const float *inp, const void *wp, const float *bias, int N,
                              int C, int OC, int group) {
    matmul_q8(out, out_gelu, inp, wp, NULL, bias, N, C, OC, group, 0, 0, 1);
}

void matmul_forward_q8_packed_part(float *out, float *out_gelu, const float *inp, const void *wp, const float *bias,
                                   int N, int C, int OC, int group, int part, int parts) {
    assert(parts >= 1 && "matmul_forward_q8_packed_part: no parts");
    matmul_q8(out, out_gelu, inp, wp, NULL, bias, N, C, OC, group, part, parts, 1);
}
