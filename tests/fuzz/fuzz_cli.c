// fuzz_cli.c — libFuzzer harness: the command line of every subcommand, through cli_parse and the real
// option tables (build.sh compiles each trainer/ file that holds one into an entry of FUZZ_CLI_TABLES).
// Usage errors run with sm_usage_defer, as train, eval and generate run them, so that sm_fatal's
// exit 2 longjmps back here; any other exit (a failed check, exit 1) ends the fuzzer as a finding.
// Input: one byte (bits 0-6: the table; bit 7: a command line of valid flags), then
//   raw:   arguments separated by NUL bytes, each taken as it is, except that one starting with byte
//          1 then byte i becomes --<option i's name> followed by the rest, and one starting with byte 2,
//          i, k becomes --<the first 1 + k % len characters of option i's name> (an abbreviation);
//          anything getopt_long would read as --help (which prints the usage and exits 0) is dropped.
//          Accepted: every number within its option's [lo, hi], every string one of the arguments (or
//          its part after '='), every positional one of the arguments; then the subcommand's own
//          parse (its defaults, its checks across flags) runs on the same arguments.
//          Refused: one line "<what> (command line)".
//   valid: 9-byte records (option index, 8 bytes of value): each option given in range (its bounds
//          often, as --name V or --name=V), so cli_parse must accept them all, every field must hold
//          the last value given for it, and each value printed (cli_value_str) and set again (cli_set)
//          must give the same bits and the same fingerprint.
// Once, at start: every table's usage text, printed to /dev/null.
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "fuzz_cli.h"

#define MAX_ARGS 64
static const char SENTINEL_STR[] = "(not given)";

// The argument strings of an input live until the next input is done, as a process's argv lives on:
// a parser that keeps a pointer into an earlier command line (getopt's scan state) then reads stale
// but valid text, and misparses the next input visibly, instead of reading freed memory.
static char *g_prev[2 * MAX_ARGS + 2];
static int g_n_prev;
static void retire(char **owned, int n) {
    for (int k = 0; k < g_n_prev; k++) sm_free(g_prev[k]);
    memcpy(g_prev, owned, (size_t)n * sizeof *owned);
    g_n_prev = n;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    FILE *null = fopen("/dev/null", "w");
    if (!null) abort();
    for (int t = 0; t < FUZZ_CLI_N_TABLES; t++) {
        const fuzz_cli_table *tb = FUZZ_CLI_TABLES[t];
        void *defaults = sm_calloc(1, tb->values_size);
        cli_print_usage(null, "usage\n", tb->opts, tb->n_opts, defaults);
        sm_free(defaults);
    }
    fclose(null);
    return 0;
}

// Values no parse can produce, so that a field still holding one was not given.
static void fill_sentinels(const fuzz_cli_table *tb, void *values) {
    for (int i = 0; i < tb->n_opts; i++) {
        void *p = (char *)values + tb->opts[i].offset;
        switch (tb->opts[i].type) {
        case CLI_INT: *(int *)p = INT_MIN; break;
        case CLI_U64: *(unsigned long long *)p = ULLONG_MAX; break;
        case CLI_DOUBLE: *(double *)p = NAN; break;
        case CLI_STR: *(const char **)p = SENTINEL_STR; break;
        case CLI_FLAG: *(int *)p = 0; break;
        }
    }
}

static int shares_offset(const fuzz_cli_table *tb, int i) {
    for (int j = 0; j < tb->n_opts; j++)
        if (j != i && tb->opts[j].offset == tb->opts[i].offset) return 1;
    return 0;
}

static int in_args(const char *p, int argc, char **argv) {
    for (int k = 1; k < argc; k++)
        if (p >= argv[k] && p <= argv[k] + strlen(argv[k])) return 1;
    return 0;
}

static void check_refusal(const char *cmd) {
    const char *msg = sm_usage_deferred();
    size_t n = msg ? strlen(msg) : 0;
    static const char WHERE[] = "(command line)";
    if (!msg || strchr(msg, '\n') || n < sizeof WHERE || strcmp(msg + n - (sizeof WHERE - 1), WHERE) != 0) {
        fprintf(stderr, "%s: a refusal that is not one line \"<what> (command line)\": [%s]\n", cmd, msg ? msg : "(none)");
        abort();
    }
}

// cli_parse under sm_usage_defer: 1 accepted, 0 refused (checked to be one line).
static int parse(const fuzz_cli_table *tb, void *values, int argc, char **argv, char **pos, int *n_pos) {
    static jmp_buf env;
    if (setjmp(env)) {
        check_refusal(tb->cmd);
        return 0;
    }
    sm_usage_defer(&env);
    *n_pos = cli_parse(tb->cmd, "usage\n", tb->opts, tb->n_opts, values, tb->values_size, argc, argv, pos,
                       tb->max_positional);
    sm_usage_defer(NULL);
    return 1;
}

