// test_kernels.c — CUnit tests of kernels/: forwards against naive double-precision references,
// backwards against central finite differences of those references, gemm against a double
// triple loop on every SIMD path the CPU has, the flash-attention kernels against the
// batched-matmul reference and finite differences, the fused kernels against their unfused
// pairs, AdamW and sum_squares against scalar double loops, flush-to-zero in every thread, and
// determinism checks (bit for bit, repeated and across thread counts).
#include <CUnit/Basic.h>
#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "kernels.h"
#include "kernels_internal.h"   // sm_exp512, the AVX-512 kernels' exp

#define EPS ((double)FLT_EPSILON)   // 2^-23, twice the unit roundoff of float32

static sm_rng g_rng;
static char g_path[160] = "one path";   // the code paths a row is running on, for messages

// ---------------------------------------------------------------------------------------------
// Helpers

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "test_kernels: out of memory (%zu bytes)\n", n);
        exit(2);
    }
    return p;
}
static float *falloc(size_t n) { return xmalloc(n * sizeof(float)); }
static double *dalloc(size_t n) { return xmalloc(n * sizeof(double)); }

static void fill_uniform(float *x, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * sm_rng_uniform(&g_rng);
}
static void fill_const(float *x, size_t n, float v) {
    for (size_t i = 0; i < n; i++) x[i] = v;
}
static double *to_double(const float *x, size_t n) {
    double *d = dalloc(n);
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}
static float *copy_f(const float *x, size_t n) {
    float *c = falloc(n);
    memcpy(c, x, n * sizeof(float));
    return c;
}
// sm_allclose (|a - r| <= atol + rtol*|r|, prints the worst element on failure) against a
// double reference; with SM_TEST_VERBOSE set, also prints how much of the bound was used.
static int close_d(const char *what, const float *a, const double *ref, size_t n, double atol, double rtol) {
    float *r = falloc(n);
    double worst = 0.0, worst_err = 0.0;
    for (size_t i = 0; i < n; i++) {
        r[i] = (float)ref[i];
        double err = fabs((double)a[i] - ref[i]);
        double used = err / (atol + rtol * fabs(ref[i]));
        if (used > worst || isnan(err)) worst = isnan(err) ? INFINITY : used;
        if (err > worst_err) worst_err = err;
    }
    if (getenv("SM_TEST_VERBOSE")) printf("\n  %-34s n=%-7zu max|err| %.3g, %.3f of bound", what, n, worst_err, worst);
    // The float copy of ref adds at most half an ulp of |r|, covered by the rtol >= eps used
    // everywhere; but check the double comparison too, so no float rounding can hide a miss.
    int ok = sm_allclose(what, a, r, n, atol, rtol) && worst <= 1.0;
    if (!ok && worst > 1.0) fprintf(stderr, "close_d %s: %.3f of the bound used\n", what, worst);
    free(r);
    return ok;
}

// Bit-for-bit equality, for determinism checks.
static int same_bits(const char *what, const float *a, const float *b, size_t n) {
    if (memcmp(a, b, n * sizeof(float)) == 0) return 1;
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0) {
            fprintf(stderr, "same_bits %s: first difference at [%zu]: %.9g vs %.9g\n", what, i, (double)a[i],
                    (double)b[i]);
            break;
        }
    return 0;
}

// Indices to finite-difference: all of [0,n) when n <= max_count, otherwise a random sample.
static size_t pick_indices(size_t *idx, size_t n, size_t max_count) {
    if (n <= max_count) {
        for (size_t i = 0; i < n; i++) idx[i] = i;
        return n;
    }
    for (size_t k = 0; k < max_count; k++) idx[k] = (size_t)sm_rng_below(&g_rng, n);
    return max_count;
}

// Central finite differences of a double-precision loss, at the chosen elements of x.
typedef double (*loss_fn)(void *ctx);
static void fd_grad(loss_fn f, void *ctx, double *x, const size_t *idx, size_t n_idx, double h, double *g) {
    for (size_t k = 0; k < n_idx; k++) {
        size_t i = idx[k];
        double save = x[i];
        x[i] = save + h;
        double lp = f(ctx);
        x[i] = save - h;
        double lm = f(ctx);
        x[i] = save;
        g[k] = (lp - lm) / (2.0 * h);
    }
}

// Backward kernels accumulate: compares got (after the kernel) with prefill + the FD gradient,
// at the FD'd elements.
static int check_grad(const char *what, const float *got, const float *prefill, const double *fd, const size_t *idx,
                      size_t n_idx, double atol, double rtol) {
    float *a = falloc(n_idx);
    double *r = dalloc(n_idx);
    for (size_t k = 0; k < n_idx; k++) {
        a[k] = got[idx[k]];
        r[k] = (double)prefill[idx[k]] + fd[k];
    }
    int ok = close_d(what, a, r, n_idx, atol, rtol);
    free(a);
    free(r);
    return ok;
}

// FD step: the references are double, so rounding noise is ~1e-16*|loss|/h ~ 1e-10 and the
// truncation error h^2/6 * f''' ~ 1e-9 for the O(1) derivatives here: far below float tolerances.
#define FD_H 1e-4
// At most this many elements per tensor are finite-differenced (a random sample beyond).
#define FD_MAX 400

static double dot_d(const double *a, const double *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

// ---------------------------------------------------------------------------------------------
// Naive double-precision references

static void ref_gemm(int ta, int tb, int M, int N, int K, double alpha, const float *A, int lda, const float *B,
                     int ldb, double beta, const float *C0, int ldc, double *out, double *absout) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0, sa = 0.0;
            for (int p = 0; p < K; p++) {
                double a = ta ? A[(size_t)p * lda + i] : A[(size_t)i * lda + p];
                double b = tb ? B[(size_t)j * ldb + p] : B[(size_t)p * ldb + j];
                s += a * b;
                sa += fabs(a * b);
            }
            double c = beta == 0.0 ? 0.0 : C0[(size_t)i * ldc + j];
            out[(size_t)i * N + j] = alpha * s + beta * c;
            absout[(size_t)i * N + j] = fabs(alpha) * sa + fabs(beta * c);
        }
}

static void ref_encoder(double *out, const int *inp, const double *wte, const double *wpe, int B, int T, int C) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int c = 0; c < C; c++)
                out[((size_t)b * T + t) * C + c] = wte[(size_t)inp[b * T + t] * C + c] + wpe[(size_t)t * C + c];
}

static void ref_layernorm(double *out, double *mean, double *rstd, const double *x, const double *w, const double *bias,
                          int N, int C) {
    for (int n = 0; n < N; n++) {
        const double *xr = x + (size_t)n * C;
        double m = 0.0, v = 0.0;
        for (int c = 0; c < C; c++) m += xr[c];
        m /= C;
        for (int c = 0; c < C; c++) v += (xr[c] - m) * (xr[c] - m);
        v /= C;
        double rs = 1.0 / sqrt(v + 1e-5);
        for (int c = 0; c < C; c++) out[(size_t)n * C + c] = (xr[c] - m) * rs * w[c] + bias[c];
        if (mean) mean[n] = m;
        if (rstd) rstd[n] = rs;
    }
}

static void ref_matmul(double *out, const double *inp, const double *w, const double *bias, int N, int C, int OC) {
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            double s = bias ? bias[o] : 0.0;
            for (int c = 0; c < C; c++) s += inp[(size_t)n * C + c] * w[(size_t)o * C + c];
            out[(size_t)n * OC + o] = s;
        }
}

// Per element: scores q_t . k_j / sqrt(hs) for j <= t, softmax, weighted sum of v_j.
static void ref_attention(double *out, double *att, const double *qkv, int B, int T, int C, int NH) {
    int hs = C / NH;
    double scale = 1.0 / sqrt((double)hs);
    double *s = dalloc((size_t)T);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                const double *q = qkv + ((size_t)b * T + t) * 3 * C + h * hs;
                double mx = -INFINITY;
                for (int j = 0; j <= t; j++) {
                    const double *k = qkv + ((size_t)b * T + j) * 3 * C + C + h * hs;
                    s[j] = dot_d(q, k, (size_t)hs) * scale;
                    if (s[j] > mx) mx = s[j];
                }
                double sum = 0.0;
                for (int j = 0; j <= t; j++) {
                    s[j] = exp(s[j] - mx);
                    sum += s[j];
                }
                for (int j = 0; j <= t; j++) s[j] /= sum;
                for (int i = 0; i < hs; i++) {
                    double o = 0.0;
                    for (int j = 0; j <= t; j++) o += s[j] * qkv[((size_t)b * T + j) * 3 * C + 2 * C + h * hs + i];
                    out[((size_t)b * T + t) * C + h * hs + i] = o;
                }
                if (att) {
                    double *ar = att + (((size_t)b * NH + h) * T + t) * T;
                    for (int j = 0; j < T; j++) ar[j] = j <= t ? s[j] : 0.0;
                }
            }
    free(s);
}

static double ref_gelu(double x) {
    return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

static double ref_softmax_xent(double *losses, const double *logits, const int *targets, int N, int V, int Vp) {
    double total = 0.0;
    for (int n = 0; n < N; n++) {
        const double *l = logits + (size_t)n * Vp;
        double mx = -INFINITY, sum = 0.0;
        for (int j = 0; j < V; j++) mx = fmax(mx, l[j]);
        for (int j = 0; j < V; j++) sum += exp(l[j] - mx);
        double loss = log(sum) - (l[targets[n]] - mx);
        if (losses) losses[n] = loss;
        total += loss;
    }
    return total;
}

// ---------------------------------------------------------------------------------------------
// gemm

static void gemm_case(int ta, int tb, int M, int N, int K, float alpha, float beta) {
    int pad = 3;   // every stride is wider than its matrix
    int a_rows = ta ? K : M, a_cols = ta ? M : K, b_rows = tb ? N : K, b_cols = tb ? K : N;
    int lda = a_cols + pad, ldb = b_cols + pad, ldc = N + pad;
    float *A = falloc((size_t)a_rows * lda), *B = falloc((size_t)b_rows * ldb), *C = falloc((size_t)M * ldc);
    fill_uniform(A, (size_t)a_rows * lda, -1, 1);
    fill_uniform(B, (size_t)b_rows * ldb, -1, 1);
    if (beta == 0.0f)
        fill_const(C, (size_t)M * ldc, NAN);   // beta = 0 must not read C
    else
        fill_uniform(C, (size_t)M * ldc, -1, 1);
    for (int i = 0; i < M; i++)   // sentinels in the padding of C, which must not be written
        for (int j = N; j < ldc; j++) C[(size_t)i * ldc + j] = 12345.0f;
    double *ref = dalloc((size_t)M * N), *absref = dalloc((size_t)M * N);
    ref_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, ref, absref);
    gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    float *got = falloc((size_t)M * N);
    int pad_ok = 1;
    double abs_max = 0.0;
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) got[(size_t)i * N + j] = C[(size_t)i * ldc + j];
        for (int j = N; j < ldc; j++) pad_ok &= C[(size_t)i * ldc + j] == 12345.0f;
    }
    for (size_t i = 0; i < (size_t)M * N; i++) abs_max = fmax(abs_max, absref[i]);
    char what[256];
    snprintf(what, sizeof what, "gemm ta=%d tb=%d %dx%dx%d a=%g b=%g (%s)", ta, tb, M, N, K, alpha, beta, g_path);
    // Rigorous bound (Higham): a float dot product of K terms followed by alpha, beta and the
    // final add is off by at most gamma_{K+3} = (K+3)u/(1-(K+3)u) times |alpha| sum|a b| + |beta c|
    // (absref). atol uses the largest absref over C; u = eps/2.
    CU_ASSERT(close_d(what, got, ref, (size_t)M * N, (K + 3) * EPS * abs_max, EPS));
    CU_ASSERT(pad_ok);
    free(A);
    free(B);
    free(C);
    free(ref);
    free(absref);
    free(got);
}

