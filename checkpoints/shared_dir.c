// shared_dir.c — the check that every rank sees the same run directory (a token file rank 0
// writes and every rank reads back), so that a multi-node run on node-local disks stops at start
// instead of writing checkpoints no single node can resume from.
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ckpt_internal.h"

// 64 bits that no other run, rank or earlier call shares: time, pid and host name, mixed
// (splitmix64's finaliser).
static uint64_t fresh_token(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t h = (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    for (const char *p = host; *p; p++) h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    h ^= h >> 31;
    return h;
}

// Reads the token file; 0 when it holds `want`. ENOENT is retried for up to ~1 s: a network
// filesystem may show a file created on another node a moment late.
static int read_token(ckpt_ctx *cx, const char *path, const char *want) {
    char got[64] = "";
    FILE *f = NULL;
    for (int attempt = 0; attempt < 10; attempt++) {
        f = fopen(path, "r");
        if (f || errno != ENOENT) break;
        struct timespec pause = {0, 100 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    if (!f) {
        ckpt_fail_sys(cx, errno, "cannot read the token file %s that rank 0 wrote", path);
        return -1;
    }
    size_t n = fread(got, 1, sizeof got - 1, f);
    got[n] = '\0';
    fclose(f);
    if (strcmp(got, want) != 0) {
        ckpt_fail(cx, "the token file %s holds '%s', not the '%s' rank 0 wrote (another run's?)", path, got, want);
        return -1;
    }
    return 0;
}

int ckpt_check_shared_dir(const char *run_dir, char *err, size_t errlen) {
    ckpt_ctx ctx, *cx = &ctx;
    if (ckpt_ctx_init(cx, run_dir) != 0) return ckpt_ctx_finish(cx, -1, err, errlen);
    char host[MPI_MAX_PROCESSOR_NAME] = "";
    int host_len = 0;
    MPI_CHECK(MPI_Get_processor_name(host, &host_len));

    // rank 0 writes RUN_DIR/.shared-check-<token> holding the token; all ranks learn its name
    uint64_t token = cx->rank == 0 ? fresh_token() : 0;
    comm_bcast_bytes(&token, sizeof token, 0);
    char want[32], path[4096];
    snprintf(want, sizeof want, "%016llx", (unsigned long long)token);
    snprintf(path, sizeof path, "%s/.shared-check-%s", run_dir, want);
    int rc = 0;
    if (cx->rank == 0) {
        FILE *f = fopen(path, "w");
        if (!f || fputs(want, f) < 0 || fflush(f) != 0 || fsync(fileno(f)) != 0) {
            ckpt_fail_sys(cx, errno, "cannot write the token file %s", path);
            rc = -1;
        }
        if (f && fclose(f) != 0 && rc == 0) {
            ckpt_fail_sys(cx, errno, "cannot write the token file %s", path);
            rc = -1;
        }
    }
    if (ckpt_agree(cx, rc) != 0) {
        if (cx->rank == 0) unlink(path);
        return ckpt_ctx_finish(cx, -1, err, errlen);
    }

    // every rank reads it back; the lowest rank that cannot names its node
    rc = read_token(cx, path, want);
    if (rc != 0) {
        char why[sizeof cx->msg];
        memcpy(why, cx->msg, sizeof why);
        snprintf(cx->msg, sizeof cx->msg,
                 "rank %d on node %s does not see the run directory rank 0 writes: checkpoints need a directory "
                 "that every node shares (a cluster filesystem), not node-local disk: %.600s", cx->rank, host, why);
    }
    rc = ckpt_agree(cx, rc);
    MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));   // every rank has read before the file goes
    if (cx->rank == 0) unlink(path);
    return ckpt_ctx_finish(cx, rc, err, errlen);
}
