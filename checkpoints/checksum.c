// checksum.c — defines Fletcher32 exactly as HDF5's filter computes it, streamed over the pieces of a
// chunk, with the checkpoint's value check (every float finite; second moments >= 0) fused into the same
// pass over the data; a scalar path (the definition) and an AVX2 path, equal bit for bit.
//
// HDF5 (H5_checksum_fletcher32, H5checksum.c) reads the data as big-endian 16-bit words w and keeps
// uint32 sums s1 += w, s2 += s1; after every 360 words, and after the last (partial) block, it folds
// each sum once: s = (s & 0xffff) + (s >> 16); at the end it folds both once more and returns
// s2 << 16 | s1. The folds leave values that are equal modulo 65535 but not canonical (0 and 0xffff
// both occur), so a fast version must fold at exactly the same words with exactly the same integers.
// The AVX2 path does: for a whole 360-word block starting at a fold,
//   s1 += sum_i w_i,   s2 += 360 s1 + sum_i (360 - i) w_i     (uint32, wrapping as HDF5's loop wraps)
// with the two sums as dot products (vpmaddwd) of the words' bytes against the weights (360 - i) and 1,
// then the same fold. Words before the first whole block and after the last are added one by one.
#include <immintrin.h>
#include <string.h>

#include "ckpt_internal.h"

#define BLOCK_WORDS 360   // HDF5's "largest number of sums that can be performed without numeric overflow"

static inline uint32_t fold(uint32_t s) { return (s & 0xffff) + (s >> 16); }

uint32_t ckpt_fletcher32_ref(const void *data, size_t n_bytes) {
    const uint8_t *p = data;
    size_t len = n_bytes / 2;
    uint32_t s1 = 0, s2 = 0;
    while (len) {
        size_t t = len > BLOCK_WORDS ? BLOCK_WORDS : len;
        len -= t;
        do {
            s1 += (uint32_t)((uint16_t)p[0] << 8) | p[1];
            p += 2;
            s2 += s1;
        } while (--t);
        s1 = fold(s1);
        s2 = fold(s2);
    }
    if (n_bytes % 2) {
        s1 += (uint32_t)((uint16_t)*p << 8);
        s2 += s1;
        s1 = fold(s1);
        s2 = fold(s2);
    }
    s1 = fold(s1);
    s2 = fold(s2);
    return (s2 << 16) | s1;
}

void ckpt_fletcher_init(ckpt_fletcher *f) { memset(f, 0, sizeof *f); }

uint32_t ckpt_fletcher_end(const ckpt_fletcher *f) {
    uint32_t s1 = f->s1, s2 = f->s2;
    if (f->in_block) {   // the last, partial block is folded like every other
        s1 = fold(s1);
        s2 = fold(s2);
    }
    s1 = fold(s1);
    s2 = fold(s2);
    return (s2 << 16) | s1;
}

// Words one by one, as HDF5's inner loop.
static void add_words(ckpt_fletcher *f, const uint8_t *p, size_t n_words) {
    for (size_t i = 0; i < n_words; i++) {
        f->s1 += (uint32_t)((uint16_t)p[2 * i] << 8) | p[2 * i + 1];
        f->s2 += f->s1;
        if (++f->in_block == BLOCK_WORDS) {
            f->s1 = fold(f->s1);
            f->s2 = fold(f->s2);
            f->in_block = 0;
        }
    }
}

// The value check over n floats at p (any alignment: a chunk read from a file written elsewhere may sit at
// an odd offset): the index of the first bad one, or n. common's sm_first_bad_float, word by word.
static size_t check_floats(const void *p, size_t n, int check) {
    if (check == CKPT_CHECK_NONE) return n;
    if (((uintptr_t)p & 3) == 0) return sm_first_bad_float(p, n, check == CKPT_CHECK_NONNEG);
    const uint32_t neg = check == CKPT_CHECK_NONNEG ? 0x80000000u : 0xffffffffu;   // > neg: negative, not -0
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, (const unsigned char *)p + 4 * i, 4);
        if ((u & 0x7f800000u) == 0x7f800000u || u > neg) return i;
    }
    return n;
}

// ---------------------------------------------------------------------------
// Paths. Each adds n_bytes (a multiple of 4: whole floats) at p and returns the index of the first float
// that fails the check, or n_bytes / 4.
static size_t add_c(ckpt_fletcher *f, const uint8_t *p, size_t n_bytes, int check) {
    add_words(f, p, n_bytes / 2);
    return check_floats(p, n_bytes / 4, check);
}

