// fuzz_ckpt_file.c — libFuzzer harness: the bytes of a checkpoint file, checked as an untrusted
// checkpoint is (header, structure, every chunk and value: ckpt_check_local), in-process so that the
// fuzzer sees a crash where it happens. With FUZZ_CONTAINED=1 the check runs in a forked child, as
// smallmind runs it: then nothing may crash, and an input that crashed libhdf5 must read as damaged
// (the regression inputs under tests/fuzz/regressions/ are replayed so). FUZZ_NO_LAYOUT=1 checks the
// structure against /model's own listing instead of the header's layout.
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt_internal.h"

static char g_path[64];

// The model's layout as DESIGN.md lists it (an independent transcription, for the harness has no
// model): a name and its shape in V (the padded vocabulary), T (context), L, C.
static const char *const LAYOUT =
    "wte:V,C wpe:T,C ln1w:L,C ln1b:L,C qkvw:L,3C,C qkvb:L,3C attprojw:L,C,C attprojb:L,C ln2w:L,C ln2b:L,C "
    "fcw:L,4C,C fcb:L,4C fcprojw:L,C,4C fcprojb:L,C lnfw:C lnfb:C";

static int layout(const sm_model_config *c, sm_table *t, char *err, size_t errlen) {
    if (c->n_layer < 1 || c->n_layer > 64 || c->n_embd < 1 || c->n_embd > 4096 || c->n_head < 1 ||
        c->n_embd % c->n_head || c->max_seq_len < 1 || c->max_seq_len > 65536 || c->vocab_size < 2 ||
        c->vocab_size > 65536 || c->padded_vocab_size != (c->vocab_size + 63) / 64 * 64) {
        snprintf(err, errlen, "not a valid config");
        return -1;
    }
    static char names[SM_MAX_TENSORS][16];
    memset(t, 0, sizeof *t);
    const char *p = LAYOUT;
    for (int i = 0; *p; i++) {
        size_t shape[SM_MAX_DIMS];
        int nd = 0, k = 0;
        while (*p != ':') names[i][k++] = *p++;
        names[i][k] = '\0';
        for (p++; *p && *p != ' '; p++) {
            size_t mult = 1;
            if (*p >= '0' && *p <= '9') mult = (size_t)(*p++ - '0');
            size_t v = *p == 'V' ? (size_t)c->padded_vocab_size : *p == 'T' ? (size_t)c->max_seq_len
                     : *p == 'L' ? (size_t)c->n_layer : (size_t)c->n_embd;
            shape[nd++] = mult * v;
            if (p[1] == ',') p++;
        }
        while (*p == ' ') p++;
        sm_table_add(t, names[i], nd, shape);
    }
    return 0;
}

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
    // the structure against the layout the header implies (FUZZ_NO_LAYOUT: against /model's own
    // listing, as ckpt_find_latest checks); the data read back as 1 part
    int rc = ckpt_check_local(g_path, NULL, getenv("FUZZ_NO_LAYOUT") ? NULL : layout, 0, 0, 1, &res);
    // the verdict is one line, and consistent
    if (rc == 0 && (res.stage != 0 || rep.n_bad != 0)) abort();
    if (rc != 0 && (res.stage == 0 || !res.msg[0] || strchr(res.msg, '\n'))) abort();
    if (getenv("FUZZ_EXPECT_DAMAGED") && rc == 0) abort();   // replaying inputs known to be damaged
    unlink(g_path);
    return 0;
}
