// attention_bf16.c — defines the bf16 form of flash attention (attention_forward_bf16,
// attention_backward_bf16, attention_head_forward_bf16): attention.c's AVX-512 kernels for 64-wide
// heads with every product's operands rounded to bf16 (q, k, v, the probabilities, dO and dS) and
// taken by vdpbf16ps, two per lane per instruction, into float32 sums; the softmax, its running
// max and sum, lse and D = rowsum(dO O) stay float32. Other head sizes, and CPUs without
// AVX512-BF16, run the float32 kernels (attention.c).
#include "kernels_internal.h"

#include <assert.h>
#include <math.h>

// The same blocks, tiles, masking and order as attention.c's AVX-512 path (read that first); what
// changes is the layout of each product's operands. vdpbf16ps sums pairs along the contraction, so
// both operands hold 32-bit words of two bf16 values adjacent in it:
//   along hs (S = Q K^T, dP = dO V^T): a row of q, k, v or dO converted in place: (x[2c], x[2c+1]);
//     the B side transposed as attention.c transposes it, words instead of floats;
//   along keys (O += P V, dQ += dS K) or queries (dV += P^T dO, dK += dS^T Q): two rows (keys or
//     queries 2p and 2p+1) interleaved into one row of words. A pair that reaches past the block's
//     last row gets 0 for it; probabilities (and dS) are stored 0 wherever masked or skipped, so a
//     range of keys rounded out to whole pairs adds exact zeros and nothing else.
// Each element of an output sums its pairs in a fixed order (per tile, as attention.c), so results
// are bit-identical for any thread count, and a decode step (nq = 1) reproduces a row of the full
// forward.

#ifdef KERNELS_X86
#define TGT_ABF __attribute__((target("avx512bf16,avx512f,avx512bw,avx512vl,avx2,fma")))
#define INLINE_ABF static inline __attribute__((always_inline, target("avx512bf16,avx512f,avx512bw,avx512vl,avx2,fma")))
#define AP (AH / 2)   // pairs across a 64-wide row

// acc[r][w] += sum_{p < np} A(r, p) . B(p, w) over bf16 pairs: A(r, p) = a[r*ars + p*aps] (a word;
// rows r >= nr repeat row nr - 1), B(p, w) = the 16 words at b + p*ldb + 16w.
INLINE_ABF void tile2(__m512 acc[AT_R][AT_NV], int W0, int NV, int nr, int np, const uint32_t *a, ptrdiff_t ars,
                      ptrdiff_t aps, const uint32_t *b, ptrdiff_t ldb) {
    const uint32_t *ar[AT_R];
    for (int r = 0; r < AT_R; r++) ar[r] = a + (r < nr ? r : nr - 1) * ars;
    for (int p = 0; p < np; p++) {
        __m512bh bv[AT_NV];
#pragma GCC unroll 4
        for (int w = W0; w < NV; w++) bv[w] = (__m512bh)_mm512_loadu_si512(b + p * ldb + 16 * w);
#pragma GCC unroll 4
        for (int r = 0; r < AT_R; r++) {
            __m512bh x = (__m512bh)_mm512_set1_epi32((int)ar[r][p * aps]);
#pragma GCC unroll 4
            for (int w = W0; w < NV; w++) acc[r][w] = _mm512_dpbf16_ps(acc[r][w], x, bv[w]);
        }
    }
}
INLINE_ABF void tile2_from(__m512 acc[AT_R][AT_NV], int w0, int NV, int nr, int np, const uint32_t *a, ptrdiff_t ars,
                           ptrdiff_t aps, const uint32_t *b, ptrdiff_t ldb) {
    switch (w0) {
    case 0: tile2(acc, 0, NV, nr, np, a, ars, aps, b, ldb); break;
    case 1: tile2(acc, 1, NV, nr, np, a, ars, aps, b, ldb); break;
    case 2: tile2(acc, 2, NV, nr, np, a, ars, aps, b, ldb); break;
    default: tile2(acc, 3, NV, nr, np, a, ars, aps, b, ldb); break;
    }
}
INLINE_ABF void tile2_upto(__m512 acc[AT_R][AT_NV], int nv, int nr, int np, const uint32_t *a, ptrdiff_t ars,
                           ptrdiff_t aps, const uint32_t *b, ptrdiff_t ldb) {
    switch (nv) {
    case 1: tile2(acc, 0, 1, nr, np, a, ars, aps, b, ldb); break;
    case 2: tile2(acc, 0, 2, nr, np, a, ars, aps, b, ldb); break;
    case 3: tile2(acc, 0, 3, nr, np, a, ars, aps, b, ldb); break;
    default: tile2(acc, 0, 4, nr, np, a, ars, aps, b, ldb); break;
    }
}

