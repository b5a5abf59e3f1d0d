// test_data.c — CUnit tests of data/: shard format and validation, byte tokenizer, prepare, window loader.
#include <CUnit/Basic.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data.h"

// ---------------------------------------------------------------------------
// Helpers: a temp dir for every file the tests write, and a shard builder written
// from the format description (not from data/shard.c) as the independent truth.
static char g_dir[1024];

static const char *tmp_path(char *buf, size_t cap, const char *name) {
    snprintf(buf, cap, "%s/%s", g_dir, name);
    return buf;
}

static void le32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

// Header (256 little-endian int32) + tokens (little-endian uint16). Caller frees with free().
static unsigned char *build_shard_tk(uint32_t magic, uint32_t version, uint32_t n_header, uint32_t vocab, uint32_t tk,
                                     const uint16_t *tokens, size_t n_tokens, size_t *n_bytes) {
    *n_bytes = 1024 + 2 * n_tokens;
    unsigned char *b = calloc(*n_bytes + 1, 1);
    le32(b + 0, magic);
    le32(b + 4, version);
    le32(b + 8, n_header);
    le32(b + 12, vocab);
    le32(b + 16, tk);
    for (size_t i = 0; i < n_tokens; i++) {
        b[1024 + 2 * i] = (unsigned char)(tokens[i] & 0xff);
        b[1024 + 2 * i + 1] = (unsigned char)(tokens[i] >> 8);
    }
    return b;
}

// A header with int 4 = 0, as llm.c and smallmind's older shards leave it.
static unsigned char *build_shard(uint32_t magic, uint32_t version, uint32_t n_header, uint32_t vocab,
                                  const uint16_t *tokens, size_t n_tokens, size_t *n_bytes) {
    return build_shard_tk(magic, version, n_header, vocab, 0, tokens, n_tokens, n_bytes);
}

static int write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, n, f);
    return (fclose(f) == 0 && w == n) ? 0 : -1;
}

// Reads a whole file into a malloc'd buffer; NULL if it cannot be read.
static unsigned char *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) != 0) { fclose(f); return NULL; }
    long len = ftell(f);
    rewind(f);
    unsigned char *b = malloc(len > 0 ? (size_t)len : 1);
    *n = fread(b, 1, (size_t)len, f);
    fclose(f);
    if (len < 0 || *n != (size_t)len) { free(b); return NULL; }
    return b;
}

static int file_exists(const char *path) { return access(path, F_OK) == 0; }

// A shard held in memory (no file): tokens[i] = i % 251.
static shard mem_shard(size_t n) {
    shard s;
    memset(&s, 0, sizeof s);
    snprintf(s.path, sizeof s.path, "mem_%zu.bin", n);
    s.n_tokens = n;
    s.vocab_size = 256;
    s.tokens = sm_malloc(n * sizeof(uint16_t));
    for (size_t i = 0; i < n; i++) s.tokens[i] = (uint16_t)(i % 251);
    return s;
}

