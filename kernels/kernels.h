// kernels.h — the pure ops of a GPT-2: forward and backward pairs, OpenMP-parallel.
// No MPI, no files, no model. Conventions (llm.c's): outputs first, then saved tensors,
// inputs, weights, dimensions; inputs are const; every *_backward ACCUMULATES (+=)
// into its gradient outputs, except where its comment says otherwise (matmul_backward,
// gelu_backward, attention_backward). Shapes are in the comments; N = B*T rows.
// Determinism: no OpenMP reduction or atomics; every sum has a fixed order, so results
// are bit-identical for the same thread count (and independent of it where noted).
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <string.h>

// ---- CPU features and code paths (cpu.c) ------------------------------------------------------
// The optimised kernels pick their code path at run time from the CPU features that are both
// present (cpuid, with the OS's consent through xgetbv; AMX also needs Linux's permission) and
// allowed (kernels_cpu_allow: tests compare the paths, the bench times them), so a portable build
// still runs the fast paths where it can. Results are bit-identical for the same thread count and
// the same paths (and independent of the thread count where noted).
enum {
    KERNELS_CPU_AVX2 = 1u << 0,
    KERNELS_CPU_FMA = 1u << 1,
    KERNELS_CPU_AVX512F = 1u << 2,
    KERNELS_CPU_AVX512BW = 1u << 3,
    KERNELS_CPU_AVX512VL = 1u << 4,
    KERNELS_CPU_AVX512_BF16 = 1u << 5,
    KERNELS_CPU_AVX512_VNNI = 1u << 6,
    KERNELS_CPU_AVX_VNNI = 1u << 7,
    KERNELS_CPU_AMX_BF16 = 1u << 8,
    KERNELS_CPU_AMX_INT8 = 1u << 9,
    KERNELS_CPU_N_FEATURES = 10,
    KERNELS_CPU_ALL = (1u << KERNELS_CPU_N_FEATURES) - 1,
};
unsigned kernels_cpu_detect(void);     // the features this CPU and OS offer (read once; thread-safe)
unsigned kernels_cpu_features(void);   // those kernels may use now: detect() & the allowed mask
// Kernels may use only the features in mask (KERNELS_CPU_ALL, the default: all the CPU has; 0:
// plain C). Returns kernels_cpu_features(). Call it outside parallel regions.
unsigned kernels_cpu_allow(unsigned mask);
const char *kernels_cpu_feature_name(unsigned feature);   // one KERNELS_CPU_* bit: "avx512_vnni"
// The names of the features in mask, space-separated ("none" for 0), into buf (size bytes).
// Returns the length, or -1 if it did not fit (buf then holds a truncated, terminated string).
int kernels_cpu_describe(char *buf, size_t size, unsigned mask);

// Named feature masks, from plain C up: scalar, avx2 (+fma), avx-vnni, avx512 (f, bw, vl),
// avx512-vnni, native (everything). kernels_cpu_allow(level->mask) selects one; a level asks for
// no more than it names, so on a CPU without some of its features the kernels fall back further.
typedef struct {
    const char *name;
    unsigned mask;
} kernels_cpu_level;
int kernels_cpu_levels(const kernels_cpu_level **levels);    // sets *levels, returns how many
const kernels_cpu_level *kernels_cpu_level_find(const char *name);   // NULL if there is none

// The ops that have more than one code path, and the name of the path each takes now
// ("avx512-vnni", "avx512", "avx-vnni", "avx2" or "c"): for the bench's and the tests' output.
typedef enum {
    KERNELS_OP_GEMM_F32,       // the GEMM engine, fp32 (gemm*, matmul_*, attention's plain path)
    KERNELS_OP_GEMM_Q8,        // the GEMM engine, fp32 activations x int8 weights (matmul_forward_q8*)
    KERNELS_OP_ATTENTION,      // flash attention, 64-wide heads
    KERNELS_OP_GELU,           // gelu_forward/backward and the GEMM's GELU epilogue
    KERNELS_OP_LAYERNORM,      // layernorm_backward
    KERNELS_OP_SOFTMAX_XENT,   // softmax_xent
    KERNELS_OP_GEMM_BF16,      // the GEMM engine, bf16 operands, fp32 sums (gemm_bf16, matmul_*_bf16)
    KERNELS_OP_COUNT
} kernels_op;
const char *kernels_path(kernels_op op);
const char *kernels_op_name(kernels_op op);   // "gemm f32", ...