// dst (n, AP) words, row stride AP = rows [0, n) of src (AH floats each, row stride ld) as pairs
// along the row; rows [n, npad) are 0
INLINE_ABF void rows_to_pairs(uint32_t *dst, const float *src, ptrdiff_t ld, int n, int npad) {
    for (int i = 0; i < npad; i++)
        for (int h = 0; h < 2; h++) {
            __m512i v = _mm512_setzero_si512();
            if (i < n) {
                const float *x = src + i * ld + 32 * h;
                v = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + 16), _mm512_loadu_ps(x));
            }
            _mm512_storeu_si512(dst + i * AP + 16 * h, v);
        }
}

// dst (AP, ldd) words: dst[c * ldd + i] = src[i * AP + c] for rows i < n of src (n <= 64: lanes past
// n are 0, up to a multiple of 16)
INLINE_ABF void pairs_transpose(uint32_t *dst, ptrdiff_t ldd, const uint32_t *src, int n) {
    for (int i0 = 0; i0 < n; i0 += 16)
        for (int c0 = 0; c0 < AP; c0 += 16) {
            __m512 r[16];
            for (int i = 0; i < 16; i++)
                r[i] = i0 + i < n ? _mm512_castsi512_ps(_mm512_loadu_si512(src + (i0 + i) * AP + c0)) : _mm512_setzero_ps();
            transpose16(r);
            for (int c = 0; c < 16; c++) _mm512_storeu_ps((float *)(dst + (c0 + c) * ldd + i0), r[c]);
        }
}

// dst (np, ldd) words: pair p of columns c < AH from rows 2p and 2p+1 of src (AH floats each, row
// stride ld); rows >= n read as 0
INLINE_ABF void rows_interleave(uint32_t *dst, ptrdiff_t ldd, const float *src, ptrdiff_t ld, int n, int np) {
    const __m512i idx = _mm512_setr_epi32(0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15);
    for (int p = 0; p < np; p++) {
        const float *r0 = 2 * p < n ? src + (2 * p) * ld : NULL, *r1 = 2 * p + 1 < n ? src + (2 * p + 1) * ld : NULL;
        for (int w = 0; w < AT_NV; w++) {
            __m512 a = r0 ? _mm512_loadu_ps(r0 + 16 * w) : _mm512_setzero_ps();
            __m512 b = r1 ? _mm512_loadu_ps(r1 + 16 * w) : _mm512_setzero_ps();
            // per 128-bit lane: lo = a0 b0 a1 b1, hi = a2 b2 a3 b3; converted: words of lo, then of hi
            __m512i x = (__m512i)_mm512_cvtne2ps_pbh(_mm512_unpackhi_ps(a, b), _mm512_unpacklo_ps(a, b));
            _mm512_storeu_si512(dst + p * ldd + 16 * w, _mm512_permutexvar_epi32(idx, x));
        }
    }
}

