// generate.c — `smallmind generate`: text from a checkpoint, one prompt or a batch of them, with a
// KV cache (prefill in one batched forward, then one position per token), greedy or sampled.
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "trainer.h"

typedef struct {
    const char *ckpt, *prompt, *prompt_file, *dump_logits;
    int max_new, threads, no_cache, profile, json, int8, group_size;
    const char *precision;
    sm_dtype prec;
    double temperature, top_p;
    int top_k;
    unsigned long long seed;
} gen_opts;

#define G_OPT(name, type, field, lo, hi, arg, help) {name, type, offsetof(gen_opts, field), lo, hi, arg, help, NULL, 0, 0}
static const cli_opt GEN_OPTIONS[] = {
    G_OPT("ckpt", CLI_STR, ckpt, 0, 0, "PATH|DIR", "a checkpoint, or a run directory (the checkpoint its `latest` "
          "names) (required)"),
    G_OPT("prompt", CLI_STR, prompt, 0, 0, "TEXT", "the text to continue (default: a newline)"),
    G_OPT("prompt-file", CLI_STR, prompt_file, 0, 0, "F", "one prompt per line, generated together as one batch; "
          "each row's text printed in prompt order when all are done, a blank line between (default: none)"),
    G_OPT("max-new", CLI_INT, max_new, 1, 1 << 30, "N", "new tokens per prompt; generation also stops at the context "
          "and at the end-of-text token where the tokenizer has one"),
    G_OPT("temperature", CLI_DOUBLE, temperature, 0, 1e6, "T", "0 = greedy"),
    G_OPT("top-k", CLI_INT, top_k, 0, 1 << 30, "K", "sample from the K most probable tokens; 0 = all"),
    G_OPT("top-p", CLI_DOUBLE, top_p, 1e-9, 1, "P", "then from the smallest set whose probability reaches P, in "
          "(0, 1]; 1 = all"),
    G_OPT("seed", CLI_U64, seed, 0, 9.2e18, "S", "the same seed gives the same text"),
    G_OPT("no-cache", CLI_FLAG, no_cache, 0, 1, NULL, "recompute the whole prefix for each token (no KV cache): the "
          "reference path"),
    G_OPT("int8", CLI_FLAG, int8, 0, 1, NULL, "quantize the weight matrices to int8 at load (one scale per "
          "--group-size inputs) and run the INT8 kernels"),
    G_OPT("group-size", CLI_INT, group_size, 4, 512, "G", "--int8's quantization group along the input dimension (default 64)"),
    G_OPT("precision", CLI_STR, precision, 0, 0, "P", "fp32, or bf16: the matrix products' operands in bf16 "
          "(AVX512-BF16, float32 sums; the checkpoint's float32 weights rounded once at load)"),
    G_OPT("threads", CLI_INT, threads, 1, 1024, "N", "OpenMP threads (default: $OMP_NUM_THREADS, else "
          "$SLURM_CPUS_PER_TASK, else the CPUs this process may use)"),
    G_OPT("profile", CLI_FLAG, profile, 0, 1, NULL, "the per-op profile, per generated token"),
    G_OPT("json", CLI_FLAG, json, 0, 1, NULL, "after the text, one JSON object on stderr: new_tokens, tokens_per_s, "
          "prefill_tokens_per_s (and the generated token ids)"),
    G_OPT("dump-logits", CLI_STR, dump_logits, 0, 0, "F", "write the first row's logits before each new token to F, "
          "V float32 each (tests) (default: no)"),
};

static const char GEN_HEAD[] =
    "usage: smallmind generate --ckpt PATH|RUN_DIR [--prompt TEXT | --prompt-file F] [options]\n"
    "  text from a checkpoint: each prompt prefilled in one forward, then one position per new token\n"
    "  through the KV cache. One process: under mpirun use -np 1. The weight matrices are packed once\n"
    "  at load for the kernels (float32: a second copy of them in memory, ~0.5 GB at 124M).\n";

static void parse_generate(int argc, char **argv, gen_opts *o) {
    *o = (gen_opts){.precision = "fp32", .max_new = 256, .seed = 1337, .temperature = 1.0, .top_k = 0, .top_p = 1.0};
    cli_parse("generate", GEN_HEAD, GEN_OPTIONS, (int)(sizeof GEN_OPTIONS / sizeof GEN_OPTIONS[0]), o, sizeof *o,
              argc, argv, NULL, 0);
    if (!o->ckpt) sm_fatal(SM_EXIT_USAGE, "generate: --ckpt PATH|RUN_DIR is required (command line)");
    o->prec = cli_precision(o->precision);
    if (o->prec == SM_BF16 && o->int8) sm_fatal(SM_EXIT_USAGE, "--precision bf16 and --int8 exclude each other (command line)");
    if (o->group_size && !o->int8) sm_fatal(SM_EXIT_USAGE, "--group-size is --int8's: add --int8 (command line)");
    if (!o->group_size) o->group_size = 64;
    if (o->prompt && o->prompt_file)
        sm_fatal(SM_EXIT_USAGE, "generate: give --prompt or --prompt-file, not both (command line)");
}

