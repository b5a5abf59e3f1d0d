// train.c — `smallmind train`: options, the training loop, schedule, validation, logs.
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>

#include "checkpoints.h"
#include "comm.h"
#include "common.h"
#include "data.h"
#include "gpt2.h"
#include "kernels.h"
#include "profile.h"
#include "trainer.h"

typedef struct {
    const char *data;     // PREFIX: PREFIX_train.bin, PREFIX_val.bin
    const char *run_dir;  // config.json, log.jsonl
    int layers;           // L
    int heads;            // H
    int embd;             // C
    int context;          // maxT (0: = seq)
    int vocab;            // V (0: from the shard header, else 50257)
    int seq;              // T
    int batch;            // B per rank
    int accum;            // micro-batches per optimizer step
    double lr;            // peak learning rate
    double min_lr;        // floor of the cosine decay (absolute)
    int warmup;           // linear warmup steps (-1: min(2000, steps/10))
    double wd;            // decoupled weight decay on 2-D weights
    double beta1, beta2, eps;
    double clip;          // global-norm clip (0: off)
    int steps;            // optimizer steps; fixes the schedule
    int eval_every;       // val loss every N steps (0: only at the end)
    int val_batches;      // val windows = val_batches x batch per rank
    unsigned long long seed;
    int threads;          // OpenMP threads per rank (0: OMP_NUM_THREADS, else the CPUs the rank may use)
    double bucket_mb;     // gradient allreduce bucket size
    int zero;             // 1: ZeRO-1, AdamW moments sharded over ranks
    const char *dump_params;   // write the final parameters as raw float32 (tests, interop)
    int stop_at;          // end cleanly after this step, checkpointing it (0: no)
    int ckpt_every;       // checkpoint every N steps (0: only at the end)
    int keep;             // keep the newest K checkpoints (0: all)
    const char *resume;   // auto | none | PATH
    int profile;          // per-op table at the end
} train_opts;

static const char TRAIN_USAGE[] =
    "usage: smallmind train --data PREFIX --run-dir DIR [options]\n"
    "model:\n"
    "  --layers L        transformer blocks (default 4)\n"
    "  --heads H         attention heads, must divide --embd (default 4)\n"
    "  --embd C          embedding width (default 256)\n"
    "  --context N       max sequence length of the model (default: --seq)\n"
    "  --vocab V         vocabulary size (default: from the shard header, else 50257)\n"
    "batch:\n"
    "  --seq T           tokens per window (default 256)\n"
    "  --batch B         windows per rank per micro-step (default 8)\n"
    "  --accum K         micro-steps per optimizer step (default 1)\n"
    "optimizer (AdamW, warmup then cosine decay to --min-lr):\n"
    "  --lr X            peak learning rate (default 6e-4)\n"
    "  --min-lr X        final learning rate, absolute (default 6e-5)\n"
    "  --warmup N        warmup steps (default min(2000, steps/10))\n"
    "  --wd X            weight decay on 2-D weights (default 0.1)\n"
    "  --beta1 X         (default 0.9)\n"
    "  --beta2 X         (default 0.95)\n"
    "  --eps X           (default 1e-8)\n"
    "  --clip X          global gradient-norm clip, 0 = off (default 1.0)\n"
    "run:\n"
    "  --steps N         optimizer steps (default 1000)\n"
    "  --eval-every N    val loss every N steps, 0 = only at the end (default 100)\n"
    "  --val-batches N   val windows = N x batch (default 20)\n"
    "  --seed S          RNG seed for init and data order (default 1337)\n"
    "  --threads N       OpenMP threads per rank (default: $OMP_NUM_THREADS, else $SLURM_CPUS_PER_TASK, else the CPUs the rank may use)\n"
    "distributed (mpirun -np N / srun):\n"
    "  --bucket-mb X     gradient allreduce bucket size in MiB (default 8: below glibc's 32 MiB mmap threshold)\n"
    "  --zero 0|1        1: shard the AdamW moments over the ranks (ZeRO-1) (default 0)\n"
    "checkpoints (RUN_DIR/ckpt_NNNNNNNN.h5, sharded HDF5):\n"
    "  --ckpt-every N    checkpoint every N steps; 0 = only at the end (default 0)\n"
    "  --keep K          keep only the newest K checkpoints; 0 = all (default 0)\n"
    "  --stop-at N       end cleanly after step N, checkpointing it; the schedule still follows --steps\n"
    "  --resume MODE     auto: newest checkpoint in RUN_DIR that verifies, else fresh; none: fresh\n"
    "                    (refuses a RUN_DIR holding checkpoints); PATH: that file (default auto)\n"
    "  SIGTERM/SIGUSR1   checkpoint at the end of the current step and exit 75 (preemption: requeue, resume)\n"
    "diagnostics:\n"
    "  --profile         per-op time, share of the step, GFLOP/s, GB/s and heap allocations, printed at the end\n"
    "  --dump-params F   at the end, write the parameters to F as raw float32 in checkpoint order\n"
    "  --help\n";

