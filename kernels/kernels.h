// kernels.h — the pure ops of a GPT-2: forward and backward pairs, OpenMP-parallel.
// No MPI, no files, no model. Conventions (llm.c's): outputs first, then saved tensors,
// inputs, weights, dimensions; inputs are const; every *_backward ACCUMULATES (+=)
// into its gradient outputs. Shapes are in the comments; N = B*T rows.
// Determinism: no OpenMP reduction or atomics; every sum has a fixed order, so results
// are bit-identical for the same thread count (and independent of it where noted).
#pragma once
#include <stddef.h>

// ---- generic single-threaded GEMM on strided row-major matrices ---------------------
// C (M,N) = alpha * op(A) (M,K) @ op(B) (K,N) + beta * C, op(X) = X or X^T.
// lda/ldb/ldc are row strides in floats of the matrices as stored. beta = 0 never reads C.
void gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
          const float *B, int ldb, float beta, float *C, int ldc);
// The plain triple loop (float accumulation, same contract): the oracle for gemm.
void gemm_ref(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc);

// ---- float exp and tanh that loops can vectorise (the kernels' softmaxes and GELU) -------
// Within ~2 ulp of the true value. sm_expf: 0 below about -104, inf above 88.72, NaN in NaN out.
#pragma omp declare simd notinbranch
float sm_expf(float x) __attribute__((const));
#pragma omp declare simd notinbranch
float sm_tanhf(float x) __attribute__((const));

// ---- token + position embedding ------------------------------------------------------
// inp is (B,T) token ids, wte is (Vp,C), wpe is (maxT,C); out is (B,T,C)
void encoder_forward(float *out, const int *inp, const float *wte, const float *wpe, int B, int T, int C);
// dwte (Vp,C) += scatter of dout by token; dwpe (maxT,C) += sum over batch. dout is (B,T,C)
void encoder_backward(float *dwte, float *dwpe, const float *dout, const int *inp, int B, int T, int C);

// ---- LayerNorm (eps 1e-5) --------------------------------------------------------------
// inp is (N,C), weight and bias are (C); out is (N,C), mean and rstd are (N) (saved)
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                       const float *bias, int N, int C);
// dinp (N,C) +=, dweight (C) +=, dbias (C) +=
void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, const float *mean, const float *rstd, int N, int C);

// ---- linear: out = inp @ weight^T + bias ------------------------------------------------
// inp is (N,C), weight is (OC,C), bias is (OC) or NULL; out is (N,OC)
void matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N, int C, int OC);
// dinp (N,C) += dout @ weight; dweight (OC,C) += dout^T @ inp; dbias (OC) += colsum(dout)
// (dbias may be NULL). dout is (N,OC)
void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, int N, int C, int OC);

// ---- causal multi-head self-attention, as batched matrix products ------------------------
// qkv is (B,T,3C) holding q, k, v each (NH heads x hs = C/NH); out is (B,T,C);
// att is (B,NH,T,T): the softmax probabilities, saved for backward (row t has t+1 valid
// entries; masked entries are written 0 and exp() is never evaluated for them).
void attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH);
// dqkv (B,T,3C) +=; datt is (B,NH,T,T) scratch (overwritten); dout is (B,T,C)
void attention_backward(float *dqkv, float *datt, const float *dout, const float *qkv, const float *att,
                        int B, int T, int C, int NH);

// ---- GELU, tanh approximation ------------------------------------------------------------
void gelu_forward(float *out, const float *inp, size_t n);
// dinp += gelu'(inp) * dout
void gelu_backward(float *dinp, const float *inp, const float *dout, size_t n);

// ---- residual ------------------------------------------------------------------------------
void residual_forward(float *out, const float *inp1, const float *inp2, size_t n);
// dinp1 += dout; dinp2 += dout
void residual_backward(float *dinp1, float *dinp2, const float *dout, size_t n);

// ---- fused softmax + cross-entropy ----------------------------------------------------------
// logits is (N,Vp) of which the first V columns are real; targets is (N).
// losses (N) gets -log p[target]. If dlogits is non-NULL, it gets (p - onehot) * dloss over
// the first V columns and 0 over the padding, in the same pass (dlogits may alias logits).
// Padded columns never enter the softmax. Returns the sum of the N losses (in double,
// summed in a fixed order).
double softmax_xent(float *losses, float *dlogits, const float *logits, const int *targets, int N, int V,
                    int Vp, float dloss);

// ---- AdamW (decoupled weight decay, bias-corrected) ------------------------------------------
// params, grads, m, v are (n); step t counts from 1. Updates params, m, v in place:
//   m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; mhat = m/(1-b1^t); vhat = v/(1-b2^t)
//   p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p)
void adamw_update(float *params, const float *grads, float *m, float *v, size_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, int t);

// ---- gradient norm, clipping -----------------------------------------------------------------
// Sum of squares of g (n) in double, fixed-order (independent of thread count).
double sum_squares(const float *g, size_t n);
void scale_inplace(float *x, float s, size_t n);