// ---- floating-point environment --------------------------------------------------------------
// Flush-to-zero and denormals-are-zero on (on = 1) or off for the calling thread and every thread
// of the OpenMP pool. Training turns it on before its first step: AdamW's moments of parameters
// that get no gradient (embedding rows of unseen tokens) decay through the denormal range for
// hundreds of steps, and arithmetic on denormals takes microcode assists (AdamW ~15x slower here).
// Returns 1 where the CPU has the modes (x86), else 0 (and changes nothing). Call it outside
// parallel regions.
int kernels_flush_denormals(int on);
int kernels_denormals_flushed(void);   // both modes on in the calling thread

// ---- generic single-threaded GEMM on strided row-major matrices ---------------------
// C (M,N) = alpha * op(A) (M,K) @ op(B) (K,N) + beta * C, op(X) = X or X^T.
// lda/ldb/ldc are row strides in floats of the matrices as stored. beta = 0 never reads C.
// Cache-blocked and packed, with a register-tiled micro-kernel for the CPU path in use; the
// packing buffers (~0.9 MiB) are on the caller's stack (no heap), so threads that call it need
// a stack of at least ~1.5 MiB (glibc's default is 8 MiB; see OMP_STACKSIZE).
void gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
          const float *B, int ldb, float beta, float *C, int ldc);
// The same product over the threads of an OpenMP team that this call opens (tiles of the output,
// split so that each thread packs only its share of the larger operand). Every element is
// summed in the same order as gemm() does, so the result is independent of the thread count.
void gemm_mt(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
             int ldb, float beta, float *C, int ldc);
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
// res (N,C) = inp1 + inp2 (the residual stream), then out, mean, rstd = LayerNorm(res), in one
// pass over the rows; equal, bit for bit, to residual_forward followed by layernorm_forward.
void residual_layernorm_forward(float *res, float *out, float *mean, float *rstd, const float *inp1,
                                const float *inp2, const float *weight, const float *bias, int N, int C);
// layernorm_forward and residual_layernorm_forward on the calling thread alone (no OpenMP region),
// the same bits: for a caller inside its own parallel region (the decode step's one row).
void layernorm_forward_serial(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                              const float *bias, int N, int C);
void residual_layernorm_forward_serial(float *res, float *out, float *mean, float *rstd, const float *inp1,
                                       const float *inp2, const float *weight, const float *bias, int N, int C);
// dinp (N,C) +=, dweight (C) +=, dbias (C) +=
void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, const float *mean, const float *rstd, int N, int C);

// ---- linear: out = inp @ weight^T + bias ------------------------------------------------
// inp is (N,C), weight is (OC,C), bias is (OC) or NULL; out is (N,OC). N = 1 (a decode step) packs
// nothing and streams the weight once (memory-bound), with each output summed in the order the
// packed GEMM sums it: a row's result has the same bits at N = 1 as inside a larger N.
void matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N, int C, int OC);
// The same, and out_gelu (N,OC) = gelu(out) in the same pass (the MLP's first layer: out is the
// pre-activation backward needs). Equal, element for element, to matmul_forward + gelu_forward.
void matmul_forward_gelu(float *out, float *out_gelu, const float *inp, const float *weight, const float *bias, int N,
                         int C, int OC);
