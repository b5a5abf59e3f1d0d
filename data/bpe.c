// bpe.c — GPT-2's byte-level BPE: encoder.json (jansson) and vocab.bpe loaded and checked, the
// byte-to-unicode map, the pre-tokenisation pattern (PCRE2, UTF, JIT), merges by rank (a hash
// table of token pairs; a heap for long pieces), a per-thread cache of pieces, and the UTF-8 view.
//
// The method is tiktoken's `encode_ordinary` for its "gpt2" encoding (the truth the tests
// compare against, id for id): the text is cut into pieces by GPT-2's pattern; a piece that is
// itself a token is that token; otherwise it starts as one token per byte and, while some
// adjacent pair of tokens concatenates to a token, the pair whose concatenation has the lowest
// rank (= token id; the leftmost on ties) is merged. GPT-2's own encoder.py (and gpt-3-encoder)
// merge only the pairs vocab.bpe lists; tiktoken merges any pair whose bytes are a token.
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "data.h"

#define NO_RANK UINT32_MAX
#define PIECE_SMALL 64        // pieces up to this many bytes merge in a flat array (O(n^2), n small)
#define CACHE_KEY_BYTES 30    // pieces up to this long are cached ...
#define CACHE_TOKS 16         // ... when they make at most this many tokens
#define CACHE_ENTRIES 4096    // direct-mapped, 64 bytes each: 256 KiB per thread
#define MAX_JSON_BYTES ((size_t)64 << 20)
#define MAX_BPE_BYTES ((size_t)16 << 20)

// GPT-2's pattern (tiktoken's gpt2 pat_str), with `\s` spelled out as Unicode's White_Space, which
// is what `\s` means in tiktoken's Rust regex; PCRE2's \s (even with PCRE2_UCP) also takes U+180E.
// Anchored: every piece starts where the previous one ended (the pattern matches any character).
#define WS "\\t-\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
static const char GPT2_PATTERN[] = "'(?:[sdmt]|ll|ve|re)| ?\\p{L}+| ?\\p{N}+| ?[^" WS "\\p{L}\\p{N}]+|[" WS
                                   "]+(?![^" WS "])|[" WS "]+";

typedef struct {
    uint32_t key;   // left id << 16 | right id; UINT32_MAX: empty
    uint32_t rank;  // the id of their concatenation
} pair_slot;

struct gpt2_bpe {
    unsigned char *blob;                  // every token's bytes, in id order
    uint32_t off[GPT2_VOCAB_SIZE + 1];    // token i is blob[off[i], off[i+1])
    uint16_t byte_token[256];             // the one-byte token of each byte
    uint32_t *vocab_slots;                // bytes -> id + 1 (0: empty), open addressing
    uint32_t vocab_mask;
    pair_slot *pairs;                     // (left, right) -> rank, open addressing
    uint32_t pair_mask, pair_shift;
    pcre2_code *re;
    int jit;                              // 1 when PCRE2's JIT compiled the pattern
};

typedef struct {
    uint8_t n_bytes, n_toks;   // n_bytes 0: empty
    unsigned char bytes[CACHE_KEY_BYTES];
    uint16_t toks[CACHE_TOKS];
} cache_entry;

struct bpe_worker {
    const gpt2_bpe *b;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit_stack;
    cache_entry *cache;                   // CACHE_ENTRIES
    size_t cap;                           // pieces the heap buffers below hold
    uint32_t *tok, *nxt, *prv;            // cap each
    uint64_t *heap;                       // 3 * cap
};

// ---------------------------------------------------------------------------------------------
// Hashing

static inline uint64_t hash_bytes(const unsigned char *p, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        h = (h ^ v) * 0xBF58476D1CE4E5B9ull;
        h ^= h >> 31;
        p += 8;
        n -= 8;
    }
    if (n) {
        uint64_t v = 0;
        for (size_t i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
        h = (h ^ v) * 0x94D049BB133111EBull;
    }
    h ^= h >> 29;
    h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 32;
    return h;
}