// ---------------------------------------------------------------------------
// Shards
static void test_shard_round_trip(void) {
    char path[1200], tmp[1300], err[512] = "";
    tmp_path(path, sizeof path, "round.bin");
    enum { N = 1000 };
    uint16_t tokens[N];
    sm_rng r;
    sm_rng_seed(&r, 7, 0);
    for (int i = 0; i < N; i++) tokens[i] = (uint16_t)sm_rng_below(&r, 50257);
    tokens[0] = 0;
    tokens[1] = 50256;   // extremes, and a value with both bytes set
    CU_ASSERT_EQUAL_FATAL(shard_write(path, tokens, N, 50257, TOKENIZER_GPT2, err, sizeof err), 0);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CU_ASSERT(!file_exists(tmp));

    // the bytes on disk are exactly what the format says
    size_t n_disk = 0, n_expect = 0;
    unsigned char *disk = read_bytes(path, &n_disk);
    unsigned char *expect = build_shard_tk(20240520u, 1, N, 50257, 2, tokens, N, &n_expect);
    CU_ASSERT_PTR_NOT_NULL_FATAL(disk);
    CU_ASSERT_EQUAL(n_disk, 1024 + 2 * N);
    CU_ASSERT_EQUAL(n_disk, n_expect);
    CU_ASSERT(n_disk == n_expect && memcmp(disk, expect, n_disk) == 0);
    // spot-check offsets by hand: 20240520 = 0x0134D888, 1000 = 0x03E8, 50257 = 0xC451
    CU_ASSERT(disk[0] == 0x88 && disk[1] == 0xD8 && disk[2] == 0x34 && disk[3] == 0x01);
    CU_ASSERT(disk[4] == 1 && disk[5] == 0 && disk[6] == 0 && disk[7] == 0);
    CU_ASSERT(disk[8] == 0xE8 && disk[9] == 0x03 && disk[10] == 0 && disk[11] == 0);
    CU_ASSERT(disk[12] == 0x51 && disk[13] == 0xC4 && disk[14] == 0 && disk[15] == 0);
    CU_ASSERT(disk[16] == 2 && disk[17] == 0 && disk[18] == 0 && disk[19] == 0);   // int 4: gpt2
    CU_ASSERT(disk[1026] == (50256 & 0xff) && disk[1027] == (50256 >> 8));
    free(disk);
    free(expect);

    shard s;
    CU_ASSERT_EQUAL_FATAL(shard_open(&s, path, 0, err, sizeof err), 0);
    CU_ASSERT_EQUAL(s.n_tokens, N);
    CU_ASSERT_EQUAL(s.vocab_size, 50257);
    CU_ASSERT_EQUAL(s.tokenizer, TOKENIZER_GPT2);
    CU_ASSERT_STRING_EQUAL(s.path, path);
    CU_ASSERT(memcmp(s.tokens, tokens, sizeof tokens) == 0);
    shard_close(&s);
    CU_ASSERT_PTR_NULL(s.tokens);

    // an explicit limit overrides the header
    CU_ASSERT_EQUAL(shard_open(&s, path, 50257, err, sizeof err), 0);
    shard_close(&s);
    CU_ASSERT_EQUAL(shard_open(&s, path, 50000, err, sizeof err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, ">= vocab size 50000"));
}

// An llm.c shard leaves header int 3 at 0: any uint16 is accepted unless a limit is given.
static void test_shard_llmc_vocab_zero(void) {
    char path[1200], err[512] = "";
    uint16_t tokens[4] = {0, 65535, 50256, 7};
    size_t n;
    unsigned char *b = build_shard(20240520u, 1, 4, 0, tokens, 4, &n);
    CU_ASSERT_EQUAL_FATAL(write_bytes(tmp_path(path, sizeof path, "llmc.bin"), b, n), 0);
    free(b);
    shard s;
    CU_ASSERT_EQUAL_FATAL(shard_open(&s, path, 0, err, sizeof err), 0);
    CU_ASSERT_EQUAL(s.vocab_size, 0);
    CU_ASSERT_EQUAL(s.tokenizer, TOKENIZER_GPT2);   // llm.c writes GPT-2 tokens
    CU_ASSERT_EQUAL(s.n_tokens, 4);
    CU_ASSERT_EQUAL(s.tokens[1], 65535);
    shard_close(&s);
    CU_ASSERT_EQUAL(shard_open(&s, path, 50257, err, sizeof err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "token 65535 at position 1 >= vocab size 50257"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, path));
}

typedef struct {
    const char *name;
    uint32_t magic, version, n_header, vocab;
    size_t n_body;        // tokens actually written
    long adjust;          // bytes added (+) or removed (-) after building
    int bad_pos, bad_tok; // a token to plant (bad_pos >= 0)
    int vocab_limit;
    const char *expect;   // substring of the message
} bad_case;

