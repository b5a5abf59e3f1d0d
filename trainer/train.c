// train.c — `smallmind train`: options, the training loop, schedule, validation, logs.
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "checkpoints.h"
#include "comm.h"
#include "common.h"
#include "data.h"
#include "kernels.h"
#include "trainer.h"

#include <jansson.h>

typedef struct {
    const char *data;     // PREFIX: PREFIX_train.bin, PREFIX_val.bin
    const char *run_dir;  // config.json, log.jsonl, checkpoints
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
    int val_batches;      // val windows = val_batches x batch x ranks
    unsigned long long seed;
    int threads;          // OpenMP threads per rank (0: OMP_NUM_THREADS, else the CPUs the rank may use)
    int max_skips;        // non-finite (or spiking) steps skipped in a row before the run stops
    double spike_z;       // loss / grad-norm spike threshold in standard deviations (0: off)
    double bucket_mb;     // gradient allreduce bucket size
    int zero;             // 1: ZeRO-1, AdamW moments sharded over ranks
    int ckpt_every;       // checkpoint every N steps (0: only at the end)
    int keep;             // keep the newest K checkpoints (0: all)
    int ckpt_async;       // 1: checkpoints written by a thread while training continues
    int stop_at;          // end cleanly after this step, checkpointing it (0: no)
    const char *resume;   // auto | none | PATH
    const char *init_from;   // a new run from this checkpoint's weights (and model config)
    const char *precision;   // fp32 | bf16: the products' operands (mixed precision)
    sm_dtype prec;        // (parsed from precision)
    int profile;          // per-op table at the end
    const char *dump_params;   // write the final parameters as raw float32 (tests, interop)
} train_opts;

static const train_opts TRAIN_DEFAULTS = {
    .layers = 4, .heads = 4, .embd = 256, .context = 0, .vocab = 0, .seq = 256, .batch = 8, .accum = 1,
    .lr = 6e-4, .min_lr = 6e-5, .warmup = -1, .wd = 0.1, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .clip = 1.0,
    .steps = 1000, .eval_every = 100, .val_batches = 20, .seed = 1337, .threads = 0, .max_skips = 5, .spike_z = 0.0,
    .bucket_mb = 8.0, .zero = 0, .resume = "auto", .precision = "fp32",
};

#define T_OPT(name, type, field, lo, hi, arg, help, section, local, resume) \
    {name, type, offsetof(train_opts, field), lo, hi, arg, help, section, local, resume}
