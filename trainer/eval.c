// eval.c — `smallmind eval`: mean per-token loss, perplexity and bits per byte of a checkpoint
// over a token shard's windows, on any number of ranks; and the checkpoint loading that eval and
// generate share (infer_load_weights).
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <omp.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels.h"
#include "trainer.h"

typedef struct {
    const char *ckpt, *data;
    int seq, batch, batches, threads, profile, json;
    int int8, group_size;
    const char *precision;
    sm_dtype prec;
} eval_opts;

#define E_OPT(name, type, field, lo, hi, arg, help) {name, type, offsetof(eval_opts, field), lo, hi, arg, help, NULL, 0, 0}
static const cli_opt EVAL_OPTIONS[] = {
    E_OPT("ckpt", CLI_STR, ckpt, 0, 0, "PATH|DIR", "a checkpoint, or a run directory (the checkpoint its `latest` "
          "names) (required)"),
    E_OPT("data", CLI_STR, data, 0, 0, "FILE", "the token shard, e.g. PREFIX_val.bin (required)"),
    E_OPT("seq", CLI_INT, seq, 1, 65536, "T", "tokens per window; windows of T+1 tokens start every T tokens "
          "(default: the model's context)"),
    E_OPT("batch", CLI_INT, batch, 1, 1 << 20, "B", "windows per forward pass over all ranks; must divide by the "
          "rank count (default: ranks x max(1, 2048/T))"),
    E_OPT("batches", CLI_INT, batches, 1, 1 << 30, "N", "evaluate the first N x B windows (default: every window of "
          "the file)"),
    E_OPT("threads", CLI_INT, threads, 1, 1024, "N", "OpenMP threads per rank (default: $OMP_NUM_THREADS, else "
          "$SLURM_CPUS_PER_TASK, else the CPUs the rank may use, shared with the node's other ranks)"),
    E_OPT("int8", CLI_FLAG, int8, 0, 1, NULL, "quantize the weight matrices to int8 at load (one scale per "
          "--group-size inputs) and run the INT8 kernels"),
    E_OPT("group-size", CLI_INT, group_size, 4, 512, "G", "--int8's quantization group along the input dimension (default 64)"),
    E_OPT("precision", CLI_STR, precision, 0, 0, "P", "fp32, or bf16: the matrix products' operands in bf16 "
          "(AVX512-BF16, float32 sums; the checkpoint's float32 weights rounded once at load)"),
    E_OPT("profile", CLI_FLAG, profile, 0, 1, NULL, "the per-op profile of the forward passes"),
    E_OPT("json", CLI_FLAG, json, 0, 1, NULL, "one JSON object: loss, perplexity, bits_per_byte, tokens, tokens_per_s"),
};

static const char EVAL_HEAD[] =
    "usage: smallmind eval --ckpt PATH|RUN_DIR --data FILE [options]\n"
    "  the mean per-token loss of a checkpoint over the windows of a token shard, with perplexity and\n"
    "  bits per byte; on any number of ranks (mpirun -np N) with the same result. A training run's val\n"
    "  event at step S (per-rank --batch b, R ranks, --val-batches V) is reproduced by\n"
    "  eval --ckpt RUN_DIR/ckpt_NNNNNNNN.h5 --data PREFIX_val.bin --seq T --batch b*R --batches V\n";

static void parse_eval(int argc, char **argv, eval_opts *o) {
    *o = (eval_opts){.precision = "fp32"};
    cli_parse("eval", EVAL_HEAD, EVAL_OPTIONS, (int)(sizeof EVAL_OPTIONS / sizeof EVAL_OPTIONS[0]), o, sizeof *o,
              argc, argv, NULL, 0);
    if (!o->ckpt) sm_fatal(SM_EXIT_USAGE, "eval: --ckpt PATH|RUN_DIR is required (command line)");
    if (!o->data) sm_fatal(SM_EXIT_USAGE, "eval: --data FILE is required (command line)");
    o->prec = cli_precision(o->precision);
    if (o->prec == SM_BF16 && o->int8) sm_fatal(SM_EXIT_USAGE, "--precision bf16 and --int8 exclude each other (command line)");
    if (o->group_size && !o->int8) sm_fatal(SM_EXIT_USAGE, "--group-size is --int8's: add --int8 (command line)");
    if (!o->group_size) o->group_size = 64;
}

