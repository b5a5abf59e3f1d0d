// cli.c — the subcommands' options as tables (cli_opt): parsing with strict values, the usage text,
// the fingerprint ranks agree on at start, and each value as text; plus the strict number parsers.
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "trainer.h"

#define SHOWN_MAX 1024   // sm_shown of at most 200 bytes of an argument

long cli_int(const char *flag, const char *s, long lo, long hi) {
    char *end = NULL, b[SHOWN_MAX];
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0')
        sm_fatal(SM_EXIT_USAGE, "%s expects an integer, got '%s' (command line)", flag, sm_shown(s, 200, b, sizeof b));
    if (v < lo || v > hi) sm_fatal(SM_EXIT_USAGE, "%s must be in %ld..%ld, got %ld (command line)", flag, lo, hi, v);
    return v;
}

double cli_double(const char *flag, const char *s, double lo, double hi) {
    char *end = NULL, b[SHOWN_MAX];
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end != '\0' || !isfinite(v))
        sm_fatal(SM_EXIT_USAGE, "%s expects a number, got '%s' (command line)", flag, sm_shown(s, 200, b, sizeof b));
    if (v < lo || v > hi) sm_fatal(SM_EXIT_USAGE, "%s must be in [%g, %g], got %g (command line)", flag, lo, hi, v);
    return v;
}

void cli_bad_option(const char *cmd, int argc, char **argv) {
    const char *opt = optind - 1 < argc && optind >= 1 ? argv[optind - 1] : "?";
    char b[SHOWN_MAX];
    if (optopt && optopt < 256) {
        char c[2] = {(char)optopt, '\0'};
        sm_fatal(SM_EXIT_USAGE, "%s: option -%s is unknown or needs a value; see 'smallmind %s --help' (command line)", cmd,
                 sm_shown(c, 200, b, sizeof b), cmd);
    }
    sm_fatal(SM_EXIT_USAGE, "%s: unknown option or missing value in '%s'; see 'smallmind %s --help' (command line)", cmd,
             sm_shown(opt, 200, b, sizeof b), cmd);
}

// ---------------------------------------------------------------------------------------------
// Option tables

static void *field(const cli_opt *o, void *values) { return (char *)values + o->offset; }
static const void *cfield(const cli_opt *o, const void *values) { return (const char *)values + o->offset; }

void cli_value_str(const cli_opt *o, const void *values, char *out, size_t cap) {
    const void *p = cfield(o, values);
    switch (o->type) {
    case CLI_INT: snprintf(out, cap, "%d", *(const int *)p); break;
    case CLI_FLAG: snprintf(out, cap, "%d", *(const int *)p ? 1 : 0); break;
    case CLI_U64: snprintf(out, cap, "%llu", *(const unsigned long long *)p); break;
    case CLI_DOUBLE: snprintf(out, cap, "%.17g", *(const double *)p); break;
    case CLI_STR: snprintf(out, cap, "%s", *(const char *const *)p ? *(const char *const *)p : ""); break;
    }
}

static void set_value(const cli_opt *o, void *values, const char *arg) {
    char flag[64];
    snprintf(flag, sizeof flag, "--%s", o->name);
    void *p = field(o, values);
    switch (o->type) {
    case CLI_INT: *(int *)p = (int)cli_int(flag, arg, (long)o->lo, (long)o->hi); break;
    case CLI_U64: *(unsigned long long *)p = (unsigned long long)cli_int(flag, arg, (long)o->lo, (long)o->hi); break;
    case CLI_DOUBLE: *(double *)p = cli_double(flag, arg, o->lo, o->hi); break;
    case CLI_STR: *(const char **)p = arg; break;
    case CLI_FLAG: *(int *)p = 1; break;
    }
}

