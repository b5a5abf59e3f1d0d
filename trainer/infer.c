// infer.c — defines the inference state (gpt2_infer_*: activations for one forward and the KV
// cache, allocated once) and evaluation over a shard's windows (eval_windows), which `eval` and
// the training run's `val` events share.
#include <omp.h>
#include <string.h>

#include "trainer.h"

void gpt2_infer_build(gpt2_infer *s, const sm_model_config *cfg, int B, int T_chunk) {
    memset(s, 0, sizeof *s);
    SM_CHECK(B >= 1 && T_chunk >= 1 && T_chunk <= cfg->max_seq_len, "inference state (%d rows, %d positions) does not "
             "fit the context %d", B, T_chunk, cfg->max_seq_len);
    gpt2_acts_build(&s->a, cfg, B, T_chunk, 0);
    s->B = B;
    s->maxT = cfg->max_seq_len;
    s->C = cfg->n_embd;
    s->L = cfg->n_layer;
    s->kv = sm_arena((size_t)s->L * 2 * (size_t)B * (size_t)s->maxT * (size_t)s->C * sizeof(float));
    s->pos = sm_arena((size_t)B * sizeof(int));
    s->rows = sm_arena((size_t)B * sizeof(int));
    s->last = sm_arena((size_t)B * (size_t)s->C * sizeof(float));
    s->logits = sm_arena((size_t)B * (size_t)cfg->padded_vocab_size * sizeof(float));
    // each thread's rows on their own cache lines: residual (C), LayerNorm (C), mean and rstd
    s->own_threads = omp_get_max_threads();
    s->own_stride = ((size_t)2 * s->C + 2 + 15) / 16 * 16;
    s->own = sm_arena((size_t)s->own_threads * s->own_stride * sizeof(float));
}

void gpt2_infer_free(gpt2_infer *s) {
    gpt2_acts_free(&s->a);
    sm_free(s->kv);
    sm_free(s->pos);
    sm_free(s->rows);
    sm_free(s->last);
    sm_free(s->logits);
    sm_free(s->own);
    memset(s, 0, sizeof *s);
}

void gpt2_infer_reset(gpt2_infer *s) { memset(s->pos, 0, (size_t)s->B * sizeof(int)); }

void eval_windows(const gpt2_weights *w, gpt2_acts *a, int *inputs, int *targets, loader *ld, uint64_t n_windows,
                  int B_global, int rank, int world, double *per_window, eval_sums *out) {
    SM_CHECK(!ld->shuffle, "evaluation reads windows in order");
    SM_CHECK(B_global >= world && B_global % world == 0, "the eval batch %d does not split over %d ranks", B_global,
             world);
    SM_CHECK(n_windows <= ld->n_windows, "%llu windows asked of a shard holding %zu", (unsigned long long)n_windows,
             ld->n_windows);
    const int T = ld->T;
    memset(per_window, 0, n_windows * sizeof(double));
    for (uint64_t first = 0; first < n_windows; first += (uint64_t)B_global) {
        // this pass: windows first .. first+n-1, of which this rank takes an equal share (the last
        // pass may be short: the ranks then take ceil shares, the last ones fewer or none)
        uint64_t n = n_windows - first < (uint64_t)B_global ? n_windows - first : (uint64_t)B_global;
        uint64_t share = (n + (uint64_t)world - 1) / (uint64_t)world, lo = (uint64_t)rank * share;
        if (lo >= n) continue;
        int b = (int)(n - lo < share ? n - lo : share);
        loader_fill(ld, first + lo, b, inputs, targets);
        gpt2_forward(w, a, inputs, b, T);
        gpt2_loss(&w->cfg, a, targets);
        const float *losses = a->t.t[A_LOSSES].ptr;
        for (int i = 0; i < b; i++) {
            double sum = 0.0;
            for (int t = 0; t < T; t++) sum += losses[(size_t)i * T + t];
            per_window[first + lo + (uint64_t)i] = sum;
        }
    }
    // each window's sum was written by one rank and is 0 elsewhere: the sum over ranks is exact
    comm_allreduce_sum_doubles(per_window, n_windows);
    double total = 0.0;
    for (uint64_t i = 0; i < n_windows; i++) total += per_window[i];
    *out = (eval_sums){.loss_sum = total, .tokens = n_windows * (uint64_t)T, .windows = n_windows};
}
