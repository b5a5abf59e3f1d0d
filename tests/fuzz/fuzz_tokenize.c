// fuzz_tokenize.c — libFuzzer harness: what `prepare` and `tokenize` read from users, given arbitrary
// bytes: text to encode, token ids to decode, and --doc-sep's C escapes. Input: one byte of options
// (bits 0-4: chunk size - 1 in bytes; 5: <|endoftext|> before each document; 6: a document separator
// follows, its length (1..4) in the next byte's low bits and then its bytes; 7: two threads, and
// GPT-2's vocabulary for the ids), then the text.
//   GPT-2 (the real encoder.json and vocab.bpe, loaded once from tokenizer_default_dir(); skipped with
//   a note when they are absent): the text in one bpe_encode_range decodes to the text; the parallel
//   encoder (tokenizer_encode_text, tiny chunks, 1 or 2 threads, documents) gives exactly the tokens
//   of encoding each document whole on its own (<|endoftext|> first when asked), so decoding them
//   gives the text back.
//   byte: the tokens are the bytes.
//   ids (tokenizer_parse_ids): decimal ids are accepted exactly when every whitespace-separated word is
//   a decimal number below the vocabulary (checked here by its own scan), with the same values; any
//   accepted list printed back as text and as JSON parses to itself.
//   escapes (data_unescape, the text up to its first NUL): what it returns, written back as \xHH
//   escapes, unescapes to itself; a too-small buffer is refused, never overrun.
// Every refusal is one non-empty line.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"

static tokenizer g_gpt2, g_byte;
static int g_have_gpt2;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    char err[1024];
    g_have_gpt2 = tokenizer_load(&g_gpt2, TOKENIZER_GPT2, NULL, err, sizeof err) == 0;
    if (!g_have_gpt2) fprintf(stderr, "fuzz_tokenize: no GPT-2 files, byte tokenizer, ids and escapes only (%s)\n", err);
    if (tokenizer_load(&g_byte, TOKENIZER_BYTE, NULL, err, sizeof err) != 0) abort();
    return 0;
}

static void one_line(int rc, const char *err) {
    if (rc != 0 && (!err[0] || strchr(err, '\n'))) {
        fprintf(stderr, "not one line: [%s]\n", err);
        abort();
    }
}

// tokens -> bytes must be text[0, n)
static void check_decodes_to(const tokenizer *t, const uint16_t *tok, size_t n_tok, const unsigned char *text,
                             size_t n, int skip_eot) {
    size_t at = 0;
    for (size_t i = 0; i < n_tok; i++) {
        if (skip_eot && t->kind == TOKENIZER_GPT2 && tok[i] == GPT2_EOT) continue;
        size_t nb = 0;
        const unsigned char *p = tokenizer_token_bytes(t, tok[i], &nb);
        if (!p || nb == 0 || at + nb > n || memcmp(text + at, p, nb) != 0) abort();
        at += nb;
    }
    if (at != n) abort();
}

static void check_gpt2(const unsigned char *text, size_t n, const unsigned char *sep, size_t sep_len, int eot,
                       size_t chunk, int threads) {
    char err[512] = "";
    bpe_worker *w = bpe_worker_new(g_gpt2.bpe, err, sizeof err);
    if (!w) abort();
    // the truth: each document encoded whole, one range, one thread
    uint16_t *want = sm_malloc((2 * n + 1) * sizeof *want);
    size_t n_want = 0, n_docs = 0;
    for (size_t d = 0; d < n;) {
        size_t e = n;
        if (sep_len) {
            const unsigned char *hit = memmem(text + d, n - d, sep, sep_len);
            if (hit) e = (size_t)(hit - text) + sep_len;
        }
        const unsigned char *view = NULL;
        utf8_view(text + d, e - d, &view);
        if (eot) want[n_want++] = GPT2_EOT;
        long k = bpe_encode_range(w, text + d, view, e - d, 0, e - d, want + n_want, err, sizeof err);
        if (k < 0 || (size_t)k > e - d) abort();
        for (long i = 0; i < k; i++)
            if (want[n_want + (size_t)i] >= GPT2_EOT) abort();   // ordinary text: never <|endoftext|>
        n_want += (size_t)k;
        if (view != text + d) sm_free((void *)view);
        n_docs++;
        d = e;
    }
    bpe_worker_free(w);
    check_decodes_to(&g_gpt2, want, n_want, text, n, eot);
    tok_encode_opts o = {.doc_sep = sep_len ? sep : NULL, .doc_sep_len = sep_len, .eot_per_doc = eot,
                         .chunk_bytes = chunk, .threads = threads};
    uint16_t *got = NULL;
    size_t n_got = 0, got_docs = 0;
    int rc = tokenizer_encode_text(&g_gpt2, text, n, &o, &got, &n_got, &got_docs, err, sizeof err);
    if (rc != 0 || n_got != n_want || got_docs != n_docs || (n_got && memcmp(got, want, n_got * sizeof *got) != 0)) {
        fprintf(stderr, "parallel encoder: rc %d, %zu tokens and %zu documents; one range per document: %zu and %zu\n",
                rc, n_got, got_docs, n_want, n_docs);
        abort();
    }
    sm_free(got);
    sm_free(want);
}