// The id of the token whose bytes are p[0, n) (h = hash_bytes(p, n)), or -1.
static inline int vocab_find(const gpt2_bpe *b, const unsigned char *p, size_t n, uint64_t h) {
    for (uint32_t i = (uint32_t)h & b->vocab_mask;; i = (i + 1) & b->vocab_mask) {
        uint32_t v = b->vocab_slots[i];
        if (!v) return -1;
        uint32_t id = v - 1;
        if (b->off[id + 1] - b->off[id] == n && memcmp(b->blob + b->off[id], p, n) == 0) return (int)id;
    }
}

// The rank of merging tokens a and c (the id of their concatenation), or NO_RANK.
static inline uint32_t pair_rank(const gpt2_bpe *b, uint32_t a, uint32_t c) {
    uint32_t key = a << 16 | c;
    for (uint32_t i = (key * 0x9E3779B1u) >> b->pair_shift;; i = (i + 1) & b->pair_mask) {
        if (b->pairs[i].key == key) return b->pairs[i].rank;
        if (b->pairs[i].key == UINT32_MAX) return NO_RANK;
    }
}

// ---------------------------------------------------------------------------------------------
// GPT-2's byte-to-unicode map: the printable bytes '!'..'~', 0xA1..0xAC and 0xAE..0xFF stand for
// themselves; the other 68 bytes, in increasing order, for U+0100, U+0101, ... (encoder.py,
// bytes_to_unicode). Token strings in encoder.json and vocab.bpe are written in it.
static void byte_to_unicode(uint32_t cp_of[256], int byte_of[324]) {
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        cp_of[b] = printable ? (uint32_t)b : (uint32_t)(256 + n++);
    }
    for (int c = 0; c < 324; c++) byte_of[c] = -1;
    for (int b = 0; b < 256; b++) byte_of[cp_of[b]] = b;
}

// Decodes a token string written in the byte-to-unicode map (UTF-8 text s[0, n)) into bytes
// (out holds n). Returns the byte count, or -1 with the offending code point in *bad.
static size_t utf8_seq(const unsigned char *p, size_t n);
static long unmap_token(const int byte_of[324], const unsigned char *s, size_t n, unsigned char *out, uint32_t *bad) {
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        size_t len = utf8_seq(s + i, n - i);
        uint32_t c = s[i];
        if (len > 1) {
            c &= len == 2 ? 0x1F : len == 3 ? 0x0F : 0x07;
            for (size_t j = 1; j < len; j++) c = c << 6 | (s[i + j] & 0x3F);
        }
        if (!len || c >= 324 || byte_of[c] < 0) {
            *bad = c;   // for invalid UTF-8, its first byte
            return -1;
        }
        out[k++] = (unsigned char)byte_of[c];
        i += len;
    }
    return (long)k;
}

// ---------------------------------------------------------------------------------------------
// UTF-8

// Length of the valid UTF-8 sequence at p (n bytes available), or 0 when p[0] starts none.
static size_t utf8_seq(const unsigned char *p, size_t n) {
    unsigned c = p[0];
    if (c < 0x80) return 1;
    if (c < 0xC2) return 0;   // a continuation byte, or an overlong 2-byte lead (C0, C1)
    if (c < 0xE0) return n >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c < 0xF0) {
        if (n < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && p[1] < 0xA0) return 0;    // overlong
        if (c == 0xED && p[1] >= 0xA0) return 0;   // a surrogate, U+D800..U+DFFF
        return 3;
    }
    if (c < 0xF5) {
        if (n < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80) return 0;
        if (c == 0xF0 && p[1] < 0x90) return 0;    // overlong
        if (c == 0xF4 && p[1] >= 0x90) return 0;   // above U+10FFFF
        return 4;
    }
    return 0;
}

