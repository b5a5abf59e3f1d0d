// gpt2.c — GPT-2 over named-tensor tables: shapes, init, forward, backward, AdamW.
#include "gpt2.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kernels.h"
#include "profile.h"

static const char *const PARAM_NAMES[NUM_PARAM_TENSORS] = {
    "wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
    "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb",
};
_Static_assert(sizeof PARAM_NAMES / sizeof PARAM_NAMES[0] == NUM_PARAM_TENSORS, "one name per parameter");

static const char *const ACT_NAMES[NUM_ACT_TENSORS] = {
    "encoded", "ln1", "ln1_mean", "ln1_rstd", "qkv", "atty", "att_lse", "attproj", "residual2",
    "ln2", "ln2_mean", "ln2_rstd", "fch", "fch_gelu", "fcproj", "residual3",
    "lnf", "lnf_mean", "lnf_rstd", "logits", "losses",
};
_Static_assert(sizeof ACT_NAMES / sizeof ACT_NAMES[0] == NUM_ACT_TENSORS, "one name per activation");

int gpt2_config_validate(sm_model_config *c, char *err, size_t errlen) {
    if (c->n_layer < 1 || c->n_layer > 1024) return snprintf(err, errlen, "--layers must be in 1..1024, got %d", c->n_layer), -1;
    if (c->n_head < 1) return snprintf(err, errlen, "--heads must be positive, got %d", c->n_head), -1;
    if (c->n_embd < 1 || c->n_embd > 65536) return snprintf(err, errlen, "--embd must be in 1..65536, got %d", c->n_embd), -1;
    if (c->n_embd % c->n_head != 0)
        return snprintf(err, errlen, "--heads %d does not divide --embd %d", c->n_head, c->n_embd), -1;
    if (c->max_seq_len < 1 || c->max_seq_len > 65536)
        return snprintf(err, errlen, "--context must be in 1..65536, got %d", c->max_seq_len), -1;
    if (c->vocab_size < 2 || c->vocab_size > 65536)
        return snprintf(err, errlen, "vocabulary size must be in 2..65536 (uint16 tokens), got %d", c->vocab_size), -1;
    c->padded_vocab_size = (c->vocab_size + 63) / 64 * 64;
    return 0;
}

int gpt2_param_decays(int i) {
    return i == P_WTE || i == P_WPE || i == P_QKVW || i == P_ATTPROJW || i == P_FCW || i == P_FCPROJW;
}

void gpt2_param_table(sm_table *tab, const sm_model_config *cfg) {
    size_t L = (size_t)cfg->n_layer, C = (size_t)cfg->n_embd, Vp = (size_t)cfg->padded_vocab_size;
    size_t maxT = (size_t)cfg->max_seq_len;
    const size_t shapes[NUM_PARAM_TENSORS][3] = {
        {Vp, C}, {maxT, C}, {L, C}, {L, C}, {L, 3 * C, C}, {L, 3 * C}, {L, C, C}, {L, C},
        {L, C}, {L, C}, {L, 4 * C, C}, {L, 4 * C}, {L, C, 4 * C}, {L, C}, {C}, {C},
    };
    const int ndims[NUM_PARAM_TENSORS] = {2, 2, 2, 2, 3, 2, 3, 2, 2, 2, 3, 2, 3, 2, 1, 1};
    memset(tab, 0, sizeof *tab);
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) sm_table_add(tab, PARAM_NAMES[i], ndims[i], shapes[i]);
}