// gemm_ref (the float oracle kept for the optimisation issue) obeys the same contract
static void gemm_ref_case(void) {
    int M = 37, N = 41, K = 43;
    float *A = falloc((size_t)M * K), *B = falloc((size_t)K * N), *C = falloc((size_t)M * N), *C2 = falloc((size_t)M * N);
    fill_uniform(A, (size_t)M * K, -1, 1);
    fill_uniform(B, (size_t)K * N, -1, 1);
    fill_const(C, (size_t)M * N, NAN);
    gemm_ref(0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
    gemm(0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, C2, N);
    double *Cd = to_double(C, (size_t)M * N);
    // both are float dot products of K = 43 terms in [-1,1]: each within K eps of the truth
    CU_ASSERT(close_d("gemm vs gemm_ref", C2, Cd, (size_t)M * N, 2 * K * EPS, EPS));
    free(A), free(B), free(C), free(C2), free(Cd);
}

// ---------------------------------------------------------------------------------------------
// encoder

typedef struct {
    int B, T, C;
    const int *inp;
    double *wte, *wpe, *dout, *out;
} enc_ctx;

static double enc_loss(void *p) {
    enc_ctx *c = p;
    ref_encoder(c->out, c->inp, c->wte, c->wpe, c->B, c->T, c->C);
    return dot_d(c->out, c->dout, (size_t)c->B * c->T * c->C);
}

static void encoder_case(int B, int T, int C, int Vp, int maxT) {
    size_t n = (size_t)B * T * C, nwte = (size_t)Vp * C, nwpe = (size_t)maxT * C;
    int *inp = xmalloc((size_t)B * T * sizeof(int));
    for (int i = 0; i < B * T; i++) inp[i] = (int)sm_rng_below(&g_rng, (uint64_t)Vp / 2 + 1);   // many repeats
    float *wte = falloc(nwte), *wpe = falloc(nwpe), *out = falloc(n), *dout = falloc(n);
    fill_uniform(wte, nwte, -1, 1);
    fill_uniform(wpe, nwpe, -1, 1);
    fill_uniform(dout, n, -1, 1);
    enc_ctx c = {B, T, C, inp, to_double(wte, nwte), to_double(wpe, nwpe), to_double(dout, n), dalloc(n)};
    encoder_forward(out, inp, wte, wpe, B, T, C);
    ref_encoder(c.out, inp, c.wte, c.wpe, B, T, C);
    // one float addition of exact inputs: correctly rounded, within u|r|
    CU_ASSERT(close_d("encoder_forward", out, c.out, n, 0.0, EPS));

    float *dwte = falloc(nwte), *dwpe = falloc(nwpe);
    fill_uniform(dwte, nwte, -1, 1);
    fill_uniform(dwpe, nwpe, -1, 1);
    float *dwte0 = copy_f(dwte, nwte), *dwpe0 = copy_f(dwpe, nwpe);
    encoder_backward(dwte, dwpe, dout, inp, B, T, C);
    size_t *idx = xmalloc(FD_MAX * sizeof(size_t));
    double *g = dalloc(FD_MAX);
    size_t k = pick_indices(idx, nwte, FD_MAX);
    fd_grad(enc_loss, &c, c.wte, idx, k, FD_H, g);
    // dwte sums up to B*T dout terms in [-1,1] onto the prefill: float error <= (B*T+1) eps
    CU_ASSERT(check_grad("encoder_backward dwte", dwte, dwte0, g, idx, k, (B * T + 1) * EPS, EPS));
    k = pick_indices(idx, nwpe, FD_MAX);
    fd_grad(enc_loss, &c, c.wpe, idx, k, FD_H, g);
    // dwpe sums B terms per element (rows t >= T get nothing and must stay as prefilled)
    CU_ASSERT(check_grad("encoder_backward dwpe", dwpe, dwpe0, g, idx, k, (B + 1) * EPS, EPS));

    // deterministic and independent of the thread count
    float *d1 = copy_f(dwte0, nwte), *p1 = copy_f(dwpe0, nwpe);
    omp_set_num_threads(1);
    encoder_backward(d1, p1, dout, inp, B, T, C);
    omp_set_num_threads(2);
    CU_ASSERT(same_bits("encoder_backward dwte 1 vs 2 threads", d1, dwte, nwte));
    CU_ASSERT(same_bits("encoder_backward dwpe 1 vs 2 threads", p1, dwpe, nwpe));

    free(inp), free(wte), free(wpe), free(out), free(dout), free(dwte), free(dwpe), free(dwte0), free(dwpe0);
    free(c.wte), free(c.wpe), free(c.dout), free(c.out), free(idx), free(g), free(d1), free(p1);
}

// ---------------------------------------------------------------------------------------------
// layernorm

typedef struct {
    int N, C;
    double *x, *w, *b, *dout, *out;
} ln_ctx;

static double ln_loss(void *p) {
    ln_ctx *c = p;
    ref_layernorm(c->out, NULL, NULL, c->x, c->w, c->b, c->N, c->C);
    return dot_d(c->out, c->dout, (size_t)c->N * c->C);
}

static void layernorm_case(int N, int C) {
    size_t n = (size_t)N * C;
    float *x = falloc(n), *w = falloc(C), *b = falloc(C), *out = falloc(n), *mean = falloc(N), *rstd = falloc(N),
          *dout = falloc(n);
    fill_uniform(x, n, 1.0f, 3.0f);   // mean ~2, var 1/3: the mean must be removed accurately
    fill_uniform(w, C, 0.5f, 1.5f);
    fill_uniform(b, C, -1, 1);
    fill_uniform(dout, n, -1, 1);
    ln_ctx c = {N, C, to_double(x, n), to_double(w, C), to_double(b, C), to_double(dout, n), dalloc(n)};
    double *rm = dalloc(N), *rr = dalloc(N);
    layernorm_forward(out, mean, rstd, x, w, b, N, C);
    ref_layernorm(c.out, rm, rr, c.x, c.w, c.b, N, C);
    // mean: float sums of C values ~2 in 16 partial sums: error ~ (C/16) eps * 2 relative to
    // the sum, i.e. <= C eps * 2 / C... bounded by 4 eps * |mean| with margin (rtol).
    CU_ASSERT(close_d("layernorm_forward mean", mean, rm, N, 0.0, 4 * EPS * (1 + C / 16.0)));
    // rstd: the variance sums C squares (x - mean)^2 <= 1 the same way, relative error
    // ~(C/16) eps, plus the tiny mean error (x - mean is exact to ~eps*2); rstd halves it.
    CU_ASSERT(close_d("layernorm_forward rstd", rstd, rr, N, 0.0, 4 * EPS * (1 + C / 16.0)));
    // out = (x - m) rs w + b, |norm| <= ~1.8: a few roundings of O(2) values plus the rstd error
    CU_ASSERT(close_d("layernorm_forward out", out, c.out, n, 8 * EPS * (1 + C / 16.0), EPS));

    float *dx = falloc(n), *dw = falloc(C), *db = falloc(C);
    fill_uniform(dx, n, -1, 1);
    fill_uniform(dw, C, -1, 1);
    fill_uniform(db, C, -1, 1);
    float *dx0 = copy_f(dx, n), *dw0 = copy_f(dw, C), *db0 = copy_f(db, C);
    layernorm_backward(dx, dw, db, dout, x, w, mean, rstd, N, C);
    size_t *idx = xmalloc(FD_MAX * sizeof(size_t));
    double *g = dalloc(FD_MAX);
    size_t k = pick_indices(idx, n, FD_MAX);
    fd_grad(ln_loss, &c, c.x, idx, k, FD_H, g);
    // dinp = rs (dnorm - mean(dnorm) - norm mean(dnorm norm)): the two means are float sums of
    // C terms of size <= |w dout norm| <= 3, error ~ (C/16) eps * 3 before dividing by C;
    // the rest is a few roundings of O(3) values, times rs <= 1.8: ~ 16 eps covers it.
    CU_ASSERT(check_grad("layernorm_backward dinp", dx, dx0, g, idx, k, 16 * EPS, 2 * EPS));
    k = pick_indices(idx, (size_t)C, FD_MAX);
    fd_grad(ln_loss, &c, c.w, idx, k, FD_H, g);
    // dweight sums N terms norm*dout with |term| <= 1.8: float error <= N eps * 1.8 (bound as
    // K eps max|term|, partial sums of random signs stay far below N max|term|)
    CU_ASSERT(check_grad("layernorm_backward dweight", dw, dw0, g, idx, k, 2 * (N + 1) * EPS, 2 * EPS));
    fd_grad(ln_loss, &c, c.b, idx, k, FD_H, g);
    // dbias sums N terms dout in [-1,1]
    CU_ASSERT(check_grad("layernorm_backward dbias", db, db0, g, idx, k, (N + 1) * EPS, 2 * EPS));

    float *dx1 = copy_f(dx0, n), *dw1 = copy_f(dw0, C), *db1 = copy_f(db0, C);
    omp_set_num_threads(1);
    layernorm_backward(dx1, dw1, db1, dout, x, w, mean, rstd, N, C);
    omp_set_num_threads(2);
    CU_ASSERT(same_bits("layernorm_backward dinp 1 vs 2 threads", dx1, dx, n));
    CU_ASSERT(same_bits("layernorm_backward dweight 1 vs 2 threads", dw1, dw, C));
    CU_ASSERT(same_bits("layernorm_backward dbias 1 vs 2 threads", db1, db, C));

    free(x), free(w), free(b), free(out), free(mean), free(rstd), free(dout), free(rm), free(rr);
    free(c.x), free(c.w), free(c.b), free(c.dout), free(c.out);
    free(dx), free(dw), free(db), free(dx0), free(dw0), free(db0), free(dx1), free(dw1), free(db1), free(idx), free(g);
}

// ---------------------------------------------------------------------------------------------
// matmul

typedef struct {
    int N, C, OC;
    double *inp, *w, *b, *dout, *out;
} mm_ctx;

static double mm_loss(void *p) {
    mm_ctx *c = p;
    ref_matmul(c->out, c->inp, c->w, c->b, c->N, c->C, c->OC);
    return dot_d(c->out, c->dout, (size_t)c->N * c->OC);
}

static void matmul_case(int N, int C, int OC, int with_bias) {
    size_t ni = (size_t)N * C, nw = (size_t)OC * C, no = (size_t)N * OC;
    float *inp = falloc(ni), *w = falloc(nw), *b = with_bias ? falloc(OC) : NULL, *out = falloc(no),
          *dout = falloc(no);
    fill_uniform(inp, ni, -1, 1);
    fill_uniform(w, nw, -1, 1);
    if (b) fill_uniform(b, OC, -1, 1);
    fill_uniform(dout, no, -1, 1);
    mm_ctx c = {N, C, OC, to_double(inp, ni), to_double(w, nw), b ? to_double(b, OC) : NULL, to_double(dout, no),
                dalloc(no)};
    fill_const(out, no, NAN);   // the forward must overwrite, not accumulate
    matmul_forward(out, inp, w, b, N, C, OC);
    ref_matmul(c.out, c.inp, c.w, c.b, N, C, OC);
    char what[80];
    snprintf(what, sizeof what, "matmul_forward N=%d C=%d OC=%d bias=%d", N, C, OC, with_bias);
    // float dot of C products in [-1,1] plus the bias: error <= (C+1) eps * max partial sum,
    // and partial sums of random-sign terms stay within ~sqrt(C): (C+1) eps sqrt(C) bound
    CU_ASSERT(close_d(what, out, c.out, no, (C + 1) * EPS * sqrt(C + 1.0), EPS));

    // accumulate = 1: dweight and dbias add onto a random prefill; dinp is overwritten (its
    // NaN prefill must not be read)
    float *dinp = falloc(ni), *dw = falloc(nw), *db = with_bias ? falloc(OC) : NULL;
    fill_const(dinp, ni, NAN);
    fill_uniform(dw, nw, -1, 1);
    if (db) fill_uniform(db, OC, -1, 1);
    float *dinp0 = falloc(ni), *dw0 = copy_f(dw, nw), *db0 = db ? copy_f(db, OC) : NULL;
    fill_const(dinp0, ni, 0.0f);
    matmul_backward(dinp, dw, db, dout, inp, w, N, C, OC, 1);
    size_t *idx = xmalloc(FD_MAX * sizeof(size_t));
    double *g = dalloc(FD_MAX);
    size_t k = pick_indices(idx, ni, FD_MAX);
    fd_grad(mm_loss, &c, c.inp, idx, k, FD_H, g);
    // dinp: dot of OC products in [-1,1], same argument as the forward
    CU_ASSERT(check_grad("matmul_backward dinp", dinp, dinp0, g, idx, k, (OC + 1) * EPS * sqrt(OC + 1.0), EPS));
    k = pick_indices(idx, nw, FD_MAX);
    fd_grad(mm_loss, &c, c.w, idx, k, FD_H, g);
    // dweight: dot of N products in [-1,1]
    CU_ASSERT(check_grad("matmul_backward dweight", dw, dw0, g, idx, k, (N + 1) * EPS * sqrt(N + 1.0), EPS));
    if (db) {
        k = pick_indices(idx, (size_t)OC, FD_MAX);
        fd_grad(mm_loss, &c, c.b, idx, k, FD_H, g);
        // dbias: summed in double, rounded once onto the prefill
        CU_ASSERT(check_grad("matmul_backward dbias", db, db0, g, idx, k, 2 * EPS, EPS));
    }

    // determinism: twice at 2 threads, and at 1 thread, bit for bit (forward and backward)
    float *dinp2 = copy_f(dinp0, ni), *dw2 = copy_f(dw0, nw), *db2 = db ? copy_f(db0, OC) : NULL;
    matmul_backward(dinp2, dw2, db2, dout, inp, w, N, C, OC, 1);
    CU_ASSERT(same_bits("matmul_backward dinp twice", dinp2, dinp, ni));
    CU_ASSERT(same_bits("matmul_backward dweight twice", dw2, dw, nw));
    if (db) CU_ASSERT(same_bits("matmul_backward dbias twice", db2, db, OC));

    // accumulate = 0 writes dweight and dbias over a NaN prefill: bit for bit what adding onto
    // zeros gives (the first micro-batch of a step relies on it instead of clearing gradients)
    {
        float *dw_set = falloc(nw), *db_set = db ? falloc(OC) : NULL, *dw_add = falloc(nw),
              *db_add = db ? falloc(OC) : NULL;
        fill_const(dw_set, nw, NAN);
        fill_const(dw_add, nw, 0.0f);
        if (db) fill_const(db_set, OC, NAN), fill_const(db_add, OC, 0.0f);
        matmul_backward(dinp2, dw_set, db_set, dout, inp, w, N, C, OC, 0);
        matmul_backward(dinp2, dw_add, db_add, dout, inp, w, N, C, OC, 1);
        CU_ASSERT(same_bits("matmul_backward dweight written == added onto zeros", dw_set, dw_add, nw));
        if (db) CU_ASSERT(same_bits("matmul_backward dbias written == added onto zeros", db_set, db_add, OC));
        free(dw_set), free(db_set), free(dw_add), free(db_add);
    }
    memcpy(dinp2, dinp0, ni * sizeof(float));
    memcpy(dw2, dw0, nw * sizeof(float));
    if (db) memcpy(db2, db0, OC * sizeof(float));
    float *out1 = falloc(no);
    omp_set_num_threads(1);
    matmul_backward(dinp2, dw2, db2, dout, inp, w, N, C, OC, 1);
    matmul_forward(out1, inp, w, b, N, C, OC);
    omp_set_num_threads(2);
    CU_ASSERT(same_bits("matmul_backward dinp 1 vs 2 threads", dinp2, dinp, ni));
    CU_ASSERT(same_bits("matmul_backward dweight 1 vs 2 threads", dw2, dw, nw));
    if (db) CU_ASSERT(same_bits("matmul_backward dbias 1 vs 2 threads", db2, db, OC));
    CU_ASSERT(same_bits("matmul_forward 1 vs 2 threads", out1, out, no));

    free(inp), free(w), free(b), free(out), free(dout), free(c.inp), free(c.w), free(c.b), free(c.dout), free(c.out);
    free(dinp), free(dw), free(db), free(dinp0), free(dw0), free(db0), free(dinp2), free(dw2), free(db2), free(out1);
    free(idx), free(g);
}

// ---------------------------------------------------------------------------------------------
// attention

typedef struct {
    int B, T, C, NH;
    double *qkv, *dout, *out;
} att_ctx;

static double att_loss(void *p) {
    att_ctx *c = p;
    ref_attention(c->out, NULL, c->qkv, c->B, c->T, c->C, c->NH);
    return dot_d(c->out, c->dout, (size_t)c->B * c->T * c->C);
}

static void attention_case(int B, int T, int C, int NH) {
    size_t nqkv = (size_t)B * T * 3 * C, no = (size_t)B * T * C, na = (size_t)B * NH * T * T;
    float *qkv = falloc(nqkv), *out = falloc(no), *att = falloc(na), *dout = falloc(no);
    fill_uniform(qkv, nqkv, -2, 2);   // scores up to ~hs*4/sqrt(hs): peaked softmaxes too
    fill_uniform(dout, no, -1, 1);
    att_ctx c = {B, T, C, NH, to_double(qkv, nqkv), to_double(dout, no), dalloc(no)};
    double *ratt = dalloc(na);
    fill_const(out, no, NAN);   // every output element must be written
    fill_const(att, na, NAN);
    attention_forward_ref(out, att, qkv, B, T, C, NH);
    ref_attention(c.out, ratt, c.qkv, B, T, C, NH);
    int hs = C / NH;
    char what[96];
    // probabilities: scores are float dots of hs terms <= 4 (error ~hs*4 eps/sqrt(hs) absolute),
    // and p = exp(s - max)/sum carries that as a relative error, plus expf and the float sum
    // of up to T terms (relative ~T eps/2): rtol covers it; masked entries must be exactly 0.
    snprintf(what, sizeof what, "attention_forward att B=%d T=%d C=%d NH=%d", B, T, C, NH);
    CU_ASSERT(close_d(what, att, ratt, na, 0.0, (4 * sqrt(hs) + T + 8) * EPS));
    int zeros_ok = 1;
    for (int bh = 0; bh < B * NH; bh++)
        for (int t = 0; t < T; t++)
            for (int j = t + 1; j < T; j++) zeros_ok &= att[((size_t)bh * T + t) * T + j] == 0.0f;
    CU_ASSERT(zeros_ok);
    // out = sum_j p_j v_j, |v| <= 2, sum p = 1: error <= 2 * (relative error of p) + T eps * 2
    snprintf(what, sizeof what, "attention_forward out B=%d T=%d C=%d NH=%d", B, T, C, NH);
    CU_ASSERT(close_d(what, out, c.out, no, 2 * (4 * sqrt(hs) + 2 * T + 8) * EPS, EPS));

    float *dqkv = falloc(nqkv), *datt = falloc(na);
    fill_uniform(dqkv, nqkv, -1, 1);
    fill_const(datt, na, NAN);   // scratch: nothing unwritten may be read
    float *dqkv0 = copy_f(dqkv, nqkv);
    attention_backward_ref(dqkv, datt, dout, qkv, att, B, T, C, NH);
    size_t *idx = xmalloc(FD_MAX * sizeof(size_t));
    double *g = dalloc(FD_MAX);
    size_t k = pick_indices(idx, nqkv, FD_MAX);
    fd_grad(att_loss, &c, c.qkv, idx, k, FD_H, g);
    // dqkv: dP = dO V^T (hs terms <= 2), dS = P (dP - P.dP) scale, dQ = dS K and dK = dS^T Q
    // (up to T terms, |dS| <= ~2 P, sum P = 1 over a row), dV = P^T dO (T terms, |P| <= 1).
    // Each is a float sum of at most T + hs terms of size <= ~1 (|dS| <= ~2 P, P <= 1 and
    // sums to 1 over a row, |q|,|k|,|v| <= 2): K eps max|term| with K = T + hs.
    snprintf(what, sizeof what, "attention_backward dqkv B=%d T=%d C=%d NH=%d", B, T, C, NH);
    CU_ASSERT(check_grad(what, dqkv, dqkv0, g, idx, k, (T + hs) * EPS, 2 * EPS));

    // determinism: twice, and 1 vs 2 threads
    float *dqkv2 = copy_f(dqkv0, nqkv), *out1 = falloc(no), *att1 = falloc(na);
    attention_backward_ref(dqkv2, datt, dout, qkv, att, B, T, C, NH);
    CU_ASSERT(same_bits("attention_backward twice", dqkv2, dqkv, nqkv));
    memcpy(dqkv2, dqkv0, nqkv * sizeof(float));
    omp_set_num_threads(1);
    attention_backward_ref(dqkv2, datt, dout, qkv, att, B, T, C, NH);
    attention_forward_ref(out1, att1, qkv, B, T, C, NH);
    omp_set_num_threads(2);
    CU_ASSERT(same_bits("attention_backward 1 vs 2 threads", dqkv2, dqkv, nqkv));
    CU_ASSERT(same_bits("attention_forward out 1 vs 2 threads", out1, out, no));
    CU_ASSERT(same_bits("attention_forward att 1 vs 2 threads", att1, att, na));

    free(qkv), free(out), free(att), free(dout), free(c.qkv), free(c.dout), free(c.out), free(ratt);
    free(dqkv), free(datt), free(dqkv0), free(idx), free(g), free(dqkv2), free(out1), free(att1);
}

// ---------------------------------------------------------------------------------------------
// flash attention: against the double reference (forward, lse, finite differences of backward),
// against the batched-matmul reference kernel, masking, the decode form, determinism

// What flash_level compares against: the double references and the batched-matmul reference
// kernel, computed once per shape.
typedef struct {
    int B, T, C, NH;
    const float *qkv, *dout;
    const double *out, *lse;                   // double reference: forward and log-sum-exp
    const double *out_ref, *dqkv_ref;          // the reference kernel (dqkv accumulated onto zeros)
    const double *fd;                          // finite differences at idx[0..n_fd), or NULL
    const size_t *idx;
    size_t n_fd;
    void *owned[12];                           // what flash_release frees
} flash_refs;

// The flash kernels on the paths in use: forward against the references, backward (which
// overwrites dqkv: it is prefilled with NaN, so an unwritten element fails) against the reference
// kernel's accumulation onto zeros and finite differences, determinism, the decode form, masking.
static void flash_level(const flash_refs *r) {
    const char *lvl = g_path;
    int B = r->B, T = r->T, C = r->C, NH = r->NH, hs = C / NH;
    size_t nqkv = (size_t)B * T * 3 * C, no = (size_t)B * T * C, nl = (size_t)B * NH * T;
    const float *qkv = r->qkv, *dout = r->dout;
    float *out = falloc(no), *lse = falloc(nl);
    fill_const(out, no, NAN);   // every element must be written
    fill_const(lse, nl, NAN);
    attention_forward(out, lse, qkv, B, T, C, NH);
    char what[256];
    // same bound as the reference kernel's output (probabilities within (4 sqrt(hs) + T + 8) eps
    // relative, |v| <= 2), plus the online rescaling: one more rounding per key block of 64
    snprintf(what, sizeof what, "flash attention out B=%d T=%d C=%d NH=%d %s", B, T, C, NH, lvl);
    CU_ASSERT(close_d(what, out, r->out, no, 2 * (4 * sqrt(hs) + 2 * T + 8 + 2 * (T / 64 + 1)) * EPS, EPS));
    // lse = max + log(sum exp(s - max)): the scores carry ~4 sqrt(hs) eps absolute error, the
    // float log and sum of up to T terms ~T eps relative to the sum, i.e. absolute in the log
    snprintf(what, sizeof what, "flash attention lse B=%d T=%d C=%d NH=%d %s", B, T, C, NH, lvl);
    CU_ASSERT(close_d(what, lse, r->lse, nl, (4 * sqrt(hs) + T + 8) * EPS, EPS));
    // the batched-matmul reference kernel, float against float: both within the bounds above
    snprintf(what, sizeof what, "flash vs ref kernel out B=%d T=%d C=%d NH=%d %s", B, T, C, NH, lvl);
    CU_ASSERT(close_d(what, out, r->out_ref, no, 4 * (4 * sqrt(hs) + 2 * T + 8 + 2 * (T / 64 + 1)) * EPS, 2 * EPS));

    // backward overwrites dqkv: NaN before, every element written after
    float *dqkv = falloc(nqkv), *zeros = falloc(nqkv);
    fill_const(dqkv, nqkv, NAN);
    fill_const(zeros, nqkv, 0.0f);
    attention_backward(dqkv, dout, out, qkv, lse, B, T, C, NH);
    // both are float sums of at most T + hs terms of size <= ~2, each within (T + hs) eps of the
    // truth: twice that between them
    snprintf(what, sizeof what, "flash vs ref kernel dqkv B=%d T=%d C=%d NH=%d %s", B, T, C, NH, lvl);
    CU_ASSERT(close_d(what, dqkv, r->dqkv_ref, nqkv, 2 * (T + hs + 8) * EPS, 4 * EPS));
    if (r->fd) {
        // as the reference kernel's bound, plus P recomputed as exp(s - lse) (lse within
        // (4 sqrt(hs) + T) eps): a relative error of that size on every P
        snprintf(what, sizeof what, "flash attention dqkv (FD) B=%d T=%d C=%d NH=%d %s", B, T, C, NH, lvl);
        CU_ASSERT(check_grad(what, dqkv, zeros, r->fd, r->idx, r->n_fd, (2 * T + hs + 4 * sqrt(hs) + 8) * EPS, 4 * EPS));
    }

    // determinism: twice (onto other garbage: nothing of it may remain), and 1 vs 2 threads, bit for bit
    float *out1 = falloc(no), *lse1 = falloc(nl), *dqkv1 = falloc(nqkv);
    fill_uniform(dqkv1, nqkv, -1e3f, 1e3f);
    attention_backward(dqkv1, dout, out, qkv, lse, B, T, C, NH);
    CU_ASSERT(same_bits("flash attention backward twice", dqkv1, dqkv, nqkv));
    fill_const(dqkv1, nqkv, NAN);
    omp_set_num_threads(1);
    attention_forward(out1, lse1, qkv, B, T, C, NH);
    attention_backward(dqkv1, dout, out, qkv, lse, B, T, C, NH);
    omp_set_num_threads(2);
    CU_ASSERT(same_bits("flash attention out 1 vs 2 threads", out1, out, no));
    CU_ASSERT(same_bits("flash attention lse 1 vs 2 threads", lse1, lse, nl));
    CU_ASSERT(same_bits("flash attention dqkv 1 vs 2 threads", dqkv1, dqkv, nqkv));

    // the decode form: query t alone against the cached keys and values 0..t gives row t of the
    // full forward, bit for bit (the same products in the same order, the same key blocks)
    int decode_ok = 1;
    float *o1 = falloc((size_t)hs), l1;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t += (T > 8 ? T / 5 : 1)) {
                const float *base = qkv + (size_t)b * T * 3 * C + h * hs;
                attention_head_forward(o1, hs, &l1, base + (size_t)t * 3 * C, 3 * C, base + C, 3 * C, base + 2 * C, 3 * C,
                                       1, t, hs);
                const float *row = out + ((size_t)b * T + t) * C + h * hs;
                decode_ok &= memcmp(o1, row, (size_t)hs * sizeof(float)) == 0;
                decode_ok &= memcmp(&l1, &lse[((size_t)b * NH + h) * T + t], sizeof l1) == 0;
            }
    CU_ASSERT(decode_ok);

    // a prefill in chunks against a cache (nq > 1 at pos0 > 0, chunk edges inside key blocks)
    // gives the full forward's rows, bit for bit
    int chunk = T > 40 ? 37 : (T + 1) / 2, prefill_ok = 1;
    float *oc = falloc((size_t)chunk * hs), *lc = falloc((size_t)chunk);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t0 = 0; t0 < T; t0 += chunk) {
                int n = T - t0 < chunk ? T - t0 : chunk;
                const float *base = qkv + (size_t)b * T * 3 * C + h * hs;
                attention_head_forward(oc, hs, lc, base + (size_t)t0 * 3 * C, 3 * C, base + C, 3 * C, base + 2 * C, 3 * C,
                                       n, t0, hs);
                for (int i = 0; i < n; i++)
                    prefill_ok &= memcmp(oc + (size_t)i * hs, out + ((size_t)b * T + t0 + i) * C + h * hs,
                                         (size_t)hs * sizeof(float)) == 0;
                prefill_ok &= memcmp(lc, lse + ((size_t)b * NH + h) * T + t0, (size_t)n * sizeof(float)) == 0;
            }
    CU_ASSERT(prefill_ok);
    free(oc), free(lc);

    // masking: huge keys and values at the last position change no earlier row at all (its
    // scores are never exponentiated for them, and its probability 0 multiplies their values)
    if (T > 1) {
        float *poison = copy_f(qkv, nqkv), *outp = falloc(no), *lsep = falloc(nl);
        for (int b = 0; b < B; b++)
            for (int i = 0; i < C; i++) {
                poison[((size_t)b * T + T - 1) * 3 * C + C + i] = 1e30f;
                poison[((size_t)b * T + T - 1) * 3 * C + 2 * C + i] = -1e30f;
            }
        attention_forward(outp, lsep, poison, B, T, C, NH);
        int mask_ok = 1;
        for (int b = 0; b < B; b++) {
            mask_ok &= memcmp(outp + (size_t)b * T * C, out + (size_t)b * T * C, (size_t)(T - 1) * C * sizeof(float)) == 0;
            for (int h = 0; h < NH; h++)
                mask_ok &= memcmp(lsep + ((size_t)b * NH + h) * T, lse + ((size_t)b * NH + h) * T,
                                  (size_t)(T - 1) * sizeof(float)) == 0;
        }
        CU_ASSERT(mask_ok);
        free(poison), free(outp), free(lsep);
    }
    free(out), free(lse), free(dqkv), free(zeros), free(out1), free(lse1), free(dqkv1), free(o1);
}