size_t utf8_view(const unsigned char *text, size_t n, const unsigned char **view) {
    *view = text;
    unsigned char *copy = NULL;
    size_t n_bad = 0;
    for (size_t i = 0; i < n;) {
        if (i + 8 <= n) {   // ASCII runs 8 bytes at a time
            uint64_t v;
            memcpy(&v, text + i, 8);
            if (!(v & 0x8080808080808080ull)) {
                i += 8;
                continue;
            }
        }
        size_t len = utf8_seq(text + i, n - i);
        if (len) {
            i += len;
            continue;
        }
        if (!copy) {
            copy = sm_malloc(n);
            memcpy(copy, text, n);
        }
        copy[i++] = GPT2_INVALID_STANDIN;
        n_bad++;
    }
    if (copy) *view = copy;
    return n_bad;
}

// ---------------------------------------------------------------------------------------------
// Loading

static uint32_t pow2_at_least(size_t n) {
    uint32_t p = 1;
    while (p < n) p <<= 1;
    return p;
}

static void pair_insert(gpt2_bpe *b, uint32_t a, uint32_t c, uint32_t rank) {
    uint32_t key = a << 16 | c;
    uint32_t i = (key * 0x9E3779B1u) >> b->pair_shift;
    while (b->pairs[i].key != UINT32_MAX && b->pairs[i].key != key) i = (i + 1) & b->pair_mask;
    b->pairs[i].key = key;
    b->pairs[i].rank = rank;
}

