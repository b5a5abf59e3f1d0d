// attention.c — defines attention_head_forward, attention_forward and attention_backward: causal
// multi-head self-attention, flash-attention style (tiled, online softmax, O(T) memory per head,
// probabilities recomputed in backward). Two paths: AVX-512 register-tiled kernels for 64-wide
// heads (every GPT-2 size), and plain C on the GEMM engine (other head sizes and paths).
#include "kernels_internal.h"

#include <assert.h>
#include <math.h>

// Blocks of ATT_B queries against blocks of ATT_B keys. Blocks whose keys all lie after the
// block's last query are never visited; inside a diagonal block the masked scores get
// probability 0 without an exp() of them. Results depend on the (fixed) block size, never on the
// thread count: heads are independent and each head's sums run in a fixed order.

// ---------------------------------------------------------------------------------------------
// Plain C: the products on the GEMM engine, the row loops in between

static void head_forward_plain(float *out, int ldo, float *lse, const float *q, int ldq, const float *k, int ldk,
                               const float *v, int ldv, int nq, int pos0, int hs) {
    const float scale = 1.0f / sqrtf((float)hs);
    _Alignas(64) float S[ATT_B * ATT_B];
    for (int q0 = 0; q0 < nq; q0 += ATT_B) {
        int nqb = nq - q0 < ATT_B ? nq - q0 : ATT_B;
        int key_end = pos0 + q0 + nqb;   // keys [0, key_end) are visible to some query of the block
        float m[ATT_B], l[ATT_B];
        float *o = out + (size_t)q0 * ldo;
        for (int k0 = 0; k0 < key_end; k0 += ATT_B) {
            int nk = key_end - k0 < ATT_B ? key_end - k0 : ATT_B;
            // S (nqb,nk) = scale * Q_blk K_blk^T
            gemm_ex(0, 1, nqb, nk, hs, scale, q + (size_t)q0 * ldq, ldq, k + (size_t)k0 * ldk, ldk, 0.0f, S, ATT_B,
                    NULL);
            // online softmax: row i sees keys k0 .. pos0+q0+i of this block
            for (int i = 0; i < nqb; i++) {
                float *srow = S + (size_t)i * ATT_B;
                int n_valid = pos0 + q0 + i + 1 - k0;
                if (n_valid > nk) n_valid = nk;
                if (n_valid <= 0) {   // fully masked in this block: contributes nothing
                    for (int j = 0; j < nk; j++) srow[j] = 0.0f;
                    continue;
                }
                float bm = row_max(srow, n_valid);
                if (k0 == 0) {   // first block: every row has key 0
                    m[i] = bm;
                    l[i] = exp_shift_sum(srow, n_valid, nk, bm);
                } else {
                    float mnew = bm > m[i] ? bm : m[i];
                    float corr = sm_expf(m[i] - mnew);
                    float sum = exp_shift_sum(srow, n_valid, nk, mnew);
                    l[i] = l[i] * corr + sum;
                    m[i] = mnew;
                    if (corr != 1.0f) {
                        float *orow = o + (size_t)i * ldo;
                        for (int c = 0; c < hs; c++) orow[c] *= corr;
                    }
                }
            }
            // O_blk (nqb,hs) (+)= P V_blk
            gemm_ex(0, 0, nqb, hs, nk, 1.0f, S, ATT_B, v + (size_t)k0 * ldv, ldv, k0 == 0 ? 0.0f : 1.0f, o, ldo, NULL);
        }
        for (int i = 0; i < nqb; i++) {
            float inv = 1.0f / l[i];
            float *orow = o + (size_t)i * ldo;
            for (int c = 0; c < hs; c++) orow[c] *= inv;
            if (lse) lse[q0 + i] = m[i] + logf(l[i]);
        }
    }
}