void ckpt_arg_path(const char *arg, char *path, size_t cap) {
    struct stat st;
    if (stat(arg, &st) != 0 || !S_ISDIR(st.st_mode)) {
        if ((size_t)snprintf(path, cap, "%s", arg) >= cap) sm_fatal(SM_EXIT_USAGE, "checkpoint path too long (%s)", arg);
        return;
    }
    char name[CKPT_NAME_MAX], why[CKPT_ERR_MAX];
    int rc = ckpt_read_latest(arg, name, sizeof name, why, sizeof why);
    if (rc == CKPT_LATEST_MISSING)
        sm_fatal(SM_EXIT_USAGE, "%s is a directory without a `latest` file: not a run directory with a checkpoint "
                 "(%s/latest)", arg, arg);
    if (rc != 0) sm_fatal(SM_EXIT_USAGE, "%s (%s/latest)", why, arg);
    if ((size_t)snprintf(path, cap, "%s/%s", arg, name) >= cap) sm_fatal(SM_EXIT_USAGE, "path too long (%s)", arg);
    if (stat(path, &st) != 0 && errno == ENOENT) {   // `latest` names a deleted file: say which ones are there
        char other[CKPT_NAME_MAX];
        if (ckpt_newest_name(arg, other, sizeof other))
            sm_fatal(SM_EXIT_USAGE, "`latest` names %s, which is not in the run directory; its newest checkpoint is "
                     "%s: pass that file with --ckpt (%s/latest)", name, other, arg);
        sm_fatal(SM_EXIT_USAGE, "`latest` names %s, which is not in the run directory, and it holds no other "
                 "checkpoint (%s/latest)", name, arg);
    }
}

void infer_load_weights(const char *arg, gpt2_weights *w, ckpt_meta *meta, char *path_out, size_t cap) {
    struct stat st;
    if (stat(arg, &st) != 0) sm_fatal(SM_EXIT_USAGE, "no such checkpoint or run directory: %s (%s)", strerror(errno), arg);
    ckpt_arg_path(arg, path_out, cap);
    char err[CKPT_ERR_MAX];
    if (ckpt_read_meta(path_out, meta, err, sizeof err) != 0) sm_fatal(SM_EXIT_USAGE, "%s", err);
    sm_model_config cfg = meta->cfg;
    if (gpt2_config_validate(&cfg, err, sizeof err) != 0 || cfg.padded_vocab_size != meta->cfg.padded_vocab_size)
        sm_fatal(SM_EXIT_USAGE, "the checkpoint's model config is not valid: %s (%s)", err, path_out);
    gpt2_weights_build(w, &cfg);
    if (ckpt_load(path_out, &cfg, meta, &w->params, NULL, NULL, 0, 0, NULL, err, sizeof err) != 0)
        sm_fatal(SM_EXIT_USAGE, "%s", err);
}

// The bytes the target tokens of windows 0 .. n_windows-1 decode to (byte: one per token; gpt2:
// each token's bytes from the BPE files).
static uint64_t target_bytes(const shard *data, const tokenizer *tk, int T, uint64_t n_windows) {
    const uint64_t n_targets = n_windows * (uint64_t)T;
    uint64_t bytes = 0;
    for (uint64_t w = 0; w < n_windows; w++)
        for (int t = 1; t <= T; t++) {
            size_t n = 0;
            tokenizer_token_bytes(tk, data->tokens[w * (uint64_t)T + (uint64_t)t], &n);
            bytes += n;
        }
    return bytes ? bytes : n_targets;
}

// What eval's start sets up (static in cmd_eval: outside the frame setjmp saves).
typedef struct {
    gpt2_weights w;
    ckpt_meta meta;
    char ckpt_path[4096];
    shard data;
    loader ld;
    tokenizer tk;   // the data's tokenizer: each target token's bytes, for bits per byte
    int T, B;
    uint64_t n_windows;
} eval_start;

