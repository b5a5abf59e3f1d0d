// ops.c — defines the model's ops (op_*): each kernel call timed by the profiler with its FLOP
// and byte formula, and the linear layers' dispatch on the weight's dtype.
#include "ops.h"

#include <string.h>

#include "kernels.h"

// bytes of n floats
static inline double f32_bytes(double n) { return 4.0 * n; }

void op_encoder_forward(float *out, const int *inp, const float *wte, const float *wpe, int B, int T, int C) {
    double t = prof_start();
    encoder_forward(out, inp, wte, wpe, B, T, C);
    prof_stop("encoder", PROF_FWD, t, 0.0, f32_bytes(3.0 * B * T * C));
}

void op_encoder_backward(float *dwte, float *dwpe, const float *dout, const int *inp, int B, int T, int C) {
    double t = prof_start();
    encoder_backward(dwte, dwpe, dout, inp, B, T, C);
    prof_stop("encoder", PROF_BWD, t, 0.0, f32_bytes(5.0 * B * T * C));
}

void op_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w, const float *b,
                          int N, int C) {
    double t = prof_start();
    layernorm_forward(out, mean, rstd, inp, w, b, N, C);
    prof_stop("layernorm", PROF_FWD, t, 0.0, f32_bytes(2.0 * N * C));
}

void op_residual_layernorm_forward(float *res, float *out, float *mean, float *rstd, const float *inp1,
                                   const float *inp2, const float *w, const float *b, int N, int C) {
    double t = prof_start();
    residual_layernorm_forward(res, out, mean, rstd, inp1, inp2, w, b, N, C);
    prof_stop("residual+layernorm", PROF_FWD, t, 0.0, f32_bytes(4.0 * N * C));
}

void op_layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                           const float *mean, const float *rstd, int N, int C) {
    double t = prof_start();
    layernorm_backward(dinp, dw, db, dout, inp, w, mean, rstd, N, C);
    prof_stop("layernorm", PROF_BWD, t, 0.0, f32_bytes(4.0 * N * C));
}

// The (OC,C) matrix `layer` of w in its dtype: the linear layers' dispatch. SM_F32 runs the fp32
// GEMM; SM_Q8 the INT8 GEMM on its int8 values and per-group scales; SM_BF16 the bf16 GEMM.
typedef struct {
    const float *f32;
    const uint16_t *bf16;
    const int8_t *q8;
    const float *scales;
    int group;
} matrix;

static matrix matrix_of(const sm_tensor *w, int layer, int C, int OC) {
    const size_t at = (size_t)layer * (size_t)OC * (size_t)C;
    SM_CHECK(at + (size_t)OC * (size_t)C <= w->n_elems, "linear layer '%s': matrix %d out of range", w->name, layer);
    switch (w->dtype) {
    case SM_F32: return (matrix){.f32 = w->ptr + at};
    case SM_BF16: return (matrix){.bf16 = (const uint16_t *)w->data + at};
    case SM_Q8: return (matrix){.q8 = (const int8_t *)w->data + at, .scales = w->scales + at / (size_t)w->group,
                                .group = w->group};
    default: sm_fatal(SM_EXIT_RUNTIME, "linear layer '%s': no kernel for dtype %d", w->name, (int)w->dtype);
    }
}

// reads inp (N,C) and W (OC,C) in its dtype, writes out (N,OC)
static double linear_bytes(const sm_tensor *w, int N, int C, int OC) {
    double wbytes = (double)OC * C * (double)SM_DTYPE_INFO[w->dtype].elem_bytes;
    if (w->dtype == SM_Q8) wbytes += 4.0 * (double)OC * C / w->group;
    return f32_bytes((double)N * C + (double)N * OC) + wbytes;
}

void op_linear_forward(const char *name, float *out, const float *inp, const sm_tensor *w, int layer,
                       const float *bias, int N, int C, int OC) {
    double t = prof_start();
    matrix m = matrix_of(w, layer, C, OC);
    if (m.q8)
        matmul_forward_q8(out, inp, m.q8, m.scales, bias, N, C, OC, m.group);
    else if (m.bf16)
        matmul_forward_bf16(out, inp, m.bf16, bias, N, C, OC);
    else
        matmul_forward(out, inp, m.f32, bias, N, C, OC);
    prof_stop_as(name, PROF_FWD, t, 2.0 * N * C * (double)OC, linear_bytes(w, N, C, OC), SM_DTYPE_INFO[w->dtype].name);
}

void op_linear_gelu_forward(const char *name, float *out, float *out_gelu, const float *inp, const sm_tensor *w,
                            int layer, const float *bias, int N, int C, int OC) {
    double t = prof_start();
    matrix m = matrix_of(w, layer, C, OC);
    if (m.q8)
        matmul_forward_q8_gelu(out, out_gelu, inp, m.q8, m.scales, bias, N, C, OC, m.group);
    else if (m.bf16)
        matmul_forward_bf16_gelu(out, out_gelu, inp, m.bf16, bias, N, C, OC);
    else
        matmul_forward_gelu(out, out_gelu, inp, m.f32, bias, N, C, OC);
    prof_stop_as(name, PROF_FWD, t, 2.0 * N * C * (double)OC, linear_bytes(w, N, C, OC) + f32_bytes((double)N * OC),
                 SM_DTYPE_INFO[w->dtype].name);
}

