// ops.h — (internal to trainer/) the kernels as the model calls them. Each op runs its kernel and
// reports the call to the profiler with the op's FLOP and byte counts, so the model's functions
// read one line per op, as llm.c's gpt2_forward does. The linear ops read their weight as a
// tensor and dispatch on its dtype.
//
// Bytes are what an op must move at the least: its inputs read once and its outputs written once.
// N = B*T rows; shapes as in kernels.h.
#pragma once
#include <stddef.h>

#include "common.h"
#include "trainer.h"

// out (B,T,C) = wte[inp] + wpe[t]
void op_encoder_forward(float *out, const int *inp, const float *wte, const float *wpe, int B, int T, int C);
// dwte (Vp,C) += scatter of dout by token; dwpe += sum over the batch
void op_encoder_backward(float *dwte, float *dwpe, const float *dout, const int *inp, int B, int T, int C);

void op_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w, const float *b,
                          int N, int C);
// res = inp1 + inp2, then out = LayerNorm(res)
void op_residual_layernorm_forward(float *res, float *out, float *mean, float *rstd, const float *inp1,
                                   const float *inp2, const float *w, const float *b, int N, int C);
void op_layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                           const float *mean, const float *rstd, int N, int C);

// out (N,OC) = inp (N,C) @ W^T + bias, W the (OC,C) matrix `layer` of tensor w (a (L,OC,C) or
// (OC,C) tensor); bias (OC) or NULL. name labels the profile row (a string literal).
void op_linear_forward(const char *name, float *out, const float *inp, const sm_tensor *w, int layer,
                       const float *bias, int N, int C, int OC);
// The same, and out_gelu = gelu(out) in the same pass.
void op_linear_gelu_forward(const char *name, float *out, float *out_gelu, const float *inp, const sm_tensor *w,
                            int layer, const float *bias, int N, int C, int OC);
// Team forms, for the decode step's one OpenMP region (gpt2.c): called by every thread of the
// region. _team ops split the work over the threads and end with a barrier (the result is then
// complete for all); _own ops compute the whole (one-row) result into the calling thread's own
// output, so that no barrier is needed. Thread 0 reports each to the profiler. The same kernels
// on the same tiles as the ops above: the same bits.
//
// op_linear_forward (out_gelu NULL) or op_linear_gelu_forward, each thread the output columns
// gemm_run_parallel would give it.
void op_linear_forward_team(const char *name, float *out, float *out_gelu, const float *inp, const sm_tensor *w,
                            int layer, const float *bias, int N, int C, int OC);
// dinp (N,C) = dout @ W (overwritten); dweight (OC,C) and dbias (OC, or NULL) written when
// !accumulate, added to otherwise. W as in op_linear_forward (SM_F32: float32 products; SM_BF16: the
// products on the bf16 GEMM, dweight included).
void op_linear_backward(const char *name, float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const sm_tensor *w, int layer, int N, int C, int OC, int accumulate);

// prec: SM_F32, or SM_BF16 for the bf16 form (the products' operands in bf16; kernels.h)
void op_attention_forward(float *out, float *lse, const float *qkv, int B, int T, int C, int NH, sm_dtype prec);
void op_attention_backward(float *dqkv, const float *dout, const float *out, const float *qkv, const float *lse,
                           int B, int T, int C, int NH, sm_dtype prec);

// Attention of n_rows rows of T new positions against each row's KV cache: the new keys and values
// (from qkv (n_rows,T,3C)) are written into the cache first (row r's at kcache/vcache + r*maxT*C,
// positions pos[r]..pos[r]+T-1), then out (n_rows,T,C) = causal attention of each new query over
// the row's cached positions 0..its own. rows (n_rows): the cache row of each row.
void op_attention_cached(float *out, const float *qkv, float *kcache, float *vcache, const int *rows, const int *pos,
                         int n_rows, int T, int C, int NH, int maxT, sm_dtype prec);

// op_attention_cached of one row's one new position (at pos), each thread its share of the heads:
// kcache, vcache are the row's (maxT,C) cache; qkv (3C), out (C).
void op_attention_cached_team(float *out, const float *qkv, float *kcache, float *vcache, int pos, int C, int NH,
                              sm_dtype prec);
// out (C) = wte[token] + wpe[pos]; LayerNorm and residual + LayerNorm of one row (C), as the ops
// above with N = 1, on the calling thread (its own copy; mean and rstd its own too).
void op_encoder_forward_own(float *out, int token, int pos, const float *wte, const float *wpe, int C);
void op_layernorm_forward_own(float *out, float *mean, float *rstd, const float *inp, const float *w, const float *b,
                              int C);
void op_residual_layernorm_forward_own(float *res, float *out, float *mean, float *rstd, const float *inp1,
                                       const float *inp2, const float *w, const float *b, int C);

// dinp (n) = gelu'(inp) * dout (overwritten)
void op_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n);

// Fused softmax + cross-entropy over the first V of Vp columns; dlogits (may alias logits) or
// NULL. Returns the sum of the N losses.
double op_softmax_xent(float *losses, float *dlogits, const float *logits, const int *targets, int N, int V, int Vp,
                       float dloss);

// The same loss pass saving each row's max and 1/sum of exps (row_max, row_inv (N)) for
// op_lm_head_backward instead of writing dlogits.
double op_softmax_xent_stats(float *losses, float *row_max, float *row_inv, const float *logits, const int *targets,
                             int N, int V, int Vp);
// The tied LM head's backward with the loss gradient fused (lm_head_backward): dinp (N,C) =,
// dwte (Vp,C) (+)=, dlogits recomputed from the logits and the row statistics.
void op_lm_head_backward(float *dinp, float *dwte, const float *logits, const float *row_max, const float *row_inv,
                         const int *targets, const float *inp, const float *wte, int N, int C, int V, int Vp,
                         float dloss, int accumulate);

// memset of n floats, profiled as `name` in phase
void op_clear(const char *name, prof_phase phase, float *x, size_t n);
