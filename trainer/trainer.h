// trainer.h — the trainer folder's one header: the GPT-2 model by lifetime (weights, activations,
// training state), AdamW, one training step, the run log, the profiler and the subcommands.
//
// Objects by lifetime (DESIGN.md's Model section):
//   gpt2_weights  config + parameter arena: exactly what a checkpoint's /model holds
//   gpt2_acts     activations for a batch (B,T): every layer's kept for backward (training), or
//                 one layer's reused by every layer (inference)
//   gpt2_train    the training state: gradients, the activations backward needs and their gradients
//   adamw_state   the optimizer: AdamW moments over a range of the parameter arena (ZeRO-1 slice)
//   trainer       one data-parallel training run's objects, and train_step() over them
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "checkpoints.h"
#include "comm.h"
#include "common.h"
#include "data.h"

// =============================================================================================
// Model: GPT-2 (pre-LayerNorm blocks, GELU-tanh MLP, LM head tied to wte). Shapes in DESIGN.md.

// The 16 parameter tensors, in checkpoint order (llm.c's names and shapes).
enum {
    P_WTE, P_WPE, P_LN1W, P_LN1B, P_QKVW, P_QKVB, P_ATTPROJW, P_ATTPROJB,
    P_LN2W, P_LN2B, P_FCW, P_FCB, P_FCPROJW, P_FCPROJB, P_LNFW, P_LNFB,
    NUM_PARAM_TENSORS
};

// Activations (per-layer ones have a leading layer-slot dimension). Attention saves the per-row
// log-sum-exp (slots,B,NH,T), not the (T,T) probabilities (flash attention recomputes them).
enum {
    A_ENCODED, A_LN1, A_LN1_MEAN, A_LN1_RSTD, A_QKV, A_ATTY, A_ATT_LSE, A_ATTPROJ, A_RESIDUAL2,
    A_LN2, A_LN2_MEAN, A_LN2_RSTD, A_FCH, A_FCH_GELU, A_FCPROJ, A_RESIDUAL3,
    A_LNF, A_LNF_MEAN, A_LNF_RSTD, A_LOGITS, A_LOSSES, A_LOSS_MAX, A_LOSS_INV,
    NUM_ACT_TENSORS
};

// Fills padded_vocab_size; returns 0, or -1 with a reason (e.g. heads not dividing embd).
int gpt2_config_validate(sm_model_config *cfg, char *err, size_t errlen);
// Parameter shapes for a config, in checkpoint order (f32).
void gpt2_param_table(sm_table *tab, const sm_model_config *cfg);
// The checkpoints' view of the model (checkpoints.h's ckpt_layout_fn): the parameter tensors a
// GPT-2 of config cfg has, after checking cfg (gpt2_config_validate, and padded_vocab_size as it
// follows from vocab_size). 0, or -1 with a reason in err.
int ckpt_layout_gpt2(const sm_model_config *cfg, sm_table *params, char *err, size_t errlen);
// True for the tensors that get weight decay: the 2-D weights (wte, wpe, qkvw, attprojw, fcw,
// fcprojw), as GPT-2 trainers do.
int gpt2_param_decays(int param_index);

typedef struct {
    sm_model_config cfg;
    sm_table params;   // NUM_PARAM_TENSORS f32 views into one arena
    size_t n_params;   // real parameter count (without the padding between tensors)
    // What forward reads for each parameter: &params.t[i] by default. An inference path may point
    // a matrix at a copy in another dtype (the linear ops dispatch on the tensor's dtype).
    const sm_tensor *fwd[NUM_PARAM_TENSORS];
    sm_table q8;       // gpt2_weights_quantize: the matrices as SM_Q8 (count 0 without)
    sm_table packed;   // gpt2_weights_pack: the matrices as SM_F32P (count 0 without)
    sm_table q8p;      // gpt2_weights_quantize: the q8 matrices packed (SM_Q8P) where the path has a form
    sm_dtype precision;   // SM_F32, or SM_BF16 after gpt2_weights_set_precision
    sm_table bf16;     // SM_BF16: the whole arena in bf16, each tensor at its float32 element offset (so
                       // the flat index i of params is the flat index i here); count 0 without
} gpt2_weights;

