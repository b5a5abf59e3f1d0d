// bench.c — `smallmind bench`: kernel throughput against OpenBLAS sgemm and a STREAM-style
// bandwidth figure measured in the same run (bench kernels), and whole training steps with their
// tokens/s, GFLOP/s, per-phase and communication figures and a PyTorch reference (bench train).
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"
#include "comm.h"
#include "common.h"
#include "kernels.h"
#include "trainer.h"

static const char BENCH_USAGE[] =
    "usage: smallmind bench <what> [options]\n"
    "what:\n"
    "  kernels      each kernel's GFLOP/s or GB/s at the model shapes, beside OpenBLAS sgemm on the same\n"
    "               shapes and a STREAM triad, measured in this run, with the ratios; where the CPU has\n"
    "               AVX512-BF16, the vdpbf16ps/FMA instruction peak ratio and the linear layers in bf16\n"
    "               beside fp32 and OpenBLAS, as a fraction of that ratio\n"
    "  train        whole training steps (forward, backward, AdamW) of the two reference shapes: s/step,\n"
    "               tokens/s, GFLOP/s and its fraction of OpenBLAS; under mpirun also forward, backward,\n"
    "               exposed communication wait, optimizer and the share of allreduce hidden by backward;\n"
    "               the PyTorch reference on the same shape where python3-torch is installed; with\n"
    "               AVX512-BF16 also --precision bf16 beside PyTorch's bf16 autocast, and the speed-ups\n"
    "  checkpoint   HDF5 checkpoint save and load against plain sequential I/O (its own options:\n"
    "               smallmind bench checkpoint --help)\n"
    "  tokenizer    GPT-2 BPE MB/s, ours at 1 and 2 threads against tiktoken (WASM) and gpt-3-encoder (its\n"
    "               own options: smallmind bench tokenizer --help)\n"
    "  comm         allreduce alpha/beta, and the step, exposed communication and efficiency predicted\n"
    "               at 2..1024 nodes (under mpirun; its own options: smallmind bench comm --help)\n"
    "  generate     prefill and decode tokens/s (KV cache, no cache, INT8), heap per token, against PyTorch,\n"
    "               OpenBLAS and the memory-bandwidth limit (its own options: smallmind bench generate --help)\n"
    "options:\n"
    "  --shape S        small (L=4 H=4 C=256), gpt2 (L=12 H=12 C=768, 124M) or all (default all);\n"
    "                   both with V=50257, context 1024, B=4, T=64\n"
    "  --batch B        windows per step (default 4)\n"
    "  --seq T          tokens per window (default 64)\n"
    "  --rounds R       timed rounds per figure; the median is reported (default 7)\n"
    "  --steps N        train: timed steps after 2 warm-up steps (default 10)\n"
    "  --threads N      OpenMP threads (default: $OMP_NUM_THREADS, else the CPUs this process may use)\n"
    "  --profile        train: also print the per-op profile table of each shape\n"
    "  --no-blas        skip the OpenBLAS baseline\n"
    "  --no-torch       train: skip the PyTorch reference\n"
    "  --python P       the Python with torch for the reference (default /usr/bin/python3)\n"
    "  --simd L         the CPU features kernels may use: scalar, avx2, avx-vnni, avx512, avx512-vnni,\n"
    "                   avx512-bf16 or native (default native: all the CPU has)\n"
    "  --json           one JSON object per figure instead of the tables\n"
    "  --help\n";

typedef struct {
    const char *what;
    int small, gpt2;   // shapes to run
    int B, T;
    int rounds, steps, threads;
    int profile, no_blas, no_torch, json;
    const char *python;
} bench_opts;

typedef struct {
    const char *name;
    int L, H, C;
} bench_shape;

static const bench_shape SHAPES[2] = {{"small", 4, 4, 256}, {"gpt2-124M", 12, 12, 768}};
enum { BENCH_V = 50257, BENCH_CONTEXT = 1024 };

// ---------------------------------------------------------------------------------------------
// OpenBLAS, loaded at run time (never linked): only the bench touches it

// OpenBLAS (bench_blas_open: loaded with dlopen, its kernel family chosen from the instruction set,
// as bench_util.c explains), the STREAM triad's medians and the child processes: bench_util.h.

// ---------------------------------------------------------------------------------------------
// Timing: blocks of calls, medians over rounds

typedef void (*bench_fn)(void *ctx);

// Calls per timed block so that a block lasts >= ~25 ms (one warm-up call measures it).
static int calls_per_block(bench_fn f, void *ctx) {
    f(ctx);   // the first call touches fresh buffers (page faults: slow here) and would set too few calls
    double t0 = sm_now_s();
    f(ctx);
    double dt = sm_now_s() - t0;
    int n = dt > 0 ? (int)(0.025 / dt) + 1 : 1000;
    return n > 1000 ? 1000 : n;
}

#define MAX_ROUNDS 64

// Seconds per call of f (median over rounds) and, when g is non-NULL, of g, interleaved round by
// round so both see the same machine. OpenBLAS's threads spin for ~0.1 s after a call and
// libgomp's briefly: each block is followed by a pause so neither steals the other's cores.
static void time_pair(bench_fn f, void *cf, bench_fn g, void *cg, int rounds, double *tf, double *tg) {
    double sf[MAX_ROUNDS], sg[MAX_ROUNDS];
    if (rounds > MAX_ROUNDS) rounds = MAX_ROUNDS;
    int nf = calls_per_block(f, cf), ng = 0;
    if (g) {
        bench_sleep(0.02);
        ng = calls_per_block(g, cg);
        bench_sleep(0.15);
    }
    for (int r = 0; r < rounds; r++) {
        double t0 = sm_now_s();
        for (int i = 0; i < nf; i++) f(cf);
        sf[r] = (sm_now_s() - t0) / nf;
        if (g) {
            bench_sleep(0.02);
            t0 = sm_now_s();
            for (int i = 0; i < ng; i++) g(cg);
            sg[r] = (sm_now_s() - t0) / ng;
            bench_sleep(0.15);
        }
    }
    *tf = bench_median(sf, rounds);
    if (g) *tg = bench_median(sg, rounds);
}

// ---------------------------------------------------------------------------------------------
// Output: a table line or one JSON object per figure

static void emit(const bench_opts *o, const char *name, const char *unit, double value, double ms, double baseline,
                 const char *baseline_name) {
    int has_base = baseline > 0;
    if (o->json) {
        printf("{\"name\":\"%s\",\"%s\":%.4g", name, unit, value);
        if (strcmp(unit, "ms")) printf(",\"ms\":%.5g", ms);
        if (has_base) printf(",\"baseline\":\"%s\",\"baseline_%s\":%.4g,\"ratio\":%.4f", baseline_name, unit, baseline, value / baseline);
        printf("}\n");
    } else {
        printf("  %-44s %9.2f %-8s %10.4f ms", name, value, unit, ms);
        if (has_base) printf("   %-9s %9.2f   ratio %5.2f", baseline_name, baseline, value / baseline);
        printf("\n");
    }
    fflush(stdout);
}

static void heading(const bench_opts *o, const char *text) {
    if (!o->json) printf("%s\n", text);
}

static float *bench_buf(size_t n, uint64_t seed) {
    float *x = sm_arena(n * sizeof(float));
    sm_rng r;
    sm_rng_seed(&r, seed, 0x62656e63);
    for (size_t i = 0; i < n; i++) x[i] = sm_rng_uniform(&r) - 0.5f;
    return x;
}

// ---------------------------------------------------------------------------------------------
// Matrix products of a linear layer: ours against OpenBLAS

typedef struct {
    int ta, tb, M, N, K;
    float beta;
    const float *A, *B;
    float *C;
    const bench_blas *blas;
} gemm_ctx;

static void run_ours(void *p) {
    gemm_ctx *c = p;
    int lda = c->ta ? c->M : c->K, ldb = c->tb ? c->K : c->N;
    gemm_mt(c->ta, c->tb, c->M, c->N, c->K, 1.0f, c->A, lda, c->B, ldb, c->beta, c->C, c->N);
}

static void run_blas(void *p) {
    gemm_ctx *c = p;
    int lda = c->ta ? c->M : c->K, ldb = c->tb ? c->K : c->N;
    c->blas->sgemm(BENCH_ROW_MAJOR, c->ta ? BENCH_TRANS : BENCH_NO_TRANS, c->tb ? BENCH_TRANS : BENCH_NO_TRANS, c->M,
                   c->N, c->K, 1.0f, c->A, lda, c->B, ldb, c->beta, c->C, c->N);
}

// Every matrix product of one training step, as the step runs them: in the step's order (the
// forward's products layer by layer, the LM head's, then the backward's from the LM head down),
// each layer with its own weights, activations and gradients (so a product finds its operands
// where the step leaves them: a weight last touched a whole step ago, not hot from the same call
// a moment before), with the step's transposes and betas (backward's dinp and a step's first
// dweight write, beta = 0). Ours (gemm_mt) and OpenBLAS run the same sequence on the same buffers,
// alternately, round by round; every call is timed on its own, with the process's CPU time.
//
// Two figures come out of it. Per product: the median time of its undisturbed calls (every thread
// of the product running throughout; see undisturbed()) over rounds and layers: the product's
// speed when it has the cores it was given. This bench used to report the mean of back-to-back
// calls, which on this shared machine measured how often another process held one of the two
// cores (a 256 x 256 x 256 product: 0.08 ms undisturbed, 3-16 ms when one thread waits for a
// scheduler slice), not the kernel. Per step: the median over rounds of the whole sequence's
// time, disturbed calls and all, the statistic `bench train` uses for the step itself. The
// fraction of disturbed calls is printed beside them.

enum { PROD_FWD, PROD_DINP, PROD_DWEIGHT };
typedef struct {
    char name[96];
    int ta, tb, M, N, K, count;   // count: calls per step
    double flops;
} prod_row;

typedef struct {
    int row;
    const float *A, *B;
    float *C;
} prod_call;

typedef struct {
    int n_rows, n_calls;
    prod_row rows[15];
    prod_call *calls;
    float *mem[5 * (4 * 64 + 2)];
    int n_mem;
    double flops;   // of the whole sequence
} prod_seq;

static float *seq_buf(prod_seq *q, size_t n, uint64_t seed) {
    SM_CHECK(q->n_mem < (int)(sizeof q->mem / sizeof q->mem[0]), "bench: too many buffers");
    return q->mem[q->n_mem++] = bench_buf(n, seed);
}