// flash attention: the references once (flash_prepare), then flash_level on every path the CPU
// has (the rows of the table run it once per path)
static flash_refs *flash_prepare(int B, int T, int C, int NH, int check_fd) {
    size_t nqkv = (size_t)B * T * 3 * C, no = (size_t)B * T * C, nl = (size_t)B * NH * T, na = (size_t)B * NH * T * T;
    int hs = C / NH;
    float *qkv = falloc(nqkv), *dout = falloc(no);
    fill_uniform(qkv, nqkv, -2, 2);
    fill_uniform(dout, no, -1, 1);
    att_ctx c = {B, T, C, NH, to_double(qkv, nqkv), to_double(dout, no), dalloc(no)};
    double *ratt = dalloc(na);
    ref_attention(c.out, ratt, c.qkv, B, T, C, NH);
    double *rout = dalloc(no), *rlse = dalloc(nl);   // (c.out is the finite differences' scratch)
    memcpy(rout, c.out, no * sizeof(double));
    for (int bh = 0; bh < B * NH; bh++) {
        int b = bh / NH, h = bh % NH;
        for (int t = 0; t < T; t++) {
            const double *q = c.qkv + ((size_t)b * T + t) * 3 * C + h * hs;
            double mx = -INFINITY, sum = 0.0, *sc = dalloc((size_t)t + 1);
            for (int j = 0; j <= t; j++) {
                sc[j] = dot_d(q, c.qkv + ((size_t)b * T + j) * 3 * C + C + h * hs, (size_t)hs) / sqrt((double)hs);
                mx = fmax(mx, sc[j]);
            }
            for (int j = 0; j <= t; j++) sum += exp(sc[j] - mx);
            rlse[(size_t)bh * T + t] = mx + log(sum);
            free(sc);
        }
    }
    // the batched-matmul reference kernel (on the best paths): forward, and backward onto zeros
    float *out_ref = falloc(no), *att = falloc(na), *dqkv_ref = falloc(nqkv), *datt = falloc(na);
    attention_forward_ref(out_ref, att, qkv, B, T, C, NH);
    fill_const(dqkv_ref, nqkv, 0.0f);
    attention_backward_ref(dqkv_ref, datt, dout, qkv, att, B, T, C, NH);
    flash_refs *r = xmalloc(sizeof *r);
    *r = (flash_refs){B, T, C, NH, qkv, dout, rout, rlse, to_double(out_ref, no), to_double(dqkv_ref, nqkv), NULL, NULL, 0,
                      {0}};
    size_t *idx = NULL;
    double *g = NULL;
    if (check_fd) {
        idx = xmalloc(FD_MAX * sizeof(size_t));
        g = dalloc(FD_MAX);
        r->n_fd = pick_indices(idx, nqkv, FD_MAX);
        fd_grad(att_loss, &c, c.qkv, idx, r->n_fd, FD_H, g);
        r->fd = g;
        r->idx = idx;
    }
    void *own[] = {qkv, dout, rout, rlse, (void *)r->out_ref, (void *)r->dqkv_ref, idx, g};
    memcpy(r->owned, own, sizeof own);
    free(c.qkv), free(c.dout), free(c.out), free(ratt), free(out_ref), free(att), free(dqkv_ref), free(datt);
    return r;
}

static void flash_release(flash_refs *r) {
    for (size_t i = 0; i < sizeof r->owned / sizeof r->owned[0]; i++) free(r->owned[i]);
    free(r);
}

// ---------------------------------------------------------------------------------------------
// the GEMM engine on every SIMD path the CPU has; the fused kernels against their unfused pairs

// gemm_mt (OpenMP over output tiles) against single-threaded gemm, bit for bit, at 1, 2 and 3
// threads: where an element sits in the tiling must not change its value.
static void gemm_mt_case(int ta, int tb, int M, int N, int K) {
    float *A = falloc((size_t)M * K), *B = falloc((size_t)K * N), *C1 = falloc((size_t)M * N), *C2 = falloc((size_t)M * N);
    fill_uniform(A, (size_t)M * K, -1, 1);
    fill_uniform(B, (size_t)K * N, -1, 1);
    fill_uniform(C1, (size_t)M * N, -1, 1);
    float *C0 = copy_f(C1, (size_t)M * N);
    int lda = ta ? M : K, ldb = tb ? K : N;
    gemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, 1.0f, C1, N);
    for (int nt = 1; nt <= 3; nt++) {
        memcpy(C2, C0, (size_t)M * N * sizeof(float));
        omp_set_num_threads(nt);
        gemm_mt(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, 1.0f, C2, N);
        char what[256];
        snprintf(what, sizeof what, "gemm_mt (%d,%d,%d,%d%d) at %d threads vs gemm (%s)", M, N, K, ta, tb, nt, g_path);
        CU_ASSERT(same_bits(what, C2, C1, (size_t)M * N));
    }
    omp_set_num_threads(2);
    free(A), free(B), free(C0), free(C1), free(C2);
}

// matmul_forward_gelu = matmul_forward then gelu_forward, bit for bit
static void matmul_gelu_case(int N, int C, int OC) {
    float *inp = falloc((size_t)N * C), *w = falloc((size_t)OC * C), *b = falloc(OC);
    float *o1 = falloc((size_t)N * OC), *g1 = falloc((size_t)N * OC), *o2 = falloc((size_t)N * OC),
          *g2 = falloc((size_t)N * OC);
    fill_uniform(inp, (size_t)N * C, -1, 1);
    fill_uniform(w, (size_t)OC * C, -0.1f, 0.1f);
    fill_uniform(b, OC, -1, 1);
    matmul_forward_gelu(o1, g1, inp, w, b, N, C, OC);
    matmul_forward(o2, inp, w, b, N, C, OC);
    gelu_forward(g2, o2, (size_t)N * OC);
    CU_ASSERT(same_bits("matmul_forward_gelu pre-activation", o1, o2, (size_t)N * OC));
    CU_ASSERT(same_bits("matmul_forward_gelu gelu", g1, g2, (size_t)N * OC));
    free(inp), free(w), free(b), free(o1), free(g1), free(o2), free(g2);
}

// lm_head_backward (dlogits recomputed block by block from softmax_xent_stats) = softmax_xent with
// dlogits then matmul_backward, bit for bit, at 1, 2 and 3 threads; softmax_xent_stats' losses =
// softmax_xent's
static void lm_head_case(int N, int C, int V, int Vp, int accumulate) {
    size_t nl = (size_t)N * Vp;
    float *logits = falloc(nl), *dl = falloc(nl), *inp = falloc((size_t)N * C), *wte = falloc((size_t)Vp * C);
    float *dinp1 = falloc((size_t)N * C), *dwte1 = falloc((size_t)Vp * C), *dinp2 = falloc((size_t)N * C);
    float *dwte2 = falloc((size_t)Vp * C), *l1 = falloc(N), *l2 = falloc(N), *mx = falloc(N), *inv = falloc(N);
    int *targets = malloc((size_t)N * sizeof(int));
    CU_ASSERT_FATAL(targets != NULL);
    fill_uniform(logits, nl, -4, 4);
    fill_uniform(inp, (size_t)N * C, -1, 1);
    fill_uniform(wte, (size_t)Vp * C, -0.1f, 0.1f);
    fill_uniform(dwte1, (size_t)Vp * C, -1, 1);
    for (int n = 0; n < N; n++) targets[n] = (int)sm_rng_below(&g_rng, (uint64_t)V);
    float *dwte0 = copy_f(dwte1, (size_t)Vp * C);
    const float dloss = 1.0f / (float)N;
    memcpy(dl, logits, nl * sizeof(float));
    double t1 = softmax_xent(l1, dl, dl, targets, N, V, Vp, dloss);   // in place, as the model does
    matmul_backward(dinp1, dwte1, NULL, dl, inp, wte, N, C, Vp, accumulate);
    for (int nt = 1; nt <= 3; nt++) {
        omp_set_num_threads(nt);
        memcpy(dwte2, dwte0, (size_t)Vp * C * sizeof(float));
        fill_uniform(dinp2, (size_t)N * C, -1, 1);   // overwritten
        double t2 = softmax_xent_stats(l2, mx, inv, logits, targets, N, V, Vp);
        lm_head_backward(dinp2, dwte2, logits, mx, inv, targets, inp, wte, N, C, V, Vp, dloss, accumulate);
        char what[256];
        snprintf(what, sizeof what, "lm_head (%d,%d,%d,%d acc %d) at %d threads (%s)", N, C, V, Vp, accumulate, nt, g_path);
        CU_ASSERT(t1 == t2);
        CU_ASSERT(same_bits(what, l2, l1, N));
        CU_ASSERT(same_bits(what, dinp2, dinp1, (size_t)N * C));
        CU_ASSERT(same_bits(what, dwte2, dwte1, (size_t)Vp * C));
    }
    omp_set_num_threads(2);
    free(logits), free(dl), free(inp), free(wte), free(dinp1), free(dwte1), free(dinp2), free(dwte2), free(dwte0);
    free(l1), free(l2), free(mx), free(inv), free(targets);
}

// residual_layernorm_forward = residual_forward then layernorm_forward, bit for bit
static void residual_layernorm_case(int N, int C) {
    size_t n = (size_t)N * C;
    float *a = falloc(n), *bb = falloc(n), *w = falloc(C), *bias = falloc(C);
    float *r1 = falloc(n), *o1 = falloc(n), *m1 = falloc(N), *s1 = falloc(N);
    float *r2 = falloc(n), *o2 = falloc(n), *m2 = falloc(N), *s2 = falloc(N);
    fill_uniform(a, n, -2, 2);
    fill_uniform(bb, n, -2, 2);
    fill_uniform(w, C, 0.5f, 1.5f);
    fill_uniform(bias, C, -1, 1);
    residual_layernorm_forward(r1, o1, m1, s1, a, bb, w, bias, N, C);
    residual_forward(r2, a, bb, n);
    layernorm_forward(o2, m2, s2, r2, w, bias, N, C);
    CU_ASSERT(same_bits("residual_layernorm_forward res", r1, r2, n));
    CU_ASSERT(same_bits("residual_layernorm_forward out", o1, o2, n));
    CU_ASSERT(same_bits("residual_layernorm_forward mean", m1, m2, N));
    CU_ASSERT(same_bits("residual_layernorm_forward rstd", s1, s2, N));
    free(a), free(bb), free(w), free(bias), free(r1), free(o1), free(m1), free(s1), free(r2), free(o2), free(m2),
        free(s2);
}

// adamw_update's grad_scale: the same bits as scaling the gradients first
static void adamw_scale_case(size_t n) {
    float *p1 = falloc(n), *m1 = falloc(n), *v1 = falloc(n), *g = falloc(n), *gs = falloc(n);
    fill_uniform(p1, n, -1, 1);
    fill_uniform(m1, n, -0.1f, 0.1f);
    fill_uniform(v1, n, 0.0f, 0.01f);
    fill_uniform(g, n, -3, 3);
    float *p2 = copy_f(p1, n), *m2 = copy_f(m1, n), *v2 = copy_f(v1, n), *g0 = copy_f(g, n);
    for (size_t i = 0; i < n; i++) gs[i] = g[i] * 0.37f;
    adamw_update(p1, g, m1, v1, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.37f, 4);
    adamw_update(p2, gs, m2, v2, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f, 4);
    CU_ASSERT(same_bits("adamw grad_scale params", p1, p2, n));
    CU_ASSERT(same_bits("adamw grad_scale m", m1, m2, n));
    CU_ASSERT(same_bits("adamw grad_scale v", v1, v2, n));
    CU_ASSERT(same_bits("adamw leaves grads alone", g, g0, n));
    free(p1), free(m1), free(v1), free(g), free(gs), free(p2), free(m2), free(v2), free(g0);
}

// ---------------------------------------------------------------------------------------------
// gelu, residual, scale

typedef struct {
    size_t n;
    double *x, *dout;
} gelu_ctx;

static double gelu_loss(void *p) {
    gelu_ctx *c = p;
    double s = 0.0;
    for (size_t i = 0; i < c->n; i++) s += ref_gelu(c->x[i]) * c->dout[i];
    return s;
}

static void gelu_case(void) {
    size_t n = 1001;
    float *x = falloc(n), *out = falloc(n), *dout = falloc(n), *dx = falloc(n);
    fill_uniform(x, n, -6, 6);
    x[0] = 0.0f, x[1] = -10.0f, x[2] = 10.0f;
    fill_uniform(dout, n, -1, 1);
    fill_const(dx, n, NAN);   // gelu_backward overwrites: a NaN left anywhere fails the check
    float *dx0 = falloc(n);
    fill_const(dx0, n, 0.0f);
    gelu_forward(out, x, n);
    double *ref = dalloc(n);
    for (size_t i = 0; i < n; i++) ref[i] = ref_gelu(x[i]);
    // a few roundings and sm_tanhf (<= 2 ulp); where tanh ~ -1, 1 + tanh cancels and keeps the
    // absolute error of tanh (~eps) times |x|/2 <= 5: atol 8 eps, rtol 8 eps
    CU_ASSERT(close_d("gelu_forward", out, ref, n, 8 * EPS, 8 * EPS));
    gelu_backward(dx, x, dout, n);
    gelu_ctx c = {n, to_double(x, n), to_double(dout, n)};
    size_t *idx = xmalloc(n * sizeof(size_t));
    double *g = dalloc(n);
    size_t k = pick_indices(idx, n, n);
    fd_grad(gelu_loss, &c, c.x, idx, k, FD_H, g);
    // gelu' is <= ~1.13 and is a few float operations on O(1)..O(|x| <= 10) values: same
    // cancellation argument as the forward, times |dout| <= 1
    CU_ASSERT(check_grad("gelu_backward", dx, dx0, g, idx, k, 16 * EPS, 4 * EPS));
    // gelu_tile (the GEMM epilogue) = gelu_forward element for element, at any offset and stride:
    // x as 7 rows of 143 (1001 = 7 x 143), the first 100 columns of each, into rows of 101
    float *tile = falloc(7 * 101);
    gelu_tile(tile, 101, x, 143, 7, 100);
    int tile_ok = 1;
    for (int i = 0; i < 7; i++) tile_ok &= memcmp(tile + i * 101, out + i * 143, 100 * sizeof(float)) == 0;
    CU_ASSERT(tile_ok);
    gelu_tile(tile, 101, x + 5, 143, 7, 13);   // narrow, misaligned
    tile_ok = 1;
    for (int i = 0; i < 7; i++) tile_ok &= memcmp(tile + i * 101, out + 5 + i * 143, 13 * sizeof(float)) == 0;
    CU_ASSERT(tile_ok);
    // far tails and specials: exact limits (x^3 overflows at |x| = 1e13, and must not give inf * 0)
    const float big[6] = {-1e13f, -60.0f, 60.0f, 1e13f, NAN, -0.0f};
    float gb[6], db[6] = {NAN, NAN, NAN, NAN, NAN, NAN}, ones[6] = {1, 1, 1, 1, 1, 1};
    gelu_forward(gb, big, 6);
    gelu_backward(db, big, ones, 6);
    CU_ASSERT(gb[0] == 0.0f && gb[1] == 0.0f && gb[2] == 60.0f && gb[3] == 1e13f && isnan(gb[4]) && gb[5] == 0.0f);
    CU_ASSERT(db[0] == 0.0f && db[1] == 0.0f && db[2] == 1.0f && db[3] == 1.0f && isnan(db[4]) && db[5] == 0.5f);
    free(x), free(out), free(dout), free(dx), free(dx0), free(ref), free(c.x), free(c.dout), free(idx), free(g);
    free(tile);
}

typedef struct {
    size_t n;
    double *a, *b, *dout;
} res_ctx;

static double res_loss(void *p) {
    res_ctx *c = p;
    double s = 0.0;
    for (size_t i = 0; i < c->n; i++) s += (c->a[i] + c->b[i]) * c->dout[i];
    return s;
}

static void residual_scale_case(void) {
    size_t n = 777;
    float *a = falloc(n), *b = falloc(n), *out = falloc(n), *dout = falloc(n), *da = falloc(n), *db = falloc(n);
    fill_uniform(a, n, -1, 1);
    fill_uniform(b, n, -1, 1);
    fill_uniform(dout, n, -1, 1);
    fill_uniform(da, n, -1, 1);
    fill_uniform(db, n, -1, 1);
    float *da0 = copy_f(da, n), *db0 = copy_f(db, n);
    residual_forward(out, a, b, n);
    res_ctx c = {n, to_double(a, n), to_double(b, n), to_double(dout, n)};
    double *ref = dalloc(n);
    for (size_t i = 0; i < n; i++) ref[i] = c.a[i] + c.b[i];
    // a single float addition: correctly rounded
    CU_ASSERT(close_d("residual_forward", out, ref, n, 0.0, EPS));
    residual_backward(da, db, dout, n);
    size_t *idx = xmalloc(n * sizeof(size_t));
    double *g = dalloc(n);
    size_t k = pick_indices(idx, n, n);
    fd_grad(res_loss, &c, c.a, idx, k, FD_H, g);
    // prefill + dout: one rounding. The FD of a linear loss has no truncation error, only the
    // double rounding of the loss (~n * 1e-16 * |loss| ~ 1e-13) over 2h: up to ~1e-9 absolute,
    // which shows where prefill and dout nearly cancel (a 1e-12 miss on a 4e-6 result was seen)
    CU_ASSERT(check_grad("residual_backward dinp1", da, da0, g, idx, k, 1e-9, EPS));
    fd_grad(res_loss, &c, c.b, idx, k, FD_H, g);
    CU_ASSERT(check_grad("residual_backward dinp2", db, db0, g, idx, k, 1e-9, EPS));
    // scale_inplace: one float product, which is what (float)((double)x * s) gives bit for bit
    float *x = copy_f(a, n), *want = falloc(n);
    for (size_t i = 0; i < n; i++) want[i] = (float)((double)a[i] * 0.3f);
    scale_inplace(x, 0.3f, n);
    CU_ASSERT(same_bits("scale_inplace", x, want, n));
    free(a), free(b), free(out), free(dout), free(da), free(db), free(da0), free(db0), free(c.a), free(c.b);
    free(c.dout), free(ref), free(idx), free(g), free(x), free(want);
}

