// bench_generate.c — `smallmind bench generate`: prefill and decode tokens/s of the default model
// and a GPT-2 124M-shaped one (random weights), with the KV cache, without it and in INT8, heap
// bytes and allocations per token, against baselines measured in the same run: PyTorch's KV-cache
// generation on the same weights (tests/pytorch_generate.py), OpenBLAS sgemm on the prefill's
// matrix products, and the memory-bandwidth limit (bytes read per token / the STREAM triad).
#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <omp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_util.h"
#include "kernels.h"
#include "trainer.h"

typedef struct {
    const char *shape;     // small | gpt2 | all
    int prompt;            // prompt tokens (at most half the context)
    int new_tokens;        // decoded tokens per round
    int rounds;
    int threads;
    int no_torch, no_blas, json;
    const char *python;
} bgen_args;

#define G_OPT(name, type, field, lo, hi, arg, help) {name, type, offsetof(bgen_args, field), lo, hi, arg, help, NULL, 1, 0}
static const cli_opt BGEN_OPTIONS[] = {
    G_OPT("shape", CLI_STR, shape, 0, 0, "S", "small (the default model: L=4 H=4 C=256, context 256, bytes), gpt2 "
          "(L=12 H=12 C=768, context 1024, V=50257: 124M) or all"),
    G_OPT("prompt", CLI_INT, prompt, 1, 4096, "N", "prompt tokens (at most half the context)"),
    G_OPT("new", CLI_INT, new_tokens, 2, 4096, "N", "tokens decoded per round"),
    G_OPT("rounds", CLI_INT, rounds, 1, 64, "R", "medians over R rounds"),
    G_OPT("threads", CLI_INT, threads, 1, 1024, "N", "OpenMP threads (default: $OMP_NUM_THREADS, else the CPUs this "
          "process may use; PyTorch gets as many)"),
    G_OPT("no-torch", CLI_FLAG, no_torch, 0, 1, NULL, "skip the PyTorch baseline"),
    G_OPT("no-blas", CLI_FLAG, no_blas, 0, 1, NULL, "skip the OpenBLAS baseline"),
    G_OPT("python", CLI_STR, python, 0, 0, "P", "the Python with torch, numpy and h5py"),
    G_OPT("json", CLI_FLAG, json, 0, 1, NULL, "one JSON object per figure"),
};

static const char BGEN_HEAD[] =
    "usage: smallmind bench generate [options]\n"
    "  Batch 1, greedy. Baselines in the same run: PyTorch's generation with a preallocated KV cache on\n"
    "  the same weights (tests/pytorch_generate.py: torch.no_grad, its best OpenBLAS kernel, passive\n"
    "  OpenMP waits, malloc's mmap off), OpenBLAS sgemm on the prefill's products, and the memory-\n"
    "  bandwidth limit: the bytes a decode step must read (weights and the cache) / the STREAM triad.\n";

typedef struct {
    const char *name;
    int L, H, C, maxT, V;
    const char *tokenizer;
} gen_shape;

static const gen_shape GEN_SHAPES[2] = {
    {"small", 4, 4, 256, 256, 256, "byte"},
    {"gpt2-124M", 12, 12, 768, 1024, 50257, "gpt2"},
};

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static long long heap_in_use(void) {
    struct mallinfo2 mi = mallinfo2();
    return (long long)(mi.uordblks + mi.hblkhd);
}

typedef struct {
    double prefill_s;       // one prefill of the prompt
    double decode_s;        // the decode steps, all of them
    double allocs_per_token, heap_per_token;   // tokens 2..new
} gen_round;

// One round: a prefill of the prompt, then `n_new` greedy decode steps through the cache.
static void round_cached(const gpt2_weights *w, gpt2_infer *s, const int *prompt, int P, int n_new, gen_round *out) {
    const int V = w->cfg.vocab_size;
    gpt2_infer_reset(s);
    int row = 0;
    double t0 = sm_now_s();
    gpt2_forward_cached(w, s, prompt, &row, 1, P);
    double t1 = sm_now_s();
    int tok = argmax(s->logits, V);
    uint64_t allocs0 = 0;
    long long heap0 = 0;
    for (int k = 0; k < n_new; k++) {
        if (k == 1) {
            allocs0 = sm_alloc_count();
            heap0 = heap_in_use();
        }
        gpt2_forward_cached(w, s, &tok, &row, 1, 1);
        tok = argmax(s->logits, V);
    }
    double t2 = sm_now_s();
    *out = (gen_round){
        .prefill_s = t1 - t0,
        .decode_s = t2 - t1,
        .allocs_per_token = (double)(sm_alloc_count() - allocs0) / (n_new - 1),
        .heap_per_token = (double)(heap_in_use() - heap0 > 0 ? heap_in_use() - heap0 : 0) / (n_new - 1),
    };
}

