// gemm.c — defines the GEMM engine's driver (gemm_run, gemm_run_parallel) over its table of
// micro-kernel rows (gemm_ukernel_pick), and the fp32 entry points on it: gemm, gemm_ex,
// gemm_parallel, gemm_mt, and the plain oracle gemm_ref.
#include "kernels_internal.h"

#include <assert.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

// Loop order (GotoBLAS/BLIS): for each NC-column block of op(B), for each KC slice of the
// contraction, pack op(B)[KC x NC] once (it stays in L2); for each MC-row block of op(A), pack
// op(A)[MC x KC]; then for each MR-row micro-panel of A (kept in L1) sweep the NR-column
// micro-panels of B with the micro-kernel, which holds an MR x NR tile of C in registers.
// Every C element is the sum over KC slices, in order, of a k-ordered chain, added to C once per
// slice (the fp32 rows), or one chain over the groups of K (q8): where an element sits in the
// tiling never changes its value, so results do not depend on how callers split M or N (nor on
// the thread count). Packing buffers live on the stack (~0.9 MiB): no heap, safe inside OpenMP
// threads.

// ---------------------------------------------------------------------------------------------
// The table: one row per (operand dtypes, path). kernels_pick (cpu.c) chooses the path.

static const gemm_ukernel *const ROWS[] = {
    &GEMM_F32_C,
    &GEMM_Q8_C,
#ifdef KERNELS_X86
    &GEMM_F32_AVX2,
    &GEMM_F32_AVX512,
    &GEMM_Q8_AVX2,
    &GEMM_Q8_AVX_VNNI,
    &GEMM_Q8_AVX512_VNNI,
#endif
    &GEMM_BF16_C_FF,   // bf16 rows (gemm_bf16.c)
    &GEMM_BF16_C_FB,
#ifdef KERNELS_X86
    &GEMM_BF16_AVX512_FF,
    &GEMM_BF16_AVX512_FB,
#endif
};

const gemm_ukernel *gemm_ukernel_pick(kernels_op op, kernels_dtype a_type, kernels_dtype b_type) {
    kernels_isa isa = kernels_pick(op);
    for (size_t i = 0; i < sizeof ROWS / sizeof ROWS[0]; i++)
        if (ROWS[i]->isa == isa && ROWS[i]->a_type == a_type && ROWS[i]->b_type == b_type &&
            ROWS[i]->bf16 == (op == KERNELS_OP_GEMM_BF16))
            return ROWS[i];
    return NULL;
}

static const gemm_ukernel *f32_row(void) {
    const gemm_ukernel *uk = gemm_ukernel_pick(KERNELS_OP_GEMM_F32, KERNELS_F32, KERNELS_F32);
    assert(uk && "gemm: no fp32 micro-kernel row for the chosen path (cpu.c's path list and gemm.c's table disagree)");
    return uk;
}

// ---------------------------------------------------------------------------------------------
// Drivers

// The column block of op(B) over a contraction of K: the row's nc, or its nc_short where it has one
// and all of K is one block of at most kc/2 (a weight gradient over B*T = 256 tokens in bf16: op(B)'s
// block in the same bytes, and op(A), dout^T of up to 50304 rows, packed once instead of once per
// column block). Each C element's sum does not depend on it.
static int col_block(const gemm_ukernel *uk, int K) { return uk->nc_short && 2 * K <= uk->kc ? uk->nc_short : uk->nc; }

static size_t dtype_bytes(kernels_dtype t) { return t == KERNELS_F32 ? 4 : t == KERNELS_BF16 ? 2 : 1; }

// The operand whose op(X) starts at row r0 (A: rows of op(A); B: columns of op(B)). Scales
// follow the stored rows; an offset along a stored row never cuts through them (q8 is never
// transposed that way).
static gemm_operand op_offset(const gemm_operand *X, kernels_dtype t, int r0, int is_b) {
    gemm_operand o = *X;
    int along_rows = is_b ? X->trans : !X->trans;   // r0 counts stored rows
    size_t off = along_rows ? (size_t)r0 * X->ld : (size_t)r0;
    o.p = (const char *)X->p + off * dtype_bytes(t);
    if (X->scales) {
        assert(along_rows && "gemm: a scaled operand cut along its rows");
        o.scales = X->scales + (size_t)r0 * X->ld_scales;
    }
    return o;
}