// The prompts as text: --prompt, the lines of --prompt-file, or one newline.
typedef struct {
    char *text;        // owned: the prompts back to back
    size_t *start;     // (n + 1): prompt i is text[start[i] .. start[i+1])
    int n;
} prompt_set;

static void read_prompts(const gen_opts *o, prompt_set *ps) {
    memset(ps, 0, sizeof *ps);
    if (!o->prompt_file) {
        const char *p = o->prompt ? o->prompt : "\n";
        ps->text = sm_malloc(strlen(p) + 1);
        memcpy(ps->text, p, strlen(p) + 1);
        ps->start = sm_malloc(2 * sizeof(size_t));
        ps->start[0] = 0;
        ps->start[1] = strlen(p);
        ps->n = 1;
        return;
    }
    char err[1024];
    unsigned char *buf;
    size_t n;
    if (data_read_file(o->prompt_file, "prompt file", (size_t)1 << 30, &buf, &n, err, sizeof err) != 0)
        sm_fatal(SM_EXIT_USAGE, "%s", err);
    // one prompt per line; the newline (LF or CRLF) ends a prompt and is not part of it; empty lines are
    // skipped
    ps->text = (char *)buf;
    ps->start = sm_malloc((n + 2) * sizeof(size_t));
    size_t out = 0, line = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || buf[i] == '\n') {
            size_t end = i > line && buf[i - 1] == '\r' ? i - 1 : i;
            if (end > line) {
                ps->start[ps->n] = out;
                memmove(ps->text + out, buf + line, end - line);
                out += end - line;
                ps->n++;
                ps->start[ps->n] = out;
            }
            line = i + 1;
        }
    }
    if (ps->n == 0) sm_fatal(SM_EXIT_USAGE, "no prompt in the file (it holds no non-empty line) (%s)", o->prompt_file);
}

// A token's bytes (a GPT-2 token may hold part of a UTF-8 character: bytes, not characters)
static void put_token(const tokenizer *tk, int tok, FILE *f) {
    size_t n = 0;
    const unsigned char *b = tokenizer_token_bytes(tk, tok, &n);
    if (n) fwrite(b, 1, n, f);
}