static void parse_train(int argc, char **argv, train_opts *o) {
    *o = (train_opts){
        .layers = 4, .heads = 4, .embd = 256, .context = 0, .vocab = 0, .seq = 256, .batch = 8, .accum = 1,
        .lr = 6e-4, .min_lr = 6e-5, .warmup = -1, .wd = 0.1, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .clip = 1.0,
        .steps = 1000, .eval_every = 100, .val_batches = 20, .seed = 1337, .threads = 0, .bucket_mb = 8.0, .zero = 0,
        .resume = "auto",
    };
    enum { O_DATA = 256, O_RUN, O_LAYERS, O_HEADS, O_EMBD, O_CONTEXT, O_VOCAB, O_SEQ, O_BATCH, O_ACCUM, O_LR, O_MINLR,
           O_WARMUP, O_WD, O_B1, O_B2, O_EPS, O_CLIP, O_STEPS, O_EVAL, O_VALB, O_SEED, O_THREADS, O_BUCKET, O_ZERO,
           O_DUMP, O_STOPAT, O_CKPTEVERY, O_KEEP, O_RESUME, O_PROFILE, O_HELP };
    static const struct option opts[] = {
        {"data", required_argument, 0, O_DATA}, {"run-dir", required_argument, 0, O_RUN},
        {"layers", required_argument, 0, O_LAYERS}, {"heads", required_argument, 0, O_HEADS},
        {"embd", required_argument, 0, O_EMBD}, {"context", required_argument, 0, O_CONTEXT},
        {"vocab", required_argument, 0, O_VOCAB}, {"seq", required_argument, 0, O_SEQ},
        {"batch", required_argument, 0, O_BATCH}, {"accum", required_argument, 0, O_ACCUM},
        {"lr", required_argument, 0, O_LR}, {"min-lr", required_argument, 0, O_MINLR},
        {"warmup", required_argument, 0, O_WARMUP}, {"wd", required_argument, 0, O_WD},
        {"beta1", required_argument, 0, O_B1}, {"beta2", required_argument, 0, O_B2},
        {"eps", required_argument, 0, O_EPS}, {"clip", required_argument, 0, O_CLIP},
        {"steps", required_argument, 0, O_STEPS}, {"eval-every", required_argument, 0, O_EVAL},
        {"val-batches", required_argument, 0, O_VALB}, {"seed", required_argument, 0, O_SEED},
        {"threads", required_argument, 0, O_THREADS}, {"bucket-mb", required_argument, 0, O_BUCKET},
        {"zero", required_argument, 0, O_ZERO}, {"dump-params", required_argument, 0, O_DUMP},
        {"stop-at", required_argument, 0, O_STOPAT}, {"ckpt-every", required_argument, 0, O_CKPTEVERY},
        {"keep", required_argument, 0, O_KEEP}, {"resume", required_argument, 0, O_RESUME},
        {"profile", no_argument, 0, O_PROFILE}, {"help", no_argument, 0, O_HELP}, {0, 0, 0, 0},
    };
    opterr = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_DATA: o->data = optarg; break;
        case O_RUN: o->run_dir = optarg; break;
        case O_LAYERS: o->layers = (int)cli_int("--layers", optarg, 1, 1024); break;
        case O_HEADS: o->heads = (int)cli_int("--heads", optarg, 1, 4096); break;
        case O_EMBD: o->embd = (int)cli_int("--embd", optarg, 1, 65536); break;
        case O_CONTEXT: o->context = (int)cli_int("--context", optarg, 1, 65536); break;
        case O_VOCAB: o->vocab = (int)cli_int("--vocab", optarg, 2, 65536); break;
        case O_SEQ: o->seq = (int)cli_int("--seq", optarg, 1, 65536); break;
        case O_BATCH: o->batch = (int)cli_int("--batch", optarg, 1, 1 << 20); break;
        case O_ACCUM: o->accum = (int)cli_int("--accum", optarg, 1, 1 << 20); break;
        case O_LR: o->lr = cli_double("--lr", optarg, 0.0, 10.0); break;
        case O_MINLR: o->min_lr = cli_double("--min-lr", optarg, 0.0, 10.0); break;
        case O_WARMUP: o->warmup = (int)cli_int("--warmup", optarg, 0, 1 << 30); break;
        case O_WD: o->wd = cli_double("--wd", optarg, 0.0, 10.0); break;
        case O_B1: o->beta1 = cli_double("--beta1", optarg, 0.0, 0.999999); break;
        case O_B2: o->beta2 = cli_double("--beta2", optarg, 0.0, 0.999999999); break;
        case O_EPS: o->eps = cli_double("--eps", optarg, 0.0, 1.0); break;
        case O_CLIP: o->clip = cli_double("--clip", optarg, 0.0, 1e30); break;
        case O_STEPS: o->steps = (int)cli_int("--steps", optarg, 1, 1 << 30); break;
        case O_EVAL: o->eval_every = (int)cli_int("--eval-every", optarg, 0, 1 << 30); break;
        case O_VALB: o->val_batches = (int)cli_int("--val-batches", optarg, 1, 1 << 20); break;
        case O_SEED: o->seed = (unsigned long long)cli_int("--seed", optarg, 0, 0x7fffffffffffffffL); break;
        case O_THREADS: o->threads = (int)cli_int("--threads", optarg, 1, 1024); break;
        case O_BUCKET: o->bucket_mb = cli_double("--bucket-mb", optarg, 0.01, 1024.0); break;
        case O_ZERO: o->zero = (int)cli_int("--zero", optarg, 0, 1); break;
        case O_DUMP: o->dump_params = optarg; break;
        case O_STOPAT: o->stop_at = (int)cli_int("--stop-at", optarg, 1, 1 << 30); break;
        case O_CKPTEVERY: o->ckpt_every = (int)cli_int("--ckpt-every", optarg, 0, 1 << 30); break;
        case O_KEEP: o->keep = (int)cli_int("--keep", optarg, 0, 1 << 20); break;
        case O_RESUME: o->resume = optarg; break;
        case O_PROFILE: o->profile = 1; break;
        case O_HELP: fputs(TRAIN_USAGE, stdout); exit(SM_EXIT_OK);
        default: cli_bad_option("train", argc, argv);
        }
    }
    if (optind < argc) sm_fatal(SM_EXIT_USAGE, "train: unexpected argument '%s' (command line)", argv[optind]);
    if (!o->data) sm_fatal(SM_EXIT_USAGE, "train: --data PREFIX is required (command line)");
    if (!o->run_dir) sm_fatal(SM_EXIT_USAGE, "train: --run-dir DIR is required (command line)");
    if (o->context == 0) o->context = o->seq;
    if (o->seq > o->context)
        sm_fatal(SM_EXIT_USAGE, "--seq %d exceeds the model context --context %d (command line)", o->seq, o->context);
    if (o->min_lr > o->lr) sm_fatal(SM_EXIT_USAGE, "--min-lr %g exceeds --lr %g (command line)", o->min_lr, o->lr);
    if (!o->resume[0]) sm_fatal(SM_EXIT_USAGE, "--resume expects auto, none or a checkpoint path (command line)");
    if (o->warmup < 0) o->warmup = o->steps / 10 < 2000 ? o->steps / 10 : 2000;
}

