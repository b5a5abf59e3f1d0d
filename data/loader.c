// loader.c — the window loader: (T+1)-token windows of a shard in a seeded per-epoch order (loader_*).
#include <stdio.h>
#include <string.h>

#include "data.h"

int loader_init(loader *l, const shard *src, int T, int shuffle, uint64_t seed, char *err, size_t errlen) {
    memset(l, 0, sizeof *l);
    if (T <= 0) {
        snprintf(err, errlen, "sequence length %d must be positive", T);
        return -1;
    }
    size_t n_windows = src->n_tokens > 0 ? (src->n_tokens - 1) / (size_t)T : 0;
    if (n_windows == 0) {
        snprintf(err, errlen, "shard %s has %zu tokens: fewer than one window of T+1=%d tokens", src->path,
                 src->n_tokens, T + 1);
        return -1;
    }
    if (n_windows > (size_t)UINT32_MAX) {
        snprintf(err, errlen, "shard %s has %zu windows of T+1=%d tokens: more than the %u a loader can index",
                 src->path, n_windows, T + 1, (unsigned)UINT32_MAX);
        return -1;
    }
    l->src = src;
    l->T = T;
    l->n_windows = n_windows;
    l->shuffle = shuffle ? 1 : 0;
    l->seed = seed;
    l->epoch = UINT64_MAX;
    l->perm = sm_malloc(n_windows * sizeof(uint32_t));   // the only allocation: loader_fill makes none
    return 0;
}

void loader_free(loader *l) {
    sm_free(l->perm);
    l->perm = NULL;
    l->n_windows = 0;
}

// Fisher-Yates shuffle of 0..n_windows-1 for `epoch`, in place; its RNG stream is the epoch,
// so the order of epoch e depends only on (seed, e), never on which epochs came before.
static void compute_perm(loader *l, uint64_t epoch) {
    uint32_t *p = l->perm;
    size_t n = l->n_windows;
    for (size_t i = 0; i < n; i++) p[i] = (uint32_t)i;
    sm_rng r;
    sm_rng_seed(&r, l->seed, epoch);
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)sm_rng_below(&r, (uint64_t)i + 1);
        uint32_t tmp = p[i];
        p[i] = p[j];
        p[j] = tmp;
    }
    l->epoch = epoch;
}

size_t loader_window_at(loader *l, uint64_t g) {
    uint64_t n = l->n_windows;
    if (!l->shuffle) return (size_t)(g % n);
    uint64_t epoch = g / n;
    if (epoch != l->epoch) compute_perm(l, epoch);
    return l->perm[g % n];
}

void loader_fill(loader *l, uint64_t cursor, int count, int *inputs, int *targets) {
    // inputs and targets are (count, T); window w is tokens [w*T, w*T + T]
    size_t T = (size_t)l->T;
    for (int i = 0; i < count; i++) {
        const uint16_t *win = l->src->tokens + loader_window_at(l, cursor + (uint64_t)i) * T;
        int *inp = inputs + (size_t)i * T, *tgt = targets + (size_t)i * T;
        for (size_t t = 0; t < T; t++) {
            inp[t] = win[t];
            tgt[t] = win[t + 1];
        }
    }
}