static void run_own_parse(const fuzz_cli_table *tb, int argc, char **argv) {
    static jmp_buf env;
    if (!tb->parse) return;
    if (setjmp(env)) {
        check_refusal(tb->cmd);
        return;
    }
    sm_usage_defer(&env);
    tb->parse(argc, argv);
    sm_usage_defer(NULL);
}

// "--help", "--hel", ... (getopt_long takes an unambiguous abbreviation) would print the usage and exit 0
static int reads_as_help(const char *a) {
    size_t n = strlen(a);
    return n > 2 && n <= 6 && strncmp(a, "--help", n) == 0;
}

static void fuzz_raw(const fuzz_cli_table *tb, const uint8_t *data, size_t size) {
    char *argv[MAX_ARGS + 1] = {0};
    int argc = 0;
    argv[argc++] = (char *)tb->cmd;
    for (size_t i = 0; i < size && argc < MAX_ARGS;) {
        const uint8_t *e = memchr(data + i, 0, size - i);
        size_t len = e ? (size_t)(e - (data + i)) : size - i;
        const uint8_t *a = data + i;
        i += len + 1;
        char *arg;
        if (len >= 2 && (a[0] == 1 || (a[0] == 2 && len >= 3))) {
            const char *name = tb->opts[a[1] % tb->n_opts].name;
            size_t nl = strlen(name), skip = a[0] == 1 ? 2 : 3;
            if (a[0] == 2) nl = 1 + a[2] % nl;
            arg = sm_malloc(2 + nl + (len - skip) + 1);
            memcpy(arg, "--", 2);
            memcpy(arg + 2, name, nl);
            memcpy(arg + 2 + nl, a + skip, len - skip);
            arg[2 + nl + len - skip] = '\0';
        } else {
            arg = sm_malloc(len + 1);
            memcpy(arg, a, len);
            arg[len] = '\0';
        }
        if (reads_as_help(arg)) {
            sm_free(arg);
            continue;
        }
        argv[argc++] = arg;
    }
    argv[argc] = NULL;
    char *keep[MAX_ARGS + 1];   // getopt_long permutes argv; the strings are freed from here
    memcpy(keep, argv, sizeof keep);

    void *values = sm_malloc(tb->values_size);   // exactly the struct: a write past it is caught
    fill_sentinels(tb, values);
    char *pos[4] = {0};
    int n_pos = 0;
    if (parse(tb, values, argc, argv, pos, &n_pos)) {
        if (n_pos < 0 || n_pos > tb->max_positional) abort();
        for (int k = 0; k < n_pos; k++)
            if (!in_args(pos[k], argc, argv)) abort();
        for (int i = 0; i < tb->n_opts; i++) {
            const cli_opt *o = &tb->opts[i];
            const void *p = (const char *)values + o->offset;
            if (shares_offset(tb, i)) continue;
            int ok = 1;
            switch (o->type) {
            case CLI_INT: ok = *(const int *)p == INT_MIN || (*(const int *)p >= o->lo && *(const int *)p <= o->hi); break;
            case CLI_U64: {
                unsigned long long v = *(const unsigned long long *)p;
                ok = v == ULLONG_MAX || ((double)v >= o->lo && (double)v <= o->hi);
                break;
            }
            case CLI_DOUBLE: {
                double v = *(const double *)p;
                ok = isnan(v) || (isfinite(v) && v >= o->lo && v <= o->hi);
                break;
            }
            case CLI_STR: {
                const char *s = *(const char *const *)p;
                ok = s == SENTINEL_STR || in_args(s, argc, argv);
                break;
            }
            case CLI_FLAG: ok = *(const int *)p == 0 || *(const int *)p == 1; break;
            }
            if (!ok) {
                fprintf(stderr, "%s --%s: a value outside what the option takes\n", tb->cmd, o->name);
                abort();
            }
        }
        (void)cli_fingerprint(tb->opts, tb->n_opts, values);
    }
    sm_free(values);
    memcpy(argv, keep, sizeof keep);
    run_own_parse(tb, argc, argv);
    retire(keep + 1, argc - 1);
}