typedef struct {
    int M, N, K;   // out (M,N) = A (M,K) @ W (N,K)^T
} prod;

// The prefill's matrix products (rows = prompt tokens), and the LM head on the last position.
static int prefill_products(const gen_shape *sh, int P, int Vp, prod *p) {
    const int C = sh->C;
    int n = 0;
    p[n++] = (prod){P, 3 * C, C};
    p[n++] = (prod){P, C, C};
    p[n++] = (prod){P, 4 * C, C};
    p[n++] = (prod){P, C, 4 * C};
    p[n++] = (prod){1, Vp, C};
    return n;
}

// Seconds of the prefill's products (each layer's four, L times, and the LM head), by ours and by
// OpenBLAS, medians over rounds, interleaved; and their floating-point operations.
static void time_products(const gen_shape *sh, int P, int Vp, const bench_blas *blas, int rounds, double *ours,
                          double *theirs, double *flops) {
    prod p[8];
    const int n = prefill_products(sh, P, Vp, p);
    size_t max_a = 0, max_w = 0, max_o = 0;
    for (int i = 0; i < n; i++) {
        max_a = (size_t)p[i].M * p[i].K > max_a ? (size_t)p[i].M * p[i].K : max_a;
        max_w = (size_t)p[i].N * p[i].K > max_w ? (size_t)p[i].N * p[i].K : max_w;
        max_o = (size_t)p[i].M * p[i].N > max_o ? (size_t)p[i].M * p[i].N : max_o;
    }
    float *A = sm_arena(max_a * 4), *W = sm_arena(max_w * 4), *O = sm_arena(max_o * 4);
    sm_rng r;
    sm_rng_seed(&r, 5, 0);
    for (size_t i = 0; i < max_a; i++) A[i] = sm_rng_uniform(&r) - 0.5f;
    for (size_t i = 0; i < max_w; i++) W[i] = 0.02f * (sm_rng_uniform(&r) - 0.5f);
    double so[64], sb[64];
    *flops = 0.0;
    for (int i = 0; i < n; i++) *flops += 2.0 * p[i].M * p[i].N * (double)p[i].K * (i < 4 ? sh->L : 1);
    for (int rd = 0; rd <= rounds; rd++) {   // round 0 is a warm-up
        double t0 = sm_now_s();
        for (int i = 0; i < n; i++)
            for (int l = 0; l < (i < 4 ? sh->L : 1); l++) matmul_forward(O, A, W, NULL, p[i].M, p[i].K, p[i].N);
        if (rd) so[rd - 1] = sm_now_s() - t0;
        if (blas->sgemm) {
            bench_sleep(0.05);
            double t1 = sm_now_s();
            for (int i = 0; i < n; i++)
                for (int l = 0; l < (i < 4 ? sh->L : 1); l++)
                    blas->sgemm(BENCH_ROW_MAJOR, BENCH_NO_TRANS, BENCH_TRANS, p[i].M, p[i].N, p[i].K, 1.0f, A, p[i].K,
                                W, p[i].K, 0.0f, O, p[i].N);
            if (rd) sb[rd - 1] = sm_now_s() - t1;
            bench_sleep(0.15);   // OpenBLAS's threads spin after a call
        }
    }
    *ours = bench_median(so, rounds);
    *theirs = blas->sgemm ? bench_median(sb, rounds) : 0.0;
    sm_free(A);
    sm_free(W);
    sm_free(O);
}