static void test_shard_malformed(void) {
    static const bad_case cases[] = {
        {"magic.bin", 12345, 1, 10, 256, 10, 0, -1, 0, 0, "bad magic 12345, expected 20240520"},
        {"version.bin", 20240520, 2, 10, 256, 10, 0, -1, 0, 0, "version 2 unsupported"},
        {"short_header.bin", 20240520, 1, 10, 256, 10, -(1024 + 20 - 100), -1, 0, 0, "truncated header"},
        {"empty.bin", 20240520, 1, 10, 256, 10, -(1024 + 20), -1, 0, 0, "truncated header"},
        {"short_body.bin", 20240520, 1, 10, 256, 9, 0, -1, 0, 0,
         "header says 10 tokens (1044 bytes) but the file holds 1042 bytes"},
        {"odd_body.bin", 20240520, 1, 10, 256, 10, -1, -1, 0, 0, "but the file holds 1043 bytes"},
        {"extra.bin", 20240520, 1, 10, 256, 10, 1, -1, 0, 0,
         "header says 10 tokens (1044 bytes) but the file holds 1045 bytes"},
        {"zero.bin", 20240520, 1, 0, 256, 0, 0, -1, 0, 0, "0 tokens"},
        {"vocab.bin", 20240520, 1, 40, 256, 40, 0, 17, 300, 0, "token 300 at position 17 >= vocab size 256"},
        {"limit.bin", 20240520, 1, 40, 0, 40, 0, 33, 128, 100, "token 128 at position 33 >= vocab size 100"},
        {"badvocab.bin", 20240520, 1, 10, 70000, 10, 0, -1, 0, 0, "vocab size 70000"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const bad_case *bc = &cases[c];
        char path[1200], err[512] = "";
        uint16_t tokens[64];
        for (size_t i = 0; i < bc->n_body; i++) tokens[i] = (uint16_t)(i % 50);
        if (bc->bad_pos >= 0) tokens[bc->bad_pos] = (uint16_t)bc->bad_tok;
        size_t n;
        unsigned char *b = build_shard(bc->magic, bc->version, bc->n_header, bc->vocab, tokens, bc->n_body, &n);
        n = (size_t)((long)n + bc->adjust);
        CU_ASSERT_EQUAL_FATAL(write_bytes(tmp_path(path, sizeof path, bc->name), b, n), 0);
        free(b);
        shard s;
        int rc = shard_open(&s, path, bc->vocab_limit, err, sizeof err);
        CU_ASSERT_EQUAL(rc, -1);
        CU_ASSERT_PTR_NULL(s.tokens);
        int names_file = strstr(err, path) != NULL, says_why = strstr(err, bc->expect) != NULL;
        CU_ASSERT(names_file);
        CU_ASSERT(says_why);
        CU_ASSERT_PTR_NULL(strchr(err, '\n'));
        if (rc != -1 || !names_file || !says_why)
            fprintf(stderr, "\n  case %s: rc %d, message '%s', expected '%s'\n", bc->name, rc, err, bc->expect);
        shard_close(&s);   // safe after a failed open
    }

    // missing file: strerror, and the name
    char path[1200], err[512] = "";
    shard s;
    CU_ASSERT_EQUAL(shard_open(&s, tmp_path(path, sizeof path, "missing.bin"), 0, err, sizeof err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, path));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "No such file"));
}

static void test_shard_write_errors(void) {
    char path[1200], err[512] = "";
    uint16_t tokens[3] = {1, 2, 300};
    tmp_path(path, sizeof path, "no_such_dir/x.bin");
    CU_ASSERT_EQUAL(shard_write(path, tokens, 2, 256, TOKENIZER_BYTE, err, sizeof err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "no_such_dir/x.bin"));
    tmp_path(path, sizeof path, "refused.bin");
    CU_ASSERT_EQUAL(shard_write(path, tokens, 0, 256, TOKENIZER_BYTE, err, sizeof err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, path));
    CU_ASSERT_EQUAL(shard_write(path, tokens, 3, 256, TOKENIZER_BYTE, err, sizeof err), -1);   // would not reopen
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "token 300 at position 2"));
    CU_ASSERT(!file_exists(path));
}