// One block of nqb <= 64 queries at positions qpos.. against keys 0 .. qpos+nqb-1 (attention.c's
// head_forward_block_512 with bf16 products)
INLINE_ABF void block_forward_bf16(int NV, float *out, int ldo, float *lse, const float *q, int ldq, const float *k,
                                   int ldk, const float *v, int ldv, int nqb, int qpos) {
    const __m512 vscale = _mm512_set1_ps(0.125f);   // 1/sqrt(64)
    _Alignas(64) uint32_t QB[ATT_B * AP];   // (queries, hs pairs)
    _Alignas(64) uint32_t QT2[AP * AH];     // (hs pairs, queries)
    _Alignas(64) uint32_t KB[ATT_B * AP];   // (keys, hs pairs)
    _Alignas(64) uint32_t VB2[AP * AH];     // (key pairs, hs)
    _Alignas(64) uint32_t PT2[AP * AH];     // (key pairs, queries)
    _Alignas(64) float ST[ATT_B * AH];      // (keys, queries): scores, then probabilities
    _Alignas(64) float OT[AH * AH];         // (hs, queries): unnormalised output
    rows_to_pairs(QB, q, ldq, nqb, nqb);
    pairs_transpose(QT2, AH, QB, nqb);   // (query lanes past nqb: 0)
    __m512 m[AT_NV], l[AT_NV];
    for (int w = 0; w < AT_NV; w++) m[w] = l[w] = _mm512_setzero_ps();
    int key_end = qpos + nqb;
    for (int k0 = 0; k0 < key_end; k0 += ATT_B) {
        int nk = key_end - k0 < ATT_B ? key_end - k0 : ATT_B, nkp = (nk + 1) / 2;
        int diag = k0 + nk - 1 > qpos;
#define FIRST_VEC(j) (diag && k0 + (j) - qpos > 0 ? (k0 + (j) - qpos) / 16 : 0)
        rows_to_pairs(KB, k + (ptrdiff_t)k0 * ldk, ldk, nk, nk);
        __m512 bm[AT_NV];
        for (int w = 0; w < NV; w++) bm[w] = _mm512_set1_ps(-INFINITY);
        for (int j0 = 0; j0 < nk; j0 += AT_R) {
            int nr = nk - j0 < AT_R ? nk - j0 : AT_R, w0 = FIRST_VEC(j0);
            __m512 acc[AT_R][AT_NV];
            att_zero(acc);
            tile2_from(acc, w0, NV, nr, AP, KB + j0 * AP, AP, 1, QT2, AH);
#pragma GCC unroll 4
            for (int r = 0; r < AT_R; r++) {
                if (r >= nr) break;
#pragma GCC unroll 4
                for (int w = 0; w < NV; w++) {
                    if (w < w0) continue;
                    __mmask16 vis = diag ? att_visible(k0 + j0 + r, qpos + 16 * w) : (__mmask16)0xFFFF;
                    bm[w] = _mm512_mask_max_ps(bm[w], vis, bm[w], acc[r][w]);
                    _mm512_store_ps(ST + (j0 + r) * AH + 16 * w, acc[r][w]);
                }
            }
        }
        __m512 corr[AT_NV];
        for (int w = 0; w < NV; w++) {
            corr[w] = _mm512_set1_ps(1.0f);
            __m512 mb = _mm512_mul_ps(bm[w], vscale);
            if (k0 == 0) {
                m[w] = mb;
                l[w] = _mm512_setzero_ps();
            } else {
                __m512 mnew = _mm512_max_ps(m[w], mb);
                corr[w] = sm_exp512_nonpos(_mm512_sub_ps(m[w], mnew));
                l[w] = _mm512_mul_ps(l[w], corr[w]);
                m[w] = mnew;
            }
        }
        // P^T, 0 where masked and in the vectors skipped (a pair rounded out may read them); the
        // probabilities summed into l are the float32 ones, the products take their bf16 roundings
        for (int j = 0; j < nk; j++) {
            int w0 = FIRST_VEC(j);
#pragma GCC unroll 4
            for (int w = 0; w < NV; w++) {
                float *sp = ST + j * AH + 16 * w;
                if (w < w0) {
                    _mm512_store_ps(sp, _mm512_setzero_ps());
                    continue;
                }
                __mmask16 vis = diag ? att_visible(k0 + j, qpos + 16 * w) : (__mmask16)0xFFFF;
                __m512 x = _mm512_maskz_fmsub_ps(vis, _mm512_load_ps(sp), vscale, m[w]);
                __m512 e = _mm512_maskz_mov_ps(vis, sm_exp512_nonpos(x));
                _mm512_store_ps(sp, e);
                l[w] = _mm512_add_ps(l[w], e);
            }
        }
#undef FIRST_VEC
        rows_interleave(PT2, AH, ST, AH, nk, nkp);
        rows_interleave(VB2, AH, v + (ptrdiff_t)k0 * ldv, ldv, nk, nkp);
        // key pairs [0, pend[w]) reach query vector w (keys past the last visible one add zeros)
        int pend[AT_NV];
        for (int w = 0; w < NV; w++) {
            int e = qpos + 16 * w + 16 - k0;
            pend[w] = diag && e < nk ? (e + 1) / 2 : nkp;
        }
        for (int c0 = 0; c0 < AH; c0 += AT_R) {
            __m512 acc[AT_R][AT_NV];
#pragma GCC unroll 4
            for (int r = 0; r < AT_R; r++)
#pragma GCC unroll 4
                for (int w = 0; w < NV; w++)
                    acc[r][w] = k0 == 0 ? _mm512_setzero_ps()
                                        : _mm512_mul_ps(_mm512_load_ps(OT + (c0 + r) * AH + 16 * w), corr[w]);
            for (int s = 0, pa = 0; s < NV; s++) {   // pairs [pa, pend[s]) reach vectors s .. NV-1
                if (pend[s] <= pa) continue;
                tile2_from(acc, s, NV, AT_R, pend[s] - pa, VB2 + pa * AH + c0, 1, AH, PT2 + pa * AH, AH);
                pa = pend[s];
            }
#pragma GCC unroll 4
            for (int r = 0; r < AT_R; r++)
#pragma GCC unroll 4
                for (int w = 0; w < NV; w++) _mm512_store_ps(OT + (c0 + r) * AH + 16 * w, acc[r][w]);
        }
    }
    _Alignas(64) float mv[AH], lv[AH];
    for (int w = 0; w < NV; w++) {
        __m512 inv = _mm512_div_ps(_mm512_set1_ps(1.0f), l[w]);
        int rows = nqb - 16 * w < 16 ? nqb - 16 * w : 16;
        for (int c = 0; c < AH; c += 16) {
            __m512 t[16];
            for (int i = 0; i < 16; i++) t[i] = _mm512_mul_ps(_mm512_load_ps(OT + (c + i) * AH + 16 * w), inv);
            transpose16(t);
            for (int i = 0; i < rows; i++) _mm512_storeu_ps(out + (ptrdiff_t)(16 * w + i) * ldo + c, t[i]);
        }
        _mm512_store_ps(mv + 16 * w, m[w]);
        _mm512_store_ps(lv + 16 * w, l[w]);
    }
    if (lse)
        for (int i = 0; i < nqb; i++) lse[i] = mv[i] + logf(lv[i]);
}

