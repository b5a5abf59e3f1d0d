// lm_head.c — defines lm_head_backward: the tied LM head's backward (both of its matrix products)
// fused with the loss gradient, which it recomputes block by block instead of reading a dlogits
// matrix from memory.
#include "kernels_internal.h"

#include <assert.h>
#include <omp.h>

// The blocks: KB vocabulary columns (the GEMM row's K slice of dinp = dlogits @ wte) x KB rows (its
// K slice of dwte = dlogits^T @ inp). Each block of dlogits is computed once, by all the threads
// (each a share of its rows), into one of two buffers, and used by both products while it is in
// cache; each thread owns a range of columns of dinp and dwte (so each output element has one
// writer, and sums over the blocks in the order the unfused products sum over their K slices:
// the same bits). Two buffers, one barrier per block: a thread filling the next block's buffer
// cannot overtake a thread still multiplying with the previous one.
enum { LM_MAX_KB = 256 };

void lm_head_backward(float *dinp, float *dwte, const float *logits, const float *row_max, const float *row_inv,
                      const int *targets, const float *inp, const float *wte, int N, int C, int V, int Vp, float dloss,
                      int accumulate) {
    // logits (N,Vp), row_max, row_inv, targets (N), inp (N,C), wte (Vp,C); dinp (N,C) =; dwte (Vp,C) (+)=
    assert(N >= 0 && C > 0 && V > 0 && Vp >= V && "lm_head_backward: bad dimensions");
    if (N == 0) return;
    const gemm_ukernel *uk = gemm_ukernel_pick(KERNELS_OP_GEMM_F32, KERNELS_F32, KERNELS_F32);
    assert(uk && uk->kc <= LM_MAX_KB && "lm_head_backward: the fp32 row's K slice outgrows the block buffers");
    const int KB = uk->kc, NR = uk->nr;
    const int n_vb = (Vp + KB - 1) / KB, n_rb = (N + KB - 1) / KB, col_units = (C + NR - 1) / NR;
    _Alignas(64) float buf[2][LM_MAX_KB * LM_MAX_KB];   // (KB,KB) each, row stride KB
#pragma omp parallel
    {
        const int nt = omp_get_num_threads(), t = omp_get_thread_num();
        int c0 = (int)((long)col_units * t / nt) * NR, c1 = (int)((long)col_units * (t + 1) / nt) * NR;
        if (c1 > C) c1 = C;
        // dwte's B operand, inp[:, c0:c1], is the same for every vocabulary block: packed once when it
        // is one K slice and one column block (N <= KB rows, c1 - c0 <= the row's NC), else per block
        _Alignas(64) float inp_packed[GEMM_B_BYTES / sizeof(float)];
        const int inp_once = n_rb == 1 && c1 > c0 && c1 - c0 <= uk->nc;
        gemm_operand inp_op = {.p = inp + c0, .ld = C};
        if (inp_once) uk->pack_b(inp_packed, &inp_op, 0, N, 0, c1 - c0);
        int it = 0;
        for (int vb = 0; vb < n_vb; vb++) {
            const int v0 = vb * KB, nv = Vp - v0 < KB ? Vp - v0 : KB;
            for (int rb = 0; rb < n_rb; rb++, it++) {
                const int r0 = rb * KB, nr = N - r0 < KB ? N - r0 : KB;
                float *P = buf[it & 1];   // dlogits[r0:r0+nr, v0:v0+nv]
                int p0 = r0 + (int)((long)nr * t / nt), p1 = r0 + (int)((long)nr * (t + 1) / nt);
                softmax_xent_grad_block(P + (size_t)(p0 - r0) * KB, KB, logits, Vp, row_max, row_inv, targets, p0, p1,
                                        v0, v0 + nv, V, dloss);
#pragma omp barrier
                if (c1 <= c0) continue;
                // dinp[r0:r0+nr, c0:c1] (=, then +=) P (nr,nv) @ wte[v0:v0+nv, c0:c1]
                gemm_operand a = {.p = P, .ld = KB}, b = {.p = wte + (size_t)v0 * C + c0, .ld = C};
                gemm_run(uk, nr, c1 - c0, nv, 1.0f, &a, &b, vb == 0 ? 0.0f : 1.0f, dinp + (size_t)r0 * C + c0, C, NULL);
                // dwte[v0:v0+nv, c0:c1] (=, or += when accumulating, then +=) P^T (nv,nr) @ inp[r0:r0+nr, c0:c1]
                gemm_operand at = {.p = P, .ld = KB, .trans = 1}, bi = {.p = inp + (size_t)r0 * C + c0, .ld = C};
                float beta = rb > 0 || accumulate ? 1.0f : 0.0f;
                if (inp_once)
                    gemm_run_packed_b(uk, nv, c1 - c0, nr, 1.0f, &at, inp_packed, beta, dwte + (size_t)v0 * C + c0, C);
                else
                    gemm_run(uk, nv, c1 - c0, nr, 1.0f, &at, &bi, beta, dwte + (size_t)v0 * C + c0, C, NULL);
            }
        }
    }
}
