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

// The (OC,C) matrix `layer` of w, as float32 (the only dtype the kernels take today; other dtypes
// are refused here, where their kernels will be dispatched).
static const float *f32_matrix(const sm_tensor *w, int layer, int C, int OC) {
    SM_CHECK(w->dtype == SM_F32, "linear layer '%s': no kernel for %s weights", w->name, SM_DTYPE_INFO[w->dtype].name);
    SM_CHECK((size_t)(layer + 1) * (size_t)OC * (size_t)C <= w->n_elems, "linear layer '%s': matrix %d out of range",
             w->name, layer);
    return w->ptr + (size_t)layer * (size_t)OC * (size_t)C;
}

// reads inp (N,C) and W (OC,C), writes out (N,OC)
static double linear_bytes(int N, int C, int OC) { return f32_bytes((double)N * C + (double)OC * C + (double)N * OC); }

void op_linear_forward(const char *name, float *out, const float *inp, const sm_tensor *w, int layer,
                       const float *bias, int N, int C, int OC) {
    double t = prof_start();
    matmul_forward(out, inp, f32_matrix(w, layer, C, OC), bias, N, C, OC);
    prof_stop(name, PROF_FWD, t, 2.0 * N * C * (double)OC, linear_bytes(N, C, OC));
}

void op_linear_gelu_forward(const char *name, float *out, float *out_gelu, const float *inp, const sm_tensor *w,
                            int layer, const float *bias, int N, int C, int OC) {
    double t = prof_start();
    matmul_forward_gelu(out, out_gelu, inp, f32_matrix(w, layer, C, OC), bias, N, C, OC);
    prof_stop(name, PROF_FWD, t, 2.0 * N * C * (double)OC, linear_bytes(N, C, OC) + f32_bytes((double)N * OC));
}

void op_linear_backward(const char *name, float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, int N, int C, int OC, int accumulate) {
    double t = prof_start();
    matmul_backward(dinp, dweight, dbias, dout, inp, weight, N, C, OC, accumulate);
    // reads dout, inp, W (and dW when adding); writes dinp, dW
    double n = 2.0 * N * OC + 2.0 * N * C + (accumulate ? 3.0 : 2.0) * OC * (double)C;
    prof_stop(name, PROF_BWD, t, 4.0 * N * C * (double)OC, f32_bytes(n));
}

// causal attention: QK^T and PV over the T(T+1)/2 unmasked pairs of each head, 2 flops each
static double attention_flops(int B, int T, int C) { return 2.0 * B * C * (double)T * (T + 1); }

void op_attention_forward(float *out, float *lse, const float *qkv, int B, int T, int C, int NH) {
    double t = prof_start();
    attention_forward(out, lse, qkv, B, T, C, NH);
    prof_stop("attention", PROF_FWD, t, attention_flops(B, T, C), f32_bytes(4.0 * B * T * C + (double)B * NH * T));
}

void op_attention_backward(float *dqkv, const float *dout, const float *out, const float *qkv, const float *lse,
                           int B, int T, int C, int NH) {
    double t = prof_start();
    attention_backward(dqkv, dout, out, qkv, lse, B, T, C, NH);
    // recomputes the scores and probabilities, then dP, dS, dQ, dK, dV: 2.5x the forward's products
    prof_stop("attention", PROF_BWD, t, 2.5 * attention_flops(B, T, C), f32_bytes(11.0 * B * T * C));
}

void op_attention_cached(float *out, const float *qkv, float *kcache, float *vcache, const int *rows, const int *pos,
                         int n_rows, int T, int C, int NH, int maxT) {
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
        attention_head_forward(out + (size_t)i * T * C + (size_t)h * hs, C, NULL, qkv + (size_t)i * T * C3 + h * hs,
                               C3, kcache + base, C, vcache + base, C, T, pos[rows[i]], hs);
    }
    // QK^T and PV: 2 products of hs per pair and head; reads each row's cached keys and values and
    // the new q, k, v; writes the new k, v and out
    prof_stop("attention", PROF_FWD, t, 4.0 * hs * NH * pairs, f32_bytes(2.0 * keys * C + 6.0 * n_rows * T * C));
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

double op_softmax_xent_stats(float *losses, float *row_max, float *row_inv, const float *logits, const int *targets,
                             int N, int V, int Vp) {
    double t = prof_start();
    double sum = softmax_xent_stats(losses, row_max, row_inv, logits, targets, N, V, Vp);
    prof_stop("softmax_xent", PROF_FWD, t, 0.0, f32_bytes((double)N * Vp));
    return sum;
}

void op_lm_head_backward(float *dinp, float *dwte, const float *logits, const float *row_max, const float *row_inv,
                         const int *targets, const float *inp, const float *wte, int N, int C, int V, int Vp,
                         float dloss, int accumulate) {
    double t = prof_start();
    lm_head_backward(dinp, dwte, logits, row_max, row_inv, targets, inp, wte, N, C, V, Vp, dloss, accumulate);
    // reads the logits, inp, wte (and dwte when adding); writes dinp, dwte
    double n = (double)N * Vp + 2.0 * N * C + (accumulate ? 3.0 : 2.0) * Vp * (double)C;
    prof_stop("matmul.lm_head", PROF_BWD, t, 4.0 * N * C * (double)Vp, f32_bytes(n));
}

void op_clear(const char *name, prof_phase phase, float *x, size_t n) {
    double t = prof_start();
    memset(x, 0, n * sizeof(float));
    prof_stop(name, phase, t, 0.0, f32_bytes((double)n));
}
