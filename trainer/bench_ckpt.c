// bench_ckpt.c — `smallmind bench checkpoint`: save and load of a GPT-2 124M-shaped state
// (parameters and both AdamW moments) against a plain sequential write and read of the same
// bytes in the same directory, in the same run.
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
#include "trainer.h"

static const char BENCH_CKPT_USAGE[] =
    "usage: smallmind bench checkpoint [--dir DIR] [--repeats N] [--layers L --heads H --embd C --vocab V --context T] [--json]\n"
    "  --dir DIR      where to write (default .); the files are removed afterwards\n"
    "  --repeats N    medians of N saves and loads (default 3)\n"
    "  model shape    default GPT-2 124M: L=12, H=12, C=768, V=50257, context 1024\n"
    "Under mpirun each rank writes its shard; the baseline is each rank writing (fsync) and\n"
    "reading its share of the same bytes as one plain file in DIR.\n";

static double median(double *x, int n) {
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && x[j] < x[j - 1]; j--) {
            double t = x[j];
            x[j] = x[j - 1];
            x[j - 1] = t;
        }
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

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
    int json = 0;
    sm_model_config cfg = {.n_layer = 12, .n_head = 12, .n_embd = 768, .max_seq_len = 1024, .vocab_size = 50257};
    enum { O_DIR = 256, O_REP, O_L, O_H, O_C, O_V, O_T, O_JSON, O_HELP };
    static const struct option opts[] = {
        {"dir", required_argument, 0, O_DIR}, {"repeats", required_argument, 0, O_REP},
        {"layers", required_argument, 0, O_L}, {"heads", required_argument, 0, O_H},
        {"embd", required_argument, 0, O_C}, {"vocab", required_argument, 0, O_V},
        {"context", required_argument, 0, O_T}, {"json", no_argument, 0, O_JSON},
        {"help", no_argument, 0, O_HELP}, {0, 0, 0, 0},
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
        case O_HELP: fputs(BENCH_CKPT_USAGE, stdout); comm_finalize(); return SM_EXIT_OK;
        default: cli_bad_option("bench checkpoint", argc, argv);
        }
    }
    if (optind < argc) sm_fatal(SM_EXIT_USAGE, "bench checkpoint: unexpected argument '%s' (command line)", argv[optind]);
    char err[CKPT_ERR_MAX];
    if (gpt2_config_validate(&cfg, err, sizeof err) != 0) sm_fatal(SM_EXIT_USAGE, "%s (command line)", err);
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) sm_fatal(SM_EXIT_USAGE, "bench checkpoint: no such directory (%s)", dir);

    // the state: params, m, v with one layout, filled with non-trivial values
    sm_table params, m, v;
    gpt2_param_table(&params, &cfg);
    m = v = params;
    sm_table_alloc(&params);
    sm_table_alloc(&m);
    sm_table_alloc(&v);
    sm_rng rng;
    sm_rng_seed(&rng, 1, 0);
    float *pp = sm_table_f32(&params), *mp = sm_table_f32(&m), *vp = sm_table_f32(&v);
    for (size_t k = 0; k < sm_table_n_f32(&params); k++) {
        pp[k] = 0.02f * ((float)(sm_rng_u64(&rng) >> 40) / 16777216.0f - 0.5f);
        mp[k] = 0.1f * pp[k];
        vp[k] = pp[k] * pp[k];
    }
    // this rank's even share of the arena, as checkpoints write it without ZeRO
    const size_t n = sm_table_n_f32(&params), share = (n + (size_t)topo.world_size - 1) / (size_t)topo.world_size;
    size_t lo = share * (size_t)topo.rank, hi = lo + share;
    if (lo > n) lo = n;
    if (hi > n) hi = n;
    const size_t plain_bytes = 3 * (hi - lo) * sizeof(float);
    char *plain = sm_arena(plain_bytes ? plain_bytes : 1);
    memcpy(plain, pp + lo, (hi - lo) * sizeof(float));
    memcpy(plain + (hi - lo) * sizeof(float), mp + lo, (hi - lo) * sizeof(float));
    memcpy(plain + 2 * (hi - lo) * sizeof(float), vp + lo, (hi - lo) * sizeof(float));

    char run_dir[4096], plain_path[4200], ckpt_file[4300];
    snprintf(run_dir, sizeof run_dir, "%s/smallmind_bench_ckpt", dir);
    snprintf(plain_path, sizeof plain_path, "%s/plain_rank%d.bin", run_dir, topo.rank);
    if (topo.rank == 0 && mkdir(run_dir, 0755) != 0 && errno != EEXIST)
        sm_fatal(SM_EXIT_RUNTIME, "cannot create %s: %s", run_dir, strerror(errno));
    comm_barrier();

    double *t = sm_calloc(6 * (size_t)repeats, sizeof(double));
    double *t_save = t, *t_load = t + repeats, *t_pw = t + 2 * repeats, *t_pr = t + 3 * repeats;
    double *t_check = t + 4 * repeats, *t_pass = t + 5 * repeats;   // finite check inside the save; as a pass of its own
    uint64_t file_bytes = 0;
    ckpt_meta meta = {.step = 1};
    meta.cfg = (sm_model_config){cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.max_seq_len, cfg.vocab_size,
                                   cfg.padded_vocab_size, "gpt2"};
    for (int r = 0; r < repeats; r++) {
        // the baseline: every rank writes and reads its share as one plain file, in step
        comm_barrier();
        double t0 = sm_now_s();
        plain_write(plain_path, plain, plain_bytes);
        comm_barrier();
        t_pw[r] = sm_now_s() - t0;
        t0 = sm_now_s();
        plain_read(plain_path, plain, plain_bytes);
        comm_barrier();
        t_pr[r] = sm_now_s() - t0;

        ckpt_stats s;
        meta.step = r + 1;
        t0 = sm_now_s();
        if (ckpt_save(run_dir, &meta, &params, &m, &v, 0, n, 1, &s, err, sizeof err) != 0)
            sm_fatal(SM_EXIT_RUNTIME, "%s", err);
        t_save[r] = sm_now_s() - t0;
        t_check[r] = s.check_seconds;
        file_bytes = s.bytes;
        // what the same check costs as a separate pass over this rank's share of the state
        // (cold: the save just streamed the whole state through the cache)
        t0 = sm_now_s();
        size_t bad = sm_first_bad_float(pp + lo, hi - lo, 0) + sm_first_bad_float(mp + lo, hi - lo, 0) +
                     sm_first_bad_float(vp + lo, hi - lo, 1);
        t_pass[r] = sm_now_s() - t0;
        if (bad != 3 * (hi - lo)) sm_fatal(SM_EXIT_RUNTIME, "bench checkpoint: the state holds a non-finite value");
        ckpt_path(ckpt_file, sizeof ckpt_file, run_dir, r + 1);
        ckpt_meta back;
        t0 = sm_now_s();
        if (ckpt_load(ckpt_file, &meta.cfg, &back, &params, &m, &v, lo, hi, &s, err, sizeof err) != 0)
            sm_fatal(SM_EXIT_RUNTIME, "%s", err);
        t_load[r] = sm_now_s() - t0;
    }
    double state_bytes = 3.0 * (double)n * sizeof(float);
    double save = median(t_save, repeats), load = median(t_load, repeats);
    double pw = median(t_pw, repeats), pr = median(t_pr, repeats);
    double check = median(t_check, repeats), pass = median(t_pass, repeats);
    if (topo.rank == 0) {
        double g_save = state_bytes / save / 1e9, g_load = state_bytes / load / 1e9;
        double g_pw = state_bytes / pw / 1e9, g_pr = state_bytes / pr / 1e9;
        if (json) {
            printf("{\"name\":\"checkpoint_save\",\"bytes\":%.0f,\"file_bytes\":%llu,\"ms\":%.1f,\"gbps\":%.6g,"
                   "\"baseline\":\"plain sequential write+fsync\",\"baseline_gbps\":%.6g,\"ratio\":%.6g,\"ranks\":%d,"
                   "\"value_check_ms\":%.3f,\"value_check_share\":%.6g,\"value_check_own_pass_ms\":%.3f}\n",
                   state_bytes, (unsigned long long)file_bytes, save * 1e3, g_save, g_pw, g_save / g_pw, topo.world_size,
                   check * 1e3, check / save, pass * 1e3);
            printf("{\"name\":\"checkpoint_load\",\"bytes\":%.0f,\"ms\":%.1f,\"gbps\":%.6g,"
                   "\"baseline\":\"plain sequential read\",\"baseline_gbps\":%.6g,\"ratio\":%.6g,\"ranks\":%d}\n",
                   state_bytes, load * 1e3, g_load, g_pr, g_load / g_pr, topo.world_size);
        } else {
            printf("checkpoint bench: L=%d H=%d C=%d V=%d state %.2f GB (params + m + v), file %.2f GB, %d rank%s, "
                   "median of %d\n", cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.vocab_size, state_bytes / 1e9,
                   (double)file_bytes / 1e9, topo.world_size, topo.world_size > 1 ? "s" : "", repeats);
            printf("  save  %8.1f ms  %6.2f GB/s   plain write+fsync %6.2f GB/s   ratio %.2f\n", save * 1e3, g_save,
                   g_pw, g_save / g_pw);
            printf("  value check inside the save (rank 0) %.1f ms = %.1f%% of the save; as a pass of its own %.1f ms\n",
                   check * 1e3, 100.0 * check / save, pass * 1e3);
            printf("  load  %8.1f ms  %6.2f GB/s   plain read        %6.2f GB/s   ratio %.2f\n", load * 1e3, g_load,
                   g_pr, g_load / g_pr);
        }
        fflush(stdout);
    }
    // clean up: the baseline files, the checkpoint kept by --keep 1, latest, the directory
    unlink(plain_path);
    comm_barrier();
    if (topo.rank == 0) {
        char p[4400];
        unlink(ckpt_file);
        snprintf(p, sizeof p, "%s/latest", run_dir);
        unlink(p);
        rmdir(run_dir);
    }
    sm_free(t);
    sm_free(plain);
    sm_free(params.base);
    sm_free(m.base);
    sm_free(v.base);
    comm_finalize();
    return SM_EXIT_OK;
}