static void apply_gelu_epilogue(const gemm_epilogue *ep, const float *C, int ldc, int i0, int j0, int mr, int nr) {
    gelu_tile(ep->gelu_out + (size_t)i0 * ep->ldg + j0, ep->ldg, C + (size_t)i0 * ldc + j0, ldc, mr, nr);
}

// One K slice [pc, pc+kc) of one column block [jc, jc+nc) of C (M,N), with op(B)'s part of them
// packed in Bp: for each MC-row block of op(A), pack it, then for each MR-row micro-panel sweep
// the NR-column micro-panels of B with the micro-kernel. first/last: the slice is the first/last
// of K (beta and the bias apply at the first; the epilogue's GELU after the last).
static void run_slice(const gemm_ukernel *uk, int M, int jc, int nc, int pc, int kc, int group, int first, int last,
                      float alpha, const gemm_operand *A, const char *Bp, size_t b_stride, float beta, float *C,
                      int ldc, const gemm_epilogue *ep) {
    const int MR = uk->mr, NR = uk->nr, MC = uk->mc;
    const float *bias = ep ? ep->bias : NULL;
    _Alignas(64) float Ap[GEMM_A_BYTES / sizeof(float)];
    size_t a_panel = uk->a_panel(kc, group);
    assert(a_panel * (size_t)((MC + MR - 1) / MR) <= sizeof Ap && "gemm: a micro-kernel row's blocks outgrow the packing buffers");
    for (int ic = 0; ic < M; ic += MC) {
        int mc = M - ic < MC ? M - ic : MC;
        uk->pack_a(Ap, A, ic, mc, pc, kc);
        for (int ir = 0; ir < mc; ir += MR) {
            int mr = mc - ir < MR ? mc - ir : MR;
            const char *ap = (const char *)Ap + (size_t)(ir / MR) * a_panel;
            for (int jr = 0; jr < nc; jr += NR) {
                int nr = nc - jr < NR ? nc - jr : NR;
                float *Ct = C + (size_t)(ic + ir) * ldc + jc + jr;
                gemm_micro_args args = {alpha, first ? beta : 1.0f,   // later K slices accumulate
                                        first && bias ? bias + jc + jr : NULL, group, first};
                uk->micro(kc, ap, Bp + (size_t)(jr / NR) * b_stride, Ct, ldc, mr, nr, &args);
                if (last && ep && ep->gelu_out) apply_gelu_epilogue(ep, C, ldc, ic + ir, jc + jr, mr, nr);
            }
        }
    }
}

// op(B)'s micro-panels for the K slice [pc, pc+kc) of column block [jc, jc+nc): packed into Bp
// now, or where a packed B already holds them; *stride: bytes from one micro-panel to the next.
static const char *b_block(const gemm_ukernel *uk, const gemm_operand *B, void *Bp, int pc, int kc, int jc, int nc,
                           int group, size_t *stride) {
    if (B->packed) {   // jc starts a micro-panel; the slice starts b_panel(pc) bytes into it (pc: whole groups)
        *stride = uk->b_panel(B->ld, group);
        return (const char *)B->p + (size_t)(jc / uk->nr) * *stride + (pc ? uk->b_panel(pc, group) : 0);
    }
    assert(uk->b_panel(kc, group) * (size_t)((nc + uk->nr - 1) / uk->nr) <= GEMM_B_BYTES &&
           "gemm: a micro-kernel row's blocks outgrow the packing buffers");
    uk->pack_b(Bp, B, pc, kc, jc, nc);
    *stride = uk->b_panel(kc, group);
    return Bp;
}