// encoder.json: one object of exactly 50257 token strings -> ids 0..50256, each id once.
static int load_encoder(gpt2_bpe *b, const char *path, const int byte_of[324], char *err, size_t errlen) {
    unsigned char *buf = NULL;
    size_t n = 0;
    json_t *root = NULL;
    int rc = -1;
    if (data_read_file(path, "encoder.json", MAX_JSON_BYTES, &buf, &n, err, errlen) != 0) return -1;
    json_error_t jerr;
    root = json_loadb((const char *)buf, n, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        char shown[4 * 120 + 4];   // jansson quotes the input near the error: raw bytes, a newline among them
        snprintf(err, errlen, "encoder.json: %s at line %d column %d (%s)", sm_shown(jerr.text, 120, shown, sizeof shown),
                 jerr.line, jerr.column, path);
        goto done;
    }
    if (!json_is_object(root) || json_object_size(root) != GPT2_VOCAB_SIZE) {
        snprintf(err, errlen, "encoder.json: expected an object of %d tokens, found %s of %zu (%s)", GPT2_VOCAB_SIZE,
                 json_is_object(root) ? "an object" : "another JSON value",
                 json_is_object(root) ? json_object_size(root) : (size_t)0, path);
        goto done;
    }
    // Each token's bytes go into tmp in the file's order, then into blob in id order.
    uint32_t *at = sm_malloc(2 * (size_t)GPT2_VOCAB_SIZE * sizeof(uint32_t)), *len = at + GPT2_VOCAB_SIZE;
    for (int i = 0; i < GPT2_VOCAB_SIZE; i++) len[i] = UINT32_MAX;
    unsigned char *tmp = sm_malloc(n);
    size_t used = 0;
    const char *key;
    json_t *val;
    char kb[256];   // a key as shown in a message: its first 40 bytes, control characters escaped
    json_object_foreach(root, key, val) {
        json_int_t id = json_is_integer(val) ? json_integer_value(val) : -1;
        if (id < 0 || id >= GPT2_VOCAB_SIZE) {
            snprintf(err, errlen, "encoder.json: token \"%s\" has id %s, expected an integer in 0..%d (%s)",
                     sm_shown(key, 40, kb, sizeof kb), json_is_integer(val) ? "out of range" : "that is not an integer",
                     GPT2_VOCAB_SIZE - 1, path);
            goto free_tmp;
        }
        if (len[id] != UINT32_MAX) {
            snprintf(err, errlen, "encoder.json: id %d is given to two tokens (\"%s\" and another) (%s)", (int)id,
                     sm_shown(key, 40, kb, sizeof kb), path);
            goto free_tmp;
        }
        uint32_t bad = 0;
        long k = unmap_token(byte_of, (const unsigned char *)key, strlen(key), tmp + used, &bad);
        if (k <= 0) {
            snprintf(err, errlen, "encoder.json: token \"%s\" (id %d) %s U+%04X outside GPT-2's byte map (%s)",
                     sm_shown(key, 40, kb, sizeof kb), (int)id, k == 0 ? "is empty:" : "has the character",
                     (unsigned)bad, path);
            goto free_tmp;
        }
        at[id] = (uint32_t)used;
        len[id] = (uint32_t)k;
        used += (size_t)k;
    }
    b->blob = sm_malloc(used);
    uint32_t o = 0;
    for (int i = 0; i < GPT2_VOCAB_SIZE; i++) {
        b->off[i] = o;
        memcpy(b->blob + o, tmp + at[i], len[i]);
        o += len[i];
    }
    b->off[GPT2_VOCAB_SIZE] = o;
    if (len[GPT2_EOT] != 13 || memcmp(b->blob + b->off[GPT2_EOT], "<|endoftext|>", 13) != 0) {
        snprintf(err, errlen, "encoder.json: id %d is not <|endoftext|> (%s)", GPT2_EOT, path);
        goto free_tmp;
    }
    for (int i = 0; i < 256; i++) b->byte_token[i] = UINT16_MAX;
    for (int i = 0; i < GPT2_VOCAB_SIZE; i++)
        if (len[i] == 1) b->byte_token[b->blob[b->off[i]]] = (uint16_t)i;
    for (int c = 0; c < 256; c++)
        if (b->byte_token[c] == UINT16_MAX) {
            snprintf(err, errlen, "encoder.json: no token for the byte 0x%02X (%s)", (unsigned)c, path);
            goto free_tmp;
        }
    // bytes -> id for the mergeable tokens (<|endoftext|> is special: never a piece's token)
    b->vocab_mask = pow2_at_least(4 * (size_t)GPT2_VOCAB_SIZE) - 1;
    b->vocab_slots = sm_calloc((size_t)b->vocab_mask + 1, sizeof(uint32_t));
    for (int i = 0; i < GPT2_EOT; i++) {
        const unsigned char *p = b->blob + b->off[i];
        size_t n_i = b->off[i + 1] - b->off[i];
        uint32_t s = (uint32_t)hash_bytes(p, n_i) & b->vocab_mask;
        while (b->vocab_slots[s]) s = (s + 1) & b->vocab_mask;
        b->vocab_slots[s] = (uint32_t)i + 1;
    }
    rc = 0;
free_tmp:
    sm_free(tmp);
    sm_free(at);
done:
    json_decref(root);
    sm_free(buf);
    return rc;
}