// Allocates the parameter arena once (zeroed, touched).
void gpt2_weights_build(gpt2_weights *w, const sm_model_config *cfg);
void gpt2_weights_free(gpt2_weights *w);
// INT8 for inference: quantizes the weight matrices (qkvw, attprojw, fcw, fcprojw and wte as the
// tied LM head; the embedding lookup keeps reading wte in float32) to SM_Q8, symmetric, one scale per
// `group` consecutive inputs (q8_quantize), into one arena, and points fwd[] at them: forward's
// linear layers then run the INT8 GEMM. group divides C (and is a multiple of 4, at most 512); else
// -1 with a reason in err.
int gpt2_weights_quantize(gpt2_weights *w, int group, char *err, size_t errlen);
// Inference in float32: packs the matrices (qkvw, attprojw, fcw, fcprojw and wte as the LM head)
// once, as the fp32 GEMM packs a weight for each call (SM_F32P, matmul_pack_weight), into one arena,
// and points fwd[] at them: the forward then skips that packing, and a decode step reads the
// panels as they lie. The same bits. Costs a second copy of the matrices (~0.5 GB at 124M). Nothing
// with INT8 or bf16 weights (their own layouts) or when already packed. Training must not call it
// (backward and AdamW read params).
void gpt2_weights_pack(gpt2_weights *w);
// Mixed precision: SM_BF16 makes a bf16 copy of the whole parameter arena (rounded to nearest even,
// kernels.h's bf16_from_f32) and points fwd[] of the matrices (qkvw, attprojw, fcw, fcprojw and wte
// as the tied LM head) at it: every linear layer, forward and backward, then takes its products on
// the bf16 GEMM (operands bf16, sums float32), and attention its bf16 form; the parameters stay the
// float32 masters (the embedding lookup, LayerNorm and the biases read them). Training keeps the copy current in AdamW's
// pass (adamw_state.copy_bf16). SM_F32 is the default and changes nothing. -1 with a reason where the
// CPU has no AVX512-BF16 (or the allowed features exclude it), or with INT8 weights.
int gpt2_weights_set_precision(gpt2_weights *w, sm_dtype precision, char *err, size_t errlen);
// The bf16 copy from the float32 parameters again (after a checkpoint is loaded into them); nothing
// at SM_F32.
void gpt2_weights_refresh_bf16(gpt2_weights *w);
// "fp32" or "bf16" into SM_F32 / SM_BF16 (the --precision flag of train, eval and generate): exit 2
// with one line for another value, and for bf16 on a CPU without AVX512-BF16 (also when
// $SMALLMIND_TEST_NO_BF16 is set: the tests' way to see that refusal on a CPU that has it).
sm_dtype cli_precision(const char *value);
const char *precision_name(sm_dtype p);   // "fp32", "bf16"
// GPT-2 init: weights N(0, 0.02), residual projections (attprojw, fcprojw) N(0, 0.02/sqrt(2L)),
// biases 0, LayerNorm weights 1; padded wte rows 0. Reproducible from seed.
void gpt2_weights_init(gpt2_weights *w, uint64_t seed);

typedef struct {
    int B, T;          // capacity: the largest batch the buffers hold
    int layer_slots;   // L (each layer's activations kept, for backward) or 1 (one slot reused)
    sm_table t;        // NUM_ACT_TENSORS f32 views into one arena
    int last_B, last_T;    // shape of the last forward
    int lm_head_fused;     // the last forward's wte was float32: backward fuses the loss gradient
                           // into the LM head's products (else dlogits are written over the logits)
    int has_dlogits;       // gpt2_loss_backward kept the loss gradient of the last forward: the rows'
                           // statistics (A_LOSS_MAX, A_LOSS_INV), or dlogits over the logits (!lm_head_fused)
    const int *targets;    // ... against these targets (the caller's: valid until gpt2_backward)
    float dloss;           // ... scaled by this
} gpt2_acts;

// keep_layers = 1: L slots per layer tensor (training); 0: one slot (inference, forward only).
void gpt2_acts_build(gpt2_acts *a, const sm_model_config *cfg, int B, int T, int keep_layers);
void gpt2_acts_free(gpt2_acts *a);

