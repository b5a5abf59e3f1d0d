// prepare.c — prepare_shards (a text file -> PREFIX_train.bin and PREFIX_val.bin with the tokenizer
// in their headers), C escapes for --doc-sep (data_unescape), and token-id lists as text or JSON
// (tokenizer_parse_ids, for `tokenize --decode`).
#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "data.h"

int prepare_shards(const prepare_opts *o, prepare_stats *st, char *err, size_t errlen) {
    memset(st, 0, sizeof *st);
    if (!(o->val_fraction > 0.0 && o->val_fraction <= 0.5)) {   // also refuses NaN
        snprintf(err, errlen, "val fraction %g not in (0, 0.5]", o->val_fraction);
        return -1;
    }
    if (o->tokenizer != TOKENIZER_BYTE && o->tokenizer != TOKENIZER_GPT2) {
        snprintf(err, errlen, "unknown tokenizer %d", (int)o->tokenizer);
        return -1;
    }
    if (o->enc.doc_sep_len && o->tokenizer != TOKENIZER_GPT2) {
        snprintf(err, errlen, "--doc-sep needs --tokenizer gpt2: the byte tokenizer has no <|endoftext|> token");
        return -1;
    }
    char train_path[4096], val_path[4096];
    int nt = snprintf(train_path, sizeof train_path, "%s_train.bin", o->prefix);
    int nv = snprintf(val_path, sizeof val_path, "%s_val.bin", o->prefix);
    if (nt < 0 || nv < 0 || (size_t)nt >= sizeof train_path || (size_t)nv >= sizeof val_path) {
        snprintf(err, errlen, "output prefix too long (%zu chars)", strlen(o->prefix));
        return -1;
    }

    unsigned char *text = NULL;
    uint16_t *tokens = NULL;
    size_t n_bytes = 0, n = 0, n_docs = 0;
    tokenizer tk;
    memset(&tk, 0, sizeof tk);
    if (data_read_file(o->input, "input", SIZE_MAX / 4, &text, &n_bytes, err, errlen) != 0) return -1;
    if (n_bytes == 0) {
        snprintf(err, errlen, "the input is empty (%s)", o->input);
        goto error;
    }
    if (tokenizer_load(&tk, o->tokenizer, o->tokenizer_dir, err, errlen) != 0) goto error;
    tok_encode_opts enc = o->enc;
    enc.eot_per_doc = o->tokenizer == TOKENIZER_GPT2;   // llm.c's scripts: <|endoftext|> before each document
    double t0 = sm_now_s();
    if (tokenizer_encode_text(&tk, text, n_bytes, &enc, &tokens, &n, &n_docs, err, errlen) != 0) goto error;
    st->seconds = sm_now_s() - t0;
    size_t n_val = (size_t)((double)n * o->val_fraction);   // floor: both factors are >= 0
    if (n_val > n) n_val = n;
    size_t n_train = n - n_val;
    if (n_train < 2 || n_val < 2) {
        snprintf(err, errlen,
                 "input %s has %zu tokens: val fraction %g splits them %zu train / %zu val; each split needs at "
                 "least 2",
                 o->input, n, o->val_fraction, n_train, n_val);
        goto error;
    }
    if (n_train > (size_t)INT32_MAX) {
        snprintf(err, errlen, "input %s makes %zu train tokens, more than a shard holds (%d)", o->input, n_train,
                 (int)INT32_MAX);
        goto error;
    }
    if (shard_write(train_path, tokens, n_train, tk.vocab_size, o->tokenizer, err, errlen) != 0) goto error;
    if (shard_write(val_path, tokens + n_train, n_val, tk.vocab_size, o->tokenizer, err, errlen) != 0) {
        unlink(train_path);   // nothing partial: no train split without its val split
        goto error;
    }
    st->n_bytes = n_bytes;
    st->n_tokens = n;
    st->n_docs = n_docs;
    st->n_train = n_train;
    st->n_val = n_val;
    tokenizer_free(&tk);
    sm_free(tokens);
    sm_free(text);
    return 0;
error:
    tokenizer_free(&tk);
    sm_free(tokens);
    sm_free(text);
    return -1;
}