// PyTorch's KV-cache generation on the checkpoint: tokens/s of decode and prefill (0 when it fails).
static void torch_generate(const bgen_args *a, const char *ckpt, const int *prompt, int P, double *decode,
                           double *prefill) {
    *decode = *prefill = 0.0;
    char script[4200], new_s[16], threads_s[16], env_threads[32];
    snprintf(script, sizeof script, "%s/tests/pytorch_generate.py", data_checkout_dir());
    snprintf(new_s, sizeof new_s, "%d", a->new_tokens);
    snprintf(threads_s, sizeof threads_s, "%d", a->threads);
    snprintf(env_threads, sizeof env_threads, "OMP_NUM_THREADS=%d", a->threads);
    char *ids = sm_malloc((size_t)P * 8 + 1);
    size_t at = 0;
    for (int i = 0; i < P; i++) at += (size_t)snprintf(ids + at, 8, "%s%d", i ? "," : "", prompt[i]);
    char *argv[] = {(char *)a->python, script, "--ckpt", (char *)ckpt, "--prompt-tokens", ids, "--max-new", new_s,
                    "--threads", threads_s, "--time", NULL};
    // PyTorch at its best: malloc without mmap or trimming, passive OpenMP waits (its threads would
    // otherwise spin against OpenBLAS's), and OPENBLAS_CORETYPE as bench_blas_core set it
    const char *env[] = {"MALLOC_MMAP_MAX_=0", "MALLOC_TRIM_THRESHOLD_=68719476736", "OMP_WAIT_POLICY=passive",
                         env_threads, NULL};
    char out[65536], err[65536];
    int rc = bench_run(argv, env, out, sizeof out, err, sizeof err);
    sm_free(ids);
    const char *j = strrchr(err, '{');
    if (rc != 0 || !j) {
        sm_warn("bench generate: the PyTorch baseline failed (exit %d): %.200s", rc, err);
        return;
    }
    const char *d = strstr(j, "\"tokens_per_s\":"), *p = strstr(j, "\"prefill_tokens_per_s\":");
    if (d) *decode = strtod(d + 15, NULL);
    if (p) *prefill = strtod(p + 23, NULL);
}

// Writes the weights as a checkpoint (for PyTorch) into a fresh directory; returns its path in out.
static int write_checkpoint(const gpt2_weights *w, char *dir, size_t dir_cap, char *out, size_t cap) {
    snprintf(dir, dir_cap, "/tmp/smallmind-bench-generate-XXXXXX");
    if (!mkdtemp(dir)) return -1;
    adamw_state opt;
    adamw_build(&opt, &w->params, 0, sm_table_n_f32(&w->params));
    ckpt_meta meta = {.step = 1, .cfg = w->cfg};
    char err[CKPT_ERR_MAX];
    int rc = ckpt_save(dir, &meta, &w->params, &opt.m, &opt.v, opt.lo, opt.hi, 0, NULL, err, sizeof err);
    adamw_free(&opt);
    if (rc != 0) {
        sm_warn("bench generate: cannot write the checkpoint for PyTorch: %s", err);
        return -1;
    }
    ckpt_path(out, cap, dir, 1);
    return 0;
}

static void remove_dir(const char *dir) {
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) sm_warn("bench generate: could not remove %s", dir);
}

