// profile.c — defines the --profile hooks and tables (prof_*): per-op timing, FLOP and byte
// counts, step brackets and heap figures.

#include <malloc.h>
#include <string.h>

#include "common.h"
#include "trainer.h"

#define PROF_MAX_OPS 64

typedef struct {
    const char *op;
    const char *precision;   // the dtype its products or values are taken in: "f32", "bf16", "q8"
    prof_phase phase;
    long calls;
    double seconds, flops, bytes;
} prof_entry;

// One set of figures: the ops seen, and the step brackets that enclosed them.
typedef struct {
    prof_entry e[PROF_MAX_OPS];
    int n;
    long steps;
    double step_seconds;
    long tokens;
    unsigned long long allocs;   // smallmind's own allocations (sm_alloc_count) inside steps
    long long heap_bytes;        // growth of the process heap in use (mallinfo2) inside steps
} prof_set;

// The profiler is process state by nature (like the log rank): one instance, touched only by
// the thread that runs the training loop.
static struct {
    int on, in_step;
    prof_set warm, run;   // the first step after a reset, and the steps after it
    int warm_done;
    double t_step;
    uint64_t allocs0;
    long long heap0;
    int dropped;   // ops beyond PROF_MAX_OPS (reported, never silently lost)
} g_prof;

static const char *const PHASE_NAMES[PROF_N_PHASES] = {"fwd", "bwd", "opt"};

void prof_enable(int on) { g_prof.on = on; }
int prof_enabled(void) { return g_prof.on; }

void prof_reset(void) {
    int on = g_prof.on;
    memset(&g_prof, 0, sizeof g_prof);
    g_prof.on = on;
}

double prof_start(void) { return g_prof.on ? sm_now_s() : 0.0; }

static long long heap_in_use(void) {
    struct mallinfo2 mi = mallinfo2();
    return (long long)(mi.uordblks + mi.hblkhd);
}

void prof_stop(const char *op, prof_phase phase, double t0, double flops, double bytes) {
    prof_stop_as(op, phase, t0, flops, bytes, "f32");
}

void prof_stop_as(const char *op, prof_phase phase, double t0, double flops, double bytes, const char *precision) {
    if (!g_prof.on || !g_prof.in_step) return;
    double dt = sm_now_s() - t0;
    prof_set *s = g_prof.warm_done ? &g_prof.run : &g_prof.warm;
    prof_entry *e = NULL;
    for (int i = 0; i < s->n; i++)
        if (s->e[i].phase == phase && (s->e[i].op == op || !strcmp(s->e[i].op, op)) &&
            !strcmp(s->e[i].precision, precision)) {
            e = &s->e[i];
            break;
        }
    if (!e) {
        if (s->n == PROF_MAX_OPS) {
            g_prof.dropped++;
            return;
        }
        e = &s->e[s->n++];
        *e = (prof_entry){.op = op, .precision = precision, .phase = phase};
    }
    e->calls++;
    e->seconds += dt;
    e->flops += flops;
    e->bytes += bytes;
}

void prof_step_begin(void) {
    if (!g_prof.on) return;
    g_prof.in_step = 1;
    g_prof.allocs0 = sm_alloc_count();
    g_prof.heap0 = heap_in_use();
    g_prof.t_step = sm_now_s();
}

void prof_step_end(long tokens) {
    if (!g_prof.on || !g_prof.in_step) return;
    prof_set *s = g_prof.warm_done ? &g_prof.run : &g_prof.warm;
    s->step_seconds += sm_now_s() - g_prof.t_step;
    s->steps++;
    s->tokens += tokens;
    s->allocs += sm_alloc_count() - g_prof.allocs0;
    long long grew = heap_in_use() - g_prof.heap0;
    s->heap_bytes += grew > 0 ? grew : 0;
    g_prof.in_step = 0;
    g_prof.warm_done = 1;
}