// The sequence of shape s: 5 linear layers (qkv, attproj, fc, fcproj per block, L blocks; the LM
// head once) x 3 products.
static void prod_seq_build(prod_seq *q, const bench_opts *o, const bench_shape *s) {
    memset(q, 0, sizeof *q);
    const int N = o->B * o->T, C = s->C, L = s->L, Vp = (BENCH_V + 63) / 64 * 64;
    const struct {
        const char *name;
        int ic, oc;
    } lin[5] = {{"qkv", C, 3 * C}, {"attproj", C, C}, {"fc", C, 4 * C}, {"fcproj", 4 * C, C}, {"lm_head", C, Vp}};
    static const char *const WHAT[3] = {"fwd", "dinp", "dweight"};
    for (int i = 0; i < 5; i++)
        for (int k = 0; k < 3; k++) {
            prod_row *r = &q->rows[3 * i + k];
            int ic = lin[i].ic, oc = lin[i].oc;
            if (k == PROD_FWD) *r = (prod_row){.ta = 0, .tb = 1, .M = N, .N = oc, .K = ic};
            else if (k == PROD_DINP) *r = (prod_row){.ta = 0, .tb = 0, .M = N, .N = ic, .K = oc};
            else *r = (prod_row){.ta = 1, .tb = 0, .M = oc, .N = ic, .K = N};
            r->count = i < 4 ? L : 1;
            r->flops = 2.0 * N * (double)ic * oc;
            snprintf(r->name, sizeof r->name, "matmul %s.%s %s (%d,%d,%d)", s->name, lin[i].name, WHAT[k], r->M, r->N,
                     r->K);
            q->flops += r->count * r->flops;
        }
    q->n_rows = 15;
    // per layer and linear: input x (N,ic), weight W (oc,ic), output y (N,oc), its gradient dy
    // (N,oc) (scratch in the step: one per linear, shared by the layers) and dW (oc,ic); dx (N,ic)
    // scratch per linear
    float *x[5][64], *w[5][64], *y[5][64], *dw[5][64], *dy[5], *dx[5];
    SM_CHECK(L <= 64, "bench: at most 64 layers");
    uint64_t seed = 100;
    for (int i = 0; i < 5; i++) {
        int ic = lin[i].ic, oc = lin[i].oc, nl = i < 4 ? L : 1;
        for (int l = 0; l < nl; l++) {
            x[i][l] = seq_buf(q, (size_t)N * ic, seed++);
            w[i][l] = seq_buf(q, (size_t)oc * ic, seed++);
            y[i][l] = seq_buf(q, (size_t)N * oc, seed++);
            dw[i][l] = seq_buf(q, (size_t)oc * ic, seed++);
        }
        dy[i] = seq_buf(q, (size_t)N * oc, seed++);
        dx[i] = seq_buf(q, (size_t)N * ic, seed++);
    }
    q->n_calls = 3 * (4 * L + 1);
    q->calls = sm_calloc((size_t)q->n_calls, sizeof(prod_call));
    int n = 0;
    for (int l = 0; l < L; l++)
        for (int i = 0; i < 4; i++) q->calls[n++] = (prod_call){3 * i + PROD_FWD, x[i][l], w[i][l], y[i][l]};
    q->calls[n++] = (prod_call){3 * 4 + PROD_FWD, x[4][0], w[4][0], y[4][0]};
    q->calls[n++] = (prod_call){3 * 4 + PROD_DINP, y[4][0], w[4][0], dx[4]};   // dlogits sit where the logits were
    q->calls[n++] = (prod_call){3 * 4 + PROD_DWEIGHT, y[4][0], x[4][0], dw[4][0]};
    for (int l = L - 1; l >= 0; l--)
        for (int i = 3; i >= 0; i--) {
            q->calls[n++] = (prod_call){3 * i + PROD_DINP, dy[i], w[i][l], dx[i]};
            q->calls[n++] = (prod_call){3 * i + PROD_DWEIGHT, dy[i], x[i][l], dw[i][l]};
        }
}

static void prod_seq_free(prod_seq *q) {
    for (int i = 0; i < q->n_mem; i++) sm_free(q->mem[i]);
    sm_free(q->calls);
}

static double process_cpu_s(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0) return 0.0;
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// One pass over the sequence, ours (blas NULL) or OpenBLAS's: each call's wall seconds into t and
// the process's CPU seconds during it into cpu (n_calls each); returns the pass's wall seconds.
static double prod_seq_run(const prod_seq *q, const bench_blas *blas, double *t, double *cpu) {
    double t_start = sm_now_s();
    for (int c = 0; c < q->n_calls; c++) {
        const prod_call *k = &q->calls[c];
        const prod_row *r = &q->rows[k->row];
        int lda = r->ta ? r->M : r->K, ldb = r->tb ? r->K : r->N;
        double c0 = process_cpu_s(), t0 = sm_now_s();
        if (!blas)
            gemm_mt(r->ta, r->tb, r->M, r->N, r->K, 1.0f, k->A, lda, k->B, ldb, 0.0f, k->C, r->N);
        else
            blas->sgemm(BENCH_ROW_MAJOR, r->ta ? BENCH_TRANS : BENCH_NO_TRANS, r->tb ? BENCH_TRANS : BENCH_NO_TRANS,
                        r->M, r->N, r->K, 1.0f, k->A, lda, k->B, ldb, 0.0f, k->C, r->N);
        t[c] = sm_now_s() - t0;
        cpu[c] = process_cpu_s() - c0;
    }
    return sm_now_s() - t_start;
}

typedef struct {
    double row_s[15];     // median seconds per call of each row, over its undisturbed calls
    double step_s;        // median seconds of the whole sequence
    double sum_s;         // sum over rows of count x row_s
    double disturbed;     // the fraction of calls that were disturbed
} prod_times;

// A call was undisturbed when the process got at least 90% of threads x its wall time in CPU
// time: every thread ran (computing, or spinning at the end) for the whole call. On a machine
// shared with other work a product's threads are often not all running (a 2-thread product then
// waits for the missing one, for a scheduler slice of 1-10 ms against 0.04-3 ms of work); such
// calls say how busy the machine was, not how fast the product is.
static int undisturbed(double wall, double cpu, int threads) { return cpu >= 0.9 * threads * wall; }

// Rounds of the sequence, ours and OpenBLAS's alternately (after one unmeasured pass of each:
// first touches), with pauses so that neither library's waiting threads take the other's cores.
static void prod_seq_time(const prod_seq *q, const bench_blas *blas, int rounds, int threads, prod_times *ours,
                          prod_times *theirs) {
    const int n_sides = blas && blas->sgemm ? 2 : 1;
    size_t per_side = (size_t)rounds * q->n_calls;
    double *t = sm_calloc(per_side * 2, sizeof(double)), *cpu = sm_calloc(per_side * 2, sizeof(double));
    double *whole = sm_calloc((size_t)rounds * 2, sizeof(double));
    double *clean = sm_calloc(per_side, sizeof(double)), *all = sm_calloc(per_side, sizeof(double));
    for (int r = -1; r < rounds; r++)
        for (int side = 0; side < n_sides; side++) {
            size_t at = side * per_side + (size_t)(r < 0 ? 0 : r) * q->n_calls;
            double w = prod_seq_run(q, side ? blas : NULL, t + at, cpu + at);
            if (r >= 0) whole[side * rounds + r] = w;
            bench_sleep(side ? 0.15 : 0.05);   // OpenBLAS's threads spin ~0.1 s after a call; libgomp's briefly
        }
    for (int side = 0; side < n_sides; side++) {
        prod_times *pt = side ? theirs : ours;
        const double *ts = t + side * per_side, *cs = cpu + side * per_side;
        pt->sum_s = 0.0;
        size_t n_disturbed = 0;
        for (int row = 0; row < q->n_rows; row++) {
            int nc = 0, na = 0;
            for (size_t i = 0; i < per_side; i++) {
                if (q->calls[i % q->n_calls].row != row) continue;
                all[na++] = ts[i];
                if (undisturbed(ts[i], cs[i], threads)) clean[nc++] = ts[i];
            }
            n_disturbed += (size_t)(na - nc);
            // too few undisturbed calls to stand for the row: the median of them all
            pt->row_s[row] = nc >= 3 ? bench_median(clean, nc) : bench_median(all, na);
            pt->sum_s += q->rows[row].count * pt->row_s[row];
        }
        pt->disturbed = (double)n_disturbed / (double)per_side;
        pt->step_s = bench_median(whole + side * rounds, rounds);
    }
    sm_free(t);
    sm_free(cpu);
    sm_free(whole);
    sm_free(clean);
    sm_free(all);
}

// Every matrix product of one training step of shape s, ours and OpenBLAS's (times in *ours,
// *theirs; theirs is left zero without OpenBLAS); prints a line per product and for the step
// when print is set. Returns the FLOPs of the step's products.
static double bench_step_products(const bench_opts *o, const bench_blas *blas, const bench_shape *s, int print,
                                  prod_times *ours, prod_times *theirs) {
    prod_seq q;
    prod_seq_build(&q, o, s);
    memset(ours, 0, sizeof *ours);
    memset(theirs, 0, sizeof *theirs);
    prod_seq_time(&q, blas, o->rounds, o->threads, ours, theirs);
    int has_blas = blas->sgemm != NULL;
    for (int row = 0; print && row < q.n_rows; row++) {
        const prod_row *r = &q.rows[row];
        emit(o, r->name, "gflops", r->flops / ours->row_s[row] * 1e-9, ours->row_s[row] * 1e3,
             has_blas ? r->flops / theirs->row_s[row] * 1e-9 : 0.0, "openblas");
    }
    if (print) {
        char name[128];
        snprintf(name, sizeof name, "matmul %s: all products of a step", s->name);
        emit(o, name, "gflops", q.flops / ours->sum_s * 1e-9, ours->sum_s * 1e3,
             has_blas ? q.flops / theirs->sum_s * 1e-9 : 0.0, "openblas");
        snprintf(name, sizeof name, "matmul %s: the step's products in one pass", s->name);
        emit(o, name, "gflops", q.flops / ours->step_s * 1e-9, ours->step_s * 1e3,
             has_blas ? q.flops / theirs->step_s * 1e-9 : 0.0, "openblas");
        snprintf(name, sizeof name, "matmul %s: calls disturbed by other processes", s->name);
        emit(o, name, "frac", ours->disturbed, ours->sum_s * 1e3, has_blas ? theirs->disturbed : 0.0, "openblas");
    }
    double flops = q.flops;
    prod_seq_free(&q);
    return flops;
}

// ---------------------------------------------------------------------------------------------
// bench kernels

typedef struct {
    int N, C, NH, B, T, Vp, V;
    float *x, *y, *z, *w, *b, *mean, *rstd, *d1, *d2, *qkv, *lse, *att, *big, *dbig;
    int *tok;
} kctx;