static void head_backward_plain(float *dq, float *dk, float *dv, const float *dO, const float *O, const float *q,
                                const float *k, const float *v, const float *lrow, int T, int hs, int ld, int ldo) {
    // q, k, v, dq, dk, dv are (T,hs) with row stride ld; dO and O (T,hs) with row stride ldo
    const float scale = 1.0f / sqrtf((float)hs);
    _Alignas(64) float P[ATT_B * ATT_B], dP[ATT_B * ATT_B];
    float D[ATT_B];
    for (int k0 = 0; k0 < T; k0 += ATT_B) {
        int nk = T - k0 < ATT_B ? T - k0 : ATT_B;
        for (int q0 = k0; q0 < T; q0 += ATT_B) {   // query blocks that see some key of this block
            int nqb = T - q0 < ATT_B ? T - q0 : ATT_B;
            // beta: dV_blk and dK_blk are first written at q0 == k0, dQ_blk at k0 == 0
            float beta_kv = q0 == k0 ? 0.0f : 1.0f, beta_q = k0 == 0 ? 0.0f : 1.0f;
            gemm_ex(0, 1, nqb, nk, hs, scale, q + (size_t)q0 * ld, ld, k + (size_t)k0 * ld, ld, 0.0f, P, ATT_B, NULL);
            for (int i = 0; i < nqb; i++) {
                float *prow = P + (size_t)i * ATT_B;
                int n_valid = q0 + i + 1 - k0;
                if (n_valid > nk) n_valid = nk;
                float shift = lrow[q0 + i];
                int j = 0;
                for (; j < n_valid; j++) prow[j] = sm_expf_inline(prow[j] - shift);
                for (; j < nk; j++) prow[j] = 0.0f;
                D[i] = dot(dO + (size_t)(q0 + i) * ldo, O + (size_t)(q0 + i) * ldo, hs);
            }
            // dV_blk (nk,hs) (+)= P^T dO_blk
            gemm_ex(1, 0, nk, hs, nqb, 1.0f, P, ATT_B, dO + (size_t)q0 * ldo, ldo, beta_kv, dv + (size_t)k0 * ld, ld,
                    NULL);
            // dP (nqb,nk) = dO_blk V_blk^T
            gemm_ex(0, 1, nqb, nk, hs, 1.0f, dO + (size_t)q0 * ldo, ldo, v + (size_t)k0 * ld, ld, 0.0f, dP, ATT_B, NULL);
            for (int i = 0; i < nqb; i++) {
                float *prow = P + (size_t)i * ATT_B, *drow = dP + (size_t)i * ATT_B;
                for (int j = 0; j < nk; j++) drow[j] = prow[j] * (drow[j] - D[i]) * scale;   // 0 where P is
            }
            // dQ_blk (+)= dS K_blk;  dK_blk (+)= dS^T Q_blk
            gemm_ex(0, 0, nqb, hs, nk, 1.0f, dP, ATT_B, k + (size_t)k0 * ld, ld, beta_q, dq + (size_t)q0 * ld, ld, NULL);
            gemm_ex(1, 0, nk, hs, nqb, 1.0f, dP, ATT_B, q + (size_t)q0 * ld, ld, beta_kv, dk + (size_t)k0 * ld, ld, NULL);
        }
    }
}

#ifdef KERNELS_X86
// ---------------------------------------------------------------------------------------------
// AVX-512, head size 64: every product is a 64 x 64 x 64 block (or smaller at the edges), too
// small for the GEMM engine's packing. Instead one register-tiled kernel (att_tile) whose A
// operand is read in place with any strides and whose B operand is a row of 16-float vectors in
// a stack buffer: a block copied or transposed there once, where it is reused across tiles.
//   forward, per query block: Q^T (64 x nqb, queries in lanes) packed once; per key block the
//     scores S^T = K Q^T, a vertical (lane-wise) online softmax, O^T += V^T P^T, with O^T in a
//     stack buffer, transposed into out at the end. No reduction across lanes anywhere.
//   backward, per key block: K^T and V^T (64 x nk, keys in lanes) packed once; per query block
//     P = exp(scale Q K^T - lse), dV += P^T dO, dS = P (dO V^T - D) scale, dK += dS^T Q,
//     dQ += dS K, the last three read and written in dqkv directly (first contribution: =).
// In a diagonal block, the 16 x 16 sub-blocks of keys after all their queries are skipped.
// A query's arithmetic does not depend on its lane or on the other queries of its block, so a
// decode step (nq = 1) reproduces a row of the full forward bit for bit.

