// gpt2.c — GPT-2 over named-tensor tables: config, weights (build, init), activations, forward,
// the loss, the training state and backward. The ops are in ops.c; AdamW in optim.c.
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

#include "kernels.h"
#include "ops.h"
#include "trainer.h"

static const char *const PARAM_NAMES[NUM_PARAM_TENSORS] = {
    "wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
    "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb",
};
_Static_assert(sizeof PARAM_NAMES / sizeof PARAM_NAMES[0] == NUM_PARAM_TENSORS, "one name per parameter");

static const char *const ACT_NAMES[NUM_ACT_TENSORS] = {
    "encoded", "ln1", "ln1_mean", "ln1_rstd", "qkv", "atty", "att_lse", "attproj", "residual2",
    "ln2", "ln2_mean", "ln2_rstd", "fch", "fch_gelu", "fcproj", "residual3",
    "lnf", "lnf_mean", "lnf_rstd", "logits", "losses", "loss_max", "loss_inv",
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

int ckpt_layout_gpt2(const sm_model_config *cfg, sm_table *params, char *err, size_t errlen) {
    sm_model_config c = *cfg;
    if (gpt2_config_validate(&c, err, errlen) != 0) return -1;
    if (c.padded_vocab_size != cfg->padded_vocab_size) {
        snprintf(err, errlen, "padded_vocab_size %d does not follow from vocab_size %d (expected %d)",
                 cfg->padded_vocab_size, cfg->vocab_size, c.padded_vocab_size);
        return -1;
    }
    gpt2_param_table(params, &c);
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

// The activations for B x T tokens, with `slots` slots per layer tensor and Vp columns of logits.
// The activation gradients use the same layout with one slot per layer and no logits.
static void act_table(sm_table *tab, const sm_model_config *cfg, size_t B, size_t T, size_t slots, size_t Vp) {
    size_t C = (size_t)cfg->n_embd, NH = (size_t)cfg->n_head, L = slots;
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
        {B, T},           // loss_max: each row's max logit (softmax_xent_stats, for the fused backward)
        {B, T},           // loss_inv: each row's 1/sum of exps
    };
    const int ndims[NUM_ACT_TENSORS] = {3, 4, 3, 3, 4, 4, 4, 4, 4, 4, 3, 3, 4, 4, 4, 4, 3, 2, 2, 3, 2, 2, 2};
    memset(tab, 0, sizeof *tab);
    for (int i = 0; i < NUM_ACT_TENSORS; i++) sm_table_add(tab, ACT_NAMES[i], ndims[i], shapes[i]);
}

// ---------------------------------------------------------------------------------------------
// Weights

void gpt2_weights_build(gpt2_weights *w, const sm_model_config *cfg) {
    memset(w, 0, sizeof *w);
    w->cfg = *cfg;
    gpt2_param_table(&w->params, cfg);
    sm_table_alloc(&w->params);
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        w->n_params += w->params.t[i].n_elems;
        w->fwd[i] = &w->params.t[i];
    }
}

// The weight matrices the linear layers read (wte as the tied LM head), which an inference or mixed
// precision copy replaces in fwd[].
static const int MATS[] = {P_WTE, P_QKVW, P_ATTPROJW, P_FCW, P_FCPROJW};
enum { N_MATS = sizeof MATS / sizeof MATS[0] };

// tab: the matrices' shapes in dtype (group: sm_table_add_typed's), allocated.
static void matrices_table(const gpt2_weights *w, sm_table *tab, sm_dtype dtype, int group) {
    memset(tab, 0, sizeof *tab);
    for (int k = 0; k < N_MATS; k++) {
        const sm_tensor *t = &w->params.t[MATS[k]];
        sm_table_add_typed(tab, t->name, dtype, t->ndim, t->shape, group);
    }
    sm_table_alloc(tab);
}