#define FREE CLI_RESUME_FREE
#define ANNOUNCE CLI_RESUME_ANNOUNCE
#define REFUSE CLI_RESUME_REFUSE
// Every flag of train. local = 1 only for what drives no collective and no data; every other flag
// is agreed by all ranks at start (tests/ enumerate this table). The resume rule says how a value
// that differs from the resumed run's is treated.
static const cli_opt TRAIN_OPTIONS[] = {
    T_OPT("data", CLI_STR, data, 0, 0, "PREFIX", "PREFIX_train.bin and PREFIX_val.bin (required; their contents are "
          "agreed, not their paths)", "input and output:", 1, FREE),
    T_OPT("run-dir", CLI_STR, run_dir, 0, 0, "DIR", "config.json, log.jsonl and the checkpoints (required)", NULL, 1,
          FREE),
    T_OPT("layers", CLI_INT, layers, 1, 1024, "L", "transformer blocks", "model:", 0, REFUSE),
    T_OPT("heads", CLI_INT, heads, 1, 4096, "H", "attention heads, must divide --embd", NULL, 0, REFUSE),
    T_OPT("embd", CLI_INT, embd, 1, 65536, "C", "embedding width", NULL, 0, REFUSE),
    T_OPT("context", CLI_INT, context, 1, 65536, "N", "max sequence length of the model (default: --seq)", NULL, 0,
          REFUSE),
    T_OPT("vocab", CLI_INT, vocab, 2, 65536, "V", "vocabulary size (default: from the shard header, else 50257)", NULL,
          0, REFUSE),
    T_OPT("seq", CLI_INT, seq, 1, 65536, "T", "tokens per window", "batch:", 0, REFUSE),
    T_OPT("batch", CLI_INT, batch, 1, 1 << 20, "B", "windows per rank per micro-step", NULL, 0, ANNOUNCE),
    T_OPT("accum", CLI_INT, accum, 1, 1 << 20, "K", "micro-steps per optimizer step", NULL, 0, ANNOUNCE),
    T_OPT("lr", CLI_DOUBLE, lr, 0, 10, "X", "peak learning rate", "optimizer (AdamW, warmup then cosine decay to "
          "--min-lr):", 0, ANNOUNCE),
    T_OPT("min-lr", CLI_DOUBLE, min_lr, 0, 10, "X", "final learning rate, absolute", NULL, 0, ANNOUNCE),
    T_OPT("warmup", CLI_INT, warmup, 0, 1 << 30, "N", "warmup steps (default min(2000, steps/10))", NULL, 0, ANNOUNCE),
    T_OPT("wd", CLI_DOUBLE, wd, 0, 10, "X", "weight decay on 2-D weights; lr x wd must be below 1", NULL, 0, ANNOUNCE),
    T_OPT("beta1", CLI_DOUBLE, beta1, 0, 1, "X", "first-moment decay, in [0, 1)", NULL, 0, ANNOUNCE),
    T_OPT("beta2", CLI_DOUBLE, beta2, 0, 1, "X", "second-moment decay, in [0, 1)", NULL, 0, ANNOUNCE),
    T_OPT("eps", CLI_DOUBLE, eps, 0, 1, "X", "added to sqrt(v), > 0 as a float32", NULL, 0, ANNOUNCE),
    T_OPT("clip", CLI_DOUBLE, clip, 0, 1e30, "X", "global gradient-norm clip, 0 = off", NULL, 0, ANNOUNCE),
    T_OPT("steps", CLI_INT, steps, 1, 1 << 30, "N", "optimizer steps; fixes the schedule", "run:", 0, ANNOUNCE),
    T_OPT("eval-every", CLI_INT, eval_every, 0, 1 << 30, "N", "val loss every N steps, 0 = only at the end", NULL, 0,
          ANNOUNCE),
    T_OPT("val-batches", CLI_INT, val_batches, 1, 1 << 20, "N", "the val set: the first N x batch x ranks windows of "
          "PREFIX_val.bin (the global batch: any rank count evaluates the same windows)", NULL, 0, ANNOUNCE),
    T_OPT("seed", CLI_U64, seed, 0, 9.2e18, "S", "RNG seed for init and data order", NULL, 0, REFUSE),
    T_OPT("threads", CLI_INT, threads, 1, 1024, "N", "OpenMP threads per rank (default: $OMP_NUM_THREADS, else "
          "$SLURM_CPUS_PER_TASK, else the CPUs the rank may use, shared with the node's other ranks)", NULL, 1, FREE),
    T_OPT("max-skips", CLI_INT, max_skips, 0, 1 << 20, "K", "a step whose loss or gradient norm is not finite (or "
          "spikes) skips its update; K such steps in a row are allowed, the next stops the run (exit 1)", NULL, 0,
          ANNOUNCE),
    T_OPT("spike-z", CLI_DOUBLE, spike_z, 0, 1e6, "Z", "also skip a step whose loss or gradient norm is Z standard "
          "deviations above the mean of the last 64 steps; 0 = off", NULL, 0, ANNOUNCE),
    T_OPT("bucket-mb", CLI_DOUBLE, bucket_mb, 0.01, 1024, "X", "gradient allreduce bucket size in MiB (default 8: "
          "below glibc's 32 MiB mmap threshold)", "distributed (mpirun -np N / srun):", 0, ANNOUNCE),
    T_OPT("zero", CLI_INT, zero, 0, 1, "0|1", "1: shard the AdamW moments over the ranks (ZeRO-1)", NULL, 0, ANNOUNCE),
    T_OPT("ckpt-every", CLI_INT, ckpt_every, 0, 1 << 30, "N", "checkpoint every N steps; 0 = only at the end",
          "checkpoints (RUN_DIR/ckpt_NNNNNNNN.h5, sharded HDF5; SIGTERM/SIGUSR1 checkpoint at the end of the "
          "current step and exit 75: requeue and resume; Ctrl-C (SIGINT) likewise with exit 130, a second Ctrl-C "
          "quits at once):", 0, ANNOUNCE),
    T_OPT("keep", CLI_INT, keep, 0, 1 << 20, "K", "keep only the newest K checkpoints; 0 = all", NULL, 0, ANNOUNCE),
    T_OPT("ckpt-async", CLI_FLAG, ckpt_async, 0, 1, NULL, "write checkpoints from a thread while training continues: "
          "the saving step only copies the state into a buffer (a save on schedule: its AdamW pass does); "
          "memory: one buffer of this rank's share of the parameters and both AdamW moments (12 bytes per "
          "parameter / ranks, e.g. 1.5 GB for GPT-2 124M on one rank), allocated once at start; a save waits for "
          "the previous one; commits as without it", NULL, 0, FREE),
    T_OPT("stop-at", CLI_INT, stop_at, 1, 1 << 30, "N", "end cleanly after step N, checkpointing it; the schedule "
          "still follows --steps (default: no)", NULL, 0, FREE),
    T_OPT("resume", CLI_STR, resume, 0, 0, "MODE", "auto: the checkpoint RUN_DIR's `latest` names, else fresh; none: "
          "fresh (refuses a RUN_DIR holding checkpoints); PATH: that file", NULL, 0, FREE),
    T_OPT("init-from", CLI_STR, init_from, 0, 0, "PATH", "start a new run from this checkpoint's weights (a file, or "
          "a run directory's latest; e.g. an llm.c model after `smallmind convert`): its model config, step 0, fresh "
          "AdamW moments and schedule; model flags may be left out, else must match it (--seq left out: at most "
          "its context); a RUN_DIR that already holds checkpoints is resumed as usual (default: no)", NULL, 0, FREE),
    T_OPT("precision", CLI_STR, precision, 0, 0, "P", "fp32, or bf16: mixed precision on AVX512-BF16 (the operands of "
          "every matrix product, the linear layers' and attention's, in bf16 with float32 sums; float32 master "
          "weights, AdamW moments, LayerNorm, softmax, GELU, the loss and the gradient sync; checkpoints stay float32, "
          "so a run may switch on resume)",
          "precision:", 0, ANNOUNCE),
    T_OPT("profile", CLI_FLAG, profile, 0, 1, NULL, "per-op time, share of the step, GFLOP/s, GB/s and heap "
          "allocations, printed at the end", "diagnostics:", 1, FREE),
    T_OPT("dump-params", CLI_STR, dump_params, 0, 0, "F", "at the end, write the parameters to F as raw float32 in "
          "checkpoint order (default: no)", NULL, 1, FREE),
};
#define N_TRAIN_OPTIONS ((int)(sizeof TRAIN_OPTIONS / sizeof TRAIN_OPTIONS[0]))

const cli_opt *train_options(int *n_opts, size_t *values_size) {
    *n_opts = N_TRAIN_OPTIONS;
    *values_size = sizeof(train_opts);
    return TRAIN_OPTIONS;
}

static const char TRAIN_HEAD[] = "usage: smallmind train --data PREFIX --run-dir DIR [options]\n";

// A value that is legal as a double but not for the float32 arithmetic AdamW does
static void check_float(const char *flag, double v, int ok, const char *what) {
    if (!ok) sm_fatal(SM_EXIT_USAGE, "%s %g is %g as a float32: it must be %s (command line)", flag, v, (double)(float)v, what);
}