// acc[r][w] += sum_{p < n} A(r, p) * B(p, w) for r < AT_R and W0 <= w < NV, where
// A(r, p) = a[r*ars + p*aps] (rows r >= nr repeat row nr - 1: computed, never to be stored) and
// B(p, w) is the vector at b + p*ldb + 16w. Each element is one FMA chain in p order.
KERNELS_INLINE_512 void att_tile(__m512 acc[AT_R][AT_NV], int W0, int NV, int nr, int n, const float *a,
                                 ptrdiff_t ars, ptrdiff_t aps, const float *b, ptrdiff_t ldb) {
    const float *ar[AT_R];
    for (int r = 0; r < AT_R; r++) ar[r] = a + (r < nr ? r : nr - 1) * ars;
    for (int p = 0; p < n; p++) {
        __m512 bv[AT_NV];
#pragma GCC unroll 4
        for (int w = W0; w < NV; w++) bv[w] = _mm512_loadu_ps(b + p * ldb + 16 * w);
#pragma GCC unroll 4
        for (int r = 0; r < AT_R; r++) {
            __m512 x = _mm512_set1_ps(ar[r][p * aps]);
#pragma GCC unroll 4
            for (int w = W0; w < NV; w++) acc[r][w] = _mm512_fmadd_ps(x, bv[w], acc[r][w]);
        }
    }
}

// att_tile over the vectors [w0, NV) for a run-time w0 < NV (NV a constant where inlined)
KERNELS_INLINE_512 void att_tile_from(__m512 acc[AT_R][AT_NV], int w0, int NV, int nr, int n, const float *a,
                                      ptrdiff_t ars, ptrdiff_t aps, const float *b, ptrdiff_t ldb) {
    switch (w0) {
    case 0: att_tile(acc, 0, NV, nr, n, a, ars, aps, b, ldb); break;
    case 1: att_tile(acc, 1, NV, nr, n, a, ars, aps, b, ldb); break;
    case 2: att_tile(acc, 2, NV, nr, n, a, ars, aps, b, ldb); break;
    default: att_tile(acc, 3, NV, nr, n, a, ars, aps, b, ldb); break;
    }
}

// att_tile over the vectors [0, nv) for a run-time nv in [1, AT_NV]
KERNELS_INLINE_512 void att_tile_upto(__m512 acc[AT_R][AT_NV], int nv, int nr, int n, const float *a, ptrdiff_t ars,
                                      ptrdiff_t aps, const float *b, ptrdiff_t ldb) {
    switch (nv) {
    case 1: att_tile(acc, 0, 1, nr, n, a, ars, aps, b, ldb); break;
    case 2: att_tile(acc, 0, 2, nr, n, a, ars, aps, b, ldb); break;
    case 3: att_tile(acc, 0, 3, nr, n, a, ars, aps, b, ldb); break;
    default: att_tile(acc, 0, 4, nr, n, a, ars, aps, b, ldb); break;
    }
}

// dst (n, AH), contiguous = rows [0, n) of src (row stride ld)
KERNELS_INLINE_512 void att_copy(float *dst, const float *src, ptrdiff_t ld, int n) {
    for (int i = 0; i < n; i++)
        for (int c = 0; c < AH; c += 16) _mm512_store_ps(dst + i * AH + c, _mm512_loadu_ps(src + i * ld + c));
}

// dst (AH, 16*nv) = the transpose of rows [0, n) of src (row stride ld, AH floats each); lanes
// past n are 0
KERNELS_INLINE_512 void att_pack_t(float *dst, const float *src, ptrdiff_t ld, int n, int nv) {
    for (int w = 0; w < nv; w++) {
        int rows = n - 16 * w < 0 ? 0 : n - 16 * w;
        const float *s = rows > 0 ? src + (16 * w) * ld : src;   // (no pointer past the rows)
        for (int c = 0; c < AH; c += 16) transpose_block(dst + c * AH + 16 * w, AH, 16, s + c, (int)ld, rows, 16);
    }
}

