// ops.c — defines the model's ops (op_*): each kernel call timed by the profiler with its FLOP
// and byte formula, and the linear layers' dispatch on the weight's dtype.
#include "ops.h"

#include <omp.h>
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
    const float *f32p;   // SM_F32P: the matrix's panels, of width `group`
    const void *q8p;     // SM_Q8P: the matrix as the INT8 path packs it (quantisation group `group`)
} matrix;

static matrix matrix_of(const sm_tensor *w, int layer, int C, int OC) {
    const size_t at = (size_t)layer * (size_t)OC * (size_t)C;
    SM_CHECK(at + (size_t)OC * (size_t)C <= w->n_elems, "linear layer '%s': matrix %d out of range", w->name, layer);
    switch (w->dtype) {
    case SM_F32: return (matrix){.f32 = w->ptr + at};
    case SM_BF16: return (matrix){.bf16 = (const uint16_t *)w->data + at};
    case SM_Q8: return (matrix){.q8 = (const int8_t *)w->data + at, .scales = w->scales + at / (size_t)w->group,
                                .group = w->group};
    case SM_Q8P: {   // the tensor's matrices, each the same number of bytes
        const size_t per = w->n_bytes / (w->n_elems / ((size_t)OC * (size_t)C));
        return (matrix){.q8p = (const char *)w->data + (size_t)layer * per, .group = w->group};
    }
    case SM_F32P: {   // matrices of ceil(OC/width)*width padded rows
        const size_t padded = ((size_t)OC + (size_t)w->group - 1) / (size_t)w->group * (size_t)w->group;
        return (matrix){.f32p = (const float *)w->data + (size_t)layer * padded * (size_t)C, .group = w->group};
    }
    default: sm_fatal(SM_EXIT_RUNTIME, "linear layer '%s': no kernel for dtype %d", w->name, (int)w->dtype);
    }
}

// reads inp (N,C) and W (OC,C) in its dtype, writes out (N,OC)
static double linear_bytes(const sm_tensor *w, int N, int C, int OC) {
    double wbytes = (double)OC * C * (double)SM_DTYPE_INFO[w->dtype].elem_bytes;
    if (w->dtype == SM_Q8 || w->dtype == SM_Q8P) wbytes += 4.0 * (double)OC * C / w->group;
    return f32_bytes((double)N * C + (double)N * OC) + wbytes;
}

void op_linear_forward(const char *name, float *out, const float *inp, const sm_tensor *w, int layer,
                       const float *bias, int N, int C, int OC) {
    double t = prof_start();
    matrix m = matrix_of(w, layer, C, OC);
    if (m.q8)
        matmul_forward_q8(out, inp, m.q8, m.scales, bias, N, C, OC, m.group);
    else if (m.f32p)
        matmul_forward_packed(out, NULL, inp, m.f32p, m.group, bias, N, C, OC);
    else if (m.q8p)
        matmul_forward_q8_packed(out, NULL, inp, m.q8p, bias, N, C, OC, m.group);
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
    else if (m.f32p)
        matmul_forward_packed(out, out_gelu, inp, m.f32p, m.group, bias, N, C, OC);
    else if (m.q8p)
        matmul_forward_q8_packed(out, out_gelu, inp, m.q8p, bias, N, C, OC, m.group);
    else if (m.bf16)
        matmul_forward_bf16_gelu(out, out_gelu, inp, m.bf16, bias, N, C, OC);
    else
        matmul_forward_gelu(out, out_gelu, inp, m.f32, bias, N, C, OC);
    prof_stop_as(name, PROF_FWD, t, 2.0 * N * C * (double)OC, linear_bytes(w, N, C, OC) + f32_bytes((double)N * OC),
                 SM_DTYPE_INFO[w->dtype].name);
}

