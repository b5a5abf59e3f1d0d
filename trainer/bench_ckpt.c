// bench_ckpt.c — `smallmind bench checkpoint`: save and load of a GPT-2 124M-shaped state
// (parameters and both AdamW moments) against a plain sequential write and read of the same
// bytes in the same directory, in the same run: the synchronous save with its parts, the asynchronous
// save's stall in the step against the synchronous save and against a plain memcpy of the same bytes
// (what a copy in the step must at least take), and with the copy made by the step's AdamW pass (the
// pass with the copy and the save's call, less the pass alone, run just before), loads cold (both files dropped from the page
// cache first) and warm. Each ratio is taken within a repeat (baseline and checkpoint back to back) and
// the median of the repeats' ratios is printed, so that a disk shared with others drifting between
// repeats moves both sides.
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoints.h"
#include "comm.h"
#include "common.h"
#include "bench_util.h"
#include "trainer.h"

static const char BENCH_CKPT_USAGE[] =
    "usage: smallmind bench checkpoint [--dir DIR] [--repeats N] [--threads N] [--layers L --heads H --embd C --vocab V --context T] [--json]\n"
    "  --dir DIR      where to write (an existing directory; default .); the files are removed afterwards\n"
    "  --repeats N    medians of N saves and loads (default 3)\n"
    "  --threads N    OpenMP threads per rank (default: train's rule: $OMP_NUM_THREADS, else\n"
    "                 $SLURM_CPUS_PER_TASK, else the CPUs the rank may use, shared with the node's ranks)\n"
    "  --json         one JSON object per line (JSON Lines): save, async save, cold and warm loads\n"
    "  model shape    default GPT-2 124M: L=12, H=12, C=768, V=50257, context 1024\n"
    "Under mpirun each rank writes its shard; the baseline is each rank writing (fsync) and\n"
    "reading its share of the same bytes as one plain file in DIR, and copying it (memcpy) for the\n"
    "async save's stall (also measured with the copy made by an AdamW pass). Cold reads: both\n"
    "files are dropped from the page cache (posix_fadvise DONTNEED) first; warm: both files read\n"
    "whole into the page cache first (untimed).\n";

// Writes n bytes to path with write() + fsync; returns seconds, or fatal on error.
static double plain_write(const char *path, const char *buf, size_t n) {
    double t0 = sm_now_s();
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) sm_fatal(SM_EXIT_RUNTIME, "cannot create %s: %s", path, strerror(errno));
    for (size_t off = 0; off < n;) {
        ssize_t w = write(fd, buf + off, n - off > (1u << 30) ? (1u << 30) : n - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) sm_fatal(SM_EXIT_RUNTIME, "cannot write %s: %s", path, strerror(errno));
        off += (size_t)w;
    }
    if (fsync(fd) != 0) sm_fatal(SM_EXIT_RUNTIME, "cannot fsync %s: %s", path, strerror(errno));
    if (close(fd) != 0) sm_fatal(SM_EXIT_RUNTIME, "cannot close %s: %s", path, strerror(errno));
    return sm_now_s() - t0;
}

// Drops a (synced) file's pages from the page cache, so that the next read comes from the disk.
static void drop_cache(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) sm_fatal(SM_EXIT_RUNTIME, "cannot open %s: %s", path, strerror(errno));
    if (fdatasync(fd) != 0 || posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) != 0)
        sm_fatal(SM_EXIT_RUNTIME, "cannot drop %s from the page cache: %s", path, strerror(errno));
    close(fd);
}

// The CPU's model name (lscpu's "Model name"), for the figures' caption.
static void cpu_model(char *out, size_t cap) {
    snprintf(out, cap, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
            char *v = strchr(line, ':') + 1;
            v += strspn(v, " \t");
            v[strcspn(v, "\n")] = '\0';
            snprintf(out, cap, "%s", v);
            break;
        }
    if (f) fclose(f);
}

