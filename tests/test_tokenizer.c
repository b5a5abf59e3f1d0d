// test_tokenizer.c — CUnit tests of data/'s tokenizers: GPT-2 BPE facts, long pieces against a naive
// reference merge written here, a 1 MB line without spaces under 5 s, any thread count and chunk
// size giving one thread's tokens, round trips, the UTF-8 view, and the shard header's tokenizer.
// (ids against tiktoken and the Python reference: test_tokenizer.py.)
#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data.h"

static tokenizer g_tk;   // gpt2, loaded once
static char g_dir[1024];

// ---------------------------------------------------------------------------------------------
// Helpers

static uint16_t *encode(const unsigned char *text, size_t n, int threads, size_t chunk, size_t *n_out) {
    tok_encode_opts o = {.threads = threads, .chunk_bytes = chunk};
    uint16_t *ids = NULL;
    size_t n_docs;
    char err[512] = "";
    int rc = tokenizer_encode_text(&g_tk, text, n, &o, &ids, n_out, &n_docs, err, sizeof err);
    if (rc != 0) fprintf(stderr, "\n  encode failed: %s\n", err);
    return rc == 0 ? ids : NULL;
}

// decode(ids) == text, token by token (as a streaming decoder would)
static int round_trips(const uint16_t *ids, size_t n_ids, const unsigned char *text, size_t n) {
    size_t at = 0;
    for (size_t i = 0; i < n_ids; i++) {
        size_t len;
        const unsigned char *b = tokenizer_token_bytes(&g_tk, ids[i], &len);
        if (!b || at + len > n || memcmp(text + at, b, len) != 0) return 0;
        at += len;
    }
    return at == n;
}

// The naive reference merge (tiktoken's _byte_pair_merge, quadratic): parts start as bytes; while
// an adjacent pair's concatenation is a token, merge the pair whose token id is lowest, the
// leftmost on ties. Token lookups by linear-probing a table of the vocabulary's bytes built here.
typedef struct {
    const unsigned char *p;
    size_t n;
    int id;
} ref_entry;
static ref_entry *g_ref;
static size_t g_ref_mask;

