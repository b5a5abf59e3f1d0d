// tokenizer.c — tokenizer names and sizes, the byte tokenizer, and prepare_shards (text -> train/val shards).
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data.h"

int tokenizer_parse(const char *name) {
    if (!name) return -1;
    if (strcmp(name, "byte") == 0) return TOKENIZER_BYTE;
    if (strcmp(name, "gpt2") == 0) return TOKENIZER_GPT2;
    return -1;
}

const char *tokenizer_name(tokenizer_kind k) {
    switch (k) {
    case TOKENIZER_BYTE: return "byte";
    case TOKENIZER_GPT2: return "gpt2";
    }
    return "unknown";
}

int tokenizer_vocab_size(tokenizer_kind k) {
    switch (k) {
    case TOKENIZER_BYTE: return 256;
    case TOKENIZER_GPT2: return 50257;
    }
    return 0;
}

size_t byte_encode(uint16_t *out, const unsigned char *text, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = text[i];
    return n;
}

size_t byte_decode(char *out, size_t cap, int tok) {
    if (tok < 0 || tok > 255 || cap < 1) return 0;
    out[0] = (char)(unsigned char)tok;
    return 1;
}

// Reads the whole of `path` into a fresh buffer (*out, *n_bytes). 0, or -1 + err.
static int read_text(const char *path, unsigned char **out, size_t *n_bytes, char *err, size_t errlen) {
    *out = NULL;
    *n_bytes = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open input %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        snprintf(err, errlen, "cannot stat input %s: %s", path, strerror(errno));
        goto error;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "input %s is not a regular file", path);
        goto error;
    }
    size_t n = (size_t)st.st_size;
    if (n == 0) {
        snprintf(err, errlen, "input %s is empty", path);
        goto error;
    }
    *out = sm_malloc(n);
    if (fread(*out, 1, n, f) != n) {
        snprintf(err, errlen, "cannot read %zu bytes of input %s: %s", n, path,
                 ferror(f) ? strerror(errno) : "unexpected end of file");
        goto error;
    }
    if (fclose(f) != 0) {
        f = NULL;
        snprintf(err, errlen, "cannot close input %s: %s", path, strerror(errno));
        goto error;
    }
    *n_bytes = n;
    return 0;
error:
    if (f) fclose(f);
    sm_free(*out);
    *out = NULL;
    return -1;
}

int prepare_shards(const char *input, const char *prefix, tokenizer_kind tk, double val_fraction, char *err,
                   size_t errlen) {
    if (tk == TOKENIZER_GPT2) {
        snprintf(err, errlen, "gpt2 tokenizer not implemented yet (use --tokenizer byte)");
        return -1;
    }
    if (tk != TOKENIZER_BYTE) {
        snprintf(err, errlen, "unknown tokenizer %d", (int)tk);
        return -1;
    }
    if (!(val_fraction > 0.0 && val_fraction <= 0.5)) {   // also refuses NaN
        snprintf(err, errlen, "val fraction %g not in (0, 0.5]", val_fraction);
        return -1;
    }
    char train_path[4096], val_path[4096];
    int nt = snprintf(train_path, sizeof train_path, "%s_train.bin", prefix);
    int nv = snprintf(val_path, sizeof val_path, "%s_val.bin", prefix);
    if (nt < 0 || nv < 0 || (size_t)nt >= sizeof train_path || (size_t)nv >= sizeof val_path) {
        snprintf(err, errlen, "output prefix too long (%zu chars)", strlen(prefix));
        return -1;
    }

    unsigned char *text = NULL;
    uint16_t *tokens = NULL;
    size_t n_bytes;
    if (read_text(input, &text, &n_bytes, err, errlen) != 0) return -1;
    tokens = sm_malloc(n_bytes * sizeof(uint16_t));
    size_t n = byte_encode(tokens, text, n_bytes);
    size_t n_val = (size_t)((double)n * val_fraction);   // floor: both factors are >= 0
    if (n_val > n) n_val = n;
    size_t n_train = n - n_val;
    if (n_train < 2 || n_val < 2) {
        snprintf(err, errlen,
                 "input %s has %zu tokens: val fraction %g splits them %zu train / %zu val; each split needs at "
                 "least 2",
                 input, n, val_fraction, n_train, n_val);
        goto error;
    }
    int vocab = tokenizer_vocab_size(tk);
    if (shard_write(train_path, tokens, n_train, vocab, err, errlen) != 0) goto error;
    if (shard_write(val_path, tokens + n_train, n_val, vocab, err, errlen) != 0) {
        unlink(train_path);   // nothing partial: no train split without its val split
        goto error;
    }
    sm_free(tokens);
    sm_free(text);
    return 0;
error:
    sm_free(tokens);
    sm_free(text);
    return -1;
}
