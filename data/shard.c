// shard.c — llm.c-format token shards: shard_open (read + validate, the tokenizer from the header),
// shard_close, shard_write.
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "data.h"

#define HEADER_BYTES ((size_t)SHARD_HEADER_INTS * 4)
#define MAX_VOCAB 65536   // uint16 tokens: every value is < 65536

// The shard format is little-endian whatever the host; decode and encode byte by byte.
static int32_t get_i32le(const unsigned char *p) {
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    int32_t v;
    memcpy(&v, &u, sizeof v);
    return v;
}

static void put_i32le(unsigned char *p, int32_t v) {
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    p[0] = (unsigned char)u;
    p[1] = (unsigned char)(u >> 8);
    p[2] = (unsigned char)(u >> 16);
    p[3] = (unsigned char)(u >> 24);
}

int shard_open(shard *s, const char *path, int vocab_limit, char *err, size_t errlen) {
    memset(s, 0, sizeof *s);
    snprintf(s->path, sizeof s->path, "%s", path);
    unsigned char header[HEADER_BYTES];
    int fd = -1;
    size_t file_bytes = 0;
    if (data_open_regular(path, "shard", &fd, &file_bytes, err, errlen) != 0) return -1;
    if (file_bytes < HEADER_BYTES) {
        snprintf(err, errlen, "not a token shard: truncated header (file holds %zu bytes, the header is %zu) (%s)",
                 file_bytes, HEADER_BYTES, path);
        goto error;
    }
    if (data_read_exact(fd, header, HEADER_BYTES, "the header of shard", path, err, errlen) != 0) goto error;
    int32_t magic = get_i32le(header), version = get_i32le(header + 4);
    int32_t n_tokens = get_i32le(header + 8), vocab = get_i32le(header + 12), tk = get_i32le(header + 16);
    if (magic != SHARD_MAGIC) {
        snprintf(err, errlen, "not a token shard: bad magic %d, expected %d (%s)", (int)magic, SHARD_MAGIC, path);
        goto error;
    }
    if (version != SHARD_VERSION) {
        snprintf(err, errlen, "token shard version %d unsupported, expected %d: uint16 tokens (%s)", (int)version,
                 SHARD_VERSION, path);
        goto error;
    }
    if (n_tokens <= 0) {
        snprintf(err, errlen, "the shard's header says %d tokens; a shard needs at least one (%s)", (int)n_tokens, path);
        goto error;
    }
    if (vocab < 0 || vocab > MAX_VOCAB) {
        snprintf(err, errlen, "the shard's header vocab size %d is out of range [0, %d] (%s)", (int)vocab, MAX_VOCAB, path);
        goto error;
    }
    // The tokenizer (DESIGN.md, Data): int 4 says; a 0 there is an older smallmind shard (int 3
    // = 256: byte) or llm.c's (int 3 = 0: GPT-2 tokens); anything else is not ours to guess.
    if (tk == TOKENIZER_BYTE || tk == TOKENIZER_GPT2) {
        s->tokenizer = (tokenizer_kind)tk;
    } else if (tk == 0 && (vocab == 256 || vocab == 0)) {
        s->tokenizer = vocab == 256 ? TOKENIZER_BYTE : TOKENIZER_GPT2;
    } else {
        snprintf(err, errlen,
                 "the shard's header int 4 (tokenizer) is %d with vocab size %d; expected 1 (byte), 2 (gpt2), or 0 "
                 "with vocab size 256 (byte) or 0 (gpt2, llm.c) (%s)",
                 (int)tk, (int)vocab, path);
        goto error;
    }
    size_t body_bytes = (size_t)n_tokens * sizeof(uint16_t);
    if (file_bytes != HEADER_BYTES + body_bytes) {
        snprintf(err, errlen, "the shard's header says %d tokens (%zu bytes) but the file holds %zu bytes (%s)",
                 (int)n_tokens, HEADER_BYTES + body_bytes, file_bytes, path);
        goto error;
    }
    s->tokens = sm_malloc(body_bytes);
    if (data_read_exact(fd, s->tokens, body_bytes, "the tokens of shard", path, err, errlen) != 0) goto error;
    if (close(fd) != 0) {
        fd = -1;
        snprintf(err, errlen, "cannot close the shard: %s (%s)", strerror(errno), path);
        goto error;
    }
    fd = -1;
    // Tokens are little-endian on disk; fix them up in place on a big-endian host.
    const uint16_t one = 1;
    if (*(const unsigned char *)&one == 0)
        for (size_t i = 0; i < (size_t)n_tokens; i++)
            s->tokens[i] = (uint16_t)(s->tokens[i] >> 8 | s->tokens[i] << 8);
    int limit = vocab_limit > 0 ? vocab_limit : vocab > 0 ? vocab : MAX_VOCAB;
    if (limit < MAX_VOCAB)
        for (size_t i = 0; i < (size_t)n_tokens; i++)
            if (s->tokens[i] >= limit) {
                snprintf(err, errlen, "token %d at position %zu >= vocab size %d (%s)", (int)s->tokens[i], i,
                         limit, path);
                goto error;
            }
    s->n_tokens = (size_t)n_tokens;
    s->vocab_size = (int)vocab;
    return 0;
error:
    if (fd >= 0) close(fd);
    sm_free(s->tokens);
    s->tokens = NULL;
    s->n_tokens = 0;
    return -1;
}