// Forward over inputs (B,T) (B <= a->B, T <= a->T, tokens < V): logits (B,T,Vp) in a->t[A_LOGITS]
// (padded columns hold the padded wte rows' products, 0).
void gpt2_forward(const gpt2_weights *w, gpt2_acts *a, const int *inputs, int B, int T);
// The per-token losses (B,T) of the last forward against targets (B,T) into a->t[A_LOSSES]; returns
// their mean. The logits stay.
float gpt2_loss(const sm_model_config *cfg, gpt2_acts *a, const int *targets);
// The same, for gpt2_backward (dloss is d objective / d each token's loss, e.g. 1/(B*T*accum*ranks)).
// float32 weights: the logits stay, and each row's max and 1/sum of exps are saved (a->t[A_LOSS_MAX],
// [A_LOSS_INV]) with targets (kept by pointer: valid until gpt2_backward) and dloss, from which
// backward recomputes dlogits = dloss * (softmax - onehot) block by block inside the LM head's
// products. bf16 weights: dlogits are written OVER the logits in the same pass (gpt2_loss then
// refuses until the next forward).
float gpt2_loss_backward(const sm_model_config *cfg, gpt2_acts *a, const int *targets, float dloss);

// Called by backward as soon as layer l's parameter gradients are final (layers finish in reverse
// order; wte/wpe and lnf are final only when backward returns), and between backward's large ops.
// comm/ uses them to start and progress bucketed allreduces during backward.
typedef struct {
    void (*layer_done)(void *ctx, int layer);   // may be NULL
    void (*progress)(void *ctx);                // may be NULL
    void *ctx;
} gpt2_grad_hooks;

typedef struct {
    sm_table grads;    // the parameters' layout
    gpt2_acts acts;    // every layer's activations (layer_slots = L)
    sm_table dacts;    // gradients of the activations: one layer's slots, reused by every layer (they
                       // stay in cache), and no logits (dlogits are recomputed in
                       // cache by the LM head's backward; in bf16 they overwrite the logits)
    int grads_hold_sum;   // 0 after gpt2_zero_grad: the next backward writes the gradients instead of
                          // adding to them (no clearing pass); 1 after a backward
    gpt2_grad_hooks hooks;
} gpt2_train;

void gpt2_train_build(gpt2_train *s, const sm_model_config *cfg, int B, int T);
void gpt2_train_free(gpt2_train *s);
// Makes the gradients zero as far as any reader can tell, in O(1): the next gpt2_backward writes
// them rather than adding to them. Read the gradients only after a backward.
void gpt2_zero_grad(gpt2_train *s);
// Backward of the last forward over s->acts, whose loss was gpt2_loss_backward; inputs are that
// forward's (B,T). ACCUMULATES into s->grads (see gpt2_zero_grad).
void gpt2_backward(const gpt2_weights *w, gpt2_train *s, const int *inputs);

// =============================================================================================
// Inference (infer.c): the inference state, a forward through the KV cache, and evaluation over
// a shard's windows.

// The inference state for up to B rows (sequences) of up to maxT positions: activations for one
// forward of up to B x T_chunk positions (one layer slot, reused by every layer) and the KV cache.
typedef struct {
    gpt2_acts a;       // layer_slots = 1: capacity (B, T_chunk)
    int B, maxT, C, L;
    float *kv;         // (L, 2, B, maxT, C): layer l's keys, then its values, of every row
    int *pos;          // (B): positions held in the cache, per row
    int *rows;         // (B): scratch: the cache row of each forward row
    float *last;       // (B, C): the final LayerNorm's output at each row's last new position
    float *logits;     // (B, Vp): logits at each row's last new position, after gpt2_forward_cached
    float *own;        // (own_threads, own_stride): each decode thread's own residual row, LayerNorm row
    int own_threads;   // and mean, rstd (gpt2.c's one-token step)
    size_t own_stride;
} gpt2_infer;