// ---------------------------------------------------------------------------
// Tokenizers
static void test_tokenizer_names(void) {
    CU_ASSERT_EQUAL(tokenizer_parse("byte"), TOKENIZER_BYTE);
    CU_ASSERT_EQUAL(tokenizer_parse("gpt2"), TOKENIZER_GPT2);
    CU_ASSERT_EQUAL(tokenizer_parse("GPT2"), -1);
    CU_ASSERT_EQUAL(tokenizer_parse(""), -1);
    CU_ASSERT_EQUAL(tokenizer_parse(NULL), -1);
    CU_ASSERT_STRING_EQUAL(tokenizer_name(TOKENIZER_BYTE), "byte");
    CU_ASSERT_STRING_EQUAL(tokenizer_name(TOKENIZER_GPT2), "gpt2");
    CU_ASSERT_EQUAL(tokenizer_vocab_size(TOKENIZER_BYTE), 256);
    CU_ASSERT_EQUAL(tokenizer_vocab_size(TOKENIZER_GPT2), 50257);
}

static void test_byte_round_trip(void) {
    // "héllo, 世界" in UTF-8, then a NUL and 0xFF: bytes above 127 and the extremes
    static const unsigned char text[] = {'h',  0xC3, 0xA9, 'l', 'l', 'o', ',', ' ', 0xE4, 0xB8,
                                         0x96, 0xE7, 0x95, 0x8C, 0x00, 0xFF, '\n'};
    const size_t n = sizeof text;
    uint16_t tokens[sizeof text];
    CU_ASSERT_EQUAL(byte_encode(tokens, text, n), n);
    int above_127 = 0;
    for (size_t i = 0; i < n; i++) {
        CU_ASSERT_EQUAL(tokens[i], text[i]);
        above_127 += tokens[i] > 127;
    }
    CU_ASSERT_EQUAL(above_127, 9);
    char out[64];
    size_t len = 0;
    for (size_t i = 0; i < n; i++) len += byte_decode(out + len, sizeof out - len, tokens[i]);
    CU_ASSERT_EQUAL(len, n);
    CU_ASSERT(memcmp(out, text, n) == 0);
    CU_ASSERT_EQUAL(byte_decode(out, sizeof out, 256), 0);
    CU_ASSERT_EQUAL(byte_decode(out, sizeof out, -1), 0);
    CU_ASSERT_EQUAL(byte_decode(out, 0, 65), 0);
}

// prepare_shards with its defaults, quiet
static int prep(const char *input, const char *prefix, tokenizer_kind tk, double val_fraction, char *err, size_t errlen) {
    prepare_opts o = {.input = input, .prefix = prefix, .tokenizer = tk, .val_fraction = val_fraction};
    prepare_stats st;
    return prepare_shards(&o, &st, err, errlen);
}