static void k_layernorm_f(void *p) {
    kctx *k = p;
    layernorm_forward(k->y, k->mean, k->rstd, k->x, k->w, k->b, k->N, k->C);
}
static void k_reslayernorm_f(void *p) {
    kctx *k = p;
    residual_layernorm_forward(k->z, k->y, k->mean, k->rstd, k->x, k->d2, k->w, k->b, k->N, k->C);
}
static void k_layernorm_b(void *p) {
    kctx *k = p;
    layernorm_backward(k->d1, k->z, k->z + k->C, k->d2, k->x, k->w, k->mean, k->rstd, k->N, k->C);
}
static void k_gelu_f(void *p) {
    kctx *k = p;
    gelu_forward(k->y, k->x, (size_t)k->N * k->C);
}
static void k_gelu_b(void *p) {
    kctx *k = p;
    gelu_backward(k->d1, k->x, k->d2, (size_t)k->N * k->C);
}
static void k_residual_f(void *p) {
    kctx *k = p;
    residual_forward(k->y, k->x, k->d2, (size_t)k->N * k->C);
}
static void k_attention_f(void *p) {
    kctx *k = p;
    attention_forward(k->y, k->lse, k->qkv, k->B, k->T, k->C, k->NH);
}
static void k_attention_ref_f(void *p) {
    kctx *k = p;
    attention_forward_ref(k->y, k->att, k->qkv, k->B, k->T, k->C, k->NH);
}
static void k_attention_b(void *p) {
    kctx *k = p;
    attention_backward(k->d1, k->d2, k->y, k->qkv, k->lse, k->B, k->T, k->C, k->NH);
}
static void k_attention_ref_b(void *p) {
    kctx *k = p;
    attention_backward_ref(k->d1, k->z, k->d2, k->qkv, k->att, k->B, k->T, k->C, k->NH);
}
static void k_softmax_xent(void *p) {
    kctx *k = p;
    softmax_xent(k->mean, k->dbig, k->big, k->tok, k->N, k->V, k->Vp, 1.0f / k->N);
}
static void k_encoder_f(void *p) {
    kctx *k = p;
    encoder_forward(k->y, k->tok, k->big, k->w, k->B, k->T, k->C);
}
static void k_encoder_b(void *p) {
    kctx *k = p;
    encoder_backward(k->dbig, k->d1, k->y, k->tok, k->B, k->T, k->C);
}

typedef struct {
    float *p, *g, *m, *v;
    size_t n;
} adam_ctx;

static void k_adamw(void *p) {
    adam_ctx *a = p;
    adamw_update(a->p, a->g, a->m, a->v, a->n, 1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f, 5);
}
// The baseline: AdamW as anyone would first write it, one plain loop that GCC vectorises (with
// -fno-math-errno, as the project builds), bias corrections hoisted; no clip scale.
static void k_adamw_plain(void *p) {
    adam_ctx *a = p;
    float *restrict prm = a->p, *restrict m = a->m, *restrict v = a->v;
    const float *restrict g = a->g;
    const float lr = 1e-4f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f;
    const float bc1 = 1.0f / (1.0f - powf(b1, 5.0f)), bc2 = 1.0f / (1.0f - powf(b2, 5.0f));
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < a->n; i++) {
        m[i] = b1 * m[i] + (1.0f - b1) * g[i];
        v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
        prm[i] -= lr * ((m[i] * bc1) / (sqrtf(v[i] * bc2) + eps) + wd * prm[i]);
    }
}
static void k_sumsq(void *p) {
    adam_ctx *a = p;
    volatile double s = sum_squares(a->g, a->n);
    (void)s;
}

typedef struct {
    float *a, *b, *c;
    size_t n;
} stream_ctx;

static void k_triad(void *p) {
    stream_ctx *s = p;
    float *restrict a = s->a;
    const float *restrict b = s->b, *restrict c = s->c;
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < s->n; i++) a[i] = b[i] + 3.0f * c[i];
}

// STREAM triad a = b + s c over arrays far larger than the caches: GB/s counted at 12 bytes per
// element (two reads, one write), as STREAM counts it.
static double bench_stream(const bench_opts *o) {
    stream_ctx s = {.n = (size_t)1 << 25};   // 3 x 128 MiB
    s.a = bench_buf(s.n, 10);
    s.b = bench_buf(s.n, 11);
    s.c = bench_buf(s.n, 12);
    double t = 0, unused = 0;
    time_pair(k_triad, &s, NULL, NULL, o->rounds, &t, &unused);
    double gbps = 12.0 * (double)s.n / t * 1e-9;
    emit(o, "stream triad (3 x 128 MiB)", "gbps", gbps, t * 1e3, 0.0, "");
    sm_free(s.a);
    sm_free(s.b);
    sm_free(s.c);
    return gbps;
}

static void bench_memory_kernel(const bench_opts *o, const char *name, bench_fn f, void *ctx, double bytes,
                                double stream_gbps) {
    double t = 0, unused = 0;
    time_pair(f, ctx, NULL, NULL, o->rounds, &t, &unused);
    emit(o, name, "gbps", bytes / t * 1e-9, t * 1e3, stream_gbps, "stream");
}

// The loss and the LM head's backward, as the step runs them (the logits in memory, written by the
// forward's last product): softmax_xent writing dlogits then matmul_backward reading them twice,
// against softmax_xent_stats then lm_head_backward (dlogits recomputed block by block in cache).
typedef struct {
    int N, C, V, Vp;
    float *logits, *dlogits, *losses, *mx, *inv, *inp, *wte, *dinp, *dwte;
    int *targets;
} lmh_ctx;

static void k_lm_head_unfused(void *p) {
    lmh_ctx *c = p;
    softmax_xent(c->losses, c->dlogits, c->logits, c->targets, c->N, c->V, c->Vp, 1.0f / c->N);
    matmul_backward(c->dinp, c->dwte, NULL, c->dlogits, c->inp, c->wte, c->N, c->C, c->Vp, 0);
}
static void k_lm_head_fused(void *p) {
    lmh_ctx *c = p;
    softmax_xent_stats(c->losses, c->mx, c->inv, c->logits, c->targets, c->N, c->V, c->Vp);
    lm_head_backward(c->dinp, c->dwte, c->logits, c->mx, c->inv, c->targets, c->inp, c->wte, c->N, c->C, c->V, c->Vp,
                     1.0f / c->N, 0);
}

static void bench_lm_head(const bench_opts *o, const bench_shape *s) {
    lmh_ctx c = {.N = o->B * o->T, .C = s->C, .V = BENCH_V, .Vp = (BENCH_V + 63) / 64 * 64};
    size_t nl = (size_t)c.N * c.Vp, nw = (size_t)c.Vp * c.C;
    c.logits = bench_buf(nl, 80);
    for (size_t i = 0; i < nl; i++) c.logits[i] *= 8.0f;
    c.dlogits = bench_buf(nl, 81);
    c.losses = bench_buf((size_t)c.N, 82);
    c.mx = bench_buf((size_t)c.N, 83);
    c.inv = bench_buf((size_t)c.N, 84);
    c.inp = bench_buf((size_t)c.N * c.C, 85);
    c.wte = bench_buf(nw, 86);
    c.dinp = bench_buf((size_t)c.N * c.C, 87);
    c.dwte = bench_buf(nw, 88);
    c.targets = sm_arena((size_t)c.N * sizeof(int));
    for (int i = 0; i < c.N; i++) c.targets[i] = (i * 7919) % c.V;
    double tf = 0, tu = 0, flops = 4.0 * c.N * (double)c.C * c.Vp;
    time_pair(k_lm_head_fused, &c, k_lm_head_unfused, &c, o->rounds, &tf, &tu);
    char name[160];
    snprintf(name, sizeof name, "lm_head loss+backward fused (%d,%d,%d)", c.N, c.Vp, c.C);
    emit(o, name, "gflops", flops / tf * 1e-9, tf * 1e3, flops / tu * 1e-9, "unfused");
    float *bufs[] = {c.logits, c.dlogits, c.losses, c.mx, c.inv, c.inp, c.wte, c.dinp, c.dwte};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) sm_free(bufs[i]);
    sm_free(c.targets);
}