// Allocates everything once: no allocation in gpt2_forward_cached afterwards.
void gpt2_infer_build(gpt2_infer *s, const sm_model_config *cfg, int B, int T_chunk);
void gpt2_infer_free(gpt2_infer *s);
// Empties every row's cache.
void gpt2_infer_reset(gpt2_infer *s);
// Appends T new tokens to each of n_rows rows of the cache: tokens (n_rows,T), row i going to cache
// row rows[i] at positions pos[rows[i]] .. +T-1 (pos advances by T). Keys and values enter the
// cache; attention reads the row's whole cache (attention_head_forward, the decode form). Leaves in
// s->logits (n_rows,Vp) the logits of each row's last new position (the LM head runs on those
// rows only). T <= the T_chunk built for; positions stay below maxT (checked). One token on one row
// (n_rows = T = 1, the generate loop's step) runs in one OpenMP region, not one per op, with the
// same bits.
void gpt2_forward_cached(const gpt2_weights *w, gpt2_infer *s, const int *tokens, const int *rows, int n_rows, int T);

// Sums of per-token losses over windows of a shard, in window order.
typedef struct {
    double loss_sum;     // nats, over every target token of the windows
    uint64_t tokens;     // target tokens
    uint64_t windows;
} eval_sums;

// Evaluates windows 0 .. n_windows-1 of ld (in order: ld->shuffle must be 0) in forward passes of
// B_global windows split over the ranks (B_global % world == 0; a last pass may be shorter): pass
// b gives rank r the windows b*B_global + r*(B_global/world) ... Each window's loss sum is taken
// in double over its positions; the windows' sums are gathered and added in window order, so the
// result is the same at any rank count (to the bit, when per-window losses are). inputs/targets
// hold B_global/world windows (a (B,T) batch); a holds at least that. per_window (n_windows
// doubles) is scratch. Collective.
void eval_windows(const gpt2_weights *w, gpt2_acts *a, int *inputs, int *targets, loader *ld, uint64_t n_windows,
                  int B_global, int rank, int world, double *per_window, eval_sums *out);

// A checkpoint argument as a file path: a run directory means the checkpoint its `latest` names
// (read without blocking); anything else is taken as it is. Errors: one line, exit 2.
void ckpt_arg_path(const char *arg, char *path, size_t cap);
// Loads a checkpoint's weights for inference (eval, generate): arg is a checkpoint file, or a run
// directory meaning the checkpoint its `latest` names. Builds w from the file's config; meta gets the
// file's metadata and path_out its path. Collective. Errors: one line, exit 2.
void infer_load_weights(const char *arg, gpt2_weights *w, ckpt_meta *meta, char *path_out, size_t cap);

// =============================================================================================
// The next-token sampler (sampler.c): greedy (temperature 0 or top_k 1), else softmax(logits / T)
// restricted to the top_k most probable tokens (0: all), then to the smallest set of them whose
// probability reaches top_p (1: all), renormalised, and drawn with one uniform u in [0, 1).
// Candidates are ordered by probability, then token id. No allocation after sampler_build.

typedef struct {
    float temperature;   // >= 0
    int top_k;           // >= 0 (0: off)
    float top_p;         // (0, 1] (1: off)
} sampler_params;

typedef struct {
    sampler_params p;
    int V;           // the tokens that can be drawn (the real vocabulary, not the padding)
    double *prob;    // (V) scratch: unnormalised probabilities
    int *idx;        // (V) scratch: candidate ids
} sampler;

void sampler_build(sampler *s, const sampler_params *p, int V);
void sampler_free(sampler *s);
// The next token from logits (V real columns).
int sampler_sample(sampler *s, const float *logits, float u);
// The distribution sampler_sample draws from: returns n; the candidates are s->idx[0..n) with
// unnormalised probabilities s->prob[idx[k]] (tests compare it with frequencies).
int sampler_distribution(sampler *s, const float *logits);

// =============================================================================================
// AdamW (optim.c): decoupled weight decay, bias-corrected (Loshchilov & Hutter 2019), over a flat
// f32 parameter arena, with moments kept only for the range this rank updates.

typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
} adamw_hparams;

