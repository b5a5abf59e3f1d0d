// trainer.h — the smallmind subcommands (each parses its own argv and returns an exit status).
#pragma once

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

// `smallmind bench checkpoint` (bench_ckpt.c), dispatched from `smallmind bench`.
int bench_checkpoint(int argc, char **argv);