// Warmup: lr * (step+1)/(warmup+1) for step < warmup (nanoGPT); then cosine from lr to min_lr
// over the remaining steps. step is 0-based.
static double lr_at(const train_opts *o, int step) {
    if (step < o->warmup) return o->lr * (double)(step + 1) / (double)(o->warmup + 1);
    int decay_steps = o->steps - o->warmup;
    if (decay_steps <= 1) return o->lr;
    double ratio = (double)(step - o->warmup) / (double)(decay_steps - 1);
    double coeff = 0.5 * (1.0 + cos(M_PI * ratio));
    return o->min_lr + coeff * (o->lr - o->min_lr);
}

// mkdir -p: the run directory and any missing parents
static void make_dir(const char *path) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; ; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;
            *p = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                sm_fatal(errno == ENOTDIR ? SM_EXIT_USAGE : SM_EXIT_RUNTIME, "cannot create run directory: %s (%s)",
                         strerror(errno), buf);
            *p = saved;
            if (!saved) break;
        }
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        sm_fatal(SM_EXIT_USAGE, "run directory exists but is not a directory (%s)", path);
}

static void write_config_json(const train_opts *o, const gpt2_config *cfg, int world, int threads) {
    char path[4096], buf[4096], err[1024];
    snprintf(path, sizeof path, "%s/config.json", o->run_dir);
    int n = snprintf(buf, sizeof buf,
                     "{\"data\":\"%s\",\"run_dir\":\"%s\",\"layers\":%d,\"heads\":%d,\"embd\":%d,\"context\":%d,"
                     "\"vocab\":%d,\"padded_vocab\":%d,\"seq\":%d,\"batch\":%d,\"accum\":%d,\"world_size\":%d,"
                     "\"global_batch\":%d,\"lr\":%.9g,\"min_lr\":%.9g,\"warmup\":%d,\"wd\":%.9g,\"beta1\":%.9g,"
                     "\"beta2\":%.9g,\"eps\":%.9g,\"clip\":%.9g,\"steps\":%d,\"eval_every\":%d,\"val_batches\":%d,"
                     "\"seed\":%llu,\"threads\":%d}\n",
                     o->data, o->run_dir, cfg->n_layer, cfg->n_head, cfg->n_embd, cfg->max_seq_len, cfg->vocab_size,
                     cfg->padded_vocab_size, o->seq, o->batch, o->accum, world, o->batch * o->accum * world, o->lr,
                     o->min_lr, o->warmup, o->wd, o->beta1, o->beta2, o->eps, o->clip, o->steps, o->eval_every,
                     o->val_batches, o->seed, threads);
    SM_CHECK(n > 0 && (size_t)n < sizeof buf, "config.json does not fit its buffer");
    if (sm_write_file_atomic(path, buf, (size_t)n, err, sizeof err) != 0) sm_fatal(SM_EXIT_RUNTIME, "%s", err);
}