static void bench_kernels_shape(const bench_opts *o, const bench_blas *blas, const bench_shape *s, double stream_gbps) {
    char title[160], name[160];
    snprintf(title, sizeof title, "%s (L=%d H=%d C=%d), B=%d T=%d: matrix products (GFLOP/s) beside OpenBLAS sgemm",
             s->name, s->L, s->H, s->C, o->B, o->T);
    heading(o, title);
    prod_times ours, theirs;
    bench_step_products(o, blas, s, 1, &ours, &theirs);
    bench_lm_head(o, s);

    snprintf(title, sizeof title, "%s: other kernels (GB/s: bytes each must move / time; beside the STREAM triad)",
             s->name);
    heading(o, title);
    kctx k = {.B = o->B, .T = o->T, .C = s->C, .NH = s->H, .N = o->B * o->T, .V = BENCH_V,
              .Vp = (BENCH_V + 63) / 64 * 64};
    // big holds the logits (N,Vp) and doubles as wte (Vp,C) for the encoder
    size_t nc = (size_t)k.N * k.C, nbig = (size_t)k.Vp * (size_t)(k.N > k.C ? k.N : k.C);
    size_t nbh = (size_t)k.B * k.NH;
    k.x = bench_buf(4 * nc, 20);
    k.y = bench_buf(4 * nc, 21);
    k.z = bench_buf(nbh * k.T * k.T > 4 * nc ? nbh * k.T * k.T : 4 * nc, 22);
    k.w = bench_buf((size_t)BENCH_CONTEXT * k.C, 23);
    k.b = bench_buf(k.C, 24);
    k.mean = bench_buf(k.N, 25);
    k.rstd = bench_buf(k.N, 26);
    k.d1 = bench_buf(4 * nc, 27);
    k.d2 = bench_buf(4 * nc, 28);
    k.qkv = bench_buf(3 * nc, 29);
    k.lse = bench_buf(nbh * k.T, 30);
    k.att = bench_buf(nbh * k.T * k.T, 31);
    k.big = bench_buf(nbig, 32);
    k.dbig = bench_buf(nbig, 33);
    k.tok = sm_arena((size_t)k.N * sizeof(int));
    for (int i = 0; i < k.N; i++) k.tok[i] = (i * 7919) % k.V;
    for (size_t i = 0; i < (size_t)k.C; i++) k.w[i] = 1.0f + 0.1f * k.w[i];
    for (int i = 0; i < k.N; i++) k.rstd[i] = 1.0f;

    double b4 = 4.0;
    snprintf(name, sizeof name, "layernorm fwd (%d,%d)", k.N, k.C);
    bench_memory_kernel(o, name, k_layernorm_f, &k, b4 * 2 * nc, stream_gbps);
    snprintf(name, sizeof name, "residual+layernorm fwd (%d,%d)", k.N, k.C);
    bench_memory_kernel(o, name, k_reslayernorm_f, &k, b4 * 4 * nc, stream_gbps);
    snprintf(name, sizeof name, "layernorm bwd (%d,%d)", k.N, k.C);
    bench_memory_kernel(o, name, k_layernorm_b, &k, b4 * 4 * nc, stream_gbps);
    snprintf(name, sizeof name, "residual fwd (%d,%d)", k.N, k.C);
    bench_memory_kernel(o, name, k_residual_f, &k, b4 * 3 * nc, stream_gbps);
    kctx g = k;
    g.C = 4 * k.C;
    snprintf(name, sizeof name, "gelu fwd (%d,%d)", k.N, g.C);
    bench_memory_kernel(o, name, k_gelu_f, &g, b4 * 2 * 4 * nc, stream_gbps);
    snprintf(name, sizeof name, "gelu bwd (%d,%d)", k.N, g.C);
    bench_memory_kernel(o, name, k_gelu_b, &g, b4 * 3 * 4 * nc, stream_gbps);   // reads inp, dout; writes dinp
    snprintf(name, sizeof name, "softmax_xent fwd+dlogits (%d,%d)", k.N, k.Vp);
    bench_memory_kernel(o, name, k_softmax_xent, &k, b4 * 2 * (double)k.N * k.Vp, stream_gbps);
    snprintf(name, sizeof name, "encoder fwd (%d,%d)", k.N, k.C);
    bench_memory_kernel(o, name, k_encoder_f, &k, b4 * 3 * nc, stream_gbps);
    snprintf(name, sizeof name, "encoder bwd (%d,%d)", k.N, k.C);
    bench_memory_kernel(o, name, k_encoder_b, &k, b4 * 5 * nc, stream_gbps);

    // attention: flash kernel against the batched-matmul reference, GFLOP/s of the causal work
    int hs = k.C / k.NH;
    double att_f = 2.0 * k.B * k.NH * hs * (double)k.T * (k.T + 1);
    double tf = 0, tr = 0;
    heading(o, "  attention (GFLOP/s of the causal products; baseline: the batched-matmul reference kernel)");
    time_pair(k_attention_f, &k, k_attention_ref_f, &k, o->rounds, &tf, &tr);
    snprintf(name, sizeof name, "attention fwd flash (B=%d,NH=%d,T=%d,hs=%d)", k.B, k.NH, k.T, hs);
    emit(o, name, "gflops", att_f / tf * 1e-9, tf * 1e3, att_f / tr * 1e-9, "ref");
    k_attention_f(&k);   // lse and out for backward
    k_attention_ref_f(&k);
    time_pair(k_attention_b, &k, k_attention_ref_b, &k, o->rounds, &tf, &tr);
    snprintf(name, sizeof name, "attention bwd flash (B=%d,NH=%d,T=%d,hs=%d)", k.B, k.NH, k.T, hs);
    emit(o, name, "gflops", 2.5 * att_f / tf * 1e-9, tf * 1e3, 2.5 * att_f / tr * 1e-9, "ref");

    float *bufs[] = {k.x, k.y, k.z, k.w, k.b, k.mean, k.rstd, k.d1, k.d2, k.qkv, k.lse, k.att, k.big, k.dbig};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) sm_free(bufs[i]);
    sm_free(k.tok);
}

static size_t params_of(const bench_shape *s) {
    sm_model_config cfg = {.n_layer = s->L, .n_head = s->H, .n_embd = s->C, .max_seq_len = BENCH_CONTEXT,
                       .vocab_size = BENCH_V};
    char err[256];
    if (gpt2_config_validate(&cfg, err, sizeof err) != 0) sm_fatal(SM_EXIT_RUNTIME, "bench: %s", err);
    sm_table tab;
    gpt2_param_table(&tab, &cfg);
    size_t n = 0;
    for (int i = 0; i < tab.count; i++) n += tab.t[i].n_elems;
    return n;
}

static void bench_adamw(const bench_opts *o, const bench_shape *s, double stream_gbps) {
    char title[128];
    snprintf(title, sizeof title, "optimizer at %s (one fused AdamW pass over params, grads, m, v: 28 bytes/param)",
             s->name);
    heading(o, title);
    adam_ctx a = {.n = params_of(s)};
    a.p = bench_buf(a.n, 40);
    a.g = bench_buf(a.n, 41);
    a.m = bench_buf(a.n, 42);
    a.v = sm_arena(a.n * sizeof(float));
    double t = 0, t_plain = 0;
    time_pair(k_adamw, &a, k_adamw_plain, &a, o->rounds, &t, &t_plain);
    char name[96];
    snprintf(name, sizeof name, "adamw (%zu params)", a.n);
    emit(o, name, "gparams_per_s", (double)a.n / t * 1e-9, t * 1e3, (double)a.n / t_plain * 1e-9, "plainloop");
    bench_memory_kernel(o, "adamw bytes moved", k_adamw, &a, 28.0 * (double)a.n, stream_gbps);
    bench_memory_kernel(o, "sum_squares (grad norm)", k_sumsq, &a, 4.0 * (double)a.n, stream_gbps);
    sm_free(a.p);
    sm_free(a.g);
    sm_free(a.m);
    sm_free(a.v);
}

// ---------------------------------------------------------------------------------------------
// INT8 against fp32, and the decode step's matrix-vector products (bench kernels)

typedef struct {
    int N, C, OC, group;
    const float *x, *w, *ws, *bias;
    const int8_t *wq;
    float *out;
} lin_ctx;

static void k_linear_f32(void *p) {
    lin_ctx *l = p;
    matmul_forward(l->out, l->x, l->w, l->bias, l->N, l->C, l->OC);
}
static void k_linear_q8(void *p) {
    lin_ctx *l = p;
    matmul_forward_q8(l->out, l->x, l->wq, l->ws, l->bias, l->N, l->C, l->OC, l->group);
}

// One decode step's linear layers at N = 1: every layer's own weights (so they come from memory,
// as in generation, not from cache), then the tied LM head.
enum { DEC_MAX_LAYERS = 48 };
typedef struct {
    int L, C, Vp, group;
    float *w[DEC_MAX_LAYERS][4], *wte;           // fp32: qkv, attproj, fc, fcproj; (Vp,C)
    int8_t *q[DEC_MAX_LAYERS][4], *wteq;         // int8, with scales
    float *s[DEC_MAX_LAYERS][4], *wtes;
    float *bias, *x, *out;
} dec_ctx;

static const int DEC_IN[4] = {1, 1, 1, 4}, DEC_OUT[4] = {3, 1, 4, 1};   // in and out widths in units of C

static void k_decode_f32(void *p) {
    dec_ctx *d = p;
    for (int l = 0; l < d->L; l++)
        for (int k = 0; k < 4; k++) matmul_forward(d->out, d->x, d->w[l][k], d->bias, 1, DEC_IN[k] * d->C, DEC_OUT[k] * d->C);
    matmul_forward(d->out, d->x, d->wte, NULL, 1, d->C, d->Vp);
}
static void k_decode_q8(void *p) {
    dec_ctx *d = p;
    for (int l = 0; l < d->L; l++)
        for (int k = 0; k < 4; k++)
            matmul_forward_q8(d->out, d->x, d->q[l][k], d->s[l][k], d->bias, 1, DEC_IN[k] * d->C, DEC_OUT[k] * d->C, d->group);
    matmul_forward_q8(d->out, d->x, d->wteq, d->wtes, NULL, 1, d->C, d->Vp, d->group);
}

static void bench_q8_shape(const bench_opts *o, const bench_shape *sh, double stream_gbps) {
    const int group = 64, C = sh->C, Vp = (BENCH_V + 63) / 64 * 64, N = o->B * o->T;
    char title[200], name[160];
    snprintf(title, sizeof title,
             "%s: INT8 weights (group %d, gemm q8 path %s) beside fp32 (path %s): prefill N=%d (GFLOP/s)", sh->name,
             group, kernels_path(KERNELS_OP_GEMM_Q8), kernels_path(KERNELS_OP_GEMM_F32), N);
    heading(o, title);
    const struct {
        const char *name;
        int ic, oc;
    } lin[5] = {{"qkv", C, 3 * C}, {"attproj", C, C}, {"fc", C, 4 * C}, {"fcproj", 4 * C, C}, {"lm_head", C, Vp}};
    for (int i = 0; i < 5; i++) {
        int ic = lin[i].ic, oc = lin[i].oc, G = (ic + group - 1) / group;
        lin_ctx l = {N, ic, oc, group, bench_buf((size_t)N * ic, 60), bench_buf((size_t)oc * ic, 61), NULL,
                     bench_buf((size_t)oc, 62), NULL, bench_buf((size_t)N * oc, 63)};
        float *ws = sm_arena((size_t)oc * G * sizeof(float));
        int8_t *wq = sm_arena((size_t)oc * ic);
        q8_quantize(wq, ws, l.w, oc, ic, group);
        l.wq = wq, l.ws = ws;
        double t8 = 0, t32 = 0, flops = 2.0 * N * ic * oc;
        time_pair(k_linear_q8, &l, k_linear_f32, &l, o->rounds, &t8, &t32);
        snprintf(name, sizeof name, "matmul q8 %s.%s fwd (%d,%d,%d)", sh->name, lin[i].name, N, oc, ic);
        emit(o, name, "gflops", flops / t8 * 1e-9, t8 * 1e3, flops / t32 * 1e-9, "f32");
        sm_free((void *)l.x), sm_free((void *)l.w), sm_free((void *)l.bias), sm_free(l.out), sm_free(ws), sm_free(wq);
    }

    snprintf(title, sizeof title,
             "%s: a decode step's matrix-vector products (N=1, %d layers' own weights + the LM head): fp32 and INT8",
             sh->name, sh->L);
    heading(o, title);
    dec_ctx d = {.L = sh->L < DEC_MAX_LAYERS ? sh->L : DEC_MAX_LAYERS, .C = C, .Vp = Vp, .group = group};
    double f32_bytes = 0, q8_bytes = 0, flops = 0;
    for (int l = 0; l < d.L; l++)
        for (int k = 0; k < 4; k++) {
            int ic = DEC_IN[k] * C, oc = DEC_OUT[k] * C, G = (ic + group - 1) / group;
            d.w[l][k] = bench_buf((size_t)oc * ic, 70 + 4 * l + k);
            d.q[l][k] = sm_arena((size_t)oc * ic);
            d.s[l][k] = sm_arena((size_t)oc * G * sizeof(float));
            q8_quantize(d.q[l][k], d.s[l][k], d.w[l][k], oc, ic, group);
            f32_bytes += 4.0 * oc * ic;
            q8_bytes += (double)oc * ic + 4.0 * oc * G;
            flops += 2.0 * oc * ic;
        }
    int Gv = (C + group - 1) / group;
    d.wte = bench_buf((size_t)Vp * C, 69);
    d.wteq = sm_arena((size_t)Vp * C);
    d.wtes = sm_arena((size_t)Vp * Gv * sizeof(float));
    q8_quantize(d.wteq, d.wtes, d.wte, Vp, C, group);
    f32_bytes += 4.0 * Vp * C;
    q8_bytes += (double)Vp * C + 4.0 * Vp * Gv;
    flops += 2.0 * Vp * C;
    d.bias = bench_buf((size_t)4 * C, 64);
    d.x = bench_buf((size_t)4 * C, 65);
    d.out = bench_buf(Vp > 4 * C ? (size_t)Vp : (size_t)4 * C, 66);
    double t32 = 0, t8 = 0;
    time_pair(k_decode_q8, &d, k_decode_f32, &d, o->rounds, &t8, &t32);
    snprintf(name, sizeof name, "decode %s f32 matvecs (%.0f MB of weights)", sh->name, f32_bytes * 1e-6);
    emit(o, name, "gbps", f32_bytes / t32 * 1e-9, t32 * 1e3, stream_gbps, "stream");
    snprintf(name, sizeof name, "decode %s q8 matvecs (%.0f MB of weights)", sh->name, q8_bytes * 1e-6);
    emit(o, name, "gbps", q8_bytes / t8 * 1e-9, t8 * 1e3, stream_gbps, "stream");
    snprintf(name, sizeof name, "decode %s q8 matvecs: speed beside f32", sh->name);
    emit(o, name, "gflops", flops / t8 * 1e-9, t8 * 1e3, flops / t32 * 1e-9, "f32");
    for (int l = 0; l < d.L; l++)
        for (int k = 0; k < 4; k++) sm_free(d.w[l][k]), sm_free(d.q[l][k]), sm_free(d.s[l][k]);
    sm_free(d.wte), sm_free(d.wteq), sm_free(d.wtes), sm_free(d.bias), sm_free(d.x), sm_free(d.out);
}