void op_linear_backward(const char *name, float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const sm_tensor *w, int layer, int N, int C, int OC, int accumulate) {
    double t = prof_start();
    matrix m = matrix_of(w, layer, C, OC);
    if (m.bf16)
        matmul_backward_bf16(dinp, dweight, dbias, dout, inp, m.bf16, N, C, OC, accumulate);
    else if (m.f32)
        matmul_backward(dinp, dweight, dbias, dout, inp, m.f32, N, C, OC, accumulate);
    else
        sm_fatal(SM_EXIT_RUNTIME, "linear layer '%s': no backward for %s weights", w->name, SM_DTYPE_INFO[w->dtype].name);
    // reads dout, inp, W (in its dtype; and dW when adding); writes dinp, dW
    double n = 2.0 * N * OC + 2.0 * N * C + (accumulate ? 2.0 : 1.0) * OC * (double)C;
    double wbytes = (double)OC * C * (double)SM_DTYPE_INFO[w->dtype].elem_bytes;
    prof_stop_as(name, PROF_BWD, t, 4.0 * N * C * (double)OC, f32_bytes(n) + wbytes, SM_DTYPE_INFO[w->dtype].name);
}

// causal attention: QK^T and PV over the T(T+1)/2 unmasked pairs of each head, 2 flops each
static double attention_flops(int B, int T, int C) { return 2.0 * B * C * (double)T * (T + 1); }

void op_attention_forward(float *out, float *lse, const float *qkv, int B, int T, int C, int NH, sm_dtype prec) {
    double t = prof_start();
    if (prec == SM_BF16)
        attention_forward_bf16(out, lse, qkv, B, T, C, NH);
    else
        attention_forward(out, lse, qkv, B, T, C, NH);
    prof_stop_as("attention", PROF_FWD, t, attention_flops(B, T, C), f32_bytes(4.0 * B * T * C + (double)B * NH * T),
                 SM_DTYPE_INFO[prec].name);
}

void op_attention_backward(float *dqkv, const float *dout, const float *out, const float *qkv, const float *lse,
                           int B, int T, int C, int NH, sm_dtype prec) {
    double t = prof_start();
    if (prec == SM_BF16)
        attention_backward_bf16(dqkv, dout, out, qkv, lse, B, T, C, NH);
    else
        attention_backward(dqkv, dout, out, qkv, lse, B, T, C, NH);
    // recomputes the scores and probabilities, then dP, dS, dQ, dK, dV: 2.5x the forward's products
    prof_stop_as("attention", PROF_BWD, t, 2.5 * attention_flops(B, T, C), f32_bytes(11.0 * B * T * C),
                 SM_DTYPE_INFO[prec].name);
}

void op_attention_cached(float *out, const float *qkv, float *kcache, float *vcache, const int *rows, const int *pos,
                         int n_rows, int T, int C, int NH, int maxT, sm_dtype prec) {
    double t = prof_start();
    const int hs = C / NH, C3 = 3 * C;
    for (int i = 0; i < n_rows; i++) {
        const size_t at = (size_t)rows[i] * maxT + (size_t)pos[rows[i]];
        for (int j = 0; j < T; j++) {
            const float *src = qkv + ((size_t)i * T + j) * C3;
            memcpy(kcache + (at + j) * C, src + C, (size_t)C * sizeof(float));
            memcpy(vcache + (at + j) * C, src + 2 * C, (size_t)C * sizeof(float));
        }
    }
    double pairs = 0.0, keys = 0.0;   // query-key pairs (each new query against the row's keys up to
    for (int i = 0; i < n_rows; i++) {   // itself), and the cached positions each row reads
        pairs += (double)T * pos[rows[i]] + 0.5 * T * (T + 1.0);
        keys += (double)pos[rows[i]] + T;
    }
#pragma omp parallel for schedule(static)
    for (int ih = 0; ih < n_rows * NH; ih++) {
        const int i = ih / NH, h = ih % NH;
        const size_t base = (size_t)rows[i] * maxT * C + (size_t)h * hs;
        float *o = out + (size_t)i * T * C + (size_t)h * hs;
        const float *q = qkv + (size_t)i * T * C3 + h * hs;
        if (prec == SM_BF16)
            attention_head_forward_bf16(o, C, NULL, q, C3, kcache + base, C, vcache + base, C, T, pos[rows[i]], hs);
        else
            attention_head_forward(o, C, NULL, q, C3, kcache + base, C, vcache + base, C, T, pos[rows[i]], hs);
    }
    // QK^T and PV: 2 products of hs per pair and head; reads each row's cached keys and values and
    // the new q, k, v; writes the new k, v and out
    prof_stop_as("attention", PROF_FWD, t, 4.0 * hs * NH * pairs, f32_bytes(2.0 * keys * C + 6.0 * n_rows * T * C),
                 SM_DTYPE_INFO[prec].name);
}

void op_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n) {
    double t = prof_start();
    gelu_backward(dinp, inp, dout, n);
    prof_stop("gelu", PROF_BWD, t, 0.0, f32_bytes(3.0 * (double)n));   // reads inp, dout; writes dinp
}

double op_softmax_xent(float *losses, float *dlogits, const float *logits, const int *targets, int N, int V, int Vp,
                       float dloss) {
    double t = prof_start();
    double sum = softmax_xent(losses, dlogits, logits, targets, N, V, Vp, dloss);
    prof_stop("softmax_xent", PROF_FWD, t, 0.0, f32_bytes((dlogits ? 2.0 : 1.0) * (double)N * Vp));
    return sum;
}

void op_clear(const char *name, prof_phase phase, float *x, size_t n) {
    double t = prof_start();
    memset(x, 0, n * sizeof(float));
    prof_stop(name, phase, t, 0.0, f32_bytes((double)n));
}