// dinp (N,C) = dout @ weight, OVERWRITTEN (a linear layer's input has one consumer in GPT-2, so
// no caller needs to clear it first); dweight (OC,C) += dout^T @ inp and dbias (OC) += colsum(dout)
// (dbias may be NULL) when accumulate, else = (a step's first micro-batch writes the parameter
// gradients instead of adding to zeros: no clearing pass over them). dout is (N,OC). The one
// departure from "backward accumulates": BLAS's beta, with the same effect as clear-then-add.
void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, int N, int C, int OC, int accumulate);
// Share `part` of `parts` of matmul_forward (out_gelu NULL) or matmul_forward_gelu: the output
// tile thread `part` of a team of `parts` computes there, on the calling thread alone (no OpenMP
// region). For a caller inside its own parallel region (the decode step: one region per token,
// not one per op), each of whose `parts` threads calls it with its own part; once all have
// returned (a barrier), out holds matmul_forward's result, bit for bit.
void matmul_forward_part(float *out, float *out_gelu, const float *inp, const float *weight, const float *bias, int N,
                         int C, int OC, int part, int parts);
// Weights packed once for the fp32 GEMM (inference: the weights do not change between calls, so
// the GEMM's per-call packing of the weight, and a decode step's 16 x 16 transposes of it, are done
// once at load). matmul_pack_weight writes weight (OC,C) into dst (matmul_packed_bytes(OC, C)
// bytes, 64-byte aligned) as the fp32 path in use packs it: ceil(OC/w) panels of w =
// matmul_packed_width() rows, each column-major (C x w floats, rows past OC zero); OpenMP inside.
// matmul_forward_packed is matmul_forward (out_gelu NULL) or matmul_forward_gelu with the packed
// weight, bit for bit, at any N (N = 1 reads the panels as they lie); _part its share as
// matmul_forward_part. width: the panel width it was packed with (checked against the path's: the
// path must not change in between).
int matmul_packed_width(void);
size_t matmul_packed_bytes(int OC, int C);
void matmul_pack_weight(void *dst, const float *weight, int OC, int C);
void matmul_forward_packed(float *out, float *out_gelu, const float *inp, const void *wp, int width, const float *bias,
                           int N, int C, int OC);
void matmul_forward_packed_part(float *out, float *out_gelu, const float *inp, const void *wp, int width,
                                const float *bias, int N, int C, int OC, int part, int parts);

// ---- INT8 linear layers: int8 weights with per-group scales (gemm_q8.c) -------------------------
// A weight W (rows,cols) = (OC,IC) is stored as q (rows,cols) int8 in [-127, 127] and scales
// (rows, ceil(cols/group)) float: one scale per group of `group` consecutive elements along a
// row (the input dimension), symmetric: scale = max|w| / 127, q = round(w / scale) (ties to even),
// so |w - q scale| <= scale/2 (plus a float rounding or two). group: a multiple of 4 in
// [4, KERNELS_Q8_MAX_GROUP]; 64 by default in the model. Quantize once, at load (OpenMP over rows).
// The method: symmetric per-group ("block") quantization as in ggml's Q8_0 and llama2.c's runq.c.
#define KERNELS_Q8_MAX_GROUP 512
void q8_quantize(int8_t *q, float *scales, const float *w, int rows, int cols, int group);
// w (rows,cols) = q * its group's scale (the weights the INT8 products use, in float)
void q8_dequantize(float *w, const int8_t *q, const float *scales, int rows, int cols, int group);
// out (N,OC) = inp (N,IC=C) @ W^T + bias with W as (wq, wscale) above. Each row of inp is quantized
// the same way per group at run time (in the GEMM's packing: no buffer, no heap), the products of a
// group are summed exactly in int32 (AVX-512 VNNI vpdpbusd, AVX-VNNI, AVX2 vpmaddubsw, or plain C,
// chosen like the fp32 GEMM's path), and each output is
//   bias (or 0), then + isum(g) * (sx(g) * sw(g)) for each group g in order (fused multiply-add),
// so every path, every thread count and N = 1 (a decode step, which quantizes its one row and
// reads each weight once, without packing) give the same bits. N = 0 does nothing.
void matmul_forward_q8(float *out, const float *inp, const int8_t *wq, const float *wscale, const float *bias, int N,
                       int C, int OC, int group);
// The same, and out_gelu (N,OC) = gelu(out) in the same pass (as matmul_forward_gelu).
void matmul_forward_q8_gelu(float *out, float *out_gelu, const float *inp, const int8_t *wq, const float *wscale,
                            const float *bias, int N, int C, int OC, int group);