typedef struct {
    sm_table m, v;     // the parameters' layout; valid on [lo, hi) only
    size_t lo, hi;     // the arena range (floats) this rank updates: its ZeRO-1 slice, else all
    void *alloc[2];    // the allocations behind m and v (hi - lo floats each)
    uint16_t *copy_bf16;   // NULL, or the bf16 copy of the arena (gpt2_weights.bf16's base): adamw_step
                           // writes bf16(the updated params) there over [lo, hi), in its own pass
    sm_capture *capture;   // NULL, or where adamw_step also copies the updated p, m, v (a --ckpt-async
                           // buffer, for a save at the end of this step): set per step by the caller;
                           // adamw_step sets its done (and bad) and leaves the pointer to the caller
} adamw_state;

// Moments for [lo, hi) of the f32 arena laid out as params, zeroed.
void adamw_build(adamw_state *o, const sm_table *params, size_t lo, size_t hi);
void adamw_free(adamw_state *o);
// The global-norm clip as a gradient scale: clip / grad_norm when clip > 0 and grad_norm > clip,
// else 1 (torch.nn.utils.clip_grad_norm_'s rule, applied inside AdamW's pass).
float adamw_clip_scale(float clip, float grad_norm);
// One step t (from 1) over the parameters in [o->lo, o->hi): tensor i gets weight decay when
// decays(i). grad_scale multiplies the gradients (the clip); grads are not modified.
void adamw_step(adamw_state *o, sm_table *params, const sm_table *grads, const adamw_hparams *h, int t,
                float grad_scale, int (*decays)(int tensor_index));
// Sum of squares of the gradients over [lo, hi) of the arena, tensor by tensor (padding left
// out), in a fixed order.
double grad_sumsq(const sm_table *grads, size_t lo, size_t hi);

// =============================================================================================
// One data-parallel training run (step.c): the objects, the gradient sync wired to backward, and
// the step that train and bench both run.

// The loss-spike detector of llm.c (outlier_detector.h): z-scores against the last
// OUTLIER_WINDOW values (0 until the window holds 8).
#define OUTLIER_WINDOW 64
typedef struct {
    double x[OUTLIER_WINDOW];
    int n, at;
} outlier_window;
double outlier_z(const outlier_window *w, double x);
void outlier_push(outlier_window *w, double x);

typedef struct {
    gpt2_weights w;
    gpt2_train st;
    adamw_state opt;
    comm_gradsync sync;
    double spike_z;        // skip a step whose loss or grad norm has z above this (0: off)
    uint64_t nan_steps;    // fault injection for tests: bit t-1 set = step t's loss reads NaN
                           // ($SMALLMIND_INJECT_NAN, a comma-separated list of steps <= 64)
    uint64_t spike_steps;  // ... reads 100x its value ($SMALLMIND_INJECT_SPIKE)
    outlier_window loss_w, norm_w;   // the last good steps' losses and grad norms
    int rank, world;       // MPI_COMM_WORLD
    int B, T, accum;       // per-rank micro-batch of B windows of T tokens; micro-batches per step
    int zero;              // ZeRO-1: moments sharded over the ranks
    int *inputs, *targets; // (B,T): the micro-batch (the loader writes them, forward reads them)
} trainer;

typedef struct {
    const char *skipped;   // NULL, or why the update was skipped: "loss" or "grad_norm" (not finite),
                           // "spike" (beyond spike_z); parameters and moments are then untouched
    float loss;         // mean per-token loss over the global batch
    float grad_norm;    // global L2 norm of the mean gradient, before clipping
    double fwd_ms, bwd_ms, opt_ms;   // this rank's forward, backward, and wait-to-update times
    comm_gradsync_stats comm;
} train_step_stats;

// Builds every arena once, initialises the weights from seed and broadcasts rank 0's, and wires
// the bucketed gradient sync (bucket_mb MiB, ZeRO-1 when zero) to backward. Collective.
void trainer_build(trainer *tr, const sm_model_config *cfg, int B, int T, int accum, double bucket_mb, int zero,
                   uint64_t seed, const comm_topology *topo);