// The activations for B x T tokens, with L slots per layer tensor and Vp columns of logits. The
// activation gradients use the same layout with one slot per layer (backward reuses it for
// every layer) and no logits (dlogits overwrite the logits in place).
static void act_table(sm_table *tab, const sm_model_config *cfg, size_t B, size_t T, size_t L, size_t Vp) {
    size_t C = (size_t)cfg->n_embd, NH = (size_t)cfg->n_head;
    const size_t shapes[NUM_ACT_TENSORS][4] = {
        {B, T, C},        // encoded
        {L, B, T, C},     // ln1
        {L, B, T},        // ln1_mean
        {L, B, T},        // ln1_rstd
        {L, B, T, 3 * C}, // qkv
        {L, B, T, C},     // atty
        {L, B, NH, T},    // att_lse (per-row log-sum-exp of the attention scores)
        {L, B, T, C},     // attproj
        {L, B, T, C},     // residual2
        {L, B, T, C},     // ln2
        {L, B, T},        // ln2_mean
        {L, B, T},        // ln2_rstd
        {L, B, T, 4 * C}, // fch
        {L, B, T, 4 * C}, // fch_gelu
        {L, B, T, C},     // fcproj
        {L, B, T, C},     // residual3
        {B, T, C},        // lnf
        {B, T},           // lnf_mean
        {B, T},           // lnf_rstd
        {B, T, Vp},       // logits
        {B, T},           // losses
    };
    const int ndims[NUM_ACT_TENSORS] = {3, 4, 3, 3, 4, 4, 4, 4, 4, 4, 3, 3, 4, 4, 4, 4, 3, 2, 2, 3, 2};
    memset(tab, 0, sizeof *tab);
    for (int i = 0; i < NUM_ACT_TENSORS; i++) sm_table_add(tab, ACT_NAMES[i], ndims[i], shapes[i]);
}

void gpt2_build(gpt2 *model, const sm_model_config *cfg, int B, int T) {
    memset(model, 0, sizeof *model);
    model->cfg = *cfg;
    model->B = B;
    model->T = T;
    SM_CHECK(T <= cfg->max_seq_len, "sequence length %d exceeds the context %d", T, cfg->max_seq_len);
    gpt2_param_table(&model->params, cfg);
    model->grads = model->m = model->v = model->params;
    sm_table_alloc(&model->params);
    sm_table_alloc(&model->grads);
    sm_table_alloc(&model->m);
    sm_table_alloc(&model->v);
    model->moment_alloc[0] = model->m.base;
    model->moment_alloc[1] = model->v.base;
    model->moment_lo = 0;
    model->moment_hi = sm_table_n_f32(&model->params);
    act_table(&model->acts, cfg, (size_t)B, (size_t)T, (size_t)cfg->n_layer, (size_t)cfg->padded_vocab_size);
    act_table(&model->dacts, cfg, (size_t)B, (size_t)T, 1, 0);
    sm_table_alloc(&model->acts);
    sm_table_alloc(&model->dacts);
    model->inputs = sm_arena((size_t)B * (size_t)T * sizeof(int));
    model->targets = sm_arena((size_t)B * (size_t)T * sizeof(int));
    model->n_params = 0;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) model->n_params += model->params.t[i].n_elems;
}

void gpt2_free(gpt2 *model) {
    sm_free(model->params.base);
    sm_free(model->grads.base);
    sm_free(model->moment_alloc[0]);
    sm_free(model->moment_alloc[1]);
    sm_free(model->acts.base);
    sm_free(model->dacts.base);
    sm_free(model->inputs);
    sm_free(model->targets);
    memset(model, 0, sizeof *model);
}

void gpt2_init_weights(gpt2 *model, uint64_t seed) {
    const sm_model_config *c = &model->cfg;
    sm_rng rng;
    sm_rng_seed(&rng, seed, 0x67707432);   // stream "gpt2": init only
    float residual_std = 0.02f / sqrtf(2.0f * (float)c->n_layer);
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        sm_tensor *t = &model->params.t[i];
        size_t n = t->n_elems;
        if (i == P_LN1W || i == P_LN2W || i == P_LNFW) {
            for (size_t k = 0; k < n; k++) t->ptr[k] = 1.0f;
        } else if (i == P_LN1B || i == P_LN2B || i == P_LNFB || i == P_QKVB || i == P_ATTPROJB || i == P_FCB ||
                   i == P_FCPROJB) {
            memset(t->ptr, 0, n * sizeof(float));
        } else {
            float std = (i == P_ATTPROJW || i == P_FCPROJW) ? residual_std : 0.02f;
            // wte: only the V real rows are drawn; padded rows stay 0 (never sampled)
            size_t n_draw = i == P_WTE ? (size_t)c->vocab_size * (size_t)c->n_embd : n;
            for (size_t k = 0; k < n_draw; k++) t->ptr[k] = std * sm_rng_normal(&rng);
            for (size_t k = n_draw; k < n; k++) t->ptr[k] = 0.0f;
        }
    }
}