static void test_prepare_shards(void) {
    char input[1200], prefix[1200], train[1300], val[1300], err[512] = "";
    tmp_path(input, sizeof input, "text.txt");
    tmp_path(prefix, sizeof prefix, "prep");
    snprintf(train, sizeof train, "%s_train.bin", prefix);
    snprintf(val, sizeof val, "%s_val.bin", prefix);

    // 1003 bytes of text with multi-byte UTF-8 in it
    unsigned char text[1003];
    static const char *pieces[] = {"The quick brown fox. ", "na\xC3\xAFve caf\xC3\xA9 ", "\xE6\x97\xA5\xE6\x9C\xAC "};
    size_t n = 0;
    for (int k = 0; n < sizeof text; k++) {
        const char *p = pieces[k % 3];
        for (size_t j = 0; p[j] && n < sizeof text; j++) text[n++] = (unsigned char)p[j];
    }
    CU_ASSERT_EQUAL_FATAL(write_bytes(input, text, sizeof text), 0);

    CU_ASSERT_EQUAL_FATAL(prep(input, prefix, TOKENIZER_BYTE, 0.1, err, sizeof err), 0);
    shard st, sv;
    CU_ASSERT_EQUAL_FATAL(shard_open(&st, train, 0, err, sizeof err), 0);
    CU_ASSERT_EQUAL_FATAL(shard_open(&sv, val, 0, err, sizeof err), 0);
    CU_ASSERT_EQUAL(st.n_tokens + sv.n_tokens, sizeof text);
    CU_ASSERT_EQUAL(sv.n_tokens, 100);   // floor(1003 * 0.1)
    CU_ASSERT_EQUAL(st.vocab_size, 256);
    CU_ASSERT_EQUAL(sv.vocab_size, 256);
    CU_ASSERT_EQUAL(st.tokenizer, TOKENIZER_BYTE);
    CU_ASSERT_EQUAL(sv.tokenizer, TOKENIZER_BYTE);
    int same = 1;
    for (size_t i = 0; i < st.n_tokens; i++) same &= st.tokens[i] == text[i];
    for (size_t i = 0; i < sv.n_tokens; i++) same &= sv.tokens[i] == text[st.n_tokens + i];   // the tail
    CU_ASSERT(same);
    shard_close(&st);
    shard_close(&sv);
    unlink(train);
    unlink(val);

    // failures create nothing
    char missing[1200], empty[1200], tiny[1200];
    tmp_path(missing, sizeof missing, "missing.txt");
    CU_ASSERT_EQUAL(prep(missing, prefix, TOKENIZER_BYTE, 0.1, err, sizeof err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, missing));
    CU_ASSERT_EQUAL_FATAL(write_bytes(tmp_path(empty, sizeof empty, "empty.txt"), "", 0), 0);
    CU_ASSERT_EQUAL(prep(empty, prefix, TOKENIZER_BYTE, 0.1, err, sizeof err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, empty));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "empty"));
    CU_ASSERT_EQUAL_FATAL(write_bytes(tmp_path(tiny, sizeof tiny, "tiny.txt"), "abcdefghi", 9), 0);
    CU_ASSERT_EQUAL(prep(tiny, prefix, TOKENIZER_BYTE, 0.1, err, sizeof err), -1);   // 9 -> 9/0
    CU_ASSERT_PTR_NOT_NULL(strstr(err, tiny));
    CU_ASSERT_EQUAL(prep(input, prefix, TOKENIZER_BYTE, 0.0, err, sizeof err), -1);
    CU_ASSERT_EQUAL(prep(input, prefix, TOKENIZER_BYTE, 0.75, err, sizeof err), -1);
    setenv("SMALLMIND_TOKENIZER_DIR", g_dir, 1);   // no encoder.json there
    CU_ASSERT_EQUAL(prep(input, prefix, TOKENIZER_GPT2, 0.1, err, sizeof err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "encoder.json"));
    unsetenv("SMALLMIND_TOKENIZER_DIR");
    CU_ASSERT(!file_exists(train));
    CU_ASSERT(!file_exists(val));

    // the smallest split that works: 20 bytes at 0.1 -> 18 train / 2 val
    CU_ASSERT_EQUAL(prep(input, prefix, TOKENIZER_BYTE, 0.5, err, sizeof err), 0);   // 0.5 is allowed
    CU_ASSERT_EQUAL_FATAL(write_bytes(tiny, text, 20), 0);
    CU_ASSERT_EQUAL_FATAL(prep(tiny, prefix, TOKENIZER_BYTE, 0.1, err, sizeof err), 0);
    CU_ASSERT_EQUAL_FATAL(shard_open(&sv, val, 0, err, sizeof err), 0);
    CU_ASSERT_EQUAL(sv.n_tokens, 2);
    CU_ASSERT(sv.tokens[0] == text[18] && sv.tokens[1] == text[19]);
    shard_close(&sv);
}

// ---------------------------------------------------------------------------
// Loader
enum { LT = 16, LN = 1000 };   // 999/16 = 62 windows; tokens past 62*16 = 992 dropped

// Every window of the stream holds the slice [w*T, w*T+T] of tokens[i] = i % 251.
static int window_is_slice(const int *inp, const int *tgt, size_t w, int T) {
    for (int t = 0; t < T; t++)
        if (inp[t] != (int)((w * (size_t)T + (size_t)t) % 251) || tgt[t] != (int)((w * (size_t)T + (size_t)t + 1) % 251))
            return 0;
    return 1;
}