static size_t ref_hash(const unsigned char *p, size_t n) {
    size_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static int ref_find(const unsigned char *p, size_t n) {
    for (size_t i = ref_hash(p, n) & g_ref_mask;; i = (i + 1) & g_ref_mask) {
        if (!g_ref[i].p) return -1;
        if (g_ref[i].n == n && memcmp(g_ref[i].p, p, n) == 0) return g_ref[i].id;
    }
}

static void ref_build(void) {
    g_ref_mask = (1u << 18) - 1;
    g_ref = calloc(g_ref_mask + 1, sizeof *g_ref);
    for (int id = 0; id < GPT2_EOT; id++) {   // <|endoftext|> is not mergeable
        size_t n;
        const unsigned char *p = tokenizer_token_bytes(&g_tk, id, &n);
        size_t i = ref_hash(p, n) & g_ref_mask;
        while (g_ref[i].p) i = (i + 1) & g_ref_mask;
        g_ref[i] = (ref_entry){p, n, id};
    }
}

static size_t ref_merge(const unsigned char *piece, size_t n, int *out) {
    int whole = ref_find(piece, n);
    if (whole >= 0) {
        out[0] = whole;
        return 1;
    }
    size_t *start = malloc((n + 1) * sizeof *start), m = n;   // part i is piece[start[i], start[i+1])
    for (size_t i = 0; i <= n; i++) start[i] = i;
    for (;;) {
        int best = -1;
        size_t bi = 0;
        for (size_t i = 0; i + 1 < m; i++) {
            int r = ref_find(piece + start[i], start[i + 2] - start[i]);
            if (r >= 0 && (best < 0 || r < best)) best = r, bi = i;
        }
        if (best < 0) break;
        memmove(start + bi + 1, start + bi + 2, (m - bi - 1) * sizeof *start);
        m--;
    }
    for (size_t i = 0; i < m; i++) out[i] = ref_find(piece + start[i], start[i + 1] - start[i]);
    free(start);
    return m;
}

// ---------------------------------------------------------------------------------------------
// Tests

static void test_gpt2_facts(void) {
    CU_ASSERT_EQUAL(g_tk.vocab_size, 50257);
    size_t n;
    const unsigned char *b = tokenizer_token_bytes(&g_tk, GPT2_EOT, &n);
    CU_ASSERT(b && n == 13 && memcmp(b, "<|endoftext|>", 13) == 0);
    // ids that GPT-2's encoder.json gives (the byte map: "!" is 0, a space 220, a newline 198)
    static const struct {
        int id;
        const char *bytes;
    } known[] = {{0, "!"}, {220, " "}, {198, "\n"}, {262, " the"}, {15496, "Hello"}, {628, "\n\n"}, {256, " t"}};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        b = tokenizer_token_bytes(&g_tk, known[i].id, &n);
        CU_ASSERT(b && n == strlen(known[i].bytes) && memcmp(b, known[i].bytes, n) == 0);
    }
    CU_ASSERT_PTR_NULL(tokenizer_token_bytes(&g_tk, 50257, &n));
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_PTR_NULL(tokenizer_token_bytes(&g_tk, -1, &n));
    // every byte is one token of its own
    for (int c = 0; c < 256; c++) {
        unsigned char ch = (unsigned char)c;
        size_t m;
        uint16_t *ids = encode(&ch, 1, 1, 0, &m);
        CU_ASSERT(ids && m == 1 && round_trips(ids, m, &ch, 1));
        free(ids);
    }
    tokenizer bt;
    char err[256];
    CU_ASSERT_EQUAL_FATAL(tokenizer_load(&bt, TOKENIZER_BYTE, NULL, err, sizeof err), 0);
    b = tokenizer_token_bytes(&bt, 200, &n);
    CU_ASSERT(b && n == 1 && b[0] == 200);
    CU_ASSERT_PTR_NULL(tokenizer_token_bytes(&bt, 256, &n));
    tok_encode_opts o = {.eot_per_doc = 1};
    uint16_t *ids;
    size_t n_ids, n_docs;
    CU_ASSERT_EQUAL(tokenizer_encode_text(&bt, (const unsigned char *)"ab", 2, &o, &ids, &n_ids, &n_docs, err, sizeof err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "<|endoftext|>"));
    tokenizer_free(&bt);
}

// Pieces of 2..1500 bytes from small alphabets (many ties of equal rank), alone in the text so each
// is one piece: both merge paths (flat array <= 64 bytes, heap beyond) against the naive reference.
static void test_long_pieces_vs_reference(void) {
    static const char *alphabets[] = {"ab", "aeiost", "abcdefghijklmnopqrstuvwxyz", "0123456789", "!.=-"};
    sm_rng r;
    sm_rng_seed(&r, 3, 0);
    int *want = malloc(2000 * sizeof *want);
    unsigned char *text = malloc(2000);
    int bad = 0, n_cases = 0;
    for (size_t a = 0; a < sizeof alphabets / sizeof alphabets[0]; a++) {
        size_t k = strlen(alphabets[a]);
        for (size_t len = 2; len <= 1500; len = len < 80 ? len + 1 : len * 5 / 4) {
            for (size_t i = 0; i < len; i++) text[i] = (unsigned char)alphabets[a][sm_rng_below(&r, k)];
            size_t m;
            uint16_t *ids = encode(text, len, 1, 0, &m);
            size_t mr = ref_merge(text, len, want);
            int same = ids && m == mr;
            for (size_t i = 0; same && i < m; i++) same = ids[i] == want[i];
            if (!same && bad++ < 3)
                fprintf(stderr, "\n  piece of %zu bytes from \"%s\": %zu ids, reference %zu\n", len, alphabets[a], m, mr);
            n_cases++;
            free(ids);
        }
    }
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT(n_cases > 300);
    free(want);
    free(text);
}