void trainer_free(trainer *tr);
// Mixed precision for the run (gpt2_weights_set_precision, and AdamW keeping the copy; with ZeRO-1 each
// rank's slice of the copy is made in AdamW's pass and allgathered as bf16). Call after the weights
// are final (initialised or loaded). -1 with a reason as gpt2_weights_set_precision.
int trainer_set_precision(trainer *tr, sm_dtype precision, char *err, size_t errlen);
// One optimizer step t (from 1) over the global batch whose first window is at the global cursor
// `cursor` of data's stream: accum micro-batches of B windows per rank (micro-step a gives rank r
// the windows from cursor + (a*ranks + r)*B), the gradients summed over ranks as backward produces
// them (the loss is scaled by 1/(B*T*accum*ranks), so the sum is the mean), clipped to norm clip
// (0: off), then AdamW with h — unless the loss or the gradient norm is not finite, or spikes
// (spike_z), when the update is skipped (out->skipped says why; every rank decides alike).
// Collective; allocates nothing after the first call.
void train_step(trainer *tr, loader *data, uint64_t cursor, const adamw_hparams *h, float clip, int t,
                train_step_stats *out);

// =============================================================================================
// The run directory's JSON files (runlog.c): log.jsonl (one event per line, rank 0) and
// config.json. Strings are escaped (sm_json in common.h).

typedef struct {
    int fd;            // -1: closed (ranks other than 0 hold a closed log)
    uint64_t size;     // bytes of whole lines written so far
    char path[4096];
} runlog;

// Opens RUN_DIR/log.jsonl: fresh at step0 = 0; on resume the events up to step0 are kept (those
// after it will be written again). 0, or -1 with a reason in err.
int runlog_open(runlog *l, const char *run_dir, int step0, char *err, size_t errlen);
// Writes one JSON object as a line, in one write; a failed or short write is cut back off (the
// log holds whole lines only) and ends the run (exit 1).
void runlog_write(runlog *l, const sm_json *j);
// A stdio stream appending to the log (for prof_print's JSON line), or NULL; fclose it after.
FILE *runlog_stream(runlog *l);
void runlog_close(runlog *l);

// =============================================================================================
// The profiler behind `--profile` (profile.c): per op and phase (forward, backward, optimizer),
// calls, wall time, share of the step, GFLOP/s and GB/s, and the heap allocations made per step.
// Off by default: then every hook is one branch. Single-threaded use only (the hooks sit around
// kernel calls, outside parallel regions). The model's ops are timed in ops.c, each with its
// FLOP and byte formula; a training loop brackets each step:
//     prof_enable(1); for each step: prof_step_begin(); ... prof_step_end(tokens); prof_print(stdout, 0);

typedef enum { PROF_FWD, PROF_BWD, PROF_OPT, PROF_N_PHASES } prof_phase;

void prof_enable(int on);
int prof_enabled(void);
// Zeroes every figure (e.g. after warm-up).
void prof_reset(void);
// A timestamp when enabled, else 0 (and prof_stop ignores the call).
double prof_start(void);
// Records one call of op (a string with static storage; ops are told apart by name and phase)
// that started at t0, with its floating-point operations and the bytes it must move.
void prof_stop(const char *op, prof_phase phase, double t0, double flops, double bytes);
// The same for an op taken in another precision than float32 (precision: a string with static storage,
// "bf16", "q8"; prof_stop is "f32"): the table's `prec` column, an op seen in two precisions is two rows.
void prof_stop_as(const char *op, prof_phase phase, double t0, double flops, double bytes, const char *precision);
// Brackets of one training step: the step's wall time (the denominator of "% of step") and its
// heap allocations. tokens per step (for the per-token heap figure): 0 = unknown.
void prof_step_begin(void);
void prof_step_end(long tokens);
// The table (json = 0) or one JSON object on one line (json = 1), over the steps recorded since
// the last reset. When more than one step was recorded the first is left out as warm-up.
void prof_print(FILE *f, int json);

// =============================================================================================
// The communication model for N nodes (scaling.c), which `bench comm` feeds with measurements.
// Costs of an allreduce of n bytes over N nodes, with alpha the latency of one message, beta the
// link's time per byte and gamma the time per byte of the reduction's sum on the CPU (Thakur,
// Rabenseifner & Gropp, "Optimization of collective communication operations in MPICH", IJHPCA
// 2005; Patarasuk & Yuan, "Bandwidth optimal all-reduce algorithms for clusters of
// workstations", JPDC 2009):
//   ring (reduce-scatter, allgather):  2(N-1) alpha + 2(N-1)/N n beta + (N-1)/N n gamma
//   tree (recursive doubling):         ceil(log2 N) (alpha + n beta + n gamma)