static void parse_train(int argc, char **argv, train_opts *o) {
    *o = TRAIN_DEFAULTS;
    cli_parse("train", TRAIN_HEAD, TRAIN_OPTIONS, N_TRAIN_OPTIONS, o, sizeof *o, argc, argv, NULL, 0);
    if (!o->data || !o->data[0]) sm_fatal(SM_EXIT_USAGE, "train: --data PREFIX is required (command line)");
    if (!o->run_dir || !o->run_dir[0]) sm_fatal(SM_EXIT_USAGE, "train: --run-dir DIR is required and not empty (command line)");
    if (strlen(o->run_dir) > 3000)
        sm_fatal(SM_EXIT_USAGE, "train: --run-dir is %zu characters; at most 3000 leave room for the files in it "
                 "(command line)", strlen(o->run_dir));
    if (o->init_from && strcmp(o->resume, "auto") != 0 && strcmp(o->resume, "none") != 0)
        sm_fatal(SM_EXIT_USAGE, "--init-from starts a new run and --resume PATH continues one: give one of them "
                 "(command line)");
    if (o->context == 0 && !o->init_from) o->context = o->seq;   // with --init-from: the checkpoint's
    if (o->seq > o->context && !o->init_from)
        sm_fatal(SM_EXIT_USAGE, "--seq %d exceeds the model context --context %d (command line)", o->seq, o->context);
    if (o->min_lr > o->lr) sm_fatal(SM_EXIT_USAGE, "--min-lr %g exceeds --lr %g (command line)", o->min_lr, o->lr);
    if (!o->resume[0]) sm_fatal(SM_EXIT_USAGE, "--resume expects auto, none or a checkpoint path (command line)");
    o->prec = cli_precision(o->precision);
    if (o->warmup < 0) o->warmup = o->steps / 10 < 2000 ? o->steps / 10 : 2000;
    // what AdamW computes in float32 must be representable: eps > 0 (else 0/0 for parameters that
    // never get a gradient), betas below 1 (else 1 - beta^t = 0 in the bias correction), lr x wd < 1
    // (else decay flips the sign of the weights)
    check_float("--eps", o->eps, (float)o->eps > 0.0f, "> 0");
    check_float("--beta1", o->beta1, (float)o->beta1 < 1.0f, "< 1");
    check_float("--beta2", o->beta2, (float)o->beta2 < 1.0f, "< 1");
    check_float("--lr", o->lr, isfinite((float)o->lr), "finite");
    if ((float)o->lr * (float)o->wd >= 1.0f)
        sm_fatal(SM_EXIT_USAGE, "--lr %g x --wd %g = %g: the decay would flip the weights' sign; it must be below 1 "
                 "(command line)", o->lr, o->wd, o->lr * o->wd);
    // sizes: the global batch and its tokens index the data in 64 bits; the per-rank batch's
    // activations must be addressable
    if ((uint64_t)o->batch * (uint64_t)o->accum > (1u << 30) ||
        (uint64_t)o->batch * (uint64_t)o->seq > (uint64_t)INT32_MAX / 8)
        sm_fatal(SM_EXIT_USAGE, "--batch %d x --accum %d x --seq %d is beyond what one rank can index (command line)",
                 o->batch, o->accum, o->seq);
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
    char err[4200];
    int usage = 0;
    if (sm_mkdir_p(path, &usage, err, sizeof err) != 0)
        sm_fatal(usage ? SM_EXIT_USAGE : SM_EXIT_RUNTIME, "run directory: %s", err);
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
    sm_json_str(&j, "precision", precision_name(o->prec));
    sm_json_end(&j);
    if (sm_write_file_atomic(path, j.buf, j.len, err, sizeof err) != 0) sm_fatal(SM_EXIT_RUNTIME, "%s", err);
}

// Set by SIGTERM/SIGUSR1 (Slurm's warning before a time limit or preemption) and by a first
// SIGINT (Ctrl-C): the loop checkpoints at the end of the step and exits cleanly (75, or 130 for
// SIGINT). A second SIGINT is the user insisting: the default action, at once (a checkpoint being
// written is left as a .tmp, which the next start removes; the previous one stays loadable).
static volatile sig_atomic_t g_stop_signal;
static void on_stop_signal(int sig) {
    if (sig == SIGINT) {
        static volatile sig_atomic_t interrupts;
        if (interrupts++) {
            signal(SIGINT, SIG_DFL);
            raise(SIGINT);
            return;
        }
        static const char note[] = "smallmind: interrupt: checkpointing after this step (Ctrl-C again to quit now)\n";
        ssize_t w = write(STDERR_FILENO, note, sizeof note - 1);   // async-signal-safe
        (void)w;
    }
    g_stop_signal = sig;
}

static void install_stop_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    SM_CHECK(sigaction(SIGTERM, &sa, NULL) == 0, "cannot install the SIGTERM handler");
    SM_CHECK(sigaction(SIGUSR1, &sa, NULL) == 0, "cannot install the SIGUSR1 handler");
    SM_CHECK(sigaction(SIGINT, &sa, NULL) == 0, "cannot install the SIGINT handler");
}


// Start-time checks of what a run will write (rank 0): the run directory (a file created and
// removed) and the --dump-params path (its temporary, as sm_write_file_atomic will write it), so
// neither is found unwritable after hours of training.
static void try_create(const char *path, const char *what) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) sm_fatal(SM_EXIT_USAGE, "%s is not writable: %s (%s)", what, strerror(errno), path);
    close(fd);
    unlink(path);
}

static void check_writable(const char *run_dir, const char *dump) {
    char path[4200];
    snprintf(path, sizeof path, "%s/.write_test.%ld", run_dir, (long)getpid());
    try_create(path, "the run directory");
    if (dump) {
        snprintf(path, sizeof path, "%s.tmp", dump);
        try_create(path, "--dump-params");
    }
}


// Every option's value as text, as one JSON object: what a checkpoint records of the run's flags.
static void options_json(const train_opts *o, char *out, size_t cap) {
    sm_json j;
    sm_json_begin(&j);
    for (int i = 0; i < N_TRAIN_OPTIONS; i++) {
        char v[4200];
        cli_value_str(&TRAIN_OPTIONS[i], o, v, sizeof v);
        sm_json_str(&j, TRAIN_OPTIONS[i].name, v);
    }
    sm_json_end(&j);
    j.buf[--j.len] = '\0';   // the line's newline
    if ((size_t)snprintf(out, cap, "%s", j.buf) >= cap) out[0] = '\0';   // too long to record: not compared
}

// Whether a checkpoint is due after step `done` by the flags (--ckpt-every, --stop-at, the last step); a
// signal's adds one.
static int save_on_schedule(const train_opts *o, int done) {
    return (o->ckpt_every > 0 && done % o->ckpt_every == 0) || done == o->steps || done == o->stop_at;
}