// The machine, for the record beside the figures: the CPU model (/proc/cpuinfo), the CPUs online
// and the load average (the machine may be shared: figures taken under load are noisier).
static void print_machine(const bench_opts *o) {
    if (o->json) return;
    char model[128] = "?", family[16] = "?", mod[16] = "?", line[256];
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (!colon) continue;
        char *v = colon + 1 + (colon[1] == ' ');
        v[strcspn(v, "\n")] = '\0';
        if (!strncmp(line, "model name", 10) && model[0] == '?') snprintf(model, sizeof model, "%s", v);
        else if (!strncmp(line, "cpu family", 10) && family[0] == '?') snprintf(family, sizeof family, "%s", v);
        else if (!strncmp(line, "model\t", 6) && mod[0] == '?') snprintf(mod, sizeof mod, "%s", v);
    }
    if (f) fclose(f);
    double load[3] = {0};
    int have_load = getloadavg(load, 3) == 3;
    printf("machine: %s (family %s model %s), %ld CPUs online", model, family, mod, sysconf(_SC_NPROCESSORS_ONLN));
    if (have_load) printf(", load average %.2f %.2f %.2f", load[0], load[1], load[2]);
    printf("\n");
}

// ---------------------------------------------------------------------------------------------
// bf16 mixed precision (issue 15, bench kernels): the instruction peak ratio this CPU gives, and the
// linear layers' products in bf16 beside our fp32 and OpenBLAS sgemm, measured in this run

typedef struct {
    int bf16;
    long n;
} peak_ctx;
static void k_peak(void *p) {
    peak_ctx *c = p;
    volatile double f = kernels_peak_loop(c->bf16, c->n);
    (void)f;
}

// Seconds per call of each of n functions, interleaved block by block in every round (medians),
// with time_pair's pauses so OpenBLAS's and libgomp's spinning threads never overlap a block
static void time_n(int n, bench_fn *f, void **ctx, int rounds, double *t) {
    double s[4][MAX_ROUNDS];
    int calls[4];
    if (rounds > MAX_ROUNDS) rounds = MAX_ROUNDS;
    for (int k = 0; k < n; k++) {
        calls[k] = calls_per_block(f[k], ctx[k]);
        bench_sleep(0.15);
    }
    for (int r = 0; r < rounds; r++)
        for (int k = 0; k < n; k++) {
            // one untimed call first: after the pause the team's threads sleep and the caches hold
            // another kernel's data; a block of a small shape (0.1 ms calls) timed cold read 16-70
            // GFLOP/s where the step's own calls run at 400
            f[k](ctx[k]);
            double t0 = sm_now_s();
            for (int i = 0; i < calls[k]; i++) f[k](ctx[k]);
            s[k][r] = (sm_now_s() - t0) / calls[k];
            bench_sleep(0.15);
        }
    for (int k = 0; k < n; k++) t[k] = bench_median(s[k], rounds);
}

// The peak ratio: 512-bit vdpbf16ps against FMAs, register to register, on every thread
static double bench_bf16_peak(const bench_opts *o) {
    peak_ctx f = {0, 1L << 19}, b = {1, 1L << 19};
    double flops_f = kernels_peak_loop(0, f.n), flops_b = kernels_peak_loop(1, b.n);
    bench_fn fn[2] = {k_peak, k_peak};
    void *cx[2] = {&f, &b};
    double t[2];
    time_n(2, fn, cx, o->rounds, t);
    double gf = flops_f / t[0] * 1e-9, gb = flops_b / t[1] * 1e-9;
    emit(o, "peak: fp32 FMA (vfmadd231ps zmm, 16 chains per thread)", "gflops", gf, t[0] * 1e3, 0.0, "");
    emit(o, "peak: bf16 dot (vdpbf16ps zmm, 16 chains per thread)", "gflops", gb, t[1] * 1e3, gf, "fma");
    return gb / gf;
}

typedef struct {
    int N, IC, OC;
    const float *inp, *w, *dout;
    const uint16_t *w16;
    float *out, *dinp, *dw;
    const bench_blas *blas;
} lin2_ctx;

static void k_lin_f32_fwd(void *p) {
    lin2_ctx *c = p;
    matmul_forward(c->out, c->inp, c->w, NULL, c->N, c->IC, c->OC);
}
static void k_lin_bf16_fwd(void *p) {
    lin2_ctx *c = p;
    matmul_forward_bf16(c->out, c->inp, c->w16, NULL, c->N, c->IC, c->OC);
}
static void k_lin_blas_fwd(void *p) {
    lin2_ctx *c = p;
    c->blas->sgemm(BENCH_ROW_MAJOR, BENCH_NO_TRANS, BENCH_TRANS, c->N, c->OC, c->IC, 1.0f, c->inp, c->IC, c->w, c->IC,
                   0.0f, c->out, c->OC);
}
static void k_lin_f32_bwd(void *p) {
    lin2_ctx *c = p;
    matmul_backward(c->dinp, c->dw, NULL, c->dout, c->inp, c->w, c->N, c->IC, c->OC, 1);
}
static void k_lin_bf16_bwd(void *p) {
    lin2_ctx *c = p;
    matmul_backward_bf16(c->dinp, c->dw, NULL, c->dout, c->inp, c->w16, c->N, c->IC, c->OC, 1);
}
static void k_lin_blas_bwd(void *p) {   // dinp = dout W; dweight += dout^T inp
    lin2_ctx *c = p;
    c->blas->sgemm(BENCH_ROW_MAJOR, BENCH_NO_TRANS, BENCH_NO_TRANS, c->N, c->IC, c->OC, 1.0f, c->dout, c->OC, c->w, c->IC,
                   0.0f, c->dinp, c->IC);
    c->blas->sgemm(BENCH_ROW_MAJOR, BENCH_TRANS, BENCH_NO_TRANS, c->OC, c->IC, c->N, 1.0f, c->dout, c->OC, c->inp, c->IC,
                   1.0f, c->dw, c->IC);
}

// One figure: bf16's GFLOP/s with fp32's (the baseline), OpenBLAS's, and bf16/fp32 against the peak ratio
static void emit_bf16(const bench_opts *o, const char *name, double flops, double t16, double t32, double tblas,
                      double peak) {
    double g16 = flops / t16 * 1e-9, g32 = flops / t32 * 1e-9, gb = tblas > 0 ? flops / tblas * 1e-9 : 0.0;
    double r = t32 / t16;
    if (o->json) {
        printf("{\"name\":\"%s\",\"gflops\":%.4g,\"ms\":%.5g,\"baseline\":\"f32\",\"baseline_gflops\":%.4g,\"ratio\":%.4f,"
               "\"openblas_gflops\":%.4g,\"peak_ratio\":%.4f,\"of_peak_ratio\":%.4f}\n",
               name, g16, t16 * 1e3, g32, r, gb, peak, peak > 0 ? r / peak : 0.0);
    } else {
        printf("  %-44s bf16 %7.1f  f32 %7.1f  openblas %7.1f GFLOP/s   bf16/f32 %5.2f = %4.2f of the peak ratio\n", name,
               g16, g32, gb, r, peak > 0 ? r / peak : 0.0);
    }
    fflush(stdout);
}