static void test_loader_windows(void) {
    char err[512];
    shard s = mem_shard(LN);
    loader l;
    CU_ASSERT_EQUAL_FATAL(loader_init(&l, &s, LT, 0, 1, err, sizeof err), 0);
    CU_ASSERT_EQUAL(l.n_windows, 62);
    static int inp[62 * LT], tgt[62 * LT];
    loader_fill(&l, 0, 62, inp, tgt);
    int ok = 1;
    for (size_t w = 0; w < 62; w++) ok &= window_is_slice(inp + w * LT, tgt + w * LT, w, LT);
    CU_ASSERT(ok);
    // in order, wrapping
    ok = 1;
    for (uint64_t g = 0; g < 62 * 3; g++) ok &= loader_window_at(&l, g) == g % 62;
    CU_ASSERT(ok);
    loader_free(&l);

    // shuffled: every window is still a correct slice
    CU_ASSERT_EQUAL_FATAL(loader_init(&l, &s, LT, 1, 1, err, sizeof err), 0);
    ok = 1;
    for (uint64_t g = 0; g < 62 * 3; g += 7) {
        loader_fill(&l, g, 7, inp, tgt);
        for (int i = 0; i < 7; i++)
            ok &= window_is_slice(inp + i * LT, tgt + i * LT, loader_window_at(&l, g + (uint64_t)i), LT);
    }
    CU_ASSERT(ok);
    loader_free(&l);
    shard_close(&s);

    // window counts at the boundary: 5T+1 tokens -> 5 windows (the last uses the last token); 5T -> 4
    s = mem_shard(5 * LT + 1);
    CU_ASSERT_EQUAL_FATAL(loader_init(&l, &s, LT, 0, 1, err, sizeof err), 0);
    CU_ASSERT_EQUAL(l.n_windows, 5);
    loader_fill(&l, 4, 1, inp, tgt);
    CU_ASSERT_EQUAL(tgt[LT - 1], (5 * LT) % 251);
    loader_free(&l);
    shard_close(&s);
    s = mem_shard(5 * LT);
    CU_ASSERT_EQUAL_FATAL(loader_init(&l, &s, LT, 0, 1, err, sizeof err), 0);
    CU_ASSERT_EQUAL(l.n_windows, 4);
    loader_free(&l);
    shard_close(&s);
}

static void test_loader_too_small(void) {
    char err[512] = "";
    shard s = mem_shard(LT);   // T tokens: no window of T+1
    loader l;
    CU_ASSERT_EQUAL(loader_init(&l, &s, LT, 1, 1, err, sizeof err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, s.path));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "16 tokens: fewer than one window of T+1=17"));
    CU_ASSERT_PTR_NULL(l.perm);
    shard_close(&s);
    // more windows than a uint32 permutation can index (refused before touching the tokens)
    shard big;
    memset(&big, 0, sizeof big);
    snprintf(big.path, sizeof big.path, "huge.bin");
    big.n_tokens = (size_t)UINT32_MAX + 2;
    CU_ASSERT_EQUAL(loader_init(&l, &big, 1, 1, 1, err, sizeof err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "huge.bin"));
}

// The order of epoch e, recomputed here from the documented recipe: Fisher-Yates over
// 0..n-1 driven by sm_rng_seed(seed, stream = e).
static void reference_perm(uint32_t *p, size_t n, uint64_t seed, uint64_t e) {
    for (size_t i = 0; i < n; i++) p[i] = (uint32_t)i;
    sm_rng r;
    sm_rng_seed(&r, seed, e);
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)sm_rng_below(&r, i + 1);
        uint32_t t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
}