// Reads a whole file once, so that its pages are in the page cache (a warm read's start).
static void warm_file(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) sm_fatal(SM_EXIT_RUNTIME, "cannot open %s: %s", path, strerror(errno));
    static char buf[1 << 20];
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) sm_fatal(SM_EXIT_RUNTIME, "cannot read %s: %s", path, strerror(errno));
        if (r == 0) break;
    }
    close(fd);
}

// Copies k floats of each of p, m, v into dst, one after another: memcpy in 1 MiB pieces shared by the
// calling thread's OpenMP team.
static void plain_copy(char *dst, const float *p, const float *m, const float *v, size_t k) {
    const size_t piece = (size_t)1 << 18;   // floats
    const long pieces = (long)((k + piece - 1) / piece);
#pragma omp parallel for schedule(static) collapse(2)
    for (int a = 0; a < 3; a++)
        for (long i = 0; i < pieces; i++) {
            const float *src = a == 0 ? p : a == 1 ? m : v;
            size_t at = (size_t)i * piece, len = k - at < piece ? k - at : piece;
            memcpy(dst + ((size_t)a * k + at) * sizeof(float), src + at, len * sizeof(float));
        }
}

// bytes as "1.49 GB", or "1.6 MB" below a GB.
static void size_text(char *out, size_t cap, double bytes) {
    if (bytes >= 1e9) snprintf(out, cap, "%.2f GB", bytes / 1e9);
    else snprintf(out, cap, "%.1f MB", bytes / 1e6);
}

static double plain_read(const char *path, char *buf, size_t n) {
    double t0 = sm_now_s();
    int fd = open(path, O_RDONLY);
    if (fd < 0) sm_fatal(SM_EXIT_RUNTIME, "cannot open %s: %s", path, strerror(errno));
    for (size_t off = 0; off < n;) {
        ssize_t r = read(fd, buf + off, n - off > (1u << 30) ? (1u << 30) : n - off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) sm_fatal(SM_EXIT_RUNTIME, "cannot read %s: %s", path, r < 0 ? strerror(errno) : "short file");
        off += (size_t)r;
    }
    close(fd);
    return sm_now_s() - t0;
}

