// step.c — defines one data-parallel training run's objects (trainer_build) and its step
// (train_step), which `train` and `bench train` both run, and the validation pass.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "trainer.h"

// The gradient arena as segments in the order backward finalises them: group 0 is the last layer
// with the final LayerNorm, group k is layer L-1-k, group L is wte and wpe (the tied wte gradient
// is complete only after the encoder backward, at the very end). Returns the count (at most
// SEGS_MAX(L)).
#define PER_LAYER_TENSORS (P_FCPROJB - P_LN1W + 1)
#define SEGS_MAX(L) ((size_t)(L) * PER_LAYER_TENSORS + 4)
static int grad_segments(const sm_table *grads, int L, comm_segment *segs) {
    int n = 0;
    for (int g = 0; g < L; g++) {
        int l = L - 1 - g;
        if (g == 0)
            for (int i = P_LNFW; i <= P_LNFB; i++)
                segs[n++] = (comm_segment){sm_tensor_f32_offset(&grads->t[i]), grads->t[i].n_elems, 0};
        for (int i = P_LN1W; i <= P_FCPROJB; i++) {
            const sm_tensor *t = &grads->t[i];
            size_t per_layer = t->n_elems / (size_t)L;
            segs[n++] = (comm_segment){sm_tensor_f32_offset(t) + (size_t)l * per_layer, per_layer, g};
        }
    }
    for (int i = P_WTE; i <= P_WPE; i++)
        segs[n++] = (comm_segment){sm_tensor_f32_offset(&grads->t[i]), grads->t[i].n_elems, L};
    return n;
}

double outlier_z(const outlier_window *w, double x) {
    if (w->n < 8) return 0.0;
    double mean = 0.0, var = 0.0;
    for (int i = 0; i < w->n; i++) mean += w->x[i];
    mean /= w->n;
    for (int i = 0; i < w->n; i++) var += (w->x[i] - mean) * (w->x[i] - mean);
    double sd = sqrt(var / w->n);
    return sd > 0 ? (x - mean) / sd : 0.0;
}

void outlier_push(outlier_window *w, double x) {
    w->x[w->at] = x;
    w->at = (w->at + 1) % OUTLIER_WINDOW;
    if (w->n < OUTLIER_WINDOW) w->n++;
}

// backward's hooks: layer l completes group L-1-l of the segments above
static void on_layer_done(void *ctx, int layer) {
    trainer *tr = ctx;
    comm_gradsync_ready(&tr->sync, tr->w.cfg.n_layer - 1 - layer);
}
static void on_progress(void *ctx) { comm_gradsync_progress(&((trainer *)ctx)->sync); }

// Fault injection for tests: a comma-separated list of steps (1..64) as a bit set.
static uint64_t step_set(const char *p) {
    uint64_t set = 0;
    while (p && *p) {
        char *end;
        long t = strtol(p, &end, 10);
        if (t >= 1 && t <= 64) set |= 1ull << (t - 1);
        for (p = end; *p && (*p < '0' || *p > '9');) p++;
    }
    return set;
}

void trainer_build(trainer *tr, const sm_model_config *cfg, int B, int T, int accum, double bucket_mb, int zero,
                   uint64_t seed, const comm_topology *topo) {
    memset(tr, 0, sizeof *tr);
    tr->rank = topo->rank;
    tr->world = topo->world_size;
    tr->B = B;
    tr->T = T;
    tr->accum = accum;
    tr->zero = zero;
    gpt2_weights_build(&tr->w, cfg);
    gpt2_train_build(&tr->st, cfg, B, T);
    tr->inputs = sm_arena((size_t)B * (size_t)T * sizeof(int));
    tr->targets = sm_arena((size_t)B * (size_t)T * sizeof(int));
    gpt2_weights_init(&tr->w, seed);
    // identical start on every rank: rank 0's parameters are broadcast
    comm_bcast_bytes(tr->w.params.base, tr->w.params.n_bytes, 0);

    // gradients: bucketed, non-blocking sums started as backward finalises each layer
    comm_segment *segs = sm_calloc(SEGS_MAX(cfg->n_layer), sizeof(comm_segment));
    int n_segs = grad_segments(&tr->st.grads, cfg->n_layer, segs);
    comm_gradsync_init(&tr->sync, sm_table_f32(&tr->st.grads), sm_table_n_f32(&tr->st.grads), segs, n_segs, bucket_mb,
                       zero);
    comm_gradsync_set_piece_fn(&tr->sync, sum_squares);   // the clip's norm, from gradients still in cache
    sm_free(segs);
    size_t lo, hi;
    comm_gradsync_slice(&tr->sync, &lo, &hi);
    adamw_build(&tr->opt, &tr->w.params, lo, hi);
    tr->nan_steps = step_set(getenv("SMALLMIND_INJECT_NAN"));
    tr->spike_steps = step_set(getenv("SMALLMIND_INJECT_SPIKE"));
}