// Mean per-token loss over the first n_windows windows of the val shard (in order);
// each rank takes every world-th batch, then the sums are combined over ranks.
static float evaluate(gpt2 *model, loader *val, int B, int T, int n_batches, const comm_topology *topo) {
    double sum = 0.0;
    size_t n_tokens = 0;
    for (int i = topo->rank; i < n_batches; i += topo->world_size) {
        loader_fill(val, (uint64_t)i * (uint64_t)B, B, model->inputs, model->targets);
        sum += (double)gpt2_forward(model, model->inputs, model->targets, B, T, 0.0f) * B * T;
        n_tokens += (size_t)B * T;
    }
    sum = comm_allreduce_sum_double(sum);
    double tokens = comm_allreduce_sum_double((double)n_tokens);
    return (float)(sum / tokens);
}

// Gradient segments in the order backward finalises them: group 0 is the last layer with
// the final LayerNorm, group k is layer L-1-k, group L is wte and wpe (the tied wte gradient
// is complete only after the encoder backward, at the very end).
int train_grad_segments(const gpt2 *model, comm_segment *segs) {
    const int L = model->cfg.n_layer;
    int n = 0;
    for (int g = 0; g < L; g++) {
        int l = L - 1 - g;
        if (g == 0) {
            segs[n++] = (comm_segment){model->grads.t[P_LNFW].offset, model->grads.t[P_LNFW].n_floats, 0};
            segs[n++] = (comm_segment){model->grads.t[P_LNFB].offset, model->grads.t[P_LNFB].n_floats, 0};
        }
        for (int i = P_LN1W; i <= P_FCPROJB; i++) {
            const sm_tensor *t = &model->grads.t[i];
            size_t per_layer = t->n_floats / (size_t)L;
            segs[n++] = (comm_segment){t->offset + (size_t)l * per_layer, per_layer, g};
        }
    }
    segs[n++] = (comm_segment){model->grads.t[P_WTE].offset, model->grads.t[P_WTE].n_floats, L};
    segs[n++] = (comm_segment){model->grads.t[P_WPE].offset, model->grads.t[P_WPE].n_floats, L};
    return n;
}

void train_layer_done(void *ctx, int layer) {
    const train_sync_ctx *c = ctx;
    comm_gradsync_ready(c->sync, c->n_layer - 1 - layer);   // layer l completes group L-1-l
}

void train_sync_progress(void *ctx) { comm_gradsync_progress(((const train_sync_ctx *)ctx)->sync); }

// FNV-1a over the bytes of a value: the configuration fingerprint every rank must share
static uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t config_fingerprint(const train_opts *o, const shard *train, const shard *val) {
    uint64_t h = 0xcbf29ce484222325ull;
    const int ints[] = {o->layers, o->heads, o->embd, o->context, o->vocab, o->seq, o->batch, o->accum, o->warmup,
                        o->steps, o->eval_every, o->val_batches, o->zero};
    const double dbls[] = {o->lr, o->min_lr, o->wd, o->beta1, o->beta2, o->eps, o->clip, o->bucket_mb};
    h = fnv1a(h, ints, sizeof ints);
    h = fnv1a(h, dbls, sizeof dbls);
    h = fnv1a(h, &o->seed, sizeof o->seed);
    h = fnv1a(h, &train->n_tokens, sizeof train->n_tokens);
    h = fnv1a(h, &val->n_tokens, sizeof val->n_tokens);
    // a sample of the data itself, so different files of the same size are caught
    for (size_t k = 0; k < 64; k++) h = fnv1a(h, &train->tokens[k * (train->n_tokens - 1) / 63], sizeof(uint16_t));
    return h;
}

// Set by SIGTERM/SIGUSR1 (Slurm's warning before a time limit or preemption): the loop
// checkpoints at the end of the step and exits cleanly.
static volatile sig_atomic_t g_stop_signal;
static void on_stop_signal(int sig) { g_stop_signal = sig; }

static void install_stop_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    SM_CHECK(sigaction(SIGTERM, &sa, NULL) == 0, "cannot install the SIGTERM handler");
    SM_CHECK(sigaction(SIGUSR1, &sa, NULL) == 0, "cannot install the SIGUSR1 handler");
}