int bench_checkpoint(int argc, char **argv) {
    comm_topology topo;
    comm_init(&argc, &argv, &topo);
    const char *dir = ".";   // where both the checkpoint and the baseline file go
    int repeats = 3;         // medians over this many
    int json = 0, threads = 0;
    sm_model_config cfg = {.n_layer = 12, .n_head = 12, .n_embd = 768, .max_seq_len = 1024, .vocab_size = 50257};
    enum { O_DIR = 256, O_REP, O_L, O_H, O_C, O_V, O_T, O_JSON, O_HELP, O_THR };
    static const struct option opts[] = {
        {"dir", required_argument, 0, O_DIR}, {"repeats", required_argument, 0, O_REP},
        {"layers", required_argument, 0, O_L}, {"heads", required_argument, 0, O_H},
        {"embd", required_argument, 0, O_C}, {"vocab", required_argument, 0, O_V},
        {"context", required_argument, 0, O_T}, {"json", no_argument, 0, O_JSON},
        {"help", no_argument, 0, O_HELP}, {"threads", required_argument, 0, O_THR}, {0, 0, 0, 0},
    };
    opterr = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_DIR: dir = optarg; break;
        case O_REP: repeats = (int)cli_int("--repeats", optarg, 1, 100); break;
        case O_L: cfg.n_layer = (int)cli_int("--layers", optarg, 1, 1024); break;
        case O_H: cfg.n_head = (int)cli_int("--heads", optarg, 1, 4096); break;
        case O_C: cfg.n_embd = (int)cli_int("--embd", optarg, 1, 65536); break;
        case O_V: cfg.vocab_size = (int)cli_int("--vocab", optarg, 2, 65536); break;
        case O_T: cfg.max_seq_len = (int)cli_int("--context", optarg, 1, 65536); break;
        case O_JSON: json = 1; break;
        case O_THR: threads = (int)cli_int("--threads", optarg, 1, 1024); break;
        case O_HELP: fputs(BENCH_CKPT_USAGE, stdout); comm_finalize(); return SM_EXIT_OK;
        default: cli_bad_option("bench checkpoint", argc, argv);
        }
    }
    if (optind < argc) sm_fatal(SM_EXIT_USAGE, "bench checkpoint: unexpected argument '%s' (command line)", argv[optind]);
    comm_set_threads(&topo, threads);   // train's rule: ranks of a node share its CPUs (no oversubscription)
    char err[CKPT_ERR_MAX];
    if (gpt2_config_validate(&cfg, err, sizeof err) != 0) sm_fatal(SM_EXIT_USAGE, "%s (command line)", err);
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) sm_fatal(SM_EXIT_USAGE, "bench checkpoint: no such directory (%s)", dir);

    // the state: params, m, v with one layout, filled with non-trivial values
    sm_table params, m, v, grads;
    gpt2_param_table(&params, &cfg);
    grads = params;
    sm_table_alloc(&params);
    sm_table_alloc(&grads);
    adamw_state opt;   // the moments, and the AdamW pass of a step that saves with a capture
    adamw_build(&opt, &params, 0, sm_table_n_f32(&params));
    m = opt.m, v = opt.v;
    sm_rng rng;
    sm_rng_seed(&rng, 1, 0);
    float *pp = sm_table_f32(&params), *mp = sm_table_f32(&m), *vp = sm_table_f32(&v);
    for (size_t k = 0; k < sm_table_n_f32(&params); k++) {
        pp[k] = 0.02f * ((float)(sm_rng_u64(&rng) >> 40) / 16777216.0f - 0.5f);
        mp[k] = 0.1f * pp[k];
        vp[k] = pp[k] * pp[k];
        sm_table_f32(&grads)[k] = 0.05f * pp[k];
    }
    const adamw_hparams hp = {.lr = 1e-4f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};
    int adam_t = 1;
    // this rank's even share of the arena, as checkpoints write it without ZeRO
    const size_t n = sm_table_n_f32(&params), share = (n + (size_t)topo.world_size - 1) / (size_t)topo.world_size;
    size_t lo = share * (size_t)topo.rank, hi = lo + share;
    if (lo > n) lo = n;
    if (hi > n) hi = n;
    const size_t plain_bytes = 3 * (hi - lo) * sizeof(float);
    char *plain = sm_arena(plain_bytes ? plain_bytes : 1);
    plain_copy(plain, pp + lo, mp + lo, vp + lo, hi - lo);

    char run_dir[4096], plain_path[4200], ckpt_file[4300];
    snprintf(run_dir, sizeof run_dir, "%s/smallmind_bench_ckpt", dir);
    snprintf(plain_path, sizeof plain_path, "%s/plain_rank%d.bin", run_dir, topo.rank);
    if (topo.rank == 0 && mkdir(run_dir, 0755) != 0 && errno != EEXIST)
        sm_fatal(SM_EXIT_RUNTIME, "cannot create %s: %s", run_dir, strerror(errno));
    comm_barrier();

    // per repeat: times (this rank's, after a barrier where both sides of a ratio are ranks in step)
    enum { T_SAVE, T_PW, T_LOAD_COLD, T_PR_COLD, T_LOAD_WARM, T_PR_WARM, T_STALL, T_ASYNC, T_LAYOUT, T_WRITE,
           T_CHECK, T_SYNC, T_COMMIT, T_PASS, T_A_COPY, T_A_SUM, T_A_WRITE, T_A_SYNC, T_A_COMMIT, T_COPY,
           T_ADAM, T_FUSED, T_FUSED_SAVE, N_T };
    double *t = sm_calloc((size_t)N_T * (size_t)repeats, sizeof(double));