static void bench_bf16_shape(const bench_opts *o, const bench_blas *blas, const bench_shape *sh, double peak) {
    const int C = sh->C, Vp = (BENCH_V + 63) / 64 * 64, N = o->B * o->T;
    char title[200], name[160];
    snprintf(title, sizeof title, "%s: linear layers in bf16 (gemm bf16 path %s) beside fp32 (path %s) and OpenBLAS, N=%d",
             sh->name, kernels_path(KERNELS_OP_GEMM_BF16), kernels_path(KERNELS_OP_GEMM_F32), N);
    heading(o, title);
    const struct {
        const char *name;
        int ic, oc, count;
    } lin[5] = {{"qkv", C, 3 * C, sh->L}, {"attproj", C, C, sh->L}, {"fc", C, 4 * C, sh->L}, {"fcproj", 4 * C, C, sh->L},
                {"lm_head", C, Vp, 1}};
    double tot[3] = {0}, flops_tot = 0;
    for (int i = 0; i < 5; i++) {
        int ic = lin[i].ic, oc = lin[i].oc;
        size_t nw = (size_t)oc * ic;
        uint16_t *w16 = sm_arena(nw * sizeof(uint16_t));
        lin2_ctx c = {N, ic, oc, bench_buf((size_t)N * ic, 80), bench_buf(nw, 81), bench_buf((size_t)N * oc, 82), w16,
                      bench_buf((size_t)N * oc, 83), bench_buf((size_t)N * ic, 84), bench_buf(nw, 85), blas};
        bf16_from_f32_array(w16, c.w, nw);
        for (int bwd = 0; bwd < 2; bwd++) {
            bench_fn fn[3] = {bwd ? k_lin_bf16_bwd : k_lin_bf16_fwd, bwd ? k_lin_f32_bwd : k_lin_f32_fwd,
                              bwd ? k_lin_blas_bwd : k_lin_blas_fwd};
            void *cx[3] = {&c, &c, &c};
            double t[3] = {0, 0, 0};
            time_n(blas->sgemm ? 3 : 2, fn, cx, o->rounds, t);
            double flops = (bwd ? 4.0 : 2.0) * N * ic * (double)oc;
            snprintf(name, sizeof name, "bf16 %s.%s %s (N=%d,IC=%d,OC=%d)", sh->name, lin[i].name, bwd ? "bwd" : "fwd", N,
                     ic, oc);
            emit_bf16(o, name, flops, t[0], t[1], t[2], peak);
            for (int k = 0; k < 3; k++) tot[k] += lin[i].count * t[k];
            flops_tot += lin[i].count * flops;
        }
        sm_free(w16), sm_free((void *)c.inp), sm_free((void *)c.w), sm_free((void *)c.dout), sm_free(c.out),
            sm_free(c.dinp), sm_free(c.dw);
    }
    snprintf(name, sizeof name, "bf16 %s: all products of a step", sh->name);
    emit_bf16(o, name, flops_tot, tot[0], tot[1], blas->sgemm ? tot[2] : 0.0, peak);
}

static void bench_bf16_kernels(const bench_opts *o, const bench_blas *blas) {
    if (!kernels_bf16_available()) {
        heading(o, "bf16: no AVX512-BF16 on this CPU (or not allowed by --simd): not measured");
        return;
    }
    heading(o, "bf16: the instruction peak ratio (512-bit, from registers, every thread): the bf16 GEMM's ceiling");
    double peak = bench_bf16_peak(o);
    for (int i = 0; i < 2; i++)
        if (i == 0 ? o->small : o->gpt2) bench_bf16_shape(o, blas, &SHAPES[i], peak);
}

static int bench_kernels(const bench_opts *o, const comm_topology *topo) {
    if (topo->rank != 0) return SM_EXIT_OK;   // one process measures: ranks would share the cores
    bench_blas blas = {0};
    if (!o->no_blas) bench_blas_open(&blas, o->threads);
    if (!o->json) {
        char feats[256];
        kernels_cpu_describe(feats, sizeof feats, kernels_cpu_features());
        printf("bench kernels: %d threads, CPU features in use: %s; gemm f32 path %s", o->threads, feats,
               kernels_path(KERNELS_OP_GEMM_F32));
        if (blas.sgemm) printf(", OpenBLAS core %s", blas.corename ? blas.corename() : "?");
        printf("; medians of %d rounds\n", o->rounds);
        print_machine(o);
    }
    heading(o, "memory bandwidth");
    double stream = bench_stream(o);
    for (int i = 0; i < 2; i++)
        if (i == 0 ? o->small : o->gpt2) bench_kernels_shape(o, &blas, &SHAPES[i], stream);
    for (int i = 0; i < 2; i++)
        if (i == 0 ? o->small : o->gpt2) bench_q8_shape(o, &SHAPES[i], stream);
    bench_adamw(o, &SHAPES[o->gpt2 ? 1 : 0], stream);
    bench_bf16_kernels(o, &blas);
    heading(o, "square and wide shapes (GFLOP/s)");
    const int extra[][3] = {{1024, 768, 768}, {1024, 3072, 768}, {1024, 768, 3072}, {512, 512, 512},
                            {1024, 256, 256}, {1024, 1024, 256}, {1024, 256, 1024}};
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) {
        int M = extra[i][0], N = extra[i][1], K = extra[i][2];
        float *A = bench_buf((size_t)M * K, 50), *B = bench_buf((size_t)K * N, 51), *C = bench_buf((size_t)M * N, 52);
        gemm_ctx c = {0, 1, M, N, K, 0.0f, A, B, C, &blas};
        double to = 0, tb = 0;
        time_pair(run_ours, &c, blas.sgemm ? run_blas : NULL, &c, o->rounds, &to, &tb);
        char name[96];
        snprintf(name, sizeof name, "gemm NT (%d,%d,%d)", M, N, K);
        double flops = 2.0 * M * N * K;
        emit(o, name, "gflops", flops / to * 1e-9, to * 1e3, blas.sgemm ? flops / tb * 1e-9 : 0.0, "openblas");
        sm_free(A);
        sm_free(B);
        sm_free(C);
    }
    return SM_EXIT_OK;
}

// ---------------------------------------------------------------------------------------------
// bench train: whole steps, as train.c runs them (zero grads, forward with the fused loss
// gradient, backward announcing finished layers to the gradient sync through train.c's
// train_grad_segments/train_layer_done, the sync taking the grad norm's sum of squares bucket by
// bucket, wait, AdamW).

// The PyTorch reference: the same GPT-2 (pre-LN, tanh GELU, tied head), B, T, AdamW; prints the
// median seconds per step of the timed steps. Denormals are flushed (its best case).
static const char TORCH_SCRIPT[] =
    "import sys, time, math, statistics\n"
    "import torch, torch.nn as nn, torch.nn.functional as F\n"
    "L, H, C, V, B, T, steps, threads, amp = map(int, sys.argv[1:10])\n"
    "torch.set_num_threads(threads); torch.manual_seed(0)\n"
    // without it, denormals (AdamW's moments of the rows of wte that random tokens never hit)
    // slow every step down, 0.35 s to 3.4 s by the 14th step of the small shape here
    "torch.set_flush_denormal(True)\n"
    "class Block(nn.Module):\n"
    "    def __init__(s):\n"
    "        super().__init__()\n"
    "        s.ln1, s.ln2 = nn.LayerNorm(C), nn.LayerNorm(C)\n"
    "        s.qkv, s.proj = nn.Linear(C, 3 * C), nn.Linear(C, C)\n"
    "        s.fc, s.fcp = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)\n"
    "        s.register_buffer('mask', torch.tril(torch.ones(T, T, dtype=torch.bool)))\n"
    "    def forward(s, x):\n"
    "        b, t, _ = x.shape\n"
    "        q, k, v = s.qkv(s.ln1(x)).split(C, 2)\n"
    "        q, k, v = [z.view(b, t, H, C // H).transpose(1, 2) for z in (q, k, v)]\n"
    "        a = (q @ k.transpose(-2, -1)) / math.sqrt(C // H)\n"
    "        a = a.masked_fill(~s.mask[:t, :t], float('-inf')).softmax(-1)\n"
    "        x = x + s.proj((a @ v).transpose(1, 2).reshape(b, t, C))\n"
    "        return x + s.fcp(F.gelu(s.fc(s.ln2(x)), approximate='tanh'))\n"
    "class GPT(nn.Module):\n"
    "    def __init__(s):\n"
    "        super().__init__()\n"
    "        s.wte, s.wpe = nn.Embedding(V, C), nn.Embedding(1024, C)\n"
    "        s.blocks = nn.ModuleList(Block() for _ in range(L))\n"
    "        s.lnf = nn.LayerNorm(C)\n"
    "    def forward(s, idx, tgt):\n"
    "        x = s.wte(idx) + s.wpe(torch.arange(idx.shape[1]))\n"
    "        for blk in s.blocks: x = blk(x)\n"
    "        logits = s.lnf(x) @ s.wte.weight.t()\n"
    "        return F.cross_entropy(logits.view(-1, V), tgt.view(-1))\n"
    "m = GPT()\n"
    "opt = torch.optim.AdamW(m.parameters(), lr=1e-4, weight_decay=0.1, foreach=True)\n"
    "idx = torch.randint(0, V, (B, T)); tgt = torch.randint(0, V, (B, T))\n"
    // amp 2: fp32 and bf16 autocast steps in turn on the one model, timed apart (the pair's ratio
    // taken on the same machine state); prints both medians
    "modes = [0, 1] if amp == 2 else [amp]\n"
    "times = {a: [] for a in modes}\n"
    "for i in range(2 + steps):\n"
    "  for a in modes:\n"
    "    t0 = time.perf_counter()\n"
    "    opt.zero_grad(set_to_none=True)\n"
    // amp: PyTorch's own mixed precision on CPU, autocast to bf16 around forward and loss (its
    // documented recipe; the backward follows the forward's dtypes), the products through oneDNN
    "    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bool(a)):\n"
    "        loss = m(idx, tgt)\n"
    "    loss.backward()\n"
    "    opt.step()\n"
    "    if i >= 2: times[a].append(time.perf_counter() - t0)\n"
    "print(' '.join(str(statistics.median(times[a])) for a in modes))\n";

// Runs the PyTorch reference: amp 0 fp32, 1 bf16 autocast, 2 both in turn (*s16 gets bf16's); returns
// its median (fp32) s/step, or 0 when torch is unavailable.
static double torch_step_s(const bench_opts *o, const bench_shape *s, int amp, double *s16) {
    char args[9][32];
    const int vals[9] = {s->L, s->H, s->C, BENCH_V, o->B, o->T, o->steps < 3 ? 3 : o->steps, o->threads, amp};
    const char *argv[13] = {o->python, "-c", TORCH_SCRIPT};
    for (int i = 0; i < 9; i++) {
        snprintf(args[i], sizeof args[i], "%d", vals[i]);
        argv[3 + i] = args[i];
    }
    argv[12] = NULL;
    int fds[2];
    if (pipe(fds) != 0) return 0.0;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return 0.0;
    }
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        // glibc serves blocks above 32 MiB with a fresh mmap (page faults on every step): give
        // PyTorch its best case, malloc without mmap and without trimming
        setenv("MALLOC_MMAP_MAX_", "0", 1);
        setenv("MALLOC_TRIM_THRESHOLD_", "68719476736", 1);
        setenv("OMP_NUM_THREADS", args[7], 1);
        // oneDNN (PyTorch's bf16 products) picks its kernels by ISA: let it use AVX512-BF16 (and AMX)
        unsetenv("ONEDNN_MAX_CPU_ISA");
        unsetenv("DNNL_MAX_CPU_ISA");
        // torch's own OpenMP threads would otherwise spin between ops while OpenBLAS's pthreads
        // (which torch calls for some products) want the same cores: 0.66 -> 0.43 s/step small,
        // 13.8 -> 2.5 s/step at 124M here
        setenv("OMP_WAIT_POLICY", "passive", 1);
        execv(o->python, (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    char out[256] = "";
    size_t len = 0;
    ssize_t r;
    while (len + 1 < sizeof out && (r = read(fds[0], out + len, sizeof out - 1 - len)) > 0) len += (size_t)r;
    out[len] = '\0';
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return 0.0;
    char *end;
    double first = strtod(out, &end);
    if (s16) *s16 = amp == 2 ? strtod(end, NULL) : 0.0;
    return first;
}

static int torch_available(const char *python) {
    if (access(python, X_OK) != 0) return 0;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "'%s' -c 'import torch' >/dev/null 2>&1", python);
    return system(cmd) == 0;
}

