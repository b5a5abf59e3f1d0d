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
#include "kernels.h"
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
    "  --val-batches N   the val set: the first N x batch x ranks windows of PREFIX_val.bin (the global\n"
    "                    batch, so any rank count evaluates the same windows) (default 20)\n"
    "  --seed S          RNG seed for init and data order (default 1337)\n"
    "  --threads N       OpenMP threads per rank (default: $OMP_NUM_THREADS, else the CPUs the rank may use)\n"
    "distributed (mpirun -np N / srun):\n"
    "  --bucket-mb X     gradient allreduce bucket size in MiB (default 8: below glibc's 32 MiB mmap threshold)\n"
    "  --zero 0|1        1: shard the AdamW moments over the ranks (ZeRO-1) (default 0)\n"
    "checkpoints (RUN_DIR/ckpt_NNNNNNNN.h5, sharded HDF5):\n"
    "  --ckpt-every N    checkpoint every N steps; 0 = only at the end (default 0)\n"
    "  --keep K          keep only the newest K checkpoints; 0 = all (default 0)\n"
    "  --stop-at N       end cleanly after step N, checkpointing it; the schedule still follows --steps\n"
    "  --resume MODE     auto: newest checkpoint in RUN_DIR that verifies, else fresh; none: fresh\n"
    "                    (refuses a RUN_DIR holding checkpoints); PATH: that file (default auto)\n"
    "  SIGTERM/SIGUSR1   checkpoint at the end of the current step and exit 0 (preemption)\n"
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

static void write_config_json(const train_opts *o, const sm_model_config *cfg, int world, int threads) {
    char path[4096], err[1024];
    snprintf(path, sizeof path, "%s/config.json", o->run_dir);
    sm_json j;
    sm_json_begin(&j);
    sm_json_str(&j, "data", o->data);
    sm_json_str(&j, "run_dir", o->run_dir);
    sm_json_int(&j, "layers", cfg->n_layer);
    sm_json_int(&j, "heads", cfg->n_head);
    sm_json_int(&j, "embd", cfg->n_embd);
    sm_json_int(&j, "context", cfg->max_seq_len);
    sm_json_int(&j, "vocab", cfg->vocab_size);
    sm_json_int(&j, "padded_vocab", cfg->padded_vocab_size);
    sm_json_str(&j, "tokenizer", cfg->tokenizer);
    sm_json_int(&j, "seq", o->seq);
    sm_json_int(&j, "batch", o->batch);
    sm_json_int(&j, "accum", o->accum);
    sm_json_int(&j, "world_size", world);
    sm_json_int(&j, "global_batch", (long long)o->batch * o->accum * world);
    sm_json_num(&j, "lr", "%.9g", o->lr);
    sm_json_num(&j, "min_lr", "%.9g", o->min_lr);
    sm_json_int(&j, "warmup", o->warmup);
    sm_json_num(&j, "wd", "%.9g", o->wd);
    sm_json_num(&j, "beta1", "%.9g", o->beta1);
    sm_json_num(&j, "beta2", "%.9g", o->beta2);
    sm_json_num(&j, "eps", "%.9g", o->eps);
    sm_json_num(&j, "clip", "%.9g", o->clip);
    sm_json_int(&j, "steps", o->steps);
    sm_json_int(&j, "eval_every", o->eval_every);
    sm_json_int(&j, "val_batches", o->val_batches);
    sm_json_int(&j, "seed", (long long)o->seed);
    sm_json_int(&j, "threads", threads);
    sm_json_end(&j);
    if (sm_write_file_atomic(path, j.buf, j.len, err, sizeof err) != 0) sm_fatal(SM_EXIT_RUNTIME, "%s", err);
}

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