static void check_byte(const unsigned char *text, size_t n) {
    char err[512] = "";
    tok_encode_opts o = {0};
    uint16_t *got = NULL;
    size_t n_got = 0, docs = 0;
    if (tokenizer_encode_text(&g_byte, text, n, &o, &got, &n_got, &docs, err, sizeof err) != 0 || n_got != n) abort();
    check_decodes_to(&g_byte, got, n_got, text, n, 0);
    sm_free(got);
    o.eot_per_doc = 1;   // the byte tokenizer has no <|endoftext|>: refused
    int rc = tokenizer_encode_text(&g_byte, text, n, &o, &got, &n_got, &docs, err, sizeof err);
    if (rc == 0 || got) abort();
    one_line(rc, err);
}

static int is_ws(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

static void check_ids(const char *text, size_t n, int vocab) {
    uint16_t *ids = NULL;
    size_t n_ids = 0;
    char err[512] = "";
    int rc = tokenizer_parse_ids(text, n, vocab, &ids, &n_ids, err, sizeof err);
    one_line(rc, err);
    size_t i = 0;
    while (i < n && is_ws((unsigned char)text[i])) i++;
    if (i == n || text[i] != '[') {   // decimal words: the scan here says what must happen
        int ok = 1;
        size_t m = 0;
        for (size_t j = 0; j < n && ok;) {
            if (is_ws((unsigned char)text[j])) {
                j++;
                continue;
            }
            long v = 0;
            for (; j < n && !is_ws((unsigned char)text[j]); j++) {
                if (text[j] < '0' || text[j] > '9' || v >= vocab) ok = 0;
                else v = v * 10 + (text[j] - '0');
            }
            if (!ok || v >= vocab) ok = 0;
            else if (rc == 0 && (m >= n_ids || ids[m] != v)) abort();
            m++;
        }
        if ((rc == 0) != ok || (ok && m != n_ids)) {
            fprintf(stderr, "tokenizer_parse_ids says %d (%s), the scan says %s\n", rc, err, ok ? "valid" : "invalid");
            abort();
        }
    }
    if (rc != 0) return;
    for (size_t k = 0; k < n_ids; k++)
        if (ids[k] >= vocab) abort();
    for (int json = 0; json < 2; json++) {   // printed back, as tokenize writes them and as JSON
        char *buf = sm_malloc(8 * n_ids + 4);
        size_t len = 0;
        if (json) buf[len++] = '[';
        for (size_t k = 0; k < n_ids; k++)
            len += (size_t)sprintf(buf + len, json ? (k ? ",%u" : "%u") : "%u\n", (unsigned)ids[k]);
        if (json) buf[len++] = ']';
        uint16_t *again = NULL;
        size_t n_again = 0;
        if (tokenizer_parse_ids(buf, len, vocab, &again, &n_again, err, sizeof err) != 0 || n_again != n_ids ||
            (n_ids && memcmp(again, ids, n_ids * sizeof *ids) != 0))
            abort();
        sm_free(again);
        sm_free(buf);
    }
    sm_free(ids);
}

static void check_unescape(const char *s) {
    size_t n = strlen(s);
    unsigned char *out = sm_malloc(n + 1);
    char err[512] = "";
    long k = data_unescape(s, out, n + 1, err, sizeof err);
    one_line(k < 0 ? -1 : 0, err);
    if (k < 0) {
        sm_free(out);
        return;
    }
    if ((size_t)k > n) abort();
    if (k > 0) {   // one byte too small: refused, nothing written past the end
        unsigned char *small = sm_malloc((size_t)k - 1 + 1);
        if (data_unescape(s, small, (size_t)k - 1, err, sizeof err) >= 0) abort();
        one_line(-1, err);
        sm_free(small);
    }
    char *esc = sm_malloc(4 * (size_t)k + 1);
    for (long i = 0; i < k; i++) sprintf(esc + 4 * i, "\\x%02x", out[i]);
    esc[4 * k] = '\0';
    unsigned char *again = sm_malloc((size_t)k + 1);
    if (data_unescape(esc, again, (size_t)k + 1, err, sizeof err) != k || memcmp(again, out, (size_t)k) != 0) abort();
    sm_free(again);
    sm_free(esc);
    sm_free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    unsigned opt = data[0];
    size_t chunk = (opt & 31) + 1, at = 1, sep_len = 0;
    int eot = opt >> 5 & 1, threads = opt & 128 ? 2 : 1;
    const unsigned char *sep = NULL;
    if (opt & 64) {
        if (size < 2) return 0;
        sep_len = (data[1] & 3) + 1;
        sep = data + 2;
        at = 2 + sep_len;
        if (size < at) return 0;
    }
    const unsigned char *text = data + at;
    size_t n = size - at;
    if (g_have_gpt2) check_gpt2(text, n, sep, sep_len, eot, chunk, threads);
    check_byte(text, n);
    check_ids((const char *)text, n, opt & 128 ? GPT2_VOCAB_SIZE : 256);
    char *s = sm_malloc(n + 1);
    memcpy(s, text, n);
    s[n] = '\0';
    check_unescape(s);
    sm_free(s);
    return 0;
}