// torch_s: PyTorch's fp32 s/step, measured by the caller (0: none)
static void bench_train_shape(const bench_opts *o, const bench_shape *s, const comm_topology *topo,
                              const bench_blas *blas, double torch_s) {
    sm_model_config cfg = {.n_layer = s->L, .n_head = s->H, .n_embd = s->C, .max_seq_len = BENCH_CONTEXT,
                           .vocab_size = BENCH_V, .tokenizer = "gpt2"};
    char err[256];
    if (gpt2_config_validate(&cfg, err, sizeof err) != 0) sm_fatal(SM_EXIT_USAGE, "bench: %s (command line)", err);
    SM_CHECK(o->T <= BENCH_CONTEXT, "--seq %d exceeds the context %d", o->T, BENCH_CONTEXT);
    trainer tr;
    trainer_build(&tr, &cfg, o->B, o->T, 1, 8.0, 0, 1337, topo);
    const int warmup = 2, steps = o->steps;
    // random tokens: the windows of every step of every rank, in order
    const size_t ntok = (size_t)o->B * o->T, n_windows = (size_t)(warmup + steps) * o->B * topo->world_size;
    shard data = {.n_tokens = n_windows * o->T + 1, .vocab_size = BENCH_V};
    snprintf(data.path, sizeof data.path, "(random tokens)");
    data.tokens = sm_malloc(data.n_tokens * sizeof(uint16_t));
    sm_rng rng;
    sm_rng_seed(&rng, 42, 0);
    for (size_t i = 0; i < data.n_tokens; i++) data.tokens[i] = (uint16_t)sm_rng_below(&rng, BENCH_V);
    loader ld;
    if (loader_init(&ld, &data, o->T, 0, 0, err, sizeof err) != 0) sm_fatal(SM_EXIT_RUNTIME, "bench: %s", err);
    const adamw_hparams hp = {.lr = 1e-4f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};

    double *ms = sm_calloc((size_t)steps * 6, sizeof(double));
    double *fwd = ms + steps, *bwd = ms + 2 * steps, *wait = ms + 3 * steps, *comm = ms + 4 * steps,
           *opt = ms + 5 * steps;
    prof_reset();
    prof_enable(o->profile);
    for (int step = 0; step < warmup + steps; step++) {
        if (step == warmup) prof_reset();   // warm-up steps are not in the profile
        comm_barrier();
        prof_step_begin();
        double t0 = sm_now_s();
        train_step_stats st;
        train_step(&tr, &ld, (uint64_t)step * o->B * topo->world_size, &hp, 1.0f, step + 1, &st);
        double te = sm_now_s();
        prof_step_end((long)ntok);
        if (step >= warmup) {
            int k = step - warmup;
            ms[k] = (te - t0) * 1e3;
            fwd[k] = st.fwd_ms;
            bwd[k] = st.bwd_ms;
            wait[k] = st.comm.wait_ms;
            comm[k] = st.comm.span_ms;
            opt[k] = st.opt_ms;
        }
    }
    double hidden[MAX_ROUNDS * 4];
    int nh = steps < MAX_ROUNDS * 4 ? steps : MAX_ROUNDS * 4;
    for (int k = 0; k < nh; k++) hidden[k] = comm[k] > 0 ? 1.0 - wait[k] / comm[k] : 1.0;
    double step_ms = bench_median(ms, steps), fwd_ms = bench_median(fwd, steps), bwd_ms = bench_median(bwd, steps);
    double wait_ms = bench_median(wait, steps), comm_ms = bench_median(comm, steps), opt_ms = bench_median(opt, steps);
    double hidden_frac = bench_median(hidden, nh);

    // model FLOPs per step: the matrix products (6 per weight per token) and causal attention
    int N = o->B * o->T, hs = s->C / s->H;
    double mm_flops = 6.0 * N * ((double)s->L * 12 * s->C * s->C + (double)s->C * cfg.padded_vocab_size);
    double att_flops = 3.0 * s->L * 2.0 * o->B * s->H * hs * (double)o->T * (o->T + 1);
    double flops = mm_flops + att_flops;
    double gflops = flops / (step_ms * 1e-3) * 1e-9;
    double tok_s = (double)N * topo->world_size / (step_ms * 1e-3);

    // the baseline: OpenBLAS doing the step's matrix products alone, in the step's order on the
    // step's operands (median of whole passes, the statistic the step's own time is), beside ours
    double blas_gflops = 0.0, prod_flops = 0.0;
    prod_times ours = {0}, theirs = {0};
    if (topo->rank == 0 && blas->sgemm) {
        bench_opts quiet = *o;
        quiet.rounds = o->rounds < 5 ? o->rounds : 5;
        prod_flops = bench_step_products(&quiet, blas, s, 0, &ours, &theirs);
        blas_gflops = prod_flops / theirs.step_s * 1e-9;
    }

    if (topo->rank == 0) {
        char name[128];
        if (!o->json)
            printf("%s (L=%d H=%d C=%d V=%d, %zu params), B=%d T=%d, %d rank%s x %d threads, median of %d steps\n",
                   s->name, s->L, s->H, s->C, BENCH_V, tr.w.n_params, o->B, o->T, topo->world_size,
                   topo->world_size > 1 ? "s" : "", o->threads, steps);
        snprintf(name, sizeof name, "train %s s/step", s->name);
        emit(o, name, "s_per_step", step_ms * 1e-3, step_ms, torch_s, "pytorch");
        if (!o->json && torch_s > 0)
            printf("  (ratio above = ours / PyTorch in s/step: below 1 is faster; PyTorch %.2fx our time)\n",
                   torch_s / (step_ms * 1e-3));
        snprintf(name, sizeof name, "train %s tokens/s", s->name);
        emit(o, name, "tokens_per_s", tok_s, step_ms, torch_s > 0 ? (double)N * topo->world_size / torch_s : 0.0,
             "pytorch");
        snprintf(name, sizeof name, "train %s achieved GFLOP/s (%.1f GFLOP/step%s)", s->name, flops * 1e-9,
                 topo->world_size > 1 ? " per rank" : "");
        emit(o, name, "gflops", gflops, step_ms, blas_gflops, "openblas");
        if (prod_flops > 0) {
            snprintf(name, sizeof name, "train %s matrix products alone (%.1f GFLOP)", s->name, prod_flops * 1e-9);
            emit(o, name, "gflops", prod_flops / ours.step_s * 1e-9, ours.step_s * 1e3, blas_gflops, "openblas");
        }
        snprintf(name, sizeof name, "train %s forward", s->name);
        emit(o, name, "ms", fwd_ms, fwd_ms, 0.0, "");
        snprintf(name, sizeof name, "train %s backward", s->name);
        emit(o, name, "ms", bwd_ms, bwd_ms, 0.0, "");
        if (topo->world_size > 1) {
            snprintf(name, sizeof name, "train %s exposed comm wait", s->name);
            emit(o, name, "ms", wait_ms, wait_ms, 0.0, "");
            snprintf(name, sizeof name, "train %s allreduce span", s->name);
            emit(o, name, "ms", comm_ms, comm_ms, 0.0, "");
            snprintf(name, sizeof name, "train %s allreduce hidden behind backward", s->name);
            emit(o, name, "frac", hidden_frac, comm_ms, 0.0, "");
        }
        snprintf(name, sizeof name, "train %s optimizer (AdamW)", s->name);
        emit(o, name, "ms", opt_ms, opt_ms, 0.0, "");
        snprintf(name, sizeof name, "train %s AdamW params/s", s->name);
        emit(o, name, "gparams_per_s", (double)tr.w.n_params / (opt_ms * 1e-3) * 1e-9, opt_ms, 0.0, "");
        if (o->profile) prof_print(stdout, o->json);
    }
    prof_enable(0);
    sm_free(ms);
    loader_free(&ld);
    sm_free(data.tokens);
    trainer_free(&tr);
}

// ---------------------------------------------------------------------------------------------
// bf16 mixed precision (issue 15): the step's speed-ups, ours and PyTorch's, measured in this run