static void bench_shape(const bgen_args *a, const gen_shape *sh, const bench_blas *blas, double stream_gbps,
                        int have_torch) {
    sm_model_config cfg = {.n_layer = sh->L, .n_head = sh->H, .n_embd = sh->C, .max_seq_len = sh->maxT,
                           .vocab_size = sh->V};
    snprintf(cfg.tokenizer, sizeof cfg.tokenizer, "%s", sh->tokenizer);
    char err[256];
    if (gpt2_config_validate(&cfg, err, sizeof err) != 0) sm_fatal(SM_EXIT_RUNTIME, "bench generate: %s", err);
    const int P = a->prompt < sh->maxT / 2 ? a->prompt : sh->maxT / 2, n_new = a->new_tokens;
    if (P + n_new + 1 > sh->maxT) sm_fatal(SM_EXIT_USAGE, "bench generate: --new %d does not fit the context %d of %s "
                                           "after a %d-token prompt (command line)", n_new, sh->maxT, sh->name, P);
    gpt2_weights w;
    gpt2_weights_build(&w, &cfg);
    gpt2_weights_init(&w, 1337);
    int *prompt = sm_arena((size_t)P * sizeof(int));
    sm_rng r;
    sm_rng_seed(&r, 11, 0);
    for (int i = 0; i < P; i++) prompt[i] = (int)sm_rng_below(&r, (uint64_t)sh->V);
    char name[160];
    if (!a->json)
        printf("%s (L=%d H=%d C=%d V=%d, %zu params), %d-token prompt, %d new tokens, %d thread%s, medians of %d\n",
               sh->name, sh->L, sh->H, sh->C, sh->V, w.n_params, P, n_new, a->threads, a->threads > 1 ? "s" : "",
               a->rounds);

    // the baselines first, on the same weights
    double torch_decode = 0, torch_prefill = 0;
    char dir[256] = "", ckpt[4300];
    if (have_torch && write_checkpoint(&w, dir, sizeof dir, ckpt, sizeof ckpt) == 0)
        torch_generate(a, ckpt, prompt, P, &torch_decode, &torch_prefill);
    if (dir[0]) remove_dir(dir);

    // fp32 with the cache: prefill and decode, and the heap per token, on the matrices packed once as
    // generate packs them
    gpt2_weights_pack(&w);
    gpt2_infer s;
    gpt2_infer_build(&s, &cfg, 1, P);
    double pre[64], dec[64], allocs = 0, heap = 0;
    gen_round gr;
    round_cached(&w, &s, prompt, P, n_new, &gr);   // warm-up: first touches, thread start
    for (int k = 0; k < a->rounds; k++) {
        round_cached(&w, &s, prompt, P, n_new, &gr);
        pre[k] = gr.prefill_s;
        dec[k] = gr.decode_s;
        allocs += gr.allocs_per_token / a->rounds;
        heap += gr.heap_per_token / a->rounds;
    }
    const double prefill_tok_s = P / bench_median(pre, a->rounds), decode_tok_s = n_new / bench_median(dec, a->rounds);

    // the bytes a decode step reads: every weight matrix and the LM head once, and the cache
    // (keys and values of the positions so far, on average P + n_new/2)
    const double C = sh->C, L = sh->L, Vp = cfg.padded_vocab_size;
    const double mat_elems = L * 12.0 * C * C + Vp * C, cache_bytes = 4.0 * 2.0 * L * (P + n_new / 2.0) * C;
    const double bytes_f32 = 4.0 * mat_elems + cache_bytes, bytes_q8 = mat_elems * (1.0 + 4.0 / 64) + cache_bytes;

    snprintf(name, sizeof name, "generate %s prefill tokens/s", sh->name);
    bench_emit(a->json, name, "tokens_per_s", prefill_tok_s, 1e3 * P / prefill_tok_s, torch_prefill, "pytorch");
    double ours_s = 0, blas_s = 0, flops = 0;
    time_products(sh, P, cfg.padded_vocab_size, blas, a->rounds, &ours_s, &blas_s, &flops);
    snprintf(name, sizeof name, "generate %s prefill products GFLOP/s", sh->name);
    bench_emit(a->json, name, "gflops", flops / ours_s * 1e-9, ours_s * 1e3, blas_s > 0 ? flops / blas_s * 1e-9 : 0,
               "openblas");
    snprintf(name, sizeof name, "generate %s decode tokens/s (KV cache)", sh->name);
    bench_emit(a->json, name, "tokens_per_s", decode_tok_s, 1e3 / decode_tok_s, torch_decode, "pytorch");
    snprintf(name, sizeof name, "generate %s decode tokens/s vs bandwidth limit", sh->name);
    bench_emit(a->json, name, "tokens_per_s", decode_tok_s, 1e3 / decode_tok_s, stream_gbps * 1e9 / bytes_f32,
               "stream");
    snprintf(name, sizeof name, "generate %s decode GB/s (%.0f MB per token)", sh->name, bytes_f32 / 1e6);
    bench_emit(a->json, name, "gbps", decode_tok_s * bytes_f32 / 1e9, 1e3 / decode_tok_s, stream_gbps, "stream");
    snprintf(name, sizeof name, "generate %s allocations per token", sh->name);
    bench_emit(a->json, name, "allocs", allocs, 0, 0, "");
    snprintf(name, sizeof name, "generate %s heap bytes per token", sh->name);
    bench_emit(a->json, name, "bytes", heap, 0, 0, "");

    // without the cache: the training forward over the whole prefix for each token
    {
        const int n_nc = sh->C >= 768 ? 3 : 8;
        gpt2_acts full;
        gpt2_acts_build(&full, &cfg, 1, P + n_nc, 0);
        int *seq = sm_arena((size_t)(P + n_nc) * sizeof(int));
        memcpy(seq, prompt, (size_t)P * sizeof(int));
        gpt2_forward(&w, &full, seq, 1, P);   // warm-up
        double t0 = sm_now_s();
        for (int k = 0; k < n_nc; k++) {
            gpt2_forward(&w, &full, seq, 1, P + k);
            seq[P + k] = argmax(full.t.t[A_LOGITS].ptr + (size_t)(P + k - 1) * cfg.padded_vocab_size, sh->V);
        }
        double nc_tok_s = n_nc / (sm_now_s() - t0);
        snprintf(name, sizeof name, "generate %s decode tokens/s (no cache)", sh->name);
        bench_emit(a->json, name, "tokens_per_s", nc_tok_s, 1e3 / nc_tok_s, decode_tok_s, "kv_cache");
        sm_free(seq);
        gpt2_acts_free(&full);
    }

    // INT8: the same rounds with the matrices quantized (groups of 64)
    if (gpt2_weights_quantize(&w, 64, err, sizeof err) != 0) sm_fatal(SM_EXIT_RUNTIME, "bench generate: %s", err);
    round_cached(&w, &s, prompt, P, n_new, &gr);
    for (int k = 0; k < a->rounds; k++) {
        round_cached(&w, &s, prompt, P, n_new, &gr);
        pre[k] = gr.prefill_s;
        dec[k] = gr.decode_s;
    }
    const double q8_prefill = P / bench_median(pre, a->rounds), q8_decode = n_new / bench_median(dec, a->rounds);
    snprintf(name, sizeof name, "generate %s INT8 decode tokens/s", sh->name);
    bench_emit(a->json, name, "tokens_per_s", q8_decode, 1e3 / q8_decode, decode_tok_s, "fp32");
    snprintf(name, sizeof name, "generate %s INT8 decode vs bandwidth limit", sh->name);
    bench_emit(a->json, name, "tokens_per_s", q8_decode, 1e3 / q8_decode, stream_gbps * 1e9 / bytes_q8, "stream");
    snprintf(name, sizeof name, "generate %s INT8 prefill tokens/s", sh->name);
    bench_emit(a->json, name, "tokens_per_s", q8_prefill, 1e3 * P / q8_prefill, prefill_tok_s, "fp32");

    gpt2_infer_free(&s);
    sm_free(prompt);
    gpt2_weights_free(&w);
}