// A committed checkpoint: one line on stdout, one event in the log (rank 0).
static void report_ckpt(runlog *log, const char *run_dir, int step, int steps, const ckpt_stats *cst, int async) {
    char path[4096];
    ckpt_path(path, sizeof path, run_dir, step);
    double gbps = cst->seconds > 0 ? (double)cst->bytes / cst->seconds / 1e9 : 0.0;
    if (async)
        printf("step %5d/%d | checkpoint %s (%.1f MB, %.2f s in the background, %.2f GB/s; the step stalled %.1f ms%s)\n",
               step, steps, path, (double)cst->bytes / 1e6, cst->seconds, gbps, cst->stall_seconds * 1e3,
               cst->captured ? ", the copy made by its AdamW pass" : "");
    else
        printf("step %5d/%d | checkpoint %s (%.1f MB, %.2f s, %.2f GB/s)\n", step, steps, path,
               (double)cst->bytes / 1e6, cst->seconds, gbps);
    fflush(stdout);
    sm_json j;
    sm_json_begin(&j);
    sm_json_str(&j, "event", "checkpoint");
    sm_json_int(&j, "step", step);
    sm_json_str(&j, "path", path);
    sm_json_int(&j, "bytes", (long long)cst->bytes);
    sm_json_num(&j, "save_s", "%.4f", cst->seconds);
    sm_json_num(&j, "io_s", "%.4f", cst->io_seconds);
    sm_json_num(&j, "gbps", "%.4f", gbps);
    if (async) sm_json_num(&j, "stall_s", "%.4f", cst->stall_seconds);
    if (async) sm_json_int(&j, "copied_by_adamw", cst->captured);
    sm_json_end(&j);
    runlog_write(log, &j);
}

// --ckpt-async: advances the save in flight (wait: until it is committed) and reports its commit, with what
// it cost its step (begun: ckpt_async_save's stats). Collective.
static void async_advance(ckpt_async *saver, int wait, runlog *log, const char *run_dir, int *step, int steps,
                          const ckpt_stats *begun, int rank) {
    char err[CKPT_ERR_MAX];
    int completed = 0;
    ckpt_stats cst;
    if (!ckpt_async_pending(saver)) return;
    if (ckpt_async_poll(saver, wait, &completed, &cst, err, sizeof err) != 0) comm_fatal_agreed(SM_EXIT_RUNTIME, "%s", err);
    if (!completed) return;
    cst.stall_seconds = begun->stall_seconds;
    cst.captured = begun->captured;
    if (rank == 0) report_ckpt(log, run_dir, *step, steps, &cst, 1);
    *step = 0;
}

// The flags of this run against those of the run that wrote the checkpoint (its JSON run_options):
// each option's resume rule refuses a change (exit 2: the model, the seed, the windows) or
// announces it (one line: the schedule, the optimizer, the batch, the cadences); the free ones
// (threads, paths, diagnostics) pass silently.
static void check_resumed_options(const train_opts *o, const char *recorded, const char *path, int rank) {
    if (!recorded[0]) {
        sm_info("resume: %s records no run options (an older checkpoint): flags not compared", path);
        return;
    }
    json_error_t jerr;
    json_t *root = json_loads(recorded, 0, &jerr);
    if (!json_is_object(root))
        comm_fatal_agreed(SM_EXIT_USAGE, "the checkpoint's run_options are not a JSON object: %s (%s)", jerr.text, path);
    for (int i = 0; i < N_TRAIN_OPTIONS; i++) {
        const cli_opt *opt = &TRAIN_OPTIONS[i];
        const char *was = json_string_value(json_object_get(root, opt->name));
        char now[4200];
        cli_value_str(opt, o, now, sizeof now);
        if (!was || !strcmp(was, now) || opt->resume == CLI_RESUME_FREE) continue;
        if (opt->resume == CLI_RESUME_REFUSE) {
            char msg[10000];
            snprintf(msg, sizeof msg, "--%s was %s in the run that wrote the checkpoint and is %s now: it may not "
                     "change on resume (%s)", opt->name, was[0] ? was : "unset", now[0] ? now : "unset", path);
            json_decref(root);
            comm_fatal_agreed(SM_EXIT_USAGE, "%s", msg);
        }
        if (rank == 0) sm_info("resume: --%s changes from %s to %s", opt->name, was[0] ? was : "unset", now[0] ? now : "unset");
    }
    json_decref(root);
}

