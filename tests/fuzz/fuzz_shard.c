// fuzz_shard.c — libFuzzer harness: token shards (shard_open on bytes written to a file) and the
// window loader on whatever shard_open accepts. Input: u16 vocab_limit (little-endian; 0 = the
// header's), one byte T-1 (T in 1..256), u64 cursor (little-endian), then the file's bytes.
// The truth is DESIGN.md's Data paragraph, decoded here independently of data/shard.c: shard_open
// must accept exactly the files it describes (with the same count, vocabulary, tokenizer and tokens)
// and refuse every other one with one line naming the file. On an accepted shard: the largest token
// and where it first is (shard_max_token) against a plain scan; the loader's window count; the
// windows loader_fill hands out at the cursor against the tokens they must hold; one epoch's order is
// a permutation of the windows, the same whenever it is asked for.
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data.h"

#define PARAM_BYTES 11
#define MAX_PERM_CHECK 4096   // windows: beyond this the permutation is sampled, not enumerated

static char g_path[64];
static uint32_t g_seen[(MAX_PERM_CHECK + 31) / 32];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    snprintf(g_path, sizeof g_path, "/tmp/fuzz_shard_%d.bin", (int)getpid());
    return 0;
}

static uint32_t le32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static int32_t le32s(const uint8_t *p) {
    uint32_t u = le32(p);
    int32_t v;
    memcpy(&v, &u, sizeof v);
    return v;
}

// DESIGN.md, Data: 256 int32 (magic 20240520, version 1, token count, vocabulary, tokenizer), then
// uint16 tokens; int 4 = 1 byte, 2 gpt2; 0 with int 3 = 256 byte, 0 with int 3 = 0 gpt2; else refused.
// Every token below the limit (vocab_limit, else the header's vocabulary, else any uint16).
static int expect_valid(const uint8_t *f, size_t n, int vocab_limit, int *tk_out) {
    if (n < 1024) return 0;
    int32_t magic = le32s(f), version = le32s(f + 4), count = le32s(f + 8), vocab = le32s(f + 12), tk = le32s(f + 16);
    if (magic != 20240520 || version != 1 || count <= 0 || vocab < 0 || vocab > 65536) return 0;
    if (tk == 1 || tk == 2) *tk_out = tk;
    else if (tk == 0 && vocab == 256) *tk_out = 1;
    else if (tk == 0 && vocab == 0) *tk_out = 2;
    else return 0;
    if (n - 1024 != 2 * (uint64_t)count) return 0;
    long limit = vocab_limit > 0 ? vocab_limit : vocab > 0 ? vocab : 65536;
    for (size_t i = 0; i < (size_t)count; i++)
        if ((long)(f[1024 + 2 * i] | f[1024 + 2 * i + 1] << 8) >= limit) return 0;
    return 1;
}

static void check_loader(const shard *s, int T, uint64_t cursor) {
    loader l;
    char err[512] = "";
    size_t n_windows = s->n_tokens > 0 ? (s->n_tokens - 1) / (size_t)T : 0;
    int shuffle = (int)(cursor & 1);
    int rc = loader_init(&l, s, T, shuffle, cursor >> 7, err, sizeof err);
    if ((rc == 0) != (n_windows > 0)) abort();
    if (rc != 0) {
        if (!err[0] || strchr(err, '\n')) abort();
        return;
    }
    if (l.n_windows != n_windows) abort();
    // the windows at the cursor: each T+1 consecutive tokens of the shard, targets shifted by one
    enum { COUNT = 3 };
    int *inputs = sm_malloc(COUNT * (size_t)T * sizeof(int)), *targets = sm_malloc(COUNT * (size_t)T * sizeof(int));
    uint64_t at = cursor > UINT64_MAX - COUNT ? UINT64_MAX - COUNT : cursor;
    loader_fill(&l, at, COUNT, inputs, targets);
    for (int i = 0; i < COUNT; i++) {
        size_t w = loader_window_at(&l, at + (uint64_t)i);
        if (w >= n_windows || (!shuffle && w != (at + (uint64_t)i) % n_windows)) abort();
        for (int t = 0; t < T; t++)
            if (inputs[i * T + t] != s->tokens[w * (size_t)T + (size_t)t] ||
                targets[i * T + t] != s->tokens[w * (size_t)T + (size_t)t + 1])
                abort();
    }
    sm_free(inputs);
    sm_free(targets);
    // the cursor's epoch is a permutation, and the same after another epoch was visited
    uint64_t base = at / n_windows * n_windows;
    size_t m = n_windows < MAX_PERM_CHECK ? n_windows : MAX_PERM_CHECK;
    if (base > UINT64_MAX - 2 * (uint64_t)n_windows) base -= 2 * (uint64_t)n_windows;   // room for epoch + 1
    memset(g_seen, 0, sizeof g_seen);
    uint32_t first = (uint32_t)loader_window_at(&l, base), again;
    for (size_t i = 0; i < m; i++) {
        size_t w = loader_window_at(&l, base + i);
        if (n_windows <= MAX_PERM_CHECK) {
            if (g_seen[w / 32] >> (w % 32) & 1) abort();   // a window twice in one epoch
            g_seen[w / 32] |= 1u << (w % 32);
        } else if (w >= n_windows) {
            abort();
        }
    }
    (void)loader_window_at(&l, base + n_windows);   // the next epoch
    again = (uint32_t)loader_window_at(&l, base);
    if (again != first) abort();
    loader_free(&l);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < PARAM_BYTES) return 0;
    int vocab_limit = data[0] | data[1] << 8;
    int T = data[2] + 1;
    uint64_t cursor = 0;
    for (int i = 0; i < 8; i++) cursor |= (uint64_t)data[3 + i] << (8 * i);
    const uint8_t *f = data + PARAM_BYTES;
    size_t n = size - PARAM_BYTES;
    int fd = open(g_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) abort();
    if (n && write(fd, f, n) != (ssize_t)n) abort();
    close(fd);

    int want_tk = 0, want = expect_valid(f, n, vocab_limit, &want_tk);
    shard s;
    char err[1024] = "";
    int rc = shard_open(&s, g_path, vocab_limit, err, sizeof err);
    if ((rc == 0) != want) {
        fprintf(stderr, "shard_open says %d (%s), DESIGN.md says %s\n", rc, err, want ? "valid" : "invalid");
        abort();
    }
    if (rc != 0) {   // refused: one line, naming the file, nothing held
        if (!err[0] || strchr(err, '\n') || !strstr(err, g_path) || s.tokens || s.n_tokens) abort();
        unlink(g_path);
        return 0;
    }
    size_t count = (size_t)le32(f + 8);
    if (s.n_tokens != count || s.vocab_size != le32s(f + 12) || (int)s.tokenizer != want_tk) abort();
    uint16_t max = 0;
    size_t max_at = 0;
    for (size_t i = 0; i < count; i++) {
        uint16_t t = (uint16_t)(f[1024 + 2 * i] | f[1024 + 2 * i + 1] << 8);
        if (s.tokens[i] != t) abort();
        if (t > max) max = t, max_at = i;
    }
    size_t at = SIZE_MAX;
    if (shard_max_token(&s, &at) != max || at != max_at) abort();
    check_loader(&s, T, cursor);
    shard_close(&s);
    unlink(g_path);
    return 0;
}