int gpt2_weights_quantize(gpt2_weights *w, int group, char *err, size_t errlen) {
    const int C = w->cfg.n_embd;
    if (group < 4 || group > KERNELS_Q8_MAX_GROUP || group % 4 || C % group)
        return snprintf(err, errlen, "--group-size %d must be a multiple of 4 in 4..%d dividing the model's width %d",
                        group, KERNELS_Q8_MAX_GROUP, C), -1;
    matrices_table(w, &w->q8, SM_Q8, group);
    for (int k = 0; k < N_MATS; k++) {
        const sm_tensor *t = &w->params.t[MATS[k]];
        sm_tensor *q = &w->q8.t[k];
        const size_t cols = t->shape[t->ndim - 1], rows = t->n_elems / cols;
        q8_quantize(q->data, q->scales, t->ptr, (int)rows, (int)cols, group);
        w->fwd[MATS[k]] = q;
    }
    // packed once for the INT8 path, where it has a packed form (as gpt2_weights_pack for float32)
    memset(&w->q8p, 0, sizeof w->q8p);
    for (int k = 0; k < N_MATS; k++) {
        const sm_tensor *t = &w->params.t[MATS[k]];
        const size_t C = t->shape[t->ndim - 1], OC = t->shape[t->ndim - 2], per = matmul_q8_packed_bytes((int)OC, (int)C, group);
        if (per == 0) {   // no packed form on this path: the plain q8 matrices serve
            memset(&w->q8p, 0, sizeof w->q8p);
            return 0;
        }
        sm_table_add_sized(&w->q8p, t->name, SM_Q8P, t->ndim, t->shape, group, per * (t->n_elems / (OC * C)));
    }
    sm_table_alloc(&w->q8p);
    for (int k = 0; k < N_MATS; k++) {
        const sm_tensor *t = &w->params.t[MATS[k]], *q = &w->q8.t[k];
        sm_tensor *p = &w->q8p.t[k];
        const size_t C = t->shape[t->ndim - 1], OC = t->shape[t->ndim - 2], mats_n = t->n_elems / (OC * C);
        const size_t per = p->n_bytes / mats_n;
        for (size_t l = 0; l < mats_n; l++)
            matmul_q8_pack_weight((char *)p->data + l * per, (const int8_t *)q->data + l * OC * C,
                                  q->scales + l * OC * C / (size_t)group, (int)OC, (int)C, group);
        w->fwd[MATS[k]] = p;
    }
    return 0;
}

void gpt2_weights_pack(gpt2_weights *w) {
    if (w->q8.count || w->precision != SM_F32 || w->packed.count) return;
    matrices_table(w, &w->packed, SM_F32P, matmul_packed_width());
    for (int k = 0; k < N_MATS; k++) {
        const sm_tensor *t = &w->params.t[MATS[k]];
        sm_tensor *p = &w->packed.t[k];
        const size_t C = t->shape[t->ndim - 1], OC = t->shape[t->ndim - 2], mats_n = t->n_elems / (OC * C);
        const size_t stride = matmul_packed_bytes((int)OC, (int)C);
        for (size_t l = 0; l < mats_n; l++)
            matmul_pack_weight((char *)p->data + l * stride, t->ptr + l * OC * C, (int)OC, (int)C);
        w->fwd[MATS[k]] = p;
    }
}

int gpt2_weights_set_precision(gpt2_weights *w, sm_dtype precision, char *err, size_t errlen) {
    if (precision == SM_F32) return 0;
    if (precision != SM_BF16) return snprintf(err, errlen, "no %s mixed precision", SM_DTYPE_INFO[precision].name), -1;
    if (!kernels_bf16_available())
        return snprintf(err, errlen, "--precision bf16 needs AVX512-BF16 (vdpbf16ps), which this CPU does not have: "
                        "use --precision fp32"), -1;
    if (w->q8.count) return snprintf(err, errlen, "--precision bf16 and --int8 exclude each other"), -1;
    if (w->precision == SM_BF16) return 0;
    // the mirror: tensor i at params' element offset, 2 bytes per element (64-byte offsets halve to
    // 32-byte ones), so AdamW and the ZeRO allgather index both arenas alike
    const size_t n = sm_table_n_f32(&w->params);
    w->bf16 = w->params;
    void *base = sm_arena((n ? n : 1) * sizeof(uint16_t));
    w->bf16.base = base;
    w->bf16.n_bytes = n * sizeof(uint16_t);
    for (int i = 0; i < w->bf16.count; i++) {
        sm_tensor *t = &w->bf16.t[i];
        t->dtype = SM_BF16;
        t->offset = sm_tensor_f32_offset(&w->params.t[i]) * sizeof(uint16_t);
        t->n_bytes = t->n_elems * sizeof(uint16_t);
        t->data = (char *)base + t->offset;
        t->ptr = NULL;
    }
    w->precision = SM_BF16;
    gpt2_weights_refresh_bf16(w);
    for (int k = 0; k < N_MATS; k++) w->fwd[MATS[k]] = &w->bf16.t[MATS[k]];
    return 0;
}

