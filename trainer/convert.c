// convert.c — `smallmind convert`: llm.c's GPT-2 checkpoints (.bin; version 3 fp32, version 5 bf16)
// to smallmind's HDF5 checkpoints and back (llm.c fp32), through the weights object (gpt2_weights).
//
// llm.c's file (train_gpt2.py's write_model, train_gpt2.c's gpt2_build_from_checkpoint): 256 int32,
// little-endian: [0] magic 20240326, [1] version (3: every tensor fp32; 5: every tensor bf16, the
// LayerNorms too), [2] maxT, [3] V, [4] L, [5] NH, [6] C, [7] Vp (the padded vocabulary), the rest
// 0; then the 16 parameter tensors back to back, in exactly smallmind's order and shapes (wte
// [Vp,C], wpe [maxT,C], ln1w [L,C], ... lnfb [C]; DESIGN.md's Model section), and nothing after.
//
// The padded vocabulary: llm.c's export pads V to a multiple of 128 (50257 -> 50304) and stores Vp
// in the header; smallmind pads to a multiple of 64. Rows V..Vp-1 of wte are padding, never in a
// logit that counts. Reading, the file's rows up to min(Vp_file, Vp_ours) are kept as they are,
// rows beyond Vp_ours must be zero (they are dropped; a non-zero one is refused), and rows the file
// lacks are zero. Writing, wte gets llm.c's Vp (V rounded up to 128), the extra rows zero. So an
// llm.c file with llm.c's own padding converts to HDF5 and back bit for bit (for GPT-2's V = 50257
// both paddings are 50304 anyway).
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoints.h"
#include "comm.h"
#include "common.h"
#include "data.h"
#include "trainer.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "convert.c reads and writes llm.c's little-endian files with plain loads and stores"
#endif

#define LLMC_MAGIC 20240326
#define LLMC_VERSION_FP32 3
#define LLMC_VERSION_BF16 5
#define LLMC_HEADER_INTS 256
#define LLMC_VOCAB_MULTIPLE 128     // train_gpt2.py's pad_vocab
#define CONVERT_CHUNK_BYTES (4u << 20)

typedef enum { FMT_LLMC = 1, FMT_HDF5 } ckpt_format;

typedef struct {
    const char *from, *to;
    const char *tokenizer;   // what an llm.c file's token ids mean (its header has no such field)
} convert_opts;

#define C_OPT(name, field, arg, help) {name, CLI_STR, offsetof(convert_opts, field), 0, 0, arg, help, NULL, 0, 0}
static const cli_opt CONVERT_OPTIONS[] = {
    C_OPT("from", from, "FILE", "the input: an llm.c checkpoint (.bin, fp32 or bf16) or an HDF5 checkpoint (or a "
          "run directory: the checkpoint its `latest` names), told apart by their first bytes (required)"),
    C_OPT("to", to, "FILE", "the output: FILE.h5 (an HDF5 checkpoint) or FILE.bin (llm.c fp32), by its extension; "
          "written beside it and renamed into place: never half-written (required)"),
    C_OPT("tokenizer", tokenizer, "NAME", "an llm.c input's tokenizer, byte or gpt2 (default gpt2: llm.c's models "
          "are GPT-2's)"),
};
#define N_CONVERT_OPTIONS ((int)(sizeof CONVERT_OPTIONS / sizeof CONVERT_OPTIONS[0]))

static const char CONVERT_HEAD[] =
    "usage: smallmind convert --from FILE --to FILE [--tokenizer byte|gpt2]\n"
    "  llm.c GPT-2 checkpoints (.bin, magic 20240326; version 3 fp32, version 5 bf16) to smallmind's\n"
    "  HDF5 checkpoints (step 0, zero AdamW moments; start a run from one with train --init-from) and\n"
    "  HDF5 checkpoints back to llm.c's fp32 .bin. One process (not under mpirun).\n";

// ---------------------------------------------------------------------------------------------
// Small I/O helpers: every call checked, one line and exit on failure.