typedef enum { SCALING_RING, SCALING_TREE, SCALING_N_ALGOS } scaling_algo;
typedef struct {
    const char *name;
    double alpha_s;     // seconds per message
    double beta_s;      // seconds per byte on the link (1 / data rate)
    double gamma_s;     // seconds per byte summed (0 in the presets: the caller sets this CPU's)
    const char *source; // where the figures come from
} scaling_net;
enum { SCALING_N_PRESETS = 3 };
extern const scaling_net SCALING_PRESETS[SCALING_N_PRESETS];   // 25gbe, ib-edr, ib-hdr
const char *scaling_algo_name(scaling_algo a);

// Seconds for one allreduce of n_bytes over N nodes (0 for N <= 1), by the formulas above.
double scaling_allreduce_s(scaling_algo algo, int N, double n_bytes, const scaling_net *net);
// Fits t = alpha + n beta to k points (n_bytes, t_s) by least squares on relative residuals
// (weights 1/t^2: small and large messages count alike). 0, or -1 for fewer than two distinct
// sizes or a time <= 0.
int scaling_fit(const double *n_bytes, const double *t_s, int k, double *alpha_s, double *beta_s);
// The link a fit at N ranks describes, read as the ring (t = 2(N-1) alpha + n (2(N-1)/N beta +
// (N-1)/N gamma)): alpha = alpha_fit / (2(N-1)), beta = (beta_fit - (N-1)/N gamma) / (2(N-1)/N), kept
// at >= a tenth of beta_fit's share against noise; N = 2 gives alpha_fit/2 and beta_fit - gamma/2.
scaling_net scaling_net_from_fit(const char *name, int N, double alpha_fit_s, double beta_fit_s, double gamma_s);

// Rounds of one allreduce over N nodes, each a step every node must take before the next: the ring
// 2(N-1) (N-1 of the reduce-scatter, N-1 of the allgather), recursive doubling ceil(log2 N).
int scaling_rounds(scaling_algo algo, int N);

// One rank's data-parallel step, measured without communication: the gradient buckets in the
// order the sync starts them, each with its size and the time after backward's start when its
// last gradient is final, and the times backward calls MPI.
typedef struct {
    int n_buckets;
    const double *bucket_bytes;   // (n_buckets)
    const double *ready_s;        // (n_buckets), non-decreasing; each one of calls_s (its layer's call)
    double fwd_s, bwd_s, opt_s;   // forward with the loss, backward, optimizer
    double post_s;                // seconds per byte of work on each bucket once reduced (the norm's
                                  // sum of squares), on the rank's cores; one node does it at ready time
    double cpu_share;             // 0..1: share of communication time that takes the cores from backward
    // Progress. Open MPI moves a non-blocking collective only inside MPI calls: during backward the
    // sync calls MPI at calls_s (its hooks between backward's ops, and at each layer's end); a
    // round is posted at a call and moves its data at once (calls_per_round 1: RDMA, or a message
    // that fits the socket buffers) or only from the (c-1)th call after it (c: shared memory's
    // single copy is done by the receiver inside its next call, c = 2; TCP pushes a socket buffer
    // at each call); the bucket's next round is posted at the first call after that one ended.
    // From bwd_s on, the wait calls MPI without pause. n_calls = 0: progress without pause
    // throughout (a progress thread, or a NIC that runs the collective itself).
    int n_calls;
    const double *calls_s;        // (n_calls), ascending, seconds into backward
    int calls_per_round;          // c >= 1
} scaling_step;

typedef struct {
    double comm_s;       // all buckets' allreduces, end to end
    double wait_s;       // the step blocked after backward for the last buckets and their post work
    double stretch_s;    // backward made longer by communication and post work on its cores
    double alone_s;      // one node's step: fwd + bwd + opt + post work, no communication
    double step_s;       // fwd + bwd + opt + wait + stretch + the scalar allreduces
    double efficiency;   // alone / step: one node's step over this one's (weak scaling)
} scaling_prediction;