#define P(i) (model->params.t[(i)].ptr)
#define G(i) (model->grads.t[(i)].ptr)
#define A(i) (model->acts.t[(i)].ptr)
#define D(i) (model->dacts.t[(i)].ptr)

// Bytes of n floats: what a kernel must move at least (its inputs read once, its outputs written
// once), for the profile's GB/s column.
static inline double float_bytes(double n) { return 4.0 * n; }

float gpt2_forward(gpt2 *model, const int *inputs, const int *targets, int B, int T, float dloss) {
    const sm_model_config *c = &model->cfg;
    const int L = c->n_layer, NH = c->n_head, C = c->n_embd, V = c->vocab_size, Vp = c->padded_vocab_size;
    SM_CHECK(B >= 1 && B <= model->B && T >= 1 && T <= model->T, "batch (%d,%d) exceeds the model's (%d,%d)", B, T,
             model->B, model->T);
    const size_t N = (size_t)B * (size_t)T;
    // stride the per-layer activations by the allocated (B,T), so forward at a smaller
    // batch still addresses layer l correctly
    const size_t BTa = (size_t)model->B * (size_t)model->T;
    const int hs = C / NH;
    for (size_t i = 0; i < N; i++) {
        SM_CHECK(inputs[i] >= 0 && inputs[i] < V, "input token %d at %zu out of range [0,%d)", inputs[i], i, V);
        model->inputs[i] = inputs[i];
        if (targets) {
            SM_CHECK(targets[i] >= 0 && targets[i] < V, "target token %d at %zu out of range [0,%d)", targets[i], i, V);
            model->targets[i] = targets[i];
        }
    }
    const double nc = (double)N * C, cc = (double)C * C, att_flops = 2.0 * B * NH * hs * (double)T * (T + 1);
    double t = prof_start();
    encoder_forward(A(A_ENCODED), model->inputs, P(P_WTE), P(P_WPE), B, T, C);
    prof_stop("encoder", PROF_FWD, t, 0.0, float_bytes(3 * nc));
    // The first LayerNorm of each layer is fused with the residual add that ends the layer
    // before it (layer 0's runs alone, the final one is fused with the last layer's add).
    t = prof_start();
    layernorm_forward(A(A_LN1), A(A_LN1_MEAN), A(A_LN1_RSTD), A(A_ENCODED), P(P_LN1W), P(P_LN1B), (int)N, C);
    prof_stop("layernorm", PROF_FWD, t, 0.0, float_bytes(2 * nc));
    const float *residual = A(A_ENCODED);
    for (int l = 0; l < L; l++) {
        size_t lc = (size_t)l * C, lbt = (size_t)l * BTa;
        float *ln1 = A(A_LN1) + lbt * C;
        float *qkv = A(A_QKV) + lbt * 3 * C, *atty = A(A_ATTY) + lbt * C;
        float *lse = A(A_ATT_LSE) + lbt * NH;
        float *attproj = A(A_ATTPROJ) + lbt * C, *residual2 = A(A_RESIDUAL2) + lbt * C;
        float *ln2 = A(A_LN2) + lbt * C, *ln2_mean = A(A_LN2_MEAN) + lbt, *ln2_rstd = A(A_LN2_RSTD) + lbt;
        float *fch = A(A_FCH) + lbt * 4 * C, *fch_gelu = A(A_FCH_GELU) + lbt * 4 * C;
        float *fcproj = A(A_FCPROJ) + lbt * C, *residual3 = A(A_RESIDUAL3) + lbt * C;

        t = prof_start();
        matmul_forward(qkv, ln1, P(P_QKVW) + lc * 3 * C, P(P_QKVB) + lc * 3, (int)N, C, 3 * C);
        prof_stop("matmul.qkv", PROF_FWD, t, 2.0 * nc * 3 * C, float_bytes(nc + 3 * cc + 3 * nc));
        t = prof_start();
        attention_forward(atty, lse, qkv, B, T, C, NH);
        prof_stop("attention", PROF_FWD, t, att_flops, float_bytes(3 * nc + nc + (double)B * NH * T));
        t = prof_start();
        matmul_forward(attproj, atty, P(P_ATTPROJW) + lc * C, P(P_ATTPROJB) + lc, (int)N, C, C);
        prof_stop("matmul.attproj", PROF_FWD, t, 2.0 * nc * C, float_bytes(nc + cc + nc));
        t = prof_start();
        residual_layernorm_forward(residual2, ln2, ln2_mean, ln2_rstd, residual, attproj, P(P_LN2W) + lc,
                                   P(P_LN2B) + lc, (int)N, C);
        prof_stop("residual+layernorm", PROF_FWD, t, 0.0, float_bytes(4 * nc));
        t = prof_start();
        matmul_forward_gelu(fch, fch_gelu, ln2, P(P_FCW) + lc * 4 * C, P(P_FCB) + lc * 4, (int)N, C, 4 * C);
        prof_stop("matmul.fc+gelu", PROF_FWD, t, 2.0 * nc * 4 * C, float_bytes(nc + 4 * cc + 8 * nc));
        t = prof_start();
        matmul_forward(fcproj, fch_gelu, P(P_FCPROJW) + lc * 4 * C, P(P_FCPROJB) + lc, (int)N, 4 * C, C);
        prof_stop("matmul.fcproj", PROF_FWD, t, 2.0 * nc * 4 * C, float_bytes(4 * nc + 4 * cc + nc));
        t = prof_start();
        if (l + 1 < L) {
            size_t nlc = lc + C, nlbt = lbt + BTa;
            residual_layernorm_forward(residual3, A(A_LN1) + nlbt * C, A(A_LN1_MEAN) + nlbt, A(A_LN1_RSTD) + nlbt,
                                       residual2, fcproj, P(P_LN1W) + nlc, P(P_LN1B) + nlc, (int)N, C);
        } else {
            residual_layernorm_forward(residual3, A(A_LNF), A(A_LNF_MEAN), A(A_LNF_RSTD), residual2, fcproj,
                                       P(P_LNFW), P(P_LNFB), (int)N, C);
        }
        prof_stop("residual+layernorm", PROF_FWD, t, 0.0, float_bytes(4 * nc));
        residual = residual3;
    }
    if (L == 0) {
        t = prof_start();
        layernorm_forward(A(A_LNF), A(A_LNF_MEAN), A(A_LNF_RSTD), residual, P(P_LNFW), P(P_LNFB), (int)N, C);
        prof_stop("layernorm", PROF_FWD, t, 0.0, float_bytes(2 * nc));
    }
    // LM head tied to wte: logits (N,Vp) = lnf @ wte^T (padded rows of wte are 0)
    t = prof_start();
    matmul_forward(A(A_LOGITS), A(A_LNF), P(P_WTE), NULL, (int)N, C, Vp);
    prof_stop("matmul.lm_head", PROF_FWD, t, 2.0 * nc * Vp, float_bytes(nc + (double)Vp * C + (double)N * Vp));
    if (!targets) return 0.0f;
    t = prof_start();
    // dlogits overwrite the logits (the kernel reads each row before it writes it)
    double sum = softmax_xent(A(A_LOSSES), dloss != 0.0f ? A(A_LOGITS) : NULL, A(A_LOGITS), model->targets, (int)N, V,
                              Vp, dloss);
    prof_stop("softmax_xent", PROF_FWD, t, 0.0, float_bytes((dloss != 0.0f ? 2.0 : 1.0) * (double)N * Vp));
    model->last_B = B;
    model->last_T = T;
    model->last_has_grad = dloss != 0.0f;
    return (float)(sum / (double)N);
}