// Reads n bytes at file offset `at` (for the message): 0, or the exit status with a reason in why.
static int read_all(int fd, void *buf, size_t n, const char *path, uint64_t at, char *why, size_t cap) {
    char *p = buf;
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            snprintf(why, cap, "cannot read the llm.c checkpoint at byte %llu: %s (%s)", (unsigned long long)at,
                     strerror(errno), path);
            return SM_EXIT_RUNTIME;
        }
        if (r == 0) {   // the size was checked: the file shrank while we read it
            snprintf(why, cap, "llm.c checkpoint truncated at byte %llu while reading (%s)", (unsigned long long)at, path);
            return SM_EXIT_USAGE;
        }
        p += r;
        n -= (size_t)r;
        at += (uint64_t)r;
    }
    return 0;
}

// 0, or -1 with errno set
static int write_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

// fsync of the directory holding path (a rename is durable only then); best effort where a
// filesystem cannot sync directories
static void sync_parent(const char *path) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    int fd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    if (fsync(fd) != 0 && errno != EINVAL) sm_warn("cannot fsync the directory of %s: %s", path, strerror(errno));
    close(fd);
}

// The input's format by its first bytes: HDF5's 8-byte signature or llm.c's magic (a directory is
// a run directory: HDF5).
static ckpt_format sniff(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) sm_fatal(SM_EXIT_USAGE, "cannot open the input: %s (%s)", strerror(errno), path);
    if (S_ISDIR(st.st_mode)) return FMT_HDF5;
    if (!S_ISREG(st.st_mode)) sm_fatal(SM_EXIT_USAGE, "the input is not a regular file (%s)", path);
    unsigned char head[8] = {0};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) sm_fatal(SM_EXIT_USAGE, "cannot open the input: %s (%s)", strerror(errno), path);
    ssize_t n = read(fd, head, sizeof head);
    close(fd);
    static const unsigned char HDF5_SIG[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    if (n == 8 && memcmp(head, HDF5_SIG, 8) == 0) return FMT_HDF5;
    int32_t magic = 0;
    if (n >= 4) memcpy(&magic, head, 4);
    if (n >= 4 && magic == LLMC_MAGIC) return FMT_LLMC;
    if (n >= 4 && magic == SHARD_MAGIC)
        sm_fatal(SM_EXIT_USAGE, "the input is an llm.c token shard (magic %d), not a model checkpoint (%s)", SHARD_MAGIC,
                 path);
    sm_fatal(SM_EXIT_USAGE, "the input is neither an llm.c checkpoint (magic %d) nor an HDF5 checkpoint: %s (%s)",
             LLMC_MAGIC, n < 4 ? "it holds fewer than 4 bytes" : "its first bytes are neither", path);
}

// The output's format by its extension.
static ckpt_format output_format(const char *path) {
    size_t n = strlen(path);
    if (n > 3 && !strcmp(path + n - 3, ".h5")) return FMT_HDF5;
    if (n > 4 && !strcmp(path + n - 4, ".bin")) return FMT_LLMC;
    sm_fatal(SM_EXIT_USAGE, "--to must end in .h5 (an HDF5 checkpoint) or .bin (llm.c fp32) (%s)", path);
}

static int round_up(int n, int multiple) { return (int)(((int64_t)n + multiple - 1) / multiple * multiple); }

// ---------------------------------------------------------------------------------------------
// llm.c -> weights