TGT_ABF static void head_forward_bf16(float *out, int ldo, float *lse, const float *q, int ldq, const float *k, int ldk,
                                      const float *v, int ldv, int nq, int pos0) {
    for (int q0 = 0; q0 < nq; q0 += ATT_B) {
        int nqb = nq - q0 < ATT_B ? nq - q0 : ATT_B;
        float *o = out + (size_t)q0 * ldo, *ls = lse ? lse + q0 : NULL;
        const float *qb = q + (size_t)q0 * ldq;
        switch ((nqb + 15) / 16) {
        case 1: block_forward_bf16(1, o, ldo, ls, qb, ldq, k, ldk, v, ldv, nqb, pos0 + q0); break;
        case 2: block_forward_bf16(2, o, ldo, ls, qb, ldq, k, ldk, v, ldv, nqb, pos0 + q0); break;
        case 3: block_forward_bf16(3, o, ldo, ls, qb, ldq, k, ldk, v, ldv, nqb, pos0 + q0); break;
        default: block_forward_bf16(4, o, ldo, ls, qb, ldq, k, ldk, v, ldv, nqb, pos0 + q0); break;
        }
    }
}

// dst (nk, 64) (+)= X2^T-weighted sums: dst[j] (+)= sum over query pairs of A(j, p) . X(p) with
// A(j, p) = PQ2[p*AH + j] (the probabilities or dS of queries 2p, 2p+1 at key j) and X(p) the
// query pair's row of X2 (AH words); each key tile from the pair of the first query that sees it
INLINE_ABF void keys_update_bf16(float *dst, ptrdiff_t ld, const uint32_t *PQ2, const uint32_t *X2, int nk, int nqb,
                                 int k0, int q0) {
    const int nqp = (nqb + 1) / 2;
    for (int j0 = 0; j0 < nk; j0 += AT_R) {
        int nr = nk - j0 < AT_R ? nk - j0 : AT_R, ia = k0 + j0 - q0 > 0 ? k0 + j0 - q0 : 0, pa = ia / 2;
        __m512 acc[AT_R][AT_NV];
        att_load_rows(acc, dst + (ptrdiff_t)j0 * ld, ld, nr, q0 == k0);
        tile2(acc, 0, AT_NV, nr, nqp - pa, PQ2 + pa * AH + j0, 1, AH, X2 + pa * AH, AH);
        att_store_rows(dst + (ptrdiff_t)j0 * ld, ld, nr, acc);
    }
}