void gpt2_zero_grad(gpt2 *model) { model->grads_hold_sum = 0; }

// The gradients no product writes with beta = 0: those the kernels only add into (LayerNorm
// weights and biases, wpe), cleared at the start of a step's first backward. A few C-sized
// rows per layer and wpe: ~1% of the arena at GPT-2 124M, where clearing it all cost 4% of a step.
static void clear_accumulated_grads(gpt2 *model) {
    static const int only_added[] = {P_WPE, P_LN1W, P_LN1B, P_LN2W, P_LN2B, P_LNFW, P_LNFB};
    double t = prof_start(), n = 0.0;
    for (size_t k = 0; k < sizeof only_added / sizeof only_added[0]; k++) {
        const sm_tensor *g = &model->grads.t[only_added[k]];
        memset(g->ptr, 0, g->n_elems * sizeof(float));
        n += (double)g->n_elems;
    }
    prof_stop("zero_grad", PROF_BWD, t, 0.0, float_bytes(n));
}

// Between backward's large ops: lets the gradient sync progress the buckets in flight.
static void sync_progress(gpt2 *model) {
    if (!model->progress) return;
    double t = prof_start();
    model->progress(model->layer_done_ctx);
    prof_stop("grad_sync_hook", PROF_BWD, t, 0.0, 0.0);
}