// ---------------------------------------------------------------------------------------------
// softmax + cross-entropy

typedef struct {
    int N, V, Vp;
    const int *targets;
    double *logits, dloss;
} sx_ctx;

static double sx_loss(void *p) {
    sx_ctx *c = p;
    return c->dloss * ref_softmax_xent(NULL, c->logits, c->targets, c->N, c->V, c->Vp);
}

static void softmax_xent_case(int N, int V, int Vp) {
    size_t n = (size_t)N * Vp;
    float *logits = falloc(n), *losses = falloc(N), *dl = falloc(n);
    int *targets = xmalloc((size_t)N * sizeof(int));
    fill_uniform(logits, n, -4, 4);
    for (int i = 0; i < N; i++) targets[i] = (int)sm_rng_below(&g_rng, (uint64_t)V);
    float dloss = 1.0f / N;
    sx_ctx c = {N, V, Vp, targets, to_double(logits, n), dloss};
    double *rl = dalloc(N);
    fill_const(dl, n, NAN);   // written, not accumulated; padding included
    double total = softmax_xent(losses, dl, logits, targets, N, V, Vp, dloss);
    double rtotal = ref_softmax_xent(rl, c.logits, targets, N, V, Vp);
    // loss = log(sum exp) - (l_t - max): exp in float (<= 2 ulp), summed in double, so the
    // loss is off by ~2 eps relative in the sum -> 2 eps absolute, plus its float rounding
    CU_ASSERT(close_d("softmax_xent losses", losses, rl, N, 4 * EPS, EPS));
    // the total sums the float losses in double: error <= N * (per-loss error)
    CU_ASSERT(fabs(total - rtotal) <= N * 4 * EPS + EPS * fabs(rtotal));
    size_t *idx = xmalloc(FD_MAX * sizeof(size_t));
    double *g = dalloc(FD_MAX);
    float *zero = falloc(n);
    fill_const(zero, n, 0.0f);
    size_t k = pick_indices(idx, n, FD_MAX);
    fd_grad(sx_loss, &c, c.logits, idx, k, FD_H, g);
    // (p - onehot) dloss with p correct to a few eps relative: atol a few eps * dloss
    CU_ASSERT(check_grad("softmax_xent dlogits", dl, zero, g, idx, k, 4 * EPS * dloss, 4 * EPS));
    int pad_ok = 1;
    for (int i = 0; i < N; i++)
        for (int j = V; j < Vp; j++) pad_ok &= dl[(size_t)i * Vp + j] == 0.0f && !signbit(dl[(size_t)i * Vp + j]);
    CU_ASSERT(pad_ok);
    // padded logits never enter: wild values there change nothing, bit for bit
    float *wild = copy_f(logits, n), *losses2 = falloc(N), *dl2 = falloc(n);
    for (int i = 0; i < N; i++)
        for (int j = V; j < Vp; j++) wild[(size_t)i * Vp + j] = (j % 2) ? 1e30f : -INFINITY;
    double total2 = softmax_xent(losses2, dl2, wild, targets, N, V, Vp, dloss);
    CU_ASSERT(total2 == total);
    CU_ASSERT(same_bits("softmax_xent losses with wild padding", losses2, losses, N));
    CU_ASSERT(same_bits("softmax_xent dlogits with wild padding", dl2, dl, n));
    // dlogits may alias logits; and dlogits = NULL gives the same losses
    float *alias = copy_f(logits, n);
    double total3 = softmax_xent(losses2, alias, alias, targets, N, V, Vp, dloss);
    CU_ASSERT(total3 == total);
    CU_ASSERT(same_bits("softmax_xent dlogits aliased", alias, dl, n));
    double total4 = softmax_xent(losses2, NULL, logits, targets, N, V, Vp, dloss);
    CU_ASSERT(total4 == total);
    CU_ASSERT(same_bits("softmax_xent losses without dlogits", losses2, losses, N));
    omp_set_num_threads(1);
    double total5 = softmax_xent(losses2, dl2, logits, targets, N, V, Vp, dloss);
    omp_set_num_threads(2);
    CU_ASSERT(total5 == total);
    CU_ASSERT(same_bits("softmax_xent dlogits 1 vs 2 threads", dl2, dl, n));
    free(logits), free(losses), free(dl), free(targets), free(c.logits), free(rl), free(idx), free(g), free(zero);
    free(wild), free(losses2), free(dl2), free(alias);
}

// ---------------------------------------------------------------------------------------------
// sm_expf, sm_tanhf

static void vmath_case(void) {
    size_t n = 1 << 20;
    float *x = falloc(n), *e = falloc(n), *th = falloc(n);
    double *re = dalloc(n), *rt = dalloc(n);
    for (size_t i = 0; i < n; i++) x[i] = -103.0f + 191.7f * (float)i / (float)n;   // [-103, 88.7)
    for (size_t i = 0; i < n; i++) {   // a vectorisable loop: exercises the simd clones
        e[i] = sm_expf(x[i]);
        th[i] = sm_tanhf(x[i] * 0.1f);
    }
    for (size_t i = 0; i < n; i++) {
        re[i] = exp((double)x[i]);
        rt[i] = tanh((double)(x[i] * 0.1f));
    }
    // within 2 ulp: 2 ulp <= 2 eps |r| for normal results; below FLT_MIN an ulp is the
    // smallest subnormal 2^-149 (atol)
    CU_ASSERT(close_d("sm_expf on [-103, 88.7]", e, re, n, 2 * 0x1p-149, 2 * EPS));
    CU_ASSERT(close_d("sm_tanhf on [-10.3, 8.87]", th, rt, n, 0.0, 2 * EPS));
    for (size_t i = 0; i < n; i++) {   // small arguments, where tanh x ~ x
        x[i] = ldexpf((float)i / (float)n - 0.5f, -(int)(i % 30));
        th[i] = sm_tanhf(x[i]);
        rt[i] = tanh((double)x[i]);
    }
    CU_ASSERT(close_d("sm_tanhf near 0", th, rt, n, 0.0, 2 * EPS));
    CU_ASSERT(sm_expf(0.0f) == 1.0f && sm_tanhf(0.0f) == 0.0f);
    CU_ASSERT(isinf(sm_expf(88.8f)) && isinf(sm_expf(1000.0f)) && isinf(sm_expf(INFINITY)));
    CU_ASSERT(sm_expf(-200.0f) == 0.0f && sm_expf(-INFINITY) == 0.0f);
    CU_ASSERT(isnan(sm_expf(NAN)) && isnan(sm_tanhf(NAN)));
    CU_ASSERT(sm_tanhf(INFINITY) == 1.0f && sm_tanhf(-INFINITY) == -1.0f && sm_tanhf(30.0f) == 1.0f);
    free(x), free(e), free(th), free(re), free(rt);
}

#ifdef KERNELS_X86
KERNELS_TGT_512 static void exp512_all(float *e, const float *x, size_t n) {   // n a multiple of 16
    for (size_t i = 0; i < n; i += 16) _mm512_storeu_ps(e + i, sm_exp512(_mm512_loadu_ps(x + i)));
}
KERNELS_TGT_512 static void exp512_nonpos_all(float *e, const float *x, size_t n) {
    for (size_t i = 0; i < n; i += 16) _mm512_storeu_ps(e + i, sm_exp512_nonpos(_mm512_loadu_ps(x + i)));
}
#endif

// sm_exp512 (the exp of the AVX-512 kernels): the accuracy and special values of sm_expf (the
// table runs it only where the CPU has AVX-512F)
static void vmath_avx512_case(void) {
#ifdef KERNELS_X86
    size_t n = 1 << 20;
    float *x = falloc(n), *e = falloc(n);
    double *re = dalloc(n);
    for (size_t i = 0; i < n; i++) x[i] = -103.0f + 191.7f * (float)i / (float)n;   // [-103, 88.7)
    exp512_all(e, x, n);
    for (size_t i = 0; i < n; i++) re[i] = exp((double)x[i]);
    // the bounds of sm_expf (test_vmath)
    CU_ASSERT(close_d("sm_exp512 on [-103, 88.7]", e, re, n, 2 * 0x1p-149, 2 * EPS));
    for (size_t i = 0; i < n; i++) x[i] = -103.0f * (float)i / (float)n;   // [-103, 0]
    exp512_nonpos_all(e, x, n);
    for (size_t i = 0; i < n; i++) re[i] = exp((double)x[i]);
    CU_ASSERT(close_d("sm_exp512_nonpos on [-103, 0]", e, re, n, 2 * 0x1p-149, 2 * EPS));
    const float sx[16] = {0.0f, 88.8f, 1000.0f, INFINITY, -200.0f, -INFINITY, NAN, -NAN,
                          88.72f, -104.0f, -87.5f, 1.0f, -1.0f, 1e-30f, -1e30f, 1e30f};
    float se[16];
    exp512_all(se, sx, 16);
    CU_ASSERT(se[0] == 1.0f && isinf(se[1]) && isinf(se[2]) && isinf(se[3]));
    CU_ASSERT(se[4] == 0.0f && se[5] == 0.0f && isnan(se[6]) && isnan(se[7]));
    CU_ASSERT(isfinite(se[8]) && se[9] == 0.0f && se[13] == 1.0f && se[14] == 0.0f && isinf(se[15]));
    CU_ASSERT(fabs(se[10] - exp(-87.5)) <= 2 * EPS * exp(-87.5) && fabs(se[11] - exp(1.0)) <= 2 * EPS * exp(1.0));
    const float nx[16] = {0.0f, -0.0f, -INFINITY, NAN, -200.0f, -1e30f, -104.0f, -0.5f};
    exp512_nonpos_all(se, nx, 16);
    CU_ASSERT(se[0] == 1.0f && se[1] == 1.0f && se[2] == 0.0f && isnan(se[3]) && se[4] == 0.0f && se[5] == 0.0f);
    CU_ASSERT(se[6] == 0.0f && fabs(se[7] - exp(-0.5)) <= 2 * EPS * exp(-0.5));
    free(x), free(e), free(re);
#endif
}

// ---------------------------------------------------------------------------------------------
// AdamW, sum_squares

static void adamw_case(void) {
    size_t n = 1003;
    float lr = 1e-3f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f;
    float *p = falloc(n), *m = falloc(n), *v = falloc(n), *gr = falloc(n);
    fill_uniform(p, n, -1, 1);
    fill_const(m, n, 0.0f);
    fill_const(v, n, 0.0f);
    double *rp = to_double(p, n), *rm = dalloc(n), *rv = dalloc(n);
    for (size_t i = 0; i < n; i++) rm[i] = rv[i] = 0.0;
    for (int t = 1; t <= 3; t++) {
        fill_uniform(gr, n, -1, 1);
        adamw_update(p, gr, m, v, n, lr, b1, b2, eps, wd, 1.0f, t);
        double bc1 = 1.0 - pow(b1, t), bc2 = 1.0 - pow(b2, t);
        for (size_t i = 0; i < n; i++) {
            double g = gr[i];
            rm[i] = b1 * rm[i] + (1.0 - b1) * g;
            rv[i] = b2 * rv[i] + (1.0 - b2) * g * g;
            double mhat = rm[i] / bc1, vhat = rv[i] / bc2;
            rp[i] -= lr * (mhat / (sqrt(vhat) + eps) + wd * rp[i]);
        }
        char what[64];
        // m = b1 m + (1-b1) g: each step adds a few roundings of terms <= max|g| = 1, and b1 m
        // and (1-b1) g can cancel, so the error is absolute: <= ~2 eps per step
        snprintf(what, sizeof what, "adamw m (t=%d)", t);
        CU_ASSERT(close_d(what, m, rm, n, 2 * t * EPS, EPS));
        // v sums positive terms (no cancellation): relative error <= ~4 eps per step
        snprintf(what, sizeof what, "adamw v (t=%d)", t);
        CU_ASSERT(close_d(what, v, rv, n, 0.0, 4 * t * EPS));
        // params: stored in float each step (t half-ulp roundings of |p| <= 1, in rtol), and each
        // update lr * (mhat/(sqrt vhat + eps) + wd p) has |mhat/sqrt vhat| <= ~3 with relative
        // error ~ a few eps: atol in units of lr
        snprintf(what, sizeof what, "adamw params (t=%d)", t);
        CU_ASSERT(close_d(what, p, rp, n, t * lr * 32 * EPS, t * EPS));
    }
    free(p), free(m), free(v), free(gr), free(rp), free(rm), free(rv);
}

// Flush-to-zero and denormals-are-zero, in the calling thread and in a wider team opened after
// the call: a product below FLT_MIN is 0, a denormal operand reads as 0, and AdamW's moments of
// a parameter with no gradient go to 0 instead of through the denormal range; off restores IEEE.
static int denormal_probe(void) {   // 1 when both modes act in this thread
    volatile float tiny = 1e-20f, den = 1e-40f;   // tiny^2 = 1e-40 is a denormal result
    float sq = tiny * tiny, twice = den * 2.0f;
    return sq == 0.0f && twice == 0.0f;
}

static void flush_denormals_case(void) {
    if (!kernels_flush_denormals(1)) {   // not an x86 CPU: nothing to check
        CU_ASSERT(!kernels_denormals_flushed());
        return;
    }
    CU_ASSERT(kernels_denormals_flushed());
    CU_ASSERT(denormal_probe());
    int nt = omp_get_max_threads() + 2, bad = 0;   // more threads than the pool had
#pragma omp parallel num_threads(nt) reduction(+ : bad)
    bad += !denormal_probe() || !kernels_denormals_flushed();
    CU_ASSERT_EQUAL(bad, 0);

    size_t n = 40;
    float *p = falloc(n), *m = falloc(n), *v = falloc(n), *gr = falloc(n);
    fill_const(p, n, 0.5f);
    fill_const(m, n, 1e-39f);   // denormal moments, no gradient
    fill_const(v, n, 1e-39f);
    fill_const(gr, n, 0.0f);
    adamw_update(p, gr, m, v, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.0f, 1.0f, 10);
    for (size_t i = 0; i < n; i++) CU_ASSERT(m[i] == 0.0f && v[i] == 0.0f && p[i] == 0.5f);

    kernels_flush_denormals(0);
    CU_ASSERT(!kernels_denormals_flushed());
    int flushed = 0;
#pragma omp parallel num_threads(nt) reduction(+ : flushed)
    flushed += denormal_probe();
    CU_ASSERT_EQUAL(flushed, 0);
    fill_const(m, n, 1e-39f);
    fill_const(v, n, 1e-39f);
    adamw_update(p, gr, m, v, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.0f, 1.0f, 10);
    for (size_t i = 0; i < n; i++) CU_ASSERT(m[i] > 0.0f && m[i] < FLT_MIN);   // IEEE: 0.9 * 1e-39
    free(p), free(m), free(v), free(gr);
}

static void sum_squares_case(size_t n) {
    float *g = falloc(n);
    fill_uniform(g, n, -2, 2);
    double ref = 0.0;
    for (size_t i = 0; i < n; i++) ref += (double)g[i] * g[i];
    double got2 = sum_squares(g, n);
    omp_set_num_threads(1);
    double got1 = sum_squares(g, n);
    omp_set_num_threads(2);
    // squares of floats are exact in double; a double sum of n positive terms in any order
    // is within n u_double of the truth, twice (ours and the reference's)
    CU_ASSERT(fabs(got2 - ref) <= 2.0 * n * DBL_EPSILON * ref);
    CU_ASSERT(memcmp(&got1, &got2, sizeof got1) == 0);   // bit for bit, 1 vs 2 threads
    free(g);
}

// ---------------------------------------------------------------------------------------------

// matmul_forward at N = 1 (a decode step: the one-row form, nothing packed) against the rows of
// the same product at N rows (a prefill, packed): bit for bit, with and without bias and GELU, at
// 1 and 2 threads; and against the double reference with matmul_forward's bound.
static void matmul_row_case(int N, int C, int OC) {
    size_t ni = (size_t)N * C, nw = (size_t)OC * C, no = (size_t)N * OC;
    float *inp = falloc(ni), *w = falloc(nw), *b = falloc(OC), *full = falloc(no);
    float *one = falloc(OC), *gone = falloc(OC);
    fill_uniform(inp, ni, -1, 1);
    fill_uniform(w, nw, -1, 1);
    fill_uniform(b, OC, -1, 1);
    char what[256];
    for (int with_bias = 0; with_bias < 2; with_bias++) {
        const float *bias = with_bias ? b : NULL;
        matmul_forward(full, inp, w, bias, N, C, OC);
        int ok = 1, gok = 1;
        for (int r = 0; r < N; r++) {
            for (int nt = 1; nt <= 2; nt++) {
                omp_set_num_threads(nt);
                fill_const(one, OC, NAN);
                matmul_forward(one, inp + (size_t)r * C, w, bias, 1, C, OC);
                ok &= memcmp(one, full + (size_t)r * OC, (size_t)OC * sizeof(float)) == 0;
            }
            omp_set_num_threads(2);
        }
        snprintf(what, sizeof what, "matmul_forward N=1 vs rows of N=%d (C=%d OC=%d bias=%d, %s)", N, C, OC, with_bias, g_path);
        if (!ok) fprintf(stderr, "%s: differ\n", what);
        CU_ASSERT(ok);
        // the fused GELU: the one-row pre-activation and GELU equal the N-row product's
        float *pre = falloc(no), *act = falloc(no);
        matmul_forward_gelu(pre, act, inp, w, bias, N, C, OC);
        for (int r = 0; r < N; r++) {
            matmul_forward_gelu(one, gone, inp + (size_t)r * C, w, bias, 1, C, OC);
            gok &= memcmp(one, pre + (size_t)r * OC, (size_t)OC * sizeof(float)) == 0;
            gok &= memcmp(gone, act + (size_t)r * OC, (size_t)OC * sizeof(float)) == 0;
        }
        CU_ASSERT(gok);
        // against the double reference: the bound of matmul_case
        double *ri = to_double(inp, (size_t)C), *rw = to_double(w, nw), *rb = to_double(b, OC), *ro = dalloc(OC);
        ref_matmul(ro, ri, rw, with_bias ? rb : NULL, 1, C, OC);
        matmul_forward(one, inp, w, bias, 1, C, OC);
        snprintf(what, sizeof what, "matmul_forward N=1 C=%d OC=%d bias=%d (%s)", C, OC, with_bias, g_path);
        CU_ASSERT(close_d(what, one, ro, OC, (C + 1) * EPS * sqrt(C + 1.0), EPS));
        free(pre), free(act), free(ri), free(rw), free(rb), free(ro);
    }
    free(inp), free(w), free(b), free(full), free(one), free(gone);
}