TGT_ABF static void head_backward_bf16(float *dq, float *dk, float *dv, const float *dO, const float *O, const float *q,
                                       const float *k, const float *v, const float *lrow, int T, int ld, int ldo) {
    const __m512 vscale = _mm512_set1_ps(0.125f);
    _Alignas(64) uint32_t KT2[AP * ATT_B], VT2[AP * ATT_B];   // (hs pairs, keys)
    _Alignas(64) uint32_t KK2[AP * AH];                       // (key pairs, hs)
    _Alignas(64) uint32_t QB[ATT_B * AP], DOB[ATT_B * AP];    // (queries, hs pairs)
    _Alignas(64) uint32_t QQ2[AP * AH], DO2[AP * AH];         // (query pairs, hs)
    _Alignas(64) uint32_t PQ2[AP * ATT_B];                    // (query pairs, keys): P, then dS
    _Alignas(64) uint32_t SB[ATT_B * AP];                     // (queries, key pairs): dS
    _Alignas(64) float P[ATT_B * ATT_B];                      // (queries, keys): P, then dS
    float D[ATT_B];
    for (int k0 = 0; k0 < T; k0 += ATT_B) {
        int nk = T - k0 < ATT_B ? T - k0 : ATT_B;
        float *dkb = dk + (ptrdiff_t)k0 * ld, *dvb = dv + (ptrdiff_t)k0 * ld;
        rows_to_pairs(QB, k + (ptrdiff_t)k0 * ld, ld, nk, nk);   // (QB as scratch)
        pairs_transpose(KT2, ATT_B, QB, nk);
        rows_to_pairs(QB, v + (ptrdiff_t)k0 * ld, ld, nk, nk);
        pairs_transpose(VT2, ATT_B, QB, nk);
        rows_interleave(KK2, AH, k + (ptrdiff_t)k0 * ld, ld, nk, (nk + 1) / 2);
        for (int q0 = k0; q0 < T; q0 += ATT_B) {
            int nqb = T - q0 < ATT_B ? T - q0 : ATT_B, nqp = (nqb + 1) / 2;
            rows_to_pairs(QB, q + (ptrdiff_t)q0 * ld, ld, nqb, nqb);
            rows_to_pairs(DOB, dO + (ptrdiff_t)q0 * ldo, ldo, nqb, nqb);
            rows_interleave(QQ2, AH, q + (ptrdiff_t)q0 * ld, ld, nqb, nqp);
            rows_interleave(DO2, AH, dO + (ptrdiff_t)q0 * ldo, ldo, nqb, nqp);
            for (int i = 0; i < nqb; i++) {   // D = rowsum(dO * O), float32
                const float *a = dO + (ptrdiff_t)(q0 + i) * ldo, *b = O + (ptrdiff_t)(q0 + i) * ldo;
                __m512 s = _mm512_mul_ps(_mm512_loadu_ps(a), _mm512_loadu_ps(b));
                for (int c = 16; c < AH; c += 16) s = _mm512_fmadd_ps(_mm512_loadu_ps(a + c), _mm512_loadu_ps(b + c), s);
                D[i] = _mm512_reduce_add_ps(s);
            }
#define NVIS(i) (q0 + (i) - k0 + 1 < nk ? q0 + (i) - k0 + 1 : nk)
            // P (nqb, 64) = exp(scale Q K^T - lse) where visible, else 0 (the vectors not computed too)
            for (int i0 = 0; i0 < nqb; i0 += AT_R) {
                int nr = nqb - i0 < AT_R ? nqb - i0 : AT_R, nv = (NVIS(i0 + nr - 1) + 15) / 16;
                __m512 acc[AT_R][AT_NV];
                att_zero(acc);
                tile2_upto(acc, nv, nr, AP, QB + i0 * AP, AP, 1, KT2, ATT_B);
#pragma GCC unroll 4
                for (int r = 0; r < AT_R; r++) {
                    if (r >= nr) break;
                    int i = i0 + r, n_vis = NVIS(i);
                    __m512 sh = _mm512_set1_ps(lrow[q0 + i]);
#pragma GCC unroll 4
                    for (int w = 0; w < AT_NV; w++) {
                        __m512 e = _mm512_setzero_ps();
                        if (w < nv) {
                            __mmask16 vis = sm_lanes_mask(n_vis - 16 * w);
                            e = _mm512_maskz_mov_ps(vis, sm_exp512(_mm512_maskz_fmsub_ps(vis, acc[r][w], vscale, sh)));
                        }
                        _mm512_store_ps(P + i * ATT_B + 16 * w, e);
                    }
                }
            }
            // dV_blk (+)= P^T dO_blk
            rows_interleave(PQ2, ATT_B, P, ATT_B, nqb, nqp);
            keys_update_bf16(dvb, ld, PQ2, DO2, nk, nqb, k0, q0);
            // dS = P (dO_blk V_blk^T - D) scale, over P (0 where P is)
            for (int i0 = 0; i0 < nqb; i0 += AT_R) {
                int nr = nqb - i0 < AT_R ? nqb - i0 : AT_R, nv = (NVIS(i0 + nr - 1) + 15) / 16;
                __m512 acc[AT_R][AT_NV];
                att_zero(acc);
                tile2_upto(acc, nv, nr, AP, DOB + i0 * AP, AP, 1, VT2, ATT_B);
#pragma GCC unroll 4
                for (int r = 0; r < AT_R; r++) {
                    if (r >= nr) break;
                    __m512 d = _mm512_set1_ps(D[i0 + r]);
#pragma GCC unroll 4
                    for (int w = 0; w < AT_NV; w++) {
                        if (w >= nv) break;   // P is 0 there: so is dS
                        float *pp = P + (i0 + r) * ATT_B + 16 * w;
                        __m512 ds = _mm512_mul_ps(_mm512_load_ps(pp), _mm512_sub_ps(acc[r][w], d));
                        _mm512_store_ps(pp, _mm512_mul_ps(ds, vscale));
                    }
                }
            }
            // dK_blk (+)= dS^T Q_blk
            rows_interleave(PQ2, ATT_B, P, ATT_B, nqb, nqp);
            keys_update_bf16(dkb, ld, PQ2, QQ2, nk, nqb, k0, q0);
            // dQ_blk (+)= dS K_blk over the key pairs the tile's last query sees
            rows_to_pairs(SB, P, ATT_B, nqb, nqb);
            for (int i0 = 0; i0 < nqb; i0 += AT_R) {
                int nr = nqb - i0 < AT_R ? nqb - i0 : AT_R;
                float *dqr = dq + (ptrdiff_t)(q0 + i0) * ld;
                __m512 acc[AT_R][AT_NV];
                att_load_rows(acc, dqr, ld, nr, k0 == 0);
                tile2(acc, 0, AT_NV, nr, (NVIS(i0 + nr - 1) + 1) / 2, SB + i0 * AP, AP, 1, KK2, AH);
                att_store_rows(dqr, ld, nr, acc);
            }
#undef NVIS
        }
    }
}
#endif   // KERNELS_X86