void op_linear_forward_team(const char *name, float *out, float *out_gelu, const float *inp, const sm_tensor *w,
                            int layer, const float *bias, int N, int C, int OC) {
    const int part = omp_get_thread_num(), parts = omp_get_num_threads();
    double t = prof_start();
    matrix m = matrix_of(w, layer, C, OC);
    if (m.q8)
        matmul_forward_q8_part(out, out_gelu, inp, m.q8, m.scales, bias, N, C, OC, m.group, part, parts);
    else if (m.f32p)
        matmul_forward_packed_part(out, out_gelu, inp, m.f32p, m.group, bias, N, C, OC, part, parts);
    else if (m.q8p)
        matmul_forward_q8_packed_part(out, out_gelu, inp, m.q8p, bias, N, C, OC, m.group, part, parts);
    else if (m.bf16)
        matmul_forward_bf16_part(out, out_gelu, inp, m.bf16, bias, N, C, OC, part, parts);
    else
        matmul_forward_part(out, out_gelu, inp, m.f32, bias, N, C, OC, part, parts);
#pragma omp barrier
    if (part == 0)
        prof_stop_as(name, PROF_FWD, t, 2.0 * N * C * (double)OC,
                     linear_bytes(w, N, C, OC) + (out_gelu ? f32_bytes((double)N * OC) : 0.0),
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

// Head h of one row's new position(s): its new keys and values into the row's cache (kc, vc: the
// row's (maxT,C)), then its T queries against the cache.
static void cached_head(float *o, const float *q, float *kc, float *vc, int pos, int T, int C, int h, int hs,
                        sm_dtype prec) {
    const int C3 = 3 * C;
    for (int j = 0; j < T; j++) {
        const float *src = q + (size_t)j * C3;   // q, k, v of position pos+j, head h
        memcpy(kc + (size_t)(pos + j) * C + (size_t)h * hs, src + C, (size_t)hs * sizeof(float));
        memcpy(vc + (size_t)(pos + j) * C + (size_t)h * hs, src + 2 * C, (size_t)hs * sizeof(float));
    }
    if (prec == SM_BF16)
        attention_head_forward_bf16(o, C, NULL, q, C3, kc + (size_t)h * hs, C, vc + (size_t)h * hs, C, T, pos, hs);
    else
        attention_head_forward(o, C, NULL, q, C3, kc + (size_t)h * hs, C, vc + (size_t)h * hs, C, T, pos, hs);
}

// QK^T and PV: 2 products of hs per pair and head, over each new query's keys (the row's cached
// positions up to itself); reads the cached keys and values and the new q, k, v; writes the new
// k, v and out
static void cached_prof(double t, double pairs, double keys, int n_rows, int T, int C, sm_dtype prec) {
    prof_stop_as("attention", PROF_FWD, t, 4.0 * C * pairs, f32_bytes(2.0 * keys * C + 6.0 * n_rows * T * C),
                 SM_DTYPE_INFO[prec].name);
}

void op_attention_cached(float *out, const float *qkv, float *kcache, float *vcache, const int *rows, const int *pos,
                         int n_rows, int T, int C, int NH, int maxT, sm_dtype prec) {
    double t = prof_start();
    const int hs = C / NH;
    double pairs = 0.0, keys = 0.0;   // query-key pairs (each new query against the row's keys up to
    for (int i = 0; i < n_rows; i++) {   // itself), and the cached positions each row reads
        pairs += (double)T * pos[rows[i]] + 0.5 * T * (T + 1.0);
        keys += (double)pos[rows[i]] + T;
    }
#pragma omp parallel for schedule(static)
    for (int ih = 0; ih < n_rows * NH; ih++) {
        const int i = ih / NH, h = ih % NH;
        const size_t row = (size_t)rows[i] * maxT * C;
        cached_head(out + (size_t)i * T * C + (size_t)h * hs, qkv + (size_t)i * T * 3 * C + (size_t)h * hs,
                    kcache + row, vcache + row, pos[rows[i]], T, C, h, hs, prec);
    }
    cached_prof(t, pairs, keys, n_rows, T, C, prec);
}

void op_attention_cached_team(float *out, const float *qkv, float *kcache, float *vcache, int pos, int C, int NH,
                              sm_dtype prec) {
    const int part = omp_get_thread_num(), parts = omp_get_num_threads(), hs = C / NH;
    double t = prof_start();
    for (int h = (int)((long)NH * part / parts); h < (int)((long)NH * (part + 1) / parts); h++)
        cached_head(out + (size_t)h * hs, qkv + (size_t)h * hs, kcache, vcache, pos, 1, C, h, hs, prec);
#pragma omp barrier
    if (part == 0) cached_prof(t, pos + 1.0, pos + 1.0, 1, 1, C, prec);
}

void op_encoder_forward_own(float *out, int token, int pos, const float *wte, const float *wpe, int C) {
    double t = prof_start();
    const float *we = wte + (size_t)token * C, *pe = wpe + (size_t)pos * C;
    for (int c = 0; c < C; c++) out[c] = we[c] + pe[c];   // encoder_forward's sum
    if (omp_get_thread_num() == 0) prof_stop("encoder", PROF_FWD, t, 0.0, f32_bytes(3.0 * C));
}

void op_layernorm_forward_own(float *out, float *mean, float *rstd, const float *inp, const float *w, const float *b,
                              int C) {
    double t = prof_start();
    layernorm_forward_serial(out, mean, rstd, inp, w, b, 1, C);
    if (omp_get_thread_num() == 0) prof_stop("layernorm", PROF_FWD, t, 0.0, f32_bytes(2.0 * C));
}

void op_residual_layernorm_forward_own(float *res, float *out, float *mean, float *rstd, const float *inp1,
                                       const float *inp2, const float *w, const float *b, int C) {
    double t = prof_start();
    residual_layernorm_forward_serial(res, out, mean, rstd, inp1, inp2, w, b, 1, C);
    if (omp_get_thread_num() == 0) prof_stop("residual+layernorm", PROF_FWD, t, 0.0, f32_bytes(4.0 * C));
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