// Share `part` of `parts` of matmul_forward_q8 (out_gelu NULL) or _gelu, as matmul_forward_part.
void matmul_forward_q8_part(float *out, float *out_gelu, const float *inp, const int8_t *wq, const float *wscale,
                            const float *bias, int N, int C, int OC, int group, int part, int parts);
// INT8 weights packed once (inference), as matmul_pack_weight does for float32: the q8 path's own
// packing of the weight and its scales, done at load. matmul_q8_packed_bytes: the bytes of one
// packed (OC,C) matrix, or 0 when the path in use has no packed form (then use the plain forms) or
// group does not divide C. matmul_forward_q8_packed (_gelu when out_gelu is non-NULL) and _part:
// matmul_forward_q8's results, bit for bit, at any N; the path must not change after packing.
size_t matmul_q8_packed_bytes(int OC, int C, int group);
void matmul_q8_pack_weight(void *dst, const int8_t *wq, const float *wscale, int OC, int C, int group);
void matmul_forward_q8_packed(float *out, float *out_gelu, const float *inp, const void *wp, const float *bias, int N,
                              int C, int OC, int group);
void matmul_forward_q8_packed_part(float *out, float *out_gelu, const float *inp, const void *wp, const float *bias,
                                   int N, int C, int OC, int group, int part, int parts);

// ---- causal multi-head self-attention, flash-attention style (attention.c) -----------------
// qkv is (B,T,3C) holding q, k, v each (NH heads x hs = C/NH); out is (B,T,C); lse is (B,NH,T):
// each query row's log-sum-exp of its scaled scores (O(T) per head, saved for backward instead
// of the (T,T) probabilities). Fully masked key blocks are skipped; exp() is never evaluated for
// a masked position.
void attention_forward(float *out, float *lse, const float *qkv, int B, int T, int C, int NH);
// dqkv (B,T,3C) = the gradient, OVERWRITTEN (every element, for every position and head: qkv's
// gradient has this one producer in GPT-2, so no caller needs to clear it first); dout and out
// are (B,T,C), qkv and lse as saved by forward. The probabilities are recomputed block by block
// from lse. The other departure from "backward accumulates": each element's first contribution
// is written (beta = 0), later ones added, with the same effect as clear-then-add.
void attention_backward(float *dqkv, const float *dout, const float *out, const float *qkv, const float *lse, int B,
                        int T, int C, int NH);
// One head: nq queries q (nq,hs) at positions pos0..pos0+nq-1, each attending to keys 0..its own
// position of k, v (pos0+nq, hs); out (nq,hs); lse (nq) or NULL. Row strides ldo, ldq, ldk, ldv.
// attention_forward runs this per (batch, head) with pos0 = 0; a KV-cache decode step is nq = 1,
// pos0 = the number of cached positions.
void attention_head_forward(float *out, int ldo, float *lse, const float *q, int ldq, const float *k, int ldk,
                            const float *v, int ldv, int nq, int pos0, int hs);

// The bf16 form (attention_bf16.c): the same contracts, with every product's operands rounded to bf16
// (q, k, v, the probabilities, dO and dS; bf16_from_f32) and summed in float32 by vdpbf16ps; the
// softmax (running max and sum), lse and D = rowsum(dO O) stay float32. 64-wide heads on AVX512-BF16;
// other head sizes (or CPUs) run the float32 kernels above. Bit-identical for any thread count; the
// decode form (nq = 1) reproduces a row of the full forward.
void attention_forward_bf16(float *out, float *lse, const float *qkv, int B, int T, int C, int NH);
void attention_backward_bf16(float *dqkv, const float *dout, const float *out, const float *qkv, const float *lse,
                             int B, int T, int C, int NH);
void attention_head_forward_bf16(float *out, int ldo, float *lse, const float *q, int ldq, const float *k, int ldk,
                                 const float *v, int ldv, int nq, int pos0, int hs);