static int use_bf16(int hs) {
#ifdef KERNELS_X86
    return hs == AH && kernels_bf16_available();
#else
    (void)hs;
    return 0;
#endif
}

void attention_head_forward_bf16(float *out, int ldo, float *lse, const float *q, int ldq, const float *k, int ldk,
                                 const float *v, int ldv, int nq, int pos0, int hs) {
    // as attention_head_forward, the products in bf16 (64-wide heads with AVX512-BF16; else float32)
    assert(nq >= 0 && pos0 >= 0 && hs > 0 && "attention_head_forward_bf16: bad dimensions");
#ifdef KERNELS_X86
    if (use_bf16(hs)) {
        head_forward_bf16(out, ldo, lse, q, ldq, k, ldk, v, ldv, nq, pos0);
        return;
    }
#endif
    attention_head_forward(out, ldo, lse, q, ldq, k, ldk, v, ldv, nq, pos0, hs);
}

void attention_forward_bf16(float *out, float *lse, const float *qkv, int B, int T, int C, int NH) {
    // qkv is (B,T,3C); out is (B,T,C), lse is (B,NH,T): attention_forward's contract, bf16 products
    assert(NH > 0 && C % NH == 0 && "attention_forward_bf16: C must be a multiple of NH");
    int hs = C / NH, C3 = 3 * C;
    if (!use_bf16(hs)) {
        attention_forward(out, lse, qkv, B, T, C, NH);
        return;
    }
#pragma omp parallel for schedule(static)
    for (int bh = 0; bh < B * NH; bh++) {
        int b = bh / NH, h = bh % NH;
        const float *q = qkv + (size_t)b * T * C3 + h * hs;
        attention_head_forward_bf16(out + (size_t)b * T * C + h * hs, C, lse + (size_t)bh * T, q, C3, q + C, C3,
                                    q + 2 * C, C3, T, 0, hs);
    }
}

