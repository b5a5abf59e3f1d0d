// kernels_internal.h — what the kernels/ files share with each other and with the tests of
// kernels/ only: the packed GEMM engine with a fused epilogue, and row helpers. Not part of
// the model's API (trainer/ includes kernels.h only).
#pragma once
#include <stddef.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels.h"

// ---- dispatch (cpu.c) -----------------------------------------------------------------------
// Instruction-set paths. cpu.c says what each needs and which ops have which (in order of
// preference); kernels_pick(op) is the best one the allowed features permit. A kernel switches on
// it and never tests CPU features itself.
typedef enum {
    KERNELS_ISA_C = 0,         // plain C (compiled for the build's target, which GCC may vectorise)
    KERNELS_ISA_AVX2,          // AVX2 + FMA
    KERNELS_ISA_AVX_VNNI,      // AVX2 + FMA + AVX-VNNI (vpdpbusd on ymm)
    KERNELS_ISA_AVX512,        // AVX-512F (+ AVX2, FMA)
    KERNELS_ISA_AVX512_VNNI,   // AVX-512 F, BW, VL + VNNI (vpdpbusd on zmm)
    KERNELS_ISA_AVX512_BF16,   // AVX-512 F, BW, VL + BF16 (vdpbf16ps, vcvtne2ps2bf16 on zmm)
    KERNELS_ISA_COUNT
} kernels_isa;
kernels_isa kernels_pick(kernels_op op);
const char *kernels_isa_name(kernels_isa isa);

// ---- the packed, register-tiled GEMM engine (gemm.c) ---------------------------------------
// One driver (GotoBLAS/BLIS loops) over a table of micro-kernel rows. A row says which operand
// dtypes it reads, its register tile and cache blocks, how it packs op(A) and op(B) into panels
// (bytes, laid out as its micro-kernel wants them) and the micro-kernel itself; a new dtype or
// instruction set is a new row, not a new GEMM.
typedef enum { KERNELS_F32 = 0, KERNELS_Q8, KERNELS_BF16, KERNELS_DTYPE_COUNT } kernels_dtype;

// A matrix operand as stored: op(X) = X or X^T, elements of its dtype, row stride ld in elements.
// Q8 operands carry one float scale per group of `group` consecutive elements along each stored
// row (scales (rows, ceil(cols/group)), row stride ld_scales).
// packed (B, for rows gemm_packable accepts): op(B) (K,N) stored as the row's pack_b packs all of
// it (p0 0, kc K, j0 0, nc N: ceil(N/nr) micro-panels of b_panel(K) bytes each, laid out along K
// so that the K slice [pc, pc+kc) of a micro-panel starts b_panel(pc) bytes in: fp32 p-major, q8
// group by group); ld = K (q8: K a multiple of the group). Packed once by the caller
// (gemm_pack_b_whole: inference weights), read in place of each call's packing.
typedef struct {
    const void *p;
    int ld, trans;
    const float *scales;
    int ld_scales, group;
    int packed;
} gemm_operand;

// What a micro-kernel call adds to its tile besides the product (per K block):
//   f32 rows: C = alpha acc + beta C (beta == 0 never reads C), + bias (nr) if non-NULL;
//   grouped rows (q8): one chain per element over the groups, acc = fma(group sum, scales, acc),
//            starting from bias (or 0) at the first K block (first = 1) and from C after it.
typedef struct {
    float alpha, beta;
    const float *bias;
    int group, first;
} gemm_micro_args;

// C (mr,nr) op= the product of one packed A micro-panel (MR rows) and one packed B micro-panel
// (NR columns) over kc, into the top-left mr x nr corner of C's register tile.
typedef void (*gemm_micro_fn)(int kc, const void *restrict Ap, const void *restrict Bp, float *C, int ldc, int mr,
                              int nr, const gemm_micro_args *args);