// Reads an llm.c checkpoint into w (built here from its header). Checks: magic, version 3 or 5,
// a config smallmind can hold (gpt2_config_validate's limits), Vp >= V, V not below the
// tokenizer's own vocabulary, the file's size equal to the header's tensors exactly, every value
// finite, wte's rows beyond smallmind's Vp zero. Errors: one line, exit 2 (exit 1 for I/O errors).
static void llmc_read(const char *path, tokenizer_kind tk, gpt2_weights *w, int *version_out, int *vp_out) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) sm_fatal(SM_EXIT_USAGE, "cannot open the llm.c checkpoint: %s (%s)", strerror(errno), path);
    struct stat st;
    if (fstat(fd, &st) != 0) sm_fatal(SM_EXIT_RUNTIME, "cannot stat the llm.c checkpoint: %s (%s)", strerror(errno), path);
    const uint64_t file_bytes = (uint64_t)st.st_size, header_bytes = LLMC_HEADER_INTS * sizeof(int32_t);
    if (file_bytes < header_bytes)
        sm_fatal(SM_EXIT_USAGE, "llm.c checkpoint truncated: %llu bytes, shorter than its %llu-byte header (%s)",
                 (unsigned long long)file_bytes, (unsigned long long)header_bytes, path);
    int32_t h[LLMC_HEADER_INTS];
    char why[1024];
    int status = read_all(fd, h, sizeof h, path, 0, why, sizeof why);
    if (status) sm_fatal(status, "%s", why);
    if (h[0] != LLMC_MAGIC)
        sm_fatal(SM_EXIT_USAGE, "not an llm.c checkpoint: magic %d, expected %d (%s)", h[0], LLMC_MAGIC, path);
    const int version = h[1];
    if (version != LLMC_VERSION_FP32 && version != LLMC_VERSION_BF16)
        sm_fatal(SM_EXIT_USAGE, "llm.c checkpoint version %d is not one smallmind reads: 3 (fp32) or 5 (bf16) (%s)",
                 version, path);
    const char *names[6] = {"maxT", "V", "L", "NH", "C", "Vp"};
    for (int i = 0; i < 6; i++)
        if (h[2 + i] <= 0)
            sm_fatal(SM_EXIT_USAGE, "llm.c header int %d (%s) is %d, not a positive size (%s)", 2 + i, names[i],
                     h[2 + i], path);
    sm_model_config cfg = {.max_seq_len = h[2], .vocab_size = h[3], .n_layer = h[4], .n_head = h[5], .n_embd = h[6]};
    const int vp_file = h[7];
    char err[1024];
    if (gpt2_config_validate(&cfg, err, sizeof err) != 0)
        sm_fatal(SM_EXIT_USAGE, "the llm.c header's model is not one smallmind can hold: %s (%s)", err, path);
    if (vp_file < cfg.vocab_size)
        sm_fatal(SM_EXIT_USAGE, "llm.c header: padded vocabulary Vp=%d is smaller than V=%d (%s)", vp_file,
                 cfg.vocab_size, path);
    if (cfg.vocab_size < tokenizer_vocab_size(tk))
        sm_fatal(SM_EXIT_USAGE, "the llm.c model's vocabulary (V=%d) is smaller than the %s tokenizer's (%d): give its "
                 "tokenizer with --tokenizer (%s)", cfg.vocab_size, tokenizer_name(tk), tokenizer_vocab_size(tk), path);
    snprintf(cfg.tokenizer, sizeof cfg.tokenizer, "%s", tokenizer_name(tk));

    // the tensors the header describes: ours, with wte's Vp_file rows
    sm_table tab;
    gpt2_param_table(&tab, &cfg);
    const size_t elem = version == LLMC_VERSION_FP32 ? 4 : 2, C = (size_t)cfg.n_embd;
    uint64_t n_file = 0;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) n_file += i == P_WTE ? (uint64_t)vp_file * C : tab.t[i].n_elems;
    const uint64_t want = header_bytes + n_file * elem;
    if (file_bytes < want)
        sm_fatal(SM_EXIT_USAGE, "llm.c checkpoint truncated: %llu bytes, its header's model (L=%d NH=%d C=%d maxT=%d "
                 "V=%d Vp=%d, %s) needs %llu (%s)", (unsigned long long)file_bytes, cfg.n_layer, cfg.n_head, cfg.n_embd,
                 cfg.max_seq_len, cfg.vocab_size, vp_file, elem == 4 ? "fp32" : "bf16", (unsigned long long)want, path);
    if (file_bytes > want)
        sm_fatal(SM_EXIT_USAGE, "llm.c checkpoint size disagrees with its header: %llu bytes, the header's model (L=%d "
                 "NH=%d C=%d maxT=%d V=%d Vp=%d, %s) is %llu (%llu bytes too many) (%s)", (unsigned long long)file_bytes,
                 cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.max_seq_len, cfg.vocab_size, vp_file,
                 elem == 4 ? "fp32" : "bf16", (unsigned long long)want, (unsigned long long)(file_bytes - want), path);

    gpt2_weights_build(w, &cfg);   // zeroed: wte rows the file lacks stay 0
    const size_t chunk_elems = CONVERT_CHUNK_BYTES / elem;
    unsigned char *buf = sm_malloc(CONVERT_CHUNK_BYTES);
    uint64_t at = header_bytes;
    for (int i = 0; i < NUM_PARAM_TENSORS && !status; i++) {
        sm_tensor *t = &w->params.t[i];
        // elements of this tensor in the file; the first n_keep go to t, the rest (wte's rows
        // beyond our Vp) must be 0
        const uint64_t n = i == P_WTE ? (uint64_t)vp_file * C : t->n_elems;
        const uint64_t n_keep = n < t->n_elems ? n : t->n_elems;
        for (uint64_t e0 = 0; e0 < n && !status; e0 += chunk_elems) {
            const size_t m = (size_t)(n - e0 < chunk_elems ? n - e0 : chunk_elems);
            if ((status = read_all(fd, buf, m * elem, path, at, why, sizeof why)) != 0) break;
            for (size_t k = 0; k < m && !status; k++) {
                float x;
                if (elem == 4) {
                    memcpy(&x, buf + 4 * k, 4);
                } else {   // bf16 is the top half of an fp32: the cast is exact (PyTorch's too)
                    uint16_t b;
                    memcpy(&b, buf + 2 * k, 2);
                    uint32_t bits = (uint32_t)b << 16;
                    memcpy(&x, &bits, 4);
                }
                const uint64_t e = e0 + k;
                if (!isfinite(x)) {
                    snprintf(why, sizeof why, "llm.c checkpoint holds a non-finite value (%g) in %s at element %llu "
                             "(file byte %llu) (%s)", (double)x, t->name, (unsigned long long)e,
                             (unsigned long long)(at + k * elem), path);
                    status = SM_EXIT_USAGE;
                } else if (e < n_keep) {
                    t->ptr[e] = x;
                } else if (x != 0.0f) {
                    snprintf(why, sizeof why, "llm.c wte row %llu is padding (V=%d, Vp=%d) but not zero: smallmind "
                             "pads the vocabulary to %d rows and would drop it (%s)", (unsigned long long)(e / C),
                             cfg.vocab_size, vp_file, cfg.padded_vocab_size, path);
                    status = SM_EXIT_USAGE;
                }
            }
            at += (uint64_t)m * elem;
        }
    }
    sm_free(buf);
    close(fd);
    if (status) {
        gpt2_weights_free(w);
        sm_fatal(status, "%s", why);
    }
    *version_out = version;
    *vp_out = vp_file;
}