// ---- the same attention as batched matrix products (attention_ref.c): the reference ------------
// att is (B,NH,T,T): the softmax probabilities (row t has t+1 valid entries; masked entries are
// written 0 and exp() is never evaluated for them).
void attention_forward_ref(float *out, float *att, const float *qkv, int B, int T, int C, int NH);
// dqkv (B,T,3C) +=; datt is (B,NH,T,T) scratch (overwritten); dout is (B,T,C)
void attention_backward_ref(float *dqkv, float *datt, const float *dout, const float *qkv, const float *att,
                            int B, int T, int C, int NH);

// ---- GELU, tanh approximation ------------------------------------------------------------
void gelu_forward(float *out, const float *inp, size_t n);
// dinp (n) = gelu'(inp) * dout: OVERWRITES dinp (written, never read)
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

// The same loss pass without dlogits, saving instead each row's max (row_max) and 1/sum of its
// exps (row_inv), (N) each: what lm_head_backward needs to recompute dlogits. losses and the
// returned sum are softmax_xent's, bit for bit.
double softmax_xent_stats(float *losses, float *row_max, float *row_inv, const float *logits, const int *targets, int N,
                          int V, int Vp);

// ---- the LM head's backward, fused with the loss gradient (lm_head.c) ---------------------------
// The tied LM head logits (N,Vp) = inp (N,C) @ wte^T, backward: with dlogits (N,Vp) = (softmax -
// onehot(targets)) * dloss over the first V columns and 0 over the padding,
//   dinp (N,C) = dlogits @ wte (overwritten), dwte (Vp,C) = dlogits^T @ inp (+= when accumulate, else =).
// dlogits are recomputed from the logits and the row statistics of softmax_xent_stats, one block
// of KC vocabulary columns x KC rows at a time into a buffer that stays in cache, and fed to both
// products there: never written whole, and the logits read once (the unfused pair,
// softmax_xent with dlogits then matmul_backward, writes dlogits over the logits and reads them
// twice more). Bit for bit what that pair gives, on every path and thread count.
void lm_head_backward(float *dinp, float *dwte, const float *logits, const float *row_max, const float *row_inv,
                      const int *targets, const float *inp, const float *wte, int N, int C, int V, int Vp, float dloss,
                      int accumulate);

// ---- AdamW (decoupled weight decay, bias-corrected) ------------------------------------------
// params, grads, m, v are (n); step t counts from 1. Updates params, m, v in place, in one pass:
//   g = grad_scale * grads (the global-norm clip; 1 for none; grads is not modified)
//   m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; mhat = m/(1-b1^t); vhat = v/(1-b2^t)
//   p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p)
// Its threads are the calling team's; called inside a parallel region, it runs on the calling thread
// alone (so does adamw_update_bf16).
void adamw_update(float *params, const float *grads, float *m, float *v, size_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, float grad_scale, int t);

// ---- bfloat16: conversion, the bf16 GEMM, AdamW's bf16 copy (bf16.c, gemm_bf16.c) -----------
// bf16 values are uint16_t: the top half of a float32. From float32: round to nearest, ties to even
// (on the bits: x + 0x7FFF + the kept part's lowest bit, then the top half; a carry into the
// exponent rounds up correctly, the largest floats to inf); NaN stays NaN (quiet: bit 6 set, sign
// and top payload kept); +-inf stays +-inf; denormal inputs become zero of the same sign: the
// flush mode of vcvtneps2bf16, which reads no MXCSR and always flushes, so the plain-C path flushes
// too and both give the same bits whatever kernels_flush_denormals says. (Every bf16 value is exact
// as a float32.) Method: Intel's convert_fp32_to_bfloat16 pseudo-code (AVX512-BF16 reference).
static inline uint16_t bf16_from_f32(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    uint32_t r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    r = (u & 0x7F800000u) == 0 ? (u >> 16) & 0x8000u : r;      // zero or denormal: signed zero
    r = (u & 0x7FFFFFFFu) > 0x7F800000u ? (u >> 16) | 0x40u : r;   // NaN: quiet NaN
    return (uint16_t)r;
}
static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}
// dst (n) = bf16(src) / src (n) = float(bf16), OpenMP over chunks; the same bits on every path.
void bf16_from_f32_array(uint16_t *dst, const float *src, size_t n);
void bf16_to_f32_array(float *dst, const uint16_t *src, size_t n);
// 1 when the bf16 GEMM has its AVX512-BF16 path (vdpbf16ps) on this CPU with the allowed features:
// training or inference in bf16 asks for this and refuses to run otherwise (the plain-C path exists
// for tests and is far slower than fp32).
int kernels_bf16_available(void);

