// attention.c — defines attention_head_forward, attention_forward and attention_backward: causal
// multi-head self-attention, flash-attention style (tiled, online softmax, O(T) memory per head,
// probabilities recomputed in backward).
#include "kernels_internal.h"

#include <assert.h>
#include <math.h>

// Blocks of ATT_B queries against blocks of ATT_B keys. Blocks whose keys all lie after the
// block's last query are never visited; inside a diagonal block the masked scores get
// probability 0 without an exp() of them. Results depend on the (fixed) block size, never on the
// thread count: heads are independent and each head's sums run in a fixed order.
#define ATT_B 64

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

void attention_head_forward(float *out, int ldo, float *lse, const float *q, int ldq, const float *k, int ldk,
                            const float *v, int ldv, int nq, int pos0, int hs) {
    // q is (nq,hs) at positions pos0..pos0+nq-1; k and v are (pos0+nq, hs); out is (nq,hs);
    // lse (nq) or NULL. Query i attends to keys 0..pos0+i.
    assert(nq >= 0 && pos0 >= 0 && hs > 0 && "attention_head_forward: bad dimensions");
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
#pragma omp parallel for schedule(static)
    for (int bh = 0; bh < B * NH; bh++) {
        int b = bh / NH, h = bh % NH;
        const float *q = qkv + (size_t)b * T * C3 + h * hs, *k = q + C, *v = q + 2 * C;
        float *dq = dqkv + (size_t)b * T * C3 + h * hs, *dk = dq + C, *dv = dq + 2 * C;
        const float *dO = dout + (size_t)b * T * C + h * hs, *O = out + (size_t)b * T * C + h * hs;
        const float *lrow = lse + (size_t)bh * T;
        head_backward_plain(dq, dk, dv, dO, O, q, k, v, lrow, T, hs, C3, C);
    }
}
