// matmul.c — defines matmul_forward and matmul_backward (linear layer, OpenMP over output blocks, gemm per block).
#include "kernels.h"

#include <assert.h>
#include <omp.h>

// Splits a (rows, cols) output among nt threads: contiguous row chunks (one gemm call,
// one packing of the weight panel per thread), or column chunks when there are too few
// rows to share. The tiling never changes a result: gemm sums each element in the same
// order wherever it sits, so outputs are independent of the thread count.
static void split_output(int rows, int cols, int nt, int *rb, int *cb) {
    if (nt <= 1 || rows >= 32 * nt || cols < 64 * nt) {
        *rb = (rows + nt - 1) / nt;
        *cb = cols;
    } else {
        *rb = rows;
        *cb = ((cols + nt - 1) / nt + 31) / 32 * 32;
    }
    if (*rb < 1) *rb = 1;
    if (*cb < 1) *cb = 1;
}

void matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N, int C, int OC) {
    // inp is (N,C), weight is (OC,C), bias is (OC) or NULL; out is (N,OC)
    assert(N >= 0 && C > 0 && OC > 0 && "matmul_forward: bad dimensions");
    if (N == 0) return;
    int rb, cb;
    split_output(N, OC, omp_get_max_threads(), &rb, &cb);
    int n_rt = (N + rb - 1) / rb, n_ct = (OC + cb - 1) / cb;
#pragma omp parallel for schedule(static)
    for (int tile = 0; tile < n_rt * n_ct; tile++) {
        int r0 = (tile / n_ct) * rb, c0 = (tile % n_ct) * cb;
        int nr = N - r0 < rb ? N - r0 : rb, nc = OC - c0 < cb ? OC - c0 : cb;
        float *o = out + (size_t)r0 * OC + c0;
        if (bias)
            for (int i = 0; i < nr; i++)
                for (int j = 0; j < nc; j++) o[(size_t)i * OC + j] = bias[c0 + j];
        gemm(0, 1, nr, nc, C, 1.0f, inp + (size_t)r0 * C, C, weight + (size_t)c0 * C, C, bias ? 1.0f : 0.0f, o, OC);
    }
}

void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, int N, int C, int OC) {
    // dout is (N,OC), inp is (N,C), weight is (OC,C);
    // dinp (N,C) +=, dweight (OC,C) +=, dbias (OC) += (may be NULL)
    assert(N >= 0 && C > 0 && OC > 0 && "matmul_backward: bad dimensions");
    if (N == 0) return;
    int nt = omp_get_max_threads();
    int rb_i, cb_i, rb_w, cb_w;
    split_output(N, C, nt, &rb_i, &cb_i);    // dinp tiles
    split_output(OC, C, nt, &rb_w, &cb_w);   // dweight tiles
    int nrt_i = (N + rb_i - 1) / rb_i, nct_i = (C + cb_i - 1) / cb_i;
    int nrt_w = (OC + rb_w - 1) / rb_w, nct_w = (C + cb_w - 1) / cb_w;
    enum { DBIAS_CHUNK = 64 };
    int n_bias_chunks = dbias ? (OC + DBIAS_CHUNK - 1) / DBIAS_CHUNK : 0;
#pragma omp parallel
    {
        // dinp (N,C) += dout (N,OC) @ weight (OC,C)
#pragma omp for schedule(static) nowait
        for (int tile = 0; tile < nrt_i * nct_i; tile++) {
            int r0 = (tile / nct_i) * rb_i, c0 = (tile % nct_i) * cb_i;
            int nr = N - r0 < rb_i ? N - r0 : rb_i, nc = C - c0 < cb_i ? C - c0 : cb_i;
            gemm(0, 0, nr, nc, OC, 1.0f, dout + (size_t)r0 * OC, OC, weight + c0, C, 1.0f,
                 dinp + (size_t)r0 * C + c0, C);
        }
        // dweight (OC,C) += dout^T (OC,N) @ inp (N,C); each element sums over N in order
#pragma omp for schedule(static) nowait
        for (int tile = 0; tile < nrt_w * nct_w; tile++) {
            int o0 = (tile / nct_w) * rb_w, c0 = (tile % nct_w) * cb_w;
            int no = OC - o0 < rb_w ? OC - o0 : rb_w, nc = C - c0 < cb_w ? C - c0 : cb_w;
            gemm(1, 0, no, nc, N, 1.0f, dout + o0, OC, inp + c0, C, 1.0f, dweight + (size_t)o0 * C + c0, C);
        }
        // dbias (OC) += column sums of dout, each summed over N in order (double accumulators)
#pragma omp for schedule(static)
        for (int chunk = 0; chunk < n_bias_chunks; chunk++) {
            int o0 = chunk * DBIAS_CHUNK, no = OC - o0 < DBIAS_CHUNK ? OC - o0 : DBIAS_CHUNK;
            double acc[DBIAS_CHUNK] = {0};
            for (int n = 0; n < N; n++) {
                const float *d = dout + (size_t)n * OC + o0;
                for (int j = 0; j < no; j++) acc[j] += d[j];
            }
            for (int j = 0; j < no; j++) dbias[o0 + j] += (float)acc[j];
        }
    }
}