// A 1 MB line with no spaces: one piece (letters), or many (mixed classes). Naive BPE is quadratic
// in a piece's length (10^12 steps here); the heap merge must finish in under 5 s.
static void test_megabyte_line(void) {
    const size_t n = 1 << 20;
    unsigned char *text = malloc(n);
    sm_rng r;
    sm_rng_seed(&r, 9, 0);
    static const char *kinds[] = {"abcdefghijklmnopqrstuvwxyz", "a", "0123456789", "!?.,;-", "abc123!?"};
    for (size_t kd = 0; kd < sizeof kinds / sizeof kinds[0]; kd++) {
        size_t k = strlen(kinds[kd]);
        for (size_t i = 0; i < n; i++) text[i] = (unsigned char)kinds[kd][sm_rng_below(&r, k)];
        double t0 = sm_now_s();
        size_t m;
        uint16_t *ids = encode(text, n, 1, 0, &m);
        double dt = sm_now_s() - t0;
        CU_ASSERT_PTR_NOT_NULL_FATAL(ids);
        CU_ASSERT(dt < 5.0);
        CU_ASSERT(m > 0 && m < n);
        CU_ASSERT(round_trips(ids, m, text, n));
        fprintf(stderr, "\n  1 MiB line of \"%s\": %zu tokens in %.3f s", kinds[kd], m, dt);
        free(ids);
    }
    // and a megabyte of one whitespace run, of emoji with ZWJ, of invalid bytes
    memset(text, ' ', n);
    size_t m;
    uint16_t *ids = encode(text, n, 1, 0, &m);
    CU_ASSERT(ids && round_trips(ids, m, text, n));
    free(ids);
    static const unsigned char zwj[] = {0xF0, 0x9F, 0x91, 0xA8, 0xE2, 0x80, 0x8D};
    for (size_t i = 0; i < n; i++) text[i] = zwj[i % sizeof zwj];
    ids = encode(text, n, 2, 0, &m);
    CU_ASSERT(ids && round_trips(ids, m, text, n));
    free(ids);
    for (size_t i = 0; i < n; i++) text[i] = (unsigned char)(0x80 + sm_rng_below(&r, 128));
    ids = encode(text, n, 2, 0, &m);
    CU_ASSERT(ids && round_trips(ids, m, text, n));
    free(ids);
    free(text);
}