// One `step` event: the figures of train_step and the loop's timing.
static void log_step(runlog *log, int step, const train_step_stats *st, float lr, double tok_s, double ms,
                     uint64_t allocs) {
    sm_json j;
    if (st->skipped) {
        sm_json_begin(&j);
        sm_json_str(&j, "event", "skip");
        sm_json_int(&j, "step", step);
        sm_json_str(&j, "reason", st->skipped);
        sm_json_num(&j, "loss", "%.6f", st->loss);
        sm_json_num(&j, "grad_norm", "%.6f", st->grad_norm);
        sm_json_end(&j);
        runlog_write(log, &j);
    }
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

// What a run reads and checks before its ranks' first collective: the options, the shards and
// their tokens, the model config, the loaders and the val set. Usage errors here are deferred
// (sm_usage_defer) and agreed by cmd_train.
typedef struct {
    train_opts o;
    int threads;
    char train_path[4096], val_path[4096];
    shard train_shard, val_shard;
    sm_model_config cfg;
    uint64_t data_hash;
    double t_check;
    loader train_loader, val_loader;
    uint64_t val_windows;
    train_opts given;        // --init-from: the model flags the command line gives (0: left out)
    char init_path[4096];    // --init-from: the checkpoint file (a run directory resolved)
    sm_model_config init_cfg;
} train_start;

// --init-from takes the model from the checkpoint, so the model flags the command line gives must
// agree with it: the options are parsed again over values no flag can take (0: not given).
static void model_flags_given(int argc, char **argv, train_opts *given) {
    *given = TRAIN_DEFAULTS;
    given->layers = given->heads = given->embd = given->context = given->vocab = given->seq = 0;
    cli_parse("train", TRAIN_HEAD, TRAIN_OPTIONS, N_TRAIN_OPTIONS, given, sizeof *given, argc, argv, NULL, 0);
}

// An llm.c .bin given to --init-from: say how to convert it (the checkpoint reader would only say
// "not HDF5"). Deferred usage error.
static void refuse_llmc_file(const char *path) {
    int32_t magic = 0;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return;   // the checkpoint reader names the problem
    ssize_t n = read(fd, &magic, sizeof magic);
    close(fd);
    if (n == (ssize_t)sizeof magic && magic == 20240326)   // llm.c's checkpoint magic (convert.c)
        sm_fatal(SM_EXIT_USAGE, "--init-from takes an HDF5 checkpoint and this is an llm.c .bin: convert it first, "
                 "smallmind convert --from %s --to FILE.h5 (%s)", path, path);
}

// --init-from: the checkpoint's model config into r->init_cfg (NULL without the flag). Reads the
// file as eval does (a file or a run directory; a bad one is one line, exit 2) and frees the
// weights again: the trainer loads them into its own arena once built, so that two copies never
// coexist. Collective (the ranks first agree on the flag, or none would read alone).
static const sm_model_config *init_from_config(train_start *r) {
    const cli_opt *opt = NULL;
    for (int i = 0; i < N_TRAIN_OPTIONS; i++)
        if (!strcmp(TRAIN_OPTIONS[i].name, "init-from")) opt = &TRAIN_OPTIONS[i];
    if (!comm_all_equal_u64(cli_fingerprint(opt, 1, &r->o)))
        comm_fatal_agreed(SM_EXIT_USAGE, "ranks disagree on --init-from (command line)");
    if (!r->o.init_from) return NULL;
    gpt2_weights w;
    ckpt_meta meta;
    infer_load_weights(r->o.init_from, &w, &meta, r->init_path, sizeof r->init_path);
    r->init_cfg = w.cfg;
    gpt2_weights_free(&w);
    return &r->init_cfg;
}

// init: the --init-from checkpoint's config, or NULL (the model from the flags).
static void start_run(train_start *r, const sm_model_config *init, comm_topology *topo) {
    train_opts *o = &r->o;
    char err[1024];
    if (init) {
        const struct { const char *flag; int given, file; } m[] = {
            {"--layers", r->given.layers, init->n_layer},      {"--heads", r->given.heads, init->n_head},
            {"--embd", r->given.embd, init->n_embd},           {"--context", r->given.context, init->max_seq_len},
            {"--vocab", r->given.vocab, init->vocab_size},
        };
        for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
            if (m[i].given && m[i].given != m[i].file)
                sm_fatal(SM_EXIT_USAGE, "%s %d disagrees with the --init-from checkpoint's %d: the model is the "
                         "checkpoint's; leave %s out (%s)", m[i].flag, m[i].given, m[i].file, m[i].flag, r->init_path);
        if (!r->given.seq && o->seq > init->max_seq_len) {   // --seq left out: the checkpoint's context
            o->seq = init->max_seq_len;
            if (topo->rank == 0) sm_info("--seq %d: the --init-from checkpoint's context", o->seq);
        }
        if (o->seq > init->max_seq_len)
            sm_fatal(SM_EXIT_USAGE, "--seq %d exceeds the --init-from checkpoint's context %d (%s)", o->seq,
                     init->max_seq_len, r->init_path);
    }
    // --threads, OMP_NUM_THREADS, SLURM_CPUS_PER_TASK, else the CPUs this rank may use
    r->threads = comm_set_threads(topo, o->threads);

    // data: the train shard (and val) of PREFIX
    snprintf(r->train_path, sizeof r->train_path, "%s_train.bin", o->data);
    snprintf(r->val_path, sizeof r->val_path, "%s_val.bin", o->data);
    const int vocab = init ? init->vocab_size : o->vocab;   // 0: the shard header's
    if (shard_open(&r->train_shard, r->train_path, vocab, err, sizeof err) != 0) {
        struct stat st;   // `--data PREFIX_train.bin`: the flag takes the prefix of both shards
        if (stat(o->data, &st) == 0 && S_ISREG(st.st_mode))
            sm_fatal(SM_EXIT_USAGE, "--data takes the prefix PREFIX of PREFIX_train.bin and PREFIX_val.bin, not a file "
                     "(%s)", o->data);
        sm_fatal(SM_EXIT_USAGE, "%s", err);
    }
    if (shard_open(&r->val_shard, r->val_path, vocab ? vocab : r->train_shard.vocab_size, err, sizeof err) != 0)
        sm_fatal(SM_EXIT_USAGE, "%s", err);

    sm_model_config *cfg = &r->cfg;
    *cfg = (sm_model_config){
        .n_layer = o->layers, .n_head = o->heads, .n_embd = o->embd, .max_seq_len = o->context,
        .vocab_size = o->vocab                       ? o->vocab
                      : r->train_shard.vocab_size ? r->train_shard.vocab_size
                                                  : tokenizer_vocab_size(r->train_shard.tokenizer),
    };
    // the tokenizer travels from the shard header into the checkpoint as a fact
    if (r->val_shard.tokenizer != r->train_shard.tokenizer)
        sm_fatal(SM_EXIT_USAGE, "%s holds %s tokens but %s holds %s tokens (%s)", r->train_path,
                 tokenizer_name(r->train_shard.tokenizer), r->val_path, tokenizer_name(r->val_shard.tokenizer), o->data);
    snprintf(cfg->tokenizer, sizeof cfg->tokenizer, "%s", tokenizer_name(r->train_shard.tokenizer));
    if (init && strcmp(init->tokenizer, cfg->tokenizer) != 0)
        sm_fatal(SM_EXIT_USAGE, "%s holds %s tokens but the --init-from checkpoint's tokenizer is %s (%s)",
                 r->train_path, cfg->tokenizer, init->tokenizer, r->init_path);
    if (init) *cfg = *init;
    if (gpt2_config_validate(cfg, err, sizeof err) != 0) sm_fatal(SM_EXIT_USAGE, "%s (command line)", err);

    // every token of both shards against the vocabulary, now rather than when its window comes up
    r->t_check = sm_now_s();
    const shard *shards[2] = {&r->train_shard, &r->val_shard};
    for (int k = 0; k < 2; k++) {
        size_t at;
        uint16_t top = shard_max_token(shards[k], &at);
        if (top >= cfg->vocab_size)
            sm_fatal(SM_EXIT_USAGE, "token %u at position %zu is outside the vocabulary of %d%s (%s)", top, at,
                     cfg->vocab_size, o->vocab ? " (--vocab)" : "", shards[k]->path);
        r->data_hash = r->data_hash * 0x9E3779B97F4A7C15ull ^ shard_hash(shards[k]);
    }
    r->t_check = sm_now_s() - r->t_check;

    if (loader_init(&r->train_loader, &r->train_shard, o->seq, 1, o->seed, err, sizeof err) != 0)
        sm_fatal(SM_EXIT_USAGE, "%s", err);
    if (loader_init(&r->val_loader, &r->val_shard, o->seq, 0, o->seed, err, sizeof err) != 0)
        sm_fatal(SM_EXIT_USAGE, "%s", err);
    // the val set: the first --val-batches x batch x ranks windows of the val shard (the global
    // micro-batch), the same at any rank count; checked here, not at the first evaluation
    r->val_windows = (uint64_t)o->val_batches * (uint64_t)o->batch * (uint64_t)topo->world_size;
    if (r->val_windows > r->val_loader.n_windows)
        sm_fatal(SM_EXIT_USAGE, "--val-batches %d x --batch %d x %d ranks = %llu val windows of %d+1 tokens, but %s "
                 "holds %zu: lower --val-batches", o->val_batches, o->batch, topo->world_size,
                 (unsigned long long)r->val_windows, o->seq, r->val_path, r->val_loader.n_windows);
}

int cmd_train(int argc, char **argv) {
    comm_topology topo;
    comm_init(&argc, &argv, &topo);
    install_stop_handlers();   // before start-up, so that a preemption notice cannot kill the rank
    static train_start r;   // static: large, and outside the frame setjmp saves
    jmp_buf start;
    if (setjmp(start) == 0) {
        sm_usage_defer(&start);
        parse_train(argc, argv, &r.o);
        if (r.o.init_from) {
            model_flags_given(argc, argv, &r.given);
            refuse_llmc_file(r.o.init_from);
        }
    }
    comm_usage_agree();   // a usage error on any rank ends every rank here, printed once
    static const sm_model_config *init;   // --init-from: the checkpoint's model (static: across setjmp)
    init = init_from_config(&r);
    if (setjmp(start) == 0) {
        sm_usage_defer(&start);
        start_run(&r, init, &topo);
    }
    comm_usage_agree();
    // the ranks agree on every flag that is not local and on every byte of the data
    if (!comm_all_equal_u64(cli_fingerprint(TRAIN_OPTIONS, N_TRAIN_OPTIONS, &r.o) ^ r.data_hash))
        comm_fatal_agreed(SM_EXIT_USAGE, "ranks disagree on the configuration: flags or data files differ between ranks (%s)",
                 r.train_path);
    const train_opts o = r.o;
    const sm_model_config cfg = r.cfg;
    const int threads = r.threads;
    const uint64_t val_windows = r.val_windows;
    const char *train_path = r.train_path, *val_path = r.val_path;
    shard *train_shard = &r.train_shard, *val_shard = &r.val_shard;
    loader *train_loader = &r.train_loader, *val_loader = &r.val_loader;
    char err[1024];
    // a log or checkpoint outgrowing `ulimit -f` must fail its write (and be reported), not kill us
    signal(SIGXFSZ, SIG_IGN);
    prof_enable(o.profile);
    kernels_flush_denormals(1);   // see kernels.h: denormal AdamW moments would slow every step
    double *val_per_window = sm_arena(val_windows * sizeof(double));

    if (topo.rank == 0) {
        make_dir(o.run_dir);
        check_writable(o.run_dir, o.dump_params);
    }
    comm_barrier();   // the run directory exists for every rank from here on
    // [slurm] more than one node: every rank must see this run directory (a shared filesystem)
    if (topo.n_nodes > 1 && ckpt_check_shared_dir(o.run_dir, err, sizeof err) != 0) sm_fatal(SM_EXIT_USAGE, "%s", err);
    // one trainer per run directory: a second one stops here, naming the holder (pid, host)
    static ckpt_lock lock;   // held for the life of the process; the kernel releases it at exit
    if (ckpt_lock_run_dir(o.run_dir, &lock, err, sizeof err) != 0) sm_fatal(SM_EXIT_USAGE, "%s", err);
    comm_print_topology(&topo, threads);
    sm_info("data: every token of both shards checked against V=%d and hashed in %.3f s", cfg.vocab_size, r.t_check);

    trainer tr;
    trainer_build(&tr, &cfg, o.batch, o.seq, o.accum, o.bucket_mb, o.zero, o.seed, &topo);

    // a run directory that cannot hold one checkpoint is refused now, not at the first save
    if (ckpt_check_space(o.run_dir, &tr.w.params, NULL, err, sizeof err) != 0) comm_fatal_agreed(SM_EXIT_USAGE, "%s", err);
    const uint64_t global_batch = (uint64_t)o.batch * (uint64_t)o.accum * (uint64_t)topo.world_size;
    sm_info("model: L=%d H=%d C=%d maxT=%d V=%d (Vp=%d), %zu parameters", cfg.n_layer, cfg.n_head, cfg.n_embd,
            cfg.max_seq_len, cfg.vocab_size, cfg.padded_vocab_size, tr.w.n_params);
    sm_info("data: %s (%zu tokens, %zu windows of %d+1), val %s (%zu tokens, %llu windows)", train_path,
            train_shard->n_tokens, train_loader->n_windows, o.seq, val_path, val_shard->n_tokens,
            (unsigned long long)val_windows);
    sm_info("batch: %d per rank x %d accum x %d ranks = %llu windows = %llu tokens per step", o.batch, o.accum,
            topo.world_size, (unsigned long long)global_batch, (unsigned long long)(global_batch * (uint64_t)o.seq));
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
    // --resume: decided here without changing RUN_DIR; carried out once every check has passed
    ckpt_resume res;
    if (ckpt_resolve_resume(o.run_dir, o.resume, ckpt_layout_gpt2, &res, err, sizeof err) != 0)
        sm_fatal(SM_EXIT_USAGE, "%s", err);
    for (int i = 0; i < res.n_notes; i++)
        if (topo.rank == 0) sm_warn("%s", res.notes[i]);
    const char *resume_path = res.path;
    if (resume_path[0]) {
        ckpt_stats st;
        if (ckpt_load(resume_path, &cfg, &meta, &tr.w.params, &tr.opt.m, &tr.opt.v, tr.opt.lo, tr.opt.hi, &st, err,
                      sizeof err) != 0)
            sm_fatal(SM_EXIT_USAGE, "%s", err);
        step0 = meta.step;
        if (step0 == 0)   // only `convert` writes step 0: weights without a run to continue
            sm_fatal(SM_EXIT_USAGE, "a step-0 checkpoint holds weights only (e.g. from `smallmind convert`), no run to "
                     "resume: start a new run from it with --init-from (%s)", resume_path);
        cursor0 = meta.data_cursor;
        tokens0 = meta.tokens_seen;
        if (meta.rng_restored) {
            // nothing in a step draws from the run's generator yet, so the stored state is the
            // seeded one: a different --seed would silently change the data order
            if (memcmp(&meta.rng, &rng, sizeof rng) != 0)
                comm_fatal_agreed(SM_EXIT_USAGE, "--seed %llu is not the seed this run was started with: the data "
                                  "order would change; resume with the original --seed (%s)", o.seed, resume_path);
            rng = meta.rng;
        }
        // every flag against the run that wrote the checkpoint: refused or announced, one line each
        check_resumed_options(&o, meta.run_options, resume_path, topo.rank);
        sm_info("resumed from %s: step %d, %llu tokens seen, data cursor %llu (%.2f s, %.2f GB/s)", resume_path, step0,
                (unsigned long long)tokens0, (unsigned long long)cursor0, st.seconds,
                st.seconds > 0 ? (double)st.bytes / st.seconds / 1e9 : 0.0);
        if (meta.world_size != topo.world_size)
            sm_info("world size changed: the checkpoint was written by %d rank%s, resumed by %d; global batch now %llu "
                    "windows", meta.world_size, meta.world_size == 1 ? "" : "s", topo.world_size,
                    (unsigned long long)global_batch);
        if (o.stop_at > 0 && o.stop_at <= step0 && step0 < o.steps)
            comm_fatal_agreed(SM_EXIT_USAGE, "--stop-at %d is not after the resumed step %d: nothing would stop there "
                              "(%s)", o.stop_at, step0, resume_path);
        if (step0 >= o.steps) {
            sm_info("checkpoint is at step %d, --steps is %d: nothing to do", step0, o.steps);
            ckpt_resume_free(&res);
            sm_free(val_per_window);
            trainer_free(&tr);
            comm_finalize();
            return SM_EXIT_OK;
        }
        if (init) sm_info("--init-from %s not used: this run directory's checkpoint is resumed", r.init_path);
    } else if (init) {
        // a new run from the checkpoint's weights: step 0, the moments trainer_build zeroed, lr schedule
        // and data order from the start
        ckpt_meta im;
        ckpt_stats st;
        if (ckpt_load(r.init_path, &cfg, &im, &tr.w.params, NULL, NULL, 0, 0, &st, err, sizeof err) != 0)
            sm_fatal(SM_EXIT_USAGE, "%s", err);
        sm_info("initialised from %s (its step %d): its weights, step 0, fresh AdamW moments and schedule (%.2f s)",
                r.init_path, im.step, st.seconds);
    }
    // mixed precision: the bf16 copy of the weights as they now are (initialised or loaded); AdamW
    // keeps it from here on
    if (trainer_set_precision(&tr, o.prec, err, sizeof err) != 0) sm_fatal(SM_EXIT_USAGE, "%s (command line)", err);
    if (o.prec == SM_BF16)
        sm_info("precision: bf16 operands in the linear layers and attention (vdpbf16ps, float32 sums); float32 master "
                "weights, AdamW, LayerNorm, softmax, GELU, loss and gradient sync");
    // the resume is accepted: move an abandoned branch aside, point `latest` at what was loaded
    if (ckpt_adopt_resume(o.run_dir, &res, err, sizeof err) != 0) comm_fatal_agreed(SM_EXIT_RUNTIME, "%s", err);
    snprintf(meta.parent, sizeof meta.parent, "%s", res.parent);   // what the first save continues
    ckpt_resume_free(&res);
    if (topo.rank == 0) write_config_json(&o, &cfg, topo.world_size, threads);
    runlog log = {.fd = -1};
    if (topo.rank == 0 && runlog_open(&log, o.run_dir, step0, err, sizeof err) != 0) sm_fatal(SM_EXIT_RUNTIME, "%s", err);
    int exit_status = SM_EXIT_OK;   // SM_EXIT_STOPPED (75) when a signal stopped the run early

    const adamw_hparams hp0 = {.lr = (float)o.lr, .beta1 = (float)o.beta1, .beta2 = (float)o.beta2, .eps = (float)o.eps,
                               .weight_decay = (float)o.wd};
    tr.spike_z = o.spike_z;
    int skips_in_a_row = 0;
    // --ckpt-async: the buffer, allocated once here (the step that saves only copies into it)
    ckpt_async *saver = NULL;
    int async_step = 0;       // the step of the save in flight
    ckpt_stats async_begun = {0};   // what that save cost its step (ckpt_async_save's stats)
    if (o.ckpt_async) {
        uint64_t bytes = 0;
        if (ckpt_async_create(&saver, &tr.w.params, &tr.opt.m, &tr.opt.v, tr.opt.lo, tr.opt.hi, &bytes, err,
                              sizeof err) != 0)
            comm_fatal_agreed(SM_EXIT_RUNTIME, "%s", err);
        // the ranks' shares differ by up to a chunk (and a small model's tensors are single chunks)
        const int tenths = (int)((double)bytes / 1e5 + 0.5);   // MB, to a tenth
        const double mb = tenths / 10.0, least = -comm_allreduce_max_int(-tenths) / 10.0,
                     most = comm_allreduce_max_int(tenths) / 10.0;
        if (topo.world_size == 1)
            sm_info("--ckpt-async: checkpoints written by a thread; its buffer holds %.1f MB", mb);
        else
            sm_info("--ckpt-async: checkpoints written by a thread; its buffer holds %.1f to %.1f MB a rank", least, most);
    }
    for (int step = step0; step < o.steps; step++) {
        sm_mark_step(step + 1);
        prof_step_begin();
        uint64_t allocs0 = sm_alloc_count();   // smallmind's own allocations in this step
        double t0 = sm_now_s();
        adamw_hparams hp = hp0;
        hp.lr = (float)lr_at(&o, step);
        train_step_stats st;
        uint64_t cursor = cursor0 + (uint64_t)(step - step0) * global_batch;
        // a save due after this step (on schedule: a signal's is not known yet): the one in flight committed
        // first (the save would wait for it anyway), then its buffer is filled by this step's AdamW pass,
        // with no second read of the state in the save
        if (saver && save_on_schedule(&o, step + 1)) {
            async_advance(saver, 1, &log, o.run_dir, &async_step, o.steps, &async_begun, topo.rank);
            ckpt_async_capture(saver, step + 1, &tr.opt.capture);   // NULL when it cannot (ZeRO)
        }
        train_step(&tr, train_loader, cursor, &hp, (float)o.clip, step + 1, &st);
        tr.opt.capture = NULL;
        prof_step_end((long)o.batch * o.seq * o.accum);
        double ms = (sm_now_s() - t0) * 1e3;
        double tok_s = (double)global_batch * o.seq / (ms * 1e-3);
        sm_mark_step(-(step + 1));
        if (topo.rank == 0) {
            if (st.skipped)
                printf("step %5d/%d | loss %.4f | norm %.3f | update SKIPPED (%s) | %.1f ms\n", step + 1, o.steps,
                       st.loss, st.grad_norm, st.skipped, ms);
            else
                printf("step %5d/%d | loss %.4f | lr %.3e | norm %.3f | %.0f tok/s | %.1f ms\n", step + 1, o.steps,
                       st.loss, hp.lr, st.grad_norm, tok_s, ms);
            fflush(stdout);
            log_step(&log, step + 1, &st, hp.lr, tok_s, ms, sm_alloc_count() - allocs0);
        }
        skips_in_a_row = st.skipped ? skips_in_a_row + 1 : 0;
        if (skips_in_a_row > o.max_skips) {   // every rank decided the same skips
            if (topo.rank == 0) runlog_close(&log);
            comm_fatal_agreed(SM_EXIT_RUNTIME, "%d steps in a row were skipped (the last: %s %s at step %d); stopping with the "
                     "last good checkpoint intact (lower --lr? raise --max-skips?) (%s)", skips_in_a_row,
                     st.skipped, strcmp(st.skipped, "spike") ? "not finite" : "spiked", step + 1, o.run_dir);
        }
        int done = step + 1;
        if ((o.eval_every > 0 && done % o.eval_every == 0) || done == o.steps) {
            eval_sums vs;
            eval_windows(&tr.w, &tr.st.acts, tr.inputs, tr.targets, val_loader, val_windows, o.batch * topo.world_size,
                         topo.rank, topo.world_size, val_per_window, &vs);
            float val = (float)(vs.loss_sum / (double)vs.tokens);
            if (!isfinite(val))   // the same sum on every rank
                comm_fatal_agreed(SM_EXIT_RUNTIME, "the val loss is %f after step %d: the parameters are no longer finite; "
                         "nothing was committed, the last good checkpoint is intact (%s)", val, done, o.run_dir);
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
        int stop_sig = g_stop_signal;   // the largest signal number any rank got: the same decision everywhere
        if (topo.world_size > 1) stop_sig = comm_allreduce_max_int(stop_sig);
        int stop = stop_sig != 0;
        int stop_here = stop || done == o.stop_at;
        if (saver) async_advance(saver, 0, &log, o.run_dir, &async_step, o.steps, &async_begun, topo.rank);
        if (stop || save_on_schedule(&o, done)) {
            meta.step = done;
            meta.tokens_seen = tokens0 + (uint64_t)(done - step0) * global_batch * (uint64_t)o.seq;
            meta.data_cursor = cursor0 + (uint64_t)(done - step0) * global_batch;
            meta.rng = rng;
            meta.cfg = cfg;
            meta.optim = (ckpt_optim){.lr = o.lr, .min_lr = o.min_lr, .beta1 = o.beta1, .beta2 = o.beta2, .eps = o.eps,
                                      .weight_decay = o.wd, .warmup = o.warmup, .total_steps = o.steps};
            options_json(&o, meta.run_options, sizeof meta.run_options);
            ckpt_stats cst;
            if (saver) {   // copied, then written by the thread; the last save of the run is waited for
                // the save in flight, if any, committed and reported first (ckpt_async_save would wait for
                // it without a report)
                async_advance(saver, 1, &log, o.run_dir, &async_step, o.steps, &async_begun, topo.rank);
                if (ckpt_async_save(saver, o.run_dir, &meta, &tr.w.params, &tr.opt.m, &tr.opt.v, tr.opt.lo, tr.opt.hi,
                                    o.keep, &cst, err, sizeof err) != 0)
                    comm_fatal_agreed(SM_EXIT_RUNTIME, "%s", err);   // every rank has the message
                async_step = done;
                async_begun = cst;
                if (stop_here || done == o.steps)
                    async_advance(saver, 1, &log, o.run_dir, &async_step, o.steps, &async_begun, topo.rank);
            } else {
                if (ckpt_save(o.run_dir, &meta, &tr.w.params, &tr.opt.m, &tr.opt.v, tr.opt.lo, tr.opt.hi, o.keep, &cst,
                              err, sizeof err) != 0)
                    comm_fatal_agreed(SM_EXIT_RUNTIME, "%s", err);   // every rank has the message
                if (topo.rank == 0) report_ckpt(&log, o.run_dir, done, o.steps, &cst, 0);
            }
            ckpt_name(meta.parent, sizeof meta.parent, done);   // the next save continues this one
        }
        if (stop_here && done < o.steps) {
            sm_info("stopped after step %d (%s); resume with --resume auto", done,
                    stop ? (stop_sig == SIGINT ? "interrupt" : "signal") : "--stop-at");
            if (stop) exit_status = stop_sig == SIGINT ? 128 + SIGINT : SM_EXIT_STOPPED;
            break;
        }
    }

    if (saver) {   // a save still in flight is committed before the run ends
        async_advance(saver, 1, &log, o.run_dir, &async_step, o.steps, &async_begun, topo.rank);
        ckpt_async_free(saver);
    }
    if (o.profile && topo.rank == 0) {
        prof_print(stdout, 0);
        FILE *lf = runlog_stream(&log);
        if (lf) {
            prof_print(lf, 1);
            if (fclose(lf) != 0) sm_fatal(SM_EXIT_RUNTIME, "cannot write the log's profile (%s)", log.path);
        }
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
    loader_free(train_loader);
    loader_free(val_loader);
    shard_close(train_shard);
    shard_close(val_shard);
    comm_finalize();
    return exit_status;
}