void gemm_run(const gemm_ukernel *uk, int M, int N, int K, float alpha, const gemm_operand *A, const gemm_operand *B,
              float beta, float *C, int ldc, const gemm_epilogue *ep) {
    // op(A) is (M,K), op(B) is (K,N); C is (M,N) with row stride ldc
    if (M == 0 || N == 0) return;
    const float *bias = ep ? ep->bias : NULL;
    assert((!uk->grouped || (alpha == 1.0f && beta == 0.0f)) && "gemm: grouped (q8) rows compute C = product + bias");
    if (K == 0 || alpha == 0.0f) {   // C = beta * C (+ bias), never reading C when beta == 0
        for (int i = 0; i < M; i++) {
            float *ci = C + (size_t)i * ldc;
            for (int j = 0; j < N; j++) {
                float r = beta == 0.0f ? 0.0f : beta * ci[j];
                ci[j] = bias ? r + bias[j] : r;
            }
        }
        if (ep && ep->gelu_out) apply_gelu_epilogue(ep, C, ldc, 0, 0, M, N);
        return;
    }
    assert((!B->packed || (gemm_packable(uk) && B->ld == K)) && "gemm: a packed B is packed over all of K, by a packable row");
    gemm_row_fn row = B->packed ? uk->row_packed : B->trans ? uk->row : NULL;
    if (M == 1 && row && !A->trans) {   // one row (a decode step): nothing to pack
        row(N, K, alpha, A, B, beta, C, bias);
        if (ep && ep->gelu_out) apply_gelu_epilogue(ep, C, ldc, 0, 0, 1, N);
        return;
    }
    const int NC = col_block(uk, K), MR = uk->mr, NR = uk->nr;
    const int group = uk->grouped ? A->group : 0;
    int KC = uk->kc;
    if (uk->grouped) KC = KC < group ? group : KC / group * group;   // whole groups per K block
    _Alignas(64) float Bp[GEMM_B_BYTES / sizeof(float)];
    const int m_panels = (M + MR - 1) / MR;
    if (N > NC && uk->a_panel(KC < K ? KC : K, group) * (size_t)m_panels <= GEMM_AR_BYTES) {
        // op(A)'s whole K slice fits the resident buffer (a linear layer's activations, M = B*T rows):
        // packed once per K slice, not once per column block of B as below. Same micro-kernel calls.
        _Alignas(64) float Ar[GEMM_AR_BYTES / sizeof(float)];
        for (int pc = 0; pc < K; pc += KC) {
            int kc = K - pc < KC ? K - pc : KC, first = pc == 0, last = pc + kc == K;
            size_t a_panel = uk->a_panel(kc, group), b_stride;
            uk->pack_a(Ar, A, 0, M, pc, kc);
            for (int jc = 0; jc < N; jc += NC) {
                int nc = N - jc < NC ? N - jc : NC;
                const char *Bb = b_block(uk, B, Bp, pc, kc, jc, nc, group, &b_stride);
                for (int ir = 0; ir < M; ir += MR) {
                    int mr = M - ir < MR ? M - ir : MR;
                    const char *ap = (const char *)Ar + (size_t)(ir / MR) * a_panel;
                    for (int jr = 0; jr < nc; jr += NR) {
                        int nr = nc - jr < NR ? nc - jr : NR;
                        gemm_micro_args args = {alpha, first ? beta : 1.0f, first && bias ? bias + jc + jr : NULL, group,
                                                first};
                        uk->micro(kc, ap, Bb + (size_t)(jr / NR) * b_stride, C + (size_t)ir * ldc + jc + jr, ldc, mr,
                                  nr, &args);
                        if (last && ep && ep->gelu_out) apply_gelu_epilogue(ep, C, ldc, ir, jc + jr, mr, nr);
                    }
                }
            }
        }
        return;
    }
    for (int jc = 0; jc < N; jc += NC) {
        int nc = N - jc < NC ? N - jc : NC;
        for (int pc = 0; pc < K; pc += KC) {
            int kc = K - pc < KC ? K - pc : KC;
            size_t b_stride;
            const char *Bb = b_block(uk, B, Bp, pc, kc, jc, nc, group, &b_stride);
            run_slice(uk, M, jc, nc, pc, kc, group, pc == 0, pc + kc == K, alpha, A, Bb, b_stride, beta, C, ldc, ep);
        }
    }
}

void gemm_run_packed_b(const gemm_ukernel *uk, int M, int N, int K, float alpha, const gemm_operand *A, const void *Bp,
                       float beta, float *C, int ldc) {
    // op(A) is (M,K), B (K,N) packed by uk->pack_b; C is (M,N) with row stride ldc
    assert(!uk->grouped && K <= uk->kc && N <= uk->nc && "gemm_run_packed_b: one fp32 K slice and column block");
    if (M == 0 || N == 0 || K == 0) return;
    run_slice(uk, M, 0, N, 0, K, 0, 1, 1, alpha, A, Bp, uk->b_panel(K, 0), beta, C, ldc, NULL);
}

int gemm_packable(const gemm_ukernel *uk) {
    return (uk->a_type == KERNELS_F32 && uk->b_type == KERNELS_F32 && !uk->bf16) || uk->row_packed != NULL;
}

size_t gemm_packed_bytes(const gemm_ukernel *uk, int N, int K, int group) {
    return uk->b_panel(K, group) * (size_t)((N + uk->nr - 1) / uk->nr);
}