void gpt2_backward(gpt2 *model) {
    const sm_model_config *c = &model->cfg;
    const int L = c->n_layer, NH = c->n_head, C = c->n_embd, Vp = c->padded_vocab_size;
    const int B = model->last_B, T = model->last_T;
    SM_CHECK(model->last_has_grad, "gpt2_backward needs a forward with targets and dloss != 0");
    const size_t N = (size_t)B * (size_t)T, BTa = (size_t)model->B * (size_t)model->T;
    const int hs = C / NH;
    const double nc = (double)N * C, cc = (double)C * C, att_flops = 5.0 * B * NH * hs * (double)T * (T + 1);
    // The gradient of the residual stream lives in one buffer, dres, from the final LayerNorm
    // down to the embeddings: each LayerNorm backward adds its input gradient into it, and the
    // projections that feed the stream read it as their output gradient (a residual add copies
    // its gradient to both inputs), so no residual pass is needed. The per-layer activation
    // gradients are scratch, one layer's slots reused by every layer (they stay in cache), and
    // each is overwritten by its producer (the matrix products, GELU and attention backward):
    // no clearing pass but dres's, once.
    float *dres = D(A_ENCODED);
    float *dfch_gelu = D(A_FCH_GELU), *dfch = D(A_FCH), *dln2 = D(A_LN2), *datty = D(A_ATTY), *dqkv = D(A_QKV);
    float *dln1 = D(A_LN1);
    // The first backward of a step writes the gradients of the weight matrices (beta = 0) and
    // the biases; the LayerNorm and wpe gradients, which are only ever added to, are cleared.
    const int acc = model->grads_hold_sum;
    if (!acc) clear_accumulated_grads(model);
    double t = prof_start();
    memset(dres, 0, N * C * sizeof(float));
    prof_stop("clear_scratch", PROF_BWD, t, 0.0, float_bytes(nc));

    // dlogits were written over the logits by the fused softmax+loss in forward; dwte gets the
    // encoder's share last
    t = prof_start();
    matmul_backward(D(A_LNF), G(P_WTE), NULL, A(A_LOGITS), A(A_LNF), P(P_WTE), (int)N, C, Vp, acc);
    prof_stop("matmul.lm_head", PROF_BWD, t, 4.0 * nc * Vp, float_bytes(2.0 * N * Vp + 2 * nc + 3.0 * Vp * C + 2 * nc));
    const float *last_residual = L > 0 ? A(A_RESIDUAL3) + (size_t)(L - 1) * BTa * C : A(A_ENCODED);
    t = prof_start();
    layernorm_backward(dres, G(P_LNFW), G(P_LNFB), D(A_LNF), last_residual, P(P_LNFW), A(A_LNF_MEAN), A(A_LNF_RSTD),
                       (int)N, C);
    prof_stop("layernorm", PROF_BWD, t, 0.0, float_bytes(4 * nc));
    for (int l = L - 1; l >= 0; l--) {
        size_t lc = (size_t)l * C, lbt = (size_t)l * BTa;
        const float *residual = l == 0 ? A(A_ENCODED) : A(A_RESIDUAL3) + (lbt - BTa) * C;
        float *ln1 = A(A_LN1) + lbt * C, *ln1_mean = A(A_LN1_MEAN) + lbt, *ln1_rstd = A(A_LN1_RSTD) + lbt;
        float *qkv = A(A_QKV) + lbt * 3 * C, *atty = A(A_ATTY) + lbt * C;
        float *lse = A(A_ATT_LSE) + lbt * NH;
        float *residual2 = A(A_RESIDUAL2) + lbt * C;
        float *ln2 = A(A_LN2) + lbt * C, *ln2_mean = A(A_LN2_MEAN) + lbt, *ln2_rstd = A(A_LN2_RSTD) + lbt;
        float *fch = A(A_FCH) + lbt * 4 * C, *fch_gelu = A(A_FCH_GELU) + lbt * 4 * C;

        // dres is d residual3 here: the gradient of fcproj's output
        t = prof_start();
        matmul_backward(dfch_gelu, G(P_FCPROJW) + lc * 4 * C, G(P_FCPROJB) + lc, dres, fch_gelu,
                        P(P_FCPROJW) + lc * 4 * C, (int)N, 4 * C, C, acc);
        prof_stop("matmul.fcproj", PROF_BWD, t, 4.0 * nc * 4 * C, float_bytes(2 * nc + 4 * nc + 12 * cc + 8 * nc));
        sync_progress(model);
        t = prof_start();
        gelu_backward(dfch, fch, dfch_gelu, N * 4 * C);
        prof_stop("gelu", PROF_BWD, t, 0.0, float_bytes(12 * nc));   // reads fch, dfch_gelu; writes dfch
        t = prof_start();
        matmul_backward(dln2, G(P_FCW) + lc * 4 * C, G(P_FCB) + lc * 4, dfch, ln2, P(P_FCW) + lc * 4 * C, (int)N, C,
                        4 * C, acc);
        prof_stop("matmul.fc", PROF_BWD, t, 4.0 * nc * 4 * C, float_bytes(8 * nc + nc + 12 * cc + 2 * nc));
        sync_progress(model);
        t = prof_start();
        layernorm_backward(dres, G(P_LN2W) + lc, G(P_LN2B) + lc, dln2, residual2, P(P_LN2W) + lc, ln2_mean, ln2_rstd,
                           (int)N, C);
        prof_stop("layernorm", PROF_BWD, t, 0.0, float_bytes(4 * nc));
        // dres is now d residual2: the gradient of attproj's output
        t = prof_start();
        matmul_backward(datty, G(P_ATTPROJW) + lc * C, G(P_ATTPROJB) + lc, dres, atty, P(P_ATTPROJW) + lc * C,
                        (int)N, C, C, acc);
        prof_stop("matmul.attproj", PROF_BWD, t, 4.0 * nc * C, float_bytes(2 * nc + nc + 3 * cc + 2 * nc));
        sync_progress(model);
        t = prof_start();
        attention_backward(dqkv, datty, atty, qkv, lse, B, T, C, NH);
        prof_stop("attention", PROF_BWD, t, att_flops, float_bytes(2 * nc + 3 * nc + 6 * nc));
        t = prof_start();
        matmul_backward(dln1, G(P_QKVW) + lc * 3 * C, G(P_QKVB) + lc * 3, dqkv, ln1, P(P_QKVW) + lc * 3 * C, (int)N,
                        C, 3 * C, acc);
        prof_stop("matmul.qkv", PROF_BWD, t, 4.0 * nc * 3 * C, float_bytes(6 * nc + nc + 9 * cc + 2 * nc));
        sync_progress(model);
        t = prof_start();
        layernorm_backward(dres, G(P_LN1W) + lc, G(P_LN1B) + lc, dln1, residual, P(P_LN1W) + lc, ln1_mean, ln1_rstd,
                           (int)N, C);
        prof_stop("layernorm", PROF_BWD, t, 0.0, float_bytes(4 * nc));
        // dres is now d residual: the gradient of the layer's input
        if (model->layer_done) {
            t = prof_start();
            model->layer_done(model->layer_done_ctx, l);
            prof_stop("grad_sync_hook", PROF_BWD, t, 0.0, 0.0);
        }
    }
    t = prof_start();
    encoder_backward(G(P_WTE), G(P_WPE), dres, model->inputs, B, T, C);
    prof_stop("encoder", PROF_BWD, t, 0.0, float_bytes(3 * nc + 2 * nc));
    model->grads_hold_sum = 1;
}