// op(A)(i,p) for rows [i0, i0+mc), columns [p0, p0+kc) into mr-row micro-panels (rows past mc
// zero-filled); op(B)(p,j) for rows [p0, p0+kc), columns [j0, j0+nc) into nr-column micro-panels.
typedef void (*gemm_pack_a_fn)(void *restrict dst, const gemm_operand *A, int i0, int mc, int p0, int kc);
typedef void (*gemm_pack_b_fn)(void *restrict dst, const gemm_operand *B, int p0, int kc, int j0, int nc);
// Bytes of one packed micro-panel (MR rows of A, or NR columns of B) over kc (group: q8's).
typedef size_t (*gemm_panel_fn)(int kc, int group);
// The one-row form, C (1,N) = x (1,K) B^T with B stored (N,K) (a linear layer's weight, as in a
// decode step): each element bit for bit what the row's GEMM gives, without packing anything.
// Adds the epilogue's bias where the GEMM does; the driver applies its GELU.
typedef void (*gemm_row_fn)(int N, int K, float alpha, const gemm_operand *x, const gemm_operand *B, float beta,
                            float *C, const float *bias);
// The same with B packed (gemm_operand.packed): each element bit for bit the GEMM's.

typedef struct {
    const char *name;                  // "f32 avx512 14x32"
    kernels_dtype a_type, b_type;      // the operands' dtypes as stored
    kernels_isa isa;                   // the path it belongs to
    int mr, nr, mc, kc, nc;            // register tile; row, contraction and column blocks
    int grouped;                       // K blocks hold whole groups (q8): kc is rounded to them
    gemm_pack_a_fn pack_a;
    gemm_pack_b_fn pack_b;
    gemm_panel_fn a_panel, b_panel;
    gemm_micro_fn micro;
    gemm_row_fn row;                   // NULL: M = 1 goes through the packed path too
    gemm_row_fn row_packed;            // NULL: M = 1 with B packed goes through the packed path
    int bf16;                          // 1: products of operands rounded to bf16 (KERNELS_OP_GEMM_BF16's rows)
    int nc_short;                      // 0, or a wider column block for K <= kc/2 (op(B)'s block in the same bytes)
} gemm_ukernel;

// The rows (gemm_f32.c; gemm_q8.c)
extern const gemm_ukernel GEMM_F32_C, GEMM_F32_AVX2, GEMM_F32_AVX512;
extern const gemm_ukernel GEMM_Q8_C, GEMM_Q8_AVX2, GEMM_Q8_AVX_VNNI, GEMM_Q8_AVX512_VNNI;
// bf16 rows (gemm_bf16.c): operands float32 (rounded as packed) or bf16, fp32 sums; one row per
// (A dtype, B dtype) the model uses and per path
extern const gemm_ukernel GEMM_BF16_C_FF, GEMM_BF16_C_FB, GEMM_BF16_AVX512_FF, GEMM_BF16_AVX512_FB;

// Packing buffers of the driver (on the caller's stack, ~0.9 MiB): every row's blocks fit in them.
#define GEMM_A_BYTES (128 * 256 * 4)
#define GEMM_B_BYTES (256 * 512 * 4)
// and op(A)'s whole K slice when it is small enough to pack once for all of B's column blocks
// (256 rows of the fp32 rows' 14-row panels: 19 x 14 x 256 floats)
#define GEMM_AR_BYTES (19 * 14 * 256 * 4)

// The row for these operand dtypes on the path kernels_pick chooses for op (NULL if none).
const gemm_ukernel *gemm_ukernel_pick(kernels_op op, kernels_dtype a_type, kernels_dtype b_type);

// dbias (OC) (+)= the column sums of dout (N,OC), each in double over N in order (matmul.c; the
// fp32 and bf16 linear layers' backward share it)
void matmul_dbias(float *dbias, const float *dout, int N, int OC, int accumulate);

// Optional work done on each output tile while it is still in L1 (saves a pass over memory):
//   bias     (N): added once to every row of C (with the first K block);
//   gelu_out (M,N), row stride ldg: after the last K block, gelu(C) is written there too
//            (C keeps the pre-activation for backward).
typedef struct {
    const float *bias;
    float *gelu_out;
    int ldg;
} gemm_epilogue;

// C (M,N) = op(A) op(B) through micro-kernel row uk (alpha and beta as gemm_micro_args says), then
// the epilogue (ep may be NULL). Single-threaded. Each element's value depends only on the row,
// K and its own operands, never on M, N or where it sits in the tiling.
void gemm_run(const gemm_ukernel *uk, int M, int N, int K, float alpha, const gemm_operand *A, const gemm_operand *B,
              float beta, float *C, int ldc, const gemm_epilogue *ep);