static void test_loader_permutation(void) {
    char err[512];
    shard s = mem_shard(LN);
    loader a, a2, b;
    CU_ASSERT_EQUAL_FATAL(loader_init(&a, &s, LT, 1, 42, err, sizeof err), 0);
    CU_ASSERT_EQUAL_FATAL(loader_init(&a2, &s, LT, 1, 42, err, sizeof err), 0);
    CU_ASSERT_EQUAL_FATAL(loader_init(&b, &s, LT, 1, 43, err, sizeof err), 0);
    const size_t n = a.n_windows;
    enum { EPOCHS = 4 };
    size_t order[EPOCHS][62];
    int perm_ok = 1, same_seed_same = 1, matches_reference = 1, diff_seed_differs = 0;
    uint32_t ref[62];
    for (uint64_t e = 0; e < EPOCHS; e++) {
        int seen[62] = {0};
        reference_perm(ref, n, 42, e);
        for (size_t i = 0; i < n; i++) {
            uint64_t g = e * n + i;
            size_t w = loader_window_at(&a, g);
            order[e][i] = w;
            if (w >= n) { perm_ok = 0; continue; }
            seen[w]++;
            same_seed_same &= loader_window_at(&a2, g) == w;
            matches_reference &= ref[i] == w;
            diff_seed_differs |= loader_window_at(&b, g) != w;
        }
        for (size_t w = 0; w < n; w++) perm_ok &= seen[w] == 1;   // each window exactly once per epoch
    }
    CU_ASSERT(perm_ok);
    CU_ASSERT(same_seed_same);
    CU_ASSERT(matches_reference);
    CU_ASSERT(diff_seed_differs);
    for (int e = 1; e < EPOCHS; e++) CU_ASSERT(memcmp(order[0], order[e], sizeof order[0]) != 0);
    int in_order = 1;
    for (size_t i = 0; i < n; i++) in_order &= order[0][i] == i;
    CU_ASSERT(!in_order);
    // jumping backwards to an old epoch gives the same order as before
    int back = 1;
    for (size_t i = 0; i < n; i++) back &= loader_window_at(&a, 1 * n + i) == order[1][i];
    CU_ASSERT(back);
    loader_free(&a);
    loader_free(&a2);
    loader_free(&b);
    shard_close(&s);
}

static void test_loader_fill_pure_no_alloc(void) {
    char err[512];
    shard s = mem_shard(LN);
    loader l, fresh;
    CU_ASSERT_EQUAL_FATAL(loader_init(&l, &s, LT, 1, 5, err, sizeof err), 0);
    CU_ASSERT_EQUAL_FATAL(loader_init(&fresh, &s, LT, 1, 5, err, sizeof err), 0);
    enum { C = 8 };
    static int i1[C * LT], t1[C * LT], i2[C * LT], t2[C * LT], i3[C * LT], t3[C * LT], scratch_i[C * LT],
        scratch_t[C * LT];
    uint64_t before = sm_alloc_count();
    loader_fill(&l, 37, C, i1, t1);
    loader_fill(&l, 500, C, scratch_i, scratch_t);   // epoch 8
    loader_fill(&l, 58, C, scratch_i, scratch_t);    // crosses the epoch 0 -> 1 boundary (62 windows)
    loader_fill(&l, 3, C, scratch_i, scratch_t);
    loader_fill(&l, 37, C, i2, t2);
    loader_fill(&fresh, 37, C, i3, t3);
    CU_ASSERT_EQUAL(sm_alloc_count(), before);
    CU_ASSERT(memcmp(i1, i2, sizeof i1) == 0 && memcmp(t1, t2, sizeof t1) == 0);
    CU_ASSERT(memcmp(i1, i3, sizeof i1) == 0 && memcmp(t1, t3, sizeof t1) == 0);
    // targets are inputs shifted by one within each window
    int shifted = 1;
    for (int i = 0; i < C; i++)
        for (int t = 0; t + 1 < LT; t++) shifted &= t1[i * LT + t] == i1[i * LT + t + 1];
    CU_ASSERT(shifted);
    loader_free(&l);
    loader_free(&fresh);
    shard_close(&s);
}