// ---------------------------------------------------------------------------------------------
// weights -> llm.c fp32

// Writes w as an llm.c version-3 (fp32) checkpoint: PATH.tmp, fsync, rename, fsync the directory.
// wte is written with Vp = V rounded up to 128 (llm.c's export), rows past smallmind's Vp zero.
// Returns llm.c's Vp.
static int llmc_write(const char *path, const gpt2_weights *w) {
    const sm_model_config *c = &w->cfg;
    const int vp = round_up(c->vocab_size, LLMC_VOCAB_MULTIPLE) > c->padded_vocab_size
                       ? round_up(c->vocab_size, LLMC_VOCAB_MULTIPLE)
                       : c->padded_vocab_size;
    int32_t h[LLMC_HEADER_INTS] = {0};
    h[0] = LLMC_MAGIC;
    h[1] = LLMC_VERSION_FP32;
    h[2] = c->max_seq_len;
    h[3] = c->vocab_size;
    h[4] = c->n_layer;
    h[5] = c->n_head;
    h[6] = c->n_embd;
    h[7] = vp;
    char tmp[4200];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp) sm_fatal(SM_EXIT_USAGE, "--to path too long (%s)", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) sm_fatal(SM_EXIT_USAGE, "cannot create the output: %s (%s)", strerror(errno), tmp);
    const char *op = "write";
    if (write_all(fd, h, sizeof h) != 0) goto error;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        const sm_tensor *t = &w->params.t[i];
        if (write_all(fd, t->ptr, t->n_elems * sizeof(float)) != 0) goto error;
        if (i != P_WTE) continue;
        // wte's rows from our Vp to llm.c's: zero
        static const float zeros[1024];
        for (size_t left = (size_t)(vp - c->padded_vocab_size) * (size_t)c->n_embd; left > 0;) {
            size_t k = left < 1024 ? left : 1024;
            if (write_all(fd, zeros, k * sizeof(float)) != 0) goto error;
            left -= k;
        }
    }
    op = "fsync";
    if (fsync(fd) != 0) goto error;
    op = "close";
    int rc = close(fd);
    fd = -1;
    if (rc != 0) goto error;
    op = "rename";
    if (rename(tmp, path) != 0) goto error;
    sync_parent(path);
    return vp;