// One K slice and one column block of gemm_run with op(B) packed by the caller: C (M,N) = alpha
// op(A) (M,K) B (K,N) + beta C, where Bp holds B as uk->pack_b(Bp, B, 0, K, 0, N) packs it,
// K <= uk->kc, N <= uk->nc, fp32 rows only. For a caller that multiplies many A by one B: the same
// bits as gemm_run, with B packed once.
void gemm_run_packed_b(const gemm_ukernel *uk, int M, int N, int K, float alpha, const gemm_operand *A, const void *Bp,
                       float beta, float *C, int ldc);
// The same over the threads of an OpenMP team it opens (tiles of the output, split so that each
// thread packs only its share of the larger operand); the result does not depend on the split.
void gemm_run_parallel(const gemm_ukernel *uk, int M, int N, int K, float alpha, const gemm_operand *A,
                       const gemm_operand *B, float beta, float *C, int ldc, const gemm_epilogue *ep);
// Packs all of op(B) (K,N) for operands with .packed set: gemm_packed_bytes(uk, N, K, group)
// bytes at dst (64-byte aligned), OpenMP over the micro-panels.
size_t gemm_packed_bytes(const gemm_ukernel *uk, int N, int K, int group);
// 1 when rows of uk can read a packed B: the fp32 rows, and rows with a row_packed form.
int gemm_packable(const gemm_ukernel *uk);
void gemm_pack_b_whole(const gemm_ukernel *uk, void *dst, const gemm_operand *B, int N, int K);
// Tile `part` of the grid gemm_run_parallel gives a team of `parts` threads, computed on the
// calling thread alone (no OpenMP region: for a caller already inside one, e.g. the decode step,
// whose threads each call it once with their own part; every part must be called before C is
// read). The union of the parts is gemm_run_parallel's result, bit for bit.
void gemm_run_part(const gemm_ukernel *uk, int part, int parts, int M, int N, int K, float alpha,
                   const gemm_operand *A, const gemm_operand *B, float beta, float *C, int ldc,
                   const gemm_epilogue *ep);

// C (M,N) = alpha op(A) op(B) + beta C, then the epilogue (ep may be NULL). Single-threaded;
// same contract and the same per-element summation order as gemm().
void gemm_ex(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
             int ldb, float beta, float *C, int ldc, const gemm_epilogue *ep);

// The same product split into tiles over the threads of an OpenMP parallel region that the
// caller has NOT yet opened (this opens one). The split follows the operand sizes (columns when
// the B operand is the larger, so each thread packs only its share of it); every element is
// summed in the same order whatever the split, so the result does not depend on the thread count.
void gemm_parallel(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                   const float *B, int ldb, float beta, float *C, int ldc, const gemm_epilogue *ep);

// dlogits rows [n0, n1), columns [v0, v1) (v1 <= Vp; columns from V on are 0) recomputed from
// softmax_xent_stats' row_max and row_inv: d (n1-n0, row stride ldd) gets exactly the values
// softmax_xent writes to dlogits there (the same exp on the same path). logits row stride ldl.
void softmax_xent_grad_block(float *d, int ldd, const float *logits, int ldl, const float *row_max,
                             const float *row_inv, const int *targets, int n0, int n1, int v0, int v1, int V,
                             float dloss);

// gelu(in) -> out over a (rows, cols) tile with row strides ldo and ldi; the same arithmetic as
// gelu_forward, element for element (elementwise.c).
void gelu_tile(float *out, int ldo, const float *in, int ldi, int rows, int cols);