void gpt2_weights_refresh_bf16(gpt2_weights *w) {
    if (w->precision != SM_BF16) return;
    bf16_from_f32_array(w->bf16.base, sm_table_f32(&w->params), sm_table_n_f32(&w->params));
}

void gpt2_weights_free(gpt2_weights *w) {
    sm_free(w->bf16.base);
    sm_free(w->q8.base);
    sm_free(w->packed.base);
    sm_free(w->q8p.base);
    sm_free(w->params.base);
    memset(w, 0, sizeof *w);
}

void gpt2_weights_init(gpt2_weights *w, uint64_t seed) {
    const sm_model_config *c = &w->cfg;
    sm_rng rng;
    sm_rng_seed(&rng, seed, 0x67707432);   // stream "gpt2": init only
    float residual_std = 0.02f / sqrtf(2.0f * (float)c->n_layer);
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        sm_tensor *t = &w->params.t[i];
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

// ---------------------------------------------------------------------------------------------
// Activations

void gpt2_acts_build(gpt2_acts *a, const sm_model_config *cfg, int B, int T, int keep_layers) {
    memset(a, 0, sizeof *a);
    SM_CHECK(B >= 1 && T >= 1 && T <= cfg->max_seq_len, "batch (%d,%d) does not fit the context %d", B, T,
             cfg->max_seq_len);
    a->B = B;
    a->T = T;
    a->layer_slots = keep_layers ? cfg->n_layer : 1;
    act_table(&a->t, cfg, (size_t)B, (size_t)T, (size_t)a->layer_slots, (size_t)cfg->padded_vocab_size);
    sm_table_alloc(&a->t);
}

void gpt2_acts_free(gpt2_acts *a) {
    sm_free(a->t.base);
    memset(a, 0, sizeof *a);
}

// One layer's activations: views into slot l (training) or the one slot (inference). Per-layer
// tensors are strided by the allocated (B,T), so a smaller batch still addresses slot l correctly.
typedef struct {
    float *ln1, *ln1_mean, *ln1_rstd, *qkv, *atty, *lse, *attproj, *residual2, *ln2, *ln2_mean, *ln2_rstd, *fch,
        *fch_gelu, *fcproj, *residual3;
} layer_acts;

static layer_acts layer_view(const sm_table *t, int slot, size_t BTa, int C, int NH) {
    const size_t s = (size_t)slot * BTa;
#define V(i, width) (t->t[(i)].ptr + s * (size_t)(width))
    return (layer_acts){
        .ln1 = V(A_LN1, C), .ln1_mean = V(A_LN1_MEAN, 1), .ln1_rstd = V(A_LN1_RSTD, 1), .qkv = V(A_QKV, 3 * C),
        .atty = V(A_ATTY, C), .lse = V(A_ATT_LSE, NH), .attproj = V(A_ATTPROJ, C), .residual2 = V(A_RESIDUAL2, C),
        .ln2 = V(A_LN2, C), .ln2_mean = V(A_LN2_MEAN, 1), .ln2_rstd = V(A_LN2_RSTD, 1), .fch = V(A_FCH, 4 * C),
        .fch_gelu = V(A_FCH_GELU, 4 * C), .fcproj = V(A_FCPROJ, C), .residual3 = V(A_RESIDUAL3, C),
    };
#undef V
}

// Parameter i's values for layer l (the tensor's l-th slice along its leading L dimension)
static inline const float *PL(const gpt2_weights *w, int i, int l) {
    const sm_tensor *t = &w->params.t[i];
    return t->ptr + (size_t)l * (t->n_elems / (size_t)w->cfg.n_layer);
}
static inline float *GL(gpt2_train *s, int i, int l, int L) {
    sm_tensor *t = &s->grads.t[i];
    return t->ptr + (size_t)l * (t->n_elems / (size_t)L);
}

// ---------------------------------------------------------------------------------------------
// Forward and loss

// Where attention finds its keys and values: kv NULL = the forward's own positions 0..T-1
// (causal attention over the batch: training, eval, --no-cache); else the KV cache of the rows.
typedef struct {
    gpt2_infer *s;
    const int *rows;   // (B): the cache row of each forward row
} kv_ref;

// Embeddings and the L blocks, ending with the final LayerNorm in a->t[A_LNF].
static void forward_blocks(const gpt2_weights *w, gpt2_acts *a, const int *inputs, int B, int T, const kv_ref *kv) {
    const sm_model_config *c = &w->cfg;
    const int L = c->n_layer, NH = c->n_head, C = c->n_embd, V = c->vocab_size;
    SM_CHECK(B >= 1 && B <= a->B && T >= 1 && T <= a->T, "batch (%d,%d) exceeds the activations' (%d,%d)", B, T, a->B,
             a->T);
    const int N = B * T;
    const size_t BTa = (size_t)a->B * (size_t)a->T;
    for (int i = 0; i < N; i++)
        SM_CHECK(inputs[i] >= 0 && inputs[i] < V, "input token %d at %d out of range [0,%d)", inputs[i], i, V);
#define ACT(i) (a->t.t[(i)].ptr)
    if (!kv) {
        op_encoder_forward(ACT(A_ENCODED), inputs, PL(w, P_WTE, 0), PL(w, P_WPE, 0), B, T, C);
    } else {   // each row continues at its own position
        for (int b = 0; b < B; b++)
            op_encoder_forward(ACT(A_ENCODED) + (size_t)b * T * C, inputs + (size_t)b * T, PL(w, P_WTE, 0),
                               PL(w, P_WPE, 0) + (size_t)kv->s->pos[kv->rows[b]] * C, 1, T, C);
    }
    // The first LayerNorm of each layer is fused with the residual add that ends the layer before
    // it (layer 0's runs alone, the final one is fused with the last layer's add).
    layer_acts x = layer_view(&a->t, 0, BTa, C, NH);
    op_layernorm_forward(x.ln1, x.ln1_mean, x.ln1_rstd, ACT(A_ENCODED), PL(w, P_LN1W, 0), PL(w, P_LN1B, 0), N, C);
    const float *residual = ACT(A_ENCODED);
    for (int l = 0; l < L; l++) {
        x = layer_view(&a->t, a->layer_slots > 1 ? l : 0, BTa, C, NH);
        op_linear_forward("matmul.qkv", x.qkv, x.ln1, w->fwd[P_QKVW], l, PL(w, P_QKVB, l), N, C, 3 * C);
        if (!kv) {
            op_attention_forward(x.atty, x.lse, x.qkv, B, T, C, NH, w->precision);
        } else {
            gpt2_infer *s = kv->s;
            float *k = s->kv + (size_t)l * 2 * s->B * s->maxT * C, *v = k + (size_t)s->B * s->maxT * C;
            op_attention_cached(x.atty, x.qkv, k, v, kv->rows, s->pos, B, T, C, NH, s->maxT, w->precision);
        }
        op_linear_forward("matmul.attproj", x.attproj, x.atty, w->fwd[P_ATTPROJW], l, PL(w, P_ATTPROJB, l), N, C, C);
        op_residual_layernorm_forward(x.residual2, x.ln2, x.ln2_mean, x.ln2_rstd, residual, x.attproj,
                                      PL(w, P_LN2W, l), PL(w, P_LN2B, l), N, C);
        op_linear_gelu_forward("matmul.fc+gelu", x.fch, x.fch_gelu, x.ln2, w->fwd[P_FCW], l, PL(w, P_FCB, l), N, C,
                               4 * C);
        op_linear_forward("matmul.fcproj", x.fcproj, x.fch_gelu, w->fwd[P_FCPROJW], l, PL(w, P_FCPROJB, l), N, 4 * C,
                          C);
        if (l + 1 < L) {
            layer_acts next = layer_view(&a->t, a->layer_slots > 1 ? l + 1 : 0, BTa, C, NH);
            op_residual_layernorm_forward(x.residual3, next.ln1, next.ln1_mean, next.ln1_rstd, x.residual2, x.fcproj,
                                          PL(w, P_LN1W, l + 1), PL(w, P_LN1B, l + 1), N, C);
        } else {
            op_residual_layernorm_forward(x.residual3, ACT(A_LNF), ACT(A_LNF_MEAN), ACT(A_LNF_RSTD), x.residual2,
                                          x.fcproj, PL(w, P_LNFW, 0), PL(w, P_LNFB, 0), N, C);
        }
        residual = x.residual3;
    }
#undef ACT
}

void gpt2_forward(const gpt2_weights *w, gpt2_acts *a, const int *inputs, int B, int T) {
    const int C = w->cfg.n_embd, Vp = w->cfg.padded_vocab_size;
    forward_blocks(w, a, inputs, B, T, NULL);
    // LM head tied to wte: logits (N,Vp) = lnf @ wte^T (padded rows of wte are 0)
    op_linear_forward("matmul.lm_head", a->t.t[A_LOGITS].ptr, a->t.t[A_LNF].ptr, w->fwd[P_WTE], 0, NULL, B * T, C, Vp);
    a->last_B = B;
    a->last_T = T;
    a->has_dlogits = 0;
    // the fused LM-head backward is float32's; other dtypes keep dlogits written over the logits
    a->lm_head_fused = w->fwd[P_WTE]->dtype == SM_F32;
}

// One new token on one cache row (the generate loop's step): the whole forward in one OpenMP
// region, not one per op (a small model's step is ~30 ops of a few microseconds each, and a
// region's start and end cost about as much as the op). Each product is split over the threads by
// output columns, attention by heads, with a barrier after each (op_*_team: 5 per layer); the one
// row's embedding, residual adds and LayerNorms are computed by every thread into its own copy
// (op_*_own), which costs less than a barrier. Same kernels, same tiles: the bits of
// forward_blocks' path. As in llama.cpp's graph compute (one thread pool, barriers between ops).
static void forward_one(const gpt2_weights *w, gpt2_infer *s, int token, int row) {
    const sm_model_config *c = &w->cfg;
    const int L = c->n_layer, NH = c->n_head, C = c->n_embd, Vp = c->padded_vocab_size;
    SM_CHECK(token >= 0 && token < c->vocab_size, "input token %d out of range [0,%d)", token, c->vocab_size);
    const int pos = s->pos[row];
    const layer_acts x = layer_view(&s->a.t, 0, (size_t)s->a.B * (size_t)s->a.T, C, NH);
    const size_t layer_kv = (size_t)2 * s->B * s->maxT * C, row_kv = (size_t)row * s->maxT * C;
#pragma omp parallel num_threads(s->own_threads)
    {
        float *res = s->own + (size_t)omp_get_thread_num() * s->own_stride, *ln = res + C, *st = ln + C;
        op_encoder_forward_own(res, token, pos, PL(w, P_WTE, 0), PL(w, P_WPE, 0), C);
        op_layernorm_forward_own(ln, st, st + 1, res, PL(w, P_LN1W, 0), PL(w, P_LN1B, 0), C);
        for (int l = 0; l < L; l++) {
            float *k = s->kv + (size_t)l * layer_kv + row_kv, *v = k + (size_t)s->B * s->maxT * C;
            op_linear_forward_team("matmul.qkv", x.qkv, NULL, ln, w->fwd[P_QKVW], l, PL(w, P_QKVB, l), 1, C, 3 * C);
            op_attention_cached_team(x.atty, x.qkv, k, v, pos, C, NH, w->precision);
            op_linear_forward_team("matmul.attproj", x.attproj, NULL, x.atty, w->fwd[P_ATTPROJW], l,
                                   PL(w, P_ATTPROJB, l), 1, C, C);
            op_residual_layernorm_forward_own(res, ln, st, st + 1, res, x.attproj, PL(w, P_LN2W, l), PL(w, P_LN2B, l),
                                              C);
            op_linear_forward_team("matmul.fc+gelu", x.fch, x.fch_gelu, ln, w->fwd[P_FCW], l, PL(w, P_FCB, l), 1, C,
                                   4 * C);
            op_linear_forward_team("matmul.fcproj", x.fcproj, NULL, x.fch_gelu, w->fwd[P_FCPROJW], l,
                                   PL(w, P_FCPROJB, l), 1, 4 * C, C);
            const int last = l + 1 == L;   // the next layer's first LayerNorm, or the final one
            op_residual_layernorm_forward_own(res, ln, st, st + 1, res, x.fcproj,
                                              last ? PL(w, P_LNFW, 0) : PL(w, P_LN1W, l + 1),
                                              last ? PL(w, P_LNFB, 0) : PL(w, P_LN1B, l + 1), C);
        }
        if (omp_get_thread_num() == 0) memcpy(s->last, ln, (size_t)C * sizeof(float));
        op_linear_forward_team("matmul.lm_head", s->logits, NULL, ln, w->fwd[P_WTE], 0, NULL, 1, C, Vp);
    }
    s->pos[row] += 1;
}

void gpt2_forward_cached(const gpt2_weights *w, gpt2_infer *s, const int *tokens, const int *rows, int n_rows, int T) {
    const int C = w->cfg.n_embd, Vp = w->cfg.padded_vocab_size;
    SM_CHECK(n_rows >= 1 && n_rows <= s->B, "%d rows for a cache of %d", n_rows, s->B);
    for (int i = 0; i < n_rows; i++) {
        SM_CHECK(rows[i] >= 0 && rows[i] < s->B, "cache row %d out of range [0,%d)", rows[i], s->B);
        SM_CHECK(s->pos[rows[i]] + T <= s->maxT, "row %d: %d cached + %d new positions exceed the context %d",
                 rows[i], s->pos[rows[i]], T, s->maxT);
    }
    if (n_rows == 1 && T == 1) {
        forward_one(w, s, tokens[0], rows[0]);
        return;
    }
    const kv_ref kv = {s, rows};
    forward_blocks(w, &s->a, tokens, n_rows, T, &kv);
    // the LM head on each row's last new position only: (n_rows,C) @ wte^T
    const float *lnf = s->a.t.t[A_LNF].ptr;
    for (int i = 0; i < n_rows; i++)
        memcpy(s->last + (size_t)i * C, lnf + ((size_t)i * T + (size_t)T - 1) * C, (size_t)C * sizeof(float));
    op_linear_forward("matmul.lm_head", s->logits, s->last, w->fwd[P_WTE], 0, NULL, n_rows, C, Vp);
    for (int i = 0; i < n_rows; i++) s->pos[rows[i]] += T;
}

// The loss of the last forward; for_backward also keeps what backward needs of the loss gradient:
// each row's max and 1/sum of exps (the fused float32 LM-head backward recomputes dlogits from
// them) or, when that backward is not fused (bf16 weights), dlogits written over the logits.
static float loss_pass(const sm_model_config *c, gpt2_acts *a, const int *targets, int for_backward, float dloss) {
    SM_CHECK(a->last_B > 0, "the loss needs a forward first");
    SM_CHECK(!(a->has_dlogits && !a->lm_head_fused), "the logits were overwritten by dlogits: run forward again");
    const int N = a->last_B * a->last_T, V = c->vocab_size, Vp = c->padded_vocab_size;
    for (int i = 0; i < N; i++)
        SM_CHECK(targets[i] >= 0 && targets[i] < V, "target token %d at %d out of range [0,%d)", targets[i], i, V);
    float *logits = a->t.t[A_LOGITS].ptr, *losses = a->t.t[A_LOSSES].ptr;
    double sum;
    if (!for_backward)
        sum = op_softmax_xent(losses, NULL, logits, targets, N, V, Vp, 0.0f);
    else if (a->lm_head_fused)
        sum = op_softmax_xent_stats(losses, a->t.t[A_LOSS_MAX].ptr, a->t.t[A_LOSS_INV].ptr, logits, targets, N, V, Vp);
    else   // dlogits overwrite the logits (the kernel reads each row before it writes it)
        sum = op_softmax_xent(losses, logits, logits, targets, N, V, Vp, dloss);
    return (float)(sum / (double)N);
}

float gpt2_loss(const sm_model_config *cfg, gpt2_acts *a, const int *targets) {
    return loss_pass(cfg, a, targets, 0, 0.0f);
}

float gpt2_loss_backward(const sm_model_config *cfg, gpt2_acts *a, const int *targets, float dloss) {
    // float32: the gradient dlogits = (softmax - onehot) * dloss is not written here; backward
    // recomputes it block by block inside the LM head's products from the rows' max and 1/sum saved now
    float loss = loss_pass(cfg, a, targets, 1, dloss);
    a->dloss = dloss;
    a->targets = targets;
    a->has_dlogits = 1;
    return loss;
}

// ---------------------------------------------------------------------------------------------
// Training state and backward

void gpt2_train_build(gpt2_train *s, const sm_model_config *cfg, int B, int T) {
    memset(s, 0, sizeof *s);
    gpt2_param_table(&s->grads, cfg);
    sm_table_alloc(&s->grads);
    gpt2_acts_build(&s->acts, cfg, B, T, 1);
    act_table(&s->dacts, cfg, (size_t)B, (size_t)T, 1, 0);
    sm_table_alloc(&s->dacts);
}

void gpt2_train_free(gpt2_train *s) {
    sm_free(s->grads.base);
    gpt2_acts_free(&s->acts);
    sm_free(s->dacts.base);
    memset(s, 0, sizeof *s);
}

void gpt2_zero_grad(gpt2_train *s) { s->grads_hold_sum = 0; }

// The gradients no product writes with beta = 0: those the kernels only add into (LayerNorm
// weights and biases, wpe), cleared at the start of a step's first backward. A few C-sized rows
// per layer and wpe: ~1% of the arena at GPT-2 124M, where clearing it all cost 4% of a step.
static void clear_accumulated_grads(gpt2_train *s) {
    static const int only_added[] = {P_WPE, P_LN1W, P_LN1B, P_LN2W, P_LN2B, P_LNFW, P_LNFB};
    for (size_t k = 0; k < sizeof only_added / sizeof only_added[0]; k++) {
        sm_tensor *g = &s->grads.t[only_added[k]];
        op_clear("zero_grad", PROF_BWD, g->ptr, g->n_elems);
    }
}

// Between backward's large ops: lets the gradient sync progress the buckets in flight.
static void sync_progress(const gpt2_train *s) {
    if (!s->hooks.progress) return;
    double t = prof_start();
    s->hooks.progress(s->hooks.ctx);
    prof_stop("grad_sync_hook", PROF_BWD, t, 0.0, 0.0);
}

static void sync_layer_done(const gpt2_train *s, int l) {
    if (!s->hooks.layer_done) return;
    double t = prof_start();
    s->hooks.layer_done(s->hooks.ctx, l);
    prof_stop("grad_sync_hook", PROF_BWD, t, 0.0, 0.0);
}

void gpt2_backward(const gpt2_weights *w, gpt2_train *s, const int *inputs) {
    const sm_model_config *c = &w->cfg;
    const int L = c->n_layer, NH = c->n_head, C = c->n_embd, Vp = c->padded_vocab_size;
    gpt2_acts *a = &s->acts;
    const int B = a->last_B, T = a->last_T, N = B * T;
    SM_CHECK(a->has_dlogits, "gpt2_backward needs a forward whose loss was gpt2_loss_backward");
    const size_t BTa = (size_t)a->B * (size_t)a->T;
#define ACT(i) (a->t.t[(i)].ptr)
#define D(i) (s->dacts.t[(i)].ptr)
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
    // The first backward of a step writes the gradients of the weight matrices (beta = 0) and the
    // biases; the LayerNorm and wpe gradients, which are only ever added to, are cleared.
    const int acc = s->grads_hold_sum;
    if (!acc) clear_accumulated_grads(s);
    op_clear("clear_scratch", PROF_BWD, dres, (size_t)N * C);

    if (a->lm_head_fused) {
        // the LM head with the loss gradient fused: dlogits recomputed from the logits and the rows'
        // statistics gpt2_loss_backward saved, in cache; dwte gets the encoder's share last
        op_lm_head_backward(D(A_LNF), GL(s, P_WTE, 0, L), ACT(A_LOGITS), ACT(A_LOSS_MAX), ACT(A_LOSS_INV), a->targets,
                            ACT(A_LNF), PL(w, P_WTE, 0), N, C, c->vocab_size, Vp, a->dloss, acc);
    } else {
        // other weight dtypes (bf16): dlogits were written over the logits by the fused softmax+loss
        // and go through the linear layer's backward in that dtype; dwte gets the encoder's share last
        op_linear_backward("matmul.lm_head", D(A_LNF), GL(s, P_WTE, 0, L), NULL, ACT(A_LOGITS), ACT(A_LNF),
                           w->fwd[P_WTE], 0, N, C, Vp, acc);
    }
    layer_acts x = layer_view(&a->t, L - 1, BTa, C, NH);
    op_layernorm_backward(dres, GL(s, P_LNFW, 0, L), GL(s, P_LNFB, 0, L), D(A_LNF), x.residual3, PL(w, P_LNFW, 0),
                          ACT(A_LNF_MEAN), ACT(A_LNF_RSTD), N, C);
    for (int l = L - 1; l >= 0; l--) {
        x = layer_view(&a->t, l, BTa, C, NH);
        const float *residual = l == 0 ? ACT(A_ENCODED) : layer_view(&a->t, l - 1, BTa, C, NH).residual3;
        // dres is d residual3 here: the gradient of fcproj's output
        op_linear_backward("matmul.fcproj", dfch_gelu, GL(s, P_FCPROJW, l, L), GL(s, P_FCPROJB, l, L), dres,
                           x.fch_gelu, w->fwd[P_FCPROJW], l, N, 4 * C, C, acc);
        sync_progress(s);
        op_gelu_backward(dfch, x.fch, dfch_gelu, (size_t)N * 4 * C);
        op_linear_backward("matmul.fc", dln2, GL(s, P_FCW, l, L), GL(s, P_FCB, l, L), dfch, x.ln2, w->fwd[P_FCW], l,
                           N, C, 4 * C, acc);
        sync_progress(s);
        op_layernorm_backward(dres, GL(s, P_LN2W, l, L), GL(s, P_LN2B, l, L), dln2, x.residual2, PL(w, P_LN2W, l),
                              x.ln2_mean, x.ln2_rstd, N, C);
        // dres is now d residual2: the gradient of attproj's output
        op_linear_backward("matmul.attproj", datty, GL(s, P_ATTPROJW, l, L), GL(s, P_ATTPROJB, l, L), dres, x.atty,
                           w->fwd[P_ATTPROJW], l, N, C, C, acc);
        sync_progress(s);
        op_attention_backward(dqkv, datty, x.atty, x.qkv, x.lse, B, T, C, NH, w->precision);
        op_linear_backward("matmul.qkv", dln1, GL(s, P_QKVW, l, L), GL(s, P_QKVB, l, L), dqkv, x.ln1,
                           w->fwd[P_QKVW], l, N, C, 3 * C, acc);
        sync_progress(s);
        op_layernorm_backward(dres, GL(s, P_LN1W, l, L), GL(s, P_LN1B, l, L), dln1, residual, PL(w, P_LN1W, l),
                              x.ln1_mean, x.ln1_rstd, N, C);
        // dres is now d residual: the gradient of the layer's input
        sync_layer_done(s, l);
    }
    op_encoder_backward(GL(s, P_WTE, 0, L), GL(s, P_WPE, 0, L), dres, inputs, B, T, C);
    s->grads_hold_sum = 1;
#undef ACT
#undef D
}