void gpt2_shard_moments(gpt2 *model, size_t lo, size_t hi) {
    SM_CHECK(lo <= hi && hi <= sm_table_n_f32(&model->params), "moment range [%zu,%zu) outside the arena", lo, hi);
    for (int k = 0; k < 2; k++) {
        sm_free(model->moment_alloc[k]);
        model->moment_alloc[k] = sm_arena((hi - lo ? hi - lo : 1) * sizeof(float));
        // the table addresses arena coordinates: its base sits lo floats before the slice
        // (computed on integers; only [lo, hi) is ever dereferenced)
        float *base = (float *)((uintptr_t)model->moment_alloc[k] - lo * sizeof(float));
        sm_table_bind(k == 0 ? &model->m : &model->v, base);
    }
    model->moment_lo = lo;
    model->moment_hi = hi;
}

// The part [*a, *b) of tensor i that lies in the moment range; 0 if none.
static int owned_part(const gpt2 *model, int i, size_t *a, size_t *b) {
    const sm_tensor *t = &model->params.t[i];
    size_t off = sm_tensor_f32_offset(t);
    size_t lo = off > model->moment_lo ? off : model->moment_lo;
    size_t hi = off + t->n_elems < model->moment_hi ? off + t->n_elems : model->moment_hi;
    if (lo >= hi) return 0;
    *a = lo;
    *b = hi;
    return 1;
}