// Weights packed once (matmul_pack_weight): the packed forward has the bits of matmul_forward (and
// of matmul_forward_gelu) at N rows, at each row alone (the decode step's panel-reading row form),
// at 1 and 2 threads, and as the union of its parts at 1 to 3 parts; and the double reference's bound.
static void matmul_packed_case(int N, int C, int OC) {
    size_t ni = (size_t)N * C, nw = (size_t)OC * C, no = (size_t)N * OC;
    float *inp = falloc(ni), *w = falloc(nw), *b = falloc(OC), *full = falloc(no), *got = falloc(no);
    float *pre = falloc(no), *act = falloc(no), *gact = falloc(no);
    fill_uniform(inp, ni, -1, 1);
    fill_uniform(w, nw, -1, 1);
    fill_uniform(b, OC, -1, 1);
    const size_t bytes = matmul_packed_bytes(OC, C);
    CU_ASSERT(bytes == (size_t)((OC + matmul_packed_width() - 1) / matmul_packed_width()) * matmul_packed_width() * C * 4);
    void *wp = aligned_alloc(64, (bytes + 63) / 64 * 64);   // 64-byte aligned, as the contract asks
    CU_ASSERT_FATAL(wp != NULL);
    memset(wp, 0xff, bytes);   // NaN everywhere: the padding must be written too
    matmul_pack_weight(wp, w, OC, C);
    const int width = matmul_packed_width();
    char what[256];
    for (int with_bias = 0; with_bias < 2; with_bias++) {
        const float *bias = with_bias ? b : NULL;
        matmul_forward(full, inp, w, bias, N, C, OC);
        int ok = 1;
        for (int nt = 1; nt <= 2; nt++) {   // all N rows at once
            omp_set_num_threads(nt);
            fill_const(got, no, NAN);
            matmul_forward_packed(got, NULL, inp, wp, width, bias, N, C, OC);
            ok &= memcmp(got, full, no * sizeof(float)) == 0;
        }
        omp_set_num_threads(2);
        for (int r = 0; r < N; r++) {   // each row alone
            fill_const(got, OC, NAN);
            matmul_forward_packed(got, NULL, inp + (size_t)r * C, wp, width, bias, 1, C, OC);
            ok &= memcmp(got, full + (size_t)r * OC, (size_t)OC * sizeof(float)) == 0;
        }
        for (int parts = 1; parts <= 3; parts++) {   // the parts' union, for N rows and for one
            for (int rows = 1; rows <= N; rows += N - 1 > 0 ? N - 1 : 1) {
                fill_const(got, no, NAN);
                for (int part = 0; part < parts; part++)
                    matmul_forward_packed_part(got, NULL, inp, wp, width, bias, rows, C, OC, part, parts);
                ok &= memcmp(got, full, (size_t)rows * OC * sizeof(float)) == 0;
                if (N == 1) break;
            }
        }
        snprintf(what, sizeof what, "matmul_forward_packed vs matmul_forward (N=%d C=%d OC=%d bias=%d, %s)", N, C, OC,
                 with_bias, g_path);
        if (!ok) fprintf(stderr, "%s: differ\n", what);
        CU_ASSERT(ok);
        // the fused GELU
        matmul_forward_gelu(pre, act, inp, w, bias, N, C, OC);
        fill_const(got, no, NAN);
        matmul_forward_packed(got, gact, inp, wp, width, bias, N, C, OC);
        int gok = memcmp(got, pre, no * sizeof(float)) == 0 && memcmp(gact, act, no * sizeof(float)) == 0;
        fill_const(got, OC, NAN);
        matmul_forward_packed(got, gact, inp, wp, width, bias, 1, C, OC);
        gok &= memcmp(got, pre, (size_t)OC * sizeof(float)) == 0 && memcmp(gact, act, (size_t)OC * sizeof(float)) == 0;
        CU_ASSERT(gok);
        // against the double reference: the bound of matmul_case
        double *ri = to_double(inp, ni), *rw = to_double(w, nw), *rb = to_double(b, OC), *ro = dalloc(no);
        ref_matmul(ro, ri, rw, with_bias ? rb : NULL, N, C, OC);
        matmul_forward_packed(got, NULL, inp, wp, width, bias, N, C, OC);
        snprintf(what, sizeof what, "matmul_forward_packed N=%d C=%d OC=%d bias=%d (%s)", N, C, OC, with_bias, g_path);
        CU_ASSERT(close_d(what, got, ro, no, (C + 1) * EPS * sqrt(C + 1.0), EPS));
        free(ri), free(rw), free(rb), free(ro);
    }
    free(inp), free(w), free(b), free(full), free(got), free(pre), free(act), free(gact), free(wp);
}

// INT8 weights packed once (matmul_q8_pack_weight), where the path has a packed form: the packed
// forward has the bits of matmul_forward_q8 (and _gelu) at N rows, at each row alone (the decode
// step's panel-reading row form), at 1 and 2 threads, and as the union of its parts; elsewhere
// matmul_q8_packed_bytes says 0 (the plain forms serve).
static void q8_packed_case(int N, int C, int OC, int group) {
    size_t ni = (size_t)N * C, nw = (size_t)OC * C, no = (size_t)N * OC;
    float *x = falloc(ni), *w = falloc(nw), *b = falloc(OC), *full = falloc(no), *got = falloc(no);
    float *pre = falloc(no), *act = falloc(no), *gact = falloc(no);
    fill_uniform(x, ni, -2, 2);
    fill_uniform(w, nw, -0.5f, 0.5f);
    fill_uniform(b, OC, -1, 1);
    int8_t *wq = xmalloc(nw);
    float *sw = falloc(nw / (size_t)group);
    q8_quantize(wq, sw, w, OC, C, group);
    const size_t bytes = matmul_q8_packed_bytes(OC, C, group);
    char what[256];
    snprintf(what, sizeof what, "q8 packed N=%d C=%d OC=%d group=%d (%s)", N, C, OC, group, g_path);
    if (kernels_pick(KERNELS_OP_GEMM_Q8) != KERNELS_ISA_AVX512_VNNI) {
        CU_ASSERT(bytes == 0);   // this path keeps the plain forms
    } else {
        CU_ASSERT_FATAL(bytes > 0);
        void *wp = aligned_alloc(64, (bytes + 63) / 64 * 64);
        CU_ASSERT_FATAL(wp != NULL);
        memset(wp, 0x5a, bytes);
        matmul_q8_pack_weight(wp, wq, sw, OC, C, group);
        for (int with_bias = 0; with_bias < 2; with_bias++) {
            const float *bias = with_bias ? b : NULL;
            matmul_forward_q8(full, x, wq, sw, bias, N, C, OC, group);
            int ok = 1;
            for (int nt = 1; nt <= 2; nt++) {
                omp_set_num_threads(nt);
                fill_const(got, no, NAN);
                matmul_forward_q8_packed(got, NULL, x, wp, bias, N, C, OC, group);
                ok &= memcmp(got, full, no * sizeof(float)) == 0;
            }
            omp_set_num_threads(2);
            for (int r = 0; r < N; r++) {
                fill_const(got, OC, NAN);
                matmul_forward_q8_packed(got, NULL, x + (size_t)r * C, wp, bias, 1, C, OC, group);
                ok &= memcmp(got, full + (size_t)r * OC, (size_t)OC * sizeof(float)) == 0;
            }
            for (int parts = 1; parts <= 3; parts++) {
                fill_const(got, OC, NAN);
                for (int part = 0; part < parts; part++)
                    matmul_forward_q8_packed_part(got, NULL, x, wp, bias, 1, C, OC, group, part, parts);
                ok &= memcmp(got, full, (size_t)OC * sizeof(float)) == 0;
            }
            if (!ok) fprintf(stderr, "%s bias=%d: differs from matmul_forward_q8\n", what, with_bias);
            CU_ASSERT(ok);
            matmul_forward_q8_gelu(pre, act, x, wq, sw, bias, N, C, OC, group);
            matmul_forward_q8_packed(got, gact, x, wp, bias, N, C, OC, group);
            CU_ASSERT(memcmp(got, pre, no * sizeof(float)) == 0 && memcmp(gact, act, no * sizeof(float)) == 0);
        }
        free(wp);
    }
    free(x), free(w), free(b), free(full), free(got), free(pre), free(act), free(gact), free(wq), free(sw);
}

// The dispatch (cpu.c): features against the kernel's own view (/proc/cpuinfo, which lists what
// the CPU reports and the kernel enables) and GCC's __builtin_cpu_supports; masks and levels.
static int cpuinfo_has(const char *flags, const char *name) {   // name as a whole word of the flags line
    size_t n = strlen(name);
    for (const char *p = flags; (p = strstr(p, name)) != NULL; p += n)
        if ((p == flags || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\n' || p[n] == '\0')) return 1;
    return 0;
}

static void cpu_case(void) {
    unsigned have = kernels_cpu_detect();
    CU_ASSERT((have & ~(unsigned)KERNELS_CPU_ALL) == 0);
    CU_ASSERT(kernels_cpu_detect() == have);   // read once, the same every time
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        static char line[8192];
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "flags", 5)) break;
        fclose(f);
        static const struct {
            unsigned bit;
            const char *flag;
        } map[] = {{KERNELS_CPU_AVX2, "avx2"}, {KERNELS_CPU_FMA, "fma"}, {KERNELS_CPU_AVX512F, "avx512f"},
                   {KERNELS_CPU_AVX512BW, "avx512bw"}, {KERNELS_CPU_AVX512VL, "avx512vl"},
                   {KERNELS_CPU_AVX512_BF16, "avx512_bf16"}, {KERNELS_CPU_AVX512_VNNI, "avx512_vnni"},
                   {KERNELS_CPU_AVX_VNNI, "avx_vnni"}, {KERNELS_CPU_AMX_BF16, "amx_bf16"}, {KERNELS_CPU_AMX_INT8, "amx_int8"}};
        for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
            int ours = (have & map[i].bit) != 0, linux_says = cpuinfo_has(line, map[i].flag);
            // AMX also needs the process's permission (arch_prctl), which cpuinfo does not show
            int amx = map[i].bit == KERNELS_CPU_AMX_BF16 || map[i].bit == KERNELS_CPU_AMX_INT8;
            if (amx ? (ours && !linux_says) : ours != linux_says)
                fprintf(stderr, "cpu: %s: cpuid says %d, /proc/cpuinfo says %d\n", map[i].flag, ours, linux_says);
            CU_ASSERT(amx ? (!ours || linux_says) : ours == linux_says);
        }
    }
#ifdef KERNELS_X86
    __builtin_cpu_init();
    CU_ASSERT(!!(have & KERNELS_CPU_AVX2) == !!__builtin_cpu_supports("avx2"));
    CU_ASSERT(!!(have & KERNELS_CPU_FMA) == !!__builtin_cpu_supports("fma"));
    CU_ASSERT(!!(have & KERNELS_CPU_AVX512F) == !!__builtin_cpu_supports("avx512f"));
    CU_ASSERT(!!(have & KERNELS_CPU_AVX512BW) == !!__builtin_cpu_supports("avx512bw"));
    CU_ASSERT(!!(have & KERNELS_CPU_AVX512_VNNI) == !!__builtin_cpu_supports("avx512vnni"));
#endif
    // allow: what kernels may use is the CPU's features within the mask
    CU_ASSERT(kernels_cpu_allow(0) == 0 && kernels_cpu_features() == 0);
    for (int op = 0; op < KERNELS_OP_COUNT; op++) CU_ASSERT(!strcmp(kernels_path((kernels_op)op), "c"));
    const kernels_cpu_level *lv;
    int nl = kernels_cpu_levels(&lv);
    CU_ASSERT(nl >= 6 && !strcmp(lv[0].name, "scalar") && lv[0].mask == 0);
    for (int l = 0; l < nl; l++) {
        CU_ASSERT(kernels_cpu_level_find(lv[l].name) == &lv[l]);
        CU_ASSERT(kernels_cpu_allow(lv[l].mask) == (lv[l].mask & have));
        CU_ASSERT(l == 0 || (lv[l].mask & lv[l - 1].mask) == lv[l - 1].mask || !strcmp(lv[l].name, "avx512"));
        // every level has an fp32 GEMM row on the path it picks
        CU_ASSERT(gemm_ukernel_pick(KERNELS_OP_GEMM_F32, KERNELS_F32, KERNELS_F32) != NULL);
    }
    CU_ASSERT(kernels_cpu_level_find("avx9000") == NULL);
    CU_ASSERT(kernels_cpu_allow(KERNELS_CPU_ALL) == have);
    char buf[256];
    CU_ASSERT(kernels_cpu_describe(buf, sizeof buf, 0) == 4 && !strcmp(buf, "none"));
    CU_ASSERT(kernels_cpu_describe(buf, sizeof buf, KERNELS_CPU_AVX2 | KERNELS_CPU_AVX512_VNNI) > 0 &&
              !strcmp(buf, "avx2 avx512_vnni"));
    CU_ASSERT(kernels_cpu_describe(buf, 6, KERNELS_CPU_AVX2 | KERNELS_CPU_FMA) == -1 && strlen(buf) < 6);
    for (int i = 0; i < KERNELS_CPU_N_FEATURES; i++)
        for (int j = 0; j < i; j++) CU_ASSERT(strcmp(kernels_cpu_feature_name(1u << i), kernels_cpu_feature_name(1u << j)));
}

// ---------------------------------------------------------------------------------------------
// INT8: quantization, and the q8 products against an integer reference

// q8_quantize / q8_dequantize: with s a group's scale (amax/127), q = round(w * (127/amax)) has
// |q - w/s| <= 1/2 + ~254 u (the two float roundings of 127/amax and of the product, each <= u
// relative, on |w/s| <= 127), and the dequantized q s (one more rounding of s, one of the product)
// is within s (1/2 + 512 u) = s (1/2 + 256 EPS) of w. Also: q in [-127, 127], the group's largest
// |w| maps to +-127 exactly, scale = amax/127 in float, an all-zero group gives scale 0 and q = 0, a
// NaN gives a NaN scale, and dequantize is q * scale exactly.
static void q8_quant_case(int rows, int cols, int group) {
    size_t n = (size_t)rows * cols;
    int G = (cols + group - 1) / group;
    float *w = falloc(n), *sc = falloc((size_t)rows * G), *back = falloc(n);
    int8_t *q = xmalloc(n);
    fill_uniform(w, n, -1, 1);
    for (size_t i = 0; i < n; i++) w[i] = ldexpf(w[i], (int)(i / 97 % 9) - 4);   // magnitudes 2^-4 .. 2^4
    if (rows > 1)
        for (int k = 0; k < cols; k++) w[(size_t)1 * cols + k] = 0.0f;   // row 1: all zero
    if (rows > 2) w[(size_t)2 * cols] = 1e-30f;                          // tiny values: scale ~1e-32
    q8_quantize(q, sc, w, rows, cols, group);
    q8_dequantize(back, q, sc, rows, cols, group);
    int ok_bound = 1, ok_range = 1, ok_max = 1, ok_scale = 1, ok_deq = 1;
    double worst = 0.0;
    for (int r = 0; r < rows; r++)
        for (int g = 0; g < G; g++) {
            int k0 = g * group, len = cols - k0 < group ? cols - k0 : group;
            const float *wg = w + (size_t)r * cols + k0;
            float amax = 0.0f;
            for (int k = 0; k < len; k++) amax = fmaxf(amax, fabsf(wg[k]));
            float s = sc[(size_t)r * G + g];
            ok_scale &= s == amax / 127.0f;
            for (int k = 0; k < len; k++) {
                size_t i = (size_t)r * cols + k0 + k;
                ok_range &= q[i] != -128;   // int8 holds [-128, 127]: -128 must never appear
                if (fabsf(wg[k]) == amax && amax > 0.0f) ok_max &= q[i] == (wg[k] > 0 ? 127 : -127);
                if (amax == 0.0f) ok_range &= q[i] == 0;
                ok_deq &= back[i] == (float)q[i] * s;
                double err = fabs((double)back[i] - wg[k]), bound = (double)s * (0.5 + 256 * EPS);
                ok_bound &= err <= bound;
                if (s > 0 && err / s > worst) worst = err / s;
            }
        }
    if (getenv("SM_TEST_VERBOSE")) printf("\n  q8 quantize %dx%d/%d: max |err|/scale %.6f", rows, cols, group, worst);
    CU_ASSERT(ok_bound && ok_range && ok_max && ok_scale && ok_deq);
    // a NaN poisons its group's scale (and only that group's)
    w[0] = NAN;
    q8_quantize(q, sc, w, rows, cols, group);
    CU_ASSERT(isnan(sc[0]) && (G < 2 || !isnan(sc[1])));
    free(w), free(sc), free(back), free(q);
}

