// inspect.c — `smallmind inspect`: a checkpoint's config, step and tensors, every dataset verified.
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoints.h"
#include "comm.h"
#include "common.h"
#include "trainer.h"

typedef struct {
    int json;   // machine-readable output
} inspect_args;

static const cli_opt INSPECT_OPTIONS[] = {
    {"json", CLI_FLAG, offsetof(inspect_args, json), 0, 1, NULL, "one JSON object on stdout instead of the table", NULL, 1, 0},
};

static const char INSPECT_HEAD[] =
    "usage: smallmind inspect PATH [--json]\n"
    "  PATH: a checkpoint file, or a run directory (the checkpoint its `latest` names). Reads every\n"
    "  dataset back and checks its Fletcher32 checksums. Exit status 0 when all verify, 2 (with a\n"
    "  one-line error) when the file is damaged, foreign or unreadable.\n";




// The attributes of one section of the table (CKPT_ATTRS), as JSON members or "name value" pairs.
static void print_attrs(const ckpt_meta *m, const char *section, int json) {
    char val[1024];
    int n = 0;
    for (int i = 0; i < CKPT_N_ATTRS; i++) {
        const ckpt_attr *a = &CKPT_ATTRS[i];
        if (strcmp(a->section, section) != 0) continue;
        ckpt_attr_format(a, m, json, val, sizeof val);
        if (json)
            printf("%s\"%s\":%s", n++ || !section[0] ? "," : "", a->name, val);
        else
            printf("%s%s %s", n++ ? ", " : "", a->name, val);
    }
}

static void print_json(const char *path, const ckpt_report *r, int ok) {
    printf("{\"path\":");
    sm_json_fput_str(stdout, path);
    printf(",\"ok\":%s,\"file_bytes\":%llu", ok ? "true" : "false", (unsigned long long)r->file_bytes);
    if (r->meta_ok) {
        print_attrs(&r->meta, "", 1);
        printf(",\"config\":{");
        print_attrs(&r->meta, "config", 1);
        printf("},\"optim\":{");
        print_attrs(&r->meta, "optim", 1);
        printf("}");
    }
    printf(",\"n_datasets\":%d,\"n_bad\":%d,\"datasets\":[", r->n_datasets, r->n_bad);
    for (int i = 0; i < r->n_datasets; i++) {
        const ckpt_dataset_report *d = &r->d[i];
        printf("%s{\"name\":", i ? "," : "");
        sm_json_fput_str(stdout, d->name);
        printf(",\"shape\":[");
        for (int k = 0; k < d->ndim; k++) printf("%s%llu", k ? "," : "", (unsigned long long)d->shape[k]);
        printf("],\"bytes\":%llu,\"stored_bytes\":%llu,\"ok\":%s", (unsigned long long)d->n_bytes,
               (unsigned long long)d->stored_bytes, d->ok ? "true" : "false");
        if (!d->ok) {
            printf(",\"reason\":");
            sm_json_fput_str(stdout, d->reason);
        }
        printf("}");
    }
    printf("]}\n");
}

static void print_table(const char *path, const ckpt_report *r) {
    printf("checkpoint  %s (%.2f MB)\n", path, (double)r->file_bytes / 1e6);
    if (r->meta_ok) {
        const char *sections[3][2] = {{"", "file"}, {"config", "model"}, {"optim", "optimizer"}};
        for (int k = 0; k < 3; k++) {
            printf("%-11s ", sections[k][1]);
            print_attrs(&r->meta, sections[k][0], 0);
            printf("\n");
        }
    }
    if (r->n_datasets) printf("%-24s %-18s %12s %12s  %s\n", "dataset", "shape", "bytes", "stored", "checksum");
    for (int i = 0; i < r->n_datasets; i++) {
        const ckpt_dataset_report *d = &r->d[i];
        char shape[96];
        size_t len = (size_t)snprintf(shape, sizeof shape, "[");
        for (int k = 0; k < d->ndim && len < sizeof shape; k++)
            len += (size_t)snprintf(shape + len, sizeof shape - len, k ? ", %llu" : "%llu", (unsigned long long)d->shape[k]);
        if (len < sizeof shape) snprintf(shape + len, sizeof shape - len, "]");
        printf("%-24s %-18s %12llu %12llu  %s%s\n", d->name, shape, (unsigned long long)d->n_bytes,
               (unsigned long long)d->stored_bytes, d->ok ? "ok" : "FAILED: ", d->ok ? "" : d->reason);
    }
}

int cmd_inspect(int argc, char **argv) {
    inspect_args a = {0};
    char *pos[1];
    int n_pos = cli_parse("inspect", INSPECT_HEAD, INSPECT_OPTIONS, 1, &a, sizeof a, argc, argv, pos, 1);
    if (n_pos < 1) sm_fatal(SM_EXIT_USAGE, "inspect: PATH is required; see 'smallmind inspect --help' (command line)");
    const int json = a.json;
    const char *arg = pos[0];   // before comm_init, which may rewrite argv
    comm_topology topo;
    comm_init(&argc, &argv, &topo);
    char path[4096], err[CKPT_ERR_MAX];
    ckpt_arg_path(arg, path, sizeof path);
    ckpt_report *rep = sm_malloc(sizeof *rep);
    int rc = ckpt_verify(path, ckpt_layout_gpt2, rep, err, sizeof err);
    if (topo.rank == 0 && (rep->meta_ok || rep->n_datasets)) {
        if (json)
            print_json(path, rep, rc == 0);
        else
            print_table(path, rep);
        if (rc == 0 && !json) printf("all %d datasets verify (Fletcher32)\n", rep->n_datasets);
        fflush(stdout);
    }
    sm_free(rep);
    if (rc != 0) sm_fatal(SM_EXIT_USAGE, "%s", err);
    comm_finalize();
    return SM_EXIT_OK;
}