// Loads the checkpoint (INT8 or bf16 as asked), opens the data and checks both against the flags
// and each other. Errors: sm_fatal(SM_EXIT_USAGE) with one line naming the file or flag.
static void eval_begin(const eval_opts *o, int world, eval_start *st) {
    char err[1024];
    infer_load_weights(o->ckpt, &st->w, &st->meta, st->ckpt_path, sizeof st->ckpt_path);
    if (o->int8 && gpt2_weights_quantize(&st->w, o->group_size, err, sizeof err) != 0)
        sm_fatal(SM_EXIT_USAGE, "%s (command line)", err);
    if (gpt2_weights_set_precision(&st->w, o->prec, err, sizeof err) != 0)
        sm_fatal(SM_EXIT_USAGE, "%s (command line)", err);
    gpt2_weights_pack(&st->w);   // float32: the matrices packed once (nothing for --int8 or bf16)
    const sm_model_config *cfg = &st->w.cfg;
    if (shard_open(&st->data, o->data, cfg->vocab_size, err, sizeof err) != 0) {
        char val[4200];   // `--data PREFIX` as train takes it: eval reads one shard file
        struct stat sb;
        snprintf(val, sizeof val, "%s_val.bin", o->data);
        if (stat(o->data, &sb) != 0 && stat(val, &sb) == 0)
            sm_fatal(SM_EXIT_USAGE, "--data takes a shard file, e.g. --data %s (%s)", val, o->data);
        sm_fatal(SM_EXIT_USAGE, "%s", err);
    }
    // the data's tokenizer (shard header) must be the checkpoint's; and its vocabulary too (a header
    // vocabulary of 0 is the tokenizer's own, e.g. llm.c's GPT-2 shards)
    if (strcmp(tokenizer_name(st->data.tokenizer), cfg->tokenizer) != 0)
        sm_fatal(SM_EXIT_USAGE, "the data file holds %s tokens, the checkpoint's tokenizer is %s (%s)",
                 tokenizer_name(st->data.tokenizer), cfg->tokenizer, o->data);
    const int data_vocab = st->data.vocab_size ? st->data.vocab_size : tokenizer_vocab_size(st->data.tokenizer);
    if (data_vocab != cfg->vocab_size)
        sm_fatal(SM_EXIT_USAGE, "the data file's vocabulary (%d tokens%s) is not the checkpoint's (%d, %s) (%s)",
                 data_vocab, st->data.vocab_size ? "" : ": llm.c's GPT-2", cfg->vocab_size, cfg->tokenizer, o->data);
    if (tokenizer_load(&st->tk, st->data.tokenizer, NULL, err, sizeof err) != 0)
        sm_fatal(SM_EXIT_USAGE, "bits per byte need the %s tokenizer: %s", cfg->tokenizer, err);
    st->T = o->seq ? o->seq : cfg->max_seq_len;
    if (st->T > cfg->max_seq_len)
        sm_fatal(SM_EXIT_USAGE, "--seq %d exceeds the model's context %d (command line)", st->T, cfg->max_seq_len);
    st->B = o->batch ? o->batch : world * (2048 / st->T > 1 ? 2048 / st->T : 1);
    if (st->B % world != 0)
        sm_fatal(SM_EXIT_USAGE, "--batch %d does not divide over %d ranks (command line)", st->B, world);
    if (loader_init(&st->ld, &st->data, st->T, 0, 0, err, sizeof err) != 0) sm_fatal(SM_EXIT_USAGE, "%s", err);
    st->n_windows = st->ld.n_windows;
    if (o->batches) {
        st->n_windows = (uint64_t)o->batches * (uint64_t)st->B;
        if (st->n_windows > st->ld.n_windows)
            sm_fatal(SM_EXIT_USAGE, "--batches %d x --batch %d = %llu windows of %d+1 tokens, more than %s holds (%zu) "
                     "(command line)", o->batches, st->B, (unsigned long long)st->n_windows, st->T, o->data,
                     st->ld.n_windows);
    }
}