// Writes text from column `indent` on, wrapped at word boundaries before column width.
static void put_wrapped(FILE *f, const char *text, int indent, int width) {
    int col = indent;
    for (const char *p = text; *p;) {
        while (*p == ' ') p++;
        size_t n = strcspn(p, " ");
        if (col > indent && col + 1 + (int)n > width) {
            fprintf(f, "\n%*s", indent, "");
            col = indent;
        }
        if (col > indent) col += fprintf(f, " ");
        col += fprintf(f, "%.*s", (int)n, p);
        p += n;
    }
    fputc('\n', f);
}

void cli_print_usage(FILE *f, const char *head, const cli_opt *opts, int n_opts, const void *defaults) {
    fputs(head, f);
    for (int i = 0; i < n_opts; i++) {
        const cli_opt *o = &opts[i];
        if (o->section) fprintf(f, "%s\n", o->section);
        char left[64], line[1024], v[128] = "";
        snprintf(left, sizeof left, "  --%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
        if (!strstr(o->help, "default") && !strstr(o->help, "required") && o->type != CLI_FLAG) {
            if (o->type == CLI_DOUBLE)
                snprintf(v, sizeof v, "%g", *(const double *)cfield(o, defaults));
            else
                cli_value_str(o, defaults, v, sizeof v);
            snprintf(line, sizeof line, "%s (default %s)", o->help, v[0] ? v : "none");
        } else {
            snprintf(line, sizeof line, "%s", o->help);
        }
        if (strlen(left) < 20)
            fprintf(f, "%-20s ", left);
        else   // a long flag: its text on the next line
            fprintf(f, "%s\n%21s", left, "");
        put_wrapped(f, line, 21, 100);
    }
    fprintf(f, "%-20s this text\n", "  --help");
}

void cli_set(const cli_opt *o, void *values, const char *arg) { set_value(o, values, arg); }

int cli_parse(const char *cmd, const char *head, const cli_opt *opts, int n_opts, void *values, size_t values_size,
              int argc, char **argv, char **positional, int max_positional) {
    enum { MAX_OPTS = 96, MAX_VALUES = 4096 };
    SM_CHECK(n_opts < MAX_OPTS && values_size <= MAX_VALUES, "option table of %s too large", cmd);
    struct option lo[MAX_OPTS + 2];
    _Alignas(max_align_t) char defaults[MAX_VALUES];   // the values on entry, for --help
    memcpy(defaults, values, values_size);
    for (int i = 0; i < n_opts; i++) {
        SM_CHECK(opts[i].offset < values_size, "option table of %s: --%s beyond the struct", cmd, opts[i].name);
        lo[i] = (struct option){opts[i].name, opts[i].type == CLI_FLAG ? no_argument : required_argument, 0, 256 + i};
    }
    lo[n_opts] = (struct option){"help", no_argument, 0, 1};
    lo[n_opts + 1] = (struct option){0, 0, 0, 0};
    opterr = 0;
    optind = 0;   // glibc: a full restart; 1 would resume the scan of an earlier parse that stopped inside
                  // "-ab" (its argv, perhaps freed) and read the next command line wrongly
    int c, n_pos = 0;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        if (c == 1) {
            cli_print_usage(stdout, head, opts, n_opts, defaults);
            exit(SM_EXIT_OK);
        }
        if (c < 256 || c >= 256 + n_opts) cli_bad_option(cmd, argc, argv);
        set_value(&opts[c - 256], values, optarg);
    }
    for (; optind < argc; optind++) {
        char b[SHOWN_MAX];
        if (n_pos >= max_positional)
            sm_fatal(SM_EXIT_USAGE, "%s: unexpected argument '%s' (command line)", cmd,
                     sm_shown(argv[optind], 200, b, sizeof b));
        positional[n_pos++] = argv[optind];
    }
    return n_pos;
}

// FNV-1a over bytes
static uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

uint64_t cli_fingerprint(const cli_opt *opts, int n_opts, const void *values) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < n_opts; i++) {
        if (opts[i].local) continue;
        char v[4096];
        cli_value_str(&opts[i], values, v, sizeof v);
        h = fnv1a(h, opts[i].name, strlen(opts[i].name) + 1);
        h = fnv1a(h, v, strlen(v) + 1);
    }
    return h;
}