void gemm_pack_b_whole(const gemm_ukernel *uk, void *dst, const gemm_operand *B, int N, int K) {
    // op(B) is (K,N); dst gets ceil(N/nr) micro-panels of b_panel(K) bytes, 64 panels per task
    assert(!B->packed && gemm_packable(uk) && (!uk->grouped || K % B->group == 0) &&
           "gemm_pack_b_whole: a packable row (q8: whole groups)");
    const int NR = uk->nr, n_panels = (N + NR - 1) / NR, per = 64;
    const size_t panel = uk->b_panel(K, B->group);
#pragma omp parallel for schedule(static)
    for (int j = 0; j < n_panels; j += per) {
        int j0 = j * NR, nc = N - j0 < per * NR ? N - j0 : per * NR;
        uk->pack_b((char *)dst + (size_t)j * panel, B, 0, K, j0, nc);
    }
}

// Elements gemm_run packs for an (M,N,K) product: op(A) once per K slice when it is resident,
// else once per column block of B, and op(B) once. A bf16 row's bf16 op(B) (the weight) counts half
// an element: half the bytes of the float32 op(A) it pairs with, and nothing to round (the small
// model's products split by rows then: 0.92-0.93 -> 0.96-0.98 of the peak ratio, process CPU time).
static double packed_elems(const gemm_ukernel *uk, int M, int N, int K, int group) {
    int kc = uk->kc;
    if (uk->grouped) kc = kc < group ? group : kc / group * group;   // as gemm_run blocks K
    if (kc > K) kc = K;
    int nc = col_block(uk, K);
    int resident = N > nc && uk->a_panel(kc, group) * (size_t)((M + uk->mr - 1) / uk->mr) <= GEMM_AR_BYTES;
    double a_passes = resident ? 1.0 : (double)((N + nc - 1) / nc);
    double b_weight = uk->bf16 ? (double)dtype_bytes(uk->b_type) / (double)dtype_bytes(uk->a_type) : 1.0;
    return (double)M * K * a_passes + b_weight * K * N;
}

// The grid of gr x gc tiles gemm_run_parallel gives a team of nt threads, one tile per thread:
// columns, or rows when there are too few columns to share.
typedef struct {
    int gr, gc;
} tile_grid;

static tile_grid grid_of(const gemm_ukernel *uk, int M, int N, int K, const gemm_operand *A, int nt) {
    const int MR = uk->mr, NR = uk->nr, group = uk->grouped ? A->group : 0;
    int gr = 1, gc = nt;
    int col_units = (N + NR - 1) / NR, row_units = (M + MR - 1) / MR;
    // Each thread packs its share of the operand that is split and all of the other (op(A) once
    // per column block of B unless it is resident): split the way that packs fewer elements per
    // thread. Columns for a linear layer's forward and dinp (B, the weight, is the larger operand),
    // either for a weight gradient dout^T x, depending on its shape.
    if (nt > 1 && (col_units < 2 * nt ||
                   packed_elems(uk, (M + nt - 1) / nt, N, K, group) < packed_elems(uk, M, (N + nt - 1) / nt, K, group))) {
        gr = nt;
        gc = 1;
        if (row_units < gr) gr = row_units < 1 ? 1 : row_units;
    }
    if (gc > col_units) gc = col_units;
    return (tile_grid){gr, gc};
}

// Tile `tile` of grid g: tile edges on whole micro-tiles, as even as possible.
static void run_tile(const gemm_ukernel *uk, tile_grid g, int tile, int M, int N, int K, float alpha,
                     const gemm_operand *A, const gemm_operand *B, float beta, float *C, int ldc,
                     const gemm_epilogue *ep) {
    const int MR = uk->mr, NR = uk->nr;
    int col_units = (N + NR - 1) / NR, row_units = (M + MR - 1) / MR;
    int ti = tile / g.gc, tj = tile % g.gc;
    int r0 = (int)((long)row_units * ti / g.gr) * MR, r1 = (int)((long)row_units * (ti + 1) / g.gr) * MR;
    int c0 = (int)((long)col_units * tj / g.gc) * NR, c1 = (int)((long)col_units * (tj + 1) / g.gc) * NR;
    if (r1 > M) r1 = M;
    if (c1 > N) c1 = N;
    if (r1 <= r0 || c1 <= c0) return;
    gemm_operand At = op_offset(A, uk->a_type, r0, 0), Bt = *B;
    if (B->packed)   // c0 starts a micro-panel
        Bt.p = (const char *)B->p + (size_t)(c0 / uk->nr) * uk->b_panel(K, B->group);
    else
        Bt = op_offset(B, uk->b_type, c0, 1);
    gemm_epilogue e, *pe = NULL;
    if (ep) {
        e = *ep;
        if (e.bias) e.bias += c0;
        if (e.gelu_out) e.gelu_out += (size_t)r0 * e.ldg + c0;
        pe = &e;
    }
    gemm_run(uk, r1 - r0, c1 - c0, K, alpha, &At, &Bt, beta, C + (size_t)r0 * ldc + c0, ldc, pe);
}