// The step at one node count: bucket_s[i] is bucket i's allreduce time there, in `rounds` equal
// rounds (scaling_rounds); scalars_s the step's small allreduces (loss, skip decision). One link
// per node carries one round at a time, in the order they are posted: at each call during backward
// every started bucket whose last round has ended posts its next (in bucket order); after bwd_s the
// remaining rounds follow each other. The buckets that end after bwd_s get their post work then,
// beside the link's later transfers (share 1 - cpu_share) or after them (cpu_share): wait = that
// blend past bwd_s. The link's time before bwd_s lengthens backward by cpu_share of itself, and the
// post work of the buckets ended by then by all of itself.
scaling_prediction scaling_predict(const scaling_step *p, const double *bucket_s, int rounds, double scalars_s);

// =============================================================================================
// Subcommands (each parses its own argv and returns an exit status) and option parsing.

int cmd_prepare(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);   // tokenize.c
int cmd_convert(int argc, char **argv);    // convert.c: llm.c .bin <-> HDF5 checkpoints
int bench_checkpoint(int argc, char **argv);   // `smallmind bench checkpoint` (bench_ckpt.c)
int bench_tokenizer(int argc, char **argv);    // `smallmind bench tokenizer` (bench_tokenizer.c)
int bench_generate(int argc, char **argv);     // `smallmind bench generate` (bench_generate.c)
int bench_comm(int argc, char **argv);         // `smallmind bench comm` (bench_comm.c)

// Options as tables: one row per long option, which the parser, the usage text, the start-up
// agreement between ranks (cli_fingerprint) and the resume checks all walk.
typedef enum { CLI_INT, CLI_U64, CLI_DOUBLE, CLI_STR, CLI_FLAG } cli_type;   // int, unsigned long long,
                                                                              // double, const char *, int 0/1
// How a flag may differ when a run resumes from a checkpoint (train)
typedef enum { CLI_RESUME_FREE = 0, CLI_RESUME_ANNOUNCE, CLI_RESUME_REFUSE } cli_resume_rule;
typedef struct {
    const char *name;       // the long option without "--"
    cli_type type;          // the type of the field at offset
    size_t offset;          // offsetof(the options struct, the field)
    double lo, hi;          // the accepted range of a number (inclusive)
    const char *arg;        // the argument's name in the usage ("N"); NULL for a flag
    const char *help;       // one line; " (default X)" is appended from the defaults unless it says "default"
    const char *section;    // a usage heading printed before this option, or NULL
    int local;              // 1: may differ between ranks (it drives no collective); 0: agreed at start
    cli_resume_rule resume;
} cli_opt;

// Parses argv (after the subcommand) into values (values_size bytes, holding the defaults on
// entry). --help prints the usage (head, then one line per option with its default) and exits 0;
// a bad value, an unknown option or a missing value is one line and exit 2; non-option arguments
// go to positional (at most max_positional, else exit 2). Returns their count.
int cli_parse(const char *cmd, const char *head, const cli_opt *opts, int n_opts, void *values, size_t values_size,
              int argc, char **argv, char **positional, int max_positional);
void cli_print_usage(FILE *f, const char *head, const cli_opt *opts, int n_opts, const void *defaults);
// Sets one option from its text, as the parser does (exit 2 when out of range).
void cli_set(const cli_opt *o, void *values, const char *arg);
// The value as text: %d, %llu, %.17g (exact), the string ("" for none), 0/1.
void cli_value_str(const cli_opt *o, const void *values, char *out, size_t cap);
// A hash of the names and values of every option not marked local: equal on every rank, or the
// ranks were started differently.
uint64_t cli_fingerprint(const cli_opt *opts, int n_opts, const void *values);
// train's option table (for tests that enumerate the flags).
const cli_opt *train_options(int *n_opts, size_t *values_size);

// Strict parsing of option values: the whole string must be a number within [lo, hi],
// else one line naming the flag and exit 2.
long cli_int(const char *flag, const char *s, long lo, long hi);
double cli_double(const char *flag, const char *s, double lo, double hi);
// Reports an unknown option or a missing argument (getopt_long's '?' / ':') and exits 2.
void cli_bad_option(const char *cmd, int argc, char **argv);
