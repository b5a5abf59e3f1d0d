// fuzz_latest.c — libFuzzer harness: a run directory as an attacker may leave it. The input is the
// content of `latest`, a NUL byte, then file names one per line; each name becomes an empty file (or,
// with a leading '!', a FIFO). The one name parser, `latest`'s reader and --resume's planning
// (ckpt_plan_resume, auto and none) must not crash, hang or block, and the plan must name only
// checkpoints that exist, each once, every one of them for auto.
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt_internal.h"

static char g_dir[64];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    snprintf(g_dir, sizeof g_dir, "/tmp/fuzz_latest_%d", (int)getpid());
    setenv("SMALLMIND_CKPT_NO_FORK", "1", 1);
    return 0;
}

static void clear_dir(void) {
    DIR *d = opendir(g_dir);
    struct dirent *e;
    char p[600];
    while (d && (e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", g_dir, e->d_name);
        unlink(p);
    }
    if (d) closedir(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mkdir(g_dir, 0755);
    clear_dir();
    const uint8_t *nul = memchr(data, 0, size);
    size_t latest_len = nul ? (size_t)(nul - data) : size;
    char p[600], name[300];
    snprintf(p, sizeof p, "%s/latest", g_dir);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) abort();
    if (latest_len && write(fd, data, latest_len) != (ssize_t)latest_len) abort();
    close(fd);
    int n_ckpt = 0;
    for (size_t i = nul ? latest_len + 1 : size; i < size;) {
        size_t j = i;
        while (j < size && data[j] != '\n') j++;
        size_t len = j - i < sizeof name - 1 ? j - i : sizeof name - 1;
        memcpy(name, data + i, len);
        name[len] = '\0';
        i = j + 1;
        int fifo = name[0] == '!';
        const char *nm = name + fifo;
        if (!nm[0] || strchr(nm, '/') || memchr(nm, 0, len - (size_t)fifo) != NULL || !strcmp(nm, ".") ||
            !strcmp(nm, "..") || !strcmp(nm, "latest"))
            continue;
        int step = -1, kind = ckpt_name_parse(nm, &step);
        char canon[CKPT_NAME_MAX];
        if (kind == CKPT_NAME_CKPT || kind == CKPT_NAME_TMP) {   // the parser says what the name writer writes
            ckpt_name(canon, sizeof canon, step);
            if (step < 0 || strncmp(nm, canon, strlen(canon)) != 0) abort();
        }
        snprintf(p, sizeof p, "%s/%s", g_dir, nm);
        struct stat st;
        if (stat(p, &st) == 0) continue;   // a repeated name
        if (fifo ? mkfifo(p, 0644) != 0 : (fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644)) < 0) continue;
        if (!fifo) close(fd);
        n_ckpt += kind == CKPT_NAME_CKPT;
    }
    char lname[CKPT_NAME_MAX], err[CKPT_ERR_MAX];
    int lrc = ckpt_read_latest(g_dir, lname, sizeof lname, err, sizeof err);
    if (lrc == 0 && ckpt_name_parse(lname, NULL) != CKPT_NAME_CKPT) abort();
    for (int mode = 0; mode < 2; mode++) {
        ckpt_ctx cx;
        ckpt_ctx_init_local(&cx, g_dir, "", "");
        static ckpt_resume r;
        memset(&r, 0, sizeof r);
        ckpt_resume_plan plan = {0};
        ckpt_meta none;
        memset(&none, 0, sizeof none);
        int rc = ckpt_plan_resume(&cx, g_dir, mode ? "none" : "auto", &r, &plan, &none);
        if (mode == 0) {   // auto: every checkpoint once, what `latest` names and its descendants first
            if (rc != 0 || plan.n_order != n_ckpt) abort();
            for (int a = 0; a < plan.n_order; a++)
                for (int b = 0; b < a; b++)
                    if (plan.order[a] == plan.order[b]) abort();
        } else if ((rc == 0) != (n_ckpt == 0)) {   // none: refused exactly when there is a checkpoint
            abort();
        }
        for (int k = 0; k < r.n_notes; k++)   // each note one printable line
            for (const char *c = r.notes[k]; *c || c == r.notes[k]; c++)
                if (!*c || (unsigned char)*c < 0x20) abort();
        sm_free(plan.order);
        sm_free(plan.moved);
    }
    clear_dir();
    return 0;
}
