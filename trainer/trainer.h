// trainer.h — the smallmind subcommands (each parses its own argv and returns an exit status).
#pragma once

#include "comm.h"
#include "gpt2.h"

int cmd_prepare(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_bench(int argc, char **argv);

// Strict parsing of option values: the whole string must be a number within [lo, hi],
// else one line naming the flag and exit 2.
long cli_int(const char *flag, const char *s, long lo, long hi);
double cli_double(const char *flag, const char *s, double lo, double hi);
// Reports an unknown option or a missing argument (getopt_long's '?' / ':') and exits 2.
void cli_bad_option(const char *cmd, int argc, char **argv);

// The checkpoints' view of the model (checkpoints.h's ckpt_layout_fn): the parameter tensors a
// GPT-2 of config cfg has, after checking cfg (gpt2_config_validate, and padded_vocab_size as it
// follows from vocab_size). Defined in inspect.c; train.c passes it to ckpt_resolve_resume.
int ckpt_layout_gpt2(const sm_model_config *cfg, sm_table *params, char *err, size_t errlen);

// `smallmind bench checkpoint` (bench_ckpt.c), dispatched from `smallmind bench`.
int bench_checkpoint(int argc, char **argv);

// The data-parallel step's plumbing, shared by train and bench train (train.c):
// the gradient arena as segments in the order backward finalises them (group 0 = last layer
// with the final LayerNorm, ..., group L-1 = layer 0, group L = wte and wpe); segs holds
// 12*L + 4. Returns the count.
int train_grad_segments(const gpt2 *model, comm_segment *segs);
// gpt2.layer_done callback: announces layer l's group to the gradient sync.
typedef struct {
    comm_gradsync *sync;
    int n_layer;
} train_sync_ctx;
void train_layer_done(void *ctx, int layer);
void train_sync_progress(void *ctx);   // gpt2's progress hook: comm_gradsync_progress