// One `step` event: the figures of train_step and the loop's timing.
static void log_step(runlog *log, int step, const train_step_stats *st, float lr, double tok_s, double ms,
                     uint64_t allocs) {
    sm_json j;
    sm_json_begin(&j);
    sm_json_str(&j, "event", "step");
    sm_json_int(&j, "step", step);
    sm_json_num(&j, "loss", "%.6f", st->loss);
    sm_json_num(&j, "lr", "%.6e", lr);
    sm_json_num(&j, "grad_norm", "%.6f", st->grad_norm);
    sm_json_num(&j, "tokens_per_s", "%.1f", tok_s);
    sm_json_num(&j, "ms", "%.3f", ms);
    sm_json_num(&j, "fwd_ms", "%.3f", st->fwd_ms);
    sm_json_num(&j, "bwd_ms", "%.3f", st->bwd_ms);
    sm_json_num(&j, "comm_wait_ms", "%.3f", st->comm.wait_ms);
    sm_json_num(&j, "comm_ms", "%.3f", st->comm.span_ms);
    sm_json_num(&j, "hidden_frac", "%.4f", st->comm.hidden_frac);
    sm_json_num(&j, "opt_ms", "%.3f", st->opt_ms);
    sm_json_int(&j, "allocs", (long long)allocs);
    sm_json_end(&j);
    runlog_write(log, &j);
}

