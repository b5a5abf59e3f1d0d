// optim.c — defines AdamW over a flat f32 parameter arena (adamw_*), with the moments kept for the
// range of the arena this rank updates (all of it, or its ZeRO-1 slice), and the gradients' sum
// of squares for the global-norm clip.
#if defined(__SSE2__)
#include <immintrin.h>
#endif
#include <stdint.h>
#include <string.h>

#include "kernels.h"
#include "trainer.h"

void adamw_build(adamw_state *o, const sm_table *params, size_t lo, size_t hi) {
    memset(o, 0, sizeof *o);
    SM_CHECK(lo <= hi && hi <= sm_table_n_f32(params), "moment range [%zu,%zu) outside the arena", lo, hi);
    o->m = o->v = *params;
    for (int k = 0; k < 2; k++) {
        o->alloc[k] = sm_arena((hi - lo ? hi - lo : 1) * sizeof(float));
        // the table addresses arena coordinates: its base sits lo floats before the slice
        // (computed on integers; only [lo, hi) is ever dereferenced)
        void *base = (void *)((uintptr_t)o->alloc[k] - lo * sizeof(float));
        sm_table_bind(k == 0 ? &o->m : &o->v, base);
    }
    o->lo = lo;
    o->hi = hi;
}

void adamw_free(adamw_state *o) {
    sm_free(o->alloc[0]);
    sm_free(o->alloc[1]);
    memset(o, 0, sizeof *o);
}

float adamw_clip_scale(float clip, float grad_norm) { return (clip > 0.0f && grad_norm > clip) ? clip / grad_norm : 1.0f; }

// The part [*a, *b) of tensor t (arena floats) that lies in [lo, hi); 0 if none.
static int owned_part(const sm_tensor *t, size_t lo, size_t hi, size_t *a, size_t *b) {
    size_t off = sm_tensor_f32_offset(t);
    size_t s = off > lo ? off : lo, e = off + t->n_elems < hi ? off + t->n_elems : hi;
    if (s >= e) return 0;
    *a = s;
    *b = e;
    return 1;
}

double grad_sumsq(const sm_table *grads, size_t lo, size_t hi) {
    double t = prof_start(), ss = 0.0, n = 0.0;
    const float *g = sm_table_f32(grads);
    for (int i = 0; i < grads->count; i++) {
        size_t a, b;
        if (owned_part(&grads->t[i], lo, hi, &a, &b)) {
            ss += sum_squares(g + a, b - a);
            n += (double)(b - a);
        }
    }
    prof_stop("grad_norm", PROF_OPT, t, 2.0 * n, 4.0 * n);
    return ss;
}

// Floats per piece of a captured AdamW pass: p, g, m, v of a piece (512 KiB) stay in L2 until copied.
#define CAPTURE_PIECE ((size_t)1 << 15)

// Copies what of arena floats [lo, lo + len) of state `kind` (arr: their values) falls in the capture's
// segments; 1 when a value was bad (not finite; v negative).
static int capture_range(const sm_capture *cap, int kind, const float *arr, size_t lo, size_t len) {
    const sm_capture_seg *s = cap->seg[kind];
    int a = 0, b = cap->n[kind], bad = 0;
    while (a < b) {   // the first segment ending after lo
        int mid = a + (b - a) / 2;
        if (s[mid].off + s[mid].n <= lo) a = mid + 1;
        else b = mid;
    }
    for (int j = a; j < cap->n[kind] && s[j].off < lo + len; j++) {
        size_t x0 = s[j].off > lo ? s[j].off : lo, x1 = s[j].off + s[j].n < lo + len ? s[j].off + s[j].n : lo + len;
        bad |= sm_copy_check(s[j].dst + (x0 - s[j].off) * sizeof(float), arr + (x0 - lo), x1 - x0, kind == 2) < x1 - x0;
    }
    return bad;
}

// AdamW over arena floats [x, x + k) (and their bf16 copy when the state keeps one).
static void update_range(const adamw_state *o, float *p, const float *g, float *m, float *v, size_t x, size_t k,
                         const adamw_hparams *h, float wd, float grad_scale, int t) {
    if (o->copy_bf16)
        adamw_update_bf16(p + x, o->copy_bf16 + x, g + x, m + x, v + x, k, h->lr, h->beta1, h->beta2, h->eps, wd,
                          grad_scale, t);
    else
        adamw_update(p + x, g + x, m + x, v + x, k, h->lr, h->beta1, h->beta2, h->eps, wd, grad_scale, t);
}

void adamw_step(adamw_state *o, sm_table *params, const sm_table *grads, const adamw_hparams *h, int t,
                float grad_scale, int (*decays)(int tensor_index)) {
    double t0 = prof_start(), n = 0.0;
    float *p = sm_table_f32(params), *m = sm_table_f32(&o->m), *v = sm_table_f32(&o->v);
    const float *g = sm_table_f32(grads);
    sm_capture *cap = o->capture;
    int bad = 0;
    for (int i = 0; i < params->count; i++) {
        size_t a, b;
        if (!owned_part(&params->t[i], o->lo, o->hi, &a, &b)) continue;
        float wd = decays(i) ? h->weight_decay : 0.0f;
        n += (double)(b - a);
        if (cap) {   // piece by piece, each piece's new p, m, v copied to the capture while in the cache
            const long pieces = (long)((b - a + CAPTURE_PIECE - 1) / CAPTURE_PIECE);
#pragma omp parallel for schedule(static) reduction(| : bad)
            for (long q = 0; q < pieces; q++) {
                size_t x = a + (size_t)q * CAPTURE_PIECE, k = b - x < CAPTURE_PIECE ? b - x : CAPTURE_PIECE;
                update_range(o, p, g, m, v, x, k, h, wd, grad_scale, t);   // on this thread alone (inside the region)
                bad |= capture_range(cap, 0, p + x, x, k) | capture_range(cap, 1, m + x, x, k) |
                       capture_range(cap, 2, v + x, x, k);
#if defined(__SSE2__)
                _mm_sfence();   // the streamed copies visible before the checkpoint's writer thread starts
#endif
            }
            continue;
        }
        update_range(o, p, g, m, v, a, b - a, h, wd, grad_scale, t);
    }
    if (cap) {
        cap->bad |= bad;
        cap->done = 1;
    }
    // reads p, g, m, v; writes p, m, v (and the bf16 copy, and with a capture p, m, v again)
    prof_stop("adamw", PROF_OPT, t0, 0.0, ((o->copy_bf16 ? 30.0 : 28.0) + (cap ? 12.0 : 0.0)) * n);
}