// ---- sm_expf's body, inlinable (vmath.c) ----------------------------------------------------
// Loops that exponentiate whole rows (softmax, attention) inline it: the vectoriser then
// overlaps independent iterations instead of calling the SIMD clone per vector. Bit-identical
// to sm_expf.
// Cephes expf: x = n ln2 + r with |r| <= ln2/2 (ln2 split so n*LN2_HI is exact), a degree-7
// polynomial for e^r, then the scale 2^n applied as 2^(n/2) 2^(n - n/2) so that both factors
// stay normal over the whole clamped range (gradual underflow and overflow to inf come out
// of the final products). Relative error <= ~2 ulp.
static inline float sm_pow2i(int32_t n) {   // 2^n for integer n in [-126, 127], from the exponent bits
    int32_t bits = (n + 127) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline float sm_expf_inline(float x) {
    const float LOG2E = 1.44269504088896341f, LN2_HI = 0.693359375f, LN2_LO = -2.12194440e-4f;
    const float ROUND = 12582912.0f;   // 1.5 * 2^23: adding and subtracting it rounds to an integer
    float xc = x > -104.0f ? x : -104.0f;   // NaN compares false: clamped here (no UB in the
    xc = xc < 88.8f ? xc : 88.8f;            // conversion to int below), restored at the end
    float kf = (xc * LOG2E + ROUND) - ROUND;
    float r = xc - kf * LN2_HI;
    r = r - kf * LN2_LO;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t n = (int32_t)kf, n1 = n / 2;
    float y = p * sm_pow2i(n1) * sm_pow2i(n - n1);
    return x != x ? x : y;
}

// ---- AVX-512 building blocks (x86 only) ------------------------------------------------------
// Functions compiled for AVX-512 whatever the build flags; callers run them only when
// kernels_pick() chose an AVX-512 path (the plain-C loops are the other paths).
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define KERNELS_X86 1
#define KERNELS_TGT_512 __attribute__((target("avx512f,avx2,fma")))
#define KERNELS_INLINE_512 static inline __attribute__((always_inline, target("avx512f,avx2,fma")))

// e^x in 16 lanes: sm_expf's range reduction (x = n ln2 + r, |r| <= ln2/2), then
// e^r = 1 + r q(r) with q of degree 5 (a Chebyshev fit of (e^r - 1)/r on [-0.35, 0.35], by
// mpmath.chebyfit) in Horner form with FMAs, and 2^n applied by vscalefps (one rounding; gradual
// underflow, and overflow to inf above ~88.72, come out of it). Same clamping and NaN behaviour
// as sm_expf; within ~1 ulp (0.94 measured over [-87, 88]), but not bit-identical to sm_expf.
// sm_exp512_clamped takes x already in [-104, 88.8] or NaN; sm_exp512_nonpos any x <= 0 or NaN
// (a softmax's x - max, GELU's -2|u|): one clamp fewer.
KERNELS_INLINE_512 __m512 sm_exp512_clamped(__m512 xc) {
    const __m512 round = _mm512_set1_ps(12582912.0f);   // 1.5 * 2^23, as in sm_expf_inline
    __m512 kf = _mm512_sub_ps(_mm512_fmadd_ps(xc, _mm512_set1_ps(1.44269504088896341f), round), round);
    __m512 r = _mm512_fnmadd_ps(kf, _mm512_set1_ps(0.693359375f), xc);
    r = _mm512_fnmadd_ps(kf, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 q = _mm512_set1_ps(1.393453165508802e-3f);
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(8.369861529408561e-3f));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(4.166645690406264e-2f));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(1.666649877409487e-1f));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(0.5f));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(1.0f));
    __m512 y = _mm512_fmadd_ps(q, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(y, kf);
}
// vmaxps/vminps return their second operand when either is NaN: NaN passes the clamps
KERNELS_INLINE_512 __m512 sm_exp512_nonpos(__m512 x) {
    return sm_exp512_clamped(_mm512_max_ps(_mm512_set1_ps(-104.0f), x));
}
// The first n lanes of a vector (n clamped to [0, 16]): masks for rows' tails.
KERNELS_INLINE_512 __mmask16 sm_lanes_mask(long n) {
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}
KERNELS_INLINE_512 __m512 sm_exp512(__m512 x) {
    return sm_exp512_clamped(_mm512_min_ps(_mm512_set1_ps(88.8f), _mm512_max_ps(_mm512_set1_ps(-104.0f), x)));
}

// 16 x 16 transposes (gemm.c packs its operands with them, attention.c its blocks).
// In-place transpose of the 16 x 16 block held in r[0..15] (row i, column c -> row c, column i).
KERNELS_INLINE_512 void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {   // u[4i+j], 128-bit lane L: column 4L+j of rows 4i..4i+3
        r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int j = 0; j < 4; j++) {
        __m512 v0 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88), v1 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xDD);
        __m512 v2 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88), v3 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xDD);
        t[j] = _mm512_shuffle_f32x4(v0, v2, 0x88);
        t[8 + j] = _mm512_shuffle_f32x4(v0, v2, 0xDD);
        t[4 + j] = _mm512_shuffle_f32x4(v1, v3, 0x88);
        t[12 + j] = _mm512_shuffle_f32x4(v1, v3, 0xDD);
    }
    for (int i = 0; i < 16; i++) r[i] = t[i];
}