// Random text with words, whitespace runs, digits, UTF-8 and invalid bytes: every thread count and
// chunk size gives one thread's tokens, which decode to the text.
static void test_threads_and_chunks(void) {
    static const char *words[] = {"the", " whale", " Ahab", "'s", "'ll", " 1234", "  ", "   ", "\n", "\n\n",
                                  "\t", " \t ", "!", " --", " caf\xC3\xA9", " \xE4\xB8\xAD\xE6\x96\x87", "\xF0\x9F\x91\x8D",
                                  "\xFF", "\x80", "\xE2\x82", " aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
    const size_t n_words = sizeof words / sizeof words[0];
    size_t cap = 300000, n = 0;
    unsigned char *text = malloc(cap + 200);
    sm_rng r;
    sm_rng_seed(&r, 11, 0);
    while (n < cap) {
        const char *w = words[sm_rng_below(&r, n_words)];
        size_t l = strlen(w);
        memcpy(text + n, w, l);
        n += l;
    }
    size_t m1;
    uint16_t *one = encode(text, n, 1, (size_t)1 << 30, &m1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(one);
    CU_ASSERT(round_trips(one, m1, text, n));
    static const size_t chunks[] = {1, 2, 3, 7, 64, 1000, 65536};
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++)
        for (int th = 1; th <= 3; th++) {
            size_t m;
            uint16_t *ids = encode(text, n, th, chunks[c], &m);
            int same = ids && m == m1 && memcmp(ids, one, m * sizeof *ids) == 0;
            if (!same) fprintf(stderr, "\n  chunk %zu, %d threads: %zu tokens vs %zu\n", chunks[c], th, m, m1);
            CU_ASSERT(same);
            free(ids);
        }
    free(one);
    free(text);
}

static void test_safe_cut(void) {
    const unsigned char *t = (const unsigned char *)"ab  cd\xC2\xA0 e\xFF f";
    size_t n = strlen((const char *)t);
    CU_ASSERT_EQUAL(bpe_safe_cut(t, 0, n), 2);    // "b" then " "
    CU_ASSERT_EQUAL(bpe_safe_cut(t, 3, n), n);    // the spaces after 3 follow a space or a non-ASCII byte
    CU_ASSERT_EQUAL(bpe_safe_cut(t, 2, 4), 2);
    CU_ASSERT_EQUAL(bpe_safe_cut(t, 3, 4), 4);    // none before the end
}

static void test_utf8_view(void) {
    static const struct {
        const char *s;
        size_t n_bad;
    } cases[] = {
        {"plain ascii", 0},          {"caf\xC3\xA9 \xE4\xB8\xAD \xF0\x9F\x98\x80", 0},
        {"\x80", 1},                 {"\xC0\xAF", 2},
        {"\xE0\x80\xAF", 3},         {"\xF0\x80\x80\xAF", 4},
        {"\xED\xA0\x80", 3},         {"\xF4\x90\x80\x80", 4},
        {"\xE2\x82", 2},             {"\xE2\x82" "A", 2},
        {"\xF0\x9F\x98", 3},         {"\xFF\xFE", 2},
        {"\xC3\xA9\x80" "e", 1},     {"\xF4\x8F\xBF\xBF", 0},   // U+10FFFF is valid
        {"\xEF\xBB\xBF", 0},         {"\xE2\xE2\x82\xAC", 1},   // a lead cut short, then a whole euro sign
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const unsigned char *s = (const unsigned char *)cases[i].s, *view;
        size_t n = strlen(cases[i].s);
        size_t bad = utf8_view(s, n, &view);
        CU_ASSERT_EQUAL(bad, cases[i].n_bad);
        if (bad != cases[i].n_bad) fprintf(stderr, "\n  case %zu: %zu invalid bytes, expected %zu\n", i, bad, cases[i].n_bad);
        if (bad == 0) CU_ASSERT_PTR_EQUAL(view, s);
        if (bad) {
            size_t standins = 0;
            for (size_t j = 0; j < n; j++) standins += view[j] != s[j] && view[j] == GPT2_INVALID_STANDIN;
            CU_ASSERT_EQUAL(standins, bad);
            sm_free((void *)view);
        }
    }
}

// The shard header's int 4 (DESIGN.md, Data): 1 byte, 2 gpt2; 0 read from int 3 (256 byte, 0 gpt2).
static void test_shard_tokenizer_field(void) {
    char path[1200], err[512];
    snprintf(path, sizeof path, "%s/tk.bin", g_dir);
    uint16_t toks[4] = {1, 2, 3, 4};
    shard s;
    CU_ASSERT_EQUAL_FATAL(shard_write(path, toks, 4, 256, TOKENIZER_BYTE, err, sizeof err), 0);
    CU_ASSERT_EQUAL_FATAL(shard_open(&s, path, 0, err, sizeof err), 0);
    CU_ASSERT_EQUAL(s.tokenizer, TOKENIZER_BYTE);
    shard_close(&s);
    // a byte-level shard written for a larger model vocabulary is still byte (issue 10's bug)
    CU_ASSERT_EQUAL_FATAL(shard_write(path, toks, 4, 300, TOKENIZER_BYTE, err, sizeof err), 0);
    CU_ASSERT_EQUAL_FATAL(shard_open(&s, path, 0, err, sizeof err), 0);
    CU_ASSERT_EQUAL(s.tokenizer, TOKENIZER_BYTE);
    CU_ASSERT_EQUAL(s.vocab_size, 300);
    shard_close(&s);
    CU_ASSERT_EQUAL(shard_write(path, toks, 4, 256, (tokenizer_kind)0, err, sizeof err), -1);
    CU_ASSERT_EQUAL(shard_write(path, toks, 4, 256, (tokenizer_kind)3, err, sizeof err), -1);
    // headers written by hand: (int 3, int 4) -> kind, or refused
    static const struct {
        int32_t vocab, tk;
        int kind;   // 0: refused
    } cases[] = {{256, 1, TOKENIZER_BYTE}, {50257, 2, TOKENIZER_GPT2}, {256, 0, TOKENIZER_BYTE},
                 {0, 0, TOKENIZER_GPT2},   {0, 2, TOKENIZER_GPT2},     {300, 0, 0},
                 {50257, 0, 0},            {256, 3, 0},                {256, -1, 0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        unsigned char b[1024 + 8] = {0};
        int32_t h[5] = {20240520, 1, 4, cases[i].vocab, cases[i].tk};
        for (int k = 0; k < 5; k++)
            for (int j = 0; j < 4; j++) b[4 * k + j] = (unsigned char)((uint32_t)h[k] >> (8 * j));
        for (int k = 0; k < 4; k++) b[1024 + 2 * k] = (unsigned char)(k + 1);
        FILE *f = fopen(path, "wb");
        CU_ASSERT_FATAL(f && fwrite(b, 1, sizeof b, f) == sizeof b && fclose(f) == 0);
        int rc = shard_open(&s, path, 0, err, sizeof err);
        if (cases[i].kind) {
            CU_ASSERT(rc == 0 && s.tokenizer == (tokenizer_kind)cases[i].kind);
        } else {
            CU_ASSERT(rc == -1 && strstr(err, "int 4") && strstr(err, path) && !strchr(err, '\n'));
        }
        if (rc == 0) shard_close(&s);
    }
    unlink(path);
}

static void test_parse_ids_and_escapes(void) {
    uint16_t *ids;
    size_t n;
    char err[256];
    const char *lines = " 1\n2\r\n 50256 \n";
    CU_ASSERT_EQUAL_FATAL(tokenizer_parse_ids(lines, strlen(lines), 50257, &ids, &n, err, sizeof err), 0);
    CU_ASSERT(n == 3 && ids[0] == 1 && ids[1] == 2 && ids[2] == 50256);
    sm_free(ids);
    const char *js = "\n [0, 198,50256]\n";
    CU_ASSERT_EQUAL_FATAL(tokenizer_parse_ids(js, strlen(js), 50257, &ids, &n, err, sizeof err), 0);
    CU_ASSERT(n == 3 && ids[0] == 0 && ids[1] == 198 && ids[2] == 50256);
    sm_free(ids);
    CU_ASSERT_EQUAL(tokenizer_parse_ids("1 2 3", 5, 3, &ids, &n, err, sizeof err), -1);
    unsigned char out[64];
    CU_ASSERT_EQUAL(data_unescape("\\n\\n", out, sizeof out, err, sizeof err), 2);
    CU_ASSERT(out[0] == '\n' && out[1] == '\n');
    CU_ASSERT_EQUAL(data_unescape("a\\x41\\101\\t\\\\\\0", out, sizeof out, err, sizeof err), 6);
    CU_ASSERT(memcmp(out, "aAA\t\\\0", 6) == 0);
    CU_ASSERT_EQUAL(data_unescape("\\400", out, sizeof out, err, sizeof err), -1);
    CU_ASSERT_EQUAL(data_unescape("abc", out, 2, err, sizeof err), -1);
}

int main(void) {
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/sm_test_tok_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_dir)) {
        perror("test_tokenizer: mkdtemp");
        return 1;
    }
    char err[1024];
    if (tokenizer_load(&g_tk, TOKENIZER_GPT2, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "test_tokenizer: %s (bash jobs/setup.sh fetches GPT-2's files)\n", err);
        rmdir(g_dir);
        return 1;
    }
    ref_build();
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite suite = CU_add_suite("tokenizer", NULL, NULL);
    struct {
        const char *name;
        CU_TestFunc fn;
    } tests[] = {
        {"GPT-2 facts, every byte a token, byte tokenizer", test_gpt2_facts},
        {"long pieces against the naive merge", test_long_pieces_vs_reference},
        {"1 MB lines without spaces under 5 s", test_megabyte_line},
        {"any threads and chunk size give one thread's tokens", test_threads_and_chunks},
        {"safe cuts", test_safe_cut},
        {"UTF-8 view: invalid bytes", test_utf8_view},
        {"shard header int 4", test_shard_tokenizer_field},
        {"token ids and C escapes", test_parse_ids_and_escapes},
    };
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++)
        if (!suite || !CU_add_test(suite, tests[i].name, tests[i].fn)) {
            fprintf(stderr, "test_tokenizer: cannot register tests: %s\n", CU_get_error_msg());
            CU_cleanup_registry();
            return 1;
        }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures(), tests_failed = CU_get_number_of_tests_failed();
    int framework_error = CU_get_error() != CUE_SUCCESS;
    CU_cleanup_registry();
    free(g_ref);
    tokenizer_free(&g_tk);
    rmdir(g_dir);
    return (failures || tests_failed || framework_error) ? 1 : 0;
}
