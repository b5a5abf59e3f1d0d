// data.h — text -> tokens -> llm.c-format shards -> (B, T+1) windows.
// Shard: 256 int32 header (magic 20240520, version 1, n_tokens, vocab_size [smallmind
// writes it; llm.c leaves 0]), then n_tokens uint16 tokens.
// Windows: window w covers tokens [w*T, w*T + T] (T+1 tokens); n_windows =
// (n_tokens - 1) / T (a last partial window is dropped). Training visits windows in a
// seeded random order, a fresh permutation per epoch; window g of the global stream is
// perm_{g / n_windows}[g % n_windows]. The cursor is one global window index.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "common.h"

#define SHARD_MAGIC 20240520
#define SHARD_VERSION 1
#define SHARD_HEADER_INTS 256

typedef struct {
    char path[1024];
    size_t n_tokens;
    int vocab_size;   // from header int 3; 0 when the writer did not record it
    uint16_t *tokens; // n_tokens, owned (read once at open)
} shard;

// Reads and validates a shard: magic, version, size matches n_tokens, every token
// < vocab_limit (vocab_limit 0: use the header's vocab_size, if any).
// Returns 0, or -1 with a one-line reason (naming the file) in err.
int shard_open(shard *s, const char *path, int vocab_limit, char *err, size_t errlen);
void shard_close(shard *s);

// Writes tokens (n) as a shard atomically (PATH.tmp, fsync, rename). 0 or -1 + err.
int shard_write(const char *path, const uint16_t *tokens, size_t n, int vocab_size, char *err, size_t errlen);

// ---- tokenizers ------------------------------------------------------------------------
typedef enum { TOKENIZER_BYTE = 0, TOKENIZER_GPT2 = 1 } tokenizer_kind;
// "byte" / "gpt2" -> kind; -1 if unknown
int tokenizer_parse(const char *name);
const char *tokenizer_name(tokenizer_kind k);
int tokenizer_vocab_size(tokenizer_kind k);   // 256 for byte
// Byte tokenizer: token i is byte i.
size_t byte_encode(uint16_t *out, const unsigned char *text, size_t n);
// Writes the bytes of token `tok` to out (up to cap); returns the count.
size_t byte_decode(char *out, size_t cap, int tok);

// `smallmind prepare`: tokenizes input, writes PREFIX_train.bin and PREFIX_val.bin (the
// last val_fraction of the tokens). Returns 0, or -1 + err.
int prepare_shards(const char *input, const char *prefix, tokenizer_kind tk, double val_fraction, char *err,
                   size_t errlen);

// ---- loader ------------------------------------------------------------------------------
typedef struct {
    const shard *src;
    int T;
    size_t n_windows;
    int shuffle;        // 1: seeded permutation per epoch (training); 0: in order (eval)
    uint64_t seed;
    uint64_t epoch;     // epoch whose permutation is in perm (UINT64_MAX: none yet)
    uint32_t *perm;     // n_windows, allocated once at init
} loader;

// 0, or -1 + err when the shard holds no full window of T+1 tokens.
int loader_init(loader *l, const shard *src, int T, int shuffle, uint64_t seed, char *err, size_t errlen);
void loader_free(loader *l);
// Fills inputs and targets (count, T) with windows cursor .. cursor+count-1 of the global
// stream (targets are inputs shifted by one). No allocation.
void loader_fill(loader *l, uint64_t cursor, int count, int *inputs, int *targets);
// The index of the window at global stream position g (exposed for tests)
size_t loader_window_at(loader *l, uint64_t g);

// ---- whole-shard checks, run once at start ---------------------------------------------------
// The largest token id in the shard (one vectorised pass), and where it first occurs: a training
// run checks every token of both shards against its vocabulary before step 1.
uint16_t shard_max_token(const shard *s, size_t *first_at);
// A 64-bit hash of every token (XXH3, ~10+ GB/s): ranks compare it at start, so ranks given
// different data stop before training.
uint64_t shard_hash(const shard *s);
