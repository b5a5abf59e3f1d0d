// matmul.c — defines matmul_forward, matmul_forward_gelu and matmul_backward (linear layer: all
// three products on the packed GEMM engine, OpenMP over output tiles; bias and GELU fused into
// the forward's epilogue).
#include "kernels_internal.h"

#include <assert.h>
#include <omp.h>

static const gemm_ukernel *f32_row(void) {
    const gemm_ukernel *uk = gemm_ukernel_pick(KERNELS_OP_GEMM_F32, KERNELS_F32, KERNELS_F32);
    assert(uk && "matmul: no fp32 micro-kernel row for the chosen path");
    return uk;
}

void matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N, int C, int OC) {
    // inp is (N,C), weight is (OC,C), bias is (OC) or NULL; out is (N,OC)
    assert(N >= 0 && C > 0 && OC > 0 && "matmul_forward: bad dimensions");
    gemm_epilogue ep = {.bias = bias};
    gemm_parallel(0, 1, N, OC, C, 1.0f, inp, C, weight, C, 0.0f, out, OC, &ep);
}

void matmul_forward_gelu(float *out, float *out_gelu, const float *inp, const float *weight, const float *bias, int N,
                         int C, int OC) {
    // inp is (N,C), weight is (OC,C), bias is (OC) or NULL; out (N,OC) = inp @ weight^T + bias,
    // out_gelu (N,OC) = gelu(out), written tile by tile while the tile is in cache
    assert(N >= 0 && C > 0 && OC > 0 && "matmul_forward_gelu: bad dimensions");
    gemm_epilogue ep = {.bias = bias, .gelu_out = out_gelu, .ldg = OC};
    gemm_parallel(0, 1, N, OC, C, 1.0f, inp, C, weight, C, 0.0f, out, OC, &ep);
}

void matmul_forward_part(float *out, float *out_gelu, const float *inp, const float *weight, const float *bias, int N,
                         int C, int OC, int part, int parts) {
    assert(N >= 0 && C > 0 && OC > 0 && "matmul_forward_part: bad dimensions");
    gemm_operand a = {.p = inp, .ld = C}, b = {.p = weight, .ld = C, .trans = 1};
    gemm_epilogue ep = {.bias = bias, .gelu_out = out_gelu, .ldg = OC};
    gemm_run_part(f32_row(), part, parts, N, OC, C, 1.0f, &a, &b, 0.0f, out, OC, &ep);
}

int matmul_packed_width(void) { return f32_row()->nr; }

size_t matmul_packed_bytes(int OC, int C) { return gemm_packed_bytes(f32_row(), OC, C, 0); }

void matmul_pack_weight(void *dst, const float *weight, int OC, int C) {
    // op(B) = weight^T (C,OC), as the forward reads it
    gemm_operand b = {.p = weight, .ld = C, .trans = 1};
    gemm_pack_b_whole(f32_row(), dst, &b, OC, C);
}

// The packed forward through gemm_run_parallel (parts 0) or share `part` of `parts`.
static void forward_packed(float *out, float *out_gelu, const float *inp, const void *wp, int width, const float *bias,
                           int N, int C, int OC, int part, int parts) {
    assert(N >= 0 && C > 0 && OC > 0 && "matmul_forward_packed: bad dimensions");
    const gemm_ukernel *uk = f32_row();
    assert(width == uk->nr && "matmul_forward_packed: packed for another fp32 path");
    (void)width;
    gemm_operand a = {.p = inp, .ld = C}, b = {.p = wp, .ld = C, .trans = 1, .packed = 1};
    gemm_epilogue ep = {.bias = bias, .gelu_out = out_gelu, .ldg = OC};
    if (parts == 0)
        gemm_run_parallel(uk, N, OC, C, 1.0f, &a, &b, 0.0f, out, OC, &ep);
    else
        gemm_run_part(uk, part, parts, N, OC, C, 1.0f, &a, &b, 0.0f, out, OC, &ep);
}

void matmul_forward_packed(float *out, float *out_gelu, const float *inp, const void *wp, int width, const float *bias,
                           int N, int C, int OC) {
    forward_packed(out, out_gelu, inp, wp, width, bias, N, C, OC, 0, 0);
}

void matmul_forward_packed_part(float *out, float *out_gelu, const float *inp, const void *wp, int width,
                                const float *bias, int N, int C, int OC, int part, int parts) {
    assert(parts >= 1 && "matmul_forward_packed_part: no parts");
    forward_packed(out, out_gelu, inp, wp, width, bias, N, C, OC, part, parts);
}

void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, int N, int C, int OC, int accumulate) {
    // dout is (N,OC), inp is (N,C), weight is (OC,C); dinp (N,C) =; dweight (OC,C) and dbias (OC)
    // (may be NULL) += when accumulate, else =
    assert(N >= 0 && C > 0 && OC > 0 && "matmul_backward: bad dimensions");
    if (N == 0) return;
    // dinp (N,C) = dout (N,OC) @ weight (OC,C): beta 0, the old contents are never read
    gemm_parallel(0, 0, N, C, OC, 1.0f, dout, OC, weight, C, 0.0f, dinp, C, NULL);
    // dweight (OC,C) (+)= dout^T (OC,N) @ inp (N,C); each element sums over N in order
    gemm_parallel(1, 0, OC, C, N, 1.0f, dout, OC, inp, C, accumulate ? 1.0f : 0.0f, dweight, C, NULL);
    if (dbias) matmul_dbias(dbias, dout, N, OC, accumulate);
}

void matmul_dbias(float *dbias, const float *dout, int N, int OC, int accumulate) {
    // dbias (OC) (+)= column sums of dout (N,OC), each summed over N in order (double accumulators)
    enum { DBIAS_CHUNK = 64 };
    int n_bias_chunks = (OC + DBIAS_CHUNK - 1) / DBIAS_CHUNK;
#pragma omp parallel for schedule(static)
    for (int chunk = 0; chunk < n_bias_chunks; chunk++) {
        int o0 = chunk * DBIAS_CHUNK, no = OC - o0 < DBIAS_CHUNK ? OC - o0 : DBIAS_CHUNK;
        double acc[DBIAS_CHUNK] = {0};
        for (int n = 0; n < N; n++) {
            const float *d = dout + (size_t)n * OC + o0;
            for (int j = 0; j < no; j++) acc[j] += d[j];
        }
        for (int j = 0; j < no; j++) dbias[o0 + j] = accumulate ? dbias[o0 + j] + (float)acc[j] : (float)acc[j];
    }
}