void gemm_run_parallel(const gemm_ukernel *uk, int M, int N, int K, float alpha, const gemm_operand *A,
                       const gemm_operand *B, float beta, float *C, int ldc, const gemm_epilogue *ep) {
    if (M == 0 || N == 0) return;
    tile_grid g = grid_of(uk, M, N, K, A, omp_get_max_threads());
    int n_tiles = g.gr * g.gc;
    if (n_tiles <= 1) {
        gemm_run(uk, M, N, K, alpha, A, B, beta, C, ldc, ep);
        return;
    }
#pragma omp parallel for schedule(static) num_threads(n_tiles)
    for (int tile = 0; tile < n_tiles; tile++) run_tile(uk, g, tile, M, N, K, alpha, A, B, beta, C, ldc, ep);
}

void gemm_run_part(const gemm_ukernel *uk, int part, int parts, int M, int N, int K, float alpha,
                   const gemm_operand *A, const gemm_operand *B, float beta, float *C, int ldc,
                   const gemm_epilogue *ep) {
    assert(parts >= 1 && part >= 0 && part < parts && "gemm_run_part: part out of range");
    if (M == 0 || N == 0) return;
    tile_grid g = grid_of(uk, M, N, K, A, parts);
    int n_tiles = g.gr * g.gc;
    if (n_tiles <= 1) {
        if (part == 0) gemm_run(uk, M, N, K, alpha, A, B, beta, C, ldc, ep);
        return;
    }
    if (part < n_tiles) run_tile(uk, g, part, M, N, K, alpha, A, B, beta, C, ldc, ep);
}

// ---------------------------------------------------------------------------------------------
// fp32 entry points

static void check_f32(int trans_a, int trans_b, int M, int N, int K, int lda, int ldb, int ldc) {
    assert(M >= 0 && N >= 0 && K >= 0 && "gemm: negative dimension");
    assert(ldc >= N && "gemm: ldc smaller than N");
    assert(lda >= (trans_a ? M : K) && "gemm: lda smaller than the stored row width of A");
    assert(ldb >= (trans_b ? K : N) && "gemm: ldb smaller than the stored row width of B");
    (void)trans_a, (void)trans_b, (void)M, (void)N, (void)K, (void)lda, (void)ldb, (void)ldc;
}

void gemm_ex(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
             int ldb, float beta, float *C, int ldc, const gemm_epilogue *ep) {
    // op(A) is (M,K), op(B) is (K,N); C is (M,N) with row stride ldc
    check_f32(trans_a, trans_b, M, N, K, lda, ldb, ldc);
    gemm_operand a = {.p = A, .ld = lda, .trans = trans_a}, b = {.p = B, .ld = ldb, .trans = trans_b};
    gemm_run(f32_row(), M, N, K, alpha, &a, &b, beta, C, ldc, ep);
}

void gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
          float beta, float *C, int ldc) {
    gemm_ex(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, NULL);
}

void gemm_parallel(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                   const float *B, int ldb, float beta, float *C, int ldc, const gemm_epilogue *ep) {
    check_f32(trans_a, trans_b, M, N, K, lda, ldb, ldc);
    gemm_operand a = {.p = A, .ld = lda, .trans = trans_a}, b = {.p = B, .ld = ldb, .trans = trans_b};
    gemm_run_parallel(f32_row(), M, N, K, alpha, &a, &b, beta, C, ldc, ep);
}

void gemm_mt(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
             int ldb, float beta, float *C, int ldc) {
    gemm_parallel(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, NULL);
}

void gemm_ref(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
              int ldb, float beta, float *C, int ldc) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float s = 0.0f;
            for (int p = 0; p < K; p++) {
                float a = trans_a ? A[(size_t)p * lda + i] : A[(size_t)i * lda + p];
                float b = trans_b ? B[(size_t)j * ldb + p] : B[(size_t)p * ldb + j];
                s += a * b;
            }
            float *c = &C[(size_t)i * ldc + j];
            *c = beta == 0.0f ? alpha * s : alpha * s + beta * *c;
        }
}