// fp32 and bf16 steps of the same shape in turn (two trainers from the same init, the same batches):
// each pair's ratio is taken on the same machine state, and the medians reported; then bf16's
// figures, its profile (--profile), and the speed-ups over our fp32 and PyTorch's fp32 and bf16.
static void bench_train_bf16(const bench_opts *o, const bench_shape *s, const comm_topology *topo, double torch32,
                             double torch16) {
    sm_model_config cfg = {.n_layer = s->L, .n_head = s->H, .n_embd = s->C, .max_seq_len = BENCH_CONTEXT,
                           .vocab_size = BENCH_V, .tokenizer = "gpt2"};
    char err[256], name[160];
    if (gpt2_config_validate(&cfg, err, sizeof err) != 0) sm_fatal(SM_EXIT_USAGE, "bench: %s (command line)", err);
    static trainer tr[2];   // [0] fp32, [1] bf16
    for (int k = 0; k < 2; k++) {
        trainer_build(&tr[k], &cfg, o->B, o->T, 1, 8.0, 0, 1337, topo);
        if (trainer_set_precision(&tr[k], k ? SM_BF16 : SM_F32, err, sizeof err) != 0) sm_fatal(SM_EXIT_USAGE, "bench: %s", err);
    }
    const int warmup = 2, steps = o->steps;
    const size_t n_windows = (size_t)(warmup + steps) * o->B * topo->world_size;
    shard data = {.n_tokens = n_windows * o->T + 1, .vocab_size = BENCH_V};
    snprintf(data.path, sizeof data.path, "(random tokens)");
    data.tokens = sm_malloc(data.n_tokens * sizeof(uint16_t));
    sm_rng rng;
    sm_rng_seed(&rng, 42, 0);
    for (size_t i = 0; i < data.n_tokens; i++) data.tokens[i] = (uint16_t)sm_rng_below(&rng, BENCH_V);
    loader ld;
    if (loader_init(&ld, &data, o->T, 0, 0, err, sizeof err) != 0) sm_fatal(SM_EXIT_RUNTIME, "bench: %s", err);
    const adamw_hparams hp = {.lr = 1e-4f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};
    double *t = sm_calloc((size_t)steps * 6, sizeof(double));
    double *t32 = t, *t16 = t + steps, *ratio = t + 2 * steps, *fwd = t + 3 * steps, *bwd = t + 4 * steps,
           *opt = t + 5 * steps;
    prof_reset();
    for (int step = 0; step < warmup + steps; step++) {
        if (step == warmup) prof_reset();
        for (int k = 0; k < 2; k++) {
            prof_enable(o->profile && k == 1);   // the profile is bf16's
            comm_barrier();
            if (k == 1) prof_step_begin();
            double t0 = sm_now_s();
            train_step_stats st;
            train_step(&tr[k], &ld, (uint64_t)step * o->B * topo->world_size, &hp, 1.0f, step + 1, &st);
            double dt = sm_now_s() - t0;
            if (k == 1) prof_step_end((long)o->B * o->T);
            if (step < warmup) continue;
            (k ? t16 : t32)[step - warmup] = dt;
            if (k) fwd[step - warmup] = st.fwd_ms, bwd[step - warmup] = st.bwd_ms, opt[step - warmup] = st.opt_ms;
        }
        if (step >= warmup) ratio[step - warmup] = t32[step - warmup] / t16[step - warmup];
    }
    double r = bench_median(ratio, steps), s32 = bench_median(t32, steps), s16 = bench_median(t16, steps);
    if (topo->rank == 0) {
        int N = o->B * o->T, hs = s->C / s->H;
        double flops = 6.0 * N * ((double)s->L * 12 * s->C * s->C + (double)s->C * cfg.padded_vocab_size) +
                       3.0 * s->L * 2.0 * o->B * s->H * hs * (double)o->T * (o->T + 1);
        if (!o->json)
            printf("%s bf16 (gemm bf16 path %s), steps in turn with fp32, median of %d pairs\n", s->name,
                   kernels_path(KERNELS_OP_GEMM_BF16), steps);
        snprintf(name, sizeof name, "train %s bf16 s/step", s->name);
        emit(o, name, "s_per_step", s16, s16 * 1e3, s32, "fp32");
        snprintf(name, sizeof name, "train %s bf16 tokens/s", s->name);
        emit(o, name, "tokens_per_s", N * topo->world_size / s16, s16 * 1e3, 0.0, "");
        snprintf(name, sizeof name, "train %s bf16 achieved GFLOP/s (%.1f GFLOP/step)", s->name, flops * 1e-9);
        emit(o, name, "gflops", flops / s16 * 1e-9, s16 * 1e3, flops / s32 * 1e-9, "fp32");
        snprintf(name, sizeof name, "train %s bf16 forward", s->name);
        emit(o, name, "ms", bench_median(fwd, steps), bench_median(fwd, steps), 0.0, "");
        snprintf(name, sizeof name, "train %s bf16 backward", s->name);
        emit(o, name, "ms", bench_median(bwd, steps), bench_median(bwd, steps), 0.0, "");
        snprintf(name, sizeof name, "train %s bf16 optimizer (AdamW + the bf16 copy)", s->name);
        emit(o, name, "ms", bench_median(opt, steps), bench_median(opt, steps), 0.0, "");
        snprintf(name, sizeof name, "train %s bf16 step speed-up over our fp32 (median of pairs)", s->name);
        emit(o, name, "speedup", r, s16 * 1e3, 0.0, "");
        if (torch32 > 0) {
            snprintf(name, sizeof name, "train %s bf16 step speed-up over PyTorch fp32", s->name);
            emit(o, name, "speedup", torch32 / s16, s16 * 1e3, 0.0, "");
        }
        if (torch16 > 0) {
            snprintf(name, sizeof name, "train %s bf16 step speed-up over PyTorch bf16 autocast", s->name);
            emit(o, name, "speedup", torch16 / s16, s16 * 1e3, 0.0, "");
            snprintf(name, sizeof name, "train %s PyTorch bf16 autocast speed-up over PyTorch fp32", s->name);
            emit(o, name, "speedup", torch32 / torch16, torch16 * 1e3, 0.0, "");
        }
        if (o->profile) prof_print(stdout, o->json);
    }
    prof_enable(0);
    sm_free(t);
    loader_free(&ld);
    sm_free(data.tokens);
    for (int k = 0; k < 2; k++) trainer_free(&tr[k]);
}

static int bench_train(const bench_opts *o, const comm_topology *topo) {
    bench_blas blas = {0};
    if (!o->no_blas && topo->rank == 0) bench_blas_open(&blas, o->threads);
    int have_torch = 0;
    if (!o->no_torch && topo->world_size == 1) {
        bench_blas_core();   // torch's matrix products go through OpenBLAS as well
        have_torch = torch_available(o->python);
        if (!have_torch) sm_warn("no PyTorch at %s: no PyTorch reference (install python3-torch)", o->python);
    }
    if (topo->rank == 0 && !o->json)
        printf("bench train: gemm f32 path %s, %d thread%s per rank%s\n", kernels_path(KERNELS_OP_GEMM_F32), o->threads,
               o->threads > 1 ? "s" : "", have_torch ? ", PyTorch reference with malloc's mmap off and passive OpenMP waits" : "");
    if (topo->rank == 0) print_machine(o);
    for (int i = 0; i < 2; i++)
        if (i == 0 ? o->small : o->gpt2) {
            // PyTorch fp32 and (with AVX512-BF16) its bf16 autocast, step by step in turn
            double torch16 = 0.0, torch32 = 0.0;
            if (topo->rank == 0 && have_torch) torch32 = torch_step_s(o, &SHAPES[i], kernels_bf16_available() ? 2 : 0, &torch16);
            bench_train_shape(o, &SHAPES[i], topo, &blas, torch32);
            if (kernels_bf16_available()) bench_train_bf16(o, &SHAPES[i], topo, torch32, torch16);
        }
    if (!kernels_bf16_available() && topo->rank == 0) sm_info("bench train: no AVX512-BF16 on this CPU: bf16 not measured");
    return SM_EXIT_OK;
}

// ---------------------------------------------------------------------------------------------

static void parse_bench(int argc, char **argv, bench_opts *o) {
    *o = (bench_opts){.small = 1, .gpt2 = 1, .B = 4, .T = 64, .rounds = 7, .steps = 10, .python = "/usr/bin/python3"};
    if (argc >= 2 && argv[1][0] != '-') {
        o->what = argv[1];
        argc--;
        argv++;
    }
    enum { O_SHAPE = 256, O_BATCH, O_SEQ, O_ROUNDS, O_STEPS, O_THREADS, O_PROFILE, O_NOBLAS, O_NOTORCH, O_PYTHON,
           O_SIMD, O_JSON, O_HELP };
    static const struct option opts[] = {
        {"shape", required_argument, 0, O_SHAPE}, {"batch", required_argument, 0, O_BATCH},
        {"seq", required_argument, 0, O_SEQ}, {"rounds", required_argument, 0, O_ROUNDS},
        {"steps", required_argument, 0, O_STEPS}, {"threads", required_argument, 0, O_THREADS},
        {"profile", no_argument, 0, O_PROFILE}, {"no-blas", no_argument, 0, O_NOBLAS},
        {"no-torch", no_argument, 0, O_NOTORCH}, {"python", required_argument, 0, O_PYTHON},
        {"simd", required_argument, 0, O_SIMD}, {"json", no_argument, 0, O_JSON}, {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0},
    };
    opterr = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_SHAPE:
            if (!strcmp(optarg, "small")) o->small = 1, o->gpt2 = 0;
            else if (!strcmp(optarg, "gpt2")) o->small = 0, o->gpt2 = 1;
            else if (!strcmp(optarg, "all")) o->small = o->gpt2 = 1;
            else sm_fatal(SM_EXIT_USAGE, "--shape expects small, gpt2 or all, got '%s' (command line)", optarg);
            break;
        case O_BATCH: o->B = (int)cli_int("--batch", optarg, 1, 1024); break;
        case O_SEQ: o->T = (int)cli_int("--seq", optarg, 1, BENCH_CONTEXT); break;
        case O_ROUNDS: o->rounds = (int)cli_int("--rounds", optarg, 1, MAX_ROUNDS); break;
        case O_STEPS: o->steps = (int)cli_int("--steps", optarg, 1, 4 * MAX_ROUNDS); break;
        case O_THREADS: o->threads = (int)cli_int("--threads", optarg, 1, 1024); break;
        case O_PROFILE: o->profile = 1; break;
        case O_NOBLAS: o->no_blas = 1; break;
        case O_NOTORCH: o->no_torch = 1; break;
        case O_PYTHON: o->python = optarg; break;
        case O_SIMD: {
            const kernels_cpu_level *lvl = kernels_cpu_level_find(optarg);
            if (!lvl)
                sm_fatal(SM_EXIT_USAGE,
                         "--simd expects scalar, avx2, avx-vnni, avx512, avx512-vnni, avx512-bf16 or native, got '%s' "
                         "(command line)",
                         optarg);
            kernels_cpu_allow(lvl->mask);
            break;
        }
        case O_JSON: o->json = 1; break;
        case O_HELP: fputs(BENCH_USAGE, stdout); exit(SM_EXIT_OK);
        default: cli_bad_option("bench", argc, argv);
        }
    }
    if (optind < argc) sm_fatal(SM_EXIT_USAGE, "bench: unexpected argument '%s' (command line)", argv[optind]);
}

int cmd_bench(int argc, char **argv) {
    // argv[0] is "bench", argv[1] what to measure; the other benchmarks parse their own options
    if (argc >= 2 && !strcmp(argv[1], "checkpoint")) return bench_checkpoint(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "tokenizer")) return bench_tokenizer(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "comm")) return bench_comm(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "generate")) return bench_generate(argc - 1, argv + 1);
    bench_opts o;
    parse_bench(argc, argv, &o);
    if (!o.what) sm_fatal(SM_EXIT_USAGE, "bench: say what to measure: kernels, train, generate, checkpoint, tokenizer or comm (command line)");
    if (strcmp(o.what, "kernels") && strcmp(o.what, "train"))
        sm_fatal(SM_EXIT_USAGE, "bench: unknown benchmark '%s': kernels, train, generate, checkpoint, tokenizer or comm (command line)", o.what);

    comm_topology topo;
    comm_init(&argc, &argv, &topo);
    o.threads = comm_set_threads(&topo, o.threads);   // --threads, OMP_NUM_THREADS, SLURM_CPUS_PER_TASK, mask
    kernels_flush_denormals(1);   // as train runs (the PyTorch reference flushes too)
    int rc = !strcmp(o.what, "kernels") ? bench_kernels(&o, &topo) : bench_train(&o, &topo);
    comm_finalize();
    return rc;
}
