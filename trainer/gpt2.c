// gpt2.c — GPT-2 over named-tensor tables: shapes, init, forward, backward, AdamW.
#include "gpt2.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kernels.h"

static const char *const PARAM_NAMES[NUM_PARAM_TENSORS] = {
    "wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
    "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb",
};
_Static_assert(sizeof PARAM_NAMES / sizeof PARAM_NAMES[0] == NUM_PARAM_TENSORS, "one name per parameter");

static const char *const ACT_NAMES[NUM_ACT_TENSORS] = {
    "encoded", "ln1", "ln1_mean", "ln1_rstd", "qkv", "atty", "att", "attproj", "residual2",
    "ln2", "ln2_mean", "ln2_rstd", "fch", "fch_gelu", "fcproj", "residual3",
    "lnf", "lnf_mean", "lnf_rstd", "logits", "losses",
};
_Static_assert(sizeof ACT_NAMES / sizeof ACT_NAMES[0] == NUM_ACT_TENSORS, "one name per activation");

int gpt2_config_validate(gpt2_config *c, char *err, size_t errlen) {
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

void gpt2_param_table(sm_table *tab, const gpt2_config *cfg) {
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

static void act_table(sm_table *tab, const gpt2_config *cfg, size_t B, size_t T) {
    size_t L = (size_t)cfg->n_layer, C = (size_t)cfg->n_embd, NH = (size_t)cfg->n_head;
    size_t Vp = (size_t)cfg->padded_vocab_size;
    const size_t shapes[NUM_ACT_TENSORS][4] = {
        {B, T, C},        // encoded
        {L, B, T, C},     // ln1
        {L, B, T},        // ln1_mean
        {L, B, T},        // ln1_rstd
        {L, B, T, 3 * C}, // qkv
        {L, B, T, C},     // atty
        {L * B, NH, T, T},// att (probabilities)
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

void gpt2_build(gpt2 *model, const gpt2_config *cfg, int B, int T) {
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
    model->moment_hi = model->params.n_floats;
    act_table(&model->acts, cfg, (size_t)B, (size_t)T);
    model->dacts = model->acts;
    sm_table_alloc(&model->acts);
    sm_table_alloc(&model->dacts);
    model->inputs = sm_arena((size_t)B * (size_t)T * sizeof(int));
    model->targets = sm_arena((size_t)B * (size_t)T * sizeof(int));
    model->n_params = 0;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) model->n_params += model->params.t[i].n_floats;
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
    const gpt2_config *c = &model->cfg;
    sm_rng rng;
    sm_rng_seed(&rng, seed, 0x67707432);   // stream "gpt2": init only
    float residual_std = 0.02f / sqrtf(2.0f * (float)c->n_layer);
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        sm_tensor *t = &model->params.t[i];
        size_t n = t->n_floats;
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

float gpt2_forward(gpt2 *model, const int *inputs, const int *targets, int B, int T, float dloss) {
    const gpt2_config *c = &model->cfg;
    const int L = c->n_layer, NH = c->n_head, C = c->n_embd, V = c->vocab_size, Vp = c->padded_vocab_size;
    SM_CHECK(B >= 1 && B <= model->B && T >= 1 && T <= model->T, "batch (%d,%d) exceeds the model's (%d,%d)", B, T,
             model->B, model->T);
    const size_t N = (size_t)B * (size_t)T;
    // stride the per-layer activations by the allocated (B,T), so forward at a smaller
    // batch still addresses layer l correctly; att is (L*B, NH, T, T) with the allocated T
    const size_t BTa = (size_t)model->B * (size_t)model->T;
    for (size_t i = 0; i < N; i++) {
        SM_CHECK(inputs[i] >= 0 && inputs[i] < V, "input token %d at %zu out of range [0,%d)", inputs[i], i, V);
        model->inputs[i] = inputs[i];
        if (targets) {
            SM_CHECK(targets[i] >= 0 && targets[i] < V, "target token %d at %zu out of range [0,%d)", targets[i], i, V);
            model->targets[i] = targets[i];
        }
    }
    encoder_forward(A(A_ENCODED), model->inputs, P(P_WTE), P(P_WPE), B, T, C);
    const float *residual = A(A_ENCODED);
    for (int l = 0; l < L; l++) {
        size_t lc = (size_t)l * C, lbt = (size_t)l * BTa;
        float *ln1 = A(A_LN1) + lbt * C, *ln1_mean = A(A_LN1_MEAN) + lbt, *ln1_rstd = A(A_LN1_RSTD) + lbt;
        float *qkv = A(A_QKV) + lbt * 3 * C, *atty = A(A_ATTY) + lbt * C;
        float *att = A(A_ATT) + (size_t)l * model->B * NH * (size_t)T * T;
        float *attproj = A(A_ATTPROJ) + lbt * C, *residual2 = A(A_RESIDUAL2) + lbt * C;
        float *ln2 = A(A_LN2) + lbt * C, *ln2_mean = A(A_LN2_MEAN) + lbt, *ln2_rstd = A(A_LN2_RSTD) + lbt;
        float *fch = A(A_FCH) + lbt * 4 * C, *fch_gelu = A(A_FCH_GELU) + lbt * 4 * C;
        float *fcproj = A(A_FCPROJ) + lbt * C, *residual3 = A(A_RESIDUAL3) + lbt * C;

        layernorm_forward(ln1, ln1_mean, ln1_rstd, residual, P(P_LN1W) + lc, P(P_LN1B) + lc, (int)N, C);
        matmul_forward(qkv, ln1, P(P_QKVW) + lc * 3 * C, P(P_QKVB) + lc * 3, (int)N, C, 3 * C);
        attention_forward(atty, att, qkv, B, T, C, NH);
        matmul_forward(attproj, atty, P(P_ATTPROJW) + lc * C, P(P_ATTPROJB) + lc, (int)N, C, C);
        residual_forward(residual2, residual, attproj, N * C);
        layernorm_forward(ln2, ln2_mean, ln2_rstd, residual2, P(P_LN2W) + lc, P(P_LN2B) + lc, (int)N, C);
        matmul_forward(fch, ln2, P(P_FCW) + lc * 4 * C, P(P_FCB) + lc * 4, (int)N, C, 4 * C);
        gelu_forward(fch_gelu, fch, N * 4 * C);
        matmul_forward(fcproj, fch_gelu, P(P_FCPROJW) + lc * 4 * C, P(P_FCPROJB) + lc, (int)N, 4 * C, C);
        residual_forward(residual3, residual2, fcproj, N * C);
        residual = residual3;
    }
    layernorm_forward(A(A_LNF), A(A_LNF_MEAN), A(A_LNF_RSTD), residual, P(P_LNFW), P(P_LNFB), (int)N, C);
    // LM head tied to wte: logits (N,Vp) = lnf @ wte^T (padded rows of wte are 0)
    matmul_forward(A(A_LOGITS), A(A_LNF), P(P_WTE), NULL, (int)N, C, Vp);
    if (!targets) return 0.0f;
    double sum = softmax_xent(A(A_LOSSES), dloss != 0.0f ? D(A_LOGITS) : NULL, A(A_LOGITS), model->targets, (int)N, V,
                              Vp, dloss);
    model->last_B = B;
    model->last_T = T;
    model->last_has_grad = dloss != 0.0f;
    return (float)(sum / (double)N);
}

void gpt2_zero_grad(gpt2 *model) { memset(model->grads.base, 0, model->grads.n_floats * sizeof(float)); }

void gpt2_backward(gpt2 *model) {
    const gpt2_config *c = &model->cfg;
    const int L = c->n_layer, NH = c->n_head, C = c->n_embd, Vp = c->padded_vocab_size;
    const int B = model->last_B, T = model->last_T;
    SM_CHECK(model->last_has_grad, "gpt2_backward needs a forward with targets and dloss != 0");
    const size_t N = (size_t)B * (size_t)T, BTa = (size_t)model->B * (size_t)model->T;
    // activation gradients are written (=) by the first kernel that produces them or
    // cleared here: the ones kernels accumulate into (+=) must start at zero
    memset(model->dacts.base, 0, model->dacts.t[A_LOGITS].offset * sizeof(float));

    // dlogits was written by the fused softmax+loss in forward
    matmul_backward(D(A_LNF), G(P_WTE), NULL, D(A_LOGITS), A(A_LNF), P(P_WTE), (int)N, C, Vp);
    const float *last_residual = L > 0 ? A(A_RESIDUAL3) + (size_t)(L - 1) * BTa * C : A(A_ENCODED);
    float *dlast_residual = L > 0 ? D(A_RESIDUAL3) + (size_t)(L - 1) * BTa * C : D(A_ENCODED);
    layernorm_backward(dlast_residual, G(P_LNFW), G(P_LNFB), D(A_LNF), last_residual, P(P_LNFW), A(A_LNF_MEAN),
                       A(A_LNF_RSTD), (int)N, C);
    for (int l = L - 1; l >= 0; l--) {
        size_t lc = (size_t)l * C, lbt = (size_t)l * BTa;
        const float *residual = l == 0 ? A(A_ENCODED) : A(A_RESIDUAL3) + (lbt - BTa) * C;
        float *dresidual = l == 0 ? D(A_ENCODED) : D(A_RESIDUAL3) + (lbt - BTa) * C;
        float *ln1 = A(A_LN1) + lbt * C, *ln1_mean = A(A_LN1_MEAN) + lbt, *ln1_rstd = A(A_LN1_RSTD) + lbt;
        float *qkv = A(A_QKV) + lbt * 3 * C, *atty = A(A_ATTY) + lbt * C;
        float *att = A(A_ATT) + (size_t)l * model->B * NH * (size_t)T * T;
        float *residual2 = A(A_RESIDUAL2) + lbt * C;
        float *ln2 = A(A_LN2) + lbt * C, *ln2_mean = A(A_LN2_MEAN) + lbt, *ln2_rstd = A(A_LN2_RSTD) + lbt;
        float *fch = A(A_FCH) + lbt * 4 * C, *fch_gelu = A(A_FCH_GELU) + lbt * 4 * C;
        float *dln1 = D(A_LN1) + lbt * C, *dqkv = D(A_QKV) + lbt * 3 * C, *datty = D(A_ATTY) + lbt * C;
        float *datt = D(A_ATT) + (size_t)l * model->B * NH * (size_t)T * T;
        float *dattproj = D(A_ATTPROJ) + lbt * C, *dresidual2 = D(A_RESIDUAL2) + lbt * C;
        float *dln2 = D(A_LN2) + lbt * C, *dfch = D(A_FCH) + lbt * 4 * C, *dfch_gelu = D(A_FCH_GELU) + lbt * 4 * C;
        float *dfcproj = D(A_FCPROJ) + lbt * C, *dresidual3 = D(A_RESIDUAL3) + lbt * C;

        residual_backward(dresidual2, dfcproj, dresidual3, N * C);
        matmul_backward(dfch_gelu, G(P_FCPROJW) + lc * 4 * C, G(P_FCPROJB) + lc, dfcproj, fch_gelu,
                        P(P_FCPROJW) + lc * 4 * C, (int)N, 4 * C, C);
        gelu_backward(dfch, fch, dfch_gelu, N * 4 * C);
        matmul_backward(dln2, G(P_FCW) + lc * 4 * C, G(P_FCB) + lc * 4, dfch, ln2, P(P_FCW) + lc * 4 * C, (int)N, C,
                        4 * C);
        layernorm_backward(dresidual2, G(P_LN2W) + lc, G(P_LN2B) + lc, dln2, residual2, P(P_LN2W) + lc, ln2_mean,
                           ln2_rstd, (int)N, C);
        residual_backward(dresidual, dattproj, dresidual2, N * C);
        matmul_backward(datty, G(P_ATTPROJW) + lc * C, G(P_ATTPROJB) + lc, dattproj, atty, P(P_ATTPROJW) + lc * C,
                        (int)N, C, C);
        attention_backward(dqkv, datt, datty, qkv, att, B, T, C, NH);
        matmul_backward(dln1, G(P_QKVW) + lc * 3 * C, G(P_QKVB) + lc * 3, dqkv, ln1, P(P_QKVW) + lc * 3 * C, (int)N,
                        C, 3 * C);
        layernorm_backward(dresidual, G(P_LN1W) + lc, G(P_LN1B) + lc, dln1, residual, P(P_LN1W) + lc, ln1_mean,
                           ln1_rstd, (int)N, C);
        if (model->layer_done) model->layer_done(model->layer_done_ctx, l);
    }
    encoder_backward(G(P_WTE), G(P_WPE), D(A_ENCODED), model->inputs, B, T, C);
}

void gpt2_shard_moments(gpt2 *model, size_t lo, size_t hi) {
    SM_CHECK(lo <= hi && hi <= model->params.n_floats, "moment range [%zu,%zu) outside the arena", lo, hi);
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
    size_t lo = t->offset > model->moment_lo ? t->offset : model->moment_lo;
    size_t hi = t->offset + t->n_floats < model->moment_hi ? t->offset + t->n_floats : model->moment_hi;
    if (lo >= hi) return 0;
    *a = lo;
    *b = hi;
    return 1;
}

double gpt2_grad_sumsq(const gpt2 *model) {
    double ss = 0.0;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        size_t a, b;
        if (owned_part(model, i, &a, &b)) ss += sum_squares(model->grads.base + a, b - a);
    }
    return ss;
}

float gpt2_grad_norm(const gpt2 *model) { return (float)sqrt(gpt2_grad_sumsq(model)); }

void gpt2_adamw(gpt2 *model, float lr, float beta1, float beta2, float eps, float weight_decay, int t, float clip,
                float grad_norm) {
    float scale = (clip > 0.0f && grad_norm > clip) ? clip / grad_norm : 1.0f;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        size_t a, b;
        if (!owned_part(model, i, &a, &b)) continue;
        float *g = model->grads.base + a;
        if (scale != 1.0f) scale_inplace(g, scale, b - a);
        adamw_update(model->params.base + a, g, model->m.base + a, model->v.base + a, b - a, lr, beta1, beta2, eps,
                     gpt2_param_decays(i) ? weight_decay : 0.0f, t);
    }
}