// The q8 product, checked three ways, on every q8 path the CPU has:
//  1. exactly, against the documented arithmetic: the activations quantized by q8_quantize (the
//     same per-group rule), each group's integer sum of xq wq by a plain int64 loop, and the chain
//     out = bias, then fmaf(isum, sx * sw, out) per group in order. Bit equality: any integer sum
//     off by one would change the float result;
//  2. against the true product of the unquantized inputs (double), within the bound the scales
//     imply: with h = 1/2 + 256 EPS (q8_quant_case), |x w - (sx xq)(sw wq)| <= |x| sw h + |w| sx h +
//     sx sw h^2 per product, plus the float chain's roundings, (G + 1) EPS sum_g |sx sw isum_g|;
//  3. N = 1 (the one-row form) against the rows of the N-row product, 1 vs 2 threads, and the fused
//     GELU against matmul_forward_q8 + gelu_forward: bit for bit.
// kind 0: uniform random inputs; 1: integers with each group's |max| = 127 (scales exactly 1: the
// result is the integer sum itself); 2: as 1 but the weights' groups scaled by 2^(g%4) (exact
// power-of-two scales); 3: w all +127, x all +127 (even rows) or -127 (odd rows): every product
// +-16129, the largest pair sums (+-32258), where vpmaddubsw would saturate on w + 128 (+-64770).
static void q8_matmul_case(int N, int C, int OC, int group, int kind) {
    size_t ni = (size_t)N * C, nw = (size_t)OC * C, no = (size_t)N * OC;
    int G = (C + group - 1) / group;
    float *x = falloc(ni), *w = falloc(nw), *b = falloc(OC);
    fill_uniform(b, OC, -1, 1);
    if (kind == 0) {
        fill_uniform(x, ni, -2, 2);
        fill_uniform(w, nw, -0.5f, 0.5f);
    } else {
        for (size_t i = 0; i < ni; i++) x[i] = kind == 3 ? 127.0f : (float)((int)sm_rng_below(&g_rng, 255) - 127);
        for (size_t i = 0; i < nw; i++) w[i] = kind == 3 ? 127.0f : (float)((int)sm_rng_below(&g_rng, 255) - 127);
        if (kind == 3)
            for (int r = 1; r < N; r += 2)
                for (int k = 0; k < C; k++) x[(size_t)r * C + k] = -127.0f;
        for (int r = 0; r < N; r++)   // each group's first element sets |max| = 127
            for (int g = 0; g < G; g++) x[(size_t)r * C + g * group] = kind == 3 && r % 2 ? -127.0f : 127.0f;
        for (int o = 0; o < OC; o++)
            for (int g = 0; g < G; g++) {
                w[(size_t)o * C + g * group] = 127.0f;
                if (kind == 2)
                    for (int k = g * group; k < C && k < (g + 1) * group; k++) w[(size_t)o * C + k] *= (float)(1 << (g % 4));
            }
    }
    int8_t *xq = xmalloc(ni), *wq = xmalloc(nw);
    float *sx = falloc((size_t)N * G), *sw = falloc((size_t)OC * G);
    q8_quantize(wq, sw, w, OC, C, group);
    q8_quantize(xq, sx, x, N, C, group);
    if (kind == 3) {   // the extremes reach the kernels as they are
        int all = 1;
        for (size_t i = 0; i < nw; i++) all &= wq[i] == 127;
        for (size_t i = 0; i < ni; i++) all &= xq[i] == (i / C % 2 ? -127 : 127);
        CU_ASSERT(all);
    }
    // the documented arithmetic, with integer sums by a plain loop
    float *ref = falloc(no);
    double *bound = dalloc(no), *truth = dalloc(no);
    int64_t max_isum = 0;
    for (int r = 0; r < N; r++)
        for (int o = 0; o < OC; o++) {
            float acc = b[o];
            double chain_abs = 0.0, qerr = 0.0, t = b[o];
            for (int g = 0; g < G; g++) {
                int64_t isum = 0;
                double h = 0.5 + 256 * EPS, sxg = sx[(size_t)r * G + g], swg = sw[(size_t)o * G + g];
                for (int k = g * group; k < C && k < (g + 1) * group; k++) {
                    isum += (int64_t)xq[(size_t)r * C + k] * wq[(size_t)o * C + k];
                    double xv = x[(size_t)r * C + k], wv = w[(size_t)o * C + k];
                    t += xv * wv;
                    qerr += fabs(xv) * swg * h + fabs(wv) * sxg * h + sxg * swg * h * h;
                }
                if (llabs(isum) > max_isum) max_isum = llabs(isum);
                acc = fmaf((float)isum, sx[(size_t)r * G + g] * sw[(size_t)o * G + g], acc);
                chain_abs += fabs((double)isum * sxg * swg);
            }
            ref[(size_t)r * OC + o] = acc;
            truth[(size_t)r * OC + o] = t;
            bound[(size_t)r * OC + o] = qerr + (G + 1) * EPS * (chain_abs + fabs(b[o]));
        }
    CU_ASSERT(max_isum < (1 << 24));   // so (float)isum is exact, as the kernels assume
    char what[256];
    for (int with_bias = 0; with_bias < 2; with_bias++) {
        const float *bias = with_bias ? b : NULL;
        float *out = falloc(no), *pre = falloc(no), *act = falloc(no), *act2 = falloc(no), *one = falloc(OC);
        fill_const(out, no, NAN);
        matmul_forward_q8(out, x, wq, sw, bias, N, C, OC, group);
        // 1. exact: with bias the reference chain starts at b; without, at 0 (rebuild that one)
        float *want = ref;
        float *nob = NULL;
        if (!with_bias) {
            nob = falloc(no);
            for (int r = 0; r < N; r++)
                for (int o = 0; o < OC; o++) {
                    float acc = 0.0f;
                    for (int g = 0; g < G; g++) {
                        int64_t isum = 0;
                        for (int k = g * group; k < C && k < (g + 1) * group; k++)
                            isum += (int64_t)xq[(size_t)r * C + k] * wq[(size_t)o * C + k];
                        acc = fmaf((float)isum, sx[(size_t)r * G + g] * sw[(size_t)o * G + g], acc);
                    }
                    nob[(size_t)r * OC + o] = acc;
                }
            want = nob;
        }
        snprintf(what, sizeof what, "matmul_forward_q8 N=%d C=%d OC=%d group=%d kind=%d bias=%d vs integer reference (%s)",
                 N, C, OC, group, kind, with_bias, g_path);
        CU_ASSERT(same_bits(what, out, want, no));
        if ((kind == 1 || kind == 3) && !with_bias) {   // scales 1: the result is the integer sum itself
            int ok = 1;
            for (int r = 0; r < N; r++)
                for (int o = 0; o < OC; o++) {
                    int64_t tot = 0;
                    for (int k = 0; k < C; k++) tot += (int64_t)xq[(size_t)r * C + k] * wq[(size_t)o * C + k];
                    ok &= llabs(tot) < (1 << 24) && out[(size_t)r * OC + o] == (float)tot;
                }
            CU_ASSERT(ok);
        }
        // 2. against the unquantized product, within the bound the scales imply
        if (with_bias) {
            snprintf(what, sizeof what, "matmul_forward_q8 N=%d C=%d OC=%d group=%d kind=%d vs float product (%s)", N, C,
                     OC, group, kind, g_path);
            int ok = 1;
            size_t worst_i = 0;
            double worst = 0.0;
            for (size_t i = 0; i < no; i++) {
                double used = fabs((double)out[i] - truth[i]) / bound[i];
                if (!(used <= 1.0)) ok = 0;
                if (used > worst || isnan(used)) worst = isnan(used) ? INFINITY : used, worst_i = i;
            }
            if (!ok) fprintf(stderr, "%s: [%zu] %.9g vs %.9g, %.3f of the bound\n", what, worst_i, (double)out[worst_i], truth[worst_i], worst);
            if (getenv("SM_TEST_VERBOSE")) printf("\n  %s: %.3f of the bound", what, worst);
            CU_ASSERT(ok);
        }
        // 3. one row at a time (the one-row form), at 1 and 2 threads; the fused GELU
        int rows_ok = 1;
        for (int r = 0; r < N; r++)
            for (int nt = 1; nt <= 2; nt++) {
                omp_set_num_threads(nt);
                fill_const(one, OC, NAN);
                matmul_forward_q8(one, x + (size_t)r * C, wq, sw, bias, 1, C, OC, group);
                rows_ok &= memcmp(one, out + (size_t)r * OC, (size_t)OC * sizeof(float)) == 0;
            }
        omp_set_num_threads(1);
        matmul_forward_q8(pre, x, wq, sw, bias, N, C, OC, group);
        omp_set_num_threads(2);
        rows_ok &= memcmp(pre, out, no * sizeof(float)) == 0;
        snprintf(what, sizeof what, "matmul_forward_q8 N=1 and 1 thread vs N=%d (C=%d OC=%d group=%d, %s)", N, C, OC, group, g_path);
        if (!rows_ok) fprintf(stderr, "%s: differ\n", what);
        CU_ASSERT(rows_ok);
        matmul_forward_q8_gelu(pre, act, x, wq, sw, bias, N, C, OC, group);
        gelu_forward(act2, out, no);
        CU_ASSERT(same_bits("matmul_forward_q8_gelu pre-activation", pre, out, no));
        CU_ASSERT(same_bits("matmul_forward_q8_gelu gelu", act, act2, no));
        free(out), free(pre), free(act), free(act2), free(one), free(nob);
    }
    free(x), free(w), free(b), free(xq), free(wq), free(sx), free(sw), free(ref), free(bound), free(truth);
}

// ---------------------------------------------------------------------------------------------
// bfloat16: conversion, the bf16 GEMM and linear layers, AdamW's bf16 copy

// The value of bf16 bits b as a double, b's magnitude only; 0x7F80 (the first past the largest
// finite) as 2^128, the value rounding compares against
static double bf16_mag(unsigned b) {
    b &= 0x7FFF;
    int e = (int)(b >> 7);
    return e == 0 ? 0.0 : ldexp(1.0 + (b & 0x7F) / 128.0, e - 127);
}

// The reference rounding, from the definition rather than the bits trick: of the two bf16 values
// around |x| (truncation and the next one up), the nearer in double arithmetic, the even one on a
// tie; NaN -> quiet NaN keeping the top bits; +-inf kept; zero and denormals -> signed zero.
static unsigned ref_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    unsigned sign = (u >> 16) & 0x8000u;
    if (isnan(x)) return (u >> 16) | 0x40u;
    if (isinf(x)) return u >> 16;
    if (fpclassify(x) == FP_ZERO || fpclassify(x) == FP_SUBNORMAL) return sign;
    unsigned lo = (u >> 16) & 0x7FFFu, hi = lo + 1;
    double ax = fabs((double)x), dlo = ax - bf16_mag(lo), dhi = bf16_mag(hi) - ax;
    unsigned r = dlo < dhi ? lo : dhi < dlo ? hi : (lo & 1u ? hi : lo);
    return sign | r;
}

// bf16_from_f32 (scalar), bf16_from_f32_array (on the path in use) and bf16_to_f32 against the
// reference: named cases (ties to even both ways, NaNs quiet and signalling of both signs, infs,
// denormals and zeros, the largest float rounding to inf, values just below a tie), every bf16
// value's exact round trip, and 2^20 random bit patterns (all classes).
static void bf16_convert_case(void) {
    static const struct {
        uint32_t in;
        unsigned want;
    } named[] = {
        {0x3F808000u, 0x3F80}, {0x3F818000u, 0x3F82}, {0xBF808000u, 0xBF80}, {0xBF818000u, 0xBF82},   // ties
        {0x3F807FFFu, 0x3F80}, {0x3F808001u, 0x3F81}, {0x3F80FFFFu, 0x3F81},                          // off ties
        {0x7FC00000u, 0x7FC0}, {0xFFC00001u, 0xFFC0}, {0x7F800001u, 0x7FC0}, {0xFF812345u, 0xFFC1},   // NaNs
        {0x7F800000u, 0x7F80}, {0xFF800000u, 0xFF80},                                                 // infs
        {0x00000001u, 0x0000}, {0x807FFFFFu, 0x8000}, {0x00400000u, 0x0000}, {0x80000000u, 0x8000},   // denormals
        {0x7F7FFFFFu, 0x7F80}, {0xFF7FFFFFu, 0xFF80}, {0x7F7F7FFFu, 0x7F7F}, {0x00800000u, 0x0080},   // extremes
    };
    int ok = 1;
    size_t n_named = sizeof named / sizeof named[0];
    float *x = falloc((size_t)1 << 20);
    uint16_t *h = xmalloc(((size_t)1 << 20) * sizeof(uint16_t));
    for (size_t i = 0; i < n_named; i++) memcpy(&x[i], &named[i].in, 4);
    bf16_from_f32_array(h, x, n_named);
    for (size_t i = 0; i < n_named; i++) {
        unsigned s = bf16_from_f32(x[i]), r = ref_bf16(x[i]);
        if (s != named[i].want || r != named[i].want || h[i] != named[i].want) {
            fprintf(stderr, "bf16 of 0x%08X: scalar 0x%04X, array 0x%04X, reference 0x%04X, expected 0x%04X (%s)\n",
                    named[i].in, s, h[i], r, named[i].want, g_path);
            ok = 0;
        }
    }
    // every bf16 value: exact as a float, and back to itself (NaNs: to their quiet form)
    for (unsigned b = 0; b < 65536; b++) {
        float f = bf16_to_f32((uint16_t)b);
        unsigned back = bf16_from_f32(f);
        int exp0 = (b & 0x7F80) == 0;
        unsigned want = isnan(f) ? (b | 0x40u) : exp0 ? (b & 0x8000u) : b;
        if (back != want) ok = 0;
    }
    // random bit patterns, through the array form (in two unaligned pieces: vector bodies and tails)
    size_t n = (size_t)1 << 20;
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)sm_rng_u64(&g_rng);
        if (i % 8 == 1) u &= 0x807FFFFFu;                 // denormals
        if (i % 8 == 2) u = (u & 0xFFFF0000u) | 0x8000u;   // ties
        if (i % 8 == 3) u |= 0x7F800000u;                  // infs and NaNs
        memcpy(&x[i], &u, 4);
    }
    bf16_from_f32_array(h, x, 37);
    bf16_from_f32_array(h + 37, x + 37, n - 37);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        if (h[i] != ref_bf16(x[i]) || bf16_from_f32(x[i]) != h[i]) bad++;
    if (bad) fprintf(stderr, "bf16 conversion: %zu of %zu random floats differ from the reference (%s)\n", bad, n, g_path);
    ok &= bad == 0;
    float *back = falloc(n);
    bf16_to_f32_array(back, h, n);
    bad = 0;
    for (size_t i = 0; i < n; i++) bad += memcmp(&back[i], &(float){bf16_to_f32(h[i])}, 4) != 0;
    ok &= bad == 0;
    CU_ASSERT(ok);
    free(x), free(h), free(back);
}

// Every element of got (M,N, stride ldg) against ref (double) within the fp32-accumulation bound of
// the bf16 GEMM (kernels.h): (K + 2) u bound_abs + 1e-30 (the absolute term: flushed underflows)
static int check_bf16_bound(const char *what, const float *got, int ldg, const double *ref, const double *bound_abs,
                            int M, int N, int K) {
    const double u = EPS / 2;
    int ok = 1;
    double worst = 0.0;
    size_t wi = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            size_t e = (size_t)i * N + j;
            double bound = (K + 2) * u * bound_abs[e] + 1e-30, err = fabs((double)got[(size_t)i * ldg + j] - ref[e]);
            double used = err / bound;
            if (!(used <= 1.0)) ok = 0;
            if (!(used <= worst)) worst = isnan(used) ? INFINITY : used, wi = e;
        }
    if (!ok)
        fprintf(stderr, "%s: [%zu] %.9g vs %.9g, %.3f of the bound\n", what, wi,
                (double)got[(wi / N) * (size_t)ldg + wi % N], ref[wi], worst);
    if (getenv("SM_TEST_VERBOSE")) printf("\n  %s: %.3f of the bound", what, worst);
    return ok;
}

// x rounded to bf16 by the reference rounding, as a double
static double rb(float x) {
    unsigned b = ref_bf16(x);
    return (b & 0x8000u ? -1.0 : 1.0) * bf16_mag(b);
}

// gemm_bf16 against the double sum of the bf16-rounded operands, within the bound above, with
// padded strides whose padding must stay unwritten; gemm_bf16_parallel bit for bit at 1, 2, 3 threads.
static void gemm_bf16_case(int ta, int tb, int M, int N, int K, float alpha, float beta) {
    int pad = 3;
    int a_rows = ta ? K : M, a_cols = ta ? M : K, b_rows = tb ? N : K, b_cols = tb ? K : N;
    int lda = a_cols + pad, ldb = b_cols + pad, ldc = N + pad;
    size_t na = (size_t)a_rows * lda, nb = (size_t)b_rows * ldb, nc = (size_t)M * ldc;
    float *A = falloc(na), *B = falloc(nb), *C = falloc(nc), *C0 = falloc(nc);
    fill_uniform(A, na, -1, 1);
    fill_uniform(B, nb, -1, 1);
    fill_uniform(C0, nc, -1, 1);
    if (beta == 0.0f) fill_const(C0, nc, NAN);   // beta = 0 must not read C
    for (int i = 0; i < M; i++)
        for (int j = N; j < ldc; j++) C0[(size_t)i * ldc + j] = 12345.0f;
    double *ref = dalloc((size_t)M * N), *abs_sum = dalloc((size_t)M * N);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0, sa = 0.0;
            for (int k = 0; k < K; k++) {
                double a = rb(ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]);
                double b = rb(tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]);
                s += a * b;
                sa += fabs(a * b);
            }
            double c = beta == 0.0f ? 0.0 : C0[(size_t)i * ldc + j];
            ref[(size_t)i * N + j] = alpha * s + beta * c;
            abs_sum[(size_t)i * N + j] = fabs(alpha) * sa + fabs(beta * c);
        }
    memcpy(C, C0, nc * sizeof(float));
    gemm_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    char what[256];
    snprintf(what, sizeof what, "gemm_bf16 ta=%d tb=%d %dx%dx%d a=%g b=%g (%s)", ta, tb, M, N, K, alpha, beta, g_path);
    CU_ASSERT(check_bf16_bound(what, C, ldc, ref, abs_sum, M, N, K));
    int pad_ok = 1;
    for (int i = 0; i < M; i++)
        for (int j = N; j < ldc; j++) pad_ok &= C[(size_t)i * ldc + j] == 12345.0f;
    CU_ASSERT(pad_ok);
    float *Cp = falloc(nc);
    for (int nt = 1; nt <= 3; nt++) {
        omp_set_num_threads(nt);
        memcpy(Cp, C0, nc * sizeof(float));
        gemm_bf16_parallel(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, Cp, ldc);
        snprintf(what, sizeof what, "gemm_bf16_parallel %d threads ta=%d tb=%d %dx%dx%d (%s)", nt, ta, tb, M, N, K, g_path);
        CU_ASSERT(same_bits(what, Cp, C, nc));
    }
    omp_set_num_threads(2);
    free(A), free(B), free(C), free(C0), free(Cp), free(ref), free(abs_sum);
}

// The linear layers with bf16 weights: forward (with and without bias), the fused GELU against
// forward + gelu_forward (bit for bit), backward's dinp, dweight (written, then accumulated) and
// dbias against double sums of the bf16-rounded operands, at 1 and 2 threads bit for bit.
static void matmul_bf16_case(int N, int C, int OC) {
    size_t ni = (size_t)N * C, nw = (size_t)OC * C, no = (size_t)N * OC;
    float *x = falloc(ni), *wf = falloc(nw), *b = falloc(OC), *dout = falloc(no);
    fill_uniform(x, ni, -1, 1);
    fill_uniform(wf, nw, -0.5f, 0.5f);
    fill_uniform(b, OC, -1, 1);
    fill_uniform(dout, no, -1, 1);
    uint16_t *w = xmalloc(nw * sizeof(uint16_t));
    for (size_t i = 0; i < nw; i++) w[i] = (uint16_t)ref_bf16(wf[i]);
    double *ref = dalloc(no), *abs_sum = dalloc(no);
    char what[256];
    // forward
    for (int r = 0; r < N; r++)
        for (int o = 0; o < OC; o++) {
            double s = b[o], sa = fabs(b[o]);
            for (int k = 0; k < C; k++) {
                double p = rb(x[(size_t)r * C + k]) * bf16_to_f32(w[(size_t)o * C + k]);
                s += p;
                sa += fabs(p);
            }
            ref[(size_t)r * OC + o] = s, abs_sum[(size_t)r * OC + o] = sa;
        }
    float *out = falloc(no), *out2 = falloc(no), *act = falloc(no), *act2 = falloc(no);
    fill_const(out, no, NAN);
    matmul_forward_bf16(out, x, w, b, N, C, OC);
    snprintf(what, sizeof what, "matmul_forward_bf16 N=%d C=%d OC=%d (%s)", N, C, OC, g_path);
    CU_ASSERT(check_bf16_bound(what, out, OC, ref, abs_sum, N, OC, C));
    omp_set_num_threads(1);
    matmul_forward_bf16_gelu(out2, act, x, w, b, N, C, OC);
    omp_set_num_threads(2);
    gelu_forward(act2, out, no);
    CU_ASSERT(same_bits("matmul_forward_bf16_gelu pre-activation (1 thread vs 2)", out2, out, no));
    CU_ASSERT(same_bits("matmul_forward_bf16_gelu gelu", act, act2, no));
    matmul_forward_bf16(out2, x, w, NULL, N, C, OC);   // without bias: out - b, within the same bound
    for (size_t i = 0; i < no; i++) ref[i] -= b[i % OC], abs_sum[i] -= fabs(b[i % OC]);
    CU_ASSERT(check_bf16_bound("matmul_forward_bf16 without bias", out2, OC, ref, abs_sum, N, OC, C));
    // backward: dinp = dout W, dweight = dout^T x (then + the same again), dbias = colsum(dout)
    float *dinp = falloc(ni), *dw = falloc(nw), *db = falloc(OC), *dw1 = falloc(nw);
    double *rdi = dalloc(ni), *adi = dalloc(ni), *rdw = dalloc(nw), *adw = dalloc(nw);
    for (int r = 0; r < N; r++)
        for (int k = 0; k < C; k++) {
            double s = 0, sa = 0;
            for (int o = 0; o < OC; o++) {
                double p = rb(dout[(size_t)r * OC + o]) * bf16_to_f32(w[(size_t)o * C + k]);
                s += p, sa += fabs(p);
            }
            rdi[(size_t)r * C + k] = s, adi[(size_t)r * C + k] = sa;
        }
    for (int o = 0; o < OC; o++)
        for (int k = 0; k < C; k++) {
            double s = 0, sa = 0;
            for (int r = 0; r < N; r++) {
                double p = rb(dout[(size_t)r * OC + o]) * rb(x[(size_t)r * C + k]);
                s += p, sa += fabs(p);
            }
            rdw[(size_t)o * C + k] = s, adw[(size_t)o * C + k] = sa;
        }
    fill_const(dinp, ni, NAN);
    fill_const(dw, nw, NAN);
    fill_const(db, OC, NAN);
    matmul_backward_bf16(dinp, dw, db, dout, x, w, N, C, OC, 0);
    snprintf(what, sizeof what, "matmul_backward_bf16 dinp N=%d C=%d OC=%d (%s)", N, C, OC, g_path);
    CU_ASSERT(check_bf16_bound(what, dinp, C, rdi, adi, N, C, OC));
    snprintf(what, sizeof what, "matmul_backward_bf16 dweight N=%d C=%d OC=%d (%s)", N, C, OC, g_path);
    CU_ASSERT(check_bf16_bound(what, dw, C, rdw, adw, OC, C, N));
    int db_ok = 1;
    for (int o = 0; o < OC; o++) {
        double s = 0;
        for (int r = 0; r < N; r++) s += dout[(size_t)r * OC + o];
        db_ok &= fabs(db[o] - s) <= EPS * fabs(s) + 1e-30;   // double sums, one rounding
    }
    CU_ASSERT(db_ok);
    memcpy(dw1, dw, nw * sizeof(float));
    omp_set_num_threads(1);
    matmul_backward_bf16(dinp, dw, db, dout, x, w, N, C, OC, 1);   // accumulate: dw1 + the same product
    omp_set_num_threads(2);
    for (size_t i = 0; i < nw; i++) rdw[i] = 2 * rdw[i], adw[i] = 2 * adw[i];
    CU_ASSERT(check_bf16_bound("matmul_backward_bf16 dweight accumulated", dw, C, rdw, adw, OC, C, N + 1));
    free(x), free(wf), free(b), free(dout), free(w), free(ref), free(abs_sum), free(out), free(out2), free(act),
        free(act2), free(dinp), free(dw), free(db), free(dw1), free(rdi), free(adi), free(rdw), free(adw);
}