// The bf16 GEMM: C (M,N) = alpha op(A) op(B) + beta C with A, B, C float32 in memory; op(A) and
// op(B) are rounded to bf16 (bf16_from_f32) as the engine packs them, every product of two bf16
// values is exact in float32, and the sums run in float32: per K block of 512 (KC), a chain over
// the pairs of k (vdpbf16ps: acc += a(2p+1) b(2p+1), then + a(2p) b(2p), one float32 rounding each,
// as Intel documents it), then C = alpha acc + beta C for the first block (+ the epilogue's bias),
// C = alpha acc + C after it. An element's value depends only on its operands (never on M, N, the
// tiling or the thread count). Error against the exact sum of the rounded operands:
// |C - sum| <= (K + 2) u (sum_k |a_k b_k| + |beta C| + |bias|), u = 2^-24 (each of at most K + 2
// float32 roundings is within u of its result, and partial sums are bounded by the absolute sum).
// gemm_bf16_parallel splits over the threads of an OpenMP team it opens, with the same bits.
void gemm_bf16(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
               int ldb, float beta, float *C, int ldc);
void gemm_bf16_parallel(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                        const float *B, int ldb, float beta, float *C, int ldc);
// Linear layers with bf16 weights (W (OC,C) as bf16, e.g. AdamW's copy): matmul_forward's,
// matmul_forward_gelu's and matmul_backward's contracts, shapes and epilogues, with the products on
// the bf16 GEMM (inp and dout rounded to bf16 as they are packed; the weight read as it is).
// dweight (OC,C) = dout^T inp in bf16 products, float32 sums; dbias in double, as matmul_backward.
void matmul_forward_bf16(float *out, const float *inp, const uint16_t *weight, const float *bias, int N, int C, int OC);
void matmul_forward_bf16_gelu(float *out, float *out_gelu, const float *inp, const uint16_t *weight, const float *bias,
                              int N, int C, int OC);
void matmul_backward_bf16(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                          const uint16_t *weight, int N, int C, int OC, int accumulate);
// Share `part` of `parts` of matmul_forward_bf16 (out_gelu NULL) or _gelu, as matmul_forward_part.
void matmul_forward_bf16_part(float *out, float *out_gelu, const float *inp, const uint16_t *weight, const float *bias,
                              int N, int C, int OC, int part, int parts);

// The instruction peak probe of `bench kernels`: n iterations of 16 independent 512-bit FMAs
// (bf16 = 0) or vdpbf16ps (bf16 = 1) on each thread of an OpenMP team it opens, from registers (no
// memory operand). Returns the floating-point operations done (2 per FMA lane, 4 per vdpbf16ps
// lane), 0 where the CPU (or the allowed features) lacks the instruction. Timing two calls gives
// this CPU's ratio of bf16 to fp32 peak rates, the bf16 GEMM's ceiling against the fp32 one.
double kernels_peak_loop(int bf16, long n);

// adamw_update, and params_bf16 (n) = bf16(the updated params) in the same pass: the bf16 copy of
// the weights that the bf16 products read, made once per step with no pass of its own. The
// float32 arithmetic is adamw_update's, bit for bit.
void adamw_update_bf16(float *params, uint16_t *params_bf16, const float *grads, float *m, float *v, size_t n,
                       float lr, float beta1, float beta2, float eps, float weight_decay, float grad_scale, int t);

// ---- gradient norm, clipping -----------------------------------------------------------------
// Sum of squares of g (n) in double, fixed-order (independent of thread count).
double sum_squares(const float *g, size_t n);
void scale_inplace(float *x, float s, size_t n);