// vocab.bpe: "#version ..." then exactly 50000 lines "A B"; merge i (0-based) of tokens A and B
// must make the token encoder.json numbers 256 + i (tiktoken checks the same). Needs load_encoder.
static int check_merges(gpt2_bpe *b, const char *path, const int byte_of[324], char *err, size_t errlen) {
    unsigned char *buf = NULL, *ab = NULL;
    size_t n = 0;
    int rc = -1;
    if (data_read_file(path, "vocab.bpe", MAX_BPE_BYTES, &buf, &n, err, errlen) != 0) return -1;
    ab = sm_malloc(n + 1);
    size_t pos = 0, line = 1, n_merges = 0;
    const unsigned char *nl = memchr(buf, '\n', n);
    if (n < 8 || memcmp(buf, "#version", 8) != 0 || !nl) {
        snprintf(err, errlen, "vocab.bpe line 1: expected \"#version: 0.2\" and a newline (%s)", path);
        goto done;
    }
    pos = (size_t)(nl - buf) + 1;
    while (pos < n) {
        line++;
        const unsigned char *s = buf + pos, *e = memchr(s, '\n', n - pos);
        size_t ln = e ? (size_t)(e - s) : n - pos;
        pos += ln + 1;
        const unsigned char *sp = memchr(s, ' ', ln);
        if (!sp || sp == s || sp + 1 == s + ln || memchr(sp + 1, ' ', (size_t)(s + ln - sp - 1))) {
            snprintf(err, errlen, "vocab.bpe line %zu: expected two tokens separated by one space (%s)", line, path);
            goto done;
        }
        if (n_merges == GPT2_N_MERGES) {
            snprintf(err, errlen, "vocab.bpe line %zu: more than GPT-2's %d merges (%s)", line, GPT2_N_MERGES, path);
            goto done;
        }
        uint32_t bad = 0;
        long na = unmap_token(byte_of, s, (size_t)(sp - s), ab, &bad);
        long nb = na < 0 ? -1 : unmap_token(byte_of, sp + 1, (size_t)(s + ln - sp - 1), ab + na, &bad);
        if (na < 0 || nb < 0) {
            snprintf(err, errlen, "vocab.bpe line %zu: character U+%04X is outside GPT-2's byte map (%s)", line,
                     (unsigned)bad, path);
            goto done;
        }
        int ia = vocab_find(b, ab, (size_t)na, hash_bytes(ab, (size_t)na));
        int ib = vocab_find(b, ab + na, (size_t)nb, hash_bytes(ab + na, (size_t)nb));
        int iab = vocab_find(b, ab, (size_t)(na + nb), hash_bytes(ab, (size_t)(na + nb)));
        if (ia < 0 || ib < 0 || iab < 0) {
            char merge[61], mb[256];   // the line's first 60 bytes, control characters escaped
            memcpy(merge, s, ln > 60 ? 60 : ln);
            merge[ln > 60 ? 60 : ln] = '\0';
            snprintf(err, errlen, "vocab.bpe line %zu: the merge \"%s\" names %s, which encoder.json does not have (%s)",
                     line, sm_shown(merge, 60, mb, sizeof mb),
                     ia < 0 ? "its first token" : ib < 0 ? "its second token" : "a merged token", path);
            goto done;
        }
        if (iab != 256 + (int)n_merges) {
            snprintf(err, errlen,
                     "vocab.bpe line %zu: merge %zu makes token %d, but encoder.json numbers merge i as token 256+i "
                     "= %zu: not the same vocabulary (%s)",
                     line, n_merges, iab, 256 + n_merges, path);
            goto done;
        }
        n_merges++;
    }
    if (n_merges != GPT2_N_MERGES) {
        snprintf(err, errlen, "vocab.bpe: %zu merges, GPT-2 has %d (truncated?) (%s)", n_merges, GPT2_N_MERGES, path);
        goto done;
    }
    rc = 0;
done:
    sm_free(ab);
    sm_free(buf);
    return rc;
}

// The pair table: every split of every merged token into two tokens, with the merged token's id
// as its rank (tiktoken merges a pair when its bytes are a token, whichever split made it).
static void build_pairs(gpt2_bpe *b) {
    size_t count = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int id = 256; id < GPT2_EOT; id++) {
            const unsigned char *p = b->blob + b->off[id];
            size_t len = b->off[id + 1] - b->off[id];
            for (size_t k = 1; k < len; k++) {
                int ia = vocab_find(b, p, k, hash_bytes(p, k));
                if (ia < 0) continue;
                int ic = vocab_find(b, p + k, len - k, hash_bytes(p + k, len - k));
                if (ic < 0) continue;
                if (pass == 0) count++;
                else pair_insert(b, (uint32_t)ia, (uint32_t)ic, (uint32_t)id);
            }
        }
        if (pass == 0) {
            uint32_t size = pow2_at_least(2 * count + 1);
            b->pair_mask = size - 1;
            b->pair_shift = 32;
            for (uint32_t s = size; s > 1; s >>= 1) b->pair_shift--;
            b->pairs = sm_malloc((size_t)size * sizeof(pair_slot));
            for (uint32_t i = 0; i < size; i++) b->pairs[i].key = UINT32_MAX;
        }
    }
}