int trainer_set_precision(trainer *tr, sm_dtype precision, char *err, size_t errlen) {
    if (gpt2_weights_set_precision(&tr->w, precision, err, errlen) != 0) return -1;
    gpt2_weights_refresh_bf16(&tr->w);   // (again, when already bf16: the weights may have been loaded since)
    tr->opt.copy_bf16 = precision == SM_BF16 ? tr->w.bf16.base : NULL;
    return 0;
}

void trainer_free(trainer *tr) {
    comm_gradsync_free(&tr->sync);
    adamw_free(&tr->opt);
    gpt2_train_free(&tr->st);
    gpt2_weights_free(&tr->w);
    sm_free(tr->inputs);
    sm_free(tr->targets);
    memset(tr, 0, sizeof *tr);
}

void train_step(trainer *tr, loader *data, uint64_t cursor, const adamw_hparams *h, float clip, int t,
                train_step_stats *out) {
    const sm_model_config *cfg = &tr->w.cfg;
    const int B = tr->B, T = tr->T;
    // the loss is scaled by 1/(B*T*accum*ranks) so the sum of the gradients over ranks is the mean
    const float dloss = 1.0f / ((float)B * (float)T * (float)tr->accum * (float)tr->world);
    double t_fwd = 0.0, t_bwd = 0.0, loss_sum = 0.0;
    gpt2_zero_grad(&tr->st);
    comm_gradsync_begin(&tr->sync);
    for (int a = 0; a < tr->accum; a++) {
        uint64_t c = cursor + ((uint64_t)a * (uint64_t)tr->world + (uint64_t)tr->rank) * (uint64_t)B;
        loader_fill(data, c, B, tr->inputs, tr->targets);
        double ta = sm_now_s();
        gpt2_forward(&tr->w, &tr->st.acts, tr->inputs, B, T);
        loss_sum += gpt2_loss_backward(cfg, &tr->st.acts, tr->targets, dloss);
        double tb = sm_now_s();
        // only the last micro-step synchronises (DDP's no_sync for the others)
        int last = a == tr->accum - 1;
        tr->st.hooks = (gpt2_grad_hooks){last ? on_layer_done : NULL, last ? on_progress : NULL, tr};
        gpt2_backward(&tr->w, &tr->st, tr->inputs);
        t_fwd += tb - ta;
        t_bwd += sm_now_s() - tb;
    }
    comm_gradsync_wait(&tr->sync);
    double t_opt0 = sm_now_s();
    float loss = (float)(comm_allreduce_sum_double(loss_sum / tr->accum) / tr->world);
    if (t >= 1 && t <= 64 && (tr->nan_steps >> (t - 1) & 1)) loss = NAN;
    if (t >= 1 && t <= 64 && (tr->spike_steps >> (t - 1) & 1)) loss *= 100.0f;
    // the gradients' sum of squares, taken by the sync as each bucket became final
    double sumsq = comm_gradsync_total(&tr->sync);
    if (tr->zero) sumsq = comm_allreduce_sum_double(sumsq);   // each rank holds its slice
    float norm = (float)sqrt(sumsq);
    // the guard: a non-finite loss or norm, or a spike, skips the update (the batch is consumed)
    int why = !isfinite(loss) ? 1 : !isfinite(norm) ? 2 : 0;
    if (!why && tr->spike_z > 0 &&
        (outlier_z(&tr->loss_w, loss) > tr->spike_z || outlier_z(&tr->norm_w, norm) > tr->spike_z))
        why = 3;
    if (tr->world > 1) why = comm_allreduce_max_int(why);   // one decision for every rank
    if (!why) {
        adamw_step(&tr->opt, &tr->w.params, &tr->st.grads, h, t, adamw_clip_scale(clip, norm), gpt2_param_decays);
        // ZeRO-1: each rank updated its slice (and, in bf16, that slice's copy in the same pass); the
        // float32 masters travel as before (checkpoints, eval and the fp32 ops read them on every
        // rank), the copy as bf16, so no rank converts what it did not update
        comm_allgather_slices(&tr->sync, sm_table_f32(&tr->w.params));
        if (tr->opt.copy_bf16) comm_allgather_slices_bf16(&tr->sync, tr->opt.copy_bf16);
        outlier_push(&tr->loss_w, loss);
        outlier_push(&tr->norm_w, norm);
    }
    static const char *const REASONS[4] = {NULL, "loss", "grad_norm", "spike"};
    *out = (train_step_stats){
        .skipped = REASONS[why],
        .loss = loss,
        .grad_norm = norm,
        .fwd_ms = t_fwd * 1e3,
        .bwd_ms = t_bwd * 1e3,
        .opt_ms = (sm_now_s() - t_opt0) * 1e3,
        .comm = comm_gradsync_figures(&tr->sync),
    };
}