void shard_close(shard *s) {
    sm_free(s->tokens);
    s->tokens = NULL;
    s->n_tokens = 0;
}

int shard_write(const char *path, const uint16_t *tokens, size_t n, int vocab_size, tokenizer_kind tk, char *err,
                size_t errlen) {
    if (n == 0 || n > (size_t)INT32_MAX) {
        snprintf(err, errlen, "cannot write shard %s: %zu tokens (a shard holds 1 to %d)", path, n, (int)INT32_MAX);
        return -1;
    }
    if (vocab_size < 0 || vocab_size > MAX_VOCAB) {
        snprintf(err, errlen, "cannot write shard %s: vocab size %d out of range [0, %d]", path, vocab_size,
                 MAX_VOCAB);
        return -1;
    }
    if (tk != TOKENIZER_BYTE && tk != TOKENIZER_GPT2) {
        snprintf(err, errlen, "cannot write shard %s: tokenizer %d is neither byte (1) nor gpt2 (2)", path, (int)tk);
        return -1;
    }
    // Refuse to write a shard that shard_open would refuse to read.
    if (vocab_size > 0)
        for (size_t i = 0; i < n; i++)
            if (tokens[i] >= vocab_size) {
                snprintf(err, errlen, "cannot write shard %s: token %d at position %zu >= vocab size %d", path,
                         (int)tokens[i], i, vocab_size);
                return -1;
            }
    size_t n_bytes = HEADER_BYTES + n * sizeof(uint16_t);
    unsigned char *buf = sm_calloc(n_bytes, 1);
    put_i32le(buf, SHARD_MAGIC);
    put_i32le(buf + 4, SHARD_VERSION);
    put_i32le(buf + 8, (int32_t)n);
    put_i32le(buf + 12, (int32_t)vocab_size);
    put_i32le(buf + 16, (int32_t)tk);
    unsigned char *body = buf + HEADER_BYTES;
    for (size_t i = 0; i < n; i++) {
        body[2 * i] = (unsigned char)tokens[i];
        body[2 * i + 1] = (unsigned char)(tokens[i] >> 8);
    }
    int rc = sm_write_file_atomic(path, buf, n_bytes, err, errlen);
    sm_free(buf);
    return rc;
}

uint16_t shard_max_token(const shard *s, size_t *first_at) {
    uint16_t m = 0;
    for (size_t i = 0; i < s->n_tokens; i++) m = s->tokens[i] > m ? s->tokens[i] : m;   // vectorised
    if (first_at) {
        size_t i = 0;
        while (i < s->n_tokens && s->tokens[i] != m) i++;
        *first_at = i;
    }
    return m;
}

uint64_t shard_hash(const shard *s) { return XXH3_64bits(s->tokens, s->n_tokens * sizeof(uint16_t)); }