// The row-count forms of a 14-row (Z_MR) micro-kernel and its dispatcher `micro_z` (a gemm_micro_fn):
// micro_z_rows(kc, Ap, Bp, C, ldc, nr, args, R), an always-inline body taking R rows, compiled once per
// R = 1..14, so that a block's last micro-panel of mr < 14 rows computes mr rows, not 14. Used by the fp32
// and the bf16 AVX-512 rows (gemm_f32.c, gemm_bf16.c), each with its target attribute and panel types.
#define GEMM_MICRO_Z_FORM_(TGT, A_T, B_T, R)                                                                      \
    TGT static void micro_z##R(int kc, const A_T *restrict Ap, const B_T *restrict Bp, float *C, int ldc, int nr,  \
                               const gemm_micro_args *args) {                                                      \
        micro_z_rows(kc, Ap, Bp, C, ldc, nr, args, R);                                                            \
    }
#define GEMM_MICRO_Z_FORMS(TGT, A_T, B_T)                                                                         \
    GEMM_MICRO_Z_FORM_(TGT, A_T, B_T, 1) GEMM_MICRO_Z_FORM_(TGT, A_T, B_T, 2) GEMM_MICRO_Z_FORM_(TGT, A_T, B_T, 3)  \
    GEMM_MICRO_Z_FORM_(TGT, A_T, B_T, 4) GEMM_MICRO_Z_FORM_(TGT, A_T, B_T, 5) GEMM_MICRO_Z_FORM_(TGT, A_T, B_T, 6)  \
    GEMM_MICRO_Z_FORM_(TGT, A_T, B_T, 7) GEMM_MICRO_Z_FORM_(TGT, A_T, B_T, 8) GEMM_MICRO_Z_FORM_(TGT, A_T, B_T, 9)  \
    GEMM_MICRO_Z_FORM_(TGT, A_T, B_T, 10) GEMM_MICRO_Z_FORM_(TGT, A_T, B_T, 11)                                   \
    GEMM_MICRO_Z_FORM_(TGT, A_T, B_T, 12) GEMM_MICRO_Z_FORM_(TGT, A_T, B_T, 13)                                   \
    GEMM_MICRO_Z_FORM_(TGT, A_T, B_T, 14)                                                                         \
    _Static_assert(Z_MR == 14, "one micro_z form per row count");                                                 \
    typedef void (*micro_z_fn)(int, const A_T *restrict, const B_T *restrict, float *, int, int,                  \
                               const gemm_micro_args *);                                                          \
    static const micro_z_fn MICRO_Z_FORMS[Z_MR + 1] = {                                                           \
        NULL,      micro_z1,  micro_z2,  micro_z3,  micro_z4,  micro_z5,  micro_z6, micro_z7,                     \
        micro_z8,  micro_z9,  micro_z10, micro_z11, micro_z12, micro_z13, micro_z14,                              \
    };                                                                                                            \
    static void micro_z(int kc, const void *restrict Apv, const void *restrict Bpv, float *C, int ldc, int mr,    \
                        int nr, const gemm_micro_args *args) {                                                    \
        MICRO_Z_FORMS[mr](kc, Apv, Bpv, C, ldc, nr, args);                                                        \
    }

// rows [0, nrows) of src (row stride ld), columns [0, ncols) (<= 16 each), transposed into
// dst: dst[c*dst_stride + i] = src[i*ld + c] for c < ncols and i < width (lanes i >= nrows are 0).
KERNELS_INLINE_512 void transpose_block(float *dst, int dst_stride, int width, const float *src, int ld, int nrows,
                                        int ncols) {
    __m512 r[16];
    __mmask16 cm = sm_lanes_mask(ncols), wm = sm_lanes_mask(width);
    for (int i = 0; i < 16; i++) r[i] = i < nrows ? _mm512_maskz_loadu_ps(cm, src + (size_t)i * ld) : _mm512_setzero_ps();
    transpose16(r);
    for (int c = 0; c < ncols; c++) _mm512_mask_storeu_ps(dst + (size_t)c * dst_stride, wm, r[c]);
}

// ---- flash attention's register tiles (attention.c, attention_bf16.c) --------------------------
// Blocks of ATT_B queries against blocks of ATT_B keys; the AVX-512 paths serve 64-wide heads (AH)
// with tiles of AT_R rows by AT_NV 16-lane vectors (ATT_B: below, every path's block).
#define AH 64             // the head size of this path
#define AT_R 4            // rows of a register tile
#define AT_NV (AH / 16)   // 16-float vectors across a 64-wide row

