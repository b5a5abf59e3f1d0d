// prepare.c — `smallmind prepare`: text file -> PREFIX_train.bin, PREFIX_val.bin.
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "data.h"
#include "trainer.h"

static const char PREPARE_USAGE[] =
    "usage: smallmind prepare --input FILE --out PREFIX [options]\n"
    "  --input FILE         text to tokenize (required)\n"
    "  --out PREFIX         writes PREFIX_train.bin and PREFIX_val.bin (required)\n"
    "  --tokenizer NAME     byte (V=256) or gpt2 (default byte)\n"
    "  --val-fraction F     the last F of the tokens go to the val shard (default 0.1)\n";

int cmd_prepare(int argc, char **argv) {
    const char *input = NULL;      // text file
    const char *prefix = NULL;     // output prefix
    const char *tok_name = "byte"; // tokenizer
    double val_fraction = 0.1;     // tail of the text held out for validation
    static const struct option opts[] = {
        {"input", required_argument, 0, 'i'}, {"out", required_argument, 0, 'o'},
        {"tokenizer", required_argument, 0, 't'}, {"val-fraction", required_argument, 0, 'v'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    opterr = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'i': input = optarg; break;
        case 'o': prefix = optarg; break;
        case 't': tok_name = optarg; break;
        case 'v': val_fraction = cli_double("--val-fraction", optarg, 1e-6, 0.5); break;
        case 'h': fputs(PREPARE_USAGE, stdout); return SM_EXIT_OK;
        default: cli_bad_option("prepare", argc, argv);
        }
    }
    if (optind < argc) sm_fatal(SM_EXIT_USAGE, "prepare: unexpected argument '%s' (command line)", argv[optind]);
    if (!input) sm_fatal(SM_EXIT_USAGE, "prepare: --input FILE is required (command line)");
    if (!prefix) sm_fatal(SM_EXIT_USAGE, "prepare: --out PREFIX is required (command line)");
    int tk = tokenizer_parse(tok_name);
    if (tk < 0) sm_fatal(SM_EXIT_USAGE, "prepare: unknown tokenizer '%s', expected byte or gpt2 (command line)", tok_name);
    char err[1024];
    if (prepare_shards(input, prefix, (tokenizer_kind)tk, val_fraction, err, sizeof err) != 0)
        sm_fatal(SM_EXIT_USAGE, "%s", err);
    printf("wrote %s_train.bin and %s_val.bin (%s tokenizer)\n", prefix, prefix, tokenizer_name((tokenizer_kind)tk));
    return SM_EXIT_OK;
}