#if defined(__x86_64__) || defined(__i386__)
#define CKPT_HAVE_AVX2_PATH 1
// (360 - i) for the 360 words of a block, and zeros for the rest of the 23rd vector
static const int16_t BLOCK_WEIGHTS[368] = {
#define W8(k) 360 - (k), 359 - (k), 358 - (k), 357 - (k), 356 - (k), 355 - (k), 354 - (k), 353 - (k)
#define W16(k) W8(k), W8((k) + 8)
    W16(0),   W16(16),  W16(32),  W16(48),  W16(64),  W16(80),  W16(96),  W16(112), W16(128), W16(144), W16(160),
    W16(176), W16(192), W16(208), W16(224), W16(240), W16(256), W16(272), W16(288), W16(304), W16(320), W16(336),
    W8(352),  0,        0,        0,        0,        0,        0,        0,        0,
#undef W16
#undef W8
};

__attribute__((target("avx2"))) static inline uint32_t hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return (uint32_t)_mm_cvtsi128_si32(s);
}

// One whole block of 360 words (720 bytes) at p, starting at a fold; *bad gathers the value check's
// verdict of its 180 floats (any lane set: one failed). The words are byte-swapped into 16-bit lanes and
// offset by -32768 to fit vpmaddwd's signed operands: sum w = sum w' + 360 * 32768 and
// sum (360-i) w = sum (360-i) w' + 32768 * (360 * 361 / 2); every partial sum fits an int32.
__attribute__((target("avx2"))) static inline void block_avx2(ckpt_fletcher *f, const uint8_t *p, int check,
                                                               __m256i *bad) {
    const __m256i swap = _mm256_setr_epi8(1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14, 1, 0, 3, 2, 5, 4, 7,
                                          6, 9, 8, 11, 10, 13, 12, 15, 14);
    const __m256i bias = _mm256_set1_epi16((short)0x8000), ones = _mm256_set1_epi16(1);
    const __m256i exp_mask = _mm256_set1_epi32(0x7f800000);
    const __m256 zero = _mm256_setzero_ps();
    __m256i sw = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();   // sum (360-i) w', sum w'
    __m256i b = *bad;
    for (int v = 0; v < 23; v++) {
        // 16 words; the 23rd vector holds the block's last 8 (its upper half: weight 0)
        __m256i x = v < 22 ? _mm256_loadu_si256((const __m256i *)(const void *)(p + 32 * v))
                           : _mm256_zextsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)(p + 704)));
        __m256i w = _mm256_xor_si256(_mm256_shuffle_epi8(x, swap), bias);   // big-endian word - 32768
        __m256i k = _mm256_loadu_si256((const __m256i *)(const void *)(BLOCK_WEIGHTS + 16 * v));
        sw = _mm256_add_epi32(sw, _mm256_madd_epi16(w, k));
        if (v < 22) s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(w, ones));
        else s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(w, _mm256_setr_epi16(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0)));
        if (check != CKPT_CHECK_NONE) {   // the same bytes as 8 floats (the upper half of the 23rd: 0.0f)
            b = _mm256_or_si256(b, _mm256_cmpeq_epi32(_mm256_and_si256(x, exp_mask), exp_mask));
            if (check == CKPT_CHECK_NONNEG)   // negative (not -0.0; NaN is caught above)
                b = _mm256_or_si256(b, _mm256_castps_si256(_mm256_cmp_ps(_mm256_castsi256_ps(x), zero, _CMP_LT_OQ)));
        }
    }
    *bad = b;
    uint32_t sum_w = hsum_epi32(s1) + (uint32_t)BLOCK_WORDS * 32768u;
    uint32_t sum_ww = hsum_epi32(sw) + 32768u * (uint32_t)(BLOCK_WORDS * (BLOCK_WORDS + 1) / 2);
    f->s2 += BLOCK_WORDS * f->s1 + sum_ww;
    f->s1 += sum_w;
    f->s1 = fold(f->s1);
    f->s2 = fold(f->s2);
}

__attribute__((target("avx2"))) static size_t add_avx2(ckpt_fletcher *f, const uint8_t *p, size_t n_bytes, int check) {
    size_t n_words = n_bytes / 2, done = 0;
    size_t head = f->in_block ? BLOCK_WORDS - f->in_block : 0;   // up to the next fold (an even count)
    if (head > n_words) head = n_words;
    add_words(f, p, head);
    done = head;
    __m256i bad = _mm256_setzero_si256();
    for (; n_words - done >= BLOCK_WORDS; done += BLOCK_WORDS) block_avx2(f, p + 2 * done, check, &bad);
    add_words(f, p + 2 * done, n_words - done);
    size_t n = n_bytes / 4;
    if (check == CKPT_CHECK_NONE) return n;
    // the blocks' verdict, and the head and tail checked here; the exact index from the scalar check
    size_t head_f = head / 2, tail_f = (n_words - done) / 2;
    if (!_mm256_testz_si256(bad, bad) || check_floats(p, head_f, check) < head_f ||
        check_floats(p + 4 * (n - tail_f), tail_f, check) < tail_f)
        return check_floats(p, n, check);
    return n;
}