// N ranks at batch B (and A accumulation micro-steps) see exactly the windows that 1 rank
// at batch N*B*A sees: rank r, micro-step a of step k reads cursor k*G + (a*N + r)*B.
static void test_loader_data_parallel(void) {
    char err[512];
    shard s = mem_shard(LN);
    static const int configs[][3] = {{2, 3, 1}, {4, 3, 1}, {4, 2, 2}, {3, 5, 2}};   // ranks, B, accum
    for (size_t c = 0; c < sizeof configs / sizeof configs[0]; c++) {
        const int R = configs[c][0], B = configs[c][1], A = configs[c][2], G = R * B * A;
        loader single;
        loader ranks[4];
        CU_ASSERT_EQUAL_FATAL(loader_init(&single, &s, LT, 1, 9, err, sizeof err), 0);
        for (int r = 0; r < R; r++) CU_ASSERT_EQUAL_FATAL(loader_init(&ranks[r], &s, LT, 1, 9, err, sizeof err), 0);
        int *si = malloc(sizeof(int) * (size_t)G * LT), *stg = malloc(sizeof(int) * (size_t)G * LT);
        int *ri = malloc(sizeof(int) * (size_t)B * LT), *rt = malloc(sizeof(int) * (size_t)B * LT);
        int rows_match = 1, disjoint_covering = 1, distinct_in_epoch = 1;
        for (uint64_t k = 0; k < 40; k++) {   // 40 steps span several epochs of 62 windows
            uint64_t base = k * (uint64_t)G;
            loader_fill(&single, base, G, si, stg);
            int hits[60] = {0};
            for (int a = 0; a < A; a++)
                for (int r = 0; r < R; r++) {
                    uint64_t cur = base + (uint64_t)(a * R + r) * (uint64_t)B;
                    loader_fill(&ranks[r], cur, B, ri, rt);
                    size_t row = (size_t)(cur - base);
                    rows_match &= memcmp(ri, si + row * LT, sizeof(int) * (size_t)B * LT) == 0;
                    rows_match &= memcmp(rt, stg + row * LT, sizeof(int) * (size_t)B * LT) == 0;
                    for (int b = 0; b < B; b++) {
                        rows_match &= loader_window_at(&ranks[r], cur + (uint64_t)b) ==
                                       loader_window_at(&single, cur + (uint64_t)b);
                        hits[row + (size_t)b]++;
                    }
                }
            for (int i = 0; i < G; i++) disjoint_covering &= hits[i] == 1;
            // within one epoch the windows of a step are distinct
            uint64_t n = single.n_windows;
            for (int i = 0; i < G; i++)
                for (int j = i + 1; j < G; j++)
                    if ((base + (uint64_t)i) / n == (base + (uint64_t)j) / n)
                        distinct_in_epoch &= loader_window_at(&single, base + (uint64_t)i) !=
                                             loader_window_at(&single, base + (uint64_t)j);
        }
        CU_ASSERT(rows_match);
        CU_ASSERT(disjoint_covering);
        CU_ASSERT(distinct_in_epoch);
        free(si);
        free(stg);
        free(ri);
        free(rt);
        loader_free(&single);
        for (int r = 0; r < R; r++) loader_free(&ranks[r]);
    }
    shard_close(&s);
}

// ---------------------------------------------------------------------------
static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[2048];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (unlink(p) != 0) fprintf(stderr, "test_data: cannot remove %s\n", p);
    }
    closedir(d);
    if (rmdir(dir) != 0) fprintf(stderr, "test_data: cannot remove %s\n", dir);
}

int main(void) {
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/sm_test_data_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_dir)) {
        perror("test_data: mkdtemp");
        return 1;
    }
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite suite = CU_add_suite("data", NULL, NULL);
    struct {
        const char *name;
        CU_TestFunc fn;
    } tests[] = {
        {"shard round trip, bytes on disk", test_shard_round_trip},
        {"llm.c shard with vocab 0", test_shard_llmc_vocab_zero},
        {"malformed shards refused", test_shard_malformed},
        {"shard_write errors", test_shard_write_errors},
        {"tokenizer names", test_tokenizer_names},
        {"byte tokenizer round trip", test_byte_round_trip},
        {"prepare_shards", test_prepare_shards},
        {"loader windows are slices", test_loader_windows},
        {"loader refuses a too-small shard", test_loader_too_small},
        {"loader per-epoch permutation", test_loader_permutation},
        {"loader_fill pure and allocation-free", test_loader_fill_pure_no_alloc},
        {"data parallel: N ranks x B == 1 rank x N*B", test_loader_data_parallel},
    };
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++)
        if (!suite || !CU_add_test(suite, tests[i].name, tests[i].fn)) {
            fprintf(stderr, "test_data: cannot register tests: %s\n", CU_get_error_msg());
            CU_cleanup_registry();
            remove_tree(g_dir);
            return 1;
        }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures(), tests_failed = CU_get_number_of_tests_failed();
    int framework_error = CU_get_error() != CUE_SUCCESS;
    CU_cleanup_registry();
    remove_tree(g_dir);
    return (failures || tests_failed || framework_error) ? 1 : 0;
}