void prof_print(FILE *f, int json) {
    const prof_set *s = g_prof.run.steps > 0 ? &g_prof.run : &g_prof.warm;
    int excluded = g_prof.run.steps > 0;
    if (s->steps == 0) {
        if (json)
            fprintf(f, "{\"event\":\"profile\",\"steps\":0}\n");
        else
            fprintf(f, "profile: no step recorded\n");
        return;
    }
    double steps = (double)s->steps, step_ms = s->step_seconds * 1e3 / steps;
    double tracked_ms = 0.0, phase_ms[PROF_N_PHASES] = {0};
    for (int i = 0; i < s->n; i++) {
        tracked_ms += s->e[i].seconds * 1e3 / steps;
        phase_ms[s->e[i].phase] += s->e[i].seconds * 1e3 / steps;
    }
    double untracked_ms = step_ms - tracked_ms;
    double allocs = (double)s->allocs / steps, heap = (double)s->heap_bytes / steps;
    double tokens = (double)s->tokens / steps;
    if (json) {
        fprintf(f, "{\"event\":\"profile\",\"steps\":%ld,\"warmup_excluded\":%d,\"step_ms\":%.3f,\"untracked_ms\":%.3f,"
                   "\"fwd_ms\":%.3f,\"bwd_ms\":%.3f,\"opt_ms\":%.3f,\"allocs_per_step\":%.1f,\"heap_bytes_per_step\":%.0f,"
                   "\"heap_bytes_per_token\":%.1f,\"ops\":[",
                s->steps, excluded, step_ms, untracked_ms, phase_ms[PROF_FWD], phase_ms[PROF_BWD], phase_ms[PROF_OPT],
                allocs, heap, tokens > 0 ? heap / tokens : 0.0);
        for (int i = 0; i < s->n; i++) {
            const prof_entry *e = &s->e[i];
            double ms = e->seconds * 1e3 / steps;
            fprintf(f, "%s{\"op\":\"%s\",\"precision\":\"%s\",\"phase\":\"%s\",\"calls\":%.1f,\"ms\":%.4f,\"pct\":%.2f,\"gflops\":%.2f,\"gbps\":%.2f}",
                    i ? "," : "", e->op, e->precision, PHASE_NAMES[e->phase], (double)e->calls / steps, ms, 100.0 * ms / step_ms,
                    e->seconds > 0 ? e->flops / e->seconds * 1e-9 : 0.0, e->seconds > 0 ? e->bytes / e->seconds * 1e-9 : 0.0);
        }
        fprintf(f, "]}\n");
        fflush(f);
        return;
    }
    fprintf(f, "profile: %ld step%s%s, %.2f ms/step", s->steps, s->steps == 1 ? "" : "s",
            excluded ? " (the first step after start/reset left out as warm-up)" : "", step_ms);
    if (tokens > 0) fprintf(f, ", %.0f tokens/step", tokens);
    fprintf(f, "\n%-22s %-5s %-4s %9s %10s %7s %9s %9s %10s\n", "op", "phase", "prec", "calls/st", "ms/step", "% step",
            "GFLOP/s", "GB/s", "MB/step");
    for (int ph = 0; ph < PROF_N_PHASES; ph++) {
        for (int i = 0; i < s->n; i++) {
            const prof_entry *e = &s->e[i];
            if (e->phase != (prof_phase)ph) continue;
            double ms = e->seconds * 1e3 / steps;
            fprintf(f, "%-22s %-5s %-4s %9.1f %10.3f %6.1f%% ", e->op, PHASE_NAMES[ph], e->precision,
                    (double)e->calls / steps, ms, 100.0 * ms / step_ms);
            if (e->flops > 0)
                fprintf(f, "%9.1f ", e->flops / e->seconds * 1e-9);
            else
                fprintf(f, "%9s ", "-");
            fprintf(f, "%9.1f %10.1f\n", e->seconds > 0 ? e->bytes / e->seconds * 1e-9 : 0.0, e->bytes / steps * 1e-6);
        }
        if (phase_ms[ph] > 0)
            fprintf(f, "%-22s %-5s %-4s %9s %10.3f %6.1f%%\n", "  total", PHASE_NAMES[ph], "", "", phase_ms[ph],
                    100.0 * phase_ms[ph] / step_ms);
    }
    fprintf(f, "%-22s %-5s %-4s %9s %10.3f %6.1f%%   (communication wait, data loading, loop overhead)\n", "untracked",
            "", "", "", untracked_ms, 100.0 * untracked_ms / step_ms);
    fprintf(f, "heap per step: %.1f allocations by smallmind, %.0f bytes of process heap growth", allocs, heap);
    if (tokens > 0) fprintf(f, " (%.1f bytes/token)", heap / tokens);
    fprintf(f, "\n");
    if (g_prof.dropped) fprintf(f, "profile: %d op records dropped (more than %d ops)\n", g_prof.dropped, PROF_MAX_OPS);
    fflush(f);
}