#define T(k, r) t[(size_t)(k) * (size_t)repeats + (size_t)(r)]
    uint64_t file_bytes = 0, async_bytes = 0;
    ckpt_async *saver = NULL;
    if (ckpt_async_create(&saver, &params, &m, &v, 0, n, &async_bytes, err, sizeof err) != 0) sm_fatal(SM_EXIT_RUNTIME, "%s", err);
    ckpt_meta meta = {.step = 1};
    meta.cfg = (sm_model_config){cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.max_seq_len, cfg.vocab_size,
                                   cfg.padded_vocab_size, "gpt2"};
    for (int r = 0; r < repeats; r++) {
        // the baseline: every rank writes its share as one plain file, in step; then the synchronous save
        comm_barrier();
        double t0 = sm_now_s();
        plain_write(plain_path, plain, plain_bytes);
        comm_barrier();
        T(T_PW, r) = sm_now_s() - t0;
        ckpt_stats s;
        meta.step = 3 * r + 1;
        t0 = sm_now_s();
        if (ckpt_save(run_dir, &meta, &params, &m, &v, 0, n, 1, &s, err, sizeof err) != 0)
            sm_fatal(SM_EXIT_RUNTIME, "%s", err);
        T(T_SAVE, r) = sm_now_s() - t0;
        T(T_LAYOUT, r) = s.layout_seconds, T(T_WRITE, r) = s.write_seconds, T(T_CHECK, r) = s.check_seconds;
        T(T_SYNC, r) = s.sync_seconds, T(T_COMMIT, r) = s.commit_seconds;
        file_bytes = s.bytes;
        // what the value check alone costs as a pass of its own over this rank's share (the save fuses it
        // into the checksum's pass)
        t0 = sm_now_s();
        size_t bad = sm_first_bad_float(pp + lo, hi - lo, 0) + sm_first_bad_float(mp + lo, hi - lo, 0) +
                     sm_first_bad_float(vp + lo, hi - lo, 1);
        T(T_PASS, r) = sm_now_s() - t0;
        if (bad != 3 * (hi - lo)) sm_fatal(SM_EXIT_RUNTIME, "bench checkpoint: the state holds a non-finite value");
        // the async save's stall beside a plain copy of the same share of the state (memcpy, by the
        // rank's threads, every rank at once), into a buffer touched before
        comm_barrier();
        t0 = sm_now_s();
        plain_copy(plain, pp + lo, mp + lo, vp + lo, hi - lo);
        comm_barrier();
        T(T_COPY, r) = sm_now_s() - t0;
        // the asynchronous save: what the step sees, then until it is committed
        meta.step = 3 * r + 2;
        ckpt_name(meta.parent, sizeof meta.parent, 3 * r + 1);
        comm_barrier();
        t0 = sm_now_s();
        if (ckpt_async_save(saver, run_dir, &meta, &params, &m, &v, 0, n, 1, &s, err, sizeof err) != 0)
            sm_fatal(SM_EXIT_RUNTIME, "%s", err);
        T(T_STALL, r) = sm_now_s() - t0;
        T(T_A_COPY, r) = s.check_seconds;
        int done = 0;
        if (ckpt_async_poll(saver, 1, &done, &s, err, sizeof err) != 0) sm_fatal(SM_EXIT_RUNTIME, "%s", err);
        T(T_ASYNC, r) = sm_now_s() - t0;
        // the writer thread's parts (rank 0's): its sums, writes (its sums included), fsync, commit
        T(T_A_SUM, r) = s.check_seconds, T(T_A_WRITE, r) = s.write_seconds, T(T_A_SYNC, r) = s.sync_seconds;
        T(T_A_COMMIT, r) = s.commit_seconds;
        meta.parent[0] = '\0';
        ckpt_path(ckpt_file, sizeof ckpt_file, run_dir, 3 * r + 2);
        // loads: cold (both files out of the page cache), then warm
        for (int warm = 0; warm < 2; warm++) {
            comm_barrier();
            if (!warm) {
                drop_cache(plain_path);
                if (topo.rank == 0) drop_cache(ckpt_file);
            } else {   // both files in the page cache, as a save leaves them (a cold load reads the checkpoint
                       // O_DIRECT, leaving it out)
                warm_file(plain_path);
                if (topo.rank == 0) warm_file(ckpt_file);
            }
            comm_barrier();
            t0 = sm_now_s();
            plain_read(plain_path, plain, plain_bytes);
            comm_barrier();
            T(warm ? T_PR_WARM : T_PR_COLD, r) = sm_now_s() - t0;
            ckpt_meta back;
            t0 = sm_now_s();
            if (ckpt_load(ckpt_file, &meta.cfg, &back, &params, &m, &v, lo, hi, &s, err, sizeof err) != 0)
                sm_fatal(SM_EXIT_RUNTIME, "%s", err);
            T(warm ? T_LOAD_WARM : T_LOAD_COLD, r) = sm_now_s() - t0;
        }
        // train's scheduled saves: the copy made by the step's AdamW pass (ckpt_async_capture). The stall is
        // what that pass and the save's call take beyond the pass alone, run just before on the same state
        comm_barrier();
        t0 = sm_now_s();
        adamw_step(&opt, &params, &grads, &hp, adam_t++, 1.0f, gpt2_param_decays);
        comm_barrier();
        T(T_ADAM, r) = sm_now_s() - t0;
        meta.step = 3 * r + 3;
        ckpt_name(meta.parent, sizeof meta.parent, 3 * r + 2);
        comm_barrier();
        t0 = sm_now_s();
        ckpt_async_capture(saver, meta.step, &opt.capture);
        if (!opt.capture) sm_fatal(SM_EXIT_RUNTIME, "bench checkpoint: the state could not be captured");
        adamw_step(&opt, &params, &grads, &hp, adam_t++, 1.0f, gpt2_param_decays);
        opt.capture = NULL;
        double t1 = sm_now_s();
        if (ckpt_async_save(saver, run_dir, &meta, &params, &m, &v, 0, n, 1, &s, err, sizeof err) != 0)
            sm_fatal(SM_EXIT_RUNTIME, "%s", err);
        if (!s.captured) sm_fatal(SM_EXIT_RUNTIME, "bench checkpoint: the capture was not used");
        T(T_FUSED, r) = sm_now_s() - t0;
        T(T_FUSED_SAVE, r) = sm_now_s() - t1;
        if (ckpt_async_poll(saver, 1, &done, &s, err, sizeof err) != 0) sm_fatal(SM_EXIT_RUNTIME, "%s", err);
        meta.parent[0] = '\0';
    }
    // rank 0's times are the figures: every timed call ends in step (a barrier, or the call's own agreement);
    // the parts of a save are rank 0's own
    double *ratio = sm_calloc(6 * (size_t)repeats, sizeof(double));   // save, load cold, load warm, stall share, stall/copy, fused
    for (int r = 0; r < repeats; r++) {
        ratio[r] = T(T_PW, r) / T(T_SAVE, r);
        ratio[repeats + r] = T(T_PR_COLD, r) / T(T_LOAD_COLD, r);
        ratio[2 * repeats + r] = T(T_PR_WARM, r) / T(T_LOAD_WARM, r);
        ratio[3 * repeats + r] = T(T_STALL, r) / T(T_SAVE, r);
        ratio[4 * repeats + r] = T(T_STALL, r) / T(T_COPY, r);
        ratio[5 * repeats + r] = (T(T_FUSED, r) - T(T_ADAM, r)) / T(T_SAVE, r);
    }
    double med[N_T];
    for (int k = 0; k < N_T; k++) med[k] = bench_median(&T(k, 0), repeats);
    double r_save = bench_median(ratio, repeats), r_cold = bench_median(ratio + repeats, repeats);
    double r_warm = bench_median(ratio + 2 * repeats, repeats), r_stall = bench_median(ratio + 3 * repeats, repeats);
    double r_copy = bench_median(ratio + 4 * repeats, repeats), r_fused = bench_median(ratio + 5 * repeats, repeats);
    double *fused = sm_calloc((size_t)repeats, sizeof(double));   // the fused stalls, for their median
    for (int r = 0; r < repeats; r++) fused[r] = T(T_FUSED, r) - T(T_ADAM, r);
    const double med_fused = bench_median(fused, repeats);
    sm_free(fused);