gpt2_bpe *bpe_load(const char *dir, char *err, size_t errlen) {
    if (!dir || !*dir) dir = tokenizer_default_dir();
    char enc_path[4096], bpe_path[4096];
    int ne = snprintf(enc_path, sizeof enc_path, "%s/encoder.json", dir);
    int nb = snprintf(bpe_path, sizeof bpe_path, "%s/vocab.bpe", dir);
    if (ne < 0 || nb < 0 || (size_t)ne >= sizeof enc_path || (size_t)nb >= sizeof bpe_path) {
        snprintf(err, errlen, "tokenizer directory name too long (%zu chars)", strlen(dir));
        return NULL;
    }
    uint32_t cp_of[256];
    int byte_of[324];
    byte_to_unicode(cp_of, byte_of);
    gpt2_bpe *b = sm_calloc(1, sizeof *b);
    if (load_encoder(b, enc_path, byte_of, err, errlen) != 0) goto error;
    if (check_merges(b, bpe_path, byte_of, err, errlen) != 0) goto error;
    build_pairs(b);
    int ecode;
    PCRE2_SIZE eoff;
    b->re = pcre2_compile((PCRE2_SPTR)GPT2_PATTERN, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_ANCHORED, &ecode, &eoff,
                          NULL);
    if (!b->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ecode, msg, sizeof msg);
        snprintf(err, errlen, "PCRE2 cannot compile GPT-2's pattern at offset %zu: %s (data/bpe.c)", (size_t)eoff,
                 (const char *)msg);
        goto error;
    }
    // JIT where PCRE2 has it for this CPU (else its interpreter, slower, same pieces)
    b->jit = pcre2_jit_compile(b->re, PCRE2_JIT_COMPLETE) == 0;
    return b;
error:
    bpe_free(b);
    return NULL;
}

void bpe_free(gpt2_bpe *b) {
    if (!b) return;
    if (b->re) pcre2_code_free(b->re);
    sm_free(b->pairs);
    sm_free(b->vocab_slots);
    sm_free(b->blob);
    sm_free(b);
}

const unsigned char *bpe_token_bytes(const gpt2_bpe *b, int tok, size_t *n_bytes) {
    if (tok < 0 || tok >= GPT2_VOCAB_SIZE) {
        *n_bytes = 0;
        return NULL;
    }
    *n_bytes = b->off[tok + 1] - b->off[tok];
    return b->blob + b->off[tok];
}

// ---------------------------------------------------------------------------------------------
// Workers and encoding

bpe_worker *bpe_worker_new(const gpt2_bpe *b, char *err, size_t errlen) {
    bpe_worker *w = sm_calloc(1, sizeof *w);
    w->b = b;
    w->md = pcre2_match_data_create_from_pattern(b->re, NULL);
    w->mctx = pcre2_match_context_create(NULL);
    // The pattern's repeats are single-character classes, which JIT runs without stack per
    // character; a larger stack than the 32 KiB default is room for the unforeseen.
    if (b->jit) w->jit_stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
    if (!w->md || !w->mctx || (b->jit && !w->jit_stack)) {
        snprintf(err, errlen, "out of memory creating PCRE2 match data (data/bpe.c)");
        bpe_worker_free(w);
        return NULL;
    }
    if (w->jit_stack) pcre2_jit_stack_assign(w->mctx, NULL, w->jit_stack);
    w->cache = sm_calloc(CACHE_ENTRIES, sizeof(cache_entry));
    return w;
}