int cmd_generate(int argc, char **argv) {
    comm_topology topo;
    comm_init(&argc, &argv, &topo);
    static gen_opts o;   // static: outside the frame setjmp saves
    jmp_buf start;
    if (setjmp(start) == 0) {
        sm_usage_defer(&start);
        parse_generate(argc, argv, &o);
    }
    comm_usage_agree();   // a usage error ends every rank here, printed once
    if (topo.world_size > 1)
        comm_fatal_agreed(SM_EXIT_USAGE, "generate is one process, but it runs on %d ranks: use mpirun -np 1, or no mpirun "
                 "(command line)", topo.world_size);
    comm_set_threads(&topo, o.threads);   // --threads, OMP_NUM_THREADS, SLURM_CPUS_PER_TASK, else the CPU mask
    kernels_flush_denormals(1);

    gpt2_weights w;
    ckpt_meta meta;
    char ckpt_file[4096];
    infer_load_weights(o.ckpt, &w, &meta, ckpt_file, sizeof ckpt_file);
    if (o.int8) {   // (the flags and the checkpoint are alike on every rank)
        char qerr[256];
        if (gpt2_weights_quantize(&w, o.group_size, qerr, sizeof qerr) != 0)
            comm_fatal_agreed(SM_EXIT_USAGE, "%s (command line)", qerr);
    }
    {
        char perr[256];
        if (gpt2_weights_set_precision(&w, o.prec, perr, sizeof perr) != 0) comm_fatal_agreed(SM_EXIT_USAGE, "%s (command line)", perr);
    }
    gpt2_weights_pack(&w);   // float32: the matrices packed once (nothing for --int8 or bf16)
    const sm_model_config *cfg = &w.cfg;
    const int V = cfg->vocab_size, Vp = cfg->padded_vocab_size, maxT = cfg->max_seq_len;
    // the checkpoint's tokenizer encodes the prompts and decodes the new tokens
    tokenizer tk;
    char err[1024];
    const int kind = tokenizer_parse(cfg->tokenizer);
    if (kind < 0) sm_fatal(SM_EXIT_USAGE, "the checkpoint's tokenizer '%s' is unknown (%s)", cfg->tokenizer, ckpt_file);
    if (tokenizer_load(&tk, (tokenizer_kind)kind, NULL, err, sizeof err) != 0) sm_fatal(SM_EXIT_USAGE, "%s", err);
    const int eot = kind == TOKENIZER_GPT2 ? GPT2_EOT : -1;   // the byte tokenizer has no end-of-text token

    prompt_set ps;
    read_prompts(&o, &ps);
    const int R = ps.n;
    // tokens: row r's prompt then its new tokens: the positions of the context, and the one token
    // predicted after a full context (it is printed, never fed back)
    const size_t stride = (size_t)maxT + 1;
    int *seq = sm_arena((size_t)R * stride * sizeof(int)), *len = sm_arena((size_t)R * sizeof(int));
    int *n_prompt = sm_arena((size_t)R * sizeof(int)), *active = sm_arena((size_t)R * sizeof(int));
    int longest = 1;
    for (int r = 0; r < R; r++) {
        const unsigned char *text = (const unsigned char *)ps.text + ps.start[r];
        size_t n_text = ps.start[r + 1] - ps.start[r], n = 0, n_docs = 0;
        uint16_t *ids = NULL;
        if (n_text > 0) {
            const tok_encode_opts enc = {.threads = 1};
            if (tokenizer_encode_text(&tk, text, n_text, &enc, &ids, &n, &n_docs, err, sizeof err) != 0)
                sm_fatal(SM_EXIT_USAGE, "%s (prompt %d)", err, r + 1);
        }
        if (n > (size_t)maxT)
            sm_fatal(SM_EXIT_USAGE, "prompt %d is %zu tokens, longer than the model's context of %d tokens (%s)", r + 1,
                     n, maxT, o.prompt_file ? o.prompt_file : "--prompt");
        for (size_t i = 0; i < n; i++) seq[(size_t)r * stride + i] = ids[i];
        sm_free(ids);
        if (n == 0) {   // an empty prompt: gpt2 starts from <|endoftext|>, as GPT-2's samplers do
            if (eot < 0) sm_fatal(SM_EXIT_USAGE, "the prompt is empty and the %s tokenizer has no end-of-text token to "
                                  "start from (--prompt)", cfg->tokenizer);
            seq[(size_t)r * stride] = eot;
            n = 1;
        }
        len[r] = n_prompt[r] = (int)n;
        if ((int)n > longest) longest = (int)n;
    }

    // the state: a KV cache for every row (each prompt prefilled alone, in one forward of its
    // length), or for --no-cache the activations of one whole sequence
    gpt2_infer inf = {0};
    gpt2_acts full = {0};
    if (o.no_cache)
        gpt2_acts_build(&full, cfg, 1, maxT, 0);
    else
        gpt2_infer_build(&inf, cfg, R, longest);
    float *prefill_logits = sm_arena((size_t)R * Vp * sizeof(float));   // each row's, after its prefill
    const float **logits_of = sm_arena((size_t)R * sizeof(float *));     // row r's latest logits
    int *next = sm_arena((size_t)R * sizeof(int));                        // the rows' new tokens
    sampler smp;
    const sampler_params sp = {.temperature = (float)o.temperature, .top_k = o.top_k, .top_p = (float)o.top_p};
    sampler_build(&smp, &sp, V);
    sm_rng rng;
    sm_rng_seed(&rng, o.seed, 0x67656e);   // stream "gen"
    FILE *dump = NULL;
    if (o.dump_logits && !(dump = fopen(o.dump_logits, "wb")))
        sm_fatal(SM_EXIT_RUNTIME, "cannot open %s: %s", o.dump_logits, strerror(errno));
    const int stream = R == 1;   // one prompt: its text streams as it is produced
    if (stream) {
        fwrite(ps.text, 1, ps.start[1], stdout);
        fflush(stdout);
    }
    prof_enable(o.profile);

    double t0 = sm_now_s();
    long prompt_tokens = 0;
    for (int r = 0; r < R; r++) {
        prompt_tokens += n_prompt[r];
        if (o.no_cache) continue;
        gpt2_forward_cached(&w, &inf, seq + (size_t)r * stride, &r, 1, n_prompt[r]);
        memcpy(prefill_logits + (size_t)r * Vp, inf.logits, (size_t)Vp * sizeof(float));
        logits_of[r] = prefill_logits + (size_t)r * Vp;
    }
    const double t_prefill = sm_now_s() - t0;

    long new_tokens = 0;
    int n_active = R;
    for (int r = 0; r < R; r++) active[r] = 1;
    const double t1 = sm_now_s();
    for (int k = 1; n_active > 0; k++) {
        if (k >= 2) sm_mark_step(k);   // from the second token on, nothing allocates
        prof_step_begin();
        int n_rows = 0, sampled = 0;
        for (int r = 0; r < R; r++) {
            if (!active[r]) continue;
            if (o.no_cache) {   // the reference: the training forward over the whole prefix
                gpt2_forward(&w, &full, seq + (size_t)r * stride, 1, len[r]);
                logits_of[r] = full.t.t[A_LOGITS].ptr + (size_t)(len[r] - 1) * Vp;
            }
            if (dump && r == 0 && fwrite(logits_of[r], sizeof(float), (size_t)V, dump) != (size_t)V)
                sm_fatal(SM_EXIT_RUNTIME, "cannot write %s", o.dump_logits);
            int tok = sampler_sample(&smp, logits_of[r], sm_rng_uniform(&rng));
            seq[(size_t)r * stride + len[r]++] = tok;
            new_tokens++;
            sampled++;
            if (stream) {
                put_token(&tk, tok, stdout);
                fflush(stdout);
            }
            // the new token sits at position len-1: it can be fed back while that is inside the context
            if (tok == eot || len[r] - n_prompt[r] >= o.max_new || len[r] > maxT) {
                active[r] = 0;
                n_active--;
            } else if (!o.no_cache) {
                inf.rows[n_rows] = r;
                next[n_rows++] = tok;
            }
        }
        if (n_rows > 0) {   // the rows still going: one new position each, through the cache
            gpt2_forward_cached(&w, &inf, next, inf.rows, n_rows, 1);
            for (int i = 0; i < n_rows; i++) logits_of[inf.rows[i]] = inf.logits + (size_t)i * Vp;
        }
        // a profile step is a round of forwards (the tokens they take in); with the cache, the last round
        // only samples the final tokens and is not one
        if (o.no_cache || n_rows > 0) prof_step_end(o.no_cache ? sampled : n_rows);
        if (k >= 2) sm_mark_step(-k);
    }
    const double t_decode = sm_now_s() - t1;
    for (int r = 0; r < R; r++)   // a row cut by the context rather than --max-new or <|endoftext|>: said once each
        if (len[r] > maxT && len[r] - n_prompt[r] < o.max_new && seq[(size_t)r * stride + len[r] - 1] != eot)
            sm_warn("prompt %d stopped at the model's context of %d tokens after %d new token%s (--max-new %d)", r + 1,
                    maxT, len[r] - n_prompt[r], len[r] - n_prompt[r] == 1 ? "" : "s", o.max_new);
    if (dump && fclose(dump) != 0) sm_fatal(SM_EXIT_RUNTIME, "cannot write %s", o.dump_logits);

    if (stream) {
        fputc('\n', stdout);
    } else {
        for (int r = 0; r < R; r++) {   // each row: its prompt as given, then the new tokens' bytes
            if (r) fputc('\n', stdout);
            fwrite(ps.text + ps.start[r], 1, ps.start[r + 1] - ps.start[r], stdout);
            for (int i = n_prompt[r]; i < len[r]; i++) put_token(&tk, seq[(size_t)r * stride + i], stdout);
            fputc('\n', stdout);
        }
    }
    fflush(stdout);
    const double tok_s = t_decode > 0 ? new_tokens / t_decode : 0.0;
    const double prefill_s = !o.no_cache && t_prefill > 0 ? prompt_tokens / t_prefill : 0.0;
    if (o.json) {
        fprintf(stderr, "{\"new_tokens\":%ld,\"tokens_per_s\":%.2f,\"prefill_tokens_per_s\":%.2f,\"rows\":%d,"
                "\"cache\":%s,\"tokens\":[", new_tokens, tok_s, prefill_s, R, o.no_cache ? "false" : "true");
        for (int r = 0; r < R; r++) {
            fprintf(stderr, "%s[", r ? "," : "");
            for (int i = n_prompt[r]; i < len[r]; i++) fprintf(stderr, "%s%d", i > n_prompt[r] ? "," : "", seq[(size_t)r * stride + i]);
            fprintf(stderr, "]");
        }
        fprintf(stderr, "]}\n");
    }
    if (o.profile) prof_print(stdout, 0);

    tokenizer_free(&tk);
    sampler_free(&smp);
    sm_free(prefill_logits);
    sm_free(logits_of);
    sm_free(next);
    if (o.no_cache)
        gpt2_acts_free(&full);
    else
        gpt2_infer_free(&inf);
    sm_free(seq);
    sm_free(len);
    sm_free(n_prompt);
    sm_free(active);
    sm_free(ps.text);
    sm_free(ps.start);
    gpt2_weights_free(&w);
    comm_finalize();
    return SM_EXIT_OK;
}
