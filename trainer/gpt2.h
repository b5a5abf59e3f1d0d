// gpt2.h — the GPT-2 model over its tensor tables: build, init, forward, backward, AdamW.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "common.h"


// The 16 parameter tensors, in checkpoint order (llm.c's names and shapes).
enum {
    P_WTE, P_WPE, P_LN1W, P_LN1B, P_QKVW, P_QKVB, P_ATTPROJW, P_ATTPROJB,
    P_LN2W, P_LN2B, P_FCW, P_FCB, P_FCPROJW, P_FCPROJB, P_LNFW, P_LNFB,
    NUM_PARAM_TENSORS
};

// Activations saved by forward for backward (per layer ones have a leading L). Attention saves
// the per-row log-sum-exp (L,B,NH,T), not the (T,T) probabilities (flash attention recomputes them).
enum {
    A_ENCODED, A_LN1, A_LN1_MEAN, A_LN1_RSTD, A_QKV, A_ATTY, A_ATT_LSE, A_ATTPROJ, A_RESIDUAL2,
    A_LN2, A_LN2_MEAN, A_LN2_RSTD, A_FCH, A_FCH_GELU, A_FCPROJ, A_RESIDUAL3,
    A_LNF, A_LNF_MEAN, A_LNF_RSTD, A_LOGITS, A_LOSSES,
    NUM_ACT_TENSORS
};

typedef struct {
    sm_model_config cfg;
    int B, T;              // the largest batch the activations hold
    sm_table params;       // NUM_PARAM_TENSORS views into one arena
    sm_table grads;        // same layout as params
    sm_table m, v;         // AdamW moments, same layout; valid on [moment_lo, moment_hi) only
    size_t moment_lo, moment_hi;   // the arena range this rank optimizes (ZeRO-1 slice, else all)
    float *moment_alloc[2];        // the allocations behind m and v
    sm_table acts;         // NUM_ACT_TENSORS
    sm_table dacts;        // gradients of the activations: the layout of acts with one slot per
                           // layer (backward reuses it for every layer, so it stays in cache)
                           // and no logits (dlogits overwrite them)
    int *inputs;           // (B,T)
    int *targets;          // (B,T)
    size_t n_params;       // real parameter count (without padding between tensors)
    int last_B, last_T;    // shape of the last forward
    int last_has_grad;     // the last forward wrote dlogits
    int grads_hold_sum;    // 0 after gpt2_zero_grad: the next backward writes the gradients
                           // instead of adding to them (no clearing pass); 1 after a backward
    // Called by backward as soon as layer l's parameter gradients are final (layers finish
    // in reverse order; wte/wpe and lnf are final only when backward returns). comm/ uses
    // it to start bucketed allreduces during backward.
    void (*layer_done)(void *ctx, int layer);
    void (*progress)(void *ctx);   // between backward's large ops (may be NULL): comm/ tests and
                                   // finishes the reductions in flight
    void *layer_done_ctx;          // the ctx of both
} gpt2;

// Fills padded_vocab_size; returns 0, or -1 with a reason (e.g. heads not dividing embd).
int gpt2_config_validate(sm_model_config *cfg, char *err, size_t errlen);
// Parameter shapes for a config, in order; used by gpt2_build and checkpoint code.
void gpt2_param_table(sm_table *tab, const sm_model_config *cfg);
// Allocates every arena once (zeroed, touched): params, grads, m, v, acts, dacts.
void gpt2_build(gpt2 *model, const sm_model_config *cfg, int B, int T);
void gpt2_free(gpt2 *model);
// GPT-2 init: weights N(0, 0.02), residual projections (attprojw, fcprojw) N(0, 0.02/sqrt(2L)),
// biases 0, LayerNorm weights 1; padded wte rows 0. Reproducible from seed.
void gpt2_init_weights(gpt2 *model, uint64_t seed);

// Forward over inputs (B,T) (B <= model->B, T <= model->T). With targets (B,T), computes the
// per-token losses and returns their mean; with dloss != 0 it also writes dlogits =
// dloss * (softmax - onehot) in the same pass, OVER the logits in acts (dloss is d objective /
// d each token's loss, e.g. 1/(B*T*accum)). With targets NULL, or dloss = 0, the logits stay.
float gpt2_forward(gpt2 *model, const int *inputs, const int *targets, int B, int T, float dloss);
// Backward of the last forward (which must have had targets and dloss != 0); ACCUMULATES
// into model->grads. Call gpt2_zero_grad first for a fresh step.
void gpt2_backward(gpt2 *model);
// Makes the gradients zero as far as any reader can tell, in O(1): the next gpt2_backward
// writes them rather than adding to them (its first products use beta = 0, the few small
// tensors that only accumulate are cleared there). Read the gradients only after a backward.
void gpt2_zero_grad(gpt2 *model);
// ZeRO-1: keep AdamW moments only for the arena range [lo, hi) (floats of the parameter
// arena); m and v are reallocated to that size and AdamW updates only that range.
void gpt2_shard_moments(gpt2 *model, size_t lo, size_t hi);
// Sum of squares of the gradients over [moment_lo, moment_hi), fixed order.
double gpt2_grad_sumsq(const gpt2 *model);
// Global L2 norm of the gradients on one rank (sqrt of gpt2_grad_sumsq).
float gpt2_grad_norm(const gpt2 *model);
// One AdamW step t (from 1) over the parameters in [moment_lo, moment_hi); weight decay only on the 2-D weights
// (wte, wpe, qkvw, attprojw, fcw, fcprojw), as GPT-2 trainers do. If clip > 0 and
// grad_norm > clip, gradients are scaled by clip / grad_norm first.
void gpt2_adamw(gpt2 *model, float lr, float beta1, float beta2, float eps, float weight_decay, int t,
                float clip, float grad_norm);
// True for the tensors that get weight decay.
int gpt2_param_decays(int param_index);
