// cli.c — strict option-value parsing shared by the subcommands.
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>

#include "common.h"
#include "trainer.h"

long cli_int(const char *flag, const char *s, long lo, long hi) {
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0')
        sm_fatal(SM_EXIT_USAGE, "%s expects an integer, got '%s' (command line)", flag, s);
    if (v < lo || v > hi) sm_fatal(SM_EXIT_USAGE, "%s must be in %ld..%ld, got %ld (command line)", flag, lo, hi, v);
    return v;
}

double cli_double(const char *flag, const char *s, double lo, double hi) {
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end != '\0' || !isfinite(v))
        sm_fatal(SM_EXIT_USAGE, "%s expects a number, got '%s' (command line)", flag, s);
    if (v < lo || v > hi) sm_fatal(SM_EXIT_USAGE, "%s must be in [%g, %g], got %g (command line)", flag, lo, hi, v);
    return v;
}

void cli_bad_option(const char *cmd, int argc, char **argv) {
    const char *opt = optind - 1 < argc && optind >= 1 ? argv[optind - 1] : "?";
    if (optopt && optopt < 256)
        sm_fatal(SM_EXIT_USAGE, "%s: option -%c is unknown or needs a value; see 'smallmind %s --help' (command line)", cmd,
                 optopt, cmd);
    sm_fatal(SM_EXIT_USAGE, "%s: unknown option or missing value in '%s'; see 'smallmind %s --help' (command line)", cmd,
             opt, cmd);
}