long data_unescape(const char *s, unsigned char *out, size_t cap, char *err, size_t errlen) {
    size_t k = 0;
    char b[1024];   // s as shown in a message: one line
    for (size_t i = 0; s[i];) {
        unsigned c = (unsigned char)s[i++];
        if (c == '\\') {
            unsigned e = (unsigned char)s[i];
            if (!e) {
                snprintf(err, errlen, "a lone backslash ends \"%s\"", sm_shown(s, 200, b, sizeof b));
                return -1;
            }
            i++;
            switch (e) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'v': c = '\v'; break;
            case 'f': c = '\f'; break;
            case 'a': c = '\a'; break;
            case 'b': c = '\b'; break;
            case 'e': c = 0x1B; break;
            case '\\': case '\'': case '"': case '?': c = e; break;
            case 'x': {
                unsigned v = 0, nd = 0;
                while (nd < 2 && isxdigit((unsigned char)s[i])) {
                    char h = s[i++];
                    v = v * 16 + (unsigned)(isdigit((unsigned char)h) ? h - '0' : (tolower((unsigned char)h) - 'a' + 10));
                    nd++;
                }
                if (!nd) {
                    snprintf(err, errlen, "\\x needs hex digits in \"%s\"", sm_shown(s, 200, b, sizeof b));
                    return -1;
                }
                c = v;
                break;
            }
            default:
                if (e >= '0' && e <= '7') {   // up to three octal digits
                    unsigned v = e - '0', nd = 1;
                    while (nd < 3 && s[i] >= '0' && s[i] <= '7') v = v * 8 + (unsigned)(s[i++] - '0'), nd++;
                    if (v > 255) {
                        snprintf(err, errlen, "octal escape above \\377 in \"%s\"", sm_shown(s, 200, b, sizeof b));
                        return -1;
                    }
                    c = v;
                } else {
                    char esc[2] = {(char)e, '\0'}, be[8];
                    snprintf(err, errlen, "unknown escape \\%s in \"%s\"", sm_shown(esc, 1, be, sizeof be),
                             sm_shown(s, 200, b, sizeof b));
                    return -1;
                }
            }
        }
        if (k == cap) {
            snprintf(err, errlen, "\"%s\" is longer than %zu bytes", sm_shown(s, 40, b, sizeof b), cap);
            return -1;
        }
        out[k++] = (unsigned char)c;
    }
    return (long)k;
}

// ids as JSON: one array of integers (jansson parses it, with line and column in its errors)
static int parse_json_ids(const char *text, size_t n, int vocab, uint16_t **ids, size_t *n_ids, char *err,
                          size_t errlen) {
    json_error_t jerr;
    json_t *root = json_loadb(text, n, 0, &jerr);
    if (!root) {
        char shown[4 * 120 + 4];   // jansson quotes the input near the error: raw bytes, a newline among them
        snprintf(err, errlen, "token ids: %s at line %d column %d", sm_shown(jerr.text, 120, shown, sizeof shown),
                 jerr.line, jerr.column);
        return -1;
    }
    if (!json_is_array(root)) {
        snprintf(err, errlen, "token ids: expected one JSON array of integers");
        json_decref(root);
        return -1;
    }
    size_t m = json_array_size(root);
    uint16_t *out = sm_malloc((m ? m : 1) * sizeof *out);
    for (size_t i = 0; i < m; i++) {
        json_t *v = json_array_get(root, i);
        json_int_t x = json_is_integer(v) ? json_integer_value(v) : -1;
        if (!json_is_integer(v) || x < 0 || x >= vocab) {
            snprintf(err, errlen, "token ids: element %zu is %s, not a token id in 0..%d", i,
                     json_is_integer(v) ? "out of range" : "not an integer", vocab - 1);
            sm_free(out);
            json_decref(root);
            return -1;
        }
        out[i] = (uint16_t)x;
    }
    json_decref(root);
    *ids = out;
    *n_ids = m;
    return 0;
}

int tokenizer_parse_ids(const char *text, size_t n, int vocab, uint16_t **ids, size_t *n_ids, char *err,
                        size_t errlen) {
    *ids = NULL;
    *n_ids = 0;
    size_t i = 0;
    while (i < n && isspace((unsigned char)text[i])) i++;
    if (i < n && text[i] == '[') return parse_json_ids(text, n, vocab, ids, n_ids, err, errlen);
    // whitespace-separated decimal ids (one per line as `tokenize` writes them)
    size_t count = 0;
    for (size_t j = i; j < n;) {
        while (j < n && isspace((unsigned char)text[j])) j++;
        if (j < n) count++;
        while (j < n && !isspace((unsigned char)text[j])) j++;
    }
    uint16_t *out = sm_malloc((count ? count : 1) * sizeof *out);
    size_t m = 0, line = 1;
    for (size_t j = 0; j < n;) {
        if (isspace((unsigned char)text[j])) {
            line += text[j++] == '\n';
            continue;
        }
        size_t s = j;
        long v = 0;
        while (j < n && !isspace((unsigned char)text[j])) {
            if (!isdigit((unsigned char)text[j]) || v >= vocab) v = -1;
            if (v >= 0) v = v * 10 + (text[j] - '0');
            j++;
        }
        if (v < 0 || v >= vocab) {
            snprintf(err, errlen, "token ids line %zu: \"%.*s\" is not a token id in 0..%d", line,
                     (int)(j - s > 40 ? 40 : j - s), text + s, vocab - 1);
            sm_free(out);
            return -1;
        }
        out[m++] = (uint16_t)v;
    }
    *ids = out;
    *n_ids = m;
    return 0;
}