// --resume: fills path with the checkpoint to load, or "" to start fresh. Collective.
static void resolve_resume(const train_opts *o, char *path, size_t cap) {
    char err[CKPT_ERR_MAX];
    path[0] = '\0';
    if (strcmp(o->resume, "auto") != 0 && strcmp(o->resume, "none") != 0) {
        snprintf(path, cap, "%s", o->resume);
        return;
    }
    ckpt_skipped skipped[8];
    int n_skipped = 0;
    int r = ckpt_find_latest(o->run_dir, path, cap, skipped, 8, &n_skipped, err, sizeof err);
    if (strcmp(o->resume, "none") == 0) {
        if (r != CKPT_FIND_NONE)
            sm_fatal(SM_EXIT_USAGE, "--resume none but the run directory holds checkpoints: use --resume auto or "
                     "another --run-dir (%s)", o->run_dir);
        path[0] = '\0';
        return;
    }
    for (int i = 0; i < n_skipped && i < 8; i++)
        if (sm_log_rank() == 0) sm_warn("skipping damaged checkpoint %s: %s", skipped[i].name, skipped[i].reason);
    if (r < 0) sm_fatal(SM_EXIT_USAGE, "%s", err);
    if (r == CKPT_FIND_NONE) path[0] = '\0';
}

// Rank 0's log: fresh, or on resume the events up to step0 kept (those after it will be
// written again by this run).
static FILE *open_log(const char *run_dir, int step0) {
    char path[4096], line[4096];
    snprintf(path, sizeof path, "%s/log.jsonl", run_dir);
    if (step0 > 0) {
        FILE *in = fopen(path, "r");
        if (in) {
            size_t cap = 1 << 16, len = 0;
            char *keep = sm_malloc(cap);
            while (fgets(line, sizeof line, in)) {
                const char *p = strstr(line, "\"step\":");
                if (p && atoi(p + 7) > step0) continue;
                size_t n = strlen(line);
                if (len + n + 1 > cap) {
                    char *bigger = sm_malloc(cap * 2);
                    memcpy(bigger, keep, len);
                    sm_free(keep);
                    keep = bigger;
                    cap *= 2;
                }
                memcpy(keep + len, line, n);
                len += n;
            }
            fclose(in);
            char err[1024];
            if (sm_write_file_atomic(path, keep, len, err, sizeof err) != 0) sm_fatal(SM_EXIT_RUNTIME, "%s", err);
            sm_free(keep);
        }
    }
    FILE *log = fopen(path, step0 > 0 ? "a" : "w");
    if (!log) sm_fatal(SM_EXIT_RUNTIME, "cannot open log: %s (%s)", strerror(errno), path);
    return log;
}