void attention_backward_bf16(float *dqkv, const float *dout, const float *out, const float *qkv, const float *lse,
                             int B, int T, int C, int NH) {
    // attention_backward's contract (dqkv OVERWRITTEN), bf16 products
    assert(NH > 0 && C % NH == 0 && "attention_backward_bf16: C must be a multiple of NH");
    int hs = C / NH, C3 = 3 * C;
    if (!use_bf16(hs)) {
        attention_backward(dqkv, dout, out, qkv, lse, B, T, C, NH);
        return;
    }
#ifdef KERNELS_X86
#pragma omp parallel for schedule(static)
    for (int bh = 0; bh < B * NH; bh++) {
        int b = bh / NH, h = bh % NH;
        const float *q = qkv + (size_t)b * T * C3 + h * hs, *k = q + C, *v = q + 2 * C;
        float *dq = dqkv + (size_t)b * T * C3 + h * hs, *dk = dq + C, *dv = dq + 2 * C;
        head_backward_bf16(dq, dk, dv, dout + (size_t)b * T * C + h * hs, out + (size_t)b * T * C + h * hs, q, k, v,
                           lse + (size_t)bh * T, T, C3, C);
    }
#else
    (void)dqkv, (void)dout, (void)out, (void)qkv, (void)lse, (void)B, (void)T, (void)C3;
#endif
}