// One block of nqb <= 64 queries (NV = ceil(nqb/16) vectors of lanes) at positions qpos.. against
// keys 0 .. qpos+nqb-1. q, out are the block's rows; lse the block's entries or NULL.
KERNELS_INLINE_512 void head_forward_block_512(int NV, float *out, int ldo, float *lse, const float *q, int ldq,
                                               const float *k, int ldk, const float *v, int ldv, int nqb, int qpos) {
    const __m512 vscale = _mm512_set1_ps(0.125f);   // 1/sqrt(64)
    _Alignas(64) float QT[AH * AH];      // (hs, queries): Q_blk^T
    _Alignas(64) float ST[ATT_B * AH];   // (keys, queries): scores, then probabilities
    _Alignas(64) float VC[ATT_B * AH];   // (keys, hs): V_blk
    _Alignas(64) float OT[AH * AH];      // (hs, queries): unnormalised output
    att_pack_t(QT, q, ldq, nqb, NV);
    __m512 m[AT_NV], l[AT_NV];   // per query: the running max of the scaled scores, the sum
    for (int w = 0; w < AT_NV; w++) m[w] = l[w] = _mm512_setzero_ps();   // (set at k0 = 0)
    int key_end = qpos + nqb;
    for (int k0 = 0; k0 < key_end; k0 += ATT_B) {
        int nk = key_end - k0 < ATT_B ? key_end - k0 : ATT_B;
        int diag = k0 + nk - 1 > qpos;   // some key lies after the block's first query
        // the first query vector that sees key k0 + j: query vectors before it are skipped
#define FIRST_VEC(j) (diag && k0 + (j) - qpos > 0 ? (k0 + (j) - qpos) / 16 : 0)
        // ST (nk, 16 NV) = K_blk Q_blk^T (unscaled), and the lane-wise max of the visible ones
        __m512 bm[AT_NV];
        for (int w = 0; w < NV; w++) bm[w] = _mm512_set1_ps(-INFINITY);
        for (int j0 = 0; j0 < nk; j0 += AT_R) {
            int nr = nk - j0 < AT_R ? nk - j0 : AT_R, w0 = FIRST_VEC(j0);
            __m512 acc[AT_R][AT_NV];
            att_zero(acc);
            att_tile_from(acc, w0, NV, nr, AH, k + (ptrdiff_t)(k0 + j0) * ldk, ldk, 1, QT, AH);
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
        // online softmax, lane by lane: key 0 is visible to every query, so m is finite after
        // the first block; a query that sees no key of a later block keeps m (corr = 1, sum 0)
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
        // P^T = exp(scale S^T - m) where visible (masked scores never reach the exp), else 0
        for (int j = 0; j < nk; j++) {
            int w0 = FIRST_VEC(j);
#pragma GCC unroll 4
            for (int w = 0; w < NV; w++) {
                if (w < w0) continue;
                __mmask16 vis = diag ? att_visible(k0 + j, qpos + 16 * w) : (__mmask16)0xFFFF;
                float *sp = ST + j * AH + 16 * w;
                __m512 x = _mm512_maskz_fmsub_ps(vis, _mm512_load_ps(sp), vscale, m[w]);
                __m512 e = _mm512_maskz_mov_ps(vis, sm_exp512_nonpos(x));
                _mm512_store_ps(sp, e);
                l[w] = _mm512_add_ps(l[w], e);
            }
        }
#undef FIRST_VEC
        // O^T (hs, 16 NV) = corr O^T + V_blk^T P^T: keys [0, jend[w]) reach query vector w
        att_copy(VC, v + (ptrdiff_t)k0 * ldv, ldv, nk);
        int jend[AT_NV];
        for (int w = 0; w < NV; w++) {
            int e = qpos + 16 * w + 16 - k0;
            jend[w] = diag && e < nk ? e : nk;
        }
        for (int c0 = 0; c0 < AH; c0 += AT_R) {
            __m512 acc[AT_R][AT_NV];
#pragma GCC unroll 4
            for (int r = 0; r < AT_R; r++)
#pragma GCC unroll 4
                for (int w = 0; w < NV; w++)
                    acc[r][w] = k0 == 0 ? _mm512_setzero_ps()
                                        : _mm512_mul_ps(_mm512_load_ps(OT + (c0 + r) * AH + 16 * w), corr[w]);
            for (int s = 0, ja = 0; s < NV; s++) {   // keys [ja, jend[s]) reach vectors s .. NV-1
                if (jend[s] <= ja) continue;
                att_tile_from(acc, s, NV, AT_R, jend[s] - ja, VC + ja * AH + c0, 1, AH, ST + ja * AH, AH);
                ja = jend[s];
            }
#pragma GCC unroll 4
            for (int r = 0; r < AT_R; r++)
#pragma GCC unroll 4
                for (int w = 0; w < NV; w++) _mm512_store_ps(OT + (c0 + r) * AH + 16 * w, acc[r][w]);
        }
    }
    // out = (O^T / l)^T, 16 x 16 blocks scaled in registers on their way; lse = m + log l
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

KERNELS_TGT_512 static void head_forward_512(float *out, int ldo, float *lse, const float *q, int ldq, const float *k,
                                             int ldk, const float *v, int ldv, int nq, int pos0) {
    for (int q0 = 0; q0 < nq; q0 += ATT_B) {
        int nqb = nq - q0 < ATT_B ? nq - q0 : ATT_B;
        float *o = out + (size_t)q0 * ldo, *ls = lse ? lse + q0 : NULL;
        const float *qb = q + (size_t)q0 * ldq;
        switch ((nqb + 15) / 16) {   // the query vectors of the block, a constant in each copy
        case 1: head_forward_block_512(1, o, ldo, ls, qb, ldq, k, ldk, v, ldv, nqb, pos0 + q0); break;
        case 2: head_forward_block_512(2, o, ldo, ls, qb, ldq, k, ldk, v, ldv, nqb, pos0 + q0); break;
        case 3: head_forward_block_512(3, o, ldo, ls, qb, ldq, k, ldk, v, ldv, nqb, pos0 + q0); break;
        default: head_forward_block_512(4, o, ldo, ls, qb, ldq, k, ldk, v, ldv, nqb, pos0 + q0); break;
        }
    }
}

// dst (nk, 64) (+)= P^T X for a key block k0 against a query block q0: P is (nqb, ATT_B), X is
// (nqb, 64) contiguous, dst has row stride ld. Each key tile sums over the queries from the first
// that sees its first key; the first contribution (q0 == k0) writes instead of adding.
KERNELS_INLINE_512 void att_keys_update(float *dst, ptrdiff_t ld, const float *P, const float *X, int nk, int nqb,
                                        int k0, int q0) {
    for (int j0 = 0; j0 < nk; j0 += AT_R) {
        int nr = nk - j0 < AT_R ? nk - j0 : AT_R, ia = k0 + j0 - q0 > 0 ? k0 + j0 - q0 : 0;
        __m512 acc[AT_R][AT_NV];
        att_load_rows(acc, dst + (ptrdiff_t)j0 * ld, ld, nr, q0 == k0);
        att_tile(acc, 0, AT_NV, nr, nqb - ia, P + ia * ATT_B + j0, 1, ATT_B, X + ia * AH, AH);
        att_store_rows(dst + (ptrdiff_t)j0 * ld, ld, nr, acc);
    }
}

KERNELS_TGT_512 static void head_backward_512(float *dq, float *dk, float *dv, const float *dO, const float *O,
                                              const float *q, const float *k, const float *v, const float *lrow, int T,
                                              int ld, int ldo) {
    // q, k, v, dq, dk, dv are (T,64) with row stride ld; dO and O (T,64) with row stride ldo
    const __m512 vscale = _mm512_set1_ps(0.125f);   // 1/sqrt(64)
    _Alignas(64) float KT[AH * ATT_B], VT[AH * ATT_B];   // (hs, keys): K_blk^T, V_blk^T
    _Alignas(64) float KC[ATT_B * AH];                   // (keys, hs): K_blk
    _Alignas(64) float QC[ATT_B * AH], DOC[ATT_B * AH];  // (queries, hs): Q_blk, dO_blk
    _Alignas(64) float P[ATT_B * ATT_B];                 // (queries, keys): P, then dS
    float D[ATT_B];
    for (int k0 = 0; k0 < T; k0 += ATT_B) {
        int nk = T - k0 < ATT_B ? T - k0 : ATT_B;
        float *dkb = dk + (ptrdiff_t)k0 * ld, *dvb = dv + (ptrdiff_t)k0 * ld;
        att_pack_t(KT, k + (ptrdiff_t)k0 * ld, ld, nk, AT_NV);
        att_pack_t(VT, v + (ptrdiff_t)k0 * ld, ld, nk, AT_NV);
        att_copy(KC, k + (ptrdiff_t)k0 * ld, ld, nk);
        for (int q0 = k0; q0 < T; q0 += ATT_B) {   // query blocks that see some key of this block
            int nqb = T - q0 < ATT_B ? T - q0 : ATT_B;
            att_copy(QC, q + (ptrdiff_t)q0 * ld, ld, nqb);
            att_copy(DOC, dO + (ptrdiff_t)q0 * ldo, ldo, nqb);
            for (int i = 0; i < nqb; i++) {   // D = rowsum(dO * O)
                const float *a = DOC + i * AH, *b = O + (ptrdiff_t)(q0 + i) * ldo;
                __m512 s = _mm512_mul_ps(_mm512_load_ps(a), _mm512_loadu_ps(b));
                for (int c = 16; c < AH; c += 16) s = _mm512_fmadd_ps(_mm512_load_ps(a + c), _mm512_loadu_ps(b + c), s);
                D[i] = _mm512_reduce_add_ps(s);
            }
            // keys [0, nvis(i)) of the block are visible to query q0 + i
#define NVIS(i) (q0 + (i) - k0 + 1 < nk ? q0 + (i) - k0 + 1 : nk)
            // P (nqb, 64) = exp(scale Q_blk K_blk^T - lse) where visible (the masked scores never
            // reach the exp), else 0; only the key vectors that the tile's last query sees
            for (int i0 = 0; i0 < nqb; i0 += AT_R) {
                int nr = nqb - i0 < AT_R ? nqb - i0 : AT_R, nv = (NVIS(i0 + nr - 1) + 15) / 16;
                __m512 acc[AT_R][AT_NV];
                att_zero(acc);
                att_tile_upto(acc, nv, nr, AH, QC + i0 * AH, AH, 1, KT, ATT_B);
#pragma GCC unroll 4
                for (int r = 0; r < AT_R; r++) {
                    if (r >= nr) break;
                    int i = i0 + r, n_vis = NVIS(i);
                    __m512 sh = _mm512_set1_ps(lrow[q0 + i]);
#pragma GCC unroll 4
                    for (int w = 0; w < AT_NV; w++) {
                        if (w >= nv) break;
                        __mmask16 vis = sm_lanes_mask(n_vis - 16 * w);
                        __m512 x = _mm512_maskz_fmsub_ps(vis, acc[r][w], vscale, sh);
                        _mm512_store_ps(P + i * ATT_B + 16 * w, _mm512_maskz_mov_ps(vis, sm_exp512(x)));
                    }
                }
            }
            // dV_blk (nk, 64) (+)= P^T dO_blk
            att_keys_update(dvb, ld, P, DOC, nk, nqb, k0, q0);
            // dS = P (dO_blk V_blk^T - D) scale, over P (0 where P is)
            for (int i0 = 0; i0 < nqb; i0 += AT_R) {
                int nr = nqb - i0 < AT_R ? nqb - i0 : AT_R, nv = (NVIS(i0 + nr - 1) + 15) / 16;
                __m512 acc[AT_R][AT_NV];
                att_zero(acc);
                att_tile_upto(acc, nv, nr, AH, DOC + i0 * AH, AH, 1, VT, ATT_B);
#pragma GCC unroll 4
                for (int r = 0; r < AT_R; r++) {
                    if (r >= nr) break;
                    __m512 d = _mm512_set1_ps(D[i0 + r]);
#pragma GCC unroll 4
                    for (int w = 0; w < AT_NV; w++) {
                        if (w >= nv) break;
                        float *pp = P + (i0 + r) * ATT_B + 16 * w;
                        __m512 ds = _mm512_mul_ps(_mm512_load_ps(pp), _mm512_sub_ps(acc[r][w], d));
                        _mm512_store_ps(pp, _mm512_mul_ps(ds, vscale));
                    }
                }
            }
            // dK_blk (nk, 64) (+)= dS^T Q_blk
            att_keys_update(dkb, ld, P, QC, nk, nqb, k0, q0);
            // dQ_blk (nqb, 64) (+)= dS K_blk, over the keys that the tile's last query sees
            for (int i0 = 0; i0 < nqb; i0 += AT_R) {
                int nr = nqb - i0 < AT_R ? nqb - i0 : AT_R;
                float *dqr = dq + (ptrdiff_t)(q0 + i0) * ld;
                __m512 acc[AT_R][AT_NV];
                att_load_rows(acc, dqr, ld, nr, k0 == 0);
                att_tile(acc, 0, AT_NV, nr, NVIS(i0 + nr - 1), P + i0 * ATT_B, ATT_B, 1, KC, AH);
                att_store_rows(dqr, ld, nr, acc);
            }
#undef NVIS
        }
    }
}
#endif   // KERNELS_X86

// ---------------------------------------------------------------------------------------------

// The AVX-512 path serves 64-wide heads when the AVX-512 path is allowed; the plain path everything else.
static int use_512(int hs) {
#ifdef KERNELS_X86
    return hs == AH && kernels_pick(KERNELS_OP_ATTENTION) == KERNELS_ISA_AVX512;
#else
    (void)hs;
    return 0;
#endif
}

void attention_head_forward(float *out, int ldo, float *lse, const float *q, int ldq, const float *k, int ldk,
                            const float *v, int ldv, int nq, int pos0, int hs) {
    // q is (nq,hs) at positions pos0..pos0+nq-1; k and v are (pos0+nq, hs); out is (nq,hs);
    // lse (nq) or NULL. Query i attends to keys 0..pos0+i.
    assert(nq >= 0 && pos0 >= 0 && hs > 0 && "attention_head_forward: bad dimensions");
#ifdef KERNELS_X86
    if (use_512(hs)) {
        head_forward_512(out, ldo, lse, q, ldq, k, ldk, v, ldv, nq, pos0);
        return;
    }
#endif
    head_forward_plain(out, ldo, lse, q, ldq, k, ldk, v, ldv, nq, pos0, hs);
}

void attention_forward(float *out, float *lse, const float *qkv, int B, int T, int C, int NH) {
    // qkv is (B,T,3C) = [q | k | v], each split into NH heads of hs = C/NH columns;
    // out is (B,T,C), lse is (B,NH,T) (log-sum-exp of each row's scaled scores, for backward)
    assert(NH > 0 && C % NH == 0 && "attention_forward: C must be a multiple of NH");
    int hs = C / NH, C3 = 3 * C;
#pragma omp parallel for schedule(static)
    for (int bh = 0; bh < B * NH; bh++) {
        int b = bh / NH, h = bh % NH;
        const float *q = qkv + (size_t)b * T * C3 + h * hs;
        attention_head_forward(out + (size_t)b * T * C + h * hs, C, lse + (size_t)bh * T, q, C3, q + C, C3, q + 2 * C,
                               C3, T, 0, hs);
    }
}

void attention_backward(float *dqkv, const float *dout, const float *out, const float *qkv, const float *lse, int B,
                        int T, int C, int NH) {
    // dout and out are (B,T,C), qkv is (B,T,3C), lse is (B,NH,T); dqkv (B,T,3C) = (OVERWRITTEN)
    // Per key block (in order), per query block at or after it: recompute P = exp(S - lse), then
    //   dV (+)= P^T dO;  dP = dO V^T;  dS = P (dP - D) scale with D = rowsum(dO * O);
    //   dQ (+)= dS K;  dK (+)= dS^T Q.
    // The first contribution to an element is written, later ones added: dV and dK of key block
    // k0 first at q0 == k0, dQ of query block q0 first at k0 == 0 (every block has both).
    assert(NH > 0 && C % NH == 0 && "attention_backward: C must be a multiple of NH");
    int hs = C / NH, C3 = 3 * C;
    int fast = use_512(hs);
    (void)fast;
#pragma omp parallel for schedule(static)
    for (int bh = 0; bh < B * NH; bh++) {
        int b = bh / NH, h = bh % NH;
        const float *q = qkv + (size_t)b * T * C3 + h * hs, *k = q + C, *v = q + 2 * C;
        float *dq = dqkv + (size_t)b * T * C3 + h * hs, *dk = dq + C, *dv = dq + 2 * C;
        const float *dO = dout + (size_t)b * T * C + h * hs, *O = out + (size_t)b * T * C + h * hs;
        const float *lrow = lse + (size_t)bh * T;
#ifdef KERNELS_X86
        if (fast) {
            head_backward_512(dq, dk, dv, dO, O, q, k, v, lrow, T, C3, C);
            continue;
        }
#endif
        head_backward_plain(dq, dk, dv, dO, O, q, k, v, lrow, T, hs, C3, C);
    }
}