int cmd_train(int argc, char **argv) {
    comm_topology topo;
    comm_init(&argc, &argv, &topo);
    train_opts o;
    parse_train(argc, argv, &o);
    prof_enable(o.profile);

    int threads = comm_set_threads(&topo, o.threads);   // [slurm] --threads, OMP_NUM_THREADS, SLURM_CPUS_PER_TASK, mask
    install_stop_handlers();   // [slurm] before start-up, so that a preemption notice cannot kill the rank
    kernels_flush_denormals(1);   // see kernels.h: denormal AdamW moments would slow every step

    // data: the train shard (and val) of PREFIX
    char train_path[4096], val_path[4096], err[1024];
    snprintf(train_path, sizeof train_path, "%s_train.bin", o.data);
    snprintf(val_path, sizeof val_path, "%s_val.bin", o.data);
    shard train_shard, val_shard;
    if (shard_open(&train_shard, train_path, o.vocab, err, sizeof err) != 0) sm_fatal(SM_EXIT_USAGE, "%s", err);
    if (shard_open(&val_shard, val_path, o.vocab ? o.vocab : train_shard.vocab_size, err, sizeof err) != 0)
        sm_fatal(SM_EXIT_USAGE, "%s", err);

    gpt2_config cfg = {
        .n_layer = o.layers, .n_head = o.heads, .n_embd = o.embd, .max_seq_len = o.context,
        .vocab_size = o.vocab ? o.vocab : (train_shard.vocab_size ? train_shard.vocab_size : 50257),
    };
    if (gpt2_config_validate(&cfg, err, sizeof err) != 0) sm_fatal(SM_EXIT_USAGE, "%s (command line)", err);

    if (!comm_all_equal_u64(config_fingerprint(&o, &train_shard, &val_shard)))
        sm_fatal(SM_EXIT_USAGE, "ranks disagree on the configuration: flags or data files differ between ranks (%s)",
                 train_path);

    loader train_loader, val_loader;
    if (loader_init(&train_loader, &train_shard, o.seq, 1, o.seed, err, sizeof err) != 0) sm_fatal(SM_EXIT_USAGE, "%s", err);
    if (loader_init(&val_loader, &val_shard, o.seq, 0, o.seed, err, sizeof err) != 0) sm_fatal(SM_EXIT_USAGE, "%s", err);
    int val_batches = o.val_batches;
    if ((size_t)val_batches * (size_t)o.batch > val_loader.n_windows)
        val_batches = (int)(val_loader.n_windows / (size_t)o.batch) > 0 ? (int)(val_loader.n_windows / (size_t)o.batch) : 1;

    if (topo.rank == 0) {
        make_dir(o.run_dir);
        write_config_json(&o, &cfg, topo.world_size, threads);
    }
    comm_barrier();   // the run directory exists for every rank from here on
    // [slurm] more than one node: every rank must see this run directory (a shared filesystem)
    if (topo.n_nodes > 1 && ckpt_check_shared_dir(o.run_dir, err, sizeof err) != 0) sm_fatal(SM_EXIT_USAGE, "%s", err);
    comm_print_topology(&topo, threads);

    gpt2 model;
    gpt2_build(&model, &cfg, o.batch, o.seq);
    gpt2_init_weights(&model, o.seed);
    // identical start on every rank: rank 0's parameters are broadcast
    comm_bcast_bytes(model.params.base, model.params.n_floats * sizeof(float), 0);

    const int global_batch = o.batch * o.accum * topo.world_size;
    sm_info("model: L=%d H=%d C=%d maxT=%d V=%d (Vp=%d), %zu parameters", cfg.n_layer, cfg.n_head, cfg.n_embd,
            cfg.max_seq_len, cfg.vocab_size, cfg.padded_vocab_size, model.n_params);
    sm_info("data: %s (%zu tokens, %zu windows of %d+1), val %s (%zu tokens, %d batches)", train_path,
            train_shard.n_tokens, train_loader.n_windows, o.seq, val_path, val_shard.n_tokens, val_batches);
    sm_info("batch: %d per rank x %d accum x %d ranks = %d windows = %d tokens per step", o.batch, o.accum,
            topo.world_size, global_batch, global_batch * o.seq);
    sm_info("optimizer: AdamW lr %g -> %g (warmup %d, cosine), betas %g/%g, eps %g, wd %g, clip %g; %d steps, seed %llu",
            o.lr, o.min_lr, o.warmup, o.beta1, o.beta2, o.eps, o.wd, o.clip, o.steps, o.seed);

    // gradients: bucketed, non-blocking sums started as backward finalises each layer;
    // the loss is scaled by 1/world so the sum over ranks is the mean gradient
    comm_segment *segs = sm_calloc((size_t)cfg.n_layer * 12 + 4, sizeof(comm_segment));
    int n_segs = train_grad_segments(&model, segs);
    comm_gradsync sync;
    comm_gradsync_init(&sync, model.grads.base, model.grads.n_floats, segs, n_segs, o.bucket_mb, o.zero);
    comm_gradsync_set_piece_fn(&sync, sum_squares);   // the clip's norm, from gradients still in cache
    sm_free(segs);
    if (o.zero) gpt2_shard_moments(&model, sync.slice_lo, sync.slice_hi);
    train_sync_ctx ctx = {.sync = &sync, .n_layer = cfg.n_layer};
    sm_info("gradient sync: %d buckets of <= %g MiB%s", sync.n_buckets, o.bucket_mb,
            o.zero ? ", ZeRO-1 (moments sharded over ranks)" : "");

    // resume: the state after step0 completed steps; data continues at the global cursor
    ckpt_meta meta = {0};
    ckpt_model_config ckpt_cfg = {
        .n_layer = cfg.n_layer, .n_head = cfg.n_head, .n_embd = cfg.n_embd, .max_seq_len = cfg.max_seq_len,
        .vocab_size = cfg.vocab_size, .padded_vocab_size = cfg.padded_vocab_size,
    };
    snprintf(ckpt_cfg.tokenizer, sizeof ckpt_cfg.tokenizer, "%s", cfg.vocab_size == 256 ? "byte" : "gpt2");
    int step0 = 0;
    uint64_t cursor0 = 0, tokens0 = 0;
    sm_rng rng;   // the run's generator (saved and restored; nothing in a step draws from it yet)
    sm_rng_seed(&rng, o.seed, 1000 + (uint64_t)topo.rank);
    char resume_path[4096] = "";
    resolve_resume(&o, resume_path, sizeof resume_path);
    if (resume_path[0]) {
        ckpt_stats st;
        if (ckpt_load(resume_path, &ckpt_cfg, &meta, &model.params, &model.m, &model.v, model.moment_lo,
                      model.moment_hi, &st, err, sizeof err) != 0)
            sm_fatal(SM_EXIT_USAGE, "%s", err);
        step0 = meta.step;
        cursor0 = meta.data_cursor;
        tokens0 = meta.tokens_seen;
        if (meta.rng_restored) {
            // nothing in a step draws from the run's generator yet, so the stored state is the
            // seeded one: a different --seed would silently change the data order
            if (memcmp(&meta.rng, &rng, sizeof rng) != 0)
                sm_fatal(SM_EXIT_USAGE, "--seed %llu is not the seed this run was started with: the data order would "
                         "change; resume with the original --seed (%s)", o.seed, resume_path);
            rng = meta.rng;
        }
        sm_info("resumed from %s: step %d, %llu tokens seen, data cursor %llu (%.2f s, %.2f GB/s)", resume_path, step0,
                (unsigned long long)tokens0, (unsigned long long)cursor0, st.seconds,
                st.seconds > 0 ? (double)st.bytes / st.seconds / 1e9 : 0.0);
        if (meta.world_size != topo.world_size)
            sm_info("world size changed: %d ranks wrote the checkpoint, %d resume it; global batch %d windows now "
                    "(was %d with these --batch/--accum)", meta.world_size, topo.world_size, global_batch,
                    o.batch * o.accum * meta.world_size);
        if (step0 >= o.steps) {
            sm_info("checkpoint is at step %d, --steps is %d: nothing to do", step0, o.steps);
            comm_gradsync_free(&sync);
            gpt2_free(&model);
            comm_finalize();
            return SM_EXIT_OK;
        }
    }
    FILE *log = topo.rank == 0 ? open_log(o.run_dir, step0) : NULL;
    int exit_status = SM_EXIT_OK;   // [slurm] SM_EXIT_STOPPED (75) when a signal stopped the run early

    const float dloss = 1.0f / ((float)o.batch * (float)o.seq * (float)o.accum * (float)topo.world_size);
    for (int step = step0; step < o.steps; step++) {
        sm_mark_step(step + 1);
        prof_step_begin();
        uint64_t allocs0 = sm_alloc_count();   // smallmind's own allocations in this step
        double t0 = sm_now_s(), t_fwd = 0.0, t_bwd = 0.0;
        gpt2_zero_grad(&model);
        comm_gradsync_begin(&sync);
        double loss_sum = 0.0;
        for (int a = 0; a < o.accum; a++) {
            uint64_t cursor = cursor0 + (uint64_t)(step - step0) * (uint64_t)global_batch +
                              ((uint64_t)a * (uint64_t)topo.world_size + (uint64_t)topo.rank) * (uint64_t)o.batch;
            loader_fill(&train_loader, cursor, o.batch, model.inputs, model.targets);
            double ta = sm_now_s();
            loss_sum += gpt2_forward(&model, model.inputs, model.targets, o.batch, o.seq, dloss);
            double tb = sm_now_s();
            // only the last micro-step synchronises (DDP's no_sync for the others)
            int last = a == o.accum - 1;
            model.layer_done = last ? train_layer_done : NULL;
            model.progress = last ? train_sync_progress : NULL;
            model.layer_done_ctx = &ctx;
            gpt2_backward(&model);
            t_fwd += tb - ta;
            t_bwd += sm_now_s() - tb;
        }
        comm_gradsync_wait(&sync);
        double t_opt0 = sm_now_s();
        float loss = (float)(comm_allreduce_sum_double(loss_sum / o.accum) / topo.world_size);
        // the gradients' sum of squares, taken by the sync as each bucket became final
        double sumsq = comm_gradsync_total(&sync);
        if (o.zero) sumsq = comm_allreduce_sum_double(sumsq);   // each rank holds its slice
        float norm = (float)sqrt(sumsq);
        float lr = (float)lr_at(&o, step);
        gpt2_adamw(&model, lr, (float)o.beta1, (float)o.beta2, (float)o.eps, (float)o.wd, step + 1, (float)o.clip, norm);
        comm_allgather_slices(&sync, model.params.base);
        prof_step_end((long)o.batch * o.seq * o.accum);
        double t_end = sm_now_s();
        double ms = (t_end - t0) * 1e3;
        double tok_s = (double)global_batch * o.seq / (ms * 1e-3);
        sm_mark_step(-(step + 1));
        double wait_ms = (sync.t_end - sync.t_wait_start) * 1e3, comm_ms = (sync.t_end - sync.t_first_start) * 1e3;
        double hidden = comm_ms > 0 ? 1.0 - wait_ms / comm_ms : 1.0;
        if (!isfinite(loss)) sm_fatal(SM_EXIT_RUNTIME, "loss is %f at step %d: training diverged (lower --lr?)", loss, step + 1);
        if (topo.rank == 0) {
            printf("step %5d/%d | loss %.4f | lr %.3e | norm %.3f | %.0f tok/s | %.1f ms\n", step + 1, o.steps, loss, lr,
                   norm, tok_s, ms);
            fflush(stdout);
            fprintf(log,
                    "{\"event\":\"step\",\"step\":%d,\"loss\":%.6f,\"lr\":%.6e,\"grad_norm\":%.6f,\"tokens_per_s\":%.1f,"
                    "\"ms\":%.3f,\"fwd_ms\":%.3f,\"bwd_ms\":%.3f,\"comm_wait_ms\":%.3f,\"comm_ms\":%.3f,"
                    "\"hidden_frac\":%.4f,\"opt_ms\":%.3f,\"allocs\":%llu}\n",
                    step + 1, loss, lr, norm, tok_s, ms, t_fwd * 1e3, t_bwd * 1e3, wait_ms, comm_ms, hidden,
                    (t_end - t_opt0) * 1e3, (unsigned long long)(sm_alloc_count() - allocs0));
            fflush(log);
        }
        int done = step + 1;
        if ((o.eval_every > 0 && done % o.eval_every == 0) || done == o.steps) {
            float val = evaluate(&model, &val_loader, o.batch, o.seq, val_batches, &topo);
            if (topo.rank == 0) {
                printf("step %5d/%d | val loss %.4f\n", done, o.steps, val);
                fprintf(log, "{\"event\":\"val\",\"step\":%d,\"val_loss\":%.6f}\n", done, val);
                fflush(log);
            }
        }
        // preemption: a signal on any rank stops every rank after this step
        int stop = g_stop_signal != 0;
        if (topo.world_size > 1) stop = comm_allreduce_max_int(stop);
        int stop_here = stop || done == o.stop_at;
        if (stop_here || done == o.steps || (o.ckpt_every > 0 && done % o.ckpt_every == 0)) {
            meta.step = done;
            meta.tokens_seen = tokens0 + (uint64_t)(done - step0) * (uint64_t)global_batch * (uint64_t)o.seq;
            meta.data_cursor = cursor0 + (uint64_t)(done - step0) * (uint64_t)global_batch;
            meta.rng = rng;
            meta.cfg = ckpt_cfg;
            meta.optim = (ckpt_optim){.lr = o.lr, .min_lr = o.min_lr, .beta1 = o.beta1, .beta2 = o.beta2, .eps = o.eps,
                                      .weight_decay = o.wd, .warmup = o.warmup, .total_steps = o.steps};
            ckpt_stats st;
            if (ckpt_save(o.run_dir, &meta, &model.params, &model.m, &model.v, model.moment_lo, model.moment_hi, o.keep,
                          &st, err, sizeof err) != 0)
                sm_fatal(SM_EXIT_RUNTIME, "%s", err);
            if (topo.rank == 0) {
                char path[4096];
                ckpt_path(path, sizeof path, o.run_dir, done);
                double gbps = st.seconds > 0 ? (double)st.bytes / st.seconds / 1e9 : 0.0;
                printf("step %5d/%d | checkpoint %s (%.1f MB, %.2f s, %.2f GB/s)\n", done, o.steps, path,
                       (double)st.bytes / 1e6, st.seconds, gbps);
                fprintf(log, "{\"event\":\"checkpoint\",\"step\":%d,\"path\":\"%s\",\"bytes\":%llu,\"save_s\":%.4f,"
                        "\"io_s\":%.4f,\"gbps\":%.4f}\n", done, path, (unsigned long long)st.bytes, st.seconds,
                        st.io_seconds, gbps);
                fflush(log);
            }
        }
        if (stop_here && done < o.steps) {
            sm_info("stopped after step %d (%s); resume with the same command", done,
                    stop ? "signal" : "--stop-at");
            if (stop) exit_status = SM_EXIT_STOPPED;
            break;
        }
    }

    if (o.profile && topo.rank == 0) {
        prof_print(stdout, 0);
        prof_print(log, 1);
    }
    if (log && fclose(log) != 0) sm_fatal(SM_EXIT_RUNTIME, "cannot close %s/log.jsonl: %s", o.run_dir, strerror(errno));
    if (o.dump_params && topo.rank == 0) {
        // the logical tensors back to back, without the arena's alignment padding
        float *flat = sm_malloc(model.n_params * sizeof(float));
        size_t k = 0;
        for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
            memcpy(flat + k, model.params.t[i].ptr, model.params.t[i].n_floats * sizeof(float));
            k += model.params.t[i].n_floats;
        }
        if (sm_write_file_atomic(o.dump_params, flat, k * sizeof(float), err, sizeof err) != 0)
            sm_fatal(SM_EXIT_RUNTIME, "%s", err);
        sm_free(flat);
    }
    comm_gradsync_free(&sync);
    gpt2_free(&model);
    loader_free(&train_loader);
    loader_free(&val_loader);
    shard_close(&train_shard);
    shard_close(&val_shard);
    comm_finalize();
    return exit_status;
}