void bpe_worker_free(bpe_worker *w) {
    if (!w) return;
    if (w->md) pcre2_match_data_free(w->md);
    if (w->mctx) pcre2_match_context_free(w->mctx);
    if (w->jit_stack) pcre2_jit_stack_free(w->jit_stack);
    sm_free(w->cache);
    sm_free(w->tok);
    sm_free(w->heap);
    sm_free(w);
}

// BPE of a short piece p[0, n) (2 <= n <= PIECE_SMALL) in a flat array: tiktoken's loop, the
// leftmost lowest-ranked pair merged each round. Returns the token count written to out.
static size_t merge_small(const gpt2_bpe *b, const unsigned char *p, size_t n, uint16_t *out) {
    uint32_t tok[PIECE_SMALL], rank[PIECE_SMALL];
    size_t m = n;
    for (size_t i = 0; i < n; i++) tok[i] = b->byte_token[p[i]];
    for (size_t i = 0; i + 1 < n; i++) rank[i] = pair_rank(b, tok[i], tok[i + 1]);
    rank[n - 1] = NO_RANK;
    for (;;) {
        uint32_t best = NO_RANK;
        size_t bi = 0;
        for (size_t i = 0; i + 1 < m; i++)
            if (rank[i] < best) {
                best = rank[i];
                bi = i;
            }
        if (best == NO_RANK) break;
        tok[bi] = best;
        memmove(tok + bi + 1, tok + bi + 2, (m - bi - 2) * sizeof *tok);
        memmove(rank + bi + 1, rank + bi + 2, (m - bi - 2) * sizeof *rank);
        m--;
        rank[bi] = bi + 1 < m ? pair_rank(b, tok[bi], tok[bi + 1]) : NO_RANK;
        if (bi > 0) rank[bi - 1] = pair_rank(b, tok[bi - 1], tok[bi]);
    }
    for (size_t i = 0; i < m; i++) out[i] = (uint16_t)tok[i];
    return m;
}

static void heap_push(uint64_t *h, size_t *n, uint64_t v) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (h[parent] <= v) break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = v;
}

static uint64_t heap_pop(uint64_t *h, size_t *n) {
    uint64_t top = h[0], v = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && h[c + 1] < h[c]) c++;
        if (v <= h[c]) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = v;
    return top;
}

// BPE of a long piece in O(n log n): the parts are a linked list over byte positions, and a
// min-heap holds (rank << 32 | position) of every pair when it forms; an entry whose pair has
// since changed is skipped when popped (its position's current pair no longer has that rank).
// Popping in (rank, position) order merges what tiktoken's loop merges, in the same order.
static size_t merge_long(bpe_worker *w, const unsigned char *p, size_t n, uint16_t *out) {
    const gpt2_bpe *b = w->b;
    if (n > w->cap) {
        sm_free(w->tok);
        sm_free(w->heap);
        w->cap = n;
        w->tok = sm_malloc(3 * n * sizeof(uint32_t));
        w->nxt = w->tok + n;
        w->prv = w->nxt + n;
        w->heap = sm_malloc(3 * n * sizeof(uint64_t));
    }
    uint32_t *tok = w->tok, *nxt = w->nxt, *prv = w->prv;
    uint64_t *heap = w->heap;
    size_t hn = 0;
    const uint32_t END = (uint32_t)n, DEAD = UINT32_MAX;
    for (size_t i = 0; i < n; i++) {
        tok[i] = b->byte_token[p[i]];
        nxt[i] = (uint32_t)i + 1;
        prv[i] = i ? (uint32_t)i - 1 : END;
    }
    for (size_t i = 0; i + 1 < n; i++) {
        uint32_t r = pair_rank(b, tok[i], tok[i + 1]);
        if (r != NO_RANK) heap_push(heap, &hn, (uint64_t)r << 32 | i);
    }
    while (hn) {
        uint64_t e = heap_pop(heap, &hn);
        uint32_t r = (uint32_t)(e >> 32), i = (uint32_t)e;
        if (tok[i] == DEAD) continue;
        uint32_t j = nxt[i];
        if (j == END || pair_rank(b, tok[i], tok[j]) != r) continue;   // stale
        tok[i] = r;
        tok[j] = DEAD;
        uint32_t k = nxt[j];
        nxt[i] = k;
        if (k != END) {
            prv[k] = i;
            uint32_t rk = pair_rank(b, tok[i], tok[k]);
            if (rk != NO_RANK) heap_push(heap, &hn, (uint64_t)rk << 32 | i);
        }
        if (prv[i] != END) {
            uint32_t h = prv[i], rh = pair_rank(b, tok[h], tok[i]);
            if (rh != NO_RANK) heap_push(heap, &hn, (uint64_t)rh << 32 | h);
        }
    }
    size_t m = 0;
    for (uint32_t i = 0; i != END; i = nxt[i]) out[m++] = (uint16_t)tok[i];
    return m;
}