error:;
    int e = errno;
    if (fd >= 0) close(fd);
    unlink(tmp);
    sm_fatal(SM_EXIT_RUNTIME, "cannot %s the output: %s (%s)", op, strerror(e), op[0] == 'r' ? path : tmp);
}

// ---------------------------------------------------------------------------------------------
// weights -> HDF5

// Writes w as a checkpoint at step 0 to path. ckpt_save writes RUN_DIR/ckpt_00000000.h5 (atomically:
// its own .tmp, fsync, rename) and RUN_DIR/latest, so it saves into a private directory next to
// path, whose file is then renamed onto path (same filesystem: atomic) and the directory removed.
// The AdamW moments a save needs are zero (one zeroed table serves as both): a run starts from
// such a checkpoint with `train --init-from`, which reads the weights only.
static void h5_write(const char *path, const gpt2_weights *w) {
    char dir[4096], base[4096], tmpdir[4200], saved[4300], latest[4300], err[CKPT_ERR_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    snprintf(base, sizeof base, "%s", path);
    if ((size_t)snprintf(tmpdir, sizeof tmpdir, "%s/.%s.convert-%ld", dirname(dir), basename(base), (long)getpid()) >=
        sizeof tmpdir)
        sm_fatal(SM_EXIT_USAGE, "--to path too long (%s)", path);
    if (mkdir(tmpdir, 0700) != 0)
        sm_fatal(SM_EXIT_USAGE, "cannot create a temporary directory next to the output: %s (%s)", strerror(errno),
                 tmpdir);
    ckpt_path(saved, sizeof saved, tmpdir, 0);
    snprintf(latest, sizeof latest, "%s/latest", tmpdir);

    ckpt_meta meta;
    memset(&meta, 0, sizeof meta);   // step 0, no tokens seen, data cursor 0, no optimizer settings
    meta.cfg = w->cfg;
    meta.world_size = 1;
    sm_rng_seed(&meta.rng, 0, 0);    // a valid generator state; --init-from does not read it
    sm_table zero;
    gpt2_param_table(&zero, &w->cfg);
    sm_table_alloc(&zero);
    int rc = ckpt_save(tmpdir, &meta, &w->params, &zero, &zero, 0, sm_table_n_f32(&zero), 0, NULL, err, sizeof err);
    sm_free(zero.base);
    int e = 0;
    const char *op = NULL;
    if (rc == 0 && rename(saved, path) != 0) {
        e = errno;
        op = "rename the checkpoint into place";
    }
    unlink(saved);   // gone after the rename; left by a failed one
    unlink(latest);
    if (rmdir(tmpdir) != 0 && rc == 0 && !op) sm_warn("cannot remove %s: %s", tmpdir, strerror(errno));
    if (rc != 0) sm_fatal(SM_EXIT_RUNTIME, "%s", err);
    if (op) sm_fatal(SM_EXIT_RUNTIME, "cannot %s: %s (%s)", op, strerror(e), path);
    sync_parent(path);
}

// ---------------------------------------------------------------------------------------------

int cmd_convert(int argc, char **argv) {
    convert_opts o = {0};
    cli_parse("convert", CONVERT_HEAD, CONVERT_OPTIONS, N_CONVERT_OPTIONS, &o, sizeof o, argc, argv, NULL, 0);
    if (!o.from || !o.from[0]) sm_fatal(SM_EXIT_USAGE, "convert: --from FILE is required (command line)");
    if (!o.to || !o.to[0]) sm_fatal(SM_EXIT_USAGE, "convert: --to FILE is required (command line)");
    int tk = TOKENIZER_GPT2;
    if (o.tokenizer && (tk = tokenizer_parse(o.tokenizer)) <= 0)
        sm_fatal(SM_EXIT_USAGE, "--tokenizer must be byte or gpt2, got '%s' (command line)", o.tokenizer);
    const ckpt_format out = output_format(o.to), in = sniff(o.from);
    struct stat st;
    if (stat(o.to, &st) == 0 && S_ISDIR(st.st_mode)) sm_fatal(SM_EXIT_USAGE, "--to is a directory (%s)", o.to);
    struct stat st_from;
    if (stat(o.to, &st) == 0 && stat(o.from, &st_from) == 0 && st.st_dev == st_from.st_dev && st.st_ino == st_from.st_ino)
        sm_fatal(SM_EXIT_USAGE, "--to is the --from file itself: write the conversion to another file (%s)", o.to);
    if (in == FMT_HDF5 && out == FMT_HDF5)
        sm_fatal(SM_EXIT_USAGE, "the input is already an HDF5 checkpoint: convert to .bin, or start a run from it with "
                 "train --init-from (%s)", o.from);
    if (in == FMT_HDF5 && o.tokenizer)
        sm_fatal(SM_EXIT_USAGE, "--tokenizer is for llm.c inputs; an HDF5 checkpoint names its own (%s)", o.from);

    // an output outgrowing `ulimit -f` must fail its write (reported, the temporary removed), not kill us
    signal(SIGXFSZ, SIG_IGN);
    gpt2_weights w;
    char from_desc[64], to_desc[64], in_path[4096];
    if (in == FMT_LLMC) {   // before MPI: llm.c files are read with plain I/O
        int version, vp;
        llmc_read(o.from, (tokenizer_kind)tk, &w, &version, &vp);
        snprintf(from_desc, sizeof from_desc, "llm.c %s, Vp=%d", version == LLMC_VERSION_FP32 ? "fp32" : "bf16", vp);
        snprintf(in_path, sizeof in_path, "%s", o.from);
    }
    // the checkpoint code is collective over MPI; convert is one process (under mpirun, refused)
    comm_topology topo;
    comm_init(&argc, &argv, &topo);
    if (topo.world_size > 1)
        comm_fatal_agreed(SM_EXIT_USAGE, "convert runs as one process, not %d ranks: run it without mpirun (command line)",
                          topo.world_size);
    if (in == FMT_HDF5) {
        ckpt_meta meta;
        infer_load_weights(o.from, &w, &meta, in_path, sizeof in_path);
        snprintf(from_desc, sizeof from_desc, "HDF5, step %d", meta.step);
        if (strcmp(w.cfg.tokenizer, "gpt2") != 0)
            sm_warn("the checkpoint's tokenizer is %s; an llm.c file records none (llm.c assumes GPT-2's)", w.cfg.tokenizer);
    }
    if (out == FMT_LLMC) {
        int vp = llmc_write(o.to, &w);
        snprintf(to_desc, sizeof to_desc, "llm.c fp32, Vp=%d", vp);
    } else {
        h5_write(o.to, &w);
        snprintf(to_desc, sizeof to_desc, "HDF5, step 0, Vp=%d", w.cfg.padded_vocab_size);
    }
    const sm_model_config *c = &w.cfg;
    printf("converted %s (%s) -> %s (%s): L=%d H=%d C=%d maxT=%d V=%d, tokenizer %s, %zu parameters\n", in_path,
           from_desc, o.to, to_desc, c->n_layer, c->n_head, c->n_embd, c->max_seq_len, c->vocab_size, c->tokenizer,
           w.n_params);
    fflush(stdout);
    gpt2_weights_free(&w);
    comm_finalize();
    return SM_EXIT_OK;
}