static void fuzz_valid(const fuzz_cli_table *tb, const uint8_t *data, size_t size) {
    enum { REC = 9, MAX_REC = MAX_ARGS / 2 };
    char *argv[2 * MAX_REC + 2] = {0}, *owned[MAX_REC] = {0};
    static char text_[2][MAX_REC][96];   // this input's and the previous one's
    static int which;
    char(*text)[96] = text_[which ^= 1];
    int argc = 0, n_owned = 0, last[96];
    argv[argc++] = (char *)tb->cmd;
    for (int i = 0; i < tb->n_opts && i < 96; i++) last[i] = -1;
    if (tb->n_opts > 96) abort();
    int n_rec = 0;
    double want_d[MAX_REC];
    long long want_i[MAX_REC];
    const char *want_s[MAX_REC];
    for (size_t at = 0; at + REC <= size && n_rec < MAX_REC; at += REC, n_rec++) {
        int i = data[at] % tb->n_opts;
        const cli_opt *o = &tb->opts[i];
        uint64_t r = 0;
        for (int k = 0; k < 8; k++) r |= (uint64_t)data[at + 1 + k] << (8 * k);
        int eq = (int)(r >> 63), edge = (int)(r & 3);
        char val[64] = "";
        switch (o->type) {
        case CLI_INT:
        case CLI_U64: {
            long lo = (long)o->lo, hi = (long)o->hi;
            unsigned long span = (unsigned long)hi - (unsigned long)lo;
            long v = edge == 0 ? lo : edge == 1 ? hi : lo + (long)((r >> 2) % (span + 1 ? span + 1 : span));
            want_i[n_rec] = v;
            snprintf(val, sizeof val, "%ld", v);
            break;
        }
        case CLI_DOUBLE: {
            double f = (double)(r >> 11) / 9007199254740992.0;   // [0, 1)
            double v = edge == 0 ? o->lo : edge == 1 ? o->hi : o->lo + (o->hi - o->lo) * f;
            if (v > o->hi) v = o->hi;
            snprintf(val, sizeof val, "%.17g", v);
            want_d[n_rec] = strtod(val, NULL);
            break;
        }
        case CLI_STR:   // any text, also one that starts with '-': a required argument takes it
            snprintf(val, sizeof val, "%s%llx", r & 4 ? "-" : "", (unsigned long long)(r >> 3));
            break;
        case CLI_FLAG: break;
        }
        last[i] = n_rec;
        if (o->type == CLI_FLAG || eq) {
            snprintf(text[n_rec], sizeof text_[0][0], "--%s%s%s", o->name, o->type == CLI_FLAG ? "" : "=", val);
            argv[argc++] = text[n_rec];
            want_s[n_rec] = o->type == CLI_FLAG ? NULL : text[n_rec] + 3 + strlen(o->name);
        } else {
            snprintf(text[n_rec], sizeof text_[0][0], "--%s", o->name);
            argv[argc++] = text[n_rec];
            char *v = sm_malloc(strlen(val) + 1);
            strcpy(v, val);
            argv[argc++] = owned[n_owned++] = v;
            want_s[n_rec] = v;
        }
    }
    argv[argc] = NULL;
    void *values = sm_malloc(tb->values_size), *again = sm_malloc(tb->values_size);
    fill_sentinels(tb, values);
    int n_pos = 0;
    if (!parse(tb, values, argc, argv, NULL, &n_pos)) {
        fprintf(stderr, "%s: refused a command line of valid flags: %s\n", tb->cmd, sm_usage_deferred());
        abort();
    }
    memcpy(again, values, tb->values_size);
    for (int i = 0; i < tb->n_opts; i++) {
        const cli_opt *o = &tb->opts[i];
        int k = last[i];
        if (k < 0 || shares_offset(tb, i)) continue;
        const void *p = (const char *)values + o->offset;
        int ok = 1;
        switch (o->type) {
        case CLI_INT: ok = *(const int *)p == want_i[k]; break;
        case CLI_U64: ok = *(const unsigned long long *)p == (unsigned long long)want_i[k]; break;
        case CLI_DOUBLE: ok = *(const double *)p == want_d[k]; break;
        case CLI_STR: ok = strcmp(*(const char *const *)p, want_s[k]) == 0; break;
        case CLI_FLAG: ok = *(const int *)p == 1; break;
        }
        if (!ok) {
            fprintf(stderr, "%s --%s: not the value given\n", tb->cmd, o->name);
            abort();
        }
        char txt[4096];   // printed and set again: the same bits
        cli_value_str(o, values, txt, sizeof txt);
        if (o->type != CLI_STR) {
            cli_set(o, again, txt);
            if (memcmp((const char *)again + o->offset, p, o->type == CLI_INT || o->type == CLI_FLAG ? sizeof(int) : 8)) {
                fprintf(stderr, "%s --%s: printed as %s, which sets another value\n", tb->cmd, o->name, txt);
                abort();
            }
        }
    }
    if (cli_fingerprint(tb->opts, tb->n_opts, values) != cli_fingerprint(tb->opts, tb->n_opts, again)) abort();
    sm_free(again);
    sm_free(values);
    retire(owned, n_owned);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const fuzz_cli_table *tb = FUZZ_CLI_TABLES[(data[0] & 127) % FUZZ_CLI_N_TABLES];
    if (data[0] & 128) fuzz_valid(tb, data + 1, size - 1);
    else fuzz_raw(tb, data + 1, size - 1);
    return 0;
}