int bench_generate(int argc, char **argv) {
    bgen_args a = {.shape = "all", .prompt = 256, .new_tokens = 32, .rounds = 5, .python = "/usr/bin/python3"};
    cli_parse("bench generate", BGEN_HEAD, BGEN_OPTIONS, (int)(sizeof BGEN_OPTIONS / sizeof BGEN_OPTIONS[0]), &a,
              sizeof a, argc, argv, NULL, 0);
    const int small = !strcmp(a.shape, "small") || !strcmp(a.shape, "all");
    const int gpt2 = !strcmp(a.shape, "gpt2") || !strcmp(a.shape, "all");
    if (!small && !gpt2) sm_fatal(SM_EXIT_USAGE, "bench generate: --shape must be small, gpt2 or all (command line)");
    comm_topology topo;
    comm_init(&argc, &argv, &topo);
    if (topo.world_size > 1)
        comm_fatal_agreed(SM_EXIT_USAGE, "bench generate is one process: run it without mpirun (command line)");
    a.threads = comm_set_threads(&topo, a.threads);
    kernels_flush_denormals(1);
    bench_blas blas = {0};
    if (!a.no_blas) bench_blas_open(&blas, a.threads);
    int have_torch = 0;
    if (!a.no_torch) {
        bench_blas_core();   // PyTorch's products go through OpenBLAS too
        char *argv_t[] = {(char *)a.python, "-c", "import torch, h5py, numpy", NULL};
        char o1[256], o2[4096];
        have_torch = access(a.python, X_OK) == 0 && bench_run(argv_t, NULL, o1, sizeof o1, o2, sizeof o2) == 0;
        if (!have_torch) sm_warn("no PyTorch at %s: no PyTorch baseline (install python3-torch)", a.python);
    }
    const double stream = bench_stream_gbps(a.rounds);
    if (!a.json)
        printf("bench generate: %d thread%s, GEMM %s, INT8 %s, STREAM triad %.1f GB/s\n", a.threads,
               a.threads > 1 ? "s" : "", kernels_path(KERNELS_OP_GEMM_F32), kernels_path(KERNELS_OP_GEMM_Q8), stream);
    bench_emit(a.json, "stream triad (3 x 128 MiB)", "gbps", stream, 0, 0, "");
    for (int i = 0; i < 2; i++)
        if (i == 0 ? small : gpt2) bench_shape(&a, &GEN_SHAPES[i], &blas, stream, have_torch);
    comm_finalize();
    return SM_EXIT_OK;
}
