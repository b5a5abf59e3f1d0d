// fuzz_cli.h — what fuzz_cli.c knows of one subcommand's options: build.sh generates one such entry
// per option table in trainer/ (a file that includes the subcommand's source, so the table is the
// real one), and the list FUZZ_CLI_TABLES of them all.
#pragma once
#include <stddef.h>

#include "trainer.h"

typedef struct {
    const char *cmd;                          // "train", "eval", ...
    const cli_opt *opts;                      // its table
    int n_opts;
    size_t values_size;                       // sizeof its options struct
    int max_positional;                       // what the subcommand passes to cli_parse
    void (*parse)(int argc, char **argv);     // the subcommand's own parse (defaults, then the checks
                                              // across flags), or NULL when it calls cli_parse alone
} fuzz_cli_table;

extern const fuzz_cli_table *const FUZZ_CLI_TABLES[];
extern const int FUZZ_CLI_N_TABLES;