int cmd_train(int argc, char **argv) {
    comm_topology topo;
    comm_init(&argc, &argv, &topo);
    train_opts o;
    parse_train(argc, argv, &o);
    prof_enable(o.profile);

    int threads = o.threads;
    if (!threads && getenv("OMP_NUM_THREADS")) threads = omp_get_max_threads();
    if (!threads) threads = topo.n_cpus;
    omp_set_num_threads(threads);
    kernels_flush_denormals(1);   // see kernels.h: denormal AdamW moments would slow every step

    // data: the train shard (and val) of PREFIX
    char train_path[4096], val_path[4096], err[1024];
    snprintf(train_path, sizeof train_path, "%s_train.bin", o.data);
    snprintf(val_path, sizeof val_path, "%s_val.bin", o.data);
    shard train_shard, val_shard;
    if (shard_open(&train_shard, train_path, o.vocab, err, sizeof err) != 0) sm_fatal(SM_EXIT_USAGE, "%s", err);
    if (shard_open(&val_shard, val_path, o.vocab ? o.vocab : train_shard.vocab_size, err, sizeof err) != 0)
        sm_fatal(SM_EXIT_USAGE, "%s", err);

    sm_model_config cfg = {
        .n_layer = o.layers, .n_head = o.heads, .n_embd = o.embd, .max_seq_len = o.context,
        .vocab_size = o.vocab ? o.vocab : (train_shard.vocab_size ? train_shard.vocab_size : 50257),
    };
    snprintf(cfg.tokenizer, sizeof cfg.tokenizer, "%s", cfg.vocab_size == 256 ? "byte" : "gpt2");
    if (gpt2_config_validate(&cfg, err, sizeof err) != 0) sm_fatal(SM_EXIT_USAGE, "%s (command line)", err);

    if (!comm_all_equal_u64(config_fingerprint(&o, &train_shard, &val_shard)))
        sm_fatal(SM_EXIT_USAGE, "ranks disagree on the configuration: flags or data files differ between ranks (%s)",
                 train_path);

    loader train_loader, val_loader;
    if (loader_init(&train_loader, &train_shard, o.seq, 1, o.seed, err, sizeof err) != 0) sm_fatal(SM_EXIT_USAGE, "%s", err);
    if (loader_init(&val_loader, &val_shard, o.seq, 0, o.seed, err, sizeof err) != 0) sm_fatal(SM_EXIT_USAGE, "%s", err);
    // the val set: the first --val-batches x batch x ranks windows of the val shard (the global
    // micro-batch), the same at any rank count; checked here, not at the first evaluation
    const uint64_t val_windows = (uint64_t)o.val_batches * (uint64_t)o.batch * (uint64_t)topo.world_size;
    if (val_windows > val_loader.n_windows)
        sm_fatal(SM_EXIT_USAGE, "--val-batches %d x --batch %d x %d ranks = %llu val windows of %d+1 tokens, but %s "
                 "holds %zu: lower --val-batches", o.val_batches, o.batch, topo.world_size,
                 (unsigned long long)val_windows, o.seq, val_path, val_loader.n_windows);
    double *val_per_window = sm_arena(val_windows * sizeof(double));

    if (topo.rank == 0) {
        make_dir(o.run_dir);
        write_config_json(&o, &cfg, topo.world_size, threads);
    }
    comm_barrier();   // the run directory exists for every rank from here on
    comm_print_topology(&topo, threads);

    trainer tr;
    trainer_build(&tr, &cfg, o.batch, o.seq, o.accum, o.bucket_mb, o.zero, o.seed, &topo);

    const int global_batch = o.batch * o.accum * topo.world_size;
    sm_info("model: L=%d H=%d C=%d maxT=%d V=%d (Vp=%d), %zu parameters", cfg.n_layer, cfg.n_head, cfg.n_embd,
            cfg.max_seq_len, cfg.vocab_size, cfg.padded_vocab_size, tr.w.n_params);
    sm_info("data: %s (%zu tokens, %zu windows of %d+1), val %s (%zu tokens, %llu windows)", train_path,
            train_shard.n_tokens, train_loader.n_windows, o.seq, val_path, val_shard.n_tokens,
            (unsigned long long)val_windows);
    sm_info("batch: %d per rank x %d accum x %d ranks = %d windows = %d tokens per step", o.batch, o.accum,
            topo.world_size, global_batch, global_batch * o.seq);
    sm_info("optimizer: AdamW lr %g -> %g (warmup %d, cosine), betas %g/%g, eps %g, wd %g, clip %g; %d steps, seed %llu",
            o.lr, o.min_lr, o.warmup, o.beta1, o.beta2, o.eps, o.wd, o.clip, o.steps, o.seed);
    sm_info("gradient sync: %d buckets of <= %g MiB%s", comm_gradsync_figures(&tr.sync).n_buckets, o.bucket_mb,
            o.zero ? ", ZeRO-1 (moments sharded over ranks)" : "");

    // resume: the state after step0 completed steps; data continues at the global cursor
    ckpt_meta meta = {0};
    int step0 = 0;
    uint64_t cursor0 = 0, tokens0 = 0;
    sm_rng rng;   // the run's generator (saved and restored; nothing in a step draws from it yet)
    sm_rng_seed(&rng, o.seed, 1000 + (uint64_t)topo.rank);
    char resume_path[4096] = "";
    resolve_resume(&o, resume_path, sizeof resume_path);
    if (resume_path[0]) {
        ckpt_stats st;
        if (ckpt_load(resume_path, &cfg, &meta, &tr.w.params, &tr.opt.m, &tr.opt.v, tr.opt.lo, tr.opt.hi, &st, err,
                      sizeof err) != 0)
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
            sm_free(val_per_window);
            trainer_free(&tr);
            comm_finalize();
            return SM_EXIT_OK;
        }
    }
    runlog log = {0};
    if (topo.rank == 0 && runlog_open(&log, o.run_dir, step0, err, sizeof err) != 0) sm_fatal(SM_EXIT_RUNTIME, "%s", err);
    install_stop_handlers();

    const adamw_hparams hp0 = {.lr = (float)o.lr, .beta1 = (float)o.beta1, .beta2 = (float)o.beta2, .eps = (float)o.eps,
                               .weight_decay = (float)o.wd};
    for (int step = step0; step < o.steps; step++) {
        sm_mark_step(step + 1);
        prof_step_begin();
        uint64_t allocs0 = sm_alloc_count();   // smallmind's own allocations in this step
        double t0 = sm_now_s();
        adamw_hparams hp = hp0;
        hp.lr = (float)lr_at(&o, step);
        train_step_stats st;
        uint64_t cursor = cursor0 + (uint64_t)(step - step0) * (uint64_t)global_batch;
        train_step(&tr, &train_loader, cursor, &hp, (float)o.clip, step + 1, &st);
        prof_step_end((long)o.batch * o.seq * o.accum);
        double ms = (sm_now_s() - t0) * 1e3;
        double tok_s = (double)global_batch * o.seq / (ms * 1e-3);
        sm_mark_step(-(step + 1));
        if (!isfinite(st.loss))
            sm_fatal(SM_EXIT_RUNTIME, "loss is %f at step %d: training diverged (lower --lr?)", st.loss, step + 1);
        if (topo.rank == 0) {
            printf("step %5d/%d | loss %.4f | lr %.3e | norm %.3f | %.0f tok/s | %.1f ms\n", step + 1, o.steps, st.loss,
                   hp.lr, st.grad_norm, tok_s, ms);
            fflush(stdout);
            log_step(&log, step + 1, &st, hp.lr, tok_s, ms, sm_alloc_count() - allocs0);
        }
        int done = step + 1;
        if ((o.eval_every > 0 && done % o.eval_every == 0) || done == o.steps) {
            eval_sums vs;
            eval_windows(&tr.w, &tr.st.acts, tr.inputs, tr.targets, &val_loader, val_windows, o.batch * topo.world_size,
                         topo.rank, topo.world_size, val_per_window, &vs);
            float val = (float)(vs.loss_sum / (double)vs.tokens);
            if (topo.rank == 0) {
                printf("step %5d/%d | val loss %.4f\n", done, o.steps, val);
                sm_json j;
                sm_json_begin(&j);
                sm_json_str(&j, "event", "val");
                sm_json_int(&j, "step", done);
                sm_json_num(&j, "val_loss", "%.6f", val);
                sm_json_end(&j);
                runlog_write(&log, &j);
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
            meta.cfg = cfg;
            meta.optim = (ckpt_optim){.lr = o.lr, .min_lr = o.min_lr, .beta1 = o.beta1, .beta2 = o.beta2, .eps = o.eps,
                                      .weight_decay = o.wd, .warmup = o.warmup, .total_steps = o.steps};
            ckpt_stats cst;
            if (ckpt_save(o.run_dir, &meta, &tr.w.params, &tr.opt.m, &tr.opt.v, tr.opt.lo, tr.opt.hi, o.keep, &cst, err,
                          sizeof err) != 0)
                sm_fatal(SM_EXIT_RUNTIME, "%s", err);
            if (topo.rank == 0) {
                char path[4096];
                ckpt_path(path, sizeof path, o.run_dir, done);
                double gbps = cst.seconds > 0 ? (double)cst.bytes / cst.seconds / 1e9 : 0.0;
                printf("step %5d/%d | checkpoint %s (%.1f MB, %.2f s, %.2f GB/s)\n", done, o.steps, path,
                       (double)cst.bytes / 1e6, cst.seconds, gbps);
                sm_json j;
                sm_json_begin(&j);
                sm_json_str(&j, "event", "checkpoint");
                sm_json_int(&j, "step", done);
                sm_json_str(&j, "path", path);
                sm_json_int(&j, "bytes", (long long)cst.bytes);
                sm_json_num(&j, "save_s", "%.4f", cst.seconds);
                sm_json_num(&j, "io_s", "%.4f", cst.io_seconds);
                sm_json_num(&j, "gbps", "%.4f", gbps);
                sm_json_end(&j);
                runlog_write(&log, &j);
            }
        }
        if (stop_here && done < o.steps) {
            sm_info("stopped after step %d (%s); resume with the same command", done,
                    stop ? "signal" : "--stop-at");
            break;
        }
    }

    if (o.profile && topo.rank == 0) {
        prof_print(stdout, 0);
        prof_print(log.f, 1);
    }
    runlog_close(&log);
    if (o.dump_params && topo.rank == 0) {
        // the logical tensors back to back, without the arena's alignment padding
        float *flat = sm_malloc(tr.w.n_params * sizeof(float));
        size_t k = 0;
        for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
            memcpy(flat + k, tr.w.params.t[i].ptr, tr.w.params.t[i].n_elems * sizeof(float));
            k += tr.w.params.t[i].n_elems;
        }
        if (sm_write_file_atomic(o.dump_params, flat, k * sizeof(float), err, sizeof err) != 0)
            sm_fatal(SM_EXIT_RUNTIME, "%s", err);
        sm_free(flat);
    }
    sm_free(val_per_window);
    trainer_free(&tr);
    loader_free(&train_loader);
    loader_free(&val_loader);
    shard_close(&train_shard);
    shard_close(&val_shard);
    comm_finalize();
    return SM_EXIT_OK;
}