#undef T
    double state_bytes = 3.0 * (double)n * sizeof(float);
    if (topo.rank == 0) {
        char cpu[256];
        cpu_model(cpu, sizeof cpu);
        double gb = state_bytes / 1e9;
        if (json) {
            printf("{\"name\":\"checkpoint_save\",\"cpu\":\"%s\",\"ranks\":%d,\"bytes\":%.0f,\"file_bytes\":%llu,\"ms\":%.1f,"
                   "\"gbps\":%.6g,\"baseline\":\"plain sequential write+fsync\",\"baseline_gbps\":%.6g,\"ratio\":%.6g,"
                   "\"layout_ms\":%.3f,\"write_ms\":%.3f,\"sum_and_check_ms\":%.3f,\"value_check_own_pass_ms\":%.3f,"
                   "\"sync_ms\":%.3f,\"commit_ms\":%.3f}\n",
                   cpu, topo.world_size, state_bytes, (unsigned long long)file_bytes, med[T_SAVE] * 1e3, gb / med[T_SAVE],
                   gb / med[T_PW], r_save, med[T_LAYOUT] * 1e3, med[T_WRITE] * 1e3, med[T_CHECK] * 1e3,
                   med[T_PASS] * 1e3, med[T_SYNC] * 1e3, med[T_COMMIT] * 1e3);
            printf("{\"name\":\"checkpoint_async_save\",\"ranks\":%d,\"stall_ms\":%.3f,\"baseline\":\"synchronous save\","
                   "\"baseline_ms\":%.1f,\"ratio\":%.6g,\"committed_ms\":%.1f,\"buffer_bytes\":%llu,"
                   "\"copy_and_check_ms\":%.3f,\"plain_copy_ms\":%.3f,\"stall_over_plain_copy\":%.6g,"
                   "\"writer_sums_ms\":%.3f,\"writer_write_ms\":%.3f,\"writer_sync_ms\":%.3f,\"writer_commit_ms\":%.3f,"
                   "\"fused_stall_ms\":%.3f,\"fused_ratio\":%.6g,\"adamw_ms\":%.3f,\"adamw_with_copy_and_save_ms\":%.3f}\n",
                   topo.world_size, med[T_STALL] * 1e3, med[T_SAVE] * 1e3, r_stall, med[T_ASYNC] * 1e3,
                   (unsigned long long)async_bytes, med[T_A_COPY] * 1e3, med[T_COPY] * 1e3, r_copy, med[T_A_SUM] * 1e3,
                   med[T_A_WRITE] * 1e3, med[T_A_SYNC] * 1e3, med[T_A_COMMIT] * 1e3, med_fused * 1e3, r_fused,
                   med[T_ADAM] * 1e3, med[T_FUSED] * 1e3);
            for (int warm = 0; warm < 2; warm++) {
                double tl = med[warm ? T_LOAD_WARM : T_LOAD_COLD], tp = med[warm ? T_PR_WARM : T_PR_COLD];
                printf("{\"name\":\"checkpoint_load_%s\",\"ranks\":%d,\"bytes\":%.0f,\"ms\":%.1f,\"gbps\":%.6g,"
                       "\"baseline\":\"plain sequential read (%s)\",\"baseline_gbps\":%.6g,\"ratio\":%.6g}\n",
                       warm ? "warm" : "cold", topo.world_size, state_bytes, tl * 1e3, gb / tl, warm ? "warm" : "cold",
                       gb / tp, warm ? r_warm : r_cold);
            }
        } else {
            char sb[32], fb[32], ab[32];
            size_text(sb, sizeof sb, state_bytes);
            size_text(fb, sizeof fb, (double)file_bytes);
            size_text(ab, sizeof ab, (double)async_bytes);
            printf("checkpoint bench: L=%d H=%d C=%d V=%d state %s (params + m + v), file %s, %d rank%s, %s; "
                   "medians of %d (ratios: median of the repeats' ratios)\n", cfg.n_layer, cfg.n_head, cfg.n_embd,
                   cfg.vocab_size, sb, fb, topo.world_size, topo.world_size > 1 ? "s" : "", cpu, repeats);
            printf("  save        %8.1f ms  %6.2f GB/s   plain write+fsync  %6.2f GB/s   ratio %.2f\n", med[T_SAVE] * 1e3,
                   gb / med[T_SAVE], gb / med[T_PW], r_save);
            printf("    layout (rank 0) %.1f ms; data written %.1f ms, of which sums and value check %.1f ms (the check "
                   "alone, as a pass of its own: %.1f ms); fsync %.1f ms; commit %.1f ms\n", med[T_LAYOUT] * 1e3,
                   med[T_WRITE] * 1e3, med[T_CHECK] * 1e3, med[T_PASS] * 1e3, med[T_SYNC] * 1e3, med[T_COMMIT] * 1e3);
            printf("  async save: stall in the step %.1f ms = %.1f%% of the synchronous save (of it, the copy with its "
                   "value check, beside rank 0's layout, %.1f ms); committed after %.1f ms; buffer %s a rank\n",
                   med[T_STALL] * 1e3, 100.0 * r_stall, med[T_A_COPY] * 1e3, med[T_ASYNC] * 1e3, ab);
            printf("    a plain copy of the same bytes (memcpy, every rank at once): %.1f ms = %.1f%% of the synchronous "
                   "save; the stall is %.2fx that copy\n", med[T_COPY] * 1e3, 100.0 * med[T_COPY] / med[T_SAVE], r_copy);
            printf("    then the writer thread (rank 0): data written %.1f ms, of which its sums %.1f ms; fsync %.1f ms; "
                   "commit %.1f ms\n", med[T_A_WRITE] * 1e3, med[T_A_SUM] * 1e3, med[T_A_SYNC] * 1e3,
                   med[T_A_COMMIT] * 1e3);
            printf("  async save copied by the step's AdamW pass (train's scheduled saves): stall %.1f ms = %.1f%% of the "
                   "synchronous save (AdamW alone %.1f ms; with the copy, then the save's call, %.1f ms, of which the "
                   "call %.1f ms)\n", med_fused * 1e3, 100.0 * r_fused, med[T_ADAM] * 1e3, med[T_FUSED] * 1e3,
                   med[T_FUSED_SAVE] * 1e3);
            for (int warm = 0; warm < 2; warm++) {
                double tl = med[warm ? T_LOAD_WARM : T_LOAD_COLD], tp = med[warm ? T_PR_WARM : T_PR_COLD];
                printf("  load, %s %8.1f ms  %6.2f GB/s   plain read (%s)  %6.2f GB/s   ratio %.2f\n", warm ? "warm" : "cold",
                       tl * 1e3, gb / tl, warm ? "warm" : "cold", gb / tp, warm ? r_warm : r_cold);
            }
        }
        fflush(stdout);
    }
    ckpt_async_free(saver);
    sm_free(ratio);
    // clean up: the baseline files, every checkpoint a repeat saved (--keep 1's pruning left the earlier
    // repeats' async saves: 3 GB behind with --repeats 3), latest, the directory
    unlink(plain_path);
    comm_barrier();
    if (topo.rank == 0) {
        char p[4400];
        for (int step = 1; step <= 3 * repeats; step++) {
            ckpt_path(p, sizeof p, run_dir, step);
            unlink(p);
        }
        unlink(ckpt_file);
        snprintf(p, sizeof p, "%s/latest", run_dir);
        unlink(p);
        rmdir(run_dir);
    }
    sm_free(t);
    sm_free(plain);
    sm_free(params.base);
    sm_free(grads.base);
    adamw_free(&opt);
    comm_finalize();
    return SM_EXIT_OK;
}