// ||a - b|| / ||b|| over n elements (b double or float)
static double rel_norm_d(const float *a, const double *b, size_t n) {
    double d = 0, nb = 0;
    for (size_t i = 0; i < n; i++) d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), nb += b[i] * b[i];
    return sqrt(d / (nb > 0 ? nb : 1));
}
static double rel_norm_f(const float *a, const float *b, size_t n) {
    double *bd = to_double(b, n), r = rel_norm_d(a, bd, n);
    free(bd);
    return r;
}

// The bf16 form of flash attention against the double reference (forward) and the float32 kernels
// (backward, itself checked against finite differences), in norm: ||bf16 - ref|| <= 4u ||ref||, u =
// 2^-8. The reason: q and k rounded to bf16 move each score by at most 2u sum_c |q_c k_c| / 8, which
// these inputs (|x| <= 1, hs = 64) keep below 2u x 8 = 16u in the exponent but, over a row, in norm
// well under 1u; the probabilities and v rounded add u each: ~2-3u in all; the backward chains one
// more rounded product (dO and dS) per gradient: 4u covers both with margin (measured: 0.4-0.6u,
// SM_TEST_VERBOSE). Also: not equal to the float32 kernel (the bf16 path ran), bit for bit at 1 and
// 2 threads, and the decode form (nq = 1 at position t) equal to row t of the full forward.
static void attention_bf16_case(int B, int T, int C, int NH) {
    const double tol = 4.0 / 256.0;
    size_t nqkv = (size_t)B * T * 3 * C, no = (size_t)B * T * C, nl = (size_t)B * NH * T;
    int hs = C / NH;
    float *qkv = falloc(nqkv), *o32 = falloc(no), *o16 = falloc(no), *o16b = falloc(no), *l32 = falloc(nl),
          *l16 = falloc(nl), *l16b = falloc(nl), *dout = falloc(no), *d32 = falloc(nqkv), *d16 = falloc(nqkv),
          *d16b = falloc(nqkv), *row = falloc((size_t)hs);
    fill_uniform(qkv, nqkv, -1, 1);
    fill_uniform(dout, no, -1, 1);
    double *qd = to_double(qkv, nqkv), *ref = dalloc(no), *att = dalloc(nl * (size_t)T);
    ref_attention(ref, att, qd, B, T, C, NH);
    attention_forward(o32, l32, qkv, B, T, C, NH);
    attention_forward_bf16(o16, l16, qkv, B, T, C, NH);
    double e_out = rel_norm_d(o16, ref, no), e_lse = rel_norm_f(l16, l32, nl);
    char what[256];
    snprintf(what, sizeof what, "attention_forward_bf16 B=%d T=%d C=%d NH=%d (%s)", B, T, C, NH, g_path);
    if (getenv("SM_TEST_VERBOSE")) printf("\n  %s: out %.2fu, lse %.2fu", what, e_out * 256, e_lse * 256);
    CU_ASSERT(e_out <= tol && e_lse <= tol);
    int bf16_ran = memcmp(o16, o32, no * sizeof(float)) != 0;
    CU_ASSERT(bf16_ran || !kernels_bf16_available() || hs != 64);
    attention_backward(d32, dout, o32, qkv, l32, B, T, C, NH);
    fill_const(d16, nqkv, NAN);   // overwritten: every element
    attention_backward_bf16(d16, dout, o16, qkv, l16, B, T, C, NH);
    double e_d = rel_norm_f(d16, d32, nqkv);
    if (getenv("SM_TEST_VERBOSE")) printf("\n  %s: dqkv %.2fu", what, e_d * 256);
    CU_ASSERT(e_d <= tol);
    omp_set_num_threads(1);
    attention_forward_bf16(o16b, l16b, qkv, B, T, C, NH);
    attention_backward_bf16(d16b, dout, o16, qkv, l16, B, T, C, NH);
    omp_set_num_threads(2);
    CU_ASSERT(same_bits("attention_forward_bf16 1 vs 2 threads", o16b, o16, no));
    CU_ASSERT(same_bits("attention_forward_bf16 lse 1 vs 2 threads", l16b, l16, nl));
    CU_ASSERT(same_bits("attention_backward_bf16 1 vs 2 threads", d16b, d16, nqkv));
    int dec_ok = 1;   // decode: query t alone against the keys 0..t of batch row B-1, head NH-1
    const float *base = qkv + (size_t)(B - 1) * T * 3 * C + (size_t)(NH - 1) * hs;
    for (int t = 0; t < T; t += (T > 8 ? T / 7 : 1)) {
        attention_head_forward_bf16(row, hs, NULL, base + (size_t)t * 3 * C, 3 * C, base + C, 3 * C, base + 2 * C, 3 * C, 1,
                                    t, hs);
        dec_ok &= memcmp(row, o16 + ((size_t)(B - 1) * T + t) * C + (size_t)(NH - 1) * hs, (size_t)hs * sizeof(float)) == 0;
    }
    CU_ASSERT(dec_ok);
    free(qkv), free(o32), free(o16), free(o16b), free(l32), free(l16), free(l16b), free(dout), free(d32), free(d16),
        free(d16b), free(row), free(qd), free(ref), free(att);
}

// adamw_update_bf16: the float32 params, m, v bit for bit adamw_update's, the copy their bf16
static void adamw_bf16_case(size_t n) {
    float *p = falloc(n), *g = falloc(n), *m = falloc(n), *v = falloc(n);
    fill_uniform(p, n, -1, 1), fill_uniform(g, n, -1, 1), fill_uniform(m, n, -0.1f, 0.1f), fill_uniform(v, n, 0, 0.01f);
    float *p2 = copy_f(p, n), *m2 = copy_f(m, n), *v2 = copy_f(v, n);
    uint16_t *pb = xmalloc(n * sizeof(uint16_t));
    adamw_update(p, g, m, v, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.7f, 3);
    adamw_update_bf16(p2, pb, g, m2, v2, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.7f, 3);
    CU_ASSERT(same_bits("adamw_update_bf16 params", p2, p, n));
    CU_ASSERT(same_bits("adamw_update_bf16 m", m2, m, n));
    CU_ASSERT(same_bits("adamw_update_bf16 v", v2, v, n));
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += pb[i] != ref_bf16(p[i]);
    CU_ASSERT(bad == 0);
    free(p), free(g), free(m), free(v), free(p2), free(m2), free(v2), free(pb);
}

// ---------------------------------------------------------------------------------------------
// The table of cases, in the spirit of ggml's test-backend-ops: one row per (op, shape, dtype),
// and each row runs on every code path this CPU has for the ops it names (once per distinct
// combination of those ops' paths, found by allowing each feature level in turn), so a new dtype
// or shape is a new row and a new path (a row of cpu.c's path lists) is covered by the rows that
// exist. References that do not depend on the path are computed once per row (prepare).

typedef struct test_case test_case;
struct test_case {
    const char *op;                            // the CUnit test that runs the row
    void (*run)(const test_case *t, void *refs);
    void *(*prepare)(const test_case *t);      // NULL, or references computed once for all paths
    void (*release)(void *refs);
    unsigned paths;                            // bits 1 << kernels_op: run on each of their paths (0: once)
    unsigned needs;                            // CPU features without which the row is skipped
    kernels_dtype dtype;
    int s[6];                                  // the shape, as the op reads it
    float x[2];                                // op parameters (gemm: alpha, beta)
};

#define P(op) (1u << KERNELS_OP_##op)

static void run_gemm(const test_case *t, void *r) {
    (void)r;
    gemm_case(t->s[0], t->s[1], t->s[2], t->s[3], t->s[4], t->x[0], t->x[1]);
}
static void run_gemm_mt(const test_case *t, void *r) {
    (void)r;
    gemm_mt_case(t->s[0], t->s[1], t->s[2], t->s[3], t->s[4]);
}
static void run_gemm_ref(const test_case *t, void *r) {
    (void)t, (void)r;
    gemm_ref_case();
}
static void run_encoder(const test_case *t, void *r) {
    (void)r;
    encoder_case(t->s[0], t->s[1], t->s[2], t->s[3], t->s[4]);
}
static void run_layernorm(const test_case *t, void *r) {
    (void)r;
    layernorm_case(t->s[0], t->s[1]);
}
static void run_residual_layernorm(const test_case *t, void *r) {
    (void)r;
    residual_layernorm_case(t->s[0], t->s[1]);
}
static void run_matmul(const test_case *t, void *r) {
    (void)r;
    matmul_case(t->s[0], t->s[1], t->s[2], t->s[3]);
}
static void run_matmul_row(const test_case *t, void *r) {
    (void)r;
    matmul_row_case(t->s[0], t->s[1], t->s[2]);
}
static void run_q8_packed(const test_case *t, void *r) {
    (void)r;
    q8_packed_case(t->s[0], t->s[1], t->s[2], t->s[3]);
}
static void run_matmul_packed(const test_case *t, void *r) {
    (void)r;
    matmul_packed_case(t->s[0], t->s[1], t->s[2]);
}
static void run_matmul_gelu(const test_case *t, void *r) {
    (void)r;
    matmul_gelu_case(t->s[0], t->s[1], t->s[2]);
}
static void run_lm_head(const test_case *t, void *r) {
    (void)r;
    lm_head_case(t->s[0], t->s[1], t->s[2], t->s[3], t->s[4]);
}
static void run_attention_ref(const test_case *t, void *r) {
    (void)r;
    attention_case(t->s[0], t->s[1], t->s[2], t->s[3]);
}
static void *prepare_flash(const test_case *t) { return flash_prepare(t->s[0], t->s[1], t->s[2], t->s[3], t->s[4]); }
static void run_flash(const test_case *t, void *r) {
    (void)t;
    flash_level(r);
}
static void release_flash(void *r) { flash_release(r); }
static void run_gelu(const test_case *t, void *r) {
    (void)t, (void)r;
    gelu_case();
}
static void run_residual_scale(const test_case *t, void *r) {
    (void)t, (void)r;
    residual_scale_case();
}
static void run_softmax_xent(const test_case *t, void *r) {
    (void)r;
    softmax_xent_case(t->s[0], t->s[1], t->s[2]);
}
static void run_vmath(const test_case *t, void *r) {
    (void)t, (void)r;
    vmath_case();
}
static void run_vmath_avx512(const test_case *t, void *r) {
    (void)t, (void)r;
    vmath_avx512_case();
}
static void run_adamw(const test_case *t, void *r) {
    (void)t, (void)r;
    adamw_case();
}
static void run_adamw_scale(const test_case *t, void *r) {
    (void)r;
    adamw_scale_case((size_t)t->s[0]);
}
static void run_flush_denormals(const test_case *t, void *r) {
    (void)t, (void)r;
    flush_denormals_case();
}
static void run_sum_squares(const test_case *t, void *r) {
    (void)r;
    sum_squares_case((size_t)t->s[0]);
}
static void run_q8_quant(const test_case *t, void *r) {
    (void)r;
    q8_quant_case(t->s[0], t->s[1], t->s[2]);
}
static void run_q8_matmul(const test_case *t, void *r) {
    (void)r;
    q8_matmul_case(t->s[0], t->s[1], t->s[2], t->s[3], t->s[4]);
}
static void run_bf16_convert(const test_case *t, void *r) {
    (void)t, (void)r;
    bf16_convert_case();
}
static void run_gemm_bf16(const test_case *t, void *r) {
    (void)r;
    gemm_bf16_case(t->s[0], t->s[1], t->s[2], t->s[3], t->s[4], t->x[0], t->x[1]);
}
static void run_matmul_bf16(const test_case *t, void *r) {
    (void)r;
    matmul_bf16_case(t->s[0], t->s[1], t->s[2]);
}
static void run_attention_bf16(const test_case *t, void *r) {
    (void)r;
    attention_bf16_case(t->s[0], t->s[1], t->s[2], t->s[3]);
}
static void run_adamw_bf16(const test_case *t, void *r) {
    (void)r;
    adamw_bf16_case((size_t)t->s[0]);
}
static void run_cpu(const test_case *t, void *r) {
    (void)t, (void)r;
    cpu_case();
}

static test_case *g_cases;
static int g_n_cases, g_cap_cases;

static void add(test_case c) {
    if (g_n_cases == g_cap_cases) {
        g_cap_cases = g_cap_cases ? 2 * g_cap_cases : 256;
        test_case *grown = realloc(g_cases, (size_t)g_cap_cases * sizeof *grown);
        if (!grown) {
            fprintf(stderr, "test_kernels: out of memory (%d cases)\n", g_cap_cases);
            exit(2);
        }
        g_cases = grown;
    }
    g_cases[g_n_cases++] = c;
}