int cmd_eval(int argc, char **argv) {
    comm_topology topo;
    comm_init(&argc, &argv, &topo);
    static eval_opts o;   // static: outside the frame setjmp saves
    jmp_buf start;
    if (setjmp(start) == 0) {
        sm_usage_defer(&start);
        parse_eval(argc, argv, &o);
    }
    comm_usage_agree();   // a usage error ends every rank here, printed once
    comm_set_threads(&topo, o.threads);   // --threads, OMP_NUM_THREADS, SLURM_CPUS_PER_TASK, else the CPU mask
    kernels_flush_denormals(1);
    prof_enable(o.profile);

    // start: what every rank checks alike (the checkpoint, the data, the flags against both, the
    // tokenizer bits per byte need), deferred so that an error ends every rank once, printed once
    static eval_start st;
    if (setjmp(start) == 0) {
        sm_usage_defer(&start);
        eval_begin(&o, topo.world_size, &st);
    }
    comm_usage_agree();
    gpt2_weights *w = &st.w;
    const ckpt_meta meta = st.meta;
    const char *ckpt_path_s = st.ckpt_path;
    const sm_model_config *cfg = &w->cfg;
    const int T = st.T, B = st.B, world = topo.world_size;
    const uint64_t n_windows = st.n_windows;

    const int b_rank = B / world;
    gpt2_acts acts;
    gpt2_acts_build(&acts, cfg, b_rank, T, 0);
    int *inputs = sm_arena((size_t)b_rank * T * sizeof(int)), *targets = sm_arena((size_t)b_rank * T * sizeof(int));
    double *per_window = sm_arena(n_windows * sizeof(double));
    eval_sums sums;
    comm_barrier();
    double t0 = sm_now_s();
    prof_step_begin();
    eval_windows(w, &acts, inputs, targets, &st.ld, n_windows, B, topo.rank, world, per_window, &sums);
    prof_step_end((long)(sums.tokens / (uint64_t)world));
    double seconds = sm_now_s() - t0;

    // bits per byte: total nats over the bytes the windows' target tokens decode to, / ln 2
    const double bytes = (double)target_bytes(&st.data, &st.tk, T, sums.windows);
    const double loss = sums.loss_sum / (double)sums.tokens, bpb = sums.loss_sum / log(2.0) / bytes;
    const double tok_s = seconds > 0 ? (double)sums.tokens / seconds : 0.0;
    if (topo.rank == 0) {
        if (o.json) {
            sm_json j;
            sm_json_begin(&j);
            sm_json_num(&j, "loss", "%.9g", loss);
            sm_json_num(&j, "perplexity", "%.9g", exp(loss));
            sm_json_num(&j, "bits_per_byte", "%.9g", bpb);
            sm_json_int(&j, "tokens", (long long)sums.tokens);
            sm_json_num(&j, "tokens_per_s", "%.1f", tok_s);
            sm_json_int(&j, "windows", (long long)sums.windows);
            sm_json_int(&j, "seq", T);
            sm_json_int(&j, "step", meta.step);
            sm_json_str(&j, "ckpt", ckpt_path_s);
            sm_json_str(&j, "data", o.data);
            sm_json_end(&j);
            fputs(j.buf, stdout);
        } else {
            printf("eval %s (step %d) on %s: %llu windows of %d tokens\n", ckpt_path_s, meta.step, o.data,
                   (unsigned long long)sums.windows, T);
            printf("loss %.6f | perplexity %.4f | %.4f bits/byte | %llu tokens | %.0f tokens/s\n", loss, exp(loss), bpb,
                   (unsigned long long)sums.tokens, tok_s);
        }
        if (o.profile) prof_print(stdout, 0);
        fflush(stdout);
    }
    sm_free(per_window);
    sm_free(inputs);
    sm_free(targets);
    gpt2_acts_free(&acts);
    loader_free(&st.ld);
    tokenizer_free(&st.tk);
    shard_close(&st.data);
    gpt2_weights_free(w);
    comm_finalize();
    return SM_EXIT_OK;
}