// A copy that does not read the destination into the cache first (streaming stores: a snapshot or a
// loaded tensor is written once here and read later, by the disk or by the next step, not now).
__attribute__((target("avx2"))) static void copy_stream_avx2(uint8_t *dst, const uint8_t *src, size_t n) {
    size_t i = (32 - ((uintptr_t)dst & 31)) & 31;   // up to the first 32-byte boundary of dst: plain stores
    if (i > n) i = n;
    memcpy(dst, src, i);
    for (; i + 64 <= n; i += 64) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(const void *)(src + i));
        __m256i b = _mm256_loadu_si256((const __m256i *)(const void *)(src + i + 32));
        _mm256_stream_si256((__m256i *)(void *)(dst + i), a);
        _mm256_stream_si256((__m256i *)(void *)(dst + i + 32), b);
    }
    memcpy(dst + i, src + i, n - i);
}
#endif

static int use_avx2(void) {
#ifdef CKPT_HAVE_AVX2_PATH
    return __builtin_cpu_supports("avx2");
#else
    return 0;
#endif
}

const char *ckpt_fletcher_path(int path) {
    if (path == CKPT_PATH_AUTO) path = use_avx2() ? CKPT_PATH_AVX2 : CKPT_PATH_C;
    return path == CKPT_PATH_AVX2 ? "avx2" : "c";
}

static size_t add_path(ckpt_fletcher *f, const void *data, size_t n_bytes, int check, int path) {
#ifdef CKPT_HAVE_AVX2_PATH
    if (path == CKPT_PATH_AVX2) return add_avx2(f, data, n_bytes, check);
#endif
    (void)path;
    return add_c(f, data, n_bytes, check);
}

size_t ckpt_fletcher_copy_path(ckpt_fletcher *f, void *dst, const void *data, size_t n_bytes, int check, int path) {
    SM_CHECK(n_bytes % 4 == 0 && f->in_block % 2 == 0, "ckpt_fletcher_add: %zu bytes: pieces are whole floats",
             n_bytes);
    if (path == CKPT_PATH_AUTO || (path == CKPT_PATH_AVX2 && !use_avx2())) path = use_avx2() ? CKPT_PATH_AVX2 : CKPT_PATH_C;
    if (!dst) return add_path(f, data, n_bytes, check, path);
    // copy a piece, then sum it from the cache: the source is read from memory once
    enum { PIECE = 32 << 10 };
    const uint8_t *src = data;
    uint8_t *out = dst;
    size_t bad = n_bytes / 4;
    for (size_t at = 0; at < n_bytes; at += PIECE) {
        size_t k = n_bytes - at < PIECE ? n_bytes - at : PIECE;
#ifdef CKPT_HAVE_AVX2_PATH
        if (path == CKPT_PATH_AVX2) copy_stream_avx2(out + at, src + at, k);
        else memcpy(out + at, src + at, k);
#else
        memcpy(out + at, src + at, k);
#endif
        size_t b = add_path(f, src + at, k, check, path);
        if (b < k / 4 && bad == n_bytes / 4) bad = at / 4 + b;
    }
#ifdef CKPT_HAVE_AVX2_PATH
    if (path == CKPT_PATH_AVX2) _mm_sfence();   // the streaming stores visible before the writer reads them
#endif
    return bad;
}

size_t ckpt_fletcher_add(ckpt_fletcher *f, const void *data, size_t n_bytes, int check) {
    return ckpt_fletcher_copy_path(f, NULL, data, n_bytes, check, CKPT_PATH_AUTO);
}

size_t ckpt_fletcher_copy(ckpt_fletcher *f, void *dst, const void *data, size_t n_bytes, int check) {
    return ckpt_fletcher_copy_path(f, dst, data, n_bytes, check, CKPT_PATH_AUTO);
}

// n_bytes zero bytes (an edge chunk's padding), from a static page of zeros.
void ckpt_fletcher_add_zeros(ckpt_fletcher *f, size_t n_bytes) {
    static const float zeros[1024];
    while (n_bytes) {
        size_t k = n_bytes < sizeof zeros ? n_bytes : sizeof zeros;
        ckpt_fletcher_add(f, zeros, k, CKPT_CHECK_NONE);
        n_bytes -= k;
    }
}
