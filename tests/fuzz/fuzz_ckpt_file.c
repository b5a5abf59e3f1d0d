// fuzz_ckpt_file.c — libFuzzer harness: the bytes of a checkpoint file, checked as an untrusted
// checkpoint is (header, structure, every chunk and value: ckpt_check_local), in-process so that the
// fuzzer sees a crash where it happens. With FUZZ_CONTAINED=1 the check runs in a forked child, as
// smallmind runs it: then nothing may crash, and an input that crashed libhdf5 must read as damaged
// (the regression inputs under tests/fuzz/regressions/ are replayed so).
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt_internal.h"

static char g_path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    snprintf(g_path, sizeof g_path, "/tmp/fuzz_ckpt_%d.h5", (int)getpid());
    if (!getenv("FUZZ_CONTAINED")) setenv("SMALLMIND_CKPT_NO_FORK", "1", 1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int fd = open(g_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) abort();
    if (size && write(fd, data, size) != (ssize_t)size) abort();
    close(fd);
    static ckpt_report rep;
    ckpt_check_result res = {.rep = &rep};
    // structure from /model's own listing (the harness has no model); the data read back as 1 part
    int rc = ckpt_check_local(g_path, NULL, NULL, 0, 0, 1, &res);
    // the verdict is one line, and consistent
    if (rc == 0 && (res.stage != 0 || rep.n_bad != 0)) abort();
    if (rc != 0 && (res.stage == 0 || !res.msg[0] || strchr(res.msg, '\n'))) abort();
    if (getenv("FUZZ_EXPECT_DAMAGED") && rc == 0) abort();   // replaying inputs known to be damaged
    unlink(g_path);
    return 0;
}