KERNELS_INLINE_512 void att_zero(__m512 acc[AT_R][AT_NV]) {
#pragma GCC unroll 4
    for (int r = 0; r < AT_R; r++)
#pragma GCC unroll 4
        for (int w = 0; w < AT_NV; w++) acc[r][w] = _mm512_setzero_ps();
}

// acc = rows [0, nr) of C (row stride ldc, AH floats each), or 0 when first; rows past nr are 0
KERNELS_INLINE_512 void att_load_rows(__m512 acc[AT_R][AT_NV], const float *C, ptrdiff_t ldc, int nr, int first) {
    att_zero(acc);
    if (first) return;
#pragma GCC unroll 4
    for (int r = 0; r < AT_R; r++) {
        if (r >= nr) break;
#pragma GCC unroll 4
        for (int w = 0; w < AT_NV; w++) acc[r][w] = _mm512_loadu_ps(C + r * ldc + 16 * w);
    }
}

KERNELS_INLINE_512 void att_store_rows(float *C, ptrdiff_t ldc, int nr, __m512 acc[AT_R][AT_NV]) {
#pragma GCC unroll 4
    for (int r = 0; r < AT_R; r++) {
        if (r >= nr) break;
#pragma GCC unroll 4
        for (int w = 0; w < AT_NV; w++) _mm512_storeu_ps(C + r * ldc + 16 * w, acc[r][w]);
    }
}

// Lanes i of a vector whose queries sit at positions qpos + i that see the key at position kpos.
KERNELS_INLINE_512 __mmask16 att_visible(long kpos, long qpos) {
    return (__mmask16)~sm_lanes_mask(kpos - qpos);
}
#endif

// Flash attention's blocks: ATT_B queries against ATT_B keys (every path; attention.c, attention_bf16.c)
#define ATT_B 64

// Row reductions over KERNELS_LANES partial results combined in a fixed order: they vectorise,
// and their results depend only on the row (shared by attention.c and attention_ref.c).
#define KERNELS_LANES 16

static inline float row_max(const float *x, int n) {
    float m[KERNELS_LANES];
    for (int l = 0; l < KERNELS_LANES; l++) m[l] = -INFINITY;
    int j = 0;
    for (; j + KERNELS_LANES <= n; j += KERNELS_LANES)
#pragma omp simd   // this loop, not the one around it (which GCC gives up on)
        for (int l = 0; l < KERNELS_LANES; l++) m[l] = x[j + l] > m[l] ? x[j + l] : m[l];
    for (int l = 0; j < n; j++, l++) m[l] = x[j] > m[l] ? x[j] : m[l];
    for (int w = KERNELS_LANES / 2; w > 0; w /= 2)
        for (int l = 0; l < w; l++) m[l] = m[l + w] > m[l] ? m[l + w] : m[l];
    return m[0];
}

// x[j] = exp(x[j] - shift) for j < n, 0 for n <= j < n_all; returns the sum of the first n
static inline float exp_shift_sum(float *x, int n, int n_all, float shift) {
    float s[KERNELS_LANES] = {0};
    int j = 0;
    for (; j + KERNELS_LANES <= n; j += KERNELS_LANES)
        for (int l = 0; l < KERNELS_LANES; l++) {
            float e = sm_expf_inline(x[j + l] - shift);
            x[j + l] = e;
            s[l] += e;
        }
    for (int l = 0; j < n; j++, l++) {
        float e = sm_expf(x[j] - shift);
        x[j] = e;
        s[l] += e;
    }
    for (; j < n_all; j++) x[j] = 0.0f;
    for (int w = KERNELS_LANES / 2; w > 0; w /= 2)
        for (int l = 0; l < w; l++) s[l] += s[l + w];
    return s[0];
}

static inline float dot(const float *a, const float *b, int n) {
    float s[KERNELS_LANES] = {0};
    int j = 0;
    for (; j + KERNELS_LANES <= n; j += KERNELS_LANES)
        for (int l = 0; l < KERNELS_LANES; l++) s[l] += a[j + l] * b[j + l];
    for (int l = 0; j < n; j++, l++) s[l] += a[j] * b[j];
    for (int w = KERNELS_LANES / 2; w > 0; w /= 2)
        for (int l = 0; l < w; l++) s[l] += s[l + w];
    return s[0];
}