double gpt2_grad_sumsq(const gpt2 *model) {
    double t = prof_start(), ss = 0.0, n = 0.0;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        size_t a, b;
        if (owned_part(model, i, &a, &b)) {
            ss += sum_squares(sm_table_f32(&model->grads) + a, b - a);
            n += (double)(b - a);
        }
    }
    prof_stop("grad_norm", PROF_OPT, t, 2.0 * n, float_bytes(n));
    return ss;
}

float gpt2_grad_norm(const gpt2 *model) { return (float)sqrt(gpt2_grad_sumsq(model)); }

void gpt2_adamw(gpt2 *model, float lr, float beta1, float beta2, float eps, float weight_decay, int t, float clip,
                float grad_norm) {
    // the clip's scale is applied inside AdamW's single pass (the gradients are not rewritten)
    float scale = (clip > 0.0f && grad_norm > clip) ? clip / grad_norm : 1.0f;
    double t0 = prof_start(), n = 0.0;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        size_t a, b;
        if (!owned_part(model, i, &a, &b)) continue;
        adamw_update(sm_table_f32(&model->params) + a, sm_table_f32(&model->grads) + a, sm_table_f32(&model->m) + a,
                     sm_table_f32(&model->v) + a, b - a, lr,
                     beta1, beta2, eps, gpt2_param_decays(i) ? weight_decay : 0.0f, scale, t);
        n += (double)(b - a);
    }
    prof_stop("adamw", PROF_OPT, t0, 0.0, 28.0 * n);
}