static void build_cases(void) {
    add((test_case){.op = "cpu", .run = run_cpu});

    // gemm against the double triple loop: every transpose, every small size in M, N and K with
    // alpha/beta cycled through the shapes
    static const int sizes[] = {1, 3, 17, 33, 65, 129};
    static const float ab[][2] = {{1.0f, 0.0f}, {-0.75f, 0.0f}, {1.0f, 1.0f}, {0.5f, -1.5f}};
    int ns = (int)(sizeof sizes / sizeof sizes[0]);
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int im = 0; im < ns; im++)
                for (int in = 0; in < ns; in++)
                    for (int ik = 0; ik < ns; ik++) {
                        int k = (im + in + ik) % 4;
                        add((test_case){.op = "gemm", .run = run_gemm, .paths = P(GEMM_F32),
                                        .s = {ta, tb, sizes[im], sizes[in], sizes[ik]}, .x = {ab[k][0], ab[k][1]}});
                    }
    // every alpha/beta at a few shapes; shapes spanning several cache blocks in M, N and K; odd
    // shapes with both alpha/beta kinds
    static const int odd[][3] = {{1, 1, 1}, {13, 31, 17}, {15, 33, 257}, {29, 65, 300}, {3, 100, 7}, {57, 47, 513}};
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            for (int k = 0; k < 4; k++)
                add((test_case){.op = "gemm", .run = run_gemm, .paths = P(GEMM_F32), .s = {ta, tb, 33, 17, 65}, .x = {ab[k][0], ab[k][1]}});
            add((test_case){.op = "gemm", .run = run_gemm, .paths = P(GEMM_F32), .s = {ta, tb, 257, 301, 529}, .x = {1.0f, 0.0f}});
            add((test_case){.op = "gemm", .run = run_gemm, .paths = P(GEMM_F32), .s = {ta, tb, 131, 263, 300}, .x = {0.5f, -1.5f}});
            for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
                add((test_case){.op = "gemm", .run = run_gemm, .paths = P(GEMM_F32), .s = {ta, tb, odd[i][0], odd[i][1], odd[i][2]},
                                .x = {1.0f, 0.0f}});
                add((test_case){.op = "gemm", .run = run_gemm, .paths = P(GEMM_F32), .s = {ta, tb, odd[i][0], odd[i][1], odd[i][2]},
                                .x = {0.5f, -1.5f}});
            }
        }
    add((test_case){.op = "gemm", .run = run_gemm, .paths = P(GEMM_F32), .s = {0, 0, 5, 7, 0}, .x = {1.0f, 0.0f}});   // K = 0: C = beta C
    add((test_case){.op = "gemm", .run = run_gemm, .paths = P(GEMM_F32), .s = {0, 1, 5, 7, 0}, .x = {1.0f, 0.5f}});
    add((test_case){.op = "gemm", .run = run_gemm, .paths = P(GEMM_F32), .s = {1, 0, 9, 4, 6}, .x = {0.0f, 0.0f}});   // alpha = beta = 0
    // the model's products at N = B*T = 256 tokens, C = 256 (one of each kind)
    add((test_case){.op = "gemm", .run = run_gemm, .paths = P(GEMM_F32), .s = {0, 1, 256, 768, 256}, .x = {1.0f, 0.0f}});    // inp @ W^T
    add((test_case){.op = "gemm", .run = run_gemm, .paths = P(GEMM_F32), .s = {0, 0, 256, 256, 1024}, .x = {1.0f, 1.0f}});   // dinp
    add((test_case){.op = "gemm", .run = run_gemm, .paths = P(GEMM_F32), .s = {1, 0, 768, 256, 256}, .x = {1.0f, 1.0f}});    // dweight
    add((test_case){.op = "gemm", .run = run_gemm_ref});
    // gemm_mt: the same bits as gemm at 1, 2 and 3 threads, for a product split into column tiles
    // (wide, narrow), one split into row tiles, and one row (the one-row form)
    add((test_case){.op = "gemm_mt", .run = run_gemm_mt, .paths = P(GEMM_F32), .s = {0, 0, 300, 517, 301}});
    add((test_case){.op = "gemm_mt", .run = run_gemm_mt, .paths = P(GEMM_F32), .s = {0, 1, 61, 1601, 300}});
    add((test_case){.op = "gemm_mt", .run = run_gemm_mt, .paths = P(GEMM_F32), .s = {1, 0, 4001, 37, 129}});
    add((test_case){.op = "gemm_mt", .run = run_gemm_mt, .paths = P(GEMM_F32), .s = {0, 1, 1, 1601, 300}});

    add((test_case){.op = "encoder", .run = run_encoder, .s = {2, 7, 12, 13, 9}});
    add((test_case){.op = "encoder", .run = run_encoder, .s = {2, 64, 64, 50, 80}});
    add((test_case){.op = "encoder", .run = run_encoder, .s = {3, 33, 200, 40, 33}});   // C not a multiple of 16

    add((test_case){.op = "layernorm", .run = run_layernorm, .paths = P(LAYERNORM), .s = {14, 12}});
    add((test_case){.op = "layernorm", .run = run_layernorm, .paths = P(LAYERNORM), .s = {7, 37}});
    add((test_case){.op = "layernorm", .run = run_layernorm, .paths = P(LAYERNORM), .s = {128, 64}});
    add((test_case){.op = "layernorm", .run = run_layernorm, .paths = P(LAYERNORM), .s = {9, 768}});
    add((test_case){.op = "layernorm", .run = run_layernorm, .paths = P(LAYERNORM), .s = {5, 100}});   // partial vector and chunk

    add((test_case){.op = "matmul", .run = run_matmul, .paths = P(GEMM_F32), .s = {14, 12, 10, 1}});
    add((test_case){.op = "matmul", .run = run_matmul, .paths = P(GEMM_F32), .s = {14, 12, 10, 0}});
    add((test_case){.op = "matmul", .run = run_matmul, .paths = P(GEMM_F32), .s = {3, 17, 300, 1}});   // few rows: split by columns
    add((test_case){.op = "matmul", .run = run_matmul, .paths = P(GEMM_F32), .s = {260, 64, 96, 1}});
    add((test_case){.op = "matmul", .run = run_matmul, .paths = P(GEMM_F32), .s = {301, 70, 130, 0}});
    add((test_case){.op = "matmul", .run = run_matmul, .paths = P(GEMM_F32), .s = {1, 300, 77, 1}});   // one row
    // a decode step (N = 1) against a prefill's rows: tails in OC (not a multiple of 8, 16 or 32)
    // and in K (within and across KC = 256 slices), the model's shapes
    add((test_case){.op = "matmul_row", .run = run_matmul_row, .paths = P(GEMM_F32) | P(GELU), .s = {3, 17, 1}});
    add((test_case){.op = "matmul_row", .run = run_matmul_row, .paths = P(GEMM_F32) | P(GELU), .s = {3, 300, 77}});
    add((test_case){.op = "matmul_row", .run = run_matmul_row, .paths = P(GEMM_F32) | P(GELU), .s = {4, 1000, 50}});
    add((test_case){.op = "matmul_row", .run = run_matmul_row, .paths = P(GEMM_F32) | P(GELU), .s = {2, 768, 2304}});
    add((test_case){.op = "matmul_row", .run = run_matmul_row, .paths = P(GEMM_F32) | P(GELU), .s = {2, 3072, 768}});
    add((test_case){.op = "matmul_packed", .run = run_matmul_packed, .paths = P(GEMM_F32) | P(GELU), .s = {3, 17, 1}});
    add((test_case){.op = "matmul_packed", .run = run_matmul_packed, .paths = P(GEMM_F32) | P(GELU), .s = {3, 300, 77}});
    add((test_case){.op = "matmul_packed", .run = run_matmul_packed, .paths = P(GEMM_F32) | P(GELU), .s = {1, 600, 130}});
    add((test_case){.op = "matmul_packed", .run = run_matmul_packed, .paths = P(GEMM_F32) | P(GELU), .s = {20, 64, 1100}});
    add((test_case){.op = "matmul_packed", .run = run_matmul_packed, .paths = P(GEMM_F32) | P(GELU), .s = {2, 768, 2304}});
    add((test_case){.op = "matmul_packed", .run = run_matmul_packed, .paths = P(GEMM_F32) | P(GELU), .s = {300, 256, 256}});
    // matmul_forward_gelu = matmul_forward then gelu_forward, bit for bit
    static const int mg[][3] = {{7, 13, 29}, {33, 64, 100}, {256, 256, 1024}, {256, 768, 3072}};
    for (size_t i = 0; i < sizeof mg / sizeof mg[0]; i++)
        add((test_case){.op = "matmul_gelu", .run = run_matmul_gelu, .paths = P(GEMM_F32) | P(GELU), .s = {mg[i][0], mg[i][1], mg[i][2]}});

    // the LM head's fused backward = softmax_xent + matmul_backward: odd sizes, several row and
    // vocabulary blocks with partial ones, C below one micro-tile per thread, accumulating or not
    static const int lm[][5] = {{7, 13, 300, 320, 0}, {300, 40, 600, 640, 1}, {256, 64, 1000, 1024, 0}, {33, 96, 50, 64, 1}};
    for (size_t i = 0; i < sizeof lm / sizeof lm[0]; i++)
        add((test_case){.op = "lm_head", .run = run_lm_head, .paths = P(GEMM_F32) | P(SOFTMAX_XENT),
                        .s = {lm[i][0], lm[i][1], lm[i][2], lm[i][3], lm[i][4]}});

    // the batched-matmul attention (the reference kernel) against the double reference
    add((test_case){.op = "attention", .run = run_attention_ref, .paths = P(GEMM_F32), .s = {2, 7, 12, 3}});
    add((test_case){.op = "attention", .run = run_attention_ref, .paths = P(GEMM_F32), .s = {1, 1, 8, 2}});    // one position
    add((test_case){.op = "attention", .run = run_attention_ref, .paths = P(GEMM_F32), .s = {2, 64, 64, 4}});
    add((test_case){.op = "attention", .run = run_attention_ref, .paths = P(GEMM_F32), .s = {1, 130, 64, 4}});   // last block partial
    // flash attention: B, T, C, NH, finite differences
    static const int fl[][5] = {
        {2, 7, 12, 3, 1},     // hs = 4
        {1, 1, 8, 2, 1},      // T = 1
        {2, 65, 20, 2, 1},    // hs = 10, C not a multiple of 16, a second partial key block
        {1, 130, 64, 4, 1},   // several blocks, the last partial
        // hs = 64 (the AVX-512 path's head size) at odd lengths: one position, part of one vector
        // of queries, one short of a block, one past it, a third block of two
        {2, 1, 128, 2, 1}, {1, 7, 128, 2, 1}, {1, 63, 128, 2, 1}, {2, 65, 128, 2, 1}, {1, 130, 128, 2, 1},
        {4, 64, 256, 4, 0},    // the small model's shape (B=4, T=64, C=256, NH=4)
        {2, 64, 768, 12, 0},   // GPT-2 124M's heads (hs = 64)
        {1, 200, 64, 1, 0},    // a longer sequence: four key blocks
    };
    for (size_t i = 0; i < sizeof fl / sizeof fl[0]; i++)
        add((test_case){.op = "flash_attention", .run = run_flash, .prepare = prepare_flash, .release = release_flash, .paths = P(ATTENTION) | P(GEMM_F32),
                        .s = {fl[i][0], fl[i][1], fl[i][2], fl[i][3], fl[i][4]}});

    // INT8: quantization at odd shapes and group sizes (a short last group, one not a multiple of 4)
    static const int qq[][3] = {{5, 64, 64}, {7, 200, 64}, {3, 37, 8}, {4, 1000, 128}, {2, 515, 512}, {9, 30, 4}};
    for (size_t i = 0; i < sizeof qq / sizeof qq[0]; i++)
        add((test_case){.op = "q8_quantize", .run = run_q8_quant, .dtype = KERNELS_Q8, .s = {qq[i][0], qq[i][1], qq[i][2]}});
    // the q8 products: N, C, OC, group, kind (see q8_matmul_case). Tails of every tile (MR 6, 4, 3;
    // NR 32, 16), of groups (C % group, C % 4) and of K blocks (512 per block), N = 1 and the model's
    // shapes; +-127 extremes and exact scales at several sizes
    static const int qm[][5] = {
        {1, 64, 32, 64, 0},    {2, 64, 33, 64, 0},    {7, 200, 77, 64, 0},   {13, 37, 50, 8, 0},
        {6, 1100, 65, 64, 0},  {3, 130, 17, 32, 0},   {25, 768, 96, 64, 0},  {4, 515, 40, 512, 0},
        {9, 30, 19, 4, 0},     {1, 3072, 100, 64, 0}, {64, 256, 768, 64, 0}, {7, 200, 77, 64, 1},
        {5, 1024, 40, 64, 1},  {3, 37, 21, 8, 1},     {7, 256, 65, 64, 2},   {5, 768, 33, 32, 2},
        {7, 1024, 70, 64, 3},  {1, 768, 50, 64, 3},   {6, 96, 31, 16, 3},    {2, 1040, 9, 512, 3},
    };
    for (size_t i = 0; i < sizeof qm / sizeof qm[0]; i++)
        add((test_case){.op = "q8_matmul", .run = run_q8_matmul, .paths = P(GEMM_Q8) | P(GELU), .dtype = KERNELS_Q8,
                        .s = {qm[i][0], qm[i][1], qm[i][2], qm[i][3], qm[i][4]}});
    // packed: whole groups; one and several K blocks (kc 512), a partial micro-panel, 4+ panels
    static const int qp[][4] = {{3, 64, 33, 64}, {2, 1024, 130, 64}, {5, 768, 200, 32}, {1, 4096, 70, 64}, {4, 96, 31, 16}};
    for (size_t i = 0; i < sizeof qp / sizeof qp[0]; i++)
        add((test_case){.op = "q8_packed", .run = run_q8_packed, .paths = P(GEMM_Q8) | P(GELU), .dtype = KERNELS_Q8,
                        .s = {qp[i][0], qp[i][1], qp[i][2], qp[i][3]}});


    // bfloat16: conversion on each path; the bf16 GEMM at odd shapes and every tile edge of both
    // rows (plain C 4 x 16, AVX-512 14 x 32; MC 128 / 112, NC 512 (768 for K <= 256), KC 512 and its pairs: K odd,
    // K = KC +- 1, two K blocks), every transpose, with alpha and beta; the linear layers at odd and
    // model shapes; AdamW's copy
    add((test_case){.op = "bf16_convert", .run = run_bf16_convert, .paths = P(GEMM_BF16), .dtype = KERNELS_BF16});
    static const int bm[] = {1, 4, 13, 14, 15, 29, 113}, bn[] = {1, 16, 17, 31, 32, 33, 513}, bk[] = {1, 2, 3, 31, 511, 512, 513, 1025};
    int nbm = (int)(sizeof bm / sizeof bm[0]), nbn = (int)(sizeof bn / sizeof bn[0]), nbk = (int)(sizeof bk / sizeof bk[0]);
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int im = 0; im < nbm; im++)
                for (int in = 0; in < nbn; in++) {
                    int ik = (im * 3 + in * 5 + ta + 2 * tb) % nbk, k = (im + in + ik) % 4;   // every K over the rows
                    if ((size_t)bm[im] * bn[in] * bk[ik] > (size_t)4 << 20) ik = (ik + 3) % nbk;
                    add((test_case){.op = "gemm_bf16", .run = run_gemm_bf16, .paths = P(GEMM_BF16), .dtype = KERNELS_BF16,
                                    .s = {ta, tb, bm[im], bn[in], bk[ik]}, .x = {ab[k][0], ab[k][1]}});
                }
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int ik = 0; ik < nbk; ik++)
                add((test_case){.op = "gemm_bf16", .run = run_gemm_bf16, .paths = P(GEMM_BF16), .dtype = KERNELS_BF16,
                                .s = {ta, tb, 29, 33, bk[ik]}, .x = {1.0f, ik % 2 ? 1.0f : 0.0f}});
    add((test_case){.op = "gemm_bf16", .run = run_gemm_bf16, .paths = P(GEMM_BF16), .dtype = KERNELS_BF16,
                    .s = {0, 0, 5, 7, 0}, .x = {1.0f, 0.5f}});   // K = 0: C = beta C
    // K <= KC/2: the AVX-512 rows' wider column block (768), two of them and a partial one, with
    // op(A) resident (29 rows) and packed per block (300 rows)
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            add((test_case){.op = "gemm_bf16", .run = run_gemm_bf16, .paths = P(GEMM_BF16), .dtype = KERNELS_BF16,
                            .s = {ta, tb, ta ? 300 : 29, 1569, 255 + tb}, .x = {1.0f, ta ? 1.0f : 0.0f}});
    static const int mb[][3] = {{1, 7, 5}, {3, 17, 300}, {15, 33, 31}, {29, 130, 65}, {113, 64, 96}, {256, 256, 768}, {64, 768, 2304}};
    for (size_t i = 0; i < sizeof mb / sizeof mb[0]; i++)
        add((test_case){.op = "matmul_bf16", .run = run_matmul_bf16, .paths = P(GEMM_BF16) | P(GELU), .dtype = KERNELS_BF16,
                        .s = {mb[i][0], mb[i][1], mb[i][2]}});
    // the bf16 attention: 64-wide heads at odd lengths (one position, part of a vector of queries,
    // odd counts of keys and queries at block edges, several blocks), the model's shapes; hs = 4
    // (the float32 fallback)
    static const int ab16[][4] = {{2, 1, 128, 2}, {1, 7, 128, 2}, {1, 63, 128, 2}, {2, 65, 128, 2}, {1, 130, 128, 2},
                                  {1, 131, 64, 1}, {4, 64, 256, 4}, {2, 64, 768, 12}, {1, 200, 64, 1}, {2, 7, 12, 3}};
    for (size_t i = 0; i < sizeof ab16 / sizeof ab16[0]; i++)
        add((test_case){.op = "attention_bf16", .run = run_attention_bf16, .paths = P(GEMM_BF16) | P(ATTENTION),
                        .dtype = KERNELS_BF16, .s = {ab16[i][0], ab16[i][1], ab16[i][2], ab16[i][3]}});
    static const int an[] = {1, 15, 16, 17, 1000, 100001};
    for (size_t i = 0; i < sizeof an / sizeof an[0]; i++)
        add((test_case){.op = "adamw_bf16", .run = run_adamw_bf16, .paths = P(GEMM_BF16), .dtype = KERNELS_BF16, .s = {an[i]}});

    add((test_case){.op = "gelu", .run = run_gelu, .paths = P(GELU)});
    static const int rl[][2] = {{5, 7}, {64, 256}, {9, 768}, {3, 37}};
    for (size_t i = 0; i < sizeof rl / sizeof rl[0]; i++)
        add((test_case){.op = "residual_layernorm", .run = run_residual_layernorm, .paths = P(LAYERNORM), .s = {rl[i][0], rl[i][1]}});
    add((test_case){.op = "residual_scale", .run = run_residual_scale});
    static const int sx[][3] = {{14, 11, 13}, {5, 7, 7}, {64, 1000, 1024}, {3, 300, 333}, {1, 50, 64}};
    // no padding; a partial block and vector with padding > 16; one row (one thread has none)
    for (size_t i = 0; i < sizeof sx / sizeof sx[0]; i++)
        add((test_case){.op = "softmax_xent", .run = run_softmax_xent, .paths = P(SOFTMAX_XENT), .s = {sx[i][0], sx[i][1], sx[i][2]}});
    add((test_case){.op = "vmath", .run = run_vmath});
    add((test_case){.op = "vmath_avx512", .run = run_vmath_avx512, .needs = KERNELS_CPU_AVX512F});
    add((test_case){.op = "adamw", .run = run_adamw});
    add((test_case){.op = "adamw", .run = run_adamw_scale, .s = {1001}});
    add((test_case){.op = "flush_denormals", .run = run_flush_denormals});
    static const int ss[] = {0, 1, 5, 65536, 65537, 300001, (256 << 16) + 1000};
    for (size_t i = 0; i < sizeof ss / sizeof ss[0]; i++) add((test_case){.op = "sum_squares", .run = run_sum_squares, .s = {ss[i]}});
}

// The paths of the ops in mask, "gemm f32 avx512, gelu c": a row runs once per distinct value.
static void paths_key(char *buf, size_t size, unsigned mask) {
    size_t len = 0;
    buf[0] = '\0';
    for (int op = 0; op < KERNELS_OP_COUNT && len < size; op++)
        if (mask & (1u << op)) {
            int n = snprintf(buf + len, size - len, "%s%s %s", len ? ", " : "", kernels_op_name((kernels_op)op),
                             kernels_path((kernels_op)op));
            if (n > 0) len += (size_t)n;
        }
}

static void run_rows(const char *op) {
    const kernels_cpu_level *lv;
    int nl = kernels_cpu_levels(&lv);
    unsigned have = kernels_cpu_detect();
    int n_runs = 0;
    for (int i = 0; i < g_n_cases; i++) {
        const test_case *t = &g_cases[i];
        if (strcmp(t->op, op) || (t->needs & ~have)) continue;
        void *refs = t->prepare ? t->prepare(t) : NULL;
        if (!t->paths) {
            snprintf(g_path, sizeof g_path, "one path");
            t->run(t, refs);
            n_runs++;
        } else {
            char seen[8][sizeof g_path];
            int n_seen = 0;
            for (int l = 0; l < nl; l++) {
                kernels_cpu_allow(lv[l].mask);
                paths_key(g_path, sizeof g_path, t->paths);
                int dup = 0;
                for (int k = 0; k < n_seen; k++) dup |= !strcmp(seen[k], g_path);
                if (dup || n_seen == 8) continue;
                memcpy(seen[n_seen++], g_path, sizeof g_path);
                if (getenv("SM_TEST_VERBOSE")) printf("\n  [%s] row %d on %s", op, i, g_path);
                t->run(t, refs);
                n_runs++;
            }
            kernels_cpu_allow(KERNELS_CPU_ALL);
        }
        if (t->release) t->release(refs);
    }
    CU_ASSERT(n_runs > 0);   // every test has rows this CPU runs
}

static void test_cpu(void) { run_rows("cpu"); }
static void test_gemm(void) { run_rows("gemm"); }
static void test_gemm_mt(void) { run_rows("gemm_mt"); }
static void test_encoder(void) { run_rows("encoder"); }
static void test_layernorm(void) { run_rows("layernorm"); }
static void test_matmul(void) { run_rows("matmul"); }
static void test_matmul_row(void) { run_rows("matmul_row"); }
static void test_matmul_packed(void) { run_rows("matmul_packed"); }
static void test_matmul_gelu(void) { run_rows("matmul_gelu"); }
static void test_lm_head(void) { run_rows("lm_head"); }
static void test_attention(void) { run_rows("attention"); }
static void test_flash_attention(void) { run_rows("flash_attention"); }
static void test_gelu(void) { run_rows("gelu"); }
static void test_q8_quantize(void) { run_rows("q8_quantize"); }
static void test_q8_matmul(void) { run_rows("q8_matmul"); }
static void test_q8_packed(void) { run_rows("q8_packed"); }
static void test_bf16_convert(void) { run_rows("bf16_convert"); }
static void test_gemm_bf16(void) { run_rows("gemm_bf16"); }
static void test_matmul_bf16(void) { run_rows("matmul_bf16"); }
static void test_adamw_bf16(void) { run_rows("adamw_bf16"); }
static void test_attention_bf16(void) { run_rows("attention_bf16"); }
static void test_residual_layernorm(void) { run_rows("residual_layernorm"); }
static void test_residual_scale(void) { run_rows("residual_scale"); }
static void test_softmax_xent(void) { run_rows("softmax_xent"); }
static void test_vmath(void) { run_rows("vmath"); }
static void test_vmath_avx512(void) {
    if (kernels_cpu_detect() & KERNELS_CPU_AVX512F) run_rows("vmath_avx512");
}
static void test_adamw(void) { run_rows("adamw"); }
static void test_flush_denormals(void) { run_rows("flush_denormals"); }
static void test_sum_squares(void) { run_rows("sum_squares"); }

int main(void) {
    sm_rng_seed(&g_rng, 1234, 0);
    omp_set_num_threads(2);
    build_cases();
    if (CU_initialize_registry() != CUE_SUCCESS) {
        fprintf(stderr, "test_kernels: CUnit registry: %s\n", CU_get_error_msg());
        return 2;
    }
    static const struct {
        const char *name;
        CU_TestFunc fn;
    } tests[] = {
        {"cpu", test_cpu}, {"gemm", test_gemm}, {"gemm_mt", test_gemm_mt}, {"encoder", test_encoder},
        {"layernorm", test_layernorm}, {"matmul", test_matmul}, {"matmul_row", test_matmul_row}, {"matmul_packed", test_matmul_packed}, {"q8_packed", test_q8_packed},
        {"matmul_gelu", test_matmul_gelu}, {"lm_head", test_lm_head}, {"attention", test_attention}, {"flash_attention", test_flash_attention},
        {"q8_quantize", test_q8_quantize}, {"q8_matmul", test_q8_matmul},
        {"bf16_convert", test_bf16_convert}, {"gemm_bf16", test_gemm_bf16}, {"matmul_bf16", test_matmul_bf16},
        {"adamw_bf16", test_adamw_bf16}, {"attention_bf16", test_attention_bf16},
        {"gelu", test_gelu}, {"residual_layernorm", test_residual_layernorm}, {"residual_scale", test_residual_scale},
        {"softmax_xent", test_softmax_xent}, {"vmath", test_vmath}, {"vmath_avx512", test_vmath_avx512},
        {"adamw", test_adamw}, {"flush_denormals", test_flush_denormals}, {"sum_squares", test_sum_squares},
    };
    CU_pSuite s = CU_add_suite("kernels", NULL, NULL);
    int ok = s != NULL;
    const char *only = getenv("SM_TEST_ONLY");   // a comma-separated list of tests to run (debugging)
    for (size_t i = 0; ok && i < sizeof tests / sizeof tests[0]; i++) {
        if (only && !strstr(only, tests[i].name)) continue;
        ok = CU_add_test(s, tests[i].name, tests[i].fn) != NULL;
    }
    if (!ok) {
        fprintf(stderr, "test_kernels: CUnit setup: %s\n", CU_get_error_msg());
        CU_cleanup_registry();
        return 2;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_ErrorCode err = CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures(), tests_failed = CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    free(g_cases);
    return (err != CUE_SUCCESS || failures || tests_failed) ? 1 : 0;
}
