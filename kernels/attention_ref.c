// attention_ref.c — defines attention_forward_ref and attention_backward_ref: causal multi-head
// self-attention as batched matrix products over the whole (T,T) probability matrix (the oracle
// the flash-attention kernels in attention.c are tested against).
#include "kernels.h"
#include "kernels_internal.h"

#include <assert.h>
#include <math.h>

// Rows are processed in blocks of ATT_TB: a row block [t0,t1) only needs key columns
// [0,t1), so the matrix products skip the masked upper triangle except inside the
// diagonal block (where the softmax overwrites them with 0).
#define ATT_TB 64

void attention_forward_ref(float *out, float *att, const float *qkv, int B, int T, int C, int NH) {
    // qkv is (B,T,3C) = [q | k | v], each split into NH heads of hs = C/NH columns;
    // out is (B,T,C), att is (B,NH,T,T) (softmax probabilities, 0 above the diagonal)
    assert(NH > 0 && C % NH == 0 && "attention_forward_ref: C must be a multiple of NH");
    int hs = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
#pragma omp parallel for schedule(static)
    for (int bh = 0; bh < B * NH; bh++) {
        int b = bh / NH, h = bh % NH;
        const float *q = qkv + (size_t)b * T * C3 + h * hs, *k = q + C, *v = q + 2 * C;
        float *a = att + (size_t)bh * T * T;
        float *o = out + (size_t)b * T * C + h * hs;
        for (int t0 = 0; t0 < T; t0 += ATT_TB) {
            int t1 = T - t0 < ATT_TB ? T : t0 + ATT_TB, nt = t1 - t0;
            // scores S[t0:t1, 0:t1] = scale * Q[t0:t1] K[0:t1]^T
            gemm(0, 1, nt, t1, hs, scale, q + (size_t)t0 * C3, C3, k, C3, 0.0f, a + (size_t)t0 * T, T);
            // fused masked softmax: row t uses columns 0..t; exp() is never taken above the
            // diagonal, which gets 0 (also for columns >= t1 that the gemm did not write)
            for (int t = t0; t < t1; t++) {
                float *row = a + (size_t)t * T;
                float mx = row_max(row, t + 1);
                float sum = exp_shift_sum(row, t + 1, t + 1, mx);
                float inv = 1.0f / sum;
                for (int j = 0; j <= t; j++) row[j] *= inv;
                for (int j = t + 1; j < T; j++) row[j] = 0.0f;
            }
            // O[t0:t1] = P[t0:t1, 0:t1] V[0:t1]
            gemm(0, 0, nt, hs, t1, 1.0f, a + (size_t)t0 * T, T, v, C3, 0.0f, o + (size_t)t0 * C, C);
        }
    }
}

void attention_backward_ref(float *dqkv, float *datt, const float *dout, const float *qkv, const float *att, int B,
                        int T, int C, int NH) {
    // dout is (B,T,C), qkv is (B,T,3C), att is (B,NH,T,T); dqkv (B,T,3C) +=;
    // datt (B,NH,T,T) is scratch: overwritten (only its causal blocks are touched)
    assert(NH > 0 && C % NH == 0 && "attention_backward_ref: C must be a multiple of NH");
    int hs = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
#pragma omp parallel for schedule(static)
    for (int bh = 0; bh < B * NH; bh++) {
        int b = bh / NH, h = bh % NH;
        const float *q = qkv + (size_t)b * T * C3 + h * hs, *k = q + C, *v = q + 2 * C;
        float *dq = dqkv + (size_t)b * T * C3 + h * hs, *dk = dq + C, *dv = dq + 2 * C;
        const float *p = att + (size_t)bh * T * T;
        float *ds = datt + (size_t)bh * T * T;
        const float *dO = dout + (size_t)b * T * C + h * hs;
        // Row blocks: dP = dO V^T, then dS = P * (dP - rowsum(P * dP)) * scale, then dQ += dS K.
        for (int t0 = 0; t0 < T; t0 += ATT_TB) {
            int t1 = T - t0 < ATT_TB ? T : t0 + ATT_TB, nt = t1 - t0;
            gemm(0, 1, nt, t1, hs, 1.0f, dO + (size_t)t0 * C, C, v, C3, 0.0f, ds + (size_t)t0 * T, T);
            for (int t = t0; t < t1; t++) {
                const float *pr = p + (size_t)t * T;
                float *dr = ds + (size_t)t * T;
                float pdp = dot(pr, dr, t + 1);
                for (int j = 0; j <= t; j++) dr[j] = pr[j] * (dr[j] - pdp) * scale;
                for (int j = t + 1; j < t1; j++) dr[j] = 0.0f;   // masked part of the diagonal block
            }
            gemm(0, 0, nt, hs, t1, 1.0f, ds + (size_t)t0 * T, T, k, C3, 1.0f, dq + (size_t)t0 * C3, C3);
        }
        // Column blocks [j0,j1): only rows t >= j0 are non-zero there (blocks aligned with the
        // row blocks above, so every element read was written):
        //   dV[j0:j1] += P[j0:T, j0:j1]^T dO[j0:T];  dK[j0:j1] += dS[j0:T, j0:j1]^T Q[j0:T]
        for (int j0 = 0; j0 < T; j0 += ATT_TB) {
            int j1 = T - j0 < ATT_TB ? T : j0 + ATT_TB, nj = j1 - j0, nr = T - j0;
            gemm(1, 0, nj, hs, nr, 1.0f, p + (size_t)j0 * T + j0, T, dO + (size_t)j0 * C, C, 1.0f,
                 dv + (size_t)j0 * C3, C3);
            gemm(1, 0, nj, hs, nr, 1.0f, ds + (size_t)j0 * T + j0, T, q + (size_t)j0 * C3, C3, 1.0f,
                 dk + (size_t)j0 * C3, C3);
        }
    }
}