// One piece p[0, n) -> tokens in out (at most n). tiktoken: a piece that is a token is that token.
static size_t encode_piece(bpe_worker *w, const unsigned char *p, size_t n, uint16_t *out) {
    const gpt2_bpe *b = w->b;
    if (n == 1) {
        out[0] = b->byte_token[p[0]];
        return 1;
    }
    uint64_t h = hash_bytes(p, n);
    int id = vocab_find(b, p, n, h);
    if (id >= 0) {
        out[0] = (uint16_t)id;
        return 1;
    }
    cache_entry *ce = NULL;
    if (n <= CACHE_KEY_BYTES) {
        ce = &w->cache[(h >> 40) & (CACHE_ENTRIES - 1)];
        if (ce->n_bytes == n && memcmp(ce->bytes, p, n) == 0) {
            memcpy(out, ce->toks, ce->n_toks * sizeof *out);
            return ce->n_toks;
        }
    }
    size_t m = n <= PIECE_SMALL ? merge_small(b, p, n, out) : merge_long(w, p, n, out);
    if (ce && m <= CACHE_TOKS) {
        ce->n_bytes = (uint8_t)n;
        ce->n_toks = (uint8_t)m;
        memcpy(ce->bytes, p, n);
        memcpy(ce->toks, out, m * sizeof *out);
    }
    return m;
}

long bpe_encode_range(bpe_worker *w, const unsigned char *doc, const unsigned char *view, size_t n, size_t from,
                       size_t to, uint16_t *out, char *err, size_t errlen) {
    const gpt2_bpe *b = w->b;
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(w->md);
    size_t pos = from, k = 0;
    while (pos < to) {
        int rc = b->jit ? pcre2_jit_match(b->re, view, n, pos, 0, w->md, w->mctx)
                        : pcre2_match(b->re, view, n, pos, PCRE2_NO_UTF_CHECK, w->md, w->mctx);
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            snprintf(err, errlen, "gpt2 pre-tokenisation failed at byte %zu: PCRE2 says %s", pos, (const char *)msg);
            return -1;
        }
        size_t s = ov[0], e = ov[1];
        SM_CHECK(s == pos && e > pos && e <= to, "GPT-2 piece [%zu, %zu) does not start at %zu or crosses the chunk end %zu",
                 s, e, pos, to);
        k += encode_piece(w, doc + s, e - s, out + k);
        pos = e;
    }
    return (long)k;
}

static inline int ascii_ws(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

size_t bpe_safe_cut(const unsigned char *text, size_t target, size_t end) {
    // No GPT-2 piece holds a non-space character followed by a space: spaces sit only at a piece's
    // start (" word") or in all-whitespace pieces. So such a pair is a boundary in every run.
    for (size_t p = target > 0 ? target : 1; p < end; p++)
        if (ascii_ws(text[p]) && text[p - 1] < 0x80 && !ascii_ws(text[p - 1])) return p;
    return end;
}
